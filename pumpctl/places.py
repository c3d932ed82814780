"""Where the service keeps its files: the data directory and the kernel's Unix socket.

Both processes name these (the kernel listens on the socket, the web side connects to it), so
they live here, apart from the store: importing anything under `pumpctl.store` imports
SQLAlchemy, which the web side never loads (docs/architecture.md, "Two processes").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pumpctl.settings import Settings

__all__ = ["DATA_DIR_ENV", "KERNEL_SOCKET_NAME", "data_dir", "kernel_socket_path"]

DATA_DIR_ENV = "PUMPCTL_DATA_DIR"
#: The kernel's socket file in its directory.
KERNEL_SOCKET_NAME = "kernel.sock"


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The data directory (not created, not checked)."""
    env = os.environ if environ is None else environ
    if configured := env.get(DATA_DIR_ENV, "").strip():
        return Path(configured).expanduser()
    return Path.home() / ".local" / "share" / "pumpctl"


def kernel_socket_path(settings: Settings) -> Path:
    """Where the kernel serves the web side: `kernel_socket`, else kernel.sock in systemd's
    runtime directory (`RuntimeDirectory=`), else in the data directory."""
    if settings.kernel_socket is not None:
        return settings.kernel_socket
    runtime = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0].strip()
    if runtime:
        return Path(runtime) / KERNEL_SOCKET_NAME
    environ = {DATA_DIR_ENV: str(settings.data_dir)} if settings.data_dir else None
    return data_dir(environ) / KERNEL_SOCKET_NAME

"""What `pumpctl serve`, `pumpctl demo` and `pumpctl web` share: their options, their one-line
failure, their logging. Light on purpose: `pumpctl web` (pumpctl/cli/web.py) imports it, and the
web side loads nothing of the kernel's stack (docs/architecture.md, "Two processes")."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pumpctl.cli.logsetup import flush as flush_log
from pumpctl.cli.logsetup import json_lines, log_off_the_loop
from pumpctl.settings import Settings

__all__ = [
    "ConfigOption",
    "HostOption",
    "KernelSocketOption",
    "PortOption",
    "fail",
    "start_logging",
]

ConfigOption = Annotated[
    Path | None, typer.Option("--config", envvar="PUMPCTL_CONFIG", help="Settings file (TOML).")
]
HostOption = Annotated[str | None, typer.Option(help="Listen address (default 127.0.0.1).")]
PortOption = Annotated[int | None, typer.Option(help="Listen port (default 8000).")]
KernelSocketOption = Annotated[
    Path | None,
    typer.Option(help="The kernel's Unix socket (default: kernel.sock in the data directory)."),
]


def fail(command: str, message: str) -> typer.Exit:
    """`pumpctl COMMAND: message` on stderr; the caller raises the exit (status 2) it returns."""
    flush_log()  # the log lines that led here first (they are written by a thread of their own)
    typer.echo(f"pumpctl {command}: {message}", err=True)
    return typer.Exit(2)


def start_logging(settings: Settings) -> None:
    """The log as the settings say (text or JSON lines, the level), written off the loop."""
    fmt = (
        json_lines()
        if settings.log_format == "json"
        else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    log_off_the_loop(settings.log_level.upper(), fmt)

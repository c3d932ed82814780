"""`pumpctl web`: the web side alone, for its own systemd unit, or as the child of `pumpctl
serve` (pumpctl/cli/webchild.py).

Kept apart from pumpctl/cli/serve.py, which imports the kernel's stack: this process imports
none of it (SQLAlchemy, Alembic, the store, the controller, the drivers), so it starts in a
fraction of the time and cannot touch the store even by mistake (docs/architecture.md, "Two
processes"; tests/test_layers.py holds it).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from pumpctl.cli.configured import SettingsError, settings_for
from pumpctl.cli.options import (
    ConfigOption,
    HostOption,
    KernelSocketOption,
    PortOption,
    fail,
    start_logging,
)
from pumpctl.cli.webchild import READY_LINE, WEB_SETTINGS, WebStartError
from pumpctl.cli.webside import end_with_parent, serve_web
from pumpctl.cli.webuser import WebUserError, web_user
from pumpctl.places import kernel_socket_path
from pumpctl.settings import Settings
from pumpctl.tls import plain_bind_refusal

__all__ = ["web"]


def web(
    config: ConfigOption = None,
    host: HostOption = None,
    port: PortOption = None,
    kernel_socket: KernelSocketOption = None,
    from_kernel: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """The web side alone (REST API, live events, the page), passing the API to a kernel
    (`pumpctl serve --no-web`) on its Unix socket; for its own systemd unit."""
    if from_kernel is not None:  # a child of `pumpctl serve`: its settings on stdin
        end_with_parent(from_kernel)
        try:
            settings = Settings(**json.loads(sys.stdin.read()))
        except (ValueError, ValidationError) as exc:
            raise fail("web", f"settings from the kernel: {exc}") from None
    else:
        try:
            # the web side's settings alone: the kernel's (its database, pumps, MQTT password
            # file) are neither read nor checked by a user that may not read them
            settings = settings_for(
                config, only=WEB_SETTINGS | {"kernel_socket"}, host=host, port=port
            )
        except SettingsError as exc:
            raise fail("web", str(exc)) from None
    if (refusal := plain_bind_refusal(settings)) is not None:
        raise fail("web", refusal)
    socket_path = kernel_socket or kernel_socket_path(settings)
    try:
        user = web_user(settings)
    except WebUserError as exc:
        raise fail("web", str(exc)) from None
    start_logging(settings)

    def ready() -> None:
        if from_kernel is not None:
            sys.stdout.write(READY_LINE + "\n")
            sys.stdout.flush()

    try:
        asyncio.run(serve_web(settings, socket_path, ready=ready, user=user, parent=from_kernel))
    except WebStartError as exc:
        raise fail("web", str(exc)) from None
    except KeyboardInterrupt:
        pass

"""The web side as a process (`pumpctl web`): its app served by uvicorn, its CPU priority
below the kernel's, its change of user, and its end with its parent.

`pumpctl serve` and `pumpctl demo` run the kernel in their own process (its API on a Unix
socket only) and the web side as a child they supervise (pumpctl/cli/webchild.py); the child
ends when its parent does (Linux's parent-death signal). Under systemd the two run as two units
instead (config/pumpctl-kernel.service, config/pumpctl-web.service), the web side as a user of
its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import ssl
from pathlib import Path
from typing import Any

import uvicorn

from api.edge import uvicorn_options
from api.web import create_web_app
from pumpctl.cli.server import Server
from pumpctl.cli.webchild import WebStartError
from pumpctl.cli.webuser import WebUser, become
from pumpctl.settings import Settings
from pumpctl.tls import plain_bind_refusal, web_listener_options

__all__ = ["WEB_NICE", "end_with_parent", "serve_web", "yield_cpu"]

_log = logging.getLogger("pumpctl.cli")

#: How much lower the web side's CPU priority is than the process that starts it (nice).
WEB_NICE = 10
_PR_SET_PDEATHSIG = 1


def yield_cpu() -> None:
    """The web side gives the kernel the CPU first (issue 18): its scheduling priority lowered
    by `WEB_NICE` (any process may lower its own), so that a flood that keeps the web side busy
    takes the turns of nothing but the web side while the kernel (same cgroup under `pumpctl
    serve`) wants the CPU. The systemd units weigh the two apart with `CPUWeight=`."""
    now = os.getpriority(os.PRIO_PROCESS, 0)
    os.setpriority(os.PRIO_PROCESS, 0, min(19, now + WEB_NICE))
    _log.info(
        "web side: CPU priority lowered by %d (nice %d): the kernel runs first",
        WEB_NICE,
        min(19, now + WEB_NICE),
    )


def end_with_parent(parent: int) -> None:
    """Linux: SIGTERM when the parent (the kernel) ends, even SIGKILLed; if it already has,
    end now."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        raise SystemExit(0)


async def serve_web(
    settings: Settings,
    socket: Path,
    *,
    ready: Any = None,
    user: WebUser | None = None,
    parent: int | None = None,
) -> None:
    """The web side until SIGINT/SIGTERM; `ready()` once it listens. With `user` (started as
    root) it becomes that user once its code is loaded and before it listens; with `parent`
    (the kernel's pid) it ends when the kernel does, also after that change of user."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # uvicorn's access log says it all
    app = create_web_app(settings, socket)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        lifespan="on",
        **uvicorn_options(),
        **web_listener_options(settings),  # TLS, HSTS, the one trusted proxy (pumpctl/tls.py)
    )
    if (refusal := plain_bind_refusal(settings)) is not None:
        raise WebStartError(refusal)
    try:
        config.load()  # every module it serves with, read while it may still read them
    except (OSError, ssl.SSLError) as exc:  # only TLS reads files here: the certificate, the key
        why = (exc.reason if isinstance(exc, ssl.SSLError) else None) or exc.strerror or exc
        raise WebStartError(
            f"tls_certificate, tls_key: {settings.tls_certificate}, {settings.tls_key} cannot be "
            f"used ({why})"
        ) from None
    yield_cpu()
    if user is not None:
        become(user)
        _log.info("web side: running as %s (uid %d)", user.name, user.uid)
    if parent is not None:
        end_with_parent(parent)  # a change of user clears the parent-death signal: set again
    server = Server(config)
    serving = asyncio.create_task(server.serve(), name="web side")
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn has no event
        await asyncio.sleep(0.05)
    if server.started and ready is not None:
        ready()
    await serving
    if not server.started:
        raise WebStartError(f"the web side could not listen on {settings.host}:{settings.port}")

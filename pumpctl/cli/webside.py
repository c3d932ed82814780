"""The web side as a process (`pumpctl web`), and the kernel's way to run it as its child.

`pumpctl serve` and `pumpctl demo` run the kernel in their own process (its API on a Unix
socket only) and the web side as a child they supervise (`WebChild`): started once the kernel
answers, started again when it ends, ended with the kernel. The child learns its settings on
its standard input (never on its command line, where any user could read the tokens), tells
its parent it listens with one line on its standard output, and ends when its parent does
(Linux's parent-death signal). Under systemd the two run as two units instead
(config/pumpctl-kernel.service, config/pumpctl-web.service), the web side as a user of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import socket
import ssl
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

import uvicorn

from api.edge import uvicorn_options
from api.web import create_web_app
from pumpctl.cli.webuser import WebUser, become
from pumpctl.settings import Settings
from pumpctl.tls import plain_bind_refusal, web_listener_options

__all__ = ["READY_LINE", "WEB_NICE", "WEB_SETTINGS", "Server", "WebChild", "serve_web"]

_log = logging.getLogger("pumpctl.cli")

#: The line the web side prints on its standard output once it listens.
READY_LINE = "pumpctl-web: ready"
#: Seconds the web side has to start listening.
START_WITHIN_S = 30.0
#: Seconds between two starts of a web side that keeps ending (doubling up to the last).
RESTART_S = (0.5, 1.0, 2.0, 5.0, 10.0)
#: How much lower the web side's CPU priority is than the process that starts it (nice).
WEB_NICE = 10
#: The settings the web side needs (no database, no pump, no MQTT password reaches it).
WEB_SETTINGS = frozenset(
    {
        "host",
        "port",
        "api_tokens",
        "events_replay",
        "read_budget_per_s",  # reads a second per caller through to the kernel (api/readcache.py)
        "log_level",
        "log_format",
        "simulate",
        "clock",
        "bench",
        "link",
        "broker",  # HOST:PORT only (no password): simulated MQTT pumps need it to validate
        "web_user",
        "allowed_hosts",  # the Host names the web side answers as (docs/security.md)
        "stop_answer_s",  # the nurse's press is answered by the web side within it (+5 s)
        "tls_certificate",  # HTTPS (pumpctl/tls.py): paths only, the files read by the web side
        "tls_key",
        "tls_proxy",
    }
)
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


class WebStartError(Exception):
    """The web side did not start; the message says why."""


class WebChild:
    """The web side, a child of the kernel's process."""

    def __init__(self, settings: Settings, socket: Path) -> None:
        self.settings = settings
        self.socket = socket
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self._ending = False

    async def start(self) -> None:
        """Start it and wait (bounded) until it listens; `WebStartError` when it does not."""
        command = [sys.executable, "-m", "pumpctl", "web", "--kernel-socket", str(self.socket)]
        command += ["--from-kernel", str(os.getpid())]
        self.process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        self.starts += 1
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        settings = self.settings.model_dump(mode="json", include=set(WEB_SETTINGS))
        self.process.stdin.write(json.dumps(settings).encode())
        self.process.stdin.close()
        try:
            async with asyncio.timeout(START_WITHIN_S):
                line = await self.process.stdout.readline()
        except TimeoutError:
            line = b""
        if line.decode().strip() != READY_LINE:
            await self.stop()
            raise WebStartError(
                f"the web side did not start on {self.settings.host}:{self.settings.port} "
                f"(exit status {self.process.returncode}; see the log above)"
            )

    async def supervise(self) -> None:
        """Until cancelled: start the web side again whenever it ends (the kernel goes on:
        a crash of the web side never touches a pump)."""
        tries = 0
        while not self._ending:
            assert self.process is not None
            code = await self.process.wait()
            if self._ending:
                return
            _log.error("web side ended (exit status %s); starting it again", code)
            while not self._ending:
                await asyncio.sleep(RESTART_S[min(tries, len(RESTART_S) - 1)])
                tries += 1
                try:
                    await self.start()
                except WebStartError as error:
                    _log.error("%s", error)
                    continue
                tries = 0
                break

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        self._ending = True
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(10):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


class Server(uvicorn.Server):
    """uvicorn's server whose failed startup (a port taken, an application that does not
    start) ends `serve()` instead of raising SystemExit out of the event loop: the caller says
    why, in one line."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit:
            self.should_exit = True

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """uvicorn's, except that the SIGTERM or SIGINT it caught is not raised again once it
        has shut down: that ended the process there, before the kernel stopped its web side,
        removed its socket and wrote out its queued log lines (pumpctl/cli/logsetup.py; the
        audit chain's head "at stop" among them, lost on a loaded machine). Both processes end
        in order and exit 0."""
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()  # read by uvicorn's own exit, right after this


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

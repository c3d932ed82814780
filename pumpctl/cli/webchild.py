"""The kernel's way to run the web side as its child (`pumpctl serve`, `pumpctl demo`), and
what the two agree on: the settings the child learns on its standard input, and the line it
prints once it listens.

The kernel starts the web side once it answers, starts it again when it ends, and ends it with
itself (`WebChild`). The child learns its settings on its standard input (never on its command
line, where any user could read the tokens) and tells its parent it listens with one line on
its standard output. The web side's own process is pumpctl/cli/webside.py; kept apart so that
the kernel loads none of the web side's app (api/web.py, httpx: tests/test_layers.py holds it).
Under systemd the two run as two units instead (config/pumpctl-kernel.service,
config/pumpctl-web.service).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from pumpctl.settings import Settings

__all__ = ["READY_LINE", "WEB_SETTINGS", "WebChild", "WebStartError"]

_log = logging.getLogger("pumpctl.cli")

#: The line the web side prints on its standard output once it listens.
READY_LINE = "pumpctl-web: ready"
#: Seconds the web side has to start listening.
START_WITHIN_S = 30.0
#: Seconds between two starts of a web side that keeps ending (doubling up to the last).
RESTART_S = (0.5, 1.0, 2.0, 5.0, 10.0)
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

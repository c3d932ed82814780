"""`pumpctl serve --no-web` as a real process: the kernel exactly as its systemd unit runs it
(config/pumpctl-kernel.service), its REST API on its Unix socket, its log lines read as they
come so a test can SIGKILL it at a point of its work named by a line.

The kernel's composition root (api/gateway.py: open_kernel) is the one users get; nothing here
wires a controller of its own. Every line is also kept in `kernel-N.log` in the data directory
(shown by a failing test).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from service_process import CLIENT_LIMITS, TOKENS, service_env, terminate

UP_WITHIN_S = 30.0  # a cold interpreter and a migrated SQLite on a loaded CI machine
LINE_BOUND_S = 20.0
#: The supervisor's line for each command it hands to the driver (pumpctl/controller).
COMMAND_LINE = re.compile(r"command pump=\S+ infusion=\S+ command=(\S+) op=(\S+)$")


@dataclass
class KernelProcess:
    """One kernel process on `data_dir` (its store, its socket `kernel.sock`)."""

    data_dir: Path
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None
    http: httpx.AsyncClient | None = None
    lines: list[str] = field(default_factory=list)
    cursor: int = 0
    _more: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    _log: Path | None = None
    #: A file descriptor for the kernel's stdout and stderr instead of a pipe read here (a log
    #: reader of the test's own: one that stops reading); no lines are then read here.
    output: int | None = None

    @property
    def socket(self) -> Path:
        return self.data_dir / "kernel.sock"

    async def start(self) -> None:
        """Start the kernel and wait (bounded) until its /health answers 200 on the socket."""
        env = service_env(self.data_dir, PUMPCTL_LOG_LEVEL="info", **self.env)
        runs = len(list(self.data_dir.glob("kernel-*.log")))
        self._log = self.data_dir / f"kernel-{runs + 1}.log"
        out = asyncio.subprocess.PIPE if self.output is None else self.output
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pumpctl", "serve", "--no-web", *self.args,
            stdout=out, stderr=asyncio.subprocess.STDOUT, env=env,
        )  # fmt: skip
        if self.output is None:
            self._reader = asyncio.create_task(self._read())
        transport = httpx.AsyncHTTPTransport(uds=str(self.socket), limits=CLIENT_LIMITS)
        self.http = httpx.AsyncClient(transport=transport, base_url="http://kernel", timeout=15.0)
        async with asyncio.timeout(UP_WITHIN_S):
            while True:
                if self.process.returncode is not None:
                    raise AssertionError("the kernel exited:\n" + "\n".join(self.lines[-30:]))
                with contextlib.suppress(httpx.TransportError):
                    if (await self.http.get("/api/v1/health")).status_code == 200:
                        return
                await asyncio.sleep(0.1)  # polling a condition with a deadline

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        assert self._log is not None
        with self._log.open("a", encoding="utf-8") as log:
            while raw := await self.process.stdout.readline():
                line = raw.decode(errors="replace").rstrip("\n")
                self.lines.append(line)
                log.write(line + "\n")
                self._more.set()
        self._more.set()

    async def line(self, predicate: Callable[[str], bool], bound_s: float = LINE_BOUND_S) -> str:
        """The next log line (after the last one matched) for which `predicate` holds."""
        try:
            async with asyncio.timeout(bound_s):
                while True:
                    while self.cursor < len(self.lines):
                        found = self.lines[self.cursor]
                        self.cursor += 1
                        if predicate(found):
                            return found
                    if self._reader is not None and self._reader.done():
                        raise AssertionError("the kernel's output ended")
                    self._more.clear()
                    await self._more.wait()
        except TimeoutError:
            shown = "\n".join(self.lines[-15:])
            raise AssertionError(f"no such line within {bound_s} s; the last:\n{shown}") from None

    async def request(self, method: str, path: str, role: str, body: Any = None) -> httpx.Response:
        assert self.http is not None
        return await self.http.request(
            method, f"/api/v1{path}", json=body, headers={"Authorization": f"Bearer {TOKENS[role]}"}
        )

    async def api(
        self, method: str, path: str, role: str, body: Any = None, expect: int = 200
    ) -> Any:
        answer = await self.request(method, path, role, body)
        assert answer.status_code == expect, (method, path, answer.status_code, answer.text)
        return answer.json()

    def commands(self) -> list[tuple[str, str]]:
        """(ledger id, op) of every command this kernel handed to a driver."""
        return [(m[1], m[2]) for line in self.lines if (m := COMMAND_LINE.search(line))]

    async def kill(self) -> None:
        """SIGKILL: no clean stop of anything."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
        await self._closed()

    async def stop(self) -> None:
        """SIGTERM and wait (bounded); SIGKILL if it does not end."""
        if self.process is not None:
            await terminate(self.process)
        await self._closed()

    async def _closed(self) -> None:
        if self.process is not None:
            async with asyncio.timeout(LINE_BOUND_S):
                await self.process.wait()
                if self._reader is not None:
                    await self._reader
        if self.http is not None:
            await self.http.aclose()
            self.http = None

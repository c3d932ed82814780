"""`pumpctl serve --simulate N --clock virtual` as a real process on a free port, and the clinical
steps a test takes through its HTTP API (httpx over real TCP).

The process writes its log to a file (a pipe nobody reads would fill and block it); the log is
shown when the service fails to come up. It may be killed and started again on the same port
and data directory (the page's reconnect test).
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from needs import free_port

TOKENS = {
    "viewer": "v-tok-for-the-tests-only-32chars",
    "nurse": "n-tok-for-the-tests-only-32chars",
    "clinician": "c-tok-for-the-tests-only-32chars",
    "admin": "a-tok-for-the-tests-only-32chars",
}
NAMES = {"viewer": "vera", "nurse": "nina", "clinician": "carl", "admin": "ada"}
#: Seconds the tests' clients keep an idle connection: well under the services' own keep-alive
#: (5 s: the web side's api.edge.KEEP_ALIVE_S, the kernel's uvicorn default), so a request
#: never goes out on a connection the service is closing as idle at that instant (seen: "Server
#: disconnected without sending a response" on the first request after a 5 s wait).
CLIENT_KEEPALIVE_S = 2.0
#: The tests' clients' connection limits (`CLIENT_KEEPALIVE_S`).
CLIENT_LIMITS = httpx.Limits(keepalive_expiry=CLIENT_KEEPALIVE_S)
UP_WITHIN_S = 30.0  # a cold interpreter and a migrated SQLite on a loaded CI machine
HOUR = 3600


async def terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM `process` and wait (bounded); SIGKILL it if it does not end."""
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


def service_env(data_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment with the four roles' tokens (`TOKENS`), `data_dir`, and
    `settings` (`PUMPCTL_...` variables) over them."""
    tokens = ",".join(f"{t}={NAMES[r]}:{r}" for r, t in TOKENS.items())
    return {
        **os.environ,
        "PUMPCTL_API_TOKENS": tokens,
        "PUMPCTL_DATA_DIR": str(data_dir),
        **settings,
    }


@dataclass
class Service:
    """One service process; `api()` speaks to it as a role."""

    port: int
    data_dir: Path
    simulate: int = 2
    env: dict[str, str] = field(default_factory=dict)
    clock: str = "virtual"
    args: list[str] = field(default_factory=list)  # more options (with simulate=0: --pump ...)
    process: asyncio.subprocess.Process | None = None
    http: httpx.AsyncClient | None = None
    #: "https" with `verify`, the SSL context trusting the test CA (tests/helpers/tls_env.py)
    scheme: str = "http"
    verify: ssl.SSLContext | bool = True

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.data_dir / "service.log"

    async def start(self) -> None:
        """Start the process and wait (bounded) until /health answers 200."""
        env = service_env(
            self.data_dir,
            PUMPCTL_COMMAND_TIMEOUT_S="0.5",
            PUMPCTL_POLL_INTERVAL_S="0.2",
            PUMPCTL_STOP_ANSWER_S="2",
            **self.env,
        )
        command = [sys.executable, "-m", "pumpctl", "serve"]
        if self.simulate:
            command += ["--simulate", str(self.simulate)]
        command += ["--clock", self.clock, "--port", str(self.port), *self.args]
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *command, stdout=log, stderr=log, env=env
            )
        self.http = httpx.AsyncClient(
            base_url=self.url, timeout=15.0, verify=self.verify, limits=CLIENT_LIMITS
        )
        try:
            await self._up(self.process, self.http)
        except BaseException:
            # not up in time (or the test cancelled): no fixture will stop it, so it goes now,
            # or it would outlive the run (seen: two services left running after a loaded run)
            await self.kill()
            raise

    async def _up(self, process: asyncio.subprocess.Process, http: httpx.AsyncClient) -> None:
        """Until /health answers 200 (bounded); AssertionError if the process exits first."""
        async with asyncio.timeout(UP_WITHIN_S):
            while True:
                if process.returncode is not None:
                    raise AssertionError(f"the service exited:\n{self.log.read_text()}")
                try:
                    if (await http.get("/api/v1/health")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)  # polling a condition with a deadline

    async def kill(self) -> None:
        """SIGKILL the process (a crash, not a shutdown)."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
        if self.http is not None:
            await self.http.aclose()
            self.http = None

    async def stop(self) -> None:
        """SIGTERM and wait (bounded); SIGKILL if it does not end. The test's own client goes
        first: its idle keep-alive connection is not one the service should wait for."""
        if self.http is not None:
            await self.http.aclose()
            self.http = None
        if self.process is not None:
            await terminate(self.process)

    async def api(
        self, method: str, path: str, role: str, body: Any = None, expect: int = 200
    ) -> Any:
        assert self.http is not None
        r = await self.http.request(
            method, f"/api/v1{path}", json=body, headers={"Authorization": f"Bearer {TOKENS[role]}"}
        )
        assert r.status_code == expect, (method, path, r.status_code, r.text)
        return r.json()

    async def now(self) -> datetime:
        return datetime.fromisoformat((await self.api("GET", "/clock", "viewer"))["now"])

    async def advance(self, seconds: float) -> None:
        await self.api("POST", "/sim/advance", "admin", {"seconds": seconds})

    async def pump(self, pump_id: str) -> Any:
        pumps = await self.api("GET", "/pumps", "viewer")
        return next(p for p in pumps if p["id"] == pump_id)

    async def running(self, pump_id: str, mrn: str, *, hours: float = 0) -> int:
        """A patient's first infusion started on `pump_id` (premedication an hour before, D3),
        then `hours` of clinical time."""
        patient = await self.api(
            "POST", "/patients", "clinician", {"mrn": mrn, "weight_kg": 70}, 201
        )
        inf = await self.api(
            "POST",
            "/infusions",
            "clinician",
            {"patient_id": patient["id"], "pump_id": pump_id},
            201,
        )
        given = (await self.now()) - timedelta(minutes=60)
        await self.api(
            "POST",
            f"/infusions/{inf['id']}/premedication",
            "nurse",
            {"given_at": given.isoformat()},
        )
        await self.api("POST", f"/infusions/{inf['id']}/start", "clinician", {})
        await self.advance(1)
        if hours:
            await self.advance(hours * HOUR)
        return int(inf["id"])


@asynccontextmanager
async def serving(data_dir: Path, **options: Any) -> AsyncIterator[Service]:
    """A started service on a free loopback port (`options` as `Service`'s), stopped after."""
    served = Service(port=free_port(), data_dir=data_dir, **options)
    await served.start()
    try:
        yield served
    finally:
        await served.stop()

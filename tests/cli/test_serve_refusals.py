"""`pumpctl serve` refuses to start, as a real process, when it must: a token too short, a scaled or
virtual clock against real pump links without --bench, a pump URL it cannot read, a serial port
that can never be opened as configured. Each refusal is one line on stderr naming what is wrong,
exit code 2, no traceback, and nothing served. A serial device that is missing (or a pump that
does not answer) is not a refusal: the service starts with that pump's link lost (A2)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from needs import free_port
from pumpctl_process import BOUND_S, PUMPCTL

from pumpctl.clock import VirtualClock
from pumpctl.credentials import MIN_TOKEN_CHARS
from simulator.model import PumpModel
from simulator.serial_server import SerialSimulator

TOKENS = (
    "a-tok-for-the-tests-only-32chars=ada:admin,c-tok-for-the-tests-only-32chars=carl:clinician"
)


async def _serve(
    cwd: Path, *args: str, tokens: str | None = TOKENS, settings: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`pumpctl serve ARGS` in `cwd` with no PUMPCTL_* from the caller's environment but
    `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPCTL_")}
    env["PUMPCTL_DATA_DIR"] = str(cwd / "data")
    env.update(settings or {})
    if tokens is not None:
        env["PUMPCTL_API_TOKENS"] = tokens
    process = await asyncio.create_subprocess_exec(
        *PUMPCTL, "serve", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd, env=env,
    )  # fmt: skip
    async with asyncio.timeout(BOUND_S):
        out, err = await process.communicate()
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(args), process.returncode, out.decode(), err.decode())


def _refused(done: subprocess.CompletedProcess[str]) -> str:
    """The one line of a refusal (exit 2, no traceback, never started serving)."""
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "Uvicorn running" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("pumpctl serve: "), lines
    return lines[0]


async def test_a_short_configured_token_is_refused_naming_the_setting(tmp_path: Path) -> None:
    """Issue 20: a 1-character token was accepted; now at least 32 (MIN_TOKEN_CHARS), refused
    in one line naming `api_tokens` and the holder, never the token itself."""
    short = "x" * (MIN_TOKEN_CHARS - 1)
    line = _refused(await _serve(tmp_path, "--simulate", "1", tokens=f"{short}=nina:nurse"))
    assert line.startswith("pumpctl serve: api_tokens: the token of 'nina' has 31 characters")
    assert f"at least {MIN_TOKEN_CHARS}" in line
    assert short not in line


@pytest.mark.parametrize(
    ("user", "words"),
    [
        ("root", "web_user: 'root' is root's; the web side never runs as root"),
        ("no-such-user-here", "web_user: no user 'no-such-user-here' on this machine"),
    ],
)
async def test_a_web_user_that_cannot_be_is_refused_naming_the_setting(
    tmp_path: Path, user: str, words: str
) -> None:
    """The web side never runs as root; a user the machine lacks is named (as root, the
    service's web side becomes `web_user`; as another user, becoming root is refused too)."""
    settings = {"PUMPCTL_WEB_USER": user}
    line = _refused(
        await _serve(tmp_path, "--simulate", "1", "--clock", "virtual", settings=settings)
    )
    if os.geteuid() == 0 or user != "root":
        assert words in line
    else:
        assert "web_user: becoming 'root' needs the service started as root" in line


@pytest.mark.parametrize("clock", ["virtual", "scaled:60"])
async def test_a_virtual_or_scaled_clock_with_a_real_pump_and_no_bench_refuses(
    tmp_path: Path, clock: str
) -> None:
    line = _refused(
        await _serve(tmp_path, "--clock", clock, "--pump", "pump-1=serial:///dev/ttyUSB0")
    )
    assert f"clock: {clock!r} with real pump links is refused" in line
    assert "--bench" in line


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("pump-1=http://gateway/pump", "pump pump-1: URL must start serial:// or mqtt://"),
        ("pump-1=serial://", "pump pump-1: serial URL names no port"),
        ("pump-1=serial:///dev/ttyUSB0?adress=1", "pump pump-1: unknown serial option(s)"),
        ("pump-1=mqtt://", "pump pump-1: MQTT URL names no broker"),
    ],
)
async def test_a_bad_pump_url_is_refused_naming_the_pump_and_what_is_wrong(
    tmp_path: Path, url: str, words: str
) -> None:
    line = _refused(await _serve(tmp_path, "--pump", url))
    assert words in line, line


async def test_a_pump_without_an_id_is_refused_naming_what_was_given(tmp_path: Path) -> None:
    line = _refused(await _serve(tmp_path, "--pump", "serial:///dev/ttyUSB0"))
    assert "--pump 'serial:///dev/ttyUSB0': give ID=URL" in line, line


async def test_a_pump_given_twice_is_refused(tmp_path: Path) -> None:
    twice = ["--pump", "pump-1=serial:///dev/ttyUSB0", "--pump", "pump-1=serial:///dev/ttyUSB1"]
    line = _refused(await _serve(tmp_path, *twice))
    assert "configured twice" in line


async def _upgrade(data: Path) -> None:
    """`pumpctl db upgrade` on the data directory `data` (a gateway's store is migrated first)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPCTL_")}
    upgrade = await asyncio.create_subprocess_exec(
        *PUMPCTL, "db", "upgrade",
        env={**env, "PUMPCTL_DATA_DIR": str(data)},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(BOUND_S):
        _, upgrade_err = await upgrade.communicate()
    assert upgrade.returncode == 0, upgrade_err


async def test_a_serial_port_that_can_never_be_opened_as_given_ends_the_start_in_one_line(
    tmp_path: Path,
) -> None:
    """A configuration error that reaches the driver (a baud rate a New Era pump does not have)
    still refuses the start: one line naming the pump and what is wrong, no traceback, no
    "Task exception was never retrieved"."""
    await _upgrade(tmp_path / "data")
    done = await _serve(tmp_path, "--pump", "bed-1=serial:///dev/ttyUSB0?baud=1234")
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "never retrieved" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pumpctl serve: a pump could not be opened: "), last
    assert "baud 1234" in last, last


async def _health(http: httpx.AsyncClient, ready: Callable[[dict[str, Any]], bool]) -> Any:
    """GET /api/v1/health until `ready(body)` holds (bounded by the caller); the body."""
    while True:
        try:
            response = await http.get("/api/v1/health")
        except httpx.TransportError:  # not listening yet
            response = None
        if response is not None and response.status_code == 200 and ready(response.json()):
            return response.json()
        await asyncio.sleep(0.1)  # polling a condition of another process, with a deadline


def _pumps(body: dict[str, Any]) -> dict[str, bool]:
    return {p["id"]: p["connected"] for p in body["pumps"]}


async def test_a_missing_serial_device_does_not_stop_the_start_A2(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """A2 on a gateway: `pumpctl serve` with one serial device that does not exist (an adapter
    unplugged) and one pump that answers starts; /health shows the missing pump's link lost and
    the other linked; one warning names the pump, its port and why. When the device appears
    (a symlink made to a pty the simulator serves), the pump is linked by itself."""
    await _upgrade(tmp_path / "data")
    late = tmp_path / "ttyUSB-late"
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPCTL_")}
    env |= {
        "PUMPCTL_DATA_DIR": str(tmp_path / "data"),
        "PUMPCTL_API_TOKENS": TOKENS,
        "PUMPCTL_POLL_INTERVAL_S": "0.2",
    }
    async with (
        SerialSimulator([PumpModel("bed-2", clock, address=0)]) as present,
        SerialSimulator([PumpModel("bed-1", clock, address=0)]) as plugged_later,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as http,
    ):
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(
                *PUMPCTL, "serve", "--port", str(port),
                "--pump", f"bed-1=serial://{late}?address=0",
                "--pump", f"bed-2=serial://{present.path}?address=0",
                stdout=out, stderr=out, cwd=tmp_path, env=env,
            )  # fmt: skip
        try:
            async with asyncio.timeout(BOUND_S):
                body = await _health(http, lambda b: _pumps(b) == {"bed-1": False, "bed-2": True})
            assert body["status"] == "ok"
            assert (
                next(p for p in body["pumps"] if p["id"] == "bed-1")["last_contact_age_s"] is None
            )
            text = log.read_text()
            starts = [line for line in text.splitlines() if "starts unlinked" in line]
            assert len(starts) == 1, text
            assert "WARNING" in starts[0]
            assert "bed-1" in starts[0]
            assert str(late) in starts[0]
            assert "No such file or directory" in starts[0]
            assert "Traceback" not in text
            late.symlink_to(plugged_later.path)  # the adapter is plugged in
            async with asyncio.timeout(BOUND_S):
                await _health(http, lambda b: _pumps(b) == {"bed-1": True, "bed-2": True})
        finally:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(BOUND_S):
                await process.wait()
    text = log.read_text()
    assert process.returncode == 0, (process.returncode, text)  # ended in order on SIGTERM
    assert "Traceback" not in text
    assert sum("starts unlinked" in line for line in text.splitlines()) == 1, text
    assert sum("bed-1: linked (port" in line for line in text.splitlines()) == 1, text
    assert "reopening failed" not in text  # the retries are DEBUG: no flood at INFO


async def test_a_store_not_migrated_ends_the_start_in_one_line_saying_what_to_run(
    tmp_path: Path,
) -> None:
    done = await _serve(tmp_path, "--bench", "--clock", "virtual", "--pump", "b=serial:///dev/x")
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pumpctl serve: database "), last
    assert "run `pumpctl db upgrade`" in last


@pytest.mark.parametrize("simulate", [False, True], ids=["gateway", "simulated"])
async def test_a_database_that_does_not_answer_ends_the_start_in_one_line_without_its_password(
    tmp_path: Path, simulate: bool
) -> None:
    """A PostgreSQL server that is not there at start (nothing listens on the port): the kernel
    cannot know what it supervises (A4 needs the store), so it does not start; it says so in one
    line naming the database and the driver's reason, with the password hidden, never the
    driver's 100-line traceback, and exits 2 (its unit starts it again, RestartSec=2s). With
    --simulate the store is migrated first: the same line."""
    url = f"postgresql+psycopg://nurse:sekrit-pw@127.0.0.1:{free_port()}/pumpctl"
    args = ["--simulate", "1"] if simulate else ["--bench", "--pump", "b=serial:///dev/x"]
    done = await _serve(tmp_path, "--clock", "virtual", "--no-web", *args, settings={
        "PUMPCTL_DATABASE": url,
    })  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    assert "sekrit-pw" not in done.stderr + done.stdout
    last = done.stderr.strip().splitlines()[-1]
    what = "migrated" if simulate else "opened"
    assert last.startswith("pumpctl serve: database postgresql+psycopg://nurse:***@"), last
    assert f"could not be {what}: " in last, last
    assert "refused" in last.lower(), last

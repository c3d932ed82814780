"""`pumpctl simulate serial` and `pumpctl pump ... --serial` as real subprocesses over a pty."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tty
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from drivers.serial.codec import Command, Reply, ReplyDecoder
from simulator.control import control_request

PUMPCTL = [sys.executable, "-m", "pumpctl"]
BOUND_S = 20.0  # a cold interpreter start on a loaded CI machine


@dataclass
class Served:
    process: asyncio.subprocess.Process
    path: str
    control_port: int


@asynccontextmanager
async def simulate_serial(*args: str) -> AsyncIterator[Served]:
    """Run `pumpctl simulate serial ARGS`; yield it with its pty path (first line) and control."""
    process = await asyncio.create_subprocess_exec(
        *PUMPCTL, "simulate", "serial", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        async with asyncio.timeout(BOUND_S):
            path = (await process.stdout.readline()).decode().strip()
            control = (await process.stdout.readline()).decode().strip()
        assert path.startswith("/dev/"), f"first line must be the pty path, got {path!r}"
        assert control.startswith("control: tcp://127.0.0.1:")
        yield Served(process, path, int(control.rpartition(":")[2]))
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(BOUND_S):
                await process.wait()


async def run_pumpctl(*args: str) -> subprocess.CompletedProcess[str]:
    """Run one short pumpctl command to completion (bounded)."""
    process = await asyncio.create_subprocess_exec(
        *PUMPCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(BOUND_S):
        out, err = await process.communicate()
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(args), process.returncode, out.decode(), err.decode())


def send_raw(path: str, command: Command) -> Reply:
    """Write one command on the pty and read its reply (blocking; run in a thread)."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        tty.setraw(fd)
        os.write(fd, command.to_bytes())
        decoder = ReplyDecoder()
        while not (frames := decoder.feed(os.read(fd, 64))):
            pass
        return frames[0]
    finally:
        os.close(fd)


async def test_simulate_serial_and_pump_status_by_hand() -> None:
    async with simulate_serial("--pumps", "2") as served:
        done = await run_pumpctl("pump", "status", "--serial", served.path, "--address", "1")
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert status["state"] == "stopped"
        assert status["address"] == 1
        assert status["firmware"] == "NE1000V3.928"
        assert status["safe_mode_s"] == 0
        assert "warnings" not in status

        done = await run_pumpctl("pump", "rate", "150", "--serial", served.path, "--address", "1")
        assert json.loads(done.stdout)["rate_ml_h"] == 150
        done = await run_pumpctl("pump", "run", "--serial", served.path, "--address", "1")
        assert json.loads(done.stdout)["state"] == "running"
        done = await run_pumpctl("pump", "stop", "--serial", served.path, "--address", "1")
        assert json.loads(done.stdout)["state"] == "stopped"

        served.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(BOUND_S):
            assert await served.process.wait() == 0  # a clean exit


async def test_status_warns_about_safe_mode_and_reports_acknowledged_alarm() -> None:
    async with simulate_serial() as served:
        reply = await asyncio.to_thread(send_raw, served.path, Command(0, "SAF", "30"))
        assert reply == Reply(0, "S", safe=True)
        occlusion = {"pump": 0, "alarm": "occlusion"}
        answer = await control_request("127.0.0.1", served.control_port, occlusion)
        assert answer["ok"] is True

        done = await run_pumpctl("pump", "status", "--serial", served.path)
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert status["safe_mode_s"] == 30  # read with a query: SAF was never changed
        assert status["state"] == "alarm"
        assert status["alarms"] == ["occlusion"]
        assert status["acknowledged_alarms"] == ["occlusion"]
        assert any("safe mode" in w for w in status["warnings"])
        assert "safe mode (SAF 30)" in done.stderr
        line = await control_request("127.0.0.1", served.control_port, {"pump": 0, "status": True})
        assert line["pump"]["line"]["safe_mode_s"] == 30  # type: ignore[index]


async def test_pump_cli_errors_are_one_line_and_nonzero() -> None:
    done = await run_pumpctl("pump", "status", "--serial", "/dev/no-such-port")
    assert done.returncode != 0
    assert "no-such-port" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = await run_pumpctl("pump", "status")  # neither --serial nor --mqtt
    assert done.returncode != 0
    done = await run_pumpctl("pump", "status", "--serial", "/dev/x", "--mqtt", "h:1", "--pump", "p")
    assert done.returncode != 0

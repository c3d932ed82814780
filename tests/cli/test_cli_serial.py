"""`pumpctl simulate serial` and `pumpctl pump ... --serial` as real subprocesses over a pty."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import tty

from pumpctl_process import BOUND_S, run_pumpctl, simulate_serial

from drivers.serial.codec import Command, Reply, ReplyDecoder
from simulator.control import control_request


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
            await served.process.communicate()  # drains its pipes: wait() could block on one
            assert served.process.returncode == 0  # a clean exit


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

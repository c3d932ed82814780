"""`pumpctl simulate serial --tcp PORT`: the line served on loopback TCP, opened as socket://."""

from __future__ import annotations

import asyncio
import json
import signal

from pumpctl_process import BOUND_S, run_pumpctl, simulate_serial


async def test_simulate_serial_over_tcp_and_pump_status_through_socket_url() -> None:
    async with simulate_serial("--tcp", "0", "--pumps", "2") as served:
        url = served.path  # checked by simulate_serial: socket://127.0.0.1:PORT
        assert int(url.rpartition(":")[2]) > 0
        done = await run_pumpctl("pump", "status", "--serial", url, "--address", "1")
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert status["address"] == 1
        assert status["state"] == "stopped"
        assert status["firmware"] == "NE1000V3.928"
        served.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(BOUND_S):
            await served.process.communicate()  # drains its pipes: wait() could block on one
            assert served.process.returncode == 0

"""`pumpctl simulate serial --tcp PORT`: the line served on loopback TCP, opened as socket://."""

from __future__ import annotations

import asyncio
import json
import signal
import sys

PUMPCTL = [sys.executable, "-m", "pumpctl"]
BOUND_S = 20.0  # a cold interpreter start on a loaded CI machine


async def test_simulate_serial_over_tcp_and_pump_status_through_socket_url() -> None:
    server = await asyncio.create_subprocess_exec(
        *PUMPCTL, "simulate", "serial", "--tcp", "0", "--pumps", "2",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        async with asyncio.timeout(BOUND_S):
            url = (await server.stdout.readline()).decode().strip()
            control = (await server.stdout.readline()).decode().strip()
        assert url.startswith("socket://127.0.0.1:"), url
        assert int(url.rpartition(":")[2]) > 0
        assert control.startswith("control: tcp://127.0.0.1:")
        client = await asyncio.create_subprocess_exec(
            *PUMPCTL, "pump", "status", "--serial", url, "--address", "1",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        async with asyncio.timeout(BOUND_S):
            out, err = await client.communicate()
        assert client.returncode == 0, err.decode()
        status = json.loads(out)
        assert status["address"] == 1
        assert status["state"] == "stopped"
        assert status["firmware"] == "NE1000V3.928"
        server.send_signal(signal.SIGTERM)
        async with asyncio.timeout(BOUND_S):
            assert await server.wait() == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()

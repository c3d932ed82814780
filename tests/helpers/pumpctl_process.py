"""`pumpctl` as a real subprocess: one-shot commands, and servers stopped by SIGTERM on exit."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosquitto_env import Broker
from service_process import terminate

from simulator.control import control_request

PUMPCTL = [sys.executable, "-m", "pumpctl"]
BOUND_S = 20.0  # a cold interpreter start on a loaded CI machine
#: Seconds a simulated pump may take to reach a state a test waits for.
PUMP_BOUND_S = 30.0


async def run_pumpctl(*args: str) -> subprocess.CompletedProcess[str]:
    """Run one short pumpctl command to completion (bounded)."""
    process = await asyncio.create_subprocess_exec(
        *PUMPCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(BOUND_S):
        out, err = await process.communicate()
    assert process.returncode is not None
    return subprocess.CompletedProcess(list(args), process.returncode, out.decode(), err.decode())


@asynccontextmanager
async def pumpctl_server(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """Start `pumpctl ARGS` (output piped); on exit SIGTERM it if still running, and wait."""
    process = await asyncio.create_subprocess_exec(
        *PUMPCTL, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        # communicate(), not wait(): a process blocked writing to a full pipe never exits.
        async with asyncio.timeout(BOUND_S):
            await process.communicate()


async def read_lines(process: asyncio.subprocess.Process, n: int) -> list[str]:
    """The next `n` lines the process prints, stripped (bounded); "" for each after it exited."""
    assert process.stdout is not None
    async with asyncio.timeout(BOUND_S):
        return [(await process.stdout.readline()).decode().strip() for _ in range(n)]


@dataclass
class Served:
    """A running `pumpctl simulate serial`: its line (pty path or socket:// url), its control."""

    process: asyncio.subprocess.Process
    path: str
    control_port: int


@asynccontextmanager
async def simulate_serial(*args: str) -> AsyncIterator[Served]:
    """Run `pumpctl simulate serial ARGS`; yield it with its line (first line) and control."""
    async with pumpctl_server("simulate", "serial", *args) as process:
        path, control = await read_lines(process, 2)
        where = "socket://127.0.0.1:" if "--tcp" in args else "/dev/"
        assert path.startswith(where), f"first line must be the line's {where}..., got {path!r}"
        assert control.startswith("control: tcp://127.0.0.1:")
        yield Served(process, path, int(control.rpartition(":")[2]))


def plan_first_infusion(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    """`COMMAND plan --infusion 1 --json` in `cwd` plans 1000 ml from 50 ml/h over 390 min."""
    completed = subprocess.run(
        [*command, "plan", "--infusion", "1", "--json"],
        capture_output=True, text=True, timeout=30, check=False, cwd=cwd, env=env,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert (document["bag_ml"], document["initial_rate_ml_h"], document["duration_min"]) == (
        1000,
        50,
        390,
    )


@dataclass
class PumpSimulator:
    """A running `pumpctl simulate ...` and its control interface (simulator/control.py)."""

    control_port: int
    pump: str | int  # the simulated pump's id or address on the control interface

    async def report(self) -> dict[str, Any]:
        """The pump's real state and its history of changes, oldest first (bounded)."""
        async with asyncio.timeout(10):
            answer = await control_request(
                "127.0.0.1", self.control_port, {"pump": self.pump, "history": True}
            )
        assert answer["ok"] is True, answer
        pump: dict[str, Any] = answer["pump"]  # type: ignore[assignment]
        return pump

    async def until(
        self, holds: Callable[[dict[str, Any]], bool], bound_s: float = PUMP_BOUND_S
    ) -> dict[str, Any]:
        """The pump's report once `holds` is true of it, bounded."""
        async with asyncio.timeout(bound_s):
            while True:
                report = await self.report()
                if holds(report):
                    return report
                await asyncio.sleep(0.1)  # polling a condition with a deadline


@asynccontextmanager
async def mqtt_pumps(broker: Broker, workdir: Path, *args: str) -> AsyncIterator[PumpSimulator]:
    """`pumpctl simulate mqtt ARGS` serving `pump-1` on `broker`, in a process of its own; its
    first line (JSON) names its control port. Its output goes to files (a pipe nobody reads
    would block it while it logs the broker's absence)."""
    out, err = workdir / "simulator.out", workdir / "simulator.log"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *PUMPCTL, "simulate", "mqtt", "--broker", broker.address, "--pumps", "1", *args,
            stdout=stdout, stderr=stderr,
        )  # fmt: skip
    try:
        async with asyncio.timeout(BOUND_S):
            while not (first := out.read_text()).endswith("\n"):
                assert process.returncode is None, err.read_text()
                await asyncio.sleep(0.05)  # polling a condition with a deadline
        announced = json.loads(first.splitlines()[0])
        control = int(announced["control"].rpartition(":")[2])
        yield PumpSimulator(control_port=control, pump="pump-1")
    finally:
        await terminate(process)

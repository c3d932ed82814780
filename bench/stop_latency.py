"""Benchmark: how long a confirmed stop takes (I1's path), serial and MQTT, against the simulator.

A stop is `Pump.stop()`: the command and the read-back of the pump's state (A3), so the figure is
what the controller waits before it can tell the nurse the pump has stopped. Prints figures; it
asserts nothing. Run from the checkout:

    .venv/bin/python bench/stop_latency.py [--n 200]

The serial pump runs on a pseudo-terminal with the wire time of 19200 baud emulated; the MQTT
pump goes through a private Mosquitto (set_tcp_nodelay true) started on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from drivers.base import Pump
from drivers.mqtt import MqttPump
from drivers.serial import SerialLine, SerialPump
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.mqtt_server import MqttPumpServer
from simulator.serial_server import SerialSimulator


async def measure(pump: Pump, n: int) -> list[float]:
    """Milliseconds of `n` confirmed stops of a running pump."""
    await pump.set_vtbi(1000)
    await pump.set_rate(200)
    samples = []
    for _ in range(n):
        await pump.run()
        t0 = time.perf_counter()
        await pump.stop()
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


def report(name: str, samples: list[float]) -> None:
    """Print percentiles of `samples` (ms)."""
    ordered = sorted(samples)
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    print(
        f"{name:<38} n={len(samples):<4} median {statistics.median(ordered):7.2f} ms"
        f"   p95 {p95:7.2f} ms   max {ordered[-1]:7.2f} ms"
    )


async def serial_case(n: int, safe_mode_s: int | None, wire_time: bool) -> list[float]:
    """A stop on one New Era pump behind a pseudo-terminal, and the floor of the same run."""
    model = PumpModel("bench-serial", VirtualClock())
    async with (
        SerialSimulator([model], emulate_wire_time=wire_time) as sim,
        SerialLine(sim.path) as line,
        SerialPump(line, 0, pump_id="bench-serial", safe_mode_s=safe_mode_s) as pump,
    ):
        stops = await measure(pump, n)
        reads = []
        for _ in range(n):
            t0 = time.perf_counter()
            await pump.read_status()
            reads.append((time.perf_counter() - t0) * 1000)
        # The floor: one exchange, measured on the same line (a status read is three: RAT, VOL,
        # DIS). Issue 8's goal for the stop: within 2x one exchange.
        floor = statistics.median(reads) / 3
        print(
            f"{'  floor: one exchange on that line':<38} median {floor:7.2f} ms"
            f"   stop / floor {statistics.median(stops) / floor:5.2f}x"
        )
        return stops


#: The shipped broker configuration, whose per-client sizing the benches' broker runs with.
SHIPPED_CONF = Path(__file__).resolve().parents[1] / "config" / "mosquitto.conf"
#: Seconds a private broker may take to say it runs.
BROKER_UP_S = 60.0
SIZING_KEYS = ("max_inflight_messages", "max_queued_messages", "max_queued_bytes")


def shipped_sizing() -> str:
    """The per-client limits lines of config/mosquitto.conf (a fleet's broker is sized so)."""
    lines = SHIPPED_CONF.read_text(encoding="utf-8").splitlines()
    return "".join(f"{line}\n" for line in lines if line.split(" ", 1)[0] in SIZING_KEYS)


class Broker:
    """What a private Mosquitto said: its port, and its warning lines counted (`dropped`: the
    lines "Outgoing messages are being dropped for client ...", one per burst of drops)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.warnings: collections.Counter[str] = collections.Counter()

    @property
    def dropped(self) -> int:
        return sum(count for line, count in self.warnings.items() if "dropped" in line)


@asynccontextmanager
async def private_broker() -> AsyncIterator[Broker]:
    """A private Mosquitto on a free loopback port, with the shipped configuration's per-client
    limits (`shipped_sizing`); yields its `Broker`.

    Its log (stderr) is read all along, not only up to its "running" line: a pipe nobody reads
    fills up and then blocks the broker on its next log line. Its warnings (such as "Outgoing
    messages are being dropped for client ...", when a client's queue of QoS 1 messages passes
    `max_queued_messages`) are counted in the `Broker`, a bus's random client id folded."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    broker = Broker(port)
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
            "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
            f"log_type information\n{shipped_sizing()}"
        )
        proc = await asyncio.create_subprocess_exec(
            binary, "-c", str(conf), stderr=asyncio.subprocess.PIPE
        )
        assert proc.stderr is not None
        async with asyncio.timeout(BROKER_UP_S):
            async for raw in proc.stderr:  # wait for the broker's own "running" line
                if b" running" in raw:
                    break

        async def drain(stream: asyncio.StreamReader) -> None:
            async for raw in stream:
                line = raw.decode(errors="replace").strip()
                if "dropped" in line or "Warning" in line or "Error" in line:
                    key = re.sub(
                        r"pumpctl-bus-[0-9a-f]+", "pumpctl-bus-...", line.split(": ", 1)[-1]
                    )
                    broker.warnings[key] += 1

        reader = asyncio.create_task(drain(proc.stderr), name="mosquitto-log")
        try:
            yield broker
        finally:
            proc.kill()
            await proc.wait()
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


@asynccontextmanager
async def mosquitto() -> AsyncIterator[int]:
    """`private_broker()`, its port yielded; at the end its warnings are printed on stderr,
    counted: a bench run whose messages the broker dropped says so instead of looking like a
    stall."""
    async with private_broker() as broker:
        try:
            yield broker.port
        finally:
            for line, count in broker.warnings.most_common(10):
                print(f"  mosquitto ({count}x): {line}", file=sys.stderr)


async def mqtt_case(n: int) -> list[float]:
    """A stop on one MQTT pump through a private broker."""
    async with mosquitto() as port:
        model = PumpModel("bench-mqtt", VirtualClock())
        async with MqttPumpServer(model, "127.0.0.1", port) as server:
            await server.online.wait()
            async with MqttPump("bench-mqtt", "127.0.0.1", port) as pump:
                return await measure(pump, n)


async def main(n: int) -> None:
    """Run every case and print its figures."""
    cases: list[tuple[str, Callable[[], Awaitable[list[float]]]]] = [
        ("serial basic, 19200 baud wire time", lambda: serial_case(n, None, True)),
        ("serial safe (SAF 5), 19200 wire time", lambda: serial_case(n, 5, True)),
        ("serial safe (SAF 5), pty speed", lambda: serial_case(n, 5, False)),
        ("mqtt QoS 1, TCP_NODELAY", lambda: mqtt_case(n)),
    ]
    for name, case in cases:
        samples = await case()
        report(name, samples)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="stops per case")
    asyncio.run(main(parser.parse_args().n))

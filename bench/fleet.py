"""Benchmark: one controller process supervising a fleet of MQTT pumps through a real Mosquitto.

Three processes and a private Mosquitto (set_tcp_nodelay true, started on a free port):

- the simulator: N simulated pumps on one shared connection (`MqttSimulator(shared=True)`),
  each publishing its status at least once a second while running, plus an echo client on a
  connection of its own (the floor's far end);
- the controller: one `MqttBus` (one connection) carrying N `MqttPump`s, one `PumpSupervisor`
  per pump with a first daratumumab infusion attached and started (the supervisors program and
  start the pumps, poll each once a second and decide on every reading), all under one
  `Controller`; this process measures itself;
- this one, which starts the others and prints the table.

Measured in the controller process over the window: RSS (VmRSS at the end, VmHWM the peak),
CPU share (process CPU time / wall time, 1.0 = one core), and the confirmed stop (`pump.stop()`:
command sent to the read-back confirming it, A3) of distinct random running pumps spread over
the window, next to the floor measured in the same window and process: a bare aiomqtt QoS 1
round trip (publish to the echo client, its QoS 1 publish back) on connections of their own.
A stopped pump stays stopped (its supervisor raises "pump stopped": no nurse resumes it), so
the stops are at most one per pump. Prints figures; it asserts nothing. Run from the checkout:

    .venv/bin/python bench/fleet.py [--pumps 100 1000] [--seconds 30] [--stops 200]

Goal (issue 8): 1,000 pumps in at most 200 MB, stop p99 within 2x the round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import json
import logging
import math
import os
import random
import resource
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiomqtt
from stop_latency import mosquitto

from drivers.base import PumpError, PumpState
from drivers.mqtt import MqttBus, MqttPump
from drivers.mqtt.bus import Session, bounded, cancel_and_wait, new_client
from pumpctl.clock import RealClock
from pumpctl.controller import Controller, PumpSupervisor
from pumpctl.core.history import CourseState
from pumpctl.core.machine import Start, initial_state
from pumpctl.protocols import load_protocol
from simulator.model import PumpModel
from simulator.mqtt_server import MqttSimulator

SCRIPT = Path(__file__).resolve()
HOST = "127.0.0.1"
PING, PONG = "bench/fleet/ping", "bench/fleet/pong"
#: Wire seconds a bench client's connect, subscribe or publish may take (drivers/mqtt/bus.py:
#: bounded by us, never by aiomqtt, whose bound can swallow a cancellation).
CALL_BOUND_S = 10.0
#: Wire seconds the fleet may take to connect and start (bounds, not figures).
SETUP_BOUND_S = 300.0
#: Seconds of steady state before the window opens.
WARMUP_S = 3.0
GOAL_RSS_MB = 200.0
#: Wire seconds a role process has to exit after its last record (it needs well under one).
EXIT_BOUND_S = 30.0
GOAL_RATIO = 2.0


def pump_ids(n: int) -> list[str]:
    return [f"fleet-{i:04d}" for i in range(n)]


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of non-empty `samples`."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def memory_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB, from /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            fields[key] = int(value.split()[0]) / 1024  # kB
    return fields["VmRSS"], fields["VmHWM"]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def progress(role: str, what: str, since: float) -> None:
    """A line on stderr: where a bench process is (a run that stalls says where)."""
    print(f"  [{role}] {what} at {time.perf_counter() - since:.1f} s", file=sys.stderr, flush=True)


#: Debug: with PUMPCTL_FLEET_DEBUG=SECONDS, a role process still running SECONDS after its
#: shutdown began dumps every thread's stack (faulthandler) and every asyncio task's stack on
#: stderr, then again every SECONDS: a run that stalls in its shutdown says where.
DEBUG_ENV = "PUMPCTL_FLEET_DEBUG"


def dump_tasks(role: str) -> None:
    """Every asyncio task of the running loop with its stack, on stderr."""
    tasks = asyncio.all_tasks()
    print(f"  [{role}] {len(tasks)} tasks:", file=sys.stderr, flush=True)
    for task in sorted(tasks, key=lambda t: t.get_name()):
        task.print_stack(limit=12, file=sys.stderr)
    sys.stderr.flush()


def dump_on_signal(role: str) -> None:
    """`kill -USR1` a role process: every asyncio task's stack on stderr; `kill -USR2`: every
    thread's (faulthandler, even with the loop stuck)."""
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump_tasks, role)
    faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True)


def debug_shutdown(role: str) -> None:
    """Arm the shutdown dumps of `DEBUG_ENV` (no-op without it); call as the shutdown begins."""
    after = float(os.environ.get(DEBUG_ENV) or 0)
    if after <= 0:
        return
    faulthandler.dump_traceback_later(after, repeat=True, file=sys.stderr)
    loop = asyncio.get_running_loop()

    def again() -> None:
        dump_tasks(role)
        loop.call_later(after, again)

    loop.call_later(after, again)


# -- the simulator process -------------------------------------------------------------------


async def echo(client: aiomqtt.Client) -> None:
    """The floor's far end: every ping back as a pong, QoS 1."""
    await bounded(client.subscribe(PING, qos=1), CALL_BOUND_S, "subscribe")
    async for message in client.messages:
        payload = message.payload
        assert isinstance(payload, bytes)
        await bounded(client.publish(PONG, payload, qos=1), CALL_BOUND_S, "pong")


async def simulator_role(port: int, n: int) -> None:
    """Serve `n` pumps on one shared connection and the echo until SIGTERM; report own CPU."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    dump_on_signal("simulator")
    clock = RealClock()
    models = [PumpModel(pid, clock) for pid in pump_ids(n)]
    async with (
        MqttSimulator(models, HOST, port, shared=True) as sim,
        Session(new_client(HOST, port), CALL_BOUND_S) as client,
    ):
        t0 = time.perf_counter()
        async with asyncio.timeout(SETUP_BOUND_S):
            await sim.wait_online()
        progress("simulator", f"{n} pumps online", t0)
        echoing = asyncio.create_task(echo(client), name="bench-echo")
        emit({"ready": True})
        cpu0, wall0 = cpu_s(), time.perf_counter()
        await stop.wait()
        cpu, wall = cpu_s() - cpu0, time.perf_counter() - wall0
        progress("simulator", "shutting down", t0)
        debug_shutdown("simulator")
        await cancel_and_wait(echoing)
    progress("simulator", "closed", t0)
    emit({"sim_cpu_share": cpu / wall, "sim_rss_mb": memory_mb()[0]})


# -- the controller process ------------------------------------------------------------------


class Pinger:
    """The floor: a bare aiomqtt QoS 1 round trip through the broker and the echo client."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.waiting: dict[bytes, asyncio.Future[None]] = {}
        self.seq = 0

    async def read(self) -> None:
        async for message in self.client.messages:
            payload = message.payload
            future = self.waiting.get(payload) if isinstance(payload, bytes) else None
            if future is not None and not future.done():
                future.set_result(None)

    async def round_trip_ms(self) -> float:
        self.seq += 1
        key = str(self.seq).encode()
        future = asyncio.get_running_loop().create_future()
        self.waiting[key] = future
        try:
            t0 = time.perf_counter()
            await bounded(self.client.publish(PING, key, qos=1), CALL_BOUND_S, "ping")
            async with asyncio.timeout(10):
                await future
            return (time.perf_counter() - t0) * 1000
        finally:
            del self.waiting[key]


async def paced(count: int, every_s: float, sample: Callable[[int], Any]) -> list[float]:
    """`count` samples, one every `every_s` (wall), each awaited before the next is due."""
    samples: list[float] = []
    start = time.perf_counter()
    for i in range(count):
        delay = start + i * every_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        result = await sample(i)
        if result is not None:
            samples.append(result)
    return samples


async def controller_role(port: int, n: int, seconds: float, stops: int) -> None:
    """Supervise `n` pumps on one bus, measure over `seconds`; print the figures (JSON)."""
    # each measured stop raises the expected "pump stopped" alarm (a WARNING): not news here
    logging.getLogger("pumpctl.controller").setLevel(logging.ERROR)
    dump_on_signal("controller")
    clock = RealClock()
    protocol = load_protocol("daratumumab")
    setup0 = time.perf_counter()
    async with MqttBus(HOST, port) as bus:
        pumps = [MqttPump(pid, bus=bus) for pid in pump_ids(n)]
        async with asyncio.timeout(SETUP_BOUND_S):
            await asyncio.gather(*(p.connect() for p in pumps))
        progress("controller", f"{n} pumps connected", setup0)
        supervisors = []
        for i, pump in enumerate(pumps):
            supervisor = PumpSupervisor(pump, clock, keep_decisions=False)
            state = initial_state(
                protocol, infusion_number=1, course=CourseState(), bag_prepared_at=clock.now()
            )
            supervisor.attach(f"inf-{i:04d}", state)
            supervisors.append(supervisor)
        try:
            async with Controller(clock, supervisors):
                for supervisor in supervisors:
                    supervisor.submit(Start(actor="bench", course=CourseState()))

                def running(s: PumpSupervisor) -> bool:
                    return s.status is not None and s.status.state is PumpState.RUNNING

                async with asyncio.timeout(SETUP_BOUND_S):
                    await asyncio.gather(*(s.wait_until(running) for s in supervisors))
                setup_s = time.perf_counter() - setup0
                progress("controller", f"{n} pumps running", setup0)
                await asyncio.sleep(WARMUP_S)
                figures = await measure(pumps, supervisors, seconds, stops, port)
                figures["setup_s"] = setup_s
                progress("controller", "window measured", setup0)
                debug_shutdown("controller")
            progress("controller", "controller stopped", setup0)
        finally:
            await asyncio.gather(*(p.close() for p in pumps))
            progress("controller", "pumps closed", setup0)
    progress("controller", "bus closed", setup0)
    emit(figures)


async def measure(
    pumps: list[MqttPump],
    supervisors: list[PumpSupervisor],
    seconds: float,
    stops: int,
    port: int,
) -> dict[str, Any]:
    """Stops and floor round trips spread over the window; CPU and memory of this process."""
    targets = random.Random(8).sample(pumps, min(stops, len(pumps)))
    every_s = seconds / len(targets)
    failures: list[str] = []

    async def stop_ms(i: int) -> float | None:
        t0 = time.perf_counter()
        try:
            status = await targets[i].stop(command_id=f"bench.stop.{i}")
        except PumpError as exc:
            failures.append(str(exc))
            return None
        assert status.state is not PumpState.RUNNING
        return (time.perf_counter() - t0) * 1000

    async with Session(new_client(HOST, port), CALL_BOUND_S) as client:
        await bounded(client.subscribe(PONG, qos=1), CALL_BOUND_S, "subscribe")
        pinger = Pinger(client)
        reader = asyncio.create_task(pinger.read(), name="bench-pong")
        try:
            idle = [await pinger.round_trip_ms() for _ in range(3)]  # connection warm-up
            del idle
            cpu0, wall0 = cpu_s(), time.perf_counter()

            async def ping(_: int) -> float:
                return await pinger.round_trip_ms()

            async def floor() -> list[float]:
                await asyncio.sleep(every_s / 2)  # between two stops
                return await paced(len(targets), every_s, ping)

            stop_samples, floor_samples = await asyncio.gather(
                paced(len(targets), every_s, stop_ms), floor()
            )
            cpu, wall = cpu_s() - cpu0, time.perf_counter() - wall0
        finally:
            await cancel_and_wait(reader)
    rss, peak = memory_mb()
    now = asyncio.get_running_loop().time()
    return {
        "pumps": len(pumps),
        "window_s": wall,
        "cpu_share": cpu / wall,
        "rss_mb": rss,
        "peak_rss_mb": peak,
        "stops": len(stop_samples),
        "stop_failures": failures,
        "stop_p50_ms": percentile(stop_samples, 50) if stop_samples else None,
        "stop_p90_ms": percentile(stop_samples, 90) if stop_samples else None,
        "stop_p99_ms": percentile(stop_samples, 99) if stop_samples else None,
        "stop_max_ms": max(stop_samples, default=None),
        "rtt_n": len(floor_samples),
        "rtt_p50_ms": percentile(floor_samples, 50),
        "rtt_p90_ms": percentile(floor_samples, 90),
        "rtt_p99_ms": percentile(floor_samples, 99),
        "stale_pumps": sum(p.is_stale(now) for p in pumps),
        "links_down": sum(not s.link_up for s in supervisors),
    }


# -- this process ----------------------------------------------------------------------------


async def role(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPT),
        *args,
        stdout=asyncio.subprocess.PIPE,
    )


async def read_record(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line:
        raise SystemExit(f"a bench process exited early (code {await process.wait()})")
    record: dict[str, Any] = json.loads(line)
    return record


async def exits(name: str, process: asyncio.subprocess.Process) -> bool:
    """Whether a role process, its last record read, exits by itself (code 0) within
    `EXIT_BOUND_S`; one that does not is killed, and said so on stderr (a shutdown hang)."""
    try:
        async with asyncio.timeout(EXIT_BOUND_S):
            code = await process.wait()
    except TimeoutError:
        print(f"  [{name}] still running {EXIT_BOUND_S:g} s after its figures: killed",
              file=sys.stderr, flush=True)  # fmt: skip
        process.kill()
        await process.wait()
        return False
    if code != 0:
        print(f"  [{name}] exited with code {code}", file=sys.stderr, flush=True)
    return code == 0


async def fleet_case(n: int, seconds: float, stops: int, budget_s: float) -> dict[str, Any]:
    """One run: broker, simulator and controller processes; the controller's figures."""
    async with mosquitto() as port:
        sim = await role("--role", "simulator", "--port", str(port), "--pumps", str(n))
        try:
            async with asyncio.timeout(budget_s):
                await read_record(sim)  # ready
                ctl = await role(
                    "--role", "controller", "--port", str(port), "--pumps", str(n),
                    "--seconds", str(seconds), "--stops", str(stops),
                )  # fmt: skip
                try:
                    figures = await read_record(ctl)
                    hung = [] if await exits("controller", ctl) else ["controller"]
                finally:
                    if ctl.returncode is None:
                        ctl.terminate()
                    await ctl.wait()
                sim.send_signal(signal.SIGTERM)
                figures.update(await read_record(sim))
                hung += [] if await exits("simulator", sim) else ["simulator"]
                figures["hung_at_exit"] = hung
        except TimeoutError:
            return {"pumps": n, "timed_out_s": budget_s}
        else:
            return figures
        finally:
            if sim.returncode is None:
                sim.kill()
            await sim.wait()


def row(f: dict[str, Any]) -> str:
    if "timed_out_s" in f:
        return f"{f['pumps']:>5}  did not finish within {f['timed_out_s']:.0f} s on this machine"
    if f["stop_p99_ms"] is None:
        return f"{f['pumps']:>5}  every stop failed: {f['stop_failures'][:1]}"
    ratio = f["stop_p99_ms"] / f["rtt_p99_ms"]
    return (
        f"{f['pumps']:>5} {f['rss_mb']:7.1f} {f['peak_rss_mb']:7.1f} {f['cpu_share']:6.2f}"
        f" {f['sim_cpu_share']:6.2f} {f['stops']:>5} {f['stop_p50_ms']:8.2f}"
        f" {f['stop_p90_ms']:8.2f} {f['stop_p99_ms']:8.2f} {f['rtt_p50_ms']:8.2f}"
        f" {f['rtt_p90_ms']:8.2f} {f['rtt_p99_ms']:8.2f} {ratio:6.2f}x"
        f" {f['stop_p99_ms'] / f['rtt_p50_ms']:6.2f}x {len(f['stop_failures']):>4}"
        f" {f['stale_pumps']:>5} {f['setup_s']:6.1f}"
    )


async def main(pumps: list[int], seconds: float, stops: int, budget_s: float) -> None:
    print(
        f"fleet: one controller on one MqttBus, the simulator on one shared connection, a private"
        f" Mosquitto; {os.cpu_count()} cores; window {seconds:g} s; stops of distinct random"
        f" running pumps, at most {stops}; floor: bare QoS 1 round trip, same window and process"
    )
    print(
        "pumps  RSS MB peak MB   CPU  simCPU stops stop p50 stop p90 stop p99  RTT p50  RTT p90"
        "  RTT p99"
        " p99/p99 p99/p50 fail stale setup s"
    )
    results = []
    for n in pumps:
        figures = await fleet_case(n, seconds, stops, budget_s)
        results.append(figures)
        print(row(figures), flush=True)
    print(
        f"goal (issue 8): 1,000 pumps in <= {GOAL_RSS_MB:.0f} MB RSS, stop p99 <= {GOAL_RATIO:g}x"
        " the round trip. CPU: process CPU time / wall time (1.00 = one core)."
    )
    for f in results:
        if f.get("hung_at_exit"):
            print(f"  {f['pumps']} pumps: did not exit by itself: {', '.join(f['hung_at_exit'])}")
        for failure in f.get("stop_failures", [])[:3]:
            print(f"  {f['pumps']} pumps, stop failed: {failure}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pumps", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window")
    parser.add_argument("--stops", type=int, default=200, help="stops per run (at most N)")
    parser.add_argument("--budget", type=float, default=600.0, help="wall bound of one run (s)")
    parser.add_argument("--role", choices=["simulator", "controller"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "simulator":
        asyncio.run(simulator_role(args.port, args.pumps[0]))
    elif args.role == "controller":
        asyncio.run(controller_role(args.port, args.pumps[0], args.seconds, args.stops))
    else:
        asyncio.run(main(args.pumps, args.seconds, args.stops, args.budget))

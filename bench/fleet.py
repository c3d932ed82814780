"""Benchmark: the kernel (`pumpctl serve --no-web`) supervising a fleet of MQTT pumps.

The controller is the one users run: `pumpctl serve --no-web --config FILE`, the kernel alone as
its systemd unit runs it (api/gateway.py `open_kernel`, the one composition root: store and its
writer, pumps, supervisors, ward, controller), its REST API on its Unix socket `kernel.sock` in
a temporary data directory, SQLite (`pumpctl db upgrade` first), the real clock, N MQTT pumps
configured as `[[pumps]]` tables of the config file. Nothing here wires a controller.

Processes and a private Mosquitto (set_tcp_nodelay true and the per-client limits of
config/mosquitto.conf, started on a free port):

- the simulator: N simulated pumps on one shared connection (`MqttSimulator(shared=True)`),
  each publishing its status on change and as a heartbeat every second on a phase of its own
  (MQTT contract 2), plus an echo client on a connection of its own (the QoS 1 floor's far end);
- the kernel, whose N pumps share one broker connection (api/pumps.py: one bus per broker);
- this one, the bench client: it starts the others, speaks to the kernel over its socket as a
  clinician and a nurse (httpx), measures and prints the table.

Set-up through the API, as a ward would: for every pump a patient (POST /patients), a first
daratumumab infusion on it (POST /infusions), its premedication an hour ago (a nurse), its start
(a clinician); a few requests at a time; then until every infusion runs (GET /infusions).

Measured over the window: a press is `POST /api/v1/infusions/{id}/reactions` (grade 2, a nurse)
on distinct random running infusions, paced over the window, timed from this client to the
answer (201 once the pump confirmed the stop; the answer's `stop_confirmed_ms` is the kernel's
own figure); the floor, in the same window between the presses: the kernel's `GET
/api/v1/health` over the socket (no token; it makes a real write through the store's writer)
and a bare aiomqtt QoS 1 round trip (publish, the echo publishes it back at QoS 1). Of the kernel
process (/proc/PID): RSS (VmRSS at the end; VmHWM, the peak) and CPU share over the window
(utime + stime / wall time, 1.0 = one core). A paused infusion stays paused (no nurse resumes
it), so a run has at most one press per pump. Prints figures; it asserts nothing. Run from the
checkout:

    .venv/bin/python bench/fleet.py [--pumps 100 1000] [--seconds 30] [--stops 200] [--keep-log F]

Goal (issue 8): 1,000 pumps in at most 200 MB, press p99 within 2x the floor (health p99 + round
trip p99). Issue 21's goals, reported per fleet size after the table: press p99 within 2x the QoS
1 round trip p99 (and, beside it, 2x this floor), nothing dropped (the broker's "dropped" log
lines, counted, and the bus's `pumpctl_mqtt_discarded` from the kernel's /metrics, read as an
admin), the kernel's CPU at most 0.3 of a core and its RSS at most 100 MB; then the largest
`--pumps` size the controller held (set up, every press confirmed, no link down, nothing
dropped, press p99 within 2x the round trip p99).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import faulthandler
import json
import math
import os
import random
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiomqtt
import httpx
from stop_latency import private_broker

from drivers.mqtt.bus import Session, bounded, cancel_and_wait, new_client
from pumpctl.clock import RealClock
from simulator.model import PumpModel
from simulator.mqtt_server import MqttSimulator

SCRIPT = Path(__file__).resolve()
HOST = "127.0.0.1"
PING, PONG = "bench/fleet/ping", "bench/fleet/pong"
#: The kernel refuses a token shorter than 32 characters (`pumpctl user token` makes 43).
TOKENS = {role: f"fleet-bench-{role}-".ljust(43, "t") for role in ("nurse", "clinician", "admin")}
AUTH = {role: {"Authorization": f"Bearer {token}"} for role, token in TOKENS.items()}
#: Wire seconds a bench client's connect, subscribe or publish may take (drivers/mqtt/bus.py:
#: bounded by us, never by aiomqtt, whose bound can swallow a cancellation).
CALL_BOUND_S = 10.0
#: Wall seconds the fleet may take to come up and have every infusion running (bounds, not
#: figures): the simulator online, the kernel answering, the set-up requests, the starts.
SETUP_BOUND_S = 300.0
#: Wall seconds one request to the kernel may take (a bound, not a figure).
REQUEST_BOUND_S = 30.0
#: Wall seconds a one-shot `pumpctl` command (the migration) may take.
COMMAND_BOUND_S = 60.0
#: Set-up requests in flight at once (the kernel has one store writer: more would only queue).
SETUP_CONCURRENCY = 8
#: Wall seconds between two progress lines of a long wait.
PROGRESS_EVERY_S = 5.0
#: Seconds of steady state before the window opens.
WARMUP_S = 3.0
GOAL_RSS_MB = 200.0
#: Issue 21's goals for the kernel at 1,000 pumps: CPU share and RSS.
GOAL_CPU_SHARE = 0.3
GOAL_21_RSS_MB = 100.0
#: Wall seconds a process has to exit once asked (the kernel by SIGTERM, the simulator after
#: its last record); it needs well under one.
EXIT_BOUND_S = 30.0
GOAL_RATIO = 2.0


def pump_ids(n: int) -> list[str]:
    return [f"fleet-{i:04d}" for i in range(n)]


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of non-empty `samples`."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def memory_mb(pid: int | str = "self") -> tuple[float, float]:
    """(VmRSS, VmHWM) of process `pid` in MB, from /proc/PID/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            fields[key] = int(value.split()[0]) / 1024  # kB
    return fields["VmRSS"], fields["VmHWM"]


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """utime + stime of process `pid` in seconds, from /proc/PID/stat (fields 14 and 15)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    after_name = stat.rpartition(")")[2].split()  # starts at field 3 (the state)
    return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK")


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def progress(role: str, what: str, since: float) -> None:
    """A line on stderr: where a bench process is (a run that stalls says where)."""
    print(f"  [{role}] {what} at {time.perf_counter() - since:.1f} s", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def reporting(role: str, since: float, what: Callable[[], str]) -> AsyncIterator[None]:
    """While the block runs, a progress line `what()` every `PROGRESS_EVERY_S` on stderr (a
    long wait, or a stalled one, says where it stands)."""

    async def lines() -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY_S)  # pacing of the progress lines
            progress(role, what(), since)

    task = asyncio.create_task(lines(), name=f"{role}-progress")
    try:
        yield
    finally:
        await cancel_and_wait(task)


class BenchError(Exception):
    """A run that cannot go on; the message says where (shown in the table's row)."""


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


# -- the floor's near end (this process) -----------------------------------------------------


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


@contextlib.asynccontextmanager
async def pinger(port: int) -> AsyncIterator[Pinger]:
    """A `Pinger` on a connection of its own to the broker on `port`, warmed up."""
    async with Session(new_client(HOST, port), CALL_BOUND_S) as client:
        await bounded(client.subscribe(PONG, qos=1), CALL_BOUND_S, "subscribe")
        ping = Pinger(client)
        reader = asyncio.create_task(ping.read(), name="bench-pong")
        try:
            for _ in range(3):  # connection warm-up
                await ping.round_trip_ms()
            yield ping
        finally:
            await cancel_and_wait(reader)


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


# -- the kernel ------------------------------------------------------------------------------


def kernel_config(data_dir: Path, broker_port: int, n: int) -> str:
    """The kernel's TOML settings: the data directory, its SQLite file, the real clock and `n`
    MQTT pumps on the private broker (each named on the broker as in the API)."""
    lines = [
        f"data_dir = {json.dumps(str(data_dir))}",
        f"database = {json.dumps(database_url(data_dir))}",
        'clock = "real"',
        'log_level = "info"',
        'log_format = "text"',
    ]
    for pid in pump_ids(n):
        lines += [
            "",
            "[[pumps]]",
            f'id = "{pid}"',
            'transport = "mqtt"',
            f'host = "{HOST}"',
            f"mqtt_port = {broker_port}",
            f'pump = "{pid}"',
        ]
    return "\n".join(lines) + "\n"


def database_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'pumpctl.db'}"


def pumpctl_env() -> dict[str, str]:
    """This environment without any `PUMPCTL_*` of the caller's, plus the bench's tokens."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUMPCTL_")}
    env["PUMPCTL_API_TOKENS"] = ",".join(f"{t}=bench-{r}:{r}" for r, t in TOKENS.items())
    return env


async def migrate(data_dir: Path) -> None:
    """`pumpctl db upgrade --database sqlite:///DATA/pumpctl.db` (bounded)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pumpctl", "db", "upgrade", "--database", database_url(data_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=pumpctl_env(),
    )  # fmt: skip
    async with asyncio.timeout(COMMAND_BOUND_S):
        out, _ = await process.communicate()
    if process.returncode != 0:
        raise BenchError(f"pumpctl db upgrade exited {process.returncode}: {out.decode()[-500:]}")


class Kernel:
    """`pumpctl serve --no-web --config FILE` on `data_dir`, its log in a file there (a pipe
    nobody reads would fill and block it), its API on `kernel.sock` there."""

    def __init__(self, data_dir: Path, broker_port: int, n: int) -> None:
        self.data_dir, self.n = data_dir, n
        self.config = data_dir / "pumpctl.toml"
        self.config.write_text(kernel_config(data_dir, broker_port, n))
        self.log = data_dir / "kernel.log"
        self.process: asyncio.subprocess.Process | None = None
        self.http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(data_dir / "kernel.sock")),
            base_url="http://kernel",
            timeout=REQUEST_BOUND_S,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64),
        )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    async def start(self, since: float) -> None:
        """Start the kernel; wait (bounded) until its /health answers 200 naming every pump."""
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pumpctl", "serve", "--no-web", "--config", str(self.config),
                stdout=log, stderr=log, env=pumpctl_env(), cwd=self.data_dir,
            )  # fmt: skip
        seen = ["no answer yet"]
        async with reporting("kernel", since, lambda: f"starting: {seen[0]}"):
            while True:
                if self.process.returncode is not None:
                    code = self.process.returncode
                    raise BenchError(f"the kernel exited ({code}):\n{self.tail()}")
                with contextlib.suppress(httpx.TransportError):
                    answer = await self.http.get("/api/v1/health")
                    seen[0] = f"health {answer.status_code}"
                    if answer.status_code == 200:
                        pumps = answer.json()["pumps"]
                        linked = sum(p["connected"] for p in pumps)
                        seen[0] = f"health 200, {linked}/{self.n} pumps linked"
                        if len(pumps) == self.n and linked == self.n:
                            progress("kernel", f"answering, {seen[0]}", since)
                            return
                await asyncio.sleep(0.2)  # polling a condition under the caller's bound

    async def api(self, method: str, path: str, role: str, body: Any = None) -> httpx.Response:
        return await self.http.request(method, f"/api/v1{path}", json=body, headers=AUTH[role])

    async def ok(
        self, method: str, path: str, role: str, body: Any = None, expect: int = 200
    ) -> Any:
        answer = await self.api(method, path, role, body)
        if answer.status_code != expect:
            raise BenchError(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
        return answer.json()

    async def stop(self) -> bool:
        """SIGTERM; whether it ended by itself within `EXIT_BOUND_S` (a clean stop ends by the
        re-raised SIGTERM, README: exit status -15); one that does not is killed, and said so."""
        await self.http.aclose()
        if self.process is None:
            return True
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(EXIT_BOUND_S):
                code = await self.process.wait()
        except TimeoutError:
            print(f"  [kernel] still running {EXIT_BOUND_S:g} s after SIGTERM: killed",
                  file=sys.stderr, flush=True)  # fmt: skip
            self.process.kill()
            await self.process.wait()
            return False
        if code not in {0, -signal.SIGTERM}:
            print(f"  [kernel] exited with code {code}", file=sys.stderr, flush=True)
        return code in {0, -signal.SIGTERM}


LOG_LINE = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) (\S+): (.*)$")


def log_summary(log: Path) -> dict[str, Any]:
    """The kernel log's warnings and errors, counted by level and grouped by message (numbers,
    and so pump and infusion ids, folded), its tracebacks and its length in lines."""
    levels: collections.Counter[str] = collections.Counter()
    groups: collections.Counter[str] = collections.Counter()
    tracebacks = 0
    lines = log.read_text(errors="replace").splitlines()
    for line in lines:
        if line.startswith("Traceback"):
            tracebacks += 1
        found = LOG_LINE.match(line)
        if found is None:
            continue
        level, logger, message = found.groups()
        levels[level] += 1
        folded = re.sub(r"\d+(\.\d+)?", "N", message)
        groups[f"{level} {logger}: {folded[:160]}"] += 1
    return {
        "log_levels": dict(levels),
        "log_groups": groups.most_common(6),
        "log_tracebacks": tracebacks,
        "log_lines": len(lines),
    }


# -- the ward's work, through the API --------------------------------------------------------


def first_failure(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf exception of `group` (a task group's failure)."""
    first: BaseException = group.exceptions[0]
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    return first


async def set_up(
    kernel: Kernel, n: int, since: float, tally: dict[str, int] | None = None
) -> dict[int, str]:
    """A first infusion on every pump, through the API, `SETUP_CONCURRENCY` at a time: a patient
    (clinician), the infusion (clinician), its premedication an hour ago (nurse), its start
    (clinician). {infusion id: pump id}."""
    base = datetime.fromisoformat((await kernel.ok("GET", "/clock", "nurse"))["now"])
    base_t = time.perf_counter()
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)
    started: dict[int, str] = {}

    took: dict[str, list[float]] = {"patient": [], "infusion": [], "premedication": [], "start": []}

    async def timed(step: str, path: str, role: str, body: Any, expect: int = 200) -> Any:
        t0 = time.perf_counter()
        answer = await kernel.ok("POST", path, role, body, expect)
        took[step].append((time.perf_counter() - t0) * 1000)
        return answer

    async def one(i: int, pump: str) -> None:
        async with gate:
            body: dict[str, Any] = {"mrn": f"FLEET-{i:05d}", "weight_kg": 70}
            patient = await timed("patient", "/patients", "clinician", body, 201)
            body = {"patient_id": patient["id"], "pump_id": pump}
            infusion = await timed("infusion", "/infusions", "clinician", body, 201)
            path = f"/infusions/{infusion['id']}"
            now = base + timedelta(seconds=time.perf_counter() - base_t)  # the real clock
            body = {"given_at": (now - timedelta(minutes=60)).isoformat()}
            await timed("premedication", f"{path}/premedication", "nurse", body)
            await timed("start", f"{path}/start", "clinician", {})
            started[int(infusion["id"])] = pump
            if tally is not None:
                tally["started"] = len(started)

    try:
        async with (
            reporting("bench", since, lambda: f"set-up: {len(started)}/{n} infusions started"),
            asyncio.TaskGroup() as group,
        ):
            for i, pump in enumerate(pump_ids(n)):
                group.create_task(one(i, pump))
    except BaseExceptionGroup as failed:
        raise BenchError(f"set-up: {first_failure(failed)!r}") from None
    shown = ", ".join(
        f"{step} {percentile(samples, 50):.0f} / {percentile(samples, 99):.0f}"
        for step, samples in took.items()
    )
    progress("bench", f"set-up: {n} infusions started (request p50 / p99 ms: {shown})", since)
    return started


async def all_running(
    kernel: Kernel, started: dict[int, str], since: float, tally: dict[str, int] | None = None
) -> list[int]:
    """Wait (under the caller's bound) until every infusion of `started` runs
    (GET /infusions?state=running); their ids."""
    running: list[int] = []
    n = len(started)
    async with reporting("bench", since, lambda: f"{len(running)}/{n} infusions running"):
        while True:
            shown = await kernel.ok("GET", "/infusions?state=running", "nurse")
            running = sorted(int(v["id"]) for v in shown if int(v["id"]) in started)
            if tally is not None:
                tally["running"] = len(running)
            if len(running) == len(started):
                return running
            await asyncio.sleep(1.0)  # polling a condition under the caller's bound


async def measure(
    kernel: Kernel, ping: Pinger, running: list[int], seconds: float, stops: int
) -> dict[str, Any]:
    """Presses and floor samples spread over the window; the kernel's CPU and memory."""
    targets = random.Random(8).sample(running, min(stops, len(running)))
    every_s = seconds / len(targets)
    failures: list[str] = []
    kernel_ms: list[float] = []
    not_recorded = 0
    health_ms: list[float] = []
    rtt_ms: list[float] = []

    async def press(i: int) -> float | None:
        nonlocal not_recorded
        path = f"/infusions/{targets[i]}/reactions"
        t0 = time.perf_counter()
        try:
            answer = await kernel.api("POST", path, "nurse", {"grade": 2, "signs": ["other"]})
            took = (time.perf_counter() - t0) * 1000
            body = answer.json()
        except (httpx.HTTPError, ValueError) as exc:  # no answer, or not JSON
            failures.append(f"infusion {targets[i]}: {exc!r}")
            return None
        if answer.status_code != 201 or body.get("stop") != "confirmed":
            failures.append(f"infusion {targets[i]}: {answer.status_code} {answer.text[:200]}")
            return None
        if body.get("stop_confirmed_ms") is not None:
            kernel_ms.append(float(body["stop_confirmed_ms"]))
        if body.get("recorded") is False:
            not_recorded += 1
        return took

    async def floor(_: int) -> None:
        t0 = time.perf_counter()
        try:
            answer = await kernel.http.get("/api/v1/health")
        except httpx.HTTPError as exc:
            failures.append(f"health: {exc!r}")
        else:
            took = (time.perf_counter() - t0) * 1000
            if answer.status_code == 200:
                health_ms.append(took)
            else:
                failures.append(f"health: {answer.status_code} {answer.text[:200]}")
        rtt_ms.append(await ping.round_trip_ms())

    async def floors() -> list[float]:
        await asyncio.sleep(every_s / 2)  # pacing: between two presses
        return await paced(len(targets), every_s, floor)

    cpu0, wall0 = process_cpu_s(kernel.pid), time.perf_counter()
    press_ms, _ = await asyncio.gather(paced(len(targets), every_s, press), floors())
    cpu, wall = process_cpu_s(kernel.pid) - cpu0, time.perf_counter() - wall0
    rss, peak = memory_mb(kernel.pid)
    health = (await kernel.http.get("/api/v1/health")).json()
    bus = await bus_metrics(kernel)
    ages = [p["last_contact_age_s"] for p in health["pumps"] if p["last_contact_age_s"] is not None]

    def pct(samples: list[float], q: float) -> float | None:
        return percentile(samples, q) if samples else None

    return {
        "pumps": len(running),
        "window_s": wall,
        "cpu_share": cpu / wall,
        "rss_mb": rss,
        "peak_rss_mb": peak,
        "presses": len(press_ms),
        "failures": failures,
        "not_recorded": not_recorded,
        **{f"press_p{q}_ms": pct(press_ms, q) for q in (50, 90, 99)},
        "press_max_ms": max(press_ms, default=None),
        "kernel_p50_ms": pct(kernel_ms, 50),
        "kernel_p99_ms": pct(kernel_ms, 99),
        **{f"health_p{q}_ms": pct(health_ms, q) for q in (50, 99)},
        **{f"rtt_p{q}_ms": pct(rtt_ms, q) for q in (50, 99)},
        "links_down": sum(not p["connected"] for p in health["pumps"]),
        "discarded": bus.get("pumpctl_mqtt_discarded"),
        "backlog_peak": bus.get("pumpctl_mqtt_receive_backlog_peak"),
        "oldest_contact_s": max(ages, default=None),
    }


async def bus_metrics(kernel: Kernel) -> dict[str, float]:
    """The kernel's MQTT receive path from its /metrics (an admin), summed over its brokers:
    `pumpctl_mqtt_discarded` (what a full receive queue discarded) and the backlog's peak."""
    answer = await kernel.http.get("/metrics", headers=AUTH["admin"])
    if answer.status_code != 200:
        raise BenchError(f"GET /metrics: {answer.status_code} {answer.text[:200]}")
    sums: dict[str, float] = {}
    for line in answer.text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in {"pumpctl_mqtt_discarded", "pumpctl_mqtt_receive_backlog_peak"}:
            sums[name] = sums.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return sums


# -- one run ---------------------------------------------------------------------------------


async def simulator(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), "--role", "simulator", *args, stdout=asyncio.subprocess.PIPE
    )


async def read_record(process: asyncio.subprocess.Process) -> dict[str, Any]:
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line:
        raise BenchError(f"the simulator exited early (code {await process.wait()})")
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


async def run_kernel(
    kernel: Kernel, broker: int, n: int, *, seconds: float, stops: int, since: float
) -> dict[str, Any]:
    """Migrate, start the kernel, set up, wait for every infusion to run, warm up, measure."""
    tally = {"started": 0, "running": 0}
    try:
        async with asyncio.timeout(SETUP_BOUND_S):
            await migrate(kernel.data_dir)
            await kernel.start(since)
            up = time.perf_counter()
            started = await set_up(kernel, n, since, tally)
            running = await all_running(kernel, started, since, tally)
    except TimeoutError:
        raise BenchError(
            f"set-up not done within {SETUP_BOUND_S:.0f} s: {tally['started']} of {n} infusions"
            f" started, {tally['running']} seen running"
        ) from None
    setup_s = time.perf_counter() - up
    progress("bench", f"{n} infusions running", since)
    async with pinger(broker) as ping:
        await asyncio.sleep(WARMUP_S)  # pacing: the warm-up
        figures = await measure(kernel, ping, running, seconds, stops)
    figures["up_s"], figures["setup_s"] = up - since, setup_s
    progress("bench", "window measured", since)
    return figures


async def fleet_case(
    n: int, seconds: float, stops: int, budget_s: float, keep_log: Path | None
) -> dict[str, Any]:
    """One run: broker, simulator and kernel processes; the figures."""
    since = time.perf_counter()
    figures: dict[str, Any] = {"pumps": n}
    hung: list[str] = []
    with tempfile.TemporaryDirectory(prefix="pumpctl-fleet-") as tmp:
        async with private_broker() as broker:
            sim = await simulator("--port", str(broker.port), "--pumps", str(n))
            kernel = Kernel(Path(tmp), broker.port, n)
            try:
                async with asyncio.timeout(budget_s):
                    await read_record(sim)  # ready: every simulated pump online
                    figures.update(
                        await run_kernel(
                            kernel, broker.port, n, seconds=seconds, stops=stops, since=since
                        )
                    )
            except TimeoutError:
                figures["failed"] = f"did not finish within {budget_s:.0f} s (its bound)"
            except (BenchError, httpx.HTTPError) as exc:
                figures["failed"] = str(exc) or repr(exc)
            finally:
                hung += [] if await kernel.stop() else ["kernel"]
                if kernel.log.exists():
                    figures.update(log_summary(kernel.log))
                    if keep_log is not None:
                        shutil.copyfile(kernel.log, keep_log.with_suffix(f".{n}{keep_log.suffix}"))
                if sim.returncode is None:
                    sim.send_signal(signal.SIGTERM)
                    with contextlib.suppress(BenchError, TimeoutError):
                        async with asyncio.timeout(EXIT_BOUND_S):
                            figures.update(await read_record(sim))
                hung += [] if await exits("simulator", sim) else ["simulator"]
        figures["broker_dropped"] = broker.dropped  # its log read up to its end
        figures["broker_warnings"] = broker.warnings.most_common(5)
    figures["hung_at_exit"] = hung
    return figures


# -- the table -------------------------------------------------------------------------------


def ms(value: float | None) -> str:
    return "       -" if value is None else f"{value:8.2f}"


def row(f: dict[str, Any]) -> str:
    if "failed" in f:
        return f"{f['pumps']:>5}  failed: {f['failed'].splitlines()[0]}"
    if f["press_p99_ms"] is None or f["health_p99_ms"] is None:
        return f"{f['pumps']:>5}  no press or no health answered: {f['failures'][:1]}"
    floor = f["health_p99_ms"] + f["rtt_p99_ms"]
    return (
        f"{f['pumps']:>5} {f['rss_mb']:7.1f} {f['peak_rss_mb']:7.1f} {f['cpu_share']:6.2f}"
        f" {f.get('sim_cpu_share', math.nan):6.2f} {f['presses']:>7} {ms(f['press_p50_ms'])}"
        f" {ms(f['press_p90_ms'])} {ms(f['press_p99_ms'])} {ms(f['kernel_p99_ms'])}"
        f" {ms(f['health_p50_ms'])} {ms(f['health_p99_ms'])} {ms(f['rtt_p50_ms'])}"
        f" {ms(f['rtt_p99_ms'])} {f['press_p99_ms'] / floor:7.2f}x"
        f" {f['press_p99_ms'] / f['rtt_p99_ms']:7.2f}x {len(f['failures']):>4}"
        f" {f['links_down']:>5} {f.get('broker_dropped', 0):>5} {count(f.get('discarded')):>5}"
        f" {f['up_s']:5.1f} {f['setup_s']:7.1f}"
    )


def count(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def held(f: dict[str, Any], *, floor: str) -> bool:
    """Whether one controller held this fleet: set up, every press answered with its stop
    confirmed, no link down, nothing dropped by the broker or discarded by the bus, and press
    p99 within `GOAL_RATIO` x the floor (`rtt`: the QoS 1 round trip p99, issue 21's fleet
    goal; `both`: health p99 + round trip p99, this bench's floor)."""
    if "failed" in f or f.get("press_p99_ms") is None or f.get("rtt_p99_ms") is None:
        return False
    if f["failures"] or f["links_down"] or f.get("broker_dropped") or f.get("discarded"):
        return False
    base = f["rtt_p99_ms"] + (f["health_p99_ms"] if floor == "both" else 0.0)
    return bool(f["press_p99_ms"] <= GOAL_RATIO * base)


def verdict(f: dict[str, Any]) -> str:
    """One line per fleet size: the issue's goals, met or not."""
    n = f["pumps"]
    if "failed" in f or f.get("press_p99_ms") is None:
        return f"  {n} pumps: not held (no figures: {f.get('failed', 'no press answered')})"
    ratio_rtt = f["press_p99_ms"] / f["rtt_p99_ms"]
    ratio_both = f["press_p99_ms"] / (f["health_p99_ms"] + f["rtt_p99_ms"])

    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    return (
        f"  {n} pumps: press p99 {f['press_p99_ms']:.1f} ms = {ratio_rtt:.2f}x the QoS 1 round trip"
        f" p99 ({met(ratio_rtt <= GOAL_RATIO)}), {ratio_both:.2f}x health + round trip"
        f" ({met(ratio_both <= GOAL_RATIO)}); kernel CPU {f['cpu_share']:.2f} core"
        f" ({met(f['cpu_share'] <= GOAL_CPU_SHARE)}, goal <= {GOAL_CPU_SHARE:g}), RSS"
        f" {f['rss_mb']:.1f} MB, peak {f['peak_rss_mb']:.1f} MB"
        f" ({met(f['peak_rss_mb'] <= GOAL_21_RSS_MB)}, goal <= {GOAL_21_RSS_MB:.0f}); broker"
        f" 'dropped' lines {f.get('broker_dropped', 0)}, bus discarded {count(f.get('discarded'))}"
        f" (backlog peak {count(f.get('backlog_peak'))}); links down {f['links_down']};"
        f" {'held' if held(f, floor='rtt') else 'NOT held'}"
    )


async def main(
    pumps: list[int], seconds: float, stops: int, budget_s: float, keep_log: Path | None
) -> None:
    print(
        f"fleet: the kernel (pumpctl serve --no-web, SQLite, real clock) with N MQTT pumps on"
        f" one connection, the simulator on one shared connection, a private Mosquitto;"
        f" {os.cpu_count()} cores; window {seconds:g} s; presses (POST .../reactions, grade 2)"
        f" on distinct random running infusions, at most {stops}; floor, same window: GET"
        " /api/v1/health over the kernel's socket + bare QoS 1 round trip",
        flush=True,
    )
    print(
        "pumps  RSS MB peak MB kernCPU simCPU presses  p50 ms   p90 ms   p99 ms kern p99"
        " health50 health99  RTT p50  RTT p99 p99/floor  p99/RTT fail  down  drop disc."
        "  up s setup s",
        flush=True,
    )
    results = []
    for n in pumps:
        figures = await fleet_case(n, seconds, stops, budget_s, keep_log)
        results.append(figures)
        print(row(figures), flush=True)
    print(
        f"goal (issue 8): 1,000 pumps in <= {GOAL_RSS_MB:.0f} MB RSS (the kernel's), press p99 <="
        f" {GOAL_RATIO:g}x the floor (health p99 + RTT p99). kern p99: the kernel's own"
        " stop_confirmed_ms. CPU: process CPU time / wall time over the window (1.00 = one core;"
        " simCPU: from the simulator's pumps online to its end). down: pumps whose link /health"
        " shows down after the window. up: from the start of the run (broker, simulator, migration,"
        " kernel) to the kernel's /health naming every pump linked; setup: from then to every"
        " infusion running (4 requests per pump)."
    )
    print(
        f"issue 21's goals: press p99 <= {GOAL_RATIO:g}x the QoS 1 round trip p99, nothing dropped,"
        f" kernel CPU <= {GOAL_CPU_SHARE:g} core, RSS <= {GOAL_21_RSS_MB:.0f} MB (at 1,000 pumps);"
        " held: set up, every press confirmed, no link down, nothing dropped (drop: the broker's"
        " 'dropped' log lines; disc.: the bus's pumpctl_mqtt_discarded) and press p99 within"
        f" {GOAL_RATIO:g}x the round trip p99"
    )
    for f in results:
        print(verdict(f))
    for floor, name in (
        ("rtt", "the QoS 1 round trip p99"),
        ("both", "health p99 + round trip p99"),
    ):
        sizes = [f["pumps"] for f in results if held(f, floor=floor)]
        largest = max(sizes) if sizes else None
        print(
            f"largest fleet held, press p99 within {GOAL_RATIO:g}x {name}:"
            f" {largest if largest is not None else 'none'} (of {', '.join(str(n) for n in pumps)})"
        )
    for f in results:
        for line, times in f.get("broker_warnings", []):
            print(f"  {f['pumps']} pumps, mosquitto ({times}x): {line}")
        if f.get("hung_at_exit"):
            print(f"  {f['pumps']} pumps: did not exit by itself: {', '.join(f['hung_at_exit'])}")
        if "failed" in f and "\n" in f["failed"]:
            print(f"  {f['pumps']} pumps: {f['failed']}")
        if f.get("not_recorded"):
            print(f"  {f['pumps']} pumps: {f['not_recorded']} presses answered recorded: false")
        for failure in f.get("failures", [])[:3]:
            print(f"  {f['pumps']} pumps, failed: {failure}")
        levels = f.get("log_levels") or {}
        shown = ", ".join(f"{count} {level}" for level, count in sorted(levels.items()))
        print(
            f"  {f['pumps']} pumps, kernel log: {f.get('log_lines', 0)} lines,"
            f" {shown or 'no warning or error'}, {f.get('log_tracebacks', 0)} tracebacks"
        )
        for group, count in f.get("log_groups", []):
            print(f"    {count}x {group}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pumps", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement window")
    parser.add_argument("--stops", type=int, default=200, help="presses per run (at most N)")
    parser.add_argument("--budget", type=float, default=600.0, help="wall bound of one run (s)")
    parser.add_argument(
        "--keep-log", type=Path, help="keep the kernel's log of each run (FILE.N.log for N pumps)"
    )
    parser.add_argument("--role", choices=["simulator"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role == "simulator":
        asyncio.run(simulator_role(args.port, args.pumps[0]))
    else:
        asyncio.run(main(args.pumps, args.seconds, args.stops, args.budget, args.keep_log))

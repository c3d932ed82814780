"""Benchmark: wall time of a whole first infusion (6 h 30 min of clinical time) in virtual time,
through the kernel users run.

The measured path is the kernel process (issue 18: benches measure what users run, built by the
one composition root, api/gateway.py `open_kernel`): `pumpctl serve --no-web --clock virtual
--simulate 1`, one simulated pump `pump-1` that the kernel runs itself, either on a
pseudo-terminal (serial, pseudo-terminal speed: no wire time emulated, no safe mode) or, with
`--link mqtt --broker 127.0.0.1:PORT`, through a private Mosquitto. SQLite in a temporary data
directory (`pumpctl db upgrade` first), its REST API on its Unix socket `kernel.sock` there.
Nothing here wires a controller.

One kernel per link; each infusion is a fresh patient's first daratumumab infusion on the same
pump (so infusion number 1, no D2 spacing to pass, the pump free again once the previous one
completed); one infusion before the measured ones warms the kernel up (first requests, lazy
imports) and is not counted. An infusion, timed in wall seconds from this client: the kernel's
clinical now (GET /clock), a patient and its infusion (a clinician), its premedication 60 min
before that now (a nurse), its start (a clinician), then `POST /sim/advance` (an admin) by
`--step` seconds of clinical time followed by `GET /infusions/{id}`, until the infusion's state is
`completed` (at most `MAX_CLINICAL_S` of clinical time).

Floors, measured in the same run: the rules core alone driving the simulator's pump model (no
transport, no controller, no API), and per link the kernel's `GET /api/v1/health` over the same
socket (no token; it makes a real write through the store's writer) times the number of
requests an infusion took: what the HTTP hops alone would cost. Prints figures; it asserts
nothing. Goal (issue 8): under 1 s of wall time per infusion. Run from the checkout:

    .venv/bin/python bench/virtual_infusion.py [--n 10] [--step 1800] [--keep-log FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
from fleet import (
    BenchError,
    Kernel,
    database_url,
    log_summary,
    migrate,
    percentile,
    progress,
    pumpctl_env,
    reporting,
)
from stop_latency import mosquitto

from pumpctl.clock import VirtualClock
from pumpctl.core.history import CourseState
from pumpctl.core.machine import (
    ClearVolume,
    CommandConfirmed,
    InfusionPhase,
    PumpCompleted,
    Run,
    SetRate,
    SetVtbi,
    Start,
    StopPump,
    TimePassed,
    decide,
    initial_state,
    next_deadline,
)
from pumpctl.protocols import load_protocol
from simulator.model import PumpModel

REVIEW = load_protocol("daratumumab")
PUMP = "pump-1"  # the kernel's one simulated pump (api/sim: pump-1..pump-N)
TOKENS = {"nurse": "vinf-n", "clinician": "vinf-c", "admin": "vinf-a"}
AUTH = {role: {"Authorization": f"Bearer {token}"} for role, token in TOKENS.items()}
#: Clinical seconds after the start by which the infusion must have completed (it takes 6 h 30
#: min; a bound, not a figure).
MAX_CLINICAL_S = 12 * 3600
#: Wall seconds one infusion may take (a bound, not a figure; the goal is under 1 s).
INFUSION_BOUND_S = 120.0
#: Wall seconds a case may take to come up: broker, migration, the kernel answering linked.
UP_BOUND_S = 120.0
#: `GET /health` samples after each infusion (the HTTP floor).
HEALTH_SAMPLES = 10
GOAL_S = 1.0


def core_alone() -> float:
    """The floor: the rules core driving the pump model directly, deadline by deadline."""
    clock = VirtualClock()
    model = PumpModel("floor", clock)
    state = initial_state(
        REVIEW, infusion_number=1, course=CourseState(), bag_prepared_at=clock.now()
    )
    t0 = time.perf_counter()
    started = decide(state, Start(actor="bench", course=CourseState()), clock.now())
    state, pending = started.state, list(started.commands)
    while state.phase is not InfusionPhase.COMPLETED:
        while pending:
            command = pending.pop(0)
            match command:
                case SetVtbi(volume_ml=v):
                    model.set_vtbi(v)
                case SetRate(rate_ml_h=r):
                    model.set_rate(r)
                case Run():
                    model.run()
                case StopPump():
                    model.stop()
                case ClearVolume():
                    model.clear_volume()
                case _:
                    continue
            status = model.status()
            fate = CommandConfirmed(
                command_id=command.id,
                running=status.state.value == "running",
                rate_ml_h=status.rate_ml_h if status.state.value == "running" else 0.0,
                volume_infused_ml=status.volume_infused_ml,
                vtbi_ml=status.vtbi_ml,
            )
            d = decide(state, fate, clock.now())
            state, pending = d.state, pending + list(d.commands)
        due = next_deadline(state)
        end = model.completion_at()
        at = min(t for t in (due.at if due else None, end) if t is not None)
        clock._now = at
        if end is not None and at >= end:
            status = model.status()
            d = decide(state, PumpCompleted(volume_infused_ml=status.volume_infused_ml), at)
        else:
            d = decide(state, TimePassed(), at)
        state, pending = d.state, list(d.commands)
    return time.perf_counter() - t0


# -- the kernel ------------------------------------------------------------------------------


def kernel_env() -> dict[str, str]:
    """fleet's environment for the kernel (no `PUMPCTL_*` of the caller's) with this bench's
    tokens, the admin's among them (the simulation routes)."""
    env = pumpctl_env()
    env["PUMPCTL_API_TOKENS"] = ",".join(f"{t}=vinf-{r}:{r}" for r, t in TOKENS.items())
    return env


class SimKernel(Kernel):
    """`pumpctl serve --no-web --config FILE --clock virtual --simulate 1 [--link mqtt --broker
    127.0.0.1:PORT]` on `data_dir`: fleet's kernel (its socket client, log file, SIGTERM stop),
    with the simulation options on the command line; the config file gives only the data
    directory, its SQLite file and the log's level and format."""

    def __init__(self, data_dir: Path, link: str, broker: int | None) -> None:
        super().__init__(data_dir, 0, 0)
        self.config.write_text(
            f"data_dir = {json.dumps(str(data_dir))}\n"
            f"database = {json.dumps(database_url(data_dir))}\n"
            'log_level = "info"\nlog_format = "text"\n'
        )
        self.n = 1
        self.args = ["--clock", "virtual", "--simulate", "1", "--link", link]
        if broker is not None:
            self.args += ["--broker", f"127.0.0.1:{broker}"]

    @property
    def command(self) -> str:
        return " ".join(["pumpctl serve --no-web --config FILE", *self.args])

    async def start(self, since: float) -> None:
        """Start the kernel; wait (under the caller's bound) until /health names its pump
        linked."""
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pumpctl", "serve", "--no-web", "--config", str(self.config),
                *self.args, stdout=log, stderr=log, env=kernel_env(), cwd=self.data_dir,
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
                        if [p["connected"] for p in pumps] == [True]:
                            return
                        seen[0] = f"health 200, pumps {pumps}"
                await asyncio.sleep(0.1)  # polling a condition under the caller's bound

    async def api(self, method: str, path: str, role: str, body: Any = None) -> httpx.Response:
        return await self.http.request(method, f"/api/v1{path}", json=body, headers=AUTH[role])


# -- one infusion through the API ------------------------------------------------------------


#: The kinds of request an infusion makes, for the breakdown of its wall time.
KINDS = ("set-up", "advance", "read")


async def infusion(kernel: SimKernel, mrn: str, step_s: float) -> dict[str, Any]:
    """A whole first infusion through the API, bounded: its wall seconds (`wall`), requests,
    the wall seconds and requests of each kind (`KINDS`: GET /clock and the four set-up
    requests; the advances; the reads of its state) and its last view."""
    took = dict.fromkeys(KINDS, 0.0)
    count = dict.fromkeys(KINDS, 0)

    async def call(
        kind: str, method: str, path: str, role: str, body: Any = None, *, expect: int = 200
    ) -> Any:
        t0 = time.perf_counter()
        answer = await kernel.ok(method, path, role, body, expect)
        took[kind] += time.perf_counter() - t0
        count[kind] += 1
        return answer

    async with asyncio.timeout(INFUSION_BOUND_S):
        t0 = time.perf_counter()
        now = datetime.fromisoformat((await call("set-up", "GET", "/clock", "nurse"))["now"])
        body: dict[str, Any] = {"mrn": mrn, "weight_kg": 70}
        patient = await call("set-up", "POST", "/patients", "clinician", body, expect=201)
        body = {"patient_id": patient["id"], "pump_id": PUMP}
        created = await call("set-up", "POST", "/infusions", "clinician", body, expect=201)
        path = f"/infusions/{created['id']}"
        body = {"given_at": (now - timedelta(minutes=60)).isoformat()}
        await call("set-up", "POST", f"{path}/premedication", "nurse", body)
        view = await call("set-up", "POST", f"{path}/start", "clinician", {})
        advanced = 0.0
        while view["state"] != "completed":
            if advanced >= MAX_CLINICAL_S:
                raise BenchError(
                    f"{path} not completed {advanced / 3600:g} h of clinical time after its"
                    f" start: {view['state']} {view.get('state_reason')}"
                )
            await call("advance", "POST", "/sim/advance", "admin", {"seconds": step_s})
            advanced += step_s
            view = await call("read", "GET", path, "nurse")
        wall = time.perf_counter() - t0
    return {"wall": wall, "requests": sum(count.values()), "took": took, "count": count,
            "view": view}  # fmt: skip


async def health_ms(kernel: SimKernel) -> list[float]:
    """`HEALTH_SAMPLES` round trips of `GET /api/v1/health` (no token), ms."""
    samples = []
    for _ in range(HEALTH_SAMPLES):
        t0 = time.perf_counter()
        answer = await kernel.http.get("/api/v1/health")
        if answer.status_code != 200:
            raise BenchError(f"GET /health: {answer.status_code} {answer.text[:300]}")
        samples.append((time.perf_counter() - t0) * 1000)
    return samples


async def kernel_case(link: str, n: int, step_s: float, keep_log: Path | None) -> dict[str, Any]:
    """One kernel on `link` (a private Mosquitto for mqtt): a warm-up infusion, then `n`
    measured ones, `GET /health` samples after each."""
    since = time.perf_counter()
    figures: dict[str, Any] = {"link": link, "infusions": [], "health_ms": []}
    done = [0]
    async with contextlib.AsyncExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="pumpctl-vinf-")))
        kernel: SimKernel | None = None
        try:
            async with asyncio.timeout(UP_BOUND_S):
                broker = await stack.enter_async_context(mosquitto()) if link == "mqtt" else None
                kernel = SimKernel(tmp, link, broker)
                figures["command"] = kernel.command
                await migrate(tmp)
                await kernel.start(since)
            progress(link, "kernel answering, pump-1 linked", since)
            warm = await infusion(kernel, f"VINF-{link}-WARM", step_s)
            progress(
                link,
                f"warm-up infusion (not counted): {warm['wall']:.3f} s, {warm['requests']}"
                f" requests, {warm['view']['volume_infused_ml']} ml infused",
                since,
            )
            await health_ms(kernel)  # warm-up
            async with reporting(link, since, lambda: f"{done[0]}/{n} infusions measured"):
                for i in range(n):
                    one = await infusion(kernel, f"VINF-{link}-{i:04d}", step_s)
                    figures["infusions"].append(one)
                    figures["health_ms"] += await health_ms(kernel)
                    done[0] += 1
        except TimeoutError:
            figures["failed"] = f"a bound ran out after {done[0]}/{n} infusions"
        except (BenchError, httpx.HTTPError, OSError) as exc:
            figures["failed"] = str(exc) or repr(exc)
        finally:  # the kernel first, then (the stack) the broker and the data directory
            if kernel is not None and not await kernel.stop():
                figures["hung"] = True
            if kernel is not None and kernel.log.exists():
                figures.update(log_summary(kernel.log))
                if keep_log is not None:
                    shutil.copyfile(kernel.log, keep_log.with_suffix(f".{link}{keep_log.suffix}"))
    return figures


# -- the table -------------------------------------------------------------------------------


def seconds(value: float) -> str:
    return f"{value:9.4f}"


def row(name: str, samples: list[float], requests: str, core: float, share: str) -> str:
    median = statistics.median(samples)
    return (
        f"{name:<50} {len(samples):>3} {seconds(median)} {seconds(percentile(samples, 90))}"
        f" {requests:>8} {median / core:>7.0f}x {share:>10}"
    )


def verdict(walls: list[float]) -> str:
    median, p90 = statistics.median(walls), percentile(walls, 90)
    if p90 < GOAL_S:
        return "met"
    return "met at the median, not at p90" if median < GOAL_S else "missed"


async def main(n: int, step_s: float, keep_log: Path | None) -> None:
    print(
        "virtual_infusion: a whole first daratumumab infusion (50 -> 200 ml/h, 1000 ml, 6 h 30"
        " min of clinical time) through the kernel (pumpctl serve --no-web --clock virtual"
        " --simulate 1, SQLite) over its socket, a fresh patient each on one kernel per link,"
        f" 1 warm-up infusion not counted; advance by {step_s:g} s; {os.cpu_count()} cores"
        " (shared with other work: rough figures); wall seconds",
        flush=True,
    )
    floor = [core_alone() for _ in range(n)]
    core = statistics.median(floor)
    print(
        f"{'case':<50} {'n':>3} {'median':>9} {'p90':>9} {'requests':>8} {'x core':>8}"
        f" {'HTTP share':>10}"
    )
    print(row("floor: rules core + pump model", floor, "-", core, "-"), flush=True)
    results = []
    for link, name in (
        ("serial", "kernel, serial pty (pseudo-terminal speed)"),
        ("mqtt", "kernel, MQTT through a private Mosquitto"),
    ):
        f = await kernel_case(link, n, step_s, keep_log)
        results.append(f)
        if "failed" in f:
            print(f"{name:<50} failed: {f['failed'].splitlines()[0]}", flush=True)
            continue
        walls = [one["wall"] for one in f["infusions"]]
        requests = [one["requests"] for one in f["infusions"]]
        per_request_s = statistics.median(f["health_ms"]) / 1000
        http = [per_request_s * r for r in requests]
        share = f"{statistics.median(http) / statistics.median(walls):.0%}"
        shown = f"{statistics.median(requests):g}"
        print(row(name, walls, shown, core, share))
        print(row("  floor: GET /health p50 x requests", http, shown, core, ""), flush=True)
    print(
        f"goal (issue 8): under {GOAL_S:g} s of wall time per infusion. x core: the median over"
        " the rules core's median. HTTP share: the /health floor's median over the case's"
        " median (GET /health carries one SQLite commit through the store's writer)."
    )
    for f in results:
        if "failed" in f:
            print(f"  {f['link']}: failed: {f['failed']}")
            continue
        walls = [one["wall"] for one in f["infusions"]]
        parts = ", ".join(
            f"{kind} {statistics.median(one['took'][kind] for one in f['infusions']):.3f} s"
            f" in {statistics.median(one['count'][kind] for one in f['infusions']):g}"
            for kind in KINDS
        )
        volumes = sorted({one["view"]["volume_infused_ml"] for one in f["infusions"]})
        print(
            f"  {f['link']}: goal {verdict(walls)} (median {statistics.median(walls):.3f} s, p90"
            f" {percentile(walls, 90):.3f} s, max {max(walls):.3f} s); medians per infusion:"
            f" {parts} requests; GET /health p50 / p90 {statistics.median(f['health_ms']):.2f} /"
            f" {percentile(f['health_ms'], 90):.2f} ms; ml infused: {volumes}"
        )
    for f in results:
        levels = f.get("log_levels") or {}
        shown = ", ".join(f"{count} {level}" for level, count in sorted(levels.items()))
        print(
            f"  {f['link']}: {f.get('command')}; kernel log: {f.get('log_lines', 0)} lines,"
            f" {shown or 'no warning or error'}, {f.get('log_tracebacks', 0)} tracebacks"
            + ("; did not exit by itself on SIGTERM" if f.get("hung") else "")
        )
        for group, count in f.get("log_groups", []):
            print(f"    {count}x {group}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5, help="measured infusions per link")
    parser.add_argument(
        "--step", type=float, default=1800.0, help="clinical seconds per POST /sim/advance"
    )
    parser.add_argument(
        "--keep-log", type=Path, help="keep each kernel's log (FILE.serial.log, FILE.mqtt.log)"
    )
    args = parser.parse_args()
    if args.n < 1 or not 0 < args.step <= 86_400:
        parser.error("--n at least 1, --step in (0, 86400]")
    asyncio.run(main(args.n, args.step, args.keep_log))

"""Benchmark: a nurse's reaction press to the confirmed stop, through a real `pumpctl serve`.

A press is `POST /api/v1/infusions/{id}/reactions` (grade 2) until its answer, which the service
gives after the pump confirmed the stop (I1, A3). Every press meets a fresh infusion: after the
press the bench stops that infusion for good and starts a new one on the same pump for a new
patient, so no press meets I2's floor or I6. All N pumps run an infusion while the presses go
(one pump at a time is being turned over), round robin over the pumps.

The service is a real uvicorn process started here: `pumpctl serve --simulate N --clock virtual`
over `--link mqtt` (a private Mosquitto started here on a free port, as bench/fleet.py does) or
`--link serial` (the service's in-process simulator on a pseudo-terminal, with the simulator's
19200 baud wire-time emulation on: `PUMPCTL_SIM_WIRE_TIME=true`, so each exchange takes as long as
it would on a real RS-232 line).

`--simulator process` (MQTT only, issue 21) runs the pumps as a gateway meets them instead: in a
process of their own (`pumpctl simulate mqtt --pumps N --broker ...`, contract 2, one shared
connection), the service started as users start it against real pumps (`pumpctl serve --pump
pump-I=mqtt://HOST:PORT/pump-I ...`, the real clock, no `--simulate`), so the service's event
loop carries no simulated pump. On the real clock an infusion is running once the pump confirmed
its start (no virtual time to advance).

Floors, measured in the same run, interleaved with the presses (one of each after every press):

- http: `GET /api/v1/me` through the same uvicorn and the same keep-alive connection (auth, no
  store, no pump);
- mqtt: a bare aiomqtt QoS 1 round trip through the same broker (this process publishes a ping,
  an echo client of its own, also in this process, answers QoS 1), as in bench/fleet.py;
- serial: one `SerialPump.stop()` (STP and DIS, two exchanges, the stop's own round trip) on a
  private pty line to one simulated pump in this process, with the same 19200 baud wire-time
  emulation. It is not the service's line (that one is inside the service and is busy with N
  pumps' polls); it is the transport's own round trip for a stop.

Goal (issue 9): press p99 within 2x (http floor p99 + transport floor p99). Prints pass/miss; it
asserts nothing. Run from the checkout:

    .venv/bin/python bench/reaction_press.py [--presses 1000] [--pumps 10 100] [--links mqtt serial]
        [--simulator service process]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiomqtt
import httpx
from fleet import PONG, Pinger, echo
from stop_latency import mosquitto

from drivers.mqtt import TCP_NODELAY_OPTION
from drivers.serial import SerialLine, SerialPump
from pumpctl.clock import VirtualClock
from simulator.model import PumpModel
from simulator.serial_server import SerialSimulator

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TOKENS = (
    "n-tok-for-the-tests-only-32chars=nina:nurse,"
    "c-tok-for-the-tests-only-32chars=carl:clinician,"
    "a-tok-for-the-tests-only-32chars=ada:admin"
)
AUTH = {
    role: {"Authorization": f"Bearer {tok}"}
    for role, tok in {
        "nurse": "n-tok-for-the-tests-only-32chars",
        "clinician": "c-tok-for-the-tests-only-32chars",
        "admin": "a-tok-for-the-tests-only-32chars",
    }.items()
}
GOAL_RATIO = 2.0
#: Wall seconds the service may take to come up (a bound, not a figure).
READY_BOUND_S = 120.0


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of non-empty `samples`."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def service(
    n: int,
    link: str,
    broker_port: int | None,
    *,
    directory: Path | None = None,
    database: str | None = None,
    env: Mapping[str, str] | None = None,
    own_process: bool = False,
) -> AsyncIterator[httpx.AsyncClient]:
    """`pumpctl serve` in a process of its own; yields a keep-alive client on it. Its log
    (`serve-PORT.log`) and SQLite file (`pumpctl-PORT.db`) go to `directory`, else to a
    temporary one; `database` (a URL) replaces that file; `env` is added to its environment.
    With `own_process` its N pumps are MQTT pumps pump-1..pump-N served by another process
    (`pumpctl simulate mqtt`) through the broker on `broker_port`, on the real clock."""
    kw: dict[str, Any] = {"database": database, "env": env, "own_process": own_process}
    if directory is not None:
        async with _started(n, link, broker_port, str(directory), **kw) as c:
            yield c
        return
    with tempfile.TemporaryDirectory() as tmp:
        async with _started(n, link, broker_port, tmp, **kw) as client:
            yield client


async def _terminate(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM `proc` and wait (bounded), SIGKILL if it does not end."""
    if proc.returncode is None:
        proc.terminate()
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _pump_args(n: int, link: str, broker_port: int | None, *, own_process: bool) -> list[str]:
    """The service's pumps: simulated inside it on the virtual clock, or (`own_process`) N MQTT
    pumps of another process named by URL, on the real clock, as a gateway's real pumps are."""
    if own_process:
        assert broker_port is not None
        urls = (f"pump-{i}=mqtt://{HOST}:{broker_port}/pump-{i}" for i in range(1, n + 1))
        return [arg for url in urls for arg in ("--pump", url)]
    args = ["--simulate", str(n), "--clock", "virtual", "--link", link]
    if broker_port is not None:
        args += ["--broker", f"{HOST}:{broker_port}"]
    return args


@asynccontextmanager
async def _started(
    n: int,
    link: str,
    broker_port: int | None,
    tmp: str,
    attempts: int = 3,
    *,
    database: str | None = None,
    env: Mapping[str, str] | None = None,
    own_process: bool = False,
) -> AsyncIterator[httpx.AsyncClient]:
    """One attempt at the service (another on a new port when it exits before it is up: the
    free port found here may be taken by then)."""
    port = free_port()
    args = [
        str(ROOT / ".venv" / "bin" / "pumpctl"), "serve",
        "--host", HOST, "--port", str(port),
        "--database", database or f"sqlite:///{tmp}/pumpctl-{port}.db",
        *_pump_args(n, link, broker_port, own_process=own_process),
    ]  # fmt: skip
    environ = {**os.environ, "PUMPCTL_API_TOKENS": TOKENS, "PUMPCTL_SIM_WIRE_TIME": "true"}
    environ.update(env or {})
    if own_process:  # against real pumps the service migrates nothing itself: as users do
        url = database or f"sqlite:///{tmp}/pumpctl-{port}.db"
        upgrade = await asyncio.create_subprocess_exec(
            str(ROOT / ".venv" / "bin" / "pumpctl"), "db", "upgrade", "--database", url,
            env=environ, stdout=asyncio.subprocess.DEVNULL, cwd=tmp,
        )  # fmt: skip
        if await upgrade.wait() != 0:
            raise SystemExit(f"pumpctl db upgrade --database {url} failed")
    log = (Path(tmp) / f"serve-{port}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        *args, env=environ, stdout=log, stderr=asyncio.subprocess.STDOUT, cwd=tmp
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", timeout=30) as client:
            deadline = time.perf_counter() + READY_BOUND_S
            while True:
                if proc.returncode is not None:
                    log.close()
                    tail = (Path(tmp) / f"serve-{port}.log").read_text()[-3000:]
                    if attempts > 1:
                        print(f"  (serve exited {proc.returncode}; again)", file=sys.stderr)
                        break
                    raise SystemExit(f"pumpctl serve exited ({proc.returncode}):\n{tail}")
                try:
                    r = await client.get("/api/v1/health")
                    if r.status_code == 200 and len(r.json().get("pumps", [])) >= n:
                        break
                except httpx.TransportError:
                    pass
                if time.perf_counter() > deadline:
                    raise SystemExit("pumpctl serve did not come up")
                await asyncio.sleep(0.2)
            if proc.returncode is None:
                yield client
                return
    finally:
        await _terminate(proc)
        log.close()
    async with _started(
        n, link, broker_port, tmp, attempts - 1, database=database, env=env, own_process=own_process
    ) as client:
        yield client


@asynccontextmanager
async def simulator_process(n: int, broker_port: int) -> AsyncIterator[None]:
    """`pumpctl simulate mqtt --pumps N` in a process of its own (contract 2, the real clock),
    up once it printed its first line (the broker, topics, control port)."""
    proc = await asyncio.create_subprocess_exec(
        str(ROOT / ".venv" / "bin" / "pumpctl"), "simulate", "mqtt",
        "--pumps", str(n), "--broker", f"{HOST}:{broker_port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(READY_BOUND_S):
            first = await proc.stdout.readline()
        if not first:
            raise SystemExit(f"pumpctl simulate mqtt exited ({await proc.wait()})")
        drain = asyncio.create_task(proc.stdout.read(), name="simulator stdout")
        try:
            yield
        finally:
            drain.cancel()
    finally:
        await _terminate(proc)


class ApiSteps:
    """The clinical steps over HTTP (as tests/api/conftest.py does them)."""

    def __init__(self, client: httpx.AsyncClient, *, virtual: bool = True) -> None:
        self.c = client
        self.patients = 0
        self.virtual = virtual  # on the real clock nothing advances time: the pump's pace

    async def post(self, path: str, role: str, body: Any = None, expect: int = 200) -> Any:
        r = await self.c.post(f"/api/v1{path}", json=body, headers=AUTH[role])
        if r.status_code != expect:
            raise SystemExit(f"POST {path}: {r.status_code} {r.text}")
        return r.json()

    async def get(self, path: str) -> Any:
        r = await self.c.get(f"/api/v1{path}", headers=AUTH["clinician"])
        if r.status_code != 200:
            raise SystemExit(f"GET {path}: {r.status_code} {r.text}")
        return r.json()

    async def started(self, pump: str) -> int:
        """A new patient's first infusion on `pump`, premedicated an hour ago, running."""
        self.patients += 1
        mrn = f"BENCH-{self.patients:06d}"
        patient = await self.post("/patients", "clinician", {"mrn": mrn, "weight_kg": 70}, 201)
        inf = await self.post(
            "/infusions", "clinician", {"patient_id": patient["id"], "pump_id": pump}, 201
        )
        now = datetime.fromisoformat((await self.get("/clock"))["now"])
        given = (now - timedelta(minutes=60)).isoformat()
        await self.post(f"/infusions/{inf['id']}/premedication", "nurse", {"given_at": given})
        await self.post(f"/infusions/{inf['id']}/start", "clinician", {})
        infusion_id = int(inf["id"])
        for _ in range(200):
            if (await self.get(f"/infusions/{infusion_id}"))["state"] == "running":
                return infusion_id
            if self.virtual:
                await self.post("/sim/advance", "admin", {"seconds": 1})
            else:
                await asyncio.sleep(0.05)  # a bench polling the real pump's confirmation
        raise SystemExit(f"infusion {infusion_id} on {pump} never ran")


@asynccontextmanager
async def mqtt_floor(port: int) -> AsyncIterator[Callable[[], Awaitable[float]]]:
    """Bare QoS 1 round trips through the broker on `port` (bench/fleet.py's floor)."""
    async with (
        aiomqtt.Client(HOST, port, socket_options=TCP_NODELAY_OPTION) as echoer,
        aiomqtt.Client(HOST, port, socket_options=TCP_NODELAY_OPTION) as client,
    ):
        echoing = asyncio.create_task(echo(echoer), name="bench-echo")
        await client.subscribe(PONG, qos=1)
        pinger = Pinger(client)
        reader = asyncio.create_task(pinger.read(), name="bench-pong")
        try:
            await asyncio.sleep(0.2)  # the echo's subscription
            for _ in range(3):
                await pinger.round_trip_ms()  # warm-up
            yield pinger.round_trip_ms
        finally:
            reader.cancel()
            echoing.cancel()


@asynccontextmanager
async def serial_floor() -> AsyncIterator[Callable[[], Awaitable[float]]]:
    """Stops of one simulated pump on a private pty line, 19200 baud wire time emulated."""
    model = PumpModel("floor-serial", VirtualClock())
    async with (
        SerialSimulator([model], emulate_wire_time=True) as sim,
        SerialLine(sim.path) as line,
        SerialPump(line, 0, pump_id="floor-serial", safe_mode_s=None) as pump,
    ):

        async def stop_ms() -> float:
            t0 = time.perf_counter()
            await pump.stop()
            return (time.perf_counter() - t0) * 1000

        for _ in range(3):
            await stop_ms()
        yield stop_ms


@contextmanager
def disk_floor(directory: str) -> Iterator[Callable[[], float]]:
    """One small SQLite commit (WAL, synchronous=FULL, the store's settings) in `directory`:
    what the service's record of a reaction costs at the least. Not one of issue 9's floors
    (they leave the disk out); printed to explain what the floors do not cover."""
    db = sqlite3.connect(Path(directory) / "disk-floor.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, data TEXT)")

    def commit_ms() -> float:
        t0 = time.perf_counter()
        db.execute("BEGIN")
        db.execute("INSERT INTO t (data) VALUES (?)", ("x" * 400,))
        db.execute("COMMIT")
        return (time.perf_counter() - t0) * 1000

    try:
        for _ in range(3):
            commit_ms()
        yield commit_ms
    finally:
        db.close()


async def case(n: int, link: str, presses: int, *, own_process: bool = False) -> dict[str, Any]:
    """One service with `n` pumps over `link` (with `own_process`, MQTT pumps simulated in a
    process of their own); `presses` presses and the floors."""
    async with AsyncExitStack() as stack:
        broker: int | None = None
        if link == "mqtt":
            broker = await stack.enter_async_context(mosquitto())
            transport = await stack.enter_async_context(mqtt_floor(broker))
            if own_process:
                await stack.enter_async_context(simulator_process(n, broker))
        else:
            transport = await stack.enter_async_context(serial_floor())
        client = await stack.enter_async_context(service(n, link, broker, own_process=own_process))
        disk = stack.enter_context(disk_floor(stack.enter_context(tempfile.TemporaryDirectory())))
        ward = ApiSteps(client, virtual=not own_process)
        t_setup = time.perf_counter()
        pumps = [f"pump-{i}" for i in range(1, n + 1)]
        running = {p: await ward.started(p) for p in pumps}
        setup_s = time.perf_counter() - t_setup
        press_ms: list[float] = []
        http_ms: list[float] = []
        wire_ms: list[float] = []
        disk_ms: list[float] = []
        answered: list[float] = []  # the service's own stop_confirmed_ms
        odd: list[str] = []
        t0 = time.perf_counter()
        for i in range(presses):
            pump = pumps[i % n]
            infusion = running[pump]
            s = time.perf_counter()
            r = await client.post(
                f"/api/v1/infusions/{infusion}/reactions",
                json={"grade": 2, "signs": ["other"]},
                headers=AUTH["nurse"],
            )
            press_ms.append((time.perf_counter() - s) * 1000)
            body = r.json()
            if r.status_code != 201 or body.get("stop") != "confirmed":
                odd.append(f"{r.status_code} {body}")
            elif body.get("stop_confirmed_ms") is not None:
                answered.append(float(body["stop_confirmed_ms"]))
            s = time.perf_counter()
            me = await client.get("/api/v1/me", headers=AUTH["nurse"])
            http_ms.append((time.perf_counter() - s) * 1000)
            assert me.status_code == 200
            wire_ms.append(await transport())
            disk_ms.append(disk())
            await ward.post(f"/infusions/{infusion}/stop", "nurse", {"reason": "bench"})
            running[pump] = await ward.started(pump)
        window_s = time.perf_counter() - t0
    return {
        "pumps": n,
        "link": link + ("/own" if own_process else ""),
        "presses": len(press_ms),
        "setup_s": setup_s,
        "window_s": window_s,
        "press": press_ms,
        "http": http_ms,
        "wire": wire_ms,
        "disk": disk_ms,
        "answered": answered,
        "odd": odd,
    }


def row(f: dict[str, Any]) -> str:
    p50, p99 = percentile(f["press"], 50), percentile(f["press"], 99)
    h50, h99 = percentile(f["http"], 50), percentile(f["http"], 99)
    w50, w99 = percentile(f["wire"], 50), percentile(f["wire"], 99)
    floor = h99 + w99
    verdict = "pass" if p99 <= GOAL_RATIO * floor else "miss"
    inner = percentile(f["answered"], 99) if f["answered"] else float("nan")
    d99 = percentile(f["disk"], 99)
    return (
        f"{f['link']:<9} {f['pumps']:>5} {f['presses']:>7} {p50:8.2f} {p99:8.2f} {inner:9.2f}"
        f" {h50:7.2f} {h99:7.2f} {w50:7.2f} {w99:7.2f} {d99:7.2f} {p99 / floor:6.2f}x {verdict:>5}"
        f" {len(f['odd']):>4} {f['setup_s']:7.1f} {f['window_s']:8.1f}"
    )


async def main(pumps: list[int], links: list[str], presses: int, simulators: list[str]) -> None:
    print(
        f"reaction press: POST .../reactions until its answer, real uvicorn (pumpctl serve"
        f" --clock virtual), {presses} presses per case, each on a fresh infusion; {os.cpu_count()}"
        " cores. serial: 19200 baud wire time emulated (PUMPCTL_SIM_WIRE_TIME=true)."
    )
    print(
        "floors, same run, one of each after every press: http = GET /api/v1/me, same uvicorn;"
        " mqtt = bare QoS 1 round trip, same broker; serial = one stop (STP + DIS), private"
        " pty line, 19200 baud wire time emulated"
    )
    print(
        "link      pumps presses  p50 ms   p99 ms  svc p99  http50  http99  wire50  wire99"
        " disk99  p99/floors  goal  odd setup s window s"
    )
    results = []
    print(
        "link mqtt/own: the MQTT pumps simulated in a process of their own (`pumpctl simulate"
        " mqtt`), the service on the real clock with `--pump` URLs, as against real pumps"
    )
    for link in links:
        for where in simulators:
            if where == "process" and link != "mqtt":
                continue  # a serial pump in a process of its own: not this bench's case
            for n in pumps:
                f = await case(n, link, presses, own_process=where == "process")
                results.append(f)
                print(row(f), flush=True)
    print(
        f"goal (issue 9): press p99 <= {GOAL_RATIO:g}x (http p99 + wire p99). svc p99: the"
        " service's own stop_confirmed_ms (from the request's arrival in the route)."
        " odd: answers other than 201 confirmed. disk99: one SQLite commit (WAL, synchronous=FULL)"
        " in a temporary directory, same run: not a floor of the goal, but the service answers"
        " only after its record is durable (issue 8)."
    )
    for f in results:
        for odd in f["odd"][:3]:
            print(f"  {f['link']} {f['pumps']} pumps: {odd}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presses", type=int, default=1000, help="presses per case")
    parser.add_argument("--pumps", type=int, nargs="+", default=[10, 100])
    parser.add_argument(
        "--links", nargs="+", choices=["mqtt", "serial"], default=["mqtt", "serial"]
    )
    parser.add_argument(
        "--simulator",
        nargs="+",
        choices=["service", "process"],
        default=["service"],
        help="MQTT pumps simulated inside the service (--simulate) or in a process of their own",
    )
    args = parser.parse_args()
    asyncio.run(main(args.pumps, args.links, args.presses, args.simulator))

"""The web side cannot reach the pumps' supervision: `pumpctl serve` as users run it (the
kernel a process, the web side its child), tried with what the gateway's clients can do to it:
the web side SIGKILLed, half-sent requests, 500 live-event readers, readers that stop reading,
large bodies without a token. Each time the nurse's reaction still stops the pump and is
answered (I1), and the kernel, which has no network listener, goes on.

The hostile clients come from 127.0.0.2 and the nurse from 127.0.0.1 (both loopback): the web
side's limits per address keep one client's flood from taking the others' connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import signal
import socket
import stat
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from leaks import no_leaked_tasks_on_the_module_loop  # noqa: F401 - on the module's loop
from service_process import TOKENS, Service, serving
from test_store_faults import press

from pumpctl.cli.webside import WEB_NICE
from pumpctl.core.machine.outputs import AuditEvent
from pumpctl.core.rules import Rule
from pumpctl.store import Store
from pumpctl.store.store import StoreAudit

HOSTILE = "127.0.0.2"
BOUND_S = 30.0


def _ppid(pid: int) -> int | None:
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int((Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[1])
    return None


def web_pid(service: Service) -> int:
    """The web side: the child of the service's process running `pumpctl web`."""
    assert service.process is not None
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _ppid(int(entry.name)) == service.process.pid:
            with contextlib.suppress(OSError):
                if b"web" in (entry / "cmdline").read_bytes().split(b"\0"):
                    return int(entry.name)
    raise AssertionError("no web side running")


def listening_sockets(pid: int) -> set[int]:
    """The inodes of the TCP sockets `pid` listens on."""
    listening = set()
    for table in ("tcp", "tcp6"):
        for line in (Path("/proc/net") / table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                listening.add(int(fields[9]))
    mine = set()
    for fd in (Path("/proc") / str(pid) / "fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                mine.add(int(target[8:-1]))
    return mine & listening


#: The module's tests share the event loop of `unchanged`, a fixture of the module's; the
#: leaked-task check runs on that loop too (tests/helpers/leaks.py).
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def unchanged(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    """One service for the module's tests that change nothing in it and kill nothing of it:
    they read its processes and socket, or send requests refused before anything is done
    (404 for a path out of the API, 401 and 413 for a large body). A start is about 2.7 s of
    CPU (scripts/test-cpu), paid once instead of by each of them (issue 22)."""
    async with serving(tmp_path_factory.mktemp("web-side"), simulate=1) as served:
        yield served


@pytest_asyncio.fixture(loop_scope="module")
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    """A fresh service, this test's alone: for a test that changes what it holds, kills one of
    its processes, or floods it."""
    async with serving(tmp_path, simulate=1) as served:
        yield served


def kernel_socket(service: Service) -> Path:
    """The kernel's socket, as its log names it."""
    for line in service.log.read_text().splitlines():
        if "kernel: serving the web side on " in line:
            return Path(line.split(" on ", 1)[1].split(" (", 1)[0])
    raise AssertionError("the kernel named no socket")


def identity(pid: int) -> tuple[int, int, list[int]]:
    """(real uid, real gid, supplementary groups) of `pid`."""
    fields = {}
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()
    return int(fields["Uid"][0]), int(fields["Gid"][0]), [int(g) for g in fields["Groups"]]


async def test_the_kernel_listens_on_no_network_only_on_its_own_socket(unchanged: Service) -> None:
    """The kernel has no network listener; its Unix socket admits only the service's user and
    the web side's group (0660); the web side listens on the service's port."""
    assert unchanged.process is not None
    assert listening_sockets(unchanged.process.pid) == set()
    assert listening_sockets(web_pid(unchanged)) != set()
    mode = kernel_socket(unchanged).stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o660


def _can(uid: int, gid: int, test: str, path: Path) -> bool:
    """Whether the user `uid` (group `gid`, no other) passes `test -r` / `-w` on `path`."""
    done = subprocess.run(
        ["/usr/bin/test", test, str(path)],
        user=uid, group=gid, extra_groups=[], check=False, timeout=10,
    )  # fmt: skip
    return done.returncode == 0


async def test_the_web_side_is_a_user_that_reaches_the_kernel_and_nothing_else(
    service: Service,
) -> None:
    """Started as root, the service's web side runs as `nobody` (its group only): it reaches
    the kernel's socket, not the data directory, the database or the pump's serial line. As
    any other user nothing can change users: the web side is the service's own user."""
    assert service.process is not None
    kernel = service.process.pid
    uid, gid, groups = identity(web_pid(service))
    if os.geteuid() != 0:
        assert (uid, gid) == identity(kernel)[:2]
        return
    nobody = pwd.getpwnam("nobody")
    assert (uid, gid, groups) == (nobody.pw_uid, nobody.pw_gid, [])
    socket_path = kernel_socket(service)
    assert not socket_path.is_relative_to(service.data_dir)
    assert socket_path.stat().st_gid == gid
    assert _can(uid, gid, "-w", socket_path)  # it reaches the kernel ...
    ptys = [
        Path(os.readlink(fd))
        for fd in (Path("/proc") / str(kernel) / "fd").iterdir()
        if os.readlink(fd).startswith("/dev/pts/")
    ]
    assert ptys, "the kernel holds no pump line"
    closed = [service.data_dir, service.data_dir / "pumpctl.db", *ptys]
    for path in closed:  # ... and nothing else of the service
        assert not _can(uid, gid, "-r", path), path
        assert not _can(uid, gid, "-w", path), path
    press = await service.running("pump-1", "MRN-USER")  # and the nurse's press goes through
    answer = await service.api(
        "POST", f"/infusions/{press}/reactions", "nurse", {"grade": 2, "signs": ["other"]}, 201
    )
    assert answer["stop"] == "confirmed"


async def test_i1_a_killed_web_side_is_started_again_and_the_pump_never_noticed(
    service: Service,
) -> None:
    """The web side SIGKILLed mid-infusion: the kernel starts it again, the pump ran on
    supervised (no alarm, no lost link), and the reaction then stops it (I1)."""
    infusion = await service.running("pump-1", "MRN-WEB")
    killed = web_pid(service)
    os.kill(killed, signal.SIGKILL)
    assert service.http is not None
    async with asyncio.timeout(BOUND_S):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await service.http.get("/api/v1/health")).status_code == 200:
                    break
            await asyncio.sleep(0.1)  # polling a condition with a deadline
    assert web_pid(service) != killed
    shown = await service.api("GET", f"/infusions/{infusion}", "nurse")
    assert shown["state"] == "running", shown
    assert shown["alarms"] == []
    assert shown["link_lost"] is False
    answer = await press(service, infusion)
    assert answer["stop"] == "confirmed", answer
    assert "web side ended" in service.log.read_text()


async def test_i1_a_press_whose_web_side_is_killed_midway_still_stops_the_pump(
    service: Service,
) -> None:
    """The web side SIGKILLed while a press is in flight, the kernel already sending the stop
    (the pump answering 0.3 s late, so the kill lands before the confirmation): the nurse's
    request fails (never a false 201 from a dead process), but the kernel carries the stop
    through: the pump is stopped and confirmed (A3), the reaction is in the record (I1), and the
    web side comes back to show it."""
    infusion = await service.running("pump-1", "MRN-MIDPRESS")
    late = {"fault": "late_reply_s", "value": 0.3}
    await service.api("POST", "/sim/pumps/pump-1/faults", "admin", late)
    assert service.http is not None
    log_at = service.log.stat().st_size
    pressing = asyncio.create_task(
        service.http.post(
            f"/api/v1/infusions/{infusion}/reactions",
            json={"grade": 2, "signs": ["other"]},
            headers={"Authorization": f"Bearer {TOKENS['nurse']}"},
        )
    )
    async with asyncio.timeout(BOUND_S):  # the kernel has sent the stop: kill the web side
        while "op=stop" not in service.log.read_text()[log_at:]:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # polling a condition with a deadline
    os.kill(web_pid(service), signal.SIGKILL)
    try:
        answered = await pressing
    except httpx.TransportError:
        answered = None
    assert answered is None or answered.status_code >= 500, answered  # no 201 from the dead
    async with asyncio.timeout(BOUND_S):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await service.http.get("/api/v1/health")).status_code == 200:
                    break
            await asyncio.sleep(0.1)  # polling a condition with a deadline
    shown = await service.api("GET", f"/infusions/{infusion}", "nurse")
    assert shown["state"] == "paused", shown
    assert shown["state_reason"]["rule"] == "I2", shown
    assert [r["grade"] for r in shown["reactions"]] == [2]
    assert shown["stop_pending"] is False, shown
    assert shown["alarms"] == [], shown
    events = [e["type"] for e in await service.api("GET", f"/infusions/{infusion}/events", "nurse")]
    assert "confirmed_stopped" in events, events
    pump = await service.pump("pump-1")
    assert pump["state"] != "running", pump


async def _half_sent(port: int, count: int) -> list[socket.socket]:
    """`count` connections from HOSTILE, each with a request's head begun and never ended."""
    held = []
    for _ in range(count):
        conn = socket.socket()
        conn.setblocking(False)
        conn.bind((HOSTILE, 0))
        with contextlib.suppress(BlockingIOError):
            conn.connect(("127.0.0.1", port))
        await asyncio.sleep(0)
        with contextlib.suppress(OSError):
            conn.send(b"GET /api/v1/health HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        held.append(conn)
    return held


def _closed_by_server(conn: socket.socket) -> bool:
    try:
        return conn.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


async def test_i1_half_sent_requests_hold_no_press(service: Service) -> None:
    """A client that opens 200 connections and sends each a request's head it never ends
    holds 64 of them (the rest are closed at once); the nurse's press, from another address,
    is answered and stops the pump (I1)."""
    infusion = await service.running("pump-1", "MRN-SLOW")
    held = await _half_sent(service.port, 200)
    try:
        async with asyncio.timeout(BOUND_S):
            while sum(_closed_by_server(c) for c in held) < 200 - 64:  # noqa: ASYNC110
                await asyncio.sleep(0.05)  # polling a condition with a deadline
        answer = await press(service, infusion)
        assert answer["stop"] == "confirmed", answer
    finally:
        for conn in held:
            conn.close()


async def _raw(port: int, request: bytes, bound_s: float = BOUND_S) -> bytes:
    """`request` sent as it is (no client normalising its path) and the first line of the
    answer (bounded)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(bound_s):
            return await reader.readline()
    finally:
        writer.close()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/../../kernel/v1/events",
        "/api/v1/%2e%2e/%2E%2E/kernel/v1/events",
        "/api/v1/./events",
        "/api/v1//infusions",
    ],
)
async def test_no_path_leads_out_of_the_api_to_the_kernels_own_routes(
    unchanged: Service, path: str
) -> None:
    """The kernel's own routes (`/kernel/v1/...`, socket only) are never reached through the
    web side by dot segments, encoded or not: 404, even with a valid token."""
    token = TOKENS["admin"]
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
    first = await _raw(unchanged.port, request.encode())
    assert first.startswith(b"HTTP/1.1 404"), first


async def test_a_body_that_trickles_is_cut_off_and_the_press_goes_through(
    service: Service,
) -> None:
    """A complete head, then a body that never arrives: 408 once the body's 10 s are over
    (not a connection held for nothing), and meanwhile the nurse's press is answered (I1)."""
    infusion = await service.running("pump-1", "MRN-TRICKLE")
    token = TOKENS["nurse"]
    head = (
        f"POST /api/v1/patients HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    trickled = asyncio.create_task(_raw(service.port, head.encode(), bound_s=20.0))
    answer = await press(service, infusion)
    assert answer["stop"] == "confirmed", answer
    assert (await trickled).startswith(b"HTTP/1.1 408")


async def test_a3_a_kernel_that_does_not_answer_never_holds_the_press_past_its_bound(
    service: Service,
) -> None:
    """The kernel frozen (SIGSTOP) under a press: the web side answers 504 naming the kernel
    within the reaction's own bound plus its margin (2 s + 5 s here), never the 120 s a read
    may take, and tells the nurse to check the pump."""
    infusion = await service.running("pump-1", "MRN-FROZEN-KERNEL")
    assert service.process is not None
    assert service.http is not None
    os.kill(service.process.pid, signal.SIGSTOP)
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        answer = await service.http.post(
            f"/api/v1/infusions/{infusion}/reactions",
            json={"grade": 2, "signs": ["other"]},
            headers={"Authorization": f"Bearer {TOKENS['nurse']}"},
            timeout=30.0,
        )
        took = loop.time() - began
    finally:
        os.kill(service.process.pid, signal.SIGCONT)
    assert answer.status_code == 504, answer.text
    assert answer.json()["detail"]["kernel"] == "silent"
    assert "check the pump" in answer.json()["detail"]["message"]
    assert took < 2 + 5 + 3, took  # stop_answer_s (Service: 2) + the margin, and slack


async def _reader(client: httpx.AsyncClient, opened: list[Any], refused: list[int]) -> None:
    headers = {"Authorization": f"Bearer {TOKENS['viewer']}", "Last-Event-ID": "0"}
    request = client.build_request("GET", "/api/v1/events", headers=headers)
    answer = await client.send(request, stream=True)
    if answer.status_code == 200:
        opened.append(answer)  # held open, never read: a reader that stopped reading
    else:
        refused.append(answer.status_code)
        await answer.aread()  # read: its connection serves the next attempt
        await answer.aclose()


def _hostile_client(service: Service, connections: int) -> httpx.AsyncClient:
    # the limits go to the transport: a client given a transport ignores its own
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(
        transport=httpx.AsyncHTTPTransport(local_address=HOSTILE, limits=limits),
        base_url=service.url,
        timeout=httpx.Timeout(10.0, pool=None),  # a request waits its turn at the client
    )


async def test_i1_500_live_event_readers_are_bounded_and_the_press_goes_through(
    service: Service,
) -> None:
    """500 readers of the live events with one token, none reading: 20 are served (the
    token's limit), the others get 503 with Retry-After at once; the nurse's press is answered
    and stops the pump (I1). (Two clients, 20 connections each: within the web side's 64 per
    address, so every attempt is answered rather than refused at connection.)"""
    infusion = await service.running("pump-1", "MRN-READERS")
    opened: list[Any] = []
    refused: list[int] = []
    async with _hostile_client(service, 20) as streams, _hostile_client(service, 20) as others:
        try:
            await asyncio.gather(*(_reader(streams, opened, refused) for _ in range(20)))
            for _batch in range(24):
                await asyncio.gather(*(_reader(others, opened, refused) for _ in range(20)))
            assert len(opened) == 20
            assert refused == [503] * 480
            answer = await press(service, infusion)
            assert answer["stop"] == "confirmed", answer
            shown = await service.api("GET", f"/infusions/{infusion}", "nurse")
            assert shown["state"] == "paused"
        finally:
            for answer in opened:
                await answer.aclose()


async def test_a_large_body_is_refused_before_it_is_read(unchanged: Service) -> None:
    """A 20 MB body: 401 without a token before it is read, 413 with one (at most 64 KiB)."""
    assert unchanged.http is not None
    body = b"{" + b" " * (20 * 1024 * 1024) + b"}"
    anonymous = await unchanged.http.post("/api/v1/patients", content=body)
    assert anonymous.status_code == 401
    headers = {"Authorization": f"Bearer {TOKENS['clinician']}"}
    signed = await unchanged.http.post("/api/v1/patients", content=body, headers=headers)
    assert signed.status_code == 413
    assert "65536 bytes" in signed.json()["detail"]


def rss_mb(pid: int) -> float:
    """The resident memory of `pid`, in MiB."""
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _many_audit_rows(database: Path, count: int) -> None:
    """`count` audit rows of about 1 KiB each, appended by the store itself (hash-chained as
    every row is): a long history for readers to ask a replay of."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    note = "x" * 1000
    with Store.open(f"sqlite:///{database}") as store:
        for start in range(0, count, 500):
            store.append_audit(
                [
                    AuditEvent(type=StoreAudit.CLOCK_STEP, rule=Rule.A7, at=at, data={"note": note})  # type: ignore[arg-type]
                    for _ in range(min(500, count - start))
                ]
            )


async def test_i1_readers_that_stop_reading_after_asking_a_replay_cost_bounded_memory(
    tmp_path: Path,
) -> None:
    """60 readers (three tokens, 20 each) ask a replay of 5,000 events of 1 KiB and never read:
    the replay comes from the memory the web side already holds, so its memory grows by a
    bounded amount (before, 40 such readers cost 527 MB, never returned), and the press is
    answered and stops the pump (I1)."""
    async with serving(tmp_path, simulate=1):
        pass  # the store, migrated
    await asyncio.to_thread(_many_audit_rows, tmp_path / "pumpctl.db", 5000)
    async with serving(tmp_path, simulate=1) as service:
        infusion = await service.running("pump-1", "MRN-STALL")
        web = web_pid(service)
        before = rss_mb(web)
        opened: list[Any] = []
        refused: list[int] = []
        clients = [_hostile_client(service, 21) for _ in range(3)]
        try:
            for client, role in zip(clients, ("viewer", "nurse", "clinician"), strict=True):
                for _ in range(20):
                    headers = {"Authorization": f"Bearer {TOKENS[role]}", "Last-Event-ID": "0"}
                    request = client.build_request("GET", "/api/v1/events", headers=headers)
                    answer = await client.send(request, stream=True)
                    (opened if answer.status_code == 200 else refused).append(answer)
            assert len(opened) == 60, [a.status_code for a in refused]
            answer = await press(service, infusion)
            assert answer["stop"] == "confirmed", answer
            grown = rss_mb(web) - before
            assert grown < 64, f"the web side grew by {grown:.0f} MiB"
        finally:
            for answer in opened:
                await answer.aclose()
            for client in clients:
                await client.aclose()


async def kernel_list_requests(service: Service) -> float:
    """`GET /infusions` requests the kernel has answered (its /metrics, through the web side)."""
    assert service.http is not None
    headers = {"Authorization": f"Bearer {TOKENS['admin']}"}
    answer = await service.http.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    for line in answer.text.splitlines():
        if line.startswith("pumpctl_infusion_list_requests_total "):
            return float(line.split()[1])
    raise AssertionError("the kernel's metrics name no pumpctl_infusion_list_requests_total")


async def test_i1_a_flood_of_list_reads_stays_on_the_web_side_and_a_press_shows_in_the_next_list(
    service: Service,
) -> None:
    """Issue 18: 600 `GET /infusions` from 32 connections of another address are answered,
    each with the ward's list, while the kernel builds it only a few times (the web side
    serves one copy until something changes: api/readcache.py); the nurse's press is answered
    and shows in the very next list (I1), which the web side asked the kernel afresh."""
    infusion = await service.running("pump-1", "MRN-GETFLOOD")
    headers = {"Authorization": f"Bearer {TOKENS['clinician']}"}
    before = await kernel_list_requests(service)
    resent: list[int] = []

    async def read(flood: httpx.AsyncClient) -> httpx.Response:
        """A GET sent again once when its keep-alive connection was closed by the server as it
        left (HTTP's own race, which browsers answer the same way; seen on a loaded CI
        machine), and counted: a server dropping connections would show as many."""
        try:
            return await flood.get("/api/v1/infusions", headers=headers)
        except (httpx.ReadError, httpx.RemoteProtocolError):
            resent.append(1)
            return await flood.get("/api/v1/infusions", headers=headers)

    async with _hostile_client(service, 32) as flood:
        answers = await asyncio.gather(*(read(flood) for _ in range(600)))
    assert {a.status_code for a in answers} == {200}
    assert len(resent) <= 6, f"{len(resent)} of 600 reads lost their connection"
    assert {tuple(i["id"] for i in a.json()) for a in answers} == {(infusion,)}
    during = await kernel_list_requests(service) - before
    assert during < 60, during  # at most one per change or per second, not one per read
    listed = await service.api("GET", "/infusions", "clinician")
    assert listed[0]["state"] == "running"
    asked = await kernel_list_requests(service)
    answer = await press(service, infusion)
    assert answer["stop"] == "confirmed", answer
    listed = await service.api("GET", "/infusions", "clinician")
    assert [(i["id"], i["state"]) for i in listed] == [(infusion, "paused")]
    assert await kernel_list_requests(service) == asked + 1  # the press made it ask again


async def test_reads_past_a_callers_budget_are_429_and_its_press_goes_through(
    tmp_path: Path,
) -> None:
    """Issue 18: every read the web side cannot answer itself counts against its caller's
    budget (`read_budget_per_s`, here 1 a second: a burst of 2): the reads past it are 429
    with Retry-After, asked nothing of the kernel; another caller reads on, and the same
    caller's press is answered and stops the pump (a budget never refuses an action, I1)."""
    env = {"PUMPCTL_READ_BUDGET_PER_S": "1"}
    async with serving(tmp_path, simulate=1, env=env) as budgeted:
        infusion = await budgeted.running("pump-1", "MRN-BUDGET")
        nurse = {"Authorization": f"Bearer {TOKENS['nurse']}"}
        async with _hostile_client(budgeted, 4) as flood:
            answers = [
                await flood.get(f"/api/v1/infusions/{infusion}", headers=nurse) for _ in range(8)
            ]
            statuses = [a.status_code for a in answers]
            assert statuses.count(200) in {2, 3}, statuses  # the burst, and one refill at most
            refused = [a for a in answers if a.status_code == 429]
            assert len(refused) >= 5, statuses
            for answer in refused:
                assert int(answer.headers["Retry-After"]) >= 1
                assert "more than 1 reads a second" in answer.json()["detail"]
            shown = await budgeted.api("GET", f"/infusions/{infusion}", "viewer")
            assert shown["state"] == "running"  # another caller's budget is its own
            pressed = await flood.post(
                f"/api/v1/infusions/{infusion}/reactions",
                json={"grade": 2, "signs": ["other"]},
                headers=nurse,
            )
            assert pressed.status_code == 201, pressed.text
            assert pressed.json()["stop"] == "confirmed"


def nice(pid: int) -> int:
    """The scheduling priority (nice) of `pid` (/proc/PID/stat, field 19)."""
    fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[16])


async def test_the_kernel_runs_before_the_web_side_on_the_cpu(service: Service) -> None:
    """Issue 18: the web side lowers its own CPU priority by `WEB_NICE` when it starts, so a
    flood that keeps it busy takes no turn the kernel wants; started again after a crash, it
    does so again."""
    assert service.process is not None
    kernel = nice(service.process.pid)
    assert nice(web_pid(service)) == min(19, kernel + WEB_NICE)
    killed = web_pid(service)
    os.kill(killed, signal.SIGKILL)
    async with asyncio.timeout(BOUND_S):
        while True:
            with contextlib.suppress(AssertionError, OSError, httpx.TransportError):
                again = web_pid(service)
                if again != killed and (await service.http.get("/api/v1/health")).is_success:
                    break
            await asyncio.sleep(0.1)  # polling a condition with a deadline
    assert nice(again) == min(19, kernel + WEB_NICE)

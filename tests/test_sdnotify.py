"""pumpctl/sdnotify.py against real AF_UNIX datagram sockets, and a real `pumpctl serve` process
under a notify socket of the test's own, as systemd runs it (config/pumpctl-kernel.service).

The test's socket stands in for systemd's: it asks for the sender's credentials (SO_PASSCRED) as
systemd does, so each datagram carries the pid that sent it (NotifyAccess=main accepts only the
main process). A thread receives and timestamps the datagrams, so that a blocked event loop in
the test does not delay the clock they are read by.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pumpctl_process import pumpctl_server

from pumpctl import sdnotify

BOUND_S = 30.0  # a cold interpreter start and a migrated SQLite on a loaded CI machine
WATCHDOG_USEC = 200_000  # 0.2 s: WATCHDOG=1 every 0.1 s


@dataclass(frozen=True)
class Datagram:
    text: str
    pid: int | None  # the sender, from SCM_CREDENTIALS
    at: float  # time.monotonic() when it was received


class NotifySocket:
    """A bound AF_UNIX datagram socket and a thread putting what arrives on an asyncio queue."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._loop = loop
        self._queue: asyncio.Queue[Datagram] = asyncio.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="notify-socket", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        space = socket.CMSG_SPACE(struct.calcsize("3i"))
        while not self._stop.is_set():
            try:
                data, ancillary, _flags, _addr = self._sock.recvmsg(4096, space)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.monotonic()
            pid = None
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[: struct.calcsize("3i")])[0]
            item = Datagram(data.decode(), pid, at)
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def next(self, bound_s: float = BOUND_S) -> Datagram:
        """The next datagram (bounded)."""
        async with asyncio.timeout(bound_s):
            return await self._queue.get()

    async def next_not(self, skipped: str, bound_s: float = BOUND_S) -> Datagram:
        """The next datagram other than `skipped` (bounded)."""
        async with asyncio.timeout(bound_s):
            while (item := await self._queue.get()).text == skipped:
                pass
            return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


@contextmanager
def notify_socket(address: str) -> Iterator[NotifySocket]:
    """A socket bound at `address` (a path, or "\\0name" for an abstract one)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener: NotifySocket | None = None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind(address)
        sock.settimeout(0.2)  # the thread looks at its stop flag this often
        listener = NotifySocket(sock, asyncio.get_running_loop())
        yield listener
    finally:
        if listener is not None:
            listener.close()
        else:
            sock.close()


def socket_path(tmp_path: Path) -> Path:
    path = tmp_path / "notify.sock"
    assert len(str(path)) < 100, f"AF_UNIX paths are at most 107 bytes: {path}"
    return path


def test_notify_without_notify_socket_is_false_and_quiet() -> None:
    """Outside systemd nothing is sent and nothing is raised."""
    assert sdnotify.notify("READY=1", {}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": ""}) is False
    assert sdnotify.watchdog_interval_s({}) is None
    assert sdnotify.start_watchdog({}) is None


def test_notify_to_a_socket_that_is_gone_is_false(tmp_path: Path) -> None:
    """systemd restarted or the socket vanished: False, the service goes on."""
    env = {"NOTIFY_SOCKET": str(socket_path(tmp_path))}
    assert sdnotify.notify("READY=1", env) is False


async def test_ready_arrives_on_a_path_socket(tmp_path: Path) -> None:
    path = socket_path(tmp_path)
    with notify_socket(str(path)) as received:
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": str(path)}) is True
        got = await received.next()
    assert got.text == "READY=1"
    assert got.pid == os.getpid()


async def test_ready_arrives_on_an_abstract_socket() -> None:
    """`@name` in NOTIFY_SOCKET is the abstract name "\\0name" (systemd uses such sockets)."""
    name = f"pumpctl-test-{secrets.token_hex(8)}"
    with notify_socket("\0" + name) as received:
        assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "@" + name}) is True
        assert (await received.next()).text == "READY=1"


def test_watchdog_interval_needs_a_positive_usec_and_this_pid() -> None:
    assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": "200000"}) == 0.2
    mine = {"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}
    assert sdnotify.watchdog_interval_s(mine) == 10.0
    # inherited from a watched parent: this process is not the one systemd watches
    assert sdnotify.watchdog_interval_s({**mine, "WATCHDOG_PID": str(os.getppid())}) is None
    for bad in ("0", "-5", "ten", ""):
        assert sdnotify.watchdog_interval_s({"WATCHDOG_USEC": bad}) is None


async def test_watchdog_is_fed_every_half_interval(tmp_path: Path) -> None:
    path = socket_path(tmp_path)
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    with notify_socket(str(path)) as received:
        task = sdnotify.start_watchdog(env)
        assert task is not None
        try:
            first = await received.next(bound_s=5)
            second = await received.next(bound_s=5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert (first.text, second.text) == ("WATCHDOG=1", "WATCHDOG=1")
    half = WATCHDOG_USEC / 2 / 1_000_000
    assert half * 0.5 <= second.at - first.at <= half * 10  # about 0.1 s, loose for a busy CI


async def test_a_blocked_event_loop_starves_the_watchdog(tmp_path: Path) -> None:
    """The point of feeding from the loop: while the loop hangs in a synchronous call, no
    WATCHDOG=1 leaves, so systemd's WatchdogSec= runs out and it restarts the service."""
    path = socket_path(tmp_path)
    env = {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": str(WATCHDOG_USEC)}
    hung_s = 0.5  # five feeding intervals
    with notify_socket(str(path)) as received:
        task = sdnotify.start_watchdog(env)
        assert task is not None
        try:
            first = await received.next(bound_s=5)
            time.sleep(hung_s)  # noqa: ASYNC251 - the hung synchronous call under test
            second = await received.next(bound_s=5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert second.at - first.at >= hung_s * 0.9


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.slow
async def test_serve_sends_ready_then_watchdog_then_stopping_on_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real `pumpctl serve --simulate 1 --clock virtual` started as systemd starts it (its
    NOTIFY_SOCKET and WATCHDOG_USEC): READY=1 when the API answers, then WATCHDOG=1, and
    STOPPING=1 on SIGTERM; every datagram from the process itself (NotifyAccess=main)."""
    path = socket_path(tmp_path)
    port = free_port()
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setenv("PUMPCTL_API_TOKENS", "v-tok-for-the-tests-only-32chars=vera:viewer")
    monkeypatch.setenv("PUMPCTL_DATA_DIR", str(tmp_path / "data"))
    with notify_socket(str(path)) as received:
        async with pumpctl_server(
            "serve", "--simulate", "1", "--clock", "virtual", "--port", str(port)
        ) as process:
            ready = await received.next()
            assert ready.text == "READY=1", ready
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                health = await http.get("/api/v1/health", timeout=10)
            assert health.status_code == 200  # READY=1 means the API answers
            fed = await received.next(bound_s=5)
            assert fed.text == "WATCHDOG=1"
            process.send_signal(signal.SIGTERM)
            stopping = await received.next_not("WATCHDOG=1")
            assert stopping.text == "STOPPING=1"
            async with asyncio.timeout(BOUND_S):
                _out, err = await process.communicate()
        assert {ready.pid, fed.pid, stopping.pid} == {process.pid}, err.decode()

"""Shared fixtures: leaked-task detection, the virtual clock, and real Mosquitto brokers."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from needs import missing

from pumpctl.clock import VirtualClock


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Fail any test that leaves asyncio tasks running behind it (as pymodbus does)."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        names = ", ".join(sorted(t.get_name() for t in leaked))
        pytest.fail(f"test leaked {len(leaked)} asyncio task(s): {names}")


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clinical clock at a fixed start."""
    return VirtualClock()


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def mosquitto_binary() -> str:
    """Path of the mosquitto binary; fails (never skips) in CI when it is missing."""
    found = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if found is None:
        missing("mosquitto binary not found (scripts/test installs it through apt)")
    return found


@dataclass
class Broker:
    """A Mosquitto of the test's own on a free loopback port; may be stopped and restarted."""

    binary: str
    port: int
    workdir: Path
    process: subprocess.Popen[bytes] | None = field(default=None)
    log: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def start(self) -> None:
        """Start the broker and wait (bounded) until it accepts connections."""
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "set_tcp_nodelay true\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type information\n"  # its "running" line is what start() waits for
        )
        self.process = subprocess.Popen(
            [self.binary, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        process, running = self.process, threading.Event()

        def drain() -> None:  # also keeps the pipe from filling up while the broker runs
            assert process.stderr is not None
            for line in process.stderr:
                self.log.append(line.decode(errors="replace"))
                if b" running" in line:
                    running.set()
            running.set()  # exited

        self._reader = threading.Thread(target=drain, name=f"mosquitto-{self.port}", daemon=True)
        self._reader.start()
        if not running.wait(10):
            raise RuntimeError(f"mosquitto did not start on port {self.port} within 10 s")
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited at start: {''.join(self.log).strip()}")

    def stop(self) -> None:
        """Kill the broker (as a crash would) and wait for it to go."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)
            self._reader = None
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


@pytest.fixture
def broker() -> Iterator[Broker]:
    """A fresh Mosquitto for this test (started from the binary on a free port)."""
    binary = mosquitto_binary()
    with tempfile.TemporaryDirectory(prefix="pumpctl-mosq-") as tmp:
        b = Broker(binary=binary, port=free_port(), workdir=Path(tmp))
        b.start()
        try:
            yield b
        finally:
            b.stop()

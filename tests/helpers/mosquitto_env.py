"""Mosquitto brokers of the tests' own, started from the `mosquitto` binary on a free loopback
port, so a test may kill and restart them: an anonymous one (`broker` fixture, tests/conftest.py)
and one that refuses anonymous clients and knows its users from a password file (`AuthBroker`,
as config/mosquitto.conf ships it). Both read the broker's log all along, which also keeps its
pipe from filling up and blocking the broker."""

from __future__ import annotations

import getpass
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from needs import free_port, missing

BOUND_S = 10.0


def _binary(name: str, fallback: str) -> str:
    """Path of `name` (the mosquitto package); fails (never skips) in CI when it is missing."""
    found = shutil.which(name) or (fallback if Path(fallback).exists() else None)
    if found is None:
        missing(f"{name} not found (scripts/test installs the mosquitto package through apt)")
    return found


def mosquitto_binary() -> str:
    return _binary("mosquitto", "/usr/sbin/mosquitto")


def mosquitto_passwd_binary() -> str:
    return _binary("mosquitto_passwd", "/usr/bin/mosquitto_passwd")


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

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def conf(self) -> str:
        """The broker's configuration file."""
        return (
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "set_tcp_nodelay true\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type information\n"  # its "running" line is what start() waits for
        )

    def start(self) -> None:
        """Start the broker and wait (bounded) until it accepts connections."""
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.conf())
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
        if not running.wait(BOUND_S):
            raise RuntimeError(f"mosquitto did not start on port {self.port} within {BOUND_S} s")
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited at start: {''.join(self.log).strip()}")

    def stop(self) -> None:
        """Kill the broker (as a crash would) and wait for it to go."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=BOUND_S)
        if self._reader is not None:
            self._reader.join(timeout=BOUND_S)
            self._reader = None
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None


@dataclass
class AuthBroker(Broker):
    """A broker that refuses anonymous clients; its users are in `passwd`."""

    passwd_tool: str = ""

    @property
    def passwd(self) -> Path:
        return self.workdir / "passwd"

    def conf(self) -> str:
        return (
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {self.passwd}\n"
            "persistence false\n"
            "set_tcp_nodelay true\n"
            "log_dest stderr\n"
            "log_type all\n"  # its "running" line is what start() waits for
            f"user {getpass.getuser()}\n"  # as root, it would drop to "mosquitto"
        )

    def set_password(self, user: str, password: str) -> None:
        """Add or change `user` in the password file (the broker reads it at start, on SIGHUP)."""
        create = [] if self.passwd.exists() else ["-c"]
        subprocess.run(
            [self.passwd_tool, *create, "-b", str(self.passwd), user, password],
            check=True, capture_output=True, timeout=BOUND_S,
        )  # fmt: skip

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its password file again."""
        assert self.process is not None
        self.process.send_signal(signal.SIGHUP)


@contextmanager
def auth_broker_running(workdir: Path, users: dict[str, str]) -> Iterator[AuthBroker]:
    """An AuthBroker in `workdir` knowing `users` (name: password), started, killed at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    broker = AuthBroker(
        binary=mosquitto_binary(),
        port=free_port(),
        workdir=workdir,
        passwd_tool=mosquitto_passwd_binary(),
    )
    for user, password in users.items():
        broker.set_password(user, password)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()

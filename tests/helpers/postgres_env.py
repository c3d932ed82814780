"""A PostgreSQL server of the tests' own: initdb and pg_ctl on a free loopback port.

Never the machine's own server (it may run on 5432): each session starts a cluster in a
temporary folder, its unix socket in that folder, `listen_addresses=127.0.0.1`, a free port.
`initdb` and `pg_ctl` refuse to run as root, and CI runs as root: as root they run as the
unprivileged `postgres` user (the one Debian's package creates) through `runuser -u postgres
--`, in a folder that user owns. The binaries come from `/usr/lib/postgresql/*/bin` (Debian,
newest first) or PATH. A missing PostgreSQL fails the test when CI=true, else skips it (as a
missing mosquitto does, tests/conftest.py). `pg_ctl start -w` waits for the server (bounded by
`-t`), `pg_isready` confirms it accepts connections; teardown stops it (`-m immediate`), kills
what is left and removes the folder.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from needs import missing

SERVER_USER = "postgres"
START_BOUND_S = 60
_TOOLS = ("initdb", "pg_ctl", "pg_isready")
_names = itertools.count(1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _version(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.parent.name))


def postgres_bin_dir() -> Path:  # noqa: RET503 - missing() never returns
    """The folder of initdb, pg_ctl and pg_isready; fails (never skips) in CI when missing."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version, reverse=True)
    on_path = [Path(found).parent for found in [shutil.which("pg_ctl")] if found]
    for folder in (*debian, *on_path):
        if all((folder / tool).exists() for tool in _TOOLS):
            return folder
    missing("PostgreSQL (initdb, pg_ctl) not found (scripts/test installs it through apt)")


def _as_server_user() -> list[str]:
    """The prefix that runs a server tool as an unprivileged user ([] when we are one)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError:
        missing(f"running as root and there is no {SERVER_USER!r} user to run PostgreSQL as")
    return ["runuser", "-u", SERVER_USER, "--"]


@dataclass
class PostgresServer:
    """A running cluster of the tests' own; `url(db)` for SQLAlchemy, `create_database()`."""

    bin_dir: Path
    workdir: Path
    port: int = field(default_factory=_free_port)
    user: str = "postgres"  # the cluster's superuser (trust auth, loopback and socket only)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def socket_dir(self) -> Path:
        return self.workdir / "socket"

    @property
    def log_file(self) -> Path:
        return self.workdir / "server.log"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database}"

    def _tool(self, name: str, *args: str, timeout: float = START_BOUND_S) -> None:
        done = subprocess.run(
            [*_as_server_user(), str(self.bin_dir / name), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=self.workdir,
        )
        if done.returncode != 0:
            log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
            raise RuntimeError(
                f"{name} failed ({done.returncode}): {done.stderr.strip()} {log[-2000:]}".strip()
            )

    def start(self) -> None:
        """initdb, then start on the port and wait (bounded) until it accepts connections."""
        self.socket_dir.mkdir()
        if os.geteuid() == 0:
            owner = pwd.getpwnam(SERVER_USER)
            for path in (self.workdir, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._tool(
            "initdb",
            *("-D", str(self.data_dir), "-U", self.user, "--auth=trust", "-E", "UTF8"),
            *("--locale=C", "--no-sync", "--no-instructions"),
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} "
            "-c max_connections=50 -c fsync=off"
        )
        self._tool(
            "pg_ctl",
            *("-D", str(self.data_dir), "-l", str(self.log_file), "-o", options),
            *("-w", "-t", str(START_BOUND_S), "start"),
        )
        self._tool(
            "pg_isready",
            *("-h", self.host, "-p", str(self.port), "-U", self.user, "-t", str(START_BOUND_S)),
        )

    def _postmaster_pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
        return None

    def stop(self) -> None:
        """Stop the server at once (`-m immediate`), kill what remains, and wait for it."""
        pid = self._postmaster_pid()
        if pid is None:
            return
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._tool("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "stop", timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # pg_ctl gave up: the postmaster goes all the same

    def _admin(self, sql: str) -> None:
        import psycopg  # noqa: PLC0415 - only the PostgreSQL tests need the driver

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(sql)  # type: ignore[arg-type]

    def create_database(self) -> str:
        """A fresh, empty database; its name."""
        name = f"pumpctl_test_{os.getpid()}_{next(_names)}"
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, closing whatever connection is still on it."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """A started server in a temporary folder; stopped and removed on exit."""
    bin_dir = postgres_bin_dir()
    _as_server_user()  # fails or skips before anything is made, when it cannot run
    workdir = Path(tempfile.mkdtemp(prefix="pumpctl-pg-"))
    server = PostgresServer(bin_dir=bin_dir, workdir=workdir)
    try:
        server.start()
        yield server
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def server_processes(server: PostgresServer) -> list[int]:
    """The postmaster and every process it started (its backends, writer, checkpointer...)."""
    main = int((server.data_dir / "postmaster.pid").read_text().splitlines()[0])
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == main:  # ppid
                children.append(int(entry.name))
    return [main, *children]

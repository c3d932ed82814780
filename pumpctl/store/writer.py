"""The store's writer and readers: every database call off the event loop, each one bounded.

A stop must never wait for the disk (I1), and nothing may be acknowledged that was not recorded.
So the controller never calls the database on its event loop (architecture.md, "Storage never on
a stop's path"):

- `StoreWriter`, one thread that makes every write in order.
  - `record(job)`: a decision's record (the legal record). Never refused: queued in order and
    written when the database answers; retried while it fails with a fault of the database
    (locked, full, read-only, gone, not answering); dropped only for a fault of the record
    itself (logged). A record that only moved time may be `superseded` by a newer one of the
    same infusion while both wait. The returned future is True once written.
    The kernel's audit rows of sign-ins are records too, never awaited by the sign-in
    (api/accounts.py; `lost` counts one that its caller's own bound kept out).
  - `call(fn)`: an action's write (a patient, an infusion, a premedication). Refused at once
    while the store is degraded (`StoreUnavailable`, 503), else queued behind every record and
    awaited for at most its bound: an action is answered only once it is recorded.
  - `probe()`: a real write (`UPDATE alembic_version`: it commits, and it fails when the schema
    is gone) through the same queue, answered within `PROBE_BOUND_S`.
  The store is *degraded* while a write fails, or once one write has taken longer than
  `WRITE_BOUND_S` or a probe went unanswered for `PROBE_BOUND_S`, until the records waiting
  are written by writes within the bound (a slow database never flaps); then records wait (at
  most `RECORD_BACKLOG`), the thread probes until the database answers again, and writes them
  in order. The bounds are measured on `AwakeClock` (pumpctl/store/awake.py): time the whole
  process did not run (SIGSTOP) is not the database's slowness.
- `StoreReader`, a small pool of threads for reads (`READ_THREADS`), each read bounded
  (`READ_BOUND_S`, its wait for a thread included), at most `READS_WAITING` waiting at once; a
  read of a database that does not answer is `StoreUnavailable`.

With SQLite the writer also checks, before each write, that the database file is still the one
it opened: a file deleted or replaced under a running service is a store fault, never a write
into an unlinked file that nobody will read again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from pumpctl.store.awake import AwakeClock
from pumpctl.store.store import Store

__all__ = [
    "PROBE_BOUND_S",
    "READS_WAITING",
    "READ_BOUND_S",
    "READ_THREADS",
    "RECORD_BACKLOG",
    "WRITE_BOUND_S",
    "StoreHealth",
    "StoreReader",
    "StoreUnavailable",
    "StoreWriter",
]

_log = logging.getLogger("pumpctl.store")
T = TypeVar("T")

#: Seconds one write may take before the store counts as degraded (SQLite's busy wait is 5 s).
WRITE_BOUND_S = 1.0
#: Seconds an action waits for its own write before it is answered 503: longer than SQLite's
#: own busy wait (engine.SQLITE_BUSY_TIMEOUT_MS, 5 s), so a lock that is let go in time is
#: waited for, and one that is not is the database's own "locked", not a guess of ours.
ACTION_BOUND_S = 6.0
#: Seconds GET /health waits for its write probe (the issue's "503 within 1 s").
PROBE_BOUND_S = 0.8
#: Seconds during which GET /health answers from the last probe instead of writing again.
PROBE_EVERY_S = 0.5
#: Seconds a read may take (its wait for a thread included) before it is answered 503: longer
#: than SQLite's busy wait, as ACTION_BOUND_S (a CI run saw a read of a busy SQLite file take
#: more than 2 s).
READ_BOUND_S = 6.0
#: Threads that read the store, and reads that may wait for one (more are refused: 503).
READ_THREADS = 4
READS_WAITING = 64
#: Records that may wait for a degraded store; past it a record is dropped, loudly.
RECORD_BACKLOG = 50_000
#: Seconds between two tries of a degraded store.
RETRY_S = 0.5


class StoreUnavailable(Exception):  # noqa: N818 - a state of the store, answered 503
    """The database does not answer, or fails, within its bound (503 naming the store). Not a
    `StoreError`: nothing that maps a store's refusal to a rule (409) or a field (422) may
    take it for one."""


class StoreGone(Exception):  # noqa: N818 - a fault of the database, retried
    """The SQLite file the service opened is no longer at its path (deleted or replaced)."""


@dataclass(frozen=True, slots=True)
class StoreHealth:
    """The writer's state, as GET /health and the metrics show it."""

    degraded: bool
    reason: str | None  # why, in one line naming the database's fault (never a record's data)
    since_s: float | None  # seconds degraded so far
    waiting: int  # records waiting to be written
    dropped: int  # records lost for good (a full backlog, or a record the database refuses)


def _store_fault(error: BaseException) -> bool:
    """A fault of the database, not of the record: retried (the record waits)."""
    if isinstance(error, sa_exc.IntegrityError | sa_exc.DataError):
        return False
    return isinstance(error, sa_exc.DBAPIError | sa_exc.TimeoutError | OSError | StoreGone)


def _said(error: BaseException) -> str:
    """One line naming a database fault (the driver's first line; no statement, no values),
    for the gateway's log."""
    if isinstance(error, sa_exc.DBAPIError) and error.orig is not None:
        words = str(error.orig)
    else:
        words = str(error)
    first = words.strip().splitlines()[0] if words.strip() else type(error).__name__
    return first[:200]


#: Where the database is, in a driver's words: said in the log, never to a client.
_WHERE = (
    (
        re.compile(
            r'connection to server (?:at "[^"]*"(?: \([^)]*\))?, port \d+|on socket "[^"]*")'
        ),
        "connection to the database server",
    ),
    (re.compile(r"(?<![\w.])/[^\s:;,'\"]+"), "(path)"),
)


def public(line: str) -> str:
    """`line` (a fault as `_said` gives it) without where the database is: what /health and a
    503 say (docs/interfaces.md: a host, a port or a path reach only the log)."""
    for where, instead in _WHERE:
        line = where.sub(instead, line)
    return line


@dataclass(eq=False)
class _Job:
    run: Callable[[], Any]
    what: str
    record: bool  # a decision's record (retried), else an action's write (answered once)
    key: Hashable | None = None  # a time-only record of this key may be superseded
    futures: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = field(
        default_factory=list
    )
    # not to be run: an action whose caller stopped waiting before it began, or a time-only
    # record a newer one of its key replaced
    abandoned: bool = False
    started: bool = False  # the thread took it


def _resolve(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class StoreWriter:
    """The one thread that writes the store (start it with `start()`, end it with `close()`)."""

    def __init__(
        self,
        store: Store,
        *,
        write_bound_s: float = WRITE_BOUND_S,
        backlog: int = RECORD_BACKLOG,
        retry_s: float = RETRY_S,
        clock: AwakeClock | None = None,
    ) -> None:
        self.store = store
        # the write bounds leave out time the whole process did not run (SIGSTOP): not the
        # database's slowness (pumpctl/store/awake.py)
        self._clock = clock if clock is not None else AwakeClock()
        self.write_bound_s = write_bound_s
        self.backlog = backlog
        self.retry_s = retry_s
        self._jobs: deque[_Job] = deque()
        self._records_waiting = 0  # records in `_jobs` not abandoned (kept, not counted each time)
        self._quiet: dict[Hashable, _Job] = {}  # the waiting time-only record of each key
        self._current: _Job | None = None  # the job the thread runs
        self._lock = threading.Condition()
        self._closing = False
        self._failing: str | None = None  # the last write's fault, until a write succeeds
        self._failing_since: float | None = None
        # the write probe's fault (a schema gone): until a probe succeeds, whatever else does
        self._probe_failing: str | None = None
        self._busy_since: float | None = None  # monotonic start of the write under way
        # a write that took longer than its bound: degraded until every waiting record is
        # written by writes within it (a steadily slow database never flaps)
        self._slow: str | None = None
        self._slow_since: float | None = None
        # every time the store became degraded, and why: a short episode between two looks of
        # `watch` is still logged
        self._episodes = 0
        self._episode_reason = ""
        self._busy_what = ""
        self._dropped = 0
        self._probe: asyncio.Future[None] | None = None
        self._probe_at = 0.0
        self._file = _sqlite_file(store)
        self._inode = _inode(self._file)
        self._thread = threading.Thread(target=self._work, name="store writer", daemon=True)

    # -- the loop's side ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (and the clock its bounds run on)."""
        self._clock.start()
        self._thread.start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what waits (for at most `timeout_s`), then end the thread."""
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self._thread.join(timeout_s)
        self._clock.close()
        left = self._records_waiting
        if left:
            _log.error("store: %d record(s) not written at shutdown (the database fails)", left)

    def health(self) -> StoreHealth:
        """Degraded or not, why, since when; how many records wait."""
        now = self._clock.now()
        with self._lock:
            waiting = self._records_waiting
            busy = self._busy_since
            if self._failing is not None or self._probe_failing is not None:
                since = self._failing_since
                reason: str | None = self._failing or self._probe_failing
            elif self._slow is not None:
                since, reason = self._slow_since, self._slow
            elif busy is not None and now - busy > self.write_bound_s:
                since, reason = (
                    busy,
                    f"the database has not answered a write for {now - busy:.1f} s",
                )
            else:
                since, reason = None, None
            return StoreHealth(
                degraded=reason is not None,
                reason=reason,
                since_s=None if since is None else round(now - since, 3),
                waiting=waiting,
                dropped=self._dropped,
            )

    async def watch(self, every_s: float = 0.25) -> None:
        """Until cancelled: a loud line when the store becomes degraded (a write failed, or
        one has not been answered within its bound), and when it answers again; an episode
        that began and ended between two looks is logged too, with both lines."""
        was: str | None = None
        episodes = 0
        while True:
            health = self.health()
            with self._lock:
                began, why = self._episodes - episodes, self._episode_reason
                episodes = self._episodes
            if health.degraded and was is None:
                _log.error(
                    "store DEGRADED: %s; records wait in memory (%d) and are written when the "
                    "database answers; stops and reactions go on, actions that need a record "
                    "first are refused",
                    health.reason,
                    health.waiting,
                )
            elif was is not None and not health.degraded:
                _log.warning(
                    "store: the database answers again (%d record(s) to write)", health.waiting
                )
            elif was is None and began:  # degraded and back between two looks
                _log.error("store DEGRADED: %s (for less than %g s)", why, every_s)
                _log.warning(
                    "store: the database answers again (%d record(s) to write)", health.waiting
                )
            was = health.reason if health.degraded else None
            await asyncio.sleep(every_s)

    def record(
        self, run: Callable[[], object], *, what: str, key: Hashable | None = None
    ) -> asyncio.Future[bool]:
        """Queue a decision's record; the future is True once written, False if dropped."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        job = _Job(run, what, record=True, key=key, futures=[(loop, future)])
        with self._lock:
            if key is not None:
                self._supersede(job)
            if self._records_waiting >= self.backlog:
                self._dropped += 1
                _log.critical(
                    "store: %s NOT RECORDED: %d records already wait for the database",
                    what,
                    self._records_waiting,
                )
                future.set_result(False)
                return future
            self._jobs.append(job)
            self._records_waiting += 1
            if key is not None:
                self._quiet[key] = job
            self._lock.notify_all()
        return future

    def lost(self, what: str, why: str) -> None:
        """A record its caller could not queue (a bound of its own: the accounts' audit rows,
        api/accounts.py): lost as one past the backlog is, with a critical line, and counted
        (`dropped`, /health's `records_lost`)."""
        with self._lock:
            self._dropped += 1
        _log.critical("store: %s NOT RECORDED: %s", what, why)

    def _supersede(self, job: _Job) -> None:
        """A newer time-only record of the same infusion replaces one still waiting (it only
        moved time; the newer state holds all of it): it is marked, not searched for, and the
        thread passes over it. Called with the lock held."""
        waiting = self._quiet.get(job.key)
        if waiting is not None and not waiting.started and not waiting.abandoned:
            waiting.abandoned = True
            self._records_waiting -= 1
            job.futures.extend(waiting.futures)
            waiting.futures = []

    async def call(self, run: Callable[[], T], *, what: str, bound_s: float = ACTION_BOUND_S) -> T:
        """An action's write, answered once written (its value or its error); refused at once
        while the store is degraded, and after `bound_s` when the database does not answer."""
        health = self.health()
        if health.degraded:
            raise StoreUnavailable(
                f"the store is degraded ({health.reason}): {what} is not recorded; "
                "nothing was changed, try again when the database answers"
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        job = _Job(run, what, record=False, futures=[(loop, future)])
        with self._lock:
            self._jobs.append(job)
            self._lock.notify_all()
        try:
            async with asyncio.timeout(bound_s):
                return await asyncio.shield(future)
        except TimeoutError:
            with self._lock:
                job.abandoned = True
                started = job.started
            if started:
                raise StoreUnavailable(
                    f"the database did not answer within {bound_s:g} s: {what} may still be "
                    "recorded when it does; look before you repeat it"
                ) from None
            raise StoreUnavailable(
                f"the database did not answer within {bound_s:g} s: {what} is not recorded; "
                "nothing was changed"
            ) from None

    async def probe(self) -> StoreHealth:
        """A real write through the queue, answered within `PROBE_BOUND_S`: the store's health
        after it. Callers within `PROBE_EVERY_S` of the last probe share it (a flood of
        GET /health is not a flood of writes)."""
        loop = asyncio.get_running_loop()
        fresh = self._probe is not None and (
            not self._probe.done() or loop.time() - self._probe_at < PROBE_EVERY_S
        )
        if not fresh:
            probe: asyncio.Future[None] = loop.create_future()
            probe.add_done_callback(lambda _f: setattr(self, "_probe_at", loop.time()))
            self._probe = probe
            job = _Job(self._probe_write, "write probe", record=False, futures=[(loop, probe)])
            with self._lock:
                self._jobs.append(job)
                self._lock.notify_all()
        assert self._probe is not None
        failed: str | None = None
        try:
            async with asyncio.timeout(PROBE_BOUND_S):
                await asyncio.shield(self._probe)
        except TimeoutError:
            failed = f"the database did not answer a write within {PROBE_BOUND_S:g} s"
            with self._lock:  # the store is degraded from now on, not only on /health
                if self._slow is None:
                    self._slow, self._slow_since = failed, self._clock.now()
                    self._episode(failed)
        except Exception as error:  # noqa: BLE001 - any failure of the probe is a degraded store
            failed = public(_said(error))
        health = self.health()
        if failed is None or health.degraded:
            return health
        return StoreHealth(True, failed, 0.0, health.waiting, health.dropped)

    # -- the thread --------------------------------------------------------------------------

    def _probe_write(self) -> None:
        self._check_file()
        with self.store.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = version_num"))

    def _check_file(self) -> None:
        if self._file is None:
            return
        now = _inode(self._file)
        if now != self._inode:
            shown = "deleted" if now is None else "replaced by another file"
            raise StoreGone(f"the database file {self._file} was {shown} under the service")

    def _work(self) -> None:
        while True:
            with self._lock:
                while (
                    not self._jobs
                    and not self._closing
                    and self._failing is None
                    and self._probe_failing is None
                    and self._slow is None
                ):
                    self._lock.wait()
                if not self._jobs:
                    if self._closing:
                        return
                    job = _Job(self._probe_write, "write probe", record=False)  # degraded
                else:
                    job = self._jobs[0]
                    if job.abandoned:
                        self._jobs.popleft()
                        continue
                    job.started = True
                self._current = job
                self._busy_since, self._busy_what = self._clock.now(), job.what
            value, error = None, None
            try:
                self._check_file()
                value = job.run()
            except BaseException as exc:  # noqa: BLE001 - every fault is answered, none kills the thread
                error = exc
            self._done(job, value, error)
            fault = error is not None and _store_fault(error)
            tried = fault and (job.record or not job.futures)  # a record waits, in order
            if tried or (not job.futures and not job.record and self._slow is not None):
                if self._closing:
                    return
                time.sleep(self.retry_s)  # the database is tried again, not hammered

    def _state_after(self, job: _Job, fault: BaseException | None, *, probe: bool) -> None:
        """The store's state after `job` ended with `fault` (None: it worked, or failed for a
        reason of its own). A probe's fault (a schema gone) lasts until a probe works, whatever
        other writes do. Called with the lock held."""
        said = None if fault is None else public(_said(fault))
        if probe:
            self._probe_failing = said
        if fault is not None and self._failing is None:
            self._failing_since = self._clock.now()
            self._episode(said or "")
            _log.error("store: %s failed: %s (tried again)", job.what, _said(fault))
        self._failing = said
        if self._failing is None and self._probe_failing is None:
            self._failing_since = None

    def _done(self, job: _Job, value: Any, error: BaseException | None) -> None:
        fault = error is not None and _store_fault(error)
        probe = job.run == self._probe_write
        with self._lock:
            began = self._busy_since
            self._busy_since, self._current = None, None
            self._state_after(job, error if fault else None, probe=probe)
            retried = fault and job.record
            if not retried and self._jobs and self._jobs[0] is job:
                self._jobs.popleft()
                if job.record:
                    self._records_waiting -= 1
                if job.key is not None and self._quiet.get(job.key) is job:
                    del self._quiet[job.key]
            if not fault and began is not None:
                self._timed(self._clock.now() - began, began)

        if retried:
            return
        if error is not None and job.record:
            self._dropped += 1
            _log.error("store: %s NOT RECORDED: %s", job.what, _said(error))
        for loop, future in job.futures:
            if job.record:
                result, failure = error is None, None
            else:
                result, failure = value, error
                if fault:
                    failure = StoreUnavailable(
                        f"the database failed ({public(_said(error))}): {job.what} is not recorded"  # type: ignore[arg-type]
                    )
            with contextlib.suppress(RuntimeError):  # a loop already closed
                loop.call_soon_threadsafe(_resolve, future, result, failure)

    def _episode(self, reason: str) -> None:
        """The store has just become degraded (lock held): counted for `watch`."""
        self._episodes += 1
        self._episode_reason = reason

    def _timed(self, took_s: float, began: float) -> None:
        """A write that worked took `took_s`: past the bound the store is degraded (slow) until
        the records waiting are written by writes within it. Called with the lock held."""
        if took_s > self.write_bound_s:
            if self._slow is None:
                self._slow_since = began
                self._episode(f"the database took {took_s:.1f} s to answer a write")
            self._slow = (
                f"the database took {took_s:.1f} s to answer a write "
                f"(bound {self.write_bound_s:g} s)"
            )
        elif self._slow is not None and self._records_waiting == 0:
            self._slow, self._slow_since = None, None


class StoreReader:
    """Reads of the store on a few threads of their own, each bounded: a read waits for a
    thread at most its bound, and at most `waiting` reads wait at once (more are refused)."""

    def __init__(
        self,
        *,
        bound_s: float = READ_BOUND_S,
        threads: int = READ_THREADS,
        waiting: int = READS_WAITING,
    ) -> None:
        self.bound_s = bound_s
        self.limit = waiting
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=threads, thread_name_prefix="store read"
        )
        self._threads = asyncio.Semaphore(threads)
        self._in_flight = 0  # reads waiting for a thread or on one

    async def __call__(self, read: Callable[[], T], *, what: str = "a read") -> T:
        """`read()` on a reader thread, answered within the bound or `StoreUnavailable`."""
        if self._in_flight >= self.limit:
            raise StoreUnavailable(
                f"the database is not answering reads ({self._in_flight} wait): {what} failed"
            )
        self._in_flight += 1
        try:
            async with asyncio.timeout(self.bound_s):
                async with self._threads:
                    return await asyncio.wrap_future(self._pool.submit(read))
        except TimeoutError:
            raise StoreUnavailable(
                f"the database did not answer within {self.bound_s:g} s: {what} failed"
            ) from None
        except (sa_exc.DBAPIError, sa_exc.TimeoutError, OSError) as error:
            if isinstance(error, sa_exc.IntegrityError | sa_exc.DataError):
                raise
            raise StoreUnavailable(
                f"the database failed ({public(_said(error))}): {what} failed"
            ) from None
        finally:
            self._in_flight -= 1

    def close(self) -> None:
        """End the threads (a read stuck in a frozen database is left behind)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


def _sqlite_file(store: Store) -> Path | None:
    url = store.engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def _inode(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino

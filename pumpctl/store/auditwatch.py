"""The running kernel's watch over the audit trail's hash chain (pumpctl.store.chain).

- It logs the chain's head, `audit chain head ID:HASH`, at start (the last row the database
  holds), every `head_every_s`, and at stop (after the writer wrote what waited): what the
  kernel itself last wrote (`Store.appended_head`), else the last row verified. The journal
  keeps those lines out of the database's reach, so a chain rewritten whole, hashes
  recomputed, disagrees with them (`pumpctl audit verify --head ID:HASH`).
- It verifies the chain on the store's reader threads (`StoreReader`: each chunk one bounded
  read; never on the event loop): the whole trail at start and every `full_every_s`, and every
  `verify_every_s` incrementally: the row verified last must be unchanged, then the rows after
  it. Each pass also checks the head the kernel wrote last. An incremental pass that finds a
  break is followed at once by a whole one, so the row named is the first that does not hold.
- `status()` is what GET /health shows (`audit`). A break is a loud line (CRITICAL) and stays
  said until a restart: the trail was tampered with, and rows do not heal.

The head is logged from the event loop, from memory: no database call there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pumpctl.store.chain import ChainBreak, ChainHead, ChainWalk, Verification, last_row
from pumpctl.store.store import Store
from pumpctl.store.writer import StoreReader, StoreUnavailable

__all__ = [
    "FULL_VERIFY_S",
    "HEAD_LOG_S",
    "VERIFY_S",
    "AuditStatus",
    "AuditWatch",
]

_log = logging.getLogger("pumpctl.audit")

#: Defaults: an incremental verification every minute, a whole one every hour, the head
#: logged every ten minutes (settings `audit_verify_s`, `audit_full_verify_s`,
#: `audit_head_log_s`).
VERIFY_S = 60.0
FULL_VERIFY_S = 3600.0
HEAD_LOG_S = 600.0
#: Seconds between two chunks of one pass: the pass leaves the reader threads (and the CPU)
#: to the service's own reads between its chunks.
_BETWEEN_CHUNKS_S = 0.01
#: Seconds before a start that found the store not answering tries again.
_RETRY_S = 5.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class AuditStatus:
    """The last verification, as GET /health shows it."""

    ok: bool | None  # None: no pass has ended yet
    verified_through: ChainHead | None
    at: datetime | None  # wall time the last pass ended
    full_at: datetime | None  # wall time the last whole pass ended
    broken: ChainBreak | None

    def as_json(self) -> dict[str, Any]:
        through = self.verified_through
        broken = self.broken
        return {
            "ok": self.ok,
            "verified_through_id": None if through is None else through.id,
            "head": None if through is None else through.hash,
            "at": None if self.at is None else self.at.isoformat(),
            "full_at": None if self.full_at is None else self.full_at.isoformat(),
            "row": None if broken is None else broken.row,
            "problem": None if broken is None else broken.problem,
            "message": None if broken is None else broken.message,
        }


class AuditWatch:
    """Verifies the chain and logs its head (module docstring); `run()` is its task."""

    def __init__(
        self,
        store: Store,
        reader: StoreReader,
        *,
        verify_every_s: float = VERIFY_S,
        full_every_s: float = FULL_VERIFY_S,
        head_every_s: float = HEAD_LOG_S,
        wall_clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.store = store
        self.reader = reader
        self.verify_every_s = verify_every_s
        self.full_every_s = full_every_s
        self.head_every_s = head_every_s
        self._wall_clock = wall_clock
        self._started: ChainHead | None = None  # the database's last row at start
        self._through: ChainHead | None = None  # the last row verified
        self._at: datetime | None = None
        self._full_at: datetime | None = None
        self._broken: ChainBreak | None = None
        self._unreadable = False  # the store did not answer the last pass (said once)

    def status(self) -> AuditStatus:
        ok = None if self._at is None and self._broken is None else self._broken is None
        return AuditStatus(ok, self._through, self._at, self._full_at, self._broken)

    def head(self) -> ChainHead | None:
        """What the kernel last wrote, else the last row verified, else the last at start."""
        return self.store.appended_head or self._through or self._started

    def log_head(self, when: str) -> None:
        """One line naming the chain's head (from memory: no database call)."""
        head = self.head()
        broken = self._broken
        said = "" if broken is None else f"; the trail is BROKEN at row {broken.row}"
        if head is None:
            _log.info("audit chain head none: the trail is empty (%s%s)", when, said)
        else:
            _log.info("audit chain head %s (%s%s)", head, when, said)

    def at_stop(self) -> None:
        """The head at stop: call it once the writer has written what waited."""
        self.log_head("at stop")

    async def run(self) -> None:
        """Until cancelled: the head at start, a whole pass, then passes and head lines at their
        intervals (on the loop's clock)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                self._started = await self.reader(self._last_row, what="the audit chain's head")
                break
            except StoreUnavailable as error:
                _log.warning("audit: the chain's head cannot be read yet: %s", error)
                await asyncio.sleep(_RETRY_S)
        self.log_head("at start")
        await self._pass(full=True)
        now = loop.time()
        next_verify, next_full = now + self.verify_every_s, now + self.full_every_s
        next_head = now + self.head_every_s
        while True:
            await asyncio.sleep(max(0.0, min(next_verify, next_full, next_head) - loop.time()))
            now = loop.time()
            if now >= next_head:
                self.log_head("every " + _seconds(self.head_every_s))
                next_head = now + self.head_every_s
            if now >= next_full:
                await self._pass(full=True)
                now = loop.time()
                next_full, next_verify = now + self.full_every_s, now + self.verify_every_s
            elif now >= next_verify:
                await self._pass(full=False)
                next_verify = loop.time() + self.verify_every_s

    def _last_row(self) -> ChainHead | None:
        with self.store.engine.connect() as connection:
            return last_row(connection)

    async def _pass(self, *, full: bool) -> None:
        """One verification (whole, or from the row verified last), chunk by chunk on the
        reader threads; a store that does not answer leaves the last result as it was."""
        if self._broken is not None:
            return  # said already; a restart verifies again
        expect: dict[int, tuple[str, str]] = {}
        written = self.store.appended_head
        if written is not None:
            expect[written.id] = (written.hash, "what this kernel wrote")
        if full and self._through is not None:
            expect.setdefault(self._through.id, (self._through.hash, "the last verification"))
        start = None if full else self._through
        walk = ChainWalk(self.store.engine, start=start, expect=expect)
        began = time.monotonic()
        try:
            while True:
                if await self.reader(walk.step, what="the audit chain's verification"):
                    break
                await asyncio.sleep(_BETWEEN_CHUNKS_S)  # the service's reads between chunks
        except StoreUnavailable as error:
            if not self._unreadable:
                _log.warning("audit: the chain could not be verified: %s (tried again)", error)
            self._unreadable = True
            return
        except Exception:  # noqa: BLE001 - a fault of the check never ends the watch (nor the kernel)
            _log.exception("audit: the chain's verification failed (tried again)")
            return
        self._unreadable = False
        if not full and walk.result.broken is not None:
            # An incremental pass sees only from the row verified last: the whole trail once
            # more names the first row that does not hold, as `pumpctl audit verify` does.
            await self._pass(full=True)
            if self._broken is not None or self._unreadable:
                return
        self._ended(walk.result, full=full, took_s=time.monotonic() - began)

    def _ended(self, result: Verification, *, full: bool, took_s: float) -> None:
        now = self._wall_clock()
        if result.broken is not None:
            self._broken = result.broken
            _log.critical(
                "audit trail BROKEN at row %d: %s; the trail was tampered with around the "
                "store (pumpctl audit verify names it; compare the heads logged here)",
                result.broken.row,
                result.broken.message,
            )
            return
        if result.through is not None:
            self._through = result.through
        self._at = now
        if full:
            self._full_at = now
            _log.info(
                "audit trail verified: %d row(s) hold, through %s (%.1f s)",
                result.checked,
                self._through if self._through is not None else "none",
                took_s,
            )
        else:
            _log.debug("audit trail verified through %s (+%d rows)", self._through, result.checked)


def _seconds(value: float) -> str:
    return f"{value:g} s"

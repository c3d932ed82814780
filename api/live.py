"""The kernel's live events: one reader of the store for every client (`LiveHub`).

Before, each live-event stream read the store every 250 ms on the event loop the stops pass
through: 500 readers cost a confirmed stop 1.69 s. Now one task (the hub) reads the audit rows
that are new, on a reader thread, when the ward says something changed (at most every
`STATUS_EVERY_S / 4`), builds each event's text once, keeps the last `replay` of them in memory
for `Last-Event-ID`, and hands them to every client's bounded buffer. The pumps' statuses are
looked at once per tick for everyone, from the supervisors' cached statuses: a pump's view (a
dict, its JSON) is built only when what it shows changed and is due to be sent
(`api.views.pump_shown`, a few attribute reads per pump), not for every pump at every tick
(issue 21: at 1,000 pumps that was a fifth of the kernel's event loop).

The hub is a `FanOut` (api/fanout.py: the replay ring, each client's bounded buffer, the
limits, shared with the web side's feed); a replay comes from the memory the hub already holds,
never from a query per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from api.fanout import FanOut
from api.views import audit_view, pump_shown, pump_view
from pumpctl.controller.ward import Ward
from pumpctl.store import AccountAudit
from pumpctl.store.writer import StoreUnavailable

__all__ = ["STATUS_EVERY_S", "LiveHub"]

_log = logging.getLogger("pumpctl.api")

#: Wall seconds between two looks at the pumps' cached statuses (a status event at most this
#: often per pump while nothing else changes).
STATUS_EVERY_S = 1.0
_PAGE = 500
#: The accounts' audit rows (sign-ins, `pumpctl user`): in the trail, not in the live events.
_ACCOUNTS = frozenset(kind.value for kind in AccountAudit)


class LiveHub(FanOut):
    """The kernel's feed: reads the store once for every client; `run()` is its task."""

    def __init__(self, ward: Ward, *, replay: int) -> None:
        super().__init__(replay=replay)
        self.ward = ward
        self._seen: dict[str, tuple[object, ...]] = {}
        self._sent_at: dict[str, float] = {}
        self._suffix = 0
        self._store: tuple[bool, str | None] = (False, None)
        self._changed = asyncio.Event()
        self.reads = 0  # store reads made (the bench and the tests count them)

    async def run(self) -> None:
        """Until cancelled: read what is new when told (or every tick), and send it."""
        remove = self.ward.add_listener(self._changed.set)
        try:
            await self._prime()
            while True:
                await self._tick()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STATUS_EVERY_S / 4):
                        await self._changed.wait()
        finally:
            remove()
            self.end_all()

    async def _prime(self) -> None:
        """The last `replay` audit rows, so a client reconnecting after a restart is replayed."""
        while True:
            try:
                newest = await self.ward.latest_audit_id()
                self.cursor = max(0, newest - self.replay)
                await self._read_new(send=False)
            except StoreUnavailable as error:
                _log.warning("live events: the store does not answer yet: %s", error)
                await asyncio.sleep(1.0)
            else:
                return

    async def _read_new(self, *, send: bool = True) -> None:
        while True:
            cursor = self.cursor
            self.reads += 1
            rows = await self.ward.audit_since(cursor, _PAGE)
            for row in rows:
                if row.type in _ACCOUNTS:  # no infusion changed: not the stations' news
                    self.cursor = max(self.cursor, row.id or cursor)
                    continue
                event = {
                    "event": row.type,
                    "id": str(row.id),
                    "data": json.dumps(audit_view(row), default=str),
                }
                self.publish(event, audit_id=row.id or cursor, send=send)
            if len(rows) < _PAGE:
                return

    def _next_id(self) -> str:
        self._suffix += 1
        return f"{self.cursor}.{self._suffix}"

    async def _tick(self) -> None:
        self._changed.clear()
        try:
            await self._read_new()
        except StoreUnavailable as error:  # statuses go on; the rows are read when it answers
            _log.debug("live events: audit rows wait: %s", error)
        health = self.ward.writer.health()
        store = (health.degraded, health.reason)
        if store != self._store:
            self._store = store
            body = {"store": "degraded" if health.degraded else "up", "reason": health.reason}
            event = {"event": "store_status", "id": self._next_id(), "data": json.dumps(body)}
            self.status("store", event)
        now = asyncio.get_running_loop().time()
        for pid, supervisor in self.ward.supervisors.items():
            key = pump_shown(supervisor)
            seen = self._seen.get(pid)
            if seen == key:
                continue  # nothing it shows changed: no view built
            major = seen is None or seen[:5] != key[:5]
            if not (major or now - self._sent_at.get(pid, 0) >= STATUS_EVERY_S):
                continue  # only the volume moved, and it was sent less than a second ago
            self._seen[pid], self._sent_at[pid] = key, now
            view = pump_view(self.ward, supervisor)
            event = {"event": "pump_status", "id": self._next_id(), "data": json.dumps(view)}
            self.status(pid, event)

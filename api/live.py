"""The live events' fan-out: one reader of the store for every client (`LiveHub`).

Before, each live-event stream read the store every 250 ms on the event loop the stops pass
through: 500 readers cost a confirmed stop 1.69 s. Now one task (the hub) reads the audit rows
that are new, on a reader thread, when the ward says something changed (at most every
`STATUS_EVERY_S / 4`), builds each event's text once, keeps the last `replay` of them in memory
for `Last-Event-ID`, and hands them to every client's bounded buffer. The pumps' statuses are
looked at once per tick for everyone, from the supervisors' cached statuses.

Every client is bounded: `CLIENT_BUFFER` events wait for it at most (a client that stops reading
is dropped when its buffer is full, and sse-starlette's `send_timeout` ends a send that does not
leave); at most `MAX_STREAMS` streams in all and `MAX_STREAMS_PER_USER` per token
(`TooManyStreams`, 503). A replay comes from the memory the hub already holds, never from a
query per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from api.views import audit_view, pump_view
from pumpctl.controller.ward import Ward
from pumpctl.store import AccountAudit
from pumpctl.store.writer import StoreUnavailable

__all__ = [
    "CLIENT_BUFFER",
    "MAX_STREAMS",
    "MAX_STREAMS_PER_USER",
    "STATUS_EVERY_S",
    "FanOut",
    "LiveHub",
    "TooManyStreams",
]

_log = logging.getLogger("pumpctl.api")

#: Wall seconds between two looks at the pumps' cached statuses (a status event at most this
#: often per pump while nothing else changes).
STATUS_EVERY_S = 1.0
#: Events that may wait for one client; a client further behind is dropped (it reconnects with
#: Last-Event-ID and is replayed from memory).
CLIENT_BUFFER = 256
#: Live-event streams at once, in all and per token.
MAX_STREAMS = 200
MAX_STREAMS_PER_USER = 20
#: Events that may wait for the web side's one feed of the kernel's events.
FEED_BUFFER = 4096
_PAGE = 500
#: The accounts' audit rows (sign-ins, `pumpctl user`): in the trail, not in the live events.
_ACCOUNTS = frozenset(kind.value for kind in AccountAudit)

Event = dict[str, str]


class TooManyStreams(Exception):  # noqa: N818 - a limit reached, answered 503
    """No more live-event streams: the service's or the token's limit is reached."""


@dataclass(eq=False)
class _Client:
    user: str
    queue: asyncio.Queue[Event | None]
    dropped: bool = False


class FanOut:
    """The clients of one service's live events: the replay ring, each client's bounded buffer,
    the limits. A feed (`LiveHub` in the kernel, `api.web.KernelFeed` on the web side) calls
    `publish` for each event, and `status` for one that replaces the last of its kind."""

    def __init__(self, *, replay: int) -> None:
        self.replay = replay
        self._ring: deque[tuple[int, Event]] = deque(maxlen=replay)  # (audit id, event)
        self.cursor = 0  # the newest audit id seen
        self._clients: set[_Client] = set()
        self._per_user: Counter[str] = Counter()
        self._statuses: dict[str, Event] = {}  # the last event of each kind that replaces
        self.dropped = 0  # clients dropped for falling behind

    @property
    def clients(self) -> int:
        """Streams open now."""
        return len(self._clients)

    def publish(self, event: Event, *, audit_id: int | None = None, send: bool = True) -> None:
        """An audit row's event (`audit_id`: kept for replay), or another event."""
        if audit_id is not None:
            self.cursor = max(self.cursor, audit_id)
            self._ring.append((audit_id, event))
        if send:
            for client in list(self._clients):
                try:
                    client.queue.put_nowait(event)
                except asyncio.QueueFull:
                    self._drop(client)

    def status(self, key: str, event: Event) -> None:
        """An event that replaces the last one of `key` (a pump's status): sent, and given to
        every new client first."""
        self._statuses[key] = event
        self.publish(event)

    def end_all(self) -> None:
        """The service ends: every stream ends with it."""
        for client in list(self._clients):
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        """A client that stopped reading: its buffer is emptied and its stream ends (it
        reconnects with Last-Event-ID and is replayed from memory)."""
        client.dropped = True
        self.dropped += 1
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(None)
        self._leave(client)

    def _leave(self, client: _Client) -> None:
        if client in self._clients:
            self._clients.discard(client)
            self._per_user[client.user] -= 1

    def _replay(self, last_id: int | None, *, everything: bool = False) -> list[Event]:
        """The events after `last_id` from memory, or a resync when they are not all held;
        with `everything`, every event held (a feed of another process priming itself)."""
        if everything:
            return [event for _at, event in self._ring]
        if last_id is None:
            return []
        newest = self.cursor
        if newest - last_id > self.replay:
            return [{"event": "resync", "id": str(newest), "data": json.dumps({"last_id": newest})}]
        return [event for at, event in self._ring if at > last_id]

    def stream(
        self,
        user: str,
        last_id: int | None,
        *,
        everything: bool = False,
        limited: bool = True,
    ) -> AsyncIterator[Event]:
        """One client's events: the replay after `last_id` (or `everything` held), the last
        status of each kind, then live ones, until the client leaves or falls behind.
        `TooManyStreams` at the limits (unless not `limited`: the web side's one feed)."""
        if limited and len(self._clients) >= MAX_STREAMS:
            raise TooManyStreams(f"the service serves {MAX_STREAMS} live-event streams already")
        if limited and self._per_user[user] >= MAX_STREAMS_PER_USER:
            raise TooManyStreams(f"this token has {MAX_STREAMS_PER_USER} live-event streams open")
        client = _Client(user, queue=asyncio.Queue(CLIENT_BUFFER if limited else FEED_BUFFER))
        self._clients.add(client)
        self._per_user[user] += 1
        first = [*self._replay(last_id, everything=everything), *self._statuses.values()]
        return self._events(client, first)

    async def _events(self, client: _Client, first: list[Event]) -> AsyncIterator[Event]:
        try:
            for event in first:
                yield event
            while True:
                waiting = await client.queue.get()
                if waiting is None:
                    return
                yield waiting
        finally:
            self._leave(client)


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
        loop = asyncio.get_running_loop()
        for supervisor in self.ward.supervisors.values():
            view = pump_view(self.ward, supervisor)
            key = (
                view["state"],
                view["rate_ml_h"],
                view["connected"],
                tuple(view["alarms"]),
                view["infusion_id"],
                view["volume_infused_ml"],
            )
            pid = view["id"]
            now = loop.time()
            major = self._seen.get(pid, (None,))[:5] != key[:5]
            stale = now - self._sent_at.get(pid, 0) >= STATUS_EVERY_S
            if self._seen.get(pid) != key and (major or stale):
                self._seen[pid], self._sent_at[pid] = key, now
                event = {"event": "pump_status", "id": self._next_id(), "data": json.dumps(view)}
                self.status(pid, event)


def event_stream_id(header: str | None, largest: int) -> int | None:
    """The audit id a `Last-Event-ID` names (None: none, or not one of ours)."""
    if header is None:
        return None
    head = header.strip().split(".", 1)[0]
    # ASCII digits only: "²".isdigit() is true and int("²") raises (a 500, issue 20)
    if not (head.isascii() and head.isdigit() and len(head) < 20):
        return None
    # an id past the store's largest names no event yet: replay from the newest one there is
    return min(int(head), largest)

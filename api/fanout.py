"""The live events' fan-out to clients (`FanOut`): the replay ring, each client's bounded
buffer, the limits. The kernel's feed (`api.live.LiveHub`, reading the store) and the web side's
(`api.web.KernelFeed`, reading the kernel's one stream) are both a `FanOut`; this module imports
nothing of the kernel, so the web side loads none of it (docs/architecture.md, "Two processes").

Every client is bounded: `CLIENT_BUFFER` events wait for it at most (a client that stops reading
is dropped when its buffer is full, and sse-starlette's `send_timeout` ends a send that does not
leave); at most `MAX_STREAMS` streams in all and `MAX_STREAMS_PER_USER` per token
(`TooManyStreams`, 503). A replay comes from the memory the feed already holds, never from a
query per client.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

__all__ = [
    "CLIENT_BUFFER",
    "FEED_BUFFER",
    "MAX_STREAMS",
    "MAX_STREAMS_PER_USER",
    "PING_S",
    "SEND_TIMEOUT_S",
    "Event",
    "FanOut",
    "TooManyStreams",
    "event_stream_id",
]

#: Events that may wait for one client; a client further behind is dropped (it reconnects with
#: Last-Event-ID and is replayed from memory).
CLIENT_BUFFER = 256
#: Live-event streams at once, in all and per token.
MAX_STREAMS = 200
MAX_STREAMS_PER_USER = 20
#: Events that may wait for the web side's one feed of the kernel's events.
FEED_BUFFER = 4096
#: Seconds between two SSE pings while nothing else is sent: well inside the page's 10 s
#: staleness warning, so a quiet room does not look stale, and the page's 12 s silence bound
#: (2.4 pings, api/static/page.js) tells a dead connection from a quiet one.
PING_S = 5
#: Seconds one send to a client may take; a client that does not take it is dropped.
SEND_TIMEOUT_S = 10.0

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

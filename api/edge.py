"""The web side's listener, bounded (uvicorn's HTTP/1.1 protocol with what it lacks).

uvicorn bounds an idle keep-alive connection (`timeout_keep_alive`) and the size of a request's
head (`h11_max_incomplete_event_size`), but not the time a client may take to send that head,
nor how many connections one client may hold: 1,100 half-sent requests held every connection
and the nurse's press timed out. `EdgeProtocol` adds both:

- a request's head must arrive within `HEAD_WITHIN_S` of its first byte (or of the connection);
  a connection that has not sent it by then is closed;
- at most `MAX_CONNECTIONS` connections in all and `MAX_PER_PEER` from one address; one more is
  closed at once (the kernel is not reached by any of it; the process's `LimitNOFILE` is well
  above the total).

`uvicorn_options()` gives the options the web side runs uvicorn with. `PeerTurns` (ASGI
middleware) lets one address have at most `PER_PEER_WORKING` requests worked on at once, so a
flood from one client waits its own turns instead of standing in front of everyone's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from api.turns import KeyedTurns, NoTurn

__all__ = [
    "HEAD_MAX_BYTES",
    "HEAD_WITHIN_S",
    "MAX_CONNECTIONS",
    "MAX_PER_PEER",
    "PER_PEER_WORKING",
    "EdgeProtocol",
    "PeerTurns",
    "uvicorn_options",
]

#: Seconds a client has to send a request's head (line and headers).
HEAD_WITHIN_S = 10.0
#: Bytes a request's head may have (uvicorn answers 431/400 beyond).
HEAD_MAX_BYTES = 16 * 1024
#: Connections at once, in all and from one address (a nurse station holds a few: the page's
#: requests and its live events).
MAX_CONNECTIONS = 1000
MAX_PER_PEER = 64
#: Seconds an idle keep-alive connection is kept.
KEEP_ALIVE_S = 5
#: Seconds a stop of the web side waits for its connections to end (uvicorn's
#: `timeout_graceful_shutdown`; none by default: a TLS client that never answers the close, or a
#: live-event stream, held every stop of the web side for as long as it liked: 10 s per
#: HTTPS test's teardown, measured on tests/page/test_page_https.py).
GRACEFUL_S = 2.0

_per_peer: Counter[str] = Counter()
_log = logging.getLogger("pumpctl.web")
#: Seconds between two log lines about refused connections (a flood must not fill the disk).
_REFUSAL_LOG_EVERY_S = 10.0
_refused = {"count": 0, "logged_at": -_REFUSAL_LOG_EVERY_S}


def _refusal(total: int, from_peer: int) -> None:
    """Count a refused connection; one line per `_REFUSAL_LOG_EVERY_S` at most."""
    _refused["count"] += 1
    now = time.monotonic()
    if now - _refused["logged_at"] >= _REFUSAL_LOG_EVERY_S:
        _refused["logged_at"] = now
        _log.warning(
            "connections refused so far: %d (open: %d in all, %d from that address; limits "
            "%d and %d)",
            _refused["count"],
            total,
            from_peer,
            MAX_CONNECTIONS,
            MAX_PER_PEER,
        )


class EdgeProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on a request's head and connection limits."""

    _head_timer: asyncio.TimerHandle | None = None
    _peer: str | None = None
    _refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = self.client[0] if self.client else ""
        if len(self.connections) > MAX_CONNECTIONS or _per_peer[peer] >= MAX_PER_PEER:
            self._refused = True
            _refusal(len(self.connections), _per_peer[peer])
            transport.abort()
            return
        self._peer = peer
        _per_peer[peer] += 1
        self._arm()

    def _awaiting_head(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEAD_WITHIN_S, self._head_late)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._awaiting_head() and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._awaiting_head():
            self._arm()  # (a keep-alive connection's next request: its head is timed too)
        super().data_received(data)
        if not self._awaiting_head():
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._disarm()  # idle now: uvicorn's keep-alive timeout takes over

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._peer is not None:
            _per_peer[self._peer] -= 1
            if _per_peer[self._peer] <= 0:
                del _per_peer[self._peer]
            self._peer = None
        super().connection_lost(exc)


def uvicorn_options() -> dict[str, Any]:
    """The web side's uvicorn options: the bounded protocol and uvicorn's own limits."""
    return {
        "http": EdgeProtocol,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "timeout_graceful_shutdown": GRACEFUL_S,
        "h11_max_incomplete_event_size": HEAD_MAX_BYTES,
        "backlog": 512,
    }


#: Requests one address may have worked on at once by the web side (from its head until its
#: answer starts); more wait their turn. The nurse's stops and `/health` never wait.
PER_PEER_WORKING = 4
#: Seconds a request waits for its address's turn before it is answered 503.
TURN_WAIT_S = 10.0


class PeerTurns:
    """ASGI middleware: at most `PER_PEER_WORKING` requests of one client address worked on at
    once (issue 18). A flood from one address then keeps at most that many requests on the web
    side's event loop, where every other address's requests, the nurse's press among them,
    take their turns: a request waits behind a few, not behind every request of the flood.
    A request's turn ends when its answer starts (a live-event stream holds none while it
    streams). `urgent(path)` names the requests that never wait (the stops, `/health`)."""

    def __init__(
        self,
        app: Any,
        *,
        urgent: Any,
        working: int = PER_PEER_WORKING,
        wait_s: float = TURN_WAIT_S,
    ) -> None:
        self.app = app
        self.urgent = urgent
        self.working = working
        self.wait_s = wait_s
        self._turns = KeyedTurns(working, wait_s)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self.urgent(scope["path"]):
            await self.app(scope, receive, send)
            return
        peer = scope["client"][0] if scope.get("client") else ""
        try:
            async with self._turns.turn(peer) as release:

                async def sent(message: Any) -> None:
                    if message["type"] == "http.response.start":
                        release()
                    await send(message)

                await self.app(scope, receive, sent)
        except NoTurn as refused:
            if refused.turns is not self._turns:  # another limit's, inside the app: not ours
                raise
            await _busy(send, self.working, self.wait_s)


async def _busy(send: Any, working: int, wait_s: float) -> None:
    body = (
        f'{{"detail": "this address has {working} requests at the web side already '
        f'(waited {wait_s:g} s)"}}'
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})

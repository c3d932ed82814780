"""One address's requests take their own turns at the web side (api/edge.py `PeerTurns`, issue
18): at most `working` of them worked on at once, the rest waiting, every other address and
the nurse's stops never behind them; a turn ends when the answer starts (a live-event stream
holds none); a request that waits past its bound is 503. The application is an ASGI function
that holds each request until the test lets it answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from api.edge import PER_PEER_WORKING, PeerTurns


class App:
    """Counts the requests it works on at once; each answers when `go` is set."""

    def __init__(self, *, stream: bool = False) -> None:
        self.working = 0
        self.most = 0
        self.seen: list[str] = []
        self.go = asyncio.Event()
        self.stream = stream

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.working += 1
        self.most = max(self.most, self.working)
        self.seen.append(f"{scope['client'][0]} {scope['path']}")
        try:
            if self.stream:  # the answer starts at once, then it streams until told
                await send({"type": "http.response.start", "status": 200, "headers": []})
                self.working -= 1
                await self.go.wait()
                self.working += 1
            else:
                await self.go.wait()
                await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
        finally:
            self.working -= 1


def scope(peer: str, path: str = "/api/v1/infusions") -> dict[str, Any]:
    return {"type": "http", "path": path, "client": (peer, 40000)}


async def call(middleware: PeerTurns, peer: str, path: str = "/api/v1/infusions") -> list[Any]:
    said: list[Any] = []

    async def send(message: Any) -> None:
        said.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    await middleware(scope(peer, path), receive, send)
    return said


def urgent(path: str) -> bool:
    return path.endswith("/reactions")


async def turns() -> None:
    """Let every task that can run take its turn (a few event-loop turns, no timing)."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_flood_from_one_address_is_worked_on_a_few_at_a_time_and_others_pass() -> None:
    app = App()
    middleware = PeerTurns(app, urgent=urgent)
    flood = [asyncio.create_task(call(middleware, "10.0.0.66")) for _ in range(40)]
    await turns()
    assert app.working == PER_PEER_WORKING  # the others wait their turn, costing nothing
    station = asyncio.create_task(call(middleware, "10.0.0.7"))
    press = asyncio.create_task(call(middleware, "10.0.0.66", "/api/v1/infusions/3/reactions"))
    await turns()
    assert "10.0.0.7 /api/v1/infusions" in app.seen  # another address: not behind the flood
    assert "10.0.0.66 /api/v1/infusions/3/reactions" in app.seen  # a stop: never waits
    app.go.set()
    answers = await asyncio.gather(*flood, station, press)
    assert all(a[0]["status"] == 200 for a in answers)
    assert app.most == PER_PEER_WORKING + 2
    assert len(middleware._turns) == 0  # nothing kept for an address that left


async def test_a_turn_ends_when_the_answer_starts() -> None:
    """Live-event streams: their answers start at once and stream on; they hold no turn, so
    an address with more streams than turns still gets its other requests worked on."""
    app = App(stream=True)
    middleware = PeerTurns(app, urgent=urgent, working=2)
    streams = [
        asyncio.create_task(call(middleware, "10.0.0.7", "/api/v1/events")) for _ in range(5)
    ]
    await turns()
    assert app.seen.count("10.0.0.7 /api/v1/events") == 5
    app.go.set()
    await asyncio.gather(*streams)


async def test_a_request_that_waits_past_its_bound_is_503_with_retry_after() -> None:
    app = App()
    middleware = PeerTurns(app, urgent=urgent, working=1, wait_s=0.05)
    first = asyncio.create_task(call(middleware, "10.0.0.66"))
    await turns()
    said = await call(middleware, "10.0.0.66")  # waits the bound (50 ms), then is answered
    assert said[0]["status"] == 503
    assert (b"retry-after", b"1") in said[0]["headers"]
    assert "1 requests at the web side already" in json.loads(said[1]["body"])["detail"]
    assert app.seen == ["10.0.0.66 /api/v1/infusions"]  # it never reached the application
    app.go.set()
    assert (await first)[0]["status"] == 200

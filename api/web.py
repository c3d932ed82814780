"""The web side: the service's only network listener, in a process of its own (issue 18).

The kernel (`api.app.create_app`, opened by `api.gateway.open_kernel`) supervises the pumps and
serves its API on a Unix socket only. This process faces the network: the nurse station page,
`/docs` (Swagger UI from the package, nothing from the internet), the live events fanned out
from memory, and every other `/api/v1` request passed to the kernel over its socket. A crash
or a memory blow-up here never reaches the kernel; what crosses to it is bounded (two lanes of
8 and 16 connections, 2 requests at a time per address besides the stops), and a flood of
authorised reads is answered here (api/readcache.py: one copy of a shareable answer until
something changes, a budget per caller for the rest; architecture.md, "Reads never reach the
kernel in a flood").

- A request whose `Host` is not one of the settings' `trusted_hosts()` is answered 400 here
  (Starlette's TrustedHostMiddleware), before anything else.
- A request that needs a token and carries none that is valid is answered 401 here, before its
  body is read (`/metrics` needs the admin's); a body is read up to `MAX_BODY` bytes (413
  beyond). The access log names no request input (api/accesslog.py).
  Invalid tokens are counted per address: past a few, 429 without the kernel (`Identities`).
- Reads (GET) from memory where the kernel marked the answer shareable, else within the
  caller's budget (429 beyond): `api.readcache`.
- Two lanes to the kernel, each a bounded pool of connections: the nurse's stops (a reaction, a
  stop for good) and `/health` on one, everything else on the other, so reads never queue in
  front of a stop. A kernel that does not answer is 503 naming it.
- One subscription to the kernel's events (`/kernel/v1/events`), fanned out to every client
  from memory (`KernelFeed`, a `FanOut`): bounded buffers, send timeouts, limits per token and
  in all, replay after `Last-Event-ID` from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sse_starlette.sse import EventSourceResponse
from starlette.middleware.trustedhost import TrustedHostMiddleware

from api.accesslog import quiet_access_log, route_words
from api.auth import CLINICAL, User
from api.edge import PeerTurns
from api.fanout import PING_S, SEND_TIMEOUT_S, FanOut, TooManyStreams, event_stream_id
from api.guard import API, CLIENT_HEADER, MAX_BODY, bearer, needs_token, too_large, unauthorized
from api.page import STATIC_DIR, mount_page
from api.readcache import SHARED_HEADER, Answer, OverBudget, ReadBudget, SharedReads
from api.throttle import WINDOW_S, BadTokens, retry_after
from api.turns import KeyedTurns, NoTurn
from pumpctl.credentials import token_digest
from pumpctl.rowid import MAX_ROW_ID
from pumpctl.settings import Role, Settings

__all__ = ["MAX_BODY", "KernelFeed", "create_web_app"]

_log = logging.getLogger("pumpctl.web")

#: Connections to the kernel, per lane.
URGENT_CONNECTIONS = 8
OTHER_CONNECTIONS = 16
#: Seconds a request waits for a free connection to the kernel before it is 503.
POOL_WAIT_S = 5.0
#: Requests one address may have at the kernel at once in the other lane (a flood from one
#: client takes at most these; the rest wait, bounded, for their turn).
PER_PEER_REQUESTS = 2
#: Seconds the kernel may take to answer (a virtual clock's `/sim/advance` is the longest).
KERNEL_ANSWER_S = 120.0
#: Seconds past the reaction's own answer bound (`stop_answer_s`) the web side waits for a
#: stop or /health in the urgent lane before it answers 504 itself: a hung kernel never holds
#: the nurse's press for longer (the stop, once it reached the kernel, goes on there).
URGENT_MARGIN_S = 5.0
#: Seconds a request's body may take to arrive once its head has (a trickled body is a held
#: connection that costs its sender nothing).
BODY_WITHIN_S = 10.0
#: Seconds between two tries of a kernel that does not answer, for the events' feed.
RETRY_S = 0.5
#: Seconds the kernel's yes about a token is kept, and how many are kept at most (a token
#: revoked or signed out elsewhere is refused here within this, on top of the kernel's 2 s).
IDENTITY_KEEP_S = 2.0
IDENTITY_KEPT = 1024
#: The nurse's stops: never behind a read.
_URGENT = re.compile(r"^/api/v1/(infusions/\d+/(reactions|stop)|health)$")
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "date",  # the web side's server says its own
    "server",
}
_DOCS_ASSETS = "/docs-static"


class KernelUnreachable(Exception):  # noqa: N818 - a state of the kernel, answered 503
    """The kernel's socket does not answer."""


class KernelSilent(KernelUnreachable):
    """The kernel took the request and did not answer within the lane's bound (504)."""


class Kernel:
    """The kernel's API over its Unix socket, in two bounded lanes; in the other lane at most
    `PER_PEER_REQUESTS` at once per address."""

    def __init__(self, socket: Path, *, urgent_answer_s: float = KERNEL_ANSWER_S) -> None:
        self.socket = socket
        self._peers = KeyedTurns(PER_PEER_REQUESTS, POOL_WAIT_S)

        def client(connections: int, read_s: float | None) -> httpx.AsyncClient:
            # the limits go to the transport: a client given a transport ignores its own
            limits = httpx.Limits(
                max_connections=connections, max_keepalive_connections=connections
            )
            return httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(socket), limits=limits),
                base_url="http://kernel",
                timeout=httpx.Timeout(read_s, connect=2.0, pool=POOL_WAIT_S),
            )

        self.urgent = client(URGENT_CONNECTIONS, urgent_answer_s)
        self.other = client(OTHER_CONNECTIONS, KERNEL_ANSWER_S)
        self.feed = client(1, None)  # the events' stream: open as long as both live

    async def aclose(self) -> None:
        for c in (self.urgent, self.other, self.feed):
            await c.aclose()

    async def send(
        self,
        method: str,
        path: str,
        *,
        query: str,
        headers: dict[str, str],
        body: bytes,
        peer: str = "",
    ) -> httpx.Response:
        """One request to the kernel, in its lane; `KernelUnreachable` when it cannot be."""
        url = f"{path}?{query}" if query else path
        if _URGENT.match(path):
            return await self._send(self.urgent, method, url, headers, body)
        try:
            async with self._peers.turn(peer):
                return await self._send(self.other, method, url, headers, body)
        except NoTurn:
            raise KernelUnreachable(
                f"this address has {PER_PEER_REQUESTS} requests at the kernel already "
                f"(waited {POOL_WAIT_S:g} s)"
            ) from None

    async def ask(
        self, lane: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> httpx.Response:
        """One request in `lane`, outside the per-address turns (a question of the web side's
        own, answered from the kernel's memory); `KernelUnreachable` when it cannot be."""
        return await self._send(lane, method, url, headers, body)

    async def _send(
        self,
        lane: httpx.AsyncClient,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
    ) -> httpx.Response:
        try:
            return await lane.request(method, url, headers=headers, content=body)
        except httpx.PoolTimeout:
            raise KernelUnreachable(
                f"every connection to the kernel is busy (waited {POOL_WAIT_S:g} s)"
            ) from None
        except httpx.ReadTimeout:
            raise KernelSilent(
                "the kernel did not answer in time; a stop that reached it goes on there: "
                "check the pump"
            ) from None
        except httpx.TransportError as error:
            said = type(error).__name__
            raise KernelUnreachable(f"the kernel does not answer ({said})") from None


class TokensThrottled(Exception):  # noqa: N818 - a refusal, answered 429
    """Too many invalid bearer tokens from the address: `wait_s` to wait."""

    def __init__(self, wait_s: float) -> None:
        super().__init__(f"too many invalid tokens from this address: try again in {wait_s:.0f} s")
        self.wait_s = wait_s


class Identities:
    """Who a token not of the configuration is, asked of the kernel (`/kernel/v1/identity`,
    in the request's lane); a yes kept `IDENTITY_KEEP_S` (at most `IDENTITY_KEPT`, by the
    token's SHA-256), a no never kept.

    Invalid tokens are counted per client address (`failures`, api/throttle.py's `BadTokens`:
    the sign-ins' policy). A token the kernel has said good (within `GOOD_REMEMBERED_S`) is
    always asked; any other, from an address past its free failures, is `TokensThrottled`
    without asking the kernel, and from any address only one such token is asked at a time
    (the others wait their turn, at most `POOL_WAIT_S`, then see the count it left)."""

    def __init__(self, kernel: Kernel, *, failures: BadTokens | None = None) -> None:
        self.kernel = kernel
        self.failures = failures or BadTokens()
        self._kept: OrderedDict[str, tuple[float, User]] = OrderedDict()
        self._turns = KeyedTurns(1, POOL_WAIT_S)  # one token never seen good at a time

    async def of(self, token: str, *, urgent: bool, address: str = "") -> User | None:
        """The token's user, or None; `TokensThrottled` for a token never seen good from an
        address that sent too many invalid ones; `KernelUnreachable` when the kernel does not
        answer."""
        digest = token_digest(token)
        kept = self._kept_user(digest)
        if kept is not None:
            return kept
        if self.failures.seen_good(digest):  # not a guess: never held back by its address
            return await self._ask(token, digest, urgent=urgent, address=address)
        self._hold(address)
        try:
            async with self._turns.turn(address):
                self._hold(address)  # the tokens asked before it may have failed
                kept = self._kept_user(digest)  # or one of them was this token, and good
                if kept is not None:
                    return kept
                return await self._ask(token, digest, urgent=urgent, address=address)
        except NoTurn:
            raise KernelUnreachable(
                f"the kernel has not answered this address's tokens (waited {POOL_WAIT_S:g} s)"
            ) from None

    def _kept_user(self, digest: str) -> User | None:
        kept = self._kept.get(digest)
        if kept is not None and time.monotonic() < kept[0]:
            return kept[1]
        self._kept.pop(digest, None)
        return None

    def _hold(self, address: str) -> None:
        wait_s = self.failures.wait_s(address)
        if wait_s > 0:
            raise TokensThrottled(wait_s)

    async def _ask(self, token: str, digest: str, *, urgent: bool, address: str) -> User | None:
        now = time.monotonic()
        lane = self.kernel.urgent if urgent else self.kernel.other
        answer = await self.kernel.ask(
            lane, "GET", "/kernel/v1/identity", {"authorization": f"Bearer {token}"}, b""
        )
        if answer.status_code != 200:
            counted = answer.status_code == 401 and self.failures.refused(digest, address)
            if counted and self.failures.locked(address):
                _log.warning(
                    "tokens: address %s locked for %.0f min after repeated invalid tokens",
                    address,
                    WINDOW_S / 60,
                )
            return None
        said = answer.json()
        user = User(str(said["name"]), Role(said["role"]))
        self.failures.good(digest)
        self._kept[digest] = (now + IDENTITY_KEEP_S, user)
        while len(self._kept) > IDENTITY_KEPT:
            self._kept.popitem(last=False)
        return user

    def forget(self, token: str) -> None:
        """A token signed out through here: refused from the next request on."""
        digest = token_digest(token)
        self._kept.pop(digest, None)
        self.failures.forget(digest)


class KernelFeed(FanOut):
    """The web side's live events: one stream from the kernel, fanned out from memory."""

    def __init__(self, kernel: Kernel, *, replay: int, shared: SharedReads) -> None:
        super().__init__(replay=replay)
        self.kernel = kernel
        self.shared = shared  # told of every change the kernel's events carry
        self.connected = asyncio.Event()
        self.connections = 0  # streams opened to the kernel (the tests count them)

    async def run(self) -> None:
        """Until cancelled: read the kernel's events, and connect again when they stop."""
        primed = False
        try:
            while True:
                headers = {} if not primed else {"Last-Event-ID": str(self.cursor)}
                params = {} if primed else {"everything": "true"}
                try:
                    async with self.kernel.feed.stream(
                        "GET", "/kernel/v1/events", params=params, headers=headers
                    ) as answer:
                        if answer.status_code == 200:
                            self.connections += 1
                            self.connected.set()
                            self.shared.feed(live=True)
                            primed = True
                            await self._read(answer)
                        else:
                            _log.warning("live events: the kernel answered %s", answer.status_code)
                except httpx.TransportError as error:
                    _log.warning("live events: the kernel's stream: %s", error)
                finally:
                    self.shared.feed(live=False)
                self.connected.clear()
                await asyncio.sleep(RETRY_S)
        finally:
            self.end_all()

    async def _read(self, answer: httpx.Response) -> None:
        fields: dict[str, str] = {}
        async for line in answer.aiter_lines():
            if not line:
                if "data" in fields:
                    self._take(fields)
                fields = {}
                continue
            if line.startswith(":"):
                continue  # a ping
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value

    def _take(self, fields: dict[str, str]) -> None:
        event = {"event": fields.get("event", "message"), "id": fields.get("id", "")}
        event["data"] = fields["data"]
        head = event["id"]
        if head.isdigit():  # an audit row: kept for replay, never twice
            audit_id = int(head)
            if audit_id > self.cursor or not self._ring:
                self.shared.changed()  # before any client hears of it
                self.publish(event, audit_id=audit_id)
            return
        if event["event"] == "resync":
            self.shared.changed()
            self.publish(event)
            return
        key = event["event"]
        if key == "store_status":
            self.shared.changed()
        if key == "pump_status":
            with contextlib.suppress(ValueError, KeyError, TypeError):
                key = f"pump {json.loads(event['data'])['id']}"
        self.status(key, event)


def _kernel_down(error: Exception) -> JSONResponse:
    if isinstance(error, KernelSilent):
        return JSONResponse({"detail": {"kernel": "silent", "message": str(error)}}, 504)
    return JSONResponse({"detail": {"kernel": "unreachable", "message": str(error)}}, 503)


async def _body(request: Request) -> bytes | Response:
    """The request's body, read up to `MAX_BODY` bytes; a 413 answer beyond."""
    declared = request.headers.get("content-length")
    if declared is not None and (
        not (declared.isascii() and declared.isdigit()) or int(declared) > MAX_BODY
    ):
        return too_large()
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_WITHIN_S):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY:
                    return too_large()
                chunks.append(chunk)
    except TimeoutError:
        return JSONResponse(
            {"detail": f"the body did not arrive within {BODY_WITHIN_S:g} s"},
            408,
            headers={"Connection": "close"},
        )
    return b"".join(chunks)


def create_web_app(settings: Settings, socket: Path) -> FastAPI:
    """The web side for `settings`, passing the API to the kernel on `socket`."""
    kernel = Kernel(socket, urgent_answer_s=settings.stop_answer_s + URGENT_MARGIN_S)
    shared = SharedReads()
    budget = ReadBudget(per_s=settings.read_budget_per_s)
    feed = KernelFeed(kernel, replay=settings.events_replay, shared=shared)
    schema: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(feed.run(), name="kernel events")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await kernel.aclose()

    app = FastAPI(
        title="pumpctl",
        lifespan=lifespan,
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.kernel = kernel
    app.state.feed = feed
    identities = Identities(kernel)
    # a Host not ours is 400 before anything else (DNS rebinding: docs/security.md, "Input")
    app.add_middleware(
        TrustedHostMiddleware, allowed_hosts=settings.trusted_hosts(), www_redirect=False
    )
    # outermost: one address's flood waits its own turns (api/edge.py), the stops never
    app.add_middleware(PeerTurns, urgent=lambda path: bool(_URGENT.match(path)))
    quiet_access_log(route_words(STATIC_DIR, _swagger_assets()))

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi() -> Response:
        if not schema:
            try:
                answer = await kernel.send("GET", "/openapi.json", query="", headers={}, body=b"")
            except KernelUnreachable as error:
                return _kernel_down(error)
            schema.update(answer.json())
        return JSONResponse(schema)

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="pumpctl API",
            swagger_js_url=f"{_DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{_DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{_DOCS_ASSETS}/favicon-32x32.png",
        )

    app.mount(_DOCS_ASSETS, StaticFiles(directory=_swagger_assets()), name="docs-static")

    @app.get(f"{API}/events", include_in_schema=False)
    async def events(request: Request) -> Response:
        user = await _user(settings, identities, request)
        if isinstance(user, Response):
            return user
        name, role = user
        if role not in {r.value for r in CLINICAL}:
            return JSONResponse({"detail": f"role {role} may not read the live events"}, 403)
        last = event_stream_id(request.headers.get("last-event-id"), MAX_ROW_ID)
        try:
            stream = feed.stream(name, last)
        except TooManyStreams as exc:
            return JSONResponse({"detail": str(exc)}, 503, headers={"Retry-After": "10"})
        return EventSourceResponse(stream, ping=PING_S, send_timeout=SEND_TIMEOUT_S)

    @app.api_route(
        f"{API}/{{path:path}}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        include_in_schema=False,
    )
    async def passed(request: Request, path: str) -> Response:
        full = f"{API}/{path}"
        if not _plain(request.url.path):  # never a way out of /api/v1 (to /kernel/v1/...)
            return JSONResponse({"detail": "Not Found"}, 404)
        return await _route(
            request,
            full,
            settings=settings,
            kernel=kernel,
            identities=identities,
            reads=(shared, budget),
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        user = await _user(settings, identities, request)  # the admin's (the roles table)
        if isinstance(user, Response):
            return user
        if user[1] != Role.ADMIN.value:
            return JSONResponse({"detail": f"role {user[1]} may not do this (admin)"}, 403)
        return await _pass(kernel, request, "/metrics")

    mount_page(app)
    return app


async def _route(
    request: Request,
    full: str,
    *,
    settings: Settings,
    kernel: Kernel,
    identities: Identities,
    reads: tuple[SharedReads, ReadBudget],
) -> Response:
    """An `/api/v1` request other than the live events: 401 before its body is read when it
    needs a token and has none valid; a read from memory or within its caller's budget
    (`_read`); anything else passed to the kernel, and counted as a change once answered."""
    shared, budget = reads
    urgent = bool(_URGENT.match(full))
    user: tuple[str, str] | None = None
    if needs_token(full):
        found = await _user(settings, identities, request, urgent=urgent)
        if isinstance(found, Response):
            return found  # 401 before the body is read
        user = found
    if request.method == "GET" and user is not None and not urgent:
        return await _read(kernel, request, full, user, shared=shared, budget=budget)
    answer = await _pass(kernel, request, full, identities)
    if request.method != "GET" and not 400 <= answer.status_code < 500:
        shared.changed()  # what it changed shows in the next read (a refusal changed nothing)
    return answer


def _plain(raw_path: str) -> bool:
    """A path with no dot segment (`.` or `..`, also percent-encoded) and no empty one: the
    kernel and httpx would resolve those, and `/api/v1/../../kernel/v1/events` would reach
    the kernel's own routes (socket only) from the network."""
    segments = unquote(raw_path).split("/")[1:]
    return all(s not in {"", ".", ".."} for s in segments)


async def _user(
    settings: Settings, identities: Identities, request: Request, *, urgent: bool = False
) -> tuple[str, str] | Response:
    """(name, role) of the request's bearer token, or its answer (401; 429 with `Retry-After`
    for a token never seen good from an address that sent too many invalid ones; 503 while the
    kernel, asked about a token not of the configuration, does not answer): `identify`."""
    address = request.client.host if request.client else ""
    authorization = request.headers.get("authorization")
    try:
        user = await identify(settings, identities, authorization, urgent, address)
    except TokensThrottled as refusal:
        wait = retry_after(refusal.wait_s)
        return JSONResponse(
            {"detail": f"too many invalid tokens from this address: try again in {wait} s"},
            429,
            headers={"Retry-After": wait},
        )
    except KernelUnreachable as error:
        return _kernel_down(error)
    if isinstance(user, str):
        return unauthorized(user)
    return user.name, user.role.value


async def identify(
    settings: Settings,
    identities: Identities,
    authorization: str | None,
    urgent: bool,
    address: str = "",
) -> User | str:
    """The web side's one function from a request's `Authorization` to a user (or the words
    of its 401): a configured token here, in constant time (`api.guard.bearer`), never
    throttled; any other bearer token asked of the kernel (`Identities`, which counts the
    invalid ones per `address` and holds back a flood of them: `TokensThrottled`)."""
    user = bearer(settings.api_tokens, authorization)
    scheme, _, token = (authorization or "").partition(" ")
    if not isinstance(user, str) or scheme.lower() != "bearer" or not token.strip():
        return user  # a configured token's user, or no bearer token at all
    found = await identities.of(token.strip(), urgent=urgent, address=address)
    return user if found is None else found


def _headers(request: Request) -> dict[str, str]:
    """The headers a request carries to the kernel: hop-by-hop ones left out, and the client's
    address for the kernel's sign-in throttle (a client's own word replaced)."""
    headers = {
        k: v
        for k, v in request.headers.items()
        if k.lower() not in _HOP and k.lower() != CLIENT_HEADER
    }
    headers[CLIENT_HEADER] = _peer(request)
    return headers


def _peer(request: Request) -> str:
    return request.client.host if request.client else ""


async def _ask(
    kernel: Kernel, request: Request, path: str, headers: dict[str, str], body: bytes
) -> Answer:
    """One request to the kernel and its answer (hop-by-hop headers left out);
    `KernelUnreachable` when it cannot be."""
    answer = await kernel.send(
        request.method,
        path,
        query=request.url.query,
        headers=headers,
        body=body,
        peer=_peer(request),
    )
    kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
    kept.pop("content-encoding", None)  # httpx decoded it
    return Answer(answer.status_code, kept, answer.content)


def _response(answer: Answer) -> Response:
    return Response(answer.body, answer.status, headers=answer.headers)


async def _pass(
    kernel: Kernel, request: Request, path: str, identities: Identities | None = None
) -> Response:
    """`request` to the kernel, and its answer back."""
    body = await _body(request)
    if isinstance(body, Response):
        return body
    try:
        answer = await _ask(kernel, request, path, _headers(request), body)
    except KernelUnreachable as error:
        return _kernel_down(error)
    if identities is not None and path == f"{API}/session" and answer.status == 204:
        # signed out through here: the session's token refused from the next request on
        identities.forget(request.headers.get("authorization", "").partition(" ")[2].strip())
    return _response(answer)


async def _read(
    kernel: Kernel,
    request: Request,
    path: str,
    user: tuple[str, str],
    *,
    shared: SharedReads,
    budget: ReadBudget,
) -> Response:
    """A GET of a caller with a role (`user`: name, role): an answer the kernel marked
    shareable from memory (`SharedReads`), anything else passed to the kernel within the
    caller's budget (`ReadBudget`: 429 with Retry-After beyond it)."""
    body = await _body(request)
    if isinstance(body, Response):
        return body
    headers = _headers(request)
    name, role = user

    async def ask() -> tuple[Answer, float]:
        answer = await _ask(kernel, request, path, headers, body)
        said = answer.headers.pop(SHARED_HEADER, None)
        keep_s = _seconds(said) if answer.status == 200 and not body else 0.0
        return answer, keep_s

    try:
        answer = await shared.get(
            (role, path, request.url.query), ask, lambda: budget.spend(name, _peer(request))
        )
    except OverBudget as over:
        return JSONResponse(
            {"detail": str(over)}, 429, headers={"Retry-After": str(over.retry_after_s)}
        )
    except KernelUnreachable as error:
        return _kernel_down(error)
    return _response(answer)


def _seconds(said: str | None) -> float:
    """The kernel's keep (`SHARED_HEADER`) in seconds; 0 when absent or not a number."""
    try:
        keep_s = float(said) if said is not None else 0.0
    except ValueError:
        return 0.0
    return keep_s if math.isfinite(keep_s) and keep_s > 0 else 0.0


def _swagger_assets() -> Path:
    """Swagger UI's files, shipped by the swagger-ui-bundle package (no CDN: the gateway has no
    internet, and the page where a token is typed loads nothing from elsewhere)."""
    import swagger_ui_bundle  # type: ignore[import-untyped]  # noqa: PLC0415 - web side only

    return Path(swagger_ui_bundle.swagger_ui_path)

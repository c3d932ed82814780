"""Identity before input (docs/security.md, "Input"): who asks is known before what they send
is read, and what they send is bounded.

FastAPI reads and parses a route's body before it runs the route's dependencies, the token's
among them: a 50 MB body was read and parsed before its 401 (issue 20). `IdentityFirst`, an
ASGI middleware in front of the kernel's app, answers 401 to a request that needs a token and
carries none valid, and 413 to a body of more than `MAX_BODY` bytes, before a byte of the body
is read. The web side (api/web.py) does the same with the same words before it passes a request
on; the roles (403) stay with the routes' dependencies (api/deps.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import Directory, User, identify
from pumpctl.settings import TokenEntry

__all__ = [
    "API",
    "CLIENT_HEADER",
    "MAX_BODY",
    "PUBLIC",
    "IdentityFirst",
    "bearer",
    "needs_token",
    "too_large",
    "unauthorized",
]

#: Bytes a request body may have (the largest the API takes is a history entry: a few KiB).
MAX_BODY = 64 * 1024
API = "/api/v1"
#: The paths under `API` that need no token.
PUBLIC = frozenset({f"{API}/health", f"{API}/session"})  # session: POST, the sign-in
#: The header in which the web side names the client's address (its own peer), replacing any
#: the client sent; trusted only on the kernel's socket.
CLIENT_HEADER = "x-pumpctl-client"
#: Paths outside `API` that need one (the admin's: api/routes' roles stay with the routes).
_GUARDED = frozenset({"/metrics"})


def needs_token(path: str) -> bool:
    """Whether a request for `path` must carry a valid bearer token."""
    return path in _GUARDED or (path.startswith(f"{API}/") and path not in PUBLIC)


def bearer(
    tokens: Mapping[str, TokenEntry],
    authorization: str | None,
    directory: Directory | None = None,
) -> User | str:
    """The user of an `Authorization: Bearer` header (`api.auth.identify`: the configured
    tokens, then the accounts' in `directory`), or the words of its 401."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return "a bearer token is required"
    user = identify(tokens, directory, token.strip())
    return "the token is not valid" if user is None else user


def unauthorized(message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, 401, headers={"WWW-Authenticate": "Bearer"})


def too_large() -> JSONResponse:
    return JSONResponse({"detail": f"the body may have at most {MAX_BODY} bytes"}, 413)


def _declared_too_large(declared: str | None) -> bool:
    """A `Content-Length` that is not a plain decimal number, or is above `MAX_BODY`."""
    if declared is None:
        return False
    return not (declared.isascii() and declared.isdigit()) or int(declared) > MAX_BODY


class IdentityFirst:
    """401 before the body is read; 413 past `MAX_BODY` (declared, or as it arrives)."""

    def __init__(self, app: ASGIApp, tokens: Mapping[str, TokenEntry]) -> None:
        self.app = app
        self.tokens = tokens

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if needs_token(scope["path"]):
            accounts = getattr(scope["app"].state, "accounts", None) if "app" in scope else None
            user = bearer(self.tokens, headers.get("authorization"), accounts)
            if isinstance(user, str):
                await unauthorized(user)(scope, receive, send)
                return
        declared = headers.get("content-length")
        if _declared_too_large(declared):
            await too_large()(scope, receive, send)
            return
        if declared is not None:  # the server holds the body to its length
            await self.app(scope, receive, send)
            return
        # no length declared (chunked): read it, bounded, before the app sees any of it
        held: list[Message] = []
        size = 0
        while True:
            message = await receive()
            held.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > MAX_BODY:
                await too_large()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return held.pop(0) if held else await receive()

        await self.app(scope, replay, send)

"""Sign-in and sign-out (interfaces.md, section 3: `POST /session`, `DELETE /session`), and
the kernel's identity check for the web side (`GET /kernel/v1/identity`, its socket only).

Nothing of a sign-in reaches a log line: not the name typed, not the password (the throttle
logs a lock by the account's id, api/accounts.py). The audit names the account of a sign-in,
a sign-out, a refusal after its check and a lock-out, never a name that is no account
(`AccountTrail`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, StringConstraints

from api.accounts import AccountDirectory, Busy, Throttled
from api.deps import bearer_token, current_user, identify
from api.errors import responses
from api.guard import CLIENT_HEADER
from api.metrics import ServiceMetrics
from api.throttle import retry_after
from pumpctl.credentials import MAX_PASSWORD_CHARS

__all__ = ["internal", "router"]

router = APIRouter()
internal = APIRouter(prefix="/kernel/v1")
_REFUSED = "the name or the password is not right"


class SignInIn(BaseModel):
    """A person's account name (any case) and password."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=MAX_PASSWORD_CHARS)]


class SessionOut(BaseModel):
    """A new session: its bearer token (given once), whose it is, and when it ends (UTC)."""

    token: str
    name: str
    role: str
    expires_at: datetime


def _directory(request: Request) -> AccountDirectory:
    directory: AccountDirectory = request.app.state.accounts
    return directory


def _address(request: Request) -> str:
    """The client's address: the web side's word for it on the kernel's socket (uvicorn gives
    no peer there), else the peer's own."""
    if request.client is None:
        return request.headers.get(CLIENT_HEADER, "").strip()[:64] or "local"
    return request.client.host


@router.post(
    "/session",
    status_code=status.HTTP_201_CREATED,
    responses={
        **responses(401),
        429: {"description": "too many failed sign-ins: Retry-After says when to try again"},
        503: {"description": "too many sign-ins wait for their check: Retry-After 1"},
    },
)
async def sign_in(request: Request, body: SignInIn) -> SessionOut:
    """Sign-in, no token: a session for an account's name and password (throttled per name
    and per address; the password checked off the loop)."""
    try:
        signed = await _directory(request).sign_in(body.name, body.password, _address(request))
    except Throttled as refusal:
        wait = retry_after(refusal.wait_s)
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"too many failed sign-ins: try again in {wait} s",
            headers={"Retry-After": wait},
        ) from None
    except Busy:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "too many sign-ins wait for their check: try again in 1 s",
            headers={"Retry-After": "1"},
        ) from None
    if signed is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, _REFUSED, headers={"WWW-Authenticate": "Bearer"}
        )
    return SessionOut(
        token=signed.token,
        name=signed.user.name,
        role=signed.user.role.value,
        expires_at=signed.expires_at,
    )


@router.delete(
    "/session",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={**responses(401), 400: {"description": "the token is not a session's"}},
    dependencies=[Depends(current_user)],
)
async def sign_out(request: Request) -> Response:
    """Sign-out: the session whose token the request carries ends."""
    token = bearer_token(request)
    assert token is not None  # current_user admitted it
    if not _directory(request).sign_out(token, _address(request)):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            "this token is not a session's: a machine's token is revoked with "
            "`pumpctl user revoke`",
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@internal.get("/identity", include_in_schema=False)
async def kernel_identity(request: Request) -> JSONResponse:
    """Who the request's bearer token is, for the web side's check before a body is read; on
    the kernel's Unix socket only (404 to any other client)."""
    if request.client is not None:  # uvicorn gives no peer address on a Unix socket
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")
    user = identify(request)
    metrics: ServiceMetrics | None = getattr(request.app.state, "metrics", None)
    if metrics is not None:  # (built once the kernel has opened)
        metrics.identity_checks.labels(answer="no" if user is None else "yes").inc()
    if user is None:
        return JSONResponse({"detail": "the token is not valid"}, 401)
    return JSONResponse({"name": user.name, "role": user.role.value})

"""Live events (`GET /api/v1/events`): one SSE event per audit row and per pump status change,
with replay after `Last-Event-ID` (interfaces.md, section 3). The events come from memory
(api/live.py: one reader of the store for every client); sse-starlette does the framing, the
pings, the send timeout and the client's disconnect."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request, status
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from api.auth import CLINICAL, User
from api.deps import require
from api.errors import responses
from api.fanout import PING_S, SEND_TIMEOUT_S, TooManyStreams, event_stream_id
from api.live import LiveHub
from pumpctl.rowid import MAX_ROW_ID

router = APIRouter(tags=["events"], responses=responses(401, 403))
#: The kernel's own routes for the web side (`/kernel/v1`, never in the public schema).
internal = APIRouter(prefix="/kernel/v1")
Reader = Annotated[User, Depends(require(CLINICAL))]


@router.get(
    "/events",
    response_class=EventSourceResponse,
    responses={503: {"description": "too many live-event streams"}},
)
async def events(
    request: Request,
    user: Reader,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> Any:
    """Server-Sent Events: audit rows and pump status changes; replay after Last-Event-ID
    (from the service's memory: one reader of the store for every client)."""
    hub: LiveHub = request.app.state.live
    try:
        events = hub.stream(user.name, event_stream_id(last_event_id, MAX_ROW_ID))
    except TooManyStreams as exc:
        return JSONResponse({"detail": str(exc)}, 503, headers={"Retry-After": "10"})
    return EventSourceResponse(events, ping=PING_S, send_timeout=SEND_TIMEOUT_S)


@internal.get("/events", include_in_schema=False)
async def kernel_events(
    request: Request,
    everything: bool = False,
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> Any:
    """The kernel's live events for the web side (its one reader), on the kernel's Unix socket
    only: no token (the socket's permissions admit only the service's own users); 404 to any
    client that is not on a Unix socket. `everything`: every event the kernel holds first."""
    if request.client is not None:  # uvicorn gives no peer address on a Unix socket
        raise HTTPException(status.HTTP_404_NOT_FOUND, "Not Found")
    hub: LiveHub = request.app.state.live
    last = event_stream_id(last_event_id, MAX_ROW_ID)
    events = hub.stream("web side", last, everything=everything, limited=False)
    return EventSourceResponse(events, ping=PING_S)

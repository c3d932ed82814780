"""Live events (`GET /api/v1/events`): one SSE event per audit row and per pump status change,
with replay after `Last-Event-ID` (interfaces.md, section 3). sse-starlette does the framing,
the pings and the client's disconnect."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from sse_starlette.sse import EventSourceResponse

from api.auth import CLINICAL, User
from api.deps import WardDep, get_settings, require
from api.errors import responses
from api.views import audit_view, pump_view
from pumpctl.controller.ward import Ward
from pumpctl.settings import Settings
from pumpctl.store import MAX_ROW_ID

router = APIRouter(tags=["events"], responses=responses(401, 403))
Reader = Annotated[User, Depends(require(CLINICAL))]

#: Wall seconds between two looks at the pumps' cached statuses (a status event at most this
#: often per pump while nothing else changes).
STATUS_EVERY_S = 1.0
#: Seconds between two SSE pings while nothing else is sent: well inside the page's 10 s
#: staleness warning, so a quiet room does not look stale, and the page's 12 s silence bound
#: (2.4 pings, api/static/page.js) tells a dead connection from a quiet one.
PING_S = 5
_PAGE = 500


def _last_id(header: str | None) -> int | None:
    if header is None:
        return None
    head = header.strip().split(".", 1)[0]
    # an id past the store's largest names no event yet: replay from the newest one there is
    return min(int(head), MAX_ROW_ID) if head.isdigit() else None


async def stream(ward: Ward, last_id: int | None, replay: int) -> AsyncIterator[dict[str, Any]]:
    """The events after `last_id` (None: from now on), then live ones, until cancelled."""
    changed = asyncio.Event()
    ward.listeners.append(changed.set)
    try:
        newest = ward.store.latest_audit_id()
        cursor = newest if last_id is None else last_id
        if last_id is not None and newest - last_id > replay:
            yield {"event": "resync", "id": str(newest), "data": json.dumps({"last_id": newest})}
            cursor = newest
        seen: dict[str, tuple[object, ...]] = {}
        sent_at: dict[str, float] = {}
        loop = asyncio.get_running_loop()
        suffix = 0
        while True:
            changed.clear()
            while True:
                rows = ward.store.audit_since(cursor, limit=_PAGE)
                for row in rows:
                    cursor = row.id or cursor
                    yield {
                        "event": row.type,
                        "id": str(row.id),
                        "data": json.dumps(audit_view(row), default=str),
                    }
                if len(rows) < _PAGE:
                    break
            for supervisor in ward.supervisors.values():
                view = pump_view(ward, supervisor)
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
                major = seen.get(pid, (None,))[:5] != key[:5]
                if seen.get(pid) != key and (major or now - sent_at.get(pid, 0) >= STATUS_EVERY_S):
                    seen[pid], sent_at[pid] = key, now
                    suffix += 1
                    yield {
                        "event": "pump_status",
                        "id": f"{cursor}.{suffix}",
                        "data": json.dumps(view),
                    }
            try:
                async with asyncio.timeout(STATUS_EVERY_S / 4):
                    await changed.wait()
            except TimeoutError:
                pass
    finally:
        ward.listeners.remove(changed.set)


@router.get("/events", response_class=EventSourceResponse)
async def events(
    request: Request,
    user: Reader,
    ward: WardDep,
    settings: Annotated[Settings, Depends(get_settings)],
    last_event_id: Annotated[str | None, Header(max_length=64)] = None,
) -> EventSourceResponse:
    """Server-Sent Events: audit rows and pump status changes; replay after Last-Event-ID."""
    del request, user
    return EventSourceResponse(
        stream(ward, _last_id(last_event_id), settings.events_replay), ping=PING_S
    )

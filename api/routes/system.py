"""Health, who am I, the clinical clock, the pumps.

Every route of the service is `async`: it runs on the event loop beside the controller (a
supervisor is not thread-safe); the store is never called on it, only through the store's
writer thread and reader threads, each call bounded (pumpctl/store/writer.py)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from api.deps import CurrentUser, WardDep, current_user, require
from api.errors import responses
from api.schemas import Instant
from api.views import pump_view
from pumpctl.clock import WallStepWatch
from pumpctl.settings import Role, Settings
from pumpctl.store.auditwatch import AuditWatch

router = APIRouter()
_PUMPS = require({Role.VIEWER, Role.NURSE, Role.CLINICIAN, Role.ADMIN})
#: Any valid token, for a handler that does not need to know whose.
SIGNED_IN = Depends(current_user)


@router.get("/health", responses={503: {"description": "the store is degraded"}})
async def health(request: Request, ward: WardDep) -> JSONResponse:
    """No token. A real write through the store's writer (within 1 s): 503 naming the store
    while it is degraded (records wait for it); a lost pump link is reported, not a 503; the
    clock says whether the wall clock was stepped (A7); `audit`, the audit chain's last
    verification (a broken chain is reported, not a 503)."""
    state = await ward.writer.probe()
    pumps = []
    for supervisor in ward.supervisors.values():
        view = pump_view(ward, supervisor)
        pumps.append(
            {
                "id": view["id"],
                "connected": view["connected"],
                "last_contact_age_s": view["last_contact_age_s"],
            }
        )
    store = "degraded" if state.degraded else "up"
    audit = _audit(request)
    if state.degraded:
        said = "store degraded"
    else:
        said = "audit trail broken" if audit is not None and audit["ok"] is False else "ok"
    body = {
        "status": said,
        "store": store,
        "store_detail": {
            "reason": state.reason,
            "degraded_for_s": state.since_s,
            "records_waiting": state.waiting,
            "records_lost": state.dropped,
        },
        "pumps": pumps,
        "clock": _clock(request, ward).model_dump(mode="json"),
        "audit": audit,
    }
    return JSONResponse(body, 503 if state.degraded else 200)


def _audit(request: Request) -> dict[str, Any] | None:
    """The audit chain's last verification (store/auditwatch.py). A broken chain is said here
    and in the log, and is not a 503: the store works, and a service taken out of rotation
    for its past would supervise no pump (docs/architecture.md, "The audit trail's hash
    chain")."""
    watch: AuditWatch | None = getattr(request.app.state, "audit", None)
    return None if watch is None else watch.status().as_json()


def _clock(request: Request, ward: Any) -> Instant:
    """Clinical time now and, with the real clock, the wall clock's offset and steps (A7)."""
    settings: Settings = request.app.state.settings
    instant = Instant(now=ward.clock.now(), mode=settings.clock_mode)
    wall: WallStepWatch | None = getattr(request.app.state, "wall", None)
    if wall is not None:
        instant.wall_offset_s = round(wall.clock.wall_offset_s(), 3)
        instant.wall_steps = wall.steps
        instant.last_wall_step_s = None if wall.last_step_s is None else round(wall.last_step_s, 3)
        instant.last_wall_step_at = wall.last_step_at
    return instant


@router.get("/me", responses=responses(401))
async def me(user: CurrentUser) -> dict[str, str]:
    """The token's name and role."""
    return {"name": user.name, "role": user.role.value}


@router.get("/clock", response_model=Instant, responses=responses(401), dependencies=[SIGNED_IN])
async def clock(ward: WardDep, request: Request) -> Instant:
    """Clinical time now; with the real clock, the wall clock's offset and steps (A7)."""
    return _clock(request, ward)


@router.get("/pumps", responses=responses(401), dependencies=[Depends(_PUMPS)])
async def pumps(ward: WardDep) -> list[dict[str, Any]]:
    """Every pump, from the cached statuses."""
    return [pump_view(ward, s) for s in ward.supervisors.values()]

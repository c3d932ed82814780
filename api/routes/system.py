"""Health, who am I, the clinical clock, the pumps.

Every route of the service is `async`: it runs on the event loop beside the controller (a
supervisor is not thread-safe), and the store's short transactions run there too."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from api.auth import User
from api.deps import CurrentUser, WardDep, get_settings, require
from api.errors import responses
from api.schemas import Instant
from api.views import pump_view
from pumpctl.settings import Role, Settings

router = APIRouter()
_PUMPS = require({Role.VIEWER, Role.NURSE, Role.CLINICIAN, Role.ADMIN})


@router.get("/health", responses={503: {"description": "the store is down"}})
async def health(request: Request, ward: WardDep) -> JSONResponse:
    """No token. 503 only when the store is down; a lost pump link is reported, not a 503."""
    del request
    store = "up"
    try:
        ward.store.ping()
    except Exception:  # noqa: BLE001 - any failure of the database is "down"
        store = "down"
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
    body = {"status": "ok" if store == "up" else "store down", "store": store, "pumps": pumps}
    return JSONResponse(body, 200 if store == "up" else 503)


@router.get("/me", responses=responses(401))
async def me(user: CurrentUser) -> dict[str, str]:
    """The token's name and role."""
    return {"name": user.name, "role": user.role.value}


@router.get("/clock", response_model=Instant, responses=responses(401))
async def clock(
    user: CurrentUser, ward: WardDep, settings: Annotated[Settings, Depends(get_settings)]
) -> Instant:
    """Clinical time now."""
    del user
    return Instant(now=ward.clock.now(), mode=settings.clock_mode)


@router.get("/pumps", responses=responses(401))
async def pumps(user: Annotated[User, Depends(_PUMPS)], ward: WardDep) -> list[dict[str, Any]]:
    """Every pump, from the cached statuses."""
    del user
    return [pump_view(ward, s) for s in ward.supervisors.values()]

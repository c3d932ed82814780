"""Infusions: create, start, cancel, reactions (the nurse's button), resume, hold, bag, stop,
alarms, the audit trail. Every action acts or refuses (409 naming the rule, 422 the field)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Response, status
from fastapi.responses import JSONResponse

from api.auth import CLINICAL, NURSE_UP, User
from api.deps import ListingDep, MetricsDep, WardDep, require
from api.errors import responses
from api.readcache import SHARED_HEADER
from api.schemas import (
    AlarmKind,
    AlarmName,
    BagIn,
    CreatedInfusionOut,
    InfusionId,
    InfusionIn,
    InfusionOut,
    InfusionRecordWaits,
    PremedicationIn,
    ReactionId,
    ReactionIn,
    ReactionOut,
    ReasonIn,
    ReassessIn,
    ResumeIn,
    ShownState,
    StartIn,
)
from api.views import audit_view, infusion_view
from pumpctl.controller.ward import Acted, Ward
from pumpctl.core.machine import CLINICIAN_ONLY
from pumpctl.core.machine.public import public_state
from pumpctl.settings import Role
from pumpctl.store.writer import StoreUnavailable
from pumpctl.words import A3_WORDS

router = APIRouter(prefix="/infusions", tags=["infusions"], responses=responses(401, 403, 503))
#: An action on one infusion: unknown id, or refused by a rule.
ACTION = responses(404, 409)
#: The infusion's public state, documented by its model (api/schemas.py `InfusionOut`) and
#: built as a plain dict: never validated on the kernel's loop (tests/api/test_infusion_out.py
#: holds the views to the model; schemathesis checks the answers against it).
VIEW: dict[int | str, dict[str, Any]] = {
    200: {"model": InfusionOut, "description": "the infusion's public state"}
}
#: An action's answers: the view once its record is written, or 202 while it waits.
ACTED: dict[int | str, dict[str, Any]] = {
    **ACTION,
    **VIEW,
    202: {
        "model": InfusionRecordWaits,
        "description": "done, but not yet recorded: the record waits for a degraded store",
    },
}
Reader = Annotated[User, Depends(require(CLINICAL))]
#: The readers' routes whose handler does not need to know who asked.
READERS = [Depends(require(CLINICAL))]
Nurse = Annotated[User, Depends(require(NURSE_UP))]
Clinician = Annotated[User, Depends(require({Role.CLINICIAN}))]


#: What an answer says while its record waits for the database (the store is degraded).
RECORD_WAITS = (
    "done, but not yet recorded: the database has not answered; the record waits in memory "
    "and is written, in order, when it does"
)


async def _answer(ward: Ward, infusion_id: int, acted: Acted) -> Any:
    """The infusion's view after an action: 200 once its record is written; 202 with
    `recorded: false` while the record waits for a degraded store (the action is done)."""
    try:
        view = await infusion_view(ward, infusion_id)
    except StoreUnavailable:  # the action is done; the store cannot be read for its view
        shown = public_state(acted.decision.state)
        view = {"id": infusion_id, "state": shown.state}
    if acted.recorded:
        return view
    return JSONResponse({**view, "recorded": False, "message": RECORD_WAITS}, 202)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=None,
    responses={**ACTION, 201: {"model": CreatedInfusionOut, "description": "the plan"}},
)
async def create(body: InfusionIn, user: Clinician, ward: WardDep) -> dict[str, Any]:
    """The patient's next infusion, planned on a pump (row, bag, dose, steps)."""
    infusion_id = await ward.create_infusion(
        body.patient_id,
        body.pump_id,
        actor=user.name,
        weight_kg=body.weight_kg,
        premedication_at=body.premedication_at,
        bag_prepared_at=body.bag_prepared_at,
    )
    view = await infusion_view(ward, infusion_id)
    return {
        **view,
        "initial_rate_ml_h": view["planned_steps"][0]["rate_ml_h"]
        if view["planned_steps"]
        else None,
    }


@router.get("", response_model=list[InfusionOut], dependencies=READERS)  # bytes: documented
async def list_infusions(
    listing: ListingDep,
    metrics: MetricsDep,
    state: Annotated[ShownState | None, Query()] = None,
    pump_id: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    """Every infusion, newest first (kept in memory for at most a second, or until something
    changes: api/listing.py); shareable by the web side among callers of a role."""
    metrics.list_requests.inc()
    return Response(
        await listing.body(state, pump_id),
        media_type="application/json",
        headers={SHARED_HEADER: f"{listing.keep_s:.6f}"},
    )


@router.get(
    "/{infusion_id}",
    response_model=None,
    responses={**responses(404), **VIEW},
    dependencies=READERS,
)
async def get_infusion(infusion_id: InfusionId, ward: WardDep) -> dict[str, Any]:
    """One infusion's public state."""
    return await infusion_view(ward, infusion_id)


@router.post("/{infusion_id}/premedication", response_model=None, responses={**ACTION, **VIEW})
async def premedication(
    infusion_id: InfusionId, body: PremedicationIn, user: Nurse, ward: WardDep
) -> dict[str, Any]:
    """D3: premedication given."""
    await ward.record_premedication(infusion_id, body.given_at, actor=user.name)
    return await infusion_view(ward, infusion_id)


@router.post("/{infusion_id}/start", response_model=None, responses={**ACTION, **VIEW})
async def start(
    infusion_id: InfusionId,
    user: Clinician,
    ward: WardDep,
    body: Annotated[StartIn | None, Body()] = None,
) -> dict[str, Any]:
    """Program and start the pump (L3); D2 and D3 gates, each passed by a clinician's override
    reason."""
    await ward.start(
        infusion_id,
        actor=user.name,
        override_reason=body.override_reason if body is not None else None,
        schedule_override_reason=body.schedule_override_reason if body is not None else None,
    )
    return await infusion_view(ward, infusion_id)


@router.post("/{infusion_id}/cancel", response_model=None, responses={**ACTION, **VIEW})
async def cancel(
    infusion_id: InfusionId, body: ReasonIn, user: Clinician, ward: WardDep
) -> dict[str, Any]:
    """A planned infusion that never started."""
    await ward.cancel(infusion_id, body.reason, actor=user.name)
    return await infusion_view(ward, infusion_id)


@router.post(
    "/{infusion_id}/reactions",
    status_code=status.HTTP_201_CREATED,
    response_model=ReactionOut,
    responses={
        202: {"model": ReactionOut, "description": "the stop is not confirmed (A3)"},
        **ACTION,
    },
)
async def report_reaction(
    infusion_id: InfusionId, body: ReactionIn, user: Nurse, ward: WardDep, metrics: MetricsDep
) -> Any:
    """I1: stops the pump first, records second; 201 once the pump confirmed the stop, 202
    naming A3 when it did not."""
    received = asyncio.get_running_loop().time()
    outcome = await ward.report_reaction(
        infusion_id,
        body.grade,
        list(body.signs),
        body.onset_at,
        actor=user.name,
        received_at=received,
    )
    if outcome.stop == "confirmed" and outcome.stop_confirmed_ms is not None:
        metrics.stop_latency.observe(outcome.stop_confirmed_ms / 1000)
    answer = ReactionOut(
        reaction_id=outcome.reaction_id,
        stop=outcome.stop,
        stop_confirmed_ms=outcome.stop_confirmed_ms,
        state=outcome.state,
        recorded=outcome.recorded,
        record_message=None if outcome.recorded else RECORD_WAITS,
    )
    if outcome.stop == "unconfirmed":
        answer.alarm, answer.message = "A3", A3_WORDS
        return JSONResponse(answer.model_dump(), status.HTTP_202_ACCEPTED)
    return answer


@router.post(
    "/{infusion_id}/reactions/{reaction_id}/reassess", response_model=None, responses=ACTED
)
async def reassess(
    infusion_id: InfusionId, reaction_id: ReactionId, body: ReassessIn, user: Nurse, ward: WardDep
) -> Any:
    """I5: a new grade for the reaction of this stop."""
    acted = await ward.reassess(
        infusion_id, reaction_id, body.grade, list(body.signs), actor=user.name
    )
    return await _answer(ward, infusion_id, acted)


@router.post("/{infusion_id}/reactions/{reaction_id}/resolve", response_model=None, responses=ACTED)
async def resolve(
    infusion_id: InfusionId, reaction_id: ReactionId, user: Nurse, ward: WardDep
) -> Any:
    """I4: symptoms resolved."""
    acted = await ward.resolve(infusion_id, reaction_id, actor=user.name)
    return await _answer(ward, infusion_id, acted)


@router.get("/{infusion_id}/resume", responses=responses(404))
async def resume_preview(infusion_id: InfusionId, user: Reader, ward: WardDep) -> dict[str, Any]:
    """The rate a resume would give now, or the rule that refuses it."""
    return await ward.resume_preview(infusion_id, actor=user.name)


@router.post("/{infusion_id}/resume", response_model=None, responses=ACTED)
async def resume(
    infusion_id: InfusionId,
    user: Nurse,
    ward: WardDep,
    body: Annotated[ResumeIn | None, Body()] = None,
) -> Any:
    """Resume at the rate the rules give (I2), or 409 naming the rule."""
    no_reaction = body is not None and body.reaction is False
    # (a bool is an int to Python: only a grade, never `false`, is sent to the reaction route)
    if body is not None and body.reaction is not None and not isinstance(body.reaction, bool):
        # A4: the unexplained stop was a reaction of this grade: report it as one.
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            {"rule": "A4", "message": "report the reaction (POST .../reactions) instead"},
        )
    acted = await ward.resume(infusion_id, actor=user.name, no_reaction=no_reaction)
    return await _answer(ward, infusion_id, acted)


@router.post("/{infusion_id}/hold", response_model=None, responses=ACTED)
async def hold(infusion_id: InfusionId, user: Clinician, ward: WardDep) -> Any:
    """L7: hold escalation."""
    acted = await ward.hold(infusion_id, actor=user.name)
    return await _answer(ward, infusion_id, acted)


@router.post("/{infusion_id}/release", response_model=None, responses=ACTED)
async def release(infusion_id: InfusionId, user: Clinician, ward: WardDep) -> Any:
    """L7: release the hold."""
    acted = await ward.release(infusion_id, actor=user.name)
    return await _answer(ward, infusion_id, acted)


@router.post("/{infusion_id}/bag", response_model=None, responses=ACTED)
async def new_bag(infusion_id: InfusionId, body: BagIn, user: Nurse, ward: WardDep) -> Any:
    """L9: a new bag."""
    acted = await ward.new_bag(infusion_id, body.prepared_at, actor=user.name)
    return await _answer(ward, infusion_id, acted)


@router.post("/{infusion_id}/stop", response_model=None, responses=ACTED)
async def stop(infusion_id: InfusionId, body: ReasonIn, user: Nurse, ward: WardDep) -> Any:
    """Stop for good, with a reason."""
    acted = await ward.stop(infusion_id, body.reason, actor=user.name)
    return await _answer(ward, infusion_id, acted)


@router.post("/{infusion_id}/alarms/{alarm}/clear", response_model=None, responses=ACTED)
async def clear_alarm(infusion_id: InfusionId, alarm: AlarmName, user: Nurse, ward: WardDep) -> Any:
    """A1: acknowledge a latched alarm; never starts the pump."""
    if alarm in CLINICIAN_ONLY and user.role is not Role.CLINICIAN:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"only a clinician clears {alarm} (A1)")
    role: Literal["nurse", "clinician"] = "clinician" if user.role is Role.CLINICIAN else "nurse"
    acted = await ward.clear_alarm(infusion_id, alarm, actor=user.name, role=role)
    return await _answer(ward, infusion_id, acted)


@router.post("/{infusion_id}/alarms/{alarm}/acknowledge", response_model=None, responses=ACTED)
async def acknowledge_alarm(
    infusion_id: InfusionId, alarm: AlarmKind, user: Nurse, ward: WardDep
) -> Any:
    """A8: acknowledge an alarm: its sound stops; its visual signal stays until it is cleared
    (A1); 409 A8 when it is not raised or already acknowledged."""
    acted = await ward.acknowledge_alarm(infusion_id, alarm, actor=user.name)
    return await _answer(ward, infusion_id, acted)


@router.get("/{infusion_id}/events", responses=responses(404), dependencies=READERS)
async def events(infusion_id: InfusionId, ward: WardDep) -> list[dict[str, Any]]:
    """The infusion's audit trail."""

    return [audit_view(row) for row in await ward.audit_trail(infusion_id)]

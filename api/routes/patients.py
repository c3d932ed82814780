"""Patients and their courses (clinicians), their history (L4, L5, I6, L8), reinstatement (I8)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, status
from pydantic import ValidationError

from api.auth import CLINICAL, User
from api.deps import WardDep, require
from api.errors import responses
from api.schemas import HistoryIn, PatientId, PatientIn, ReasonIn
from pumpctl.controller.ward import Invalid, Refused, Ward
from pumpctl.core.history import InfusionRecord, ReactionRecord, Sign
from pumpctl.protocols import available_protocols
from pumpctl.settings import Role
from pumpctl.store import StoreError

router = APIRouter(prefix="/patients", tags=["patients"], responses=responses(401, 403, 503))
Reader = Annotated[User, Depends(require(CLINICAL))]
#: The readers' routes whose handler does not need to know who asked.
READERS = [Depends(require(CLINICAL))]
Clinician = Annotated[User, Depends(require({Role.CLINICIAN}))]


async def _patient(ward: Ward, patient_id: int) -> dict[str, Any]:
    patient, course, history = await ward.patient_record(patient_id)
    course_id = course.id
    return {
        "id": patient.id,
        "mrn": patient.mrn,
        "weight_kg": patient.weight_kg,
        "course_id": course_id,
        "protocol": course.protocol,
        "course_state": course.course_state,
        "withdrawn_reason": course.withdrawn_reason,
        "severe_reactions": history.severe_occurrences(),
        "next_infusion_number": history.next_infusion_number,
        "history": [r.model_dump(mode="json") for r in history.infusions],
    }


@router.post("", status_code=status.HTTP_201_CREATED, responses=responses(409))
async def create_patient(body: PatientIn, user: Clinician, ward: WardDep) -> dict[str, Any]:
    """A patient and their course; the protocol is fixed for the course."""
    if body.protocol is not None and body.protocol not in available_protocols():
        # (the ward's own words would repeat the name sent: issue 20)
        shipped = ", ".join(available_protocols())
        raise Invalid("protocol", f"no protocol of that name (shipped: {shipped})")
    patient_id, _course = await ward.create_patient(
        body.mrn, body.weight_kg, body.protocol, actor=user.name
    )
    return await _patient(ward, patient_id)


@router.get("/{patient_id}", responses=responses(404), dependencies=READERS)
async def get_patient(patient_id: PatientId, ward: WardDep) -> dict[str, Any]:
    """The patient, `course_state` and the history the rules read."""
    return await _patient(ward, patient_id)


@router.post(
    "/{patient_id}/history", status_code=status.HTTP_201_CREATED, responses=responses(404, 409)
)
async def add_history(
    patient_id: PatientId, body: HistoryIn, user: Clinician, ward: WardDep
) -> dict[str, Any]:
    """L8: an infusion given elsewhere; it counts for I3 and I6 as a live report does (a history
    that demands it withdraws the course at once, I8)."""
    await ward.course_id_of(
        patient_id
    )  # 404 for a patient with no course, before the body's checks
    try:
        record = InfusionRecord(
            infusion_number=body.infusion_number,
            day=body.day,
            highest_rate_ml_h=body.highest_rate_ml_h,
            completed=body.completed,
            given_elsewhere=True,
            reactions=tuple(
                ReactionRecord(
                    grade=r.grade,
                    max_grade=r.max_grade or r.grade,
                    signs=frozenset(Sign(s) for s in r.signs),
                    rate_ml_h=r.rate_ml_h,
                    running_min=r.running_min,
                    infusion_number=body.infusion_number,
                )
                for r in body.reactions
            ),
        )
    except ValidationError as exc:  # the record's own checks (max_grade >= grade); no input echoed
        raise Invalid("reactions", exc.errors()[0]["msg"]) from None
    await ward.enter_history(patient_id, record, actor=user.name)
    return await _patient(ward, patient_id)


@router.post("/{patient_id}/reinstate", responses=responses(404, 409))
async def reinstate(
    patient_id: PatientId, body: ReasonIn, user: Clinician, ward: WardDep
) -> dict[str, Any]:
    """I8: a clinician reinstates a withdrawn course, with a reason."""
    course_id = await ward.course_id_of(patient_id)
    try:
        await ward.reinstate(course_id, body.reason, actor=user.name)
    except StoreError as exc:
        raise Refused("I8", str(exc)) from None
    return await _patient(ward, patient_id)

"""The JSON the service shows: a pump, an infusion, an audit row (interfaces.md, section 3)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from pumpctl.controller.supervisor import PumpSupervisor
from pumpctl.controller.ward import InfusionFacts, Ward
from pumpctl.core.machine import PRIORITY, InfusionState, MachineAlarm, alarm_rule, priority_of
from pumpctl.core.machine.public import public_state
from pumpctl.store.models import Audit

__all__ = ["audit_view", "facts_view", "infusion_view", "pump_shown", "pump_view"]


def _connected(supervisor: PumpSupervisor) -> bool:
    """A2: the link is up and not stale (else the pump is shown offline)."""
    return supervisor.link_up and not supervisor.pump.is_stale()


def _infusion_id(supervisor: PumpSupervisor) -> str | None:
    state = supervisor.state
    return supervisor.infusion_id if state is not None and state.supervised else None


def pump_shown(supervisor: PumpSupervisor) -> tuple[object, ...]:
    """What `pump_view` shows of a pump, without building it (the live hub compares these): its
    state (offline when its link is down, A2), rate, link, alarms and infusion, then its volume
    (a minor change: the hub sends it at most every `api.live.STATUS_EVERY_S`)."""
    status = supervisor.status
    connected = _connected(supervisor)
    infusion = _infusion_id(supervisor)
    if status is None:
        return ("offline", 0.0, connected, frozenset(), infusion, 0.0)
    shown_state = status.state if connected else "offline"
    return (
        shown_state,
        status.rate_ml_h,
        connected,
        status.alarms,
        infusion,
        status.volume_infused_ml,
    )


def pump_view(ward: Ward, supervisor: PumpSupervisor) -> dict[str, Any]:
    """One pump, from the supervisor's cached status (never the wire)."""
    pump = supervisor.pump
    status = supervisor.status
    last = pump.last_contact
    age = None if last is None else round(max(0.0, asyncio.get_running_loop().time() - last), 3)
    connected = _connected(supervisor)
    supervised = _infusion_id(supervisor)
    infusion_id = int(supervised) if supervised else None
    return {
        "id": pump.pump_id,
        "transport": ward.transports.get(pump.pump_id, "serial"),
        "connected": connected,
        "last_contact_age_s": age,
        "state": status.state.value if status is not None and connected else "offline",
        "rate_ml_h": status.rate_ml_h if status is not None else 0.0,
        "volume_infused_ml": status.volume_infused_ml if status is not None else 0.0,
        "vtbi_ml": status.vtbi_ml if status is not None else 0.0,
        "alarms": sorted(a.value for a in status.alarms) if status is not None else [],
        # A8: each of the pump's own alarms' priority
        "alarm_priority": {a.value: priority_of(a.value).value for a in status.alarms}
        if status is not None
        else {},
        "infusion_id": infusion_id,
    }


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


async def infusion_view(ward: Ward, infusion_id: int) -> dict[str, Any]:
    """One infusion's public state (also what is published on MQTT); the store is read on a
    reader thread, bounded (503 when it does not answer)."""
    return facts_view(ward, await ward.facts(infusion_id))


def facts_view(ward: Ward, facts: InfusionFacts) -> dict[str, Any]:
    """The public state of an infusion whose stored facts are read (no I/O here)."""
    stored, patient = facts.stored, facts.patient
    state = ward.newest(stored)
    supervised = ward.live(stored.id) is not None
    reaction = state.reaction
    reactions: list[dict[str, Any]] = [
        {
            "id": n,
            "grade": r.grade,
            "max_grade": r.max_grade,
            "signs": sorted(s.value for s in r.signs),
            "onset_at": _iso(r.onset_at),
            "rate_ml_h": r.rate_ml_h,
            "running_min": r.running_min,
        }
        for n, r in enumerate(state.reactions, start=1)
    ]
    open_reaction: dict[str, Any] | None = None
    if reaction is not None:
        open_reaction = {
            "id": len(state.reactions) + 1,
            "grade": reaction.grade,
            "max_grade": reaction.max_grade,
            "signs": sorted(s.value for s in reaction.signs),
            "onset_at": _iso(reaction.onset_at),
            "rate_ml_h": reaction.rate_ml_h,
            "running_min": reaction.running_min,
        }
        reactions.append(open_reaction)
    alarms = _alarms_view(state, facts)
    steps, row = ward.plan_of(stored.id, state)
    next_step = ward.next_escalation_at(state)
    shown = public_state(state)
    reason = None if shown.rule is None else {"rule": str(shown.rule), "message": shown.message}
    phase = shown.state
    if stored.phase == "cancelled":
        phase, reason = "cancelled", {"rule": "L8", "message": "cancelled before the start"}
    return {
        "id": stored.id,
        "patient_id": patient.id,
        "patient_mrn": patient.mrn,
        "course_id": stored.course_id,
        "pump_id": stored.pump_id,
        "infusion_number": state.infusion_number,
        "day": state.day,
        "row": row,
        "state": phase,
        "state_reason": reason,
        "supervised": supervised,
        "rate_ml_h": state.rate_ml_h if state.pump_running else 0.0,
        "step_rate_ml_h": state.rate_ml_h,
        "volume_infused_ml": round(state.delivered_ml, 3),
        "bag_ml": state.bag_ml,
        "bag_infused_ml": round(state.bag_infused_ml, 3),
        "dose_mg": stored.dose_mg,
        "weight_kg": stored.weight_kg,
        "premedication_at": _iso(stored.premedication_at),
        "running_min": round(state.running_min, 3),
        "time_left_min": _time_left(state, shown.state, next_step, ward.clock.now()),
        "next_escalation_at": _iso(next_step),
        "bag_expires_at": _iso(state.bag_life.expires_at),
        "held": state.held,
        "link_lost": state.link_lost,
        "stop_unconfirmed": state.stop_unconfirmed,
        "stop_pending": state.stop_outstanding,
        "latched_alarms": sorted(state.latched),
        "pump_alarms": sorted(state.alarms),
        "planned_steps": steps,
        "rate_history": [
            {"at": p.at.isoformat(), "rate_ml_h": p.rate_ml_h} for p in state.rate_history
        ],
        "reaction": open_reaction,
        "reactions": reactions,
        "alarms": alarms,
        "started_at": _iso(state.started_at),
        "stop_reason": state.stop_reason,
    }


def _alarms_view(state: InfusionState, facts: InfusionFacts) -> list[dict[str, Any]]:
    """Every alarm raised and not yet cleared, the pump's own included (A1), once each: its
    rule, priority (A8), words, when it was raised and who acknowledged it (A8); highest
    priority first, then oldest."""
    rows = {row.kind: row for row in facts.alarms}  # oldest first: the newest of a kind wins
    marks = {mark.kind: mark for mark in state.alarm_marks}
    out: list[tuple[int, str, int, dict[str, Any]]] = []
    for kind in state.latched | state.alarms:
        row, mark = rows.get(kind), marks.get(kind)
        machine = kind in _MACHINE_ALARMS
        message = row.message if row is not None else None
        if message is None:
            message = _words(kind) if machine else f"pump alarm: {_words(kind)}"
        raised = mark.raised_at if mark is not None else row.raised_at if row is not None else None
        rule = mark.rule if mark is not None else row.rule if row is not None else None
        when = _iso(raised)
        out.append(
            (
                priority_of(kind).rank,
                when or "",
                _TABLE_ORDER.get(kind, -1),  # the same instant: the table's order (A3 first)
                {
                    "kind": kind,
                    "rule": str(rule or alarm_rule(kind)),
                    "priority": priority_of(kind).value,
                    "message": message,
                    "raised_at": when,
                    "acknowledged_by": mark.acknowledged_by if mark is not None else None,
                    "acknowledged_at": _iso(mark.acknowledged_at) if mark is not None else None,
                },
            )
        )
    return [view for *_key, view in sorted(out, key=lambda o: (*o[:3], o[3]["kind"]))]


_MACHINE_ALARMS = frozenset(a.value for a in MachineAlarm)
_TABLE_ORDER = {kind: n for n, kind in enumerate(PRIORITY)}


def _words(kind: str) -> str:
    return kind.replace("_", " ")


def _time_left(
    state: InfusionState, shown: str, next_step_at: datetime | None, now: datetime
) -> float | None:
    """Minutes of running left if the ladder goes on as planned from here (L1, L2): at the
    current rate until the next step, then a step every interval up to the maximum. An
    estimate for the staff; None while nothing runs (`shown`, the state shown, is not
    running or starting: a pump alarm's pause too)."""
    rate = state.rate_ml_h
    if rate <= 0 or state.terminal or shown not in {"running", "starting"}:
        return None
    ladder = state.protocol.ladder
    left = state.remaining_ml
    minutes = 0.0
    span = None if next_step_at is None else max(0.0, (next_step_at - now).total_seconds() / 60)
    while left > 0:
        at_rate = left / rate * 60 if span is None else min(span, left / rate * 60)
        minutes += at_rate
        left -= rate * at_rate / 60
        if left <= 1e-9 or span is None:
            break
        rate = min(ladder.max_rate_ml_h, rate + ladder.increment_ml_h)
        span = None if rate >= ladder.max_rate_ml_h or state.held else ladder.interval_min
    return round(minutes, 1)


def audit_view(row: Audit) -> dict[str, Any]:
    """One audit row."""
    return {
        "id": row.id,
        "infusion_id": row.infusion_id,
        "at": row.at.isoformat(),
        "wall_at": row.wall_at.isoformat(),
        "type": row.type,
        "actor": row.actor,
        "rule": row.rule,
        "data": row.data,
    }

"""Infusion-related reactions: report, reassess, resolve, resume and withdrawal (I1-I11).

When rules compete the stricter outcome wins, in the order I3, I6, I7, I4, I5, I2 (`judge`).
A stop of any kind (a nurse's, an alarm's, L9's) leaves an open I4 hold or I5 window running:
reassessments and "resolved" are taken until it closes, and its end still withdraws the course
(docs/clinical-rules.md, Clarifications I4, I5). An onset may be entered earlier than the
report, inside the current running period (I10); the record (its onset, running time and rate
at onset) counts from the earliest onset entered, while the I5 window and the I4 6 hours count
from the onset of the report that opened them and are never moved. I2 halves the lower of the
rate at onset and the last non-zero rate before the interruption.
"""

from __future__ import annotations

from datetime import datetime

from pumpctl.core.history import ReactionRecord, Sign
from pumpctl.core.limits import constrain, half_rate, min_duration_cap, protocol_max
from pumpctl.core.machine.alarms import ACKNOWLEDGED_BY_RESUME, CLINICIAN_ONLY
from pumpctl.core.machine.context import (
    BadField,
    Ctx,
    Forbidden,
    command_rate,
    pump_may_run,
    stop_pump,
    tolerance,
)
from pumpctl.core.machine.events import ReactionReported, Reassessed, Resolved, ResumeRequested
from pumpctl.core.machine.ladder import continue_same_rate, reprogram_vtbi
from pumpctl.core.machine.outputs import AuditType
from pumpctl.core.machine.state import InfusionPhase, InfusionState, OpenReaction
from pumpctl.core.protocol import Grade4Policy
from pumpctl.core.rules import Rule

__all__ = [
    "close_reaction",
    "on_reaction",
    "on_reassessed",
    "on_resolved",
    "on_resume",
    "on_terminal_reaction",
    "on_terminal_reassessed",
    "severe_count",
    "withdraw",
]


def severe_count(s: InfusionState) -> int:
    """I6: grade >= 3 occurrences over the whole course, this infusion included.

    A course record of this very infusion (same number and split-first-dose day) is not counted
    twice; the other day of a split first dose is another record and counts.
    """
    severe = s.protocol.reactions.severe_grade
    earlier = sum(
        1
        for i in s.course.infusions
        if (i.infusion_number, i.day) != (s.infusion_number, s.day)
        for r in i.reactions
        if r.max_grade >= severe
    )
    return earlier + sum(1 for r in s.reaction_records if r.max_grade >= severe)


def _rate_before_interruption(s: InfusionState) -> float:
    """I2: the last non-zero rate the pump ran at before this interruption (the safer reading).

    The current step, unless the pump was last confirmed (or read back) at a lower non-zero
    rate: a step commanded but not yet confirmed, or a pump left running slower under A2.
    Never above the step: a pump found faster is set back down (L2).
    """
    rates = [s.rate_ml_h]
    if s.ran_at_ml_h > 0:
        rates.append(s.ran_at_ml_h)
    if s.pump_running and s.pump_rate_ml_h > 0:
        rates.append(s.pump_rate_ml_h)
    return min(rates)


def _running_at(s: InfusionState, onset: datetime, now: datetime) -> float:
    """I10: running time at an onset entered earlier than the report (L4 counts from it).

    Running time grows at most as fast as clinical time, so `now - onset` taken off the running
    time now is a lower bound: exact if the pump ran throughout, earlier (stricter for L4) if not.
    """
    elapsed_min = (now - onset).total_seconds() / 60
    return max(0.0, s.running_min - elapsed_min)


def _check_onset(s: InfusionState, onset: datetime | None, now: datetime) -> None:
    """I10: an onset lies inside the current running period (from the start or last resume)."""
    if onset is None:
        return
    period = s.period_started_at or s.started_at
    if onset > now:
        raise BadField("onset_at", "the onset is after the report", Rule.I10)
    if period is None or onset < period:
        since = period.isoformat() if period is not None else "the start"
        raise BadField(
            "onset_at", f"the onset is before the current running period (from {since})", Rule.I10
        )


def on_reaction(ctx: Ctx, event: ReactionReported, now: datetime) -> None:
    """I1: any reaction stops the pump at once; then I3-I7 decide what follows."""
    s = ctx.state
    if s.phase is InfusionPhase.PLANNED:
        raise Forbidden(Rule.I1, "the infusion has not started: no pump to stop")
    _check_onset(s, event.onset_at, now)
    if pump_may_run(s) or s.phase in {InfusionPhase.RUNNING, InfusionPhase.STARTING}:
        stop_pump(ctx, first=True)
    ctx.set(unexplained_stop=False)  # A4: the nurse says the unexplained stop was a reaction
    if s.reaction is not None:
        # I5: within one stop a further report is a reassessment of the same reaction.
        _regrade(
            ctx,
            grade=event.grade,
            signs=event.signs,
            onset_at=event.onset_at,
            now=now,
            actor=event.actor,
            kind="reaction",
        )
        return
    onset = event.onset_at or now
    rate_before = _rate_before_interruption(s)
    reaction = OpenReaction(
        grade=event.grade,
        max_grade=event.grade,
        signs=event.signs,
        onset_at=onset,
        rate_ml_h=s.rate_at(onset) or rate_before,
        rate_before_ml_h=rate_before,
        running_min=_running_at(s, onset, now),
        bronchospasm_seen_at=onset if Sign.BRONCHOSPASM in event.signs else None,
    )
    ctx.set(reaction=reaction)
    ctx.log(
        AuditType.REACTION,
        Rule.I1,
        now,
        actor=event.actor,
        reaction=reaction.record(s.infusion_number).model_dump(mode="json"),
    )
    _judge(ctx, event.grade, event.signs, event.onset_at, now)


def _moved_onset(
    s: InfusionState, reaction: OpenReaction, onset: datetime, now: datetime
) -> dict[str, object]:
    """I10: a later report's earlier onset moves the record (onset, running time and rate at
    onset, so L4 counts from it); an I5 window or I4 6 hours already open stay where they are."""
    if onset >= reaction.onset_at:
        return {}
    return {
        "onset_at": onset,
        "running_min": _running_at(s, onset, now),
        "rate_ml_h": s.rate_at(onset) or reaction.rate_ml_h,
    }


def _regrade(
    ctx: Ctx,
    *,
    grade: int,
    signs: frozenset[Sign],
    onset_at: datetime | None,
    now: datetime,
    actor: str,
    kind: str,
) -> None:
    s = ctx.state
    assert s.reaction is not None
    changes: dict[str, object] = {
        "grade": grade,
        "max_grade": max(s.reaction.max_grade, grade),
        "signs": s.reaction.signs | signs,
    }
    if onset_at is not None:
        changes.update(_moved_onset(s, s.reaction, onset_at, now))
    if Sign.BRONCHOSPASM in signs and s.reaction.bronchospasm_seen_at is None:
        changes["bronchospasm_seen_at"] = onset_at or now
    reaction = s.reaction.model_validate({**s.reaction.model_dump(), **changes})
    ctx.set(reaction=reaction)
    ctx.log(
        AuditType.REACTION if kind == "reaction" else AuditType.REASSESSED,
        Rule.I5,
        now,
        actor=actor,
        reaction=reaction.record(s.infusion_number).model_dump(mode="json"),
    )
    _judge(ctx, grade, signs, onset_at, now)


def _judge(
    ctx: Ctx, grade: int, signs: frozenset[Sign], onset_at: datetime | None, now: datetime
) -> None:
    """The stricter outcome wins, in the order I3, I6, I7 (discontinue), I4, I5, I2.

    I3 and I4 look at every sign recorded during this reaction (one stop, I5), not only the
    latest report's: a grade 1 laryngeal edema or bronchospasm reassessed at grade 2 with no
    sign repeated is a grade 2 reaction with that sign (the safer reading). The I4 clock starts
    at the onset of the first report naming bronchospasm in this reaction, the I5 window at the
    onset of the report that first records grade >= 3 (its time when it gives none).
    """
    s = ctx.state
    rules = s.protocol.reactions
    reaction = s.reaction
    assert reaction is not None
    recorded = reaction.signs
    if grade >= rules.laryngeal_edema_withdraw_grade and Sign.LARYNGEAL_EDEMA in recorded:
        withdraw(ctx, Rule.I3, f"grade {grade} laryngeal edema", now)
        return
    count = severe_count(s)
    if count >= rules.severe_occurrences_withdraw:
        withdraw(ctx, Rule.I6, f"occurrence {count} of grade >= {rules.severe_grade}", now)
        return
    if grade == 4 and rules.grade4_policy is Grade4Policy.DISCONTINUE:
        withdraw(ctx, Rule.I7, "grade 4: permanent discontinuation (protocol policy)", now)
        return
    changes: dict[str, object] = {}
    if grade >= rules.bronchospasm_hold_grade and Sign.BRONCHOSPASM in recorded:
        if reaction.bronchospasm_onset_at is None:
            start = reaction.bronchospasm_seen_at or now
            changes["bronchospasm_onset_at"] = start
            # A resolution stated before the bronchospasm reached grade 2 does not lift I4.
            changes["resolved"] = False
            ctx.log(AuditType.BRONCHOSPASM_HOLD, Rule.I4, now, onset_at=start.isoformat())
        if Sign.BRONCHOSPASM in signs:
            changes["resolved"] = False
    if grade >= rules.severe_grade:
        if reaction.observation_closed:
            # The window has ended, and the same reaction is back at grade >= 3: it did not
            # settle within 2 h (safer reading than a window with no end).
            withdraw(ctx, Rule.I5, f"grade {grade} after the 2 h window ended", now)
            return
        if reaction.observation_started_at is None:
            start = onset_at or now  # this report's own onset, never an earlier one
            changes["observation_started_at"] = start
            ctx.log(AuditType.OBSERVATION_STARTED, Rule.I5, now, window_start=start.isoformat())
    reaction = reaction.model_validate({**reaction.model_dump(), **changes})
    ctx.set(reaction=reaction)
    if s.terminal:
        return  # stopped for good: the phase stays; the window runs on (I4, I5)
    phase = InfusionPhase.STOPPED_OBSERVATION if reaction.window_open else InfusionPhase.PAUSED
    if phase is not s.phase:
        ctx.log(
            AuditType(phase.value), Rule.I5 if reaction.window_open else Rule.I2, now, grade=grade
        )
    ctx.set(phase=phase)


def on_reassessed(ctx: Ctx, event: Reassessed, now: datetime) -> None:
    """I5: a new grade and signs for the reaction of the current stop."""
    if ctx.state.reaction is None:
        raise Forbidden(Rule.I5, "no reaction is open: report a new reaction instead")
    _regrade(
        ctx,
        grade=event.grade,
        signs=event.signs,
        onset_at=None,
        now=now,
        actor=event.actor,
        kind="reassessed",
    )


def on_resolved(ctx: Ctx, event: Resolved, now: datetime) -> None:
    """I4: the nurse states the symptoms are gone (lifts I4's hold)."""
    s = ctx.state
    if s.reaction is None:
        raise Forbidden(Rule.I4, "no reaction is open")
    if s.reaction.resolved:
        raise Forbidden(Rule.I4, "the reaction is already marked resolved")
    reaction = s.reaction.model_copy(update={"resolved": True})
    ctx.set(reaction=reaction)
    rule = Rule.I4 if s.reaction.bronchospasm_onset_at is not None else Rule.I2
    ctx.log(AuditType.RESOLVED, rule, now, actor=event.actor)
    if s.terminal and not reaction.window_open:
        close_reaction(ctx)  # stopped for good and nothing left open


def _resume_refusal(  # noqa: PLR0911 - one refusal per rule, in order
    s: InfusionState, event: ResumeRequested
) -> Forbidden | None:
    """Why a resume is refused now, in the order A3 (ahead of A2), A2, L9, A1, A4, I4, I5."""
    if s.phase is InfusionPhase.PLANNED:
        return Forbidden(Rule.L3, "the infusion has not started")
    if s.stop_outstanding:
        return Forbidden(Rule.A3, "the pump is not yet confirmed stopped: clamp the line")
    if s.link_lost:
        return Forbidden(Rule.A2, "no link to the pump")
    if s.bag_expired:
        return Forbidden(Rule.L9, "the bag is past its stability: replace it first")
    if s.alarms:
        return Forbidden(Rule.A1, f"clear the pump alarm first ({', '.join(sorted(s.alarms))})")
    for alarm in sorted(CLINICIAN_ONLY):
        if alarm.value in s.latched:
            return Forbidden(Rule.A1, f"{alarm.value}: a clinician must clear it first")
    if s.unexplained_stop and s.reaction is None and not event.no_reaction:
        return Forbidden(
            Rule.A4, "the pump was found stopped with no record why: report a reaction or say none"
        )
    reaction = s.reaction
    if reaction is None:
        at_step = abs(s.pump_rate_ml_h - s.rate_ml_h) <= tolerance(s)
        if s.pump_running and at_step and not s.outstanding:
            return Forbidden(Rule.I9, "the pump is already running at the current step")
        return None
    if reaction.hold_open:
        return Forbidden(Rule.I4, "bronchospasm grade >= 2: no resume until it is marked resolved")
    if reaction.window_open and reaction.grade >= s.protocol.reactions.severe_grade:
        return Forbidden(
            Rule.I5, f"grade {reaction.grade} inside the observation window: resume only at <= 2"
        )
    return None


def on_resume(ctx: Ctx, event: ResumeRequested, now: datetime) -> None:
    """I9: only a nurse resumes, and only when I2-I6 and A1-A4 allow it; else a refusal."""
    s = ctx.state
    refusal = _resume_refusal(s, event)
    if refusal is not None:
        raise refusal
    reaction = s.reaction
    acknowledged = s.latched & ACKNOWLEDGED_BY_RESUME
    ctx.set(unexplained_stop=False, period_started_at=now)
    ctx.unlatch(acknowledged)
    for alarm in sorted(acknowledged):
        ctx.log(AuditType.ALARM_CLEARED, Rule.A1, now, alarm=alarm, actor=event.actor, by="resume")
    if reaction is None:
        # A1/A2/A4: after an alarm or an unexpected stop, continue at the same rate.
        continue_same_rate(ctx, Rule.A1, "continue at the same rate after the pump stopped")
        ctx.log(AuditType.RESUMED, Rule.A1, now, actor=event.actor, rate_ml_h=ctx.state.rate_ml_h)
        return
    rules = s.protocol.reactions
    ladder = s.protocol.ladder
    base = (
        min(r for r in (reaction.rate_ml_h, reaction.rate_before_ml_h) if r > 0)
        if (reaction.rate_ml_h > 0 or reaction.rate_before_ml_h > 0)
        else 0.0
    )
    try:
        decision = constrain(
            [
                half_rate(base, rules.restart_fraction),
                protocol_max(ladder.max_rate_ml_h),
                min_duration_cap(s.remaining_ml, s.running_min, s.min_duration_min),
            ],
            ladder.rate_resolution_ml_h,
        )
    except ValueError as error:
        raise Forbidden(
            Rule.I2, f"half of {base:g} ml/h is below the pump's smallest rate ({error})"
        ) from None
    never_ran = s.highest_rate_ml_h == 0
    close_reaction(ctx)
    reprogram_vtbi(ctx)  # a pump that lost its program (a power reset) gets its VTBI first
    # I2: the interval starts from zero; L6 is computed again at each later step.
    command_rate(ctx, decision, run=True)
    ctx.set(
        phase=InfusionPhase.STARTING if never_ran else InfusionPhase.RUNNING,
        ladder_settled=False,
    )
    ctx.log(
        AuditType.RESUMED,
        Rule.I5 if reaction.observation_started_at is not None else Rule.I2,
        now,
        actor=event.actor,
        rate_ml_h=decision.rate_ml_h,
        decision=decision.to_json(),
    )


def close_reaction(ctx: Ctx) -> None:
    """The open reaction becomes a record of this infusion (I10)."""
    s = ctx.state
    if s.reaction is not None:
        ctx.set(reactions=s.reaction_records, reaction=None)


def withdraw(ctx: Ctx, rule: Rule, reason: str, at: datetime) -> None:
    """I8: stop the pump, end the infusion `withdrawn`, mark the course withdrawn.

    An infusion already stopped for good stays `stopped`; its course is withdrawn all the same.
    """
    s = ctx.state
    if pump_may_run(s) or not s.terminal:
        stop_pump(ctx, first=True)
    close_reaction(ctx)
    if not s.terminal:
        ctx.set(phase=InfusionPhase.WITHDRAWN)
        ctx.log(AuditType.WITHDRAWN, rule, at, reason=reason)
    _withdraw_course(ctx, rule, reason, at)


def _withdraw_course(ctx: Ctx, rule: Rule, reason: str, at: datetime) -> None:
    s = ctx.state
    if s.course.withdrawn:
        return
    ctx.set(
        course=s.course.model_copy(
            update={"withdrawn": True, "withdrawn_reason": f"{rule}: {reason}"}
        )
    )
    ctx.log(AuditType.COURSE_WITHDRAWN, Rule.I8, at, cause=rule, reason=reason)


# --- after the end ----------------------------------------------------------------------------


def on_terminal_reaction(ctx: Ctx, event: ReactionReported, now: datetime) -> None:
    """I11: a reaction after the end is recorded (no pump action); an open window takes it."""
    s = ctx.state
    if s.reaction is not None:
        _check_onset(s, event.onset_at, now)
        _regrade(
            ctx,
            grade=event.grade,
            signs=event.signs,
            onset_at=event.onset_at,
            now=now,
            actor=event.actor,
            kind="reaction",
        )
        return
    if event.onset_at is not None and event.onset_at > now:
        raise BadField("onset_at", "the onset is after the report", Rule.I10)
    if event.onset_at is not None and s.started_at is not None and event.onset_at < s.started_at:
        raise BadField("onset_at", "the onset is before the infusion started", Rule.I10)
    record = ReactionRecord(
        grade=event.grade,
        max_grade=event.grade,
        signs=event.signs,
        rate_ml_h=0.0,
        running_min=s.running_min,
        infusion_number=s.infusion_number,
        after_completion=s.phase is InfusionPhase.COMPLETED,
        onset_at=event.onset_at or now,
    )
    _keep_late(ctx, (*s.reactions, record), AuditType.REACTION, event.actor, now)


def on_terminal_reassessed(ctx: Ctx, event: Reassessed, now: datetime) -> None:
    """I5 while a window is open after a stop; I11 for a reaction reported after completion."""
    s = ctx.state
    if s.reaction is not None:
        _regrade(
            ctx,
            grade=event.grade,
            signs=event.signs,
            onset_at=None,
            now=now,
            actor=event.actor,
            kind="reassessed",
        )
        return
    if not s.reactions or not s.reactions[-1].after_completion:
        raise Forbidden(Rule.I11, "no reaction reported after completion to reassess")
    last = s.reactions[-1]
    record = last.model_copy(
        update={
            "grade": event.grade,
            "max_grade": max(last.max_grade, event.grade),
            "signs": last.signs | event.signs,
        }
    )
    _keep_late(ctx, (*s.reactions[:-1], record), AuditType.REASSESSED, event.actor, now)


def _keep_late(
    ctx: Ctx, reactions: tuple[ReactionRecord, ...], kind: AuditType, actor: str, now: datetime
) -> None:
    """I11: record the late reaction (the last of `reactions`), audit it, and withdraw the
    course where I3, I6 or I7 would."""
    record = reactions[-1]
    ctx.set(reactions=reactions)
    ctx.log(kind, Rule.I11, now, actor=actor, reaction=record.model_dump(mode="json"))
    _late_withdrawal_check(ctx, record, now)


def _late_withdrawal_check(ctx: Ctx, record: ReactionRecord, now: datetime) -> None:
    """I11: a late reaction withdraws the course (no pump action) where I3, I6 or I7 would.

    I3 (grade >= 2 laryngeal edema) and the label's I7 (grade 4 = permanent discontinuation)
    withdraw the patient whenever the reaction happens; a late grade >= 3 counts for I6 over
    the course. I4 and I5 need a stopped infusion to act on and do not apply after the end.
    """
    s = ctx.state
    if s.course.withdrawn:
        return
    rules = s.protocol.reactions
    grade = record.grade
    count = severe_count(s)
    if grade >= rules.laryngeal_edema_withdraw_grade and Sign.LARYNGEAL_EDEMA in record.signs:
        _withdraw_course(ctx, Rule.I3, f"grade {grade} laryngeal edema (after the end, I11)", now)
    elif count >= rules.severe_occurrences_withdraw:
        _withdraw_course(ctx, Rule.I6, f"occurrence {count} of grade >= {rules.severe_grade}", now)
    elif grade == 4 and rules.grade4_policy is Grade4Policy.DISCONTINUE:
        _withdraw_course(ctx, Rule.I7, "grade 4: permanent discontinuation (protocol policy)", now)

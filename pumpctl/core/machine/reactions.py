"""Infusion-related reactions: report, reassess, resolve, resume and withdrawal (I1-I11).

When rules compete the stricter outcome wins, in the order I3, I6, I7, I4, I5, I2 (`judge`).
"""

from __future__ import annotations

from datetime import datetime

from pumpctl.core.history import ReactionRecord, Sign
from pumpctl.core.limits import (
    constrain,
    half_rate,
    min_duration_cap,
    protocol_max,
)
from pumpctl.core.machine.context import Ctx, Refused, command_rate, pump_may_run, stop_pump
from pumpctl.core.machine.events import ReactionReported, Reassessed, Resolved, ResumeRequested
from pumpctl.core.machine.ladder import continue_same_rate
from pumpctl.core.machine.outputs import StopPump
from pumpctl.core.machine.state import InfusionPhase, InfusionState, OpenReaction
from pumpctl.core.protocol import Grade4Policy


def _severe_count(s: InfusionState) -> int:
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

    The current step, unless the pump last confirmed a lower non-zero rate: a step commanded but
    not yet confirmed (the pump is only known to have run at the rate before it), or a pump left
    running slower under A2. Never above the step: a pump found faster is set back down (L2).
    """
    if s.ran_at_ml_h > 0:
        return min(s.rate_ml_h, s.ran_at_ml_h)
    return s.rate_ml_h


def _running_at(s: InfusionState, onset: datetime, now: datetime) -> float:
    """I10: running time at an onset entered earlier than the report (L4 counts from it).

    Running time grows at most as fast as clinical time, so `now - onset` taken off the running
    time now is a lower bound: exact if the pump ran throughout, earlier (stricter for L4) if not.
    """
    elapsed_min = (now - onset).total_seconds() / 60
    return max(0.0, s.running_min - elapsed_min)


def on_reaction(ctx: Ctx, event: ReactionReported, now: datetime) -> None:
    """I1: any reaction stops the pump at once; then I3-I7 decide what follows."""
    s = ctx.state
    if event.onset_at is not None and event.onset_at > now:
        raise Refused("I10", "onset_at is after the report")
    if s.phase is InfusionPhase.PLANNED:
        raise Refused("I1", "the infusion has not started: no pump to stop")
    if pump_may_run(s) or s.phase in {InfusionPhase.RUNNING, InfusionPhase.STARTING}:
        stop_pump(ctx, first=True)
    if s.reaction is not None:
        # I5: within one stop a further report is a reassessment of the same reaction.
        _regrade(
            ctx,
            grade=event.grade,
            signs=event.signs,
            onset_at=event.onset_at,
            now=now,
            actor=event.actor,
            type_="reaction",
        )
        return
    onset = event.onset_at or now
    reaction = OpenReaction(
        grade=event.grade,
        max_grade=event.grade,
        signs=event.signs,
        onset_at=onset,
        rate_ml_h=_rate_before_interruption(s),
        running_min=_running_at(s, onset, now),
        bronchospasm_seen_at=onset if Sign.BRONCHOSPASM in event.signs else None,
    )
    ctx.set(reaction=reaction)
    ctx.log(
        "reaction",
        "I1",
        now,
        actor=event.actor,
        reaction=reaction.record(s.infusion_number).model_dump(mode="json"),
    )
    _judge(ctx, event.grade, event.signs, event.onset_at, now)


def _regrade(
    ctx: Ctx,
    *,
    grade: int,
    signs: frozenset[Sign],
    onset_at: datetime | None,
    now: datetime,
    actor: str | None,
    type_: str,
) -> None:
    s = ctx.state
    assert s.reaction is not None
    changes: dict[str, object] = {
        "grade": grade,
        "max_grade": max(s.reaction.max_grade, grade),
        "signs": s.reaction.signs | signs,
    }
    if Sign.BRONCHOSPASM in signs and s.reaction.bronchospasm_seen_at is None:
        changes["bronchospasm_seen_at"] = onset_at or now
    reaction = s.reaction.model_copy(update=changes)
    ctx.set(reaction=reaction)
    ctx.log(
        type_,
        "I5",
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
    at the onset of the first report naming bronchospasm in this reaction.
    """
    s = ctx.state
    rules = s.protocol.reactions
    reaction = s.reaction
    assert reaction is not None
    recorded = reaction.signs
    if grade >= rules.laryngeal_edema_withdraw_grade and Sign.LARYNGEAL_EDEMA in recorded:
        withdraw(ctx, "I3", f"grade {grade} laryngeal edema", now)
        return
    count = _severe_count(s)
    if count >= rules.severe_occurrences_withdraw:
        withdraw(ctx, "I6", f"occurrence {count} of grade >= {rules.severe_grade}", now)
        return
    if grade == 4 and rules.grade4_policy is Grade4Policy.DISCONTINUE:
        withdraw(ctx, "I7", "grade 4: permanent discontinuation (protocol policy)", now)
        return
    changes: dict[str, object] = {}
    if grade >= rules.bronchospasm_hold_grade and Sign.BRONCHOSPASM in recorded:
        if reaction.bronchospasm_onset_at is None:
            start = reaction.bronchospasm_seen_at or now
            changes["bronchospasm_onset_at"] = start
            # A resolution stated before the bronchospasm reached grade 2 does not lift I4.
            changes["resolved"] = False
            ctx.log("bronchospasm_hold", "I4", now, onset_at=start.isoformat())
        if Sign.BRONCHOSPASM in signs:
            changes["resolved"] = False
    if grade >= rules.severe_grade:
        if reaction.observation_closed:
            # The window has ended, and the same reaction is back at grade >= 3: it did not
            # settle within 2 h (safer reading than a window with no end).
            withdraw(ctx, "I5", f"grade {grade} after the 2 h window ended", now)
            return
        if reaction.observation_started_at is None:
            start = min(onset_at, now) if onset_at is not None else now
            changes["observation_started_at"] = start
            ctx.log("observation_started", "I5", now, window_start=start.isoformat())
    reaction = reaction.model_copy(update=changes)
    observing = reaction.observation_started_at is not None and not reaction.observation_closed
    phase = InfusionPhase.STOPPED_OBSERVATION if observing else InfusionPhase.PAUSED
    if phase is not s.phase:
        ctx.log(phase.value, "I5" if observing else "I2", now, grade=grade)
    ctx.set(reaction=reaction, phase=phase)


def on_reassessed(ctx: Ctx, event: Reassessed, now: datetime) -> None:
    s = ctx.state
    if s.reaction is None:
        raise Refused("I5", "no reaction is open: report a new reaction instead")
    _regrade(
        ctx,
        grade=event.grade,
        signs=event.signs,
        onset_at=None,
        now=now,
        actor=event.actor,
        type_="reassessed",
    )


def on_resolved(ctx: Ctx, event: Resolved, now: datetime) -> None:
    s = ctx.state
    if s.reaction is None:
        raise Refused("I4", "no reaction is open")
    if s.reaction.resolved:
        raise Refused("I4", "the reaction is already marked resolved")
    ctx.set(reaction=s.reaction.model_copy(update={"resolved": True}))
    rule = "I4" if s.reaction.bronchospasm_onset_at is not None else "I2"
    ctx.log("resolved", rule, now, actor=event.actor)


def on_resume(ctx: Ctx, event: ResumeRequested, now: datetime) -> None:
    """I9: only a nurse resumes, and only when I2-I6 allow it; else a refusal naming the rule."""
    s = ctx.state
    if s.phase is InfusionPhase.PLANNED:
        raise Refused("L3", "the infusion has not started")
    if s.link_lost:
        raise Refused("A2", "no link to the pump")
    if s.bag_expired:
        raise Refused("L9", "the bag is past its stability: replace it first")
    if s.alarms:
        raise Refused("A1", f"clear the pump alarm first ({', '.join(sorted(s.alarms))})")
    reaction = s.reaction
    if reaction is None:
        if s.pump_running and s.pending is None:
            raise Refused("I9", "the pump is already running at the current step")
        # A1/A2: after an alarm or an unexpected stop, continue at the same rate.
        continue_same_rate(ctx, "A1", "continue at the same rate after the pump stopped")
        ctx.log("resumed", "A1", now, actor=event.actor, rate_ml_h=ctx.state.rate_ml_h)
        return
    rules = s.protocol.reactions
    if reaction.bronchospasm_onset_at is not None and not reaction.resolved:
        raise Refused("I4", "bronchospasm grade >= 2: no resume until it is marked resolved")
    observing = reaction.observation_started_at is not None and not reaction.observation_closed
    if observing and reaction.grade >= rules.severe_grade:
        raise Refused(
            "I5", f"grade {reaction.grade} inside the observation window: resume only at <= 2"
        )
    ladder = s.protocol.ladder
    decision = constrain(
        [
            half_rate(reaction.rate_ml_h, rules.restart_fraction),
            protocol_max(ladder.max_rate_ml_h),
            min_duration_cap(s.remaining_ml, s.running_min, s.min_duration_min),
        ],
        ladder.rate_resolution_ml_h,
    )
    never_ran = s.highest_rate_ml_h == 0
    close_reaction(ctx)
    # I2: the interval starts from zero; L6 is computed again at each later step.
    command_rate(ctx, decision, run=True)
    ctx.set(
        phase=InfusionPhase.STARTING if never_ran else InfusionPhase.RUNNING,
        ladder_settled=False,
    )
    ctx.log(
        "resumed",
        "I5" if reaction.observation_started_at is not None else "I2",
        now,
        actor=event.actor,
        rate_ml_h=decision.rate_ml_h,
        decision=decision.to_json(),
    )


def close_reaction(ctx: Ctx) -> None:
    s = ctx.state
    if s.reaction is not None:
        ctx.set(reactions=s.reaction_records, reaction=None)


def withdraw(ctx: Ctx, rule: str, reason: str, at: datetime) -> None:
    """I8: stop the pump, end the infusion `withdrawn`, mark the course withdrawn."""
    if not any(isinstance(c, StopPump) for c in ctx.commands):
        stop_pump(ctx)
    close_reaction(ctx)
    ctx.set(phase=InfusionPhase.WITHDRAWN)
    ctx.log("withdrawn", rule, at, reason=reason)
    _withdraw_course(ctx, rule, reason, at)


def _withdraw_course(ctx: Ctx, rule: str, reason: str, at: datetime) -> None:
    s = ctx.state
    if s.course.withdrawn:
        return
    ctx.set(
        course=s.course.model_copy(
            update={"withdrawn": True, "withdrawn_reason": f"{rule}: {reason}"}
        )
    )
    ctx.log("course_withdrawn", "I8", at, cause=rule, reason=reason)


def late_withdrawal_check(ctx: Ctx, record: ReactionRecord, now: datetime) -> None:
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
    count = _severe_count(s)
    if grade >= rules.laryngeal_edema_withdraw_grade and Sign.LARYNGEAL_EDEMA in record.signs:
        _withdraw_course(ctx, "I3", f"grade {grade} laryngeal edema (after the end, I11)", now)
    elif count >= rules.severe_occurrences_withdraw:
        _withdraw_course(ctx, "I6", f"occurrence {count} of grade >= {rules.severe_grade}", now)
    elif grade == 4 and rules.grade4_policy is Grade4Policy.DISCONTINUE:
        _withdraw_course(ctx, "I7", "grade 4: permanent discontinuation (protocol policy)", now)

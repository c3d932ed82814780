"""Volumes read back from the pump: over- and under-infusion, bad reads, baselines (L3, A1, A2, A4).

The one module that holds these thresholds (docs/clinical-rules.md, Clarifications, L3):

- Over-infusion: a volume above the upper bound by more than 5 % + 1 ml stops the pump and
  raises an alarm only a clinician clears. The bound integrates the highest rate the pump may
  have run at (last confirmed, read back or commanded; with the link lost or the controller
  down, the step and the highest rate so far as well) over all elapsed clinical time since the
  last baseline, so a reconnect or a restart is not mistaken for over-infusion.
- Under-infusion: more than 10 % and 5 ml below what the confirmed rates should have given, for
  15 min of running time: an alarm, no stop.
- A volume that goes backwards without a reason is a bad read: not taken, nothing acted on.
- The baseline resets after the machine's own clear-volume, a new VTBI, and a power reset.
- A restart keeps the volumes (A4): the time the controller was down shows in clinical time
  only as far as its clock saw it (a clock that went on from the record saw none of it), so the
  pump's counter read at the restart is what was given, not over-infusion, when the pump did
  only what it was allowed to (`keep_on_restart`): the bound and the expectation are carried
  up to it, never down.
- A power reset counts as given the most the pump may have given (`most_given`): the last
  volume it read back plus the highest rate it may have run at since, so the VTBI programmed
  again never exceeds the bag less what the pump may have given.
"""

from __future__ import annotations

from datetime import datetime

from pumpctl.core.machine.alarms import MachineAlarm
from pumpctl.core.machine.context import Ctx, pump_may_run, stop_pump
from pumpctl.core.machine.outputs import AuditType
from pumpctl.core.machine.state import InfusionState
from pumpctl.core.rules import Rule

__all__ = [
    "COMPLETION_TOLERANCE_ML",
    "OVER_FRACTION",
    "OVER_MARGIN_ML",
    "UNDER_FRACTION",
    "UNDER_MARGIN_ML",
    "UNDER_SPAN_MIN",
    "accrue",
    "goes_backwards",
    "keep_on_restart",
    "most_given",
    "possible_rate",
    "reset_baseline",
    "take_volume",
]

OVER_FRACTION = 0.05
OVER_MARGIN_ML = 1.0
UNDER_FRACTION = 0.10
UNDER_MARGIN_ML = 5.0
UNDER_SPAN_MIN = 15.0
#: L3: the infusion is complete when the pump stopped within this of the programmed VTBI.
COMPLETION_TOLERANCE_ML = 1.0
BACKWARDS_TOLERANCE_ML = 0.05  # the pump's display resolution: smaller steps back are noise


def possible_rate(s: InfusionState) -> float:
    """The highest rate the pump may be running at now (the over-infusion bound's slope)."""
    rates = [s.confirmed_rate_ml_h, s.pump_rate_ml_h if s.pump_running else 0.0]
    rates.extend(c.rate_ml_h or 0.0 for c in s.outstanding)
    if s.link_lost or s.stop_unconfirmed:
        rates.extend((s.rate_ml_h, s.highest_rate_ml_h))
    return max(rates)


def accrue(s: InfusionState, minutes: float, *, counting: bool) -> dict[str, object]:
    """The bound's and the expectation's growth over `minutes` of clinical time (changes)."""
    hours = minutes / 60
    possible_ml = possible_rate(s) * hours
    changes: dict[str, object] = {"volume_bound_ml": s.volume_bound_ml + possible_ml}
    if s.volume_most_ml is not None:
        changes["volume_most_ml"] = s.volume_most_ml + possible_ml
    if counting:
        changes["volume_expected_ml"] = s.volume_expected_ml + s.confirmed_rate_ml_h * hours
    return changes


def reset_baseline(ctx: Ctx, volume: float, at: datetime, why: str) -> None:
    """A new volume baseline: the pump's counter now reads `volume` for the bag in use."""
    s = ctx.state
    ctx.set(
        volume_read_ml=volume,
        bag_infused_ml=min(volume, s.bag_volume_ml),
        volume_bound_ml=volume,
        volume_expected_ml=volume,
        volume_most_ml=volume,
        under_since_min=None,
    )
    ctx.log(AuditType.VOLUME_BASELINE, Rule.L3, at, volume_ml=volume, why=why)


def most_given(s: InfusionState) -> float:
    """L3, A4: the most the pump may have given from the bag in use (what a power reset counts
    as given): the last volume it read back plus the highest rate it may have run at since,
    never less than the running estimate, never more than the bag's VTBI (the pump stops there).
    """
    if s.volume_read_ml is None:
        return s.bag_infused_ml  # nothing read from this bag yet: the estimate is all there is
    # A state stored before the most was kept: the bound is an upper bound too (integrated from
    # the baseline at the highest possible rate).
    most = s.volume_most_ml if s.volume_most_ml is not None else s.volume_bound_ml
    return min(s.bag_volume_ml, max(s.bag_infused_ml, most))


def keep_on_restart(ctx: Ctx, volume: float, at: datetime) -> None:
    """A4: a restart keeps the volumes. The pump's counter read at the restart is what it gave;
    the time the controller was down counts in clinical time only as far as its clock saw it, so
    the over-infusion bound and the under-infusion expectation are carried up to that counter
    (never down). The caller has checked that the pump did only what it was allowed to (free to
    run, and no faster than expected); a bad read (backwards) is left to `take_volume`."""
    s = ctx.state
    if s.vtbi_programmed_ml is None or goes_backwards(s, volume):
        return
    if volume > s.volume_expected_ml:
        ctx.set(volume_expected_ml=volume)
    if volume > s.volume_bound_ml:
        ctx.set(volume_bound_ml=volume)
        ctx.log(
            AuditType.VOLUME_BASELINE,
            Rule.A4,
            at,
            volume_ml=volume,
            bound_ml=round(s.volume_bound_ml, 3),
            why="restart: given while the controller was down",
        )


def goes_backwards(state: InfusionState, volume: float) -> bool:
    """A2: a volume read below the last one taken, with a baseline to judge against, is a bad
    read (not taken; it counts as no valid status)."""
    if state.vtbi_programmed_ml is None or state.volume_read_ml is None:
        return False  # no baseline yet (before the VTBI is confirmed): nothing to judge against
    return volume < state.volume_read_ml - BACKWARDS_TOLERANCE_ML


def take_volume(ctx: Ctx, volume: float, at: datetime) -> bool:
    """Take a volume read back for the bag in use; False if it is a bad read (not acted on)."""
    s = ctx.state
    if s.vtbi_programmed_ml is None:
        return True  # no baseline yet (before the VTBI is confirmed): nothing to judge against
    if goes_backwards(s, volume):
        ctx.log(AuditType.BAD_READ, Rule.A2, at, volume_ml=volume, last_ml=s.volume_read_ml)
        return False
    ctx.set(
        volume_read_ml=volume, bag_infused_ml=min(volume, s.bag_volume_ml), volume_most_ml=volume
    )
    limit = s.volume_bound_ml * (1 + OVER_FRACTION) + OVER_MARGIN_ML
    if volume > limit:
        if MachineAlarm.OVER_INFUSION.value not in s.latched:
            if pump_may_run(s):
                stop_pump(ctx, first=True)
            ctx.alarm(
                MachineAlarm.OVER_INFUSION,
                f"{volume:g} ml given, at most {s.volume_bound_ml:.1f} ml possible: pump stopped; "
                "a clinician must check and clear",
                at,
            )
        return True
    _judge_under(ctx, volume, at)
    return True


def _judge_under(ctx: Ctx, volume: float, at: datetime) -> None:
    s = ctx.state
    shortfall = s.volume_expected_ml - volume
    short = shortfall > UNDER_FRACTION * s.volume_expected_ml and shortfall > UNDER_MARGIN_ML
    if not short:
        if s.under_since_min is not None:
            ctx.set(under_since_min=None)
        return
    if s.under_since_min is None:
        ctx.set(under_since_min=s.running_min)
        return
    latched = MachineAlarm.UNDER_INFUSION.value in s.latched
    if s.running_min - s.under_since_min >= UNDER_SPAN_MIN and not latched:
        ctx.alarm(
            MachineAlarm.UNDER_INFUSION,
            f"{volume:g} ml given, {s.volume_expected_ml:.1f} ml expected from the confirmed "
            f"rates for {UNDER_SPAN_MIN:g} min of running: check the line",
            at,
        )

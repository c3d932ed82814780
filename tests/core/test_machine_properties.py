"""Properties of the infusion machine over random event sequences (L1, L2, L3, L7, I2, I8, A1-A3).

Each example drives one infusion with random nurse actions, pump read-backs (true ones from an
obedient pump, and false ones: faster, slower, stopped), alarms, link losses and time, and checks
every decision against the invariants the rules promise.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import event as reached
from hypothesis import strategies as st
from machine_scenario import LABEL, REVIEW, T0, FakePump, examples, planned, started

from pumpctl.core.history import Sign
from pumpctl.core.limits import round_down
from pumpctl.core.machine import (
    BagReplaced,
    CommandConfirmed,
    Decision,
    Event,
    Hold,
    InfusionPhase,
    InfusionState,
    LinkLost,
    LinkRestored,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpCompleted,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    ReactionReported,
    Reassessed,
    Release,
    Resolved,
    Restarted,
    ResumeRequested,
    Run,
    SetRate,
    SetVtbi,
    Start,
    Stop,
    TimePassed,
    decide,
)
from pumpctl.core.protocol import RowKind

PROPERTY_SETTINGS = settings(
    max_examples=examples(200),
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
EPS = 1e-6
DELAYS = st.sampled_from([0, 0, 0, 1, 5, 10, 30, 30, 59, 60, 60, 61, 120, 240, 600])
RATES = st.sampled_from([0.0, 25.0, 50.0, 75.0, 100.0, 150.0, 166.6, 200.0, 250.0])
OTHER, SPASM, EDEMA = (
    frozenset({sign}) for sign in (Sign.OTHER, Sign.BRONCHOSPASM, Sign.LARYNGEAL_EDEMA)
)
SIGNS = st.sampled_from([OTHER] * 6 + [SPASM] * 2 + [EDEMA, SPASM | OTHER])
GRADES = st.integers(min_value=1, max_value=4)
NURSE = st.sampled_from(
    ["Resume"] * 5
    + ["Start"] * 2
    + ["Hold", "Release", "Release", "Resolved", "Resolved"]
    + ["Bag", "Stop"]
)
PUMP = st.sampled_from(
    ["true"] * 6 + ["running", "stopped", "completed", "alarm", "clear", "lost", "back"]
)


def event_for(  # noqa: PLR0911, PLR0912 - one return per event family
    data: st.DataObject, pump: FakePump, now: datetime, state: InfusionState
) -> Event | None:
    """One random event (None: just let time pass); a nurse tends an open reaction often."""
    draw = data.draw
    if state.link_lost and draw(st.booleans()):
        running = pump.running
        return LinkRestored(
            running=running, rate_ml_h=pump.rate if running else 0.0, volume_infused_ml=pump.volume
        )
    if state.bag_expired and draw(st.booleans()):
        return BagReplaced(prepared_at=now, actor="nurse")
    if bool(state.alarms) and draw(st.booleans()):
        return PumpAlarmCleared(alarm="occlusion")
    if state.reaction is not None and draw(st.booleans()):
        tending: list[Event] = [
            *[ResumeRequested(actor="nurse")] * 4,
            Resolved(actor="nurse"),
            Reassessed(grade=2, signs=OTHER, actor="nurse"),
            Reassessed(grade=1, signs=OTHER, actor="nurse"),
            Reassessed(grade=3, signs=SPASM, actor="nurse"),
        ]
        return draw(st.sampled_from(tending))
    family = draw(st.sampled_from(["nurse"] * 3 + ["pump"] * 3 + ["reaction"] + ["time"] * 3))
    if family == "time":
        return None
    if family == "reaction":
        if draw(st.booleans()):
            return ReactionReported(grade=draw(GRADES), signs=draw(SIGNS), actor="nurse")
        return Reassessed(grade=draw(GRADES), signs=draw(SIGNS), actor="nurse")
    if family == "nurse":
        nurse: dict[str, Event] = {
            "Start": Start(actor="nurse", course=state.course),
            "Resume": ResumeRequested(actor="nurse"),
            "Hold": Hold(actor="nurse"),
            "Release": Release(actor="nurse"),
            "Resolved": Resolved(actor="nurse"),
            "Stop": Stop(reason="random", actor="nurse"),
            "Bag": BagReplaced(prepared_at=now, actor="nurse"),
        }
        return nurse[draw(NURSE)]
    kind = draw(PUMP)
    volume = pump.volume
    if kind == "true":
        return pump.readback()
    if kind == "running":
        return PumpConfirmedRunning(rate_ml_h=draw(RATES), volume_infused_ml=volume)
    if kind == "stopped":
        return PumpConfirmedStopped(volume_infused_ml=volume)
    if kind == "completed":
        return PumpCompleted(volume_infused_ml=volume)
    if kind == "alarm":
        return PumpAlarmRaised(alarm="occlusion")
    if kind == "clear":
        return PumpAlarmCleared(alarm="occlusion")
    if kind == "lost":
        return LinkLost()
    running = draw(st.booleans())
    rate = draw(RATES) if running else 0.0
    if draw(st.booleans()):
        return Restarted(running=running, rate_ml_h=rate, volume_infused_ml=volume)
    return LinkRestored(running=running, rate_ml_h=rate, volume_infused_ml=volume)


class Checker:
    """Follows one infusion's decisions and asserts the invariants."""

    def __init__(self, state: InfusionState) -> None:
        self.protocol = state.protocol
        self.last_change_running: float | None = None
        self.commanded = 0.0

    def check(self, before: InfusionState, event: Event, now: datetime, d: Decision) -> None:
        after = d.state
        ladder = self.protocol.ladder
        rates = [c for c in d.commands if isinstance(c, SetRate)]
        # L2: never above the maximum.
        assert all(c.rate_ml_h <= ladder.max_rate_ml_h + EPS for c in rates)
        # I8, L3: terminal stays terminal, and never commands the pump to run or change.
        if before.terminal:
            assert after.phase is before.phase
            assert not any(isinstance(c, SetRate | Run | SetVtbi) for c in d.commands)
        # L3: VTBI never exceeds the bag (over every bag).
        for c in d.commands:
            if isinstance(c, SetVtbi):
                assert after.delivered_before_bag_ml + c.volume_ml <= before.bag_ml + EPS
        # Refusals change nothing but what time alone changes.
        if d.refusal is not None:
            assert d.refusal.rule
            alone = decide(before, TimePassed(), now)
            assert after == alone.state
            assert d.commands == alone.commands
        steps = [a for a in d.audit if a.type == "rate_step"]
        resumed = [a for a in d.audit if a.type == "resumed" and a.rule in {"I2", "I5"}]
        for c in rates:
            if self.last_change_running is None:
                # L3: the first rate is the row's initial rate (or less, where L6 caps it).
                assert any(a.type == "started" for a in d.audit)
                assert c.rate_ml_h <= before.initial_rate_ml_h + EPS
                self.last_change_running = after.running_min
            elif c.rate_ml_h > self.commanded + EPS:
                # L1: a rise is one ladder step, one increment at most, after a full interval.
                step = next(a for a in steps if a.data["to_ml_h"] == c.rate_ml_h)
                assert c.rate_ml_h - self.commanded <= ladder.increment_ml_h + EPS
                running_at = step.data["running_min"]
                assert isinstance(running_at, float)
                assert running_at - self.last_change_running >= ladder.interval_min - EPS
                # Never while paused, held, alarmed, link-lost or unconfirmed (A1-A3, L7).
                assert before.phase is InfusionPhase.RUNNING
                assert not before.held
                assert not before.alarms
                assert not before.link_lost
                # Confirmed at the current step: before this event, or by this very read-back
                # when the interval was already complete (time at rate kept across a stop, A1/L9).
                confirms = (
                    isinstance(event, CommandConfirmed)
                    and abs(event.rate_ml_h - before.rate_ml_h) <= EPS
                    and before.at_rate_min >= ladder.interval_min - EPS
                )
                assert confirms or (not before.outstanding and before.pump_running)
                self.last_change_running = running_at
            elif abs(c.rate_ml_h - self.commanded) > EPS:
                self.last_change_running = after.running_min
            self.commanded = c.rate_ml_h
        # I2: a resume after a reaction is never above half the rate at the reaction.
        if resumed:
            assert before.reaction is not None
            half = round_down(
                before.reaction.rate_ml_h * self.protocol.reactions.restart_fraction,
                ladder.rate_resolution_ml_h,
            )
            assert rates
            assert rates[0].rate_ml_h <= half + EPS
        assert after.rate_ml_h <= ladder.max_rate_ml_h + EPS
        assert after.running_min >= before.running_min
        for a in d.audit:  # what the examples reached (shown by --hypothesis-show-statistics)
            if a.type in {"rate_step", "resumed", "withdrawn", "completed", "refused"}:
                reached(f"{a.type} {a.rule}")


@st.composite
def scenario_inputs(draw: st.DrawFn) -> tuple[InfusionState, bool]:
    kind = draw(st.sampled_from(list(RowKind)))
    protocol = draw(st.sampled_from([REVIEW, LABEL]))
    obedient = draw(st.sampled_from([True, True, True, False]))
    return planned(kind, protocol=protocol), obedient


@PROPERTY_SETTINGS
@given(inputs=scenario_inputs(), data=st.data())
def test_L1_L2_L3_L7_I2_I8_A1_A2_A3_invariants_over_random_sequences(
    inputs: tuple[InfusionState, bool], data: st.DataObject
) -> None:
    """Rates stay on the ladder and under 200; terminal is terminal; refusals change nothing."""
    state, obedient = inputs
    checker = Checker(state)
    pump = FakePump()
    now = T0
    start_first = data.draw(st.sampled_from([True, True, True, False]))
    for i in range(data.draw(st.integers(min_value=5, max_value=40))):
        delay = data.draw(DELAYS)
        pump.infuse(timedelta(minutes=delay))
        now += timedelta(minutes=delay)
        event = (
            Start(actor="nurse", course=state.course)
            if start_first and i == 0
            else event_for(data, pump, now, state)
        )
        event = event or TimePassed()
        before = state
        decision = decide(before, event, now)
        checker.check(before, event, now, decision)
        state = decision.state
        for command in decision.pump_commands:
            pump.apply(command)
            if obedient:
                # The obedient pump confirms at once, as the ledger's read-back would (A3).
                fate = pump.confirm(command.id)
                before = state
                confirmed = decide(before, fate, now)
                checker.check(before, fate, now, confirmed)
                state = confirmed.state
                for again in confirmed.pump_commands:
                    pump.apply(again)


@PROPERTY_SETTINGS
@given(data=st.data())
def test_A4_any_state_survives_storage(data: st.DataObject) -> None:
    """A4: whatever state a random sequence reaches, storing and rebuilding it changes nothing."""
    state = planned(data.draw(st.sampled_from(list(RowKind))))
    pump = FakePump()
    now = T0
    for _ in range(data.draw(st.integers(min_value=1, max_value=15))):
        now += timedelta(minutes=data.draw(st.sampled_from([0, 30, 60, 90])))
        event = event_for(data, pump, now, state) or TimePassed()
        decision = decide(state, event, now)
        state = decision.state
        for command in decision.commands:
            pump.apply(command)
    assert InfusionState.from_json(state.to_json()) == state


@PROPERTY_SETTINGS
@given(
    kind=st.sampled_from(list(RowKind)),
    reactions=st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=200),  # running minutes before the reaction
            st.integers(min_value=1, max_value=2),  # grade
            st.integers(min_value=0, max_value=120),  # minutes paused
        ),
        max_size=4,
    ),
)
def test_I2_L1_L6_every_resume_is_at_half_and_the_ladder_restarts_from_it(
    kind: RowKind, reactions: list[tuple[int, int, int]]
) -> None:
    """Grade 1-2 reactions at random moments: resume at half, +50 per full hour, bag delivered."""
    scenario = started(kind)
    ladder = REVIEW.ladder
    for run_min, grade, pause_min in reactions:
        scenario.advance(timedelta(minutes=run_min))
        if scenario.state.terminal:
            break
        at_reaction = scenario.state.rate_ml_h
        scenario.send(ReactionReported(grade=grade, signs=OTHER, actor="nurse"))
        scenario.advance(timedelta(minutes=pause_min))
        scenario.send(ResumeRequested(actor="nurse"))
        assert scenario.state.rate_ml_h <= round_down(at_reaction / 2, 0.1) + EPS
        assert scenario.state.at_rate_min == 0.0
    for _ in range(48):
        if scenario.state.terminal:
            break
        if scenario.state.bag_expired:  # L9: a nurse hangs a new bag with what is left
            scenario.send(BagReplaced(prepared_at=scenario.now, actor="nurse"))
        scenario.advance(timedelta(hours=1))
    assert scenario.state.phase is InfusionPhase.COMPLETED
    assert abs(scenario.state.delivered_ml - scenario.state.bag_ml) < 1e-6
    row = REVIEW.rows.row(kind)
    if row.min_duration_min is not None:
        assert scenario.state.running_min >= row.min_duration_min - EPS  # L6
    # L1 over the whole profile: rises of one increment at most, a full interval apart.
    last_change = 0.0
    previous = scenario.profile[0][1]
    for running, rate in scenario.profile[1:]:
        if rate > previous + EPS:
            assert rate - previous <= ladder.increment_ml_h + EPS
            assert running - last_change >= ladder.interval_min - EPS
        if abs(rate - previous) > EPS:
            last_change = running
        previous = rate

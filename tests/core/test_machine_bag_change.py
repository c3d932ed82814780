"""L9: a bag changed before the start and during an infusion, pinned fact by fact (issue 22).

Each test drives `decide` with a concrete `BagReplaced` and checks what a change of bag does to
the state, which commands it sends and in which order, what it writes to the audit trail, and
the words and the rule of every refusal (docs/clinical-rules.md, L9, L3).
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from machine_scenario import T0, Scenario, facts, minutes, planned, started

from pumpctl.core.machine import (
    BagReplaced,
    ClearVolume,
    Decision,
    Hold,
    InfusionPhase,
    InfusionState,
    LinkLost,
    PumpAlarmRaised,
    PumpConfirmedStopped,
    Run,
    SetRate,
    SetVtbi,
    decide,
)
from pumpctl.core.protocol import RowKind


def occluded(after: timedelta = timedelta(minutes=40)) -> Scenario:
    """The first infusion run for `after` at 50 ml/h, then stopped by an occlusion."""
    scenario = started(RowKind.FIRST)
    scenario.advance(after)
    scenario.pump.running = False
    scenario.send(PumpAlarmRaised(alarm="occlusion"))
    scenario.send(PumpConfirmedStopped(volume_infused_ml=scenario.pump.volume))
    return scenario


def refused(decision: Decision, rule: str, reason: str, state: InfusionState) -> None:
    """`decision` is a refusal under `rule` with `reason`, and changed nothing of `state`."""
    assert decision.refusal is not None
    assert (decision.refusal.kind, decision.refusal.rule, decision.refusal.reason) == (
        "rule",
        rule,
        reason,
    )
    assert decision.commands == ()
    assert decision.state.bag_prepared_at == state.bag_prepared_at
    assert decision.state.bag_volume_ml == state.bag_volume_ml


def test_L9_a_bag_prepared_in_the_future_is_refused_naming_L9() -> None:
    scenario = occluded()
    event = BagReplaced(prepared_at=scenario.now + minutes(1), actor="nurse")
    decision = decide(scenario.state, event, scenario.now)
    refused(decision, "L9", "prepared_at is in the future", scenario.state)
    # a bag prepared at this very instant is not in the future
    now = decide(scenario.state, BagReplaced(prepared_at=scenario.now, actor="n"), scenario.now)
    assert now.refusal is None


def test_L9_a_new_bag_already_past_its_15_h_is_refused_with_its_stability() -> None:
    scenario = occluded()
    event = BagReplaced(prepared_at=scenario.now - timedelta(hours=15), actor="nurse")
    decision = decide(scenario.state, event, scenario.now)
    refused(decision, "L9", "the new bag is past its 15 h stability already", scenario.state)


def test_L9_a_bag_is_changed_only_while_the_pump_is_stopped() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(10))
    event = BagReplaced(prepared_at=scenario.now, actor="nurse")
    decision = decide(scenario.state, event, scenario.now)
    refused(
        decision,
        "L9",
        "the pump is running: a bag is changed only while it is stopped",
        scenario.state,
    )


def test_L3_L9_a_bag_with_nothing_left_to_give_is_refused_under_L3() -> None:
    scenario = occluded()
    state = scenario.state.updated({"bag_infused_ml": scenario.state.bag_volume_ml})
    assert state.remaining_ml == 0
    decision = decide(state, BagReplaced(prepared_at=scenario.now, actor="nurse"), scenario.now)
    refused(decision, "L3", "nothing is left to give", state)


def test_L9_a_bag_changed_before_the_start_is_only_a_new_preparation_time() -> None:
    state = planned(RowKind.FIRST, prepared_at=T0).updated(
        {"bag_warned": True, "bag_expired": True}
    )
    now = T0 + timedelta(hours=3)
    new = T0 + timedelta(hours=2)
    decision = decide(state, BagReplaced(prepared_at=new, actor="nurse"), now)
    assert decision.refusal is None
    assert decision.commands == ()  # no pump to program before the start
    s = decision.state
    assert (s.bag_prepared_at, s.bag_warned, s.bag_expired) == (new, False, False)
    assert s.phase is InfusionPhase.PLANNED
    assert (s.bag_volume_ml, s.delivered_before_bag_ml) == (state.bag_volume_ml, 0.0)
    assert facts(decision.audit) == [
        ("bag_replaced", "L9", {"actor": "nurse", "volume_ml": state.bag_volume_ml})
    ]
    assert decision.audit[0].at == now


def test_L9_a_new_bag_during_a_pump_alarm_is_programmed_with_what_is_left_and_not_run() -> None:
    """40 min at 50 ml/h gave 33.3 ml of the 1000 ml bag: the new bag's VTBI is the rest."""
    scenario = occluded(minutes(40))
    before = scenario.state
    assert before.delivered_ml == pytest.approx(100 / 3)
    first_id = before.next_command_id
    new = scenario.now - minutes(5)
    decision = decide(before, BagReplaced(prepared_at=new, actor="nurse"), scenario.now)
    assert decision.refusal is None
    left = 1000.0 - 100 / 3
    # L9: clear-volume first, then the new VTBI; no rate, no run while the alarm stands (A1)
    assert len(decision.commands) == 2
    clear, vtbi = decision.commands
    assert clear == ClearVolume(first_id)
    assert isinstance(vtbi, SetVtbi)
    assert vtbi.id == first_id + 1
    assert vtbi.volume_ml == pytest.approx(left, abs=0.01)
    s = decision.state
    assert s.next_command_id == first_id + 2
    assert [c.id for c in s.outstanding] == [first_id, first_id + 1]
    assert s.bag_prepared_at == new
    assert (s.bag_warned, s.bag_expired) == (False, False)
    assert s.delivered_before_bag_ml == pytest.approx(100 / 3)
    assert s.bag_infused_ml == 0.0
    assert s.bag_volume_ml == pytest.approx(vtbi.volume_ml)
    assert s.delivered_ml == pytest.approx(100 / 3)  # nothing given is lost or counted twice
    assert s.vtbi_programmed_ml is None  # until the pump reads the new VTBI back (L3)
    assert s.volume_read_ml is None
    assert s.phase is InfusionPhase.RUNNING
    assert s.rate_ml_h == 50.0
    assert facts(decision.audit) == [
        ("bag_replaced", "L9", {"actor": "nurse", "volume_ml": vtbi.volume_ml})
    ]
    assert decision.audit[0].at == scenario.now


def test_L9_A2_a_new_bag_while_the_link_is_lost_is_not_run() -> None:
    scenario = started(RowKind.FIRST)
    scenario.advance(minutes(40))
    scenario.send(LinkLost())
    scenario.pump.running = False
    state = scenario.state.updated({"pump_running": False, "pump_rate_ml_h": 0.0})
    decision = decide(state, BagReplaced(prepared_at=scenario.now, actor="nurse"), scenario.now)
    assert decision.refusal is None
    assert [type(c) for c in decision.commands] == [ClearVolume, SetVtbi]


def test_L9_a_new_bag_after_the_old_one_expired_continues_at_the_step_in_order() -> None:
    """The expiry stopped the pump with no alarm of the pump's own: the new bag is programmed
    and the infusion continues at the same step (clear, VTBI, rate, run)."""
    scenario = started(RowKind.FIRST)
    scenario.send(Hold(actor="dr"))  # L7: 50 ml/h, so 1000 ml would take 20 h
    scenario.advance(timedelta(hours=15))
    assert scenario.state.bag_expired
    assert not scenario.state.pump_running
    first_id = scenario.state.next_command_id
    step = scenario.state.rate_ml_h
    decision = decide(
        scenario.state, BagReplaced(prepared_at=scenario.now, actor="nurse"), scenario.now
    )
    assert decision.refusal is None
    assert [type(c) for c in decision.commands] == [ClearVolume, SetVtbi, SetRate, Run]
    assert [c.id for c in decision.pump_commands] == [first_id + n for n in range(4)]
    rate = decision.commands[2]
    assert isinstance(rate, SetRate)
    assert rate.rate_ml_h == step
    # the step is the current one, by L9, and says why (the rate's record, A3)
    assert (rate.decision.bound_by.rule, rate.decision.bound_by.reason) == (
        "L9",
        "continue at the current step with a new bag",
    )
    assert {a.at for a in decision.audit} == {scenario.now}
    assert not decision.state.bag_expired
    assert (decision.audit[0].type.value, decision.audit[0].rule.value) == ("bag_replaced", "L9")

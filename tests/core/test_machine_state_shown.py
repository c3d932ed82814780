"""The state shown to the staff and its words, cause by cause (interfaces.md section 3; A1, A2,
A3, A4, A6, I2, I4, I5, I8, L3, L7, L9).

`public_state` is what the nurse station and the API show beside an infusion: the state in one
word, the rule, and the sentence a nurse reads. Every cause has its own answer, pinned here word
for word, so a cause answered with another's words (or none) fails (docs/mutation.md)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from machine_scenario import running_first

from pumpctl.core.history import CourseState, Sign
from pumpctl.core.machine import InfusionPhase, InfusionState, OpenReaction
from pumpctl.core.machine.public import PublicState, public_state
from pumpctl.core.rules import Rule
from pumpctl.protocols import load_protocol

PROTOCOL = load_protocol("daratumumab")
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
REACTION = OpenReaction(
    grade=2,
    max_grade=2,
    signs=frozenset({Sign.OTHER}),
    onset_at=T0,
    rate_ml_h=100.0,
    rate_before_ml_h=100.0,
    running_min=60.0,
)
SPASM_HOLD = REACTION.model_copy(
    update={"signs": frozenset({Sign.BRONCHOSPASM}), "bronchospasm_onset_at": T0}
)


def _state(**changes: object) -> InfusionState:
    """A first infusion running at 50 ml/h, then `changes`."""
    return running_first(T0, **changes)


STOPPED = {"pump_running": False, "pump_rate_ml_h": 0.0}


@pytest.mark.parametrize(
    ("changes", "shown"),
    [
        ({}, PublicState("running")),
        ({"phase": InfusionPhase.STARTING}, PublicState("starting")),
        ({"phase": InfusionPhase.PLANNED, **STOPPED}, PublicState("planned")),
        (
            {"stop_unconfirmed": True},
            PublicState("running", Rule.A3, "a stop is not yet confirmed: clamp the line"),
        ),
        (
            {"latched": frozenset({"over_infusion", "safety_envelope"}), **STOPPED},
            PublicState(
                "paused", Rule.L3, "stopped: over_infusion; a clinician must clear it first"
            ),
        ),
        (
            {"latched": frozenset({"safety_envelope"}), **STOPPED},
            PublicState(
                "paused", Rule.L2, "stopped: safety_envelope; a clinician must clear it first"
            ),
        ),
        (
            {"bag_expired": True, **STOPPED},
            PublicState("paused", Rule.L9, "the bag is past its stability: a new bag is needed"),
        ),
        (
            {"alarms": frozenset({"occlusion", "door_open"}), **STOPPED},
            PublicState("paused", Rule.A1, "pump alarm: door_open, occlusion"),
        ),
        (
            {"alarms": frozenset({"low_battery"})},
            PublicState("running", Rule.A1, "pump alarm: low_battery (the pump runs on)"),
        ),
        (
            {"link_lost": True},
            PublicState("running", Rule.A2, "no link to the pump: its state is unknown"),
        ),
        (
            {"unexplained_stop": True, **STOPPED},
            PublicState(
                "paused",
                Rule.A4,
                "found stopped after a restart with no record why: a nurse decides",
            ),
        ),
        (
            {"latched": frozenset({"pump_stopped_unexpectedly"}), **STOPPED},
            PublicState("paused", Rule.A1, "the pump stopped by itself: a nurse resumes it"),
        ),
        (
            # the pump runs again (a nurse's resume is on its way): not "stopped by itself"
            {"latched": frozenset({"pump_stopped_unexpectedly", "comm_loss"})},
            PublicState(
                "running",
                Rule.A2,
                "the link is back: escalation waits for a nurse to clear comm_loss",
            ),
        ),
        (
            {"latched": frozenset({"command_denied", "rate_lower_than_expected"}), **STOPPED},
            PublicState(
                "paused",
                Rule.A1,
                "the pump stands stopped (command_denied, rate_lower_than_expected): a nurse acts",
            ),
        ),
        (
            STOPPED,
            PublicState("paused", Rule.A1, "the pump stands stopped (no alarm): a nurse acts"),
        ),
        (
            # stopped with a run on its way (a resume): not yet a stop to act on
            {"phase": InfusionPhase.STARTING, **STOPPED},
            PublicState("starting"),
        ),
        (
            {"latched": frozenset({"comm_loss"})},
            PublicState(
                "running",
                Rule.A2,
                "the link is back: escalation waits for a nurse to clear comm_loss",
            ),
        ),
        (
            {"held": True},
            PublicState("running", Rule.L7, "escalation held by a clinician"),
        ),
        (
            {"phase": InfusionPhase.PAUSED, "reaction": REACTION, **STOPPED},
            PublicState("paused", Rule.I2, "reaction grade 2: a nurse resumes"),
        ),
        (
            {"phase": InfusionPhase.PAUSED, "reaction": SPASM_HOLD, **STOPPED},
            PublicState("paused", Rule.I4, "bronchospasm: no resume until it is resolved"),
        ),
        (
            {"phase": InfusionPhase.PAUSED, **STOPPED},
            PublicState("paused", Rule.I2, "paused after a reaction: a nurse resumes"),
        ),
        (
            {"phase": InfusionPhase.STOPPED_OBSERVATION, **STOPPED},
            PublicState(
                "stopped_observation", Rule.I5, "grade >= 3: the 2 h observation window is open"
            ),
        ),
        (
            {"phase": InfusionPhase.COMPLETED, **STOPPED},
            PublicState("completed", Rule.L3, "the pump gave the volume to be infused"),
        ),
        (
            {"phase": InfusionPhase.WITHDRAWN, **STOPPED},
            PublicState("withdrawn", Rule.I8, "the patient is withdrawn"),
        ),
        (
            {
                "phase": InfusionPhase.WITHDRAWN,
                "course": CourseState(withdrawn=True, withdrawn_reason="I3: grade 2 edema"),
                **STOPPED,
            },
            PublicState("withdrawn", Rule.I8, "I3: grade 2 edema"),
        ),
        (
            {"phase": InfusionPhase.STOPPED, "stop_reason": "patient request", **STOPPED},
            PublicState("stopped", Rule.A6, "stopped for good: patient request"),
        ),
        (
            {"phase": InfusionPhase.STOPPED, **STOPPED},
            PublicState("stopped", Rule.A6, "stopped for good: no reason"),
        ),
    ],
)
def test_A1_A2_A3_A4_I2_I4_I5_L7_L9_the_state_shown_names_its_cause_word_for_word(
    changes: dict[str, object], shown: PublicState
) -> None:
    """Each cause, the loudest first: the state, its rule and the nurse's words exactly."""
    assert public_state(_state(**changes)) == shown

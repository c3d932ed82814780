"""L9 bag life, L8 entries of infusions given elsewhere and the history file, I8 reinstatement."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from planning_helpers import DEFAULT, infusion

from pumpctl.core.bag import BagLife, BagState, replace_bag
from pumpctl.core.course import NotReinstated, Reinstated, reinstate
from pumpctl.core.history import CourseState, Sign
from pumpctl.core.history_entry import HistoryEntryError, infusion_given_elsewhere, parse_history
from pumpctl.core.planner import plan
from pumpctl.core.protocol import RowKind

PREPARED = datetime(2025, 3, 3, 7, 0, tzinfo=UTC)

# ---------------------------------------------------------------------------------- L9


def test_L9_bag_expires_15h_after_preparation_with_warning_1h_before() -> None:
    bag = BagLife.from_protocol(DEFAULT.bag, PREPARED)
    assert bag.expires_at == PREPARED + timedelta(hours=15)
    assert bag.warn_at == PREPARED + timedelta(hours=14)
    assert bag.status(PREPARED + timedelta(hours=13, minutes=59)).state is BagState.GOOD
    warning = bag.status(PREPARED + timedelta(hours=14, minutes=30))
    assert warning.state is BagState.WARNING
    assert warning.minutes_left == pytest.approx(30)
    expired = bag.status(PREPARED + timedelta(hours=15))
    assert expired.state is BagState.EXPIRED
    assert expired.rule == "L9"
    assert bag.next_deadline(PREPARED) == bag.warn_at
    assert bag.next_deadline(bag.warn_at) == bag.expires_at
    assert bag.next_deadline(bag.expires_at) is None


def test_L9_status_before_preparation_refused() -> None:
    bag = BagLife.from_protocol(DEFAULT.bag, PREPARED)
    with pytest.raises(ValueError, match="L9"):
        bag.status(PREPARED - timedelta(minutes=1))


def test_L9_new_bag_continues_at_current_step_with_remaining_volume() -> None:
    new_prepared = PREPARED + timedelta(hours=15, minutes=20)
    replacement = replace_bag(DEFAULT.bag, new_prepared, remaining_ml=123.4, current_rate_ml_h=100)
    assert replacement.vtbi_ml == 123.4
    assert replacement.rate_ml_h == 100
    assert replacement.bag.expires_at == new_prepared + timedelta(hours=15)
    with pytest.raises(ValueError, match="remaining_ml"):
        replace_bag(DEFAULT.bag, new_prepared, remaining_ml=0, current_rate_ml_h=100)


# ---------------------------------------------------------------------------------- L8


ENTRY = {
    "infusion_number": 1,
    "highest_rate_ml_h": 150,
    "reactions": [{"grade": 2, "signs": ["bronchospasm"], "running_min": 95, "rate_ml_h": 100}],
}


def test_L8_entry_given_elsewhere_becomes_a_record() -> None:
    record = infusion_given_elsewhere(ENTRY)
    assert record.given_elsewhere
    assert record.highest_rate_ml_h == 150
    (reaction,) = record.reactions
    assert (reaction.grade, reaction.max_grade, reaction.running_min, reaction.rate_ml_h) == (
        2,
        2,
        95,
        100,
    )
    assert reaction.signs == frozenset({Sign.BRONCHOSPASM})
    assert reaction.infusion_number == 1
    # and it decides L4: the reaction was in the first 3 h
    assert plan(DEFAULT, 2, CourseState(infusions=(record,))).row.kind is RowKind.FIRST


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"infusion_number": 0}, "infusion_number"),
        ({"highest_rate_ml_h": -1}, "highest_rate_ml_h"),
        (
            {"reactions": [{"grade": 5, "signs": ["other"], "running_min": 1, "rate_ml_h": 50}]},
            "reactions.0.grade",
        ),
        (
            {"reactions": [{"grade": 1, "signs": [], "running_min": 1, "rate_ml_h": 50}]},
            "reactions.0.signs",
        ),
        (
            {"reactions": [{"grade": 1, "signs": ["itch"], "running_min": 1, "rate_ml_h": 50}]},
            "reactions.0.signs",
        ),
        (
            {"reactions": [{"grade": 1, "signs": ["other"], "rate_ml_h": 50}]},
            "reactions.0.running_min",
        ),
        (
            {"reactions": [{"grade": 1, "signs": ["other"], "running_min": 1, "rate_ml_h": 180}]},
            "reactions.0.rate_ml_h",
        ),
        ({"surprise": True}, "surprise: unknown key"),
    ],
)
def test_L8_bad_entry_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(HistoryEntryError, match="L8") as caught:
        infusion_given_elsewhere({**ENTRY, **change})
    assert field in str(caught.value)


def test_history_file_parses_to_course() -> None:
    text = """{"infusions": [
        {"infusion_number": 1, "highest_rate_ml_h": 200, "day": 1},
        {"infusion_number": 1, "highest_rate_ml_h": 200, "day": 2,
         "reactions": [{"grade": 1, "signs": ["other"], "running_min": 30, "rate_ml_h": 50}]},
        {"infusion_number": 2, "highest_rate_ml_h": 200, "given_elsewhere": true}
    ]}"""
    history = parse_history(text, "h.json")
    assert [(i.infusion_number, i.day) for i in history.infusions] == [(1, 1), (1, 2), (2, None)]
    assert history.infusions[2].given_elsewhere


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{not json", "h.json: not valid JSON"),
        ('{"infusions": [{"infusion_number": 1}]}', "infusions.0.highest_rate_ml_h"),
        ('{"infusions": [{"infusion_number": 2, "highest_rate_ml_h": 50, "day": 1}]}', "day"),
        (
            '{"infusions": [{"infusion_number": 1, "highest_rate_ml_h": 50},'
            ' {"infusion_number": 1, "highest_rate_ml_h": 60}]}',
            "recorded twice",
        ),
        ('{"patients": []}', "patients: unknown key"),
    ],
)
def test_history_file_errors_name_the_field(text: str, fragment: str) -> None:
    with pytest.raises(HistoryEntryError) as caught:
        parse_history(text, "h.json")
    assert fragment in str(caught.value)
    assert str(caught.value).startswith("h.json")


# ---------------------------------------------------------------------------------- I8


WITHDRAWN = CourseState(
    infusions=(infusion(1),), withdrawn=True, withdrawn_reason="I3: laryngeal edema"
)


def test_I8_clinician_with_reason_reinstates_and_audits() -> None:
    outcome = reinstate(
        WITHDRAWN, actor="dr house", role="clinician", reason="re-challenge in hospital"
    )
    assert isinstance(outcome, Reinstated)
    assert not outcome.course.withdrawn
    assert outcome.course.infusions == WITHDRAWN.infusions
    assert outcome.audit.rule == "I8"
    assert outcome.audit.actor == "dr house"
    assert outcome.audit.data == {
        "reason": "re-challenge in hospital",
        "withdrawn_reason": "I3: laryngeal edema",
    }


@pytest.mark.parametrize(
    ("role", "reason", "fragment"),
    [
        ("nurse", "stable", "only a clinician"),
        ("clinician", "", "non-empty reason"),
        ("clinician", None, "non-empty reason"),
    ],
)
def test_I8_refusals_name_the_rule(role: str, reason: str | None, fragment: str) -> None:
    outcome = reinstate(WITHDRAWN, actor="someone", role=role, reason=reason)
    assert isinstance(outcome, NotReinstated)
    assert outcome.rule == "I8"
    assert fragment in outcome.reason
    assert WITHDRAWN.withdrawn  # unchanged


def test_I8_not_withdrawn_refused() -> None:
    outcome = reinstate(CourseState(), actor="dr", role="clinician", reason="x")
    assert isinstance(outcome, NotReinstated)
    assert "not withdrawn" in outcome.reason

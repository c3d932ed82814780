"""Protocol files: every shipped file loads; malformed ones are refused naming file, field, why."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from pumpctl.core.protocol import (
    FirstDosePolicy,
    Grade4Policy,
    ProtocolError,
    SubsequentRowPolicy,
)
from pumpctl.protocols import available_protocols, load_protocol, load_protocol_file

SHIPPED = (resources.files("config") / "protocols" / "daratumumab.toml").read_text(encoding="utf-8")


def test_shipped_protocols_all_load() -> None:
    names = available_protocols()
    assert names == ["daratumumab", "daratumumab-label", "daratumumab-split"]
    for name in names:
        protocol = load_protocol(name)
        assert protocol.name == name
        assert protocol.rows.first.bag_ml == 1000
        assert protocol.rows.subsequent.min_duration_min == 210


def test_shipped_variants_carry_their_policies() -> None:
    assert load_protocol("daratumumab").history.subsequent_row_policy is (
        SubsequentRowPolicy.FIRST_TWO_CLEAN_AT_MIN_RATE
    )
    label = load_protocol("daratumumab-label")
    assert label.history.subsequent_row_policy is SubsequentRowPolicy.PREVIOUS_CLEAN
    assert label.reactions.grade4_policy is Grade4Policy.DISCONTINUE
    split = load_protocol("daratumumab-split")
    assert split.dose.first_dose_policy is FirstDosePolicy.SPLIT_TWO_DAYS
    assert split.split_first_dose is not None
    assert split.split_first_dose.mg_per_kg_per_day == 8


def write(tmp_path: Path, replace: dict[str, str], name: str = "daratumumab") -> Path:
    text = SHIPPED
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_copy_loads_by_path(tmp_path: Path) -> None:
    path = write(tmp_path, {})
    assert load_protocol(str(path)).name == "daratumumab"


@pytest.mark.parametrize(
    ("replace", "fragments"),
    [
        (
            {"initial_rate_ml_h = 50.0": "initial_rate_ml_h = 250.0"},
            ["rows.first.initial_rate_ml_h", "above ladder.max_rate_ml_h"],
        ),
        (
            {"increment_ml_h = 50.0": "increment_ml_h = -50.0"},
            ["ladder.increment_ml_h", "greater than 0"],
        ),
        ({"interval_min = 60": "interval_min = 60\nspeed = 3"}, ["ladder.speed", "unknown key"]),
        ({"[ladder]": "[ladder"}, ["not valid TOML"]),
        (
            {'grade4_policy = "observe"': 'grade4_policy = "ignore"'},
            ["reactions.grade4_policy", "observe", "discontinue"],
        ),
        (
            {'"first_two_clean_at_min_rate"': '"always"'},
            ["history.subsequent_row_policy", "previous_clean"],
        ),
        (
            {"min_duration_min = 210": "min_duration_min = 100"},
            ["rows.subsequent.min_duration_min"],
        ),
        (
            {'first_dose_policy = "single"': 'first_dose_policy = "split_two_days"'},
            ["[split_first_dose]"],
        ),
        ({"warn_before_min = 60": "warn_before_min = 900"}, ["bag.warn_before_min"]),
        ({"window_min_min = 15": "window_min_min = 130"}, ["premedication.window_min_min"]),
    ],
)
def test_malformed_protocol_refused_naming_file_field_and_why(
    tmp_path: Path, replace: dict[str, str], fragments: list[str]
) -> None:
    path = write(tmp_path, replace)
    with pytest.raises(ProtocolError) as caught:
        load_protocol_file(path)
    message = str(caught.value)
    assert message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


def test_name_must_match_file(tmp_path: Path) -> None:
    path = write(tmp_path, {}, name="other")
    with pytest.raises(ProtocolError, match="name"):
        load_protocol_file(path)


def test_unknown_protocol_name_lists_shipped() -> None:
    with pytest.raises(ProtocolError, match=r"unknown.*daratumumab-label"):
        load_protocol("nope")

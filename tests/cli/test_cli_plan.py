"""`pumpctl plan`: JSON and table output, refusals, bad arguments (CliRunner, a subprocess)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pumpctl_process import plan_first_infusion
from typer.testing import CliRunner

from pumpctl.cli import app

runner = CliRunner()


def run_json(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["plan", *args, "--json"])
    assert result.exit_code == 0, result.stderr
    document: dict[str, object] = json.loads(result.stdout)
    return document


def steps(document: dict[str, object]) -> list[tuple[float, float]]:
    raw = document["steps"]
    assert isinstance(raw, list)
    return [(s["start_min"], s["rate_ml_h"]) for s in raw]


def test_first_infusion_json() -> None:
    document = run_json("--infusion", "1")
    assert document["bag_ml"] == 1000
    assert document["initial_rate_ml_h"] == 50
    assert document["duration_min"] == 390
    assert document["dose_mg"] is None
    assert steps(document) == [(0, 50), (60, 100), (120, 150), (180, 200)]
    assert document["rules"] == ["L3", "L1", "L2"]
    assert document["duration_hm"] == "6 h 30 min"


def test_subsequent_with_assumed_history_and_weight() -> None:
    document = run_json("--infusion", "3", "--assume-no-reactions", "--weight", "70.5")
    assert document["bag_ml"] == 500
    assert document["initial_rate_ml_h"] == 100
    assert document["dose_mg"] == 1136
    assert steps(document) == [(0, 100), (60, 150), (120, 166.6)]
    assert document["duration_min"] == 210.04
    assert document["rules"] == ["L5", "L6", "L3", "L1", "L2", "D1"]


def test_history_file_with_reaction_repeats_first_row(tmp_path: Path) -> None:
    history = tmp_path / "history.json"
    history.write_text(
        json.dumps(
            {
                "infusions": [
                    {
                        "infusion_number": 1,
                        "highest_rate_ml_h": 200,
                        "reactions": [
                            {"grade": 1, "signs": ["other"], "running_min": 75, "rate_ml_h": 100}
                        ],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    document = run_json("--infusion", "2", "--history", str(history))
    assert document["row"] == "first"
    assert document["bag_ml"] == 1000
    assert document["duration_min"] == 390
    assert document["rules"][0] == "L4"  # type: ignore[index]


def test_label_and_split_protocols() -> None:
    label = run_json("--infusion", "3", "--assume-no-reactions", "--protocol", "daratumumab-label")
    assert label["duration_min"] == 210.04
    day2 = run_json(
        "--infusion", "1", "--protocol", "daratumumab-split", "--day", "2", "--weight", "70"
    )
    assert (day2["day"], day2["bag_ml"], day2["dose_mg"], day2["duration_min"]) == (
        2,
        500,
        560,
        240,
    )


def test_table_output() -> None:
    result = runner.invoke(app, ["plan", "--infusion", "1", "--weight", "70.5"])
    assert result.exit_code == 0, result.stderr
    assert "1000 ml" in result.stdout
    assert "6 h 30 min" in result.stdout
    assert "1136 mg" in result.stdout
    assert "0.2 µm in-line filter" in result.stdout
    assert "methylprednisolone" in result.stdout


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--infusion", "2"], 1, "L4"),
        (["--infusion", "3"], 1, "L5"),
        (["--infusion", "0"], 2, "--infusion"),
        (["--infusion", "1", "--weight", "-70"], 2, "--weight"),
        (["--infusion", "1", "--weight", "0.2"], 2, "--weight"),
        (["--infusion", "1", "--protocol", "nope"], 2, "unknown"),
        (["--infusion", "1", "--day", "1"], 2, "--day"),
        (["--infusion", "1", "--protocol", "daratumumab-split", "--day", "3"], 2, "--day"),
        (["--infusion", "2", "--history", "/nonexistent/h.json"], 2, "cannot read"),
    ],
)
def test_refusals_and_bad_arguments_one_line(args: list[str], code: int, fragment: str) -> None:
    result = runner.invoke(app, ["plan", *args])
    assert result.exit_code == code
    assert fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_malformed_history_names_the_field(tmp_path: Path) -> None:
    history = tmp_path / "h.json"
    history.write_text('{"infusions": [{"infusion_number": 1, "highest_rate_ml_h": "fast"}]}')
    result = runner.invoke(app, ["plan", "--infusion", "2", "--history", str(history)])
    assert result.exit_code == 2
    assert "infusions.0.highest_rate_ml_h" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_withdrawn_course_refused_naming_I8(tmp_path: Path) -> None:
    history = tmp_path / "h.json"
    history.write_text(
        '{"infusions": [{"infusion_number": 1, "highest_rate_ml_h": 200}], "withdrawn": true}'
    )
    result = runner.invoke(app, ["plan", "--infusion", "2", "--history", str(history)])
    assert result.exit_code == 1
    assert result.stderr.startswith("pumpctl plan: I8")


def test_history_and_assume_exclusive(tmp_path: Path) -> None:
    history = tmp_path / "h.json"
    history.write_text("{}")
    result = runner.invoke(
        app, ["plan", "--infusion", "2", "--history", str(history), "--assume-no-reactions"]
    )
    assert result.exit_code == 2
    assert "exclude" in result.stderr


def test_real_subprocess_console_script(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "pumpctl"
    assert script.exists(), f"console script missing: {script}"
    plan_first_infusion([str(script)], tmp_path)

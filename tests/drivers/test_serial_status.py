"""The status tables: the spec's mapping, and inverses derived from it that say one thing each.

The driver reads with `STATE_OF_STATUS` and `ALARM_OF_CODE`; the simulator speaks with their
derived inverses. Where the driver must know exactly what the pump meant, the table is
one-to-one: each alarm but a malfunction has one code, each state a pump can be in one character.
"""

from __future__ import annotations

import ast
from pathlib import Path

from drivers.base import Alarm, PumpState
from drivers.serial.codec import ALARM_CODES, STATUS_CHARS
from drivers.serial.status import (
    ALARM_OF_CODE,
    ALARM_OF_STATUS,
    CODE_OF_ALARM,
    MOVING_STATUS,
    STATE_OF_STATUS,
    STATUS_OF_STATE,
    first_key_of_each_value,
)

ROOT = Path(__file__).resolve().parents[2]


def test_status_and_alarm_mapping_is_the_spec_table() -> None:
    assert STATE_OF_STATUS == {
        "I": PumpState.RUNNING,
        "S": PumpState.STOPPED,
        "P": PumpState.PAUSED,
        "T": PumpState.PAUSED,
        "U": PumpState.PAUSED,
        "W": PumpState.ALARM,
        "X": PumpState.ALARM,
    }
    assert ALARM_OF_STATUS == {"W": Alarm.MALFUNCTION, "X": Alarm.MALFUNCTION}
    assert ALARM_OF_CODE == {
        "S": Alarm.OCCLUSION,
        "T": Alarm.COMM_TIMEOUT,
        "R": Alarm.MALFUNCTION,
        "E": Alarm.MALFUNCTION,
        "O": Alarm.MALFUNCTION,
    }


def test_tables_cover_exactly_what_the_codec_accepts() -> None:
    """A character or code the codec lets through always has a meaning, and no meaning is kept
    for one it refuses."""
    assert set(STATE_OF_STATUS) == set(STATUS_CHARS)
    assert set(ALARM_OF_CODE) == set(ALARM_CODES)
    assert MOVING_STATUS.issubset(STATE_OF_STATUS)


def test_alarm_codes_are_one_to_one_except_for_a_malfunction() -> None:
    """Occlusion and the safe-mode timeout each have exactly one code: the driver must tell them
    apart. Only a malfunction has several (power reset, program error, out of range)."""
    codes_of = {alarm: [c for c, a in ALARM_OF_CODE.items() if a is alarm] for alarm in Alarm}
    shared = {alarm for alarm, codes in codes_of.items() if len(codes) > 1}
    assert shared == {Alarm.MALFUNCTION}
    assert codes_of[Alarm.OCCLUSION] == ["S"]
    assert codes_of[Alarm.COMM_TIMEOUT] == ["T"]


def test_code_of_alarm_is_the_derived_inverse() -> None:
    """What the simulator sends reads back as the same alarm, in the reporting order."""
    assert CODE_OF_ALARM == {Alarm.COMM_TIMEOUT: "T", Alarm.OCCLUSION: "S", Alarm.MALFUNCTION: "E"}
    assert list(CODE_OF_ALARM) == [Alarm.COMM_TIMEOUT, Alarm.OCCLUSION, Alarm.MALFUNCTION]
    for alarm, code in CODE_OF_ALARM.items():
        assert ALARM_OF_CODE[code] is alarm


def test_status_of_state_is_the_derived_inverse() -> None:
    """Each state a pump can be in has one character that reads back as that state; the
    malfunction characters W and X are never shown, and a shown running pump is moving."""
    assert STATUS_OF_STATE == {
        PumpState.RUNNING: "I",
        PumpState.STOPPED: "S",
        PumpState.PAUSED: "P",
    }
    for state, char in STATUS_OF_STATE.items():
        assert STATE_OF_STATUS[char] is state
        assert char not in ALARM_OF_STATUS
        assert (char in MOVING_STATUS) == (state is PumpState.RUNNING)


def test_first_key_of_each_value_keeps_the_first_key_and_the_order() -> None:
    assert first_key_of_each_value({"a": 1, "b": 2, "c": 1, "d": 3}) == {1: "a", 2: "b", 3: "d"}
    assert list(first_key_of_each_value({"x": 2, "y": 1, "z": 2})) == [2, 1]


def _assigned_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_the_simulator_keeps_no_copy_of_the_protocol_constants() -> None:
    """The gap rule, wire time, SAF's range and the tables are the driver's, imported: a copy
    could drift and let the driver and the simulator agree on a mistake."""
    shared = {
        "PACKET_GAP_S",
        "BITS_PER_BYTE",
        "MAX_SAFE_MODE_S",
        "STATE_OF_STATUS",
        "STATUS_OF_STATE",
        "ALARM_OF_CODE",
        "CODE_OF_ALARM",
    }
    for path in sorted((ROOT / "simulator").glob("*.py")):
        assert _assigned_names(path) & shared == set(), path.name

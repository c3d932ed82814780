"""New Era status characters and alarm codes <-> pumpctl states and alarms (interfaces.md 1).

The protocol's words as pumpctl reads them: what a status character or an `A?<code>` alarm reply
means for the pump's state and alarms. The driver reads with the tables; the simulator, the
device side, speaks with their inverses, which are derived here from the same tables, never kept
by hand. Pure tables, no I/O.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

from drivers.base import Alarm, PumpState

__all__ = [
    "ALARM_OF_CODE",
    "ALARM_OF_STATUS",
    "CODE_OF_ALARM",
    "MOVING_STATUS",
    "STATE_OF_STATUS",
    "STATUS_OF_STATE",
    "first_key_of_each_value",
]

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V", bound=Hashable)


def first_key_of_each_value(table: Mapping[_K, _V]) -> dict[_V, _K]:
    """The inverse of `table`: each value to its first key, in the order values first appear."""
    inverse: dict[_V, _K] = {}
    for key, value in table.items():
        inverse.setdefault(value, key)
    return inverse


#: Status characters to pumpctl states (interfaces.md section 1 table). A state with several
#: characters is shown by a pump (the simulator) with the first of them.
STATE_OF_STATUS: dict[str, PumpState] = {
    "I": PumpState.RUNNING,
    "S": PumpState.STOPPED,
    "P": PumpState.PAUSED,
    "T": PumpState.PAUSED,
    "U": PumpState.PAUSED,
    "W": PumpState.ALARM,
    "X": PumpState.ALARM,
}
#: An infusion pump must never withdraw or purge: W and X are a malfunction.
ALARM_OF_STATUS: dict[str, Alarm] = {"W": Alarm.MALFUNCTION, "X": Alarm.MALFUNCTION}
#: Status characters of a moving motor (infusing, withdrawing, purging): not a confirmed stop.
MOVING_STATUS = frozenset("IWX")
#: The character a pump shows in each state it can be in. Withdrawing and purging are not such
#: states (they are malfunctions), so an alarmed pump has none: it shows `S` (stopped) and says
#: its alarm with an `A?<code>` reply.
STATUS_OF_STATE: dict[PumpState, str] = first_key_of_each_value(
    {char: state for char, state in STATE_OF_STATUS.items() if char not in ALARM_OF_STATUS}
)

#: Alarm codes of `A?<code>` replies to pumpctl alarms, in the order a pump reports standing
#: alarms. An alarm with several codes is reported with the first of them.
ALARM_OF_CODE: dict[str, Alarm] = {
    "T": Alarm.COMM_TIMEOUT,
    "S": Alarm.OCCLUSION,
    "E": Alarm.MALFUNCTION,
    "R": Alarm.MALFUNCTION,
    "O": Alarm.MALFUNCTION,
}
#: The alarms the protocol can say and the code a pump reports each with, in reporting order.
CODE_OF_ALARM: dict[Alarm, str] = first_key_of_each_value(ALARM_OF_CODE)

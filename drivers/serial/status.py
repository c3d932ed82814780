"""New Era status characters and alarm codes -> pumpctl states and alarms (interfaces.md section 1).

The protocol's words as pumpctl reads them: what a status character or an `A?<code>` alarm reply
means for the pump's state and alarms. Pure tables, no I/O.
"""

from __future__ import annotations

from drivers.base import Alarm, PumpState

__all__ = ["ALARM_OF_CODE", "ALARM_OF_STATUS", "MOVING_STATUS", "STATE_OF_STATUS"]

#: Status characters to pumpctl states (interfaces.md section 1 table).
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
#: Alarm codes of `A?<code>` replies to pumpctl alarms.
ALARM_OF_CODE: dict[str, Alarm] = {
    "S": Alarm.OCCLUSION,
    "T": Alarm.COMM_TIMEOUT,
    "R": Alarm.MALFUNCTION,
    "E": Alarm.MALFUNCTION,
    "O": Alarm.MALFUNCTION,
}
#: Status characters of a moving motor (infusing, withdrawing, purging): not a confirmed stop.
MOVING_STATUS = frozenset("IWX")

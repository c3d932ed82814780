"""The async controller: carries the rules core's commands to the pumps and their facts back.

- `carry`: one pump command to a driver, and its fate by read-back (A3).
- `supervisor`: one pump's supervisor (cached status, queue, ledger ids, watchdog, deadlines).
- `controller`: every supervisor under one task group; the virtual clock's settle step.
"""

from pumpctl.controller.carry import COMMAND_TIMEOUT_S, carry
from pumpctl.controller.controller import Controller
from pumpctl.controller.supervisor import POLL_INTERVAL_S, PumpSupervisor, ledger_id

__all__ = [
    "COMMAND_TIMEOUT_S",
    "POLL_INTERVAL_S",
    "Controller",
    "PumpSupervisor",
    "carry",
    "ledger_id",
]

"""An in-process pump: `drivers.base.Pump` driving a simulated `PumpModel` directly (link "memory").

No codec, no port, no broker: for rule-level tests and demos (`pumpctl serve --simulate N --link
memory`). It proves nothing about a transport; the drivers' conformance suite (tests/drivers)
and the tests kept on a transport do that. What the controller relies on behaves as on a wire:

- every command reaches the model after a turn of the event loop and returns the status read
  after it (A3's read-back); every answer is a contact (`_touch`, A2) and is published;
- `stop` is the base class's confirmed stop (A3) over `_stop_once`: the model's stop, then its
  state; a read-back still showing it running is said so;
- the model names its standing alarms in every status, as an MQTT pump does
  (`reports_alarm_clearance`); a command the model refuses (an alarm standing, out of range) is
  `PumpCommandRejected` with its code, after a contact;
- the model's faults (simulator/model.py): `no_reply` (the command is lost, nothing done:
  `PumpTimeout` after the command timeout), `late_reply_s` (done, answered that late:
  `PumpTimeout` when that is past the command timeout), `refuse_next` (`?NA`, nothing done),
  `rate_delay_s` (the model's own), `garble_replies` (a garbled answer is dropped and asked
  again, as the MQTT driver resends, `MAX_RESENDS` times within the command timeout),
  `drop_connection` (the link is lost while it is set: commands fail at once with
  `PumpConnectionError`; the first command after it is cleared links again and reads the real
  state, A2). `damage_commands` is a serial packet's fault: no effect here, as on MQTT.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from drivers.base import (
    LINK_TIMEOUT_S,
    STOP_ATTEMPTS,
    Pump,
    PumpCommandRejected,
    PumpConnectionError,
    PumpState,
    PumpStatus,
    PumpTimeout,
)
from simulator.model import PumpModel, SimulatorError

__all__ = ["COMMAND_TIMEOUT_S", "MAX_RESENDS", "MemoryPump"]

_log = logging.getLogger(__name__)

#: A3: a command not answered within this many (wire) seconds is unconfirmed.
COMMAND_TIMEOUT_S = 2.0
#: Garbled answers asked for again within one command, as the MQTT driver resends.
MAX_RESENDS = 2


class MemoryPump(Pump):
    """`model` as a pump, in this process (module docstring)."""

    reports_alarm_clearance = True  # the model names its standing alarms in every status

    def __init__(
        self,
        model: PumpModel,
        *,
        link_timeout_s: float = LINK_TIMEOUT_S,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> None:
        super().__init__(model.pump_id, link_timeout_s=link_timeout_s)
        self.model = model
        self.command_timeout_s = command_timeout_s
        self._open = False
        self._ever_linked = False

    async def connect(self) -> None:
        """Link and read the model's state (a link cut at the start starts unlinked, A2)."""
        self._open = True
        if self.model.faults.drop_connection:
            _log.warning("pump %s: starts unlinked (drop_connection) (A2)", self.pump_id)
            return
        await self.read_status()

    async def close(self) -> None:
        """Let stops under way finish, then unlink."""
        await self._finish_stops()
        self._open = False
        self._set_linked(linked=False)

    # -- commands ---------------------------------------------------------------------------

    async def read_status(self, *, command_id: str | None = None) -> PumpStatus:
        return await self._command("read_status", None, command_id)

    async def set_rate(self, rate_ml_h: float, *, command_id: str | None = None) -> PumpStatus:
        return await self._command("set_rate", lambda: self.model.set_rate(rate_ml_h), command_id)

    async def set_vtbi(self, vtbi_ml: float, *, command_id: str | None = None) -> PumpStatus:
        return await self._command("set_vtbi", lambda: self.model.set_vtbi(vtbi_ml), command_id)

    async def run(self, *, command_id: str | None = None) -> PumpStatus:
        return await self._command("run", self.model.run, command_id)

    async def clear_volume(self, *, command_id: str | None = None) -> PumpStatus:
        return await self._command("clear_volume", self.model.clear_volume, command_id)

    async def _stop_once(self, command_id: str | None) -> tuple[PumpStatus, str | None]:
        status = await self._command("stop", self.model.stop, command_id)
        if status.state is not PumpState.RUNNING:
            return status, None
        return status, "the model still reports running"

    @property
    def stop_worst_case_s(self) -> float:
        """`STOP_ATTEMPTS` x the command timeout: each attempt, a late or lost answer included,
        is bounded by one command timeout."""
        return STOP_ATTEMPTS * self.command_timeout_s

    # -- one command ------------------------------------------------------------------------

    async def _command(
        self, operation: str, act: Callable[[], None] | None, command_id: str | None
    ) -> PumpStatus:
        """Carry `act` (a model call, or None for a status read) out as a wire would (module
        docstring), and return the model's status after it."""
        faults = self.model.faults
        if not self._open:
            raise PumpConnectionError(self.pump_id, operation, "closed", command_id=command_id)
        await asyncio.sleep(0)  # the command travels: whatever was queued runs first
        if faults.drop_connection:
            if self.connected:
                _log.warning("pump %s: link lost (drop_connection) (A2)", self.pump_id)
            self._set_linked(linked=False)
            raise PumpConnectionError(
                self.pump_id, operation, "link lost (drop_connection)", command_id=command_id
            )
        if faults.no_reply:
            await self._silence(operation, command_id)
        refused: SimulatorError | None = None
        if faults.take_refusal():
            refused = SimulatorError("NA", f"{operation}: refused (fault)")
        elif act is not None:
            try:
                act()
            except SimulatorError as exc:
                refused = exc
        await self._answer(operation, command_id)
        status = self.model.status(self._touch())
        if not self.connected:
            if self._ever_linked:
                _log.info("pump %s: link back, pump %s (A2)", self.pump_id, status.state.value)
            self._ever_linked = True
            self._set_linked(linked=True)
        self._broadcast.publish(status)
        if refused is not None:
            raise PumpCommandRejected(
                self.pump_id, operation, str(refused), refused.code, command_id=command_id
            )
        return status

    async def _answer(self, operation: str, command_id: str | None) -> None:
        """Wait as the answer would come: `late_reply_s` late, and asked again for each garbled
        one (at most `MAX_RESENDS` times); none in time is `PumpTimeout`."""
        faults = self.model.faults
        late = faults.late_reply_s
        for _answer in range(MAX_RESENDS + 1):
            if not faults.take_garble():
                if late >= self.command_timeout_s:
                    await self._silence(operation, command_id)
                if late > 0:
                    await asyncio.sleep(late)  # the wire's delay, bounded above
                return
        await self._silence(operation, command_id)

    async def _silence(self, operation: str, command_id: str | None) -> None:
        """No valid answer: the command timeout runs out (wire time), then `PumpTimeout`."""
        await asyncio.sleep(self.command_timeout_s)
        raise PumpTimeout(
            self.pump_id,
            operation,
            f"no valid answer within {self.command_timeout_s} s",
            command_id=command_id,
        )

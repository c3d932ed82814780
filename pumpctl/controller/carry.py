"""Carry one of the core's pump commands to a driver and learn its fate (A3).

The fate is judged by reading back the pump's state: the status a driver returns after the
command is that read-back. Confirmed when it shows the command's effect; denied when the pump
refused; unconfirmed when neither came within the command timeout and one retry. No command
other than a stop is ever carried out twice: after a timeout the pump's state is read first, and
the command is sent again only if the read shows it was not carried out, and no stop was sent
since (MQTT pumps also drop a repeated id); when the read fails too, the fate is unconfirmed.
A stop goes through the driver's own confirmed stop (retried, bounded, "clamp the line"); one
that got no valid answer is sent again within the command timeout and once after it, and is
unconfirmed only then, or at once when the link is known lost or the pump answered otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from drivers.base import (
    Pump,
    PumpCommandRejected,
    PumpError,
    PumpProtocolError,
    PumpState,
    PumpStatus,
    PumpTimeout,
)
from pumpctl.core.machine import (
    ClearVolume,
    CommandConfirmed,
    CommandDenied,
    CommandUnconfirmed,
    PumpCommand,
    Run,
    SetRate,
    SetVtbi,
    StopPump,
)

__all__ = ["COMMAND_TIMEOUT_S", "Carried", "Fate", "carry", "confirmation", "shows_effect"]

_log = logging.getLogger(__name__)

#: A3: a command not confirmed within this (wire seconds) is retried once, then unconfirmed.
COMMAND_TIMEOUT_S = 2.0
#: Round trips through a New Era pump's 4 significant digits (interfaces.md section 1).
RATE_TOLERANCE_ML_H = 0.1
VOLUME_TOLERANCE_ML = 0.5

Fate = CommandConfirmed | CommandDenied | CommandUnconfirmed


def confirmation(command_id: int, status: PumpStatus) -> CommandConfirmed:
    """The confirmation of machine command `command_id` by the read-back `status`."""
    running = status.state is PumpState.RUNNING
    return CommandConfirmed(
        command_id=command_id,
        running=running,
        rate_ml_h=status.rate_ml_h if running else 0.0,
        volume_infused_ml=status.volume_infused_ml,
        vtbi_ml=status.vtbi_ml,
    )


def shows_effect(command: PumpCommand, status: PumpStatus) -> bool:
    """The read-back shows `command` carried out."""
    match command:
        case SetRate(rate_ml_h=rate):
            return abs(status.rate_ml_h - rate) <= RATE_TOLERANCE_ML_H
        case SetVtbi(volume_ml=volume):
            return abs(status.vtbi_ml - volume) <= VOLUME_TOLERANCE_ML
        case ClearVolume():
            return status.volume_infused_ml <= VOLUME_TOLERANCE_ML
        case Run():
            return status.state is PumpState.RUNNING
        case StopPump():
            return status.state is not PumpState.RUNNING
    return False  # pragma: no cover - every command kind is listed above


async def _send(pump: Pump, command: PumpCommand, ledger_id: str) -> PumpStatus:
    match command:
        case SetRate(rate_ml_h=rate):
            return await pump.set_rate(rate, command_id=ledger_id)
        case SetVtbi(volume_ml=volume):
            return await pump.set_vtbi(volume, command_id=ledger_id)
        case ClearVolume():
            return await pump.clear_volume(command_id=ledger_id)
        case Run():
            return await pump.run(command_id=ledger_id)
        case StopPump():
            return await pump.stop(command_id=ledger_id)
    raise AssertionError(command)  # pragma: no cover - every command kind is listed above


Carried = tuple[Fate, PumpStatus | None]
"""A command's fate, and the read-back that decided it (None when nothing was read)."""


async def carry(  # noqa: PLR0911 - one exit per fate and read-back
    pump: Pump,
    command: PumpCommand,
    ledger_id: str,
    *,
    timeout_s: float = COMMAND_TIMEOUT_S,
    superseded: Callable[[], bool] = lambda: False,
) -> Carried:
    """Send `command` (ledger id `ledger_id`); its fate and read-back, never raising.

    `superseded()` true means a stop was sent since the command was taken: it is then never
    sent again (a run retried after a reaction's stop would run the pump), and reported
    dropped unless the read shows it was carried out."""
    if isinstance(command, StopPump):
        return await _stop(pump, command, ledger_id, timeout_s)
    for attempt in (1, 2):
        try:
            async with asyncio.timeout(timeout_s):
                status = await _send(pump, command, ledger_id)
        except PumpCommandRejected as error:
            return CommandDenied(
                command_id=command.id, reason=f"{error.code}: {error.message}"
            ), None
        except (PumpError, TimeoutError) as error:
            _log.warning(
                "pump %s: %s %s attempt %d: %s", pump.pump_id, command.op, ledger_id, attempt, error
            )
            read = await _read(pump, timeout_s)
            if read is None:
                return CommandUnconfirmed(command_id=command.id), None  # unknown: never twice
            if shows_effect(command, read):
                return confirmation(command.id, read), read  # it was carried out after all
            if superseded():
                reason = "not sent again: a stop came since"
                return CommandDenied(command_id=command.id, reason=reason, dropped=True), read
            continue  # the read shows it was not carried out: send it again once
        if shows_effect(command, status):
            return confirmation(command.id, status), status
        read = await _read(pump, timeout_s)  # a late effect (a rate applied a bit later)
        if read is not None and shows_effect(command, read):
            return confirmation(command.id, read), read
        return CommandUnconfirmed(command_id=command.id), read
    return CommandUnconfirmed(command_id=command.id), None


async def _stop(pump: Pump, command: StopPump, ledger_id: str, timeout_s: float) -> Carried:
    """A3 for a stop: not confirmed within the command timeout, retry, then alarm.

    Each attempt is the driver's confirmed stop (its own tries, and its retry of a read-back
    still showing the pump moving). One that got no valid answer (PumpTimeout,
    PumpProtocolError) is sent again, under the same ledger id (the same stop: an MQTT pump
    that executed it acknowledges it again), while the command timeout has not passed since
    the first, and once more after it: the fate is unconfirmed only when a stop sent after
    the timeout failed too. A late answer to any of them is the real confirmation. Any other
    failure is final at once: the link known lost (nothing can be sent), the pump refusing,
    or the driver's own "pump did not stop" (its read-backs showed the pump moving)."""
    loop = asyncio.get_running_loop()
    timed_out = loop.time() + timeout_s
    attempt = 1
    while True:
        sent = loop.time()
        try:
            status = await pump.stop(command_id=ledger_id)
        except (PumpTimeout, PumpProtocolError) as error:
            if sent < timed_out:
                _log.warning(
                    "pump %s: stop %s attempt %d not answered: %s; sending it again (A3)",
                    pump.pump_id,
                    ledger_id,
                    attempt,
                    error,
                )
                attempt += 1
                continue
            _log.error(
                "pump %s: stop %s not confirmed within the command timeout and a retry"
                " (%d attempts): %s",
                pump.pump_id,
                ledger_id,
                attempt,
                error,
            )
            return CommandUnconfirmed(command_id=command.id), None
        except PumpError as error:
            _log.error("pump %s: stop %s not confirmed: %s", pump.pump_id, ledger_id, error)
            return CommandUnconfirmed(command_id=command.id), None
        return confirmation(command.id, status), status


async def _read(pump: Pump, timeout_s: float) -> PumpStatus | None:
    try:
        async with asyncio.timeout(timeout_s):
            return await pump.read_status()
    except (PumpError, TimeoutError):
        return None

"""The controller's link to the store: every decision recorded, and supervision rebuilt from it.

`StoreRecorder` is a supervisor's recorder: each decision's new state, audit events, ledger rows
and alarms go to the store in one transaction (the stop has already left: a stop never waits for
the disk), and each command's fate updates its ledger row (A3). A decision that only moved time
(a status that changed nothing but the running time) is saved at most every `QUIET_SAVE_S` wall
seconds: after a crash the running time lost is at most that, which only lengthens the
infusion (A4 never counts what it does not know).

`recover` rebuilds every supervised infusion from the store and each pump's real state (A4).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from drivers.base import PumpError
from pumpctl.controller.supervisor import PumpSupervisor, ledger_id
from pumpctl.core.machine import (
    CommandConfirmed,
    CommandDenied,
    CommandUnconfirmed,
    Decision,
    Event,
    RaiseAlarm,
)
from pumpctl.store import CommandFate, LedgerEntry, Store, StoreError

__all__ = ["QUIET_SAVE_S", "StoreRecorder", "recover"]

_log = logging.getLogger("pumpctl.controller")

#: Wall seconds between two saves of decisions that changed nothing but time.
QUIET_SAVE_S = 10.0


class StoreRecorder:
    """Records the decisions of one pump's infusions (a supervisor's `recorder`)."""

    def __init__(self, store: Store, pump_id: str, *, quiet_save_s: float = QUIET_SAVE_S) -> None:
        self.store = store
        self.pump_id = pump_id
        self.quiet_save_s = quiet_save_s
        self._last_save = 0.0

    def __call__(self, infusion_id: str, event: Event, decision: Decision) -> None:
        """Record one decision now, on the caller's thread (a harness's recorder)."""
        job = self.job(infusion_id, event, decision)
        if job is not None:
            job()

    def quiet(self, event: Event, decision: Decision) -> bool:
        """A decision that changed nothing but time and is no command's fate: a newer one
        holds all of it (the writer may replace it while both wait)."""
        fate = isinstance(event, CommandConfirmed | CommandDenied | CommandUnconfirmed)
        return _time_only(decision) and not fate

    def job(self, infusion_id: str, event: Event, decision: Decision) -> Callable[[], None] | None:
        """The write that records one decision (and, for a fate, the ledger row's fate), to
        run on the store's writer thread; None for a time-only decision saved too recently."""
        now = time.monotonic()
        if _time_only(decision) and now - self._last_save < self.quiet_save_s:
            return None
        self._last_save = now
        at = decision.state.last_event_at
        assert at is not None
        number = int(infusion_id)
        ledger = [
            LedgerEntry.of(
                c,
                ledger_id=ledger_id(infusion_id, c.id),
                pump_id=self.pump_id,
                sent_at=at,
                infusion_id=number,
            )
            for c in decision.pump_commands
        ]
        alarms = [c for c in decision.commands if isinstance(c, RaiseAlarm)]
        actor = getattr(event, "actor", None)
        fate = (
            (_FATES[type(event)], ledger_id(infusion_id, event.command_id))
            if isinstance(event, CommandConfirmed | CommandDenied | CommandUnconfirmed)
            else None
        )
        store = self.store

        def write() -> None:
            store.save_infusion(
                number, decision.state, decision.audit, ledger, at=at, actor=actor, alarms=alarms
            )
            if fate is not None:
                try:
                    store.record_fate(fate[1], fate[0], at=at)
                except StoreError as error:  # a fate of an unknown id is logged, not fatal
                    _log.warning("ledger: fate of %s not recorded: %s", fate[1], error)

        return write


def _time_only(decision: Decision) -> bool:
    """A decision with no audit event and no command: it moved only time."""
    return not decision.audit and not decision.commands


_FATES: Mapping[type, CommandFate] = {
    CommandConfirmed: CommandFate.CONFIRMED,
    CommandDenied: CommandFate.DENIED,
    CommandUnconfirmed: CommandFate.UNCONFIRMED,
}


async def recover(store: Store, supervisors: Mapping[str, PumpSupervisor]) -> list[str]:
    """A4: attach every supervised infusion of the store to its pump's supervisor and reconcile
    it with the pump's real state; the ids of the infusions taken back."""
    taken: list[str] = []
    for stored in store.live_infusions():
        supervisor = supervisors.get(stored.pump_id)
        if supervisor is None:
            _log.error(
                "recovery: infusion %s is on pump %s, which is not configured",
                stored.id,
                stored.pump_id,
            )
            continue
        supervisor.attach(str(stored.id), stored.state, recovered=True)
        try:
            async with asyncio.timeout(supervisor.command_timeout_s * 3):
                status = await supervisor.pump.read_status()
        except (PumpError, TimeoutError) as error:
            # Unreachable now: communication loss (A2) until the link is back and reconciled.
            _log.error("recovery: pump %s unreachable: %s", stored.pump_id, error)
            supervisor.link_up = True
            supervisor.on_link_lost()
        else:
            supervisor.restarted(status)
        taken.append(str(stored.id))
    return taken

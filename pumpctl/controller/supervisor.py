"""One pump's supervisor: the cached status, the command queue and ledger, the link watchdog,
the clock's deadlines, and `decide()` fed with all of it.

Every input becomes an event for the rules core (`submit`), decided at once on the clinical
clock; the decision's pump commands go to the driver, its audit events to the recorder. A stop
is sent at once, on its own, ahead of the queue (I1); it never waits for the disk or for another
command's answer, and it cancels the escalations still queued. Other commands go one at a time;
one decided under a state that has since been stopped is dropped, not sent. Each command's fate
goes back to the core as an event naming its id (A3), then to the command's future (`fates`),
registered before the command is sent: a route that waits for a stop's fate awaits those.
Readers use the cached status, never the wire.

Wire time (polling, the command timeout, the link timeout) runs on the event loop; clinical time
(deadlines, the pump's expected completion) on the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from drivers.base import Alarm, Pump, PumpError, PumpState, PumpStatus
from pumpctl.clock import Clock, RealClock, independent_time
from pumpctl.controller.carry import (
    COMMAND_TIMEOUT_S,
    RATE_TOLERANCE_ML_H,
    VOLUME_TOLERANCE_ML,
    Fate,
    carry,
    confirmation,
)
from pumpctl.controller.envelope import SafetyEnvelope, Trip
from pumpctl.core.machine import (
    COMPLETION_TOLERANCE_ML,
    ClearAlarm,
    CommandDenied,
    CommandOp,
    CommandUnconfirmed,
    Decision,
    Event,
    InfusionPhase,
    InfusionState,
    LinkLost,
    LinkRestored,
    PumpAlarmCleared,
    PumpAlarmRaised,
    PumpCommand,
    PumpCompleted,
    PumpConfirmedRunning,
    PumpConfirmedStopped,
    PumpPowerReset,
    RaiseAlarm,
    ReactionReported,
    Restarted,
    ResumeRequested,
    SafetyEnvelopeTripped,
    SentCommand,
    SetRate,
    StopPump,
    TimePassed,
    decide,
    goes_backwards,
    lost_program,
    next_deadline,
)
from pumpctl.core.rules import Rule

__all__ = ["POLL_INTERVAL_S", "WRITE_AHEAD_S", "PumpSupervisor", "Recorder", "ledger_id"]

_log = logging.getLogger("pumpctl.controller")

#: Wire seconds between two looks at an idle link's status (A2 freshness): a serial pump is
#: read each time; on the real clock an MQTT pump's driver answers from the status it pushed
#: while that is fresh and asks only once it is overdue (`Pump.fresh_status`).
POLL_INTERVAL_S = 1.0
#: Wire seconds past a link's earliest possible loss (A2) at which its watchdog looks again.
WATCH_MARGIN_S = 0.01
#: Command ids skipped after a restart (only stops can have left unrecorded).
RECOVERY_ID_GAP = 100
#: Seconds a command other than a stop waits for its decision's record (write-ahead) before it
#: is denied, never sent: an action answered while the store hung never runs a pump later.
WRITE_AHEAD_S = 2.0


def ledger_id(infusion_id: str, command_id: int) -> str:
    """The ledger's id of machine command `command_id` of infusion `infusion_id` (the MQTT id)."""
    return f"{infusion_id}.{command_id}"


Recorder = Callable[[str, Event, Decision], "asyncio.Future[bool] | None"]
"""Called with (infusion id, event, decision) after every decision: it records it at once
(None), or queues it for the store's writer thread and returns the future of its write."""


def _no_record(infusion_id: str, event: Event, decision: Decision) -> None:
    del infusion_id, event, decision


@dataclass
class PumpSupervisor:
    """Supervises one pump and the infusion on it (if any)."""

    pump: Pump
    clock: Clock
    recorder: Recorder = _no_record
    poll_interval_s: float = POLL_INTERVAL_S
    command_timeout_s: float = COMMAND_TIMEOUT_S
    infusion_id: str | None = None
    state: InfusionState | None = None
    status: PumpStatus | None = None  # the cached status: what readers see
    link_up: bool = False
    decisions: list[Decision] = field(default_factory=list)
    keep_decisions: bool = False  # tests read them; a long run must not keep every state
    decide_fn: Callable[[InfusionState, Event, datetime], Decision] = decide
    # the safety envelope's clinical time, on a time base of its own (A7: `independent_time`)
    envelope_time: Callable[[], datetime] | None = None
    envelope: SafetyEnvelope | None = None  # built from the protocol's numbers at attach
    # (command, stop epoch, the infusion it was decided for: its ledger id and its fate's owner)
    _queue: deque[tuple[PumpCommand, int, str]] = field(default_factory=deque)
    _stop_epoch: int = 0  # stops sent so far: a command decided before the latest is dropped
    _records: deque[tuple[str, Event, Decision, asyncio.Future[bool]]] = field(
        default_factory=deque
    )
    # records handed to the writer and not yet written, with the loop time they were handed at
    _writing: dict[asyncio.Future[bool], float] = field(default_factory=dict)
    last_record: asyncio.Future[bool] | None = None  # the last decision's record: True once written
    _flush_scheduled: bool = False
    _recovering: bool = False  # rebuilt from the store, the pump not yet read (A4)
    _in_flight: asyncio.Task[None] | None = None
    _stops: set[asyncio.Task[Any]] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _alarms_seen: frozenset[Alarm] = frozenset()
    _envelope_stops: int = 0
    _fates: set[asyncio.Handle] = field(default_factory=set)  # fates due next loop turn
    # Each pump command's fate to come, keyed by (infusion id, command id): registered when the
    # command is dispatched (before it is sent), resolved with its fate and removed then
    # (`_fate`), cancelled when the supervisor lets the command go without one (`attach` of
    # another infusion, the end of `run`). Bounded by the commands awaiting their fate.
    _awaiting: dict[tuple[str, int], asyncio.Future[Fate]] = field(default_factory=dict)
    _closing: bool = False  # `run` is ending: no command starts
    _valid_at: float | None = None  # loop time of the last valid status (A2: not a bad read)
    # Whether the poller's looks may be answered from a status the pump pushed (MQTT contract
    # 2, `Pump.fresh_status`): only while clinical time runs at the wire's pace (the real clock),
    # where a pushed status is at most its overdue bound (wire seconds) old. On a scaled clock a
    # status 1 s old is `factor` s of clinical time old (80 min at 4800x: a volume far behind,
    # a false L3 under-infusion); on the virtual clock an advance moves clinical time in no wire
    # time. There, as before, every look asks the pump.
    _pushed_looks: bool = False

    def __post_init__(self) -> None:
        self._pushed_looks = isinstance(self.clock, RealClock)
        self._idle.set()
        if self.envelope_time is None:
            self.envelope_time = independent_time(self.clock)

    def _envelope_now(self) -> datetime:
        assert self.envelope_time is not None  # set in __post_init__
        return self.envelope_time()

    def fates(self, command_ids: Iterable[int]) -> dict[int, asyncio.Future[Fate]]:
        """The futures of those of `command_ids` (commands of the infusion supervised) still
        awaiting their fate here, by command id: each is resolved with the command's fate event
        (CommandConfirmed, CommandDenied, CommandUnconfirmed: A3), or cancelled when the
        supervisor lets the command go without one (another infusion attached, `run` ended: a
        restart then decides it from the pump's read, A4). A command whose fate is known, or
        that was not dispatched here (sent before a restart), has none. Await them with
        `asyncio.wait` (it never cancels them: other callers share them), under a timeout."""
        if self.infusion_id is None:
            return {}
        found = ((i, self._awaiting.get((self.infusion_id, i))) for i in command_ids)
        return {i: future for i, future in found if future is not None and not future.done()}

    def _let_go(self, keep: str | None = None) -> None:
        """Cancel the futures of commands no fate will reach (those of infusion `keep` stay)."""
        for key in [k for k in self._awaiting if k[0] != keep]:
            self._awaiting.pop(key).cancel()

    # -- the infusion --------------------------------------------------------------------

    def attach(self, infusion_id: str, state: InfusionState, *, recovered: bool = False) -> None:
        """Supervise `state` (a new infusion, or with `recovered` one rebuilt from the store).

        A recovered state knows nothing of the time since it was saved: it is taken as a lost
        link (no running time, no step, the over-infusion bound growing) until the pump's first
        read, which goes to the core as `Restarted` (A4)."""
        if self.state is not None and self.state.supervised:
            raise ValueError(
                f"pump {self.pump.pump_id}: already supervising infusion {self.infusion_id}"
            )
        if recovered:
            # Ids a crash may have used for stops sent but never recorded are skipped, so no
            # new command reuses one (an MQTT pump drops an id it has seen).
            state = state.updated(
                {"link_lost": True, "next_command_id": state.next_command_id + RECOVERY_ID_GAP}
            )
        self._recovering = recovered
        self._alarms_seen = frozenset()
        self._let_go(keep=infusion_id)  # a fate of the last infusion's commands goes nowhere
        self.infusion_id, self.state = infusion_id, state
        ladder = state.protocol.ladder
        self.envelope = SafetyEnvelope(
            max_rate_ml_h=ladder.max_rate_ml_h,
            interval=timedelta(minutes=ladder.interval_min),
            command_timeout_s=self.command_timeout_s,
        )
        # A rebuilt infusion (A4): the envelope starts from the recorded read-backs, so a
        # restart is not mistaken for a change of rate.
        self.envelope.seed(
            [(p.at, p.rate_ml_h) for p in state.rate_history],
            commanded_ml_h=state.rate_ml_h,
            reaction_open=state.reaction is not None,
        )
        self._changed.set()

    def submit(self, event: Event) -> Decision:
        """Decide `event` now; send its commands (a stop first) and record it."""
        if self.state is None or self.infusion_id is None:
            raise ValueError(f"pump {self.pump.pump_id}: no infusion to decide for")
        now = self.clock.now()
        decision = self.decide_fn(self.state, event, now)
        self.state = decision.state
        if self.envelope is not None and decision.refusal is None:
            if isinstance(event, ReactionReported):
                self.envelope.reaction_reported()
            elif isinstance(event, ResumeRequested):
                self.envelope.resume_requested(self._envelope_now())
        if self.keep_decisions:
            self.decisions.append(decision)
        record: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.last_record = record
        self._records.append((self.infusion_id, event, decision, record))
        if any(isinstance(c, StopPump) for c in decision.commands):
            # A stop starts first and never waits for the disk; what else the decision commands
            # waits for the record (after this turn of the loop).
            self._dispatch(decision, send=False)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)
        else:
            # Write-ahead: any other command leaves only once its decision and ledger row are
            # recorded, so a restart knows it was sent and never sends it twice (A3, A4).
            self._flush()
            self._dispatch(decision)
        self._log(event, decision)
        self._changed.set()
        return decision

    def _flush(self) -> None:
        """Hand the decisions made so far to the recorder, in order (it queues them for the
        store's writer thread: no disk on this loop); a store failure is an error, not a stop
        of supervision (the pump stays supervised from memory). A command waits until every
        record before it is written (write-ahead, A3/A4)."""
        self._flush_scheduled = False
        while self._records:
            infusion_id, event, decision, record = self._records.popleft()
            try:
                writing = self.recorder(infusion_id, event, decision)
            except Exception:  # noqa: BLE001 - logged loudly; supervision must go on
                _log.exception(
                    "store pump=%s infusion=%s: decision on %s not recorded",
                    self.pump.pump_id,
                    infusion_id,
                    event.kind,
                )
                record.set_result(False)
                continue
            if writing is None:
                record.set_result(True)
                continue
            loop = asyncio.get_running_loop()
            self._writing[writing] = loop.time()
            loop.call_later(WRITE_AHEAD_S, self._pump_queue)  # its bound, looked at then
            writing.add_done_callback(functools.partial(self._written, record=record))
        self._pump_queue()

    def _written(self, writing: asyncio.Future[bool], *, record: asyncio.Future[bool]) -> None:
        """A record the writer thread wrote (or dropped): the commands it held may go."""
        self._writing.pop(writing, None)
        if not record.done():
            record.set_result(not writing.cancelled() and writing.result())
        self._pump_queue()

    def clear_alarm(
        self, alarm: str, *, actor: str, role: Literal["nurse", "clinician"]
    ) -> Decision:
        """A1: staff acknowledge `alarm`. For a pump that cannot say when an alarm's cause is
        gone (New Era), the nurse's clear is also the statement that it is."""
        state = self.state
        if state is not None and alarm in state.alarms and not self.pump.reports_alarm_clearance:
            self.submit(PumpAlarmCleared(alarm=alarm))
        decision = self.submit(ClearAlarm(alarm=alarm, actor=actor, role=role))
        if alarm == "safety_envelope" and decision.refusal is None and self.envelope is not None:
            self.envelope.tripped = None  # a clinician checked the pump and cleared it
        return decision

    def _envelope_trip(self, trip: Trip | None) -> None:
        """The envelope tripped: stop the pump through the driver at once, then tell the core."""
        if trip is None or self.state is None:
            return
        _log.error(
            "alarm pump=%s infusion=%s kind=safety_envelope rule=%s: %s",
            self.pump.pump_id,
            self.infusion_id,
            trip.rule,
            trip.reason,
        )
        self._envelope_stops += 1
        self._stop_epoch += 1
        stop = asyncio.create_task(
            self.pump.stop(command_id=f"{self.infusion_id}.envelope.{self._envelope_stops}"),
            name=f"envelope stop {self.pump.pump_id}",
        )
        self._stops.add(stop)
        stop.add_done_callback(self._envelope_stopped)
        self.submit(SafetyEnvelopeTripped(reason=trip.reason, rule=Rule(trip.rule)))

    def _envelope_stopped(self, task: asyncio.Task[Any]) -> None:
        self._stops.discard(task)
        if not task.cancelled() and task.exception() is not None:
            _log.error("pump %s: envelope stop failed: %s", self.pump.pump_id, task.exception())
        self._check_idle()

    def _dispatch(self, decision: Decision, *, send: bool = True) -> None:
        assert self.infusion_id is not None  # submit's
        loop = asyncio.get_running_loop()
        for sent in decision.pump_commands:  # each one's fate awaited before it is sent
            key = (self.infusion_id, sent.id)
            if key not in self._awaiting:  # (ids are unique; a broken decide's may not be)
                self._awaiting[key] = loop.create_future()
        for command in decision.commands:
            if isinstance(command, StopPump):
                self._send_stop(command)
            elif isinstance(command, RaiseAlarm):
                _log.warning(
                    "alarm pump=%s infusion=%s kind=%s rule=%s: %s",
                    self.pump.pump_id,
                    self.infusion_id,
                    command.kind.value,
                    command.rule,
                    command.message,
                )
            else:
                self._queue.append((command, self._stop_epoch, self.infusion_id))
                self._idle.clear()
        if send:
            self._pump_queue()

    def _send_stop(self, command: StopPump) -> None:
        assert self.infusion_id is not None  # _dispatch's
        self._stop_epoch += 1
        if self.envelope is not None:
            self.envelope.stop_sent()
        dropped = list(self._queue)
        self._queue.clear()
        for queued, _epoch, owner in dropped:  # escalations decided before the stop: never sent
            self._fate_later(
                CommandDenied(
                    command_id=queued.id, reason="dropped: a stop came first", dropped=True
                ),
                owner,
            )
        self._idle.clear()
        task = asyncio.create_task(
            self._carry(command, self._stop_epoch, self.infusion_id),
            name=f"stop {self.pump.pump_id}",
        )
        self._stops.add(task)
        task.add_done_callback(self._stop_done)

    def _stop_done(self, task: asyncio.Task[Any]) -> None:
        self._stops.discard(task)
        self._check_idle()

    def _fate_later(self, fate: Fate, infusion_id: str) -> None:
        """`fate` of a command of `infusion_id`, delivered on the loop's next turn."""

        def deliver() -> None:
            self._fates.discard(handle)
            self._fate(fate, infusion_id)

        handle = asyncio.get_running_loop().call_soon(deliver)
        self._fates.add(handle)

    def _fate(self, fate: Fate, infusion_id: str | None) -> None:
        """A fate goes to the infusion whose command it was (never to the next one), then to
        the command's future (whoever awaits it reads the state the fate left)."""
        try:
            if self.state is not None and infusion_id == self.infusion_id:
                self.submit(fate)
        finally:
            self._resolve(infusion_id, fate)
            self._check_idle()

    def _resolve(self, infusion_id: str | None, fate: Fate) -> None:
        """The future of the command `fate` names, resolved with it and removed."""
        future = self._awaiting.pop((infusion_id or "", fate.command_id), None)
        if future is not None and not future.done():
            future.set_result(fate)

    def _pump_queue(self) -> None:
        unwritten = self._records or self._writing
        if unwritten and not self._closing:
            self._unsent_past_bound()
        if self._closing or self._in_flight is not None or not self._queue or unwritten:
            self._check_idle()  # (a command waits while its decision is not yet recorded)
            return
        command, epoch, owner = self._queue.popleft()
        state = self.state
        if (
            epoch < self._stop_epoch
            or owner != self.infusion_id
            or (state is not None and state.terminal)
        ):
            # Decided under an older state (before a stop, before the end, or for an infusion
            # no longer supervised here): dropped.
            self._fate_later(
                CommandDenied(command_id=command.id, reason="dropped: stopped since", dropped=True),
                owner,
            )
            self._pump_queue()
            return
        self._in_flight = asyncio.create_task(
            self._carry(command, epoch, owner), name=f"command {self.pump.pump_id} {command.op}"
        )

    def _unsent_past_bound(self) -> None:
        """Write-ahead, bounded: once a record has waited `WRITE_AHEAD_S` for the store, the
        commands waiting behind it are never sent (A3: denied, with an alarm), so an action
        answered while the store hung never runs the pump later on its own. (A command that
        waits for a slow line, its records written, is not touched.)"""
        now = asyncio.get_running_loop().time()
        oldest = next(iter(self._writing.values()), None)  # dicts keep the handing order
        if oldest is None or now - oldest < WRITE_AHEAD_S:
            return
        while self._queue:
            command, _epoch, owner = self._queue.popleft()
            self._fate_later(
                CommandDenied(
                    command_id=command.id,
                    reason=f"not sent: its record was not written within {WRITE_AHEAD_S:g} s "
                    "(write-ahead); nothing reached the pump",
                    unsent=True,
                ),
                owner,
            )

    async def _carry(self, command: PumpCommand, epoch: int, infusion_id: str) -> None:
        """Carry `command` of `infusion_id` (named when it was dispatched, never read here: an
        infusion attached meanwhile must not lend the command its id, A3/A5)."""
        try:
            await self._carry_one(command, epoch, infusion_id)
        finally:
            if not isinstance(command, StopPump) and self._in_flight is asyncio.current_task():
                self._in_flight = None
            self._pump_queue()

    async def _carry_one(self, command: PumpCommand, epoch: int, infusion_id: str) -> None:
        lid = ledger_id(infusion_id, command.id)
        if isinstance(command, SetRate) and self.envelope is not None:
            trip = self.envelope.command(command.rate_ml_h, self._envelope_now())
            if trip is not None:
                self._in_flight = None
                self._fate(
                    CommandDenied(command_id=command.id, reason="safety envelope: not sent"),
                    infusion_id,
                )
                self._envelope_trip(trip)
                return
        _log.info(
            "command pump=%s infusion=%s command=%s op=%s",
            self.pump.pump_id,
            infusion_id,
            lid,
            command.op,
        )
        try:
            fate, read = await carry(
                self.pump,
                command,
                lid,
                timeout_s=self.command_timeout_s,
                superseded=lambda: self._stop_epoch != epoch,
            )
        except Exception:  # noqa: BLE001 - a bug below must not leave the queue stuck (A3 alarm)
            _log.exception("pump %s: %s %s failed", self.pump.pump_id, command.op, lid)
            fate, read = CommandUnconfirmed(command_id=command.id), None
        _log.info(
            "fate pump=%s infusion=%s command=%s op=%s fate=%s",
            self.pump.pump_id,
            infusion_id,
            lid,
            command.op,
            fate.kind,
        )
        if not isinstance(command, StopPump):
            self._in_flight = None
        if read is not None:
            self.status = read
        self._fate(fate, infusion_id)
        if read is not None:
            self._read_back(read, infusion_id)
            self._watch(read)

    def _read_back(self, status: PumpStatus, infusion_id: str) -> None:
        """A2: a command's read-back is a valid status as a status read is (unless a bad
        read): it keeps the link fresh, and it links a pump whose link was never lost (an
        infusion started before the first status read). A lost link is restored only by a
        status read (`on_status`), which tells the core."""
        if self.state is None or infusion_id != self.infusion_id or self._bad_read(status):
            return
        self._valid_at = asyncio.get_running_loop().time()
        if not self.state.link_lost:
            self.link_up = True

    def _watch(self, status: PumpStatus) -> None:
        """Show a read-back to the envelope (unless it already tripped)."""
        if self.envelope is None or self.envelope.tripped is not None:
            return
        trip = self.envelope.read_back(
            running=status.state is PumpState.RUNNING,
            rate_ml_h=status.rate_ml_h,
            at=self._envelope_now(),
            wire=asyncio.get_running_loop().time(),
        )
        self._envelope_trip(trip)

    def _check_idle(self) -> None:
        if self.idle:
            self._idle.set()

    @property
    def idle(self) -> bool:
        """No command queued or in flight, and every decision recorded."""
        return (
            self._in_flight is None
            and not self._queue
            and not self._stops
            and not self._records
            and not self._writing
        )

    async def wait_idle(self) -> None:
        """Return once no command is queued or in flight (bound it with a timeout)."""
        while not self.idle:
            self._idle.clear()
            await self._idle.wait()

    # -- pump facts ----------------------------------------------------------------------

    def on_status(self, status: PumpStatus) -> None:
        """A valid status read from the pump: cache it and feed what it says to the core."""
        if status.state is PumpState.OFFLINE:
            return  # an offline pump says nothing valid (A2 decides on time)
        if self._recovering:
            self.restarted(status)
            return
        self.status = status
        bad = self.state is not None and self._bad_read(status)
        if not bad:
            self._valid_at = asyncio.get_running_loop().time()
        elif not self.link_up:
            return  # A2: a bad read is no valid status: it restores no link
        restored = not self.link_up
        self.link_up = True
        if self.state is None:
            return
        running = status.state is PumpState.RUNNING
        if restored and self.state.link_lost:
            self.submit(
                LinkRestored(
                    running=running,
                    rate_ml_h=status.rate_ml_h if running else 0.0,
                    volume_infused_ml=status.volume_infused_ml,
                )
            )
        for event in self._alarm_events(status.alarms):
            self.submit(event)
        self.submit(self._status_event(status))
        self._watch(status)

    def _bad_read(self, status: PumpStatus) -> bool:
        """A2: a volume gone back is a bad read, unless the pump lost its program with it (a
        power reset, L3): a bad read is no valid status and keeps no link alive."""
        assert self.state is not None
        volume = status.volume_infused_ml
        return goes_backwards(self.state, volume) and not lost_program(
            self.state, volume, status.vtbi_ml
        )

    def _alarm_events(self, alarms: frozenset[Alarm]) -> Iterable[Event]:
        raised, cleared = alarms - self._alarms_seen, self._alarms_seen - alarms
        self._alarms_seen = alarms
        for alarm in sorted(raised):
            yield PumpAlarmRaised(alarm=alarm.value)
        for alarm in sorted(cleared):
            yield PumpAlarmCleared(alarm=alarm.value)

    def _status_event(self, status: PumpStatus) -> Event:
        assert self.state is not None
        volume = status.volume_infused_ml
        if lost_program(self.state, volume, status.vtbi_ml):
            return PumpPowerReset(volume_infused_ml=volume)
        if status.state is PumpState.RUNNING:
            return PumpConfirmedRunning(rate_ml_h=status.rate_ml_h, volume_infused_ml=volume)
        s = self.state
        ended_bag = (
            status.state is PumpState.STOPPED
            and not status.alarms
            and s.vtbi_programmed_ml is not None
            and status.vtbi_ml > 0
            and abs(volume - status.vtbi_ml) <= COMPLETION_TOLERANCE_ML
            and s.phase in {InfusionPhase.RUNNING, InfusionPhase.STARTING}
            and not s.stop_outstanding
        )
        if ended_bag:
            return PumpCompleted(volume_infused_ml=volume)
        return PumpConfirmedStopped(volume_infused_ml=volume)

    def on_link_lost(self) -> None:
        """A2: no valid status for longer than the link timeout."""
        if not self.link_up:
            return
        self.link_up = False
        if self.state is not None:
            self.submit(LinkLost())

    async def poll_once(self, *, pushed: bool = False) -> None:
        """Read the pump's status once (bounded by the command timeout) and process it; with
        `pushed` (the poller's periodic look), a status the pump pushed will do while it is
        fresh (`Pump.fresh_status`). A deadline and the virtual clock's settle read the state
        at that instant (`read_status`)."""
        try:
            async with asyncio.timeout(self.command_timeout_s):
                if pushed:
                    status = await self.pump.fresh_status()
                else:
                    status = await self.pump.read_status()
        except (PumpError, TimeoutError) as error:
            _log.debug("pump %s: status read failed: %s", self.pump.pump_id, error)
            return
        self.on_status(status)

    def restarted(self, status: PumpStatus) -> Decision:
        """A4: the controller came back; the pump's real state as first read.

        Commands the stored state still waits on are never sent again: the read-back decides
        their fate (confirmed if it shows their effect, else unconfirmed, A3). A restart the
        core refuses (clinical time still behind the stored record) is tried again at the next
        status read."""
        running = status.state is PumpState.RUNNING
        self._recovering = False
        self.status = status
        self.link_up = True
        self._valid_at = asyncio.get_running_loop().time()  # A2 counts bad reads from here
        self._alarms_seen = frozenset()
        assert self.state is not None
        waiting = self.state.outstanding  # sent before the restart (not what it sends now)
        if lost_program(self.state, status.volume_infused_ml, status.vtbi_ml):
            # the pump lost power too (its program and counter are gone): the most it may have
            # given since the last save counts as given (L3), and the restart then finds it
            # stopped with no record why (A4)
            self.submit(PumpPowerReset(volume_infused_ml=status.volume_infused_ml))
        decision = self.submit(
            Restarted(
                running=running,
                rate_ml_h=status.rate_ml_h if running else 0.0,
                volume_infused_ml=status.volume_infused_ml,
            )
        )
        if decision.refusal is not None:
            # Not taken (a clock behind the stored record: `now` before its last event): nothing
            # was reconciled, so the next status read tries again, and until then the infusion
            # stays a lost link (A4), never half recovered with its link lost for good.
            self._recovering = True
            self._watch(status)
            return decision
        for sent in waiting:
            if _shows(sent, status, self.state.bag_volume_ml):
                fate: Fate = confirmation(sent.id, status)
            else:  # a stop not shown is unconfirmed: sent again on every contact (A3)
                fate = CommandUnconfirmed(command_id=sent.id)
            self.submit(fate)
            self._resolve(self.infusion_id, fate)  # one sent since the restart, if any
        for event in self._alarm_events(status.alarms):  # the pump's own alarms (a watchdog's)
            self.submit(event)
        self._watch(status)
        return decision

    # -- tasks -----------------------------------------------------------------------------

    async def run(self) -> None:
        """The supervisor's tasks (poller, watchdog, deadlines) until cancelled.

        At the end, what it started ends with it: its commands and stops are cancelled, a
        queued command is never started (a cancelled command would otherwise start the next)
        but dropped, and so is a fate still due (it would decide, record and start commands
        after the controller, and its store, have gone), and the futures of the fates that
        will not come are cancelled (nobody awaits them for ever): a restart decides what they
        leave outstanding from the pump's read (A4)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._poller(), name=f"poller {self.pump.pump_id}")
                group.create_task(self._watchdog(), name=f"watchdog {self.pump.pump_id}")
                group.create_task(self._deadlines(), name=f"deadlines {self.pump.pump_id}")
        finally:
            self._closing = True
            self._flush()
            for task in (self._in_flight, *self._stops):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            for handle in self._fates:
                handle.cancel()
            self._fates.clear()
            self._let_go()  # no fate comes now: nobody waits on one for ever
            self._queue.clear()  # never sent: a restart decides them from the pump's read (A4)
            self._closing = False  # ended: a later submit is served as before (settle, tests)
            self._check_idle()

    async def _poller(self) -> None:
        # Each pump's polls start at a random phase of the interval: a fleet's reads spread
        # over the second instead of arriving together (a stop landing in such a burst waits).
        await asyncio.sleep(random.uniform(0, self.poll_interval_s))  # noqa: S311 - not crypto
        while True:
            # no read while a command or a stop is carried: it would take the line between a
            # stop and its retry (A3), and the stop's own read-back says what the pump does
            if self._in_flight is None and not self._stops:
                await self.poll_once(pushed=self._pushed_looks)
            await asyncio.sleep(self.poll_interval_s)

    async def _watchdog(self) -> None:
        # A phase of its own too (the first look within one period, as before): a fleet's
        # watchdogs do not all wake on one beat.
        period = min(0.5, self.pump.link_timeout_s / 4)
        await asyncio.sleep(random.uniform(0, period))  # noqa: S311 - not crypto
        while True:
            if self.pump.is_stale() or self._only_bad_reads():
                self.on_link_lost()
            await asyncio.sleep(self._watch_delay(period))

    def _watch_delay(self, period: float) -> float:
        """Wire seconds until the link could next be lost (A2): just past the instant the last
        contact, or the last valid status, is a link timeout old; `period` once it is, or while
        none came. A link kept alive is not looked at every period for nothing (at 1,000 pumps
        that was 2,000 wake-ups a second), and a loss is seen no later than before."""
        last = self.pump.last_contact
        if last is None:
            return period
        if self._valid_at is not None:
            last = min(last, self._valid_at)
        due = last + self.pump.link_timeout_s - asyncio.get_running_loop().time()
        return due + WATCH_MARGIN_S if due > 0 else period

    def _only_bad_reads(self) -> bool:
        """A2: statuses came, but none valid (bad reads) for longer than the link timeout."""
        if self._valid_at is None or self.state is None:
            return False
        return asyncio.get_running_loop().time() - self._valid_at > self.pump.link_timeout_s

    def wake_at(self) -> datetime | None:
        """The next clinical instant this supervisor must act: a deadline, or the bag's end."""
        if self.state is None:
            return None
        due = next_deadline(self.state)
        at = due.at if due is not None else None
        status = self.status
        if status is not None and status.state is PumpState.RUNNING and status.rate_ml_h > 0:
            hours = max(0.0, status.vtbi_ml - status.volume_infused_ml) / status.rate_ml_h
            # Whole seconds, at least one: a pump's volume is read rounded, so the last drop
            # may come a moment later than computed, and clinical time must move to see it.
            seconds = max(1, math.ceil(hours * 3600))
            done = self.clock.now() + timedelta(seconds=seconds)
            at = done if at is None else min(at, done)
        return at

    async def _deadlines(self) -> None:
        while True:
            self._changed.clear()
            at = self.wake_at()
            changed = asyncio.create_task(self._changed.wait())
            sleeping = asyncio.create_task(self.clock.sleep_until(at)) if at is not None else None
            waits = {changed} | ({sleeping} if sleeping is not None else set())
            try:
                done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()
            if sleeping is not None and sleeping in done:
                await self._due()

    async def _due(self) -> None:
        """A deadline or the bag's end came: the pump's status at that instant, then time."""
        await self.poll_once()
        if self.state is not None:
            self.submit(TimePassed())

    # -- logs ------------------------------------------------------------------------------

    def _log(self, event: Event, decision: Decision) -> None:
        for audit in decision.audit:
            _log.info(
                "decision pump=%s infusion=%s event=%s type=%s rule=%s",
                self.pump.pump_id,
                self.infusion_id,
                event.kind,
                audit.type,
                audit.rule,
            )


def _shows(sent: SentCommand, status: PumpStatus, vtbi_ml: float) -> bool:
    """A read-back after a restart shows the effect of a command sent before it."""
    rate_ok = (
        sent.rate_ml_h is not None and abs(status.rate_ml_h - sent.rate_ml_h) <= RATE_TOLERANCE_ML_H
    )
    match sent.op:
        case CommandOp.STOP:
            return status.state is not PumpState.RUNNING
        case CommandOp.SET_RATE:
            return rate_ok
        case CommandOp.RUN:
            return rate_ok and status.state is PumpState.RUNNING
        case CommandOp.SET_VTBI:
            return abs(status.vtbi_ml - vtbi_ml) <= VOLUME_TOLERANCE_ML
    return False  # a cleared counter cannot be told from a read-back reliably

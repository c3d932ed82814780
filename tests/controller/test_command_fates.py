"""Each pump command's fate as a future (A3): registered by the supervisor before the command is
sent, resolved by its fate (a denial for a command a stop dropped or the store never recorded),
let go when the supervisor ends or attaches the next infusion; and the reaction's answer, which
awaits the stops' futures, as fast and as true as the state they leave (I1, A3).

On the in-process pump (tests/controller/conftest.py). A stop is held at the driver where a test
needs it in flight (`StopGate`): nothing here waits on time but the wire bounds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from decided import fate_of, until
from supervised_env import OTHER, REVIEW, supervised

from drivers.base import PumpError, PumpStatus
from pumpctl.clock import VirtualClock
from pumpctl.controller import Controller, PumpSupervisor, ledger_id
from pumpctl.controller.supervisor import WRITE_AHEAD_S
from pumpctl.controller.ward import Ward
from pumpctl.core.history import CourseState
from pumpctl.core.machine import (
    CommandConfirmed,
    CommandDenied,
    CommandOp,
    CommandUnconfirmed,
    Decision,
    Event,
    InfusionPhase,
    ReactionReported,
    Run,
    Start,
    Stop,
    StopPump,
    initial_state,
)
from pumpctl.protocols import load_protocol
from pumpctl.store import Store, migrate
from pumpctl.store.writer import StoreReader, StoreWriter

#: Wire bound on what a test waits for (a command's fate comes within a few command timeouts).
WIRE_BOUND_S = 15.0
#: The reaction's own bound (`stop_answer_s`) in the ward's tests: far past `WIRE_BOUND_S`, so an
#: answer that came only at that bound fails the test instead of passing as "unconfirmed".
STOP_ANSWER_S = 60.0


class StopGate:
    """The driver's stop, held per ledger id until the test lets it go on (or fails it)."""

    def __init__(self, pump: Any) -> None:
        self._real: Callable[..., Any] = pump.stop
        self._gates: dict[str, asyncio.Future[None]] = {}
        self._arrived: dict[str, asyncio.Future[None]] = {}
        pump.stop = self._stop

    def _gate(self, lid: str) -> asyncio.Future[None]:
        return self._gates.setdefault(lid, asyncio.get_running_loop().create_future())

    def _arrival(self, lid: str) -> asyncio.Future[None]:
        return self._arrived.setdefault(lid, asyncio.get_running_loop().create_future())

    async def _stop(self, *, command_id: str) -> PumpStatus:
        if not self._arrival(command_id).done():
            self._arrival(command_id).set_result(None)
        await self._gate(command_id)
        status: PumpStatus = await self._real(command_id=command_id)
        return status

    async def reached(self, lid: str) -> None:
        """Return once stop `lid` has reached the driver (bounded by the wire bound)."""
        async with asyncio.timeout(WIRE_BOUND_S):
            await asyncio.shield(self._arrival(lid))

    def arrived(self) -> set[str]:
        """The ledger ids of the stops that have reached the driver so far."""
        return {lid for lid, came in self._arrived.items() if came.done()}

    def release(self, lid: str) -> None:
        self._gate(lid).set_result(None)

    def fail(self, lid: str, error: PumpError) -> None:
        self._gate(lid).set_exception(error)


def not_stopped(env: Any) -> PumpError:
    """The driver's "pump did not stop" (A3: final at once, never retried)."""
    return PumpError(env.driver.pump_id, "stop", "the pump did not stop")


def stops(supervisor: PumpSupervisor) -> list[int]:
    """The stops the supervised infusion awaits the fate of, oldest first."""
    assert supervisor.state is not None
    return [c.id for c in supervisor.state.outstanding if c.op is CommandOp.STOP]


def the_stop(decision: Decision) -> int:
    return next(c.id for c in decision.pump_commands if isinstance(c, StopPump))


# -- the supervisor's futures --------------------------------------------------------------------


async def test_A3_each_command_s_future_is_resolved_by_its_fate_and_then_let_go(
    pump_env: Any, clock: VirtualClock
) -> None:
    """A3: the start's four commands each have a future before they leave, resolved with the
    read-back confirming them; once resolved it is no longer held."""
    async with supervised(pump_env, clock) as supervisor:
        start = supervisor.submit(Start(actor="nurse", course=CourseState()))
        ids = [c.id for c in start.pump_commands]
        futures = supervisor.fates(ids)
        assert len(ids) == 4
        assert sorted(futures) == sorted(ids)
        _done, pending = await asyncio.wait(futures.values(), timeout=WIRE_BOUND_S)
        assert not pending
        fates = {i: f.result() for i, f in futures.items()}
        assert all(isinstance(f, CommandConfirmed) for f in fates.values()), fates
        assert {i: f.command_id for i, f in fates.items()} == {i: i for i in ids}
        assert supervisor.fates(ids) == {}
        assert supervisor.state is not None
        assert supervisor.state.phase is InfusionPhase.RUNNING


async def test_I1_A3_a_queued_command_dropped_by_a_stop_resolves_with_its_denial(
    pump_env: Any, clock: VirtualClock
) -> None:
    """I1: a reaction while the start's commands are still queued: the run is never sent, and
    its future says so (denied, dropped: a stop came first); the stop's future, confirmed."""
    async with supervised(pump_env, clock) as supervisor:
        start = supervisor.submit(Start(actor="nurse", course=CourseState()))
        run = next(c.id for c in start.pump_commands if isinstance(c, Run))
        futures = supervisor.fates(c.id for c in start.pump_commands)
        reaction = supervisor.submit(ReactionReported(grade=1, signs=OTHER, actor="nurse"))
        stop = supervisor.fates([the_stop(reaction)])
        _done, pending = await asyncio.wait(
            [*futures.values(), *stop.values()], timeout=WIRE_BOUND_S
        )
        assert not pending
        denied = futures[run].result()
        assert isinstance(denied, CommandDenied)
        assert (denied.dropped, denied.reason) == (True, "dropped: a stop came first")
        assert isinstance(stop[the_stop(reaction)].result(), CommandConfirmed)


async def test_A3_a_command_never_recorded_resolves_with_its_write_ahead_denial(
    pump_env: Any, clock: VirtualClock
) -> None:
    """A3 write-ahead: the store holds every record; past `WRITE_AHEAD_S` the start's commands
    are denied unsent, and each future carries that denial (nothing reached the pump)."""
    held: list[asyncio.Future[bool]] = []

    def holding(infusion_id: str, event: Event, decision: Decision) -> asyncio.Future[bool]:
        del infusion_id, event, decision
        held.append(asyncio.get_running_loop().create_future())
        return held[-1]

    async with supervised(pump_env, clock) as supervisor:
        supervisor.recorder = holding
        start = supervisor.submit(Start(actor="nurse", course=CourseState()))
        futures = supervisor.fates(c.id for c in start.pump_commands)
        _done, pending = await asyncio.wait(futures.values(), timeout=WRITE_AHEAD_S + WIRE_BOUND_S)
        assert not pending
        for fate in (f.result() for f in futures.values()):
            assert isinstance(fate, CommandDenied), fate
            assert fate.unsent, fate
        assert pump_env.model.status().volume_infused_ml == 0.0
        for record in held:  # the store answers at last
            if not record.done():
                record.set_result(True)


async def test_A3_A4_futures_still_pending_when_the_supervisor_ends_are_cancelled(
    pump_env: Any, clock: VirtualClock
) -> None:
    """A pump that answers nothing: the supervisor ends with the start's commands in flight and
    queued; none of their futures is left pending (a restart decides them from the pump, A4)."""
    async with supervised(pump_env, clock) as supervisor:
        pump_env.model.faults.no_reply = True
        start = supervisor.submit(Start(actor="nurse", course=CourseState()))
        ids = [c.id for c in start.pump_commands]
        futures = supervisor.fates(ids)
        assert len(futures) == 4
    assert all(f.cancelled() for f in futures.values())
    assert supervisor.fates(ids) == {}


async def test_A5_attaching_the_next_infusion_lets_the_last_one_s_futures_go(
    pump_env: Any, clock: VirtualClock
) -> None:
    """A5: infusion 1 stopped for good, its stop still in flight, the pump takes the next
    infusion: the stop's future is cancelled (its fate goes to no infusion), and the fate that
    comes later touches nothing of the next one."""
    async with supervised(pump_env, clock, start=True) as supervisor:
        gate = StopGate(pump_env.driver)
        stopped = supervisor.submit(Stop(reason="patient asked", actor="nurse"))
        stop = the_stop(stopped)
        future = supervisor.fates([stop])[stop]
        await gate.reached(ledger_id("inf-1", stop))
        state = initial_state(
            REVIEW, infusion_number=1, course=CourseState(), bag_prepared_at=clock.now()
        )
        supervisor.attach("inf-next", state)
        assert future.cancelled()
        assert supervisor.fates([stop]) == {}
        gate.release(ledger_id("inf-1", stop))
        async with asyncio.timeout(WIRE_BOUND_S):
            await supervisor.wait_idle()
        assert supervisor.infusion_id == "inf-next"
        assert supervisor.state is not None
        assert (supervisor.state.phase, supervisor.state.outstanding) == (
            InfusionPhase.PLANNED,
            (),
        )


async def test_A3_A5_a_stop_keeps_its_infusion_s_ledger_id_when_the_next_is_attached_at_once(
    pump_env: Any, clock: VirtualClock
) -> None:
    """A3/A5: infusion 1 stopped for good and the next infusion attached in the same turn of
    the loop, before the stop's task first runs: the stop still leaves under infusion 1's
    ledger id (it was dispatched for it), and its fate touches nothing of the next one. (The
    supervisor used to read the id when the task first ran, and sent it as the next one's.)"""
    async with supervised(pump_env, clock, start=True) as supervisor:
        gate = StopGate(pump_env.driver)
        stop = the_stop(supervisor.submit(Stop(reason="patient asked", actor="nurse")))
        state = initial_state(
            REVIEW, infusion_number=1, course=CourseState(), bag_prepared_at=clock.now()
        )
        supervisor.attach("inf-next", state)  # no await since the stop was dispatched
        await gate.reached(ledger_id("inf-1", stop))
        assert ledger_id("inf-next", stop) not in gate.arrived()
        gate.release(ledger_id("inf-1", stop))
        async with asyncio.timeout(WIRE_BOUND_S):
            await supervisor.wait_idle()
        assert supervisor.state is not None
        assert (supervisor.state.phase, supervisor.state.outstanding) == (
            InfusionPhase.PLANNED,
            (),
        )


# -- the reaction's answer, awaiting the stops' futures ------------------------------------------


@asynccontextmanager
async def a_ward(env: Any, clock: VirtualClock, tmp_path: Path) -> AsyncIterator[tuple[Ward, int]]:
    """A ward over `env`'s pump and a fresh store, with a first infusion started and running."""
    url = f"sqlite:///{tmp_path}/pumpctl.db"
    migrate.upgrade(url)
    with Store.open(url) as store:
        writer, reader = StoreWriter(store), StoreReader()
        writer.start()
        try:
            supervisor = PumpSupervisor(
                env.driver, clock, poll_interval_s=0.2, command_timeout_s=1.0
            )
            pump_id = env.driver.pump_id
            ward = Ward(
                store,
                clock,
                {pump_id: supervisor},
                load_protocol,
                writer=writer,
                reader=reader,
                stop_answer_s=STOP_ANSWER_S,
            )
            async with Controller(clock, [supervisor]):
                patient, _course = await ward.create_patient("MRN-1", 70.0, None, actor="dr")
                infusion = await ward.create_infusion(patient, pump_id, actor="dr")
                given = clock.now() - timedelta(hours=1)
                await ward.record_premedication(infusion, given, actor="nurse")
                started = await ward.start(infusion, actor="nurse")
                assert started.phase is InfusionPhase.RUNNING
                yield ward, infusion
        finally:
            reader.close()
            writer.close()


def react(ward: Ward, infusion: int, grade: int) -> asyncio.Task[Any]:
    return asyncio.create_task(ward.report_reaction(infusion, grade, ["other"], None, actor="rn"))


async def test_I1_A3_a_reaction_answer_waits_for_a_second_stop_sent_meanwhile(
    pump_env: Any, clock: VirtualClock, tmp_path: Path
) -> None:
    """I1, A3: a nurse stops the infusion for good (A6) while the reaction's stop is on its way:
    the reaction's stop confirmed, the pump is still not confirmed stopped (the second stop awaits
    its fate); the answer waits for that one too and is "confirmed" (not a false "unconfirmed"
    on the first stop's fate, nor one left hanging until `stop_answer_s`)."""
    async with a_ward(pump_env, clock, tmp_path) as (ward, infusion):
        supervisor = ward.live(infusion)
        assert supervisor is not None
        gate = StopGate(pump_env.driver)
        answer = react(ward, infusion, 2)
        await until(supervisor, lambda s: s.state is not None and bool(stops(s)), WIRE_BOUND_S)
        [first] = stops(supervisor)
        await ward.stop(infusion, "patient asked", actor="rn")
        [_, second] = stops(supervisor)
        later = supervisor.fates([second])[second]
        gate.release(ledger_id(str(infusion), first))
        assert isinstance(await fate_of(supervisor, first, WIRE_BOUND_S), CommandConfirmed)
        assert not later.done()
        gate.release(ledger_id(str(infusion), second))
        async with asyncio.timeout(WIRE_BOUND_S):
            outcome = await answer
        assert outcome.stop == "confirmed", outcome
        assert outcome.stop_confirmed_ms is not None
        assert later.done()
        assert isinstance(later.result(), CommandConfirmed)


async def test_I1_A3_an_earlier_stop_that_fails_answers_unconfirmed_at_once(
    pump_env: Any, clock: VirtualClock, tmp_path: Path
) -> None:
    """A3, I5: a second report (a reassessment) sends a stop of its own while the first one is
    on its way; the first one fails (the pump did not stop): both answers are "unconfirmed" at
    once, without waiting for the second stop's fate (still held at the driver)."""
    async with a_ward(pump_env, clock, tmp_path) as (ward, infusion):
        supervisor = ward.live(infusion)
        assert supervisor is not None
        gate = StopGate(pump_env.driver)
        first_answer = react(ward, infusion, 1)
        await until(supervisor, lambda s: len(stops(s)) == 1, WIRE_BOUND_S)
        second_answer = react(ward, infusion, 2)
        await until(supervisor, lambda s: len(stops(s)) == 2, WIRE_BOUND_S)
        first, second = stops(supervisor)
        later = supervisor.fates([second])[second]
        gate.fail(ledger_id(str(infusion), first), not_stopped(pump_env))
        async with asyncio.timeout(WIRE_BOUND_S):
            answers = [await first_answer, await second_answer]
        assert [a.stop for a in answers] == ["unconfirmed", "unconfirmed"], answers
        assert not later.done()  # answered on the state, not on the second stop's fate
        gate.release(ledger_id(str(infusion), second))
        assert isinstance(await fate_of(supervisor, second, WIRE_BOUND_S), CommandConfirmed)


async def test_I1_A3_a_reaction_while_a_stop_is_already_unconfirmed_answers_at_once(
    pump_env: Any, clock: VirtualClock, tmp_path: Path
) -> None:
    """A3: the pump is known not to have stopped (a stop unconfirmed, "clamp the line"); a
    further report sends the stop again and is answered "unconfirmed" at once, as the state
    says, not after that stop's fate."""
    async with a_ward(pump_env, clock, tmp_path) as (ward, infusion):
        supervisor = ward.live(infusion)
        assert supervisor is not None
        gate = StopGate(pump_env.driver)
        first_answer = react(ward, infusion, 1)
        await until(supervisor, lambda s: len(stops(s)) == 1, WIRE_BOUND_S)
        [first] = stops(supervisor)
        gate.fail(ledger_id(str(infusion), first), not_stopped(pump_env))
        async with asyncio.timeout(WIRE_BOUND_S):
            assert (await first_answer).stop == "unconfirmed"
        assert supervisor.state is not None
        assert supervisor.state.stop_unconfirmed
        second_answer = react(ward, infusion, 2)
        await until(supervisor, lambda s: len(stops(s)) == 1, WIRE_BOUND_S)
        [second] = stops(supervisor)
        later = supervisor.fates([second])[second]
        async with asyncio.timeout(WIRE_BOUND_S):
            assert (await second_answer).stop == "unconfirmed"
        assert not later.done()
        gate.release(ledger_id(str(infusion), second))
        fate = await fate_of(supervisor, second, WIRE_BOUND_S)
        assert isinstance(fate, CommandConfirmed | CommandUnconfirmed)

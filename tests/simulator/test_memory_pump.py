"""The in-process pump (simulator/memory.py): the `Pump` interface on the model with no wire, as
the controller relies on it: read-backs (A3), contacts (A2), the confirmed stop (A3), refusals,
and the model's faults that need no wire."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from drivers.base import (
    Alarm,
    PumpCommandRejected,
    PumpConnectionError,
    PumpState,
    PumpTimeout,
)
from pumpctl.clock import VirtualClock
from simulator.memory import MAX_RESENDS, MemoryPump
from simulator.model import PumpModel

TIMEOUT_S = 0.2


@pytest.fixture
def model(clock: VirtualClock) -> PumpModel:
    return PumpModel("mem-1", clock)


@pytest.fixture
async def pump(model: PumpModel) -> AsyncIterator[MemoryPump]:
    async with MemoryPump(model, command_timeout_s=TIMEOUT_S, link_timeout_s=1.0) as driver:
        yield driver


async def started(pump: MemoryPump) -> None:
    await pump.set_rate(50.0)
    await pump.set_vtbi(100.0)
    await pump.run()


async def test_A2_connect_links_and_reads_the_model(model: PumpModel) -> None:
    model.set_rate(30.0)
    driver = MemoryPump(model)
    assert not driver.connected
    async with driver:
        assert driver.connected
        assert driver.last_status is not None
        assert driver.last_status.rate_ml_h == 30.0
        assert not driver.is_stale()
    assert not driver.connected


async def test_A3_each_command_returns_the_read_back_and_is_a_contact(
    pump: MemoryPump, model: PumpModel, clock: VirtualClock
) -> None:
    before = pump.last_contact
    assert before is not None
    status = await pump.set_rate(120.0, command_id="c1")
    assert status.rate_ml_h == 120.0
    assert model.status().rate_ml_h == 120.0
    assert status.last_contact == pump.last_contact
    assert pump.last_contact >= before
    assert (await pump.set_vtbi(60.0)).vtbi_ml == 60.0
    running = await pump.run()
    assert running.state is PumpState.RUNNING
    await clock.advance(1800)
    read = await pump.read_status()
    assert read.volume_infused_ml == pytest.approx(60.0)  # 30 min at 120 ml/h: the VTBI
    assert read.state is PumpState.STOPPED  # L3: the pump stops itself at the VTBI
    assert pump.last_status == read
    assert (await pump.clear_volume()).volume_infused_ml == 0.0


async def test_A3_stop_is_confirmed_by_the_models_state(pump: MemoryPump, model: PumpModel) -> None:
    await started(pump)
    status = await pump.stop(command_id="s1")
    assert status.state is PumpState.STOPPED
    assert model.state is PumpState.STOPPED
    assert [c.cause for c in model.history][-1] == "stop"


async def test_a_refusal_of_the_model_is_rejected_with_its_code_after_a_contact(
    pump: MemoryPump, model: PumpModel
) -> None:
    model.raise_alarm(Alarm.OCCLUSION)
    with pytest.raises(PumpCommandRejected) as refused:
        await pump.set_rate(10.0, command_id="c9")
    assert refused.value.code == "NA"
    assert refused.value.command_id == "c9"
    assert "occlusion" in refused.value.message
    assert pump.last_status is not None
    assert pump.last_status.alarms == frozenset({Alarm.OCCLUSION})  # named in the status
    assert pump.last_status.state is PumpState.ALARM
    assert pump.reports_alarm_clearance
    model.clear_alarm(Alarm.OCCLUSION)
    with pytest.raises(PumpCommandRejected) as out_of_range:
        await pump.set_rate(0.0)
    assert out_of_range.value.code == "OOR"


async def test_refuse_next_refuses_without_acting(pump: MemoryPump, model: PumpModel) -> None:
    model.faults.refuse_next = 1
    with pytest.raises(PumpCommandRejected) as refused:
        await pump.set_rate(10.0)
    assert refused.value.code == "NA"
    assert model.status().rate_ml_h == 0.0
    assert (await pump.set_rate(10.0)).rate_ml_h == 10.0  # one only


async def test_A3_no_reply_times_out_after_the_command_timeout_and_does_nothing(
    pump: MemoryPump, model: PumpModel
) -> None:
    model.faults.no_reply = True
    contact = pump.last_contact
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(PumpTimeout):
        await pump.set_rate(10.0, command_id="c1")
    assert loop.time() - began >= TIMEOUT_S
    assert model.status().rate_ml_h == 0.0
    assert pump.last_contact == contact  # silence is no contact (A2)
    assert pump.connected  # the link is up: only staleness says the pump is gone


async def test_A3_an_unanswered_stop_raises_within_its_worst_case(
    pump: MemoryPump, model: PumpModel
) -> None:
    await started(pump)
    model.faults.no_reply = True
    async with asyncio.timeout(pump.stop_worst_case_s + 1.0):
        with pytest.raises(PumpTimeout):
            await pump.stop(command_id="s1")
    assert model.state is PumpState.RUNNING  # the stop never landed


async def test_a_late_answer_is_taken_within_the_timeout_and_is_a_timeout_past_it(
    pump: MemoryPump, model: PumpModel
) -> None:
    model.faults.late_reply_s = TIMEOUT_S / 2
    assert (await pump.set_rate(20.0)).rate_ml_h == 20.0
    model.faults.late_reply_s = TIMEOUT_S * 2
    with pytest.raises(PumpTimeout):
        await pump.set_rate(30.0)
    assert model.status().rate_ml_h == 30.0  # done, only answered too late (A3: read back)


async def test_garbled_answers_are_asked_again_a_bounded_number_of_times(
    pump: MemoryPump, model: PumpModel
) -> None:
    model.faults.garble_replies = MAX_RESENDS
    assert (await pump.set_rate(20.0)).rate_ml_h == 20.0
    assert model.faults.garble_replies == 0
    model.faults.garble_replies = MAX_RESENDS + 1
    with pytest.raises(PumpTimeout):
        await pump.read_status()


async def test_A2_a_dropped_connection_unlinks_until_cleared_and_reads_the_real_state(
    pump: MemoryPump, model: PumpModel
) -> None:
    await started(pump)
    model.faults.drop_connection = True
    with pytest.raises(PumpConnectionError):
        await pump.read_status()
    assert not pump.connected
    model.stop()  # stopped while the link was down
    with pytest.raises(PumpConnectionError):
        await pump.set_rate(80.0)
    model.faults.drop_connection = False
    status = await pump.read_status()
    assert pump.connected
    assert status.state is PumpState.STOPPED  # reported as found, never restarted
    assert model.status().rate_ml_h == 50.0


async def test_a_link_cut_at_the_start_starts_unlinked(model: PumpModel) -> None:
    model.faults.drop_connection = True
    async with MemoryPump(model, command_timeout_s=TIMEOUT_S) as driver:
        assert not driver.connected
        assert driver.is_stale()
        model.faults.drop_connection = False
        await driver.read_status()
        assert driver.connected


async def test_a_closed_pump_refuses_commands(model: PumpModel) -> None:
    async with MemoryPump(model) as driver:
        pass
    with pytest.raises(PumpConnectionError):
        await driver.read_status()

"""Conformance: both drivers (serial, MQTT) behave alike against the same simulated pump.

Every operation, every alarm, every fault switch, and reconnection; rules A1-A3 where they
apply (alarms stop the pump and are reported; every command is read back).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from listener_wait import until
from pump_actions import running

from drivers.base import (
    Alarm,
    PumpCommandRejected,
    PumpConnectionError,
    PumpError,
    PumpState,
    PumpStatus,
)

#: Alarms the New Era protocol can say; the others show on a serial line as a stopped pump.
SERIAL_SAYS = {Alarm.OCCLUSION, Alarm.COMM_TIMEOUT, Alarm.MALFUNCTION}
#: Rate round trips through the serial line are compared with this tolerance (interfaces.md).
RATE_TOL = 0.1
#: A command on a lost link fails at once: well before any wire timeout could have run out.
FAIL_FAST_S = 0.1


def transport(request: pytest.FixtureRequest) -> str:
    return str(request.node.callspec.params["pump_env"])


async def model_changed(env: Any, predicate: Any) -> None:
    """Wait (bounded, 5 s) until `predicate(model)` holds, woken by the model's listener."""
    await until(lambda: predicate(env.model), env.model.listeners)


# -- operations ------------------------------------------------------------------------------


async def test_connect_reads_the_pump(pump_env: Any) -> None:
    status = pump_env.driver.last_status
    assert status is not None
    assert status.state is PumpState.STOPPED
    assert status.pump_id == pump_env.driver.pump_id


async def test_set_rate_is_read_back_A3(pump_env: Any) -> None:
    """A3: the command returns the status read after it."""
    status = await pump_env.driver.set_rate(166.666)
    assert status.rate_ml_h == pytest.approx(166.666, abs=RATE_TOL)
    assert pump_env.model.status().rate_ml_h == pytest.approx(166.666, abs=RATE_TOL)
    assert (await pump_env.driver.read_status()).rate_ml_h == status.rate_ml_h


async def test_set_vtbi_is_read_back_A3(pump_env: Any) -> None:
    status = await pump_env.driver.set_vtbi(250)
    assert status.vtbi_ml == 250
    assert pump_env.model.status().vtbi_ml == 250


async def test_run_and_volume_on_the_clock(pump_env: Any) -> None:
    status = await running(pump_env, rate=120, vtbi=500)
    assert status.state is PumpState.RUNNING
    assert pump_env.model.state is PumpState.RUNNING
    await pump_env.clock.advance(30 * 60)
    status = await pump_env.driver.read_status()
    assert status.volume_infused_ml == pytest.approx(60, abs=0.05)


async def test_stop_is_confirmed(pump_env: Any) -> None:
    await running(pump_env)
    await pump_env.clock.advance(600)
    status = await pump_env.driver.stop()
    assert status.state is PumpState.STOPPED
    assert pump_env.model.state is PumpState.STOPPED
    assert status.volume_infused_ml == pytest.approx(20, abs=0.05)


async def test_clear_volume(pump_env: Any) -> None:
    await running(pump_env)
    await pump_env.clock.advance(600)
    await pump_env.driver.stop()
    status = await pump_env.driver.clear_volume()
    assert status.volume_infused_ml == 0
    assert pump_env.model.status().volume_infused_ml == 0


async def test_pump_stops_itself_at_the_vtbi(pump_env: Any) -> None:
    await running(pump_env, rate=100, vtbi=10)
    await pump_env.clock.advance(3600)
    status = await pump_env.driver.read_status()
    assert status.state is PumpState.STOPPED
    assert status.volume_infused_ml == pytest.approx(10)


async def test_run_without_a_rate_is_refused(pump_env: Any) -> None:
    with pytest.raises(PumpCommandRejected) as info:
        await pump_env.driver.run()
    assert not info.value.retryable
    assert info.value.pump_id == pump_env.driver.pump_id
    assert pump_env.model.state is PumpState.STOPPED


@pytest.mark.parametrize("rate", [0, -5, 10_000, float("nan")])
async def test_invalid_rate_changes_nothing(pump_env: Any, rate: float) -> None:
    await pump_env.driver.set_rate(50)
    with pytest.raises(PumpCommandRejected):
        await pump_env.driver.set_rate(rate)
    assert pump_env.model.status().rate_ml_h == 50


async def test_status_changes_are_delivered(pump_env: Any) -> None:
    await pump_env.driver.set_rate(80)
    changes: AsyncIterator[PumpStatus] = pump_env.driver.status_changes()
    nxt = asyncio.ensure_future(anext(changes))
    try:
        await asyncio.sleep(0)  # let the subscription start before the change
        await pump_env.driver.run()
        async with asyncio.timeout(5):
            while (await nxt).state is not PumpState.RUNNING:
                nxt = asyncio.ensure_future(anext(changes))
    finally:
        nxt.cancel()
        await asyncio.gather(nxt, return_exceptions=True)
        await changes.aclose()  # type: ignore[attr-defined]


# -- alarms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("alarm", list(Alarm))
async def test_every_alarm_stops_and_is_reported_A1(
    pump_env: Any, alarm: Alarm, request: pytest.FixtureRequest
) -> None:
    """A1: an alarm stops the pump and is reported; after it is cleared the pump runs again at
    the same rate when told, never on its own."""
    await running(pump_env, rate=90)
    pump_env.model.raise_alarm(alarm)
    status = await pump_env.driver.read_status()
    if transport(request) == "serial" and alarm not in SERIAL_SAYS:
        assert status.state is PumpState.STOPPED  # the protocol cannot say more
    else:
        assert status.state is PumpState.ALARM
        assert alarm in status.alarms
    # while the alarm stands the pump will not start
    with pytest.raises(PumpCommandRejected):
        await pump_env.driver.run()
    assert pump_env.model.state is not PumpState.RUNNING
    pump_env.model.clear_alarm(alarm)
    status = await pump_env.driver.read_status()
    assert status.state is not PumpState.RUNNING  # never restarts by itself
    status = await pump_env.driver.run()
    assert status.state is PumpState.RUNNING
    assert status.alarms == frozenset()
    assert status.rate_ml_h == pytest.approx(90, abs=RATE_TOL)


# -- faults ----------------------------------------------------------------------------------


async def test_fault_no_reply_times_out_then_recovers(pump_env: Any) -> None:
    await pump_env.driver.set_rate(70)
    pump_env.model.faults.no_reply = True
    with pytest.raises(PumpError) as info:
        await pump_env.driver.read_status()
    assert info.value.retryable
    assert info.value.operation == "read_status"
    pump_env.model.faults.no_reply = False
    assert (await pump_env.driver.read_status()).rate_ml_h == pytest.approx(70, abs=RATE_TOL)


async def test_fault_late_reply_within_the_timeout_is_accepted(pump_env: Any) -> None:
    pump_env.model.faults.late_reply_s = 0.03
    status = await pump_env.driver.set_rate(60)
    assert status.rate_ml_h == pytest.approx(60, abs=RATE_TOL)


async def test_fault_garbled_reply_is_never_acted_on(pump_env: Any) -> None:
    await pump_env.driver.set_rate(40)
    pump_env.model.faults.garble_replies = 1
    status = await pump_env.driver.read_status()  # the garbled reply is dropped, then retried
    assert status.rate_ml_h == pytest.approx(40, abs=RATE_TOL)
    assert pump_env.model.faults.garble_replies == 0


async def test_fault_garbled_replies_without_end_fail(pump_env: Any) -> None:
    pump_env.model.faults.garble_replies = 1000
    with pytest.raises(PumpError) as info:
        await pump_env.driver.read_status()
    assert info.value.retryable


async def test_fault_refuse_next_rejects_and_changes_nothing(pump_env: Any) -> None:
    await pump_env.driver.set_rate(30)
    pump_env.model.faults.refuse_next = 1
    with pytest.raises(PumpCommandRejected) as info:
        await pump_env.driver.set_rate(45)
    assert info.value.code == "NA"
    assert pump_env.model.status().rate_ml_h == 30
    assert (await pump_env.driver.set_rate(45)).rate_ml_h == pytest.approx(45, abs=RATE_TOL)


async def test_fault_rate_delay_shows_on_read_back_A3(pump_env: Any) -> None:
    """A3: the read-back says what the pump does, not what was asked."""
    await pump_env.driver.set_rate(20)
    pump_env.model.faults.rate_delay_s = 0.2
    status = await pump_env.driver.set_rate(25)
    assert status.rate_ml_h == pytest.approx(20, abs=RATE_TOL)
    await model_changed(pump_env, lambda m: m.status().rate_ml_h == 25)
    assert (await pump_env.driver.read_status()).rate_ml_h == pytest.approx(25, abs=RATE_TOL)


async def test_fault_drop_connection_then_recovers(pump_env: Any) -> None:
    await running(pump_env, rate=50)
    pump_env.model.faults.drop_connection = True
    outcome = await asyncio.gather(pump_env.driver.read_status(), return_exceptions=True)
    # over MQTT the pump drops and reconnects (the read may succeed); serial stays silent
    assert not isinstance(outcome[0], BaseException) or (
        isinstance(outcome[0], PumpError) and outcome[0].retryable
    )
    pump_env.model.faults.drop_connection = False
    await pump_env.restore_link()
    status = await pump_env.driver.read_status()
    assert status.state is PumpState.RUNNING
    assert status.rate_ml_h == pytest.approx(50, abs=RATE_TOL)


# -- reconnection ----------------------------------------------------------------------------


async def test_reconnection_reads_the_real_state_A2(pump_env: Any) -> None:
    """A2: a lost link fails retryably; once back, the driver reads the pump's real state."""
    await running(pump_env, rate=100)
    await pump_env.break_link()
    with pytest.raises(PumpError) as info:
        await pump_env.driver.read_status()
    assert info.value.retryable
    await pump_env.clock.advance(36)  # the pump went on infusing meanwhile
    await pump_env.restore_link()
    status = await pump_env.driver.read_status()
    assert status.state is PumpState.RUNNING
    assert status.volume_infused_ml == pytest.approx(1.0, abs=0.05)
    assert (await pump_env.driver.stop()).state is PumpState.STOPPED


async def status_where(driver: Any, predicate: Any, bound_s: float = 10.0) -> PumpStatus:
    """The driver's status once `predicate` holds for it (last one or a coming change), bounded."""
    async with asyncio.timeout(bound_s):
        changes = driver.status_changes()
        try:
            if (last := driver.last_status) is not None and predicate(last):
                return last  # type: ignore[no-any-return]
            async for status in changes:
                if predicate(status):
                    return status  # type: ignore[no-any-return]
        finally:
            await changes.aclose()
    raise AssertionError("status_changes ended")  # pragma: no cover


async def test_port_loss_fails_fast_then_reconnects_to_the_real_state_A2(port_env: Any) -> None:
    """A2: the port is lost (serial: the socket:// adapter unplugged; MQTT: the broker killed).
    Commands fail at once and retryably; the driver gets the port back by itself and publishes
    the pump's real state (it went on infusing), having commanded nothing."""
    env, loop = port_env, asyncio.get_running_loop()
    await running(env, rate=100)
    await env.drop_port()
    assert not env.driver.connected
    for operation, call in [
        ("read_status", env.driver.read_status),
        ("set_rate", lambda: env.driver.set_rate(150)),
        ("run", env.driver.run),
        ("stop", env.driver.stop),
    ]:
        started = loop.time()
        with pytest.raises(PumpConnectionError) as info:
            await call()
        assert loop.time() - started < FAIL_FAST_S
        assert info.value.retryable
        assert info.value.operation == operation
    await env.clock.advance(36)  # the pump went on infusing meanwhile: 100 ml/h x 36 s = 1 ml
    await env.restore_port()
    assert env.driver.connected
    # a fresh status reaches subscribers without anyone asking
    fresh = await status_where(env.driver, lambda s: s.volume_infused_ml > 0.9)
    assert fresh.state is PumpState.RUNNING
    assert fresh.rate_ml_h == pytest.approx(100, abs=RATE_TOL)
    assert fresh.volume_infused_ml == pytest.approx(1.0, abs=0.05)
    # nothing was commanded: not the refused rate, nor a restart
    assert env.model.state is PumpState.RUNNING
    assert env.model.status().rate_ml_h == pytest.approx(100, abs=RATE_TOL)
    status = await env.driver.read_status()
    assert status.state is PumpState.RUNNING
    assert env.driver.last_contact is not None
    assert not env.driver.is_stale()
    assert (await env.driver.stop()).state is PumpState.STOPPED

"""A stop is confirmed by a read-back showing the pump not running, or it raises (A3).

Over both transports (the `pump_env` fixture): a pump whose motor ignores the stop, a pump with
every alarm the line can say standing, and a caller cancelled while its stop is on the wire.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pump_actions import running, stuck_motor

from drivers.base import Alarm, PumpError, PumpNotConfirmed, PumpState


async def test_stop_that_does_not_take_effect_raises_A3(
    pump_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A3: a stop acknowledged but read back running is never reported as a success."""
    await running(pump_env)
    stops = stuck_motor(pump_env, monkeypatch)
    with pytest.raises(PumpNotConfirmed) as info:
        await pump_env.driver.stop()
    assert info.value.pump_id == pump_env.driver.pump_id
    assert info.value.operation == "stop"
    assert "did not stop" in info.value.message
    assert "A3" in info.value.message
    assert info.value.retryable
    assert len(stops) >= 2  # retried before giving up (A3: retry, then alarm)
    assert pump_env.model.state is PumpState.RUNNING


async def test_stop_that_takes_effect_on_the_retry_is_confirmed_A3(
    pump_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A3: the first stop is lost in the pump, the retry stops it: confirmed by the read-back."""
    await running(pump_env)
    real_stop = pump_env.model.stop
    calls: list[int] = []

    def first_ignored() -> None:
        calls.append(1)
        if len(calls) > 1:
            real_stop()

    monkeypatch.setattr(pump_env.model, "stop", first_ignored)
    status = await pump_env.driver.stop()
    assert status.state is PumpState.STOPPED
    assert pump_env.model.state is PumpState.STOPPED
    assert len(calls) == 2


async def test_stop_with_every_line_alarm_standing_is_confirmed_A1_A3(pump_env: Any) -> None:
    """A1/A3: each alarm reply acknowledges one alarm; the stop still gets through and is read
    back (the pump is not moving), instead of being refused after a fixed two resends."""
    await running(pump_env)
    for alarm in (Alarm.COMM_TIMEOUT, Alarm.OCCLUSION, Alarm.MALFUNCTION):
        pump_env.model.raise_alarm(alarm)
    status = await pump_env.driver.stop()
    assert status.state is PumpState.ALARM
    assert {Alarm.OCCLUSION, Alarm.COMM_TIMEOUT, Alarm.MALFUNCTION} <= status.alarms


async def test_cancelled_caller_does_not_abandon_the_stop(pump_env: Any) -> None:
    """STYLE: the stop is shielded from cancellation; it still reaches and stops the pump."""
    await running(pump_env)
    caller = asyncio.ensure_future(pump_env.driver.stop())
    await asyncio.sleep(0)  # the stop is under way
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    stopped = asyncio.Event()

    def check() -> None:
        if pump_env.model.state is PumpState.STOPPED:
            stopped.set()

    pump_env.model.listeners.append(check)
    try:
        check()
        async with asyncio.timeout(5):
            await stopped.wait()
    finally:
        pump_env.model.listeners.remove(check)
    try:
        status = await pump_env.driver.read_status()
    except PumpError as exc:  # pragma: no cover - only to name the failure
        pytest.fail(f"read after a cancelled stop failed: {exc}")
    assert status.state is PumpState.STOPPED


async def test_unconfirmed_stop_of_a_cancelled_caller_is_logged_as_an_error_A3(
    pump_env: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A3: the stop goes on without its cancelled caller; if it cannot be confirmed, nobody is
    left to raise to, so it is logged at ERROR ("pump did not stop"), never dropped silently."""
    await running(pump_env)
    stuck_motor(pump_env, monkeypatch)
    caller = asyncio.ensure_future(pump_env.driver.stop())
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await pump_env.driver.close()  # waits for the shielded stop to finish
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert any("did not stop" in r.getMessage() for r in errors), [r.getMessage() for r in errors]

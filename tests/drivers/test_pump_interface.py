"""The Pump interface carries what every driver does alike: link health and the confirmed stop.

Both drivers (the `pump_env` fixture: serial and MQTT) inherit these members instead of each
writing its own; the stop is bounded by `stop_worst_case_s`, which each driver computes from its
own timeouts and retry counts (drivers/base.py, `Pump.stop`).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pump_actions import running, stuck_motor

from drivers.base import STOP_ATTEMPTS, Pump, PumpNotConfirmed, PumpTimeout
from drivers.mqtt import MqttPump
from drivers.serial import SerialPump

#: Scheduling slack on a loaded machine, on top of a stated bound.
MARGIN_S = 0.25
#: Members written once, in drivers.base.Pump; a driver defining its own is repeating it.
SHARED = (
    "connected",
    "last_contact",
    "is_stale",
    "wait_linked",
    "wait_unlinked",
    "_set_linked",
    "_touch",
    "last_status",
    "status_changes",
    "stop",
    "_confirmed_stop",
    "_reap_stop",
    "_finish_stops",
)


@pytest.mark.parametrize("driver", [SerialPump, MqttPump], ids=lambda d: d.__name__)
def test_link_health_and_the_stop_are_the_interfaces_not_the_drivers(driver: type[Pump]) -> None:
    assert [name for name in SHARED if name in vars(driver)] == []
    assert all(name in vars(Pump) for name in SHARED)


async def test_link_health_reads_alike_on_both_transports(pump_env: Any) -> None:
    driver = pump_env.driver
    assert driver.connected
    assert driver.last_contact is not None
    assert not driver.is_stale()
    assert driver.is_stale(driver.last_contact + driver.link_timeout_s + 0.001)
    before = driver.last_contact
    await driver.read_status()
    assert driver.last_contact >= before


async def test_a_stop_that_gets_no_reply_fails_within_its_worst_case(pump_env: Any) -> None:
    """The bound is the driver's own figure: a pump that never answers fails the stop
    (PumpTimeout, or not confirmed) no later than `stop_worst_case_s` on the loop's clock."""
    await running(pump_env)
    pump_env.model.faults.no_reply = True
    bound = pump_env.driver.stop_worst_case_s
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises((PumpTimeout, PumpNotConfirmed)) as info:
        await pump_env.driver.stop(command_id="ledger-stop-1")
    elapsed = loop.time() - start
    assert elapsed <= bound + MARGIN_S, f"stop failed after {elapsed:.3f} s, bound {bound:.3f} s"
    assert info.value.command_id == "ledger-stop-1"


async def test_a_stop_still_unconfirmed_at_its_worst_case_raises_then(
    pump_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replies that keep coming, each in time but late, cannot stretch a stop past its bound:
    at the bound it raises PumpTimeout with the A3 words. (Without the deadline this stop
    would succeed, after well over the bound set here.)"""
    await running(pump_env)
    bound = 0.05
    monkeypatch.setattr(type(pump_env.driver), "stop_worst_case_s", property(lambda _: bound))
    pump_env.model.faults.late_reply_s = 0.1
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(PumpTimeout) as info:
        await pump_env.driver.stop()
    assert loop.time() - start <= bound + MARGIN_S
    assert "pump did not stop: clamp the line" in info.value.message
    assert "0.05 s" in info.value.message
    pump_env.model.faults.late_reply_s = 0
    await pump_env.driver.read_status()  # the line or link is still good


async def test_the_stop_retry_is_a_new_command_with_its_own_id(
    pump_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A3: the retry of a stop read back moving is sent again as `<id>#2`, so a pump that
    remembers ids executes it; the unconfirmed stop names the ledger id."""
    await running(pump_env)
    stops = stuck_motor(pump_env, monkeypatch)
    with pytest.raises(PumpNotConfirmed) as info:
        await pump_env.driver.stop(command_id="ledger-stop-2")
    assert len(stops) == STOP_ATTEMPTS  # each attempt reached the motor
    assert info.value.command_id == "ledger-stop-2"
    assert "ledger-stop-2" in str(info.value)

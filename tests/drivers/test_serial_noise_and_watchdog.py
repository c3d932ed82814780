"""The serial driver against bad bytes and a lossy line (interfaces.md section 1).

- A broken frame start left on the line (noise: STX and a length byte, then nothing) must not
  swallow the reply to the next request: the pump only speaks when spoken to, so whatever is
  pending when a new request goes out is dropped, and a gap of more than 0.5 s inside a packet
  discards it (the same rule the pump applies).
- The safe-mode watchdog is fed again promptly after a lost feed, so two lost feeds in a row do
  not let the pump's watchdog expire (SAF n: the pump stops after n silent seconds).
"""

from __future__ import annotations

import asyncio

import pytest
from listener_wait import until
from serial_env import SerialEnv, serial_env

from drivers.base import Alarm, PumpState
from drivers.serial.codec import STX, Reply
from pumpctl.clock import VirtualClock
from simulator.serial_server import WireEvent

#: The reply bound of the noise tests: "answered at the first attempt" is about the noise, not
#: the wire's speed (a loaded CI run once took longer than the tests' usual 0.15 s).
NOISE_REPLY_TIMEOUT_S = 2.0
#: STX, then a safe-frame length byte announcing 30 bytes of payload: a frame that never ends.
BROKEN_START = bytes([STX, 30]) + b"00S"


async def send_noise(env: SerialEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put `BROKEN_START` on the line; return once the driver's decoder holds it (bounded)."""
    decoder = env.line._decoder  # what the line holds is the point of these tests
    arrived = asyncio.Event()
    feed = decoder.feed

    def watched(data: bytes) -> list[Reply]:
        frames = feed(data)
        if decoder.pending:
            arrived.set()
        return frames

    monkeypatch.setattr(decoder, "feed", watched)
    env.simulator.transmit(BROKEN_START)  # unsolicited noise, nobody is waiting
    async with asyncio.timeout(5):
        await arrived.wait()


async def test_noise_before_a_request_does_not_swallow_its_reply(
    clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serial_env(clock, safe_mode_s=5, reply_timeout_s=NOISE_REPLY_TIMEOUT_S) as env:
        await env.driver.set_rate(42)
        await send_noise(env, monkeypatch)
        before = env.line.stats.timeouts
        status = await env.driver.read_status()
        assert status.rate_ml_h == 42
        assert env.line.stats.timeouts == before  # answered at the first attempt


async def test_noise_in_basic_mode_does_not_swallow_the_reply(
    clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serial_env(clock, safe_mode_s=0, reply_timeout_s=NOISE_REPLY_TIMEOUT_S) as env:
        await env.driver.set_rate(7)
        await send_noise(env, monkeypatch)
        before = env.line.stats.timeouts
        status = await env.driver.stop()
        assert status.state is PumpState.STOPPED
        assert status.rate_ml_h == 7
        assert env.line.stats.timeouts == before


async def test_two_lost_watchdog_feeds_do_not_let_the_pump_stop(clock: VirtualClock) -> None:
    """SAF 3: feeds every 1 s of silence. Two feeds lost in a row (the pump hears nothing), then
    the line is good again: the next feed must arrive before the pump's 3 s run out."""
    async with serial_env(clock, safe_mode_s=3) as env:
        await env.driver.set_rate(60)
        await env.driver.set_vtbi(500)
        await env.driver.run()
        lost: list[WireEvent] = []

        def record(event: WireEvent) -> None:
            if not event.answered:
                lost.append(event)

        env.simulator.listeners.append(record)
        try:
            env.model.faults.no_reply = True
            await until(lambda: len(lost) >= 2, env.simulator.listeners)
            env.model.faults.no_reply = False
            received = len(env.simulator.received)
            await until(
                lambda: any(e.answered for e in env.simulator.received[received:]),
                env.simulator.listeners,
            )
        finally:
            env.simulator.listeners.remove(record)
        assert Alarm.COMM_TIMEOUT not in env.model.alarms
        assert env.model.state is PumpState.RUNNING

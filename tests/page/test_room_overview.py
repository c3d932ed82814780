"""The room at a glance (issue 23; docs/interfaces.md section 4; docs/clinical-rules.md A8) in
Debian's Chromium against the real service process: twelve simulated pumps fit one screen,
an unconfirmed stop (A3) puts its pump's tile first, red and flashing within IEC 60601-1-8's
band, the banner counts it; the page's audio calls, recorded through an instrumented
AudioContext (a browser cannot be listened to), are the high-priority burst; acknowledging
stops the sound and is audited with the nurse's name; "Silence 2 min" holds for two minutes
of the page's clock (Playwright's clock) and a new high-priority alarm sounds through it;
reduced motion stops the flashing."""

from __future__ import annotations

import asyncio
import itertools
import re
from pathlib import Path
from typing import Any

import pytest
from page_env import opened, screenshot, signed_in, tile
from playwright.async_api import Browser, Page, expect
from service_process import Service, serving

pytestmark = [pytest.mark.timeout(240), pytest.mark.asyncio(loop_scope="module")]

# The page's AudioContext replaced by one that records every oscillator's start and stop (on
# its own clock, performance.now(), which Playwright's clock drives). As a browser does, it
# plays only when created or resumed during a user's gesture.
RECORDER = r"""
(() => {
  const log = { starts: [], stops: [], contexts: [], ctx: null };
  window.__audio = log;
  class Param { setValueAtTime() {} linearRampToValueAtTime() {} cancelScheduledValues() {} }
  class Node { connect(next) { return next; } disconnect() {} }
  const gesture = () => Boolean(navigator.userActivation && navigator.userActivation.isActive);
  class RecordingAudioContext {
    constructor() {
      this.t0 = performance.now();
      this.state = gesture() ? "running" : "suspended";
      this.destination = new Node();
      log.contexts.push({ state: this.state });
      log.ctx = this;
    }
    get currentTime() { return (performance.now() - this.t0) / 1000; }
    resume() { if (gesture()) this.state = "running"; return Promise.resolve(); }
    createGain() { const node = new Node(); node.gain = new Param(); return node; }
    createPeriodicWave() { return {}; }
    createOscillator() {
      const ctx = this;
      const node = new Node();
      node.id = log.starts.length + log.stops.length + Math.random();
      node.frequency = {};
      node.setPeriodicWave = () => {};
      node.start = (at) => log.starts.push(
        { id: node.id, at, called: ctx.currentTime, hz: node.frequency.value });
      node.stop = (at) => log.stops.push(
        { id: node.id, at: at === undefined ? ctx.currentTime : at, called: ctx.currentTime });
      return node;
    }
  }
  window.AudioContext = RecordingAudioContext;
  window.webkitAudioContext = RecordingAudioContext;
})();
"""

SOUND_STATE = "#sound-state"
ALARM_WITHIN_S = 20.0  # a stop's fate on a loaded machine
BURSTS_APART_S = 2.0  # IEC 60601-1-8: within a burst at most 1.3 s, between bursts 2.5 s or more


async def audio_and_clock(page: Page) -> None:
    """The recording AudioContext and Playwright's clock, installed before the page loads."""
    await page.add_init_script(RECORDER)
    await page.clock.install()


async def audio(page: Page) -> dict[str, Any]:
    log: dict[str, Any] = await page.evaluate(
        "({starts: __audio.starts, stops: __audio.stops, contexts: __audio.contexts,"
        " now: __audio.ctx ? __audio.ctx.currentTime : null})"
    )
    return log


def bursts(log: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """The recorded pulses, each with its start and the stop it was scheduled with, grouped
    into bursts: a burst's longest inner gap is 1.3 s, bursts are 2.5 s or more apart."""
    scheduled = {s["id"]: s["at"] for s in log["stops"] if s["at"] > s["called"]}
    pulses = []
    for start in log["starts"]:
        end = scheduled.get(start["id"])
        assert end is not None, f"a pulse with no scheduled end: {start}"
        pulses.append({"at": start["at"], "end": end})
    groups: list[list[dict[str, Any]]] = []
    for pulse in sorted(pulses, key=lambda p: p["at"]):
        if groups and pulse["at"] - groups[-1][-1]["end"] < BURSTS_APART_S:
            groups[-1].append(pulse)
        else:
            groups.append([pulse])
    return groups


def sounding_after(log: dict[str, Any], instant: float) -> list[str]:
    """Oscillators whose last stop (the scheduled one, or a hush) is after `instant`."""
    last: dict[str, float] = {}
    for stop in log["stops"]:
        last[stop["id"]] = stop["at"]
    return [i for i, at in last.items() if at > instant + 1e-3]


async def unconfirmed_stop(service: Service, pump_id: str) -> int:
    """A3: the pump answers nothing (the simulator's `no_reply`), a nurse reports a reaction:
    the stop is not confirmed (202, "clamp the line"). The infusion's id."""
    infusion = (await service.pump(pump_id))["infusion_id"]
    await service.api(
        "POST", f"/sim/pumps/{pump_id}/faults", "admin", {"fault": "no_reply", "value": True}
    )
    answer = await service.api(
        "POST",
        f"/infusions/{infusion}/reactions",
        "nurse",
        {"grade": 2, "signs": ["other"]},
        202,
    )
    assert (answer["stop"], answer["alarm"]) == ("unconfirmed", "A3")
    # the stop's fate comes after the answer (the driver tries it once more): wait, bounded,
    # until the service has raised the alarm
    async with asyncio.timeout(ALARM_WITHIN_S):
        while "pump_not_stopped" not in (await alarms_of(service, infusion)):  # noqa: ASYNC110
            await asyncio.sleep(0.1)  # polling a condition with a deadline
    return int(infusion)


async def alarms_of(service: Service, infusion: int) -> list[str]:
    view = await service.api("GET", f"/infusions/{infusion}", "viewer")
    return [a["kind"] for a in view["alarms"]]


async def pump_answers_again(service: Service, pump_id: str) -> None:
    """The fault gone: the stop is sent again and confirmed; the A3 alarm stays latched (A1)."""
    await service.api("DELETE", f"/sim/pumps/{pump_id}/faults/no_reply", "admin")
    await service.advance(1)


async def band_style(page: Page, pump_id: str) -> dict[str, Any]:
    style: dict[str, Any] = (
        await tile(page, pump_id)
        .locator(".tile-band")
        .evaluate(
            """el => {
            const s = getComputedStyle(el);
            const frames = el.getAnimations().flatMap(a => a.effect.getKeyframes())
                .map(k => k.backgroundColor).filter(Boolean);
            return {name: s.animationName, duration: s.animationDuration,
                    image: s.backgroundImage, frames,
                    border: getComputedStyle(el.closest('.tile')).borderTopColor};
        }"""
        )
    )
    return style


async def fits(page: Page) -> tuple[int, int, int, int]:
    sizes: list[int] = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth,"
        " document.documentElement.scrollHeight, document.documentElement.clientHeight]"
    )
    return sizes[0], sizes[1], sizes[2], sizes[3]


async def test_a8_twelve_pumps_fit_1280_by_800_and_six_a_768_px_screen(
    browser: Browser, tmp_path: Path
) -> None:
    """`pumpctl serve --simulate 12`: the room's twelve tiles (pump, patient, state, the rate
    the pump reports, the time to the next step) on a 1280 x 800 screen with no scrolling, the
    pumps in their own order while none has an alarm; six whole tiles on a 768 px screen."""
    async with serving(tmp_path, simulate=12) as service:
        for n in (1, 4, 7, 10):
            await service.running(f"pump-{n}", f"MRN-10{n:02d}")
        await service.advance(3600 + 30)  # one step each (L1): 100 ml/h
        page = await signed_in(browser, service, "nurse", height=800)
        tiles = page.locator("#overview .tile")
        await expect(tiles).to_have_count(12)
        await expect(tile(page, "pump-10")).to_contain_text("100 ml/h")
        await expect(page.locator("#alarm-counts")).to_have_text("✓ No active alarms")
        order = [await t.get_attribute("data-pump") for t in await tiles.all()]
        assert order == [f"pump-{n}" for n in range(1, 13)]
        await expect(tile(page, "pump-7")).to_contain_text(
            re.compile(r"pump-7\s*MRN-1007\s*Running\s*100 ml/h\s*Next step in (1 h )?\d+ min")
        )
        await expect(tile(page, "pump-8")).to_contain_text("No infusion")
        width, view_width, height, view_height = await fits(page)
        assert (width, height) == (view_width, view_height) == (1280, 800)
        for each in await tiles.all():
            box = await each.bounding_box()
            assert box is not None
            assert box["y"] >= 0, box
            assert box["y"] + box["height"] <= 800, box
            assert box["height"] >= 100, box  # a tile, not a sliver
        await screenshot(page, "room-12-pumps")

        small = await signed_in(browser, service, "nurse", width=768, height=800)
        await expect(small.locator("#overview .tile")).to_have_count(12)
        await expect(tile(small, "pump-4")).to_contain_text("100 ml/h")
        width, view_width, _, _ = await fits(small)
        assert width <= view_width == 768
        for each in (await small.locator("#overview .tile").all())[:6]:
            box = await each.bounding_box()
            assert box is not None
            assert box["x"] >= 0, box
            assert box["x"] + box["width"] <= 768, box
            assert box["y"] + box["height"] <= 800, box
        await screenshot(small, "room-12-pumps-768")
        assert page.errors == small.errors == []  # type: ignore[attr-defined]


async def test_a3_a8_an_unconfirmed_stop_puts_its_tile_first_red_flashing_and_counted(
    browser: Browser, tmp_path: Path
) -> None:
    """A3, A8: an occlusion (A1, medium) brings pump-6's tile first, yellow, flashing at
    0.4-0.8 Hz; then pump-11's stop is not confirmed: its tile comes before it, says "Not
    stopped (A3)" with the high priority's icon and words, red, its band flashing between red
    and white at 1.4-2.8 Hz; the banner counts the alarms the service reports by priority and
    links to each; the link opens the pump's detail. With reduced motion nothing flashes: a
    steady stripe."""
    async with serving(tmp_path, simulate=12) as service:
        for n in (2, 6, 11):
            await service.running(f"pump-{n}", f"MRN-20{n:02d}")
        page = await signed_in(browser, service, "nurse", height=800)
        first = page.locator("#overview .tile").first
        await expect(first).to_have_attribute("data-pump", "pump-1")
        await service.api("POST", "/sim/pumps/pump-6/faults", "admin", {"alarm": "occlusion"})
        await service.advance(1)
        await expect(first).to_have_attribute("data-pump", "pump-6")
        await expect(first).to_have_class(re.compile(r"\bprio-medium\b"))
        await expect(first.locator(".tile-band")).to_contain_text(
            "!! Medium priority alarm: Pump alarm: Occlusion (A1)"
        )
        medium = await band_style(page, "pump-6")
        assert medium["name"] == "flash-medium", medium
        assert 0.4 <= 1 / float(medium["duration"].removesuffix("s")) <= 0.8, medium
        infusion = await unconfirmed_stop(service, "pump-11")

        await expect(first).to_have_attribute("data-pump", "pump-11")
        await expect(page.locator("#overview .tile").nth(1)).to_have_attribute(
            "data-pump", "pump-6"
        )
        await expect(first).to_have_class(re.compile(r"\bprio-high\b"))
        await expect(first).to_contain_text("Not stopped (A3)")
        await expect(first.locator(".tile-band")).to_contain_text(
            re.compile(r"^!!! High priority alarm: A3: pump did not stop")
        )
        style = await band_style(page, "pump-11")
        assert style["name"] == "flash-high", style
        hertz = 1 / float(style["duration"].removesuffix("s"))
        assert 1.4 <= hertz <= 2.8, style
        assert set(style["frames"]) == {"rgb(196, 0, 26)", "rgb(255, 255, 255)"}, style
        assert style["border"] == "rgb(196, 0, 26)", style
        await expect(page.locator("#alarm-counts")).to_contain_text(re.compile(r"[12] high"))
        calm = await band_style(page, "pump-2")
        assert (calm["name"], calm["border"]) == ("none", "rgb(199, 205, 212)"), calm
        await screenshot(page, "room-12-pumps-alarm")

        await pump_answers_again(service, "pump-11")
        view = await service.api("GET", f"/infusions/{infusion}", "viewer")
        high = [a for a in view["alarms"] if a["priority"] == "high"]
        assert "pump_not_stopped" in [a["kind"] for a in high]
        assert all(a["priority"] == "high" for a in view["alarms"])
        counts = page.locator("#alarm-counts")
        await expect(counts).to_have_text(
            f"Active alarms: !!! {len(high)} high, !! 1 medium, ! 0 low"
        )
        await expect(first).to_have_attribute("data-pump", "pump-11")  # latched: still first
        links = page.locator("#alarm-links a")
        await expect(links).to_have_count(len(high) + 1)
        await expect(links.last).to_contain_text("Medium: pump-6: Pump alarm: Occlusion (A1)")
        await links.filter(has_text="pump-11: A3").click()
        pump = page.get_by_role("region", name="pump-11", exact=True)
        await expect(pump).to_be_visible()
        not_stopped = pump.get_by_role("listitem").filter(has_text="A3: pump did not stop")
        await expect(not_stopped).to_contain_text("!!! High priority")
        await screenshot(page, "room-12-pumps-alarm-detail")

        await page.emulate_media(reduced_motion="reduce")
        steady = await band_style(page, "pump-11")
        assert steady["name"] == "none", steady
        assert "repeating-linear-gradient" in steady["image"], steady
        assert steady["border"] == "rgb(196, 0, 26)", steady
        await expect(tile(page, "pump-11")).to_contain_text("!!! High priority alarm")
        assert page.errors == []  # type: ignore[attr-defined]


async def test_a8_the_high_burst_sounds_and_acknowledging_stops_it_audited_with_the_nurse(
    service: Service, browser: Browser
) -> None:
    """A8: the sign-in click unlocks sound (a reload without a gesture shows "Sound off" and
    "Allow sound"); an unconfirmed stop (A3) sounds the high-priority burst, 10 pulses as
    IEC 60601-1-8 spaces them, repeated 2.5-15 s after; each alarm acknowledged from the page
    stops the sound at once and for good, the tile still red and flashing, and the audit trail
    names the nurse and the alarm's rule."""
    await service.running("pump-1", "MRN-3001", hours=1)
    page = await signed_in(browser, service, "nurse", prepare=audio_and_clock)
    log = await audio(page)
    assert log["contexts"] == [{"state": "running"}]  # made by the sign-in click
    await expect(page.locator(SOUND_STATE)).to_have_text("♪ Sound on")
    assert log["starts"] == []  # no alarm, no sound

    await page.reload()  # the tab keeps its token; no gesture: the browser allows no sound
    await expect(page.locator(SOUND_STATE)).to_have_text(
        "⚠ Sound off: the browser has not allowed sound on this page"
    )
    await page.get_by_role("button", name="Allow sound").click()
    await expect(page.locator(SOUND_STATE)).to_have_text("♪ Sound on")
    await expect(page.get_by_role("button", name="Allow sound")).to_be_hidden()

    infusion = await unconfirmed_stop(service, "pump-1")
    await pump_answers_again(service, "pump-1")
    await page.wait_for_function("() => __audio.starts.length >= 10", timeout=30_000)
    [burst, *_] = bursts(await audio(page))
    assert len(burst) == 10
    durations = [p["end"] - p["at"] for p in burst]
    assert all(0.075 <= d <= 0.2 for d in durations), durations
    gaps = [b["at"] - a["end"] for a, b in itertools.pairwise(burst)]
    x, td = gaps[0], durations[0]
    assert 0.05 <= x <= 0.125, gaps
    expected = [x, x, 2 * x + td, x, gaps[4], x, x, 2 * x + td, x]
    assert gaps == pytest.approx(expected, abs=1e-6), gaps
    assert 0.35 <= gaps[4] <= 1.3, gaps

    await page.clock.run_for(20_000)  # the page's clock: the burst repeats
    log = await audio(page)
    first, second, *_ = bursts(log)
    assert len(second) == 10
    assert 2.5 <= second[0]["at"] - first[-1]["end"] <= 15

    pump = await opened(page, "pump-1")
    acknowledge = pump.get_by_role("button", name="Acknowledge alarm")
    while shown := await acknowledge.count():
        await acknowledge.first.click()
        await expect(pump.get_by_role("status")).to_contain_text("acknowledged (A8)")
        await expect(acknowledge).to_have_count(shown - 1)
    await expect(pump.get_by_role("listitem").filter(has_text="pump did not stop")).to_contain_text(
        "Acknowledged by nina"
    )
    await page.clock.run_for(500)  # two of the page's sound ticks since it shows them
    hushed = (await audio(page))["now"]
    await page.clock.run_for(40_000)
    after = await audio(page)
    assert sounding_after(after, hushed) == [], "sound after the acknowledgement"
    assert [s for s in after["starts"] if s["called"] > hushed] == []
    style = await band_style(page, "pump-1")  # the visual signal stays until it is cleared
    assert style["name"] == "flash-high", style

    trail = await service.api("GET", f"/infusions/{infusion}/events", "viewer")
    acknowledged = [e for e in trail if e["type"] == "alarm_acknowledged"]
    by_alarm = {e["data"]["alarm"]: e for e in acknowledged}
    assert by_alarm["pump_not_stopped"]["actor"] == "nina"
    assert by_alarm["pump_not_stopped"]["rule"] == "A3"
    assert by_alarm["pump_not_stopped"]["data"]["priority"] == "high"
    view = await service.api("GET", f"/infusions/{infusion}", "viewer")
    assert {a["acknowledged_by"] for a in view["alarms"]} == {"nina"}
    assert "pump_not_stopped" in view["latched_alarms"]  # A1: acknowledging is not clearing
    assert page.errors == []  # type: ignore[attr-defined]


async def test_a8_silence_holds_two_minutes_of_the_page_clock_and_a_new_high_alarm_sounds_through(
    service: Service, browser: Browser
) -> None:
    """A8: "Silence 2 min" hushes the sounding burst at once and counts down; 1 min 50 s on
    the page's clock later nothing has sounded (10 s left); past the 2 minutes the burst sounds
    again. During a second silence a new high-priority alarm (another unconfirmed stop, A3)
    sounds through it."""
    await service.running("pump-1", "MRN-4001", hours=1)
    await service.running("pump-2", "MRN-4002", hours=1)
    page = await signed_in(browser, service, "nurse", prepare=audio_and_clock)
    await unconfirmed_stop(service, "pump-1")
    await pump_answers_again(service, "pump-1")
    await page.wait_for_function("() => __audio.starts.length >= 10", timeout=30_000)

    await page.get_by_role("button", name="Silence 2 min").click()
    state = page.locator(SOUND_STATE)
    await expect(state).to_have_text(re.compile(r"^⚠ Sound paused: (2:00|1:59) left$"))
    silenced = (await audio(page))["now"]
    await page.clock.run_for(110_000)
    log = await audio(page)
    assert sounding_after(log, silenced) == []
    assert [s for s in log["starts"] if s["called"] > silenced] == []
    await expect(state).to_have_text(re.compile(r"^⚠ Sound paused: 0:(10|09) left$"))
    await page.clock.run_for(15_000)
    await expect(state).to_have_text("♪ Sound on")
    resumed = [s for s in (await audio(page))["starts"] if s["called"] > silenced]
    assert len(resumed) >= 10, "the burst did not come back after the silence"

    await page.get_by_role("button", name="Silence 2 min").click()
    await expect(state).to_contain_text("Sound paused")
    again = (await audio(page))["now"]
    await unconfirmed_stop(service, "pump-2")
    await page.wait_for_function(
        "(since) => __audio.starts.filter(s => s.called > since).length >= 10",
        arg=again,
        timeout=30_000,
    )
    await expect(state).to_contain_text("Sound paused")  # still paused, for the others
    through = [s for s in (await audio(page))["starts"] if s["called"] > again]
    assert len(through) >= 10
    await expect(page.locator("#overview .tile").first).to_have_attribute("data-pump", "pump-1")
    await expect(tile(page, "pump-2")).to_have_class(re.compile(r"\bprio-high\b"))
    assert page.errors == []  # type: ignore[attr-defined]

// A8 (docs/clinical-rules.md; IEC 60601-1-8): the page's pure alarm-signal module, held to the
// standard's bands: the priority order of the room's tiles, the flash rates, the pulse bursts
// and their repetition, and the 2 min silence on an injected clock.

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import {
  FLASH,
  PRIORITIES,
  PULSES,
  RISE,
  SILENCE_MS,
  audible,
  burst,
  burstPeriodS,
  counts,
  flashPeriodS,
  highest,
  known,
  mostUrgent,
  orderTiles,
  rank,
  silenceFrom,
  silenceLeftMs,
} from "../../api/static/signals.js";

const close = (a, b) => Math.abs(a - b) < 1e-9;

// the gaps between consecutive pulses of a burst (end of one to start of the next)
function gaps(pulses) {
  return pulses.slice(1).map((p, i) => p.at - (pulses[i].at + pulses[i].duration));
}

describe("A8 priorities and the room's order", () => {
  it("orders high, medium, low and takes an unknown priority as high (the safe side)", () => {
    assert.deepEqual(PRIORITIES, ["high", "medium", "low"]);
    assert.deepEqual(["low", "high", "medium"].map(rank), [2, 0, 1]);
    assert.equal(known("gremlins"), "high");
    assert.equal(highest(["low", "medium"]), "medium");
    assert.equal(highest(["low", "gremlins"]), "high");
    assert.equal(highest([]), null);
  });

  it("puts the pumps with an alarm first, by priority then oldest, the rest in pump order", () => {
    const order = orderTiles([
      { id: "pump-10", alarms: [] },
      { id: "pump-2", alarms: [] },
      { id: "pump-3", alarms: [{ priority: "low", since: 1 }] },
      { id: "pump-4", alarms: [{ priority: "medium", since: 50 }] },
      { id: "pump-5", alarms: [{ priority: "low", since: 2 }, { priority: "high", since: 900 }] },
      { id: "pump-6", alarms: [{ priority: "high", since: 100 }] },
      { id: "pump-1", alarms: [] },
      { id: "pump-7", alarms: [{ priority: "medium", since: 10 }] },
    ]);
    assert.deepEqual(order, ["pump-6", "pump-5", "pump-7", "pump-4", "pump-3", "pump-1", "pump-2", "pump-10"]);
  });

  it("keeps the order stable when nothing changes, and moves only the pump whose alarm came", () => {
    const quiet = ["pump-3", "pump-1", "pump-12", "pump-2"].map((id) => ({ id, alarms: [] }));
    assert.deepEqual(orderTiles(quiet), ["pump-1", "pump-2", "pump-3", "pump-12"]);
    assert.deepEqual(orderTiles(orderTiles(quiet).map((id) => ({ id, alarms: [] }))), orderTiles(quiet));
    const alarmed = quiet.map((e) => (e.id === "pump-12" ? { ...e, alarms: [{ priority: "high", since: 5 }] } : e));
    assert.deepEqual(orderTiles(alarmed), ["pump-12", "pump-1", "pump-2", "pump-3"]);
  });

  it("names a pump's most urgent alarm: its highest priority, of it the oldest", () => {
    assert.deepEqual(
      mostUrgent([{ priority: "medium", since: 1 }, { priority: "high", since: 9 }, { priority: "high", since: 4 }]),
      { priority: "high", since: 4 },
    );
    assert.equal(mostUrgent([]), null);
  });

  it("counts active alarms by priority for the banner, every priority named", () => {
    assert.deepEqual(counts([{ priority: "high" }, { priority: "low" }, { priority: "high" }]), { high: 2, medium: 0, low: 1 });
    assert.deepEqual(counts([]), { high: 0, medium: 0, low: 0 });
  });
});

describe("A8 visual signals: flash rates in the standard's bands", () => {
  it("flashes high at 1.4-2.8 Hz and medium at 0.4-0.8 Hz, 20-60 % on; low is steady", () => {
    assert.ok(FLASH.high.hz >= 1.4 && FLASH.high.hz <= 2.8, FLASH.high.hz);
    assert.ok(FLASH.medium.hz >= 0.4 && FLASH.medium.hz <= 0.8, FLASH.medium.hz);
    for (const p of ["high", "medium"]) assert.ok(FLASH[p].duty >= 0.2 && FLASH[p].duty <= 0.6);
    assert.equal(FLASH.low, null);
    assert.ok(close(flashPeriodS("high"), 0.5));
    assert.ok(flashPeriodS("medium") > 1.25 && flashPeriodS("medium") < 2.5);
    assert.equal(flashPeriodS("low"), null);
  });
});

describe("A8 audible signals: the pulse bursts", () => {
  it("sounds high as 10 pulses, 3 + 2, a pause, 3 + 2, each pulse and gap in its band", () => {
    const pulses = burst("high");
    assert.equal(pulses.length, 10);
    for (const p of pulses) assert.ok(p.duration >= 0.075 && p.duration <= 0.2, p.duration);
    const [x, , long, , halves] = gaps(pulses);
    assert.ok(x >= 0.05 && x <= 0.125, x);
    const td = pulses[0].duration;
    assert.deepEqual(
      gaps(pulses).map((g) => Math.round(g * 1000)),
      [x, x, 2 * x + td, x, halves, x, x, 2 * x + td, x].map((g) => Math.round(g * 1000)),
    );
    assert.ok(close(long, 2 * x + td));
    assert.ok(halves >= 0.35 && halves <= 1.3, halves);
  });

  it("sounds medium as 3 pulses of 125-250 ms, 125-250 ms apart; low not at all", () => {
    const pulses = burst("medium");
    assert.equal(pulses.length, 3);
    for (const p of pulses) assert.ok(p.duration >= 0.125 && p.duration <= 0.25);
    for (const g of gaps(pulses)) assert.ok(g >= 0.125 && g <= 0.25, g);
    assert.deepEqual(burst("low"), []);
    assert.equal(burstPeriodS("low"), null);
  });

  it("repeats a burst 2.5-15 s (high) or 2.5-30 s (medium) after its last pulse, rising in 10-20 %", () => {
    for (const [priority, most] of [["high", 15], ["medium", 30]]) {
      const pulses = burst(priority);
      const end = pulses[pulses.length - 1].at + pulses[pulses.length - 1].duration;
      const interval = burstPeriodS(priority) - end;
      assert.ok(interval >= 2.5 && interval <= most, `${priority}: ${interval}`);
      assert.equal(PULSES[priority].repeatS, interval);
    }
    assert.ok(RISE >= 0.1 && RISE <= 0.2);
  });
});

describe("A8 what sounds, acknowledgement and the 2 min silence on an injected clock", () => {
  const high = { priority: "high", acknowledged: false, soundable: true, seenAt: 1000 };
  const medium = { priority: "medium", acknowledged: false, soundable: true, seenAt: 1000 };

  it("sounds the highest priority not acknowledged; an acknowledged or unsoundable alarm is silent", () => {
    assert.equal(audible([medium, high], null, 2000), "high");
    assert.equal(audible([medium, { ...high, acknowledged: true }], null, 2000), "medium");
    assert.equal(audible([{ ...medium, acknowledged: true }], null, 2000), null);
    assert.equal(audible([{ ...high, soundable: false }], null, 2000), null);
    assert.equal(audible([{ priority: "low", acknowledged: false, soundable: true, seenAt: 0 }], null, 2000), null);
    assert.equal(audible([], null, 2000), null);
  });

  it("pauses every sound for exactly 2 min of the page's clock, counting down, then sounds again", () => {
    const silence = silenceFrom(5000);
    assert.equal(SILENCE_MS, 120000);
    assert.equal(silenceLeftMs(silence, 5000), 120000);
    assert.equal(silenceLeftMs(silence, 5000 + 110000), 10000);
    assert.equal(audible([high, medium], silence, 5000 + 119999), null);
    assert.equal(silenceLeftMs(silence, 5000 + 120000), 0);
    assert.equal(audible([high, medium], silence, 5000 + 120000), "high");
    assert.equal(silenceLeftMs(null, 0), 0);
  });

  it("lets a high-priority alarm raised during the silence sound through it, and nothing else", () => {
    const silence = silenceFrom(5000);
    const newHigh = { ...high, seenAt: 6000 };
    const newMedium = { ...medium, seenAt: 6000 };
    assert.equal(audible([high, newMedium], silence, 7000), null);
    assert.equal(audible([high, newMedium, newHigh], silence, 7000), "high");
    assert.equal(audible([{ ...newHigh, acknowledged: true }], silence, 7000), null);
  });
});

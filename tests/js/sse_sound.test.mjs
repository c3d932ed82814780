// The live events' parser (sse.js) and the Web Audio driver (sound.js) on a fake AudioContext
// whose clock the test moves: the high burst scheduled as signals.js says, repeated at its
// interval, stopped at once when nothing is to sound (an acknowledgement, A8).

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { EventParser } from "../../api/static/sse.js";
import { burst, burstPeriodS } from "../../api/static/signals.js";
import { Sounder } from "../../api/static/sound.js";

describe("the live events' parser", () => {
  it("parses events in pieces of any size, skipping pings, with ids and multi-line data", () => {
    const parser = new EventParser();
    const text = ": ping\r\nid: 7\r\nevent: pump_status\r\ndata: {\"id\":\r\ndata: \"pump-1\"}\r\n\r\nevent: x\ndata: 1\n\n";
    const events = [];
    for (const ch of text) events.push(...parser.push(ch));
    assert.deepEqual(events, [
      { type: "pump_status", id: "7", data: "{\"id\":\n\"pump-1\"}" },
      { type: "x", id: null, data: "1" },
    ]);
  });
});

class FakeParam {
  setValueAtTime() {}
  linearRampToValueAtTime() {}
  cancelScheduledValues() {}
}

class FakeContext {
  constructor() {
    this.currentTime = 0;
    this.state = "running";
    this.destination = {};
    this.starts = [];
    this.stops = [];
  }
  resume() { return Promise.resolve(); }
  createGain() { return { gain: new FakeParam(), connect() {}, disconnect() {} }; }
  createPeriodicWave() { return {}; }
  createOscillator() {
    const ctx = this;
    const id = ctx.starts.length;
    return {
      frequency: {},
      setPeriodicWave() {},
      connect() {},
      start(at) { ctx.starts.push({ id, at }); },
      stop(at) { ctx.stops.push({ id, at, called: ctx.currentTime }); },
    };
  }
}

describe("the Web Audio driver", () => {
  it("plays the high burst, repeats it at its period, and hushes it at once", () => {
    const ctx = new FakeContext();
    const sounder = new Sounder(() => ctx);
    assert.equal(sounder.state, "locked");
    sounder.unlock();
    assert.equal(sounder.state, "on");
    sounder.update("high");
    const first = ctx.starts.map((s) => s.at);
    const expected = burst("high").map((p) => p.at);
    assert.equal(first.length, 10);
    first.forEach((at, i) => assert.ok(Math.abs(at - first[0] - expected[i]) < 1e-9));
    for (let t = 0.25; t < burstPeriodS("high") - 0.1; t += 0.25) {
      ctx.currentTime = t;
      sounder.update("high");
    }
    assert.equal(ctx.starts.length, 10, "no second burst before its period");
    ctx.currentTime = burstPeriodS("high");
    sounder.update("high");
    assert.equal(ctx.starts.length, 20);
    assert.ok(Math.abs(ctx.starts[10].at - first[0] - burstPeriodS("high")) < 1e-9);
    ctx.currentTime += 0.3; // mid-burst: an acknowledgement
    sounder.update(null);
    const hushed = ctx.stops.filter((s) => s.called === ctx.currentTime);
    assert.ok(hushed.length >= 8, hushed.length);
    assert.ok(hushed.every((s) => s.at === ctx.currentTime));
    ctx.currentTime += 30;
    sounder.update(null);
    assert.equal(ctx.starts.length, 20, "nothing after the hush");
  });

  it("says when the browser has no Web Audio", () => {
    const sounder = new Sounder(() => null);
    sounder.unlock();
    assert.equal(sounder.state, "unavailable");
    sounder.update("high");
  });
});

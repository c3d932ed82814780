// The page's pure rules module (docs/clinical-rules.md, interfaces.md section 4): the tile's
// words, and the alarms a pump shows with their priority and acknowledgement (A8).

import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { pumpAlarms, reportedRate, stateLine, tileState, tileTime } from "../../api/static/rules.js";
import { countdown, duration } from "../../api/static/format.js";

const PUMP_KINDS = ["occlusion", "air_in_line", "door_open", "empty", "low_battery", "malfunction", "comm_timeout"];
const pump = { id: "pump-3", connected: true, state: "running", rate_ml_h: 150, alarms: [], alarm_priority: {} };
const infusion = {
  id: 7, state: "running", state_reason: null, stop_unconfirmed: false, link_lost: false,
  next_escalation_at: "2026-01-05T09:30:00+00:00", time_left_min: 200, alarms: [],
};
const NOW = Date.parse("2026-01-05T09:00:00+00:00");

describe("a tile's words", () => {
  it("says the state in a word or two, a stop not confirmed (A3) and a lost link (A2) first", () => {
    assert.equal(tileState(pump, infusion), "Running");
    assert.equal(tileState(pump, { ...infusion, state: "paused", state_reason: { rule: "A1" } }), "Paused A1");
    assert.equal(tileState(pump, { ...infusion, stop_unconfirmed: true, link_lost: true }), "Not stopped (A3)");
    assert.equal(tileState(pump, { ...infusion, link_lost: true }), "Link lost (A2)");
    assert.equal(tileState({ ...pump, connected: false }, null), "Link lost");
    assert.equal(tileState(pump, null), "No infusion");
  });

  it("gives the rate the pump reports, never the infusion's", () => {
    assert.equal(reportedRate(pump), "150 ml/h");
    assert.equal(reportedRate({ ...pump, state: "stopped" }), "0 ml/h");
    assert.equal(reportedRate({ ...pump, connected: false }), "rate unknown");
  });

  it("gives the time to the next step, else the time left, from the service's clock", () => {
    assert.equal(tileTime(infusion, NOW), "Next step in 30 min");
    assert.equal(tileTime({ ...infusion, next_escalation_at: null }, NOW), "Time left 3 h 20 min");
    assert.equal(tileTime({ ...infusion, next_escalation_at: null, time_left_min: null, state: "paused" }, NOW), "Steps suspended");
    assert.equal(tileTime({ ...infusion, state: "completed" }, NOW), "");
    assert.equal(stateLine({ state: "paused", state_reason: { rule: "A1", message: "pump alarm: occlusion" } }), "Paused (A1): pump alarm: occlusion");
    assert.equal(duration(61), "1 h 01 min");
    assert.equal(countdown(119001), "2:00");
    assert.equal(countdown(10000), "0:10");
  });
});

describe("A8 the alarms a pump shows", () => {
  it("lists the infusion's alarms with their priority and acknowledgement, soundable", () => {
    const served = {
      ...infusion,
      alarms: [
        { kind: "pump_not_stopped", rule: "A3", priority: "high", message: "pump did not stop: clamp the line", raised_at: "2026-01-05T08:59:00+00:00", acknowledged_by: "nina", acknowledged_at: "2026-01-05T09:00:00+00:00" },
        { kind: "occlusion", rule: "A1", priority: "medium", message: "pump alarm: occlusion", raised_at: "2026-01-05T08:58:00+00:00", acknowledged_by: null, acknowledged_at: null },
      ],
    };
    const shown = pumpAlarms({ ...pump, alarms: ["occlusion"], alarm_priority: { occlusion: "medium" } }, served, PUMP_KINDS);
    assert.deepEqual(shown.map((a) => [a.kind, a.priority, a.text, a.acknowledgedBy, a.soundable]), [
      ["pump_not_stopped", "high", "A3: pump did not stop: clamp the line", "nina", true],
      ["occlusion", "medium", "Pump alarm: Occlusion (A1)", null, true],
    ]);
    assert.equal(shown[0].key, "7:pump_not_stopped:2026-01-05T08:59:00+00:00");
  });

  it("shows a pump's own alarm with no infusion, with its priority, not soundable", () => {
    const shown = pumpAlarms({ ...pump, alarms: ["door_open"], alarm_priority: { door_open: "medium" } }, null, PUMP_KINDS);
    assert.deepEqual(shown.map((a) => [a.kind, a.priority, a.soundable, a.infusionId]), [["door_open", "medium", false, null]]);
    const unknown = pumpAlarms({ ...pump, alarms: ["gremlins"] }, null, PUMP_KINDS);
    assert.equal(unknown[0].priority, "high");
  });
});

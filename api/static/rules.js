// What the page must know of the rules to show a pump and offer its actions (docs/
// clinical-rules.md; interfaces.md section 4). Pure: an infusion and a pump as the API serves
// them in, words and yes/no out; no DOM, no clock of its own.

import { duration, minutesUntil, rate, words } from "./format.js";

export const STATE_WORDS = {
  planned: "Planned, not started",
  starting: "Starting",
  running: "Running",
  paused: "Paused",
  stopped_observation: "Stopped: observation after a grade 3 or higher reaction (I5)",
  completed: "Completed",
  withdrawn: "Withdrawn",
  stopped: "Stopped for good",
  cancelled: "Cancelled",
};

// The state in a word or two, for a tile of the room.
const STATE_SHORT = {
  planned: "Planned",
  starting: "Starting",
  running: "Running",
  paused: "Paused",
  stopped_observation: "Observation (I5)",
  completed: "Completed",
  withdrawn: "Withdrawn",
  stopped: "Stopped",
  cancelled: "Cancelled",
};

export const LIVE_STATES = new Set(["planned", "starting", "running", "paused", "stopped_observation"]);

// The reasons (state_reason.rule) of a pause for a reaction (I2, I4), which is reassessed and
// resolved; any other pause (a pump alarm A1, the bag's expiry L9, an alarm only a clinician
// clears L2, L3, A3, a stop found on a restart A4) is the pump's, and a reaction may still be
// reported during it.
const REACTION_PAUSES = new Set(["I2", "I4"]);

// Whenever the pump stands stopped under a live infusion: every pause (a reaction I2, I4, a
// pump alarm A1, the bag's expiry L9, an alarm only a clinician clears L2, L3, A3, an
// unexplained stop after a restart A4, a pump that stopped by itself A1), the I5 window, and
// a running infusion whose pump reads 0 ml/h (a lost link, A2, keeps "running"): the preview
// says whether the rules allow a resume now.
export function resumable(infusion) {
  if (infusion.state === "paused" || infusion.state === "stopped_observation") return true;
  return infusion.state === "running" && infusion.rate_ml_h === 0;
}

// A pause for a reaction (I2, I4: reassessed, resolved, resumed), as against a pause for the
// pump's own reasons, during which a reaction may still be reported.
export function reactionPause(infusion) {
  if (infusion.state !== "paused") return false;
  return Boolean(infusion.reaction) || REACTION_PAUSES.has(infusion.state_reason?.rule);
}

// The State line: the state in words and, whenever the service says why, the rule's id and its
// words ("Paused (A1): pump alarm: occlusion"); a rule the words already name is not repeated.
export function stateLine(infusion) {
  const name = STATE_WORDS[infusion.state] || words(infusion.state);
  const reason = infusion.state_reason;
  if (!reason?.rule) return name;
  const named = name.endsWith(`(${reason.rule})`) ? name : `${name} (${reason.rule})`;
  return reason.message ? `${named}: ${reason.message}` : named;
}

// L9: a bag is changed only before the start or while the pump is stopped; the bag's expiry
// stops the pump itself (the infusion is "paused" with reason L9, its pump at 0 ml/h, until a
// new bag)
export function bagChangeable(infusion) {
  if (infusion.state === "planned") return true;
  return ["running", "paused", "stopped_observation"].includes(infusion.state) && infusion.rate_ml_h === 0;
}

// What was given before the pump's counter was last reset (an earlier bag, L9, or a power
// reset): the pump is then programmed with the volume still to give
export function earlierBags(infusion) {
  return Math.max(0, (infusion.volume_infused_ml ?? 0) - (infusion.bag_infused_ml ?? 0));
}

// An alarm whose cause still stands, which the rules would refuse to clear (A2, A3): no
// "Clear alarm" is offered for it until then.
export function standing(kind, infusion) {
  if (kind === "comm_loss") return Boolean(infusion.link_lost); // A2
  if (kind === "pump_not_stopped") return Boolean(infusion.stop_pending || infusion.stop_unconfirmed); // A3
  return false;
}

// A tile's state in a word or two: a stop not confirmed (A3) and a lost link (A2) first.
export function tileState(pump, infusion) {
  if (infusion?.stop_unconfirmed) return "Not stopped (A3)";
  if (!infusion || !LIVE_STATES.has(infusion.state)) {
    if (!pump.connected) return "Link lost";
    if (!infusion) return "No infusion";
  }
  if (infusion.link_lost) return "Link lost (A2)";
  const short = STATE_SHORT[infusion.state] || words(infusion.state);
  const rule = infusion.state === "paused" ? infusion.state_reason?.rule : null;
  return rule ? `${short} ${rule}` : short;
}

// The rate the pump itself last reported (never what the infusion's state suggests, A3).
export function reportedRate(pump) {
  if (!pump.connected) return "rate unknown";
  return pump.state === "running" ? rate(pump.rate_ml_h) : "0 ml/h";
}

// A tile's time: to the next step while one is due, else the time left, else why neither.
export function tileTime(infusion, nowMs) {
  if (!infusion || !LIVE_STATES.has(infusion.state)) return "";
  if (infusion.next_escalation_at) return `Next step in ${duration(minutesUntil(infusion.next_escalation_at, nowMs))}`;
  if (infusion.time_left_min !== null && infusion.time_left_min !== undefined) {
    return `Time left ${duration(infusion.time_left_min)}`;
  }
  if (infusion.state === "planned") return "Not started";
  return "Steps suspended";
}

// Every alarm shown for a pump: its infusion's, each served with its rule, priority and
// acknowledgement (A8), then the pump's own alarms the infusion does not list (a pump holding
// no infusion: shown with their priority, not sounded, nothing to acknowledge them on).
// `pumpKinds`: the pump alarms' names (interfaces.md section 2), worded as the pump's.
export function pumpAlarms(pump, infusion, pumpKinds) {
  const out = [];
  const listed = new Set();
  const own = new Set(pumpKinds);
  for (const alarm of infusion?.alarms || []) {
    listed.add(alarm.kind);
    const text = own.has(alarm.kind)
      ? `Pump alarm: ${words(alarm.kind)} (${alarm.rule || "A1"})`
      : `${alarm.rule ? `${alarm.rule}: ` : ""}${alarm.message || words(alarm.kind)}`;
    out.push({
      key: `${infusion.id}:${alarm.kind}:${alarm.raised_at}`,
      kind: alarm.kind,
      rule: alarm.rule,
      priority: alarm.priority,
      text,
      raisedAt: alarm.raised_at,
      acknowledgedBy: alarm.acknowledged_by,
      acknowledgedAt: alarm.acknowledged_at,
      infusionId: infusion.id,
      soundable: true,
    });
  }
  for (const kind of pump.alarms || []) {
    if (listed.has(kind)) continue;
    out.push({
      key: `${pump.id}:${kind}`,
      kind,
      rule: "A1",
      priority: pump.alarm_priority?.[kind] || "high",
      text: `Pump alarm: ${words(kind)} (A1)`,
      raisedAt: null,
      acknowledgedBy: null,
      acknowledgedAt: null,
      infusionId: null,
      soundable: false,
    });
  }
  return out;
}

// Alarm signals (docs/clinical-rules.md, A8; IEC 60601-1-8): the priorities and their order,
// the order of the room's tiles, the flash rates, the pulse bursts, the silence and what sounds
// now. Pure: no DOM, no audio, no clock of its own (every time is passed in), so `node --test`
// holds each figure to the standard's band.

export const PRIORITIES = Object.freeze(["high", "medium", "low"]);

// An icon and words beside every colour (never colour alone).
export const ICONS = Object.freeze({ high: "!!!", medium: "!!", low: "!" });
export const NAMES = Object.freeze({ high: "High", medium: "Medium", low: "Low" });

// A priority the page does not know is taken as high: the safe side.
export function known(priority) {
  return PRIORITIES.includes(priority) ? priority : "high";
}

export function rank(priority) {
  return PRIORITIES.indexOf(known(priority));
}

// The highest of some priorities (null for none).
export function highest(priorities) {
  let best = null;
  for (const p of priorities) if (best === null || rank(p) < rank(best)) best = known(p);
  return best;
}

// ------------------------------------------------------------------ visual signals

// IEC 60601-1-8 (table 2): high flashes at 1.4 to 2.8 Hz, medium at 0.4 to 0.8 Hz, each 20 to
// 60 % of the period on; low is steady.
export const FLASH = Object.freeze({
  high: Object.freeze({ hz: 2, duty: 0.5 }),
  medium: Object.freeze({ hz: 0.6, duty: 0.5 }),
  low: null,
});

// Seconds of one flash period (null: steady).
export function flashPeriodS(priority) {
  const flash = FLASH[known(priority)];
  return flash ? 1 / flash.hz : null;
}

// ------------------------------------------------------------------ audible signals

// IEC 60601-1-8 (table 4). High: a burst of 10 pulses, 3 + 2, a pause, 3 + 2; pulses of 75 to
// 200 ms, x = 50 to 125 ms apart, 2x + the pulse between the third and the fourth, 0.35 to
// 1.30 s between the fifth and the sixth; repeated 2.5 to 15 s after the burst's last pulse.
// Medium: 3 pulses of 125 to 250 ms, 125 to 250 ms apart, repeated 2.5 to 30 s after. Low: no
// sound here (the standard lets it be silent). Rise 10 to 20 % of a pulse.
export const PULSES = Object.freeze({
  high: Object.freeze({ count: 10, pulseS: 0.15, spacingS: 0.1, halvesS: 0.7, repeatS: 4, toneHz: 880 }),
  medium: Object.freeze({ count: 3, pulseS: 0.2, spacingS: 0.2, halvesS: null, repeatS: 8, toneHz: 660 }),
});
export const RISE = 0.15; // of a pulse
export const FALL = 0.1; // of a pulse

// The pulses of one burst of `priority`: [{at, duration}] in seconds from the burst's start.
export function burst(priority) {
  const p = PULSES[known(priority)];
  if (!p) return [];
  const gaps = p.count === 10
    ? [1, 1, "long", 1, "halves", 1, 1, "long", 1]
    : Array(p.count - 1).fill(1);
  const pulses = [];
  let at = 0;
  for (let i = 0; i < p.count; i += 1) {
    pulses.push({ at, duration: p.pulseS });
    const gap = gaps[i];
    if (gap === undefined) break;
    const space = gap === "long" ? 2 * p.spacingS + p.pulseS : gap === "halves" ? p.halvesS : p.spacingS;
    at += p.pulseS + space;
  }
  return pulses;
}

// Seconds from one burst's start to the next: the burst, then its repeat interval.
export function burstPeriodS(priority) {
  const p = PULSES[known(priority)];
  if (!p) return null;
  const pulses = burst(priority);
  const last = pulses[pulses.length - 1];
  return last.at + last.duration + p.repeatS;
}

// ------------------------------------------------------------------ silence

// "Silence 2 min": every sound of the page paused for two minutes of the page's clock.
export const SILENCE_MS = 120000;

export function silenceFrom(nowMs) {
  return { since: nowMs, until: nowMs + SILENCE_MS };
}

export function silenceLeftMs(silence, nowMs) {
  return silence ? Math.max(0, silence.until - nowMs) : 0;
}

// The priority to sound now (null: none). Alarms: [{priority, acknowledged, soundable, seenAt}],
// `seenAt` when this page first saw the alarm, on the same clock as the silence. An alarm
// sounds while it is active (listed), soundable and not acknowledged (A8), at high or medium
// priority; during a silence only a high-priority alarm first seen after the silence began
// sounds (through it).
export function audible(alarms, silence, nowMs) {
  const silenced = silenceLeftMs(silence, nowMs) > 0;
  const sounding = [];
  for (const alarm of alarms) {
    const priority = known(alarm.priority);
    if (!alarm.soundable || alarm.acknowledged || !PULSES[priority]) continue;
    if (silenced && !(priority === "high" && alarm.seenAt > silence.since)) continue;
    sounding.push(priority);
  }
  return highest(sounding);
}

// ------------------------------------------------------------------ the room's order

// Pump ids in their own order, numbers as numbers: pump-2 before pump-10.
export function byPumpId(a, b) {
  return a.localeCompare(b, "en", { numeric: true });
}

// The most urgent of a pump's alarms: the highest priority, of it the oldest (`since`, ms).
export function mostUrgent(alarms) {
  let top = null;
  for (const alarm of alarms) {
    const r = rank(alarm.priority);
    if (top === null || r < rank(top.priority) || (r === rank(top.priority) && alarm.since < top.since)) {
      top = { priority: known(alarm.priority), since: alarm.since };
    }
  }
  return top;
}

// The room's tiles: [{id, alarms: [{priority, since}]}] -> ids, the pumps with an active alarm
// first, by priority then oldest first, the others in the pumps' own order (stable).
export function orderTiles(entries) {
  const keyed = entries.map((entry) => ({ id: entry.id, top: mostUrgent(entry.alarms) }));
  keyed.sort((a, b) => {
    if (a.top && b.top) {
      const by = rank(a.top.priority) - rank(b.top.priority) || a.top.since - b.top.since;
      if (by) return by;
    } else if (a.top || b.top) {
      return a.top ? -1 : 1;
    }
    return byPumpId(a.id, b.id);
  });
  return keyed.map((entry) => entry.id);
}

// Active alarms counted by priority, every priority named (for the banner).
export function counts(alarms) {
  const out = { high: 0, medium: 0, low: 0 };
  for (const alarm of alarms) out[known(alarm.priority)] += 1;
  return out;
}

// The chart of one infusion (inline SVG): the planned ladder, the rates the pump confirmed,
// each reaction marked, the now line (interfaces.md, section 4).

import { h, s } from "./dom.js";
import { clockTime, duration } from "./format.js";
import { LIVE_STATES } from "./rules.js";

export function drawChart(infusion, nowMs, reactionMarks) {
  const W = 640, H = 190, L = 48, R = 12, T = 22, B = 30;
  const steps = infusion.planned_steps;
  const history = infusion.rate_history || [];
  const started = infusion.started_at ? Date.parse(infusion.started_at) : history.length ? Date.parse(history[0].at) : null;
  const toMin = (iso) => (started === null ? 0 : (Date.parse(iso) - started) / 60000);
  const nowMin = started === null || nowMs === null ? 0 : (nowMs - started) / 60000;

  // the planned ladder until the bag is given
  let left = infusion.bag_ml;
  let plannedEnd = steps[steps.length - 1].at_min + 60;
  for (let i = 0; i < steps.length; i += 1) {
    const span = i + 1 < steps.length ? steps[i + 1].at_min - steps[i].at_min : Infinity;
    const given = (steps[i].rate_ml_h * span) / 60;
    if (given >= left) {
      plannedEnd = steps[i].at_min + (left / steps[i].rate_ml_h) * 60;
      break;
    }
    left -= given;
  }
  const ended = !LIVE_STATES.has(infusion.state);
  const lastMin = history.length ? toMin(history[history.length - 1].at) : 0;
  const xMax = Math.max(plannedEnd, ended ? lastMin : nowMin, 60) * 1.03;
  const top = Math.max(...steps.map((st) => st.rate_ml_h), ...history.map((p) => p.rate_ml_h), 50);
  const yMax = Math.ceil((top * 1.1) / 50) * 50;
  const x = (m) => L + (Math.max(0, m) / xMax) * (W - L - R);
  const y = (r) => T + (1 - r / yMax) * (H - T - B);

  const planned = [];
  steps.forEach((st, i) => {
    const end = i + 1 < steps.length ? Math.min(steps[i + 1].at_min, plannedEnd) : plannedEnd;
    if (st.at_min > plannedEnd) return;
    planned.push(`${x(st.at_min)},${y(st.rate_ml_h)}`, `${x(end)},${y(st.rate_ml_h)}`);
  });
  const confirmed = [];
  history.forEach((p, i) => {
    const end = i + 1 < history.length ? toMin(history[i + 1].at) : ended ? toMin(p.at) : nowMin;
    confirmed.push(`${x(toMin(p.at))},${y(p.rate_ml_h)}`, `${x(end)},${y(p.rate_ml_h)}`);
  });

  const grid = [];
  for (let r = 0; r <= yMax; r += 50) {
    grid.push(s("line", { x1: L, x2: W - R, y1: y(r), y2: y(r), class: "grid" }));
    grid.push(s("text", { x: L - 6, y: y(r) + 4, class: "tick", "text-anchor": "end" }, `${r}`));
  }
  const every = xMax > 600 ? 120 : 60;
  for (let m = 0; m <= xMax; m += every) {
    grid.push(s("text", { x: x(m), y: H - 10, class: "tick", "text-anchor": "middle" }, `${m / 60} h`));
  }
  const marks = (reactionMarks || []).map((mark) => {
    const mx = x(toMin(mark.at));
    return s("g", { class: "reaction-mark" },
      s("title", {}, `Reaction grade ${mark.grade} at ${clockTime(mark.at)}`),
      s("line", { x1: mx, x2: mx, y1: T, y2: H - B, class: "reaction-line" }),
      s("path", { d: `M${mx - 7},${T + 12} L${mx + 7},${T + 12} L${mx},${T} Z`, class: "reaction-icon" }));
  });
  const reactionCount = marks.length;
  const label = `Rate over time for infusion ${infusion.infusion_number}: the planned ladder and the rates the pump confirmed; ${reactionCount} reaction${reactionCount === 1 ? "" : "s"} marked${ended ? "" : `; now at ${duration(nowMin)} from the start`}`;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, class: "rate-chart" },
    ...grid,
    s("text", { x: 4, y: 12, class: "tick" }, "ml/h"),
    s("polyline", { points: planned.join(" "), class: "planned" }),
    s("polyline", { points: confirmed.join(" "), class: "confirmed" }),
    ...marks,
    ended ? null : s("g", { class: "now-line" },
      s("line", { x1: x(nowMin), x2: x(nowMin), y1: T, y2: H - B }),
      s("text", { x: x(nowMin) + 3, y: H - B - 4, class: "tick" }, "now")));
  const legend = h("figcaption", { class: "legend" },
    h("span", { class: "key planned" }, "planned ladder"),
    h("span", { class: "key confirmed" }, "confirmed by the pump"),
    h("span", { class: "key reaction" }, "reaction"),
    ended ? null : h("span", { class: "key now" }, "now"));
  return [svg, legend];
}

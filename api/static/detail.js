// A pump's detail (interfaces.md, section 4): one region named by the pump, with the facts,
// the alarms, the chart and the actions the role may take; opened beside the room's tiles (over
// them on a narrow screen) when a tile is chosen, keyboard first.

import {
  acknowledge,
  clearAlarm,
  openBag,
  openCancel,
  openInfusion,
  openReaction,
  openResume,
  openReassess,
  openStart,
  openStop,
  post,
  resolve,
} from "./actions.js";
import { drawChart } from "./chart.js";
import { byId, h } from "./dom.js";
import { clockTime, duration, minutesUntil, ml, rate, words } from "./format.js";
import {
  LIVE_STATES,
  bagChangeable,
  earlierBags,
  pumpAlarms,
  reactionPause,
  resumable,
  standing,
  stateLine,
} from "./rules.js";
import { ICONS, NAMES, known } from "./signals.js";
import { CONFIG, may, notices, session, view } from "./state.js";

// The detail of the chosen pump (view.chosen), or none.
export function renderDetail() {
  const panel = byId("detail");
  const body = byId("detail-body");
  const id = view.chosen;
  if (id === null || !view.pumps.has(id)) {
    if (!panel.hidden) closeDetail(false);
    return;
  }
  let section = body.querySelector("section.pump");
  if (!section || section.dataset.pump !== id) {
    section = buildRegion(id);
    body.replaceChildren(section);
  }
  fillRegion(section, id);
}

// Open a pump's detail; `focus`: move the focus to its heading (a choice by keyboard or click).
export function openDetail(id, focus = true) {
  view.chosen = id;
  byId("detail").hidden = false;
  byId("room").classList.add("with-detail");
  renderDetail();
  if (focus) byId("detail-body").querySelector("h2")?.focus();
}

// Close the detail; the focus goes back to the pump's tile.
export function closeDetail(refocus = true) {
  const id = view.chosen;
  view.chosen = null;
  byId("detail").hidden = true;
  byId("detail-body").replaceChildren();
  byId("room").classList.remove("with-detail");
  if (refocus && id !== null) {
    [...document.querySelectorAll("#overview .tile")].find((el) => el.dataset.pump === id)?.focus();
  }
}

function buildRegion(id) {
  const key = `pump-${id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  return h(
    "section",
    { class: "pump", "aria-labelledby": `${key}-name`, "data-pump": id },
    h("h2", { id: `${key}-name`, text: id, tabindex: "-1" }),
    h("p", { class: "link" }),
    h("div", { class: "notice-slot" }),
    h("dl", { class: "facts" }),
    h("div", { class: "alarms" }),
    h("figure", { class: "chart", "aria-label": "Rate chart" }),
    h("div", { class: "actions" }),
  );
}

function fillRegion(section, id) {
  const pump = view.pumps.get(id);
  const infusion = view.infusions.get(id) || null;
  const live = infusion && LIVE_STATES.has(infusion.state);

  fillLink(section.querySelector(".link"), pump);

  fillNotice(section.querySelector(".notice-slot"), id, infusion);
  section.querySelector(".facts").replaceChildren(...facts(pump, infusion));
  fillAlarms(section.querySelector(".alarms"), pump, infusion);
  const chart = section.querySelector(".chart");
  if (infusion && infusion.planned_steps?.length) {
    chart.hidden = false;
    chart.replaceChildren(...drawChart(infusion, view.now, view.reactionsAt.get(infusion.id)?.marks));
  } else {
    chart.hidden = true;
    chart.replaceChildren();
  }
  fillActions(section.querySelector(".actions"), id, pump, infusion, live);
}

// The age of the pump's last contact as the service reported it, counted on since the report
// arrived (monotonic time, not a clinical one), so that a pump gone quiet is seen ageing.
function contactAge(pump) {
  const age = pump.last_contact_age_s;
  if (age === null || age === undefined) return null;
  return age + (performance.now() - (pump.receivedAt ?? performance.now())) / 1000;
}

export function fillLink(link, pump) {
  const age = contactAge(pump);
  const ageText = age === null ? "no contact yet" : `last contact ${age < 10 ? age.toFixed(1) : Math.round(age)} s ago`;
  const text = pump.connected ? ` Link up, ${ageText}` : ` Link lost (A2): ${ageText}`;
  if (link.dataset.shown === text) return;
  link.dataset.shown = text;
  link.replaceChildren(h("span", { class: "icon", "aria-hidden": "true", text: pump.connected ? "●" : "✖" }), text);
  link.classList.toggle("down", !pump.connected);
}

export function tickLinks() {
  for (const section of document.querySelectorAll("section.pump")) {
    const pump = view.pumps.get(section.dataset.pump);
    if (pump) fillLink(section.querySelector(".link"), pump);
  }
}

function fact(term, ...value) {
  return [h("dt", { text: term }), h("dd", {}, ...value)];
}

function facts(pump, infusion) {
  const out = [];
  if (!infusion) {
    out.push(...fact("Infusion", "None on this pump"));
    out.push(...fact("Pump", `${words(pump.state)}, ${rate(pump.rate_ml_h)}`));
    return out;
  }
  // an ended infusion (completed, withdrawn, stopped for good, cancelled) has no escalation to
  // hold and no bag in use; the same test as fillRegion's
  const live = LIVE_STATES.has(infusion.state);
  const reason = infusion.state_reason;
  out.push(...fact("Patient", `MRN ${infusion.patient_mrn} (patient ${infusion.patient_id})`));
  out.push(...fact("Infusion", `Infusion ${infusion.infusion_number}${infusion.day ? `, day ${infusion.day}` : ""}, row ${infusion.row}`));
  // the reason names the loudest cause; the others the service reports are added after it.
  // A stop whose fate was "unconfirmed" is always said in these words too (A3, the loudest):
  // the reason's A3 also covers a stop still on its way.
  const also = [
    [infusion.stop_unconfirmed, "", "the stop is NOT confirmed (A3)"],
    [infusion.link_lost, "A2", "link lost (A2)"],
    [infusion.held && live, "L7", "escalation held (L7)"],
  ].filter(([on, rule]) => on && rule !== reason?.rule).map(([, , text]) => `; ${text}`);
  out.push(...fact("State", stateLine(infusion), ...also));
  // the pump's own last read-back, never what the infusion's state would suggest (A3)
  let pumpRate = "unknown (link lost)";
  if (pump.connected) {
    pumpRate = pump.state === "running" ? `${rate(pump.rate_ml_h)}, pump running` : `0 ml/h, pump ${pump.state}`;
  }
  const step = infusion.state !== "running" && live && infusion.step_rate_ml_h ? ` (step ${rate(infusion.step_rate_ml_h)})` : "";
  out.push(...fact("Rate", pumpRate, step));
  const earlier = earlierBags(infusion);
  out.push(...fact("Given", earlier > 0.05
    ? `${ml(infusion.volume_infused_ml)} of ${ml(infusion.bag_ml)} in all; ${ml(infusion.bag_infused_ml)} of the ${ml(infusion.bag_ml - earlier)} programmed since the pump's counter was reset (a new bag, L9, or a power reset)`
    : `${ml(infusion.bag_infused_ml)} of ${ml(infusion.bag_ml)} bag`));
  let next = "–";
  if (infusion.next_escalation_at) {
    next = `in ${duration(minutesUntil(infusion.next_escalation_at, view.now))} (at ${clockTime(infusion.next_escalation_at)})`;
  } else if (infusion.held && live) {
    next = "none: escalation held (L7)";
  } else if (infusion.state === "paused") {
    next = `suspended while the infusion is paused${reason?.rule ? ` (${reason.rule})` : ""}`;
  } else if (infusion.state === "running" && (infusion.rate_ml_h === 0 || (infusion.alarms || []).length)) {
    next = "suspended while the pump is stopped or alarmed (A1, A2)";
  } else if (infusion.state === "running") {
    next = "none: at the protocol's highest rate";
  }
  out.push(...fact("Next step", next));
  out.push(...fact("Time left", infusion.time_left_min === null ? "–" : `about ${duration(infusion.time_left_min)}`));
  if (infusion.bag_expires_at && live) {
    const left = minutesUntil(infusion.bag_expires_at, view.now);
    const text = left !== null && left <= 0 ? `expired at ${clockTime(infusion.bag_expires_at)} (L9)` : `at ${clockTime(infusion.bag_expires_at)} (in ${duration(left)})`;
    out.push(...fact("Bag expires", text));
  }
  return out;
}

// A3 in large words while the service says the stop is not confirmed; once the pump has
// confirmed it, the latched alarm stays in the alarm list until a nurse clears it (A1).
function stopNotStopped(infusion) {
  return Boolean(infusion?.stop_unconfirmed);
}

function fillNotice(slot, id, infusion) {
  const shown = notices.get(id);
  if (shown?.kind === "alarm" && infusion && view.loadedFrom > shown.after && !infusion.stop_pending) {
    // the 202's A3 alarm lasts until the service says no stop is pending: the 202 may come
    // before the stop's fate is known, while the stop is still on its way (stop_pending)
    notices.set(id, { kind: "ok", text: "The pump has now confirmed the stop (A3)" });
  }
  let notice = notices.get(id);
  if (notice && notice.kind !== "alarm" && view.loadedFrom > notice.after && infusion?.id !== notice.infusionId) {
    notices.delete(id); // the region shows another infusion now: old news
    notice = undefined;
  }
  const items = [];
  if (stopNotStopped(infusion) || notice?.kind === "alarm") {
    items.push(
      h("p", { class: "notice alarm", role: "alert", tabindex: "-1", "data-key": `${id}:alert` },
        h("span", { class: "icon", "aria-hidden": "true", text: "⚠ " }),
        `A3: ${CONFIG.a3_words}`),
    );
  }
  if (notice && notice.kind !== "alarm") {
    items.push(h("p", { class: `notice ${notice.kind}`, role: notice.kind === "error" ? "alert" : "status", tabindex: "-1", "data-key": `${id}:notice` }, notice.text));
  }
  const same = slot.children.length === items.length && items.every((el, i) => slot.children[i].textContent === el.textContent);
  if (!same) slot.replaceChildren(...items);
}

// The pump's alarms, each with its priority in an icon and words (never colour alone, A8), its
// rule and words, who acknowledged it; "Acknowledge alarm" (A8) while it sounds, "Clear alarm"
// (A1) once its cause is gone.
function fillAlarms(box, pump, infusion) {
  const rows = pumpAlarms(pump, infusion, CONFIG.pump_alarms);
  const key = JSON.stringify([rows, session.role, infusion?.stop_pending, infusion?.stop_unconfirmed, infusion?.link_lost]);
  if (box.dataset.shown === key) return;
  box.dataset.shown = key;
  if (!rows.length) {
    box.replaceChildren();
    return;
  }
  const clinicianOnly = new Set(CONFIG.clinician_only_alarms);
  const list = h("ul", { class: "alarm-list", "aria-label": "Alarms" });
  for (const row of rows) {
    const priority = known(row.priority);
    // A1: a New Era pump cannot say when the cause is gone; the nurse's clear says it (the
    // service refuses it for a pump that still reports the alarm and could say so)
    const clearable = infusion && (may("clinician") || (may("nurse") && !clinicianOnly.has(row.kind)))
      && !standing(row.kind, infusion);
    const acknowledgeable = row.soundable && !row.acknowledgedBy && may("nurse");
    list.append(
      h("li", { class: `alarm prio-${priority}`, "data-kind": row.kind },
        h("span", { class: `alarm-mark flash prio-${priority}` },
          h("span", { class: "icon", "aria-hidden": "true", text: `${ICONS[priority]} ` }),
          `${NAMES[priority]} priority`),
        h("span", { class: "alarm-text", text: `Alarm: ${row.text}` }),
        row.acknowledgedBy
          ? h("span", { class: "acked" },
            h("span", { class: "icon", "aria-hidden": "true", text: "✓ " }),
            `Acknowledged by ${row.acknowledgedBy} at ${clockTime(row.acknowledgedAt)} (A8): its sound is off`)
          : null,
        !row.soundable && !infusion
          ? h("span", { class: "acked", text: "No infusion on this pump: shown, not sounded (A8)" })
          : null,
        acknowledgeable || clearable
          ? h("span", { class: "alarm-actions" },
            acknowledgeable ? h("button", { type: "button", "data-key": `${pump.id}:ack:${row.kind}`, onclick: () => acknowledge(pump.id, row.infusionId, row.kind) }, "Acknowledge alarm") : null,
            clearable ? h("button", { type: "button", "data-key": `${pump.id}:clear:${row.kind}`, onclick: () => clearAlarm(pump.id, infusion.id, row.kind) }, "Clear alarm") : null)
          : null),
    );
  }
  box.replaceChildren(list);
}

function fillActions(bar, id, pump, infusion, live) {
  const actions = [];
  const state = infusion?.state;
  if (may("nurse") && infusion) {
    // I11: a delayed reaction after completion is reported too (it moves no pump); during a
    // pause that is not a reaction's (a pump alarm A1, the bag's expiry L9, ...) as while running
    const reportable = ["running", "starting", "completed"].includes(state) || (state === "paused" && !reactionPause(infusion));
    if (reportable) actions.push(["Report reaction", () => openReaction(id), "danger"]);
    // a stop not confirmed (A3) has no resume: the line is clamped first
    if (resumable(infusion) && !infusion.stop_unconfirmed) actions.push(["Resume", () => openResume(id)]);
    if (infusion.reaction) {
      actions.push(["Reassess", () => openReassess(id)]);
      actions.push(["Symptoms resolved", () => resolve(id)]);
    }
  }
  if (may("clinician") && infusion && (state === "running" || state === "paused")) {
    actions.push(infusion.held ? ["Release hold", () => post(id, `/infusions/${infusion.id}/release`, undefined, "Hold released (L7)")] : ["Hold escalation", () => post(id, `/infusions/${infusion.id}/hold`, undefined, "Escalation held (L7)")]);
  }
  if (may("nurse") && infusion && bagChangeable(infusion)) {
    actions.push(["New bag", () => openBag(id)]);
  }
  if (may("clinician") && state === "planned") {
    actions.push(["Start", () => openStart(id)]);
    actions.push(["Cancel infusion", () => openCancel(id)]);
  }
  if (may("nurse") && infusion && live && state !== "planned") actions.push(["Stop infusion", () => openStop(id)]);
  if (may("clinician") && !live) actions.push(["New infusion", () => openInfusion(id)]);

  const signature = JSON.stringify(actions.map((a) => a[0]));
  if (bar.dataset.shown === signature) return;
  bar.dataset.shown = signature;
  bar.replaceChildren(
    ...actions.map(([label, act, kind]) =>
      h("button", { type: "button", class: kind || null, "data-key": `${id}:${label}`, onclick: act }, label),
    ),
  );
}


// The room at a glance (interfaces.md, section 4): one compact tile per pump, the pumps with an
// active alarm first (by priority, then oldest), and the banner counting active alarms by
// priority with a link to each (docs/clinical-rules.md, A8).

import { openDetail } from "./detail.js";
import { byId, h } from "./dom.js";
import { pumpAlarms, reportedRate, tileState, tileTime } from "./rules.js";
import { ICONS, NAMES, PRIORITIES, counts, known, mostUrgent, orderTiles } from "./signals.js";
import { CONFIG, view } from "./state.js";

// Every pump's alarms now (pump id -> [alarm]), each with `since` (clinical ms: when it was
// raised, else when this page first saw it) and `seenAt` (this page's clock, when it first saw
// it: a high-priority alarm seen after a silence began sounds through it).
export function roomAlarms() {
  const byPump = new Map();
  const now = performance.now();
  const present = new Set();
  for (const [id, pump] of view.pumps) {
    const alarms = pumpAlarms(pump, view.infusions.get(id) || null, CONFIG.pump_alarms).map((alarm) => {
      present.add(alarm.key);
      let seen = view.seen.get(alarm.key);
      if (!seen) {
        seen = { at: now, clinical: view.now ?? 0 };
        view.seen.set(alarm.key, seen);
      }
      const since = alarm.raisedAt ? Date.parse(alarm.raisedAt) : seen.clinical;
      return { ...alarm, pumpId: id, since, seenAt: seen.at, acknowledged: Boolean(alarm.acknowledgedBy) };
    });
    byPump.set(id, alarms);
  }
  for (const key of [...view.seen.keys()]) if (!present.has(key)) view.seen.delete(key);
  return byPump;
}

export function renderOverview(alarmsByPump) {
  const list = byId("overview");
  const entries = [...view.pumps.keys()].map((id) => ({ id, alarms: alarmsByPump.get(id) || [] }));
  const order = orderTiles(entries);
  const tiles = new Map([...list.children].map((item) => [item.dataset.pump, item]));
  for (const [id, item] of tiles) if (!view.pumps.has(id)) item.remove();
  order.forEach((id, index) => {
    const item = tiles.get(id) || buildTile(id);
    if (list.children[index] !== item) list.insertBefore(item, list.children[index] || null);
    fillTile(item, id, alarmsByPump.get(id) || []);
  });
  renderBanner(alarmsByPump, order);
}

function buildTile(id) {
  const open = () => openDetail(id);
  return h("li", { class: "tile-item", "data-pump": id },
    h("button", { type: "button", class: "tile", "data-pump": id, "data-key": `tile:${id}`, "aria-controls": "detail", onclick: open },
      h("span", { class: "tile-head" },
        h("span", { class: "tile-pump", text: id }),
        h("span", { class: "tile-patient" })),
      h("span", { class: "tile-state" }),
      h("span", { class: "tile-rate" }),
      h("span", { class: "tile-time" }),
      h("span", { class: "tile-band flash" },
        h("span", { class: "icon", "aria-hidden": "true" }),
        h("span", { class: "tile-alarm" }))));
}

function fillTile(item, id, alarms) {
  const pump = view.pumps.get(id);
  const infusion = view.infusions.get(id) || null;
  const tile = item.firstElementChild;
  const top = mostUrgent(alarms);
  const priority = top ? top.priority : "none";
  const lead = top ? alarms.find((a) => known(a.priority) === top.priority && a.since === top.since) : null;
  const quiet = alarms.length > 0 && alarms.every((a) => a.acknowledged || !a.soundable);
  const more = alarms.length > 1 ? ` (+${alarms.length - 1} more)` : "";
  const patient = infusion && infusion.patient_mrn ? `${infusion.patient_mrn}` : "no patient";
  const alarmText = lead
    ? `${NAMES[priority]} priority alarm: ${lead.text}${more}${quiet ? "; acknowledged, sound off" : ""}`
    : "No alarm";
  const shown = JSON.stringify([priority, patient, tileState(pump, infusion), reportedRate(pump), tileTime(infusion, view.now), alarmText, view.chosen === id]);
  if (tile.dataset.shown === shown) return;
  tile.dataset.shown = shown;
  tile.className = `tile prio-${priority}${view.chosen === id ? " chosen" : ""}`;
  tile.setAttribute("aria-expanded", String(view.chosen === id));
  tile.querySelector(".tile-patient").textContent = patient;
  tile.querySelector(".tile-state").textContent = tileState(pump, infusion);
  tile.querySelector(".tile-rate").textContent = reportedRate(pump);
  tile.querySelector(".tile-time").textContent = tileTime(infusion, view.now);
  tile.querySelector(".tile-band .icon").textContent = top ? `${ICONS[priority]} ` : "✓ ";
  tile.querySelector(".tile-alarm").textContent = alarmText;
  tile.querySelector(".tile-band").classList.toggle("acked", quiet);
}

function renderBanner(alarmsByPump, order) {
  const banner = byId("alarm-banner");
  const all = order.flatMap((id) => alarmsByPump.get(id) || []);
  const n = counts(all);
  const text = all.length
    ? `Active alarms: ${PRIORITIES.map((p) => `${n[p]} ${p}`).join(", ")}`
    : "No active alarms";
  const links = all.map((alarm) => {
    const priority = known(alarm.priority);
    return [priority, alarm.pumpId, `${NAMES[priority]}: ${alarm.pumpId}: ${alarm.text}${alarm.acknowledged ? " (acknowledged)" : ""}`];
  });
  const shown = JSON.stringify([text, links]);
  if (banner.dataset.shown === shown) return;
  banner.dataset.shown = shown;
  const summary = byId("alarm-counts");
  summary.replaceChildren(
    ...(all.length
      ? [
        h("span", { text: "Active alarms: " }),
        ...PRIORITIES.map((p, i) => h("span", { class: `count prio-${p}${n[p] ? " some" : ""}` },
          h("span", { class: "icon", "aria-hidden": "true", text: `${ICONS[p]} ` }),
          `${n[p]} ${p}${i < PRIORITIES.length - 1 ? ", " : ""}`)),
      ]
      : [h("span", { class: "icon", "aria-hidden": "true", text: "✓ " }), text]),
  );
  byId("alarm-links").replaceChildren(
    ...links.map(([priority, pumpId, words]) => h("li", {},
      h("a", {
        href: `#${encodeURIComponent(pumpId)}`,
        class: `alarm-link prio-${priority}`,
        onclick: (event) => {
          event.preventDefault();
          openDetail(pumpId);
        },
      },
      h("span", { class: "alarm-mark flash" },
        h("span", { class: "icon", "aria-hidden": "true", text: ICONS[priority] })),
      ` ${words}`))),
  );
}

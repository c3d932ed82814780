// The live events (GET /api/v1/events, Server-Sent Events) read with fetch() so that the token
// travels in its header (EventSource cannot send it); resumed with Last-Event-ID after a drop,
// given up after 2.4 of the service's pings of silence and opened again.

import { byId } from "./dom.js";
import { EventParser } from "./sse.js";
import { CONFIG, hooks, may, notices, session, view } from "./state.js";

const STALE_AFTER_S = 10;
// The service pings the live events every few seconds; a stream silent for over two pings (or
// a connection attempt that long unanswered) is taken as lost and opened again, for a network
// that drops packets without closing anything would otherwise leave the page saying "Live".
const SILENT_AFTER_MS = CONFIG.events_ping_s * 2.4 * 1000;

let stream = null; // AbortController of the live events
let lastEventId = null;
let soon = null;

export function stopListening() {
  if (stream) stream.abort();
  stream = null;
  lastEventId = null;
}

export async function listen() {
  if (stream) stream.abort();
  const controller = new AbortController();
  stream = controller;
  let wait = 1000;
  let opened = 0;
  while (stream === controller && session.token) {
    const attempt = new AbortController();
    const abortAttempt = () => attempt.abort();
    controller.signal.addEventListener("abort", abortAttempt);
    view.attempt = attempt;
    view.heardAt = performance.now();
    try {
      const headers = { Authorization: `Bearer ${session.token}`, Accept: "text/event-stream" };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      const response = await fetch(`${CONFIG.api}/events`, { headers, signal: attempt.signal });
      if (response.status === 401) {
        hooks.signOut("The service did not accept the token: sign in again.");
        return;
      }
      if (!response.ok || !response.body) throw new Error(`live events answered ${response.status}`);
      view.heardAt = performance.now();
      setConnected(true);
      wait = 1000;
      opened += 1;
      // After a drop, read the whole state again: the replay carries the audit events after
      // Last-Event-ID, not the pumps' statuses, and a drop before the first event has no id.
      if (opened > 1) hooks.refresh();
      await readEvents(response.body);
      throw new Error("the service closed the live events");
    } catch {
      if (controller.signal.aborted) return;
      setConnected(false);
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, 5000);
    } finally {
      controller.signal.removeEventListener("abort", abortAttempt);
      if (view.attempt === attempt) view.attempt = null;
    }
  }
}

// A connection that has said nothing for SILENT_AFTER_MS is dropped, and listen() opens another.
export function watchStream() {
  if (view.attempt && performance.now() - view.heardAt > SILENT_AFTER_MS) view.attempt.abort();
}

async function readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new EventParser();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    view.heardAt = performance.now();
    view.receivedAt = performance.now();
    for (const event of parser.push(value)) dispatch(event);
  }
}

function dispatch(event) {
  if (event.id) lastEventId = event.id;
  let data;
  try {
    data = JSON.parse(event.data);
  } catch {
    return;
  }
  if (event.type === "store_status") {
    showStore(data);
    return;
  }
  if (event.type === "pump_status") {
    const before = view.pumps.get(data.id);
    view.pumps.set(data.id, { ...data, receivedAt: performance.now() });
    const alarmsChanged = JSON.stringify(before?.alarms || []) !== JSON.stringify(data.alarms || []);
    if (!before || before.infusion_id !== data.infusion_id || before.state !== data.state || alarmsChanged) {
      hooks.refresh();
    } else {
      hooks.render();
      if (before.volume_infused_ml !== data.volume_infused_ml) refreshSoon();
    }
    return;
  }
  forgetOutdated(data);
  hooks.refresh(); // an audit event or a resync: the infusions changed
}

// An outcome shown in a region ("Stop confirmed in 120 ms", "Resumed at 75 ml/h") is old news
// once somebody else acts on that infusion; the A3 alarm is not: it lasts while the stop does.
function forgetOutdated(row) {
  if (!row?.actor || row.actor === session.name) return;
  for (const [pumpId, notice] of notices) {
    if (notice.kind !== "alarm" && notice.infusionId === row.infusion_id) {
      notices.delete(pumpId);
      hooks.render();
    }
  }
}

// The infusions' own figures (volume of the bag, time left) follow a pump's volume within a
// couple of seconds, without reading everything on each status event.
function refreshSoon() {
  if (soon !== null) return;
  soon = setTimeout(() => {
    soon = null;
    if (session.token) hooks.refresh();
  }, 2000);
}

function setConnected(up) {
  view.connected = up;
  showAge();
}

// The gateway's database not answering: stops and reactions work, records wait (issue 18)
export function showStore(body) {
  const note = byId("store-note");
  note.hidden = body.store !== "degraded";
  if (body.store === "degraded") {
    note.textContent = "The gateway's database is not answering: stops and reactions work and "
      + "are recorded when it answers; starts, resumes and new records are refused until then. "
      + "Tell the engineer on duty.";
  }
}

export function showAge() {
  const live = byId("live");
  if (!session.token) return;
  const age = view.receivedAt === null ? null : (performance.now() - view.receivedAt) / 1000;
  const ageText = age === null ? "no data yet" : `data ${Math.round(age)} s old`;
  let text;
  let stale = false;
  if (!may("read")) {
    text = `Looking at the pumps every 2 s; ${ageText}`;
    stale = age !== null && age > STALE_AFTER_S;
  } else if (!view.connected) {
    text = `Disconnected from the service: reconnecting… (${ageText})`;
    stale = true;
  } else {
    stale = age !== null && age > STALE_AFTER_S;
    text = stale ? `Live, but ${ageText}: the page may be out of date` : `Live: ${ageText}`;
  }
  live.textContent = text;
  live.classList.toggle("stale", stale);
}

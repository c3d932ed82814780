// The nurse station page (docs/interfaces.md, section 4). Plain modern JavaScript, no build
// step, nothing from the internet. Everything shown is read from the API with the token the
// nurse typed; the API is the only way this page changes anything. Clinical times come from
// the service's clock (GET /api/v1/clock), never the browser's.

const CONFIG = JSON.parse(document.getElementById("pumpctl-config").textContent);
const API = CONFIG.api;
const TOKEN_KEY = "pumpctl.token"; // sessionStorage: this browser tab only

// CTCAE v5 "infusion related reaction", in a short phrase each.
const GRADES = [
  [1, "Mild, transient; no interruption or intervention needed"],
  [2, "Interruption needed; responds promptly to treatment"],
  [3, "Prolonged or recurring after improvement; hospital care needed"],
  [4, "Life-threatening; urgent intervention needed"],
];
const STATE_WORDS = {
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
const LIVE_STATES = new Set(["planned", "starting", "running", "paused", "stopped_observation"]);
// The reasons (state_reason.rule) of a pause for a reaction (I2, I4), which is reassessed and
// resolved; any other pause (a pump alarm A1, the bag's expiry L9, an alarm only a clinician
// clears L2, L3, A3, a stop found on a restart A4) is the pump's, and a reaction may still be
// reported during it.
const REACTION_PAUSES = new Set(["I2", "I4"]);
const STALE_AFTER_S = 10;
// The service pings the live events every few seconds; a stream silent for over two pings (or
// a connection attempt that long unanswered) is taken as lost and opened again, for a network
// that drops packets without closing anything would otherwise leave the page saying "Live".
const SILENT_AFTER_MS = CONFIG.events_ping_s * 2.4 * 1000;

const session = { token: null, name: null, role: null };
const view = {
  pumps: new Map(), // pump id -> GET /pumps entry
  infusions: new Map(), // pump id -> the infusion shown in its region
  reactionsAt: new Map(), // infusion id -> {count, marks: [{at, grade}]}
  now: null, // clinical now (ms since the epoch), from GET /clock
  nowIso: null,
  mode: null,
  receivedAt: null, // performance.now() of the last data from the service
  connected: false,
  attempt: null, // AbortController of the live events' current connection
  heardAt: null, // performance.now() of the current connection's start or last bytes
  loadedFrom: 0,
};
const notices = new Map(); // pump id -> {kind: "ok" | "alarm" | "error" | "info", text}
let stream = null; // AbortController of the live events
let lastEventId = null;
let refreshing = null;
let loadStarts = 0; // loads begun; view.loadedFrom: the latest one shown
let refreshAgain = false;

// ---------------------------------------------------------------- small helpers

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) el.append(child);
  }
  return el;
}

function duration(minutes) {
  if (minutes === null || minutes === undefined || Number.isNaN(minutes)) return "–";
  const m = Math.max(0, Math.round(minutes));
  if (m < 1) return "under a minute";
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

// The clock time of a clinical ISO instant as the service wrote it (its own offset).
function clockTime(iso) {
  return iso ? iso.slice(11, 16) : "–";
}

function minutesUntil(iso) {
  if (!iso || view.now === null) return null;
  return (Date.parse(iso) - view.now) / 60000;
}

function rate(value) {
  return `${Number(value ?? 0).toLocaleString("en", { maximumFractionDigits: 1 })} ml/h`;
}

function ml(value) {
  return `${Number(value ?? 0).toLocaleString("en", { maximumFractionDigits: 1 })} ml`;
}

function words(name) {
  const text = String(name).replaceAll("_", " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// Whenever the pump stands stopped under a live infusion: every pause (a reaction I2, I4, a
// pump alarm A1, the bag's expiry L9, an alarm only a clinician clears L2, L3, A3, an
// unexplained stop after a restart A4, a pump that stopped by itself A1), the I5 window, and
// a running infusion whose pump reads 0 ml/h (a lost link, A2, keeps "running"): the preview
// says whether the rules allow a resume now.
function resumable(infusion) {
  if (infusion.state === "paused" || infusion.state === "stopped_observation") return true;
  return infusion.state === "running" && infusion.rate_ml_h === 0;
}

// A pause for a reaction (I2, I4: reassessed, resolved, resumed), as against a pause for the
// pump's own reasons, during which a reaction may still be reported.
function reactionPause(infusion) {
  if (infusion.state !== "paused") return false;
  return Boolean(infusion.reaction) || REACTION_PAUSES.has(infusion.state_reason?.rule);
}

// The State line: the state in words and, whenever the service says why, the rule's id and its
// words ("Paused (A1): pump alarm: occlusion"); a rule the words already name is not repeated.
function stateLine(infusion) {
  const name = STATE_WORDS[infusion.state] || words(infusion.state);
  const reason = infusion.state_reason;
  if (!reason?.rule) return name;
  const named = name.endsWith(`(${reason.rule})`) ? name : `${name} (${reason.rule})`;
  return reason.message ? `${named}: ${reason.message}` : named;
}

// L9: a bag is changed only before the start or while the pump is stopped; the bag's expiry
// stops the pump itself (the infusion is "paused" with reason L9, its pump at 0 ml/h, until a
// new bag)
function bagChangeable(infusion) {
  if (infusion.state === "planned") return true;
  return ["running", "paused", "stopped_observation"].includes(infusion.state) && infusion.rate_ml_h === 0;
}

// What was given before the pump's counter was last reset (an earlier bag, L9, or a power
// reset): the pump is then programmed with the volume still to give
function earlierBags(infusion) {
  return Math.max(0, (infusion.volume_infused_ml ?? 0) - (infusion.bag_infused_ml ?? 0));
}

// The service's clinical now, read again just before a time the nurse typed ("N minutes before
// now") is turned into an instant: on a scaled clock the last poll may be minutes old.
async function freshClock() {
  const clock = await api("GET", "/clock");
  if (clock.status === 200) setClock(clock.body);
}

function isoMinutesBefore(minutes) {
  return new Date(view.now - minutes * 60000).toISOString();
}

function may(kind) {
  const roles = { read: CONFIG.readers, nurse: CONFIG.nurse_roles, clinician: CONFIG.clinician_roles }[kind];
  return roles.includes(session.role);
}

// ---------------------------------------------------------------- the API

class Unauthorized extends Error {}

// Well above the service's own bound on a reaction's answer (about 4.5 s, A3): past this the
// request is given up, for a request lost in the network would otherwise hang the page.
const API_TIMEOUT_MS = 15000;

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${session.token}`, Accept: "application/json" };
  const init = { method, headers, signal: AbortSignal.timeout(API_TIMEOUT_MS) };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (error) {
    if (error.name === "TimeoutError") {
      const detail = `no answer from the service within ${API_TIMEOUT_MS / 1000} s; it may or may not have acted`;
      return { status: 0, timedOut: true, body: { detail } };
    }
    return { status: 0, body: { detail: `the service cannot be reached (${error.message})` } };
  }
  if (response.status === 401) {
    signOut("The service did not accept the token: sign in again.");
    throw new Unauthorized();
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { status: response.status, body: data };
}

// The words of a refusal or an invalid request, naming the rule or the field.
function problem(answer) {
  const detail = answer.body?.detail;
  if (answer.timedOut) return `No answer: ${detail}.`;
  if (answer.status === 0) return `Not sent: ${detail}.`;
  if (detail && typeof detail === "object" && !Array.isArray(detail) && "message" in detail) {
    return detail.rule ? `Refused (${detail.rule}): ${detail.message}` : `Refused: ${detail.message}`;
  }
  if (Array.isArray(detail)) {
    return detail
      .map((d) => `${(d.loc || []).filter((p) => p !== "body").join(".") || "request"}: ${d.msg}`)
      .join("; ");
  }
  if (answer.status === 403) return `Not allowed for your role: ${detail ?? ""}`;
  return `${answer.status}: ${typeof detail === "string" ? detail : "the service refused"}`;
}

// ---------------------------------------------------------------- signing in

function showSignIn(message) {
  document.getElementById("room").hidden = true;
  document.getElementById("tools").hidden = true;
  document.getElementById("who").hidden = true;
  document.getElementById("live").hidden = true;
  document.getElementById("clock").hidden = true;
  const form = document.getElementById("sign-in");
  form.hidden = false;
  document.getElementById("sign-in-error").textContent = message || "";
  document.getElementById("token").focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  session.token = session.name = session.role = null;
  if (stream) stream.abort();
  stream = null;
  lastEventId = null;
  view.pumps.clear();
  view.infusions.clear();
  notices.clear();
  document.getElementById("room").replaceChildren();
  showSignIn(message);
}

async function signIn(token) {
  session.token = token;
  const answer = await api("GET", "/me").catch(() => null);
  if (answer === null) return; // 401: signOut already showed the sign-in again
  if (answer.status !== 200) {
    session.token = null;
    showSignIn(problem(answer));
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  session.name = answer.body.name;
  session.role = answer.body.role;
  document.getElementById("sign-in").hidden = true;
  const who = document.getElementById("who");
  who.textContent = `Signed in as ${session.name} (${session.role})`;
  who.hidden = false;
  document.getElementById("tools").hidden = false;
  document.getElementById("new-patient").hidden = !may("clinician");
  document.getElementById("live").hidden = false;
  document.getElementById("clock").hidden = false;
  document.getElementById("room").hidden = false;
  if (!may("read")) {
    note(`Your role (${session.role}) sees the pumps, not clinical data.`);
  }
  await refresh();
  if (may("read")) listen();
}

// ---------------------------------------------------------------- reading state

async function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return refreshing;
  }
  refreshing = (async () => {
    do {
      refreshAgain = false;
      try {
        await load();
      } catch (error) {
        if (!(error instanceof Unauthorized)) console.error(error);
      }
    } while (refreshAgain && session.token);
  })();
  try {
    await refreshing;
  } finally {
    refreshing = null;
  }
}

async function load() {
  loadStarts += 1;
  const started = loadStarts;
  const reading = [api("GET", "/clock"), api("GET", "/pumps")];
  if (may("read")) reading.push(api("GET", "/infusions"));
  const [clock, pumps, infusions] = await Promise.all(reading);
  if (clock.status === 200) setClock(clock.body);
  if (pumps.status !== 200) {
    note(`Cannot read the pumps: ${problem(pumps)}`);
    return;
  }
  const arrived = performance.now();
  view.pumps = new Map(pumps.body.map((p) => [p.id, { ...p, receivedAt: arrived }]));
  view.infusions.clear();
  if (infusions && infusions.status === 200) {
    const byPump = new Map();
    for (const infusion of infusions.body) {
      if (!byPump.has(infusion.pump_id)) byPump.set(infusion.pump_id, []);
      byPump.get(infusion.pump_id).push(infusion);
    }
    // newest first: the live one if there is one, else the latest
    for (const [pumpId, list] of byPump) {
      view.infusions.set(pumpId, list.find((inf) => LIVE_STATES.has(inf.state)) || list[0]);
    }
    await loadReactionTimes();
  }
  view.receivedAt = performance.now();
  view.loadedFrom = started; // what was shown is no older than this load's start
  render();
}

// Where each reaction happened on the clinical clock, from the infusion's audit trail.
async function loadReactionTimes() {
  const wanted = [...view.infusions.values()].filter((inf) => (inf.reactions || []).length > 0);
  await Promise.all(
    wanted.map(async (inf) => {
      const cached = view.reactionsAt.get(inf.id);
      if (cached && cached.count === inf.reactions.length) return;
      const trail = await api("GET", `/infusions/${inf.id}/events`);
      if (trail.status !== 200) return;
      const marks = trail.body
        .filter((row) => row.type === "reaction")
        .map((row) => {
          const reaction = row.data?.reaction || row.data || {};
          return { at: reaction.onset_at || row.at, grade: reaction.grade };
        });
      view.reactionsAt.set(inf.id, { count: inf.reactions.length, marks });
    }),
  );
}

function setClock(body) {
  view.nowIso = body.now;
  view.now = Date.parse(body.now);
  view.mode = body.mode;
  const clock = document.getElementById("clock");
  clock.textContent = `Clinical time ${clockTime(body.now)} (${body.mode} clock)`;
  // A7: a stepped wall clock moved no clinical time, but the staff are told it happened
  const note = document.getElementById("clock-note");
  note.hidden = !(body.wall_steps > 0);
  if (body.wall_steps > 0) {
    const step = Math.round(body.last_wall_step_s ?? 0);
    note.textContent = `The gateway's wall clock was stepped by ${step > 0 ? "+" : ""}${step} s (A7): `
      + "clinical time did not move; tell the engineer on duty.";
  }
}

// The gateway's database not answering: stops and reactions work, records wait (issue 18)
function showStore(body) {
  const note = document.getElementById("store-note");
  note.hidden = body.store !== "degraded";
  if (body.store === "degraded") {
    note.textContent = "The gateway's database is not answering: stops and reactions work and "
      + "are recorded when it answers; starts, resumes and new records are refused until then. "
      + "Tell the engineer on duty.";
  }
}

async function tickClock() {
  if (!session.token) return;
  const before = view.nowIso;
  await freshClock().catch(() => null);
  if (view.nowIso !== before) render();
  if (!may("read")) await refresh(); // no live events for this role: look again
}

// ---------------------------------------------------------------- live events

async function listen() {
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
      const response = await fetch(`${API}/events`, { headers, signal: attempt.signal });
      if (response.status === 401) {
        signOut("The service did not accept the token: sign in again.");
        return;
      }
      if (!response.ok || !response.body) throw new Error(`live events answered ${response.status}`);
      view.heardAt = performance.now();
      setConnected(true);
      wait = 1000;
      opened += 1;
      // After a drop, read the whole state again: the replay carries the audit events after
      // Last-Event-ID, not the pumps' statuses, and a drop before the first event has no id.
      if (opened > 1) refresh();
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
function watchStream() {
  if (view.attempt && performance.now() - view.heardAt > SILENT_AFTER_MS) view.attempt.abort();
}

async function readEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = { type: "message", id: null, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    view.heardAt = performance.now();
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
      view.receivedAt = performance.now();
      if (line === "") {
        if (event.data.length) dispatch(event);
        event = { type: "message", id: null, data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // a ping
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
      if (field === "event") event.type = text;
      else if (field === "data") event.data.push(text);
      else if (field === "id") event.id = text;
    }
  }
}

function dispatch(event) {
  if (event.id) lastEventId = event.id;
  let data;
  try {
    data = JSON.parse(event.data.join("\n"));
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
    if (!before || before.infusion_id !== data.infusion_id || before.state !== data.state) refresh();
    else {
      render();
      if (before.volume_infused_ml !== data.volume_infused_ml) refreshSoon();
    }
    return;
  }
  forgetOutdated(data);
  refresh(); // an audit event or a resync: the infusions changed
}

// An outcome shown in a region ("Stop confirmed in 120 ms", "Resumed at 75 ml/h") is old news
// once somebody else acts on that infusion; the A3 alarm is not: it lasts while the stop does.
function forgetOutdated(row) {
  if (!row?.actor || row.actor === session.name) return;
  for (const [pumpId, notice] of notices) {
    if (notice.kind !== "alarm" && notice.infusionId === row.infusion_id) {
      notices.delete(pumpId);
      render();
    }
  }
}

// The infusions' own figures (volume of the bag, time left) follow a pump's volume within a
// couple of seconds, without reading everything on each status event.
let soon = null;
function refreshSoon() {
  if (soon !== null) return;
  soon = setTimeout(() => { soon = null; if (session.token) refresh(); }, 2000);
}

function setConnected(up) {
  view.connected = up;
  showAge();
}

function showAge() {
  const live = document.getElementById("live");
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

// ---------------------------------------------------------------- the room

function note(text) {
  document.getElementById("notice").textContent = text;
}

function render() {
  const room = document.getElementById("room");
  const focused = document.activeElement?.dataset?.key;
  const ids = [...view.pumps.keys()];
  for (const section of [...room.children]) {
    if (!view.pumps.has(section.dataset.pump)) section.remove();
  }
  ids.forEach((id, index) => {
    let section = [...room.children].find((el) => el.dataset.pump === id);
    if (!section) {
      section = buildRegion(id);
      room.append(section);
    }
    if (room.children[index] !== section) room.insertBefore(section, room.children[index]);
    fillRegion(section, id);
  });
  if (focused && document.activeElement?.dataset?.key !== focused) {
    document.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
  }
  showAge();
}

function buildRegion(id) {
  const key = `pump-${id.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  return h(
    "section",
    { class: "pump", "aria-labelledby": `${key}-name`, "data-pump": id },
    h("h2", { id: `${key}-name`, text: id }),
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
    chart.replaceChildren(...drawChart(infusion));
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

function fillLink(link, pump) {
  const age = contactAge(pump);
  const ageText = age === null ? "no contact yet" : `last contact ${age < 10 ? age.toFixed(1) : Math.round(age)} s ago`;
  const text = pump.connected ? ` Link up, ${ageText}` : ` Link lost (A2): ${ageText}`;
  if (link.dataset.shown === text) return;
  link.dataset.shown = text;
  link.replaceChildren(h("span", { class: "icon", "aria-hidden": "true", text: pump.connected ? "●" : "✖" }), text);
  link.classList.toggle("down", !pump.connected);
}

function tickLinks() {
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
    next = `in ${duration(minutesUntil(infusion.next_escalation_at))} (at ${clockTime(infusion.next_escalation_at)})`;
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
    const left = minutesUntil(infusion.bag_expires_at);
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

function fillAlarms(box, pump, infusion) {
  const rows = [];
  const raised = new Set((infusion?.alarms || []).map((a) => a.kind));
  for (const alarm of pump.alarms || []) {
    // A1: a New Era pump cannot say when the cause is gone; the nurse's clear says it (the
    // service refuses it for a pump that still reports the alarm and could say so)
    if (!raised.has(alarm)) rows.push({ text: `Pump alarm: ${words(alarm)} (A1)`, kind: alarm });
  }
  for (const alarm of infusion?.alarms || []) {
    rows.push({ text: `${alarm.rule ? `${alarm.rule}: ` : ""}${alarm.message || words(alarm.kind)}`, kind: alarm.kind });
  }
  const key = JSON.stringify([rows, session.role, infusion?.stop_pending, infusion?.link_lost, pump.alarms]);
  if (box.dataset.shown === key) return;
  box.dataset.shown = key;
  if (!rows.length) {
    box.replaceChildren();
    return;
  }
  const clinicianOnly = new Set(CONFIG.clinician_only_alarms);
  const list = h("ul", { class: "alarm-list", "aria-label": "Alarms" });
  for (const row of rows) {
    const clearable = row.kind && infusion && (may("clinician") || (may("nurse") && !clinicianOnly.has(row.kind)))
      && !standing(row.kind, pump, infusion);
    list.append(
      h("li", {},
        h("span", { class: "icon", "aria-hidden": "true", text: "⚠ " }),
        h("span", { text: `Alarm: ${row.text}` }),
        clearable ? h("button", { type: "button", "data-key": `${pump.id}:clear:${row.kind}`, onclick: () => clearAlarm(pump.id, infusion.id, row.kind) }, "Clear alarm") : null),
    );
  }
  box.replaceChildren(list);
}

// An alarm whose cause still stands, which the rules would refuse to clear (A2, A3): no
// "Clear alarm" is offered for it until then.
function standing(kind, pump, infusion) {
  if (kind === "comm_loss") return Boolean(infusion.link_lost); // A2
  if (kind === "pump_not_stopped") return Boolean(infusion.stop_pending || infusion.stop_unconfirmed); // A3
  return false;
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

// ---------------------------------------------------------------- the chart

function drawChart(infusion) {
  const W = 640, H = 190, L = 48, R = 12, T = 22, B = 30;
  const steps = infusion.planned_steps;
  const history = infusion.rate_history || [];
  const started = infusion.started_at ? Date.parse(infusion.started_at) : history.length ? Date.parse(history[0].at) : null;
  const toMin = (iso) => (started === null ? 0 : (Date.parse(iso) - started) / 60000);
  const nowMin = started === null || view.now === null ? 0 : (view.now - started) / 60000;

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
  const marks = (view.reactionsAt.get(infusion.id)?.marks || []).map((mark) => {
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

// ---------------------------------------------------------------- actions

// `infusionId`: the infusion the outcome is about, when the answer names it (a new plan: the
// page may not have read it yet, and the notice must not be taken for another infusion's)
function setNotice(pumpId, kind, text, infusionId = view.infusions.get(pumpId)?.id) {
  notices.set(pumpId, { kind, text, after: loadStarts, infusionId });
  render();
}

// An action's outcome: the region's notice, the state read again, and the focus on the notice
// (the re-rendered buttons would otherwise leave it on the page's body).
async function settle(pumpId, kind, text, infusionId = undefined) {
  if (infusionId === undefined) setNotice(pumpId, kind, text);
  else setNotice(pumpId, kind, text, infusionId);
  await refresh();
  focusNotice(pumpId);
}

function focusNotice(pumpId) {
  const section = [...document.querySelectorAll("section.pump")].find((el) => el.dataset.pump === pumpId);
  section?.querySelector(".notice-slot [tabindex]")?.focus();
}

async function post(pumpId, path, body, done) {
  const answer = await api("POST", path, body);
  if (answer.status >= 200 && answer.status < 300) await settle(pumpId, "ok", typeof done === "function" ? done(answer.body) : done);
  else await settle(pumpId, "error", problem(answer));
  return answer;
}

function resolve(pumpId) {
  const infusion = view.infusions.get(pumpId);
  post(pumpId, `/infusions/${infusion.id}/reactions/${infusion.reaction.id}/resolve`, undefined, "Symptoms resolved recorded (I4)");
}

function clearAlarm(pumpId, infusionId, kind) {
  post(pumpId, `/infusions/${infusionId}/alarms/${encodeURIComponent(kind)}/clear`, undefined, `Alarm ${words(kind)} cleared (A1)`);
}

function choices(container, name) {
  container.replaceChildren(
    ...GRADES.map(([grade, phrase]) => {
      const id = `${name}-grade-${grade}`;
      return h("div", { class: "choice" },
        h("input", { type: "radio", name: `${name}-grade`, id, value: grade, "aria-describedby": `${id}-says` }),
        h("label", { for: id, text: `Grade ${grade}` }),
        h("span", { id: `${id}-says`, class: "says", text: phrase }));
    }),
  );
}

function signChoices(container, name) {
  container.replaceChildren(
    ...CONFIG.signs.map((sign) => {
      const id = `${name}-sign-${sign}`;
      return h("div", { class: "choice" },
        h("input", { type: "checkbox", name: `${name}-sign`, id, value: sign }),
        h("label", { for: id, text: words(sign) }));
    }),
  );
}

function picked(form, name) {
  const grade = form.querySelector(`input[name="${name}-grade"]:checked`);
  const signs = [...form.querySelectorAll(`input[name="${name}-sign"]:checked`)].map((el) => el.value);
  return { grade: grade ? Number(grade.value) : null, signs };
}

function open(dialogId, pumpId, title) {
  const dialog = document.getElementById(dialogId);
  dialog.dataset.pump = pumpId || "";
  if (title) dialog.querySelector("h2").textContent = title;
  dialog.querySelector("form").reset();
  dialog.querySelectorAll(".error").forEach((el) => { el.textContent = ""; });
  dialog.showModal();
  return dialog;
}

// The dialog being submitted, its pump and the infusion shown there.
function submitted(event, dialogId) {
  event.preventDefault();
  const dialog = document.getElementById(dialogId);
  const pumpId = dialog.dataset.pump;
  return { dialog, pumpId, infusion: view.infusions.get(pumpId) };
}

function openReaction(pumpId) {
  open("reaction-dialog", pumpId, `Report reaction on ${pumpId}`);
  document.querySelector('#reaction-grades input').focus();
}

async function submitReaction(event) {
  const { dialog, pumpId, infusion } = submitted(event, "reaction-dialog");
  const error = document.getElementById("reaction-error");
  const { grade, signs } = picked(dialog, "reaction");
  if (grade === null) { error.textContent = "Choose a grade."; return; }
  if (!signs.length) { error.textContent = "Choose at least one sign (Other when none of these)."; return; }
  const body = { grade, signs };
  const ended = infusion.state === "completed"; // I11: a delayed reaction; no pump to stop
  const onset = document.getElementById("reaction-onset").value;
  if (onset !== "") { // the clock is read only then: nothing delays the stop otherwise
    await freshClock();
    body.onset_at = isoMinutesBefore(Number(onset));
  }
  dialog.close();
  setNotice(pumpId, "info", "Stopping the pump…");
  const answer = await api("POST", `/infusions/${infusion.id}/reactions`, body);
  if (answer.status === 201) {
    const b = answer.body;
    let said = {
      confirmed: `Stop confirmed in ${Math.round(b.stop_confirmed_ms)} ms; grade ${grade} reaction recorded`,
      already_stopped: `The pump was already stopped; grade ${grade} reaction recorded`,
      no_pump_action: `Grade ${grade} reaction recorded; the infusion had ended, so the pump was not touched (I11)`,
    }[b.stop] || `Reaction recorded (${b.stop})`;
    if (ended) said = `Grade ${grade} reaction recorded after completion; the pump was not touched (I11)`;
    setNotice(pumpId, "ok", said);
  } else if (answer.status === 202) {
    setNotice(pumpId, "alarm", answer.body?.message || CONFIG.a3_words);
  } else if (answer.timedOut) {
    // the report may have reached the service and the stop may be under way, or not: the safe
    // side is to treat the pump as not stopped until the service says otherwise (A3)
    setNotice(pumpId, "error", `${problem(answer)} Check the pump now and stop it by hand if it runs; the page shows the service's word as soon as it answers.`);
  } else {
    setNotice(pumpId, "error", `Reaction not recorded, the pump was not stopped by this report: ${problem(answer)}`);
  }
  await refresh();
  focusNotice(pumpId);
}

function openReassess(pumpId) {
  open("reassess-dialog", pumpId, `Reassess reaction on ${pumpId}`);
  const infusion = view.infusions.get(pumpId);
  const dialog = document.getElementById("reassess-dialog");
  const current = dialog.querySelector(`input[name="reassess-grade"][value="${infusion.reaction.grade}"]`);
  if (current) current.checked = true;
  for (const sign of infusion.reaction.signs) {
    const box = dialog.querySelector(`input[name="reassess-sign"][value="${sign}"]`);
    if (box) box.checked = true;
  }
  (current || dialog.querySelector("input")).focus();
}

async function submitReassess(event) {
  const { dialog, pumpId, infusion } = submitted(event, "reassess-dialog");
  const { grade, signs } = picked(dialog, "reassess");
  const error = document.getElementById("reassess-error");
  if (grade === null) { error.textContent = "Choose a grade."; return; }
  if (!signs.length) { error.textContent = "Choose at least one sign (Other when none of these)."; return; }
  const answer = await api("POST", `/infusions/${infusion.id}/reactions/${infusion.reaction.id}/reassess`, { grade, signs });
  if (answer.status !== 200) { error.textContent = problem(answer); return; }
  dialog.close();
  await settle(pumpId, "ok", `Reassessed: grade ${grade} (I5)`);
}

function openResume(pumpId) {
  open("resume-dialog", pumpId, `Resume on ${pumpId}`);
  return showResumePreview(view.infusions.get(pumpId));
}

// The preview (GET .../resume) in the open resume dialog; what it showed is kept, so that the
// confirmation resumes only at the rate the nurse saw. After an unexplained stop found on a
// restart (A4) the nurse says first whether it was a reaction.
async function showResumePreview(infusion, before = "") {
  const dialog = document.getElementById("resume-dialog");
  const preview = document.getElementById("resume-preview");
  const confirm = document.getElementById("resume-confirm");
  const reaction = document.getElementById("resume-reaction");
  preview.textContent = "Asking the rules…";
  confirm.hidden = reaction.hidden = true;
  dialog.dataset.rate = dialog.dataset.mode = "";
  const answer = await api("GET", `/infusions/${infusion.id}/resume`);
  const rule = answer.body?.rule;
  if (answer.status !== 200) {
    preview.textContent = problem(answer);
  } else if (answer.body.allowed) {
    preview.textContent = `${before}The rules give ${rate(answer.body.rate_ml_h)}${rule ? ` (${rule})` : ""}. Resume at this rate?`;
    confirm.textContent = `Resume at ${rate(answer.body.rate_ml_h)}`;
    dialog.dataset.rate = String(answer.body.rate_ml_h);
    dialog.dataset.mode = "resume";
    confirm.hidden = false;
    confirm.focus();
    return;
  } else if (rule === "A4") {
    preview.textContent = `${before}The pump was found stopped after a restart, with no record why (A4): was it a reaction? If not, it runs again at the rate before the stop, ${rate(infusion.step_rate_ml_h)}.`;
    confirm.textContent = `No reaction: resume at ${rate(infusion.step_rate_ml_h)}`;
    dialog.dataset.mode = "no_reaction";
    confirm.hidden = reaction.hidden = false;
    confirm.focus();
    return;
  } else {
    preview.textContent = `${before}Resume refused${rule ? ` (${rule})` : ""}: ${answer.body.message}`;
  }
  dialog.querySelector("[data-close]").focus();
}

async function submitResume(event) {
  const { dialog, pumpId, infusion } = submitted(event, "resume-dialog");
  const error = document.getElementById("resume-error");
  let body;
  if (dialog.dataset.mode === "no_reaction") {
    body = { reaction: false };
  } else {
    // the rules are asked again: if the rate is no longer the one shown, the nurse sees the
    // new one and confirms again
    const again = await api("GET", `/infusions/${infusion.id}/resume`);
    if (again.status !== 200 || !again.body.allowed || String(again.body.rate_ml_h) !== dialog.dataset.rate) {
      await showResumePreview(infusion, "The situation changed while this was open. ");
      return;
    }
  }
  const answer = await api("POST", `/infusions/${infusion.id}/resume`, body);
  if (answer.status !== 200) { error.textContent = problem(answer); return; }
  dialog.close();
  await settle(pumpId, "ok", `Resumed at ${rate(answer.body.step_rate_ml_h)}${body ? " (no reaction, A4)" : ""}`);
}

function reactionInstead() {
  const dialog = document.getElementById("resume-dialog");
  const pumpId = dialog.dataset.pump;
  dialog.close();
  openReaction(pumpId);
}

function openStop(pumpId) {
  open("stop-dialog", pumpId, `Stop infusion on ${pumpId}`).querySelector("#stop-reason").focus();
}

// A dialog whose one field is a reason ("stop", "cancel"): blank is refused here, as the API would.
async function submitReason(event, kind, why, done) {
  const { dialog, pumpId, infusion } = submitted(event, `${kind}-dialog`);
  const error = document.getElementById(`${kind}-error`);
  const reason = document.getElementById(`${kind}-reason`).value.trim();
  if (!reason) { error.textContent = `reason: give a reason for ${why}`; return; }
  const answer = await api("POST", `/infusions/${infusion.id}/${kind}`, { reason });
  if (answer.status !== 200) { error.textContent = problem(answer); return; }
  dialog.close();
  await settle(pumpId, "ok", done(infusion));
}

function submitStop(event) {
  return submitReason(event, "stop", "stopping", () => "Infusion stopped for good");
}

function openBag(pumpId) {
  open("bag-dialog", pumpId, `New bag on ${pumpId}`).querySelector("#bag-prepared").focus();
}

async function submitBag(event) {
  const { dialog, pumpId, infusion } = submitted(event, "bag-dialog");
  const prepared = document.getElementById("bag-prepared").value;
  await freshClock();
  const body = { prepared_at: isoMinutesBefore(prepared === "" ? 0 : Number(prepared)) };
  const answer = await api("POST", `/infusions/${infusion.id}/bag`, body);
  if (answer.status !== 200) { document.getElementById("bag-error").textContent = problem(answer); return; }
  dialog.close();
  const b = answer.body;
  await settle(pumpId, "ok", `New bag recorded (L9): ${ml(b.bag_ml - earlierBags(b))} to give, good until ${clockTime(b.bag_expires_at)}`);
}

function openCancel(pumpId) {
  open("cancel-dialog", pumpId, `Cancel infusion on ${pumpId}`).querySelector("#cancel-reason").focus();
}

function submitCancel(event) {
  return submitReason(event, "cancel", "cancelling", (infusion) => `Infusion ${infusion.infusion_number} cancelled`);
}

function openPatient() {
  open("patient-dialog", "", "New patient");
  document.getElementById("patient-mrn").focus();
}

async function submitPatient(event) {
  event.preventDefault();
  const dialog = document.getElementById("patient-dialog");
  const body = { mrn: document.getElementById("patient-mrn").value.trim(), weight_kg: Number(document.getElementById("patient-weight").value) };
  const answer = await api("POST", "/patients", body);
  if (answer.status !== 201) { document.getElementById("patient-error").textContent = problem(answer); return; }
  dialog.close();
  note(`Patient ${answer.body.id} created (MRN ${answer.body.mrn}); use patient id ${answer.body.id} for a new infusion.`);
}

function openInfusion(pumpId) {
  open("infusion-dialog", pumpId, `New infusion on ${pumpId}`).querySelector("#infusion-patient").focus();
}

async function submitInfusion(event) {
  const { dialog, pumpId } = submitted(event, "infusion-dialog");
  const body = { patient_id: Number(document.getElementById("infusion-patient").value), pump_id: pumpId };
  const bag = document.getElementById("infusion-bag").value;
  if (bag !== "") {
    await freshClock();
    body.bag_prepared_at = isoMinutesBefore(Number(bag));
  }
  const answer = await api("POST", "/infusions", body);
  if (answer.status !== 201) { document.getElementById("infusion-error").textContent = problem(answer); return; }
  dialog.close();
  const b = answer.body;
  await settle(pumpId, "ok", `Infusion ${b.infusion_number} planned: row ${b.row}, ${ml(b.bag_ml)}, ${b.dose_mg} mg, first rate ${rate(b.initial_rate_ml_h)}`, b.id);
}

function openStart(pumpId) {
  const dialog = open("start-dialog", pumpId, `Start infusion on ${pumpId}`);
  // the schedule's override (D2) is asked only once a start was refused naming D2
  document.getElementById("start-schedule").hidden = true;
  dialog.dataset.premedSent = "";
  showPremedication(view.infusions.get(pumpId));
  document.getElementById("start-premed").focus();
}

function showPremedication(infusion) {
  document.getElementById("start-premedication").textContent = infusion.premedication_at
    ? `Premedication recorded at ${clockTime(infusion.premedication_at)} (D3).`
    : "No premedication recorded yet (D3).";
}

async function submitStart(event) {
  const { dialog, pumpId, infusion } = submitted(event, "start-dialog");
  const error = document.getElementById("start-error");
  const premed = document.getElementById("start-premed").value;
  let premedRecorded = false;
  const override = document.getElementById("start-override").value.trim();
  const schedule = document.getElementById("start-schedule");
  const scheduleReason = document.getElementById("start-schedule-override");
  const scheduleOverride = schedule.hidden ? "" : scheduleReason.value.trim();
  // a retry after a refusal does not record the same premedication twice
  if (premed !== "" && dialog.dataset.premedSent !== premed) {
    await freshClock();
    const given = await api("POST", `/infusions/${infusion.id}/premedication`, { given_at: isoMinutesBefore(Number(premed)) });
    if (given.status !== 200) { error.textContent = problem(given); return; }
    dialog.dataset.premedSent = premed;
    premedRecorded = true;
  }
  const body = {};
  if (override) body.override_reason = override; // D3
  if (scheduleOverride) body.schedule_override_reason = scheduleOverride; // D2
  const answer = await api("POST", `/infusions/${infusion.id}/start`, Object.keys(body).length ? body : undefined);
  if (answer.status !== 200) {
    const refused = problem(answer);
    if (answer.body?.detail?.rule === "D2") {
      // sooner than the schedule allows: a clinician may start it with a reason (audited)
      error.textContent = `${refused.replace(/\.?$/, ".")} To start it now, give a schedule override reason (D2).`;
      const first = schedule.hidden;
      schedule.hidden = false;
      if (first || !scheduleOverride) scheduleReason.focus();
    } else {
      error.textContent = refused;
    }
    if (premedRecorded) { // the premedication just recorded stays; the dialog says so
      await refresh();
      const now = view.infusions.get(pumpId);
      if (now?.id === infusion.id) showPremedication(now);
    }
    return;
  }
  dialog.close();
  await settle(pumpId, "ok", `Started at ${rate(answer.body.step_rate_ml_h)}`);
}

// ---------------------------------------------------------------- wiring

function wire() {
  choices(document.getElementById("reaction-grades"), "reaction");
  signChoices(document.getElementById("reaction-signs"), "reaction");
  choices(document.getElementById("reassess-grades"), "reassess");
  signChoices(document.getElementById("reassess-signs"), "reassess");
  document.getElementById("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = document.getElementById("token").value.trim();
    if (token) signIn(token);
  });
  document.getElementById("sign-out").addEventListener("click", () => signOut(""));
  document.getElementById("new-patient").addEventListener("click", openPatient);
  document.getElementById("reaction-form").addEventListener("submit", submitReaction);
  document.getElementById("reassess-form").addEventListener("submit", submitReassess);
  document.getElementById("resume-form").addEventListener("submit", submitResume);
  document.getElementById("resume-reaction").addEventListener("click", reactionInstead);
  document.getElementById("stop-form").addEventListener("submit", submitStop);
  document.getElementById("patient-form").addEventListener("submit", submitPatient);
  document.getElementById("infusion-form").addEventListener("submit", submitInfusion);
  document.getElementById("start-form").addEventListener("submit", submitStart);
  document.getElementById("bag-form").addEventListener("submit", submitBag);
  document.getElementById("cancel-form").addEventListener("submit", submitCancel);
  for (const button of document.querySelectorAll("dialog [data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
  setInterval(() => { watchStream(); showAge(); tickLinks(); }, 1000);
  setInterval(tickClock, 2000);
  setInterval(() => { if (session.token) refresh(); }, 15000);
  const kept = sessionStorage.getItem(TOKEN_KEY);
  if (kept) signIn(kept);
  else showSignIn("");
}

wire();

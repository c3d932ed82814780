// The nurse station page (docs/interfaces.md, section 4): the entry module. Plain modern
// JavaScript in ES modules, no build step, nothing from the internet. Everything shown is read
// from the API with the token the nurse typed; the API is the only way this page changes
// anything. Clinical times come from the service's clock (GET /api/v1/clock), never the
// browser's; the alarm signals' timing (flash, pulses, the silence) runs on the page's own clock.
//
// The modules: format.js, rules.js, signals.js and sse.js are pure (node --test);
// state.js holds what the service said; api.js and stream.js talk to it; overview.js draws the
// room's tiles and the alarm banner, detail.js a pump's region, chart.js its chart,
// actions.js the dialogs; sound.js plays the alarm bursts.

import { API_TIMEOUT_MS, Unauthorized, api, problem } from "./api.js";
import { note, wireDialogs } from "./actions.js";
import { closeDetail, renderDetail, tickLinks } from "./detail.js";
import { byId, h } from "./dom.js";
import { clockTime, countdown } from "./format.js";
import { roomAlarms, renderOverview } from "./overview.js";
import { LIVE_STATES } from "./rules.js";
import { FLASH, audible, flashPeriodS, silenceFrom, silenceLeftMs } from "./signals.js";
import { Sounder } from "./sound.js";
import { CONFIG, hooks, may, notices, session, view } from "./state.js";
import { listen, showAge, stopListening, watchStream } from "./stream.js";

const TOKEN_KEY = "pumpctl.token"; // sessionStorage: this browser tab only
const SESSION_KEY = "pumpctl.session"; // "1" while the token is a sign-in's session
const SOUND_TICK_MS = 250;

const sounder = new Sounder(() => {
  const Context = window.AudioContext || window.webkitAudioContext;
  return Context ? new Context() : null;
});
let silence = null; // {since, until} on the page's clock (performance.now()), or null
let refreshing = null;
let refreshAgain = false;
let alarmsNow = new Map(); // pump id -> alarms, as last rendered

// ---------------------------------------------------------------- signing in

function showSignIn(message) {
  for (const id of ["room", "tools", "who", "live", "clock", "sound", "alarm-banner"]) byId(id).hidden = true;
  byId("sign-in").hidden = false;
  byId("sign-in-error").textContent = message || "";
  byId("user-name").focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  sessionStorage.removeItem(SESSION_KEY);
  session.token = session.name = session.role = null;
  stopListening();
  view.pumps.clear();
  view.infusions.clear();
  view.seen.clear();
  notices.clear();
  silence = null;
  sounder.update(null);
  closeDetail(false);
  byId("overview").replaceChildren();
  showSignIn(message);
}

// A person's sign-in (POST /api/v1/session): her session's token is then the page's token.
async function passwordSignIn(name, password) {
  byId("password").value = "";
  let response;
  try {
    response = await fetch(`${CONFIG.api}/session`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ name, password }),
      signal: AbortSignal.timeout(API_TIMEOUT_MS),
    });
  } catch (error) {
    showSignIn(`The service cannot be reached (${error.message}).`);
    return;
  }
  const body = await response.json().catch(() => null);
  if (response.status === 201 && body?.token) {
    sessionStorage.setItem(SESSION_KEY, "1");
    await signIn(body.token);
    return;
  }
  if (response.status === 401) showSignIn("The name or the password is not right.");
  else if (response.status === 429) {
    const wait = response.headers.get("Retry-After") || "a few";
    showSignIn(`Too many failed sign-ins: try again in ${wait} s.`);
  } else showSignIn(problem({ status: response.status, body }));
}

// "Sign out": a sign-in's session is ended at the service too (best effort: forgotten here
// whatever the service answers).
function endSession() {
  if (sessionStorage.getItem(SESSION_KEY) === "1" && session.token) {
    api("DELETE", "/session").catch(() => null);
  }
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
  byId("sign-in").hidden = true;
  const who = byId("who");
  who.textContent = `Signed in as ${session.name} (${session.role})`;
  who.hidden = false;
  byId("tools").hidden = false;
  byId("new-patient").hidden = !may("clinician");
  for (const id of ["live", "clock", "sound", "alarm-banner", "room"]) byId(id).hidden = false;
  if (!may("read")) {
    note(`Your role (${session.role}) sees the pumps, not clinical data.`);
  }
  showSound();
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
  view.loadStarts += 1;
  const started = view.loadStarts;
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
  const read = !infusions || infusions.status === 200;
  if (!read) {
    // what was shown stays (its alarms too: the safe side) until the next read succeeds
    note(`Cannot read the infusions: ${problem(infusions)}`);
  } else if (byId("notice").textContent.startsWith("Cannot read")) {
    note("");
  }
  if (infusions && read) {
    view.infusions.clear();
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
  if (read) view.loadedFrom = started; // what was shown is no older than this load's start
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
  byId("clock").textContent = `Clinical time ${clockTime(body.now)} (${body.mode} clock)`;
  // A7: a stepped wall clock moved no clinical time, but the staff are told it happened
  const clockNote = byId("clock-note");
  clockNote.hidden = !(body.wall_steps > 0);
  if (body.wall_steps > 0) {
    const step = Math.round(body.last_wall_step_s ?? 0);
    clockNote.textContent = `The gateway's wall clock was stepped by ${step > 0 ? "+" : ""}${step} s (A7): `
      + "clinical time did not move; tell the engineer on duty.";
  }
}

let ticking = false; // a clock read in flight: the next tick does not ask again

async function tickClock() {
  if (!session.token || ticking) return;
  ticking = true;
  try {
    const before = view.nowIso;
    const clock = await api("GET", "/clock").catch(() => null);
    if (clock?.status === 200) setClock(clock.body);
    if (view.nowIso !== before) render();
    if (!may("read")) await refresh(); // no live events for this role: look again
  } finally {
    ticking = false;
  }
}

// ---------------------------------------------------------------- the room

function render() {
  // a control re-drawn keeps the focus (tiles move, a detail's buttons are made again)
  const focused = document.activeElement?.dataset?.key;
  alarmsNow = roomAlarms();
  renderOverview(alarmsNow);
  renderDetail();
  if (focused && document.activeElement?.dataset?.key !== focused) {
    document.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
  }
  showAge();
  sound();
}

// ---------------------------------------------------------------- alarm signals (A8)

// The flash periods of signals.js, for the style sheet (page.css reads them).
function setFlashRates() {
  for (const priority of Object.keys(FLASH)) {
    const period = flashPeriodS(priority);
    if (period !== null) document.documentElement.style.setProperty(`--flash-${priority}-s`, `${period.toFixed(3)}s`);
  }
}

// On every tick: what sounds now, and the mark that says whether sound is on.
function sound() {
  if (!session.token) return;
  const alarms = [...alarmsNow.values()].flat();
  const now = performance.now();
  if (silence && silenceLeftMs(silence, now) === 0) silence = null;
  sounder.update(audible(alarms, silence, now));
  showSound(now);
}

function showSound(now = performance.now()) {
  const state = byId("sound-state");
  const allow = byId("allow-sound");
  const end = byId("end-silence");
  const left = silenceLeftMs(silence, now);
  let text;
  let off = true;
  if (sounder.state === "unavailable") {
    text = "Sound not available in this browser: watch the screen";
  } else if (sounder.state === "locked") {
    text = "Sound off: the browser has not allowed sound on this page";
  } else if (left > 0) {
    text = `Sound paused: ${countdown(left)} left`;
  } else {
    text = "Sound on";
    off = false;
  }
  const icon = off ? "⚠ " : "♪ ";
  if (state.dataset.shown !== text) {
    state.dataset.shown = text;
    state.replaceChildren(h("span", { class: "icon", "aria-hidden": "true", text: icon }), text);
  }
  state.classList.toggle("off", off);
  allow.hidden = sounder.state !== "locked";
  end.hidden = left === 0;
}

function silenceSound() {
  silence = silenceFrom(performance.now());
  sound();
}

function endSilence() {
  silence = null;
  sound();
}

// ---------------------------------------------------------------- wiring

function wire() {
  hooks.render = render;
  hooks.refresh = refresh;
  hooks.signOut = signOut;
  hooks.setClock = setClock;
  setFlashRates();
  wireDialogs();
  byId("sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    sounder.unlock(); // the sign-in click is the gesture a browser asks before any sound
    const name = byId("user-name").value.trim();
    const token = byId("token").value.trim();
    if (name) passwordSignIn(name, byId("password").value);
    else if (token) signIn(token);
    else showSignIn("Type your user name and password, or an access token.");
  });
  byId("sign-out").addEventListener("click", () => {
    endSession();
    signOut("");
  });
  byId("allow-sound").addEventListener("click", () => {
    sounder.unlock();
    setTimeout(sound, 0);
  });
  byId("silence").addEventListener("click", silenceSound);
  byId("end-silence").addEventListener("click", endSilence);
  byId("close-detail").addEventListener("click", () => closeDetail());
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && view.chosen !== null && !document.querySelector("dialog[open]")) closeDetail();
  });
  setInterval(() => {
    watchStream();
    showAge();
    tickLinks();
  }, 1000);
  setInterval(sound, SOUND_TICK_MS);
  setInterval(tickClock, 2000);
  setInterval(() => {
    if (session.token) refresh();
  }, 15000);
  const kept = sessionStorage.getItem(TOKEN_KEY);
  if (kept) signIn(kept);
  else showSignIn("");
}

wire();

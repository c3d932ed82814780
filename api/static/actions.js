// What a nurse or a clinician does from a pump's detail: the dialogs, the requests, and the
// outcome shown in the region afterwards (interfaces.md, section 4 and its extensions).

import { api, freshClock, isoMinutesBefore, problem } from "./api.js";
import { byId, h } from "./dom.js";
import { clockTime, ml, rate, words } from "./format.js";
import { earlierBags } from "./rules.js";
import { CONFIG, hooks, notices, view } from "./state.js";

// CTCAE v5 "infusion related reaction", in a short phrase each.
const GRADES = [
  [1, "Mild, transient; no interruption or intervention needed"],
  [2, "Interruption needed; responds promptly to treatment"],
  [3, "Prolonged or recurring after improvement; hospital care needed"],
  [4, "Life-threatening; urgent intervention needed"],
];

export function note(text) {
  byId("notice").textContent = text;
}

// `infusionId`: the infusion the outcome is about, when the answer names it (a new plan: the
// page may not have read it yet, and the notice must not be taken for another infusion's)
export function setNotice(pumpId, kind, text, infusionId = view.infusions.get(pumpId)?.id) {
  notices.set(pumpId, { kind, text, after: view.loadStarts, infusionId });
  hooks.render();
}

// An action's outcome: the region's notice, the state read again, and the focus on the notice
// (the re-rendered buttons would otherwise leave it on the page's body).
export async function settle(pumpId, kind, text, infusionId = undefined) {
  if (infusionId === undefined) setNotice(pumpId, kind, text);
  else setNotice(pumpId, kind, text, infusionId);
  await hooks.refresh();
  focusNotice(pumpId);
}

export function focusNotice(pumpId) {
  const section = [...document.querySelectorAll("section.pump")].find((el) => el.dataset.pump === pumpId);
  section?.querySelector(".notice-slot [tabindex]")?.focus();
}

export async function post(pumpId, path, body, done) {
  const answer = await api("POST", path, body);
  if (answer.status >= 200 && answer.status < 300) await settle(pumpId, "ok", typeof done === "function" ? done(answer.body) : done);
  else await settle(pumpId, "error", problem(answer));
  return answer;
}

export function resolve(pumpId) {
  const infusion = view.infusions.get(pumpId);
  post(pumpId, `/infusions/${infusion.id}/reactions/${infusion.reaction.id}/resolve`, undefined, "Symptoms resolved recorded (I4)");
}

export function clearAlarm(pumpId, infusionId, kind) {
  post(pumpId, `/infusions/${infusionId}/alarms/${encodeURIComponent(kind)}/clear`, undefined, `Alarm ${words(kind)} cleared (A1)`);
}

export function choices(container, name) {
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

export function signChoices(container, name) {
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

export function openReaction(pumpId) {
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
  await hooks.refresh();
  focusNotice(pumpId);
}

export function openReassess(pumpId) {
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

export function openResume(pumpId) {
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

export function openStop(pumpId) {
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

export function openBag(pumpId) {
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

export function openCancel(pumpId) {
  open("cancel-dialog", pumpId, `Cancel infusion on ${pumpId}`).querySelector("#cancel-reason").focus();
}

function submitCancel(event) {
  return submitReason(event, "cancel", "cancelling", (infusion) => `Infusion ${infusion.infusion_number} cancelled`);
}

export function openPatient() {
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

export function openInfusion(pumpId) {
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

export function openStart(pumpId) {
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
      await hooks.refresh();
      const now = view.infusions.get(pumpId);
      if (now?.id === infusion.id) showPremedication(now);
    }
    return;
  }
  dialog.close();
  await settle(pumpId, "ok", `Started at ${rate(answer.body.step_rate_ml_h)}`);
}

// A8: an alarm acknowledged: its sound stops on every page; it stays shown until cleared (A1).
export function acknowledge(pumpId, infusionId, kind) {
  return post(
    pumpId,
    `/infusions/${infusionId}/alarms/${encodeURIComponent(kind)}/acknowledge`,
    undefined,
    `Alarm ${words(kind)} acknowledged (A8): its sound is off; it stays shown until it is cleared`,
  );
}

export function wireDialogs() {
  choices(byId("reaction-grades"), "reaction");
  signChoices(byId("reaction-signs"), "reaction");
  choices(byId("reassess-grades"), "reassess");
  signChoices(byId("reassess-signs"), "reassess");
  byId("new-patient").addEventListener("click", openPatient);
  byId("reaction-form").addEventListener("submit", submitReaction);
  byId("reassess-form").addEventListener("submit", submitReassess);
  byId("resume-form").addEventListener("submit", submitResume);
  byId("resume-reaction").addEventListener("click", reactionInstead);
  byId("stop-form").addEventListener("submit", submitStop);
  byId("patient-form").addEventListener("submit", submitPatient);
  byId("infusion-form").addEventListener("submit", submitInfusion);
  byId("start-form").addEventListener("submit", submitStart);
  byId("bag-form").addEventListener("submit", submitBag);
  byId("cancel-form").addEventListener("submit", submitCancel);
  for (const button of document.querySelectorAll("dialog [data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
}

// The REST API (docs/interfaces.md, section 3): every request carries the token, is given up
// after 15 s, and a 401 brings the sign-in back.

import { CONFIG, hooks, session, view } from "./state.js";

export class Unauthorized extends Error {}

// Well above the service's own bound on a reaction's answer (about 4.5 s, A3): past this the
// request is given up, for a request lost in the network would otherwise hang the page.
export const API_TIMEOUT_MS = 15000;

export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${session.token}`, Accept: "application/json" };
  const init = { method, headers, signal: AbortSignal.timeout(API_TIMEOUT_MS) };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(CONFIG.api + path, init);
  } catch (error) {
    if (error.name === "TimeoutError") {
      const detail = `no answer from the service within ${API_TIMEOUT_MS / 1000} s; it may or may not have acted`;
      return { status: 0, timedOut: true, body: { detail } };
    }
    return { status: 0, body: { detail: `the service cannot be reached (${error.message})` } };
  }
  if (response.status === 401) {
    hooks.signOut("The service did not accept the token: sign in again.");
    throw new Unauthorized();
  }
  let data = null;
  try {
    data = await response.json();
  } catch (error) {
    // A success whose body never came whole (given up at the timeout, the connection cut) is
    // not a success with nothing in it: the page must not take "nothing" for the service's
    // word. A refusal's body is only its words; its status stands.
    if (response.ok && response.status !== 204) {
      if (error.name === "TimeoutError" || error.name === "AbortError") {
        const detail = `the service's answer did not come whole within ${API_TIMEOUT_MS / 1000} s; it may or may not have acted`;
        return { status: 0, timedOut: true, body: { detail } };
      }
      return { status: 0, body: { detail: `the service's answer could not be read (${error.message})` } };
    }
    data = null;
  }
  return { status: response.status, body: data };
}

// The words of a refusal or an invalid request, naming the rule or the field.
export function problem(answer) {
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

// The service's clinical now, read again just before a time the nurse typed ("N minutes before
// now") is turned into an instant: on a scaled clock the last poll may be minutes old.
export async function freshClock() {
  const clock = await api("GET", "/clock");
  if (clock.status === 200) hooks.setClock(clock.body);
}

export function isoMinutesBefore(minutes) {
  return new Date(view.now - minutes * 60000).toISOString();
}

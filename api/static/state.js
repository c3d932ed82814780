// The page's state, in one place: who is signed in, what the service last said, the outcomes
// shown, and the hooks the modules call one another through (so that no module imports the
// entry module). Everything here is read from the API; nothing is the page's own opinion.

import { byId } from "./dom.js";

// The rules' facts written into the page by the service (api/page.py, page_config).
export const CONFIG = JSON.parse(byId("pumpctl-config").textContent);

export const session = { token: null, name: null, role: null };

export const view = {
  pumps: new Map(), // pump id -> GET /pumps entry (with receivedAt)
  infusions: new Map(), // pump id -> the infusion shown for it
  reactionsAt: new Map(), // infusion id -> {count, marks: [{at, grade}]}
  now: null, // clinical now (ms since the epoch), from GET /clock
  nowIso: null,
  mode: null,
  receivedAt: null, // performance.now() of the last data from the service
  connected: false,
  attempt: null, // AbortController of the live events' current connection
  heardAt: null, // performance.now() of the current connection's start or last bytes
  loadedFrom: 0,
  loadStarts: 0, // loads begun; loadedFrom: the latest one shown
  chosen: null, // the pump whose detail is open (null: the room only)
  seen: new Map(), // alarm key -> {at: performance.now(), clinical: ms} when this page first saw it
};

// pump id -> {kind: "ok" | "alarm" | "error" | "info", text, after, infusionId}
export const notices = new Map();

// Set by the entry module (page.js).
export const hooks = {
  render: () => {},
  refresh: async () => {},
  signOut: () => {},
  setClock: () => {},
};

export function may(kind) {
  const roles = { read: CONFIG.readers, nurse: CONFIG.nurse_roles, clinician: CONFIG.clinician_roles }[kind];
  return roles.includes(session.role);
}

// Words and figures as the page shows them (pure: no DOM, no clock). Clinical times are the
// service's (GET /api/v1/clock), passed in; never the browser's.

export function duration(minutes) {
  if (minutes === null || minutes === undefined || Number.isNaN(minutes)) return "–";
  const m = Math.max(0, Math.round(minutes));
  if (m < 1) return "under a minute";
  if (m < 60) return `${m} min`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

// The clock time of a clinical ISO instant as the service wrote it (its own offset).
export function clockTime(iso) {
  return iso ? iso.slice(11, 16) : "–";
}

// Minutes from clinical now (ms since the epoch) until a clinical ISO instant; null if unknown.
export function minutesUntil(iso, nowMs) {
  if (!iso || nowMs === null || nowMs === undefined) return null;
  return (Date.parse(iso) - nowMs) / 60000;
}

export function rate(value) {
  return `${Number(value ?? 0).toLocaleString("en", { maximumFractionDigits: 1 })} ml/h`;
}

export function ml(value) {
  return `${Number(value ?? 0).toLocaleString("en", { maximumFractionDigits: 1 })} ml`;
}

// "air_in_line" -> "Air in line"
export function words(name) {
  const text = String(name).replaceAll("_", " ");
  return text.charAt(0).toUpperCase() + text.slice(1);
}

// A countdown of milliseconds as M:SS, rounded up (a pause of 2 min shows 2:00 first).
export function countdown(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  return `${Math.floor(total / 60)}:${String(total % 60).padStart(2, "0")}`;
}

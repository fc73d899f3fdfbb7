// Fills the "State" column of the landing page from /status.json (ctlgate's
// /status, proxied by the edge). Tolerant of the shape of the answer:
//   {"services": {"hub": {"state": "up"}, ...}}  or  {"hub": "up", ...}
//   or a list [{"name": "hub", "state": "up"}, ...]; "status", "healthy" and
//   "up" (booleans) are understood as well. Without an answer every state
//   stays "unknown" and the page keeps working.
"use strict";

function normalise(value) {
  if (value === true) return "up";
  if (value === false) return "down";
  if (value === null || value === undefined) return "unknown";
  if (typeof value === "object") {
    for (const key of ["state", "status", "health", "healthy", "up", "ok"]) {
      if (key in value) return normalise(value[key]);
    }
    return "unknown";
  }
  const text = String(value).toLowerCase();
  if (["up", "ok", "healthy", "running", "serving", "true", "pass"].includes(text)) return "up";
  if (["down", "error", "unhealthy", "stopped", "unreachable", "false", "fail"].includes(text)) return "down";
  if (["degraded", "starting", "warn", "warning"].includes(text)) return "degraded";
  return text.slice(0, 24) || "unknown";
}

function entries(data) {
  let services = data && typeof data === "object" && "services" in data ? data.services : data;
  const map = {};
  if (Array.isArray(services)) {
    for (const item of services) {
      if (item && typeof item === "object") {
        const name = item.name || item.id || item.service;
        if (name) map[String(name).toLowerCase()] = item;
      }
    }
  } else if (services && typeof services === "object") {
    for (const [name, value] of Object.entries(services)) map[name.toLowerCase()] = value;
  }
  return map;
}

function show(map, note) {
  for (const row of document.querySelectorAll("tr[data-keys]")) {
    const cell = row.querySelector(".state");
    let state = "unknown";
    for (const key of row.dataset.keys.split(" ")) {
      if (key in map) { state = normalise(map[key]); break; }
    }
    cell.textContent = state;
    cell.dataset.state = ["up", "down", "degraded"].includes(state) ? state : "unknown";
  }
  const noteElement = document.getElementById("status-note");
  if (noteElement) noteElement.textContent = note;
}

async function refresh() {
  try {
    const response = await fetch("/status.json", { cache: "no-store", credentials: "omit" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    show(entries(await response.json()), "States updated " + new Date().toLocaleTimeString() + ".");
  } catch (error) {
    show({}, "Service states are unavailable right now (" + error.message + "); the links still work.");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  refresh();
  setInterval(refresh, 15000);
});

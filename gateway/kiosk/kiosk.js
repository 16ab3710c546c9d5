// The reference kiosk app: one citizen visit against the edge-gateway API (docs/api.md).
// Plain JavaScript, no build step, no framework, nothing loaded from elsewhere.
"use strict";

const FRIENDLY = {
  "device-unavailable": "This part of the kiosk is not working right now. Please ask a member of staff.",
  "device-not-configured": "This kiosk cannot do that. Please ask a member of staff.",
  "user-action-needed": "We did not see your card. Please place it on the reader and try again.",
  "deadline-expired": "That took too long. Please try again.",
  "device-timeout": "The device did not answer. Please try again.",
  "queue-full": "The kiosk is busy. Please wait a moment and try again.",
  "sessions-full": "All kiosks are busy. Please wait a moment and try again.",
  "session-not-found": "Your session has ended. Please start again.",
  face_mismatch: "The photo check did not match. Try again, or choose an SMS code.",
  mismatch: "That code is not right. Please check the SMS and try again.",
  bad_code_format: "Please type all the digits of the code.",
  code_reused: "That code was already used. Please ask for a new one.",
  challenge_expired: "That code has expired. Please ask for a new one.",
  offline: "The service centre cannot be reached right now. Please ask a member of staff.",
  cloud_timeout: "The service centre did not answer in time. Please try again.",
  throttled: "Too many tries. Please wait a little and try again.",
  policy_denied: "We need two checks before we can do that.",
};

const state = { session: null, token: null, station: null, stations: [], events: null, idleTimer: null, txId: null };

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.kind = String(problem.type || "").split("/").pop();
  }
  friendly() {
    const p = this.problem;
    if (p.reason && FRIENDLY[p.reason]) return FRIENDLY[p.reason];
    if (FRIENDLY[this.kind]) return FRIENDLY[this.kind];
    if (p.code && FRIENDLY[p.code]) return FRIENDLY[p.code];
    return "Something went wrong. Please ask a member of staff.";
  }
}

async function api(method, path, body) {
  const headers = {};
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await resp.text();
  const data = text ? JSON.parse(text) : {};
  if (!resp.ok) throw new ApiError(resp.status, data);
  return data;
}

function say(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = kind || "";
}

function show(name) {
  for (const screen of document.querySelectorAll("section[data-screen]")) {
    screen.hidden = screen.dataset.screen !== name;
  }
  document.body.dataset.view = name;  // not data-screen: that marks the sections
  const first = document.querySelector(`[data-screen="${name}"] button, [data-screen="${name}"] input`);
  if (first) first.focus();
}

async function busy(button, work) {
  const buttons = document.querySelectorAll("main button");
  buttons.forEach((b) => (b.disabled = true));
  try {
    await work();
  } catch (err) {
    if (err instanceof ApiError) {
      say(err.friendly(), "bad");
      if (err.kind === "session-not-found") finish("Your session has ended.");
    } else {
      say("The kiosk lost contact with its gateway. Please ask a member of staff.", "bad");
    }
  } finally {
    buttons.forEach((b) => (b.disabled = false));
  }
}

// --- welcome ----------------------------------------------------------------------------

async function loadStations() {
  const select = $("station");
  select.textContent = "";
  try {
    const data = await api("GET", "/v1/stations");
    state.stations = data.stations.map((s) => ({ name: s.name, label: s.label || s.name }));
  } catch (err) {
    state.stations = [{ name: "default", label: "This kiosk" }];  // a gateway without stations
  }
  for (const s of state.stations) {
    const option = document.createElement("option");
    option.value = s.name;
    option.textContent = s.label;
    select.append(option);
  }
  select.parentElement.querySelector('label[for="station"]').hidden = state.stations.length < 2;
  select.hidden = state.stations.length < 2;
}

async function loadDevices() {
  // This station's devices (a pool shows as one printer: online while any member is), else the node's.
  const list = $("devices");
  let rows;
  try {
    const data = await api("GET", "/v1/stations");
    const name = $("station").value || state.station;
    const station = data.stations.find((s) => s.name === name) || data.stations[0];
    rows = Object.entries(station.devices).map(([kind, d]) => ({ kind, state: d.state }));
  } catch (err) {
    try {
      rows = (await api("GET", "/v1/devices")).devices;
    } catch (err2) {
      rows = [];
    }
  }
  list.textContent = "";
  for (const d of rows) {
    const item = document.createElement("li");
    item.textContent = `${d.kind}: ${d.state}`;
    item.className = d.state === "online" || d.state === "busy" ? "online" : "bad";
    list.append(item);
  }
}

async function start() {
  state.station = $("station").value || "default";
  const body = { kind: "citizen" };
  if (state.stations.length > 1) body.station = state.station;
  const created = await api("POST", "/v1/sessions", body);
  state.session = created.id;
  state.token = created.token;
  $("session-state").textContent = "Session open";
  $("cancel").hidden = false;
  $("station-label").textContent = state.stations.find((s) => s.name === state.station)?.label || "";
  await openEvents();
  say("");
  show("idcard");
}

// --- events (EventSource with a single-use ticket: it cannot send Authorization) ---------

async function openEvents() {
  if (!state.session) return;
  const ticket = await api("POST", `/v1/sessions/${state.session}/stream-ticket`);
  const events = new EventSource(ticket.url);
  state.events = events;
  const on = (type, handler) => events.addEventListener(type, (e) => handler(JSON.parse(e.data)));
  on("queue_position", (e) => {
    const wait = e.estimated_wait_s != null ? `, about ${Math.max(1, Math.round(e.estimated_wait_s))} s` : "";
    $("queue").textContent = e.ahead > 0 ? `You are number ${e.ahead + 1} in the queue${wait}.` : `You are next${wait}.`;
  });
  on("job_progress", (e) => {
    if (e.state === "printing") {
      $("queue").textContent = "Printing now...";
    } else if (e.ahead != null) {
      const wait = e.estimated_wait_s != null ? `, about ${Math.max(1, Math.round(e.estimated_wait_s))} s` : "";
      $("queue").textContent = e.ahead > 0 ? `Waiting for the printer: ${e.ahead} ahead of you${wait}.` : `You are next${wait}.`;
    }
  });
  on("job_done", () => receiptPrinted());
  on("job_failed", () => say("The receipt could not be printed. Please ask a member of staff.", "bad"));
  on("idle_warning", (e) => idleWarning(e.ends_in_s));
  on("session_ended", (e) => finish(e.reason === "idle" ? "Your session ended because nothing happened for a while." : "Your session has ended."));
  events.onerror = () => {
    // A ticket works once: reconnect with a fresh one while the session lasts.
    events.close();
    if (state.events === events && state.session) setTimeout(() => openEvents().catch(() => {}), 1000);
  };
}

function idleWarning(seconds) {
  let left = Math.round(seconds);
  $("idle-count").textContent = left;
  $("idle").hidden = false;
  $("idle-stay").focus();
  clearInterval(state.idleTimer);
  state.idleTimer = setInterval(() => {
    left = Math.max(0, left - 1);
    $("idle-count").textContent = left;
  }, 1000);
}

async function stay() {
  $("idle").hidden = true;
  clearInterval(state.idleTimer);
  if (state.session) await api("GET", `/v1/sessions/${state.session}`);  // any request resets the idle timer
}

// --- factors ----------------------------------------------------------------------------

async function readCard() {
  say("Reading your card...");
  await api("POST", `/v1/sessions/${state.session}/factors/idcard`);
  say("Card read.", "ok");
  show("factor");
}

async function face() {
  say("Please look at the camera...");
  await api("POST", `/v1/sessions/${state.session}/factors/face`);
  say("Thank you, that is you.", "ok");
  show("service");
}

async function sms() {
  say("Sending a code to your phone...");
  await api("POST", `/v1/sessions/${state.session}/factors/otp/challenge`);
  say("We sent you a code by SMS.", "ok");
  $("otp-code").value = "";
  show("otp");
}

async function otp(event) {
  event.preventDefault();
  await api("POST", `/v1/sessions/${state.session}/factors/otp`, { code: $("otp-code").value.trim() });
  say("Code accepted.", "ok");
  show("service");
}

// --- service, receipt, rating -----------------------------------------------------------

async function chooseService(button) {
  const service = button.dataset.service;
  say("Sending your request...");
  const tx = await api("POST", `/v1/sessions/${state.session}/transactions`, { service, data: {} });
  say(`Request sent (reference ${tx.id.slice(0, 8)}).`, "ok");
  state.txId = tx.id;
  $("receipt").textContent = "";
  $("to-rating").hidden = true;
  $("receipt-title").textContent = "Printing your receipt";
  show("receipt");
  await api("POST", `/v1/sessions/${state.session}/print`, {
    lines: ["Community service centre", button.textContent, `Request ${tx.id.slice(0, 8)}`, new Date().toLocaleString()],
    qr: tx.id,
    cut: true,
  });
}

async function receiptPrinted() {
  $("receipt-title").textContent = "Please take your receipt";
  $("queue").textContent = "";
  try {
    // Several printers (a pool) print for several kiosks: show this session's receipt only,
    // found by the QR it carries (the request's id), never another citizen's.
    const data = await api("GET", "/kiosk/sim/receipts");
    const mine = data.receipts.find((r) => r.qr === state.txId);
    $("receipt").textContent = mine
      ? mine.lines.map((l) => l.text).join("\n") + `\n[QR ${mine.qr.slice(0, 8)}...]`
      : "(printed)";
  } catch (err) {
    $("receipt").textContent = "(printed)";
  }
  $("to-rating").hidden = false;
  $("to-rating").focus();
}

async function rate(button) {
  const rating = Number(button.dataset.rating);
  try {
    await api("POST", `/v1/sessions/${state.session}/feedback`, { rating, complaint: rating <= 2 });
    say("Thank you for your rating.", "ok");
  } catch (err) {
    say("Thank you. (Your rating could not be recorded.)", "ok");
  }
  await finish();
}

async function finish(reason) {
  const session = state.session;
  state.session = null;
  if (state.events) state.events.close();
  state.events = null;
  clearInterval(state.idleTimer);
  $("idle").hidden = true;
  if (session && state.token) {
    try {
      await api("DELETE", `/v1/sessions/${session}`);
    } catch (err) {
      // already ended
    }
  }
  state.token = null;
  $("session-state").textContent = "No session";
  $("cancel").hidden = true;
  $("handoff").textContent = (reason ? reason + " " : "") + "Please take your card and your receipt. A member of staff will help you with anything else.";
  show("done");
}

function restart() {
  say("");
  show("welcome");
  loadDevices();
}

function bind() {
  $("station").addEventListener("change", loadDevices);
  $("bigger").addEventListener("click", () => {
    const on = document.body.classList.toggle("large");
    $("bigger").setAttribute("aria-pressed", String(on));
  });
  $("start").addEventListener("click", (e) => busy(e.target, start));
  $("read-card").addEventListener("click", (e) => busy(e.target, readCard));
  $("choose-face").addEventListener("click", (e) => busy(e.target, face));
  $("choose-sms").addEventListener("click", (e) => busy(e.target, sms));
  $("otp-form").addEventListener("submit", (e) => busy(e.target, () => otp(e)));
  for (const b of document.querySelectorAll(".service")) b.addEventListener("click", () => busy(b, () => chooseService(b)));
  $("to-rating").addEventListener("click", () => show("rating"));
  for (const b of document.querySelectorAll("[data-rating]")) b.addEventListener("click", () => busy(b, () => rate(b)));
  $("skip-rating").addEventListener("click", () => busy(null, () => finish()));
  $("again").addEventListener("click", restart);
  $("idle-stay").addEventListener("click", () => busy(null, stay));
  $("cancel").addEventListener("click", () => busy(null, () => finish("You ended the session.")));
}

document.addEventListener("DOMContentLoaded", async () => {
  bind();
  show("welcome");
  await loadStations();
  await loadDevices();
});

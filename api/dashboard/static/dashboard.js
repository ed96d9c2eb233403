// The dashboard page: views chosen by the URL's query string (?view=jobs&status=Failed...), data
// from /dashboard/api, live updates from the /dashboard/ws WebSocket (reconnecting), charts by
// Chart.js (vendored). No build step: plain browser JavaScript.
"use strict";

const API = "/dashboard/api";
const FILTERS = ["status", "backend", "program", "instance", "tag", "session_id", "created_after", "created_before", "id", "sort"];
const STATES = ["Queued", "Running", "Completed", "Failed", "Cancelled"];
const COLOURS = { Queued: "#a8a8a8", Running: "#0f62fe", Completed: "#24a148", Failed: "#da1e28", Cancelled: "#6f6f6f" };
const PAGE = 50;
const charts = {};
let refreshTimer = null;

const $ = (sel) => document.querySelector(sel);
const params = () => new URLSearchParams(location.search);
const apiKey = () => sessionStorage.getItem("qrs-dashboard-key") || "";

function text(value) {
  return value === null || value === undefined ? "" : String(value);
}

function cell(row, value, cls) {
  const td = document.createElement("td");
  if (value instanceof Node) td.appendChild(value); else td.textContent = text(value);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function num(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(digits).replace(/\.?0+$/, "");
}

async function api(path) {
  const headers = apiKey() ? { Authorization: "apikey " + apiKey() } : {};
  const response = await fetch(API + path, { headers });
  const body = await response.json();
  if (!response.ok) {
    const message = (body.errors && body.errors[0] && body.errors[0].message) || response.statusText;
    throw new Error(message);
  }
  return body;
}

function showError(error) {
  const box = $("#error");
  box.hidden = !error;
  box.textContent = error ? String(error.message || error) : "";
}

function chart(id, config) {
  if (typeof Chart === "undefined") return;
  if (charts[id]) {
    charts[id].data = config.data;
    charts[id].update("none");
    return;
  }
  config.options = Object.assign({ animation: false, responsive: true, maintainAspectRatio: false }, config.options || {});
  charts[id] = new Chart(document.getElementById(id), config);
}

function card(container, label, value) {
  const div = document.createElement("div");
  div.className = "card";
  div.innerHTML = "<b></b><span></span>";
  div.querySelector("b").textContent = text(value);
  div.querySelector("span").textContent = label;
  container.appendChild(div);
}

function instanceQuery() {
  const instance = params().get("instance");
  return instance ? "instance=" + encodeURIComponent(instance) : "";
}

async function renderOverview() {
  const q = instanceQuery();
  const [overview, trend, pct, backends] = await Promise.all([
    api("/overview?" + q), api("/trends?unit=hour&count=24&" + q), api("/percentiles?days=1&" + q), api("/backends?days=1&" + q),
  ]);
  const cards = $("#cards");
  cards.replaceChildren();
  for (const state of STATES) card(cards, state, overview.jobs[state]);
  card(cards, "created this hour", overview.this_hour.created);
  card(cards, "finished / min", overview.throughput_per_minute);
  card(cards, "workers live / busy", overview.workers.live + " / " + overview.workers.busy);
  for (const [device, counts] of Object.entries(overview.workers.by_device)) card(cards, device + " workers busy", counts.busy + " / " + counts.live);
  chart("chart-trend", {
    type: "bar",
    data: {
      labels: trend.buckets.map((b) => b.start.slice(11, 16)),
      datasets: ["Completed", "Failed", "Cancelled"].map((s) => ({ label: s, data: trend.buckets.map((b) => b[s]), backgroundColor: COLOURS[s] }))
        .concat([{ label: "created", type: "line", data: trend.buckets.map((b) => b.created), borderColor: "#8a3ffc" }]),
    },
    options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } },
  });
  chart("chart-states", {
    type: "doughnut",
    data: { labels: STATES, datasets: [{ data: STATES.map((s) => overview.jobs[s]), backgroundColor: STATES.map((s) => COLOURS[s]) }] },
  });
  const names = ["p50", "p90", "p95", "p99"];
  chart("chart-pct", {
    type: "bar",
    data: {
      labels: names,
      datasets: [
        { label: "wait", data: names.map((n) => pct.wait_seconds[n]), backgroundColor: "#a56eff" },
        { label: "run", data: names.map((n) => pct.run_seconds[n]), backgroundColor: "#0f62fe" },
      ],
    },
  });
  chart("chart-backends", {
    type: "bar",
    data: { labels: backends.backends.map((b) => b.backend), datasets: [{ label: "busy s", data: backends.backends.map((b) => b.busy_seconds), backgroundColor: "#009d9a" }] },
  });
  const body = $("#backends-table tbody");
  body.replaceChildren();
  for (const b of backends.backends) {
    const tr = document.createElement("tr");
    [b.backend, b.created, b.ended.Completed, b.ended.Failed, b.ended.Cancelled,
      b.success_rate === null ? "–" : Math.round(b.success_rate * 100) + " %", num(b.mean_wait_seconds), num(b.mean_run_seconds),
      num(b.run_seconds.p95), Math.round(b.utilisation * 1000) / 10 + " %"].forEach((v) => cell(tr, v));
    body.appendChild(tr);
  }
}

async function renderQueue() {
  const queue = await api("/queue?" + instanceQuery());
  const cards = $("#queue-cards");
  cards.replaceChildren();
  const s = queue.summary;
  card(cards, "queued", s.queued);
  card(cards, "running", s.running);
  card(cards, "workers", s.workers);
  card(cards, "estimated wait s (new job)", num(s.estimated_wait_seconds, 1));
  card(cards, "oldest queued job waiting s", num(s.oldest_queued_age_seconds, 1));
  card(cards, "longest / shortest wait", (s.longest_wait || "–") + " / " + (s.shortest_wait || "–"));
  const body = $("#queue-table tbody");
  body.replaceChildren();
  for (const b of queue.backends) {
    const tr = document.createElement("tr");
    [b.backend, b.queued, b.running, num(b.mean_run_seconds), num(b.estimated_wait_seconds, 1), num(b.estimated_turnaround_seconds, 1)].forEach((v) => cell(tr, v));
    body.appendChild(tr);
  }
}

async function renderWorkers() {
  const data = await api("/workers");
  const body = $("#workers-table tbody");
  body.replaceChildren();
  for (const w of data.workers) {
    const tr = document.createElement("tr");
    let job = w.current_job || "idle";
    if (w.current_job && w.current_job !== "(other instance)") {
      job = document.createElement("a");
      job.href = "?view=job&id=" + encodeURIComponent(w.current_job);
      job.textContent = w.current_job;
    }
    [w.id, w.device + (w.visible_devices ? " " + w.visible_devices : ""), w.host, job, w.jobs_done, num(w.busy_seconds_today), w.last_heartbeat].forEach((v) => cell(tr, v));
    body.appendChild(tr);
  }
  chart("chart-workers", {
    type: "bar",
    data: { labels: data.workers.map((w) => w.id), datasets: [{ label: "busy s", data: data.workers.map((w) => w.busy_seconds_today || 0), backgroundColor: "#1192e8" }] },
  });
}

function toIso(local) {
  // datetime-local values have no zone: they are the browser's local time.
  return local ? new Date(local).toISOString() : "";
}

async function renderJobs() {
  const p = params();
  const form = $("#filters");
  for (const name of FILTERS) if (form.elements[name]) form.elements[name].value = p.get(name) || (name === "sort" ? "desc" : "");
  const query = new URLSearchParams();
  for (const name of FILTERS) {
    let value = p.get(name);
    if (!value) continue;
    if (name === "created_after" || name === "created_before") value = toIso(value);
    query.set(name, value);
  }
  query.set("limit", PAGE);
  query.set("offset", p.get("offset") || "0");
  const data = await api("/jobs?" + query);
  $("#jobs-count").textContent = data.count + " jobs";
  const body = $("#jobs-table tbody");
  body.replaceChildren();
  for (const job of data.jobs) body.appendChild(jobRow(job));
  $("#prev").disabled = data.offset === 0;
  $("#next").disabled = data.offset + PAGE >= data.count;
}

function sessionJobsLink(instance, sessionId) {
  // A session's (or batch's) jobs: the table filtered by it, within the session's instance.
  const link = document.createElement("a");
  link.href = "?" + new URLSearchParams({ view: "jobs", instance, session_id: sessionId, sort: "asc" });
  link.textContent = sessionId;
  return link;
}

async function renderSessions() {
  const query = new URLSearchParams(instanceQuery());
  query.set("limit", PAGE);
  query.set("offset", params().get("offset") || "0");
  const data = await api("/sessions?" + query);
  $("#sessions-count").textContent = data.count + " sessions and batches";
  const body = $("#sessions-table tbody");
  body.replaceChildren();
  for (const s of data.sessions) {
    const tr = document.createElement("tr");
    tr.dataset.session = s.id;
    cell(tr, sessionJobsLink(s.instance, s.id));
    [s.mode, s.state, s.backend, s.instance, s.created, s.closed].forEach((v) => cell(tr, v));
    for (const state of STATES) cell(tr, s.jobs[state]);
    body.appendChild(tr);
  }
  $("#sessions-prev").disabled = data.offset === 0;
  $("#sessions-next").disabled = data.offset + PAGE >= data.count;
}

function jobRow(job) {
  const tr = document.createElement("tr");
  tr.dataset.job = job.id;
  const link = document.createElement("a");
  link.href = "?view=job&id=" + encodeURIComponent(job.id);
  link.textContent = job.id;
  cell(tr, link);
  cell(tr, job.status, "status status-" + job.status);
  [job.backend, job.program, job.instance].forEach((v) => cell(tr, v));
  cell(tr, job.session_id ? sessionJobsLink(job.instance, job.session_id) : "");
  [job.created, job.worker, job.reason].forEach((v) => cell(tr, v));
  return tr;
}

async function renderJob() {
  const id = params().get("id");
  const job = await api("/jobs/" + encodeURIComponent(id));
  $("#job-title").textContent = "Job " + job.id;
  const dl = $("#job-fields");
  dl.replaceChildren();
  const fields = [["state", job.status], ["reason", job.reason], ["reason code", job.reason_code], ["backend", job.backend],
    ["program", job.program], ["instance", job.instance], ["session", job.session_id], ["tags", (job.tags || []).join(", ")],
    ["created", job.created], ["running", job.running], ["finished", job.finished], ["worker", job.worker],
    ["attempts", job.attempts], ["PUBs", job.num_pubs], ["simulation seconds", job.quantum_seconds],
    ["predicted seconds", job.predicted_seconds]];
  for (const [name, value] of fields) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = text(value);
    if (name === "state") { dd.className = "status status-" + value; dd.id = "job-status"; }
    if (name === "reason") dd.id = "job-reason";
    dl.append(dt, dd);
  }
  $("#job-options").textContent = job.options ? JSON.stringify(job.options, null, 2) : "(none)";
  $("#job-logs").textContent = (job.logs || []).join("\n") || "(no log lines)";
}

const RENDER = { overview: renderOverview, queue: renderQueue, workers: renderWorkers, jobs: renderJobs, job: renderJob, sessions: renderSessions };

async function render() {
  const view = params().get("view") || "overview";
  document.querySelectorAll(".view").forEach((s) => { s.hidden = s.id !== "view-" + view; });
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === view));
  try {
    await (RENDER[view] || renderOverview)();
    showError(null);
  } catch (error) {
    showError(error);
  }
}

function scheduleRefresh(delay = 150) {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; render(); }, delay);
}

function navigate(search) {
  history.pushState(null, "", location.pathname + search);
  render();
}

function onJobEvent(job) {
  // Patch a visible row at once, then reload the view (counts, ordering, filters) shortly after.
  const row = document.querySelector(`tr[data-job="${CSS.escape(job.id)}"]`);
  if (row) {
    const status = row.querySelector("td.status");
    status.textContent = job.status;
    status.className = "status status-" + job.status;
  }
  const detail = $("#job-status");
  if (detail && params().get("id") === job.id) detail.textContent = job.status;
  scheduleRefresh();
}

let retry = 500;
function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(scheme + "//" + location.host + "/dashboard/ws");
  const badge = $("#live");
  ws.onopen = () => ws.send(JSON.stringify(apiKey() ? { key: apiKey() } : {}));
  ws.onmessage = (message) => {
    const event = JSON.parse(message.data);
    if (event.type === "hello") {
      retry = 500;
      badge.textContent = "live";
      badge.className = "live on";
      scheduleRefresh(0);  // catch up on what happened while disconnected
    } else if (event.type === "job") {
      onJobEvent(event.job);
    } else if (event.type === "error") {
      showError(new Error(event.message));
    }
  };
  ws.onclose = () => {
    badge.textContent = "reconnecting";
    badge.className = "live off";
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
  window.dashboardSocket = ws;
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a");
  if (link && link.getAttribute("href") && link.getAttribute("href").startsWith("?")) {
    event.preventDefault();
    navigate(link.getAttribute("href"));
  }
});

$("#filters").addEventListener("submit", (event) => {
  event.preventDefault();
  const query = new URLSearchParams({ view: "jobs" });
  for (const name of FILTERS) {
    const value = event.target.elements[name].value.trim();
    if (value && !(name === "sort" && value === "desc")) query.set(name, value);
  }
  navigate("?" + query);
});

function page(step) {
  const p = params();
  p.set("offset", Math.max(0, Number(p.get("offset") || 0) + step * PAGE));
  navigate("?" + p);
}
$("#prev").addEventListener("click", () => page(-1));
$("#next").addEventListener("click", () => page(1));
$("#sessions-prev").addEventListener("click", () => page(-1));
$("#sessions-next").addEventListener("click", () => page(1));

$("#key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("qrs-dashboard-key", $("#key").value);
  $("#key").value = "";
  if (window.dashboardSocket) window.dashboardSocket.close();
  render();
});

window.addEventListener("popstate", render);
setInterval(() => { if (!document.hidden) scheduleRefresh(0); }, 5000);  // workers' heartbeats, queue ages
render();
connect();

// pg_ab dashboard: reads /api/dashboard (one snapshot: tests, evaluations, alerts, health) and
// /healthz, follows /ws live, resumes after a reconnect with the last resume_token (nothing is
// missed), and draws with DOM nodes and plain SVG (no innerHTML, no library).
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const REFRESH_MS = 2000;        // the snapshot is read again at least this often
const HEALTH_MS = 5000;         // /healthz
const HISTORY_EVENTS = 30;      // stored events replayed on the first connection
const MAX_EVENTS = 200;         // events kept in the list
const STATUS_TONE = { active: "good", draft: "neutral", paused: "warn", completed: "info", rolled_back: "bad" };
const RISK_TONE = { low: "good", medium: "warn", high: "bad", critical: "bad" };
const VERDICT_TONE = { better: "good", worse: "bad", no_detectable_difference: "info", not_enough_data: "neutral" };
const METRIC_LABEL = {
  success_rate: "success rate", error_rate: "error rate", latency_ms: "latency (ms)",
  average_confidence: "confidence", entities_processed: "entities", deduplication_rate: "dedup rate",
};

const state = {
  token: null, grant: null, snapshot: null, ws: null, connected: false, resumeToken: null,
  retry: 0, seen: new Set(), riskAlerts: [], refreshTimer: null, inFlight: false, again: false, stopped: false,
};

// ---- DOM helpers ---------------------------------------------------------------------------
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") node.className = v; else if (k === "text") node.textContent = v; else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
  return node;
}
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}
function badge(text, tone, label) { return el("span", { class: `badge ${tone || "neutral"}`, "aria-label": label || null, text }); }
const $ = (id) => document.getElementById(id);

// ---- number formats ------------------------------------------------------------------------
const isNum = (x) => typeof x === "number" && Number.isFinite(x);
const pct = (x, d = 1) => (isNum(x) ? `${(x * 100).toFixed(d)}%` : "–");
const num = (x, d = 2) => (isNum(x) ? x.toFixed(d) : "–");
const signedPct = (x) => (isNum(x) ? `${x >= 0 ? "+" : "−"}${Math.abs(x * 100).toFixed(1)}%` : "–");
const pval = (p) => (!isNum(p) ? "–" : p < 1e-4 ? p.toExponential(1) : p.toFixed(4));
const when = (epochSeconds) => new Date(epochSeconds * 1000).toLocaleTimeString();

// ---- token ---------------------------------------------------------------------------------
function readToken() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("pg_ab_token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);  // keep it out of the address bar
  }
  return sessionStorage.getItem("pg_ab_token");
}
function askForToken(message) {
  state.stopped = true;
  if (state.ws) state.ws.close(1000);
  $("token-form").hidden = false;
  $("token-error").textContent = message || "";
  setConnection("signed out", "bad");
}

// ---- reads ---------------------------------------------------------------------------------
async function refresh() {
  if (state.inFlight) { state.again = true; return; }
  state.inFlight = true;
  try {
    const r = await fetch("api/dashboard", { headers: { Authorization: `Bearer ${state.token}` }, cache: "no-store" });
    const body = await r.json().catch(() => ({}));
    if (r.status === 401) return askForToken(`The relay refused the token: ${body.error || r.statusText}`);
    if (!r.ok) { setDbHealth(`database: ${body.error || r.status}`, "bad"); return; }
    state.grant = body.grant;
    state.snapshot = body.snapshot;
    render();
    if (!state.ws && !state.stopped) connect();
  } catch (e) {
    setDbHealth("database: relay unreachable", "bad");
  } finally {
    state.inFlight = false;
    if (state.again) { state.again = false; scheduleRefresh(50); }
  }
}
function scheduleRefresh(delay) {
  clearTimeout(state.refreshTimer);
  state.refreshTimer = setTimeout(refresh, delay);
}
async function relayHealth() {
  try {
    const r = await fetch("healthz", { cache: "no-store" });
    const h = await r.json();
    const tone = h.status === "ok" ? "good" : "bad";
    setBadge("relay-health", `relay: ${h.status}`, tone);
    details($("relay-details"), "Relay", [
      ["status", h.status], ["PostgreSQL", h.postgres ? "connected" : "down"], ["Redis", h.redis ? "connected" : "down"],
      ["delivered up to event", h.cursor], ["lag (events)", h.lag_events], ["WebSocket clients", h.clients], ["relay name", h.relay_name],
    ]);
  } catch (e) {
    setBadge("relay-health", "relay: unreachable", "bad");
  }
}

// ---- live ----------------------------------------------------------------------------------
function connect() {
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", state.token);
  const ws = new WebSocket(url);
  state.ws = ws;
  setConnection("connecting…", "neutral");
  ws.onopen = () => {
    const m = { action: "subscribe" };
    if (state.grant && !state.grant.all) m.test_ids = state.grant.test_ids; else m.all = true;
    if (state.resumeToken) m.resume_token = state.resumeToken;                 // after a reconnect: nothing missed
    else if (state.snapshot) m.since = Math.max(0, state.snapshot.newest_event_id - HISTORY_EVENTS);  // first: recent history
    ws.send(JSON.stringify(m));
  };
  ws.onmessage = (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch (_) { return; }
    onMessage(m);
  };
  ws.onclose = (e) => {
    state.ws = null;
    state.connected = false;
    if (state.stopped) return;
    if (e.code === 4401 || e.code === 4410) return askForToken(e.code === 4410 ? "The token expired: open the page with a new one." : `Unauthorized: ${e.reason}`);
    if (e.code === 4403) return askForToken(`Forbidden: ${e.reason}`);
    const wait = Math.min(5000, 500 * 2 ** state.retry++);
    setConnection(`reconnecting in ${(wait / 1000).toFixed(1)} s`, "warn");
    setTimeout(() => { if (!state.stopped && !state.ws) connect(); }, wait);
  };
}
function onMessage(m) {
  if (m.type === "subscribed") { state.connected = true; state.retry = 0; setConnection("live", "good"); return; }
  if (m.type === "replayed") { if (m.resume_token) state.resumeToken = m.resume_token; return; }
  if (m.type === "error") { addEvent({ label: `relay: ${m.message}`, tone: "bad" }); if (m.resume_token) state.resumeToken = m.resume_token; return; }
  if (m.update_type === "current_state") return;   // the snapshot shows the state
  if (m.resume_token) state.resumeToken = m.resume_token;
  if (m.event_id !== undefined) {
    if (state.seen.has(m.event_id)) return;
    state.seen.add(m.event_id);
    $("events-position").textContent = `(up to #${m.event_id})`;
  }
  if (m.type === "risk_alert") {
    state.riskAlerts.unshift(m);
    state.riskAlerts.length = Math.min(state.riskAlerts.length, 20);
    renderAlerts();
  }
  addEvent({ message: m });
  scheduleRefresh(30);
}

// ---- rendering -----------------------------------------------------------------------------
function setBadge(id, text, tone) {
  const b = $(id);
  b.className = `badge ${tone}`;
  b.textContent = text;
}
function setConnection(text, tone) { setBadge("connection", `live feed: ${text}`, tone); }
function setDbHealth(text, tone) { setBadge("db-health", text, tone); }
function details(dl, title, rows) {
  dl.replaceChildren(el("dt", { text: title, class: "muted" }), el("dd", {}));
  for (const [k, v] of rows) dl.append(el("dt", { text: k }), el("dd", { text: v === null || v === undefined ? "–" : String(v) }));
}

function eventSummary(m) {
  if (m.type === "risk_alert") return `risk ${m.risk_level}: ${(m.triggered_conditions || []).join("; ")}`;
  const d = m.data || {};
  const parts = [];
  if (d.from_stage !== undefined || d.to_stage !== undefined) parts.push(`stage ${d.from_stage ?? "–"}% → ${d.to_stage ?? "–"}%`);
  if (d.reason) parts.push(`reason: ${d.reason}`);
  if (d.winner) parts.push(`winner: ${d.winner}`);
  if (d.rollout_percentage !== undefined) parts.push(`rollout ${d.rollout_percentage}%`);
  return parts.join(", ");
}
function addEvent({ message, label, tone }) {
  const list = $("events");
  let item;
  if (message) {
    const kind = message.type === "risk_alert" ? "risk_alert" : message.update_type;
    const t = message.type === "risk_alert" ? RISK_TONE[message.risk_level] : kind === "rolled_back" ? "bad" : "neutral";
    item = el("li", { "data-event-id": message.event_id ?? null },
      el("span", { class: "when", text: isNum(message.timestamp) ? when(message.timestamp) : "" }),
      el("span", { class: "muted", text: message.event_id !== undefined ? `#${message.event_id} ` : "" }),
      el("strong", { text: message.test_id || "" }), " ", badge(kind, t), " ", eventSummary(message));
  } else {
    item = el("li", {}, badge(label, tone));
  }
  list.prepend(item);
  while (list.children.length > MAX_EVENTS) list.lastChild.remove();
}

function renderAlerts() {
  const list = $("alerts");
  list.replaceChildren();
  for (const a of (state.snapshot && state.snapshot.alerts) || []) {
    list.append(el("li", {}, badge(a.alert, "warn"), " ", a.message || ""));
  }
  for (const m of state.riskAlerts) {
    list.append(el("li", {}, el("span", { class: "when", text: when(m.timestamp) }), el("strong", { text: m.test_id }), " ",
      badge(`risk ${m.risk_level}`, RISK_TONE[m.risk_level]), " ", (m.triggered_conditions || []).join("; ")));
  }
  $("alerts-empty").hidden = list.children.length > 0;
}

function render() {
  const s = state.snapshot;
  const tests = s.tests || [];
  $("tests").replaceChildren(...tests.map(renderTest));
  $("tests-empty").hidden = tests.length > 0;
  renderAlerts();
  const h = s.health || {};
  setDbHealth(`database: ${h.overall_status || "?"}`, h.overall_status === "healthy" ? "good" : h.overall_status === "degraded" ? "warn" : "bad");
  const rows = [["overall", h.overall_status]];
  for (const [name, c] of Object.entries(h.components || {})) rows.push([name, c.status]);
  const p = h.performance_metrics || {};
  rows.push(["extraction P95 (last hour)", isNum(p.extraction_latency_p95_ms) ? `${num(p.extraction_latency_p95_ms)} ms` : "–"]);
  details($("db-details"), "Database (ab.health)", rows);
  $("snapshot-at").textContent = new Date(s.at).toLocaleTimeString();
}

function renderTest(t) {
  const ev = t.evaluation;
  const card = el("article", { class: "test", "data-test-id": t.test_id, "aria-labelledby": `test-${t.test_id}` });
  const head = el("div", { class: "test-head" },
    el("h3", { id: `test-${t.test_id}`, text: t.test_name || t.test_id }),
    el("span", { class: "id", text: t.test_id }),
    el("span", { "data-role": "status" }, badge(t.status, STATUS_TONE[t.status], `status ${t.status}`)));
  const risk = t.latest_risk_alert;
  if (risk) head.append(badge(`risk ${risk.risk_level}`, RISK_TONE[risk.risk_level], `latest risk level ${risk.risk_level}`));
  card.append(head);
  if (t.status_reason) card.append(el("p", { class: "verdict", text: `Reason: ${t.status_reason}` }));

  // Stages and the effective rollout (min of the stage and ff.ab_routing).
  const stages = el("div", { class: "stages", "aria-label": "rollout stages" }, el("span", { class: "muted", text: "stages" }));
  for (const st of t.rollout_stages || []) {
    const cls = st === t.current_stage ? "stage current" : st < t.current_stage ? "stage done" : "stage";
    stages.append(el("span", { class: cls, "aria-current": st === t.current_stage ? "step" : null, text: `${st}%` }));
  }
  const eff = t.effective_rollout;
  stages.append(el("span", { class: "muted", text: "effective rollout" }),
    el("meter", { min: 0, max: 100, value: isNum(eff) ? eff : 0, "aria-label": "effective rollout" }),
    el("strong", { "data-role": "effective-rollout", text: isNum(eff) ? `${eff}%` : "–" }));
  card.append(stages);
  if (!ev) { card.append(el("p", { class: "muted", text: "A draft: no traffic yet." })); return card; }

  card.append(trafficTable(t, ev), metricsTable(ev));
  for (const c of ev.comparisons || []) card.append(forest(c));
  return card;
}

function trafficTable(t, ev) {
  const variants = ev.variants || [];
  const totalWeight = variants.reduce((a, v) => a + (v.weight || 0), 0) || 1;
  const totalRequests = variants.reduce((a, v) => a + (v.requests || 0), 0);
  const srm = ev.srm;
  const units = srm && srm.units;
  const totalUnits = units ? units.reduce((a, b) => a + b, 0) : 0;
  const rows = variants.map((v, i) => el("tr", {},
    el("td", {}, v.variant, v.variant === t.champion ? el("span", { class: "muted", text: " (champion)" }) : null),
    el("td", { text: num(v.weight, 2) }), el("td", { text: pct(v.weight / totalWeight) }),
    el("td", { text: String(v.requests ?? 0) }), el("td", { text: totalRequests ? pct(v.requests / totalRequests) : "–" }),
    el("td", { text: units ? pct(units[i] / (totalUnits || 1)) : "–" })));
  const verdict = !srm ? badge("SRM: not checked yet", "neutral") :
    srm.mismatch ? badge(`SRM: mismatch (p = ${pval(srm.p_value)})`, "bad") : badge(`SRM: ok (p = ${pval(srm.p_value)})`, "good");
  return el("div", { class: "scroll" }, el("table", {},
    el("caption", {}, "Traffic against the weights ", el("span", { "data-role": "srm" }, verdict)),
    el("thead", {}, el("tr", {}, ...["variant", "weight", "expected share", "requests", "share of requests", "share of SRM units"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows)));
}

function metricsTable(ev) {
  const rows = (ev.variants || []).map((v) => el("tr", {},
    el("td", { text: v.variant }), el("td", { text: String(v.requests ?? 0) }),
    el("td", { text: pct(v.success_rate) }), el("td", { text: pct(v.error_rate, 2) }),
    el("td", { text: num(v.latency_ms && v.latency_ms.mean, 3) }), el("td", { text: num(v.latency_ms && v.latency_ms.p95, 3) }),
    el("td", { text: num(v.average_confidence && v.average_confidence.mean, 3) })));
  return el("div", { class: "scroll" }, el("table", {},
    el("caption", { text: "Metrics per variant" }),
    el("thead", {}, el("tr", {}, ...["variant", "requests", "success", "errors", "latency mean ms", "latency P95 ms", "confidence"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...rows)));
}

// A forest plot of the challenger's differences from the champion, relative to the champion's
// value so that every metric shares one axis: the point, the fixed-horizon 95% interval (line)
// and the always-valid confidence sequence (band).
function forest(c) {
  const rows = (c.metrics || []).filter((m) => m.result !== null && isNum(m.relative_difference)).map((m) => {
    const base = Math.abs(m.control);
    const seq = m.sequential_ci && base > 0 ? m.sequential_ci.map((x) => x / base) : null;
    return { m, rel: m.relative_difference, ci: m.relative_ci, seq };
  });
  const ends = rows.flatMap((r) => [r.rel, ...(r.ci || []), ...(r.seq || [])]).filter(isNum).map(Math.abs);
  const domain = niceCeil(Math.max(0.01, ...ends));
  const x = (v) => 130 + (Math.max(-domain, Math.min(domain, v)) / domain) * 124;
  const body = rows.map(({ m, rel, ci, seq }) => {
    const plot = svg("svg", { width: 260, height: 18, viewBox: "0 0 260 18", class: "forest", role: "img",
      "aria-label": `${METRIC_LABEL[m.metric] || m.metric}: ${signedPct(rel)}, 95% interval ${ci ? `${signedPct(ci[0])} to ${signedPct(ci[1])}` : "none"}` });
    plot.append(svg("line", { class: "zero", x1: 130, x2: 130, y1: 0, y2: 18 }));
    if (seq) plot.append(svg("rect", { class: "seq", x: x(seq[0]), y: 5, width: Math.max(1, x(seq[1]) - x(seq[0])), height: 8 }));
    if (ci && isNum(ci[0]) && isNum(ci[1])) {
      plot.append(svg("line", { class: "fixed", x1: x(ci[0]), x2: x(ci[1]), y1: 9, y2: 9 }));
      for (const e of ci) plot.append(svg("line", { class: "fixed", x1: x(e), x2: x(e), y1: 5, y2: 13 }));
    }
    plot.append(svg("circle", { class: m.outcome || "", cx: x(rel), cy: 9, r: 3.5 }));
    return el("tr", { "data-metric": m.metric },
      el("th", { scope: "row", text: METRIC_LABEL[m.metric] || m.metric }),
      el("td", { class: "plot" }, plot),
      el("td", { text: signedPct(rel) }),
      el("td", { text: `${num(m.control, 3)} → ${num(m.treatment, 3)}` }),
      el("td", { text: pval(m.p_value_adjusted) }),
      el("td", {}, badge(m.outcome || "–", VERDICT_TONE[m.outcome] || "neutral")));
  });
  const verdict = el("p", { class: "verdict", "data-role": "verdict" }, `${c.challenger} vs champion: `,
    badge(c.verdict.replaceAll("_", " "), VERDICT_TONE[c.verdict], `verdict ${c.verdict}`), c.reason ? el("span", { class: "muted", text: ` ${c.reason}` }) : null);
  const axis = el("div", { class: "axis", "aria-hidden": "true" }, el("span", { text: signedPct(-domain) }), el("span", { text: "0" }), el("span", { text: signedPct(domain) }));
  return el("div", { class: "comparison" }, verdict, rows.length ? el("div", { class: "scroll" }, el("table", {},
    el("caption", { text: `Difference from the champion (relative): ${c.challenger}` }),
    el("thead", {}, el("tr", {}, ...["metric", "interval", "difference", "champion → challenger", "p (Holm)", "outcome"].map((h) => el("th", { scope: "col", text: h })))),
    el("tbody", {}, ...body),
    el("tfoot", {}, el("tr", {}, el("td", {}), el("td", { class: "plot" }, axis), el("td", {}), el("td", {}), el("td", {}), el("td", {}))))) : null,
    rows.length ? el("p", { class: "legend" }, "● difference  ", el("span", { class: "key-fixed" }), " 95% interval  ",
      el("span", { class: "key-seq" }), " always-valid interval (confidence sequence: valid however often you look)") : null);
}
function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const k of [1, 2, 2.5, 5, 7.5, 10]) if (k * p >= v) return k * p;
  return 10 * p;
}

// ---- start ---------------------------------------------------------------------------------
function start() {
  $("token-entry").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem("pg_ab_token", $("token-input").value.trim());
    $("token-input").value = "";
    $("token-form").hidden = true;
    state.token = sessionStorage.getItem("pg_ab_token");
    state.stopped = false;
    refresh();
  });
  state.token = readToken();
  relayHealth();
  setInterval(relayHealth, HEALTH_MS);
  if (!state.token) return askForToken("");
  refresh();
  setInterval(() => { if (!state.stopped) refresh(); }, REFRESH_MS);
}
document.addEventListener("DOMContentLoaded", start);

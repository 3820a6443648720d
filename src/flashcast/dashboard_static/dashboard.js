// The approval dashboard: asks the API with the key typed in (kept in this tab's sessionStorage),
// draws what the latest run produced, and shows the controls the key's role allows (the API
// refuses the rest anyway). Data is only ever written with textContent, never as HTML.
"use strict";

const state = { key: sessionStorage.getItem("flashcast-key"), session: null, data: null, payloadId: null };
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${state.key}`, "Content-Type": "application/json", ...(options.headers || {}) },
  });
  const body = response.headers.get("content-type")?.includes("json") ? await response.json() : null;
  if (!response.ok) {
    const detail = body && body.detail;
    const message = Array.isArray(detail) ? detail.map((d) => `${d.field}: ${d.problem}`).join("; ") : detail;
    throw new Error(message || `HTTP ${response.status}`);
  }
  return body;
}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

function row(cells, numeric = []) {
  const tr = el("tr");
  cells.forEach((value, i) => tr.append(el(i === 0 ? "th" : "td", value, i === 0 ? { scope: "row" } :
    numeric.includes(i) ? { class: "num" } : {})));
  return tr;
}

function money(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "";
  const currency = state.session ? state.session.currency : "";
  return `${Number(value).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 })} ${currency}`;
}

function may(action) { return state.session && state.session.may.includes(action); }

// ------------------------------------------------------------------ login

async function login(key) {
  state.key = key;
  try {
    state.session = await api("/session");
  } catch (error) {
    sessionStorage.removeItem("flashcast-key");
    state.key = null;
    $("login-error").textContent = `Not logged in: ${error.message}`;
    return;
  }
  sessionStorage.setItem("flashcast-key", key);
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  $("who").textContent = `Key ${state.session.key_id}, role ${state.session.role}`;
  $("sandbox").hidden = state.session.mode !== "sandbox";
  await refresh();
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  login($("api-key").value.trim());
});
$("logout").addEventListener("click", () => { sessionStorage.removeItem("flashcast-key"); location.reload(); });

// ------------------------------------------------------------------ sections

async function refresh() {
  state.data = await api("/dashboard/data");
  if (!state.data.run) {
    $("run-summary").textContent = "No finished run yet: run the pipeline (flashcast run, or POST /runs).";
  } else {
    drawRun();
    drawForecast();
    drawAllocation();
  }
  await Promise.all([drawCreatives(), drawDelivery(), drawLineage()]);
  document.body.dataset.ready = "true";  // for tests: every section has been drawn
}

function drawRun() {
  const { run, reconciliation, quarantine_by_field: reasons } = state.data;
  const totals = reconciliation.reduce((t, d) => {
    for (const k of ["input_rows", "accepted", "dropped_consent", "quarantined", "duplicate"]) t[k] = (t[k] || 0) + d[k];
    return t;
  }, {});
  $("run-summary").textContent = `Run ${run.lineage_id} (${run.status}, finished ${run.finished_at}): ` +
    `${(totals.input_rows || 0).toLocaleString()} rows in, ${(totals.accepted || 0).toLocaleString()} accepted, ` +
    `${(totals.dropped_consent || 0).toLocaleString()} dropped for consent, ${(totals.quarantined || 0).toLocaleString()} ` +
    `quarantined, ${(totals.duplicate || 0).toLocaleString()} duplicates.`;
  const attention = run.attention || [];  // what the run's report asks a person to look at first
  $("run-attention").hidden = attention.length === 0;
  $("run-attention").querySelector("ul").replaceChildren(...attention.map((item) => {
    const li = document.createElement("li");
    li.textContent = item;
    return li;
  }));
  const body = $("reconciliation").querySelector("tbody");
  const dated = reconciliation.filter((d) => d.event_date !== "unknown");
  $("reconciliation").querySelector("caption").textContent =
    `Every export row's outcome, the latest ${Math.min(14, reconciliation.length)} of ${reconciliation.length} days`;
  body.replaceChildren(...reconciliation.slice().reverse().slice(0, 14).map((d) =>
    row([d.event_date, d.input_rows, d.accepted, d.dropped_consent, d.quarantined, d.duplicate], [1, 2, 3, 4, 5])));
  const named = Object.entries(reasons).map(([field, n]) => `${field}: ${n}`).join(", ");
  $("quarantine-reasons").textContent = named ? `Quarantined, by the field at fault: ${named}.` : "Nothing quarantined.";
  Plotly.react("consent-chart", [{
    x: dated.map((d) => d.event_date), y: dated.map((d) => d.dropped_share * 100),
    type: "scatter", mode: "lines", name: "dropped for consent (%)",
  }], { title: { text: "Share of rows dropped for consent" }, yaxis: { title: { text: "%" } },
        margin: { t: 40, r: 10, l: 50, b: 40 } }, { responsive: true, displaylogo: false });
}

function drawForecast() {
  const series = state.data.forecast;
  const select = $("series");
  const ids = Object.keys(series).sort((a, b) => (a === "revenue_total" ? -1 : b === "revenue_total" ? 1 :
    a.localeCompare(b)));
  if (!select.options.length) {
    select.replaceChildren(...ids.map((id) => el("option", id, { value: id })));
    select.addEventListener("change", () => fan(select.value));
  }
  fan(select.value || ids[0]);
  const board = state.data.leaderboard;
  $("leaderboard").querySelector("tbody").replaceChildren(...board.map((e) =>
    row([e.engine, e.mase, e.coverage_80, e.coverage_95], [1, 2, 3])));
}

function fan(id) {
  const s = state.data.forecast[id];
  if (!s) return;
  const dates = s.days.map((d) => d.date);
  const band = (lo, hi, name, opacity) => ({
    x: [...dates, ...dates.slice().reverse()], y: [...s.days.map((d) => d[hi]), ...s.days.map((d) => d[lo]).reverse()],
    fill: "toself", type: "scatter", mode: "lines", line: { width: 0 }, name, fillcolor: `rgba(26,115,232,${opacity})`,
    hoverinfo: "skip",
  });
  const traces = [
    band("lo_95", "hi_95", "95% band", 0.12), band("lo_80", "hi_80", "80% band", 0.2),
    band("lo_50", "hi_50", "50% band", 0.3),
    { x: s.history.map((h) => h.date), y: s.history.map((h) => h.y), type: "scatter", mode: "lines", name: "history",
      line: { color: "#444" } },
    { x: dates, y: s.days.map((d) => d.point), type: "scatter", mode: "lines+markers", name: "forecast",
      line: { color: "#1a73e8" } },
  ];
  Plotly.react("fan", traces, { title: { text: `${id}: ${s.days.length} days ahead (engine ${s.engine})` },
    margin: { t: 40, r: 10, l: 60, b: 40 }, legend: { orientation: "h" } }, { responsive: true, displaylogo: false });
  const best = state.data.leaderboard[0];
  $("engine-why").textContent = id === "revenue_total" && best
    ? `Engine ${s.engine}: the lowest MASE (${best.mase}) of ${state.data.leaderboard.length} engines on the backtest; ` +
      "bands calibrated on its errors."
    : `Engine ${s.engine}, chosen on this series' own backtest.`;
}

function drawAllocation() {
  const rows = state.data.allocation;
  $("allocation").querySelector("tbody").replaceChildren(...rows.map((r) => row([
    r.channel, money(r.yesterday_spend), money(r.spend), `${(r.share * 100).toFixed(1)}%`, money(r.cpa),
    money(r.marginal_cpa), r.bound || "none", r.why,
  ], [1, 2, 3, 4, 5])));
  const sweep = state.data.whatif;
  if (sweep.length) {
    Plotly.react("whatif", [{ x: sweep.map((w) => w.budget), y: sweep.map((w) => w.expected), type: "scatter",
      mode: "lines+markers", name: "expected", error_y: { type: "data", symmetric: false,
        array: sweep.map((w) => w.high - w.expected), arrayminus: sweep.map((w) => w.expected - w.low) } }],
    { title: { text: "What-if: expected conversions by total budget" }, xaxis: { title: { text: "budget" } },
      margin: { t: 40, r: 10, l: 60, b: 50 } }, { responsive: true, displaylogo: false });
  }
  if (state.data.run.files.includes("response_curves.png")) {
    fetch("/dashboard/files/response_curves.png", { headers: { Authorization: `Bearer ${state.key}` } })
      .then((r) => (r.ok ? r.blob() : null))
      .then((blob) => { if (blob) { $("curves").src = URL.createObjectURL(blob); $("curves-figure").hidden = false; } });
  }
}

async function drawCreatives() {
  const creatives = await api("/creatives");
  const canDecide = may("approve");
  $("creatives-note").textContent = canDecide
    ? "Approve or reject each creative with a comment; a red one needs an override reason to be approved."
    : "Your role can read the creatives; an approver decides on them.";
  const green = creatives.filter((c) => c.status === "pending" && c.light === "green");
  $("creatives-bulk").replaceChildren(...(canDecide && green.length ? [bulkApproval(green)] : []));
  $("creatives").replaceChildren(...creatives.map((c) => creativeCard(c, canDecide)));
}

// Every pending green creative in one decision of the person's (each recorded on its own, with the
// comment); amber and red copy is left to be read card by card.
function bulkApproval(green) {
  const form = el("form", null, { id: "bulk-approve" });
  form.append(el("label", `Comment for all ${green.length} pending green creatives`, { for: "bulk-comment" }),
    el("textarea", null, { id: "bulk-comment", required: "" }),
    el("button", `Approve all ${green.length} pending green creatives`, { type: "submit" }),
    el("p", null, { class: "error", role: "alert" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const comment = form.querySelector("textarea").value;
    try {
      for (const c of green) {
        await api(`/creatives/${c.creative_id}/decision`, { method: "POST",
          body: JSON.stringify({ decision: "approve", comment, override_reason: null }) });
      }
      await drawCreatives();
    } catch (e) { form.querySelector(".error").textContent = e.message; }
  });
  return form;
}

function creativeCard(c, canDecide) {
  const card = el("article", null, { class: `creative ${c.light}`, "data-creative-id": c.creative_id });
  card.append(el("h3", `${c.segment} · ${c.channel} · ${c.variant}`));
  const light = el("p");
  light.append(el("span", c.light, { class: `light ${c.light}` }), document.createTextNode(" · status "),
    el("span", c.status, { class: "status" }));
  card.append(light, el("p", c.headline, { class: "headline" }), el("p", c.body));
  if (c.reasons && c.reasons.length) card.append(el("p", `Why: ${c.reasons.join("; ")}`, { class: "help" }));
  if (c.comment) card.append(el("p", `Comment: ${c.comment}`, { class: "help" }));
  if (!canDecide) return card;
  const form = el("form");
  const commentId = `comment-${c.creative_id}`;
  form.append(el("label", "Comment", { for: commentId }), el("textarea", null, { id: commentId, required: "" }));
  if (c.light === "red") {
    const overrideId = `override-${c.creative_id}`;
    form.append(el("label", "Override reason (required to approve red copy)", { for: overrideId }),
      el("textarea", null, { id: overrideId }));
  }
  const actions = el("div", null, { class: "actions" });
  const approve = el("button", "Approve", { type: "submit", value: "approve" });
  const reject = el("button", "Reject", { type: "submit", value: "reject" });
  actions.append(approve, reject);
  const error = el("p", null, { class: "error", role: "alert" });
  form.append(actions, error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const decision = event.submitter ? event.submitter.value : "approve";
    const override = form.querySelector(`#override-${c.creative_id}`);
    try {
      await api(`/creatives/${c.creative_id}/decision`, { method: "POST", body: JSON.stringify({
        decision, comment: form.querySelector("textarea").value || decision,
        override_reason: override && override.value ? override.value : null }) });
      await drawCreatives();
    } catch (e) { error.textContent = e.message; }
  });
  card.append(form);
  return card;
}

async function drawDelivery() {
  let payload = null;
  try { payload = await api("/payloads/latest"); } catch (e) { /* no payload yet */ }
  state.payloadId = payload ? payload.lineage_id : null;
  $("push").hidden = !(payload && may("operate"));
  if (!payload) { $("delivery-state").textContent = "No payload yet."; return; }
  const orders = await api(`/payloads/${payload.lineage_id}/deliveries`);
  const states = [...new Set(orders.map((o) => o.state))];
  $("delivery-state").textContent = orders.length
    ? `Payload ${payload.lineage_id}: ${states.join(", ")}.` : `Payload ${payload.lineage_id}: not pushed yet.`;
  $("deliveries").querySelector("tbody").replaceChildren(...orders.map((o) => row([
    o.platform, o.version, o.state, o.attempts.length, o.attempts.length ? o.attempts[o.attempts.length - 1].detail : "",
  ], [1, 3])));
  return orders;
}

$("push").addEventListener("click", async () => {
  $("delivery-state").textContent = "Pushing...";
  try {
    await api(`/payloads/${state.payloadId}/push`, { method: "POST" });
  } catch (e) { $("delivery-state").textContent = `Not pushed: ${e.message}`; return; }
  for (let i = 0; i < 60; i++) {  // delivery runs in the background: follow it
    const orders = await drawDelivery();
    if (orders && orders.length && orders.every((o) => o.state !== "pending")) break;
    await new Promise((r) => setTimeout(r, 500));
  }
});

async function drawLineage() {
  const verify = await api("/lineage/verify");
  $("verify").textContent = verify.ok ? `Chain verified: ${verify.entries} entries, ${verify.anchors_checked} anchors.`
    : `Chain broken: ${verify.problem}`;
  if (!state.data.run) return;
  const entries = await api(`/lineage/${state.data.run.lineage_id}`);
  $("lineage").replaceChildren(...entries.map((e) =>
    el("li", `${e.recorded_at} ${e.kind}${e.body && e.body.stage ? ` (${e.body.stage})` : ""}`)));
}

if (state.key) login(state.key);

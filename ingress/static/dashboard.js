// The payments dashboard: polls /dashboard/data (the payment_metrics windows the worker
// projects into Redis) and draws plain SVG charts. No external scripts: it works offline.
"use strict";

const params = new URLSearchParams(location.search);
const WINDOW_S = Number(params.get("window") || 60);
const MINUTES = Number(params.get("minutes") || 60);
const REFRESH_S = Number(params.get("refresh") || 5);
const COLORS = { stripe: "#635bff", square: "#3e4348", paypal: "#009cde", p50: "#2a9d8f", p95: "#e9c46a", p99: "#e76f51" };
const SVG = "http://www.w3.org/2000/svg";
// The data needs an admin API key: `?key=` once, then kept in this browser's storage and
// taken out of the address bar.
if (params.get("key")) {
  localStorage.setItem("payments_api_key", params.get("key"));
  params.delete("key");
  history.replaceState(null, "", `${location.pathname}?${params}`);
}
const KEY = localStorage.getItem("payments_api_key") || "";

function el(tag, attrs, parent) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function hhmm(ms) {
  return new Date(ms).toISOString().slice(11, WINDOW_S < 60 ? 19 : 16);
}

// series: {name: [[x, y], ...]}; draws lines over a shared time axis.
function lineChart(id, series, { yMax, yFormat = (v) => String(v) } = {}) {
  const svg = document.getElementById(id);
  const legend = document.getElementById(`${id}-legend`);
  svg.replaceChildren();
  legend.replaceChildren();
  const W = svg.clientWidth || 600, H = svg.clientHeight || 220, L = 44, R = 8, T = 8, B = 22;
  const points = Object.values(series).flat();
  svg.setAttribute("data-points", String(points.length));
  if (!points.length) {
    el("text", { x: W / 2 - 40, y: H / 2 }, svg).textContent = "no data yet";
    return;
  }
  const xs = points.map((p) => p[0]);
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + WINDOW_S * 1000);
  const top = yMax ?? Math.max(...points.map((p) => p[1]), 1e-9) * 1.1;
  const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const Y = (y) => T + (1 - y / top) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const y = (top * i) / 4;
    el("line", { class: "grid", x1: L, x2: W - R, y1: Y(y), y2: Y(y) }, svg);
    el("text", { x: 2, y: Y(y) + 3 }, svg).textContent = yFormat(y);
  }
  el("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }, svg);
  el("text", { x: L, y: H - 6 }, svg).textContent = hhmm(x0);
  el("text", { x: W - R - 40, y: H - 6 }, svg).textContent = hhmm(x1);
  for (const [name, pts] of Object.entries(series)) {
    if (!pts.length) continue;
    pts.sort((a, b) => a[0] - b[0]);
    const d = pts.map((p, i) => `${i ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(" ");
    const color = COLORS[name] || "#888";
    el("path", { class: "series", d, stroke: color, "data-series": name, "data-points": pts.length }, svg);
    for (const p of pts) el("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: color }, svg);
    const item = document.createElement("span");
    item.innerHTML = `<i style="background:${color}"></i>`;
    item.append(name);
    legend.appendChild(item);
  }
}

function byWindow(windows, keyOf) {
  const out = {};
  for (const w of windows) {
    const k = keyOf(w);
    ((out[k] ||= {})[w.window_start] ||= []).push(w);
  }
  return out;
}

function render(data) {
  const windows = data.windows;
  const gateways = byWindow(windows, (w) => w.gateway);
  const throughput = {}, success = {};
  for (const [gw, starts] of Object.entries(gateways)) {
    throughput[gw] = [];
    success[gw] = [];
    for (const [start, ws] of Object.entries(starts)) {
      const attempts = ws.reduce((s, w) => s + w.attempts, 0);
      const ok = ws.reduce((s, w) => s + w.successes, 0);
      throughput[gw].push([Number(start), attempts / data.window_s]);
      if (attempts) success[gw].push([Number(start), ok / attempts]);
    }
  }
  const latency = { p50: [], p95: [], p99: [] };
  for (const [start, ws] of Object.entries(byWindow(windows, () => "all").all || {})) {
    for (const q of ["p50", "p95", "p99"]) {
      const values = ws.map((w) => w[`latency_ms_${q}`]).filter((v) => v !== null);
      if (values.length) latency[q].push([Number(start), Math.max(...values)]);
    }
  }
  lineChart("throughput", throughput, { yFormat: (v) => v.toFixed(2) });
  lineChart("success", success, { yMax: 1, yFormat: (v) => `${Math.round(v * 100)}%` });
  lineChart("latency", latency, { yFormat: (v) => String(Math.round(v)) });

  const rows = [];
  for (const w of windows) {
    for (const [code, count] of Object.entries(w.failures_by_code)) {
      rows.push({ start: w.window_start, gateway: w.gateway, currency: w.currency, code, count });
    }
  }
  rows.sort((a, b) => b.start - a.start || b.count - a.count);
  const body = document.querySelector("#failures tbody");
  body.replaceChildren();
  for (const r of rows.slice(0, 25)) {
    const tr = document.createElement("tr");
    for (const v of [hhmm(r.start), r.gateway, r.currency, r.code, r.count]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  if (!rows.length) {
    body.innerHTML = '<tr><td colspan="5" class="empty">no failures in this range</td></tr>';
  }

  const attempts = windows.reduce((s, w) => s + w.attempts, 0);
  const ok = windows.reduce((s, w) => s + w.successes, 0);
  const volume = {};
  for (const w of windows) volume[w.currency] = (volume[w.currency] || 0) + w.volume;
  const tiles = [["attempts", attempts], ["success rate", attempts ? `${((ok / attempts) * 100).toFixed(1)}%` : "–"]];
  for (const [cur, minor] of Object.entries(volume)) tiles.push([`volume ${cur} (minor units)`, minor]);
  const box = document.getElementById("tiles");
  box.replaceChildren();
  for (const [label, value] of tiles) {
    const div = document.createElement("div");
    div.className = "tile";
    const b = document.createElement("b");
    b.textContent = String(value);
    div.append(b, label);
    box.appendChild(div);
  }
  document.getElementById("span").textContent = `${MINUTES} min, ${data.window_s} s windows`;
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const r = await fetch(`/dashboard/data?window=${WINDOW_S}&minutes=${MINUTES}`, {
      headers: KEY ? { Authorization: `Bearer ${KEY}` } : {},
    });
    if (r.status === 401 || r.status === 403) throw new Error("an admin API key is needed: open /dashboard?key=<admin key>");
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const data = await r.json();
    render(data);
    status.textContent = `${data.windows.length} windows, updated ${new Date().toISOString().slice(11, 19)} UTC`;
    document.body.setAttribute("data-loaded", "true");
  } catch (err) {
    status.textContent = `cannot load data: ${err.message}`;
  }
}

refresh();
setInterval(refresh, REFRESH_S * 1000);

// The status page (admin/admin.h): one HTML document with its CSS and JavaScript inline. It reads
// /status.json (backends, recent decisions) and /metrics (the router's counters) every second and
// computes rates between two polls: requests per second, TTFT p50/p99 from the histogram's buckets,
// the engines' prefix-cache hit rate from their counters as the router last scraped them (their
// lifetime rate when nothing changed between two polls). Elements
// carry ids and data- attributes for tests (tests/status_page_check.py).
#include "admin/admin.h"

namespace kvroute::admin {

const std::string_view kStatusPage = R"HTML(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>kvroute status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 20px; color: #1d2330; background: #f6f7f9; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  .sub { color: #5b6475; margin-bottom: 16px; }
  .cards { display: flex; gap: 12px; flex-wrap: wrap; margin-bottom: 18px; }
  .card { background: #fff; border-radius: 8px; padding: 10px 14px; min-width: 150px;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  .card .v { font-size: 22px; font-weight: 600; }
  .card .k { color: #5b6475; font-size: 12px; }
  table { border-collapse: collapse; background: #fff; width: 100%; margin-bottom: 18px;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid #eceef2; }
  th { font-size: 12px; color: #5b6475; font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .ok { color: #17803d; } .bad { color: #b42318; font-weight: 600; }
  .bar { height: 8px; background: #e5e8ee; border-radius: 4px; width: 90px; display: inline-block; }
  .bar > span { display: block; height: 8px; border-radius: 4px; background: #3b82f6; }
  code { font-size: 12px; color: #39414f; }
</style>
</head>
<body>
<h1>kvroute</h1>
<div class="sub">policy <b id="policy">-</b> &middot; updated <span id="updated">never</span>
  &middot; <span id="error" class="bad"></span></div>
<div class="cards">
  <div class="card"><div class="v" id="req-rate">-</div><div class="k">requests / s</div></div>
  <div class="card"><div class="v" id="requests-total">-</div><div class="k">requests answered</div></div>
  <div class="card"><div class="v" id="ttft-p50">-</div><div class="k">TTFT p50 (router)</div></div>
  <div class="card"><div class="v" id="ttft-p99">-</div><div class="k">TTFT p99 (router)</div></div>
  <div class="card"><div class="v" id="hit-rate">-</div><div class="k">prefix-cache hit rate (engines)</div></div>
  <div class="card"><div class="v" id="healthy">-</div><div class="k">healthy engines</div></div>
</div>
<table id="engines">
  <thead><tr><th>engine</th><th>health</th><th>in flight</th><th>waiting</th><th>running</th>
    <th>KV usage</th><th>hit rate</th></tr></thead>
  <tbody></tbody>
</table>
<table id="decisions">
  <thead><tr><th>when</th><th>engine</th><th>reason</th><th>model</th><th>blocks</th><th>scores</th></tr></thead>
  <tbody></tbody>
</table>
<script>
'use strict';
let last = null;  // the previous poll: {at, metrics, backends}

function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const p of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[p[1]] = p[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}
const sum = (ms, name) => ms.filter((s) => s.name === name).reduce((a, s) => a + s.value, 0);
function buckets(ms) {
  const b = new Map();
  for (const s of ms.filter((s) => s.name === 'kvroute_time_to_first_byte_seconds_bucket')) {
    const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
    b.set(le, (b.get(le) || 0) + s.value);
  }
  return [...b.entries()].sort((x, y) => x[0] - y[0]);
}
function quantile(before, now, q) {  // histogram_quantile over the bucket deltas
  const prev = new Map(before);
  const d = now.map(([le, n]) => [le, n - (prev.get(le) || 0)]);
  if (!d.length || d[d.length - 1][1] <= 0) return NaN;
  const rank = q * d[d.length - 1][1];
  let pl = 0, pn = 0;
  for (const [le, n] of d) {
    if (n >= rank) return le === Infinity ? pl : pl + (le - pl) * (n > pn ? (rank - pn) / (n - pn) : 0);
    pl = le; pn = n;
  }
  return NaN;
}
const ms = (s) => (isNaN(s) ? '-' : s < 1 ? (s * 1000).toFixed(1) + ' ms' : s.toFixed(2) + ' s');
const pct = (x) => (isNaN(x) ? '-' : (100 * x).toFixed(1) + '%');
function cell(tr, text, cls, key) {
  const td = document.createElement('td');
  td.textContent = text;
  if (cls) td.className = cls;
  if (key) td.dataset.key = key;
  tr.appendChild(td);
  return td;
}

async function poll() {
  try {
    const [sr, mr] = await Promise.all([fetch('status.json'), fetch('metrics')]);
    if (!sr.ok || !mr.ok) throw new Error('HTTP ' + (sr.ok ? mr.status : sr.status));
    const status = await sr.json();
    const metrics = parseMetrics(await mr.text());
    const now = { at: performance.now(), metrics, backends: new Map(status.backends.map((b) => [b.name, b])) };
    document.getElementById('policy').textContent = status.policy;
    const total = sum(metrics, 'kvroute_requests_total');
    document.getElementById('requests-total').textContent = String(total);
    document.getElementById('requests-total').dataset.value = String(total);
    const healthy = status.backends.filter((b) => b.healthy).length;
    const h = document.getElementById('healthy');
    h.textContent = healthy + ' / ' + status.backends.length;
    h.dataset.value = String(healthy);
    let hits = 0, queries = 0;
    const tbody = document.querySelector('#engines tbody');
    tbody.replaceChildren();
    for (const b of status.backends) {
      const tr = document.createElement('tr');
      tr.dataset.engine = b.name;
      cell(tr, b.name);
      cell(tr, b.healthy ? 'healthy' : 'down', b.healthy ? 'ok' : 'bad', 'health');
      cell(tr, String(b.inflight), 'num', 'inflight');
      cell(tr, b.waiting === undefined ? '-' : String(b.waiting), 'num', 'waiting');
      cell(tr, b.running === undefined ? '-' : String(b.running), 'num', 'running');
      const kv = cell(tr, '', 'num', 'kv');
      if (b.kv_usage !== undefined) {
        const bar = document.createElement('span'); bar.className = 'bar';
        const fill = document.createElement('span'); fill.style.width = Math.round(100 * b.kv_usage) + '%';
        bar.appendChild(fill); kv.appendChild(bar);
        kv.appendChild(document.createTextNode(' ' + pct(b.kv_usage)));
      } else kv.textContent = '-';
      const before = last && last.backends.get(b.name);
      let rate = NaN;
      if (b.prefix_queries !== undefined) {
        const dq = b.prefix_queries - (before && before.prefix_queries !== undefined ? before.prefix_queries : 0);
        const dh = b.prefix_hits - (before && before.prefix_hits !== undefined ? before.prefix_hits : 0);
        if (dq > 0) { rate = dh / dq; hits += dh; queries += dq; }
        else if (b.prefix_queries > 0) {  // nothing new since the last poll: the lifetime rate
          rate = b.prefix_hits / b.prefix_queries; hits += b.prefix_hits; queries += b.prefix_queries;
        }
      }
      cell(tr, pct(rate), 'num', 'hitrate');
      tbody.appendChild(tr);
    }
    document.getElementById('hit-rate').textContent = queries > 0 ? pct(hits / queries) : '-';
    if (last) {
      const dt = (now.at - last.at) / 1000;
      const dr = total - sum(last.metrics, 'kvroute_requests_total');
      document.getElementById('req-rate').textContent = (dr / dt).toFixed(1);
      const b0 = buckets(last.metrics), b1 = buckets(metrics);
      document.getElementById('ttft-p50').textContent = ms(quantile(b0, b1, 0.5));
      document.getElementById('ttft-p99').textContent = ms(quantile(b0, b1, 0.99));
    }
    const dbody = document.querySelector('#decisions tbody');
    dbody.replaceChildren();
    for (const d of status.decisions.slice(0, 20)) {
      const tr = document.createElement('tr');
      cell(tr, (d.ms_ago / 1000).toFixed(1) + ' s ago');
      cell(tr, d.backend);
      cell(tr, d.reason, '', 'reason');
      cell(tr, d.model);
      cell(tr, String(d.prompt_blocks), 'num');
      const sc = cell(tr, '');
      const code = document.createElement('code'); code.textContent = d.scores; sc.appendChild(code);
      dbody.appendChild(tr);
    }
    document.getElementById('updated').textContent = new Date().toLocaleTimeString();
    document.getElementById('error').textContent = '';
    document.body.dataset.polls = String(Number(document.body.dataset.polls || 0) + 1);
    last = now;
  } catch (e) {
    document.getElementById('error').textContent = 'cannot reach the router: ' + e.message;
  }
}
poll();
setInterval(poll, 1000);
</script>
</body>
</html>
)HTML";

}  // namespace kvroute::admin

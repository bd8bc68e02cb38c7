// CachePanel view: a running hit rate, stacked bars (cached over new prompt tokens) and a table.
// (_stop.js comes first: sgnb/widgets/cache_panel.py joins the two.)

const esc = (s) =>
  String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

const CSS = `
.sgnb-cache { font: 12px var(--jp-ui-font-family, sans-serif); color: var(--jp-ui-font-color1, #222);
  border: 1px solid var(--jp-border-color2, #ddd); border-radius: 4px; padding: 6px 8px; }
.sgnb-cache .hd { font-size: 13px; margin-bottom: 4px; }
.sgnb-cache .dim { color: var(--jp-ui-font-color2, #777); }
.sgnb-cache .rate { display: inline-block; width: 120px; height: 8px; background: #ddd; border-radius: 4px;
  vertical-align: middle; margin: 0 6px; overflow: hidden; }
.sgnb-cache .rate i { display: block; height: 100%; background: #f28e2b; }
.sgnb-cache .bars { display: flex; align-items: flex-end; gap: 2px; height: 64px; margin: 4px 0; }
.sgnb-cache .bars div { flex: 1 1 0; max-width: 18px; display: flex; flex-direction: column-reverse; }
.sgnb-cache .bars .c { background: #f28e2b; }
.sgnb-cache .bars .n { background: #bab0ac; }
.sgnb-cache .tbl { max-height: 260px; overflow: auto; }
.sgnb-cache table { border-collapse: collapse; width: 100%; }
.sgnb-cache th { position: sticky; top: 0; background: var(--jp-layout-color1, #fff); text-align: right; }
.sgnb-cache td, .sgnb-cache th { padding: 1px 8px; text-align: right; white-space: nowrap; }
.sgnb-cache td.p { text-align: left; font-family: var(--jp-code-font-family, monospace);
  width: 100%; max-width: 0; overflow: hidden; text-overflow: ellipsis; }
.sgnb-cache td.p { cursor: pointer; }
.sgnb-cache td.p.open { white-space: pre-wrap; word-break: break-word; }
.sgnb-cache td.w, .sgnb-cache th.w { text-align: left; }
.sgnb-cache .wk { margin: 2px 0 4px; }
.sgnb-cache .wk table { width: auto; }
.sgnb-cache .wk tr.dead td { color: #b00; }
.sgnb-cache .wk tr.all td { font-weight: 600; }
.sgnb-cache tr.hit td.h { color: #c96a00; font-weight: 600; }
.sgnb-cache tr[data-request] { cursor: pointer; }
.sgnb-cache tr[data-request]:hover { background: var(--jp-layout-color2, #f3f3f3); }
.sgnb-cache .stopped { color: #c33; }
.sgnb-cache td.abort { color: #c33; }
.sgnb-cache tr.sel { outline: 2px solid #c96a00; outline-offset: -2px; background: rgba(242, 142, 43, .12); }
`;

// A cluster's panel: each worker's own /metrics (every client's requests), then the "all" row.
function workersTable(workers) {
  if (!workers.length) return "";
  const pct = (x) => `${Math.round(100 * (x || 0))}%`;
  const body = workers
    .map(
      (w) =>
        `<tr class="${w.worker === "all" ? "all" : esc(w.state)}" data-worker="${esc(w.worker)}" data-state="${esc(w.state)}">` +
        `<td class="w">${esc(w.worker)}</td><td class="w">${esc(w.state)}${w.stale ? " (last seen)" : ""}</td>` +
        `<td>${w.requests}</td><td>${w.prompt_tokens}</td><td>${w.cached_tokens}</td><td>${pct(w.hit_rate)}</td>` +
        `<td>${w.running}</td><td>${w.queued}</td></tr>`
    )
    .join("");
  return (
    `<div class="wk" data-sgnb-workers="${workers.length}"><span class="dim">the workers' own /metrics (every client's requests)</span>` +
    `<table><tr><th class="w">worker</th><th class="w">state</th><th>requests</th><th>prompt tok</th><th>cached tok</th>` +
    `<th>hit rate</th><th>running</th><th>queued</th></tr>${body}</table></div>`
  );
}

function render({ model, el }) {
  const root = viewRoot(el, CSS + STOP_CSS, "sgnb-cache", "sgnbCache");
  const opened = new Set(); // requests whose whole prompt is shown
  const stop = stopBox(model, root); // its own box: the rows are redrawn as requests finish

  function draw(follow = false) {
    const keep = root.querySelector(".tbl")?.scrollTop ?? 0;
    const rows = model.get("rows") || [];
    const s = model.get("summary") || {};
    const sel = model.get("selected") || "";
    const wcol = !!model.get("worker_column");
    const rate = Math.round(100 * (s.hit_rate || 0));
    const top = Math.max(1, ...rows.map((r) => r.prompt_tokens));
    const bars = rows
      .slice(-80)
      .map(
        (r) =>
          `<div title="${r.cached} cached / ${r.new} new"><span class="c" style="height:${(64 * r.cached) / top}px"></span>` +
          `<span class="n" style="height:${(64 * r.new) / top}px"></span></div>`
      )
      .join("");
    const body = rows
      .map(
        (r, i) =>
          `<tr class="${r.cached ? "hit" : ""}${sel && (r.request || r.rid) === sel ? " sel" : ""}" ` +
          `data-request="${esc(r.rid)}" data-cached="${r.cached}" title="click: its path in the radix tree">` +
          `<td>${i + 1}</td>` +
          (wcol ? `<td class="w" data-worker="${esc(r.worker ?? "unknown")}">${esc(r.worker ?? "unknown")}</td>` : "") +
          (opened.has(r.request || r.rid)
            ? `<td class="p open">${esc(r.prompt_full || r.prompt)}</td>`
            : `<td class="p" title="click: the whole prompt">${esc(r.prompt)}</td>`) +
          `<td>${r.prompt_tokens}</td>` +
          `<td class="h">${r.cached}</td><td>${r.new}</td><td class="h">${Math.round(100 * r.hit)}%</td>` +
          `<td>${r.ttft_ms.toFixed(0)}</td><td>${r.latency_ms.toFixed(0)}</td><td>${r.completion}</td>` +
          `<td>${esc(r.constraint)}</td><td class="${esc(r.finish || "")}">${r.finish === "abort" ? "stopped" : esc(r.finish || "")}</td></tr>`
      )
      .join("");
    root.dataset.requests = String(s.requests || 0);
    root.dataset.hitRate = String(s.hit_rate || 0);
    // stopped_tokens is the sum over the stopped requests (sgnb/widgets/_cache_static.py: stopped_line)
    const toks = `${s.stopped_tokens} token${s.stopped_tokens === 1 ? "" : "s"}`;
    const stopped = s.stopped
      ? ` · <span class="stopped" data-stopped="${s.stopped_tokens}">` +
        (s.stopped === 1 ? `1 request stopped after ${toks}` : `${s.stopped} requests stopped (${toks} generated in all)`) +
        `</span>`
      : "";
    root.dataset.stopped = String(s.stopped || 0);
    stop.content.innerHTML =
      `<div class="hd"><b>${esc(model.get("title"))}</b> <span class="dim">${s.requests || 0} requests · ` +
      `${s.cached_tokens || 0}/${s.prompt_tokens || 0} prompt tokens cached${stopped}</span>` +
      `<span class="rate"><i style="width:${rate}%"></i></span><b>${rate}%</b></div>` +
      workersTable(model.get("workers") || []) +
      (rows.length ? `<div class="bars">${bars}</div>` : `<div class="dim">(no finished requests yet)</div>`) +
      `<div class="tbl"><table><tr><th>#</th>${wcol ? '<th class="w" style="text-align:left">worker</th>' : ""}<th style="text-align:left">prompt</th><th>tokens</th><th>cached</th>` +
      `<th>new</th><th>hit</th><th>TTFT ms</th><th>latency ms</th><th>out</th><th>constraint</th><th>end</th></tr>${body}</table></div>`;
    const tbl = root.querySelector(".tbl");
    tbl.scrollTop = follow ? tbl.scrollHeight : keep; // new rows scroll into view; a click keeps the place
  }

  // A click on a row selects its request (a tree view shown with this panel highlights its path),
  // another click on it clears that; a click on the prompt shows it whole (decoded, up to its last
  // 2000 characters) or folds it again, and selects its request.
  root.addEventListener("click", (event) => {
    if (stop.click(event)) return;
    const tr = event.target.closest("tr[data-request]");
    if (!tr) return;
    const row = (model.get("rows") || [])[tr.rowIndex - 1];
    if (!row) return;
    const key = row.request || row.rid;
    let chosen = model.get("selected") === key ? "" : key;
    if (event.target.closest("td.p")) {
      if (opened.has(key)) opened.delete(key);
      else opened.add(key);
      chosen = key;
    }
    model.set("selected", chosen);
    model.save_changes();
    draw(false);
  });
  const follow = () => draw(true);
  const redraw = () => draw(false);
  model.on("change:rows", follow);
  model.on("change:summary", redraw);
  model.on("change:selected", redraw);
  model.on("change:workers", redraw);
  draw(true);
  return () => {
    model.off("change:rows", follow);
    model.off("change:summary", redraw);
    model.off("change:selected", redraw);
    stop.dispose();
    model.off("change:workers", redraw);
  };
}

export default { render };

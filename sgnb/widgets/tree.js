// RadixTreeWidget view: rows come laid out from Python (model "view"); this draws them as one
// HTML string (fast for thousands of rows) and turns clicks into trait changes.

const esc = (s) =>
  String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

function age(s) {
  if (s < 1) return "now";
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.round(s / 60)}m`;
  return `${Math.round(s / 3600)}h`;
}

function heat(age) {
  // recency: 1 for just used, fading to 0 over about two minutes
  return Math.max(0, 1 - Math.log10(1 + age) / 2.1).toFixed(2);
}

const GUIDE = { "|": "│  ", " ": "   ", "+": "├─ ", "`": "└─ " };
const expandGuide = (code) => Array.from(code, (c) => GUIDE[c] ?? "").join("");

function rowHtml(r, fade, animate) {
  const guide = `<span class="g">${expandGuide(r.guide)}</span>`;
  if (r.more !== undefined) {
    return (
      `<div class="sgnb-row more" data-more="${esc(r.more)}" title="show more">${guide}` +
      `<span class="txt">+${r.n} more</span><span class="chip dim">${r.sub} nodes · ${r.ntok} tok</span></div>`
    );
  }
  const cls = ["sgnb-row"];
  let style = `--heat:${heat(r.age)}`;
  if (r.path) cls.push("path");
  const hl = !r.hl ? "" : !r.hlc ? "new" : r.hlc >= r.ntok ? "cached" : "partial";
  if (hl) cls.push(hl === "cached" ? "req hit" : hl === "partial" ? "req part" : "req");
  if (hl === "partial") style += `;--cut:${((100 * r.hlc) / r.ntok).toFixed(1)}%`;
  if (r.fl && animate) cls.push("inflight"); // thousands of pulsing rows would keep the page busy
  if (r.ev !== undefined) {
    cls.push("evicted");
    style += `;animation-duration:${fade}s;animation-delay:-${Math.min(r.ev, fade)}s`;
  }
  const tog = r.kids ? `<span class="tog" data-toggle="${r.id}">${r.open ? "▾" : "▸"}</span>` : `<span class="tog"> </span>`;
  const hits = r.hits ? `<span class="chip hits" style="--h:${Math.min(1, Math.log2(1 + r.hits) / 5).toFixed(2)}">×${r.hits}</span>` : "";
  const sub = r.sub ? `<span class="chip dim">▸ ${r.sub} below</span>` : "";
  return (
    `<div class="${cls.join(" ")}" style="${style}" data-node-id="${r.id}"` +
    (r.ev !== undefined ? " data-evicted" : "") +
    (hl ? ` data-highlight="${hl}"` : "") +
    `>${guide}${tog}<span class="dot"></span><span class="txt">${esc(r.text)}</span>` +
    `<span class="chip">${r.ntok} tok</span>` +
    (hl === "partial" ? `<span class="chip part">${r.hlc} cached</span>` : "") +
    `${hits}${sub}<span class="age" data-age="${r.age}">${age(r.age)}</span></div>`
  );
}

function detailHtml(d) {
  if (!d || !d.id) return "";
  const flags = [d.evicted ? "evicted" : "", d.in_flight ? "in flight" : ""].filter(Boolean).join(", ");
  const reqs = (d.requests || [])
    .map(
      (q) =>
        `<tr><td>${esc(q.rid)}</td><td class="p">${esc(q.prompt)}</td><td>${q.prompt_tokens}</td>` +
        `<td>${q.cached_tokens}</td><td>${esc(q.ago)}</td></tr>`
    )
    .join("");
  return (
    `<div class="hd">${d.ntok} tokens after a ${d.prefix}-token prefix · ${d.hits} hit${d.hits === 1 ? "" : "s"} · used ${esc(d.age)} ago` +
    (flags ? ` · ${flags}` : "") +
    `<span class="x" data-close>✕</span></div><pre>${esc(d.text)}</pre>` +
    (reqs
      ? `<table><tr><th>request</th><th>prompt</th><th>tokens</th><th>cached</th><th>when</th></tr>${reqs}</table>`
      : `<div class="dim">no finished request entered this node yet</div>`)
  );
}

function readView(model) {
  const raw = model.get("view_json");
  if (!raw) return {};
  const text = typeof raw === "string" ? raw : new TextDecoder().decode(raw);
  return JSON.parse(text || "{}");
}

function render({ model, el }) {
  const born = performance.now();
  const root = document.createElement("div");
  root.className = "sgnb-tree";
  root.dataset.sgnbTree = "";
  root.innerHTML = `<div class="head"></div><div class="body"></div><div class="detail"></div>`;
  el.appendChild(root);
  const head = root.querySelector(".head");
  const body = root.querySelector(".body");
  const detail = root.querySelector(".detail");

  function draw() {
    const t0 = performance.now();
    const view = readView(model);
    const rows = view.rows || [];
    const st = view.stats || {};
    const fade = view.fade ?? 1.5;
    head.innerHTML =
      `<b>${esc(model.get("title"))}</b> <span class="dim">${st.nodes ?? 0} nodes · ${st.tokens ?? 0} tokens · ` +
      `${st.requests ?? 0} requests · hit rate ${Math.round(100 * (st.hit_rate || 0))}%` +
      (st.evicted ? ` · ${st.evicted} evicting` : "") +
      `</span>` +
      (st.highlight
        ? `<div class="hl">request ${esc(st.highlight.rid)}: its path, ${st.highlight.nodes} node` +
          `${st.highlight.nodes === 1 ? "" : "s"} (<span class="hit">${st.highlight.cached_tokens} of ` +
          `${st.highlight.prompt_tokens} prompt tokens cached</span>, <span class="new">the rest it wrote</span>)` +
          `<span class="x" data-unhighlight title="clear">✕</span></div>`
        : "");
    root.dataset.highlight = st.highlight ? st.highlight.rid : "";
    body.innerHTML = rows.length
      ? rows.map((r) => rowHtml(r, fade, rows.length <= 1000)).join("")
      : `<div class="dim">(empty: no cached prefixes yet)</div>`;
    const sel = model.get("selected");
    if (sel) {
      const hit = body.querySelector(`[data-node-id="${CSS.escape(sel)}"]`);
      if (hit) hit.classList.add("selected");
    }
    void body.offsetHeight; // include layout in the timing
    const ms = performance.now() - t0;
    root.dataset.rows = String(rows.length);
    root.dataset.nodes = String(rows.filter((r) => r.more === undefined).length);
    root.dataset.version = String(view.version ?? 0);
    root.dataset.renderMs = ms.toFixed(1);
    model.set("render_ms", ms);
    model.save_changes();
  }

  function drawDetail() {
    detail.innerHTML = detailHtml(model.get("detail"));
  }

  function toggle(list, id) {
    const cur = model.get(list).slice();
    const i = cur.indexOf(id);
    if (i >= 0) cur.splice(i, 1);
    else cur.push(id);
    model.set(list, cur);
  }

  root.addEventListener("click", (ev) => {
    const t = ev.target;
    if (t.closest("[data-unhighlight]")) {
      model.set("highlight", "");
      model.save_changes();
      return;
    }
    if (t.closest("[data-close]")) {
      model.set("selected", "");
      model.save_changes();
      return;
    }
    const tog = t.closest("[data-toggle]");
    if (tog) {
      const id = tog.dataset.toggle;
      const row = tog.closest(".sgnb-row");
      const isOpen = tog.textContent === "▾";
      if (isOpen) {
        toggle("collapsed", id);
        model.set("expanded", model.get("expanded").filter((x) => x !== id));
      } else {
        model.set("collapsed", model.get("collapsed").filter((x) => x !== id));
        if (!model.get("expanded").includes(id)) toggle("expanded", id);
      }
      model.save_changes();
      if (row) row.classList.add("pending");
      return;
    }
    const more = t.closest("[data-more]");
    if (more) {
      model.set("expanded", [...model.get("expanded"), "more:" + more.dataset.more]);
      model.save_changes();
      return;
    }
    const row = t.closest("[data-node-id]");
    if (row) {
      model.set("selected", row.dataset.nodeId);
      model.save_changes();
    }
  });

  // ages tick on between updates (rows carry their age at the time Python sent them)
  let sentAt = performance.now();
  model.on("change:view_json", () => (sentAt = performance.now()));
  const ticker = setInterval(() => {
    const spans = body.querySelectorAll(".age");
    if (spans.length > 3000) return;
    const dt = (performance.now() - sentAt) / 1000;
    for (const s of spans) s.textContent = age(Number(s.dataset.age) + dt);
  }, 2000);

  model.on("change:view_json", draw);
  model.on("change:selected", draw);
  model.on("change:detail", drawDetail);
  model.on("change:title", draw);
  draw();
  drawDetail();
  root.dataset.firstRenderMs = (performance.now() - born).toFixed(1);
  root.dataset.renderedAt = String(Date.now());
  return () => {
    clearInterval(ticker);
    model.off("change:view_json", draw);
    model.off("change:selected", draw);
    model.off("change:detail", drawDetail);
    model.off("change:title", draw);
  };
}

export default { render };

// TokenView: each prompt and output token as a chip, typed cached / prefilled / generated / forced /
// constrained; colour by type, probability or latency; hover a chip for its numbers.

const esc = (s) =>
  String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

const KIND_COLORS = {
  cached: "#fbd3a6",
  prefilled: "#e4e0dd",
  generated: "#d4e4f7",
  forced: "#d9cdf5",
  constrained: "#c8ebd3",
};
const KIND_HELP = {
  cached: "served from the radix cache",
  prefilled: "computed for this request",
  generated: "sampled freely",
  forced: "the grammar allowed one token",
  constrained: "sampled from the masked distribution",
};

const CSS = `
.sgnb-tok { font: 12px var(--jp-ui-font-family, sans-serif); color: var(--jp-ui-font-color1, #222);
  border: 1px solid var(--jp-border-color2, #ddd); border-radius: 4px; padding: 6px 8px; position: relative; }
.sgnb-tok .hd { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
.sgnb-tok .hd b { font-size: 13px; }
.sgnb-tok .lg span { display: inline-block; padding: 0 4px; border-radius: 3px; margin-right: 4px; color: #222; }
.sgnb-tok .dim { color: var(--jp-ui-font-color2, #777); }
.sgnb-tok .rh { margin-top: 6px; color: var(--jp-ui-font-color2, #666); }
.sgnb-tok .chips { font-family: var(--jp-code-font-family, monospace); line-height: 1.9; max-height: 420px;
  overflow: auto; }
.sgnb-tok .chip { display: inline-block; white-space: pre; padding: 0 1px; margin: 1px 1px; border-radius: 2px;
  cursor: default; border-bottom: 2px solid transparent; color: #222; }
.sgnb-tok .chip:hover { outline: 1px solid #333; }
.sgnb-tok .chip.out { font-weight: 500; }
.sgnb-tok .cursor { display: inline-block; width: 7px; background: #555; animation: sgnbblink 1s infinite; }
@keyframes sgnbblink { 50% { opacity: 0.2; } }
.sgnb-tok-card { position: fixed; z-index: 1000; display: none; background: var(--jp-layout-color1, #fff);
  border: 1px solid #bbb; box-shadow: 0 2px 8px rgba(0,0,0,.2); padding: 6px 8px; border-radius: 4px;
  min-width: 220px; max-width: 520px; pointer-events: none; }
.sgnb-tok-card table { border-collapse: collapse; }
.sgnb-tok-card td, .sgnb-tok-card th { padding: 0 6px; text-align: left; font-size: 11px; white-space: pre; }
.sgnb-tok-card .tk { font-family: var(--jp-code-font-family, monospace); background: #f1f1f1; }
.sgnb-tok-card .masked { text-decoration: line-through; color: #b33; }
.sgnb-tok-card .pick { font-weight: 700; }
.sgnb-tok-card { font: 12px var(--jp-ui-font-family, sans-serif); color: var(--jp-ui-font-color1, #222); }
.sgnb-tok-card .dim { color: var(--jp-ui-font-color2, #777); }
.sgnb-tok .bar { display: inline-block; height: 7px; background: #4e79a7; vertical-align: middle; }
.sgnb-tok select { font-size: 12px; }
`;

function probColor(p) {
  p = Math.min(1, Math.max(0, p));
  const mix = (c) => Math.round(255 + (c - 255) * p);
  return `rgb(${mix(37)},${mix(99)},${mix(180)})`;
}

function latencyColor(ms, maxMs) {
  let x = Math.log1p(Math.max(0, ms)) / Math.log1p(Math.max(maxMs, 1));
  x = Math.min(1, Math.max(0, x));
  const mix = (c) => Math.round(255 + (c - 255) * x);
  return `rgb(${mix(222)},${mix(93)},${mix(38)})`;
}

const shown = (t) => {
  const s = String(t).replace(/\n/g, "⏎").replace(/\t/g, "⇥");
  return s.trim() || !s ? s : s.replace(/ /g, "·");
};

function render({ model, el }) {
  const root = viewRoot(el, CSS, "sgnb-tok", "sgnbTokens");
  const head = document.createElement("div");
  head.className = "hd";
  const body = document.createElement("div");
  root.append(head, body);
  // One card per page, on the page's body: output areas clip (and may re-anchor) what overflows
  // them, and a re-displayed output can leave a view that is never cleaned up.
  let card = document.querySelector("[data-sgnb-tokens-card]");
  if (!card) {
    card = document.createElement("div");
    card.className = "sgnb-tok-card";
    card.dataset.sgnbTokensCard = "";
    document.body.append(card);
  }
  let view = { rows: [], choices: {} };

  // The header is built once (a select rebuilt on every push would close under the pointer).
  head.innerHTML =
    `<b></b><label class="dim">colour by <select><option value="type">type</option>` +
    `<option value="prob">probability</option><option value="latency">latency</option></select></label>` +
    `<span class="lg"></span>`;
  const select = head.querySelector("select");
  select.addEventListener("change", (ev) => {
    model.set("color_by", ev.target.value);
    model.save_changes();
  });

  function drawHead() {
    head.querySelector("b").textContent = model.get("title");
    select.value = model.get("color_by");
    const totals = {};
    for (const r of view.rows) for (const k in r.counts) totals[k] = (totals[k] || 0) + r.counts[k];
    head.querySelector(".lg").innerHTML = Object.keys(KIND_COLORS)
      .map((k) => `<span style="background:${KIND_COLORS[k]}" title="${KIND_HELP[k]}">${k} ${totals[k] || 0}</span>`)
      .join("");
  }

  function background(chip, by, maxMs) {
    if (by === "prob" && chip.p !== undefined) return probColor(chip.p);
    if (by === "latency" && chip.ms !== undefined) return latencyColor(chip.ms, maxMs);
    return KIND_COLORS[chip.k];
  }

  function drawBody() {
    const by = model.get("color_by");
    let maxMs = 1;
    for (const r of view.rows) for (const c of r.out) if (c.ms > maxMs) maxMs = c.ms;
    let total = 0;
    const parts = view.rows.map((r, ri) => {
      const c = r.counts;
      const chips = r.prompt
        .concat(r.out)
        .map((chip, i) => {
          let st = `background:${background(chip, by, maxMs)};`;
          if (chip.p !== undefined && by !== "prob") st += `border-bottom-color:${probColor(chip.p)};`;
          if (by === "prob" && chip.p !== undefined && chip.p > 0.6) st += "color:#fff;";
          const out = i >= r.prompt.length ? " out" : "";
          return `<span class="chip${out}" data-row="${ri}" data-i="${i}" data-kind="${chip.k}" style="${st}">${esc(shown(chip.t))}</span>`;
        })
        .join("");
      total += r.prompt.length + r.out.length;
      const same = r.same ? `<span class="dim">(same prompt as above) </span>` : "";
      const cursor = r.done ? "" : `<span class="cursor">&nbsp;</span>`;
      return (
        `<div class="rh">request ${esc(r.rid)}${r.constraint ? " · " + esc(r.constraint) : ""} · prompt ` +
        `${c.cached + c.prefilled} (${c.cached} cached) · output ${r.out.length} (${c.forced} forced, ` +
        `${c.constrained} constrained)${r.done ? (r.finish ? " · " + esc(r.finish) : "") : " · running"}` +
        `${r.probs ? "" : " · no logprobs returned"}</div>` +
        `<div class="chips">${same}${chips}${cursor}</div>`
      );
    });
    const choices = Object.entries(view.choices || {}).map(([name, rows]) => {
      const trs = rows
        .map(
          (o) =>
            `<tr><td>${o.picked ? "✔" : ""}</td><td class="tk">${esc(o.option)}</td><td>${o.logprob.toFixed(3)}</td>` +
            `<td><span class="bar" style="width:${Math.round(100 * o.p)}px"></span> ${(100 * o.p).toFixed(0)}%</td></tr>`,
        )
        .join("");
      return `<div class="rh">select <b>${esc(name)}</b>: normalised logprob per choice</div><table>${trs}</table>`;
    });
    body.innerHTML =
      parts.join("") + choices.join("") + (view.rows.length || choices.length ? "" : `<div class="dim">(no traced requests yet)</div>`);
    root.dataset.chips = String(total);
    root.dataset.rows = String(view.rows.length);
  }

  function draw() {
    try {
      const raw = model.get("view_json");
      view = JSON.parse((typeof raw === "string" ? raw : new TextDecoder().decode(raw)) || "{}");
    } catch (e) {
      view = { rows: [], choices: {} };
    }
    view.rows = view.rows || [];
    drawHead();
    drawBody();
  }

  function topTable(chip) {
    const pick = chip.t;
    const allowed = (chip.top || [])
      .map(([t, p]) => `<tr><td class="tk${t === pick ? " pick" : ""}">${esc(shown(t))}</td><td>${p.toFixed(3)}</td></tr>`)
      .join("");
    if (!chip.unc) return allowed ? `<table><tr><th>top-k</th><th>p</th></tr>${allowed}</table>` : "";
    const unc = chip.unc
      .map(
        ([t, p, a]) =>
          `<tr><td class="tk${a ? "" : " masked"}">${esc(shown(t))}</td><td class="${a ? "" : "masked"}">${p.toFixed(3)}</td></tr>`,
      )
      .join("");
    return (
      `<table><tr><td style="vertical-align:top"><table><tr><th>allowed top-k</th><th>p</th></tr>${allowed}</table></td>` +
      `<td style="vertical-align:top"><table><tr><th>model's own top-k</th><th>p</th></tr>${unc}</table></td></tr></table>` +
      `<div class="dim">struck out: the grammar masked it</div>`
    );
  }

  function showCard(target) {
    const row = view.rows[Number(target.dataset.row)];
    if (!row) return;
    const chip = row.prompt.concat(row.out)[Number(target.dataset.i)];
    if (!chip) return;
    const lines = [
      `<div><span class="tk" style="background:${KIND_COLORS[chip.k]}">${esc(shown(chip.t))}</span> <b>${chip.k}</b>` +
        ` <span class="dim">${KIND_HELP[chip.k]}</span></div>`,
    ];
    if (chip.p !== undefined)
      lines.push(`<div>probability <b>${chip.p.toFixed(4)}</b> · rank ${chip.r ? chip.r : "&gt; top-k"}</div>`);
    if (chip.n !== undefined) lines.push(`<div>${chip.n} token${chip.n === 1 ? "" : "s"} allowed by the grammar</div>`);
    if (chip.ms !== undefined) lines.push(`<div>latency ${chip.ms.toFixed(1)} ms</div>`);
    lines.push(topTable(chip));
    card.innerHTML = lines.join("");
    card.style.display = "block";
    const c = target.getBoundingClientRect();
    const w = window.innerWidth, h = window.innerHeight;
    card.style.left = `${Math.max(0, Math.min(c.left, w - card.offsetWidth - 4))}px`;
    const below = c.bottom + 4;
    card.style.top = `${below + card.offsetHeight > h ? Math.max(0, c.top - card.offsetHeight - 4) : below}px`;
  }

  body.addEventListener("mouseover", (ev) => {
    const chip = ev.target.closest(".chip");
    if (chip) showCard(chip);
  });
  body.addEventListener("mouseout", (ev) => {
    if (ev.target.closest(".chip")) card.style.display = "none";
  });
  model.on("change:view_json", draw);
  model.on("change:color_by", draw);
  draw();
  return () => {
    card.style.display = "none";
    model.off("change:view_json", draw);
    model.off("change:color_by", draw);
  };
}

export default { render };

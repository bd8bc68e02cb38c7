// ConstrainedView: one chip per generated token; its width of choice (allowed tokens) as a bar,
// forced tokens (exactly one allowed) marked; click a chip for what was allowed. A live view has the
// Stop button (_stop.js comes first: sgnb/widgets/constrained.py joins the two).

const esc = (s) =>
  String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

const CSS = `
.sgnb-cons { font: 12px var(--jp-ui-font-family, sans-serif); color: var(--jp-ui-font-color1, #222);
  border: 1px solid var(--jp-border-color2, #ddd); border-radius: 4px; padding: 6px 8px; }
.sgnb-cons code { font-size: 11px; background: var(--jp-layout-color2, #f3f3f3); padding: 0 3px; }
.sgnb-cons .toks { font-family: var(--jp-code-font-family, monospace); margin: 6px 0; line-height: 2.1; }
.sgnb-cons .tok { display: inline-block; position: relative; white-space: pre; padding: 0 3px; margin: 0 1px;
  border-radius: 3px; background: #e8f0fe; cursor: pointer; line-height: 1.5; }
.sgnb-cons .tok.forced { background: #ffd8a8; box-shadow: inset 0 -2px #e8590c; }
.sgnb-cons .tok.rejected { background: #f8c0c0; }
.sgnb-cons .tok i { position: absolute; left: 0; bottom: -3px; height: 2px; background: #4e79a7; }
.sgnb-cons .legend span { display: inline-block; padding: 0 4px; border-radius: 3px; margin-right: 6px; }
.sgnb-cons .ok { color: #2a7; } .sgnb-cons .bad { color: #c33; } .sgnb-cons .dim { color: #777; }
.sgnb-cons .why { margin-top: 4px; font-family: var(--jp-code-font-family, monospace); }
.sgnb-cons .cursor { display: inline-block; width: 6px; height: 1em; background: #999; vertical-align: text-bottom;
  animation: sgnb-cons-blink 1s steps(2) infinite; }
@keyframes sgnb-cons-blink { 50% { opacity: 0; } }
`;

function render({ model, el }) {
  const root = viewRoot(el, CSS + STOP_CSS, "sgnb-cons", "sgnbConstrained");
  const stop = stopBox(model, root); // its own box: the chips are redrawn with every token

  function draw() {
    const steps = model.get("steps") || [];
    const info = model.get("info") || {};
    const logMax = Math.log(Math.max(2, ...steps.map((s) => s.allowed)));
    const toks = steps
      .map((s, i) => {
        const cls = ["tok", s.forced ? "forced" : "", s.accepted ? "" : "rejected"].join(" ");
        const w = Math.max(4, (100 * Math.log(Math.max(1, s.allowed))) / logMax);
        return (
          `<span class="${cls}" data-step="${i}" data-forced="${s.forced ? 1 : 0}" title="${s.allowed} allowed">` +
          `${esc(s.text) || "∅"}<i style="width:${s.forced ? 0 : w}%"></i></span>`
        );
      })
      .join("");
    const v = info.valid === true ? "ok" : info.valid === false ? "bad" : "dim";
    const state = info.state || "done";
    root.dataset.forced = String(info.forced || 0);
    root.dataset.steps = String(steps.length);
    root.dataset.state = state;
    stop.content.innerHTML =
      `<div><b>${esc(info.kind || "")}</b> <code>${esc((info.source || "").slice(0, 300))}</code></div>` +
      `<div class="toks">${toks}${state === "running" || state === "waiting" ? `<span class="cursor"></span>` : ""}</div>` +
      `<div class="legend"><span style="background:#ffd8a8">forced: ${info.forced || 0}</span>` +
      `<span style="background:#e8f0fe">free: ${(info.tokens || 0) - (info.forced || 0)}</span>` +
      `<span class="dim">bar = log(allowed tokens)</span> ` +
      `<span class="${v}">${esc(info.message || "")}</span>` +
      (info.terminated ? ` <span class="dim">· grammar complete</span>` : "") +
      `</div><div class="why dim"></div>`;
  }

  root.addEventListener("click", (ev) => {
    if (stop.click(ev)) return;
    const chip = ev.target.closest("[data-step]");
    if (!chip) return;
    const s = (model.get("steps") || [])[Number(chip.dataset.step)];
    const why = root.querySelector(".why");
    why.textContent =
      `step ${chip.dataset.step}: token ${s.id} ${JSON.stringify(s.text)} - ${s.allowed} tokens allowed` +
      (s.options.length ? `: ${s.options.map((o) => JSON.stringify(o)).join(" | ")}` : "");
  });
  const stopWatching = onChanges(model, ["steps", "info"], draw);
  draw();
  return () => {
    stopWatching();
    stop.dispose();
  };
}

export default { render };

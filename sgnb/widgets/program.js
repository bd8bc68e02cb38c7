// ProgramView: role blocks, variable spans (highlighted, named) and select() choices as bars.

const esc = (s) =>
  String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);

const CSS = `
.sgnb-prog { font: 12px var(--jp-ui-font-family, sans-serif); color: var(--jp-ui-font-color1, #222);
  border: 1px solid var(--jp-border-color2, #ddd); border-radius: 4px; padding: 6px 8px; }
.sgnb-prog .blk { border-radius: 4px; padding: 3px 6px; margin: 3px 0; }
.sgnb-prog .blk.system { background: #f1e8ff; } .sgnb-prog .blk.user { background: #e8f0fe; }
.sgnb-prog .blk.assistant { background: #e9f7ef; }
.sgnb-prog .role { font-size: 10px; color: #666; text-transform: uppercase; letter-spacing: .04em; }
.sgnb-prog .txt { white-space: pre-wrap; font-family: var(--jp-code-font-family, monospace); }
.sgnb-prog .var { background: #fff3bf; border-bottom: 2px solid #f59f00; }
.sgnb-prog .var sub { color: #a60; font-size: 9px; margin-left: 2px; }
.sgnb-prog table { border-collapse: collapse; margin: 2px 0 4px 8px; }
.sgnb-prog td { padding: 0 6px; }
.sgnb-prog .bar { display: inline-block; height: 8px; background: #4e79a7; vertical-align: middle; }
.sgnb-prog tr.picked { font-weight: 600; }
.sgnb-prog .cursor { display: inline-block; width: 6px; height: 1em; background: #999; vertical-align: text-bottom;
  animation: sgnb-blink 1s steps(2) infinite; }
@keyframes sgnb-blink { 50% { opacity: 0; } }
`;

function blocks(segments) {
  const out = [];
  for (const s of segments) {
    const last = out[out.length - 1];
    if (last && last.role === s.role) last.segs.push(s);
    else out.push({ role: s.role, segs: [s] });
  }
  return out;
}

function render({ model, el }) {
  const root = viewRoot(el, CSS, "sgnb-prog", "sgnbProgram");

  function draw() {
    const segs = model.get("segments") || [];
    const choices = model.get("choices") || {};
    const body = blocks(segs)
      .map((b) => {
        const inner = b.segs
          .map((s) =>
            s.var
              ? `<span class="var" data-var="${esc(s.var)}">${esc(s.text)}<sub>${esc(s.var)}</sub></span>`
              : esc(s.text)
          )
          .join("");
        const role = b.role ? `<div class="role">${esc(b.role)}</div>` : "";
        return `<div class="blk ${esc(b.role || "")}">${role}<div class="txt">${inner}</div></div>`;
      })
      .join("");
    const sel = Object.entries(choices)
      .map(([v, rows]) => {
        const trs = rows
          .map(
            (r) =>
              `<tr class="${r.picked ? "picked" : ""}" data-option="${esc(r.option)}"><td>${r.picked ? "✔" : ""}</td>` +
              `<td>${esc(r.option)}</td><td>${r.logprob.toFixed(3)}</td>` +
              `<td><span class="bar" style="width:${Math.round(120 * r.p)}px"></span> ${Math.round(100 * r.p)}%</td></tr>`
          )
          .join("");
        return `<div>select <b>${esc(v)}</b> <span style="color:#777">normalized logprob · softmax share</span><table>${trs}</table></div>`;
      })
      .join("");
    root.innerHTML = `<div><b>${esc(model.get("title"))}</b></div>${body}${sel}`;
  }

  const stopWatching = onChanges(model, ["segments", "choices"], draw);
  draw();
  return stopWatching;
}

export default { render };

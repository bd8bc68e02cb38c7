// ProgramLiveView: a running %%sglang program's live view (HTML rendered by the kernel, sgnb.notebook.views
// .ProgramStateView) with the Stop button of the other live views (_stop.js comes first: sgnb/widgets/program.py
// joins them). The button shows while the program runs and goes when its cell ends (`stoppable`).

const CSS = `.sgnb-prog-live { font: 12px var(--jp-ui-font-family, sans-serif); }`;

function render({ model, el }) {
  const root = viewRoot(el, CSS + STOP_CSS, "sgnb-prog-live", "sgnbProgramLive");
  // The button has a box of its own: the program's HTML is replaced up to 10 times a second, and a
  // button redrawn with it would be swapped between a click's mousedown and mouseup (a lost click).
  root.innerHTML = `<div class="sgnb-stop-box"></div><div class="sgnb-prog-body"></div>`;
  const [box, body] = root.children;
  const stop = stopControl(model, root, () => drawButton());

  function drawButton() {
    root.dataset.running = model.get("stoppable") ? "1" : "0";
    box.innerHTML = stop.html();
  }
  function drawBody() {
    body.innerHTML = model.get("html") || "";
  }

  root.addEventListener("click", (ev) => stop.click(ev));
  const unwatchButton = onChanges(model, ["stoppable", "stop_route", "kernel_id"], drawButton);
  const unwatchBody = onChanges(model, ["html"], drawBody);
  drawButton();
  drawBody();
  return () => {
    unwatchButton();
    unwatchBody();
  };
}

export default { render };

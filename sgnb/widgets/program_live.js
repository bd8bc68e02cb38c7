// ProgramLiveView: a running %%sglang program's live view (HTML rendered by the kernel, sgnb.notebook.views
// .ProgramStateView) with the Stop button of the other live views (_stop.js comes first: sgnb/widgets/program.py
// joins them). The button shows while the program runs and goes when its cell ends (`stoppable`).

const CSS = `.sgnb-prog-live { font: 12px var(--jp-ui-font-family, sans-serif); }`;

function render({ model, el }) {
  const root = viewRoot(el, CSS + STOP_CSS, "sgnb-prog-live", "sgnbProgramLive");
  const stop = stopBox(model, root); // the program's HTML is replaced up to 10 times a second

  function draw() {
    root.dataset.running = model.get("stoppable") ? "1" : "0";
    stop.content.innerHTML = model.get("html") || "";
  }

  root.addEventListener("click", (ev) => stop.click(ev));
  const stopWatching = onChanges(model, ["html", "stoppable"], draw);
  draw();
  return () => {
    stopWatching();
    stop.dispose();
  };
}

export default { render };

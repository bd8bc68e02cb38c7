// The Stop button of sgnb's live views (put in front of a view's module by its Python class).
// With `stop_route` (an ipykernel with subshells: sgnb/widgets/_stop.py routes this one message to a
// subshell thread) a click sends {type: "stop"}: a running %%sglang program aborts its requests and
// its cell ends normally, cells queued after it run. Otherwise, or when no program runs (the reply
// says stopped: 0), it interrupts the kernel the way Kernel > Interrupt does (the server's REST API).
function jupyterServer() {
  const el = document.getElementById("jupyter-config-data");
  if (!el) return null; // not JupyterLab / Notebook 7 (VS Code, Colab): no button
  try {
    const cfg = JSON.parse(el.textContent || "{}");
    return { base: String(cfg.baseUrl || "/").replace(/\/?$/, "/"), token: cfg.token || "" };
  } catch {
    return null;
  }
}

// Ask the kernel side to stop the running program; resolves to the number stopped (null: no reply).
function stopByMessage(model, timeoutMs = 5000) {
  return new Promise((resolve) => {
    const done = (n) => {
      model.off("msg:custom", onMsg);
      clearTimeout(timer);
      resolve(n);
    };
    const onMsg = (msg) => {
      if (msg && msg.type === "stop-reply") done(Number(msg.stopped) || 0);
    };
    const timer = setTimeout(() => done(null), timeoutMs);
    model.on("msg:custom", onMsg);
    model.send({ type: "stop" });
  });
}

async function stopOrInterrupt(model) {
  if (model.get("stop_route")) {
    const n = await stopByMessage(model);
    if (n === null) return "no-reply"; // never interrupt late: a later cell may be running by then
    if (n > 0) return "stopped";
  }
  return (await interruptKernel(model.get("kernel_id"))) ? "ok" : "failed";
}

async function interruptKernel(kernelId) {
  const server = jupyterServer();
  if (!server || !kernelId) return false;
  const headers = {};
  const xsrf = document.cookie.match("\\b_xsrf=([^;]*)\\b"); // as @jupyterlab/services reads it
  if (xsrf) headers["X-XSRFToken"] = xsrf[1];
  if (server.token) headers["Authorization"] = `token ${server.token}`;
  const url = `${server.base}api/kernels/${encodeURIComponent(kernelId)}/interrupt`;
  const reply = await fetch(url, { method: "POST", headers, credentials: "same-origin" });
  return reply.ok;
}


const STOP_CSS = `
.sgnb-stop { float: right; font: 12px var(--jp-ui-font-family, sans-serif); cursor: pointer; margin-left: 8px;
  border: 1px solid #c33; color: #c33; background: var(--jp-layout-color1, #fff); border-radius: 3px; padding: 0 8px; }
.sgnb-stop:disabled { opacity: .6; cursor: default; }
`;

// The button of a view whose model has `kernel_id` and `stoppable`: `html()` draws it (nothing when
// there is nothing to stop or no Jupyter server to ask), `click(event)` handles a click on it and says
// whether it was one; `redraw` is called while the interrupt is on its way and when it is answered.
function stopControl(model, root, redraw) {
  let stopping = false;
  return {
    html() {
      if (!(model.get("stoppable") && model.get("kernel_id") && jupyterServer())) return "";
      const title = model.get("stop_route")
        ? "abort the running program's requests: the cell ends with the text so far"
        : "abort the running requests: interrupts the kernel, as Kernel > Interrupt does";
      return (
        `<button class="sgnb-stop" data-stop title="${title}"${stopping ? " disabled" : ""}>` +
        `${stopping ? "stopping…" : "■ Stop"}</button>`
      );
    },
    click(event) {
      if (!event.target.closest("[data-stop]")) return false;
      stopping = true;
      redraw();
      stopOrInterrupt(model)
        .catch(() => "failed")
        .then((how) => {
          stopping = false;
          root.dataset.stopSent = how;
          redraw();
        });
      return true;
    },
  };
}

// The button in a box of its own in `root`, in front of `content` (where the view draws). A view redraws
// its content with every token or row; a button redrawn with it would be replaced between a click's
// mousedown and mouseup, and the click lost. The box redraws only when the button changes. Returns
// {content, click(event), dispose()}: `click` as stopControl's, `dispose` for the view's cleanup.
function stopBox(model, root) {
  const box = document.createElement("div");
  box.className = "sgnb-stop-box";
  const content = document.createElement("div");
  root.append(box, content);
  const draw = () => {
    box.innerHTML = control.html();
  };
  const control = stopControl(model, root, draw);
  const names = ["stoppable", "stop_route", "kernel_id"];
  for (const name of names) model.on(`change:${name}`, draw);
  draw();
  return {
    content,
    click: (event) => control.click(event),
    dispose: () => names.forEach((name) => model.off(`change:${name}`, draw)),
  };
}

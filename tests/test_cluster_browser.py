"""A cluster session's cache panel in JupyterLab (Debian's Chromium, Playwright; test_browser's set-up).

``%sglang cluster start`` then ``%sglang stats``: the panel has a ``worker`` column (each row the
worker whose KV events show it served the request: ``w0``, ``w1`` or ``unknown``) and the workers'
own ``/metrics`` figures above its rows (one row per worker, then ``all``), and it fits a 1300 px
wide JupyterLab window: no horizontal scrollbar in the panel, its table or the notebook.
"""

from __future__ import annotations

import json
import time
from typing import Any

from test_browser import ARTIFACTS, lab, run_notebook, sync_api, wait_output

__all__ = ["lab"]  # the fixture, imported so pytest finds it here

LONG = "You are a meticulous assistant for a shipping company with ports on three continents. " * 3
CELLS = [
    "%load_ext sgnb\n%sglang cluster start --workers 2 --policy round_robin",
    *(
        f'%%sglang\ns += "{LONG}Question {i}: name a port." + sgl.gen("a{i}", max_tokens=4, temperature=0)'
        for i in range(3)
    ),
    "import sgnb\nsgnb.get_session().runtime.wait_tagged(20)\n%sglang stats",
    'print("ALL_DONE")',
    "%sglang cluster stop",
]
MEASURE = """() => [...document.querySelectorAll('.sgnb-cache')].map((panel) => {
  const over = (e) => (e ? e.scrollWidth - e.clientWidth : null);
  return {
    heads: [...panel.querySelectorAll('.tbl th')].map(th => th.innerText.trim()),
    workers: [...panel.querySelectorAll('.tbl td[data-worker]')].map(td => td.dataset.worker),
    figures: [...panel.querySelectorAll('.wk tr[data-worker]')].map(tr => [tr.dataset.worker, tr.dataset.state]),
    panelOver: over(panel), tableOver: over(panel.querySelector('.tbl')),
    outputOver: over(panel.closest('.jp-OutputArea-output')),
    notebookOver: over(document.querySelector('.jp-NotebookPanel-notebook')),
    panelWidth: panel.getBoundingClientRect().width, windowWidth: window.innerWidth,
  };
})"""


def test_cluster_cache_panel_has_a_worker_column_and_fits_1300px(lab: dict[str, Any]) -> None:
    with sync_api.sync_playwright() as p:
        page, errors = run_notebook(p, lab, "cluster-panel", "cluster_panel.ipynb", CELLS)
        try:
            wait_output(page, "ALL_DONE", 600)
            deadline = time.time() + 30
            panels = page.evaluate(MEASURE)  # the cluster view's panel, then %sglang stats'
            while (len(panels) < 2 or len(panels[-1]["workers"]) < 3) and time.time() < deadline:
                time.sleep(0.3)
                panels = page.evaluate(MEASURE)
            page.screenshot(path=str(ARTIFACTS / "browser-cluster-panel.png"))
            last = page.locator(".sgnb-cache >> nth=-1")
            last.scroll_into_view_if_needed()
            last.screenshot(path=str(ARTIFACTS / "cluster-cache-panel.png"))
            print("cache panels at 1300 px:", json.dumps(panels))
            assert len(panels) == 2, panels
            stats = panels[-1]
            assert stats["windowWidth"] == 1300
            assert stats["heads"][:3] == ["#", "worker", "prompt"]
            assert len(stats["workers"]) == 3 and set(stats["workers"]) <= {"w0", "w1", "unknown"}
            assert [w for w, _ in stats["figures"]] == ["w0", "w1", "all"]
            assert [s for _, s in stats["figures"]] == ["alive", "alive", "2/2 alive"]
            assert panels[0]["figures"] == []  # the cluster view shows them in its own table
            for seen in panels:  # no horizontal scrollbar: panel, its table, the output, the notebook
                assert seen["panelOver"] <= 0 and seen["tableOver"] <= 0, seen
                assert seen["outputOver"] <= 0 and seen["notebookOver"] <= 0, seen
            wait_output(page, "stopped the router", 120)
            assert not errors, errors
        finally:
            page.context.browser.close()

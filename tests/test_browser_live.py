"""The live parts of the views in a real browser (JupyterLab + Debian's Chromium, Playwright),
reusing test_browser's JupyterLab fixture, in a notebook of ``%sglang`` cells as a user writes them:

* a click on a cache-panel row highlights that request's path in the radix tree shown with it
  (``%sglang tree`` and ``%sglang stats``, or ``%%sglang --show tree,cache``): the nodes its prompt
  found cached (SGLang's ``RadixCache.match_prefix``, the request's ``cached_tokens``) apart from the
  nodes it wrote.
* ``%%sglang --show constrained`` paints each token while the constrained generation runs: two
  samples taken during the run differ and the second has more tokens.
* the Stop button (on the program view; the cell's cache panel and live constrained view have it
  too, a stats panel whose cell has ended has none) aborts a running generation while its cell
  runs: the request ends with SGLang's ``finish_reason`` ``abort``, the views say "stopped after N
  tokens", no KV slot stays held (used + free = capacity), every button goes and the next cell runs.
"""

from __future__ import annotations

import json
import time
from typing import Any

from test_browser import ARTIFACTS, CHROMIUM, lab, outputs_text, run_notebook, sync_api, wait_output

__all__ = ["lab"]  # the fixture, imported so pytest finds it here

CELLS = [
    "%load_ext sgnb\n%sglang start",
    '%%sglang\ns += "The capital of France is" + sgl.gen("first", max_tokens=6, temperature=0)',
    # shares the first prompt, then branches off: the tree splits where they part
    '%%sglang\ns += "The capital of France is the city of" + sgl.gen("second", max_tokens=6, temperature=0)',
    "%sglang tree\n%sglang stats",  # the session's views: the tree and every request so far
    'print("ALL_DONE")',
]
HIGHLIGHT = """() => {
  const t = document.querySelector('[data-sgnb-tree]');
  if (!t) return null;
  const rows = [...t.querySelectorAll('[data-highlight]')];
  const n = (kind) => rows.filter(r => r.dataset.highlight === kind).length;
  return {rid: t.dataset.highlight, cached: n('cached'), partial: n('partial'), new: n('new'),
          text: rows.map(r => r.querySelector('.txt').innerText)};
}"""


def open_and_run_all(p: Any, lab: dict[str, Any], name: str, cells: list[str]) -> tuple[Any, Any, list[str]]:
    """Write ``cells`` as notebook ``name`` and run them all in JupyterLab: browser, page, page errors."""
    page, errors = run_notebook(p, lab, name.split(".")[0], name, cells)
    return page.context.browser, page, errors


def test_cache_row_click_highlights_the_tree_path(lab: dict[str, Any]) -> None:
    assert CHROMIUM.exists()
    with sync_api.sync_playwright() as p:
        browser, page, errors = open_and_run_all(p, lab, "live_highlight.ipynb", CELLS)
        wait_output(page, "ALL_DONE", 300)
        none = {"rid": "", "cached": 0, "partial": 0, "new": 0, "text": []}
        assert page.evaluate(HIGHLIGHT) == none
        rows = page.locator("[data-sgnb-cache] tr[data-request]")
        prompts = [rows.nth(i).locator("td.p").inner_text() for i in range(rows.count())]
        first_i = next(i for i, t in enumerate(prompts) if t.endswith("France is"))
        second_i = next(i for i, t in enumerate(prompts) if "the city of" in t)
        first_row, second_row = rows.nth(first_i), rows.nth(second_i)
        assert int(second_row.get_attribute("data-cached") or 0) > 0, prompts

        # the second request: the shared prefix it found cached, and the branch it wrote
        second_row.locator("td >> nth=2").click(force=True)  # its token count, not the prompt
        deadline = time.time() + 30
        while not ((mark := page.evaluate(HIGHLIGHT)) and mark["cached"] and mark["new"]):
            assert time.time() < deadline, mark
            time.sleep(0.2)
        assert "sel" in (second_row.get_attribute("class") or "")
        assert mark["rid"] == second_row.get_attribute("data-request") and mark["partial"] == 0, mark
        assert mark["text"][0].endswith("France is") and "the city of" in mark["text"][-1], mark
        page.locator("[data-sgnb-tree]").screenshot(path=str(ARTIFACTS / "tree-highlight.png"))

        # the first request found nothing cached: its whole path is new
        first_row.locator("td >> nth=2").click(force=True)
        deadline = time.time() + 30
        while not ((first := page.evaluate(HIGHLIGHT)) and first["rid"] != mark["rid"] and first["new"]):
            assert time.time() < deadline, first
            time.sleep(0.2)
        assert first["cached"] == first["partial"] == 0 and first["new"] >= 2, first
        # a second click on the selected row clears the highlight
        first_row.locator("td >> nth=2").click(force=True)
        deadline = time.time() + 30
        while (cleared := page.evaluate(HIGHLIGHT))["rid"]:
            assert time.time() < deadline, cleared
            time.sleep(0.2)
        assert cleared == none
        page.screenshot(path=str(ARTIFACTS / "browser-live-highlight.png"), full_page=True)
        browser.close()
    assert not [e for e in errors if "sgnb" in e or "render" in e], errors
    print("\nLIVE_HIGHLIGHT", json.dumps({"second": mark, "first": first}))


PHONES = r"(\d{3}-\d{4}, ){11}\d{3}-\d{4}"
CONSTRAINED_CELLS = [
    "%load_ext sgnb\n%sglang start",
    f'%%sglang --show constrained\ns += "Phone numbers: " + sgl.gen("p", regex=r"{PHONES}", temperature=0)',
    'print("ALL_DONE")',
]
CONSTRAINED = """() => {
  const v = document.querySelector('[data-sgnb-constrained]');
  return v ? {state: v.dataset.state, steps: Number(v.dataset.steps), forced: Number(v.dataset.forced),
              text: v.querySelector('.toks').innerText, legend: v.querySelector('.legend').innerText} : null;
}"""


def test_constrained_view_paints_while_generating(lab: dict[str, Any]) -> None:
    with sync_api.sync_playwright() as p:
        browser, page, errors = open_and_run_all(p, lab, "live_constrained.ipynb", CONSTRAINED_CELLS)
        page.wait_for_selector("[data-sgnb-constrained]", timeout=300_000)
        samples: list[dict[str, Any]] = []
        deadline = time.time() + 240
        while time.time() < deadline and "ALL_DONE" not in outputs_text(page):
            sample = page.evaluate(CONSTRAINED)
            if sample and sample["state"] == "running" and (not samples or sample != samples[-1]):
                samples.append(sample)
                if len(samples) == 2:
                    page.locator("[data-sgnb-constrained]").screenshot(
                        path=str(ARTIFACTS / "constrained-during-generation.png")
                    )
            time.sleep(0.1)
        wait_output(page, "ALL_DONE", 120)
        deadline = time.time() + 30
        while (final := page.evaluate(CONSTRAINED))["state"] != "done":
            assert time.time() < deadline, final
            time.sleep(0.2)
        page.locator("[data-sgnb-constrained]").screenshot(path=str(ARTIFACTS / "constrained-live-final.png"))
        browser.close()
    assert len(samples) >= 2, f"the constrained view did not change while generating: {samples}"
    first, second = samples[0], samples[-1]
    assert first != second and second["steps"] > first["steps"] > 0, (first, second)
    assert second["text"].startswith(first["text"].rstrip()), (first, second)
    assert final["steps"] > second["steps"] and final["forced"] > 0, final  # the "-" and ", " are forced
    assert "re.fullmatch matches" in final["legend"], final
    assert not [e for e in errors if "sgnb" in e or "render" in e], errors
    print(
        "\nLIVE_CONSTRAINED", json.dumps({"samples": [s["steps"] for s in samples], "final": final["steps"]})
    )


STOP_CELLS = [
    "%load_ext sgnb\n%sglang start",
    "%sglang stats",  # the session's panel: its cell has ended, so it offers no Stop
    # long enough to be stopped: about 3,000 tokens of phone numbers
    '%%sglang -o ph --show cache,constrained\ns += "Phone numbers: " + '
    'sgl.gen("p", regex=r"(\\d{3}-\\d{4}, ){300}\\d{3}-\\d{4}", max_tokens=4000, temperature=0)',
    "import sgnb\nsession = sgnb.get_session()\nrt = session.require()\nstate = rt.cache_state()\n"
    "print('AFTER_STOP', session.finished[-1].finish_reason['type'], state['running'],"
    " state['used'] + state['free'] == state['capacity'])\n"
    "meta = ph.get_meta_info('p')\n"
    "print('PARTIAL', meta['finish_reason']['type'], meta['completion_tokens'], len(ph['p']),"
    " ph.text() == 'Phone numbers: ' + ph['p'])\n"
    "out = rt.generate('The capital of France is', max_new_tokens=4, temperature=0)\n"
    "print('NEXT_CELL_RAN', out['meta_info']['finish_reason']['type'], out['meta_info']['completion_tokens'])",
]


def test_stop_button_aborts_the_running_cell(lab: dict[str, Any]) -> None:
    """Run All; Stop (the program view's button) mid-generation: the click reaches the running cell
    (sgnb.widgets._stop: its message goes to an ipykernel subshell), the program's request is
    aborted (SGLang's ``FINISH_ABORT``), the cell ends normally with a one-line note, its ``-o``
    variable holds the partial text, and Run All goes on to the next cell."""
    with sync_api.sync_playwright() as p:
        browser, page, errors = open_and_run_all(p, lab, "live_stop.ipynb", STOP_CELLS)
        page.wait_for_selector("[data-sgnb-constrained]", timeout=300_000)
        deadline = time.time() + 240
        while not ((sample := page.evaluate(CONSTRAINED)) and sample["steps"] >= 8):
            assert time.time() < deadline, sample
            time.sleep(0.1)
        assert page.locator("[data-sgnb-constrained] [data-stop]").count() == 1  # every live view offers it
        assert page.locator("[data-sgnb-cache]").count() == 2  # the session's stats panel and the cell's
        assert page.locator("[data-sgnb-cache]").first.locator("[data-stop]").count() == 0
        assert page.locator("[data-sgnb-cache]").last.locator("[data-stop]").count() == 1
        stop = page.locator("[data-sgnb-program-live] [data-stop]")
        stop.scroll_into_view_if_needed()
        page.locator("[data-sgnb-program-live]").screenshot(path=str(ARTIFACTS / "program-view-stop.png"))
        stop.click()
        text = wait_output(page, "NEXT_CELL_RAN", 180)  # Run All went on: nothing run by hand
        deadline = time.time() + 30
        while not (stopped := page.evaluate(CONSTRAINED)) or stopped["state"] != "stopped":
            assert time.time() < deadline, stopped
            time.sleep(0.2)
        assert "■ stopped after" in text and "Traceback" not in text and "Interrupt" not in text, text[-2000:]
        panel = page.locator("[data-sgnb-cache]").last  # the cell's panel
        deadline = time.time() + 30
        while panel.get_attribute("data-stopped") != "1":
            assert time.time() < deadline, panel.inner_text()
            time.sleep(0.2)
        tokens = int(panel.locator("[data-stopped]").last.get_attribute("data-stopped") or -1)
        assert 8 <= tokens < 4000 and f"stopped after {tokens} tokens" in panel.inner_text()
        assert f"stopped after {tokens} tokens" in stopped["legend"], stopped
        assert page.locator("[data-stop]").count() == 0  # the cell ended: nothing to stop
        page.screenshot(path=str(ARTIFACTS / "browser-after-stop.png"), full_page=True)
        browser.close()
    after = text.split("AFTER_STOP", 1)[1].split()[:3]
    assert after == ["abort", "0", "True"], after
    partial = text.split("PARTIAL", 1)[1].split()[:4]
    assert partial[0] == "abort" and int(partial[1]) == tokens and int(partial[2]) > 0, partial
    assert partial[3] == "True", partial
    assert f"■ stopped after {tokens} tokens" in text, text[-2000:]
    assert text.split("NEXT_CELL_RAN", 1)[1].split()[0] in ("length", "stop"), text[-500:]
    assert not [e for e in errors if "sgnb" in e or "render" in e], errors
    print(
        "\nLIVE_STOP",
        json.dumps({"stopped_after_tokens": tokens, "steps_seen_before_click": sample["steps"]}),
    )

"""The token view in a real browser (JupyterLab + Debian's Chromium, Playwright), reusing
test_browser's JupyterLab fixture: chips grow while a generation runs, and hovering a constrained
chip shows the card with its probability, the allowed count and the model's own top-k."""

from __future__ import annotations

import json
import time
from typing import Any

from test_browser import ARTIFACTS, CHROMIUM, lab, outputs_text, run_notebook, sync_api, wait_output

__all__ = ["lab"]  # the fixture, imported so pytest finds it here

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}, "city": {"type": "string"}},
    "required": ["name", "age", "city"],
}
CELLS = [
    "import sgnb\nfrom sgnb.widgets import TokenView\n\nrt = sgnb.start()\nview = TokenView(rt)\nview",
    "prompt = rt.apply_chat_template([{'role': 'user', 'content': 'Describe a person as JSON.'}])\n"
    "print('GEN_START')\n"
    f"out = view.generate(prompt, json_schema={json.dumps(SCHEMA)!r}, max_new_tokens=80, temperature=0)\n"
    "print('GEN_END', out['meta_info']['completion_tokens'])",
    "print('ALL_DONE')\nrt.stop()",
]
SAMPLE = """() => {
  const t = document.querySelector('[data-sgnb-tokens]');
  return t ? Number(t.dataset.chips || 0) : -1;
}"""


def test_token_view_grows_and_hover_card(lab: dict[str, Any]) -> None:
    name = "tokens_browser.ipynb"
    assert CHROMIUM.exists()
    with sync_api.sync_playwright() as p:
        page, errors = run_notebook(p, lab, "sgnbtokens", name, CELLS)

        # chips appear while the generation runs
        wait_output(page, "GEN_START", 240)
        seen: list[int] = []
        deadline = time.time() + 120
        while time.time() < deadline and "GEN_END" not in outputs_text(page):
            count = page.evaluate(SAMPLE)
            if count > 0 and (not seen or count != seen[-1]) and "GEN_END" not in outputs_text(page):
                seen.append(count)
            time.sleep(0.05)
        page.screenshot(path=str(ARTIFACTS / "tokens-during-generation.png"))
        assert len(seen) >= 2 and seen == sorted(seen), (
            f"the token view did not grow while generating: {seen}"
        )
        text = wait_output(page, "ALL_DONE", 120)
        completion = int(text.split("GEN_END", 1)[1].split()[0])

        # the final view: every prompt and output chip; hover a constrained chip for the card
        view = page.locator("[data-sgnb-tokens]")
        deadline = time.time() + 15
        while page.evaluate(SAMPLE) < seen[-1] + 1 and time.time() < deadline:
            time.sleep(0.1)
        outs = view.locator(".chip.out")
        assert outs.count() == completion, (outs.count(), completion)
        chip = view.locator(".chip.out >> nth=0")  # the opening brace: the model wanted prose
        chip.scroll_into_view_if_needed()
        chip.hover()
        card = page.locator("[data-sgnb-tokens-card]")
        card.wait_for(state="visible", timeout=10_000)
        shown = card.inner_text()
        assert "probability" in shown and "allowed by the grammar" in shown, shown
        assert "allowed top-k" in shown and "model's own top-k" in shown and "latency" in shown, shown
        box, card_box = view.bounding_box(), card.bounding_box()
        assert box is not None and card_box is not None
        top = min(box["y"], card_box["y"])
        bottom = max(box["y"] + box["height"], card_box["y"] + card_box["height"])
        left = min(box["x"], card_box["x"])
        right = max(box["x"] + box["width"], card_box["x"] + card_box["width"])
        clip = {"x": left, "y": top, "width": right - left, "height": bottom - top}
        page.screenshot(path=str(ARTIFACTS / "token-view.png"), clip=clip)
        # the colour selector switches the chips to probability colours
        colours = "(v) => [...v.querySelectorAll('.chip.out')].map(c => c.style.backgroundColor)"
        by_type = view.evaluate(colours)
        view.locator("select").select_option("prob")
        deadline = time.time() + 10
        while (by_prob := view.evaluate(colours)) == by_type and time.time() < deadline:
            time.sleep(0.1)
        assert by_prob != by_type and len(set(by_prob)) > len(set(by_type)), (by_type, by_prob)
        view.screenshot(path=str(ARTIFACTS / "token-view-prob.png"))
        page.context.browser.close()
    assert not [e for e in errors if "sgnb" in e or "render" in e], errors
    print("\nTOKENS_BROWSER", json.dumps({"chip_counts_seen": seen[:20], "completion_tokens": completion}))

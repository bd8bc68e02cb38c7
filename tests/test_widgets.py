"""The widgets without a browser: state, throttling, layout, mimebundles, static snapshots."""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest
import torch

from sgnb.core.events import EventHub, RequestFinished
from sgnb.runtimes.local.radix_cache import RadixCache
from sgnb.tree.mirror import TreeMirror
from sgnb.widgets import CachePanel, ConstrainedView, ProgramView, RadixTreeWidget, static_snapshots, sync_all
from sgnb.widgets._layout import MIN_OPEN, layout, parse_expansion, short_text
from sgnb.widgets._static import WIDGET_VIEW
from sgnb.widgets._synthetic import synthetic_events
from sgnb.widgets._throttle import Throttle
from sgnb.widgets.constrained import validate
from sgnb.widgets.program import choice_rows

LETTERS = "".join(chr(97 + i) for i in range(26))


def letters(ids: list[int]) -> str:
    return "".join(LETTERS[t % 26] for t in ids)


def finished(prompt: list[int], output: list[int], rid: str, cached: int = 0) -> RequestFinished:
    return RequestFinished(
        rid, len(prompt), cached, len(output), 0.01, 0.05, None, output_ids=output, prompt_ids=prompt
    )


def wait_for(cond: Any, timeout: float = 3.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "condition not met in time"
        time.sleep(0.01)


def check_bundle(widget: Any) -> dict[str, Any]:
    data, _ = widget._repr_mimebundle_()
    assert set(data) == {"text/plain", "text/html", WIDGET_VIEW}
    assert data[WIDGET_VIEW]["model_id"] == widget.model_id
    assert not re.search(r" at 0x[0-9a-f]+", data["text/plain"]), "text/plain must be stable for nbval"
    assert "data-sgnb-static" in data["text/html"] and "<script" not in data["text/html"]
    return data


# ---- throttle ------------------------------------------------------------------------------


def test_throttle_coalesces_bursts_and_the_last_call_lands() -> None:
    seen: list[int] = []
    state = {"n": 0}
    throttle = Throttle(lambda: seen.append(state["n"]), interval=0.1)
    start = time.monotonic()
    while time.monotonic() - start < 0.5:
        state["n"] += 1
        throttle()
        time.sleep(0.001)
    wait_for(lambda: seen and seen[-1] == state["n"])
    assert len(seen) <= 8, f"{len(seen)} runs in 0.5 s at interval 0.1"
    throttle()
    throttle.flush()  # runs now, on this thread
    assert len(seen) >= 2 and seen[-1] == state["n"]
    throttle.close()
    throttle()
    time.sleep(0.15)
    assert seen[-1] == state["n"]


# ---- tree ----------------------------------------------------------------------------------


def make_tree(**kw: Any) -> tuple[RadixTreeWidget, RadixCache, EventHub]:
    hub = EventHub()
    tree = RadixTreeWidget(hub, decode=letters, **kw)
    return tree, RadixCache(on_event=hub.publish), hub


def test_tree_rows_follow_the_cache_from_another_thread() -> None:
    tree, cache, hub = make_tree()
    pushes: list[int] = []
    tree.observe(lambda ch: pushes.append(len(json.loads(ch["new"])["rows"])), names=["view_json"])

    def traffic() -> None:
        for i in range(300):
            cache.insert([1, 2, 3, i % 50 + 4, 60], torch.arange(5))
            hub.publish(finished([1, 2, 3, i % 50 + 4], [60], f"r{i}"))

    worker = threading.Thread(target=traffic)
    started = time.monotonic()
    worker.start()
    worker.join()
    wait_for(lambda: pushes and pushes[-1] == tree.mirror.node_count())
    elapsed = time.monotonic() - started
    assert len(pushes) <= 10 * elapsed + 3, f"{len(pushes)} pushes in {elapsed:.2f}s"
    rows = tree.view["rows"]
    assert len(rows) == tree.mirror.node_count() == 51
    top = rows[0]
    assert top["text"] == "bcd" and top["hits"] == 300 and top["open"] and top["kids"] == 50
    assert sum("path" in r for r in rows) == 2  # the last request: "bcd" and its branch
    tree.selected = top["id"]
    assert tree.detail["hits"] == 300 and tree.detail["requests"][0]["rid"] == "r299"[:8]
    assert len(tree.detail["requests"]) == 10
    data = check_bundle(tree)
    assert data["text/plain"] == "RadixTreeWidget: 51 nodes, 103 tokens cached, 300 requests (hit rate 0%)"
    assert "bcd" in data["text/html"]
    tree.close()


def test_evicted_nodes_fade_then_go() -> None:
    hub = EventHub()
    tree = RadixTreeWidget(TreeMirror(hub, decode=letters, fade_s=0.3))
    cache = RadixCache(on_event=hub.publish)
    cache.insert([1, 2, 3], torch.arange(3))
    cache.insert([1, 2, 4], torch.arange(3))
    cache.evict(1)
    wait_for(lambda: any("ev" in r for r in tree.view["rows"]))
    assert len(tree.view["rows"]) == 3
    # a refresh was scheduled for the end of the fade: the least recently used leaf (3) is gone and
    # [1, 2] + [4] show as one row. Waited for, not read once: on a loaded CI machine a refresh can
    # land between two states (seen once: a one-row 'bcd' read right after the fade).
    wait_for(lambda: [r["text"] for r in tree.view["rows"]] == ["bce"], timeout=10.0)


def test_layout_budget_balanced_and_aggregated() -> None:
    mirror = TreeMirror()
    mirror.replay(synthetic_events(10_000, seed=3))
    started = time.perf_counter()
    snap = mirror.snapshot()
    rows = layout(snap, 400)
    elapsed = time.perf_counter() - started
    assert len(snap.nodes) == 10_000
    nodes = [r for r in rows if "more" not in r]
    assert len(nodes) <= 400 and len(rows) <= 400 + 50
    assert all(r["id"] in snap.nodes for r in nodes)
    depths = [r["depth"] for r in nodes]
    assert min(depths) == 0 and max(depths) >= 2  # opened level by level, not one deep branch
    hidden = sum(r["sub"] for r in nodes) + sum(r["sub"] for r in rows if "more" in r)
    assert len(nodes) + hidden == 10_000, "every node is either shown or counted under a shown row"
    assert elapsed < 5.0, f"snapshot + layout of 10k nodes took {elapsed:.2f}s"
    # opening a closed node shows its children; "+N more" raises a parent's limit
    closed = next(r for r in nodes if r["sub"] and r["kids"])
    opened, more = parse_expansion([closed["id"], "more:x", "more:x"])
    assert more == {"x": 2 * 4 * MIN_OPEN}
    rows2 = layout(snap, 400, opened, set(), more)
    kids = set(snap.nodes[closed["id"]].children)
    assert kids <= {r["id"] for r in rows2}
    # a closed node hides its children even within budget
    small = next(r for r in rows if r.get("kids"))
    rows3 = layout(snap, 400, set(), {small["id"]})
    assert not set(snap.nodes[small["id"]].children) & {r["id"] for r in rows3}
    # the full tree within a big budget
    assert len(layout(snap, 10_000)) == 10_000


def test_last_request_path_always_visible() -> None:
    mirror = TreeMirror(decode=letters)
    cache = RadixCache(on_event=mirror.handle)
    for i in range(30):
        cache.insert([1, 100 + i, 7, 8], torch.arange(4))
    cache.insert([1, 105, 7, 9, 9], torch.arange(5))
    mirror.handle(finished([1, 105, 7, 9], [9, 9], "last"))
    rows = layout(mirror.snapshot(), 3)
    path = [r for r in rows if r.get("path")]
    assert [r["text"] for r in path] == ["b", "bh", "jj"]
    assert any("more" in r for r in rows)


def test_short_text() -> None:
    assert short_text("a\nb") == "a⏎b"
    cut = short_text("x" * 30 + "y" * 30, 21)
    assert len(cut) == 21 and cut.startswith("x") and cut.endswith("y") and "…" in cut


# ---- cache panel ---------------------------------------------------------------------------


def test_cache_panel_rows_rate_plot_and_snapshot() -> None:
    hub = EventHub()
    panel = CachePanel(hub, decode=letters)
    hub.publish(finished([1, 2, 3, 4], [5], "first"))
    hub.publish(finished([1, 2, 3, 4], [5], "second", cached=3))
    wait_for(lambda: len(panel.rows) == 2)
    first, second = panel.rows
    assert (first["cached"], first["new"], first["hit"]) == (0, 4, 0.0)
    assert (second["cached"], second["new"], second["hit"]) == (3, 1, 0.75)
    assert second["prompt"] == "bcde" and second["ttft_ms"] == 10.0 and second["latency_ms"] == 50.0
    assert panel.summary["hit_rate"] == 0.375
    fig = panel.plot()
    ax, rate = fig.axes
    assert len(ax.patches) == 4 and list(rate.lines[0].get_ydata()) == [0.0, 37.5]
    data = check_bundle(panel)
    assert data["text/plain"] == "CachePanel: 2 requests, 3/8 prompt tokens cached (hit rate 38%)"
    assert 'data-cached="3"' in data["text/html"] and "<svg" in data["text/html"]
    panel.close()
    hub.publish(finished([1], [2], "after-close"))
    assert panel.summary["requests"] == 2
    late = CachePanel(hub, history=[finished([1, 2], [3], "earlier", cached=1)])
    assert late.summary == {
        "requests": 1,
        "prompt_tokens": 2,
        "cached_tokens": 1,
        "hit_rate": 0.5,
        "stopped": 0,
        "stopped_tokens": 0,
    }
    late.close()


class _RacyHub(EventHub):
    """A hub on which a request finishes (published, and kept in the session's history) right as the
    next subscriber subscribes: before its callback is in (``before``) or just after."""

    def __init__(self, when: str) -> None:
        super().__init__()
        self.when, self.pending = when, [finished([7, 8, 9], [1], "in-between", cached=2)]

    def subscribe(self, fn: Any) -> Any:
        if self.when == "before" and self.pending:
            self.publish(self.pending.pop())
        unsubscribe = super().subscribe(fn)
        if self.when == "after" and self.pending:
            self.publish(self.pending.pop())
        return unsubscribe


@pytest.mark.parametrize("when", ["before", "after"])
def test_cache_panel_subscribes_then_replays_missing_no_request_and_showing_each_once(when: str) -> None:
    """A panel opened while requests finish on another thread (a cluster tags them in the background)
    shows every request once: it subscribes, then reads the history (a runtime's ``follow`` does the
    same for the tree, ``sgnb.core.events.TreeSource``), skipping requests it already saw live."""
    import collections

    history: collections.deque[RequestFinished] = collections.deque([finished([1, 2], [3], "earlier")])
    hub = _RacyHub("armed-later")
    hub.subscribe(lambda e: history.append(e) if isinstance(e, RequestFinished) else None)  # the session
    hub.when = when
    panel = CachePanel(hub, decode=letters, history=history)
    hub.publish(finished([1, 2, 4], [5], "later", cached=2))
    wait_for(lambda: panel.summary["requests"] == 3)
    assert [r["request"] for r in panel.rows] == ["earlier", "in-between", "later"]
    assert panel.summary["cached_tokens"] == 4 and len(history) == 3
    panel.close()


def test_cache_panel_counts_stopped_requests_and_offers_stop_while_following(rt: Any) -> None:
    """A request aborted mid-generation (SGLang's ``finish_reason`` ``{"type": "abort"}``, as
    ``Scheduler.abort_request`` ends it) shows as stopped, with the tokens it had generated; the
    Stop button is offered only while the panel follows requests."""
    panel = CachePanel(rt)
    assert panel.stoppable and panel.kernel_id == ""  # no Jupyter kernel here: the view hides it
    thread = threading.Thread(
        target=rt.generate,
        args=("Tell me a long story.",),
        kwargs={"max_new_tokens": 400, "ignore_eos": True},
    )
    from sgnb.core.events import EventLog, TokenStep
    from sgnb.core.token_trace import tracing

    log = EventLog(rt.hub)
    with tracing(rt):  # TokenStep events say when tokens came
        thread.start()
        wait_for(lambda: len(log.of_type(TokenStep)) >= 3, timeout=120)
        rt.abort_all()
        thread.join(60)
    wait_for(lambda: panel.summary["requests"] == 1)
    (row,) = panel.rows
    assert row["finish"] == "abort" and 3 <= row["completion"] < 400
    assert panel.summary["stopped"] == 1 and panel.summary["stopped_tokens"] == row["completion"]
    assert f"1 request stopped after {row['completion']} tokens" in repr(panel)
    assert "stopped after" in panel._static_html()
    state = rt.cache_state()
    assert state["running"] == 0 and state["used"] + state["free"] == state["capacity"]
    panel.detach()
    assert not panel.stoppable
    panel.close()


def test_a_stop_click_ends_a_running_program_normally_with_its_partial_text(
    rt: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a view's Stop message does (``sgnb.widgets._stop.stop_running``, called on the kernel's
    subshell thread while the cell runs): the program's requests are aborted, it returns (no
    KeyboardInterrupt), its variable holds the text so far with SGLang's abort finish_reason
    (``FINISH_ABORT.to_json``: ``{"type": "abort", ...}``), a second gen of the body is aborted too,
    and no KV slot stays locked."""
    from conftest import assert_idle_balanced

    from sgnb.core.events import EventLog, TokenStep
    from sgnb.core.token_trace import tracing
    from sgnb.notebook.program import run_program
    from sgnb.widgets import _stop

    assert _stop.stop_running() == 0  # nothing runs: the view interrupts the kernel instead
    log = EventLog(rt.hub)
    clicked: list[int] = []

    def click() -> None:
        wait_for(lambda: len(log.of_type(TokenStep)) >= 5, timeout=120)
        clicked.append(_stop.stop_running())

    body = (
        "s += 'Once upon a time' + sgl.gen('story', max_tokens=2000, ignore_eos=True, temperature=0)\n"
        "s += ' The end.' + sgl.gen('more', max_tokens=2000, ignore_eos=True, temperature=0)"
    )
    with tracing(rt):  # TokenStep events say when tokens came
        clicker = threading.Thread(target=click)
        clicker.start()
        state = run_program(body, backend=rt.backend, on_update=lambda s: None)
        clicker.join(60)
    assert clicked == [1]
    story = state.get_meta_info("story")
    assert story["finish_reason"]["type"] == "abort" and 5 <= story["completion_tokens"] < 2000
    assert state["story"] and state.text().startswith("Once upon a time" + state["story"])
    more = state.get_meta_info("more")  # started after the click: aborted as well
    assert more is None or more["finish_reason"]["type"] == "abort"
    note = capsys.readouterr().out.strip()
    tokens = story["completion_tokens"]
    if more is None:  # one aborted gen: its tokens
        assert note == f"■ stopped after {tokens} tokens (story kept the text so far)", note
    else:  # each aborted gen with its own tokens, never their sum
        assert note.startswith(f"■ stopped: story after {tokens} tokens, more after "), note
    assert _stop.stop_running() == 0
    log.unsubscribe and log.unsubscribe()
    assert_idle_balanced(rt)


def test_cache_panel_row_highlights_its_request_path_in_the_tree() -> None:
    """A selected panel row marks its request's prompt path in a tree that saw it: the nodes the
    prompt found cached (SGLang's ``RadixCache.match_prefix``: ``cached_tokens``) apart from the
    ones it wrote; another tree, which did not see the request, stays as it is."""
    hub = EventHub()
    tree = RadixTreeWidget(hub, decode=letters)
    other = RadixTreeWidget(EventHub(), decode=letters)
    panel = CachePanel(hub, decode=letters)
    cache = RadixCache(on_event=hub.publish)
    cache.insert([1, 2, 3, 4, 9], torch.arange(5))
    hub.publish(finished([1, 2, 3, 4], [9], "req-a"))
    cache.insert([1, 2, 3, 5, 6, 9], torch.arange(6))
    hub.publish(finished([1, 2, 3, 5, 6], [9], "req-b", cached=3))
    wait_for(lambda: len(panel.rows) == 2 and tree.view["stats"]["requests"] == 2)
    assert [r["request"] for r in panel.rows] == ["req-a", "req-b"]

    panel.selected = "req-b"
    assert tree.highlight == "req-b" and other.highlight == ""
    tree._throttle.flush()
    marked = {r["text"]: ("hlc" in r) for r in tree.view["rows"] if "hl" in r}
    assert marked == {"bcd": True, "fgj": False}, tree.view["rows"]  # cached prefix, then what it wrote
    assert tree.view["stats"]["highlight"] == {
        "rid": "req-b",
        "prompt_tokens": 5,
        "cached_tokens": 3,
        "nodes": 2,
    }
    assert "outline:2px solid" in tree._static_html()

    panel.selected = "req-a"  # nothing of req-a was cached when it ran: its whole path is new
    tree._throttle.flush()
    assert {r["text"]: ("hlc" in r) for r in tree.view["rows"] if "hl" in r} == {"bcd": False, "ej": False}
    panel.selected = ""
    tree._throttle.flush()
    assert tree.highlight == "" and not any("hl" in r for r in tree.view["rows"])
    assert tree.view["stats"]["highlight"] is None
    for widget in (tree, other, panel):
        widget.close()


# ---- constrained view ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def grammar_rt() -> Any:
    """What ConstrainedView needs from a runtime, without loading the model: tokenizer + grammars."""
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from sgnb.core.grammar import GrammarCompiler
    from sgnb.core.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("bundled"))
    return SimpleNamespace(tokenizer=tok, grammars=GrammarCompiler(tok, len(tok)))


def test_constrained_regex_marks_forced_tokens(grammar_rt: Any) -> None:
    tok = grammar_rt.tokenizer
    ids = [*tok.encode("123-4567", add_special_tokens=False), tok.eos_token_id]
    view = ConstrainedView({"text": "123-4567", "output_ids": ids}, grammar_rt, "regex", r"\d{3}-\d{4}")
    texts = [s["text"] for s in view.steps]
    assert texts[:8] == list("123-4567")
    forced = [texts[i] for i in view.forced_steps]
    assert forced[0] == "-" and len(forced) == 2  # the dash, then the stop token
    assert view.steps[0]["allowed"] == 10 and view.steps[3]["options"] == ["-"]
    assert view.info["valid"] is True and view.info["terminated"] is True
    data = check_bundle(view)
    assert data["text/plain"] == (
        "ConstrainedView(regex): 9 tokens, 2 forced by the grammar; output valid: yes"
    )
    assert 'data-forced="1"' in data["text/html"]


def test_constrained_json_schema_and_rejection(grammar_rt: Any) -> None:
    tok = grammar_rt.tokenizer
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    text = '{"n": 42}'
    ids = tok.encode(text, add_special_tokens=False)
    view = ConstrainedView(
        {"text": text, "output_ids": ids, "meta_info": {"constraint": "json_schema"}},
        grammar_rt,
        source=schema,
    )
    assert view.info["kind"] == "json_schema" and view.info["valid"] is True and view.info["rejected"] == 0
    bad = tok.encode("12x", add_special_tokens=False)
    rejected = ConstrainedView({"text": "12x", "output_ids": bad}, grammar_rt, "regex", r"\d+")
    assert not rejected.steps[-1]["accepted"] and rejected.info["valid"] is False
    with pytest.raises(ValueError, match="kind"):
        ConstrainedView({"output_ids": []}, grammar_rt, "choices", "a")
    # a runtime with a tokenizer but no sgnb grammar compiler (sglang.Engine, a server)
    from types import SimpleNamespace

    bare = SimpleNamespace(tokenizer=tok)
    assert (
        ConstrainedView({"text": "12", "output_ids": bad[:-1]}, bare, "regex", r"\d+").info["valid"] is True
    )


def test_constrained_view_paints_each_token_while_the_request_runs(rt: Any) -> None:
    """``ConstrainedView.follow``: the steps grow as tokens are sampled (sgnb's trace hook, the
    counterpart of SGLang's ``SamplingBatchInfo.apply_logits_bias_with_observer``), each step's allowed
    count is xgrammar's at that step, and when the request ends the grammar replay takes over and
    agrees with what was painted live."""
    from sgnb.core.token_trace import tracing

    view = ConstrainedView.follow(rt)
    assert view.info["state"] == "waiting" and "waiting" in repr(view) and view.stoppable
    painted: list[int] = []  # the steps the view holds as each token is sampled

    def after_view(event: Any) -> None:  # subscribed after the view: it has seen the event
        if type(event).__name__ == "TokenStep":
            view._throttle.flush()  # what the timer would push, pushed now
            painted.append(len(view.steps))

    unsubscribe = rt.hub.subscribe(after_view)
    pattern = r"\d{3}-\d{4}"
    with tracing(rt):
        out = rt.generate("My phone number is ", regex=pattern, max_new_tokens=12, temperature=0)
    unsubscribe()
    view.stop_following()
    assert not view.stoppable
    wait_for(lambda: view.info["state"] == "done")
    n = out["meta_info"]["completion_tokens"]
    assert painted == list(range(1, n + 1)), painted  # one more token painted per token sampled
    assert view.rid == out["meta_info"]["id"] and view.info["valid"] is True
    assert [s["id"] for s in view.steps] == out["output_ids"][: len(view.steps)]
    assert "-" in [view.steps[i]["text"] for i in view.forced_steps]
    replayed = ConstrainedView(out, rt, "regex", pattern)
    assert [s["allowed"] for s in view.steps] == [s["allowed"] for s in replayed.steps]
    # a view whose cell ran no constrained request says so
    idle = ConstrainedView.follow(rt)
    rt.generate("Hello", max_new_tokens=2)
    idle.stop_following("no constrained request ran in this cell")
    assert idle.info["message"] == "no constrained request ran in this cell" and not idle.steps
    for widget in (view, replayed, idle):
        widget.close()


def test_validate() -> None:
    assert validate("regex", r"\d+", "123")["valid"] is True
    assert validate("regex", r"\d+", "12a")["valid"] is False
    assert validate("regex", r"(?<", "x")["valid"] is None
    schema = json.dumps({"type": "object", "required": ["a"]})
    assert validate("json_schema", schema, '{"a": 1}')["valid"] is True
    assert "schema violation" in validate("json_schema", schema, "{}")["message"]
    assert "not JSON" in validate("json_schema", schema, "{")["message"]
    assert validate("ebnf", "root ::= 'a'", "a")["valid"] is None


# ---- program view --------------------------------------------------------------------------


def test_program_view_streams_segments_and_choices() -> None:
    view = ProgramView(
        [{"role": "system", "text": "Be brief."}, {"role": "user", "text": "Capital of France?"}]
    )
    for piece in ["Pa", "ri", "s"]:
        view.append(piece, role="assistant", var="city")
    view.set_choices("ok", {"yes": -0.1, "no": -2.0})
    wait_for(lambda: len(view.segments) == 3 and view.segments[-1]["text"] == "Paris" and view.choices)
    assert view.variables() == {"city": "Paris"}
    rows = view.choices["ok"]
    assert rows[0]["option"] == "yes" and rows[0]["picked"] and abs(sum(r["p"] for r in rows) - 1) < 1e-3
    data = check_bundle(view)
    assert (
        data["text/plain"]
        == "ProgramView: 32 chars, roles ['assistant', 'system', 'user'], variables city='Paris'"
    )
    assert 'data-var="city"' in data["text/html"]
    view.update(["plain text"])
    view._throttle.flush()
    assert view.segments == [{"text": "plain text", "role": None, "var": None}]


def test_choice_rows_softmax() -> None:
    rows = choice_rows({"a": 0.0, "b": 0.0}, picked="b")
    assert [r["p"] for r in rows] == [0.5, 0.5] and [r["picked"] for r in rows] == [False, True]
    assert choice_rows({}) == []


# ---- displays, the post-cell hook and exports ------------------------------------------------


def test_post_cell_hook_refreshes_the_static_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    updates: list[dict[str, Any]] = []
    shown: list[dict[str, Any]] = []
    monkeypatch.setattr(IPython.display, "update_display", lambda obj, **kw: updates.append(obj))
    monkeypatch.setattr(IPython.display, "display", lambda obj, **kw: shown.append(obj))
    tree, cache, _ = make_tree()
    shell.user_ns["tree"] = tree
    shell.run_cell("tree")
    assert shown and "empty" in shown[0]["text/html"]
    cache.insert([1, 2, 3], torch.arange(3))
    shell.run_cell("pass")  # post_run_cell: flush, then update the display's snapshot
    assert updates and "bcd" in updates[-1]["text/html"] and WIDGET_VIEW in updates[-1]
    n = len(updates)
    sync_all()
    assert len(updates) == n, "no update when nothing changed"
    tree.close()  # leaves the shell's post-cell hook with nothing to do for later tests
    shell.run_cell("pass")
    assert len(updates) == n


def test_static_snapshots_preprocessor() -> None:
    nb = {
        "cells": [
            {"outputs": [{"data": {WIDGET_VIEW: {}, "text/html": ['<div data-sgnb-static="tree">']}}]},
            {"outputs": [{"data": {WIDGET_VIEW: {}, "text/plain": "IntSlider()"}}]},
        ]
    }
    out, _ = static_snapshots(nb, {})
    assert WIDGET_VIEW not in out["cells"][0]["outputs"][0]["data"]
    assert WIDGET_VIEW in out["cells"][1]["outputs"][0]["data"]


def test_program_state_marks_a_variable_where_it_was_generated() -> None:
    """Tutorial 02: "negative" in the user's question is not the ``sentiment`` the model picked.

    The state is SGLang's own ``StreamExecutor`` shape (``messages_``, ``text_``, ``variables``,
    ``meta_info``), as ``sglang.lang.interpreter.StreamExecutor`` fills it.
    """
    from types import SimpleNamespace

    from sgnb.notebook.views import ProgramStateView

    question = "Is this review positive or negative?"
    executor = SimpleNamespace(
        messages_=[{"role": "user", "content": question}, {"role": "assistant", "content": "negative"}],
        text_=f"user: {question}\nassistant: negative",
        variables={"sentiment": "negative"},
        meta_info={},
    )
    page = ProgramStateView(SimpleNamespace(stream_executor=executor))._repr_html_()
    user, assistant = page.split("assistant</span>")
    assert "<mark" not in user and "<mark title='sentiment'" in assistant
    executor.messages_ = []  # a program without roles: the text after the prompt is marked
    page = ProgramStateView(SimpleNamespace(stream_executor=executor))._repr_html_()
    assert page.count("<mark") == 1 and "positive or negative?" in page
    assert page.index("<mark") > page.index("positive or negative?")


def test_committed_tutorials_show_their_views_with_plain_nbconvert() -> None:
    """A reader of an exported tutorial sees each sgnb view's static snapshot, with no flag.

    nbconvert prefers a widget view whose model state is saved (``WidgetsDataTypeFilter``), and an
    anywidget cannot be rebuilt in a static page: the committed notebooks keep the snapshots only
    (``sgnb.widgets._static.prefer_snapshots``, applied by ``make tutorials`` after executing them).
    """
    from pathlib import Path

    import nbformat
    from nbconvert import HTMLExporter

    from sgnb.widgets._static import MARK, prefer_snapshots

    notebooks = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
    views = 0
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        kinds = [
            m
            for cell in nb.cells
            for output in cell.get("outputs", [])
            for m in re.findall(rf'{MARK}="(\w+)"', "".join(output.get("data", {}).get("text/html", "")))
        ]
        page, _ = HTMLExporter().from_notebook_node(nb)
        for kind in set(kinds):
            assert page.count(f'{MARK}="{kind}"') >= kinds.count(kind), f"{path.name}: {kind} view not shown"
        views += len(kinds)
    assert views >= 5  # the tutorials do show views (a test of the test)
    # prefer_snapshots keeps other widgets' views and state
    nb = nbformat.v4.new_notebook()
    other = {"model_id": "other", "version_major": 2, "version_minor": 0}
    sgnb = {"model_id": "sgnb", "version_major": 2, "version_minor": 0}
    nb.cells = [nbformat.v4.new_code_cell(outputs=[
        nbformat.v4.new_output("display_data", data={WIDGET_VIEW: other, "text/plain": "tqdm"}),
        nbformat.v4.new_output("display_data", data={WIDGET_VIEW: sgnb, "text/html": f'<div {MARK}="tree">'}),
    ])]  # fmt: skip
    state = {"other": {"state": {"layout": "IPY_MODEL_lay"}}, "lay": {"state": {}}, "sgnb": {"state": {}}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state}}
    prefer_snapshots(nb)
    kept = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert sorted(kept) == ["lay", "other"] and WIDGET_VIEW not in nb.cells[0].outputs[1]["data"]


def test_program_state_streams_the_whole_answer_and_its_speed() -> None:
    """While an assistant role generates, SGLang's ``messages_`` lack it (``_execute_role_end``
    appends the message): the view shows the growing text whole, then SGLang's meta_info figures."""
    from types import SimpleNamespace

    from sgnb.notebook.views import ProgramStateView

    answer = "Paris is the capital of France, and it has been for a very long time, " * 3
    executor = SimpleNamespace(
        messages_=[{"role": "user", "content": "What is the capital of France?"}],
        text_="user: What is the capital of France?\nassistant: " + answer,
        variables={"answer": answer},
        meta_info={},
    )
    page = ProgramStateView(SimpleNamespace(stream_executor=executor))._repr_html_()
    assert "assistant (generating answer)" in page and answer in page and "characters so far" in page
    executor.messages_.append({"role": "assistant", "content": answer})
    executor.meta_info = {"answer": {"completion_tokens": 41, "e2e_latency": 1.1, "ttft": 0.1}}
    page = ProgramStateView(SimpleNamespace(stream_executor=executor))._repr_html_()
    assert "generating" not in page and "41 tokens, first after 0.10 s, 40.0 tokens/s" in page


def test_program_state_shows_a_finished_select_as_chosen(rt: Any) -> None:
    """A ``select``'s meta_info is SGLang's ``ChoicesDecision.meta_info`` (logprobs, no token counts):
    the view said "8 characters so far" and "/" for it after the program had ended (tutorial 02)."""
    import sglang as sgl

    from sgnb.notebook.views import ProgramStateView

    @sgl.function
    def pick(s: Any) -> None:
        s += (
            "The sky is "
            + sgl.select("colour", choices=["blue", "green"])
            + ". "
            + sgl.gen("more", max_tokens=4)
        )

    state = pick.run(backend=rt.backend, temperature=0)
    state.sync()
    page = ProgramStateView(state)._repr_html_()
    colour = page.split("<td>colour</td>")[1].split("</tr>")[0]
    assert "so far" not in colour and "<td>chosen</td>" in colour and "<td>/</td>" not in colour
    more = page.split("<td>more</td>")[1].split("</tr>")[0]
    assert " tokens" in more and "so far" not in more  # a gen keeps SGLang's figures

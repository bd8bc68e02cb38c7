"""The token view on the bundled model: chip kinds, numbers and the trace hook behind them.

The numbers a chip shows must be SGLang's: ``output_token_logprobs`` / ``output_top_logprobs``
(``TokenizerManager.add_logprob_to_meta_info``), ``cached_tokens`` (``Scheduler`` reports
``len(req.prefix_indices)``, the radix match) and the grammar's next-token bitmask (xgrammar's
``GrammarMatcher.fill_next_token_bitmask``, as ``XGrammarGrammar.fill_vocab_mask`` uses it).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import assert_idle_balanced, assert_view_from_meta_info, chat

from sgnb.core.events import EventLog, RequestFinished, TokenStep
from sgnb.core.grammar import GrammarReplay
from sgnb.widgets import TokenView
from sgnb.widgets._static import MARK, WIDGET_VIEW

PHONE = r"\(\d{3}\) \d{3}-\d{4}"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def kinds(row: dict[str, Any]) -> list[str]:
    return [c["k"] for c in row["out"]]


def test_regex_forced_tokens_are_forced(rt: Any) -> None:
    """``(`` and ``)`` of a phone-number regex are the only tokens the grammar allows there: *forced*.
    The hook's allowed counts equal a replay of the grammar over the output (one xgrammar, two paths)."""
    view = TokenView.from_request(
        rt, chat(rt, "Give me a phone number."), regex=PHONE, max_new_tokens=20, temperature=0
    )
    (row,) = view.rows
    out = view.result["output_ids"]
    assert row["out"][0]["t"] == "("
    assert row["out"][0]["k"] == "forced" and row["out"][0]["n"] == 1
    assert "constrained" in kinds(row)  # the digits: several allowed, one sampled
    assert row["counts"]["forced"] == sum(1 for c in row["out"] if c.get("n") == 1) >= 3
    replay = GrammarReplay(rt, "regex", PHONE)
    assert [c["n"] for c in row["out"]] == [replay.feed(t) for t in out]
    assert row["done"] and row["constraint"] == "regex"
    assert_idle_balanced(rt)


def test_repeated_prompt_shows_cached_tokens_as_cached(rt: Any) -> None:
    """The second run of a prompt shows exactly ``cached_tokens`` cached chips, first in the prompt,
    and that is the radix tree's match of the prompt (all but its last token, which is recomputed)."""
    prompt = chat(rt, "Name three rivers in Europe, please.")
    ids = rt.tokenizer.encode(prompt, add_special_tokens=False)
    rt.flush_cache()
    first = TokenView.from_request(rt, prompt, max_new_tokens=4, temperature=0)
    assert first.rows[0]["counts"]["cached"] == 0
    assert {c["k"] for c in first.rows[0]["prompt"]} == {"prefilled"}
    match = rt.scheduler.call(lambda: rt.cache.match_prefix(ids[:-1]).length)
    view = TokenView.from_request(rt, prompt, max_new_tokens=4, temperature=0)
    (row,) = view.rows
    cached = view.result["meta_info"]["cached_tokens"]
    assert cached == match == len(ids) - 1
    assert [c["k"] for c in row["prompt"]] == ["cached"] * cached + ["prefilled"] * (len(ids) - cached)
    assert "".join(c["t"] for c in row["prompt"]) == rt.tokenizer.decode(ids)
    assert_idle_balanced(rt)


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 0.8, "sampling_seed": 7}])
def test_probabilities_and_top_k_are_meta_info_logprobs(rt: Any, sampling: dict[str, Any]) -> None:
    """Each chip's probability is exp of its ``output_token_logprobs`` entry and its top-k is
    ``output_top_logprobs`` (same ids, same order, exp of the same values), greedy and sampled."""
    view = TokenView.from_request(
        rt, chat(rt, "Tell me a fact about owls."), max_new_tokens=10, top_k=4, **sampling
    )
    meta = view.result["meta_info"]
    (row,) = view.rows
    entries, tops = meta["output_token_logprobs"], meta["output_top_logprobs"]
    assert len(row["out"]) == len(entries) == meta["completion_tokens"]
    for chip, (lp, token, _), top in zip(row["out"], entries, tops, strict=True):
        assert chip["t"] == rt.tokenizer.decode([token])
        assert chip["p"] == pytest.approx(math.exp(lp), rel=1e-5, abs=1e-9)
        assert [t for t, _ in chip["top"]] == [rt.tokenizer.decode([i]) for _, i, _ in top]
        assert [p for _, p in chip["top"]] == pytest.approx(
            [math.exp(v) for v, _, _ in top], rel=1e-5, abs=1e-9
        )
        ids = [i for _, i, _ in top]
        assert chip["r"] == (ids.index(token) + 1 if token in ids else 0)
        assert chip["k"] == "generated" and chip["ms"] >= 0
    if sampling["temperature"] == 0:
        # greedy picks a top token (bf16 logits tie often; argmax and topk may order ties differently)
        assert all(c["p"] == c["top"][0][1] for c in row["out"])


def test_json_schema_shows_masked_unconstrained_choice(rt: Any) -> None:
    """On a JSON-schema request some step's unconstrained top choice was masked out by the grammar
    (the model wanted prose, the grammar sent it to ``{``); every allowed flag agrees with the bitmask."""
    view = TokenView.from_request(
        rt, chat(rt, "Describe a person."), json_schema=json.dumps(SCHEMA), max_new_tokens=40, temperature=0
    )
    (row,) = view.rows
    json.loads(view.result["text"])
    constrained = [c for c in row["out"] if c["k"] in ("forced", "constrained")]
    assert len(constrained) == len(row["out"])  # the grammar covers the whole output
    masked = [c for c in constrained if c["unc"][0][2] == 0]
    assert masked, "no step where the model's own first choice was masked out"
    for chip in constrained:
        # masking renormalises: a token allowed by the grammar has the same probability ratio
        # (masked / unconstrained = 1 / allowed mass) as every other allowed token of that step
        top = dict((t, p) for t, p in chip["top"])
        ratios = [top[t] / p for t, p, a in chip["unc"] if a and t in top and p > 1e-4]
        assert all(r == pytest.approx(ratios[0], rel=2e-3) for r in ratios), chip
        assert all(r >= 1 - 1e-3 for r in ratios)
        assert not [t for t, p, a in chip["unc"] if not a and top.get(t, 0) > 0], chip
    html = view._static_html()
    assert "model wanted (masked out)" in html


def test_untraced_requests_publish_no_steps(rt: Any) -> None:
    """The hook costs nothing unless asked: no ``TokenStep``, no trace on ``RequestFinished``."""
    log = EventLog(rt.hub)
    try:
        rt.generate(chat(rt, "Hi"), max_new_tokens=3, temperature=0, regex=r"[a-z]+")
        assert not log.of_type(TokenStep)
        (done,) = log.of_type(RequestFinished)
        assert done.token_trace is None and done.logprobs is None
        rt.generate(chat(rt, "Hi"), max_new_tokens=3, temperature=0, return_logprob=True)
        assert len(log.of_type(TokenStep)) == log.of_type(RequestFinished)[-1].completion_tokens
    finally:
        assert log.unsubscribe is not None
        log.unsubscribe()


def test_from_finished_without_trace_replays_the_grammar(rt: Any) -> None:
    """``%sglang tokens`` on a request that asked for nothing: kinds from ``cached_tokens`` and the
    grammar replayed over its output, no probabilities claimed."""
    log = EventLog(rt.hub)
    try:
        rt.generate(chat(rt, "Give me a phone number."), max_new_tokens=20, temperature=0, regex=PHONE)
    finally:
        assert log.unsubscribe is not None
        log.unsubscribe()
    (event,) = log.of_type(RequestFinished)
    view = TokenView.from_finished(event, rt)
    (row,) = view.rows
    assert row["out"][0]["k"] == "forced" and not row["probs"]
    assert all("p" not in c for c in row["out"])
    assert len(row["prompt"]) == event.prompt_tokens and row["counts"]["cached"] == event.cached_tokens


def test_following_view_adds_untraced_requests(rt: Any) -> None:
    """A displayed view that follows the runtime also shows a request that asked for nothing: built
    from its ``RequestFinished`` on the view's own thread (the grammar replay stays off the scheduler)."""
    view = TokenView(rt)
    try:
        out = rt.generate(chat(rt, "Give me a phone number."), max_new_tokens=20, temperature=0, regex=PHONE)
        (row,) = view.rows
        assert row["rid"] == out["meta_info"]["id"][:8] and row["done"] and not row["probs"]
        assert row["out"][0]["k"] == "forced" and len(row["out"]) == out["meta_info"]["completion_tokens"]
    finally:
        view.close()


def test_live_view_grows_and_static_snapshot(rt: Any) -> None:
    """A following view grows as ``TokenStep`` events arrive (chip counts seen only ever increase and
    end at the output length); its mimebundle carries the widget and a static snapshot with a
    ``title`` per chip."""
    view = TokenView(rt, interval=0.0)
    seen: list[int] = []
    view.observe(
        lambda ch: seen.append(len(json.loads(ch["new"]).get("rows", [{}])[-1].get("out", []))), "view_json"
    )
    done = threading.Event()
    result: dict[str, Any] = {}

    def run() -> None:
        result.update(
            rt.generate(
                chat(rt, "Count from one to ten."), max_new_tokens=24, temperature=0, return_logprob=True
            )
        )
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(120)
    assert done.is_set()
    rows = view.rows
    assert len(rows[-1]["out"]) == result["meta_info"]["completion_tokens"]
    assert seen == sorted(seen) and len(set(seen)) > 2, seen
    data, _ = view._repr_mimebundle_()
    assert WIDGET_VIEW in data and MARK in data["text/html"]
    assert data["text/html"].count('<span data-kind="') == len(rows[-1]["prompt"]) + len(rows[-1]["out"])
    assert data["text/html"].count('title="generated: ') == len(rows[-1]["out"])
    assert "TokenView: 1 request" in data["text/plain"]
    view.color_by = "latency"
    assert "colour: latency" in view._static_html()
    view.close()


def test_select_choices_and_bad_input(rt: Any) -> None:
    view = TokenView(rt, follow=False)
    view.set_choices("answer", {"yes": -0.2, "no": -1.9})
    assert "select <b>answer</b>" in view._static_html()
    with pytest.raises(ValueError, match="color_by"):
        TokenView(rt, color_by="rainbow")
    with pytest.raises(ValueError, match="top_k"):
        view.generate("hello", top_k=0)
    with pytest.raises(ValueError):
        view.generate("hello", max_new_tokens=-3)
    assert_idle_balanced(rt)


@pytest.fixture
def ip_on_rt(rt: Any) -> Iterator[Any]:
    """IPython's test shell with sgnb loaded and the session on the shared runtime (not stopped after)."""
    from IPython.testing.globalipapp import get_ipython, start_ipython

    from sgnb.notebook.session import _clear_default_backend, get_session

    shell = start_ipython() or get_ipython()
    shell.run_line_magic("load_ext", "sgnb")
    session = get_session()
    assert session.runtime is None
    session._attach(rt, "the test session's shared runtime")
    yield shell
    session._unsubscribe()
    session.mirror.detach()
    session.mirror = session.runtime = None
    _clear_default_backend(rt.backend)


def test_magics_show_tokens_and_last_request(ip_on_rt: Any, rt: Any) -> None:
    """``%%sglang --show tokens`` traces the cell's requests (and only while it runs) into a live
    view, with the ``select``'s normalised logprobs; ``%sglang tokens`` shows the last request."""
    from sgnb.widgets._base import SgnbWidget

    ip = ip_on_rt
    result = ip.run_cell(
        "%%sglang -o st --show tokens\n"
        "s += 'Phone: ' + sgl.gen('p', regex=r'\\(\\d{3}\\) \\d{3}-\\d{4}', max_tokens=16, temperature=0)\n"
        "s += ' Happy? ' + sgl.select('a', choices=['yes', 'no'])\n"
    )
    result.raise_error()
    assert rt.trace_top_k == 0  # tracing ends with the cell
    (view,) = [w for w in SgnbWidget._live if isinstance(w, TokenView) and w.title == "Tokens of this cell"]
    (row,) = view.rows
    assert row["out"][0]["t"] == "(" and row["out"][0]["k"] == "forced" and "p" in row["out"][0]
    assert set(view._choices) == {"a"}
    assert {o["option"].strip() for o in view._choices["a"]} == {"yes", "no"}  # as scored: " yes"
    picked = [o["option"].strip() for o in view._choices["a"] if o["picked"]]
    assert picked == [ip.user_ns["st"]["a"]]
    last = ip.run_cell("%sglang tokens")
    last.raise_error()
    shown = last.result
    assert isinstance(shown, TokenView)
    assert [c["t"] for c in shown.rows[0]["out"]] == [c["t"] for c in row["out"]]
    view.close()
    shown.close()


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``sgnb serve`` (SGLang's HTTP API) in a child process, reached as a remote runtime."""
    from sgnb.runtimes.remote import RemoteRuntime
    from sgnb.serve.server import ServerProcess

    log = (tmp_path_factory.mktemp("tokens-remote") / "server.log").open("wb")
    with ServerProcess("--model", "bundled", log=log) as proc:
        runtime = RemoteRuntime(proc.url, timeout=60)
        yield runtime
        runtime.stop()
    log.close()


def test_remote_runtime_from_meta_info(remote: Any) -> None:
    """Over SGLang's HTTP API the view has only what ``/generate`` returns: streamed
    ``output_token_logprobs`` / ``output_top_logprobs`` and ``cached_tokens``; the allowed counts come
    from replaying the grammar. A repeated prompt shows exactly ``cached_tokens`` cached chips."""
    prompt = chat(remote, "Give me a phone number.")
    remote.flush_cache()
    first = TokenView.from_request(remote, prompt, regex=PHONE, max_new_tokens=20, temperature=0)
    view = TokenView.from_request(remote, prompt, regex=PHONE, max_new_tokens=20, temperature=0)
    assert_view_from_meta_info(first, view, remote.tokenizer)
    (row,) = view.rows
    assert row["done"] and row["constraint"] == "regex"


@pytest.fixture
def ip_on_remote(remote: Any) -> Iterator[Any]:
    """IPython's test shell with sgnb loaded and the session on the remote runtime (not stopped after)."""
    from IPython.testing.globalipapp import get_ipython, start_ipython

    from sgnb.notebook.session import _clear_default_backend, get_session

    shell = start_ipython() or get_ipython()
    shell.run_line_magic("load_ext", "sgnb")
    session = get_session()
    assert session.runtime is None
    session._attach(remote, "the test's remote runtime")
    yield shell
    session._unsubscribe()
    session.mirror.detach()
    session.mirror = session.runtime = None
    _clear_default_backend(remote.backend)


def test_magics_show_tokens_on_a_remote_session(ip_on_remote: Any, remote: Any) -> None:
    """``%%sglang --show tokens`` on a remote session: the DSL goes through SGLang's ``RuntimeEndpoint``
    (``sgnb.runtimes.remote.endpoint``), each request through the runtime, which asks the server for
    ``return_logprob`` + ``top_logprobs_num`` while the cell is traced. Every ``gen`` is a row whose
    chips are the server's ``output_token_logprobs`` / ``output_top_logprobs`` (that request's own
    answer), published token by token as the stream arrives, ``(`` forced by the replayed grammar;
    the program's own meta_info stays as asked."""
    from sgnb.notebook.session import get_session
    from sgnb.widgets._base import SgnbWidget

    ip = ip_on_remote
    log = EventLog(remote.hub)
    ip.run_cell(
        "%%sglang -o st --show tokens\n"
        "s += 'Phone: ' + sgl.gen('p', regex=r'\\(\\d{3}\\) \\d{3}-\\d{4}', max_tokens=16, temperature=0)\n"
        "s += ' Name: ' + sgl.gen('n', max_tokens=4, temperature=0)\n"
        "s += ' Happy? ' + sgl.select('a', choices=['yes', 'no'])\n"
    ).raise_error()
    st = ip.user_ns["st"]
    finished = list(get_session().finished)
    assert remote.logprob_top_k == 0  # tracing ends with the cell
    assert not [k for k in st.get_meta_info("p") if "logprob" in k]  # the answer as the program asked it
    (view,) = [w for w in SgnbWidget._live if isinstance(w, TokenView) and w.title == "Tokens of this cell"]
    rows = view.rows
    assert len(rows) == 2  # both gens; select's scoring requests generate nothing
    phone, name = rows
    assert "".join(c["t"] for c in phone["out"]).startswith(st["p"])  # then EOS, which the text trims
    assert phone["out"][0]["t"] == "(" and phone["out"][0]["k"] == "forced"
    assert phone["constraint"] == "regex" and not name["constraint"]
    # the numbers are the server's answer to that very request (the session's RequestFinished events)
    generated = [e for e in finished if e.completion_tokens > 0]
    assert [e.rid[:8] for e in generated] == [r["rid"] for r in rows]
    for row, event in zip(rows, generated, strict=True):
        entries, tops = event.logprobs["output_token_logprobs"], event.logprobs["output_top_logprobs"]
        assert len(row["out"]) == len(entries) == event.completion_tokens
        assert row["counts"]["cached"] == event.cached_tokens and len(row["prompt"]) == event.prompt_tokens
        for chip, (lp, token, _), top in zip(row["out"], entries, tops, strict=True):
            assert chip["t"] == remote.tokenizer.decode([token])
            assert chip["p"] == pytest.approx(math.exp(lp), rel=1e-5, abs=1e-9)
            assert len(top) == 5 and [p for _, p in chip["top"]] == pytest.approx(
                [math.exp(v) for v, _, _ in top if v > -1e30], rel=1e-5, abs=1e-9
            )
    # live: each token was published (TokenStep) as its chunk arrived, before its request finished
    for event in generated:
        order = [e for e in log.events if getattr(e, "rid", None) == event.rid]
        assert [type(e) for e in order] == [TokenStep] * event.completion_tokens + [RequestFinished]
        assert [e.step["id"] for e in order[:-1]] == event.output_ids
    # labels are the scored text: RuntimeEndpoint.select scores from the token before the choice
    # (token healing) and keeps it when the program text does not end with it ("? yes")
    options = sorted(o["option"] for o in view._choices["a"])
    assert len(options) == 2 and options[0].endswith("no") and options[1].endswith("yes")
    view.close()


def test_n_samples_one_row_each(rt: Any) -> None:
    """``n > 1`` (SGLang's parallel sampling: ``GenerateReqInput._handle_parallel_sampling``): one row
    per sample, the shared prompt drawn once, each sample's cached chips its own ``cached_tokens``."""
    prompt = chat(rt, "Name a colour.")
    try:
        view = TokenView.from_request(rt, prompt, n=3, temperature=1.0, max_new_tokens=6)
    except ValueError as exc:
        if "n > 1 is not supported" in str(exc):
            pytest.skip("this runtime has no n > 1 yet")
        raise
    results = view.result
    assert isinstance(results, list) and len(results) == 3
    rows = view.rows
    assert len(rows) == 3
    assert [r["same"] for r in rows] == [False, True, True]  # the prompt once, then "same prompt"
    by_rid = {r["rid"]: r for r in rows}
    for result in results:
        row = by_rid[result["meta_info"]["id"][:8]]
        assert len(row["out"]) == result["meta_info"]["completion_tokens"]
        assert row["counts"]["cached"] == result["meta_info"]["cached_tokens"] > 0
    assert_idle_balanced(rt)


def test_show_tokens_with_n_samples_on_a_remote_session(ip_on_remote: Any) -> None:
    """``gen(n=2)`` in a ``--no-stream --show tokens`` cell on a remote session: the program gets both
    samples (``StreamExecutor._execute_gen`` keeps the list), the view one row per sample, each the
    server's answer for it; a list of meta_infos is not a ``select`` (it used to raise there)."""
    from sgnb.widgets._base import SgnbWidget

    ip = ip_on_remote
    ip.run_cell(
        "%%sglang -o st --no-stream --show tokens\n"
        "s += 'The capital of France is' + sgl.gen('x', n=2, max_tokens=5, temperature=0.8)\n"
    ).raise_error()
    st = ip.user_ns["st"]
    metas = st.get_meta_info("x")
    assert isinstance(st["x"], list) and len(st["x"]) == len(metas) == 2
    (view,) = [w for w in SgnbWidget._live if isinstance(w, TokenView) and w.title == "Tokens of this cell"]
    rows = view.rows
    assert [r["rid"] for r in rows] == [m["id"][:8] for m in metas]
    assert [len(r["out"]) for r in rows] == [m["completion_tokens"] for m in metas]
    assert all(c.get("p") is not None for r in rows for c in r["out"])  # traced: the server's logprobs
    view.close()

"""Logprobs on the local runtime, in SGLang's shapes and with SGLang's values (see sgnb/core/logprobs.py)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from conftest import assert_idle_balanced, chat

from sgnb.core.events import EventLog, RequestFinished

PROMPT = "What is the capital of France?"


def test_greedy_output_logprobs_shape_and_top1(rt: Any) -> None:
    """SGLang's ``TokenizerManager.add_logprob_to_meta_info`` keys; under greedy decoding
    (``Sampler.forward``'s all-greedy path) the chosen token is the top-1 of ``output_top_logprobs``,
    and every top row is sorted best first (``get_top_logprobs_raw``: ``topk``)."""
    out = rt.generate(
        chat(rt, PROMPT), max_new_tokens=8, temperature=0, return_logprob=True, top_logprobs_num=5
    )
    meta = out["meta_info"]
    entries = meta["output_token_logprobs"]
    assert [t for _, t, _ in entries] == out["output_ids"]
    assert meta["output_token_logprobs_length"] == len(entries) == meta["completion_tokens"]
    assert meta["input_token_logprobs"] == []  # logprob_start_len -1: output tokens only
    assert meta["input_top_logprobs"] == []
    assert all(text is None for _, _, text in entries)  # return_text_in_logprobs defaults to False
    assert len(meta["output_top_logprobs"]) == len(entries)
    for (lp, token, _), top in zip(entries, meta["output_top_logprobs"], strict=True):
        assert len(top) == 5
        values = [v for v, _, _ in top]
        assert values == sorted(values, reverse=True)
        assert top[0][1] == token and top[0][0] == pytest.approx(lp, abs=1e-6)
        assert sum(math.exp(v) for v in values) <= 1 + 1e-4
        assert lp <= 0


def test_no_logprob_keys_unless_asked(rt: Any) -> None:
    """``TokenizerManager._handle_batch_output`` calls ``convert_logprob_style`` only when
    ``return_logprob``; the other logprob fields alone change nothing."""
    meta = rt.generate(PROMPT, max_new_tokens=2, temperature=0, top_logprobs_num=3)["meta_info"]
    assert not [k for k in meta if "logprob" in k]


def test_output_logprobs_equal_prompt_scoring(rt: Any) -> None:
    """A greedy token's logprob is the plain log-softmax of its logits (``Sampler.forward``), the
    same number a prefill of prompt + output gives for that token (``LogitsProcessor`` input logprobs)."""
    prompt = chat(rt, PROMPT)
    ids = rt.tokenizer.encode(prompt, add_special_tokens=False)
    rt.flush_cache()
    out = rt.generate(prompt, max_new_tokens=6, temperature=0, return_logprob=True)
    decoded = [lp for lp, _, _ in out["meta_info"]["output_token_logprobs"]]
    rt.flush_cache()
    scored = rt.score(ids, out["output_ids"])
    assert decoded == pytest.approx(scored, abs=0.05)  # bf16: decode vs one prefill differ slightly


def test_input_logprobs_from_logprob_start_len(rt: Any) -> None:
    """``logprob_start_len=k``: one entry per prompt token from k on, the first None
    (``SchedulerLogprobResultProcessor._process_input_token_logprobs``), the rest the tokens' logprobs;
    the cache serves at most k tokens so those positions are computed (``Req._compute_max_prefix_len``)."""
    prompt = chat(rt, PROMPT)
    ids = rt.tokenizer.encode(prompt, add_special_tokens=False)
    k = len(ids) - 6
    kwargs: dict[str, Any] = dict(
        max_new_tokens=2,
        temperature=0,
        return_logprob=True,
        logprob_start_len=k,
        top_logprobs_num=2,
        token_ids_logprob=[30, 1],
        return_text_in_logprobs=True,
    )
    rt.flush_cache()
    first = rt.generate(prompt, **kwargs)
    again = rt.generate(prompt, **kwargs)  # the whole prompt is cached now
    assert again["meta_info"]["cached_tokens"] == k
    for out in (first, again):
        meta = out["meta_info"]
        entries = meta["input_token_logprobs"]
        assert [t for _, t, _ in entries] == ids[k:]
        assert entries[0][0] is None
        assert [text for _, _, text in entries] == [rt.tokenizer.decode([t]) for t in ids[k:]]
        assert meta["input_top_logprobs"][0] is None and len(meta["input_top_logprobs"]) == len(entries)
        ids_rows = meta["input_token_ids_logprobs"]
        assert ids_rows[0] is None and [[t for _, t, _ in row] for row in ids_rows[1:]] == [[30, 1]] * 5
        rt.flush_cache()
        scored = rt.score(ids[: k + 1], ids[k + 1 :])
        assert [lp for lp, _, _ in entries[1:]] == pytest.approx(scored, abs=0.05)
        for (lp, _token, _), top in zip(entries[1:], meta["input_top_logprobs"][1:], strict=True):
            assert top[0][0] >= lp - 1e-6 and top[0][0] >= top[1][0]
    assert_idle_balanced(rt)


@pytest.mark.parametrize("start", [-1, "len-1", "len"])
def test_logprob_start_len_edges(rt: Any, start: Any) -> None:
    """-1 and len(prompt) give no prompt entries; len-1 gives one, ``(None, last token)``
    (``Scheduler.handle_generate_request`` and ``compute_extend_logprob_start_len``)."""
    ids = rt.tokenizer.encode(PROMPT, add_special_tokens=False)
    value = {"len-1": len(ids) - 1, "len": len(ids)}.get(start, start)
    meta = rt.generate(PROMPT, max_new_tokens=1, temperature=0, return_logprob=True, logprob_start_len=value)[
        "meta_info"
    ]
    expected = [(None, ids[-1], None)] if start == "len-1" else []
    assert meta["input_token_logprobs"] == expected


def test_sampled_logprobs_are_temperature_scaled(rt: Any) -> None:
    """Non-greedy requests get ``log_softmax(logits / temperature)`` (``Sampler.forward``'s standard
    path: ``logits.div_(temperatures)`` then ``log(probs)``); greedy ones the plain log-softmax."""
    vocab = list(range(rt.model.vocab_size))
    base: dict[str, Any] = dict(max_new_tokens=1, return_logprob=True, token_ids_logprob=vocab)
    plain = rt.generate(PROMPT, temperature=0, **base)["meta_info"]["output_token_ids_logprobs"][0]
    hot = rt.generate(PROMPT, temperature=0.5, sampling_seed=1, **base)["meta_info"]
    lp1 = torch.tensor([v for v, _, _ in plain], dtype=torch.float64)
    lp_half = torch.tensor([v for v, _, _ in hot["output_token_ids_logprobs"][0]], dtype=torch.float64)
    expected = torch.log_softmax(lp1 / 0.5, dim=-1)
    top = torch.topk(expected, 50).indices  # compare where the mass is; the tail is float noise
    assert torch.allclose(lp_half[top], expected[top], atol=2e-3)
    chosen_lp, chosen, _ = hot["output_token_logprobs"][0]
    assert chosen_lp == pytest.approx(float(lp_half[chosen]), abs=1e-6)
    assert float(torch.logsumexp(lp_half, 0)) == pytest.approx(0.0, abs=1e-3)


def test_stream_chunks_carry_cumulative_logprobs(rt: Any) -> None:
    """A stream's chunks carry the logprobs so far and ``output_token_logprobs_length`` counts them
    (``TokenizerManager.add_logprob_to_meta_info``; SGLang's default, non-incremental streaming)."""
    chunks = list(
        rt.generate(chat(rt, PROMPT), max_new_tokens=8, temperature=0, stream=True, return_logprob=True)
    )
    last = chunks[-1]["meta_info"]["output_token_logprobs"]
    seen = 0
    for chunk in chunks:
        meta = chunk["meta_info"]
        entries = meta["output_token_logprobs"]
        assert meta["output_token_logprobs_length"] == len(entries) == meta["completion_tokens"]
        assert entries == last[: len(entries)] and len(entries) >= seen
        seen = len(entries)
    assert seen == len(chunks[-1]["output_ids"])


def test_bad_logprob_fields_are_refused_and_the_runtime_goes_on(rt: Any) -> None:
    """SGLang refuses a start past the prompt (``Scheduler.handle_generate_request``) and token ids
    outside the vocabulary (``TokenizerManager._validate_token_ids_logprob``), with these messages."""
    ids = rt.tokenizer.encode(PROMPT, add_special_tokens=False)
    with pytest.raises(ValueError, match="is higher than the number of input tokens"):
        rt.generate(PROMPT, return_logprob=True, logprob_start_len=len(ids) + 1)
    with pytest.raises(ValueError, match="out-of-vocabulary token id"):
        rt.generate(PROMPT, return_logprob=True, token_ids_logprob=[rt.model.vocab_size])
    with pytest.raises(ValueError, match="top_logprobs_num must be an int"):
        rt.generate(PROMPT, return_logprob=True, top_logprobs_num="3")
    with pytest.raises(ValueError, match="return_logprob must be a bool"):
        rt.generate(PROMPT, return_logprob="yes")
    out = rt.generate(PROMPT, max_new_tokens=2, temperature=0, return_logprob=True, ignore_eos=True)
    assert len(out["meta_info"]["output_token_logprobs"]) == 2
    assert_idle_balanced(rt)


def test_request_finished_carries_logprobs(rt: Any) -> None:
    """The token view reads them from the event: the same lists as ``meta_info``."""
    log = EventLog(rt.hub)
    try:
        out = rt.generate(PROMPT, max_new_tokens=3, temperature=0, return_logprob=True, top_logprobs_num=2)
        plain = rt.generate(PROMPT, max_new_tokens=1, temperature=0)
    finally:
        assert log.unsubscribe is not None
        log.unsubscribe()
    done = {e.rid: e for e in log.events if isinstance(e, RequestFinished)}
    event = done[out["meta_info"]["id"]]
    assert event.logprobs is not None
    assert event.logprobs["output_token_logprobs"] == out["meta_info"]["output_token_logprobs"]
    assert event.logprobs["output_top_logprobs"] == out["meta_info"]["output_top_logprobs"]
    assert done[plain["meta_info"]["id"]].logprobs is None


def test_dsl_gen_return_logprob(rt: Any) -> None:
    """``sgl.gen(..., return_logprob=True, top_logprobs_num=k)`` reaches the runtime as request-level
    fields, as ``RuntimeEndpoint.generate`` sends them, and ``get_meta_info`` holds the logprobs."""
    import sglang as sgl

    @sgl.function
    def complete(s: Any) -> None:
        s += "The capital of France is" + sgl.gen(
            "a", max_tokens=4, temperature=0, ignore_eos=True, return_logprob=True, top_logprobs_num=2
        )

    state = complete.run(backend=rt.backend)
    meta = state.get_meta_info("a")
    assert meta["output_token_logprobs_length"] == len(meta["output_token_logprobs"]) == 4
    assert all(
        len(row) == 2 and row[0][1] == t
        for row, (_, t, _) in zip(meta["output_top_logprobs"], meta["output_token_logprobs"], strict=True)
    )

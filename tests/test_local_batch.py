"""A batch ``generate`` on the local runtime returns what SGLang's ``Engine.generate`` returns for one.

SGLang: ``TokenizerManager._handle_batch_request`` (results in prompt order, each prompt's ``n``
samples together, stream chunks named by ``"index"``) and ``GenerateReqInput._normalize_rid`` /
``_validate_rid_uniqueness`` (the rid checks and their messages, checked here against SGLang's class).
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import assert_idle_balanced

PROMPTS = ["Hello, my name is", "The capital of France is", "One, two, three,"]


def test_batch_equals_the_prompts_one_by_one(rt: Any) -> None:
    alone = [rt.generate(p, max_new_tokens=6, temperature=0)["text"] for p in PROMPTS]
    outs = rt.generate(PROMPTS, max_new_tokens=6, temperature=0)
    assert [o["text"] for o in outs] == alone
    ids = [rt.tokenizer.encode(p) for p in PROMPTS]
    assert [o["text"] for o in rt.generate(input_ids=ids, max_new_tokens=6, temperature=0)] == alone
    assert_idle_balanced(rt)


def test_batch_with_n_is_prompt_major(rt: Any) -> None:
    outs = rt.generate(PROMPTS[:2], max_new_tokens=3, temperature=1.0, n=2)
    assert len(outs) == 4
    # each prompt's samples together: the first two share the first prompt's prompt_tokens
    tokens = [o["meta_info"]["prompt_tokens"] for o in outs]
    assert tokens[0] == tokens[1] == len(rt.tokenizer.encode(PROMPTS[0]))
    assert tokens[2] == tokens[3] == len(rt.tokenizer.encode(PROMPTS[1]))
    assert_idle_balanced(rt)


def test_streamed_batch_names_each_output(rt: Any) -> None:
    alone = [rt.generate(p, max_new_tokens=5, temperature=0)["text"] for p in PROMPTS]
    last: dict[int, str] = {}
    for chunk in rt.generate(PROMPTS, max_new_tokens=5, temperature=0, stream=True):
        last[chunk["index"]] = chunk["text"]
    assert [last[i] for i in range(len(PROMPTS))] == alone
    assert_idle_balanced(rt)


def test_closing_a_streamed_batch_aborts_it(rt: Any) -> None:
    stream = rt.generate(PROMPTS, max_new_tokens=200, temperature=0, ignore_eos=True, stream=True)
    next(stream)
    stream.close()
    assert rt.generate("hi", max_new_tokens=2)["meta_info"]["completion_tokens"] == 2
    assert_idle_balanced(rt)


@pytest.mark.parametrize("rid", [["a"], ["a", "a"]])
def test_rid_checks_are_sglangs(rt: Any, rid: list[str]) -> None:
    from sglang.srt.managers.io_struct import GenerateReqInput

    theirs = GenerateReqInput(text=["x", "y"], rid=rid, sampling_params={})
    with pytest.raises(ValueError) as expected:
        theirs.normalize_batch_and_arguments()
        theirs._validate_rid_uniqueness()
    with pytest.raises(ValueError) as got:
        rt.generate(["x", "y"], rid=rid, max_new_tokens=1)
    assert str(got.value) == str(expected.value)


def _finished(rt: Any) -> tuple[list[Any], Any]:
    from sgnb.core.events import RequestFinished

    seen: list[Any] = []
    unsubscribe = rt.hub.subscribe(lambda e: seen.append(e) if isinstance(e, RequestFinished) else None)
    return seen, unsubscribe


@pytest.mark.parametrize(
    "call",
    [
        {"prompt": [["x"]]},  # a nested list ran as a batch of its own
        {"prompt": ["Hello", 5]},  # the first prompt ran before the second was refused
        {"input_ids": [[1, 2], 3]},  # TypeError after the first prompt ran
        {"input_ids": [[[1, 2]]]},
        {"prompt": ["x", "y"], "rid": 5},  # ran as rids "5_0", "5_1"
    ],
)
def test_a_malformed_batch_is_refused_before_any_prompt_runs(rt: Any, call: dict[str, Any]) -> None:
    """SGLang's ``GenerateReqInput._normalize_rid`` refuses a rid that is neither a string nor a list
    of strings (its message here); a prompt of a batch that is not one text / one token list is
    refused too, before anything runs (nothing finishes)."""
    seen, unsubscribe = _finished(rt)
    try:
        with pytest.raises(ValueError) as got:
            rt.generate(**call, max_new_tokens=2)
        assert rt.generate("hi", max_new_tokens=1)["meta_info"]["completion_tokens"] == 1
    finally:
        unsubscribe()
    assert len(seen) == 1, [e.rid for e in seen]  # only the "hi" after it
    if "rid" in call:
        assert str(got.value) == "The rid should be a string or a list of strings."
    assert_idle_balanced(rt)


def test_a_bad_prompt_aborts_the_rest_of_the_batch(rt: Any) -> None:
    """The second prompt's token is out of the vocabulary (ValueError): the first, already running,
    is aborted at once rather than run to its end for no one."""
    seen, unsubscribe = _finished(rt)
    try:
        with pytest.raises(ValueError, match="input_ids must be in"):
            rt.generate(input_ids=[[1, 2, 3], [10**9]], max_new_tokens=100, ignore_eos=True)
    finally:
        unsubscribe()
    assert [e.finish_reason["type"] for e in seen] == ["abort"]
    assert_idle_balanced(rt)


def test_a_bad_prompt_in_a_streamed_batch_leaves_nothing_running(rt: Any) -> None:
    with pytest.raises(ValueError, match="input_ids must be in"):
        rt.generate(input_ids=[[1, 2, 3], [10**9]], max_new_tokens=200, ignore_eos=True, stream=True)
    # the first prompt was submitted before the second was refused; nobody reads its stream
    assert rt.generate("hi", max_new_tokens=2)["meta_info"]["completion_tokens"] == 2
    assert_idle_balanced(rt)


def test_a_duplicate_rid_in_a_batch_does_not_abort_the_request_that_holds_it(rt: Any) -> None:
    """The batch's "x" is refused (``Duplicate request ID``) because another call runs "x": that
    call must finish normally, not be aborted by the batch's clean-up."""
    import threading

    out: dict[str, Any] = {}
    first = threading.Thread(
        target=lambda: out.update(rt.generate("Hello", rid="x", max_new_tokens=60, ignore_eos=True))
    )
    first.start()
    while not any(r.rid == "x" for r in rt.scheduler.running + rt.scheduler.waiting):
        first.join(0.01)
    with pytest.raises(ValueError, match="Duplicate request ID"):
        rt.generate(["a", "b"], rid=["y", "x"], max_new_tokens=2)
    first.join()
    assert out["meta_info"]["finish_reason"]["type"] == "length"
    assert_idle_balanced(rt)


def test_an_empty_batch_is_sglangs_answer(rt: Any) -> None:
    """``text=[]``: SGLang admits a batch of none and answers with no outputs (as ``sgnb serve`` does)."""
    from test_serve_batch_stream import sglang_batch_answer

    assert rt.generate([], max_new_tokens=2) == []
    assert list(rt.generate([], max_new_tokens=2, stream=True)) == []
    assert sglang_batch_answer({"text": [], "sampling_params": {"max_new_tokens": 2}, "stream": True}) == []
    assert_idle_balanced(rt)


def test_sampling_params_per_prompt(rt: Any) -> None:
    """A list of sampling parameters, one dict per prompt, as ``Engine.generate`` takes it; keyword
    parameters go into each; SGLang's check that ``n`` is the same in all (its message, from its class)."""
    from sglang.srt.managers.io_struct import GenerateReqInput

    outs = rt.generate(
        PROMPTS[:2], [{"max_new_tokens": 2}, {"max_new_tokens": 5}], temperature=0, ignore_eos=True
    )
    assert [o["meta_info"]["completion_tokens"] for o in outs] == [2, 5]
    ids = [rt.tokenizer.encode(p) for p in PROMPTS[:2]]
    outs = rt.generate(
        input_ids=ids, sampling_params=[{"max_new_tokens": 3}, {"max_new_tokens": 1}], ignore_eos=True
    )
    assert [o["meta_info"]["completion_tokens"] for o in outs] == [3, 1]
    theirs = GenerateReqInput(text=["a", "b"], sampling_params=[{"n": 2}, {"n": 1}])
    with pytest.raises(ValueError) as expected:
        theirs.normalize_batch_and_arguments()
    with pytest.raises(ValueError) as got:
        rt.generate(["a", "b"], [{"n": 2}, {"n": 1}])
    assert str(got.value) == str(expected.value)
    assert_idle_balanced(rt)

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

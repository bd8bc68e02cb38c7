"""``n > 1`` parallel sampling: in-process, on ``/generate`` and on the OpenAI routes, as SGLang runs it."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import httpx
from conftest import assert_idle_balanced, chat

from sgnb.core.events import EventLog, RequestFinished
from sgnb.tree.mirror import TreeMirror

POEM = "Write a short poem about the sea."


def test_n_samples_share_one_prefilled_prompt(rt: Any) -> None:
    """``generate(prompt, n=4)`` returns a list of 4 (``Engine.generate`` on the batch that
    ``GenerateReqInput._handle_parallel_sampling`` makes). ``TokenizerManager._handle_batch_request``
    first prefills the prompt alone (``max_new_tokens = 0``), so every sample finds it cached but for
    the last token (``Req._compute_max_prefix_len``: at most ``len - 1``); the tree then holds the
    prompt once, with one branch per distinct sample."""
    prompt = chat(rt, POEM)
    ids = rt.tokenizer.encode(prompt, add_special_tokens=False)
    rt.flush_cache()
    mirror = TreeMirror(rt)
    log = EventLog(rt.hub)
    try:
        outs = rt.generate(prompt, n=4, temperature=1.0, max_new_tokens=6, ignore_eos=True)
    finally:
        assert log.unsubscribe is not None
        log.unsubscribe()
        mirror.detach()
    assert isinstance(outs, list) and len(outs) == 4
    assert [o["meta_info"]["cached_tokens"] for o in outs] == [len(ids) - 1] * 4
    assert len({o["meta_info"]["id"] for o in outs}) == 4
    assert all(o["meta_info"]["completion_tokens"] == 6 for o in outs)
    finished = log.of_type(RequestFinished)
    assert len(finished) == 5  # the prefill-only warm-up, then the 4 samples
    assert finished[0].prompt_ids == ids and finished[0].cached_tokens == 0
    # one prefix, n branches: every cached path starts with the prompt; one leaf per distinct sample
    leaves = mirror.paths()
    assert all(path[: len(ids)] == tuple(ids) for path in leaves)
    distinct = {tuple(ids + o["output_ids"][:-1]) for o in outs}  # the last token has no KV yet
    assert leaves == distinct
    assert_idle_balanced(rt)


def test_n_one_is_a_single_result(rt: Any) -> None:
    """``n`` 1 (or less: SGLang's ``_handle_parallel_sampling`` only expands ``n > 1``) is one dict."""
    for n in (1, 0):
        out = rt.generate(POEM, n=n, max_new_tokens=2, temperature=0)
        assert isinstance(out, dict) and "text" in out


def test_n_stream_tags_chunks_with_index(rt: Any) -> None:
    """A stream of ``n`` samples yields every sample's chunks, each with its ``index``
    (``TokenizerManager._stream_batch_responses``); each sample's chunks grow to its final result."""
    chunks = list(
        rt.generate(
            chat(rt, POEM),
            n=3,
            temperature=1.0,
            max_new_tokens=5,
            ignore_eos=True,
            stream=True,
            return_logprob=True,
        )
    )
    by_index: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks:
        by_index.setdefault(chunk["index"], []).append(chunk)
    assert sorted(by_index) == [0, 1, 2]
    for own in by_index.values():
        counts = [c["meta_info"]["completion_tokens"] for c in own]
        assert counts == sorted(counts) and counts[-1] == 5
        assert own[-1]["meta_info"]["finish_reason"] is not None
        assert own[-1]["meta_info"]["output_token_logprobs_length"] == 5
    assert_idle_balanced(rt)


def test_n_with_greedy_gives_n_equal_samples(rt: Any) -> None:
    """Copies share the sampling parameters (``_normalize_sampling_params``): greedy gives n equal answers,
    each with its own logprobs."""
    outs = rt.generate(chat(rt, "What is 2+2?"), n=3, temperature=0, max_new_tokens=6, return_logprob=True)
    assert len({o["text"] for o in outs}) == 1
    assert all(
        len(o["meta_info"]["output_token_logprobs"]) == o["meta_info"]["completion_tokens"] for o in outs
    )


# ---- sgnb serve ----------------------------------------------------------------------------------


def test_native_n_returns_a_list_in_sglang_order(http: httpx.Client, rt: Any) -> None:
    """``/generate`` with ``sampling_params.n``: a list even for one prompt; for a batch, each prompt's
    n results in a row (``TokenizerManager._handle_batch_request`` sends ``for i in batch: for _ in n``)."""
    params = {"max_new_tokens": 3, "temperature": 1.0, "n": 3}
    one = http.post("/generate", json={"text": chat(rt, POEM), "sampling_params": params}).json()
    assert isinstance(one, list) and len(one) == 3
    prompts = ["Hi", "Tell me about the moon in a few words"]
    lengths = [len(rt.tokenizer.encode(p, add_special_tokens=False)) for p in prompts]
    res = http.post("/generate", json={"text": prompts, "sampling_params": {**params, "n": 2}})
    assert res.status_code == 200, res.text
    assert [o["meta_info"]["prompt_tokens"] for o in res.json()] == [lengths[0]] * 2 + [lengths[1]] * 2


def test_native_n_refusal_and_stream(http: httpx.Client, rt: Any) -> None:
    """Different ``n`` per prompt is SGLang's ValueError (``_handle_parallel_sampling``); a stream of
    ``n > 1`` sends every sample's chunks with its ``index`` (``_stream_batch_responses``)."""
    mixed = {"text": ["a b", "c d"], "sampling_params": [{"n": 2}, {"n": 3}]}
    res = http.post("/generate", json=mixed)
    assert res.status_code == 400 and "parallel_sample_num should be the same" in res.text
    huge = http.post("/generate", json={"text": "hi", "sampling_params": {"n": 300}})
    assert huge.status_code == 400 and "not supported by sgnb serve" in huge.text  # n makes a batch: <= 256
    huge_chat = {"messages": [{"role": "user", "content": "hi"}], "n": 300}
    assert http.post("/v1/chat/completions", json=huge_chat).status_code == 400
    body = {
        "text": chat(rt, POEM),
        "sampling_params": {"n": 3, "max_new_tokens": 4, "temperature": 1.0, "ignore_eos": True},
        "stream": True,
        "return_logprob": True,
    }
    with http.stream("POST", "/generate", json=body) as r:
        events = [e[len("data: ") :] for e in r.read().decode().split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    finals = {c["index"]: c for c in chunks if c["meta_info"]["finish_reason"] is not None}
    assert sorted(finals) == [0, 1, 2]
    assert all(c["meta_info"]["output_token_logprobs_length"] == 4 for c in finals.values())
    assert_idle_balanced(rt)


def test_openai_chat_n_choices(http: httpx.Client, rt: Any) -> None:
    """``/v1/chat/completions`` with ``n``: ``choices[i]`` with ``index`` i; usage counts the prompt once
    (``UsageProcessor.calculate_response_usage``); the body validates as SGLang's ``ChatCompletionResponse``."""
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionResponse

    messages = [{"role": "user", "content": POEM}]
    body = {"model": "m", "messages": messages, "n": 4, "max_tokens": 5, "temperature": 1.0, "logprobs": True}
    res = http.post("/v1/chat/completions", json=body)
    assert res.status_code == 200, res.text
    out = res.json()
    ChatCompletionResponse.model_validate(out)
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    assert all(len(c["logprobs"]["content"]) >= 1 for c in out["choices"])
    prompt_len = len(rt.tokenizer.encode(rt.apply_chat_template(messages), add_special_tokens=False))
    completion = sum(len(c["logprobs"]["content"]) for c in out["choices"])
    assert out["usage"]["prompt_tokens"] == prompt_len
    assert out["usage"]["completion_tokens"] == completion
    assert out["usage"]["prompt_tokens_details"]["cached_tokens"] == prompt_len - 1  # after the warm-up
    # streamed: every choice gets its role chunk, its content and, after all have ended, its finish
    # chunk (OpenAIServingChat._generate_chat_stream); usage counts the prompt once.
    stream_body = {**body, "stream": True, "ignore_eos": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", "/v1/chat/completions", json=stream_body) as r:
        raw = r.read().decode()
    events = [json.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: {")]
    choices = [c for ev in events for c in ev["choices"]]
    roles = [c["index"] for c in choices if c["delta"].get("role")]
    ends = [c["index"] for c in choices if c["finish_reason"] is not None]
    assert sorted(roles) == sorted(ends) == [0, 1, 2, 3]
    assert choices[-4:] == [c for c in choices if c["finish_reason"] is not None]  # finishes come last
    tokens = Counter(c["index"] for c in choices if c.get("logprobs") for _ in c["logprobs"]["content"])
    assert all(tokens[i] >= 1 for i in range(4))
    assert events[-1]["usage"]["prompt_tokens"] == prompt_len
    assert events[-1]["usage"]["completion_tokens"] == 4 * 5


def test_openai_completion_n_per_prompt(http: httpx.Client) -> None:
    """``/v1/completions`` with two prompts and ``n: 2``: four choices, each prompt's two in a row
    (``OpenAIServingCompletion``: ``prompt_index = idx // n``)."""
    from sglang.srt.entrypoints.openai.protocol import CompletionResponse

    body = {"model": "m", "prompt": ["1, 2, 3,", "a, b, c,"], "n": 2, "max_tokens": 2, "temperature": 0}
    res = http.post("/v1/completions", json=body)
    assert res.status_code == 200, res.text
    out = res.json()
    CompletionResponse.model_validate(out)
    texts = [c["text"] for c in out["choices"]]
    assert [c["index"] for c in out["choices"]] == [0, 1, 2, 3]
    assert texts[0] == texts[1] and texts[2] == texts[3] and texts[0] != texts[2]  # greedy copies agree
    assert Counter(json.dumps(c["finish_reason"]) for c in out["choices"]) == Counter({'"length"': 4})
    with http.stream("POST", "/v1/completions", json={**body, "prompt": "1, 2, 3,", "stream": True}) as r:
        raw = r.read().decode()
    events = [json.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: {")]
    streamed: dict[int, str] = {}
    for ev in events:
        for c in ev["choices"]:
            streamed[c["index"]] = streamed.get(c["index"], "") + c["text"]
    assert streamed == {0: texts[0], 1: texts[0]}


def test_dsl_gen_n(rt: Any) -> None:
    """``sgl.gen(name, n=3)`` on ``rt.backend``: the variable is a list of 3 texts and the program
    continues with the first, as the interpreter does with a list from a backend (``_execute_gen``)."""
    import sglang as sgl

    @sgl.function
    def three(s: Any) -> None:
        s += "A fruit:" + sgl.gen("fruit", n=3, max_tokens=3, temperature=1.0, ignore_eos=True)

    state = three.run(backend=rt.backend)
    assert state.error() is None
    fruits = state["fruit"]
    assert isinstance(fruits, list) and len(fruits) == 3
    assert state.text() == "A fruit:" + fruits[0]
    assert len(state.get_meta_info("fruit")) == 3

"""Logprobs through ``sgnb serve``: the same values as in-process, in SGLang's native and OpenAI shapes."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from conftest import chat

from sgnb.serve.openai_logprobs import lossless_text, token_bytes

PROMPT = "What is the capital of France?"
LOGPROB_KEYS = (
    "input_token_logprobs",
    "output_token_logprobs",
    "output_token_logprobs_length",
    "input_top_logprobs",
    "output_top_logprobs",
    "input_token_ids_logprobs",
    "output_token_ids_logprobs",
)


def sse(raw: bytes) -> list[Any]:
    events = [e[len("data: ") :] for e in raw.decode().split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


def test_native_generate_logprobs_equal_in_process(http: httpx.Client, rt: Any) -> None:
    """``/generate`` returns ``meta_info``'s logprob keys exactly as the runtime computes them in-process
    (``TokenizerManager.convert_logprob_style``; tuples become JSON arrays)."""
    prompt = chat(rt, PROMPT)
    k = len(rt.tokenizer.encode(prompt, add_special_tokens=False)) - 5
    fields: dict[str, Any] = dict(
        return_logprob=True,
        logprob_start_len=k,
        top_logprobs_num=3,
        token_ids_logprob=[30, 2],
        return_text_in_logprobs=True,
    )
    params = {"max_new_tokens": 6, "temperature": 0}
    rt.flush_cache()
    local = rt.generate(prompt, params, **fields)["meta_info"]
    rt.flush_cache()
    res = http.post("/generate", json={"text": prompt, "sampling_params": params, **fields})
    assert res.status_code == 200, res.text
    served = res.json()["meta_info"]
    for key in LOGPROB_KEYS:
        assert served[key] == as_json(local[key]), key
    assert served["input_token_logprobs"][0][0] is None


def test_native_stream_chunks_keep_sglang_length_invariant(http: httpx.Client, rt: Any) -> None:
    """Each streamed chunk's ``output_token_logprobs`` is the list so far and
    ``output_token_logprobs_length`` its length (``TokenizerManager.add_logprob_to_meta_info``,
    non-incremental streaming: SGLang's default)."""
    body = {
        "text": chat(rt, PROMPT),
        "sampling_params": {"max_new_tokens": 8, "temperature": 0},
        "return_logprob": True,
        "top_logprobs_num": 2,
        "stream": True,
    }
    with http.stream("POST", "/generate", json=body) as res:
        chunks = sse(res.read())
    final = chunks[-1]["meta_info"]
    previous = 0
    for chunk in chunks:
        meta = chunk["meta_info"]
        entries = meta["output_token_logprobs"]
        assert meta["output_token_logprobs_length"] == len(entries) >= previous
        assert entries == final["output_token_logprobs"][: len(entries)]
        assert len(meta["output_top_logprobs"]) == len(entries)
        previous = len(entries)
    assert [t for _, t, _ in final["output_token_logprobs"]] == chunks[-1]["output_ids"]


def test_prefill_only_with_prompt_logprobs(http: httpx.Client, rt: Any) -> None:
    """``max_new_tokens: 0`` with ``logprob_start_len``: what ``RuntimeEndpoint.select`` sends; the prompt
    entries are the runtime's, no output entries."""
    prompt = chat(rt, PROMPT)
    ids = rt.tokenizer.encode(prompt, add_special_tokens=False)
    fields: dict[str, Any] = dict(
        return_logprob=True, logprob_start_len=len(ids) - 3, return_text_in_logprobs=True
    )
    rt.flush_cache()
    local = rt.generate(prompt, max_new_tokens=1, temperature=0, **fields)["meta_info"]
    rt.flush_cache()
    out = http.post(
        "/generate", json={"text": prompt, "sampling_params": {"max_new_tokens": 0}, **fields}
    ).json()
    meta = out["meta_info"]
    assert out["text"] == "" and meta["completion_tokens"] == 0
    assert meta["input_token_logprobs"] == as_json(local["input_token_logprobs"])
    assert meta["output_token_logprobs"] == [] and meta["output_token_logprobs_length"] == 0


# ---- OpenAI shapes ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sglang_chat_builder(rt: Any) -> Any:
    """SGLang's own ``OpenAIServingChat._build_token_logprobs_from_raw``, bound to our tokenizer."""
    from sglang.srt.entrypoints.openai.serving_chat import OpenAIServingChat

    holder = SimpleNamespace(tokenizer_manager=SimpleNamespace(tokenizer=rt.tokenizer))
    return lambda tokens, tops: [
        item.model_dump() for item in OpenAIServingChat._build_token_logprobs_from_raw(holder, tokens, tops)
    ]


def test_chat_logprobs_are_sglangs(http: httpx.Client, rt: Any, sglang_chat_builder: Any) -> None:
    """``/v1/chat/completions`` with ``logprobs``/``top_logprobs``: ``choices[0].logprobs`` is what SGLang's
    ``OpenAIServingChat._build_token_logprobs_from_raw`` builds from the same request's ``meta_info``, and
    the response validates as SGLang's ``ChatCompletionResponse``."""
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionResponse

    messages = [{"role": "user", "content": "Write two emoji and a Chinese word."}]
    body = {
        "model": "m",
        "messages": messages,
        "max_tokens": 10,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 3,
    }
    rt.flush_cache()
    local = rt.generate(
        rt.apply_chat_template(messages),
        max_new_tokens=10,
        temperature=0,
        return_logprob=True,
        top_logprobs_num=3,
        return_text_in_logprobs=True,
    )["meta_info"]
    rt.flush_cache()
    res = http.post("/v1/chat/completions", json=body)
    assert res.status_code == 200, res.text
    ChatCompletionResponse.model_validate(res.json())
    got = res.json()["choices"][0]["logprobs"]["content"]
    assert got == as_json(sglang_chat_builder(local["output_token_logprobs"], local["output_top_logprobs"]))
    assert all(len(item["top_logprobs"]) == 3 for item in got)
    # without logprobs: null, as SGLang
    plain = http.post("/v1/chat/completions", json={**body, "logprobs": False}).json()
    assert plain["choices"][0]["logprobs"] is None

    # streamed: each content chunk carries its step's tokens' logprobs
    # (OpenAIServingChat._process_streaming_logprobs); ASCII text, so no step is held back
    body["messages"] = [{"role": "user", "content": "Name three fruits in English."}]
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True, "ignore_eos": True}) as r:
        events = sse(r.read())
    streamed = [
        e for ev in events for c in ev["choices"] if c.get("logprobs") for e in c["logprobs"]["content"]
    ]
    rt.flush_cache()
    full = http.post("/v1/chat/completions", json={**body, "ignore_eos": True}).json()
    assert streamed == full["choices"][0]["logprobs"]["content"]


def test_completion_logprobs_are_sglangs(http: httpx.Client, rt: Any) -> None:
    """``/v1/completions`` with ``logprobs: 2``: ``choices[0].logprobs`` is SGLang's
    ``to_openai_style_logprobs`` of the same ``meta_info``; streamed chunks add up to it."""
    from sglang.srt.entrypoints.openai.protocol import CompletionResponse
    from sglang.srt.entrypoints.openai.utils import to_openai_style_logprobs

    body = {"model": "m", "prompt": "Three fruits:", "max_tokens": 8, "temperature": 0, "logprobs": 2}
    rt.flush_cache()
    local = rt.generate(
        "Three fruits:",
        max_new_tokens=8,
        temperature=0,
        return_logprob=True,
        top_logprobs_num=2,
        return_text_in_logprobs=True,
    )["meta_info"]
    rt.flush_cache()
    res = http.post("/v1/completions", json=body)
    assert res.status_code == 200, res.text
    CompletionResponse.model_validate(res.json())
    got = res.json()["choices"][0]["logprobs"]
    expected = to_openai_style_logprobs(
        output_token_logprobs=local["output_token_logprobs"],
        output_top_logprobs=local["output_top_logprobs"],
        tokenizer=rt.tokenizer,
    ).model_dump()
    assert got == as_json(expected)
    assert all(len(row) <= 2 for row in got["top_logprobs"])
    rt.flush_cache()  # bf16: a cached prefix changes the last digits, so both runs start cold
    with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        events = sse(r.read())
    merged: dict[str, list[Any]] = {"tokens": [], "token_logprobs": [], "top_logprobs": []}
    for ev in events:
        for choice in ev["choices"]:
            for key in merged:
                merged[key] += (choice.get("logprobs") or {}).get(key, [])
    assert merged == {key: got[key] for key in merged}


def test_byte_level_helpers_match_sglang(rt: Any) -> None:
    """``token_bytes`` / ``lossless_text`` equal SGLang's ``token_id_to_bytes`` / ``_lossless_token_text``
    over the bundled vocabulary (byte-level BPE: character fragments included)."""
    from sglang.srt.entrypoints.openai.utils import _lossless_token_text, token_id_to_bytes

    tok = rt.tokenizer
    for token_id in range(0, rt.model.vocab_size, 7):
        text = tok.decode([token_id])
        assert token_bytes(tok, token_id) == token_id_to_bytes(tok, token_id), token_id
        assert lossless_text(tok, token_id, text) == _lossless_token_text(tok, token_id, text), token_id


# ---- the DSL: sgl.gen(return_logprob=True) on rt.backend and on SGLang's RuntimeEndpoint ------------


def _stream_with_meta(backend: Any, prompt: str) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    import sglang as sgl

    @sgl.function
    def complete(s: Any, text: str) -> None:
        s += text + sgl.gen(
            "a", max_tokens=8, temperature=0, ignore_eos=True, return_logprob=True, top_logprobs_num=2
        )

    async def collect(state: Any) -> list[tuple[str, dict[str, Any]]]:
        return [(out, meta) async for out, meta in state.text_async_iter("a", return_meta_data=True)]

    state = complete.run(text=prompt, stream=True, backend=backend)
    chunks = asyncio.run(collect(state))
    state.sync()
    return chunks, state


def test_dsl_stream_logprobs_as_runtime_endpoint(http: httpx.Client, rt: Any) -> None:
    """``gen(..., return_logprob=True)`` streamed: every chunk of ``text_async_iter(return_meta_data=True)``
    carries the logprobs so far with ``output_token_logprobs_length`` their count (what
    ``RuntimeEndpoint.generate_stream`` yields from the server's chunks), on ``rt.backend`` as on
    SGLang's own ``RuntimeEndpoint`` in front of ``sgnb serve``; the final values are the same.

    Through ``RuntimeEndpoint`` a chunk that added no text is held by the interpreter
    (``_merge_stream_meta_info``) and its list prepended to the next one, so there only the last
    ``output_token_logprobs_length`` entries are the list so far; ``rt.backend`` yields no such chunk."""
    from sglang import RuntimeEndpoint

    prompt = "The three primary colors are"
    results = {}
    for name, backend in (("local", rt.backend), ("endpoint", RuntimeEndpoint(str(http.base_url)))):
        rt.flush_cache()
        chunks, state = _stream_with_meta(backend, prompt)
        final = state.get_meta_info("a")
        assert final["output_token_logprobs_length"] == final["completion_tokens"] == 8
        ids = [t for _, t, _ in final["output_token_logprobs"]]
        assert "".join(out for out, _ in chunks) == state["a"]
        previous = 0
        for out, meta in chunks:
            length = meta["output_token_logprobs_length"]
            entries = meta["output_token_logprobs"]
            assert out and length > previous
            if name == "local":
                assert len(entries) == len(meta["output_top_logprobs"]) == length
            assert [t for _, t, _ in entries[len(entries) - length :]] == ids[:length]
            previous = length
        results[name] = as_json(final["output_token_logprobs"]), as_json(final["output_top_logprobs"])
    assert results["local"] == results["endpoint"]

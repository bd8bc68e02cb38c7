"""A streamed batch on ``sgnb serve``'s ``/generate``, as SGLang streams it.

SGLang (``TokenizerManager._handle_batch_request`` in stream mode) submits every prompt of the batch
(each ``n`` times for ``sampling_params.n``), then ``_stream_batch_responses`` yields every output's
chunks as they come, each with ``index``: the output's place in the rid list, prompt-major. The
expected indices here come from running SGLang's own ``_handle_batch_request`` over the same body
(:func:`sglang_stream_indices`); the server is the real one on 127.0.0.1 over the bundled model.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import requests
from conftest import assert_idle_balanced

from sgnb.core.events import EventLog, RequestFinished
from sgnb.runtimes.remote import RemoteRuntime

PROMPTS = ["The capital of France is", "One two three", "Hello"]  # 5, 3 and 1 tokens: told apart by length


def sglang_batch_answer(body: dict[str, Any]) -> list[Any]:
    """What SGLang's ``TokenizerManager._handle_batch_request`` yields for this batch ``body`` (each
    streamed output, or the one list of outputs), after its own ``GenerateReqInput.
    normalize_batch_and_arguments``; run over stand-ins for the tokenizer and the scheduler, each
    output answering ``{"prompt": its prompt, "meta_info": {"id": its rid}}``."""
    from sglang.srt.managers.io_struct import GenerateReqInput
    from sglang.srt.managers.tokenizer_manager import TokenizerManager

    key = "text" if body.get("text") is not None else "input_ids"
    obj = GenerateReqInput(**body)
    obj.normalize_batch_and_arguments()
    tm: Any = object.__new__(TokenizerManager)  # its __init__ starts ZMQ and a tokenizer: not needed
    tm.rid_to_state = {}

    def init_state(o: Any, request: Any = None) -> None:
        for rid in [o.rid] if isinstance(o.rid, str) else o.rid:
            done = SimpleNamespace(set_finished_time=lambda: None)
            tm.rid_to_state[rid] = SimpleNamespace(time_stats=done, lora_released=False)

    async def tokenize(o: Any) -> Any:
        params = SimpleNamespace(max_new_tokens=1)
        return SimpleNamespace(
            input_ids=[0], sampling_params=params, rid=o.rid, stream=o.stream, time_stats=None
        )

    async def send(tokenized: Any) -> None:
        return None

    async def wait_one(o: Any, request: Any) -> AsyncIterator[dict[str, Any]]:
        yield {"prompt": o.text if key == "text" else o.input_ids, "meta_info": {"id": o.rid}}

    tm._init_req_state = init_state
    tm._tokenize_one_request = tokenize
    tm._send_one_request = send
    tm._wait_one_response = wait_one
    tm._should_use_batch_tokenization = lambda size, o: False
    init_state(obj)
    states = {rid: tm.rid_to_state[rid] for rid in obj.rid}

    async def run() -> list[Any]:
        return [out async for out in tm._handle_batch_request(obj, None, states)]

    return asyncio.run(run())


def sglang_stream_indices(body: dict[str, Any]) -> dict[int, int]:
    """``{index: prompt position}`` of every output SGLang streams for this batch ``body``
    (:func:`sglang_batch_answer`, ``_stream_batch_responses`` setting ``index``)."""
    prompts = body["text"] if body.get("text") is not None else body["input_ids"]
    return {out["index"]: prompts.index(out["prompt"]) for out in sglang_batch_answer(body)}


def sse_chunks(res: requests.Response) -> list[dict[str, Any]]:
    """The stream's chunks read as SGLang's ``RuntimeEndpoint.generate_stream`` reads them
    (``iter_lines``, ``data:`` lines up to ``data: [DONE]``); the ``[DONE]`` must come last."""
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream"), res.text
    chunks, done = [], False
    for line in res.iter_lines(decode_unicode=False):
        text = line.decode("utf-8")
        if not text:
            continue
        assert not done and text.startswith("data:"), text
        if text == "data: [DONE]":
            done = True
            continue
        chunks.append(json.loads(text[5:].strip("\n")))
    assert done
    return chunks


def finals_by_index(chunks: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each output's last chunk; every output's chunks grow its text, and end once (finish_reason)."""
    by_index: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks:
        assert "error" not in chunk, chunk
        by_index.setdefault(chunk["index"], []).append(chunk)
    for index, seq in by_index.items():
        assert [c["meta_info"]["finish_reason"] is not None for c in seq] == [False] * (len(seq) - 1) + [True]
        texts = [c["text"] for c in seq]
        assert all(b.startswith(a) for a, b in itertools.pairwise(texts)), (index, texts)
    return {index: seq[-1] for index, seq in by_index.items()}


def streamed_requests(http: httpx.Client) -> float:
    """``sglang:num_requests_total{is_streaming="true"}`` on the server's ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(http.get("/metrics").text)
        for sample in family.samples
        if sample.name == "sglang:num_requests_total" and sample.labels.get("is_streaming") == "true"
    )


def prompt_lengths(rt: Any, prompts: list[Any]) -> list[int]:
    return [len(p) if isinstance(p, list) else len(rt.tokenizer.encode(p)) for p in prompts]


@pytest.mark.parametrize(
    "body",
    [
        {"text": PROMPTS},
        {"text": PROMPTS[:2], "sampling_params": {"n": 2}},
        {"input_ids": [[504, 3575, 282, 4649, 314], [5345, 827, 1383]], "rid": ["a", "b"]},
        {"text": PROMPTS[:1]},  # a batch of one: still SGLang's batch path (an index)
    ],
    ids=["texts", "texts-n2", "input_ids-rids", "one-in-a-list"],
)
def test_streamed_batch_interleaves_every_output_with_sglang_index(
    http: httpx.Client, server: Any, rt: Any, body: dict[str, Any]
) -> None:
    """Every output of the batch is streamed, its chunks carrying SGLang's ``index``; all of them run
    together in the scheduler's batches; the last chunks equal the non-streamed batch's answer, and
    each output counts as one streamed request in ``/metrics`` (as SGLang counts every rid)."""
    params = {"max_new_tokens": 8, "temperature": 0, "ignore_eos": True, **body.get("sampling_params", {})}
    body = {**body, "sampling_params": params}
    plain = http.post("/generate", json=body)
    assert plain.status_code == 200, plain.text
    expected = plain.json()
    steps, counted = rt.scheduler.steps, streamed_requests(http)
    chunks = sse_chunks(requests.post(server.url + "/generate", json={**body, "stream": True}, stream=True))
    steps = rt.scheduler.steps - steps
    finals = finals_by_index(chunks)
    assert streamed_requests(http) - counted == len(finals)  # every output is a request in the metrics

    want = sglang_stream_indices({**body, "stream": True})
    prompts = body.get("text") or body["input_ids"]
    lengths = prompt_lengths(rt, prompts)
    assert sorted(finals) == sorted(want) == list(range(len(expected)))
    for index, chunk in finals.items():  # each output is its prompt's, at SGLang's index
        assert chunk["meta_info"]["prompt_tokens"] == lengths[want[index]], (index, chunk)
        assert (chunk["text"], chunk["output_ids"]) == (
            expected[index]["text"],
            expected[index]["output_ids"],
        )
        assert chunk["meta_info"]["finish_reason"] == expected[index]["meta_info"]["finish_reason"]
    if "rid" in body:
        assert [finals[i]["meta_info"]["id"] for i in sorted(finals)] == body["rid"]
    # one prompt after another would take a step per token of each output at least
    assert len(finals) == 1 or steps < sum(c["meta_info"]["completion_tokens"] for c in finals.values())
    assert_idle_balanced(rt)


def test_an_empty_batch_as_sglang(http: httpx.Client, rt: Any) -> None:
    """``{"text": []}``: SGLang's normalisation admits a batch of none, and ``_handle_batch_request``
    answers it with no outputs: ``[]``, or a stream of only ``[DONE]`` (was a 500 here)."""
    for stream in (False, True):
        body = {"text": [], "sampling_params": {"max_new_tokens": 2}, "stream": stream}
        res = http.post("/generate", json=body)
        assert res.status_code == 200, res.text
        if stream:
            assert sglang_batch_answer(body) == []
            assert res.text == "data: [DONE]\n\n"
        else:
            assert [res.json()] == sglang_batch_answer(body) == [[]]  # it yields the one list
    assert_idle_balanced(rt)


def test_streamed_batch_refused_in_the_stream_as_sglang(http: httpx.Client, rt: Any) -> None:
    """A batch with one bad prompt: SGLang's ``_handle_batch_request`` raises before any output is
    streamed (``serve_generate_request``: 200, one ``invalid_request_error`` event, ``[DONE]``) with
    the non-streamed 400's message; nothing runs, and the server goes on serving."""
    body = {"text": ["Hello", "x " * 9000], "sampling_params": {"max_new_tokens": 4}}
    plain = http.post("/generate", json=body)
    assert plain.status_code == 400
    message = plain.json()["error"]["message"]
    steps = rt.scheduler.steps
    res = http.post("/generate", json={**body, "stream": True})
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream")
    events = [e.removeprefix("data: ") for e in res.text.split("\n\n") if e]
    assert events[1:] == ["[DONE]"], events
    error = json.loads(events[0])["error"]
    assert error == {"message": message, "type": "invalid_request_error", "code": 400, "retryable": False}
    assert rt.scheduler.steps == steps
    assert_idle_balanced(rt)


def test_client_gone_mid_batch_stream_aborts_every_output(server: Any, rt: Any) -> None:
    """Closing a streamed batch (SGLang: the disconnect aborts the request's rids) aborts every
    prompt's request, n copies included; their KV goes back (used + free = capacity, no lock held)."""
    body = {
        "text": PROMPTS[:2],
        "sampling_params": {"max_new_tokens": 400, "temperature": 0, "ignore_eos": True, "n": 2},
        "stream": True,
    }
    log = EventLog(rt.hub)
    seen: set[int] = set()
    with requests.post(server.url + "/generate", json=body, stream=True, timeout=120) as res:
        for line in res.iter_lines():
            if line.startswith(b"data: {"):
                seen.add(json.loads(line[6:])["index"])
            if len(seen) == 4:
                break
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = rt.cache_state()
        if state["running"] == 0 and state["waiting"] == 0:
            break
        time.sleep(0.1)
    assert_idle_balanced(rt)
    outputs = [e for e in log.of_type(RequestFinished) if e.completion_tokens > 0]  # not the n warm-ups
    assert len(outputs) == 4
    assert all(e.finish_reason and e.finish_reason["type"] == "abort" for e in outputs), outputs
    assert all(e.completion_tokens < 400 for e in outputs)


def test_remote_runtime_reads_the_streamed_batch(server: Any, rt: Any) -> None:
    """sgnb's RemoteRuntime on the server: a streamed batch comes back as the server's chunks (each
    with its index), one ``RequestFinished`` per output with that output's prompt ids, the same
    outputs as the non-streamed batch."""
    remote = RemoteRuntime(server.url)
    try:
        log = EventLog(remote.hub)
        greedy = {"max_new_tokens": 6, "temperature": 0}
        batch = remote.generate(PROMPTS[:2], n=2, **greedy)
        chunks = list(remote.generate(PROMPTS[:2], n=2, stream=True, **greedy))
        finals = finals_by_index(chunks)
        assert [(finals[i]["text"], finals[i]["output_ids"]) for i in range(4)] == [
            (o["text"], o["output_ids"]) for o in batch
        ]
        finished = log.of_type(RequestFinished)[len(batch) :]
        ids = [rt.tokenizer.encode(p) for p in PROMPTS[:2]]
        by_rid = {e.rid: e for e in finished}
        assert len(finished) == 4
        for index, chunk in finals.items():
            assert by_rid[chunk["meta_info"]["id"]].prompt_ids == ids[index // 2]
    finally:
        remote.stop()


def test_openai_completion_streams_several_prompts(http: httpx.Client) -> None:
    """``/v1/completions`` with a list of prompts and ``stream``: SGLang's ``OpenAIServingCompletion``
    sends the batch to the tokenizer manager and names each choice by the chunk's ``index``
    (``_generate_completion_stream``), prompt ``i``'s choice ``j`` at ``i * n + j``; the usage chunk
    counts each prompt once (``calculate_streaming_usage``, ``idx % n_choices == 0``). The streamed
    choices and usage equal the non-streamed response's."""
    body = {"model": "bundled", "prompt": PROMPTS[:2], "max_tokens": 6, "temperature": 0, "n": 2}
    plain = http.post("/v1/completions", json=body)
    assert plain.status_code == 200, plain.text
    want = plain.json()
    res = http.post(
        "/v1/completions", json={**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream"), res.text
    events = [e.removeprefix("data: ") for e in res.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    texts: dict[int, str] = {}
    finished: dict[int, str] = {}
    for chunk in chunks[:-1]:
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
            if choice["finish_reason"] is not None:
                finished[choice["index"]] = choice["finish_reason"]
    assert sorted(texts) == [c["index"] for c in want["choices"]] == [0, 1, 2, 3]
    assert [texts[c["index"]] for c in want["choices"]] == [c["text"] for c in want["choices"]]
    assert [finished[c["index"]] for c in want["choices"]] == [c["finish_reason"] for c in want["choices"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == want["usage"]

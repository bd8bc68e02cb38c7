"""Aborts, prefill-only requests and context-length refusals, as SGLang 0.5.23 does them.

One runtime, served by ``sgnb serve``'s app on 127.0.0.1; every case ends with the runtime idle,
no lock held and ``used + free == capacity``, and the next request served normally.
"""

from __future__ import annotations

import _thread
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import assert_idle_balanced, chat

import sgnb
from sgnb.core.events import EventLog, RequestFinished
from sgnb.serve.server import ServerThread

LONG = {"max_new_tokens": 400, "ignore_eos": True, "temperature": 0}
# FINISH_ABORT().to_json() (schedule_batch.py): a running request aborted by /abort_request.
ABORTED = {"type": "abort", "message": "Aborted", "status_code": None, "err_type": None}


@pytest.fixture(scope="module")
def rt() -> Iterator[Any]:
    runtime = sgnb.start(max_total_tokens=2048)
    yield runtime
    runtime.stop()


@pytest.fixture
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def wait_running(rt: Any, n: int = 1, tokens: int = 3) -> None:
    """Block until ``n`` requests run and have decoded a few tokens (polling; no timing asserted)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        running = rt.scheduler.call(lambda: [len(r.output_ids) for r in rt.scheduler.running])
        if len(running) >= n and min(running) >= tokens:
            return
        time.sleep(0.02)
    raise AssertionError("the request never started")


def wait_idle(rt: Any) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = rt.cache_state()
        if state["running"] == 0 and state["waiting"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the runtime never went idle")


def serves_normally(rt: Any, http: httpx.Client | None = None) -> None:
    prompt = chat(rt, "What is the capital of France?")
    ref = rt.generate(prompt, max_new_tokens=8, temperature=0)
    assert ref["meta_info"]["finish_reason"]["type"] in ("stop", "length")
    if http is not None:
        res = http.post(
            "/generate", json={"text": prompt, "sampling_params": {"max_new_tokens": 8, "temperature": 0}}
        )
        assert res.status_code == 200 and res.json()["text"] == ref["text"]
    assert_idle_balanced(rt)


# ---- item 4: aborts --------------------------------------------------------------------------


@pytest.mark.parametrize("how", [{"rid": "job-1"}, {"abort_all": True}, {"abort_all": "yes"}])
def test_abort_a_non_streaming_request(
    rt: Any, http: httpx.Client, server: ServerThread, how: dict[str, Any]
) -> None:
    """/generate (not streamed) with rid job-1, then /abort_request: it finishes at once with
    FINISH_ABORT's reason and the text so far, its KV freed (TokenizerManager.abort_request). The
    body is read as SGLang's AbortReq through pydantic, which takes "yes" for true."""
    out: dict[str, Any] = {}

    def post() -> None:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            body = {"text": "Count slowly:", "rid": "job-1", "sampling_params": LONG}
            out["res"] = client.post("/generate", json=body)

    worker = threading.Thread(target=post)
    worker.start()
    wait_running(rt)
    assert http.post("/abort_request", json=how).status_code == 200
    worker.join(timeout=300)
    res = out["res"]
    assert res.status_code == 200
    meta = res.json()["meta_info"]
    assert meta["finish_reason"] == ABORTED
    assert meta["id"] == "job-1"
    assert 0 < meta["completion_tokens"] < 400
    assert res.json()["text"]  # the text so far, as SGLang returns it
    serves_normally(rt, http)


def test_abort_by_an_unknown_rid_changes_nothing(rt: Any, http: httpx.Client) -> None:
    assert http.post("/abort_request", json={"rid": "nobody"}).status_code == 200
    serves_normally(rt, http)


def test_abort_by_a_prefix_of_a_running_rid_aborts_nothing(
    rt: Any, http: httpx.Client, server: ServerThread
) -> None:
    """``{"rid": "job"}`` while only ``job-1`` runs: SGLang's ``TokenizerManager.abort_request``
    sends an abort on only for a rid in its ``rid_to_state`` (one tokenizer worker), so nothing is
    aborted; the scheduler's prefix match applies once it does (sgnb aborted job-1 here). ``{}`` and
    an empty rid are ignored with a 200 ("Ignore abort_request with empty rid and abort_all=False")."""
    out: dict[str, Any] = {}
    params = {**LONG, "max_new_tokens": 60}

    def post() -> None:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            body = {"text": "Count slowly:", "rid": "job-1", "sampling_params": params}
            out["res"] = client.post("/generate", json=body)

    worker = threading.Thread(target=post)
    worker.start()
    wait_running(rt)
    for how in ({"rid": "job"}, {}, {"rid": ""}, {"rid": None}):
        assert http.post("/abort_request", json=how).status_code == 200, how
    # while it runs, SGLang's scheduler flushes nothing: http_server.flush_cache's failure text
    flush = http.post("/flush_cache")
    assert (flush.status_code, flush.text) == (400, "Flush cache failed.\n")
    worker.join(timeout=300)
    meta = out["res"].json()["meta_info"]
    assert meta["finish_reason"] == {"type": "length", "length": 60}, meta
    assert meta["completion_tokens"] == 60
    serves_normally(rt, http)


@pytest.mark.parametrize("body", [{"rid": 5}, {"rid": ["a", "b"]}, {"abort_all": "maybe"}])
def test_abort_request_bodies_sglang_refuses(http: httpx.Client, body: dict[str, Any]) -> None:
    """What SGLang's ``AbortReq`` (read by pydantic, as FastAPI reads ``http_server.abort_request``'s
    body) refuses is SGLang's 400 validation ``ErrorResponse`` (was accepted or another message)."""
    from pydantic import TypeAdapter, ValidationError
    from sglang.srt.managers.io_struct import AbortReq

    with pytest.raises(ValidationError):
        TypeAdapter(AbortReq).validate_python(body)
    res = http.post("/abort_request", json=body)
    assert res.status_code == 400, res.text
    error = res.json()
    assert error["type"] == "Bad Request" and error["code"] == 400 and "validation error" in error["message"]


def test_client_disconnect_aborts_a_non_streaming_request(rt: Any, server: ServerThread) -> None:
    """A client that hangs up on a non-streaming /generate gets its request aborted
    (TokenizerManager._wait_one_response checks request.is_disconnected())."""
    log = EventLog(rt.hub)
    client = httpx.Client(base_url=server.url, timeout=httpx.Timeout(120, read=1.0))
    with client, pytest.raises(httpx.ReadTimeout):
        client.post("/generate", json={"text": "Count slowly:", "sampling_params": LONG})
    wait_idle(rt)
    finished = log.of_type(RequestFinished)
    assert finished and finished[-1].finish_reason == ABORTED
    assert finished[-1].completion_tokens < 400
    serves_normally(rt)


def test_keyboard_interrupt_in_process_frees_the_request(rt: Any) -> None:
    log = EventLog(rt.hub)

    def interrupt() -> None:
        wait_running(rt)
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        rt.generate("Count slowly:", dict(LONG))
    finished = log.of_type(RequestFinished)
    assert finished[-1].finish_reason == ABORTED
    serves_normally(rt)


def test_a_stream_closed_early_frees_the_request(rt: Any) -> None:
    chunks = rt.generate("Count slowly:", dict(LONG), stream=True)
    next(chunks), next(chunks)
    chunks.close()
    wait_idle(rt)
    serves_normally(rt)


def test_abort_while_waiting(rt: Any) -> None:
    """A request aborted before it ran: SGLang's reply is {"type": "abort", "message": "Abort in
    waiting queue"} (TokenizerManager._handle_abort_req)."""
    req = rt.make_request("Count slowly:", sampling_params=dict(LONG), rid="queued-1")

    def queue_and_abort() -> None:  # one scheduler turn: queued, then aborted before admission
        rt.scheduler.waiting.append(req)
        req.aborted = True

    rt.scheduler.call(queue_and_abort)
    assert req.done.wait(60)
    assert req.finish_reason == {"type": "abort", "message": "Abort in waiting queue"}
    serves_normally(rt)


# ---- item 3: max_new_tokens=0 ----------------------------------------------------------------


def test_max_new_tokens_zero_is_prefill_only_everywhere(rt: Any, http: httpx.Client) -> None:
    """SGLang accepts max_new_tokens=0 (SamplingParams.verify: "at least 0"): prefill only, the
    prompt cached, FINISH_LENGTH(0)."""
    import sglang as sgl

    prompt = chat(rt, "Warm the cache with this prompt, please.")
    rt.flush_cache()
    out = rt.generate(prompt, max_new_tokens=0)
    assert out["text"] == "" and out["output_ids"] == []
    assert out["meta_info"]["finish_reason"] == {"type": "length", "length": 0}
    assert out["meta_info"]["completion_tokens"] == 0
    again = rt.generate(prompt, max_new_tokens=0)
    assert again["meta_info"]["cached_tokens"] == again["meta_info"]["prompt_tokens"] - 1
    res = http.post("/generate", json={"text": prompt, "sampling_params": {"max_new_tokens": 0}})
    assert res.status_code == 200 and res.json()["meta_info"]["finish_reason"] == {
        "type": "length",
        "length": 0,
    }

    @sgl.function
    def warm(s: Any) -> None:
        s += prompt + sgl.gen("x", max_tokens=0)

    assert warm.run(backend=rt.backend)["x"] == ""
    serves_normally(rt, http)


# ---- item 5: context length -------------------------------------------------------------------


def _too_long(rt: Any) -> tuple[list[int], str]:
    ids = rt.tokenizer.encode("word " * 400, add_special_tokens=False)[:200]
    return ids, rt.tokenizer.decode(ids)


SGLANG_TOTAL = (
    "Requested token count exceeds the model's maximum context length of 256 tokens. You requested a "
    "total of 300 tokens: 200 tokens from the input messages and 100 tokens for the completion. Please "
    "reduce the number of tokens in the input messages or the completion to fit within the limit."
)


def test_context_length_refused_as_sglang(
    rt: Any, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prompt + max_new_tokens > context_length: SGLang's 400 and message
    (TokenizerManager._validate_one_request), on /generate, /v1/completions, /v1/chat/completions
    and in-process; the next request is served normally."""
    monkeypatch.setattr(rt, "context_length", 256)
    ids, _ = _too_long(rt)
    with pytest.raises(ValueError) as info:
        rt.generate(input_ids=ids, max_new_tokens=100)
    assert str(info.value) == SGLANG_TOTAL
    res = http.post("/generate", json={"input_ids": ids, "sampling_params": {"max_new_tokens": 100}})
    assert res.status_code == 400 and res.json()["error"]["message"] == SGLANG_TOTAL
    res = http.post("/v1/completions", json={"model": "x", "prompt": ids, "max_tokens": 100})
    assert res.status_code == 400 and res.json()["message"] == SGLANG_TOTAL
    body = {"model": "x", "messages": [{"role": "user", "content": "word " * 200}], "max_tokens": 100}
    res = http.post("/v1/chat/completions", json=body)
    assert res.status_code == 400 and "maximum context length of 256 tokens" in res.json()["message"]
    assert res.json()["object"] == "error"
    # A prompt that is itself too long, and max_new_tokens left out (SGLang checks no total then).
    res = http.post("/generate", json={"input_ids": ids + ids, "sampling_params": {}})
    assert res.status_code == 400
    assert res.json()["error"]["message"] == (
        "The input (400 tokens) is longer than the model's context length (256 tokens)."
    )
    fits = http.post("/generate", json={"input_ids": ids, "sampling_params": {"ignore_eos": True}}).json()
    assert fits["meta_info"]["finish_reason"] == {"type": "length", "length": 54}  # 255 - 200 - 1
    serves_normally(rt, http)


def test_allow_auto_truncate(rt: Any, http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """--allow-auto-truncate: max_new_tokens cut to what the context leaves, then to the scheduler's
    max_req_len bound; a too-long prompt cut to max_req_input_len (validate_input_length)."""
    monkeypatch.setattr(rt, "context_length", 256)
    monkeypatch.setattr(rt, "allow_auto_truncate", True)
    ids, _ = _too_long(rt)
    body = {
        "input_ids": ids,
        "sampling_params": {"max_new_tokens": 100, "ignore_eos": True, "temperature": 0},
    }
    out = http.post("/generate", json=body).json()
    assert out["meta_info"]["finish_reason"] == {"type": "length", "length": 54}
    assert out["meta_info"]["prompt_tokens"] == 200
    out = rt.generate(input_ids=ids + ids, max_new_tokens=10)
    assert out["meta_info"]["prompt_tokens"] == 250  # 255 - 5
    assert out["meta_info"]["finish_reason"] == {"type": "length", "length": 0}
    serves_normally(rt, http)


def test_cli_flag_reaches_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    import sgnb.serve.server as server_mod
    from sgnb.tools.cli import build_parser

    seen: dict[str, Any] = {}
    monkeypatch.setattr(server_mod, "run_server", lambda model, **kw: seen.update(kw))
    args = build_parser().parse_args(["serve", "--context-length", "256", "--allow-auto-truncate"])
    assert args.func(args) == 0
    assert seen["runtime_options"] == {"context_length": 256, "allow_auto_truncate": True}


def test_openai_max_tokens_defaults_and_bounds(
    rt: Any, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chat without max_tokens has no cap but the context (ChatCompletionRequest.to_sampling_params
    sends max_new_tokens None); one above the context length is refused as
    OpenAIServingChat._validate_request does; /v1/completions defaults to 16 (CompletionRequest)."""
    monkeypatch.setattr(rt, "context_length", 256)
    messages = [{"role": "user", "content": "Count from one to one hundred."}]
    prompt_tokens = len(rt.tokenizer.encode(rt.apply_chat_template(messages), add_special_tokens=False))
    res = http.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 300})
    assert res.status_code == 400
    assert res.json()["message"] == (
        "max_completion_tokens is too large: 300.This model supports at most 256 completion tokens."
    )
    res = http.post("/v1/chat/completions", json={"messages": messages, "ignore_eos": True, "temperature": 0})
    assert res.status_code == 200
    assert res.json()["usage"]["completion_tokens"] == 255 - prompt_tokens - 1
    res = http.post("/v1/completions", json={"prompt": "Once upon a time", "ignore_eos": True})
    assert res.status_code == 200 and res.json()["usage"]["completion_tokens"] == 16
    serves_normally(rt, http)


def test_duplicate_rid_is_refused_while_in_flight(rt: Any, http: httpx.Client, server: ServerThread) -> None:
    """A second request under the rid of one still running: "Duplicate request ID detected"
    (TokenizerManager), a 400 on HTTP; the first is unharmed and the rid is free once it ends."""
    out: dict[str, Any] = {}

    def post() -> None:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            body = {
                "text": "Count slowly:",
                "rid": "dup-1",
                "sampling_params": {**LONG, "max_new_tokens": 40},
            }
            out["res"] = client.post("/generate", json=body)

    worker = threading.Thread(target=post)
    worker.start()
    wait_running(rt)
    again = http.post(
        "/generate", json={"text": "Hi", "rid": "dup-1", "sampling_params": {"max_new_tokens": 2}}
    )
    assert again.status_code == 400
    assert again.json()["error"]["message"] == "Duplicate request ID detected: dup-1"
    worker.join(timeout=300)
    assert out["res"].json()["meta_info"]["completion_tokens"] == 40
    assert rt.generate("Hi", max_new_tokens=2, rid="dup-1")["meta_info"]["id"] == "dup-1"
    serves_normally(rt, http)


def test_an_interrupted_dsl_program_leaves_no_kv_locked(rt: Any) -> None:
    """Ctrl-C while a DSL program on rt.backend generates: the interpreter's worker thread finishes
    its gen (as it does over SGLang's RuntimeEndpoint) and the KV is released, not leaked."""
    import sglang as sgl

    @sgl.function
    def slow(s: Any) -> None:
        s += "Count slowly:" + sgl.gen("x", max_tokens=60, ignore_eos=True, temperature=0)

    def interrupt() -> None:
        wait_running(rt)
        _thread.interrupt_main()

    threading.Thread(target=interrupt, daemon=True).start()
    state = slow.run(backend=rt.backend)
    with pytest.raises(KeyboardInterrupt):
        state.sync()
    wait_idle(rt)
    serves_normally(rt)


def streamed_refusal(res: httpx.Response) -> str:
    """The message of a streamed ``/generate`` refused inside ``TokenizerManager.generate_request``:
    SGLang answers it with HTTP 200, one event in ``http_server.serve_generate_request``'s shape
    (``stream_results``: ``invalid_request_error``, code 400, not retryable), then ``[DONE]``."""
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/event-stream"), res.headers
    events = [line for line in res.text.split("\n\n") if line]
    assert len(events) == 2 and events[1] == "data: [DONE]", res.text
    assert events[0].startswith("data: "), res.text
    error = json.loads(events[0][len("data: ") :])["error"]
    assert set(error) == {"message", "type", "code", "retryable"}, error
    assert error["type"] == "invalid_request_error" and error["code"] == 400 and error["retryable"] is False
    return str(error["message"])


def test_streamed_refusals_are_an_error_event_as_sglang(
    rt: Any, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stream: true`` on ``/generate``: what ``TokenizerManager.generate_request`` refuses (the
    context length in ``_validate_one_request``, a duplicate rid in ``_init_req_state``, sampling
    parameters in ``SamplingParams.verify``) comes back as SGLang's ``serve_generate_request``
    streams it: 200, one error event, ``[DONE]``, with the message of the non-streamed 400. What
    ``generate_request`` refuses before the stream (the JSON contract) stays a 400 JSON."""
    monkeypatch.setattr(rt, "context_length", 256)
    ids, _ = _too_long(rt)
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": 100}}
    assert streamed_refusal(http.post("/generate", json={**body, "stream": True})) == SGLANG_TOTAL
    bad_top_p = {"text": "Hi", "sampling_params": {"top_p": 1.5}}
    plain = http.post("/generate", json=bad_top_p)
    assert plain.status_code == 400
    streamed = streamed_refusal(http.post("/generate", json={**bad_top_p, "stream": True}))
    assert streamed == plain.json()["error"]["message"] and "top_p" in streamed
    contract = http.post("/generate", json={"text": "Hi", "stream": True, "sampling_params": {"bogus": 1}})
    assert contract.status_code == 400 and contract.headers["content-type"].startswith("application/json")
    # the OpenAI routes kick-start the generator before answering (serving_chat/_completions
    # _handle_streaming_request): a refusal before the first chunk is a 400 ErrorResponse there
    res = http.post("/v1/completions", json={"prompt": ids, "max_tokens": 100, "stream": True})
    assert res.status_code == 400 and res.json()["message"] == SGLANG_TOTAL
    serves_normally(rt, http)


def test_streamed_duplicate_rid_is_an_error_event(rt: Any, http: httpx.Client, server: ServerThread) -> None:
    """A streamed request under a running request's rid (``TokenizerManager._init_req_state``'s
    ValueError, inside ``generate_request``): 200, SGLang's error event, ``[DONE]``; the first runs on."""
    out: dict[str, Any] = {}

    def post() -> None:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            body = {
                "text": "Count slowly:",
                "rid": "dup-s",
                "sampling_params": {**LONG, "max_new_tokens": 40},
            }
            out["res"] = client.post("/generate", json=body)

    worker = threading.Thread(target=post)
    worker.start()
    wait_running(rt)
    body = {"text": "Hi", "rid": "dup-s", "stream": True, "sampling_params": {"max_new_tokens": 2}}
    assert streamed_refusal(http.post("/generate", json=body)) == "Duplicate request ID detected: dup-s"
    worker.join(timeout=300)
    assert out["res"].json()["meta_info"]["completion_tokens"] == 40
    serves_normally(rt, http)


def test_sglang_runtime_endpoint_meets_a_streamed_refusal(rt: Any, server: ServerThread) -> None:
    """SGLang's own client, ``RuntimeEndpoint.generate_stream``: against SGLang's server a refusal
    inside the stream passes ``_assert_success`` (HTTP 200) and the error event has no ``"text"``,
    so it raises ``KeyError('text')``; against ``sgnb serve`` the same. A valid stream still works."""
    from types import SimpleNamespace

    from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
    from sglang.lang.ir import SglSamplingParams

    endpoint = RuntimeEndpoint(server.url)
    state = SimpleNamespace(text_="Hi", images_=[])  # what generate_stream reads of a StreamExecutor
    with pytest.raises(KeyError, match="text"):
        list(endpoint.generate_stream(state, SglSamplingParams(max_new_tokens=4, top_p=1.5)))
    pieces = list(endpoint.generate_stream(state, SglSamplingParams(max_new_tokens=4, temperature=0)))
    assert pieces and pieces[-1][1]["finish_reason"] is not None
    serves_normally(rt)

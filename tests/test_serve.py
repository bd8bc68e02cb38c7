"""``sgnb serve``: SGLang's native HTTP API over the local runtime (real model, uvicorn on 127.0.0.1)."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from typing import Any

import httpx
import msgspec
import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

import sgnb
from sgnb.core.chat_template import register
from sgnb.core.events import EventLog, RequestFinished
from sgnb.net import free_port
from sgnb.serve.app import create_app
from sgnb.serve.server import ServerProcess, ServerThread

PROMPT = "The capital of France is"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def rt() -> Any:
    runtime = sgnb.start("bundled", max_total_tokens=4096)
    yield runtime
    runtime.stop()


@pytest.fixture(scope="module")
def kv_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def server(rt: Any, kv_port: int) -> Any:
    cfg = json.dumps(
        {"publisher": "zmq", "endpoint": f"tcp://127.0.0.1:{kv_port}", "topic": "kv-events", "bind": True}
    )
    with ServerThread(create_app(rt, kv_events_config=cfg)) as srv:
        yield srv


@pytest.fixture(scope="module")
def http(server: Any) -> Any:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


def gen(http: httpx.Client, **body: Any) -> dict[str, Any]:
    res = http.post("/generate", json=body)
    assert res.status_code == 200, res.text
    return dict(res.json())


def sse_events(raw: bytes) -> list[str]:
    """Split an SSE body; every event must be ``data: ...`` followed by a blank line."""
    assert raw.endswith(b"\n\n"), raw[-40:]
    events = raw.decode().split("\n\n")[:-1]
    assert all(e.startswith("data: ") for e in events), events
    return [e[len("data: ") :] for e in events]


# ---- /generate ---------------------------------------------------------------------------------


def test_generate_text_and_input_ids_agree(http: httpx.Client, rt: Any) -> None:
    params = {"max_new_tokens": 6, "temperature": 0}
    out = gen(http, text=PROMPT, sampling_params=params)
    assert set(out) == {"text", "output_ids", "meta_info"}
    meta = out["meta_info"]
    assert meta["completion_tokens"] == len(out["output_ids"]) == 6
    assert meta["prompt_tokens"] == len(rt.tokenizer.encode(PROMPT, add_special_tokens=False))
    assert meta["finish_reason"] == {"type": "length", "length": 6}
    assert {"id", "cached_tokens", "e2e_latency", "ttft"} <= set(meta)
    ids = rt.tokenizer.encode(PROMPT, add_special_tokens=False)
    again = gen(http, input_ids=ids, sampling_params=params)
    assert again["text"] == out["text"] and again["output_ids"] == out["output_ids"]
    assert again["meta_info"]["cached_tokens"] > 0  # the radix cache served the prompt
    assert out["text"] == rt.generate(PROMPT, params)["text"]  # same as in-process


def test_generate_stream_format(http: httpx.Client) -> None:
    body = {"text": PROMPT, "sampling_params": {"max_new_tokens": 8, "temperature": 0}, "stream": True}
    with http.stream("POST", "/generate", json=body) as res:
        assert res.status_code == 200
        assert res.headers["content-type"].startswith("text/event-stream")
        raw = res.read()
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) >= 2
    final = chunks[-1]
    assert final["meta_info"]["finish_reason"]["type"] == "length"
    assert all(c["meta_info"]["finish_reason"] is None for c in chunks[:-1])
    for a, b in itertools.pairwise(chunks):  # cumulative, as SGLang's default stream
        assert b["text"].startswith(a["text"])
    assert (
        final["text"]
        == gen(http, text=PROMPT, sampling_params={"max_new_tokens": 8, "temperature": 0})["text"]
    )


def test_stream_holds_back_a_partial_stop_string(http: httpx.Client) -> None:
    body = {
        "text": "Count: 1, 2, 3,",
        "sampling_params": {"max_new_tokens": 12, "temperature": 0, "stop": " 6,"},
    }
    final = gen(http, **body)
    assert final["meta_info"]["finish_reason"] == {"type": "stop", "matched": " 6,"}
    with http.stream("POST", "/generate", json={**body, "stream": True}) as res:
        chunks = [json.loads(e) for e in sse_events(res.read())[:-1]]
    assert chunks[-1]["text"] == final["text"]
    assert all(final["text"].startswith(c["text"]) for c in chunks)  # never shows text it takes back


def test_constrained_generation(http: httpx.Client, rt: Any) -> None:
    out = gen(
        http,
        text="Q: Name a year.\nA:",
        sampling_params={"max_new_tokens": 5, "regex": r" [0-9]{4}", "temperature": 0},
    )
    assert re.fullmatch(r" [0-9]{4}", out["text"]), out["text"]
    prompt = rt.apply_chat_template(
        [{"role": "user", "content": "Describe a person as JSON with name and age."}]
    )
    out = gen(
        http,
        text=prompt,
        sampling_params={"max_new_tokens": 40, "temperature": 0, "json_schema": json.dumps(SCHEMA)},
    )
    person = json.loads(out["text"])
    assert set(person) == {"name", "age"} and isinstance(person["age"], int)
    out = gen(http, text=prompt, sampling_params={"max_new_tokens": 4, "ebnf": 'root ::= "yes" | "no"'})
    assert out["text"] in ("yes", "no")


def test_batch_prefill_only_with_logprobs_is_what_select_sends(http: httpx.Client, rt: Any) -> None:
    """RuntimeEndpoint.select: text list, max_new_tokens 0, return_logprob, logprob_start_len."""
    prefix = "Is the sky blue? Answer:"
    n = len(rt.tokenizer.encode(prefix, add_special_tokens=False))
    body = {
        "text": [prefix + " yes", prefix + " no"],
        "sampling_params": {"max_new_tokens": 0, "temperature": 0},
        "return_logprob": True,
        "return_text_in_logprobs": True,
        "logprob_start_len": n - 2,
    }
    res = http.post("/generate", json=body)
    assert res.status_code == 200, res.text
    outs = res.json()
    assert isinstance(outs, list) and len(outs) == 2
    for text, out in zip(body["text"], outs, strict=True):
        ids = rt.tokenizer.encode(text, add_special_tokens=False)
        meta = out["meta_info"]
        assert out["text"] == "" and meta["completion_tokens"] == 0 and meta["output_token_logprobs"] == []
        entries = meta["input_token_logprobs"]
        assert [e[1] for e in entries] == ids[n - 2 :]
        assert entries[0][0] is None  # SGLang: the first position has no logprob
        assert entries[-1][2] == rt.tokenizer.decode([ids[-1]])
        expected = rt.score(ids[: n - 1], ids[n - 1 :])
        assert [e[0] for e in entries[1:]] == pytest.approx(expected, abs=1e-4)


def test_output_logprobs(http: httpx.Client, rt: Any) -> None:
    out = gen(http, text=PROMPT, sampling_params={"max_new_tokens": 3, "temperature": 0}, return_logprob=True)
    meta = out["meta_info"]
    assert meta["input_token_logprobs"] == []  # logprob_start_len -1: output only, as SGLang
    assert [e[1] for e in meta["output_token_logprobs"]] == out["output_ids"]
    assert all(e[0] <= 0 for e in meta["output_token_logprobs"])


def test_prefill_only_caches_the_prompt(http: httpx.Client) -> None:
    text = "A long shared system prompt for caching: " + "tea and biscuits, " * 10
    first = gen(http, text=text, sampling_params={"max_new_tokens": 0})
    assert first["text"] == "" and first["meta_info"]["completion_tokens"] == 0
    again = gen(http, text=text + "and jam", sampling_params={"max_new_tokens": 1, "temperature": 0})
    assert again["meta_info"]["cached_tokens"] >= first["meta_info"]["prompt_tokens"] - 1


# ---- info, health, cache, metrics ----------------------------------------------------------------


def test_model_info_picks_smollm2_chat_template(http: httpx.Client, rt: Any) -> None:
    from sglang.lang.chat_template import get_chat_template_by_model_path

    info = http.get("/get_model_info").json()
    assert info == http.get("/model_info").json()
    assert info["model_path"] == str(rt.model_path) and info["is_generation"] is True
    register()
    template = get_chat_template_by_model_path(info["model_path"])
    assert template.name == "smollm2"
    messages = [{"role": "system", "content": None}, {"role": "user", "content": "hi"}]
    rendered = template.get_prompt(messages) + template.role_prefix_and_suffix["assistant"][0]
    assert rendered == rt.apply_chat_template([{"role": "user", "content": "hi"}])


def test_health_server_info_models(http: httpx.Client) -> None:
    assert http.get("/health").status_code == 200
    assert http.get("/health_generate").status_code == 200
    info = http.get("/server_info").json()
    assert http.get("/get_server_info").json().keys() == info.keys()
    assert info["max_total_num_tokens"] == 4096 and info["internal_states"][0]["capacity"] == 4096
    models = http.get("/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["id"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_model_cards_are_sglang_model_cards(http: httpx.Client, rt: Any) -> None:
    """``/v1/models`` and ``/v1/models/{id}`` answer SGLang's ``ModelCard`` as ``http_server``'s
    ``available_models`` / ``retrieve_model`` fill it (root is the served name, parent null; sgnb
    gave the weights' path as root and no parent, and the card alone lacked root and max_model_len);
    an unknown id is ``retrieve_model``'s 404 ``model_not_found`` envelope."""
    from sglang.srt.entrypoints.openai.protocol import ModelCard

    name = "HuggingFaceTB/SmolLM2-135M-Instruct"
    listed = http.get("/v1/models").json()["data"]
    one = http.get(f"/v1/models/{name}").json()
    for card in (listed[0], one):
        expected = ModelCard(id=name, root=name, max_model_len=rt.context_length).model_dump()
        assert {**card, "created": 0} == {**expected, "created": 0}, card
    missing = http.get("/v1/models/bundled")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": {
            "message": "The model 'bundled' does not exist",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


def test_flush_cache(http: httpx.Client, rt: Any) -> None:
    gen(http, text="something to cache", sampling_params={"max_new_tokens": 1})
    assert rt.cache_state()["cached"] > 0
    res = http.post("/flush_cache")
    # http_server.flush_cache's text, word for word (sgnb said only its first line)
    assert res.status_code == 200 and res.text == (
        "Cache flushed.\nPlease check backend logs for more details. "
        "(When there are running or waiting requests, the operation will not be performed.)\n"
    )
    assert rt.cache_state()["cached"] == 0
    assert http.get("/flush_cache").status_code == 200


def test_metrics_parse_with_sglang_names(http: httpx.Client) -> None:
    gen(http, text=PROMPT, sampling_params={"max_new_tokens": 2})
    res = http.get("/metrics")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(res.text)}
    for name in (
        "sglang:prompt_tokens",
        "sglang:generation_tokens",
        "sglang:cached_tokens",
        "sglang:num_requests",
        "sglang:e2e_request_latency_seconds",
        "sglang:time_to_first_token_seconds",
        "sglang:num_running_reqs",
        "sglang:num_queue_reqs",
        "sglang:cache_hit_rate",
        "sglang:token_usage",
        "sglang:max_total_num_tokens",
    ):
        assert name in families, name
    assert families["sglang:e2e_request_latency_seconds"].type == "histogram"
    samples = {(s.name, s.labels.get("is_streaming")): s.value for f in families.values() for s in f.samples}
    assert samples[("sglang:generation_tokens_total", "false")] >= 2
    assert samples[("sglang:e2e_request_latency_seconds_count", "false")] >= 1
    assert all(
        s.labels.get("model_name") == "HuggingFaceTB/SmolLM2-135M-Instruct"
        for f in families.values()
        for s in f.samples
    )


# ---- bad input and auth --------------------------------------------------------------------------

BAD_GENERATE = {
    "malformed JSON": b'{"text": "hi",',
    "empty body": b"",
    "not an object": b"[1, 2]",
    "NaN": b'{"text": "hi", "sampling_params": {"temperature": NaN}}',
    "text wrong type": b'{"text": 5}',
    "sampling_params wrong type": b'{"text": "hi", "sampling_params": "fast"}',
    "max_new_tokens wrong type": b'{"text": "hi", "sampling_params": {"max_new_tokens": "8"}}',
    "unknown sampling param": b'{"text": "hi", "sampling_params": {"beam_width": 4}}',
    "neither": b'{"sampling_params": {}}',
    "negative max_new_tokens": b'{"text": "hi", "sampling_params": {"max_new_tokens": -1}}',
    "token id out of range": b'{"input_ids": [1, 99999999]}',
    "empty prompt": b'{"text": ""}',
    "invalid regex": b'{"text": "hi", "sampling_params": {"regex": "(unclosed"}}',
    "invalid json_schema": b'{"text": "hi", "sampling_params": {"json_schema": "{not json"}}',
    "two constraints": b'{"text": "hi", "sampling_params": {"regex": "a", "ebnf": "root ::= \\"a\\""}}',
    "top_p out of range": b'{"text": "hi", "sampling_params": {"top_p": 1.5}}',
    "logprob_start_len past the prompt": b'{"text": "hi", "return_logprob": true, "logprob_start_len": 50}',
}


@pytest.mark.parametrize("case", list(BAD_GENERATE))
def test_bad_generate_is_400_json(http: httpx.Client, case: str) -> None:
    res = http.post("/generate", content=BAD_GENERATE[case], headers={"content-type": "application/json"})
    assert res.status_code == 400, (case, res.status_code, res.text)
    assert res.headers["content-type"].startswith("application/json")
    assert error_message(res.json())


def sglang_checks_before_the_stream(body: Any) -> bool:
    """Whether SGLang refuses this body before any stream: ``http_server.generate_request`` parses it
    into ``GenerateReqInput`` (FastAPI) and checks the JSON contract first; every other check runs
    inside ``TokenizerManager.generate_request``, which ``serve_generate_request`` streams."""
    from pydantic import TypeAdapter, ValidationError
    from sglang.api.v1.api_types import GenerateRequest, JsonContractError
    from sglang.srt.managers.io_struct import GenerateReqInput

    try:
        TypeAdapter(GenerateReqInput).validate_python(body)
        GenerateRequest.from_json_value(body)
    except (ValidationError, JsonContractError):
        return True
    return False


STREAMABLE = [c for c in BAD_GENERATE if BAD_GENERATE[c].startswith(b'{"text": "hi", ') and c != "NaN"]


@pytest.mark.parametrize("case", [*STREAMABLE, "neither", "token id out of range", "empty prompt"])
def test_bad_streamed_generate_as_sglang(http: httpx.Client, case: str) -> None:
    """The same bodies with ``stream: true``: a 400 JSON where SGLang refuses before the stream
    (contract), else SGLang's 200 + one ``invalid_request_error`` event + ``[DONE]``
    (``serve_generate_request``) with the message of the non-streamed 400; a field sgnb cannot
    honour (``beam_width``) is sgnb's own 400 naming the feature (a streamed batch is served:
    tests/test_serve_batch_stream.py)."""
    body = {**json.loads(BAD_GENERATE[case]), "stream": True}
    plain = http.post("/generate", content=BAD_GENERATE[case], headers={"content-type": "application/json"})
    res = http.post("/generate", json=body)
    if "not supported by sgnb serve" in plain.text:
        assert res.status_code == 400 and "not supported by sgnb serve" in error_message(res.json())
    elif sglang_checks_before_the_stream(body):
        assert res.status_code == 400 and res.headers["content-type"].startswith("application/json"), res.text
        assert error_message(res.json()) == error_message(plain.json())
    else:
        assert res.status_code == 200 and res.headers["content-type"].startswith("text/event-stream"), (
            res.text
        )
        events = [e for e in res.text.split("\n\n") if e]
        assert len(events) == 2 and events[1] == "data: [DONE]", res.text
        error = json.loads(events[0].removeprefix("data: "))["error"]
        assert error == {
            "message": error_message(plain.json()),
            "type": "invalid_request_error",
            "code": 400,
            "retryable": False,
        }
    assert (
        http.post("/generate", json={"text": "hi", "sampling_params": {"max_new_tokens": 1}}).status_code
        == 200
    )


def error_message(body: dict[str, Any]) -> str:
    """The message of an error body in any of SGLang's shapes (``http_server.py``): a type error
    is an ``ErrorResponse``, a JSON-contract error ``{"error": "..."}``, a ValueError
    ``{"error": {"message": "..."}}``."""
    if "error" not in body:
        assert body["object"] == "error" and body["code"] == 400
        return str(body["message"])
    err = body["error"]
    return str(err if isinstance(err, str) else err["message"])


def test_oversize_prompt_is_400(http: httpx.Client) -> None:
    res = http.post("/generate", json={"text": "hello " * 9000, "sampling_params": {"max_new_tokens": 1}})
    assert res.status_code == 400 and "tokens" in res.json()["error"]["message"]


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m"},
        {"model": "m", "messages": []},
        {"model": "m", "messages": [{"role": "wizard", "content": "hi"}]},
        {"model": "m", "messages": [{"role": "user", "content": 3}]},
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "response_format": {"type": "json_schema"},
        },
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"},
    ],
)
def test_bad_chat_is_400_openai_error(http: httpx.Client, body: dict[str, Any]) -> None:
    res = http.post("/v1/chat/completions", json=body)
    assert res.status_code == 400, res.text
    err = res.json()
    assert err["object"] == "error" and err["code"] == 400 and err["message"]


def test_api_key(rt: Any) -> None:
    with TestClient(create_app(rt, api_key="s3cret")) as client:
        body = {"text": "hi", "sampling_params": {"max_new_tokens": 1}}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            res = client.post("/generate", json=body, headers=headers)
            assert res.status_code == 401 and res.json() == {"error": "Unauthorized"}
        assert client.get("/v1/models").status_code == 401
        assert (
            client.post("/generate", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        )
        assert client.get("/health").status_code == 200  # probes and scrapers need no key, as in SGLang
        assert client.get("/metrics").status_code == 200


# ---- KV events over ZMQ --------------------------------------------------------------------------


def test_kv_events_are_sglang_batches(http: httpx.Client, kv_port: int, rt: Any) -> None:
    from sglang.srt.disaggregation.kv_events import AllBlocksCleared, BlockStored, KVEventBatch

    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVTIMEO, 5000)
    sub.setsockopt_string(zmq.SUBSCRIBE, "kv-events")
    sub.connect(f"tcp://127.0.0.1:{kv_port}")
    try:
        time.sleep(0.5)  # ZMQ's slow joiner: let the subscription reach the publisher
        text = "KV events over ZMQ, a distinctive prompt"
        gen(http, text=text, sampling_params={"max_new_tokens": 2, "temperature": 0})
        decoder = msgspec.msgpack.Decoder(type=KVEventBatch)
        stored: list[Any] = []
        seqs = []
        while not any(isinstance(e, BlockStored) for e in stored):
            topic, seq, payload = sub.recv_multipart()
            assert topic == b"kv-events" and len(seq) == 8
            seqs.append(int.from_bytes(seq, "big"))
            stored.extend(decoder.decode(payload).events)
        ids = rt.tokenizer.encode(text, add_special_tokens=False)
        tokens = [t for e in stored if isinstance(e, BlockStored) for t in e.token_ids]
        assert tokens[: len(ids) - 1] == ids[: len(ids) - 1]
        http.post("/flush_cache")
        while True:
            topic, seq, payload = sub.recv_multipart()
            seqs.append(int.from_bytes(seq, "big"))
            if any(isinstance(e, AllBlocksCleared) for e in decoder.decode(payload).events):
                break
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        sub.close(linger=0)
        ctx.term()


# ---- concurrency, disconnects, crashes -----------------------------------------------------------


def test_event_loop_keeps_serving_during_generation(http: httpx.Client, server: Any) -> None:
    long = threading.Thread(
        target=lambda: httpx.post(
            server.url + "/generate",
            json={"text": "Tell a story.", "sampling_params": {"max_new_tokens": 60, "ignore_eos": True}},
            timeout=120,
        )
    )
    long.start()
    time.sleep(0.5)
    started = time.perf_counter()
    assert http.get("/health").status_code == 200
    assert http.get("/v1/models").status_code == 200
    assert time.perf_counter() - started < 2.0
    assert long.is_alive()  # the health checks did not wait for the long request
    long.join()


def test_client_disconnect_aborts_the_stream(server: Any, rt: Any) -> None:
    log = EventLog(rt.hub)
    body = {
        "text": "Write a very long story.",
        "sampling_params": {"max_new_tokens": 400, "ignore_eos": True},
    }
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", server.url + "/generate", json={**body, "stream": True}) as res,
    ):
        lines = res.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        rid = json.loads(first[6:])["meta_info"]["id"]
    deadline = time.monotonic() + 20
    finished: list[RequestFinished] = []
    while time.monotonic() < deadline and not finished:
        finished = [e for e in log.of_type(RequestFinished) if e.rid == rid]
        time.sleep(0.05)
    if log.unsubscribe:
        log.unsubscribe()
    assert finished, "the request was not stopped after the client went away"
    assert finished[0].finish_reason and finished[0].finish_reason["type"] == "abort"
    assert finished[0].completion_tokens < 400


def test_abort_request_by_rid(http: httpx.Client, server: Any) -> None:
    body = {"text": "Another long story.", "rid": "my-request", "stream": True}
    body["sampling_params"] = {"max_new_tokens": 400, "ignore_eos": True}
    with (
        httpx.Client(timeout=60) as client,
        client.stream("POST", server.url + "/generate", json=body) as res,
    ):
        chunks = []
        for line in res.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunks.append(json.loads(line[6:]))
            if len(chunks) == 2:
                assert http.post("/abort_request", json={"rid": "my-request"}).status_code == 200
    assert chunks[-1]["meta_info"]["id"] == "my-request"
    assert chunks[-1]["meta_info"]["finish_reason"]["type"] == "abort"
    assert chunks[-1]["meta_info"]["completion_tokens"] < 400


def test_killed_server_gives_a_clear_error_and_a_restart_serves(tmp_path: Any) -> None:
    port = free_port()
    args = ("--model", "bundled", "--max-total-tokens", "2048", "--log-level", "warning")
    body = {
        "text": "A story:",
        "sampling_params": {"max_new_tokens": 400, "ignore_eos": True},
        "stream": True,
    }
    with (tmp_path / "server.log").open("wb") as log:
        proc = ServerProcess(*args, port=port, log=log).start()
        try:
            with (
                pytest.raises(httpx.TransportError) as info,
                httpx.Client(timeout=60) as client,
                client.stream("POST", proc.url + "/generate", json=body) as res,
            ):
                for i, line in enumerate(res.iter_lines()):
                    assert line != "data: [DONE]"
                    if i == 2:
                        proc.kill()
            assert isinstance(info.value, httpx.RemoteProtocolError | httpx.ReadError)
            assert (
                "incomplete" in str(info.value) or "closed" in str(info.value) or "reset" in str(info.value)
            )
            with pytest.raises(httpx.ConnectError):
                httpx.get(proc.url + "/health", timeout=5)
            again = ServerProcess(*args, port=port, log=log).start()
            try:
                res = httpx.post(
                    again.url + "/generate",
                    json={"text": PROMPT, "sampling_params": {"max_new_tokens": 2}},
                    timeout=120,  # a loaded CI machine: this is about serving again, not speed
                )
                assert res.status_code == 200 and res.json()["meta_info"]["completion_tokens"] == 2
            finally:
                again.stop()
        finally:
            proc.kill()


def test_serve_overhead_is_measurable(rt: Any) -> None:
    from sgnb.bench.serve_overhead import measure_serve_overhead

    overhead = measure_serve_overhead(runtime=rt, batch=4, max_new_tokens=8, rounds=1)
    assert isinstance(overhead, float) and -0.9 < overhead < 5.0


@pytest.mark.parametrize(
    "exc", [ValueError("the runtime refused this step"), RuntimeError("runtime stopped")]
)
def test_openai_stream_failing_midway_sends_sglangs_error_event(exc: Exception) -> None:
    """An OpenAI stream that fails after it started: the events so far, one error event equal to
    ``OpenAIServingBase.create_streaming_error_response(str(e))`` (SGLang's own method builds the
    expected value), then ``[DONE]``; the runtime's chunk stream is closed."""
    import asyncio

    from sglang.srt.entrypoints.openai.serving_base import OpenAIServingBase

    from sgnb.serve.openai_api import _sse

    closed: list[str] = []

    async def chunks() -> Any:
        try:
            yield {"text": "a", "meta_info": {}}
            raise exc
        finally:
            closed.append("chunks")

    async def events(source: Any) -> Any:
        async for chunk in source:
            yield b"data: " + json.dumps({"text": chunk["text"]}).encode() + b"\n\n"

    async def collect() -> list[bytes]:
        source = chunks()
        return [part async for part in _sse(events(source), source)]

    parts = asyncio.run(collect())
    assert parts[0] == b'data: {"text": "a"}\n\n' and parts[-1] == b"data: [DONE]\n\n" and len(parts) == 3
    expected = json.loads(OpenAIServingBase.create_streaming_error_response(None, str(exc)))  # type: ignore[arg-type]
    assert json.loads(parts[1].removeprefix(b"data: ")) == expected
    assert closed == ["chunks"]


def test_generate_meta_info_as_sglang(http: httpx.Client) -> None:
    """``/generate``'s ``meta_info`` as ``TokenizerManager._handle_batch_output`` builds it: every
    output has ``weight_version`` (``--weight-version``'s default) and ``num_retractions``;
    ``e2e_latency`` only on a finished output (sgnb put it on every streamed chunk); no sgnb-only
    ``constraint`` key (sgnb's views label, which leaked into the API)."""
    from sglang.srt.arg_groups.fields.serving import Serving

    body = {"text": "Is Paris in France?", "sampling_params": {"max_new_tokens": 3, "regex": "(yes|no)"}}
    meta = http.post("/generate", json=body).json()["meta_info"]
    assert meta["weight_version"] == Serving().weight_version and meta["num_retractions"] == 0
    assert "constraint" not in meta and "e2e_latency" in meta
    params = {"max_new_tokens": 4, "ignore_eos": True}
    with http.stream(
        "POST", "/generate", json={"text": "Hi", "stream": True, "sampling_params": params}
    ) as res:
        events = [line[len("data: ") :] for line in res.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(e)["meta_info"] for e in events if e != "[DONE]"]
    assert len(chunks) >= 2 and chunks[-1]["finish_reason"] is not None
    for chunk in chunks[:-1]:
        assert chunk["finish_reason"] is None and "e2e_latency" not in chunk, chunk
    assert "e2e_latency" in chunks[-1]
    assert all(c["weight_version"] == "default" and c["num_retractions"] == 0 for c in chunks)


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
@pytest.mark.parametrize("model", [None, "bundled", "my-deployment"])
def test_openai_responses_echo_the_request_model(http: httpx.Client, path: str, model: str | None) -> None:
    """``OpenAIServingChat`` / ``OpenAIServingCompletion`` answer ``model=request.model`` in the
    response and in every streamed chunk: the name the client sent, SGLang's ``DEFAULT_MODEL_NAME``
    when it sent none (sgnb answered the served model's name whatever was asked)."""
    from sglang.srt.entrypoints.openai.protocol import DEFAULT_MODEL_NAME

    body: dict[str, Any] = {"max_tokens": 2, "temperature": 0}
    if path == "/v1/chat/completions":
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body["prompt"] = "The capital of France is"
    if model is not None:
        body["model"] = model
    expected = DEFAULT_MODEL_NAME if model is None else model
    assert http.post(path, json=body).json()["model"] == expected
    with http.stream("POST", path, json={**body, "stream": True}) as res:
        events = [line[len("data: ") :] for line in res.iter_lines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    assert chunks and all(c["model"] == expected for c in chunks), chunks


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_openai_usage_and_metadata_as_sglang(http: httpx.Client, path: str) -> None:
    """Usage is SGLang's ``UsageInfo`` (``UsageProcessor``, cache report on), every field of it
    (sgnb left out ``reasoning_tokens`` and ``completion_tokens_details``), streamed too; a whole
    response carries ``metadata`` (``build_endpoint_weight_version_metadata``: the weight version)."""
    from sglang.srt.entrypoints.openai.protocol import UsageInfo

    body: dict[str, Any] = {"max_tokens": 2, "temperature": 0, "n": 2}
    if path == "/v1/chat/completions":
        body["messages"] = [{"role": "user", "content": "hi"}]
    else:
        body["prompt"] = "The capital of France is"
    whole = http.post(path, json=body).json()
    assert whole["metadata"] == {"weight_version": "default"}
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}}
    with http.stream("POST", path, json=stream) as res:
        events = [line[len("data: ") :] for line in res.iter_lines() if line.startswith("data: ")]
    streamed = [json.loads(e) for e in events if e != "[DONE]"][-1]["usage"]
    for usage in (whole["usage"], streamed):
        assert set(usage) == set(UsageInfo.model_fields), usage
        assert usage["reasoning_tokens"] == 0 and usage["completion_tokens_details"] is None
        assert usage["completion_tokens"] == 4 and usage["total_tokens"] == usage["prompt_tokens"] + 4
        assert set(usage["prompt_tokens_details"]) >= {"cached_tokens"}

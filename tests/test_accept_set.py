"""``sgnb serve`` accepts what SGLang 0.5.23 accepts (issue 12, item 6).

Oracle: ``sglang/srt/entrypoints/http_server.py`` ``generate_request`` (the body is parsed into
``io_struct.GenerateReqInput``, a dataclass that ignores unknown keys) and
``openai_v1_chat_completions`` / ``openai_v1_completions`` (``protocol.ChatCompletionRequest`` /
``CompletionRequest``, pydantic models that ignore unknown keys). A field SGLang accepts that sgnb
cannot honour is a 400 naming the feature; one that changes nothing is accepted.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from accept_strategies import VOCAB, chat_bodies, completion_bodies, corrupt, generate_bodies
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import sgnb
from sgnb.net import free_port

# What sglang-router 0.3.2 forwards to a worker, recorded from its requests to `sgnb serve`: it
# re-serialises each body with its own defaults (and renames chat's max_tokens).
ROUTER_GENERATE = {
    "text": "The capital of France is",
    "model": None,
    "sampling_params": {"max_new_tokens": 2, "temperature": 0},
    "return_text_in_logprobs": False,
    "stream": False,
    "log_metrics": True,
    "return_hidden_states": False,
    "background": False,
    "no_logs": False,
    "return_bytes": False,
    "return_entropy": False,
}
ROUTER_CHAT = {
    "messages": [{"role": "user", "content": "Hi"}],
    "model": "x",
    "logprobs": False,
    "max_completion_tokens": 2,
    "stream": False,
    "no_stop_trim": False,
    "ignore_eos": False,
    "continue_final_message": False,
    "skip_special_tokens": True,
    "separate_reasoning": True,
    "stream_reasoning": True,
    "return_hidden_states": False,
}
ROUTER_COMPLETION = {
    "model": "x",
    "prompt": "Hi",
    "max_tokens": 2,
    "stream": False,
    "echo": False,
    "no_stop_trim": False,
    "ignore_eos": False,
    "skip_special_tokens": True,
    "return_hidden_states": False,
}
GOOD = {"text": "The capital of France is", "sampling_params": {"max_new_tokens": 2, "temperature": 0}}


@pytest.fixture(scope="module")
def rt() -> Any:
    runtime = sgnb.start("bundled", max_total_tokens=2048)
    yield runtime
    runtime.stop()


def still_serving(http: httpx.Client) -> None:
    res = http.post("/generate", json=GOOD)
    assert res.status_code == 200, res.text
    assert res.json()["meta_info"]["completion_tokens"] == 2


def test_issue_fields_are_accepted(http: httpx.Client) -> None:
    """The fields issue 12 lists (SGLang's ``GenerateReqInput`` / ``ChatCompletionRequest`` fields)."""
    body = {
        **GOOD,
        "model": "anything",
        "return_hidden_states": False,
        "background": True,
        "no_logs": True,
        "return_bytes": False,
    }
    res = http.post("/generate", json=body)
    assert res.status_code == 200, res.text
    assert res.json()["meta_info"]["completion_tokens"] == 2
    chat = {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 2,
        "continue_final_message": False,
        "separate_reasoning": False,
        "stream_reasoning": False,
        "return_hidden_states": False,
    }
    res = http.post("/v1/chat/completions", json=chat)
    assert res.status_code == 200, res.text
    assert res.json()["usage"]["completion_tokens"] == 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/generate", ROUTER_GENERATE),
        ("/v1/chat/completions", ROUTER_CHAT),
        ("/v1/completions", ROUTER_COMPLETION),
    ],
)
def test_router_request_shape_is_accepted(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    for stream in (False, True):
        res = http.post(path, json={**body, "stream": stream})
        assert res.status_code == 200, res.text
        if stream:
            assert res.text.endswith("data: [DONE]\n\n") and '"error"' not in res.text


def test_unknown_fields_are_ignored(http: httpx.Client) -> None:
    """SGLang ignores keys its classes do not declare (measured: ``ChatCompletionRequest(..., bogus_field=1)``)."""
    assert http.post("/generate", json={**GOOD, "bogus_field": 1, "prompt": "x"}).status_code == 200
    chat = {"messages": [{"role": "user", "content": "Hi", "bogus": 1}], "max_tokens": 1, "bogus_field": 1}
    assert http.post("/v1/chat/completions", json=chat).status_code == 200
    assert (
        http.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1, "bogus": [1]}).status_code == 200
    )


@pytest.mark.parametrize(
    ("path", "field", "value", "named"),
    [
        ("/generate", "return_hidden_states", True, "hidden states"),
        ("/generate", "lora_path", "my-adapter", "LoRA"),
        ("/generate", "image_data", "http://x/y.png", "image input"),
        ("/generate", "session_params", {"id": "s"}, "sessions"),
        ("/v1/chat/completions", "return_hidden_states", True, "hidden states"),
        ("/v1/chat/completions", "lora_path", "my-adapter", "LoRA"),
        ("/v1/chat/completions", "logit_bias", {"42": 5.0}, "logit_bias"),
        ("/v1/completions", "echo", True, "echo"),
        ("/v1/completions", "lora_path", "my-adapter", "LoRA"),
    ],
)
def test_unhonourable_fields_name_the_feature(
    http: httpx.Client, path: str, field: str, value: Any, named: str
) -> None:
    base: dict[str, Any] = (
        GOOD
        if path == "/generate"
        else {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}
        if "chat" in path
        else {"prompt": "Hi", "max_tokens": 1}
    )
    res = http.post(path, json={**base, field: value})
    assert res.status_code == 400, res.text
    body = res.json()
    message = body["message"] if path.startswith("/v1/") else body["error"]["message"]
    assert field in message and named in message and "not supported by sgnb serve" in message
    if path.startswith("/v1/"):
        assert body["object"] == "error" and body["type"] == "BadRequestError" and body["code"] == 400
    still_serving(http)


def test_through_the_real_router(server: Any) -> None:
    """sglang-router (SGLang's own load balancer) in front of ``sgnb serve`` on 127.0.0.1."""
    pytest.importorskip("sglang_router")
    port = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "sglang_router.launch_router", "--host", "127.0.0.1"),
            *("--port", str(port), "--worker-urls", server.url, "--policy", "round_robin"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as router:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if router.get("/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, "the router did not come up"
                assert proc.poll() is None, "the router exited"
                time.sleep(0.5)
            chat = {"model": "x", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
            for path, body in [
                ("/generate", GOOD),
                ("/v1/chat/completions", chat),
                ("/v1/completions", {"model": "x", "prompt": "Hi", "max_tokens": 2}),
            ]:
                for stream in (False, True):
                    res = router.post(path, json={**body, "stream": stream})
                    assert res.status_code == 200, (path, stream, res.text)
                    if stream:
                        assert res.text.endswith("data: [DONE]\n\n") and '"error"' not in res.text
    finally:
        proc.terminate()
        proc.wait(30)


# ---- the differential test: SGLang's own classes judge, sgnb serve answers ----------------------


def sglang_verdict_generate(body: Any, tokenizer: Any) -> str | None:
    """Why SGLang's server refuses this ``/generate`` body, or None if it admits it: the steps of
    ``http_server.generate_request`` (the ``GenerateReqInput`` parse, the JSON contract) and of
    ``TokenizerManager`` (``normalize_batch_and_arguments``, ``SamplingParams.normalize/verify``)."""
    from pydantic import TypeAdapter, ValidationError
    from sglang.api.v1.api_types import GenerateRequest, JsonContractError
    from sglang.srt.managers.io_struct import GenerateReqInput
    from sglang.srt.sampling.sampling_params import SamplingParams

    try:
        obj = TypeAdapter(GenerateReqInput).validate_python(body)
        GenerateRequest.from_json_value(body)
        obj.normalize_batch_and_arguments()
        n = 1 if obj.is_single else len(obj.text if obj.text is not None else obj.input_ids)
        for one in [obj] if obj.is_single else [obj[i] for i in range(n)]:
            sp = SamplingParams(**(one.sampling_params or {}))
            sp.normalize(tokenizer)
            sp.verify(VOCAB)
    except (ValidationError, JsonContractError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # SGLang's server answers this with a 500: it refuses the body too
        return f"crash {type(exc).__name__}: {exc}"
    return None


def sglang_refuses_in_stream(body: Any) -> bool:
    """Whether SGLang answers its refusal of this ``/generate`` body inside a stream: the body passes
    the steps ``http_server.generate_request`` runs before the stream (the ``GenerateReqInput``
    parse, the JSON contract) and asks for ``stream``; ``serve_generate_request``'s
    ``stream_results`` then turns ``TokenizerManager.generate_request``'s ValueError into HTTP 200,
    one ``invalid_request_error`` event and ``[DONE]`` (a non-ValueError there cuts the stream off:
    sgnb sends the event then too)."""
    from pydantic import TypeAdapter, ValidationError
    from sglang.api.v1.api_types import GenerateRequest, JsonContractError
    from sglang.srt.managers.io_struct import GenerateReqInput

    try:
        obj = TypeAdapter(GenerateReqInput).validate_python(body)
        GenerateRequest.from_json_value(body)
    except (ValidationError, JsonContractError):
        return False
    return bool(obj.stream)


def stream_error_of(res: httpx.Response, shown: str) -> str | None:
    """The message of a stream's error event (None if it has none); checks SGLang's SSE framing and
    ``serve_generate_request``'s event shape."""
    assert res.text.endswith("data: [DONE]\n\n"), shown
    errors = [
        json.loads(e[len("data: ") :])["error"]
        for e in res.text.split("\n\n")
        if e.startswith('data: {"error"')
    ]
    if not errors:
        return None
    events = [e for e in res.text.split("\n\n") if e]
    assert len(events) == 2 and len(errors) == 1, shown  # the error event, then [DONE]
    err = errors[0]
    assert err["type"] == "invalid_request_error" and err["code"] == 400 and err["retryable"] is False, shown
    return str(err["message"])


def sglang_verdict_openai(kind: str, body: Any, tokenizer: Any, context_length: int) -> str | None:
    """Why SGLang refuses this OpenAI body, or None: the pydantic class, then the serving class's
    ``_validate_request`` and its sampling-parameter conversion, checked as ``/generate``'s."""
    from pydantic import ValidationError
    from sglang.srt.entrypoints.openai import protocol, serving_chat
    from sglang.srt.entrypoints.openai.serving_completions import OpenAIServingCompletion
    from sglang.srt.sampling.sampling_params import SamplingParams

    chat = serving_chat.OpenAIServingChat
    try:
        if kind == "chat":
            req = protocol.ChatCompletionRequest.model_validate(json.loads(json.dumps(body)))
            fake = SimpleNamespace(
                is_minimax_m3=False,
                tokenizer_manager=SimpleNamespace(model_config=SimpleNamespace(is_multimodal=False)),
            )
            fake._validate_media_content = lambda r: chat._validate_media_content(fake, r)
            fake._effective_tools = lambda r: chat._effective_tools(fake, r)
            with pytest.MonkeyPatch.context() as mp:  # the server-wide settings it reads
                mp.setattr(serving_chat, "get_model", lambda: SimpleNamespace(context_length=context_length))
                mp.setattr(
                    serving_chat,
                    "get_serving",
                    lambda: SimpleNamespace(trust_request_chat_template=False, allow_auto_truncate=False),
                )
                error = chat._validate_request(fake, req)
            stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
            params = None if error else req.to_sampling_params(stop=stop, model_generation_config={})
        else:
            req = protocol.CompletionRequest.model_validate(json.loads(json.dumps(body)))
            error = OpenAIServingCompletion._validate_request(None, req)  # type: ignore[arg-type]
            params = None if error else OpenAIServingCompletion._build_sampling_params(None, req)  # type: ignore[arg-type]
        if error:
            return error
        sp = SamplingParams(**params)
        sp.normalize(tokenizer)
        sp.verify(VOCAB)
    except (ValidationError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # SGLang's server answers this with a 500: it refuses the body too
        return f"crash {type(exc).__name__}: {exc}"
    return None


def message_of(res: httpx.Response) -> str:
    """The message of an error in any of SGLang's shapes (``ErrorResponse``, the contract's
    ``{"error": "..."}``, ``_create_error_response``'s ``{"error": {"message": ...}}``)."""
    assert res.headers["content-type"].startswith("application/json"), res.text[:200]
    body = res.json()
    if "error" in body:
        err = body["error"]
        return str(err if isinstance(err, str) else err["message"])
    assert body["object"] == "error" and body["code"] == res.status_code and body["type"], body
    return str(body["message"])


STATS: dict[str, dict[str, int]] = {}
DIFF = settings(
    deadline=None,
    derandomize=True,  # the same bodies on every run, so CI is reproducible
    database=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: each failure message shows its body
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# Refusals where SGLang's classes admit the body and its scheduler would run it, that sgnb keeps on
# purpose: a prompt with no tokens has nothing to condition on in the local runtime (found by this test
# on 2026-11-29: `{"input_ids": [[], []]}`). Listed in the session note; shrink this set, never grow it
# silently.
KNOWN_DEPARTURES = {"the prompt is empty"}


def judge(http: httpx.Client, route: str, body: Any, refused: str | None, in_stream: bool = False) -> None:
    """sgnb's answer against SGLang's verdict; every refusal is followed by a request that works.

    ``in_stream``: SGLang refuses this streamed body inside the stream (:func:`sglang_refuses_in_stream`),
    so the answer is 200 + one error event + ``[DONE]``, or sgnb's 400 naming a feature it lacks."""
    res = http.post(route, content=json.dumps(body), headers={"content-type": "application/json"})
    shown = f"{json.dumps(body)[:600]} -> {res.status_code} {res.text[:300]}"
    assert res.status_code < 500, shown
    assert "Extra inputs" not in res.text and "extra_forbidden" not in res.text, shown
    verdict = (
        ("sglang refuses in the stream" if in_stream else "sglang refuses") if refused else "sglang accepts"
    )
    counts = STATS.setdefault(route, {})
    counts[f"{verdict}, sgnb {res.status_code}"] = counts.get(f"{verdict}, sgnb {res.status_code}", 0) + 1
    if refused is not None and in_stream and res.status_code == 200:
        assert res.headers["content-type"].startswith("text/event-stream"), shown
        assert stream_error_of(res, shown), f"SGLang refuses in the stream ({refused}); {shown}"
    elif refused is not None and in_stream:
        assert res.status_code == 400 and "not supported by sgnb serve" in message_of(res), (
            f"SGLang refuses ({refused}) with 200 + an error event; {shown}"
        )
    elif refused is not None:
        assert 400 <= res.status_code < 500, f"SGLang refuses ({refused}) but sgnb answered {shown}"
        assert message_of(res), shown
    elif res.status_code != 200:
        assert res.status_code == 400, shown
        message = message_of(res)
        assert "not supported by sgnb serve" in message or message in KNOWN_DEPARTURES, (
            f"SGLang accepts; {shown}"
        )
    elif res.headers["content-type"].startswith("text/event-stream"):
        error = stream_error_of(res, shown)
        assert error is None or error in KNOWN_DEPARTURES, f"SGLang accepts; {shown}"
    else:
        res.json()
    if res.status_code != 200 or refused is not None:
        still_serving(http)


def short(body: Any) -> Any:
    """Keep generation to a token or two: an unset (or null) length is set to 2; any other value,
    junk included, is kept for the oracle to judge."""
    if not isinstance(body, dict):
        return body
    params = body.get("sampling_params")
    for p in params if isinstance(params, list) else [params]:
        if isinstance(p, dict) and p.get("max_new_tokens") is None:
            p["max_new_tokens"] = 2
    if "sampling_params" not in body and ("text" in body or "input_ids" in body):
        body["sampling_params"] = {"max_new_tokens": 2}
    unset = body.get("max_tokens") is None and body.get("max_completion_tokens") is None
    if ("messages" in body or "prompt" in body) and unset:
        body["max_tokens"] = 2
    return body


@settings(DIFF, max_examples=260)
@given(body=corrupt(generate_bodies()).map(short))
def test_generate_accept_set_matches_sglang(http: httpx.Client, rt: Any, body: Any) -> None:
    """``/generate``: ``http_server.generate_request`` + ``TokenizerManager`` are the oracle."""
    refused = sglang_verdict_generate(body, rt.tokenizer)
    judge(http, "/generate", body, refused, in_stream=refused is not None and sglang_refuses_in_stream(body))


def streaming(body: Any) -> Any:
    """The body asking for a stream (a dict; anything else unchanged, for the oracle to judge)."""
    return {**body, "stream": True} if isinstance(body, dict) else body


@settings(DIFF, max_examples=60)
@given(body=corrupt(generate_bodies()).map(short).map(streaming))
def test_streamed_generate_refusals_match_sglang(http: httpx.Client, rt: Any, body: Any) -> None:
    """``/generate`` with ``stream: true``: SGLang's code path decides 400 before the stream
    (``http_server.generate_request``) vs. 200 + an error event (``serve_generate_request``)."""
    refused = sglang_verdict_generate(body, rt.tokenizer)
    judge(http, "/generate", body, refused, in_stream=refused is not None and sglang_refuses_in_stream(body))


@settings(DIFF, max_examples=170)
@given(body=corrupt(chat_bodies()).map(short))
def test_chat_accept_set_matches_sglang(http: httpx.Client, rt: Any, body: Any) -> None:
    """``/v1/chat/completions``: ``ChatCompletionRequest`` + ``OpenAIServingChat`` are the oracle."""
    judge(
        http,
        "/v1/chat/completions",
        body,
        sglang_verdict_openai("chat", body, rt.tokenizer, rt.context_length),
    )


@settings(DIFF, max_examples=90)
@given(body=corrupt(completion_bodies()).map(short))
def test_completion_accept_set_matches_sglang(http: httpx.Client, rt: Any, body: Any) -> None:
    """``/v1/completions``: ``CompletionRequest`` + ``OpenAIServingCompletion`` are the oracle."""
    judge(
        http,
        "/v1/completions",
        body,
        sglang_verdict_openai("completion", body, rt.tokenizer, rt.context_length),
    )


@settings(DIFF, max_examples=30)
@given(raw=st.binary(max_size=48))
def test_raw_bytes_are_a_4xx(http: httpx.Client, raw: bytes) -> None:
    """Bytes that are not a JSON object: FastAPI's body parse fails, a 400 in SGLang."""
    for route in ("/generate", "/v1/chat/completions"):
        res = http.post(route, content=raw, headers={"content-type": "application/json"})
        assert res.status_code < 500, res.text[:200]
        if res.status_code != 200:
            assert message_of(res)
            still_serving(http)


def test_the_differential_test_covered_both_sides(http: httpx.Client, rt: Any) -> None:
    """At least 500 bodies, many admitted and answered 200, many refused; nothing left running."""
    if not STATS:
        pytest.skip("the differential tests above did not run in this session (-k?)")
    print(f"\naccept-set verdicts: {json.dumps(STATS, indent=1)}")
    total = sum(sum(c.values()) for c in STATS.values())
    assert total >= 500, STATS
    for route, counts in STATS.items():
        accepted = sum(v for k, v in counts.items() if k.startswith("sglang accepts"))
        served = counts.get("sglang accepts, sgnb 200", 0)
        refused = sum(v for k, v in counts.items() if k.startswith("sglang refuses"))
        assert served >= 0.3 * accepted and refused >= 0.1 * sum(counts.values()), (route, counts)
    still_serving(http)
    state = http.get("/server_info").json()["internal_states"][0]
    assert state["running"] == 0 and state["waiting"] == 0

"""Property: no request body makes ``sgnb serve`` answer 5xx, and it keeps serving afterwards.

Hypothesis sends random JSON - well-typed, mistyped, unknown fields, garbage - to ``/generate``
and ``/v1/chat/completions`` through the ASGI app in-process (fast, same code path as uvicorn).
Generation lengths are clamped to a token or two so valid bodies finish quickly.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

import sgnb
from sgnb.serve.app import create_app

EXAMPLES = 260  # per endpoint: 520 bodies in all
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=False)
    | st.text(max_size=16),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)
unit = st.floats(0, 1, allow_nan=False, allow_subnormal=False)
vocab = st.integers(0, 49151)

# Well-formed sampling parameters, including edge values the validators let through.
valid_sampling = st.fixed_dictionaries(
    {},
    optional={
        "max_new_tokens": st.integers(0, 2),
        "min_new_tokens": st.integers(0, 1),
        "temperature": st.floats(0, 2, allow_nan=False, allow_subnormal=False)
        | st.sampled_from([0, 1e-12, 1e-4]),
        "top_p": st.floats(1e-6, 1, allow_subnormal=False),
        "top_k": st.sampled_from([-1, 1, 5, 50, 100_000]),
        "min_p": unit,
        "frequency_penalty": st.floats(-2, 2, allow_nan=False, allow_subnormal=False),
        "presence_penalty": st.floats(-2, 2, allow_nan=False, allow_subnormal=False),
        "repetition_penalty": st.floats(1e-6, 2, allow_subnormal=False),
        "stop": st.text(min_size=1, max_size=4) | st.lists(st.text(min_size=1, max_size=4), max_size=3),
        "stop_token_ids": st.lists(vocab, max_size=3),
        "ignore_eos": st.booleans(),
        "skip_special_tokens": st.booleans(),
        "no_stop_trim": st.booleans(),
        "seed": st.integers(0, 2**63 - 1),
    },
).flatmap(
    lambda sp: st.sampled_from(
        [
            sp,
            sp,
            sp,
            {**sp, "regex": "[0-9]+"},
            {**sp, "regex": "(yes|no)"},
            {**sp, "json_schema": '{"type": "integer"}'},
            {**sp, "json_schema": {"type": "object", "properties": {"a": {"type": "boolean"}}}},
            {**sp, "ebnf": 'root ::= "a" | "b"'},
        ]
    )
)

valid_generate = st.fixed_dictionaries(
    {"sampling_params": valid_sampling},
    optional={
        "stream": st.booleans(),
        "return_logprob": st.booleans(),
        "logprob_start_len": st.integers(-1, 3),
        "return_text_in_logprobs": st.booleans(),
        "rid": st.text(min_size=1, max_size=8),
    },
).flatmap(
    lambda body: st.one_of(
        st.builds(lambda t: {**body, "text": t}, st.text(min_size=1, max_size=40)),
        st.builds(
            lambda t: {**body, "text": t}, st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=3)
        ),
        st.builds(lambda t: {**body, "input_ids": t}, st.lists(vocab, min_size=1, max_size=12)),
        st.builds(
            lambda t: {**body, "input_ids": t},
            st.lists(st.lists(vocab, min_size=1, max_size=6), min_size=1, max_size=3),
        ),
    )
)

message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "developer"]), "content": st.text(max_size=30)}
) | st.fixed_dictionaries(
    {
        "role": st.just("user"),
        "content": st.lists(
            st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=8)}), max_size=2
        ),
    }
)
valid_chat = st.fixed_dictionaries(
    {"model": st.text(max_size=8), "messages": st.lists(message, min_size=1, max_size=3)},
    optional={
        "max_tokens": st.just(1),
        "temperature": st.floats(0, 2, allow_nan=False, allow_subnormal=False),
        "top_p": st.floats(1e-6, 1, allow_subnormal=False),
        "stop": st.text(min_size=1, max_size=3) | st.lists(st.text(min_size=1, max_size=3), max_size=2),
        "stream": st.booleans(),
        "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
        "seed": st.integers(0, 2**32),
        "n": st.just(1),
        "response_format": st.sampled_from(
            [
                {"type": "text"},
                {"type": "json_object"},
                {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer"}}},
            ]
        ),
        "ignore_eos": st.booleans(),
        "frequency_penalty": st.floats(-2, 2, allow_nan=False, allow_subnormal=False),
    },
)


@st.composite
def corrupted(draw: Any, valid: st.SearchStrategy[dict[str, Any]]) -> Any:
    """A valid body, half the time damaged: a field mistyped, dropped or made up, a nested value junked."""
    body = dict(draw(valid))
    how = draw(st.sampled_from(["none", "none", "none", "junk", "drop", "extra", "nested", "whole"]))
    keys = sorted(body)
    if how == "junk":
        body[draw(st.sampled_from(keys))] = draw(json_values)
    elif how == "drop":
        body.pop(draw(st.sampled_from(keys)))
    elif how == "extra":
        body[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
    elif how == "nested":
        inner = next(
            (k for k in ("sampling_params", "messages") if isinstance(body.get(k), dict | list)), None
        )
        if isinstance(body.get(inner), dict):
            body[inner] = {
                **body[inner],
                draw(st.sampled_from([*body[inner], "max_new_tokens", "bogus"])): draw(json_values),
            }
        elif isinstance(body.get(inner), list) and body[inner]:
            body[inner] = [*body[inner][:-1], draw(json_values)]
    elif how == "whole":
        return draw(json_values)
    return body


def clamp_params(params: Any) -> Any:
    """Keep valid requests short: at most 2 new tokens (an explicit 0 stays: it means prefill only)."""
    if isinstance(params, list):
        return [clamp_params(p) for p in params]
    if not isinstance(params, dict):
        return params
    params = dict(params)
    value = params.get("max_new_tokens")
    if not isinstance(value, int) or isinstance(value, bool) or value > 2:
        params["max_new_tokens"] = 2
    return params


def clamp_generate(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "sampling_params": clamp_params(body.get("sampling_params") or {})}


def clamp_chat(body: dict[str, Any]) -> dict[str, Any]:
    body = dict(body)
    value = body.get("max_tokens")
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 1):
        body["max_tokens"] = 1
    return body


@pytest.fixture(scope="module")
def client() -> Any:
    rt = sgnb.start("bundled", max_total_tokens=2048)
    with TestClient(create_app(rt), raise_server_exceptions=False) as c:
        yield c
    rt.stop()


STATUS: dict[str, dict[int, int]] = {"generate": {}, "chat": {}}


def check(res: Any, body: Any, route: str) -> None:
    STATUS[route][res.status_code] = STATUS[route].get(res.status_code, 0) + 1
    shown = json.dumps(body)[:400]
    assert res.status_code < 500, f"{res.status_code} for {shown}: {res.text[:400]}"
    assert res.status_code in (200, 400), f"{res.status_code} for {shown}: {res.text[:200]}"
    if res.status_code == 400:
        assert res.headers["content-type"].startswith("application/json")
        res.json()
    elif res.headers["content-type"].startswith("text/event-stream"):
        assert res.text.endswith("data: [DONE]\n\n"), shown
        assert '"error"' not in res.text, f"stream failed for {shown}: {res.text[-400:]}"
    else:
        res.json()


@FUZZ
@given(body=corrupted(valid_generate))
def test_generate_never_5xx(client: Any, body: Any) -> None:
    if isinstance(body, dict):
        body = clamp_generate(body)
    check(client.post("/generate", json=body), body, "generate")


@FUZZ
@given(body=corrupted(valid_chat))
def test_chat_never_5xx(client: Any, body: Any) -> None:
    if isinstance(body, dict):
        body = clamp_chat(body)
    check(client.post("/v1/chat/completions", json=body), body, "chat")


@settings(
    max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=64))
def test_raw_bytes_never_5xx(client: Any, raw: bytes) -> None:
    res = client.post("/generate", content=raw, headers={"content-type": "application/json"})
    assert res.status_code in (200, 400), res.text[:200]


def test_still_serving_after_fuzzing(client: Any) -> None:
    print(f"\nfuzz status codes: {STATUS}")
    for route, counts in STATUS.items():  # the bodies reached generation, not only the validators
        if counts:
            assert counts.get(200, 0) >= 0.1 * sum(counts.values()), (route, counts)
    res = client.post(
        "/generate", json={"text": "The capital of France is", "sampling_params": {"max_new_tokens": 3}}
    )
    assert res.status_code == 200 and res.json()["meta_info"]["completion_tokens"] == 3
    assert client.get("/health").status_code == 200
    state = client.get("/server_info").json()["internal_states"][0]
    assert state["running"] == 0 and state["waiting"] == 0

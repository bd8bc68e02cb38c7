"""``sgnb serve`` accepts what SGLang 0.5.23 accepts (issue 12, item 6).

Oracle: ``sglang/srt/entrypoints/http_server.py`` ``generate_request`` (the body is parsed into
``io_struct.GenerateReqInput``, a dataclass that ignores unknown keys) and
``openai_v1_chat_completions`` / ``openai_v1_completions`` (``protocol.ChatCompletionRequest`` /
``CompletionRequest``, pydantic models that ignore unknown keys). A field SGLang accepts that sgnb
cannot honour is a 400 naming the feature; one that changes nothing is accepted.
"""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

import sgnb
from sgnb.serve.app import create_app
from sgnb.serve.server import ServerThread, free_port

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
def server() -> Any:
    rt = sgnb.start("bundled", max_total_tokens=2048)
    with ServerThread(create_app(rt)) as srv:
        yield srv
    rt.stop()


@pytest.fixture(scope="module")
def http(server: Any) -> Any:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


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

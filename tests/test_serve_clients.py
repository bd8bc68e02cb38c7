"""Real clients against a real ``sgnb serve`` process: SGLang's RuntimeEndpoint, the openai package, curl."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from sgnb.core.chat_template import register
from sgnb.serve.server import ServerProcess


@pytest.fixture(scope="module")
def server(tmp_path_factory: Any) -> Any:
    log = (tmp_path_factory.mktemp("serve") / "server.log").open("wb")
    proc = ServerProcess(
        "--model", "bundled", "--max-total-tokens", "4096", "--log-level", "warning", log=log
    )
    with proc:
        yield proc
    log.close()


# ---- SGLang's own frontend ---------------------------------------------------------------------


def test_runtime_endpoint_runs_an_sgl_program(server: Any) -> None:
    import sglang as sgl

    register()  # SmolLM2's ChatML template for sglang.lang (see sgnb.core.chat_template)
    backend = sgl.RuntimeEndpoint(server.url)
    assert backend.get_chat_template().name == "smollm2"
    sgl.set_default_backend(backend)

    @sgl.function
    def quiz(s: Any, question: str) -> None:
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("answer", max_tokens=16, temperature=0))
        s += sgl.user("Is Paris in France? Answer yes or no.")
        s += sgl.assistant(sgl.select("verdict", choices=["yes", "no"]))
        s += sgl.user("Name a year.")
        s += sgl.assistant(sgl.gen("year", max_tokens=6, regex=r"[0-9]{4}", temperature=0))

    state = quiz.run(question="What is the capital of France?")
    assert state.error() is None
    assert "Paris" in state["answer"]
    assert state["verdict"] in ("yes", "no")
    assert re.fullmatch(r"[0-9]{4}", state["year"]), state["year"]
    meta = state.get_meta_info("verdict")
    assert len(meta["input_token_logprobs"]) == 2  # one list per choice, from our /generate
    text = state.text()
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n" in text

    streamed = quiz.run(question="Say hello.", stream=True)
    pieces = list(streamed.text_iter("answer"))
    assert len(pieces) > 1 and "".join(pieces) == streamed["answer"]
    streamed.sync()


# ---- the openai package --------------------------------------------------------------------------


def test_openai_client_chat(server: Any) -> None:
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    model = client.models.list().data[0].id
    assert model == "HuggingFaceTB/SmolLM2-135M-Instruct"
    messages: Any = [{"role": "user", "content": "What is the capital of France?"}]
    reply = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens <= 12

    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] in ("stop", "length")
    assert (
        chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    )

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 20}},
        "required": ["city"],
    }
    constrained = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Which city is the capital of France? Answer in JSON."}],
        max_tokens=32,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    assert set(json.loads(constrained.choices[0].message.content or "")) == {"city"}

    completion = client.completions.create(
        model=model, prompt="The capital of France is", max_tokens=4, temperature=0
    )
    assert completion.choices[0].text and completion.usage is not None

    several = client.chat.completions.create(model=model, messages=messages, max_tokens=4, n=2)
    assert [c.index for c in several.choices] == [0, 1]


# ---- curl, as a tutorial shows it ----------------------------------------------------------------

TUTORIAL = {
    "generate": """curl -s http://127.0.0.1:PORT/generate \\
  -H "Content-Type: application/json" \\
  -d '{"text": "The capital of France is", "sampling_params": {"max_new_tokens": 8, "temperature": 0}}'""",
    "stream": """curl -sN http://127.0.0.1:PORT/generate \\
  -H "Content-Type: application/json" \\
  -d '{"text": "Once upon a time", "sampling_params": {"max_new_tokens": 8}, "stream": true}'""",
    "regex": """curl -s http://127.0.0.1:PORT/generate \\
  -H "Content-Type: application/json" \\
  -d '{"text": "Q: Name a year.\\nA:", "sampling_params": {"max_new_tokens": 6, "regex": " [0-9]{4}", "temperature": 0}}'""",
    "chat": """curl -s http://127.0.0.1:PORT/v1/chat/completions \\
  -H "Content-Type: application/json" \\
  -d '{"model": "default", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8}'""",
    "model_info": "curl -s http://127.0.0.1:PORT/get_model_info",
    "flush": "curl -s -X POST http://127.0.0.1:PORT/flush_cache",
    "metrics": "curl -s http://127.0.0.1:PORT/metrics",
    "bad": """curl -s -w '\\n%{http_code}' http://127.0.0.1:PORT/generate \\
  -H "Content-Type: application/json" -d '{"text": 42}'""",
}


def curl(server: Any, name: str) -> str:
    command = TUTORIAL[name].replace("PORT", str(server.port))
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (command, done.stderr)
    return done.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_tutorial_curl_commands(server: Any) -> None:
    out = json.loads(curl(server, "generate"))
    assert out["meta_info"]["completion_tokens"] == 8 and "Paris" in out["text"]

    events = [line for line in curl(server, "stream").splitlines() if line]
    assert events[-1] == "data: [DONE]" and all(line.startswith("data: ") for line in events)
    assert json.loads(events[-2][6:])["meta_info"]["finish_reason"]["type"] == "length"

    assert re.fullmatch(r" [0-9]{4}", json.loads(curl(server, "regex"))["text"])
    assert json.loads(curl(server, "chat"))["choices"][0]["message"]["role"] == "assistant"
    assert "model_path" in json.loads(curl(server, "model_info"))
    assert "Cache flushed" in curl(server, "flush")
    names = {f.name for f in text_string_to_metric_families(curl(server, "metrics"))}
    assert {"sglang:prompt_tokens", "sglang:e2e_request_latency_seconds"} <= names
    body, status = curl(server, "bad").rsplit("\n", 1)
    # a type error in GenerateReqInput: SGLang's RequestValidationError handler's ErrorResponse
    assert status == "400" and json.loads(body)["object"] == "error" and json.loads(body)["code"] == 400
    assert shlex.split(TUTORIAL["generate"].replace("\\\n", " "))[0] == "curl"


def test_metrics_after_traffic(server: Any) -> None:
    requests.post(
        server.url + "/generate", json={"text": "hi", "sampling_params": {"max_new_tokens": 3}}, timeout=60
    )
    families = {
        f.name: f
        for f in text_string_to_metric_families(requests.get(server.url + "/metrics", timeout=30).text)
    }
    generated = sum(
        s.value for s in families["sglang:generation_tokens"].samples if s.name.endswith("_total")
    )
    assert generated >= 3
    ttft = families["sglang:time_to_first_token_seconds"]
    assert any(s.name.endswith("_bucket") and s.labels["le"] == "+Inf" and s.value >= 1 for s in ttft.samples)


def test_sgnb_remote_runtime_talks_to_sgnb_serve(server: Any) -> None:
    remote_mod = pytest.importorskip("sgnb.runtimes.remote")
    rt = remote_mod.RemoteRuntime(server.url)
    try:
        out = rt.generate("The capital of France is", max_new_tokens=4, temperature=0)
        assert out["meta_info"]["completion_tokens"] == 4
        ids = rt.tokenizer.encode("The capital of France is Paris", add_special_tokens=False)
        scores = rt.score(ids[:-1], ids[-1:])
        assert len(scores) == 1 and scores[0] < 0
    finally:
        rt.stop()

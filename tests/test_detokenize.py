"""Stop trimming, finish reasons and streaming hold-back, judged by SGLang's own pipeline.

Every expected value comes from SGLang 0.5.23's classes (``tests/sglang_oracle.py`` replays a
request's tokens through ``schedule_batch.Req`` and ``DetokenizerManager``), on all three paths:
the in-process API (``rt.generate``), the DSL on ``rt.backend`` and ``sgnb serve`` driven by
SGLang's own ``RuntimeEndpoint``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import assert_idle_balanced, chat
from sglang_oracle import Replay, sglang_texts

import sgnb
from sgnb.core.detokenize import find_printable_text, regex_max_len, trim_matched_stop
from sgnb.serve.server import ServerThread

# Forced by a regex, so the tokens are the same on every path: emoji and CJK split into byte
# tokens (each alone decodes to U+FFFD), then ASCII.
TARGET = "🌟🌟\n\n🌟 你好世界。Done"
QUESTION = "Show some stars."


@pytest.fixture(scope="module")
def rt() -> Iterator[Any]:
    runtime = sgnb.start(max_total_tokens=4096)
    yield runtime
    runtime.stop()


def oracle(rt: Any, prompt: str, out: dict[str, Any], params: dict[str, Any], stream: bool) -> Replay:
    ids = rt.tokenizer.encode(prompt, add_special_tokens=False)
    sp = {k: v for k, v in params.items() if k not in ("regex",)}
    return sglang_texts(
        rt.tokenizer, ids, out["output_ids"], sp, stream=stream, eos_token_ids=set(rt.model.eos_token_ids)
    )


CASES = {
    "emoji-cjk": {"regex": re.escape(TARGET)},
    "multi-token-stop": {"regex": re.escape(TARGET), "stop": "\n\n🌟"},
    "cjk-stop": {"regex": re.escape(TARGET), "stop": ["never", "你好"]},
    "stop-token-ids": {"stop_token_ids": [30]},  # "."
    "eos-kept-special": {"skip_special_tokens": False},  # <|im_end|> is trimmed all the same
    "eos-no-stop-trim": {"skip_special_tokens": False, "no_stop_trim": True},
    "stop-no-trim": {"stop": " Paris", "no_stop_trim": True},
    "stop-regex": {"stop_regex": r"Par\w+"},
    "length": {"max_new_tokens": 5},
    # Past EOS and past 50 tokens: a non-streaming request's text is built in 50-token steps
    # (output_streamer's force-stream interval), special tokens skipped.
    "long-ignore-eos": {"max_new_tokens": 120, "ignore_eos": True, "stop_token_ids": [2]},
}


@pytest.mark.parametrize("case", list(CASES))
def test_in_process_text_is_sglangs(rt: Any, case: str) -> None:
    """Final text, streamed chunks and finish_reason equal SGLang's for the same tokens
    (Req.update_finish_state, check_match_stop_str_prefix, DetokenizerManager.trim_matched_stop)."""
    prompt = chat(rt, QUESTION if "regex" in CASES[case] else "What is the capital of France?")
    params = {"max_new_tokens": 40, "temperature": 0, **CASES[case]}
    out = rt.generate(prompt, dict(params))
    want = oracle(rt, prompt, out, params, stream=False)
    assert out["meta_info"]["finish_reason"] == want.finish_reason
    assert out["output_ids"] == want.output_ids
    assert out["text"] == want.text
    chunks = list(rt.generate(prompt, dict(params), stream=True))
    streamed = oracle(rt, prompt, chunks[-1], params, stream=True)
    assert [c["text"] for c in chunks if c["meta_info"]["finish_reason"] is None] == streamed.chunks[:-1]
    assert chunks[-1]["text"] == streamed.text
    assert chunks[-1]["meta_info"]["finish_reason"] == streamed.finish_reason
    assert not any(c["text"].endswith("\ufffd") for c in chunks)
    assert_idle_balanced(rt)


def test_expected_values_in_words(rt: Any) -> None:
    """What the oracle says, spelled out for the issue's cases."""
    prompt = chat(rt, "What is the capital of France?")
    r = rt.generate(prompt, max_new_tokens=30, temperature=0, stop_token_ids=[30])
    assert r["meta_info"]["finish_reason"] == {"type": "stop", "matched": 30}
    assert not r["text"].endswith(".") and r["output_ids"][-1] == 30
    r = rt.generate(prompt, max_new_tokens=30, temperature=0, skip_special_tokens=False)
    assert r["meta_info"]["finish_reason"] == {"type": "stop", "matched": 2}
    assert "<|im_end|>" not in r["text"]
    r = rt.generate(prompt, max_new_tokens=30, temperature=0, stop=".")
    assert r["meta_info"]["finish_reason"] == {"type": "stop", "matched": "."}
    assert not r["text"].endswith(".")
    r = rt.generate(prompt, max_new_tokens=3, temperature=0, ignore_eos=True)
    assert r["meta_info"]["finish_reason"] == {"type": "length", "length": 3}
    # Stars: the stream never shows half a character, and its pieces join to the full text.
    prompt = chat(rt, QUESTION)
    chunks = [c["text"] for c in rt.generate(prompt, max_new_tokens=40, regex=re.escape(TARGET), stream=True)]
    assert chunks[-1] == TARGET and "\ufffd" not in "".join(chunks)
    stopped = rt.generate(prompt, max_new_tokens=40, regex=re.escape(TARGET), stop="\n\n🌟")
    assert stopped["text"] == "🌟🌟"


def _dsl_program(sgl: Any, prompt: str, params: dict[str, Any]) -> Any:
    @sgl.function
    def stars(s: Any) -> None:
        s += prompt
        s += sgl.gen("x", max_tokens=40, temperature=0, **params)

    return stars


DSL_CASES = {
    "emoji-cjk": {"regex": re.escape(TARGET)},
    "multi-token-stop": {"regex": re.escape(TARGET), "stop": "\n\n🌟"},
}


@pytest.mark.parametrize("case", list(DSL_CASES))
def test_dsl_stream_on_rt_backend_and_through_runtime_endpoint(
    rt: Any, server: ServerThread, case: str
) -> None:
    """state.text_iter on rt.backend and on sgnb serve + SGLang's RuntimeEndpoint: no U+FFFD
    pieces, and the variable holds what SGLang's server would stream (the oracle)."""
    import sglang as sgl
    from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

    params = DSL_CASES[case]
    prompt = chat(rt, QUESTION)
    ref = rt.generate(prompt, max_new_tokens=40, temperature=0, **params)
    want = oracle(rt, prompt, ref, {"max_new_tokens": 40, **params}, stream=True).text
    program = _dsl_program(sgl, prompt, params)
    for backend in (rt.backend, RuntimeEndpoint(server.url)):
        state = program.run(stream=True, backend=backend)
        pieces = list(state.text_iter("x"))
        assert not any("\ufffd" in p for p in pieces), pieces
        assert "".join(pieces) == state["x"] == want
        assert program.run(backend=backend)["x"] == ref["text"]
    assert_idle_balanced(rt)


def test_server_stream_matches_in_process(rt: Any, server: ServerThread) -> None:
    """/generate's stream is the runtime's stream, chunk for chunk (no second hold-back rule)."""
    prompt = chat(rt, QUESTION)
    params = {"max_new_tokens": 40, "temperature": 0, "regex": re.escape(TARGET), "stop": "\n\n🌟"}
    local = [c["text"] for c in rt.generate(prompt, dict(params), stream=True)]
    body = {"text": prompt, "sampling_params": params, "stream": True}
    with (
        httpx.Client(base_url=server.url, timeout=120) as http,
        http.stream("POST", "/generate", json=body) as res,
    ):
        events = [line[6:] for line in res.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert [json.loads(e)["text"] for e in events[:-1]] == local


# ---- the pieces against SGLang's own functions -------------------------------------------------


def test_trim_matched_stop_is_sglangs() -> None:
    from sglang.srt.managers.detokenizer_manager import DetokenizerManager

    dm = object.__new__(DetokenizerManager)
    dm.is_tool_call_parser_gpt_oss, dm.tool_close_token_ids = False, set()
    cases: list[tuple[Any, Any]] = [
        ("Paris. Done", {"type": "stop", "matched": "."}),
        ("no match", {"type": "stop", "matched": "xyz"}),
        ("a.b.c", {"type": "stop", "matched": "."}),
        ([5, 6, 30], {"type": "stop", "matched": 30}),
        ([5, 6, 2], {"type": "stop", "matched": 2}),
        ("text", {"type": "length", "length": 4}),
        ("text", {"type": "abort", "message": "Aborted"}),
        ("text", None),
        ("text", {"type": "stop", "matched": ""}),
    ]
    for output, reason in cases:
        for keep in (False, True):
            assert trim_matched_stop(output, reason, keep) == dm.trim_matched_stop(output, reason, keep)


def test_find_printable_text_and_regex_len_are_sglangs() -> None:
    from sglang.srt.sampling.sampling_params import get_max_seq_length
    from sglang.utils import find_printable_text as theirs

    for text in ["", "abc", "ab c", "ab c\ufffd", "你好\ufffd", "你", "a\n", "x 你\ufffd", " \ufffd"]:
        assert find_printable_text(text) == theirs(text)
    for pattern in ["abc", "a|bcd", "(ab)+", "a{2,5}", r"\d+\.", "[a-z]{3}", "^end$", "x*"]:
        assert regex_max_len(pattern) == get_max_seq_length(pattern)

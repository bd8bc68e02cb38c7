"""Bad input fails fast: a ValueError naming the problem, raised before any compute, and the
runtime serves the next request exactly as before."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import assert_idle_balanced, chat, cold

import sgnb
from sgnb.core.events import EventLog
from sgnb.core.grammar import GrammarError
from sgnb.core.models import ModelNotFoundError

PROMPT_TEXT = "What is the capital of France?"


@pytest.fixture(scope="module")
def reference(rt: Any) -> dict[str, Any]:
    return cold(rt, chat(rt, PROMPT_TEXT), max_new_tokens=4, temperature=0)


@pytest.fixture
def no_compute(rt: Any, reference: dict[str, Any]) -> Iterator[EventLog]:
    """Asserts that the test ran no forward pass and finished no request, then that the runtime
    still answers the reference request with the same tokens."""
    rt.flush_cache()
    steps = rt.scheduler.steps
    state = rt.cache_state()
    log = EventLog(rt.hub)
    yield log
    assert log.unsubscribe is not None
    log.unsubscribe()
    assert rt.scheduler.steps == steps, "bad input reached the model"
    assert log.events == [], f"bad input produced events: {log.events}"
    assert rt.cache_state() == state
    after = cold(rt, chat(rt, PROMPT_TEXT), max_new_tokens=4, temperature=0)
    assert after["output_ids"] == reference["output_ids"]
    assert_idle_balanced(rt)


BAD_REQUESTS = [
    ({"regex": "(unclosed"}, GrammarError, "invalid regex.*parenthesis"),
    ({"regex": "[z-a]"}, GrammarError, "invalid regex"),
    ({"json_schema": "{not json"}, ValueError, "json_schema is not valid JSON"),
    ({"json_schema": {"type": "strange"}}, GrammarError, 'invalid json_schema.*Unsupported type "strange"'),
    ({"ebnf": "root ::= "}, GrammarError, "invalid ebnf"),
    ({"ebnf": 'start ::= "a"'}, GrammarError, "invalid ebnf.*root"),
    ({"regex": "a", "ebnf": 'root ::= "a"'}, ValueError, "Only one of json_schema, regex, ebnf"),
    ({"bogus_param": 1}, ValueError, "unknown sampling parameter 'bogus_param'"),
    ({"max_new_tokens": -5}, ValueError, "max_new_tokens must be at least 0"),
    ({"temperature": -1}, ValueError, "temperature"),
    ({"top_p": "high"}, ValueError, "top_p"),
    ({"stop": 7}, ValueError, "stop must be"),
    # Out-of-range stop tokens used to pass validation and fail the whole running batch in
    # the sampler (IndexError when min_new_tokens bans them).
    ({"stop_token_ids": [10**9], "min_new_tokens": 2}, ValueError, "stop_token_ids must be in"),
    ({"stop_token_ids": [-1], "min_new_tokens": 1}, ValueError, "stop_token_ids must be in"),
]


@pytest.mark.parametrize(
    ("params", "error", "message"), BAD_REQUESTS, ids=[str(i) for i in range(len(BAD_REQUESTS))]
)
def test_bad_sampling_params(
    rt: Any, no_compute: EventLog, params: dict[str, Any], error: type, message: str
) -> None:
    assert issubclass(error, ValueError)
    with pytest.raises(error, match=message):
        rt.generate(chat(rt, PROMPT_TEXT), {"max_new_tokens": 8, **params})


@pytest.mark.parametrize("params", [{"regex": "[a-"}, {"regex": "(unclosed"}, {"ebnf": "root ::= "}])
def test_grammar_errors_are_one_clean_line(rt: Any, no_compute: EventLog, params: dict[str, Any]) -> None:
    """xgrammar's C++ log prefix ("[00:24:07] /project/cpp/regex_converter.cc:83: ") is stripped
    where GrammarError is made, so the Python API (not just the magics) gives one clean line;
    SGLang's XGrammarGrammarBackend.dispatch_regex/_from_context reports the parser message."""
    with pytest.raises(GrammarError) as info:
        rt.generate("hi", {"max_new_tokens": 4, **params})
    message = str(info.value)
    assert "\n" not in message and ".cc:" not in message and not re.search(r"\[\d+:\d+:\d+\]", message)
    assert message.startswith(f"invalid {next(iter(params))}: ")


def test_empty_prompt(rt: Any, no_compute: EventLog) -> None:
    with pytest.raises(ValueError, match="empty"):
        rt.generate("", max_new_tokens=4)
    with pytest.raises(ValueError, match="empty"):
        rt.generate(input_ids=[], max_new_tokens=4)


def test_sampling_params_that_are_not_a_dict(rt: Any, no_compute: EventLog) -> None:
    """A dict, or for a batch a list of one dict per prompt (``Engine.generate``,
    ``GenerateReqInput._normalize_sampling_params``); anything else is one line, before any compute."""
    with pytest.raises(ValueError, match=r"sampling_params must be a dict, or a list of dicts .*got str"):
        rt.generate("a", "max_new_tokens=2")
    with pytest.raises(ValueError, match="needs a batch"):
        rt.generate("a", [{"max_new_tokens": 2}])
    with pytest.raises(ValueError, match="has 1 dicts for 2 prompts"):
        rt.generate(["a", "b"], [{"max_new_tokens": 2}])
    with pytest.raises(ValueError, match="The parallel_sample_num should be the same"):
        rt.generate(["a", "b"], [{"n": 2}, {"n": 1}])


def test_prompt_and_input_ids_are_exclusive(rt: Any, no_compute: EventLog) -> None:
    with pytest.raises(ValueError, match="exactly one"):
        rt.generate("hi", input_ids=[1, 2], max_new_tokens=4)
    with pytest.raises(ValueError, match="exactly one"):
        rt.generate(max_new_tokens=4)


def test_bad_prompt_types_and_ids(rt: Any, no_compute: EventLog) -> None:
    with pytest.raises(ValueError, match="prompt must be a string"):
        rt.generate(123, max_new_tokens=4)
    with pytest.raises(ValueError, match="input_ids must be in"):
        rt.generate(input_ids=[1, rt.model.vocab_size], max_new_tokens=4)
    with pytest.raises(ValueError, match="input_ids must be in"):
        rt.generate(input_ids=[-1], max_new_tokens=4)


def test_prompt_longer_than_context(rt: Any, no_compute: EventLog) -> None:
    """SGLang's message (TokenizerManager._validate_one_request)."""
    n = rt.context_length
    with pytest.raises(
        ValueError,
        match=rf"The input \({n} tokens\) is longer than the model's context length \({n} tokens\)",
    ):
        rt.generate(input_ids=[42] * n, max_new_tokens=4)
    with pytest.raises(ValueError, match="context length"):
        rt.generate("word " * (n + 10), max_new_tokens=4)


def test_context_length_option(make_runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lengths as SGLang judges them: TokenizerManager._validate_one_request, then the scheduler's
    init_req_max_new_tokens (max_req_len = min(context, pool) - 1) and validate_input_length."""
    small = make_runtime(context_length=48, max_total_tokens=64)
    assert small.context_length == 48 and small.options["context_length"] == 48
    steps = small.scheduler.steps
    with pytest.raises(
        ValueError, match="The input \\(50 tokens\\) is longer than the model's context length"
    ):
        small.generate(input_ids=list(range(100, 150)), max_new_tokens=4)
    with pytest.raises(
        ValueError, match="a total of 90 tokens: 40 tokens from the input messages and 50 tokens"
    ):
        small.generate(input_ids=list(range(100, 140)), max_new_tokens=50)
    with pytest.raises(
        ValueError, match=r"Input length \(43 tokens\) exceeds the maximum allowed length \(42 tokens\)"
    ):
        small.generate(input_ids=list(range(100, 143)))
    assert small.scheduler.steps == steps
    # Without max_new_tokens (or with None) the scheduler clamps it to what the context leaves:
    # max_req_len (47) - prompt (40) - 1.
    for params in ({}, {"max_new_tokens": None}):
        r = small.generate(input_ids=list(range(100, 140)), temperature=0, ignore_eos=True, **params)
        assert r["meta_info"]["finish_reason"] == {"type": "length", "length": 6}
    # With a context longer than the KV pool (64 tokens), the pool bounds max_req_len instead.
    monkeypatch.setattr(small, "context_length", 1000)
    r = small.generate(input_ids=list(range(100, 140)), max_new_tokens=30, temperature=0, ignore_eos=True)
    assert r["meta_info"]["finish_reason"] == {"type": "length", "length": 22}
    assert_idle_balanced(small)


def test_score_bad_input(rt: Any, no_compute: EventLog) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        rt.score([], [1])
    with pytest.raises(ValueError, match="non-empty"):
        rt.score([1], [])
    with pytest.raises(ValueError, match="too long"):
        rt.score([5] * rt.context_length, [6])


def test_model_path_that_does_not_exist() -> None:
    with pytest.raises(ValueError, match="/nonexistent/x") as info:
        sgnb.start(model="/nonexistent/x")
    assert isinstance(info.value, ModelNotFoundError)
    assert "does not exist" in str(info.value)


def test_model_folder_without_config(tmp_path: Any) -> None:
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        sgnb.start(model=str(tmp_path))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"runtime": "nope"}, "unknown runtime 'nope'"),
        ({"max_total_tokens": 4}, "max_total_tokens"),
        ({"page_size": 0}, "page_size"),
        ({"dtype": "float8"}, "unknown dtype"),
        ({"threads": 0}, "threads"),
    ],
)
def test_bad_start_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sgnb.start(**options)


def test_errors_do_not_disturb_a_running_request(rt: Any) -> None:
    """Bad requests arriving while another request decodes are refused; the good one is unharmed."""
    prompt = chat(rt, "Write three sentences about rivers.")
    ref = cold(rt, prompt, max_new_tokens=24, temperature=0)
    rt.flush_cache()
    stream = rt.generate(prompt, max_new_tokens=24, temperature=0, stream=True)
    first = next(stream)
    for params in ({"regex": "("}, {"max_new_tokens": -1}, {"json_schema": "{"}):
        with pytest.raises(ValueError):
            rt.generate("hello", params)
    chunks = [first, *stream]
    assert chunks[-1]["output_ids"] == ref["output_ids"]
    assert_idle_balanced(rt)

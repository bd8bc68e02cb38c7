"""SGLang frontend programs on sgnb's backend over the local runtime (the DSL's own interpreter)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import sglang as sgl
from sglang.lang.choices import (
    greedy_token_selection,
    token_length_normalized,
    unconditional_likelihood_normalized,
)

import sgnb
from sgnb.runtimes.backend import SgnbBackend


@pytest.fixture(scope="module")
def backend() -> Iterator[SgnbBackend]:
    rt = sgnb.start()
    sgl.set_default_backend(rt.backend)
    yield rt.backend
    sgl.set_default_backend(None)
    rt.stop()


def test_chat_template_comes_from_the_tokenizer(backend: SgnbBackend) -> None:
    # SGLang's path matcher does not know SmolLM2 and would pick USER:/ASSISTANT:
    assert backend.chat_template.name in ("smollm2", "chatml")


def test_gen_chat_roles_and_cache_hits(backend: SgnbBackend) -> None:
    @sgl.function
    def qa(s: Any, q: str) -> None:
        s += sgl.system("You are a concise assistant.")
        s += sgl.user(q)
        s += sgl.assistant(sgl.gen("answer", max_tokens=16, temperature=0))

    first = qa.run(q="What is the capital of France?")
    assert "Paris" in first["answer"]  # run() returns at once; this waits for the program to finish
    second = qa.run(q="What is the capital of Italy?")
    assert [m["role"] for m in first.messages()] == ["system", "user", "assistant"]
    assert second.get_meta_info("answer")["cached_tokens"] > 10  # the shared system prompt


def test_multi_turn_reuses_previous_turns(backend: SgnbBackend) -> None:
    @sgl.function
    def chat(s: Any) -> None:
        s += sgl.user("Name a fruit.")
        s += sgl.assistant(sgl.gen("t1", max_tokens=12, temperature=0))
        s += sgl.user("Name another one.")
        s += sgl.assistant(sgl.gen("t2", max_tokens=12, temperature=0))

    state = chat.run()
    meta = state.get_meta_info("t2")
    assert meta["cached_tokens"] >= meta["prompt_tokens"] - 16  # all but the new user turn


def test_gen_stop_and_max_tokens(backend: SgnbBackend) -> None:
    @sgl.function
    def p(s: Any) -> None:
        s += "List: apples, pears," + sgl.gen("rest", max_tokens=30, stop=",", temperature=0)
        s += " Count to five: 1 2" + sgl.gen("count", max_tokens=3, temperature=0)

    state = p.run()
    assert "," not in state["rest"]
    assert state.get_meta_info("count")["completion_tokens"] == 3


def test_gen_regex_json_schema_and_dtypes(backend: SgnbBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }

    @sgl.function
    def p(s: Any) -> None:
        s += "Phone number: " + sgl.gen("phone", regex=r"\d{3}-\d{4}", temperature=0)
        s += "\nA person as JSON: " + sgl.gen(
            "person", max_tokens=48, json_schema=json.dumps(schema), temperature=0
        )
        s += "\nHow many legs does a spider have? " + sgl.gen("legs", max_tokens=8, dtype=int, temperature=0)
        s += "\nPi is about " + sgl.gen("pi", max_tokens=8, dtype=float, temperature=0)

    state = p.run()
    assert re.fullmatch(r"\d{3}-\d{4}", state["phone"])
    person = json.loads(state["person"])
    assert set(person) == {"name", "age"} and isinstance(person["age"], int)
    assert re.fullmatch(r"-?\d+", state["legs"].strip())
    float(state["pi"])


@pytest.mark.parametrize(
    "method", [token_length_normalized, greedy_token_selection, unconditional_likelihood_normalized]
)
def test_select_each_method(backend: SgnbBackend, method: Any) -> None:
    @sgl.function
    def p(s: Any) -> None:
        s += "The capital of France is" + sgl.select(
            "city", choices=[" Paris", " London", " a banana"], choices_method=method
        )

    state = p.run()
    assert state["city"] == " Paris"
    meta = state.get_meta_info("city")
    assert len(meta["normalized_prompt_logprobs"]) == 3
    assert all(lp is None or lp <= 0 for tl in meta["input_token_logprobs"] for lp, _, _ in tl)
    if method is unconditional_likelihood_normalized:
        assert "unconditional_token_logprobs" in meta


def test_select_matches_direct_scoring(backend: SgnbBackend) -> None:
    """token_length_normalized picks the choice with the best mean logprob, computed independently."""
    rt = backend.runtime
    text = "Water freezes at zero degrees"
    choices = [" Celsius", " Fahrenheit"]
    means = []
    for c in choices:
        prefix = rt.tokenizer.encode(text, add_special_tokens=False)
        cont = rt.tokenizer.encode(text + c, add_special_tokens=False)[len(prefix) :]
        lps = rt.score(prefix, cont)
        means.append(sum(lps) / len(lps))

    @sgl.function
    def p(s: Any) -> None:
        s += text + sgl.select("unit", choices=choices)

    state = p.run()
    assert state["unit"] == choices[means.index(max(means))]
    assert state.get_meta_info("unit")["normalized_prompt_logprobs"] == pytest.approx(means, abs=1e-4)


def test_fork_join(backend: SgnbBackend) -> None:
    @sgl.function
    def p(s: Any) -> None:
        s += "Three colours: red, green and blue.\n"
        forks = s.fork(2)
        for i, f in enumerate(forks):
            f += f"Colour number {i + 1} is" + sgl.gen("c", max_tokens=4, temperature=0)
        forks.join()
        s += "Summary:" + forks[0]["c"] + forks[1]["c"]

    state = p.run()
    assert state.text().startswith("Three colours")
    assert "Summary:" in state.text()


def test_run_batch_with_progress_bar(backend: SgnbBackend, capsys: pytest.CaptureFixture[str]) -> None:
    @sgl.function
    def p(s: Any, n: int) -> None:
        s += f"{n} plus {n} equals" + sgl.gen("sum", max_tokens=4, temperature=0)

    states = p.run_batch([{"n": i} for i in range(6)], progress_bar=True, num_threads=6)
    assert len(states) == 6 and all(isinstance(st["sum"], str) for st in states)
    assert "6/6" in capsys.readouterr().err  # tqdm's bar


def test_streaming(backend: SgnbBackend) -> None:
    @sgl.function
    def p(s: Any) -> None:
        s += "Once upon a time" + sgl.gen("story", max_tokens=12, temperature=0, ignore_eos=True)

    state = p.run(stream=True)
    pieces = list(state.text_iter("story"))
    assert len(pieces) >= 2
    assert "".join(pieces) == state["story"]
    assert state.get_meta_info("story")["completion_tokens"] == 12


def test_concurrent_programs_share_one_backend(backend: SgnbBackend) -> None:
    @sgl.function
    def p(s: Any, i: int) -> None:
        s += f"Item {i}:" + sgl.gen("x", max_tokens=6, temperature=0)

    one_by_one = [p.run(i=i)["x"] for i in range(8)]
    batched = [st["x"] for st in p.run_batch([{"i": i} for i in range(8)], num_threads=8)]
    assert batched == one_by_one
    state = backend.runtime.cache_state()
    assert state["protected"] == 0 and state["used"] + state["free"] == state["capacity"]

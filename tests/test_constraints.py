"""Constrained decoding (xgrammar): every output matches its regex, JSON schema or EBNF grammar,
greedy and sampled alike, and ends because the grammar is complete (finish_reason "stop")."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema
import pytest
from conftest import assert_idle_balanced, chat, cold
from pydantic import BaseModel, Field

SEEDS = (1, 2, 3)


class City(BaseModel):
    name: str = Field(min_length=1, max_length=16)
    country: Literal["France", "Germany", "Italy", "Spain", "Japan", "Other"]
    population_millions: int = Field(ge=0, le=99)
    capital: bool


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}
ANSWER = {
    "type": "object",
    "properties": {
        "answer": {"enum": ["yes", "no", "unsure"]},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3},
    },
    "required": ["answer", "tags"],
    "additionalProperties": False,
}

# xgrammar EBNF: a sum or a product of two small numbers, then "=" and a result.
ARITH_EBNF = r"""
root ::= expr " = " number
expr ::= number " " op " " number
op ::= "+" | "-" | "*"
number ::= [1-9] | [1-9] [0-9] | [1-9] [0-9] [0-9]
"""
ARITH_RE = r"[1-9][0-9]{0,2} [+\-*] [1-9][0-9]{0,2} = [1-9][0-9]{0,2}"

# A recursive grammar (no regex can say "balanced"): a short list of nested lists of digits.
NESTED_EBNF = r"""
root ::= list
list ::= "[" (item ("," item)?)? "]"
item ::= [0-9] | list
"""


def parse_nested(text: str) -> bool:
    """A recursive-descent check of NESTED_EBNF."""
    pos = 0

    def lst() -> bool:
        nonlocal pos
        if pos >= len(text) or text[pos] != "[":
            return False
        pos += 1
        if pos < len(text) and text[pos] == "]":
            pos += 1
            return True
        if not item():
            return False
        if pos < len(text) and text[pos] == ",":
            pos += 1
            if not item():
                return False
        if pos >= len(text) or text[pos] != "]":
            return False
        pos += 1
        return True

    def item() -> bool:
        nonlocal pos
        if pos < len(text) and text[pos].isdigit():
            pos += 1
            return True
        return lst()

    return lst() and pos == len(text)


def json_checker(schema: dict[str, Any]) -> Callable[[str], bool]:
    def check(text: str) -> bool:
        jsonschema.validate(json.loads(text), schema)
        return True

    return check


def regex_checker(pattern: str) -> Callable[[str], bool]:
    return lambda text: re.fullmatch(pattern, text) is not None


@dataclass
class Case:
    name: str
    kind: str  # regex | json_schema | ebnf
    spec: Any
    check: Callable[[str], bool]
    question: str
    max_new_tokens: int = 48


PHONE = r"\(\d{3}\) \d{3}-\d{4}"
DATE = r"(19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])"
EMAIL = r"[a-z]{2,10}\.[a-z]{2,10}@[a-z]{3,8}\.(com|org|net)"
SENTENCE = r"(Yes|No), the [a-z]{2,10} is [a-z]{2,12}\."

# JSON whitespace is unbounded, as in SGLang by default (xgrammar any_whitespace=True and no
# max_whitespace_cnt): at temperature 1, a plain "as JSON" prompt let 2 of 48 samples run into
# endless newlines. Asking for compact JSON (0 of 48 measured, longest 41 tokens) keeps the
# claim "every output is complete and valid" testable within max_new_tokens.
PERSON_Q = 'Describe a person as compact JSON on one line, like {"name":"Ann","age":31}.'
ANSWER_Q = (
    'Is water wet? Answer as compact JSON on one line, like {"answer":"yes","confidence":0.9,"tags":["a"]}.'
)
CITY_Q = (
    "Describe Paris as compact JSON on one line, like "
    '{"name":"Rome","country":"Italy","population_millions":3,"capital":true}.'
)

CASES = [
    Case("phone", "regex", PHONE, regex_checker(PHONE), "Give me a US phone number."),
    Case("date", "regex", DATE, regex_checker(DATE), "When did the first moon landing happen?"),
    Case("email", "regex", EMAIL, regex_checker(EMAIL), "Make up an email address for John Smith."),
    Case("sentence", "regex", SENTENCE, regex_checker(SENTENCE), "Is the sky blue?"),
    Case("person", "json_schema", PERSON, json_checker(PERSON), PERSON_Q, 96),
    Case("answer", "json_schema", ANSWER, json_checker(ANSWER), ANSWER_Q, 96),
    Case(
        "city_pydantic",
        "json_schema",
        City.model_json_schema(),
        json_checker(City.model_json_schema()),
        CITY_Q,
        96,
    ),
    Case("arith_ebnf", "ebnf", ARITH_EBNF, regex_checker(ARITH_RE), "What is 12 + 30?", 24),
    Case("nested_ebnf", "ebnf", NESTED_EBNF, parse_nested, "Write a small nested list.", 32),
]


@pytest.fixture(scope="module")
def outputs(rt: Any) -> dict[str, list[dict[str, Any]]]:
    """Every case greedy and at temperature 1 with a few seeds, all submitted at once (batched)."""
    jobs: list[tuple[str, dict[str, Any], str]] = []
    for case in CASES:
        spec = json.dumps(case.spec) if case.kind == "json_schema" else case.spec
        base = {case.kind: spec, "max_new_tokens": case.max_new_tokens}
        prompt = chat(rt, case.question)
        jobs.append((case.name, {**base, "temperature": 0}, prompt))
        for seed in SEEDS:
            jobs.append((case.name, {**base, "temperature": 1.0, "sampling_seed": seed}, prompt))
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(lambda job: rt.generate(job[2], dict(job[1])), jobs))
    out: dict[str, list[dict[str, Any]]] = {}
    for (name, params, _), result in zip(jobs, results, strict=True):
        out.setdefault(name, []).append({**result, "params": params})
    assert_idle_balanced(rt)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_output_matches(case: Case, outputs: dict[str, list[dict[str, Any]]]) -> None:
    results = outputs[case.name]
    assert len(results) == 1 + len(SEEDS)
    for r in results:
        label = (
            f"{case.name} {r['params'].get('temperature')}/{r['params'].get('sampling_seed')}: {r['text']!r}"
        )
        assert r["meta_info"]["finish_reason"]["type"] == "stop", f"{label} {r['meta_info']['finish_reason']}"
        assert r["meta_info"]["constraint"] == case.kind
        assert case.check(r["text"]), label


def test_sampling_explores_the_grammar(outputs: dict[str, list[dict[str, Any]]]) -> None:
    """At temperature 1, seeds give different valid outputs (the mask does not collapse sampling)."""
    distinct = sum(len({r["text"] for r in results}) > 1 for results in outputs.values())
    assert distinct >= len(CASES) // 2


def test_checkers_reject_wrong_text() -> None:
    """The checkers above can fail: they are not vacuous."""
    case = {c.name: c for c in CASES}
    assert not case["phone"].check("(555) 12-34567")
    assert not case["date"].check("2023-13-01")
    assert not case["arith_ebnf"].check("12 + 30 = ")
    assert not case["nested_ebnf"].check("[[1,2]")
    assert not case["nested_ebnf"].check("[1,2,3]")
    assert case["nested_ebnf"].check("[[1,[]],4]")
    with pytest.raises(jsonschema.ValidationError):
        case["person"].check('{"name": "Ann", "age": 200}')
    with pytest.raises(jsonschema.ValidationError):
        case["city_pydantic"].check(
            '{"name": "Paris", "country": "Mars", "population_millions": 2, "capital": true}'
        )


def test_constrained_greedy_is_reproducible(rt: Any) -> None:
    """Same constrained greedy request twice from an empty cache: the same JSON."""
    prompt = chat(rt, PERSON_Q)
    first = cold(rt, prompt, json_schema=PERSON, max_new_tokens=64, temperature=0)
    second = cold(rt, prompt, json_schema=PERSON, max_new_tokens=64, temperature=0)
    assert first["output_ids"] == second["output_ids"]
    jsonschema.validate(json.loads(first["text"]), PERSON)


def test_regex_output_that_needs_more_tokens_ends_by_length(rt: Any) -> None:
    """A grammar cut short by max_new_tokens reports "length", not "stop"."""
    r = rt.generate(chat(rt, "Count."), regex=r"[a-z]{40}", max_new_tokens=3, temperature=0)
    assert r["meta_info"]["finish_reason"]["type"] == "length"
    assert re.fullmatch(r"[a-z]*", r["text"])
    assert_idle_balanced(rt)

"""Hypothesis strategies for request bodies, derived from SGLang 0.5.23's own request classes.

Every field of ``io_struct.GenerateReqInput``, ``protocol.ChatCompletionRequest`` and
``protocol.CompletionRequest`` (and of the JSON contract's ``SamplingParams``) gets a strategy
from its type annotation, so a field SGLang adds is generated without editing this file. A few
fields get valid-ish values by name instead (prompts, token ids, grammars, tiny generation
lengths), so most bodies reach generation. ``corrupt`` damages a body for the reverse direction.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal, Union

from hypothesis import strategies as st
from pydantic import BaseModel

VOCAB = 49152  # SmolLM2's vocabulary
words = st.text(alphabet="abc xyz.!é🌟", min_size=1, max_size=6)
chars = st.characters(exclude_categories=("Cs",))  # JSON text: no lone surrogates
json_leaf = st.none() | st.booleans() | st.integers(-2, 3) | words
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(words, inner, max_size=2),
    max_leaves=4,
)


def from_type(tp: Any, depth: int = 0) -> st.SearchStrategy[Any]:
    """A strategy for JSON values of type ``tp`` (unions, optionals, literals, lists, dicts,
    pydantic models); types with no JSON form (bytes, tensors, internal classes) give nothing."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object:
        return json_leaf
    if origin is typing.Annotated:
        return from_type(args[0], depth)
    if origin in (Union, types.UnionType):
        return st.one_of(*[from_type(a, depth) for a in args])
    if tp is type(None):
        return st.none()
    if origin is Literal:
        return st.sampled_from(args)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-1, 3)
    if tp is float:
        return st.floats(-0.5, 2.5, allow_nan=False, allow_subnormal=False)
    if tp is str:
        return words
    if origin in (list, set, tuple) or tp in (list, set):
        inner = from_type(args[0], depth + 1) if args else json_leaf
        return st.lists(inner, max_size=2) if depth < 3 else st.just([])
    if origin is dict or tp is dict:
        value = from_type(args[1], depth + 1) if len(args) == 2 else json_leaf
        return st.dictionaries(words, value, max_size=2) if depth < 3 else st.just({})
    if isinstance(tp, type) and issubclass(tp, BaseModel) and depth < 3:
        return model_bodies(tp, depth + 1)
    return st.nothing()


def model_bodies(cls: type[BaseModel], depth: int = 0, overrides: dict[str, Any] | None = None) -> Any:
    """Bodies for a pydantic model: its required fields, and up to three optional ones."""
    overrides = overrides or {}
    strategies = {
        (f.alias or name): overrides.get(name, from_type(f.annotation, depth))
        for name, f in cls.model_fields.items()
    }
    required = {
        (f.alias or n): strategies[f.alias or n] for n, f in cls.model_fields.items() if f.is_required()
    }
    optional = {k: v for k, v in strategies.items() if k not in required and not v.is_empty}
    return _pick(required, optional, 3)


def _pick(required: dict[str, Any], optional: dict[str, Any], most: int) -> Any:
    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        body = {k: draw(v) for k, v in required.items()}
        for name in (
            draw(st.lists(st.sampled_from(sorted(optional)), max_size=most, unique=True)) if optional else []
        ):
            body[name] = draw(optional[name])
        return body

    return build()


# ---- /generate ---------------------------------------------------------------------------------

GRAMMARS = st.sampled_from(
    [
        {"regex": "[0-9]+"},
        {"regex": "(yes|no)"},
        {"json_schema": '{"type": "integer"}'},
        {"ebnf": 'root ::= "a" | "b"'},
        {"regex": "[ab]", "ebnf": 'root ::= "a"'},  # two constraints: SGLang refuses
        {},
        {},
        {},
    ]
)


def sampling_params() -> Any:
    """Sampling parameters over the JSON contract's fields (``sglang.api.v1.api_types.SamplingParams``)."""
    from sglang.api.v1 import api_types

    hints = typing.get_type_hints(api_types.SamplingParams)
    by_name = {
        "max_new_tokens": st.integers(0, 2),
        "min_new_tokens": st.integers(0, 2),
        "stop_token_ids": st.lists(st.integers(-1, VOCAB + 1), max_size=2),
        "top_k": st.sampled_from([-1, 0, 1, 5, 1 << 30]),
        "n": st.sampled_from([1, 1, 2]),
        "json_schema": st.just('{"type": "string", "maxLength": 3}'),
        "regex": st.sampled_from(["[0-9]+", "(a|b)"]),
        "ebnf": st.just('root ::= "x"'),
        "structural_tag": st.just("{}"),
        "sampling_seed": st.integers(-(2**63), 2**63 - 1),
        "logit_bias": st.dictionaries(st.sampled_from(["1", "7"]), st.floats(-5, 5), max_size=1),
        "choice": st.lists(words, max_size=2),
    }
    fields = {
        name: by_name.get(name, from_type(hints[name])) for name in api_types.SamplingParams.__struct_fields__
    }
    fields.pop("max_new_tokens")
    grammar = {"json_schema", "regex", "ebnf", "structural_tag"}
    optional = {k: v for k, v in fields.items() if k not in grammar and not v.is_empty}
    return st.builds(
        lambda base, g: {**base, **g},
        _pick({"max_new_tokens": by_name["max_new_tokens"]}, optional, 4),
        GRAMMARS,
    )


# Fields set by SGLang itself (never by a client) or whose types have no JSON form.
GENERATE_INTERNAL = {"http_worker_ipc", "received_time", "num_items_assigned", "positional_embed_overrides"}


def generate_bodies() -> Any:
    """``/generate`` bodies over ``GenerateReqInput``'s fields: one prompt or a batch, valid-ish
    sampling parameters, and up to four other fields with values their types allow."""
    from sglang.srt.managers.io_struct import GenerateReqInput

    hints = typing.get_type_hints(GenerateReqInput, include_extras=True)
    prompt_fields = {"text", "input_ids", "sampling_params", "rid"}
    optional = {
        f.name: from_type(hints[f.name])
        for f in dataclasses.fields(GenerateReqInput)
        if f.name not in prompt_fields | GENERATE_INTERNAL
    }
    optional = {k: v for k, v in optional.items() if not v.is_empty}
    optional["model"] = words  # what sglang-router adds
    optional["bogus_field"] = json_values  # SGLang ignores keys it does not know

    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        n = draw(st.sampled_from([None, None, None, 1, 2]))  # None: a single prompt
        prompts = [draw(st.text(chars, min_size=1, max_size=12)) for _ in range(n or 1)]
        body: dict[str, Any] = {}
        if draw(st.booleans()):
            body["text"] = prompts if n else prompts[0]
        else:
            ids = [draw(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=6)) for _ in range(n or 1)]
            body["input_ids"] = ids if n else ids[0]
        params = [draw(sampling_params()) for _ in range(n or 1)]
        body["sampling_params"] = params if n and draw(st.booleans()) else params[0]
        if draw(st.booleans()):
            body["rid"] = (
                [f"r{i}-{draw(words)}" for i in range(n)] if n and draw(st.booleans()) else draw(words)
            )
        for name in draw(st.lists(st.sampled_from(sorted(optional)), max_size=4, unique=True)):
            body[name] = draw(optional[name])
        return body

    return build()


# ---- OpenAI ------------------------------------------------------------------------------------


def _messages() -> Any:
    role = st.sampled_from(["system", "user", "assistant", "developer", "tool", "USER", "root"])
    text_part = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(chars, max_size=8)})
    other_part = st.sampled_from(
        [
            {"type": "image_url", "image_url": {"url": "http://example.com/a.png"}},
            {"type": "thinking", "thinking": "hmm"},
        ]
    )
    content = (
        st.text(chars, max_size=20)
        | st.lists(text_part, min_size=1, max_size=2)
        | st.lists(other_part, max_size=1)
    )
    message = st.fixed_dictionaries(
        {"role": role, "content": content}, optional={"name": words, "bogus": json_leaf}
    )
    return st.lists(message, min_size=0, max_size=3).filter(lambda ms: len(ms) > 0 or True)


OPENAI_BY_NAME: dict[str, Any] = {
    "max_tokens": st.integers(0, 2),
    "max_completion_tokens": st.sampled_from([None, 1, 2]),
    "n": st.sampled_from([1, 1, 2]),
    "top_k": st.sampled_from([None, -1, 0, 1, 5]),
    "stop_token_ids": st.lists(st.integers(-1, VOCAB + 1), max_size=2),
    "json_schema": st.just('{"type": "string", "maxLength": 3}'),
    "regex": st.sampled_from(["[0-9]+", "(a|b)"]),
    "ebnf": st.just('root ::= "x"'),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "input_ids": st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=6),
    "response_format": st.sampled_from(
        [
            {"type": "text"},
            {"type": "json_object"},
            {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "integer"}}},
            {"type": "json_schema"},
        ]
    ),
    "tool_choice": st.sampled_from(["auto", "none", "required"]),
    "chat_template_kwargs": st.sampled_from([{}, {"enable_thinking": False}, {"chat_template": "x"}]),
    "logit_bias": st.dictionaries(st.sampled_from(["1", "7"]), st.floats(-5, 5), max_size=1),
}


def chat_bodies() -> Any:
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest

    overrides = {**OPENAI_BY_NAME, "messages": _messages()}
    return st.builds(
        lambda body, extra, n: {**body, **extra, "max_tokens": n},
        model_bodies(ChatCompletionRequest, overrides=overrides),
        st.fixed_dictionaries({}, optional={"bogus_field": json_values, "model": words}),
        st.integers(0, 2),
    )


def completion_bodies() -> Any:
    from sglang.srt.entrypoints.openai.protocol import CompletionRequest

    prompt = (
        st.text(chars, max_size=12)
        | st.lists(st.text(chars, min_size=1, max_size=8), min_size=1, max_size=2)
        | st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=5)
        | st.lists(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=4), min_size=1, max_size=2)
    )
    overrides = {**OPENAI_BY_NAME, "prompt": prompt}
    return st.builds(
        lambda body, extra, n: {**body, **extra, "max_tokens": n},
        model_bodies(CompletionRequest, overrides=overrides),
        st.fixed_dictionaries({}, optional={"bogus_field": json_values}),
        st.integers(1, 2),
    )


@st.composite
def corrupt(draw: Any, bodies: Any) -> Any:
    """A body, two times in three damaged: a field given a value of another type, a required
    field dropped, a nested value junked, or the whole body replaced by a JSON value."""
    body = dict(draw(bodies))
    how = draw(st.sampled_from(["none", "junk", "junk", "drop", "nested", "whole"]))
    keys = sorted(body)
    if how == "junk" and keys:
        body[draw(st.sampled_from(keys))] = draw(json_values)
    elif how == "drop" and keys:
        body.pop(draw(st.sampled_from(keys)))
    elif how == "nested":
        inner = next((k for k in ("sampling_params", "messages", "response_format") if k in body), None)
        if isinstance(body.get(inner), dict):
            body[inner] = {
                **body[inner],
                draw(st.sampled_from([*body[inner], "temperature", "x"])): draw(json_values),
            }
        elif isinstance(body.get(inner), list) and body[inner]:
            body[inner] = [*body[inner][:-1], draw(json_values)]
    elif how == "whole":
        return draw(json_values)
    return json.loads(json.dumps(body))

"""Sampling parameters with SGLang's ``/generate`` names, checked before any compute.

:meth:`SamplingParams.verify` refuses what SGLang 0.5.23's ``SamplingParams.verify`` and
``normalize`` refuse (``sglang/srt/sampling/sampling_params.py``), with the same meaning in each
message; every sgnb entry point (``rt.generate``, the DSL backend, ``sgnb serve``) goes through it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any

TOP_K_ALL = 1 << 30
# SGLang's `random_seed` is a server flag; per request it is `sampling_seed`. `seed` is the
# OpenAI name. All three reach the same field.
_ALIASES = {"seed": "sampling_seed", "random_seed": "sampling_seed"}
# Below this a temperature is greedy, as in SGLang (dividing logits by ~0 overflows to inf/nan).
_SAMPLING_EPS = 1e-6
_INT_FIELDS = ("min_new_tokens", "top_k", "n")
# sampling_params.py: MAX_STOP_COUNT, MAX_STOP_REGEX_COUNT, MAX_STOP_REGEX_LEN
MAX_STOP_COUNT = 32
MAX_STOP_REGEX_COUNT = 32
MAX_STOP_REGEX_LEN = 256
_REAL_FIELDS = (
    "temperature",
    "top_p",
    "min_p",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
)


def _str_list(key: str, value: Any) -> list[Any]:
    if isinstance(value, str):
        return [value]
    try:
        return list(value)
    except TypeError:
        raise ValueError(f"{key} must be a string or a list of strings, got {value!r}") from None


def _int_list(key: str, value: Any) -> list[int]:
    try:
        return [int(t) for t in value]
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be a list of token ids, got {value!r}") from None


@dataclass
class SamplingParams:
    # None: no cap but the context length (SGLang's scheduler, init_req_max_new_tokens).
    max_new_tokens: int | None = 128
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    stop_regex: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    no_stop_trim: bool = False
    regex: str | None = None
    json_schema: str | None = None
    ebnf: str | None = None
    sampling_seed: int | None = None
    n: int = 1

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)} | set(_ALIASES)

    @classmethod
    def from_dict(cls, params: dict[str, Any] | None) -> SamplingParams:
        known = {f.name for f in dataclasses.fields(cls)}
        clean: dict[str, Any] = {}
        for key, value in (params or {}).items():
            name = _ALIASES.get(key, key)
            if name not in known:
                raise ValueError(f"unknown sampling parameter {key!r}; known: {', '.join(sorted(known))}")
            if value is not None or name == "max_new_tokens":  # other nulls mean "default", as SGLang
                clean[name] = value
        for key in ("regex", "json_schema", "ebnf"):
            if clean.get(key) == "":  # SGLang: an empty grammar means unset
                del clean[key]
        for key in ("stop", "stop_regex"):
            if key in clean:
                clean[key] = _str_list(key, clean[key])
        if "stop_token_ids" in clean:
            clean["stop_token_ids"] = _int_list("stop_token_ids", clean["stop_token_ids"])
        if isinstance(clean.get("json_schema"), dict):
            clean["json_schema"] = json.dumps(clean["json_schema"])
        sp = cls(**clean)
        sp.verify()
        return sp

    def verify(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        # Type checks first, so a wrong type is a ValueError naming the field, not a TypeError below.
        for name in _INT_FIELDS:
            value = getattr(self, name)
            need(isinstance(value, numbers.Integral), f"{name} must be an int, got {value!r}")
        for name in _REAL_FIELDS:
            value = getattr(self, name)
            need(
                isinstance(value, numbers.Real) and math.isfinite(value),
                f"{name} must be a finite number, got {value!r}",
            )
        need(
            self.sampling_seed is None or isinstance(self.sampling_seed, numbers.Integral),
            f"sampling_seed must be an int, got {self.sampling_seed!r}",
        )
        need(
            self.max_new_tokens is None or isinstance(self.max_new_tokens, numbers.Integral),
            f"max_new_tokens must be an int, got {self.max_new_tokens!r}",
        )
        need(
            self.min_new_tokens >= 0,
            f"min_new_tokens must be in [0, max_new_tokens], got {self.min_new_tokens}",
        )
        if self.max_new_tokens is not None:
            need(self.max_new_tokens >= 0, f"max_new_tokens must be at least 0, got {self.max_new_tokens}")
            need(
                self.min_new_tokens <= self.max_new_tokens,
                f"min_new_tokens must be in [0, max_new_tokens({self.max_new_tokens})], got {self.min_new_tokens}",
            )
        need(
            self.sampling_seed is None or -(2**63) <= self.sampling_seed <= 2**63 - 1,
            f"sampling_seed must be in [-2**63, 2**63 - 1], got {self.sampling_seed}",
        )
        need(
            isinstance(self.temperature, int | float)
            and math.isfinite(self.temperature)
            and self.temperature >= 0,
            f"temperature must be a non-negative finite number, got {self.temperature!r}",
        )
        need(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p}")
        need(
            self.top_k == -1 or self.top_k >= 1, f"top_k must be -1 (disable) or at least 1, got {self.top_k}"
        )
        need(0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p}")
        need(
            -2.0 <= self.frequency_penalty <= 2.0,
            f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}",
        )
        need(
            -2.0 <= self.presence_penalty <= 2.0,
            f"presence_penalty must be in [-2, 2], got {self.presence_penalty}",
        )
        need(
            0.0 < self.repetition_penalty <= 2.0,
            f"repetition_penalty must be in (0, 2], got {self.repetition_penalty}",
        )
        need(all(isinstance(s, str) for s in self.stop), "stop must be a string or a list of strings")
        need(
            len(self.stop) <= MAX_STOP_COUNT,
            f"at most {MAX_STOP_COUNT} stop strings are allowed, got {len(self.stop)}",
        )
        need(
            len(self.stop_regex) <= MAX_STOP_REGEX_COUNT,
            f"at most {MAX_STOP_REGEX_COUNT} stop_regex patterns are allowed, got {len(self.stop_regex)}",
        )
        for pattern in self.stop_regex:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as exc:
                raise ValueError(f"invalid stop_regex {pattern!r}: {exc}") from None
            size = len(pattern.encode("utf-8"))
            need(
                size <= MAX_STOP_REGEX_LEN,
                f"stop_regex is {size} bytes, over the {MAX_STOP_REGEX_LEN}-byte limit",
            )
        constraints = [c for c in ("regex", "json_schema", "ebnf") if getattr(self, c) is not None]
        need(
            len(constraints) <= 1,
            f"Only one of json_schema, regex, ebnf, or structural_tag can be set, got {constraints}",
        )
        if self.json_schema is not None:
            try:
                json.loads(self.json_schema)
            except (TypeError, json.JSONDecodeError) as exc:
                raise ValueError(f"json_schema is not valid JSON: {exc}") from None

    @property
    def greedy(self) -> bool:
        return self.temperature < _SAMPLING_EPS or self.top_k == 1

    @property
    def constraint(self) -> tuple[str, str] | None:
        for kind in ("regex", "json_schema", "ebnf"):
            value = getattr(self, kind)
            if value is not None:
                return kind, value
        return None

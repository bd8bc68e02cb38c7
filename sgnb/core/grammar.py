"""Constrained decoding with xgrammar, SGLang's default grammar backend, and its replay.

A grammar (regex, JSON schema or EBNF) compiles once per tokenizer into a token-level
automaton; per step it yields a bitmask of allowed next tokens, applied to the logits
(SGLang: ``sglang/srt/constrained/xgrammar_backend.py``, ``XGrammarGrammar``).

The local runtime decodes with :class:`Grammar`; views and the token trace *replay* a finished
or streaming request through the same grammar (:class:`GrammarReplay`, :func:`replay`) to show
how many tokens it allowed at each step, for any runtime. So this module sits below both: it
imports no runtime and no view.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xgrammar as xgr

SHOW_ALLOWED = 8  # a replayed step lists the allowed tokens when there are at most this many

# xgrammar's C++ errors start with dmlc's log prefix "[HH:MM:SS] /path/to/file.cc:123: "; stripped
# here, where the error is made, so the API, the magics and HTTP all give the same clean line.
_CPP_PREFIX = re.compile(r"\[\d{1,2}:\d{2}:\d{2}\]\s+\S+\.(?:cc|cpp|h|hpp|cxx):\d+:\s*")


def clean_message(exc: BaseException) -> str:
    """The first non-empty line of ``exc``'s message without C++ log prefixes (or its type name)."""
    lines = [ln.strip() for ln in _CPP_PREFIX.sub("", str(exc)).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


class GrammarError(ValueError):
    """The regex, JSON schema or EBNF grammar does not compile."""


class GrammarCompiler:
    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        self.vocab_size = vocab_size
        self.info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(self.info, cache_enabled=True)
        self._lock = threading.Lock()

    def compile(self, kind: str, source: str) -> xgr.CompiledGrammar:
        try:
            with self._lock:
                if kind == "regex":
                    return self._compiler.compile_regex(source)
                if kind == "json_schema":
                    return self._compiler.compile_json_schema(source)
                if kind == "ebnf":
                    return self._compiler.compile_grammar(source)
        except Exception as exc:  # xgrammar raises RuntimeError with a parser message
            raise GrammarError(f"invalid {kind}: {clean_message(exc)}") from None
        raise GrammarError(f"unknown constraint kind {kind!r}")

    def matcher(self, compiled: xgr.CompiledGrammar) -> Grammar:
        return Grammar(xgr.GrammarMatcher(compiled), self.vocab_size)


def compiler_for(runtime: Any) -> GrammarCompiler:
    """The runtime's own compiler (sgnb's local runtime), else one built on its tokenizer.

    sglang.Engine and an HTTP server keep their grammar backend to themselves; a compiler over the
    same tokenizer replays the same automaton. ValueError when the tokenizer is not readable here.
    """
    compiler = getattr(runtime, "grammars", None)
    if isinstance(compiler, GrammarCompiler):
        return compiler
    tokenizer = getattr(runtime, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("this runtime's tokenizer is not readable here; cannot replay its grammar")
    return GrammarCompiler(tokenizer, len(tokenizer))


class Grammar:
    """One request's grammar state."""

    def __init__(self, matcher: xgr.GrammarMatcher, vocab_size: int) -> None:
        self.matcher = matcher
        self.vocab_size = vocab_size
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def fill(self) -> None:
        """Compute the next-token bitmask (what ``apply`` masks with) from the grammar's state."""
        self.matcher.fill_next_token_bitmask(self.bitmask)

    def apply(self, logits: torch.Tensor) -> None:
        """Mask ``logits`` ([vocab] or [1, vocab], in place) to the tokens the grammar allows."""
        self.fill()
        xgr.apply_token_bitmask_inplace(logits.view(1, -1), self.bitmask)

    # The replay's questions about the last filled mask; not on the decode path.

    def _bits(self) -> np.ndarray:
        return np.unpackbits(self.bitmask.numpy().view(np.uint8), bitorder="little")[: self.vocab_size]

    def allowed_count(self) -> int:
        """How many tokens of the vocabulary the last filled bitmask allows."""
        return int(self._bits().sum())

    def allowed_ids(self) -> list[int]:
        """The token ids the last filled bitmask allows, ascending."""
        return [int(i) for i in np.flatnonzero(self._bits())]

    def allows(self, ids: list[int]) -> list[bool]:
        """Whether the last filled bitmask allows each of ``ids``."""
        words = self.bitmask[0].tolist()
        return [bool((words[i >> 5] >> (i & 31)) & 1) for i in ids]

    def accept(self, token: int) -> bool:
        return bool(self.matcher.accept_token(token))

    def is_terminated(self) -> bool:
        return bool(self.matcher.is_terminated())


@dataclass
class Step:
    """One replayed output token: its id and text, how many tokens the grammar allowed before it,
    whether the grammar accepted it, and the allowed tokens' texts when at most ``SHOW_ALLOWED``."""

    id: int
    text: str
    allowed: int
    accepted: bool
    options: list[str]

    @property
    def forced(self) -> bool:
        """Exactly one token was allowed: the model had no choice (SGLang's jump-forward skips it)."""
        return self.allowed == 1


class GrammarReplay:
    """A finished or streaming request's output, fed token by token through its grammar.

    ``feed(token)`` returns how many tokens the grammar allowed at that step (before accepting
    ``token``), or None once the grammar has ended or rejected a token. ``runtime`` gives the
    compiler (:func:`compiler_for`); GrammarError if the constraint does not compile.
    """

    def __init__(self, runtime: Any, kind: str, source: str) -> None:
        compiler = compiler_for(runtime)
        self.grammar = compiler.matcher(compiler.compile(kind, source))
        self.ok = True

    def feed(self, token: int) -> int | None:
        step = self.step(token)
        return None if step is None else step[0]

    def step(self, token: int) -> tuple[int, bool, list[int]] | None:
        """(allowed count, accepted, allowed ids if at most ``SHOW_ALLOWED``) for ``token``, or None."""
        if not self.ok or self.grammar.is_terminated():
            return None
        self.grammar.fill()
        allowed = self.grammar.allowed_count()
        options = self.grammar.allowed_ids() if allowed <= SHOW_ALLOWED else []
        self.ok = self.grammar.accept(int(token))
        return allowed, self.ok, options


def replay(runtime: Any, kind: str, source: str, output_ids: list[int]) -> tuple[list[Step], bool]:
    """Run the grammar over ``output_ids``: the steps up to the end or the first rejected token,
    and whether the grammar terminated. ``runtime`` gives the compiler and the tokenizer."""
    grammar = GrammarReplay(runtime, kind, source)
    tokenizer = runtime.tokenizer
    steps: list[Step] = []
    for tok in output_ids:
        step = grammar.step(int(tok))
        if step is None:
            break
        allowed, accepted, options = step
        text = str(tokenizer.decode([int(tok)]))
        steps.append(Step(int(tok), text, allowed, accepted, [str(tokenizer.decode([i])) for i in options]))
    return steps, grammar.grammar.is_terminated()

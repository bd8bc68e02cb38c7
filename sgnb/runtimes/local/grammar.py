"""Constrained decoding with xgrammar, SGLang's default grammar backend.

A grammar (regex, JSON schema or EBNF) compiles once per tokenizer into a token-level
automaton; per step it yields a bitmask of allowed next tokens, applied to the logits.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
import xgrammar as xgr


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
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise GrammarError(f"invalid {kind}: {first}") from None
        raise GrammarError(f"unknown constraint kind {kind!r}")

    def matcher(self, compiled: xgr.CompiledGrammar) -> Grammar:
        return Grammar(xgr.GrammarMatcher(compiled), self.vocab_size)


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

    # The token view's questions about the last filled mask (sgnb.core.token_trace); not on the decode path.

    def allowed_count(self) -> int:
        """How many tokens of the vocabulary the last filled bitmask allows."""
        bits = np.unpackbits(self.bitmask.numpy().view(np.uint8), bitorder="little")[: self.vocab_size]
        return int(bits.sum())

    def allows(self, ids: list[int]) -> list[bool]:
        """Whether the last filled bitmask allows each of ``ids``."""
        words = self.bitmask[0].tolist()
        return [bool((words[i >> 5] >> (i & 31)) & 1) for i in ids]

    def accept(self, token: int) -> bool:
        return bool(self.matcher.accept_token(token))

    def is_terminated(self) -> bool:
        return bool(self.matcher.is_terminated())

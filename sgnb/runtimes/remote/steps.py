"""``TokenStep`` events from a traced request's stream: the token view grows live over a server.

A server gives no trace hook; what it streams is SGLang's ``meta_info`` with the logprobs so far
(``output_token_logprobs`` / ``output_top_logprobs``, cumulative: ``incremental_streaming_output``
is off by default). :class:`StreamSteps` turns each chunk's new entries into the steps of
:mod:`sgnb.core.token_trace` (``lp``, ``top``, ``ms`` from the chunk's arrival) and adds the allowed
count ``n`` by replaying the request's grammar over the tokens (:class:`sgnb.core.grammar.GrammarReplay`,
xgrammar as the server runs it), when the tokenizer is readable here. The unconstrained top-k
(``unc``) is not there: SGLang returns the masked distribution only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sgnb.core.events import TokenStep, constraint_of
from sgnb.core.grammar import GrammarReplay


class StreamSteps:
    """Steps of every sample (``index``) of one streamed request, published as their chunks arrive."""

    def __init__(self, runtime: Any, params: dict[str, Any], started: float) -> None:
        self.runtime = runtime
        self.kind, self.source = constraint_of(params)
        self._seen: dict[int, int] = {}  # index -> steps published
        self._last: dict[int, float] = {}
        self._replays: dict[int, GrammarReplay | None] = {}
        self._started = started

    def _replay(self, index: int) -> GrammarReplay | None:
        if index not in self._replays:
            replay = None
            if self.kind and self.source:
                try:
                    replay = GrammarReplay(self.runtime, self.kind, self.source)
                except ValueError:  # the tokenizer is not readable here: no allowed counts
                    replay = None
            self._replays[index] = replay
        return self._replays[index]

    def feed(self, chunk: dict[str, Any], prompt_ids: Callable[[int], list[int]]) -> list[TokenStep]:
        """The events for ``chunk``'s new tokens; ``prompt_ids(index)`` names a sample's prompt."""
        meta = chunk.get("meta_info") or {}
        entries = list(meta.get("output_token_logprobs") or [])
        tops = list(meta.get("output_top_logprobs") or [])
        index = int(chunk.get("index", 0))
        seen = self._seen.get(index, 0)
        if len(entries) <= seen:
            return []
        now = time.perf_counter()
        ms = (now - self._last.get(index, self._started)) * 1000 / (len(entries) - seen)
        self._last[index], self._seen[index] = now, len(entries)
        replay = self._replay(index)
        events = []
        for i in range(seen, len(entries)):
            lp, token = entries[i][0], int(entries[i][1])
            top = tops[i] if i < len(tops) and tops[i] else []
            step: dict[str, Any] = {"i": i, "id": token, "ms": ms, "lp": float(lp)}
            step["top"] = [[float(v), int(t)] for v, t, *_ in top]
            n = replay.feed(token) if replay is not None else None
            if n is not None:
                step["n"] = n
            first = i == 0
            events.append(
                TokenStep(
                    rid=str(meta.get("id", "")),
                    step=step,
                    prompt_ids=prompt_ids(index) if first else None,
                    cached_tokens=int(meta.get("cached_tokens", 0)),
                    constraint=self.kind if first else None,
                    constraint_source=self.source if first else None,
                )
            )
        return events

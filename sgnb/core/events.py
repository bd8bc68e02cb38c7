"""Events flow one way: runtime -> EventHub -> subscribers (tree mirror, widgets, stats).

The KV events have the shape of SGLang's own (``sglang.srt.disaggregation.kv_events``):
``BlockStored`` / ``BlockRemoved`` / ``AllBlocksCleared``, with one block per page and
position-aware chained block hashes, so one mirror serves the local runtime and a real
``sglang.Engine`` publishing over ZMQ alike.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class BlockStored:
    block_hashes: list[int]
    parent_block_hash: int | None
    token_ids: list[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = "GPU"


@dataclass
class BlockRemoved:
    block_hashes: list[int]
    medium: str | None = "GPU"


@dataclass
class AllBlocksCleared:
    pass


KVEvent = BlockStored | BlockRemoved | AllBlocksCleared


@dataclass
class RequestFinished:
    """One finished request, as the cache panel shows it."""

    rid: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    ttft: float
    e2e_latency: float
    finish_reason: dict[str, Any] | None
    constraint: str | None = None  # "regex" | "json_schema" | "ebnf"
    constraint_source: str | None = None  # the pattern, schema or grammar itself
    output_ids: list[int] = field(default_factory=list)
    prompt_ids: list[int] = field(default_factory=list)
    # return_logprob requests only: meta_info's *_logprobs keys, in SGLang's shapes (sgnb.core.logprobs)
    logprobs: dict[str, Any] | None = None
    # traced requests only (return_logprob, or a token view asked): per output token, what
    # meta_info does not carry (sgnb.core.token_trace.TokenTrace.steps)
    token_trace: list[dict[str, Any]] | None = None
    ts: float = field(default_factory=time.time)


@dataclass
class TokenStep:
    """One sampled token of a traced request, published as it is sampled: the token view's live feed.

    ``step`` is the wire dict of :class:`sgnb.core.token_trace.TokenTrace` (token, logprob, top-k, the
    grammar's allowed count and unconstrained top-k, latency). The first step of a request also
    carries its prompt ids and ``cached_tokens``.
    """

    rid: str
    step: dict[str, Any]
    prompt_ids: list[int] | None = None
    cached_tokens: int = 0
    constraint: str | None = None
    constraint_source: str | None = None
    ts: float = field(default_factory=time.time)


def constraint_of(params: dict[str, Any]) -> tuple[str | None, str | None]:
    """The (kind, source) of a request's constraint, from its sampling params."""
    for kind in ("regex", "json_schema", "ebnf"):
        value = params.get(kind)
        if value is not None:
            return kind, value if isinstance(value, str) else json.dumps(value)
    return None, None


def finished_from_result(
    out: dict[str, Any], prompt_ids: list[int], elapsed: float, params: dict[str, Any]
) -> RequestFinished:
    """A RequestFinished from an SGLang result (``{"text", "output_ids", "meta_info"}``).

    For runtimes whose engine reports in ``meta_info`` (sglang.Engine, an HTTP server); ``elapsed``
    stands in for a latency the result does not carry.
    """
    meta = out.get("meta_info", {})
    kind, source = constraint_of(params)
    return RequestFinished(
        rid=str(meta.get("id", "")),
        prompt_tokens=int(meta.get("prompt_tokens", len(prompt_ids))),
        cached_tokens=int(meta.get("cached_tokens", 0)),
        completion_tokens=int(meta.get("completion_tokens", 0)),
        ttft=float(meta.get("ttft", meta.get("e2e_latency", elapsed))),
        e2e_latency=float(meta.get("e2e_latency", elapsed)),
        finish_reason=meta.get("finish_reason"),
        constraint=kind,
        constraint_source=source,
        output_ids=list(out.get("output_ids") or []),
        prompt_ids=list(prompt_ids),
        logprobs={k: v for k, v in meta.items() if "logprobs" in k} or None,
    )


Event = BlockStored | BlockRemoved | AllBlocksCleared | RequestFinished | TokenStep


def block_hashes(token_ids: Sequence[int], parent_hash: int | None, page_size: int) -> list[int]:
    """Chained, position-aware hashes, one per page: a page's hash depends on every token before it.

    Like SGLang's (SHA-256 over the prior digest and the page's tokens, first 8 bytes as a
    signed int64), so a node split never changes a page's hash and needs no event.
    """
    hashes: list[int] = []
    prior = parent_hash
    for start in range(0, len(token_ids), page_size):
        digest = hashlib.sha256()
        if prior is not None:
            digest.update(prior.to_bytes(8, "little", signed=True))
        for tok in token_ids[start : start + page_size]:
            digest.update(int(tok).to_bytes(4, "little", signed=False))
        prior = int.from_bytes(digest.digest()[:8], "little", signed=True)
        hashes.append(prior)
    return hashes


Subscriber = Callable[[Event], None]


class EventHub:
    """A tiny synchronous pub/sub. Subscribers run on the publisher's thread and must be quick."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._lock = threading.Lock()

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        with self._lock:
            self._subscribers.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)

        return unsubscribe

    def publish(self, event: Event) -> None:
        with self._lock:
            subscribers = list(self._subscribers)
        for fn in subscribers:
            fn(event)


class EventLog:
    """Keeps every event it sees; handy in tests and for replaying into a widget."""

    def __init__(self, hub: EventHub | None = None) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()
        self.unsubscribe: Callable[[], None] | None = hub.subscribe(self.append) if hub else None

    def append(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of_type(self, kind: type) -> list[Any]:
        with self._lock:
            return [e for e in self.events if isinstance(e, kind)]

"""Events flow one way: runtime -> EventHub -> subscribers (tree mirror, widgets, stats).

They are the only seam between runtimes and views: a view reads events and nothing of a runtime's
insides. A subscriber that comes late asks the runtime to replay its tree (:class:`TreeSource`);
runtimes that only see a KV event stream keep a :class:`BlockLedger` of it to replay from.

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable


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
    # meta_info does not carry (the steps of sgnb.core.token_trace)
    token_trace: list[dict[str, Any]] | None = None
    ts: float = field(default_factory=time.time)


@dataclass
class TokenStep:
    """One sampled token of a traced request, published as it is sampled: the token view's live feed.

    ``step`` is the wire dict of :mod:`sgnb.core.token_trace` (token, logprob, top-k, the
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
T = TypeVar("T")


class Listeners(Generic[T]):
    """Callbacks on one stream of values. ``subscribe(fn)`` returns the unsubscribe; ``call(value)``
    runs every subscriber on the caller's thread (a copy of the list, so one may unsubscribe meanwhile).
    """

    def __init__(self) -> None:
        self._fns: list[Callable[[T], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, fn: Callable[[T], None]) -> Callable[[], None]:
        with self._lock:
            self._fns.append(fn)

        def unsubscribe() -> None:
            with self._lock:
                if fn in self._fns:
                    self._fns.remove(fn)

        return unsubscribe

    def call(self, value: T) -> None:
        with self._lock:
            fns = list(self._fns)
        for fn in fns:
            fn(value)


class EventHub(Listeners[Event]):
    """A tiny synchronous pub/sub. Subscribers run on the publisher's thread and must be quick."""

    def publish(self, event: Event) -> None:
        self.call(event)


@runtime_checkable
class TreeSource(Protocol):
    """What a late subscriber needs from a runtime: its hub, and the tree it holds now as events.

    ``replay_tree()`` is the current tree as ``BlockStored`` events, parents first.
    ``follow(fn)`` replays it to ``fn`` and subscribes ``fn`` to the hub with no event published
    in between, so ``fn`` neither misses a KV event nor sees one twice; it returns the unsubscribe.
    Every runtime offers both (``sgnb.runtimes``); a view takes a ``TreeSource`` or a bare hub.
    """

    hub: EventHub

    def replay_tree(self) -> list[KVEvent]: ...

    def follow(self, subscriber: Subscriber) -> Callable[[], None]: ...


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


def page_chunks(event: BlockStored) -> list[tuple[int, list[int]]]:
    """``(block hash, its tokens)`` per block of ``event``: ``block_size`` tokens each.

    An event that is not page-shaped (its tokens do not fill its blocks) is split evenly; a
    single-block event keeps all its tokens.
    """
    hashes = [int(h) for h in event.block_hashes]
    tokens = [int(t) for t in event.token_ids]
    if len(hashes) <= 1:
        return [(h, tokens) for h in hashes]
    size = int(event.block_size or 0)
    if size * (len(hashes) - 1) >= len(tokens) or size * len(hashes) < len(tokens):
        size = -(-len(tokens) // len(hashes))
    return [(h, tokens[i * size : (i + 1) * size]) for i, h in enumerate(hashes)]


def _page_shaped(event: BlockStored) -> bool:
    return len(event.token_ids) == event.block_size * len(event.block_hashes)


def coalesce(events: Iterable[KVEvent | None]) -> Iterator[KVEvent]:
    """Merge runs of chained, page-shaped ``BlockStored`` (SGLang sends one per token at page size 1).

    A 256-request batch made ~47k events on H100; publishing each one cost the kernel's GIL
    more than the requests themselves. Merged, a prompt is one event, as in SGLang's recorder.
    """
    pending: BlockStored | None = None
    for event in events:
        if event is None:
            continue
        if (
            isinstance(event, BlockStored)
            and pending is not None
            and (pending.block_size, pending.medium, pending.lora_id)
            == (event.block_size, event.medium, event.lora_id)
            and pending.block_hashes  # an empty one (never sent by SGLang) ends a run, not the subscriber
            and event.parent_block_hash == pending.block_hashes[-1]
            and _page_shaped(pending)
            and _page_shaped(event)
        ):
            pending.block_hashes.extend(event.block_hashes)
            pending.token_ids.extend(event.token_ids)
            continue
        if pending is not None:
            yield pending
            pending = None
        if isinstance(event, BlockStored):
            pending = event
        else:
            yield event
    if pending is not None:
        yield pending


@dataclass(slots=True)
class _Held:  # one per block: slots keep a large GPU cache's ledger small
    parent: int | None
    tokens: list[int]
    block_size: int
    media: list[str]
    lora_id: int | None


class BlockLedger:
    """The blocks a KV event stream has stored and not yet removed: what a late subscriber missed.

    ``apply`` each KV event as it is published; ``replay()`` hands the blocks back as
    ``BlockStored`` events, parents first (a parent is stored before its children and, in a radix
    tree, outlives them), chained runs merged. A subscriber that applies the replay and then the
    live stream holds the same tree as one that saw every event. One entry per block, per medium
    (SGLang's HiCache stores a block on GPU and host: ``BlockRemoved`` names the medium it leaves).
    """

    def __init__(self) -> None:
        self._blocks: dict[int, _Held] = {}

    def __len__(self) -> int:
        return len(self._blocks)

    def apply(self, event: Event) -> None:
        if isinstance(event, BlockStored):
            medium = event.medium or "GPU"
            parent = None if event.parent_block_hash is None else int(event.parent_block_hash)
            for h, tokens in page_chunks(event):
                held = self._blocks.get(h)
                if held is None:
                    self._blocks[h] = _Held(parent, tokens, event.block_size, [medium], event.lora_id)
                elif medium not in held.media:
                    held.media.append(medium)
                parent = h
        elif isinstance(event, BlockRemoved):
            medium = event.medium or "GPU"
            for h in map(int, event.block_hashes):
                held = self._blocks.get(h)
                if held is not None and medium in held.media:
                    held.media.remove(medium)
                    if not held.media:
                        del self._blocks[h]
        elif isinstance(event, AllBlocksCleared):
            self._blocks.clear()

    def replay(self) -> list[KVEvent]:
        def stored(h: int, held: _Held, medium: str) -> BlockStored:
            return BlockStored([h], held.parent, list(held.tokens), held.block_size, held.lora_id, medium)

        first = [stored(h, held, held.media[0]) for h, held in self._blocks.items()]
        more = [stored(h, held, m) for h, held in self._blocks.items() for m in held.media[1:]]
        return list(coalesce([*first, *more]))

"""Subscribe to an SGLang server's or Engine's KV events over ZMQ and republish them as sgnb events.

SGLang publishes each batch as three frames: topic, an 8-byte big-endian sequence number and a
msgpack ``KVEventBatch`` (``sglang/srt/disaggregation/kv_events.py``, ``ZmqEventPublisher``). A
subscriber that connects late misses what came before (ZMQ's "slow joiner"), so runtimes connect
this before their first request. :func:`convert` is sgnb's one adapter from SGLang's KV events:
past it, everything (the hub, the tree mirror) sees sgnb's own event types only.

The subscriber keeps a :class:`sgnb.core.events.BlockLedger` of what it republished, so a view opened
later can still be handed the whole tree (:class:`KVEventsTree`, the engine and remote runtimes'
``replay_tree`` / ``follow``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import zmq

from sgnb.core.events import (
    AllBlocksCleared,
    BlockLedger,
    BlockRemoved,
    BlockStored,
    EventHub,
    KVEvent,
    Subscriber,
)

# Positional field order of SGLang's tagged-array events (sglang <= 0.5.17 encodes events as
# ``["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, ...]``; later releases
# as tagged maps ``{"type": "BlockStored", ...}``). Decoding untyped reads both.
_FIELDS = {
    "BlockStored": ("block_hashes", "parent_block_hash", "token_ids", "block_size", "lora_id", "medium"),
    "BlockRemoved": ("block_hashes", "medium"),
    "AllBlocksCleared": (),
}


def _fields(raw: Any) -> tuple[str, dict[str, Any]] | None:
    if isinstance(raw, dict):
        return str(raw.get("type")), raw
    if isinstance(raw, list | tuple) and raw and isinstance(raw[0], str):
        names = _FIELDS.get(raw[0], ())
        return raw[0], dict(zip(names, raw[1:], strict=False))
    name = type(raw).__name__  # an already-decoded msgspec struct
    if name in _FIELDS:
        return name, {f: getattr(raw, f, None) for f in _FIELDS[name]}
    return None


def convert(raw: Any) -> KVEvent | None:
    """One SGLang event (tagged map, tagged array or struct) as the sgnb dataclass of the same shape."""
    parsed = _fields(raw)
    if parsed is None:
        return None
    name, f = parsed
    if name == "BlockStored":
        tokens = [int(t) if not isinstance(t, list | tuple) else int(t[0]) for t in f.get("token_ids") or []]
        return BlockStored(
            block_hashes=[int(h) for h in f.get("block_hashes") or []],
            parent_block_hash=f.get("parent_block_hash"),
            token_ids=tokens,
            block_size=int(f.get("block_size") or 1),
            lora_id=f.get("lora_id"),
            medium=f.get("medium"),
        )
    if name == "BlockRemoved":
        return BlockRemoved(
            block_hashes=[int(h) for h in f.get("block_hashes") or []], medium=f.get("medium")
        )
    if name == "AllBlocksCleared":
        return AllBlocksCleared()
    return None


def _stored_fields(raw: Any) -> tuple[Any, Any, Any, Any, Any, Any] | None:
    """``(block_hashes, parent_block_hash, token_ids, block_size, lora_id, medium)`` of a raw
    ``BlockStored`` in either wire shape, read without building a dict; None for anything else."""
    if isinstance(raw, list | tuple):
        if not raw or raw[0] != "BlockStored":
            return None
        n = len(raw)
        return (
            raw[1] if n > 1 else None,
            raw[2] if n > 2 else None,
            raw[3] if n > 3 else None,
            raw[4] if n > 4 else None,
            raw[5] if n > 5 else None,
            raw[6] if n > 6 else None,
        )
    if isinstance(raw, dict) and raw.get("type") == "BlockStored":
        g = raw.get
        return (
            g("block_hashes"),
            g("parent_block_hash"),
            g("token_ids"),
            g("block_size"),
            g("lora_id"),
            g("medium"),
        )
    return None


def convert_batch(raws: Iterable[Any]) -> list[KVEvent]:
    """``list(coalesce(convert(raw) for raw in raws))``, without an object per raw event.

    At page size 1 SGLang sends one ``BlockStored`` per token: a 256 x 47-token batch is ~12,000 of
    them, arriving in a burst as the requests finish. Building each as a dataclass and merging after
    took 40-51 ms of the kernel's GIL for those 12,032 events on a 2-core CPU; merged as they are read,
    4-7 ms (the subscriber's whole burst with decoding, ledger and hub: 58-86 ms before, 24-43 ms
    after); tests/test_kv_convert_batch.py holds the result to coalesce's, event for event. Why it
    matters: on an H200 an in-process Engine whose KV events went to nobody ran a 256-prompt batch as
    fast as one without KV events, and with sgnb's subscriber 50% slower (issue 13; the effect of this
    change there is not measured yet, docs/gpu-verification.md).
    """
    out: list[KVEvent] = []
    run: BlockStored | None = None  # the BlockStored being extended (page-shaped)
    last: Any = None  # the run's last block hash, when the run is page-shaped (extendable)
    for raw in raws:
        # The common case inline (no call, no list built): one more token chained onto the run, in
        # 0.5.17's tagged-array shape at page size 1.
        if (
            last is not None
            and run is not None
            and type(raw) is list
            and len(raw) == 7
            and raw[0] == "BlockStored"
            and raw[2] == last
            and raw[4] == 1 == run.block_size
            and len(raw[1]) == 1
            and len(raw[3]) == 1
            and type(raw[3][0]) is int
            and type(raw[1][0]) is int
            and raw[5] == run.lora_id
            and raw[6] == run.medium
        ):
            last = raw[1][0]
            run.block_hashes.append(last)
            run.token_ids.append(raw[3][0])
            continue
        fields = _stored_fields(raw)
        if fields is None:
            event = convert(raw)
            if event is None:  # coalesce skips what it cannot read without ending a run
                continue
            if not isinstance(event, BlockStored):  # a removal or a clear ends the run
                if run is not None:
                    out.append(run)
                run, last = None, None
                out.append(event)
                continue
            fields = (  # a BlockStored msgspec struct: merged as the other shapes
                event.block_hashes,
                event.parent_block_hash,
                event.token_ids,
                event.block_size,
                event.lora_id,
                event.medium,
            )
        hashes, parent, tokens, size, lora, medium = fields
        size = int(size or 1)
        hashes = [int(h) for h in hashes or []]
        tokens = [int(t) if not isinstance(t, list | tuple) else int(t[0]) for t in tokens or []]
        shaped = len(tokens) == size * len(hashes)
        if (
            run is not None
            and shaped
            and run.block_hashes
            and parent == run.block_hashes[-1]
            and (run.block_size, run.medium, run.lora_id) == (size, medium, lora)
            and len(run.token_ids) == run.block_size * len(run.block_hashes)
        ):
            run.block_hashes.extend(hashes)
            run.token_ids.extend(tokens)
            last = run.block_hashes[-1]
            continue
        if run is not None:
            out.append(run)
        last = hashes[-1] if shaped and hashes else None
        run = BlockStored(
            block_hashes=hashes,
            parent_block_hash=parent,
            token_ids=tokens,
            block_size=size,
            lora_id=lora,
            medium=medium,
        )
    if run is not None:
        out.append(run)
    return out


def decode_payload(payload: bytes) -> list[Any]:
    """The raw events of one ``KVEventBatch`` payload (``[ts, events, attn_dp_rank]``)."""
    batch = msgspec.msgpack.decode(payload)
    events = batch[1] if isinstance(batch, list | tuple) else batch.get("events", [])
    return list(events)


class KVEventSubscriber:
    def __init__(self, endpoint: str, topic: str, hub: EventHub, bind: bool = False) -> None:
        self.endpoint, self.topic, self.hub = endpoint, topic, hub
        self._ctx: Any = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.SUB)
        self._sock.setsockopt(zmq.RCVTIMEO, 200)
        self._sock.setsockopt_string(zmq.SUBSCRIBE, topic)
        # An in-process Engine's publisher connects to us (SGLang connects unless the endpoint is a
        # wildcard), so we bind on loopback; a server's publisher binds, so we connect to it.
        if bind:
            self._sock.bind(endpoint)
        else:
            self._sock.connect(endpoint)
        self.received = 0
        self.last_seq = -1
        self.raw: list[bytes] | None = None  # set to [] to keep every msgpack payload (fixtures)
        self.ledger = BlockLedger()
        self._publishing = threading.RLock()  # held while an event reaches the ledger and the hub
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sgnb-kv-events", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                frames = self._sock.recv_multipart()
            except zmq.Again:
                continue
            except zmq.ZMQError:
                break
            if len(frames) != 3:
                continue
            self.last_seq = int.from_bytes(frames[1], "big", signed=True)
            if self.raw is not None:
                self.raw.append(frames[2])
            events = decode_payload(frames[2])
            self.received += len(events)
            for event in convert_batch(events):
                with self._publishing:
                    self.ledger.apply(event)
                    self.hub.publish(event)

    def replay(self) -> list[KVEvent]:
        """The blocks republished so far and not removed, as ``BlockStored`` events, parents first."""
        with self._publishing:
            return self.ledger.replay()

    def follow(self, subscriber: Subscriber) -> Callable[[], None]:
        """Hand ``subscriber`` the replay, then subscribe it to the hub, with no event in between."""
        with self._publishing:
            for event in self.ledger.replay():
                subscriber(event)
            return self.hub.subscribe(subscriber)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close(linger=0)


class KVEventsTree:
    """``replay_tree`` / ``follow`` (:class:`sgnb.core.events.TreeSource`) for a runtime whose tree is
    known only from the KV events its ``_subscriber`` receives (the engine and remote runtimes).

    SGLang keeps its radix tree to itself; what it published since the runtime subscribed is the
    tree. Without a subscriber (KV events off) there is nothing to replay.
    """

    hub: EventHub
    _subscriber: KVEventSubscriber | None

    def replay_tree(self) -> list[KVEvent]:
        """The server's tree now, as sgnb KV events (``BlockStored``, parents first)."""
        return self._subscriber.replay() if self._subscriber is not None else []

    def follow(self, subscriber: Subscriber) -> Callable[[], None]:
        """Replay the tree to ``subscriber``, then subscribe it to the hub; returns the unsubscribe."""
        if self._subscriber is None:
            return self.hub.subscribe(subscriber)
        return self._subscriber.follow(subscriber)

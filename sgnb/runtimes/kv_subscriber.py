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
from collections.abc import Callable
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
    coalesce,
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
            for event in coalesce(convert(raw) for raw in events):
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

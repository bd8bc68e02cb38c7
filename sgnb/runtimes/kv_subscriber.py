"""Subscribe to an SGLang server's or Engine's KV events over ZMQ and republish them as sgnb events.

SGLang publishes each batch as three frames: topic, an 8-byte big-endian sequence number and a
msgpack ``KVEventBatch``. A subscriber that connects late misses what came before (ZMQ's
"slow joiner"), so runtimes connect this before their first request.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import zmq

from sgnb.events import AllBlocksCleared, BlockRemoved, BlockStored, EventHub, KVEvent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def convert(event: Any) -> KVEvent | None:
    """One SGLang msgspec event as the sgnb dataclass of the same shape."""
    name = type(event).__name__
    if name == "BlockStored":
        return BlockStored(
            block_hashes=list(event.block_hashes),
            parent_block_hash=event.parent_block_hash,
            token_ids=[int(t) if not isinstance(t, list | tuple) else int(t[0]) for t in event.token_ids],
            block_size=int(event.block_size),
            lora_id=getattr(event, "lora_id", None),
            medium=getattr(event, "medium", None),
        )
    if name == "BlockRemoved":
        return BlockRemoved(block_hashes=list(event.block_hashes), medium=getattr(event, "medium", None))
    if name == "AllBlocksCleared":
        return AllBlocksCleared()
    return None


def coalesce(events: Iterable[KVEvent | None]) -> Iterator[KVEvent]:
    """Merge runs of chained ``BlockStored`` (SGLang sends one per token at page size 1).

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
            and pending.block_size == event.block_size
            and event.parent_block_hash == pending.block_hashes[-1]
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


class KVEventSubscriber:
    def __init__(self, endpoint: str, topic: str, hub: EventHub, bind: bool = False) -> None:
        import msgspec
        from sglang.srt.disaggregation.kv_events import KVEventBatch

        self.endpoint, self.topic, self.hub = endpoint, topic, hub
        self._decoder = msgspec.msgpack.Decoder(type=KVEventBatch)
        self._ctx = zmq.Context.instance()
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
            batch = self._decoder.decode(frames[2])
            self.received += len(batch.events)
            for event in coalesce(convert(raw) for raw in batch.events):
                self.hub.publish(event)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close(linger=0)

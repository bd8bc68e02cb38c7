"""Publish the runtime's KV events over ZMQ exactly as an SGLang server does.

``--kv-events-config '{"publisher":"zmq","endpoint":"tcp://*:5557","topic":"kv-events"}'``: each
message is three frames - the topic, an 8-byte big-endian sequence number, and a msgpack-encoded
``sglang.srt.disaggregation.kv_events.KVEventBatch`` - so SGLang's own consumers (sgl-router,
Dynamo, sgnb's ``KVEventSubscriber``) read ``sgnb serve`` like ``sglang.launch_server``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from sgnb.core.events import AllBlocksCleared, BlockRemoved, BlockStored

logger = logging.getLogger(__name__)
_STOP = object()


def parse_config(config: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """SGLang's ``KVEventsConfig`` fields as a dict, or None when publishing is off; ValueError if bad."""
    if config is None or config == "":
        return None
    raw = json.loads(config) if isinstance(config, str) else dict(config)
    if not isinstance(raw, dict):
        raise ValueError("--kv-events-config must be a JSON object")
    known = {
        "publisher",
        "endpoint",
        "topic",
        "hwm",
        "bind",
        "replay_endpoint",
        "buffer_steps",
        "max_queue_size",
    }
    unknown = set(raw) - known - {"format"}
    if unknown:
        raise ValueError(f"unknown --kv-events-config keys: {', '.join(sorted(unknown))}")
    cfg = {"publisher": "null", "endpoint": "tcp://*:5557", "topic": "", "hwm": 100_000, "bind": None, **raw}
    if cfg["publisher"] == "null":
        return None
    if cfg["publisher"] != "zmq":
        raise ValueError(
            f"unknown KV event publisher {cfg['publisher']!r}; sgnb serve supports 'zmq' and 'null'"
        )
    if cfg.get("format", "default") != "default":
        raise ValueError("sgnb serve publishes the default SGLang event format only")
    return cfg


def to_sglang(event: Any) -> Any:
    """An sgnb KV event dataclass as SGLang's msgspec struct (None for other events)."""
    from sglang.srt.disaggregation import kv_events as skv

    if isinstance(event, BlockStored):
        return skv.BlockStored(
            block_hashes=list(event.block_hashes),
            parent_block_hash=event.parent_block_hash,
            token_ids=list(event.token_ids),
            block_size=event.block_size,
            lora_id=event.lora_id,
            medium=event.medium,
        )
    if isinstance(event, BlockRemoved):
        return skv.BlockRemoved(block_hashes=list(event.block_hashes), medium=event.medium)
    if isinstance(event, AllBlocksCleared):
        return skv.AllBlocksCleared()
    return None


class ZmqKVPublisher:
    """Subscribes to an EventHub; a background thread batches what arrived and sends it.

    The hub callback runs on the scheduler thread, so it only converts and enqueues.
    """

    def __init__(self, subscribe: Callable[[Callable[[Any], None]], Callable[[], None]], cfg: dict[str, Any]):
        import msgspec
        import zmq
        from sglang.srt.disaggregation.kv_events import KVEventBatch

        self._batch_cls = KVEventBatch
        self._encoder = msgspec.msgpack.Encoder()
        self.topic = str(cfg.get("topic") or "").encode()
        self.endpoint = str(cfg["endpoint"])
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.set_hwm(int(cfg.get("hwm") or 100_000))
        bind = cfg.get("bind")
        if bind is None:  # SGLang's heuristic: bind wildcard/ipc/inproc, connect to a concrete host
            bind = any(w in self.endpoint for w in ("*", "::", "0.0.0.0")) or self.endpoint.startswith(
                ("ipc://", "inproc://")
            )
        if bind:
            self._sock.bind(self.endpoint)
        else:
            self._sock.connect(self.endpoint)
        self.bound = self._sock.getsockopt_string(zmq.LAST_ENDPOINT) if bind else self.endpoint
        if cfg.get("replay_endpoint"):
            logger.warning("sgnb serve does not serve KV event replay; replay_endpoint is ignored")
        self.seq = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=int(cfg.get("max_queue_size") or 100_000))
        self._thread = threading.Thread(target=self._run, name="sgnb-kv-publisher", daemon=True)
        self._thread.start()
        self._unsubscribe = subscribe(self._on_event)

    def _on_event(self, event: Any) -> None:
        converted = to_sglang(event)
        if converted is not None:
            with contextlib.suppress(queue.Full):  # like SGLang: a slow consumer loses events
                self._queue.put_nowait(converted)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                break
            events = [first]
            stop = False
            while len(events) < 1024:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                    break
                events.append(more)
            self._send(events)
            if stop:
                break

    def _send(self, events: list[Any]) -> None:
        batch = self._batch_cls(ts=time.time(), events=events, attn_dp_rank=0)
        try:
            payload = self._encoder.encode(batch)
            self._sock.send_multipart((self.topic, self.seq.to_bytes(8, "big"), payload))
            self.seq += 1
        except Exception:  # publishing must never take the server down
            logger.exception("could not publish %d KV events", len(events))

    def close(self) -> None:
        self._unsubscribe()
        self._queue.put(_STOP)
        self._thread.join(timeout=5)
        self._sock.close(linger=0)
        self._ctx.term()

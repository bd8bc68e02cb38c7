"""The tree mirror and the KV subscriber on real SGLang KV events, recorded on an H200.

sglang 0.5.17 encodes each event as a tagged array; the pinned 0.5.23 as a tagged map, so its
typed ``KVEventBatch`` decoder rejects the older stream. sgnb decodes untyped and reads both.

`tests/fixtures/sglang_kv_events.msgpack.jsonl` holds the msgpack payloads that sglang 0.5.17's
``sglang.Engine`` published over ZMQ during tests/test_gpu_engine.py (page size 1: one
``BlockStored`` per token). Its first requests were a 1098-token prompt sent twice and a few
short prompts. Decoding uses this machine's sglang (the pin), as the engine runtime does.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from sgnb.core.events import BlockStored, EventHub, EventLog, coalesce
from sgnb.runtimes.kv_subscriber import convert, decode_payload
from sgnb.tree.mirror import TreeMirror

FIXTURE = Path(__file__).parent / "fixtures" / "sglang_kv_events.msgpack.jsonl"
# The repeated prompt of test_gpu_engine.test_repeated_prompt_hits_cache.
PROMPT = "The history of the radix tree: " + " ".join(f"word{i}" for i in range(300))


def _batches() -> list[list[Any]]:
    lines = FIXTURE.read_text().splitlines()
    return [decode_payload(base64.b64decode(json.loads(line)["payload_b64"])) for line in lines]


def _sgnb_events() -> list[Any]:
    return [e for batch in _batches() for e in coalesce(convert(raw) for raw in batch)]


def test_fixture_is_sglangs_own_stream() -> None:
    raw = [convert(e) for b in _batches() for e in b]
    stored = [e for e in raw if isinstance(e, BlockStored)]
    assert all(e.block_size == 1 and len(e.block_hashes) == len(e.token_ids) for e in stored)
    assert len(stored) > 1000  # page size 1: a block per token
    assert all(e is not None for e in raw)


def test_coalescing_keeps_every_block_and_link() -> None:
    raw_stored = [e for b in _batches() for e in map(convert, b) if isinstance(e, BlockStored)]
    merged = [e for e in _sgnb_events() if isinstance(e, BlockStored)]
    assert len(merged) < len(raw_stored)
    assert sum(len(e.block_hashes) for e in merged) == sum(len(e.block_hashes) for e in raw_stored)
    assert [t for e in merged for t in e.token_ids] == [t for e in raw_stored for t in e.token_ids]


def test_mirror_rebuilds_the_served_prompt(tokenizer: Any) -> None:
    """The same tree whether fed one event per token or sgnb's coalesced ones."""
    from_raw = TreeMirror(decode=tokenizer)
    for batch in _batches():
        for raw in batch:
            event = convert(raw)
            if event is not None:
                from_raw.handle(event)
    from_sgnb = TreeMirror(decode=tokenizer)
    from_sgnb.replay(_sgnb_events())
    paths = from_raw.snapshot().paths()
    assert paths == from_sgnb.snapshot().paths()
    prompt_ids = tokenizer.encode(PROMPT)
    # SGLang caches all but the last prompt token of the first request before decoding.
    assert any(list(p[: len(prompt_ids) - 1]) == prompt_ids[:-1] for p in paths)


def test_hub_delivers_converted_events() -> None:
    hub = EventHub()
    log = EventLog(hub)
    for event in _sgnb_events():
        hub.publish(event)
    assert log.of_type(BlockStored)


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    from sgnb.core.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("bundled"))

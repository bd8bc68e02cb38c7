"""Tagging requests with their worker from the workers' KV events (no processes: events in SGLang's shape).

The events are SGLang's own structs (``sglang.srt.disaggregation.kv_events.BlockStored``), as a
worker publishes them (``sglang/srt/mem_cache/radix_cache.py`` stores one block per page, chained
by ``parent_block_hash``).
"""

from __future__ import annotations

import time

from conftest import finished
from sglang.srt.disaggregation.kv_events import BlockRemoved, BlockStored

from sgnb.core.events import RequestFinished, block_hashes
from sgnb.scaleout.attribution import Attributor, BlockIndex


def stored(tokens: list[int], parent_tokens: list[int] | None = None, page: int = 1) -> BlockStored:
    """The BlockStored a worker publishes for ``tokens`` stored below ``parent_tokens``."""
    prior = block_hashes(parent_tokens, None, page)[-1] if parent_tokens else None
    hashes = block_hashes(tokens, prior, page)
    return BlockStored(
        block_hashes=hashes, parent_block_hash=prior, token_ids=tokens, block_size=page, lora_id=None
    )


def test_block_index_finds_a_sequence_stored_after_a_time() -> None:
    index = BlockIndex()
    before = time.time()
    index.handle(stored([1, 2, 3, 4]))
    assert index.stored_since([1, 2, 3, 4, 5], 0, before)
    assert index.stored_since([1, 2, 3], 2, before)  # a block past position 2
    assert not index.stored_since([1, 2, 3, 4], 4, before)  # nothing stored past the end
    assert not index.stored_since([1, 2, 3, 4], 0, time.time() + 1)  # stored before that time
    assert not index.stored_since([9, 2, 3], 0, before)  # another sequence


def test_block_index_pages_and_chains() -> None:
    """Page size 4: the suffix is chained under the prefix's last block; an old prefix is not new."""
    index = BlockIndex()
    prefix = list(range(100, 108))
    index.handle(stored(prefix, page=4))
    later = time.time() + 0.001
    while time.time() < later:
        pass
    index.handle(stored([7, 7, 7, 7], prefix, page=4))
    seq = [*prefix, 7, 7, 7, 7]
    assert index.stored_since(seq, 8, later)  # the new page is new
    assert not index.stored_since(prefix, 0, later)  # the prefix was stored before
    index.handle(BlockRemoved(block_hashes=block_hashes(prefix, None, 4), medium="GPU"))
    assert index.stored_since(seq, 8, later)  # what was stored stays known after an eviction


def test_block_index_prunes_the_oldest() -> None:
    index = BlockIndex(max_blocks=100)
    for i in range(50):
        index.handle(stored([1000 + i, 1, 2, 3]))
    assert len(index) <= 100


def tag(indexes: list[BlockIndex], event: RequestFinished, sent_at: float) -> list[int | None]:
    got: list[int | None] = []
    attributor = Attributor(indexes, lambda ev, w: got.append(w), timeout_s=0.5)
    try:
        attributor.submit(event, sent_at)
        assert attributor.wait(5)
    finally:
        attributor.close()
    assert attributor.served_by[event.rid] == got[0]
    return got


def test_attributor_tags_the_worker_whose_events_stored_the_request() -> None:
    w0, w1 = BlockIndex(), BlockIndex()
    system = [5, 6, 7, 8]
    w0.handle(stored(system))
    w1.handle(stored(system))  # both workers hold the shared prefix
    sent = time.time()
    w1.handle(stored([20, 21, 22], system))  # only worker 1 computed this request's suffix
    assert tag([w0, w1], finished([*system, 20, 21], [22], cached=4), sent) == [1]


def test_attributor_says_unknown_rather_than_guess() -> None:
    w0, w1 = BlockIndex(), BlockIndex()
    old = time.time()
    w0.handle(stored([1, 2, 3]))
    w1.handle(stored([1, 2, 3]))
    sent = time.time() + 0.01
    # a full cache hit stores nothing new anywhere: unknown after the timeout
    assert tag([w0, w1], finished([1, 2], [3], cached=2), sent) == [None]
    # the same new tokens stored on both workers after it was sent: ambiguous, unknown
    w0.handle(stored([4, 4], [1, 2, 3]))
    w1.handle(stored([4, 4], [1, 2, 3]))
    assert tag([w0, w1], finished([1, 2, 3, 4], [4], cached=0, rid="r2"), old) == [None]


def test_union_stream_removes_a_block_only_when_no_worker_holds_it() -> None:
    from sglang.srt.disaggregation.kv_events import AllBlocksCleared

    from sgnb.scaleout.union import UnionStream

    out: list[object] = []
    union = UnionStream(2, out.append)
    shared = stored([1, 2, 3])
    union.handle(0, shared)
    union.handle(1, shared)
    union.handle(1, stored([9], [1, 2, 3]))
    assert len(out) == 3  # every store passes (the mirror keys blocks by hash)
    union.handle(0, BlockRemoved(block_hashes=shared.block_hashes, medium="GPU"))
    assert len(out) == 3  # worker 1 still holds the prefix
    union.handle(1, AllBlocksCleared())
    removed = out[-1]
    assert type(removed).__name__ == "BlockRemoved"
    assert sorted(removed.block_hashes) == sorted(
        [*shared.block_hashes, *stored([9], [1, 2, 3]).block_hashes]
    )

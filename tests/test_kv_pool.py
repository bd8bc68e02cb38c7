"""The KV pool hands out ascending runs, and decode attention reads such a run in place."""

from __future__ import annotations

import pytest
import torch

from sgnb.runtimes.local.attention import SLOT_BUCKET, DecodePlan, ForwardBatch, Segment, attend
from sgnb.runtimes.local.kv_pool import KVPool, OutOfSlotsError


def test_allocations_form_one_ascending_run() -> None:
    pool = KVPool(100, 1, 1, 4, torch.float32)
    prompt, first, second = pool.alloc(10), pool.alloc(1), pool.alloc(1)
    assert torch.cat([prompt, first, second]).tolist() == list(range(12))
    pool.free(torch.cat([first, second]))
    assert pool.alloc(2).tolist() == [10, 11]  # freed slots come back in their order
    assert pool.free_slots == 88 and pool.used_slots == 12
    with pytest.raises(OutOfSlotsError):
        pool.alloc(89)
    pool.reset()
    assert pool.alloc(3).tolist() == [0, 1, 2]


def test_decode_plan_reads_a_run_in_place_only_when_it_is_one() -> None:
    run = Segment(0, 1, torch.arange(7, 7 + 70))
    assert DecodePlan.build([run], capacity=1000).window_start == 7
    assert DecodePlan.build([run], capacity=7 + 70).window_start is None  # the padded window would overflow
    assert DecodePlan.build([run]).window_start is None
    gap = Segment(0, 1, torch.cat([torch.arange(5), torch.arange(6, 10)]))
    assert DecodePlan.build([gap], capacity=1000).window_start is None
    swapped = Segment(0, 1, torch.tensor([0, 2, 1, 3]))  # first/last span fits, order does not
    assert DecodePlan.build([swapped], capacity=1000).window_start is None
    two = [Segment(0, 1, torch.arange(10)), Segment(1, 1, torch.arange(10, 20))]
    assert DecodePlan.build(two, capacity=1000).window_start is None


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_in_place_window_equals_the_gather(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    pool = KVPool(4 * SLOT_BUCKET, 1, 3, 64, dtype)
    pool.k[0].normal_()
    pool.v[0].normal_()
    slots = torch.arange(5, 5 + 90)
    query, key, value = (torch.randn(1, h, 64, dtype=dtype) for h in (9, 3, 3))
    batch = ForwardBatch(pool, slots[-1:], [Segment(0, 1, slots)])
    assert batch.decode is not None and batch.decode.window_start == 5
    in_place = attend(batch, 0, query, key, value, 0.125)
    batch.decode.window_start = None  # the same step through the gather
    gathered = attend(batch, 0, query, key, value, 0.125)
    assert torch.equal(in_place, gathered)

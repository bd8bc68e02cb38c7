"""The packed Llama forward computes exactly what transformers computes.

Both sides run the same packed steps (prefills, a prefill beside a decode row, decode rows of
different lengths, a decode row alone) over their own KV pools; the reference side is
``LocalModel(packed=False)``: transformers' ``LlamaForCausalLM`` with sgnb's pooled attention
plugged in through ``AttentionInterface``.
The logits must be bitwise equal in bfloat16 and float32: fusing q/k/v and gate/up, prepacking
the weights and the RoPE table change speed, not numbers.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from sgnb.core.models import resolve_model
from sgnb.runtimes.local.attention import SLOT_BUCKET, DecodePlan, ForwardBatch, Segment, attend
from sgnb.runtimes.local.kv_pool import KVPool
from sgnb.runtimes.local.model import LocalModel
from sgnb.runtimes.local.threads import pick_decode_threads


def _steps(tokenizer: Any) -> list[list[tuple[list[int], int]]]:
    """Each step: (new tokens, tokens already in the pool) per request."""
    a = tokenizer.encode("The capital of France is Paris. The capital of Italy is", add_special_tokens=False)
    b = tokenizer.encode("Rivers of Europe: the Danube, the Rhine and the", add_special_tokens=False)
    return [
        [(a, 0)],  # prefill A
        [(b, 0), ([a[-1]], len(a))],  # prefill B beside A's first decode token
        [([b[-1]], len(b)), ([a[0]], len(a) + 1)],  # two decode rows of different lengths
        [([a[1]], len(a) + 2)],  # one decode row alone
    ]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
def test_packed_forward_equals_transformers(dtype: torch.dtype) -> None:
    path = resolve_model("bundled")
    packed, reference = LocalModel(path, dtype), LocalModel(path, dtype, packed=False)
    assert packed.packed is not None and reference.packed is None
    pools = [KVPool(256, packed.num_layers, packed.kv_heads, packed.head_dim, dtype) for _ in range(2)]
    slots: list[list[torch.Tensor]] = [[], []]  # per side, per request
    for number, step in enumerate(_steps(packed.tokenizer)):
        logits = []
        for side, (model, pool) in enumerate(zip((packed, reference), pools, strict=True)):
            ids: list[int] = []
            positions: list[int] = []
            segments, outs, keep = [], [], []
            for request, (new, done) in enumerate(step):
                fresh = pool.alloc(len(new))
                if request == len(slots[side]):
                    slots[side].append(fresh)
                else:
                    slots[side][request] = torch.cat([slots[side][request], fresh])
                segments.append(Segment(len(ids), len(new), slots[side][request]))
                outs.append(fresh)
                ids += new
                positions += range(done, done + len(new))
                keep.append(len(ids) - 1)
            logits.append(model.forward(ids, positions, ForwardBatch(pool, torch.cat(outs), segments), keep))
        assert logits[0].shape == (len(step), packed.vocab_size)
        assert torch.equal(logits[0], logits[1]), f"step {number}: {(logits[0] - logits[1]).abs().max()}"
    for layer in range(packed.num_layers):  # and both wrote the same KV
        assert torch.equal(pools[0].k[layer], pools[1].k[layer])
        assert torch.equal(pools[0].v[layer], pools[1].v[layer])


def test_decode_plan_pads_to_a_bucket_and_masks_the_padding() -> None:
    segments = [Segment(0, 1, torch.arange(5)), Segment(1, 1, torch.arange(100, 170))]
    plan = DecodePlan.build(segments)
    assert plan.rows.tolist() == [0, 1]
    assert plan.slots.shape == (2, 2 * SLOT_BUCKET)
    assert plan.slots[0, :5].tolist() == list(range(5)) and plan.slots[1, :70].tolist() == list(
        range(100, 170)
    )
    assert plan.mask is not None and plan.mask.shape == (2, 1, 2 * SLOT_BUCKET)
    assert (plan.mask[0, 0, :5] == 0).all() and torch.isinf(plan.mask[0, 0, 5:]).all()
    assert (plan.mask[1, 0, :70] == 0).all() and torch.isinf(plan.mask[1, 0, 70:]).all()
    exact = DecodePlan.build([Segment(0, 1, torch.arange(SLOT_BUCKET))])
    assert exact.mask is None


def test_pick_decode_threads_answers_one_or_all() -> None:
    threads = torch.get_num_threads()
    calls: list[int] = []

    def probe() -> None:
        calls.append(torch.get_num_threads())
        torch.ones(1 << 16).sum()

    assert pick_decode_threads(threads, probe) in {1, threads}
    assert torch.get_num_threads() == threads  # it leaves the setting as it found it
    if threads > 1:
        assert set(calls) == {1, threads}
    assert pick_decode_threads(1, probe) == 1


def test_attend_puts_each_row_where_its_segment_says() -> None:
    """Decode rows listed out of order take the scatter path and still land on their own rows."""
    torch.manual_seed(0)
    pool = KVPool(64, 1, 3, 64, torch.float32)
    pool.k[0].normal_()
    pool.v[0].normal_()
    a, b = torch.arange(0, 10), torch.arange(20, 45)
    query, key, value = torch.randn(2, 9, 64), torch.randn(2, 3, 64), torch.randn(2, 3, 64)
    batch = ForwardBatch(pool, torch.tensor([b[-1], a[-1]]), [Segment(1, 1, a), Segment(0, 1, b)])
    assert not batch.decode_only
    out = attend(batch, 0, query, key, value, 0.125)
    for row, slots in ((1, a), (0, b)):
        alone = ForwardBatch(pool, slots[-1:], [Segment(0, 1, slots)])
        assert alone.decode_only
        expected = attend(alone, 0, query[row : row + 1], key[row : row + 1], value[row : row + 1], 0.125)
        torch.testing.assert_close(out[row], expected[0])

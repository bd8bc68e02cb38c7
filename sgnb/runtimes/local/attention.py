"""Packed attention over the KV pool.

Every forward pass is one packed sequence: the new tokens of all requests side by side, with
explicit positions. Each layer hands its query/key/value to :func:`attend`, which

1. writes the new keys/values into the pool slots the scheduler allocated, then
2. attends every decoding request's one new query over *its* slots in one batched product
   (slots padded to the longest request and masked), and
3. attends each prefilling request's new queries over its slots (cached prefix + new tokens),
   with a causal mask offset by the prefix length.

That is continuous batching without copying caches: prefills and decode steps of different
lengths share one forward. The same function also plugs into transformers through
``AttentionInterface`` (:func:`pooled_attention`), for architectures without a packed forward.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from sgnb.runtimes.local.kv_pool import KVPool

ATTN_NAME = "sgnb_pooled"


@dataclass
class Segment:
    """One request's part of a packed forward."""

    q_start: int  # offset of its new tokens in the packed sequence
    q_len: int  # how many new tokens
    kv_indices: torch.Tensor  # pool slots of all its tokens so far, new ones last


# Decode attention pads every request's slots to a multiple of this. oneDNN compiles a bf16 matmul
# kernel for each new shape: with the context growing one token a step, every step paid that
# (0.69 ms per call vs 0.03 ms for a shape seen before, measured); with buckets, once in 64 steps.
SLOT_BUCKET = 64


@dataclass
class DecodePlan:
    """The decoding requests of a step, laid out once per step for every layer's batched product."""

    rows: torch.Tensor  # [B] their rows in the packed sequence
    slots: torch.Tensor  # [B, L] pool slots, padded (with slot 0) to a bucket of the longest request
    mask: torch.Tensor | None  # [B, 1, L] 0 on real slots, -inf on padding; None when nothing is padded
    # One request whose slots are one ascending run (the pool allocates so): attention reads
    # pool[:, start : start + L] in place, padding included (masked), instead of gathering.
    window_start: int | None = None

    @classmethod
    def build(cls, segments: list[Segment], capacity: int | None = None) -> DecodePlan:
        rows = torch.tensor([s.q_start for s in segments])
        lengths = [int(s.kv_indices.numel()) for s in segments]
        width = -(-max(lengths) // SLOT_BUCKET) * SLOT_BUCKET
        window_start = None
        if len(segments) == 1 and capacity is not None:
            kv = segments[0].kv_indices
            first = int(kv[0])
            run = int(kv[-1]) - first == lengths[0] - 1 and bool((kv.diff() == 1).all())
            if run and first + width <= capacity:
                window_start = first
        slots = torch.zeros(len(segments), width, dtype=torch.int64)
        for row, seg in enumerate(segments):
            slots[row, : lengths[row]] = seg.kv_indices
        mask = None
        if any(n != width for n in lengths):
            padded = torch.arange(width).unsqueeze(0) >= torch.tensor(lengths).unsqueeze(1)
            mask = torch.zeros(padded.shape).masked_fill_(padded, float("-inf")).unsqueeze(1)
        return cls(rows=rows, slots=slots, mask=mask, window_start=window_start)


@dataclass
class ForwardBatch:
    pool: KVPool
    out_slots: torch.Tensor  # pool slot of every new token, in packed order
    segments: list[Segment]
    decode: DecodePlan | None = field(init=False)
    prefills: list[Segment] = field(init=False)
    decode_only: bool = field(init=False)  # every segment decodes, and segment i is row i

    def __post_init__(self) -> None:
        decoding = [s for s in self.segments if s.q_len == 1]
        self.decode = DecodePlan.build(decoding, self.pool.capacity) if decoding else None
        self.prefills = [s for s in self.segments if s.q_len != 1]
        self.decode_only = not self.prefills and all(s.q_start == i for i, s in enumerate(decoding))


def attend(
    batch: ForwardBatch,
    layer: int,
    query: torch.Tensor,  # [T, heads, head_dim]
    key: torch.Tensor,  # [T, kv_heads, head_dim]
    value: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Store this layer's new KV in the pool and return the attention output, ``[T, heads, head_dim]``."""
    k_pool, v_pool = batch.pool.k[layer], batch.pool.v[layer]  # [kv_heads, capacity, head_dim]
    n = int(batch.out_slots.numel())  # rows past n are padding (see LocalModel.forward)
    # index_copy_/index_select, not pool[:, slots]: advanced indexing costs 4x here (53 vs 12 us to
    # gather 960 slots, measured).
    k_pool.index_copy_(1, batch.out_slots, key[:n].transpose(0, 1))
    v_pool.index_copy_(1, batch.out_slots, value[:n].transpose(0, 1))
    if batch.decode is not None and batch.decode_only:  # rows 0..B-1 are the decode rows: no scatter
        decoding = int(batch.decode.rows.numel())
        out = _decode_attention(query[:decoding], k_pool, v_pool, batch.decode, scale)
        if decoding == query.shape[0]:
            return out
        return torch.cat([out, out.new_zeros(query.shape[0] - decoding, *out.shape[1:])])
    out = query.new_zeros(query.shape)
    if batch.decode is not None:
        plan = batch.decode
        out[plan.rows] = _decode_attention(query[plan.rows], k_pool, v_pool, plan, scale)
    for seg in batch.prefills:
        rows = slice(seg.q_start, seg.q_start + seg.q_len)
        k = k_pool.index_select(1, seg.kv_indices)  # [kv_heads, L, head_dim]
        v = v_pool.index_select(1, seg.kv_indices)
        mask = _causal_mask(seg.q_len, int(seg.kv_indices.numel()))
        out[rows] = F.scaled_dot_product_attention(
            query[rows].transpose(0, 1).unsqueeze(0),
            k.unsqueeze(0),
            v.unsqueeze(0),
            attn_mask=mask,
            scale=scale,
            enable_gqa=True,
        )[0].transpose(0, 1)
    return out


def _decode_attention(
    q: torch.Tensor, k_pool: torch.Tensor, v_pool: torch.Tensor, plan: DecodePlan, scale: float
) -> torch.Tensor:
    """B single-query rows over their cached tokens, as two batched matmuls.

    For a single query row SDPA's CPU kernel costs 3-5x two ``bmm`` calls (measured at 50 and
    900 cached tokens). Batching the requests replaces a Python loop of per-request products:
    at 8 streams one layer's decode attention went from 1.22 to 0.54 ms. The query heads sharing
    a KV head (GQA) are the rows of one product.
    """
    batch, heads, dim = q.shape  # [B, heads, head_dim]
    kv_heads = k_pool.shape[0]
    if plan.window_start is not None:  # [kv_heads, 1, L, head_dim] views of the pool, no copy
        window = slice(plan.window_start, plan.window_start + plan.slots.shape[1])
        k, v = k_pool[:, window].unsqueeze(1), v_pool[:, window].unsqueeze(1)
    else:
        shape = (kv_heads, *plan.slots.shape, dim)
        flat = plan.slots.view(-1)
        k = k_pool.index_select(1, flat).view(shape)  # [kv_heads, B, L, head_dim]
        v = v_pool.index_select(1, flat).view(shape)
    grouped = q.view(batch, kv_heads, heads // kv_heads, dim).transpose(0, 1)  # [kv_heads, B, group, dim]
    scores = torch.matmul(grouped, k.transpose(-1, -2)).float() * scale
    if plan.mask is not None:
        scores = scores + plan.mask
    probs = torch.softmax(scores, dim=-1).to(v.dtype)
    return torch.matmul(probs, v).transpose(0, 1).reshape(batch, heads, dim)


def _causal_mask(q_len: int, kv_len: int) -> torch.Tensor:
    prefix = kv_len - q_len
    rows = torch.arange(q_len).unsqueeze(1) + prefix
    return torch.arange(kv_len).unsqueeze(0) <= rows


# ---- transformers' AttentionInterface, for models without a packed forward --------------------

_state = threading.local()


def set_forward_batch(batch: ForwardBatch | None) -> None:
    _state.batch = batch


def pooled_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [1, heads, T, head_dim]
    key: torch.Tensor,  # [1, kv_heads, T, head_dim]
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = attend(
        _state.batch,
        int(module.layer_idx),  # type: ignore[arg-type]
        query[0].transpose(0, 1),
        key[0].transpose(0, 1),
        value[0].transpose(0, 1),
        scale,
    )
    return out.unsqueeze(0), None


def register() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, pooled_attention)
    return ATTN_NAME

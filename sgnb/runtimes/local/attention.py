"""Packed attention over the KV pool, plugged into transformers through ``AttentionInterface``.

Every forward pass is one packed sequence (batch 1): the new tokens of all requests side by
side, with explicit ``position_ids``. transformers applies RoPE and hands each layer's
query/key/value to :func:`pooled_attention`, which

1. writes the new keys/values into the pool slots the scheduler allocated, then
2. for each request, attends its new queries over *its* slots (cached prefix + new tokens),
   with a causal mask offset by the prefix length.

That is continuous batching without padding and without copying caches: prefills and
decode steps of different lengths share one forward.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
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


@dataclass
class ForwardBatch:
    pool: KVPool
    out_slots: torch.Tensor  # pool slot of every new token, in packed order
    segments: list[Segment]


_state = threading.local()


def set_forward_batch(batch: ForwardBatch | None) -> None:
    _state.batch = batch


def _causal_mask(q_len: int, kv_len: int) -> torch.Tensor:
    prefix = kv_len - q_len
    rows = torch.arange(q_len).unsqueeze(1) + prefix
    return torch.arange(kv_len).unsqueeze(0) <= rows


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
    batch: ForwardBatch = _state.batch
    layer = int(module.layer_idx)  # type: ignore[arg-type]
    k_pool, v_pool = batch.pool.k[layer], batch.pool.v[layer]
    n = int(batch.out_slots.numel())  # rows past n are padding (see LocalModel.forward)
    k_pool[batch.out_slots] = key[0, :, :n].transpose(0, 1)
    v_pool[batch.out_slots] = value[0, :, :n].transpose(0, 1)

    out = torch.zeros_like(query)
    for seg in batch.segments:
        q = query[:, :, seg.q_start : seg.q_start + seg.q_len].contiguous()
        k = k_pool[seg.kv_indices].transpose(0, 1).unsqueeze(0)
        v = v_pool[seg.kv_indices].transpose(0, 1).unsqueeze(0)
        mask = None if seg.q_len == 1 else _causal_mask(seg.q_len, int(seg.kv_indices.numel()))
        out[:, :, seg.q_start : seg.q_start + seg.q_len] = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, scale=scaling, enable_gqa=True
        )
    return out.transpose(1, 2), None


def register() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_NAME, pooled_attention)
    return ATTN_NAME

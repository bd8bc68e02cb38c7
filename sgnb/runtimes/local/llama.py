"""A packed Llama forward: the whole decoder in one short function over the KV pool.

transformers' ``LlamaForCausalLM`` builds masks, cache objects and per-module keyword plumbing on
every call; at one decode token per request that bookkeeping cost more than the arithmetic. This
forward computes the same numbers with the same operations, in the same order (greedy outputs
are unchanged; tests/test_llama_forward.py compares logits with transformers), on the weights
transformers loaded, and with three changes that only touch speed:

- q/k/v and gate/up are each one fused matrix product (the rows of a product do not mix, so
  fused results equal separate ones bitwise, measured);
- bf16 weights are prepacked once for oneDNN (``mkldnn._reorder_linear_weight``), as inductor's
  freezing pass does; unpacked bf16 ``F.linear`` reorders the weight on every call. Measured here
  at 2 rows: 30 layers' products 16.1 ms -> 12.0 ms, lm_head 4.1 -> 2.3 ms, bitwise equal;
- RoPE's cos/sin come from a table computed once, by the model's own rotary module.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from sgnb.runtimes.local.attention import ForwardBatch, attend

Linear = Callable[[torch.Tensor], torch.Tensor]


def pack_linear(weight: torch.Tensor) -> Linear:
    """``x @ weight.T`` with the weight laid out once for the CPU's matrix kernels."""
    weight = weight.detach().contiguous()
    if weight.dtype == torch.bfloat16 and torch.backends.mkldnn.is_available():
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, 2)

        def packed_linear(x: torch.Tensor) -> torch.Tensor:
            return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")

        return packed_linear
    # float32 keeps MKL's sgemm, which the packed kernel does not match bitwise.
    return lambda x: F.linear(x, weight)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm, operation for operation: float32 statistics, scaled in the model's dtype."""
    dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(dtype)


@dataclass
class Layer:
    input_norm: torch.Tensor
    qkv: Linear
    o: Linear
    post_norm: torch.Tensor
    gate_up: Linear
    down: Linear


def supports(hf: Any) -> bool:
    """Whether ``hf`` is a plain Llama this forward reproduces exactly."""
    cfg = hf.config
    rope = getattr(cfg, "rope_parameters", None) or {}
    return (
        type(hf).__name__ == "LlamaForCausalLM"
        and not getattr(cfg, "attention_bias", False)
        and not getattr(cfg, "mlp_bias", False)
        and getattr(cfg, "hidden_act", "") == "silu"
        and getattr(cfg, "pretraining_tp", 1) == 1
        and rope.get("rope_type", "default") == "default"
    )


class PackedLlama:
    def __init__(self, hf: Any) -> None:
        cfg = hf.config
        self.heads: int = cfg.num_attention_heads
        self.kv_heads: int = cfg.num_key_value_heads
        self.head_dim: int = getattr(cfg, "head_dim", None) or cfg.hidden_size // self.heads
        self.eps: float = cfg.rms_norm_eps
        self.scale = self.head_dim**-0.5
        inner = hf.model
        self.embed: torch.Tensor = inner.embed_tokens.weight.detach()
        self.norm: torch.Tensor = inner.norm.weight.detach()
        self.lm_head = pack_linear(hf.lm_head.weight)
        self.layers = [self._pack_layer(layer) for layer in inner.layers]
        positions = torch.arange(cfg.max_position_embeddings).unsqueeze(0)
        with torch.no_grad():
            cos, sin = inner.rotary_emb(self.embed[:1], positions)
        half = self.head_dim // 2
        self.cos = cos[0].unsqueeze(1)  # [positions, 1, head_dim]
        # rotate_half(x) * sin == roll(x, half) * [-sin_lo, sin_hi]: negation is exact, one op fewer.
        self.sin = torch.cat([-sin[0, :, :half], sin[0, :, half:]], dim=-1).unsqueeze(1)

    @staticmethod
    def _pack_layer(layer: Any) -> Layer:
        attn, mlp = layer.self_attn, layer.mlp
        return Layer(
            input_norm=layer.input_layernorm.weight.detach(),
            qkv=pack_linear(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])),
            o=pack_linear(attn.o_proj.weight),
            post_norm=layer.post_attention_layernorm.weight.detach(),
            gate_up=pack_linear(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])),
            down=pack_linear(mlp.down_proj.weight),
        )

    @torch.inference_mode()
    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, batch: ForwardBatch, keep: torch.Tensor
    ) -> torch.Tensor:
        """Packed tokens ``[T]`` at ``positions`` -> logits ``[len(keep), vocab]`` in the model's dtype."""
        tokens = int(input_ids.numel())
        heads, kv_heads, dim = self.heads, self.kv_heads, self.head_dim
        qk_width = (heads + kv_heads) * dim
        cos, sin = self.cos[positions], self.sin[positions]
        x = F.embedding(input_ids, self.embed)
        for index, layer in enumerate(self.layers):
            qkv = layer.qkv(rms_norm(x, layer.input_norm, self.eps))
            qk = qkv[:, :qk_width].view(tokens, heads + kv_heads, dim)
            qk = qk * cos + qk.roll(dim // 2, -1) * sin
            value = qkv[:, qk_width:].view(tokens, kv_heads, dim)
            out = attend(batch, index, qk[:, :heads], qk[:, heads:], value, self.scale)
            x = x + layer.o(out.view(tokens, heads * dim))
            gate_up = layer.gate_up(rms_norm(x, layer.post_norm, self.eps))
            half = gate_up.shape[-1] // 2
            x = x + layer.down(F.silu(gate_up[:, :half]) * gate_up[:, half:])
        return self.lm_head(rms_norm(x[keep], self.norm, self.eps))

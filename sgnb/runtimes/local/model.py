"""The model: transformers loads it; a packed forward (or transformers' own) runs it over the KV pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sgnb.runtimes.local.attention import ForwardBatch, register, set_forward_batch
from sgnb.runtimes.local.llama import PackedLlama, supports

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return torch.bfloat16
    try:
        return DTYPES[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)} or 'auto'") from None


def _warm_numpy_finfo() -> None:
    import numpy as np

    for t in (np.float16, np.float32, np.float64, np.longdouble):
        _ = np.finfo(t).smallest_subnormal


class LocalModel:
    def __init__(self, path: Path, dtype: torch.dtype, packed: bool = True) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
        from transformers.utils import logging as hf_logging

        self.path = path
        self.dtype = dtype
        # The bundled weights are dequantized Q4_1: subnormal values made a bf16 decode step
        # ~25x slower on this CPU (1.2 vs 25-30 tok/s measured). Flushing them to zero fixes it.
        _warm_numpy_finfo()  # numpy warns if it first computes its float limits with FTZ on
        torch.set_flush_denormal(True)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()  # a "Loading weights" bar in every notebook is noise
        try:
            hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=register())
        finally:
            hf_logging.enable_progress_bar()
            hf_logging.set_verbosity(verbosity)
        hf.eval()
        cfg = hf.config
        # Llama gets the packed forward; other architectures (and packed=False, for tests) run
        # transformers' forward with pooled attention plugged in. The packed forward keeps its own
        # (fused) weights, so the transformers model is dropped rather than held twice.
        self.packed = PackedLlama(hf) if packed and supports(hf) else None
        self.hf = None if self.packed is not None else hf
        self.num_layers: int = cfg.num_hidden_layers
        self.hidden_size: int = cfg.hidden_size
        self.kv_heads: int = cfg.num_key_value_heads
        self.head_dim: int = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.context_length: int = cfg.max_position_embeddings
        self.vocab_size: int = cfg.vocab_size
        self.eos_token_ids = self._eos_ids(GenerationConfig, path)

    def release(self) -> None:
        """Drop the weights (a stopped runtime's); the tokenizer and the config figures stay."""
        self.packed = None
        self.hf = None

    def _eos_ids(self, generation_config_cls: Any, path: Path) -> set[int]:
        ids: set[int] = set()
        try:
            gen = generation_config_cls.from_pretrained(path)
            eos = gen.eos_token_id
            ids.update([eos] if isinstance(eos, int) else (eos or []))
        except OSError:
            pass
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        return ids

    @torch.inference_mode()
    def probe(self) -> None:
        """One product per layer on two rows: a memory-bound slice of a decode step, for timing threads."""
        x = torch.zeros(2, self.hidden_size, dtype=self.dtype)
        if self.packed is not None:
            for layer in self.packed.layers:
                layer.gate_up(x)
            return
        assert self.hf is not None
        linears = [
            m
            for m in self.hf.modules()
            if isinstance(m, torch.nn.Linear) and m.in_features == self.hidden_size
        ]
        for linear in linears[: self.num_layers]:
            linear(x)

    @torch.inference_mode()
    def forward(
        self, input_ids: list[int], positions: list[int], batch: ForwardBatch, logits_at: list[int]
    ) -> torch.Tensor:
        """Run one packed forward; return float32 logits at the packed offsets ``logits_at``.

        Every matrix product gets at least two rows. On this CPU a one-row ``F.linear`` takes the
        GEMV path, which is 2x slower than two rows in bf16 (2.1 vs 1.1 ms for 1536x576) and
        rounds differently, so a request decoded alone would drift from the same request in a
        batch. With >= 2 rows every row's result is the same whatever the batch (measured up to
        400). The packed bf16 kernel has no GEMV path, but the float32 and transformers paths do.
        """
        n = len(input_ids)
        if n == 1:
            input_ids, positions = input_ids * 2, positions * 2  # the copy's KV is never stored
        keep = logits_at if len(logits_at) > 1 else logits_at * 2
        if self.packed is not None:
            logits = self.packed.forward(
                torch.tensor(input_ids), torch.tensor(positions), batch, torch.tensor(keep)
            )
            return logits[: len(logits_at)].float()
        assert self.hf is not None
        set_forward_batch(batch)
        try:
            out = self.hf(
                input_ids=torch.tensor([input_ids]),
                position_ids=torch.tensor([positions]),
                use_cache=False,
                logits_to_keep=torch.tensor(keep),
            )
        finally:
            set_forward_batch(None)
        return out.logits[0, : len(logits_at)].float()

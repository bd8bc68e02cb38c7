"""Turn one request's next-token logits into a token, the way SGLang's sampler does."""

from __future__ import annotations

import torch

from sgnb.params import SamplingParams


def apply_penalties(logits: torch.Tensor, params: SamplingParams, output_ids: list[int]) -> None:
    if not output_ids or (
        params.frequency_penalty == 0 and params.presence_penalty == 0 and params.repetition_penalty == 1
    ):
        return
    ids, counts = torch.tensor(output_ids).unique(return_counts=True)
    if params.repetition_penalty != 1:
        picked = logits[ids]
        logits[ids] = torch.where(
            picked > 0, picked / params.repetition_penalty, picked * params.repetition_penalty
        )
    logits[ids] -= params.frequency_penalty * counts.to(logits.dtype) + params.presence_penalty


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    """``logits`` is a float32 [vocab] row, already masked by any grammar and penalties."""
    if params.greedy:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_k != -1 and params.top_k < probs.numel():
        kth = torch.topk(probs, params.top_k).values[-1]
        probs = torch.where(probs < kth, 0.0, probs)
    if params.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs[before > params.top_p] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    if params.min_p > 0.0:
        probs = torch.where(probs < params.min_p * probs.max(), 0.0, probs)
    return int(torch.multinomial(probs, 1, generator=generator))

"""Turn one request's next-token logits into a token, the way SGLang's sampler does."""

from __future__ import annotations

import torch

from sgnb.core.logprobs import LogprobRows
from sgnb.core.params import SamplingParams


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


def logprob_rows(
    logits: torch.Tensor,
    targets: list[int],
    top_k: int = 0,
    token_ids: tuple[int, ...] | None = None,
    temperature: float = 1.0,
) -> LogprobRows:
    """Log-probabilities of ``targets`` (one per row of ``logits``, ``[rows, vocab]`` float32), plus the
    ``top_k`` best and the ``token_ids`` asked for, as SGLang's ``Sampler.forward`` and
    ``OutputLogprobProcessor.compute_logprobs`` give them.

    Output rows pass the request's own ``temperature`` (SGLang divides by it unless the request is
    greedy); prompt rows use 1 (``LogitsProcessor``'s input logprobs are a plain log-softmax). -inf
    (a masked token) is clamped to float32's lowest value, as SGLang clamps.
    """
    scaled = logits if temperature == 1.0 else logits / temperature
    lp = torch.log_softmax(scaled, dim=-1).clamp_(min=torch.finfo(torch.float32).min)
    rows = LogprobRows(
        chosen=lp.gather(1, torch.tensor(targets, dtype=torch.int64).unsqueeze(1))[:, 0].tolist()
    )
    if top_k > 0:
        values, ids = lp.topk(top_k, dim=-1)
        rows.top_values, rows.top_ids = values.tolist(), ids.tolist()
    if token_ids:
        rows.ids_values = lp[:, list(token_ids)].tolist()
    return rows

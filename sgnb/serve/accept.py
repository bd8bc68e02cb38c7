"""The accept-set of ``sgnb serve``: SGLang 0.5.23's, less a table of features sgnb cannot honour.

SGLang's request classes accept fields sgnb has no use for: ``/generate``'s body is parsed into
``io_struct.GenerateReqInput`` (a dataclass, unknown keys ignored) and the OpenAI routes into the
pydantic classes of ``entrypoints/openai/protocol.py`` (unknown keys ignored too). A client - or
SGLang's own router, which forwards ``model``, ``return_hidden_states``, ``no_logs``, ... with
their default values - may send any of them. The rule, per field:

- it changes nothing for a text-only, single-model, non-disaggregated server (``model``,
  ``no_logs``, ``priority``, the PD/DP routing hints, the multimodal tiling knobs, ...): accepted
  and ignored, with any value SGLang's class accepts;
- it would change the result and sgnb cannot honour it: accepted at SGLang's default value (which
  changes nothing), and any other value is a 400 that names the feature
  (``"lora_path (LoRA adapters) is not supported by sgnb serve"``). Those fields are the tables
  below; a helper that builds a feature deletes its rows.

The defaults compared against are read from SGLang's own classes, so the tables cannot drift
from them. ``None`` (JSON ``null``) always counts as "not set".
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

# field -> the feature it asks for. Shrink as sgnb learns features.
UNSUPPORTED_GENERATE: dict[str, str] = {
    "input_embeds": "input embeddings",
    "image_data": "image input",
    "video_data": "video input",
    "audio_data": "audio input",
    "mm_hashes": "multimodal input",
    "mm_content_hashes": "multimodal input",
    "return_sampling_mask": "sampling masks",
    "sampling_logprobs_mode": "sampling-support logprobs",
    "return_flat_raw_top_logprobs": "flat raw top logprobs",
    "return_flat_raw_output_top_logprobs": "flat raw top logprobs",
    "return_flat_raw_top_logprobs_b64": "flat raw top logprobs",
    "return_hidden_states": "hidden states",
    "return_routed_experts": "routed experts (MoE)",
    "return_indexer_topk": "indexer top-k",
    "session_params": "sessions",
    "lora_path": "LoRA adapters",
    "lora_id": "LoRA adapters",
    "custom_logit_processor": "custom logit processors",
    "positional_embed_overrides": "embedding overrides",
    "require_reasoning": "reasoning control",
    "max_thinking_tokens": "thinking budgets",
    "return_bytes": "image generation",
    "return_entropy": "entropy",
    "return_prompt_token_ids": "prompt token ids in meta_info",
    "multi_item_delimiter_indices": "multi-item scoring",
    "token_indices_to_pool": "setwise pooling",
    "extra_key": "cache isolation (extra_key)",
    "cache_salt": "cache isolation (cache_salt)",
    "watermark": "watermarking",
}

# Fields common to SGLang's ChatCompletionRequest and CompletionRequest.
_UNSUPPORTED_OPENAI: dict[str, str] = {
    "logit_bias": "logit_bias",
    "return_hidden_states": "hidden states",
    "return_routed_experts": "routed experts (MoE)",
    "return_cached_tokens_details": "cached token details",
    "return_spec_tokens_details": "speculative decoding details",
    "return_token_ids": "token ids in the response",
    "lora_path": "LoRA adapters",
    "session_params": "sessions",
    "custom_logit_processor": "custom logit processors",
    "watermark": "watermarking",
    "extra_key": "cache isolation (extra_key)",
    "cache_salt": "cache isolation (cache_salt)",
}

UNSUPPORTED_CHAT: dict[str, str] = {
    **_UNSUPPORTED_OPENAI,
    "tools": "tool calling",
    "continue_final_message": "continue_final_message",
    "return_prompt_token_ids": "prompt token ids in the response",
    "return_meta_info": "meta_info in the response",
    "return_input_ids_in_sglext": "sglext token ids",
    "return_output_ids_in_sglext": "sglext token ids",
    "return_sampling_mask": "sampling masks",
    "sampling_logprobs_mode": "sampling-support logprobs",
    "return_flat_raw_output_top_logprobs": "flat raw top logprobs",
    "input_ids": "pre-tokenized chat prompts (input_ids)",
}

UNSUPPORTED_COMPLETION: dict[str, str] = {
    **_UNSUPPORTED_OPENAI,
    "best_of": "best_of > 1",
    "echo": "echo",
    "suffix": "suffix",
}


class Unsupported(ValueError):
    """A field SGLang accepts, set to a value sgnb cannot honour (a 400 naming the feature)."""


@functools.cache
def generate_defaults() -> dict[str, Any]:
    """``GenerateReqInput``'s field defaults (SGLang's own class; imported on first use)."""
    from sglang.srt.managers.io_struct import GenerateReqInput

    return {
        f.name: f.default
        for f in dataclasses.fields(GenerateReqInput)
        if f.default is not dataclasses.MISSING
    }


@functools.cache
def openai_defaults(kind: str) -> dict[str, Any]:
    """Field defaults of SGLang's ``ChatCompletionRequest`` (``"chat"``) or ``CompletionRequest``."""
    from sglang.srt.entrypoints.openai import protocol

    cls = protocol.ChatCompletionRequest if kind == "chat" else protocol.CompletionRequest
    return {name: f.get_default(call_default_factory=True) for name, f in cls.model_fields.items()}


def load() -> None:
    """Import SGLang's request classes now (seconds, once), so the first request does not wait."""
    generate_defaults()
    openai_defaults("chat")
    openai_defaults("completion")


def _is_default(value: Any, default: Any) -> bool:
    if value is None or value == default or value == [] or value == {}:  # unset, or empty: no effect
        return True
    # a batch: one value per prompt, each unset
    return isinstance(value, list) and bool(value) and all(v is None or v == default for v in value)


def refuse_unsupported(body: dict[str, Any], table: dict[str, str], defaults: dict[str, Any]) -> None:
    """Raise :class:`Unsupported` for the first field of ``table`` set to a non-default value."""
    for name, feature in table.items():
        if name in body and not _is_default(body[name], defaults.get(name)):
            what = name if feature == name else f"{name} ({feature})"
            raise Unsupported(f"{what} is not supported by sgnb serve")

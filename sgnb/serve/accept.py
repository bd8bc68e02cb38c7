"""The accept-set of ``sgnb serve``: SGLang 0.5.23's own request classes judge every body.

Choice: sgnb validates with SGLang's classes rather than a parallel copy of them. SGLang is a
dependency of sgnb, its request classes import on CPU (once, at app start-up: a few seconds),
and a copy drifts: the earlier copy here answered 400 "Extra inputs are not permitted" to fields
SGLang's router sends. So a body goes through the steps SGLang's server runs, with SGLang's code:

- ``/generate`` (``http_server.generate_request``): the body is parsed into
  ``io_struct.GenerateReqInput`` (a pydantic-validated dataclass: unknown keys ignored, a type
  error is a 400 ``ErrorResponse``), checked against the JSON contract
  ``sglang.api.v1.api_types.GenerateRequest`` (a 400 ``{"error": "<text>"}``; unknown
  *sampling* keys are refused here), normalised by ``normalize_batch_and_arguments`` and each
  prompt's sampling parameters by ``sampling.sampling_params.SamplingParams.normalize`` /
  ``verify`` (a ValueError: 400 ``{"error": {"message": ...}}``).
- ``/v1/chat/completions`` and ``/v1/completions``: ``protocol.ChatCompletionRequest`` /
  ``CompletionRequest`` (pydantic, unknown keys ignored; a type error is a 400 ``ErrorResponse``
  with type ``"Bad Request"``), then the checks of ``serving_chat._validate_request`` /
  ``serving_completions._validate_request`` (type ``"BadRequestError"``).

Then, per field SGLang accepts:

- it changes nothing for a text-only, single-model, non-disaggregated server (``model``,
  ``no_logs``, ``background``, ``priority``, routing hints, multimodal tiling knobs, ...):
  accepted with any value SGLang accepts, and ignored;
- it would change the result and sgnb cannot honour it: accepted at SGLang's default (which
  changes nothing); any other value is a 400 naming the feature, e.g. ``"lora_path (LoRA
  adapters) is not supported by sgnb serve"``. Those fields are the ``UNSUPPORTED_*`` tables
  below; a helper that builds a feature deletes its rows. Defaults come from SGLang's classes.
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

# Sampling parameters SGLang's contract accepts and sgnb's sampler lacks.
UNSUPPORTED_SAMPLING: dict[str, str] = {
    "beam_width": "beam search",
    "structural_tag": "structural tags",
    "logit_bias": "logit_bias",
    "watermark": "watermarking",
    "choice": "choice constraints in sampling_params",
}
# Sampling parameters that change nothing sgnb returns (stream_interval: SGLang's chunk cadence;
# custom_params: read only by custom logit processors, which are refused above).
IGNORED_SAMPLING = ("stream_interval", "custom_params")

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
    "return_prompt_token_ids": "prompt token ids in the response",
    "return_meta_info": "meta_info in the response",
    "return_input_ids_in_sglext": "sglext token ids",
    "return_output_ids_in_sglext": "sglext token ids",
    "return_sampling_mask": "sampling masks",
    "sampling_logprobs_mode": "sampling-support logprobs",
    "return_flat_raw_output_top_logprobs": "flat raw top logprobs",
}

UNSUPPORTED_COMPLETION: dict[str, str] = {
    **_UNSUPPORTED_OPENAI,
    "best_of": "best_of > 1",
    "echo": "echo",
    "suffix": "suffix",
}


class Unsupported(ValueError):
    """A field SGLang accepts, set to a value sgnb cannot honour (a 400 naming the feature)."""


class Refused(ValueError):
    """A body SGLang's own classes refuse, with SGLang's status and JSON body."""

    def __init__(self, message: str, body: dict[str, Any], status: int = 400) -> None:
        super().__init__(message)
        self.body = body
        self.status = status


def validation_error(exc: Any) -> Refused:
    """SGLang's handler for a pydantic error on a request class (``http_server``'s
    ``validation_exception_handler``): 400 ``ErrorResponse`` with type ``"Bad Request"``."""
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    parts = [
        f"body.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}".replace("body.:", "body:") for e in errors
    ]
    message = f"{len(errors)} validation error{'s' if len(errors) != 1 else ''}: " + "; ".join(parts[:8])
    body = {"object": "error", "message": message, "type": "Bad Request", "param": None, "code": 400}
    return Refused(message, body)


def openai_error(message: str, err_type: str = "BadRequestError") -> Refused:
    """``OpenAIServingBase.create_error_response``: 400 ``ErrorResponse``."""
    return Refused(
        message, {"object": "error", "message": message, "type": err_type, "param": None, "code": 400}
    )


@functools.cache
def generate_defaults() -> dict[str, Any]:
    """``GenerateReqInput``'s field defaults (SGLang's own class)."""
    from sglang.srt.managers.io_struct import GenerateReqInput

    return {
        f.name: f.default
        for f in dataclasses.fields(GenerateReqInput)
        if f.default is not dataclasses.MISSING
    }


@functools.cache
def sampling_defaults() -> dict[str, Any]:
    """The JSON contract's sampling defaults (``sglang.api.v1.api_types.SamplingParams``)."""
    from sglang.api.v1.api_types import SamplingParams

    unset = SamplingParams()
    return {name: getattr(unset, name) for name in SamplingParams.__struct_fields__}


@functools.cache
def openai_defaults(kind: str) -> dict[str, Any]:
    """Field defaults of SGLang's ``ChatCompletionRequest`` (``"chat"``) or ``CompletionRequest``."""
    return {
        name: f.get_default(call_default_factory=True) for name, f in openai_class(kind).model_fields.items()
    }


def openai_class(kind: str) -> Any:
    from sglang.srt.entrypoints.openai import protocol

    return protocol.ChatCompletionRequest if kind == "chat" else protocol.CompletionRequest


@functools.cache
def _generate_adapter() -> Any:
    from pydantic import TypeAdapter
    from sglang.srt.managers.io_struct import GenerateReqInput

    return TypeAdapter(GenerateReqInput)


def load() -> None:
    """Import SGLang's request classes now (seconds, once), so the first request does not wait."""
    generate_defaults()
    sampling_defaults()
    openai_defaults("chat")
    openai_defaults("completion")
    _generate_adapter()
    import sglang.srt.entrypoints.openai.serving_completions  # noqa: F401

    # first calls build validators and caches: pay for them here, not on the first request
    admit_generate({"text": "x", "sampling_params": {"max_new_tokens": 1}})
    check_sampling({"max_new_tokens": 1}, None, 2)
    openai_class("chat").model_validate({"messages": [{"role": "user", "content": "x"}]})
    openai_class("completion").model_validate({"prompt": "x"})


def _is_default(value: Any, default: Any) -> bool:
    if value is None or value == default or value == [] or value == {}:  # unset, or empty: no effect
        return True
    # a batch: one value per prompt, each unset
    return isinstance(value, list) and all(v is None or v == default for v in value)


def refuse_unsupported(body: dict[str, Any], table: dict[str, str], defaults: dict[str, Any]) -> None:
    """Raise :class:`Unsupported` for the first field of ``table`` set to a non-default value."""
    for name, feature in table.items():
        if name in body and not _is_default(body[name], defaults.get(name)):
            what = name if feature == name else f"{name} ({feature})"
            raise Unsupported(f"{what} is not supported by sgnb serve")


# ---- /generate --------------------------------------------------------------------------------


def admit_generate(body: Any) -> tuple[Any, list[Any]]:
    """A ``/generate`` body as SGLang's server admits it: the normalised ``GenerateReqInput`` and
    its one-prompt parts (``obj[i]``; ``[obj]`` for a single prompt).

    Raises :class:`Refused` (type or contract errors, in SGLang's shapes), :class:`Unsupported`,
    or ValueError (``normalize_batch_and_arguments``'s refusals).
    """
    from pydantic import ValidationError
    from sglang.api.v1.api_types import GenerateRequest, JsonContractError

    try:
        obj = _generate_adapter().validate_python(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    try:
        GenerateRequest.from_json_value(body)
    except JsonContractError as exc:
        raise Refused(str(exc), {"error": str(exc)}) from None
    refuse_unsupported(body, UNSUPPORTED_GENERATE, generate_defaults())
    params = body.get("sampling_params")
    for sp in params if isinstance(params, list) else [params or {}]:
        refuse_unsupported(sp, UNSUPPORTED_SAMPLING, sampling_defaults())
    try:
        obj.normalize_batch_and_arguments()
        n = 1 if obj.is_single else len(obj.text if obj.text is not None else obj.input_ids)
        return obj, [obj] if obj.is_single else [obj[i] for i in range(n)]
    except (IndexError, KeyError, TypeError, AttributeError) as exc:  # a 500 in SGLang; a 400 here
        raise ValueError(f"invalid request: {type(exc).__name__}: {exc}") from None


def streamed(body: Any) -> bool:
    """``GenerateReqInput.stream`` of a body SGLang's parse admits (False for one it refuses)."""
    from pydantic import ValidationError

    try:
        return bool(_generate_adapter().validate_python(body).stream)
    except ValidationError:
        return False


def check_sampling(params: dict[str, Any], tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """SGLang's ``SamplingParams(**params).normalize(tokenizer)`` and ``.verify(vocab_size)``
    (``TokenizerManager._create_tokenized_object``); returns the parameters for sgnb's runtime:
    unset ones and those that change nothing dropped, ``seed`` as sgnb's ``sampling_seed``."""
    from sglang.srt.sampling.sampling_params import SamplingParams

    refuse_unsupported(params, UNSUPPORTED_SAMPLING, sampling_defaults())
    try:
        sp = SamplingParams(**params)
        sp.normalize(tokenizer)
        sp.verify(vocab_size)
    except TypeError as exc:  # a wrong type the contract let through (it checks /generate only)
        raise ValueError(f"invalid sampling parameters: {exc}") from None
    skip = {*UNSUPPORTED_SAMPLING, *IGNORED_SAMPLING}
    # null means "default" except for max_new_tokens, where it means no cap but the context length
    return {k: v for k, v in params.items() if (v is not None or k == "max_new_tokens") and k not in skip}

"""Request bodies, admitted as SGLang 0.5.23 admits them, turned into sgnb's :class:`Item` s.

SGLang's own request classes judge every body (see :mod:`sgnb.serve.accept` for why and how):
``/generate`` through ``io_struct.GenerateReqInput``, ``/v1`` through the pydantic classes of
``entrypoints/openai/protocol.py``. This module maps what they admit onto the local runtime.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from sgnb.serve.accept import (
    UNSUPPORTED_CHAT,
    UNSUPPORTED_COMPLETION,
    Unsupported,
    admit_generate,
    check_sampling,
    openai_class,
    openai_defaults,
    openai_error,
    refuse_unsupported,
    validation_error,
)

MAX_BATCH = 256
# SGLang treats a temperature below this as greedy (sampling_params._SAMPLING_EPS).
GREEDY_EPS = 1e-6


class BadRequest(ValueError):
    """A request the server refuses with 400 before any compute."""


@dataclass
class Item:
    """One prompt of a (possibly batched) request."""

    text: str | None
    input_ids: list[int] | None
    params: dict[str, Any]
    rid: str | None = None
    return_logprob: bool = False
    logprob_start_len: int = -1
    top_logprobs_num: int = 0
    token_ids_logprob: list[int] | None = None
    text_in_logprobs: bool = False
    log_metrics: bool = True
    constraint: str | None = field(default=None)

    @property
    def prefill_only(self) -> bool:
        return self.params.get("max_new_tokens") == 0


def sgnb_params(params: dict[str, Any], tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """SGLang's checks (:func:`check_sampling`), then sgnb's names and greedy normalisation."""
    clean = check_sampling(params, tokenizer, vocab_size)
    temp = clean.get("temperature")
    if isinstance(temp, float | int) and 0 <= temp < GREEDY_EPS:
        clean["temperature"] = 0.0
    if isinstance(clean.get("json_schema"), dict):
        clean["json_schema"] = json.dumps(clean["json_schema"])
    return clean


def constraint_of(params: dict[str, Any]) -> str | None:
    return next((k for k in ("regex", "json_schema", "ebnf") if k in params), None)


# ---- /generate --------------------------------------------------------------------------------


@dataclass
class GenerateRequest:
    stream: bool
    batched: bool


def parse_generate(body: Any, tokenizer: Any, vocab_size: int) -> tuple[GenerateRequest, list[Item], bool]:
    """``(request, items, batched)`` for a ``/generate`` body; raises ValueError on anything wrong.

    One Item per prompt the client sent: SGLang's ``normalize_batch_and_arguments`` also repeats
    each prompt ``n`` times for parallel sampling, which sgnb's runtime does itself (``params["n"]``).
    """
    obj, ones = admit_generate(body)
    single = isinstance(body.get("text"), str) or (
        body.get("text") is None and bool(body.get("input_ids")) and isinstance(body["input_ids"][0], int)
    )
    batched = not single
    ones = ones[: 1 if single else obj.batch_size]
    n = len(ones)
    if n > MAX_BATCH:
        raise BadRequest(f"a batch holds at most {MAX_BATCH} prompts, got {n}")
    items = []
    for one in ones:
        params = sgnb_params(dict(one.sampling_params or {}), tokenizer, vocab_size)
        ids = one.input_ids  # SGLang prefers input_ids when both are given (_tokenize_one_request)
        if ids is not None and ids and isinstance(ids[0], list):  # obj itself after n-expansion
            ids = ids[0]
        text = one.text[0] if isinstance(one.text, list) else one.text
        rid = body.get("rid") if single else one.rid
        items.append(
            Item(
                text=None if ids is not None else text,
                input_ids=list(ids) if ids is not None else None,
                params=params,
                # SGLang names a request without a rid itself; sgnb's runtime does that here
                rid=rid if isinstance(rid, str) and body.get("rid") is not None else None,
                return_logprob=_first(one.return_logprob, False),
                logprob_start_len=int(_first(one.logprob_start_len, -1)),
                top_logprobs_num=int(_first(one.top_logprobs_num, 0)),
                token_ids_logprob=_ids_of(one.token_ids_logprob),
                text_in_logprobs=bool(one.return_text_in_logprobs),
                log_metrics=bool(one.log_metrics),
                constraint=constraint_of(params),
            )
        )
    return GenerateRequest(stream=bool(obj.stream), batched=batched), items, batched


def _first(value: Any, default: Any) -> Any:
    """A per-prompt value; after SGLang's n-expansion of one prompt, lists of n equal values."""
    if isinstance(value, list):
        value = value[0] if value else None
    return default if value is None else value


def _ids_of(value: Any) -> list[int] | None:
    if not value:
        return None
    return list(value[0]) if isinstance(value[0], list) else list(value)


# ---- OpenAI /v1 -------------------------------------------------------------------------------


def parse_openai(kind: str, body: Any, context_length: int | None = None) -> Any:
    """SGLang's ``ChatCompletionRequest`` (``"chat"``) or ``CompletionRequest`` for ``body``,
    checked as ``serving_chat`` / ``serving_completions._validate_request`` check it."""
    cls = openai_class(kind)
    try:
        # the class's "before" validators edit the dict they get: give them a copy
        req = cls.model_validate(json.loads(json.dumps(body)))
    except ValidationError as exc:
        raise validation_error(exc) from None
    except (AttributeError, TypeError, KeyError) as exc:  # its "before" validators assume a dict
        raise openai_error(f"the body must be a JSON object: {exc}", "Bad Request") from None
    if kind == "chat":
        _validate_chat(req, context_length)
        refuse_unsupported(body, UNSUPPORTED_CHAT, openai_defaults("chat"))
    else:
        prompt = req.prompt
        if not prompt or (isinstance(prompt, list) and all(not p for p in prompt)):
            raise openai_error("Prompt cannot be empty")
        refuse_unsupported(body, UNSUPPORTED_COMPLETION, openai_defaults("completion"))
    return req


def _validate_chat(req: Any, context_length: int | None) -> None:
    """``OpenAIServingChat._validate_request``'s checks, with its messages, for a text-only model
    served without ``--trust-request-chat-template`` or ``--allow-auto-truncate``."""
    if not req.messages:
        raise openai_error("Messages cannot be empty.")
    kwargs = req.chat_template_kwargs or {}
    if "chat_template" in kwargs:
        raise openai_error(
            "Request-supplied chat_template is not allowed. Start the server "
            "with --trust-request-chat-template to permit it."
        )
    if req.return_sampling_mask and not req.return_meta_info:
        raise openai_error("return_sampling_mask requires return_meta_info=true.")
    if req.return_flat_raw_output_top_logprobs and not req.return_meta_info:
        raise openai_error("return_flat_raw_output_top_logprobs requires return_meta_info=true.")
    media = next(
        (
            part.type
            for m in req.messages
            if isinstance(m.content, list)
            for part in m.content
            if part.type in ("image_url", "video_url", "audio_url")
        ),
        None,
    )
    if media is not None:
        raise openai_error(f"Model only supports text input; received unsupported content type '{media}'.")
    tools = list(req.tools or []) + [
        t
        for m in req.messages
        if m.role in ("root", "system", "developer")
        for t in (getattr(m, "tools", None) or [])
    ]
    choice = req.tool_choice
    if isinstance(choice, str) and choice.lower() == "required" and not tools:
        raise openai_error("Tools cannot be empty if tool choice is set to required.")
    if choice is not None and not isinstance(choice, str):
        if not tools:
            raise openai_error("Tools cannot be empty if tool choice is set to a specific tool.")
        if not any(t.function.name == choice.function.name for t in tools):
            raise openai_error(f"Tool '{choice.function.name}' not found in tools list.")
    most = req.max_completion_tokens or req.max_tokens
    if most and context_length and most > context_length:
        raise openai_error(
            f"max_completion_tokens is too large: {most}."
            f"This model supports at most {context_length} completion tokens."
        )
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema" and getattr(fmt.json_schema, "schema_", None) is None:
        raise openai_error("schema_ is required for json_schema response format request.")


_PART_FEATURES = {
    "image_url": "image input",
    "video_url": "video input",
    "audio_url": "audio input",
    "input_audio": "audio input",
    "thinking": "thinking content parts",
    "reasoning": "thinking content parts",
    "tool_reference": "tool references",
}


def chat_messages(req: Any) -> tuple[list[dict[str, Any]], str | None]:
    """The conversation for the chat template, and the assistant prefix to continue (SGLang's
    ``continue_final_message``: the last assistant message's text, appended after the template)."""
    messages: list[dict[str, Any]] = []
    for m in req.messages:
        if getattr(m, "tool_calls", None) or getattr(m, "tools", None):
            raise Unsupported("tool_calls / tools in messages (tool calling) is not supported by sgnb serve")
        if getattr(m, "prefix", None):
            raise Unsupported("prefix (prefix completion) is not supported by sgnb serve")
        content = m.content
        if isinstance(content, list):
            for part in content:
                if part.type != "text":
                    feature = _PART_FEATURES.get(part.type, part.type)
                    raise Unsupported(
                        f"{part.type} content parts ({feature}) are not supported by sgnb serve"
                    )
            content = "".join(part.text for part in content)
        role = "system" if m.role in ("developer", "root") else m.role
        messages.append({"role": role, "content": content or ""})
    prefix = None
    if req.continue_final_message and messages and messages[-1]["role"] == "assistant":
        prefix = messages.pop()["content"]
    return messages, prefix


def openai_sampling(kind: str, req: Any, tokenizer: Any, vocab_size: int) -> dict[str, Any]:
    """The request's sampling parameters as SGLang builds them (``ChatCompletionRequest.
    to_sampling_params`` / ``OpenAIServingCompletion._build_sampling_params``), checked as
    ``/generate``'s are."""
    if kind == "chat":
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        raw = req.to_sampling_params(stop=stop, model_generation_config={})
    else:
        from sglang.srt.entrypoints.openai.serving_completions import OpenAIServingCompletion

        raw = OpenAIServingCompletion._build_sampling_params(None, req)  # uses no server state
    if raw.get("n") == 1:
        raw.pop("n")
    # max_new_tokens None: no cap but the context length, as SGLang's scheduler
    return sgnb_params(
        {k: v for k, v in raw.items() if v is not None or k == "max_new_tokens"}, tokenizer, vocab_size
    )

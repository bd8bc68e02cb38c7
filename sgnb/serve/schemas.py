"""Request bodies, checked strictly before any compute: wrong types and unknown fields are a 400.

Field names are SGLang's (``io_struct.GenerateReqInput`` for ``/generate``, the OpenAI protocol
for ``/v1``). Sampling parameters are checked against sgnb's :class:`~sgnb.params.SamplingParams`,
whose fields this module reads at import so the two never drift.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from sgnb.params import SamplingParams
from sgnb.serve.accept import (
    UNSUPPORTED_CHAT,
    UNSUPPORTED_COMPLETION,
    UNSUPPORTED_GENERATE,
    generate_defaults,
    openai_defaults,
    refuse_unsupported,
)

MAX_BATCH = 256
# SGLang treats a temperature this small as greedy; dividing logits by it would overflow.
GREEDY_EPS = 1e-5
STRICT = ConfigDict(extra="forbid", strict=True)


class BadRequest(ValueError):
    """A request the server refuses with 400 before any compute."""


def _sampling_model() -> type[BaseModel]:
    hints = typing.get_type_hints(SamplingParams)
    fields: dict[str, Any] = {
        f.name: (hints[f.name] | None, None) for f in dataclasses.fields(SamplingParams)
    }
    for name in ("stop", "stop_regex"):
        if name in fields:
            fields[name] = (str | list[str] | None, None)
    fields["json_schema"] = (str | dict[str, Any] | None, None)
    fields["max_new_tokens"] = (int | None, Field(None, ge=0))  # 0: prefill only, as SGLang
    for alias in ("seed", "random_seed"):
        fields[alias] = (int | None, None)
    return create_model("SamplingParamsIn", __config__=STRICT, **fields)


SamplingParamsIn = _sampling_model()


def check_sampling(params: Any) -> dict[str, Any]:
    """Validate types; return the keys that were set, with SGLang's greedy normalisation."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(f"sampling_params must be an object, got {type(params).__name__}")
    try:
        clean = SamplingParamsIn.model_validate(params).model_dump(exclude_none=True)
    except ValidationError as exc:
        raise BadRequest(describe(exc, "sampling_params")) from None
    temp = clean.get("temperature")
    if isinstance(temp, float | int) and 0 < temp < GREEDY_EPS:
        clean["temperature"] = 0.0
    if isinstance(clean.get("json_schema"), dict):
        clean["json_schema"] = json.dumps(clean["json_schema"])
    return clean


def describe(exc: ValidationError, where: str = "") -> str:
    """A one-line summary of pydantic's errors: ``field: message; ...``."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in (where, *err.get("loc", ())) if p != "")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


# ---- /generate --------------------------------------------------------------------------------


class GenerateRequest(BaseModel):
    # Unknown keys are ignored, as SGLang's GenerateReqInput does; see sgnb.serve.accept.
    model_config = ConfigDict(extra="ignore", strict=True)

    text: str | list[str] | None = None
    input_ids: list[int] | list[list[int]] | None = None
    sampling_params: dict[str, Any] | list[dict[str, Any]] | None = None
    rid: str | list[str] | None = None
    stream: bool = False
    return_logprob: bool | list[bool] | None = None
    logprob_start_len: int | list[int] | None = None
    top_logprobs_num: int | list[int] | None = None
    token_ids_logprob: list[int] | list[list[int]] | None = None
    return_text_in_logprobs: bool = False
    log_metrics: bool = True


@dataclass
class Item:
    """One prompt of a (possibly batched) ``/generate`` request."""

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


def _per_item(value: Any, n: int, name: str, batched: bool) -> list[Any]:
    if isinstance(value, list):
        if not batched or len(value) != n:
            raise BadRequest(f"{name} is a list of {len(value)}; expected one value or one per prompt ({n})")
        return value
    return [value] * n


def parse_generate(body: Any) -> tuple[GenerateRequest, list[Item], bool]:
    """``(request, items, batched)`` for a ``/generate`` body; BadRequest on anything wrong."""
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    refuse_unsupported(body, UNSUPPORTED_GENERATE, generate_defaults())
    try:
        req = GenerateRequest.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(describe(exc)) from None
    if (req.text is None) == (req.input_ids is None):
        raise BadRequest("pass exactly one of text or input_ids")
    texts: list[str | None]
    ids: list[list[int] | None]
    if req.text is not None:
        batched = isinstance(req.text, list)
        texts = list(req.text) if isinstance(req.text, list) else [req.text]
        ids = [None] * len(texts)
    else:
        raw: list[Any] = list(req.input_ids or [])
        batched = bool(raw) and isinstance(raw[0], list)
        ids = [list(x) for x in raw] if batched else [raw]
        texts = [None] * len(ids)
    n = len(texts)
    if n == 0:
        raise BadRequest("the batch is empty")
    if n > MAX_BATCH:
        raise BadRequest(f"a batch holds at most {MAX_BATCH} prompts, got {n}")
    if batched and req.stream:
        raise BadRequest("streaming a batch is not supported; send one request per prompt")
    params = _per_item(req.sampling_params, n, "sampling_params", batched)
    rids = (
        _per_item(req.rid, n, "rid", batched)
        if not (isinstance(req.rid, str) and batched)
        else [f"{req.rid}_{i}" for i in range(n)]
    )
    want = _per_item(req.return_logprob, n, "return_logprob", batched)
    start = _per_item(req.logprob_start_len, n, "logprob_start_len", batched)
    top = _per_item(req.top_logprobs_num, n, "top_logprobs_num", batched)
    # GenerateReqInput._normalize_logprob_params: a flat list is every prompt's, a list of lists one each.
    token_ids = req.token_ids_logprob or None
    per_ids: list[Any] = (
        _per_item(token_ids, n, "token_ids_logprob", batched)
        if token_ids and isinstance(token_ids[0], list)
        else [token_ids] * n
    )
    items = []
    for i in range(n):
        clean = check_sampling(params[i])
        items.append(
            Item(
                text=texts[i],
                input_ids=ids[i],
                params=clean,
                rid=rids[i],
                return_logprob=bool(want[i]),
                logprob_start_len=-1 if start[i] is None else int(start[i]),
                top_logprobs_num=int(top[i] or 0),
                token_ids_logprob=per_ids[i],
                text_in_logprobs=req.return_text_in_logprobs,
                log_metrics=req.log_metrics,
                constraint=next((k for k in ("regex", "json_schema", "ebnf") if k in clean), None),
            )
        )
    return req, items, batched


# ---- OpenAI /v1 -----------------------------------------------------------------------------


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class JsonSchemaSpec(_Lenient):
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class StreamOptions(_Lenient):
    include_usage: bool | None = None
    continuous_usage_stats: bool | None = None


class _OpenAICommon(BaseModel):
    # Unknown keys are ignored, as SGLang's protocol classes do; see sgnb.serve.accept.
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    # SGLang's extensions to the OpenAI protocol
    regex: str | None = None
    ebnf: str | None = None
    json_schema: str | None = None
    ignore_eos: bool | None = None
    min_tokens: int | None = None
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool | None = None
    no_stop_trim: bool | None = None

    def sampling(self) -> dict[str, Any]:
        """The request as ``/generate`` sampling parameters (checked like ``/generate``'s)."""
        names = {
            "max_tokens": "max_new_tokens",
            "min_tokens": "min_new_tokens",
            "seed": "sampling_seed",
        }
        keep = [
            "temperature",
            "top_p",
            "top_k",
            "min_p",
            "n",
            "stop",
            "frequency_penalty",
            "presence_penalty",
            "repetition_penalty",
            "regex",
            "ebnf",
            "json_schema",
            "ignore_eos",
            "stop_token_ids",
            "skip_special_tokens",
            "no_stop_trim",
        ]
        raw: dict[str, Any] = {}
        for key in (*keep, *names):
            value = getattr(self, key)
            if value is not None:
                raw[names.get(key, key)] = value
        fmt = self.response_format
        if fmt is not None and fmt.type != "text":
            if any(k in raw for k in ("regex", "ebnf", "json_schema")):
                raise BadRequest("response_format cannot be combined with regex, ebnf or json_schema")
            if fmt.type == "json_object":
                raw["json_schema"] = json.dumps({"type": "object"})
            else:
                if fmt.json_schema is None or fmt.json_schema.schema_ is None:
                    raise BadRequest('response_format json_schema needs {"json_schema": {"schema": {...}}}')
                raw["json_schema"] = json.dumps(fmt.json_schema.schema_)
        return check_sampling(raw)


class ChatCompletionRequest(_OpenAICommon):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = None

    def sampling(self) -> dict[str, Any]:
        if self.max_completion_tokens is not None and self.max_tokens is None:
            self.max_tokens = self.max_completion_tokens
        return super().sampling()


class CompletionRequest(_OpenAICommon):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None


def parse_model(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    if model is ChatCompletionRequest:
        refuse_unsupported(body, UNSUPPORTED_CHAT, openai_defaults("chat"))
    else:
        refuse_unsupported(body, UNSUPPORTED_COMPLETION, openai_defaults("completion"))
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise BadRequest(describe(exc)) from None

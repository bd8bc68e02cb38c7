"""OpenAI-compatible routes, as SGLang serves them: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

Chat prompts go through the model's own chat template; ``response_format``
``{"type": "json_schema", "json_schema": {"schema": {...}}}`` constrains the output like
``/generate``'s ``json_schema``. Streams are ``chat.completion.chunk`` / ``text_completion``
events ending in ``data: [DONE]``.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from sgnb.serve.context import ServeContext, ctx_of, json_response, read_json, vocab_size
from sgnb.serve.engine import fan_out, flatten, parallel_n
from sgnb.serve.native import DONE, sse
from sgnb.serve.openai_logprobs import chat_logprobs_of, completion_logprobs_of
from sgnb.serve.schemas import (
    MAX_BATCH,
    BadRequest,
    Item,
    chat_messages,
    constraint_of,
    openai_sampling,
    parse_openai,
)

router = APIRouter()


def finish(meta: dict[str, Any]) -> tuple[str | None, Any]:
    """OpenAI's finish_reason and SGLang's matched_stop from an sgnb finish_reason."""
    reason = meta.get("finish_reason")
    if not isinstance(reason, dict):
        return None, None
    kind = reason.get("type")
    return ("length" if kind == "length" else "stop" if kind == "stop" else str(kind)), reason.get("matched")


def usage(metas: list[dict[str, Any]], n: int = 1) -> dict[str, Any]:
    """SGLang's own ``UsageInfo`` from ``UsageProcessor.calculate_response_usage``: with ``n`` choices
    per prompt the prompt counts once (every ``n``-th response); ``reasoning_tokens`` 0 and
    ``completion_tokens_details`` null as SGLang answers them. Cached tokens are reported as with
    ``--enable-cache-report`` (what sgnb's Engine runtime sets too: sgnb is there to show them)."""
    from sglang.srt.entrypoints.openai.usage_processor import UsageProcessor

    responses = [{"meta_info": m} for m in metas]
    info = UsageProcessor.calculate_response_usage(responses, n_choices=n, enable_cache_report=True)
    return dict(info.model_dump())


def render_chat(runtime: Any, messages: list[dict[str, Any]], kwargs: dict[str, Any] | None) -> str:
    """The prompt from the model's chat template; extra template variables as SGLang passes them."""
    try:
        if kwargs:
            text = runtime.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True, **kwargs
            )
        else:
            text = runtime.apply_chat_template(messages)
    except Exception as exc:  # the template rejected the conversation (a jinja error)
        raise BadRequest(f"the chat template rejected the messages: {exc}") from None
    return str(text)


def model_card(ctx: Any, model_id: str) -> dict[str, Any]:
    """SGLang's own ``ModelCard`` as ``http_server.available_models`` fills it: ``root`` is the
    served name (not the path), ``parent`` null, ``max_model_len`` the context length."""
    from sglang.srt.entrypoints.openai.protocol import ModelCard

    card = ModelCard(id=model_id, root=model_id, max_model_len=ctx.runtime.context_length)
    return dict(card.model_dump())


@router.get("/v1/models")
async def models(request: Request) -> Response:
    ctx = ctx_of(request)
    return json_response({"object": "list", "data": [model_card(ctx, ctx.model_name)]})


@router.get("/v1/models/{model_id:path}")
async def model(request: Request, model_id: str) -> Response:
    """``http_server.retrieve_model``: the card, or its 404 ``model_not_found`` envelope."""
    ctx = ctx_of(request)
    if model_id != ctx.model_name:
        error = {
            "message": f"The model '{model_id}' does not exist",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
        return json_response({"error": error}, 404)
    return json_response(model_card(ctx, model_id))


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    ctx = ctx_of(request)
    req = parse_openai("chat", await read_json(request), ctx.runtime.context_length)
    params = openai_sampling("chat", req, ctx.runtime.tokenizer, vocab_size(ctx))
    messages, assistant_prefix = chat_messages(req)
    if req.input_ids:  # pre-computed prompt token ids bypass the template, as in SGLang
        prompt, ids = None, list(req.input_ids)
    else:
        prompt, ids = (
            await ctx.engine.call(render_chat, ctx.runtime, messages, req.chat_template_kwargs),
            None,
        )
        prompt += assistant_prefix or ""
    # OpenAIServingChat._convert_to_internal_request: logprobs -> return_logprob, output tokens only.
    client_rid = req.rid if isinstance(req.rid, str) else None
    item = Item(
        text=prompt,
        input_ids=ids,
        params=params,
        rid=client_rid,
        constraint=constraint_of(params),
        return_logprob=bool(req.logprobs),
        top_logprobs_num=req.top_logprobs or 0,
        text_in_logprobs=True,
    )
    rid = client_rid or f"chatcmpl-{uuid.uuid4().hex}"
    fan_out([item])
    if req.stream:
        chunks = await ctx.engine.open_stream(item)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            _sse(_chat_events(ctx, item, chunks, rid, include_usage, req.model), chunks),
            media_type="text/event-stream",
        )
    outs = flatten(
        [await ctx.engine.generate(item, request.is_disconnected)]
    )  # n > 1: one choice per sample, index i
    return _response(
        ctx,
        rid,
        "chat.completion",
        outs,
        len(outs),
        lambda out: {
            "message": {
                "role": "assistant",
                "content": out["text"],
                "reasoning_content": None,
                "tool_calls": None,
            }
        },
        chat_logprobs_of if req.logprobs else None,
        item.constraint,
        req.model,
    )


def _response(
    ctx: ServeContext,
    rid: str,
    obj: str,
    outs: list[dict[str, Any]],
    n: int,
    body: Callable[[dict[str, Any]], dict[str, Any]],
    logprobs: Callable[..., Any] | None,
    constraint: str | None,
    model: str,
) -> Response:
    """A whole response as ``OpenAIServingChat._build_chat_response`` /
    ``OpenAIServingCompletion._build_completion_response`` build it: one choice per result (``index``
    i; ``body(out)`` its ``message`` or ``text``), ``n`` choices per prompt for the usage."""
    choices = []
    for i, out in enumerate(outs):
        meta = out["meta_info"]
        ctx.metrics.observe(meta, streaming=False, constraint=constraint)
        reason, matched = finish(meta)
        choices.append(
            {
                "index": i,
                **body(out),
                "logprobs": logprobs(ctx, meta) if logprobs is not None else None,
                "finish_reason": reason,
                "matched_stop": matched,
            }
        )
    # the request's own model name, echoed (``model=request.model``; "default" when it named none)
    head = {"id": rid, "object": obj, "created": int(time.time()), "model": model}
    metas = [o["meta_info"] for o in outs]
    # build_endpoint_weight_version_metadata(ret[0]["meta_info"]): sgnb serves one weight version
    metadata = {"weight_version": "default"}
    return json_response({**head, "choices": choices, "usage": usage(metas, n), "metadata": metadata})


class _Chunks:
    """What every streamed chunk of one response shares, as SGLang's ``OpenAIServingChat`` /
    ``OpenAIServingCompletion`` stream them: ``id``, ``object``, ``created`` and ``model``; per choice
    (``index``, ``n > 1`` interleaved) the logprobs of its tokens not yet sent (SGLang's
    ``n_prev_token``); the usage chunk (``choices: []``) once every choice has ended."""

    def __init__(self, ctx: ServeContext, rid: str, obj: str, model: str) -> None:
        self.ctx = ctx
        self.head = {"id": rid, "object": obj, "created": int(time.time()), "model": model}
        self.seen: dict[int, int] = {}  # per choice: tokens whose logprobs were considered

    def choice(
        self,
        index: int,
        body: dict[str, Any],
        reason: str | None = None,
        matched: Any = None,
        logprobs: Any = None,
    ) -> bytes:
        """One choice's event: ``body`` is its ``delta`` (chat) or ``text`` (completion)."""
        choice = {"index": index, **body, "logprobs": logprobs, "finish_reason": reason}
        if reason is not None:
            choice["matched_stop"] = matched
        return sse({**self.head, "choices": [choice]})

    def new_logprobs(self, index: int, meta: dict[str, Any], convert: Callable[..., Any]) -> Any:
        """``convert(ctx, meta, start, end)`` of the choice's tokens since the last call, or None."""
        start, total = self.seen.get(index, 0), meta["output_token_logprobs_length"]
        self.seen[index] = total
        return convert(self.ctx, meta, start, total) if start < total else None

    def usage(self, finals: dict[int, dict[str, Any]], n: int | None = None) -> bytes:
        """The usage chunk; ``n`` choices per prompt (``calculate_streaming_usage``'s ``n_choices``:
        a prompt counts once), all of one prompt when not given."""
        metas = [finals[i] for i in sorted(finals)]
        return sse({**self.head, "choices": [], "usage": usage(metas, n or len(metas))})


def openai_stream_error(exc: BaseException) -> dict[str, Any]:
    """The error event of an OpenAI stream that failed after it started, as
    ``OpenAIServingBase.create_streaming_error_response(str(e))``: an ``ErrorResponse`` of type
    ``BadRequestError``, code 400. (``_generate_completion_stream`` sends it for any exception;
    ``_generate_chat_stream`` for a ValueError and otherwise cuts the stream off, where sgnb still
    sends the event so the client learns why.) A failure before the stream is a 400 JSON instead:
    sgnb validates in ``open_stream`` before answering, as SGLang kick-starts its generator."""
    message = str(exc) or type(exc).__name__
    return {
        "error": {
            "object": "error",
            "message": message,
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        }
    }


async def _sse(
    events: AsyncGenerator[bytes, None], chunks: AsyncGenerator[dict[str, Any], None]
) -> AsyncIterator[bytes]:
    """``events``, then ``data: [DONE]``; an error on the way is one error event (SGLang's
    ``create_streaming_error_response``) and the runtime's stream is closed however it ends."""
    try:
        async for event in events:
            yield event
    except Exception as exc:
        yield sse(openai_stream_error(exc))
    finally:
        for stream in (events, chunks):
            with contextlib.suppress(Exception):
                await stream.aclose()
    yield DONE


async def _chat_events(
    ctx: ServeContext,
    item: Item,
    chunks: AsyncGenerator[dict[str, Any], None],
    rid: str,
    include_usage: bool,
    model: str,
) -> AsyncGenerator[bytes, None]:
    """``chat.completion.chunk`` events as ``OpenAIServingChat._generate_chat_stream`` sends them: per
    choice a role chunk, then content deltas carrying their tokens' logprobs; the finish chunks after
    every choice has ended, then the usage chunk if asked."""
    out = _Chunks(ctx, rid, "chat.completion.chunk", model)
    sent: dict[int, str] = {0: ""}  # per choice: the text sent so far
    finals: dict[int, dict[str, Any]] = {}  # per choice, in the order they ended
    yield out.choice(0, {"delta": {"role": "assistant", "content": ""}})
    async for chunk in chunks:
        index = int(chunk.get("index", 0))
        meta = chunk["meta_info"]
        if index not in sent:
            sent[index] = ""
            yield out.choice(index, {"delta": {"role": "assistant", "content": ""}})
        # As SGLang: this step's new tokens ride on this step's content delta (and are dropped
        # with an empty delta, e.g. the EOS token).
        logprobs = out.new_logprobs(index, meta, chat_logprobs_of) if item.return_logprob else None
        text = chunk["text"]  # already held back as SGLang's stream (sgnb.core.detokenize)
        if len(text) > len(sent[index]) and text.startswith(sent[index]):
            yield out.choice(index, {"delta": {"content": text[len(sent[index]) :]}}, logprobs=logprobs)
            sent[index] = text
        if meta.get("finish_reason") is not None:
            ctx.metrics.observe(meta, streaming=True, constraint=item.constraint)
            finals[index] = meta
    for index, meta in finals.items():
        yield out.choice(index, {"delta": {}}, *finish(meta))
    if include_usage and finals:
        yield out.usage(finals)


def completion_items(
    prompt: Any, params: dict[str, Any], constraint: str | None, logprobs: int | None = None
) -> list[Item]:
    """One Item per prompt: a string, a list of strings, a list of token ids, or a list of those.

    ``logprobs`` is the completions API's: an int, how many top logprobs per token
    (``OpenAIServingCompletion._convert_to_internal_request``: ``return_logprob`` when it is set).
    """
    lp: dict[str, Any] = {}
    if logprobs is not None:
        lp = {"return_logprob": True, "top_logprobs_num": logprobs, "text_in_logprobs": True}
    if isinstance(prompt, str):
        return [Item(text=prompt, input_ids=None, params=params, constraint=constraint, **lp)]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return [
                Item(text=str(p), input_ids=None, params=params, constraint=constraint, **lp) for p in prompt
            ]
        if all(isinstance(p, list) for p in prompt):
            return [
                Item(text=None, input_ids=list(p), params=params, constraint=constraint, **lp) for p in prompt
            ]
        if all(isinstance(p, int) for p in prompt):
            return [Item(text=None, input_ids=list(prompt), params=params, constraint=constraint, **lp)]
    raise BadRequest("prompt must be a string, a list of strings, a list of token ids or a list of those")


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    ctx = ctx_of(request)
    req = parse_openai("completion", await read_json(request))  # max_tokens defaults to 16 there
    params = openai_sampling("completion", req, ctx.runtime.tokenizer, vocab_size(ctx))
    constraint = constraint_of(params)
    items = completion_items(req.prompt, params, constraint, req.logprobs)
    if len(items) > MAX_BATCH:
        raise BadRequest(f"at most {MAX_BATCH} prompts per request, got {len(items)}")
    rid = f"cmpl-{uuid.uuid4().hex}"
    n = fan_out(items)
    if req.stream:
        # several prompts: every output's chunks interleaved, choice index i * n + j (the batch's
        # "index", which OpenAIServingCompletion._generate_completion_stream takes as the choice's)
        if len(items) == 1:
            chunks = await ctx.engine.open_stream(items[0])
        else:
            chunks = await ctx.engine.open_batch_stream(items)
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            _sse(_completion_events(ctx, items[0], chunks, rid, include_usage, req.model), chunks),
            media_type="text/event-stream",
        )
    batch = (
        await ctx.engine.generate_batch(items) if len(items) > 1 else [await ctx.engine.generate(items[0])]
    )
    outs = flatten(batch)  # each prompt's n choices in a row (OpenAIServingCompletion: prompt = idx // n)
    return _response(
        ctx,
        rid,
        "text_completion",
        outs,
        n,
        lambda out: {"text": out["text"]},
        completion_logprobs_of if req.logprobs is not None else None,
        constraint,
        req.model,
    )


async def _completion_events(
    ctx: ServeContext,
    item: Item,
    chunks: AsyncGenerator[dict[str, Any], None],
    rid: str,
    include_usage: bool,
    model: str,
) -> AsyncGenerator[bytes, None]:
    """``text_completion`` events as ``OpenAIServingCompletion._generate_completion_stream`` sends them:
    per choice its text pieces with their tokens' logprobs, the last with its finish_reason; then the
    usage chunk if asked."""
    out = _Chunks(ctx, rid, "text_completion", model)
    sent: dict[int, str] = {}  # per choice: the text sent so far
    finals: dict[int, dict[str, Any]] = {}
    async for chunk in chunks:
        index = int(chunk.get("index", 0))
        meta = chunk["meta_info"]
        final = meta.get("finish_reason") is not None
        text = chunk["text"]  # already held back as SGLang's stream (sgnb.core.detokenize)
        before = sent.get(index, "")
        piece = text[len(before) :] if text.startswith(before) else ""
        logprobs = None
        if item.return_logprob and (piece or final):
            # SGLang sends every step's new tokens with that step's chunk; a step sgnb holds
            # back sends them with the next chunk instead, so none is lost.
            logprobs = out.new_logprobs(index, meta, completion_logprobs_of)
        if piece and not final:
            yield out.choice(index, {"text": piece}, logprobs=logprobs)
            sent[index] = text
        if final:
            ctx.metrics.observe(meta, streaming=True, constraint=item.constraint)
            finals[index] = meta
            yield out.choice(index, {"text": piece}, *finish(meta), logprobs)
    if include_usage and finals:
        yield out.usage(finals, parallel_n(item))

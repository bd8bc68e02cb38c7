"""SGLang's native routes (``sglang/srt/entrypoints/http_server.py``): ``/generate`` and friends.

``/generate`` takes ``text`` or ``input_ids`` (one prompt or a batch), ``sampling_params`` (with
``regex`` / ``json_schema`` / ``ebnf``), ``stream``, and ``return_logprob`` + ``logprob_start_len``
+ ``return_text_in_logprobs`` - what ``sglang.RuntimeEndpoint`` sends for ``gen`` and ``select``.
A stream is ``data: {...}\\n\\n`` chunks holding the text so far, then ``data: [DONE]\\n\\n``; a
streamed batch (or ``n > 1``) interleaves every output's chunks, each naming its output in ``index``
(prompt ``i``'s sample ``j`` at ``i * n + j``, as ``TokenizerManager._handle_batch_request``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from sgnb.serve.accept import Refused, Unsupported, streamed, validation_error
from sgnb.serve.context import ServeContext, ctx_of, dumps, json_response, read_json, vocab_size
from sgnb.serve.engine import fan_out, flatten
from sgnb.serve.metrics import CONTENT_TYPE
from sgnb.serve.schemas import BadRequest, Item, parse_generate

router = APIRouter()
HEALTH_TIMEOUT_S = 20.0
STARTED = time.time()


def sse(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def sglang_output(out: dict[str, Any]) -> dict[str, Any]:
    """A runtime's output with ``meta_info`` as SGLang's ``TokenizerManager._handle_batch_output``
    builds it for ``/generate``: ``weight_version`` (``"default"``) and ``num_retractions`` (sgnb's
    scheduler never retracts: 0) on every output, ``e2e_latency`` only once finished, and none of
    sgnb's own ``constraint`` (the views' label, not SGLang's API). ``ttft`` stays: sgnb's clients
    (cluster comparisons, the remote runtime's views) read it; SGLang's server has no such key."""
    meta = dict(out.get("meta_info") or {})
    meta.pop("constraint", None)
    if meta.get("finish_reason") is None:
        meta.pop("e2e_latency", None)
    meta.setdefault("weight_version", "default")
    meta.setdefault("num_retractions", 0)
    return {**out, "meta_info": meta}


def stream_error(exc: BaseException) -> dict[str, Any]:
    """The error event of a stream that failed with something other than a bad request (sgnb's own:
    SGLang's server cuts such a stream off without an event)."""
    return {"error": {"message": str(exc) or type(exc).__name__, "type": type(exc).__name__, "code": 500}}


def generate_stream_error(exc: BaseException) -> dict[str, Any]:
    """The event ``/generate`` streams for a request that failed: for a ValueError, SGLang's
    (``http_server.serve_generate_request``'s ``stream_results``: ``invalid_request_error``, the
    exception's ``status_code`` or 400, not retryable); anything else as :func:`stream_error`."""
    if not isinstance(exc, ValueError):
        return stream_error(exc)
    return {
        "error": {
            "message": str(exc),
            "type": "invalid_request_error",
            "code": getattr(exc, "status_code", 400),
            "retryable": False,
        }
    }


def refused_in_stream(exc: BaseException) -> bool:
    """Whether SGLang answers this refusal of a streamed ``/generate`` inside the stream (HTTP 200,
    one error event, ``[DONE]``) rather than with a 400 before it.

    SGLang checks a body's types (the ``GenerateReqInput`` parse) and its JSON contract before the
    stream (``http_server.generate_request``); everything else - ``normalize_batch_and_arguments``,
    ``SamplingParams.normalize`` / ``verify``, the prompt's length against the context, bad
    ``input_ids`` - runs inside ``TokenizerManager.generate_request``, whose ValueError
    ``serve_generate_request`` streams. sgnb's own refusals (a feature it lacks, its batch limit)
    stay a 400 that names them.
    """
    return isinstance(exc, ValueError) and not isinstance(exc, Refused | Unsupported | BadRequest)


@router.api_route("/generate", methods=["POST", "PUT"])
async def generate(request: Request) -> Response:
    ctx = ctx_of(request)
    body = await read_json(request)
    try:
        req, items, batched = parse_generate(body, ctx.runtime.tokenizer, vocab_size(ctx))
        n = fan_out(items)
        if req.stream:
            # a batch: every prompt's chunks interleaved, each with its "index" (as SGLang's
            # TokenizerManager._handle_batch_request in stream mode); one prompt with n > 1 gets
            # its samples' index from the runtime (sgnb.runtimes.local.parallel)
            if batched:
                chunks = await ctx.engine.open_batch_stream(items)
            else:
                chunks = await ctx.engine.open_stream(items[0])
            sent = _sse_generate(ctx, items, n, chunks)
            return StreamingResponse(sent, media_type="text/event-stream")
    except ValueError as exc:
        if refused_in_stream(exc) and streamed(body):
            return StreamingResponse(_sse_refusal(exc), media_type="text/event-stream")
        raise
    if batched:
        outs = await ctx.engine.generate_batch(items)
    else:
        outs = [await ctx.engine.generate(items[0], request.is_disconnected)]
    # n > 1 makes even one prompt a batch of n results, each prompt's n in a row
    # (GenerateReqInput._handle_parallel_sampling, TokenizerManager._handle_batch_request).
    results = flatten(outs)
    for i, out in enumerate(results):
        item = items[i // n]
        if item.log_metrics:
            ctx.metrics.observe(out["meta_info"], streaming=False, constraint=item.constraint)
    shaped = [sglang_output(out) for out in results]
    return json_response(shaped if batched or n > 1 else shaped[0])


async def _sse_generate(
    ctx: ServeContext, items: list[Item], n: int, chunks: AsyncGenerator[dict[str, Any], None]
) -> AsyncIterator[bytes]:
    """``chunks`` as SSE events, then ``[DONE]``; each output's last chunk counted in the metrics
    under its prompt (``items[index // n]``: outputs are prompt-major, ``n`` per prompt)."""
    try:
        async for chunk in chunks:  # text already held back as SGLang's stream (sgnb.core.detokenize)
            final = chunk["meta_info"].get("finish_reason") is not None
            yield sse(sglang_output(chunk))
            item = items[int(chunk.get("index", 0)) // n]
            if final and item.log_metrics:
                ctx.metrics.observe(chunk["meta_info"], streaming=True, constraint=item.constraint)
    except Exception as exc:  # the runtime failed mid-stream: tell the client, then end the stream
        yield sse(generate_stream_error(exc))
    finally:
        with contextlib.suppress(Exception):
            await chunks.aclose()
    yield DONE


async def _sse_refusal(exc: BaseException) -> AsyncIterator[bytes]:
    yield sse(generate_stream_error(exc))
    yield DONE


@router.post("/abort_request")
async def abort_request(request: Request) -> Response:
    """The body read as SGLang's ``AbortReq`` (pydantic, as FastAPI reads ``http_server.abort_request``'s):
    ``{}`` or an empty rid is a no-op 200 (``TokenizerManager.abort_request`` ignores it), a rid of
    another type SGLang's 400 validation error."""
    from pydantic import TypeAdapter, ValidationError
    from sglang.srt.managers.io_struct import AbortReq

    ctx = ctx_of(request)
    try:
        req = TypeAdapter(AbortReq).validate_python(await read_json(request))
    except ValidationError as exc:
        raise validation_error(exc) from None
    if req.abort_all:
        ctx.engine.abort_all()
    elif req.rid:
        ctx.engine.abort(req.rid)
    return Response(status_code=200)


@router.get("/health")
@router.get("/ready")
async def health(request: Request) -> Response:
    stopped = getattr(ctx_of(request).runtime, "_stopped", False)
    return Response(status_code=503 if stopped else 200)


@router.get("/health_generate")
async def health_generate(request: Request) -> Response:
    """Generate one token, as SGLang does; 503 if the runtime does not answer in time."""
    ctx = ctx_of(request)
    job = ctx.engine.call(
        ctx.runtime.generate, input_ids=[0], sampling_params={"max_new_tokens": 1, "temperature": 0}
    )
    try:
        await asyncio.wait_for(job, HEALTH_TIMEOUT_S)
    except Exception:
        return Response(status_code=503)
    return Response(status_code=200)


def _hf_config(model_path: str) -> dict[str, Any]:
    try:
        return dict(json.loads((Path(model_path) / "config.json").read_text()))
    except (OSError, ValueError):
        return {}


@router.get("/get_model_info")
@router.get("/model_info")
async def model_info(request: Request) -> Response:
    ctx = ctx_of(request)
    path = str(ctx.runtime.model_path)
    hf = _hf_config(path)
    return json_response(
        {
            "model_path": path,
            "served_model_name": ctx.model_name,
            "tokenizer_path": path,
            "is_generation": True,
            "preferred_sampling_params": None,
            "weight_version": "default",
            "has_image_understanding": False,
            "has_audio_understanding": False,
            "model_type": hf.get("model_type"),
            "architectures": hf.get("architectures"),
        }
    )


def server_args(ctx: ServeContext) -> dict[str, Any]:
    opts = dict(getattr(ctx.runtime, "options", {}))
    kv = ctx.config.kv_events_config
    return {
        "model_path": str(ctx.runtime.model_path),
        "served_model_name": ctx.model_name,
        "host": ctx.config.host,
        "port": ctx.config.port,
        "context_length": getattr(ctx.runtime, "context_length", None),
        "allow_auto_truncate": bool(getattr(ctx.runtime, "allow_auto_truncate", False)),
        "max_total_tokens": opts.get("max_total_tokens"),
        "page_size": opts.get("page_size"),
        "disable_radix_cache": opts.get("disable_radix_cache"),
        "dtype": opts.get("dtype"),
        "kv_events_config": kv if isinstance(kv, str) or kv is None else json.dumps(kv),
        "api_key_set": bool(ctx.config.api_key),
    }


@router.get("/get_server_info")
@router.get("/server_info")
async def server_info(request: Request) -> Response:
    from sgnb.core.version_check import SGLANG_PIN, SGNB_VERSION, installed_sglang

    ctx = ctx_of(request)
    state = await ctx.engine.call(ctx.runtime.cache_state)
    return json_response(
        {
            **server_args(ctx),
            "max_total_num_tokens": state.get("capacity"),
            "internal_states": [{**state, "inflight_http_requests": ctx.engine.inflight}],
            "startup_time": STARTED,
            "version": installed_sglang() or SGLANG_PIN,
            "frontend": "sgnb",
            "runtime": getattr(ctx.runtime, "kind", "local"),
            "sgnb_version": SGNB_VERSION,
        }
    )


# http_server.flush_cache's answer, word for word
FLUSHED = (
    "Cache flushed.\nPlease check backend logs for more details. "
    "(When there are running or waiting requests, the operation will not be performed.)\n"
)


@router.api_route("/flush_cache", methods=["GET", "POST"])
async def flush_cache(request: Request) -> Response:
    ctx = ctx_of(request)
    try:
        await ctx.engine.call(ctx.runtime.flush_cache)
    except RuntimeError:  # requests are running: SGLang flushes nothing (its scheduler's success=False)
        return Response("Flush cache failed.\n", status_code=400, media_type="text/plain")
    return Response(FLUSHED, status_code=200, media_type="text/plain")


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    ctx = ctx_of(request)
    state = await ctx.engine.call(ctx.runtime.cache_state)
    body = ctx.metrics.render(state, dict(getattr(ctx.runtime, "options", {})), ctx.runtime.context_length)
    return Response(body, media_type=CONTENT_TYPE)

"""A batch ``generate`` on a runtime that runs one prompt a call (sgnb's local runtime).

SGLang's ``Engine.generate`` takes a list of prompts (texts or ``input_ids`` lists) and runs them
together: ``TokenizerManager._handle_batch_request`` returns the results in prompt order, each
prompt's ``n`` samples together, and a stream's chunks name their output in ``"index"``
(``i * n + j`` for prompt ``i``'s sample ``j``). Here every prompt is its own request, submitted at
once from a thread each, so the scheduler batches them as SGLang's does.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from sgnb.runtimes.base import GenerateReqInput, params_of

_STREAM_END = object()
Single = Callable[[GenerateReqInput], Any]


def split(req: GenerateReqInput) -> list[GenerateReqInput]:
    """One request per prompt, rids as ``GenerateReqInput._normalize_rid`` gives them (a string
    ``rid`` becomes ``{rid}_{i}``; none: sgnb names them so that an interrupted batch can abort its
    own; none for an empty batch); ValueError, with SGLang's messages, for a rid neither a string nor a list of
    strings, a rid list of another length or duplicate rids (``_validate_rid_uniqueness``), and for a
    prompt that is not one text (a string) or one ``input_ids`` list of ints - all before any prompt runs."""
    text = req.text is not None
    prompts: list[Any] = list(req.text if req.text is not None else req.input_ids or [])
    for i, p in enumerate(prompts):  # a nested list would otherwise run as a batch of its own
        if text and not isinstance(p, str):
            raise ValueError(f"text[{i}] must be a string, got {type(p).__name__}")
        if not text and not (isinstance(p, list) and all(isinstance(t, numbers.Integral) for t in p)):
            raise ValueError(f"input_ids[{i}] must be one prompt's token ids (a list of ints), got {p!r:.40}")
    if isinstance(req.rid, list):
        if not all(isinstance(r, str) for r in req.rid):
            raise ValueError("The rid should be a string or a list of strings.")
        if len(req.rid) != len(prompts):
            raise ValueError("The specified rids length mismatch with the batch_size for batch processing.")
        duplicates = sorted({r for r in req.rid if req.rid.count(r) > 1})
        if duplicates:
            raise ValueError(f"Duplicate request IDs detected within the request: {duplicates}")
        rids = list(req.rid)
    elif req.rid is None or isinstance(req.rid, str):
        base = req.rid if req.rid is not None else f"sgnb-batch-{time.monotonic_ns()}"
        rids = [f"{base}_{i}" for i in range(len(prompts))]
    else:  # GenerateReqInput._normalize_rid
        raise ValueError("The rid should be a string or a list of strings.")
    return [
        dataclasses.replace(
            req,
            text=p if text else None,
            input_ids=None if text else p,
            rid=r,
            sampling_params=params_of(req.sampling_params, i),
        )
        for i, (p, r) in enumerate(zip(prompts, rids, strict=True))
    ]


def generate_batch(single: Single, req: GenerateReqInput, abort: Callable[[str], None]) -> Any:
    """``single`` run on every prompt of ``req`` at once: the list of results, or a stream.

    ``abort(rid)`` aborts a request: a Ctrl-C, a closed stream or one request's error aborts the others.
    """
    parts = split(req)
    if not parts:  # SGLang admits a batch of none and answers it with no outputs (_handle_batch_request)
        return iter(()) if req.stream else []
    n = int(params_of(req.sampling_params, 0).get("n") or 1)
    failed: set[int] = set()  # parts whose call raised: nothing of theirs runs

    def abort_all() -> None:
        for i, part in enumerate(parts):
            if i not in failed:  # a failed part's rid may name another caller's request (a duplicate)
                abort(str(part.rid))

    if req.stream:
        return _stream(single, parts, n, abort_all, failed)
    results: list[Any] = [None] * len(parts)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = single(parts[i])
        except BaseException as exc:  # re-raised on the caller's thread
            failed.add(i)
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(parts))]
    for t in threads:
        t.start()

    def settle() -> None:
        """Abort the others until every thread has returned: a part still being checked when the
        first abort went out is submitted after it, and must be aborted too."""
        while any(t.is_alive() for t in threads):
            abort_all()
            for t in threads:
                t.join(0.05)

    try:
        for t in threads:
            while t.is_alive():
                if errors:  # one prompt's error (a bad prompt) stops the others at once
                    settle()
                t.join(0.05)  # short waits keep Ctrl-C responsive
    except KeyboardInterrupt:
        settle()
        raise
    if errors:
        raise errors[0]
    flat: list[Any] = []
    for r in results:
        flat.extend(r if isinstance(r, list) else [r])
    return flat


def _stream(
    single: Single, parts: list[GenerateReqInput], n: int, abort_all: Callable[[], None], failed: set[int]
) -> Iterator[dict[str, Any]]:
    """Every prompt submitted here, at the call (a bad one raises ValueError from ``generate`` itself,
    as a one-prompt stream does); the chunks merged as they are read."""
    streams: list[Any] = []
    for i, part in enumerate(parts):
        try:
            streams.append(single(part))
        except BaseException:  # the parts already submitted would run for no one: abort them
            failed.update(range(i, len(parts)))
            abort_all()
            raise
    return _merge(streams, n, abort_all)


def _merge(streams: list[Any], n: int, abort_all: Callable[[], None]) -> Iterator[dict[str, Any]]:
    try:
        yield from interleave([functools.partial(iter, s) for s in streams], n)
    except BaseException:  # Ctrl-C, a closed stream (GeneratorExit) or one request's error
        abort_all()
        raise


def interleave(streams: list[Callable[[], Iterator[dict[str, Any]]]], n: int) -> Iterator[dict[str, Any]]:
    """Every stream's chunks as they come, stream ``i``'s chunk of sample ``j`` (its ``index``, 0
    without one) as ``index`` ``i * n + j`` (``TokenizerManager._stream_batch_responses``). Each
    stream is opened and read on a thread of its own; a stream's error is raised here, and closing
    this iterator (or an error) makes every stream stop at its next chunk."""
    chunks: queue.Queue[tuple[int, Any]] = queue.Queue()
    stop = threading.Event()

    def pump(i: int, open_stream: Callable[[], Iterator[dict[str, Any]]]) -> None:
        try:
            stream = open_stream()
            try:
                for chunk in stream:
                    if stop.is_set():
                        break
                    chunks.put((i, chunk))
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # the consumer raises it
            chunks.put((i, exc))
        finally:
            chunks.put((i, _STREAM_END))

    threads = [
        threading.Thread(target=pump, args=(i, s), name=f"sgnb-batch-{i}", daemon=True)
        for i, s in enumerate(streams)
    ]
    for thread in threads:
        thread.start()
    left = len(threads)
    try:
        while left:
            i, value = chunks.get()
            if value is _STREAM_END:
                left -= 1
            elif isinstance(value, BaseException):
                raise value
            else:
                yield {**value, "index": i * n + int(value.get("index", 0))}
    finally:
        stop.set()

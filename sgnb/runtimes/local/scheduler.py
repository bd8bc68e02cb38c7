"""The scheduler thread: continuous batching over the radix cache.

Each turn of the loop

1. takes newly submitted requests and admits as many as the KV pool can hold, reusing the
   longest cached prefix of each (``match_prefix``) and locking it;
2. packs every admitted request's pending tokens - whole uncached prompts for new requests,
   one token for those decoding - into one forward pass;
3. samples one token per request (grammar-masked where constrained), and
4. retires finished requests: their tokens and KV go into the radix tree, the lock is released.

Only this thread touches the cache and the pool, so neither needs a lock of its own.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import torch

from sgnb.core.detokenize import abort_reason
from sgnb.core.events import RequestFinished
from sgnb.runtimes.local.attention import ForwardBatch, Segment
from sgnb.runtimes.local.kv_pool import KVPool
from sgnb.runtimes.local.model import LocalModel
from sgnb.runtimes.local.radix_cache import RadixCache
from sgnb.runtimes.local.request import Request
from sgnb.runtimes.local.sampling import apply_penalties, logprob_rows, sample
from sgnb.runtimes.local.threads import REPICK_THREADS_S, pick_decode_threads

# SGLang's output streamer sends a non-streaming request's progress to its detokenizer every
# SGLANG_FORCE_STREAM_INTERVAL tokens; the text is built from those steps, so sgnb steps alike.
FORCE_STREAM_INTERVAL = 50
MAX_PREFILL_TOKENS = 8192  # per forward; bounds activation memory when many prompts arrive at once


class Scheduler:
    model: LocalModel
    pool: KVPool
    cache: RadixCache

    def __init__(self, publish: Callable[[Any], None]) -> None:
        """Start the thread; :meth:`attach` gives it the model, pool and cache it schedules over."""
        self.publish = publish
        self.inbox: queue.Queue[Request | tuple[Callable[[], Any], Future[Any]] | None] = queue.Queue()
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self.reserved = 0
        self.steps = 0
        self.threads = self.decode_threads = torch.get_num_threads()
        self._repick_at = 0.0
        self._thread = threading.Thread(target=self._loop, name="sgnb-scheduler", daemon=True)
        self._thread.start()

    def attach(self, model: LocalModel, pool: KVPool, cache: RadixCache) -> None:
        self.model, self.pool, self.cache = model, pool, cache
        self.decode_threads = self.call(lambda: pick_decode_threads(self.threads, model.probe))
        self._repick_at = time.monotonic() + REPICK_THREADS_S

    # ---- called from other threads -----------------------------------------------------

    def submit(self, req: Request) -> None:
        self.inbox.put(req)

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the scheduler thread between steps and return its result."""
        fut: Future[Any] = Future()
        self.inbox.put((fn, fut))
        return fut.result()

    def on_thread(self) -> bool:
        """Whether the caller is the scheduler thread (where ``call`` would wait on itself)."""
        return self._thread is threading.current_thread()

    def abort(self, rid: str | None, exact: bool = False, if_live: bool = False) -> None:
        """Abort every request whose rid starts with ``rid`` (SGLang's ``Scheduler.abort_request``
        matches so), only the one named ``rid`` with ``exact``, or every request when ``rid`` is None.
        ``if_live``: nothing unless a waiting or running request is named ``rid`` exactly
        (``TokenizerManager.abort_request`` sends the abort on only for a rid in its ``rid_to_state``).

        The marking runs on the scheduler thread, after everything submitted earlier has reached
        the waiting list (the inbox is FIFO), so a request aborted right after ``submit`` is not missed.
        """
        if rid == "":  # SGLang ignores an empty rid: it would prefix-match every request
            return

        def mark() -> None:
            if if_live and not any(req.rid == rid for req in self.waiting + self.running):
                return
            for req in self.waiting + self.running:
                if rid is None or req.rid == rid or (not exact and req.rid.startswith(rid)):
                    req.aborted = True

        self.inbox.put((mark, Future()))  # also wakes the loop

    def shutdown(self) -> None:
        self._stopping = True
        self.inbox.put(None)
        self._thread.join(timeout=30)

    # ---- the loop ----------------------------------------------------------------------

    _stopping = False

    def _loop(self) -> None:
        torch.set_num_threads(self.threads)
        while not self._stopping:
            self._drain_inbox(block=not self.running and not self.waiting)
            if self._stopping:
                break
            try:
                self._retire_aborted()
                self._admit()
                if self.running:
                    self._step()
            except Exception as exc:  # a bug must not kill the runtime: fail the batch, go on
                self._fail_all(exc)
        for req in self.running + self.waiting:
            self._finish(req, abort_reason("runtime stopped"))

    def _fail_all(self, exc: Exception) -> None:
        for req in self.running:
            with contextlib.suppress(Exception):  # already broken; the request still gets its error
                self._release(req)
        for req in self.running + self.waiting:
            req.error = exc
            self._finish(req, abort_reason(f"{type(exc).__name__}: {exc}", 500, "InternalServerError"))
        self.running, self.waiting = [], []

    def _drain_inbox(self, block: bool) -> None:
        item = self.inbox.get() if block else self._get_nowait()
        while item is not None or not self.inbox.empty():
            if isinstance(item, Request):
                self.waiting.append(item)
            elif isinstance(item, tuple):
                fn, fut = item
                try:
                    fut.set_result(fn())
                except BaseException as exc:
                    fut.set_exception(exc)
            item = self._get_nowait()

    def _get_nowait(self) -> Request | tuple[Callable[[], Any], Future[Any]] | None:
        try:
            return self.inbox.get_nowait()
        except queue.Empty:
            return None

    def _retire_aborted(self) -> None:
        for req in [r for r in self.waiting if r.aborted]:
            self.waiting.remove(req)
            # SGLang's reply for a request aborted before it ran (TokenizerManager._handle_abort_req).
            self._finish(req, {"type": "abort", "message": "Abort in waiting queue"})
        for req in [r for r in self.running if r.aborted]:
            self.running.remove(req)
            self._release(req)
            self._finish(req, abort_reason())  # FINISH_ABORT(): "Aborted"

    # ---- admission -----------------------------------------------------------------------

    def _admit(self) -> None:
        prefill_budget = MAX_PREFILL_TOKENS
        while self.waiting:
            req = self.waiting[0]
            # The last prompt token is always recomputed: its logits pick the first new token.
            # A scoring request needs logits from its first scored position on.
            limit = len(req.input_ids) - 1 if not req.is_score else max(0, (req.logprob_start or 0) - 1)
            if req.logprobs is not None:  # prompt logprobs need logits from logprob_start_len on
                limit = min(limit, req.input_logprob_start)  # SGLang's Req._compute_max_prefix_len
            match = self.cache.match_prefix(req.input_ids[:limit])
            new_tokens = len(req.input_ids) - match.length
            decode = 0 if req.is_score else req.params.max_new_tokens or 0  # an int after make_request
            if self.running and new_tokens > prefill_budget:
                return
            # Lock the matched prefix first: making room must not evict the KV this request reuses.
            self.cache.inc_lock_ref(match.last_node)
            if not self._make_room(new_tokens + decode):
                self.cache.dec_lock_ref(match.last_node)
                return  # wait for running requests to finish and free their slots
            self.waiting.pop(0)
            req.last_node = match.last_node
            req.protected_len = req.cached_tokens = match.length
            req.kv_indices = match.indices
            # Reserve the prefill too: it is allocated only at the next step, and requests admitted
            # in the same round must not count those slots as free.
            req.reserved = new_tokens + decode
            self.reserved += new_tokens + decode
            prefill_budget -= new_tokens
            self.running.append(req)

    def _make_room(self, need: int) -> bool:
        short = need - (self.pool.free_slots - self.reserved)
        if short > 0:
            self.cache.evict(short)
        return self.pool.free_slots - self.reserved >= need

    # ---- one forward step ----------------------------------------------------------------

    def _step(self) -> None:
        input_ids: list[int] = []
        positions: list[int] = []
        segments: list[Segment] = []
        logits_at: list[int] = []
        out_slots: list[torch.Tensor] = []
        for req in self.running:
            new = req.next_input
            start = int(req.kv_indices.numel())
            slots = self.pool.alloc(len(new))
            req.reserved -= len(new)  # prefill and decode slots were reserved at admission
            self.reserved -= len(new)
            req.kv_indices = torch.cat([req.kv_indices, slots])
            seg = Segment(q_start=len(input_ids), q_len=len(new), kv_indices=req.kv_indices)
            segments.append(seg)
            out_slots.append(slots)
            input_ids.extend(new)
            positions.extend(range(start, start + len(new)))
            if req.is_score:
                first = max(req.logprob_start or 0, 1) - 1 - start  # logits at t predict token t+1
                logits_at.extend(range(seg.q_start + first, seg.q_start + seg.q_len - 1))
            else:
                if not req.output_ids and req.input_logprob_rows:
                    first = req.input_logprob_start - start  # admission kept the prefix at most this long
                    logits_at.extend(range(seg.q_start + first, seg.q_start + seg.q_len - 1))
                logits_at.append(seg.q_start + seg.q_len - 1)
        batch = ForwardBatch(pool=self.pool, out_slots=torch.cat(out_slots), segments=segments)
        if not batch.prefills and time.monotonic() > self._repick_at:
            self.decode_threads = pick_decode_threads(self.threads, self.model.probe)  # ~30 ms
            self._repick_at = time.monotonic() + REPICK_THREADS_S
        threads = self.threads if batch.prefills else self.decode_threads
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        logits = self.model.forward(input_ids, positions, batch, logits_at)
        self.steps += 1

        row = 0
        for req in list(self.running):
            prefilled = not req.output_ids
            if req.is_score:
                row = req.take_scores(logits, row)
                self.running.remove(req)
                self._release(req)
                self._finish(req, {"type": "length", "length": 0})
                continue
            if prefilled and req.params.max_new_tokens == 0:  # prefill only, as SGLang
                if req.logprobs is not None:
                    row = req.take_input_logprobs(logits, row)
                row += 1
                self.running.remove(req)
                self._release(req)
                self._finish(req, {"type": "length", "length": 0})
                continue
            if prefilled:
                self._cache_unfinished(req)
                if req.logprobs is not None:
                    row = req.take_input_logprobs(logits, row)
            token = self._sample(req, logits[row])
            row += 1
            reason = self._append(req, token)
            if reason is not None:
                self.running.remove(req)
                self._release(req)
                self._finish(req, reason)
            elif req.stream is not None and not req.stops_held():
                req.emit()
                req.stream.put(req.result())
            elif req.stream is None and len(req.output_ids) % FORCE_STREAM_INTERVAL == 0:
                req.emit()  # SGLang sends a non-streaming request's text every 50 tokens too

    def _sample(self, req: Request, logits: torch.Tensor) -> int:
        params = req.params
        # The model's logits are inference tensors: edit a normal copy in place (penalties, bans).
        original = logits
        logits = original.clone()
        banned: list[int] = []
        if len(req.output_ids) < params.min_new_tokens:
            banned = list(params.stop_token_ids) + (
                [] if params.ignore_eos else list(self.model.eos_token_ids)
            )
            logits[banned] = float("-inf")
        apply_penalties(logits, params, req.output_ids)
        trace, unconstrained = req.trace, None
        if req.grammar is not None:
            if trace is not None:  # the token view: what the model wanted before the grammar masks it
                unconstrained = trace.before_grammar(logits, 1.0 if params.greedy else params.temperature)
            req.grammar.apply(logits)
            if banned and not torch.isfinite(logits).any():
                # min_new_tokens banned the only tokens the grammar allows (its end): the grammar wins.
                logits = original.clone()
                apply_penalties(logits, params, req.output_ids)
                req.grammar.apply(logits)
        token = sample(logits, params, req.generator)
        if req.logprobs is not None:  # only when asked: a log-softmax over the vocabulary per token
            opts = req.logprobs.options
            temperature = 1.0 if params.greedy else params.temperature
            rows = logprob_rows(
                logits.unsqueeze(0), [token], opts.top_logprobs_num, opts.token_ids_logprob, temperature
            )
            req.logprobs.add_output(token, rows)
        if trace is not None:
            self.publish(trace.after_sample(req, token, logits, unconstrained))
        return token

    def _append(self, req: Request, token: int) -> dict[str, Any] | None:
        """Add ``token`` to ``req``; return a finish reason when the request is done.

        The checks and their order are SGLang's ``Req.update_finish_state`` (see
        :meth:`sgnb.core.detokenize.StopChecker.finish_reason_after`); grammar termination comes last.
        """
        if req.first_token_at is None:
            req.first_token_at = time.perf_counter()
        req.output_ids.append(token)
        if req.grammar is not None and not req.grammar.accept(token):
            return abort_reason(f"grammar rejected token {token}")
        assert req.stops is not None
        reason = req.stops.finish_reason_after(req.output_ids)
        if reason is None and req.grammar is not None and req.grammar.is_terminated():
            reason = {"type": "stop", "matched": token}
        return reason

    # ---- putting KV into the tree --------------------------------------------------------

    def _cache_unfinished(self, req: Request) -> None:
        """Share a just-prefilled prompt with other requests now, not only when it finishes."""
        if self.cache.disable:
            return
        tokens = req.kv_tokens
        already = self.cache.insert(tokens, req.kv_indices)
        self.pool.free(req.kv_indices[req.protected_len : already])  # computed twice: keep the tree's
        match = self.cache.match_prefix(tokens)
        req.kv_indices = torch.cat([match.indices, req.kv_indices[match.length :]])
        self.cache.inc_lock_ref(match.last_node)
        assert req.last_node is not None
        self.cache.dec_lock_ref(req.last_node)
        req.last_node, req.protected_len = match.last_node, match.length

    def _release(self, req: Request) -> None:
        """Hand a retiring request's KV to the tree (or back to the pool) and drop its lock."""
        self.reserved -= req.reserved
        req.reserved = 0
        if req.last_node is None:
            return
        if self.cache.disable:
            self.pool.free(req.kv_indices)
        else:
            n = int(req.kv_indices.numel())
            already = self.cache.insert(req.kv_tokens, req.kv_indices)
            self.pool.free(req.kv_indices[req.protected_len : already])
            aligned = n // self.cache.page_size * self.cache.page_size
            self.pool.free(req.kv_indices[aligned:])  # a partial last page is not cached
        self.cache.dec_lock_ref(req.last_node)
        req.last_node = None

    def _finish(self, req: Request, reason: dict[str, Any]) -> None:
        req.finish_reason = reason
        req.emit(finished=True)
        meta = req.meta_info()
        self.publish(
            RequestFinished(
                rid=req.rid,
                prompt_tokens=len(req.input_ids),
                cached_tokens=req.cached_tokens,
                completion_tokens=len(req.output_ids),
                ttft=meta.get("ttft", meta["e2e_latency"]),
                e2e_latency=meta["e2e_latency"],
                finish_reason=reason,
                constraint=req.params.constraint[0] if req.params.constraint else None,
                constraint_source=req.params.constraint[1] if req.params.constraint else None,
                output_ids=list(req.output_ids),
                prompt_ids=list(req.input_ids),
                logprobs=None if req.logprobs is None else {k: meta[k] for k in meta if "logprobs" in k},
                token_trace=None if req.trace is None else list(req.trace.steps),
            )
        )
        if req.stream is not None:
            req.stream.put(req.result())
            req.stream.put(None)
        req.done.set()

"""``LocalRuntime``: sgnb's reference engine behind the same API as the other runtimes."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import psutil
import torch

from sgnb.core.detokenize import IncrementalDetokenizer, StopChecker
from sgnb.core.events import EventHub, KVEvent, Subscriber
from sgnb.core.grammar import GrammarCompiler
from sgnb.core.logprobs import LogprobOptions, LogprobTrack
from sgnb.core.models import resolve_model
from sgnb.core.params import SamplingParams
from sgnb.core.token_trace import TRACE_TOP_K
from sgnb.core.version_check import installed_sglang
from sgnb.runtimes import options as start_options
from sgnb.runtimes.base import GenerateReqInput, Runtime, is_batch, one_prompt, params_of
from sgnb.runtimes.batch import generate_batch
from sgnb.runtimes.local.inputs import RidClaims, fit_context, tokenize
from sgnb.runtimes.local.kv_pool import KVPool
from sgnb.runtimes.local.model import LocalModel, parse_dtype
from sgnb.runtimes.local.parallel import generate_n, parallel_n
from sgnb.runtimes.local.radix_cache import RadixCache
from sgnb.runtimes.local.request import Request, TokenTrace
from sgnb.runtimes.local.scheduler import Scheduler
from sgnb.runtimes.local.stats import RuntimeStats

if TYPE_CHECKING:
    from sgnb.runtimes.backend import SgnbBackend

DEFAULT_MAX_TOTAL_TOKENS = start_options.LOCAL_MAX_TOTAL_TOKENS
T = TypeVar("T")


class LocalRuntime(Runtime):
    """Load a model and serve it from a scheduler thread with a radix prefix cache."""

    kind = "local"

    def __init__(
        self,
        model: str = "bundled",
        *,
        max_total_tokens: int = DEFAULT_MAX_TOTAL_TOKENS,
        page_size: int = 1,
        disable_radix_cache: bool = False,
        dtype: str | torch.dtype = "bfloat16",
        threads: int | None = None,
        context_length: int | None = None,
        allow_auto_truncate: bool = False,
        hub: EventHub | None = None,
    ) -> None:
        start_options.check(  # the table's types and ranges, one line each (sgnb.runtimes.options)
            "local",
            {
                "max_total_tokens": max_total_tokens,
                "page_size": page_size,
                "disable_radix_cache": disable_radix_cache,
                "dtype": dtype,
                "threads": threads,
                "context_length": context_length,
                "allow_auto_truncate": allow_auto_truncate,
            },
        )
        torch_dtype = parse_dtype(dtype)
        if threads is not None:
            torch.set_num_threads(threads)
        started = time.perf_counter()
        self.model_name = model
        self.model_path = resolve_model(model)
        self.hub = hub or EventHub()
        # Every tensor operation of this runtime, loading included, runs on the scheduler thread: a
        # thread that never starts an OpenMP team of its own keeps the scheduler's team spinning
        # (see threads.pick_decode_threads).
        self.scheduler = Scheduler(self.hub.publish)
        try:
            self.model, self.pool, self.cache = self.scheduler.call(
                lambda: self._load(torch_dtype, max_total_tokens, page_size, disable_radix_cache)
            )
            self.scheduler.attach(self.model, self.pool, self.cache)
        except BaseException:
            self.scheduler.shutdown()
            raise
        self.tokenizer = self.model.tokenizer
        self.context_length = min(context_length or self.model.context_length, self.model.context_length)
        self.allow_auto_truncate = allow_auto_truncate
        self.grammars = GrammarCompiler(self.tokenizer, self.model.vocab_size)
        self.stats = RuntimeStats()
        self._unsubscribe = self.hub.subscribe(self.stats.observe)
        self.load_time = time.perf_counter() - started
        self.options = {
            "max_total_tokens": max_total_tokens,
            "page_size": page_size,
            "disable_radix_cache": disable_radix_cache,
            "dtype": str(torch_dtype).removeprefix("torch."),
            "threads": self.scheduler.threads,
            "context_length": self.context_length,
            "allow_auto_truncate": self.allow_auto_truncate,
        }
        self._token_texts: dict[int, str] = {}
        self.trace_top_k = 0  # > 0: trace every request (sgnb.core.token_trace.tracing, the token view)
        self._stopped = False
        self._backend: SgnbBackend | None = None
        self._rids = RidClaims()  # the requests submitted by rid, for duplicate checks

    def _load(
        self, dtype: torch.dtype, max_total_tokens: int, page_size: int, disable_radix_cache: bool
    ) -> tuple[LocalModel, KVPool, RadixCache]:
        model = LocalModel(self.model_path, dtype)
        pool = KVPool(max_total_tokens, model.num_layers, model.kv_heads, model.head_dim, dtype)
        cache = RadixCache(
            page_size=page_size, free_slots=pool.free, on_event=self.hub.publish, disable=disable_radix_cache
        )
        return model, pool, cache

    # ---- requests ----------------------------------------------------------------------

    def make_request(
        self,
        prompt: str | None = None,
        *,
        input_ids: list[int] | None = None,
        sampling_params: dict[str, Any] | None = None,
        stream: bool = False,
        rid: str | None = None,
        **kwargs: Any,
    ) -> Request:
        """Validate everything a request needs before any compute; raise ValueError on bad input.

        Lengths are judged as SGLang's: ``TokenizerManager._validate_one_request`` (the prompt must be
        shorter than the context length; an explicit ``max_new_tokens`` must fit beside it), then the
        scheduler's ``init_req_max_new_tokens`` / ``validate_input_length`` (``max_req_len`` is one
        less than the context length or the KV pool, the prompt must stay 5 tokens short of it, and
        ``max_new_tokens`` - None meaning no cap - is clamped to what is left). With
        ``allow_auto_truncate`` the prompt and ``max_new_tokens`` are cut instead, as SGLang's
        ``--allow-auto-truncate``. ``rid`` names the request for :meth:`abort`.
        """
        self._check_running()
        kwargs = dict(kwargs)
        # Request-level fields of SGLang's GenerateReqInput, not sampling parameters.
        logprobs = LogprobOptions.pop_from(kwargs, self.model.vocab_size)
        raw = {**(sampling_params or {}), **kwargs}
        params = SamplingParams.from_dict(raw)
        if any(not 0 <= t < self.model.vocab_size for t in params.stop_token_ids):
            raise ValueError(
                f"stop_token_ids must be in [0, {self.model.vocab_size}), got {params.stop_token_ids}"
            )
        if rid is not None and not isinstance(rid, str):
            raise ValueError(f"rid must be a string, got {type(rid).__name__}")
        ids = tokenize(self.tokenizer, self.model.vocab_size, prompt, input_ids)
        limits = (self.context_length, self.pool.capacity, self.allow_auto_truncate)
        ids = fit_context(ids, params, raw.get("max_new_tokens"), *limits)
        grammar = None
        if params.constraint is not None:
            grammar = self.grammars.matcher(self.grammars.compile(*params.constraint))
        req = Request(input_ids=ids, params=params, grammar=grammar, stream=queue.Queue() if stream else None)
        if logprobs.return_logprob:
            req.input_logprob_start = logprobs.resolve_start(len(ids))
            req.logprobs = LogprobTrack(logprobs)
            req.token_text = self.token_text
        if logprobs.return_logprob or self.trace_top_k:  # sgnb.core.token_trace: only when asked
            req.trace = TokenTrace(logprobs.top_logprobs_num or self.trace_top_k or TRACE_TOP_K)
        if rid is not None:
            req.rid = rid
        req.stops = StopChecker(
            self.tokenizer,
            stop=params.stop,
            stop_regex=params.stop_regex,
            stop_token_ids=params.stop_token_ids,
            eos_token_ids=self.model.eos_token_ids,
            ignore_eos=params.ignore_eos,
            max_new_tokens=params.max_new_tokens,
        )
        req.detok = IncrementalDetokenizer(
            self.tokenizer,
            ids,
            skip_special_tokens=params.skip_special_tokens,
            spaces_between_special_tokens=params.spaces_between_special_tokens,
            no_stop_trim=params.no_stop_trim,
        )
        if params.sampling_seed is not None:
            req.generator = torch.Generator().manual_seed(int(params.sampling_seed))
        return req

    def token_text(self, token: int) -> str:
        """One token's text, as ``return_text_in_logprobs`` shows it (memoised: the scheduler asks per token)."""
        text = self._token_texts.get(token)
        if text is None:
            text = self._token_texts[token] = str(self.tokenizer.decode([token]))
        return text

    def _generate_request(self, call: GenerateReqInput) -> Any:
        """:meth:`Runtime.generate` here, one prompt a call: logprobs are computed only for requests
        that ask. Streamed text is held back while it ends in an incomplete character or part of a
        stop string, as SGLang's stream. The text is SGLang's: the matched stop string / stop token /
        EOS trimmed unless ``no_stop_trim``. ValueError on bad input (:meth:`make_request`), before
        any compute; an interrupted call (KeyboardInterrupt, a closed stream) aborts the request and
        frees its KV.

        ``n > 1`` (a sampling parameter) returns a list of ``n`` results, the prompt prefilled once
        and shared through the radix cache; streamed, every chunk names its sample in ``index``
        (see :mod:`sgnb.runtimes.local.parallel`).
        """
        if is_batch(call):  # SGLang's batch: every prompt at once (sgnb.runtimes.batch)
            return generate_batch(self._generate_request, call, self.abort)
        prompt, input_ids, rid = one_prompt(call)
        sampling_params, stream, kwargs = params_of(call.sampling_params, 0), call.stream, call.logprob
        n = parallel_n(sampling_params, kwargs)
        if n > 1:
            return generate_n(self, n, prompt, input_ids, sampling_params, stream, kwargs, rid)
        req = self.make_request(
            prompt, input_ids=input_ids, sampling_params=sampling_params, stream=stream, rid=rid, **kwargs
        )
        self._rids.claim(req)
        self.scheduler.submit(req)
        if stream:
            return self._stream(req)
        return self._wait(req)

    def _wait(self, req: Request) -> dict[str, Any]:
        try:
            while not req.done.wait(0.05):  # short waits keep KeyboardInterrupt responsive
                pass
        except KeyboardInterrupt:
            self.scheduler.abort(req.rid, exact=True)
            req.done.wait(30)
            raise
        if req.error is not None:
            raise RuntimeError(f"request failed: {req.error}") from req.error
        return req.result()

    def _stream(self, req: Request) -> Iterator[dict[str, Any]]:
        assert req.stream is not None
        try:
            while True:
                chunk = req.stream.get()
                if chunk is None:
                    break
                yield chunk
        finally:
            if not req.done.is_set():  # the consumer stopped early or was interrupted
                self.scheduler.abort(req.rid, exact=True)
        if req.error is not None:
            raise RuntimeError(f"request failed: {req.error}") from req.error

    def score(self, prompt_ids: list[int], continuation_ids: list[int]) -> list[float]:
        """Logprob of each continuation token after ``prompt_ids`` (what ``select`` needs)."""
        self._check_running()
        if not prompt_ids or not continuation_ids:
            raise ValueError("score needs a non-empty prompt and continuation")
        ids = list(prompt_ids) + list(continuation_ids)
        if len(ids) > min(self.context_length, self.pool.capacity):
            raise ValueError(f"prompt + continuation is {len(ids)} tokens; too long for this runtime")
        req = Request(input_ids=ids, params=SamplingParams(max_new_tokens=1), logprob_start=len(prompt_ids))
        self.scheduler.submit(req)
        return list(self._wait(req)["meta_info"]["input_token_logprobs"])

    def abort(self, rid: str, if_live: bool = False) -> None:
        """Abort the requests whose rid starts with ``rid``, as SGLang's scheduler; with ``if_live``
        only when a waiting or running request is named ``rid`` exactly, as SGLang's ``/abort_request``
        (``TokenizerManager.abort_request`` drops an abort for a rid it does not hold).

        A request aborted while waiting finishes with ``{"type": "abort", "message": "Abort in
        waiting queue"}``, a running one with ``FINISH_ABORT()``'s ``{"type": "abort", "message":
        "Aborted", ...}`` and the text so far; either way its KV is released.
        """
        self.scheduler.abort(rid, if_live=if_live)

    def abort_all(self) -> None:
        """Abort every waiting and running request (``/abort_request {"abort_all": true}``)."""
        self.scheduler.abort(None)

    # ---- cache and lifecycle ---------------------------------------------------------------

    def flush_cache(self) -> None:
        """Empty the radix cache, as SGLang's ``/flush_cache``; refuses while requests run."""
        self._check_running()

        def flush() -> None:
            if self.scheduler.running or self.scheduler.waiting:
                raise RuntimeError("cannot flush the cache while requests are running")
            self.cache.reset()
            self.pool.reset()

        self.scheduler.call(flush)

    flush = flush_cache

    def cache_state(self) -> dict[str, int]:
        """Pool accounting, read on the scheduler thread so the numbers are consistent."""

        def read() -> dict[str, int]:
            return {
                "capacity": self.pool.capacity,
                "free": self.pool.free_slots,
                "used": self.pool.used_slots,
                "cached": self.cache.total_size(),
                "evictable": self.cache.evictable_size,
                "protected": self.cache.protected_size,
                "running": len(self.scheduler.running),
                "waiting": len(self.scheduler.waiting),
            }

        return dict(self.scheduler.call(read))

    # ---- what a late subscriber needs (sgnb.core.events.TreeSource) ------------------------------

    def replay_tree(self) -> list[KVEvent]:
        """The cached tree as sgnb KV events (``BlockStored``, parents first), read on the scheduler thread."""
        return list(self._on_scheduler(self.cache.stored_events))

    def follow(self, subscriber: Subscriber) -> Callable[[], None]:
        """Replay the cached tree to ``subscriber``, then subscribe it to the hub, both on the scheduler
        thread where every KV event is published: it neither misses an event nor sees one twice."""

        def replay_then_subscribe() -> Callable[[], None]:
            for event in self.cache.stored_events():
                subscriber(event)
            return self.hub.subscribe(subscriber)

        return self._on_scheduler(replay_then_subscribe)

    def _on_scheduler(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the scheduler thread; here when stopped (nothing publishes) or already on it."""
        if self._stopped or self.scheduler.on_thread():
            return fn()
        return self.scheduler.call(fn)

    @property
    def backend(self) -> SgnbBackend:
        """This runtime as an sglang frontend backend: ``sgl.set_default_backend(rt.backend)``."""
        if self._backend is None:
            from sgnb.runtimes.backend import SgnbBackend  # imports sglang: 5-10 s, only when the DSL is used

            self._backend = SgnbBackend(self)
        return self._backend

    def status(self) -> dict[str, Any]:
        cache = self.cache_state() if not self._stopped else {}
        return {
            "runtime": self.kind,
            "model": self.model_name,
            "model_path": str(self.model_path),
            "device": "cpu",
            "state": "stopped" if self._stopped else "running",
            **self.options,
            "decode_threads": self.scheduler.decode_threads,  # re-picked while running
            "kv_pool_mib": round(self.pool.nbytes() / 2**20, 1),
            "rss_mib": round(psutil.Process().memory_info().rss / 2**20, 1),
            "cache_tokens": cache.get("cached", 0),
            "cache_capacity": self.pool.capacity,
            "requests": self.stats.requests,
            "hit_rate": round(self.stats.hit_rate, 4),
            "load_time_s": round(self.load_time, 2),
            "sglang_version": installed_sglang(),
        }

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return str(
            self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        )

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.scheduler.shutdown()
        self._unsubscribe()
        # A stopped runtime often stays referenced (a %%sglang -o state holds SGLang's executor, which
        # holds the DSL backend; IPython's Out holds views): without this each stop/start cycle in a
        # kernel kept its weights and KV pool (RSS 1787 -> 2617 MiB measured over one cycle).
        self.model.release()
        self.pool.release()

    shutdown = stop

    def _check_running(self) -> None:
        if self._stopped:
            raise RuntimeError("this runtime is stopped; start a new one with sgnb.start()")

    def __enter__(self) -> LocalRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "stopped" if self._stopped else "running"
        return f"<LocalRuntime model={self.model_name!r} {state}>"

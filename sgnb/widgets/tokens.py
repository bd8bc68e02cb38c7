"""``TokenView``: every prompt and output token of a request as a chip, typed by where it came from.

    TokenView.from_request(rt, prompt, regex=r"\\d{3}-\\d{4}", max_new_tokens=12)   # run one, show it
    view = TokenView(rt); view                  # or display first: chips grow as tokens are sampled
    out = view.generate(prompt, json_schema=schema, max_new_tokens=40)
    TokenView.from_finished(event, rt)          # a RequestFinished (``%sglang tokens``)

Prompt chips are *cached* (served by the radix cache: the request's ``cached_tokens``) or
*prefilled*; output chips *generated*, *forced* (the grammar allowed one token) or *constrained*
(sampled from a masked distribution). Colour by type, probability or latency (``color_by``); hover
a chip for its probability, rank, top-k and, on constrained steps, the model's own top-k with the
choices the grammar masked out. ``set_choices`` adds a ``select``'s normalised logprobs.

Where the numbers come from: on the local runtime, the scheduler's trace hook
(:mod:`sgnb.core.token_trace`, published as ``TokenStep`` events); on sglang.Engine and a server, SGLang's
``meta_info`` (``output_token_logprobs``, ``output_top_logprobs``, ``cached_tokens``), the grammar
replayed over the output for the allowed counts, and chunk arrival times for latency. Only the local
runtime can show the unconstrained top-k: SGLang returns the logprobs of the masked distribution.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import traitlets as t

from sgnb.core.events import RequestFinished, TokenStep
from sgnb.core.grammar import GrammarReplay
from sgnb.core.token_trace import TRACE_TOP_K, tracing
from sgnb.widgets._base import SgnbWidget
from sgnb.widgets._token_rows import KINDS, Row, render_static, row_view
from sgnb.widgets.cache_panel import view_module
from sgnb.widgets.program import choice_rows

COLOR_BY = ("type", "prob", "latency")


class TokenView(SgnbWidget):
    _esm = view_module("tokens.js", stop=False)

    view_json = t.Bytes(b"{}").tag(sync=True)  # rows as UTF-8 JSON (see _token_rows)
    color_by = t.Unicode("type").tag(sync=True)
    title = t.Unicode("Tokens").tag(sync=True)

    def __init__(
        self,
        source: Any = None,
        *,
        follow: bool = True,
        color_by: str = "type",
        max_rows: int = 32,
        title: str = "Tokens",
        interval: float = 0.1,
    ) -> None:
        """``source``: a runtime (its hub and tokenizer) or None; ``follow``: show every traced request."""
        if color_by not in COLOR_BY:
            raise ValueError(f"color_by must be one of {', '.join(COLOR_BY)}, got {color_by!r}")
        super().__init__(interval=interval, color_by=color_by, title=title)
        self.runtime = source
        tok = getattr(source, "tokenizer", None)
        self._tokenizer = tok
        self._texts: dict[int, str] = {}
        self._lock = threading.Lock()
        self._rows: dict[str, Row] = {}
        self._replays: dict[str, GrammarReplay | None] = {}
        self._choices: dict[str, list[dict[str, Any]]] = {}
        self._pending: list[RequestFinished] = []  # untraced requests to add (on the throttle's thread)
        self.max_rows = max_rows
        self._view: dict[str, Any] = {"rows": [], "choices": {}}
        hub = getattr(source, "hub", None)
        self._unsubscribe: Callable[[], None] | None = (
            hub.subscribe(self.observe_event) if hub is not None and follow else None
        )
        self.observe(lambda _: self.request_update(), names=["color_by"])
        self._refresh()

    # ---- building ------------------------------------------------------------------------

    @classmethod
    def from_request(
        cls, runtime: Any, prompt: str | None = None, *, input_ids: list[int] | None = None, **kwargs: Any
    ) -> TokenView:
        """Run one request on ``runtime`` (any sgnb runtime) and return its view; ``view.result`` is
        what ``generate`` returned. Keywords are sampling parameters plus ``top_k`` (alternatives per
        step, default 5) and ``color_by``."""
        view = cls(runtime, follow=False, color_by=kwargs.pop("color_by", "type"))
        view.generate(prompt, input_ids=input_ids, **kwargs)
        return view

    @classmethod
    def from_finished(cls, event: RequestFinished, runtime: Any = None, **options: Any) -> TokenView:
        """The view of a request that has finished (the session keeps them: ``%sglang tokens``)."""
        view = cls(runtime, follow=False, **options)
        view.add_finished(event)
        return view

    def generate(
        self,
        prompt: str | None = None,
        *,
        input_ids: list[int] | None = None,
        top_k: int = TRACE_TOP_K,
        **sampling: Any,
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Run ``prompt`` on the view's runtime, streaming its tokens into the view; return the result
        (for ``n > 1`` the list of ``n`` results, as SGLang returns it; one row per sample).

        Asks for ``return_logprob`` with ``top_logprobs_num=top_k`` (SGLang's request fields), so
        ``result["meta_info"]`` holds the numbers the chips show. ValueError on bad input, as ``generate``.
        """
        rt = self.runtime
        if rt is None:
            raise ValueError("this TokenView has no runtime: TokenView(rt)")
        if not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive int, got {top_k!r}")
        sampling = {"return_logprob": True, "top_logprobs_num": top_k, **sampling}
        kind, source = _constraint(sampling)
        local = hasattr(rt, "trace_top_k")
        off = rt.hub.subscribe(self.observe_event) if local and self._unsubscribe is None else None
        # n > 1 (SGLang's parallel sampling): chunks of every sample, each with its "index"
        last: dict[int, dict[str, Any]] = {}
        started = time.perf_counter()
        prev: dict[int, float] = {}
        ids = input_ids if input_ids is not None or local else self._encode(prompt or "")
        try:
            with tracing(rt, top_k):
                chunks: Iterator[dict[str, Any]] = rt.generate(
                    prompt, input_ids=input_ids, stream=True, **sampling
                )
                for chunk in chunks:
                    index = int(chunk.get("index", 0))
                    last[index] = chunk
                    if not local:  # the engine and servers: SGLang's meta_info is all there is
                        now = time.perf_counter()
                        ms = (now - prev.get(index, started)) * 1000
                        self._feed_chunk(chunk, ids or [], ms, kind, source)
                        prev[index] = now
        finally:
            if off is not None:
                off()
        if not last:
            raise RuntimeError("the request returned no output")
        results = [last[i] for i in sorted(last)]
        rids = {str(r.get("meta_info", {}).get("id", "")) for r in results}
        with self._lock:
            for rid in rids:
                if not local and rid in self._rows:
                    self._rows[rid].done = True
            if self._unsubscribe is None:  # a one-request view keeps only its request's samples
                self._rows = {k: v for k, v in self._rows.items() if k in rids}
        self.result: dict[str, Any] | list[dict[str, Any]] = results[0] if len(results) == 1 else results
        self.elapsed = time.perf_counter() - started
        self._throttle.flush()
        self._refresh()
        return self.result

    def observe_event(self, event: Any) -> None:
        """Hub subscriber (the runtime's thread): a ``TokenStep`` grows its row; a ``RequestFinished``
        closes it, or adds it whole when it was not traced (engine, server, an untraced request)."""
        if isinstance(event, TokenStep):
            with self._lock:
                row = self._rows.get(event.rid)
                if row is None:
                    row = self._new_row(event.rid)
                if event.prompt_ids is not None:
                    row.prompt_ids, row.cached = list(event.prompt_ids), int(event.cached_tokens)
                    row.constraint, row.source = event.constraint, event.constraint_source
                row.steps.append(event.step)
            self.request_update()
        elif isinstance(event, RequestFinished):
            with self._lock:
                row = self._rows.get(event.rid)
                if row is not None:
                    row.done, row.finish = True, _finish(event.finish_reason)
            if row is None and event.completion_tokens > 0:  # scoring requests (select) have no tokens
                with self._lock:  # built on the throttle's thread: a grammar replay has no place here
                    self._pending.append(event)
            self.request_update()

    def add_finished(self, event: RequestFinished) -> None:
        """Add a whole request from its ``RequestFinished``: the trace if it has one, else its logprobs,
        else only its token ids (kinds from ``cached_tokens`` and the grammar replayed)."""
        self._add_finished_row(event)
        self.request_update()

    def _add_finished_row(self, event: RequestFinished) -> None:
        steps = list(event.token_trace or [])
        if not steps:
            steps = _steps_from_meta(event.logprobs or {}, event.output_ids)
            replay = None
            if event.constraint and event.constraint_source and self.runtime is not None:
                try:
                    replay = GrammarReplay(self.runtime, event.constraint, event.constraint_source)
                except ValueError:  # a server whose tokenizer is not readable here: kinds unknown
                    replay = None
            if replay is not None:
                for step in steps:
                    n = replay.feed(step["id"])
                    if n is not None:
                        step["n"] = n
        with self._lock:
            row = self._new_row(event.rid)
            row.prompt_ids, row.cached = list(event.prompt_ids), int(event.cached_tokens)
            row.constraint, row.source = event.constraint, event.constraint_source
            row.steps, row.done, row.finish = steps, True, _finish(event.finish_reason)
            row.has_probs = any("lp" in s for s in steps)

    def set_choices(self, var: str, choices: Mapping[str, float], picked: str | None = None) -> None:
        """A ``select``: each choice's normalised (per-token mean) logprob, as SGLang's
        ``token_length_normalized`` ranks them."""
        with self._lock:
            self._choices[var] = choice_rows(choices, picked)
        self.request_update()

    def add_program_state(self, state: Any) -> None:
        """The ``select`` calls of an SGLang program state (``meta_info[var]["normalized_prompt_logprobs"]``)."""
        executor = state.stream_executor
        for var, meta in dict(executor.meta_info).items():
            if not isinstance(meta, dict):  # gen(n > 1): a list of the samples' meta_info, no choices
                continue
            normalized = (meta or {}).get("normalized_prompt_logprobs")
            options = (meta or {}).get("input_token_logprobs")
            if not normalized or not options:
                continue
            # the scored tokens' text: a choice as the model saw it, token healing included (" yes")
            labels = ["".join(str(e[2] or "") for e in opt) for opt in options]
            decision = str(executor.variables.get(var, ""))
            picked = next((lb for lb in labels if lb == decision), None) or next(
                (lb for lb in labels if decision and lb.endswith(decision)), None
            )
            self.set_choices(var, dict(zip(labels, normalized, strict=False)), picked)

    def _new_row(self, rid: str) -> Row:
        row = self._rows[rid] = Row(rid)
        while len(self._rows) > self.max_rows:
            del self._rows[next(iter(self._rows))]
        return row

    def _feed_chunk(
        self, chunk: dict[str, Any], prompt_ids: list[int], ms: float, kind: str | None, source: str | None
    ) -> None:
        meta = chunk.get("meta_info", {})
        rid = str(meta.get("id", "request"))
        ids = list(chunk.get("output_ids") or [e[1] for e in meta.get("output_token_logprobs", [])])
        with self._lock:
            row = self._rows.get(rid)
            if row is None:
                row = self._new_row(rid)
                row.prompt_ids, row.constraint, row.source = list(prompt_ids), kind, source
                self._replays[rid] = GrammarReplay(self.runtime, kind, source) if kind and source else None
            row.cached = int(meta.get("cached_tokens", 0))
            new = _steps_from_meta(meta, ids)[len(row.steps) :]
            replay = self._replays.get(rid)
            for step in new:
                step["ms"] = ms / len(new)  # chunk arrival; SGLang streams one chunk per token by default
                n = replay.feed(step["id"]) if replay is not None else None
                if n is not None:
                    step["n"] = n
            row.steps.extend(new)
        self.request_update()

    def _encode(self, prompt: str) -> list[int]:
        if self._tokenizer is None:
            return []
        return list(self._tokenizer.encode(prompt, add_special_tokens=False))

    def _decode(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = str(self._tokenizer.decode([token])) if self._tokenizer is not None else f"<{token}>"
            self._texts[token] = text
        return text

    # ---- state ---------------------------------------------------------------------------

    @property
    def rows(self) -> list[dict[str, Any]]:
        """What the browser draws: one dict per request (see ``_token_rows.row_view``)."""
        self._throttle.flush()
        return list(self._view["rows"])

    def _refresh(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for event in pending:
            self._add_finished_row(event)
        with self._lock:
            rows = [Row(**{**r.__dict__, "steps": list(r.steps)}) for r in self._rows.values()]
            choices = {k: list(v) for k, v in self._choices.items()}
        views, prev = [], None
        for row in rows:
            same = prev is not None and bool(row.prompt_ids) and row.prompt_ids == prev
            views.append(row_view(row, self._decode, same))
            prev = row.prompt_ids
        self._view = {"rows": views, "choices": choices, "kinds": list(KINDS)}
        self.view_json = json.dumps(self._view, separators=(",", ":"), ensure_ascii=False).encode()

    def _summary(self) -> str:
        rows = self._view["rows"]
        totals = dict.fromkeys(KINDS, 0)
        for r in rows:
            for k in KINDS:
                totals[k] += r["counts"][k]
        out = sum(len(r["out"]) for r in rows)
        return (
            f"TokenView: {len(rows)} request{'' if len(rows) == 1 else 's'}, "
            f"{totals['cached'] + totals['prefilled']} prompt tokens ({totals['cached']} cached), "
            f"{out} output tokens ({totals['forced']} forced, {totals['constrained']} constrained)"
        )

    def _static_html(self) -> str:
        self._throttle.flush()
        return render_static(self._view["rows"], self._view["choices"], self.title, self.color_by)

    def close(self) -> None:
        off = getattr(self, "_unsubscribe", None)
        if off is not None:
            off()
            self._unsubscribe = None
        super().close()


def _constraint(sampling: dict[str, Any]) -> tuple[str | None, str | None]:
    from sgnb.core.events import constraint_of

    return constraint_of(dict(sampling.get("sampling_params") or {}) | sampling)


def _finish(reason: Any) -> str:
    return str(reason.get("type", "")) if isinstance(reason, dict) else ""


def _steps_from_meta(meta: Mapping[str, Any], output_ids: list[int]) -> list[dict[str, Any]]:
    """Steps from SGLang's ``meta_info`` logprobs (``(logprob, id, text)`` entries), or bare ids."""
    entries = list(meta.get("output_token_logprobs") or [])
    tops = list(meta.get("output_top_logprobs") or [])
    if not entries:
        return [{"i": i, "id": int(t)} for i, t in enumerate(output_ids)]
    steps = []
    for i, entry in enumerate(entries):
        step: dict[str, Any] = {"i": i, "id": int(entry[1]), "lp": float(entry[0])}
        top = tops[i] if i < len(tops) else None
        step["top"] = [[float(v), int(tid)] for v, tid, *_ in top] if top else []
        steps.append(step)
    return steps

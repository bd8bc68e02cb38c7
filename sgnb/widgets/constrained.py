"""``ConstrainedView``: what the grammar allowed at each step of a constrained generation.

    out = rt.generate(prompt, regex=r"\\d{3}-\\d{4}", max_new_tokens=12)
    ConstrainedView(out, rt, "regex", r"\\d{3}-\\d{4}")

It replays the grammar with xgrammar (the engine SGLang uses) over ``out["output_ids"]``
(:func:`sgnb.core.grammar.replay`, for any runtime): per step it fills the next-token bitmask and counts
the allowed tokens. A step where exactly one token
was allowed is *forced*: the model had no choice (SGLang's jump-forward would skip it). Then it
checks the text: ``re.fullmatch`` for a regex, ``jsonschema`` for a JSON schema.

Live, while a constrained generation runs (``%%sglang --show constrained``):

    view = ConstrainedView.follow(rt); view     # then generate with a regex / json_schema / ebnf

paints each token as it is sampled, from the ``TokenStep`` events of a traced request (sgnb's local
runtime under ``sgnb.core.token_trace.tracing``: the allowed count is xgrammar's, read where the mask is
applied, as in SGLang's ``SamplingBatchInfo.apply_logits_bias_with_observer``), then replays the
grammar over the whole output when the request finishes (the allowed options, the check). Where no
steps come (sglang.Engine, a server), it paints at the end. While it follows a request it carries the
Stop button of ``CachePanel`` (the kernel's interrupt); a stopped request says after how many tokens.
"""

from __future__ import annotations

import html
import json
import pathlib
import re
import threading
from dataclasses import asdict
from typing import Any

import traitlets as t

from sgnb.core.grammar import Step, replay
from sgnb.widgets._base import SgnbWidget
from sgnb.widgets._stop import enable_stop
from sgnb.widgets.cache_panel import jupyter_kernel_id, view_module

_HERE = pathlib.Path(__file__).parent


def validate(kind: str, source: str, text: str) -> dict[str, Any]:
    """Check the output against the constraint with a second, independent engine."""
    if kind == "regex":
        try:
            ok = re.fullmatch(source, text, flags=re.DOTALL) is not None
        except re.error as exc:
            return {"valid": None, "message": f"not checked: Python's re rejects the pattern ({exc})"}
        return {"valid": ok, "message": "re.fullmatch " + ("matches" if ok else "does not match")}
    if kind == "json_schema":
        import jsonschema

        try:
            instance = json.loads(text)
        except json.JSONDecodeError as exc:
            return {"valid": False, "message": f"not JSON: {exc.msg} at char {exc.pos}"}
        try:
            jsonschema.validate(instance, json.loads(source))
        except jsonschema.ValidationError as exc:
            return {"valid": False, "message": f"schema violation: {exc.message}"}
        return {"valid": True, "message": "valid JSON, conforms to the schema"}
    return {"valid": None, "message": f"no independent validator for {kind}"}


class ConstrainedView(SgnbWidget):
    _esm = view_module("constrained.js")

    steps = t.List(t.Dict()).tag(sync=True)
    info = t.Dict().tag(sync=True)
    kernel_id = t.Unicode("").tag(sync=True)  # what the Stop button interrupts ("": no button)
    stoppable = t.Bool(False).tag(sync=True)  # a live view following a request: the button shows
    stop_route = t.Bool(False).tag(sync=True)  # a Stop click reaches a running program (sgnb.widgets._stop)

    def __init__(
        self,
        result: dict[str, Any] | None,
        runtime: Any,
        kind: str | None = None,
        source: str | dict[str, Any] = "",
    ) -> None:
        """``result``: SGLang's ``{"text", "output_ids", "meta_info"}``; None for a live view (``follow``)."""
        if result is not None:
            kind = kind or (result.get("meta_info") or {}).get("constraint")
            if kind not in ("regex", "json_schema", "ebnf"):
                raise ValueError(f"kind must be 'regex', 'json_schema' or 'ebnf', got {kind!r}")
        super().__init__()
        self.runtime = runtime
        self._lock = threading.Lock()
        self.rid: str | None = None  # the request a live view follows, once it started
        self._raw: list[tuple[int, int | None]] = []  # (token, allowed) as sampled
        self._texts: dict[int, str] = {}
        self._final: Any = None  # the followed request's RequestFinished
        self._replayed = False
        self._unsubscribe: Any = None
        if result is None:
            self.kind, self.source, self.text = "", "", ""
            self.info = {**_EMPTY, "message": "waiting for a constrained request"}
            return
        src = json.dumps(source) if isinstance(source, dict) else str(source)
        self._load(result, kind, src)

    @classmethod
    def follow(cls, runtime: Any) -> ConstrainedView:
        """A view that paints the next constrained request of ``runtime`` token by token.

        Tokens arrive as ``TokenStep`` events (traced requests of sgnb's local runtime; see
        ``sgnb.core.token_trace.tracing``); when the request finishes the grammar is replayed over its
        output for the allowed options and the independent check. ``stop_following()`` ends it.
        """
        view = cls(None, runtime)
        view._unsubscribe = runtime.hub.subscribe(view.observe_event)
        view.kernel_id, view.stoppable = jupyter_kernel_id(), True
        view.stop_route = enable_stop(view)
        return view

    def _load(self, result: dict[str, Any], kind: str | None, src: str) -> None:
        if kind not in ("regex", "json_schema", "ebnf"):
            raise ValueError(f"kind must be 'regex', 'json_schema' or 'ebnf', got {kind!r}")
        ids = [int(i) for i in result.get("output_ids", [])]
        steps, terminated = replay(self.runtime, kind, src, ids)
        text = str(result.get("text", ""))
        check = validate(kind, src, text)
        self.kind, self.source, self.text = kind, src, text
        self.steps = [{**asdict(s), "forced": s.forced} for s in steps]
        self.info = {
            "kind": kind,
            "source": src[:2000],
            "text": text,
            "tokens": len(steps),
            "forced": sum(s.forced for s in steps),
            "rejected": sum(not s.accepted for s in steps),
            "terminated": terminated,
            "state": "done",
            **check,
        }

    # ---- live -----------------------------------------------------------------------------

    def observe_event(self, event: Any) -> None:
        """Hub subscriber (the runtime's thread): the followed request's steps, then its end."""
        name = type(event).__name__
        with self._lock:
            if self._final is not None:
                return
            if name == "TokenStep":
                if self.rid is None and event.constraint and event.constraint_source is not None:
                    self.rid, self.kind, self.source = event.rid, event.constraint, event.constraint_source
                if event.rid != self.rid:
                    return
                self._raw.append((int(event.step["id"]), event.step.get("n")))
            elif name == "RequestFinished":
                # an untraced request (sglang.Engine, a server) is painted whole when it ends
                if event.rid != self.rid and not (self.rid is None and event.constraint_source):
                    return
                self.rid, self._final = event.rid, event
            else:
                return
        self.request_update()

    def stop_following(self, reason: str = "no constrained request ran") -> None:
        """Stop listening; a view that never saw a constrained request says ``reason``."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.stoppable = False
        self._throttle.flush()
        if self.rid is None and not self.steps:
            self.info = {**_EMPTY, "message": reason, "state": "done"}

    def _token_text(self, token: int) -> str:
        text = self._texts.get(token)
        if text is None:
            text = self._texts[token] = str(self.runtime.tokenizer.decode([token]))
        return text

    def _refresh(self) -> None:
        with self._lock:
            final, raw = self._final, list(self._raw)
        if final is not None:
            if not self._replayed:
                self._replayed = True
                self._finish(final)
            return
        if not raw:
            return
        steps: list[dict[str, Any]] = []
        for token, allowed in raw:
            n = int(allowed) if allowed is not None else 0
            step = Step(token, self._token_text(token), n, True, [])
            steps.append({**asdict(step), "forced": step.forced})
        self.steps = steps
        self.text = "".join(str(s["text"]) for s in steps)
        self.info = {
            **_EMPTY,
            "kind": self.kind,
            "source": self.source[:2000],
            "text": self.text,
            "tokens": len(steps),
            "forced": sum(s["forced"] for s in steps),
            "message": f"generating: {len(steps)} tokens so far",
            "state": "running",
        }

    def _finish(self, event: Any) -> None:
        """Replay the grammar over the finished request's whole output (options and check)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.stoppable = False
        tok = self.runtime.tokenizer
        text = str(tok.decode(event.output_ids, skip_special_tokens=True)) if tok is not None else ""
        result = {"text": text, "output_ids": list(event.output_ids), "meta_info": {}}
        try:
            self._load(result, event.constraint or self.kind, event.constraint_source or self.source)
        except Exception as exc:  # the live steps stay; say why the replay failed
            self.info = {**self.info, "state": "done", "message": f"not replayed: {exc}"}
        reason = (event.finish_reason or {}).get("type") if isinstance(event.finish_reason, dict) else None
        if reason == "abort":
            self.info = {
                **self.info,
                "state": "stopped",
                "message": f"stopped after {event.completion_tokens} tokens · {self.info.get('message', '')}",
            }

    def close(self) -> None:
        if getattr(self, "_unsubscribe", None) is not None:
            self._unsubscribe()
            self._unsubscribe = None
        super().close()

    @property
    def forced_steps(self) -> list[int]:
        return [i for i, s in enumerate(self.steps) if s["forced"]]

    def _summary(self) -> str:
        i = self.info
        if i.get("state") == "waiting" or (not i["kind"] and not i["tokens"]):
            return f"ConstrainedView: {i['message']}"
        valid = {True: "yes", False: "NO", None: "not checked"}[i["valid"]]
        return (
            f"ConstrainedView({i['kind']}): {i['tokens']} tokens, {i['forced']} forced by the grammar; "
            f"output valid: {valid}"
        )

    def _static_html(self) -> str:
        chips = []
        for s in self.steps:
            bg = "#ffd8a8" if s["forced"] else "#e8f0fe"
            if not s["accepted"]:
                bg = "#f8c0c0"
            tip = f"{s['allowed']} allowed" + (": " + " | ".join(s["options"]) if s["options"] else "")
            chips.append(
                f'<span title="{html.escape(tip)}" data-forced="{int(s["forced"])}" style="background:{bg};'
                f'border-radius:3px;padding:0 2px;margin:1px;display:inline-block;white-space:pre">'
                f"{html.escape(s['text']) or '∅'}<sub style='color:#777'>{_fmt(s['allowed'])}</sub></span>"
            )
        i = self.info
        color = {True: "#2a7", False: "#c33", None: "#777"}[i["valid"]]
        return (
            '<div class="sgnb-constrained-static" data-sgnb-static="constrained" '
            'style="border:1px solid #ddd;border-radius:4px;padding:6px 8px;font:12px sans-serif">'
            f"<div><b>{html.escape(i['kind'])}</b> <code>{html.escape(i['source'][:200])}</code></div>"
            f'<div style="font-family:monospace;margin:4px 0">{"".join(chips)}</div>'
            f"<div>{i['tokens']} tokens · <span style='background:#ffd8a8'>{i['forced']} forced</span> "
            f"(one allowed token) · <span style='color:{color}'>{html.escape(i['message'])}</span></div></div>"
        )


_EMPTY: dict[str, Any] = {
    "kind": "",
    "source": "",
    "text": "",
    "tokens": 0,
    "forced": 0,
    "rejected": 0,
    "terminated": False,
    "valid": None,
    "message": "",
    "state": "waiting",
}


def _fmt(n: int) -> str:
    return f"{n / 1000:.0f}k" if n >= 10000 else str(n)

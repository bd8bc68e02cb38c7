"""``ConstrainedView``: what the grammar allowed at each step of a constrained generation.

    out = rt.generate(prompt, regex=r"\\d{3}-\\d{4}", max_new_tokens=12)
    ConstrainedView(out, rt, "regex", r"\\d{3}-\\d{4}")

It replays the grammar with xgrammar (the engine SGLang uses) over ``out["output_ids"]``: per
step it fills the next-token bitmask and counts the allowed tokens. A step where exactly one token
was allowed is *forced*: the model had no choice (SGLang's jump-forward would skip it). Then it
checks the text: ``re.fullmatch`` for a regex, ``jsonschema`` for a JSON schema.
"""

from __future__ import annotations

import html
import json
import pathlib
import re
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import traitlets as t

from sgnb.widgets._base import SgnbWidget

_HERE = pathlib.Path(__file__).parent
SHOW_ALLOWED = 8  # list the allowed tokens when there are at most this many


@dataclass
class Step:
    id: int
    text: str
    allowed: int
    accepted: bool
    options: list[str]

    @property
    def forced(self) -> bool:
        return self.allowed == 1


def _count_bits(mask: Any, vocab: int) -> np.ndarray:
    bits = np.unpackbits(np.asarray(mask).view(np.uint8), bitorder="little")[:vocab]
    return bits


def replay(
    grammars: Any, tokenizer: Any, kind: str, source: str, output_ids: list[int]
) -> tuple[list[Step], bool]:
    """Run the grammar over ``output_ids``; returns the steps and whether it terminated.

    ``grammars`` is sgnb's ``GrammarCompiler`` (``compile(kind, source)``, ``vocab_size``).
    """
    import xgrammar as xgr

    compiled = grammars.compile(kind, source)
    vocab = int(getattr(grammars, "vocab_size", 0) or grammars.info.vocab_size)
    matcher = xgr.GrammarMatcher(compiled)
    bitmask = xgr.allocate_token_bitmask(1, vocab)
    steps: list[Step] = []
    for tok in output_ids:
        if matcher.is_terminated():
            break
        matcher.fill_next_token_bitmask(bitmask)
        bits = _count_bits(bitmask[0].numpy(), vocab)
        allowed = int(bits.sum())
        options: list[str] = []
        if allowed <= SHOW_ALLOWED:
            options = [str(tokenizer.decode([int(i)])) for i in np.flatnonzero(bits)]
        ok = bool(matcher.accept_token(int(tok)))
        steps.append(Step(int(tok), str(tokenizer.decode([int(tok)])), allowed, ok, options))
        if not ok:
            break
    return steps, bool(matcher.is_terminated())


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
    _esm = _HERE / "constrained.js"

    steps = t.List(t.Dict()).tag(sync=True)
    info = t.Dict().tag(sync=True)

    def __init__(
        self, result: dict[str, Any], runtime: Any, kind: str | None = None, source: str | dict[str, Any] = ""
    ) -> None:
        kind = kind or (result.get("meta_info") or {}).get("constraint")
        if kind not in ("regex", "json_schema", "ebnf"):
            raise ValueError(f"kind must be 'regex', 'json_schema' or 'ebnf', got {kind!r}")
        src = json.dumps(source) if isinstance(source, dict) else str(source)
        ids = [int(i) for i in result.get("output_ids", [])]
        grammars = getattr(runtime, "grammars", None)
        if grammars is None:  # a runtime without sgnb's compiler (sglang.Engine, a server)
            from sgnb.runtimes.local.grammar import GrammarCompiler

            grammars = GrammarCompiler(runtime.tokenizer, len(runtime.tokenizer))
        steps, terminated = replay(grammars, runtime.tokenizer, kind, src, ids)
        text = str(result.get("text", ""))
        check = validate(kind, src, text)
        super().__init__()
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
            **check,
        }

    @property
    def forced_steps(self) -> list[int]:
        return [i for i, s in enumerate(self.steps) if s["forced"]]

    def _summary(self) -> str:
        i = self.info
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


def _fmt(n: int) -> str:
    return f"{n / 1000:.0f}k" if n >= 10000 else str(n)

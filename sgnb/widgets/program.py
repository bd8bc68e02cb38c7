"""``ProgramView``: a program's text as it streams, with role boundaries and variable spans.

    view = ProgramView()
    view                                        # display, then feed it from any thread:
    view.update([{"role": "user", "text": "Pick one: "},
                 {"role": "assistant", "text": "yes", "var": "answer"}])
    view.set_choices("answer", {"yes": -0.21, "no": -1.9})   # select(): normalized logprobs

A segment is ``{"text": str, "role": str | None, "var": str | None}``; consecutive segments of the
same role form one block. Choices show each option's normalized (per-token mean) logprob and its
share after a softmax over the options, the way SGLang's ``select`` picks.

``ProgramLiveView`` is what a ``%%sglang`` cell shows while its program runs (the program state
rendered by ``sgnb.notebook.views.ProgramStateView``), with the live views' Stop button.
"""

from __future__ import annotations

import html
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import traitlets as t

from sgnb.widgets._base import SgnbWidget
from sgnb.widgets._stop import enable_stop
from sgnb.widgets.cache_panel import jupyter_kernel_id, view_module


def _segment(seg: Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(seg, str):
        return {"text": seg, "role": None, "var": None}
    return {"text": str(seg.get("text", "")), "role": seg.get("role"), "var": seg.get("var")}


def choice_rows(choices: Mapping[str, float], picked: str | None = None) -> list[dict[str, Any]]:
    """Options with their normalized logprob and softmax share, best first."""
    if not choices:
        return []
    top = max(choices.values())
    weights = {k: math.exp(v - top) for k, v in choices.items()}
    total = sum(weights.values())
    best = picked if picked is not None else max(choices, key=lambda k: choices[k])
    rows = [
        {"option": k, "logprob": round(float(v), 4), "p": round(weights[k] / total, 4), "picked": k == best}
        for k, v in choices.items()
    ]
    return sorted(rows, key=lambda r: -r["logprob"])


class ProgramView(SgnbWidget):
    _esm = view_module("program.js", stop=False)

    segments = t.List(t.Dict()).tag(sync=True)
    choices = t.Dict().tag(sync=True)  # var -> rows from choice_rows
    title = t.Unicode("program").tag(sync=True)

    def __init__(
        self,
        segments: Iterable[Mapping[str, Any] | str] = (),
        *,
        title: str = "program",
        interval: float = 0.1,
    ) -> None:
        super().__init__(interval=interval, title=title)
        self._lock = threading.Lock()
        self._segments = [_segment(s) for s in segments]
        self._choices: dict[str, list[dict[str, Any]]] = {}
        self._refresh()

    def update(self, segments: Iterable[Mapping[str, Any] | str]) -> None:
        """Replace the segments (call as often as you like; pushes are throttled)."""
        with self._lock:
            self._segments = [_segment(s) for s in segments]
        self.request_update()

    def append(self, text: str, role: str | None = None, var: str | None = None) -> None:
        """Stream ``text``: extends the last segment when role and var match, else starts one."""
        with self._lock:
            last = self._segments[-1] if self._segments else None
            if last is not None and last["role"] == role and last["var"] == var:
                last["text"] += text
            else:
                self._segments.append({"text": text, "role": role, "var": var})
        self.request_update()

    def set_choices(self, var: str, choices: Mapping[str, float], picked: str | None = None) -> None:
        with self._lock:
            self._choices[var] = choice_rows(choices, picked)
        self.request_update()

    def _refresh(self) -> None:
        with self._lock:
            segments = [dict(s) for s in self._segments]
            choices = {k: list(v) for k, v in self._choices.items()}
        self.segments = segments
        self.choices = choices

    @property
    def text(self) -> str:
        with self._lock:
            return "".join(s["text"] for s in self._segments)

    def variables(self) -> dict[str, str]:
        with self._lock:
            out: dict[str, str] = {}
            for s in self._segments:
                if s["var"]:
                    out[s["var"]] = out.get(s["var"], "") + s["text"]
            return out

    def _summary(self) -> str:
        with self._lock:
            roles = sorted({s["role"] for s in self._segments if s["role"]})
        vars_ = self.variables()
        return f"ProgramView: {len(self.text)} chars, roles {roles}, variables " + (
            ", ".join(f"{k}={v[:30]!r}" for k, v in vars_.items()) or "none"
        )

    def _static_html(self) -> str:
        self._throttle.flush()
        return render_static(list(self.segments), dict(self.choices), self.title)


class ProgramLiveView(SgnbWidget):
    """A running ``%%sglang`` program's live view, with the live views' Stop button.

    ``render()`` gives the view's HTML (``sgnb.notebook.views.ProgramStateView._repr_html_``) and
    ``summary()`` its one-line text; :meth:`request_update` re-renders (throttled, from any thread).
    While the program runs (until :meth:`finish`, and at the latest when its cell ends) the view
    carries a Stop button (``sgnb.widgets._stop``, the one the cache panel and constrained view
    have): in an ipykernel >= 7.4 the click aborts the program's requests and the cell ends with the
    text so far; otherwise it interrupts the kernel.
    """

    _esm = view_module("program_live.js")

    html = t.Unicode("").tag(sync=True)
    kernel_id = t.Unicode("").tag(sync=True)  # what the Stop button interrupts ("": no button)
    stoppable = t.Bool(False).tag(sync=True)  # the program runs: the Stop button shows
    stop_route = t.Bool(False).tag(sync=True)  # a Stop click reaches a running program (sgnb.widgets._stop)

    def __init__(
        self, render: Callable[[], str], summary: Callable[[], str], *, interval: float = 0.1
    ) -> None:
        super().__init__(interval=interval)
        self._render, self._describe = render, summary
        self.kernel_id, self.stoppable = jupyter_kernel_id(), True
        self.stop_route = enable_stop(self)
        self._refresh()

    def _refresh(self) -> None:
        self.html = self._render()

    def finish(self) -> None:
        """The program has ended: render its last state now and take the Stop button away."""
        self.request_update()
        self._throttle.flush()
        self.stoppable = False

    def _summary(self) -> str:
        return self._describe()

    def _static_html(self) -> str:
        """The view as it is, marked as sgnb's snapshot (``sgnb.widgets._static`` then drops the
        widget view of an exported notebook, which no static page can rebuild)."""
        self._throttle.flush()
        return f'<div data-sgnb-static="program-live">{self.html}</div>'


_ROLE_COLORS = {"system": "#f1e8ff", "user": "#e8f0fe", "assistant": "#e9f7ef"}


def choices_html(choices: Mapping[str, list[dict[str, Any]]]) -> str:
    """Static HTML of ``select`` calls (``{var: choice_rows(...)}``): per option the pick, its
    normalized logprob and softmax share; the program and token views' snapshots both show it."""
    out = []
    for var, rows in choices.items():
        cells = "".join(
            f'<tr><td style="padding:0 6px">{"✔" if r["picked"] else ""}</td><td style="padding:0 6px">'
            f"{html.escape(r['option'])}</td><td style='padding:0 6px'>{r['logprob']:.3f}</td>"
            f'<td style="padding:0 6px"><span style="display:inline-block;height:8px;width:{100 * r["p"]:.0f}px;'
            f'background:#4e79a7"></span> {r["p"]:.0%}</td></tr>'
            for r in rows
        )
        out.append(f"<div>select <b>{html.escape(var)}</b>: normalized logprobs<table>{cells}</table></div>")
    return "".join(out)


def _blocks(segments: list[dict[str, Any]]) -> list[tuple[str | None, list[dict[str, Any]]]]:
    blocks: list[tuple[str | None, list[dict[str, Any]]]] = []
    for seg in segments:
        if blocks and blocks[-1][0] == seg["role"]:
            blocks[-1][1].append(seg)
        else:
            blocks.append((seg["role"], [seg]))
    return blocks


def render_static(segments: list[dict[str, Any]], choices: dict[str, Any], title: str) -> str:
    out = [
        '<div class="sgnb-program-static" data-sgnb-static="program" '
        'style="border:1px solid #ddd;border-radius:4px;padding:6px 8px;font:12px sans-serif">'
        f"<div><b>{html.escape(title)}</b></div>"
    ]
    for role, segs in _blocks(segments):
        bg = _ROLE_COLORS.get(str(role), "#f6f6f6") if role else "transparent"
        label = (
            f'<div style="font-size:10px;color:#666;text-transform:uppercase">{html.escape(role)}</div>'
            if role
            else ""
        )
        spans = []
        for s in segs:
            text = html.escape(s["text"])
            if s["var"]:
                text = (
                    f'<span data-var="{html.escape(s["var"])}" style="background:#fff3bf;border-bottom:2px solid '
                    f'#f59f00">{text}<sub style="color:#a60">{html.escape(s["var"])}</sub></span>'
                )
            spans.append(text)
        out.append(
            f'<div style="background:{bg};border-radius:4px;padding:3px 6px;margin:3px 0">{label}'
            f'<div style="white-space:pre-wrap;font-family:monospace">{"".join(spans)}</div></div>'
        )
    return "".join(out) + choices_html(choices) + "</div>"

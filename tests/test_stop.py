"""The Stop button's last pieces (issue 14): which ipykernel a click can reach the running program
in (else the view interrupts the kernel), the button only while its cell runs, and stop summaries
that say what their token counts are.

The kernel-side checks fake only the running kernel (``ipykernel.kernelapp`` in ``sys.modules``,
shaped as ipykernel 6, 7.3 and 7.4 are): the widgets, their comms and traits are the real ones.
"""

from __future__ import annotations

import html
import sys
import threading
import time
import types
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from comm import DummyComm
from conftest import finished
from sglang.srt.managers.schedule_batch import FINISH_ABORT, FINISH_LENGTH

from sgnb.core.events import EventHub
from sgnb.notebook.program import stopped_note
from sgnb.widgets import CachePanel, _stop
from sgnb.widgets._static import has_snapshot
from sgnb.widgets.program import ProgramLiveView


class Comm74(DummyComm):
    """A comm as ipykernel 7.4's ``BaseComm`` is: it names the subshell a message is handled on
    (``_reply_subshell_for(data, default)``, read by ``Kernel.shell_channel_thread_main``)."""

    def _reply_subshell_for(self, data: Any, default: str | None) -> str | None:
        return getattr(self, "_reply_subshell_id", default)


def fake_kernel(monkeypatch: pytest.MonkeyPatch, kernel: Any) -> None:
    """Make ``kernel`` the running ipykernel's, as ``IPKernelApp.instance().kernel``."""
    app = SimpleNamespace(kernel=kernel, connection_file="/run/jupyter/kernel-k-1.json")
    IPKernelApp = SimpleNamespace(initialized=lambda: True, instance=lambda: app)
    module = types.ModuleType("ipykernel.kernelapp")
    module.IPKernelApp = IPKernelApp  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ipykernel.kernelapp", module)
    monkeypatch.setattr(_stop, "_subshell", [])  # the subshell made once per kernel


def subshell_kernel(made: list[str]) -> Any:
    """A kernel with subshells (ipykernel >= 7.0): its shell channel thread creates them."""

    def create() -> str:
        made.append(f"sub-{len(made)}")
        return made[-1]

    def add_callback(fn: Callable[[], None]) -> None:
        fn()  # the shell channel thread's loop runs it

    thread = SimpleNamespace(
        manager=SimpleNamespace(_create_subshell=create), io_loop=SimpleNamespace(add_callback=add_callback)
    )
    return SimpleNamespace(_supports_kernel_subshells=True, shell_channel_thread=thread)


def live_view(comm: Any = None) -> ProgramLiveView:
    view = ProgramLiveView(lambda: "<div>program</div>", lambda: "ProgramState(0 chars; )")
    if comm is not None:  # enable_stop reads the comm; re-run it as the constructor did
        view.comm = comm
        view.stop_route = _stop.enable_stop(view)
    return view


def test_ipykernel_6_without_subshells_interrupts(monkeypatch: pytest.MonkeyPatch) -> None:
    """ipykernel 6: no ``shell_channel_thread``; a click can only interrupt the kernel."""
    fake_kernel(monkeypatch, SimpleNamespace())
    view = live_view(Comm74(target_name="t"))
    assert view.kernel_id == "k-1" and view.stoppable  # the button shows
    assert view.stop_route is False  # _stop.js then POSTs /api/kernels/k-1/interrupt
    view.close()


def test_ipykernel_73_subshells_without_comm_routing_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    """ipykernel 7.0-7.3 has subshells, but its comms cannot name one (no ``_reply_subshell_for``:
    ``Kernel.shell_channel_thread_main`` of 7.3 routes by the message header only): a stop message
    would wait behind the running cell, so the view interrupts, and no subshell is made."""
    made: list[str] = []
    fake_kernel(monkeypatch, subshell_kernel(made))
    view = live_view(DummyComm(target_name="t"))
    assert view.stop_route is False and made == []
    view.close()


def test_ipykernel_74_routes_only_the_stop_message(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    fake_kernel(monkeypatch, subshell_kernel(made))
    comm = Comm74(target_name="t")
    view = live_view(comm)
    assert view.stop_route is True and made == ["sub-0"]
    assert comm._reply_subshell_for({"method": "custom", "content": {"type": "stop"}}, None) == "sub-0"
    assert comm._reply_subshell_for({"method": "update", "state": {}}, None) is None  # main shell
    other = live_view(Comm74(target_name="t"))
    assert other.stop_route is True and made == ["sub-0"]  # one subshell for every view
    view.close()
    other.close()


def test_a_private_subshell_api_that_changed_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel claiming subshells without 7.x's ``manager._create_subshell``: interrupt, no error."""
    fake_kernel(
        monkeypatch, SimpleNamespace(_supports_kernel_subshells=True, shell_channel_thread=SimpleNamespace())
    )
    view = live_view(Comm74(target_name="t"))
    assert view.stop_route is False
    view.close()


def test_the_button_goes_when_the_cell_ends() -> None:
    """A view's Stop button shows only while the cell that made it runs (IPython's ``post_run_cell``):
    a stats panel left on screen offers no Stop for later cells."""
    from IPython.testing.globalipapp import get_ipython, start_ipython

    shell = start_ipython() or get_ipython()
    shell.user_ns["EventHub"], shell.user_ns["CachePanel"] = EventHub, CachePanel
    result = shell.run_cell("panel = CachePanel(EventHub())\nrunning = panel.stoppable\npanel")
    assert result.success and shell.user_ns["running"] is True  # while its cell ran
    panel = shell.user_ns.pop("panel")
    assert panel.stoppable is False and panel._unsubscribe is not None  # still follows requests
    panel.close()


def test_stop_summaries_say_what_the_tokens_count() -> None:
    """One stopped request: "stopped after N tokens"; several: their tokens in all, said so."""
    panel = CachePanel(EventHub())
    aborted = FINISH_ABORT().to_json()  # SGLang's finish_reason of an aborted request
    panel.observe_event(finished([1, 2, 3], list(range(50)), rid="a"))
    panel.sync()
    assert "stopped" not in repr(panel)
    for rid, n in (("b", 50), ("c", 60)):
        event = finished([1, 2, 3], list(range(n)), rid=rid)
        event.finish_reason = aborted
        panel.observe_event(event)
        panel.sync()
        if rid == "b":
            assert "1 request stopped after 50 tokens" in repr(panel)
    assert "2 requests stopped (110 tokens generated in all)" in repr(panel), repr(panel)
    assert "2 requests stopped (110 tokens generated in all)" in panel._static_html()
    panel.close()


def test_stopped_note_names_each_variable_and_its_tokens() -> None:
    def state(**meta: dict[str, Any]) -> Any:
        return SimpleNamespace(stream_executor=SimpleNamespace(meta_info=meta))

    abort = FINISH_ABORT().to_json()
    length = FINISH_LENGTH(length=8).to_json()
    one = state(
        title={"finish_reason": length, "completion_tokens": 8},
        story={"finish_reason": abort, "completion_tokens": 55},
    )
    assert stopped_note(one) == "■ stopped after 55 tokens (story kept the text so far)"
    two = state(
        story={"finish_reason": abort, "completion_tokens": 55},
        more={"finish_reason": abort, "completion_tokens": 1},
    )
    assert (
        stopped_note(two)
        == "■ stopped: story after 55 tokens, more after 1 token (each kept the text so far)"
    )
    assert stopped_note(state()) == "■ stopped (no request was generating)"


def test_a_program_view_carries_the_stop_button_while_it_runs(
    rt: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``%%sglang`` program's live view (``LiveState``: a ``ProgramLiveView``) has the Stop button
    of the cache panel and constrained view while the program streams, and not once it has ended."""
    import sgnb.notebook.program as program

    shown: list[ProgramLiveView] = []
    pushes: list[tuple[bool, str]] = []  # (button shown, html) at each push of the view

    def record(widget: ProgramLiveView, **_: Any) -> None:
        shown.append(widget)
        widget.observe(lambda change: pushes.append((widget.stoppable, change["new"])), names=["html"])

    monkeypatch.setattr(program, "display", record)
    state = program.run_program(
        "s += 'Once upon a time' + sgl.gen('story', max_tokens=24, ignore_eos=True, temperature=0)",
        backend=rt.backend,
        on_update=program.LiveState(),
    )
    (view,) = shown
    assert pushes and all(running for running, _ in pushes)  # the button while it streamed
    assert len({html for _, html in pushes}) > 1  # and the view changed as it did
    assert view.stoppable is False  # the program ended: no button
    static = view._static_html()  # what an exported notebook shows (sgnb.widgets._static)
    assert "sgnb-program" in view.html and html.escape(state["story"][:10]) in static
    assert has_snapshot({"data": {"text/html": static}})
    view.close()


def test_a_stopped_program_view_says_so_and_loses_its_button(
    rt: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Stop click (``_stop.stop_running``, what the kernel's subshell runs) during a program shown
    live: the view says it was stopped (as after an interrupt) and its button goes."""
    import sgnb.notebook.program as program
    from sgnb.core.events import EventLog, TokenStep
    from sgnb.core.token_trace import tracing

    shown: list[ProgramLiveView] = []
    monkeypatch.setattr(program, "display", lambda widget, **_: shown.append(widget))
    log = EventLog(rt.hub)
    clicked: list[int] = []

    def click() -> None:
        deadline = time.monotonic() + 120
        while len(log.of_type(TokenStep)) < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        clicked.append(_stop.stop_running())

    with tracing(rt):  # TokenStep events say when tokens came
        clicker = threading.Thread(target=click)
        clicker.start()
        program.run_program(
            "s += 'Once upon a time' + sgl.gen('story', max_tokens=2000, ignore_eos=True, temperature=0)",
            backend=rt.backend,
            on_update=program.LiveState(),
        )
        clicker.join(60)
    log.unsubscribe and log.unsubscribe()
    assert clicked == [1] and capsys.readouterr().out.startswith("■ stopped after")
    (view,) = shown
    assert "stopped: the program was interrupted" in view.html and view.stoppable is False
    view.close()

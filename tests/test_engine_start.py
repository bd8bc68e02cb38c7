"""A failed ``sglang.Engine`` start raises one line, leaves no process behind, and the next start works.

SGLang's scheduler sends SIGQUIT to its parent when its start-up raises (``run_scheduler_process`` in
``sglang/srt/managers/scheduler.py``, 0.5.17 and 0.5.23), and the parent's ``_wait_for_scheduler_ready``
(``sglang/srt/entrypoints/engine.py``) then raises. SGLang's own handler is installed only when the Engine is
built on the main thread; sgnb builds it on a loop thread, so the default action of SIGQUIT ended the
Jupyter kernel. A real scheduler cannot start on this CPU machine, so a fake one here does what SGLang's
does: a spawned scheduler that signals its parent and exits, a sibling (the detokenizer) that outlives it,
and a parent that waits on a pipe as ``_wait_for_scheduler_ready`` does. On the GPU, tests/test_gpu_engine.py
starts a real Engine with ``mem_fraction_static=0.001``.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp
    import os
    import signal
    import sys
    import time


    def live_while_parent_does(parent):  # orphans of a test that failed end themselves
        deadline = time.monotonic() + 600
        while os.getppid() == parent and time.monotonic() < deadline:
            time.sleep(0.2)


    def scheduler(fail, pipe, parent):
        if fail:  # SGLang: logger.error("Scheduler hit an exception ..."); parent_process.send_signal(SIGQUIT)
            print("[TP0] Scheduler hit an exception: Traceback (most recent call last):", file=sys.stderr)
            print("ValueError: Loaded weights leave no GPU memory for the KV cache", file=sys.stderr, flush=True)
            os.kill(parent, signal.SIGQUIT)
            return
        pipe.send({"status": "ready"})
        live_while_parent_does(parent)


    def detokenizer(parent):
        live_while_parent_does(parent)


    class FakeEngine:
        def __init__(self, fail):
            ctx = mp.get_context("spawn")
            reader, writer = ctx.Pipe(duplex=False)
            me = os.getpid()
            self.procs = [
                ctx.Process(target=detokenizer, args=(me,)),
                ctx.Process(target=scheduler, args=(fail, writer, me)),
            ]
            for proc in self.procs:
                proc.start()
            writer.close()
            while True:  # as engine.py _wait_for_scheduler_ready
                if reader.poll(1.0):
                    try:
                        reader.recv()
                        return
                    except EOFError:
                        raise self.died() from None
                if not self.procs[1].is_alive():
                    raise self.died()

        def died(self):
            return RuntimeError(
                f"Rank 0 scheduler died during initialization (exit code: {self.procs[1].exitcode}).\\n"
                "If exit code is -9 (SIGKILL), a common cause is the OS OOM killer."
            )


    if __name__ == "__main__":
        import asyncio
        import json
        import threading

        import psutil

        from sgnb.runtimes.engine import start as runtime

        # A kernel has SIGQUIT's default action (a runner's background job may inherit it ignored).
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        if os.environ.get("NO_HANDLER"):  # what sgnb did before: no handler off the main thread
            runtime.install_sigquit_handler = lambda: False
        loop = runtime.engine_loop()  # the Engine's own loop: uvloop, as in sgnb's engine runtime
        threading.Thread(target=loop.run_forever, daemon=True).start()
        try:
            runtime.start_on_loop(loop, lambda: FakeEngine(fail=True), what="fake Engine")
            print("NO ERROR")
        except runtime.EngineStartError as exc:
            print("ERROR", json.dumps(str(exc)), isinstance(exc, ValueError))
        left = []
        for p in psutil.Process().children(recursive=True):
            try:  # a child that has exited but is not reaped yet is a zombie: dead, not left over
                if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline()):
                    left.append(p)
            except psutil.Error:
                pass
        print("LEFT", len(left))
        engine = runtime.start_on_loop(loop, lambda: FakeEngine(fail=False), what="fake Engine")
        print("STARTED", all(p.is_alive() for p in engine.procs))
        runtime.kill_new_children(set())
        print("DONE")
    """
)


def run_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "start_fails.py"
    script.write_text(SCRIPT)
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, **env},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)),  # SIGQUIT's default dumps core
    )


def test_failed_start_raises_one_line_kills_its_children_and_the_next_start_works(tmp_path: Path) -> None:
    done = run_script(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    message, is_value_error = lines["ERROR"].rsplit(" ", 1)
    message = json.loads(message)
    assert "\n" not in message and is_value_error == "True"  # %sglang start shows ValueErrors as one line
    # The reason the scheduler logged on its stderr, not the parent's "scheduler died" (kept for the log).
    assert (
        message
        == "fake Engine failed to start: ValueError: Loaded weights leave no GPU memory for the KV cache"
    )
    assert "ValueError: Loaded weights" in done.stderr  # the scheduler's log still reaches stderr
    assert lines["LEFT"] == "0"  # the detokenizer that outlived the scheduler is gone
    assert lines["STARTED"] == "True" and "DONE" in done.stdout


def test_without_the_handler_sigquit_ends_the_process(tmp_path: Path) -> None:
    """The fault itself: with no handler the whole process (a kernel) dies of the scheduler's SIGQUIT."""
    done = run_script(tmp_path, NO_HANDLER="1")
    assert done.returncode == -signal.SIGQUIT, (done.returncode, done.stdout, done.stderr[-2000:])
    assert "ERROR" not in done.stdout and "DONE" not in done.stdout


def test_the_engines_loop_is_uvloop_as_sglangs() -> None:
    """SGLang's Engine and server run on uvloop (``engine.py`` sets its policy on import); sgnb makes the
    Engine's loop before that import happens, so it asks for uvloop itself. Calls cross over from
    other threads as the engine runtime's do."""
    import asyncio
    import threading

    import uvloop

    from sgnb.runtimes.engine.start import engine_loop

    loop = engine_loop()
    assert isinstance(loop, uvloop.Loop)
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    results: list[int] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(asyncio.run_coroutine_threadsafe(double(i), loop).result())
        )
        for i in range(32)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [2 * i for i in range(32)]
    loop.call_soon_threadsafe(loop.stop)

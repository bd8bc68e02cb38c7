"""The ``sgnb`` command line: wait-for-server, check-version, dockerfile, bench gates (no model needed)."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from sgnb import net
from sgnb.core.version_check import SGLANG_PIN
from sgnb.net import free_port
from sgnb.tools import cli, gates

SGNB = [sys.executable, "-m", "sgnb.cli"]  # the entry point the tutorials type


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SGNB, *args], capture_output=True, text=True, timeout=timeout)


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Any:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ---- wait-for-server ---------------------------------------------------------------------------


def test_wait_for_server_ready(health_server: str) -> None:
    done = run("wait-for-server", health_server, "--timeout", "10")
    assert done.returncode == 0, done.stderr
    assert "is ready" in done.stdout


def test_wait_for_server_times_out_with_a_message() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    done = run("wait-for-server", url, "--timeout", "1.5", "--interval", "0.2")
    assert done.returncode == 1
    assert time.monotonic() - started >= 1.4
    assert "did not answer 200 within 1.5 s" in done.stderr and url in done.stderr


def test_wait_for_server_waits_for_a_late_server() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def start_later() -> None:
        time.sleep(1.0)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Health)
        threading.Thread(target=server.serve_forever, daemon=True).start()

    threading.Thread(target=start_later, daemon=True).start()
    assert cli.main(["wait-for-server", url, "--timeout", "20", "--interval", "0.2"]) == 0


def test_wait_for_server_keeps_waiting_on_503(health_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_Health, "status", 503)
    ready, last = net.wait_for_server(health_server, timeout=0.6, interval=0.2)
    assert not ready and last == "HTTP 503"


def start_serve(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    """A real ``sgnb serve`` child with its log in a file, as the tutorials start a server."""
    port, log = free_port(), tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*SGNB, "serve", "--port", str(port), *args], stdout=out, stderr=subprocess.STDOUT
        )
    return proc, f"http://127.0.0.1:{port}", log


def test_wait_for_server_stops_when_the_server_it_waits_for_is_killed(tmp_path: Path) -> None:
    """A server killed while loading: the wait ends at once with how it ended, not after --timeout."""
    proc, url, log = start_serve(tmp_path, "--model", "bundled")
    waiter = subprocess.Popen(
        [*SGNB, "wait-for-server", url, "--timeout", "900", "--pid", str(proc.pid), "--log", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        proc.kill()  # long before it can load the model; left unreaped, as a notebook's Popen is
        _, err = waiter.communicate(timeout=120)  # far below --timeout 900: it noticed the death
    finally:
        waiter.kill()
        proc.wait()
    assert waiter.returncode == 1
    assert f"the server process {proc.pid} was killed by SIGKILL (exit code -9)" in err, err
    assert "never answered 200" in err
    assert f"last lines of {log}" in err or f"its log {log} is empty" in err  # killed before writing any


def test_wait_for_server_shows_the_exit_code_and_log_of_a_server_that_failed(tmp_path: Path) -> None:
    proc, url, log = start_serve(tmp_path, "--model", str(tmp_path / "no-such-model"))
    try:
        ready, last = net.wait_for_server(url, timeout=900, interval=0.2, process=proc, log=log)
    finally:
        proc.kill()
        proc.wait()
    assert not ready
    assert last.startswith(f"the server process {proc.pid} exited with code 2; last lines of {log}:"), last
    assert "sgnb serve: model path does not exist" in last  # the server's own last line


def test_wait_for_server_pid_of_a_process_already_collected() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: its exit code is gone, the wait still stops
    ready, last = net.wait_for_server(f"http://127.0.0.1:{free_port()}", timeout=900, process=proc.pid)
    assert not ready and "exit code unknown" in last


# ---- check-version -------------------------------------------------------------------------------


def test_check_version_matches_the_pin() -> None:
    done = run("check-version")
    assert done.returncode == 0, done.stderr
    assert SGLANG_PIN in done.stdout


@pytest.mark.parametrize("found", ["0.5.16", None])
def test_check_version_fails_off_pin(monkeypatch: pytest.MonkeyPatch, capsys: Any, found: str | None) -> None:
    import sgnb.core.version_check as vc

    monkeypatch.setattr(vc, "installed_sglang", lambda: found)
    assert cli.main(["check-version"]) == 1
    err = capsys.readouterr().err
    assert f"pip install sglang=={SGLANG_PIN}" in err


# ---- dockerfile ------------------------------------------------------------------------------------


def test_dockerfile_command_writes_both_files(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    done = run("dockerfile", "--model-path", "Qwen/Qwen2.5-0.5B-Instruct", "--port", "30000", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert (out / "Dockerfile").read_text().count("Qwen/Qwen2.5-0.5B-Instruct") >= 1
    assert (out / "entrypoint.sh").stat().st_mode & 0o111


def test_dockerfile_hands_sglang_a_model_it_can_load_for_bundled(tmp_path: Path) -> None:
    """``launch_server --model-path bundled`` would go to the hub for a model named "bundled"."""
    done = run("dockerfile", "--model-path", "bundled", "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    text = (tmp_path / "Dockerfile").read_text()
    assert 'MODEL_PATH="HuggingFaceTB/SmolLM2-135M-Instruct"' in text and "bundled" not in text


# ---- bench gates ------------------------------------------------------------------------------------

BASELINE = {
    "model": "bundled",
    "threads": 2,
    "decode_tok_s_1": 50.0,
    "decode_tok_s_8": 200.0,
    "prefix_ttft_s": 0.05,
    "multiturn_s": 4.0,
    "multiturn_speedup": 2.0,
    "constrained_overhead": 0.10,
    "serve_overhead": 0.05,
}


def write(tmp_path: Path, name: str, figures: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(figures))
    return str(path)


def test_bench_passes_within_tolerance(tmp_path: Path) -> None:
    current = {**BASELINE, "threads": 16, "decode_tok_s_1": 46.0, "multiturn_s": 4.3, "serve_overhead": 0.12}
    done = run(
        "bench", "--baseline", write(tmp_path, "b.json", BASELINE), "--current", write(tmp_path, "c.json", current),
        "--tolerance", "0.1",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout and "decode_tok_s_1" in done.stdout


@pytest.mark.parametrize(
    ("change", "culprit"),
    [
        ({"decode_tok_s_8": 150.0}, "decode_tok_s_8"),  # throughput dropped 25 %
        ({"prefix_ttft_s": 0.08}, "prefix_ttft_s"),  # a time rose 60 %
        ({"serve_overhead": 0.25}, "serve_overhead"),  # overhead rose 0.2 absolute
        ({"multiturn_speedup": None}, "multiturn_speedup"),  # a figure disappeared
    ],
)
def test_bench_fails_on_regression(tmp_path: Path, change: dict[str, Any], culprit: str) -> None:
    current = {**BASELINE, **change}
    done = run(
        "bench", "--baseline", write(tmp_path, "b.json", BASELINE), "--current", write(tmp_path, "c.json", current),
        "--tolerance", "0.1",
    )  # fmt: skip
    assert done.returncode == 1
    assert "REGRESSION" in done.stdout and culprit in done.stdout.split("REGRESSION")[1]


def test_bench_json_report_and_improvements(tmp_path: Path, capsys: Any) -> None:
    current = {**BASELINE, "decode_tok_s_1": 80.0, "multiturn_s": 2.0, "new_figure_tok_s": 3.0}
    argv = [
        "bench",
        "--baseline",
        write(tmp_path, "b.json", BASELINE),
        "--current",
        write(tmp_path, "c.json", current),
    ]
    assert cli.main([*argv, "--tolerance", "0.1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    status = {row["name"]: row["status"] for row in report["figures"]}
    assert status["decode_tok_s_1"] == "improved" and status["multiturn_s"] == "improved"
    assert "threads" not in status and "model" not in status
    assert report["new"] == ["new_figure_tok_s"]


def test_bench_ignore_and_bad_input(tmp_path: Path) -> None:
    baseline = write(tmp_path, "b.json", BASELINE)
    current = write(tmp_path, "c.json", {**BASELINE, "decode_tok_s_8": 10.0})
    assert (
        cli.main(["bench", "--baseline", baseline, "--current", current, "--ignore", "decode_tok_s_8"]) == 0
    )
    assert cli.main(["bench", "--baseline", baseline, "--current", current, "--tolerance", "-1"]) == 2
    assert cli.main(["bench", "--baseline", str(tmp_path / "missing.json"), "--current", current]) == 2
    (tmp_path / "bad.json").write_text("{not json")
    assert cli.main(["bench", "--baseline", str(tmp_path / "bad.json"), "--current", current]) == 2


def test_gate_kinds() -> None:
    assert gates.kind("decode_tok_s_1") == "throughput"
    assert gates.kind("multiturn_s") == "time"
    assert gates.kind("prefix_ttft_cold_s") == "time"
    assert gates.kind("serve_overhead") == "overhead"
    assert gates.kind("prefix_ttft_speedup") == "throughput"


def test_help_lists_every_command() -> None:
    done = run("--help")
    for command in ("serve", "wait-for-server", "check-version", "dockerfile", "bench"):
        assert command in done.stdout
    serve_help = run("serve", "--help").stdout
    for flag in ("--model", "--port", "--host", "--api-key", "--kv-events-config", "--max-total-tokens",
                 "--page-size", "--disable-radix-cache", "--dtype", "--context-length"):  # fmt: skip
        assert flag in serve_help


def test_serve_rejects_a_bad_kv_events_config() -> None:
    done = run("serve", "--port", str(free_port()), "--kv-events-config", '{"publisher": "kafka"}')
    assert done.returncode == 2 and "unknown KV event publisher" in done.stderr


def test_sglang_cpu_quantization_warnings_are_silenced_by_sgnb() -> None:
    """On a CPU, SGLang's io_struct import warns that AWQ and GGUF need CUDA, with absolute paths, in the
    first served request's cell (tutorial 03); sgnb silences exactly those two."""
    import subprocess
    import sys

    code = "import sglang.srt.managers.io_struct"
    bare = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True)
    if "support AWQ" not in bare.stderr:
        pytest.skip("this SGLang does not warn about AWQ here")
    ours = subprocess.run(
        [
            sys.executable,
            "-W",
            "always",
            "-c",
            f"import sgnb; {code}; import warnings; warnings.warn('kept')",
        ],
        capture_output=True,
        text=True,
    )
    assert ours.returncode == 0, ours.stderr
    assert "AWQ" not in ours.stderr and "GGUF" not in ours.stderr and "kept" in ours.stderr

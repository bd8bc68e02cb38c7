"""The remote runtime against a real ``sgnb serve`` process on 127.0.0.1 (SGLang's HTTP API)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from sgnb.core.events import BlockStored, EventLog, RequestFinished
from sgnb.net import free_port
from sgnb.notebook.session import get_session
from sgnb.runtimes.remote import RemoteRuntime, wait_for_server
from sgnb.runtimes.remote.runtime import ServerNotReadyError
from sgnb.serve.server import ServerProcess

API_KEY = "sekrit"


def ipython_shell() -> Any:
    """IPython's test shell; ``start_ipython`` returns None once a shell exists in the process."""
    from IPython.testing.globalipapp import get_ipython, start_ipython

    return start_ipython() or get_ipython()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    kv_port = free_port()
    # "bind": the publisher binds loopback (SGLang would connect to a concrete host by default).
    config = json.dumps(
        {"publisher": "zmq", "endpoint": f"tcp://127.0.0.1:{kv_port}", "topic": "kv-events", "bind": True}
    )
    log = (tmp_path_factory.mktemp("remote") / "server.log").open("wb")
    proc = ServerProcess("--model", "bundled", "--api-key", API_KEY, "--kv-events-config", config, log=log)
    with proc:
        proc.kv_endpoint = f"tcp://127.0.0.1:{kv_port}"
        yield proc
    log.close()


@pytest.fixture(scope="module")
def remote(server: Any) -> Iterator[RemoteRuntime]:
    rt = RemoteRuntime(server.url, api_key=API_KEY, kv_events=server.kv_endpoint, timeout=30)
    time.sleep(0.5)  # let the ZMQ subscription settle before the first request
    yield rt
    rt.stop()


def test_wait_for_server_times_out_clearly() -> None:
    started = time.monotonic()
    with pytest.raises(ServerNotReadyError, match="not ready after 1 s"):
        wait_for_server(f"http://127.0.0.1:{free_port()}", timeout=1.0)
    assert time.monotonic() - started < 5


def test_wrong_api_key_is_a_clear_error(server: Any) -> None:
    with pytest.raises(ValueError, match="API key"):
        RemoteRuntime(server.url, api_key="wrong", timeout=10)


def test_generate_stream_and_events(remote: RemoteRuntime) -> None:
    log = EventLog(remote.hub)
    prompt = "The capital of France is"
    first = remote.generate(prompt, max_new_tokens=8, temperature=0)
    second = remote.generate(prompt, max_new_tokens=8, temperature=0)
    assert first["text"] == second["text"]
    assert second["meta_info"]["cached_tokens"] > 0
    chunks = list(remote.generate(prompt, max_new_tokens=6, temperature=0, ignore_eos=True, stream=True))
    assert len(chunks) >= 2 and chunks[-1]["meta_info"]["completion_tokens"] == 6
    time.sleep(0.5)
    assert len(log.of_type(RequestFinished)) == 3
    stored = log.of_type(BlockStored)
    assert stored, "no KV events arrived over ZMQ from the server"
    assert sum(len(e.token_ids) for e in stored) >= len(remote.tokenizer.encode(prompt)) - 1


def wait_until(condition: Any, timeout: float = 20.0) -> None:
    """Poll ``condition()`` until true or ``timeout`` (the caller asserts what it needs after)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_late_tree_mirror_replays_the_servers_tree(remote: RemoteRuntime) -> None:
    """A tree opened late (``TreeMirror(runtime)``, so ``RemoteRuntime.follow``) holds what one
    that followed from the start holds: the KV subscriber's ledger replays the blocks SGLang's
    stream stored (``ZmqEventPublisher``, sglang/srt/disaggregation/kv_events.py), then the live
    stream follows with nothing in between."""
    from sgnb.tree.mirror import TreeMirror

    early = TreeMirror(remote, fade_s=0.0)
    prompts = ["Owls hunt at night because", "Owls sleep by day and", "Frogs sing after rain since"]
    for prompt in prompts[:2]:
        remote.generate(prompt, max_new_tokens=4, temperature=0)
    wait_until(lambda: early.block_count() > 0)  # KV events cross ZMQ after the responses
    late = TreeMirror(remote, fade_s=0.0)
    replayed = late.block_count()
    remote.generate(prompts[2], max_new_tokens=4, temperature=0)

    def settled() -> bool:
        blocks = sum(len(e.block_hashes) for e in remote.replay_tree())
        return (
            late.block_count() > replayed and early.paths() == late.paths() and early.block_count() == blocks
        )

    wait_until(settled)
    assert replayed > 0, "the late mirror was handed no tree"
    assert late.block_count() > replayed, "the late mirror did not follow the live stream"
    assert early.paths() == late.paths()
    early.detach()
    late.detach()


def _shape(out: Any) -> list[tuple[str, list[int]]]:
    outs = out if isinstance(out, list) else [out]
    return [(o["text"], list(o["output_ids"])) for o in outs]


def test_generate_returns_every_shape_of_the_server_as_the_local_runtime(
    remote: RemoteRuntime, rt: Any
) -> None:
    """``/generate`` answers one prompt with a dict, ``n > 1`` and a batch of prompts with a list,
    batch-major (``http_server.generate_request``; ``TokenizerManager._handle_batch_request`` expands
    prompt ``i`` into its ``n`` samples in a row), streamed chunks naming their sample in ``index``.
    The remote runtime returns them as they come, as ``LocalRuntime.generate`` / ``Engine.generate``
    return theirs, with one ``RequestFinished`` per output; greedy, the answers equal the local runtime's."""
    log = EventLog(remote.hub)
    prompts = ["The capital of France is", "Two plus two is"]
    greedy = {"max_new_tokens": 5, "temperature": 0}
    local = [_shape(rt.generate(p, **greedy))[0] for p in prompts]

    single = remote.generate(prompts[0], **greedy)
    assert isinstance(single, dict) and _shape(single) == [local[0]]
    pair = remote.generate(prompts[0], n=2, **greedy)
    assert isinstance(pair, list) and _shape(pair) == _shape(rt.generate(prompts[0], n=2, **greedy))
    assert _shape(pair) == [local[0]] * 2
    batch = remote.generate(prompts, **greedy)
    assert isinstance(batch, list) and _shape(batch) == local
    grid = remote.generate(prompts, n=2, **greedy)
    assert _shape(grid) == [local[0], local[0], local[1], local[1]]  # batch-major
    ids = [remote.tokenizer.encode(p) for p in prompts]
    assert _shape(remote.generate(input_ids=ids, **greedy)) == local
    chunks = list(remote.generate(prompts[0], n=2, stream=True, **greedy))
    finals = {c["index"]: c for c in chunks if c["meta_info"]["finish_reason"] is not None}
    assert (
        sorted(finals) == [0, 1] and [(c["text"], c["output_ids"]) for c in finals.values()] == [local[0]] * 2
    )

    finished = log.of_type(RequestFinished)
    assert len(finished) == 1 + 2 + 2 + 4 + 2 + 2  # one per output, streamed or not
    by_rid = {e.rid: e for e in finished}
    for out, prompt_ids in zip(grid, [ids[0], ids[0], ids[1], ids[1]], strict=True):
        event = by_rid[out["meta_info"]["id"]]
        assert event.prompt_ids == prompt_ids and event.output_ids == out["output_ids"]


def test_sampling_params_per_prompt_over_http(remote: RemoteRuntime) -> None:
    """One dict per prompt (as ``Engine.generate`` and ``/generate`` take it): each prompt its own."""
    outs = remote.generate(["Hi", "Bye"], [{"max_new_tokens": 2}, {"max_new_tokens": 4}], ignore_eos=True)
    assert [o["meta_info"]["completion_tokens"] for o in outs] == [2, 4]
    last: dict[int, Any] = {}
    for chunk in remote.generate(
        ["Hi", "Bye"], [{"max_new_tokens": 3}, {"max_new_tokens": 1}], ignore_eos=True, stream=True
    ):
        last[chunk["index"]] = chunk
    assert [last[i]["meta_info"]["completion_tokens"] for i in (0, 1)] == [3, 1]


def test_dsl_gen_n_on_a_remote_session(remote: RemoteRuntime, rt: Any) -> None:
    """``gen(n=2)`` through the remote backend gives the two texts and meta_infos, as sgnb's backend does
    on the local runtime (``StreamExecutor._execute_gen`` keeps the list, appends the first text);
    SGLang's own ``RuntimeEndpoint.generate`` indexes the server's list as a dict and fails there."""
    import sglang as sgl

    @sgl.function
    def two(s: Any) -> None:
        s += "The capital of France is" + sgl.gen("x", n=2, max_tokens=5, temperature=0)

    there = two.run(backend=remote.backend)
    here = two.run(backend=rt.backend)
    assert there.error() is None and here.error() is None
    assert isinstance(there["x"], list) and there["x"] == here["x"] and len(there["x"]) == 2
    assert len(there.get_meta_info("x")) == 2


def test_bad_input_is_a_value_error_and_the_server_keeps_serving(remote: RemoteRuntime) -> None:
    with pytest.raises(ValueError):
        remote.generate("x", max_new_tokens=4, regex="(unclosed")
    # streamed, the server refuses it inside the stream (SGLang's 200 + error event): still a ValueError
    with pytest.raises(ValueError, match="top_p"):
        list(remote.generate("x", max_new_tokens=4, top_p=1.5, stream=True))
    assert remote.generate("Hello", max_new_tokens=2)["meta_info"]["completion_tokens"] >= 1


def test_score_matches_the_local_runtime(remote: RemoteRuntime) -> None:
    import sgnb

    ids = remote.tokenizer.encode("The capital of France is")
    cont = remote.tokenizer.encode(" Paris")
    remote_lps = remote.score(ids, cont)
    local = sgnb.start()
    try:
        local_lps = local.score(ids, cont)
    finally:
        local.stop()
    assert remote_lps == pytest.approx(local_lps, abs=0.05)


def test_flush_and_status(remote: RemoteRuntime) -> None:
    remote.flush_cache()
    again = remote.generate("The capital of France is", max_new_tokens=2, temperature=0)
    assert again["meta_info"]["cached_tokens"] == 0
    status = remote.status()
    assert status["runtime"] == "remote" and status["kv_events"] == "subscribed"


def test_connect_magic_runs_dsl_cells_on_the_server(server: Any) -> None:
    ip = ipython_shell()
    assert ip is not None
    ip.run_line_magic("load_ext", "sgnb")
    result = ip.run_cell(f"%sglang connect {server.url} --api-key {API_KEY} --timeout 30")
    assert result.error_in_exec is None
    try:
        cell = (
            "%%sglang -o st\ns += 'The capital of France is' + sgl.select('c', choices=[' Paris', ' Rome'])"
        )
        assert ip.run_cell(cell).error_in_exec is None
        assert ip.user_ns["st"]["c"] == " Paris"
    finally:
        assert ip.run_cell("%sglang stop").error_in_exec is None  # disconnects; the server keeps serving
    assert get_session().runtime is None
    assert wait_for_server(server.url, timeout=5) >= 0


def test_serve_magic_starts_and_stops_a_server() -> None:
    ip = ipython_shell()
    assert ip is not None
    ip.run_line_magic("load_ext", "sgnb")
    port = free_port()
    assert ip.run_cell(f"%sglang serve --port {port} --max-total-tokens 4096").error_in_exec is None
    try:
        assert wait_for_server(f"http://127.0.0.1:{port}", timeout=10) >= 0
    finally:
        assert ip.run_cell("%sglang serve stop").error_in_exec is None
    with pytest.raises(ServerNotReadyError):
        wait_for_server(f"http://127.0.0.1:{port}", timeout=1)

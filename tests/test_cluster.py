"""SGLang's real router (``sglang_router.launch_router``) over two ``sgnb serve`` workers.

One cluster serves the module (starting two workers costs most of its time). The tests run in file
order: the last ones kill a worker and stop the cluster. What they check mirrors SGLang: the router
forwards SGLang's native and OpenAI routes (``sgl-model-gateway``'s HTTP router), retries a request
whose worker died and drops that worker after failed health checks; each worker's tree is built
from that worker's own KV events (``sglang/srt/disaggregation/kv_events.py``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from sgnb.scaleout import Cluster, cluster
from sgnb.scaleout.procs import pids_alive
from sgnb.scaleout.views import ClusterView

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def c() -> Iterator[Cluster]:
    handle = cluster(workers=2, policy="cache_aware", runtime="local")
    try:
        yield handle
    finally:
        handle.stop()


def test_wait_tagged_returns_once_the_session_has_the_request() -> None:
    """``Attributor.wait`` returns only after ``on_tagged`` published each request (no processes).

    ``%sglang stats`` read the session's history right after ``wait_tagged``: a request tagged but
    not yet published was missing from it. The event is SGLang's own ``BlockStored``
    (sglang/srt/disaggregation/kv_events.py), one block per page as ``RadixCache`` stores it.
    """
    from sglang.srt.disaggregation.kv_events import BlockStored

    from sgnb.core.events import RequestFinished, block_hashes
    from sgnb.scaleout.attribution import Attributor, BlockIndex

    published: list[tuple[str, int | None]] = []

    def on_tagged(event: RequestFinished, worker: int | None) -> None:
        time.sleep(0.3)  # a slow subscriber (a widget): wait() must still not return before it ends
        published.append((event.rid, worker))

    index = BlockIndex()
    attributor = Attributor([index], on_tagged)
    try:
        tokens = [11, 12, 13, 14, 15, 16]
        sent = time.time()
        index.handle(
            BlockStored(
                block_hashes=block_hashes(tokens, None, 1),
                parent_block_hash=None,
                token_ids=tokens,
                block_size=1,
                lora_id=None,
            )
        )
        event = RequestFinished(
            rid="r1",
            prompt_tokens=4,
            cached_tokens=0,
            completion_tokens=2,
            ttft=0.0,
            e2e_latency=0.0,
            finish_reason=None,
            prompt_ids=tokens[:4],
            output_ids=tokens[4:],
        )
        attributor.submit(event, sent)
        assert attributor.wait(10)
        assert published == [("r1", 0)]
    finally:
        attributor.close()


def sys_prompt(topic: str) -> str:
    return f"You are an expert on {topic}. Answer in one short sentence about {topic}. " * 4


def test_workers_and_router_are_up(c: Cluster) -> None:
    workers = c.workers
    assert [w.state for w in workers] == ["alive", "alive"]
    assert all(w.in_router for w in workers)
    assert requests.get(c.url + "/health", timeout=10).status_code == 200
    listed = {w["url"] for w in requests.get(c.url + "/workers", timeout=10).json()["workers"]}
    assert listed == {w.url for w in workers}


def test_generate_and_curl_through_the_router(c: Cluster) -> None:
    body = {"text": "The capital of France is", "sampling_params": {"max_new_tokens": 6, "temperature": 0}}
    direct = requests.post(c.workers[0].url + "/generate", json=body, timeout=120).json()
    routed = requests.post(c.url + "/generate", json=body, timeout=120).json()
    assert routed["text"] == direct["text"]  # greedy: the same answer whichever worker ran it
    assert routed["meta_info"]["prompt_tokens"] == direct["meta_info"]["prompt_tokens"]
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        [curl, "-sS", "-H", "content-type: application/json", "-d", json.dumps(body), c.url + "/generate"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(out.stdout)["text"] == direct["text"]


def test_openai_client_through_the_router(c: Cluster) -> None:
    import openai

    client = openai.OpenAI(base_url=c.url + "/v1", api_key="none")
    chat = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=8,
        temperature=0,
    )
    assert chat.choices[0].message.content
    assert chat.usage is not None and chat.usage.completion_tokens > 0
    done = client.completions.create(model="default", prompt="One, two, three,", max_tokens=4, temperature=0)
    assert done.choices[0].text


def test_dsl_program_through_the_router(c: Cluster) -> None:
    import sglang as sgl

    @sgl.function
    def qa(s: Any, question: str) -> None:
        s += sgl.system("You are a concise assistant.")
        s += sgl.user(question)
        s += sgl.assistant(sgl.gen("answer", max_tokens=12, temperature=0))
        s += sgl.user("Is that right? Answer yes or no.")
        s += sgl.assistant(sgl.select("ok", choices=["yes", "no"]))

    state = qa.run(question="What is the capital of France?", backend=c.runtime.backend)
    assert "Paris" in state["answer"]
    assert state["ok"] in ("yes", "no")
    assert c.runtime.wait_tagged(10)


def test_each_worker_tree_holds_what_it_served(c: Cluster) -> None:
    """Tags come from KV events; the workers' own request counters (/metrics) must agree with them.

    A repeated prompt is a full cache hit that stores nothing new, so its tag may be unknown (None),
    never another worker.
    """
    rt = c.runtime
    served: list[tuple[str, int, int | None]] = []  # rid, the worker whose counter moved, the tag
    for topic in ("volcanoes", "glaciers", "tides", "comets", "volcanoes", "glaciers"):
        before = [w.requests for w in c.workers]
        out = rt.generate(sys_prompt(topic) + f"Tell me about {topic}.", max_new_tokens=6, temperature=0)
        assert rt.wait_tagged(10)
        after = [w.requests for w in c.workers]
        counted = [i for i, (a, b) in enumerate(zip(after, before, strict=True)) if a > b]
        assert len(counted) == 1, counted
        served.append((out["meta_info"]["id"], counted[0], c.served_by(out["meta_info"]["id"])))
    for rid, worker, tag in served[:4]:  # new prompts: the KV events name the worker, and rightly
        assert tag == worker, (rid, worker, tag)
    assert all(tag in (None, worker) for _, worker, tag in served[4:])
    by_rid = {ev.rid: ev for ev in c.finished}
    for rid, worker, _ in served[:4]:
        ids = tuple(by_rid[rid].prompt_ids)
        # the serving worker's tree, rebuilt from its own KV events, holds the whole prompt
        assert any(path[: len(ids)] == ids for path in c.mirrors[worker].paths())
        record = c.mirrors[worker].request(rid)
        assert record is not None and record.prompt_tokens == len(ids)
    # cache-aware routing sent a topic's second request to the worker that holds its prefix
    assert served[4][1] == served[0][1] and served[5][1] == served[1][1]
    view = ClusterView(c)
    html = view.static_html()
    assert "w0" in html and "w1" in html and "hit rate" in html
    view.close()


def test_a_worker_killed_mid_workload(c: Cluster) -> None:
    """Every request completes (the router retries on the live worker); the view marks the dead one."""
    prompts = [sys_prompt("rivers") + f"Question {i}: name a river." for i in range(8)]

    def one(prompt: str) -> dict[str, Any]:
        body = {"text": prompt, "sampling_params": {"max_new_tokens": 24, "temperature": 0}}
        res = requests.post(c.url + "/generate", json=body, timeout=300)
        assert res.status_code == 200, res.text
        return dict(res.json())

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, p) for p in prompts]
        time.sleep(1.0)  # requests are in flight on both workers
        c.kill_worker(1)
        results = [f.result() for f in futures]
    assert all(r["meta_info"]["completion_tokens"] > 0 for r in results)
    deadline = time.monotonic() + 60
    while c.workers[1].in_router and time.monotonic() < deadline:
        time.sleep(0.5)
    workers = c.workers
    assert workers[1].state == "dead" and workers[1].in_router is False
    assert workers[0].state == "alive"
    after = requests.post(
        c.url + "/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 2}}, timeout=120
    )
    assert after.status_code == 200
    view = ClusterView(c)
    assert "DEAD" in view.static_html()
    assert "1/2 workers alive" in repr(view)
    view.close()


def test_stop_leaves_no_process_behind(c: Cluster) -> None:
    pids = c.pids()
    assert len(pids) >= 3  # two workers and the router
    c.stop()
    assert pids_alive(pids) == []


def test_a_batch_through_the_router_as_sglang_answers_it() -> None:
    """A batch ``generate`` on a cluster session, as SGLang's server answers it.

    sglang-router 0.3.2 refuses a batch of texts (422: ``GenerateRequest.text`` is one string in
    sgl-router's ``src/protocols/generate.rs``) and forwards an ``input_ids`` batch whole to one
    worker. ClusterRuntime sends the first as one request per prompt, concurrently, each routed on
    its own (to the worker that holds its prefix), the second as it is. Either way the answer is
    SGLang's batch shape (prompt-major, ``n`` per prompt; streamed, SGLang's ``index``), the same
    as one worker's own answer to the whole batch, and every output is one tagged row of the session.
    """
    from test_serve_batch_stream import finals_by_index, sglang_stream_indices

    from sgnb.core.events import EventLog, RequestFinished

    handle = cluster(workers=2, policy="cache_aware", runtime="local")
    try:
        rt = handle.runtime
        log = EventLog(rt.hub)
        greedy = {"max_new_tokens": 6, "temperature": 0}
        topics = ("owls", "deserts")
        prefix = {t: f"{t.title()}! " + sys_prompt(t) for t in topics}
        refused = requests.post(handle.url + "/generate", json={"text": list(prefix.values())}, timeout=60)
        assert refused.status_code == 422 and "text: invalid type: sequence" in refused.text
        assert rt.generate([], **greedy) == [] and list(rt.generate([], stream=True, **greedy)) == []

        # where each topic's prefix lives: one request each, tagged from the workers' KV events
        homes = []
        for topic in topics:
            single = rt.generate(prefix[topic] + "Say hello.", **greedy)
            assert rt.wait_tagged(10)
            homes.append(handle.served_by(single["meta_info"]["id"]))
        assert all(home in (0, 1) for home in homes), homes

        prompts = [prefix[t] + f"Name one fact about {t}." for t in topics]
        before = [w.requests for w in handle.workers]
        outs = rt.generate(prompts, n=2, **greedy)
        assert rt.wait_tagged(10)
        moved = [b - a for a, b in zip(before, [w.requests for w in handle.workers], strict=True)]
        assert sum(moved) == 4  # each prompt's 2 samples, counted by the worker that ran them
        ids = [rt.tokenizer.encode(p) for p in prompts]
        assert [o["meta_info"]["prompt_tokens"] for o in outs] == [len(ids[0])] * 2 + [len(ids[1])] * 2
        for i, out in enumerate(outs):  # each prompt went to the worker holding its prefix
            assert handle.served_by(out["meta_info"]["id"]) == homes[i // 2], (i, homes)
        worker = requests.post(
            handle.workers[0].url + "/generate",
            json={"text": prompts, "sampling_params": {**greedy, "n": 2}},
            timeout=120,
        ).json()
        assert [(o["text"], o["output_ids"]) for o in outs] == [(o["text"], o["output_ids"]) for o in worker]

        body = {"text": prompts, "sampling_params": {**greedy, "n": 2}, "stream": True}
        want = sglang_stream_indices(body)
        finals = finals_by_index(list(rt.generate(prompts, n=2, stream=True, **greedy)))
        assert sorted(finals) == sorted(want) == [0, 1, 2, 3]
        for index, chunk in finals.items():
            assert chunk["meta_info"]["prompt_tokens"] == len(ids[want[index]])
            assert (chunk["text"], chunk["output_ids"]) == (outs[index]["text"], outs[index]["output_ids"])

        # input_ids: the router forwards the batch whole, to one worker
        before = [w.requests for w in handle.workers]
        whole = rt.generate(input_ids=ids, **greedy)
        moved = [b - a for a, b in zip(before, [w.requests for w in handle.workers], strict=True)]
        assert sorted(moved) == [0, 2], moved
        assert [(o["text"], o["output_ids"]) for o in whole] == [
            (o["text"], o["output_ids"]) for o in outs[::2]
        ]
        streamed = finals_by_index(list(rt.generate(input_ids=ids, stream=True, **greedy)))
        assert [(streamed[i]["text"], streamed[i]["output_ids"]) for i in (0, 1)] == [
            (o["text"], o["output_ids"]) for o in whole
        ]
        assert rt.wait_tagged(10)
        rows = [e.rid for e in log.of_type(RequestFinished)]
        assert len(rows) == len(set(rows)) == 2 + 4 + 4 + 2 + 2  # one row per output

        # a RemoteRuntime given the router's URL (%sglang connect) learns it from the first refusal;
        # SGLang's RuntimeEndpoint sends select's choices as a batch of texts, so select works too
        import sglang as sgl

        from sgnb.runtimes.remote import RemoteRuntime

        @sgl.function
        def pick(s: Any) -> None:
            s += "The capital of France is" + sgl.select("city", choices=[" Paris", " London", " Rome"])

        remote, worker_rt = RemoteRuntime(handle.url), RemoteRuntime(handle.workers[0].url)
        try:
            assert not remote.splits_batches
            texts = [(o["text"], o["output_ids"]) for o in remote.generate(prompts, **greedy)]
            assert remote.splits_batches and texts == [(o["text"], o["output_ids"]) for o in outs[::2]]
            routed = pick.run(backend=remote.backend)
            direct = pick.run(backend=worker_rt.backend)  # a worker takes select's batch itself
            assert routed.error() is None and routed["city"] == direct["city"]
            assert not worker_rt.splits_batches
        finally:
            remote.stop()
            worker_rt.stop()
    finally:
        handle.stop()

"""Issue 13, session 6: where do KV events cost? Engine (CUDA graphs on) quiet / publishing to nobody /
sgnb's subscriber / subscriber at page size 16; direct 256x32 batch and run_batch, 9 reps each."""
import json, statistics, sys, time

def main() -> None:
    from sgnb.bench.engine import ENGINE_OPTIONS, prompts, timed_direct, timed_run_batch, alternate
    from sgnb.net import free_port
    from sgnb.runtimes.factory import start_runtime
    out = sys.argv[1]; reps = 9; batch = prompts(256)
    res = {}
    port = free_port()
    configs = {
        "quiet": dict(kv_events=False),
        "publish_to_nobody": dict(kv_events=False, kv_events_config=json.dumps({"publisher": "zmq", "endpoint": f"tcp://*:{port}", "topic": "kv-events"})),
        "sgnb_subscriber": dict(),
        "sgnb_subscriber_page16": dict(page_size=16),
    }
    for name, extra in configs.items():
        t = time.perf_counter()
        try:
            rt = start_runtime("bundled", "engine", **ENGINE_OPTIONS, **extra)
        except Exception as exc:
            res[name] = {"error": str(exc)[:300]}; continue
        start = time.perf_counter() - t
        try:
            dsl, direct = alternate(timed_run_batch(rt.backend, batch), timed_direct(rt, batch), reps)
            st = rt.status()
        finally:
            rt.stop()
        res[name] = {"start_s": start, "direct_median": statistics.median(direct), "dsl_median": statistics.median(dsl),
                     "direct_runs": direct, "dsl_runs": dsl, "kv_events_received": st.get("kv_events_received")}
        print(name, res[name]["direct_median"], res[name]["dsl_median"], flush=True)
        json.dump(res, open(out, "w"), indent=1)

if __name__ == "__main__":
    main()

"""``make demo``: the radix cache at work, in a terminal (``python -m sgnb.tools.demo``)."""

from __future__ import annotations

import argparse

import sgnb

SYSTEM = "You are a concise assistant who answers in one sentence."
QUESTIONS = [
    "What is the capital of France?",
    "What is the capital of Italy?",
    "What is the capital of Spain?",
]


def main(argv: list[str] | None = None) -> None:
    """Start the bundled model on the CPU, ask three questions that share a prefix, print the tree.

    ``argv`` is parsed first, so ``--help`` prints help and exits before anything loads.
    """
    argparse.ArgumentParser(
        prog="python -m sgnb.tools.demo",
        description="The radix cache at work, in a terminal: starts the bundled SmolLM2-135M-Instruct "
        "on the CPU (local runtime), asks three questions that share a system prompt (the later "
        "ones reuse its KV cache), one regex-constrained answer, then prints the radix tree.",
        allow_abbrev=False,
    ).parse_args(argv)
    print(f"sglang {sgnb.check_sglang_version()}; starting the bundled SmolLM2-135M-Instruct on the CPU ...")
    rt = sgnb.start(runtime="local")  # the CPU demo, also on a GPU machine
    try:
        print(f"ready in {rt.load_time:.1f} s\n")
        for q in QUESTIONS:
            prompt = rt.apply_chat_template(
                [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
            )
            out = rt.generate(prompt, max_new_tokens=32, temperature=0)
            m = out["meta_info"]
            print(f"{q}\n  -> {out['text'].strip()}")
            print(
                f"     prompt {m['prompt_tokens']} tokens, {m['cached_tokens']} from the radix cache, "
                f"TTFT {m['ttft'] * 1000:.0f} ms\n"
            )
        # A chat model answers best in its chat template (a bare "Question? Answer:" made it say "no").
        yes_no = rt.apply_chat_template(
            [{"role": "user", "content": "Is Paris in France? Answer yes or no."}]
        )
        out = rt.generate(yes_no, max_new_tokens=4, temperature=0, regex="(yes|no)")
        print(f"Is Paris in France? constrained to '(yes|no)': {out['text']!r}\n")
        print("The radix tree now (shared prefixes are shared nodes):")
        print(rt.cache.pretty(rt.tokenizer.decode))
        print(f"\nhit rate so far: {rt.stats.hit_rate:.0%}")
    finally:
        rt.stop()


if __name__ == "__main__":
    main()

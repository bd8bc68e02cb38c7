"""Words for numbers: the labels, units and one-line summaries sgnb's views print.

``labelled("hit_rate", 0.4)`` -> ``("prefix-cache hit rate", "40.0%")``; ``started_line`` is what
``%sglang start`` prints; ``speed`` sums up a generated variable from SGLang's ``meta_info``.
"""

from __future__ import annotations

from typing import Any

# Human labels and units for status and benchmark keys: (label, unit, format).
LABELS: dict[str, tuple[str, str, str]] = {
    "runtime": ("runtime", "", ""),
    "model": ("model", "", ""),
    "model_path": ("model path", "", ""),
    "device": ("device", "", ""),
    "state": ("state", "", ""),
    "why": ("why this runtime", "", ""),
    "url": ("server URL", "", ""),
    "context_length": ("context length", "tokens", ""),
    "max_total_tokens": ("KV-cache budget", "tokens", ""),
    "page_size": ("page size", "tokens", ""),
    "disable_radix_cache": ("radix cache disabled", "", ""),
    "dtype": ("weights dtype", "", ""),
    "threads": ("CPU threads", "", ""),
    "decode_threads": ("decode threads", "", ""),
    "kv_pool_mib": ("KV pool memory", "MiB", ".1f"),
    "rss_mib": ("process memory (RSS)", "MiB", ".0f"),
    "cache_tokens": ("tokens in the radix cache", "tokens", ""),
    "cache_capacity": ("KV capacity", "tokens", ""),
    "requests": ("requests served", "", ""),
    "hit_rate": ("prefix-cache hit rate", "%", ""),
    "load_time_s": ("load time", "s", ".2f"),
    "sglang_version": ("sglang version", "", ""),
    "mem_fraction_static": ("GPU memory fraction", "", ".2f"),
    "tp_size": ("tensor-parallel GPUs", "", ""),
    "decode_tok_s_1": ("decode, one stream", "tokens/s", ".1f"),
    "decode_tok_s_8": ("decode, 8 streams together", "tokens/s", ".1f"),
    "prefix_ttft_cold_s": ("first token, 1000-token prompt not cached", "s", ".3f"),
    "prefix_ttft_s": ("first token, same prompt cached", "s", ".3f"),
    "prefix_ttft_speedup": ("speedup from the prefix cache", "x", ".1f"),
}


def labelled(key: str, value: Any) -> tuple[str, str]:
    """``("hit_rate", 0.5)`` -> ``("prefix-cache hit rate", "50%")``; unknown keys lose their underscores."""
    label, unit, fmt = LABELS.get(key, (key.replace("_", " "), "", ""))
    if isinstance(value, bool) or value is None or value == "":
        return label, str(value)
    if unit == "%" and isinstance(value, int | float):
        return label, f"{100 * value:.1f}%"
    if isinstance(value, float) and not fmt:
        fmt = ".3g"
    text = format(value, fmt) if fmt and isinstance(value, int | float) else str(value)
    if unit == "x":
        return label, f"{text}×"
    return label, f"{text} {unit}" if unit else text


def model_words(model: Any) -> str:
    """``"bundled"`` -> ``"bundled SmolLM2-135M-Instruct"``; any other name as it is."""
    return "bundled SmolLM2-135M-Instruct" if model == "bundled" else str(model)


def started_line(status: dict[str, Any], steps: dict[str, float] | None = None) -> str:
    """The one line ``%sglang start`` prints (``%sglang status`` has the table).

    ``steps``: seconds per start-up step (``{"imports": 4.1, "model load": 2.0}``), shown as where
    the time went.
    """
    load = status.get("load_time_s")
    if steps:
        # the precision of `%sglang status`'s "load time" (LABELS["load_time_s"]): one number
        parts = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in steps.items())
        took = f" in {sum(steps.values()):.1f} s ({parts})"
    else:
        took = f" in {load:.1f} s" if isinstance(load, int | float) else ""
    where = status.get("device") or status.get("url") or ""
    on = f" on {where}" if where else ""
    return (
        f"SGLang runtime ready{took}: {status.get('runtime')} runtime, {model_words(status.get('model'))}{on}. "
        "%sglang status shows its settings."
    )


def short_value(value: str, limit: int = 80) -> str:
    """A variable's value in the table: the text above shows it whole."""
    flat = " ".join(value.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def speed(meta: dict[str, Any], value: str, elapsed: float, done: bool = False) -> str:
    """``"32 tokens, first after 0.12 s, 41.0 tokens/s"`` once SGLang's meta_info is in, else progress.

    ``done``: the variable is set (its ``StreamExecutor.variable_event``). A ``select``'s meta_info is
    its ``ChoicesDecision.meta_info`` (logprobs, no token counts), so a chosen one reads ``"chosen"``.
    """
    tokens, latency, ttft = meta.get("completion_tokens"), meta.get("e2e_latency"), meta.get("ttft")
    if isinstance(tokens, int) and isinstance(latency, int | float) and latency > 0:
        first = f", first after {ttft:.2f} s" if isinstance(ttft, int | float) else ""
        decode = latency - ttft if isinstance(ttft, int | float) and latency > ttft else latency
        rate = f", {(tokens - 1) / decode:.1f} tokens/s" if tokens > 1 and decode > 0 else ""
        return f"{tokens} tokens{first}{rate}"
    if done:
        return "chosen" if "normalized_prompt_logprobs" in meta else "done"
    return f"{len(value)} characters so far ({elapsed:.1f} s)" if value else ""

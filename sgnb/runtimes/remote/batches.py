"""Batches of prompts through SGLang's router: which ones it forwards, and how sgnb sends the others.

SGLang's server takes a batch on ``/generate`` (``text`` or ``input_ids`` a list of prompts,
``GenerateReqInput.normalize_batch_and_arguments``), but ``sglang-router`` (0.3.2, the Rust
``sgl-router``; ``src/protocols/generate.rs``, ``GenerateRequest``) parses the body first, with
``text: Option<String>``, ``rid: Option<String>``, ``return_logprob: Option<bool>``,
``logprob_start_len`` / ``top_logprobs_num: Option<i32>``, ``token_ids_logprob: Option<Vec<u32>>``
and one ``sampling_params`` object. A batch of texts, or any per-prompt list of those fields, is
answered 422 ("Failed to deserialize the JSON body into the target type: text: invalid type:
sequence, expected a string") before any worker sees it. Only ``input_ids`` is typed as one
prompt or a batch (``InputIds::Single | Batch``): such a batch is forwarded whole to the one worker
the policy picks for all its prompts' ids joined (``extract_text_for_routing``).

So :class:`~sgnb.scaleout.runtime.ClusterRuntime` (a router, always) and a
:class:`~sgnb.runtimes.remote.RemoteRuntime` whose server refused such a batch
(:func:`refused_by_router`: a router URL given to ``%sglang connect``) send a batch the router
forwards as it is, and split any other into one request per prompt (:func:`split`), sent
concurrently - each routed on its own, as the router routes any single request - and put back in
SGLang's batch shape: a list,
prompt-major, prompt ``i``'s ``n`` samples at ``i*n .. i*n+n-1``; streamed, every chunk's ``index``
in that list (``TokenizerManager._handle_batch_request`` / ``_stream_batch_responses``).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# The per-prompt fields the router types as one value (``GenerateRequest`` in sgl-router's
# ``src/protocols/generate.rs``): a list of them is a batch it refuses.
SCALAR_IN_ROUTER = ("rid", "return_logprob", "logprob_start_len", "top_logprobs_num", "sampling_params")
MAX_THREADS = 32  # sub-requests in flight at once; the router and workers queue the rest


# axum's answer (HTTP 422) to a body serde cannot read into the router's GenerateRequest
ROUTER_REFUSAL = "Failed to deserialize the JSON body into the target type"


def refused_by_router(exc: BaseException) -> bool:
    """Whether ``exc`` (RemoteRuntime's ValueError for a 4xx) is sglang-router refusing the body's
    shape (a 422 from its JSON extractor), not the server refusing its content."""
    return isinstance(exc, ValueError) and str(exc).startswith(ROUTER_REFUSAL)


def _is_batch(prompts: Any) -> bool:
    return isinstance(prompts, list) and bool(prompts) and not isinstance(prompts[0], int)


def prompts_of(body: dict[str, Any]) -> tuple[str, Any]:
    """The body's prompt field (``text`` or ``input_ids``, SGLang prefers ``input_ids``) and its value."""
    key = "input_ids" if body.get("input_ids") is not None else "text"
    return key, body.get(key)


def router_takes(body: dict[str, Any]) -> bool:
    """Whether sglang-router forwards this ``/generate`` body (see the module docstring): anything
    but a batch of texts or a per-prompt list in a field the router types as one value."""
    if isinstance(body.get("text"), list):
        return False
    if any(isinstance(body.get(name), list) for name in SCALAR_IN_ROUTER):
        return False
    ids = body.get("token_ids_logprob")
    return not (isinstance(ids, list) and any(isinstance(t, list) for t in ids))


def parallel_n(body: dict[str, Any]) -> int:
    """The body's ``n`` (``GenerateReqInput._handle_parallel_sampling``: the first prompt's)."""
    params = body.get("sampling_params")
    first = params[0] if isinstance(params, list) and params else params
    n = first.get("n", 1) if isinstance(first, dict) else 1
    return n if isinstance(n, int) and n > 1 else 1


def split(body: dict[str, Any]) -> list[dict[str, Any]]:
    """One ``/generate`` body per prompt of a batch ``body``, each with that prompt's fields:
    per-prompt lists indexed, a string ``rid`` made ``{rid}_{i}`` (``GenerateReqInput._normalize_rid``).
    ValueError when a per-prompt list does not have one entry per prompt, as SGLang's normalisation."""
    key, prompts = prompts_of(body)
    if key == "text" and prompts == []:  # a batch of none: SGLang answers it with no outputs
        return []
    if not _is_batch(prompts):
        return [dict(body)]
    subs = []
    for i, prompt in enumerate(prompts):
        sub = {**body, key: prompt}
        for name in (*SCALAR_IN_ROUTER, "token_ids_logprob"):
            value = body.get(name)
            if name == "rid" and isinstance(value, str):
                sub[name] = f"{value}_{i}"
            elif isinstance(value, list) and (name != "token_ids_logprob" or _is_batch(value)):
                if len(value) != len(prompts):
                    raise ValueError(f"{name} has {len(value)} entries for a batch of {len(prompts)} prompts")
                sub[name] = value[i]
        subs.append(sub)
    return subs


def gather(send: Callable[[dict[str, Any]], Any], subs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``send`` every sub-request concurrently; their results in SGLang's batch shape (each prompt's
    result, or its ``n`` results, in prompt order). The first prompt's error, in order, is raised
    after all have ended (the others may have run: the router gives no all-or-nothing batch)."""
    if not subs:
        return []
    with ThreadPoolExecutor(max_workers=min(len(subs), MAX_THREADS), thread_name_prefix="sgnb-batch") as pool:
        futures = [pool.submit(send, sub) for sub in subs]
    flat: list[dict[str, Any]] = []
    for future in futures:
        out = future.result()
        flat.extend(out if isinstance(out, list) else [out])
    return flat

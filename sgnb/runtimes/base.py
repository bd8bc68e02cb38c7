"""What every runtime offers, so the DSL backend, the magics and the widgets work over any of them."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sgnb.core.events import EventHub, KVEvent, Subscriber
from sgnb.core.logprobs import LOGPROB_FIELDS


@dataclass
class GenerateReqInput:
    """One ``generate`` call as SGLang's ``GenerateReqInput`` (``sglang/srt/managers/io_struct.py``)
    holds it, the part sgnb's runtimes take.

    ``Engine.generate`` puts its arguments in one of these and hands it to the tokenizer manager;
    :meth:`Runtime.generate` does the same for :meth:`Runtime._generate_request`. The prompt is
    ``text`` or ``input_ids``, exactly one (``GenerateReqInput._validate_inputs``), one prompt or a
    batch (a server takes batches; see :func:`one_prompt`); ``sampling_params`` is the call's dict
    with its sampling keywords over it; ``logprob`` holds the request-level fields of
    :data:`sgnb.core.logprobs.LOGPROB_FIELDS` given as keywords, as ``Engine.generate`` takes them.
    """

    text: str | list[str] | None
    input_ids: list[int] | list[list[int]] | None
    sampling_params: dict[str, Any] | list[dict[str, Any]] = field(default_factory=dict)
    logprob: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    rid: str | list[str] | None = None


def check_prompt(text: Any, input_ids: Any) -> None:
    """ValueError unless exactly one of ``text`` and ``input_ids`` is given, as SGLang's
    ``GenerateReqInput._validate_inputs`` ("Either text, input_ids or input_embeds should be provided")."""
    if (text is None) == (input_ids is None):
        raise ValueError("pass exactly one of prompt (text) or input_ids")


def merge_sampling_params(
    given: dict[str, Any] | list[dict[str, Any]] | None, keywords: dict[str, Any], text: Any, input_ids: Any
) -> dict[str, Any] | list[dict[str, Any]]:
    """The call's sampling parameters: a dict, or - for a batch, as ``Engine.generate`` takes them - a list
    of one dict per prompt; keyword parameters go into each. ValueError for another type, a list for one
    prompt or of another length than the batch, and for different ``n`` across the list (SGLang's
    ``GenerateReqInput._normalize_parallel_sampling`` message)."""
    if given is None or isinstance(given, dict):
        return {**(given or {}), **keywords}
    if not isinstance(given, list) or not all(isinstance(p, dict) for p in given):
        raise ValueError(
            f"sampling_params must be a dict, or a list of dicts for a batch, got {type(given).__name__}"
        )
    prompts = text if text is not None else input_ids
    batch = isinstance(prompts, list) and (
        text is not None or (bool(prompts) and isinstance(prompts[0], list))
    )
    if not batch:
        raise ValueError("a list of sampling_params needs a batch of prompts (one dict per prompt)")
    if len(given) != len(prompts):
        raise ValueError(f"sampling_params has {len(given)} dicts for {len(prompts)} prompts")
    if len({p.get("n", 1) for p in given}) > 1:
        raise ValueError("The parallel_sample_num should be the same for all samples in sample params.")
    return [{**p, **keywords} for p in given]


def params_of(sampling_params: dict[str, Any] | list[dict[str, Any]], prompt: int) -> dict[str, Any]:
    """Prompt ``prompt``'s sampling parameters (the one dict, or its entry of a per-prompt list)."""
    return sampling_params[prompt] if isinstance(sampling_params, list) else sampling_params


def is_batch(req: GenerateReqInput) -> bool:
    """Whether ``req`` holds a batch: a list of texts, or a list of ``input_ids`` lists."""
    if req.text is not None:
        return isinstance(req.text, list)
    return isinstance(req.input_ids, list) and bool(req.input_ids) and isinstance(req.input_ids[0], list)


def one_prompt(req: GenerateReqInput) -> tuple[str | None, list[int] | None, str | None]:
    """``req``'s prompt (text, input_ids) and rid for a runtime that takes one prompt a call (the
    local runtime, sgnb's Engine runtime); ValueError for a batch."""
    if req.text is not None and not isinstance(req.text, str):
        raise ValueError(f"prompt must be a string, got {type(req.text).__name__}")
    if req.input_ids is not None and any(isinstance(t, list) for t in req.input_ids):
        raise ValueError("input_ids must be one prompt's token ids (a list of ints)")
    if req.rid is not None and not isinstance(req.rid, str):
        raise ValueError(f"rid must be a string, got {type(req.rid).__name__}")
    return req.text, cast("list[int] | None", req.input_ids), req.rid


class Runtime(ABC):
    """The base of every runtime: ``local``, ``engine`` and ``remote`` (and the cluster's).

    :meth:`generate` checks the call and builds its :class:`GenerateReqInput` once, for all of them;
    each runtime runs it in :meth:`_generate_request`.
    """

    kind: str  # "local" | "engine" | "remote"
    model_name: str
    hub: EventHub
    tokenizer: Any  # the model's tokenizer (None where a remote server's folder is not readable here)

    @property
    @abstractmethod
    def backend(self) -> Any: ...  # an sglang BaseBackend

    def generate(
        self,
        prompt: str | list[str] | None = None,
        sampling_params: dict[str, Any] | list[dict[str, Any]] | None = None,
        *,
        input_ids: list[int] | list[list[int]] | None = None,
        stream: bool = False,
        rid: str | list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Generate like SGLang's ``Engine.generate``: ``{"text", "output_ids", "meta_info"}``.

        Sampling parameters come as a dict or as keywords (``max_new_tokens=16, regex=...``).
        With ``stream=True`` returns an iterator of chunks, each holding the text so far.

        Logprobs are request-level keywords, as in SGLang's ``GenerateReqInput``: ``return_logprob``,
        ``logprob_start_len`` (-1: output tokens only), ``top_logprobs_num``, ``token_ids_logprob`` and
        ``return_text_in_logprobs``; ``meta_info`` then holds ``input_token_logprobs``,
        ``output_token_logprobs`` (``(logprob, token_id, text | None)`` tuples),
        ``output_token_logprobs_length`` and, when asked, ``*_top_logprobs`` / ``*_token_ids_logprobs``
        (see :mod:`sgnb.core.logprobs`). ``rid`` names the request for ``abort``. ValueError on bad
        input (``pass exactly one of prompt (text) or input_ids`` first), before any compute; each
        runtime's :meth:`_generate_request` says what more it checks, what it returns for ``n > 1``
        and batches, and how it streams.
        """
        check_prompt(prompt, input_ids)
        params = dict(kwargs)
        logprob = {name: params.pop(name) for name in LOGPROB_FIELDS if name in params}
        return self._generate_request(
            GenerateReqInput(
                text=prompt,
                input_ids=input_ids,
                sampling_params=merge_sampling_params(sampling_params, params, prompt, input_ids),
                logprob=logprob,
                stream=stream,
                rid=rid,
            )
        )

    @abstractmethod
    def _generate_request(self, req: GenerateReqInput) -> Any:
        """Run one checked call (as SGLang's ``TokenizerManager.generate_request``)."""

    @abstractmethod
    def score(self, prompt_ids: list[int], continuation_ids: list[int]) -> list[float]: ...

    @abstractmethod
    def flush_cache(self) -> None: ...

    @abstractmethod
    def status(self) -> dict[str, Any]: ...

    @abstractmethod
    def stop(self) -> None: ...

    # What a late subscriber (a tree view opened mid-session) needs: sgnb.core.events.TreeSource.
    @abstractmethod
    def replay_tree(self) -> list[KVEvent]: ...

    @abstractmethod
    def follow(self, subscriber: Subscriber) -> Callable[[], None]: ...


def model_path_hint(runtime: Runtime) -> str:
    path = getattr(runtime, "model_path", None)
    return str(path) if isinstance(path, str | Path) else runtime.model_name

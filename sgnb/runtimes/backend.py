"""sgnb's SGLang frontend backend: ``@sgl.function`` programs on any sgnb runtime.

SGLang's DSL reaches local models only over HTTP (``RuntimeEndpoint``); it ships no backend
for an in-process engine. ``SgnbBackend`` is a ``BaseBackend`` over any sgnb runtime, with the
semantics of ``RuntimeEndpoint``: the same dtype regexes, ``select`` with all three choices
methods, and ``meta_info`` as the server returns it. The interpreter calls it from many
threads at once (fork, run_batch); it keeps no per-call state, and the runtimes are thread-safe.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sglang.lang.backend.base_backend import BaseBackend
from sglang.lang.chat_template import ChatTemplate, get_chat_template, get_chat_template_by_model_path
from sglang.lang.choices import ChoicesDecision, ChoicesSamplingMethod, token_length_normalized
from sglang.lang.interpreter import StreamExecutor
from sglang.lang.ir import REGEX_BOOL, REGEX_FLOAT, REGEX_INT, REGEX_STR, SglSamplingParams

from sgnb.core.chat_template import register as register_smollm2
from sgnb.core.logprobs import LOGPROB_FIELDS
from sgnb.core.version_check import sglang_global_config
from sgnb.runtimes.base import Runtime, model_path_hint

_DTYPE_REGEX = {"int": REGEX_INT, "float": REGEX_FLOAT, "str": REGEX_STR, "bool": REGEX_BOOL}
_MARK = "\x00SGNB\x00"


def chat_template_from_tokenizer(tokenizer: Any, model_path: str) -> ChatTemplate:
    """SGLang's template for the model, derived from its own Hugging Face chat template.

    SGLang matches templates by model path and falls back to a USER:/ASSISTANT: default that
    chat models were never trained on (SmolLM2 is ChatML but no matcher knows its name).
    """
    register_smollm2()
    by_path = get_chat_template_by_model_path(model_path)
    if by_path.name != "default" or tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return by_path
    if "<|im_start|>" in str(tokenizer.chat_template):
        return get_chat_template("chatml")
    try:
        roles: dict[str, tuple[str, str]] = {}
        for role in ("system", "user", "assistant"):
            text = tokenizer.apply_chat_template([{"role": role, "content": _MARK}], tokenize=False)
            before, after = text.split(_MARK, 1)
            roles[role] = (before, after)
        return ChatTemplate(name="sgnb-derived", default_system_prompt=None, role_prefix_and_suffix=roles)
    except Exception:  # templates that reject a lone role message: SGLang's default is all we have
        return by_path


class SgnbBackend(BaseBackend):
    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime
        self.chat_template = chat_template_from_tokenizer(runtime.tokenizer, model_path_hint(runtime))

    def get_model_name(self) -> str:
        return self.runtime.model_name

    # ---- generation ----------------------------------------------------------------------

    @staticmethod
    def _params(sampling_params: SglSamplingParams) -> dict[str, Any]:
        sp = sampling_params
        if sp.dtype is not None:  # as RuntimeEndpoint._handle_dtype_to_regex
            name = sp.dtype if isinstance(sp.dtype, str) else getattr(sp.dtype, "__name__", str(sp.dtype))
            if name not in _DTYPE_REGEX:
                raise ValueError(f"invalid dtype {sp.dtype!r}; use int, float, str or bool")
            sp.regex = _DTYPE_REGEX[name]
            if name in ("int", "float"):
                sp.stop = [*([sp.stop] if isinstance(sp.stop, str) else list(sp.stop or [])), " ", "\n"]
        # What RuntimeEndpoint.generate sends: the global detokenization flags, then the gen()
        # parameters. A null max_new_tokens means "up to the context length" there, so it is kept.
        params: dict[str, Any] = {
            "skip_special_tokens": sglang_global_config().skip_special_tokens_in_output,
            "spaces_between_special_tokens": sglang_global_config().spaces_between_special_tokens_in_out,
        }
        for key, value in sp.to_srt_kwargs().items():
            if (value is not None or key == "max_new_tokens") and value != () and value != []:
                params[key] = value
        return params

    @staticmethod
    def _request_fields(sampling_params: SglSamplingParams) -> dict[str, Any]:
        """The logprob fields ``gen`` carries, sent beside the sampling parameters when set, as
        ``RuntimeEndpoint.generate`` / ``generate_stream`` send them (request-level, see sgnb.core.logprobs)."""
        fields = {name: getattr(sampling_params, name, None) for name in LOGPROB_FIELDS}
        return {name: value for name, value in fields.items() if value is not None}

    def generate(self, s: StreamExecutor, sampling_params: SglSamplingParams) -> tuple[str, dict[str, Any]]:
        fields = self._request_fields(sampling_params)
        out = self.runtime.generate(s.text_, self._params(sampling_params), **fields)
        if isinstance(out, list):  # gen(n=k): k texts, as SGLang's OpenAI backend returns them
            return [o["text"] for o in out], [o["meta_info"] for o in out]  # type: ignore[return-value]
        assert isinstance(out, dict)
        return out["text"], out["meta_info"]

    def generate_stream(
        self, s: StreamExecutor, sampling_params: SglSamplingParams
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(new text, meta_info)`` per runtime chunk, as ``RuntimeEndpoint.generate_stream`` yields a
        server's: ``meta_info`` is the chunk's own, with the logprobs so far (``output_token_logprobs``,
        cumulative as SGLang's default server sends them) and ``output_token_logprobs_length`` their count;
        ``ProgramState.text_async_iter(return_meta_data=True)`` passes it on.

        A chunk that adds no text is not yielded unless it is the last: the interpreter's
        ``_merge_stream_meta_info`` would prepend its lists to the next chunk's (it is written for
        incremental lists), repeating entries; the next chunk carries them anyway. The runtime holds
        text back as SGLang's server does (``sgnb.core.detokenize``), so no piece ends in half a character.
        """
        if (sampling_params.n or 1) > 1:
            raise ValueError("gen(n > 1) cannot stream; run the program without stream=True")
        fields = self._request_fields(sampling_params)
        chunks = self.runtime.generate(s.text_, self._params(sampling_params), stream=True, **fields)
        assert not isinstance(chunks, dict)
        pos = 0
        for chunk in chunks:
            text = chunk["text"]
            if len(text) > pos or chunk["meta_info"].get("finish_reason") is not None:
                yield text[pos:], chunk["meta_info"]
                pos = len(text)

    # ---- select ----------------------------------------------------------------------------

    def select(
        self,
        s: StreamExecutor,
        choices: list[str],
        temperature: float,
        choices_method: ChoicesSamplingMethod | None = None,
    ) -> ChoicesDecision:
        """Score each choice's tokens after the program text and let ``choices_method`` decide."""
        if temperature > 1e-5:
            raise ValueError("select samples greedily; temperature must be 0")
        method = choices_method or token_length_normalized
        tok = self.runtime.tokenizer
        prefix_ids = tok.encode(s.text_, add_special_tokens=False)
        token_logprobs: list[list[tuple[float | None, int, str]]] = []
        for choice in choices:
            if not choice:
                raise ValueError("select choices must be non-empty strings")
            full = tok.encode(s.text_ + choice, add_special_tokens=False)
            # Tokens can merge across the boundary ("token healing"): score from the first
            # token where text+choice differs from the text alone, like RuntimeEndpoint.
            k = 0
            while k < min(len(prefix_ids), len(full)) and prefix_ids[k] == full[k]:
                k += 1
            if k == 0:
                raise ValueError("select needs some program text before it")
            lps = self.runtime.score(full[:k], full[k:])
            token_logprobs.append([(lp, t, tok.decode([t])) for lp, t in zip(lps, full[k:], strict=True)])
        normalized = [sum(lp for lp, _, _ in tl if lp is not None) / len(tl) for tl in token_logprobs]
        unconditional = None
        if method.requires_unconditional_logprobs:
            unconditional = []
            for tl in token_logprobs:
                ids = [t for _, t, _ in tl]
                rest = self.runtime.score(ids[:1], ids[1:]) if len(ids) > 1 else []
                unconditional.append(
                    [(None, ids[0], tok.decode(ids[:1]))]
                    + [(lp, t, tok.decode([t])) for lp, t in zip(rest, ids[1:], strict=True)]
                )
        decision = method(
            choices=choices,
            normalized_prompt_logprobs=normalized,
            input_token_logprobs=token_logprobs,
            output_token_logprobs=[[] for _ in choices],
            unconditional_token_logprobs=unconditional,
        )
        return decision

    # ---- the rest of the protocol ------------------------------------------------------------

    def cache_prefix(self, prefix_str: str) -> None:
        """Prefill ``prefix_str`` into the radix cache (run_batch calls this for shared prefixes)."""
        ids = self.runtime.tokenizer.encode(prefix_str, add_special_tokens=False)
        if len(ids) >= 2:
            self.runtime.score(ids[:-1], ids[-1:])

    def commit_lazy_operations(self, s: StreamExecutor) -> None:
        self.cache_prefix(s.text_)

    def flush_cache(self) -> None:
        self.runtime.flush_cache()

    def get_server_info(self) -> dict[str, Any]:
        return self.runtime.status()

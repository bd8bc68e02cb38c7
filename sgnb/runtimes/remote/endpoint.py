"""``SgnbEndpoint``: SGLang's ``RuntimeEndpoint`` with every ``/generate`` sent through a RemoteRuntime.

SGLang's DSL reaches a server through ``sglang.lang.backend.runtime_endpoint.RuntimeEndpoint``, which
posts with its own ``http_request``: sgnb's session saw none of those requests, so ``%%sglang --show
tokens`` (and the cache panel) missed every ``gen`` of a program cell on a remote session. This
subclass builds each request body exactly as ``RuntimeEndpoint`` does (its own ``select`` and dtype
handling run unchanged) and sends it with :meth:`RemoteRuntime.request`, which publishes the finished
requests and adds logprobs while the token view traces the cell.

``gen(n=k)`` returns ``k`` texts and ``k`` meta_infos, as sgnb's ``SgnbBackend`` and SGLang's OpenAI
backend do (``StreamExecutor._execute_gen`` keeps the list and appends the first); SGLang's own
``RuntimeEndpoint.generate`` fails there (it indexes the server's list as a dict).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint
from sglang.lang.interpreter import StreamExecutor
from sglang.lang.ir import SglSamplingParams

from sgnb.core.logprobs import LOGPROB_FIELDS
from sgnb.core.version_check import sglang_global_config

# RuntimeEndpoint.generate / generate_stream copy these from gen()'s parameters when set
_SENT_FIELDS = tuple(f for f in LOGPROB_FIELDS if f != "token_ids_logprob")


class SgnbEndpoint(RuntimeEndpoint):
    def __init__(self, runtime: Any) -> None:
        """``runtime``: a :class:`~sgnb.runtimes.remote.RemoteRuntime` (not imported: it imports this)."""
        super().__init__(runtime.url, api_key=runtime.api_key)
        self.runtime = runtime

    def _body(self, s: StreamExecutor, sampling_params: SglSamplingParams) -> dict[str, Any]:
        """The body ``RuntimeEndpoint.generate`` posts (dtype regexes, global detokenize flags)."""
        self._handle_dtype_to_regex(sampling_params)
        data: dict[str, Any] = {
            "text": s.text_,
            "sampling_params": {
                "skip_special_tokens": sglang_global_config().skip_special_tokens_in_output,
                "spaces_between_special_tokens": sglang_global_config().spaces_between_special_tokens_in_out,
                **sampling_params.to_srt_kwargs(),
            },
        }
        for item in _SENT_FIELDS:
            value = getattr(sampling_params, item, None)
            if value is not None:
                data[item] = value
        self._add_images(s, data)
        return data

    def generate(
        self, s: StreamExecutor, sampling_params: SglSamplingParams
    ) -> tuple[str | list[str], dict[str, Any] | list[dict[str, Any]]]:
        obj = self.runtime.request(self._body(s, sampling_params))
        if isinstance(obj, list):  # gen(n=k): the server's k results
            return [o["text"] for o in obj], [o["meta_info"] for o in obj]
        return obj["text"], obj["meta_info"]

    def generate_stream(
        self, s: StreamExecutor, sampling_params: SglSamplingParams
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(new text, meta_info)`` per server chunk, as ``RuntimeEndpoint.generate_stream``."""
        if (sampling_params.n or 1) > 1:
            raise ValueError("gen(n > 1) cannot stream; run the program without stream=True")
        data = {**self._body(s, sampling_params), "stream": True}
        pos = 0
        for chunk in self.runtime.request(data):
            text = chunk["text"]
            yield text[pos:], chunk["meta_info"]
            pos = len(text)

    def _generate_http_request(self, s: StreamExecutor, data: dict[str, Any]) -> Any:
        """``select``'s requests (the prefix, then every choice scored in one batch)."""
        self._add_images(s, data)
        return self.runtime.request(data)

    def cache_prefix(self, prefix_str: str) -> None:
        self.runtime.request({"text": prefix_str, "sampling_params": {"max_new_tokens": 0}})

    def commit_lazy_operations(self, s: StreamExecutor) -> None:
        data: dict[str, Any] = {"text": s.text_, "sampling_params": {"max_new_tokens": 0}}
        self._add_images(s, data)
        self.runtime.request(data)

    fill_image = commit_lazy_operations

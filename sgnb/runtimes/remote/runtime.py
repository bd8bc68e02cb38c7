"""``RemoteRuntime``: an SGLang server elsewhere, over its native HTTP API.

This is how users outgrow one machine: the server can be ``sglang.launch_server`` on a GPU box,
a container, or a cluster behind sglang-router. sgnb never grows its own distribution.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from sgnb import net
from sgnb.core.events import EventHub, finished_from_result
from sgnb.runtimes.base import GenerateReqInput, Runtime
from sgnb.runtimes.batch import interleave
from sgnb.runtimes.kv_subscriber import KVEventsTree, KVEventSubscriber
from sgnb.runtimes.remote import batches

if TYPE_CHECKING:
    from sgnb.core.grammar import GrammarCompiler


def outputs_of(body: dict[str, Any]) -> int:
    """How many outputs a ``/generate`` body asks for: prompts x ``n`` (batch-major)."""
    prompts = body.get("input_ids")
    if prompts is None:
        prompts = body.get("text")
    batch = len(prompts) if isinstance(prompts, list) and prompts and not isinstance(prompts[0], int) else 1
    params = body.get("sampling_params") or {}
    if isinstance(
        params, list
    ):  # one per prompt: n is the first's (GenerateReqInput._handle_parallel_sampling)
        params = params[0] if params else {}
    n = params.get("n") or 1
    return batch * max(1, int(n))


def _drop_logprobs(out: dict[str, Any]) -> None:
    """Remove the logprob fields ``meta_info`` has only because the token view asked for them."""
    meta = out.get("meta_info")
    if isinstance(meta, dict):
        for key in [k for k in meta if "logprobs" in k]:
            del meta[key]


def _without_logprobs(chunk: dict[str, Any]) -> dict[str, Any]:
    out = {**chunk, "meta_info": dict(chunk.get("meta_info") or {})}
    _drop_logprobs(out)
    return out


class ServerNotReadyError(ValueError):
    """The server did not answer /health in time."""


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def wait_for_server(
    url: str, timeout: float = 60.0, api_key: str | None = None, interval: float = 0.5
) -> float:
    """Poll ``/health`` (:func:`sgnb.net.wait_for_server`); the seconds waited, or ``ServerNotReadyError``."""
    started = time.monotonic()
    ready, last = net.wait_for_server(url, timeout, api_key, interval)
    if not ready:
        raise ServerNotReadyError(f"{url} was not ready after {timeout:g} s ({last})")
    return time.monotonic() - started


class RemoteRuntime(KVEventsTree, Runtime):
    kind = "remote"

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        kv_events: str | None = None,
        kv_events_topic: str = "kv-events",
        hub: EventHub | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not a server URL: {url!r} (expected http://host:port)")
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.hub = hub or EventHub()
        self.waited_s = wait_for_server(self.url, timeout, api_key)
        self.model_info = self._get("/get_model_info")
        self.model_path = str(self.model_info.get("model_path", ""))
        self.model_name = self.model_path or self.url
        # Subscribe before the first request: ZMQ drops what a late subscriber missed.
        self._subscriber = KVEventSubscriber(kv_events, kv_events_topic, self.hub) if kv_events else None
        self._tokenizer: Any = None
        self._backend: Any = None
        self._grammars: GrammarCompiler | None = None
        self._stopped = False
        # > 0 (sgnb.core.token_trace.tracing, the token view): every request asks for logprobs
        self.logprob_top_k = 0
        # True once the server (sglang-router) refused a batch it could not parse: batches it
        # cannot take are sent one request per prompt from then on (sgnb.runtimes.remote.batches)
        self.splits_batches = False

    # ---- HTTP ----------------------------------------------------------------------------

    def _get(self, path: str) -> dict[str, Any]:
        res = requests.get(self.url + path, headers=_headers(self.api_key), timeout=30)
        return dict(self._check(res).json())

    def _post(self, path: str, body: dict[str, Any], stream: bool = False) -> requests.Response:
        res = requests.post(
            self.url + path, json=body, headers=_headers(self.api_key), timeout=600, stream=stream
        )
        return self._check(res)

    @staticmethod
    def _check(res: requests.Response) -> requests.Response:
        if res.status_code == 200:
            return res
        try:
            detail = res.json()
            message = (
                detail.get("error", {}).get("message") if isinstance(detail.get("error"), dict) else None
            )
            message = message or detail.get("message") or detail.get("detail") or json.dumps(detail)
        except ValueError:
            message = res.text[:200]
        if res.status_code in (400, 422):
            raise ValueError(str(message))
        if res.status_code == 401:
            raise ValueError(f"the server refused the API key: {message}")
        raise RuntimeError(f"HTTP {res.status_code} from {res.url}: {message}")

    # ---- the runtime API -----------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer when its folder is readable here (same machine), else None."""
        if self._tokenizer is None and self.model_path and Path(self.model_path).is_dir():
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        return self._tokenizer

    @property
    def grammars(self) -> GrammarCompiler | None:
        """A grammar compiler on the server's tokenizer, made once, for replaying constraints
        (:func:`sgnb.core.grammar.compiler_for`); None when the tokenizer is not readable here."""
        if self._grammars is None and self.tokenizer is not None:
            from sgnb.core.grammar import GrammarCompiler  # torch and xgrammar: only when replaying

            self._grammars = GrammarCompiler(self.tokenizer, len(self.tokenizer))
        return self._grammars

    @property
    def backend(self) -> Any:
        """SGLang's own HTTP backend, ``RuntimeEndpoint``, with its ``/generate`` requests sent through
        this runtime (:class:`~sgnb.runtimes.remote.endpoint.SgnbEndpoint`): the DSL exactly as SGLang
        runs it, and every request it makes seen by the session's views."""
        if self._backend is None:
            from sgnb.core.chat_template import register
            from sgnb.runtimes.remote.endpoint import SgnbEndpoint

            register()  # SGLang's template matchers do not know SmolLM2 (the bundled model)
            self._backend = SgnbEndpoint(self)
        return self._backend

    def _generate_request(self, req: GenerateReqInput) -> Any:
        """:meth:`Runtime.generate` as one ``/generate`` request; the answer exactly as the server
        returns it.

        One prompt or a batch. Shapes, as SGLang's ``/generate`` (``http_server.generate_request``)
        and ``Engine.generate`` return them: a dict for one prompt; a list for ``n > 1`` or a batch,
        batch-major (prompt ``i``'s ``n`` samples at ``i*n .. i*n+n-1``,
        ``TokenizerManager._handle_batch_request``). ``stream=True``: an iterator of chunks, each
        holding its sample's text so far and, for ``n > 1`` or a batch, its ``index`` in that list.
        ValueError on a refused request (HTTP 400/422).
        """
        body: dict[str, Any] = {"sampling_params": req.sampling_params, "stream": req.stream, **req.logprob}
        body["text" if req.text is not None else "input_ids"] = (
            req.text if req.text is not None else req.input_ids
        )
        if req.rid is not None:
            body["rid"] = req.rid
        return self.request(body)

    def request(self, body: dict[str, Any]) -> Any:
        """POST a ``/generate`` body as SGLang's ``RuntimeEndpoint`` builds it; the server's answer
        (see :meth:`_generate_request` for its shapes), streamed when ``body["stream"]``.

        Each finished output is published on :attr:`hub` (``RequestFinished``). While
        :func:`sgnb.core.token_trace.tracing` is on (``logprob_top_k > 0``) a request that did not
        ask for logprobs asks for them (``return_logprob``, ``top_logprobs_num``): the event carries
        them for the token view, and the answer is returned without them, as it was asked.

        A batch that sglang-router refuses (a batch of texts, e.g. ``select``'s through SGLang's
        ``RuntimeEndpoint``; see :mod:`sgnb.runtimes.remote.batches`) is sent as one request per
        prompt, concurrently, once the server has refused one (:attr:`splits_batches`), and
        answered in SGLang's batch shape.
        """
        self._check_running()
        if isinstance(body.get("sampling_params"), list):  # one dict per prompt: sent one request each
            return self._send_split(body)
        if batches.router_takes(body):
            return self._send(body)
        if self.splits_batches:
            return self._send_split(body)
        if body.get("stream"):
            return self._stream_or_split(body)
        try:
            return self._send(body)
        except ValueError as exc:
            if not batches.refused_by_router(exc):
                raise
            self.splits_batches = True
            return self._send_split(body)

    def _send_split(self, body: dict[str, Any]) -> Any:
        subs = batches.split(body)
        if body.get("stream"):
            return interleave([functools.partial(self._send, sub) for sub in subs], batches.parallel_n(body))
        return batches.gather(self._send, subs)

    def _stream_or_split(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """The streamed batch as sent; split if the server refuses it before its first chunk."""
        sent = False
        try:
            for chunk in self._send(body):
                sent = True
                yield chunk
        except ValueError as exc:
            if sent or not batches.refused_by_router(exc):
                raise
            self.splits_batches = True
            yield from self._send_split(body)

    def _send(self, body: dict[str, Any]) -> Any:
        """One ``/generate`` request, the answer as the server gives it (see :meth:`request`)."""
        body = dict(body)
        added = self._ask_logprobs(body)
        started = time.perf_counter()
        if body.get("stream"):
            return self._stream(body, started, added)
        data = self._post("/generate", body).json()
        outs = data if isinstance(data, list) else [data]
        for index, out in enumerate(outs):
            self._finished(out, self._prompt_of(body, index, len(outs)), started, body["sampling_params"])
            if added:
                _drop_logprobs(out)
        return data

    def _ask_logprobs(self, body: dict[str, Any]) -> bool:
        """Ask for logprobs while traced, unless the request asked itself or generates nothing."""
        params = body.setdefault("sampling_params", {})
        if not self.logprob_top_k or body.get("return_logprob") or params.get("max_new_tokens") == 0:
            return False
        body["return_logprob"], body["top_logprobs_num"] = True, self.logprob_top_k
        return True

    def _prompt_of(self, body: dict[str, Any], index: int, outputs: int) -> list[int]:
        """The prompt token ids of output ``index`` of ``outputs`` (batch-major, see :meth:`generate`),
        as the server counts them: the ids sent, or the text encoded as SGLang's tokenizer manager
        does (special tokens added); [] when the tokenizer is not readable here."""
        prompts = body.get("input_ids")
        if prompts is None:
            prompts = body.get("text")
        batch = prompts if isinstance(prompts, list) and prompts and not isinstance(prompts[0], int) else None
        one = batch[index * len(batch) // outputs] if batch else prompts
        if isinstance(one, list):
            return [int(t) for t in one]
        tok = self.tokenizer if isinstance(one, str) else None
        return [] if tok is None else [int(t) for t in tok.encode(one)]

    def _sse(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """POST ``body`` to ``path`` with streaming; yield each ``data:`` chunk until ``[DONE]``."""
        res = self._post(path, body, stream=True)
        for line in res.iter_lines(decode_unicode=False):
            text = line.decode("utf-8")
            if not text.startswith("data:"):
                continue
            if text.strip() == "data: [DONE]":
                break
            yield json.loads(text[5:])

    def _stream(self, body: dict[str, Any], started: float, added: bool) -> Iterator[dict[str, Any]]:
        # n > 1 or a batch: the samples' chunks interleave, each naming its sample in "index"
        outputs = outputs_of(body)
        last: dict[int, dict[str, Any]] = {}
        # traced (tracing asked for the logprobs): each token is published as it arrives (TokenStep)
        steps = None
        if added:
            from sgnb.runtimes.remote.steps import StreamSteps  # xgrammar: only when traced

            steps = StreamSteps(self, body["sampling_params"], started)
        for chunk in self._sse("/generate", body):
            if "error" in chunk and "meta_info" not in chunk:
                error = chunk["error"]
                message = str(error.get("message") if isinstance(error, dict) else error)
                # a request refused inside the stream (SGLang's serve_generate_request: code 400)
                # is bad input, a ValueError as the same request's 400 without stream
                code = error.get("code") if isinstance(error, dict) else None
                if isinstance(code, int) and 400 <= code < 500:
                    raise ValueError(message)
                raise RuntimeError(message)
            last[int(chunk.get("index", 0))] = chunk
            if steps is not None:
                meta: dict[str, Any] = chunk.get("meta_info") or {}
                prompt_of = functools.partial(self._server_prompt, body, outputs=outputs, meta=meta)
                for event in steps.feed(chunk, prompt_of):
                    self.hub.publish(event)
            yield _without_logprobs(chunk) if added else chunk
        if not last:
            raise RuntimeError("the server closed the stream before sending anything")
        for index in sorted(last):
            prompt = self._prompt_of(body, index, max(outputs, index + 1))
            self._finished(last[index], prompt, started, body["sampling_params"])

    def _server_prompt(
        self, body: dict[str, Any], index: int, outputs: int, meta: dict[str, Any]
    ) -> list[int]:
        """:meth:`_prompt_of`, or [] when it is not the server's count (``meta_info["prompt_tokens"]``)."""
        ids = self._prompt_of(body, index, max(outputs, index + 1))
        return ids if len(ids) == meta.get("prompt_tokens", len(ids)) else []

    def _finished(
        self, out: dict[str, Any], prompt_ids: list[int], started: float, params: dict[str, Any]
    ) -> None:
        meta = out.get("meta_info", {})
        if prompt_ids and len(prompt_ids) != meta.get("prompt_tokens", len(prompt_ids)):
            prompt_ids = []  # not the server's tokens (another tokenizer, a template): show none
        self.hub.publish(finished_from_result(out, prompt_ids, time.perf_counter() - started, params))

    def score(self, prompt_ids: list[int], continuation_ids: list[int]) -> list[float]:
        self._check_running()
        body = {
            "input_ids": list(prompt_ids) + list(continuation_ids),
            "sampling_params": {"max_new_tokens": 0, "temperature": 0},
            "return_logprob": True,
            "logprob_start_len": len(prompt_ids) - 1,
        }
        entries = self._post("/generate", body).json()["meta_info"]["input_token_logprobs"]
        return [float(e[0]) for e in entries[-len(continuation_ids) :]]

    def flush_cache(self) -> None:
        self._check_running()
        requests.post(
            self.url + "/flush_cache", headers=_headers(self.api_key), timeout=30
        ).raise_for_status()

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if self.tokenizer is None:
            raise ValueError(
                "this server's tokenizer is not readable here; send text with the template applied"
            )
        return str(
            self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt
            )
        )

    def status(self) -> dict[str, Any]:
        try:
            info = self._get("/get_server_info")
        except (RuntimeError, ValueError, requests.RequestException):
            info = {}
        return {
            "runtime": self.kind,
            "model": self.model_name,
            "url": self.url,
            "device": "remote",
            "state": "stopped" if self._stopped else "connected",
            "kv_events": "subscribed" if self._subscriber else "not subscribed",
            "sglang_version": info.get("version", "unknown"),
            "ready_after_s": round(self.waited_s, 2),
        }

    def _check_running(self) -> None:
        if self._stopped:
            raise RuntimeError("disconnected from this server; connect again")

    def stop(self) -> None:
        """Disconnect. The server itself keeps running: it is not ours to stop."""
        self._stopped = True
        if self._subscriber is not None:
            self._subscriber.close()

    shutdown = stop

    def __repr__(self) -> str:
        return f"<RemoteRuntime {self.url} {'disconnected' if self._stopped else 'connected'}>"

"""``RemoteRuntime``: an SGLang server elsewhere, over its native HTTP API.

This is how users outgrow one machine: the server can be ``sglang.launch_server`` on a GPU box,
a container, or a cluster behind sglang-router. sgnb never grows its own distribution.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from sgnb import net
from sgnb.core.events import EventHub, finished_from_result
from sgnb.core.logprobs import LOGPROB_FIELDS
from sgnb.runtimes.kv_subscriber import KVEventsTree, KVEventSubscriber


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


class RemoteRuntime(KVEventsTree):
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
        self._stopped = False

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
    def backend(self) -> Any:
        """SGLang's own HTTP backend, ``RuntimeEndpoint``: the DSL exactly as SGLang runs it."""
        if self._backend is None:
            from sglang.lang.backend.runtime_endpoint import RuntimeEndpoint

            from sgnb.core.chat_template import register

            register()  # SGLang's template matchers do not know SmolLM2 (the bundled model)
            self._backend = RuntimeEndpoint(self.url, api_key=self.api_key)
        return self._backend

    def generate(
        self,
        prompt: str | None = None,
        sampling_params: dict[str, Any] | None = None,
        *,
        input_ids: list[int] | None = None,
        stream: bool = False,
        rid: str | None = None,
        **kwargs: Any,
    ) -> Any:
        self._check_running()
        if (prompt is None) == (input_ids is None):
            raise ValueError("pass exactly one of prompt (text) or input_ids")
        params = {**(sampling_params or {}), **kwargs}
        # Request-level fields of SGLang's GenerateReqInput (sgnb.core.logprobs), not sampling parameters.
        logprob = {k: params.pop(k) for k in LOGPROB_FIELDS if k in params}
        body: dict[str, Any] = {"sampling_params": params, "stream": stream, **logprob}
        body["text" if prompt is not None else "input_ids"] = prompt if prompt is not None else input_ids
        if rid is not None:
            body["rid"] = rid
        started = time.perf_counter()
        if stream:
            return self._stream(body, started)
        out = dict(self._post("/generate", body).json())
        self._finished(out, input_ids, started, body["sampling_params"])
        return out

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

    def _stream(self, body: dict[str, Any], started: float) -> Iterator[dict[str, Any]]:
        last = None
        for last in self._sse("/generate", body):
            yield last
        if last is None:
            raise RuntimeError("the server closed the stream before sending anything")
        self._finished(last, body.get("input_ids"), started, body["sampling_params"])

    def _finished(
        self, out: dict[str, Any], input_ids: list[int] | None, started: float, params: dict[str, Any]
    ) -> None:
        self.hub.publish(
            finished_from_result(out, list(input_ids or []), time.perf_counter() - started, params)
        )

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

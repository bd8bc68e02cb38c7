"""What the app and its routers share: the config, the per-app context and the JSON helpers.

``app`` builds the FastAPI app; ``native`` (SGLang's routes) and ``openai_api`` (``/v1``) read the
context with ``ctx_of`` and answer with ``json_response``. Error bodies follow SGLang's shapes
(``sglang.srt.entrypoints.http_server``'s ``{"error": ...}`` and the OpenAI ``ErrorResponse``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from fastapi import Request
from starlette.responses import Response

from sgnb.serve.accept import Refused
from sgnb.serve.engine import Engine
from sgnb.serve.metrics import Metrics


@dataclass
class ServeConfig:
    api_key: str | None = None
    kv_events_config: str | dict[str, Any] | None = None
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 30000
    owns_runtime: bool = False  # stop the runtime when the app shuts down
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ServeContext:
    runtime: Any
    engine: Engine
    metrics: Metrics
    config: ServeConfig
    model_name: str
    publisher: Any = None


def served_name(runtime: Any, config: ServeConfig) -> str:
    if config.served_model_name:
        return config.served_model_name
    name = str(getattr(runtime, "model_name", "") or getattr(runtime, "model_path", "model"))
    if name == "bundled":
        from sgnb.core.models import BUNDLED_NAME

        return BUNDLED_NAME
    return name


def ctx_of(request: Request) -> ServeContext:
    ctx: ServeContext = request.app.state.sgnb
    return ctx


def vocab_size(ctx: ServeContext) -> int:
    """The model's vocabulary size (token ids are checked against it, as SGLang does)."""
    size = getattr(getattr(ctx.runtime, "model", None), "vocab_size", None)
    return int(size) if size else len(ctx.runtime.tokenizer)


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(dumps(obj), status_code=status, media_type="application/json")


def error_body(path: str, status: int, message: str) -> dict[str, Any]:
    if path.startswith("/v1/"):
        phrase = HTTPStatus(status).phrase.replace(" ", "") + "Error" if status < 600 else "Error"
        return {"object": "error", "message": message, "type": phrase, "param": None, "code": status}
    return {"error": {"message": message, "code": status}}


def error_response(path: str, status: int, message: str) -> Response:
    return json_response(error_body(path, status, message), status)


async def read_json(request: Request) -> Any:
    """The body as JSON; a 400 when it is empty or malformed (NaN and Infinity included)."""
    raw = await request.body()
    if not raw.strip():
        raise _bad_body("the request body is empty; send a JSON object")

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        return json.loads(raw, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise _bad_body(f"malformed JSON body: {exc}") from None


def _bad_body(message: str) -> Refused:
    """SGLang answers a body FastAPI cannot decode through its RequestValidationError handler."""
    body = {"object": "error", "message": message, "type": "Bad Request", "param": None, "code": 400}
    return Refused(message, body)

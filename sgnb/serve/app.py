"""The FastAPI app factory: SGLang's HTTP API over a local runtime.

Errors follow SGLang's server: bad input is a 400 with a JSON body (``{"error": {"message"}}`` on
native routes, OpenAI's ``{"object": "error", ...}`` under ``/v1``), a missing or wrong API key a
401 ``{"error": "Unauthorized"}``; ``/health*`` and ``/metrics`` need no key, as in SGLang.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from sgnb.core.version_check import SGNB_VERSION
from sgnb.serve.accept import Refused
from sgnb.serve.context import ServeConfig, ServeContext, error_response, json_response, served_name
from sgnb.serve.engine import Engine
from sgnb.serve.metrics import Metrics

logger = logging.getLogger("sgnb.serve")
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]
OPEN_PATHS = ("/health", "/ready", "/metrics")


class ApiKeyMiddleware:
    """Bearer auth as SGLang's ``--api-key`` (pure ASGI, so stream disconnects still reach the app)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if (
            scope["type"] != "http"
            or scope.get("method") == "OPTIONS"
            or scope["path"].startswith(OPEN_PATHS)
        ):
            await self.app(scope, receive, send)
            return
        header = ""
        for key, value in scope.get("headers", []):
            if key == b"authorization":
                header = value.decode("latin-1")
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and secrets.compare_digest(
            token.strip().encode(), self.api_key.encode()
        ):
            await self.app(scope, receive, send)
            return
        response = json_response({"error": "Unauthorized"}, 401)
        response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)


def create_app(runtime: Any, config: ServeConfig | None = None, **kwargs: Any) -> FastAPI:
    """An app serving ``runtime`` (a LocalRuntime). Keywords are ServeConfig fields."""
    from sgnb.serve import accept, native, openai_api
    from sgnb.serve.kv_events import parse_config

    config = config or ServeConfig(**kwargs)
    kv_cfg = parse_config(config.kv_events_config)  # a bad config fails here, at start-up
    accept.load()
    name = served_name(runtime, config)
    ctx = ServeContext(
        runtime=runtime, engine=Engine(runtime), metrics=Metrics(name), config=config, model_name=name
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if kv_cfg is not None:
            from sgnb.serve.kv_events import ZmqKVPublisher

            ctx.publisher = ZmqKVPublisher(runtime.hub.subscribe, kv_cfg)
        try:
            yield
        finally:
            if ctx.publisher is not None:
                ctx.publisher.close()
            ctx.engine.close()
            if config.owns_runtime:
                runtime.stop()

    app = FastAPI(title="sgnb serve", version=SGNB_VERSION, lifespan=lifespan)
    app.state.sgnb = ctx
    app.include_router(native.router)
    app.include_router(openai_api.router)
    _add_error_handlers(app)
    if config.api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=config.api_key)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused) -> Response:  # SGLang's own shape
        return json_response(exc.body, exc.status)

    @app.exception_handler(ValueError)
    async def bad_request(request: Request, exc: ValueError) -> Response:
        return error_response(request.url.path, 400, str(exc) or type(exc).__name__)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()[:5]]
        return error_response(request.url.path, 400, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response = error_response(request.url.path, exc.status_code, str(exc.detail))
        for key, value in (exc.headers or {}).items():
            response.headers[key] = value
        return response

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, RuntimeError) and "stopped" in str(exc):
            return error_response(request.url.path, 503, str(exc))
        logger.exception("unhandled error on %s", request.url.path)
        return error_response(request.url.path, 500, f"{type(exc).__name__}: {exc}")

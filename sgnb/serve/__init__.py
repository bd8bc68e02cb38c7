"""``sgnb serve``: the local runtime behind SGLang's HTTP API (native ``/generate`` and OpenAI ``/v1``).

    from sgnb.serve import create_app, ServerThread
    rt = sgnb.start()
    with ServerThread(create_app(rt), port=30000) as server:
        requests.post(server.url + "/generate", json={"text": "Hi", "sampling_params": {"max_new_tokens": 8}})

Submodules import FastAPI, uvicorn and the runtime lazily, so ``import sgnb.serve`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sgnb.serve.app import create_app
    from sgnb.serve.context import ServeConfig
    from sgnb.serve.server import ServerThread, run_server

__all__ = ["ServeConfig", "ServerThread", "create_app", "run_server"]

_WHERE = {
    "ServeConfig": "sgnb.serve.context",
    "create_app": "sgnb.serve.app",
    "ServerThread": "sgnb.serve.server",
    "run_server": "sgnb.serve.server",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'sgnb.serve' has no attribute {name!r}")

"""What every runtime offers, so the DSL backend, the magics and the widgets work over any of them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sgnb.core.events import EventHub, KVEvent, Subscriber


@runtime_checkable
class Runtime(Protocol):
    kind: str  # "local" | "engine" | "remote"
    model_name: str
    hub: EventHub

    @property
    def tokenizer(self) -> Any: ...

    @property
    def backend(self) -> Any: ...  # an sglang BaseBackend

    def generate(
        self,
        prompt: str | None = None,
        sampling_params: dict[str, Any] | None = None,
        *,
        input_ids: list[int] | None = None,
        stream: bool = False,
        rid: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any] | Iterator[dict[str, Any]]: ...

    def score(self, prompt_ids: list[int], continuation_ids: list[int]) -> list[float]: ...

    def flush_cache(self) -> None: ...

    def status(self) -> dict[str, Any]: ...

    def stop(self) -> None: ...

    # What a late subscriber (a tree view opened mid-session) needs: sgnb.core.events.TreeSource.
    def replay_tree(self) -> list[KVEvent]: ...

    def follow(self, subscriber: Subscriber) -> Callable[[], None]: ...


def model_path_hint(runtime: Runtime) -> str:
    path = getattr(runtime, "model_path", None)
    return str(path) if isinstance(path, str | Path) else runtime.model_name

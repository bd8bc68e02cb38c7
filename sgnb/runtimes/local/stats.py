"""``RuntimeStats``: the local runtime's running request totals, fed from its event hub."""

from __future__ import annotations

from sgnb.core.events import RequestFinished


class RuntimeStats:
    """Running totals for status lines and benchmarks."""

    def __init__(self) -> None:
        self.requests = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.completion_tokens = 0

    def observe(self, event: object) -> None:
        if isinstance(event, RequestFinished):
            self.requests += 1
            self.prompt_tokens += event.prompt_tokens
            self.cached_tokens += event.cached_tokens
            self.completion_tokens += event.completion_tokens

    @property
    def hit_rate(self) -> float:
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else 0.0

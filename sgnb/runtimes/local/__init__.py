"""sgnb's reference engine: RadixCache, KV pool, scheduler, grammar, model. Start at radix_cache.py."""

from sgnb.runtimes.local.runtime import LocalRuntime

__all__ = ["LocalRuntime"]

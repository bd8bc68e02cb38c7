"""A token-level KV pool, SGLang's ``token_to_kv_pool`` on CPU.

One preallocated K and one V tensor per layer, shaped ``[kv_heads, capacity, head_dim]``.
A slot is one token's key/value in every layer. Head-major, so gathering a request's slots
gives the ``[kv_heads, tokens, head_dim]`` block attention multiplies by, with no transpose
(a strided K made each decode step's attention 2-5x slower, measured at 50-900 tokens). The radix tree stores slot indices, so
reusing a cached prefix copies nothing: the next request's attention simply reads those slots.
"""

from __future__ import annotations

import threading

import torch


class OutOfSlotsError(RuntimeError):
    pass


class KVPool:
    def __init__(
        self, capacity: int, num_layers: int, kv_heads: int, head_dim: int, dtype: torch.dtype
    ) -> None:
        self.capacity = capacity
        self.k = [torch.zeros(kv_heads, capacity, head_dim, dtype=dtype) for _ in range(num_layers)]
        self.v = [torch.zeros(kv_heads, capacity, head_dim, dtype=dtype) for _ in range(num_layers)]
        self._free = self._all_slots()
        self._n_free = capacity
        self._lock = threading.Lock()

    def _all_slots(self) -> torch.Tensor:
        # A stack with slot 0 on top. alloc pops ascending runs and free pushes runs back in order,
        # so a request's slots - its prompt, then one per decoded token, then the next turn - tend
        # to be one ascending run, which decode attention reads as a view instead of a gather.
        return torch.arange(self.capacity - 1, -1, -1, dtype=torch.int64)

    @property
    def free_slots(self) -> int:
        return self._n_free

    @property
    def used_slots(self) -> int:
        return self.capacity - self._n_free

    def alloc(self, n: int) -> torch.Tensor:
        with self._lock:
            if n > self._n_free:
                raise OutOfSlotsError(f"need {n} KV slots, {self._n_free} free")
            self._n_free -= n
            return self._free[self._n_free : self._n_free + n].flip(0)

    def free(self, slots: torch.Tensor) -> None:
        n = int(slots.numel())
        if n == 0:
            return
        with self._lock:
            assert self._n_free + n <= self.capacity, "double free of KV slots"
            self._free[self._n_free : self._n_free + n] = slots.flip(0)
            self._n_free += n

    def release(self) -> None:
        """Drop the K/V tensors (a stopped runtime's): the slot counts stay readable, nothing can be stored."""
        self.k.clear()
        self.v.clear()

    def reset(self) -> None:
        with self._lock:
            self._free = self._all_slots()
            self._n_free = self.capacity

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.k + self.v)

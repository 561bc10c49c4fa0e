"""Recycled memory for the large outputs of the cpu kernels.

PyTorch's CPU allocator returns every large tensor to the OS when it dies, so the next result of the same
size is written into fresh pages: one page fault per 4 KiB (or a zeroed 2 MiB huge page), which costs
more than the kernel itself for a dequantized weight (about 1.3 ms of the 2 ms of a 4096 x 4096 bf16
``dequantize_4bit`` here). Large outputs are therefore placed in blocks kept by this pool: a block goes
back to the pool only when its storage dies (every tensor and view of it is gone: the tensor holds the
buffer through ``torch.frombuffer``), and the next output of that size reuses it without a fault.

The pool keeps at most ``BNB_API_CPU_POOL_MB`` MiB of idle blocks (default 1024; 0 turns it off) and
only outputs of at least :data:`POOL_MIN_BYTES`; :func:`empty_cache` returns the idle blocks to the OS.
The tensors are ordinary CPU tensors, except that their storage cannot be resized.
"""

from __future__ import annotations

import math
import os
import threading

import torch

POOL_MIN_BYTES = 8 << 20
"""Outputs smaller than this come from ``torch.empty`` (malloc reuses small blocks itself)."""
POOL_ENV = "BNB_API_CPU_POOL_MB"


def _limit_bytes() -> int:
    raw = os.environ.get(POOL_ENV, "1024")
    try:
        return max(0, int(float(raw) * (1 << 20)))
    except ValueError:
        return 1 << 30


class OutputPool:
    """Idle blocks by exact size; ``ffi`` / ``lib`` are the quant family's (bnbq_pool_alloc / _free)."""

    def __init__(self, ffi, lib) -> None:
        self._ffi, self._lib = ffi, lib
        self._lock = threading.Lock()
        self._idle: dict[int, list] = {}
        self._idle_bytes = 0
        self.limit = _limit_bytes()
        self.hits = self.misses = 0

    def empty(self, shape, dtype: torch.dtype) -> torch.Tensor:
        """An uninitialized contiguous tensor of ``shape`` and ``dtype`` (pooled when large enough)."""
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes < POOL_MIN_BYTES or self.limit == 0:
            return torch.empty(shape, dtype=dtype)
        shape = tuple(int(s) for s in shape)
        raw = None
        with self._lock:
            blocks = self._idle.get(nbytes)
            if blocks:
                raw = blocks.pop()
                self._idle_bytes -= nbytes
                self.hits += 1
            else:
                self.misses += 1
        if raw is None:
            raw = self._lib.bnbq_pool_alloc(nbytes)
            if raw == self._ffi.NULL:
                return torch.empty(shape, dtype=dtype)
        owner = self._ffi.gc(raw, lambda p, n=nbytes: self._give_back(p, n))
        flat = torch.frombuffer(self._ffi.buffer(owner, nbytes), dtype=torch.uint8)
        return flat.view(dtype).view(shape)

    def _give_back(self, raw, nbytes: int) -> None:
        with self._lock:
            if self._idle_bytes + nbytes <= self.limit:
                self._idle.setdefault(nbytes, []).append(raw)
                self._idle_bytes += nbytes
                return
        self._lib.bnbq_pool_free(raw)

    def empty_cache(self) -> int:
        """Free every idle block; returns the bytes given back to the OS."""
        with self._lock:
            blocks = [(raw, n) for n, lst in self._idle.items() for raw in lst]
            self._idle.clear()
            self._idle_bytes = 0
        for raw, _ in blocks:
            self._lib.bnbq_pool_free(raw)
        return sum(n for _, n in blocks)

    def stats(self) -> dict:
        """Idle bytes, limit, hits and misses (for ``python -m bnb_api info`` and tests)."""
        with self._lock:
            return {"idle_bytes": self._idle_bytes, "limit_bytes": self.limit, "hits": self.hits,
                    "misses": self.misses}  # fmt: skip

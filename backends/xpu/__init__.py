"""xpu backend (Intel GPUs, torch device type ``"xpu"``): vectorized PyTorch adapted to XPU limits.

What differs from the reference, and only that, is registered (kind ``"vectorized"``, priority 50):

* Intel GPU drivers refuse single allocations above 4 GiB unless a program opts in, while the
  reference builds float32 temporaries as large as the whole tensor. The quantize / dequantize /
  gemv_4bit / optimizer kernels of :mod:`.chunked` bound every temporary (block-aligned chunks of
  ``MAX_ELEMENTS`` values, 1 GiB of float32) with the reference's results.
* Consumer Arc GPUs have no float64: nothing here (nor in the reference) computes in float64.

Everything else (int8 ops) is served by the reference, which runs on XPU unchanged.
"""

from __future__ import annotations

import torch

from bnb_api.core import registry

from .chunked import DEFAULT_MAX_ELEMENTS, make_kernels

NAME = "xpu"
PRIORITY = 50
MAX_ELEMENTS = DEFAULT_MAX_ELEMENTS
KERNELS = make_kernels(MAX_ELEMENTS)


def probe() -> str | None:
    """None when an XPU device is usable, else why not."""
    xpu = getattr(torch, "xpu", None)
    if xpu is None or not hasattr(xpu, "is_available"):
        return f"torch {torch.__version__} has no XPU support (torch.xpu missing)"
    if not xpu.is_available():
        return "no XPU device visible (torch.xpu.is_available() is False)"
    return None


def register() -> None:
    """Declare the xpu backend and its chunked kernels for device type "xpu"."""
    registry.register_backend(NAME, ("xpu",), probe=probe, description="vectorized PyTorch, bounded temporaries")
    for op, fn in KERNELS.items():
        registry.register_kernel(op, NAME, "xpu", fn, priority=PRIORITY, kind="vectorized")

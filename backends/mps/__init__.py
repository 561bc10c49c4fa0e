"""mps backend (Apple GPUs, torch device type ``"mps"``): vectorized PyTorch adapted to Metal's limits.

What differs from the reference, and only that, is registered (kind ``"vectorized"``, priority 50):

* Metal arrays hold at most 2^32 bytes, while the reference builds float32 temporaries as large as the
  whole tensor: the quantize / dequantize / gemv_4bit / optimizer kernels of
  :mod:`bnb_api.backends.xpu.chunked` (shared with the xpu backend) work in block-aligned chunks of
  ``MAX_ELEMENTS`` values (1 GiB of float32) with the reference's results.
* MPS has no float64 and only partial bfloat16: these kernels (like the reference) compute in float32,
  touch bfloat16 only to convert inputs and outputs, and never create a float64 tensor (tested).

Everything else (int8 ops) is served by the reference, which runs on MPS unchanged.
"""

from __future__ import annotations

import torch

from bnb_api.backends.xpu.chunked import DEFAULT_MAX_ELEMENTS, make_kernels
from bnb_api.core import registry

NAME = "mps"
PRIORITY = 50
MAX_ELEMENTS = DEFAULT_MAX_ELEMENTS
KERNELS = make_kernels(MAX_ELEMENTS)


def probe() -> str | None:
    """None when an MPS device is usable, else why not."""
    if not torch.backends.mps.is_built():
        return f"torch {torch.__version__} was built without MPS (Apple Metal) support"
    if not torch.backends.mps.is_available():
        return "no MPS device available (needs Apple silicon and macOS 12.3+)"
    return None


def register() -> None:
    """Declare the mps backend and its chunked kernels for device type "mps"."""
    description = "vectorized PyTorch, no float64, bounded temporaries"
    registry.register_backend(NAME, ("mps",), probe=probe, description=description)
    for op, fn in KERNELS.items():
        registry.register_kernel(op, NAME, "mps", fn, priority=PRIORITY, kind="vectorized")

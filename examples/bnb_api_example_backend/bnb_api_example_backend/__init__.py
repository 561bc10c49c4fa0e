"""An out-of-tree bnb_api backend, registered through the ``bnb_api.backends`` entry point.

``example_cpu``: vectorized-PyTorch 4-bit kernels for the cpu device that beat the reference by using
a 256-entry byte -> (high, low) value table instead of unpacking nibbles one by one.

``example_wrong``: the same kernels, except that its ``quantize_4bit`` breaks ties upwards (a value
exactly between two codes takes the higher code; the contract says the lower). Nothing but exact
ties shows the difference, which is what the conformance suite's "ties" examples are for::

    python -m bnb_api.conformance --backend example_cpu --device cpu     # PASS
    python -m bnb_api.conformance --backend example_wrong --device cpu   # FAIL: quantize_4bit[...]
"""

from __future__ import annotations

import bnb_api
from bnb_api_example_backend import kernels

KERNELS = {
    "quantize_4bit": kernels.quantize_4bit,
    "dequantize_4bit": kernels.dequantize_4bit,
    "gemv_4bit": kernels.gemv_4bit,
    "dequantize_blockwise": kernels.dequantize_blockwise,
}


def _register(name: str, description: str, overrides: dict) -> None:
    bnb_api.register_backend(name, ("cpu",), description=description)
    for op, fn in {**KERNELS, **overrides}.items():
        bnb_api.register_kernel(op, name, "cpu", fn, priority=10, kind="vectorized", supports=kernels.SUPPORTS.get(op))


def register() -> None:
    """Entry point ``example_cpu``: the correct backend."""
    _register("example_cpu", "example plugin: vectorized 4-bit cpu kernels (byte tables)", {})


def register_wrong() -> None:
    """Entry point ``example_wrong``: the same backend with a tie-breaking bug in quantize_4bit."""
    _register(
        "example_wrong", "example plugin: deliberately wrong quantize_4bit (ties round up)",
        {"quantize_4bit": kernels.quantize_4bit_ties_up},
    )  # fmt: skip

"""The reference backend: vectorized PyTorch for every op on every device type, registered last.

It is the ground truth of the conformance suite and the fallback of dispatch. ``composite`` adds the
default decomposition of ``int8_mm_outlier`` into the dispatched primitives, so that each primitive
runs on the best backend of the device while a backend without a fused kernel needs nothing more.
"""

from __future__ import annotations

from bnb_api.core import registry
from bnb_api.core.reference import blockwise, fourbit, int8, optim

KERNELS = {
    "quantize_blockwise": blockwise.quantize_blockwise,
    "dequantize_blockwise": blockwise.dequantize_blockwise,
    "quantize_4bit": fourbit.quantize_4bit,
    "dequantize_4bit": fourbit.dequantize_4bit,
    "gemv_4bit": fourbit.gemv_4bit,
    "int8_vectorwise_quant": int8.int8_vectorwise_quant,
    "int8_linear_matmul": int8.int8_linear_matmul,
    "int8_mm_dequant": int8.int8_mm_dequant,
    "int8_mm_outlier": int8.int8_mm_outlier,
    "optimizer_step": optim.optimizer_step,
    "optimizer_step_multi": optim.optimizer_step_multi,
}

REFERENCE_PRIORITY = -1000
COMPOSITE_PRIORITY = -500


def register() -> None:
    """Register the reference kernels (device type ``*``) and the composite int8_mm_outlier."""
    registry.register_backend(registry.REFERENCE, (registry.ANY_DEVICE,), description="vectorized PyTorch ground truth")
    for op, fn in KERNELS.items():
        registry.register_kernel(
            op, registry.REFERENCE, registry.ANY_DEVICE, fn, priority=REFERENCE_PRIORITY, kind="reference"
        )
    registry.register_backend(
        registry.COMPOSITE, (registry.ANY_DEVICE,), description="default decompositions into dispatched primitives"
    )
    registry.register_kernel(
        "int8_mm_outlier", registry.COMPOSITE, registry.ANY_DEVICE, int8.int8_mm_outlier_composite,
        priority=COMPOSITE_PRIORITY, kind="vectorized",
    )  # fmt: skip


register()

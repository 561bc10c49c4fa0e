"""gaudi backend (Intel Gaudi, torch device type ``"hpu"``): vectorized PyTorch with static shapes.

Gaudi runs compiled graphs of fixed shapes, so data-dependent shapes are what differs from the
reference: ``int8_vectorwise_quant`` and ``int8_mm_outlier`` keep outlier columns as a fixed-size
mask (:mod:`.static_shapes`). Registered with kind ``"vectorized"``, priority 50; every other op is
served by the reference, whose shapes are already static. The device appears in torch once the
SynapseAI bridge (``habana_frameworks.torch``) is imported.
"""

from __future__ import annotations

import importlib.util

import torch

from bnb_api.core import registry

from . import static_shapes

NAME = "gaudi"
PRIORITY = 50
KERNELS = {
    "int8_vectorwise_quant": static_shapes.int8_vectorwise_quant,
    "int8_mm_outlier": static_shapes.int8_mm_outlier,
}


def probe() -> str | None:
    """None when an HPU device is usable, else why not (the bridge is imported only if installed)."""
    if not hasattr(torch, "hpu"):
        if importlib.util.find_spec("habana_frameworks") is None:
            return "habana_frameworks (the Intel Gaudi PyTorch bridge) is not installed"
        import habana_frameworks.torch  # noqa: F401  (registers torch.hpu)
    hpu = getattr(torch, "hpu", None)
    if hpu is None or not hpu.is_available():
        return "no HPU device visible (torch.hpu.is_available() is False)"
    return None


def register() -> None:
    """Declare the gaudi backend and its static-shape kernels for device type "hpu"."""
    registry.register_backend(NAME, ("hpu",), probe=probe, description="vectorized PyTorch, static shapes")
    for op, fn in KERNELS.items():
        registry.register_kernel(op, NAME, "hpu", fn, priority=PRIORITY, kind="vectorized")

"""rocm backend: the CUDA kernels of ``backends/cuda`` built by hipcc (``build.py``, ``hip_compat.h``).

ROCm builds of torch report AMD GPUs as device type ``"cuda"``, so this backend registers for
``"cuda"`` (priority 100, kind ``"native"``) only when ``torch.version.hip`` is set; the cuda backend
then registers no kernels. ``libbnb_api_rocm.so`` shares the C ABI header and the Python wrappers of
the cuda backend and is opened at first use.
"""

from __future__ import annotations

import os

import torch

from bnb_api.backends.cuda.library import NativeLibrary
from bnb_api.core import registry

NAME = "rocm"
PRIORITY = 100
HERE = os.path.dirname(os.path.abspath(__file__))

LIBRARY = NativeLibrary(
    filename="libbnb_api_rocm.so",
    env_var="BNB_API_ROCM_LIB",
    search_dir=HERE,
    platform="HIP",
    build_hint="build it with `python backends/rocm/build.py --out <package dir>` (needs hipcc)",
)


def probe() -> str | None:
    """None when the HIP kernels can run here, else the reason they cannot."""
    if not getattr(torch.version, "hip", None):
        return f"torch {torch.__version__} is not a ROCm build (torch.version.hip is None)"
    if not torch.cuda.is_available():
        return "no ROCm device visible (torch.cuda.is_available() is False)"
    return LIBRARY.load_error()


def register() -> None:
    """Declare the rocm backend; register its kernels for device type "cuda" only under ROCm torch."""
    registry.register_backend(NAME, ("cuda",), probe=probe, description="CUDA sources built by hipcc (cffi ABI mode)")
    if not getattr(torch.version, "hip", None):
        return
    from bnb_api.backends.cuda.kernels import GpuKernels

    GpuKernels(LIBRARY).register(NAME, "cuda", PRIORITY)

"""cuda backend: native CUDA C kernels (``*.cu``) in ``libbnb_api_cuda.so``, loaded through cffi.

The library has a plain C ABI (``bnb_api_cuda.h``: raw device pointers plus the ``cudaStream_t`` of
torch's current stream) and is built by ``build.py`` with nvcc (``setup.py`` runs it when nvcc is
present). It is opened at first use; :func:`probe` says why the backend is inactive: torch built
without CUDA, torch a ROCm build (the rocm backend serves), no device, library not built or not
loadable. Kernels register for device type ``"cuda"`` at priority 100, kind ``"native"``.
"""

from __future__ import annotations

import os

import torch

from bnb_api.core import registry

from .library import BnbCudaError, NativeLibrary

NAME = "cuda"
PRIORITY = 100
HERE = os.path.dirname(os.path.abspath(__file__))

LIBRARY = NativeLibrary(
    filename="libbnb_api_cuda.so",
    env_var="BNB_API_CUDA_LIB",
    search_dir=HERE,
    platform="CUDA",
    build_hint="build it with `python backends/cuda/build.py --out <package dir>` or reinstall with nvcc on PATH "
    "(BNB_API_BUILD_CUDA=1)",
)

__all__ = ["LIBRARY", "NAME", "PRIORITY", "BnbCudaError", "probe", "register"]


def probe() -> str | None:
    """None when the CUDA kernels can run here, else the reason they cannot (checked in that order)."""
    if getattr(torch.version, "hip", None):
        return f"torch is a ROCm build (torch.version.hip={torch.version.hip}); the rocm backend serves 'cuda' devices"
    if not getattr(torch.version, "cuda", None):
        return f"torch {torch.__version__} was built without CUDA"
    if not torch.cuda.is_available():
        return "no CUDA device visible (torch.cuda.is_available() is False)"
    return LIBRARY.load_error()


def register() -> None:
    """Declare the cuda backend; register its kernels unless torch is a ROCm build (no library is opened)."""
    registry.register_backend(NAME, ("cuda",), probe=probe, description="CUDA C kernels (nvcc, cffi ABI mode)")
    if getattr(torch.version, "hip", None):
        return  # ROCm torch also calls its devices "cuda": those calls belong to the rocm backend
    from .kernels import GpuKernels

    GpuKernels(LIBRARY).register(NAME, "cuda", PRIORITY)

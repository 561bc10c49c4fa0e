"""cpu backend: native C kernels (SIMD + OpenMP) compiled through cffi at install time.

Kernel families live in their own modules, each with its cffi build script, C sources and Python
wrappers: ``kernels_quant`` (blockwise / 4-bit / gemv / int8) and ``kernels_optim`` (fused optimizer
steps). Each exposes ``register_kernels(backend: str)`` and ``load_error() -> str | None``; its native
library is imported lazily at the first call. Registration never loads native code.
"""

from __future__ import annotations

import importlib

from bnb_api.core import ops, registry

NAME = "cpu"
PRIORITY = 100
FAMILIES = ("kernels_quant", "kernels_optim")


def _families() -> list:
    out = []
    for name in FAMILIES:
        try:
            out.append(importlib.import_module(f"{__name__}.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
    return out


def _probe() -> str | None:
    """None when some native kernel family loads, else why none does (lazy: runs at first dispatch).

    A family whose library fails alone is reported by its kernels' ``supports`` (see ``_guard``)."""
    families = _families()
    errors = [err for fam in families if (err := fam.load_error())]
    return "; ".join(errors) if families and len(errors) == len(families) else None


def _guard(family) -> None:
    """Make every kernel of ``family`` decline calls (with the load error) when its library is missing."""
    for op in ops.OP_NAMES:
        for kernel in registry.kernels(op, "cpu"):
            if kernel.backend != NAME or kernel.fn.__module__ != family.__name__:
                continue
            inner = kernel.supports

            def supports(*args, _inner=inner, **call):
                err = family.load_error()
                if err:
                    return f"native library not loaded: {err}"
                return True if _inner is None else _inner(*args, **call)

            registry.register_kernel(op, NAME, "cpu", kernel.fn, priority=kernel.priority, kind=kernel.kind,
                                     supports=supports, bind=kernel.bind)  # fmt: skip


def empty_cache() -> int:
    """Return the idle blocks of the cpu kernels' output pool to the OS (like ``torch.cuda.empty_cache``);
    the number of bytes freed. See ``output_pool.py``."""
    from bnb_api.backends.cpu import kernels_quant

    return kernels_quant.empty_cache()


def register() -> None:
    """Declare the cpu backend and its kernels (native libraries load at first use)."""
    registry.register_backend(NAME, ("cpu",), probe=_probe, description="C kernels: AVX-512 / AVX2 / portable, OpenMP")
    for fam in _families():
        fam.register_kernels(NAME)
        _guard(fam)

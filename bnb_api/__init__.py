"""bnb_api: k-bit quantization kernels for PyTorch on any backend (bitsandbytes-compatible formats).

``import bnb_api as bnb`` gives the bitsandbytes-shaped API: ``bnb.functional``, ``bnb.nn``,
``bnb.optim``, ``bnb.matmul``, ``bnb.matmul_4bit``. The op contract lives in ``bnb_api.core`` and
kernels in ``bnb_api.backends``; ``python -m bnb_api info`` prints which kernel serves each op.
"""

from __future__ import annotations


def _extend_path_in_source_checkout(path: list[str]) -> None:
    """Make ``bnb_api.core`` / ``.backends`` / ``.conformance`` importable when this ``__init__`` is the
    repository's (``python`` started in the repo root, or an editable install): prefer the installed copy
    (which holds the built native libraries), else the repository's top-level folders."""
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.isdir(os.path.join(here, "core")):
        return  # an installed copy: everything is inside
    import sys

    installed = ""
    for entry in sys.path:  # an installed copy elsewhere on the path (site-packages), if any
        candidate = os.path.join(os.path.abspath(entry or "."), "bnb_api")
        if candidate != here and os.path.isfile(os.path.join(candidate, "core", "__init__.py")):
            installed = candidate
            break
    if installed:
        path.append(installed)
    else:
        path.append(os.path.dirname(here))


_extend_path_in_source_checkout(__path__)

from bnb_api import backends as _backends
from bnb_api.core import reference as _reference  # noqa: F401  (registers the fallback kernels)
from bnb_api.core import registry  # noqa: F401  (bnb_api.registry)
from bnb_api.core.errors import BnbError, BnbTypeError, BnbUnavailableError, BnbValueError
from bnb_api.core.registry import (
    INTERFACE_VERSION,
    exclude_backends,
    explain,
    register_backend,
    register_kernel,
    use_backend,
)

__version__ = "0.1.0"

_backends.load_builtin()
_backends.load_plugins()

from bnb_api import functional  # noqa: E402

features = {"multi_backend"}
"""What integrations probe for (Transformers and diffusers read bitsandbytes' ``features`` the same way)."""

_LAZY = {  # heavier user-facing modules, imported at first access
    "nn": ("bnb_api.nn", None),
    "optim": ("bnb_api.optim", None),
    "autograd": ("bnb_api.autograd", None),
    "matmul": ("bnb_api.autograd", "matmul"),
    "matmul_4bit": ("bnb_api.autograd", "matmul_4bit"),
    "MatmulLtState": ("bnb_api.autograd", "MatmulLtState"),
    "install_as_bitsandbytes": ("bnb_api.as_bitsandbytes", "install_as_bitsandbytes"),
}


def _supported_torch_devices() -> set[str]:
    """Device types some registered backend serves, asked anew on each access (``bnb_api.supported_torch_devices``,
    bitsandbytes' name): plugins registered later count."""
    return {dt for b in registry.backends().values() for dt in b.device_types if dt != registry.ANY_DEVICE}


def __getattr__(name: str):
    if name == "supported_torch_devices":
        return _supported_torch_devices()
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bnb_api' has no attribute {name!r}")


__all__ = [
    "BnbError",
    "BnbTypeError",
    "BnbUnavailableError",
    "BnbValueError",
    "INTERFACE_VERSION",
    "exclude_backends",
    "explain",
    "features",
    "functional",
    "install_as_bitsandbytes",
    "matmul",
    "matmul_4bit",
    "MatmulLtState",
    "nn",
    "optim",
    "register_backend",
    "register_kernel",
    "supported_torch_devices",
    "use_backend",
]

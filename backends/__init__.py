"""Backends: one package per device family, plus out-of-tree plugins found through entry points.

Each built-in backend package exposes ``register()``, which declares the backend (with a lazy
availability probe) and its kernels; importing it loads no native library. Out-of-tree backends are
found through the entry-point group ``bnb_api.backends``: each entry point names a callable taking no
argument that calls :func:`bnb_api.register_backend` / :func:`bnb_api.register_kernel` (or a module that
does so on import). A plugin that fails to load is skipped with a warning naming it.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import entry_points

BUILTIN = ("cpu", "cuda", "rocm", "xpu", "gaudi", "mps")
ENTRY_POINT_GROUP = "bnb_api.backends"

load_errors: dict[str, str] = {}
"""Backends or plugins that failed to load, with the reason (shown by ``python -m bnb_api info``)."""


def load_builtin() -> None:
    """Import and register every built-in backend package that exists in this install."""
    for name in BUILTIN:
        try:
            module = importlib.import_module(f"bnb_api.backends.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bnb_api.backends.{name}":
                continue
            _failed(name, exc)
            continue
        except Exception as exc:
            _failed(name, exc)
            continue
        try:
            module.register()
        except Exception as exc:
            _failed(name, exc)


def load_plugins() -> None:
    """Load out-of-tree backends registered under the ``bnb_api.backends`` entry-point group."""
    try:
        found = entry_points(group=ENTRY_POINT_GROUP)
    except Exception as exc:  # broken metadata must not break import bnb_api
        _failed("entry points", exc)
        return
    for ep in found:
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except Exception as exc:
            _failed(f"plugin {ep.name} ({ep.value})", exc)


def _failed(what: str, exc: BaseException) -> None:
    load_errors[what] = f"{type(exc).__name__}: {exc}"
    warnings.warn(f"bnb_api: backend {what} failed to load and is skipped: {exc}", stacklevel=3)

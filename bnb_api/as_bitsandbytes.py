"""``import bitsandbytes`` served by bnb_api: Hugging Face Transformers, PEFT and Accelerate unchanged.

Transformers' ``BitsAndBytesConfig`` (``from_pretrained(..., quantization_config=...)``, 4-bit NF4/FP4 with or
without double quantization, LLM.int8()), its ``save_pretrained`` of quantized models and PEFT's QLoRA layers
all ``import bitsandbytes`` and use the bitsandbytes 0.50 API, which bnb_api implements with the same formats.
:func:`install_as_bitsandbytes` makes that import give bnb_api in this process::

    import bnb_api
    bnb_api.install_as_bitsandbytes()      # before transformers / peft are imported
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=BitsAndBytesConfig(load_in_4bit=True))

or, for a script left as it is: ``python -m bnb_api as-bitsandbytes train.py [args]``.

What it does: ``sys.modules`` entries ``bitsandbytes`` (a module forwarding every attribute to ``bnb_api``,
with ``__version__`` = :data:`BITSANDBYTES_API_VERSION`, the bitsandbytes release whose API and formats
bnb_api follows) and ``bitsandbytes.nn`` / ``.functional`` / ``.optim`` / ``.autograd`` (bnb_api's own
modules), and, only where no bitsandbytes distribution is installed, package metadata of that name and version
(what Transformers and Accelerate read to decide that bitsandbytes is present). Nothing is written to disk, and
checkpoints keep bitsandbytes' keys and ``quant_method``: they load with bitsandbytes itself.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.metadata
import pathlib
import sys
import types
from typing import Any

import bnb_api
from bnb_api.core.errors import BnbUnavailableError

__all__ = ["BITSANDBYTES_API_VERSION", "install_as_bitsandbytes", "is_installed", "uninstall_as_bitsandbytes"]

BITSANDBYTES_API_VERSION = "0.50.2"
"""The bitsandbytes release whose API and formats bnb_api follows: the version the alias reports."""

_NAME = "bitsandbytes"
_SUBMODULES = {  # bitsandbytes submodule -> the bnb_api module that serves it
    "nn": "bnb_api.nn",
    "nn.modules": "bnb_api.nn.modules",
    "functional": "bnb_api.functional",
    "optim": "bnb_api.optim",
    "autograd": "bnb_api.autograd",
    "autograd._functions": "bnb_api.autograd._functions",
}


class _Alias(types.ModuleType):
    """The ``bitsandbytes`` module of the alias: every attribute is bnb_api's (lazy ones load on first use)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(bnb_api, name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(dir(bnb_api)))


class _AliasDistribution(importlib.metadata.Distribution):
    """Metadata of a ``bitsandbytes`` distribution provided by bnb_api (name, version, summary only)."""

    def read_text(self, filename: str) -> str | None:
        if filename in ("METADATA", "PKG-INFO"):
            return (f"Metadata-Version: 2.1\nName: {_NAME}\nVersion: {BITSANDBYTES_API_VERSION}\n"
                    f"Summary: the bitsandbytes API provided by bnb_api {bnb_api.__version__}\n")  # fmt: skip
        return None

    def locate_file(self, path: str | pathlib.PurePath) -> pathlib.Path:
        return pathlib.Path(bnb_api.__file__).parent / path


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds no modules (the alias's are in ``sys.modules``), only the ``bitsandbytes`` metadata."""

    def find_spec(self, fullname, path, target=None):  # noqa: ARG002 - the finder protocol's signature
        return None

    def find_distributions(self, context=None):
        name = getattr(context, "name", None)
        if name is None or name.lower().replace("-", "_") == _NAME:
            return iter([_AliasDistribution()])
        return iter([])


def _installed_distribution() -> bool:
    """True when a real bitsandbytes distribution is installed (its metadata is found without the alias)."""
    try:
        importlib.metadata.distribution(_NAME)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def is_installed() -> bool:
    """True when ``import bitsandbytes`` gives bnb_api in this process (:func:`install_as_bitsandbytes`)."""
    return isinstance(sys.modules.get(_NAME), _Alias)


def install_as_bitsandbytes() -> types.ModuleType:
    """Make ``import bitsandbytes`` (and ``bitsandbytes.nn`` / ``.functional`` / ``.optim`` / ``.autograd``) give
    bnb_api in this process; returns the ``bitsandbytes`` module. Idempotent.

    Call it before Transformers, PEFT or Accelerate import bitsandbytes (PEFT does when imported; Transformers
    when a model is loaded with a ``BitsAndBytesConfig``). Raises :class:`BnbUnavailableError` when the real
    bitsandbytes is already imported in this process: objects bound to it cannot be redirected."""
    current = sys.modules.get(_NAME)
    if isinstance(current, _Alias):
        return current
    if current is not None:
        raise BnbUnavailableError(
            f"install_as_bitsandbytes: bitsandbytes is already imported in this process (from "
            f"{getattr(current, '__file__', '?')}); call it before anything imports bitsandbytes (peft imports it "
            "at import time, transformers when loading with a BitsAndBytesConfig)"
        )
    alias = _Alias(_NAME, "bitsandbytes API served by bnb_api (see bnb_api.as_bitsandbytes)")
    alias.__version__ = BITSANDBYTES_API_VERSION
    alias.__spec__ = importlib.machinery.ModuleSpec(_NAME, None, is_package=True)
    alias.__path__ = []  # a package: ``import bitsandbytes.nn`` looks in sys.modules, then finds nothing else
    modules = {_NAME: alias}
    for sub, target in _SUBMODULES.items():
        modules[f"{_NAME}.{sub}"] = importlib.import_module(target)
    sys.modules.update(modules)
    if not _installed_distribution():
        sys.meta_path.append(_AliasFinder())
    return alias


def uninstall_as_bitsandbytes() -> None:
    """Undo :func:`install_as_bitsandbytes` (modules already holding the alias keep it)."""
    if not is_installed():
        return
    for key in [k for k in sys.modules if k == _NAME or k.startswith(_NAME + ".")]:
        del sys.modules[key]
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AliasFinder)]

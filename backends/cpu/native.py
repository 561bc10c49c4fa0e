"""Lazy loading and instruction-set control of one cffi kernel family (shared by kernels_quant/optim).

The family's C library exports ``<prefix>_isa_active()``, ``<prefix>_isa_detected()``,
``<prefix>_set_isa(level)`` and constants ``<PREFIX>_ISA_<NAME>``; ``BNB_API_CPU_ISA`` caps every family at
load (a level a family does not know, e.g. 'avx512vbmi' for one without it, caps at its best level below).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
from collections.abc import Callable, Iterator

from bnb_api.core.errors import BnbUnavailableError, BnbValueError

ISA_ENV = "BNB_API_CPU_ISA"
ISA_ORDER = ("generic", "avx2", "avx512", "avx512vbmi")


class NativeFamily:
    """One native kernel family: ``module`` (a sibling cffi module), ``prefix`` of its C functions (the
    constants use it upper-cased), the
    ISA levels it knows, and an optional ``validate(lib)`` that raises BnbValueError on a mismatch."""

    def __init__(self, what: str, module: str, build_script: str, prefix: str, isa_names: tuple[str, ...],
                 validate: Callable | None = None) -> None:  # fmt: skip
        self.what, self.module, self.build_script = what, module, build_script
        self.prefix, self.isa_names, self.validate = prefix, isa_names, validate
        self._lock = threading.Lock()
        self._state: dict = {}

    def load(self):
        """(ffi, lib) of the native module, or raises BnbUnavailableError with the reason (cached)."""
        if "lib" not in self._state:
            with self._lock:
                if "lib" not in self._state and "error" not in self._state:
                    self._load_locked()
        if "error" in self._state:
            raise BnbUnavailableError(f"cpu {self.what} kernels: {self._state['error']}")
        return self._state["ffi"], self._state["lib"]

    def _load_locked(self) -> None:
        try:
            mod = importlib.import_module(f"bnb_api.backends.cpu.{self.module}")
            if self.validate is not None:
                self.validate(mod.lib)
            self._state["ffi"], self._state["lib"] = mod.ffi, mod.lib
            forced = os.environ.get(ISA_ENV)
            if forced:
                self._set_isa_locked(forced)
        except BnbValueError as exc:
            self._state.pop("lib", None)
            self._state["error"] = str(exc)
        except ImportError as exc:
            self._state["error"] = (
                f"native {self.what} library not built ({exc}); run `python backends/cpu/{self.build_script}` "
                "or reinstall with a C compiler"
            )

    def load_error(self) -> str | None:
        """None when the native library loads, else one line saying why not."""
        try:
            self.load()
        except BnbUnavailableError as exc:
            return str(exc)
        return None

    def _cap(self, name: str) -> str:
        if name in self.isa_names:
            return name
        if name in ISA_ORDER:  # a level of another family: the best one of ours not above it
            return [n for n in ISA_ORDER[: ISA_ORDER.index(name) + 1] if n in self.isa_names][-1]
        raise BnbValueError(f"{ISA_ENV}/set_isa: isa={name!r} is not known; expected one of {ISA_ORDER}")

    def _fn(self, name: str):
        return getattr(self._state["lib"], f"{self.prefix}_{name}")

    def _level(self, isa: str) -> int:
        return getattr(self._state["lib"], f"{self.prefix.upper()}_ISA_{isa.upper()}")

    def isa_name(self, level: int) -> str:
        """The name of an ISA level of this family."""
        return next(n for n in self.isa_names if self._level(n) == level)

    def _set_isa_locked(self, name: str) -> str:
        return self.isa_name(self._fn("set_isa")(self._level(self._cap(name))))

    def set_isa(self, name: str) -> str:
        """Cap the instruction set at ``name``; returns the one now active."""
        self.load()
        return self._set_isa_locked(name)

    def isa(self) -> str:
        """The instruction set the kernels use now."""
        self.load()
        return self.isa_name(self._fn("isa_active")())

    def isa_detected(self) -> str:
        """The best instruction set this CPU runs (what :meth:`isa` is without a cap)."""
        self.load()
        return self.isa_name(self._fn("isa_detected")())

    @contextlib.contextmanager
    def forced_isa(self, name: str) -> Iterator[str]:
        """Within the block the kernels use at most ``name`` (e.g. 'generic', the portable oracle)."""
        previous = self.isa()
        try:
            yield self.set_isa(name)
        finally:
            self.set_isa(previous)

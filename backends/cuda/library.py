"""Lazy loading of the plain-C GPU kernel library through cffi's ABI mode (``ffi.dlopen``).

``bnb_api_cuda.h`` is the single description of the ABI: the compiler reads it through the ``.cu``
sources and cffi reads it here, so the prototypes and constants (dtype codes, optimizer ids, table
layout) are never retyped in Python. The same header serves the ROCm build (``libbnb_api_rocm.so``).
Nothing is opened at import: :meth:`NativeLibrary.load_error` / :attr:`NativeLibrary.lib` open the
library at first use, once.
"""

from __future__ import annotations

import os
import threading

from bnb_api.core.errors import BnbError, BnbUnavailableError

HERE = os.path.dirname(os.path.abspath(__file__))
HEADER = os.path.join(HERE, "bnb_api_cuda.h")


class BnbCudaError(RuntimeError, BnbError):
    """A CUDA (or HIP) call of a native kernel failed; the message holds the runtime's error string."""


def cdef_source(path: str = HEADER) -> str:
    """The header's C declarations for ``ffi.cdef`` (it holds no preprocessor lines by design)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if any(line.lstrip().startswith("#") for line in text.splitlines()):
        raise BnbUnavailableError(f"{path} has preprocessor lines; cffi's cdef cannot read them")
    return text


class NativeLibrary:
    """One GPU kernel library: where it is, whether it loads, and its cffi handle.

    ``filename`` is looked up in ``search_dir`` unless the environment variable ``env_var`` names the
    library file. ``platform`` names the runtime in messages ("CUDA" or "HIP").
    """

    def __init__(self, filename: str, env_var: str, search_dir: str, platform: str, build_hint: str):
        self.filename = filename
        self.env_var = env_var
        self.search_dir = search_dir
        self.platform = platform
        self.build_hint = build_hint
        self._lock = threading.Lock()
        self._loaded: tuple[object, object] | None = None
        self._error: str | None = None

    def path(self) -> str:
        """The library file that would be opened."""
        return os.environ.get(self.env_var) or os.path.join(self.search_dir, self.filename)

    def load_error(self) -> str | None:
        """None when the library is (now) loaded, else why it cannot be: not built, dlopen error, ABI."""
        if self._loaded is None and self._error is None:
            with self._lock:
                if self._loaded is None and self._error is None:
                    self._error = self._load()
        return self._error

    def _load(self) -> str | None:
        path = self.path()
        if not os.path.exists(path):
            return f"{self.filename} not built (looked for {path}); {self.build_hint}"
        try:
            import cffi

            ffi = cffi.FFI()
            ffi.cdef(cdef_source())
            lib = ffi.dlopen(path)
        except Exception as exc:
            return f"dlopen of {path} failed: {type(exc).__name__}: {exc}"
        built, expected = lib.bnb_cuda_abi_version(), lib.BNB_CUDA_ABI_VERSION
        if built != expected:
            return f"{path} has ABI version {built}, but this bnb_api needs {expected}; rebuild it ({self.build_hint})"
        rc = lib.bnb_cuda_device_check()
        if rc:
            text = ffi.string(lib.bnb_cuda_error_string(rc)).decode(errors="replace")
            return (f"{path} cannot use a device: {self.platform} error {rc}: {text} (the driver must support the "
                    f"toolkit version that built the library)")
        self._loaded = (ffi, lib)
        return None

    @property
    def ffi(self):
        """The cffi ``FFI`` of the loaded library (loads it; raises BnbUnavailableError if it cannot)."""
        return self._handles()[0]

    @property
    def lib(self):
        """The loaded library (loads it; raises BnbUnavailableError if it cannot)."""
        return self._handles()[1]

    def _handles(self):
        if self._loaded is not None:  # every kernel call comes here: skip the lock once loaded
            return self._loaded
        error = self.load_error()
        if error is not None:
            raise BnbUnavailableError(f"{self.platform} kernels unavailable: {error}")
        return self._loaded

    def check(self, op: str, rc: int) -> None:
        """Raise BnbCudaError naming ``op`` and the runtime's error string when ``rc`` is not 0."""
        if rc:
            text = self.ffi.string(self.lib.bnb_cuda_error_string(rc)).decode(errors="replace")
            raise BnbCudaError(f"{op}: {self.platform} error {rc}: {text}")

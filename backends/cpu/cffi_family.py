"""How a cpu kernel family is built with cffi (API mode); shared by every ``build_<family>.py``.

A family is a module name, its C sources and one header whose text between ``/* cdef-begin */`` and
``/* cdef-end */`` is both the cffi cdef and what the compiler includes. ``setup.py`` calls
``ffibuilder.distutils_extension()`` for installs; ``python backends/cpu/build_<family>.py`` builds the
module in place next to the sources for development. Imports nothing but cffi and the standard library.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
from dataclasses import dataclass

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


def _rel(path: str) -> str:
    """``path`` relative to the working directory when possible (setuptools prefers relative sources)."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path


def compile_args() -> list[str]:
    """gcc/clang flags: optimized, OpenMP, IEEE float. -ffp-contract=off keeps every multiply and add
    rounded separately, as the reference's torch ops are (no fused multiply-add); no fast-math. -fwrapv, which
    CPython's own CFLAGS carry, is given here too, so that a CFLAGS in the environment (which replaces those) builds
    the same code: without it gcc 12 had dropped the gemv's scale prefetch loops (cold 11008 x 4096 gemv 0.52 ->
    0.60 ms; quant_gemv.h now writes them so that no flag matters)."""
    args = ["-O3", "-std=gnu11", "-fopenmp", "-fwrapv", "-ffp-contract=off", "-fno-math-errno", "-Wall",
            "-Wno-unused-function"]
    if platform.machine().lower() in ("aarch64", "arm64"):
        args.append("-march=armv8-a")
    return args


@dataclass(frozen=True)
class Family:
    """One native kernel family: ``module`` (dotted name), ``header``, ``sources`` and extra ``depends``."""

    module: str
    header: str
    sources: tuple[str, ...]
    depends: tuple[str, ...] = ()

    def cdef_text(self) -> str:
        """The part of the header between ``/* cdef-begin */`` and ``/* cdef-end */``."""
        with open(os.path.join(HERE, self.header), encoding="utf-8") as f:
            text = f.read()
        return text.split("/* cdef-begin */", 1)[1].split("/* cdef-end */", 1)[0]

    def builder(self, relative: bool = True, extra_args: tuple[str, ...] = ()) -> FFI:
        """The cffi builder; ``relative`` gives source paths relative to the working directory (setup.py),
        else absolute ones (``FFI.compile`` runs the compiler inside its temporary directory). ``extra_args``:
        more compiler flags (tests build the portable variant with ``-DBNB_API_PORTABLE``: no x86 code at all,
        as on aarch64)."""
        path = _rel if relative else os.path.abspath
        ffi = FFI()
        ffi.cdef(self.cdef_text())
        ffi.set_source(
            self.module,
            f'#include "{self.header}"',
            sources=[path(os.path.join(HERE, s)) for s in self.sources],
            include_dirs=[path(HERE)],
            depends=[path(os.path.join(HERE, h)) for h in (self.header, *self.depends)],
            extra_compile_args=[*compile_args(), *extra_args],
            extra_link_args=["-fopenmp"],
        )
        return ffi

    def build_to(self, tmpdir: str, extra_args: tuple[str, ...] = (), verbose: bool = False) -> str:
        """Compile the module inside ``tmpdir`` (with ``extra_args``); returns the path of the shared object."""
        return self.builder(relative=False, extra_args=extra_args).compile(tmpdir=tmpdir, verbose=verbose)

    def build_inplace(self, verbose: bool = False) -> str:
        """Compile the module and copy it next to the sources; returns the path of the shared object."""
        tmp = tempfile.mkdtemp(prefix="bnb_api_cffi_")
        try:
            built = self.builder(relative=False).compile(tmpdir=tmp, verbose=verbose)
            target = os.path.join(HERE, os.path.basename(built))
            shutil.copyfile(built, target + ".tmp")
            os.replace(target + ".tmp", target)
            return target
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

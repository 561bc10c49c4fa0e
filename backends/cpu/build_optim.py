"""cffi (API mode) build of ``bnb_api.backends.cpu._optim_lib``: the fused optimizer kernels in optim*.c.

``setup.py`` calls ``ffibuilder.distutils_extension()`` for installs; ``python backends/cpu/build_optim.py``
builds the module in place next to this file for development. The prototypes and constants come from
``optim.h`` (between its cdef markers), the same file the compiler includes.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
import tempfile

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
MODULE = "bnb_api.backends.cpu._optim_lib"
SOURCES = ("optim_dispatch.c", "optim_generic.c", "optim_avx2.c", "optim_avx512.c")
HEADER = "optim.h"
DEPENDS = (HEADER, "optim_internal.h", "optim_kernel.h")


def _rel(path: str) -> str:
    """``path`` relative to the working directory when possible (setuptools prefers relative sources)."""
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return path


def cdef_text() -> str:
    """The part of optim.h between ``/* cdef-begin */`` and ``/* cdef-end */``."""
    with open(os.path.join(HERE, HEADER), encoding="utf-8") as f:
        text = f.read()
    return text.split("/* cdef-begin */", 1)[1].split("/* cdef-end */", 1)[0]


def compile_args() -> list[str]:
    """gcc/clang flags: optimized, OpenMP, IEEE float. -ffp-contract=off keeps every multiply and add
    rounded separately, as the reference's torch ops are (no fused multiply-add)."""
    args = ["-O3", "-std=gnu11", "-fopenmp", "-ffp-contract=off", "-fno-math-errno", "-Wall", "-Wno-unused-function"]
    if platform.machine().lower() in ("aarch64", "arm64"):
        args.append("-march=armv8-a")
    return args


def make_builder(relative: bool = True) -> FFI:
    """The cffi builder; ``relative`` gives source paths relative to the working directory (setup.py),
    else absolute ones (``FFI.compile`` runs the compiler inside its temporary directory)."""
    path = _rel if relative else os.path.abspath
    builder = FFI()
    builder.cdef(cdef_text())
    builder.set_source(
        MODULE,
        f'#include "{HEADER}"',
        sources=[path(os.path.join(HERE, s)) for s in SOURCES],
        include_dirs=[path(HERE)],
        depends=[path(os.path.join(HERE, h)) for h in DEPENDS],
        extra_compile_args=compile_args(),
        extra_link_args=["-fopenmp"],
    )
    return builder


ffibuilder = make_builder()


def build_inplace(verbose: bool = False) -> str:
    """Compile the module and copy it next to this file; returns the path of the shared object."""
    tmp = tempfile.mkdtemp(prefix="bnb_api_optim_")
    try:
        built = make_builder(relative=False).compile(tmpdir=tmp, verbose=verbose)
        target = os.path.join(HERE, os.path.basename(built))
        shutil.copyfile(built, target + ".tmp")
        os.replace(target + ".tmp", target)
        return target
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    print(build_inplace(verbose="-v" in sys.argv))

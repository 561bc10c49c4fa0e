"""Build ``libbnb_api_cuda_emu.so``: the unmodified ``.cu`` kernels compiled for the CPU with
``cpu_emulation.h`` (g++), a test oracle of the kernels' logic on machines without a GPU.

The C ABI is the real one (``bnb_api_cuda.h``), so the Python wrappers of :mod:`.kernels` drive it with
CPU tensors exactly as they drive the GPU library with CUDA tensors. Kernel launches are rewritten into
``emu_launch`` calls; every CUDA block runs as real threads with barriers for ``__syncthreads`` and
warp shuffles. Standard library only. Usage: ``python backends/cuda/emulate.py --out DIR``.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY_NAME = "libbnb_api_cuda_emu.so"
_LAUNCH = re.compile(r"(\w+(?:<[^<>;]*>)?)<<<(.*?)>>>\(", re.S)  # kernel or kernel<template args>


def find_cxx() -> str | None:
    """A C++20 compiler: ``$CXX``, g++ or clang++ on PATH; or None."""
    for name in (os.environ.get("CXX"), "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def rewrite_launches(source: str) -> str:
    """``k<<<g, b, s, st>>>(args)`` -> ``emu_launch(k, g, b, s, st, args)`` (``k`` may be ``name<T>``)."""
    return _LAUNCH.sub(lambda m: f"emu_launch({m.group(1)}, {m.group(2)}, ", source)


def build(output_dir: str, cxx: str | None = None) -> str:
    """Compile the emulated library into ``output_dir``; returns its path (RuntimeError on failure)."""
    cxx = cxx or find_cxx()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX)")
    os.makedirs(output_dir, exist_ok=True)
    target = os.path.join(output_dir, LIBRARY_NAME)
    with tempfile.TemporaryDirectory(prefix="bnb_api_emu_") as tmp:
        sources = []
        for src in sorted(glob.glob(os.path.join(HERE, "*.cu"))):
            dst = os.path.join(tmp, os.path.basename(src) + ".cpp")
            with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as g:
                g.write(rewrite_launches(f.read()))
            sources.append(dst)
        cmd = [cxx, "-std=c++20", "-O1", "-ffp-contract=off", "-fPIC", "-shared", "-pthread", "-Wno-unknown-pragmas",
               "-include", os.path.join(HERE, "cpu_emulation.h"), "-I", HERE, *sources, "-o", target]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"emulation build failed: {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=tempfile.gettempdir())
    args = parser.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

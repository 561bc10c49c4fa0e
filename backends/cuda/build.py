"""Build ``libbnb_api_cuda.so`` from the ``.cu`` sources of this folder with nvcc.

Used by ``setup.py`` (``find_nvcc`` / ``build``), by CI (``ci/cuda_compile_check.sh``) and by hand::

    python backends/cuda/build.py [--out DIR] [--arch sm_90 [--arch sm_80 ...]] [--jobs N]

Targets: real code for sm_75, sm_80, sm_86, sm_89, sm_90 plus PTX of compute_90 (so newer GPUs JIT it).
``BNB_API_CUDA_ARCHS=sm_80`` (comma-separated) narrows the real targets (PTX of compute_90 is always
added), which keeps CI compiles short. ``BNB_API_NVCC_FLAGS`` adds flags to every compile (e.g. the
``-DBNB_GEMV_ROWS_PER_WARP=8`` of a tuning sweep). The CUDA runtime is linked statically, so the library needs
only the NVIDIA driver at run time, whatever CUDA version torch was built with. Standard library only:
``setup.py`` loads this file by path before the package exists.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import glob
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LIBRARY_NAME = "libbnb_api_cuda.so"
DEFAULT_ARCHS = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90")
PTX_ARCH = "compute_90"
# no FMA contraction and IEEE division / sqrt: results round like the PyTorch reference
COMMON_FLAGS = ("-O3", "-std=c++17", "-fmad=false", "-Xcompiler", "-fPIC", "-Xcompiler", "-O3")


def find_nvcc() -> str | None:
    """Path of nvcc: ``$BNB_API_NVCC``, ``$CUDA_HOME/bin/nvcc``, ``nvcc`` on PATH, /usr/local/cuda; or None."""
    candidates = [os.environ.get("BNB_API_NVCC")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(os.path.join(os.environ[var], "bin", "nvcc"))
    candidates += [shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def sources() -> list[str]:
    """The ``.cu`` files compiled into the library (every one in this folder)."""
    return sorted(glob.glob(os.path.join(HERE, "*.cu")))


def archs_from_env() -> tuple[str, ...]:
    """Real architectures to build: ``$BNB_API_CUDA_ARCHS`` (comma-separated) or the defaults."""
    raw = os.environ.get("BNB_API_CUDA_ARCHS", "")
    chosen = tuple(a.strip() for a in raw.split(",") if a.strip())
    return chosen or DEFAULT_ARCHS


def gencode_flags(archs: tuple[str, ...] | list[str]) -> list[str]:
    """``-gencode`` flags: SASS for each ``sm_XY`` plus PTX of compute_90."""
    flags = []
    for arch in archs:
        if not arch.startswith("sm_") or not arch[3:].isdigit():
            raise ValueError(f"arch={arch!r} is not a real CUDA architecture; expected e.g. 'sm_80'")
        flags += ["-gencode", f"arch=compute_{arch[3:]},code={arch}"]
    flags += ["-gencode", f"arch={PTX_ARCH},code={PTX_ARCH}"]
    return flags


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"nvcc failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")


def build(output_dir: str, archs: tuple[str, ...] | list[str] | None = None, nvcc: str | None = None,
          jobs: int | None = None, verbose: bool = False) -> str:  # fmt: skip
    """Compile every ``.cu`` here into ``output_dir/libbnb_api_cuda.so``; returns its path.

    ``archs``: real targets (default ``$BNB_API_CUDA_ARCHS`` or sm_75..sm_90); PTX of compute_90 is
    always embedded. Sources compile in parallel (``jobs``, default the CPU count), then link.
    Raises ``RuntimeError`` with nvcc's output on any error.
    """
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found: install the CUDA toolkit or set BNB_API_NVCC / CUDA_HOME")
    archs = tuple(archs or archs_from_env())
    gencode = gencode_flags(archs)
    os.makedirs(output_dir, exist_ok=True)
    target = os.path.join(output_dir, LIBRARY_NAME)
    with tempfile.TemporaryDirectory(prefix="bnb_api_cuda_") as tmp:
        objects = [os.path.join(tmp, os.path.basename(src)[:-3] + ".o") for src in sources()]
        extra = shlex.split(os.environ.get("BNB_API_NVCC_FLAGS", ""))
        commands = [[nvcc, *COMMON_FLAGS, *extra, *gencode, "-I", HERE, "-c", src, "-o", obj]
                    for src, obj in zip(sources(), objects)]  # fmt: skip
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
            for cmd, _ in zip(commands, pool.map(_run, commands)):
                if verbose:
                    print(" ".join(cmd))
        tmp_target = os.path.join(tmp, LIBRARY_NAME)
        _run([nvcc, "-shared", *gencode, *objects, "-o", tmp_target])
        shutil.move(tmp_target, target)  # atomic enough: a half-written library is never loaded
    if verbose:
        print(f"built {target} for {', '.join(archs)} + {PTX_ARCH} PTX in {time.perf_counter() - start:.1f} s")
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=HERE, help="output folder (default: this folder)")
    parser.add_argument("--arch", action="append", help="real target such as sm_90 (repeatable)")
    parser.add_argument("--jobs", type=int, default=None, help="parallel nvcc processes")
    args = parser.parse_args(argv)
    try:
        build(args.out, archs=args.arch, jobs=args.jobs, verbose=True)
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

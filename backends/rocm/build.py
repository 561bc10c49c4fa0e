"""Build ``libbnb_api_rocm.so``: the CUDA sources of ``backends/cuda`` compiled by hipcc.

The ``.cu`` files are not copied: hipcc compiles them as HIP with ``hip_compat.h`` force-included
(CUDA runtime names mapped to HIP). Usage::

    python backends/rocm/build.py [--out DIR] [--arch gfx90a [--arch gfx942 ...]]

``BNB_API_ROCM_ARCHS`` (comma-separated) overrides the default targets. Standard library only.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CUDA_DIR = os.path.join(os.path.dirname(HERE), "cuda")
LIBRARY_NAME = "libbnb_api_rocm.so"
DEFAULT_ARCHS = ("gfx90a", "gfx942", "gfx1100")  # MI200, MI300, RDNA3
# no FMA contraction: results round like the PyTorch reference (as nvcc -fmad=false)
COMMON_FLAGS = ("-O3", "-std=c++17", "-fPIC", "-ffp-contract=off", "-x", "hip")


def find_hipcc() -> str | None:
    """Path of hipcc: ``$BNB_API_HIPCC``, ``$ROCM_PATH/bin/hipcc``, ``hipcc`` on PATH, /opt/rocm; or None."""
    candidates = [os.environ.get("BNB_API_HIPCC")]
    if os.environ.get("ROCM_PATH"):
        candidates.append(os.path.join(os.environ["ROCM_PATH"], "bin", "hipcc"))
    candidates += [shutil.which("hipcc"), "/opt/rocm/bin/hipcc"]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def sources() -> list[str]:
    """The CUDA sources (shared with the cuda backend)."""
    return sorted(glob.glob(os.path.join(CUDA_DIR, "*.cu")))


def command(hipcc: str, target: str, archs: tuple[str, ...] | list[str]) -> list[str]:
    """The hipcc command line that builds ``target`` from every source for ``archs``."""
    for arch in archs:
        if not arch.startswith("gfx"):
            raise ValueError(f"arch={arch!r} is not an AMD GPU target; expected e.g. 'gfx90a'")
    return [
        hipcc, *COMMON_FLAGS, *[f"--offload-arch={a}" for a in archs],
        "-include", os.path.join(HERE, "hip_compat.h"), "-I", CUDA_DIR,
        *sources(), "-shared", "-o", target,
    ]  # fmt: skip


def build(output_dir: str, archs: tuple[str, ...] | list[str] | None = None, hipcc: str | None = None) -> str:
    """Compile the shared sources into ``output_dir/libbnb_api_rocm.so``; returns its path.

    Raises ``RuntimeError`` with hipcc's output on any error (or when hipcc is missing).
    """
    hipcc = hipcc or find_hipcc()
    if hipcc is None:
        raise RuntimeError("hipcc not found: install ROCm or set BNB_API_HIPCC / ROCM_PATH")
    env_archs = tuple(a.strip() for a in os.environ.get("BNB_API_ROCM_ARCHS", "").split(",") if a.strip())
    archs = tuple(archs or env_archs or DEFAULT_ARCHS)
    os.makedirs(output_dir, exist_ok=True)
    target = os.path.join(output_dir, LIBRARY_NAME)
    with tempfile.TemporaryDirectory(prefix="bnb_api_rocm_") as tmp:
        tmp_target = os.path.join(tmp, LIBRARY_NAME)
        cmd = command(hipcc, tmp_target, archs)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"hipcc failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
        shutil.move(tmp_target, target)
    return target


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=HERE, help="output folder (default: this folder)")
    parser.add_argument("--arch", action="append", help="AMD target such as gfx90a (repeatable)")
    args = parser.parse_args(argv)
    try:
        print(build(args.out, archs=args.arch))
    except (RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build script for bnb_api.

The repository keeps its top-level folders (``core``, ``backends``, ``conformance``) but installs them
under the single import root ``bnb_api`` (``bnb_api.core``, ``bnb_api.backends.<name>``,
``bnb_api.conformance``). Native code:

* cpu: every ``backends/cpu/build_*.py`` exposes a cffi ``ffibuilder`` (API mode); each becomes an
  optional extension, so a machine without a C compiler still installs (the reference serves).
  ``BNB_API_REQUIRE_NATIVE=1`` turns a failed native build into an install error (CI sets it).
* cuda: ``backends/cuda/build.py`` compiles the ``.cu`` sources with nvcc into a plain-C shared library
  when nvcc is found and torch is a CUDA build (``BNB_API_BUILD_CUDA=0`` skips, ``=1`` requires it).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)  # build scripts import their siblings by path

PACKAGE_DIR = {
    "bnb_api": "bnb_api",
    "bnb_api.core": "core",
    "bnb_api.backends": "backends",
    "bnb_api.conformance": "conformance",
}


def _find_packages() -> list[str]:
    """All importable packages under the mapped roots, named under ``bnb_api``."""
    found = []
    for root_name, folder in PACKAGE_DIR.items():
        for dirpath, _dirs, files in os.walk(os.path.join(HERE, folder)):
            if "__init__.py" not in files or "__pycache__" in dirpath:
                continue
            rel = os.path.relpath(dirpath, os.path.join(HERE, folder))
            found.append(root_name if rel == "." else root_name + "." + rel.replace(os.sep, "."))
    return sorted(set(found))


def _load_module(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _require_native() -> bool:
    return os.environ.get("BNB_API_REQUIRE_NATIVE", "0") == "1"


def _cpu_extensions() -> list:
    """One optional cffi extension per ``backends/cpu/build_*.py``."""
    extensions = []
    for path in sorted(glob.glob(os.path.join(HERE, "backends", "cpu", "build_*.py"))):
        name = "bnb_api_cpu_build_" + os.path.basename(path)[6:-3]
        try:
            builder = _load_module(path, name).ffibuilder
            ext = builder.distutils_extension(tmpdir=os.path.join(HERE, "build", "cffi"))
        except Exception as exc:  # a broken build script must not break the install
            if _require_native():
                raise
            print(f"bnb_api: skipping native cpu module {path}: {exc}", file=sys.stderr)
            continue
        ext.optional = not _require_native()
        extensions.append(ext)
    return extensions


def _torch_has_cuda() -> bool:
    """True when the installed torch is a CUDA build (auto mode builds the CUDA library only then)."""
    try:
        import torch
    except Exception:
        return False
    return bool(getattr(torch.version, "cuda", None))


class BuildExt(build_ext):
    """build_ext that also builds the CUDA library when nvcc is available."""

    def run(self) -> None:
        super().run()
        self._build_cuda()

    def _build_cuda(self) -> None:
        wanted = os.environ.get("BNB_API_BUILD_CUDA", "auto")
        script = os.path.join(HERE, "backends", "cuda", "build.py")
        if wanted == "0" or not os.path.exists(script):
            return
        build = _load_module(script, "bnb_api_cuda_build")
        if wanted == "auto" and not (build.find_nvcc() and _torch_has_cuda()):
            return
        target_dir = (
            os.path.join(HERE, "backends", "cuda")
            if self.inplace
            else os.path.join(self.build_lib, "bnb_api", "backends", "cuda")
        )
        try:
            build.build(target_dir)
        except Exception as exc:
            if wanted == "1":
                raise
            print(f"bnb_api: CUDA library not built: {exc}", file=sys.stderr)


setup(
    name="bnb_api",
    version="0.1.0",
    description="Multi-backend k-bit quantization kernels for PyTorch (bitsandbytes-compatible formats)",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    package_dir=PACKAGE_DIR,
    packages=_find_packages(),
    package_data={
        "bnb_api.backends.cpu": ["*.c", "*.h"],
        "bnb_api.backends.cuda": ["*.cu", "*.cuh", "*.h", "*.so"],
        "bnb_api.backends.rocm": ["*.h"],
        "bnb_api.conformance": ["*.txt", "known_failures/*.txt"],
    },
    ext_modules=_cpu_extensions(),
    cmdclass={"build_ext": BuildExt},
    install_requires=["torch>=2.4,<3", "numpy", "cffi>=1.16"],
    extras_require={
        "cpu": [],
        "cuda": [],
        "rocm": [],
        "xpu": [],
        "gaudi": [],
        "mps": [],
        # bitsandbytes only for side-by-side format tests; never imported by the package itself
        "test": ["pytest>=7", "hypothesis>=6.80", "safetensors>=0.4", "scipy", "ruff", "transformers>=4.40",
                 "peft>=0.10", "accelerate", "bitsandbytes==0.50.2"],
        "hf": ["transformers>=4.40", "peft>=0.10", "safetensors>=0.4", "accelerate"],
    },
    entry_points={"console_scripts": ["bnb-api=bnb_api.__main__:main"]},
    zip_safe=False,
)

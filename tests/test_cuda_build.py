"""The CUDA / ROCm library sources: ABI header consistency (always), and an nvcc compile of the library
(marked ``slow``; skipped without nvcc; deselect with ``-m "not slow"``). Nothing built here can run:
the kernels are exercised on GPUs by ``ci/gpu_check.sh``."""

from __future__ import annotations

import glob
import os
import re
import subprocess

import cffi
import pytest

from bnb_api.backends.cuda import build as cuda_build
from bnb_api.backends.cuda.library import HEADER, BnbCudaError, NativeLibrary, cdef_source
from bnb_api.backends.rocm import build as rocm_build
from bnb_api.core.ops import OPTIMIZERS

CUDA_DIR = os.path.dirname(HEADER)
SOURCES = sorted(glob.glob(os.path.join(CUDA_DIR, "*.cu")) + glob.glob(os.path.join(CUDA_DIR, "*.cuh")))


def _ffi() -> tuple[cffi.FFI, object]:
    ffi = cffi.FFI()
    ffi.cdef(cdef_source())
    return ffi, ffi.dlopen(None)  # constants only: no symbol of the library is touched


def _declared_functions() -> list[str]:
    return re.findall(r"^\s*(?:const\s+)?\w+\*?\s+\*?(bnb_cuda_\w+)\(", open(HEADER).read(), re.M)


def test_header_is_cdef_clean_and_constants_match_python():
    ffi, lib = _ffi()
    assert [getattr(lib, f"BNB_OPT_{name.upper()}") for name in OPTIMIZERS] == list(range(len(OPTIMIZERS)))
    assert sorted({lib.BNB_F32, lib.BNB_F16, lib.BNB_BF16}) == [0, 1, 2]
    fields = [lib.BNB_T_P, lib.BNB_T_G, lib.BNB_T_S1, lib.BNB_T_S2, lib.BNB_T_ABSMAX1, lib.BNB_T_ABSMAX2,
              lib.BNB_T_N, lib.BNB_T_DTYPES, lib.BNB_T_START]  # fmt: skip
    assert len(set(fields)) == len(fields) and max(fields) < lib.BNB_TABLE_WIDTH
    assert ffi.sizeof("bnb_optim_params") == 4 * 4 + 15 * 4


def test_every_declared_function_is_defined_extern_c_once():
    declared = _declared_functions()
    assert len(declared) == 13, declared
    text = "\n".join(open(p).read() for p in SOURCES)
    for name in declared:
        assert len(re.findall(rf'extern "C" [^;{{]*\b{name}\(', text)) == 1, name


def test_every_cuda_runtime_name_is_mapped_for_hip():
    used = set(re.findall(r"\bcuda[A-Z]\w*", "\n".join(open(p).read() for p in SOURCES)))
    compat = open(os.path.join(os.path.dirname(rocm_build.__file__), "hip_compat.h")).read()
    mapped = set(re.findall(r"#define (cuda\w+) hip\w+", compat))
    assert used and used <= mapped, sorted(used - mapped)


def test_gencode_flags_and_arch_errors(monkeypatch):
    flags = " ".join(cuda_build.gencode_flags(cuda_build.DEFAULT_ARCHS))
    for arch in ("75", "80", "86", "89", "90"):
        assert f"arch=compute_{arch},code=sm_{arch}" in flags
    assert "arch=compute_90,code=compute_90" in flags
    monkeypatch.setenv("BNB_API_CUDA_ARCHS", "sm_80, sm_90")
    assert cuda_build.archs_from_env() == ("sm_80", "sm_90")
    with pytest.raises(ValueError, match="arch='compute_80'"):
        cuda_build.gencode_flags(["compute_80"])
    assert "-fmad=false" in cuda_build.COMMON_FLAGS


def test_rocm_build_uses_the_cuda_sources_through_the_compat_header():
    cmd = rocm_build.command("hipcc", "/tmp/x.so", ["gfx90a"])
    assert "--offload-arch=gfx90a" in cmd and "-ffp-contract=off" in cmd
    assert cmd[cmd.index("-include") + 1].endswith("hip_compat.h")
    assert [c for c in cmd if c.endswith(".cu")] == cuda_build.sources()
    assert not glob.glob(os.path.join(os.path.dirname(rocm_build.__file__), "*.cu")), "no forked kernels"
    with pytest.raises(ValueError, match="AMD GPU target"):
        rocm_build.command("hipcc", "/tmp/x.so", ["sm_80"])
    if rocm_build.find_hipcc() is None:
        with pytest.raises(RuntimeError, match="hipcc not found"):
            rocm_build.build("/tmp/unused")


def test_build_without_nvcc_fails_clearly(monkeypatch):
    monkeypatch.setattr(cuda_build, "find_nvcc", lambda: None)
    with pytest.raises(RuntimeError, match="nvcc not found"):
        cuda_build.build("/tmp/unused")


def _open(path: str):
    ffi = cffi.FFI()
    ffi.cdef(cdef_source())
    return ffi, ffi.dlopen(path)


@pytest.fixture(scope="module")
def built_library(tmp_path_factory):
    if cuda_build.find_nvcc() is None:
        pytest.skip("nvcc not found")
    out = tmp_path_factory.mktemp("cuda")
    return cuda_build.build(str(out), archs=[os.environ.get("BNB_API_TEST_CUDA_ARCH", "sm_80")])


@pytest.mark.slow
def test_nvcc_builds_a_library_exporting_the_header(built_library):
    symbols = subprocess.run(["nm", "-D", "--defined-only", built_library], capture_output=True, text=True).stdout
    for name in _declared_functions():
        assert re.search(rf"\bT {name}\b", symbols), name
    ffi, c = _open(built_library)
    assert c.bnb_cuda_abi_version() == c.BNB_CUDA_ABI_VERSION
    lib = NativeLibrary(os.path.basename(built_library), "BNB_API_TEST_NO_SUCH_VAR", os.path.dirname(built_library),
                        "CUDA", "hint")  # fmt: skip
    error = lib.load_error()  # None on a GPU machine; here the runtime finds no usable driver / device
    assert error is None or "cannot use a device: CUDA error" in error, error


@pytest.mark.slow
def test_built_library_rejects_bad_arguments_before_any_launch(built_library):
    ffi, c = _open(built_library)
    null = ffi.NULL
    assert c.bnb_cuda_quantize_blockwise(null, 0, null, null, null, 10, 48, null) == 1  # blocksize not 2^k >= 64
    assert c.bnb_cuda_quantize_4bit(null, 0, null, null, null, null, 10, 16, null) == 1
    assert c.bnb_cuda_dequantize_4bit(null, null, null, null, 0, 0, 64, null) == 0  # empty: nothing launched
    params = ffi.new("bnb_optim_params *", {"optimizer": 99, "step": 1})
    assert c.bnb_cuda_optimizer_32bit(null, 1, 1, params, null, null) == 1
    lib = NativeLibrary("unused.so", "BNB_API_TEST_NO_SUCH_VAR", "/nonexistent", "CUDA", "hint")
    lib._loaded, lib._error = (ffi, c), None  # the loaded handles, bypassing the device check
    with pytest.raises(BnbCudaError, match=r"quantize_blockwise: CUDA error 1: invalid argument"):
        lib.check("quantize_blockwise", 1)


def test_compile_check_script_exists_and_is_strict():
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ci", "cuda_compile_check.sh")
    text = open(script).read()
    assert "set -euo pipefail" in text and "build.py" in text


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
import torch

from bnb_api.backends.cuda import build as cuda_build
from bnb_api.backends.cuda.library import HEADER, BnbCudaError, NativeLibrary, cdef_source
from bnb_api.backends.rocm import build as rocm_build
from bnb_api.core import codes as code_books
from bnb_api.core.ops import OPTIMIZERS, TWO_STATE_OPTIMIZERS
from bnb_api.core.reference import KERNELS as REF
from bnb_api.core.reference.blockwise import quantize_flat

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



# --------------------------------------------------------------------------------------------------
# The unmodified kernels run on the CPU (backends/cuda/emulate.py), driven by the real Python wrappers
# with CPU tensors, against the reference: checks their logic where no GPU is available.
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    from bnb_api.backends.cuda import emulate
    from bnb_api.backends.cuda.kernels import GpuKernels

    if emulate.find_cxx() is None:
        pytest.skip("no C++ compiler for the CPU emulation")
    path = emulate.build(str(tmp_path_factory.mktemp("emu")))
    lib = NativeLibrary(os.path.basename(path), "BNB_API_TEST_NO_SUCH_VAR", os.path.dirname(path), "CUDA", "hint")
    assert lib.load_error() is None
    return GpuKernels(lib)


DTYPES = (torch.float32, torch.float16, torch.bfloat16)
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_blockwise_and_4bit_bit_exact(emu, dtype):
    A = (torch.randn(3, 409) * 4).to(dtype)
    code = code_books.dynamic_map()
    for blocksize in (64, 256):
        got, ref = emu.quantize_blockwise(A, code, blocksize), REF["quantize_blockwise"](A, code, blocksize)
        assert all(torch.equal(x, y) for x, y in zip(got, ref))
        out = emu.dequantize_blockwise(*got, code, blocksize, dtype)
        assert torch.equal(out, REF["dequantize_blockwise"](*got, code, blocksize, dtype))
    for quant_type in ("nf4", "fp4"):
        for blocksize in (32, 128):
            got = emu.quantize_4bit(A, blocksize, quant_type, torch.uint8)
            ref = REF["quantize_4bit"](A, blocksize, quant_type, torch.uint8)
            assert all(torch.equal(x, y) for x, y in zip(got, ref)), (quant_type, blocksize)
            args = (got[0].view(-1), got[1], blocksize, quant_type, [3, 409], dtype)
            assert torch.equal(emu.dequantize_4bit(*args), REF["dequantize_4bit"](*args))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N, K", [(37, 256), (21, 203)])  # vector path (K % 32 == 0) and scalar path
@pytest.mark.parametrize("nested", [False, True])
def test_emulated_gemv_4bit(emu, dtype, N, K, nested):
    packed, absmax = REF["quantize_4bit"](torch.randn(N, K), 64, "nf4", torch.uint8)
    code = code_books.code_4bit("nf4")
    extra: tuple = ()
    if nested:
        offset = absmax.mean()
        q, nested_absmax = REF["quantize_blockwise"](absmax - offset, code_books.dynamic_map(), 256)
        absmax, extra = q, (nested_absmax, code_books.dynamic_map(), offset.reshape(1), 256)
    A = torch.randn(1, 1, K).to(dtype)
    args = (A, packed.view(-1), [N, K], absmax, code, 64, *extra)
    got, ref = emu.gemv_4bit(*args), REF["gemv_4bit"](*args)
    assert got.shape == ref.shape == (1, 1, N) and got.dtype == dtype
    torch.testing.assert_close(got.float(), ref.float(), rtol=TOL[dtype], atol=TOL[dtype] * K**0.5)


@pytest.mark.parametrize("shape", ["1,2", "1,4", "2,2", "2,4", "4,2", "4,4", "9,9"])
def test_emulated_gemv_4bit_tile_shapes(emu, shape, monkeypatch):
    """Every shape of the fast path ("R,U": rows per warp, chunks per lane; "9,9" is not one: the default
    serves), over several tiles per row (K = 8224: 257 chunks) and a partial row group (N = 7)."""
    monkeypatch.setenv("BNB_API_CUDA_GEMV_SHAPE", shape)
    N, K = 7, 8224
    torch.manual_seed(3)
    packed, absmax = REF["quantize_4bit"](torch.randn(N, K), 128, "fp4", torch.uint8)
    A = torch.randn(1, K, dtype=torch.bfloat16)
    exact = A.double() @ REF["dequantize_4bit"](packed.view(-1), absmax, 128, "fp4", [N, K], torch.float64).T
    offset = absmax.mean()
    q, nested_absmax = REF["quantize_blockwise"](absmax - offset, code_books.dynamic_map(), 256)
    nested = (nested_absmax, code_books.dynamic_map(), offset.reshape(1), 256)
    for stats in ((absmax,), (q, *nested)):
        args = (A, packed.view(-1), [N, K], stats[0], code_books.code_4bit("fp4"), 128, *stats[1:])
        got, ref = emu.gemv_4bit(*args), REF["gemv_4bit"](*args)
        tol = dict(rtol=TOL[torch.bfloat16], atol=TOL[torch.bfloat16] * K**0.5)
        torch.testing.assert_close(got.float(), ref.float(), **tol)
        if len(stats) == 1:  # nested statistics round the absmax: only the plain ones match float64 math
            torch.testing.assert_close(got.double(), exact, **tol)


@pytest.mark.parametrize("shape", ["m1,4", "m1,8", "m2,4", "m2,8"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_emulated_gemv_4bit_tensor_core_shapes(emu, shape, dtype, monkeypatch):
    """The tensor-core kernel (the m16n8k16 product emulated with the PTX fragment layout): plain and nested
    statistics, blocksizes 64 and 256, several span tiles per row (K = 1216: 19 spans) and a partial group of
    rows (N = 13), against the reference and float64 math within the contract's tolerance."""
    monkeypatch.setenv("BNB_API_CUDA_GEMV_SHAPE", shape)
    N, K = 13, 1216
    torch.manual_seed(7)
    A = torch.randn(1, K).to(dtype)
    tol = dict(rtol=TOL[dtype], atol=TOL[dtype] * K**0.5)
    for blocksize in (64, 256):
        packed, absmax = REF["quantize_4bit"](torch.randn(N, K), blocksize, "nf4", torch.uint8)
        exact = A.double() @ REF["dequantize_4bit"](packed.view(-1), absmax, blocksize, "nf4", [N, K], torch.float64).T
        offset = absmax.mean()
        q, nested_absmax = REF["quantize_blockwise"](absmax - offset, code_books.dynamic_map(), 256)
        for stats in ((absmax,), (q, nested_absmax, code_books.dynamic_map(), offset.reshape(1), 256)):
            args = (A, packed.view(-1), [N, K], stats[0], code_books.code_4bit("nf4"), blocksize, *stats[1:])
            got, ref = emu.gemv_4bit(*args), REF["gemv_4bit"](*args)
            torch.testing.assert_close(got.float(), ref.float(), **tol)
            if len(stats) == 1:
                torch.testing.assert_close(got.double(), exact, **tol)


@pytest.mark.parametrize("K", [32, 64, 4096])
def test_emulated_gemv_4bit_overflow_is_not_finite_where_the_reference_is_not(emu, K):
    """Huge activations times huge scales: every product overflows float32. The reference rounds each
    product (inf, then inf - inf = NaN); the kernel's fused multiply-adds keep the exact product, so a
    row may come out inf where the reference has NaN, but never finite. Rows of tiny scales stay exact."""
    N = 37
    torch.manual_seed(K)
    packed, absmax = REF["quantize_4bit"](torch.randn(N, K), 32, "nf4", torch.uint8)
    absmax = absmax * 1e30
    absmax.view(N, K // 32)[::3] = 1e-30  # every third row's blocks tiny: those rows stay finite
    A = torch.randn(1, K) * 1e36
    args = (A, packed.view(-1), [N, K], absmax, code_books.code_4bit("nf4"), 32)
    got, ref = emu.gemv_4bit(*args), REF["gemv_4bit"](*args)
    finite = torch.isfinite(ref)
    assert not finite.all() and finite.any()
    assert torch.equal(torch.isfinite(got), finite)
    torch.testing.assert_close(got[finite], ref[finite], rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_emulated_int8_ops(emu, dtype):
    A = torch.randn(2, 13, 131)
    A[:, :, [5, 77]] *= 30
    A[0, 3, 9], A[1, 2, 100], A[1, 5, 0] = float("nan"), float("inf"), float("-inf")  # torch's NaN policy
    A = A.to(dtype)
    for threshold in (0.0, 6.0):
        got, ref = emu.int8_vectorwise_quant(A, threshold), REF["int8_vectorwise_quant"](A, threshold)
        for x, y in zip(got, ref):
            assert x.dtype == y.dtype, threshold
            torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)
    for K in (128, 131):  # aligned dp4a loads and the byte path
        a = torch.randint(-128, 128, (3, 67, K), dtype=torch.int8)
        b = torch.randint(-128, 128, (70, K), dtype=torch.int8)
        assert torch.equal(emu.int8_linear_matmul(a, b), REF["int8_linear_matmul"](a, b))
    C = torch.randint(-(2**20), 2**20, (67, 70), dtype=torch.int32)
    rows, cols, bias = torch.rand(67) * 5, torch.rand(70) * 5, torch.randn(70).to(dtype)
    for out_dtype, b in ((None, None), (dtype, bias)):
        got = emu.int8_mm_dequant(C, rows, cols, out_dtype, b)
        assert torch.equal(got, REF["int8_mm_dequant"](C, rows, cols, out_dtype, b))


def _opt_case(optimizer, n, eight_bit, dtype, max_unorm, seed, blocksize=128):
    torch.manual_seed(seed)
    two, ns1 = optimizer in TWO_STATE_OPTIMIZERS, 2 if optimizer == "ademamix" else 1
    p, g = torch.randn(n).to(dtype), (torch.randn(n) * 0.1).to(dtype)
    s1 = torch.randn(ns1, n) * 0.01
    if optimizer in ("rmsprop", "adagrad"):
        s1 = s1.abs()
    s2 = torch.rand(n) * 1e-3 if two else None
    q1, q2 = code_books.dynamic_map(True), code_books.dynamic_map(False)
    a1 = a2 = None
    if eight_bit:
        parts = [quantize_flat(r, q1, blocksize) for r in s1]
        s1, a1 = torch.stack([c for c, _ in parts]), torch.stack([a for _, a in parts])
        a1 = a1 if ns1 == 2 else a1[0]
        if two:
            s2, a2 = quantize_flat(s2, q2, blocksize)
    s1 = s1.reshape((2, n) if ns1 == 2 else (n,))
    return [p, g, s1, s2, a1, a2, q1 if eight_bit else None, q2 if eight_bit else None]


HYPER = (1e-3, 0.9, 0.99, 0.999, 5.0, 1e-8, 0.01, 3)  # lr, beta1, beta2, beta3, alpha, eps, weight_decay, step


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("eight_bit,blocksize,knobs", [(False, 128, ""), (False, 128, "GENERIC=1"), (True, 64, ""),
                                                        (True, 128, ""), (True, 256, ""), (True, 256, "BLOCKS=2"),
                                                        (True, 256, "BLOCKS=4,GENERIC=1"), (True, 512, ""),
                                                        (True, 2048, "")])  # fmt: skip
def test_emulated_optimizer_multi_matches_reference(emu, optimizer, eight_bit, blocksize, knobs, monkeypatch):
    """blocksize 64 to 512: states kept in registers (one sweep; full blocks of aligned tensors in 16-byte
    loads, the rest element by element); 2048: the two-sweep path. blocksize 256 has a kernel per optimizer
    and the sweep knobs (blocks per SM, the any-optimizer kernel); 32-bit states: the per-optimizer and the
    any-optimizer kernels."""
    for knob in filter(None, knobs.split(",")):
        name, value = knob.split("=")
        monkeypatch.setenv(f"BNB_API_CUDA_OPT8_{name}", value)
    sizes, dtypes = (3001, 77, 130), (torch.float32, torch.bfloat16, torch.float16)
    for max_unorm in (0.0, 0.02):
        cases = [_opt_case(optimizer, n, eight_bit, dt, max_unorm, i, blocksize)
                 for i, (n, dt) in enumerate(zip(sizes, dtypes))]  # fmt: skip
        lists = [[c[i] for c in cases if c[i] is not None] for i in range(6)]  # p, g, s1, s2, absmax1, absmax2
        mine = [[t.clone() for t in lst] for lst in lists]
        ref = [[t.clone() for t in lst] for lst in lists]
        tail = (*cases[0][6:], *HYPER, 0.7, max_unorm, blocksize)
        emu.optimizer_step_multi(optimizer, *mine, *tail)
        REF["optimizer_step_multi"](optimizer, *ref, *tail)
        for which, (xs, ys) in enumerate(zip(mine, ref)):
            for x, y in zip(xs, ys):
                if x.dtype == torch.uint8:  # a requantized state may sit one code away after float rounding
                    assert (x.int() - y.int()).abs().max() <= 1, (which, max_unorm)
                    assert (x != y).float().mean() < 0.01, (which, max_unorm)
                else:
                    torch.testing.assert_close(x, y, rtol=1e-3 if max_unorm else 1e-5, atol=1e-6, msg=f"list {which}")
        assert not torch.equal(mine[0][0], lists[0][0])


def test_cublaslt_int_mm_helper_is_exact_or_declines():
    """The GPU int8 matmul's torch._int_mm route: exact int32 A @ B.T, or None (never an error) for a shape
    torch refuses, so the dp4a kernel serves it. Runs on torch's cpu _int_mm here."""
    from bnb_api.backends.cuda.kernels import _cublaslt_int_mm

    g = torch.Generator().manual_seed(5)
    A = torch.randint(-127, 128, (32, 64), dtype=torch.int8, generator=g)
    B = torch.randint(-127, 128, (24, 64), dtype=torch.int8, generator=g)
    assert torch.equal(_cublaslt_int_mm(A, B), REF["int8_linear_matmul"](A, B))
    assert _cublaslt_int_mm(A, B[:, :48]) is None  # K mismatch: torch raises, the helper declines


def test_current_raw_stream_prefers_the_raw_accessor(monkeypatch):
    """The stream handed to every kernel: torch's raw-stream accessor with the tensor's device index (the
    current device when the tensor names none), else ``torch.cuda.current_stream(device).cuda_stream``."""
    from bnb_api.backends.cuda import kernels

    seen = []
    monkeypatch.setattr(torch._C, "_cuda_getCurrentRawStream", lambda index: seen.append(index) or 1000 + index,
                        raising=False)  # fmt: skip
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert kernels._current_raw_stream(torch.device("cuda", 1)) == 1001
    assert kernels._current_raw_stream(torch.device("cuda")) == 1003
    assert seen == [1, 3]
    monkeypatch.delattr(torch._C, "_cuda_getCurrentRawStream")

    class FakeStream:
        cuda_stream = 77

    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: FakeStream())
    assert kernels._current_raw_stream(torch.device("cuda", 0)) == 77

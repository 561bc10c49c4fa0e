"""Accelerator backends without their hardware: registration with the device faked, and the pure-PyTorch
kernels of xpu / mps (chunked) and gaudi (static shapes) run on CPU tensors against the reference."""

from __future__ import annotations

import importlib
import types

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import bnb_api  # noqa: F401  (registers every backend)
from bnb_api.backends.cuda.library import BnbCudaError, NativeLibrary
from bnb_api.backends.gaudi import static_shapes
from bnb_api.backends.xpu.chunked import aligned_chunk, make_kernels
from bnb_api.core import codes as code_books
from bnb_api.core import registry
from bnb_api.core.errors import BnbError, BnbUnavailableError
from bnb_api.core.ops import OPTIMIZERS, TWO_STATE_OPTIMIZERS
from bnb_api.core.reference import KERNELS as REF
from bnb_api.core.reference.blockwise import quantize_flat

ACCEL = ("cuda", "rocm", "xpu", "gaudi", "mps")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _reregister(*names: str) -> None:
    for name in names:
        registry.unregister_backend(name)
        importlib.import_module(f"bnb_api.backends.{name}").register()


@pytest.fixture
def fake(monkeypatch):
    """monkeypatch for faking devices; afterwards the real environment's backends are registered again."""
    yield monkeypatch
    monkeypatch.undo()
    _reregister(*ACCEL)


def _fake_cuda_torch(mp, hip: str | None = None) -> None:
    mp.setattr(torch.version, "cuda", None if hip else "12.4")
    mp.setattr(torch.version, "hip", hip)
    mp.setattr(torch.cuda, "is_available", lambda: True)


def _verdict(op: str, device_type: str, backend: str) -> str:
    return {k.backend: reason for k, reason in registry.explain(op, device_type)}[backend]


# --------------------------------------------------------------------------------------------------
# registration with the device faked
# --------------------------------------------------------------------------------------------------


def test_real_environment_every_accelerator_inactive_with_a_reason():
    for name in ACCEL:
        ok, reason = registry.backends()[name].available()
        assert not ok and len(reason) > 10, (name, reason)
    assert "without CUDA" in registry.backends()["cuda"].available()[1]
    assert "not a ROCm build" in registry.backends()["rocm"].available()[1]


def test_cuda_registers_every_native_op_for_cuda_at_priority_100():
    ops = {op for op in REF if any(k.backend == "cuda" for k in registry.kernels(op, "cuda"))}
    assert ops == set(REF) - {"int8_mm_outlier"}  # the composite decomposes it into cuda primitives
    for op in ops:
        k = registry.get_kernel(op, "cuda", "cuda")
        assert (k.priority, k.kind, k.device_type) == (100, "native", "cuda")
        assert not any(k.backend == "cuda" for k in registry.kernels(op, "cpu"))


@pytest.mark.parametrize(
    "setup, expected",
    [
        (lambda mp: mp.setattr(torch.version, "cuda", None), "built without CUDA"),
        (lambda mp: (mp.setattr(torch.version, "cuda", "12.4"), mp.setattr(torch.cuda, "is_available", lambda: False)),
         "no CUDA device"),
        (lambda mp: _fake_cuda_torch(mp), "libbnb_api_cuda.so not built"),
    ],
)  # fmt: skip
def test_cuda_probe_reasons(fake, tmp_path, setup, expected):
    fake.setenv("BNB_API_CUDA_LIB", str(tmp_path / "libbnb_api_cuda.so"))
    setup(fake)
    _reregister("cuda")
    from bnb_api.backends import cuda

    cuda.LIBRARY._error = cuda.LIBRARY._loaded = None
    assert expected in _verdict("gemv_4bit", "cuda", "cuda")
    assert _verdict("gemv_4bit", "cuda", "reference") == "selected"
    cuda.LIBRARY._error = None


def test_cuda_probe_reports_dlopen_error(fake, tmp_path):
    broken = tmp_path / "libbnb_api_cuda.so"
    broken.write_bytes(b"not an ELF file")
    lib = NativeLibrary("libbnb_api_cuda.so", "BNB_API_TEST_LIB", str(tmp_path), "CUDA", "hint")
    assert "dlopen" in lib.load_error()
    with pytest.raises(BnbUnavailableError, match="CUDA kernels unavailable: dlopen"):
        lib.lib  # noqa: B018
    fake.setenv("BNB_API_TEST_LIB", str(tmp_path / "elsewhere.so"))
    assert "not built" in NativeLibrary("x.so", "BNB_API_TEST_LIB", str(tmp_path), "CUDA", "hint").load_error()


def test_cuda_error_class_is_runtime_and_bnb_error():
    assert issubclass(BnbCudaError, RuntimeError) and issubclass(BnbCudaError, BnbError)


def test_rocm_torch_gets_rocm_kernels_and_no_cuda_kernels(fake, tmp_path):
    fake.setenv("BNB_API_ROCM_LIB", str(tmp_path / "libbnb_api_rocm.so"))
    _fake_cuda_torch(fake, hip="6.2.41133")
    _reregister("cuda", "rocm")
    for op in set(REF) - {"int8_mm_outlier"}:
        chain = [k.backend for k in registry.kernels(op, "cuda")]
        assert "cuda" not in chain and chain[0] == "rocm", (op, chain)
        k = registry.get_kernel(op, "rocm", "cuda")
        assert (k.priority, k.kind) == (100, "native")
    assert "ROCm build" in registry.backends()["cuda"].available()[1]
    assert "libbnb_api_rocm.so not built" in _verdict("quantize_4bit", "cuda", "rocm")


def test_rocm_registers_no_kernels_under_cuda_torch(fake):
    _fake_cuda_torch(fake)
    _reregister("cuda", "rocm")
    assert not any(k.backend == "rocm" for op in REF for k in registry.kernels(op, "cuda"))
    assert any(k.backend == "cuda" for k in registry.kernels("gemv_4bit", "cuda"))


def test_xpu_selected_when_device_faked(fake):
    fake.setattr(torch, "xpu", types.SimpleNamespace(is_available=lambda: True), raising=False)
    _reregister("xpu")
    assert _verdict("quantize_4bit", "xpu", "xpu") == "selected"
    assert not any(k.backend == "xpu" for k in registry.kernels("int8_linear_matmul", "xpu"))
    call = dict(A=torch.randn(300), code=code_books.dynamic_map(), blocksize=64)
    assert registry.select("quantize_blockwise", "xpu", call).backend == "xpu"


def test_mps_selected_when_device_faked(fake):
    fake.setattr(torch.backends.mps, "is_built", lambda: True)
    fake.setattr(torch.backends.mps, "is_available", lambda: False)
    _reregister("mps")
    assert "no MPS device" in _verdict("gemv_4bit", "mps", "mps")
    fake.setattr(torch.backends.mps, "is_available", lambda: True)
    _reregister("mps")
    assert _verdict("gemv_4bit", "mps", "mps") == "selected"
    assert registry.get_kernel("optimizer_step", "mps", "mps").kind == "vectorized"


def test_gaudi_selected_when_device_faked(fake):
    fake.setattr(torch, "hpu", types.SimpleNamespace(is_available=lambda: False), raising=False)
    _reregister("gaudi")
    assert "no HPU device" in _verdict("int8_mm_outlier", "hpu", "gaudi")
    fake.setattr(torch, "hpu", types.SimpleNamespace(is_available=lambda: True), raising=False)
    _reregister("gaudi")
    assert _verdict("int8_mm_outlier", "hpu", "gaudi") == "selected"
    assert _verdict("int8_vectorwise_quant", "hpu", "gaudi") == "selected"
    gaudi_ops = {op for op in REF if any(k.backend == "gaudi" for k in registry.kernels(op, "hpu"))}
    assert gaudi_ops == {"int8_vectorwise_quant", "int8_mm_outlier"}


# --------------------------------------------------------------------------------------------------
# xpu / mps chunked kernels on CPU tensors vs the reference
# --------------------------------------------------------------------------------------------------

SMALL = 1000  # max elements per chunk: forces several chunks on the sizes below
K_CHUNKED = make_kernels(SMALL)


class _Float64Watch(TorchDispatchMode):
    """Records every op that produces or consumes a float64 tensor."""

    def __init__(self):
        super().__init__()
        self.hits: list[str] = []

    def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        flat = [*args, *(kwargs or {}).values(), *(out if isinstance(out, (tuple, list)) else [out])]
        if any(isinstance(x, torch.Tensor) and x.dtype == torch.float64 for x in flat):
            self.hits.append(str(func))
        return out


def _run(op, *args, watch=True):
    """The chunked kernel's result, asserting it computed nothing in float64 (MPS / Arc have none)."""
    with _Float64Watch() as w:
        out = K_CHUNKED[op](*args)
    assert not (watch and w.hits), f"{op} used float64 in {w.hits}"
    return out


def test_aligned_chunk():
    assert aligned_chunk(1000, 256) == 768 and aligned_chunk(100, 256) == 256 and aligned_chunk(4096, 64) == 4096


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, blocksize", [(4099, 64), (2311, 256), (997, 128)])
def test_chunked_blockwise_bit_exact(dtype, n, blocksize):
    A = (torch.randn(n) * 3).to(dtype)
    code = code_books.dynamic_map()
    codes, absmax = _run("quantize_blockwise", A, code, blocksize)
    ref_codes, ref_absmax = REF["quantize_blockwise"](A, code, blocksize)
    assert torch.equal(codes, ref_codes) and torch.equal(absmax, ref_absmax)
    out = _run("dequantize_blockwise", codes, absmax, code, blocksize, dtype)
    assert torch.equal(out, REF["dequantize_blockwise"](codes, absmax, code, blocksize, dtype))
    # against float64 math: |x - dequant(x)| bounded by half the largest code gap times absmax
    err = (out.double() - A.double()).abs().reshape(-1)
    bound = absmax.double().repeat_interleave(blocksize)[:n] * 0.07 + 1e-2 * A.double().abs().reshape(-1)
    assert bool((err <= bound).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("shape, blocksize", [((37, 61), 64), ((2001,), 32), ((3, 5, 211), 256)])
def test_chunked_4bit_bit_exact(dtype, quant_type, shape, blocksize):
    A = torch.randn(shape).to(dtype)
    packed, absmax = _run("quantize_4bit", A, blocksize, quant_type, torch.uint8)
    ref_packed, ref_absmax = REF["quantize_4bit"](A, blocksize, quant_type, torch.uint8)
    assert torch.equal(packed, ref_packed) and torch.equal(absmax, ref_absmax)
    out = _run("dequantize_4bit", packed.reshape(-1), absmax, blocksize, quant_type, list(shape), dtype)
    ref = REF["dequantize_4bit"](packed.reshape(-1), absmax, blocksize, quant_type, list(shape), dtype)
    assert torch.equal(out, ref) and out.shape == shape


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("N, K, blocksize", [(67, 96, 64), (41, 77, 32), (13, 250, 128)])
def test_chunked_gemv_4bit(dtype, nested, N, K, blocksize):
    W = torch.randn(N, K)
    packed, absmax = REF["quantize_4bit"](W, blocksize, "nf4", torch.uint8)
    A = torch.randn(1 if N != 41 else 3, K).to(dtype)  # 41 rows: an A of 3 rows
    code = code_books.code_4bit("nf4")
    extra: tuple = ()
    if nested:
        offset = absmax.mean()
        q, nested_absmax = REF["quantize_blockwise"](absmax - offset, code_books.dynamic_map(), 256)
        absmax, extra = q, (nested_absmax, code_books.dynamic_map(), offset.reshape(1), 256)
    args = (A, packed.reshape(-1), [N, K], absmax, code, blocksize, *extra)
    out = _run("gemv_4bit", *args)
    ref = REF["gemv_4bit"](*args)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    assert out.shape == ref.shape == (A.shape[0], N) and out.dtype == dtype
    torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol * K**0.5)
    # float64 math on the dequantized weight
    Wd = REF["dequantize_4bit"](packed.reshape(-1), REF["gemv_4bit"].__globals__["nested_absmax_values"](
        *args[3:4], *extra[:3], 256) if nested else absmax, blocksize, "nf4", [N, K], torch.float32)  # fmt: skip
    exact = A.double() @ Wd.double().T
    torch.testing.assert_close(out.double(), exact, rtol=tol, atol=tol * K**0.5)


def _optimizer_args(optimizer: str, n: int, eight_bit: bool, dtype: torch.dtype, blocksize: int, max_unorm: float):
    torch.manual_seed(hash((optimizer, n, eight_bit)) % 2**31)
    p, g = torch.randn(n).to(dtype), (torch.randn(n) * 0.1).to(dtype)
    ns1 = 2 if optimizer == "ademamix" else 1
    two = optimizer in TWO_STATE_OPTIMIZERS
    s1 = torch.randn(ns1, n) * 0.01
    if optimizer in ("rmsprop", "adagrad"):  # their one state is a second moment: never negative
        s1 = s1.abs()
    s2 = torch.rand(n) * 1e-3 if two else None
    q1, q2 = code_books.dynamic_map(True), code_books.dynamic_map(False)
    a1 = a2 = None
    if eight_bit:
        rows = [quantize_flat(r, q1, blocksize) for r in s1]
        s1, a1 = torch.stack([c for c, _ in rows]), torch.stack([a for _, a in rows])
        if two:
            s2, a2 = quantize_flat(s2, q2, blocksize)
        if ns1 == 1:
            a1 = a1[0]
    s1 = s1.reshape((2, n) if ns1 == 2 else (n,))
    return [optimizer, p, g, s1, s2, a1, a2, q1 if eight_bit else None, q2 if eight_bit else None,
            1e-3, 0.9, 0.99, 0.999, 5.0, 1e-8, 0.01, 3, 0.7, max_unorm, blocksize]  # fmt: skip


def _clone(args):
    return [a.clone() if isinstance(a, torch.Tensor) else a for a in args]


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("eight_bit", [False, True])
def test_chunked_optimizer_matches_reference(optimizer, eight_bit):
    for dtype, max_unorm in ((torch.float32, 0.0), (torch.bfloat16, 0.0), (torch.float16, 0.02)):
        args = _optimizer_args(optimizer, 2311, eight_bit, dtype, 256, max_unorm)
        mine, ref = _clone(args), _clone(args)
        _run("optimizer_step", *mine)
        REF["optimizer_step"](*ref)
        for i in (1, 3, 4, 5, 6):  # p, state1, state2, absmax1, absmax2
            if ref[i] is None:
                continue
            if max_unorm == 0:  # the same float32 operations: identical
                assert torch.equal(mine[i], ref[i]), (optimizer, eight_bit, dtype, i)
            elif ref[i].dtype == torch.uint8:  # norms summed per chunk: a code may move by one step
                assert (mine[i].int() - ref[i].int()).abs().max() <= 1
            else:
                torch.testing.assert_close(mine[i], ref[i], rtol=2e-3, atol=1e-6)
        assert not torch.equal(mine[1], args[1]), "the parameter did not move"


def test_chunked_optimizer_multi():
    groups = [_optimizer_args("adamw", n, True, torch.float32, 128, 0.0) for n in (1500, 31, 2049)]
    lists = [[g[i] for g in groups] for i in (1, 2, 3, 4, 5, 6)]
    fixed = groups[0][7:]
    mine, ref = [[t.clone() for t in lst] for lst in lists], [[t.clone() for t in lst] for lst in lists]
    _run("optimizer_step_multi", "adamw", *mine, *fixed)
    REF["optimizer_step_multi"]("adamw", *ref, *fixed)
    for a, b in zip(mine, ref):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_reference_path_below_the_chunk_limit_is_the_reference():
    A = torch.randn(300)
    assert torch.equal(make_kernels(1 << 20)["quantize_4bit"](A, 64, "fp4", torch.uint8)[0],
                       REF["quantize_4bit"](A, 64, "fp4", torch.uint8)[0])  # fmt: skip


# --------------------------------------------------------------------------------------------------
# gaudi static-shape kernels on CPU tensors vs the reference
# --------------------------------------------------------------------------------------------------


def _with_outliers(rows: int, K: int, dtype: torch.dtype) -> torch.Tensor:
    A = torch.randn(rows, K)
    A[:, torch.tensor([3, K // 2, K - 1])] *= 40  # outlier columns
    A[rows // 2, 7] = 50.0  # a single outlier entry makes column 7 an outlier column
    return A.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_gaudi_vectorwise_quant_matches_reference(dtype, threshold):
    A = _with_outliers(37, 131, dtype).reshape(37, 1, 131)
    got = static_shapes.int8_vectorwise_quant(A, threshold)
    ref = REF["int8_vectorwise_quant"](A, threshold)
    for x, y in zip(got, ref):
        assert x.dtype == y.dtype and torch.equal(x, y)
    if threshold:
        assert {3, 7, 65, 130} <= set(got[2].tolist())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_gaudi_mm_outlier_matches_reference_without_dynamic_shapes(dtype, threshold, dispatch_log):
    A = _with_outliers(29, 131, dtype)
    W = torch.randn(53, 131)
    CB, SCB, _ = REF["int8_vectorwise_quant"](W, 0.0)
    bias = torch.randn(53).to(dtype)
    with dispatch_log() as log:
        out = static_shapes.int8_mm_outlier(A, CB, SCB, threshold, bias)
    assert not [op for op in log.ops if "nonzero" in op or "index" in op], log.ops
    ref = REF["int8_mm_outlier"](A, CB, SCB, threshold, bias)
    tol = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    assert out.dtype == dtype and out.shape == ref.shape
    torch.testing.assert_close(out.float(), ref.float(), rtol=tol, atol=tol * 10)
    # float64 math: outlier columns in full precision, the rest within int8 quantization error
    exact = A.double() @ (CB.double() * SCB.double()[:, None] / 127).T + bias.double()
    assert (out.double() - exact).abs().max() < 0.05 * exact.abs().max()


def test_cuda_gemv_serves_one_row_only():
    """The cuda gemv kernel is a batch-1 kernel: more rows are left to the next kernel (dequantize + matmul in
    matmul_4bit, or the reference), with the reason given."""
    from bnb_api.backends.cuda import kernels

    assert kernels.SUPPORTS["gemv_4bit"](A=torch.empty(1, 1, 64)) is True
    assert "3 rows" in kernels.SUPPORTS["gemv_4bit"](A=torch.empty(3, 64))

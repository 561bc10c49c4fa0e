"""cpu quantization kernels: Python wrappers over the native ``_quant_lib`` (quant*.c, built with cffi).

Ops served (priority :data:`bnb_api.backends.cpu.PRIORITY`, kind ``native``, device type ``cpu``):
quantize/dequantize_blockwise, quantize/dequantize_4bit, gemv_4bit, int8_vectorwise_quant,
int8_linear_matmul, int8_mm_dequant and the batch-1 int8_mm_outlier. Every wrapper re-checks what the
C code relies on (device, dtype, contiguity, sizes), passes every buffer length to C and checks the
return code; results have exactly the dtypes, shapes and strides of the reference.

The native library loads lazily at the first call. The instruction set is chosen at load (AVX-512,
AVX2 or portable C); ``BNB_API_CPU_ISA=generic|avx2|avx512`` or :func:`forced_isa` caps it (tests use
the portable ``generic`` path as the oracle of the SIMD paths).
"""

from __future__ import annotations

import math
import threading

import torch

from bnb_api.backends.cpu.native import NativeFamily
from bnb_api.backends.cpu.output_pool import POOL_ENV, POOL_MIN_BYTES, OutputPool
from bnb_api.core import codes as code_books
from bnb_api.core.errors import BnbUnavailableError, BnbValueError
from bnb_api.core.reference.fourbit import sorted_code_4bit

ISA_NAMES = ("generic", "avx2", "avx512")
INT8_NATIVE_MAX_ROWS = 64
"""int8_linear_matmul: up to this many rows of A the VNNI kernel runs, above it ``torch._int_mm``
(oneDNN, compute-bound regime). Measured with 4096 x 4096 weights (benchmarks/bench_cpu_quant.py shows
both): the VNNI kernel is faster up to 64 rows (1.2x there, 2.7x at 16 rows, where oneDNN pads to a
larger tile) and oneDNN from 128 rows on (1.1x there, 1.8x at 512)."""

_NATIVE = NativeFamily("quant", "_quant_lib", "build_quant.py", "bnbq", ISA_NAMES)
_load = _NATIVE.load
load_error = _NATIVE.load_error
set_isa = _NATIVE.set_isa
isa = _NATIVE.isa
forced_isa = _NATIVE.forced_isa


def cpu_features() -> dict:
    """Build and CPU features of the quant kernels (for ``python -m bnb_api info``)."""
    try:
        _, lib = _load()
    except BnbUnavailableError as exc:
        return {"quant_lib": str(exc)}
    flags = lib.bnbq_cpu_flags()
    names = ("AVX2", "FMA", "F16C", "AVX512F", "AVX512BW", "AVX512VL", "AVX512DQ", "AVX512VNNI", "AVX512BF16",
             "AVX512FP16", "AVX512VBMI")  # fmt: skip
    return {
        "quant_isa_detected": _NATIVE.isa_detected(),
        "quant_isa_active": _NATIVE.isa(),
        "cpu_flags": " ".join(n.lower() for n in names if flags & getattr(lib, f"BNBQ_CPU_{n}")) or "none",
        "openmp_threads": lib.bnbq_openmp_max_threads(),
        "parallel_min_work": lib.BNBQ_PARALLEL_MIN_WORK,
        "output_pool": f"outputs >= {POOL_MIN_BYTES >> 20} MiB reuse freed blocks; up to "
        f"{_output_pool().limit >> 20} MiB idle ({POOL_ENV})",
    }


# --------------------------------------------------------------------------------------------------
# argument plumbing
# --------------------------------------------------------------------------------------------------


_DTYPE_CODES: dict[torch.dtype, int] = {}


def _dtype_code(lib, dtype: torch.dtype, op: str, name: str) -> int:
    if not _DTYPE_CODES:
        _DTYPE_CODES.update({torch.float32: lib.BNBQ_F32, torch.float16: lib.BNBQ_F16, torch.bfloat16: lib.BNBQ_BF16})
    code = _DTYPE_CODES.get(dtype)
    if code is None:
        raise BnbValueError(f"{op}: {name}.dtype={dtype} is not supported by the cpu kernels; expected float32/16/bf16")
    return code


def _ptr(ffi, t: torch.Tensor | None, ctype: str = "void *"):
    return ffi.NULL if t is None else ffi.cast(ctype, t.data_ptr())


def _need(op: str, name: str, t: torch.Tensor, dtypes: tuple[torch.dtype, ...], numel: int | None = None) -> None:
    """``t`` is a contiguous cpu tensor of one of ``dtypes`` (and ``numel`` elements when given)."""
    if (
        isinstance(t, torch.Tensor) and t.is_cpu and t.dtype in dtypes and t.is_contiguous()
        and (numel is None or t.numel() == numel)
    ):  # fmt: skip
        return  # the common case, checked in one go (every batch-1 decoding call passes here)
    if not isinstance(t, torch.Tensor):
        raise BnbValueError(f"{op}: {name} must be a tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise BnbValueError(f"{op}: {name} is on {t.device}; the cpu kernels need cpu tensors")
    if t.dtype not in dtypes:
        raise BnbValueError(f"{op}: {name}.dtype={t.dtype}; expected one of {dtypes}")
    if not t.is_contiguous():
        raise BnbValueError(f"{op}: {name} must be contiguous")
    if numel is not None and t.numel() != numel:
        raise BnbValueError(f"{op}: {name} has {t.numel()} elements, but should have {numel}")


def _check_rc(lib, rc: int, op: str) -> None:
    if rc == lib.BNBQ_OK:
        return
    if rc == lib.BNBQ_ENOMEM:
        raise MemoryError(f"{op}: the cpu kernel could not allocate its scratch memory")
    raise BnbValueError(f"{op}: the cpu kernel rejected its arguments (code {rc}); sizes or dtypes are inconsistent")


def _threads() -> int:
    return max(1, torch.get_num_threads())


_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


_POOL: list = []
_POOL_LOCK = threading.Lock()


def _output_pool():
    """The quant family's :class:`OutputPool` (created with the native library)."""
    if not _POOL:
        ffi, lib = _load()
        with _POOL_LOCK:
            if not _POOL:
                _POOL.append(OutputPool(ffi, lib))
    return _POOL[0]


def _new_output(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialized output tensor; large ones reuse pooled memory (see output_pool.py)."""
    if math.prod(shape) * dtype.itemsize < POOL_MIN_BYTES:
        return torch.empty(shape, dtype=dtype)
    return _output_pool().empty(shape, dtype)


def empty_cache() -> int:
    """Return the idle blocks of the cpu output pool to the OS; the number of bytes freed."""
    return _output_pool().empty_cache() if _POOL else 0


def pool_stats() -> dict:
    """Idle bytes, limit, hits and misses of the cpu output pool."""
    return _output_pool().stats()


def _nblocks(n: int, blocksize: int) -> int:
    return -(-n // blocksize)


def _blocksize_reason(blocksize: int, minimum: int) -> str | None:
    if not isinstance(blocksize, int) or blocksize < minimum or blocksize & (blocksize - 1):
        return f"blocksize={blocksize!r}: the cpu kernels take powers of two >= {minimum}"
    return None


def _on_cpu(**tensors: torch.Tensor | None) -> bool | str:
    for name, t in tensors.items():
        if t is not None and not t.is_cpu:
            return f"{name} is on {t.device}"
    return True


# --------------------------------------------------------------------------------------------------
# 8-bit blockwise
# --------------------------------------------------------------------------------------------------


def quantize_blockwise_cpu(A: torch.Tensor, code: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``bnb_api::quantize_blockwise``: uint8 codes of ``A.shape`` and float32 absmax (n_blocks,)."""
    op = "quantize_blockwise"
    ffi, lib = _load()
    _need(op, "A", A, _FLOATS)
    _need(op, "code", code, (torch.float32,), 256)
    n = A.numel()
    nb = _nblocks(n, blocksize)
    out = _new_output(A.shape, torch.uint8)
    absmax = _new_output((nb,), torch.float32)
    rc = lib.bnbq_quantize_blockwise(_ptr(ffi, A), _dtype_code(lib, A.dtype, op, "A"), n, _ptr(ffi, code, "float *"),
                                     code.numel(), blocksize, _ptr(ffi, out, "uint8_t *"), out.numel(),
                                     _ptr(ffi, absmax, "float *"), nb, _threads())  # fmt: skip
    _check_rc(lib, rc, op)
    return out, absmax


def dequantize_blockwise_cpu(
    A: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int, dtype: torch.dtype
) -> torch.Tensor:
    """``bnb_api::dequantize_blockwise``: ``code[A] * absmax[block]`` as ``dtype`` of ``A.shape``."""
    op = "dequantize_blockwise"
    ffi, lib = _load()
    n = A.numel()
    _need(op, "A", A, (torch.uint8,))
    _need(op, "absmax", absmax, (torch.float32,), _nblocks(n, blocksize))
    _need(op, "code", code, (torch.float32,), 256)
    out = _new_output(A.shape, dtype)
    rc = lib.bnbq_dequantize_blockwise(_ptr(ffi, A, "uint8_t *"), n, _ptr(ffi, absmax, "float *"), absmax.numel(),
                                       _ptr(ffi, code, "float *"), 256, blocksize, _ptr(ffi, out),
                                       _dtype_code(lib, dtype, op, "dtype"), out.numel(), _threads())  # fmt: skip
    _check_rc(lib, rc, op)
    return out


def supports_quantize_blockwise(A, code, blocksize) -> bool | str:
    """Any cpu float tensor, any 256-entry code book, power-of-two blocksize >= 64."""
    return _blocksize_reason(blocksize, 64) or _on_cpu(A=A, code=code)


def supports_dequantize_blockwise(A, absmax, code, blocksize, dtype) -> bool | str:
    """Any cpu tensor, power-of-two blocksize >= 64."""
    return _blocksize_reason(blocksize, 64) or _on_cpu(A=A, absmax=absmax, code=code)


# --------------------------------------------------------------------------------------------------
# 4-bit
# --------------------------------------------------------------------------------------------------


def quantize_4bit_cpu(
    A: torch.Tensor, blocksize: int, quant_type: str, quant_storage: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """``bnb_api::quantize_4bit``: packed bytes viewed as ``quant_storage`` (bytes/itemsize, 1), absmax."""
    op = "quantize_4bit"
    ffi, lib = _load()
    _need(op, "A", A, _FLOATS)
    values, codes = sorted_code_4bit(quant_type, "cpu")
    n = A.numel()
    nb = _nblocks(n, blocksize)
    packed = _new_output(((n + 1) // 2,), torch.uint8)
    absmax = _new_output((nb,), torch.float32)
    rc = lib.bnbq_quantize_4bit(_ptr(ffi, A), _dtype_code(lib, A.dtype, op, "A"), n, _ptr(ffi, values, "float *"),
                                _ptr(ffi, codes, "uint8_t *"), 16, blocksize, _ptr(ffi, packed, "uint8_t *"),
                                packed.numel(), _ptr(ffi, absmax, "float *"), nb, _threads())  # fmt: skip
    _check_rc(lib, rc, op)
    return packed.view(quant_storage).reshape(-1, 1), absmax


def dequantize_4bit_cpu(
    A: torch.Tensor, absmax: torch.Tensor, blocksize: int, quant_type: str, shape: list[int], dtype: torch.dtype
) -> torch.Tensor:
    """``bnb_api::dequantize_4bit``: ``dtype`` tensor of ``shape`` from packed bytes ``A``."""
    op = "dequantize_4bit"
    ffi, lib = _load()
    n = 1
    for s in shape:
        n *= s
    A8 = A.view(torch.uint8) if A.dtype != torch.uint8 and A.is_contiguous() else A
    _need(op, "A", A8, (torch.uint8,), (n + 1) // 2)
    _need(op, "absmax", absmax, (torch.float32,), _nblocks(n, blocksize))
    code = code_books.code_4bit(quant_type, "cpu")
    out = _new_output(tuple(shape), dtype)
    rc = lib.bnbq_dequantize_4bit(_ptr(ffi, A8, "uint8_t *"), A8.numel(), _ptr(ffi, absmax, "float *"), absmax.numel(),
                                  _ptr(ffi, code, "float *"), 16, blocksize, n, _ptr(ffi, out),
                                  _dtype_code(lib, dtype, op, "dtype"), out.numel(), _threads())  # fmt: skip
    _check_rc(lib, rc, op)
    return out


def supports_quantize_4bit(A, blocksize, quant_type, quant_storage) -> bool | str:
    """NF4/FP4 on cpu tensors, any contract blocksize (powers of two 32..4096)."""
    return _blocksize_reason(blocksize, 2) or _on_cpu(A=A)


def supports_dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype) -> bool | str:
    """NF4/FP4 on cpu tensors, any contract blocksize."""
    return _blocksize_reason(blocksize, 2) or _on_cpu(A=A, absmax=absmax)


def _ok(t, dtype: torch.dtype, numel: int) -> bool:
    """A contiguous cpu tensor of ``dtype`` with ``numel`` elements (what the C kernels are given)."""
    return isinstance(t, torch.Tensor) and t.dtype == dtype and t.is_cpu and t.is_contiguous() and t.numel() == numel


def _gemv_tensors_ok(A, a_numel, B8, b_numel, absmax, nb, code, nested_absmax, nested_code, nested_offset,
                     nested_blocksize) -> bool:  # fmt: skip
    """Every tensor of a gemv call as the kernel needs it, in one pass (a decoding step makes one call per layer);
    False sends the call through the per-argument checks, which name the bad one."""
    if not (isinstance(A, torch.Tensor) and A.dtype in _FLOATS and A.is_cpu and A.is_contiguous()):
        return False
    if A.numel() != a_numel or not _ok(B8, torch.uint8, b_numel) or not _ok(code, torch.float32, 16):
        return False
    if nested_absmax is None:
        return _ok(absmax, torch.float32, nb)
    return (
        _ok(absmax, torch.uint8, nb)
        and _ok(nested_absmax, torch.float32, _nblocks(nb, nested_blocksize))
        and _ok(nested_code, torch.float32, 256)
        and _ok(nested_offset, torch.float32, 1)
    )


def gemv_4bit_cpu(
    A: torch.Tensor, B: torch.Tensor, shapeB: list[int], absmax: torch.Tensor, code: torch.Tensor, blocksize: int,
    nested_absmax: torch.Tensor | None = None, nested_code: torch.Tensor | None = None,
    nested_offset: torch.Tensor | None = None, nested_blocksize: int = 256,
) -> torch.Tensor:  # fmt: skip
    """``bnb_api::gemv_4bit``: ``A @ dequant(B).T``, fused (the weight is never materialized), all rows of A at once.

    Returns ``A.dtype`` of shape ``(*A.shape[:-1], N)``, accumulated in float32. On the AVX-512 paths the weight is
    read and decoded once for every row of A (8 rows per pass over a weight row); the batched kernels may sum in
    another order than a one-row call on the same row (within float rounding).
    """
    op = "gemv_4bit"
    ffi, lib = _load()
    N, K = shapeB
    rows = math.prod(A.shape[:-1])
    B8 = B.view(torch.uint8) if B.dtype != torch.uint8 and B.is_contiguous() else B
    nb = _nblocks(N * K, blocksize)
    if not _gemv_tensors_ok(A, rows * K, B8, (N * K + 1) // 2, absmax, nb, code, nested_absmax, nested_code,
                            nested_offset, nested_blocksize):  # fmt: skip
        _need(op, "A", A, _FLOATS, rows * K)  # the one that fails raises, naming its argument
        _need(op, "B", B8, (torch.uint8,), (N * K + 1) // 2)
        _need(op, "code", code, (torch.float32,), 16)
        if nested_absmax is None:
            _need(op, "absmax", absmax, (torch.float32,), nb)
        else:
            _need(op, "absmax", absmax, (torch.uint8,), nb)
            _need(op, "nested_absmax", nested_absmax, (torch.float32,), _nblocks(nb, nested_blocksize))
            if nested_code is None or nested_offset is None:
                raise BnbValueError(f"{op}: nested_absmax needs nested_code and nested_offset")
            _need(op, "nested_code", nested_code, (torch.float32,), 256)
            _need(op, "nested_offset", nested_offset, (torch.float32,), 1)
    out = _new_output((*A.shape[:-1], N), A.dtype)
    if nested_absmax is None:
        am, amq, nested, ncode, offset, nlen = _ptr(ffi, absmax, "float *"), ffi.NULL, ffi.NULL, ffi.NULL, ffi.NULL, 0
    else:
        am, amq = ffi.NULL, _ptr(ffi, absmax, "uint8_t *")
        nested, ncode = _ptr(ffi, nested_absmax, "float *"), _ptr(ffi, nested_code, "float *")
        offset, nlen = _ptr(ffi, nested_offset, "float *"), nested_absmax.numel()
    dt, threads = _dtype_code(lib, A.dtype, op, "A"), _threads()
    b8, cb = _ptr(ffi, B8, "uint8_t *"), _ptr(ffi, code, "float *")
    rc = lib.bnbq_gemv_4bit(_ptr(ffi, A, "void *"), dt, rows, K, b8, B8.numel(), N, am, amq, nb, cb, 16, blocksize,
                            nested, nlen, ncode, 256 if nlen else 0, offset, nested_blocksize, _ptr(ffi, out, "void *"),
                            rows * N, threads)  # fmt: skip
    _check_rc(lib, rc, op)
    return out


def bind_gemv_4bit(call: dict):
    """``gemv_4bit_cpu`` with the weight of ``call`` (a checked call by name) fixed: the weight-side checks and
    pointers done once; returns a function of one contiguous row ``A`` of ``call['A']``'s dtype (other inputs go
    through :func:`gemv_4bit_cpu`), or None when the call is not of that form."""
    A, B, (N, K) = call["A"], call["B"], call["shapeB"]
    absmax, code, bs = call["absmax"], call["code"], call["blocksize"]
    nested_absmax, nested_code, nested_offset = call["nested_absmax"], call["nested_code"], call["nested_offset"]
    nbs = call["nested_blocksize"]
    B8 = B.view(torch.uint8) if B.dtype != torch.uint8 and B.is_contiguous() else B
    nb = _nblocks(N * K, bs)
    if A.numel() != K or not _gemv_tensors_ok(A, K, B8, (N * K + 1) // 2, absmax, nb, code, nested_absmax,
                                              nested_code, nested_offset, nbs):  # fmt: skip
        return None
    ffi, lib = _load()
    dtype, dt, shape, row_shape = A.dtype, _dtype_code(lib, A.dtype, "gemv_4bit", "A"), (*A.shape[:-1], N), A.shape
    nested = nested_absmax is not None
    fixed = (
        _ptr(ffi, B8, "uint8_t *"), B8.numel(), N, ffi.NULL if nested else _ptr(ffi, absmax, "float *"),
        _ptr(ffi, absmax, "uint8_t *") if nested else ffi.NULL, nb, _ptr(ffi, code, "float *"), 16, bs,
        _ptr(ffi, nested_absmax, "float *"), nested_absmax.numel() if nested else 0, _ptr(ffi, nested_code, "float *"),
        256 if nested else 0, _ptr(ffi, nested_offset, "float *"), nbs,
    )  # fmt: skip
    held = (B8, absmax, code, nested_absmax, nested_code, nested_offset)  # the pointers stay theirs
    gemv, cast, empty = lib.bnbq_gemv_4bit, ffi.cast, torch.empty

    def run(a: torch.Tensor, held=held) -> torch.Tensor:
        if not (a.dtype == dtype and a.is_cpu and a.is_contiguous() and a.numel() == K):
            return gemv_4bit_cpu(a, *list(call.values())[1:])
        out = empty(shape if a.shape == row_shape else (*a.shape[:-1], N), dtype=dtype)  # any one-row shape
        rc = gemv(cast("void *", a.data_ptr()), dt, 1, K, *fixed, cast("void *", out.data_ptr()), N, _threads())
        _check_rc(lib, rc, "gemv_4bit")
        return out

    return run


def supports_gemv_4bit(A, B, shapeB, absmax, code, blocksize, nested_absmax=None, nested_code=None,
                       nested_offset=None, nested_blocksize=256) -> bool | str:  # fmt: skip
    """Any layout (fast SIMD path when K % blocksize == 0); cpu tensors; power-of-two nested blocksize."""
    if nested_absmax is not None and _blocksize_reason(nested_blocksize, 2):
        return f"nested_blocksize={nested_blocksize}: the cpu kernel needs a power of two"
    return _blocksize_reason(blocksize, 2) or _on_cpu(A=A, B=B, absmax=absmax, code=code)


# --------------------------------------------------------------------------------------------------
# LLM.int8()
# --------------------------------------------------------------------------------------------------


def int8_vectorwise_quant_cpu(
    A: torch.Tensor, threshold: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``bnb_api::int8_vectorwise_quant``: (int8 codes of A.shape, float32 row absmax, int64 outlier columns)."""
    op = "int8_vectorwise_quant"
    ffi, lib = _load()
    _need(op, "A", A, _FLOATS)
    K = A.shape[-1]
    rows = A.numel() // K
    codes = _new_output(A.shape, torch.int8)
    row_absmax = _new_output((rows,), torch.float32)
    flags = _new_output((K,), torch.uint8)
    rc = lib.bnbq_int8_vectorwise_quant(_ptr(ffi, A), _dtype_code(lib, A.dtype, op, "A"), rows, K, float(threshold),
                                        _ptr(ffi, codes, "int8_t *"), codes.numel(), _ptr(ffi, row_absmax, "float *"),
                                        rows, _ptr(ffi, flags, "uint8_t *"), K, _threads())  # fmt: skip
    _check_rc(lib, rc, op)
    return codes, row_absmax, torch.nonzero(flags).reshape(-1)


def supports_int8_vectorwise_quant(A, threshold=0.0) -> bool | str:
    """cpu tensors with at least one column (K == 0 is left to the reference)."""
    if A.shape[-1] == 0:
        return "K == 0: the reference handles empty rows"
    return _on_cpu(A=A)


def _int8_mm_native(A2: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    op = "int8_linear_matmul"
    ffi, lib = _load()
    M, K = A2.shape
    N = B.shape[0]
    _need(op, "A", A2, (torch.int8,), M * K)
    _need(op, "B", B, (torch.int8,), N * K)
    out = _new_output((M, N), torch.int32)
    rc = lib.bnbq_int8_linear_matmul(_ptr(ffi, A2, "int8_t *"), M, K, _ptr(ffi, B, "int8_t *"), N,
                                     _ptr(ffi, out, "int32_t *"), out.numel(), _threads())  # fmt: skip
    _check_rc(lib, rc, op)
    return out


def int8_linear_matmul_cpu(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """``bnb_api::int8_linear_matmul``: exact int32 ``A @ B.T`` (..., N).

    Up to :data:`INT8_NATIVE_MAX_ROWS` rows the native VNNI kernel (memory-bound regime), above it
    ``torch._int_mm`` (oneDNN, compute-bound regime); both are exact.
    """
    K = A.shape[-1]
    N = B.shape[0]
    A2 = A.reshape(math.prod(A.shape[:-1]), K)
    # torch._int_mm on cpu returns wrong sums unless K and N are multiples of 8 (found by the conformance suite)
    if A2.shape[0] <= INT8_NATIVE_MAX_ROWS or K % 8 or N % 8 or K == 0 or N == 0:
        out = _int8_mm_native(A2, B)
    else:
        out = torch._int_mm(A2, B.t())
    return out.view(*A.shape[:-1], N)


def supports_int8_linear_matmul(A, B) -> bool | str:
    """cpu tensors of any shape."""
    return _on_cpu(A=A, B=B)


def int8_mm_dequant_cpu(
    A: torch.Tensor, row_stats: torch.Tensor, col_stats: torch.Tensor, dtype: torch.dtype | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """``bnb_api::int8_mm_dequant``: ``(A * (row * col)) / 127^2 + bias`` in float32, as ``dtype`` (fp16)."""
    op = "int8_mm_dequant"
    ffi, lib = _load()
    N = A.shape[-1]
    M = A.numel() // N if N else 0
    _need(op, "A", A, (torch.int32,))
    _need(op, "row_stats", row_stats, (torch.float32,), M)
    _need(op, "col_stats", col_stats, (torch.float32,), N)
    dtype = dtype or torch.float16
    if bias is not None:
        _need(op, "bias", bias, _FLOATS, N)
    out = _new_output(A.shape, dtype)
    rc = lib.bnbq_int8_mm_dequant(_ptr(ffi, A, "int32_t *"), M, N, _ptr(ffi, row_stats, "float *"), M,
                                  _ptr(ffi, col_stats, "float *"), N, _ptr(ffi, bias),
                                  0 if bias is None else _dtype_code(lib, bias.dtype, op, "bias"),
                                  0 if bias is None else N, _ptr(ffi, out), _dtype_code(lib, dtype, op, "dtype"),
                                  out.numel(), _threads())  # fmt: skip
    _check_rc(lib, rc, op)
    return out


def supports_int8_mm_dequant(A, row_stats, col_stats, dtype=None, bias=None) -> bool | str:
    """cpu tensors of any shape."""
    return _on_cpu(A=A, row_stats=row_stats, col_stats=col_stats, bias=bias)


def int8_mm_outlier_cpu(A: torch.Tensor, CB: torch.Tensor, SCB: torch.Tensor, threshold: float,
                        bias: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """``bnb_api::int8_mm_outlier`` for one row of ``A``, fused: quantize the row, int8 VNNI gemv against
    ``CB``, dequantize with bias, add the outlier columns in float32. Returns ``A.dtype`` (..., N)."""
    op = "int8_mm_outlier"
    ffi, lib = _load()
    N, K = CB.shape
    _need(op, "A", A, _FLOATS, K)
    _need(op, "CB", CB, (torch.int8,), N * K)
    _need(op, "SCB", SCB, (torch.float32,), N)
    if bias is not None:
        _need(op, "bias", bias, _FLOATS, N)
    out = _new_output((*A.shape[:-1], N), A.dtype)
    rc = lib.bnbq_int8_mm_outlier_row(_ptr(ffi, A), _dtype_code(lib, A.dtype, op, "A"), K, _ptr(ffi, CB, "int8_t *"),
                                      N, _ptr(ffi, SCB, "float *"), N, float(threshold), _ptr(ffi, bias),
                                      0 if bias is None else _dtype_code(lib, bias.dtype, op, "bias"),
                                      0 if bias is None else N, _ptr(ffi, out), out.numel(), _threads())  # fmt: skip
    _check_rc(lib, rc, op)
    return out


def bind_int8_mm_outlier(call: dict):
    """``int8_mm_outlier_cpu`` with the weight of ``call`` (a checked call by name) fixed: its checks and pointers
    done once; returns a function of one contiguous row ``A`` of ``call['A']``'s dtype and shape (others go through
    :func:`int8_mm_outlier_cpu`), or None when the call is not of that form."""
    A, CB, SCB, threshold, bias = call["A"], call["CB"], call["SCB"], call["threshold"], call["bias"]
    N, K = CB.shape
    if not (isinstance(A, torch.Tensor) and A.dtype in _FLOATS and A.is_cpu and A.is_contiguous() and A.numel() == K):
        return None
    if not (_ok(CB, torch.int8, N * K) and _ok(SCB, torch.float32, N)):
        return None
    if bias is not None and not (bias.dtype in _FLOATS and _ok(bias, bias.dtype, N)):
        return None
    ffi, lib = _load()
    dtype, row_shape, shape = A.dtype, A.shape, (*A.shape[:-1], N)
    dt = _dtype_code(lib, dtype, "int8_mm_outlier", "A")
    bias_dt = 0 if bias is None else _dtype_code(lib, bias.dtype, "int8_mm_outlier", "bias")
    fixed = (K, _ptr(ffi, CB, "int8_t *"), N, _ptr(ffi, SCB, "float *"), N, float(threshold), _ptr(ffi, bias), bias_dt,
             0 if bias is None else N)  # fmt: skip
    held = (CB, SCB, bias)  # the pointers stay theirs
    mm, cast, empty = lib.bnbq_int8_mm_outlier_row, ffi.cast, torch.empty

    def run(a: torch.Tensor, held=held) -> torch.Tensor:
        if not (a.dtype == dtype and a.is_cpu and a.is_contiguous() and a.numel() == K):
            return int8_mm_outlier_cpu(a, CB, SCB, threshold, bias)
        out = empty(shape if a.shape == row_shape else (*a.shape[:-1], N), dtype=dtype)  # any one-row shape
        rc = mm(cast("void *", a.data_ptr()), dt, *fixed, cast("void *", out.data_ptr()), N, _threads())
        _check_rc(lib, rc, "int8_mm_outlier")
        return out

    return run


def supports_int8_mm_outlier(A, CB, SCB, threshold, bias=None) -> bool | str:
    """Batch 1 only (one row of A); larger batches use the composite of the native primitives."""
    if A.numel() != CB.shape[1]:
        return f"fused path is batch-1 only (A has {A.numel() // max(CB.shape[1], 1)} rows)"
    return _on_cpu(A=A, CB=CB, SCB=SCB, bias=bias)


# --------------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------------

BINDS = {"gemv_4bit": bind_gemv_4bit, "int8_mm_outlier": bind_int8_mm_outlier}
"""Kernels that prepare a weight once for the batch-1 calls of a decoding loop (``registry.register_kernel``'s
``bind``)."""

KERNELS = {
    "quantize_blockwise": (quantize_blockwise_cpu, supports_quantize_blockwise),
    "dequantize_blockwise": (dequantize_blockwise_cpu, supports_dequantize_blockwise),
    "quantize_4bit": (quantize_4bit_cpu, supports_quantize_4bit),
    "dequantize_4bit": (dequantize_4bit_cpu, supports_dequantize_4bit),
    "gemv_4bit": (gemv_4bit_cpu, supports_gemv_4bit),
    "int8_vectorwise_quant": (int8_vectorwise_quant_cpu, supports_int8_vectorwise_quant),
    "int8_linear_matmul": (int8_linear_matmul_cpu, supports_int8_linear_matmul),
    "int8_mm_dequant": (int8_mm_dequant_cpu, supports_int8_mm_dequant),
    "int8_mm_outlier": (int8_mm_outlier_cpu, supports_int8_mm_outlier),
}


def register_kernels(backend: str) -> None:
    """Register every quant kernel of this module for ``backend`` on device type cpu (no native load)."""
    from bnb_api.backends.cpu import PRIORITY
    from bnb_api.core import registry

    for op, (fn, supports) in KERNELS.items():
        registry.register_kernel(op, backend, "cpu", fn, priority=PRIORITY, kind="native", supports=supports,
                                 bind=BINDS.get(op))  # fmt: skip

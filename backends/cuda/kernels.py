"""Python wrappers of the GPU kernel library: allocate outputs, pass raw pointers and torch's current
stream, check the return code. One :class:`GpuKernels` per library (CUDA build or ROCm build).

Every wrapper takes the op's arguments positionally in schema order, already checked by
:mod:`bnb_api.core.ops` (dtypes, shapes, blocksizes, contiguity, one device), so only the pointers are
derived here. No wrapper synchronizes the device, except ``int8_vectorwise_quant`` with a threshold,
whose outlier-column count sizes its output (``torch.nonzero``).
"""

from __future__ import annotations

import contextlib
import math

import torch

from bnb_api.core import codes as code_books
from bnb_api.core import registry
from bnb_api.core.checks import n_blocks
from bnb_api.core.ops import OPTIMIZERS, TWO_STATE_OPTIMIZERS
from bnb_api.core.reference.fourbit import sorted_code_4bit

from .library import NativeLibrary

MAX_GRID_Y = 65535
MATMUL_TILE = 64  # rows of A per CUDA block of the int8 matmul (grid.y)


def _current_raw_stream(device: torch.device) -> int:
    """The ``cudaStream_t`` (as an int) of torch's current stream on ``device``: through the raw-stream
    accessor that torch's compiled code uses where this torch has it (a few times cheaper than building a
    ``torch.cuda.Stream``), else ``torch.cuda.current_stream``."""
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if raw is not None:
        index = device.index if device.index is not None else torch.cuda.current_device()
        return raw(index)
    return torch.cuda.current_stream(device).cuda_stream


def _device_guard(t: torch.Tensor):
    """Make ``t``'s device current for the call (kernels launch on the current device)."""
    if t.device.type == "cpu" or t.device.index is None or t.device.index == torch.cuda.current_device():
        return contextlib.nullcontext()
    return torch.cuda.device(t.device)


class GpuKernels:
    """The kernels of one loaded-on-demand library, as op implementations."""

    def __init__(self, library: NativeLibrary):
        self.library = library
        self._dtype_codes: dict[torch.dtype, int] | None = None

    # -- helpers (on every call's path: batch-1 decoding pays their host time per layer and token) -----------

    def _ptr(self, t: torch.Tensor | None):
        ffi = self.library.ffi
        return ffi.NULL if t is None else ffi.cast("void *", t.data_ptr())

    def _dtype(self, dtype: torch.dtype) -> int:
        if self._dtype_codes is None:
            lib = self.library.lib
            self._dtype_codes = {torch.float32: lib.BNB_F32, torch.float16: lib.BNB_F16, torch.bfloat16: lib.BNB_BF16}
        return self._dtype_codes[dtype]

    def _stream(self, t: torch.Tensor):
        if t.device.type == "cpu":  # the CPU emulation of the kernels (emulate.py) takes no stream
            return self.library.ffi.NULL
        return self.library.ffi.cast("void *", _current_raw_stream(t.device))

    def _call(self, op: str, t: torch.Tensor, fn_name: str, *args) -> None:
        with _device_guard(t):
            rc = getattr(self.library.lib, fn_name)(*args, self._stream(t))
        self.library.check(op, rc)

    # -- 8-bit blockwise ------------------------------------------------------------------------------

    def quantize_blockwise(self, A, code, blocksize):
        """Kernel of ``bnb_api::quantize_blockwise``."""
        out = torch.empty(A.shape, dtype=torch.uint8, device=A.device)
        absmax = torch.empty((n_blocks(A.numel(), blocksize),), dtype=torch.float32, device=A.device)
        p = self._ptr
        self._call("quantize_blockwise", A, "bnb_cuda_quantize_blockwise", p(A), self._dtype(A.dtype), p(code),
                   p(out), p(absmax), A.numel(), blocksize)  # fmt: skip
        return out, absmax

    def dequantize_blockwise(self, A, absmax, code, blocksize, dtype):
        """Kernel of ``bnb_api::dequantize_blockwise``."""
        out = torch.empty(A.shape, dtype=dtype, device=A.device)
        p = self._ptr
        self._call("dequantize_blockwise", A, "bnb_cuda_dequantize_blockwise", p(A), p(absmax), p(code), p(out),
                   self._dtype(dtype), A.numel(), blocksize)  # fmt: skip
        return out

    # -- 4-bit ------------------------------------------------------------------------------------------

    def quantize_4bit(self, A, blocksize, quant_type, quant_storage):
        """Kernel of ``bnb_api::quantize_4bit``."""
        n = A.numel()
        values, codes = sorted_code_4bit(quant_type, str(A.device))
        packed = torch.empty(((n + 1) // 2,), dtype=torch.uint8, device=A.device)
        absmax = torch.empty((n_blocks(n, blocksize),), dtype=torch.float32, device=A.device)
        p = self._ptr
        self._call("quantize_4bit", A, "bnb_cuda_quantize_4bit", p(A), self._dtype(A.dtype), p(values), p(codes),
                   p(packed), p(absmax), n, blocksize)  # fmt: skip
        return packed.view(quant_storage).reshape(-1, 1), absmax

    def dequantize_4bit(self, A, absmax, blocksize, quant_type, shape, dtype):
        """Kernel of ``bnb_api::dequantize_4bit`` (``A``: the packed bytes as flat uint8)."""
        out = torch.empty(tuple(shape), dtype=dtype, device=A.device)
        code = code_books.code_4bit(quant_type, A.device)
        p = self._ptr
        self._call("dequantize_4bit", A, "bnb_cuda_dequantize_4bit", p(A), p(absmax), p(code), p(out),
                   self._dtype(dtype), out.numel(), blocksize)  # fmt: skip
        return out

    def gemv_4bit(self, A, B, shapeB, absmax, code, blocksize, nested_absmax=None, nested_code=None,
                  nested_offset=None, nested_blocksize=256):  # fmt: skip
        """Kernel of ``bnb_api::gemv_4bit`` (``B``: packed bytes as flat uint8; nested absmax inline)."""
        N, K = shapeB
        out = torch.empty((*A.shape[:-1], N), dtype=A.dtype, device=A.device)
        nested = nested_absmax is not None
        p = self._ptr
        self._call("gemv_4bit", A, "bnb_cuda_gemv_4bit", p(A), self._dtype(A.dtype), p(B),
                   p(None if nested else absmax), p(absmax if nested else None), p(nested_absmax), p(nested_code),
                   p(nested_offset), nested_blocksize, p(code), p(out), N, K, blocksize)  # fmt: skip
        return out

    # -- LLM.int8() ---------------------------------------------------------------------------------------

    def int8_vectorwise_quant(self, A, threshold=0.0):
        """Kernel of ``bnb_api::int8_vectorwise_quant``."""
        K = A.shape[-1]
        rows = A.numel() // K
        out = torch.empty(A.shape, dtype=torch.int8, device=A.device)
        row_absmax = torch.empty((rows,), dtype=torch.float32, device=A.device)
        flags = torch.empty((K,), dtype=torch.int32, device=A.device) if threshold > 0 else None
        p = self._ptr
        self._call("int8_vectorwise_quant", A, "bnb_cuda_int8_vectorwise_quant", p(A), self._dtype(A.dtype), p(out),
                   p(row_absmax), p(flags), rows, K, float(threshold))  # fmt: skip
        if flags is None:
            return out, row_absmax, torch.empty((0,), dtype=torch.int64, device=A.device)
        return out, row_absmax, torch.nonzero(flags).reshape(-1)

    def int8_linear_matmul(self, A, B):
        """Kernel of ``bnb_api::int8_linear_matmul``: exact int32 ``A @ B.T``.

        On the GPU, shapes that cuBLASLt takes (more than 16 rows, K and N multiples of 8) go through
        ``torch._int_mm`` (tensor cores, about 8x our dp4a kernel on an H100 at 2048^3); the others, and
        the CPU emulation, through the tiled dp4a kernel.
        """
        K, N, M = A.shape[-1], B.shape[0], math.prod(A.shape[:-1])
        if A.device.type != "cpu" and M > 16 and K % 8 == 0 and N % 8 == 0 and K > 0:
            product = _cublaslt_int_mm(A.reshape(M, K), B)
            if product is not None:
                return product.reshape(*A.shape[:-1], N)
        out = torch.empty((*A.shape[:-1], N), dtype=torch.int32, device=A.device)
        p = self._ptr
        self._call("int8_linear_matmul", A, "bnb_cuda_int8_linear_matmul", p(A), p(B), p(out), M, N, K)
        return out

    def int8_mm_dequant(self, A, row_stats, col_stats, dtype=None, bias=None):
        """Kernel of ``bnb_api::int8_mm_dequant``."""
        N = A.shape[-1]
        rows = A.numel() // N if N else 0
        dtype = dtype or torch.float16
        out = torch.empty(A.shape, dtype=dtype, device=A.device)
        bias_dtype = self._dtype(bias.dtype) if bias is not None else 0
        p = self._ptr
        self._call("int8_mm_dequant", A, "bnb_cuda_int8_mm_dequant", p(A), p(row_stats), p(col_stats), p(bias),
                   bias_dtype, p(out), self._dtype(dtype), rows, N)  # fmt: skip
        return out

    # -- optimizers ---------------------------------------------------------------------------------------

    def optimizer_step(self, optimizer, p, g, state1, state2, absmax1, absmax2, qmap1, qmap2, lr, beta1, beta2,
                       beta3, alpha, eps, weight_decay, step, gnorm_scale=1.0, max_unorm=0.0,
                       blocksize=256):  # fmt: skip
        """Kernel of ``bnb_api::optimizer_step`` (a one-tensor multi-tensor launch)."""
        self.optimizer_step_multi(optimizer, [p], [g], [state1], [state2] if state2 is not None else [],
                                  [absmax1] if absmax1 is not None else [],
                                  [absmax2] if absmax2 is not None else [], qmap1, qmap2, lr, beta1, beta2, beta3,
                                  alpha, eps, weight_decay, step, gnorm_scale, max_unorm, blocksize)  # fmt: skip

    def optimizer_step_multi(self, optimizer, params, grads, state1, state2, absmax1, absmax2, qmap1, qmap2, lr,
                             beta1, beta2, beta3, alpha, eps, weight_decay, step, gnorm_scale=1.0, max_unorm=0.0,
                             blocksize=256):  # fmt: skip
        """Kernel of ``bnb_api::optimizer_step_multi``: the whole group in one launch (two with clipping).

        The tensor table travels host -> device from pinned memory without blocking; clipping norms
        stay on the device between the norm pass and the update pass.
        """
        lib, ffi = self.library.lib, self.library.ffi
        eight_bit = state1[0].dtype == torch.uint8
        two_state = optimizer in TWO_STATE_OPTIMIZERS
        chunk = blocksize if eight_bit else lib.BNB_OPTIM32_CHUNK
        rows, start = [], 0
        for i, (p, g) in enumerate(zip(params, grads)):
            n = p.numel()
            if n == 0:
                continue
            row = [0] * lib.BNB_TABLE_WIDTH
            row[lib.BNB_T_P], row[lib.BNB_T_G], row[lib.BNB_T_S1] = p.data_ptr(), g.data_ptr(), state1[i].data_ptr()
            row[lib.BNB_T_S2] = state2[i].data_ptr() if two_state else 0
            row[lib.BNB_T_ABSMAX1] = absmax1[i].data_ptr() if eight_bit else 0
            row[lib.BNB_T_ABSMAX2] = absmax2[i].data_ptr() if eight_bit and two_state else 0
            row[lib.BNB_T_N] = n
            row[lib.BNB_T_DTYPES] = self._dtype(p.dtype) | (self._dtype(g.dtype) << 8)
            row[lib.BNB_T_START] = start
            rows.append(row)
            start += n_blocks(n, chunk)
        if not rows:
            return
        device = params[0].device
        # pinned source: the copy is asynchronous and the host allocator keeps the buffer until it is done
        table = torch.tensor(rows, dtype=torch.int64)
        if device.type != "cpu":
            table = table.pin_memory().to(device, non_blocking=True)
        hp = ffi.new("bnb_optim_params *")
        hp.optimizer = OPTIMIZERS.index(optimizer)
        hp.step, hp.blocksize = step, blocksize
        hp.beta1, hp.one_minus_beta1 = beta1, 1 - beta1
        hp.beta2, hp.one_minus_beta2 = beta2, 1 - beta2
        hp.beta3, hp.one_minus_beta3 = beta3, 1 - beta3
        hp.alpha, hp.eps, hp.weight_decay, hp.lr = alpha, eps, weight_decay, lr
        hp.decay_factor = 1 - lr * weight_decay
        hp.gnorm_scale, hp.max_unorm = gnorm_scale, max_unorm
        hp.c1, hp.c2 = 1 - beta1**step, 1 - beta2**step
        norms = torch.zeros((2 * len(rows),), dtype=torch.float64, device=device) if max_unorm > 0 else None
        ptr = self._ptr
        if eight_bit:
            fn, extra = "bnb_cuda_optimizer_8bit", (ptr(qmap1), ptr(qmap2))
        else:
            fn, extra = "bnb_cuda_optimizer_32bit", ()
        for norm_pass in ((1, 0) if norms is not None else (0,)):
            hp.norm_pass = norm_pass
            self._call("optimizer_step", params[0], fn, ffi.cast("long long *", table.data_ptr()), len(rows), start,
                       *extra, hp, ptr(norms))  # fmt: skip

    # -- registration ---------------------------------------------------------------------------------------

    def register(self, backend: str, device_type: str = "cuda", priority: int = 100) -> None:
        """Register every kernel for ``device_type`` (kind "native") with its ``supports`` predicate."""
        for op, supports in SUPPORTS.items():
            registry.register_kernel(op, backend, device_type, getattr(self, op), priority=priority, kind="native",
                                     supports=supports)  # fmt: skip


# -- supports predicates: True, or why the kernel does not take the call (the reference then serves) -----


def _any(**_call) -> bool:
    return True


def _vectorwise_supports(A, threshold=0.0) -> bool | str:
    # K == 0 has no columns to scan; the reference returns the empty result
    return True if A.shape[-1] > 0 else "A.shape[-1] == 0 (empty rows)"


def _cublaslt_int_mm(A2: torch.Tensor, B: torch.Tensor) -> torch.Tensor | None:
    """``torch._int_mm(A2, B.T)`` (cuBLASLt, exact int32), or None where this torch build refuses the shape or
    layout (the dp4a kernel then serves)."""
    try:
        return torch._int_mm(A2, B.t())
    except RuntimeError:
        return None


def _gemv_supports(A, **_call) -> bool | str:
    if A.numel() != A.shape[-1]:
        return f"A has {A.numel() // max(A.shape[-1], 1)} rows; the gemv kernel takes one (batch-1 decoding)"
    return True


def _matmul_supports(A, B) -> bool | str:
    M = math.prod(A.shape[:-1])
    if -(-M // MATMUL_TILE) > MAX_GRID_Y:  # the kernel's grid.y covers A's rows in tiles of 64
        return f"A has {M} rows; the int8 matmul kernel takes at most {MAX_GRID_Y * MATMUL_TILE}"
    return True


SUPPORTS = {
    "quantize_blockwise": _any,
    "dequantize_blockwise": _any,
    "quantize_4bit": _any,
    "dequantize_4bit": _any,
    "gemv_4bit": _gemv_supports,
    "int8_vectorwise_quant": _vectorwise_supports,
    "int8_linear_matmul": _matmul_supports,
    "int8_mm_dequant": _any,
    "optimizer_step": _any,
    "optimizer_step_multi": _any,
}

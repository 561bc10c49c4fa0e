"""The op contract: every op of bnb_api, defined once as a ``torch.library`` custom op ``bnb_api::<name>``.

Each op here has: its schema (the Python signature), a docstring giving shapes, dtypes and formats,
argument checks that run before any kernel, a fake (shape-only) version for ``torch.compile``, and a
body that hands the checked call to the kernel chosen by :mod:`bnb_api.core.registry`. Kernels receive
the arguments positionally, in schema order, with every input tensor made contiguous (except tensors
written in place, which must already be contiguous).

Formats (byte-compatible with bitsandbytes 0.50):

* blocks run over the flattened tensor; one float32 absmax per block, the last block may be partial;
* values are scaled by ``x * (1 / absmax)`` in float32 (the reciprocal capped at FLT_MAX; 0 for an
  all-zero block) and mapped to the nearest code, where "nearest" means the count of float32
  midpoints ``(c[i] + c[i+1]) / 2`` of the ascending code book strictly below the value: a value
  exactly between two codes takes the lower one. FP4's two zeros: values <= 0 take +0 (code 0),
  values > 0 take -0 (code 8), as bitsandbytes writes on CPU;
* 4-bit: element ``2i`` in the high nibble and ``2i+1`` in the low nibble of byte ``i``; an odd length
  is padded with the code of 0; the packed bytes are returned with shape ``(bytes / itemsize, 1)`` as a
  view in ``quant_storage``;
* an all-zero block has absmax 0 and every code equal to the code of 0.

Non-finite inputs: kernels never crash or read out of bounds on inf/NaN, but their codes are
unspecified, and blocks holding inf/NaN are outside the conformance comparison.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bnb_api.core import checks, registry
from bnb_api.core.errors import BnbValueError

OPTIMIZERS = ("adam", "adamw", "momentum", "lion", "rmsprop", "adagrad", "lamb", "lars", "ademamix")
TWO_STATE_OPTIMIZERS = ("adam", "adamw", "lamb", "ademamix")

OP_NAMES = (
    "quantize_blockwise",
    "dequantize_blockwise",
    "quantize_4bit",
    "dequantize_4bit",
    "gemv_4bit",
    "int8_vectorwise_quant",
    "int8_linear_matmul",
    "int8_mm_dequant",
    "int8_mm_outlier",
    "optimizer_step",
    "optimizer_step_multi",
)


def _call(op: str, device: torch.device, call: dict):
    """Run the registry's choice of kernel for ``op`` with the checked ``call``."""
    kernel = registry.select(op, device.type, call)
    return kernel.fn(*call.values())


def _c(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.contiguous()


# --------------------------------------------------------------------------------------------------
# 8-bit blockwise
# --------------------------------------------------------------------------------------------------


def check_quantize_blockwise(A: Tensor, code: Tensor, blocksize: int) -> None:
    op = "quantize_blockwise"
    checks.dtype_in(op, "A", A, checks.FLOAT_DTYPES)
    checks.code_book(op, "code", code, 256)
    checks.same_device(op, "A", A, code=code)
    checks.blocksize_8bit(op, blocksize)


@torch.library.custom_op("bnb_api::quantize_blockwise", mutates_args=())
def quantize_blockwise(A: Tensor, code: Tensor, blocksize: int) -> tuple[Tensor, Tensor]:
    """8-bit blockwise quantization of ``A`` (any shape; float32/float16/bfloat16).

    ``code``: float32 (256,) code book sorted ascending (e.g. the signed dynamic map).
    Returns ``(codes, absmax)``: uint8 of ``A.shape`` and float32 ``(ceil(A.numel() / blocksize),)``.
    """
    check_quantize_blockwise(A, code, blocksize)
    return _call("quantize_blockwise", A.device, dict(A=A.contiguous(), code=code.contiguous(), blocksize=blocksize))


@quantize_blockwise.register_fake
def _(A: Tensor, code: Tensor, blocksize: int) -> tuple[Tensor, Tensor]:
    check_quantize_blockwise(A, code, blocksize)
    nb = checks.n_blocks(A.numel(), blocksize)
    return torch.empty(A.shape, dtype=torch.uint8, device=A.device), A.new_empty((nb,), dtype=torch.float32)


def check_dequantize_blockwise(A: Tensor, absmax: Tensor, code: Tensor, blocksize: int, dtype: torch.dtype) -> None:
    op = "dequantize_blockwise"
    checks.dtype_in(op, "A", A, (torch.uint8,))
    checks.dtype_in(op, "absmax", absmax, (torch.float32,))
    checks.code_book(op, "code", code, 256)
    checks.same_device(op, "A", A, absmax=absmax, code=code)
    checks.blocksize_8bit(op, blocksize)
    checks.float_dtype_arg(op, "dtype", dtype)
    checks.numel_is(
        op, "absmax", absmax, checks.n_blocks(A.numel(), blocksize), f"A.numel()={A.numel()}, blocksize={blocksize}"
    )


@torch.library.custom_op("bnb_api::dequantize_blockwise", mutates_args=())
def dequantize_blockwise(A: Tensor, absmax: Tensor, code: Tensor, blocksize: int, dtype: torch.dtype) -> Tensor:
    """Inverse of :func:`quantize_blockwise`: ``code[A] * absmax[block]`` in float32, cast to ``dtype``.

    ``A``: uint8 codes (any shape); ``absmax``: float32 with one entry per block. Returns ``A.shape``.
    """
    check_dequantize_blockwise(A, absmax, code, blocksize, dtype)
    call = dict(A=A.contiguous(), absmax=absmax.contiguous(), code=code.contiguous(), blocksize=blocksize, dtype=dtype)
    return _call("dequantize_blockwise", A.device, call)


@dequantize_blockwise.register_fake
def _(A: Tensor, absmax: Tensor, code: Tensor, blocksize: int, dtype: torch.dtype) -> Tensor:
    check_dequantize_blockwise(A, absmax, code, blocksize, dtype)
    return torch.empty(A.shape, dtype=dtype, device=A.device)


# --------------------------------------------------------------------------------------------------
# 4-bit
# --------------------------------------------------------------------------------------------------


def packed_bytes(n: int) -> int:
    """Bytes that hold ``n`` 4-bit codes."""
    return (n + 1) // 2


def check_quantize_4bit(A: Tensor, blocksize: int, quant_type: str, quant_storage: torch.dtype) -> None:
    op = "quantize_4bit"
    checks.dtype_in(op, "A", A, checks.FLOAT_DTYPES)
    checks.blocksize_4bit(op, blocksize)
    checks.quant_type(op, quant_type)
    if not isinstance(quant_storage, torch.dtype):
        raise checks.BnbTypeError(f"{op}: quant_storage must be a torch.dtype, got {quant_storage!r}")
    itemsize = torch.empty((), dtype=quant_storage).element_size()
    if packed_bytes(A.numel()) % itemsize:
        raise BnbValueError(
            f"{op}: {packed_bytes(A.numel())} packed bytes (A.numel()={A.numel()}) do not fill whole "
            f"{quant_storage} elements ({itemsize} bytes); use quant_storage=torch.uint8 or a size that divides"
        )


@torch.library.custom_op("bnb_api::quantize_4bit", mutates_args=())
def quantize_4bit(A: Tensor, blocksize: int, quant_type: str, quant_storage: torch.dtype) -> tuple[Tensor, Tensor]:
    """4-bit (NF4 / FP4) blockwise quantization of ``A`` (any shape; float32/float16/bfloat16).

    Returns ``(packed, absmax)``: ``packed`` holds ``ceil(n/2)`` bytes (two codes per byte, element
    ``2i`` in the high nibble) viewed as ``quant_storage`` with shape ``(bytes / itemsize, 1)``;
    ``absmax`` is float32 ``(ceil(n / blocksize),)``.
    """
    check_quantize_4bit(A, blocksize, quant_type, quant_storage)
    call = dict(A=A.contiguous(), blocksize=blocksize, quant_type=quant_type, quant_storage=quant_storage)
    return _call("quantize_4bit", A.device, call)


@quantize_4bit.register_fake
def _(A: Tensor, blocksize: int, quant_type: str, quant_storage: torch.dtype) -> tuple[Tensor, Tensor]:
    check_quantize_4bit(A, blocksize, quant_type, quant_storage)
    itemsize = torch.empty((), dtype=quant_storage).element_size()
    packed = torch.empty((packed_bytes(A.numel()) // itemsize, 1), dtype=quant_storage, device=A.device)
    return packed, A.new_empty((checks.n_blocks(A.numel(), blocksize),), dtype=torch.float32)


def check_dequantize_4bit(
    A: Tensor, absmax: Tensor, blocksize: int, quant_type: str, shape: list[int], dtype: torch.dtype
) -> int:
    op = "dequantize_4bit"
    checks.tensor(op, "A", A)
    checks.dtype_in(op, "absmax", absmax, (torch.float32,))
    checks.same_device(op, "A", A, absmax=absmax)
    checks.blocksize_4bit(op, blocksize)
    checks.quant_type(op, quant_type)
    checks.float_dtype_arg(op, "dtype", dtype)
    n = 1
    for s in shape:
        if s < 0:
            raise BnbValueError(f"{op}: shape={list(shape)} has a negative size")
        n *= s
    nbytes = A.numel() * A.element_size()
    if nbytes != packed_bytes(n):
        raise BnbValueError(
            f"{op}: A holds {nbytes} bytes, but shape={list(shape)} ({n} values) needs {packed_bytes(n)}; "
            "pass the shape stored in the quant_state"
        )
    checks.numel_is(op, "absmax", absmax, checks.n_blocks(n, blocksize), f"n={n}, blocksize={blocksize}")
    return n


@torch.library.custom_op("bnb_api::dequantize_4bit", mutates_args=())
def dequantize_4bit(
    A: Tensor, absmax: Tensor, blocksize: int, quant_type: str, shape: list[int], dtype: torch.dtype
) -> Tensor:
    """Inverse of :func:`quantize_4bit`: returns ``dtype`` of ``shape``.

    ``A``: packed codes in any storage dtype (read as bytes); ``absmax``: float32, one per block (for
    nested statistics, dequantize the absmax first with :func:`dequantize_blockwise`).
    """
    check_dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype)
    A8 = A.contiguous().view(torch.uint8).reshape(-1)
    call = dict(
        A=A8, absmax=absmax.contiguous(), blocksize=blocksize, quant_type=quant_type, shape=list(shape), dtype=dtype
    )
    return _call("dequantize_4bit", A.device, call)


@dequantize_4bit.register_fake
def _(A: Tensor, absmax: Tensor, blocksize: int, quant_type: str, shape: list[int], dtype: torch.dtype) -> Tensor:
    check_dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype)
    return torch.empty(tuple(shape), dtype=dtype, device=A.device)


def _gemv_4bit_args_fast(A, B, shapeB, absmax, code, blocksize, nested_absmax, nested_code, nested_offset,
                         nested_blocksize) -> bool:  # fmt: skip
    """True when the arguments of ``gemv_4bit`` are well-formed in the common way (plain tensors on one device, the
    right dtypes and sizes): what :func:`check_gemv_4bit` checks, in one expression instead of a dozen calls (a
    decoding step checks every linear layer). False sends the arguments through the named checks."""
    tensor = Tensor
    if not (isinstance(A, tensor) and isinstance(B, tensor) and isinstance(absmax, tensor)):
        return False
    if not isinstance(code, tensor):
        return False
    if type(blocksize) is not int or blocksize not in checks.BLOCKSIZES_4BIT or len(shapeB) != 2:
        return False
    N, K = shapeB
    device = A.device
    if (
        A.dtype not in checks.FLOAT_DTYPES
        or A.dim() == 0
        or A.shape[-1] != K
        or B.numel() * B.element_size() != (N * K + 1) // 2
        or code.dtype != torch.float32
        or code.numel() != 16
        or B.device != device
        or absmax.device != device
        or code.device != device
    ):
        return False
    nb = -(-(N * K) // blocksize)
    if nested_absmax is None:
        return nested_code is None and nested_offset is None and absmax.dtype == torch.float32 and absmax.numel() == nb
    return (
        isinstance(nested_absmax, tensor)
        and isinstance(nested_code, tensor)
        and isinstance(nested_offset, tensor)
        and type(nested_blocksize) is int
        and nested_blocksize >= checks.MIN_BLOCKSIZE_8BIT
        and not nested_blocksize & (nested_blocksize - 1)
        and absmax.dtype == torch.uint8
        and absmax.numel() == nb
        and nested_absmax.dtype == torch.float32
        and nested_absmax.numel() == -(-nb // nested_blocksize)
        and nested_code.dtype == torch.float32
        and nested_code.numel() == 256
        and nested_offset.dtype == torch.float32
        and nested_offset.numel() == 1
        and nested_absmax.device == device
        and nested_code.device == device
        and nested_offset.device == device
    )


def check_gemv_4bit(
    A: Tensor,
    B: Tensor,
    shapeB: list[int],
    absmax: Tensor,
    code: Tensor,
    blocksize: int,
    nested_absmax: Tensor | None,
    nested_code: Tensor | None,
    nested_offset: Tensor | None,
    nested_blocksize: int,
) -> None:
    if _gemv_4bit_args_fast(A, B, shapeB, absmax, code, blocksize, nested_absmax, nested_code, nested_offset,
                            nested_blocksize):  # fmt: skip
        return
    op = "gemv_4bit"
    checks.dtype_in(op, "A", A, checks.FLOAT_DTYPES)
    checks.tensor(op, "B", B)
    checks.code_book(op, "code", code, 16)
    checks.same_device(
        op,
        "A",
        A,
        B=B,
        absmax=absmax,
        code=code,
        nested_absmax=nested_absmax,
        nested_code=nested_code,
        nested_offset=nested_offset,
    )
    checks.blocksize_4bit(op, blocksize)
    if len(shapeB) != 2:
        raise BnbValueError(f"{op}: shapeB={list(shapeB)} must be 2-D (out_features, in_features)")
    N, K = shapeB
    if A.dim() == 0 or A.shape[-1] != K:
        raise BnbValueError(f"{op}: A.shape={tuple(A.shape)} must end in K={K} (shapeB={list(shapeB)})")
    if B.numel() * B.element_size() != packed_bytes(N * K):
        raise BnbValueError(
            f"{op}: B holds {B.numel() * B.element_size()} bytes, but shapeB={list(shapeB)} needs {packed_bytes(N * K)}"
        )
    nb = checks.n_blocks(N * K, blocksize)
    if nested_absmax is None:
        checks.dtype_in(op, "absmax", absmax, (torch.float32,))
        checks.numel_is(op, "absmax", absmax, nb, f"shapeB={list(shapeB)}, blocksize={blocksize}")
        if nested_code is not None or nested_offset is not None:
            raise BnbValueError(f"{op}: nested_code/nested_offset given without nested_absmax")
        return
    # nested: absmax holds uint8 codes of (absmax - offset), quantized blockwise with nested_code
    checks.dtype_in(op, "absmax", absmax, (torch.uint8,))
    checks.numel_is(op, "absmax", absmax, nb, f"nested uint8 absmax, shapeB={list(shapeB)}, blocksize={blocksize}")
    checks.blocksize_8bit(op, nested_blocksize)
    checks.dtype_in(op, "nested_absmax", nested_absmax, (torch.float32,))
    checks.numel_is(op, "nested_absmax", nested_absmax, checks.n_blocks(nb, nested_blocksize))
    if nested_code is None or nested_offset is None:
        raise BnbValueError(f"{op}: nested_absmax needs nested_code (256,) and nested_offset (a float32 scalar tensor)")
    checks.code_book(op, "nested_code", nested_code, 256)
    checks.dtype_in(op, "nested_offset", nested_offset, (torch.float32,))
    checks.numel_is(op, "nested_offset", nested_offset, 1)


def gemv_4bit_eager(
    A: Tensor,
    B: Tensor,
    shapeB: list[int],
    absmax: Tensor,
    code: Tensor,
    blocksize: int,
    nested_absmax: Tensor | None = None,
    nested_code: Tensor | None = None,
    nested_offset: Tensor | None = None,
    nested_blocksize: int = 256,
) -> Tensor:
    """``A @ dequant(B).T`` straight from the packed weight: ``A`` (..., K) float32/16/bf16, made for one row (batch-1
    decoding) or a few; backends may serve one row only (``supports``), the reference serves any number.

    ``B``: 4-bit packed weight of ``shapeB = (N, K)`` (any storage dtype); ``code``: its float32 (16,)
    code book; ``absmax``: float32 per block, or, when ``nested_absmax`` is given, uint8 codes of
    ``absmax - nested_offset`` quantized blockwise (``nested_code``, ``nested_blocksize``).
    Returns ``A.dtype`` of shape ``(..., N)``, accumulated in float32. Accuracy contract: within the output
    dtype's rounding of ``|A| @ |W|.T`` (a bf16 kernel may multiply with the code book rounded to bf16).
    """
    args = (A, B, shapeB, absmax, code, blocksize, nested_absmax, nested_code, nested_offset, nested_blocksize)
    return _call("gemv_4bit", A.device, _gemv_4bit_call(*args))


def _gemv_4bit_call(A, B, shapeB, absmax, code, blocksize, nested_absmax, nested_code, nested_offset,
                    nested_blocksize) -> dict:  # fmt: skip
    """The checked call of ``gemv_4bit``: contiguous tensors, ``B`` as flat uint8 bytes."""
    check_gemv_4bit(A, B, shapeB, absmax, code, blocksize, nested_absmax, nested_code, nested_offset, nested_blocksize)
    if B.dtype != torch.uint8 or B.dim() != 1 or not B.is_contiguous():  # a packed weight as stored passes as is
        B = B.contiguous().view(torch.uint8).reshape(-1)
    return dict(A=A.contiguous(), B=B, shapeB=list(shapeB), absmax=absmax.contiguous(), code=code.contiguous(),
                blocksize=blocksize, nested_absmax=_c(nested_absmax), nested_code=_c(nested_code),
                nested_offset=_c(nested_offset), nested_blocksize=nested_blocksize)  # fmt: skip


class RowPlan:
    """An op checked and dispatched once for one weight, for the batch-1 calls of a decoding loop (``gemv_4bit``,
    ``int8_mm_outlier``: the first argument is the row of activations, the others the weight and its settings).

    Built by :func:`call_planned` (or :func:`gemv_4bit_plan`) from a first call; :meth:`fits` says whether
    another call may reuse it: the
    same weight memory (every tensor argument at the same address, with the same dtype and size: the plan keeps
    those tensors alive, so the memory is theirs; kernels read the values at each call), the same non-tensor
    arguments, an ``A`` of the same dtype and device holding one contiguous row of ``K``, plain eager mode, and an
    unchanged registry (:func:`registry.selection_token`); :meth:`run` then computes it (the kernel's ``bind``
    result, or the kernel with the rest of the checked call)."""

    __slots__ = ("n", "tensor_at", "memory", "values", "held", "token", "dtype", "device", "cpu", "K", "run")

    def __init__(self, args: tuple, token: tuple, run) -> None:
        A, rest = args[0], args[1:]
        self.n = len(rest)
        self.tensor_at = tuple(i for i, t in enumerate(rest) if isinstance(t, Tensor))
        self.held = tuple(rest[i] for i in self.tensor_at)  # their memory stays theirs
        self.memory = tuple(_memory_key(t) for t in self.held)
        self.values = tuple((i, t) for i, t in enumerate(rest) if not isinstance(t, Tensor))
        self.token, self.run = token, run
        self.dtype, self.device, self.K = A.dtype, A.device, A.shape[-1]
        self.cpu = A.is_cpu

    def fits(self, args: tuple) -> bool:
        """True when the op on ``args`` (in the op's order) may be computed by :attr:`run`."""
        A = args[0]
        if not (
            isinstance(A, Tensor)
            and A.dtype == self.dtype
            and (A.is_cpu if self.cpu else A.device == self.device)
            and A.numel() == self.K
            and A.shape[-1] == self.K
            and A.is_contiguous()
            and len(args) == self.n + 1
        ):
            return False
        for i, value in self.values:
            if args[i + 1] != value:
                return False
        tensors = [args[i + 1] for i in self.tensor_at]
        for t, key in zip(tensors, self.memory):  # a decoding loop passes the same memory at every call
            if not (isinstance(t, Tensor) and t.data_ptr() == key[0] and t.numel() == key[1] and t.dtype == key[2]
                    and (t.is_cpu or t.device) == key[3]):  # fmt: skip
                return False
        return eager_ok(A, *tensors) and registry.selection_token() == self.token


def _memory_key(t: Tensor) -> tuple:
    """What a plan compares of a weight-side tensor: address, size, dtype and device (``True`` for cpu, where
    ``is_cpu`` says it without building a ``torch.device``)."""
    return (t.data_ptr(), t.numel(), t.dtype, t.is_cpu or t.device)


def call_planned(op: str, args: tuple, owner: object, attr: str) -> Tensor:
    """``torch.ops.bnb_api.<op>(*args)`` for an op with batch-1 plans (``gemv_4bit``, ``int8_mm_outlier``), through
    the plan kept on ``owner`` (attribute ``attr``: the weight's state) when it fits, else building one where the
    call allows it; the op's body where plain eager mode allows (see :func:`eager_ok`), the dispatched op otherwise
    (tracing, modes, autograd)."""
    if not torch.compiler.is_compiling():
        plan = getattr(owner, attr, None)
        if plan is not None and plan.fits(args):  # a decoding loop: checked and dispatched at its first token
            return plan.run(args[0])
        if eager_ok(*[a for a in args if isinstance(a, Tensor)]):
            eager, checked_call = _PLANNED[op]
            plan = _row_plan(op, args, checked_call)
            if plan is None:
                return eager(*args)
            setattr(owner, attr, plan)
            return plan.run(args[0])
    return getattr(torch.ops.bnb_api, op)(*args)


def gemv_4bit_plan(*args) -> RowPlan | None:
    """A :class:`RowPlan` of ``gemv_4bit(*args)`` (the op's arguments in order), or None (see :func:`_row_plan`)."""
    return _row_plan("gemv_4bit", args, _gemv_4bit_call)


def _row_plan(op: str, args: tuple, checked_call) -> RowPlan | None:
    """A :class:`RowPlan` of ``op(*args)`` when ``A`` is one row, every tensor is contiguous and plain eager mode
    allows calling the op's body; None otherwise. ``checked_call(*args)`` checks the call as the op does (raising
    the same errors) and returns it by name; the registry then selects its kernel."""
    A = args[0]
    tensors = [t for t in args if isinstance(t, Tensor)]
    if not (isinstance(A, Tensor) and A.dim() > 0 and A.numel() == A.shape[-1]):
        return None
    if not all(t.is_contiguous() for t in tensors) or not eager_ok(*tensors):
        return None
    token = registry.selection_token()
    call = checked_call(*args)
    kernel = registry.select(op, A.device.type, call)
    run = kernel.bind(call) if kernel.bind is not None else None
    if run is None:
        fn, rest = kernel.fn, tuple(call.values())[1:]

        def run(a: Tensor) -> Tensor:
            return fn(a, *rest)

    return RowPlan(tuple(args), token, run)


def gemv_4bit_native(*args) -> Tensor | None:
    """:func:`gemv_4bit_eager` when a backend's own kernel (not the reference) serves the call, else None: how
    ``matmul_4bit`` picks between the gemv and dequantize + matmul for a few rows with one registry selection."""
    call = _gemv_4bit_call(*args)
    kernel = registry.select("gemv_4bit", args[0].device.type, call)
    return None if kernel.backend == registry.REFERENCE else kernel.fn(*call.values())

gemv_4bit = torch.library.custom_op("bnb_api::gemv_4bit", mutates_args=())(gemv_4bit_eager)
"""The op ``torch.ops.bnb_api.gemv_4bit``; ``gemv_4bit_eager`` is its body, callable without the torch
dispatcher where :func:`eager_ok` allows (batch-1 decoding calls it once per linear layer and token)."""


def eager_ok(*tensors: Tensor | None) -> bool:
    """True when calling an op's body directly is indistinguishable from ``torch.ops.bnb_api.<op>``: eager
    mode (no torch.compile, export or jit tracing), no torch function or dispatch mode, no tensor subclass with
    its own ``__torch_function__`` (fake tensors), and no gradient to record. Saves about 15 us per call."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    if torch._C._is_torch_function_mode_enabled() or torch._C._len_torch_dispatch_stack():
        return False
    if torch.overrides.has_torch_function(tensors):  # None has no __torch_function__
        return False
    return not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))


@gemv_4bit.register_fake
def _(
    A,
    B,
    shapeB,
    absmax,
    code,
    blocksize,
    nested_absmax=None,
    nested_code=None,
    nested_offset=None,
    nested_blocksize=256,
):
    check_gemv_4bit(A, B, shapeB, absmax, code, blocksize, nested_absmax, nested_code, nested_offset, nested_blocksize)
    return torch.empty((*A.shape[:-1], shapeB[0]), dtype=A.dtype, device=A.device)


# --------------------------------------------------------------------------------------------------
# LLM.int8()
# --------------------------------------------------------------------------------------------------


def check_int8_vectorwise_quant(A: Tensor, threshold: float) -> None:
    op = "int8_vectorwise_quant"
    checks.dtype_in(op, "A", A, checks.FLOAT_DTYPES)
    if A.dim() == 0:
        raise BnbValueError(f"{op}: A must have at least 1 dimension (rows are A.shape[:-1])")
    if not isinstance(threshold, (int, float)) or threshold < 0:
        raise BnbValueError(f"{op}: threshold={threshold!r} must be a float >= 0 (0 disables outliers)")


@torch.library.custom_op(
    "bnb_api::int8_vectorwise_quant",
    mutates_args=(),
    schema="(Tensor A, float threshold=0.0) -> (Tensor, Tensor, Tensor?)",
)
def int8_vectorwise_quant(A: Tensor, threshold: float = 0.0) -> tuple[Tensor, Tensor, Tensor | None]:
    """Row-wise int8 quantization with outlier columns (LLM.int8()).

    ``A`` (..., K) float32/16/bf16, rows = ``A.shape[:-1]`` flattened. With ``threshold > 0`` every
    column holding some ``|x| >= threshold`` is an outlier: its entries are left out of the row absmax
    and set to 0 in the codes. Returns ``(codes int8 A.shape, row_absmax float32 (rows,),
    outlier_cols int64 sorted (n_outliers,))``; codes = ``rint(x * (127 / row_absmax))`` (0 for an
    all-zero row). ``outlier_cols`` is ``None`` when ``threshold == 0`` (as bitsandbytes' op returns it) and
    empty when nothing crosses the threshold. Backend kernels always return a tensor (empty at threshold 0).
    """
    check_int8_vectorwise_quant(A, threshold)
    codes, stats, cols = _call("int8_vectorwise_quant", A.device, dict(A=A.contiguous(), threshold=float(threshold)))
    return codes, stats, (cols if threshold > 0 else None)


@int8_vectorwise_quant.register_fake
def _(A: Tensor, threshold: float = 0.0):
    check_int8_vectorwise_quant(A, threshold)
    rows = A.numel() // A.shape[-1] if A.shape[-1] else 0
    codes, stats = torch.empty(A.shape, dtype=torch.int8, device=A.device), A.new_empty((rows,), dtype=torch.float32)
    if threshold <= 0:
        return codes, stats, None
    return codes, stats, A.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.int64)


def check_int8_linear_matmul(A: Tensor, B: Tensor) -> None:
    op = "int8_linear_matmul"
    checks.dtype_in(op, "A", A, (torch.int8,))
    checks.dtype_in(op, "B", B, (torch.int8,))
    checks.same_device(op, "A", A, B=B)
    if B.dim() != 2 or A.dim() == 0 or A.shape[-1] != B.shape[1]:
        raise BnbValueError(
            f"{op}: A.shape={tuple(A.shape)} and B.shape={tuple(B.shape)} do not match; expected A (..., K), B (N, K)"
        )


@torch.library.custom_op("bnb_api::int8_linear_matmul", mutates_args=())
def int8_linear_matmul(A: Tensor, B: Tensor) -> Tensor:
    """Exact ``A @ B.T`` with int8 inputs (A (..., K), B (N, K)) and int32 output (..., N)."""
    check_int8_linear_matmul(A, B)
    return _call("int8_linear_matmul", A.device, dict(A=A.contiguous(), B=B.contiguous()))


@int8_linear_matmul.register_fake
def _(A: Tensor, B: Tensor) -> Tensor:
    check_int8_linear_matmul(A, B)
    return torch.empty((*A.shape[:-1], B.shape[0]), dtype=torch.int32, device=A.device)


def check_int8_linear_matmul_out(A: Tensor, B: Tensor, out: Tensor) -> None:
    check_int8_linear_matmul(A, B)
    op = "int8_linear_matmul.out"
    checks.dtype_in(op, "out", out, (torch.int32,))
    checks.same_device(op, "A", A, out=out)
    want = (*A.shape[:-1], B.shape[0])
    if tuple(out.shape) != want:
        raise BnbValueError(f"{op}: out.shape={tuple(out.shape)}; expected {want} (A (..., K) @ B (N, K).T)")


torch.library.define("bnb_api::int8_linear_matmul.out", "(Tensor A, Tensor B, Tensor(a!) out) -> ()")
"""``torch.ops.bnb_api.int8_linear_matmul.out(A, B, out)``: :func:`int8_linear_matmul` written into ``out``
(int32, ``(..., N)``), the out-variant bitsandbytes' op library also has."""


@torch.library.impl("bnb_api::int8_linear_matmul.out", "CompositeExplicitAutograd")
def _int8_linear_matmul_out(A: Tensor, B: Tensor, out: Tensor) -> None:
    check_int8_linear_matmul_out(A, B, out)
    out.copy_(int8_linear_matmul(A, B))


@torch.library.register_fake("bnb_api::int8_linear_matmul.out")
def _(A: Tensor, B: Tensor, out: Tensor) -> None:
    check_int8_linear_matmul_out(A, B, out)


def check_int8_mm_dequant(A: Tensor, row_stats: Tensor, col_stats: Tensor, dtype, bias) -> None:
    op = "int8_mm_dequant"
    checks.dtype_in(op, "A", A, (torch.int32,))
    checks.dtype_in(op, "row_stats", row_stats, (torch.float32,))
    checks.dtype_in(op, "col_stats", col_stats, (torch.float32,))
    checks.same_device(op, "A", A, row_stats=row_stats, col_stats=col_stats, bias=bias)
    if A.dim() == 0:
        raise BnbValueError(f"{op}: A must be at least 1-D (..., N)")
    N = A.shape[-1]
    rows = A.numel() // N if N else 0
    checks.numel_is(op, "row_stats", row_stats, rows, f"one per row of A.shape={tuple(A.shape)}")
    checks.numel_is(op, "col_stats", col_stats, N, f"one per column of A.shape={tuple(A.shape)}")
    if dtype is not None:
        checks.float_dtype_arg(op, "dtype", dtype)
    if bias is not None:
        checks.dtype_in(op, "bias", bias, checks.FLOAT_DTYPES)
        checks.numel_is(op, "bias", bias, N)


@torch.library.custom_op("bnb_api::int8_mm_dequant", mutates_args=())
def int8_mm_dequant(
    A: Tensor, row_stats: Tensor, col_stats: Tensor, dtype: torch.dtype | None = None, bias: Tensor | None = None
) -> Tensor:
    """Dequantize an int32 product: ``A * (row_stats[:, None] * col_stats) / 127^2 (+ bias)``.

    Computed in float32 and returned in ``dtype`` (default float16) with ``A``'s shape (..., N).
    """
    check_int8_mm_dequant(A, row_stats, col_stats, dtype, bias)
    call = dict(
        A=A.contiguous(), row_stats=row_stats.contiguous(), col_stats=col_stats.contiguous(), dtype=dtype, bias=_c(bias)
    )
    return _call("int8_mm_dequant", A.device, call)


@int8_mm_dequant.register_fake
def _(A, row_stats, col_stats, dtype=None, bias=None):
    check_int8_mm_dequant(A, row_stats, col_stats, dtype, bias)
    return torch.empty(A.shape, dtype=dtype or torch.float16, device=A.device)


def check_int8_mm_outlier(A: Tensor, CB: Tensor, SCB: Tensor, threshold: float, bias) -> None:
    op = "int8_mm_outlier"
    checks.dtype_in(op, "A", A, checks.FLOAT_DTYPES)
    checks.dtype_in(op, "CB", CB, (torch.int8,))
    checks.dtype_in(op, "SCB", SCB, (torch.float32,))
    checks.same_device(op, "A", A, CB=CB, SCB=SCB, bias=bias)
    if CB.dim() != 2 or A.dim() == 0 or A.shape[-1] != CB.shape[1]:
        raise BnbValueError(
            f"{op}: A.shape={tuple(A.shape)} and CB.shape={tuple(CB.shape)} do not match; "
            "expected A (..., K), CB (N, K)"
        )
    checks.numel_is(op, "SCB", SCB, CB.shape[0], "one scale per weight row")
    if not isinstance(threshold, (int, float)) or threshold < 0:
        raise BnbValueError(f"{op}: threshold={threshold!r} must be a float >= 0")
    if bias is not None:
        checks.dtype_in(op, "bias", bias, checks.FLOAT_DTYPES)
        checks.numel_is(op, "bias", bias, CB.shape[0])


def int8_mm_outlier_eager(A: Tensor, CB: Tensor, SCB: Tensor, threshold: float, bias: Tensor | None = None) -> Tensor:
    """LLM.int8() linear: ``A @ W.T (+ bias)`` with ``W = CB * SCB[:, None] / 127``.

    ``A`` (..., K) float32/16/bf16 is quantized row-wise to int8; columns with some
    ``|x| >= threshold`` (``threshold > 0``) are taken out and multiplied in ``A.dtype`` against the
    dequantized weight columns. Returns ``A.dtype`` (..., N).
    """
    return _call("int8_mm_outlier", A.device, _int8_mm_outlier_call(A, CB, SCB, threshold, bias))


def _int8_mm_outlier_call(A: Tensor, CB: Tensor, SCB: Tensor, threshold: float, bias: Tensor | None) -> dict:
    """The checked call of ``int8_mm_outlier``: contiguous tensors, a float threshold."""
    check_int8_mm_outlier(A, CB, SCB, threshold, bias)
    return dict(A=A.contiguous(), CB=CB.contiguous(), SCB=SCB.contiguous(), threshold=float(threshold), bias=_c(bias))


_PLANNED = {
    "gemv_4bit": (gemv_4bit_eager, _gemv_4bit_call),
    "int8_mm_outlier": (int8_mm_outlier_eager, _int8_mm_outlier_call),
}
"""The ops with batch-1 plans: their eager body and checked call (:func:`call_planned`)."""


int8_mm_outlier = torch.library.custom_op("bnb_api::int8_mm_outlier", mutates_args=())(int8_mm_outlier_eager)
"""The op ``torch.ops.bnb_api.int8_mm_outlier``; ``int8_mm_outlier_eager`` is its body, callable without the torch
dispatcher where :func:`eager_ok` allows (an 8-bit layer decoding one token calls it once per token)."""


@int8_mm_outlier.register_fake
def _(A, CB, SCB, threshold, bias=None):
    check_int8_mm_outlier(A, CB, SCB, threshold, bias)
    return torch.empty((*A.shape[:-1], CB.shape[0]), dtype=A.dtype, device=A.device)


# --------------------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------------------


def _state_shape(optimizer: str, p: Tensor) -> tuple[int, ...]:
    return (2, *p.shape) if optimizer == "ademamix" else tuple(p.shape)


def _check_optimizer_hparams(op: str, optimizer, step, max_unorm) -> None:
    """The arguments shared by every parameter of a step (checked once per call)."""
    if optimizer not in OPTIMIZERS:
        raise BnbValueError(f"{op}: optimizer={optimizer!r} is not supported; expected one of {OPTIMIZERS}")
    checks.int_arg(op, "step", step)
    if step < 1:
        raise BnbValueError(f"{op}: step={step} must be >= 1 (the first step is 1)")
    if max_unorm < 0:
        raise BnbValueError(f"{op}: max_unorm={max_unorm} must be >= 0 (0 disables update clipping)")


def _check_code_books(op: str, optimizer, eight_bit: bool, qmap1, qmap2) -> None:
    """8-bit states: the code books (checked once per call)."""
    if not eight_bit:
        return
    for name, qmap, needed in (("1", qmap1, True), ("2", qmap2, optimizer in TWO_STATE_OPTIMIZERS)):
        if needed:
            if qmap is None:
                raise BnbValueError(f"{op}: 8-bit state{name} needs absmax{name} and qmap{name}")
            checks.code_book(op, f"qmap{name}", qmap, 256)


def _param_tensors_fast(optimizer, p, g, state1, state2, absmax1, absmax2, blocksize) -> bool | None:
    """Whether the states are 8-bit when every tensor of one parameter is well-formed in the common way (no
    AdEMAMix, plain tensors, one device), else None: a few attribute reads instead of the checks' calls."""
    if optimizer == "ademamix" or type(blocksize) is not int:
        return None
    tensor = torch.Tensor
    if not (isinstance(p, tensor) and isinstance(g, tensor) and isinstance(state1, tensor)):
        return None
    two_state = optimizer in TWO_STATE_OPTIMIZERS
    if two_state != isinstance(state2, tensor) or (not two_state and state2 is not None):
        return None
    shape, sdt = p.shape, state1.dtype
    if p.is_cpu:  # the common case, without building torch.device objects
        if not (g.is_cpu and state1.is_cpu and (not two_state or state2.is_cpu)):
            return None
        device = None
    else:
        device = p.device
        if g.device != device or state1.device != device or (two_state and state2.device != device):
            return None
    if (
        p.dtype not in checks.FLOAT_DTYPES
        or g.dtype not in checks.FLOAT_DTYPES
        or g.shape != shape
        or state1.shape != shape
        or sdt not in (torch.uint8, torch.float32)
        or not p.is_contiguous()
        or not state1.is_contiguous()
    ):
        return None
    if two_state and (state2.dtype != sdt or state2.shape != shape or not state2.is_contiguous()):
        return None
    if sdt == torch.float32:
        return False if absmax1 is None and absmax2 is None else None
    if blocksize < checks.MIN_BLOCKSIZE_8BIT or blocksize & (blocksize - 1):
        return None
    nb = (-(-p.numel() // blocksize),)
    for absmax, needed in ((absmax1, True), (absmax2, two_state)):
        if not needed:
            if absmax is not None:
                return None
        elif not (
            isinstance(absmax, tensor)
            and absmax.dtype == torch.float32
            and absmax.shape == nb
            and (absmax.is_cpu if device is None else absmax.device == device)
            and absmax.is_contiguous()
        ):
            return None
    return True


def _check_param_tensors(op: str, optimizer, p, g, state1, state2, absmax1, absmax2, blocksize) -> bool:
    """One parameter's tensors: dtypes, shapes, contiguity, device; returns whether its states are 8-bit."""
    fast = _param_tensors_fast(optimizer, p, g, state1, state2, absmax1, absmax2, blocksize)
    if fast is not None:
        return fast
    checks.dtype_in(op, "p", p, checks.FLOAT_DTYPES)
    checks.dtype_in(op, "g", g, checks.FLOAT_DTYPES)
    checks.shape_is(op, "g", g, p.shape, "the gradient matches the parameter")
    checks.contiguous(op, "p", p)
    checks.dtype_in(op, "state1", state1, (torch.uint8, torch.float32))
    checks.same_device(op, "p", p, g=g, state1=state1, state2=state2, absmax1=absmax1, absmax2=absmax2)
    two_state = optimizer in TWO_STATE_OPTIMIZERS
    eight_bit = state1.dtype == torch.uint8
    state_dtype = torch.uint8 if eight_bit else torch.float32
    checks.shape_is(op, "state1", state1, _state_shape(optimizer, p), f"optimizer={optimizer}")
    checks.contiguous(op, "state1", state1)
    if two_state:
        if state2 is None:
            raise BnbValueError(f"{op}: optimizer={optimizer} needs state2 (second moment)")
        checks.dtype_in(op, "state2", state2, (state_dtype,))
        checks.shape_is(op, "state2", state2, p.shape, f"optimizer={optimizer}")
        checks.contiguous(op, "state2", state2)
    elif state2 is not None:
        raise BnbValueError(f"{op}: optimizer={optimizer} has one state; state2 must be None")
    if not eight_bit:
        if absmax1 is not None or absmax2 is not None:
            raise BnbValueError(f"{op}: absmax1/absmax2 are for 8-bit (uint8) states only")
        return False
    nb = checks.n_blocks(p.numel(), checks.blocksize_8bit(op, blocksize))
    expected = (2, nb) if optimizer == "ademamix" else (nb,)
    for name, absmax, needed in (("1", absmax1, True), ("2", absmax2, two_state)):
        if not needed:
            if absmax is not None:
                raise BnbValueError(f"{op}: optimizer={optimizer} has one state; absmax2 must be None")
            continue
        if absmax is None:
            raise BnbValueError(f"{op}: 8-bit state{name} needs absmax{name} and qmap{name}")
        checks.dtype_in(op, f"absmax{name}", absmax, (torch.float32,))
        checks.shape_is(op, f"absmax{name}", absmax, expected if name == "1" else (nb,), f"blocksize={blocksize}")
        checks.contiguous(op, f"absmax{name}", absmax)
    return True


def check_optimizer_step(
    optimizer,
    p,
    g,
    state1,
    state2,
    absmax1,
    absmax2,
    qmap1,
    qmap2,
    lr,
    beta1,
    beta2,
    beta3,
    alpha,
    eps,
    weight_decay,
    step,
    gnorm_scale,
    max_unorm,
    blocksize,
    op: str = "optimizer_step",
) -> None:
    _check_optimizer_hparams(op, optimizer, step, max_unorm)
    eight_bit = _check_param_tensors(op, optimizer, p, g, state1, state2, absmax1, absmax2, blocksize)
    checks.same_device(op, "p", p, qmap1=qmap1, qmap2=qmap2)
    _check_code_books(op, optimizer, eight_bit, qmap1, qmap2)


def optimizer_step_eager(
    optimizer: str,
    p: Tensor,
    g: Tensor,
    state1: Tensor,
    state2: Tensor | None,
    absmax1: Tensor | None,
    absmax2: Tensor | None,
    qmap1: Tensor | None,
    qmap2: Tensor | None,
    lr: float,
    beta1: float,
    beta2: float,
    beta3: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    step: int,
    gnorm_scale: float = 1.0,
    max_unorm: float = 0.0,
    blocksize: int = 256,
) -> None:
    """One in-place optimizer step on parameter ``p`` (float32/16/bf16) with gradient ``g``.

    32-bit states: ``state1``/``state2`` float32 of ``p.shape`` (AdEMAMix: ``state1`` is ``(2, *p.shape)``
    holding m1 and m2). 8-bit blockwise states: uint8 codes of the same shapes, with float32 ``absmax``
    per ``blocksize`` block (AdEMAMix: ``(2, nblocks)``) and code books ``qmap1`` (signed dynamic map)
    and ``qmap2`` (unsigned). The gradient is multiplied by ``gnorm_scale``; with ``max_unorm > 0``
    the update is scaled down so that its norm is at most ``max_unorm * ||p||`` (LAMB/LARS).
    The update formulas are those of :mod:`bnb_api.core.reference.optim`.
    """
    args = (
        optimizer,
        p,
        g,
        state1,
        state2,
        absmax1,
        absmax2,
        qmap1,
        qmap2,
        lr,
        beta1,
        beta2,
        beta3,
        alpha,
        eps,
        weight_decay,
        step,
        gnorm_scale,
        max_unorm,
        blocksize,
    )
    check_optimizer_step(*args)
    call = dict(zip(_OPT_ARGS, args))
    call["g"] = g.contiguous()
    _call("optimizer_step", p.device, call)


_OPT_MUTATED = ("p", "state1", "state2", "absmax1", "absmax2")
optimizer_step = torch.library.custom_op("bnb_api::optimizer_step", mutates_args=_OPT_MUTATED)(optimizer_step_eager)


_OPT_ARGS = (
    "optimizer",
    "p",
    "g",
    "state1",
    "state2",
    "absmax1",
    "absmax2",
    "qmap1",
    "qmap2",
    "lr",
    "beta1",
    "beta2",
    "beta3",
    "alpha",
    "eps",
    "weight_decay",
    "step",
    "gnorm_scale",
    "max_unorm",
    "blocksize",
)


@optimizer_step.register_fake
def _(
    optimizer,
    p,
    g,
    state1,
    state2,
    absmax1,
    absmax2,
    qmap1,
    qmap2,
    lr,
    beta1,
    beta2,
    beta3,
    alpha,
    eps,
    weight_decay,
    step,
    gnorm_scale=1.0,
    max_unorm=0.0,
    blocksize=256,
) -> None:
    check_optimizer_step(
        optimizer,
        p,
        g,
        state1,
        state2,
        absmax1,
        absmax2,
        qmap1,
        qmap2,
        lr,
        beta1,
        beta2,
        beta3,
        alpha,
        eps,
        weight_decay,
        step,
        gnorm_scale,
        max_unorm,
        blocksize,
    )


def check_optimizer_step_multi(
    optimizer,
    params,
    grads,
    state1,
    state2,
    absmax1,
    absmax2,
    qmap1,
    qmap2,
    lr,
    beta1,
    beta2,
    beta3,
    alpha,
    eps,
    weight_decay,
    step,
    gnorm_scale,
    max_unorm,
    blocksize,
):
    op = "optimizer_step_multi"
    n = len(params)
    two_state = optimizer in TWO_STATE_OPTIMIZERS
    eight_bit = bool(state1) and state1[0].dtype == torch.uint8
    for name, lst, needed in (
        ("grads", grads, True),
        ("state1", state1, True),
        ("state2", state2, two_state),
        ("absmax1", absmax1, eight_bit),
        ("absmax2", absmax2, eight_bit and two_state),
    ):
        if len(lst) != (n if needed else 0):
            raise BnbValueError(
                f"{op}: {name} has {len(lst)} tensors, but should have {n if needed else 0} "
                f"[optimizer={optimizer}, {'8' if eight_bit else '32'}-bit, {n} params]"
            )
    _check_optimizer_hparams(op, optimizer, step, max_unorm)
    device = params[0].device if n and isinstance(params[0], Tensor) else None
    for i in range(n):
        args = (
            optimizer,
            params[i],
            grads[i],
            state1[i],
            state2[i] if two_state else None,
            absmax1[i] if eight_bit else None,
            absmax2[i] if eight_bit and two_state else None,
            blocksize,
        )
        # a state width unlike state1[0]'s fails there too: its absmax is present or missing against it
        if _param_tensors_fast(*args) is None or params[i].device != device:
            where = f"{op}[param {i}]"
            _check_param_tensors(where, *args)
            checks.same_device(where, "params[0]", params[0], p=params[i])
    if n:
        checks.same_device(op, "params[0]", params[0], qmap1=qmap1, qmap2=qmap2)
    _check_code_books(op, optimizer, eight_bit, qmap1, qmap2)


def optimizer_step_multi_eager(
    optimizer: str,
    params: list[Tensor],
    grads: list[Tensor],
    state1: list[Tensor],
    state2: list[Tensor],
    absmax1: list[Tensor],
    absmax2: list[Tensor],
    qmap1: Tensor | None,
    qmap2: Tensor | None,
    lr: float,
    beta1: float,
    beta2: float,
    beta3: float,
    alpha: float,
    eps: float,
    weight_decay: float,
    step: int,
    gnorm_scale: float = 1.0,
    max_unorm: float = 0.0,
    blocksize: int = 256,
) -> None:
    """:func:`optimizer_step` on every parameter of a group in one call (same hyper-parameters).

    Lists hold one tensor per parameter; ``state2`` / ``absmax1`` / ``absmax2`` are empty lists where
    the optimizer or the state width has none. Backends may fuse the whole group into one launch.
    """
    args = (
        optimizer,
        params,
        grads,
        state1,
        state2,
        absmax1,
        absmax2,
        qmap1,
        qmap2,
        lr,
        beta1,
        beta2,
        beta3,
        alpha,
        eps,
        weight_decay,
        step,
        gnorm_scale,
        max_unorm,
        blocksize,
    )
    check_optimizer_step_multi(*args)
    if not params:
        return
    call = dict(zip(_OPT_ARGS, args))
    call["params"] = call.pop("p")
    call["grads"] = [g.contiguous() for g in call.pop("g")]
    ordered = {k: call[k] for k in ("optimizer", "params", "grads", *_OPT_ARGS[3:])}
    _call("optimizer_step_multi", params[0].device, ordered)


optimizer_step_multi = torch.library.custom_op(
    "bnb_api::optimizer_step_multi", mutates_args=("params", *_OPT_MUTATED[1:])
)(optimizer_step_multi_eager)


@optimizer_step_multi.register_fake
def _(
    optimizer,
    params,
    grads,
    state1,
    state2,
    absmax1,
    absmax2,
    qmap1,
    qmap2,
    lr,
    beta1,
    beta2,
    beta3,
    alpha,
    eps,
    weight_decay,
    step,
    gnorm_scale=1.0,
    max_unorm=0.0,
    blocksize=256,
) -> None:
    check_optimizer_step_multi(
        optimizer,
        params,
        grads,
        state1,
        state2,
        absmax1,
        absmax2,
        qmap1,
        qmap2,
        lr,
        beta1,
        beta2,
        beta3,
        alpha,
        eps,
        weight_decay,
        step,
        gnorm_scale,
        max_unorm,
        blocksize,
    )


# --------------------------------------------------------------------------------------------------
# Eager calls of the in-place optimizer ops
# --------------------------------------------------------------------------------------------------


def step_optimizer(*args) -> None:
    """``torch.ops.bnb_api.optimizer_step(*args)`` (positional, the op's order). Where :func:`eager_ok` allows it
    runs the op's body directly and bumps the versions of the tensors it writes, as the dispatcher would: the
    Python wrappers torch puts around a mutating custom op cost about 100 us a call, more than a small step."""
    written = [t for t in (args[1], *args[3:7]) if t is not None]
    if not eager_ok(*written, args[2], *args[7:9]):
        torch.ops.bnb_api.optimizer_step(*args)
        return
    optimizer_step_eager(*args)
    torch.autograd.graph.increment_version(written)


def step_optimizer_multi(*args) -> None:
    """``torch.ops.bnb_api.optimizer_step_multi(*args)`` (positional), run directly in plain eager mode as
    :func:`step_optimizer` is."""
    written = [t for lst in (args[1], *args[3:7]) for t in lst]
    if not eager_ok(*written, *args[2], *args[7:9]):
        torch.ops.bnb_api.optimizer_step_multi(*args)
        return
    optimizer_step_multi_eager(*args)
    torch.autograd.graph.increment_version(written)

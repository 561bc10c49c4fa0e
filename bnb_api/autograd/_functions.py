"""Autograd for quantized matmuls: LLM.int8() (:func:`matmul`) and 4-bit (:func:`matmul_4bit`).

Everything runs on the ``bnb_api`` ops, so each piece is served by the best registered kernel.

* :func:`matmul_4bit` — ``A @ dequant(B).T (+ bias)``. One row of ``A``, or up to ``GEMV_MAX_ROWS[dtype]`` where a
  backend's own kernel takes them, goes through ``gemv_4bit`` (the weight is never dequantized; the same bits with
  and without gradients) and larger batches through ``dequantize_4bit`` + ``linear``. With gradients (QLoRA),
  :class:`MatMul4Bit` gives ``dA = dY @ dequant(B)`` and ``dbias = sum(dY)``; the frozen 4-bit weight gets no
  gradient.
* :func:`matmul` — ``A @ W.T (+ bias)`` with ``W`` held as int8 rows ``state.CB`` and scales ``state.SCB``
  (``W = CB * SCB / 127``). The forward is the op ``int8_mm_outlier``: activation columns with some
  ``|x| >= state.threshold`` are multiplied in ``A.dtype``, the rest in int8. With
  ``state.has_fp16_weights`` the float weight ``B`` is (re)quantized when needed and receives the gradient
  ``dB = dY.T @ A`` (the int8 training path); ``dA = dY @ dequant(CB)``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from bnb_api import functional as F
from bnb_api.core import ops as _ops
from bnb_api.core.errors import BnbValueError

_op = torch.ops.bnb_api


class GlobalOutlierPooler:
    """Process-wide record of outlier feature columns seen per hidden size (bitsandbytes API)."""

    _instance: GlobalOutlierPooler | None = None

    def __init__(self) -> None:
        raise RuntimeError("Call get_instance() instead")

    def initialize(self) -> None:
        self.outliers: set[int] = set()
        self.model_dim: int | None = None

    @classmethod
    def get_instance(cls) -> GlobalOutlierPooler:
        if cls._instance is None:
            cls._instance = cls.__new__(cls)
            cls._instance.initialize()
        return cls._instance

    def add_outliers(self, outlier_idx: Tensor, feature_dim: int) -> None:
        """Remember ``outlier_idx`` (int64 column indices) of a layer with ``feature_dim`` inputs."""
        if self.model_dim is None:
            self.model_dim = feature_dim
        if feature_dim != self.model_dim:
            return  # only the model's hidden size is pooled
        self.outliers.update(outlier_idx.tolist())

    def get_current_outlier_idx(self) -> Tensor:
        return torch.tensor(sorted(self.outliers), dtype=torch.int64)


@dataclass
class MatmulLtState:
    """State of one LLM.int8() layer: the int8 weight ``CB`` (N, K), its row scales ``SCB`` (N,) float32,
    the outlier ``threshold``, and whether a float weight is trained (``has_fp16_weights``)."""

    force_no_igemmlt: bool = False
    CB: Tensor | None = None
    SB: Tensor | None = None
    SCB: Tensor | None = None
    SBt: Tensor | None = None
    CBt: Tensor | None = None
    subB: Tensor | None = None
    outlier_pool: GlobalOutlierPooler | None = None
    has_accumulated_gradients = False
    threshold = 0.0
    idx: Tensor | None = None
    is_training = True
    has_fp16_weights = True
    use_pool = False
    _int8_plan = None  # the batch-1 int8_mm_outlier of this weight, checked and dispatched once (core.ops.RowPlan)

    def __getstate__(self) -> dict:
        """Pickle and deepcopy state: everything but the plan (native pointers, rebuilt at the next call)."""
        state = dict(self.__dict__)
        state.pop("_int8_plan", None)
        return state

    def reset_grads(self) -> None:
        """Forget the quantized weight (it is rebuilt from the float weight at the next forward)."""
        self.CB = None
        self.SB = None
        self.SCB = None
        self.SBt = None
        self.CBt = None


def _empty_out(A: Tensor, n: int) -> Tensor:
    return torch.empty((*A.shape[:-1], n), dtype=A.dtype, device=A.device)


def _dequant_int8_weight(CB: Tensor, SCB: Tensor, dtype: torch.dtype) -> Tensor:
    """``CB * SCB[:, None] / 127`` in ``dtype`` (the float weight an int8 layer stands for)."""
    return (CB.float() * (SCB.float().unsqueeze(1) * (1.0 / 127.0))).to(dtype)


def _weight_key(B: Tensor) -> tuple[int, int]:
    """Identity and version counter of a float weight: changes with every in-place update."""
    return (B.data_ptr(), B._version)


def _quantize_float_weight(B: Tensor, state: MatmulLtState) -> None:
    if B.dim() != 2:
        raise BnbValueError(f"matmul: B.shape={tuple(B.shape)} must be 2-D (out_features, in_features)")
    state.reset_grads()
    if not B.is_floating_point():
        raise BnbValueError(f"matmul: B has dtype {B.dtype} but state.CB is None; pass a float weight or set state.CB")
    state.CB, state.SCB, _ = F.int8_vectorwise_quant(B.detach().contiguous())
    state._weight_key = _weight_key(B)


def _forward_8bit(A: Tensor, B: Tensor, bias: Tensor | None, state: MatmulLtState) -> Tensor:
    """LLM.int8() ``A @ W.T (+ bias)`` without autograd: (re)quantizes a float weight ``B`` into ``state`` when
    needed, then ``int8_mm_outlier``, whose body runs directly where :func:`~bnb_api.core.ops.eager_ok` allows (the
    torch dispatcher's wrappers cost more than a small layer's kernel), batch-1 calls through the weight's plan."""
    if state.CB is None or state.SCB is None:
        _quantize_float_weight(B, state)
    elif state.has_fp16_weights and getattr(state, "_weight_key", None) != _weight_key(B):
        _quantize_float_weight(B, state)  # the float weight changed (optimizer step): requantize
    if A.numel() == 0:
        return _empty_out(A, state.CB.shape[0])
    b = None if bias is None else bias.to(A.dtype)
    args = (A, state.CB, state.SCB, float(state.threshold), b)
    return _ops.call_planned("int8_mm_outlier", args, state, "_int8_plan")


class MatMul8bitLt(torch.autograd.Function):
    """LLM.int8() ``A @ W.T (+ bias)`` with gradients for ``A``, ``bias`` and (fp16-weight training) ``B``."""

    @staticmethod
    def forward(ctx, A: Tensor, B: Tensor, out: Tensor | None = None, bias: Tensor | None = None,
                state: MatmulLtState | None = None) -> Tensor:  # fmt: skip
        state = state or MatmulLtState()
        ctx.state = state
        ctx.dtype_bias = None if bias is None else bias.dtype
        ctx.is_empty = A.numel() == 0
        output = _forward_8bit(A, B, bias, state)
        if ctx.is_empty:
            ctx.save_for_backward(A, None)
            return output
        ctx.save_for_backward(A if ctx.needs_input_grad[1] else None, None)
        if out is not None:
            return out.copy_(output)
        return output

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        A, _ = ctx.saved_tensors
        state: MatmulLtState = ctx.state
        need_A, need_B, _, need_bias, _ = ctx.needs_input_grad
        grad_A = grad_B = grad_bias = None
        if need_bias:
            grad_bias = grad_output.reshape(-1, grad_output.shape[-1]).sum(0).to(ctx.dtype_bias)
        if ctx.is_empty:
            return (torch.zeros(grad_output.shape[:-1] + (state.CB.shape[1],), dtype=grad_output.dtype),
                    None, None, grad_bias, None)  # fmt: skip
        if need_A:
            if state.CB is None:
                raise BnbValueError("matmul backward: state.CB is None; the int8 weight is needed for dA")
            W = _dequant_int8_weight(state.CB, state.SCB, grad_output.dtype)
            grad_A = grad_output @ W
        if need_B:
            K = A.shape[-1]
            g2 = grad_output.reshape(-1, grad_output.shape[-1])
            grad_B = (g2.t().float() @ A.reshape(-1, K).float()).to(A.dtype)
        return grad_A, grad_B, None, grad_bias, None


def matmul(
    A: Tensor,
    B: Tensor,
    out: Tensor | None = None,
    state: MatmulLtState | None = None,
    threshold: float = 0.0,
    bias: Tensor | None = None,
) -> Tensor:
    """LLM.int8() matmul ``A @ B.T (+ bias)``: ``A`` (..., K) float32/16/bf16; ``B`` (N, K) a float weight
    (quantized here, kept in ``state``) or an :class:`~bnb_api.nn.Int8Params` whose ``state.CB``/``SCB``
    are already set. Returns ``A.dtype`` (..., N)."""
    state = state or MatmulLtState()
    if threshold > 0.0:
        state.threshold = threshold
    needs_grad = torch.is_grad_enabled() and (
        A.requires_grad or B.requires_grad or (bias is not None and bias.requires_grad)
    )
    if needs_grad or torch.compiler.is_compiling():
        return MatMul8bitLt.apply(A, B, out, bias, state)
    result = _forward_8bit(A, B, bias, state)  # inference: no autograd.Function around it
    return out.copy_(result) if out is not None else result


def _dequant_4bit(B: Tensor, quant_state: F.QuantState, dtype: torch.dtype) -> Tensor:
    """Dequantized (N, K) weight of a packed 4-bit ``B`` directly in ``dtype``."""
    absmax = F._absmax_of(quant_state).float()
    return _op.dequantize_4bit(B, absmax, quant_state.blocksize, quant_state.quant_type, list(quant_state.shape), dtype)


GEMV_MAX_ROWS: dict[torch.dtype, int] = {torch.bfloat16: 192, torch.float16: 128, torch.float32: 128}
"""Up to this many rows of ``A`` (per ``A.dtype``; 16 for others) go through ``gemv_4bit`` when a backend kernel
serves them: the weight is read and decoded once for all rows, while dequantize + matmul writes and reads the whole
weight in ``A.dtype``. cpu, NF4 nested, the gemv against dequantize + linear, bf16, warm: 11008 x 4096 64 rows
6.9 / 10.8 ms, 128 rows 13.1 / 16.0, 192 rows 19.5 / 21.8, 256 rows 25.9 / 26.9; 4096 x 4096 192 rows 7.6 / 8.1,
256 rows 10.4 / 10.1; 4096 x 11008, 14336 x 4096, 896 x 4864 and 4864 x 896 ahead or even to 256 rows; float32 at
128 rows 22 / 31 ms, float16 20 / 70 ms (no float16 matmul kernel on these CPUs); on a Zen 5 machine with the
float32 row-lanes kernels, 11008 x 4096 at 128 rows float32 29 / 65 ms, float16 29 / 184 ms (a CPU with fast dense
float32/float16 matmul moves the crossover down, hence 128)."""


def gemv_max_rows(dtype: torch.dtype) -> int:
    """The most rows of ``A`` in ``dtype`` that :func:`matmul_4bit` sends through ``gemv_4bit``."""
    return GEMV_MAX_ROWS.get(dtype, 16)


def _forward_4bit(A: Tensor, B: Tensor, quant_state: F.QuantState, bias: Tensor | None) -> Tensor:
    """``A @ dequant(B).T (+ bias)`` for non-empty ``A``: one row, or up to ``gemv_max_rows`` where a backend's
    own kernel takes them, through ``gemv_4bit`` (the weight never materialized); more through
    ``dequantize_4bit`` + ``linear``."""
    rows = A.numel() // A.shape[-1]
    result = None
    if rows == 1:
        result = F.gemv_4bit(A, B, state=quant_state)
    elif rows <= gemv_max_rows(A.dtype):
        result = F._gemv_4bit_if_native(A, B, quant_state)
    if result is not None:
        return result if bias is None else result + bias.to(A.dtype)
    W = _dequant_4bit(B, quant_state, A.dtype)
    return torch.nn.functional.linear(A, W, None if bias is None else bias.to(A.dtype))


class MatMul4Bit(torch.autograd.Function):
    """``A @ dequant(B).T (+ bias)`` with gradients for ``A`` and ``bias`` (the 4-bit weight is frozen)."""

    @staticmethod
    def forward(ctx, A: Tensor, B: Tensor, out: Tensor | None = None, bias: Tensor | None = None,
                quant_state: F.QuantState | None = None) -> Tensor:  # fmt: skip
        ctx.state = quant_state
        ctx.dtype_bias = None if bias is None else bias.dtype
        ctx.is_empty = A.numel() == 0
        if ctx.is_empty:
            ctx.save_for_backward(None)
            return _empty_out(A, quant_state.shape[0])
        output = _forward_4bit(A, B, quant_state, bias)  # the same path as without gradients
        ctx.save_for_backward(B if ctx.needs_input_grad[0] else None)
        if out is not None:
            return out.copy_(output)
        return output

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        (B,) = ctx.saved_tensors
        need_A, _, _, need_bias, _ = ctx.needs_input_grad
        grad_A = grad_bias = None
        if need_bias:
            grad_bias = grad_output.reshape(-1, grad_output.shape[-1]).sum(0).to(ctx.dtype_bias)
        if need_A:
            if ctx.is_empty:
                grad_A = torch.zeros((*grad_output.shape[:-1], ctx.state.shape[1]), dtype=grad_output.dtype)
            else:
                grad_A = grad_output @ _dequant_4bit(B, ctx.state, grad_output.dtype)
        return grad_A, None, None, grad_bias, None


def matmul_4bit(
    A: Tensor,
    B: Tensor,
    quant_state: F.QuantState,
    out: Tensor | None = None,
    bias: Tensor | None = None,
) -> Tensor:
    """4-bit ``A @ dequant(B).T (+ bias)``: ``A`` (..., K) float32/16/bf16, ``B`` packed with
    ``quant_state.shape == (N, K)`` (as stored or transposed: the packed bytes are the same). Returns ``A.dtype``
    (..., N); differentiable in ``A`` and ``bias``.

    As in bitsandbytes, a weight quantized from a ``(K, N)`` tensor (``A.shape[-1] == quant_state.shape[0]``,
    not square) gives ``A @ dequant(B)`` instead, with a ``DeprecationWarning``: quantize the ``(N, K)`` weight.
    """
    if quant_state is None:
        raise BnbValueError("matmul_4bit: quant_state is required (the QuantState returned by quantize_4bit)")
    if quant_state.shape is None or len(quant_state.shape) != 2:
        raise BnbValueError(f"matmul_4bit: quant_state.shape={quant_state.shape} must be 2-D (N, K)")
    N, K = quant_state.shape
    if A.dim() > 0 and A.shape[-1] == N and N != K:
        return _matmul_4bit_kn(A, B, quant_state, out, bias)
    if A.dim() == 0 or A.shape[-1] != K:
        raise BnbValueError(f"matmul_4bit: A.shape={tuple(A.shape)} must end in K={K} (quant_state.shape={[N, K]})")
    needs_grad = torch.is_grad_enabled() and (A.requires_grad or (bias is not None and bias.requires_grad))
    if needs_grad:
        return MatMul4Bit.apply(A, B, out, bias, quant_state)
    result = _empty_out(A, N) if A.numel() == 0 else _forward_4bit(A, B, quant_state, bias)
    if out is not None:
        return out.copy_(result)
    return result


def _matmul_4bit_kn(A: Tensor, B: Tensor, quant_state: F.QuantState, out: Tensor | None,
                    bias: Tensor | None) -> Tensor:  # fmt: skip
    """``A @ dequant(B) (+ bias)`` for a weight quantized in ``(K, N)`` orientation (bitsandbytes' deprecated
    form); autograd reaches ``A`` and ``bias`` through ``linear`` (the dequantized weight is a constant)."""
    if not torch.compiler.is_compiling():
        warnings.warn(
            f"matmul_4bit: the weight was quantized from a (K, N) tensor "
            f"(quant_state.shape={list(quant_state.shape)}); quantize the (out_features, in_features) weight instead",
            DeprecationWarning,
            stacklevel=3,
        )
    W = _dequant_4bit(B, quant_state, A.dtype)
    result = torch.nn.functional.linear(A, W.t(), None if bias is None else bias.to(A.dtype))
    return out.copy_(result) if out is not None else result

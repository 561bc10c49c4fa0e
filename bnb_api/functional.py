"""bitsandbytes-shaped functional API over the ``bnb_api`` ops.

Names, argument names and defaults follow bitsandbytes 0.50 (``bitsandbytes.functional``), so code
written for it runs unchanged with ``import bnb_api as bnb``. Formats are byte-compatible.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor

from bnb_api.core import codes as _codes
from bnb_api.core import ops as _ops  # defines torch.ops.bnb_api
from bnb_api.core.errors import BnbValueError

_op = torch.ops.bnb_api

create_linear_map = _codes.create_linear_map
create_normal_map = _codes.create_normal_map
create_fp8_map = _codes.create_fp8_map


def create_dynamic_map(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> Tensor:
    """The dynamic quantization map (256 float32 values, sorted), as bitsandbytes builds it."""
    return torch.tensor(_codes.dynamic_map_values(signed, max_exponent_bits, total_bits), dtype=torch.float32)


def get_4bit_type(typename: str, device: torch.device | str | None = None, blocksize: int = 64) -> Tensor:
    """The float32 (16,) code book of ``typename`` ('nf4' or 'fp4') on ``device`` (default cpu)."""
    return _codes.code_4bit(typename, device or "cpu").clone()


def pack_dict_to_tensor(source: dict[str, Any]) -> Tensor:
    """A JSON-serializable dict as a uint8 tensor of its UTF-8 JSON text (safetensors-friendly)."""
    return torch.tensor(list(json.dumps(source).encode("utf-8")), dtype=torch.uint8)


def unpack_tensor_to_dict(tensor_data: Tensor) -> dict[str, Any]:
    """Inverse of :func:`pack_dict_to_tensor` (plain JSON: never unpickles)."""
    return json.loads(bytes(tensor_data.cpu().to(torch.uint8).tolist()).decode("utf-8"))


class QuantState:
    """Everything needed to dequantize: absmax, shape, code book, blocksize, quant type, dtype and the
    nested state (``offset`` + ``state2``) when the absmax itself is 8-bit quantized."""

    valid_quant_types = ("fp4", "nf4")
    _gemv_plan = None  # the batch-1 gemv_4bit of this weight, checked and dispatched once (core.ops.RowPlan)
    valid_qs_type_keys = [f"bitsandbytes__{x}" for x in valid_quant_types]
    valid_qs_keys = [
        "absmax", "quant_map", "nested_absmax", "nested_quant_map", "quant_state", "quant_type", "blocksize",
        "dtype", "shape", "nested_blocksize", "nested_dtype", "nested_offset",
    ]  # fmt: skip

    def __init__(self, absmax, shape=None, code=None, blocksize=None, quant_type=None, dtype=None, offset=None,
                 state2=None):  # fmt: skip
        self.absmax = absmax
        self.shape = shape
        self.code = code
        self.dtype = dtype
        self.blocksize = blocksize
        self.quant_type = quant_type
        self.offset = offset
        self.state2 = state2
        self.nested = state2 is not None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle and deepcopy state: everything but the batch-1 plan (native pointers, rebuilt at the next call)."""
        state = dict(self.__dict__)
        state.pop("_gemv_plan", None)
        return state

    def __getattr__(self, name: str):
        # state_dict traversal (FSDP) resolves the packed key "quant_state.bitsandbytes__nf4" by getattr
        if name.startswith("bitsandbytes__"):
            packed = self.as_dict(packed=True)
            if "quant_state." + name in packed:
                return packed["quant_state." + name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __getitem__(self, idx):
        """Old list layout: [absmax, shape, dtype, blocksize, [offset, state2] or None, quant_type]."""
        nested = [self.offset, self.state2] if self.nested else None
        return [self.absmax, self.shape, self.dtype, self.blocksize, nested, self.quant_type][idx]

    @classmethod
    def from_dict(cls, qs_dict: dict[str, Any], device: torch.device | str) -> QuantState:
        """Rebuild from a state-dict slice (keys without the module prefix), packed or not."""
        qs_dict = dict(qs_dict)
        packed_keys = [k for k, v in qs_dict.items() if "quant_state" in k and isinstance(v, Tensor)]
        if "quant_type" not in qs_dict:
            if not packed_keys:
                raise BnbValueError(
                    "QuantState.from_dict: expected packed or unpacked quant_state items, found neither"
                )
            if len(packed_keys) != 1 or packed_keys[0].split(".")[-1] not in cls.valid_qs_type_keys:
                raise BnbValueError(
                    f"QuantState.from_dict: expected exactly one quant_state item ending in one of "
                    f"{cls.valid_qs_type_keys}; found {packed_keys}"
                )
        if len(packed_keys) == 1:
            qs_dict.update(unpack_tensor_to_dict(qs_dict.pop(packed_keys[0])))
        qs_dict = {k.split(".")[-1]: v for k, v in qs_dict.items()}
        unknown = set(qs_dict) - set(cls.valid_qs_keys)
        if unknown:
            raise BnbValueError(f"QuantState.from_dict: unexpected keys {sorted(unknown)}")
        offset = state2 = None
        if "nested_absmax" in qs_dict:
            offset = torch.tensor(float(qs_dict["nested_offset"]), device=device)
            state2 = cls(
                absmax=qs_dict["nested_absmax"].to(device),
                blocksize=qs_dict["nested_blocksize"],
                code=qs_dict["nested_quant_map"].to(device),
                dtype=getattr(torch, qs_dict["nested_dtype"]),
            )
        return cls(
            quant_type=qs_dict["quant_type"],
            absmax=qs_dict["absmax"].to(device),
            blocksize=qs_dict["blocksize"],
            code=qs_dict["quant_map"].to(device),
            dtype=getattr(torch, qs_dict["dtype"]),
            shape=torch.Size(qs_dict["shape"]) if qs_dict["shape"] is not None else None,
            offset=offset,
            state2=state2,
        )

    def as_dict(self, packed: bool = False) -> dict[str, Any]:
        """Tensors and plain values for a state dict; ``packed`` folds the non-tensors into one uint8
        tensor under ``quant_state.bitsandbytes__<quant_type>`` (safetensors-compatible)."""
        qs = {
            "quant_type": self.quant_type,
            "absmax": self.absmax,
            "blocksize": self.blocksize,
            "quant_map": self.code,
            "dtype": str(self.dtype).removeprefix("torch."),
            "shape": tuple(self.shape) if self.shape is not None else None,
        }
        if self.nested:
            qs.update({
                "nested_absmax": self.state2.absmax,
                "nested_blocksize": self.state2.blocksize,
                "nested_quant_map": self.state2.code.clone(),
                "nested_dtype": str(self.state2.dtype).removeprefix("torch."),
                "nested_offset": float(self.offset.item() if isinstance(self.offset, Tensor) else self.offset),
            })  # fmt: skip
        if not packed or self.quant_type is None:
            return qs
        out = {k: v for k, v in qs.items() if isinstance(v, Tensor)}
        out["quant_state.bitsandbytes__" + self.quant_type] = pack_dict_to_tensor(
            {k: v for k, v in qs.items() if not isinstance(v, Tensor)}
        )
        return out

    def to(self, device) -> None:
        """Move every tensor of the state to ``device`` (in place, like bitsandbytes)."""
        self.code = self.code.to(device)
        self.absmax = self.absmax.to(device)
        if self.nested:
            self.offset = self.offset.to(device)
            self.state2.absmax = self.state2.absmax.to(device)
            self.state2.code = self.state2.code.to(device)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantState):
            return False

        def close(a, b) -> bool:
            if a is None or b is None:
                return a is None and b is None
            return torch.allclose(torch.as_tensor(a).float().cpu(), torch.as_tensor(b).float().cpu(), atol=1e-6)

        return (
            close(self.absmax, other.absmax) and self.shape == other.shape and close(self.code, other.code)
            and self.dtype == other.dtype and self.blocksize == other.blocksize
            and self.quant_type == other.quant_type and close(self.offset, other.offset)
            and self.state2 == other.state2
        )  # fmt: skip

    __hash__ = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------------
# 8-bit blockwise
# --------------------------------------------------------------------------------------------------


def _nested_offset(absmax: Tensor) -> Tensor:
    """The mean of ``absmax`` (float32 scalar) removed before nested quantization.

    Summed in float64 on cpu and cuda (ROCm included), so those devices and any thread count get the same
    float32 offset, hence the same nested codes (a float32 sum's rounding depends on the reduction order).
    Devices that may lack float64 (mps, xpu, hpu) sum in float32.
    """
    if absmax.device.type not in ("cpu", "cuda"):
        return absmax.mean()
    return absmax.double().mean().float()


def quantize_blockwise(
    A: Tensor, code: Tensor | None = None, absmax: Tensor | None = None, out: Tensor | None = None,
    blocksize: int = 4096, nested: bool = False,
) -> tuple[Tensor, QuantState]:  # fmt: skip
    """8-bit blockwise quantization: uint8 codes of ``A.shape`` and a :class:`QuantState`.

    ``code`` defaults to the signed dynamic map; ``nested`` also quantizes the absmax (mean removed,
    8-bit with the same ``blocksize``, as bitsandbytes does).
    """
    if code is None:
        code = _codes.dynamic_map(True, A.device)
    A = A.detach()  # quantization has no gradient: outputs never join A's autograd graph
    codes, _absmax = _op.quantize_blockwise(A, code.to(A.device), blocksize)
    if nested:
        offset = _nested_offset(_absmax)
        qabsmax, state2 = quantize_blockwise(_absmax - offset, blocksize=blocksize, nested=False)
        state = QuantState(absmax=qabsmax, code=code, blocksize=blocksize, dtype=A.dtype, offset=offset, state2=state2)
    else:
        state = QuantState(absmax=_absmax, code=code, blocksize=blocksize, dtype=A.dtype)
    if out is not None:
        codes = out.copy_(codes)
    if absmax is not None:
        state.absmax = absmax.copy_(state.absmax)
    return codes, state


def _absmax_of(state: QuantState) -> Tensor:
    """float32 absmax of a state, decoding nested statistics."""
    if not state.nested:
        return state.absmax
    absmax = dequantize_blockwise(state.absmax, state.state2)
    return absmax.float() + state.offset.float()


def dequantize_blockwise(
    A: Tensor, quant_state: QuantState | None = None, absmax: Tensor | None = None, code: Tensor | None = None,
    out: Tensor | None = None, blocksize: int = 4096, nested: bool = False,
) -> Tensor:  # fmt: skip
    """Inverse of :func:`quantize_blockwise`; returns ``quant_state.dtype`` (float32 without a state)."""
    if quant_state is None:
        if absmax is None:
            raise BnbValueError("dequantize_blockwise: pass quant_state, or absmax (and optionally code)")
        quant_state = QuantState(absmax=absmax, code=code, blocksize=blocksize, dtype=torch.float32)
    code = quant_state.code if quant_state.code is not None else _codes.dynamic_map(True, A.device)
    result = _op.dequantize_blockwise(
        A, _absmax_of(quant_state).float(), code.to(A.device), quant_state.blocksize, quant_state.dtype or torch.float32
    )
    return out.copy_(result) if out is not None else result


# --------------------------------------------------------------------------------------------------
# 4-bit
# --------------------------------------------------------------------------------------------------


def quantize_4bit(
    A: Tensor, absmax: Tensor | None = None, out: Tensor | None = None, blocksize: int | None = None,
    compress_statistics: bool = False, quant_type: str = "fp4", quant_storage: torch.dtype = torch.uint8,
) -> tuple[Tensor, QuantState]:  # fmt: skip
    """4-bit NF4/FP4 quantization: packed ``(bytes / itemsize, 1)`` tensor and a :class:`QuantState`.

    ``compress_statistics`` stores the absmax 8-bit (mean removed, signed dynamic map, blocksize 256).
    """
    blocksize = 64 if blocksize is None else blocksize
    A = A.detach()  # quantization has no gradient: outputs never join A's autograd graph
    packed, _absmax = _op.quantize_4bit(A, blocksize, quant_type, quant_storage)
    code = _codes.code_4bit(quant_type, A.device).clone()  # own copy: state dicts must not share memory
    if compress_statistics:
        offset = _nested_offset(_absmax)
        qabsmax, state2 = quantize_blockwise(_absmax - offset, blocksize=256)
        state = QuantState(absmax=qabsmax, shape=A.shape, dtype=A.dtype, blocksize=blocksize, code=code,
                           quant_type=quant_type, offset=offset, state2=state2)  # fmt: skip
    else:
        state = QuantState(absmax=_absmax, shape=A.shape, dtype=A.dtype, blocksize=blocksize, code=code,
                           quant_type=quant_type)  # fmt: skip
    if out is not None:
        packed = out.copy_(packed)
    if absmax is not None:
        state.absmax = absmax.copy_(state.absmax)
    return packed, state


def quantize_fp4(A, absmax=None, out=None, blocksize=None, compress_statistics=False, quant_storage=torch.uint8):
    """:func:`quantize_4bit` with ``quant_type='fp4'``."""
    return quantize_4bit(A, absmax, out, blocksize, compress_statistics, "fp4", quant_storage)


def quantize_nf4(A, absmax=None, out=None, blocksize=None, compress_statistics=False, quant_storage=torch.uint8):
    """:func:`quantize_4bit` with ``quant_type='nf4'``."""
    return quantize_4bit(A, absmax, out, blocksize, compress_statistics, "nf4", quant_storage)


def dequantize_4bit(
    A: Tensor, quant_state: QuantState | None = None, absmax: Tensor | None = None, out: Tensor | None = None,
    blocksize: int | None = None, quant_type: str = "fp4",
) -> Tensor:  # fmt: skip
    """Inverse of :func:`quantize_4bit`: ``quant_state.dtype`` of ``quant_state.shape``.

    Without a state, ``absmax`` and ``out`` (for shape and dtype) must be given.
    """
    blocksize = 64 if blocksize is None else blocksize
    if quant_state is None:
        if absmax is None or out is None:
            raise BnbValueError("dequantize_4bit: pass quant_state, or both absmax and out (for shape and dtype)")
        quant_state = QuantState(absmax=absmax, shape=out.shape, dtype=out.dtype, blocksize=blocksize,
                                 quant_type=quant_type)  # fmt: skip
    result = _op.dequantize_4bit(
        A, _absmax_of(quant_state).float(), quant_state.blocksize, quant_state.quant_type, list(quant_state.shape),
        quant_state.dtype,
    )  # fmt: skip
    if (
        A.dim() == 2 and A.shape[0] == 1 and A.shape[1] > 1 and len(quant_state.shape) == 2
    ):  # bitsandbytes' transposed-view quirk
        result = result.t()
    return out.copy_(result) if out is not None else result


def dequantize_fp4(A, quant_state=None, absmax=None, out=None, blocksize=None):
    """:func:`dequantize_4bit` with ``quant_type='fp4'``."""
    return dequantize_4bit(A, quant_state, absmax, out, blocksize, "fp4")


def dequantize_nf4(A, quant_state=None, absmax=None, out=None, blocksize=None):
    """:func:`dequantize_4bit` with ``quant_type='nf4'``."""
    return dequantize_4bit(A, quant_state, absmax, out, blocksize, "nf4")


def gemv_4bit(
    A: Tensor, B: Tensor, out: Tensor | None = None, transposed_A: bool = False, transposed_B: bool = False,
    state: QuantState | None = None,
) -> Tensor:  # fmt: skip
    """``A @ dequant(B).T`` for ``A`` (..., K) of one row (batch-1 decoding) or a few; ``B`` packed with
    ``state.shape == (N, K)``.

    Nested statistics are decoded inside the kernel (never materialized)."""
    if state is None:
        raise BnbValueError("gemv_4bit: state (the QuantState of B) is required")
    result = _ops.call_planned("gemv_4bit", _gemv_4bit_args(A, plain_weight(B), state), state, "_gemv_plan")
    return out.copy_(result) if out is not None else result


def plain_weight(weight: Tensor) -> Tensor:
    """``weight.data`` for a parameter (``Params4bit``, ``Int8Params``: the same memory as a plain tensor), else
    ``weight``. Eager calls read it with subclass ``__torch_function__`` disabled: through ``Params4bit``'s own the
    read costs about 1.3 us, as does every tensor method on the parameter itself, and an op given the parameter
    takes torch's dispatcher (a batch-1 gemv_4bit about 30 us more) instead of its body."""
    if type(weight) is Tensor or not isinstance(weight, torch.nn.Parameter):
        return weight
    if torch.compiler.is_compiling():
        return weight.data
    with torch._C.DisableTorchFunctionSubclass():
        return weight.data


def _gemv_4bit_args(A: Tensor, B: Tensor, state: QuantState) -> tuple:
    """The ``bnb_api::gemv_4bit`` arguments of ``A @ dequant(B).T`` with ``state``."""
    code = state.code if state.code is not None else _codes.code_4bit(state.quant_type, A.device)
    if state.nested:
        offset = state.offset if state.offset.dtype == torch.float32 else state.offset.float()
        return (A, B, list(state.shape), state.absmax, code, state.blocksize, state.state2.absmax, state.state2.code,
                offset, state.state2.blocksize)  # fmt: skip
    return (A, B, list(state.shape), state.absmax, code, state.blocksize, None, None, None, 256)


_GEMV_SERVES_ROWS: dict[str, bool] = {}
"""The last eager answer of :func:`gemv_4bit_serves` for several rows, per device type: what a traced
(``torch.compile``) call goes by, since the registry cannot be asked while tracing."""


def _gemv_4bit_if_native(A: Tensor, B: Tensor, state: QuantState) -> Tensor | None:
    """:func:`gemv_4bit` when a backend's own kernel serves ``A``'s rows, else None (the caller dequantizes): one
    registry selection where :func:`gemv_4bit_serves` and :func:`gemv_4bit` would take two. Keeps the answer for
    traced calls, as :func:`gemv_4bit_serves` does."""
    if not _ops.eager_ok(A, B):
        return gemv_4bit(A, B, state=state) if gemv_4bit_serves(A, B, state) else None
    result = _ops.gemv_4bit_native(*_gemv_4bit_args(A, B, state))
    if A.numel() != A.shape[-1]:
        _GEMV_SERVES_ROWS[A.device.type] = result is not None
    return result


def gemv_4bit_serves(A: Tensor, B: Tensor, state: QuantState) -> bool:
    """True when a backend's own ``gemv_4bit`` kernel (not the reference fallback) takes ``A``'s rows on its device:
    :func:`bnb_api.matmul_4bit` then multiplies a few rows straight from the packed weight. While tracing, the
    last eager answer for the device type (False before any)."""
    if torch.compiler.is_compiling():
        return _GEMV_SERVES_ROWS.get(A.device.type, False)
    from bnb_api.core import registry

    call = _ops._gemv_4bit_call(*_gemv_4bit_args(A, B, state))
    serves = registry.select("gemv_4bit", A.device.type, call).backend != registry.REFERENCE
    if A.numel() != A.shape[-1]:
        _GEMV_SERVES_ROWS[A.device.type] = serves
    return serves


# --------------------------------------------------------------------------------------------------
# LLM.int8()
# --------------------------------------------------------------------------------------------------


def int8_vectorwise_quant(A: Tensor, threshold: float = 0.0) -> tuple[Tensor, Tensor, Tensor | None]:
    """Row-wise int8 quantization: ``(codes int8, row_absmax float32, outlier_cols int64 or None)``."""
    codes, stats, cols = _op.int8_vectorwise_quant(A.detach(), threshold)
    return codes, stats, (cols if threshold > 0 else None)


def int8_vectorwise_dequant(A: Tensor, stats: Tensor) -> Tensor:
    """float32 ``A * stats[:, None] / 127`` of row-wise int8 codes."""
    return A.float() * (stats.float().reshape(-1, *([1] * (A.dim() - 1))) * (1.0 / 127.0))


def int8_double_quant(
    A: Tensor, col_stats: Tensor | None = None, row_stats: Tensor | None = None, out_col: Tensor | None = None,
    out_row: Tensor | None = None, threshold: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:  # fmt: skip
    """Row-wise and column-wise int8 quantization of a 2-D ``A``:
    ``(row_codes, col_codes, row_stats, col_stats, outlier_cols)``."""
    row_codes, rstats, cols = int8_vectorwise_quant(A, threshold)
    col_codes_t, cstats, _ = int8_vectorwise_quant(A.t().contiguous(), threshold)
    col_codes = col_codes_t.t().contiguous()
    if cols is not None and cols.numel():
        col_codes[:, cols] = 0
    for dst, src in ((out_row, row_codes), (out_col, col_codes), (row_stats, rstats), (col_stats, cstats)):
        if dst is not None:
            dst.copy_(src)
    return row_codes, col_codes, rstats, cstats, cols


def int8_linear_matmul(A: Tensor, B: Tensor, out: Tensor | None = None, dtype: torch.dtype = torch.int32) -> Tensor:
    """Exact int32 ``A @ B.T`` of int8 ``A`` (..., K) and ``B`` (N, K)."""
    if dtype != torch.int32:
        raise BnbValueError(f"int8_linear_matmul: dtype={dtype} is not supported; expected torch.int32")
    result = _op.int8_linear_matmul(A, B)
    return out.copy_(result) if out is not None else result


def int8_mm_dequant(
    A: Tensor, row_stats: Tensor, col_stats: Tensor, out: Tensor | None = None, bias: Tensor | None = None
) -> Tensor:
    """float16 ``A * row_stats * col_stats / 127^2 (+ bias)`` of an int32 product (float32 math)."""
    result = _op.int8_mm_dequant(A, row_stats, col_stats, torch.float16, bias)
    return out.copy_(result) if out is not None else result


def int8_mm_outlier(A: Tensor, CB: Tensor, SCB: Tensor, threshold: float = 6.0, bias: Tensor | None = None) -> Tensor:
    """LLM.int8() ``A @ (CB * SCB / 127).T (+ bias)`` with outlier columns in ``A.dtype``."""
    return _op.int8_mm_outlier(A, CB, SCB, threshold, bias)


# --------------------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------------------


def percentile_clipping(
    grad: Tensor, gnorm_vec: Tensor, step: int, percentile: int = 5
) -> tuple[Tensor, Tensor, Tensor]:
    """Adaptive gradient clipping by the percentile of recent gradient norms (bitsandbytes' scheme).

    ``gnorm_vec``: float32 (100,) ring buffer of squared gradient norms, updated in place at slot
    ``step % 100``. Returns float32 scalar tensors ``(current_gnorm, clip_value, gnorm_scale)`` where
    ``clip_value = sqrt(sorted(gnorm_vec)[percentile])`` and ``gnorm_scale = min(1, clip_value /
    current_gnorm)``; nothing is synchronized with the host.
    """
    if gnorm_vec.dtype != torch.float32 or gnorm_vec.numel() != 100:
        raise BnbValueError(
            "percentile_clipping: gnorm_vec must be float32 with 100 entries, "
            f"got {gnorm_vec.dtype} {tuple(gnorm_vec.shape)}"
        )
    if not 0 <= percentile < 100:
        raise BnbValueError(f"percentile_clipping: percentile={percentile} must be in 0..99")
    sq = torch.linalg.vector_norm(grad.float()).square()
    gnorm_vec[step % 100] = sq
    current_gnorm = sq.sqrt()
    clip_value = torch.sort(gnorm_vec).values[percentile].sqrt()
    gnorm_scale = torch.where(current_gnorm > clip_value, clip_value / current_gnorm.clamp(min=1e-30), 1.0)
    return current_gnorm, clip_value, gnorm_scale


_BNB_OPTIMIZER_NAMES = {"momentum": "momentum", "adam": "adam", "adamw": "adamw", "lion": "lion", "rmsprop": "rmsprop",
                        "adagrad": "adagrad", "lamb": "lamb", "lars": "lars", "ademamix": "ademamix"}  # fmt: skip


def optimizer_update_32bit(
    optimizer_name: str, g: Tensor, p: Tensor, state1: Tensor, beta1: float, eps: float, step: int, lr: float,
    state2: Tensor | None = None, beta2: float = 0.0, beta3: float = 0.0, alpha: float = 0.0,
    weight_decay: float = 0.0, gnorm_scale: float = 1.0, unorm_vec: Tensor | None = None, max_unorm: float = 0.0,
    skip_zeros: bool = False,
) -> None:  # fmt: skip
    """In-place optimizer step with float32 states (bitsandbytes' signature; ``unorm_vec`` is unused:
    the update norm is computed inside the op). ``skip_zeros=True`` is not supported and raises."""
    _check_optimizer_name(optimizer_name, skip_zeros)
    _ops.step_optimizer(optimizer_name, p, g, state1, state2, None, None, None, None, lr, beta1, beta2, beta3, alpha,
                       eps, weight_decay, step, float(gnorm_scale), max_unorm, 256)  # fmt: skip


def optimizer_update_8bit_blockwise(
    optimizer_name: str, g: Tensor, p: Tensor, state1: Tensor, state2: Tensor | None, beta1: float, beta2: float,
    beta3: float, alpha: float, eps: float, step: int, lr: float, qmap1: Tensor, qmap2: Tensor | None,
    absmax1: Tensor, absmax2: Tensor | None, weight_decay: float = 0.0, gnorm_scale: float = 1.0,
    skip_zeros: bool = False,
) -> None:  # fmt: skip
    """In-place optimizer step with 8-bit blockwise states (blocksize 256; bitsandbytes' signature)."""
    _check_optimizer_name(optimizer_name, skip_zeros)
    _ops.step_optimizer(optimizer_name, p, g, state1, state2, absmax1, absmax2, qmap1, qmap2, lr, beta1, beta2, beta3,
                       alpha, eps, weight_decay, step, float(gnorm_scale), 0.0, 256)  # fmt: skip


def _check_optimizer_name(optimizer_name: str, skip_zeros: bool) -> None:
    if optimizer_name not in _BNB_OPTIMIZER_NAMES:
        raise BnbValueError(
            f"optimizer_name={optimizer_name!r} is not supported; expected one of {sorted(_BNB_OPTIMIZER_NAMES)}"
        )
    if skip_zeros:
        raise BnbValueError("skip_zeros=True is not supported by bnb_api's optimizer kernels; pass skip_zeros=False")

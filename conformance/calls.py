"""Checked calls: the exact argument dict each op hands its kernel, built without dispatching.

The conformance suite calls the kernel under test directly (``get_kernel(op, backend, dev).fn``), so
it must give that kernel what the op would: the arguments checked by the op's own ``check_<op>``
function, in schema order, with input tensors made contiguous and 4-bit buffers viewed as flat bytes.
:func:`checked_call` does that for every op; the suite's own tests verify that the keys match each
op's schema, so a change of the contract shows up here at once.
"""

from __future__ import annotations

from typing import Any

import torch

from bnb_api.core import ops

Call = dict[str, Any]


def _c(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.contiguous()


def _bytes(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.uint8).reshape(-1)


def _quantize_blockwise(A, code, blocksize) -> Call:
    ops.check_quantize_blockwise(A, code, blocksize)
    return dict(A=A.contiguous(), code=code.contiguous(), blocksize=blocksize)


def _dequantize_blockwise(A, absmax, code, blocksize, dtype) -> Call:
    ops.check_dequantize_blockwise(A, absmax, code, blocksize, dtype)
    return dict(A=A.contiguous(), absmax=absmax.contiguous(), code=code.contiguous(), blocksize=blocksize, dtype=dtype)


def _quantize_4bit(A, blocksize, quant_type, quant_storage) -> Call:
    ops.check_quantize_4bit(A, blocksize, quant_type, quant_storage)
    return dict(A=A.contiguous(), blocksize=blocksize, quant_type=quant_type, quant_storage=quant_storage)


def _dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype) -> Call:
    ops.check_dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype)
    return dict(
        A=_bytes(A), absmax=absmax.contiguous(), blocksize=blocksize, quant_type=quant_type, shape=list(shape),
        dtype=dtype,
    )  # fmt: skip


def _gemv_4bit(
    A, B, shapeB, absmax, code, blocksize, nested_absmax=None, nested_code=None, nested_offset=None,
    nested_blocksize=256,
) -> Call:  # fmt: skip
    ops.check_gemv_4bit(
        A, B, shapeB, absmax, code, blocksize, nested_absmax, nested_code, nested_offset, nested_blocksize
    )
    return dict(
        A=A.contiguous(), B=_bytes(B), shapeB=list(shapeB), absmax=absmax.contiguous(), code=code.contiguous(),
        blocksize=blocksize, nested_absmax=_c(nested_absmax), nested_code=_c(nested_code),
        nested_offset=_c(nested_offset), nested_blocksize=nested_blocksize,
    )  # fmt: skip


def _int8_vectorwise_quant(A, threshold=0.0) -> Call:
    ops.check_int8_vectorwise_quant(A, threshold)
    return dict(A=A.contiguous(), threshold=float(threshold))


def _int8_linear_matmul(A, B) -> Call:
    ops.check_int8_linear_matmul(A, B)
    return dict(A=A.contiguous(), B=B.contiguous())


def _int8_mm_dequant(A, row_stats, col_stats, dtype=None, bias=None) -> Call:
    ops.check_int8_mm_dequant(A, row_stats, col_stats, dtype, bias)
    return dict(
        A=A.contiguous(), row_stats=row_stats.contiguous(), col_stats=col_stats.contiguous(), dtype=dtype, bias=_c(bias)
    )


def _int8_mm_outlier(A, CB, SCB, threshold, bias=None) -> Call:
    ops.check_int8_mm_outlier(A, CB, SCB, threshold, bias)
    return dict(A=A.contiguous(), CB=CB.contiguous(), SCB=SCB.contiguous(), threshold=float(threshold), bias=_c(bias))


OPT_ARGS = ops._OPT_ARGS


def _optimizer_step(*args) -> Call:
    ops.check_optimizer_step(*args)
    call = dict(zip(OPT_ARGS, args))
    call["g"] = call["g"].contiguous()
    return call


def _optimizer_step_multi(*args) -> Call:
    ops.check_optimizer_step_multi(*args)
    call = dict(zip(OPT_ARGS, args))
    call["params"] = call.pop("p")
    call["grads"] = [g.contiguous() for g in call.pop("g")]
    return {k: call[k] for k in ("optimizer", "params", "grads", *OPT_ARGS[3:])}


BUILDERS = {
    "quantize_blockwise": _quantize_blockwise,
    "dequantize_blockwise": _dequantize_blockwise,
    "quantize_4bit": _quantize_4bit,
    "dequantize_4bit": _dequantize_4bit,
    "gemv_4bit": _gemv_4bit,
    "int8_vectorwise_quant": _int8_vectorwise_quant,
    "int8_linear_matmul": _int8_linear_matmul,
    "int8_mm_dequant": _int8_mm_dequant,
    "int8_mm_outlier": _int8_mm_outlier,
    "optimizer_step": _optimizer_step,
    "optimizer_step_multi": _optimizer_step_multi,
}

MUTATED = {
    "optimizer_step": ("p", "state1", "state2", "absmax1", "absmax2"),
    "optimizer_step_multi": ("params", "state1", "state2", "absmax1", "absmax2"),
}
"""Arguments each in-place op writes: their values after the call are the op's outputs."""


def checked_call(op: str, *args: Any) -> Call:
    """The argument dict (schema order) that ``torch.ops.bnb_api.<op>(*args)`` hands to its kernel.

    Runs the op's own argument checks first, so a bad case raises the op's ValueError/TypeError.
    """
    return BUILDERS[op](*args)


def clone_call(call: Call) -> Call:
    """A deep copy of the tensors in ``call`` (kernels of in-place ops write their arguments)."""

    def clone(v):
        if isinstance(v, torch.Tensor):
            return v.clone()
        if isinstance(v, list) and v and isinstance(v[0], torch.Tensor):
            return [t.clone() for t in v]
        return v

    return {k: clone(v) for k, v in call.items()}


def run_kernel(fn, op: str, call: Call) -> Any:
    """Run ``fn`` (a kernel) on a private copy of ``call``; returns its outputs as a tuple.

    For in-place ops the outputs are the written arguments (``MUTATED``) after the call.
    """
    mine = clone_call(call)  # a kernel that writes its inputs must not change what the other one sees
    out = fn(*mine.values())
    if op in MUTATED:
        return tuple(mine[name] for name in MUTATED[op])
    return out if isinstance(out, tuple) else (out,)

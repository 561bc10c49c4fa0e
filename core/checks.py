"""Argument checks shared by the ops: each raises a BnbTypeError / BnbValueError naming the op, the
argument, what it got and what was expected. They look only at metadata (never at data), so they run
unchanged inside fake (meta) tensors and ``torch.compile`` tracing."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from bnb_api.core.errors import BnbTypeError, BnbValueError

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BLOCKSIZES_4BIT = (32, 64, 128, 256, 512, 1024, 2048, 4096)
MIN_BLOCKSIZE_8BIT = 64


def _names(dtypes: Iterable[torch.dtype]) -> str:
    return ", ".join(str(d).replace("torch.", "") for d in dtypes)


def tensor(op: str, name: str, x: object) -> torch.Tensor:
    """``x`` must be a tensor."""
    if not isinstance(x, torch.Tensor):
        raise BnbTypeError(f"{op}: {name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def dtype_in(op: str, name: str, x: torch.Tensor, allowed: Sequence[torch.dtype]) -> None:
    """``x.dtype`` must be one of ``allowed``."""
    tensor(op, name, x)
    if x.dtype not in allowed:
        raise BnbTypeError(f"{op}: {name}.dtype={_names([x.dtype])} is not supported; expected {_names(allowed)}")


def same_device(op: str, ref_name: str, ref: torch.Tensor, **others: torch.Tensor | None) -> None:
    """Every tensor in ``others`` lives on ``ref``'s device."""
    device = ref.device
    for name, x in others.items():
        if x is not None and x.device != device:
            raise BnbValueError(
                f"{op}: {name} is on {x.device} but {ref_name} is on {ref.device}; move both to one device"
            )


def shape_is(op: str, name: str, x: torch.Tensor, shape: Sequence[int], context: str = "") -> None:
    """``x.shape`` must equal ``shape``."""
    if tuple(x.shape) != tuple(shape):
        extra = f" [{context}]" if context else ""
        raise BnbValueError(f"{op}: {name}.shape={tuple(x.shape)}, but should be {tuple(shape)}{extra}")


def numel_is(op: str, name: str, x: torch.Tensor, n: int, context: str = "") -> None:
    """``x`` must hold exactly ``n`` elements."""
    if x.numel() != n:
        extra = f" [{context}]" if context else ""
        raise BnbValueError(f"{op}: {name} has {x.numel()} elements, but should have {n}{extra}")


def contiguous(op: str, name: str, x: torch.Tensor) -> None:
    """``x`` must be contiguous (required for tensors written in place)."""
    if not x.is_contiguous():
        raise BnbValueError(f"{op}: {name} must be contiguous (it is written in place); call .contiguous() first")


def int_arg(op: str, name: str, value: object) -> int:
    """``value`` must be a Python int (bool excluded)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BnbTypeError(f"{op}: {name} must be an int, got {type(value).__name__} {value!r}")
    return value


def blocksize_4bit(op: str, blocksize: object) -> int:
    """4-bit blocksizes: a power of two in 32..4096."""
    int_arg(op, "blocksize", blocksize)
    if blocksize not in BLOCKSIZES_4BIT:
        raise BnbValueError(
            f"{op}: blocksize={blocksize} is not supported; expected a power of two in 32..4096 "
            f"({', '.join(map(str, BLOCKSIZES_4BIT))})"
        )
    return blocksize  # type: ignore[return-value]


def blocksize_8bit(op: str, blocksize: object) -> int:
    """8-bit blockwise blocksizes: a power of two, at least 64 (64..4096 typical, larger allowed)."""
    int_arg(op, "blocksize", blocksize)
    b = int(blocksize)  # type: ignore[arg-type]
    if b < MIN_BLOCKSIZE_8BIT or b & (b - 1):
        raise BnbValueError(
            f"{op}: blocksize={b} is not supported; expected a power of two >= {MIN_BLOCKSIZE_8BIT} (64..4096 typical)"
        )
    return b


def quant_type(op: str, value: object) -> str:
    """4-bit quant types: 'nf4' or 'fp4'."""
    if value not in ("nf4", "fp4"):
        raise BnbValueError(f"{op}: quant_type={value!r} is not supported; expected 'nf4' or 'fp4'")
    return value  # type: ignore[return-value]


def float_dtype_arg(op: str, name: str, dtype: object) -> torch.dtype:
    """An output dtype argument: float32, float16 or bfloat16."""
    if dtype not in FLOAT_DTYPES:
        raise BnbTypeError(f"{op}: {name}={dtype} is not supported; expected {_names(FLOAT_DTYPES)}")
    return dtype  # type: ignore[return-value]


def code_book(op: str, name: str, code: torch.Tensor, size: int) -> None:
    """A float32 code book with ``size`` entries."""
    dtype_in(op, name, code, (torch.float32,))
    numel_is(op, name, code, size, "a float32 code book")


def n_blocks(n: int, blocksize: int) -> int:
    """Number of blocks (the last one partial) covering ``n`` elements."""
    return -(-n // blocksize)

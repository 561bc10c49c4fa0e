"""Vectorized 4-bit kernels for the cpu device (any PyTorch build; no native code).

Each function takes the op's arguments positionally in schema order, already checked by the op, with
contiguous inputs (see ``bnb_api.core.ops``), and returns what the op returns.
"""

from __future__ import annotations

import functools

import torch

from bnb_api.core import codes

FLT_MAX = torch.finfo(torch.float32).max


@functools.cache
def _sorted_code(quant_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 midpoints (15,) of the ascending code book, uint8 code of each sorted entry (16,))."""
    table = codes.code_4bit(quant_type)
    values, order = torch.sort(table, stable=True)  # FP4: +0 (code 0) sorts before -0 (code 8)
    return (values[:-1] + values[1:]) * 0.5, order.to(torch.uint8)


@functools.cache
def _pair_table(quant_type: str) -> torch.Tensor:
    """float32 (256, 2): the decoded (high nibble, low nibble) values of every byte."""
    table = codes.code_4bit(quant_type)
    b = torch.arange(256)
    return torch.stack([table[b >> 4], table[b & 0xF]], dim=1)


def _blocks(flat: torch.Tensor, blocksize: int) -> torch.Tensor:
    pad = (-flat.numel()) % blocksize
    return torch.nn.functional.pad(flat, (0, pad)).view(-1, blocksize)


def _quantize(A: torch.Tensor, blocksize: int, quant_type: str, ties_up: bool):
    n = A.numel()
    blocks = _blocks(A.reshape(-1).float(), blocksize)
    absmax = blocks.abs().amax(dim=1)
    inv = torch.where(absmax > 0, 1.0 / absmax, torch.zeros_like(absmax)).clamp(max=FLT_MAX)
    scaled = (blocks * inv[:, None]).clamp(-1, 1).reshape(-1)[: n + n % 2]
    mid, code_of = _sorted_code(quant_type)
    # index = number of midpoints strictly below the value (a tie takes the lower code)
    below = (scaled[:, None] >= mid) if ties_up else (scaled[:, None] > mid)
    q = code_of[below.sum(dim=1)]
    return (q[0::2] << 4) | q[1::2], absmax


def quantize_4bit(A, blocksize, quant_type, quant_storage):
    """quantize_4bit: packed bytes (high nibble first) viewed as ``quant_storage`` (bytes / itemsize, 1)."""
    packed, absmax = _quantize(A, blocksize, quant_type, ties_up=False)
    return packed.view(quant_storage).reshape(-1, 1), absmax


def quantize_4bit_ties_up(A, blocksize, quant_type, quant_storage):
    """The deliberately wrong twin: a value exactly between two codes takes the upper one."""
    packed, absmax = _quantize(A, blocksize, quant_type, ties_up=True)
    return packed.view(quant_storage).reshape(-1, 1), absmax


def _dequantize(A: torch.Tensor, absmax: torch.Tensor, blocksize: int, quant_type: str, n: int) -> torch.Tensor:
    values = _pair_table(quant_type)[A.view(torch.uint8).reshape(-1).long()].reshape(-1)[:n]
    return (_blocks(values, blocksize) * absmax[:, None]).reshape(-1)[:n]


def dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype):
    """dequantize_4bit through the byte -> value-pair table."""
    n = 1
    for s in shape:
        n *= s
    return _dequantize(A, absmax, blocksize, quant_type, n).to(dtype).view(tuple(shape))


def gemv_4bit(A, B, shapeB, absmax, code, blocksize, nested_absmax=None, nested_code=None, nested_offset=None,
              nested_blocksize=256):  # fmt: skip
    """gemv_4bit: float32 accumulation of A (one row) against the table-decoded weight."""
    N, K = shapeB
    if nested_absmax is not None:
        absmax = (
            _blocks(nested_code[absmax.long()], nested_blocksize) * nested_absmax[:, None]
        ).reshape(-1)[: absmax.numel()] + nested_offset.reshape(())
    quant_type = "nf4" if torch.equal(code.cpu(), codes.code_4bit("nf4")) else "fp4"
    W = _dequantize(B, absmax, blocksize, quant_type, N * K).view(N, K)
    return (A.reshape(1, K).float() @ W.T).to(A.dtype).view(*A.shape[:-1], N)


def dequantize_blockwise(A, absmax, code, blocksize, dtype):
    """dequantize_blockwise: ``code[A] * absmax[block]`` in float32."""
    n = A.numel()
    values = code[A.reshape(-1).long()]
    return (_blocks(values, blocksize) * absmax[:, None]).reshape(-1)[:n].to(dtype).view(A.shape)


def _gemv_supports(A, B, shapeB, absmax, code, blocksize, **_):
    # the byte table knows NF4 and FP4 only; a custom 16-entry code book goes to the reference
    if not any(torch.equal(code.cpu(), codes.code_4bit(q)) for q in ("nf4", "fp4")):
        return "custom 4-bit code book (only NF4 / FP4 tables are built in)"
    return True


SUPPORTS = {"gemv_4bit": _gemv_supports}

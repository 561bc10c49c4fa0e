"""Reference 4-bit (NF4 / FP4) quantization, dequantization and gemv: vectorized PyTorch, any device."""

from __future__ import annotations

import functools
import math

import torch

from bnb_api.core import codes as code_books
from bnb_api.core.reference.blockwise import block_view, dequantize_flat, nearest_code, scale_blocks


@functools.cache
def sorted_code_4bit(quant_type: str, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The code book sorted ascending (stable: FP4's +0, code 0, sorts before -0, code 8) and the
    4-bit code of each sorted entry. Quantization picks the nearest sorted entry (ties: lower value)."""
    table = code_books.code_4bit(quant_type, "cpu")
    values, order = torch.sort(table, stable=True)
    return values.to(device), order.to(torch.uint8).to(device)


def encode_4bit(scaled: torch.Tensor, quant_type: str) -> torch.Tensor:
    """4-bit codes (uint8 0..15) of values in [-1, 1]: the nearest code-book value, ties to the lower
    value; among FP4's two zeros, values <= 0 take +0 (code 0) and values > 0 take -0 (code 8), which
    is what bitsandbytes 0.50 writes on CPU (both decode to 0)."""
    values, codes = sorted_code_4bit(quant_type, str(scaled.device))
    return codes[nearest_code(scaled, values)]


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """Pack uint8 codes (2m,) two per byte, element 2i in the high nibble."""
    return (q[0::2] << 4) | q[1::2]


def unpack_nibbles(packed: torch.Tensor, n: int) -> torch.Tensor:
    """uint8 codes (n,) from packed bytes (high nibble first)."""
    packed = packed.reshape(-1)
    return torch.stack([packed >> 4, packed & 0xF], dim=1).reshape(-1)[:n]


def quantize_4bit(
    A: torch.Tensor, blocksize: int, quant_type: str, quant_storage: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of ``bnb_api::quantize_4bit``."""
    n = A.numel()
    scaled, absmax = scale_blocks(A.reshape(-1), blocksize)
    flat = scaled.reshape(-1)[: n + (n % 2)]  # an odd length keeps one zero of padding: the code of 0
    packed = pack_nibbles(encode_4bit(flat, quant_type))
    return packed.view(quant_storage).reshape(-1, 1), absmax


def dequantize_4bit_flat(
    A: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int, n: int
) -> torch.Tensor:
    """float32 (n,) values of packed 4-bit codes with the (16,) code book ``code``."""
    return dequantize_flat(unpack_nibbles(A.view(torch.uint8), n), absmax, code, blocksize)


def dequantize_4bit(
    A: torch.Tensor, absmax: torch.Tensor, blocksize: int, quant_type: str, shape: list[int], dtype: torch.dtype
) -> torch.Tensor:
    """Reference of ``bnb_api::dequantize_4bit``."""
    n = 1
    for s in shape:
        n *= s
    code = code_books.code_4bit(quant_type, A.device)
    return dequantize_4bit_flat(A, absmax, code, blocksize, n).to(dtype).view(tuple(shape))


def nested_absmax_values(
    absmax: torch.Tensor, nested_absmax: torch.Tensor, nested_code: torch.Tensor, nested_offset: torch.Tensor,
    nested_blocksize: int,
) -> torch.Tensor:  # fmt: skip
    """float32 absmax of nested statistics: ``nested_code[absmax] * nested_absmax[i // bs] + offset``."""
    return dequantize_flat(absmax, nested_absmax, nested_code, nested_blocksize) + nested_offset.reshape(())


def gemv_4bit(
    A: torch.Tensor, B: torch.Tensor, shapeB: list[int], absmax: torch.Tensor, code: torch.Tensor, blocksize: int,
    nested_absmax: torch.Tensor | None = None, nested_code: torch.Tensor | None = None,
    nested_offset: torch.Tensor | None = None, nested_blocksize: int = 256,
) -> torch.Tensor:  # fmt: skip
    """Reference of ``bnb_api::gemv_4bit``: dequantize to float32, multiply, cast to ``A.dtype``."""
    N, K = shapeB
    if nested_absmax is not None:
        absmax = nested_absmax_values(absmax, nested_absmax, nested_code, nested_offset, nested_blocksize)
    W = dequantize_4bit_flat(B, absmax, code, blocksize, N * K).view(N, K)
    out = A.reshape(math.prod(A.shape[:-1]), K).float() @ W.T
    return out.to(A.dtype).view(*A.shape[:-1], N)


__all__ = ["quantize_4bit", "dequantize_4bit", "gemv_4bit", "block_view"]

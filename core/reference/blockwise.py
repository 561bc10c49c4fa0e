"""Reference 8-bit blockwise quantization: vectorized PyTorch, any device, the ground truth."""

from __future__ import annotations

import torch
import torch.nn.functional as F

FLT_MAX = torch.finfo(torch.float32).max


def block_view(flat: torch.Tensor, blocksize: int) -> torch.Tensor:
    """``flat`` (n,) padded with zeros to whole blocks, as (n_blocks, blocksize)."""
    n = flat.numel()
    pad = (-n) % blocksize
    return F.pad(flat, (0, pad)).view(-1, blocksize)


def scale_blocks(flat: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Blockwise absmax and values scaled to [-1, 1] by ``x * (1 / absmax)`` in float32.

    Returns (scaled (n_blocks, blocksize) incl. zero padding, absmax float32 (n_blocks,)). An all-zero
    block scales by 0; the reciprocal is capped at FLT_MAX so tiny blocks never produce inf or NaN.
    """
    blocks = block_view(flat.float(), blocksize)
    absmax = blocks.abs().amax(dim=1)
    inv = torch.where(absmax > 0, torch.reciprocal(absmax), torch.zeros_like(absmax)).clamp(max=FLT_MAX)
    scaled = (blocks * inv[:, None]).clamp(-1.0, 1.0)
    return scaled, absmax


def nearest_code(values: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Index of the nearest entry of the ascending ``code`` for each value; ties take the lower index.

    Implemented as the count of float32 midpoints ``(code[i] + code[i+1]) / 2`` strictly below the value.
    """
    midpoints = (code[:-1] + code[1:]) * 0.5
    return torch.bucketize(values.contiguous(), midpoints, right=False)


def quantize_flat(flat: torch.Tensor, code: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 codes (n,) and float32 absmax (n_blocks,) of a flat float tensor."""
    n = flat.numel()
    scaled, absmax = scale_blocks(flat, blocksize)
    codes = nearest_code(scaled.reshape(-1), code.float()).to(torch.uint8)[:n]
    return codes, absmax


def dequantize_flat(codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int) -> torch.Tensor:
    """float32 (n,) values ``code[codes] * absmax[block]`` of flat uint8 codes."""
    n = codes.numel()
    values = code.float()[codes.reshape(-1).long()]
    return (block_view(values, blocksize) * absmax[:, None]).reshape(-1)[:n]


def quantize_blockwise(A: torch.Tensor, code: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference of ``bnb_api::quantize_blockwise``."""
    codes, absmax = quantize_flat(A.reshape(-1), code, blocksize)
    return codes.view(A.shape), absmax


def dequantize_blockwise(
    A: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int, dtype: torch.dtype
) -> torch.Tensor:
    """Reference of ``bnb_api::dequantize_blockwise``."""
    return dequantize_flat(A, absmax, code, blocksize).to(dtype).view(A.shape)

"""Reference LLM.int8() primitives and their default composition: vectorized PyTorch, any device."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

INV_127_SQ = 1.0 / (127.0 * 127.0)
_EXACT_CHUNK = 1024  # fp32 sums of <= 1024 int8*int8 products are exact (< 2^24)


def int8_vectorwise_quant(A: torch.Tensor, threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference of ``bnb_api::int8_vectorwise_quant``.

    Entries with ``|x| >= threshold`` (threshold > 0) are left out of the row absmax; every column
    holding one is an outlier column and is zeroed in the codes.
    """
    K = A.shape[-1]
    x = A.reshape(math.prod(A.shape[:-1]), K).float()
    outlier_cols = torch.empty(0, dtype=torch.int64, device=A.device)
    if threshold > 0:
        is_outlier = x.abs() >= threshold
        x_in = x.masked_fill(is_outlier, 0.0)
        outlier_cols = torch.nonzero(is_outlier.any(dim=0)).reshape(-1)
    else:
        x_in = x
    row_absmax = x_in.abs().amax(dim=1) if K else x.new_zeros(x.shape[0])
    scale = torch.where(row_absmax > 0, 127.0 / row_absmax, torch.zeros_like(row_absmax))
    codes = torch.round(x_in * scale[:, None]).clamp(-127, 127).to(torch.int8)
    if outlier_cols is not None and outlier_cols.numel():  # the op gives None at threshold 0
        codes[:, outlier_cols] = 0
    return codes.view(A.shape), row_absmax, outlier_cols


def int8_linear_matmul(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Reference of ``bnb_api::int8_linear_matmul``: exact int32 ``A @ B.T`` on any device.

    K is cut into chunks of 1024 whose float32 products are exact; the chunk sums add up in int32.
    """
    K = A.shape[-1]
    a = A.reshape(math.prod(A.shape[:-1]), K)
    out = torch.zeros((a.shape[0], B.shape[0]), dtype=torch.int32, device=A.device)
    for k0 in range(0, K, _EXACT_CHUNK):
        part = a[:, k0 : k0 + _EXACT_CHUNK].float() @ B[:, k0 : k0 + _EXACT_CHUNK].float().T
        out += part.to(torch.int32)
    return out.view(*A.shape[:-1], B.shape[0])


def int8_mm_dequant(
    A: torch.Tensor,
    row_stats: torch.Tensor,
    col_stats: torch.Tensor,
    dtype: torch.dtype | None = None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """Reference of ``bnb_api::int8_mm_dequant``: ``(A * (row * col)) * (1/127^2) + bias`` in float32."""
    N = A.shape[-1]
    scale = row_stats.reshape(-1, 1) * col_stats.reshape(1, -1)
    out = (A.reshape(-1, N).float() * scale) * torch.tensor(INV_127_SQ, dtype=torch.float32)
    if bias is not None:
        out = out + bias.float()
    return out.to(dtype or torch.float16).view(A.shape)


def compose_mm_outlier(
    A: torch.Tensor,
    CB: torch.Tensor,
    SCB: torch.Tensor,
    threshold: float,
    bias: torch.Tensor | None,
    quant: Callable,
    matmul: Callable,
    dequant: Callable,
) -> torch.Tensor:
    """``int8_mm_outlier`` built from the three primitives given (reference or dispatched ops)."""
    CA, SCA, outlier_cols = quant(A, threshold)
    out = dequant(matmul(CA, CB), SCA, SCB, torch.float32, bias)
    if outlier_cols is not None and outlier_cols.numel():  # the op gives None at threshold 0
        K = A.shape[-1]
        sub_a = A.reshape(-1, K)[:, outlier_cols].float()
        sub_w = CB[:, outlier_cols].float() * (SCB.reshape(-1, 1) / 127.0)
        out = out.reshape(-1, CB.shape[0]).addmm(sub_a, sub_w.T).view(out.shape)
    return out.to(A.dtype)


def int8_mm_outlier(A, CB, SCB, threshold, bias=None):
    """Reference of ``bnb_api::int8_mm_outlier`` (reference primitives throughout)."""
    return compose_mm_outlier(A, CB, SCB, threshold, bias, int8_vectorwise_quant, int8_linear_matmul, int8_mm_dequant)


def int8_mm_outlier_composite(A, CB, SCB, threshold, bias=None):
    """``int8_mm_outlier`` as the dispatched primitives, so each one runs on its best backend."""
    ops = torch.ops.bnb_api
    return compose_mm_outlier(
        A, CB, SCB, threshold, bias, ops.int8_vectorwise_quant, ops.int8_linear_matmul, ops.int8_mm_dequant
    )

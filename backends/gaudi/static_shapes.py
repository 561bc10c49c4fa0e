"""LLM.int8() kernels with static shapes for Intel Gaudi (HPU).

Gaudi compiles graphs for fixed tensor shapes; a data-dependent shape (``torch.nonzero``, indexing with
its result) breaks the graph and recompiles for every new outlier count. The reference selects the
outlier columns with ``nonzero`` and gathers / scatters them; here they stay a fixed-size (K,) mask:

* :func:`int8_vectorwise_quant` zeroes outlier columns with ``masked_fill`` and calls ``nonzero`` once,
  at the very end, only because the op's result ``outlier_cols`` has a data-dependent length.
* :func:`int8_mm_outlier` never materializes the column list: the outlier part is a full-width
  float32 product of the masked activations (zeros outside outlier columns) with the dequantized
  weight. That costs one more K-wide matmul, which Gaudi's matrix engine does far faster than a
  recompilation; the sum differs from the reference's only in float32 accumulation order.
"""

from __future__ import annotations

import torch


def quantize_rows(A: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row-wise int8 codes, row absmax and the (K,) bool outlier-column mask, all with static shapes."""
    K = A.shape[-1]
    x = A.reshape(-1, K).float()
    if threshold > 0:
        is_outlier = x.abs() >= threshold
        col_mask = is_outlier.any(dim=0)
        x_in = x.masked_fill(is_outlier, 0.0)
    else:
        col_mask = torch.zeros((K,), dtype=torch.bool, device=A.device)
        x_in = x
    row_absmax = x_in.abs().amax(dim=1) if K else x.new_zeros(x.shape[0])
    scale = torch.where(row_absmax > 0, 127.0 / row_absmax, torch.zeros_like(row_absmax))
    codes = torch.round(x_in * scale[:, None]).clamp(-127, 127).masked_fill(col_mask[None, :], 0.0)
    return codes.to(torch.int8).view(A.shape), row_absmax, col_mask


def int8_vectorwise_quant(A: torch.Tensor, threshold: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Static-shape ``bnb_api::int8_vectorwise_quant`` (one ``nonzero``, for the result's column list)."""
    codes, row_absmax, col_mask = quantize_rows(A, threshold)
    if threshold > 0:
        outlier_cols = torch.nonzero(col_mask).reshape(-1)
    else:
        outlier_cols = torch.empty((0,), dtype=torch.int64, device=A.device)
    return codes, row_absmax, outlier_cols


def int8_mm_outlier(A, CB, SCB, threshold, bias=None):
    """Static-shape ``bnb_api::int8_mm_outlier``: int8 product of the regular columns (dispatched
    ``int8_linear_matmul`` / ``int8_mm_dequant``) plus a masked full-width float32 outlier product."""
    ops = torch.ops.bnb_api
    K, N = A.shape[-1], CB.shape[0]
    CA, SCA, col_mask = quantize_rows(A, threshold)
    out = ops.int8_mm_dequant(ops.int8_linear_matmul(CA, CB), SCA, SCB, torch.float32, bias)
    if threshold > 0:
        sub_a = A.reshape(-1, K).float().masked_fill(~col_mask[None, :], 0.0)
        sub_w = CB.float() * (SCB.reshape(-1, 1) / 127.0)
        out = out.reshape(-1, N).addmm(sub_a, sub_w.T).view(out.shape)
    return out.to(A.dtype)

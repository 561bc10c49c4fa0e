"""Vectorized PyTorch kernels that bound the size of every temporary tensor (used by xpu and mps).

The reference materializes float32 (and int64 index) temporaries as large as the whole input. Two
devices cannot hold those for large tensors: Intel GPUs refuse single allocations above 4 GiB unless
the program opts in, and Metal (MPS) arrays are limited to 2^32 bytes. These kernels cut the work into
block-aligned chunks of at most ``max_elements`` values and call the reference building blocks on
each, so the results are those of the reference (bit-exact for codes, absmax and dequantized values;
the same float32 operations for the optimizers, norms summed per chunk). Inputs at or below the
limit go straight to the reference. Nothing here uses float64 (neither device has it everywhere).

:func:`make_kernels` returns the kernels for a given chunk size (tests use small ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from bnb_api.core import codes as code_books
from bnb_api.core.checks import n_blocks
from bnb_api.core.ops import TWO_STATE_OPTIMIZERS
from bnb_api.core.reference import blockwise as ref_blockwise
from bnb_api.core.reference import fourbit as ref_fourbit
from bnb_api.core.reference import optim as ref_optim

DEFAULT_MAX_ELEMENTS = 1 << 28  # 1 GiB of float32 per temporary


def aligned_chunk(max_elements: int, blocksize: int) -> int:
    """The largest multiple of ``blocksize`` not above ``max_elements`` (at least one block)."""
    return max(blocksize, (max_elements // blocksize) * blocksize)


def _ranges(n: int, chunk: int):
    for start in range(0, n, chunk):
        yield start, min(start + chunk, n)


def _dequantize_4bit_range(packed: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, blocksize: int, s: int,
                           e: int) -> torch.Tensor:  # fmt: skip
    """float32 values of elements [s, e) of packed 4-bit codes (``s`` a multiple of ``blocksize``)."""
    scale = absmax[s // blocksize : n_blocks(e, blocksize)]
    return ref_fourbit.dequantize_4bit_flat(packed[s // 2 : (e + 1) // 2], scale, code, blocksize, e - s)


def make_kernels(max_elements: int = DEFAULT_MAX_ELEMENTS) -> dict[str, Callable]:
    """Op name -> kernel whose temporaries stay within ``max_elements`` values (block-aligned chunks)."""

    def quantize_blockwise(A, code, blocksize):
        """Chunked ``bnb_api::quantize_blockwise``."""
        n = A.numel()
        if n <= max_elements:
            return ref_blockwise.quantize_blockwise(A, code, blocksize)
        flat, chunk = A.reshape(-1), aligned_chunk(max_elements, blocksize)
        out = torch.empty((n,), dtype=torch.uint8, device=A.device)
        absmax = torch.empty((n_blocks(n, blocksize),), dtype=torch.float32, device=A.device)
        for s, e in _ranges(n, chunk):
            codes, scale = ref_blockwise.quantize_flat(flat[s:e], code, blocksize)
            out[s:e] = codes
            absmax[s // blocksize : s // blocksize + scale.numel()] = scale
        return out.view(A.shape), absmax

    def dequantize_blockwise(A, absmax, code, blocksize, dtype):
        """Chunked ``bnb_api::dequantize_blockwise``."""
        n = A.numel()
        if n <= max_elements:
            return ref_blockwise.dequantize_blockwise(A, absmax, code, blocksize, dtype)
        flat, chunk = A.reshape(-1), aligned_chunk(max_elements, blocksize)
        out = torch.empty((n,), dtype=dtype, device=A.device)
        for s, e in _ranges(n, chunk):
            scale = absmax[s // blocksize : n_blocks(e, blocksize)]
            out[s:e] = ref_blockwise.dequantize_flat(flat[s:e], scale, code, blocksize).to(dtype)
        return out.view(A.shape)

    def quantize_4bit(A, blocksize, quant_type, quant_storage):
        """Chunked ``bnb_api::quantize_4bit`` (chunks hold whole blocks, so whole bytes but the last)."""
        n = A.numel()
        if n <= max_elements:
            return ref_fourbit.quantize_4bit(A, blocksize, quant_type, quant_storage)
        flat, chunk = A.reshape(-1), aligned_chunk(max_elements, blocksize)
        packed = torch.empty(((n + 1) // 2,), dtype=torch.uint8, device=A.device)
        absmax = torch.empty((n_blocks(n, blocksize),), dtype=torch.float32, device=A.device)
        for s, e in _ranges(n, chunk):
            part, scale = ref_fourbit.quantize_4bit(flat[s:e], blocksize, quant_type, torch.uint8)
            packed[s // 2 : s // 2 + part.numel()] = part.reshape(-1)
            absmax[s // blocksize : s // blocksize + scale.numel()] = scale
        return packed.view(quant_storage).reshape(-1, 1), absmax

    def dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype):
        """Chunked ``bnb_api::dequantize_4bit``."""
        n = math.prod(shape)
        if n <= max_elements:
            return ref_fourbit.dequantize_4bit(A, absmax, blocksize, quant_type, shape, dtype)
        code = code_books.code_4bit(quant_type, A.device)
        flat, chunk = A.view(torch.uint8).reshape(-1), aligned_chunk(max_elements, blocksize)
        out = torch.empty((n,), dtype=dtype, device=A.device)
        for s, e in _ranges(n, chunk):
            out[s:e] = _dequantize_4bit_range(flat, absmax, code, blocksize, s, e).to(dtype)
        return out.view(tuple(shape))

    def gemv_4bit(A, B, shapeB, absmax, code, blocksize, nested_absmax=None, nested_code=None, nested_offset=None,
                  nested_blocksize=256):  # fmt: skip
        """Chunked ``bnb_api::gemv_4bit``: the weight is dequantized a few block-aligned rows at a time."""
        N, K = shapeB
        if N * K <= max_elements:
            return ref_fourbit.gemv_4bit(A, B, shapeB, absmax, code, blocksize, nested_absmax, nested_code,
                                         nested_offset, nested_blocksize)  # fmt: skip
        if nested_absmax is not None:
            absmax = ref_fourbit.nested_absmax_values(absmax, nested_absmax, nested_code, nested_offset,
                                                      nested_blocksize)  # fmt: skip
        # chunks start on a quantization block (so on a byte): a multiple of blocksize / gcd(K, blocksize) rows
        unit = blocksize // math.gcd(K, blocksize)
        rows = max(unit, (max_elements // max(K * unit, 1)) * unit)
        a = A.reshape(-1, K).float()
        flat = B.view(torch.uint8).reshape(-1)
        out = torch.empty((a.shape[0], N), dtype=torch.float32, device=A.device)
        for r0 in range(0, N, rows):
            r1 = min(r0 + rows, N)
            s, e = r0 * K, r1 * K
            W = _dequantize_4bit_range(flat, absmax, code, blocksize, s, e)
            out[:, r0:r1] = a @ W.view(r1 - r0, K).T
        return out.to(A.dtype).view(*A.shape[:-1], N)

    def optimizer_step(optimizer, p, g, state1, state2, absmax1, absmax2, qmap1, qmap2, lr, beta1, beta2, beta3,
                       alpha, eps, weight_decay, step, gnorm_scale=1.0, max_unorm=0.0, blocksize=256):  # fmt: skip
        """Chunked ``bnb_api::optimizer_step``; with ``max_unorm > 0`` a first pass sums the norms."""
        n = p.numel()
        if n <= max_elements:
            return ref_optim.optimizer_step(optimizer, p, g, state1, state2, absmax1, absmax2, qmap1, qmap2, lr, beta1,
                                            beta2, beta3, alpha, eps, weight_decay, step, gnorm_scale, max_unorm,
                                            blocksize)  # fmt: skip
        state = _OptimizerState(optimizer, state1, state2, absmax1, absmax2, qmap1, qmap2, blocksize, n)
        p_flat, g_flat = p.view(-1), g.reshape(-1)
        chunk = aligned_chunk(max_elements, blocksize)

        def direction(s, e):
            p32 = p_flat[s:e].float()
            values = state.load(s, e)
            u = ref_optim.update_direction(optimizer, g_flat[s:e].float() * gnorm_scale, p32, values, beta1, beta2,
                                           beta3, alpha, eps, weight_decay, step)  # fmt: skip
            return p32, u, values

        scale: torch.Tensor | float = 1.0
        if max_unorm > 0:
            u_sq = torch.zeros((), dtype=torch.float32, device=p.device)
            p_sq = torch.zeros((), dtype=torch.float32, device=p.device)
            for s, e in _ranges(n, chunk):
                p32, u, _ = direction(s, e)
                u_sq, p_sq = u_sq + (u * u).sum(), p_sq + (p32 * p32).sum()
            unorm, limit = torch.sqrt(u_sq), max_unorm * torch.sqrt(p_sq)
            clip = (limit > 0) & (unorm > limit)
            scale = torch.where(clip, limit / unorm.clamp(min=1e-38), torch.ones_like(unorm))
        for s, e in _ranges(n, chunk):
            p32, u, values = direction(s, e)
            if optimizer not in ref_optim.COUPLED_WEIGHT_DECAY and weight_decay > 0:
                p32 = p32 * (1 - lr * weight_decay)
            p_flat[s:e] = (p32 - lr * scale * u).to(p.dtype)
            state.store(s, e, values)

    def optimizer_step_multi(optimizer, params, grads, state1, state2, absmax1, absmax2, qmap1, qmap2, lr, beta1,
                             beta2, beta3, alpha, eps, weight_decay, step, gnorm_scale=1.0, max_unorm=0.0,
                             blocksize=256):  # fmt: skip
        """Chunked ``bnb_api::optimizer_step_multi``: :func:`optimizer_step` per parameter."""
        for i, (p, g) in enumerate(zip(params, grads)):
            optimizer_step(optimizer, p, g, state1[i], state2[i] if state2 else None, absmax1[i] if absmax1 else None,
                           absmax2[i] if absmax2 else None, qmap1, qmap2, lr, beta1, beta2, beta3, alpha, eps,
                           weight_decay, step, gnorm_scale, max_unorm, blocksize)  # fmt: skip

    return {
        "quantize_blockwise": quantize_blockwise,
        "dequantize_blockwise": dequantize_blockwise,
        "quantize_4bit": quantize_4bit,
        "dequantize_4bit": dequantize_4bit,
        "gemv_4bit": gemv_4bit,
        "optimizer_step": optimizer_step,
        "optimizer_step_multi": optimizer_step_multi,
    }


class _OptimizerState:
    """Float32 views of a chunk of the optimizer states (32-bit or 8-bit blockwise), and their write-back."""

    def __init__(self, optimizer, state1, state2, absmax1, absmax2, qmap1, qmap2, blocksize, n):
        two = optimizer in TWO_STATE_OPTIMIZERS
        self.arrays = list(state1.view(2, n)) if optimizer == "ademamix" else [state1.view(n)]
        if two:
            self.arrays.append(state2.view(n))
        self.eight_bit = state1.dtype == torch.uint8
        self.blocksize = blocksize
        if self.eight_bit:
            self.scales = list(absmax1.view(-1, absmax1.shape[-1])) + ([absmax2] if two else [])
            self.maps = [qmap1] * (len(self.arrays) - two) + ([qmap2] if two else [])

    def load(self, s: int, e: int) -> list[torch.Tensor]:
        """float32 copies of every state on elements [s, e) (s block-aligned)."""
        if not self.eight_bit:
            return [a[s:e].clone() for a in self.arrays]
        b0, b1 = s // self.blocksize, n_blocks(e, self.blocksize)
        return [ref_blockwise.dequantize_flat(a[s:e], sc[b0:b1], q, self.blocksize)
                for a, sc, q in zip(self.arrays, self.scales, self.maps)]  # fmt: skip

    def store(self, s: int, e: int, values: list[torch.Tensor]) -> None:
        """Write updated float32 states back (8-bit: requantized, new absmax per block)."""
        if not self.eight_bit:
            for a, v in zip(self.arrays, values):
                a[s:e] = v
            return
        b0 = s // self.blocksize
        for a, sc, q, v in zip(self.arrays, self.scales, self.maps, values):
            codes, absmax = ref_blockwise.quantize_flat(v, q, self.blocksize)
            a[s:e] = codes
            sc[b0 : b0 + absmax.numel()] = absmax

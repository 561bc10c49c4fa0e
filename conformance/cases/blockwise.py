"""Cases of the 8-bit blockwise ops: ``quantize_blockwise`` and ``dequantize_blockwise``."""

from __future__ import annotations

import torch

from bnb_api.conformance import assertions as check
from bnb_api.conformance import strategies as S
from bnb_api.conformance.cases import BLOCKSIZES_8BIT, FLOATS, QUICK_8BIT, Cell, OpCase
from bnb_api.conformance.tolerances import tolerance
from bnb_api.core import codes


def code_book(name: str, device) -> torch.Tensor:
    """The signed or unsigned dynamic map on ``device``."""
    return codes.dynamic_map(signed=name == "signed", device=device)


def finite_block_mask(A: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(per element, per block) bool masks of the blocks of flattened ``A`` that hold no inf/NaN.

    Blocks with inf/NaN are outside the comparison (core/ops.py: codes there are unspecified).
    """
    flat = A.detach().reshape(-1).cpu()
    n = flat.numel()
    nb = -(-n // blocksize)
    pad = torch.zeros(nb * blocksize - n, dtype=torch.bool)
    bad = torch.cat([~torch.isfinite(flat), pad]).view(nb, blocksize).any(dim=1)
    return (~bad).repeat_interleave(blocksize)[:n], ~bad


class QuantizeBlockwise(OpCase):
    op = "quantize_blockwise"
    n_outputs = 2

    def cells(self, quick):
        return [Cell(self.op, dt, "dynamic", bs) for dt in FLOATS for bs in (QUICK_8BIT if quick else BLOCKSIZES_8BIT)]

    def strategy(self, cell, lim):
        return S.quantize_blockwise(cell.dtype, lim)

    def edges(self, cell):
        bs, dt = cell.blocksize, cell.dtype
        F = S.FloatSpec
        return [
            S.Example.of(A=F((1,), dt, seed=1), code="signed"),
            S.Example.of(A=F((3 * bs + 1,), dt, values="ties", zero_blocks=True, seed=2), code="signed"),
            S.Example.of(A=F((2 * bs + 7,), dt, values="ties", seed=3), code="unsigned"),
            S.Example.of(A=F((3, 5, 7), dt, layout="transposed", values="huge", seed=4), code="signed"),
            S.Example.of(A=F((2, bs + 3), dt, layout="strided", values="subnormal", seed=5), code="signed"),
            S.Example.of(A=F((5 * bs + 11,), dt, values="mixed", specials=True, seed=6), code="signed"),
            S.Example.of(A=F((bs,), dt, values="tiny", seed=7), code="signed"),
        ]

    def build(self, ex, cell, device):
        code = code_book(ex["code"], device)
        return S.make_float(ex["A"], device, cell.blocksize, code), code, cell.blocksize

    def compare(self, got, want, args, cell, ctx):
        check.assert_outputs(self.op, got, 2, ctx)
        elem_mask, block_mask = finite_block_mask(args[0], cell.blocksize)
        stats = check.assert_exact(self.op, "codes", got[0], want[0], ctx, mask=elem_mask)
        check.assert_exact(self.op, "absmax", got[1], want[1], ctx, mask=block_mask)
        return stats

    def bench_example(self, cell, numel):
        return S.Example.of(A=S.FloatSpec((numel,), cell.dtype), code="signed")


class DequantizeBlockwise(OpCase):
    op = "dequantize_blockwise"

    def cells(self, quick):
        return [Cell(self.op, dt, "dynamic", bs) for dt in FLOATS for bs in (QUICK_8BIT if quick else BLOCKSIZES_8BIT)]

    def strategy(self, cell, lim):
        return S.dequantize_blockwise(lim)

    def edges(self, cell):
        bs = cell.blocksize
        E = S.Example.of
        return [
            E(shape=(1,), layout="contiguous", absmax="normal", seed=1, code="signed"),
            E(shape=(3 * bs + 1,), layout="contiguous", absmax="zeros", seed=2, code="signed"),
            E(shape=(3, 5, 7), layout="transposed", absmax="huge", seed=3, code="unsigned"),
            E(shape=(2, bs + 3), layout="strided", absmax="tiny", seed=4, code="signed"),
        ]

    def build(self, ex, cell, device):
        n = S.numel(ex["shape"])
        A = S.random_bytes(n, ex["seed"], device).view(ex["shape"])
        A = S.with_layout(A, ex["layout"])
        absmax = S.positive(-(-n // cell.blocksize), ex["seed"] + 1, ex["absmax"], device)
        return A, absmax, code_book(ex["code"], device), cell.blocksize, S.DTYPES[cell.dtype]

    def compare(self, got, want, args, cell, ctx):
        check.assert_outputs(self.op, got, 1, ctx)
        return check.assert_close(self.op, "out", got[0], want[0], tolerance(self.op, cell.dtype, cell.fmt), ctx)

    def bench_example(self, cell, numel):
        return S.Example.of(shape=(numel,), layout="contiguous", absmax="normal", seed=0, code="signed")


CASES = [QuantizeBlockwise(), DequantizeBlockwise()]

"""Cases of the 4-bit ops: ``quantize_4bit``, ``dequantize_4bit`` and ``gemv_4bit`` (plain and nested absmax)."""

from __future__ import annotations

import dataclasses

import torch

from bnb_api.conformance import assertions as check
from bnb_api.conformance import strategies as S
from bnb_api.conformance.cases import BLOCKSIZES_4BIT, FLOATS, QUICK_4BIT, Cell, OpCase
from bnb_api.conformance.cases.blockwise import finite_block_mask
from bnb_api.conformance.tolerances import tolerance
from bnb_api.core import codes
from bnb_api.core.reference import fourbit as ref4

QUANT_TYPES = ("nf4", "fp4")


def storage_for(name: str, n: int) -> torch.dtype:
    """``name`` as a dtype if its size divides the ``ceil(n/2)`` packed bytes, else uint8."""
    dtype = S.DTYPES.get(name) or getattr(torch, name)
    itemsize = torch.empty((), dtype=dtype).element_size()
    return dtype if ((n + 1) // 2) % itemsize == 0 else torch.uint8


def unpacked(packed: torch.Tensor, n: int) -> torch.Tensor:
    """The ``n + n % 2`` nibbles (high first, pad included) of a packed tensor of any storage dtype."""
    return ref4.unpack_nibbles(packed.detach().contiguous().view(torch.uint8).reshape(-1).cpu(), n + n % 2)


def _cells(op: str, quick: bool, fmts) -> list[Cell]:
    sizes = QUICK_4BIT if quick else BLOCKSIZES_4BIT
    return [Cell(op, dt, fmt, bs) for dt in FLOATS for fmt in fmts for bs in sizes]


class Quantize4bit(OpCase):
    op = "quantize_4bit"
    n_outputs = 2

    def cells(self, quick):
        return _cells(self.op, quick, QUANT_TYPES)

    def strategy(self, cell, lim):
        return S.quantize_4bit(cell.dtype, lim)

    def edges(self, cell):
        bs, dt = cell.blocksize, cell.dtype
        F = S.FloatSpec
        E = S.Example.of
        return [
            E(A=F((1,), dt, seed=1), quant_storage="uint8"),
            E(A=F((3 * bs + 1,), dt, values="ties", zero_blocks=True, seed=2), quant_storage="uint8"),
            E(A=F((4 * bs,), dt, values="ties", seed=3), quant_storage="float32"),
            E(A=F((3, 5, 7), dt, layout="transposed", values="huge", seed=4), quant_storage="uint8"),
            E(A=F((2, bs + 3), dt, layout="strided", values="subnormal", seed=5), quant_storage="uint8"),
            E(A=F((5 * bs + 11,), dt, values="mixed", specials=True, seed=6), quant_storage="uint8"),
            E(A=F((bs, 2), dt, values="tiny", seed=7), quant_storage="bfloat16"),
        ]

    def build(self, ex, cell, device):
        spec = ex["A"]
        A = S.make_float(spec, device, cell.blocksize, codes.code_4bit(cell.fmt))
        return A, cell.blocksize, cell.fmt, storage_for(ex["quant_storage"], S.numel(spec.shape))

    def compare(self, got, want, args, cell, ctx):
        check.assert_outputs(self.op, got, 2, ctx)
        A = args[0]
        n = A.numel()
        check.assert_meta(self.op, "packed", got[0], want[0], ctx)
        elem_mask, block_mask = finite_block_mask(A, cell.blocksize)
        nib_mask = torch.cat([elem_mask, torch.ones(n % 2, dtype=torch.bool)])  # the pad nibble: the code of 0
        stats = check.assert_exact(
            self.op, "codes (nibbles of packed, high first)", unpacked(got[0], n), unpacked(want[0], n), ctx, nib_mask
        )
        check.assert_exact(self.op, "absmax", got[1], want[1], ctx, mask=block_mask)
        return stats

    def bench_example(self, cell, numel):
        return S.Example.of(A=S.FloatSpec((numel,), cell.dtype), quant_storage="uint8")


class Dequantize4bit(OpCase):
    op = "dequantize_4bit"

    def cells(self, quick):
        return _cells(self.op, quick, QUANT_TYPES)

    def strategy(self, cell, lim):
        return S.dequantize_4bit(lim)

    def edges(self, cell):
        bs = cell.blocksize
        E = S.Example.of
        return [
            E(shape=(1,), absmax="normal", seed=1, quant_storage="uint8"),
            E(shape=(3 * bs + 1,), absmax="zeros", seed=2, quant_storage="uint8"),
            E(shape=(3, 5, 7), absmax="huge", seed=3, quant_storage="uint8"),
            E(shape=(2, 2 * bs), absmax="tiny", seed=4, quant_storage="float32"),
        ]

    def build(self, ex, cell, device):
        shape = list(ex["shape"])
        n = S.numel(shape)
        nbytes = (n + 1) // 2
        storage = storage_for(ex["quant_storage"], n)
        A = S.random_bytes(nbytes, ex["seed"], device).view(storage).reshape(-1, 1)
        absmax = S.positive(-(-n // cell.blocksize), ex["seed"] + 1, ex["absmax"], device)
        return A, absmax, cell.blocksize, cell.fmt, shape, S.DTYPES[cell.dtype]

    def compare(self, got, want, args, cell, ctx):
        check.assert_outputs(self.op, got, 1, ctx)
        return check.assert_close(self.op, "out", got[0], want[0], tolerance(self.op, cell.dtype, cell.fmt), ctx)

    def bench_example(self, cell, numel):
        return S.Example.of(shape=(numel,), absmax="normal", seed=0, quant_storage="uint8")


class Gemv4bit(OpCase):
    op = "gemv_4bit"

    def cells(self, quick):
        return _cells(self.op, quick, ("nf4", "fp4", "nf4+nested", "fp4+nested"))

    def strategy(self, cell, lim):
        return S.gemv_4bit(cell.dtype, lim, nested=cell.fmt.endswith("+nested"))

    def edges(self, cell):
        dt, bs = cell.dtype, cell.blocksize
        F = S.FloatSpec
        nested = {"nested_blocksize": 256} if cell.fmt.endswith("+nested") else {}
        E = S.Example.of
        return [
            E(N=1, K=1, A=F((1,), dt, seed=1), absmax="normal", seed=1, **nested),
            E(N=7, K=bs + 3, A=F((1, bs + 3), dt, layout="strided", seed=2), absmax="zeros", seed=2, **nested),
            E(N=129, K=2 * bs, A=F((1, 1, 2 * bs), dt, values="mixed", seed=3), absmax="normal", seed=3, **nested),
            E(N=3, K=31, A=F((31,), dt, values="tiny", seed=4), absmax="tiny", seed=4, **nested),
            E(N=37, K=2 * bs, A=F((2, 3, 2 * bs), dt, seed=5), absmax="normal", seed=5, **nested),  # a few rows
            # batched decoding: 9 rows against 80 weight rows (kernels that tile 8 rows of A or 16 weight rows)
            E(N=80, K=4 * bs, A=F((9, 4 * bs), dt, seed=6), absmax="normal", seed=6, **nested),
            # 21 rows against 160 weight rows: kernels that decode a group of weight rows once for several passes
            E(N=160, K=4 * bs, A=F((21, 4 * bs), dt, seed=7), absmax="normal", seed=7, **nested),
        ]

    def build(self, ex, cell, device):
        N, K, seed, bs = ex["N"], ex["K"], ex["seed"], cell.blocksize
        qt = cell.fmt.split("+")[0]
        A = S.make_float(ex["A"], device, K)
        B = S.random_bytes((N * K + 1) // 2, seed, device).reshape(-1, 1)
        nb = -(-(N * K) // bs)
        mode = "normal" if ex["absmax"] == "huge" else ex["absmax"]  # huge absmax overflows float32 sums
        code = codes.code_4bit(qt, device)
        if ex.get("nested_blocksize") is None:
            return A, B, [N, K], S.positive(nb, seed + 1, mode, device), code, bs, None, None, None, 256
        nbs = ex["nested_blocksize"]
        absmax = S.random_bytes(nb, seed + 1, device)
        nested_absmax = S.positive(-(-nb // nbs), seed + 2, mode, device) * 0.1
        nested_code = codes.dynamic_map(signed=True, device=device)
        offset = torch.tensor(0.05 if mode != "tiny" else 1e-30, dtype=torch.float32, device=device)
        return A, B, [N, K], absmax, code, bs, nested_absmax, nested_code, offset, nbs

    def compare(self, got, want, args, cell, ctx):
        check.assert_outputs(self.op, got, 1, ctx)
        A, B, (N, K), absmax, code, bs, nabs, ncode, noff, nbs = args
        if nabs is not None:
            absmax = ref4.nested_absmax_values(absmax, nabs, ncode, noff, nbs)
        W = ref4.dequantize_4bit_flat(B.reshape(-1).view(torch.uint8), absmax, code, bs, N * K).view(N, K)
        scale = (A.detach().reshape(-1, K).double().abs() @ W.double().abs().T).reshape(want[0].shape)
        tol = tolerance(self.op, cell.dtype, cell.fmt)
        # a float32 product that underflows rounds to within half the smallest subnormal, and the kernel and
        # the reference underflow in different products (code * absmax first, or A * code first): K + 1 ulps
        tol = dataclasses.replace(tol, atol=tol.atol * (K + 1))
        return check.assert_close(self.op, "out", got[0], want[0], tol, ctx, scale=scale)

    def bench_example(self, cell, numel):
        K = 1024
        nested = {"nested_blocksize": 256} if cell.fmt.endswith("+nested") else {}
        N = max(1, 4 * numel // K)
        return S.Example.of(N=N, K=K, A=S.FloatSpec((1, K), cell.dtype), absmax="normal", seed=0, **nested)


CASES = [Quantize4bit(), Dequantize4bit(), Gemv4bit()]

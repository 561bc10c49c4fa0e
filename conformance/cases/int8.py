"""Cases of the LLM.int8() ops: vectorwise quantization, the int8 matmul, its dequantization, the composite."""

from __future__ import annotations

import torch

from bnb_api.conformance import assertions as check
from bnb_api.conformance import strategies as S
from bnb_api.conformance.cases import FLOATS, Cell, OpCase
from bnb_api.conformance.tolerances import tolerance

THRESHOLDS = {"t=0": 0.0, "t=6": 6.0}


def int8_values(shape, seed: int, mode: str, device) -> torch.Tensor:
    """int8 of ``shape``: "codes" in [-127, 127], "full" in [-128, 127], "extreme" 127 (90%) or -128.

    "extreme" makes dot products beyond 2^24 (not exact in float32) from K of a few thousand on.
    """
    n = S.numel(shape)
    if mode == "extreme":
        x = torch.where(torch.rand(n, generator=S.generator(seed)) < 0.1, -128, 127)
    else:
        x = torch.randint(-127 if mode == "codes" else -128, 128, (n,), generator=S.generator(seed))
    return x.to(torch.int8).view(tuple(shape)).to(device)


class Int8VectorwiseQuant(OpCase):
    op = "int8_vectorwise_quant"
    n_outputs = 3

    def cells(self, quick):
        return [Cell(self.op, dt, t) for dt in FLOATS for t in THRESHOLDS]

    def strategy(self, cell, lim):
        return S.int8_vectorwise_quant(cell.dtype, lim, THRESHOLDS[cell.fmt])

    def edges(self, cell):
        F, E, dt = S.FloatSpec, S.Example.of, cell.dtype
        out = [
            E(A=F((1,), dt, seed=1)),
            E(A=F((5, 129), dt, values="ties", zero_blocks=True, seed=2)),
            E(A=F((3, 5, 7), dt, layout="transposed", values="huge", seed=3)),
            E(A=F((7, 33), dt, layout="strided", values="tiny", seed=4)),
            E(A=F((2, 3, 251), dt, values="mixed", seed=5)),
        ]
        if THRESHOLDS[cell.fmt] > 0:
            out.append(E(A=F((13, 97), dt, values="outliers", zero_blocks=True, seed=6)))
        return out

    def build(self, ex, cell, device):
        spec = ex["A"]
        t = THRESHOLDS[cell.fmt]
        return S.make_float(spec, device, block=spec.shape[-1], outlier_threshold=t), t

    def compare(self, got, want, args, cell, ctx):
        check.assert_outputs(self.op, got, 3, ctx)
        stats = check.assert_exact(self.op, "codes", got[0], want[0], ctx)
        check.assert_exact(self.op, "row_absmax", got[1], want[1], ctx)
        check.assert_exact(self.op, "outlier_cols", got[2], want[2], ctx)
        return stats

    def bench_example(self, cell, numel):
        return S.Example.of(A=S.FloatSpec((numel // 1024, 1024), cell.dtype))


class Int8LinearMatmul(OpCase):
    op = "int8_linear_matmul"

    def cells(self, quick):
        return [Cell(self.op, "int8", "int32")]

    def strategy(self, cell, lim):
        return S.int8_linear_matmul(lim)

    def edges(self, cell):
        E = S.Example.of
        return [
            E(A_shape=(1,), N=1, values="full", layout="contiguous", seed=1),
            E(A_shape=(3, 4099), N=5, values="extreme", layout="contiguous", seed=2),
            E(A_shape=(2, 3, 65), N=31, values="codes", layout="transposed", seed=3),
            E(A_shape=(7, 1031), N=3, values="full", layout="strided", seed=4),
            E(A_shape=(31, 1), N=2, values="codes", layout="contiguous", seed=5),  # many rows, K not a multiple of 8
            E(A_shape=(2, 17, 13), N=5, values="full", layout="contiguous", seed=6),
        ]

    def build(self, ex, cell, device):
        shape, seed = ex["A_shape"], ex["seed"]
        A = S.with_layout(int8_values(shape, seed, ex["values"], device), ex["layout"])
        return A, int8_values((ex["N"], shape[-1]), seed + 1, ex["values"], device)

    def compare(self, got, want, args, cell, ctx):
        check.assert_outputs(self.op, got, 1, ctx)
        return check.assert_exact(self.op, "out (int32)", got[0], want[0], ctx)

    def bench_example(self, cell, numel):
        return S.Example.of(A_shape=(64, 1024), N=max(1, numel // 1024), values="codes", layout="contiguous", seed=0)


class Int8MmDequant(OpCase):
    op = "int8_mm_dequant"

    def cells(self, quick):
        return [Cell(self.op, dt) for dt in FLOATS]

    def strategy(self, cell, lim):
        return S.int8_mm_dequant(lim)

    def edges(self, cell):
        E = S.Example.of
        return [
            E(shape=(1,), stats="normal", bias=None, seed=1),
            E(shape=(5, 129), stats="zeros", bias="float32", seed=2),
            E(shape=(2, 3, 7), stats="tiny", bias=cell.dtype, seed=3),
        ]

    def build(self, ex, cell, device):
        shape, seed = ex["shape"], ex["seed"]
        N = shape[-1]
        rows = S.numel(shape) // N
        big = 127 * 127 * 64
        A = torch.randint(-big, big + 1, shape, generator=S.generator(seed), dtype=torch.int32).to(device)
        mode = "normal" if ex["stats"] == "huge" else ex["stats"]  # huge * huge overflows: order-dependent inf/NaN
        row = S.positive(rows, seed + 1, mode, device)
        col = S.positive(N, seed + 2, mode, device)
        bias = None
        if ex["bias"]:
            bias = torch.randn(N, generator=S.generator(seed + 3)).to(S.DTYPES[ex["bias"]]).to(device)
        return A, row, col, S.DTYPES[cell.dtype], bias

    def compare(self, got, want, args, cell, ctx):
        check.assert_outputs(self.op, got, 1, ctx)
        A, row, col, _dtype, bias = args
        N = A.shape[-1]
        scale = (A.double().reshape(-1, N).abs() * row.double().reshape(-1, 1) * col.double().reshape(1, -1)) / 127**2
        if bias is not None:
            scale = scale + bias.double().abs().reshape(1, -1)
        tol = tolerance(self.op, cell.dtype, cell.fmt)
        return check.assert_close(self.op, "out", got[0], want[0], tol, ctx, scale=scale.reshape(A.shape))

    def bench_example(self, cell, numel):
        return S.Example.of(shape=(numel // 1024, 1024), stats="normal", bias=None, seed=0)


class Int8MmOutlier(OpCase):
    op = "int8_mm_outlier"

    def cells(self, quick):
        return [Cell(self.op, dt, t) for dt in FLOATS for t in THRESHOLDS]

    def strategy(self, cell, lim):
        return S.int8_mm_outlier(cell.dtype, lim, THRESHOLDS[cell.fmt])

    def edges(self, cell):
        F, E, dt = S.FloatSpec, S.Example.of, cell.dtype
        values = "outliers" if THRESHOLDS[cell.fmt] > 0 else "normal"
        return [
            E(A=F((1,), dt, seed=1), N=1, bias=None, seed=1),
            E(A=F((1, 1, 4099), dt, layout="strided", values=values, seed=4), N=65, bias=dt, seed=4),
            E(A=F((257,), dt, values=values, seed=5), N=31, bias=None, seed=5),
            E(A=F((5, 129), dt, values=values, zero_blocks=True, seed=2), N=7, bias=dt, seed=2),
            E(A=F((2, 3, 64), dt, layout="transposed", values=values, seed=3), N=33, bias=None, seed=3),
        ]

    def build(self, ex, cell, device):
        spec, seed = ex["A"], ex["seed"]
        t = THRESHOLDS[cell.fmt]
        K = spec.shape[-1]
        A = S.make_float(spec, device, block=K, outlier_threshold=t)
        CB = int8_values((ex["N"], K), seed, "codes", device)
        SCB = S.positive(ex["N"], seed + 1, "normal", device)
        bias = None
        if ex["bias"]:
            bias = torch.randn(ex["N"], generator=S.generator(seed + 2)).to(S.DTYPES[ex["bias"]]).to(device)
        return A, CB, SCB, t, bias

    def compare(self, got, want, args, cell, ctx):
        check.assert_outputs(self.op, got, 1, ctx)
        A, CB, SCB, _t, bias = args
        K = A.shape[-1]
        W = CB.double() * SCB.double().reshape(-1, 1) / 127.0
        scale = A.detach().double().reshape(-1, K).abs() @ W.abs().T
        if bias is not None:
            scale = scale + bias.double().abs().reshape(1, -1)
        tol = tolerance(self.op, cell.dtype, cell.fmt)
        return check.assert_close(self.op, "out", got[0], want[0], tol, ctx, scale=scale.reshape(want[0].shape))

    def bench_example(self, cell, numel):
        return S.Example.of(A=S.FloatSpec((16, 1024), cell.dtype), N=max(1, numel // 1024), bias=None, seed=0)


CASES = [Int8VectorwiseQuant(), Int8LinearMatmul(), Int8MmDequant(), Int8MmOutlier()]

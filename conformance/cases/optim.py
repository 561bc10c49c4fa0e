"""Cases of the optimizer ops: ``optimizer_step`` and ``optimizer_step_multi`` (32-bit and 8-bit states)."""

from __future__ import annotations

import torch

from bnb_api.conformance import assertions as check
from bnb_api.conformance import strategies as S
from bnb_api.conformance.cases import FLOATS, Cell, OpCase
from bnb_api.conformance.tolerances import tolerance
from bnb_api.core import codes
from bnb_api.core.ops import OPTIMIZERS, TWO_STATE_OPTIMIZERS
from bnb_api.core.reference.blockwise import quantize_flat

BLOCKSIZE_8BIT = 256
BETAS = {"lion": (0.9, 0.99)}  # others: (0.9, 0.999)


def _states(optimizer: str, shape, eight_bit: bool, seed: int, device):
    """(state1, state2, absmax1, absmax2) holding plausible moments: m ~ N(0, 0.1), v ~ |N(0, 0.01)|."""
    gen = S.generator(seed)
    n = S.numel(shape)
    signed_first = optimizer not in ("rmsprop", "adagrad")  # those keep only v (>= 0) in state1
    first = [torch.randn(n, generator=gen) * 0.1 if signed_first else torch.rand(n, generator=gen) * 0.01]
    if optimizer == "ademamix":
        first.append(torch.randn(n, generator=gen) * 0.1)
    second = torch.rand(n, generator=gen) * 0.01 if optimizer in TWO_STATE_OPTIMIZERS else None
    if not eight_bit:
        s1 = torch.stack(first).view(*((2,) if optimizer == "ademamix" else ()), *shape)
        s2 = None if second is None else second.view(shape)
        return s1.to(device), None if s2 is None else s2.to(device), None, None
    q1, q2 = codes.dynamic_map(True), codes.dynamic_map(False)
    c1, a1 = zip(*(quantize_flat(x, q1, BLOCKSIZE_8BIT) for x in first))
    s1 = torch.stack(c1).view(*((2,) if optimizer == "ademamix" else ()), *shape)
    absmax1 = torch.stack(a1) if optimizer == "ademamix" else a1[0]
    s2 = absmax2 = None
    if second is not None:
        c2, absmax2 = quantize_flat(second, q2, BLOCKSIZE_8BIT)
        s2 = c2.view(shape)
    mv = lambda t: None if t is None else t.contiguous().to(device)  # noqa: E731
    return mv(s1), mv(s2), mv(absmax1), mv(absmax2)


def _hyper(optimizer: str, h: dict) -> tuple:
    b1, b2 = BETAS.get(optimizer, (0.9, 0.999))
    # lr, beta1, beta2, beta3, alpha, eps, weight_decay, step, gnorm_scale, max_unorm
    return h["lr"], b1, b2, 0.9999, 5.0, 1e-8, h["weight_decay"], h["step"], h["gnorm_scale"], h["max_unorm"]


def _param(spec: S.FloatSpec, g_layout: str, seed: int, device):
    p = S.make_float(S.FloatSpec(spec.shape, spec.dtype, "contiguous", spec.values, spec.zero_blocks, False,
                                 spec.seed), device)  # fmt: skip
    g = torch.randn(spec.shape, generator=S.generator(seed)).to(S.DTYPES[spec.dtype])
    return p, S.with_layout(g.to(device), g_layout)


def _compare_states(op, got, want, eight_bit: bool, ctx: str, label: str = "") -> None:
    names = ("state1", "state2", "absmax1", "absmax2")
    for name, g, w in zip(names, got, want):
        if w is None:
            continue
        if eight_bit and name.startswith("state"):
            check.assert_codes_near(op, label + name, g, w, tolerance(op, "float32", "state8"), ctx)
        else:
            tol = tolerance(op, "float32", "state8" if eight_bit else "state32")
            check.assert_close(op, label + name, g, w, tol, ctx)


class OptimizerStep(OpCase):
    op = "optimizer_step"

    def cells(self, quick):
        return [
            Cell(self.op, dt, f"{opt}-{bits}", BLOCKSIZE_8BIT if bits == "8bit" else None)
            for opt in OPTIMIZERS for bits in ("32bit", "8bit") for dt in FLOATS
        ]  # fmt: skip

    def strategy(self, cell, lim):
        return S.optimizer_step(cell.dtype, lim)

    def edges(self, cell):
        F, E, dt = S.FloatSpec, S.Example.of, cell.dtype
        h = dict(lr=1e-3, weight_decay=1e-2, step=1, gnorm_scale=1.0, max_unorm=0.0)
        return [
            E(p=F((1,), dt, seed=1), g_layout="contiguous", hyper=h, seed=1),
            E(p=F((3, 5, 7), dt, zero_blocks=True, seed=2), g_layout="transposed", hyper={**h, "step": 3}, seed=2),
            E(p=F((2 * 256 + 3,), dt, values="tiny", seed=3), g_layout="contiguous",
              hyper={**h, "max_unorm": 0.02, "step": 10}, seed=3),
        ]  # fmt: skip

    def build(self, ex, cell, device):
        optimizer, bits = cell.fmt.split("-")
        eight = bits == "8bit"
        p, g = _param(ex["p"], ex["g_layout"], ex["seed"], device)
        s1, s2, a1, a2 = _states(optimizer, p.shape, eight, ex["seed"] + 1, device)
        q1 = codes.dynamic_map(True, device) if eight else None
        q2 = codes.dynamic_map(False, device) if eight and s2 is not None else None
        return (optimizer, p, g, s1, s2, a1, a2, q1, q2, *_hyper(optimizer, ex["hyper"]), BLOCKSIZE_8BIT)

    def compare(self, got, want, args, cell, ctx):
        check.assert_outputs(self.op, got, 5, ctx)
        stats = check.assert_close(self.op, "p", got[0], want[0], tolerance(self.op, cell.dtype), ctx)
        _compare_states(self.op, got[1:], want[1:], cell.fmt.endswith("8bit"), ctx)
        return stats

    def bench_example(self, cell, numel):
        h = dict(lr=1e-3, weight_decay=0.0, step=5, gnorm_scale=1.0, max_unorm=0.0)
        return S.Example.of(p=S.FloatSpec((numel,), cell.dtype), g_layout="contiguous", hyper=h, seed=0)


class OptimizerStepMulti(OpCase):
    op = "optimizer_step_multi"

    def cells(self, quick):
        return [
            Cell(self.op, "mixed", f"{opt}-{bits}", BLOCKSIZE_8BIT if bits == "8bit" else None)
            for opt in OPTIMIZERS for bits in ("32bit", "8bit")
        ]  # fmt: skip

    def strategy(self, cell, lim):
        return S.optimizer_step_multi(lim)

    def edges(self, cell):
        F, E = S.FloatSpec, S.Example.of
        h = dict(lr=1e-2, weight_decay=1e-2, step=2, gnorm_scale=0.5, max_unorm=0.0)
        mixed = (F((1,), "float32", seed=1), F((257,), "bfloat16", seed=2), F((3, 5, 7), "float16", seed=3))
        return [
            E(params=tuple(F(s.shape, "bfloat16", seed=s.seed) for s in mixed), hyper=h, seed=1),
            E(params=tuple(F(s.shape, "float32", seed=s.seed) for s in mixed), hyper={**h, "max_unorm": 0.02}, seed=2),
            E(params=mixed, hyper=h, seed=3),
        ]

    def build(self, ex, cell, device):
        optimizer, bits = cell.fmt.split("-")
        eight = bits == "8bit"
        params, grads, s1, s2, a1, a2 = [], [], [], [], [], []
        for i, spec in enumerate(ex["params"]):
            p, g = _param(spec, "contiguous", ex["seed"] + 10 * i, device)
            st1, st2, ab1, ab2 = _states(optimizer, p.shape, eight, ex["seed"] + 10 * i + 1, device)
            params.append(p)
            grads.append(g)
            s1.append(st1)
            for lst, v in ((s2, st2), (a1, ab1), (a2, ab2)):
                if v is not None:
                    lst.append(v)
        q1 = codes.dynamic_map(True, device) if eight else None
        q2 = codes.dynamic_map(False, device) if eight and s2 else None
        return (optimizer, params, grads, s1, s2, a1, a2, q1, q2, *_hyper(optimizer, ex["hyper"]), BLOCKSIZE_8BIT)

    def compare(self, got, want, args, cell, ctx):
        check.assert_outputs(self.op, got, 5, ctx)
        eight = cell.fmt.endswith("8bit")
        stats = []
        for i in range(len(want[0])):

            def pick(lst, i=i):
                return lst[i] if lst else None

            p_got, p_want = got[0][i], want[0][i]
            dt = str(p_want.dtype).replace("torch.", "")
            stats.append(check.assert_close(self.op, f"params[{i}]", p_got, p_want, tolerance(self.op, dt), ctx))
            _compare_states(
                self.op, [pick(x) for x in got[1:]], [pick(x) for x in want[1:]], eight, ctx, label=f"[param {i}] "
            )
        return check.merge(stats)

    def bench_example(self, cell, numel):
        h = dict(lr=1e-3, weight_decay=0.0, step=5, gnorm_scale=1.0, max_unorm=0.0)
        ps = tuple(S.FloatSpec((numel // 4,), "float32", seed=i) for i in range(4))
        return S.Example.of(params=ps, hyper=h, seed=0)


CASES = [OptimizerStep(), OptimizerStepMulti()]

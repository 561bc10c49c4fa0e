"""Hypothesis strategies of the conformance suite, and the seeded tensors they describe.

A strategy draws a small, printable description of a case (a :class:`FloatSpec` for float inputs, an
:class:`Example` for a whole op call): shapes with sizes 1, odd, prime and large, 1-D to 3-D, partial
blocks, non-contiguous layouts, and value regimes (normal, huge, tiny, subnormal, exact ties between
codes, per-block scales over many decades, all-zero blocks, inf/NaN). Tensors are then made from the
description with a seeded ``torch.Generator`` on the CPU and moved to the device, so every failure
message carries everything needed to rebuild its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from hypothesis import strategies as st

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

DIMS = (1, 2, 3, 5, 7, 13, 31, 63, 64, 65, 97, 127, 128, 129, 251, 256, 509, 1021)
"""Dimension sizes: 1, odd, prime, powers of two and their neighbours."""

LARGE = (4093, 4096, 4099, 16381, 65521, 65537, 262139, 1048573)
"""Large 1-D sizes (mostly prime), used up to the mode's element budget."""

VALUE_MODES = ("normal", "normal", "huge", "tiny", "subnormal", "ties", "mixed")
BIG = {"float32": 1e36, "bfloat16": 1e36, "float16": 1.5e4}
TINY = {"float32": 1e-30, "bfloat16": 1e-30, "float16": 1e-3}
SUBNORMAL = {"float32": 1e-40, "bfloat16": 1e-40, "float16": 1e-6}
MIXED_DECADES = {"float32": 30, "bfloat16": 30, "float16": 3}


@dataclass(frozen=True)
class Limits:
    """Size budget of one mode: the largest tensor (elements) and the examples drawn per cell."""

    max_numel: int
    max_examples: int
    bench_numel: int
    bench_repeat: int


QUICK = Limits(max_numel=40_000, max_examples=3, bench_numel=1 << 16, bench_repeat=3)
FULL = Limits(max_numel=1_100_000, max_examples=40, bench_numel=1 << 22, bench_repeat=10)


@dataclass(frozen=True)
class FloatSpec:
    """A float tensor: logical ``shape`` and ``dtype``, memory ``layout``, value regime, seed.

    ``layout``: "contiguous", "transposed" (last two dims swapped in memory) or "strided" (every other
    element). ``values``: see :data:`VALUE_MODES` (plus "outliers" for LLM.int8()). ``zero_blocks``
    zeroes the first block and some others; ``specials`` puts inf, -inf and NaN into a few blocks.
    """

    shape: tuple[int, ...]
    dtype: str
    layout: str = "contiguous"
    values: str = "normal"
    zero_blocks: bool = False
    specials: bool = False
    seed: int = 0

    def __str__(self) -> str:
        extra = "".join(
            [f", {self.layout}" if self.layout != "contiguous" else "", ", zero blocks" if self.zero_blocks else "",
             ", inf/nan" if self.specials else ""]
        )  # fmt: skip
        return f"{self.dtype}{list(self.shape)} {self.values}{extra} seed={self.seed}"


@dataclass(frozen=True)
class Example:
    """One drawn case of an op: named parameters (FloatSpecs, sizes, flags) in a printable form."""

    params: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    @classmethod
    def of(cls, **params: Any) -> Example:
        return cls(tuple(params.items()))

    def __getitem__(self, key: str) -> Any:
        return dict(self.params)[key]

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.params)


# --------------------------------------------------------------------------------------------------
# Generic strategies
# --------------------------------------------------------------------------------------------------

seeds = st.integers(0, 2**31 - 1)
layouts = st.sampled_from(("contiguous", "contiguous", "transposed", "strided"))


def dims(max_size: int = 1 << 30) -> st.SearchStrategy[int]:
    """One dimension: from :data:`DIMS` or any size up to 300, capped at ``max_size``."""
    return st.one_of(st.sampled_from(DIMS), st.integers(1, 300)).map(lambda d: max(1, min(d, max_size)))


@st.composite
def shapes(draw, max_numel: int, min_dims: int = 1, max_dims: int = 3) -> tuple[int, ...]:
    """1-D to 3-D shapes within ``max_numel`` elements; 1-D shapes may be large (see :data:`LARGE`)."""
    ndim = draw(st.integers(min_dims, max_dims))
    if ndim == 1 and draw(st.booleans()):
        large = [n for n in LARGE if n <= max_numel]
        if large:
            return (draw(st.sampled_from(large)),)
    out: list[int] = []
    budget = max_numel
    for _ in range(ndim):
        d = draw(dims(max(1, budget)))
        out.append(d)
        budget = max(1, budget // d)
    return tuple(out)


@st.composite
def float_specs(
    draw, dtype: str, max_numel: int, min_dims: int = 1, max_dims: int = 3, values=VALUE_MODES,
    specials: bool = False, shape: tuple[int, ...] | None = None,
) -> FloatSpec:  # fmt: skip
    """A :class:`FloatSpec` of ``dtype``; ``specials`` allows inf/NaN blocks (for ops that exclude them)."""
    shp = shape if shape is not None else draw(shapes(max_numel, min_dims, max_dims))
    layout = draw(layouts) if len(shp) >= 1 else "contiguous"
    return FloatSpec(
        shape=tuple(shp), dtype=dtype, layout=layout, values=draw(st.sampled_from(values)),
        zero_blocks=draw(st.booleans()), specials=specials and draw(st.booleans()), seed=draw(seeds),
    )  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Tensors from descriptions
# --------------------------------------------------------------------------------------------------


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (data is made on the CPU, then moved: same on every device)."""
    return torch.Generator().manual_seed(int(seed))


def numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def with_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    """The values of ``x`` in a non-contiguous memory layout (or ``x`` for "contiguous")."""
    if layout == "transposed" and x.dim() >= 2:
        return x.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout in ("strided", "transposed"):
        buf = torch.zeros((*x.shape[:-1], 2 * x.shape[-1]) if x.dim() else (2,), dtype=x.dtype, device=x.device)
        if x.dim() == 0:
            return x
        buf[..., ::2] = x
        return buf[..., ::2]
    return x


def _values(spec: FloatSpec, n: int, gen: torch.Generator, block: int, code: torch.Tensor | None) -> torch.Tensor:
    x = torch.randn(n, generator=gen, dtype=torch.float32)
    mode, dt = spec.values, spec.dtype
    if mode == "huge":
        x = x * BIG[dt]
    elif mode == "tiny":
        x = x * TINY[dt]
    elif mode == "subnormal":
        x = x * SUBNORMAL[dt]
    elif mode == "mixed":
        nb = -(-n // block)
        exps = torch.randint(-MIXED_DECADES[dt], MIXED_DECADES[dt] + 1, (nb,), generator=gen).float()
        x = x * torch.pow(10.0, exps).repeat_interleave(block)[:n]
    elif mode == "ties":
        x = _ties(n, gen, block, code)
    elif mode == "outliers":
        pass  # the caller adds outlier columns
    finfo = torch.finfo(DTYPES[dt])
    return x.clamp(-finfo.max, finfo.max)


def _ties(n: int, gen: torch.Generator, block: int, code: torch.Tensor | None) -> torch.Tensor:
    """Values exactly on code-book entries and midpoints, each block holding 1.0 (absmax 1, scale 1)."""
    if code is None:  # LLM.int8(): rows of K = block with absmax 127, so x * (127 / 127) = k + 0.5
        x = torch.randint(-127, 127, (n,), generator=gen).float() + 0.5
        x[::block] = 127.0
        return x
    c = code.float().cpu().sort().values
    pool = torch.cat([c, (c[:-1] + c[1:]) * 0.5])
    x = pool[torch.randint(0, pool.numel(), (n,), generator=gen)]
    x[::block] = 1.0
    return x


def make_float(
    spec: FloatSpec, device: torch.device | str, block: int = 64, code: torch.Tensor | None = None,
    outlier_threshold: float = 0.0,
) -> torch.Tensor:  # fmt: skip
    """The tensor ``spec`` describes, on ``device``.

    ``block``: the block length (over the flattened tensor) used by zero blocks, mixed scales, ties and
    specials; ``code``: the code book whose entries and midpoints "ties" uses; ``outlier_threshold``:
    for "outliers", a few columns get magnitudes >= the threshold (one exactly equal to it).
    """
    gen = generator(spec.seed)
    n = numel(spec.shape)
    block = max(1, block)
    x = _values(spec, n, gen, block, code) if n else torch.zeros(0)
    nb = -(-n // block)
    if spec.zero_blocks and n:
        zero = torch.rand(nb, generator=gen) < 0.3
        zero[0] = True
        x = x.view(-1)
        x[zero.repeat_interleave(block)[:n]] = 0.0
    if spec.values == "outliers" and outlier_threshold > 0 and len(spec.shape) and n:
        K = spec.shape[-1]
        rows = x.view(-1, K)
        cols = torch.randint(0, K, (max(1, K // 16),), generator=gen)
        rows[:, cols] = rows[:, cols] * 0.1 + outlier_threshold * (1 + 2 * torch.rand(1, generator=gen))
        rows[0, int(cols[0])] = outlier_threshold  # exactly at the threshold: an outlier (>=)
    if spec.specials and n:
        picks = torch.randint(0, n, (3,), generator=gen)
        for value, i in zip((float("inf"), float("-inf"), float("nan")), picks.tolist()):
            x.view(-1)[i] = value
    out = x.to(DTYPES[spec.dtype]).view(spec.shape)
    return with_layout(out.to(device), spec.layout)


def positive(n: int, seed: int, mode: str, device) -> torch.Tensor:
    """float32 (n,) scales (absmax, row/col stats): "normal" |N(0,1)| + 0.01, "zeros" (some 0),
    "huge" (~1e30), "tiny" (~1e-30)."""
    gen = generator(seed)
    x = torch.randn(n, generator=gen).abs() + 0.01
    if mode == "zeros":
        x[torch.rand(n, generator=gen) < 0.3] = 0.0
    elif mode == "huge":
        x = x * 1e30
    elif mode == "tiny":
        x = x * 1e-30
    return x.to(device)


def random_bytes(n: int, seed: int, device, dtype: torch.dtype = torch.uint8, low: int = 0, high: int = 256):
    """(n,) random integers in [low, high) of ``dtype`` (codes, packed nibbles, int8 values)."""
    return torch.randint(low, high, (n,), generator=generator(seed)).to(dtype).to(device)


# --------------------------------------------------------------------------------------------------
# Per-op example strategies (the cell fixes dtype / format / blocksize; the rest is drawn)
# --------------------------------------------------------------------------------------------------

scale_modes = st.sampled_from(("normal", "normal", "zeros", "huge", "tiny"))
storages = st.sampled_from(("uint8", "uint8", "int8", "float16", "bfloat16", "float32", "int32"))


def quantize_blockwise(dtype: str, lim: Limits) -> st.SearchStrategy[Example]:
    return st.builds(
        lambda A, signed: Example.of(A=A, code="signed" if signed else "unsigned"),
        float_specs(dtype, lim.max_numel, specials=True), st.booleans(),
    )  # fmt: skip


def dequantize_blockwise(lim: Limits) -> st.SearchStrategy[Example]:
    return st.builds(
        lambda shape, layout, scales, seed, signed: Example.of(
            shape=shape, layout=layout, absmax=scales, seed=seed, code="signed" if signed else "unsigned"
        ),
        shapes(lim.max_numel), layouts, scale_modes, seeds, st.booleans(),
    )  # fmt: skip


def quantize_4bit(dtype: str, lim: Limits) -> st.SearchStrategy[Example]:
    return st.builds(
        lambda A, storage: Example.of(A=A, quant_storage=storage),
        float_specs(dtype, lim.max_numel, specials=True), storages,
    )  # fmt: skip


def dequantize_4bit(lim: Limits) -> st.SearchStrategy[Example]:
    return st.builds(
        lambda shape, scales, seed, storage: Example.of(shape=shape, absmax=scales, seed=seed, quant_storage=storage),
        shapes(lim.max_numel), scale_modes, seeds, storages,
    )  # fmt: skip


@st.composite
def gemv_4bit(draw, dtype: str, lim: Limits, nested: bool) -> Example:
    N = draw(dims(4096))
    K = draw(dims(max(1, min(8192, lim.max_numel // N))))
    rank = draw(st.sampled_from((1, 2, 3)))
    rows = draw(st.sampled_from((1, 1, 1, 2, 13))) if rank == 2 else 1  # batch 1 mostly; batched decoding too
    shape = (rows,) + (1,) * (rank - 2) + (K,) if rank > 1 else (K,)
    A = draw(float_specs(dtype, K * rows, shape=shape, values=("normal", "huge", "tiny", "mixed")))
    ex = dict(N=N, K=K, A=A, absmax=draw(scale_modes), seed=draw(seeds))
    if nested:
        ex["nested_blocksize"] = draw(st.sampled_from((64, 256, 256, 4096)))
    return Example.of(**ex)


def int8_vectorwise_quant(dtype: str, lim: Limits, threshold: float) -> st.SearchStrategy[Example]:
    modes = ("normal", "ties", "huge", "tiny", "mixed") + (("outliers", "outliers") if threshold > 0 else ())
    return st.builds(lambda A: Example.of(A=A), float_specs(dtype, lim.max_numel, values=modes, specials=True))


@st.composite
def int8_linear_matmul(draw, lim: Limits) -> Example:
    A_shape = draw(shapes(lim.max_numel // 64))
    K = A_shape[-1]
    N = draw(dims(max(1, lim.max_numel // max(K, 1))))
    rng = draw(st.sampled_from(("codes", "full", "extreme")))
    return Example.of(A_shape=A_shape, N=N, values=rng, layout=draw(layouts), seed=draw(seeds))


@st.composite
def int8_mm_dequant(draw, lim: Limits) -> Example:
    shape = draw(shapes(lim.max_numel))
    bias = draw(st.sampled_from((None, None, "float32", "float16", "bfloat16")))
    return Example.of(shape=shape, stats=draw(scale_modes), bias=bias, seed=draw(seeds))


@st.composite
def int8_mm_outlier(draw, dtype: str, lim: Limits, threshold: float) -> Example:
    modes = ("normal",) + (("mixed",) if dtype != "float16" else ())  # float16 sums of 1e3-scaled rows overflow
    modes += ("outliers", "outliers") if threshold > 0 else ()
    shape = None
    if draw(st.booleans()):  # one row (batch 1: what fused kernels serve) in 1-D to 3-D
        shape = (1,) * draw(st.integers(0, 2)) + (draw(dims(lim.max_numel // 16)),)
    A = draw(float_specs(dtype, lim.max_numel // 16, values=modes, shape=shape))
    N = draw(dims(max(1, lim.max_numel // max(A.shape[-1], 1))))
    bias = draw(st.sampled_from((None, dtype)))
    return Example.of(A=A, N=N, bias=bias, seed=draw(seeds))


HYPER = dict(
    lr=st.sampled_from((1e-3, 1e-2)),
    weight_decay=st.sampled_from((0.0, 0.0, 1e-2)),
    step=st.sampled_from((1, 2, 3, 10, 1000)),
    gnorm_scale=st.sampled_from((1.0, 1.0, 0.5)),
    max_unorm=st.sampled_from((0.0, 0.0, 1.0, 0.02)),
)


@st.composite
def hyper(draw) -> dict:
    """Optimizer hyper-parameters (betas etc. fixed at their usual values)."""
    return {k: draw(v) for k, v in HYPER.items()}


@st.composite
def optimizer_step(draw, dtype: str, lim: Limits) -> Example:
    # no huge/mixed magnitudes: g*g overflows float32, and where it does depends on the order of products
    p = draw(float_specs(dtype, lim.max_numel // 4, values=("normal", "normal", "tiny")))
    return Example.of(p=p, g_layout=draw(layouts), hyper=draw(hyper()), seed=draw(seeds))


@st.composite
def optimizer_step_multi(draw, lim: Limits) -> Example:
    count = draw(st.integers(1, 4))
    group = draw(st.sampled_from((*DTYPES, "mixed")))  # one dtype per group (the usual case), or mixed
    dts = [group if group != "mixed" else draw(st.sampled_from(tuple(DTYPES))) for _ in range(count)]
    ps = tuple(draw(float_specs(dt, lim.max_numel // (4 * count), values=("normal", "tiny"))) for dt in dts)
    return Example.of(params=ps, hyper=draw(hyper()), seed=draw(seeds))

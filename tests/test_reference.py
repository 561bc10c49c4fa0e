"""The reference backend against float64 math written independently here, and against published statistics."""

from __future__ import annotations

import math

import pytest
import torch

from bnb_api.core import codes
from bnb_api.core.reference import blockwise, fourbit, int8, optim

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SIZES = [1, 7, 64, 257, 1031, 4099]


def rand(n, dtype, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, generator=g, dtype=torch.float64) * scale).to(dtype)


def check_nearest(scaled64: torch.Tensor, chosen: torch.Tensor, table64: torch.Tensor) -> None:
    """Each chosen code value is (within fp32 rounding of the scaling) a nearest table value."""
    dist_chosen = (scaled64 - table64[chosen.long()]).abs()
    dist_best = (scaled64[:, None] - table64[None, :]).abs().min(dim=1).values
    assert torch.all(dist_chosen <= dist_best + 1e-6), float((dist_chosen - dist_best).max())


def blocks64(x: torch.Tensor, blocksize: int) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 scaled values and per-block absmax, computed with plain Python loops over blocks."""
    x64 = x.double()
    absmax = torch.tensor([x64[i : i + blocksize].abs().max().item() for i in range(0, x.numel(), blocksize)],
                          dtype=torch.float64)  # fmt: skip
    per_elem = absmax.repeat_interleave(blocksize)[: x.numel()]
    scaled = torch.where(per_elem > 0, x64 / per_elem.clamp(min=1e-300), torch.zeros_like(x64))
    return scaled, absmax


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("blocksize", [64, 256, 4096])
def test_quantize_blockwise_vs_float64(dtype, n, blocksize):
    x = rand(n, dtype, seed=n)
    code = codes.dynamic_map(True)
    q, absmax = blockwise.quantize_blockwise(x, code, blocksize)
    scaled, absmax64 = blocks64(x, blocksize)
    assert q.dtype == torch.uint8 and q.shape == x.shape
    assert torch.equal(absmax.double(), absmax64)
    check_nearest(scaled, q, code.double())
    back = blockwise.dequantize_blockwise(q, absmax, code, blocksize, torch.float32)
    expected = code.double()[q.long()] * absmax64.repeat_interleave(blocksize)[:n]
    torch.testing.assert_close(back.double(), expected, rtol=1e-7, atol=0)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("blocksize", [32, 64, 128, 4096])
def test_quantize_4bit_vs_float64(quant_type, dtype, n, blocksize):
    x = rand(n, dtype, seed=3 * n + blocksize)
    packed, absmax = fourbit.quantize_4bit(x, blocksize, quant_type, torch.uint8)
    assert packed.shape == ((n + 1) // 2, 1) and packed.dtype == torch.uint8
    raw = packed.reshape(-1).tolist()
    nibbles = [v for b in raw for v in (b >> 4, b & 15)]  # element 2i in the high nibble
    if n % 2:
        assert nibbles[-1] == (7 if quant_type == "nf4" else 0), "odd tail must hold the code of 0"
    q = torch.tensor(nibbles[:n])
    scaled, absmax64 = blocks64(x, blocksize)
    assert torch.equal(absmax.double(), absmax64)
    table = codes.code_4bit(quant_type).double()
    check_nearest(scaled, q, table)
    back = fourbit.dequantize_4bit(packed, absmax, blocksize, quant_type, [n], torch.float32)
    torch.testing.assert_close(back.double(), table[q] * absmax64.repeat_interleave(blocksize)[:n], rtol=1e-7, atol=0)


def test_fp4_zero_codes_and_ties():
    """FP4: values <= 0 that round to zero take code 0, positive ones code 8; exact midpoints go low."""
    mids = torch.tensor([-0.001, 0.0, 0.001])
    assert fourbit.encode_4bit(mids, "fp4").tolist() == [0, 0, 8]
    nf4 = codes.code_4bit("nf4")
    tie = ((nf4[8] + nf4[9]) * 0.5).reshape(1)
    assert fourbit.encode_4bit(tie, "nf4").tolist() == [8]


def test_published_statistics():
    """NF4 bs64 on randn(1024, 1024): mean abs error ~0.0728; dynamic 8-bit bs256: < 0.011."""
    x = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(1))
    packed, absmax = fourbit.quantize_4bit(x, 64, "nf4", torch.uint8)
    err4 = (fourbit.dequantize_4bit(packed, absmax, 64, "nf4", [1024, 1024], torch.float32) - x).abs().mean()
    assert abs(float(err4) - 0.0728) < 0.001
    q, a = blockwise.quantize_blockwise(x, codes.dynamic_map(True), 256)
    err8 = (blockwise.dequantize_blockwise(q, a, codes.dynamic_map(True), 256, torch.float32) - x).abs().mean()
    assert float(err8) < 0.011


@pytest.mark.parametrize("quant_storage", [torch.uint8, torch.float16, torch.bfloat16, torch.float32, torch.int8])
def test_quant_storage_is_a_view(quant_storage):
    x = rand(4096, torch.float16, seed=2)
    base, _ = fourbit.quantize_4bit(x, 64, "nf4", torch.uint8)
    other, _ = fourbit.quantize_4bit(x, 64, "nf4", quant_storage)
    assert other.dtype == quant_storage
    assert torch.equal(other.reshape(-1).view(torch.uint8), base.reshape(-1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3, 64), (17, 96), (11, 100)])
@pytest.mark.parametrize("nested", [False, True])
def test_gemv_4bit_vs_float64(dtype, shape, nested):
    N, K = shape
    W = rand(N * K, dtype, seed=N).view(N, K)
    A = rand(K, dtype, seed=K).view(1, 1, K)
    packed, absmax = fourbit.quantize_4bit(W, 64, "nf4", torch.uint8)
    table = codes.code_4bit("nf4")
    extra = {}
    absmax_used = absmax
    if nested:
        offset = absmax.mean()
        qa, na = blockwise.quantize_blockwise(absmax - offset, codes.dynamic_map(True), 256)
        extra = dict(nested_absmax=na, nested_code=codes.dynamic_map(True), nested_offset=offset, nested_blocksize=256)
        absmax_used = blockwise.dequantize_blockwise(qa, na, codes.dynamic_map(True), 256, torch.float32) + offset
        absmax = qa
    out = fourbit.gemv_4bit(A, packed, [N, K], absmax, table, 64, **extra)
    assert out.shape == (1, 1, N) and out.dtype == dtype
    q = fourbit.unpack_nibbles(packed, N * K).long()
    W64 = (table.double()[q] * absmax_used.double().repeat_interleave(64)[: N * K]).view(N, K)
    expected = A.double().reshape(1, K) @ W64.T
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    torch.testing.assert_close(out.double().reshape(1, N), expected, rtol=tol, atol=tol * expected.abs().max().item())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("threshold", [0.0, 2.5])
def test_int8_vectorwise_quant_vs_float64(dtype, threshold):
    A = rand(13 * 37, dtype, seed=5).view(13, 37)
    codes8, stats, cols = int8.int8_vectorwise_quant(A, threshold)
    A64 = A.double()
    mask = A64.abs() >= threshold if threshold > 0 else torch.zeros_like(A64, dtype=torch.bool)
    expected_cols = [j for j in range(37) if mask[:, j].any()]
    assert cols.tolist() == expected_cols
    absmax = A64.masked_fill(mask, 0).abs().amax(dim=1)
    torch.testing.assert_close(stats.double(), absmax, rtol=0, atol=0)
    expected = torch.round(A64.masked_fill(mask, 0) * 127 / absmax[:, None])
    expected[:, expected_cols] = 0
    assert (codes8.double() - expected).abs().max() <= 1  # only fp32-vs-fp64 rounding of ties
    assert (codes8.double() == expected).float().mean() > 0.99


def test_int8_all_zero_row_and_3d():
    A = torch.zeros(2, 3, 16)
    A[1, 2] = torch.linspace(-1, 1, 16)
    q, s, _ = int8.int8_vectorwise_quant(A)
    assert q.shape == A.shape and torch.all(q[0] == 0) and s.shape == (6,) and s[0] == 0
    assert q[1, 2].abs().max() == 127


@pytest.mark.parametrize("K", [1, 33, 1024, 2500])
def test_int8_linear_matmul_exact(K):
    g = torch.Generator().manual_seed(K)
    A = torch.randint(-128, 128, (2, 5, K), generator=g, dtype=torch.int8)
    B = torch.randint(-128, 128, (7, K), generator=g, dtype=torch.int8)
    out = int8.int8_linear_matmul(A, B)
    expected = (A.long().reshape(-1, K) @ B.long().T).view(2, 5, 7)
    assert out.dtype == torch.int32 and torch.equal(out.long(), expected)


def test_int8_mm_dequant_vs_float64():
    g = torch.Generator().manual_seed(0)
    A = torch.randint(-(2**20), 2**20, (9, 11), generator=g, dtype=torch.int32)
    row, col, bias = torch.rand(9, generator=g) * 3, torch.rand(11, generator=g) * 3, torch.randn(11, generator=g)
    out = int8.int8_mm_dequant(A, row, col, torch.float32, bias)
    expected = A.double() * row.double()[:, None] * col.double()[None, :] / 127**2 + bias.double()
    torch.testing.assert_close(out.double(), expected, rtol=1e-6, atol=1e-4)
    assert int8.int8_mm_dequant(A, row, col).dtype == torch.float16


@pytest.mark.parametrize("dtype", DTYPES)
def test_int8_mm_outlier_keeps_outliers_exact(dtype):
    g = torch.Generator().manual_seed(1)
    A = torch.randn(4, 64, generator=g)
    A[:, 5] *= 40  # planted outlier column
    W = torch.randn(24, 64, generator=g)
    CB, SCB, _ = int8.int8_vectorwise_quant(W)
    W_deq = CB.double() * SCB.double()[:, None] / 127
    expected = A.double() @ W_deq.T
    err_outlier = (int8.int8_mm_outlier(A.to(dtype), CB, SCB, 6.0).double() - expected).abs().mean()
    err_plain = (int8.int8_mm_outlier(A.to(dtype), CB, SCB, 0.0).double() - expected).abs().mean()
    assert err_outlier < err_plain / 3


# ---------------------------------------------------------------------------------------------------
# Optimizers: the reference against torch.optim (float64) and independent formulas
# ---------------------------------------------------------------------------------------------------

TORCH_EQUIVALENT = {
    "adam": lambda p, wd: torch.optim.Adam([p], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=wd),
    "adamw": lambda p, wd: torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=wd),
    "momentum": lambda p, wd: torch.optim.SGD([p], lr=1e-2, momentum=0.9, weight_decay=wd),
    "rmsprop": lambda p, wd: torch.optim.RMSprop([p], lr=1e-2, alpha=0.9, eps=1e-8, weight_decay=wd),
    "adagrad": lambda p, wd: torch.optim.Adagrad([p], lr=1e-2, eps=1e-8, weight_decay=wd),
}


def run_reference(name, p0, grads, wd, eight_bit=False, **kw):
    p = p0.clone()
    shape1 = (2, *p.shape) if name == "ademamix" else p.shape
    two = name in ("adam", "adamw", "lamb", "ademamix")
    n = p.numel()
    if eight_bit:
        nb = -(-n // 256)
        s1 = torch.zeros(shape1, dtype=torch.uint8)
        s2 = torch.zeros(p.shape, dtype=torch.uint8) if two else None
        a1 = torch.zeros((2, nb) if name == "ademamix" else (nb,))
        a2 = torch.zeros(nb) if two else None
        q1, q2 = codes.dynamic_map(True), codes.dynamic_map(False)
    else:
        s1 = torch.zeros(shape1)
        s2 = torch.zeros(p.shape) if two else None
        a1 = a2 = q1 = q2 = None
    for step, g in enumerate(grads, start=1):
        optim.optimizer_step(name, p, g.to(p.dtype), s1, s2, a1, a2, q1, q2, 1e-2, 0.9, 0.99, kw.get("beta3", 0.999),
                             kw.get("alpha", 5.0), 1e-8, wd, step, kw.get("gnorm_scale", 1.0),
                             kw.get("max_unorm", 0.0))  # fmt: skip
    return p


@pytest.mark.parametrize("name", sorted(TORCH_EQUIVALENT))
@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_optimizer_reference_matches_torch_optim(name, wd):
    g = torch.Generator().manual_seed(2)
    p0 = torch.randn(257, generator=g)
    grads = [torch.randn(257, generator=g) for _ in range(5)]
    ours = run_reference(name, p0, grads, wd)
    p = p0.double().clone().requires_grad_(True)
    opt = TORCH_EQUIVALENT[name](p, wd)
    for grad in grads:
        p.grad = grad.double()
        opt.step()
    torch.testing.assert_close(ours.double(), p.detach(), rtol=1e-5, atol=1e-6)


def test_lion_and_ademamix_vs_float64_formulas():
    g = torch.Generator().manual_seed(3)
    p0 = torch.randn(101, generator=g)
    grads = [torch.randn(101, generator=g) for _ in range(4)]
    b1, b2, b3, alpha, lr, eps, wd = 0.9, 0.99, 0.999, 5.0, 1e-2, 1e-8, 0.1
    # Lion (Chen et al. 2023)
    p, m = p0.double().clone(), torch.zeros(101, dtype=torch.float64)
    for grad in grads:
        gd = grad.double()
        u = torch.sign(b1 * m + (1 - b1) * gd)
        p = p * (1 - lr * wd) - lr * u
        m = b2 * m + (1 - b2) * gd
    torch.testing.assert_close(run_reference("lion", p0, grads, wd).double(), p, rtol=1e-5, atol=1e-6)
    # AdEMAMix (Pagliardini et al. 2024)
    p = p0.double().clone()
    m1, m2, v = (torch.zeros(101, dtype=torch.float64) for _ in range(3))
    for t, grad in enumerate(grads, start=1):
        gd = grad.double()
        m1, m2, v = b1 * m1 + (1 - b1) * gd, b3 * m2 + (1 - b3) * gd, b2 * v + (1 - b2) * gd * gd
        u = (m1 / (1 - b1**t) + alpha * m2) / ((v / (1 - b2**t)).sqrt() + eps)
        p = p * (1 - lr * wd) - lr * u
    torch.testing.assert_close(run_reference("ademamix", p0, grads, wd).double(), p, rtol=1e-5, atol=1e-6)


def test_max_unorm_clips_update_norm():
    g = torch.Generator().manual_seed(4)
    p0 = torch.randn(300, generator=g) * 0.01
    grads = [torch.randn(300, generator=g)]
    clipped = run_reference("lamb", p0, grads, 0.0, max_unorm=1.0)
    free = run_reference("lamb", p0, grads, 0.0)
    lr = 1e-2
    assert math.isclose(float((clipped - p0).norm()), lr * 1.0 * float(p0.norm()), rel_tol=1e-4)
    assert float((free - p0).norm()) > float((clipped - p0).norm()) * 5


@pytest.mark.parametrize(
    "name", ["adam", "adamw", "momentum", "lion", "rmsprop", "adagrad", "lamb", "lars", "ademamix"]
)
def test_8bit_states_track_32bit(name):
    g = torch.Generator().manual_seed(5)
    p0 = torch.randn(1031, generator=g)
    grads = [torch.randn(1031, generator=g) * 0.1 for _ in range(10)]
    p32 = run_reference(name, p0, grads, 0.01)
    p8 = run_reference(name, p0, grads, 0.01, eight_bit=True)
    moved = (p32 - p0).abs().mean()
    assert (p8 - p32).abs().mean() < 0.1 * moved


def test_dynamic_maps_shape():
    signed, unsigned = codes.dynamic_map(True), codes.dynamic_map(False)
    assert signed.shape == unsigned.shape == (256,)
    assert torch.all(signed[1:] >= signed[:-1]) and -1 < signed[0] < -0.99 and signed[-1] == 1  # asymmetric, as bnb
    assert unsigned.min() == 0 and unsigned[-1] == 1


def test_dynamic_maps_equal_bitsandbytes():
    bnb = pytest.importorskip("bitsandbytes.functional")
    assert torch.equal(codes.dynamic_map(True), bnb.create_dynamic_map(True))
    assert torch.equal(codes.dynamic_map(False), bnb.create_dynamic_map(False))
    assert torch.equal(codes.code_4bit("nf4"), bnb.get_4bit_type("nf4", device="cpu"))
    assert torch.equal(codes.code_4bit("fp4"), bnb.get_4bit_type("fp4", device="cpu"))


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("max_exponent_bits", [4, 7, 8])
def test_create_dynamic_map_parameters_vs_float64(signed, max_exponent_bits):
    """Any exponent budget of bitsandbytes' construction: a fraction grid of 2**(bits) + 1 edges, truncated to an
    integer (8 signed exponent bits leave 1.5 -> 1 edge, an empty first decade), bin centres scaled by 10**e."""
    from bnb_api import functional as F

    if not signed and max_exponent_bits != 7:  # the unsigned grid fills 256 codes only with 7 (bitsandbytes asserts)
        with pytest.raises(ValueError, match="total_bits"):
            F.create_dynamic_map(signed, max_exponent_bits, 8)
        return
    expected = [0.0, 1.0]
    for e in range(max_exponent_bits):
        n_edges = int(2 ** (e + 7 - max_exponent_bits + (0 if signed else 1)) + 1)
        edges = torch.linspace(0.1, 1, n_edges, dtype=torch.float64)
        centres = ((edges[:-1] + edges[1:]) / 2 * 10.0 ** (e - max_exponent_bits + 1)).tolist()
        expected += centres + ([-c for c in centres] if signed else [])
    extra = 2 ** (7 - max_exponent_bits) - 1
    if extra > 0:
        edges = torch.linspace(0.1, 1, extra + 1, dtype=torch.float64)
        centres = ((edges[:-1] + edges[1:]) / 2 * 10.0 ** 0).tolist()
        expected += centres + ([-c for c in centres] if signed else [])
    expected = sorted(expected + [0.0] * (256 - len(expected)))
    got = F.create_dynamic_map(signed, max_exponent_bits, 8)
    assert got.shape == (256,) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=0)

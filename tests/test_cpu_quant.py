"""Native cpu quant kernels (backends/cpu/kernels_quant.py + quant*.c) against the reference and float64.

Every kernel is run on each instruction-set path this CPU has (``generic`` is the portable oracle,
then ``avx2`` and ``avx512``), compared bit-exactly with the reference where the math is exact (codes,
packing, absmax, int32 products, dequantized values) and within float rounding elsewhere, and checked
against float64 math written here. Shapes are odd/prime with partial blocks, plus one element and empty.
"""

from __future__ import annotations

import os

import pytest
import torch

import bnb_api  # noqa: F401  (registers the ops and backends)
from bnb_api.backends.cpu import kernels_quant as kq
from bnb_api.core import codes, registry
from bnb_api.core.reference import blockwise as ref_bw
from bnb_api.core.reference import fourbit as ref_4b
from bnb_api.core.reference import int8 as ref_i8

_err = kq.load_error()
if _err and os.environ.get("BNB_API_REQUIRE_NATIVE") == "1":
    raise RuntimeError(_err)
pytestmark = pytest.mark.skipif(_err is not None, reason=f"native quant library unavailable: {_err}")

FLOATS = (torch.float32, torch.float16, torch.bfloat16)
ISAS = [n for n in kq.ISA_NAMES if _err is None and kq.ISA_NAMES.index(n) <= kq.ISA_NAMES.index(
    kq.cpu_features()["quant_isa_detected"])]  # fmt: skip
SIZES = (0, 1, 2, 63, 64, 65, 257, 4099, 30011)


@pytest.fixture(params=ISAS)
def isa(request):
    with kq.forced_isa(request.param) as active:
        assert active == request.param, f"asked for {request.param}, got {active}"
        yield active


def _data(shape, dtype, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g) * scale).to(dtype)


def _fn(op):
    return registry.get_kernel(op, "cpu", "cpu").fn


# -------------------------------------------------------------------------------------------------- 8-bit


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("blocksize", [64, 256, 4096])
def test_blockwise_matches_reference(isa, dtype, n, blocksize):
    A = _data((n,), dtype, seed=n + blocksize)
    code = codes.dynamic_map(signed=True)
    q, absmax = _fn("quantize_blockwise")(A, code, blocksize)
    q_ref, absmax_ref = ref_bw.quantize_blockwise(A, code, blocksize)
    assert q.dtype == torch.uint8 and q.shape == A.shape and absmax.shape == absmax_ref.shape
    assert torch.equal(absmax, absmax_ref), f"absmax differs [n={n}, bs={blocksize}, {dtype}, {isa}]"
    assert torch.equal(q, q_ref), f"codes differ at {(q != q_ref).nonzero()[:5].tolist()} [n={n}, {dtype}, {isa}]"
    for out_dtype in FLOATS:
        d = _fn("dequantize_blockwise")(q_ref, absmax_ref, code, blocksize, out_dtype)
        d_ref = ref_bw.dequantize_blockwise(q_ref, absmax_ref, code, blocksize, out_dtype)
        assert d.dtype == out_dtype and d.shape == A.shape
        assert torch.equal(d, d_ref), f"dequantized values differ [n={n}, {out_dtype}, {isa}]"


def test_blockwise_any_code_book_and_float64(isa):
    """An arbitrary sorted code book (unsigned map, random values with ties) and a float64 nearest check."""
    A = _data((3, 1001), torch.float32, seed=3).abs()
    g = torch.Generator().manual_seed(1)
    books = [codes.dynamic_map(signed=False), torch.sort(torch.rand(256, generator=g) * 2 - 1).values,
             torch.sort(torch.randint(-20, 20, (256,), generator=g).float() / 20).values]  # fmt: skip
    for code in books:
        q, absmax = kq.quantize_blockwise_cpu(A, code, 128)
        q_ref, absmax_ref = ref_bw.quantize_blockwise(A, code, 128)
        assert torch.equal(q, q_ref) and torch.equal(absmax, absmax_ref)
        scaled = (ref_bw.block_view(A.reshape(-1).double(), 128) / absmax.double()[:, None]).reshape(-1)[: A.numel()]
        err = (code.double()[q.reshape(-1).long()] - scaled).abs()
        best = (code.double()[None, :] - scaled[:, None]).abs().min(dim=1).values
        assert (err <= best + 1e-6).all(), "a value did not take its nearest code (float64)"


@pytest.mark.parametrize("signed", [True, False])
def test_blockwise_large_call_bucket_table_ties(isa, signed):
    """Calls of >= 64K elements take the bucket-table search: every midpoint of the code book, its float32
    neighbours and random values (blocks pinned to absmax 1) get exactly the reference's codes."""
    code = codes.dynamic_map(signed=signed)
    mid = (code[:-1] + code[1:]) * 0.5
    probes = torch.cat([mid, torch.nextafter(mid, torch.tensor(2.0)), torch.nextafter(mid, torch.tensor(-2.0))])
    probes = probes if signed else probes.abs()
    n = 70001
    A = torch.cat([probes.repeat(n // probes.numel() + 1)[: n // 2], _data((n - n // 2,), torch.float32, seed=7)])
    A = A.clamp(-1, 1)
    A[::256] = 1.0  # absmax 1: the probes are scaled exactly
    for blocksize in (256, 4096):
        q, absmax = kq.quantize_blockwise_cpu(A, code, blocksize)
        q_ref, absmax_ref = ref_bw.quantize_blockwise(A, code, blocksize)
        assert torch.equal(absmax, absmax_ref)
        assert torch.equal(q, q_ref), f"codes differ at {(q != q_ref).nonzero()[:5].tolist()} [{isa}]"


@pytest.mark.parametrize("dtype", FLOATS)
def test_blockwise_large_call_any_book_exact(isa, dtype):
    """Calls of >= 64K elements with code books the octave search (CPUs with VBMI) and the bucket table serve:
    codes on powers of two (midpoints near octave edges), codes past +-1, a zero midpoint (no octave table);
    odd lengths, partial last blocks and blocksizes below and above 64 values per step."""
    sixth = 2.0 ** -(torch.arange(129.0) / 6)
    beyond = 1 + 0.05 * torch.arange(1.0, 29.0)
    books = [torch.sort(torch.cat([-sixth[:127], sixth[:129]])).values,
             torch.sort(torch.cat([torch.linspace(-0.9, 0.95, 200), beyond, -beyond])).values,
             torch.sort(torch.cat([-sixth[:128], sixth[:128]])).values]  # fmt: skip
    A = _data((70001,), dtype, seed=11, scale=0.3)
    A[5:2000:3] = torch.tensor(2.0) ** -torch.arange(1.0, 666.0).remainder(40).to(dtype)  # octave edges
    for code in books:
        for blocksize in (32, 256, 2048):
            q, absmax = kq.quantize_blockwise_cpu(A, code, blocksize)
            q_ref, absmax_ref = ref_bw.quantize_blockwise(A, code, blocksize)
            assert torch.equal(absmax, absmax_ref)
            assert torch.equal(q, q_ref), f"codes differ at {(q != q_ref).nonzero()[:5].tolist()} [{isa}, {dtype}]"


def test_blockwise_zero_block_and_one_element(isa):
    A = torch.zeros(300)
    A[200:] = torch.randn(100)
    code = codes.dynamic_map()
    q, absmax = kq.quantize_blockwise_cpu(A, code, 64)
    zero_code = int(torch.argmin(code.abs()))
    assert absmax[0] == 0 and (q[:64] == ref_bw.nearest_code(torch.zeros(1), code)).all()
    assert torch.equal(q, ref_bw.quantize_blockwise(A, code, 64)[0]) and zero_code >= 0
    one = torch.tensor([-3.5], dtype=torch.bfloat16)
    q1, a1 = kq.quantize_blockwise_cpu(one, code, 64)
    assert a1.item() == 3.5 and q1.item() == 0


# -------------------------------------------------------------------------------------------------- 4-bit


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("n", SIZES)
def test_4bit_matches_reference(isa, quant_type, dtype, n):
    A = _data((n,), dtype, seed=7 * n + 1)
    for blocksize in (32, 64, 4096) if n > 64 else (64,):
        packed, absmax = _fn("quantize_4bit")(A, blocksize, quant_type, torch.uint8)
        packed_ref, absmax_ref = ref_4b.quantize_4bit(A, blocksize, quant_type, torch.uint8)
        assert packed.shape == packed_ref.shape == ((n + 1) // 2, 1) and packed.stride() == packed_ref.stride()
        assert torch.equal(absmax, absmax_ref), f"absmax differs [n={n}, bs={blocksize}, {quant_type}, {isa}]"
        assert torch.equal(packed, packed_ref), f"packed bytes differ [n={n}, bs={blocksize}, {quant_type}, {isa}]"
        for out_dtype in FLOATS:
            d = _fn("dequantize_4bit")(packed_ref.view(-1), absmax_ref, blocksize, quant_type, [n], out_dtype)
            d_ref = ref_4b.dequantize_4bit(packed_ref.view(-1), absmax_ref, blocksize, quant_type, [n], out_dtype)
            assert d.dtype == out_dtype and torch.equal(d, d_ref), f"dequantize_4bit differs [n={n}, {out_dtype}]"


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_dequantize_large_outputs_streamed_with_special_scales(isa, quant_type):
    """Outputs of 40 MiB or more take the streaming stores (and bf16 the vcvtne2ps2bf16 path): still
    bit-exact, including blocks whose scale makes subnormal products, a NaN scale and an infinite one."""
    n = 21 << 20  # 21M elements: 42 MiB as bf16 / fp16, 84 MiB as float32
    g = torch.Generator().manual_seed(3)
    packed = torch.randint(0, 256, ((n + 1) // 2,), dtype=torch.uint8, generator=g)
    absmax = torch.rand(n // 64, generator=g) + 0.1
    absmax[5], absmax[77], absmax[78], absmax[-1] = 1e-39, float("nan"), float("inf"), 3e-40
    absmax[1000:1100] = 2.0**-126  # products just below the float32 normal range
    for out_dtype in FLOATS:
        d = kq.dequantize_4bit_cpu(packed, absmax, 64, quant_type, [n], out_dtype)
        d_ref = ref_4b.dequantize_4bit(packed, absmax, 64, quant_type, [n], out_dtype)
        assert _same_bits_or_both_nan(d, d_ref), f"[{out_dtype}, {quant_type}, {isa}]"
    code = codes.dynamic_map()
    q = torch.randint(0, 256, (n,), dtype=torch.uint8, generator=g)
    am8 = torch.rand(n // 256, generator=g)
    am8[3], am8[9] = float("nan"), 1e-39
    for out_dtype in FLOATS:
        d = kq.dequantize_blockwise_cpu(q, am8, code, 256, out_dtype)
        d_ref = ref_bw.dequantize_blockwise(q, am8, code, 256, out_dtype)
        assert _same_bits_or_both_nan(d, d_ref), f"[{out_dtype}, blockwise, {isa}]"


def _same_bits_or_both_nan(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-identical (signed zeros and subnormals included) except that any NaN matches any NaN (torch's
    own float -> bf16 conversions disagree on NaN payloads)."""
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a[~nan].view(torch.int8), b[~nan].view(torch.int8))


def test_4bit_storage_shape_fp4_zero_and_odd_padding(isa):
    """quant_storage views, 2-D shapes, the FP4 zero rule (<= 0 -> code 0, > 0 -> code 8), odd tail padding."""
    A = torch.tensor([0.0, -0.0, 1e-6, -1e-6, 1.0, 0.0, 0.0])
    packed, absmax = kq.quantize_4bit_cpu(A, 64, "fp4", torch.uint8)
    nib = ref_4b.unpack_nibbles(packed.view(-1), 8)
    assert nib.tolist()[:4] == [0, 0, 8, 0] and nib[7].item() == 0, nib.tolist()
    nf4, _ = kq.quantize_4bit_cpu(A, 64, "nf4", torch.uint8)
    assert ref_4b.unpack_nibbles(nf4.view(-1), 8)[7].item() == 7  # padding = NF4 code of 0
    W = _data((6, 22), torch.float16, seed=5)
    p16, a16 = kq.quantize_4bit_cpu(W, 64, "nf4", torch.float16)
    pr16, ar16 = ref_4b.quantize_4bit(W, 64, "nf4", torch.float16)
    assert (
        p16.dtype == torch.float16
        and p16.shape == pr16.shape
        and torch.equal(p16.view(torch.uint8), pr16.view(torch.uint8))
    )
    d = kq.dequantize_4bit_cpu(p16.view(torch.uint8).view(-1), a16, 64, "nf4", [6, 22], torch.float32)
    assert d.shape == (6, 22) and torch.equal(
        d, ref_4b.dequantize_4bit(pr16.view(-1), ar16, 64, "nf4", [6, 22], torch.float32)
    )


def test_4bit_float64_roundtrip(isa):
    """Dequantized values equal code[q] * absmax in float64, and each value took its nearest code."""
    A = _data((5003,), torch.float32, seed=11)
    packed, absmax = kq.quantize_4bit_cpu(A, 64, "nf4", torch.uint8)
    table = codes.code_4bit("nf4").double()
    q = ref_4b.unpack_nibbles(packed.view(-1), A.numel()).long()
    scale = absmax.double().repeat_interleave(64)[: A.numel()]
    d = kq.dequantize_4bit_cpu(packed.view(-1), absmax, 64, "nf4", [A.numel()], torch.float32)
    assert torch.allclose(d.double(), table[q] * scale, rtol=1e-6, atol=0)
    x = A.double() / scale
    assert ((table[q] - x).abs() <= (table[None, :] - x[:, None]).abs().min(1).values + 1e-6).all()


# -------------------------------------------------------------------------------------------------- gemv


BF16_CODE_ROUNDING = {torch.bfloat16: 2**-8}
"""bf16 activations may be multiplied with the code book rounded to bf16 (the AVX512-BF16 path): at most
2^-8 relative per weight, i.e. 2^-8 of |A| @ |W|.T on the result (the conformance tolerance's scale)."""


def _nested(absmax: torch.Tensor):
    offset = absmax.mean()
    q, nested = ref_bw.quantize_blockwise(absmax - offset, codes.dynamic_map(), 256)
    return q, nested, codes.dynamic_map(), offset.reshape(1)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("N,K,blocksize", [(1, 64, 64), (257, 512, 64), (31, 4096, 4096), (13, 96, 32),
                                           (11, 100, 64), (3, 7, 32), (5, 1, 32), (4, 0, 64), (0, 64, 64),
                                           (7, 1024, 128), (9, 768, 256)])  # fmt: skip
@pytest.mark.parametrize("nested", [False, True])
def test_gemv_4bit_matches_reference_and_float64(isa, dtype, N, K, blocksize, nested):
    W = _data((N, K), torch.float32, seed=N * 31 + K)
    A = _data((1, 1, K), dtype, seed=K + 3)
    packed, absmax = ref_4b.quantize_4bit(W, blocksize, "nf4", torch.uint8)
    code = codes.code_4bit("nf4")
    args = (A, packed.view(-1), [N, K], absmax, code, blocksize)
    if nested and absmax.numel():
        args = (A, packed.view(-1), [N, K], *_nested(absmax)[:1], code, blocksize, *_nested(absmax)[1:], 256)
    y = _fn("gemv_4bit")(*args)
    y_ref = ref_4b.gemv_4bit(*args)
    assert y.dtype == dtype and y.shape == y_ref.shape == (1, 1, N)
    # float64 math: the dequantized weight (absmax decoded as the reference does) times A
    am = absmax if len(args) == 6 else ref_4b.nested_absmax_values(*args[3:4], *args[6:9], 256)
    W64 = ref_4b.dequantize_4bit_flat(packed.view(-1), am, code, blocksize, N * K).double().view(N, K)
    y64 = A.reshape(1, K).double() @ W64.T
    scale = A.reshape(1, K).double().abs() @ W64.abs().T
    eps = {torch.float32: 0.0, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    tol = scale * (1e-5 + BF16_CODE_ROUNDING.get(dtype, 0.0)) + 1e-6 + y64.abs() * eps
    assert ((y.reshape(1, N).double() - y64).abs() <= tol).all(), f"gemv vs float64 [N={N}, K={K}, {dtype}, {isa}]"
    assert ((y.reshape(1, N).double() - y_ref.reshape(1, N).double()).abs() <= 2 * tol).all()


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("nested_blocksize", [256, 8])
def test_gemv_4bit_nested_scales_decoded_per_row(isa, dtype, nested_blocksize):
    """Rows of 96 blocks (the 64-wide VBMI decode of nested scales and its tail) and nested blocks smaller
    than 16 (a vector of scales spanning two nested blocks): the reference's result."""
    N, K, bs = 9, 6144, 64
    W = _data((N, K), torch.float32, seed=21)
    A = _data((K,), dtype, seed=22)
    packed, absmax = ref_4b.quantize_4bit(W, bs, "nf4", torch.uint8)
    offset = absmax.mean()
    q8, nabs = ref_bw.quantize_blockwise(absmax - offset, codes.dynamic_map(), nested_blocksize)
    args = (A, packed.view(-1), [N, K], q8, codes.code_4bit("nf4"), bs, nabs, codes.dynamic_map(), offset.reshape(1),
            nested_blocksize)  # fmt: skip
    y = kq.gemv_4bit_cpu(*args)
    y_ref = ref_4b.gemv_4bit(*args)
    am = ref_4b.nested_absmax_values(q8, nabs, codes.dynamic_map(), offset.reshape(1), nested_blocksize)
    W64 = ref_4b.dequantize_4bit_flat(packed.view(-1), am, codes.code_4bit("nf4"), bs, N * K).double().view(N, K)
    scale = W64.abs() @ A.double().abs()
    eps = {torch.float32: 2**-23, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
    tol = scale * (1e-5 + eps + BF16_CODE_ROUNDING.get(dtype, 0.0))
    assert ((y.double() - y_ref.double()).abs() <= tol).all(), f"[{dtype}, nested bs {nested_blocksize}, {isa}]"


def _random_nf4_weight(N: int, K: int, bs: int, nested: bool, gen: torch.Generator) -> tuple[tuple, torch.Tensor]:
    """A random N x K weight quantized to NF4 (nested absmax when asked): the gemv arguments after A, and the
    dequantized weight in float64 (absmax decoded as the reference does)."""
    W = torch.randn(N, K, generator=gen)
    packed, absmax = ref_4b.quantize_4bit(W, bs, "nf4", torch.uint8)
    args, am = (packed.view(-1), [N, K], absmax, codes.code_4bit("nf4"), bs), absmax
    if nested:
        q8, nabs, dmap, off = _nested(absmax)
        args = (packed.view(-1), [N, K], q8, codes.code_4bit("nf4"), bs, nabs, dmap, off, 256)
        am = ref_4b.nested_absmax_values(q8, nabs, dmap, off, 256)
    W64 = ref_4b.dequantize_4bit_flat(packed.view(-1), am, codes.code_4bit("nf4"), bs, N * K).double().view(N, K)
    return args, W64


@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("M,N,K,bs", [(5, 256, 256, 64), (8, 160, 384, 128), (11, 272, 512, 256), (17, 96, 1024, 64),
                                      (8, 37, 256, 64), (6, 1000, 128, 64), (13, 300, 512, 64), (21, 200, 1024, 256),
                                      (17, 160, 2048, 1024), (40, 512, 640, 128), (24, 136, 12544, 64)])  # fmt: skip
def test_gemv_4bit_bf16_row_lanes(isa, nested, M, N, K, bs):
    """bf16 with 5 or more rows of A: groups of 16 weight rows go through the row-lanes kernel (the 16 rows in the
    float lanes, their bytes transposed, A broadcast in pairs) and the rest through the other batched kernels. With
    more than 8 rows the first pass saves the decoded weight and the later ones run on it, two groups of 16 rows at
    once (N of 128 and more gives a thread two groups), chunk by chunk of K (512 weights, or one block of 1024), or
    decode again past K = 12288; every output within the one-row tolerance of float64 math and of a one-row call on
    its row (another order of sums)."""
    gen = torch.Generator().manual_seed(M * 7 + N)
    args, W64 = _random_nf4_weight(N, K, bs, nested, gen)
    A = torch.randn(M, K, generator=gen).to(torch.bfloat16)
    y = kq.gemv_4bit_cpu(A, *args)
    exact = A.double() @ W64.T
    tol = (A.double().abs() @ W64.abs().T) * (1e-5 + 2**-7 + BF16_CODE_ROUNDING[torch.bfloat16]) + 1e-6
    assert ((y.double() - exact).abs() <= tol).all(), f"[M={M}, N={N}, K={K}, bs={bs}, nested={nested}, {isa}]"
    for r in (0, M // 2, M - 1):
        one = kq.gemv_4bit_cpu(A[r], *args)
        assert ((y[r].double() - one.double()).abs() <= 2 * tol[r]).all(), f"row {r}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("M,N,K,bs", [(2, 256, 256, 64), (3, 32, 384, 128), (4, 48, 512, 64), (8, 37, 256, 64),
                                      (9, 160, 1024, 256), (5, 1000, 128, 64), (17, 96, 2048, 1024),
                                      (24, 136, 12544, 64), (2, 16, 128, 128), (11, 80, 640, 128)])  # fmt: skip
def test_gemv_4bit_float_row_lanes(isa, dtype, nested, M, N, K, bs):
    """float32 / float16 with 2 or more rows of A: groups of 16 weight rows go through the float32 row-lanes kernels
    (the 16 rows in the float lanes, A broadcast from the p8 layout), two groups at a time from 3 rows (N of 32 and
    more gives a thread two), the remaining rows through the p8 batched kernel; tiles of 8 rows of A with a last
    tile of 1 to 8; blocks of 64 to 1024 (a block over several 128-weight steps); every output within the one-row
    tolerance of float64 math and of a one-row call on its row (another order of sums)."""
    gen = torch.Generator().manual_seed(M * 11 + N + K)
    args, W64 = _random_nf4_weight(N, K, bs, nested, gen)
    A = torch.randn(M, K, generator=gen).to(dtype)
    y = kq.gemv_4bit_cpu(A, *args)
    assert y.shape == (M, N) and y.dtype == dtype
    exact = A.double() @ W64.T
    eps = {torch.float32: 0.0, torch.float16: 2**-11}[dtype]
    tol = (A.double().abs() @ W64.abs().T) * 1e-5 + exact.abs() * eps + 1e-6
    assert ((y.double() - exact).abs() <= tol).all(), f"[M={M}, N={N}, K={K}, bs={bs}, nested={nested}, {isa}]"
    for r in (0, M // 2, M - 1):
        one = kq.gemv_4bit_cpu(A[r], *args)
        assert ((y[r].double() - one.double()).abs() <= 2 * tol[r]).all(), f"row {r}"


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape,bs", [((3, 256), 64), ((2, 3, 256), 64), ((0, 256), 64), ((11, 384), 128),
                                      ((17, 512), 256), ((9, 320), 64), ((5, 256), 32), ((2, 100), 64)],
                         ids=["3rows", "2x3rows", "0rows", "11rows-bs128", "17rows-bs256", "9rows-K320", "5rows-bs32",
                              "2rows-K100"])  # fmt: skip
def test_gemv_4bit_a_few_rows(isa, dtype, shape, bs):
    """A with several rows (one pass of the weight for 8 of them on the AVX-512 paths, more in chunks; bs 64 puts
    two blocks in one 128-weight step, bs 32 two in one 64-weight step; K 320 and 100 take the row-by-row paths):
    each output row is the one-row gemv of its row within float rounding (the batched kernels may sum in another
    order), and the reference's A @ W.T within the one-row tolerance; zero rows give an empty output."""
    N, K = 45, shape[-1]
    W = _data((N, K), torch.float32, seed=31)
    packed, absmax = ref_4b.quantize_4bit(W, bs, "nf4", torch.uint8)
    q8, nabs, dmap, off = _nested(absmax)
    A = _data(shape, dtype, seed=32)
    for args in ((packed.view(-1), [N, K], absmax, codes.code_4bit("nf4"), bs),
                 (packed.view(-1), [N, K], q8, codes.code_4bit("nf4"), bs, nabs, dmap, off, 256)):  # fmt: skip
        y = kq.gemv_4bit_cpu(A, *args)
        assert y.shape == (*shape[:-1], N) and y.dtype == dtype
        flat_A, flat_y = A.reshape(-1, K), y.reshape(-1, N)
        W64 = ref_4b.dequantize_4bit_flat(packed.view(-1), absmax if len(args) == 5 else
                                          ref_4b.nested_absmax_values(q8, nabs, dmap, off, 256),
                                          codes.code_4bit("nf4"), bs, N * K).double().view(N, K)  # fmt: skip
        scale = flat_A.double().abs() @ W64.abs().T
        eps = {torch.float32: 2**-23, torch.float16: 2**-10, torch.bfloat16: 2**-7}[dtype]
        tol = scale * (1e-5 + eps + BF16_CODE_ROUNDING.get(dtype, 0.0)) + 1e-6
        for r in range(flat_A.shape[0]):
            one = kq.gemv_4bit_cpu(flat_A[r], *args)
            assert ((flat_y[r].double() - one.double()).abs() <= 2 * tol[r]).all(), f"row {r} [{dtype}, {isa}]"
        y_ref = ref_4b.gemv_4bit(A, *args)
        assert ((flat_y.double() - y_ref.reshape(-1, N).double()).abs() <= tol).all()


def test_gemv_4bit_fp4_and_storage(isa):
    W = _data((40, 256), torch.float32, seed=2)
    packed, absmax = ref_4b.quantize_4bit(W, 128, "fp4", torch.float32)
    A = _data((256,), torch.bfloat16, seed=9)
    y = kq.gemv_4bit_cpu(A, packed.view(torch.uint8).view(-1), [40, 256], absmax, codes.code_4bit("fp4"), 128)
    y_ref = ref_4b.gemv_4bit(A, packed.view(torch.uint8).view(-1), [40, 256], absmax, codes.code_4bit("fp4"), 128)
    W = ref_4b.dequantize_4bit_flat(packed.view(torch.uint8).view(-1), absmax, codes.code_4bit("fp4"), 128, 40 * 256)
    scale = W.view(40, 256).double().abs() @ A.double().abs()
    assert y.shape == (40,) and ((y.double() - y_ref.double()).abs() <= scale * (2**-7 + 2**-8) + 1e-3).all()


def _bf16_path_active() -> bool:
    return kq.isa() == "avx512" and "avx512bf16" in kq.cpu_features().get("cpu_flags", "")


@pytest.mark.parametrize("N,K,blocksize,nested", [(9, 256, 32, False), (13, 512, 64, True), (6, 640, 128, False),
                                                  (5, 1024, 256, True), (4, 4096, 4096, False), (7, 320, 64, True),
                                                  (3, 384, 128, False), (6, 640, 128, True)])  # fmt: skip
def test_gemv_bf16_dot_path_is_exact_with_bf16_codes(N, K, blocksize, nested):
    """The bf16 path computes sum(A * bf16(code) ) * absmax per block with exact products: equal to float64
    math on the bf16-rounded code book up to float32 accumulation (not just within the bf16 tolerance)."""
    if not _bf16_path_active():
        pytest.skip("no AVX512-BF16 on this CPU")
    W = _data((N, K), torch.float32, seed=N + K)
    A = _data((K,), torch.bfloat16, seed=K)
    packed, absmax = ref_4b.quantize_4bit(W, blocksize, "nf4", torch.uint8)
    code = codes.code_4bit("nf4")
    args = (A, packed.view(-1), [N, K], absmax, code, blocksize)
    am = absmax
    if nested:
        q8, nabs, ncode, off = _nested(absmax)
        args = (A, packed.view(-1), [N, K], q8, code, blocksize, nabs, ncode, off, 256)
        am = ref_4b.nested_absmax_values(q8, nabs, ncode, off, 256)
    y = kq.gemv_4bit_cpu(*args)
    code_bf16 = code.to(torch.bfloat16).to(torch.float64)
    W64 = ref_4b.dequantize_4bit_flat(packed.view(-1), am.double(), code_bf16, blocksize, N * K).view(N, K)
    y64 = W64 @ A.double()
    scale = W64.abs() @ A.double().abs()
    assert ((y.double() - y64).abs() <= scale * 1e-5 + y64.abs() * 2**-8).all()


def test_gemv_bf16_subnormal_activations_take_the_float32_path():
    """vdpbf16ps flushes subnormals: activations with tiny or subnormal values must not use the bf16 path."""
    W = _data((8, 256), torch.float32, seed=5)
    packed, absmax = ref_4b.quantize_4bit(W, 64, "nf4", torch.uint8)
    A = torch.full((256,), 2.0**-130, dtype=torch.bfloat16)  # subnormal in bf16 and float32
    y = kq.gemv_4bit_cpu(A, packed.view(-1), [8, 256], absmax, codes.code_4bit("nf4"), 64)
    y_ref = ref_4b.gemv_4bit(A, packed.view(-1), [8, 256], absmax, codes.code_4bit("nf4"), 64)
    assert (y_ref != 0).any()
    assert torch.allclose(y.double(), y_ref.double(), rtol=2**-7, atol=0)


@pytest.mark.parametrize("pos", [0, 37, 300, 511])
def test_gemv_bf16_one_tiny_activation_anywhere_takes_the_float32_path(pos):
    """A single activation below 2^-100 anywhere in the row (the vectorized scan, every lane and step) sends the
    call to the float32 path: then the result matches float32 math, not just the bf16-code tolerance."""
    if not _bf16_path_active():
        pytest.skip("no AVX512-BF16 on this CPU")
    W = _data((16, 512), torch.float32, seed=7)
    packed, absmax = ref_4b.quantize_4bit(W, 64, "nf4", torch.uint8)
    A = _data((512,), torch.bfloat16, seed=8)
    A[pos] = 2.0**-110
    y = kq.gemv_4bit_cpu(A, packed.view(-1), [16, 512], absmax, codes.code_4bit("nf4"), 64)
    W64 = ref_4b.dequantize_4bit_flat(packed.view(-1), absmax, codes.code_4bit("nf4"), 64, 16 * 512).double()
    y64 = W64.view(16, 512) @ A.double()
    scale = W64.view(16, 512).abs() @ A.double().abs()
    assert ((y.double() - y64).abs() <= scale * 1e-5 + y64.abs() * 2**-8).all()
    A[pos] = 1.0  # and without it, the bf16 path (code book rounded to bf16): visibly different somewhere
    y_bf16 = kq.gemv_4bit_cpu(A, packed.view(-1), [16, 512], absmax, codes.code_4bit("nf4"), 64)
    y64 = W64.view(16, 512) @ A.double()
    scale = W64.view(16, 512).abs() @ A.double().abs()
    assert not ((y_bf16.double() - y64).abs() <= scale * 1e-5 + y64.abs() * 2**-8).all()


def test_gemv_simd_matches_generic_oracle():
    W = _data((515, 1024), torch.float32, seed=4)
    packed, absmax = ref_4b.quantize_4bit(W, 64, "nf4", torch.uint8)
    A = _data((1024,), torch.float32, seed=8)
    outs = {}
    for name in ISAS:
        with kq.forced_isa(name):
            outs[name] = kq.gemv_4bit_cpu(A, packed.view(-1), [515, 1024], absmax, codes.code_4bit("nf4"), 64)
    for name, y in outs.items():
        assert torch.allclose(y, outs["generic"], rtol=1e-5, atol=1e-4), f"{name} differs from the generic oracle"


# -------------------------------------------------------------------------------------------------- int8


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape", [(1, 1), (3, 17), (33, 257), (2, 5, 131), (1, 4099)])
@pytest.mark.parametrize("threshold", [0.0, 2.0, 100.0])
def test_int8_vectorwise_quant_matches_reference(isa, dtype, shape, threshold):
    A = _data(shape, dtype, seed=sum(shape), scale=1.5)
    codes_, absmax, cols = _fn("int8_vectorwise_quant")(A, threshold)
    codes_ref, absmax_ref, cols_ref = ref_i8.int8_vectorwise_quant(A, threshold)
    assert codes_.shape == A.shape and codes_.dtype == torch.int8 and cols.dtype == torch.int64
    assert torch.equal(absmax, absmax_ref) and torch.equal(cols, cols_ref), f"[{shape}, thr={threshold}, {isa}]"
    assert torch.equal(codes_, codes_ref), f"codes differ [{shape}, {dtype}, thr={threshold}, {isa}]"
    x = A.reshape(-1, shape[-1]).double()
    keep = torch.ones(shape[-1], dtype=torch.bool)
    keep[cols] = False
    scaled = x * 127 / absmax.double().clamp(min=1e-30)[:, None]
    assert ((codes_.reshape(x.shape).double() - scaled)[:, keep].abs() <= 0.5 + 1e-4).all()


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_int8_vectorwise_quant_specials_and_ties(isa, threshold):
    """NaN, infinities, values rounding to +-127.5 and exact .5 ties (round half to even), inside the
    64-wide steps of the AVX-512 path and in its tail: the reference's codes, absmax and outlier columns."""
    K = 64 * 3 + 21
    A = _data((5, K), torch.float32, seed=11)
    A[0, 3], A[0, 70], A[0, K - 2] = float("nan"), float("inf"), float("-inf")
    A[1] = torch.arange(K, dtype=torch.float32) - 106.5  # absmax 106.5 -> codes hit ties of k * 127/106.5
    A[2, :] = 0.0
    A[2, 100] = -2.0
    A[3] = torch.linspace(-1, 1, K) * 5.999
    A[4, 65], A[4, 200] = 6.0, -7.5  # outliers when the threshold is 6
    for dtype in FLOATS:
        X = A.to(dtype)
        c, a, cols = kq.int8_vectorwise_quant_cpu(X, threshold)
        c_ref, a_ref, cols_ref = ref_i8.int8_vectorwise_quant(X, threshold)
        assert torch.equal(cols, cols_ref) and torch.equal(a.nan_to_num(), a_ref.nan_to_num())
        assert torch.equal(c, c_ref), f"codes differ at {(c != c_ref).nonzero()[:5].tolist()} [{dtype}, {isa}]"


def test_int8_vectorwise_quant_all_outliers_row(isa):
    A = torch.tensor([[5.0, -6.0, 7.0], [0.5, 0.25, -0.125]])
    c, a, cols = kq.int8_vectorwise_quant_cpu(A, 4.0)
    assert cols.tolist() == [0, 1, 2] and a.tolist() == [0.0, 0.5] and (c == 0).all()


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 4099, 67), (3, 64, 5), (16, 300, 77), (17, 129, 33), (40, 65, 9),
                                   (0, 8, 4), (4, 0, 3), (2, 192, 6), (6, 70, 7), (70, 128, 10)])  # fmt: skip
def test_int8_linear_matmul_exact(isa, M, K, N):
    g = torch.Generator().manual_seed(M + K + N)
    A = torch.randint(-128, 128, (M, K), dtype=torch.int8, generator=g)
    B = torch.randint(-128, 128, (N, K), dtype=torch.int8, generator=g)
    C = _fn("int8_linear_matmul")(A, B)
    assert C.dtype == torch.int32 and C.shape == (M, N)
    if K:  # the reference's reshape(-1, 0) cannot take K == 0 (reported to the lead)
        assert torch.equal(C, ref_i8.int8_linear_matmul(A, B))
    assert torch.equal(C.long(), A.long() @ B.long().T)
    assert torch.equal(kq._int8_mm_native(A, B), C)  # the native kernel also above INT8_NATIVE_MAX_ROWS


def test_int8_linear_matmul_wraps_modulo_2_32(isa):
    """Sums past the int32 range wrap as torch's int32 arithmetic does (the VNNI kernel's offset correction too)."""
    K = 140_000  # 128 * 128 * K > 2^31
    A = torch.full((2, K), -128, dtype=torch.int8)
    B = torch.full((3, K), -128, dtype=torch.int8)
    B[1] = 127
    A[1, ::3] = 127
    C = kq._int8_mm_native(A, B)
    exact = A.long() @ B.long().T
    wrapped = ((exact + 2**31) % 2**32 - 2**31).to(torch.int32)
    assert (exact.abs() > 2**31).any() and torch.equal(C, wrapped)


def test_int8_linear_matmul_extremes_and_3d(isa):
    A = torch.full((2, 3, 200), -128, dtype=torch.int8)
    B = torch.full((7, 200), -128, dtype=torch.int8)
    B[1] = 127
    C = kq.int8_linear_matmul_cpu(A, B)
    assert C.shape == (2, 3, 7) and torch.equal(C, ref_i8.int8_linear_matmul(A, B))


@pytest.mark.parametrize("out_dtype", [None, *FLOATS])
@pytest.mark.parametrize("bias_dtype", [None, *FLOATS])
def test_int8_mm_dequant_matches_reference(isa, out_dtype, bias_dtype):
    g = torch.Generator().manual_seed(5)
    A = torch.randint(-(2**22), 2**22, (2, 3, 37), dtype=torch.int32, generator=g)
    row, col = torch.rand(6, generator=g) * 4, torch.rand(37, generator=g) * 4
    bias = None if bias_dtype is None else _data((37,), bias_dtype, seed=1)
    out = _fn("int8_mm_dequant")(A, row, col, out_dtype, bias)
    ref = ref_i8.int8_mm_dequant(A, row, col, out_dtype, bias)
    assert out.dtype == (out_dtype or torch.float16) and out.shape == A.shape and torch.equal(out, ref)
    exact = A.double().reshape(6, 37) * row.double()[:, None] * col.double()[None, :] / 127**2
    exact = exact + (0 if bias is None else bias.double())
    assert torch.allclose(out.double().reshape(6, 37), exact, rtol=2**-7, atol=1e-3)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("threshold", [0.0, 2.5])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("K,N", [(515, 67), (4099, 203)])  # the second: several row chunks per thread, N % 4 != 0
def test_int8_mm_outlier_batch1(isa, dtype, threshold, with_bias, K, N):
    A = _data((1, K), dtype, seed=3, scale=1.5)
    g = torch.Generator().manual_seed(2)
    CB = torch.randint(-127, 128, (N, K), dtype=torch.int8, generator=g)
    SCB = torch.rand(N, generator=g) + 0.1
    bias = _data((N,), dtype, seed=4) if with_bias else None
    assert kq.supports_int8_mm_outlier(A, CB, SCB, threshold, bias) is True
    out = _fn("int8_mm_outlier")(A, CB, SCB, threshold, bias)
    ref = ref_i8.int8_mm_outlier(A, CB, SCB, threshold, bias)
    assert out.dtype == dtype and out.shape == (1, N)
    tol = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    assert torch.allclose(out.float(), ref.float(), rtol=tol, atol=tol * 10), (out.float() - ref.float()).abs().max()
    assert isinstance(kq.supports_int8_mm_outlier(A.repeat(2, 1), CB, SCB, threshold), str)


# ---------------------------------------------------------------------------------------------- dispatch, isa, errors


def test_dispatch_picks_cpu():
    A = torch.randn(1000)
    code = codes.dynamic_map()
    calls = {
        "quantize_blockwise": dict(A=A, code=code, blocksize=256),
        "quantize_4bit": dict(A=A, blocksize=64, quant_type="nf4", quant_storage=torch.uint8),
        "int8_vectorwise_quant": dict(A=A.view(10, 100), threshold=0.0),
        "int8_linear_matmul": dict(A=torch.zeros(2, 8, dtype=torch.int8), B=torch.zeros(3, 8, dtype=torch.int8)),
    }
    for op, call in calls.items():
        assert registry.select(op, "cpu", call).backend == "cpu", registry.explain(op, "cpu", call)
    q, absmax = torch.ops.bnb_api.quantize_blockwise(A, code, 256)
    assert torch.equal(q, ref_bw.quantize_blockwise(A, code, 256)[0])


def test_isa_control_and_features():
    feats = kq.cpu_features()
    assert feats["quant_isa_active"] in kq.ISA_NAMES and feats["openmp_threads"] >= 1
    with kq.forced_isa("generic"):
        assert kq.isa() == "generic"
    assert kq.isa() == feats["quant_isa_active"]
    with pytest.raises(ValueError, match="isa='sse'"):
        kq.set_isa("sse")


def test_wrappers_reject_bad_inputs():
    code = codes.dynamic_map()
    with pytest.raises(ValueError, match="A.dtype"):
        kq.quantize_blockwise_cpu(torch.zeros(10, dtype=torch.int32), code, 64)
    with pytest.raises(ValueError, match="code has 255"):
        kq.quantize_blockwise_cpu(torch.zeros(10), code[:255], 64)
    with pytest.raises(ValueError, match="A must be contiguous"):
        kq.quantize_4bit_cpu(torch.zeros(10, 4).t(), 64, "nf4", torch.uint8)
    with pytest.raises(ValueError, match="absmax has 3"):
        kq.dequantize_blockwise_cpu(torch.zeros(100, dtype=torch.uint8), torch.ones(3), code, 64, torch.float32)
    with pytest.raises(ValueError, match="A has 3 elements"):
        kq.dequantize_4bit_cpu(torch.zeros(3, dtype=torch.uint8), torch.ones(1), 64, "nf4", [10], torch.float32)
    with pytest.raises(ValueError, match="B has"):
        kq.gemv_4bit_cpu(torch.zeros(64), torch.zeros(10, dtype=torch.uint8), [2, 64], torch.ones(2),
                         codes.code_4bit("nf4"), 64)  # fmt: skip
    with pytest.raises(ValueError, match="nested_code"):
        q8 = torch.zeros(2, dtype=torch.uint8)
        kq.gemv_4bit_cpu(torch.zeros(64), torch.zeros(64, dtype=torch.uint8), [2, 64], q8, codes.code_4bit("nf4"), 64,
                         torch.ones(1), None, torch.zeros(1))  # fmt: skip
    with pytest.raises(ValueError, match="B.dtype"):
        kq.int8_linear_matmul_cpu(torch.zeros(2, 8, dtype=torch.int8), torch.zeros(3, 8))
    with pytest.raises(ValueError, match="row_stats has 1"):
        kq.int8_mm_dequant_cpu(torch.zeros(2, 4, dtype=torch.int32), torch.ones(1), torch.ones(4))
    with pytest.raises(ValueError, match="bias has 3"):
        kq.int8_mm_outlier_cpu(
            torch.zeros(1, 8), torch.zeros(4, 8, dtype=torch.int8), torch.ones(4), 0.0, torch.ones(3)
        )
    # the op contract rejects before any kernel runs
    with pytest.raises(ValueError, match="blocksize=48"):
        torch.ops.bnb_api.quantize_blockwise(torch.zeros(10), code, 48)


def test_c_rejects_inconsistent_lengths():
    """The C entry points check every length they are given (no trust in the caller)."""
    ffi, lib = kq._load()
    A = torch.randn(100)
    out = torch.empty(100, dtype=torch.uint8)
    absmax = torch.empty(2)
    code = codes.dynamic_map()

    def qb(n, out_len, absmax_len, code_len=256, bs=64):
        return lib.bnbq_quantize_blockwise(kq._ptr(ffi, A), lib.BNBQ_F32, n, kq._ptr(ffi, code, "float *"), code_len,
                                           bs, kq._ptr(ffi, out, "uint8_t *"), out_len,
                                           kq._ptr(ffi, absmax, "float *"), absmax_len, 1)  # fmt: skip

    assert qb(100, 100, 2) == lib.BNBQ_OK
    assert qb(100, 99, 2) == lib.BNBQ_EINVAL
    assert qb(100, 100, 1) == lib.BNBQ_EINVAL
    assert qb(100, 100, 2, code_len=16) == lib.BNBQ_EINVAL
    assert qb(100, 100, 2, bs=48) == lib.BNBQ_EINVAL
    assert lib.bnbq_int8_linear_matmul(ffi.NULL, 2, 3, ffi.NULL, 4, ffi.NULL, 7, 1) == lib.BNBQ_EINVAL
    assert lib.bnbq_set_isa(7) == lib.BNBQ_EINVAL


def test_threads_give_same_result():
    A = _data((600_001,), torch.float16, seed=1)
    code = codes.dynamic_map()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kq.quantize_blockwise_cpu(A, code, 256)
        torch.set_num_threads(max(2, threads))
        many = kq.quantize_blockwise_cpu(A, code, 256)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])

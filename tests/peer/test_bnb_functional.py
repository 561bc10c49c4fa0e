"""Mirrors bitsandbytes tests/test_functional.py (0.47-0.50 era) on CPU, with fewer iterations."""

import math

import pytest
import torch
from peer_helpers import assert_few_not_close, dname

FP = [torch.float32, torch.float16, torch.bfloat16]
ITERS_8BIT = 3  # bnb: 100 (CUDA) / 10 (CPU)


# ---------------- 8-bit blockwise ----------------
def _blockwise_errors(F, sample, dtype, blocksize, nested, code=None):
    """Mean absolute and relative error of quantize_blockwise round trips on ITERS_8BIT 1024 x 1024 samples (the
    first through QuantState.as_dict / from_dict); also the last round trip's output."""
    diffs, rels = [], []
    for i in range(ITERS_8BIT):
        A1 = sample(1024, 1024, dtype=dtype)
        C, S = F.quantize_blockwise(A1, blocksize=blocksize, nested=nested, **({} if code is None else {"code": code}))
        if i == 0:
            S = F.QuantState.from_dict(S.as_dict(), device=torch.device("cpu"))
        A2 = F.dequantize_blockwise(C, S)
        d = (A1 - A2).abs().float()
        diffs.append(d.mean().item())
        rels.append((d / (A1.float() + 1e-8).abs()).mean().item())
    return sum(diffs) / len(diffs), sum(rels) / len(rels), A2


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
@pytest.mark.parametrize("blocksize", [4096, 2048, 1024, 512, 256, 128, 64])
@pytest.mark.parametrize("nested", [False, True], ids=["plain", "nested"])
@pytest.mark.parametrize("dtype", FP, ids=dname)
def test_dynamic_blockwise_quantization(lib, dtype, nested, blocksize, signed):
    F = lib.functional
    if lib.__name__ == "bitsandbytes" and (dtype != torch.float32 or nested or blocksize != 256):
        pytest.skip("bnb's own CPU run only covers fp32/plain/256")
    abserr, relerr, A2 = _blockwise_errors(F, torch.randn, dtype, blocksize, nested)
    assert abserr < 0.011, abserr
    assert relerr < 0.018, relerr
    assert A2.dtype == dtype

    code = F.create_dynamic_map(signed=signed)
    abserr, relerr, A2 = _blockwise_errors(F, torch.rand, dtype, blocksize, nested, code)
    if signed:
        assert abserr < 0.0036, abserr
        assert relerr < 0.015, relerr
    else:
        # bnb's line "assert abserr < 0.00175 if ipex else 0.0023" effectively checks 0.0023 (or nothing);
        # the older tests used 0.00175. We check 0.0023.
        assert abserr < 0.0023, abserr
        assert relerr < 0.012, relerr
    assert A2.dtype == dtype


@pytest.mark.parametrize("blocksize", [4096, 16384])
def test_blockwise_cpu_large(lib, blocksize):
    F = lib.functional
    for _ in range(2):
        A1 = torch.randn(128, 128, 128)
        C, S = F.quantize_blockwise(A1, blocksize=blocksize)
        A2 = F.dequantize_blockwise(C, S, blocksize=blocksize)
        assert (A1 - A2).abs().mean().item() < 0.011


@pytest.mark.parametrize("method", ["linear", "fp8", "dynamic"])
def test_few_bit_quant_8bit(lib, method):
    F = lib.functional
    bits = 8
    if method == "linear":
        code = F.create_linear_map(True, total_bits=bits)
    elif method == "fp8":
        ebits = math.ceil(bits / 2)
        code = F.create_fp8_map(True, ebits, bits - ebits - 1, bits)
    else:
        code = F.create_dynamic_map(True, bits, bits)
    assert torch.unique(code).numel() in [2**bits, 2**bits - 1]
    assert code.numel() == 256
    for _ in range(10):
        values = torch.randn(1, 32)
        values /= values.abs().max()
        q1 = torch.stack([(v - code).abs().argmin() for v in values[0]])
        q2, S2 = F.quantize_blockwise(values, code=code)
        idx = torch.isclose(q1.int(), q2.int().flatten())
        if not idx.sum():
            torch.testing.assert_close(q1, q2)
        # (extra, not in bnb) values must round to a neighbour of the nearest code
        assert ((q1.int() - q2.int().flatten()).abs() <= 1).all()


# ---------------- LLM.int8 ----------------
def _vq(x, dim=1):
    m = torch.amax(x.abs(), dim=dim, keepdim=True)
    return torch.round(x * (127.0 / m)).to(torch.int8), m


def _vmmdq(xq, S1, S2, dtype=torch.half):
    x = xq.float()
    if S1.dim() == 3 and x.dim() == 2:
        S1 = S1.squeeze(0)
    if S2.dim() == 3 and x.dim() == 2:
        S2 = S2.squeeze(0)
    x *= S1 / 127.0
    x *= S2 / 127.0
    return x.to(dtype)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("dim3", [499, 512])
def test_int8_linear_matmul(lib, dim3, dims):
    F = lib.functional
    for _ in range(3):  # bnb: k=20
        A = torch.randint(-128, 127, size=(128, dim3) if dims == 2 else (128, 256, dim3), dtype=torch.int8)
        B = torch.randint(-128, 127, size=(512, dim3), dtype=torch.int8)
        C1 = torch.matmul(A.float(), B.t().float())
        C2 = F.int8_linear_matmul(A, B)
        torch.testing.assert_close(C1, C2.float())


def test_int8_linear_matmul_half(lib):
    F = lib.functional
    for _ in range(20):
        A = torch.normal(0, 0.5, size=(32, 32)).half()
        B = torch.randn(32, 32).half()
        torch.nn.init.xavier_uniform_(B)
        C1 = torch.matmul(A, B.t())
        CA, sA, _ = F.int8_vectorwise_quant(A)
        CB, sB, _ = F.int8_vectorwise_quant(B)
        out = F.int8_mm_dequant(F.int8_linear_matmul(CA, CB), sA, sB)
        torch.testing.assert_close(C1, out, atol=0.025, rtol=0.05)


@pytest.mark.parametrize("has_bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("dim4", [64, 1024])
@pytest.mark.parametrize("dim1", [64, 256])
def test_dequant_mm(lib, dim1, dim4, has_bias):
    F = lib.functional
    inner = 128
    bias = torch.randn(dim4, dtype=torch.float16) if has_bias else None
    A = torch.randn(dim1, inner)
    B = torch.randn(dim4, inner)
    C1 = torch.matmul(A.half(), B.t().half())
    if has_bias:
        C1 += bias
    A1, maxA = _vq(A, 1)
    B1, maxB = _vq(B, 1)
    C2 = F.int8_linear_matmul(A1, B1)
    C4 = _vmmdq(C2.float(), maxA, maxB.t())
    if has_bias:
        C4 += bias
    std = C1.std(0).view(1, -1)
    C1 /= std
    C4 /= std
    C5 = F.int8_mm_dequant(C2, maxA, maxB, bias=bias)
    C5 /= std
    torch.testing.assert_close(C5, C4, atol=0.015, rtol=0.1)
    assert_few_not_close(C1, C4, atol=0.015, rtol=0.1, count=int(0.01 * C5.numel()))


@pytest.mark.parametrize("dim1,dim4,inner", [(1, 2, 4), (8, 128, 256), (2048, 2048, 512)])
def test_integrated_int8_linear_matmul(lib, dim1, dim4, inner):
    F = lib.functional
    for _ in range(3):  # bnb: k=20
        A = torch.randn(dim1, inner).half()
        B = torch.randn(dim4, inner).half()
        out1 = torch.matmul(A, B.t())
        C1a, s1a, _ = F.int8_vectorwise_quant(A)
        C2a, s2a, _ = F.int8_vectorwise_quant(B)
        A1, maxA = _vq(A, 1)
        B1, maxB = _vq(B, 1)
        torch.testing.assert_close(maxA.flatten().float(), s1a)
        torch.testing.assert_close(maxB.flatten().float(), s2a)
        torch.testing.assert_close(C1a, A1, rtol=0, atol=1)
        torch.testing.assert_close(C2a, B1, rtol=0, atol=1)
        out2 = F.int8_linear_matmul(A1, B1)
        out3 = _vmmdq(F.int8_linear_matmul(A1, B1).float(), maxA, maxB.t())
        err1 = (out1 - out2).abs().mean().item()
        err2 = (out1 - out3).abs().mean().item()
        assert err2 <= err1 * 1.025


@pytest.mark.parametrize("threshold", [2.0, 3.0])
@pytest.mark.parametrize("dim1,dim2", [(512, 1024), (2048, 4096)])
def test_coo_int8_vectorwise_quant(lib, dim1, dim2, threshold):
    F = lib.functional
    for _ in range(2):  # bnb: k=20
        A = torch.randn(dim1, dim2).half()
        idx = A.abs() >= threshold
        CA, statsA, outlier_cols = F.int8_vectorwise_quant(A, threshold=threshold)
        assert outlier_cols is not None
        A2 = (CA.float() * statsA.unsqueeze(1) / 127).half()
        A[:, outlier_cols] = 0
        torch.testing.assert_close(A * (idx == 0), A2, rtol=0.05, atol=1.5e-2)


# ---------------- 4-bit ----------------
ERR = {
    "fp4": {
        "err": {
            64: 0.096545,
            128: 0.102947,
            256: 0.108685,
            512: 0.114087,
            1024: 0.119312,
            2048: 0.124460,
            4096: 0.129573,
        },
        "rel": {
            64: 0.260130,
            128: 0.275734,
            256: 0.289842,
            512: 0.302852,
            1024: 0.314982,
            2048: 0.326402,
            4096: 0.337228,
        },
    },
    "nf4": {
        "err": {
            64: 0.072792,
            128: 0.076835,
            256: 0.080326,
            512: 0.083535,
            1024: 0.086603,
            2048: 0.089592,
            4096: 0.092537,
        },
        "rel": {
            64: 0.203299,
            128: 0.215252,
            256: 0.226044,
            512: 0.236021,
            1024: 0.245365,
            2048: 0.254146,
            4096: 0.262457,
        },
    },
}


@pytest.mark.parametrize("blocksize", [64, 128, 256, 512, 1024, 2048, 4096])
@pytest.mark.parametrize("quant_type", ["fp4", "nf4"])
@pytest.mark.parametrize("dtype", FP, ids=dname)
def test_4bit_quant(lib, dtype, quant_type, blocksize):
    F = lib.functional
    A1 = torch.randn(1024, 1024, dtype=dtype)
    qa, SA = F.quantize_4bit(A1, blocksize=blocksize, quant_type=quant_type)
    SA = F.QuantState.from_dict(SA.as_dict(), device=torch.device("cpu"))
    A2 = F.dequantize_4bit(qa, SA, blocksize=blocksize, quant_type=quant_type)
    err = (A1 - A2).abs().float()
    relerr = (err / (A1.abs().float() + 1e-8)).mean().item()
    err = err.mean().item()
    assert A2.dtype == dtype
    assert err < ERR[quant_type]["err"][blocksize] + 1e-3, err
    # mean(|err| / |A|) is heavy-tailed: bitsandbytes' limits are averages of CUDA runs, and on this seed the
    # 4-bit codes (bit-identical to bitsandbytes', test_bnb_format.py) exceed them by up to 3.5e-4 at blocksize >= 512
    lim = ERR[quant_type]["rel"][blocksize] + 1e-3 + (5e-4 if blocksize >= 512 else 0.0)
    assert relerr < lim, relerr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=dname)
@pytest.mark.parametrize("blocksize", [64, 128])
@pytest.mark.parametrize("quant_type", ["fp4", "nf4"])
def test_4bit_compressed_stats(lib, quant_type, blocksize, dtype):
    F = lib.functional
    for _ in range(3):  # bnb: 10
        A1 = torch.randn(1024, 1024, dtype=dtype)
        q2, SA2 = F.quantize_4bit(A1, blocksize=blocksize, quant_type=quant_type)
        q3, SA3 = F.quantize_4bit(A1, blocksize=blocksize, compress_statistics=True, quant_type=quant_type)
        for q, S in ((q2, SA2), (q3, SA3)):
            A2 = F.dequantize_4bit(q, S, quant_type=quant_type)
            err = (A1 - A2).abs().float()
            relerr = (err / (A1.abs().float() + 1e-15)).mean().item()
            assert err.mean().item() < 0.11
            assert relerr < 0.28


@pytest.mark.parametrize("dim", [128, 1024])
@pytest.mark.parametrize("quant_storage", [torch.uint8, torch.float16, torch.bfloat16, torch.float32], ids=dname)
@pytest.mark.parametrize("dtype", FP, ids=dname)
@pytest.mark.parametrize("kind", ["fc1", "fc2", "attn", "attn_packed"])
@pytest.mark.parametrize("storage_type", ["nf4", "fp4"])
@pytest.mark.parametrize("double_quant", [False, True], ids=["DQ0", "DQ1"])
def test_gemv_4bit(lib, dim, dtype, storage_type, quant_storage, double_quant, kind):
    if lib.__name__ == "bitsandbytes":
        pytest.skip(
            "bitsandbytes 0.50.2's CPU gemv_4bit is far off here (err1 ~0.03-0.2, absratio ~12) - unusable as reference"
        )
    F = lib.functional
    e1, e2, e3, r1, r2, r3, m1 = [], [], [], [], [], [], []
    for _ in range(3):  # bnb: 10 on CPU
        if kind == "fc1":
            A, B = torch.randn(1, dim, dtype=dtype), torch.randn(dim * 4, dim, dtype=dtype) / math.sqrt(dim)
        elif kind == "fc2":
            A, B = torch.randn(1, 4 * dim, dtype=dtype), torch.randn(dim, 4 * dim, dtype=dtype) / math.sqrt(dim)
        elif kind == "attn":
            A, B = torch.randn(1, dim, dtype=dtype), torch.randn(dim, dim, dtype=dtype) / math.sqrt(dim)
        else:
            A, B = torch.randn(1, dim, dtype=dtype), torch.randn(dim * 3, dim, dtype=dtype) / math.sqrt(dim)
        qB, state = F.quantize_4bit(
            B, quant_type=storage_type, compress_statistics=double_quant, quant_storage=quant_storage
        )
        C3 = torch.matmul(A, B.t())
        C2 = F.gemv_4bit(A, qB.t(), state=state)
        A.requires_grad = True
        C1 = lib.matmul_4bit(A, qB.t(), state)
        err1, err2, err3 = (C1 - C2).abs().float(), (C3 - C2).abs().float(), (C3 - C1).abs().float()
        e1.append(err1.mean().item())
        e2.append(err2.mean().item())
        e3.append(err3.mean().item())
        r1.append((err1 / (C1.abs().float() + 1e-5)).mean().item())
        r2.append((err2 / (C3.abs().float() + 1e-5)).mean().item())
        r3.append((err3 / (C3.abs().float() + 1e-5)).mean().item())
        m1.append(err1.max().item())
    s = math.sqrt(dim)
    avg = lambda x: sum(x) / len(x) / s  # noqa: E731
    err1, err2, err3, relerr1, relerr2, relerr3, maxerr1 = map(avg, (e1, e2, e3, r1, r2, r3, m1))
    absratio, relratio = err2 / err3, relerr2 / relerr3
    info = (
        f"err1={err1:.3g} relerr1={relerr1:.3g} maxerr1={maxerr1:.3g} absratio={absratio:.4f} relratio={relratio:.4f}"
    )
    if dtype == torch.float16:
        if dim <= 512:
            assert err1 < 7e-5 and relerr1 < 0.0008, info
        else:
            assert err1 < 6e-5 and relerr1 < 2e-4, info
        assert 0.995 < absratio < 1.005 and 0.995 < relratio < 1.005, info
    elif dtype == torch.float32:
        if dim <= 512:
            assert err1 < 5e-8 and relerr1 < 1e-6 and maxerr1 < 1e-7, info
        else:
            assert err1 < 5e-8 and relerr1 < 8e-6 and maxerr1 < 1e-7, info
        assert 0.995 < absratio < 1.005 and 0.995 < relratio < 1.005, info
    else:
        if dim <= 512:
            assert err1 < 6e-4 and relerr1 < 0.007 and maxerr1 < 0.015, info
        else:
            assert err1 < 2e-4 and relerr1 < 0.002 and maxerr1 < 0.0012, info
        assert 0.995 < absratio < 1.005 and 0.96 < relratio < 1.04, info


@pytest.mark.parametrize("dtype", FP, ids=dname)
@pytest.mark.parametrize("storage_type", ["nf4", "fp4"])
def test_gemv_eye_4bit(lib, storage_type, dtype):
    F = lib.functional
    for dim in [64, 576, 1280, 2048, 3520]:  # bnb: 10 random multiples of 64 up to 8192
        A = torch.normal(0, 0.1, size=(1, 1, dim), dtype=dtype)
        B = torch.eye(dim, dtype=dtype)
        qB, state = F.quantize_4bit(B, quant_type=storage_type, compress_statistics=False)
        C3 = torch.matmul(A, B.t())
        C2 = lib.matmul_4bit(A, qB.t(), state)
        A.requires_grad = True
        C1 = lib.matmul_4bit(A, qB.t(), state)
        torch.testing.assert_close(A, C3)
        torch.testing.assert_close(A, C1)
        torch.testing.assert_close(A, C2)


# ---------------- extra: bit-exactness against installed bitsandbytes (not in bnb's suite) ----------------
@pytest.mark.parametrize("dtype", FP, ids=dname)
def test_bitexact_vs_bnb(dtype):
    ref = pytest.importorskip("bitsandbytes")

    import bnb_api

    A = torch.randn(512, 1024, dtype=dtype)
    for bs in (64, 256, 4096):
        c1, s1 = bnb_api.functional.quantize_blockwise(A, blocksize=bs)
        c2, s2 = ref.functional.quantize_blockwise(A, blocksize=bs)
        torch.testing.assert_close(s1.absmax, s2.absmax)
        # ~0.15% of 8-bit codes differ from bnb's CPU kernel (bnb_api picks the truly nearest code; bnb's CPU
        # search does not): require bnb_api to be at least as accurate and every differing code to be closer.
        e1 = (bnb_api.functional.dequantize_blockwise(c1, s1).float() - A.float()).abs()
        e2 = (ref.functional.dequantize_blockwise(c2, s2).float() - A.float()).abs()
        assert e1.mean() <= e2.mean() * 1.001 + 1e-7
        diff = c1 != c2
        if dtype == torch.float32:
            assert (e1[diff] <= e2[diff] + 1e-6).float().mean() > 0.99
        for qt in ("nf4", "fp4"):
            for cs in (False, True):
                q1, t1 = bnb_api.functional.quantize_4bit(A, blocksize=bs, quant_type=qt, compress_statistics=cs)
                q2, t2 = ref.functional.quantize_4bit(A, blocksize=bs, quant_type=qt, compress_statistics=cs)
                assert torch.equal(q1, q2), f"4-bit codes differ ({qt}, bs={bs}, cs={cs})"
                if not cs:  # with cs the nested 8-bit absmax codes differ slightly (see above)
                    torch.testing.assert_close(
                        bnb_api.functional.dequantize_4bit(q1, t1), ref.functional.dequantize_4bit(q2, t2)
                    )
    H = A.half()
    a1, b1, _ = bnb_api.functional.int8_vectorwise_quant(H)
    a2, b2, _ = ref.functional.int8_vectorwise_quant(H)
    assert (a1 != a2).sum().item() == 0
    torch.testing.assert_close(b1, b2)

"""Mirrors bitsandbytes tests/test_autograd.py (test_matmullt, test_matmul_4bit, out= parameter) on CPU."""

import itertools

import pytest
import torch
from peer_helpers import assert_grads_match, dname

TRIPLES = list(itertools.product([True, False], repeat=3))
TRANSPOSE = [(False, True), (False, False)]


def _weight_target_bias(dimB, out_shape, dtype, req_grad, has_bias):
    """The operands of bitsandbytes' matmul tests: a xavier-initialized weight B, a regression target and a
    bias with a clone of it for the library under test (None, None without bias)."""
    B = torch.randn(size=dimB, requires_grad=req_grad[1], dtype=dtype)
    target = torch.randn(size=out_shape, requires_grad=req_grad[1], dtype=dtype)
    bias = bias2 = None
    if has_bias:
        bias = torch.randn(out_shape[1], dtype=dtype, requires_grad=req_grad[2])
        bias2 = bias.clone()
    torch.nn.init.xavier_uniform_(B)
    return B, target, bias, bias2


@pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("has_fp16_weights", [True, False], ids=["fp16w", "int8w"])
@pytest.mark.parametrize("transpose", TRANSPOSE, ids=["tB", "nT"])
@pytest.mark.parametrize(
    "req_grad", [t for t in TRIPLES if not t[1]], ids=lambda t: "".join("1" if x else "0" for x in t)
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=dname)
@pytest.mark.parametrize("decomp", [0.0, 6.0])
@pytest.mark.parametrize("dim2", [64, 0])
def test_matmullt(lib, dim2, decomp, dtype, req_grad, transpose, has_fp16_weights, has_bias):
    bnb = lib
    dim3, dim4 = 32, 48
    dimA = (dim2, dim3)
    dimB = (dim3, dim4) if not transpose[1] else (dim4, dim3)
    outlier_dim = torch.randint(0, dimA[1], size=(dimA[1] // 8,))
    if not has_bias:
        req_grad = list(req_grad)
        req_grad[2] = False
    for _ in range(3):
        A = torch.randn(size=dimA, requires_grad=req_grad[0], dtype=dtype)
        if decomp == 6.0:
            with torch.no_grad():
                A[:, outlier_dim] = 6.0
        B, target, bias, bias2 = _weight_target_bias(dimB, (dim2, dim4), dtype, req_grad, has_bias)
        B2 = B.clone()
        state = bnb.MatmulLtState()
        state.threshold = decomp
        state.has_fp16_weights = has_fp16_weights
        if not has_fp16_weights:
            if not transpose[1]:
                B2 = B2.t().contiguous()
            state.CB, state.SCB, _ = bnb.functional.int8_vectorwise_quant(B2.to(torch.float16))
            B2 = state.CB
        if transpose[1]:
            out_torch = torch.matmul(A, B.t())
            out_bnb = bnb.matmul(A, B2, state=state, bias=bias2)
        else:
            out_torch = torch.matmul(A, B)
            out_bnb = bnb.matmul(A, B2.t(), state=state, bias=bias2)
        if has_bias:
            out_torch += bias
        assert out_bnb.dtype == A.dtype
        n = out_bnb.numel()
        idx = torch.isclose(out_bnb, out_torch, atol=0.01, rtol=0.1)
        bad1 = (idx == 0).sum().item()
        assert bad1 <= n * (0.0175 if dtype == torch.float16 else 0.021), f"{bad1}/{n} outside atol=.01,rtol=.1"
        idx = torch.isclose(out_bnb, out_torch, atol=0.035, rtol=0.2)
        bad2 = (idx == 0).sum().item()
        assert bad2 <= n * 0.001, f"{bad2}/{n} outside atol=.035,rtol=.2"
        if has_fp16_weights and any(req_grad):
            assert_grads_match(out_bnb, out_torch, target, A, bias, req_grad)


@pytest.mark.parametrize("quant_type", ["fp4", "nf4"])
@pytest.mark.parametrize("cs", [True, False], ids=["cs", "nocs"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=dname)
@pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("transpose", TRANSPOSE, ids=["tB", "nT"])
@pytest.mark.parametrize("req_grad", TRIPLES, ids=lambda t: "".join("1" if x else "0" for x in t))
@pytest.mark.parametrize("dim2", [64, 0])
def test_matmul_4bit(lib, dim2, req_grad, transpose, has_bias, dtype, cs, quant_type):
    bnb = lib
    dim3, dim4 = 64, 96
    dimA = (dim2, dim3)
    dimB = (dim3, dim4) if not transpose[1] else (dim4, dim3)
    if not has_bias:
        req_grad = list(req_grad)
        req_grad[2] = False
    for _ in range(3):
        A = torch.randn(size=dimA, requires_grad=req_grad[0], dtype=dtype)
        B, target, bias, bias2 = _weight_target_bias(dimB, (dim2, dim4), dtype, req_grad, has_bias)
        B2, qs = bnb.functional.quantize_4bit(B, compress_statistics=cs, quant_type=quant_type)
        if transpose[1]:
            out_torch = torch.matmul(A, B.t())
            out_bnb = bnb.matmul_4bit(A, B2.t(), qs, bias=bias2)
        else:
            out_torch = torch.matmul(A, B)
            out_bnb = bnb.matmul_4bit(A, B2, qs, bias=bias2)
        if has_bias:
            out_torch += bias
        assert out_bnb.dtype == A.dtype
        if out_bnb.numel() > 0:
            err = (out_bnb - out_torch).abs().float().mean().item()
            assert err < 0.115, err
        if any(req_grad):
            assert_grads_match(out_bnb, out_torch, target, A, bias, req_grad, also_clear=(B,))


@pytest.mark.parametrize("has_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=dname)
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_matmul_4bit_out_parameter(lib, quant_type, dtype, has_bias):
    # newer bnb test (issue #1235); bnb 0.50.2 may predate the fix
    bnb = lib
    M, K, N = 32, 64, 48
    W = torch.randn(K, N, dtype=dtype)
    torch.nn.init.xavier_uniform_(W)
    Bq, qs = bnb.functional.quantize_4bit(W, quant_type=quant_type)
    bias = torch.randn(N, dtype=dtype) if has_bias else None
    A = torch.randn(M, K, dtype=dtype)
    expected = bnb.matmul_4bit(A, Bq, qs, bias=bias)
    out = torch.zeros(M, N, dtype=dtype)
    ret = bnb.matmul_4bit(A, Bq, qs, out=out, bias=bias)
    torch.testing.assert_close(out, expected)
    assert ret.data_ptr() == out.data_ptr()

"""bnb_api.functional as a user sees it (bitsandbytes 0.50 names) and the autograd matmuls."""

from __future__ import annotations

import inspect

import pytest
import torch

import bnb_api as bnb
import bnb_api.functional as F

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def dequant_f64(packed, qs):
    """float64 dequantization written independently: codes from nibbles, times the code book and absmax."""
    b = packed.view(torch.uint8).reshape(-1).long()
    idx = torch.stack([b >> 4, b & 15], 1).reshape(-1)[: qs.shape.numel()]
    code = torch.tensor(F.get_4bit_type(qs.quant_type).tolist(), dtype=torch.float64)
    if qs.nested:
        nested = qs.state2
        a_codes = qs.absmax.long()
        dyn = nested.code.double()
        nabs = nested.absmax.double().repeat_interleave(nested.blocksize)[: a_codes.numel()]
        absmax = dyn[a_codes] * nabs + float(qs.offset)
    else:
        absmax = qs.absmax.double()
    return (code[idx] * absmax.repeat_interleave(qs.blocksize)[: idx.numel()]).reshape(qs.shape)


def test_functional_names_exist():
    for name in ("dequantize_nf4", "dequantize_fp4", "quantize_nf4", "quantize_fp4", "int8_vectorwise_dequant",
                 "int8_double_quant", "create_normal_map", "create_linear_map", "create_fp8_map", "percentile_clipping",
                 "optimizer_update_32bit", "optimizer_update_8bit_blockwise"):  # fmt: skip
        assert callable(getattr(F, name)), name


@pytest.mark.parametrize("name", ["quantize_4bit", "dequantize_4bit", "quantize_blockwise", "int8_double_quant",
                                  "optimizer_update_8bit_blockwise", "optimizer_update_32bit"])  # fmt: skip
def test_signatures_match_bitsandbytes(name):
    bnb_F = pytest.importorskip("bitsandbytes.functional")
    ours = inspect.signature(getattr(F, name)).parameters
    theirs = inspect.signature(getattr(bnb_F, name)).parameters
    assert list(ours) == list(theirs)
    for k in theirs:
        assert ours[k].default == theirs[k].default, k


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("compress", [False, True])
def test_nf4_fp4_shortcuts_against_float64(quant_type, compress):
    A = rand(37, 41, seed=3)  # odd size: partial block and a padded nibble
    q = F.quantize_nf4 if quant_type == "nf4" else F.quantize_fp4
    dq = F.dequantize_nf4 if quant_type == "nf4" else F.dequantize_fp4
    packed, qs = q(A, blocksize=64, compress_statistics=compress)
    assert qs.quant_type == quant_type and qs.nested == compress
    out = dq(packed, qs)
    torch.testing.assert_close(out.double(), dequant_f64(packed, qs), rtol=1e-6, atol=1e-6)
    assert (out - A).abs().mean() < (0.08 if quant_type == "nf4" else 0.1)


def test_quant_state_dict_roundtrip_and_to():
    packed, qs = F.quantize_4bit(rand(64, 33, seed=1), blocksize=64, compress_statistics=True, quant_type="nf4")
    d = qs.as_dict(packed=True)
    assert set(d) == {"absmax", "quant_map", "nested_absmax", "nested_quant_map", "quant_state.bitsandbytes__nf4"}
    back = F.QuantState.from_dict(d, device="cpu")
    assert back == qs
    torch.testing.assert_close(F.dequantize_4bit(packed, back), F.dequantize_4bit(packed, qs), rtol=0, atol=0)
    back.to("cpu")
    assert back.absmax.device.type == "cpu" and back.state2.absmax.device.type == "cpu"
    with pytest.raises(ValueError, match="quant_state"):
        F.QuantState.from_dict({"absmax": qs.absmax}, device="cpu")


def test_quant_state_code_is_not_shared():
    _, a = F.quantize_4bit(rand(64, seed=1), quant_type="nf4")
    _, b = F.quantize_4bit(rand(64, seed=2), quant_type="nf4")
    assert a.code.data_ptr() != b.code.data_ptr()  # safetensors refuses shared tensors in a state dict


def test_int8_vectorwise_dequant_and_double_quant_against_float64():
    A = rand(13, 29, seed=5) * 3
    codes, stats, _ = F.int8_vectorwise_quant(A)
    deq = F.int8_vectorwise_dequant(codes, stats)
    torch.testing.assert_close(deq.double(), codes.double() * stats.double()[:, None] / 127, rtol=1e-6, atol=1e-6)
    row, col, rs, cs, cols = F.int8_double_quant(A)
    assert cols is None
    torch.testing.assert_close(cs.double(), A.abs().amax(0).double())
    torch.testing.assert_close(col.double(), torch.round(A.double() * 127 / cs.double()), rtol=0, atol=1)


def test_percentile_clipping():
    gnorm_vec = torch.zeros(100)
    for step in range(1, 30):
        g = rand(50, seed=step) * (10.0 if step == 29 else 1.0)
        current, clip, scale = F.percentile_clipping(g, gnorm_vec, step, percentile=5)
    hist = torch.sort(gnorm_vec).values
    assert float(current) == pytest.approx(float(g.norm()), rel=1e-5)
    assert float(clip) == pytest.approx(float(hist[5].sqrt()), rel=1e-6)
    assert float(scale) == pytest.approx(min(1.0, float(clip / current)), rel=1e-6)
    with pytest.raises(ValueError, match="gnorm_vec"):
        F.percentile_clipping(g, torch.zeros(10), 1)
    with pytest.raises(ValueError, match="percentile"):
        F.percentile_clipping(g, gnorm_vec, 1, percentile=100)


def test_optimizer_update_wrappers_match_op():
    p = rand(300, seed=1)
    g = rand(300, seed=2)
    s1, s2 = torch.zeros(300), torch.zeros(300)
    F.optimizer_update_32bit("adam", g, p, s1, 0.9, 1e-8, 1, 1e-2, s2, 0.999)
    p_ref = rand(300, seed=1)
    r1, r2 = torch.zeros(300), torch.zeros(300)
    torch.ops.bnb_api.optimizer_step("adam", p_ref, g, r1, r2, None, None, None, None, 1e-2, 0.9, 0.999, 0.0, 0.0,
                                     1e-8, 0.0, 1, 1.0, 0.0, 256)  # fmt: skip
    torch.testing.assert_close(p, p_ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="skip_zeros"):
        F.optimizer_update_32bit("adam", g, p, s1, 0.9, 1e-8, 1, 1e-2, s2, 0.999, skip_zeros=True)
    with pytest.raises(ValueError, match="optimizer_name"):
        F.optimizer_update_32bit("adamax", g, p, s1, 0.9, 1e-8, 1, 1e-2, s2, 0.999)


# ---------------------------------------------------------------------------------------------------
# matmul_4bit
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [1, 7])
def test_matmul_4bit_nf4_error_bound(dtype, rows):
    # bitsandbytes' bound: mean |matmul_4bit - F.linear| < 0.115 for NF4 (K=N=~256, randn inputs)
    A = rand(rows, 257, seed=rows, dtype=dtype)
    W = rand(129, 257, seed=9, dtype=dtype)
    packed, qs = F.quantize_4bit(W, quant_type="nf4", compress_statistics=True)
    out = bnb.matmul_4bit(A, packed.t(), qs)
    ref = torch.nn.functional.linear(A.float(), W.float())
    assert out.dtype == dtype and out.shape == (rows, 129)
    assert (out.float() - ref).abs().mean() / ref.abs().mean() < 0.12
    err = (out.float() - ref).abs().mean() / (257**0.5)
    assert err < 0.115
    # exactly the dequantized weight, computed in float64
    exact = A.double() @ dequant_f64(packed, qs).T
    tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 0.15}[dtype]
    assert (out.double() - exact).abs().max() < tol * max(1.0, float(exact.abs().max()) / 10)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_matmul_4bit_gradients(quant_type):
    A = rand(3, 5, 64, seed=1).requires_grad_()
    bias = rand(48, seed=2).requires_grad_()
    W = rand(48, 64, seed=3)
    packed, qs = F.quantize_4bit(W, quant_type=quant_type)
    out = bnb.matmul_4bit(A, packed, qs, bias=bias)
    Wd = F.dequantize_4bit(packed, qs)
    A2 = A.detach().clone().requires_grad_()
    b2 = bias.detach().clone().requires_grad_()
    ref = torch.nn.functional.linear(A2, Wd, b2)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    g = rand(3, 5, 48, seed=4)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(A.grad, A2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bias.grad, b2.grad, rtol=1e-5, atol=1e-5)


def test_matmul_4bit_bad_inputs():
    packed, qs = F.quantize_4bit(rand(16, 32), quant_type="nf4")
    with pytest.raises(ValueError, match="quant_state"):
        bnb.matmul_4bit(rand(2, 32), packed, None)
    with pytest.raises(ValueError, match="A.shape"):
        bnb.matmul_4bit(rand(2, 31), packed, qs)


def test_matmul_4bit_empty_and_out():
    packed, qs = F.quantize_4bit(rand(16, 32), quant_type="nf4")
    assert bnb.matmul_4bit(torch.empty(0, 32), packed, qs).shape == (0, 16)
    out = torch.empty(4, 16)
    res = bnb.matmul_4bit(rand(4, 32), packed, qs, out=out)
    assert res.data_ptr() == out.data_ptr()


def test_matmul_4bit_weight_quantized_as_k_by_n():
    """bitsandbytes: a weight quantized from a (K, N) tensor (A's inner size = shape[0], not square) gives A @ W,
    with a DeprecationWarning; gradients reach A and bias; ``out`` is filled."""
    W = rand(64, 96, seed=5) / 8
    packed, qs = F.quantize_4bit(W, quant_type="nf4")
    A = rand(8, 64, seed=6).requires_grad_()
    bias = rand(96, seed=7).requires_grad_()
    with pytest.warns(DeprecationWarning, match="quantized from a"):
        out = bnb.matmul_4bit(A, packed, qs, bias=bias)
    exact = A.detach().double() @ dequant_f64(packed, qs) + bias.detach().double()
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5)
    assert (out.detach() - (A.detach() @ W + bias.detach())).abs().mean() < 0.115
    out.sum().backward()
    torch.testing.assert_close(A.grad.double(), dequant_f64(packed, qs).sum(1).expand(8, 64), rtol=1e-5, atol=1e-5)
    assert torch.equal(bias.grad, torch.full((96,), 8.0))
    buf = torch.empty(8, 96)
    with pytest.warns(DeprecationWarning):
        res = bnb.matmul_4bit(A.detach(), packed.t(), qs, out=buf, bias=bias.detach())
    assert res.data_ptr() == buf.data_ptr()
    torch.testing.assert_close(buf, out.detach())


def test_quantizing_a_tensor_that_requires_grad_gives_constants():
    """Quantization has no gradient: outputs of a requires_grad source are plain tensors, and a matmul with them
    backpropagates to everything else (bitsandbytes' test_matmul_4bit with req_grad on B)."""
    B = rand(96, 64, seed=8).requires_grad_()
    for compress in (False, True):
        packed, qs = F.quantize_4bit(B, quant_type="nf4", compress_statistics=compress)
        assert not packed.requires_grad and not qs.absmax.requires_grad and qs.absmax.grad_fn is None
        A = rand(4, 64, seed=9).requires_grad_()
        out = bnb.matmul_4bit(A, packed.t(), qs)
        torch.nn.functional.mse_loss(out, rand(4, 96, seed=10)).backward()
        assert A.grad is not None and B.grad is None
    codes, st = F.quantize_blockwise(B)
    assert not codes.requires_grad and st.absmax.grad_fn is None
    c8, stats, _ = F.int8_vectorwise_quant(B.half())
    assert c8.grad_fn is None and stats.grad_fn is None


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_matmul_4bit_one_row_same_bits_with_and_without_grad(dtype):
    """One row takes the gemv whether or not A requires grad (bitsandbytes' test_gemv_4bit compares the two:
    fp32 within 1e-7 * sqrt(K)); the gradient is still dY @ W."""
    A = rand(1, 512, seed=11, dtype=dtype)
    W = rand(128, 512, seed=12, dtype=dtype) / 11.3
    packed, qs = F.quantize_4bit(W, quant_type="nf4", compress_statistics=True)
    plain = F.gemv_4bit(A, packed.t(), state=qs)
    Ag = A.clone().requires_grad_()
    bias = rand(128, seed=13, dtype=dtype).requires_grad_()
    with_grad = bnb.matmul_4bit(Ag, packed.t(), qs, bias=bias)
    assert torch.equal(with_grad.detach(), plain + bias.detach())
    g = rand(1, 128, seed=14, dtype=dtype)
    with_grad.backward(g)
    expected = g.double() @ dequant_f64(packed, qs)
    tol = {torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 5e-2}[dtype]
    torch.testing.assert_close(Ag.grad.double(), expected, rtol=tol, atol=tol)
    torch.testing.assert_close(bias.grad, g.reshape(-1))


@pytest.mark.parametrize("rows", [2, 5, 9, 80, 192, 193])
def test_matmul_4bit_a_few_rows_go_through_the_gemv(rows, monkeypatch):
    """Up to gemv_max_rows rows, where a backend kernel serves them, take the gemv in one call (the same bits with
    or without gradients; one-row calls within bf16 rounding: batched bf16 kernels may sum in another order); more
    rows, or only the reference to serve them, dequantize + linear."""
    from bnb_api.autograd import _functions as AF
    from bnb_api.core import registry

    W = rand(40, 128, seed=15)
    packed, qs = F.quantize_4bit(W, quant_type="nf4", compress_statistics=True)
    A = rand(rows, 128, seed=16, dtype=torch.bfloat16)
    bias = rand(40, seed=17, dtype=torch.bfloat16)
    calls = []  # weights dequantized: the path of larger batches
    real_dequant = AF._dequant_4bit
    monkeypatch.setattr(AF, "_dequant_4bit", lambda *a, **k: calls.append("dequant") or real_dequant(*a, **k))
    with torch.no_grad():
        out = bnb.matmul_4bit(A, packed.t(), qs, bias=bias)
    per_row = torch.cat([F.gemv_4bit(A[i : i + 1], packed.t(), state=qs) for i in range(rows)]) + bias
    Wd = dequant_f64(packed, qs)
    exact = A.double() @ Wd.T + bias.double()
    scale = A.double().abs() @ Wd.abs().T + bias.double().abs()  # bf16: code book, products and output rounded
    assert out.shape == (rows, 40) and out.dtype == torch.bfloat16
    assert ((out.double() - exact).abs() <= scale * 2**-6).all()
    if rows <= AF.gemv_max_rows(A.dtype):
        assert calls == [] and ((out.double() - per_row.double()).abs() <= scale * 2**-7).all()
        Ag, bg = A.clone().requires_grad_(), bias.clone().requires_grad_()
        with_grad = bnb.matmul_4bit(Ag, packed.t(), qs, bias=bg)
        assert torch.equal(with_grad.detach(), out)
        with_grad.float().sum().backward()
        g_scale = Wd.abs().sum(0).expand(rows, 128)
        assert ((Ag.grad.double() - Wd.sum(0).expand(rows, 128)).abs() <= g_scale * 2**-6).all()
    else:
        assert calls == ["dequant"]
    calls.clear()
    with registry.exclude_backends("cpu"), torch.no_grad():  # the reference alone: dequantize + linear
        assert not F.gemv_4bit_serves(A, packed.t(), qs)
        bnb.matmul_4bit(A, packed.t(), qs)
    assert calls == ["dequant"]


# ---------------------------------------------------------------------------------------------------
# LLM.int8() matmul
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.0, 3.0])
def test_matmul_int8_forward_and_grads(threshold):
    A = rand(2, 6, 96, seed=1).requires_grad_()
    B = torch.nn.Parameter(rand(40, 96, seed=2) * 0.1)
    bias = rand(40, seed=3).requires_grad_()
    state = bnb.MatmulLtState()
    state.has_fp16_weights = True
    out = bnb.matmul(A, B, state=state, threshold=threshold, bias=bias)
    ref = torch.nn.functional.linear(A.detach(), B.detach(), bias.detach())
    assert (out - ref).abs().mean() < 0.02 * ref.abs().mean()
    g = rand(2, 6, 40, seed=4)
    out.backward(g)
    W = state.CB.float() * state.SCB[:, None] / 127
    torch.testing.assert_close(A.grad, g @ W, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(B.grad, g.reshape(-1, 40).T @ A.detach().reshape(-1, 96), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(bias.grad, g.reshape(-1, 40).sum(0), rtol=1e-5, atol=1e-5)


def test_matmul_int8_outlier_columns_exact():
    A = rand(8, 64, seed=1)
    A[:, [3, 17]] *= 40  # planted outliers
    W = rand(24, 64, seed=2)
    state = bnb.MatmulLtState()
    out = bnb.matmul(A, W, state=state, threshold=6.0)
    # float64 reference of the decomposition: outlier columns in float, the rest int8 row/row
    CB, SCB = state.CB.double(), state.SCB.double()
    Wd = CB * SCB[:, None] / 127
    mask = (A.abs() >= 6.0).any(0)
    s = A.double().masked_fill(A.abs() >= 6.0, 0).abs().amax(1)  # entries over the threshold leave the absmax
    Ain = A.double().clone()
    Ain[:, mask] = 0
    CA = torch.round(Ain * 127 / s[:, None])
    ref = (CA @ CB.T) * (s[:, None] * SCB[None, :]) / 127**2 + A.double()[:, mask] @ Wd[:, mask].T
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-3)


def test_nested_offset_is_the_float64_mean_whatever_the_thread_count():
    """The offset removed before nested quantization is the float64 mean rounded once, so the nested codes do
    not depend on the reduction order (thread count here, the device in ci/gpu_e2e.py)."""
    torch.manual_seed(11)
    W = torch.randn(1031, 4096) * torch.rand(1031, 1) * 3  # absmax spread over many magnitudes
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, max(2, threads)):
            torch.set_num_threads(n)
            results.append(F.quantize_4bit(W, quant_type="nf4", compress_statistics=True))
    finally:
        torch.set_num_threads(threads)
    (p1, s1), (p2, s2) = results
    assert torch.equal(p1, p2) and torch.equal(s1.absmax, s2.absmax) and torch.equal(s1.offset, s2.offset)
    _, plain = F.quantize_4bit(W, quant_type="nf4", compress_statistics=False)
    assert s1.offset.dtype == torch.float32
    assert float(s1.offset) == float(torch.tensor(plain.absmax.double().mean().item(), dtype=torch.float32))

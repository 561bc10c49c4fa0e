"""bnb_api.nn: quantized parameters and layers (attributes, forward paths, copies, devices)."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch

import bnb_api as bnb
import bnb_api.functional as F

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def make_linear(k=96, n=40, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(k, n)


def quantized_4bit(linear, quant_type="nf4", compress=True, compute_dtype=None, quant_storage=torch.uint8):
    layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, compute_dtype=compute_dtype,
                              compress_statistics=compress, quant_type=quant_type,
                              quant_storage=quant_storage)  # fmt: skip
    layer.load_state_dict(linear.state_dict())
    return layer.to("cpu")


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("compress", [False, True])
def test_params4bit_attributes_for_transformers_and_peft(quant_type, compress):
    linear = make_linear()
    layer = bnb.nn.Linear4bit(96, 40, quant_type=quant_type, compress_statistics=compress)
    w = layer.weight
    assert isinstance(w, bnb.nn.Params4bit) and not w.bnb_quantized and w.quant_state is None
    assert w.module is layer and w.blocksize == 64 and w.quant_storage == torch.uint8 and not w.requires_grad
    layer.load_state_dict(linear.state_dict())
    layer = layer.to("cpu")
    w = layer.weight
    assert w.bnb_quantized and w.dtype == torch.uint8 and w.shape == (96 * 40 // 2, 1)
    assert w.quant_type == quant_type and w.compress_statistics == compress
    assert layer.quant_state is w.quant_state and w.quant_state.shape == (40, 96)
    assert w.absmax is w.quant_state.absmax and w.quant_map is w.quant_state.code
    if compress:
        assert w.nested_absmax is w.quant_state.state2.absmax and w.nested_blocksize == 256
    else:
        assert not hasattr(w, "nested_absmax")
    torch.testing.assert_close(F.dequantize_4bit(w, w.quant_state), F.dequantize_4bit(*F.quantize_4bit(
        linear.weight.data, quant_type=quant_type, compress_statistics=compress)), rtol=0, atol=0)  # fmt: skip


def test_params4bit_bad_quant_type():
    with pytest.raises(ValueError, match="quant_type"):
        bnb.nn.Params4bit(torch.randn(4, 4), quant_type="int4")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_linear4bit_gemv_and_batch_paths(dtype, quant_type):
    linear = make_linear(130, 33)  # odd: partial blocks
    layer = quantized_4bit(linear, quant_type, compute_dtype=dtype)
    W = F.dequantize_4bit(layer.weight, layer.weight.quant_state).double()
    for shape in ((1, 130), (1, 1, 130), (3, 5, 130)):
        x = torch.randn(*shape).to(dtype)
        with torch.no_grad():
            out = layer(x)
        ref = x.double() @ W.T + linear.bias.double()
        assert out.dtype == dtype and out.shape == (*shape[:-1], 33)
        tol = {torch.float32: 1e-4, torch.float16: 3e-2, torch.bfloat16: 0.2}[dtype]
        assert (out.double() - ref).abs().max() < tol, shape


def test_linear4bit_gemv_is_used_for_one_row_and_a_few(monkeypatch):
    """One row and a few rows (up to gemv_max_rows, cpu) through the gemv; a batch through dequantize + linear."""
    from bnb_api.autograd import _functions as AF

    layer = quantized_4bit(make_linear())
    calls = []  # rows of the inputs whose weight was dequantized (the path of a batch)
    real = AF._dequant_4bit
    monkeypatch.setattr(AF, "_dequant_4bit", lambda *a, **k: calls.append(rows) or real(*a, **k))
    with torch.no_grad():
        for rows in (1, 4, AF.gemv_max_rows(torch.float32), AF.gemv_max_rows(torch.float32) + 1):
            layer(torch.randn(rows, 96))
    assert calls == [AF.gemv_max_rows(torch.float32) + 1]


def test_linear4bit_quantizes_at_first_use_and_trains_input():
    linear = make_linear()
    layer = bnb.nn.LinearNF4(96, 40)
    layer.load_state_dict(linear.state_dict())
    x = torch.randn(3, 96, requires_grad=True)
    out = layer(x)
    assert layer.weight.bnb_quantized and layer.weight.quant_type == "nf4"
    out.sum().backward()
    W = F.dequantize_4bit(layer.weight, layer.weight.quant_state)
    torch.testing.assert_close(x.grad, torch.ones(3, 40) @ W, rtol=1e-5, atol=1e-5)
    assert layer.weight.grad is None


def test_linear4bit_float16_input_casts_bias_and_warns():
    """bitsandbytes' behaviour: float16 input with the default float32 compute dtype warns once per layer that
    it is slow ("inference" for one row, "inference or training" for batches); the float32 bias takes the
    compute dtype in place."""
    layer = bnb.nn.LinearNF4(32, 64).to("cpu")
    assert layer.bias.dtype == torch.float32
    with pytest.warns(UserWarning, match="inference or training"):
        y = layer(torch.randn(16, 8, 32, dtype=torch.float16))
    assert y.dtype == torch.float16 and layer.bias.dtype == torch.float16
    layer = bnb.nn.LinearNF4(32, 64).to("cpu")
    with pytest.warns(UserWarning, match=r"inference\."):
        layer(torch.randn(1, 32, dtype=torch.float16))
    with pytest.warns(UserWarning, match="inference or training"):
        assert bnb.nn.LinearNF4(32, 64, bias=False)(torch.randn(2, 32, dtype=torch.float16)).dtype == torch.float16
    with pytest.warns(UserWarning, match="not divisible by block size 64"):
        bnb.nn.Embedding4bit(128, 65, quant_type="nf4")


def test_linear_fp4_nf4_subclasses():
    assert bnb.nn.LinearFP4(8, 8).weight.quant_type == "fp4"
    assert bnb.nn.LinearNF4(8, 8).weight.quant_type == "nf4"
    layer = bnb.nn.Linear4bit(8, 8, compute_dtype=torch.bfloat16, quant_storage=torch.bfloat16)
    assert layer.compute_dtype == torch.bfloat16 and layer.quant_storage == torch.bfloat16


def test_quant_storage_bf16_roundtrip():
    linear = make_linear()
    layer = quantized_4bit(linear, quant_storage=torch.bfloat16)
    assert layer.weight.dtype == torch.bfloat16
    ref = quantized_4bit(linear)
    x = torch.randn(2, 96)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), ref(x), rtol=0, atol=0)
        packed = layer.weight.data.clone()
        layer = layer.to(torch.float16)  # a dtype cast never touches packed bytes (only the bias)
        assert layer.weight.dtype == torch.bfloat16 and layer.bias.dtype == torch.float16
        assert torch.equal(layer.weight.data.view(torch.uint8), packed.view(torch.uint8))


@pytest.mark.parametrize("how", ["deepcopy", "copy", "pickle", "torch.save"])
def test_copies_of_quantized_modules(how):
    linear = make_linear()
    layers = [quantized_4bit(linear), bnb.nn.Linear8bitLt(96, 40, has_fp16_weights=False, threshold=6.0)]
    layers[1].load_state_dict(linear.state_dict())
    layers[1] = layers[1].to("cpu")
    x = torch.randn(4, 96)
    for layer in layers:
        if how == "deepcopy":
            other = copy.deepcopy(layer)
        elif how == "copy":
            other = copy.copy(layer)
        elif how == "pickle":
            other = pickle.loads(pickle.dumps(layer))
        else:
            buf = io.BytesIO()
            torch.save(layer, buf)
            buf.seek(0)
            other = torch.load(buf, weights_only=False)
        with torch.no_grad():
            torch.testing.assert_close(other(x), layer(x), rtol=0, atol=0)
        if isinstance(layer, bnb.nn.Linear4bit) and how != "copy":
            assert other.weight.module is other and other.weight.bnb_quantized
            assert other.weight.data_ptr() != layer.weight.data_ptr()


def test_to_keeps_quantized_data():
    layer = quantized_4bit(make_linear())
    before = layer.weight.data.clone()
    qs = layer.weight.quant_state
    layer = layer.to("cpu").to(torch.bfloat16).cpu()
    assert isinstance(layer.weight, bnb.nn.Params4bit) and layer.weight.quant_state is qs
    torch.testing.assert_close(layer.weight.data, before, rtol=0, atol=0)
    p = layer.weight.to("meta")
    assert p.device.type == "meta" and p.bnb_quantized


def test_params4bit_split_keeps_attributes():
    layer = quantized_4bit(make_linear())
    parts = torch.split(layer.weight, 480)
    assert all(isinstance(p, bnb.nn.Params4bit) and p.quant_state is layer.weight.quant_state for p in parts)


def test_int8params_and_linear8bitlt_attributes():
    linear = make_linear()
    layer = bnb.nn.Linear8bitLt(96, 40, has_fp16_weights=False, threshold=6.0)
    assert isinstance(layer.weight, bnb.nn.Int8Params) and layer.weight.SCB is None
    assert isinstance(layer.state, bnb.MatmulLtState) and layer.state.threshold == 6.0 and layer.state.use_pool
    layer.load_state_dict(linear.state_dict())
    layer = layer.to("cpu")
    w = layer.weight
    assert w.dtype == torch.int8 and w.CB.data_ptr() == w.data_ptr() and w.SCB.shape == (40,)
    torch.testing.assert_close(w.SCB, linear.weight.abs().amax(1).half().float(), rtol=1e-3, atol=1e-3)
    x = torch.randn(3, 96)
    with torch.no_grad():
        out = layer(x)
    assert layer.state.CB is not None and layer.weight.CB is None  # moved into the state at first forward
    assert (out - linear(x)).abs().mean() < 0.01


def test_int8params_to_moves_scb():
    p = bnb.nn.Int8Params(torch.randn(8, 16), requires_grad=False).to("cpu")
    q = p.to("cpu")
    assert q.dtype == torch.int8 and q.SCB is not None and q.CB.data_ptr() == q.data_ptr()
    assert p.to(torch.float16).dtype == torch.int8  # codes are never cast


def test_embeddings():
    torch.manual_seed(0)
    idx = torch.tensor([[0, 5, 9], [3, 3, 1]])
    emb = torch.nn.Embedding(10, 128)
    for cls, tol in ((bnb.nn.Embedding8bit, 0.02), (bnb.nn.EmbeddingNF4, 0.15), (bnb.nn.EmbeddingFP4, 0.25)):
        q = cls(10, 128)
        q.load_state_dict(emb.state_dict())
        q = q.to("cpu")
        out = q(idx)
        assert out.shape == (2, 3, 128) and out.dtype == torch.float32
        assert (out - emb(idx)).abs().mean() < tol, cls
        with pytest.raises(NotImplementedError):
            q.state_dict()
    # 4-bit embedding whose width is not a multiple of the blocksize: full dequantization path
    emb = torch.nn.Embedding(7, 40)
    q = bnb.nn.EmbeddingNF4(7, 40)
    q.load_state_dict(emb.state_dict())
    q = q.to("cpu")
    ref = F.dequantize_4bit(q.weight, q.weight.quant_state)[idx.clamp(max=6)]
    torch.testing.assert_close(q(idx.clamp(max=6)), ref, rtol=0, atol=0)
    # partial path equals the full dequantization
    q = bnb.nn.Embedding4bit(10, 128, quant_type="nf4")
    q = q.to("cpu")
    torch.testing.assert_close(q(idx), F.dequantize_4bit(q.weight, q.weight.quant_state)[idx], rtol=0, atol=0)


def test_stable_embedding_and_embedding_register_32bit_override():
    mng = bnb.optim.GlobalOptimManager.get_instance()
    before = len(mng.module_weight_config_triple)
    se = bnb.nn.StableEmbedding(10, 16)
    e = bnb.nn.Embedding(10, 16)
    assert len(mng.module_weight_config_triple) == before + 2
    assert mng.module_weight_config_triple[-1] == (e, "weight", {"optim_bits": 32})
    out = se(torch.tensor([1, 2]))
    assert out.shape == (2, 16)
    torch.testing.assert_close(out.mean(-1), torch.zeros(2), rtol=0, atol=1e-5)  # layer-normed
    mng.module_weight_config_triple[before:] = []


def test_linear8bitlt_bad_weight_format():
    layer = bnb.nn.Linear8bitLt(8, 4, has_fp16_weights=False).to("cpu")
    sd = layer.state_dict()
    sd["weight_format"] = torch.tensor(3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="weight_format"):
        layer.load_state_dict(sd)

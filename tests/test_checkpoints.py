"""Checkpoints: bitsandbytes' state-dict keys, saved with safetensors, moving both ways between
bitsandbytes 0.50 and bnb_api (the comparisons skip cleanly when bitsandbytes is not installed)."""

from __future__ import annotations

import pickle

import pytest
import torch

import bnb_api as bnb
import bnb_api.functional as F

safetensors_torch = pytest.importorskip("safetensors.torch")
load_file, save_file = safetensors_torch.load_file, safetensors_torch.save_file

KEYS_4BIT = {"weight", "bias", "weight.absmax", "weight.quant_map"}
NESTED_KEYS = {"weight.nested_absmax", "weight.nested_quant_map"}


def make_linear(k=200, n=72, seed=0, dtype=torch.float32):
    torch.manual_seed(seed)
    return torch.nn.Linear(k, n).to(dtype)


def ours_4bit(linear, quant_type, compress, compute_dtype=torch.float32):
    layer = bnb.nn.Linear4bit(linear.in_features, linear.out_features, compute_dtype=compute_dtype,
                              compress_statistics=compress, quant_type=quant_type)  # fmt: skip
    layer.load_state_dict(linear.state_dict())
    return layer.to("cpu")


def roundtrip(sd, tmp_path, name):
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    return load_file(str(path))


@pytest.fixture(autouse=True)
def no_unpickling(monkeypatch):
    """Loading a checkpoint must never unpickle anything."""

    def refuse(*args, **kwargs):
        raise AssertionError("pickle.loads called while loading a checkpoint")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("compress", [False, True])
def test_4bit_state_dict_keys_and_own_roundtrip(quant_type, compress, tmp_path):
    layer = ours_4bit(make_linear(), quant_type, compress)
    sd = layer.state_dict()
    expected = KEYS_4BIT | {f"weight.quant_state.bitsandbytes__{quant_type}"} | (NESTED_KEYS if compress else set())
    assert set(sd) == expected
    loaded = roundtrip(sd, tmp_path, "ours")
    fresh = bnb.nn.Linear4bit(200, 72, compute_dtype=torch.float32, quant_type=quant_type)
    fresh.load_state_dict(loaded)
    assert fresh.weight.bnb_quantized and fresh.weight.quant_state == layer.weight.quant_state
    x = torch.randn(5, 200)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), layer(x), rtol=0, atol=0)


def test_4bit_load_rejects_bad_quant_state():
    layer = ours_4bit(make_linear(), "nf4", True)
    sd = layer.state_dict()
    sd["weight.quant_state.bitsandbytes__nf4"] = torch.tensor(list(b"not json"), dtype=torch.uint8)
    with pytest.raises((RuntimeError, ValueError)):
        bnb.nn.Linear4bit(200, 72, quant_type="nf4").load_state_dict(sd)


def test_8bit_state_dict_keys_and_own_roundtrip(tmp_path):
    linear = make_linear()
    layer = bnb.nn.Linear8bitLt(200, 72, has_fp16_weights=False, threshold=6.0)
    layer.load_state_dict(linear.state_dict())
    layer = layer.to("cpu")
    sd = layer.state_dict()
    assert set(sd) == {"weight", "bias", "SCB", "weight_format"}
    assert sd["weight"].dtype == torch.int8 and sd["weight_format"].item() == 0
    loaded = roundtrip(sd, tmp_path, "ours8")
    fresh = bnb.nn.Linear8bitLt(200, 72, has_fp16_weights=False, threshold=6.0)
    fresh.load_state_dict(loaded)  # a fresh (unquantized) module takes the int8 checkpoint as it is
    x = torch.randn(4, 200)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), layer(x), rtol=0, atol=0)
    # after the first forward CB/SCB live in the state: saving still writes SCB
    assert set(fresh.state_dict()) == {"weight", "bias", "SCB", "weight_format"}


# ---------------------------------------------------------------------------------------------------
# against bitsandbytes
# ---------------------------------------------------------------------------------------------------


def bnb_4bit(linear, quant_type, compress):
    B = pytest.importorskip("bitsandbytes")
    layer = B.nn.Linear4bit(linear.in_features, linear.out_features, compute_dtype=torch.float32,
                            compress_statistics=compress, quant_type=quant_type)  # fmt: skip
    layer.load_state_dict(linear.state_dict())
    return layer.to("cpu")


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("compress", [False, True])
def test_bitsandbytes_4bit_checkpoint_loads_into_bnb_api(quant_type, compress, tmp_path):
    linear = make_linear(seed=1)
    theirs = bnb_4bit(linear, quant_type, compress)
    sd = roundtrip(theirs.state_dict(), tmp_path, "theirs")
    ours = bnb.nn.Linear4bit(200, 72, compute_dtype=torch.float32, quant_type=quant_type)
    ours.load_state_dict(sd)
    ours_fresh = ours_4bit(linear, quant_type, compress)
    # the same packed bytes as our own quantization of the float weight
    assert torch.equal(ours.weight.data, ours_fresh.weight.data)
    qs, fresh_qs = ours.weight.quant_state, ours_fresh.weight.quant_state
    assert qs.nested == compress and qs.blocksize == 64 and qs.shape == (72, 200)
    torch.testing.assert_close(F._absmax_of(qs), F._absmax_of(fresh_qs), rtol=2e-2, atol=1e-4)
    x = torch.randn(6, 200)
    Wd = F.dequantize_4bit(ours.weight, qs).double()
    with torch.no_grad():
        out = ours(x)
        torch.testing.assert_close(out.double(), x.double() @ Wd.T + linear.bias.double(), rtol=1e-5, atol=1e-4)
        theirs_out = theirs(x)
    torch.testing.assert_close(out, theirs_out, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("compress", [False, True])
def test_bnb_api_4bit_checkpoint_loads_into_bitsandbytes(quant_type, compress, tmp_path):
    B = pytest.importorskip("bitsandbytes")
    linear = make_linear(seed=2)
    ours = ours_4bit(linear, quant_type, compress)
    sd = roundtrip(ours.state_dict(), tmp_path, "ours")
    theirs = B.nn.Linear4bit(200, 72, compute_dtype=torch.float32, quant_type=quant_type)
    stats = {k[len("weight.") :]: v for k, v in sd.items() if k.startswith("weight.")}
    theirs.weight = B.nn.Params4bit.from_prequantized(sd["weight"], stats, device="cpu", module=theirs)
    theirs.bias.data.copy_(sd["bias"])
    x = torch.randn(6, 200)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x), ours(x), rtol=1e-4, atol=1e-4)
        theirs_dq = B.functional.dequantize_4bit(theirs.weight.data, theirs.weight.quant_state)
    torch.testing.assert_close(theirs_dq, F.dequantize_4bit(ours.weight, ours.weight.quant_state), rtol=0, atol=0)


def test_bitsandbytes_8bit_checkpoint_both_ways(tmp_path):
    B = pytest.importorskip("bitsandbytes")
    linear = make_linear(seed=3)
    theirs = B.nn.Linear8bitLt(200, 72, has_fp16_weights=False, threshold=6.0)
    theirs.load_state_dict(linear.state_dict())
    theirs = theirs.to("cpu")
    sd = roundtrip(theirs.state_dict(), tmp_path, "theirs8")
    ours = bnb.nn.Linear8bitLt(200, 72, has_fp16_weights=False, threshold=6.0)
    ours.load_state_dict(sd)
    assert torch.equal(ours.weight.data, sd["weight"]) and torch.equal(ours.weight.SCB, sd["SCB"])
    x = torch.randn(6, 200)
    x[:, 7] *= 20  # an outlier column
    with torch.no_grad():
        ref = linear(x)
        ours_out, theirs_out = ours(x), theirs(x)
    scale = ref.abs().mean()
    assert (ours_out - theirs_out).abs().mean() < 0.01 * scale
    assert (ours_out - ref).abs().mean() < 0.02 * scale

    # and back: bitsandbytes loads our checkpoint into a quantized module
    sd2 = roundtrip(ours.state_dict(), tmp_path, "ours8")
    back = B.nn.Linear8bitLt(200, 72, has_fp16_weights=False, threshold=6.0).to("cpu")
    back.load_state_dict(sd2)
    with torch.no_grad():
        assert (back(x) - ours_out).abs().mean() < 0.01 * scale


def test_whole_model_checkpoint(tmp_path):
    torch.manual_seed(4)
    fp = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.ReLU(), torch.nn.Linear(96, 32))

    def build():
        return torch.nn.Sequential(bnb.nn.LinearNF4(64, 96, compute_dtype=torch.float32), torch.nn.ReLU(),
                                   bnb.nn.Linear8bitLt(96, 32, has_fp16_weights=False, threshold=6.0))  # fmt: skip

    model = build()
    model.load_state_dict(fp.state_dict())
    model = model.to("cpu")
    sd = roundtrip(model.state_dict(), tmp_path, "model")
    fresh = build()
    fresh.load_state_dict(sd)
    x = torch.randn(3, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)

"""LLM.int8() end to end: outlier decomposition in Linear8bitLt, and the int8 training path."""

from __future__ import annotations

import pytest
import torch

import bnb_api as bnb


def make_layer(threshold, linear, has_fp16_weights=False):
    layer = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, has_fp16_weights=has_fp16_weights,
                                threshold=threshold)  # fmt: skip
    layer.load_state_dict(linear.state_dict())
    return layer.to("cpu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_outlier_threshold_beats_plain_int8(dtype):
    g = torch.Generator().manual_seed(0)
    K, N = 512, 256
    linear = torch.nn.Linear(K, N)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(N, K, generator=g) * 0.05)
    x = torch.randn(4, 16, K, generator=g)
    cols = torch.randperm(K, generator=g)[:6]
    x[..., cols] *= 30.0  # emergent outlier features (LLM.int8() paper, section 3)
    ref = linear(x).detach()
    x = x.to(dtype)
    errs = {}
    for threshold in (0.0, 6.0):
        layer = make_layer(threshold, linear)
        with torch.no_grad():
            out = layer.to(dtype)(x)
        assert out.dtype == dtype and out.shape == ref.shape
        errs[threshold] = (out.float() - ref).abs().mean().item()
    # the outlier columns ruin the row scales of plain int8; the decomposition keeps them in 16/32-bit
    assert errs[6.0] * 4 < errs[0.0], errs
    assert errs[6.0] < 0.02 * ref.abs().mean().item() + (0.02 if dtype == torch.bfloat16 else 0.0), errs


def test_no_outliers_threshold_is_harmless():
    torch.manual_seed(1)
    linear = torch.nn.Linear(128, 64)
    x = torch.randn(8, 128)
    with torch.no_grad():
        a = make_layer(0.0, linear)(x)
        b = make_layer(6.0, linear)(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_int8_training_with_fp16_weights_learns():
    torch.manual_seed(2)
    target = torch.nn.Linear(64, 16)
    layer = bnb.nn.Linear8bitLt(64, 16, has_fp16_weights=True, threshold=6.0)
    assert layer.weight.requires_grad and layer.weight.dtype == torch.float32
    fp = torch.nn.Linear(64, 16)
    fp.load_state_dict(layer.state_dict())
    x = torch.randn(256, 64)
    y = target(x).detach()
    losses = {}
    for name, model in (("int8", layer), ("fp32", fp)):
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        losses[name] = []
        for _ in range(40):
            loss = torch.nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses[name].append(loss.item())
    assert layer.weight.grad is not None and layer.bias.grad is not None
    assert losses["int8"][-1] < 0.1 * losses["int8"][0], losses
    assert abs(losses["int8"][-1] - losses["fp32"][-1]) < 0.1 * losses["fp32"][0] + 1e-3, losses


def test_frozen_int8_layer_passes_input_gradient():
    torch.manual_seed(3)
    linear = torch.nn.Linear(32, 8)
    layer = make_layer(6.0, linear)
    x = torch.randn(5, 32, requires_grad=True)
    layer(x).sum().backward()
    W = layer.state.CB.float() * layer.state.SCB[:, None] / 127
    torch.testing.assert_close(x.grad, torch.ones(5, 8) @ W, rtol=1e-5, atol=1e-5)

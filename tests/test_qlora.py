"""QLoRA end to end on CPU: a tiny random Llama (transformers config, no download), every Linear an NF4
Linear4bit with double quantization, LoRA through PEFT, PagedAdamW8bit; against a bf16 LoRA run."""

from __future__ import annotations

import warnings

import pytest
import torch

import bnb_api as bnb

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

VOCAB, SEQ, BATCH, STEPS = 96, 24, 8, 36
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"]


def tiny_llama() -> torch.nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, initializer_range=0.2,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).to(torch.bfloat16)


def replace_linears_with_nf4(module: torch.nn.Module) -> None:
    """Every nn.Linear -> NF4 Linear4bit (double quantization, bf16 compute), quantized in place."""
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear) and not isinstance(child, bnb.nn.Linear4bit):
            q = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                  compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4",
                                  device="meta")  # fmt: skip
            q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                         quant_type="nf4", module=q)  # fmt: skip
            if child.bias is not None:
                q.bias = child.bias
            q.to("cpu")  # quantizes
            setattr(module, name, q)
        else:
            replace_linears_with_nf4(child)


def batches():
    """A fixed synthetic language: 12 of the tokens, each followed by a fixed successor."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(4):
        x = torch.empty(BATCH, SEQ, dtype=torch.long)
        x[:, 0] = torch.randint(0, 12, (BATCH,), generator=g)
        for t in range(1, SEQ):
            x[:, t] = (5 * x[:, t - 1] + 7) % 12
        x = x * 7 + 3  # spread over the vocabulary
        out.append(x)
    return out


def train(model) -> list[float]:
    config = peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS)
    model = peft.get_peft_model(model, config)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # paged state on CPU: says so once
        opt = bnb.optim.PagedAdamW8bit(trainable, lr=2e-3, min_8bit_size=256)
    data = batches()
    losses = []
    torch.manual_seed(2)
    for step in range(STEPS):
        x = data[step % len(data)]
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert any(s["state1"].dtype == torch.uint8 for s in opt.state.values())  # 8-bit states were used
    return losses


def test_qlora_end_to_end():
    bf16_model = tiny_llama()
    bf16_bytes = sum(m.weight.numel() * 2 for m in bf16_model.modules() if isinstance(m, torch.nn.Linear))

    q_model = tiny_llama()
    replace_linears_with_nf4(q_model)
    q_layers = [m for m in q_model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(q_layers) == 2 * 7 + 1  # every Linear, lm_head included
    assert not any(type(m) is torch.nn.Linear for m in q_model.modules())
    q_bytes = 0
    for m in q_layers:
        w = m.weight
        assert w.bnb_quantized and w.quant_type == "nf4" and w.quant_state.nested
        qs = w.quant_state
        q_bytes += w.numel() * w.element_size() + qs.absmax.numel() + qs.state2.absmax.numel() * 4 + 4
    assert q_bytes <= 0.3 * bf16_bytes, (q_bytes, bf16_bytes)

    q_losses = train(q_model)
    bf16_losses = train(bf16_model)
    first, last = sum(q_losses[:4]) / 4, sum(q_losses[-4:]) / 4
    assert last < 0.6 * first, q_losses  # the loss falls clearly
    bf16_last = sum(bf16_losses[-4:]) / 4
    assert abs(last - bf16_last) < 0.15 * bf16_last + 0.1, (q_losses, bf16_losses)
    for ql, bl in zip(q_losses, bf16_losses):  # and tracks the bf16 run all along
        assert abs(ql - bl) < 0.2 * bl + 0.15, (q_losses, bf16_losses)

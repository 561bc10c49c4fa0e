"""Hugging Face scenarios run in their own processes by test_hf_integration.py (the alias of ``bitsandbytes`` and
the real bitsandbytes cannot share one process): ``python hf_scenarios.py MODE DIR``.

Modes (DIR holds the tiny model and what a mode writes for another):
  alias-basics   the alias's modules, version and metadata; Transformers and PEFT see bitsandbytes
  ours           4-bit and 8-bit ``from_pretrained`` through the alias; logits, save / reload, generate
  real           with the real bitsandbytes: load our 4-bit checkpoint, write its own (for the cross check)
  peft           QLoRA through PEFT's bitsandbytes LoRA layers and ``bitsandbytes.optim.AdamW8bit``, then merge
  gpt2           a model with Conv1D layers (transposed weights) in 4 and 8 bits; ``model.dequantize()``
Each prints one JSON line of results.
"""

from __future__ import annotations

import json
import os
import sys
import warnings

import torch

VOCAB = 96


def tiny_llama(dirname: str) -> str:
    """A tiny random Llama saved in bf16 under DIR/tiny (built once; no download)."""
    import transformers

    path = os.path.join(dirname, "tiny")
    if not os.path.isdir(path):
        config = transformers.LlamaConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False, initializer_range=0.2,
        )  # fmt: skip
        torch.manual_seed(0)
        transformers.LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)
    return path


def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(3))


def config_4bit():
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)  # fmt: skip


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().mean() / b.float().abs().mean())


def alias_basics(_: str) -> dict:
    import importlib.metadata

    import bnb_api
    import bnb_api.as_bitsandbytes as alias_mod

    bnb = bnb_api.install_as_bitsandbytes()
    import bitsandbytes
    import bitsandbytes.functional
    import bitsandbytes.nn
    import bitsandbytes.optim
    import transformers.utils
    from peft.import_utils import is_bnb_4bit_available

    out = {
        "same_module": bitsandbytes is bnb and bnb_api.install_as_bitsandbytes() is bnb,
        "classes": bitsandbytes.nn.Linear4bit is bnb_api.nn.Linear4bit
        and bitsandbytes.optim.AdamW8bit is bnb_api.optim.AdamW8bit
        and bitsandbytes.functional.quantize_4bit is bnb_api.functional.quantize_4bit
        and bitsandbytes.matmul_4bit is bnb_api.matmul_4bit,
        "version": bitsandbytes.__version__,
        "metadata_version": importlib.metadata.version("bitsandbytes"),
        "transformers_sees_it": transformers.utils.is_bitsandbytes_available(),
        "peft_sees_it": is_bnb_4bit_available(),
        "unknown_attribute_raises": not hasattr(bitsandbytes, "no_such_thing"),
    }
    alias_mod.uninstall_as_bitsandbytes()
    out["uninstalled"] = "bitsandbytes" not in sys.modules and not alias_mod.is_installed()
    return out


def ours(dirname: str) -> dict:
    import bnb_api

    bnb_api.install_as_bitsandbytes()
    import transformers
    from transformers import BitsAndBytesConfig

    path = tiny_llama(dirname)
    x = tokens()
    dense = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    q4 = transformers.AutoModelForCausalLM.from_pretrained(path, quantization_config=config_4bit(), device_map="cpu")
    linears = {n: type(m) for n, m in q4.named_modules() if isinstance(m, torch.nn.Linear)}

    # the same weights quantized by hand with bnb_api.nn: Transformers' path must give the same bits
    manual = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16)
    for name, module in list(manual.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, torch.nn.Linear) and full != "lm_head":
                q = bnb_api.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                          compute_dtype=torch.bfloat16, compress_statistics=True, quant_type="nf4",
                                          device="meta")  # fmt: skip
                q.weight = bnb_api.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                                 quant_type="nf4", module=q)  # fmt: skip
                setattr(module, child_name, q.to("cpu"))
    with torch.no_grad():
        ref, l4, lm = dense(x).logits, q4(x).logits, manual(x).logits
        q4.save_pretrained(os.path.join(dirname, "ours4"))
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(dirname, "ours4"), device_map="cpu")
        l4r = reloaded(x).logits
        torch.save(l4, os.path.join(dirname, "ours4_logits.pt"))
        generated = q4.generate(x[:1], max_new_tokens=6, do_sample=False)
        q8 = transformers.AutoModelForCausalLM.from_pretrained(
            path, quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map="cpu", dtype=torch.float32
        )
        dense32 = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        l8, ref32 = q8(x).logits, dense32(x).logits
    int8 = [n for n, m in q8.named_modules() if isinstance(m, bnb_api.nn.Linear8bitLt)]
    return {
        "linear4bit": sorted(n for n, t in linears.items() if t is bnb_api.nn.Linear4bit),
        "plain_linear": sorted(n for n, t in linears.items() if t is torch.nn.Linear),
        "same_as_manual": bool(torch.equal(l4, lm)),
        "rel_err_4bit": rel_err(l4, ref),
        "reload_identical": bool(torch.equal(l4, l4r)),
        "reloaded_linear4bit": all(
            isinstance(m, bnb_api.nn.Linear4bit) for n, m in reloaded.named_modules() if n.endswith("q_proj")
        ),  # fmt: skip
        "generated": generated.shape[1] - x.shape[1],
        "int8_layers": len(int8),
        "rel_err_8bit": rel_err(l8, ref32),
    }


def real(dirname: str) -> dict:
    import bitsandbytes
    import transformers

    path = tiny_llama(dirname)
    x = tokens()
    with torch.no_grad():
        theirs_on_ours = transformers.AutoModelForCausalLM.from_pretrained(os.path.join(dirname, "ours4"),
                                                                           device_map="cpu")(x).logits  # fmt: skip
        q4 = transformers.AutoModelForCausalLM.from_pretrained(path, quantization_config=config_4bit(),
                                                               device_map="cpu")  # fmt: skip
        q4.save_pretrained(os.path.join(dirname, "real4"))
    ours_logits = torch.load(os.path.join(dirname, "ours4_logits.pt"))
    real_package = getattr(bitsandbytes, "__file__", "").endswith(os.path.join("bitsandbytes", "__init__.py"))
    return {"real_bitsandbytes": real_package, "rel_err_real_vs_ours": rel_err(theirs_on_ours, ours_logits)}


def compare_checkpoints(dirname: str) -> dict:
    """Keys and tensors of the 4-bit checkpoints written through the alias and by bitsandbytes."""
    from safetensors.torch import load_file

    a = load_file(os.path.join(dirname, "ours4", "model.safetensors"))
    b = load_file(os.path.join(dirname, "real4", "model.safetensors"))
    differing = {k: float((a[k] != b[k]).float().mean()) for k in a if k in b and not torch.equal(a[k], b[k])}
    return {"same_keys": sorted(a) == sorted(b), "differing": differing, "n_tensors": len(a)}


def qlora(dirname: str) -> dict:
    import bnb_api

    bnb_api.install_as_bitsandbytes()
    import bitsandbytes as bnb
    import peft
    import transformers

    path = tiny_llama(dirname)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, quantization_config=config_4bit(),
                                                              device_map="cpu")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Transformers 5 deprecation notes on gradient checkpointing names
        model = peft.prepare_model_for_kbit_training(model)  # gradient checkpointing on, its default
    torch.manual_seed(0)  # the adapters' random initialization
    model = peft.get_peft_model(
        model,
        peft.LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"]
        ),
    )
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = bnb.optim.AdamW8bit(trainable, lr=1e-2, min_8bit_size=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 12, (8, 1), generator=g)
    seq = [x]
    for _ in range(15):
        seq.append((5 * seq[-1] + 7) % 12)
    x = torch.cat(seq, dim=1) * 7 + 3
    losses = []
    for _ in range(25):
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    with torch.no_grad():  # merging the trained adapters re-quantizes W + B A into the 4-bit layers
        before = model(input_ids=x).logits
        merged = model.merge_and_unload()
        out = merged(input_ids=x, labels=x)
        after = out.logits
    return {
        "merged_layer": type(merged.model.layers[0].self_attn.q_proj).__name__,
        "rel_diff_after_merge": rel_err(after, before),
        "loss_after_merge": out.loss.item(),
        "lora_layer": f"{type(layer).__module__}.{type(layer).__name__}",
        "base_layer": type(layer.base_layer).__name__,
        "eight_bit_states": any(s["state1"].dtype == torch.uint8 for s in opt.state.values()),
        "first_loss": losses[0],
        "last_loss": losses[-1],
    }


def gpt2_and_dequantize(dirname: str) -> dict:
    import bnb_api

    bnb_api.install_as_bitsandbytes()
    import transformers
    from transformers import BitsAndBytesConfig

    path = os.path.join(dirname, "gpt2")
    config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=64, n_layer=2, n_head=4,
                                     bos_token_id=0, eos_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)
    x = tokens()
    dense = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    q4 = transformers.AutoModelForCausalLM.from_pretrained(
        path,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32),
        device_map="cpu",
    )
    q8 = transformers.AutoModelForCausalLM.from_pretrained(
        path, quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map="cpu", dtype=torch.float32
    )
    attn = q4.transformer.h[0].attn.c_attn
    expected = bnb_api.functional.dequantize_4bit(attn.weight.data, attn.weight.quant_state)
    with torch.no_grad():
        ref, l4, l8 = dense(x).logits, q4(x).logits, q8(x).logits
        q4.dequantize()
        l4d = q4(x).logits
    after = q4.transformer.h[0].attn.c_attn
    return {
        "conv1d_as_linear4bit": type(attn).__name__,
        "conv1d_as_linear8bit": type(q8.transformer.h[0].attn.c_attn).__name__,
        "rel_err_4bit": rel_err(l4, ref),
        "rel_err_8bit": rel_err(l8, ref),
        "dequantized_layer": type(after).__name__,
        "dequantized_weight_exact": bool(torch.equal(after.weight.data, expected.to(after.weight.dtype))),
        "rel_diff_after_dequantize": rel_err(l4d, l4),
    }


MODES = {
    "alias-basics": alias_basics,
    "ours": ours,
    "real": real,
    "compare": compare_checkpoints,
    "peft": qlora,
    "gpt2": gpt2_and_dequantize,
}

if __name__ == "__main__":
    mode, dirname = sys.argv[1], sys.argv[2]
    print("RESULT " + json.dumps(MODES[mode](dirname)))

"""End-to-end decoding on the cpu: a Llama through Hugging Face Transformers, dense and quantized, side by side.

``python benchmarks/bench_cpu_e2e.py [--quick] [--json out.json]``

A random Llama with TinyLlama-1.1B's layer sizes (hidden 2048, MLP 5632, 32 heads, 4 KV heads, vocabulary 32000;
6 of its 22 layers; ``--quick``: a smaller one) is saved once in bf16, then loaded by ``from_pretrained`` in one
process per variant: dense bf16, bnb_api 4-bit (NF4, nested absmax, bf16 compute: the QLoRA / Transformers
default) and 8-bit (LLM.int8(), threshold 6) through ``bnb_api.install_as_bitsandbytes()``, and the same two
with bitsandbytes 0.50.2 when it is installed. Each variant reports its load time (quantization included), the
prefill of a 32-token prompt, and the time per decoded token (greedy ``generate``: 33 tokens minus 1, over 32),
best of 3, and of 2 rounds over all variants in alternating order (``--rounds``; the VM's speed drifts).
Transformers keeps ``lm_head`` in bf16 in every variant; its ``F.linear`` per token is timed in the same
process, and "rest" is the token's time without it (the quantized layers, attention and Python). The first greedy
tokens of each variant are compared with dense bf16's and with bitsandbytes' for the same format: bnb_api and
bitsandbytes quantize to the same codes, so they decode the same tokens. With PEFT installed, the 4-bit variants
then train: QLoRA (LoRA r=16 on every decoder Linear, ``AdamW8bit``), best of 6 steps on 2 x 128 tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Row, bench, bnb_available, print_table, write_json  # noqa: E402

MARK = "E2E_RESULT "
PROMPT, NEW_TOKENS, COMPARED = 32, 32, 16
VARIANTS = (  # name, library, bits
    ("dense bf16", None, 16),
    ("bnb_api 4-bit nf4", "bnb_api", 4),
    ("bitsandbytes 4-bit nf4", "bitsandbytes", 4),
    ("bnb_api 8-bit", "bnb_api", 8),
    ("bitsandbytes 8-bit", "bitsandbytes", 8),
)


def model_config(quick: bool) -> dict:
    """LlamaConfig arguments: TinyLlama-1.1B's layer sizes with 6 layers, or a small model for ``--quick``."""
    if quick:
        return dict(vocab_size=8192, hidden_size=1024, intermediate_size=2816, num_hidden_layers=2,
                    num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=256)  # fmt: skip
    return dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=6, num_attention_heads=32,
                num_key_value_heads=4, max_position_embeddings=512)  # fmt: skip


def build_model(path: str, quick: bool) -> None:
    """Save a random bf16 Llama under ``path`` (seeded; no download)."""
    import transformers

    config = transformers.LlamaConfig(**model_config(quick), tie_word_embeddings=False)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(path)


def _best(fn, repeat: int) -> float:
    return bench(fn, repeat=repeat, warmup=0, max_seconds=60.0)["best"]


def worker(library: str | None, bits: int, path: str, quick: bool) -> dict:
    """Load the model at ``path`` with ``library`` in ``bits`` bits (None: dense bf16) and time it."""
    warnings.filterwarnings("ignore")
    if library == "bnb_api":
        import bnb_api

        bnb_api.install_as_bitsandbytes()
    import transformers

    kwargs = {}
    if bits == 4:
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )  # fmt: skip
    elif bits == 8:
        kwargs["quantization_config"] = transformers.BitsAndBytesConfig(load_in_8bit=True)

    def load_model():
        return transformers.LlamaForCausalLM.from_pretrained(path, dtype=torch.bfloat16, device_map="cpu", **kwargs)

    t0 = time.perf_counter()
    model = load_model()
    load = time.perf_counter() - t0
    model.eval()
    vocab, hidden = model.config.vocab_size, model.config.hidden_size
    ids = torch.randint(0, vocab, (1, PROMPT), generator=torch.Generator().manual_seed(1))
    repeat = 2 if quick else 3
    new = 8 if quick else NEW_TOKENS

    def generate(n: int) -> torch.Tensor:
        return model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)

    with torch.inference_mode():
        tokens = generate(COMPARED)[0, PROMPT:].tolist()
        prefill = _best(lambda: model(ids), repeat)
        decode = (_best(lambda: generate(new + 1), repeat) - _best(lambda: generate(1), repeat)) / new
        h = torch.randn(1, 1, hidden, dtype=torch.bfloat16)
        model.lm_head(h)
        lm_head = _best(lambda: model.lm_head(h), 10)
    quantized = sum(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in model.modules())
    result = {"load_s": load, "prefill_s": prefill, "decode_s": decode, "lm_head_s": lm_head, "tokens": tokens,
              "quantized_layers": quantized, "module": type(model.model.layers[0].mlp.up_proj).__module__}  # fmt: skip
    if bits == 4:
        del model
        result.update(qlora_steps(load_model, vocab, quick))
    return result


def qlora_steps(load_model, vocab: int, quick: bool) -> dict:
    """QLoRA on a freshly loaded 4-bit model (``load_model()``; bitsandbytes 0.50.2 repacks a CPU layer's weight
    for inference at its first batch-1 call, after which its training losses fall more slowly) through PEFT (LoRA
    r=16 on every decoder Linear, seeded) with ``bitsandbytes.optim.AdamW8bit``: the best of 6 steps (forward,
    backward, optimizer) on 2 x 128 tokens (2 x 32 with ``quick``) and the loss of each step. Empty without PEFT."""
    try:
        import peft
    except ImportError:
        return {}
    import bitsandbytes

    model = peft.prepare_model_for_kbit_training(load_model(), use_gradient_checkpointing=False)
    torch.manual_seed(0)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = peft.LoraConfig(r=16, lora_alpha=32, target_modules=targets, lora_dropout=0.0, task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, config)
    opt = bitsandbytes.optim.AdamW8bit([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(0, vocab, (2, 32 if quick else 128), generator=torch.Generator().manual_seed(2))
    best, losses = None, []
    for _ in range(6):
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        t3 = time.perf_counter()
        losses.append(loss.item())
        if best is None or t3 - t0 < sum(best):
            best = (t1 - t0, t2 - t1, t3 - t2)
    return {"train_fwd_s": best[0], "train_bwd_s": best[1], "train_opt_s": best[2], "train_losses": losses,
            "train_tokens": ids.numel()}  # fmt: skip


def run_variant(library: str | None, bits: int, path: str, quick: bool) -> dict | str:
    """The worker's result in its own process (the alias of ``bitsandbytes`` and the real one cannot share one),
    or the reason it failed."""
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(library), str(bits), path]
    proc = subprocess.run(cmd + (["--quick"] if quick else []), capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    return f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}"


def _best_of(old: dict | None, new: dict) -> dict:
    """Per timing key the smaller of two runs of one variant (the rest from the newer run)."""
    if old is None:
        return new
    best = dict(new)
    for key in ("load_s", "prefill_s", "decode_s", "lm_head_s"):
        best[key] = min(old[key], new[key])
    if "train_fwd_s" in old and "train_fwd_s" in new:
        steps = [(r["train_fwd_s"] + r["train_bwd_s"] + r["train_opt_s"], r) for r in (old, new)]
        fastest = min(steps, key=lambda s: s[0])[1]
        for key in ("train_fwd_s", "train_bwd_s", "train_opt_s"):
            best[key] = fastest[key]
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small model, fewer tokens (smoke run)")
    parser.add_argument("--json", help="write rows to this file")
    parser.add_argument("--rounds", type=int, default=None, help="runs of every variant, alternating order; best "
                        "of them (default 2, 1 with --quick)")  # fmt: skip
    parser.add_argument("--worker", nargs=3, metavar=("LIBRARY", "BITS", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 2)
    if args.worker:
        library, bits, path = args.worker
        result = worker(None if library == "None" else library, int(bits), path, args.quick)
        print(MARK + json.dumps(result), flush=True)
        return 0
    try:
        import transformers  # noqa: F401
    except ImportError:
        print("transformers is not installed (pip install '.[hf]'): end-to-end benchmark skipped")
        return 0
    have_bnb = bnb_available()
    cfg = model_config(args.quick)
    shape = f"Llama {cfg['num_hidden_layers']}x{cfg['hidden_size']}"
    results: dict[str, dict] = {}
    failed = []
    with tempfile.TemporaryDirectory(prefix="bnb_api_e2e_") as tmp:
        path = os.path.join(tmp, "model")
        build_model(path, args.quick)
        for round_ in range(args.rounds):  # the variants in turn, each round in the other order: best per variant
            order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
            for name, library, bits in order:
                if (library == "bitsandbytes" and not have_bnb) or name in failed:
                    continue
                result = run_variant(library, bits, path, args.quick)
                if isinstance(result, str):
                    print(f"{name}: failed ({result})", file=sys.stderr)
                    failed.append(name)
                    continue
                results[name] = _best_of(results.get(name), result)
    dense = results.get("dense bf16")
    rows = []
    for name, r in results.items():
        fmt = name.split(" ", 1)[1]
        peer = results.get(f"bitsandbytes {fmt}") if name.startswith("bnb_api") else None
        ratios = {}
        if dense is not None and name != "dense bf16":
            ratios["dense bf16"] = dense["decode_s"] / r["decode_s"]
        if peer is not None:
            ratios["bitsandbytes"] = peer["decode_s"] / r["decode_s"]
        same_dense = sum(a == b for a, b in zip(r["tokens"], dense["tokens"])) if dense else 0
        note = (f"{1 / r['decode_s']:.1f} tok/s; prefill {PROMPT} tokens {r['prefill_s'] * 1e3:.1f} ms; load "
                f"{r['load_s']:.1f} s; lm_head (bf16) {r['lm_head_s'] * 1e3:.2f} ms, rest "
                f"{(r['decode_s'] - r['lm_head_s']) * 1e3:.2f} ms; {r['quantized_layers']} quantized layers; first "
                f"{COMPARED} greedy tokens: {same_dense} as dense")  # fmt: skip
        if peer is not None:
            note += f", {sum(a == b for a, b in zip(r['tokens'], peer['tokens']))} as bitsandbytes"
        rows.append(Row("decode 1 token", shape, name, r["decode_s"], ratios=ratios, note=note))
    print_table(f"greedy decoding, {shape} (random weights), ms per token (x = baseline time / this time)", rows)
    train_rows = []
    peer = results.get("bitsandbytes 4-bit nf4", {})
    for name, r in results.items():
        if "train_fwd_s" not in r:
            continue
        step = r["train_fwd_s"] + r["train_bwd_s"] + r["train_opt_s"]
        ratios = {}
        if name.startswith("bnb_api") and "train_fwd_s" in peer:
            ratios["bitsandbytes"] = (peer["train_fwd_s"] + peer["train_bwd_s"] + peer["train_opt_s"]) / step
        note = (f"forward {r['train_fwd_s'] * 1e3:.0f} ms, backward {r['train_bwd_s'] * 1e3:.0f} ms, AdamW8bit "
                f"{r['train_opt_s'] * 1e3:.1f} ms; {r['train_tokens']} tokens; losses "
                + " ".join(f"{x:.3f}" for x in r["train_losses"]))  # fmt: skip
        train_rows.append(Row("QLoRA train step", shape, name, step, ratios=ratios, note=note))
    if train_rows:
        print_table(f"QLoRA (PEFT LoRA r=16 on the 4-bit {shape}, AdamW8bit), best of 6 steps", train_rows)
    if args.json:
        write_json(args.json, "bench_cpu_e2e", rows + train_rows, {"results": results, "config": cfg})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

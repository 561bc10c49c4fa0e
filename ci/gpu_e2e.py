"""End-to-end check of the user API on an accelerator against the same calls on the cpu.

``python ci/gpu_e2e.py [--device cuda]`` builds each layer and optimizer twice from the same seed, once
on the cpu and once on ``--device``, and compares what a user sees:

* ``Linear4bit`` (NF4/FP4, plain and nested absmax, fp16/bf16 compute): the packed weight and its
  statistics byte for byte, the batch-1 (gemv) and batch-16 outputs, the input gradient (QLoRA);
* ``Linear8bitLt`` (LLM.int8(), threshold 6 with outlier columns): int8 codes, row scales, outputs;
* 8-bit and 32-bit optimizers (AdamW, Lion, SGD momentum): parameters after 5 steps, the 8-bit states;
* a state dict saved on the device and loaded into a cpu module: same output.

Prints one row per check and exits 1 when any fails. ``--device cpu`` runs the device side with the
reference backend (``BNB_API_BACKEND=reference``), which smoke-tests the script on a machine without
an accelerator. Run by ``ci/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable

import torch

import bnb_api
from bnb_api.core import registry

RESULTS: list[tuple[str, bool, str]] = []


def record(name: str, ok: bool, detail: str) -> None:
    """Keep one check's verdict and print it."""
    RESULTS.append((name, ok, detail))
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}", flush=True)


def rel_err(got: torch.Tensor, want: torch.Tensor, scale: torch.Tensor) -> float:
    """Largest |got - want| over the matching element of ``scale`` (|x| @ |W|.T, the rounding scale)."""
    diff = (got.detach().double().cpu() - want.detach().double().cpu()).abs()
    return float((diff / scale.detach().double().cpu().clamp_min(1e-30)).max())


def on_device(device: str, fn: Callable[[], object]):
    """Run ``fn`` with the device's own backends (or the reference one for the cpu smoke run)."""
    if device == "cpu":
        with registry.use_backend("reference"):
            return fn()
    return fn()


def check_linear4bit(device: str) -> None:
    torch.manual_seed(1)
    for quant_type in ("nf4", "fp4"):
        for nested in (False, True):
            for dtype in (torch.float16, torch.bfloat16):
                name = f"Linear4bit {quant_type}{' nested' if nested else ''} {str(dtype)[6:]}"
                base = torch.nn.Linear(4096 + 64, 1000, bias=True, dtype=dtype)  # odd N, K not a block multiple
                torch.nn.init.normal_(base.weight, std=0.05)

                def make(dev, base=base, dtype=dtype, quant_type=quant_type, nested=nested):
                    layer = bnb_api.nn.Linear4bit(base.in_features, base.out_features, compute_dtype=dtype,
                                                  compress_statistics=nested, quant_type=quant_type)  # fmt: skip
                    layer.weight = bnb_api.nn.Params4bit(base.weight.data.clone(), requires_grad=False,
                                                         compress_statistics=nested, quant_type=quant_type)  # fmt: skip
                    layer.bias = torch.nn.Parameter(base.bias.data.clone())
                    return layer.to(dev)

                cpu_layer = make("cpu")
                dev_layer = on_device(device, lambda make=make: make(device))
                qs_c, qs_d = cpu_layer.weight.quant_state, dev_layer.weight.quant_state
                same_bytes = torch.equal(cpu_layer.weight.data, dev_layer.weight.data.cpu()) and torch.equal(
                    qs_c.absmax.cpu(), qs_d.absmax.cpu()
                )
                record(f"{name} quantized bytes", same_bytes, "packed weight and absmax identical"
                       if same_bytes else "packed weight or absmax differ from the cpu's")  # fmt: skip
                for batch in (1, 16):
                    x = torch.randn(batch, base.in_features, dtype=dtype)
                    with torch.no_grad():  # inference: batch 1 takes the fused gemv_4bit
                        want = cpu_layer(x)
                        got = on_device(device, lambda x=x, layer=dev_layer: layer(x.to(device)))
                    w = cpu_layer.weight
                    dense = bnb_api.functional.dequantize_4bit(w.data, w.quant_state).float()
                    scale = x.float().abs() @ dense.abs().T + base.bias.float().abs()
                    err = rel_err(got, want, scale)
                    record(f"{name} forward batch {batch}", err < 2**-6, f"max error / (|x||W|) = {err:.2e}")
                x = torch.randn(8, base.in_features, dtype=dtype)
                xc, xd = x.clone().requires_grad_(), x.to(device).requires_grad_()
                cpu_layer(xc).float().sum().backward()
                on_device(device, lambda xd=xd, layer=dev_layer: layer(xd).float().sum().backward())
                gscale = dense.abs().sum(0).expand_as(xc)
                err = rel_err(xd.grad, xc.grad, gscale)
                record(f"{name} input gradient", err < 2**-6, f"max error / sum|W| = {err:.2e}")


def check_linear8bit(device: str) -> None:
    torch.manual_seed(2)
    for dtype in (torch.float16, torch.bfloat16):
        base = torch.nn.Linear(1024 + 16, 777, dtype=dtype)

        def make(dev, base=base):
            layer = bnb_api.nn.Linear8bitLt(base.in_features, base.out_features, has_fp16_weights=False,
                                            threshold=6.0)  # fmt: skip
            layer.load_state_dict(base.state_dict())
            return layer.to(dev)

        cpu_layer = make("cpu")
        dev_layer = on_device(device, lambda make=make: make(device))
        for batch in (1, 16):
            x = torch.randn(batch, base.in_features, dtype=dtype)
            x[:, ::97] *= 20  # outlier columns above the threshold
            with torch.no_grad():
                want = cpu_layer(x)
                got = on_device(device, lambda x=x, layer=dev_layer: layer(x.to(device)))
            scale = x.float().abs() @ base.weight.float().abs().T + base.bias.float().abs()
            err = rel_err(got, want, scale)
            record(f"Linear8bitLt {str(dtype)[6:]} batch {batch}", err < 2**-6, f"max error / (|x||W|) = {err:.2e}")
        same = torch.equal(cpu_layer.state.CB, dev_layer.state.CB.cpu()) and torch.allclose(
            cpu_layer.state.SCB, dev_layer.state.SCB.cpu(), rtol=0, atol=0
        )
        record(f"Linear8bitLt {str(dtype)[6:]} int8 weight", same, "codes and row scales identical"
               if same else "codes or row scales differ from the cpu's")  # fmt: skip


def check_optimizers(device: str) -> None:
    kinds = [("AdamW8bit", dict(lr=1e-3, weight_decay=0.01)), ("AdamW", dict(lr=1e-3, optim_bits=32)),
             ("Lion8bit", dict(lr=1e-4)), ("SGD8bit", dict(lr=1e-2, momentum=0.9))]  # fmt: skip
    for cls_name, kwargs in kinds:
        torch.manual_seed(3)
        shapes = [(513, 700), (4096,), (17,)]  # partial blocks, a small tensor kept 32-bit
        params = [torch.randn(s) * 0.1 for s in shapes]
        grads = [[torch.randn(s) * 1e-2 for s in shapes] for _ in range(5)]

        def run(dev, params=params, grads=grads, cls_name=cls_name, kwargs=kwargs):
            ps = [torch.nn.Parameter(p.clone().to(dev)) for p in params]
            opt = getattr(bnb_api.optim, cls_name)(ps, **kwargs)
            for step in grads:
                for p, g in zip(ps, step):
                    p.grad = g.to(dev)
                opt.step()
            return ps, opt

        pc, oc = run("cpu")
        pd, od = on_device(device, lambda run=run: run(device))
        worst = max(float(((a.detach().cpu() - b.detach()).abs() / (b.detach().abs() + 1e-3)).max())
                    for a, b in zip(pd, pc))  # fmt: skip
        record(f"{cls_name} 5 steps params", worst < 1e-3, f"max relative difference {worst:.2e}")
        if "8bit" in cls_name:
            sc, sd = oc.state[pc[0]], od.state[pd[0]]
            diffs = [(sd[k].cpu().int() - sc[k].int()).abs() for k in ("state1", "state2") if k in sc]
            off = max(int(d.max()) for d in diffs)
            frac = max(float((d > 0).float().mean()) for d in diffs)
            record(f"{cls_name} 8-bit states", off <= 1 and frac < 1e-3,
                   f"{frac:.1e} of codes differ, by at most {off}")  # fmt: skip


def check_state_dict(device: str) -> None:
    torch.manual_seed(4)
    layer = on_device(device, lambda: bnb_api.nn.Linear4bit(2048, 512, compute_dtype=torch.bfloat16,
                                                             quant_type="nf4").to(device))  # fmt: skip
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    loaded = bnb_api.nn.Linear4bit(2048, 512, compute_dtype=torch.bfloat16, quant_type="nf4")
    loaded.load_state_dict(torch.load(buf, map_location="cpu", weights_only=True))
    x = torch.randn(3, 2048, dtype=torch.bfloat16)
    with torch.no_grad():
        want = on_device(device, lambda: layer(x.to(device)))
        got = loaded(x)
    w = loaded.weight
    scale = x.float().abs() @ bnb_api.functional.dequantize_4bit(w.data, w.quant_state).float().abs().T
    err = rel_err(got, want, scale)
    record("state dict saved on the device, loaded on the cpu", err < 2**-6, f"max error / (|x||W|) = {err:.2e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args(argv)
    device = args.device
    if device != "cpu" and not (torch.cuda.is_available() if device.startswith("cuda") else True):
        print(f"gpu_e2e: {device} is not available")
        return 1
    print(f"gpu_e2e: {device} against cpu, torch {torch.__version__}")
    for check in (check_linear4bit, check_linear8bit, check_optimizers, check_state_dict):
        try:
            check(device)
        except Exception as exc:  # one broken check must not hide the others
            record(check.__name__, False, f"raised {type(exc).__name__}: {exc}")
    failed = [name for name, ok, _ in RESULTS if not ok]
    print(f"\ngpu_e2e: {len(RESULTS) - len(failed)} of {len(RESULTS)} checks passed" +
          (f"; FAILED: {', '.join(failed)}" if failed else ""))  # fmt: skip
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

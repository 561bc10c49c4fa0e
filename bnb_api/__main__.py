"""Command line: ``python -m bnb_api info`` (support matrix) and ``python -m bnb_api demo`` (main job).

* ``info``: devices present, registered backends and why each is or is not usable, and for every op and
  device type the kernel that serves it and why the others would not; build and CPU features.
* ``as-bitsandbytes script.py [args]`` / ``as-bitsandbytes -m module [args]``: runs a program written for
  bitsandbytes (Transformers' ``BitsAndBytesConfig``, PEFT's QLoRA) on bnb_api (``bnb_api.as_bitsandbytes``).
* ``demo``: quantizes a small built-in model (a stack of random, normally distributed Linear weights,
  seeded) to NF4 with double quantization and to LLM.int8(), then prints memory saved, output error
  against the float model and the speed of a batch-1 forward pass.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

import bnb_api
from bnb_api.core import ops, registry
from bnb_api.core.registry import ANY_DEVICE


def _devices() -> list[str]:
    """Device types torch can use in this process (cpu first)."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        found.append("xpu")
    if torch.backends.mps.is_available():
        found.append("mps")
    if hasattr(torch, "hpu") and getattr(torch.hpu, "is_available", lambda: False)():
        found.append("hpu")
    return found


def _device_types() -> list[str]:
    """Every device type some backend declares, present or not."""
    types: list[str] = []
    for backend in registry.backends().values():
        for t in backend.device_types:
            if t != ANY_DEVICE and t not in types:
                types.append(t)
    return types


def _cpu_features() -> dict:
    try:
        from bnb_api.backends.cpu import kernels_quant

        return kernels_quant.cpu_features()
    except Exception as exc:  # the native library may be absent: say so, never fail
        return {"native cpu library": f"not loaded ({type(exc).__name__}: {exc})"}


def info(out=sys.stdout) -> None:
    """Print the support matrix."""
    present = _devices()
    print(f"bnb_api {bnb_api.__version__}  torch {torch.__version__}  python {sys.version.split()[0]}", file=out)
    print(f"devices present: {', '.join(present)}", file=out)
    print("\n## Backends\n", file=out)
    print("| backend | device types | status | description |\n|---|---|---|---|", file=out)
    for name, backend in registry.backends().items():
        ok, reason = backend.available()
        status = "available" if ok else f"unavailable: {reason}"
        print(f"| {name} | {', '.join(backend.device_types)} | {status} | {backend.description} |", file=out)
    from bnb_api import backends as backend_pkg

    for what, err in backend_pkg.load_errors.items():
        print(f"| {what} | - | failed to load: {err} | |", file=out)
    for device_type in _device_types():
        tag = "present" if device_type in present else "not present"
        print(f"\n## Ops on {device_type} ({tag})\n", file=out)
        print("| op | served by | kind | others |\n|---|---|---|---|", file=out)
        for op in ops.OP_NAMES:
            verdicts = registry.explain(op, device_type)
            chosen = next((k for k, v in verdicts if v == "selected"), None)
            others = "; ".join(f"{k.backend}: {v}" for k, v in verdicts if k is not chosen)
            served = chosen.backend if chosen else "-"
            kind = chosen.kind if chosen else "-"
            print(f"| {op} | {served} | {kind} | {others or '-'} |", file=out)
    print("\n## Build and CPU features\n", file=out)
    for key, value in _cpu_features().items():
        print(f"- {key}: {value}", file=out)
    print(f"- torch threads: {torch.get_num_threads()}", file=out)


def _timeit(fn, repeat: int = 20) -> float:
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def demo(layers: int = 4, width: int = 2048, dtype: torch.dtype = torch.bfloat16, out=sys.stdout) -> dict:
    """Quantize a small built-in model and report memory, error and batch-1 speed; returns the figures."""
    F = bnb_api.functional
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(width, width, generator=gen, dtype=torch.float32) / width**0.5 for _ in range(layers)]
    x = torch.randn(1, width, generator=gen)

    def forward_dense(h, ws):
        for w in ws:
            h = torch.nn.functional.linear(h, w)
        return h

    dense = [w.to(dtype) for w in weights]
    nf4 = [F.quantize_4bit(w.to(dtype), blocksize=64, compress_statistics=True, quant_type="nf4") for w in weights]
    int8 = [F.int8_vectorwise_quant(w.to(torch.float16)) for w in weights]

    def forward_nf4(h):
        for packed, state in nf4:
            h = F.gemv_4bit(h, packed, state=state)
        return h

    def forward_int8(h):
        for codes, scales, _ in int8:
            h = F.int8_mm_outlier(h, codes, scales, threshold=6.0)
        return h

    ref = forward_dense(x.double(), [w.double() for w in weights])
    x_lp = x.to(dtype)

    def nbytes(t) -> int:
        return t.numel() * t.element_size()

    dense_bytes = sum(nbytes(w) for w in dense)
    nf4_bytes = sum(nbytes(p) + nbytes(s.absmax) + nbytes(s.state2.absmax) for p, s in nf4)
    int8_bytes = sum(nbytes(c) + nbytes(s) for c, s, _ in int8)

    def rel_err(y) -> float:
        return float((y.double() - ref).norm() / ref.norm())

    rows = [
        ("dense " + str(dtype).replace("torch.", ""), dense_bytes, rel_err(forward_dense(x_lp, dense)),
         _timeit(lambda: forward_dense(x_lp, dense))),
        ("NF4 + double quant (gemv_4bit)", nf4_bytes, rel_err(forward_nf4(x_lp)), _timeit(lambda: forward_nf4(x_lp))),
        ("LLM.int8() (int8_mm_outlier)", int8_bytes, rel_err(forward_int8(x.half())),
         _timeit(lambda: forward_int8(x.half()))),
    ]  # fmt: skip
    print(f"bnb_api demo: {layers} Linear layers {width}x{width}, batch 1, threads {torch.get_num_threads()}", file=out)
    chosen = next(k.backend for k, v in registry.explain("gemv_4bit", "cpu") if v == "selected")
    print(f"gemv_4bit served by: {chosen}\n", file=out)
    print("| model | weight memory | saved | rel. error vs fp64 | forward ms | speed-up |", file=out)
    print("|---|---|---|---|---|---|", file=out)
    base_time = rows[0][3]
    for name, size, err, t in rows:
        print(f"| {name} | {size / 2**20:.1f} MiB | {100 * (1 - size / dense_bytes):.0f}% | {err:.4f} | "
              f"{t * 1e3:.2f} | {base_time / t:.2f}x |", file=out)  # fmt: skip
    return {name: {"bytes": size, "rel_error": err, "seconds": t} for name, size, err, t in rows}


def run_as_bitsandbytes(target: list[str]) -> None:
    """Run a script (``path [args]``) or a module (``-m name [args]``) with ``import bitsandbytes`` giving bnb_api
    (:func:`bnb_api.install_as_bitsandbytes`), ``sys.argv`` set as Python would set it."""
    import runpy

    from bnb_api.as_bitsandbytes import install_as_bitsandbytes

    if not target or (target[0] == "-m" and len(target) < 2):
        raise SystemExit("python -m bnb_api as-bitsandbytes: give a script path or -m MODULE, then its arguments")
    install_as_bitsandbytes()
    if target[0] == "-m":
        sys.argv = [target[1], *target[2:]]
        runpy.run_module(target[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(target)
        runpy.run_path(target[0], run_name="__main__")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bnb_api`` and the ``bnb-api`` script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["as-bitsandbytes"]:  # everything after it is the program's own (argparse would read its -m)
        run_as_bitsandbytes(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bnb_api", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print the support matrix")
    p_demo = sub.add_parser("demo", help="quantize a small built-in model; print memory, error and speed")
    p_demo.add_argument("--layers", type=int, default=4)
    p_demo.add_argument("--width", type=int, default=2048)
    p_as = sub.add_parser("as-bitsandbytes", help="run a script or -m module with `import bitsandbytes` giving bnb_api")
    p_as.add_argument("target", nargs=argparse.REMAINDER, help="script [args] or -m module [args]")
    args = parser.parse_args(argv)
    if args.command == "info":
        info()
    else:
        demo(layers=args.layers, width=args.width)
    return 0


if __name__ == "__main__":
    sys.exit(main())

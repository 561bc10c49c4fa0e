"""AdamW steps on the cpu: the native fused kernels against torch, the reference and bitsandbytes.

``python benchmarks/bench_cpu_optim.py [--quick] [--json out.json]``

Rows: AdamW 8-bit (blockwise 256, dynamic maps) and 32-bit steps on 64M float32 parameters (8M with
``--quick``) through ``torch.ops.bnb_api.optimizer_step`` with the cpu backend and with the reference
backend, ``torch.optim.AdamW(fused=True)`` (32-bit states), and ``bitsandbytes.optim.AdamW8bit`` when it
is importable. GB/s counts the bytes a step must move: 8-bit p r/w + g + 2 codes r/w = 16 B/param; 32-bit
p, m, v r/w + g = 28 B/param.

A second table times ``optimizer.step()`` of the optimizer classes on 256 parameters of 16 x 4096 (a LoRA-like
model, 16.8M parameters in small tensors), where the host cost per parameter shows, against torch's fused
AdamW and bitsandbytes' AdamW8bit.

This VM's memory alternates between about 45 and 80 GB/s within seconds, and the torch step is memory-bound
while the 8-bit one is compute-bound on it, so their ratio depends on the phase. The cpu and torch steps
therefore run round-robin, each round reading 1 GiB first (the DRAM probe); the rows give each impl's best
time and % BW against the best probe, and a second table gives the 8-bit step against torch per memory
phase (rounds whose probe is below / above the midpoint of the slowest and fastest probe).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Row, bench, bnb_available, dram_read_bandwidth, print_table, write_json  # noqa: E402

from bnb_api.core import codes, registry  # noqa: E402

HP = dict(lr=1e-3, beta1=0.9, beta2=0.999, beta3=0.0, alpha=0.0, eps=1e-8, weight_decay=1e-2)
BYTES_8BIT = 4 + 4 + 4 + 2 + 2  # p read + write, g read, 2 states of 1 byte read + write
BYTES_32BIT = 4 + 4 + 4 + 16  # p read + write, g read, m and v read + write


def _states(n: int, eight_bit: bool, blocksize: int = 256):
    if not eight_bit:
        return dict(state1=torch.zeros(n), state2=torch.zeros(n), absmax1=None, absmax2=None, qmap1=None, qmap2=None)
    nb = -(-n // blocksize)
    q1, q2 = codes.dynamic_map(signed=True), codes.dynamic_map(signed=False)
    return dict(state1=torch.full((n,), int(torch.argmin(q1.abs())), dtype=torch.uint8),
                state2=torch.zeros(n, dtype=torch.uint8), absmax1=torch.zeros(nb), absmax2=torch.zeros(nb), qmap1=q1,
                qmap2=q2)  # fmt: skip


def bnb_api_step(backend: str, p: torch.Tensor, g: torch.Tensor, eight_bit: bool):
    """A closure stepping AdamW through the op with ``backend`` forced (step counter advances)."""
    st = _states(p.numel(), eight_bit)
    counter = [0]

    def step():
        counter[0] += 1
        with registry.use_backend(backend):
            torch.ops.bnb_api.optimizer_step("adamw", p, g, st["state1"], st["state2"], st["absmax1"], st["absmax2"],
                                             st["qmap1"], st["qmap2"], step=counter[0], gnorm_scale=1.0,
                                             max_unorm=0.0, blocksize=256, **HP)  # fmt: skip

    return step


def torch_fused_step(p: torch.Tensor, g: torch.Tensor):
    param = torch.nn.Parameter(p.clone())
    param.grad = g.clone()
    opt = torch.optim.AdamW([param], lr=HP["lr"], betas=(HP["beta1"], HP["beta2"]), eps=HP["eps"],
                            weight_decay=HP["weight_decay"], fused=True)  # fmt: skip
    return opt.step


def bnb_step(p: torch.Tensor, g: torch.Tensor):
    import bitsandbytes as bnb

    param = torch.nn.Parameter(p.clone())
    param.grad = g.clone()
    opt = bnb.optim.AdamW8bit([param], lr=HP["lr"], betas=(HP["beta1"], HP["beta2"]), eps=HP["eps"],
                              weight_decay=HP["weight_decay"])  # fmt: skip
    return opt.step


def many_params_rows(count: int, shape: tuple[int, int], bw: float, with_bnb: bool) -> list[Row]:
    """``optimizer.step()`` of the optimizer classes on ``count`` fp32 parameters of ``shape`` (a LoRA-like
    model: many small tensors, where the per-parameter host cost shows), against torch's fused AdamW."""
    import bnb_api

    gen = torch.Generator().manual_seed(1)

    def params():
        ps = [torch.nn.Parameter(torch.randn(shape, generator=gen) * 0.02) for _ in range(count)]
        for q in ps:
            q.grad = torch.randn(shape, generator=gen) * 1e-3
        return ps

    kw = dict(lr=HP["lr"], betas=(HP["beta1"], HP["beta2"]), eps=HP["eps"], weight_decay=HP["weight_decay"])
    impls = {
        "bnb_api AdamW8bit": (lambda ps: bnb_api.optim.AdamW8bit(ps, **kw), BYTES_8BIT),
        "bnb_api AdamW (32-bit)": (lambda ps: bnb_api.optim.AdamW(ps, **kw), BYTES_32BIT),
        "torch AdamW(fused=True)": (lambda ps: torch.optim.AdamW(ps, fused=True, **kw), BYTES_32BIT),
    }
    if with_bnb:
        import bitsandbytes as bnb

        impls["bitsandbytes AdamW8bit"] = (lambda ps: bnb.optim.AdamW8bit(ps, **kw), BYTES_8BIT)
    n = count * shape[0] * shape[1]
    label = f"{count} x {shape[0]}x{shape[1]} fp32"
    rows = []
    for name, (make, bpp) in impls.items():
        opt = make(params())
        t = bench(opt.step, repeat=2 if name.startswith("bitsandbytes") else 15, warmup=1, min_seconds=0.3)["best"]
        gbps = n * bpp / t / 1e9
        rows.append(Row("optimizer.step()", label, name, t, gbps, 100 * gbps / bw))
    base = rows[2].seconds
    for row in rows[:2]:
        row.ratios["torch fused"] = base / row.seconds
        if with_bnb:
            row.ratios["bitsandbytes 8-bit"] = rows[3].seconds / row.seconds
    return rows


def round_robin(impls: dict, rounds: int) -> list[dict]:
    """Each round: a 1 GiB DRAM read (``probe_gbps``), then every impl once (seconds by name); one warmup each."""
    probe = torch.ones((1 << 30) // 4, dtype=torch.float32)
    for fn in impls.values():
        fn()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        probe.sum()
        rec = {"probe_gbps": probe.numel() * 4 / (time.perf_counter() - t0) / 1e9}
        for name, fn in impls.items():
            t0 = time.perf_counter()
            fn()
            rec[name] = time.perf_counter() - t0
        out.append(rec)
    return out


def memory_phases(rounds: list[dict], ours: str, base: str) -> list[dict]:
    """Rounds split at the midpoint of the slowest and fastest probe: per phase the round count, median probe,
    best times and the median of the per-round ratios base / ours (all rounds in one phase when the probes
    differ by less than 20%)."""
    lo, hi = min(r["probe_gbps"] for r in rounds), max(r["probe_gbps"] for r in rounds)
    groups = {"all rounds": rounds} if hi < 1.2 * lo else {
        "slow memory": [r for r in rounds if r["probe_gbps"] < (lo + hi) / 2],
        "fast memory": [r for r in rounds if r["probe_gbps"] >= (lo + hi) / 2],
    }  # fmt: skip
    return [{"phase": name, "rounds": len(rs), "probe_gbps": statistics.median(r["probe_gbps"] for r in rs),
             "ours_ms": 1e3 * min(r[ours] for r in rs), "base_ms": 1e3 * min(r[base] for r in rs),
             "ratio": statistics.median(r[base] / r[ours] for r in rs)} for name, rs in groups.items()]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8M parameters, fewer repeats")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--no-reference", action="store_true", help="skip the (slow) reference rows")
    args = parser.parse_args(argv)

    n = (8 if args.quick else 64) << 20
    repeat = 3 if args.quick else 7
    label = f"{n >> 20}M fp32"
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(n, generator=gen) * 0.02
    g = torch.randn(n, generator=gen) * 1e-3
    bw = dram_read_bandwidth(repeat=3 if args.quick else 5)
    print(f"DRAM read bandwidth (measured now): {bw:.1f} GB/s; threads: {torch.get_num_threads()}")

    from bnb_api.backends.cpu import kernels_optim

    isa = kernels_optim.isa()
    rows: list[Row] = []

    def add(impl: str, fn, bytes_per_param: int, note: str = "", rep: int = repeat) -> Row:
        t = bench(fn, repeat=rep, warmup=1, max_seconds=20.0)["best"]
        gbps = n * bytes_per_param / t / 1e9
        row = Row("adamw step", label, impl, t, gbps, 100 * gbps / bw, note=note)
        rows.append(row)
        return row

    timed = {
        "bnb_api cpu 8-bit": (bnb_api_step("cpu", p.clone(), g, True), BYTES_8BIT, f"{isa}, blocksize 256"),
        "bnb_api cpu 32-bit": (bnb_api_step("cpu", p.clone(), g, False), BYTES_32BIT, isa),
        "torch AdamW(fused=True)": (torch_fused_step(p, g), BYTES_32BIT, "32-bit states"),
    }
    rounds = round_robin({name: fn for name, (fn, _, _) in timed.items()}, rounds=4 if args.quick else 15)
    probe_bw = max(r["probe_gbps"] for r in rounds)
    by_impl = {}
    for name, (_, bpp, note) in timed.items():
        t = min(r[name] for r in rounds)
        gbps = n * bpp / t / 1e9
        by_impl[name] = Row("adamw step", label, name, t, gbps, 100 * gbps / probe_bw,
                            note=note + f"; best of {len(rounds)} round-robin rounds")  # fmt: skip
        rows.append(by_impl[name])
    native8, native32, fused = (by_impl[k] for k in timed)
    baselines = {"torch fused": fused.seconds}
    if not args.no_reference:
        ref8 = add("reference 8-bit", bnb_api_step("reference", p.clone(), g, True), BYTES_8BIT, rep=2)
        ref32 = add("reference 32-bit", bnb_api_step("reference", p.clone(), g, False), BYTES_32BIT, rep=2)
        native8.ratios["reference"] = ref8.seconds / native8.seconds
        native32.ratios["reference"] = ref32.seconds / native32.seconds
    if bnb_available():
        bnb_row = add("bitsandbytes AdamW8bit", bnb_step(p, g), BYTES_8BIT, "0.50.2 cpu", rep=2)
        baselines["bitsandbytes 8-bit"] = bnb_row.seconds
    for row in (native8, native32):
        for name, secs in baselines.items():
            row.ratios[name] = secs / row.seconds

    print_table(f"AdamW step on {label} parameters (x = baseline time / this time)", rows)
    phases = memory_phases(rounds, "bnb_api cpu 8-bit", "torch AdamW(fused=True)")
    print("\n### 8-bit step vs torch fused by memory phase (DRAM probe of each round)\n")
    print("| phase | rounds | probe GB/s (median) | 8-bit ms (best) | torch fused ms (best) | x (median of rounds) |")
    print("|---|---|---|---|---|---|")
    for ph in phases:
        cells = (ph["phase"], ph["rounds"], f"{ph['probe_gbps']:.1f}", f"{ph['ours_ms']:.2f}", f"{ph['base_ms']:.2f}",
                 f"{ph['ratio']:.2f}")  # fmt: skip
        print("| " + " | ".join(str(c) for c in cells) + " |")
    many = many_params_rows(64 if args.quick else 256, (16, 4096), bw, bnb_available())
    print_table("optimizer.step() on many small parameters (x = baseline time / this time)", many)
    rows += many
    if args.json:
        write_json(args.json, "bench_cpu_optim", rows,
                   {"dram_read_gbps": bw, "isa": isa, "params": n, "rounds": rounds, "phases": phases})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark the native cpu quant kernels: ``python benchmarks/bench_cpu_quant.py [--quick] [--json out.json]``.

For each op and shape of issue 3: best time, GB/s, % of the DRAM read bandwidth measured in this run (for
cold rows: probed between the timed calls, the impls run round-robin, since this VM's memory speed drifts), and
speed-up ratios against baselines measured in the same run: the reference backend, dense PyTorch for the
matmuls (bf16 ``F.linear`` for gemv, ``torch._int_mm`` for int8) and bitsandbytes 0.50.2 when importable.
Batch-1 gemv rows come cold (caches flushed, then the same call on a 64-row weight so that only the measured
weight is cold: it is read from DRAM, while interpreter and torch state is in cache as in a decoding loop) and
warm. Their weights come from the cpu quantizer, as users get them (huge-page-advised memory, see
output_pool.py); cold rows also time a copy in torch's 4 KiB pages. The target checks of issue 3 are printed at
the end and stored in the JSON.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (  # noqa: E402
    Row,
    bench,
    bnb_available,
    dram_read_bandwidth,
    flush_cache,
    print_table,
    write_json,
)
from bnb_api.backends.cpu import kernels_quant as kq  # noqa: E402
from bnb_api.core import codes  # noqa: E402
from bnb_api.core.reference import blockwise as ref_bw  # noqa: E402
from bnb_api.core.reference import fourbit as ref_4b  # noqa: E402
from bnb_api.core.reference import int8 as ref_i8  # noqa: E402

MB = 1e6


class Bench:
    """Times implementations of one op/shape and turns them into rows with ratios."""

    def __init__(self, bw: float, quick: bool):
        self.bw, self.quick, self.rows, self.times, self.row_bw = bw, quick, [], {}, {}
        self._probe: torch.Tensor | None = None

    def time(self, fn, *, cold=False, slow=False) -> float:
        repeat = 3 if self.quick or slow else 20
        return bench(fn, repeat=repeat, warmup=1 if slow else 2, cold=cold, max_seconds=2 if self.quick else 6,
                     min_seconds=0 if self.quick or slow else 0.3)["best"]  # fmt: skip

    def time_cold(self, impls: dict, primes: dict | None = None) -> tuple[dict, float]:
        """Best cold time of each impl, run round-robin, and the DRAM read bandwidth probed in the same rounds.

        This machine's memory speed changes by up to 1.7x within seconds (neighbours): timing the impls one
        after another, against a bandwidth measured once at the start, compares different phases. Here each
        round reads 1 GiB (``torch.sum``) and then runs every impl once after a cache flush. ``primes``
        (name -> fn): the same call on a small weight, run between the flush and the timed call, so that
        the weight comes from DRAM but the interpreter, torch and thread-pool state is in cache, as in a
        decoding loop (a full flush also evicts those: about 0.09 ms more per call, for every impl).
        """
        primes = primes or {}
        if self._probe is None:
            self._probe = torch.ones((1 << 30) // 4, dtype=torch.float32)
        best = {name: float("inf") for name in impls}
        probe = float("inf")
        for fn in impls.values():
            fn()
        rounds = 3 if self.quick else 20
        for _ in range(rounds):
            t0 = time.perf_counter()
            self._probe.sum()
            probe = min(probe, time.perf_counter() - t0)
            for name, fn in impls.items():
                flush_cache()
                if name in primes:
                    primes[name]()
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t0)
        return best, self._probe.numel() * 4 / probe / 1e9

    def add(self, op, shape, impls: dict, nbytes: float, *, cold=False, weight_bytes=None, note="", baselines=(),
            primes: dict | None = None):  # fmt: skip
        """Time each impl (name -> fn or None); the first is ours; ratios = t_baseline / t_ours.

        Cold rows run the impls round-robin with a DRAM probe (``time_cold``); their % of bandwidth is
        against that probe."""
        impls = {name: fn for name, fn in impls.items() if fn is not None}
        bw = self.bw
        if cold:
            times, bw = self.time_cold(impls, primes)
        else:
            times = {}
            for name, fn in impls.items():
                try:
                    times[name] = self.time(fn, slow=name in ("reference", "bitsandbytes"))
                except Exception as exc:  # a baseline that fails is reported, never fatal
                    print(f"  {op} {shape} {name}: failed ({type(exc).__name__}: {exc})", file=sys.stderr)
        ours = next(iter(times))
        for name, t in times.items():
            rb = weight_bytes if weight_bytes is not None else nbytes
            mine = name == ours
            names = (*baselines, "reference", "bitsandbytes")
            ratios = {x: times[x] / t for x in names if x in times} if mine else {}
            extra = f"total {nbytes / t / 1e9:.1f} GB/s" if weight_bytes is not None else ""
            probe = f"DRAM probed in the same rounds {bw:.1f} GB/s" if cold else ""
            note_text = "; ".join(x for x in (note, extra, probe) if x) if mine else ""
            gbps = rb / t / 1e9 if mine else None
            pct = 100 * rb / t / 1e9 / bw if mine else None
            self.rows.append(Row(op, shape + (" cold" if cold else ""), name, t, gbps, pct, ratios, note_text))
        self.times[(op, shape, cold)] = times
        self.row_bw[(op, shape, cold)] = bw
        return times


def _bnb():
    if not bnb_available():
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import bitsandbytes

    return bitsandbytes


def bench_gemv(b: Bench, bnb) -> None:
    for N in (4096, 11008):
        _gemv_shape(b, bnb, N, 4096)


def _bnb_linear4bit(bnb, dense: torch.Tensor):
    if bnb is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = bnb.nn.Linear4bit(dense.shape[1], dense.shape[0], bias=False, compute_dtype=torch.bfloat16,
                                  quant_type="nf4")  # fmt: skip
        layer.weight = bnb.nn.Params4bit(dense.clone(), requires_grad=False, quant_type="nf4")
        return layer.to("cpu").eval()


def _gemv_shape(b: Bench, bnb, N: int, K: int) -> None:
    code, dmap = codes.code_4bit("nf4"), codes.dynamic_map()
    W = torch.randn(N, K)
    # the weight as users get it from the cpu quantizer: large outputs live in huge-page-advised blocks
    # (output_pool.py); "cpu 4 KiB pages" reads a copy from torch's allocator (a checkpoint's tensors)
    packed, absmax = kq.quantize_4bit_cpu(W, 64, "nf4", torch.uint8)
    packed = packed.view(-1)
    packed_4k, absmax_4k = packed.clone(), absmax.clone()
    off = absmax.mean().reshape(1)
    q8, nested = kq.quantize_blockwise_cpu(absmax - off, dmap, 256)
    dense = W.to(torch.bfloat16)
    layer = _bnb_linear4bit(bnb, dense)
    # the memory floor of the cold rows: torch.sum over as many bytes as the call reads (weight + absmax)
    same_bytes = torch.randn((packed.numel() + absmax.numel() * 4) // 4)
    same_bytes_nested = torch.randn((packed.numel() + q8.numel() + nested.numel() * 4) // 4)
    # 64-row copies of everything: the primes of the cold rows (see Bench.time_cold)
    Ns = 64
    packed_s, absmax_s = ref_4b.quantize_4bit(W[:Ns], 64, "nf4", torch.uint8)
    packed_s = packed_s.view(-1)
    q8_s, nested_s = ref_bw.quantize_blockwise(absmax_s - off, dmap, 256)
    dense_s = dense[:Ns].clone()
    layer_s = _bnb_linear4bit(bnb, dense_s)

    def ours(A):
        return kq.gemv_4bit_cpu(A, packed, [N, K], absmax, code, 64)

    def ours_nested(A):
        return kq.gemv_4bit_cpu(A, packed, [N, K], q8, code, 64, nested, dmap, off, 256)

    def primes(A):
        return {
            "cpu": lambda: kq.gemv_4bit_cpu(A, packed_s, [Ns, K], absmax_s, code, 64),
            "cpu 4 KiB pages": lambda: kq.gemv_4bit_cpu(A, packed_s, [Ns, K], absmax_s, code, 64),
            "cpu nested": lambda: kq.gemv_4bit_cpu(A, packed_s, [Ns, K], q8_s, code, 64, nested_s, dmap, off, 256),
            "F.linear bf16": lambda: F.linear(A.to(torch.bfloat16), dense_s),
            "torch.sum same bytes": lambda: same_bytes[: Ns * K // 8].sum(),
            "bitsandbytes": None if layer_s is None else (lambda: layer_s(A)),
        }

    for dtype in (torch.bfloat16, torch.float32):
        A = torch.randn(1, K).to(dtype)
        shape = f"1x{K}·{N}x{K} nf4 bs64 {'bf16' if dtype == torch.bfloat16 else 'fp32'}"
        for cold in (True, False):
            impls = {
                "cpu": lambda A=A: ours(A),
                "cpu 4 KiB pages": None if not cold else (lambda A=A: kq.gemv_4bit_cpu(A, packed_4k, [N, K], absmax_4k,
                                                                                      code, 64)),
                "F.linear bf16": lambda A=A: F.linear(A.to(torch.bfloat16), dense),
                "torch.sum same bytes": None if not cold else same_bytes.sum,
                "bitsandbytes": None if layer is None or dtype != torch.bfloat16 else (lambda A=A: layer(A)),
                "reference": None if cold else (lambda A=A: ref_4b.gemv_4bit(A, packed, [N, K], absmax, code, 64)),
            }
            with torch.no_grad():
                b.add("gemv_4bit", shape, impls, packed.numel() + absmax.numel() * 4, cold=cold,
                      weight_bytes=packed.numel(),
                      baselines=("F.linear bf16", "cpu 4 KiB pages", "torch.sum same bytes"),
                      note="GB/s, %BW: packed weight bytes", primes=primes(A))  # fmt: skip
                if dtype == torch.bfloat16:
                    nested_impls = {"cpu nested": lambda A=A: ours_nested(A),
                                    "torch.sum same bytes": same_bytes_nested.sum if cold else None}
                    b.add("gemv_4bit", shape + " nested", nested_impls,
                          packed.numel() + q8.numel() + nested.numel() * 4, cold=cold, weight_bytes=packed.numel(),
                          note="nested absmax (bitsandbytes' default)", primes=primes(A),
                          baselines=("torch.sum same bytes",))  # fmt: skip


def bench_4bit(b: Bench, bnb) -> None:
    A = torch.randn(4096, 4096).to(torch.bfloat16)
    n = A.numel()
    packed, absmax = kq.quantize_4bit_cpu(A, 64, "nf4", torch.uint8)
    qs = bnbf = None
    if bnb is not None:
        bnbf = bnb.functional
        _, qs = bnbf.quantize_4bit(A, blocksize=64, quant_type="nf4")
    b.add("quantize_4bit", "4096x4096 bf16 nf4 bs64", {
        "cpu": lambda: kq.quantize_4bit_cpu(A, 64, "nf4", torch.uint8),
        "reference": lambda: ref_4b.quantize_4bit(A, 64, "nf4", torch.uint8),
        "bitsandbytes": None if bnb is None else (lambda: bnbf.quantize_4bit(A, blocksize=64, quant_type="nf4")),
    }, n * 2 + n / 2 + absmax.numel() * 4)  # fmt: skip
    b.add("dequantize_4bit", "4096x4096 bf16 nf4 bs64", {
        "cpu": lambda: kq.dequantize_4bit_cpu(packed.view(-1), absmax, 64, "nf4", [4096, 4096], torch.bfloat16),
        "reference": lambda: ref_4b.dequantize_4bit(packed.view(-1), absmax, 64, "nf4", [4096, 4096], torch.bfloat16),
        "bitsandbytes": None if bnb is None else (lambda: bnb.functional.dequantize_4bit(packed, qs)),
    }, n * 2 + n / 2 + absmax.numel() * 4)  # fmt: skip


def bench_blockwise(b: Bench, bnb) -> None:
    A = torch.randn(16 << 20)
    n = A.numel()
    code = codes.dynamic_map()
    q, absmax = kq.quantize_blockwise_cpu(A, code, 256)
    qs = None
    if bnb is not None:
        _, qs = bnb.functional.quantize_blockwise(A, blocksize=256)
    b.add("quantize_blockwise", "16M fp32 bs256", {
        "cpu": lambda: kq.quantize_blockwise_cpu(A, code, 256),
        "reference": lambda: ref_bw.quantize_blockwise(A, code, 256),
        "bitsandbytes": None if bnb is None else (lambda: bnb.functional.quantize_blockwise(A, blocksize=256)),
    }, n * 5 + absmax.numel() * 4)  # fmt: skip
    b.add("dequantize_blockwise", "16M fp32 bs256", {
        "cpu": lambda: kq.dequantize_blockwise_cpu(q, absmax, code, 256, torch.float32),
        "reference": lambda: ref_bw.dequantize_blockwise(q, absmax, code, 256, torch.float32),
        "bitsandbytes": None if bnb is None else (lambda: bnb.functional.dequantize_blockwise(q, qs)),
    }, n * 5 + absmax.numel() * 4)  # fmt: skip


def bench_small_batch(b: Bench, bnb) -> None:
    """``matmul_4bit`` with a few rows (short prompts, a few sequences decoded together): one pass of the batched gemv
    over the packed weight for all rows, against dequantize + ``F.linear`` (what larger batches still do)."""
    import bnb_api
    from bnb_api import functional as BF
    from bnb_api.autograd._functions import _dequant_4bit

    N, K = 11008, 4096
    W = torch.randn(N, K, dtype=torch.bfloat16)
    cases = ((True, torch.bfloat16, (2, 8, 32, 64, 128)), (False, torch.bfloat16, (8, 32)),
             (True, torch.float32, (2, 8, 32)), (True, torch.float16, (8,)))
    for nested, dtype, rows in cases:
        packed, qs = BF.quantize_4bit(W, quant_type="nf4", compress_statistics=nested)
        layer = _bnb_linear4bit(bnb, W) if nested and dtype == torch.bfloat16 else None
        name = {torch.bfloat16: "bf16", torch.float32: "fp32", torch.float16: "fp16"}[dtype]
        for M in rows:
            A = torch.randn(M, K, dtype=dtype)
            with torch.no_grad():
                b.add("matmul_4bit", f"{M}x{K}·{N}x{K} nf4 bs64 {name}{' nested' if nested else ''}", {
                    "cpu": lambda A=A, packed=packed, qs=qs: bnb_api.matmul_4bit(A, packed.t(), qs),
                    "dequantize + F.linear": lambda A=A, packed=packed, qs=qs: F.linear(
                        A, _dequant_4bit(packed, qs, A.dtype)),
                    "bitsandbytes": None if layer is None else (lambda A=A, layer=layer: layer(A)),
                }, packed.numel(), weight_bytes=packed.numel(), baselines=("dequantize + F.linear",),
                      note="batched gemv: the weight read once for all rows (warm); GB/s: packed bytes")  # fmt: skip


def bench_int8(b: Bench, bnb) -> None:
    for M, K, N in ((1, 4096, 4096), (16, 4096, 4096), (64, 4096, 4096), (2048, 2048, 2048)):
        A = torch.randint(-127, 128, (M, K), dtype=torch.int8)
        B = torch.randint(-127, 128, (N, K), dtype=torch.int8)
        t = b.add("int8_linear_matmul", f"{M}x{K}·{N}x{K}", {
            "cpu": lambda A=A, B=B: kq.int8_linear_matmul_cpu(A, B),
            "cpu VNNI kernel": lambda A=A, B=B: kq._int8_mm_native(A, B),
            "torch._int_mm": lambda A=A, B=B: torch._int_mm(A, B.t()),
            "reference": None if M > 64 and b.quick else (lambda A=A, B=B: ref_i8.int8_linear_matmul(A, B)),
        }, M * K + N * K + M * N * 4, baselines=("torch._int_mm", "cpu VNNI kernel"))  # fmt: skip
        b.rows[-len(t)].note = f"{2 * M * N * K / t['cpu'] / 1e9:.0f} GOP/s"
    for thr in (0.0, 6.0):
        A = (torch.randn(4096, 4096) * 2).half()
        b.add("int8_vectorwise_quant", f"4096x4096 fp16 thr={thr:g}", {
            "cpu": lambda A=A, thr=thr: kq.int8_vectorwise_quant_cpu(A, thr),
            "reference": lambda A=A, thr=thr: ref_i8.int8_vectorwise_quant(A, thr),
            "bitsandbytes": None if bnb is None else (lambda A=A, t=thr: bnb.functional.int8_vectorwise_quant(A, t)),
        }, A.numel() * 3 + 4096 * 4)  # fmt: skip
    A = torch.randn(1, 4096).to(torch.bfloat16)
    CB = torch.randint(-127, 128, (11008, 4096), dtype=torch.int8)
    SCB = torch.rand(11008) + 0.5
    A[0, :5] = 10.0
    CB_s, SCB_s = CB[:64].clone(), SCB[:64].clone()
    same_bytes = torch.randn(CB.numel() // 4)  # the memory floor: torch.sum over as many cold bytes
    b.add("int8_mm_outlier", "1x4096·11008x4096 bf16 thr=6", {
        "cpu": lambda: kq.int8_mm_outlier_cpu(A, CB, SCB, 6.0),
        "torch.sum same bytes": same_bytes.sum,
        "reference": lambda: ref_i8.int8_mm_outlier(A, CB, SCB, 6.0),
    }, CB.numel(), cold=True, note="fused batch-1, 5 outlier columns", baselines=("torch.sum same bytes",), primes={
        "cpu": lambda: kq.int8_mm_outlier_cpu(A, CB_s, SCB_s, 6.0),
        "torch.sum same bytes": lambda: same_bytes[: CB_s.numel() // 4].sum(),
        "reference": lambda: ref_i8.int8_mm_outlier(A, CB_s, SCB_s, 6.0)})  # fmt: skip


def targets(b: Bench, bnb_ref: dict) -> list[dict]:
    """The issue-3 targets: measured value, goal, met or not."""
    out = []

    def check(name, value, goal, unit=""):
        out.append({"target": name, "value": round(value, 2), "goal": goal, "met": value >= goal, "unit": unit})

    g = b.times.get(("gemv_4bit", "1x4096·11008x4096 nf4 bs64 bf16", True), {})
    if "cpu" in g:
        packed = 11008 * 4096 / 2
        pct = 100 * packed / g["cpu"] / 1e9 / b.row_bw[("gemv_4bit", "1x4096·11008x4096 nf4 bs64 bf16", True)]
        check("gemv 11008x4096 nf4 cold: % of DRAM read BW (packed weight)", pct, 85, "%")
        check("gemv 11008x4096 nf4 cold: x vs dense bf16 F.linear", g["F.linear bf16"] / g["cpu"], 5, "x")
    # the same with nested absmax, the format of bitsandbytes' 41% (Linear4bit's default compress_statistics)
    key = ("gemv_4bit", "1x4096·11008x4096 nf4 bs64 bf16 nested", True)
    if "cpu nested" in b.times.get(key, {}):
        pct = 100 * 11008 * 4096 / 2 / b.times[key]["cpu nested"] / 1e9 / b.row_bw[key]
        check("gemv 11008x4096 nf4 nested absmax cold: % of DRAM read BW (packed weight)", pct, 85, "%")
    for op, shape, goal in (("quantize_4bit", "4096x4096 bf16 nf4 bs64", 30),
                            ("quantize_blockwise", "16M fp32 bs256", 10),
                            ("dequantize_4bit", "4096x4096 bf16 nf4 bs64", 4),
                            ("dequantize_blockwise", "16M fp32 bs256", 4),
                            ("int8_vectorwise_quant", "4096x4096 fp16 thr=0", 20)):  # fmt: skip
        t = b.times.get((op, shape, False), {})
        if "bitsandbytes" in t:
            check(f"{op} x vs bitsandbytes (this run)", t["bitsandbytes"] / t["cpu"], goal, "x")
        if op in bnb_ref:
            check(f"{op} x vs bitsandbytes (machine.md {bnb_ref[op] * 1e3:g} ms)", bnb_ref[op] / t["cpu"], goal, "x")
    t = b.times.get(("int8_linear_matmul", "2048x2048·2048x2048", False), {})
    if t:
        check("int8 matmul 2048^3: speed vs torch._int_mm (>= 0.9)", t["torch._int_mm"] / t["cpu"], 0.9, "x")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats (smoke run)")
    parser.add_argument("--json", help="write rows and target checks to this file")
    args = parser.parse_args(argv)
    err = kq.load_error()
    if err:
        print(err, file=sys.stderr)
        return 1
    bw = dram_read_bandwidth(1.0, 3 if args.quick else 7)
    print(f"DRAM read bandwidth (this run, best): {bw:.1f} GB/s; threads {torch.get_num_threads()}; "
          f"quant ISA {kq.isa()}; {kq.cpu_features()['cpu_flags']}")  # fmt: skip
    b = Bench(bw, args.quick)
    bnb = _bnb()
    for section in (bench_gemv, bench_small_batch, bench_4bit, bench_blockwise, bench_int8):
        section(b, bnb)
    print_table("cpu quant kernels (ratios: baseline time / cpu time, same run)", b.rows)
    # bitsandbytes 0.50.2 on this machine, from ../shared/machine.md (best of a quiet run)
    bnb_ref = {"quantize_blockwise": 0.081, "dequantize_blockwise": 0.024, "quantize_4bit": 0.355,
               "dequantize_4bit": 0.0102, "int8_vectorwise_quant": 0.108}  # fmt: skip
    checks = targets(b, bnb_ref)
    print("\n### issue 3 targets\n")
    for c in checks:
        print(f"- {'MET' if c['met'] else 'NOT MET'}: {c['target']} = {c['value']}{c['unit']} (goal {c['goal']})")
    if args.json:
        write_json(args.json, "bench_cpu_quant", b.rows, {"dram_read_gbps": bw, "targets": checks,
                                                           "isa": kq.isa(), "features": kq.cpu_features()})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

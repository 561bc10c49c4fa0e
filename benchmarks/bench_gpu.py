"""GPU benchmarks of the cuda backend: ``python benchmarks/bench_gpu.py [--quick] [--json PATH]``.

* gemv_4bit, batch 1, NF4 weight 11008 x 4096 (blocksize 64, plain and nested absmax), fp16 and bf16
  activations, cold L2 (flushed before every run): GB/s of the bytes it must read, as a share of the
  device bandwidth measured in the same run (a device-to-device copy, read + write counted), and the
  speed-up over torch's dense ``F.linear`` on the fp16/bf16 weight (also cold).
* 8-bit AdamW step (blockwise states, blocksize 256) on 64M float32 parameters: GB/s of the bytes it
  must move (p read + write, g read, two uint8 states read + write: 16 B per parameter) and the speed-up
  over ``torch.optim.AdamW(fused=True)`` (32-bit states, 28 B per parameter).

Targets (issue 6): gemv_4bit >= 60% and the 8-bit AdamW step >= 50% of the measured bandwidth.
The L2 flush reads a 512 MiB buffer (clean lines; see ``evict_l2``).
Where bitsandbytes is importable, its gemv_4bit and 8-bit AdamW run in the same process for a ratio.
Times are GPU times: CUDA events around the op, with the GPU held busy (``torch.cuda._sleep``) while
the host enqueues the flush, the events and the op, so Python's launch overhead is not counted; best
of the runs. The gemv rows also give the eager time per call (back-to-back calls, host included),
which is what an un-graphed batch-1 decode loop pays. Exits 0 with a notice when torch sees no CUDA
device.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import Row, print_table, write_json  # noqa: E402

N, K = 11008, 4096
OPT_PARAMS = 64 << 20
GEMV_TARGET, ADAM_TARGET = 0.60, 0.50


DEVICE = "cuda"
SLEEP_CYCLES = 1_000_000  # about 0.5 ms of GPU clock: longer than the host needs to enqueue one timed run


def evict_l2(flush: torch.Tensor) -> None:
    """Evict the GPU's L2 by READING ``flush`` (much larger than L2), so L2 ends up holding clean lines, as in
    a decode loop where the previous layers' weights were read. (A write flush would leave L2 dirty: the op
    timed next would pay for writing those lines back, up to L2's size of extra DRAM traffic.)"""
    torch.sum(flush, dtype=torch.float32)


def cuda_time(fn, repeat: int, flush: torch.Tensor | None = None) -> float:
    """Best seconds of ``fn`` over ``repeat`` runs (CUDA events; L2 flushed before each if ``flush``)."""
    fn()
    if DEVICE != "cuda":  # --smoke on cpu: wall clock
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return best
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(SLEEP_CYCLES)  # the host gets ahead: the events then time the GPU work alone
        if flush is not None:
            evict_l2(flush)
        start.record()
        fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / 1e3)
    return best


def eager_time(fn, calls: int = 200) -> float:
    """Seconds per call of ``fn`` called back to back (host overhead included), synchronized at the end."""
    fn()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / calls


def copy_bandwidth(repeat: int) -> float:
    """Device memory bandwidth in GB/s: a 1 GiB device-to-device copy, read + write bytes counted."""
    src = torch.empty(1 << (28 if DEVICE == "cuda" else 24), dtype=torch.float32, device=DEVICE).fill_(1.0)
    dst = torch.empty_like(src)
    t = cuda_time(lambda: dst.copy_(src), repeat)
    return 2 * src.numel() * 4 / t / 1e9


def selected(op: str, call: dict) -> str:
    """The backend that serves ``op(**call)`` on cuda (to flag a silent fallback in the table)."""
    from bnb_api.core import registry

    return registry.select(op, DEVICE, call).backend


def bench_gemv(bw: float, repeat: int, flush: torch.Tensor) -> list[Row]:
    from bnb_api.core import codes

    rows = []
    torch.manual_seed(0)
    W = torch.randn(N, K, device=DEVICE, dtype=torch.float16)
    for dtype in (torch.float16, torch.bfloat16):
        Wd = W.to(dtype)
        A = torch.randn(1, K, device=DEVICE, dtype=dtype)
        dense = cuda_time(lambda: F.linear(A, Wd), repeat, flush)  # noqa: B023
        for nested in (False, True):
            packed, absmax = torch.ops.bnb_api.quantize_4bit(Wd, 64, "nf4", torch.uint8)
            code = codes.code_4bit("nf4", DEVICE)
            extra: tuple = ()
            if nested:
                offset = absmax.mean()
                q, nabs = torch.ops.bnb_api.quantize_blockwise(absmax - offset, codes.dynamic_map(device=DEVICE), 256)
                absmax, extra = q, (nabs, codes.dynamic_map(device=DEVICE), offset.reshape(1), 256)
            args = (A, packed, [N, K], absmax, code, 64, *extra)
            t = cuda_time(lambda: torch.ops.bnb_api.gemv_4bit(*args), repeat, flush)  # noqa: B023
            eager = eager_time(lambda: torch.ops.bnb_api.gemv_4bit(*args))  # noqa: B023
            ratios = {"dense F.linear": dense / t}
            theirs = bnb_gemv(Wd, A, nested)
            if theirs is not None:
                ratios["bitsandbytes"] = cuda_time(theirs, repeat, flush) / t
            nbytes = packed.numel() + absmax.numel() * absmax.element_size() + A.numel() * A.element_size() + N * 2
            gbps = nbytes / t / 1e9
            impl = selected("gemv_4bit", dict(A=A, B=packed.view(-1), shapeB=[N, K], absmax=absmax, code=code,
                                              blocksize=64))  # fmt: skip
            rows.append(Row("gemv_4bit", f"1x{K}·{N}x{K} nf4{' nested' if nested else ''} {str(dtype)[6:]}", impl, t,
                            gbps, 100 * gbps / bw, ratios,
                            "target >= 60% BW: " + ("met" if gbps >= GEMV_TARGET * bw else "NOT met") +
                            f"; eager {eager * 1e6:.0f} us/call"))  # fmt: skip
        rows.append(Row("F.linear (dense)", f"1x{K}·{N}x{K} {str(dtype)[6:]}", "torch", dense,
                        N * K * 2 / dense / 1e9, 100 * N * K * 2 / dense / 1e9 / bw))  # fmt: skip
    return rows


def _bitsandbytes():
    """bitsandbytes' functional module when it is importable and runs on DEVICE (side-by-side rows only)."""
    if DEVICE != "cuda":
        return None
    try:
        import bitsandbytes.functional as bnb_f
    except Exception:  # not installed, or no binary for this CUDA: the rows are left out
        return None
    return bnb_f


def bnb_gemv(W: torch.Tensor, A: torch.Tensor, nested: bool):
    """A callable running bitsandbytes' batch-1 gemv_4bit (NF4, blocksize 64) on W, or None."""
    bnb_f = _bitsandbytes()
    if bnb_f is None:
        return None
    try:
        packed, state = bnb_f.quantize_4bit(W, blocksize=64, quant_type="nf4", compress_statistics=nested)

        def run():
            return bnb_f.gemv_4bit(A, packed.t(), state=state)

        run()
        return run
    except Exception as exc:  # a bitsandbytes build that cannot run here: no side-by-side row
        print(f"bench_gpu: bitsandbytes gemv_4bit unavailable: {exc}")
        return None


def bnb_adamw8(n: int):
    """A callable running bitsandbytes' 8-bit blockwise AdamW step on n float32 parameters, or None."""
    bnb_f = _bitsandbytes()
    if bnb_f is None:
        return None
    torch.manual_seed(0)
    p, g = torch.randn(n, device=DEVICE) * 0.02, torch.randn(n, device=DEVICE) * 1e-3
    s1, s2 = torch.zeros(n, dtype=torch.uint8, device=DEVICE), torch.zeros(n, dtype=torch.uint8, device=DEVICE)
    a1, a2 = torch.zeros(-(-n // 256), device=DEVICE), torch.zeros(-(-n // 256), device=DEVICE)
    q1 = bnb_f.create_dynamic_map(signed=True).to(DEVICE)
    q2 = bnb_f.create_dynamic_map(signed=False).to(DEVICE)
    step = [0]

    def run():
        step[0] += 1
        bnb_f.optimizer_update_8bit_blockwise("adam", g, p, s1, s2, 0.9, 0.999, 0.0, 0.0, 1e-8, step[0], 1e-4, q1, q2,
                                              a1, a2, weight_decay=0.01)  # fmt: skip

    try:
        run()
    except Exception as exc:
        print(f"bench_gpu: bitsandbytes 8-bit optimizer unavailable: {exc}")
        return None
    return run


def adamw8_stepper(n: int):
    """(step, call): ``step()`` runs one 8-bit AdamW step (blocksize 256) on ``n`` float32 parameters held on
    DEVICE; ``call`` holds its arguments by schema name (for ``selected``)."""
    from bnb_api.core import codes

    torch.manual_seed(0)
    nb = -(-n // 256)
    call = dict(optimizer="adamw", p=torch.randn(n, device=DEVICE) * 0.02, g=torch.randn(n, device=DEVICE) * 1e-3,
                state1=torch.full((n,), 127, dtype=torch.uint8, device=DEVICE),
                state2=torch.zeros(n, dtype=torch.uint8, device=DEVICE), absmax1=torch.zeros(nb, device=DEVICE),
                absmax2=torch.zeros(nb, device=DEVICE), qmap1=codes.dynamic_map(True, DEVICE),
                qmap2=codes.dynamic_map(False, DEVICE), blocksize=256)  # fmt: skip
    step = [0]

    def run():
        step[0] += 1
        c = call
        torch.ops.bnb_api.optimizer_step(c["optimizer"], c["p"], c["g"], c["state1"], c["state2"], c["absmax1"],
                                         c["absmax2"], c["qmap1"], c["qmap2"], 1e-4, 0.9, 0.999, 0.0, 0.0, 1e-8, 0.01,
                                         step[0], 1.0, 0.0, 256)  # fmt: skip

    return run, call


def adamw32_stepper(n: int):
    """(step, call): ``step()`` runs one 32-bit AdamW step of the op (float32 states) on ``n`` float32 parameters;
    ``call`` holds its arguments by schema name (for ``selected``)."""
    torch.manual_seed(0)
    call = dict(optimizer="adamw", p=torch.randn(n, device=DEVICE) * 0.02, g=torch.randn(n, device=DEVICE) * 1e-3,
                state1=torch.zeros(n, device=DEVICE), state2=torch.zeros(n, device=DEVICE), absmax1=None,
                absmax2=None, qmap1=None, qmap2=None, blocksize=256)  # fmt: skip
    step = [0]

    def run():
        step[0] += 1
        c = call
        torch.ops.bnb_api.optimizer_step("adamw", c["p"], c["g"], c["state1"], c["state2"], None, None, None, None,
                                         1e-4, 0.9, 0.999, 0.0, 0.0, 1e-8, 0.01, step[0], 1.0, 0.0, 256)  # fmt: skip

    return run, call


def bench_adamw(bw: float, repeat: int, n: int) -> list[Row]:
    ours, call = adamw8_stepper(n)
    t = cuda_time(ours, repeat)
    impl = selected("optimizer_step", call)
    del ours, call  # the next steppers need the memory
    ours32, call32 = adamw32_stepper(n)
    t32 = cuda_time(ours32, repeat)
    impl32 = selected("optimizer_step", call32)
    del ours32, call32
    pt = torch.nn.Parameter(torch.randn(n, device=DEVICE) * 0.02)
    pt.grad = torch.randn(n, device=DEVICE) * 1e-3
    opt = torch.optim.AdamW([pt], lr=1e-4, fused=True)
    t_torch = cuda_time(opt.step, repeat)
    gbps, gbps_torch = 16 * n / t / 1e9, 28 * n / t_torch / 1e9
    ratios = {"torch AdamW fused": t_torch / t}
    del opt, pt
    theirs = bnb_adamw8(n)
    if theirs is not None:
        ratios["bitsandbytes"] = cuda_time(theirs, repeat) / t
    return [
        Row("optimizer_step adamw 8-bit", f"{n >> 20}M fp32 params", impl, t, gbps, 100 * gbps / bw, ratios,
            "target >= 50% BW: " + ("met" if gbps >= ADAM_TARGET * bw else "NOT met")),
        Row("optimizer_step adamw 32-bit", f"{n >> 20}M fp32 params", impl32, t32, 28 * n / t32 / 1e9,
            100 * 28 * n / t32 / 1e9 / bw, {"torch AdamW fused": t_torch / t32}),
        Row("torch.optim.AdamW(fused) 32-bit", f"{n >> 20}M fp32 params", "torch", t_torch, gbps_torch,
            100 * gbps_torch / bw),
    ]  # fmt: skip


def bench_ops(bw: float, repeat: int, flush: torch.Tensor | None) -> list[Row]:
    """Quantize / dequantize / int8 ops at the CPU benchmark's shapes: GB/s of the bytes each moves (cold L2)."""
    from bnb_api.core import codes

    torch.manual_seed(0)
    rows = []
    n16m = 1 << 24 if DEVICE == "cuda" else 1 << 20
    side = 4096 if DEVICE == "cuda" else 256
    W = torch.randn(side, side, device=DEVICE, dtype=torch.float16)
    X = torch.randn(n16m, device=DEVICE)
    dyn = codes.dynamic_map(device=DEVICE)
    packed, absmax = torch.ops.bnb_api.quantize_4bit(W, 64, "nf4", torch.uint8)
    q8, a8 = torch.ops.bnb_api.quantize_blockwise(X, dyn, 4096)
    cases = [  # (op, shape, arguments by schema name, bytes moved)
        ("quantize_4bit", f"{side}x{side} fp16 nf4 bs64",
         dict(A=W, blocksize=64, quant_type="nf4", quant_storage=torch.uint8), W.numel() * 2.5 + absmax.numel() * 4),
        ("dequantize_4bit", f"{side}x{side} nf4 bs64 -> fp16",
         dict(A=packed, absmax=absmax, blocksize=64, quant_type="nf4", shape=[side, side], dtype=torch.float16),
         W.numel() * 2.5 + absmax.numel() * 4),
        ("quantize_blockwise", f"{n16m >> 20}M fp32 bs4096", dict(A=X, code=dyn, blocksize=4096), X.numel() * 5),
        ("dequantize_blockwise", f"{n16m >> 20}M -> fp32 bs4096",
         dict(A=q8, absmax=a8, code=dyn, blocksize=4096, dtype=torch.float32), X.numel() * 5),
        ("int8_vectorwise_quant", f"{side}x{side} fp16", dict(A=W, threshold=0.0), W.numel() * 3),
    ]  # fmt: skip
    for op, shape, call, nbytes in cases:
        t = cuda_time(lambda op=op, call=call: getattr(torch.ops.bnb_api, op)(*call.values()), repeat, flush)
        gbps = nbytes / t / 1e9
        rows.append(Row(op, shape, selected(op, call), t, gbps, 100 * gbps / bw))
    m = 2048 if DEVICE == "cuda" else 64
    A8 = torch.randint(-127, 128, (m, m), dtype=torch.int8, device=DEVICE)
    B8 = torch.randint(-127, 128, (m, m), dtype=torch.int8, device=DEVICE)
    t = cuda_time(lambda: torch.ops.bnb_api.int8_linear_matmul(A8, B8), repeat)
    ratios = {}
    if DEVICE == "cuda":
        ratios["torch._int_mm"] = cuda_time(lambda: torch._int_mm(A8, B8.t()), repeat) / t
    impl = selected("int8_linear_matmul", dict(A=A8, B=B8))
    tops = 2 * m**3 / t / 1e12
    rows.append(Row("int8_linear_matmul", f"{m}x{m}x{m}", impl, t, None, None, ratios, f"{tops:.0f} TOP/s"))
    return rows


def run_once() -> int:
    """One call of each profiled kernel, nothing timed (for ``ncu``): gemv_4bit 11008x4096 NF4 with fp16 and
    bf16 activations, then one 8-bit AdamW step on OPT_PARAMS parameters. Returns the kernel launches made."""
    from bnb_api.core import codes

    torch.manual_seed(0)
    W = torch.randn(N, K, device=DEVICE, dtype=torch.float16)
    code = codes.code_4bit("nf4", DEVICE)
    for dtype in (torch.float16, torch.bfloat16):
        packed, absmax = torch.ops.bnb_api.quantize_4bit(W.to(dtype), 64, "nf4", torch.uint8)
        A = torch.randn(1, K, device=DEVICE, dtype=dtype)
        torch.ops.bnb_api.gemv_4bit(A, packed, [N, K], absmax, code, 64)
    adamw8_stepper(OPT_PARAMS)[0]()
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    return 3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", help="write the rows as JSON to this file")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the cpu: checks the script only")
    parser.add_argument("--once", action="store_true", help="one call of each profiled kernel, no timing (ncu)")
    args = parser.parse_args(argv)
    global DEVICE, N, K, OPT_PARAMS
    if args.smoke:
        DEVICE, N, K, OPT_PARAMS = "cpu", 256, 512, 1 << 20
    elif not torch.cuda.is_available():
        print("bench_gpu: torch sees no CUDA device; nothing to measure")
        return 0
    import bnb_api  # noqa: F401  (registers the backends)

    if args.once:
        print(f"bench_gpu --once: {run_once()} kernel launches on {DEVICE}")
        return 0
    repeat = 5 if args.quick else 20
    flush = torch.empty(512 << 20 >> 2, dtype=torch.float32, device=DEVICE) if DEVICE == "cuda" else None  # > L2
    bw = copy_bandwidth(repeat)
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (smoke run)"
    print(f"device: {device}; measured copy bandwidth {bw:.0f} GB/s")
    rows = bench_gemv(bw, repeat, flush) + bench_adamw(bw, repeat, OPT_PARAMS) + bench_ops(bw, repeat, flush)
    print_table(f"cuda backend on {device} (copy bandwidth {bw:.0f} GB/s)", rows)
    if args.json:
        write_json(args.json, "bench_gpu", rows, {"device": device, "copy_bandwidth_gbps": bw})
    return 0


if __name__ == "__main__":
    sys.exit(main())

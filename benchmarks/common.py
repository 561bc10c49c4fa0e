"""Shared benchmark helpers: timing, cache flushing, memory bandwidth of this machine, tables and JSON.

Every benchmark reports ratios against baselines measured in the same run (the machine is noisy).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

_FLUSH_BYTES = 512 << 20  # > the 260 MiB L3 of the development machine
_flush_buffer: torch.Tensor | None = None


def flush_cache() -> None:
    """Evict the CPU caches by reading a buffer larger than the last-level cache.

    Reading, not writing: the caches are left holding clean lines, as in a decoding loop (the layers before
    read their weights). Writing the buffer left the L3 full of dirty lines whose write-back then shared the
    memory bus with the timed call's reads, a cost the read-only DRAM probe never pays: side by side, a cold
    11008 x 4096 NF4 gemv took 0.370 ms after a write flush and 0.351 ms after a read flush, ``torch.sum`` over
    the same bytes 0.395 and 0.361 ms, dense bf16 ``F.linear`` 3.83 and 3.68 ms."""
    global _flush_buffer
    if _flush_buffer is None:
        _flush_buffer = torch.ones(_FLUSH_BYTES // 4, dtype=torch.float32)
    _flush_buffer.sum()


def bench(fn: Callable[[], object], *, repeat: int = 10, warmup: int = 2, cold: bool = False,
          max_seconds: float = 5.0, min_seconds: float = 0.0) -> dict[str, float]:  # fmt: skip
    """Time ``fn``: best and median seconds over ``repeat`` runs (``cold`` flushes caches before each).

    ``min_seconds``: keep repeating (up to 50x ``repeat``) until the runs span at least this long, so that
    a burst of a noisy neighbour cannot cover every run of a fast call."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while True:
        if cold:
            flush_cache()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if elapsed > max_seconds and len(times) >= 3:
            break
        if len(times) >= repeat and (elapsed >= min_seconds or len(times) >= 50 * repeat):
            break
    return {"best": min(times), "median": statistics.median(times), "runs": len(times)}


def dram_read_bandwidth(gib: float = 1.0, repeat: int = 5) -> float:
    """Best DRAM read bandwidth in GB/s measured now: ``torch.sum`` over ``gib`` GiB of float32."""
    x = torch.ones(int(gib * (1 << 30)) // 4, dtype=torch.float32)
    t = bench(lambda: x.sum(), repeat=repeat, warmup=1)["best"]
    return x.numel() * 4 / t / 1e9


def bnb_available() -> bool:
    """True when bitsandbytes is importable (for side-by-side rows; never a dependency)."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception:
        return False
    return True


@dataclass
class Row:
    """One benchmark line: an op on a shape with an implementation, its time and derived figures."""

    op: str
    shape: str
    impl: str
    seconds: float
    gbps: float | None = None
    pct_bw: float | None = None
    ratios: dict[str, float] = field(default_factory=dict)
    note: str = ""


def print_table(title: str, rows: list[Row]) -> None:
    """Print rows as a Markdown table (time in ms, GB/s, % of DRAM read bandwidth, speed-up ratios)."""
    keys = sorted({k for r in rows for k in r.ratios})
    head = ["op", "shape", "impl", "ms", "GB/s", "% BW", *[f"x vs {k}" for k in keys], "note"]
    print(f"\n### {title}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        cells = [r.op, r.shape, r.impl, f"{r.seconds * 1e3:.3f}",
                 "" if r.gbps is None else f"{r.gbps:.1f}", "" if r.pct_bw is None else f"{r.pct_bw:.0f}%",
                 *["" if k not in r.ratios else f"{r.ratios[k]:.2f}" for k in keys], r.note]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


def write_json(path: str, name: str, rows: list[Row], extra: dict | None = None) -> None:
    """Write rows plus machine information as JSON to ``path``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    payload = {
        "benchmark": name,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },  # fmt: skip
        "rows": [asdict(r) for r in rows],
        **(extra or {}),
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)

"""Run every benchmark of this folder and collect their JSON: ``python benchmarks/run.py [--quick] [--json F]``.

Each ``bench_*.py`` prints its own Markdown tables (time, GB/s, % of memory bandwidth measured in the same
run, ratios against baselines measured in the same run) and accepts ``--quick`` and ``--json PATH``.
GPU benchmarks run only where torch sees a GPU.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def scripts() -> list[str]:
    """The benchmark scripts that apply to this machine."""
    found = sorted(glob.glob(os.path.join(HERE, "bench_*.py")))
    if not torch.cuda.is_available():
        found = [s for s in found if "gpu" not in os.path.basename(s)]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small repeat counts (smoke run)")
    parser.add_argument("--json", help="write all results to this file")
    args = parser.parse_args(argv)
    results, failed = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        for script in scripts():
            name = os.path.basename(script)[:-3]
            out = os.path.join(tmp, name + ".json")
            cmd = [sys.executable, script, "--json", out] + (["--quick"] if args.quick else [])
            print(f"\n## {name}\n", flush=True)
            if subprocess.run(cmd).returncode != 0:
                failed.append(name)
                continue
            if os.path.exists(out):
                with open(out) as f:
                    results[name] = json.load(f)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Reports of a conformance run: JSON (machine-readable) and Markdown (one table per op).

Each row: the cell (op x dtype x format x blocksize), pass / fail / unsupported / known failure, the
examples checked, the max and mean error against the reference ("codes" = code-index steps for
bit-exact outputs, "rel" = absolute error over the output's largest magnitude), and the throughput of
the kernel under test and of the reference on the same device, in GB/s of tensor bytes read and written.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

import torch

from bnb_api.conformance.runner import FAILING, SuiteResult

ICONS = {"pass": "pass", "fail": "**FAIL**", "error": "**ERROR**", "unsupported": "unsupported",
         "known failure": "known failure", "known failure (passed)": "known failure (passed)"}  # fmt: skip


COLUMNS = (
    "dtype",
    "format",
    "blocksize",
    "status",
    "examples",
    "max err",
    "mean err",
    "unit",
    "GB/s",
    "ref GB/s",
    "x ref",
    "note",
)
HEADER = "| " + " | ".join(COLUMNS) + " |"


def environment() -> dict:
    """Versions and machine of the run."""
    import bnb_api

    try:
        import hypothesis

        hyp = hypothesis.__version__
    except Exception:  # pragma: no cover - hypothesis is required to run at all
        hyp = "?"
    return {
        "bnb_api": bnb_api.__version__, "torch": torch.__version__, "hypothesis": hyp,
        "python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
        "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }  # fmt: skip


def to_json(result: SuiteResult, known_source: str = "") -> dict:
    """The whole run as a JSON-serialisable dict."""
    return {
        "backend": result.backend, "device": result.device, "mode": result.mode, "seed": result.seed,
        "ok": result.ok, "verdict": result.verdict(), "seconds": round(result.seconds, 3),
        "known_failures_file": known_source, "warnings": result.warnings, "environment": environment(),
        "results": [r.to_dict() for r in result.results],
    }  # fmt: skip


def _num(x, fmt: str = "{:.3g}") -> str:
    return "-" if x is None else fmt.format(x)


def to_markdown(result: SuiteResult, known_source: str = "") -> str:
    """A readable page: verdict, environment, one table per op, then every failure message in full."""
    env = environment()
    lines = [
        f"# bnb_api conformance: backend `{result.backend}` on `{result.device}`", "",
        f"**{result.verdict().splitlines()[0]}**", "",
        f"mode {result.mode}, seed {result.seed}; bnb_api {env['bnb_api']}, torch {env['torch']}, "
        f"hypothesis {env['hypothesis']}, python {env['python']}, {env['platform']}, {env['threads']} threads, "
        f"{env['date']}.", "",
        "Errors are against the reference backend: *codes* = largest / mean code-index step (0 means "
        "bit-exact), *rel* = absolute error over the largest magnitude of the output. "
        "GB/s = tensor bytes read + written per second; "
        "x ref = speed relative to the reference backend on the same device.",
    ]  # fmt: skip
    if known_source:
        lines += ["", f"Known failures file: `{known_source}`"]
    for w in result.warnings:
        lines += ["", f"> warning: {w}"]
    by_op: dict[str, list] = {}
    for r in result.results:
        by_op.setdefault(r.op, []).append(r)
    for op, rows in by_op.items():
        lines += ["", f"## {op}", "", HEADER, "|---" * len(COLUMNS) + "|"]
        for r in rows:
            speed = r.gbps / r.ref_gbps if r.gbps and r.ref_gbps else None
            note = r.message if r.status not in FAILING else "see below"
            note = note.replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| {r.dtype} | {r.fmt or '-'} | {r.blocksize or '-'} | {ICONS.get(r.status, r.status)} | "
                f"{r.examples} | {_num(r.max_err)} | {_num(r.mean_err)} | {r.err_unit or '-'} | "
                f"{_num(r.gbps, '{:.2f}')} | {_num(r.ref_gbps, '{:.2f}')} | {_num(speed, '{:.2f}')} | {note[:160]} |"
            )
    failed = result.failed
    if failed:
        lines += ["", "## Failures", ""]
        for r in failed:
            lines += [f"### {r.id}", "", "```", r.message, "```", ""]
    return "\n".join(lines) + "\n"


def write(result: SuiteResult, directory: str, known_source: str = "") -> tuple[str, str]:
    """Write ``conformance.json`` and ``conformance.md`` into ``directory``; returns both paths."""
    os.makedirs(directory, exist_ok=True)
    jpath = os.path.join(directory, "conformance.json")
    mpath = os.path.join(directory, "conformance.md")
    with open(jpath, "w", encoding="utf-8") as fh:
        json.dump(to_json(result, known_source), fh, indent=1)
    with open(mpath, "w", encoding="utf-8") as fh:
        fh.write(to_markdown(result, known_source))
    return jpath, mpath

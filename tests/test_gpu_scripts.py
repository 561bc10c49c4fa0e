"""The GPU check's Python parts run here on the cpu, so a broken script is caught before a GPU session.

``ci/gpu_e2e.py --device cpu`` compares the cpu backend with the reference one through the user API;
``benchmarks/bench_gpu.py --smoke`` runs every benchmark row on tiny cpu shapes.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(relpath: str, name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_e2e_runs_on_cpu_and_passes(capsys):
    e2e = _load("ci/gpu_e2e.py", "gpu_e2e_under_test")
    assert e2e.main(["--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert "Linear4bit nf4 nested bfloat16 forward batch 1" in out
    assert "AdamW8bit 8-bit states" in out


def test_gpu_e2e_reports_a_mismatch(capsys, monkeypatch):
    """A check that sees a difference fails the run (the script cannot pass vacuously)."""
    e2e = _load("ci/gpu_e2e.py", "gpu_e2e_mismatch")
    real = e2e.rel_err
    monkeypatch.setattr(e2e, "rel_err", lambda got, want, scale: real(got, want, scale) + 1.0)
    assert e2e.main(["--device", "cpu"]) == 1
    assert "FAIL Linear4bit" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_bench_gpu_smoke_writes_every_row(tmp_path):
    bench = _load("benchmarks/bench_gpu.py", "bench_gpu_under_test")
    path = tmp_path / "bench.json"
    assert bench.main(["--smoke", "--quick", "--json", str(path)]) == 0
    ops = [row["op"] for row in json.loads(path.read_text())["rows"]]
    for op in ("gemv_4bit", "optimizer_step adamw 8-bit", "quantize_4bit", "dequantize_4bit", "quantize_blockwise",
               "dequantize_blockwise", "int8_vectorwise_quant", "int8_linear_matmul"):  # fmt: skip
        assert op in ops


def test_bench_gpu_once_runs_each_profiled_kernel(capsys):
    """``--once`` (what ci/gpu_check.sh hands to ncu) calls gemv twice and the 8-bit optimizer once."""
    bench = _load("benchmarks/bench_gpu.py", "bench_gpu_once_under_test")
    assert bench.main(["--smoke", "--once"]) == 0
    assert "3 kernel launches" in capsys.readouterr().out

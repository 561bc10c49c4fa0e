"""The conformance suite itself: it passes the reference, catches broken backends (naming the op and the
case), reports unsupported combinations as unsupported, applies known failures, and its CLI, reports and
pytest plugin work from the installed package."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("hypothesis")

from bnb_api.conformance import calls, tolerances  # noqa: E402
from bnb_api.conformance.__main__ import main as cli_main  # noqa: E402
from bnb_api.conformance.cases import Cell, all_cases  # noqa: E402
from bnb_api.conformance.known import KnownFailures  # noqa: E402
from bnb_api.conformance.report import to_markdown  # noqa: E402
from bnb_api.conformance.runner import FAIL, PASS, UNSUPPORTED, XFAIL, XPASS, Runner, SuiteError  # noqa: E402
from bnb_api.core import registry  # noqa: E402
from bnb_api.core.ops import OP_NAMES  # noqa: E402
from bnb_api.core.reference import KERNELS as REF  # noqa: E402
from bnb_api.core.reference import blockwise, fourbit  # noqa: E402

CASES = all_cases()


def cell(op: str, dtype: str, fmt: str = "", bs: int | None = None) -> tuple:
    c = Cell(op, dtype, fmt, bs)
    assert c in CASES[op].cells(quick=False), f"{c.id} is not a cell of the suite"
    return CASES[op], c


@pytest.fixture
def backend(request):
    """Register a throw-away cpu backend whose kernels are given as {op: fn or (fn, supports)}."""
    names = []

    def make(name: str, kernels: dict) -> str:
        registry.register_backend(name, ("cpu",), description="test backend")
        for op, spec in kernels.items():
            fn, supports = spec if isinstance(spec, tuple) else (spec, None)
            registry.register_kernel(op, name, "cpu", fn, priority=50, kind="vectorized", supports=supports)
        names.append(name)
        return name

    yield make
    for name in names:
        registry.unregister_backend(name)


def run_one(name: str, op: str, dtype: str, fmt: str = "", bs: int | None = None, **kw):
    case, c = cell(op, dtype, fmt, bs)
    return Runner(name, "cpu", quick=True, bench=False, **kw).run_cell(case, c)


# --- the suite is wired to the contract ---------------------------------------------------------


def test_every_op_has_a_case_and_every_float_cell_a_tolerance():
    assert list(CASES) == list(OP_NAMES)
    for op, case in CASES.items():
        for c in case.cells(quick=False):
            if op in ("dequantize_blockwise", "dequantize_4bit", "gemv_4bit", "int8_mm_dequant", "int8_mm_outlier"):
                assert tolerances.tolerance(op, c.dtype, c.fmt).rtol > 0
    for op in ("optimizer_step", "optimizer_step_multi"):
        for fmt in ("state32", "state8"):
            tolerances.tolerance(op, "float32", fmt)
    with pytest.raises(KeyError, match="no tolerance"):
        tolerances.tolerance("quantize_4bit", "float32")


def test_checked_call_keys_follow_each_op_schema():
    for op in OP_NAMES:
        schema = [a.name for a in getattr(torch.ops.bnb_api, op).default._schema.arguments]
        case = CASES[op]
        c = case.cells(quick=True)[0]
        call = calls.checked_call(op, *case.build(case.edges(c)[0], c, torch.device("cpu")))
        assert list(call) == schema, op
        # the reference kernel takes exactly the call, by position
        assert list(inspect.signature(REF[op]).parameters) == schema, op


def test_checked_call_runs_the_op_checks():
    with pytest.raises(ValueError, match="blocksize=48"):
        calls.checked_call("quantize_4bit", torch.randn(64), 48, "nf4", torch.uint8)
    with pytest.raises(TypeError, match="A.dtype=int32"):
        calls.checked_call("quantize_blockwise", torch.zeros(4, dtype=torch.int32), torch.zeros(256), 64)


# --- the reference passes ------------------------------------------------------------------------


def test_reference_passes_a_quick_run_of_every_op():
    runner = Runner("reference", "cpu", quick=True, bench=True)
    runner.limits = type(runner.limits)(max_numel=3000, max_examples=2, bench_numel=4096, bench_repeat=1)
    for op, case in CASES.items():
        c = case.cells(quick=True)[-1]
        res = runner.run_cell(case, c)
        assert res.status == PASS, res.message
        assert res.examples >= len(case.edges(c)), (op, res.examples)
        assert res.max_err == 0.0 and res.gbps and res.ref_gbps
    assert runner.run_opcheck(CASES["quantize_4bit"]).status == PASS


# --- broken backends are caught, naming op and case ----------------------------------------------


def quantize_4bit_ties_up(A, blocksize, quant_type, quant_storage):
    """Wrong: a value exactly between two codes takes the upper code (the contract says lower)."""
    n = A.numel()
    scaled, absmax = blockwise.scale_blocks(A.reshape(-1), blocksize)
    values, codes = fourbit.sorted_code_4bit(quant_type, "cpu")
    mid = (values[:-1] + values[1:]) * 0.5
    q = codes[torch.bucketize(scaled.reshape(-1)[: n + n % 2].contiguous(), mid, right=True)]
    return fourbit.pack_nibbles(q).view(quant_storage).reshape(-1, 1), absmax


def quantize_4bit_low_nibble_first(A, blocksize, quant_type, quant_storage):
    """Wrong: element 2i in the low nibble."""
    packed, absmax = REF["quantize_4bit"](A, blocksize, quant_type, torch.uint8)
    p = packed.view(torch.uint8)
    return ((p << 4) | (p >> 4)).view(quant_storage).reshape(-1, 1), absmax


def quantize_blockwise_bad_tail(A, code, blocksize):
    """Wrong: the partial last block is scaled by the previous block's absmax."""
    codes, absmax = REF["quantize_blockwise"](A, code, blocksize)
    n = A.numel()
    if n % blocksize and absmax.numel() > 1:
        absmax = absmax.clone()
        absmax[-1] = absmax[-2]
    return codes, absmax


def dequantize_4bit_in_bf16(A, absmax, blocksize, quant_type, shape, dtype):
    """Wrong: computes in bfloat16, so float32 outputs lose precision."""
    out = REF["dequantize_4bit"](A, absmax, blocksize, quant_type, shape, torch.bfloat16)
    return out.to(dtype)


def gemv_4bit_ignores_offset(A, B, shapeB, absmax, code, blocksize, nabs=None, ncode=None, noff=None, nbs=256):
    """Wrong: forgets the nested offset."""
    if noff is not None:
        noff = torch.zeros_like(noff)
    return REF["gemv_4bit"](A, B, shapeB, absmax, code, blocksize, nabs, ncode, noff, nbs)


def int8_quant_truncates(A, threshold=0.0):
    """Wrong: truncates x * 127 / absmax instead of rounding to nearest."""
    codes, absmax, cols = REF["int8_vectorwise_quant"](A, threshold)
    K = A.shape[-1]
    x = A.reshape(-1, K).float()
    scale = torch.where(absmax > 0, 127.0 / absmax, torch.zeros_like(absmax))
    t = torch.trunc(x * scale[:, None]).clamp(-127, 127).to(torch.int8)
    if cols.numel():
        t[:, cols] = 0
    return t.view(A.shape), absmax, cols


def int8_matmul_in_float(A, B):
    """Wrong: one float32 matmul (inexact beyond 2^24)."""
    return (A.float() @ B.float().T).to(torch.int32)


def adam_without_bias_correction(optimizer, p, g, state1, state2, *rest):
    """Wrong: bias correction of adam always 1 (as if step were huge)."""
    rest = list(rest)
    rest[10] = 10**6  # step
    return REF["optimizer_step"](optimizer, p, g, state1, state2, *rest)


def raises_on_nan(A, code, blocksize):
    """Wrong: crashes on NaN input (the contract: never crash on inf/NaN)."""
    if torch.isnan(A).any():
        raise RuntimeError("NaN in input")
    return REF["quantize_blockwise"](A, code, blocksize)


@pytest.mark.parametrize(
    "op, fn, where, expect",
    [
        ("quantize_4bit", quantize_4bit_ties_up, ("float32", "nf4", 64), "codes (nibbles of packed"),
        ("quantize_4bit", quantize_4bit_low_nibble_first, ("bfloat16", "fp4", 32), "codes (nibbles of packed"),
        ("quantize_blockwise", quantize_blockwise_bad_tail, ("float16", "dynamic", 256), "absmax differs"),
        ("dequantize_4bit", dequantize_4bit_in_bf16, ("float32", "nf4", 64), "out differs"),
        ("gemv_4bit", gemv_4bit_ignores_offset, ("float16", "nf4+nested", 64), "out differs"),
        ("int8_vectorwise_quant", int8_quant_truncates, ("float32", "t=0", None), "codes differs"),
        ("int8_linear_matmul", int8_matmul_in_float, ("int8", "int32", None), "out (int32) differs"),
        ("optimizer_step", adam_without_bias_correction, ("float32", "adam-32bit", None), "differs"),
        ("quantize_blockwise", raises_on_nan, ("float32", "dynamic", 64), "the kernel raised RuntimeError"),
    ],
)
def test_broken_kernel_is_caught_naming_op_and_case(backend, op, fn, where, expect):
    name = backend("broken_" + fn.__name__, {op: fn})
    dtype, fmt, bs = where
    res = run_one(name, op, dtype, fmt, bs)
    assert res.status == FAIL, res
    assert res.message.startswith(f"{op}: ") and expect in res.message, res.message
    assert res.id in res.message and "seed=" in res.message  # the case: cell id and its seeded inputs
    # reproducible: the same seed gives the same failing case
    assert run_one(name, op, dtype, fmt, bs).message == res.message


def test_broken_backend_fails_the_cli_with_the_failing_case(backend, tmp_path, capsys):
    name = backend("broken_cli", {"quantize_4bit": quantize_4bit_low_nibble_first, "int8_linear_matmul": REF[
        "int8_linear_matmul"]})  # fmt: skip
    rc = cli_main(["--backend", name, "--ops", "quantize_4bit,int8_linear_matmul", "--no-bench", "--report",
                   str(tmp_path)])  # fmt: skip
    out, err = capsys.readouterr()
    assert rc == 1
    assert out.startswith("FAIL: backend 'broken_cli'") and "quantize_4bit[float32-nf4-bs32]" in out
    assert "FAIL quantize_4bit[" in err and "quantize_4bit: codes" in err
    data = json.loads((tmp_path / "conformance.json").read_text())
    status = {r["id"]: r["status"] for r in data["results"]}
    assert status["int8_linear_matmul[int8-int32]"] == PASS and status["int8_linear_matmul[opcheck]"] == PASS
    assert status["quantize_4bit[float16-fp4-bs4096]"] == FAIL
    md = (tmp_path / "conformance.md").read_text()
    assert "## quantize_4bit" in md and "## Failures" in md and "| dtype | format | blocksize | status |" in md


# --- capabilities: unsupported is never passed ---------------------------------------------------


def test_unsupported_and_not_implemented_are_reported_as_unsupported(backend):
    def no_bf16(A, code, blocksize):
        return A.dtype != torch.bfloat16 or "bfloat16 inputs are not supported"

    name = backend("partial", {"quantize_blockwise": (REF["quantize_blockwise"], no_bf16)})
    assert run_one(name, "quantize_blockwise", "float32", "dynamic", 64).status == PASS
    res = run_one(name, "quantize_blockwise", "bfloat16", "dynamic", 64)
    assert res.status == UNSUPPORTED and "bfloat16 inputs are not supported" in res.message and res.examples == 0
    res = run_one(name, "gemv_4bit", "float32", "nf4", 64)
    assert res.status == UNSUPPORTED and res.message.startswith("not implemented")
    res = Runner(name, "cpu", quick=True, bench=False).run_opcheck(CASES["dequantize_4bit"])
    assert res.status == UNSUPPORTED
    result = Runner(name, "cpu", quick=True, bench=False).run(["quantize_blockwise"], opcheck=False)
    assert result.ok and result.count(UNSUPPORTED) == 3 and result.count(PASS) == 6


def test_partly_supported_cell_counts_only_the_examples_that_ran(backend):
    def small_only(A, code, blocksize):
        return A.numel() <= 1000 or "A.numel() > 1000"

    name = backend("small", {"quantize_blockwise": (REF["quantize_blockwise"], small_only)})
    res = run_one(name, "quantize_blockwise", "float32", "dynamic", 64)
    assert res.status == PASS and res.examples > 0 and res.unsupported_examples > 0
    assert "examples unsupported" in res.message


# --- known failures --------------------------------------------------------------------------------


def test_known_failures_file(backend, tmp_path):
    name = backend("known", {"quantize_4bit": quantize_4bit_low_nibble_first, "int8_linear_matmul": REF[
        "int8_linear_matmul"]})  # fmt: skip
    path = tmp_path / "known.txt"
    path.write_text(
        "# comment line\n"
        "quantize_4bit[float32-nf4-bs64]   # nibble order, fixing\n"
        "int8_linear_matmul[int8-int32]    # listed but passes\n"
        "gemv_4bit[float32-nf5-bs64]       # typo: matches nothing\n"
    )
    known = KnownFailures.load(name, str(path))
    assert known.reasons["quantize_4bit[float32-nf4-bs64]"] == "nibble order, fixing"
    runner = Runner(name, "cpu", quick=True, bench=False, known=known)
    res = runner.run_cell(*cell("quantize_4bit", "float32", "nf4", 64))
    assert res.status == XFAIL and "nibble order, fixing" in res.message
    res = runner.run_cell(*cell("int8_linear_matmul", "int8", "int32"))
    assert res.status == XPASS and "remove it" in res.message
    result = runner.run(["int8_linear_matmul"], opcheck=False)
    assert result.ok and any("gemv_4bit[float32-nf5-bs64]" in w for w in result.warnings)
    with pytest.raises(FileNotFoundError):
        KnownFailures.load(name, str(tmp_path / "missing.txt"))


def test_packaged_known_failure_files_parse_and_match_cells():
    ids = {c.id for case in CASES.values() for c in case.cells(quick=False)} | {f"{op}[opcheck]" for op in CASES}
    for name in ("cpu", "reference"):
        known = KnownFailures.load(name)
        assert known.source.endswith(f"{name}.txt")
        assert not known.unmatched(sorted(ids))


# --- CLI and plugin --------------------------------------------------------------------------------


def test_cli_usage_errors(capsys):
    assert cli_main(["--backend", "no_such_backend"]) == 2
    assert "unknown backend 'no_such_backend'" in capsys.readouterr().err
    assert cli_main(["--backend", "reference", "--ops", "no_such_op"]) == 2
    assert "unknown ops ['no_such_op']" in capsys.readouterr().err
    with pytest.raises(SuiteError, match="serves device types"):
        Runner("cpu", "meta")


def _run(args, cwd):
    env = dict(os.environ, PYTHONPATH="")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_cli_and_pytest_plugin_run_from_the_installed_package(tmp_path):
    proc = _run(["-m", "bnb_api.conformance", "--backend", "reference", "--device", "cpu", "--ops",
                 "int8_linear_matmul", "--quick", "--report", str(tmp_path / "rep")], tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("PASS: backend 'reference' on cpu (quick): 2 pass")
    assert "[####" in proc.stderr  # the progress bar
    assert json.loads((tmp_path / "rep" / "conformance.json").read_text())["ok"] is True
    proc = _run(["-m", "pytest", "-p", "bnb_api.conformance.plugin", "--pyargs", "bnb_api.conformance",
                 "--bnb-backend", "reference", "--bnb-ops", "int8_mm_dequant", "-p", "no:cacheprovider"],
                tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bnb_api conformance: backend=reference device=cpu mode=quick" in proc.stdout
    assert "4 passed" in proc.stdout
    proc = _run(["-m", "pytest", "-p", "bnb_api.conformance.plugin", "--pyargs", "bnb_api.conformance",
                 "--bnb-backend", "nope", "-p", "no:cacheprovider"], tmp_path)  # fmt: skip
    assert proc.returncode != 0 and "unknown backend 'nope'" in proc.stdout + proc.stderr


def test_report_markdown_lists_every_cell():
    runner = Runner("reference", "cpu", quick=True, bench=False)
    result = runner.run(["int8_mm_dequant"], opcheck=False)
    md = to_markdown(result)
    assert result.verdict().startswith("PASS") and md.count("| pass |") == 3

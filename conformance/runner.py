"""Run the conformance suite for one backend on one device: cells, hypothesis, opcheck, throughput.

For every cell (op x dtype x format x blocksize) the runner takes the kernel the backend registered
(``get_kernel(op, backend, device_type)``, never what dispatch would pick) and the reference kernel,
draws examples (fixed edge examples first, then random ones from a reproducible seed), builds each
op's checked call (:mod:`bnb_api.conformance.calls`), asks the kernel's ``supports`` first, runs both
kernels and compares (:mod:`bnb_api.conformance.cases`). It then times both kernels on one large
example. Per op it also runs ``torch.library.opcheck`` with the backend forced.
"""

from __future__ import annotations

import time
import traceback
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import torch
from hypothesis import HealthCheck, Phase, Verbosity, example, given, seed, settings

from bnb_api.conformance import calls
from bnb_api.conformance.assertions import Mismatch, Stats, merge
from bnb_api.conformance.cases import Cell, OpCase, all_cases
from bnb_api.conformance.known import KnownFailures
from bnb_api.conformance.strategies import FULL, QUICK, Limits
from bnb_api.core import registry
from bnb_api.core.errors import BnbError, BnbUnavailableError

PASS, FAIL, UNSUPPORTED, ERROR = "pass", "fail", "unsupported", "error"
XFAIL, XPASS = "known failure", "known failure (passed)"
FAILING = (FAIL, ERROR)


class SuiteError(BnbError, RuntimeError):
    """The suite cannot run as asked (unknown backend or op, device absent, backend unavailable)."""


@dataclass
class CellResult:
    """The outcome of one cell (a row of the report)."""

    id: str
    op: str
    dtype: str
    fmt: str
    blocksize: int | None
    status: str
    message: str = ""
    examples: int = 0
    unsupported_examples: int = 0
    max_err: float | None = None
    mean_err: float | None = None
    err_unit: str = ""
    gbps: float | None = None
    ref_gbps: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SuiteResult:
    """Every cell's outcome plus what the run was."""

    backend: str
    device: str
    mode: str
    seed: int
    results: list[CellResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.results)

    @property
    def failed(self) -> list[CellResult]:
        return [r for r in self.results if r.status in FAILING]

    @property
    def ok(self) -> bool:
        """True when no cell failed or errored (unsupported and known failures do not fail a run)."""
        return not self.failed

    def verdict(self) -> str:
        counts = ", ".join(
            f"{self.count(s)} {s}" for s in (PASS, FAIL, ERROR, UNSUPPORTED, XFAIL, XPASS) if self.count(s)
        )
        head = "PASS" if self.ok else "FAIL"
        line = f"{head}: backend {self.backend!r} on {self.device} ({self.mode}): {counts} in {self.seconds:.1f} s"
        if not self.ok:
            line += "\nfailed: " + ", ".join(r.id for r in self.failed)
        return line


def resolve(backend: str, device: str) -> torch.device:
    """Validate ``backend`` and ``device``; raise :class:`SuiteError` saying what is wrong."""
    known = registry.backends()
    if backend not in known:
        raise SuiteError(
            f"unknown backend {backend!r}; registered: {sorted(known)} (an out-of-tree backend must be installed "
            "so that its 'bnb_api.backends' entry point registers it)"
        )
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise SuiteError(f"device={device!r} is not a torch device: {exc}") from exc
    types = known[backend].device_types
    if registry.ANY_DEVICE not in types and dev.type not in types:
        raise SuiteError(f"backend {backend!r} serves device types {list(types)}, not {dev.type!r}")
    try:
        torch.empty(1, device=dev)
    except Exception as exc:
        raise SuiteError(f"device {device!r} is not usable here: {type(exc).__name__}: {exc}") from exc
    ok, reason = known[backend].available()
    if not ok:
        raise SuiteError(f"backend {backend!r} is unavailable on this machine: {reason}")
    return dev


def select_cells(ops: Iterable[str] | None, quick: bool) -> list[tuple[OpCase, Cell]]:
    """The (case, cell) pairs of the chosen ops (all ops by default)."""
    cases = all_cases()
    chosen = list(ops) if ops else list(cases)
    unknown = [op for op in chosen if op not in cases]
    if unknown:
        raise SuiteError(f"unknown ops {unknown}; expected some of {list(cases)}")
    return [(cases[op], cell) for op in chosen for cell in cases[op].cells(quick)]


def sync(device: torch.device) -> None:
    """Wait for the device (no-op on cpu)."""
    if device.type == "cpu":
        return
    module = getattr(torch, device.type, None)
    if module is not None and hasattr(module, "synchronize"):
        module.synchronize()
    elif hasattr(torch, "accelerator"):
        torch.accelerator.synchronize()


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


class Runner:
    """Runs cells for ``backend`` on ``device``; ``progress(done, total, label)`` is called per cell."""

    def __init__(
        self, backend: str, device: str = "cpu", quick: bool = True, base_seed: int = 0,
        known: KnownFailures | None = None, bench: bool = True,
        progress: Callable[[int, int, str], None] | None = None,
    ) -> None:  # fmt: skip
        self.backend = backend
        self.device = resolve(backend, device)
        self.quick = quick
        self.limits: Limits = QUICK if quick else FULL
        self.base_seed = base_seed
        self.known = known or KnownFailures.empty(backend)
        self.bench = bench
        self.progress = progress or (lambda done, total, label: None)

    # ---- one cell ---------------------------------------------------------------------------------

    def kernels(self, op: str) -> tuple[registry.Kernel | None, registry.Kernel]:
        """(kernel under test or None when the backend has none, reference kernel) for ``op``."""
        ref = registry.get_kernel(op, registry.REFERENCE, self.device.type)
        try:
            return registry.get_kernel(op, self.backend, self.device.type), ref
        except BnbUnavailableError:
            return None, ref

    def run_cell(self, case: OpCase, cell: Cell) -> CellResult:
        """Check one cell; the result's status is pass / fail / unsupported / error (known failures applied)."""
        t0 = time.perf_counter()
        res = CellResult(cell.id, cell.op, cell.dtype, cell.fmt, cell.blocksize, PASS)
        kernel, ref = self.kernels(cell.op)
        if kernel is None:
            res.status, res.message = UNSUPPORTED, f"not implemented: backend {self.backend!r} registers no kernel"
        else:
            self._check_examples(case, cell, kernel, ref, res)
            if res.status == PASS and self.bench:
                self._throughput(case, cell, kernel, ref, res)
        res.seconds = time.perf_counter() - t0
        return self.known.apply(res)

    def _check_examples(self, case, cell, kernel, ref, res: CellResult) -> None:
        stats: list[Stats] = []
        reasons: list[str] = []
        device = self.device

        def test(ex):
            args = case.build(ex, cell, device)
            call = calls.checked_call(cell.op, *args)
            reason = kernel.check(call)
            if reason is not None:
                res.unsupported_examples += 1
                reasons.append(reason)
                return
            ctx = f"{cell.id}: {ex}"
            try:
                want = calls.run_kernel(ref.fn, cell.op, call)
            except Exception as exc:
                raise _ReferenceError(f"the reference raised {type(exc).__name__}: {exc} [{ctx}]") from exc
            try:
                got = calls.run_kernel(kernel.fn, cell.op, call)
                sync(device)
            except Exception as exc:
                raise Mismatch(f"{cell.op}: the kernel raised {type(exc).__name__}: {exc} [{ctx}]") from exc
            res.examples += 1
            stats.append(case.compare(got, want, args, cell, ctx))

        phases = [Phase.explicit, Phase.generate] + ([] if self.quick else [Phase.shrink])
        wrapped = given(ex=case.strategy(cell, self.limits))(test)
        for edge in reversed(case.edges(cell)):
            wrapped = example(ex=edge)(wrapped)
        wrapped = settings(
            max_examples=self.limits.max_examples, database=None, deadline=None, phases=phases,
            suppress_health_check=list(HealthCheck), verbosity=Verbosity.quiet, report_multiple_bugs=False,
            print_blob=False,
        )(wrapped)  # fmt: skip
        wrapped = seed(self.cell_seed(cell))(wrapped)
        try:
            wrapped()
        except Mismatch as exc:
            res.status, res.message = FAIL, str(exc).strip()
        except _ReferenceError as exc:
            res.status, res.message = ERROR, f"{cell.op}: {exc}"
        except Exception as exc:  # a kernel, case or suite bug: report it, keep going
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            res.status, res.message = ERROR, f"{cell.op}: suite error while checking {cell.id}: {tb}"
        if res.status == PASS and res.examples == 0:
            res.status = UNSUPPORTED
            first = reasons[0] if reasons else ""
            res.message = f"supports() rejected all {res.unsupported_examples} examples: {first}"
        elif res.unsupported_examples and res.status == PASS:
            res.message = f"{res.unsupported_examples} examples unsupported ({reasons[0]})"
        if stats:
            merged = merge(stats)
            res.max_err, res.mean_err, res.err_unit = merged.max_err, merged.mean_err, merged.unit

    def cell_seed(self, cell: Cell) -> int:
        """The reproducible hypothesis seed of ``cell`` (from ``--seed`` and the cell id)."""
        return (zlib.crc32(cell.id.encode()) + 1_000_003 * self.base_seed) % 2**32

    def _throughput(self, case, cell, kernel, ref, res: CellResult) -> None:
        ex = case.bench_example(cell, self.limits.bench_numel)
        try:
            args = case.build(ex, cell, self.device)
            call = calls.checked_call(cell.op, *args)
            if kernel.check(call) is not None:
                return
            res.gbps = self._gbps(kernel.fn, cell.op, call)
            res.ref_gbps = res.gbps if kernel is ref else self._gbps(ref.fn, cell.op, call)
        except Exception as exc:  # throughput is informative; a failure here is reported, not fatal
            res.message = (res.message + "; " if res.message else "") + f"throughput not measured: {exc}"

    def _gbps(self, fn, op: str, call: dict) -> float:
        best = float("inf")
        out = None
        for i in range(self.limits.bench_repeat + 1):
            mine = calls.clone_call(call) if op in calls.MUTATED else call  # same weights: caches may work
            sync(self.device)
            t0 = time.perf_counter()
            out = fn(*mine.values())
            sync(self.device)
            if i:  # the first run warms up
                best = min(best, time.perf_counter() - t0)
        written = [mine[k] for k in calls.MUTATED[op]] if op in calls.MUTATED else out
        return (_nbytes(list(call.values())) + _nbytes(written)) / best / 1e9

    # ---- opcheck ----------------------------------------------------------------------------------

    def run_opcheck(self, case: OpCase, samples: int = 2) -> CellResult:
        """``torch.library.opcheck`` of ``case.op`` with the backend forced, on a few sample inputs."""
        t0 = time.perf_counter()
        cell = Cell(case.op, "opcheck")
        res = CellResult(cell.id, case.op, "opcheck", "", None, PASS)
        kernel, _ = self.kernels(case.op)
        if kernel is None:
            res.status, res.message = UNSUPPORTED, f"not implemented: backend {self.backend!r} registers no kernel"
            return self.known.apply(res)
        op = getattr(torch.ops.bnb_api, case.op).default
        seen_dtypes: set[str] = set()
        try:
            for c in case.cells(quick=True):
                if res.examples >= samples or c.dtype in seen_dtypes:
                    continue
                edges = case.edges(c)
                candidates = (case.build(ex, c, self.device) for ex in edges[1:] + edges[:1])
                args = next((a for a in candidates if kernel.check(calls.checked_call(case.op, *a)) is None), None)
                if args is None:
                    continue
                seen_dtypes.add(c.dtype)
                utils = _OPCHECK_UTILS.get(case.op, _OPCHECK_ALL)
                if case.op == "int8_vectorwise_quant" and args[1] > 0:
                    utils = ("test_schema", "test_faketensor")  # data-dependent output size
                with registry.use_backend(self.backend):
                    torch.library.opcheck(op, args, test_utils=utils)
                res.examples += 1
        except Exception as exc:
            res.status = FAIL
            res.message = f"{case.op}: opcheck failed with backend {self.backend!r} forced: {type(exc).__name__}: " + (
                str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            )
        if res.status == PASS and res.examples == 0:
            res.status, res.message = UNSUPPORTED, "supports() rejected every sample input"
        res.seconds = time.perf_counter() - t0
        return self.known.apply(res)

    # ---- the whole suite --------------------------------------------------------------------------

    def run(self, ops: Iterable[str] | None = None, opcheck: bool = True) -> SuiteResult:
        """Every cell of ``ops`` (all ops by default), then opcheck per op; unknown known-failure ids warn."""
        t0 = time.perf_counter()
        pairs = select_cells(ops, self.quick)
        chosen = list(dict.fromkeys(case.op for case, _ in pairs))
        cases = all_cases()
        total = len(pairs) + (len(chosen) if opcheck else 0)
        out = SuiteResult(self.backend, str(self.device), "quick" if self.quick else "full", self.base_seed)
        for i, (case, cell) in enumerate(pairs):
            self.progress(i, total, cell.id)
            out.results.append(self.run_cell(case, cell))
        if opcheck:
            for j, op in enumerate(chosen):
                self.progress(len(pairs) + j, total, f"{op}[opcheck]")
                out.results.append(self.run_opcheck(cases[op]))
        self.progress(total, total, "done")
        all_ids = [cell.id for _, cell in select_cells(None, False)] + [f"{op}[opcheck]" for op in cases]
        out.warnings = self.known.unmatched(all_ids)
        out.seconds = time.perf_counter() - t0
        return out


_OPCHECK_ALL = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
_OPCHECK_UTILS: dict[str, tuple[str, ...]] = {}


class _ReferenceError(Exception):
    """The reference raised: a suite or reference bug, reported as an error, never blamed on the backend."""

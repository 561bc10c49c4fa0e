"""pytest plugin: the conformance suite as pytest tests, for a vendor's own CI.

Use either form (the backend is chosen by one option or one environment variable)::

    pytest --pyargs bnb_api.conformance --bnb-backend NAME [--bnb-device cuda] [--bnb-full]
    pytest -p bnb_api.conformance.plugin --pyargs bnb_api.conformance --bnb-backend NAME
    BNB_API_CONFORMANCE_BACKEND=NAME pytest --pyargs bnb_api.conformance

Every cell becomes one test whose id is the cell id (``test_cell[quantize_4bit[float16-nf4-bs64]]``);
unsupported cells are skipped with the reason, known failures are xfailed, and an unknown backend
stops the run with a usage error. The pytest header names the backend, device and mode.
"""

from __future__ import annotations

import os

import pytest

ENV_BACKEND = "BNB_API_CONFORMANCE_BACKEND"
ENV_DEVICE = "BNB_API_CONFORMANCE_DEVICE"


def pytest_addoption(parser) -> None:
    group = parser.getgroup("bnb_api conformance")
    group.addoption("--bnb-backend", default=None, help=f"backend under test (or ${ENV_BACKEND})")
    group.addoption("--bnb-device", default=None, help=f"torch device (or ${ENV_DEVICE}; default cpu)")
    group.addoption("--bnb-full", action="store_true", help="full mode: every blocksize, more examples, shrinking")
    group.addoption("--bnb-ops", default=None, help="comma-separated ops to test (default: all)")
    group.addoption("--bnb-known-failures", default=None, help="known failures file (default: the packaged one)")
    group.addoption("--bnb-seed", type=int, default=0, help="base seed of the examples")


def _settings(config) -> dict:
    return {
        "backend": config.getoption("--bnb-backend") or os.environ.get(ENV_BACKEND),
        "device": config.getoption("--bnb-device") or os.environ.get(ENV_DEVICE) or "cpu",
        "full": config.getoption("--bnb-full"),
        "ops": [o for o in (config.getoption("--bnb-ops") or "").split(",") if o] or None,
    }


def runner(config):
    """The session's Runner (built once; raises a usage error naming the problem)."""
    cached = getattr(config, "_bnb_conformance_runner", None)
    if cached is not None:
        return cached
    from bnb_api.conformance.known import KnownFailures
    from bnb_api.conformance.runner import Runner, SuiteError

    s = _settings(config)
    if not s["backend"]:
        raise pytest.UsageError(
            f"bnb_api conformance: choose the backend under test with --bnb-backend NAME or ${ENV_BACKEND}"
        )
    try:
        known = KnownFailures.load(s["backend"], config.getoption("--bnb-known-failures"))
        made = Runner(s["backend"], s["device"], quick=not s["full"], base_seed=config.getoption("--bnb-seed"),
                      known=known, bench=False)  # fmt: skip
    except (SuiteError, FileNotFoundError) as exc:
        raise pytest.UsageError(f"bnb_api conformance: {exc}") from exc
    config._bnb_conformance_runner = made
    return made


def pytest_configure(config) -> None:
    if _settings(config)["backend"]:
        runner(config)  # an unknown backend or absent device stops the run here, before collection


def pytest_report_header(config) -> list[str] | None:
    s = _settings(config)
    if not s["backend"]:
        return None
    return [f"bnb_api conformance: backend={s['backend']} device={s['device']} mode={'full' if s['full'] else 'quick'}"]


def pytest_generate_tests(metafunc) -> None:
    from bnb_api.conformance.cases import all_cases
    from bnb_api.conformance.runner import select_cells

    if "bnb_cell" in metafunc.fixturenames:
        r = runner(metafunc.config)
        pairs = select_cells(_settings(metafunc.config)["ops"], r.quick)
        metafunc.parametrize("bnb_cell", pairs, ids=[cell.id for _, cell in pairs])
    if "bnb_opcheck" in metafunc.fixturenames:
        runner(metafunc.config)
        ops = _settings(metafunc.config)["ops"] or list(all_cases())
        metafunc.parametrize("bnb_opcheck", ops, ids=[f"{op}[opcheck]" for op in ops])


def pytest_collection_finish(session) -> None:
    r = getattr(session.config, "_bnb_conformance_runner", None)
    if r is None:
        return
    from bnb_api.conformance.cases import all_cases
    from bnb_api.conformance.runner import select_cells

    ids = [cell.id for _, cell in select_cells(None, False)] + [f"{op}[opcheck]" for op in all_cases()]
    for warning in r.known.unmatched(ids):
        session.config.issue_config_time_warning(pytest.PytestWarning(warning), stacklevel=2)


def report_outcome(result) -> None:
    """Turn a CellResult into the pytest outcome (skip / xfail / fail) with its message."""
    from bnb_api.conformance.runner import FAILING, UNSUPPORTED, XFAIL, XPASS

    if result.status == UNSUPPORTED:
        pytest.skip(f"unsupported: {result.message}")
    if result.status == XFAIL:
        pytest.xfail(result.message)
    if result.status in FAILING:
        pytest.fail(result.message, pytrace=False)
    if result.status == XPASS:
        import warnings

        warnings.warn(result.message, pytest.PytestWarning, stacklevel=2)

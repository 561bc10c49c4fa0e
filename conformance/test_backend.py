"""The conformance suite as pytest tests (collected by ``pytest --pyargs bnb_api.conformance``).

Choose the backend with ``--bnb-backend NAME`` (see :mod:`bnb_api.conformance.plugin`).
"""

from __future__ import annotations

from bnb_api.conformance.plugin import report_outcome, runner


def test_cell(bnb_cell, request):
    """One cell: every example of op x dtype x format x blocksize against the reference."""
    case, cell = bnb_cell
    report_outcome(runner(request.config).run_cell(case, cell))


def test_opcheck(bnb_opcheck, request):
    """torch.library.opcheck of the op with the backend forced."""
    from bnb_api.conformance.cases import all_cases

    report_outcome(runner(request.config).run_opcheck(all_cases()[bnb_opcheck]))

"""bitsandbytes' own test assertions (tests/test_functional.py, test_ops.py, test_linear4bit.py,
test_linear8bitlt.py, test_modules.py, test_autograd.py, test_optim.py of the 0.47-0.50 releases), re-written
for the cpu with their thresholds and shapes and fewer iterations.

Every test that takes ``lib`` runs against ``bnb_api`` and, when it is installed, against ``bitsandbytes``
itself, which shows that each threshold is one bitsandbytes meets on this machine. ``PEER_LIBS=bnb_api`` runs
only the former.
"""

import os
import sys
import warnings

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # peer_helpers (tests use --import-mode=importlib)
warnings.filterwarnings("ignore", message=".*kernels.*")

LIBS = [x for x in os.environ.get("PEER_LIBS", "bnb_api,bitsandbytes").split(",") if x]


@pytest.fixture(params=LIBS)
def lib(request):
    if request.param == "bnb_api":
        import bnb_api

        return bnb_api
    return pytest.importorskip("bitsandbytes")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield

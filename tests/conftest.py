"""Shared fixtures of the test suite."""

from __future__ import annotations

import pytest
from torch.utils._python_dispatch import TorchDispatchMode


class DispatchLog(TorchDispatchMode):
    """Records the name of every op dispatched while it is active (``ops``): shows which ops a call ran."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def dispatch_log() -> type[DispatchLog]:
    """The :class:`DispatchLog` mode class: ``with dispatch_log() as log: ...; log.ops``."""
    return DispatchLog

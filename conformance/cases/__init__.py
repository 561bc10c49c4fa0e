"""Per-op conformance cases: which cells an op has, how to draw, build and compare one example.

A *cell* is one row of the report: op x dtype x format x blocksize (e.g. ``quantize_4bit[bfloat16-nf4-bs64]``).
Each op has an :class:`OpCase` that lists its cells (all of them in full mode, the smallest, common
and largest blocksizes in quick mode), gives a hypothesis strategy of examples and a few fixed edge
examples per cell, turns an example into the op's arguments on a device, and compares the outputs of
the kernel under test with the reference's (through :mod:`bnb_api.conformance.assertions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hypothesis import strategies as st

from bnb_api.conformance.assertions import Stats
from bnb_api.conformance.strategies import Example, Limits


@dataclass(frozen=True)
class Cell:
    """One report row: ``op`` for inputs (or outputs) of ``dtype``, in ``fmt``, with ``blocksize``."""

    op: str
    dtype: str
    fmt: str = ""
    blocksize: int | None = None

    @property
    def id(self) -> str:
        """The test id used by the report, the known-failures files and pytest, e.g. ``op[float16-nf4-bs64]``."""
        parts = [self.dtype] + ([self.fmt] if self.fmt else []) + ([f"bs{self.blocksize}"] if self.blocksize else [])
        return f"{self.op}[{'-'.join(parts)}]"

    def __str__(self) -> str:
        return self.id


class OpCase:
    """How the suite exercises one op. Subclasses fill in every method."""

    op: str = ""
    n_outputs: int = 1

    def cells(self, quick: bool) -> list[Cell]:
        """The cells of this op (fewer blocksizes when ``quick``)."""
        raise NotImplementedError(f"need cells() for {self.op}")

    def strategy(self, cell: Cell, lim: Limits) -> st.SearchStrategy[Example]:
        """Random examples of ``cell``."""
        raise NotImplementedError(f"need strategy() for {self.op}")

    def edges(self, cell: Cell) -> list[Example]:
        """Fixed examples that always run: size 1, partial blocks, zero blocks, ties, extremes, layouts."""
        raise NotImplementedError(f"need edges() for {self.op}")

    def build(self, ex: Example, cell: Cell, device: torch.device) -> tuple:
        """The op's positional arguments for ``ex`` on ``device``."""
        raise NotImplementedError(f"need build() for {self.op}")

    def compare(self, got: tuple, want: tuple, args: tuple, cell: Cell, ctx: str) -> Stats:
        """Raise :class:`~bnb_api.conformance.assertions.Mismatch` unless ``got`` conforms; return the error."""
        raise NotImplementedError(f"need compare() for {self.op}")

    def bench_example(self, cell: Cell, numel: int) -> Example:
        """A large, plain example for the throughput measurement (about ``numel`` elements)."""
        raise NotImplementedError(f"need bench_example() for {self.op}")


BLOCKSIZES_8BIT = (64, 128, 256, 512, 1024, 2048, 4096)
BLOCKSIZES_4BIT = (32, 64, 128, 256, 512, 1024, 2048, 4096)
QUICK_8BIT = (64, 256, 4096)
QUICK_4BIT = (32, 64, 4096)
FLOATS = ("float32", "float16", "bfloat16")


def all_cases() -> dict[str, OpCase]:
    """Every op's case, in the contract's op order."""
    from bnb_api.conformance.cases import blockwise, fourbit, int8, optim
    from bnb_api.core.ops import OP_NAMES

    found: dict[str, Any] = {}
    for module in (blockwise, fourbit, int8, optim):
        for case in module.CASES:
            found[case.op] = case
    missing = [op for op in OP_NAMES if op not in found]
    if missing:
        raise RuntimeError(f"conformance: no case for ops {missing}; every op of the contract needs one")
    return {op: found[op] for op in OP_NAMES}

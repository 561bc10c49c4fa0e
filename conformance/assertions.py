"""Assertion helpers of the conformance suite: compare the kernel under test with the reference.

Each failure raises :class:`Mismatch` with a message that stands alone: what differs, where, the two
values, and the case in brackets, e.g. ``quantize_4bit: absmax.shape=(3,), but should be (4,)
[float32 nf4 bs64: shape=(200,), values=normal, seed=7]``. The comparisons return :class:`Stats` (max
and mean error) for the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bnb_api.conformance.tolerances import Tol


class Mismatch(AssertionError):
    """The kernel under test disagrees with the reference (the message names op, output and case)."""


@dataclass
class Stats:
    """Error of one output against the reference: ``unit`` is "rel" (absolute error over the largest
    magnitude of the tensor), "abs" (absolute) or "codes" (code-index steps)."""

    max_err: float = 0.0
    mean_err: float = 0.0
    unit: str = "abs"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.9g}"
    return str(v)


def _where(flat_index: int, shape: tuple[int, ...]) -> str:
    if len(shape) <= 1:
        return f"[{flat_index}]"
    idx = []
    for s in reversed(shape):
        idx.append(flat_index % max(s, 1))
        flat_index //= max(s, 1)
    return "[" + ", ".join(map(str, reversed(idx))) + "]"


def assert_meta(op: str, name: str, got, want: torch.Tensor, ctx: str) -> None:
    """``got`` is a tensor with ``want``'s shape, dtype and device type."""
    if not isinstance(got, torch.Tensor):
        raise Mismatch(f"{op}: {name} is {type(got).__name__}, but should be a torch.Tensor [{ctx}]")
    if tuple(got.shape) != tuple(want.shape):
        raise Mismatch(f"{op}: {name}.shape={tuple(got.shape)}, but should be {tuple(want.shape)} [{ctx}]")
    if got.dtype != want.dtype:
        raise Mismatch(f"{op}: {name}.dtype={got.dtype}, but should be {want.dtype} [{ctx}]")
    if got.device.type != want.device.type:
        raise Mismatch(f"{op}: {name} is on {got.device}, but should be on {want.device.type} [{ctx}]")


def assert_outputs(op: str, got, n_expected: int, ctx: str) -> None:
    """The kernel returned ``n_expected`` outputs."""
    if len(got) != n_expected:
        raise Mismatch(f"{op}: the kernel returned {len(got)} outputs, but should return {n_expected} [{ctx}]")


def assert_exact(
    op: str, name: str, got: torch.Tensor, want: torch.Tensor, ctx: str, mask: torch.Tensor | None = None
) -> Stats:
    """Bit-exact equality (NaN equals NaN); ``mask`` (bool, flat) selects the compared elements.

    Returns the error in the values' own units: index steps for integer codes, absolute for floats.
    """
    assert_meta(op, name, got, want, ctx)
    g, w = got.detach().reshape(-1).cpu(), want.detach().reshape(-1).cpu()
    if g.dtype.is_floating_point:
        same = (g.view(_int_view(g.dtype)) == w.view(_int_view(w.dtype))) | (g.isnan() & w.isnan())
        diff = (g.double() - w.double()).abs().nan_to_num(0.0)
        unit = "abs"
    else:
        same = g == w
        diff = (g.long() - w.long()).abs().double()
        unit = "codes"
    if mask is not None:
        mask = mask.reshape(-1).cpu()
        same = same | ~mask
        diff = diff * mask
    bad = (~same).nonzero().reshape(-1)
    if bad.numel():
        i = int(bad[0])
        hexed = (
            f" (0x{int(g[i]) & 0xFF:02x} vs 0x{int(w[i]) & 0xFF:02x})" if g.dtype in (torch.uint8, torch.int8) else ""
        )
        raise Mismatch(
            f"{op}: {name} differs at {bad.numel()} of {g.numel()} elements; first at "
            f"{_where(i, tuple(got.shape))}: got {_fmt(g[i].item())}, want {_fmt(w[i].item())}{hexed} "
            f"(bit-exact required) [{ctx}]"
        )
    return Stats(float(diff.max()) if diff.numel() else 0.0, float(diff.mean()) if diff.numel() else 0.0, unit)


def _int_view(dtype: torch.dtype) -> torch.dtype:
    return {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
            torch.float64: torch.int64}[dtype]  # fmt: skip


def assert_close(
    op: str, name: str, got: torch.Tensor, want: torch.Tensor, tol: Tol, ctx: str,
    scale: torch.Tensor | None = None, mask: torch.Tensor | None = None,
) -> Stats:  # fmt: skip
    """``|got - want| <= tol.atol + tol.rtol * scale + tol.ntol * max(scale)`` elementwise (scale: ``|want|``).

    NaN must match NaN and inf must match the same inf; ``mask`` (bool) selects compared elements.
    The returned error is relative to the largest finite scale of the tensor (unit "rel").
    """
    assert_meta(op, name, got, want, ctx)
    g, w = got.detach().double().reshape(-1).cpu(), want.detach().double().reshape(-1).cpu()
    s = w.abs() if scale is None else scale.detach().double().reshape(-1).cpu().expand_as(w)
    s = s.nan_to_num(0.0, posinf=0.0)
    finite = torch.isfinite(w)
    special_ok = (g.isnan() & w.isnan()) | (g == w)
    diff = (g - w).abs()
    limit = tol.atol + tol.rtol * s + tol.ntol * (float(s.max()) if s.numel() else 0.0)
    ok = torch.where(finite, diff <= limit, special_ok)
    if mask is not None:
        mask = mask.reshape(-1).cpu()
        ok = ok | ~mask
        finite = finite & mask
    bad = (~ok).nonzero().reshape(-1)
    if bad.numel():
        i = int(bad[0])
        raise Mismatch(
            f"{op}: {name} differs at {bad.numel()} of {g.numel()} elements; first at "
            f"{_where(i, tuple(got.shape))}: got {_fmt(g[i].item())}, want {_fmt(w[i].item())}, "
            f"|diff|={_fmt(diff[i].item())} > allowed {_fmt(limit[i].item())} ({tol}) [{ctx}]"
        )
    d = diff[finite]
    norm = float(s[finite].max()) if d.numel() else 0.0
    d = d / norm if norm > 0 else d
    return Stats(float(d.max()) if d.numel() else 0.0, float(d.mean()) if d.numel() else 0.0, "rel")


def assert_codes_near(op: str, name: str, got: torch.Tensor, want: torch.Tensor, tol: Tol, ctx: str) -> Stats:
    """uint8 codes equal except up to ``tol.code_frac`` of them (at least one) off by <= ``tol.code_slack``."""
    assert_meta(op, name, got, want, ctx)
    diff = (got.detach().reshape(-1).cpu().long() - want.detach().reshape(-1).cpu().long()).abs()
    n_off = int((diff > 0).sum())
    allowed = max(1, int(tol.code_frac * diff.numel()))
    worst = int(diff.max()) if diff.numel() else 0
    if worst > tol.code_slack or n_off > allowed:
        i = int(diff.argmax())
        raise Mismatch(
            f"{op}: {name} differs at {n_off} of {diff.numel()} codes (allowed {allowed} off by <= "
            f"{tol.code_slack}); worst at {_where(i, tuple(got.shape))}: got {int(got.reshape(-1)[i])}, "
            f"want {int(want.reshape(-1)[i])} [{ctx}]"
        )
    return Stats(float(worst), float(diff.double().mean()) if diff.numel() else 0.0, "codes")


def merge(stats: list[Stats]) -> Stats:
    """The worst max and the mean of means of several comparisons of one unit."""
    if not stats:
        return Stats()
    return Stats(max(s.max_err for s in stats), sum(s.mean_err for s in stats) / len(stats), stats[0].unit)

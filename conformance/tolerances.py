"""Every tolerance of the conformance suite, in one table keyed by (op, dtype, format).

What is compared bit-exactly is not in the table and never gets a tolerance: 8-bit and 4-bit codes,
the packed bytes, every absmax of a quantizer, ``int8_vectorwise_quant``'s codes, row absmax and
outlier columns, and ``int8_linear_matmul``'s int32 product. Float outputs are compared elementwise:

    |got - want| <= atol + rtol * scale + ntol * max(scale)

where ``scale`` is ``|want|`` unless the op defines a larger natural scale (gemv and the int8 matmuls
use ``|A| @ |W|.T (+ |bias|)``, the magnitude of the sum before cancellation). ``EPS`` is one unit in
the last place at 1.0 of the output dtype, i.e. the two sides may round to neighbouring values; ``atol``
is one ulp near zero (the smallest subnormal of the dtype).

Optimizer states requantized to 8 bits may land on a neighbouring code when the float32 state sits
within rounding of a code-book midpoint: ``code_slack`` is the largest index difference allowed and
``code_frac`` the fraction of codes (at least one) that may differ at all.

Lookup falls back from (op, dtype, format) to (op, dtype, "*"), (op, "*", format) and (op, "*", "*").
"""

from __future__ import annotations

from dataclasses import dataclass

EPS = {"float32": 2.0**-23, "float16": 2.0**-10, "bfloat16": 2.0**-7}
EPS32 = EPS["float32"]
ULP0 = {"float32": 2.0**-149, "float16": 2.0**-24, "bfloat16": 2.0**-133}
"""The smallest subnormal of each dtype: one ulp near zero, where ``rtol * |want|`` would allow nothing."""


@dataclass(frozen=True)
class Tol:
    """Tolerance of one float comparison (see the module docstring for the formula)."""

    rtol: float = 0.0
    ntol: float = 0.0
    atol: float = 0.0
    code_slack: int = 0
    code_frac: float = 0.0

    def __str__(self) -> str:
        parts = [f"rtol={self.rtol:.3g}", f"ntol={self.ntol:.3g}", f"atol={self.atol:.3g}"]
        if self.code_slack:
            parts.append(f"code_slack={self.code_slack} on <= {self.code_frac:.0%} of codes")
        return ", ".join(parts)


def _per_dtype(op: str, fmt: str, extra_rtol: float = 0.0, ulps: float = 1.0, ntol: float = 0.0) -> dict:
    return {
        (op, dt, fmt): Tol(rtol=ulps * eps + extra_rtol, ntol=ntol, atol=ulps * ULP0[dt]) for dt, eps in EPS.items()
    }


TOLERANCES: dict[tuple[str, str, str], Tol] = {
    # one float32 multiply, then the cast to the output dtype: one ulp of the output
    **_per_dtype("dequantize_blockwise", "*"),
    **_per_dtype("dequantize_4bit", "*"),
    # float32 accumulation over K in any order (relative to |A| @ |W|.T), then the cast
    **_per_dtype("gemv_4bit", "*", extra_rtol=1e-5),
    # a few float32 products in any order, then the cast (scale: |A * row * col| / 127^2 + |bias|)
    **_per_dtype("int8_mm_dequant", "*", extra_rtol=8 * EPS32),
    # the int8 product is exact; dequantization and the outlier columns in A.dtype or float32
    **_per_dtype("int8_mm_outlier", "*", extra_rtol=1e-5, ulps=2.0),
    # the parameter: float32 update math in any order, then the cast to p.dtype
    **_per_dtype("optimizer_step", "*", ntol=2e-6),
    **_per_dtype("optimizer_step_multi", "*", ntol=2e-6),
    # float32 states (dtype column: the state's dtype)
    ("optimizer_step", "float32", "state32"): Tol(rtol=1e-5, ntol=1e-6),
    ("optimizer_step_multi", "float32", "state32"): Tol(rtol=1e-5, ntol=1e-6),
    # 8-bit states: the requantization absmax (float32 rounding) and the codes next to a midpoint
    ("optimizer_step", "float32", "state8"): Tol(rtol=1e-6, code_slack=1, code_frac=0.01),
    ("optimizer_step_multi", "float32", "state8"): Tol(rtol=1e-6, code_slack=1, code_frac=0.01),
}


def tolerance(op: str, dtype: str, fmt: str = "*") -> Tol:
    """The tolerance of ``op``'s float outputs for ``dtype`` (e.g. "bfloat16") and ``fmt``."""
    for key in ((op, dtype, fmt), (op, dtype, "*"), (op, "*", fmt), (op, "*", "*")):
        if key in TOLERANCES:
            return TOLERANCES[key]
    raise KeyError(f"no tolerance for op={op!r}, dtype={dtype!r}, format={fmt!r}; add a row to TOLERANCES")

"""Code books (quantization maps): the 8-bit dynamic maps and the 4-bit NF4 / FP4 tables.

Every table here has the same float32 values as bitsandbytes 0.50, so packed data moves between the
two libraries unchanged. Tables are cached per device.
"""

from __future__ import annotations

import functools
import itertools

import torch

# NF4: quantiles of N(0, 1) normalised to [-1, 1] (QLoRA, arXiv:2305.14314); index order = value order.
NF4_VALUES: tuple[float, ...] = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
)  # fmt: skip

# FP4 (1 sign, 2 exponent, 1 mantissa bit; bias 2), in bit-pattern order, divided by 12 (the largest).
# Bit 3 is the sign; bits 0..2 select the magnitude.
FP4_MAGNITUDES_X12: tuple[float, ...] = (0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0)
FP4_VALUES: tuple[float, ...] = tuple(m / 12.0 for m in FP4_MAGNITUDES_X12) + tuple(
    -m / 12.0 for m in FP4_MAGNITUDES_X12
)

QUANT_TYPES_4BIT = ("nf4", "fp4")


def dynamic_map_values(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> list[float]:
    """The dynamic (decimal exponent + linear fraction) map of arXiv:1511.04561 as a sorted list.

    Same construction and float32 rounding as bitsandbytes' ``create_dynamic_map``: for each exponent
    10^-(e) the bin centres of a linear grid on [0.1, 1]; then 0 and 1; padded with zeros to 256.
    """
    values: list[float] = []
    non_sign_bits = total_bits - 1
    extra = 2 ** (non_sign_bits - max_exponent_bits) - 1
    exponent = 0
    for exponent in range(max_exponent_bits):
        fraction_bits = exponent + non_sign_bits - max_exponent_bits + (0 if signed else 1)
        n_fraction = int(2**fraction_bits + 1)  # 2**-1 + 1 -> 1 edge pair, as bitsandbytes truncates
        values += _scaled_bin_centres(n_fraction, exponent, max_exponent_bits, signed)
    if extra > 0:
        values += _scaled_bin_centres(extra + 1, exponent, max_exponent_bits, signed)
    values += [0.0, 1.0]
    if len(values) != 2**total_bits:
        raise ValueError(f"dynamic map: got {len(values)} values for total_bits={total_bits}")
    values += [0.0] * (256 - len(values))
    return sorted(values)


def _scaled_bin_centres(n_edges: int, exponent: int, max_exponent_bits: int, signed: bool) -> list[float]:
    edges = torch.linspace(0.1, 1, n_edges, dtype=torch.float32)
    centres = (edges[:-1] + edges[1:]) / 2.0
    scale = 10 ** (-(max_exponent_bits - 1) + exponent)
    out = (scale * centres).tolist()
    if signed:
        out += (-scale * centres).tolist()
    return out


@functools.cache
def _cached(kind: str, signed: bool, device: str) -> torch.Tensor:
    if kind == "dynamic":
        values = dynamic_map_values(signed=signed)
    elif kind == "nf4":
        values = list(NF4_VALUES)
    elif kind == "fp4":
        values = list(FP4_VALUES)
    else:  # pragma: no cover - internal
        raise KeyError(kind)
    return torch.tensor(values, dtype=torch.float32, device=device)


def dynamic_map(signed: bool = True, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 256-entry signed (or unsigned) dynamic map as a float32 tensor, sorted ascending (cached)."""
    return _cached("dynamic", bool(signed), str(torch.device(device)))


def code_4bit(quant_type: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """The 16-entry float32 code book of ``quant_type`` ('nf4' or 'fp4'), indexed by the 4-bit code."""
    if quant_type not in QUANT_TYPES_4BIT:
        from bnb_api.core.errors import BnbValueError

        raise BnbValueError(f"quant_type={quant_type!r} is not supported; expected one of {QUANT_TYPES_4BIT}")
    return _cached(quant_type, True, str(torch.device(device)))


def create_linear_map(signed: bool = True, total_bits: int = 8, add_zero: bool = True) -> torch.Tensor:
    """A linear map on [-1, 1] (or [0, 1]) with 2^total_bits values, zero-padded to 256."""
    sign = -1.0 if signed else 0.0
    total = 2**total_bits
    if add_zero or total_bits < 8:
        total = 2**total_bits if not signed else 2**total_bits - 1
    values = torch.linspace(sign, 1.0, total)
    gap = 256 - values.numel()
    if gap == 0:
        return values
    half = values.numel() // 2
    return torch.tensor(values[:half].tolist() + [0.0] * gap + values[half:].tolist())


def create_normal_map(offset: float = 0.9677083, use_extra_value: bool = True) -> torch.Tensor:
    """The NormalFloat map (NF4 in its first/last entries) as 256 sorted values; needs scipy."""
    try:
        from scipy.stats import norm
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ImportError("create_normal_map needs scipy: pip install scipy") from exc
    positive = norm.ppf(torch.linspace(offset, 0.5, 9 if use_extra_value else 8)[:-1]).tolist()
    negative = (-norm.ppf(torch.linspace(offset, 0.5, 8)[:-1])).tolist()
    zeros = [0.0] * (256 - len(positive) - len(negative))
    values = torch.tensor(positive + zeros + negative).sort().values
    return values / values.max()


def create_fp8_map(
    signed: bool = True, exponent_bits: int = 5, precision_bits: int = 2, total_bits: int = 8
) -> torch.Tensor:
    """A small-float map (sign, exponent, mantissa; bias 2^(e-1)) normalised to [-1, 1], 256 entries."""
    has_sign = 1 if signed else 0
    if exponent_bits + precision_bits != total_bits - has_sign:
        raise ValueError("create_fp8_map: exponent_bits + precision_bits must equal total_bits - signed")
    bias = 2 ** (exponent_bits - 1)
    values = []
    for evalue in range(2**exponent_bits):
        for bits in itertools.product([0, 1], repeat=precision_bits):
            value = 1.0 if evalue != 0 else 0.0
            for i, bit in enumerate(bits):
                value += bit * 2 ** -(i + 1)
            value = value * 2**-bias if evalue == 0 else value * 2 ** -(evalue - bias - 1)
            values.append(value)
            if signed:
                values.append(-value)
    values += [0.0] * (256 - len(values)) if total_bits < 8 else []
    code = torch.tensor(sorted(values))
    return code / code.max()

"""The native cpu optimizer kernels (backends/cpu/optim*.c) against the reference and float64 math.

Every optimizer x {32-bit, 8-bit} x {float32, bfloat16, float16} parameters x odd sizes, several step
numbers, weight decay on and off, gnorm_scale != 1, max_unorm for LAMB / LARS; the multi-tensor entry
against per-tensor calls; every instruction set (AVX-512 / AVX2 / portable generic) against the generic
oracle; thread counts; and bad input. Each step starts from the same state on both sides, so a rare
off-by-one code never compounds over steps.
"""

from __future__ import annotations

import re

import pytest
import torch

from bnb_api.core import codes, registry
from bnb_api.core.errors import BnbError
from bnb_api.core.ops import OPTIMIZERS, TWO_STATE_OPTIMIZERS
from bnb_api.core.reference import optim as ref
from bnb_api.core.reference.blockwise import nearest_code, quantize_flat

kernels_optim = pytest.importorskip("bnb_api.backends.cpu.kernels_optim")
if kernels_optim.load_error():
    pytest.skip(f"native optimizer library not available: {kernels_optim.load_error()}", allow_module_level=True)

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SIZES = [1, 7, 257, 1031]
STEPS = [1, 2, 10]
SIGNED = codes.dynamic_map(signed=True)
UNSIGNED = codes.dynamic_map(signed=False)
CLIPPED = ("lamb", "lars")
ISAS = kernels_optim.ISA_NAMES[: kernels_optim.ISA_NAMES.index(kernels_optim.isa_detected()) + 1]


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def hparams(optimizer: str, step: int, weight_decay: float = 0.0, **over) -> dict:
    hp = dict(lr=1e-2, beta1=0.9, beta2=0.99, beta3=0.999, alpha=5.0, eps=1e-8, weight_decay=weight_decay, step=step,
              gnorm_scale=0.75, max_unorm=1.0 if optimizer in CLIPPED else 0.0, blocksize=256)  # fmt: skip
    if optimizer == "rmsprop":
        hp["beta1"] = 0.95
    hp.update(over)
    return hp


def qmap1_for(optimizer: str) -> torch.Tensor:
    """One-state optimizers whose state is a second moment use the unsigned map."""
    return UNSIGNED if optimizer in ("rmsprop", "adagrad") else SIGNED


def make_case(optimizer: str, n: int, dtype: torch.dtype, eight_bit: bool, seed: int = 0, blocksize: int = 256):
    """Random parameter, gradient and realistic states: (p, g, state1, state2, absmax1, absmax2, qmap1, qmap2)."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(n, generator=gen).to(dtype)
    g = (torch.randn(n, generator=gen) * 0.5).to(dtype)
    signed_first = optimizer not in ("rmsprop", "adagrad")
    first = [torch.randn(n, generator=gen) * 0.1 if signed_first else torch.rand(n, generator=gen) * 0.05]
    if optimizer == "ademamix":
        first.append(torch.randn(n, generator=gen) * 0.1)
    second = torch.rand(n, generator=gen) * 0.05 if optimizer in TWO_STATE_OPTIMIZERS else None
    if not eight_bit:
        s1 = torch.stack(first) if optimizer == "ademamix" else first[0]
        return [p, g, s1, second, None, None, None, None]
    q1, q2 = qmap1_for(optimizer), UNSIGNED if second is not None else None
    quant1 = [quantize_flat(x, q1, blocksize) for x in first]
    s1 = torch.stack([c for c, _ in quant1]) if optimizer == "ademamix" else quant1[0][0]
    a1 = torch.stack([a for _, a in quant1]) if optimizer == "ademamix" else quant1[0][1]
    s2 = a2 = None
    if second is not None:
        s2, a2 = quantize_flat(second, q2, blocksize)
    return [p, g, s1, s2, a1, a2, q1, q2]


def clone(case):
    return [None if t is None else t.clone() for t in case]


def assert_codes_close(ref_codes: torch.Tensor, got: torch.Tensor, what: str) -> None:
    """8-bit codes: all within one step, at least 99.9% identical (fp32 rounding of the state values)."""
    d = (ref_codes.int() - got.int()).abs()
    same = (d == 0).float().mean().item()
    assert d.max().item() <= 1 and same >= 0.999, f"{what}: max code diff {d.max().item()}, {same:.5f} equal"


def p_tolerance(dtype: torch.dtype) -> dict:
    """One unit in the last place of the parameter dtype (sqrt of torch vs C may differ by 1 float32 ulp)."""
    rtol = {torch.float32: 1e-5, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}[dtype]
    return dict(rtol=rtol * 1.01, atol=1e-6)


def assert_step_close(ref_case, got_case, optimizer: str, what: str) -> None:
    p_ref, p_got = ref_case[0], got_case[0]
    torch.testing.assert_close(p_got.float(), p_ref.float(), **p_tolerance(p_ref.dtype), msg=lambda m: f"{what} p: {m}")
    for name, r, o in zip(("state1", "state2", "absmax1", "absmax2"), ref_case[2:6], got_case[2:6]):
        if r is None:
            assert o is None
            continue
        if r.dtype == torch.uint8:
            assert_codes_close(r, o, f"{what} {name}")
        elif name.startswith("absmax"):
            torch.testing.assert_close(o, r, rtol=1e-6, atol=0, msg=lambda m, name=name: f"{what} {name}: {m}")
        else:
            torch.testing.assert_close(o, r, rtol=1e-6, atol=1e-12, msg=lambda m, name=name: f"{what} {name}: {m}")


def run_native(case, optimizer, hp):
    p, g, s1, s2, a1, a2, q1, q2 = case
    kernels_optim.optimizer_step(optimizer, p, g, s1, s2, a1, a2, q1, q2, **hp)


def run_ref(case, optimizer, hp):
    p, g, s1, s2, a1, a2, q1, q2 = case
    ref.optimizer_step(optimizer, p, g, s1, s2, a1, a2, q1, q2, **hp)


# --------------------------------------------------------------------------------------------------
# against the reference
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("eight_bit", [False, True], ids=["32bit", "8bit"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_matches_reference(optimizer, dtype, eight_bit):
    for n in SIZES:
        for step in STEPS:
            for wd in (0.0, 0.05):
                hp = hparams(optimizer, step, wd)
                case = make_case(optimizer, n, dtype, eight_bit, seed=n * 31 + step)
                want, got = clone(case), clone(case)
                run_ref(want, optimizer, hp)
                run_native(got, optimizer, hp)
                assert_step_close(want, got, optimizer, f"{optimizer} n={n} step={step} wd={wd}")


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_matches_reference_large_parallel(optimizer):
    """Several OpenMP chunks, partial last block, blocksize 64 and 1024."""
    n = 3 * 16384 + 1031
    for eight_bit, blocksize in ((False, 256), (True, 64), (True, 1024)):
        hp = hparams(optimizer, 4, 0.01, blocksize=blocksize)
        case = make_case(optimizer, n, torch.float32, eight_bit, seed=5, blocksize=blocksize)
        want, got = clone(case), clone(case)
        run_ref(want, optimizer, hp)
        run_native(got, optimizer, hp)
        assert_step_close(want, got, optimizer, f"{optimizer} n={n} 8bit={eight_bit} bs={blocksize}")


@pytest.mark.parametrize("optimizer", CLIPPED)
def test_update_clipping_is_active(optimizer):
    """max_unorm small enough that the clip scale is < 1 (it must match), and max_unorm = 0 (no clipping)."""
    for max_unorm in (1e-3, 0.0):
        for eight_bit in (False, True):
            hp = hparams(optimizer, 3, 0.01, max_unorm=max_unorm, lr=1.0)
            case = make_case(optimizer, 5000, torch.float32, eight_bit, seed=3)
            want, got, unclipped = clone(case), clone(case), clone(case)
            run_ref(want, optimizer, hp)
            run_native(got, optimizer, hp)
            assert_step_close(want, got, optimizer, f"{optimizer} max_unorm={max_unorm}")
            run_ref(unclipped, optimizer, dict(hp, max_unorm=0.0))
            moved, moved_free = (want[0] - case[0]).norm(), (unclipped[0] - case[0]).norm()
            assert (moved < 0.5 * moved_free) == (max_unorm > 0)


def test_adamw_against_float64():
    """AdamW 32-bit, one step, against the formula evaluated in float64 here."""
    n, step, lr, b1, b2, eps, wd, gs = 1031, 3, 1e-2, 0.9, 0.999, 1e-8, 0.1, 0.5
    case = make_case("adamw", n, torch.float32, False, seed=11)
    p, g, m, v = (t.double() for t in case[:4])
    g = g * gs
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    u = (m / (1 - b1**step)) / (torch.sqrt(v / (1 - b2**step)) + eps)
    p = p * (1 - lr * wd) - lr * u
    got = clone(case)
    run_native(got, "adamw", dict(lr=lr, beta1=b1, beta2=b2, beta3=0.0, alpha=0.0, eps=eps, weight_decay=wd, step=step,
                                  gnorm_scale=gs, max_unorm=0.0, blocksize=256))  # fmt: skip
    torch.testing.assert_close(got[0].double(), p, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(got[2].double(), m, rtol=1e-6, atol=3e-8)  # cancellation: ulp of the terms
    torch.testing.assert_close(got[3].double(), v, rtol=1e-6, atol=1e-10)


# --------------------------------------------------------------------------------------------------
# multi-tensor, threads, instruction sets
# --------------------------------------------------------------------------------------------------


def _group(optimizer, dtype, eight_bit, sizes=(1, 300, 4099, 20000, 77)):
    return [make_case(optimizer, n, dtype, eight_bit, seed=i) for i, n in enumerate(sizes)]


def _step_multi(cases, optimizer, hp):
    two = optimizer in TWO_STATE_OPTIMIZERS
    eight_bit = cases[0][2].dtype == torch.uint8
    kernels_optim.optimizer_step_multi(
        optimizer, [c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases],
        [c[3] for c in cases] if two else [], [c[4] for c in cases] if eight_bit else [],
        [c[5] for c in cases] if eight_bit and two else [], cases[0][6], cases[0][7], **hp,
    )  # fmt: skip


def _assert_identical(a_cases, b_cases, what):
    for i, (a, b) in enumerate(zip(a_cases, b_cases)):
        for j, (x, y) in enumerate(zip(a, b)):
            if x is not None:
                assert torch.equal(x, y), f"{what}: param {i} tensor {j} differs"


@pytest.mark.parametrize("eight_bit", [False, True], ids=["32bit", "8bit"])
def test_struct_fill_fallback_gives_the_same_step(eight_bit, monkeypatch):
    """The field-by-field fill of the parameter structs (ABIs where they are not 11 packed 8-byte fields)
    hands C the same tensors as the one-copy fill."""
    hp = hparams("ademamix", 2, 0.01)
    cases = _group("ademamix", torch.float32, eight_bit)
    packed, fields = [clone(c) for c in cases], [clone(c) for c in cases]
    _step_multi(packed, "ademamix", hp)
    monkeypatch.setattr(kernels_optim, "_LAYOUT", [False])
    _step_multi(fields, "ademamix", hp)
    _assert_identical(packed, fields, "field-by-field fill vs one copy")


def test_multi_group_on_two_devices_names_the_parameter():
    cpu, meta = make_case("adamw", 100, torch.float32, True), make_case("adamw", 100, torch.float32, True)
    meta = [t.to("meta") for t in meta]
    lists = [[cpu[k], meta[k]] for k in range(6)]
    with pytest.raises(ValueError, match=r"optimizer_step_multi\[param 1\]: p is on meta but params\[0\] is on cpu"):
        torch.ops.bnb_api.optimizer_step_multi("adamw", *lists, cpu[6], cpu[7], **hparams("adamw", 1))


@pytest.mark.parametrize("first_eight_bit", [True, False])
def test_multi_group_of_mixed_state_widths_names_the_parameter(first_eight_bit):
    """A group whose second parameter has the other state width: its absmax is present (or missing) against
    its states, and the check names it."""
    a, b = make_case("adamw", 300, torch.float32, first_eight_bit), make_case("adamw", 300, torch.float32, True)
    if first_eight_bit:
        b = make_case("adamw", 300, torch.float32, False)
        absmax1, absmax2, words = [a[4], a[4].clone()], [a[5], a[5].clone()], "are for 8-bit (uint8) states only"
    else:
        absmax1, absmax2, words = [], [], "8-bit state1 needs absmax1"
    lists = [[a[k], b[k]] for k in range(4)]
    with pytest.raises(ValueError, match=r"optimizer_step_multi\[param 1\]: .*" + re.escape(words)):
        torch.ops.bnb_api.optimizer_step_multi("adamw", *lists, absmax1, absmax2, a[6] if first_eight_bit else None,
                                               a[7] if first_eight_bit else None, **hparams("adamw", 1))  # fmt: skip


@pytest.mark.parametrize("eight_bit", [False, True], ids=["32bit", "8bit"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_multi_equals_per_tensor(optimizer, eight_bit):
    hp = hparams(optimizer, 2, 0.01)
    for dtype in (torch.float32, torch.bfloat16):
        cases = _group(optimizer, dtype, eight_bit)
        single, multi, want = [clone(c) for c in cases], [clone(c) for c in cases], [clone(c) for c in cases]
        for c in single:
            run_native(c, optimizer, hp)
        _step_multi(multi, optimizer, hp)
        _assert_identical(single, multi, f"{optimizer} {dtype} multi vs single")
        ref.optimizer_step_multi(
            optimizer, *[[c[k] for c in want] for k in range(2)], [c[2] for c in want],
            [c[3] for c in want] if optimizer in TWO_STATE_OPTIMIZERS else [],
            [c[4] for c in want] if eight_bit else [],
            [c[5] for c in want] if eight_bit and optimizer in TWO_STATE_OPTIMIZERS else [],
            want[0][6], want[0][7], **hp,
        )  # fmt: skip
        for w, m in zip(want, multi):
            assert_step_close(w, m, optimizer, f"{optimizer} {dtype} multi vs reference")


def test_multi_empty_group_and_empty_param():
    kernels_optim.optimizer_step_multi("adam", [], [], [], [], [], [], None, None, **hparams("adam", 1))
    case = make_case("adam", 0, torch.float32, True)
    run_native(case, "adam", hparams("adam", 1))
    assert case[0].numel() == 0


@pytest.mark.parametrize("eight_bit", [False, True], ids=["32bit", "8bit"])
def test_thread_count_does_not_change_results(eight_bit):
    hp = hparams("lamb", 3, 0.01)
    case = make_case("lamb", 200_003, torch.float32, eight_bit, seed=9)
    outs = []
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            c = clone(case)
            run_native(c, "lamb", hp)
            outs.append(c)
    finally:
        torch.set_num_threads(before)
    _assert_identical([outs[0]], [outs[1]], "1 vs 2 threads")


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_simd_equals_generic(optimizer, isa):
    """Each SIMD path against the portable generic oracle: identical bits (clipping norms: within rounding)."""
    for eight_bit in (False, True):
        for dtype in DTYPES:
            hp = hparams(optimizer, 2, 0.01)
            case = make_case(optimizer, 40_009, dtype, eight_bit, seed=2)
            oracle, got = clone(case), clone(case)
            with kernels_optim.forced_isa("generic"):
                run_native(oracle, optimizer, hp)
            with kernels_optim.forced_isa(isa) as active:
                assert active == isa
                run_native(got, optimizer, hp)
            if optimizer in CLIPPED:  # the norms are summed in another order
                assert_step_close(oracle, got, optimizer, f"{isa} vs generic")
            else:
                _assert_identical([oracle], [got], f"{optimizer} {dtype} 8bit={eight_bit} {isa} vs generic")


def _code_books() -> dict[str, torch.Tensor]:
    """Sorted 256-entry code books that reach every search: the optimizers' dynamic maps, random ones, ones
    with codes on powers of two (midpoints near octave edges), two reaching past +-1 (one with midpoints at
    exactly +-1, where values an ulp past +-1 must count as +-1), one too dense for any
    table, one with a zero midpoint, one with midpoints below 2^-30 (no octave table) and one with equal
    codes."""
    gen = torch.Generator().manual_seed(1)
    pow2 = 2.0 ** -(torch.arange(128.0) / 8)
    beyond = 1 + 0.05 * torch.arange(1.0, 29.0)
    past_one = torch.sort(torch.cat([torch.linspace(-0.9, 0.95, 200), beyond, -beyond])).values
    sixth = 2.0 ** -(torch.arange(129.0) / 6)  # 6 codes an octave down to 2^-21
    tiny = torch.sort(torch.cat([-sixth[:126], torch.tensor([1e-12, 2e-12]), sixth[:128]])).values
    repeated = torch.sort(torch.cat([torch.rand(200, generator=gen) * 2 - 1, torch.full((56,), 0.25)])).values
    outer = torch.tensor([0.75, 1.25, 1.5, 1.75])
    at_one = torch.sort(torch.cat([sixth[4:128], -sixth[4:129], outer, -outer[:3]])).values
    return {
        "signed": SIGNED,
        "unsigned": UNSIGNED,
        "random": torch.sort(torch.rand(256, generator=gen) * 2 - 1).values,
        "random positive": torch.sort(torch.rand(256, generator=gen)).values,
        "powers of two": torch.sort(torch.cat([-sixth[:127], sixth[:129]])).values,
        "positive powers of two": 2.0 ** -(torch.arange(255.0, -1.0, -1.0) / 12),
        "zero midpoint": torch.sort(torch.cat([-pow2, pow2])).values,
        "past one": past_one,
        "midpoints at one": at_one,
        "dense": torch.cat([-torch.ones(1), 0.5 + 1e-4 * torch.arange(255.0)]),
        "tiny midpoints": tiny,
        "repeated": repeated,
    }


def _search_inputs(q: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Values in [-1, 1] that probe a search: random, midpoints and their float neighbours, the codes,
    powers of two and their neighbours (octave edges), zeros and tiny magnitudes."""
    mid = (q[:-1] + q[1:]) * 0.5
    p2 = 2.0 ** -torch.arange(0.0, 40.0)
    edges = torch.cat([p2, -p2, torch.nextafter(p2, p2 * 2), torch.nextafter(p2, p2 * 0), -torch.nextafter(p2, p2 * 0)])
    x = torch.cat([torch.rand(20011, generator=gen) * 2 - 1, mid, q, torch.nextafter(mid, mid + 1),
                   torch.nextafter(mid, mid - 1), edges,
                   torch.tensor([-1.0, 1.0, 0.0, -0.0, 1e-30, -1e-30, 1e-40, -1e-40])])  # fmt: skip
    return x.clamp(-1, 1).contiguous()


@pytest.mark.parametrize("isa", ISAS)
def test_nearest_code_search_is_exact(isa):
    """The requantization search against the reference bucketize for every code book of _code_books: random
    values, exact midpoints (ties go to the lower index), codes, octave edges, zeros, tiny values, and
    non-finite values (any code, never out of bounds)."""
    gen = torch.Generator().manual_seed(1)
    for name, q in _code_books().items():
        x = _search_inputs(q, gen)
        with kernels_optim.forced_isa(isa):
            got = kernels_optim.nearest_codes(q, x)
            odd = kernels_optim.nearest_codes(q, torch.tensor([float("nan"), float("inf"), -float("inf")] * 7))
        assert torch.equal(got.long(), nearest_code(x, q)), f"{isa}, {name}: search differs from the reference"
        assert odd.dtype == torch.uint8 and odd.numel() == 21


@pytest.mark.parametrize("isa", ISAS)
def test_8bit_step_with_every_code_book(isa):
    """AdamW 8-bit steps whose first state uses each code book of _code_books (each search kind, octave tables
    with and without clamping; the second state too when the book has no negative code), states that reach
    their block's absmax (scaled values at +-1 and an ulp past): every SIMD path gives the generic oracle's bits."""
    gen = torch.Generator().manual_seed(5)
    n, bs = 40_009, 64  # above the size from which the kernels build search tables
    for name, q in _code_books().items():
        p = torch.randn(n, generator=gen)
        g = torch.randn(n, generator=gen) * 0.5
        m = torch.randn(n, generator=gen) * 0.1
        v = torch.rand(n, generator=gen) * 0.05
        q2 = q if q.min() >= 0 else UNSIGNED
        s1, a1 = quantize_flat(m, q, bs)
        s2, a2 = quantize_flat(v, q2, bs)
        case = [p, g, s1, s2, a1, a2, q, q2]
        for step in (1, 2, 3):
            hp = hparams("adamw", step, 0.01, blocksize=bs)
            oracle, got = clone(case), clone(case)
            with kernels_optim.forced_isa("generic"):
                run_native(oracle, "adamw", hp)
            with kernels_optim.forced_isa(isa):
                run_native(got, "adamw", hp)
            _assert_identical([oracle], [got], f"{isa}, code book {name}, step {step}")
            case = got


def test_scaled_block_values_stay_within_one():
    """What lets the octave requantization skip its clamp (optim_avx512.c, v_scaled64): RN(a * RN(1 / a)) <= 1
    for every float32 a in [1, 2), hence (exact power-of-two scaling) for every a whose reciprocal is normal;
    above 2^126, where the reciprocal is subnormal, products past 1 exist and those blocks are clamped."""
    a = torch.arange(0x3F800000, 0x40000000, dtype=torch.int64).to(torch.int32).view(torch.float32)
    assert (a * (1.0 / a)).max().item() == 1.0
    huge = torch.arange(0x7E800000, 0x7E900000, dtype=torch.int64).to(torch.int32).view(torch.float32)
    assert (huge * (1.0 / huge)).max().item() > 1.0


@pytest.mark.parametrize("isa", ISAS)
def test_8bit_step_with_huge_states(isa):
    """Blocks whose absmax is near float32's maximum (scaled values can round past +-1 there, so they are
    clamped), with a code book that has midpoints at exactly +-1: every SIMD path gives the generic oracle's
    codes, absmax and parameters."""
    q = _code_books()["midpoints at one"]
    gen = torch.Generator().manual_seed(6)
    n, bs = 40_009, 64
    p = torch.randn(n, generator=gen)
    g = torch.randn(n, generator=gen) * 0.5
    m = torch.randn(n, generator=gen) * 0.1
    m[: n // 2] *= 2e39  # up to ~1e39 * 0.4 in the first half: blocks with absmax between 2^126 and FLT_MAX
    m = m.clamp(-3.3e38, 3.3e38)
    v = torch.rand(n, generator=gen) * 0.05
    s1, a1 = quantize_flat(m, q, bs)
    s2, a2 = quantize_flat(v, UNSIGNED, bs)
    assert (a1 > 2.0**126).sum() > 100
    case = [p, g, s1, s2, a1, a2, q, UNSIGNED]
    hp = hparams("adamw", 2, 0.0, blocksize=bs)
    oracle, got = clone(case), clone(case)
    with kernels_optim.forced_isa("generic"):
        run_native(oracle, "adamw", hp)
    with kernels_optim.forced_isa(isa):
        run_native(got, "adamw", hp)
    for j, what in ((0, "p"), (2, "state1"), (3, "state2"), (4, "absmax1"), (5, "absmax2")):
        assert torch.equal(oracle[j], got[j]) or torch.allclose(oracle[j], got[j], rtol=0, atol=0, equal_nan=True), (
            f"{isa}: {what} differs"
        )


def test_search_kinds():
    """The dynamic maps get the fastest search the CPU allows, and code books a table cannot serve fall back
    (so test_nearest_code_search_is_exact covers each kind)."""
    books = _code_books()
    with kernels_optim.forced_isa("generic"):
        assert kernels_optim.search_kind(SIGNED) == "register"
    if "avx2" not in ISAS:
        pytest.skip("this CPU has no AVX2: the portable search only")
    with kernels_optim.forced_isa("avx2"):
        assert kernels_optim.search_kind(SIGNED) == "bucket"
        assert kernels_optim.search_kind(books["dense"]) == "register"
        assert kernels_optim.search_kind(books["random"]) == "register"  # some random midpoints are very close
    if "avx512vbmi" not in ISAS:
        pytest.skip("this CPU has no AVX-512 VBMI: no octave tables")
    with kernels_optim.forced_isa("avx512vbmi"):
        for name in ("signed", "unsigned", "powers of two", "positive powers of two", "past one", "midpoints at one"):
            assert kernels_optim.search_kind(books[name]) == "octave", name
        for name in ("zero midpoint", "tiny midpoints"):
            assert kernels_optim.search_kind(books[name]) == "bucket", name
        assert kernels_optim.search_kind(books["repeated"]) == "register"
        assert kernels_optim.search_kind(books["dense"]) == "register"


def test_search_kind_rejects_bad_code_books():
    with pytest.raises(ValueError, match=r"qmap.numel\(\)=255, but should be 256"):
        kernels_optim.search_kind(SIGNED[:255].contiguous())
    with pytest.raises(TypeError, match="qmap.dtype=torch.float64"):
        kernels_optim.search_kind(SIGNED.double())


@pytest.mark.parametrize("blocksize", [64, 256, 512, 2048])
def test_tiled_8bit_step_matches_generic(blocksize):
    """8-bit steps whose parameters end inside a tile and inside a block, with blocksizes below, at and
    above the 512-element tile: the SIMD kernels give the generic oracle's bits. The last tiles of 65_536 + 192
    and + 256 are whole 64-value steps (the software-pipelined passes of the VBMI kernels take them), the first
    ending inside a block for blocksizes above 64."""
    for n in (40_009, 33_000, 65_536 + 65, 65_536 + 192, 65_536 + 256):
        case = make_case("adamw", n, torch.float32, True, seed=3, blocksize=blocksize)
        hp = hparams("adamw", 3, 0.01, blocksize=blocksize)
        oracle, got = clone(case), clone(case)
        with kernels_optim.forced_isa("generic"):
            run_native(oracle, "adamw", hp)
        run_native(got, "adamw", hp)
        _assert_identical([oracle], [got], f"n={n} blocksize={blocksize}")


# --------------------------------------------------------------------------------------------------
# dispatch and bad input
# --------------------------------------------------------------------------------------------------


def test_dispatch_picks_native_and_falls_back_on_mixed_dtypes():
    case = make_case("adamw", 1031, torch.bfloat16, True)
    names = ("optimizer", "p", "g", "state1", "state2", "absmax1", "absmax2", "qmap1", "qmap2")
    call = dict(zip(names, ["adamw", *case]), **hparams("adamw", 1))
    assert registry.select("optimizer_step", "cpu", call).backend == "cpu"
    mixed = dict(call, g=case[1].float())
    assert registry.select("optimizer_step", "cpu", mixed).backend != "cpu"
    got, want = clone(case), clone(case)
    with registry.use_backend("cpu"):
        torch.ops.bnb_api.optimizer_step("adamw", *got, **hparams("adamw", 1))
    run_ref(want, "adamw", hparams("adamw", 1))
    assert_step_close(want, got, "adamw", "through torch.ops")


def _bad(case, **changes):
    names = ("p", "g", "state1", "state2", "absmax1", "absmax2", "qmap1", "qmap2")
    args = dict(zip(names, clone(case)))
    hp = hparams("adam", 1)
    for k, v in changes.items():
        (args if k in names else hp)[k] = v
    return args, hp


@pytest.mark.parametrize(
    "change, exc, words",
    [
        (dict(g=torch.zeros(100, dtype=torch.float16)), TypeError, "grads[0].dtype"),
        (dict(g=torch.zeros(99)), ValueError, "grads[0].numel()"),
        (dict(state1=torch.zeros(100, dtype=torch.uint8).view(10, 10).t()), ValueError, "state1[0] must be contig"),
        (dict(state2=None), ValueError, "state2 has 0 tensors"),
        (dict(absmax1=torch.zeros(3)), ValueError, "absmax1[0].numel()=3"),
        (dict(absmax2=torch.zeros(1, dtype=torch.float64)), TypeError, "absmax2[0].dtype"),
        (dict(qmap2=None), ValueError, "qmap2"),
        (dict(qmap1=torch.zeros(255)), ValueError, "qmap1.numel()=255"),
        (dict(blocksize=100), ValueError, "blocksize=100"),
        (dict(blocksize=32), ValueError, "blocksize=32"),
        (dict(step=0), ValueError, "step=0"),
        (dict(max_unorm=-1.0), ValueError, "max_unorm=-1.0"),
        (dict(p=torch.zeros(100, dtype=torch.float64)), TypeError, "params[0].dtype"),
    ],
)
def test_bad_input_raises_naming_the_argument(change, exc, words):
    case = make_case("adam", 100, torch.float32, True)
    args, hp = _bad(case, **change)
    with pytest.raises(exc) as info:
        kernels_optim.optimizer_step("adam", *args.values(), **hp)
    assert isinstance(info.value, BnbError)
    assert words in str(info.value), str(info.value)


def test_bad_optimizer_and_lists():
    case = make_case("adam", 10, torch.float32, False)
    with pytest.raises(ValueError, match="optimizer='sgd'"):
        kernels_optim.optimizer_step("sgd", *case, **hparams("adam", 1))
    with pytest.raises(ValueError, match="grads has 0 tensors"):
        kernels_optim.optimizer_step_multi("adam", [case[0]], [], [case[2]], [case[3]], [], [], None, None,
                                           **hparams("adam", 1))  # fmt: skip
    with pytest.raises(ValueError, match="absmax1 has 1 tensors, but should have 0"):
        kernels_optim.optimizer_step_multi("adam", [case[0]], [case[1]], [case[2]], [case[3]], [torch.zeros(1)], [],
                                           None, None, **hparams("adam", 1))  # fmt: skip
    lion = make_case("lion", 10, torch.float32, False)
    with pytest.raises(ValueError, match="state2 has 1 tensors, but should have 0"):
        kernels_optim.optimizer_step("lion", lion[0], lion[1], lion[2], torch.zeros(10), None, None, None, None,
                                     **hparams("lion", 1))  # fmt: skip


def test_c_rejects_inconsistent_lengths():
    """The C entry checks every length it is given against the others (never trusts a size)."""
    from bnb_api.backends.cpu import _optim_lib

    ffi, lib = _optim_lib.ffi, _optim_lib.lib
    p, g = torch.randn(64), torch.randn(64)
    m, v = torch.zeros(64, dtype=torch.uint8), torch.zeros(64, dtype=torch.uint8)
    a1, a2 = torch.zeros(1), torch.zeros(1)
    q = SIGNED.clone()
    h = ffi.new("bnbo_hparams *", dict(optimizer=lib.BNBO_ADAM, step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8,
                                       gnorm_scale=1.0))  # fmt: skip

    def call(eight_bit=1, blocksize=64, n_q=256, **fields):
        t = ffi.new("bnbo_tensor[]", 1)
        base = dict(p=p.data_ptr(), g=g.data_ptr(), state1=m.data_ptr(), state2=v.data_ptr(), absmax1=a1.data_ptr(),
                    absmax2=a2.data_ptr(), n=64, n_state1=64, n_state2=64, n_absmax1=1, n_absmax2=1)  # fmt: skip
        base.update(fields)
        for k, val in base.items():
            setattr(t[0], k, ffi.cast("float *" if k.startswith("absmax") else "void *", val) if k in
                    ("p", "g", "state1", "state2", "absmax1", "absmax2") else val)  # fmt: skip
        qp = ffi.cast("float *", q.data_ptr())
        return lib.bnbo_step(h, lib.BNBO_F32, eight_bit, qp, n_q, qp, n_q, blocksize, t, 1, 1)

    assert call() == lib.BNBO_OK
    assert call(n_state1=63) == lib.BNBO_EINVAL
    assert call(n_state2=0) == lib.BNBO_EINVAL
    assert call(n_absmax1=2) == lib.BNBO_EINVAL
    assert call(n_absmax2=0) == lib.BNBO_EINVAL
    assert call(blocksize=96) == lib.BNBO_EINVAL
    assert call(n_q=255) == lib.BNBO_EINVAL
    assert call(state2=0) == lib.BNBO_EINVAL
    assert call(n=-1) == lib.BNBO_EINVAL
    assert call(eight_bit=0) == lib.BNBO_EINVAL  # absmax lengths given for 32-bit states
    assert lib.bnbo_set_isa(7) == lib.BNBO_EINVAL
    assert lib.bnbo_search_kind(ffi.NULL, 256) == lib.BNBO_EINVAL
    assert lib.bnbo_search_kind(ffi.cast("float *", SIGNED.data_ptr()), 255) == lib.BNBO_EINVAL


def test_isa_env_names_are_checked():
    with pytest.raises(ValueError, match="isa='sse9'"):
        kernels_optim.set_isa("sse9")
    assert kernels_optim.isa() in kernels_optim.ISA_NAMES
    assert kernels_optim.isa_detected() == ISAS[-1]

"""The cpu kernels built as on a CPU without x86 (aarch64, ppc64le, ...): ``-DBNB_API_PORTABLE`` compiles every
x86 path out, so this x86 machine can build and run exactly what a non-x86 install gets.

Both native families are compiled that way (warnings are errors), loaded beside the installed ones, and every
op's portable library must report the generic instruction set and return the same bits as the installed library
capped at generic.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys

import pytest
import torch

from bnb_api.core import codes
from bnb_api.core.reference import blockwise as ref_bw
from bnb_api.core.reference import fourbit as ref_4b

kq = pytest.importorskip("bnb_api.backends.cpu.kernels_quant")
ko = pytest.importorskip("bnb_api.backends.cpu.kernels_optim")
if kq.load_error() or ko.load_error():
    pytest.skip(f"native libraries not available: {kq.load_error() or ko.load_error()}", allow_module_level=True)

CPU_DIR = os.path.dirname(kq.__file__)
SOURCES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           "backends", "cpu")  # fmt: skip


def _sources() -> str:
    """The directory with the C sources and build scripts: the installed package's, else the checkout's."""
    for d in (CPU_DIR, SOURCES_DIR):
        if os.path.exists(os.path.join(d, "build_quant.py")) and os.path.exists(os.path.join(d, "quant_gemv.c")):
            return d
    pytest.skip("the C sources are not installed next to the package")


def _load_so(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    """(quant module, optim module) of the portable build."""
    src = _sources()
    sys.path.insert(0, src)
    try:
        import build_optim
        import build_quant
    finally:
        sys.path.remove(src)
    tmp = str(tmp_path_factory.mktemp("portable"))
    flags = ("-DBNB_API_PORTABLE", "-Werror")
    quant = _load_so(build_quant.FAMILY.build_to(tmp, flags), "_quant_lib")
    optim = _load_so(build_optim.FAMILY.build_to(tmp, flags), "_optim_lib")
    return quant, optim


@contextlib.contextmanager
def _using(family, mod):
    """Route a kernels module's calls to ``mod``'s library within the block."""
    saved = dict(family._state)
    family._state.clear()
    family._state.update(ffi=mod.ffi, lib=mod.lib)
    try:
        yield
    finally:
        family._state.clear()
        family._state.update(saved)


def _both(family, forced_isa, mod, fn):
    """fn() with the installed library capped at generic, then with the portable one."""
    with forced_isa("generic"):
        installed = fn()
    with _using(family, mod):
        return installed, fn()


def _same(a, b, what):
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        if x is None or y is None:
            assert x is None and y is None, what
        else:
            assert x.dtype == y.dtype and torch.equal(x, y), what


def test_portable_build_runs_generic(portable):
    quant, optim = portable
    assert quant.lib.bnbq_isa_detected() == quant.lib.BNBQ_ISA_GENERIC
    assert optim.lib.bnbo_isa_detected() == optim.lib.BNBO_ISA_GENERIC
    with _using(kq._NATIVE, quant):
        assert kq.isa() == "generic"
        assert kq.set_isa("avx512") == "generic"  # nothing above generic exists in this build


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_portable_quant_kernels_match_the_installed_generic_path(portable, dtype):
    quant, _ = portable
    gen = torch.Generator().manual_seed(5)
    A = (torch.randn(37, 130, generator=gen) * 3).to(dtype)
    dmap, nf4 = codes.dynamic_map(), codes.code_4bit("nf4")

    def run():
        q8, am8 = kq.quantize_blockwise_cpu(A, dmap, 64)
        dq8 = kq.dequantize_blockwise_cpu(q8, am8, dmap, 64, dtype)
        q4, am4 = kq.quantize_4bit_cpu(A, 64, "nf4", torch.uint8)
        dq4 = kq.dequantize_4bit_cpu(q4, am4, 64, "nf4", [37, 130], dtype)
        W = (torch.randn(45, 256, generator=torch.Generator().manual_seed(6))).to(dtype)
        p, am = ref_4b.quantize_4bit(W.float(), 64, "nf4", torch.uint8)
        off = am.mean().reshape(1)
        qa, na = ref_bw.quantize_blockwise(am - off, dmap, 256)
        X = torch.randn(3, 256, generator=torch.Generator().manual_seed(7)).to(dtype)
        y = kq.gemv_4bit_cpu(X, p.view(-1), [45, 256], am, nf4, 64)
        y_nested = kq.gemv_4bit_cpu(X, p.view(-1), [45, 256], qa, nf4, 64, na, dmap, off, 256)
        ci, rs, outl = kq.int8_vectorwise_quant_cpu(A, 2.0)
        return q8, am8, dq8, q4, am4, dq4, y, y_nested, ci, rs, outl

    installed, port = _both(kq._NATIVE, kq.forced_isa, quant, run)
    names = "q8 absmax8 dequant8 q4 absmax4 dequant4 gemv gemv_nested int8 row_stats outliers".split()
    for name, a, b in zip(names, installed, port):
        _same(a, b, f"{name} [{dtype}]")


def test_portable_int8_matmul_matches_the_installed_generic_path(portable):
    quant, _ = portable
    gen = torch.Generator().manual_seed(8)
    A = torch.randint(-127, 128, (5, 300), generator=gen, dtype=torch.int8)
    B = torch.randint(-127, 128, (33, 300), generator=gen, dtype=torch.int8)
    installed, port = _both(kq._NATIVE, kq.forced_isa, quant, lambda: kq.int8_linear_matmul_cpu(A, B))
    _same(installed, port, "int8_linear_matmul")
    assert torch.equal(port, (A.int() @ B.int().T))


@pytest.mark.parametrize("eight_bit", [False, True])
def test_portable_optimizer_matches_the_installed_generic_path(portable, eight_bit):
    _, optim = portable
    gen = torch.Generator().manual_seed(9)
    n, bs = 1000, 256
    p0, g = torch.randn(n, generator=gen), torch.randn(n, generator=gen) * 0.1
    if eight_bit:
        signed, unsigned = codes.dynamic_map(signed=True), codes.dynamic_map(signed=False)
        s1, a1 = ref_bw.quantize_blockwise(torch.randn(n, generator=gen) * 0.01, signed, bs)
        s2, a2 = ref_bw.quantize_blockwise(torch.rand(n, generator=gen) * 1e-4, unsigned, bs)
        state = (s1, s2, a1, a2, signed, unsigned)
    else:
        state = (torch.randn(n, generator=gen) * 0.01, torch.rand(n, generator=gen) * 1e-4, None, None, None, None)

    def run():
        p = p0.clone()
        st = tuple(None if t is None else t.clone() for t in state)
        ko.optimizer_step("adamw", p, g, *st, lr=1e-3, beta1=0.9, beta2=0.999, beta3=0.0, alpha=0.0, eps=1e-8,
                          weight_decay=0.01, step=3, blocksize=bs)  # fmt: skip
        return (p, *st[:4])

    installed, port = _both(ko._NATIVE, ko.forced_isa, optim, run)
    _same(installed, port, f"adamw step, eight_bit={eight_bit}")
    assert not torch.equal(port[0], p0)  # the step moved the parameters

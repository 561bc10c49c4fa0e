"""The op contract: argument checks, opcheck, fake kernels and torch.compile."""

from __future__ import annotations

import pytest
import torch

import bnb_api
import bnb_api.functional as F
from bnb_api.core import codes

ops = torch.ops.bnb_api


def nf4_weight(N=32, K=64, dtype=torch.float16, nested=False):
    W = torch.randn(N, K, dtype=dtype, generator=torch.Generator().manual_seed(N))
    return W, *F.quantize_4bit(W, blocksize=64, quant_type="nf4", compress_statistics=nested)


# --- argument checks: each bad input names the argument and what was expected ------------------------

BAD_CALLS = [
    (lambda: ops.quantize_blockwise(torch.randn(10).int(), codes.dynamic_map(), 256), TypeError, "A.dtype=int32"),
    (lambda: ops.quantize_blockwise(torch.randn(10), codes.dynamic_map(), 48), ValueError, "blocksize=48"),
    (lambda: ops.quantize_blockwise(torch.randn(10), torch.zeros(16), 256), ValueError, "code has 16 elements"),
    (lambda: ops.quantize_blockwise(torch.randn(10), codes.dynamic_map().double(), 256), TypeError, "code.dtype"),
    (
        lambda: ops.dequantize_blockwise(
            torch.zeros(10, dtype=torch.uint8), torch.ones(2), codes.dynamic_map(), 256, torch.float32
        ),
        ValueError,
        "absmax has 2 elements",
    ),  # fmt: skip
    (
        lambda: ops.dequantize_blockwise(
            torch.zeros(10, dtype=torch.uint8), torch.ones(1), codes.dynamic_map(), 256, torch.int32
        ),
        TypeError,
        "dtype=torch.int32",
    ),  # fmt: skip
    (lambda: ops.quantize_4bit(torch.randn(64), 48, "nf4", torch.uint8), ValueError, "blocksize=48"),
    (lambda: ops.quantize_4bit(torch.randn(64), 64, "nf5", torch.uint8), ValueError, "quant_type='nf5'"),
    (lambda: ops.quantize_4bit(torch.randn(6), 64, "nf4", torch.float32), ValueError, "packed bytes"),
    (
        lambda: ops.dequantize_4bit(torch.zeros(10, dtype=torch.uint8), torch.ones(1), 64, "nf4", [21], torch.float16),
        ValueError,
        "needs 11",
    ),  # fmt: skip
    (lambda: ops.int8_vectorwise_quant(torch.randn(4, 4), -1.0), ValueError, "threshold=-1.0"),
    (
        lambda: ops.int8_linear_matmul(torch.zeros(2, 3, dtype=torch.int8), torch.zeros(4, 5, dtype=torch.int8)),
        ValueError,
        "do not match",
    ),  # fmt: skip
    (lambda: ops.int8_linear_matmul(torch.zeros(2, 3), torch.zeros(4, 3, dtype=torch.int8)), TypeError, "A.dtype"),
    (
        lambda: ops.int8_mm_dequant(torch.zeros(2, 3, dtype=torch.int32), torch.ones(3), torch.ones(3)),
        ValueError,
        "row_stats has 3 elements",
    ),  # fmt: skip
    (
        lambda: ops.int8_mm_outlier(torch.randn(2, 3), torch.zeros(4, 3, dtype=torch.int8), torch.ones(5), 6.0),
        ValueError,
        "SCB has 5 elements",
    ),  # fmt: skip
]


@pytest.mark.parametrize("index", range(len(BAD_CALLS)))
def test_bad_arguments_raise_clear_errors(index):
    call, error, fragment = BAD_CALLS[index]
    with pytest.raises(error) as info:
        call()
    assert fragment in str(info.value)
    assert isinstance(info.value, bnb_api.BnbError)


def test_gemv_checks():
    W, packed, state = nf4_weight()
    code = state.code
    rows = torch.randn(2, 3, 64, dtype=torch.float16)  # a few rows: each as its own gemv
    got = ops.gemv_4bit(rows, packed, [32, 64], state.absmax, code, 64)
    assert got.shape == (2, 3, 32)
    for i, j in ((0, 0), (1, 2)):
        assert torch.equal(got[i, j], ops.gemv_4bit(rows[i, j], packed, [32, 64], state.absmax, code, 64))
    with pytest.raises(ValueError, match="must end in K=64"):
        ops.gemv_4bit(torch.randn(1, 63, dtype=torch.float16), packed, [32, 64], state.absmax, code, 64)
    with pytest.raises(ValueError, match="absmax has 31 elements"):
        ops.gemv_4bit(torch.randn(1, 64, dtype=torch.float16), packed, [32, 64], state.absmax[:31], code, 64)
    with pytest.raises(TypeError, match="absmax.dtype=uint8"):
        ops.gemv_4bit(torch.randn(1, 64), packed, [32, 64], state.absmax.to(torch.uint8), code, 64)
    with pytest.raises(ValueError, match="nested_absmax needs nested_code"):
        ops.gemv_4bit(torch.randn(1, 64), packed, [32, 64], state.absmax.to(torch.uint8), code, 64, torch.ones(1))


def test_optimizer_checks():
    p = torch.randn(300)
    s1 = torch.zeros(300)
    args = dict(lr=1e-3, beta1=0.9, beta2=0.99, beta3=0.0, alpha=0.0, eps=1e-8, weight_decay=0.0)
    with pytest.raises(ValueError, match="optimizer='sgd'"):
        ops.optimizer_step("sgd", p, p, s1, None, None, None, None, None, step=1, **args)
    with pytest.raises(ValueError, match="needs state2"):
        ops.optimizer_step("adam", p, p, s1, None, None, None, None, None, step=1, **args)
    with pytest.raises(ValueError, match="step=0"):
        ops.optimizer_step("lion", p, p, s1, None, None, None, None, None, step=0, **args)
    with pytest.raises(ValueError, match="g.shape"):
        ops.optimizer_step("lion", p, torch.randn(3), s1, None, None, None, None, None, step=1, **args)
    with pytest.raises(ValueError, match="needs absmax1 and qmap1"):
        ops.optimizer_step(
            "lion", p, p, torch.zeros(300, dtype=torch.uint8), None, None, None, None, None, step=1, **args
        )
    with pytest.raises(ValueError, match="contiguous"):
        ops.optimizer_step("lion", torch.randn(20, 15).t(), torch.randn(15, 20), torch.zeros(15, 20), None, None, None,
                           None, None, step=1, **args)  # fmt: skip


# --- opcheck: schema, fake kernels, autograd registration, AOT dispatch ----------------------------


def opcheck_samples():
    W, packed, state = nf4_weight()
    _, packed_n, state_n = nf4_weight(nested=True)
    A1 = torch.randn(1, 64, dtype=torch.float16)
    q8, s8 = F.quantize_blockwise(torch.randn(1000), blocksize=256)
    CB, SCB, _ = F.int8_vectorwise_quant(torch.randn(24, 64, dtype=torch.float16))
    i32 = torch.randint(-1000, 1000, (5, 24), dtype=torch.int32)
    p = torch.randn(300)
    return [
        (ops.quantize_blockwise, (torch.randn(3, 333), codes.dynamic_map(), 256)),
        (ops.dequantize_blockwise, (q8, s8.absmax, codes.dynamic_map(), 256, torch.bfloat16)),
        (ops.quantize_4bit, (torch.randn(7, 33, dtype=torch.bfloat16), 64, "fp4", torch.uint8)),
        (ops.quantize_4bit, (torch.randn(8, 64), 128, "nf4", torch.int16)),  # float views may hold NaN patterns
        (ops.dequantize_4bit, (packed, state.absmax, 64, "nf4", [32, 64], torch.float16)),
        (ops.gemv_4bit, (A1, packed, [32, 64], state.absmax, state.code, 64)),
        (
            ops.gemv_4bit,
            (
                A1,
                packed_n,
                [32, 64],
                state_n.absmax,
                state_n.code,
                64,
                state_n.state2.absmax,
                state_n.state2.code,
                state_n.offset,
                256,
            ),
        ),  # fmt: skip
        (ops.int8_vectorwise_quant, (torch.randn(5, 64, dtype=torch.float16), 0.0)),
        (torch.ops.bnb_api.int8_linear_matmul.default, (torch.randint(-127, 127, (5, 64), dtype=torch.int8), CB)),
        (ops.int8_mm_dequant, (i32, torch.rand(5), SCB, torch.float32, torch.randn(24))),
        (ops.int8_mm_outlier, (torch.randn(5, 64, dtype=torch.float16), CB, SCB, 6.0, None)),
        (
            ops.optimizer_step,
            (
                "adamw",
                p.clone(),
                torch.randn(300),
                torch.zeros(300),
                torch.zeros(300),
                None,
                None,
                None,
                None,
                1e-3,
                0.9,
                0.99,
                0.0,
                0.0,
                1e-8,
                0.01,
                3,
            ),
        ),  # fmt: skip
        (
            ops.optimizer_step,
            (
                "lion",
                p.clone(),
                torch.randn(300),
                torch.zeros(300, dtype=torch.uint8),
                None,
                torch.zeros(2),
                None,
                codes.dynamic_map(),
                None,
                1e-3,
                0.9,
                0.99,
                0.0,
                0.0,
                1e-8,
                0.0,
                1,
            ),
        ),
        (
            ops.optimizer_step_multi,
            (
                "momentum",
                [p.clone(), torch.randn(7)],
                [torch.randn(300), torch.randn(7)],
                [torch.zeros(300), torch.zeros(7)],
                [],
                [],
                [],
                None,
                None,
                1e-3,
                0.9,
                0.0,
                0.0,
                0.0,
                1e-8,
                0.0,
                2,
            ),
        ),  # fmt: skip
    ]


@pytest.mark.parametrize("index", range(14))
def test_opcheck(index):
    op, args = opcheck_samples()[index]
    torch.library.opcheck(op, args)


def test_int8_linear_matmul_out_variant():
    """``int8_linear_matmul.out(A, B, out)``: exact int32 products written into ``out``; opcheck; bad ``out``."""
    A = torch.randint(-128, 128, (3, 7, 20), dtype=torch.int8)
    B = torch.randint(-128, 128, (30, 20), dtype=torch.int8)
    out = torch.full((3, 7, 30), -1, dtype=torch.int32)
    assert torch.ops.bnb_api.int8_linear_matmul.out(A, B, out) is None
    assert torch.equal(out.long(), A.long() @ B.long().t())
    torch.library.opcheck(torch.ops.bnb_api.int8_linear_matmul.out, (A[0], B, out[0]))
    with pytest.raises(ValueError, match=r"out.shape=\(3, 7, 31\)"):
        torch.ops.bnb_api.int8_linear_matmul.out(A, B, torch.empty(3, 7, 31, dtype=torch.int32))
    with pytest.raises(TypeError, match="out.dtype"):
        torch.ops.bnb_api.int8_linear_matmul.out(A, B, torch.empty(3, 7, 30))


def test_opcheck_int8_quant_with_outliers():
    A = torch.randn(6, 64, dtype=torch.float16)
    A[:, 3] = 20
    # data-dependent output size: the AOT test needs dynamic shapes; schema and fake tests must pass
    torch.library.opcheck(ops.int8_vectorwise_quant, (A, 6.0), test_utils=("test_schema", "test_faketensor"))


def test_torch_compile_fullgraph_dequantize_and_gemv():
    W, packed, state = nf4_weight(64, 128, torch.float32)

    def f(x, packed, absmax):
        w = ops.dequantize_4bit(packed, absmax, 64, "nf4", [64, 128], torch.float32)
        y = ops.gemv_4bit(x, packed, [64, 128], absmax, state.code, 64)
        return y + x @ w.T

    compiled = torch.compile(f, fullgraph=True)
    x = torch.randn(1, 128)
    torch.testing.assert_close(compiled(x, packed, state.absmax), f(x, packed, state.absmax))


def test_every_op_has_reference_and_fake():
    from bnb_api.core import ops as core_ops
    from bnb_api.core.registry import kernels

    for name in core_ops.OP_NAMES:
        assert any(k.backend == "reference" for k in kernels(name, "cpu")), name
        assert hasattr(getattr(torch.ops.bnb_api, name), "default")


def test_non_contiguous_and_3d_inputs_match_contiguous():
    base = torch.randn(6, 70, 9, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(7))
    A = base.transpose(0, 2)  # (9, 70, 6), non-contiguous
    assert not A.is_contiguous()
    for fn in (
        lambda X: ops.quantize_blockwise(X, codes.dynamic_map(), 64),
        lambda X: ops.quantize_4bit(X, 64, "nf4", torch.uint8),
        lambda X: ops.int8_vectorwise_quant(X, 3.0),
    ):
        for got, want in zip(fn(A), fn(A.contiguous())):
            assert torch.equal(got, want)
    q, absmax = ops.quantize_4bit(A, 64, "fp4", torch.uint8)
    back = ops.dequantize_4bit(q, absmax, 64, "fp4", list(A.shape), torch.float32)
    assert back.shape == A.shape and (back - A.float()).abs().max() <= absmax.max() / 6 + 1e-6


def test_gemv_eager_path_is_taken_only_where_it_is_invisible(dispatch_log):
    """F.gemv_4bit calls the op body directly in plain eager mode (same kernel, same result) and goes through
    torch.ops.bnb_api.gemv_4bit under dispatch modes, fake tensors, torch.compile and autograd."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    import bnb_api.functional as F
    from bnb_api.core import ops

    W = torch.randn(24, 128, dtype=torch.bfloat16)
    packed, state = F.quantize_4bit(W, quant_type="nf4", compress_statistics=True)
    x = torch.randn(1, 128, dtype=torch.bfloat16)
    assert ops.eager_ok(x, packed)
    eager = F.gemv_4bit(x, packed, state=state)
    dispatched = torch.ops.bnb_api.gemv_4bit(x, packed, list(state.shape), state.absmax, state.code, state.blocksize,
                                             state.state2.absmax, state.state2.code, state.offset.reshape(()).float(),
                                             state.state2.blocksize)  # fmt: skip
    assert torch.equal(eager, dispatched)

    with dispatch_log() as log:
        assert not ops.eager_ok(x, packed)
        F.gemv_4bit(x, packed, state=state)
    assert any("bnb_api.gemv_4bit" in name for name in log.ops)

    with FakeTensorMode() as mode:
        fx = mode.from_tensor(x)
        assert not ops.eager_ok(fx, packed)
    assert not ops.eager_ok(x.clone().requires_grad_(True), packed)
    with torch.no_grad():
        assert ops.eager_ok(x.clone().requires_grad_(True), packed)

    compiled = torch.compile(lambda a: F.gemv_4bit(a, packed, state=state), fullgraph=True)
    assert torch.equal(compiled(x), eager)


def test_int8_layer_inference_skips_autograd_and_dispatcher_only_where_invisible(dispatch_log, monkeypatch):
    """Linear8bitLt without gradients calls int8_mm_outlier's body directly (same kernel, same result as the
    dispatched op and as the autograd path); dispatch modes and torch.compile still see torch.ops.bnb_api, and a
    layer whose input needs gradients still gets them."""
    import bnb_api

    torch.manual_seed(0)
    lin = torch.nn.Linear(96, 40)
    layer = bnb_api.nn.Linear8bitLt(96, 40, has_fp16_weights=False, threshold=6.0)
    layer.load_state_dict(lin.state_dict())
    layer = layer.to("cpu").eval()
    x = torch.randn(3, 96, dtype=torch.bfloat16)
    x[:, 5] = 9.0  # an outlier column
    from bnb_api.core import ops

    direct = []
    body, checked_call = ops._PLANNED["int8_mm_outlier"]  # 3 rows: no batch-1 plan, the op's body
    monkeypatch.setitem(ops._PLANNED, "int8_mm_outlier", (lambda *a: direct.append(1) or body(*a), checked_call))
    with torch.no_grad():
        eager = layer(x)
    assert direct == [1]  # the body itself, no dispatcher
    dispatched = torch.ops.bnb_api.int8_mm_outlier(x, layer.state.CB, layer.state.SCB, 6.0,
                                                   layer.bias.to(x.dtype))  # fmt: skip
    assert torch.equal(eager, dispatched)

    with dispatch_log() as log, torch.no_grad():
        assert torch.equal(layer(x), eager)
    assert any("bnb_api.int8_mm_outlier" in name for name in log.ops)
    assert direct == [1]

    xg = x.clone().requires_grad_(True)
    out = layer(xg)
    assert out.grad_fn is not None and torch.equal(out.detach(), eager)
    out.float().sum().backward()
    W = layer.state.CB.float() * layer.state.SCB[:, None] / 127
    assert torch.allclose(xg.grad.float(), W.sum(0).expand(3, -1), rtol=1e-2, atol=1e-2)

    compiled = torch.compile(lambda a: layer(a), fullgraph=True)
    with torch.no_grad():
        assert torch.equal(compiled(x), eager)


def test_gemv_fast_check_accepts_only_what_the_named_checks_accept(monkeypatch):
    """check_gemv_4bit's one-expression path for well-formed calls: True for valid plain and nested calls, and
    never True for a call the named checks reject (each argument broken in turn)."""
    from bnb_api.core import ops as core_ops

    W = torch.randn(32, 64)
    packed, state = bnb_api.functional.quantize_4bit(W, quant_type="nf4", compress_statistics=True)
    _, plain = bnb_api.functional.quantize_4bit(W, quant_type="nf4", compress_statistics=False)
    x = torch.randn(1, 64, dtype=torch.bfloat16)
    nested = [x, packed, [32, 64], state.absmax, state.code, 64, state.state2.absmax, state.state2.code,
              state.offset.reshape(1).float(), state.state2.blocksize]  # fmt: skip
    flat = [x, packed, [32, 64], plain.absmax, plain.code, 64, None, None, None, 256]
    fast = core_ops._gemv_4bit_args_fast
    assert fast(*nested) and fast(*flat)
    meta = torch.device("meta")
    breaks = {
        0: [x.long(), torch.randn(1, 63), torch.tensor(1.0), x.to(meta)],
        1: [packed[:-1], packed.to(meta), "bytes"],
        2: [[32, 64, 1], [31, 64], [32, 62]],
        3: [state.absmax[:-1], state.absmax.float(), state.absmax.to(meta)],
        4: [state.code[:8], state.code.double(), state.code.to(meta)],
        5: [48, 64.0, True, 8192],
        6: [state.state2.absmax.double(), state.state2.absmax[:0], None, state.state2.absmax.to(meta)],
        7: [state.state2.code[:16], state.state2.code.half(), None],
        8: [torch.ones(2), torch.ones(1, dtype=torch.float64), None],
        9: [32, 100, True, 256.0],
    }
    real_checks_only = lambda *a: False  # noqa: E731 - the named checks alone decide
    for index, values in breaks.items():
        for value in values:
            for base in (nested, flat):
                args = list(base)
                args[index] = value
                monkeypatch.setattr(core_ops, "_gemv_4bit_args_fast", real_checks_only)
                try:
                    core_ops.check_gemv_4bit(*args)
                    rejected = False
                except (bnb_api.BnbError, TypeError, ValueError, AttributeError):
                    rejected = True
                monkeypatch.setattr(core_ops, "_gemv_4bit_args_fast", fast)
                if rejected:
                    assert not fast(*args), (index, value if not isinstance(value, torch.Tensor) else value.shape)

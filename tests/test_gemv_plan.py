"""Batch-1 plans (core.ops.RowPlan): a decoding loop's gemv_4bit or int8_mm_outlier checked and dispatched once.

Each reuse must give exactly what the op gives, and the plan must be rebuilt (or bypassed) whenever that could
differ: another weight, another input dtype or shape, a forced or excluded backend, tracing or autograd."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch

import bnb_api
import bnb_api.functional as F
from bnb_api.core import ops, registry
from bnb_api.core.reference import fourbit as ref_4b


def layer(nested: bool = True, N: int = 48, K: int = 128, bias: bool = True) -> bnb_api.nn.Linear4bit:
    torch.manual_seed(N + K)
    dense = torch.nn.Linear(K, N, bias=bias)
    q = bnb_api.nn.Linear4bit(K, N, bias=bias, compute_dtype=torch.bfloat16, quant_type="nf4",
                              compress_statistics=nested)  # fmt: skip
    q.load_state_dict(dense.state_dict())
    return q.to("cpu").eval()


def op_result(q: bnb_api.nn.Linear4bit, x: torch.Tensor) -> torch.Tensor:
    """The same product through torch.ops.bnb_api.gemv_4bit (no plan), bias added as the layer does."""
    st = q.weight.quant_state
    args = F._gemv_4bit_args(x, q.weight.data, st)
    y = torch.ops.bnb_api.gemv_4bit(*args)
    return y if q.bias is None else y + q.bias.to(x.dtype)


@pytest.mark.parametrize("nested", [True, False])
def test_plan_is_built_once_and_gives_the_ops_result(nested):
    q = layer(nested)
    x = torch.randn(1, 128, dtype=torch.bfloat16)
    with torch.inference_mode():
        first = q(x)
        plan = q.weight.quant_state._gemv_plan
        assert plan is not None
        for _ in range(3):
            x = torch.randn(1, 128, dtype=torch.bfloat16)
            assert torch.equal(q(x), op_result(q, x))
            assert q.weight.quant_state._gemv_plan is plan  # reused, not rebuilt
    assert first.shape == (1, 48)


def test_plan_serves_every_one_row_shape(monkeypatch):
    """A plan built for one row shape serves the others (3-D, 2-D, 1-D rows) with their own output shape and the
    op's values, through the bound kernel (no rebuild, no fall back to the unbound kernel) for both the 4-bit and
    the LLM.int8() layer."""
    kq = pytest.importorskip("bnb_api.backends.cpu.kernels_quant")
    q = layer()
    q8 = bnb_api.nn.Linear8bitLt(128, 48, bias=True, has_fp16_weights=False, threshold=6.0)
    q8.load_state_dict(torch.nn.Linear(128, 48).state_dict())
    row = torch.randn(128, dtype=torch.bfloat16)
    with torch.inference_mode():
        q(row.view(1, 1, 128))
        q8(row.view(1, 1, 128))
        plan, plan8 = q.weight.quant_state._gemv_plan, q8.state._int8_plan
        first8 = q8(row.view(1, 1, 128))
        if plan.run.__name__ == "run":  # the cpu backend's bound kernels: their unbound forms must not be called
            for name in ("gemv_4bit_cpu", "int8_mm_outlier_cpu"):
                monkeypatch.setattr(kq, name, lambda *a, name=name: pytest.fail(f"{name} called"))
        for shape in ((1, 128), (128,), (1, 1, 1, 128)):
            x = row.view(shape)
            y = q(x)
            assert y.shape == (*shape[:-1], 48) and torch.equal(y, op_result(q, x)), shape
            y8 = q8(x)
            assert y8.shape == (*shape[:-1], 48) and torch.equal(y8.flatten(), first8.flatten()), shape
        assert q.weight.quant_state._gemv_plan is plan and q8.state._int8_plan is plan8


def test_plan_reads_the_weight_at_each_call():
    """In-place changes of the packed weight or its statistics are seen (the plan keeps addresses, not values)."""
    q = layer()
    x = torch.randn(1, 128, dtype=torch.bfloat16)
    with torch.inference_mode():
        q(x)
        plan = q.weight.quant_state._gemv_plan
        q.weight.data.view(torch.uint8).view(-1)[:40] ^= 0x5A
        q.weight.quant_state.state2.absmax.mul_(1.5)
        got = q(x)
        assert q.weight.quant_state._gemv_plan is plan
        assert torch.equal(got, op_result(q, x))


def test_plan_is_rebuilt_for_another_weight_or_input():
    q = layer()
    st = q.weight.quant_state
    x = torch.randn(1, 128, dtype=torch.bfloat16)
    with torch.inference_mode():
        q(x)
        plan = st._gemv_plan
        st.absmax = st.absmax.clone()  # new memory: a new plan
        assert torch.equal(q(x), op_result(q, x))
        assert st._gemv_plan is not plan
        plan = st._gemv_plan
        xf = torch.randn(1, 128)  # float32 input: computed in the layer's compute dtype, as before
        assert torch.equal(q(xf), q(xf.to(torch.bfloat16)).float())
        x3 = torch.randn(1, 1, 128, dtype=torch.bfloat16)  # same row, another shape
        assert torch.equal(q(x3), op_result(q, x3)) and q(x3).shape == (1, 1, 48)
        rows = torch.randn(3, 128, dtype=torch.bfloat16)  # several rows: not the plan's
        want = torch.stack([op_result(q, rows[i : i + 1])[0] for i in range(3)])
        assert torch.allclose(q(rows).float(), want.float(), rtol=2e-2, atol=2e-2)
        column = torch.randn(128, 2, dtype=torch.bfloat16)[:, 0].reshape(1, 128)  # a strided row
        assert torch.equal(q(column), op_result(q, column.contiguous()))


def test_plan_follows_the_backend_choice(monkeypatch):
    """use_backend / exclusion change the kernel that serves the next call, plan or not."""
    q = layer(nested=False)
    st = q.weight.quant_state
    x = torch.randn(1, 128, dtype=torch.bfloat16)
    reference = ref_4b.gemv_4bit(x, q.weight.data, [48, 128], st.absmax, st.code, 64) + q.bias.to(x.dtype)
    with torch.inference_mode():
        native = q(x)
        assert not torch.equal(native, reference)  # the bf16 kernel rounds the code book: tell them apart
        with registry.use_backend("reference"):
            assert torch.equal(q(x), reference)
        assert torch.equal(q(x), native)
        monkeypatch.setenv("BNB_API_EXCLUDE", "cpu")
        assert torch.equal(q(x), reference)
        monkeypatch.delenv("BNB_API_EXCLUDE")
        assert torch.equal(q(x), native)


def test_selection_token_changes_with_the_registry():
    token = registry.selection_token()
    assert registry.selection_token() == token
    with registry.use_backend("reference"):
        assert registry.selection_token() != token
    with registry.exclude_backends("cpu"):
        assert registry.selection_token() != token
    registry.register_backend("plan_test_backend", ("cpu",))
    try:
        assert registry.selection_token() != token
    finally:
        registry.unregister_backend("plan_test_backend")
    changed = registry.selection_token()
    registry.backends()["cpu"].reset()
    assert registry.selection_token() != changed


def test_plan_is_not_used_under_autograd_or_compile():
    q = layer()
    x = torch.randn(1, 128, dtype=torch.bfloat16)
    with torch.inference_mode():
        want = q(x)
    xg = x.clone().requires_grad_(True)
    y = q(xg)
    assert y.grad_fn is not None and torch.equal(y.detach(), want)
    y.float().sum().backward()
    assert xg.grad is not None and xg.grad.shape == x.shape
    compiled = torch.compile(lambda a: q(a), fullgraph=True)
    with torch.no_grad():
        assert torch.equal(compiled(x), want)


def test_plan_is_left_out_of_copies_and_pickles():
    q = layer()
    x = torch.randn(1, 128, dtype=torch.bfloat16)
    with torch.inference_mode():
        want = q(x)
        assert q.weight.quant_state._gemv_plan is not None
        for other in (copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
            assert other.weight.quant_state._gemv_plan is None
            assert torch.equal(other(x), want)
            assert other.weight.quant_state._gemv_plan is not None


def test_plan_of_a_bad_call_raises_the_ops_error():
    W = torch.randn(32, 64)
    packed, st = F.quantize_4bit(W, quant_type="nf4", compress_statistics=False)
    with pytest.raises(ValueError, match="must end in K=64"):
        ops.gemv_4bit_plan(torch.randn(1, 63), packed, [32, 64], st.absmax, st.code, 64, None, None, None, 256)
    assert ops.gemv_4bit_plan(torch.randn(2, 64), packed, [32, 64], st.absmax, st.code, 64, None, None, None,
                              256) is None  # fmt: skip


def int8_layer(N: int = 40, K: int = 96) -> bnb_api.nn.Linear8bitLt:
    torch.manual_seed(N * K)
    dense = torch.nn.Linear(K, N)
    q = bnb_api.nn.Linear8bitLt(K, N, has_fp16_weights=False, threshold=6.0)
    q.load_state_dict(dense.state_dict())
    return q.to("cpu").eval()


def int8_row(K: int = 96) -> torch.Tensor:
    x = torch.randn(1, K, dtype=torch.bfloat16)
    x[0, 7] = 9.0  # an outlier column
    return x


def int8_op_result(q: bnb_api.nn.Linear8bitLt, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.bnb_api.int8_mm_outlier(x, q.state.CB, q.state.SCB, 6.0, q.bias.to(x.dtype))


def test_int8_plan_is_built_once_reads_the_weight_and_follows_the_backend():
    q = int8_layer()
    with torch.inference_mode():
        q(int8_row())
        plan = q.state._int8_plan
        assert plan is not None
        for _ in range(3):
            x = int8_row()
            assert torch.equal(q(x), int8_op_result(q, x))
            assert q.state._int8_plan is plan
        q.state.CB[:5] = -q.state.CB[:5]  # in place: seen by the next call, same plan
        x = int8_row()
        assert torch.equal(q(x), int8_op_result(q, x)) and q.state._int8_plan is plan
        native = q(x)
        with registry.use_backend("reference"):
            assert torch.equal(q(x), int8_op_result(q, x))
        # a backend registered after the plan was built serves the next call (its result is recognizable)
        registry.register_backend("plan_test_int8", ("cpu",))
        registry.register_kernel("int8_mm_outlier", "plan_test_int8", "cpu",
                                 lambda A, CB, SCB, threshold, bias=None: torch.full((*A.shape[:-1], CB.shape[0]), 7.0,
                                                                                     dtype=A.dtype),
                                 priority=10_000)  # fmt: skip
        try:
            assert torch.equal(q(x), torch.full_like(native, 7.0))
        finally:
            registry.unregister_backend("plan_test_int8")
        assert torch.equal(q(x), native)
        rows = torch.cat([int8_row(), int8_row()])  # two rows: the op's path
        assert torch.equal(q(rows), int8_op_result(q, rows))


def test_int8_plan_is_left_out_of_copies_and_pickles():
    q = int8_layer()
    x = int8_row()
    with torch.inference_mode():
        want = q(x)
        assert q.state._int8_plan is not None
        for other in (copy.deepcopy(q), pickle.loads(pickle.dumps(q))):
            assert other.state._int8_plan is None
            assert torch.equal(other(x), want)


@pytest.mark.parametrize("transposed", [False, True])
def test_functional_gemv_with_the_parameter_itself_takes_the_plan(transposed):
    """``F.gemv_4bit(A, layer.weight, state)`` with the ``Params4bit`` itself (or its ``.t()``, as bitsandbytes users
    write it) reads the plain tensor: the eager body with its plan, not torch's dispatcher, and the op's values."""
    q = layer()
    st = q.weight.quant_state
    B = q.weight.t() if transposed else q.weight
    assert isinstance(q.weight, bnb_api.nn.Params4bit)
    with torch.inference_mode():
        for _ in range(2):
            x = torch.randn(1, 128, dtype=torch.bfloat16)
            y = F.gemv_4bit(x, B, state=st)
            assert type(y) is torch.Tensor
            assert torch.equal(y, torch.ops.bnb_api.gemv_4bit(*F._gemv_4bit_args(x, q.weight.data, st)))
            assert st._gemv_plan is not None
            plan = st._gemv_plan
        assert F.gemv_4bit(x, B, state=st) is not None and st._gemv_plan is plan  # reused


def test_plain_weight_keeps_memory_and_leaves_tensors_alone():
    q = layer()
    t = torch.randn(3)
    assert F.plain_weight(t) is t
    plain = F.plain_weight(q.weight)
    assert type(plain) is torch.Tensor and plain.data_ptr() == q.weight.data_ptr() and not plain.requires_grad
    p = torch.nn.Parameter(torch.randn(4))
    assert type(F.plain_weight(p)) is torch.Tensor and F.plain_weight(p).data_ptr() == p.data_ptr()

"""bnb_api.optim: 32-bit against torch.optim and float64, 8-bit against 32-bit, state dicts, overrides,
argument checks, one fused op call per group and no host synchronization in step()."""

from __future__ import annotations

import inspect
import io
import math
import warnings

import pytest
import torch

import bnb_api as bnb
from bnb_api.core import ops
from bnb_api.optim import optimizer as optimizer_module

O = bnb.optim


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


def run_steps(opt_factory, shape=(64, 97), steps=10, seed=0, dtype=torch.float32):
    p = torch.nn.Parameter(rand(*shape, seed=seed, scale=0.1).to(dtype))
    opt = opt_factory([p])
    for i in range(steps):
        p.grad = rand(*shape, seed=1000 + i, scale=0.01).to(dtype)
        opt.step()
    return p, opt


# ---------------------------------------------------------------------------------------------------
# 32-bit against torch.optim
# ---------------------------------------------------------------------------------------------------

TORCH_PAIRS = [
    (lambda ps: O.Adam32bit(ps, lr=1e-2, weight_decay=0.1), lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=0.1)),
    (lambda ps: O.AdamW(ps, lr=1e-2), lambda ps: torch.optim.AdamW(ps, lr=1e-2)),
    (lambda ps: O.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01),
     lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.01)),
    (lambda ps: O.SGD(ps, lr=0.1), lambda ps: torch.optim.SGD(ps, lr=0.1)),
    (lambda ps: O.RMSprop(ps, lr=1e-3, weight_decay=0.01),
     lambda ps: torch.optim.RMSprop(ps, lr=1e-3, weight_decay=0.01)),
    (lambda ps: O.Adagrad(ps, lr=1e-2), lambda ps: torch.optim.Adagrad(ps, lr=1e-2)),
]  # fmt: skip


@pytest.mark.parametrize("pair", range(len(TORCH_PAIRS)))
def test_32bit_matches_torch_optim(pair):
    ours_f, torch_f = TORCH_PAIRS[pair]
    p1, _ = run_steps(ours_f, steps=12)
    p2, _ = run_steps(torch_f, steps=12)
    torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6)


def lion_f64(p, grads, lr, betas, wd):
    p = p.double().clone()
    m = torch.zeros_like(p)
    for g in grads:
        g = g.double()
        u = torch.sign(betas[0] * m + (1 - betas[0]) * g)
        m = betas[1] * m + (1 - betas[1]) * g
        p = p * (1 - lr * wd) - lr * u
    return p


def test_lion_32bit_against_float64():
    shape = (33, 17)
    p0 = rand(*shape, seed=0, scale=0.1)
    grads = [rand(*shape, seed=1000 + i, scale=0.01) for i in range(8)]
    p, _ = run_steps(lambda ps: O.Lion(ps, lr=1e-3, weight_decay=0.1), shape=shape, steps=8)
    torch.testing.assert_close(p.double(), lion_f64(p0, grads, 1e-3, (0.9, 0.99), 0.1), rtol=1e-5, atol=1e-6)


def ademamix_f64(p, grads, lr, betas, alpha, eps, wd, t_alpha, t_beta3):
    p = p.double().clone()
    m1, m2, v = torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p)
    b1, b2, b3_final = betas
    for step, g in enumerate(grads, 1):
        g = g.double()
        a = min(step * alpha / t_alpha, alpha) if t_alpha else alpha
        b3 = b3_final
        if t_beta3:
            ln1, ln3 = math.log(b1), math.log(b3_final)
            s = step / t_beta3
            b3 = min(math.exp(ln1 * ln3 / ((1 - s) * ln3 + s * ln1)), b3_final)
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b3 * m2 + (1 - b3) * g
        v = b2 * v + (1 - b2) * g * g
        u = (m1 / (1 - b1**step) + a * m2) / ((v / (1 - b2**step)).sqrt() + eps)
        p = p * (1 - lr * wd) - lr * u
    return p


@pytest.mark.parametrize("schedule", [(None, None), (5, 7)])
def test_ademamix_32bit_with_schedulers_against_float64(schedule):
    t_alpha, t_beta3 = schedule
    shape = (29, 31)
    p0 = rand(*shape, seed=0, scale=0.1)
    grads = [rand(*shape, seed=1000 + i, scale=0.01) for i in range(10)]
    p, opt = run_steps(lambda ps: O.AdEMAMix32bit(ps, lr=1e-3, t_alpha=t_alpha, t_beta3=t_beta3), shape=shape, steps=10)
    assert opt.state[p]["state1"].shape == (2, *shape)
    ref = ademamix_f64(p0, grads, 1e-3, (0.9, 0.999, 0.9999), 5.0, 1e-8, 1e-2, t_alpha, t_beta3)
    torch.testing.assert_close(p.double(), ref, rtol=1e-5, atol=1e-6)


def test_lamb_lars_clip_the_update():
    p0 = rand(40, 50, seed=0, scale=0.1)
    g = rand(40, 50, seed=1, scale=100.0)  # a huge gradient: the trust ratio bounds the step
    for cls, kw, max_unorm in ((O.LAMB32bit, {}, 1.0), (O.LARS32bit, {"momentum": 0.9}, 0.02)):
        p = torch.nn.Parameter(p0.clone())
        opt = cls([p], lr=1.0, **kw)
        p.grad = g.clone()
        opt.step()
        step_norm = (p.detach() - p0).norm()
        assert step_norm <= max_unorm * p0.norm() * (1 + 1e-4), cls


@pytest.mark.parametrize("momentum,weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.9, 0.01)])
def test_pytorch_lars_matches_lars32bit_and_float64(momentum, weight_decay):
    """bitsandbytes' reference LARS in plain torch: the fused LARS32bit follows it, and both follow the
    float64 formula (momentum buffer, coupled decay, update scaled to max_unorm * ||p||)."""
    p0 = rand(64, 96, seed=3, scale=0.1)
    grads = [rand(64, 96, seed=200 + i, scale=1.0 if i % 2 else 0.01) for i in range(8)]
    a, b = torch.nn.Parameter(p0.clone()), torch.nn.Parameter(p0.clone())
    ref = O.PytorchLARS([a], lr=0.05, momentum=momentum, weight_decay=weight_decay, max_unorm=0.02)
    fused = O.LARS32bit([b], lr=0.05, momentum=momentum, weight_decay=weight_decay, max_unorm=0.02)
    p64, buf = p0.double(), None
    for g in grads:
        a.grad, b.grad = g.clone(), g.clone()
        ref.step()
        fused.step()
        d = g.double() + weight_decay * p64
        buf = d if buf is None or momentum == 0 else momentum * buf + d
        scale = min(1.0, float(0.02 * p64.norm() / buf.norm()))
        p64 = p64 - 0.05 * scale * buf
    torch.testing.assert_close(a.detach().double(), p64, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.detach(), a.detach(), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="nesterov"):
        O.PytorchLARS([a], nesterov=True)


# ---------------------------------------------------------------------------------------------------
# 8-bit against 32-bit
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name8,name32,kw",
    [
        ("Adam8bit", "Adam32bit", {}),
        ("AdamW8bit", "AdamW32bit", {}),
        ("Lion8bit", "Lion32bit", {"bound": 3e-4}),
        ("AdEMAMix8bit", "AdEMAMix32bit", {}),
        ("PagedAdamW8bit", "AdamW32bit", {}),
    ],
)
def test_8bit_close_to_32bit_like_bitsandbytes_tests(name8, name32, kw):
    # bitsandbytes' test: 50 steps, resync every 10 steps; mean |p8 - p32| < 6e-5 in fp32 (their bound).
    # Lion's update is a sign: an 8-bit moment near 0 may flip it, moving that entry by 2*lr; the bound
    # for Lion is therefore stated relative to lr (0.3 * lr).
    kw = dict(kw)
    bound = kw.pop("bound", 6e-5)
    shape = (96, 257)
    p32 = torch.nn.Parameter(rand(*shape, seed=0, scale=0.1))
    p8 = torch.nn.Parameter(p32.detach().clone())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        o32 = getattr(O, name32)([p32], lr=1e-3, **kw)
        o8 = getattr(O, name8)([p8], lr=1e-3, **kw)
    errs = []
    for i in range(50):
        g = rand(*shape, seed=100 + i, scale=0.01)
        p32.grad, p8.grad = g.clone(), g.clone()
        o32.step()
        o8.step()
        errs.append((p8 - p32).abs().mean().item())
        if i % 10 == 9:
            with torch.no_grad():
                p8.copy_(p32)
    assert o8.state[p8]["state1"].dtype == torch.uint8 and o8.state[p8]["absmax1"].dtype == torch.float32
    assert max(errs) < bound, max(errs)
    # the 8-bit first moment tracks the 32-bit one
    s32, s8 = o32.state[p32], o8.state[p8]
    codes, absmax, m32 = s8["state1"], s8["absmax1"], s32["state1"]
    if codes.dim() == 3:  # AdEMAMix: m1 and m2 are blocked separately
        codes, absmax, m32 = codes[0], absmax[0], m32[0]
    m8 = torch.ops.bnb_api.dequantize_blockwise(codes, absmax, s8["qmap1"], 256, torch.float32)
    rel = (m8 - m32).abs().mean() / m32.abs().mean()
    assert rel < 0.05, rel


@pytest.mark.parametrize(
    "cls,kw",
    [(O.SGD8bit, {"momentum": 0.9}), (O.LARS8bit, {"momentum": 0.9}), (O.RMSprop8bit, {}), (O.Adagrad8bit, {}),
     (O.LAMB8bit, {}), (O.PagedLion8bit, {}), (O.PagedAdam8bit, {}), (O.PagedAdEMAMix8bit, {})],
)  # fmt: skip
def test_every_8bit_optimizer_minimizes_a_quadratic(cls, kw):
    name32 = cls.__name__.replace("Paged", "").replace("8bit", "32bit")
    finals = {}
    for c in (cls, getattr(O, name32)):
        p0 = rand(64, 80, seed=6)
        target = 1.3 * p0 + 0.3 * rand(64, 80, seed=7)
        p = torch.nn.Parameter(p0.clone())  # non-zero: LAMB/LARS steps are bounded relative to ||p||
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = c([p], lr=1e-2, **kw)
        start = (p - target).square().mean().item()
        for _ in range(60):
            p.grad = 2 * (p.detach() - target) / target.numel() * 1000
            opt.step()
        finals[c] = (p - target).square().mean().item()
        assert (opt.state[p]["state1"].dtype == torch.uint8) == (c is cls)
    l8, l32 = finals[cls], finals[getattr(O, name32)]
    assert l32 < 0.97 * start and l8 < 0.97 * start, finals
    assert abs(l8 - l32) < 0.05 * (start - l32), finals


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_8bit_half_precision_params(dtype):
    p, opt = run_steps(lambda ps: O.AdamW8bit(ps, lr=1e-3), dtype=dtype)
    q, _ = run_steps(lambda ps: O.AdamW32bit(ps, lr=1e-3), dtype=torch.float32)
    assert p.dtype == dtype and opt.state[p]["state1"].dtype == torch.uint8
    assert (p.float() - q).abs().mean() < 2e-3


# ---------------------------------------------------------------------------------------------------
# state management
# ---------------------------------------------------------------------------------------------------


def test_min_8bit_size_and_override_manager():
    big = torch.nn.Parameter(rand(64, 64, seed=1))  # 4096 elements: 8-bit
    small = torch.nn.Parameter(rand(10, seed=2))  # below min_8bit_size: 32-bit
    other = torch.nn.Parameter(rand(80, 64, seed=3))  # overridden to 32-bit
    mng = O.GlobalOptimManager.get_instance()
    mng.register_parameters([big, small, other])
    mng.override_config(other, "optim_bits", 32)
    mng.override_config(big, key_value_dict={"lr": 0.5})
    try:
        opt = O.Adam8bit([big, small, other], lr=1e-3)
        for p in (big, small, other):
            p.grad = torch.ones_like(p)
        before = big.detach().clone()
        opt.step()
        assert opt.state[big]["state1"].dtype == torch.uint8
        assert opt.state[small]["state1"].dtype == torch.float32
        assert opt.state[other]["state1"].dtype == torch.float32
        torch.testing.assert_close(before - big.detach(), torch.full_like(big, 0.5), rtol=1e-4, atol=1e-4)
    finally:
        mng.initialize()


def test_module_override_from_stable_embedding():
    emb = bnb.nn.StableEmbedding(300, 32)  # 9600 elements would be 8-bit without the override
    try:
        opt = O.Adam8bit(emb.parameters(), lr=1e-3)
        emb(torch.tensor([1, 2, 3])).sum().backward()
        opt.step()
        assert opt.state[emb.weight]["state1"].dtype == torch.float32
    finally:
        O.GlobalOptimManager.get_instance().initialize()


@pytest.mark.parametrize("name", ["AdamW8bit", "AdEMAMix8bit", "Lion8bit", "AdamW32bit", "SGD8bit"])
def test_state_dict_roundtrip_is_bit_identical(name):
    kw = {"momentum": 0.9} if name.startswith("SGD") else {}
    shape = (70, 90)

    def make():
        torch.manual_seed(0)
        p = torch.nn.Parameter(rand(*shape, seed=0))
        return p, getattr(O, name)([p], lr=1e-3, **kw)

    p1, o1 = make()
    for i in range(5):
        p1.grad = rand(*shape, seed=10 + i, scale=0.1)
        o1.step()
    buf = io.BytesIO()
    torch.save(o1.state_dict(), buf)
    buf.seek(0)
    p2, o2 = make()
    with torch.no_grad():
        p2.copy_(p1)
    o2.load_state_dict(torch.load(buf, weights_only=True))
    for key, value in o1.state[p1].items():
        other = o2.state[p2][key]
        if isinstance(value, torch.Tensor):
            assert other.dtype == value.dtype and torch.equal(other, value), key
        else:
            assert other == value, key
    for i in range(3):
        g = rand(*shape, seed=50 + i, scale=0.1)
        p1.grad, p2.grad = g.clone(), g.clone()
        o1.step()
        o2.step()
    assert torch.equal(p1, p2)
    assert all(torch.equal(v, o2.state[p2][k]) for k, v in o1.state[p1].items() if isinstance(v, torch.Tensor))


def test_state_dict_keeps_fp32_state_for_bf16_params():
    p, opt = run_steps(lambda ps: O.AdamW32bit(ps, lr=1e-3), dtype=torch.bfloat16, steps=2)
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = O.AdamW32bit([q], lr=1e-3)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state[q]["state1"].dtype == torch.float32  # torch.optim would cast it to bfloat16


def test_load_state_dict_checks_groups():
    p, opt = run_steps(lambda ps: O.Adam8bit(ps), steps=1)
    other = O.Adam8bit([torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(ValueError, match="params"):
        other.load_state_dict(opt.state_dict())


def test_one_fused_call_per_group_and_no_host_sync(monkeypatch):
    params = [torch.nn.Parameter(rand(64, 80 + i, seed=i)) for i in range(5)]
    opt = O.AdamW8bit(params, lr=1e-3)
    calls = []
    real_call = ops._call
    monkeypatch.setattr(ops, "_call", lambda op, device, call: calls.append((op, len(call["params"]))) or
                        real_call(op, device, call))  # fmt: skip
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # the first step allocates state

    def refuse(*args, **kwargs):
        raise AssertionError("host synchronization in optimizer.step()")

    monkeypatch.setattr(torch.Tensor, "item", refuse)
    monkeypatch.setattr(torch.Tensor, "__float__", refuse)
    monkeypatch.setattr(torch.Tensor, "tolist", refuse)
    opt.step()
    assert calls == [("optimizer_step_multi", 5)] * 2


def _adamw8_args(n=1000, seed=0):
    q1, q2 = bnb.functional.create_dynamic_map(signed=True), bnb.functional.create_dynamic_map(signed=False)
    nb = -(-n // 256)
    return [rand(n, seed=seed), rand(n, seed=seed + 1, scale=0.01), torch.zeros(n, dtype=torch.uint8),
            torch.zeros(n, dtype=torch.uint8), torch.zeros(nb), torch.zeros(nb), q1, q2]  # fmt: skip


def _functional_adamw8(p, g, s1, s2, a1, a2, q1, q2, step=1):
    bnb.functional.optimizer_update_8bit_blockwise("adamw", g, p, s1, s2, 0.9, 0.999, 0.0, 0.0, 1e-8, step, 1e-2, q1,
                                                   q2, a1, a2, weight_decay=0.01)  # fmt: skip


def test_eager_calls_skip_the_dispatcher_with_the_same_result_and_versions(monkeypatch):
    direct = []
    real = ops.optimizer_step_eager
    monkeypatch.setattr(ops, "optimizer_step_eager", lambda *a: direct.append(a[0]) or real(*a))
    fast, via_op = _adamw8_args(), _adamw8_args()
    versions = [t._version for t in fast[:6]]
    for step in (1, 2):
        _functional_adamw8(*fast, step=step)
        p, g, s1, s2, a1, a2, q1, q2 = via_op
        torch.ops.bnb_api.optimizer_step("adamw", p, g, s1, s2, a1, a2, q1, q2, 1e-2, 0.9, 0.999, 0.0, 0.0, 1e-8,
                                         0.01, step, 1.0, 0.0, 256)  # fmt: skip
    assert direct == ["adamw", "adamw"]
    for a, b in zip(fast, via_op):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    bumped = [t._version - v for t, v in zip(fast, versions)]
    assert bumped[1] == 0 and all(b >= 2 for i, b in enumerate(bumped) if i != 1)  # g is read, not written


def test_modes_fakes_and_autograd_still_see_the_op(monkeypatch, dispatch_log):
    from torch._subclasses.fake_tensor import FakeTensorMode

    direct = []
    real = ops.optimizer_step_eager
    monkeypatch.setattr(ops, "optimizer_step_eager", lambda *a: direct.append(a[0]) or real(*a))

    with dispatch_log() as log:
        _functional_adamw8(*_adamw8_args())
        params = [torch.nn.Parameter(rand(300, seed=i)) for i in range(2)]
        opt = O.AdamW8bit(params, lr=1e-3, min_8bit_size=0)
        for p in params:
            p.grad = rand(300, seed=9)
        opt.step()
    assert "bnb_api.optimizer_step.default" in log.ops and "bnb_api.optimizer_step_multi.default" in log.ops
    real_args, mode = _adamw8_args(), FakeTensorMode()
    with mode:
        _functional_adamw8(*[mode.from_tensor(t) for t in real_args])  # the fake kernel: shapes only
    args, plain = _adamw8_args(), _adamw8_args()
    args[0].requires_grad_(True)
    _functional_adamw8(*args)  # autograd on: through the op
    assert direct == []
    with torch.no_grad():
        _functional_adamw8(*args, step=2)
    _functional_adamw8(*plain)
    _functional_adamw8(*plain, step=2)
    assert direct == ["adamw"] * 3  # the no-grad call and the two plain ones ran directly
    for a, b in zip(args, plain):
        torch.testing.assert_close(a.detach(), b, rtol=0, atol=0)


def test_percentile_clipping_scales_the_gradient():
    shape = (40, 40)
    p = torch.nn.Parameter(rand(*shape, seed=0))
    q = torch.nn.Parameter(p.detach().clone())
    clipped = O.SGD32bit([p], lr=0.1, momentum=0.5, percentile_clipping=5)
    plain = O.SGD32bit([q], lr=0.1, momentum=0.5)
    for i in range(6):
        g = rand(*shape, seed=i, scale=1.0 if i < 5 else 50.0)
        p.grad = g.clone()
        clipped.step()
        hist = torch.sort(clipped.state[p]["gnorm_vec"]).values
        scale = min(1.0, float(hist[5].sqrt() / g.norm()))
        q.grad = g * scale
        plain.step()
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert scale < 0.5  # the spike was clipped


def test_paged_warns_once_and_matches_unpaged():
    optimizer_module._paged_warned.discard("PagedAdamW")
    with pytest.warns(UserWarning, match="paged"):
        O.PagedAdamW([torch.nn.Parameter(torch.zeros(4))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        O.PagedAdamW([torch.nn.Parameter(torch.zeros(4))])  # no second warning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p1, _ = run_steps(lambda ps: O.PagedAdamW8bit(ps, lr=1e-3))
    p2, _ = run_steps(lambda ps: O.AdamW8bit(ps, lr=1e-3))
    assert torch.equal(p1, p2)


def test_closure_and_skipped_params():
    a = torch.nn.Parameter(torch.ones(5))
    b = torch.nn.Parameter(torch.ones(5))
    opt = O.Adam([a, b], lr=0.1)

    def closure():
        loss = a.square().sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == 5.0
    assert torch.equal(b.detach(), torch.ones(5)) and b not in opt.state


# ---------------------------------------------------------------------------------------------------
# arguments
# ---------------------------------------------------------------------------------------------------

BAD_ARGS = [
    (O.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}, "nesterov"),
    (O.SGD8bit, {"lr": 0.1, "momentum": 0.9, "dampening": 0.1}, "dampening"),
    (O.LARS, {"lr": 0.1, "momentum": 0.9, "nesterov": True}, "nesterov"),
    (O.LAMB, {"adam_w_mode": False}, "adam_w_mode"),
    (O.LAMB8bit, {"amsgrad": True}, "amsgrad"),
    (O.LAMB32bit, {"bias_correction": False}, "bias_correction"),
    (O.Adam, {"amsgrad": True}, "amsgrad"),
    (O.PagedAdamW8bit, {"amsgrad": True}, "amsgrad"),
    (O.RMSprop, {"centered": True}, "centered"),
    (O.RMSprop8bit, {"momentum": 0.9}, "momentum"),
    (O.Adagrad, {"lr_decay": 0.1}, "lr_decay"),
    (O.Adagrad32bit, {"initial_accumulator_value": 0.1}, "initial_accumulator_value"),
    (O.Adagrad8bit, {"optim_bits": 32}, "optim_bits"),
    (O.Adam, {"lr": -1.0}, "lr"),
    (O.Adam, {"betas": (0.9, 1.5)}, "betas"),
    (O.AdamW, {"eps": -1e-8}, "eps"),
    (O.Lion, {"weight_decay": -0.1}, "weight_decay"),
    (O.AdEMAMix, {"betas": (0.9, 0.999)}, "betas"),
    (O.Adam, {"percentile_clipping": 0}, "percentile_clipping"),
]


@pytest.mark.parametrize("cls,kw,arg", BAD_ARGS, ids=[f"{c.__name__}-{a}" for c, _, a in BAD_ARGS])
def test_unsupported_arguments_raise(cls, kw, arg):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=arg):
            cls([torch.nn.Parameter(torch.zeros(3))], **kw)


def test_bad_optim_bits_raises_at_first_step():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = O.Adam([p], optim_bits=4)
    p.grad = torch.ones(3)
    with pytest.raises(ValueError, match="optim_bits"):
        opt.step()


def test_signatures_match_bitsandbytes():
    B = pytest.importorskip("bitsandbytes")
    for name in dir(B.optim):
        theirs = getattr(B.optim, name)
        skip = name.startswith(("Pytorch", "Optimizer", "Mock")) or name == "GlobalOptimManager"
        if skip or not isinstance(theirs, type):
            continue
        ours = getattr(O, name)
        tp = inspect.signature(theirs.__init__).parameters
        op = inspect.signature(ours.__init__).parameters
        assert list(op)[: len(tp)] == list(tp), name
        assert set(op) - set(tp) <= {"percentile_clipping"}, name
        for k in tp:
            assert op[k].default == tp[k].default, (name, k)

"""Helpers of the bitsandbytes-parity tests (buffers for state dicts, closeness counts, dtype ids)."""

import io

import torch


def save_to_buffer(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def load_from_buffer(buf):
    buf.seek(0)
    return torch.load(buf, weights_only=False)


def count_not_close(a, b, rtol, atol):
    return (~torch.isclose(a, b, rtol=rtol, atol=atol)).sum().item()


def assert_few_not_close(a, b, rtol=1e-3, atol=1e-3, count=0):
    n = count_not_close(a, b, rtol, atol)
    if n > count:
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=lambda m: f"{n} > {count} not close\n{m}")


def dname(dt):
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.uint8: "u8"}[dt]


def assert_grads_match(out_q, out_ref, target, A, bias, req_grad, also_clear=()):
    """bitsandbytes' gradient check: the quantized output takes the reference's values, then an MSE loss is
    backpropagated through each; the gradients of ``A`` (atol 0.015, rtol 0.1) and ``bias`` must agree."""
    out_q.data.copy_(out_ref)
    grads = []
    for out in (out_q, out_ref):
        torch.nn.functional.mse_loss(out, target).mean().backward()
        grads.append((A.grad, None if bias is None else bias.grad))
        for t in (A, bias, *also_clear):
            if t is not None:
                t.grad = None
    if req_grad[0]:
        torch.testing.assert_close(grads[0][0], grads[1][0], atol=0.015, rtol=0.1)
    if req_grad[2]:
        torch.testing.assert_close(grads[0][1], grads[1][1])


def assert_compiled_matches_eager(net, x, fullgraph, mode, grads=True):
    """bitsandbytes' torch.compile check: the inductor-compiled ``net`` gives the eager outputs (same shape and
    dtype) and, with ``grads``, the same input gradient."""
    with torch.no_grad():
        ref = net(x)
    cnet = torch.compile(net, fullgraph=fullgraph, mode=mode, backend="inductor")
    with torch.no_grad():
        out = cnet(x)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    torch.testing.assert_close(out, ref)
    if grads:
        x.requires_grad_(True)
        net(x).sum().backward()
        g_ref = x.grad.clone()
        x.grad = None
        cnet(x).sum().backward()
        torch.testing.assert_close(x.grad, g_ref)

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

"""The cpu kernels' output pool: large results reuse memory only once every tensor viewing it is gone."""

from __future__ import annotations

import gc

import pytest
import torch

from bnb_api.backends.cpu import kernels_quant as kq
from bnb_api.backends.cpu import output_pool
from bnb_api.core import codes
from bnb_api.core.reference import blockwise as ref_bw

pytestmark = pytest.mark.skipif(kq.load_error() is not None, reason="native quant library not built")

N = 3 << 20  # 12 MiB of float32: above output_pool.POOL_MIN_BYTES


def _dequant(q, absmax, code):
    return kq.dequantize_blockwise_cpu(q, absmax, code, 4096, torch.float32)


@pytest.fixture()
def data():
    A = torch.randn(N)
    code = codes.dynamic_map()
    q, absmax = ref_bw.quantize_blockwise(A, code, 4096)
    return q, absmax, code, ref_bw.dequantize_blockwise(q, absmax, code, 4096, torch.float32)


def test_block_is_reused_after_the_tensor_dies(data):
    q, absmax, code, want = data
    first = _dequant(q, absmax, code)
    ptr = first.data_ptr()
    assert torch.equal(first, want)
    del first
    gc.collect()
    hits = kq.pool_stats()["hits"]
    second = _dequant(q, absmax, code)
    assert second.data_ptr() == ptr and kq.pool_stats()["hits"] == hits + 1
    assert torch.equal(second, want)


def test_a_live_view_keeps_its_block(data):
    q, absmax, code, want = data
    out = _dequant(q, absmax, code)
    view = out[100:200].view(torch.int32)  # another dtype and offset, same storage
    keep = view.clone()
    ptr = out.data_ptr()
    del out
    gc.collect()
    other = kq.dequantize_blockwise_cpu(q, absmax, code, 4096, torch.float32) * 0 + 7  # same size, overwritten
    again = _dequant(q, absmax, code)
    assert again.data_ptr() != ptr and other.data_ptr() != ptr
    assert torch.equal(view, keep), "a pooled block was reused while a view of it was alive"
    del view
    gc.collect()
    assert _dequant(q, absmax, code).data_ptr() == ptr


def test_outputs_are_ordinary_tensors(data):
    q, absmax, code, want = data
    out = _dequant(q, absmax, code)
    assert out.is_contiguous() and out.dtype == torch.float32 and out.shape == want.shape
    out.add_(1.0)  # writable
    assert torch.equal(out, want + 1.0)
    assert torch.equal(torch.tensor(out.numpy()), out)


def test_small_outputs_and_disabled_pool_use_torch_empty(monkeypatch):
    pool = kq._output_pool()
    small = pool.empty((1000,), torch.float32)
    assert small.untyped_storage().resizable()  # torch.empty, not a pooled block
    monkeypatch.setenv(output_pool.POOL_ENV, "0")
    off = output_pool.OutputPool(*kq._load())
    assert off.limit == 0 and off.empty((N,), torch.float32).untyped_storage().resizable()


def test_idle_blocks_are_bounded_and_empty_cache_frees_them():
    pool = output_pool.OutputPool(*kq._load())
    pool.limit = 3 * (16 << 20)
    tensors = [pool.empty((4 << 20,), torch.float32) for _ in range(5)]  # 16 MiB each
    del tensors
    gc.collect()
    assert pool.stats()["idle_bytes"] == 3 * (16 << 20)  # the other two went back to the OS
    assert pool.empty_cache() == 3 * (16 << 20) and pool.stats()["idle_bytes"] == 0

"""Mirrors bitsandbytes tests/test_ops.py: shape/dtype/device contract + torch.library.opcheck of the
registered custom ops. bnb registers torch.ops.bitsandbytes.*; bnb_api registers torch.ops.bnb_api.*
(with slightly different schemas, see report), so this file targets torch.ops.bnb_api only."""

from math import prod

import pytest
import torch
from peer_helpers import dname

import bnb_api

ops = torch.ops.bnb_api
opcheck = torch.library.opcheck
FP = [torch.float16, torch.bfloat16, torch.float32]


def test_int8_linear_matmul():
    A = torch.randint(-128, 127, (10, 20), dtype=torch.int8)
    B = torch.randint(-128, 127, (30, 20), dtype=torch.int8)
    out = ops.int8_linear_matmul.default(A, B)
    assert out.shape == (10, 30) and out.dtype == torch.int32
    opcheck(ops.int8_linear_matmul.default, (A, B))


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_int8_vectorwise_quant(threshold):
    A = torch.randn(10, 20, dtype=torch.float16)
    A[1][0] = 1000.0
    out_row, row_stats, outlier_cols = ops.int8_vectorwise_quant(A, threshold)
    assert out_row.shape == (10, 20) and out_row.dtype == torch.int8
    assert row_stats.shape == (10,) and row_stats.dtype == torch.float32
    if threshold > 0:
        assert outlier_cols is not None and outlier_cols.dim() == 1 and outlier_cols.shape[0] <= A.shape[1]
    else:
        assert outlier_cols is None
    opcheck(ops.int8_vectorwise_quant.default, (A,))
    opcheck(ops.int8_vectorwise_quant.default, (A, threshold))


def test_int8_mm_dequant():
    A = torch.randint(-128, 127, (256, 256), dtype=torch.int32)
    rs, cs = torch.randn(256), torch.randn(256)
    out = ops.int8_mm_dequant(A, rs, cs)
    assert out.shape == A.shape and out.dtype == torch.float16
    opcheck(ops.int8_mm_dequant.default, (A, rs, cs))


@pytest.mark.parametrize("dtype", FP, ids=dname)
def test_quantize_blockwise(dtype):
    code = bnb_api.functional.create_dynamic_map()
    A = torch.randn(1024, 1024, dtype=dtype)
    out, absmax = ops.quantize_blockwise(A, code, 256)
    assert out.shape == A.shape and out.dtype == torch.uint8 and absmax.dtype == torch.float32
    opcheck(ops.quantize_blockwise.default, (A, code, 256))


@pytest.mark.parametrize("blocksize", [64, 128, 256, 512])
@pytest.mark.parametrize("dtype", FP, ids=dname)
def test_dequantize_blockwise(dtype, blocksize):
    A = torch.randint(0, 255, (1024, 1024), dtype=torch.uint8)
    code = bnb_api.functional.create_dynamic_map()
    absmax = torch.randn((-(A.numel() // -blocksize),))
    out = ops.dequantize_blockwise.default(A, absmax, code, blocksize, dtype)
    assert out.shape == A.shape and out.dtype == dtype
    opcheck(ops.dequantize_blockwise.default, (A, absmax, code, blocksize, dtype))


@pytest.mark.parametrize("blocksize", [64, 256])
@pytest.mark.parametrize("quant_type", ["fp4", "nf4"])
@pytest.mark.parametrize("storage", [torch.uint8, torch.bfloat16], ids=dname)
@pytest.mark.parametrize("dtype", FP, ids=dname)
def test_quantize_4bit(dtype, storage, quant_type, blocksize):
    A = torch.randn(1024, 1024, dtype=dtype)
    out, absmax = ops.quantize_4bit.default(A, blocksize, quant_type, storage)
    assert out.dtype == storage and absmax.dtype == torch.float32
    if storage == torch.uint8:
        opcheck(ops.quantize_4bit.default, (A, blocksize, quant_type, storage))


@pytest.mark.parametrize("blocksize", [64, 256])
@pytest.mark.parametrize("quant_type", ["fp4", "nf4"])
@pytest.mark.parametrize("storage", [torch.uint8, torch.bfloat16], ids=dname)
@pytest.mark.parametrize("dtype", FP, ids=dname)
def test_dequantize_4bit(dtype, storage, quant_type, blocksize):
    shape = (128, 128)
    n = prod(shape)
    A = (
        torch.randint(0, 255, ((n + 1) // 2,), dtype=torch.uint8)
        .view(storage)
        .reshape(((n + 1) // (storage.itemsize * 2), 1))
        .contiguous()
    )
    absmax = torch.randn((-(n // -blocksize),))
    out = ops.dequantize_4bit.default(A, absmax, blocksize, quant_type, shape, dtype)
    assert out.shape == shape
    opcheck(ops.dequantize_4bit.default, (A, absmax, blocksize, quant_type, shape, dtype))


@pytest.mark.parametrize("blocksize", [64, 256])
@pytest.mark.parametrize("quant_type", ["fp4", "nf4"])
@pytest.mark.parametrize("storage", [torch.uint8, torch.bfloat16], ids=dname)
@pytest.mark.parametrize("dtype", FP, ids=dname)
def test_gemv_4bit(dtype, storage, quant_type, blocksize):
    A = torch.randn((1, 1, 256), dtype=dtype)
    B = torch.randn((1024, 256), dtype=dtype)
    Bq, absmax = ops.quantize_4bit(B, blocksize, quant_type, storage)
    code = bnb_api.functional.get_4bit_type(quant_type, device=A.device, blocksize=blocksize)
    out = ops.gemv_4bit.default(A, Bq, B.shape, absmax, code, blocksize)
    assert out.dtype == dtype and out.shape == (1, 1, 1024) and out.isreal().all()
    opcheck(ops.gemv_4bit.default, (A, Bq, B.shape, absmax, code, blocksize))

"""Byte compatibility with bitsandbytes 0.50 on CPU (skipped when bitsandbytes is not installed).

Runs through dispatch, so whichever backend serves cpu (native or reference) is held to the same bytes.
"""

from __future__ import annotations

import pytest
import torch

import bnb_api.functional as F

bnb_F = pytest.importorskip("bitsandbytes.functional")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def data(n, dtype, seed):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 333, 4096 * 64 + 37])
@pytest.mark.parametrize("blocksize", [32, 64, 256, 4096])
def test_4bit_packed_bytes_equal(quant_type, dtype, n, blocksize):
    A = data(n, dtype, seed=n + blocksize)
    ours, ours_state = F.quantize_4bit(A, blocksize=blocksize, quant_type=quant_type)
    theirs, their_state = bnb_F.quantize_4bit(A, blocksize=blocksize, quant_type=quant_type)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    assert torch.equal(ours, theirs)
    assert torch.equal(ours_state.absmax, their_state.absmax)
    assert torch.equal(F.dequantize_4bit(theirs, ours_state), bnb_F.dequantize_4bit(theirs, their_state))


@pytest.mark.parametrize("quant_storage", [torch.uint8, torch.bfloat16, torch.float32])
def test_4bit_quant_storage_bytes_equal(quant_storage):
    A = data(4096, torch.bfloat16, seed=9)
    ours, _ = F.quantize_4bit(A, quant_type="nf4", quant_storage=quant_storage)
    theirs, _ = bnb_F.quantize_4bit(A, quant_type="nf4", quant_storage=quant_storage)
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    assert torch.equal(ours.view(torch.uint8), theirs.view(torch.uint8))


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_nested_state_reads_across_libraries(quant_type):
    A = data(4096 * 33, torch.float16, seed=1)
    ours, ours_state = F.quantize_4bit(A, quant_type=quant_type, compress_statistics=True)
    theirs, their_state = bnb_F.quantize_4bit(A, quant_type=quant_type, compress_statistics=True)
    assert torch.equal(ours, theirs)
    # bitsandbytes' 8-bit search picks a neighbouring code for a few absmax values near a midpoint
    mismatch = (ours_state.absmax != their_state.absmax).float().mean()
    assert mismatch < 0.01
    # each library decodes the other's nested state to the same values
    their_as_ours = F.QuantState.from_dict(their_state.as_dict(packed=True), device="cpu")
    # (bitsandbytes' CPU path returns 1-D shapes as (1, n): compare values)
    ours_out = F.dequantize_4bit(theirs, their_as_ours)
    assert ours_out.shape == A.shape
    torch.testing.assert_close(ours_out.reshape(-1), bnb_F.dequantize_4bit(theirs, their_state).reshape(-1))
    ours_as_theirs = bnb_F.QuantState.from_dict(ours_state.as_dict(packed=True), device="cpu")
    torch.testing.assert_close(
        bnb_F.dequantize_4bit(ours, ours_as_theirs).reshape(-1), F.dequantize_4bit(ours, ours_state)
    )


@pytest.mark.parametrize("blocksize", [64, 256, 4096])
@pytest.mark.parametrize("dtype", DTYPES)
def test_blockwise_absmax_equal_and_codes_nearest(blocksize, dtype):
    A = data(blocksize * 7 + 5, dtype, seed=blocksize)
    ours, ours_state = F.quantize_blockwise(A, blocksize=blocksize)
    theirs, their_state = bnb_F.quantize_blockwise(A, blocksize=blocksize)
    assert torch.equal(ours_state.absmax, their_state.absmax)
    assert (ours != theirs).float().mean() < 0.03  # near-midpoint values only (more with 16-bit inputs)
    # ours is never further from the input than theirs
    absmax = ours_state.absmax  # equal to theirs; decode both in float32
    ours_err = (F.dequantize_blockwise(ours, absmax=absmax, blocksize=blocksize) - A.float()).abs()
    theirs_err = (F.dequantize_blockwise(theirs, absmax=absmax, blocksize=blocksize) - A.float()).abs()
    assert torch.all(ours_err <= theirs_err + 1e-6 * A.float().abs().max())
    # and decodes bitsandbytes' codes exactly as bitsandbytes does
    torch.testing.assert_close(
        F.dequantize_blockwise(theirs, ours_state), bnb_F.dequantize_blockwise(theirs, their_state)
    )


def test_gemv_4bit_matches_bitsandbytes():
    W = data(96 * 128, torch.bfloat16, seed=3).view(96, 128)
    x = data(128, torch.bfloat16, seed=4).view(1, 128)
    packed, state = F.quantize_4bit(W, quant_type="nf4")
    expected = x.float() @ F.dequantize_4bit(packed, state).float().T
    ours = F.gemv_4bit(x, packed.t(), state=state) if packed.shape[0] == 1 else F.gemv_4bit(x, packed, state=state)
    # both round to bf16 (the weight or the code book, and the output): within 2^-7 + 2^-8 of |x| @ |W|.T
    scale = x.float().abs() @ F.dequantize_4bit(packed, state).float().abs().T
    assert ((ours.float() - expected).abs() <= scale * (2**-7 + 2**-8)).all()


def test_int8_vectorwise_quant_matches_bitsandbytes():
    A = data(64 * 96, torch.float16, seed=5).view(64, 96)
    A[:, 7] *= 30
    ours = F.int8_vectorwise_quant(A.clone(), threshold=6.0)
    theirs = bnb_F.int8_vectorwise_quant(A.clone(), threshold=6.0)
    assert torch.equal(ours[2], theirs[2])
    torch.testing.assert_close(ours[1], theirs[1])
    assert (ours[0].int() - theirs[0].int()).abs().max() <= 1

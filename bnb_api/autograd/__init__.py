"""Autograd functions and entry points of the quantized matmuls (``bnb_api.matmul``, ``bnb_api.matmul_4bit``)."""

from bnb_api.autograd._functions import (
    GlobalOutlierPooler,
    MatMul4Bit,
    MatMul8bitLt,
    MatmulLtState,
    matmul,
    matmul_4bit,
)

__all__ = ["GlobalOutlierPooler", "MatMul4Bit", "MatMul8bitLt", "MatmulLtState", "matmul", "matmul_4bit"]

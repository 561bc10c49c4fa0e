"""cffi build of ``bnb_api.backends.cpu._quant_lib``: the quantization kernels in quant*.c, prototypes and
constants in quant.h. ``python backends/cpu/build_quant.py`` builds it in place (see cffi_family.py)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cffi_family import Family  # noqa: E402

FAMILY = Family(
    module="bnb_api.backends.cpu._quant_lib",
    header="quant.h",
    sources=("quant_dispatch.c", "quant_blockwise.c", "quant_gemv.c", "quant_gemv_batched.c", "quant_int8.c",
             "quant_memory.c"),
    depends=("quant_internal.h", "quant_gemv.h", "bucket_lut.h", "lut256_vbmi.h", "octave_lut_vbmi.h"),
)
ffibuilder = FAMILY.builder()

if __name__ == "__main__":
    print(FAMILY.build_inplace(verbose="-v" in sys.argv))

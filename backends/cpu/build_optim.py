"""cffi build of ``bnb_api.backends.cpu._optim_lib``: the fused optimizer kernels in optim*.c, prototypes
and constants in optim.h. ``python backends/cpu/build_optim.py`` builds it in place (see cffi_family.py)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cffi_family import Family  # noqa: E402

FAMILY = Family(
    module="bnb_api.backends.cpu._optim_lib",
    header="optim.h",
    sources=("optim_dispatch.c", "optim_generic.c", "optim_avx2.c", "optim_avx512.c"),
    depends=("optim_internal.h", "optim_kernel.h", "bucket_lut.h", "lut256_vbmi.h", "octave_lut_vbmi.h"),
)
ffibuilder = FAMILY.builder()

if __name__ == "__main__":
    print(FAMILY.build_inplace(verbose="-v" in sys.argv))

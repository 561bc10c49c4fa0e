#!/usr/bin/env bash
# Compile the CUDA library with nvcc into a temporary folder and fail loudly on any error.
# Nothing is run (no GPU needed). Targets: the release list (sm_75, sm_80, sm_86, sm_89, sm_90) plus
# PTX of compute_90; BNB_API_CUDA_ARCHS=sm_80 (comma-separated) narrows it to save time.
# Measured on the 2-core development machine (nvcc 13.0, shared, noisy): 6-13 s for all five targets,
# 4-6 s for sm_80 + PTX.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
ARCHS="${BNB_API_CUDA_ARCHS:-all}"
if [[ "$ARCHS" == "all" ]]; then unset BNB_API_CUDA_ARCHS; else export BNB_API_CUDA_ARCHS="$ARCHS"; fi

if ! NVCC="$("$PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1]); import build; print(build.find_nvcc() or "")' \
        "$ROOT/backends/cuda")" || [[ -z "$NVCC" ]]; then
    echo "cuda_compile_check: FAILED: nvcc not found (set BNB_API_NVCC or CUDA_HOME)" >&2
    exit 1
fi

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
start=$SECONDS
if ! "$PYTHON" "$ROOT/backends/cuda/build.py" --out "$OUT"; then
    echo "cuda_compile_check: FAILED: nvcc could not compile backends/cuda (output above)" >&2
    exit 1
fi
LIB="$OUT/libbnb_api_cuda.so"
# every function of the C ABI header must be exported
missing=0
for fn in $(grep -oE 'bnb_cuda_[a-z0-9_]+\(' "$ROOT/backends/cuda/bnb_api_cuda.h" | tr -d '(' | sort -u); do
    if ! nm -D --defined-only "$LIB" | grep -qE " T $fn\$"; then
        echo "cuda_compile_check: FAILED: $fn is declared in bnb_api_cuda.h but not exported" >&2
        missing=1
    fi
done
[[ $missing == 0 ]] || exit 1
echo "cuda_compile_check: OK ($("$NVCC" --version | tail -1); targets ${BNB_API_CUDA_ARCHS:-all} + compute_90 PTX; $((SECONDS - start)) s)"

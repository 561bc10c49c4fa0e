#!/usr/bin/env bash
# The whole GPU check, for a session that HAS a CUDA GPU (e.g. the device tool; about 3 minutes on an H100):
#   1. builds libbnb_api_cuda.so for this GPU's architecture (+ compute_90 PTX),
#   2. runs the conformance suite on cuda (quick),
#   3. runs ci/gpu_e2e.py (Linear4bit, Linear8bitLt, optimizers and state dicts on the GPU against the cpu),
#   4. runs benchmarks/bench_gpu.py (gemv_4bit NF4 11008x4096 batch 1, 8-bit AdamW, the other ops vs bandwidth),
#   5. with FULL_S=seconds, runs the conformance suite in full mode on cuda within that time,
#   6. with PROFILE=1, profiles the gemv_4bit and 8-bit optimizer kernels with ncu (speed of light, memory,
#      occupancy, warp stall reasons) into $OUT/ncu.txt,
#   7. prints a short summary table.
# Needs a CUDA build of torch in $PYTHON (default: python). Results go to $OUT (default: a temp dir).
# Exit status: 0 only if the build, the conformance run and the benchmark all succeed.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
OUT="${OUT:-$(mktemp -d)}"
mkdir -p "$OUT"
cd "$ROOT"
log() { echo "[gpu_check $(date +%H:%M:%S)] $*"; }

if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() and torch.version.cuda else 1)'; then
    log "FAILED: $PYTHON has no CUDA torch or sees no GPU ($("$PYTHON" -c 'import torch; print(torch.__version__)' 2>&1))"
    exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt"
ARCH="$("$PYTHON" -c 'import torch; a, b = torch.cuda.get_device_capability(); print(f"sm_{a}{b}")')"

# 1. build (only this GPU's architecture: fast) into $OUT, used through BNB_API_CUDA_LIB; a library
#    built elsewhere (no nvcc on the GPU machine) is used as is when BNB_API_CUDA_LIB names it
t0=$SECONDS
if [[ -n "${BNB_API_CUDA_LIB:-}" && -f "${BNB_API_CUDA_LIB}" ]]; then
    log "using the prebuilt $BNB_API_CUDA_LIB (GPU is $ARCH)"
else
    log "building libbnb_api_cuda.so for $ARCH"
    if ! "$PYTHON" backends/cuda/build.py --out "$OUT/lib" --arch "$ARCH" > "$OUT/build.log" 2>&1; then
        cat "$OUT/build.log"; log "FAILED: build"; exit 1
    fi
    export BNB_API_CUDA_LIB="$OUT/lib/libbnb_api_cuda.so"
fi
BUILD_S=$((SECONDS - t0))
if ! "$PYTHON" -c 'import bnb_api' 2>/dev/null; then
    log "bnb_api not installed in $PYTHON: installing the checkout (editable, no deps, no CUDA build)"
    BNB_API_BUILD_CUDA=0 "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" || { log "FAILED: install"; exit 1; }
fi
"$PYTHON" - <<'PY' || { log "FAILED: the cuda backend is not active"; exit 1; }
from bnb_api.core import registry
ok, reason = registry.backends()["cuda"].available()
print("cuda backend:", "active" if ok else f"INACTIVE: {reason}")
raise SystemExit(0 if ok else 1)
PY

# 2. conformance on cuda
log "conformance (quick) on cuda"
timeout 300 "$PYTHON" -m bnb_api.conformance --backend cuda --device cuda --quick --report "$OUT/conformance" \
    > "$OUT/conformance.log" 2>&1
CONF_RC=$?
tail -n 25 "$OUT/conformance.log"

# 3. the user API on the GPU against the cpu
log "end-to-end: the user API on cuda against the cpu"
timeout 300 "$PYTHON" ci/gpu_e2e.py --device cuda > "$OUT/e2e.log" 2>&1
E2E_RC=$?
grep -E "^FAIL|gpu_e2e:" "$OUT/e2e.log"

# 4. benchmarks
log "benchmarks"
timeout 240 "$PYTHON" benchmarks/bench_gpu.py --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench.log"
BENCH_RC=${PIPESTATUS[0]}

# 5. conformance in full mode, within FULL_S seconds (skipped when FULL_S is unset or 0)
FULL_RC=-1
if [[ "${FULL_S:-0}" -gt 0 ]]; then
    log "conformance (full, at most ${FULL_S} s) on cuda"
    timeout "$FULL_S" "$PYTHON" -m bnb_api.conformance --backend cuda --device cuda --full --no-bench \
        --report "$OUT/conformance_full" > "$OUT/conformance_full.log" 2>&1
    FULL_RC=$?
    tail -n 15 "$OUT/conformance_full.log"
fi

# 6. ncu profile of the two kernels with bandwidth targets (skipped unless PROFILE=1)
if [[ "${PROFILE:-0}" == 1 ]] && command -v ncu > /dev/null; then
    log "ncu profile: gemv_4bit_vec_kernel and optimizer_8bit_kernel"
    timeout 180 ncu --kernel-name regex:"gemv_4bit_vec|optimizer_8bit" --launch-count 3 --section SpeedOfLight \
        --section MemoryWorkloadAnalysis --section Occupancy --section WarpStateStats --section LaunchStats \
        "$PYTHON" benchmarks/bench_gpu.py --once > "$OUT/ncu.txt" 2>&1
    grep -E "^  [a-zA-Z_<].*\(|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Stall" \
        "$OUT/ncu.txt" | head -60
fi

# 7. summary
"$PYTHON" - "$OUT" "$BUILD_S" "$CONF_RC" "$BENCH_RC" "$E2E_RC" "$FULL_RC" <<'PY'
import json, os, sys
out, build_s, conf_rc, bench_rc, e2e_rc, full_rc = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
gpu = open(os.path.join(out, "gpu.txt")).read().strip() if os.path.exists(os.path.join(out, "gpu.txt")) else "?"
print(f"\n## GPU check summary ({gpu})\n")
print("| step | result |\n|---|---|")
print(f"| build ({build_s} s) | ok |")
print(f"| conformance --quick | {'passed' if conf_rc == 0 else f'FAILED (rc {conf_rc})'} |")
print(f"| end-to-end (ci/gpu_e2e.py) | {'passed' if e2e_rc == 0 else f'FAILED (rc {e2e_rc})'} |")
if full_rc != -1:
    verdict = {0: "passed", 124: "not finished in FULL_S"}.get(full_rc, f"FAILED (rc {full_rc})")
    print(f"| conformance --full | {verdict} |")
path = os.path.join(out, "bench_gpu.json")
if bench_rc == 0 and os.path.exists(path):
    data = json.load(open(path))
    print(f"| copy bandwidth | {data.get('copy_bandwidth_gbps', 0):.0f} GB/s |")
    for r in data["rows"]:
        pct = "" if r["pct_bw"] is None else f", {r['pct_bw']:.0f}% BW"
        gbps = "" if r["gbps"] is None else f", {r['gbps']:.0f} GB/s"
        ratios = "".join(f", {v:.2f}x {k}" for k, v in r.get("ratios", {}).items())
        print(f"| {r['op']} {r['shape']} [{r['impl']}] | {r['seconds'] * 1e3:.3f} ms{gbps}{pct}{ratios} {r['note']} |")
else:
    print(f"| benchmarks | FAILED (rc {bench_rc}) |")
print(f"\nfiles: {out}")
PY
[[ $CONF_RC == 0 && $BENCH_RC == 0 && $E2E_RC == 0 && ( $FULL_RC == -1 || $FULL_RC == 0 ) ]]

#!/usr/bin/env bash
# The one command to run on a GPU machine: builds the CUDA backend, the GPU kernel lab
# (tests/gpu/test_gpu_*.c: every kernel against its CPU oracle, then timed) and the SAE
# step benchmark, runs them all, and prints a short table.
#
#   tests/gpu/run.sh            # from the repository root (or anywhere)
#   BENCH_ARGS="--n 24576 --math tf32" tests/gpu/run.sh
#
# Exit status: 0 when every lab program passed (or skipped for lack of a device), 1 when
# one failed or the build failed. Full logs are kept in build/gpu/logs/.
set -u
cd "$(dirname "$0")/../.."
jobs=$(nproc 2>/dev/null || echo 2)
build=${BUILD:-build}
logs=$build/gpu/logs
mkdir -p "$logs"

if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
    echo "run.sh: nvcc not found: the CUDA backend is not built (install the CUDA toolkit)"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total \
    --format=csv,noheader | sed 's/^/gpu: /'

labs=$(ls tests/gpu/test_gpu_*.c | sed "s|tests/gpu/\(.*\)\.c|$build/gpu/\1|")
echo "== building the GPU lab"
if ! make -j"$jobs" $labs >"$logs/build.log" 2>&1; then
    echo "build failed (tail of $logs/build.log):"
    tail -n 30 "$logs/build.log"
    exit 1
fi

fail=0
rows=()
for t in $labs; do
    name=$(basename "$t")
    echo "== $name"
    start=$(date +%s%N)
    "$t" 2>&1 | tee "$logs/$name.log"
    rc=${PIPESTATUS[0]}
    secs=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN{printf "%.1f", (b-a)/1e9}')
    case $rc in
        0) res=PASS ;;
        77) res=SKIP ;;
        *) res="FAIL($rc)"; fail=1 ;;
    esac
    checks=$(grep -Eo '^ok: [0-9]+ checks|^FAILED: [0-9]+ of [0-9]+ checks' "$logs/$name.log" | tail -n 1)
    rows+=("$(printf '%-22s %-9s %7ss  %s' "$name" "$res" "$secs" "$checks")")
done

if command -v python3 >/dev/null; then
    echo "== top-k algorithm simulation (CPU, no device needed)"
    start=$(date +%s%N)
    if python3 tests/gpu/topk_sim.py 2>&1 | tee "$logs/topk_sim.log"; then res=PASS; else res=FAIL; fail=1; fi
    secs=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN{printf "%.1f", (b-a)/1e9}')
    rows+=("$(printf '%-22s %-9s %7ss  %s' "topk_sim.py" "$res" "$secs" "algorithm vs sort by rank")")
fi

echo "== SAE step benchmark (step / encoder GEMM, same run)"
bench=$build/bench/bench_sae_cuda
if make -j"$jobs" "$bench" >"$logs/bench_build.log" 2>&1; then
    # shellcheck disable=SC2086
    "$bench" ${BENCH_ARGS:-} 2>&1 | tee "$logs/bench_sae_cuda.log"
else
    echo "bench_sae_cuda did not build (another library may be mid-edit): see $logs/bench_build.log"
fi

echo
echo "== summary"
printf '%-22s %-9s %8s  %s\n' "program" "result" "time" "checks"
for r in "${rows[@]}"; do echo "$r"; done
[ -f "$logs/bench_sae_cuda.log" ] && grep -E '^(fp32|tf32|bf16) ' "$logs/bench_sae_cuda.log" |
    awk 'BEGIN{print "bench: math n step_ms gemm_ms ratio"} {print "bench:", $1, $3, $6, $7, $8}'
exit $fail

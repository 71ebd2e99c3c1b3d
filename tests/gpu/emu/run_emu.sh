#!/usr/bin/env bash
# Runs the CUDA kernels under the CPU emulation (cuda_emu.h) against the CPU oracle: no
# GPU and no CUDA toolkit needed. Builds the CPU libraries with CUDA=0 into build/emu/,
# compiles each tests/gpu/emu/emu_*.cpp with g++, runs them, exits non-zero on failure.
#
#   tests/gpu/emu/run_emu.sh            (from anywhere)
set -u
cd "$(dirname "$0")/../../.."
out=build/emu
libs="sae model tensor safetensors core"
make -s CUDA=0 BUILD=$out $(for l in $libs; do echo $out/lib/libsf_$l.a; done) >/dev/null || exit 1
mkdir -p $out/emu
fail=0
for src in tests/gpu/emu/emu_*.cpp; do
    name=$(basename "$src" .cpp)
    echo "== $name"
    if ! g++ -std=c++17 -O2 -g -pthread -fopenmp -Icommon -Wall -Wextra -Wno-unknown-pragmas \
        -Wno-unused-parameter -o $out/emu/$name "$src" \
        -Wl,--start-group $(for l in $libs; do echo $out/lib/libsf_$l.a; done) -Wl,--end-group \
        -lopenblas -lcjson -lm; then
        echo "FAIL $name (build)"
        fail=1
        continue
    fi
    start=$(date +%s)
    if $out/emu/$name; then echo "PASS $name ($(( $(date +%s) - start ))s)"; else echo "FAIL $name"; fail=1; fi
done
exit $fail

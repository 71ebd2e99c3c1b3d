#!/usr/bin/env bash
# Prints an environment (VAR=value ...) under which OpenBLAS takes other code paths than it
# picks by itself on this CPU: another kernel family (OPENBLAS_CORETYPE, one the CPU can run)
# and one thread instead of several. `make test` runs the unit tests a second time under it,
# so a test that only passes with the kernels of the machine it was written on (comparing
# floats bitwise across call shapes, thread counts or CPUs) fails here, not on a user's machine.
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
has() { [[ " $flags " == *" $1 "* ]]; }
if [ "$(uname -m)" != x86_64 ]; then
    echo "OPENBLAS_NUM_THREADS=1"
elif has avx512f; then
    echo "OPENBLAS_CORETYPE=Haswell OPENBLAS_NUM_THREADS=1" # AVX2 kernels instead of AVX-512
elif has avx2; then
    echo "OPENBLAS_CORETYPE=Sandybridge OPENBLAS_NUM_THREADS=1" # AVX kernels instead of AVX2
else
    echo "OPENBLAS_CORETYPE=Nehalem OPENBLAS_NUM_THREADS=1"
fi

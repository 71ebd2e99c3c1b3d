#!/usr/bin/env bash
# Runs each unit-test binary given on the command line; 77 means skipped.
set -u
pass=0 fail=0 skip=0 failed=()
for t in "$@"; do
    start=$(date +%s%N)
    out=$("$t" 2>&1); rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s%N)" 'BEGIN{printf "%.1f", (b-a)/1e9}')
    name=$(basename "$t")
    if [ $rc -eq 0 ]; then pass=$((pass+1)); echo "PASS $name (${secs}s)"
    elif [ $rc -eq 77 ]; then skip=$((skip+1)); echo "SKIP $name: $(echo "$out" | tail -n 1)"
    else fail=$((fail+1)); failed+=("$name"); echo "FAIL $name (rc=$rc)"; echo "$out" | tail -n 40 | sed 's/^/    /'
    fi
done
echo "unit: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ] || { echo "failed: ${failed[*]}"; exit 1; }

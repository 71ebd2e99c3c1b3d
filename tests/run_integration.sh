#!/usr/bin/env bash
# Runs every tests/integration/*.sh; each starts real binaries from $SAEFLOW_BIN on
# temporary sockets and directories and exits 0 (pass), 77 (skip) or other (fail).
set -u
pass=0 fail=0 skip=0
for t in tests/integration/*.sh; do
    [ -e "$t" ] || continue
    name=$(basename "$t" .sh)
    start=$(date +%s)
    out=$(bash "$t" 2>&1); rc=$?
    secs=$(( $(date +%s) - start ))
    if [ $rc -eq 0 ]; then pass=$((pass+1)); echo "PASS $name (${secs}s)"; echo "$out" | grep -E '^(RESULT|result)' | sed 's/^/    /'
    elif [ $rc -eq 77 ]; then skip=$((skip+1)); echo "SKIP $name: $(echo "$out" | tail -n 1)"
    else fail=$((fail+1)); echo "FAIL $name (rc=$rc, ${secs}s)"; echo "$out" | tail -n 60 | sed 's/^/    /'
    fi
done
echo "integration: $pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]

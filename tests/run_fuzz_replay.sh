#!/usr/bin/env bash
# Replays each fuzz target's checked-in corpus (tests/fuzz/corpus/<name>/) once, under
# the ASan + UBSan the fuzz binaries are built with. Any crash fails the run.
set -u
fail=0
for f in "$@"; do
    name=$(basename "$f"); name=${name#fuzz_}
    dir=tests/fuzz/corpus/$name
    if [ ! -d "$dir" ] || [ -z "$(ls -A "$dir")" ]; then echo "FAIL fuzz $name: no corpus in $dir"; fail=1; continue; fi
    n=$(find "$dir" -type f | wc -l)
    if find "$dir" -type f -print0 | xargs -0 "$f" -runs=1 >/tmp/fuzz_replay_$$.log 2>&1; then
        echo "PASS fuzz $name ($n inputs)"
    else
        echo "FAIL fuzz $name"; tail -n 30 /tmp/fuzz_replay_$$.log | sed 's/^/    /'; fail=1
    fi
done
rm -f /tmp/fuzz_replay_$$.log
exit $fail

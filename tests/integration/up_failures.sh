#!/usr/bin/env bash
# `saeflow up` never hangs and never leaves a service behind:
#  - a bad model path, an unknown capture key, an unknown train key, an unreadable
#    input: up exits non-zero within a deadline, prints the failed service's error
#    lines from its log, and no service process remains;
#  - capture ending without sending anything (an empty input): up stops train after
#    stop_s without new tokens and exits 1 (or capture itself fails, exit 1);
#  - a bad value of up's own (stop_s = abc, an unset ${VAR}, an unfilled @PLACEHOLDER@):
#    exit 2 with a message naming the line;
#  - up killed with SIGKILL mid-run: its trainer and capture die with it (no orphans);
#  - deploy/demo.conf as the README shows it parses (no directory named @RUN_DIR@).
set -u
BIN=${SAEFLOW_BIN:-build/bin}
MODELS=${SAEFLOW_MODELS:-$(pwd)/../shared/models}
CORPUS=${SAEFLOW_CORPUS:-$(pwd)/../shared/corpus}
[ -x "$BIN/saeflow" ] || { echo "no $BIN/saeflow"; exit 77; }
BIN=$(cd "$BIN" && pwd)
MODEL=$MODELS/stories260K/stories260K.bin
TEXTS=$CORPUS/tinystories-sample.jsonl
[ -f "$MODEL" ] && [ -f "$TEXTS" ] || { echo "skip: stories260K or the TinyStories sample missing"; exit 77; }
T=$(mktemp -d /tmp/saeflow_up_failures.XXXXXX)
cleanup() {
    for p in $(cat "$T"/*.pids 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
    [ -n "${KEEP:-}" ] || rm -rf "$T"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }

# conf NAME EXTRA_LINES...: a small valid pipeline with the extra lines appended
conf() {
    local name=$1; shift
    {
        echo "run_dir = $T/$name"
        echo "stop_s = 20"
        echo "capture.model = $MODEL"
        echo "capture.input = $TEXTS"
        echo "capture.hook = blocks.2.hook_resid_post"
        echo "capture.max_tokens = 2000000"
        echo "capture.context = 64"
        echo "train.hook = blocks.2.hook_resid_post"
        echo "train.d_in = 64"
        echo "train.n = 256"
        echo "train.k = 8"
        echo "train.total_tokens = 2000000"
        for l in "$@"; do echo "$l"; done
    } >"$T/$name.conf"
}

# pids_alive FILE: prints the pids listed in FILE that still run
pids_alive() {
    for p in $(cat "$1" 2>/dev/null); do kill -0 "$p" 2>/dev/null && echo "$p"; done
}

# run_fail NAME WANT_TEXT: up must exit non-zero within 60 s and print WANT_TEXT
run_fail() {
    local name=$1 want=$2
    timeout -s KILL 60 "$BIN/saeflow" up "$T/$name.conf" >"$T/$name.out" 2>&1
    local rc=$?
    [ $rc = 137 ] && { cat "$T/$name.out"; fail "$name: saeflow up hung (killed after 60 s)"; }
    [ $rc != 0 ] || { cat "$T/$name.out"; fail "$name: saeflow up exited 0"; }
    grep -oE '(train|capture) pid [0-9]+' "$T/$name.out" | awk '{ print $3 }' >"$T/$name.pids"
    [ -s "$T/$name.pids" ] || { cat "$T/$name.out"; fail "$name: no service pids printed"; }
    grep -q -- "$want" "$T/$name.out" || { cat "$T/$name.out"; fail "$name: the service's error ('$want') not shown"; }
    grep -q "failed (exit" "$T/$name.out" || { cat "$T/$name.out"; fail "$name: no failure line"; }
    sleep 0.2
    left=$(pids_alive "$T/$name.pids")
    [ -z "$left" ] || fail "$name: service processes left running: $left"
    echo "ok $name: rc=$rc, error shown, no process left"
}

conf badmodel "capture.model = $T/no-such-model.bin"
sed -i '/^capture.model = .*stories260K/d' "$T/badmodel.conf"
run_fail badmodel "no-such-model.bin"

conf badcapkey "capture.no_such_key = 1"
run_fail badcapkey "no_such_key"

conf badtrainkey "train.no_such_key = 1"
run_fail badtrainkey "no_such_key"

mkdir -p "$T/adir"
conf unreadable "capture.input = $T/adir"
sed -i "/^capture.input = .*tinystories/d" "$T/unreadable.conf"
run_fail unreadable "level=error svc=capture"

# capture ends having sent nothing (an empty input): up must not wait for train forever
: >"$T/empty.jsonl"
conf empty "capture.input = $T/empty.jsonl" "stop_s = 3"
sed -i -e "/^capture.input = .*tinystories/d" -e "/^stop_s = 20/d" "$T/empty.conf"
timeout -s KILL 60 "$BIN/saeflow" up "$T/empty.conf" >"$T/empty.out" 2>&1
rc=$?
grep -oE '(train|capture) pid [0-9]+' "$T/empty.out" | awk '{ print $3 }' >"$T/empty.pids"
[ $rc = 137 ] && { cat "$T/empty.out"; fail "empty input: saeflow up hung"; }
[ $rc != 0 ] || { cat "$T/empty.out"; fail "empty input: saeflow up exited 0"; }
grep -qE "no new tokens|capture failed|nothing captured" "$T/empty.out" || { cat "$T/empty.out"; fail "empty input: no reason given"; }
sleep 0.2
[ -z "$(pids_alive "$T/empty.pids")" ] || fail "empty input: services left running"
echo "ok empty: rc=$rc, $(grep -oE 'no new tokens for [0-9]+ s|capture failed \(exit [0-9]+\)|nothing captured from' "$T/empty.out" | head -1)"

# up's own values: exit 2 and a message naming the line
bad_up() {
    local name=$1 line=$2 want=$3
    conf "$name" "$line"
    timeout -s KILL 20 "$BIN/saeflow" up "$T/$name.conf" >"$T/$name.out" 2>&1
    local rc=$?
    [ $rc = 2 ] || { cat "$T/$name.out"; fail "$name: exit $rc, want 2"; }
    grep -q -- "$want" "$T/$name.out" || { cat "$T/$name.out"; fail "$name: no message '$want'"; }
    echo "ok $name: rc=2, $(head -1 "$T/$name.out")"
}
bad_up badstop "stop_s = abc" "stop_s wants seconds"
bad_up badvar 'capture.input = ${SAEFLOW_TEST_UNSET_VARIABLE}/x' "SAEFLOW_TEST_UNSET_VARIABLE is not set"
bad_up placeholder "capture.tokenizer = @MODELS@/tok.bin" "unfilled placeholder @MODELS@"
bad_up badkey "no_such_up_key = 1" "unknown option 'no_such_up_key'"

# SIGKILL to up mid-run: the services must die with it
conf orphan
"$BIN/saeflow" up "$T/orphan.conf" >"$T/orphan.out" 2>&1 &
up=$!
for i in $(seq 1 200); do grep -q "capture pid" "$T/orphan.out" && break; sleep 0.05; done
grep -oE '(train|capture) pid [0-9]+' "$T/orphan.out" | awk '{ print $3 }' >"$T/orphan.pids"
[ "$(wc -l <"$T/orphan.pids")" = 2 ] || { cat "$T/orphan.out"; fail "orphan: no pids"; }
sleep 1
kill -9 $up
wait $up 2>/dev/null
for i in $(seq 1 150); do [ -z "$(pids_alive "$T/orphan.pids")" ] && break; sleep 0.1; done
left=$(pids_alive "$T/orphan.pids")
[ -z "$left" ] || fail "orphan: services still running 15 s after up was killed: $left"
echo "ok orphan: both services ended after up was SIGKILLed"

# deploy/demo.conf as the README shows it: expands its variables, no @RUN_DIR@ folder
(cd "$T" && SAEFLOW_RUN_DIR=$T/demo SAEFLOW_MODELS=$T/nomodels SAEFLOW_CORPUS=$CORPUS \
    timeout -s KILL 60 "$BIN/saeflow" up "$OLDPWD/deploy/demo.conf" >"$T/demo.out" 2>&1)
rc=$?
grep -oE '(train|capture) pid [0-9]+' "$T/demo.out" | awk '{ print $3 }' >"$T/demo.pids"
[ $rc = 1 ] || { cat "$T/demo.out"; fail "demo.conf without the model: exit $rc, want 1"; }
grep -q "$T/nomodels/stories260K/stories260K.bin" "$T/demo.out" ||
    { cat "$T/demo.out"; fail "demo.conf: \${SAEFLOW_MODELS} not expanded into the model path"; }
[ -d "$T/demo" ] || fail "demo.conf: run_dir \${SAEFLOW_RUN_DIR} not used"
[ ! -e "$T/@RUN_DIR@" ] || fail "demo.conf created a directory named @RUN_DIR@"
[ -z "$(pids_alive "$T/demo.pids")" ] || fail "demo.conf: services left running"
echo "RESULT up failures: bad model, bad keys, unreadable input exit 1 with the error; bad up values exit 2; no orphans after SIGKILL"
exit 0

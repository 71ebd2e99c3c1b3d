#!/usr/bin/env bash
# Two saeflow-train on one ipc endpoint: the second is refused (exit 1, a message
# naming the live socket) and the first keeps its socket; the first removes the socket
# file at a clean exit; a socket file left by a SIGKILLed trainer does not block the
# next one.
set -u
BIN=${SAEFLOW_BIN:-build/bin}
[ -x "$BIN/saeflow-train" ] || { echo "saeflow-train not built in $BIN"; exit 77; }
T=$(mktemp -d /tmp/saeflow_bind.XXXXXX)
P1=
cleanup() { [ -n "$P1" ] && kill -9 "$P1" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"; }
trap cleanup EXIT
fail() { echo "FAIL: $*"; exit 1; }
SOCK=$T/train.sock
train() { # train <name>
    exec "$BIN/saeflow-train" --bind "ipc://$SOCK" --hook blocks.2.hook_resid_post --metrics_port 0 \
        --ckpt_dir "$T/ck-$1"
}
wait_up() { # wait_up <log>: the socket is there and the trainer is in its loop
    for i in $(seq 1 200); do
        [ -S "$SOCK" ] && grep -q 'event=stream_consumer' "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

train one >"$T/1.out" 2>"$T/1.log" &
P1=$!
wait_up "$T/1.log" || { tail -n 5 "$T/1.log"; fail "the first trainer never bound"; }
(train two) >"$T/2.out" 2>"$T/2.log" &
P2=$!
for i in $(seq 1 300); do kill -0 $P2 2>/dev/null || break; sleep 0.1; done
kill -9 $P2 2>/dev/null
wait $P2
rc=$?
grep -o 'event=wire_bind_failed.*' "$T/2.log"
[ $rc = 1 ] || fail "second trainer on a live socket: want exit 1, got $rc"
grep -q 'another process is listening' "$T/2.log" || fail "no message naming the live socket"
kill -0 $P1 2>/dev/null || fail "the first trainer died"
[ -S "$SOCK" ] || fail "the first trainer lost its socket file"
kill -TERM $P1
wait $P1
P1=
[ -e "$SOCK" ] && fail "the socket file is left behind after a clean exit"

# a trainer killed hard leaves its socket file; the next one replaces it
train three >"$T/3.out" 2>"$T/3.log" &
P1=$!
wait_up "$T/3.log" || fail "the third trainer never bound"
kill -9 $P1
wait $P1 2>/dev/null
P1=
[ -S "$SOCK" ] || fail "expected a stale socket file after SIGKILL"
train four >"$T/4.out" 2>"$T/4.log" &
P1=$!
for i in $(seq 1 100); do grep -q 'event=stream_consumer' "$T/4.log" && break; sleep 0.05; done
grep -q 'wire_stale_socket' "$T/4.log" || { tail -n 3 "$T/4.log"; fail "the stale socket file was not replaced"; }
kill -0 $P1 2>/dev/null || fail "the fourth trainer died"
echo "RESULT second binder refused; stale socket replaced; socket removed at exit"
exit 0

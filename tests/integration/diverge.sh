#!/usr/bin/env bash
# A trainer that diverges stops and says so. With the batch guard turned off
# (--guard_abs_max 0 --guard_norm_ratio 0), 16 batches of ±3e38 reach the SAE and make
# its loss non-finite: the trainer must not commit (the last good checkpoint stays the
# latest, every checkpoint on disk holds finite weights), /healthz answers 503 with the
# reason, /metrics says saeflow_train_diverged 1, it logs train_diverged, exits 1 when
# stopped, and a restart resumes from the last good checkpoint.
cd "$(dirname "$0")/../.."
. tests/integration/pipeline_common.inc

TOOLS=$BUILD/tests/test_tools
[ -x "$TOOLS" ] || skip "test_tools not built ($TOOLS)"
command -v curl >/dev/null || skip "curl not installed"
command -v python3 >/dev/null || skip "python3 not installed"
PORT=$((20000 + RANDOM % 20000))
EP=ipc://$T/train.sock
targs=(--bind "$EP" --hook $HOOK --model_name stories260K --n 256 --k 8 --batch_tokens 512
       --buffer_tokens 4096 --ckpt_dir "$T/ckpt" --ckpt_every_s 1 --ledger "$T/train.ledger"
       --guard_abs_max 0 --guard_norm_ratio 0 --metrics_port $PORT)
"$BIN/saeflow-train" "${targs[@]}" >"$T/train.out" 2>"$T/train.log" &
TRAIN=$!; PIDS+=($TRAIN)
"$BIN/saeflow-capture" --model "$MODEL" --input "$CORPUS" --hook $HOOK --max_tokens 20000 \
    --context 128 --batch_seqs 8 --connect "$EP" >"$T/capture.out" 2>"$T/capture.log" &
CAP=$!; PIDS+=($CAP)
wait_pid $CAP 300 || { tail -n 5 "$T/capture.log"; fail "capture failed"; }
latest() { ls "$T/ckpt" | grep '^ckpt-' | sort | tail -n 1; }
good=$(latest)
[ -n "$good" ] || fail "no checkpoint before the poison"
curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null || fail "/healthz not ok before the poison"

"$TOOLS" poison "$EP" 16 >"$T/poison.out" 2>&1 || fail "poisoner failed"
code=0
for i in $(seq 1 75); do
    code=$(curl -s -o "$T/health.txt" -w '%{http_code}' "http://127.0.0.1:$PORT/healthz")
    [ "$code" != 200 ] && break
    sleep 0.2
done
sleep 1.2 # /metrics refresh
curl -s "http://127.0.0.1:$PORT/metrics" >"$T/metrics.txt"
div=$(metric_value "$T/metrics.txt" "saeflow_train_diverged{hook=\"$HOOK\"}")
echo "RESULT diverge healthz=$code body=\"$(tr -d '\n' <"$T/health.txt")\" diverged=$div good=$good latest=$(latest)"
[ "$code" = 503 ] || fail "/healthz answered $code after divergence"
grep -q diverged "$T/health.txt" || fail "/healthz gives no reason"
[ "$div" = 1 ] || fail "saeflow_train_diverged is $div"
grep -q 'level=error.*event=train_diverged' "$T/train.log" || fail "no train_diverged error line"
sleep 1.5 # past --ckpt_every_s: a healthy trainer would have committed by now
[ "$(latest)" = "$good" ] || fail "a checkpoint was written after divergence ($(latest))"
kill -TERM $TRAIN
wait_pid $TRAIN 60; rc=$?
[ $rc = 1 ] || fail "a diverged trainer exited with $rc, not 1"
grep -q '^diverged ' "$T/train.out" || fail "no diverged line on stdout"
[ "$(latest)" = "$good" ] || fail "a checkpoint was written at shutdown after divergence"
python3 tests/integration/ckpt_finite.py "$T/ckpt" || fail "a checkpoint holds non-finite values"

# a restart resumes from the last good checkpoint
"$BIN/saeflow-train" "${targs[@]}" --metrics_port 0 >"$T/train2.out" 2>"$T/train2.log" &
TRAIN=$!; PIDS+=($TRAIN)
for i in $(seq 1 50); do grep -q 'event=ckpt_resumed' "$T/train2.log" && break; sleep 0.2; done
grep -q "event=ckpt_resumed ckpt=$((10#${good#ckpt-}))" "$T/train2.log" ||
    { tail -n 5 "$T/train2.log"; fail "the restart did not resume from $good"; }
kill -TERM $TRAIN
wait_pid $TRAIN 60 || fail "the restarted trainer failed"
echo "diverge: ok"

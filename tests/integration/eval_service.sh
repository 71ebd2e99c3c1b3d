#!/usr/bin/env bash
# Evaluation end to end with the real binaries on stories260K:
#   saeflow-eval subscribes to saeflow-train's PUB socket; capture + train train a
#   Top-K SAE (n = 256, k = 16) on blocks.2.hook_resid_post and announce its export
#   (CheckpointReady); eval evaluates it on held-out TinyStories (validation lines),
#   harvests every feature into its feature store and counts it in /metrics
#   (saeflow_eval_evaluations_total{result="ok"}, the per-SAE FVU gauge); /healthz ok.
#   The store is read back while the service still owns it (`saeflow feature show`,
#   a secondary reader), then saeflow-eval --sae DIR --exit_when_done evaluates a
#   directory given on the command line, and `saeflow eval --json` prints a report
#   whose numbers are sane (0 <= FVU < 1, L0 <= k, CE_clean < CE_sae < CE_zero).
#   Usage errors exit 2.
cd "$(dirname "$0")/../.."
. tests/integration/pipeline_common.inc
[ -x "$BIN/saeflow-eval" ] && [ -x "$BIN/saeflow" ] || skip "saeflow-eval not built in $BIN"

TOKENS=${EVAL_SVC_TOKENS:-60000}
EP=ipc://$T/train.sock
PUB=ipc://$T/pub.sock
"$BIN/saeflow-eval" --model "$MODEL" --data "$CORPUS" --first_line 2317 --tokens 8192 \
    --store "$T/fs" --subscribe "$PUB" --metrics_port -1 >"$T/eval.out" 2>"$T/eval.log" &
EVAL=$!
PIDS+=($EVAL)
for i in $(seq 1 300); do grep -q 'event=eval_ready' "$T/eval.log" && break; sleep 0.2; done
PORT=$(grep -o 'http_port=[0-9]*' "$T/eval.log" | head -n 1 | cut -d= -f2)
[ -n "$PORT" ] && [ "$PORT" != 0 ] || { cat "$T/eval.log"; fail "eval service did not start"; }
curl -sf "http://127.0.0.1:$PORT/healthz" | grep -q '"ok"' || fail "/healthz not ok"

"$BIN/saeflow-train" --bind "$EP" --hook $HOOK --model_name stories260K --n 256 --k 16 \
    --batch_tokens 4096 --buffer_tokens 32768 --lr 0.004 --dead_tokens 500000 \
    --total_tokens "$TOKENS" --ckpt_dir "$T/ckpt" --ckpt_every_tokens 100000000 \
    --export_dir "$T/sae" --publish "$PUB" --exit_when_done true \
    >"$T/train.out" 2>"$T/train.log" &
TRAIN=$!
PIDS+=($TRAIN)
"$BIN/saeflow-capture" --model "$MODEL" --input "$CORPUS" --hook $HOOK --epochs 10 \
    --max_tokens "$TOKENS" --context 128 --batch_seqs 32 --dtype bf16 --connect "$EP" \
    >"$T/capture.out" 2>"$T/capture.log" &
CAP=$!
PIDS+=($CAP)
wait_pid $CAP 900; rc_cap=$?
wait_pid $TRAIN 300; rc_train=$?
[ $rc_cap = 0 ] && [ $rc_train = 0 ] || { tail -n 20 "$T/train.log"; fail "training failed"; }
SAE=$T/sae/$HOOK
[ -f "$SAE/cfg.json" ] || fail "no SAE exported"

# the announcement is evaluated and stored
ok=0
for i in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$PORT/metrics" >"$T/metrics.txt" || true
    ok=$(metric_value "$T/metrics.txt" 'saeflow_eval_evaluations_total{result="ok"}')
    [ -n "$ok" ] && [ "${ok%.*}" -ge 1 ] && break
    sleep 0.5
done
[ -n "$ok" ] && [ "${ok%.*}" -ge 1 ] || { tail -n 30 "$T/eval.log"; fail "no evaluation finished"; }
grep -q 'event=checkpoint_received' "$T/eval.log" || fail "no CheckpointReady received"
fvu=$(metric_value "$T/metrics.txt" "saeflow_eval_fvu{sae=\"$HOOK\"}")
stored=$(grep '^saeflow_eval_features_stored_total ' "$T/metrics.txt" | awk '{print $2}')
echo "RESULT eval_service fvu=$fvu features_stored=$stored"
awk -v v="$fvu" 'BEGIN { exit !(v >= 0 && v < 1) }' || fail "FVU gauge $fvu out of range"
[ "${stored%.*}" = 256 ] || fail "expected 256 features stored, got $stored"

# readers follow the owning service through a secondary instance
if "$BIN/saeflow" feature show --help >/dev/null 2>&1; then
    "$BIN/saeflow" feature show --store "$T/fs" --color never "$HOOK" 0 >"$T/show.txt" \
        2>"$T/show.log" || { cat "$T/show.log"; fail "feature show on the live store"; }
    head -n 5 "$T/show.txt"
fi
kill -TERM $EVAL
wait_pid $EVAL 60; rc=$?
[ $rc = 0 ] || { tail -n 20 "$T/eval.log"; fail "eval service exited with $rc on SIGTERM"; }

# a directory given on the command line, then exit
"$BIN/saeflow-eval" --model "$MODEL" --data "$CORPUS" --first_line 2317 --tokens 4096 \
    --store "$T/fs" --sae "$SAE" --sae_id stories/l2 --exit_when_done true \
    >"$T/eval2.out" 2>"$T/eval2.log" || { tail -n 20 "$T/eval2.log"; fail "eval --sae failed"; }
grep -q 'event=eval_stored sae=stories/l2 run=1' "$T/eval2.log" || fail "stories/l2 not stored"

# the one-shot command: table and JSON
"$BIN/saeflow" eval --sae "$SAE" --model "$MODEL" --data "$CORPUS" --first-line 2317 \
    --tokens 4096 --json >"$T/report.json" 2>"$T/report.log" || { cat "$T/report.log"; fail "saeflow eval"; }
python3 - "$T/report.json" <<'EOF' || fail "report JSON"
import json, sys
r = json.load(open(sys.argv[1]))
assert 0 <= r["fvu"] < 1, r["fvu"]
assert abs(r["explained_variance"] - (1 - r["fvu"])) < 1e-6
assert 0 < r["l0"] <= 16, r["l0"]
assert r["ce_clean"] < r["ce_sae"] < r["ce_zero_ablation"], r
assert 0 < r["loss_recovered_zero"] <= 1, r["loss_recovered_zero"]
assert r["n_dead"] + sum(r["log10_density_hist"]["counts"]) == r["d_sae"]
print("RESULT saeflow_eval fvu=%.4f l0=%.2f dead=%d loss_recovered=%.4f kl_score=%.4f"
      % (r["fvu"], r["l0"], r["n_dead"], r["loss_recovered_zero"], r["kl_score_zero"]))
EOF
"$BIN/saeflow" eval --sae "$SAE" --model "$MODEL" --data "$CORPUS" --first-line 2317 \
    --tokens 2048 >"$T/report.txt" 2>/dev/null || fail "saeflow eval (table)"
grep -q '^loss recovered (zero)' "$T/report.txt" || fail "no table"

# usage errors
"$BIN/saeflow" eval --sae "$SAE" >/dev/null 2>&1; [ $? = 2 ] || fail "missing flags not exit 2"
"$BIN/saeflow" eval --sae "$SAE" --model "$MODEL" --data "$CORPUS" --hook blocks.9.hook_resid_post \
    >/dev/null 2>&1; [ $? = 2 ] || fail "bad hook not exit 2"
"$BIN/saeflow-eval" --model "$MODEL" --data "$CORPUS" >/dev/null 2>&1; [ $? = 2 ] || fail "eval service usage"
echo "eval_service: ok"

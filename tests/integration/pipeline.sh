#!/usr/bin/env bash
# The pipeline end to end with the real binaries: saeflow-capture runs stories260K over
# the TinyStories sample (looping over it) and streams blocks.2.hook_resid_post
# activations to saeflow-train, which trains a Top-K SAE (n = 1024, k = 16) on 2M
# tokens, checkpoints, exports SAELens, and exits when the capture is done. Asserts
# FVU <= 0.2, dead fraction <= 10%, the export files, /healthz and /metrics, and that
# every batch the capture published was committed (no loss, no duplicates).
cd "$(dirname "$0")/../.."
. tests/integration/pipeline_common.inc

TOKENS=${PIPELINE_TOKENS:-2000000}
PORT=$((20000 + RANDOM % 20000))
EP=ipc://$T/train.sock

"$BIN/saeflow-train" --bind "$EP" --hook $HOOK --model_name stories260K --d_in 64 --context_size 128 --n 1024 --k 16 \
    --batch_tokens 4096 --buffer_tokens 65536 --lr 0.003 --dead_tokens 1000000 \
    --total_tokens "$TOKENS" --ckpt_dir "$T/ckpt" --ckpt_every_tokens 500000 \
    --export_dir "$T/sae" --ledger "$T/train.ledger" --exit_when_done true \
    --metrics_port $PORT >"$T/train.out" 2>"$T/train.log" &
TRAIN=$!
PIDS+=($TRAIN)
"$BIN/saeflow-capture" --model "$MODEL" --input "$CORPUS" --hook $HOOK --epochs 10 \
    --max_tokens "$TOKENS" --context 128 --batch_seqs 32 --dtype bf16 --connect "$EP" \
    --ledger "$T/capture.ledger" >"$T/capture.out" 2>"$T/capture.log" &
CAP=$!
PIDS+=($CAP)

# /healthz and /metrics while it runs
ok_health=0
for i in $(seq 1 50); do
    if curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then ok_health=1; break; fi
    sleep 0.2
done
[ $ok_health = 1 ] || { tail -n 20 "$T/train.log"; fail "trainer /healthz did not answer"; }

# sample the trainer's /metrics while the run goes on: it exits on its own once the
# capture is done and everything is committed, possibly before a last look
touch "$T/metrics.txt"
while kill -0 $CAP 2>/dev/null; do
    if curl -sf "http://127.0.0.1:$PORT/metrics" >"$T/metrics.new" 2>/dev/null &&
        grep -q "saeflow_train_tokens_total" "$T/metrics.new"; then
        mv "$T/metrics.new" "$T/metrics.txt"
    fi
    sleep 2
done
wait_pid $CAP 1800; rc_cap=$?
wait_pid $TRAIN 300; rc_train=$?
[ $rc_cap = 0 ] || { tail -n 30 "$T/capture.log"; fail "capture exited with $rc_cap"; }
[ $rc_train = 0 ] || { tail -n 30 "$T/train.log"; fail "train exited with $rc_train"; }
grep -E "event=(capture_stream|capture_done)" "$T/capture.log" | sed 's/^/    /'
grep -E "event=ckpt_saved" "$T/train.log" | tail -n 2 | sed 's/^/    /'

final=$(grep '^final ' "$T/train.out" | tail -n 1)
[ -n "$final" ] || fail "no final line from the trainer"
get() { echo "$final" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
tokens=$(get tokens); fvu=$(get fvu); dead=$(get dead); l0=$(get l0)
echo "RESULT pipeline tokens_trained=$tokens fvu=$fvu l0=$l0 dead_fraction=$dead"

# every published batch committed exactly once
published=$(wc -l <"$T/capture.ledger")
committed=$(grep -c ' committed$' "$T/capture.ledger")
trained=$(wc -l <"$T/train.ledger")
unique=$(awk '{print $1, $2, $3}' "$T/train.ledger" | sort -u | wc -l)
echo "RESULT pipeline batches_published=$published committed=$committed trainer_ledger=$trained unique=$unique"
[ "$committed" = "$published" ] || fail "not every batch was committed"
[ "$trained" = "$unique" ] || fail "duplicates in the trainer ledger"
[ "$trained" = "$committed" ] || fail "ledgers disagree"

awk -v t="$tokens" -v want="$TOKENS" 'BEGIN { exit !(t + 0 >= want + 0) }' || fail "trained $tokens < $TOKENS tokens"
awk -v f="$fvu" 'BEGIN { exit !(f + 0 <= 0.2) }' || fail "FVU $fvu > 0.2"
awk -v d="$dead" 'BEGIN { exit !(d + 0 <= 0.1) }' || fail "dead fraction $dead > 0.1"
for f in cfg.json sae_weights.safetensors; do
    [ -s "$T/sae/$HOOK/$f" ] || fail "SAELens export lacks $f"
done
grep -q '"d_sae": *1024' "$T/sae/$HOOK/cfg.json" || fail "cfg.json lacks d_sae 1024"
grep -q "saeflow_train_tokens_total" "$T/metrics.txt" || fail "/metrics lacks training counters"
grep -q "saeflow_wire_rejected_total" "$T/metrics.txt" || fail "/metrics lacks wire reject counters"
echo "RESULT pipeline export=$(ls "$T/sae/$HOOK" | tr '\n' ' ')"
echo "pipeline: ok"

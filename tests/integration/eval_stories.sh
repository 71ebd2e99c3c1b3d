#!/usr/bin/env bash
# A full evaluation of a pipeline-trained SAE on held-out text: saeflow-capture +
# saeflow-train train a Top-K SAE (n = 1024, k = 16) on stories260K's
# blocks.2.hook_resid_post over EVAL_TRAIN_TOKENS tokens of the TinyStories sample's
# training split only (JSONL lines 1-2316); `saeflow eval` then evaluates it on the
# validation split (lines 2317+, EVAL_TOKENS tokens) and harvests its features into a
# store. Prints the report and RESULT lines; asserts the SAE is a working one
# (FVU < 0.5, L0 = 16, dead < 25%, loss recovered vs zero ablation > 0.8,
# CE_clean < CE_sae < CE_mean-ablated) and that every feature was stored.
cd "$(dirname "$0")/../.."
. tests/integration/pipeline_common.inc
[ -x "$BIN/saeflow" ] || skip "saeflow not built in $BIN"

TOKENS=${EVAL_TRAIN_TOKENS:-300000}
EVAL_TOKENS=${EVAL_TOKENS:-65536}
head -n 2316 "$CORPUS" >"$T/train.jsonl"
EP=ipc://$T/train.sock
"$BIN/saeflow-train" --bind "$EP" --hook $HOOK --model_name stories260K --n 1024 --k 16 \
    --batch_tokens 4096 --buffer_tokens 65536 --lr 0.003 --dead_tokens 500000 \
    --total_tokens "$TOKENS" --ckpt_dir "$T/ckpt" --ckpt_every_tokens 100000000 \
    --export_dir "$T/sae" --exit_when_done true >"$T/train.out" 2>"$T/train.log" &
TRAIN=$!
PIDS+=($TRAIN)
"$BIN/saeflow-capture" --model "$MODEL" --input "$T/train.jsonl" --hook $HOOK --epochs 10 \
    --max_tokens "$TOKENS" --context 128 --batch_seqs 32 --dtype bf16 --connect "$EP" \
    >"$T/capture.out" 2>"$T/capture.log" &
CAP=$!
PIDS+=($CAP)
wait_pid $CAP 1800; rc_cap=$?
wait_pid $TRAIN 600; rc_train=$?
[ $rc_cap = 0 ] && [ $rc_train = 0 ] || { tail -n 20 "$T/train.log"; fail "training failed"; }
SAE=$T/sae/$HOOK
[ -f "$SAE/cfg.json" ] || fail "no SAE exported"

"$BIN/saeflow" eval --sae "$SAE" --model "$MODEL" --data "$CORPUS" --first-line 2317 \
    --tokens "$EVAL_TOKENS" --store "$T/fs" --sae-id stories260K/l2 >"$T/report.txt" \
    2>"$T/eval.log" || { tail -n 20 "$T/eval.log"; fail "saeflow eval failed"; }
cat "$T/report.txt"
json=$(grep '^{' "$T/report.txt")
python3 - "$json" <<'EOF' || fail "the trained SAE does not evaluate as a working SAE"
import json, sys
r = json.loads(sys.argv[1])
print("RESULT eval_stories fvu=%.4f explained_variance=%.4f l0=%.2f dead_pct=%.2f "
      "dense1_pct=%.2f ce_clean=%.4f ce_sae=%.4f ce_zero=%.4f ce_mean=%.4f "
      "loss_recovered_zero=%.4f loss_recovered_mean=%.4f kl_score_zero=%.4f tokens=%d"
      % (r["fvu"], r["explained_variance"], r["l0"], 100 * r["dead_frac"],
         100 * r["dense_1pct_frac"], r["ce_clean"], r["ce_sae"], r["ce_zero_ablation"],
         r["ce_mean_ablation"], r["loss_recovered_zero"], r["loss_recovered_mean"],
         r["kl_score_zero"], r["n_tokens"]))
assert r["fvu"] < 0.5, r["fvu"]
assert abs(r["l0"] - 16) < 1e-9, r["l0"]
assert r["dead_frac"] < 0.25, r["dead_frac"]
assert r["loss_recovered_zero"] > 0.8, r["loss_recovered_zero"]
assert r["ce_clean"] < r["ce_sae"] < r["ce_mean_ablation"], r
EOF
grep -q '^stored 1024 features of stories260K/l2' "$T/report.txt" || fail "features not stored"
echo "eval_stories: ok"

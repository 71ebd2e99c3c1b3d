#!/usr/bin/env bash
# Steering works, end to end with the real binaries: saeflow-capture + saeflow-train
# train a Top-K SAE (n = 1024, k = 16) on stories260K's blocks.2.hook_resid_post over
# STEER_TOKENS tokens of the TinyStories sample; `saeflow feature search --word " dog"`
# ranks the features selective for " dog" (among features firing on at least half of the
# " dog" tokens, the largest ratio of mean activation there to mean activation elsewhere)
# with where " dog"'s first token ranks among each one's logit effects (logit_rank).
# Which SAE the live stream trains varies with timing (the mixing buffer fills as batches
# arrive), so the feature is never named by index: the candidates, as a user would try
# them, are the selective features that promote the word (logit_rank <= 10, most promoted
# first), then the rest by selectivity; the first of three that steers is kept.
# `saeflow generate --steer F=S` (S = 4.5 x the feature's max activation on " dog", added
# at every position) draws 16 samples of 150 tokens with seeds 1..16, unsteered and
# steered with the same seeds. Asserts that the steered samples mention a dog far more
# often: steered >= unsteered + 6 and >= 8 of 16 (measured on SAEs of trainer seeds 1
# and 3-6: the kept feature gave 9-16 of 16 steered vs 2 of 16 unsteered; one SAE's first
# candidate gave 0 and its second 15), and that re-encoding the generated text with the SAE (generate --measure, an
# unsteered pass) finds the feature active on a larger share of the generated tokens when
# steered. The perplexity under the unsteered model is reported, not asserted (strong
# steering costs fluency). Also checks that `feature search --text` shows the feature
# active on the "g" of " dog", a dose-response sweep, and that malformed specs are refused.
cd "$(dirname "$0")/../.."
. tests/integration/pipeline_common.inc
[ -x "$BIN/saeflow" ] || skip "saeflow not built in $BIN"

TOKENS=${STEER_TOKENS:-400000}
EP=ipc://$T/train.sock
# the trainer's default learning rate, schedule and dead window (chosen from n and
# --total_tokens)
"$BIN/saeflow-train" --bind "$EP" --hook $HOOK --model_name stories260K --n 1024 --k 16 \
    --batch_tokens 4096 --buffer_tokens 65536 --total_tokens "$TOKENS" --ckpt_dir "$T/ckpt" \
    --ckpt_every_tokens 100000000 --export_dir "$T/sae" --exit_when_done true \
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
[ $rc_cap = 0 ] || { tail -n 20 "$T/capture.log"; fail "capture exited with $rc_cap"; }
[ $rc_train = 0 ] || { tail -n 20 "$T/train.log"; fail "train exited with $rc_train"; }
SAE=$T/sae/$HOOK
[ -f "$SAE/cfg.json" ] || fail "no SAE exported at $SAE"
echo "RESULT steering sae $(grep '^final ' "$T/train.out" | tail -n 1)"

# the feature most selective for " dog"
"$BIN/saeflow" feature search --model "$MODEL" --sae "$SAE" --input "$CORPUS" --word " dog" \
    --max-texts 1000 --context 128 --top 10 >"$T/search.txt" 2>"$T/search.log" ||
    { cat "$T/search.log"; fail "feature search --word failed"; }
cat "$T/search.txt"
# Candidates as a user would try them: the selective features that also promote the word
# (logit_rank <= 10, most promoted first), then the rest by selectivity; the first three are tried and the
# first that steers is kept (which features a live-trained SAE has varies with timing).
CANDS=$( { awk '$1 ~ /^[0-9]+$/ && NF == 9 && $9 >= 1 && $9 <= 10 { print $9, $2, $5 }' "$T/search.txt" |
             sort -n -k1,1 | cut -d' ' -f2-
           awk '$1 ~ /^[0-9]+$/ && NF == 9 && !($9 >= 1 && $9 <= 10) { print $2, $5 }' "$T/search.txt"; } | head -n 3)
[ -n "$CANDS" ] || fail "no ranked feature in the search output"
PROMPT="Once upon a time"
why=
while read -r F MAX_ON; do
    S=$(awk -v m="$MAX_ON" 'BEGIN { printf "%.3f", 4.5 * m }')
    # steered vs unsteered generations, same seeds
    "$BIN/saeflow" generate --model "$MODEL" --sae "$SAE" --steer "$F=$S" --samples 16 --seed 1 \
        -n 150 --prompt "$PROMPT" --measure >"$T/gen.txt" 2>"$T/gen.log" || { cat "$T/gen.log"; fail "generate --steer"; }
    # count samples (blocks) that mention a dog, per mode
    read -r UNSTEERED STEERED < <(awk '
        /^=== seed [0-9]+ unsteered/ { mode = "u"; n++; next }
        /^=== seed [0-9]+ steered/   { mode = "s"; next }
        /^# / { next }
        { if (tolower($0) ~ /dog/) { if (mode == "u") u[n] = 1; else if (mode == "s") s[n] = 1 } }
        END { cu = 0; cs = 0; for (k in u) cu++; for (k in s) cs++; print cu, cs }' "$T/gen.txt")
    samples=$(grep -c '^=== seed [0-9]* steered' "$T/gen.txt")
    [ "$samples" = 16 ] || fail "expected 16 steered samples, got $samples"
    fire() { grep "^# summary $1:" "$T/gen.txt" | sed -n 's/.*fire on \([0-9.]*\)%.*/\1/p'; }
    FU=$(fire unsteered); FS=$(fire steered)
    [ -n "$FU" ] && [ -n "$FS" ] || fail "no --measure summary"
    echo "RESULT steering try dog_feature=$F max_on_dog=$MAX_ON strength=$S unsteered_with_dog=$UNSTEERED steered_with_dog=$STEERED fire=$FU%->$FS%"
    if ! awk -v u="$FU" -v s="$FS" 'BEGIN { exit !(s > u) }'; then
        why="re-encoded generations: feature $F is not more present when steered ($FS% vs $FU%)"
    elif [ "$STEERED" -lt $((UNSTEERED + 6)) ] || [ "$STEERED" -lt 8 ]; then
        why="steering with feature $F did not add the concept ($STEERED vs $UNSTEERED of 16)"
    else
        why=
        break
    fi
done <<<"$CANDS"
[ -z "$why" ] || { cat "$T/gen.txt"; fail "$why (tried: $(echo $CANDS))"; }
echo "RESULT steering dog_feature=$F max_on_dog=$MAX_ON strength=$S"
echo "RESULT steering samples=$samples unsteered_with_dog=$UNSTEERED steered_with_dog=$STEERED"
sed -n '1,7p' "$T/gen.txt"
grep '^# summary' "$T/gen.txt" | sed 's/^# summary/RESULT steering measure/'

# per-token search on a text: F is active on the "g" of some " dog"
"$BIN/saeflow" feature search --model "$MODEL" --sae "$SAE" --top 16 --no-color \
    --text "Tim had a dog. The dog was big and the dog liked to play." \
    >"$T/text.txt" 2>"$T/text.log" || { cat "$T/text.log"; fail "search --text"; }
grep -E '^ +[0-9]+ +"g" ' "$T/text.txt" | grep -qE "(^| )$F " ||
    { cat "$T/text.txt"; fail "feature $F is not active on the \"g\" of \" dog\""; }

# dose response: the concept rate rises with the strength, and a strength is picked within
# a fluency bound (loose here: this strength costs fluency on stories260K)
"$BIN/saeflow" generate --model "$MODEL" --sae "$SAE" --steer "$F=1" --sweep "1,$S" \
    --concept dog --max-ppl-ratio 1000 --samples 8 --seed 1 -n 100 --prompt "$PROMPT" \
    >"$T/sweep.txt" 2>"$T/sweep.log" || { cat "$T/sweep.log"; fail "generate --sweep"; }
cat "$T/sweep.txt" | sed 's/^/RESULT steering sweep /'
rows=$(grep -cE '^ +[0-9.e+-]+ +[0-9]+ +[0-9]+/[0-9]+ ' "$T/sweep.txt")
[ "$rows" = 3 ] || fail "sweep: expected 3 rows (unsteered, 1, $S), got $rows"
c0=$(awk '/\(unsteered\)/ { split($3, a, "/"); print a[1]; exit }' "$T/sweep.txt")
cs=$(grep -E '^ +[0-9.e+-]+ +[0-9]+ +[0-9]+/[0-9]+ ' "$T/sweep.txt" | tail -n 1 | awk '{ split($3, a, "/"); print a[1] }')
[ "$cs" -gt "$c0" ] || fail "sweep: the concept is not more frequent at strength $S ($cs vs $c0 of 8)"
grep -q '^# pick: strength ' "$T/sweep.txt" || fail "sweep: no strength picked"

# bad specs are usage errors (exit 2), not crashes
for bad in "x=1" "$F=1:mul" "$F=" "99999=1" ; do
    "$BIN/saeflow" generate --model "$MODEL" --sae "$SAE" --steer "$bad" -n 4 >/dev/null 2>&1
    rc=$?
    [ $rc = 1 ] || [ $rc = 2 ] || fail "spec '$bad' gave exit $rc"
done
exit 0

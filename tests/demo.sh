#!/usr/bin/env bash
# `make demo`: trains a Top-K SAE on stories260K's residual stream over the TinyStories
# sample with the whole pipeline (saeflow-capture -> ZeroMQ -> saeflow-train) started by
# `saeflow up`, with live progress. Ctrl-C stops it with a resumable checkpoint; run
# `make demo` again to resume. Results land in build/demo/ (checkpoints, SAELens export).
set -u
cd "$(dirname "$0")/.."
MODELS=${SAEFLOW_MODELS:-$(pwd)/../shared/models}
CORPUS=${SAEFLOW_CORPUS:-$(pwd)/../shared/corpus}
BUILD=${BUILD:-build}
if [ ! -f "$MODELS/stories260K/stories260K.bin" ] || [ ! -f "$CORPUS/tinystories-sample.jsonl" ]; then
    echo "demo: stories260K or the TinyStories sample is missing"
    echo "      (looked in $MODELS and $CORPUS; run 'make models' or set SAEFLOW_MODELS / SAEFLOW_CORPUS)"
    exit 1
fi
RUN_DIR=$(pwd)/$BUILD/demo
mkdir -p "$RUN_DIR"
export SAEFLOW_MODELS=$MODELS SAEFLOW_CORPUS=$CORPUS SAEFLOW_RUN_DIR=$RUN_DIR
SF=$BUILD/bin/saeflow
MODEL=$MODELS/stories260K/stories260K.bin
TEXTS=$CORPUS/tinystories-sample.jsonl
HOOK=blocks.2.hook_resid_post
SAE=$RUN_DIR/sae/$HOOK
SAE_ID=stories260K/$HOOK

# 1. capture -> ZeroMQ -> train, until the token budget is trained (Ctrl-C: stop here)
interrupted=0
trap 'interrupted=1' INT
if [ -f "$RUN_DIR/trained" ] && [ -f "$SAE/cfg.json" ]; then
    echo "== 1. train: done in an earlier run ($SAE; rm -rf $RUN_DIR to train again)"
else
    echo "== 1. train: saeflow up deploy/demo.conf  (metrics: http://127.0.0.1:9464/metrics)"
    "$SF" up deploy/demo.conf
    rc=$?
    if [ $interrupted = 1 ] || [ $rc != 0 ]; then
        echo "demo: stopped (rc=$rc); the checkpoint in $RUN_DIR resumes with 'make demo'"
        exit $rc
    fi
    touch "$RUN_DIR/trained"
fi
trap - INT
set -e

# 2. evaluate on held-out text (the validation split) and harvest every feature
echo; echo "== 2. evaluate and harvest: saeflow eval --sae $SAE --store $RUN_DIR/features"
"$SF" eval --sae "$SAE" --model "$MODEL" --data "$TEXTS" --first-line 2317 --tokens 32768 \
    --store "$RUN_DIR/features" --sae-id "$SAE_ID"

# 3. which features fire where on a sentence
echo; echo "== 3. saeflow feature search --text"
"$SF" feature search --model "$MODEL" --sae "$SAE" --top 3 --summary 5 \
    --text "Tim had a little dog. The dog liked to play in the park."

# 4. the feature to steer with: among the features most selective for " dog", the first whose
#    logit effects promote the word (logit_rank: where " dog"'s first token ranks among what the
#    feature, added to the residual stream, makes more likely), then its dashboard from the store
echo; echo "== 4. saeflow feature search --word \" dog\": selective features and what they promote"
"$SF" feature search --model "$MODEL" --sae "$SAE" --input "$TEXTS" --word " dog" \
    --max-texts 1000 --context 128 --top 10 | tee "$RUN_DIR/dog.txt"
F=$(awk '$1 ~ /^[0-9]+$/ && NF == 9 && $9 >= 1 && $9 <= 10 { print $2; exit }' "$RUN_DIR/dog.txt")
if [ -z "$F" ]; then
    F=$(awk '$1 == "1" { print $2; exit }' "$RUN_DIR/dog.txt")
    echo "demo: no selective feature has \" dog\" among its 10 most promoted tokens; using the most selective, $F"
else
    echo "demo: steering with feature $F: selective for \" dog\" and promotes it"
fi
"$SF" feature show --store "$RUN_DIR/features" --examples 5 "$SAE_ID" "$F"

# 5. how strong: a dose-response sweep in multiples of the feature's max activation, each
#    strength on the same seeds; the concept rate (" dog" in the text) against the perplexity
#    the unsteered model gives the text; the pick keeps perplexity within 2x of unsteered
echo; echo "== 5. saeflow generate --steer $F=1x --sweep ...: dose response"
"$SF" generate --model "$MODEL" --sae "$SAE" --store "$RUN_DIR/features" --sae-id "$SAE_ID" \
    --steer "$F=1x" --sweep 0.25,0.5,0.75,1,1.5,2 --concept " dog" --max-ppl-ratio 2 --samples 8 \
    --seed 100 -n 80 --prompt "Once upon a time" | tee "$RUN_DIR/sweep.txt"
S=$(sed -n 's/^# pick: strength \([0-9.e+-]*\)x.*/\1/p' "$RUN_DIR/sweep.txt")
if [ -z "$S" ]; then
    S=1
    echo "demo: no strength kept the text fluent; showing ${S}x"
fi

# 6. steer with the picked strength: the sweep's first three seeds, with and without the feature
echo; echo "== 6. saeflow generate --steer $F=${S}x (add, every position), the sweep's seeds 100-102"
"$SF" generate --model "$MODEL" --sae "$SAE" --store "$RUN_DIR/features" --sae-id "$SAE_ID" \
    --steer "$F=${S}x" --samples 3 --seed 100 -n 80 --prompt "Once upon a time" --measure \
    --concept " dog"
echo; echo "demo: done. SAE (SAELens format): $SAE; feature store: $RUN_DIR/features"

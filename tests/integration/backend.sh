#!/usr/bin/env bash
# The run-time backend choice of saeflow-train and saeflow-capture (--backend
# cpu|cuda|auto, --cuda_math fp32|tf32|bf16):
#  - --backend bogus (and a bad --cuda_math) is a usage error: exit 2, for both;
#  - --backend auto logs the backend it chose (backend_chosen, sae_backend,
#    model_backend) and a short capture -> train run trains (tokens, finite FVU that
#    fell below 0.3, every batch committed);
#  - without a visible CUDA device, --backend cuda fails at startup, exit 1, with a
#    message that names cuda; with one, the short run is repeated with --backend cuda
#    on both services, which must log backend=cuda and train the same way.
# Kept short (150k tokens, a few seconds): the full-length run is pipeline.sh.
cd "$(dirname "$0")/../.."
. tests/integration/pipeline_common.inc

TOK=${BACKEND_TOKENS:-150000}

# run_pipeline NAME BACKEND: capture -> train over ipc, both with --backend BACKEND
run_pipeline() {
    local name=$1 be=$2
    "$BIN/saeflow-train" --backend "$be" --cuda_math fp32 --bind "ipc://$T/$name.sock" \
        --hook $HOOK --n 256 --k 8 --lr 0.003 --batch_tokens 1024 --buffer_tokens 8192 \
        --ckpt_dir "$T/$name.ckpt" --ledger "$T/$name-train.ledger" --exit_when_done true \
        >"$T/$name-train.out" 2>"$T/$name-train.log" &
    local tr=$!
    PIDS+=($tr)
    "$BIN/saeflow-capture" --backend "$be" --cuda_math fp32 --model "$MODEL" \
        --input "$CORPUS" --hook $HOOK --max_tokens "$TOK" --context 128 --batch_seqs 8 \
        --connect "ipc://$T/$name.sock" --ledger "$T/$name-capture.ledger" \
        >"$T/$name-capture.out" 2>"$T/$name-capture.log" &
    local cap=$!
    PIDS+=($cap)
    wait_pid $cap 120
    local rc=$?
    [ $rc = 0 ] || { tail -n 20 "$T/$name-capture.log"; fail "$name: capture exited with $rc"; }
    wait_pid $tr 60
    rc=$?
    [ $rc = 0 ] || { tail -n 20 "$T/$name-train.log"; fail "$name: train exited with $rc"; }
}

# check_trained NAME BACKEND: the run used BACKEND and trained
check_trained() {
    local name=$1 be=$2
    grep -q "event=sae_backend backend=$be " "$T/$name-train.log" ||
        fail "$name: trainer did not log sae_backend backend=$be"
    grep -q "event=model_backend backend=$be " "$T/$name-capture.log" ||
        fail "$name: capture did not log model_backend backend=$be"
    local final
    final=$(grep '^final ' "$T/$name-train.out" | tail -n 1)
    [ -n "$final" ] || fail "$name: no final line from the trainer"
    local tokens fvu steps
    tokens=$(echo "$final" | tr ' ' '\n' | sed -n 's/^tokens=//p')
    steps=$(echo "$final" | tr ' ' '\n' | sed -n 's/^steps=//p')
    fvu=$(echo "$final" | tr ' ' '\n' | sed -n 's/^fvu=//p')
    echo "RESULT backend run=$name backend=$be tokens=$tokens steps=$steps fvu=$fvu"
    local published committed
    published=$(wc -l <"$T/$name-capture.ledger")
    committed=$(grep -c ' committed$' "$T/$name-capture.ledger")
    [ "$published" -gt 0 ] && [ "$committed" = "$published" ] ||
        fail "$name: $committed of $published batches committed"
    # every captured token (specials excluded) was trained
    awk -v t="$tokens" -v want="$TOK" 'BEGIN { exit !(t + 0 >= 0.9 * want && t + 0 <= want) }' ||
        fail "$name: trained $tokens tokens of $TOK"
    awk -v s="$steps" 'BEGIN { exit !(s + 0 >= 10) }' || fail "$name: only $steps steps"
    awk -v f="$fvu" 'BEGIN { exit !(f == f + 0 && f + 0 > 0 && f + 0 < 0.3) }' ||
        fail "$name: FVU $fvu did not fall below 0.3"
    ls "$T/$name.ckpt"/ckpt-*/sae-0.safetensors >/dev/null 2>&1 || fail "$name: no checkpoint written"
}

# ---- usage errors: exit 2, before any work ----
"$BIN/saeflow-train" --backend bogus --ckpt_dir "$T/bogus.ckpt" >"$T/bogus-train.out" 2>&1
rc=$?
[ $rc = 2 ] || { cat "$T/bogus-train.out"; fail "saeflow-train --backend bogus exited $rc, want 2"; }
grep -q "backend" "$T/bogus-train.out" || fail "saeflow-train --backend bogus: no message"
"$BIN/saeflow-capture" --backend bogus --model "$MODEL" --input "$CORPUS" \
    --shard_dir "$T/bogus.shards" >"$T/bogus-capture.out" 2>&1
rc=$?
[ $rc = 2 ] || { cat "$T/bogus-capture.out"; fail "saeflow-capture --backend bogus exited $rc, want 2"; }
grep -q "backend" "$T/bogus-capture.out" || fail "saeflow-capture --backend bogus: no message"
"$BIN/saeflow-train" --cuda_math fp64 --ckpt_dir "$T/bogus.ckpt" >"$T/bogus-math.out" 2>&1
rc=$?
[ $rc = 2 ] || { cat "$T/bogus-math.out"; fail "saeflow-train --cuda_math fp64 exited $rc, want 2"; }
"$BIN/saeflow-capture" --cuda_math fp64 --model "$MODEL" --input "$CORPUS" \
    --shard_dir "$T/bogus.shards" >"$T/bogus-math-capture.out" 2>&1
rc=$?
[ $rc = 2 ] || { cat "$T/bogus-math-capture.out"; fail "saeflow-capture --cuda_math fp64 exited $rc, want 2"; }
echo "RESULT backend bogus: train and capture exit 2"

# ---- auto: logs its choice and trains ----
run_pipeline auto auto
chosen=$(sed -n 's/.*event=backend_chosen backend=\([a-z]*\).*/\1/p' "$T/auto-train.log" | head -n 1)
chosen_cap=$(sed -n 's/.*event=backend_chosen backend=\([a-z]*\).*/\1/p' "$T/auto-capture.log" | head -n 1)
[ -n "$chosen" ] || fail "saeflow-train --backend auto did not log backend_chosen"
[ -n "$chosen_cap" ] || fail "saeflow-capture --backend auto did not log backend_chosen"
[ "$chosen" = "$chosen_cap" ] || fail "auto chose $chosen for train but $chosen_cap for capture"
echo "RESULT backend auto chose $chosen"
# auto may still fall back to the CPU for what CUDA cannot do; whatever each service
# ended up on, it trained
check_trained auto "$(sed -n 's/.*event=sae_backend backend=\([a-z]*\).*/\1/p' "$T/auto-train.log" | head -n 1)"
grep -q "event=model_backend backend=$chosen " "$T/auto-capture.log" ||
    fail "capture chose $chosen but did not run on it"

# ---- cuda ----
if [ "$chosen" = cuda ]; then
    run_pipeline cuda cuda
    check_trained cuda cuda
    grep -q "event=sae_backend backend=cuda math=fp32" "$T/cuda-train.log" ||
        fail "trainer did not report cuda math fp32"
    # saeflow train --activations on the GPU too
    "$BIN/saeflow-capture" --model "$MODEL" --input "$CORPUS" --hook $HOOK --max_tokens 20000 \
        --context 128 --batch_seqs 8 --shard_dir "$T/cli.shards" >/dev/null 2>&1 ||
        fail "capture to shards failed"
    shard=$(ls "$T"/cli.shards/$HOOK/*.safetensors | head -n 1)
    "$BIN/saeflow" train --activations "$shard" --n 256 --k 8 --batch 1024 --backend cuda \
        --out "$T/cli.sae" >"$T/cli-cuda.out" 2>&1 || { cat "$T/cli-cuda.out"; fail "saeflow train --backend cuda failed"; }
    grep -q "event=sae_backend backend=cuda" "$T/cli-cuda.out" || fail "saeflow train --backend cuda did not run on cuda"
    [ -s "$T/cli.sae/sae_weights.safetensors" ] || fail "saeflow train --backend cuda wrote no SAE"
    echo "cuda: trained on the GPU"
else
    "$BIN/saeflow-train" --backend cuda --bind "ipc://$T/nocuda.sock" --ckpt_dir "$T/nocuda.ckpt" \
        >"$T/nocuda-train.out" 2>&1 &
    p=$!
    PIDS+=($p)
    wait_pid $p 20
    rc=$?
    [ $rc = 1 ] || { cat "$T/nocuda-train.out"; fail "saeflow-train --backend cuda without a device exited $rc, want 1"; }
    grep -qi "cuda" "$T/nocuda-train.out" || fail "saeflow-train --backend cuda: message does not mention cuda"
    [ ! -d "$T/nocuda.ckpt" ] || fail "saeflow-train --backend cuda did work before failing"
    "$BIN/saeflow-capture" --backend cuda --model "$MODEL" --input "$CORPUS" \
        --shard_dir "$T/nocuda.shards" >"$T/nocuda-capture.out" 2>&1 &
    p=$!
    PIDS+=($p)
    wait_pid $p 20
    rc=$?
    [ $rc = 1 ] || { cat "$T/nocuda-capture.out"; fail "saeflow-capture --backend cuda without a device exited $rc, want 1"; }
    grep -qi "cuda" "$T/nocuda-capture.out" || fail "saeflow-capture --backend cuda: message does not mention cuda"
    [ ! -d "$T/nocuda.shards" ] || fail "saeflow-capture --backend cuda did work before failing"
    echo "RESULT backend cuda without a device: train and capture exit 1 at startup"
    grep -h '^saeflow-' "$T/nocuda-train.out" "$T/nocuda-capture.out" | sed 's/^/    /'
    # saeflow up passes train.backend / capture.backend through, and stops with them
    if [ -x "$BIN/saeflow" ]; then
        printf 'run_dir = %s\nstop_s = 5\ncapture.model = %s\ncapture.input = %s\ncapture.hook = %s\ncapture.max_tokens = 2000\ncapture.backend = cuda\ntrain.hook = %s\ntrain.backend = cuda\n' \
            "$T/up" "$MODEL" "$CORPUS" $HOOK $HOOK >"$T/up.conf"
        "$BIN/saeflow" up "$T/up.conf" >"$T/up.out" 2>&1 &
        p=$!
        PIDS+=($p)
        wait_pid $p 30
        rc=$?
        [ $rc = 1 ] || { cat "$T/up.out"; fail "saeflow up with backend = cuda exited $rc, want 1"; }
        grep -q "backend=cuda" "$T/up/train.log" || fail "saeflow up did not pass train.backend"
        grep -q "backend=cuda" "$T/up/capture.log" || fail "saeflow up did not pass capture.backend"
        # saeflow train --activations: the same flags, the same exits
        "$BIN/saeflow-capture" --model "$MODEL" --input "$CORPUS" --hook $HOOK --max_tokens 4000 \
            --context 128 --batch_seqs 8 --shard_dir "$T/cli.shards" >/dev/null 2>&1 ||
            fail "capture to shards failed"
        shard=$(ls "$T"/cli.shards/$HOOK/*.safetensors | head -n 1)
        "$BIN/saeflow" train --activations "$shard" --n 64 --k 4 --batch 256 --backend cuda \
            >"$T/cli-cuda.out" 2>&1
        rc=$?
        [ $rc = 1 ] || { cat "$T/cli-cuda.out"; fail "saeflow train --backend cuda exited $rc, want 1"; }
        grep -qi "cuda" "$T/cli-cuda.out" || fail "saeflow train --backend cuda: no message"
        "$BIN/saeflow" train --activations "$shard" --n 64 --k 4 --batch 256 --backend bogus \
            >"$T/cli-bogus.out" 2>&1
        rc=$?
        [ $rc = 2 ] || { cat "$T/cli-bogus.out"; fail "saeflow train --backend bogus exited $rc, want 2"; }
        "$BIN/saeflow" train --activations "$shard" --n 64 --k 4 --batch 256 --backend auto \
            --out "$T/cli.sae" >"$T/cli-auto.out" 2>&1 || { cat "$T/cli-auto.out"; fail "saeflow train --backend auto failed"; }
        grep -q "event=sae_backend backend=cpu" "$T/cli-auto.out" || fail "saeflow train --backend auto did not say cpu"
        [ -s "$T/cli.sae/sae_weights.safetensors" ] || fail "saeflow train --backend auto wrote no SAE"
        echo "RESULT backend saeflow up and saeflow train: cuda exits 1, bogus 2, auto trains on cpu"
    fi
fi
echo "backend: ok"

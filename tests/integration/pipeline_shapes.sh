#!/usr/bin/env bash
# Both shapes of the pipeline with the real binaries:
#  fan-in:  two captures (distinct producer ids) feed one trainer;
#  fan-out: one capture with two hooks feeds two trainers, each its own hook and SAE.
# Every published batch must be committed exactly once where it was routed, and each
# trainer must train exactly the tokens meant for it.
cd "$(dirname "$0")/../.."
. tests/integration/pipeline_common.inc

TOK=${SHAPES_TOKENS:-60000}
H2=blocks.1.hook_resid_post
train() { # name endpoint hook
    "$BIN/saeflow-train" --bind "$2" --hook "$3" --n 256 --k 8 --trainer_id "$1" \
        --batch_tokens 2048 --buffer_tokens 16384 --ckpt_dir "$T/$1.ckpt" \
        --ledger "$T/$1.ledger" --exit_when_done true >"$T/$1.out" 2>"$T/$1.log" &
    LAST=$!
    PIDS+=($LAST)
}
capture() { # name hooks endpoints
    "$BIN/saeflow-capture" --model "$MODEL" --input "$CORPUS" --hook "$2" --producer_id "$1" \
        --max_tokens $TOK --context 128 --batch_seqs 8 --connect "$3" \
        --ledger "$T/$1.ledger" >"$T/$1.out" 2>"$T/$1.log" &
    LAST=$!
    PIDS+=($LAST)
}
check_done() { # pid name
    wait_pid "$1" 600
    local rc=$?
    [ $rc = 0 ] || { tail -n 20 "$T/$2.log"; fail "$2 exited with $rc"; }
}
tokens_of() { sed -n 's/^final .* tokens=\([0-9]*\) .*/\1/p' "$T/$1.out"; }
committed() { grep -c ' committed$' "$T/$1.ledger"; }

# ---- fan-in ----
train fanin-train "ipc://$T/fanin.sock" $HOOK; tA=$LAST
capture capture-0 $HOOK "ipc://$T/fanin.sock"; c0=$LAST
capture capture-1 $HOOK "ipc://$T/fanin.sock"; c1=$LAST
check_done $c0 capture-0
check_done $c1 capture-1
check_done $tA fanin-train
p=$(( $(wc -l <"$T/capture-0.ledger") + $(wc -l <"$T/capture-1.ledger") ))
c=$(( $(committed capture-0) + $(committed capture-1) ))
tl=$(wc -l <"$T/fanin-train.ledger")
tu=$(awk '{print $1, $2, $3}' "$T/fanin-train.ledger" | sort -u | wc -l)
producers=$(awk '{print $1}' "$T/fanin-train.ledger" | sort -u | wc -l)
echo "RESULT fan_in producers=$producers published=$p committed=$c trained=$tl unique=$tu tokens=$(tokens_of fanin-train) expected=$((2 * TOK))"
[ "$producers" = 2 ] && [ "$p" = "$c" ] && [ "$c" = "$tl" ] && [ "$tl" = "$tu" ] || fail "fan-in ledgers disagree"
[ "$(tokens_of fanin-train)" = $((2 * TOK)) ] || fail "fan-in trained the wrong number of tokens"

# ---- fan-out ----
train out-a "ipc://$T/outa.sock" $HOOK; tB=$LAST
train out-b "ipc://$T/outb.sock" $H2; tC=$LAST
capture capture-2 "$HOOK,$H2" "ipc://$T/outa.sock,ipc://$T/outb.sock"; c2=$LAST
check_done $c2 capture-2
check_done $tB out-a
check_done $tC out-b
p=$(wc -l <"$T/capture-2.ledger"); c=$(committed capture-2)
la=$(wc -l <"$T/out-a.ledger"); lb=$(wc -l <"$T/out-b.ledger")
echo "RESULT fan_out published=$p committed=$c trainer_a=$la trainer_b=$lb tokens_a=$(tokens_of out-a) tokens_b=$(tokens_of out-b)"
[ "$p" = "$c" ] && [ $((la + lb)) = "$p" ] || fail "fan-out ledgers disagree"
[ "$(tokens_of out-a)" = $TOK ] && [ "$(tokens_of out-b)" = $TOK ] || fail "fan-out tokens wrong"
echo "pipeline_shapes: ok"

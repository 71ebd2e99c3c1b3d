#!/usr/bin/env bash
# Chaos: the trainer is SIGKILLed several times mid-stream and restarted; it resumes
# from its latest checkpoint and the capture re-sends what was never committed. The
# capture's ledger (epoch seq fate) is compared with the trainer's (producer epoch seq
# ckpt, written at checkpoint commit): every published batch must be committed, none
# trained twice, and the tokens trained must equal the tokens published.
# Then the capture is the one SIGKILLed (twice) and restarted: it resumes from the
# source cursor the trainer committed, and the trainer ledger's source ranges prove every
# token of the plan trained exactly once (0 lost, 0 twice). Then the finished run is
# started again: the capture says it is finished and the trainer trains 0 more tokens.
# Negative control: a plain PUSH/PULL pair with the same kills loses batches silently.
cd "$(dirname "$0")/../.."
. tests/integration/pipeline_common.inc

TOOLS=$BUILD/tests/test_tools
[ -x "$TOOLS" ] || skip "test_tools not built ($TOOLS)"
TOKENS=${CHAOS_TOKENS:-400000}
KILLS=${CHAOS_KILLS:-3}
EP=ipc://$T/train.sock

start_train() {
    "$BIN/saeflow-train" --bind "$EP" --hook $HOOK --model_name stories260K --n 1024 --k 16 \
        --batch_tokens 4096 --buffer_tokens 32768 --ckpt_dir "$T/ckpt" \
        --ckpt_every_tokens 40000 --ckpt_every_s 1 --ledger "$T/train.ledger" \
        --exit_when_done true >>"$T/train.out" 2>>"$T/train.log" &
    TRAIN=$!
    PIDS+=($TRAIN)
}

start_train
"$BIN/saeflow-capture" --model "$MODEL" --input "$CORPUS" --hook $HOOK --epochs 10 \
    --max_tokens "$TOKENS" --context 128 --batch_seqs 16 --dtype bf16 --connect "$EP" \
    --ring 1024 --ledger "$T/capture.ledger" --drain_s 120 >"$T/capture.out" 2>"$T/capture.log" &
CAP=$!
PIDS+=($CAP)

killed=0
for k in $(seq 1 "$KILLS"); do
    sleep $((2 + RANDOM % 3))
    kill -0 $CAP 2>/dev/null || break
    killed=$((killed + 1))
    kill -9 $TRAIN
    wait $TRAIN 2>/dev/null
    echo "killed trainer ($k)"
    sleep 0.$((RANDOM % 9 + 1))
    start_train
done
wait_pid $CAP 1800; rc_cap=$?
wait_pid $TRAIN 300; rc_train=$?
[ $rc_cap = 0 ] || { tail -n 20 "$T/capture.log"; fail "capture exited with $rc_cap"; }
[ $rc_train = 0 ] || { tail -n 20 "$T/train.log"; fail "train exited with $rc_train"; }

resumes=$(grep -c "event=ckpt_resumed" "$T/train.log")
grep "event=capture_stream" "$T/capture.log" | sed 's/^/    /'
published=$(wc -l <"$T/capture.ledger")
committed=$(grep -c ' committed$' "$T/capture.ledger")
other=$((published - committed))
awk '{print $2, $3}' "$T/train.ledger" | sort >"$T/trained.keys"
sort -u "$T/trained.keys" >"$T/trained.uniq"
dups=$(( $(wc -l <"$T/trained.keys") - $(wc -l <"$T/trained.uniq") ))
awk '$3 == "committed" {print $1, $2}' "$T/capture.ledger" | sort >"$T/committed.keys"
lost=$(comm -23 "$T/committed.keys" "$T/trained.uniq" | wc -l)
phantom=$(comm -13 "$T/committed.keys" "$T/trained.uniq" | wc -l)
resent=$(grep -o 'resent=[0-9]*' "$T/capture.log" | tail -n 1 | cut -d= -f2)
final=$(grep '^final ' "$T/train.out" | tail -n 1)
tokens=$(echo "$final" | tr ' ' '\n' | sed -n 's/^tokens=//p')
echo "RESULT chaos kills=$killed resumes=$resumes published=$published committed=$committed other_fates=$other trained=$(wc -l <"$T/trained.uniq") lost=$lost duplicates=$dups phantom=$phantom resent=${resent:-0} tokens_trained=$tokens tokens_published=$TOKENS"
[ "$resumes" -ge 1 ] || fail "the trainer never resumed from a checkpoint"
[ "$lost" = 0 ] || fail "$lost committed batches missing from the trainer ledger"
[ "$dups" = 0 ] || fail "$dups batches trained twice"
[ "$phantom" = 0 ] || fail "$phantom trained batches the capture did not see committed"
[ "$other" = 0 ] || fail "$other batches ended uncommitted (see capture ledger)"
[ "$tokens" = "$TOKENS" ] || fail "tokens trained $tokens != published $TOKENS"

# ---- capture SIGKILL: resume from the committed source cursor ----
CTOK=${CHAOS_CAPTURE_TOKENS:-200000}
EP2=ipc://$T/train2.sock
start_train2() {
    "$BIN/saeflow-train" --bind "$EP2" --hook $HOOK --model_name stories260K --n 1024 --k 16 \
        --batch_tokens 4096 --buffer_tokens 32768 --ckpt_dir "$T/ckpt2" \
        --ckpt_every_tokens 40000 --ckpt_every_s 1 --ledger "$T/train2.ledger" \
        --exit_when_done true >>"$T/train2.out" 2>>"$T/train2.log" &
    TRAIN=$!
    PIDS+=($TRAIN)
}
start_cap2() {
    "$BIN/saeflow-capture" --model "$MODEL" --input "$CORPUS" --hook $HOOK --epochs 10 \
        --max_tokens "$CTOK" --context 128 --batch_seqs 16 --dtype bf16 --connect "$EP2" \
        --producer_id capture-k --ring 1024 --drain_s 120 --connect_timeout 120 \
        >>"$T/capture2.out" 2>>"$T/capture2.log" &
    CAP=$!
    PIDS+=($CAP)
}
start_train2
ckills=0
again_cap=1
for k in 1 2; do
    start_cap2
    sleep 1.$((RANDOM % 9 + 1))
    # the plan may be complete already (then the trainer leaves): nothing left to kill
    if ! kill -0 $CAP 2>/dev/null || ! kill -0 $TRAIN 2>/dev/null; then again_cap=0; break; fi
    kill -9 $CAP
    wait $CAP 2>/dev/null
    ckills=$((ckills + 1))
    echo "killed capture ($k)"
done
[ $again_cap = 1 ] && start_cap2
wait_pid $CAP 900; rc_cap=$?
wait_pid $TRAIN 300; rc_train=$?
[ $rc_cap = 0 ] || { tail -n 20 "$T/capture2.log"; fail "capture (after kills) exited with $rc_cap"; }
[ $rc_train = 0 ] || { tail -n 20 "$T/train2.log"; fail "train (capture kills) exited with $rc_train"; }
cresumes=$(grep -c "event=capture_resumed" "$T/capture2.log")
# ledger: producer epoch seq ckpt hook tokens from to; the source ranges of the trained
# batches, sorted, must tile [0, end) exactly: a gap is lost text, an overlap trained twice
awk '$1 == "capture-k" {print $7, $8, $6}' "$T/train2.ledger" | sort -n >"$T/ranges"
read -r clost cdup ctokens cend < <(awk 'BEGIN {pos = 0; lost = 0; dup = 0; tok = 0}
    { if ($1 > pos) lost += $1 - pos; if ($1 < pos) dup += pos - $1; pos = $2; tok += $3 }
    END {print lost, dup, tok, pos}' "$T/ranges")
ctrained=$(grep '^final ' "$T/train2.out" | tail -n 1 | tr ' ' '\n' | sed -n 's/^tokens=//p')
echo "RESULT chaos capture_kills=$ckills capture_resumes=$cresumes batches=$(wc -l <"$T/ranges") source_tokens_lost=$clost source_tokens_twice=$cdup tokens_in_ledger=$ctokens tokens_trained=$ctrained plan=$CTOK"
[ "$ckills" -ge 1 ] || fail "the capture finished before it could be killed"
[ "$cresumes" -ge 1 ] || fail "a restarted capture did not resume from the committed cursor"
[ "$clost" = 0 ] || fail "$clost source tokens never trained after capture kills"
[ "$cdup" = 0 ] || fail "$cdup source tokens trained twice after capture kills"
[ "$ctokens" = "$CTOK" ] || fail "the ledger holds $ctokens tokens, the plan is $CTOK"
[ "$ctrained" = "$CTOK" ] || fail "trained $ctrained tokens, the plan is $CTOK"

# ---- a finished run started again trains nothing ----
lines_before=$(wc -l <"$T/train2.ledger")
start_train2
start_cap2
wait_pid $CAP 120; rc_cap=$?
wait_pid $TRAIN 120; rc_train=$?
[ $rc_cap = 0 ] || { tail -n 20 "$T/capture2.log"; fail "rerun capture exited with $rc_cap"; }
[ $rc_train = 0 ] || { tail -n 20 "$T/train2.log"; fail "rerun train exited with $rc_train"; }
again=$(grep '^final ' "$T/train2.out" | tail -n 1 | tr ' ' '\n' | sed -n 's/^tokens=//p')
echo "RESULT chaos rerun_finished tokens_before=$ctrained tokens_after=$again new_ledger_lines=$(( $(wc -l <"$T/train2.ledger") - lines_before ))"
grep -q "already finished" "$T/capture2.out" || fail "the rerun capture did not say the run is finished"
[ "$again" = "$ctrained" ] || fail "rerunning a finished run trained $((again - ctrained)) more tokens"
[ "$(wc -l <"$T/train2.ledger")" = "$lines_before" ] || fail "the rerun committed new batches"

# ---- negative control: naive PUSH/PULL, no credit, no acks, no resend ----
NEP=ipc://$T/naive.sock
N=3000
"$TOOLS" naive-pull "$NEP" "$T/naive.ledger" 16 2>>"$T/naive.log" &
PULL=$!; PIDS+=($PULL)
"$TOOLS" naive-push "$NEP" $N 1000 >"$T/naive.out" 2>>"$T/naive.log" &
PUSH=$!; PIDS+=($PUSH)
for k in $(seq 1 "$KILLS"); do
    sleep 0.7
    kill -9 $PULL; wait $PULL 2>/dev/null
    "$TOOLS" naive-pull "$NEP" "$T/naive.ledger" 16 2>>"$T/naive.log" &
    PULL=$!; PIDS+=($PULL)
done
wait_pid $PUSH 120
wait_pid $PULL 60
nsent=$(sed -n 's/^sent //p' "$T/naive.out")
ntrained=$(awk '{print $3}' "$T/naive.ledger" | sort -u | wc -l)
echo "RESULT naive_control kills=$KILLS sent=$nsent trained=$ntrained lost_uncounted=$((nsent - ntrained))"
[ $((nsent - ntrained)) -gt 0 ] || echo "note: the naive control lost nothing this time"
echo "chaos: ok"

#!/usr/bin/env bash
# SAE quality benchmark: held-out FVU (median and spread over seeds), CE loss recovered,
# dead and dense fractions and training tokens/s of `saeflow train` with its default
# flags, at fixed token budgets, on real activations:
#   stories260K  blocks.2.hook_resid_post  (n, k) = (1024, 16), (4096, 32)
#   stories260K  blocks.4.hook_resid_post  (1024, 16)
#   stories15M   blocks.3.hook_resid_post  (4096, 32), (16384, 32)
# Training text: the TinyStories sample's lines 1-2316 (repeated as needed); held-out:
# lines 2317+, 65536 tokens (FVU, dead, dense on captured activations; CE loss recovered
# by `saeflow eval` on the same lines). The peer figures (sparsify's defaults on the same
# stories260K activations, 2M tokens) are printed beside ours. Not run by `make test`
# or `make bench` (minutes to hours on a CPU).
#
#   tests/bench/quality/quality.sh [--tokens T] [--seeds S] [--models stories260K,stories15M]
#                                  [--only SUBSTRING] [--work DIR] [-- extra train flags]
#
# Environment: SAEFLOW_BIN (build/bin), SAEFLOW_MODELS, SAEFLOW_CORPUS, THREADS,
# EVAL_TOKENS (CE loss recovered on this many held-out tokens, default 65536: four
# forward passes each, minutes for stories15M on a small CPU).
set -u
cd "$(dirname "$0")/../../.."
BIN=${SAEFLOW_BIN:-$PWD/build/bin}
MODELS=${SAEFLOW_MODELS:-$PWD/../shared/models}
CORPUS=${SAEFLOW_CORPUS:-$PWD/../shared/corpus}/tinystories-sample.jsonl
TOKENS=2000000
SEEDS=3
WANT=stories260K,stories15M
ONLY=
WORK=
EXTRA=()
while [ $# -gt 0 ]; do
    case $1 in
    --tokens) TOKENS=$2; shift 2 ;;
    --seeds) SEEDS=$2; shift 2 ;;
    --models) WANT=$2; shift 2 ;;
    --only) ONLY=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "quality.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -x "$BIN/saeflow" ] && [ -x "$BIN/saeflow-capture" ] || { echo "quality.sh: build first (make)" >&2; exit 2; }
[ -f "$CORPUS" ] || { echo "quality.sh: corpus $CORPUS missing" >&2; exit 2; }
if [ -z "$WORK" ]; then WORK=$(mktemp -d /tmp/saeflow-quality.XXXXXX); fi
mkdir -p "$WORK"
THREADS=${THREADS:-0}
head -n 2316 "$CORPUS" >"$WORK/train.jsonl"
tail -n +2317 "$CORPUS" >"$WORK/heldout.jsonl"

# capture MODEL_NAME MODEL_FILE TOKENIZER HOOKS: activation shards, once per work dir
capture() {
    local name=$1 model=$2 tok=$3 hooks=$4
    if [ ! -f "$WORK/$name.train.done" ]; then
        echo "capturing $name train ($TOKENS tokens) ..." >&2
        "$BIN/saeflow-capture" --model "$model" --tokenizer "$tok" --input "$WORK/train.jsonl" \
            --hook "$hooks" --epochs 1000 --max_tokens "$TOKENS" --context 128 --batch_seqs 32 \
            --dtype f32 --shard_dir "$WORK/$name.train" --shard_tokens 1048576 \
            >"$WORK/$name.capture.log" 2>&1 || { tail "$WORK/$name.capture.log" >&2; exit 1; }
        touch "$WORK/$name.train.done"
    fi
    if [ ! -f "$WORK/$name.held.done" ]; then
        "$BIN/saeflow-capture" --model "$model" --tokenizer "$tok" --input "$WORK/heldout.jsonl" \
            --hook "$hooks" --max_tokens 65536 --context 128 --batch_seqs 32 --dtype f32 \
            --shard_dir "$WORK/$name.held" >>"$WORK/$name.capture.log" 2>&1 ||
            { tail "$WORK/$name.capture.log" >&2; exit 1; }
        touch "$WORK/$name.held.done"
    fi
}

ROWS=$WORK/rows.txt
: >"$ROWS"
# one NAME MODEL_FILE HOOK N K: every seed, one row each
one() {
    local name=$1 model=$2 hook=$3 n=$4 k=$5
    case "$name $hook $n $k" in *"$ONLY"*) ;; *) return ;; esac
    for seed in $(seq 1 "$SEEDS"); do
        local out=$WORK/sae.$name.$hook.$n.$k.$seed
        local t0 t1 line json
        t0=$(date +%s.%N)
        line=$("$BIN/saeflow" train --activations "$WORK/$name.train/$hook"/*.safetensors \
            --heldout "$WORK/$name.held/$hook"/*.safetensors --n "$n" --k "$k" --seed "$seed" \
            --tokens "$TOKENS" --threads "$THREADS" --out "$out" "${EXTRA[@]}" \
            2>"$out.train.log") || { tail -n 3 "$out.train.log" >&2; continue; }
        t1=$(date +%s.%N)
        json=$("$BIN/saeflow" eval --sae "$out" --model "$model" --data "$CORPUS" \
            --first-line 2317 --tokens "${EVAL_TOKENS:-65536}" 2>"$out.eval.log" | grep '^{')
        echo "$name $hook $n $k $seed $TOKENS $t0 $t1 $line $json" >>"$ROWS"
        echo "  $name $hook n=$n k=$k seed=$seed: $line" >&2
    done
}

IFS=, read -ra want <<<"$WANT"
for m in "${want[@]}"; do
    case $m in
    stories260K)
        M=$MODELS/stories260K/stories260K.bin
        [ -f "$M" ] || { echo "skip: $M missing" >&2; continue; }
        capture stories260K "$M" "$MODELS/stories260K/tok512.bin" \
            blocks.2.hook_resid_post,blocks.4.hook_resid_post
        one stories260K "$M" blocks.2.hook_resid_post 1024 16
        one stories260K "$M" blocks.2.hook_resid_post 4096 32
        one stories260K "$M" blocks.4.hook_resid_post 1024 16
        ;;
    stories15M)
        M=$MODELS/stories15M/stories15M.bin
        [ -f "$M" ] || { echo "skip: $M missing" >&2; continue; }
        capture stories15M "$M" "$MODELS/stories15M/tokenizer.bin" blocks.3.hook_resid_post
        one stories15M "$M" blocks.3.hook_resid_post 4096 32
        one stories15M "$M" blocks.3.hook_resid_post 16384 32
        ;;
    *) echo "quality.sh: unknown model $m" >&2 ;;
    esac
done

python3 - "$ROWS" <<'PY'
import json, re, statistics, sys
peer = {("stories260K", "blocks.2.hook_resid_post", 1024, 16): "0.054 / 3%",
        ("stories260K", "blocks.2.hook_resid_post", 4096, 32): "0.023 / 17%",
        ("stories260K", "blocks.4.hook_resid_post", 1024, 16): "0.107"}
groups = {}
for line in open(sys.argv[1]):
    f = line.split()
    if len(f) < 9: continue
    key = (f[0], f[1], int(f[2]), int(f[3]))
    kv = dict(re.findall(r"(\w+)=([-\d.eE+naif]+)", line.split("{")[0]))
    js = json.loads(line[line.index("{"):]) if "{" in line else {}
    secs = float(f[7]) - float(f[6])
    g = groups.setdefault(key, [])
    g.append(dict(fvu=float(kv["fvu"]), dead=float(kv["dead_frac"]), dense=float(kv["dense_frac"]),
                  lr=float(kv["lr"]), ce=js.get("loss_recovered_zero"), tps=int(f[5]) / secs,
                  tokens=int(f[5])))
def med(v): return statistics.median(v) if v else float("nan")
print(f"{'model':12} {'hook':26} {'n':>6} {'k':>3} {'tokens':>8} {'seeds':>5} {'lr':>8} "
      f"{'FVU med':>8} {'[min, max]':>17} {'dead':>6} {'dense':>6} {'CE rec':>7} {'tok/s':>7}  peer FVU/dead")
for key, g in groups.items():
    fv = [r["fvu"] for r in g]
    ce = [r["ce"] for r in g if r["ce"] is not None]
    print(f"{key[0]:12} {key[1]:26} {key[2]:6d} {key[3]:3d} {g[0]['tokens']:8d} {len(g):5d} "
          f"{g[0]['lr']:8.3g} {med(fv):8.4f} [{min(fv):.4f}, {max(fv):.4f}] "
          f"{med([r['dead'] for r in g]):6.3f} {med([r['dense'] for r in g]):6.3f} "
          f"{med(ce):7.4f} {med([r['tps'] for r in g]):7.0f}  {peer.get(key, '')}")
PY
echo "work dir: $WORK (shards and SAEs; delete when done)" >&2

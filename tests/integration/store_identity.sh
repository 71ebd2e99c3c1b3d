#!/usr/bin/env bash
# Stores and SAE identities on stories260K, with two small SAEs trained here by
# `saeflow train --activations` on shards written by saeflow-capture:
#   - the trained SAE's cfg.json carries the shards' metadata (prepend_bos,
#     exclude_special_tokens, dataset_path, context_size), not defaults;
#   - a second `saeflow eval --store` of a DIFFERENT SAE under the same id is refused
#     (exit 2, the first SAE's features kept), allowed with --replace; re-evaluating
#     the same SAE under its id is allowed;
#   - `generate --steer F=2x --store S --sae-id ID` refuses when ID holds another SAE;
#   - a second `saeflow eval` on a store another one holds fails at once (before any
#     evaluation), naming the lock;
#   - `saeflow eval --store` on a store whose MANIFEST lost its tail exits 1 saying the
#     store is damaged, and every file of the store is left as it was.
cd "$(dirname "$0")/../.."
. tests/integration/pipeline_common.inc
[ -x "$BIN/saeflow" ] || skip "saeflow not built in $BIN"

"$BIN/saeflow-capture" --model "$MODEL" --input "$CORPUS" --hook $HOOK --max_tokens 24000 \
    --context 128 --batch_seqs 16 --shard_dir "$T/shards" --shard_tokens 12000 \
    >"$T/capture.out" 2>"$T/capture.log" || { tail -n 5 "$T/capture.log"; fail "capture failed"; }
shards=("$T/shards/$HOOK"/shard-*.safetensors)
[ -f "${shards[0]}" ] || fail "no shards written"
for s in 1 2; do
    "$BIN/saeflow" train --activations "${shards[@]}" --n 128 --k 8 --batch 256 --tokens 24000 \
        --seed $s --threads 1 --out "$T/sae$s" 2>"$T/train$s.log" ||
        { tail -n 5 "$T/train$s.log"; fail "train $s failed"; }
done

# ---- metadata carried from the shards
python3 - "$T/sae1/cfg.json" "$CORPUS" <<'PY' || fail "cfg.json does not carry the shards' metadata"
import json, sys
c = json.load(open(sys.argv[1]))
m = c.get("metadata", c)
def get(k):
    return m.get(k, c.get(k))
print("cfg.json:", {k: get(k) for k in ("prepend_bos", "exclude_special_tokens", "dataset_path", "context_size", "hook_name")})
assert get("prepend_bos") is True, get("prepend_bos")
assert get("exclude_special_tokens") is True, get("exclude_special_tokens")
assert get("dataset_path") == sys.argv[2], get("dataset_path")
assert get("context_size") == 128, get("context_size")
PY

ev() { # ev <sae dir> <extra args...>: eval into $T/store under id "shared"
    local sae=$1
    shift
    "$BIN/saeflow" eval --sae "$sae" --model "$MODEL" --data "$CORPUS" --first-line 3000 \
        --tokens 3000 --store "$T/store" --sae-id shared "$@"
}

# ---- one id, two SAEs
ev "$T/sae1" >"$T/e1.txt" 2>"$T/e1.log" || { tail -n 5 "$T/e1.log"; fail "first eval failed"; }
ev "$T/sae1" >"$T/e1b.txt" 2>"$T/e1b.log" || { tail -n 5 "$T/e1b.log"; fail "re-evaluating the same SAE refused"; }
"$BIN/saeflow" feature show --store "$T/store" shared 0 >"$T/show1.txt" 2>/dev/null || fail "feature show after eval 1"
ev "$T/sae2" >"$T/e2.txt" 2>"$T/e2.log"
rc=$?
cat "$T/e2.log" | grep -v '^ts=' | head -n 3
[ $rc = 2 ] || fail "a different SAE under the same id: want exit 2, got $rc"
grep -q 'different SAE' "$T/e2.log" || fail "no 'different SAE' message"
grep -q -- '--replace' "$T/e2.log" || fail "the refusal does not mention --replace"
"$BIN/saeflow" feature show --store "$T/store" shared 0 >"$T/show1b.txt" 2>/dev/null || fail "feature show after the refusal"
cmp -s "$T/show1.txt" "$T/show1b.txt" || fail "the refused eval changed the stored features"

# ---- steering maxima only from the SAE's own id
"$BIN/saeflow" generate --model "$MODEL" --sae "$T/sae1" --steer "3=2x" --store "$T/store" \
    --sae-id shared -n 4 --seed 1 >/dev/null 2>"$T/g1.log" || { tail -n 3 "$T/g1.log"; fail "steer with the stored SAE"; }
"$BIN/saeflow" generate --model "$MODEL" --sae "$T/sae2" --steer "3=2x" --store "$T/store" \
    --sae-id shared -n 4 --seed 1 >/dev/null 2>"$T/g2.log"
rc=$?
grep -v '^ts=' "$T/g2.log" | head -n 2
[ $rc = 1 ] || fail "steering SAE 2 with SAE 1's maxima: want exit 1, got $rc"
grep -q 'different SAE' "$T/g2.log" || fail "no 'different SAE' message from generate"

ev "$T/sae2" --replace >"$T/e3.txt" 2>"$T/e3.log" || { tail -n 5 "$T/e3.log"; fail "--replace refused"; }
"$BIN/saeflow" generate --model "$MODEL" --sae "$T/sae2" --steer "3=2x" --store "$T/store" \
    --sae-id shared -n 4 --seed 1 >/dev/null 2>"$T/g3.log" || { tail -n 3 "$T/g3.log"; fail "steer after --replace"; }

# ---- the lock first: a second writer fails at once
ev "$T/sae1" --sae-id other --tokens 0 >"$T/long.txt" 2>"$T/long.log" &
LONG=$!
PIDS+=($LONG)
for i in $(seq 1 100); do grep -q 'store_opened' "$T/long.log" 2>/dev/null && break; sleep 0.1; done
grep -q 'store_opened' "$T/long.log" || fail "the first eval never opened the store"
start=$(date +%s.%N)
ev "$T/sae1" --sae-id other2 >"$T/second.txt" 2>"$T/second.log"
rc=$?
took=$(echo "$(date +%s.%N) - $start" | bc)
grep -v '^ts=' "$T/second.log" | head -n 2
[ $rc = 1 ] || fail "second writer: want exit 1, got $rc"
grep -q 'store_locked' "$T/second.log" || fail "no lock message"
grep -q 'event=eval_done\|event=sae_imported' "$T/second.log" && fail "the second writer loaded the SAE and evaluated before failing"
[ -s "$T/second.txt" ] && fail "the second writer printed a report"
kill "$LONG" 2>/dev/null
wait "$LONG" 2>/dev/null

# ---- a damaged store is refused for writing and left as it was
cp -r "$T/store" "$T/damaged"
m=$(ls "$T/damaged"/MANIFEST-* | head -n 1)
truncate -s -20 "$m"
snap() { (cd "$T/damaged" && for f in $(ls | grep -v '^LOG'); do echo "$f $(md5sum <"$f")"; done); }
snap >"$T/before.txt"
"$BIN/saeflow" eval --sae "$T/sae2" --model "$MODEL" --data "$CORPUS" --first-line 3000 \
    --tokens 3000 --store "$T/damaged" --sae-id fresh >"$T/d.txt" 2>"$T/d.log"
rc=$?
grep -v '^ts=' "$T/d.log" | head -n 2
[ $rc = 1 ] || fail "eval into a store with a truncated MANIFEST: want exit 1, got $rc"
grep -q 'event=store_damaged.*MANIFEST' "$T/d.log" || fail "no store_damaged line naming the MANIFEST"
grep -q 'damaged' "$T/d.log" || fail "no 'damaged' message"
snap >"$T/after.txt"
cmp -s "$T/before.txt" "$T/after.txt" || { diff "$T/before.txt" "$T/after.txt"; fail "the refused open changed the store's files"; }
echo "RESULT identity checks pass; a second writer failed after ${took}s"
exit 0

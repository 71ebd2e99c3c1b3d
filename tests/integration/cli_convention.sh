#!/usr/bin/env bash
# One command-line convention, and failures that say so, end to end:
#  - saeflow / saeflow help / saeflow feature list the commands (exit 2 / 0 / 2),
#    saeflow --version;
#  - every flag takes '-' and '_' alike (eval --first_line, services --first-line),
#    BOOL flags bare or with a true/false word, help in one spelling, env names without
#    spaces (SAEFLOW_FEATURE_SEARCH_TOP);
#  - JSON logs carry fields as members; non-TTY progress prints each line once;
#  - store list (text and --json), --json from sae info / feature show / feature search /
#    feature contrast, all parsed by python3's json;
#  - warnings: generation cut at the model's context, search texts cut at --context,
#    saeflow train ending with FVU > 1.
cd "$(dirname "$0")/../.."
. tests/integration/pipeline_common.inc
[ -x "$BIN/saeflow" ] || skip "saeflow not built in $BIN"
command -v python3 >/dev/null || skip "python3 not found"
SF=$BIN/saeflow
jsonok() { python3 -c 'import json,sys; [json.loads(l) for l in sys.stdin if l.strip()]' ||
    fail "$1: not JSON"; }

# ---- command listing, version
"$SF" >"$T/none.out" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "feature search" "$T/none.out" || { cat "$T/none.out"; fail "saeflow alone: rc $rc or no list"; }
"$SF" help >"$T/help.out" 2>&1 || fail "saeflow help exit $?"
grep -q "store list" "$T/help.out" || fail "saeflow help does not list store list"
"$SF" feature >"$T/feat.out" 2>&1; rc=$?
[ $rc = 2 ] && grep -q "feature contrast" "$T/feat.out" && grep -q "subcommand is missing" "$T/feat.out" ||
    { cat "$T/feat.out"; fail "saeflow feature: rc $rc or no subcommand list"; }
"$SF" feature nope >/dev/null 2>&1; [ $? = 2 ] || fail "unknown subcommand not 2"
"$SF" --version | grep -qE '^saeflow [0-9]' || fail "saeflow --version"
echo "ok listing and version"

# ---- both spellings, bools, env names, help
"$SF" eval --first_line 3 --sae-id x 2>"$T/e.err"; rc=$?
[ $rc = 2 ] && grep -q "are required" "$T/e.err" || { cat "$T/e.err"; fail "eval --first_line not accepted"; }
"$BIN/saeflow-eval" --first-line 7 --chunk-features 16 --print-config >"$T/pc" || fail "saeflow-eval --first-line"
grep -q "^first_line = 7" "$T/pc" && grep -q "^chunk_features = 16" "$T/pc" || fail "dash spellings not applied"
"$BIN/saeflow-train" --auxk false --print_config >"$T/pc" || fail "--auxk false refused"
grep -q "^auxk = false" "$T/pc" || fail "--auxk false not applied"
"$BIN/saeflow-train" --auxk=false --auxk --print-config | grep -q "^auxk = true" || fail "bare --auxk"
SAEFLOW_FEATURE_SEARCH_TOP=7 "$SF" feature search --print-config | grep -q "^top = 7" ||
    fail "SAEFLOW_FEATURE_SEARCH_TOP not read"
"$SF" feature search --help >"$T/h" || fail "feature search --help"
grep -q -- "--no-bos\[=BOOL\]" "$T/h" && grep -q -- "--max-texts INT" "$T/h" && ! grep -q "BOOL  " "$T/h" ||
    { cat "$T/h"; fail "help shows bools or names inconsistently"; }
"$BIN/saeflow-capture" --help | grep -q -- "--shard-dir STR" || fail "services' help not in dash form"
"$SF" train --activations x --k-anneal_tokens 5 --cuda_math fp32 --help >/dev/null || fail "train spellings"
echo "ok spellings, bools, env, help"

# ---- JSON logs: fields are members
"$BIN/saeflow-capture" --log-format json --model "$T/missing.bin" --input "$CORPUS" \
    --connect "ipc://$T/x.sock" >/dev/null 2>"$T/j.log"
jsonok "capture json log" <"$T/j.log"
python3 - "$T/j.log" <<'PY' || fail "JSON log fields not members"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
bad = [r for r in rows if r.get("event") == "model_open_failed"]
assert bad and bad[0].get("path", "").endswith("missing.bin") and "msg" not in bad[0], rows
cfg = [r for r in rows if r.get("event") == "config"]
assert cfg and cfg[0]["context"] == 256 and cfg[0]["exclude_special"] is True, cfg
PY
echo "ok JSON logs"

# ---- an SAE and a store, small
"$BIN/saeflow-capture" --model "$MODEL" --input "$CORPUS" --hook $HOOK --max_tokens 16384 \
    --context 64 --shard_dir "$T/acts" --shard_tokens 16384 >"$T/cap.out" 2>"$T/cap.log" ||
    { tail "$T/cap.log"; fail "capture to shards"; }
"$SF" train --activations "$T"/acts/$HOOK/*.safetensors --n 128 --k 8 --batch 512 \
    --tokens 16384 --out "$T/sae" 2>"$T/train.log" || { tail "$T/train.log"; fail "saeflow train"; }
# non-TTY progress: no carriage returns, no line twice
grep -q $'\r' "$T/train.log" && fail "train progress wrote carriage returns to a file"
[ -z "$(grep '^\[' "$T/train.log" | sort | uniq -d)" ] || fail "a progress line printed twice"
grep -q "worse than predicting their mean" "$T/train.log" && fail "FVU warning on a good SAE"
"$SF" eval --sae "$T/sae" --model "$MODEL" --data "$CORPUS" --first_line 100 --tokens 4096 \
    --context 64 --store "$T/fs" --sae-id toy >"$T/eval.out" 2>"$T/eval.err" ||
    { cat "$T/eval.err"; fail "saeflow eval --store"; }
grep -q "saeflow eval: eval 2/2 (metrics)" "$T/eval.err" || { cat "$T/eval.err"; fail "no eval progress"; }
grep -q "saeflow eval: harvest 2/2" "$T/eval.err" || fail "no harvest progress"
grep -q "saeflow eval: stored" "$T/eval.err" || fail "no store progress"
[ -z "$(grep '^saeflow eval:' "$T/eval.err" | sort | uniq -d)" ] || fail "an eval progress line printed twice"
echo "ok eval/harvest progress"

# ---- store list
"$SF" store list --store "$T/fs" >"$T/sl" || fail "store list"
grep -q "^toy " "$T/sl" && grep -q "run 1 " "$T/sl" || { cat "$T/sl"; fail "store list content"; }
"$SF" store list --store "$T/fs" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
s = d["saes"][0]
assert s["sae_id"] == "toy" and s["d_sae"] == 128 and s["runs"][0]["run"] == 1, d' ||
    fail "store list --json"
"$SF" store list --store "$T/nostore" 2>/dev/null; [ $? = 1 ] || fail "store list on no store not 1"
"$SF" store list 2>/dev/null; [ $? = 2 ] || fail "store list without a store not 2"
echo "ok store list"

# ---- --json
"$SF" sae info --json "$T/sae" | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["d_sae"] == 128 and d["k"] == 8 and d["hook"] == "blocks.2.hook_resid_post", d' ||
    fail "sae info --json"
"$SF" feature show --store "$T/fs" --json toy 3 | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["feature"] == 3 and d["d_sae"] == 128 and "histogram" in d and "promotes" in d, d' ||
    fail "feature show --json"
"$SF" feature search --model "$MODEL" --sae "$T/sae" --text "Tim had a dog." --json |
    python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["tokens"][0]["special"] and len(d["tokens"]) >= 5 and d["by_max"], d' ||
    fail "feature search --text --json"
"$SF" feature search --model "$MODEL" --sae "$T/sae" --input "$CORPUS" --word " dog" \
    --max-texts 200 --json --top 3 | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["occurrences"] > 0 and len(d["features"]) <= 3, d' || fail "feature search --word --json"
head -n 40 "$CORPUS" | python3 -c 'import json,sys; [print(json.loads(l)["text"].split(".")[0]) for l in sys.stdin]' >"$T/pos.txt"
head -n 80 "$CORPUS" | tail -n 40 | python3 -c 'import json,sys; [print(json.loads(l)["text"].split(".")[0]) for l in sys.stdin]' >"$T/neg.txt"
"$SF" feature contrast --model "$MODEL" --sae "$T/sae" --pos "$T/pos.txt" --neg "$T/neg.txt" \
    --min-fires 0 --json --top 4 | python3 -c '
import json, sys
d = json.load(sys.stdin)
assert d["n_pos"] == 40 and len(d["features"]) == 4 and 0 <= d["features"][0]["auroc"] <= 1, d' ||
    fail "feature contrast --json"
echo "ok --json outputs"

# ---- context warnings
"$SF" generate --model "$MODEL" --prompt "Once" -n 5000 --temperature 0 >/dev/null 2>"$T/g.err" ||
    fail "generate"
grep -q "warning: the model's context is 512 tokens" "$T/g.err" || { cat "$T/g.err"; fail "no context warning on generate"; }
"$SF" feature search --model "$MODEL" --sae "$T/sae" --context 8 \
    --text "Once upon a time there was a little girl named Lily who liked to play." \
    >/dev/null 2>"$T/s.err" || fail "search --context 8"
grep -q "warning: 1 of 1 texts are longer than the context of 8 tokens" "$T/s.err" ||
    { cat "$T/s.err"; fail "no truncation warning on search"; }
"$SF" feature search --model "$MODEL" --sae "$T/sae" --context 4096 --text "Tim." \
    >/dev/null 2>"$T/s2.err" || fail "search --context 4096"
grep -q "beyond the model's context of 512" "$T/s2.err" || fail "no warning for --context past the model's"
echo "ok context warnings"

# ---- saeflow train ending worse than the mean
python3 - "$T/noise.safetensors" <<'PY' || fail "writing the noise shard"
import array, json, random, struct, sys
random.seed(0)
N, D = 2000, 16
out = array.array('f', [random.gauss(0, 1) for _ in range(N * D)]).tobytes()
hdr = {"__metadata__": {"hook_name": "blocks.0.hook_resid_post"},
       "activations": {"dtype": "F32", "shape": [N, D], "data_offsets": [0, len(out)]}}
h = json.dumps(hdr).encode(); h += b' ' * ((8 - len(h) % 8) % 8)
open(sys.argv[1], 'wb').write(struct.pack('<Q', len(h)) + h + out)
PY
"$SF" train --activations "$T/noise.safetensors" --n 16 --k 1 --batch 64 --tokens 2000 \
    --lr 0.5 --threads 1 2>"$T/fvu.err" || fail "noise training"
grep -q "final FVU .* > 1: this SAE reconstructs the activations worse than predicting their mean" \
    "$T/fvu.err" || { tail -3 "$T/fvu.err"; fail "no FVU > 1 warning"; }
echo "RESULT cli convention: listing, spellings, bools, env names, JSON logs and outputs, store list, progress once per line, context and FVU warnings"
exit 0

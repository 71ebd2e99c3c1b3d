#!/usr/bin/env bash
# The feature commands end to end on stories260K with a small pipeline-trained SAE:
#   feature search --text   a row per token (BOS marked special), summary tables, colour
#                           only when asked (stdout is not a TTY here)
#   feature contrast        WinoBias sentences with a female vs a male pronoun: the top
#                           feature separates them (|AUROC - 0.5| >= 0.1) and is shown
#                           with top tokens, logit effects and examples; the printed
#                           AUROC / SMD match an all-pairs Python computation on the
#                           per-text values (--dump); pro- vs
#                           anti-stereotyped sentences run too (scores reported)
#   feature show            dashboard from a feature store harvested by `saeflow eval
#                           --store` (stats, histogram, logits, examples; colour on/off)
#   generate --steer F=Nx   strengths in units of the feature's max activation from the
#                           store
# and their usage / runtime errors (exit 2 / 1, never a crash).
cd "$(dirname "$0")/../.."
. tests/integration/pipeline_common.inc
[ -x "$BIN/saeflow" ] || skip "saeflow not built in $BIN"
WINO=$CORPUS_DIR/winobias/data
[ -f "$WINO/pro_stereotyped_type1.txt.dev" ] || skip "WinoBias not found in $WINO"

TOKENS=${FEATURE_CLI_TOKENS:-150000}
EP=ipc://$T/train.sock
"$BIN/saeflow-train" --bind "$EP" --hook $HOOK --model_name stories260K --n 512 --k 16 \
    --batch_tokens 4096 --buffer_tokens 32768 --lr 0.004 --dead_tokens 500000 \
    --total_tokens "$TOKENS" --ckpt_dir "$T/ckpt" --ckpt_every_tokens 100000000 \
    --export_dir "$T/sae" --exit_when_done true >"$T/train.out" 2>"$T/train.log" &
TRAIN=$!
PIDS+=($TRAIN)
"$BIN/saeflow-capture" --model "$MODEL" --input "$CORPUS" --hook $HOOK --epochs 10 \
    --max_tokens "$TOKENS" --context 128 --batch_seqs 32 --dtype bf16 --connect "$EP" \
    >"$T/capture.out" 2>"$T/capture.log" &
CAP=$!
PIDS+=($CAP)
wait_pid $CAP 900; rc_cap=$?
wait_pid $TRAIN 300; rc_train=$?
[ $rc_cap = 0 ] && [ $rc_train = 0 ] || { tail -n 20 "$T/train.log"; fail "training failed"; }
SAE=$T/sae/$HOOK
[ -f "$SAE/cfg.json" ] || fail "no SAE exported"
ESC=$(printf '\033')

# ---- search --text
"$BIN/saeflow" feature search --model "$MODEL" --sae "$SAE" --text "Lily saw a big dog in the park." \
    --top 3 >"$T/s.txt" 2>"$T/s.log" || { cat "$T/s.log"; fail "search --text"; }
head -n 14 "$T/s.txt"
grep -q 'special token' "$T/s.txt" || fail "BOS row not marked"
ntok=$(grep -cE '^ +[0-9]+ +"' "$T/s.txt")
[ "$ntok" -ge 8 ] || fail "expected a row per token, got $ntok"
grep -q '^features by max activation' "$T/s.txt" || fail "no max summary"
grep -q '^features by total activation' "$T/s.txt" || fail "no total summary"
grep -q "$ESC" "$T/s.txt" && fail "colour written to a non-TTY"
"$BIN/saeflow" feature search --model "$MODEL" --sae "$SAE" --text "Lily saw a big dog." \
    --color always >"$T/sc.txt" 2>"$T/sc.log" || { cat "$T/sc.log"; fail "search --color always"; }
grep -q "$ESC\[38;5;16;48;5;" "$T/sc.txt" || { cat -v "$T/sc.txt"; fail "--color always wrote no colour"; }

# ---- contrast: female vs male pronoun sentences (WinoBias type 1 dev + test)
cat "$WINO"/*_stereotyped_type1.txt.* | grep -E '\[(she|her|She|Her)\]' >"$T/female.txt"
cat "$WINO"/*_stereotyped_type1.txt.* | grep -E '\[(he|him|his|He|His|Him)\]' >"$T/male.txt"
"$BIN/saeflow" feature contrast --model "$MODEL" --sae "$SAE" --pos "$T/female.txt" \
    --neg "$T/male.txt" --format winobias --top 5 --examples 2 --dump "$T/c.tsv" \
    >"$T/c.txt" 2>"$T/c.log" || { cat "$T/c.log"; fail "contrast failed"; }
cat "$T/c.txt"
# the printed AUROC and SMD against a direct computation (all pairs) from the dump
python3 - "$T/c.tsv" "$T/c.txt" <<'PY' || fail "contrast scores disagree with the reference"
import math, sys
vals = {}
for line in open(sys.argv[1]).read().splitlines()[1:]:
    f, s, v = line.split("\t")
    vals.setdefault(int(f), {"pos": [], "neg": []})[s].append(float(v))
rows = [l.split() for l in open(sys.argv[2])]
rows = [r for r in rows if len(r) >= 9 and r[0].isdigit()]
assert rows and len(rows) == len(vals), (len(rows), len(vals))
for r in rows:
    f, auroc, smd = int(r[1]), float(r[2]), float(r[3])
    p, n = vals[f]["pos"], vals[f]["neg"]
    wins = sum((a > b) + 0.5 * (a == b) for a in p for b in n)
    ref = wins / (len(p) * len(n))
    mp, mn = sum(p) / len(p), sum(n) / len(n)
    vp = sum((a - mp) ** 2 for a in p) / len(p)
    vn = sum((b - mn) ** 2 for b in n) / len(n)
    sd = math.sqrt(0.5 * (vp + vn))
    ref_smd = (mp - mn) / sd if sd > 0 else 0.0
    assert abs(ref - auroc) < 6e-4 and abs(ref_smd - smd) < 6e-4, (f, auroc, ref, smd, ref_smd)
    print("reference check feature %d: AUROC %.4f (printed %.3f) SMD %+.4f (printed %+.3f)"
          % (f, ref, auroc, ref_smd, smd))
PY
top=$(awk '$1 == "1" && NF >= 9 { print $3; exit }' "$T/c.txt")
[ -n "$top" ] || fail "no ranked feature"
awk -v a="$top" 'BEGIN { d = a - 0.5; if (d < 0) d = -d; exit !(d >= 0.1) }' ||
    fail "top feature AUROC $top does not separate the pronoun sets"
grep -q 'promotes:' "$T/c.txt" && grep -q 'top tokens' "$T/c.txt" || fail "no feature details"
echo "RESULT feature_cli contrast_female_vs_male top_auroc=$top"
# pro vs anti (the same pronouns overall: expect little separation; just report it)
"$BIN/saeflow" feature contrast --model "$MODEL" --sae "$SAE" \
    --pos "$WINO/pro_stereotyped_type1.txt.dev" --neg "$WINO/anti_stereotyped_type1.txt.dev" \
    --format winobias --top 3 --examples 0 >"$T/c2.txt" 2>"$T/c2.log" ||
    { cat "$T/c2.log"; fail "contrast pro/anti failed"; }
top2=$(awk '$1 == "1" && NF >= 9 { print $3; exit }' "$T/c2.txt")
awk -v a="$top2" 'BEGIN { exit !(a >= 0 && a <= 1) }' || fail "AUROC $top2 out of [0, 1]"
echo "RESULT feature_cli contrast_pro_vs_anti top_auroc=$top2"
# paired: line i of pro and anti are the same sentence with the pronoun swapped
"$BIN/saeflow" feature contrast --model "$MODEL" --sae "$SAE" --paired \
    --pos "$WINO/pro_stereotyped_type1.txt.dev" --neg "$WINO/anti_stereotyped_type1.txt.dev" \
    --format winobias --top 3 --examples 1 >"$T/c3.txt" 2>"$T/c3.log" ||
    { cat "$T/c3.log"; fail "contrast --paired failed"; }
grep -q '^paired contrast: 396 pairs' "$T/c3.txt" || { cat "$T/c3.txt"; fail "paired header"; }
grep -qE '^    (pos|neg) ' "$T/c3.txt" || fail "paired: no example pair"
echo "RESULT feature_cli contrast_paired $(awk '$1 == "1" { print "top_feature=" $2 " t=" $3; exit }' "$T/c3.txt")"
head -n 3 "$T/female.txt" >"$T/three.txt"
"$BIN/saeflow" feature contrast --model "$MODEL" --sae "$SAE" --paired --pos "$T/three.txt" \
    --neg "$T/male.txt" --format winobias >/dev/null 2>&1
[ $? = 1 ] || fail "--paired with unequal sets: want exit 1"

# ---- feature show from a store harvested by saeflow eval
if "$BIN/saeflow" eval --help 2>&1 | grep -q -- '--store'; then
    "$BIN/saeflow" eval --sae "$SAE" --model "$MODEL" --data "$CORPUS" --first-line 3000 \
        --tokens 8000 --store "$T/store" --sae-id tiny-l2 >"$T/eval.txt" 2>"$T/eval.log" ||
        { tail -n 5 "$T/eval.log"; fail "saeflow eval --store failed"; }
    F=$(awk '/^features by max activation/ { getline; getline; print $1; exit }' "$T/s.txt")
    "$BIN/saeflow" feature show --store "$T/store" tiny-l2 "$F" >"$T/show.txt" 2>"$T/show.log" ||
        { cat "$T/show.log"; fail "feature show $F"; }
    head -n 30 "$T/show.txt"
    for want in '^density ' 'activation histogram' 'logit effects' 'top activating examples'; do
        grep -q "$want" "$T/show.txt" || fail "feature show: no '$want'"
    done
    grep -q "$ESC" "$T/show.txt" && fail "feature show wrote colour to a non-TTY"
    "$BIN/saeflow" feature show --store "$T/store" --color always tiny-l2 "$F" 2>/dev/null |
        grep -q "$ESC\[" || fail "feature show --color always wrote no colour"
    SAEFLOW_STORE="$T/store" "$BIN/saeflow" feature show tiny-l2 "$F" >/dev/null 2>&1 ||
        fail "feature show with the store from SAEFLOW_STORE"
    "$BIN/saeflow" feature show --store "$T/store" tiny-l2 99999 >/dev/null 2>&1
    [ $? = 1 ] || fail "out-of-range feature not refused"
    "$BIN/saeflow" feature show --store "$T/store" no-such-sae 1 >/dev/null 2>&1
    [ $? = 1 ] || fail "unknown SAE not refused"
    # steering strength in units of the feature's max activation
    "$BIN/saeflow" generate --model "$MODEL" --sae "$SAE" --steer "$F=2x" --store "$T/store" \
        --sae-id tiny-l2 -n 20 --seed 3 >"$T/g.txt" 2>"$T/g.log" || { cat "$T/g.log"; fail "x units"; }
    grep -q 'event=steer_resolved' "$T/g.log" || fail "x strength not resolved from the store"
    echo "RESULT feature_cli show_feature=$F"
else
    echo "saeflow eval has no --store yet: feature show not exercised"
fi

# ---- errors
"$BIN/saeflow" feature search --model "$MODEL" --sae "$SAE" >/dev/null 2>&1
[ $? = 2 ] || fail "search without --text/--word: want exit 2"
"$BIN/saeflow" feature search --model "$MODEL" --sae "$T/nope" --text hi >/dev/null 2>&1
[ $? = 1 ] || fail "search with a missing SAE: want exit 1"
head -n 1 "$T/female.txt" >"$T/one.txt"
"$BIN/saeflow" feature contrast --model "$MODEL" --sae "$SAE" --pos "$T/one.txt" --neg "$T/male.txt" \
    --format winobias >/dev/null 2>&1
[ $? = 1 ] || fail "contrast with one text: want exit 1"
echo "not a winobias line" >"$T/bad.txt"
"$BIN/saeflow" feature contrast --model "$MODEL" --sae "$SAE" --pos "$T/bad.txt" --neg "$T/male.txt" \
    --format winobias >/dev/null 2>&1
[ $? = 1 ] || fail "malformed WinoBias line: want exit 1"
"$BIN/saeflow" generate --model "$MODEL" --sae "$SAE" --steer "1=2x" -n 4 >/dev/null 2>&1
[ $? = 1 ] || fail "x strength without a store: want exit 1"
"$BIN/saeflow" generate --model "$MODEL" --sae "$SAE" -n 4 >/dev/null 2>&1
[ $? = 2 ] || fail "--sae without --steer: want exit 2"
exit 0

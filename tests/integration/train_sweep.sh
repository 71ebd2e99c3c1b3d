#!/usr/bin/env bash
# `saeflow train` quality options end to end, on toy shards of planted features:
# --sweep lr=... trains at each rate on a slice, prints the held-out table and trains
# with the rate of lowest held-out FVU (asserted against the table); --heldout prints
# the trained SAE's held-out FVU / L0 / dead / dense; --optimizer signsgd_sf resumes
# from a checkpoint into exactly the export of the uninterrupted run; malformed
# --sweep / --optimizer values are refused with exit 2 and a message.
set -u
BIN=${SAEFLOW_BIN:-build/bin}
[ -x "$BIN/saeflow" ] || { echo "no $BIN/saeflow"; exit 77; }
command -v python3 >/dev/null || { echo "python3 not found"; exit 77; }
dir=$(mktemp -d /tmp/saeflow_train_sweep.XXXXXX)
trap 'rm -rf "$dir"' EXIT
python3 - "$dir" <<'PY' || exit 1
import array, json, math, random, struct, sys
d = sys.argv[1]
random.seed(1)
F = []
for i in range(64):
    v = [random.gauss(0, 1) for _ in range(16)]
    n = math.sqrt(sum(a * a for a in v))
    F.append([a / n for a in v])
def shard(path, N):
    out = bytearray()
    for t in range(N):
        x = [0.01 * random.gauss(0, 1) + (2.0 if j == 0 else 0.0) for j in range(16)]
        for q in range(2):
            f = F[random.randrange(64)]; m = random.uniform(0.5, 1.5)
            for j in range(16): x[j] += m * f[j]
        out += array.array('f', x).tobytes()
    hdr = {"__metadata__": {"hook_name": "blocks.0.hook_resid_post", "model_name": "toy"},
           "activations": {"dtype": "F32", "shape": [N, 16], "data_offsets": [0, len(out)]}}
    h = json.dumps(hdr).encode(); h += b' ' * ((8 - len(h) % 8) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + bytes(out))
shard(d + '/a.safetensors', 6000)
shard(d + '/h.safetensors', 2000)
PY
A=(--activations "$dir/a.safetensors" --n 64 --k 2 --batch 64 --threads 1)
# the sweep: table, choice, then training at the chosen rate
"$BIN/saeflow" train "${A[@]}" --tokens 20000 --sweep lr=0.00001,0.01,0.9 --sweep-tokens 4000 \
    --heldout "$dir/h.safetensors" >"$dir/out" 2>"$dir/err" ||
    { echo "sweep run failed"; tail -5 "$dir/err"; exit 1; }
grep -q "lr sweep on 4000 tokens, held-out FVU on 2000 (--heldout)" "$dir/err" ||
    { echo "no sweep header"; cat "$dir/err"; exit 1; }
best=$(awk '/<- best/ { print $1 }' "$dir/err")
[ "$best" = 0.01 ] || { echo "sweep picked '$best', want 0.01"; cat "$dir/err"; exit 1; }
grep -q "training with lr 0.01" "$dir/err" || { echo "sweep choice not used"; exit 1; }
python3 - "$dir/err" <<'PY' || exit 1
import re, sys
rows = [l.split() for l in open(sys.argv[1]) if re.match(r"^\s+[0-9.e-]+\s+[0-9.]+\s", l)]
fvu = {r[0]: float(r[1]) for r in rows}
assert len(fvu) == 3, rows
best = min(fvu, key=fvu.get)
assert best == "0.01", fvu
PY
line=$(grep '^heldout ' "$dir/out") || { echo "no heldout line"; cat "$dir/out"; exit 1; }
fvu=$(echo "$line" | sed 's/.*fvu=\([0-9.]*\).*/\1/')
python3 -c "import sys; sys.exit(0 if float('$fvu') < 0.2 else 1)" ||
    { echo "held-out FVU $fvu after the sweep's choice"; exit 1; }
# the data after the slice serves as held-out data when --heldout is not given
"$BIN/saeflow" train "${A[@]}" --tokens 2000 --sweep lr=0.01 --sweep-tokens 4000 \
    >/dev/null 2>"$dir/err2" || { echo "sweep without --heldout failed"; cat "$dir/err2"; exit 1; }
grep -q "held-out FVU on 2000 (the data after the slice)" "$dir/err2" ||
    { echo "no fallback held-out"; cat "$dir/err2"; exit 1; }
# signsgd_sf: interrupted and resumed = uninterrupted
S=("${A[@]}" --optimizer signsgd_sf --tokens 300000 --checkpoint-tokens 6400)
"$BIN/saeflow" train "${S[@]}" --out "$dir/o1" --checkpoint "$dir/c1" 2>"$dir/log1" ||
    { echo "signsgd_sf run failed"; tail -5 "$dir/log1"; exit 1; }
grep -q "optimizer=signsgd_sf" "$dir/log1" || { echo "optimizer not logged"; exit 1; }
"$BIN/saeflow" train "${S[@]}" --out "$dir/o2" --checkpoint "$dir/c2" 2>"$dir/log2" &
pid=$!
for i in $(seq 1 100); do [ -e "$dir/c2/trainer.safetensors" ] && break; sleep 0.05; done
kill -INT $pid 2>/dev/null
wait $pid
rc=$?
"$BIN/saeflow" train "${S[@]}" --out "$dir/o2" --checkpoint "$dir/c2" --resume 2>"$dir/log3" ||
    { echo "resumed signsgd_sf run failed"; tail -5 "$dir/log3"; exit 1; }
cmp "$dir/o1/sae_weights.safetensors" "$dir/o2/sae_weights.safetensors" ||
    { echo "signsgd_sf: resumed export differs from the uninterrupted one"; exit 1; }
# refusals
for bad in "--sweep lr=" "--sweep lr=0.1,x" "--sweep momentum=0.9" "--sweep lr=2" "--optimizer sgd"; do
    # shellcheck disable=SC2086
    "$BIN/saeflow" train "${A[@]}" $bad 2>"$dir/bad"
    rc2=$?
    [ $rc2 -eq 2 ] && [ -s "$dir/bad" ] || { echo "'$bad' exited $rc2 (want 2 and a message)"; exit 1; }
done
"$BIN/saeflow" train "${A[@]}" --sweep lr=0.01 --sweep-tokens 6000 2>"$dir/bad"
[ $? -eq 1 ] && grep -q "needs --sweep-tokens" "$dir/bad" || { echo "slice too big not refused"; exit 1; }
echo "RESULT sweep chose lr 0.01 ($line); signsgd_sf resume (rc $rc at the cut) identical"
exit 0

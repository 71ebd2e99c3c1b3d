#!/usr/bin/env bash
# `saeflow train` end to end: two activation shards (F32 and F16, written here by a
# small Python script), a run interrupted by SIGINT and resumed from its checkpoint
# must export exactly the same SAELens weights as an uninterrupted run; the export
# reads back with `saeflow sae info`; bad input is refused with exit 1/2.
set -u
BIN=${SAEFLOW_BIN:-build/bin}
[ -x "$BIN/saeflow" ] || { echo "no $BIN/saeflow"; exit 77; }
command -v python3 >/dev/null || { echo "python3 not found"; exit 77; }
dir=$(mktemp -d /tmp/saeflow_train_cli.XXXXXX)
trap 'rm -rf "$dir"' EXIT
python3 - "$dir" <<'PY' || exit 1
import array, json, math, random, struct, sys
d = sys.argv[1]
random.seed(0)
F = []
for i in range(64):
    v = [random.gauss(0, 1) for _ in range(16)]
    n = math.sqrt(sum(a * a for a in v))
    F.append([a / n for a in v])
def shard(path, N, dtype):
    out = bytearray()
    for t in range(N):
        x = [0.01 * random.gauss(0, 1) for _ in range(16)]
        for q in range(2):
            f = F[random.randrange(64)]; m = random.uniform(0.5, 1.5)
            for j in range(16): x[j] += m * f[j]
        out += array.array('f', x).tobytes() if dtype == 'F32' else b''.join(struct.pack('<e', a) for a in x)
    hdr = {"__metadata__": {"hook_name": "blocks.0.hook_resid_post", "model_name": "toy"},
           "activations": {"dtype": dtype, "shape": [N, 16], "data_offsets": [0, len(out)]}}
    h = json.dumps(hdr).encode(); h += b' ' * ((8 - len(h) % 8) % 8)
    open(path, 'wb').write(struct.pack('<Q', len(h)) + h + bytes(out))
shard(d + '/a.safetensors', 3000, 'F32')
shard(d + '/b.safetensors', 2000, 'F16')
PY
args=(--activations "$dir/a.safetensors" "$dir/b.safetensors" --n 64 --k 2 --batch 64 --tokens 300000
      --threads 1 --checkpoint-tokens 6400)
"$BIN/saeflow" train "${args[@]}" --out "$dir/o1" --checkpoint "$dir/c1" 2>"$dir/log1" ||
    { echo "uninterrupted run failed"; tail -5 "$dir/log1"; exit 1; }
"$BIN/saeflow" train "${args[@]}" --out "$dir/o2" --checkpoint "$dir/c2" 2>"$dir/log2" &
pid=$!
for i in $(seq 1 100); do [ -e "$dir/c2/trainer.safetensors" ] && break; sleep 0.05; done
kill -INT $pid 2>/dev/null
wait $pid
rc=$?
if [ $rc -eq 0 ]; then echo "RESULT run finished before the interrupt (no resume exercised)"; fi
"$BIN/saeflow" train "${args[@]}" --out "$dir/o2" --checkpoint "$dir/c2" --resume 2>"$dir/log3" ||
    { echo "resumed run failed"; tail -5 "$dir/log3"; exit 1; }
cmp "$dir/o1/sae_weights.safetensors" "$dir/o2/sae_weights.safetensors" ||
    { echo "resumed export differs from the uninterrupted one"; exit 1; }
grep -q "resuming from" "$dir/log3" || [ $rc -eq 0 ] || { echo "no resume line"; exit 1; }
"$BIN/saeflow" sae info "$dir/o1" >"$dir/info" || { echo "sae info failed"; exit 1; }
grep -q "blocks.0.hook_resid_post" "$dir/info" || { echo "hook name lost"; exit 1; }
# --resume with another shape is refused; a new --tokens is applied and said; a
# finished checkpoint resumed again trains nothing and says so
cp "$dir/c2/trainer.safetensors" "$dir/before.safetensors"
"$BIN/saeflow" train "${args[@]}" --checkpoint "$dir/c2" --resume --n 128 2>"$dir/log4"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--n gives n 128 but the checkpoint .* has n 64" "$dir/log4" ||
    { echo "--resume with another --n: rc $rc"; cat "$dir/log4"; exit 1; }
"$BIN/saeflow" train "${args[@]}" --checkpoint "$dir/c2" --resume --k 4 2>"$dir/log5"; rc=$?
[ $rc -eq 2 ] && grep -q -- "--k gives k 4 but the checkpoint .* has k 2" "$dir/log5" ||
    { echo "--resume with another --k: rc $rc"; cat "$dir/log5"; exit 1; }
cmp -s "$dir/c2/trainer.safetensors" "$dir/before.safetensors" || { echo "a refused resume changed the checkpoint"; exit 1; }
"$BIN/saeflow" train "${args[@]}" --checkpoint "$dir/c2" --resume 2>"$dir/log6" ||
    { echo "resuming a finished checkpoint failed"; cat "$dir/log6"; exit 1; }
grep -q "nothing to train: the checkpoint has trained 300000 tokens of its 300000-token plan" "$dir/log6" ||
    { echo "resuming a finished checkpoint did not say it has nothing to train"; cat "$dir/log6"; exit 1; }
"$BIN/saeflow" train "${args[@]}" --checkpoint "$dir/c2" --resume --tokens 320000 2>"$dir/log7" ||
    { echo "extending the plan failed"; tail -3 "$dir/log7"; exit 1; }
grep -q "extending plan from 300000 to 320000 tokens" "$dir/log7" || { echo "no 'extending plan' line"; exit 1; }
grep -q "event=train_done tokens=320000" "$dir/log7" || { echo "the extended plan was not trained"; tail -3 "$dir/log7"; exit 1; }
echo "RESULT resume refusal: $(grep -m1 -o "saeflow train: --n gives.*" "$dir/log4" | cut -c1-90)...; plan extended 300000 -> 320000"
# refusals
"$BIN/saeflow" train --activations "$dir/missing.safetensors" 2>/dev/null; [ $? -eq 1 ] || { echo "missing shard not refused"; exit 1; }
"$BIN/saeflow" train 2>/dev/null; [ $? -eq 2 ] || { echo "usage error not 2"; exit 1; }
"$BIN/saeflow" train --activations "$dir/a.safetensors" --arch jumprelu 2>/dev/null; [ $? -eq 2 ] || { echo "jumprelu training not refused"; exit 1; }
echo "RESULT interrupted at $(grep -o 'stopped at [0-9]* tokens' "$dir/log2" | head -1); resumed export identical"
exit 0

#!/usr/bin/env bash
# saeflow-capture's inputs and shard output, with the real binary and stories260K:
# plain text files, a directory (recursively), JSONL with a chosen field (lines without
# it skipped), text split on a separator, and stdin; shards are safetensors with
# tensor "activations" [tokens, 64] and the __metadata__ the SAE trainer reads; BOS
# positions are excluded; two hooks give two shard directories of equal size.
# Failures say why: skipped JSONL lines are counted and reported, an unwritable
# --shard_dir, an empty input and a non-JSON file read as JSONL exit 1 with an error
# line (--allow_empty accepts nothing), and a capture with no trainer logs that it is
# waiting every --wait_log_s and gives up after --connect_timeout with exit 1.
cd "$(dirname "$0")/../.."
. tests/integration/pipeline_common.inc
command -v python3 >/dev/null || skip "python3 not installed"

mkdir -p "$T/in/sub/deeper"
echo "Once upon a time, there was a little girl named Lily." >"$T/in/a.txt"
echo "Tom had a red ball. He liked to play with it every day." >"$T/in/sub/b.txt"
echo "The sun was hot. The cat slept under the big green tree." >"$T/in/sub/deeper/c.txt"
printf '{"body": "Sue saw a bird."}\n{"other": "skipped line"}\nnot json at all\n{"body": "Max ran to the park."}\n' >"$T/d.jsonl"
printf 'one story here<|endoftext|>and another one there<|endoftext|>  \n' >"$T/e.txt"

H2=blocks.0.hook_resid_pre
"$BIN/saeflow-capture" --model "$MODEL" --input "$T/in,$T/d.jsonl" --jsonl_field body \
    --hook "$HOOK,$H2" --shard_dir "$T/shards" --context 64 2>"$T/c1.log" \
    || { tail "$T/c1.log"; fail "capture (files) failed"; }
docs=$(grep -o 'event=capture_done.*' "$T/c1.log" | sed 's/.* docs=\([0-9]*\).*/\1/')
[ "$docs" = 5 ] || fail "expected 5 documents (3 files + 2 JSONL lines), got $docs"
grep -q 'event=capture_done.* skipped_lines=2 not_json=1 no_field=1' "$T/c1.log" ||
    fail "the skipped JSONL lines are not counted in capture_done"
grep -q 'skipped 2 JSONL lines (1 not JSON, 1 without' "$T/c1.log" ||
    fail "the skipped JSONL lines are not reported at exit"
[ "$(grep -c 'event=source_bad_line' "$T/c1.log")" = 2 ] || fail "bad JSONL lines not logged"

"$BIN/saeflow-capture" --model "$MODEL" --input "$T/e.txt" --separator '<|endoftext|>' \
    --hook "$HOOK" --shard_dir "$T/shards_sep" 2>"$T/c2.log" || fail "capture (separator) failed"
docs2=$(grep -o 'event=capture_done.*' "$T/c2.log" | sed 's/.* docs=\([0-9]*\).*/\1/')
[ "$docs2" = 2 ] || fail "expected 2 documents split on the separator, got $docs2"

echo "Lily and Ben went to the beach." | "$BIN/saeflow-capture" --model "$MODEL" --input - \
    --hook "$HOOK" --shard_dir "$T/shards_stdin" --dtype f32 2>"$T/c3.log" || fail "capture (stdin) failed"

python3 - "$T" "$HOOK" "$H2" <<'PY' || fail "shard check failed"
import json, struct, sys, glob
t, h1, h2 = sys.argv[1:4]
def read(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        body = f.read()
    return head, body
def check(path, dtype):
    head, body = read(path)
    meta, a = head["__metadata__"], head["activations"]
    assert a["dtype"] == dtype, a
    assert a["shape"][1] == 64 and a["shape"][0] > 0, a
    b, e = a["data_offsets"]
    assert e - b == a["shape"][0] * 64 * (4 if dtype == "F32" else 2) and e <= len(body)
    assert meta["model_name"] == "stories260K" and meta["d_in"] == "64", meta
    assert meta["dtype"] == dtype and meta["prepend_bos"] == "true", meta
    return meta, a["shape"][0]
m1, n1 = check(glob.glob(f"{t}/shards/{h1}/shard-*.safetensors")[0], "BF16")
m2, n2 = check(glob.glob(f"{t}/shards/{h2}/shard-*.safetensors")[0], "BF16")
assert m1["hook_name"] == h1 and m2["hook_name"] == h2 and n1 == n2, (m1, m2, n1, n2)
_, n3 = check(glob.glob(f"{t}/shards_stdin/{h1}/shard-*.safetensors")[0], "F32")
print(f"RESULT capture_sources tokens_files={n1} tokens_stdin={n3} hooks=2")
PY
# BOS excluded: tokens captured < tokens run through the model (one BOS per window)
fwd=$(grep -o 'forward_tokens=[0-9]*' "$T/c3.log" | cut -d= -f2)
cap=$(grep -o 'event=capture_done tokens=[0-9]*' "$T/c3.log" | sed 's/.*tokens=//')
echo "RESULT capture_sources stdin_forward=$fwd captured=$cap"
[ "$cap" -lt "$fwd" ] || fail "BOS positions were not excluded"
# ---- failures that must say why ----
touch "$T/a_file"
"$BIN/saeflow-capture" --model "$MODEL" --input "$T/in" --hook "$HOOK" \
    --shard_dir "$T/a_file/shards" 2>"$T/f1.log"; rc=$?
echo "RESULT capture_sources unwritable_shard_dir rc=$rc: $(grep -m1 'cannot write' "$T/f1.log")"
[ $rc = 1 ] || fail "unwritable --shard_dir: rc $rc"
grep -q "level=error.*event=capture_shard_dir path=$T/a_file/shards err=\"Not a directory\"" \
    "$T/f1.log" || fail "unwritable --shard_dir: no error line naming the path and the reason"
: >"$T/empty.jsonl"
"$BIN/saeflow-capture" --model "$MODEL" --input "$T/empty.jsonl" --format jsonl --hook "$HOOK" \
    --shard_dir "$T/sh_empty" 2>"$T/f2.log"; rc=$?
echo "RESULT capture_sources empty_input rc=$rc: $(grep -m1 'nothing captured' "$T/f2.log")"
[ $rc = 1 ] || fail "empty input: rc $rc"
grep -q 'level=error.*event=capture_nothing' "$T/f2.log" || fail "empty input: no error line"
"$BIN/saeflow-capture" --model "$MODEL" --input "$T/empty.jsonl" --format jsonl --hook "$HOOK" \
    --shard_dir "$T/sh_empty" --allow_empty true 2>"$T/f3.log" || fail "--allow_empty true refused"
"$BIN/saeflow-capture" --model "$MODEL" --input "$T/in/a.txt,$T/e.txt" --format jsonl \
    --hook "$HOOK" --shard_dir "$T/sh_notjson" 2>"$T/f4.log"; rc=$?
echo "RESULT capture_sources not_json rc=$rc: $(grep -m1 'skipped' "$T/f4.log")"
[ $rc = 1 ] || fail "a non-JSON file read as JSONL: rc $rc"
grep -q 'skipped 2 JSONL lines (2 not JSON' "$T/f4.log" || fail "non-JSON lines not reported"
grep -q 'level=error.*event=capture_nothing.* skipped_lines=2' "$T/f4.log" ||
    fail "non-JSON input: no error line with the skipped count"
start=$(date +%s.%N)
"$BIN/saeflow-capture" --model "$MODEL" --input "$T/in" --hook "$HOOK" \
    --connect "ipc://$T/nobody.sock" --wait_log_s 0.3 --connect_timeout 2 2>"$T/f5.log"; rc=$?
secs=$(echo "$(date +%s.%N) - $start" | bc 2>/dev/null || echo "?")
waits=$(grep -c 'event=capture_waiting what=trainer' "$T/f5.log")
echo "RESULT capture_sources no_trainer rc=$rc waiting_lines=$waits s=$secs: $(grep -m1 'no trainer' "$T/f5.log")"
[ $rc = 1 ] || fail "no trainer: rc $rc"
[ "$waits" -ge 4 ] || fail "no trainer: only $waits waiting lines in 2 s at --wait_log_s 0.3"
grep -q "level=error.*event=capture_no_trainer endpoints=ipc://$T/nobody.sock" "$T/f5.log" ||
    fail "no trainer: no error line naming the endpoint"
echo "capture_sources: ok"

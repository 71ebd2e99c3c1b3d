#!/usr/bin/env bash
# The engine through the `saeflow` command: greedy generation on stories260K (.bin and
# GGUF) reproduces llama2.c's reference text, tokenize prints the reference ids,
# model info describes gpt-nano-sort, and malformed files fail cleanly (exit 1).
set -u
BIN=${SAEFLOW_BIN:-build/bin}/saeflow
M=${SAEFLOW_MODELS:-../shared/models}
[ -x "$BIN" ] || { echo "skip: $BIN not built"; exit 77; }
[ -f "$M/stories260K/stories260K.bin" ] || { echo "skip: shared models not found (SAEFLOW_MODELS)"; exit 77; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
fail=0
ref='Once upon a time, there was a little girl named Lily. She loved to play outside in the park. One day, she saw a big, red ball. She wanted to play with it, but it was too high. Lily'"'"'s mom said, "Lily, let'"'"'s go to the park." Lily was sad and didn'"'"'t know what to do.'
for f in stories260K.bin stories260K.gguf; do
    out=$("$BIN" generate --model "$M/stories260K/$f" --temperature 0 -n 200 --log-level warn) || { echo "FAIL generate $f exited $?"; fail=1; continue; }
    flat=$(printf '%s' "$out" | tr '\n' ' ' | tr -s ' ')
    case "$flat" in
        "$ref"*) echo "ok generate $f";;
        *) echo "FAIL generate $f: $flat"; fail=1;;
    esac
done
ids=$("$BIN" tokenize --model "$M/stories260K/stories260K.bin" "Once upon a time" | head -n 1)
[ "$ids" = "403 407 261 378" ] && echo "ok tokenize" || { echo "FAIL tokenize: $ids"; fail=1; }
ids=$("$BIN" tokenize --tokenizer "$M/stories260K/tok512.bin" --bos "Once upon a time" | head -n 1)
[ "$ids" = "1 403 407 261 378" ] && echo "ok tokenize --bos" || { echo "FAIL tokenize --bos: $ids"; fail=1; }
info=$("$BIN" model info "$M/gpt-nano-sort/gpt-nano-sort.safetensors")
if grep -q 'architecture: *gpt2' <<<"$info" && grep -q 'parameters: *85728' <<<"$info" &&
   grep -q 'blocks.{0..2}.hook_resid_post' <<<"$info"; then echo "ok model info"; else echo "FAIL model info: $info"; fail=1; fi
# seeded sampling is reproducible
a=$("$BIN" generate --model "$M/stories260K/stories260K.bin" --seed 42 --top-p 0.9 -n 50 --log-level warn)
b=$("$BIN" generate --model "$M/stories260K/stories260K.bin" --seed 42 --top-p 0.9 -n 50 --log-level warn)
[ "$a" = "$b" ] && echo "ok seeded sampling" || { echo "FAIL seeded sampling differs"; fail=1; }
# malformed inputs: exit 1 with a message, never a crash
head -c 5000 "$M/stories260K/stories260K.bin" > "$tmp/trunc.bin"
head -c 3000 "$M/stories260K/stories260K.gguf" > "$tmp/trunc.gguf"
printf 'GGUF\003\0\0\0' > "$tmp/magic.gguf"
for f in trunc.bin trunc.gguf magic.gguf; do
    "$BIN" model info "$tmp/$f" >/dev/null 2>"$tmp/err"; rc=$?
    [ $rc -eq 1 ] && echo "ok rejects $f" || { echo "FAIL $f: rc=$rc"; cat "$tmp/err"; fail=1; }
done
"$BIN" generate --model "$M/stories260K/stories260K.bin" --bogus 1 >/dev/null 2>&1; rc=$?
[ $rc -eq 2 ] && echo "ok usage error" || { echo "FAIL usage rc=$rc"; fail=1; }
[ $fail -eq 0 ] && echo "RESULT engine cli: all checks passed"
exit $fail

#!/usr/bin/env bash
# The engine through the `saeflow` command: greedy generation on stories260K (.bin and
# GGUF) reproduces llama2.c's reference text, tokenize prints the reference ids,
# model info describes gpt-nano-sort, BOS follows each format's metadata (shown by model
# info, used by generate), and malformed files fail cleanly (exit 1).
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
# BOS follows each format's metadata: llama2.c always; GGUF add_bos_token (llama
# default yes); a Hugging Face GPT-2 directory whose tokenizer.json post-processor adds
# none gets none (as transformers), unless tokenizer_config.json says add_bos_token.
# The directory is a tiny random GPT-2 written here (no numpy needed).
bos_line() { "$BIN" model info "$1" 2>/dev/null | grep '^prepend BOS:'; }
case "$(bos_line "$M/stories260K/stories260K.bin")" in
    *"yes (llama2.c"*) echo "ok BOS llama2.c";; *) echo "FAIL BOS llama2.c: $(bos_line "$M/stories260K/stories260K.bin")"; fail=1;;
esac
case "$(bos_line "$M/stories260K/stories260K.gguf")" in
    *"yes (GGUF"*) echo "ok BOS gguf";; *) echo "FAIL BOS gguf: $(bos_line "$M/stories260K/stories260K.gguf")"; fail=1;;
esac
python3 - "$tmp/gpt2" <<'PY' || { echo "FAIL writing the GPT-2 directory"; fail=1; }
import array, json, os, random, struct, sys
d = sys.argv[1]; os.makedirs(d)
V, D, L, P = 101, 16, 1, 32
random.seed(7)
def r(*shape, s=0.2, base=0.0):
    n = 1
    for x in shape: n *= x
    return shape, array.array('f', [base + random.gauss(0, s) for _ in range(n)])
W = {"wte.weight": r(V, D), "wpe.weight": r(P, D), "ln_f.weight": r(D, base=1), "ln_f.bias": r(D)}
for l in range(L):
    h = f"h.{l}."
    W.update({h + "ln_1.weight": r(D, base=1), h + "ln_1.bias": r(D), h + "ln_2.weight": r(D, base=1),
              h + "ln_2.bias": r(D), h + "attn.c_attn.weight": r(D, 3 * D), h + "attn.c_attn.bias": r(3 * D),
              h + "attn.c_proj.weight": r(D, D), h + "attn.c_proj.bias": r(D),
              h + "mlp.c_fc.weight": r(D, 4 * D), h + "mlp.c_fc.bias": r(4 * D),
              h + "mlp.c_proj.weight": r(4 * D, D), h + "mlp.c_proj.bias": r(D)})
hdr, blob = {}, b""
for k, (shape, a) in W.items():
    b = a.tobytes(); hdr[k] = {"dtype": "F32", "shape": list(shape), "data_offsets": [len(blob), len(blob) + len(b)]}; blob += b
h = json.dumps(hdr).encode(); h += b" " * ((8 - len(h) % 8) % 8)
open(d + "/model.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + blob)
json.dump({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": D, "n_layer": L,
           "n_head": 2, "n_positions": P, "n_ctx": P, "vocab_size": V, "layer_norm_epsilon": 1e-5,
           "activation_function": "gelu_new", "bos_token_id": 100, "eos_token_id": 100},
          open(d + "/config.json", "w"))
# GPT-2's byte-level alphabet for printable ASCII: space is U+0120, '!'..'~' themselves
vocab = {"\u0120": 0}
for c in range(33, 127): vocab[chr(c)] = len(vocab)
merges = ["h e", "\u0120 t", "t h", "\u0120 a", "i n"]
for m in merges: vocab[m.replace(" ", "")] = len(vocab)
vocab["<|endoftext|>"] = 100
assert len(vocab) == V
# the shape of GPT-2's own tokenizer.json: ByteLevel pre-tokenizer, decoder and post-processor
tj = {"version": "1.0", "added_tokens": [{"id": 100, "content": "<|endoftext|>", "special": True}],
      "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
      "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
      "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
      "model": {"type": "BPE", "vocab": vocab, "merges": merges}}
json.dump(tj, open(d + "/tokenizer.json", "w"))
PY
gen_prompt_tokens() { # prompt tokens generate used for "abc" (no merges apply)
    "$BIN" generate --model "$1" --prompt abc -n 1 --temperature 0 2>&1 | grep -o 'prompt_tokens=[0-9]*'
}
if [ -f "$tmp/gpt2/tokenizer.json" ]; then
    case "$(bos_line "$tmp/gpt2")" in
        *"no (tokenizer.json post_processor"*) echo "ok BOS hf gpt2";; *) echo "FAIL BOS hf gpt2: $(bos_line "$tmp/gpt2")"; fail=1;;
    esac
    pt=$(gen_prompt_tokens "$tmp/gpt2")
    [ "$pt" = prompt_tokens=3 ] && echo "ok generate hf gpt2: no BOS" || { echo "FAIL generate hf gpt2 prepended BOS: $pt"; fail=1; }
    ids=$("$BIN" tokenize --model "$tmp/gpt2" "abc" | head -n 1)
    [ "$ids" = "65 66 67" ] && echo "ok tokenize hf gpt2" || { echo "FAIL tokenize hf gpt2: $ids"; fail=1; }
    printf '{"add_bos_token": true, "bos_token": "<|endoftext|>"}' >"$tmp/gpt2/tokenizer_config.json"
    case "$(bos_line "$tmp/gpt2")" in
        *"yes (tokenizer_config.json add_bos_token)"*) echo "ok BOS tokenizer_config";; *) echo "FAIL BOS tokenizer_config: $(bos_line "$tmp/gpt2")"; fail=1;;
    esac
    pt=$(gen_prompt_tokens "$tmp/gpt2")
    [ "$pt" = prompt_tokens=4 ] && echo "ok generate with add_bos_token" || { echo "FAIL generate with add_bos_token: $pt"; fail=1; }
fi
[ $fail -eq 0 ] && echo "RESULT engine cli: all checks passed"
exit $fail

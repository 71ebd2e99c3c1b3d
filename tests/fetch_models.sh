#!/usr/bin/env bash
# Downloads the public model files the tests and the demo use, for users outside the
# environment that provides ../shared/models. Files land in $SAEFLOW_MODELS
# (default ./models) in the layout the tests expect; existing files are kept.
set -euo pipefail
dest=${SAEFLOW_MODELS:-models}
hf=${SAEFLOW_HF_BASE:-https://huggingface.co}
gh=${SAEFLOW_GH_RAW:-https://raw.githubusercontent.com}
get() { # url path
    if [ -s "$2" ]; then echo "have $2"; return; fi
    mkdir -p "$(dirname "$2")"
    echo "fetching $2"
    curl -fL --retry 3 -o "$2.part" "$1" && mv "$2.part" "$2"
}
get "$hf/karpathy/tinyllamas/resolve/main/stories260K/stories260K.bin" "$dest/stories260K/stories260K.bin"
get "$hf/karpathy/tinyllamas/resolve/main/stories260K/tok512.bin" "$dest/stories260K/tok512.bin"
get "$hf/ggml-org/tiny-llamas/resolve/main/stories260K.gguf" "$dest/stories260K/stories260K.gguf"
for v in llama-spm gpt-2; do
    for ext in gguf gguf.inp gguf.out; do
        get "$gh/ggml-org/llama.cpp/master/models/ggml-vocab-$v.$ext" "$dest/tokenizer-tests/ggml-vocab-$v.$ext"
    done
done
for f in gpt-nano-sort-model.json gpt-nano-sort-t0-partials.json; do
    get "$gh/bbycroft/llm-viz/main/public/$f" "$dest/gpt-nano-sort/$f"
done
echo "models in $dest; run the tests with SAEFLOW_MODELS=$(cd "$dest" && pwd)"
echo "note: gpt-nano-sort.safetensors is derived from the JSON; tests that need it skip when absent"

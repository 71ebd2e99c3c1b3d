#!/usr/bin/env python3
"""Writes tiny random-weight models for saeflow's engine tests, each with reference
logits computed by an independent numpy forward pass (float64, written from the
published architectures, not from saeflow's C):

  llama: grouped-query attention (8 query heads, 2 kv heads), untied output,
         RoPE base 500000, SwiGLU; as a Hugging Face directory (half-split RoPE
         layout, weights sharded over two safetensors files with an index) and as
         GGUF (Q/K rows permuted to llama.cpp's interleaved layout, tensors in
         F32 / F16 / BF16 / Q8_0).
  gpt2:  LayerNorm, learned positions, fused QKV with biases, tanh-GELU, tied output;
         as a Hugging Face directory (Conv1D [in, out] weights, GPT2Model names
         without the "transformer." prefix) and as GGUF ([out, in], F32 + F16).

Usage: make_random_models.py OUTDIR
Writes OUTDIR/{llama_hf/, llama.gguf, gpt2_hf/, gpt2.gguf} and a reference file per
model, OUTDIR/<name>.ref: int32 n_seqs, int32 vocab, int32 lengths[n_seqs],
int32 tokens[sum(lengths)], float32 logits[sum(lengths), vocab] (every position of
every sequence, sequences in order). Needs only python3 + numpy."""
import json
import os
import struct
import sys

import numpy as np

SEQ_LENS = [5, 12, 1, 9]


# ---------------------------------------------------------------- file writers

def write_safetensors(path, tensors):
    """tensors: list of (name, float32 array). Written as F32, C order."""
    header, blobs, off = {}, [], 0
    for name, a in tensors:
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


GGML_F32, GGML_F16, GGML_Q8_0, GGML_BF16 = 0, 1, 8, 30


def to_bf16_bits(a):
    bits = np.asarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")


def quantize(a, typ):
    """Returns (bytes, dequantised float32 array) for a tensor stored as typ."""
    a = np.asarray(a, dtype=np.float32)
    if typ == GGML_F32:
        return a.astype("<f4").tobytes(), a
    if typ == GGML_F16:
        h = a.astype("<f2")
        return h.tobytes(), h.astype(np.float32)
    if typ == GGML_BF16:
        b = to_bf16_bits(a)
        return b.tobytes(), (b.astype(np.uint32) << 16).view(np.float32).reshape(a.shape)
    if typ == GGML_Q8_0:
        x = a.reshape(-1, 32)
        amax = np.abs(x).max(axis=1)
        d = (amax / 127.0).astype(np.float32)
        inv = np.where(d > 0, 1.0 / np.where(d > 0, d, 1), 0).astype(np.float32)
        q = np.clip(np.trunc(x * inv[:, None] + np.copysign(0.5, x * inv[:, None])), -127, 127).astype(np.int8)
        dh = d.astype("<f2")
        out = bytearray()
        for i in range(x.shape[0]):
            out += dh[i].tobytes() + q[i].tobytes()
        deq = (q.astype(np.float32) * dh.astype(np.float32)[:, None]).reshape(a.shape)
        return bytes(out), deq
    raise ValueError(typ)


def gguf_str(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def write_gguf(path, kv, tensors):
    """kv: list of (key, kind, value) with kind in u32/f32/str; tensors: list of
    (name, array [rows, cols] or [n], ggml type). Returns {name: dequantised array}."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)))
    for key, kind, val in kv:
        out += gguf_str(key)
        if kind == "u32":
            out += struct.pack("<II", 4, val)
        elif kind == "f32":
            out += struct.pack("<If", 6, val)
        elif kind == "str":
            out += struct.pack("<I", 8) + gguf_str(val)
        else:
            raise ValueError(kind)
    deq, datas, off = {}, [], 0
    for name, a, typ in tensors:
        b, d = quantize(a, typ)
        deq[name] = d
        dims = list(reversed(a.shape))  # ggml order: innermost first
        out += gguf_str(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", x) for x in dims)
        out += struct.pack("<IQ", typ, off)
        datas.append(b)
        off += len(b)
        off += (32 - off % 32) % 32
    out += b"\0" * ((32 - len(out) % 32) % 32)
    for b in datas:
        out += b + b"\0" * ((32 - len(b) % 32) % 32)
    with open(path, "wb") as f:
        f.write(out)
    return deq


# ---------------------------------------------------------------- reference math

def rmsnorm(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def layernorm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def causal_attention(q, k, v):
    """q: (H, T, hd), k, v: (H, T, hd) -> (T, H*hd)."""
    hd = q.shape[-1]
    s = q @ k.transpose(0, 2, 1) / np.sqrt(hd)
    T = q.shape[1]
    s = np.where(np.tril(np.ones((T, T), dtype=bool)), s, -np.inf)
    s = np.exp(s - s.max(-1, keepdims=True))
    p = s / s.sum(-1, keepdims=True)
    return (p @ v).transpose(1, 0, 2).reshape(T, -1)


def llama_forward(W, c, toks):
    """Hugging Face LlamaForCausalLM math (rotate_half RoPE), float64."""
    W = {k: v.astype(np.float64) for k, v in W.items()}
    H, KV, hd = c["n_heads"], c["n_kv_heads"], c["head_dim"]
    T = len(toks)
    x = W["embed"][toks]
    pos = np.arange(T)[:, None]
    inv = c["theta"] ** (-np.arange(0, hd, 2) / hd)
    ang = pos * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, -1)
    sin = np.concatenate([np.sin(ang)] * 2, -1)

    def rope(t):  # (h, T, hd)
        rot = np.concatenate([-t[..., hd // 2:], t[..., : hd // 2]], -1)
        return t * cos + rot * sin

    for l in range(c["n_layers"]):
        h = rmsnorm(x, W[f"{l}.ln1"], c["eps"])
        q = (h @ W[f"{l}.q"].T).reshape(T, H, hd).transpose(1, 0, 2)
        k = (h @ W[f"{l}.k"].T).reshape(T, KV, hd).transpose(1, 0, 2)
        v = (h @ W[f"{l}.v"].T).reshape(T, KV, hd).transpose(1, 0, 2)
        q, k = rope(q), rope(k)
        k = np.repeat(k, H // KV, axis=0)
        v = np.repeat(v, H // KV, axis=0)
        x = x + causal_attention(q, k, v) @ W[f"{l}.o"].T
        h = rmsnorm(x, W[f"{l}.ln2"], c["eps"])
        g = h @ W[f"{l}.gate"].T
        x = x + ((g / (1 + np.exp(-g))) * (h @ W[f"{l}.up"].T)) @ W[f"{l}.down"].T
    return rmsnorm(x, W["norm"], c["eps"]) @ W["lm_head"].T


def gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def gpt2_forward(W, c, toks):
    """GPT-2 math with [out, in] weights, float64."""
    W = {k: v.astype(np.float64) for k, v in W.items()}
    H, d = c["n_heads"], c["dim"]
    hd = d // H
    T = len(toks)
    x = W["wte"][toks] + W["wpe"][:T]
    for l in range(c["n_layers"]):
        h = layernorm(x, W[f"{l}.ln1.w"], W[f"{l}.ln1.b"], c["eps"])
        qkv = h @ W[f"{l}.qkv.w"].T + W[f"{l}.qkv.b"]
        q, k, v = (qkv[:, i * d:(i + 1) * d].reshape(T, H, hd).transpose(1, 0, 2) for i in range(3))
        x = x + causal_attention(q, k, v) @ W[f"{l}.proj.w"].T + W[f"{l}.proj.b"]
        h = layernorm(x, W[f"{l}.ln2.w"], W[f"{l}.ln2.b"], c["eps"])
        f = gelu_tanh(h @ W[f"{l}.fc.w"].T + W[f"{l}.fc.b"])
        x = x + f @ W[f"{l}.mproj.w"].T + W[f"{l}.mproj.b"]
    x = layernorm(x, W["lnf.w"], W["lnf.b"], c["eps"])
    return x @ W["wte"].T


def write_ref(path, vocab, seqs, forward):
    with open(path, "wb") as f:
        f.write(struct.pack("<ii", len(seqs), vocab))
        f.write(np.array([len(s) for s in seqs], dtype="<i4").tobytes())
        for s in seqs:
            f.write(np.array(s, dtype="<i4").tobytes())
        for s in seqs:
            f.write(forward(s).astype("<f4").tobytes())


# ---------------------------------------------------------------- models

def make_llama(out, rng):
    c = dict(dim=64, hidden=96, n_layers=2, n_heads=8, n_kv_heads=2, head_dim=8, vocab=97,
             max_seq=64, theta=500000.0, eps=1e-5)
    d, hd, H, KV, F = c["dim"], c["head_dim"], c["n_heads"], c["n_kv_heads"], c["hidden"]
    n = lambda *s: (rng.standard_normal(s) * 0.2).astype(np.float32)
    W = {"embed": n(c["vocab"], d), "norm": 1 + n(d) * 0.5, "lm_head": n(c["vocab"], d)}
    for l in range(c["n_layers"]):
        W.update({f"{l}.ln1": 1 + n(d) * 0.5, f"{l}.q": n(H * hd, d), f"{l}.k": n(KV * hd, d),
                  f"{l}.v": n(KV * hd, d), f"{l}.o": n(d, H * hd), f"{l}.ln2": 1 + n(d) * 0.5,
                  f"{l}.gate": n(F, d), f"{l}.up": n(F, d), f"{l}.down": n(d, F)})
    seqs = [list(rng.integers(0, c["vocab"], size=L)) for L in SEQ_LENS]

    # Hugging Face directory, two shards + index
    hf = os.path.join(out, "llama_hf")
    os.makedirs(hf, exist_ok=True)
    names = {"embed": "model.embed_tokens.weight", "norm": "model.norm.weight", "lm_head": "lm_head.weight"}
    per = {"ln1": "input_layernorm", "q": "self_attn.q_proj", "k": "self_attn.k_proj",
           "v": "self_attn.v_proj", "o": "self_attn.o_proj", "ln2": "post_attention_layernorm",
           "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}
    for l in range(c["n_layers"]):
        for k, v in per.items():
            names[f"{l}.{k}"] = f"model.layers.{l}.{v}.weight"
    items = [(names[k], W[k]) for k in W]
    shards = [items[: len(items) // 2], items[len(items) // 2:]]
    wmap = {}
    for i, sh in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-00002.safetensors"
        write_safetensors(os.path.join(hf, fn), sh)
        wmap.update({name: fn for name, _ in sh})
    with open(os.path.join(hf, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": 0}, "weight_map": wmap}, f)
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                   "hidden_size": d, "intermediate_size": F, "num_hidden_layers": c["n_layers"],
                   "num_attention_heads": H, "num_key_value_heads": KV, "vocab_size": c["vocab"],
                   "max_position_embeddings": c["max_seq"], "rms_norm_eps": c["eps"],
                   "rope_theta": c["theta"], "tie_word_embeddings": False, "rope_scaling": None,
                   "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32"}, f, indent=1)
    write_ref(os.path.join(out, "llama_hf.ref"), c["vocab"], seqs, lambda s: llama_forward(W, c, s))

    # GGUF: llama.cpp's names, Q/K permuted to the interleaved RoPE layout, mixed types
    def permute(w, heads):
        return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    tens = [("token_embd.weight", W["embed"], GGML_BF16), ("output_norm.weight", W["norm"], GGML_F32),
            ("output.weight", W["lm_head"], GGML_F16)]
    for l in range(c["n_layers"]):
        mt = GGML_Q8_0 if l == 0 else GGML_F16
        tens += [(f"blk.{l}.attn_norm.weight", W[f"{l}.ln1"], GGML_F32),
                 (f"blk.{l}.attn_q.weight", permute(W[f"{l}.q"], H), mt),
                 (f"blk.{l}.attn_k.weight", permute(W[f"{l}.k"], KV), mt),
                 (f"blk.{l}.attn_v.weight", W[f"{l}.v"], mt),
                 (f"blk.{l}.attn_output.weight", W[f"{l}.o"], GGML_F32),
                 (f"blk.{l}.ffn_norm.weight", W[f"{l}.ln2"], GGML_F32),
                 (f"blk.{l}.ffn_gate.weight", W[f"{l}.gate"], mt),
                 (f"blk.{l}.ffn_up.weight", W[f"{l}.up"], GGML_BF16),
                 (f"blk.{l}.ffn_down.weight", W[f"{l}.down"], mt)]
    kv = [("general.architecture", "str", "llama"), ("general.name", "str", "random-llama"),
          ("llama.context_length", "u32", c["max_seq"]), ("llama.embedding_length", "u32", d),
          ("llama.feed_forward_length", "u32", F), ("llama.block_count", "u32", c["n_layers"]),
          ("llama.attention.head_count", "u32", H), ("llama.attention.head_count_kv", "u32", KV),
          ("llama.rope.dimension_count", "u32", hd), ("llama.rope.freq_base", "f32", c["theta"]),
          ("llama.attention.layer_norm_rms_epsilon", "f32", c["eps"])]
    deq = write_gguf(os.path.join(out, "llama.gguf"), kv, tens)
    # reference on the dequantised weights, un-permuted back to the HF layout
    def unpermute(w, heads):
        return w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    G = {"embed": deq["token_embd.weight"], "norm": deq["output_norm.weight"], "lm_head": deq["output.weight"]}
    for l in range(c["n_layers"]):
        G.update({f"{l}.ln1": deq[f"blk.{l}.attn_norm.weight"],
                  f"{l}.q": unpermute(deq[f"blk.{l}.attn_q.weight"], H),
                  f"{l}.k": unpermute(deq[f"blk.{l}.attn_k.weight"], KV),
                  f"{l}.v": deq[f"blk.{l}.attn_v.weight"], f"{l}.o": deq[f"blk.{l}.attn_output.weight"],
                  f"{l}.ln2": deq[f"blk.{l}.ffn_norm.weight"], f"{l}.gate": deq[f"blk.{l}.ffn_gate.weight"],
                  f"{l}.up": deq[f"blk.{l}.ffn_up.weight"], f"{l}.down": deq[f"blk.{l}.ffn_down.weight"]})
    write_ref(os.path.join(out, "llama_gguf.ref"), c["vocab"], seqs, lambda s: llama_forward(G, c, s))


def make_gpt2(out, rng):
    c = dict(dim=64, n_layers=2, n_heads=4, vocab=101, n_pos=32, eps=1e-5)
    d, F = c["dim"], 4 * c["dim"]
    n = lambda *s: (rng.standard_normal(s) * 0.2).astype(np.float32)
    W = {"wte": n(c["vocab"], d), "wpe": n(c["n_pos"], d), "lnf.w": 1 + n(d) * 0.5, "lnf.b": n(d)}
    for l in range(c["n_layers"]):
        W.update({f"{l}.ln1.w": 1 + n(d) * 0.5, f"{l}.ln1.b": n(d), f"{l}.qkv.w": n(3 * d, d),
                  f"{l}.qkv.b": n(3 * d), f"{l}.proj.w": n(d, d), f"{l}.proj.b": n(d),
                  f"{l}.ln2.w": 1 + n(d) * 0.5, f"{l}.ln2.b": n(d), f"{l}.fc.w": n(F, d),
                  f"{l}.fc.b": n(F), f"{l}.mproj.w": n(d, F), f"{l}.mproj.b": n(d)})
    seqs = [list(rng.integers(0, c["vocab"], size=L)) for L in SEQ_LENS]

    # Hugging Face GPT2Model names (no "transformer." prefix), Conv1D weights [in, out]
    hf = os.path.join(out, "gpt2_hf")
    os.makedirs(hf, exist_ok=True)
    items = [("wte.weight", W["wte"]), ("wpe.weight", W["wpe"])]
    conv = {"qkv": "attn.c_attn", "proj": "attn.c_proj", "fc": "mlp.c_fc", "mproj": "mlp.c_proj"}
    for l in range(c["n_layers"]):
        items += [(f"h.{l}.ln_1.weight", W[f"{l}.ln1.w"]), (f"h.{l}.ln_1.bias", W[f"{l}.ln1.b"]),
                  (f"h.{l}.ln_2.weight", W[f"{l}.ln2.w"]), (f"h.{l}.ln_2.bias", W[f"{l}.ln2.b"]),
                  (f"h.{l}.attn.bias", np.tril(np.ones((c["n_pos"], c["n_pos"]), np.float32))[None, None])]
        for k, v in conv.items():
            items += [(f"h.{l}.{v}.weight", W[f"{l}.{k}.w"].T.copy()), (f"h.{l}.{v}.bias", W[f"{l}.{k}.b"])]
    items += [("ln_f.weight", W["lnf.w"]), ("ln_f.bias", W["lnf.b"])]
    write_safetensors(os.path.join(hf, "model.safetensors"), items)
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": d,
                   "n_layer": c["n_layers"], "n_head": c["n_heads"], "n_positions": c["n_pos"],
                   "n_ctx": c["n_pos"], "vocab_size": c["vocab"], "n_inner": None,
                   "layer_norm_epsilon": c["eps"], "activation_function": "gelu_new",
                   "bos_token_id": 100, "eos_token_id": 100}, f, indent=1)
    # the shape of GPT-2's own tokenizer.json (ByteLevel pre-tokenizer, decoder and
    # post-processor: no BOS added) over a vocabulary that fits vocab = 101, with
    # <|endoftext|> at 100 as config.json says; no tokenizer_config.json
    vocab = {"\u0120": 0}
    for ch in range(33, 127):
        vocab[chr(ch)] = len(vocab)
    merges = ["h e", "\u0120 t", "t h", "\u0120 a", "i n"]
    for mg in merges:
        vocab[mg.replace(" ", "")] = len(vocab)
    vocab["<|endoftext|>"] = 100
    assert len(vocab) == c["vocab"]
    bl = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    with open(os.path.join(hf, "tokenizer.json"), "w") as f:
        json.dump({"version": "1.0", "added_tokens": [{"id": 100, "content": "<|endoftext|>", "special": True}],
                   "normalizer": None, "pre_tokenizer": dict(type="ByteLevel", **bl),
                   "post_processor": dict(type="ByteLevel", **bl), "decoder": dict(type="ByteLevel", **bl),
                   "model": {"type": "BPE", "vocab": vocab, "merges": merges}}, f)
    write_ref(os.path.join(out, "gpt2_hf.ref"), c["vocab"], seqs, lambda s: gpt2_forward(W, c, s))

    # GGUF (llama.cpp gpt2 names, [out, in]); F16 for the block matrices
    tens = [("token_embd.weight", W["wte"], GGML_F32), ("position_embd.weight", W["wpe"], GGML_F32),
            ("output_norm.weight", W["lnf.w"], GGML_F32), ("output_norm.bias", W["lnf.b"], GGML_F32)]
    gn = {"ln1.w": "attn_norm.weight", "ln1.b": "attn_norm.bias", "qkv.w": "attn_qkv.weight",
          "qkv.b": "attn_qkv.bias", "proj.w": "attn_output.weight", "proj.b": "attn_output.bias",
          "ln2.w": "ffn_norm.weight", "ln2.b": "ffn_norm.bias", "fc.w": "ffn_up.weight",
          "fc.b": "ffn_up.bias", "mproj.w": "ffn_down.weight", "mproj.b": "ffn_down.bias"}
    for l in range(c["n_layers"]):
        for k, v in gn.items():
            tens.append((f"blk.{l}.{v}", W[f"{l}.{k}"], GGML_F16 if k.endswith(".w") and k[:2] != "ln" else GGML_F32))
    kv = [("general.architecture", "str", "gpt2"), ("gpt2.context_length", "u32", c["n_pos"]),
          ("gpt2.embedding_length", "u32", d), ("gpt2.feed_forward_length", "u32", F),
          ("gpt2.block_count", "u32", c["n_layers"]), ("gpt2.attention.head_count", "u32", c["n_heads"]),
          ("gpt2.attention.layer_norm_epsilon", "f32", c["eps"])]
    deq = write_gguf(os.path.join(out, "gpt2.gguf"), kv, tens)
    G = {"wte": deq["token_embd.weight"], "wpe": deq["position_embd.weight"],
         "lnf.w": deq["output_norm.weight"], "lnf.b": deq["output_norm.bias"]}
    for l in range(c["n_layers"]):
        for k, v in gn.items():
            G[f"{l}.{k}"] = deq[f"blk.{l}.{v}"]
    write_ref(os.path.join(out, "gpt2_gguf.ref"), c["vocab"], seqs, lambda s: gpt2_forward(G, c, s))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(1234)
    make_llama(out, rng)
    make_gpt2(out, rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())

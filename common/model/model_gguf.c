/* model_gguf: loads llama.cpp GGUF models (general.architecture "llama" or "gpt2";
 * F32/F16/BF16/Q8_0 tensors, dequantised to float32) with the tokenizer from the
 * file's metadata. GGUF llama Q/K rows are in llama.cpp's interleaved RoPE order
 * (its converter permutes Hugging Face weights), so the model uses ROPE_INTERLEAVED. */
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "gguf.h"
#include "model_impl.h"
#include "tokenizer.h"

/* Reads tensor `name` of row-major shape (rows, cols) (1-D when rows == 0) into dst. */
static int read_tensor(const struct gguf *g, const char *name, size_t rows, size_t cols, float *dst)
{
    const struct gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t) {
        log_error("gguf_model_missing_tensor", "name=%s", name);
        return SF_EFORMAT;
    }
    bool ok =
        rows == 0
            ? (t->dims[0] == cols && t->dims[1] == 1 && t->dims[2] == 1 && t->dims[3] == 1)
            : (t->dims[0] == cols && t->dims[1] == rows && t->dims[2] == 1 && t->dims[3] == 1);
    if (!ok) {
        log_error("gguf_model_bad_shape",
                  "name=%s dims=%llux%llux%llux%llu want_rows=%zu want_cols=%zu", name,
                  (unsigned long long)t->dims[0], (unsigned long long)t->dims[1],
                  (unsigned long long)t->dims[2], (unsigned long long)t->dims[3], rows, cols);
        return SF_EFORMAT;
    }
    int rc = gguf_tensor_to_f32(t, dst, (size_t)gguf_tensor_nelem(t));
    if (rc)
        log_error("gguf_model_tensor_type", "name=%s type=%s", name, gguf_ggml_type_name(t->type));
    return rc;
}

static int get_size(const struct gguf *g, const char *arch, const char *key, bool required,
                    size_t def, size_t *out)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    uint64_t v;
    int rc = gguf_get_u64(g, k, &v);
    if (rc == SF_NOTFOUND && !required) {
        *out = def;
        return 0;
    }
    if (rc != 0 || v > ((uint64_t)1 << 32)) {
        log_error("gguf_model_bad_key", "key=%s rc=%d", k, rc);
        return rc ? (rc > 0 ? SF_EFORMAT : rc) : SF_ERANGE;
    }
    *out = (size_t)v;
    return 0;
}

static int get_float(const struct gguf *g, const char *arch, const char *key, float def, float *out)
{
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, key);
    int rc = gguf_get_f32(g, k, out);
    if (rc == SF_NOTFOUND) {
        *out = def;
        return 0;
    }
    if (rc) log_error("gguf_model_bad_key", "key=%s rc=%d", k, rc);
    return rc;
}

static int load_weights(const struct gguf *g, struct model *m)
{
    const struct model_config *c = &m->cfg;
    bool gpt2 = c->arch == MODEL_ARCH_GPT2;
    size_t d = c->dim, q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    size_t hd = c->hidden_dim;
    int rc;
    char n[160];
#define RD(name_fmt, idx, rows, cols, dst)                                                         \
    do {                                                                                           \
        snprintf(n, sizeof n, name_fmt, idx);                                                      \
        if ((rc = read_tensor(g, n, rows, cols, dst))) return rc;                                  \
    } while (0)
    RD("token_embd.weight%.0s", "", c->vocab_size, d, m->tok_emb);
    if (gpt2) RD("position_embd.weight%.0s", "", c->max_seq_len, d, m->pos_emb);
    for (size_t l = 0; l < c->n_layers; l++) {
        struct model_layer *L = &m->layers[l];
        RD("blk.%zu.attn_norm.weight", l, 0, d, L->norm1_w);
        RD("blk.%zu.ffn_norm.weight", l, 0, d, L->norm2_w);
        RD("blk.%zu.attn_output.weight", l, d, q, L->wo);
        RD("blk.%zu.ffn_down.weight", l, d, hd, L->w_down);
        if (gpt2) {
            RD("blk.%zu.attn_norm.bias", l, 0, d, L->norm1_b);
            RD("blk.%zu.ffn_norm.bias", l, 0, d, L->norm2_b);
            RD("blk.%zu.attn_qkv.weight", l, q + 2 * kv, d, L->wqkv);
            RD("blk.%zu.attn_qkv.bias", l, 0, q + 2 * kv, L->bqkv);
            RD("blk.%zu.attn_output.bias", l, 0, d, L->bo);
            RD("blk.%zu.ffn_up.weight", l, hd, d, L->w_up);
            RD("blk.%zu.ffn_up.bias", l, 0, hd, L->b_up);
            RD("blk.%zu.ffn_down.bias", l, 0, d, L->b_down);
        } else {
            RD("blk.%zu.attn_q.weight", l, q, d, L->wqkv);
            RD("blk.%zu.attn_k.weight", l, kv, d, L->wqkv + q * d);
            RD("blk.%zu.attn_v.weight", l, kv, d, L->wqkv + (q + kv) * d);
            RD("blk.%zu.ffn_gate.weight", l, hd, d, L->w_up);
            RD("blk.%zu.ffn_up.weight", l, hd, d, L->w_up + hd * d);
        }
    }
    RD("output_norm.weight%.0s", "", 0, d, m->normf_w);
    if (gpt2) RD("output_norm.bias%.0s", "", 0, d, m->normf_b);
    if (!c->tied_embeddings) RD("output.weight%.0s", "", c->vocab_size, d, m->unembed);
#undef RD
    return 0;
}

static int load_gguf(const struct gguf *g, struct model **out)
{
    const char *arch;
    if (gguf_get_str(g, "general.architecture", &arch, NULL) != 0) {
        log_error("gguf_model_no_arch", "key=general.architecture");
        return SF_EFORMAT;
    }
    struct model_config c;
    if (!strcmp(arch, "llama"))
        model_config_defaults(&c, MODEL_ARCH_LLAMA);
    else if (!strcmp(arch, "gpt2"))
        model_config_defaults(&c, MODEL_ARCH_GPT2);
    else {
        log_error("gguf_model_unsupported_arch", "arch=\"%s\" supported=llama,gpt2", arch);
        return SF_EUNSUP;
    }
    bool gpt2 = c.arch == MODEL_ARCH_GPT2;
    int rc;
    if ((rc = get_size(g, arch, "embedding_length", true, 0, &c.dim)) ||
        (rc = get_size(g, arch, "feed_forward_length", true, 0, &c.hidden_dim)) ||
        (rc = get_size(g, arch, "block_count", true, 0, &c.n_layers)) ||
        (rc = get_size(g, arch, "attention.head_count", true, 0, &c.n_heads)) ||
        (rc = get_size(g, arch, "attention.head_count_kv", false, c.n_heads, &c.n_kv_heads)) ||
        (rc = get_size(g, arch, "context_length", true, 0, &c.max_seq_len)))
        return rc;
    if (c.n_heads == 0 || c.dim % c.n_heads) {
        log_error("gguf_model_bad_heads", "dim=%zu n_heads=%zu", c.dim, c.n_heads);
        return SF_EFORMAT;
    }
    if ((rc = get_size(g, arch, "attention.key_length", false, c.dim / c.n_heads, &c.head_dim)))
        return rc;
    if (gpt2) {
        if ((rc = get_float(g, arch, "attention.layer_norm_epsilon", 1e-5f, &c.norm_eps)))
            return rc;
    } else {
        if ((rc = get_float(g, arch, "attention.layer_norm_rms_epsilon", 1e-5f, &c.norm_eps)) ||
            (rc = get_float(g, arch, "rope.freq_base", 10000.0f, &c.rope_theta)) ||
            (rc = get_size(g, arch, "rope.dimension_count", false, c.head_dim, &c.rope_dim)))
            return rc;
        c.rope_layout = ROPE_INTERLEAVED;
    }
    const struct gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    if (!emb || emb->dims[1] == 0 || emb->dims[1] > ((uint64_t)1 << 32)) {
        log_error("gguf_model_missing_tensor", "name=token_embd.weight");
        return SF_EFORMAT;
    }
    c.vocab_size = (size_t)emb->dims[1];
    /* Tied when output.weight is absent, or a byte-identical copy of the embedding
     * (llama.cpp's llama2.c converter writes both). */
    const struct gguf_tensor *outw = gguf_find_tensor(g, "output.weight");
    c.tied_embeddings = !outw || (outw->type == emb->type && outw->nbytes == emb->nbytes &&
                                  !memcmp(outw->dims, emb->dims, sizeof emb->dims) &&
                                  !memcmp(outw->data, emb->data, emb->nbytes));
    uint32_t id;
    if (gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &id) == 0 && id < c.vocab_size)
        c.bos_id = (int32_t)id;
    if (gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &id) == 0 && id < c.vocab_size)
        c.eos_id = (int32_t)id;
    size_t available = 0;
    for (size_t i = 0; i < gguf_tensor_count(g); i++) {
        uint64_t ne = gguf_tensor_nelem(gguf_tensor_at(g, i));
        available = ne > SIZE_MAX - available ? SIZE_MAX : available + (size_t)ne;
    }
    struct model *m;
    if ((rc = model_alloc(&c, MODEL_FORMAT_GGUF, available, &m))) return rc;
    if ((rc = load_weights(g, m)) || (rc = model_check_weights(m))) {
        model_destroy(&m);
        return rc;
    }
    if (gguf_find(g, "tokenizer.ggml.tokens")) {
        rc = tokenizer_from_gguf(g, &m->tok);
        if (rc) {
            model_destroy(&m);
            return rc;
        }
    }
    *out = m;
    return 0;
}

int model_load_gguf_mem(const void *buf, size_t len, struct model **out)
{
    *out = NULL;
    struct gguf *g;
    int rc = gguf_open_mem(buf, len, &g);
    if (rc) return rc;
    rc = load_gguf(g, out);
    gguf_close(&g);
    return rc;
}

int model_load_gguf(const char *path, struct model **out)
{
    *out = NULL;
    struct gguf *g;
    int rc = gguf_open(path, &g);
    if (rc) return rc;
    rc = load_gguf(g, out);
    if (rc == 0) {
        const char *name = NULL;
        gguf_get_str(g, "general.name", &name, NULL);
        model_set_name(*out, name, path);
    }
    gguf_close(&g);
    if (rc) log_error("model_load_failed", "path=%s format=gguf rc=%d", path, rc);
    return rc;
}

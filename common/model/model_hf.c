/* model_hf: loads Hugging Face models: a directory with config.json and
 * model.safetensors (or shards listed in model.safetensors.index.json) and optionally
 * tokenizer.json; or a single .safetensors file whose __metadata__ carries the config
 * (minGPT exports). model_type "llama"/"mistral" -> Llama with the half-split RoPE
 * layout HF uses; "gpt2" and minGPT's "gpt-*" -> GPT-2. GPT-2 weights may be HF's
 * Conv1D [in, out] or nn.Linear [out, in] (minGPT): told apart by c_attn's shape. */
#include <cjson/cJSON.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/core.h"
#include "model_impl.h"
#include "safetensors/safetensors.h"
#include "tokenizer.h"

#define HF_MAX_SHARDS     1024
#define HF_MAX_JSON_BYTES (64u << 20)

/* ---- config source: config.json (cJSON) or safetensors __metadata__ strings ---- */

struct hf_cfg {
    cJSON *json;                    /* config.json, or NULL */
    const struct safetensors *meta; /* else: metadata of the single file */
};

/* 0, SF_NOTFOUND (absent or null), SF_EFORMAT (wrong type). */
static int cfg_num(const struct hf_cfg *h, const char *key, double *out)
{
    if (h->json) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(h->json, key);
        if (!v || cJSON_IsNull(v)) return SF_NOTFOUND;
        if (cJSON_IsArray(v) && cJSON_GetArraySize(v) > 0) v = cJSON_GetArrayItem(v, 0);
        if (cJSON_IsBool(v)) {
            *out = cJSON_IsTrue(v) ? 1 : 0;
            return 0;
        }
        if (!cJSON_IsNumber(v)) goto bad;
        *out = v->valuedouble;
        return 0;
    }
    const char *s = safetensors_metadata(h->meta, key);
    if (!s) return SF_NOTFOUND;
    if (!strcmp(s, "true") || !strcmp(s, "True"))
        *out = 1;
    else if (!strcmp(s, "false") || !strcmp(s, "False"))
        *out = 0;
    else if (parse_f64(s, out) != 0)
        goto bad;
    return 0;
bad:
    log_error("hf_config_bad_value", "key=%s", key);
    return SF_EFORMAT;
}

static const char *cfg_str(const struct hf_cfg *h, const char *key)
{
    if (h->json) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(h->json, key);
        return cJSON_IsString(v) ? v->valuestring : NULL;
    }
    return safetensors_metadata(h->meta, key);
}

/* A size_t key (first of `keys` present); required unless def_ok. */
static int cfg_size(const struct hf_cfg *h, const char *const *keys, size_t n_keys, bool required,
                    size_t def, size_t *out)
{
    for (size_t i = 0; i < n_keys; i++) {
        double v;
        int rc = cfg_num(h, keys[i], &v);
        if (rc == SF_NOTFOUND) continue;
        if (rc) return rc;
        if (!(v >= 0 && v <= 4294967296.0) || v != (double)(uint64_t)v) {
            log_error("hf_config_bad_value", "key=%s value=%g", keys[i], v);
            return SF_EFORMAT;
        }
        *out = (size_t)v;
        return 0;
    }
    if (required) {
        log_error("hf_config_missing_key", "key=%s", keys[0]);
        return SF_EFORMAT;
    }
    *out = def;
    return 0;
}
#define CFG_SIZE(h, req, def, out, ...)                                                            \
    cfg_size(h, (const char *const[]){__VA_ARGS__},                                                \
             sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *), req, def, out)

static int cfg_float(const struct hf_cfg *h, const char *key, float def, float *out)
{
    double v;
    int rc = cfg_num(h, key, &v);
    if (rc == SF_NOTFOUND) {
        *out = def;
        return 0;
    }
    if (rc == 0 && !(fabs(v) <= FLT_MAX)) {
        log_error("hf_config_bad_value", "key=%s value=%g", key, v);
        return SF_EFORMAT;
    }
    *out = (float)v;
    return rc;
}

/* ---- the weights: one or more safetensors files ---- */

struct shards {
    struct safetensors **st;
    size_t n;
};

static void shards_close(struct shards *s)
{
    for (size_t i = 0; i < s->n; i++) safetensors_close(&s->st[i]);
    free(s->st);
    s->st = NULL;
    s->n = 0;
}

static int shards_add(struct shards *s, const char *path)
{
    if (s->n >= HF_MAX_SHARDS) return SF_ERANGE;
    struct safetensors **v = realloc(s->st, (s->n + 1) * sizeof *v);
    if (!v) return SF_ENOMEM;
    s->st = v;
    int rc = safetensors_open(path, &s->st[s->n]);
    if (rc) return rc;
    s->n++;
    return 0;
}

static size_t shards_numel(const struct shards *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        for (size_t j = 0; j < safetensors_count(s->st[i]); j++) {
            size_t ne = safetensors_at(s->st[i], j)->numel;
            n = ne > SIZE_MAX - n ? SIZE_MAX : n + ne;
        }
    return n;
}

static const struct st_tensor *shards_find(const struct shards *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++) {
        const struct st_tensor *t = safetensors_find(s->st[i], name);
        if (t) return t;
    }
    return NULL;
}

/* Reads `name` into dst as row-major (rows, cols) (1-D of cols when rows == 0). With
 * transpose, the file holds (cols, rows) and dst gets its transpose. */
static int read_w(const struct shards *s, const char *name, size_t rows, size_t cols,
                  bool transpose, float *dst)
{
    const struct st_tensor *t = shards_find(s, name);
    if (!t) {
        log_error("hf_missing_tensor", "name=%s", name);
        return SF_EFORMAT;
    }
    bool ok;
    if (rows == 0)
        ok = t->ndim == 1 && (size_t)t->shape[0] == cols;
    else if (!transpose)
        ok = t->ndim == 2 && (size_t)t->shape[0] == rows && (size_t)t->shape[1] == cols;
    else
        ok = t->ndim == 2 && (size_t)t->shape[0] == cols && (size_t)t->shape[1] == rows;
    if (!ok) {
        log_error("hf_bad_shape", "name=%s ndim=%zu want_rows=%zu want_cols=%zu transpose=%d", name,
                  t->ndim, rows, cols, (int)transpose);
        return SF_EFORMAT;
    }
    if (!transpose || rows == 0) return safetensors_tensor_to_f32(t, dst, t->numel);
    float *tmp = malloc(t->numel * sizeof(float));
    if (!tmp) return SF_ENOMEM;
    int rc = safetensors_tensor_to_f32(t, tmp, t->numel);
    if (rc == 0)
        for (size_t i = 0; i < cols; i++)
            for (size_t j = 0; j < rows; j++) dst[j * cols + i] = tmp[i * rows + j];
    free(tmp);
    return rc;
}

/* ---- Llama ---- */

/* bos_token_id / eos_token_id, when present and inside the vocabulary. */
static int cfg_special_ids(const struct hf_cfg *h, struct model_config *c)
{
    size_t id;
    if (CFG_SIZE(h, false, SIZE_MAX, &id, "bos_token_id") == 0 && id < c->vocab_size)
        c->bos_id = (int32_t)id;
    if (CFG_SIZE(h, false, SIZE_MAX, &id, "eos_token_id") == 0 && id < c->vocab_size)
        c->eos_id = (int32_t)id;
    return 0;
}

static int llama_config(const struct hf_cfg *h, struct model_config *c)
{
    model_config_defaults(c, MODEL_ARCH_LLAMA);
    int rc;
    if ((rc = CFG_SIZE(h, true, 0, &c->dim, "hidden_size")) ||
        (rc = CFG_SIZE(h, true, 0, &c->hidden_dim, "intermediate_size")) ||
        (rc = CFG_SIZE(h, true, 0, &c->n_layers, "num_hidden_layers")) ||
        (rc = CFG_SIZE(h, true, 0, &c->n_heads, "num_attention_heads")) ||
        (rc = CFG_SIZE(h, false, c->n_heads, &c->n_kv_heads, "num_key_value_heads")) ||
        (rc = CFG_SIZE(h, true, 0, &c->vocab_size, "vocab_size")) ||
        (rc = CFG_SIZE(h, false, 2048, &c->max_seq_len, "max_position_embeddings")))
        return rc;
    if (c->n_heads == 0 || c->dim % c->n_heads) {
        log_error("hf_config_invalid", "hidden_size=%zu num_attention_heads=%zu", c->dim,
                  c->n_heads);
        return SF_EFORMAT;
    }
    if ((rc = CFG_SIZE(h, false, c->dim / c->n_heads, &c->head_dim, "head_dim"))) return rc;
    c->rope_dim = c->head_dim;
    c->rope_layout = ROPE_HALF;
    if ((rc = cfg_float(h, "rms_norm_eps", 1e-6f, &c->norm_eps)) ||
        (rc = cfg_float(h, "rope_theta", 10000.0f, &c->rope_theta)))
        return rc;
    double v;
    c->tied_embeddings = cfg_num(h, "tie_word_embeddings", &v) == 0 && v != 0;
    if (h->json) {
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(h->json, "rope_scaling");
        if (rs && !cJSON_IsNull(rs)) {
            log_error("hf_unsupported", "feature=rope_scaling");
            return SF_EUNSUP;
        }
        const cJSON *ab = cJSON_GetObjectItemCaseSensitive(h->json, "attention_bias");
        if (cJSON_IsTrue(ab)) {
            log_error("hf_unsupported", "feature=attention_bias");
            return SF_EUNSUP;
        }
    }
    return cfg_special_ids(h, c);
}

static int llama_weights(const struct shards *s, struct model *m)
{
    const struct model_config *c = &m->cfg;
    size_t d = c->dim, q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    size_t hd = c->hidden_dim;
    char n[256];
    int rc;
#define RD(rows, cols, dst, ...)                                                                   \
    do {                                                                                           \
        snprintf(n, sizeof n, __VA_ARGS__);                                                        \
        if ((rc = read_w(s, n, rows, cols, false, dst))) return rc;                                \
    } while (0)
    RD(c->vocab_size, d, m->tok_emb, "model.embed_tokens.weight");
    for (size_t l = 0; l < c->n_layers; l++) {
        struct model_layer *L = &m->layers[l];
        RD(0, d, L->norm1_w, "model.layers.%zu.input_layernorm.weight", l);
        RD(q, d, L->wqkv, "model.layers.%zu.self_attn.q_proj.weight", l);
        RD(kv, d, L->wqkv + q * d, "model.layers.%zu.self_attn.k_proj.weight", l);
        RD(kv, d, L->wqkv + (q + kv) * d, "model.layers.%zu.self_attn.v_proj.weight", l);
        RD(d, q, L->wo, "model.layers.%zu.self_attn.o_proj.weight", l);
        RD(0, d, L->norm2_w, "model.layers.%zu.post_attention_layernorm.weight", l);
        RD(hd, d, L->w_up, "model.layers.%zu.mlp.gate_proj.weight", l);
        RD(hd, d, L->w_up + hd * d, "model.layers.%zu.mlp.up_proj.weight", l);
        RD(d, hd, L->w_down, "model.layers.%zu.mlp.down_proj.weight", l);
    }
    RD(0, d, m->normf_w, "model.norm.weight");
    if (!c->tied_embeddings) RD(c->vocab_size, d, m->unembed, "lm_head.weight");
#undef RD
    return 0;
}

/* ---- GPT-2 (HF and minGPT) ---- */

static int gpt2_config(const struct hf_cfg *h, struct model_config *c)
{
    model_config_defaults(c, MODEL_ARCH_GPT2);
    int rc;
    if ((rc = CFG_SIZE(h, true, 0, &c->dim, "n_embd", "hidden_size")) ||
        (rc = CFG_SIZE(h, true, 0, &c->n_layers, "n_layer", "num_hidden_layers")) ||
        (rc = CFG_SIZE(h, true, 0, &c->n_heads, "n_head", "num_attention_heads")) ||
        (rc = CFG_SIZE(h, true, 0, &c->vocab_size, "vocab_size")) ||
        (rc = CFG_SIZE(h, true, 0, &c->max_seq_len, "n_positions", "block_size", "n_ctx")))
        return rc;
    if ((rc = CFG_SIZE(h, false, 4 * c->dim, &c->hidden_dim, "n_inner"))) return rc;
    if (c->n_heads == 0 || c->dim % c->n_heads) {
        log_error("hf_config_invalid", "n_embd=%zu n_head=%zu", c->dim, c->n_heads);
        return SF_EFORMAT;
    }
    c->n_kv_heads = c->n_heads;
    c->head_dim = c->dim / c->n_heads;
    if ((rc = cfg_float(h, "layer_norm_epsilon", 1e-5f, &c->norm_eps))) return rc;
    const char *act = cfg_str(h, "activation_function");
    if (act && strcmp(act, "gelu_new") && strcmp(act, "gelu_pytorch_tanh")) {
        log_error("hf_unsupported", "activation_function=%s supported=gelu_new", act);
        return SF_EUNSUP;
    }
    return cfg_special_ids(h, c);
}

static int gpt2_weights(const struct shards *s, const char *pre, bool conv1d, struct model *m)
{
    const struct model_config *c = &m->cfg;
    size_t d = c->dim, hd = c->hidden_dim;
    char n[256];
    int rc;
#define RD(rows, cols, tr, dst, fmt, ...)                                                          \
    do {                                                                                           \
        snprintf(n, sizeof n, "%s" fmt, pre, __VA_ARGS__);                                         \
        if ((rc = read_w(s, n, rows, cols, tr, dst))) return rc;                                   \
    } while (0)
    RD(c->vocab_size, d, false, m->tok_emb, "wte.weight%s", "");
    RD(c->max_seq_len, d, false, m->pos_emb, "wpe.weight%s", "");
    for (size_t l = 0; l < c->n_layers; l++) {
        struct model_layer *L = &m->layers[l];
        RD(0, d, false, L->norm1_w, "h.%zu.ln_1.weight", l);
        RD(0, d, false, L->norm1_b, "h.%zu.ln_1.bias", l);
        RD(3 * d, d, conv1d, L->wqkv, "h.%zu.attn.c_attn.weight", l);
        RD(0, 3 * d, false, L->bqkv, "h.%zu.attn.c_attn.bias", l);
        RD(d, d, conv1d, L->wo, "h.%zu.attn.c_proj.weight", l);
        RD(0, d, false, L->bo, "h.%zu.attn.c_proj.bias", l);
        RD(0, d, false, L->norm2_w, "h.%zu.ln_2.weight", l);
        RD(0, d, false, L->norm2_b, "h.%zu.ln_2.bias", l);
        RD(hd, d, conv1d, L->w_up, "h.%zu.mlp.c_fc.weight", l);
        RD(0, hd, false, L->b_up, "h.%zu.mlp.c_fc.bias", l);
        RD(d, hd, conv1d, L->w_down, "h.%zu.mlp.c_proj.weight", l);
        RD(0, d, false, L->b_down, "h.%zu.mlp.c_proj.bias", l);
    }
    RD(0, d, false, m->normf_w, "ln_f.weight%s", "");
    RD(0, d, false, m->normf_b, "ln_f.bias%s", "");
#undef RD
    if (!c->tied_embeddings)
        return read_w(s, "lm_head.weight", c->vocab_size, d, false, m->unembed);
    return 0;
}

static int load_gpt2(const struct hf_cfg *h, const struct shards *s, struct model **out)
{
    struct model_config c;
    int rc = gpt2_config(h, &c);
    if (rc) return rc;
    /* "transformer." prefix (GPT2LMHeadModel, minGPT) or none (GPT2Model files). */
    const char *pre = shards_find(s, "transformer.wte.weight") ? "transformer." : "";
    char n[64];
    snprintf(n, sizeof n, "%sh.0.attn.c_attn.weight", pre);
    const struct st_tensor *qkv = shards_find(s, n);
    if (!qkv || qkv->ndim != 2) {
        log_error("hf_missing_tensor", "name=%s", n);
        return SF_EFORMAT;
    }
    bool conv1d = (size_t)qkv->shape[0] == c.dim && (size_t)qkv->shape[1] == 3 * c.dim;
    /* A separate lm_head (minGPT) means untied; HF GPT-2 files leave it out. */
    c.tied_embeddings = shards_find(s, "lm_head.weight") == NULL;
    struct model *m;
    if ((rc = model_alloc(&c, MODEL_FORMAT_HF, shards_numel(s), &m))) return rc;
    if ((rc = gpt2_weights(s, pre, conv1d, m)) || (rc = model_check_weights(m))) {
        model_destroy(&m);
        return rc;
    }
    *out = m;
    return 0;
}

static int load_llama(const struct hf_cfg *h, const struct shards *s, struct model **out)
{
    struct model_config c;
    int rc = llama_config(h, &c);
    if (rc) return rc;
    if (c.tied_embeddings == false && !shards_find(s, "lm_head.weight")) c.tied_embeddings = true;
    struct model *m;
    if ((rc = model_alloc(&c, MODEL_FORMAT_HF, shards_numel(s), &m))) return rc;
    if ((rc = llama_weights(s, m)) || (rc = model_check_weights(m))) {
        model_destroy(&m);
        return rc;
    }
    *out = m;
    return 0;
}

static int load_with(const struct hf_cfg *h, const struct shards *s, struct model **out)
{
    const char *type = cfg_str(h, "model_type");
    if (!type) {
        log_error("hf_config_missing_key", "key=model_type");
        return SF_EFORMAT;
    }
    if (!strcmp(type, "llama") || !strcmp(type, "mistral")) return load_llama(h, s, out);
    if (!strcmp(type, "gpt2") || !strncmp(type, "gpt-", 4)) return load_gpt2(h, s, out);
    log_error("hf_unsupported_model_type", "model_type=\"%s\" supported=llama,mistral,gpt2", type);
    return SF_EUNSUP;
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Opens the shards named in model.safetensors.index.json's weight_map. */
static int open_index(const char *dir, const char *index_path, struct shards *s)
{
    char *text = NULL;
    size_t len;
    int rc = file_read_all(index_path, HF_MAX_JSON_BYTES, &text, &len);
    if (rc) return rc;
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *map = j ? cJSON_GetObjectItemCaseSensitive(j, "weight_map") : NULL;
    if (!cJSON_IsObject(map)) {
        log_error("hf_bad_index", "path=%s", index_path);
        cJSON_Delete(j);
        return SF_EFORMAT;
    }
    /* distinct file names, in first-seen order */
    const cJSON *e;
    cJSON_ArrayForEach(e, map)
    {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || e->valuestring[0] == '.') {
            log_error("hf_bad_index", "path=%s reason=\"bad shard name\"", index_path);
            rc = SF_EFORMAT;
            break;
        }
        bool seen = false;
        for (const cJSON *f = map->child; f != e; f = f->next)
            if (!strcmp(f->valuestring, e->valuestring)) seen = true;
        if (seen) continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", dir, e->valuestring);
        if ((rc = shards_add(s, p))) break;
    }
    cJSON_Delete(j);
    return rc;
}

int model_load_safetensors_mem(const void *buf, size_t len, struct model **out)
{
    *out = NULL;
    struct shards s = {0};
    s.st = calloc(1, sizeof *s.st);
    if (!s.st) return SF_ENOMEM;
    int rc = safetensors_open_mem(buf, len, &s.st[0]);
    if (rc) {
        free(s.st);
        return rc;
    }
    s.n = 1;
    struct hf_cfg h = {.meta = s.st[0]};
    rc = load_with(&h, &s, out);
    if (rc == 0) model_set_name(*out, cfg_str(&h, "_name_or_path"), NULL);
    shards_close(&s);
    return rc;
}

/* tokenizer_config.json's add_bos_token, when it has one, decides BOS as it does in
 * transformers (which rebuilds the fast tokenizer's post-processor from it). An
 * unreadable or odd file is left alone with a warning: tokenizer.json still holds. */
static void apply_tokenizer_config(struct tokenizer *t, const char *path)
{
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(path, (size_t)16 << 20, &text, &len) != 0) {
        log_warn("tokenizer_config", "path=%s reason=unreadable", path);
        return;
    }
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *v =
        cJSON_IsObject(root) ? cJSON_GetObjectItemCaseSensitive(root, "add_bos_token") : NULL;
    if (!root) log_warn("tokenizer_config", "path=%s reason=not_json", path);
    if (cJSON_IsBool(v)) {
        if (cJSON_IsTrue(v) && tokenizer_bos(t) < 0)
            log_warn("tokenizer_config", "path=%s reason=\"add_bos_token true but no BOS token\"",
                     path);
        tokenizer_set_add_bos(t, cJSON_IsTrue(v), "tokenizer_config.json add_bos_token");
    }
    cJSON_Delete(root);
}

int model_load_hf(const char *path, struct model **out)
{
    *out = NULL;
    struct shards s = {0};
    struct hf_cfg h = {0};
    char p[4096];
    int rc;
    struct stat st;
    bool dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    if (!dir) {
        /* a single safetensors file with the config in __metadata__ */
        if ((rc = shards_add(&s, path))) goto out;
        h.meta = s.st[0];
    } else {
        snprintf(p, sizeof p, "%s/config.json", path);
        char *text = NULL;
        size_t len;
        if ((rc = file_read_all(p, HF_MAX_JSON_BYTES, &text, &len))) goto out;
        h.json = cJSON_ParseWithLength(text, len);
        free(text);
        if (!cJSON_IsObject(h.json)) {
            log_error("hf_bad_config", "path=%s", p);
            rc = SF_EFORMAT;
            goto out;
        }
        snprintf(p, sizeof p, "%s/model.safetensors", path);
        if (is_file(p)) {
            rc = shards_add(&s, p);
        } else {
            snprintf(p, sizeof p, "%s/model.safetensors.index.json", path);
            if (is_file(p)) {
                rc = open_index(path, p, &s);
            } else {
                log_error("hf_no_weights",
                          "dir=%s want=model.safetensors|model.safetensors.index.json", path);
                rc = SF_EFORMAT;
            }
        }
        if (rc) goto out;
    }
    if ((rc = load_with(&h, &s, out))) goto out;
    model_set_name(*out, cfg_str(&h, "_name_or_path"), path);
    if (dir) {
        snprintf(p, sizeof p, "%s/tokenizer.json", path);
        if (is_file(p) && (rc = tokenizer_load_hf_json(p, &(*out)->tok))) model_destroy(out);
        snprintf(p, sizeof p, "%s/tokenizer_config.json", path);
        if (!rc && (*out)->tok && is_file(p)) apply_tokenizer_config((*out)->tok, p);
    }
out:
    if (rc) log_error("model_load_failed", "path=%s format=hf rc=%d", path, rc);
    shards_close(&s);
    cJSON_Delete(h.json);
    return rc;
}

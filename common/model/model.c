/* model: the model object (config, weight arena, tokenizer), format detection, the
 * llama2.c checkpoint loader and random models. GGUF and Hugging Face loaders are in
 * model_gguf.c and model_hf.c; the forward pass is in forward.c. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "model_impl.h"
#include "tokenizer.h"

/* Bounds on a config: large enough for any real model, small enough that sizes
 * computed from them cannot overflow. */
#define MODEL_MAX_DIM    (1u << 16)
#define MODEL_MAX_HIDDEN (1u << 20)
#define MODEL_MAX_LAYERS 4096u
#define MODEL_MAX_HEADS  1024u
#define MODEL_MAX_VOCAB  (1u << 24)
#define MODEL_MAX_SEQ    (1u << 24)
#define MODEL_MAX_PARAMS ((size_t)1 << 36)

const char *model_arch_name(enum model_arch arch)
{
    return arch == MODEL_ARCH_GPT2 ? "gpt2" : "llama";
}

const char *model_format_name(enum model_format f)
{
    switch (f) {
    case MODEL_FORMAT_LLAMA2C:
        return "llama2c";
    case MODEL_FORMAT_GGUF:
        return "gguf";
    case MODEL_FORMAT_HF:
        return "hf";
    default:
        return "memory";
    }
}

void model_config_defaults(struct model_config *cfg, enum model_arch arch)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->arch = arch;
    cfg->norm_eps = 1e-5f;
    cfg->rope_theta = 10000.0f;
    cfg->rope_layout = ROPE_INTERLEAVED;
    cfg->tied_embeddings = arch == MODEL_ARCH_GPT2;
    cfg->bos_id = -1;
    cfg->eos_id = -1;
}

static int bad_config(const char *why, size_t v)
{
    log_error("model_config_invalid", "reason=\"%s\" value=%zu", why, v);
    return SF_EFORMAT;
}

static int bad_config_f(const char *why, double v)
{
    log_error("model_config_invalid", "reason=\"%s\" value=%g", why, v);
    return SF_EFORMAT;
}

int model_config_check(const struct model_config *c)
{
    if (c->arch != MODEL_ARCH_LLAMA && c->arch != MODEL_ARCH_GPT2)
        return bad_config("unknown architecture", (size_t)c->arch);
    if (c->dim == 0 || c->dim > MODEL_MAX_DIM) return bad_config("dim out of range", c->dim);
    if (c->hidden_dim == 0 || c->hidden_dim > MODEL_MAX_HIDDEN)
        return bad_config("hidden_dim out of range", c->hidden_dim);
    if (c->n_layers == 0 || c->n_layers > MODEL_MAX_LAYERS)
        return bad_config("n_layers out of range", c->n_layers);
    if (c->n_heads == 0 || c->n_heads > MODEL_MAX_HEADS)
        return bad_config("n_heads out of range", c->n_heads);
    if (c->n_kv_heads == 0 || c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
        return bad_config("n_kv_heads must divide n_heads", c->n_kv_heads);
    if (c->head_dim == 0 || c->head_dim > MODEL_MAX_DIM ||
        c->head_dim * c->n_heads > 4 * MODEL_MAX_DIM)
        return bad_config("head_dim out of range", c->head_dim);
    if (c->vocab_size == 0 || c->vocab_size > MODEL_MAX_VOCAB)
        return bad_config("vocab_size out of range", c->vocab_size);
    if (c->max_seq_len == 0 || c->max_seq_len > MODEL_MAX_SEQ)
        return bad_config("max_seq_len out of range", c->max_seq_len);
    if (!(c->norm_eps > 0.0f && c->norm_eps < 1.0f))
        return bad_config_f("norm_eps out of range", (double)c->norm_eps);
    if (c->arch == MODEL_ARCH_LLAMA) {
        if (c->rope_dim == 0 || c->rope_dim % 2 || c->rope_dim > c->head_dim)
            return bad_config("rope_dim must be even and <= head_dim", c->rope_dim);
        if (!(c->rope_theta > 1.0f && c->rope_theta < 1e12f))
            return bad_config_f("rope_theta out of range", (double)c->rope_theta);
        if (c->rope_layout != ROPE_INTERLEAVED && c->rope_layout != ROPE_HALF)
            return bad_config("rope_layout unknown", (size_t)c->rope_layout);
    }
    if (c->bos_id >= (int64_t)c->vocab_size || c->eos_id >= (int64_t)c->vocab_size)
        return bad_config("bos/eos id outside the vocabulary", c->vocab_size);
    return 0;
}

/* Floats of each per-layer tensor; NULL-sized entries are absent for the arch. */
struct layer_sizes {
    size_t norm, qkv_w, qkv_b, wo, bo, up_w, up_b, down_w, down_b;
};

static struct layer_sizes layer_sizes(const struct model_config *c)
{
    bool g = c->arch == MODEL_ARCH_GPT2;
    size_t q = c->n_heads * c->head_dim, kv = c->n_kv_heads * c->head_dim;
    size_t up_rows = g ? c->hidden_dim : 2 * c->hidden_dim;
    struct layer_sizes s = {
        .norm = c->dim,
        .qkv_w = (q + 2 * kv) * c->dim,
        .qkv_b = g ? q + 2 * kv : 0,
        .wo = c->dim * q,
        .bo = g ? c->dim : 0,
        .up_w = up_rows * c->dim,
        .up_b = g ? c->hidden_dim : 0,
        .down_w = c->dim * c->hidden_dim,
        .down_b = g ? c->dim : 0,
    };
    return s;
}

/* Total floats of the arena (bounded by the config limits, so no overflow). */
static size_t arena_floats(const struct model_config *c)
{
    struct layer_sizes s = layer_sizes(c);
    bool g = c->arch == MODEL_ARCH_GPT2;
    size_t per = s.norm * (g ? 4 : 2) + s.qkv_w + s.qkv_b + s.wo + s.bo + s.up_w + s.up_b +
                 s.down_w + s.down_b;
    size_t n = c->vocab_size * c->dim + per * c->n_layers + c->dim * (g ? 2 : 1);
    if (g) n += c->max_seq_len * c->dim;
    if (!c->tied_embeddings) n += c->vocab_size * c->dim;
    return n;
}

int model_alloc(const struct model_config *cfg, enum model_format format, size_t available,
                struct model **out)
{
    *out = NULL;
    int rc = model_config_check(cfg);
    if (rc) return rc;
    size_t n = arena_floats(cfg);
    if (n > MODEL_MAX_PARAMS) return bad_config("too many parameters", n);
    if (n > available) {
        /* every weight comes from the file: a config asking for more is lying, and
         * must not make us allocate for it */
        log_error("model_config_invalid",
                  "reason=\"config needs more weights than the file holds\" "
                  "need=%zu have=%zu",
                  n, available);
        return SF_EFORMAT;
    }
    struct model *m = calloc(1, sizeof *m);
    if (!m) return SF_ENOMEM;
    m->cfg = *cfg;
    m->format = format;
    m->layers = calloc(cfg->n_layers, sizeof *m->layers);
    m->arena = calloc(n, sizeof(float));
    if (!m->layers || !m->arena) {
        log_error("model_oom", "floats=%zu", n);
        model_destroy(&m);
        return SF_ENOMEM;
    }
    m->arena_len = n;
    m->n_params = n;
    float *p = m->arena;
#define TAKE(k) (p += (k), p - (k))
    bool g = cfg->arch == MODEL_ARCH_GPT2;
    struct layer_sizes s = layer_sizes(cfg);
    m->tok_emb = TAKE(cfg->vocab_size * cfg->dim);
    if (g) m->pos_emb = TAKE(cfg->max_seq_len * cfg->dim);
    for (size_t l = 0; l < cfg->n_layers; l++) {
        struct model_layer *L = &m->layers[l];
        L->norm1_w = TAKE(s.norm);
        L->norm1_b = g ? TAKE(s.norm) : NULL;
        L->wqkv = TAKE(s.qkv_w);
        L->bqkv = g ? TAKE(s.qkv_b) : NULL;
        L->wo = TAKE(s.wo);
        L->bo = g ? TAKE(s.bo) : NULL;
        L->norm2_w = TAKE(s.norm);
        L->norm2_b = g ? TAKE(s.norm) : NULL;
        L->w_up = TAKE(s.up_w);
        L->b_up = g ? TAKE(s.up_b) : NULL;
        L->w_down = TAKE(s.down_w);
        L->b_down = g ? TAKE(s.down_b) : NULL;
    }
    m->normf_w = TAKE(cfg->dim);
    m->normf_b = g ? TAKE(cfg->dim) : NULL;
    m->unembed = cfg->tied_embeddings ? m->tok_emb : TAKE(cfg->vocab_size * cfg->dim);
#undef TAKE
    if ((size_t)(p - m->arena) != n) {
        log_error("model_arena_mismatch", "used=%zu size=%zu", (size_t)(p - m->arena), n);
        model_destroy(&m);
        return SF_ERR;
    }
    *out = m;
    return 0;
}

/* Names the tensor holding arena element `at` and its offset in that tensor, walking
 * the layout of model_alloc. */
static void arena_tensor_name(const struct model *m, size_t at, char *out, size_t cap,
                              size_t *offset)
{
    const struct model_config *c = &m->cfg;
    bool g = c->arch == MODEL_ARCH_GPT2;
    struct layer_sizes s = layer_sizes(c);
    const struct {
        const char *name;
        size_t n;
    } per[] = {
        {"ln_1.weight", s.norm},    {"ln_1.bias", g ? s.norm : 0}, {"attn.qkv.weight", s.qkv_w},
        {"attn.qkv.bias", s.qkv_b}, {"attn.out.weight", s.wo},     {"attn.out.bias", s.bo},
        {"ln_2.weight", s.norm},    {"ln_2.bias", g ? s.norm : 0}, {"mlp.up.weight", s.up_w},
        {"mlp.up.bias", s.up_b},    {"mlp.down.weight", s.down_w}, {"mlp.down.bias", s.down_b}};
    size_t pos = 0, n = c->vocab_size * c->dim;
    *offset = 0;
    if (at < pos + n) {
        snprintf(out, cap, "token_embedding");
        *offset = at - pos;
        return;
    }
    pos += n;
    if (g) {
        n = c->max_seq_len * c->dim;
        if (at < pos + n) {
            snprintf(out, cap, "position_embedding");
            *offset = at - pos;
            return;
        }
        pos += n;
    }
    for (size_t l = 0; l < c->n_layers; l++) {
        for (size_t i = 0; i < SF_ARRAY_LEN(per); i++) {
            if (at < pos + per[i].n) {
                snprintf(out, cap, "blocks.%zu.%s", l, per[i].name);
                *offset = at - pos;
                return;
            }
            pos += per[i].n;
        }
    }
    n = c->dim * (g ? 2 : 1);
    if (at < pos + n) {
        snprintf(out, cap, "final_norm");
        *offset = at - pos;
        return;
    }
    pos += n;
    snprintf(out, cap, "unembedding");
    *offset = at - pos;
}

int model_check_weights(const struct model *m)
{
    const uint32_t *u = (const uint32_t *)(const void *)m->arena;
    size_t n = m->arena_len;
    /* exponent all ones = NaN or +-inf; the OR reduction vectorises, so the common
     * (clean) case costs one streaming read of the weights */
    uint32_t bad = 0;
    for (size_t i = 0; i < n; i++) bad |= (uint32_t)((u[i] & 0x7f800000u) == 0x7f800000u);
    if (!bad) return 0;
    size_t first = SIZE_MAX, count = 0;
    for (size_t i = 0; i < n; i++) {
        if ((u[i] & 0x7f800000u) != 0x7f800000u) continue;
        if (first == SIZE_MAX) first = i;
        count++;
    }
    char name[96];
    size_t off;
    arena_tensor_name(m, first, name, sizeof name, &off);
    log_error("model_weights_not_finite",
              "tensor=%s index=%zu value=%g bad=%zu of=%zu "
              "reason=\"the model file holds NaN or infinite weights: it is corrupt or was "
              "saved from a diverged run\"",
              name, off, (double)m->arena[first], count, n);
    return SF_EFORMAT;
}

void model_destroy(struct model **pm)
{
    if (!pm || !*pm) return;
    struct model *m = *pm;
    tokenizer_destroy(&m->tok);
    free(m->layers);
    free(m->arena);
    free(m);
    *pm = NULL;
}

const struct model_config *model_config(const struct model *m)
{
    return &m->cfg;
}
const char *model_name(const struct model *m)
{
    return m->name;
}

void model_set_name(struct model *m, const char *s, const char *path)
{
    if (s && *s) {
        snprintf(m->name, sizeof m->name, "%s", s);
        return;
    }
    if (!path) return;
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    size_t start = len;
    while (start > 0 && path[start - 1] != '/') start--;
    size_t end = len;
    for (size_t i = len; i > start; i--)
        if (path[i - 1] == '.') {
            end = i - 1;
            break;
        }
    if (end == start) end = len;
    snprintf(m->name, sizeof m->name, "%.*s", (int)(end - start), path + start);
}

enum model_format model_format(const struct model *m)
{
    return m->format;
}
size_t model_param_count(const struct model *m)
{
    return m->n_params;
}
const struct tokenizer *model_tokenizer(const struct model *m)
{
    return m->tok;
}
const float *model_unembed(const struct model *m)
{
    return m->unembed;
}
const float *model_final_norm_weight(const struct model *m)
{
    return m->normf_w;
}
const float *model_final_norm_bias(const struct model *m)
{
    return m->normf_b;
}
const float *model_token_embedding(const struct model *m)
{
    return m->tok_emb;
}

size_t model_weight_bytes_per_token(const struct model *m)
{
    /* Everything but the embedding tables, plus one row of each, plus the
     * unembedding (read whole for the logits). */
    const struct model_config *c = &m->cfg;
    size_t n = m->arena_len - c->vocab_size * c->dim + c->dim;
    if (m->pos_emb) n -= (c->max_seq_len - 1) * c->dim;
    if (c->tied_embeddings) n += c->vocab_size * c->dim;
    return n * sizeof(float);
}

/* ---- random models ---- */

int model_new_random(const struct model_config *cfg, uint64_t seed, float std, struct model **out)
{
    int rc = model_alloc(cfg, MODEL_FORMAT_MEMORY, SIZE_MAX, out);
    if (rc) return rc;
    struct model *m = *out;
    struct rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < m->arena_len; i++) m->arena[i] = rng_normal(&r) * std;
    size_t d = cfg->dim;
    for (size_t l = 0; l < cfg->n_layers; l++) {
        struct model_layer *L = &m->layers[l];
        for (size_t i = 0; i < d; i++) L->norm1_w[i] = L->norm2_w[i] = 1.0f;
        if (L->norm1_b) memset(L->norm1_b, 0, d * sizeof(float));
        if (L->norm2_b) memset(L->norm2_b, 0, d * sizeof(float));
    }
    for (size_t i = 0; i < d; i++) m->normf_w[i] = 1.0f;
    if (m->normf_b) memset(m->normf_b, 0, d * sizeof(float));
    return 0;
}

/* ---- llama2.c checkpoints ---- */

/* Copies n floats from the file cursor (unaligned, little-endian host assumed). */
static const unsigned char *take_f32(float *dst, const unsigned char *src, size_t n)
{
    memcpy(dst, src, n * sizeof(float));
    return src + n * sizeof(float);
}

int model_load_llama2c_mem(const void *buf, size_t len, struct model **out)
{
    *out = NULL;
    int32_t h[7];
    if (!buf || len < sizeof h) {
        log_error("llama2c_truncated", "bytes=%zu need=%zu", len, sizeof h);
        return SF_EFORMAT;
    }
    memcpy(h, buf, sizeof h);
    for (int i = 0; i < 7; i++) {
        if (h[i] == 0 || (h[i] < 0 && i != 5) || h[i] == INT32_MIN) {
            log_error("llama2c_bad_header", "field=%d value=%d", i, (int)h[i]);
            return SF_EFORMAT;
        }
    }
    struct model_config c;
    model_config_defaults(&c, MODEL_ARCH_LLAMA);
    c.dim = (size_t)h[0];
    c.hidden_dim = (size_t)h[1];
    c.n_layers = (size_t)h[2];
    c.n_heads = (size_t)h[3];
    c.n_kv_heads = (size_t)h[4];
    c.vocab_size = (size_t)(h[5] < 0 ? -h[5] : h[5]);
    c.tied_embeddings = h[5] > 0;
    c.max_seq_len = (size_t)h[6];
    if (c.dim % c.n_heads) {
        log_error("llama2c_bad_header",
                  "reason=\"dim not a multiple of n_heads\" dim=%zu n_heads=%zu", c.dim, c.n_heads);
        return SF_EFORMAT;
    }
    c.head_dim = c.dim / c.n_heads;
    c.rope_dim = c.head_dim;
    c.bos_id = c.vocab_size > 1 ? 1 : -1;
    c.eos_id = c.vocab_size > 2 ? 2 : -1;
    int rc = model_config_check(&c);
    if (rc) return rc;

    /* Everything is bounded by the config limits: these products cannot overflow. */
    size_t d = c.dim, L = c.n_layers, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
    size_t hd = c.hidden_dim;
    size_t need = c.vocab_size * d + L * d + L * q * d + 2 * L * kv * d + L * d * q + L * d +
                  3 * L * hd * d + d + c.max_seq_len * c.head_dim; /* + freq_cis real/imag */
    if (!c.tied_embeddings) need += c.vocab_size * d;
    size_t have = (len - sizeof h) / sizeof(float);
    if (need > have) {
        log_error("llama2c_truncated", "floats=%zu need=%zu", have, need);
        return SF_EFORMAT;
    }
    struct model *m;
    rc = model_alloc(&c, MODEL_FORMAT_LLAMA2C, need, &m);
    if (rc) return rc;
    const unsigned char *p = (const unsigned char *)buf + sizeof h;
    p = take_f32(m->tok_emb, p, c.vocab_size * d);
    for (size_t l = 0; l < L; l++) p = take_f32(m->layers[l].norm1_w, p, d);
    for (size_t l = 0; l < L; l++) p = take_f32(m->layers[l].wqkv, p, q * d);
    for (size_t l = 0; l < L; l++) p = take_f32(m->layers[l].wqkv + q * d, p, kv * d);
    for (size_t l = 0; l < L; l++) p = take_f32(m->layers[l].wqkv + (q + kv) * d, p, kv * d);
    for (size_t l = 0; l < L; l++) p = take_f32(m->layers[l].wo, p, d * q);
    for (size_t l = 0; l < L; l++) p = take_f32(m->layers[l].norm2_w, p, d);
    for (size_t l = 0; l < L; l++) p = take_f32(m->layers[l].w_up, p, hd * d);   /* w1: gate */
    for (size_t l = 0; l < L; l++) p = take_f32(m->layers[l].w_down, p, d * hd); /* w2 */
    for (size_t l = 0; l < L; l++) p = take_f32(m->layers[l].w_up + hd * d, p, hd * d); /* w3 */
    p = take_f32(m->normf_w, p, d);
    p += c.max_seq_len * c.head_dim * sizeof(float); /* legacy freq_cis_real / imag */
    if (!c.tied_embeddings) take_f32(m->unembed, p, c.vocab_size * d);
    if ((rc = model_check_weights(m))) {
        model_destroy(&m);
        return rc;
    }
    *out = m;
    return 0;
}

/* Maps a file read-only; *len = 0 maps nothing. */
static int map_file(const char *path, void **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        log_error("model_open_failed", "path=%s err=\"%s\"", path, strerror(errno));
        return SF_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        log_error("model_open_failed", "path=%s err=\"not a regular file\"", path);
        close(fd);
        return SF_EIO;
    }
    if (st.st_size > 0) {
        void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            log_error("model_mmap_failed", "path=%s err=\"%s\"", path, strerror(errno));
            close(fd);
            return SF_EIO;
        }
        *data = p;
        *len = (size_t)st.st_size;
    }
    close(fd);
    return 0;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Finds tok512.bin / tokenizer.bin in the model's directory. */
static int default_tokenizer_path(const char *model_path, char *buf, size_t cap)
{
    static const char *names[] = {"tok512.bin", "tokenizer.bin"};
    const char *slash = strrchr(model_path, '/');
    int dlen = slash ? (int)(slash - model_path) : 1;
    const char *dir = slash ? model_path : ".";
    for (size_t i = 0; i < SF_ARRAY_LEN(names); i++) {
        int n = snprintf(buf, cap, "%.*s/%s", dlen, dir, names[i]);
        if (n > 0 && (size_t)n < cap && file_exists(buf)) return 0;
    }
    return SF_NOTFOUND;
}

static int load_llama2c(const char *path, const struct model_load_opts *opts, struct model **out)
{
    void *data;
    size_t len;
    int rc = map_file(path, &data, &len);
    if (rc) return rc;
    rc = model_load_llama2c_mem(data, len, out);
    if (data) munmap(data, len);
    if (rc) {
        log_error("model_load_failed", "path=%s format=llama2c rc=%d", path, rc);
        return rc;
    }
    model_set_name(*out, NULL, path);
    if (opts && opts->no_tokenizer) return 0;
    char tpath[4096];
    const char *tp = opts ? opts->tokenizer_path : NULL;
    if (!tp) {
        if (default_tokenizer_path(path, tpath, sizeof tpath) != 0) {
            log_info("model_no_tokenizer", "path=%s", path);
            return 0;
        }
        tp = tpath;
    }
    rc = tokenizer_load_llama2c(tp, &(*out)->tok);
    if (rc) {
        model_destroy(out);
        return rc;
    }
    return 0;
}

int model_load(const char *path, const struct model_load_opts *opts, struct model **out)
{
    *out = NULL;
    struct stat st;
    if (!path || stat(path, &st) != 0) {
        log_error("model_open_failed", "path=%s err=\"%s\"", path ? path : "(null)",
                  strerror(errno));
        return SF_EIO;
    }
    int rc;
    if (S_ISDIR(st.st_mode)) {
        rc = model_load_hf(path, out);
    } else {
        unsigned char magic[9] = {0};
        FILE *f = fopen(path, "rb");
        if (!f) {
            log_error("model_open_failed", "path=%s err=\"%s\"", path, strerror(errno));
            return SF_EIO;
        }
        size_t got = fread(magic, 1, sizeof magic, f);
        fclose(f);
        if (got >= 4 && !memcmp(magic, "GGUF", 4))
            rc = model_load_gguf(path, out);
        else if (got == 9 && magic[8] == '{' && magic[6] == 0 && magic[7] == 0)
            rc = model_load_hf(path, out); /* safetensors: u64 header length, then JSON */
        else
            return load_llama2c(path, opts, out);
    }
    if (rc == 0 && opts && opts->no_tokenizer) tokenizer_destroy(&(*out)->tok);
    return rc;
}

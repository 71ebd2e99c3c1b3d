/* model_cuda: the batched forward pass on a CUDA device (see model_cuda.h). It mirrors
 * forward.c step for step (same packing of every token of a call as rows, same hook
 * points, same cache layout) with the ops of tensor/ops_cuda.h; only the KV cache, the
 * weights and the activations live on the device. Host-side validation is the same as
 * model_forward's so that both backends refuse the same calls. */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "model/model_cuda.h"
#include "model/model_impl.h"
#include "tensor/ops_cuda.h"

struct cuda_hook {
    model_hook_fn host;
    model_cuda_hook_fn dev;
    void *user;
    bool writes;
};
struct cuda_hook_list {
    struct cuda_hook *v;
    size_t n, cap;
};

/* One block's weights as device pointers (NULL where the host has NULL). */
struct dlayer {
    const float *norm1_w, *norm1_b, *wqkv, *bqkv, *wo, *bo;
    const float *norm2_w, *norm2_b, *w_up, *b_up, *w_down, *b_down;
};

struct model_cuda {
    const struct model *m;
    struct cuda_ctx *ctx;
    enum cuda_math math;
    size_t n_slots, max_len;
    size_t *len;            /* (n_slots) tokens held per slot */
    unsigned char *mark;    /* (n_slots) repeated-slot check */
    struct cuda_buf arena;  /* every weight, laid out as the host arena */
    struct cuda_buf kc, vc; /* (n_layers, n_slots, max_len, kv_dim) */
    struct dlayer *L;
    const float *tok_emb, *pos_emb, *normf_w, *normf_b, *unembed;
    struct cuda_hook_list *hooks; /* (n_layers * MODEL_HOOK_COUNT) */
    size_t n_hooks, last_hooked;
    /* per-call rows, capacity cap_rows */
    size_t cap_rows;
    struct cuda_buf x, xb, qkv, att, ff, ffh, idx, logits;
    size_t *seq, *slot, *pos, *kv_off, *n_ctx, *last; /* host */
    int32_t *tok;
    float *hx; /* host copy of an activation for host hooks (cap_rows, dim) */
};

static size_t q_dim(const struct model_config *c)
{
    return c->n_heads * c->head_dim;
}
static size_t kv_dim(const struct model_config *c)
{
    return c->n_kv_heads * c->head_dim;
}
static size_t up_rows(const struct model_config *c)
{
    return c->arch == MODEL_ARCH_GPT2 ? c->hidden_dim : 2 * c->hidden_dim;
}

/* The device address of a host weight (all weights live in the host arena). */
static int dev_ptr(const struct model_cuda *g, const float *h, const float **out)
{
    *out = NULL;
    if (!h) return 0;
    const struct model *m = g->m;
    if (h < m->arena || h >= m->arena + m->arena_len) {
        log_error("model_cuda_weight_outside_arena", "reason=\"unsupported model layout\"");
        return SF_EUNSUP;
    }
    *out = (const float *)g->arena.ptr + (h - m->arena);
    return 0;
}

static void free_rows(struct model_cuda *g)
{
    cuda_buf_free(&g->x);
    cuda_buf_free(&g->xb);
    cuda_buf_free(&g->qkv);
    cuda_buf_free(&g->att);
    cuda_buf_free(&g->ff);
    cuda_buf_free(&g->ffh);
    cuda_buf_free(&g->idx);
    free(g->seq);
    free(g->slot);
    free(g->pos);
    free(g->kv_off);
    free(g->n_ctx);
    free(g->last);
    free(g->tok);
    free(g->hx);
    g->seq = g->slot = g->pos = g->kv_off = g->n_ctx = g->last = NULL;
    g->tok = NULL;
    g->hx = NULL;
    g->cap_rows = 0;
}

void model_cuda_destroy(struct model_cuda **pg)
{
    if (!pg || !*pg) return;
    struct model_cuda *g = *pg;
    if (g->ctx) cuda_ctx_sync(g->ctx);
    if (g->hooks)
        for (size_t i = 0; i < g->m->cfg.n_layers * MODEL_HOOK_COUNT; i++) free(g->hooks[i].v);
    free(g->hooks);
    free_rows(g);
    cuda_buf_free(&g->logits);
    cuda_buf_free(&g->arena);
    cuda_buf_free(&g->kc);
    cuda_buf_free(&g->vc);
    free(g->L);
    free(g->len);
    free(g->mark);
    free(g);
    *pg = NULL;
}

int model_cuda_new(const struct model *m, struct cuda_ctx *ctx, enum cuda_math math, size_t n_slots,
                   size_t max_len, struct model_cuda **out)
{
    *out = NULL;
    if (!m || !ctx) return SF_EINVAL;
    const struct model_config *cfg = &m->cfg;
    if (max_len == 0) max_len = cfg->max_seq_len;
    if (n_slots == 0 || (cfg->arch == MODEL_ARCH_GPT2 && max_len > cfg->max_seq_len)) {
        log_error("model_cuda_invalid", "n_slots=%zu max_len=%zu model_max=%zu", n_slots, max_len,
                  cfg->max_seq_len);
        return SF_EINVAL;
    }
    if (cfg->head_dim > OPS_CUDA_MAX_HEAD_DIM) {
        log_error("model_cuda_unsupported", "head_dim=%zu max=%d", cfg->head_dim,
                  OPS_CUDA_MAX_HEAD_DIM);
        return SF_EUNSUP;
    }
    size_t per_slot, per_layer, total;
    if (!size_mul_ok(max_len, kv_dim(cfg), &per_slot) ||
        !size_mul_ok(per_slot, n_slots, &per_layer) ||
        !size_mul_ok(per_layer, cfg->n_layers, &total) || total > ((size_t)1 << 36)) {
        log_error("model_cuda_too_large", "n_slots=%zu max_len=%zu", n_slots, max_len);
        return SF_EINVAL;
    }
    struct model_cuda *g = calloc(1, sizeof *g);
    if (!g) return SF_ENOMEM;
    g->m = m;
    g->ctx = ctx;
    g->math = math;
    g->n_slots = n_slots;
    g->max_len = max_len;
    g->len = calloc(n_slots, sizeof *g->len);
    g->mark = calloc(n_slots, 1);
    g->L = calloc(cfg->n_layers, sizeof *g->L);
    g->hooks = calloc(cfg->n_layers * MODEL_HOOK_COUNT, sizeof *g->hooks);
    int rc = 0;
    if (!g->len || !g->mark || !g->L || !g->hooks) rc = SF_ENOMEM;
    if (!rc) rc = cuda_buf_alloc(&g->arena, m->arena_len * sizeof(float));
    if (!rc) rc = cuda_buf_upload(ctx, &g->arena, 0, m->arena, m->arena_len * sizeof(float));
    if (!rc) rc = cuda_buf_alloc(&g->kc, total * sizeof(float));
    if (!rc) rc = cuda_buf_alloc(&g->vc, total * sizeof(float));
    if (!rc) rc = dev_ptr(g, m->tok_emb, &g->tok_emb);
    if (!rc) rc = dev_ptr(g, m->pos_emb, &g->pos_emb);
    if (!rc) rc = dev_ptr(g, m->normf_w, &g->normf_w);
    if (!rc) rc = dev_ptr(g, m->normf_b, &g->normf_b);
    if (!rc) rc = dev_ptr(g, m->unembed, &g->unembed);
    for (size_t l = 0; l < cfg->n_layers && !rc; l++) {
        const struct model_layer *h = &m->layers[l];
        struct dlayer *d = &g->L[l];
        if ((rc = dev_ptr(g, h->norm1_w, &d->norm1_w)) ||
            (rc = dev_ptr(g, h->norm1_b, &d->norm1_b)) || (rc = dev_ptr(g, h->wqkv, &d->wqkv)) ||
            (rc = dev_ptr(g, h->bqkv, &d->bqkv)) || (rc = dev_ptr(g, h->wo, &d->wo)) ||
            (rc = dev_ptr(g, h->bo, &d->bo)) || (rc = dev_ptr(g, h->norm2_w, &d->norm2_w)) ||
            (rc = dev_ptr(g, h->norm2_b, &d->norm2_b)) || (rc = dev_ptr(g, h->w_up, &d->w_up)) ||
            (rc = dev_ptr(g, h->b_up, &d->b_up)) || (rc = dev_ptr(g, h->w_down, &d->w_down)) ||
            (rc = dev_ptr(g, h->b_down, &d->b_down)))
            break;
    }
    if (!rc) rc = cuda_ctx_sync(ctx);
    if (rc) {
        log_error("model_cuda_new_failed", "rc=%d params=%zu kv_floats=%zu", rc, m->arena_len,
                  2 * total);
        model_cuda_destroy(&g);
        return rc;
    }
    *out = g;
    return 0;
}

size_t model_cuda_slots(const struct model_cuda *g)
{
    return g->n_slots;
}
size_t model_cuda_max_len(const struct model_cuda *g)
{
    return g->max_len;
}
size_t model_cuda_len(const struct model_cuda *g, size_t slot)
{
    return slot < g->n_slots ? g->len[slot] : 0;
}
void model_cuda_reset(struct model_cuda *g, size_t slot)
{
    if (slot < g->n_slots) g->len[slot] = 0;
}
void model_cuda_reset_all(struct model_cuda *g)
{
    memset(g->len, 0, g->n_slots * sizeof *g->len);
}
int model_cuda_truncate(struct model_cuda *g, size_t slot, size_t len)
{
    if (slot >= g->n_slots || len > g->len[slot]) return SF_EINVAL;
    g->len[slot] = len;
    return 0;
}

/* ---- hooks ---- */

static int add_hook(struct model_cuda *g, size_t layer, enum model_hook_point point,
                    struct cuda_hook h)
{
    if ((!h.host && !h.dev) || layer >= g->m->cfg.n_layers || (unsigned)point >= MODEL_HOOK_COUNT)
        return SF_EINVAL;
    struct cuda_hook_list *hl = &g->hooks[layer * MODEL_HOOK_COUNT + point];
    if (hl->n == hl->cap) {
        size_t cap = hl->cap ? 2 * hl->cap : 2;
        struct cuda_hook *v = realloc(hl->v, cap * sizeof *v);
        if (!v) return SF_ENOMEM;
        hl->v = v;
        hl->cap = cap;
    }
    hl->v[hl->n++] = h;
    if (g->n_hooks == 0 || layer > g->last_hooked) g->last_hooked = layer;
    g->n_hooks++;
    return 0;
}

int model_cuda_add_hook_at(struct model_cuda *g, size_t layer, enum model_hook_point point,
                           model_hook_fn fn, void *user, bool writes)
{
    return add_hook(g, layer, point, (struct cuda_hook){fn, NULL, user, writes});
}

int model_cuda_add_hook(struct model_cuda *g, const char *name, model_hook_fn fn, void *user,
                        bool writes)
{
    size_t layer;
    enum model_hook_point point;
    int rc = model_hook_parse(name, g->m->cfg.n_layers, &layer, &point);
    if (rc) return rc;
    return model_cuda_add_hook_at(g, layer, point, fn, user, writes);
}

int model_cuda_add_device_hook_at(struct model_cuda *g, size_t layer, enum model_hook_point point,
                                  model_cuda_hook_fn fn, void *user)
{
    return add_hook(g, layer, point, (struct cuda_hook){NULL, fn, user, true});
}

void model_cuda_clear_hooks(struct model_cuda *g)
{
    for (size_t i = 0; i < g->m->cfg.n_layers * MODEL_HOOK_COUNT; i++) g->hooks[i].n = 0;
    g->n_hooks = 0;
    g->last_hooked = 0;
}

static int run_hooks(struct model_cuda *g, size_t layer, enum model_hook_point point, float *xdev,
                     size_t T)
{
    const struct cuda_hook_list *hl = &g->hooks[layer * MODEL_HOOK_COUNT + point];
    if (hl->n == 0) return 0;
    const size_t d = g->m->cfg.dim;
    char name[64];
    model_hook_name(layer, point, name, sizeof name);
    struct model_act a = {
        .name = name,
        .layer = layer,
        .point = point,
        .n_tokens = T,
        .d = d,
        .seq = g->seq,
        .slot = g->slot,
        .pos = g->pos,
        .tokens = g->tok,
    };
    bool host_fresh = false; /* g->hx holds the current activation */
    for (size_t i = 0; i < hl->n; i++) {
        const struct cuda_hook *h = &hl->v[i];
        int rc;
        if (h->dev) {
            a.x = xdev;
            rc = h->dev(h->user, &a, g->ctx);
            host_fresh = false;
        } else {
            if (!host_fresh) {
                rc = cuda_memcpy_d2h(g->ctx, g->hx, xdev, T * d * sizeof(float));
                if (rc) return rc;
                host_fresh = true;
            }
            a.x = g->hx;
            rc = h->host(h->user, &a);
            if (rc == 0 && h->writes)
                rc = cuda_memcpy_h2d(g->ctx, xdev, g->hx, T * d * sizeof(float));
        }
        if (rc) {
            log_warn("model_hook_stopped", "hook=%s rc=%d backend=cuda", name, rc);
            return rc;
        }
    }
    return 0;
}

/* ---- the forward pass ---- */

/* Grows the per-row scratch (device and host) to hold T rows. */
static int ensure_rows(struct model_cuda *g, size_t T)
{
    if (T <= g->cap_rows) return 0;
    const struct model_config *cfg = &g->m->cfg;
    size_t cap = SF_MAX(T, 2 * g->cap_rows);
    free_rows(g);
    const size_t f = sizeof(float);
    int rc = 0;
    if ((rc = cuda_buf_alloc(&g->x, cap * cfg->dim * f)) ||
        (rc = cuda_buf_alloc(&g->xb, cap * cfg->dim * f)) ||
        (rc = cuda_buf_alloc(&g->qkv, cap * (q_dim(cfg) + 2 * kv_dim(cfg)) * f)) ||
        (rc = cuda_buf_alloc(&g->att, cap * q_dim(cfg) * f)) ||
        (rc = cuda_buf_alloc(&g->ff, cap * up_rows(cfg) * f)) ||
        (rc = cuda_buf_alloc(&g->ffh, cap * cfg->hidden_dim * f)) ||
        (rc = cuda_buf_alloc(&g->idx, cap * (4 * sizeof(size_t) + sizeof(int32_t))))) {
        free_rows(g);
        return rc;
    }
    g->seq = malloc(cap * sizeof(size_t));
    g->slot = malloc(cap * sizeof(size_t));
    g->pos = malloc(cap * sizeof(size_t));
    g->kv_off = malloc(cap * sizeof(size_t));
    g->n_ctx = malloc(cap * sizeof(size_t));
    g->last = malloc(cap * sizeof(size_t));
    g->tok = malloc(cap * sizeof(int32_t));
    g->hx = malloc(cap * cfg->dim * f);
    if (!g->seq || !g->slot || !g->pos || !g->kv_off || !g->n_ctx || !g->last || !g->tok ||
        !g->hx) {
        log_error("model_cuda_oom", "rows=%zu", cap);
        free_rows(g);
        return SF_ENOMEM;
    }
    g->cap_rows = cap;
    return 0;
}

/* Device views of the per-call index arrays (layout of g->idx). */
struct didx {
    size_t *pos, *kv_off, *n_ctx, *last;
    int32_t *tok;
};
static struct didx dev_idx(const struct model_cuda *g)
{
    size_t *base = g->idx.ptr;
    size_t cap = g->cap_rows;
    struct didx d = {base, base + cap, base + 2 * cap, base + 3 * cap, (int32_t *)(base + 4 * cap)};
    return d;
}

/* Checks the call and fills the per-row arrays as forward.c does (model_rows_*),
 * then copies the index arrays to the device; returns T in *T_out. */
static int prepare(struct model_cuda *g, const struct model_seq *seqs, size_t n_seqs, size_t *T_out)
{
    size_t T;
    int rc =
        model_rows_check(&g->m->cfg, g->n_slots, g->max_len, g->len, g->mark, seqs, n_seqs, &T);
    if (rc) return rc;
    rc = ensure_rows(g, T);
    if (rc) return rc;
    struct model_rows rows = {g->seq, g->slot, g->pos, g->kv_off, g->n_ctx, g->tok};
    model_rows_fill(&g->m->cfg, g->max_len, g->len, seqs, n_seqs, &rows);
    for (size_t i = 0, r = 0; i < n_seqs; i++) {
        r += seqs[i].n;
        g->last[i] = r - 1;
    }
    struct didx d = dev_idx(g);
    if ((rc = cuda_memcpy_h2d(g->ctx, d.pos, g->pos, T * sizeof(size_t))) ||
        (rc = cuda_memcpy_h2d(g->ctx, d.kv_off, g->kv_off, T * sizeof(size_t))) ||
        (rc = cuda_memcpy_h2d(g->ctx, d.n_ctx, g->n_ctx, T * sizeof(size_t))) ||
        (rc = cuda_memcpy_h2d(g->ctx, d.last, g->last, n_seqs * sizeof(size_t))) ||
        (rc = cuda_memcpy_h2d(g->ctx, d.tok, g->tok, T * sizeof(int32_t))))
        return rc;
    *T_out = T;
    return 0;
}

static int norm(struct model_cuda *g, float *out, const float *inp, const float *w, const float *b,
                size_t T)
{
    const struct model_config *cfg = &g->m->cfg;
    if (cfg->arch == MODEL_ARCH_GPT2)
        return ops_cuda_layernorm_forward(g->ctx, out, inp, w, b, T, cfg->dim, cfg->norm_eps);
    return ops_cuda_rmsnorm_forward(g->ctx, out, inp, w, T, cfg->dim, cfg->norm_eps);
}

#define TRY(call)                                                                                  \
    do {                                                                                           \
        int rc_ = (call);                                                                          \
        if (rc_) return rc_;                                                                       \
    } while (0)

/* Embeddings and blocks 0..n_run-1; leaves the residual stream in g->x. */
static int run_blocks(struct model_cuda *g, size_t T, size_t n_run)
{
    const struct model_config *cfg = &g->m->cfg;
    const size_t d = cfg->dim, qd = q_dim(cfg), kvd = kv_dim(cfg), qkvd = qd + 2 * kvd;
    const size_t hidden = cfg->hidden_dim;
    const bool gpt2 = cfg->arch == MODEL_ARCH_GPT2;
    struct cuda_ctx *c = g->ctx;
    struct didx di = dev_idx(g);
    float *x = g->x.ptr, *xb = g->xb.ptr, *qkv = g->qkv.ptr, *att = g->att.ptr;
    float *ff = g->ff.ptr, *ffh = g->ffh.ptr;

    TRY(ops_cuda_embed_forward(c, x, g->tok_emb, gpt2 ? g->pos_emb : NULL, di.tok, di.pos, T, d));
    for (size_t l = 0; l < n_run; l++) {
        const struct dlayer *L = &g->L[l];
        size_t layer_off = l * g->n_slots * g->max_len * kvd;
        float *kc = (float *)g->kc.ptr + layer_off, *vc = (float *)g->vc.ptr + layer_off;

        TRY(run_hooks(g, l, MODEL_HOOK_RESID_PRE, x, T));
        /* attention */
        TRY(norm(g, xb, x, L->norm1_w, L->norm1_b, T));
        TRY(ops_cuda_linear_forward(c, g->math, qkv, xb, L->wqkv, L->bqkv, T, d, qkvd));
        if (!gpt2) {
            TRY(ops_cuda_rope_forward(c, qkv, qkvd, di.pos, T, cfg->n_heads, cfg->head_dim,
                                      cfg->rope_dim, cfg->rope_theta, cfg->rope_layout));
            TRY(ops_cuda_rope_forward(c, qkv + qd, qkvd, di.pos, T, cfg->n_kv_heads, cfg->head_dim,
                                      cfg->rope_dim, cfg->rope_theta, cfg->rope_layout));
        }
        TRY(ops_cuda_kv_store(c, kc, vc, qkv, qkvd, qd, qd + kvd, kvd, di.kv_off, di.pos, T));
        TRY(ops_cuda_attention_forward(c, att, qkv, qkvd, kc, vc, di.kv_off, di.n_ctx, T,
                                       cfg->n_heads, cfg->n_kv_heads, cfg->head_dim));
        TRY(ops_cuda_linear_forward(c, g->math, xb, att, L->wo, L->bo, T, qd, d));
        TRY(run_hooks(g, l, MODEL_HOOK_ATTN_OUT, xb, T));
        TRY(ops_cuda_add_inplace(c, x, xb, T * d));
        TRY(run_hooks(g, l, MODEL_HOOK_RESID_MID, x, T));
        /* MLP */
        TRY(norm(g, xb, x, L->norm2_w, L->norm2_b, T));
        TRY(ops_cuda_linear_forward(c, g->math, ff, xb, L->w_up, L->b_up, T, d, up_rows(cfg)));
        const float *h;
        if (gpt2) {
            TRY(ops_cuda_gelu_forward(c, ff, ff, T * hidden));
            h = ff;
        } else {
            TRY(ops_cuda_swiglu_forward(c, ffh, ff, T, hidden));
            h = ffh;
        }
        TRY(ops_cuda_linear_forward(c, g->math, xb, h, L->w_down, L->b_down, T, hidden, d));
        TRY(run_hooks(g, l, MODEL_HOOK_MLP_OUT, xb, T));
        TRY(ops_cuda_add_inplace(c, x, xb, T * d));
        TRY(run_hooks(g, l, MODEL_HOOK_RESID_POST, x, T));
    }
    return 0;
}

int model_cuda_forward(struct model_cuda *g, const struct model_seq *seqs, size_t n_seqs,
                       enum model_logits want, float *logits)
{
    if (!g) return SF_EINVAL;
    const struct model_config *cfg = &g->m->cfg;
    size_t T;
    int rc = prepare(g, seqs, n_seqs, &T);
    if (rc) return rc;
    size_t n_run = cfg->n_layers;
    if (want == MODEL_LOGITS_NONE && g->n_hooks > 0) n_run = g->last_hooked + 1;
    rc = run_blocks(g, T, n_run);
    if (rc) return rc;
    const size_t d = cfg->dim, V = cfg->vocab_size;
    if (want == MODEL_LOGITS_ALL || want == MODEL_LOGITS_LAST) {
        const size_t rows = want == MODEL_LOGITS_ALL ? T : n_seqs;
        float *xb = g->xb.ptr;
        if (want == MODEL_LOGITS_ALL) {
            rc = norm(g, xb, g->x.ptr, g->normf_w, g->normf_b, T);
        } else {
            rc = ops_cuda_gather_rows(g->ctx, xb, g->x.ptr, dev_idx(g).last, n_seqs, d);
            if (rc == 0) rc = norm(g, xb, xb, g->normf_w, g->normf_b, n_seqs);
        }
        if (rc == 0) rc = cuda_buf_reserve(&g->logits, rows * V * sizeof(float));
        if (rc == 0)
            rc = ops_cuda_linear_forward(g->ctx, g->math, g->logits.ptr, xb, g->unembed, NULL, rows,
                                         d, V);
        if (rc == 0) rc = cuda_memcpy_d2h(g->ctx, logits, g->logits.ptr, rows * V * sizeof(float));
    } else {
        rc = cuda_ctx_sync(g->ctx); /* surface asynchronous failures before committing */
    }
    if (rc) return rc;
    for (size_t i = 0; i < n_seqs; i++) g->len[seqs[i].slot] += seqs[i].n;
    return 0;
}

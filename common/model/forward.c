/* forward: run contexts (KV cache, scratch, hooks) and the batched forward pass.
 *
 * All tokens of all sequences in one call are packed as rows of one (T, dim) matrix,
 * so each linear layer is one GEMM over every token; only attention looks at which
 * sequence a row belongs to (through per-row cache offsets). A prompt and a decode
 * step are the same call: tokens are appended after what a slot already holds. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "model_impl.h"
#include "tensor/ops.h"

struct hook_entry {
    model_hook_fn fn;
    void *user;
};
struct hook_list {
    struct hook_entry *v;
    size_t n, cap;
};

struct model_ctx {
    const struct model *m;
    size_t n_slots, max_len;
    size_t *len;              /* (n_slots) tokens held per slot */
    size_t *valid;            /* (n_slots) layers whose cache covers all len tokens */
    float *k_cache, *v_cache; /* (n_layers, n_slots, max_len, kv_dim) */
    struct hook_list *hooks;  /* (n_layers * MODEL_HOOK_COUNT) */
    size_t n_hooks;
    size_t last_hooked;  /* highest layer with a hook (valid when n_hooks > 0) */
    unsigned char *mark; /* (n_slots) scratch for the repeated-slot check */
    float *last;         /* (n_slots, dim) rows gathered for MODEL_LOGITS_LAST */
    /* per-row scratch, capacity cap_rows */
    size_t cap_rows;
    float *x;   /* (T, dim) residual stream */
    float *xb;  /* (T, dim) norm output / branch output */
    float *qkv; /* (T, q_dim + 2*kv_dim) */
    float *att; /* (T, q_dim) */
    float *ff;  /* (T, up_rows) */
    float *ffh; /* (T, hidden) */
    size_t *seq, *slot, *pos, *kv_off, *n_ctx;
    int32_t *tok;
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

struct model_ctx *model_ctx_new(const struct model *m, size_t n_slots, size_t max_len)
{
    const struct model_config *cfg = &m->cfg;
    if (max_len == 0) max_len = cfg->max_seq_len;
    if (n_slots == 0 || (cfg->arch == MODEL_ARCH_GPT2 && max_len > cfg->max_seq_len)) {
        log_error("model_ctx_invalid", "n_slots=%zu max_len=%zu model_max=%zu", n_slots, max_len,
                  cfg->max_seq_len);
        return NULL;
    }
    size_t per_slot, per_layer, total;
    if (!size_mul_ok(max_len, kv_dim(cfg), &per_slot) ||
        !size_mul_ok(per_slot, n_slots, &per_layer) ||
        !size_mul_ok(per_layer, cfg->n_layers, &total) || total > ((size_t)1 << 36)) {
        log_error("model_ctx_too_large", "n_slots=%zu max_len=%zu", n_slots, max_len);
        return NULL;
    }
    struct model_ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->m = m;
    c->n_slots = n_slots;
    c->max_len = max_len;
    c->len = calloc(n_slots, sizeof *c->len);
    c->valid = calloc(n_slots, sizeof *c->valid);
    c->mark = calloc(n_slots, 1);
    c->last = malloc(n_slots * cfg->dim * sizeof(float));
    c->k_cache = malloc(total * sizeof(float));
    c->v_cache = malloc(total * sizeof(float));
    c->hooks = calloc(cfg->n_layers * MODEL_HOOK_COUNT, sizeof *c->hooks);
    if (!c->len || !c->valid || !c->mark || !c->last || !c->k_cache || !c->v_cache || !c->hooks) {
        log_error("model_ctx_oom", "kv_floats=%zu", 2 * total);
        model_ctx_destroy(&c);
        return NULL;
    }
    return c;
}

static void free_rows(struct model_ctx *c)
{
    free(c->x);
    free(c->xb);
    free(c->qkv);
    free(c->att);
    free(c->ff);
    free(c->ffh);
    free(c->seq);
    free(c->slot);
    free(c->pos);
    free(c->kv_off);
    free(c->n_ctx);
    free(c->tok);
    c->x = c->xb = c->qkv = c->att = c->ff = c->ffh = NULL;
    c->seq = c->slot = c->pos = c->kv_off = c->n_ctx = NULL;
    c->tok = NULL;
    c->cap_rows = 0;
}

void model_ctx_destroy(struct model_ctx **pc)
{
    if (!pc || !*pc) return;
    struct model_ctx *c = *pc;
    if (c->hooks)
        for (size_t i = 0; i < c->m->cfg.n_layers * MODEL_HOOK_COUNT; i++) free(c->hooks[i].v);
    free(c->hooks);
    free_rows(c);
    free(c->len);
    free(c->valid);
    free(c->mark);
    free(c->last);
    free(c->k_cache);
    free(c->v_cache);
    free(c);
    *pc = NULL;
}

/* Grows the per-row scratch to hold T rows. */
static int ensure_rows(struct model_ctx *c, size_t T)
{
    if (T <= c->cap_rows) return 0;
    const struct model_config *cfg = &c->m->cfg;
    size_t cap = SF_MAX(T, 2 * c->cap_rows);
    free_rows(c);
    c->x = malloc(cap * cfg->dim * sizeof(float));
    c->xb = malloc(cap * cfg->dim * sizeof(float));
    c->qkv = malloc(cap * (q_dim(cfg) + 2 * kv_dim(cfg)) * sizeof(float));
    c->att = malloc(cap * q_dim(cfg) * sizeof(float));
    c->ff = malloc(cap * up_rows(cfg) * sizeof(float));
    c->ffh = cfg->arch == MODEL_ARCH_GPT2 ? NULL : malloc(cap * cfg->hidden_dim * sizeof(float));
    c->seq = malloc(cap * sizeof(size_t));
    c->slot = malloc(cap * sizeof(size_t));
    c->pos = malloc(cap * sizeof(size_t));
    c->kv_off = malloc(cap * sizeof(size_t));
    c->n_ctx = malloc(cap * sizeof(size_t));
    c->tok = malloc(cap * sizeof(int32_t));
    if (!c->x || !c->xb || !c->qkv || !c->att || !c->ff ||
        (cfg->arch != MODEL_ARCH_GPT2 && !c->ffh) || !c->seq || !c->slot || !c->pos || !c->kv_off ||
        !c->n_ctx || !c->tok) {
        log_error("model_ctx_oom", "rows=%zu", cap);
        free_rows(c);
        return SF_ENOMEM;
    }
    c->cap_rows = cap;
    return 0;
}

const struct model *model_ctx_model(const struct model_ctx *c)
{
    return c->m;
}
size_t model_ctx_slots(const struct model_ctx *c)
{
    return c->n_slots;
}
size_t model_ctx_max_len(const struct model_ctx *c)
{
    return c->max_len;
}
size_t model_ctx_len(const struct model_ctx *c, size_t slot)
{
    return slot < c->n_slots ? c->len[slot] : 0;
}
void model_ctx_reset(struct model_ctx *c, size_t slot)
{
    if (slot < c->n_slots) c->len[slot] = 0;
}
void model_ctx_reset_all(struct model_ctx *c)
{
    memset(c->len, 0, c->n_slots * sizeof *c->len);
}
int model_ctx_truncate(struct model_ctx *c, size_t slot, size_t len)
{
    if (slot >= c->n_slots || len > c->len[slot]) return SF_EINVAL;
    c->len[slot] = len;
    return 0;
}

/* ---- hooks ---- */

static const char *const hook_names[MODEL_HOOK_COUNT] = {
    "hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post",
};

const char *model_hook_point_name(enum model_hook_point p)
{
    return (unsigned)p < MODEL_HOOK_COUNT ? hook_names[p] : "?";
}

int model_hook_parse(const char *name, size_t n_layers, size_t *layer, enum model_hook_point *point)
{
    if (!name || strncmp(name, "blocks.", 7) != 0) goto bad;
    const char *p = name + 7;
    size_t l = 0, digits = 0;
    while (*p >= '0' && *p <= '9' && digits < 9) {
        l = l * 10 + (size_t)(*p - '0');
        p++;
        digits++;
    }
    if (digits == 0 || *p != '.' || l >= n_layers) goto bad;
    p++;
    for (int i = 0; i < MODEL_HOOK_COUNT; i++) {
        if (!strcmp(p, hook_names[i])) {
            *layer = l;
            *point = (enum model_hook_point)i;
            return 0;
        }
    }
bad:
    log_error("model_hook_invalid", "name=\"%s\" n_layers=%zu", name ? name : "(null)", n_layers);
    return SF_EINVAL;
}

int model_hook_name(size_t layer, enum model_hook_point point, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "blocks.%zu.%s", layer, model_hook_point_name(point));
    return n < 0 || (size_t)n >= cap ? SF_ERANGE : 0;
}

int model_ctx_add_hook_at(struct model_ctx *c, size_t layer, enum model_hook_point point,
                          model_hook_fn fn, void *user)
{
    if (!fn || layer >= c->m->cfg.n_layers || (unsigned)point >= MODEL_HOOK_COUNT) return SF_EINVAL;
    struct hook_list *hl = &c->hooks[layer * MODEL_HOOK_COUNT + point];
    if (hl->n == hl->cap) {
        size_t cap = hl->cap ? 2 * hl->cap : 2;
        struct hook_entry *v = realloc(hl->v, cap * sizeof *v);
        if (!v) return SF_ENOMEM;
        hl->v = v;
        hl->cap = cap;
    }
    hl->v[hl->n++] = (struct hook_entry){fn, user};
    if (c->n_hooks == 0 || layer > c->last_hooked) c->last_hooked = layer;
    c->n_hooks++;
    return 0;
}

int model_ctx_add_hook(struct model_ctx *c, const char *name, model_hook_fn fn, void *user)
{
    size_t layer;
    enum model_hook_point point;
    int rc = model_hook_parse(name, c->m->cfg.n_layers, &layer, &point);
    if (rc) return rc;
    return model_ctx_add_hook_at(c, layer, point, fn, user);
}

void model_ctx_clear_hooks(struct model_ctx *c)
{
    for (size_t i = 0; i < c->m->cfg.n_layers * MODEL_HOOK_COUNT; i++) c->hooks[i].n = 0;
    c->n_hooks = 0;
    c->last_hooked = 0;
}

static int run_hooks(struct model_ctx *c, size_t layer, enum model_hook_point point, float *x,
                     size_t T)
{
    const struct hook_list *hl = &c->hooks[layer * MODEL_HOOK_COUNT + point];
    if (hl->n == 0) return 0;
    char name[64];
    model_hook_name(layer, point, name, sizeof name);
    struct model_act a = {
        .name = name,
        .layer = layer,
        .point = point,
        .x = x,
        .n_tokens = T,
        .d = c->m->cfg.dim,
        .seq = c->seq,
        .slot = c->slot,
        .pos = c->pos,
        .tokens = c->tok,
    };
    for (size_t i = 0; i < hl->n; i++) {
        int rc = hl->v[i].fn(hl->v[i].user, &a);
        if (rc) {
            log_warn("model_hook_stopped", "hook=%s rc=%d", name, rc);
            return rc;
        }
    }
    return 0;
}

/* ---- the forward pass ---- */

int model_rows_check(const struct model_config *cfg, size_t n_slots, size_t max_len,
                     const size_t *len, unsigned char *mark, const struct model_seq *seqs,
                     size_t n_seqs, size_t *T_out)
{
    if (!seqs || n_seqs == 0) return SF_EINVAL;
    size_t T = 0;
    int rc = 0;
    for (size_t i = 0; i < n_seqs && !rc; i++) {
        const struct model_seq *s = &seqs[i];
        if (s->slot >= n_slots || s->n == 0 || !s->tokens) {
            log_error("model_forward_invalid", "seq=%zu slot=%zu n=%zu", i, s->slot, s->n);
            rc = SF_EINVAL;
            break;
        }
        if (mark[s->slot]) {
            log_error("model_forward_invalid", "reason=\"repeated slot\" slot=%zu", s->slot);
            rc = SF_EINVAL;
            break;
        }
        mark[s->slot] = 1;
        if (s->n > max_len - len[s->slot]) {
            log_error("model_forward_too_long", "slot=%zu len=%zu add=%zu max_len=%zu", s->slot,
                      len[s->slot], s->n, max_len);
            rc = SF_ERANGE;
            break;
        }
        for (size_t j = 0; j < s->n; j++) {
            if (s->tokens[j] < 0 || (size_t)s->tokens[j] >= cfg->vocab_size) {
                log_error("model_forward_invalid", "reason=\"token id out of range\" id=%d",
                          (int)s->tokens[j]);
                rc = SF_EINVAL;
                break;
            }
        }
        T += s->n;
    }
    for (size_t i = 0; i < n_seqs; i++)
        if (seqs[i].slot < n_slots) mark[seqs[i].slot] = 0;
    if (rc) return rc;
    *T_out = T;
    return 0;
}

void model_rows_fill(const struct model_config *cfg, size_t max_len, const size_t *len,
                     const struct model_seq *seqs, size_t n_seqs, const struct model_rows *rows)
{
    size_t kvd = kv_dim(cfg), r = 0;
    for (size_t i = 0; i < n_seqs; i++) {
        const struct model_seq *s = &seqs[i];
        for (size_t j = 0; j < s->n; j++, r++) {
            rows->seq[r] = i;
            rows->slot[r] = s->slot;
            rows->pos[r] = len[s->slot] + j;
            rows->tok[r] = s->tokens[j];
            rows->kv_off[r] = s->slot * max_len * kvd;
            rows->n_ctx[r] = rows->pos[r] + 1;
        }
    }
}

/* Checks the call and fills the per-row arrays; returns T in *T_out. */
static int prepare(struct model_ctx *c, const struct model_seq *seqs, size_t n_seqs, size_t n_run,
                   size_t *T_out)
{
    size_t T;
    int rc =
        model_rows_check(&c->m->cfg, c->n_slots, c->max_len, c->len, c->mark, seqs, n_seqs, &T);
    if (rc) return rc;
    for (size_t i = 0; i < n_seqs; i++) {
        const struct model_seq *s = &seqs[i];
        if (c->len[s->slot] > 0 && c->valid[s->slot] < n_run) {
            log_error(
                "model_forward_invalid",
                "reason=\"slot was filled by a capture-only pass (layers skipped); reset it\" "
                "slot=%zu layers_cached=%zu need=%zu",
                s->slot, c->valid[s->slot], n_run);
            return SF_ESTATE;
        }
    }
    rc = ensure_rows(c, T);
    if (rc) return rc;
    struct model_rows rows = {c->seq, c->slot, c->pos, c->kv_off, c->n_ctx, c->tok};
    model_rows_fill(&c->m->cfg, c->max_len, c->len, seqs, n_seqs, &rows);
    *T_out = T;
    return 0;
}

static void norm(const struct model_config *cfg, float *out, const float *inp, const float *w,
                 const float *b, size_t T)
{
    if (cfg->arch == MODEL_ARCH_GPT2)
        layernorm_forward(out, inp, w, b, T, cfg->dim, cfg->norm_eps);
    else
        rmsnorm_forward(out, inp, w, T, cfg->dim, cfg->norm_eps);
}

/* Runs embeddings and blocks 0..n_run-1 on the prepared rows; leaves the residual
 * stream in c->x. */
static int run_blocks(struct model_ctx *c, size_t T, size_t n_run)
{
    const struct model *m = c->m;
    const struct model_config *cfg = &m->cfg;
    size_t d = cfg->dim, qd = q_dim(cfg), kvd = kv_dim(cfg), qkvd = qd + 2 * kvd;
    size_t hidden = cfg->hidden_dim;
    bool gpt2 = cfg->arch == MODEL_ARCH_GPT2;
    int rc;

    for (size_t r = 0; r < T; r++) {
        float *x = c->x + r * d;
        memcpy(x, m->tok_emb + (size_t)c->tok[r] * d, d * sizeof(float));
        if (gpt2) add_inplace(x, m->pos_emb + c->pos[r] * d, d);
    }
    for (size_t l = 0; l < n_run; l++) {
        const struct model_layer *L = &m->layers[l];
        size_t layer_off = l * c->n_slots * c->max_len * kvd;
        float *kc = c->k_cache + layer_off, *vc = c->v_cache + layer_off;

        if ((rc = run_hooks(c, l, MODEL_HOOK_RESID_PRE, c->x, T))) return rc;
        /* attention */
        norm(cfg, c->xb, c->x, L->norm1_w, L->norm1_b, T);
        linear_forward(c->qkv, c->xb, L->wqkv, L->bqkv, T, d, qkvd);
        if (!gpt2) {
            rope_forward(c->qkv, qkvd, c->pos, T, cfg->n_heads, cfg->head_dim, cfg->rope_dim,
                         cfg->rope_theta, cfg->rope_layout);
            rope_forward(c->qkv + qd, qkvd, c->pos, T, cfg->n_kv_heads, cfg->head_dim,
                         cfg->rope_dim, cfg->rope_theta, cfg->rope_layout);
        }
        for (size_t r = 0; r < T; r++) {
            size_t at = c->kv_off[r] + c->pos[r] * kvd;
            memcpy(kc + at, c->qkv + r * qkvd + qd, kvd * sizeof(float));
            memcpy(vc + at, c->qkv + r * qkvd + qd + kvd, kvd * sizeof(float));
        }
        rc = attention_forward(c->att, c->qkv, qkvd, kc, vc, c->kv_off, c->n_ctx, T, cfg->n_heads,
                               cfg->n_kv_heads, cfg->head_dim);
        if (rc) return rc;
        linear_forward(c->xb, c->att, L->wo, L->bo, T, qd, d);
        if ((rc = run_hooks(c, l, MODEL_HOOK_ATTN_OUT, c->xb, T))) return rc;
        add_inplace(c->x, c->xb, T * d);
        if ((rc = run_hooks(c, l, MODEL_HOOK_RESID_MID, c->x, T))) return rc;
        /* MLP */
        norm(cfg, c->xb, c->x, L->norm2_w, L->norm2_b, T);
        linear_forward(c->ff, c->xb, L->w_up, L->b_up, T, d, up_rows(cfg));
        const float *h;
        if (gpt2) {
            gelu_forward(c->ff, c->ff, T * hidden);
            h = c->ff;
        } else {
            swiglu_forward(c->ffh, c->ff, T, hidden);
            h = c->ffh;
        }
        linear_forward(c->xb, h, L->w_down, L->b_down, T, hidden, d);
        if ((rc = run_hooks(c, l, MODEL_HOOK_MLP_OUT, c->xb, T))) return rc;
        add_inplace(c->x, c->xb, T * d);
        if ((rc = run_hooks(c, l, MODEL_HOOK_RESID_POST, c->x, T))) return rc;
    }
    return 0;
}

static void commit_lengths(struct model_ctx *c, const struct model_seq *seqs, size_t n_seqs,
                           size_t n_run)
{
    for (size_t i = 0; i < n_seqs; i++) {
        size_t slot = seqs[i].slot;
        c->valid[slot] = c->len[slot] == 0 ? n_run : SF_MIN(c->valid[slot], n_run);
        c->len[slot] += seqs[i].n;
    }
}

int model_forward(struct model_ctx *c, const struct model_seq *seqs, size_t n_seqs,
                  enum model_logits want, float *logits)
{
    const struct model *m = c->m;
    const struct model_config *cfg = &m->cfg;
    size_t T;
    if (want != MODEL_LOGITS_NONE && !logits) {
        log_error("model_forward_invalid", "reason=\"logits requested into NULL\"");
        return SF_EINVAL;
    }
    size_t n_run = cfg->n_layers;
    if (want == MODEL_LOGITS_NONE && c->n_hooks > 0) n_run = c->last_hooked + 1;
    int rc = prepare(c, seqs, n_seqs, n_run, &T);
    if (rc) return rc;
    rc = run_blocks(c, T, n_run);
    if (rc) return rc;
    size_t d = cfg->dim;
    if (want == MODEL_LOGITS_ALL) {
        norm(cfg, c->xb, c->x, m->normf_w, m->normf_b, T);
        linear_forward(logits, c->xb, m->unembed, NULL, T, d, cfg->vocab_size);
    } else if (want == MODEL_LOGITS_LAST) {
        size_t r = 0;
        for (size_t i = 0; i < n_seqs; i++) {
            r += seqs[i].n;
            memcpy(c->last + i * d, c->x + (r - 1) * d, d * sizeof(float));
        }
        norm(cfg, c->last, c->last, m->normf_w, m->normf_b, n_seqs);
        linear_forward(logits, c->last, m->unembed, NULL, n_seqs, d, cfg->vocab_size);
    }
    commit_lengths(c, seqs, n_seqs, n_run);
    return 0;
}

double model_logprob(const float *logits, size_t vocab, int32_t target)
{
    if (target < 0 || (size_t)target >= vocab) return NAN;
    return (double)logits[target] - logsumexp(logits, vocab);
}

#define LOGPROB_BLOCK 64

int model_forward_logprobs(struct model_ctx *c, const struct model_seq *seqs, size_t n_seqs,
                           float *logprobs)
{
    const struct model *m = c->m;
    const struct model_config *cfg = &m->cfg;
    size_t T;
    if (!logprobs) return SF_EINVAL;
    int rc = prepare(c, seqs, n_seqs, cfg->n_layers, &T);
    if (rc) return rc;
    float *block = malloc((size_t)LOGPROB_BLOCK * cfg->vocab_size * sizeof(float));
    if (!block) return SF_ENOMEM;
    rc = run_blocks(c, T, cfg->n_layers);
    if (rc) goto out;
    size_t d = cfg->dim, V = cfg->vocab_size;
    norm(cfg, c->xb, c->x, m->normf_w, m->normf_b, T);
    for (size_t r0 = 0; r0 < T; r0 += LOGPROB_BLOCK) {
        size_t nb = SF_MIN((size_t)LOGPROB_BLOCK, T - r0);
        linear_forward(block, c->xb + r0 * d, m->unembed, NULL, nb, d, V);
        for (size_t i = 0; i < nb; i++) {
            size_t r = r0 + i;
            /* the next token is in the same sequence iff the next row has the same seq */
            if (r + 1 < T && c->seq[r + 1] == c->seq[r])
                logprobs[r] = (float)model_logprob(block + i * V, V, c->tok[r + 1]);
            else
                logprobs[r] = NAN;
        }
    }
    commit_lengths(c, seqs, n_seqs, cfg->n_layers);
out:
    free(block);
    return rc;
}

/* harvest: two streaming passes that collect per-feature statistics and examples, and
 * the write of complete feature records into the feature store (see harvest.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harvest.h"
#include "model/tokenizer.h"
#include "tensor/ops.h"

/* log-scale histogram for quantiles: 2^(LH_LO + b / LH_PER) .. */
#define LH_LO  (-24)
#define LH_PER 8
#define LH_N   (40 * LH_PER)

struct slot {
    float act;
    uint32_t window;
    uint16_t start, center, n_tok, group;
    bool used;
};

struct harvest {
    struct model *model;
    const struct sae *sae;
    const struct eval_data *data;
    struct harvest_opts o;
    size_t layer;
    enum model_hook_point point;
    size_t n, n_win, S;      /* features, windows used, example slots per feature */
    size_t base_int, base_q; /* first interval / quantile slot */
    uint64_t n_tok;
    double seconds;
    /* pass 1 */
    uint64_t *fires;
    double *sum;
    float *max;
    uint32_t *lh;     /* (n, LH_N) */
    uint16_t *heap_n; /* (n) top examples held */
    uint16_t *heap;   /* (n, n_top) slot indices, min-heap by act */
    /* pass 2 */
    uint32_t *hist;   /* (n, n_hist) */
    uint64_t *icount; /* (n, n_intervals) */
    uint64_t *qcount; /* (n, n_quantiles) */
    float *qbound;    /* (n, n_quantiles + 1) */
    /* examples */
    struct slot *slots; /* (n, S) */
    float *acts;        /* (n, S, window) */
    /* per batch */
    int pass;
    struct eval_codes codes;
    size_t *row_win; /* (rows) window index (global) */
    size_t *row_pos; /* (rows) */
    size_t *win_row; /* (batch_seqs) first row of each window of the batch */
    size_t win0;     /* first window of the batch */
    bool *skip;
    struct rng rng;
    int err;
};

void harvest_opts_default(struct harvest_opts *o)
{
    memset(o, 0, sizeof *o);
    o->batch_seqs = 8;
    o->n_top = 20;
    o->n_intervals = 10;
    o->per_interval = 3;
    o->n_quantiles = 10;
    o->per_quantile = 3;
    o->n_hist = 32;
    o->window = 32;
    o->window_before = 24;
    o->n_logits = 10;
    o->n_neighbours = 5;
    o->chunk_features = 64;
    o->seed = 1;
}

void harvest_destroy(struct harvest **hp)
{
    if (!hp || !*hp) return;
    struct harvest *h = *hp;
    free(h->fires);
    free(h->sum);
    free(h->max);
    free(h->lh);
    free(h->heap_n);
    free(h->heap);
    free(h->hist);
    free(h->icount);
    free(h->qcount);
    free(h->qbound);
    free(h->slots);
    free(h->acts);
    free(h->row_win);
    free(h->row_pos);
    free(h->win_row);
    free(h->skip);
    eval_codes_fini(&h->codes);
    free(h);
    *hp = NULL;
}

size_t harvest_n_features(const struct harvest *h)
{
    return h->n;
}

uint64_t harvest_tokens(const struct harvest *h)
{
    return h->n_tok;
}

double harvest_seconds(const struct harvest *h)
{
    return h->seconds;
}

static size_t lh_bin(float a)
{
    double b = floor(((double)log2f(a) - LH_LO) * LH_PER);
    if (!(b >= 0)) return 0;
    if (b >= LH_N) return LH_N - 1;
    return (size_t)b;
}

static double lh_edge(size_t b)
{
    return exp2((double)LH_LO + (double)b / LH_PER);
}

/* The activation of feature f at row r of the batch (0 when inactive). */
static float act_at(const struct harvest *h, size_t r, uint32_t f)
{
    const struct eval_codes *c = &h->codes;
    const uint32_t *idx = c->idx + r * c->m;
    for (uint32_t a = 0; a < c->count[r]; a++)
        if (idx[a] == f) return c->val[r * c->m + a];
    return 0.0f;
}

/* Copies the example around (window w, position p) for feature f into slot si. */
static void materialize(struct harvest *h, uint32_t f, size_t si, size_t w, size_t p, float act,
                        uint16_t group)
{
    struct slot *s = &h->slots[f * h->S + si];
    size_t len = h->data->len[w], W = h->o.window;
    size_t start = p > h->o.window_before ? p - h->o.window_before : 0;
    size_t end = SF_MIN(len, start + W);
    if (end - start < W) start = end > W ? end - W : 0;
    s->act = act;
    s->window = (uint32_t)w;
    s->start = (uint16_t)start;
    s->center = (uint16_t)(p - start);
    s->n_tok = (uint16_t)(end - start);
    s->group = group;
    s->used = true;
    float *dst = h->acts + (f * h->S + si) * W;
    size_t r0 = h->win_row[w - h->win0];
    for (size_t t = start; t < end; t++) dst[t - start] = act_at(h, r0 + t, f);
}

static float slot_act(const struct harvest *h, uint32_t f, uint16_t si)
{
    return h->slots[f * h->S + si].act;
}

static void heap_sift_down(struct harvest *h, uint32_t f, size_t i)
{
    uint16_t *hp = h->heap + f * h->o.n_top;
    size_t n = h->heap_n[f];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && slot_act(h, f, hp[l]) < slot_act(h, f, hp[m])) m = l;
        if (r < n && slot_act(h, f, hp[r]) < slot_act(h, f, hp[m])) m = r;
        if (m == i) return;
        uint16_t t = hp[i];
        hp[i] = hp[m];
        hp[m] = t;
        i = m;
    }
}

static void heap_push(struct harvest *h, uint32_t f, size_t w, size_t p, float a)
{
    uint16_t *hp = h->heap + f * h->o.n_top;
    size_t n = h->heap_n[f];
    if (n < h->o.n_top) {
        uint16_t si = (uint16_t)n; /* top slots are 0 .. n_top-1 */
        materialize(h, f, si, w, p, a, 0);
        size_t i = n;
        hp[i] = si;
        h->heap_n[f]++;
        while (i > 0) {
            size_t par = (i - 1) / 2;
            if (slot_act(h, f, hp[par]) <= slot_act(h, f, hp[i])) break;
            uint16_t t = hp[par];
            hp[par] = hp[i];
            hp[i] = t;
            i = par;
        }
        return;
    }
    if (n == 0 || a <= slot_act(h, f, hp[0])) return;
    materialize(h, f, hp[0], w, p, a, 0);
    heap_sift_down(h, f, 0);
}

static void reservoir(struct harvest *h, uint32_t f, size_t base, size_t per, size_t bin,
                      uint64_t seen, size_t w, size_t p, float a)
{
    if (per == 0) return;
    size_t j;
    if (seen <= per)
        j = (size_t)(seen - 1);
    else {
        j = (size_t)rng_below(&h->rng, seen);
        if (j >= per) return;
    }
    materialize(h, f, base + bin * per + j, w, p, a, (uint16_t)bin);
}

static size_t quantile_slice(const struct harvest *h, uint32_t f, float a)
{
    const float *b = h->qbound + f * (h->o.n_quantiles + 1);
    size_t lo = 0, hi = h->o.n_quantiles; /* internal bounds b[1..Q-1] */
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (a >= b[mid])
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static int on_hook(void *user, const struct model_act *act)
{
    struct harvest *h = user;
    size_t T = act->n_tokens;
    for (size_t i = 0; i < T; i++) {
        h->skip[i] = h->data->special[act->tokens[i]];
        h->row_win[i] = h->win0 + act->seq[i];
        h->row_pos[i] = act->pos[i];
        if (act->pos[i] == 0) h->win_row[act->seq[i]] = i;
    }
    int rc = eval_codes_encode(&h->codes, h->sae, act->x, T, h->skip);
    if (rc < 0) return h->err = rc;
    const struct eval_codes *c = &h->codes;
    const size_t NI = h->o.n_intervals, NH = h->o.n_hist, NQ = h->o.n_quantiles;
    for (size_t r = 0; r < T; r++) {
        if (h->skip[r]) continue;
        if (h->pass == 1) h->n_tok++;
        size_t w = h->row_win[r], p = h->row_pos[r];
        for (uint32_t k = 0; k < c->count[r]; k++) {
            uint32_t f = c->idx[r * c->m + k];
            float a = c->val[r * c->m + k];
            if (!(a > 0.0f)) continue;
            if (h->pass == 1) {
                h->fires[f]++;
                h->sum[f] += a;
                if (a > h->max[f]) h->max[f] = a;
                h->lh[f * LH_N + lh_bin(a)]++;
                if (h->o.n_top) heap_push(h, f, w, p, a);
            } else {
                float mx = h->max[f];
                size_t hb = mx > 0 ? (size_t)((double)a / mx * (double)NH) : 0;
                h->hist[f * NH + SF_MIN(hb, NH - 1)]++;
                if (NI) {
                    size_t ib = mx > 0 ? (size_t)((double)a / mx * (double)NI) : 0;
                    ib = SF_MIN(ib, NI - 1);
                    uint64_t seen = ++h->icount[f * NI + ib];
                    reservoir(h, f, h->base_int, h->o.per_interval, ib, seen, w, p, a);
                }
                if (NQ) {
                    size_t qb = quantile_slice(h, f, a);
                    uint64_t seen = ++h->qcount[f * NQ + qb];
                    reservoir(h, f, h->base_q, h->o.per_quantile, qb, seen, w, p, a);
                }
            }
        }
    }
    return 0;
}

/* Quantile bounds of feature f from its log histogram: b[0] = 0, b[Q] = max. */
static void quantile_bounds(struct harvest *h, uint32_t f)
{
    size_t Q = h->o.n_quantiles;
    float *b = h->qbound + f * (Q + 1);
    b[0] = 0.0f;
    b[Q] = h->max[f];
    const uint32_t *lh = h->lh + f * LH_N;
    uint64_t F = h->fires[f], cum = 0;
    size_t bin = 0;
    for (size_t q = 1; q < Q; q++) {
        double target = (double)q * (double)F / (double)Q;
        while (bin < LH_N && (double)(cum + lh[bin]) < target) cum += lh[bin++];
        double v;
        if (bin >= LH_N || lh[bin] == 0)
            v = h->max[f];
        else {
            double frac = (target - (double)cum) / (double)lh[bin];
            v = lh_edge(bin) * exp2(frac / LH_PER); /* log-linear inside the bin */
        }
        b[q] = (float)SF_MIN(v, (double)h->max[f]);
        if (b[q] < b[q - 1]) b[q] = b[q - 1];
    }
}

static int run_pass(struct harvest *h, struct model_ctx *ctx, int pass)
{
    const struct eval_data *d = h->data;
    size_t bs = model_ctx_slots(ctx);
    struct model_seq seqs[4096];
    h->pass = pass;
    for (size_t w0 = 0; w0 < h->n_win; w0 += bs) {
        size_t nb = SF_MIN(bs, h->n_win - w0);
        for (size_t i = 0; i < nb; i++)
            seqs[i] = (struct model_seq){
                .slot = i, .tokens = d->tokens + (w0 + i) * d->context, .n = d->len[w0 + i]};
        h->win0 = w0;
        model_ctx_reset_all(ctx);
        int rc = model_forward(ctx, seqs, nb, MODEL_LOGITS_NONE, NULL);
        if (rc) return rc > 0 ? SF_ERR : rc;
        if (h->o.progress)
            h->o.progress(h->o.progress_ud,
                          pass == 1 ? "harvest 1/2 (stats)" : "harvest 2/2 (examples)", w0 + nb,
                          h->n_win);
    }
    return 0;
}

#define CALLOC(p, n)                                                                               \
    do {                                                                                           \
        (p) = calloc(SF_MAX((size_t)(n), (size_t)1), sizeof *(p));                                 \
        if (!(p)) goto nomem;                                                                      \
    } while (0)

int harvest_run(struct model *m, const struct sae *sae, const struct eval_data *data,
                const struct harvest_opts *o, struct harvest **out)
{
    *out = NULL;
    double t0 = time_now_s();
    struct harvest *h = calloc(1, sizeof *h);
    if (!h) return SF_ENOMEM;
    if (o)
        h->o = *o;
    else
        harvest_opts_default(&h->o);
    struct harvest_opts *ho = &h->o;
    h->model = m;
    h->sae = sae;
    h->data = data;
    h->n = sae->n;
    int rc = eval_resolve_hook(m, sae, ho->hook, &h->layer, &h->point);
    if (rc < 0) goto fail;
    rc = SF_EINVAL;
    if (!data || data->n_windows == 0 || data->vocab != model_config(m)->vocab_size) {
        log_error("harvest", "reason=bad_data");
        goto fail;
    }
    if (ho->window < 1 || ho->window > FEATURE_MAX_WINDOW || ho->window > UINT16_MAX ||
        ho->window_before >= ho->window || ho->n_hist < 1 || ho->n_hist > FEATURE_MAX_BINS ||
        ho->n_intervals > FEATURE_MAX_BINS || ho->n_quantiles > FEATURE_MAX_BINS ||
        ho->n_quantiles == 1 || ho->n_logits > FEATURE_MAX_BINS ||
        ho->n_neighbours > FEATURE_MAX_BINS || data->context > UINT16_MAX || sae->n > UINT32_MAX) {
        log_error("harvest", "reason=bad_options window=%zu before=%zu hist=%zu", ho->window,
                  ho->window_before, ho->n_hist);
        goto fail;
    }
    h->S = ho->n_top + ho->n_intervals * ho->per_interval + ho->n_quantiles * ho->per_quantile;
    if (h->S > FEATURE_MAX_EXAMPLES || h->S > UINT16_MAX) {
        log_error("harvest", "reason=too_many_examples per_feature=%zu", h->S);
        goto fail;
    }
    h->base_int = ho->n_top;
    h->base_q = ho->n_top + ho->n_intervals * ho->per_interval;
    if (!ho->batch_seqs) ho->batch_seqs = 8;
    if (!ho->chunk_features) ho->chunk_features = 64;
    size_t bs = SF_MIN(SF_MIN(ho->batch_seqs, (size_t)4096), data->n_windows);
    h->n_win = data->n_windows;
    if (ho->max_tokens) {
        size_t t = 0, w = 0;
        while (w < h->n_win && t < ho->max_tokens) t += data->len[w++];
        h->n_win = w;
    }
    rng_seed(&h->rng, ho->seed);
    const size_t n = h->n, rows = bs * data->context;
    CALLOC(h->fires, n);
    CALLOC(h->sum, n);
    CALLOC(h->max, n);
    CALLOC(h->lh, n * LH_N);
    CALLOC(h->heap_n, n);
    CALLOC(h->heap, n * ho->n_top);
    CALLOC(h->hist, n * ho->n_hist);
    CALLOC(h->icount, n * ho->n_intervals);
    CALLOC(h->qcount, n * ho->n_quantiles);
    CALLOC(h->qbound, n * (ho->n_quantiles + 1));
    CALLOC(h->slots, n * h->S);
    CALLOC(h->acts, n * h->S * ho->window);
    CALLOC(h->row_win, rows);
    CALLOC(h->row_pos, rows);
    CALLOC(h->win_row, bs);
    CALLOC(h->skip, rows);
    size_t m_act = sae->arch == SAE_TOPK ? sae->k : SF_MIN(sae->n, (size_t)HARVEST_MAX_ACTIVE);
    rc = eval_codes_init(&h->codes, sae, rows, m_act);
    if (rc < 0) goto fail;

    struct model_ctx *ctx = model_ctx_new(m, bs, data->context);
    if (!ctx) goto nomem;
    rc = model_ctx_add_hook_at(ctx, h->layer, h->point, on_hook, h);
    if (rc == 0) rc = run_pass(h, ctx, 1);
    if (rc == 0 && h->n_tok == 0) {
        log_error("harvest", "reason=no_countable_tokens");
        rc = SF_EINVAL;
    }
    if (rc == 0) {
        if (ho->n_quantiles)
            for (uint32_t f = 0; f < n; f++) quantile_bounds(h, f);
        rc = run_pass(h, ctx, 2);
    }
    model_ctx_destroy(&ctx);
    if (rc < 0) goto fail;
    h->seconds = time_now_s() - t0;
    log_info("harvest_done", "features=%zu tokens=%llu windows=%zu s=%.2f", n,
             (unsigned long long)h->n_tok, h->n_win, h->seconds);
    *out = h;
    return 0;
nomem:
    rc = SF_ENOMEM;
fail:
    harvest_destroy(&h);
    return rc;
}

/* ---- building records ---- */

static int fill_example(const struct harvest *h, uint32_t f, size_t si, struct feature_example *e,
                        struct buf *text)
{
    const struct slot *s = &h->slots[f * h->S + si];
    const struct eval_data *d = h->data;
    const struct tokenizer *tok = model_tokenizer(h->model);
    e->group = s->group;
    e->act = s->act;
    e->window = s->window;
    e->start = s->start;
    e->center = s->center;
    e->n_tok = s->n_tok;
    e->tokens = malloc(s->n_tok * sizeof *e->tokens);
    e->acts = malloc(s->n_tok * sizeof *e->acts);
    e->text_end = malloc(s->n_tok * sizeof *e->text_end);
    if (!e->tokens || !e->acts || !e->text_end) return SF_ENOMEM;
    const int32_t *wt = d->tokens + (size_t)s->window * d->context;
    memcpy(e->acts, h->acts + (f * h->S + si) * h->o.window, s->n_tok * sizeof *e->acts);
    buf_reset(text);
    int32_t prev = s->start > 0 ? wt[s->start - 1] : -1;
    for (uint32_t t = 0; t < s->n_tok; t++) {
        int32_t id = wt[s->start + t];
        e->tokens[t] = (uint32_t)id;
        if (tok && tokenizer_decode_piece(tok, prev, id, text) < 0) return SF_ENOMEM;
        prev = id;
        e->text_end[t] = (uint32_t)text->len;
    }
    e->text = malloc(text->len + 1);
    if (!e->text) return SF_ENOMEM;
    if (text->len) memcpy(e->text, text->data, text->len);
    e->text[text->len] = 0;
    e->text_len = (uint32_t)text->len;
    return 0;
}

static int cmp_slot_desc(const void *a, const void *b, void *ud)
{
    const struct slot *s = ud;
    float x = s[*(const uint16_t *)a].act, y = s[*(const uint16_t *)b].act;
    return (x < y) - (x > y);
}

/* qsort_r is GNU; sort the (<= n_top) top slots with insertion sort instead. */
static void sort_top(const struct slot *s, uint16_t *idx, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        uint16_t v = idx[i];
        size_t j = i;
        while (j > 0 && cmp_slot_desc(&idx[j - 1], &v, (void *)s) > 0) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = v;
    }
}

static int build_examples(const struct harvest *h, uint32_t f, struct feature_record *r,
                          struct buf *text)
{
    const struct slot *s = h->slots + f * h->S;
    uint16_t idx[FEATURE_MAX_EXAMPLES];
    for (int kind = 0; kind < FEATURE_EX_KINDS; kind++) {
        struct feature_examples *fe = &r->examples[kind];
        fe->feature = f;
        fe->kind = (enum feature_example_kind)kind;
        size_t lo = kind == 0 ? 0 : kind == 1 ? h->base_int : h->base_q;
        size_t hi = kind == 0 ? h->base_int : kind == 1 ? h->base_q : h->S;
        size_t n = 0;
        for (size_t i = lo; i < hi; i++)
            if (s[i].used) idx[n++] = (uint16_t)i;
        if (kind == 0) sort_top(s, idx, n);
        if (n == 0) continue;
        fe->ex = calloc(n, sizeof *fe->ex);
        if (!fe->ex) return SF_ENOMEM;
        fe->n = (uint16_t)n;
        for (size_t i = 0; i < n; i++) {
            int rc = fill_example(h, f, idx[i], &fe->ex[i], text);
            if (rc < 0) return rc;
            if (kind == 0) fe->ex[i].group = (uint16_t)i;
        }
    }
    return 0;
}

static void bins_from(struct feature_bin *b, const uint64_t *count, size_t n, float lo_all,
                      float width, const float *bounds)
{
    for (size_t i = 0; i < n; i++) {
        b[i].lo = bounds ? bounds[i] : lo_all + width * (float)i;
        b[i].hi = bounds ? bounds[i + 1] : lo_all + width * (float)(i + 1);
        if (b[i].hi < b[i].lo) b[i].hi = b[i].lo;
        b[i].count = count[i];
    }
}

static void piece_of(const struct tokenizer *tok, uint32_t id, char *out, size_t cap,
                     struct buf *tmp)
{
    out[0] = 0;
    if (!tok) return;
    buf_reset(tmp);
    int32_t prev = (int32_t)id == tokenizer_bos(tok) ? -1 : (int32_t)id;
    if (tokenizer_decode_piece(tok, prev, (int32_t)id, tmp) < 0) return;
    size_t n = SF_MIN(tmp->len, cap - 1);
    if (n) memcpy(out, tmp->data, n);
    out[n] = 0;
    if (memchr(out, 0, n)) out[0] = 0; /* a NUL byte piece: leave it empty */
}

/* Indices of the k largest (desc) or smallest (asc) of v[0..n), skipping `skip`. */
static size_t select_k(const float *v, size_t n, size_t k, bool largest, size_t skip, uint32_t *out)
{
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (i == skip || !isfinite(v[i])) continue;
        float x = v[i];
        bool better = m < k || (largest ? x > v[out[m - 1]] : x < v[out[m - 1]]);
        if (!better) continue;
        size_t j = m < k ? m++ : m - 1;
        while (j > 0 && (largest ? x > v[out[j - 1]] : x < v[out[j - 1]])) {
            out[j] = out[j - 1];
            j--;
        }
        out[j] = (uint32_t)i;
    }
    return m;
}

/* One candidate of select_exact: its value recomputed in double, and its index. */
struct cand {
    double v;
    uint32_t i;
};

static int cand_desc(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;
    if (a->v != b->v) return a->v > b->v ? -1 : 1;
    return a->i < b->i ? -1 : a->i > b->i;
}

/* a . b in double, in index order: every product of two floats is exact in double and the
 * sum's order is fixed, so the result is the same on every CPU and for every caller. */
static double dot_exact(const float *a, const float *b, size_t d)
{
    double s = 0;
    for (size_t j = 0; j < d; j++) s += (double)a[j] * (double)b[j];
    return s;
}

/* The k largest (or smallest) of a . B[v] over v in [0, nb), skipping `skip`, chosen and valued
 * exactly. `approx` is the row a float GEMM computed; its error is at most `bound` per entry
 * (|fl(a.b) - a.b| <= gamma_d sum|a_j b_j| <= gamma_d |a| |b|, for any summation order, FMA or
 * not). Every entry whose approximation lies within 2 * bound of the k-th is recomputed with
 * dot_exact, which includes every entry of the exact top k; the k best of those, ties to the
 * lower index, are the answer. So what is stored depends neither on the GEMM's shape (how many
 * features a chunk holds), nor on its threads, nor on the kernels OpenBLAS picks for a CPU. */
static size_t select_exact(const float *approx, const float *a, const float *B, size_t nb, size_t d,
                           size_t k, bool largest, size_t skip, double bound, uint32_t *sel,
                           float *val, struct cand **cands, size_t *cap)
{
    size_t m = select_k(approx, nb, k, largest, skip, sel);
    if (m == 0) return 0;
    const double t = approx[sel[m - 1]], lim = largest ? t - 2 * bound : t + 2 * bound;
    size_t nc = 0;
    for (size_t v = 0; v < nb; v++) {
        if (v == skip || !isfinite(approx[v])) continue;
        if (largest ? approx[v] < lim : approx[v] > lim) continue;
        if (nc == *cap) {
            size_t ncap = *cap ? 2 * *cap : 64;
            struct cand *c = realloc(*cands, ncap * sizeof *c);
            if (!c) return SIZE_MAX;
            *cands = c;
            *cap = ncap;
        }
        double x = dot_exact(a, B + v * d, d);
        (*cands)[nc++] = (struct cand){largest ? x : -x, (uint32_t)v};
    }
    qsort(*cands, nc, sizeof **cands, cand_desc);
    m = SF_MIN(m, nc);
    for (size_t j = 0; j < m; j++) {
        sel[j] = (*cands)[j].i;
        val[j] = (float)(largest ? (*cands)[j].v : -(*cands)[j].v);
    }
    return m;
}

/* Largest Euclidean norm of the rows of B (rows, d), in double. */
static double max_row_norm(const float *B, size_t rows, size_t d)
{
    double best = 0;
    for (size_t r = 0; r < rows; r++) best = fmax(best, dot_exact(B + r * d, B + r * d, d));
    return sqrt(best);
}

/* The error bound of a float dot product of length d between vectors of these norms, with
 * room to spare: 2 (d + 2) 2^-24 > gamma_d = d u / (1 - d u), plus a floor for underflow. */
static double gemm_bound(size_t d, double norm_a, double norm_b)
{
    return (double)(d + 2) * 0x1p-23 * norm_a * norm_b + 1e-30;
}

int harvest_build(const struct harvest *h, uint64_t run_id, uint32_t f0, uint32_t f1,
                  struct feature_record *recs)
{
    if (f1 < f0 || f1 > h->n) return SF_EINVAL;
    const size_t C = f1 - f0, d = h->sae->d_in, n = h->n;
    memset(recs, 0, C * sizeof *recs);
    if (C == 0) return 0;
    const struct model_config *mc = model_config(h->model);
    const size_t V = mc->vocab_size;
    const struct tokenizer *tok = model_tokenizer(h->model);
    const float *W_U = model_unembed(h->model), *wn = model_final_norm_weight(h->model);
    const struct harvest_opts *o = &h->o;
    const float scale = h->sae->norm_scale > 0 ? 1.0f / h->sae->norm_scale : 1.0f;
    float *dirs = malloc(C * d * sizeof *dirs);
    float *lg = malloc(C * SF_MAX(V, n) * sizeof *lg);
    float *dn = malloc(n * d * sizeof *dn);
    uint32_t *sel = malloc((SF_MAX(o->n_logits, o->n_neighbours) + 1) * sizeof *sel);
    float *val = malloc((SF_MAX(o->n_logits, o->n_neighbours) + 1) * sizeof *val);
    struct cand *cands = NULL;
    size_t ncap = 0;
    struct buf text, tmp;
    buf_init(&text, FEATURE_MAX_TEXT);
    buf_init(&tmp, 4096);
    int rc = SF_ENOMEM;
    if (!dirs || !lg || !dn || !sel || !val) goto out;

    /* logit effects: (C, d) directions through the final norm's weight, @ W_U^T; a LayerNorm
     * (a final norm with a bias: GPT-2) centres its input, so the direction is centred first */
    const bool centre = model_final_norm_bias(h->model) != NULL;
    for (size_t i = 0; i < C; i++) {
        const float *u = h->sae->W_dec + (f0 + i) * d;
        double mean = 0;
        if (centre) {
            for (size_t j = 0; j < d; j++) mean += u[j];
            mean /= (double)d;
        }
        for (size_t j = 0; j < d; j++)
            dirs[i * d + j] = (float)(u[j] - mean) * (wn ? wn[j] : 1.0f) * scale;
    }
    linear_forward(lg, dirs, W_U, NULL, C, d, V);
    const double wu_norm = o->n_logits ? max_row_norm(W_U, V, d) : 0;
    for (size_t i = 0; i < C; i++) {
        struct feature_logits *fl = &recs[i].logits;
        fl->feature = f0 + (uint32_t)i;
        if (!o->n_logits) continue;
        fl->top = calloc(o->n_logits, sizeof *fl->top);
        fl->bottom = calloc(o->n_logits, sizeof *fl->bottom);
        if (!fl->top || !fl->bottom) goto out;
        const float *row = lg + i * V, *dir = dirs + i * d;
        const double bound = gemm_bound(d, sqrt(dot_exact(dir, dir, d)), wu_norm);
        size_t m = select_exact(row, dir, W_U, V, d, o->n_logits, true, SIZE_MAX, bound, sel, val,
                                &cands, &ncap);
        if (m == SIZE_MAX) goto out;
        for (size_t j = 0; j < m; j++) {
            fl->top[j].token = sel[j];
            fl->top[j].value = val[j];
            piece_of(tok, sel[j], fl->top[j].piece, sizeof fl->top[j].piece, &tmp);
        }
        fl->n_top = (uint16_t)m;
        m = select_exact(row, dir, W_U, V, d, o->n_logits, false, SIZE_MAX, bound, sel, val, &cands,
                         &ncap);
        if (m == SIZE_MAX) goto out;
        for (size_t j = 0; j < m; j++) {
            fl->bottom[j].token = sel[j];
            fl->bottom[j].value = val[j];
            piece_of(tok, sel[j], fl->bottom[j].piece, sizeof fl->bottom[j].piece, &tmp);
        }
        fl->n_bottom = (uint16_t)m;
    }

    /* neighbours: cosine of normalised decoder rows, (C, d) @ (n, d)^T */
    for (size_t i = 0; i < n; i++) {
        const float *w = h->sae->W_dec + i * d;
        double s = 0;
        for (size_t j = 0; j < d; j++) s += (double)w[j] * w[j];
        float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
        for (size_t j = 0; j < d; j++) dn[i * d + j] = w[j] * inv;
    }
    linear_forward(lg, dn + f0 * d, dn, NULL, C, d, n);
    const double dn_norm = o->n_neighbours ? max_row_norm(dn, n, d) : 0;
    for (size_t i = 0; i < C; i++) {
        struct feature_neighbours *nb = &recs[i].neighbours;
        nb->feature = f0 + (uint32_t)i;
        if (!o->n_neighbours) continue;
        nb->nb = calloc(o->n_neighbours, sizeof *nb->nb);
        if (!nb->nb) goto out;
        const float *row = lg + i * n, *self = dn + (f0 + i) * d;
        const double bound = gemm_bound(d, sqrt(dot_exact(self, self, d)), dn_norm);
        size_t m = select_exact(row, self, dn, n, d, o->n_neighbours, true, f0 + i, bound, sel, val,
                                &cands, &ncap);
        if (m == SIZE_MAX) goto out;
        for (size_t j = 0; j < m; j++) {
            nb->nb[j].feature = sel[j];
            nb->nb[j].cosine = val[j];
        }
        nb->n = (uint16_t)m;
    }

    /* stats and examples */
    for (size_t i = 0; i < C; i++) {
        uint32_t f = f0 + (uint32_t)i;
        struct feature_stats *st = &recs[i].stats;
        st->feature = f;
        st->run_id = run_id;
        st->n_tokens = h->n_tok;
        st->fires = h->fires[f];
        st->max_act = h->max[f];
        st->sum_act = h->sum[f];
        st->n_hist = (uint16_t)o->n_hist;
        st->hist = malloc(o->n_hist * sizeof *st->hist);
        if (!st->hist) goto out;
        memcpy(st->hist, h->hist + f * o->n_hist, o->n_hist * sizeof *st->hist);
        if (o->n_intervals) {
            st->intervals = calloc(o->n_intervals, sizeof *st->intervals);
            if (!st->intervals) goto out;
            st->n_intervals = (uint16_t)o->n_intervals;
            bins_from(st->intervals, h->icount + f * o->n_intervals, o->n_intervals, 0.0f,
                      h->max[f] / (float)o->n_intervals, NULL);
        }
        if (o->n_quantiles) {
            st->quantiles = calloc(o->n_quantiles, sizeof *st->quantiles);
            if (!st->quantiles) goto out;
            st->n_quantiles = (uint16_t)o->n_quantiles;
            bins_from(st->quantiles, h->qcount + f * o->n_quantiles, o->n_quantiles, 0, 0,
                      h->qbound + f * (o->n_quantiles + 1));
        }
        rc = build_examples(h, f, &recs[i], &text);
        if (rc < 0) goto out;
        rc = SF_ENOMEM;
    }
    rc = 0;
out:
    if (rc < 0)
        for (size_t i = 0; i < C; i++) feature_record_fini(&recs[i]);
    free(dirs);
    free(lg);
    free(dn);
    free(sel);
    free(val);
    free(cands);
    buf_fini(&text);
    buf_fini(&tmp);
    return rc;
}

/* ---- writing a run ---- */

static void copy_str(char *dst, size_t cap, const char *s)
{
    snprintf(dst, cap, "%s", s ? s : "");
}

int harvest_store(const struct harvest *h, struct feature_store *fs,
                  const struct harvest_store_info *info, struct feature_run_info *run_out,
                  harvest_progress_fn progress, void *ud)
{
    if (!info || feature_store_check_id(info->sae_id) < 0) {
        log_error("harvest_store", "reason=bad_sae_id");
        return SF_EINVAL;
    }
    struct feature_sae sae;
    int rc = feature_store_get_sae(fs, info->sae_id, &sae);
    if (rc < 0 && rc != SF_EFORMAT) return rc;
    int64_t now = time_wall_ms();
    if (rc != 0) { /* new, or unreadable: start afresh */
        memset(&sae, 0, sizeof sae);
        sae.created_ms = now;
    }
    feature_sae_fini(&sae); /* the old metrics JSON is replaced below */
    copy_str(sae.sae_id, sizeof sae.sae_id, info->sae_id);
    copy_str(sae.model, sizeof sae.model, info->model);
    copy_str(sae.hook, sizeof sae.hook, h->sae->meta.hook_name[0] ? h->sae->meta.hook_name : "");
    char hook[128];
    if (model_hook_name(h->layer, h->point, hook, sizeof hook) == 0)
        copy_str(sae.hook, sizeof sae.hook, hook);
    copy_str(sae.arch, sizeof sae.arch, sae_arch_name(h->sae->arch));
    sae.d_in = (uint32_t)h->sae->d_in;
    sae.d_sae = (uint32_t)h->n;
    sae.k = (uint32_t)h->sae->k;
    copy_str(sae.source, sizeof sae.source, info->source);
    copy_str(sae.dataset, sizeof sae.dataset, info->dataset);
    sae.updated_ms = now;
    sae.step = info->step;
    sae.fingerprint = info->fingerprint ? info->fingerprint : sae_fingerprint(h->sae);
    sae.state = FEATURE_STATE_EVALUATING;

    struct feature_run_info run = {0};
    copy_str(run.sae_id, sizeof run.sae_id, info->sae_id);
    rc = feature_store_next_run_id(fs, info->sae_id, &run.run_id);
    if (rc < 0) return rc;
    run.started_ms = now;
    run.state = FEATURE_STATE_EVALUATING;
    run.tokens = h->n_tok;
    run.n_features = (uint32_t)h->n;
    copy_str(run.dataset, sizeof run.dataset, info->dataset);
    sae.latest_run = run.run_id;
    rc = feature_store_put_sae_run(fs, &sae, &run);
    if (rc < 0) return rc;

    size_t chunk = h->o.chunk_features;
    struct feature_record *recs = calloc(chunk, sizeof *recs);
    if (!recs) rc = SF_ENOMEM;
    for (size_t f0 = 0; f0 < h->n && rc == 0; f0 += chunk) {
        size_t f1 = SF_MIN(h->n, f0 + chunk);
        rc = harvest_build(h, run.run_id, (uint32_t)f0, (uint32_t)f1, recs);
        if (rc < 0) break;
        rc = feature_store_put_features(fs, info->sae_id, recs, f1 - f0);
        for (size_t i = 0; i < f1 - f0; i++) feature_record_fini(&recs[i]);
        if (rc < 0) break;
        run.features_done = (uint32_t)f1;
        if (progress) rc = progress(ud, (uint32_t)f1, (uint32_t)h->n);
    }
    free(recs);
    run.finished_ms = time_wall_ms();
    sae.updated_ms = run.finished_ms;
    run.state = sae.state = rc == 0 ? FEATURE_STATE_DONE : FEATURE_STATE_FAILED;
    if (rc == 0 && info->metrics_json) {
        run.metrics_json = strdup(info->metrics_json);
        sae.metrics_json = strdup(info->metrics_json);
        if (!run.metrics_json || !sae.metrics_json) rc = SF_ENOMEM;
    }
    int rc2 = feature_store_put_sae_run(fs, &sae, &run);
    if (rc == 0) rc = rc2;
    feature_sae_fini(&sae);
    feature_run_info_fini(&run);
    if (run_out) *run_out = run;
    if (rc == 0)
        log_info("harvest_stored", "sae=%s run=%llu features=%u path=%s", info->sae_id,
                 (unsigned long long)run.run_id, (unsigned)run.features_done,
                 feature_store_path(fs));
    else
        log_error("harvest_store", "sae=%s run=%llu features_done=%u err=%s", info->sae_id,
                  (unsigned long long)run.run_id, (unsigned)run.features_done, sf_strerror(rc));
    return rc;
}

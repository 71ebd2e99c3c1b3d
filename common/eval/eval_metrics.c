/* eval_metrics: FVU, L0, dead/dense latents, CE loss recovered and KL with the SAE
 * spliced into the forward pass (definitions in eval.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "eval.h"
#include "tensor/ops.h"

void eval_opts_default(struct eval_opts *o)
{
    memset(o, 0, sizeof *o);
    o->batch_seqs = 8;
}

int eval_resolve_hook(const struct model *m, const struct sae *sae, const char *name, size_t *layer,
                      enum model_hook_point *point)
{
    const struct model_config *mc = model_config(m);
    if (!name || !*name) name = sae->meta.hook_name;
    if (!name[0]) {
        log_error("eval_hook", "reason=no_hook_name (the SAE's metadata names none; pass one)");
        return SF_EINVAL;
    }
    if (model_hook_parse(name, mc->n_layers, layer, point) < 0) {
        log_error("eval_hook", "reason=bad_hook hook=%s n_layers=%zu", name, mc->n_layers);
        return SF_EINVAL;
    }
    if (mc->dim != sae->d_in) {
        log_error("eval_hook", "reason=width_mismatch hook=%s model_dim=%zu sae_d_in=%zu", name,
                  mc->dim, sae->d_in);
        return SF_EINVAL;
    }
    return 0;
}

/* ---- codes ---- */

int eval_codes_init(struct eval_codes *c, const struct sae *sae, size_t rows, size_t max_active)
{
    memset(c, 0, sizeof *c);
    size_t m = max_active ? max_active : (sae->arch == SAE_TOPK ? sae->k : sae->n);
    if (m == 0 || m > sae->n) m = sae->n;
    size_t total;
    if (rows == 0 || !size_mul_ok(rows, m, &total)) return SF_EINVAL;
    c->m = m;
    c->cap_rows = rows;
    c->idx = malloc(total * sizeof *c->idx);
    c->val = malloc(total * sizeof *c->val);
    c->count = malloc(rows * sizeof *c->count);
    if (!c->idx || !c->val || !c->count) {
        eval_codes_fini(c);
        return SF_ENOMEM;
    }
    return 0;
}

void eval_codes_fini(struct eval_codes *c)
{
    free(c->idx);
    free(c->val);
    free(c->count);
    memset(c, 0, sizeof *c);
}

int eval_codes_encode(struct eval_codes *c, const struct sae *sae, const float *x, size_t rows,
                      const bool *skip)
{
    if (rows > c->cap_rows) return SF_ERANGE;
    if (rows == 0) return 0;
    int rc = sae_encode(sae, x, rows, c->m, c->idx, c->val, c->count);
    if (rc < 0) return rc;
    if (skip)
        for (size_t r = 0; r < rows; r++)
            if (skip[r]) c->count[r] = 0;
    return 0;
}

/* ---- the run ---- */

enum pass { PASS_MEAN, PASS_CLEAN, PASS_SAE, PASS_ZERO, PASS_ABL_MEAN };

struct run {
    const struct sae *sae;
    const struct eval_data *data;
    enum pass pass;
    size_t d;
    double *sum; /* (d) PASS_MEAN */
    uint64_t n_mean;
    float *mean; /* (d) */
    bool *skip;  /* (rows) of the current forward */
    float *xhat; /* (rows, d) */
    struct eval_codes codes;
    double sse, sst, l0;
    uint64_t n_tok;
    uint64_t *fires; /* (n) */
    int err;
};

static int on_hook(void *user, const struct model_act *act)
{
    struct run *r = user;
    const size_t d = r->d, T = act->n_tokens;
    for (size_t i = 0; i < T; i++) r->skip[i] = r->data->special[act->tokens[i]];
    switch (r->pass) {
    case PASS_MEAN:
        for (size_t i = 0; i < T; i++) {
            if (r->skip[i]) continue;
            const float *x = act->x + i * d;
            for (size_t j = 0; j < d; j++) r->sum[j] += x[j];
            r->n_mean++;
        }
        break;
    case PASS_CLEAN:
        for (size_t i = 0; i < T; i++) {
            if (r->skip[i]) continue;
            const float *x = act->x + i * d;
            double s = 0.0;
            for (size_t j = 0; j < d; j++) {
                double e = (double)x[j] - r->mean[j];
                s += e * e;
            }
            r->sst += s;
        }
        break;
    case PASS_SAE:
        for (size_t r0 = 0; r0 < T; r0 += r->codes.cap_rows) {
            size_t n = SF_MIN(r->codes.cap_rows, T - r0);
            int rc = eval_codes_encode(&r->codes, r->sae, act->x + r0 * d, n, r->skip + r0);
            if (rc < 0) return r->err = rc;
            sae_decode(r->sae, r->codes.idx, r->codes.val, r->codes.count, r->codes.m, n,
                       r->xhat + r0 * d);
            for (size_t i = 0; i < n; i++) {
                if (r->skip[r0 + i]) continue;
                uint32_t cnt = r->codes.count[i];
                for (uint32_t a = 0; a < cnt; a++)
                    if (r->codes.val[i * r->codes.m + a] != 0.0f)
                        r->fires[r->codes.idx[i * r->codes.m + a]]++, r->l0 += 1.0;
            }
        }
        for (size_t i = 0; i < T; i++) {
            if (r->skip[i]) continue;
            float *x = act->x + i * d;
            const float *xh = r->xhat + i * d;
            double s = 0.0;
            for (size_t j = 0; j < d; j++) {
                double e = (double)x[j] - xh[j];
                s += e * e;
            }
            r->sse += s;
            r->n_tok++;
            memcpy(x, xh, d * sizeof *x);
        }
        break;
    case PASS_ZERO:
        for (size_t i = 0; i < T; i++)
            if (!r->skip[i]) memset(act->x + i * d, 0, d * sizeof(float));
        break;
    case PASS_ABL_MEAN:
        for (size_t i = 0; i < T; i++)
            if (!r->skip[i]) memcpy(act->x + i * d, r->mean, d * sizeof(float));
        break;
    }
    return 0;
}

/* Per-row log-sum-exp of logits (rows, V). */
static void row_lse(double *lse, const float *logits, size_t rows, size_t V)
{
#pragma omp parallel for schedule(static) if (rows * V >= ((size_t)1 << 20))
    for (size_t i = 0; i < rows; i++) lse[i] = logsumexp(logits + i * V, V);
}

/* KL(p || q) for one row given logits and their log-sum-exps, in double. */
static double row_kl(const float *lp, double lse_p, const float *lq, double lse_q, size_t V)
{
    double kl = 0.0;
    for (size_t v = 0; v < V; v++) {
        double a = (double)lp[v] - lse_p, b = (double)lq[v] - lse_q;
        kl += exp(a) * (a - b);
    }
    return kl;
}

static double ratio(double num, double den)
{
    return den != 0.0 ? num / den : NAN;
}

int eval_metrics_run(struct model *m, const struct sae *sae, const struct eval_data *data,
                     const struct eval_opts *o, struct eval_metrics *out, float *density)
{
    struct eval_opts def;
    if (!o) {
        eval_opts_default(&def);
        o = &def;
    }
    memset(out, 0, sizeof *out);
    double t0 = time_now_s();
    size_t layer;
    enum model_hook_point point;
    int rc = eval_resolve_hook(m, sae, o->hook, &layer, &point);
    if (rc < 0) return rc;
    const struct model_config *mc = model_config(m);
    if (!data || data->n_windows == 0 || data->vocab != mc->vocab_size) {
        log_error("eval_metrics", "reason=bad_data vocab=%zu model_vocab=%zu",
                  data ? data->vocab : 0, mc->vocab_size);
        return SF_EINVAL;
    }
    const size_t d = sae->d_in, V = mc->vocab_size, ctxlen = data->context;
    size_t n_win = data->n_windows;
    if (o->max_tokens) {
        size_t t = 0, w = 0;
        while (w < n_win && t < o->max_tokens) t += data->len[w++];
        n_win = w;
    }
    size_t bs = o->batch_seqs ? SF_MIN(o->batch_seqs, (size_t)4096) : 8;
    while (bs > 1 && (double)bs * ctxlen * V > (double)(1u << 25)) bs /= 2;
    bs = SF_MIN(bs, n_win);
    const size_t rows = bs * ctxlen;

    struct run r = {.sae = sae, .data = data, .d = d};
    struct model_ctx *ctx = model_ctx_new(m, bs, ctxlen);
    float *lc = malloc(rows * V * sizeof *lc), *lq = malloc(rows * V * sizeof *lq);
    double *lse_c = malloc(rows * sizeof *lse_c), *lse_q = malloc(rows * sizeof *lse_q);
    double *ce_row = malloc(rows * sizeof *ce_row), *kl_row = malloc(rows * sizeof *kl_row);
    bool *valid = malloc(rows * sizeof *valid);
    r.sum = calloc(d, sizeof *r.sum);
    r.mean = calloc(d, sizeof *r.mean);
    r.skip = malloc(rows * sizeof *r.skip);
    r.xhat = malloc(rows * d * sizeof *r.xhat);
    r.fires = calloc(sae->n, sizeof *r.fires);
    rc = SF_ENOMEM;
    if (!ctx || !lc || !lq || !lse_c || !lse_q || !ce_row || !kl_row || !valid || !r.sum ||
        !r.mean || !r.skip || !r.xhat || !r.fires)
        goto out;
    {
        size_t m_act = sae->arch == SAE_TOPK ? sae->k : sae->n;
        size_t cap = SF_MAX((size_t)1, SF_MIN(rows, ((size_t)1 << 22) / SF_MAX(m_act, 1)));
        rc = eval_codes_init(&r.codes, sae, cap, 0);
        if (rc < 0) goto out;
    }
    rc = model_ctx_add_hook_at(ctx, layer, point, on_hook, &r);
    if (rc < 0) goto out;
    model_hook_name(layer, point, out->hook, sizeof out->hook);

    /* Pass 1: the mean activation (capture only). */
    struct model_seq seqs[4096];
    r.pass = PASS_MEAN;
    for (size_t w0 = 0; w0 < n_win; w0 += bs) {
        size_t nb = SF_MIN(bs, n_win - w0);
        for (size_t i = 0; i < nb; i++)
            seqs[i] = (struct model_seq){
                .slot = i, .tokens = data->tokens + (w0 + i) * ctxlen, .n = data->len[w0 + i]};
        model_ctx_reset_all(ctx);
        rc = model_forward(ctx, seqs, nb, MODEL_LOGITS_NONE, NULL);
        if (rc) goto out;
        if (o->progress) o->progress(o->progress_ud, "eval 1/2 (mean)", w0 + nb, n_win);
    }
    if (r.n_mean == 0) {
        log_error("eval_metrics", "reason=no_countable_tokens");
        rc = SF_EINVAL;
        goto out;
    }
    for (size_t j = 0; j < d; j++) r.mean[j] = (float)(r.sum[j] / (double)r.n_mean);

    /* Pass 2: clean, spliced, zero- and mean-ablated, batch by batch. */
    double ce[4] = {0}, kl[4] = {0};
    uint64_t n_pred = 0;
    for (size_t w0 = 0; w0 < n_win; w0 += bs) {
        size_t nb = SF_MIN(bs, n_win - w0), T = 0;
        for (size_t i = 0; i < nb; i++) {
            const int32_t *tk = data->tokens + (w0 + i) * ctxlen;
            size_t n = data->len[w0 + i];
            seqs[i] = (struct model_seq){.slot = i, .tokens = tk, .n = n};
            for (size_t p = 0; p < n; p++)
                valid[T + p] = p + 1 < n && !data->special[tk[p]] && !data->special[tk[p + 1]];
            T += n;
        }
        for (int pass = 0; pass < 4; pass++) {
            r.pass = (enum pass)(PASS_CLEAN + pass);
            model_ctx_reset_all(ctx);
            float *lg = pass == 0 ? lc : lq;
            double *lse = pass == 0 ? lse_c : lse_q;
            rc = model_forward(ctx, seqs, nb, MODEL_LOGITS_ALL, lg);
            if (rc) goto out;
            row_lse(lse, lg, T, V);
            size_t t = 0;
            for (size_t i = 0; i < nb; i++) {
                const int32_t *tk = seqs[i].tokens;
                for (size_t p = 0; p < seqs[i].n; p++, t++) {
                    ce_row[t] = valid[t] ? lse[t] - (double)lg[t * V + tk[p + 1]] : 0.0;
                }
            }
            if (pass > 0) {
#pragma omp parallel for schedule(static) if (T * V >= ((size_t)1 << 18))
                for (size_t i = 0; i < T; i++)
                    kl_row[i] =
                        valid[i] ? row_kl(lc + i * V, lse_c[i], lq + i * V, lse_q[i], V) : 0.0;
            }
            for (size_t i = 0; i < T; i++) {
                if (!valid[i]) continue;
                ce[pass] += ce_row[i];
                if (pass > 0) kl[pass] += kl_row[i];
                if (pass == 0) n_pred++;
            }
        }
        if (o->progress) o->progress(o->progress_ud, "eval 2/2 (metrics)", w0 + nb, n_win);
    }
    if (n_pred == 0 || r.n_tok == 0) {
        log_error("eval_metrics", "reason=no_countable_tokens");
        rc = SF_EINVAL;
        goto out;
    }

    out->d_in = d;
    out->n_latents = sae->n;
    out->k = sae->k;
    out->n_windows = n_win;
    out->n_tokens = r.n_tok;
    out->n_pred = n_pred;
    out->fvu = ratio(r.sse, r.sst);
    out->explained_variance = 1.0 - out->fvu;
    out->mse = r.sse / ((double)r.n_tok * (double)d);
    out->l0 = r.l0 / (double)r.n_tok;
    for (size_t i = 0; i < sae->n; i++) {
        double dens = (double)r.fires[i] / (double)r.n_tok;
        if (density) density[i] = (float)dens;
        if (r.fires[i] == 0) {
            out->n_dead++;
            continue;
        }
        if (dens > 0.01) out->n_dense1++;
        if (dens > 0.10) out->n_dense10++;
        double b = floor((log10(dens) - EVAL_DENSITY_LO) / EVAL_DENSITY_WIDTH);
        if (b < 0) b = 0;
        if (b > EVAL_DENSITY_BINS - 1) b = EVAL_DENSITY_BINS - 1;
        out->density_hist[(size_t)b]++;
    }
    out->dead_frac = (double)out->n_dead / (double)sae->n;
    out->dense1_frac = (double)out->n_dense1 / (double)sae->n;
    out->dense10_frac = (double)out->n_dense10 / (double)sae->n;
    out->ce_clean = ce[0] / (double)n_pred;
    out->ce_sae = ce[1] / (double)n_pred;
    out->ce_zero = ce[2] / (double)n_pred;
    out->ce_mean = ce[3] / (double)n_pred;
    out->kl_sae = kl[1] / (double)n_pred;
    out->kl_zero = kl[2] / (double)n_pred;
    out->kl_mean = kl[3] / (double)n_pred;
    out->loss_recovered_zero = ratio(out->ce_zero - out->ce_sae, out->ce_zero - out->ce_clean);
    out->loss_recovered_mean = ratio(out->ce_mean - out->ce_sae, out->ce_mean - out->ce_clean);
    out->kl_score_zero = ratio(out->kl_zero - out->kl_sae, out->kl_zero);
    out->kl_score_mean = ratio(out->kl_mean - out->kl_sae, out->kl_mean);
    out->seconds = time_now_s() - t0;
    {
        uint64_t toks = 0;
        for (size_t w = 0; w < n_win; w++) toks += data->len[w];
        out->tokens_per_s = (double)toks / (out->seconds > 0 ? out->seconds : 1e-9);
    }
    log_info("eval_done",
             "hook=%s tokens=%llu fvu=%.5f l0=%.2f dead=%.4f ce_clean=%.4f "
             "ce_sae=%.4f loss_recovered=%.4f s=%.2f",
             out->hook, (unsigned long long)out->n_tokens, out->fvu, out->l0, out->dead_frac,
             out->ce_clean, out->ce_sae, out->loss_recovered_zero, out->seconds);
    rc = 0;
out:
    if (rc > 0) rc = SF_ERR;
    eval_codes_fini(&r.codes);
    model_ctx_destroy(&ctx);
    free(lc);
    free(lq);
    free(lse_c);
    free(lse_q);
    free(ce_row);
    free(kl_row);
    free(valid);
    free(r.sum);
    free(r.mean);
    free(r.skip);
    free(r.xhat);
    free(r.fires);
    return rc;
}

/* ---- reports ---- */

int eval_metrics_table(const struct eval_metrics *m, struct buf *out)
{
    int rc = 0;
#define ROW(name, fmt, ...) rc |= buf_printf(out, "%-28s " fmt "\n", name, __VA_ARGS__)
    ROW("hook", "%s", m->hook);
    ROW("d_in / latents / k", "%zu / %zu / %zu", m->d_in, m->n_latents, m->k);
    ROW("eval tokens (windows)", "%llu (%llu)", (unsigned long long)m->n_tokens,
        (unsigned long long)m->n_windows);
    ROW("FVU", "%.5f", m->fvu);
    ROW("explained variance", "%.5f", m->explained_variance);
    ROW("MSE per dim", "%.6g", m->mse);
    ROW("L0", "%.3f", m->l0);
    ROW("dead latents", "%llu (%.2f%%)", (unsigned long long)m->n_dead, 100.0 * m->dead_frac);
    ROW("dense > 1%", "%llu (%.2f%%)", (unsigned long long)m->n_dense1, 100.0 * m->dense1_frac);
    ROW("dense > 10%", "%llu (%.2f%%)", (unsigned long long)m->n_dense10, 100.0 * m->dense10_frac);
    ROW("CE clean", "%.5f", m->ce_clean);
    ROW("CE with SAE", "%.5f", m->ce_sae);
    ROW("CE zero-ablated", "%.5f", m->ce_zero);
    ROW("CE mean-ablated", "%.5f", m->ce_mean);
    ROW("loss recovered (zero)", "%.5f", m->loss_recovered_zero);
    ROW("loss recovered (mean)", "%.5f", m->loss_recovered_mean);
    ROW("KL with SAE", "%.6f", m->kl_sae);
    ROW("KL zero / mean-ablated", "%.6f / %.6f", m->kl_zero, m->kl_mean);
    ROW("KL score (zero / mean)", "%.5f / %.5f", m->kl_score_zero, m->kl_score_mean);
    ROW("predictions counted", "%llu", (unsigned long long)m->n_pred);
    ROW("time", "%.2f s (%.0f tokens/s)", m->seconds, m->tokens_per_s);
    rc |= buf_printf(out, "log10 density histogram (live latents):\n");
    for (size_t b = 0; b < EVAL_DENSITY_BINS; b++) {
        if (!m->density_hist[b]) continue;
        double lo = EVAL_DENSITY_LO + (double)b * EVAL_DENSITY_WIDTH;
        rc |= buf_printf(out, "  [%5.1f, %5.1f) %llu\n", lo, lo + EVAL_DENSITY_WIDTH,
                         (unsigned long long)m->density_hist[b]);
    }
#undef ROW
    return rc ? SF_ENOMEM : 0;
}

/* JSON numbers: NaN and infinities are not JSON, write null. */
static int json_num(struct buf *out, const char *key, double v, bool comma)
{
    if (isfinite(v)) return buf_printf(out, "\"%s\":%.9g%s", key, v, comma ? "," : "");
    return buf_printf(out, "\"%s\":null%s", key, comma ? "," : "");
}

int eval_metrics_json(const struct eval_metrics *m, struct buf *out)
{
    int rc = buf_printf(out, "{\"hook\":\"%s\",\"d_in\":%zu,\"d_sae\":%zu,\"k\":%zu,", m->hook,
                        m->d_in, m->n_latents, m->k);
    rc |= buf_printf(out, "\"n_windows\":%llu,\"n_tokens\":%llu,\"n_predictions\":%llu,",
                     (unsigned long long)m->n_windows, (unsigned long long)m->n_tokens,
                     (unsigned long long)m->n_pred);
    rc |= json_num(out, "fvu", m->fvu, true);
    rc |= json_num(out, "explained_variance", m->explained_variance, true);
    rc |= json_num(out, "mse", m->mse, true);
    rc |= json_num(out, "l0", m->l0, true);
    rc |= buf_printf(out, "\"n_dead\":%llu,\"n_dense_1pct\":%llu,\"n_dense_10pct\":%llu,",
                     (unsigned long long)m->n_dead, (unsigned long long)m->n_dense1,
                     (unsigned long long)m->n_dense10);
    rc |= json_num(out, "dead_frac", m->dead_frac, true);
    rc |= json_num(out, "dense_1pct_frac", m->dense1_frac, true);
    rc |= json_num(out, "dense_10pct_frac", m->dense10_frac, true);
    rc |= json_num(out, "ce_clean", m->ce_clean, true);
    rc |= json_num(out, "ce_sae", m->ce_sae, true);
    rc |= json_num(out, "ce_zero_ablation", m->ce_zero, true);
    rc |= json_num(out, "ce_mean_ablation", m->ce_mean, true);
    rc |= json_num(out, "loss_recovered_zero", m->loss_recovered_zero, true);
    rc |= json_num(out, "loss_recovered_mean", m->loss_recovered_mean, true);
    rc |= json_num(out, "kl_sae", m->kl_sae, true);
    rc |= json_num(out, "kl_zero_ablation", m->kl_zero, true);
    rc |= json_num(out, "kl_mean_ablation", m->kl_mean, true);
    rc |= json_num(out, "kl_score_zero", m->kl_score_zero, true);
    rc |= json_num(out, "kl_score_mean", m->kl_score_mean, true);
    rc |= buf_printf(out, "\"log10_density_hist\":{\"lo\":%.1f,\"width\":%.1f,\"counts\":[",
                     EVAL_DENSITY_LO, EVAL_DENSITY_WIDTH);
    for (size_t b = 0; b < EVAL_DENSITY_BINS; b++)
        rc |= buf_printf(out, "%s%llu", b ? "," : "", (unsigned long long)m->density_hist[b]);
    rc |= buf_printf(out, "]},");
    rc |= json_num(out, "seconds", m->seconds, true);
    rc |= json_num(out, "tokens_per_s", m->tokens_per_s, false);
    rc |= buf_printf(out, "}");
    return rc ? SF_ENOMEM : 0;
}

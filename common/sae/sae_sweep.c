/* sae_sweep: held-out quality measures and the learning-rate sweep (sae_sweep.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "sae/sae_sweep.h"

#define Q_CHUNK 4096

int sae_quality_measure(const struct sae *sae, const float *x, size_t N, struct sae_quality *q)
{
    if (!sae || !x || !q || N < 2) return SF_EINVAL;
    const size_t d = sae->d_in, n = sae->n;
    const size_t cap = sae->arch == SAE_TOPK ? (sae->k < n ? sae->k : n) : n;
    const size_t C = N < Q_CHUNK ? N : Q_CHUNK;
    float *xh = malloc(C * d * sizeof *xh);
    uint32_t *idx = malloc(C * cap * sizeof *idx), *cnt = malloc(C * sizeof *cnt);
    float *val = malloc(C * cap * sizeof *val);
    uint64_t *fires = calloc(n, sizeof *fires);
    double *mean = calloc(d, sizeof *mean);
    int rc = xh && idx && cnt && val && fires && mean ? 0 : SF_ENOMEM;
    double err = 0, l0 = 0, xx = 0;
    for (size_t b = 0; rc == 0 && b < N; b++)
        for (size_t j = 0; j < d; j++) mean[j] += x[b * d + j];
    for (size_t j = 0; rc == 0 && j < d; j++) mean[j] /= (double)N;
    for (size_t b0 = 0; rc == 0 && b0 < N; b0 += C) {
        size_t rows = N - b0 < C ? N - b0 : C;
        const float *xb = x + b0 * d;
        rc = sae_encode(sae, xb, rows, cap, idx, val, cnt);
        if (rc) break;
        sae_decode(sae, idx, val, cnt, cap, rows, xh);
        for (size_t r = 0; r < rows; r++) {
            l0 += cnt[r];
            for (uint32_t k = 0; k < cnt[r]; k++) fires[idx[r * cap + k]]++;
            for (size_t j = 0; j < d; j++) {
                double e = (double)xh[r * d + j] - xb[r * d + j];
                double c = (double)xb[r * d + j] - mean[j];
                err += e * e;
                xx += c * c;
            }
        }
    }
    if (rc == 0) {
        size_t dead = 0, dense = 0;
        for (size_t i = 0; i < n; i++) {
            dead += fires[i] == 0;
            dense += (double)fires[i] > 0.01 * (double)N;
        }
        q->fvu = xx > 0 ? err / xx : 0;
        q->l0 = l0 / (double)N;
        q->dead_frac = (double)dead / (double)n;
        q->dense_frac = (double)dense / (double)n;
    }
    free(xh);
    free(idx);
    free(cnt);
    free(val);
    free(fires);
    free(mean);
    return rc;
}

int sae_sweep_lr(const struct sae_train_config *cfg, const float *train, size_t n_train, size_t B,
                 const float *held, size_t n_held, const double *lrs, size_t n_lr,
                 struct sae_sweep_row *rows, size_t *best)
{
    if (!cfg || !train || !held || !lrs || !rows || !best || n_lr == 0 || B == 0 || n_train == 0 ||
        n_held < 2)
        return SF_EINVAL;
    size_t nbest = SIZE_MAX;
    for (size_t r = 0; r < n_lr; r++) {
        struct sae_sweep_row *row = &rows[r];
        memset(row, 0, sizeof *row);
        row->lr = lrs[r];
        row->rc = SF_EINVAL;
        struct sae_train_config c = *cfg;
        c.lr = lrs[r];
        c.total_tokens = (int64_t)n_train;
        if (!(lrs[r] > 0)) continue;
        double t0 = time_now_s();
        struct sae_trainer *t = sae_trainer_new(&c);
        if (!t) continue;
        struct sae_train_metrics m = {0};
        int rc = 0;
        for (size_t pos = 0; rc == 0 && pos < n_train; pos += B) {
            size_t nb = n_train - pos < B ? n_train - pos : B;
            rc = sae_trainer_step(t, train + pos * c.d_in, nb, &m);
        }
        struct sae *s = rc == 0 ? sae_trainer_export(t) : NULL;
        if (rc == 0 && !s) rc = SF_ENOMEM;
        if (rc == 0) rc = sae_quality_measure(s, held, n_held, &row->q);
        row->seconds = time_now_s() - t0;
        row->train_fvu = m.fvu;
        row->rc = rc;
        sae_destroy(&s);
        sae_trainer_destroy(&t);
        if (rc == SF_ENOMEM) return rc;
        if (rc == 0 && isfinite(row->q.fvu) &&
            (nbest == SIZE_MAX || row->q.fvu < rows[nbest].q.fvu))
            nbest = r;
    }
    if (nbest == SIZE_MAX) return SF_EINVAL;
    *best = nbest;
    return 0;
}

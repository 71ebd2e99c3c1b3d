/* sae_guard: the batch guard that keeps poisoned activations out of training (see
 * sae_train.h). */
#include <math.h>

#include "sae/sae_train.h"

#define GUARD_EMA 0.05

const char *sae_guard_reason(enum sae_guard_verdict v)
{
    static const char *const names[SAE_GUARD_COUNT] = {"ok", "nonfinite", "magnitude",
                                                       "norm_outlier"};
    return v >= 0 && v < SAE_GUARD_COUNT ? names[v] : "unknown";
}

void sae_batch_guard_init(struct sae_batch_guard *g, double abs_max, double norm_ratio)
{
    g->abs_max = abs_max;
    g->norm_ratio = norm_ratio;
    g->mean_norm = g->max_norm = 0;
    g->accepted = 0;
}

enum sae_guard_verdict sae_batch_guard_check(struct sae_batch_guard *g, const float *x, size_t n,
                                             size_t d, struct sae_guard_stats *st)
{
    struct sae_guard_stats s = {0};
    enum sae_guard_verdict v = SAE_GUARD_OK;
    double sum_norm = 0;
    for (size_t i = 0; i < n && v == SAE_GUARD_OK; i++) {
        const float *r = x + i * d;
        double ss = 0;
        for (size_t j = 0; j < d; j++) {
            double a = fabs((double)r[j]);
            if (!isfinite(a)) {
                v = SAE_GUARD_NONFINITE;
                s.max_abs = INFINITY;
                break;
            }
            if (a > s.max_abs) s.max_abs = a;
            ss += a * a;
        }
        double nrm = sqrt(ss);
        sum_norm += nrm;
        if (nrm > s.max_norm) s.max_norm = nrm;
    }
    if (v == SAE_GUARD_OK && g->abs_max > 0 && s.max_abs > g->abs_max) v = SAE_GUARD_MAGNITUDE;
    s.mean_norm = n ? sum_norm / (double)n : 0;
    /* a zero baseline (all-zero batches so far) says nothing about scale: no test */
    if (v == SAE_GUARD_OK && g->norm_ratio > 0 && g->accepted > 0 &&
        ((g->mean_norm > 0 && s.mean_norm > g->norm_ratio * g->mean_norm) ||
         (g->max_norm > 0 && s.max_norm > g->norm_ratio * g->max_norm)))
        v = SAE_GUARD_NORM;
    if (v == SAE_GUARD_OK && n > 0) {
        if (g->accepted == 0) {
            g->mean_norm = s.mean_norm;
            g->max_norm = s.max_norm;
        } else {
            g->mean_norm += GUARD_EMA * (s.mean_norm - g->mean_norm);
            g->max_norm += GUARD_EMA * (s.max_norm - g->max_norm);
        }
        g->accepted++;
    }
    if (st) *st = s;
    return v;
}

/* Finite-difference checks of the reference loss/gradient (sae_ref_loss) for every
 * loss term: MSE, Multi-TopK, AuxK, L1 (with non-unit decoder rows, so the norm's own
 * gradient shows), and ghost grads. Double precision, central differences, selection
 * held fixed at the point. The fast step is checked against this reference in
 * test_sae_step. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../support/check.h"
#include "core/core.h"
#include "sae/sae_train.h"

enum { D = 6, N = 12, BT = 5, K = 2 };

struct tiny {
    double W_enc[N * D], b_enc[N], W_dec[N * D], b_dec[D];
    double xs[BT * D];
    uint8_t sel[BT * N], aux[BT * N], dead[N];
    double e[BT * D], r[BT * D], gc[BT];
};

static double preact(const struct tiny *t, size_t b, size_t i)
{
    double a = t->b_enc[i];
    for (size_t j = 0; j < D; j++) a += t->W_enc[i * D + j] * (t->xs[b * D + j] - t->b_dec[j]);
    return a;
}

/* top-m of the row among the allowed latents, by value */
static void pick(const struct tiny *t, size_t b, const uint8_t *allowed, size_t m, uint8_t *out,
                 uint8_t mark, uint8_t mark_rest, size_t m_first)
{
    uint8_t used[N] = {0};
    for (size_t q = 0; q < m; q++) {
        size_t best = N;
        double bv = -INFINITY;
        for (size_t i = 0; i < N; i++) {
            if (used[i] || (allowed && !allowed[i])) continue;
            double a = preact(t, b, i);
            if (a > bv) {
                bv = a;
                best = i;
            }
        }
        if (best == N) return;
        used[best] = 1;
        out[b * N + best] = q < m_first ? mark : mark_rest;
    }
}

static void fd_check(const char *name, struct sae_train_config *cfg, struct tiny *t, bool aux,
                     bool ghost, double *term_out)
{
    struct sae_ref_problem p = {0};
    p.cfg = cfg;
    p.B = BT;
    p.xs = t->xs;
    p.sel = t->sel;
    p.aux = aux ? t->aux : NULL;
    p.dead = ghost ? t->dead : NULL;
    p.e = t->e;
    p.r = t->r;
    p.ghost_c = t->gc;
    struct sae_ref_params w = {t->W_enc, t->b_enc, t->W_dec, t->b_dec};
    double gW_enc[N * D], gb_enc[N], gW_dec[N * D], gb_dec[D];
    struct sae_ref_params g = {gW_enc, gb_enc, gW_dec, gb_dec};
    struct sae_ref_terms terms;
    sae_ref_loss(&p, &w, &g, &terms);
    *term_out = terms.total;
    double *params[4] = {t->W_enc, t->b_enc, t->W_dec, t->b_dec};
    double *grads[4] = {gW_enc, gb_enc, gW_dec, gb_dec};
    size_t lens[4] = {N * D, N, N * D, D};
    const double h = 1e-6;
    double worst = 0, gmax = 0;
    int bad = 0;
    for (int a = 0; a < 4; a++) {
        for (size_t q = 0; q < lens[a]; q++) {
            double keep = params[a][q];
            params[a][q] = keep + h;
            double lp = sae_ref_loss(&p, &w, NULL, NULL);
            params[a][q] = keep - h;
            double lm = sae_ref_loss(&p, &w, NULL, NULL);
            params[a][q] = keep;
            double fd = (lp - lm) / (2 * h);
            double err = fabs(fd - grads[a][q]);
            gmax = fmax(gmax, fabs(grads[a][q]));
            if (err > worst) worst = err;
            if (err > 1e-7 + 1e-5 * fabs(grads[a][q])) bad++;
        }
    }
    CHECK_MSG(bad == 0, "%s: %d gradient entries off (worst abs err %.3g)", name, bad, worst);
    CHECK(gmax > 1e-3); /* the term actually produced gradient */
    printf("%-10s loss %.6f  mse %.5f mse4 %.5f auxk %.5f l1 %.5f ghost %.5f  max|g| %.3g  "
           "worst FD err %.2g\n",
           name, terms.total, terms.mse, terms.mse4, terms.auxk, terms.l1, terms.ghost, gmax,
           worst);
}

static void init_tiny(struct tiny *t, uint64_t seed, bool unit_rows)
{
    struct rng r;
    rng_seed(&r, seed);
    memset(t, 0, sizeof *t);
    for (size_t q = 0; q < N * D; q++) {
        t->W_enc[q] = rng_normal(&r) * 0.6;
        t->W_dec[q] = rng_normal(&r) * 0.6;
    }
    if (unit_rows)
        for (size_t i = 0; i < N; i++) {
            double ss = 0;
            for (size_t j = 0; j < D; j++) ss += t->W_dec[i * D + j] * t->W_dec[i * D + j];
            for (size_t j = 0; j < D; j++) t->W_dec[i * D + j] /= sqrt(ss);
        }
    for (size_t i = 0; i < N; i++) t->b_enc[i] = rng_normal(&r) * 0.2;
    for (size_t j = 0; j < D; j++) t->b_dec[j] = rng_normal(&r) * 0.3;
    for (size_t q = 0; q < BT * D; q++) t->xs[q] = rng_normal(&r) * 1.5;
    for (size_t i = 0; i < N; i++) t->dead[i] = i % 3 == 1; /* 4 dead latents */
}

int main(void)
{
    log_init("test_sae_grad", LOG_LOGFMT, LOG_WARN);
    struct tiny t;
    double total;
    struct sae_train_config cfg;

    /* MSE of a Top-K SAE */
    sae_train_config_default(&cfg, SAE_TOPK, D, N, K);
    init_tiny(&t, 1, true);
    for (size_t b = 0; b < BT; b++) pick(&t, b, NULL, K, t.sel, SAE_REF_MAIN, SAE_REF_MAIN, K);
    fd_check("mse", &cfg, &t, false, false, &total);

    /* Multi-TopK: L(k) + L(4k)/8 */
    cfg.multi_topk = true;
    memset(t.sel, 0, sizeof t.sel);
    for (size_t b = 0; b < BT; b++) pick(&t, b, NULL, 4 * K, t.sel, SAE_REF_MAIN, SAE_REF_EXTRA, K);
    fd_check("multi-topk", &cfg, &t, false, false, &total);
    cfg.multi_topk = false;

    /* AuxK over the dead latents, weighted up so that it dominates */
    memset(t.sel, 0, sizeof t.sel);
    for (size_t b = 0; b < BT; b++) {
        pick(&t, b, NULL, K, t.sel, SAE_REF_MAIN, SAE_REF_MAIN, K);
        pick(&t, b, t.dead, 2, t.aux, 1, 1, 2);
    }
    cfg.auxk_alpha = 4.0;
    fd_check("auxk", &cfg, &t, true, false, &total);
    /* the AuxK term alone: alpha = 0 removes exactly alpha * auxk from the loss */
    double with_aux = total;
    cfg.auxk_alpha = 0;
    fd_check("mse(ref)", &cfg, &t, false, false, &total);
    CHECK(with_aux > total);

    /* ReLU + L1 with decoder rows away from unit norm */
    sae_train_config_default(&cfg, SAE_STANDARD, D, N, 0);
    cfg.l1_coeff = 0.3;
    init_tiny(&t, 2, false);
    for (size_t b = 0; b < BT; b++)
        for (size_t i = 0; i < N; i++) t.sel[b * N + i] = preact(&t, b, i) > 0 ? SAE_REF_MAIN : 0;
    fd_check("l1", &cfg, &t, false, false, &total);

    /* ghost grads on the dead latents (scale, residual and mse ratio detached) */
    cfg.ghost_grads = true;
    cfg.l1_coeff = 0;
    fd_check("ghost", &cfg, &t, false, true, &total);
    return check_exit();
}

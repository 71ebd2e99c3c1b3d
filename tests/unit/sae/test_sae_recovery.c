/* Ground-truth recovery: activations built from a known sparse dictionary (512 unit
 * features; each sample is a positive combination of 3-4 of them plus small noise). A
 * Top-K SAE with n = 512, k = 4 must find the features: the mean over true features
 * of the best cosine with a decoder row >= 0.95.
 *
 * Two cases:
 * - d = 64 (the example in the issue). 512 random unit features in 64 dimensions
 *   interfere (|cos| ~ 0.1 typical, up to ~0.5), so a linear encoder cannot reach a
 *   small FVU: the true dictionary itself used as a Top-4 SAE (W_enc = W_dec =
 *   features) gives FVU ~0.24 on this data. The trained SAE learns biases and encoder
 *   rows that suppress part of the cross-talk; the test asserts it does at least 1.6x
 *   better than that oracle (it reaches ~0.11).
 * - d = 256, where the features interfere less: FVU <= 0.05 (it reaches ~0.02).
 * Everything is measured on fresh data with the exported (norm-folded) SAE through
 * the inference path. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../support/check.h"
#include "core/core.h"
#include "sae/sae.h"
#include "sae/sae_train.h"
#include "tensor/tensor.h"

enum { NF = 512 };

static void gen_batch(struct rng *r, const float *F, float *x, size_t B, size_t D)
{
    for (size_t b = 0; b < B; b++) {
        float *row = x + b * D;
        for (size_t j = 0; j < D; j++) row[j] = 0.01f * rng_normal(r);
        size_t cnt = 3 + rng_below(r, 2);
        size_t used[4];
        for (size_t q = 0; q < cnt; q++) {
            size_t f;
            bool dup;
            do {
                f = rng_below(r, NF);
                dup = false;
                for (size_t p = 0; p < q; p++) dup |= used[p] == f;
            } while (dup);
            used[q] = f;
            float mag = 0.5f + (float)rng_uniform(r);
            for (size_t j = 0; j < D; j++) row[j] += mag * F[f * D + j];
        }
    }
}

/* Trains on data of width D and checks recovery; fvu_max > 0 is an absolute FVU
 * bound, else FVU must beat the oracle by 1.6x. */
static void run_case(size_t D, size_t steps, double fvu_max)
{
    struct rng r;
    rng_seed(&r, 42);
    float *F = malloc(NF * D * sizeof *F);
    for (size_t i = 0; i < NF; i++) {
        double ss = 0;
        for (size_t j = 0; j < D; j++) {
            F[i * D + j] = rng_normal(&r);
            ss += (double)F[i * D + j] * F[i * D + j];
        }
        for (size_t j = 0; j < D; j++) F[i * D + j] /= (float)sqrt(ss);
    }
    struct sae_train_config cfg;
    sae_train_config_default(&cfg, SAE_TOPK, D, NF, 4);
    cfg.seed = 1;
    /* T_* environment variables override the settings for experiments */
    cfg.lr = getenv("T_LR") ? strtod(getenv("T_LR"), NULL) : 6e-3;
    const size_t B = getenv("T_B") ? strtoul(getenv("T_B"), NULL, 10) : 512;
    if (getenv("T_STEPS")) steps = strtoul(getenv("T_STEPS"), NULL, 10);
    if (getenv("T_ALPHA")) cfg.auxk_alpha = strtod(getenv("T_ALPHA"), NULL);
    cfg.total_tokens = (int64_t)(B * steps);
    cfg.lr_warmup_tokens = 20 * B;
    cfg.dead_tokens = 50000;
    cfg.k0 = getenv("T_K0") ? strtoul(getenv("T_K0"), NULL, 10) : 16;
    if (getenv("T_DEAD")) cfg.dead_tokens = strtol(getenv("T_DEAD"), NULL, 10);
    cfg.k_anneal_tokens = (int64_t)(B * steps / 4);
    struct sae_trainer *t = sae_trainer_new(&cfg);
    CHECK(t != NULL);
    float *x = malloc(B * D * sizeof *x);
    struct sae_train_metrics m = {0};
    double t0 = time_now_s();
    for (size_t s = 0; s < steps; s++) {
        gen_batch(&r, F, x, B, D);
        CHECK(sae_trainer_step(t, x, B, &m) == 0);
        if (s % (steps / 4) == 0 || s == steps - 1)
            printf("step %5zu k %2zu lr %.2e loss %.5f fvu %.4f l0 %.2f dead %.3f auxk %.4f\n", s,
                   m.k, m.lr, m.loss, m.fvu, m.l0, m.dead_frac, m.auxk_loss);
    }
    double secs = time_now_s() - t0;
    struct sae *sae = sae_trainer_export(t);
    CHECK(sae != NULL);
    /* decoder rows of the folded SAE are W_dec / s: compare directions (cosine) */
    double mean_best = 0;
    size_t found = 0;
    for (size_t f = 0; f < NF; f++) {
        double best = -1;
        for (size_t i = 0; i < sae->n; i++) {
            double dot = 0, nn = 0;
            for (size_t j = 0; j < D; j++) {
                dot += (double)F[f * D + j] * sae->W_dec[i * D + j];
                nn += (double)sae->W_dec[i * D + j] * sae->W_dec[i * D + j];
            }
            double c = nn > 0 ? dot / sqrt(nn) : 0;
            if (c > best) best = c;
        }
        mean_best += best;
        found += best > 0.9;
    }
    mean_best /= NF;
    /* FVU on fresh data through the inference path */
    const size_t E = 8192;
    float *xe = malloc(E * D * sizeof *xe), *xh = malloc(E * D * sizeof *xh);
    gen_batch(&r, F, xe, E, D);
    CHECK(sae_forward(sae, xe, E, xh) == 0);
    double *mean = calloc(D, sizeof *mean), num = 0, den = 0;
    for (size_t b = 0; b < E; b++)
        for (size_t j = 0; j < D; j++) mean[j] += xe[b * D + j] / (double)E;
    for (size_t b = 0; b < E; b++)
        for (size_t j = 0; j < D; j++) {
            double e = xe[b * D + j] - xh[b * D + j], c = xe[b * D + j] - mean[j];
            num += e * e;
            den += c * c;
        }
    double fvu = num / den;
    /* the oracle: the true dictionary as encoder and decoder, top-4. Interference
     * between 512 features in 64 dimensions bounds what a linear encoder can do. */
    struct sae *o = sae_new(SAE_TOPK, D, NF, 4);
    memcpy(o->W_enc, F, NF * D * sizeof *F);
    memcpy(o->W_dec, F, NF * D * sizeof *F);
    CHECK(sae_forward(o, xe, E, xh) == 0);
    double onum = 0;
    for (size_t q = 0; q < E * D; q++) onum += (double)(xe[q] - xh[q]) * (xe[q] - xh[q]);
    double ofvu = onum / den;
    printf("oracle (true features, top-4) FVU %.4f\n", ofvu);
    sae_destroy(&o);
    printf("recovery d=%zu: mean best cosine %.4f, features with cosine > 0.9: %zu/%d, eval FVU "
           "%.4f, train %.1f s (%.0f tokens/s)\n",
           D, mean_best, found, NF, fvu, secs, (double)(B * steps) / secs);
    CHECK_MSG(mean_best >= 0.95, "d=%zu mean best cosine %.4f", D, mean_best);
    if (fvu_max > 0)
        CHECK_MSG(fvu <= fvu_max, "d=%zu FVU %.4f > %.2f", D, fvu, fvu_max);
    else
        CHECK_MSG(fvu <= ofvu / 1.6, "d=%zu FVU %.4f vs oracle %.4f", D, fvu, ofvu);
    CHECK_MSG(found >= 460, "d=%zu: %zu features found", D, found);
    free(mean);
    sae_destroy(&sae);
    sae_trainer_destroy(&t);
    free(F);
    free(x);
    free(xe);
    free(xh);
}

int main(void)
{
    log_init("test_sae_recovery", LOG_LOGFMT, LOG_WARN);
    tensor_set_threads(2);
    run_case(64, 2000, 0); /* the example: interference-bound, vs the oracle */
    run_case(256, 1000, 0.05);
    return check_exit();
}

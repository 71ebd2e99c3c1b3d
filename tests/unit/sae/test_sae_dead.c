/* Dead latents: a setting where Top-K kills latents: as many latents as true features
 * (512 sparse unit features in d = 64, 3 per sample, n = 512, k = 4, lr 2e-3), so a
 * latent beaten early for its feature never fires again and its feature stays
 * missing. The same data and seed are trained four ways: plain Top-K, with AuxK, with
 * the kScheduler (k from 8 down to 4 over the first quarter), and with both. The mean
 * dead fraction over the second half of training (dead = silent for 20 steps) must be
 * lower with AuxK, with the kScheduler, and with both, than plain. Prints the numbers.
 *
 * AuxK here uses k_aux = 8 and alpha = 1/4: with ~50 dead latents, the default k_aux
 * (d_in/2 = 32) puts nearly every dead latent into every token's auxiliary
 * reconstruction, so they all chase the same residual and none specialises (measured:
 * no reduction); with a k_aux well below the number of dead latents each one picks up
 * a missing feature. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../support/check.h"
#include "core/core.h"
#include "sae/sae_train.h"
#include "tensor/tensor.h"

static size_t NF = 512, N = 512;
static int STEPS = 1000;
static double LR = 2e-3, ANNEAL = 0.25;
static size_t K0 = 8;
enum { D = 64, BT = 512 };

/* Sparse data: each sample is a positive combination of 3 of the NF unit features. */
static void gen(struct rng *r, const float *F, float *x, size_t B)
{
    for (size_t b = 0; b < B; b++) {
        float *row = x + b * D;
        for (size_t j = 0; j < D; j++) row[j] = 0.01f * rng_normal(r);
        for (int q = 0; q < 3; q++) {
            size_t f = rng_below(r, NF);
            float mag = 0.5f + (float)rng_uniform(r);
            for (size_t j = 0; j < D; j++) row[j] += mag * F[f * D + j];
        }
    }
}

static double run(const float *F, double alpha, size_t k0, double *fvu)
{
    struct sae_train_config cfg;
    sae_train_config_default(&cfg, SAE_TOPK, D, N, 4);
    cfg.seed = 3;
    cfg.lr = LR;
    cfg.auxk_alpha = alpha;
    cfg.k_aux = 8;
    cfg.k0 = k0;
    cfg.k_anneal_tokens = (int64_t)((double)BT * STEPS * ANNEAL);
    cfg.dead_tokens = 20 * BT;
    struct sae_trainer *t = sae_trainer_new(&cfg);
    struct rng r;
    rng_seed(&r, 77); /* the same data stream for every run */
    float *x = malloc(BT * D * sizeof *x);
    struct sae_train_metrics m = {0};
    double dead = 0; /* mean over the second half: steadier than the last step alone */
    for (int s = 0; s < STEPS; s++) {
        gen(&r, F, x, BT);
        CHECK(sae_trainer_step(t, x, BT, &m) == 0);
        if (s >= STEPS / 2) dead += m.dead_frac / (STEPS - STEPS / 2);
    }
    *fvu = m.fvu;
    free(x);
    sae_trainer_destroy(&t);
    return dead;
}

int main(void)
{
    log_init("test_sae_dead", LOG_LOGFMT, LOG_WARN);
    tensor_set_threads(2);
    /* T_* environment variables override the settings for experiments */
    if (getenv("T_NF")) NF = strtoul(getenv("T_NF"), NULL, 10);
    if (getenv("T_N")) N = strtoul(getenv("T_N"), NULL, 10);
    if (getenv("T_STEPS")) STEPS = (int)strtol(getenv("T_STEPS"), NULL, 10);
    if (getenv("T_LR")) LR = strtod(getenv("T_LR"), NULL);
    if (getenv("T_K0")) K0 = strtoul(getenv("T_K0"), NULL, 10);
    if (getenv("T_ANNEAL")) ANNEAL = strtod(getenv("T_ANNEAL"), NULL);
    struct rng r;
    rng_seed(&r, 8);
    float *F = malloc(NF * D * sizeof *F);
    for (size_t i = 0; i < NF; i++) {
        double ss = 0;
        for (size_t j = 0; j < D; j++) {
            F[i * D + j] = rng_normal(&r);
            ss += (double)F[i * D + j] * F[i * D + j];
        }
        for (size_t j = 0; j < D; j++) F[i * D + j] /= (float)sqrt(ss);
    }
    double f0, f1, f2, f3;
    double plain = run(F, 0.0, 0, &f0);
    double auxk = run(F, 0.25, 0, &f1);
    double ksched = run(F, 0.0, K0, &f2);
    double both = run(F, 0.25, K0, &f3);
    printf("mean dead fraction over the second half of %d tokens (n = %d, %d true features, dead = "
           "silent for %d "
           "tokens):\n",
           BT * STEPS, (int)N, (int)NF, 20 * BT);
    printf("  plain Top-K          %.3f  (FVU %.4f)\n", plain, f0);
    printf("  AuxK (k_aux 8, 1/4)  %.3f  (FVU %.4f)\n", auxk, f1);
    printf("  kScheduler %zu->4     %.3f  (FVU %.4f)\n", K0, ksched, f2);
    printf("  AuxK + kScheduler    %.3f  (FVU %.4f)\n", both, f3);
    CHECK_MSG(auxk < plain, "AuxK %.3f vs plain %.3f", auxk, plain);
    CHECK_MSG(ksched < plain, "kScheduler %.3f vs plain %.3f", ksched, plain);
    CHECK_MSG(both < plain, "both %.3f vs plain %.3f", both, plain);
    free(F);
    return check_exit();
}

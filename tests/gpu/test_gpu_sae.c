// lib: sae
/* GPU lab: the CUDA Top-K SAE training step (sae_cuda.h) against the CPU fast step
 * (sae_train.h, itself checked against the double-precision reference): raw gradients
 * at each point, the step's metrics, and weights, Adam moments and dead counters after
 * several steps, for plain Top-K, Multi-TopK, AuxK (short dead window), gradient
 * clipping and k annealing; TF32 within a few percent; a non-finite batch is refused and
 * changes nothing. Then the step is timed against one encoder GEMM. Exits 77 without
 * a device. */
#include "gpu_lab.h"
#include "sae/sae_cuda.h"
#include "sae/sae_train.h"

static float *make_data(size_t N, size_t d, uint64_t seed)
{
    struct rng r;
    rng_seed(&r, seed);
    float *x = malloc(N * d * sizeof *x);
    for (size_t q = 0; q < N * d; q++) x[q] = rng_normal(&r) * 3.0f + 0.5f;
    return x;
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

/* Rows (latents) whose largest difference exceeds 1e-3 of the largest entry overall
 * (float sums in another order over up to B entries, then scaled). */
static size_t bad_rows(const float *gpu, const float *cpu, size_t rows, size_t cols, double *worst)
{
    double scale = max_abs(cpu, rows * cols);
    size_t bad = 0;
    *worst = 0;
    for (size_t r = 0; r < rows; r++) {
        double dr = max_diff(gpu + r * cols, cpu + r * cols, cols);
        if (dr > *worst) *worst = dr;
        if (!(dr <= 1e-3 * scale + 1e-9)) bad++;
    }
    if (scale > 0) *worst /= scale;
    return bad;
}

/* Small shapes must agree everywhere. In large ones, a pre-activation that sits within
 * float rounding (~1e-7) of the k-th can be selected by one backend and not the other
 * (cuBLAS and OpenBLAS round differently); with thousands of tokens that happens now
 * and then and moves the two latents involved. Those runs allow 1% of rows to differ. */
static void check_rows(const char *what, const float *gpu, const float *cpu, size_t rows,
                       size_t cols, bool strict)
{
    double worst;
    size_t bad = bad_rows(gpu, cpu, rows, cols, &worst);
    size_t allowed = strict ? 0 : (rows + 99) / 100;
    CHECK_MSG(bad <= allowed, "%s: %zu of %zu rows differ (allowed %zu), worst %.3g relative", what,
              bad, rows, allowed, worst);
}

struct variant {
    const char *name;
    size_t d, n, k, B;
    bool multi, aux, clip;
    size_t k0;
    bool strict; /* small enough that no selection can flip (see check_rows) */
};

static void run_variant(struct cuda_ctx *ctx, const struct variant *v)
{
    const size_t d = v->d, n = v->n, k = v->k, B = v->B;
    struct sae_train_config cfg;
    sae_train_config_default(&cfg, SAE_TOPK, d, n, k);
    cfg.lr = 1e-3;
    /* eps 1e-7: a gradient that is zero in exact arithmetic is left as rounding noise
     * that Adam with eps 6.25e-10 turns into a step of +-lr whose sign two
     * implementations need not share (see tests/unit/sae/test_sae_step.c) */
    cfg.adam_eps = 1e-7;
    cfg.multi_topk = v->multi;
    cfg.grad_clip = v->clip ? 0.05 : 0;
    cfg.k0 = v->k0;
    cfg.k_anneal_tokens = v->k0 ? (int64_t)(5 * B) : 0;
    cfg.k_aux = 16;
    cfg.dead_tokens = v->aux ? (int64_t)B : 1000000;
    cfg.auxk_alpha = v->aux ? 1.0 / 32 : 0;
    struct sae_trainer *tc = sae_trainer_new(&cfg), *tg = sae_trainer_new(&cfg);
    CHECK(tc && tg);
    if (!tc || !tg) return;
    struct sae_cuda_trainer *g = NULL;
    CHECK(sae_cuda_trainer_new(tg, ctx, CUDA_MATH_FP32, &g) == 0);
    if (!g) goto out;
    const int steps = 8;
    float *x = make_data(B * steps, d, 7);
    const size_t nd = n * d;
    float *gr[8];
    for (int q = 0; q < 8; q++) gr[q] = calloc(nd, sizeof(float));
    bool saw_aux = false;
    /* a flipped selection (see check_rows) moves one token's error: ~1/B of the loss */
    const double rtol = v->strict ? 1e-4 : 1e-2;
    for (int step = 0; step < steps; step++) {
        const float *xb = x + (size_t)step * B * d;
        char what[128];
        if (step > 0) {
            double lc = 0, lg = 0;
            CHECK(sae_trainer_grad(tc, xb, B, false, gr[0], gr[1], gr[2], gr[3], &lc) == 0);
            CHECK(sae_cuda_trainer_grad(g, xb, B, gr[4], gr[5], gr[6], gr[7], &lg) == 0);
            snprintf(what, sizeof what, "%s step %d gW_enc", v->name, step);
            check_rows(what, gr[4], gr[0], n, d, v->strict);
            snprintf(what, sizeof what, "%s step %d gb_enc", v->name, step);
            check_rows(what, gr[5], gr[1], n, 1, v->strict);
            snprintf(what, sizeof what, "%s step %d gW_dec", v->name, step);
            check_rows(what, gr[6], gr[2], n, d, v->strict);
            snprintf(what, sizeof what, "%s step %d gb_dec", v->name, step);
            check_rows(what, gr[7], gr[3], 1, d, v->strict);
            CHECK_NEAR(lg, lc, 1e-6, rtol);
        }
        struct sae_train_metrics mc, mg;
        CHECK(sae_trainer_step(tc, xb, B, &mc) == 0);
        CHECK(sae_cuda_trainer_step(g, xb, B, &mg) == 0);
        CHECK_NEAR(mg.loss, mc.loss, 1e-6, rtol);
        CHECK_NEAR(mg.mse, mc.mse, 1e-6, rtol);
        CHECK_NEAR(mg.fvu, mc.fvu, 1e-6, rtol);
        CHECK_NEAR(mg.l0, mc.l0, v->strict ? 0 : 3.0 / B, 0);
        CHECK_NEAR(mg.auxk_loss, mc.auxk_loss, 1e-6, v->strict ? 1e-3 : 2e-2);
        CHECK_NEAR(mg.grad_norm, mc.grad_norm, 1e-9, v->strict ? 1e-4 : 2e-2);
        CHECK_NEAR(mg.dead_frac, mc.dead_frac, v->strict ? 0 : 0.01, 0);
        CHECK_EQ_INT(mg.k, mc.k);
        CHECK_EQ_INT(mg.step, mc.step);
        CHECK_EQ_INT(mg.tokens, mc.tokens);
        if (mc.auxk_loss > 0) saw_aux = true;
    }
    if (v->aux) CHECK_MSG(saw_aux, "%s: AuxK never engaged", v->name);
    CHECK(sae_cuda_trainer_sync(g) == 0);
    const struct sae *sc = sae_trainer_sae(tc), *sg = sae_trainer_sae(tg);
    /* 8 Adam steps of lr 1e-3 move weights by up to ~8e-3; agree to 2e-5 (rows) */
    double dwe = max_diff(sg->W_enc, sc->W_enc, nd), dwd = max_diff(sg->W_dec, sc->W_dec, nd);
    double dbd = max_diff(sg->b_dec, sc->b_dec, d);
    size_t bad_we = 0, bad_wd = 0, bad_be = 0, bad_fire = 0;
    const int64_t *fc = sae_trainer_since_fire(tc), *fg = sae_trainer_since_fire(tg);
    for (size_t i = 0; i < n; i++) {
        bad_we += max_diff(sg->W_enc + i * d, sc->W_enc + i * d, d) >= 2e-5;
        bad_wd += max_diff(sg->W_dec + i * d, sc->W_dec + i * d, d) >= 2e-5;
        bad_be += fabs((double)sg->b_enc[i] - sc->b_enc[i]) >= 2e-5;
        bad_fire += fc[i] != fg[i];
    }
    const size_t allowed = v->strict ? 0 : n / 100;
    CHECK_MSG(bad_we <= allowed && bad_wd <= allowed && bad_be <= allowed && dbd < 2e-5,
              "%s: rows differ W_enc %zu W_dec %zu b_enc %zu (allowed %zu); max W_enc %.3g "
              "W_dec %.3g b_dec %.3g",
              v->name, bad_we, bad_wd, bad_be, allowed, dwe, dwd, dbd);
    CHECK_MSG(bad_fire <= allowed, "%s: %zu dead counters differ", v->name, bad_fire);
    /* decoder rows stay unit norm */
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double ss = 0;
        for (size_t j = 0; j < d; j++) ss += (double)sg->W_dec[i * d + j] * sg->W_dec[i * d + j];
        worst = fmax(worst, fabs(sqrt(ss) - 1.0));
    }
    CHECK_MSG(worst < 1e-5, "%s: decoder row norm off by %.3g", v->name, worst);
    if (!check_failures_)
        printf("  ok   %-12s d=%zu n=%zu k=%zu B=%zu: grads, metrics, weights after %d steps "
               "(W diff %.1e)\n",
               v->name, d, n, k, B, steps, fmax(dwe, dwd));
    for (int q = 0; q < 8; q++) free(gr[q]);
    free(x);
out:
    sae_cuda_trainer_destroy(&g);
    CHECK(g == NULL);
    sae_trainer_destroy(&tc);
    sae_trainer_destroy(&tg);
}

static void test_errors_and_tf32(struct cuda_ctx *ctx)
{
    const size_t d = 64, n = 1024, k = 16, B = 128;
    struct sae_train_config cfg;
    sae_train_config_default(&cfg, SAE_STANDARD, d, n, 0);
    struct sae_trainer *t = sae_trainer_new(&cfg);
    struct sae_cuda_trainer *g = NULL;
    CHECK(t && sae_cuda_trainer_new(t, ctx, CUDA_MATH_FP32, &g) == SF_EUNSUP && g == NULL);
    sae_trainer_destroy(&t);

    sae_train_config_default(&cfg, SAE_TOPK, d, n, k);
    struct sae_trainer *tc = sae_trainer_new(&cfg), *tg = sae_trainer_new(&cfg);
    CHECK(tc && tg);
    if (!tc || !tg) return;
    CHECK(sae_cuda_trainer_new(tg, ctx, CUDA_MATH_TF32, &g) == 0);
    if (g) {
        float *x = make_data(B * 4, d, 99);
        CHECK(sae_cuda_trainer_step_device(g, x, B, NULL) == SF_ESTATE); /* not initialised */
        for (int s = 0; s < 3; s++) {
            struct sae_train_metrics mc, mg;
            CHECK(sae_trainer_step(tc, x + (size_t)s * B * d, B, &mc) == 0);
            CHECK(sae_cuda_trainer_step(g, x + (size_t)s * B * d, B, &mg) == 0);
            /* TF32 pre-activations (~1e-3 relative) flip some selections near the k-th:
             * the loss agrees to a few percent, not to rounding */
            CHECK_NEAR(mg.loss, mc.loss, 0, 5e-2);
            CHECK_NEAR(mg.fvu, mc.fvu, 0, 5e-2);
        }
        /* a NaN in the batch: refused, and nothing changes */
        CHECK(sae_cuda_trainer_sync(g) == 0);
        const struct sae *s = sae_trainer_sae(tg);
        float *before = malloc(n * d * sizeof *before);
        memcpy(before, s->W_dec, n * d * sizeof *before);
        int64_t steps = sae_trainer_steps(tg);
        float *xb = x + 3 * B * d;
        xb[17] = NAN;
        CHECK(sae_cuda_trainer_step(g, xb, B, NULL) == SF_EINVAL);
        CHECK(sae_cuda_trainer_sync(g) == 0);
        CHECK(memcmp(before, s->W_dec, n * d * sizeof *before) == 0);
        CHECK_EQ_INT(sae_trainer_steps(tg), steps);
        CHECK(sae_cuda_trainer_step(g, xb, 0, NULL) == SF_EINVAL);
        double ms = 0;
        CHECK(sae_cuda_trainer_time_gemm(g, B, 2, &ms) == 0 && ms > 0);
        free(before);
        free(x);
        printf("  ok   tf32 step within 5e-2 of the CPU; NaN batch refused, state unchanged\n");
    }
    sae_cuda_trainer_destroy(&g);
    sae_trainer_destroy(&tc);
    sae_trainer_destroy(&tg);
}

int main(void)
{
    log_init("test_gpu_sae", LOG_LOGFMT, LOG_WARN);
    struct cuda_ctx *ctx;
    int rc = gpu_lab_open(&ctx);
    if (rc) return rc;
    const struct variant vs[] = {
        {"topk", 24, 96, 4, 40, false, false, false, 0, true},
        {"multi", 24, 96, 4, 40, true, false, false, 0, true},
        {"aux", 24, 96, 4, 40, false, true, false, 0, true},
        {"clip", 24, 96, 4, 40, false, false, true, 0, true},
        {"anneal", 24, 96, 4, 40, false, false, false, 16, true},
        {"multi+aux", 64, 2048, 16, 256, true, true, false, 0, false},
        {"wide", 200, 4096, 32, 300, false, true, true, 64, false},
    };
    for (size_t i = 0; i < SF_ARRAY_LEN(vs); i++) run_variant(ctx, &vs[i]);
    test_errors_and_tf32(ctx);
    CHECK(cuda_ctx_sync(ctx) == 0);
    cuda_ctx_destroy(&ctx);
    return check_exit();
}

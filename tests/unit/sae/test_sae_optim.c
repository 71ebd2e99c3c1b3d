/* The training defaults and the second optimiser:
 *   - the learning-rate rule (values per optimiser, n and run length) and the
 *     dead-latent window scaled with the run (resolved when the trainer is made);
 *   - the initialisation: the first batch's FVU at the initial weights is below 1 with
 *     the least-squares encoder scale, and far above it without (the old init);
 *   - SignSGD with schedule-free averaging: the fast step against the
 *     double-precision oracle (sae_step_ref) from identical states, step by step;
 *     a resumed run continues bit-identically (z, x, the weight sum); the export
 *     holds the averaged weights x; it reconstructs planted features. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../support/check.h"
#include "core/core.h"
#include "sae/sae.h"
#include "sae/sae_sweep.h"
#include "sae/sae_train.h"

static void test_lr_rule(void)
{
    struct sae_train_config c;
    sae_train_config_default(&c, SAE_TOPK, 64, 16384, 32);
    /* billions of tokens (or an unknown length): the published rules */
    CHECK_NEAR(sae_train_config_lr(&c), 2e-4, 1e-15, 1e-12);
    c.total_tokens = (int64_t)1 << 32;
    CHECK_NEAR(sae_train_config_lr(&c), 2e-4, 1e-15, 1e-12);
    /* 4x fewer tokens than 2^30: 2x the rate; n 4x smaller: 2x again */
    c.total_tokens = (int64_t)1 << 28;
    CHECK_NEAR(sae_train_config_lr(&c), 4e-4, 1e-15, 1e-12);
    c.n = 4096;
    CHECK_NEAR(sae_train_config_lr(&c), 8e-4, 1e-15, 1e-12);
    /* the budget factor is capped at 16 */
    c.total_tokens = 2000000;
    CHECK_NEAR(sae_train_config_lr(&c), 4e-4 * 16, 1e-15, 1e-12);
    c.optimizer = SAE_OPT_SIGNSGD_SF; /* sparsify's rule, whatever the run length */
    c.n = 1024;
    CHECK_NEAR(sae_train_config_lr(&c), 0.02, 1e-15, 1e-12);
    c.total_tokens = 0;
    c.n = 16384;
    CHECK_NEAR(sae_train_config_lr(&c), 5e-3, 1e-15, 1e-12);
    c.lr = 0.123; /* an explicit rate wins */
    CHECK(sae_train_config_lr(&c) == 0.123);
    /* the schedule: warm-up, constant, linear decay over the last 20% */
    sae_train_config_default(&c, SAE_TOPK, 64, 1024, 16);
    c.lr = 0.01;
    c.lr_warmup_tokens = 100;
    c.total_tokens = 1000;
    CHECK_NEAR(sae_train_lr_at(&c, 49), 0.005, 1e-15, 1e-12);
    CHECK_NEAR(sae_train_lr_at(&c, 500), 0.01, 1e-15, 1e-12);
    CHECK_NEAR(sae_train_lr_at(&c, 900), 0.005, 1e-15, 1e-12);
    CHECK_NEAR(sae_train_lr_at(&c, 1000), 0, 1e-15, 0);
    enum sae_optimizer o;
    CHECK(sae_optimizer_parse("signsgd_sf", &o) == 0 && o == SAE_OPT_SIGNSGD_SF);
    CHECK(sae_optimizer_parse("adam", &o) == 0 && o == SAE_OPT_ADAM);
    CHECK(sae_optimizer_parse("sgd", &o) == SF_EINVAL);
    CHECK(strcmp(sae_optimizer_name(SAE_OPT_SIGNSGD_SF), "signsgd_sf") == 0);
}

static void test_dead_window(void)
{
    struct sae_train_config c;
    sae_train_config_default(&c, SAE_TOPK, 16, 64, 4);
    CHECK(c.dead_tokens == 0);
    CHECK(sae_train_config_dead_tokens(&c) == 10000000); /* unknown length: openai's 10M */
    c.total_tokens = 2000000;
    CHECK(sae_train_config_dead_tokens(&c) == 100000); /* 5% of a 2M-token run */
    c.total_tokens = (int64_t)1 << 40;
    CHECK(sae_train_config_dead_tokens(&c) == 10000000); /* capped at 10M */
    c.total_tokens = 10;
    CHECK(sae_train_config_dead_tokens(&c) == 1);
    c.dead_tokens = 777; /* explicit wins */
    CHECK(sae_train_config_dead_tokens(&c) == 777);
    /* the trainer holds the concrete value (checkpoints and exports show it) */
    c.dead_tokens = 0;
    c.total_tokens = 4000;
    struct sae_trainer *t = sae_trainer_new(&c);
    CHECK(t && sae_trainer_config(t)->dead_tokens == 200);
    c.dead_run_fraction = 0;
    CHECK(sae_train_config_validate(&c) == SF_EINVAL);
    c.dead_run_fraction = 0.05;
    c.sf_momentum = 1.0;
    CHECK(sae_train_config_validate(&c) == SF_EINVAL);
    c.sf_momentum = 0.95;
    c.optimizer = (enum sae_optimizer)7;
    CHECK(sae_train_config_validate(&c) == SF_EINVAL);
    /* AuxK acts within a short run: a 2000-token run with 40-token steps flags
     * latents silent for 100 tokens, where the old 10M window never would */
    if (t) {
        struct rng r;
        rng_seed(&r, 4);
        float *x = malloc(40 * 16 * sizeof *x);
        struct sae_train_metrics m = {0};
        for (int s = 0; s < 50; s++) {
            for (size_t q = 0; q < 40 * 16; q++) x[q] = rng_normal(&r);
            CHECK(sae_trainer_step(t, x, 40, &m) == 0);
        }
        free(x);
        CHECK_MSG(m.dead_frac > 0 && m.auxk_loss > 0, "dead %.3f auxk %.4f", m.dead_frac,
                  m.auxk_loss);
        printf("dead window 200 tokens: dead %.3f auxk %.4f after 2000 tokens\n", m.dead_frac,
               m.auxk_loss);
    }
    sae_trainer_destroy(&t);
}

/* Tokens that are sums of `per` planted unit directions with positive weights plus an
 * offset (the data an SAE is for). */
static float *planted(size_t N, size_t d, size_t nf, size_t per, uint64_t seed)
{
    struct rng r;
    rng_seed(&r, seed);
    float *F = malloc(nf * d * sizeof *F), *x = calloc(N * d, sizeof *x);
    for (size_t i = 0; i < nf; i++) {
        double ss = 0;
        for (size_t j = 0; j < d; j++) {
            F[i * d + j] = rng_normal(&r);
            ss += (double)F[i * d + j] * F[i * d + j];
        }
        for (size_t j = 0; j < d; j++) F[i * d + j] = (float)(F[i * d + j] / sqrt(ss));
    }
    for (size_t b = 0; b < N; b++) {
        for (size_t j = 0; j < d; j++) x[b * d + j] = j == 0 ? 3.0f : 0.0f;
        for (size_t q = 0; q < per; q++) {
            size_t i = rng_below(&r, nf);
            float a = 1.0f + 2.0f * (float)rng_uniform(&r);
            for (size_t j = 0; j < d; j++) x[b * d + j] += a * F[i * d + j];
        }
    }
    free(F);
    return x;
}

/* FVU of the first batch at the initial weights (the step reports the FVU of the
 * weights it starts from). */
static double fvu0(size_t d, size_t n, size_t k, bool scale, const float *x, size_t B)
{
    struct sae_train_config c;
    sae_train_config_default(&c, SAE_TOPK, d, n, k);
    c.init_scale_encoder = scale;
    c.lr = 1e-4;
    struct sae_trainer *t = sae_trainer_new(&c);
    struct sae_train_metrics m = {0};
    CHECK(t && sae_trainer_step(t, x, B, &m) == 0);
    sae_trainer_destroy(&t);
    return m.fvu;
}

static void test_init(void)
{
    const size_t d = 64, B = 2048;
    float *x = planted(B, d, 512, 6, 21);
    double a1 = fvu0(d, 1024, 16, true, x, B), b1 = fvu0(d, 1024, 16, false, x, B);
    double a4 = fvu0(d, 4096, 32, true, x, B), b4 = fvu0(d, 4096, 32, false, x, B);
    printf("FVU at step 0: n=1024 k=16 %.3f (unscaled %.3f); n=4096 k=32 %.3f (unscaled %.3f)\n",
           a1, b1, a4, b4);
    /* least squares over the first batch: never worse than b_dec alone (FVU ~1) */
    CHECK_MSG(a1 < 0.95 && a4 < 0.95, "scaled init FVU %.3f %.3f", a1, a4);
    CHECK(a1 < b1 && a4 < b4);
    CHECK_MSG(b4 > 2.0, "the unit-row encoder overshoots at n=4096 (%.3f)", b4);
    free(x);
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* Elements where the two steps may legitimately differ: a gradient that is zero in
 * exact arithmetic is rounding noise in float, whose sign the two need not share
 * (each such element moves by at most 2 lr per step). Returns the largest difference
 * among the other elements, and counts the exempt ones (mostly rows of latents no
 * token selected, whose gradient is exactly 0 in both). */
static double diff_outside_noise(const float *a, const float *b, const float *g, double gscale,
                                 size_t n, size_t *noise)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        if (fabs(g[i]) <= 1e-6 * gscale) {
            (*noise)++;
            continue;
        }
        m = fmax(m, fabs((double)a[i] - b[i]));
    }
    return m;
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

/* From the same state (a checkpoint of the reference trainer), one fast step and one
 * oracle step must land on the same weights, z, x and weight sum. */
static void test_sf_oracle(const char *dir)
{
    const size_t d = 24, n = 96, k = 4, B = 40, nd = n * d;
    struct sae_train_config c;
    sae_train_config_default(&c, SAE_TOPK, d, n, k);
    c.optimizer = SAE_OPT_SIGNSGD_SF;
    c.lr = 3e-3;
    c.lr_warmup_tokens = 3 * B;
    c.total_tokens = 10 * B;
    c.dead_tokens = 2 * B; /* AuxK engages */
    c.k_aux = 16;
    c.grad_clip = 0.5;
    float *x = planted(B * 10, d, 64, 3, 5);
    struct sae_trainer *tr = sae_trainer_new(&c);
    CHECK(tr != NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/sf-oracle.safetensors", dir);
    float *g[4];
    for (int q = 0; q < 4; q++) g[q] = calloc(nd, sizeof(float));
    size_t noise = 0, total = 0;
    double worst = 0;
    for (int s = 0; tr && s < 10; s++) {
        const float *xb = x + (size_t)s * B * d;
        struct sae_trainer *tf = NULL;
        if (s > 0) {
            CHECK(sae_trainer_save(tr, path) == 0);
            CHECK(sae_trainer_load(path, &tf) == 0);
            double l;
            CHECK(sae_trainer_grad(tr, xb, B, true, g[0], g[1], g[2], g[3], &l) == 0);
        } else {
            tf = sae_trainer_new(&c);
        }
        if (!tf) break;
        struct sae_train_metrics mf, mr;
        CHECK(sae_trainer_step(tf, xb, B, &mf) == 0);
        CHECK(sae_step_ref(tr, xb, B, &mr) == 0);
        CHECK_NEAR(mf.loss, mr.loss, 1e-6, 1e-4);
        CHECK_NEAR(mf.lr, mr.lr, 0, 0);
        CHECK_NEAR(mf.dead_frac, mr.dead_frac, 0, 0);
        const struct sae *sf = sae_trainer_sae(tf), *sr = sae_trainer_sae(tr);
        if (s == 0) {
            /* the first step from the fresh init: no noise exemption */
            worst = fmax(worst, max_diff(sf->W_enc, sr->W_enc, nd));
            worst = fmax(worst, max_diff(sf->W_dec, sr->W_dec, nd));
        } else {
            double ge = max_abs(g[0], nd), gd = max_abs(g[2], nd);
            worst = fmax(worst, diff_outside_noise(sf->W_enc, sr->W_enc, g[0], ge, nd, &noise));
            worst = fmax(worst, diff_outside_noise(sf->W_dec, sr->W_dec, g[2], gd, nd, &noise));
            total += 2 * nd;
        }
        worst = fmax(worst, max_diff(sf->b_enc, sr->b_enc, n));
        worst = fmax(worst, max_diff(sf->b_dec, sr->b_dec, d));
        /* the averaged point (exports) agrees as well */
        struct sae *ef = sae_trainer_export(tf), *er = sae_trainer_export(tr);
        CHECK(ef && er);
        if (ef && er && s == 0) worst = fmax(worst, max_diff(ef->W_dec, er->W_dec, nd));
        sae_destroy(&ef);
        sae_destroy(&er);
        sae_trainer_destroy(&tf);
    }
    CHECK_MSG(worst < 2e-6, "signsgd_sf fast vs oracle: max weight diff %.3g", worst);
    printf("signsgd_sf vs oracle: 10 steps, max diff %.2g (%zu of %zu elements had a zero "
           "gradient)\n",
           worst, noise, total);
    for (int q = 0; q < 4; q++) free(g[q]);
    sae_trainer_destroy(&tr);
    unlink(path);
    free(x);
}

static void test_sf_resume(const char *dir)
{
    const size_t d = 32, n = 256, k = 4, BT = 128, s1 = 12, s2 = 12;
    float *x = planted((s1 + s2) * BT, d, 128, 4, 8);
    struct sae_train_config c;
    sae_train_config_default(&c, SAE_TOPK, d, n, k);
    c.optimizer = SAE_OPT_SIGNSGD_SF;
    c.sf_momentum = 0.9;
    c.lr_warmup_tokens = 5 * BT;
    c.total_tokens = (int64_t)((s1 + s2) * BT);
    c.lr_decay_start = 0.5;
    c.dead_tokens = BT;
    c.k0 = 32;
    c.k_anneal_tokens = (int64_t)(16 * BT);
    struct sae_trainer *a = sae_trainer_new(&c), *b = NULL;
    CHECK(a != NULL);
    if (!a) return;
    struct sae_train_metrics m, mb;
    char p1[512], p2[512], p3[512];
    snprintf(p1, sizeof p1, "%s/sf-cut.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/sf-a.safetensors", dir);
    snprintf(p3, sizeof p3, "%s/sf-b.safetensors", dir);
    for (size_t s = 0; s < s1; s++) CHECK(sae_trainer_step(a, x + s * BT * d, BT, &m) == 0);
    CHECK(sae_trainer_save(a, p1) == 0);
    for (size_t s = s1; s < s1 + s2; s++) CHECK(sae_trainer_step(a, x + s * BT * d, BT, &m) == 0);
    CHECK(sae_trainer_load(p1, &b) == 0);
    if (b) {
        CHECK(sae_trainer_config(b)->optimizer == SAE_OPT_SIGNSGD_SF);
        CHECK(sae_trainer_config(b)->sf_momentum == 0.9);
        for (size_t s = s1; s < s1 + s2; s++)
            CHECK(sae_trainer_step(b, x + s * BT * d, BT, &mb) == 0);
        CHECK(mb.loss == m.loss && mb.lr == m.lr);
        /* every byte of the two final checkpoints: weights y, z, x, weight sum, counters */
        CHECK(sae_trainer_save(a, p2) == 0 && sae_trainer_save(b, p3) == 0);
        char *ba = NULL, *bb = NULL;
        size_t la = 0, lb = 0;
        CHECK(file_read_all(p2, 1 << 26, &ba, &la) == 0 &&
              file_read_all(p3, 1 << 26, &bb, &lb) == 0);
        CHECK_MSG(ba && bb && la == lb && memcmp(ba, bb, la) == 0,
                  "signsgd_sf: the resumed run differs");
        CHECK(ba && memmem(ba, la, "sf.x.W_dec", 10) != NULL);
        /* the schedule is readable from the file: the rule's rate, the resolved window */
        CHECK(ba && memmem(ba, la, "\"effective_lr\"", 14) != NULL);
        CHECK(ba && memmem(ba, la, "\"lr_decay_start\"", 16) != NULL);
        CHECK(ba && memmem(ba, la, "\"dead_tokens\":\"128\"", 19) != NULL);
        free(ba);
        free(bb);
        /* the export is x: not the weights the step reads (y) */
        struct sae *e = sae_trainer_export(a);
        const struct sae *y = sae_trainer_sae(a);
        CHECK(e && max_diff(e->W_dec, y->W_dec, n * d) > 0);
        /* x's decoder rows stay unit (the export divides them by the input scale) */
        double worst = 0;
        for (size_t i = 0; e && i < n; i++) {
            double ss = 0;
            for (size_t j = 0; j < d; j++) ss += (double)e->W_dec[i * d + j] * e->W_dec[i * d + j];
            worst = fmax(worst, fabs(sqrt(ss) * y->norm_scale - 1.0));
        }
        CHECK_MSG(worst < 1e-5, "exported decoder rows off unit norm by %.3g", worst);
        sae_destroy(&e);
    }
    /* an Adam checkpoint does not load as signsgd_sf state and vice versa: the
     * tensor names differ, so a file missing its optimiser's tensors is refused */
    char *buf = NULL;
    size_t len = 0;
    CHECK(file_read_all(p1, 1 << 26, &buf, &len) == 0);
    if (buf) {
        char *q = memmem(buf, len, "\"optimizer\":\"signsgd_sf\"", 24);
        CHECK(q != NULL);
        if (q) {
            memcpy(q + 13, "adam\"      ", 11); /* JSON stays valid: "adam" then spaces */
            struct sae_trainer *t = NULL;
            CHECK(sae_trainer_load_mem(buf, len, &t) < 0 && t == NULL);
        }
        free(buf);
    }
    unlink(p1);
    unlink(p2);
    unlink(p3);
    sae_trainer_destroy(&a);
    sae_trainer_destroy(&b);
    free(x);
}

/* Held-out FVU after a short run: the default rates (both optimisers) beat the old
 * default (Adam at 2e-4 / sqrt(n / 2^14), meant for billions of tokens); the sweep
 * picks the rate with the lowest held-out FVU and reports every row. */
static void test_quality_and_sweep(void)
{
    const size_t d = 32, n = 256, k = 4, N = 60000, H = 4096;
    float *x = planted(N + H, d, 128, 3, 13);
    double fvu[3] = {0};
    for (int o = 0; o < 3; o++) {
        struct sae_train_config c;
        sae_train_config_default(&c, SAE_TOPK, d, n, k);
        c.optimizer = o == 1 ? SAE_OPT_SIGNSGD_SF : SAE_OPT_ADAM;
        c.total_tokens = (int64_t)N;
        if (o == 2) { /* the old defaults */
            c.lr = 2e-4 / sqrt((double)n / 16384.0);
            c.dead_tokens = 10000000;
            c.init_scale_encoder = false;
        }
        struct sae_trainer *t = sae_trainer_new(&c);
        CHECK(t != NULL);
        struct sae_train_metrics m = {0};
        for (size_t p = 0; t && p < N; p += 1024)
            CHECK(sae_trainer_step(t, x + p * d, N - p < 1024 ? N - p : 1024, &m) == 0);
        struct sae *s = t ? sae_trainer_export(t) : NULL;
        struct sae_quality q = {0};
        CHECK(s && sae_quality_measure(s, x + N * d, H, &q) == 0);
        printf("%s at %s lr %.3g: held-out FVU %.4f L0 %.2f dead %.3f dense %.3f\n",
               sae_optimizer_name(c.optimizer), o == 2 ? "the old default" : "the default",
               sae_train_config_lr(&c), q.fvu, q.l0, q.dead_frac, q.dense_frac);
        fvu[o] = q.fvu;
        sae_destroy(&s);
        sae_trainer_destroy(&t);
    }
    CHECK_MSG(fvu[0] < 0.7 * fvu[2] && fvu[1] < 0.7 * fvu[2],
              "defaults do not beat the old rule: adam %.4f signsgd_sf %.4f old %.4f", fvu[0],
              fvu[1], fvu[2]);
    struct sae_train_config c;
    sae_train_config_default(&c, SAE_TOPK, d, n, k);
    double lrs[3] = {1e-5, 3e-3, 0.5};
    struct sae_sweep_row rows[3];
    size_t best = 99;
    CHECK(sae_sweep_lr(&c, x, 20000, 1024, x + N * d, H, lrs, 3, rows, &best) == 0);
    CHECK(best == 1);
    for (int r = 0; r < 3; r++) CHECK(rows[r].rc == 0 && rows[r].lr == lrs[r]);
    CHECK(rows[1].q.fvu < rows[0].q.fvu && rows[1].q.fvu < rows[2].q.fvu);
    CHECK(sae_sweep_lr(&c, x, 20000, 1024, x + N * d, 1, lrs, 3, rows, &best) == SF_EINVAL);
    double bad[1] = {-1};
    CHECK(sae_sweep_lr(&c, x, 2000, 1024, x + N * d, H, bad, 1, rows, &best) == SF_EINVAL);
    free(x);
}

int main(void)
{
    log_init("test", LOG_LOGFMT, LOG_WARN);
    char dir[] = "/tmp/saeflow-optim-XXXXXX";
    if (!mkdtemp(dir)) return 1;
    test_lr_rule();
    test_dead_window();
    test_init();
    test_sf_oracle(dir);
    test_sf_resume(dir);
    test_quality_and_sweep();
    rmdir(dir);
    return check_exit();
}

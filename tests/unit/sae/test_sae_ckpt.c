/* Checkpoints: a run resumed from a checkpoint continues bit-identically to the
 * uninterrupted run (weights, Adam moments, dead counters, scheduler, threshold), with
 * the lr warm-up/decay, the kScheduler and AuxK all active across the cut; damaged or
 * inconsistent checkpoints are refused with an error. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../support/check.h"
#include "core/core.h"
#include "safetensors/safetensors.h"
#include "sae/sae_train.h"
#include "tensor/tensor.h"

enum { D = 32, N = 256, BT = 128 };

static float *data(size_t steps)
{
    struct rng r;
    rng_seed(&r, 99);
    float *x = malloc(steps * BT * D * sizeof *x);
    for (size_t q = 0; q < steps * BT * D; q++) x[q] = rng_normal(&r) + (q % D == 3 ? 4.0f : 0.0f);
    return x;
}

static bool same_state(const struct sae_trainer *a, const struct sae_trainer *b)
{
    const struct sae *sa = sae_trainer_sae(a), *sb = sae_trainer_sae(b);
    bool ok =
        memcmp(sa->W_enc, sb->W_enc, N * D * sizeof(float)) == 0 &&
        memcmp(sa->W_dec, sb->W_dec, N * D * sizeof(float)) == 0 &&
        memcmp(sa->b_enc, sb->b_enc, N * sizeof(float)) == 0 &&
        memcmp(sa->b_dec, sb->b_dec, D * sizeof(float)) == 0 && sa->norm_scale == sb->norm_scale &&
        memcmp(sae_trainer_since_fire(a), sae_trainer_since_fire(b), N * sizeof(int64_t)) == 0 &&
        sae_trainer_tokens(a) == sae_trainer_tokens(b) &&
        sae_trainer_steps(a) == sae_trainer_steps(b);
    if (sa->threshold) ok = ok && memcmp(sa->threshold, sb->threshold, N * sizeof(float)) == 0;
    return ok;
}

static void resume_case(enum sae_arch arch, const char *dir)
{
    const size_t s1 = 12, s2 = 12;
    float *x = data(s1 + s2);
    struct sae_train_config cfg;
    sae_train_config_default(&cfg, arch, D, N, 4);
    cfg.lr = 2e-3;
    cfg.lr_warmup_tokens = 5 * BT;
    cfg.total_tokens = (int64_t)((s1 + s2) * BT);
    cfg.lr_decay_start = 0.5;
    cfg.dead_tokens = BT; /* one silent step: AuxK is active across the cut */
    cfg.k0 = 32;
    cfg.k_anneal_tokens = (int64_t)(16 * BT);
    cfg.k_schedule = SAE_KSCHED_COSINE;
    cfg.grad_clip = 1.0;
    struct sae_trainer *a = sae_trainer_new(&cfg);
    CHECK(a != NULL);
    struct sae_meta meta = {0};
    snprintf(meta.model_name, sizeof meta.model_name, "stories260K");
    snprintf(meta.hook_name, sizeof meta.hook_name, "blocks.2.hook_resid_post");
    meta.hook_layer = 2;
    sae_trainer_set_meta(a, &meta);
    struct sae_train_metrics m;
    for (size_t s = 0; s < s1; s++) CHECK(sae_trainer_step(a, x + s * BT * D, BT, &m) == 0);
    char path[512];
    snprintf(path, sizeof path, "%s/ckpt-%s.safetensors", dir, sae_arch_name(arch));
    CHECK(sae_trainer_save(a, path) == 0);
    double dead_at_cut = m.dead_frac;
    size_t k_at_cut = m.k;
    for (size_t s = s1; s < s1 + s2; s++) CHECK(sae_trainer_step(a, x + s * BT * D, BT, &m) == 0);
    struct sae_trainer *b = NULL;
    CHECK(sae_trainer_load(path, &b) == 0);
    if (b) {
        CHECK(strcmp(sae_trainer_sae(b)->meta.hook_name, "blocks.2.hook_resid_post") == 0);
        CHECK(sae_trainer_config(b)->n == N && sae_trainer_config(b)->k0 == 32);
        CHECK(sae_trainer_config(b)->k_schedule == SAE_KSCHED_COSINE);
        CHECK(sae_trainer_config(b)->lr == cfg.lr);
        CHECK(sae_trainer_config(b)->adam_eps == cfg.adam_eps);
        struct sae_train_metrics mb;
        for (size_t s = s1; s < s1 + s2; s++)
            CHECK(sae_trainer_step(b, x + s * BT * D, BT, &mb) == 0);
        CHECK_MSG(same_state(a, b), "%s: resumed run differs", sae_arch_name(arch));
        CHECK(mb.loss == m.loss && mb.k == m.k && mb.lr == m.lr);
        printf("%s: resumed at step %zu (k %zu, dead %.3f) -> bit-identical after %zu more "
               "steps (k %zu, dead %.3f, loss %.6f)\n",
               sae_arch_name(arch), s1, k_at_cut, dead_at_cut, s2, m.k, m.dead_frac, m.loss);
    }
    sae_trainer_destroy(&a);
    sae_trainer_destroy(&b);
    free(x);
}

/* Rewrites a valid checkpoint with one thing changed. */
static void expect_refused(const char *what, const void *buf, size_t len)
{
    struct sae_trainer *t = NULL;
    int rc = sae_trainer_load_mem(buf, len, &t);
    CHECK_MSG(rc < 0 && t == NULL, "%s: rc %d", what, rc);
    sae_trainer_destroy(&t);
}

static void corrupt_cases(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/ckpt-topk.safetensors", dir);
    char *buf = NULL;
    size_t len = 0;
    CHECK(file_read_all(path, 1 << 26, &buf, &len) == 0);
    if (!buf) return;
    struct sae_trainer *t = NULL;
    CHECK(sae_trainer_load_mem(buf, len, &t) == 0);
    sae_trainer_destroy(&t);
    /* truncations */
    for (size_t cut = 0; cut < len; cut += len / 7 + 1) expect_refused("truncated", buf, cut);
    expect_refused("truncated by one", buf, len - 1);
    /* header length and JSON damage */
    char *copy = malloc(len);
    memcpy(copy, buf, len);
    copy[0] ^= 0x40;
    expect_refused("header length", copy, len);
    memcpy(copy, buf, len);
    char *p = memmem(copy, len, "\"n\":\"256\"", 9);
    CHECK(p != NULL);
    if (p) {
        p[6] = '9'; /* n = 956: shapes no longer match */
        expect_refused("n changed", copy, len);
    }
    memcpy(copy, buf, len);
    p = memmem(copy, len, "saeflow.sae_checkpoint", 22);
    if (p) {
        p[0] = 'S';
        expect_refused("format", copy, len);
    }
    memcpy(copy, buf, len);
    p = memmem(copy, len, "\"arch\":\"topk\"", 13);
    CHECK(p != NULL);
    if (p) {
        memcpy(p + 8, "tpok", 4);
        expect_refused("arch", copy, len);
    }
    /* a NaN in the weights and a negative second moment */
    struct safetensors *st = NULL;
    CHECK(safetensors_open_mem(buf, len, &st) == 0);
    if (st) {
        const struct st_tensor *w = safetensors_find(st, "W_enc");
        const struct st_tensor *v = safetensors_find(st, "adam.v.W_dec");
        size_t header = (size_t)((const char *)w->data - buf) - (size_t)w->offset;
        memcpy(copy, buf, len);
        float nan = NAN;
        memcpy(copy + header + w->offset + 8, &nan, 4);
        expect_refused("NaN weight", copy, len);
        memcpy(copy, buf, len);
        float neg = -1.0f;
        memcpy(copy + header + v->offset, &neg, 4);
        expect_refused("negative v", copy, len);
        safetensors_close(&st);
    }
    /* random byte flips never crash; most are refused, a few land in free-form data */
    struct rng r;
    rng_seed(&r, 5);
    for (int i = 0; i < 200; i++) {
        memcpy(copy, buf, len);
        size_t at = rng_below(&r, 600 < len ? 600 : len);
        copy[at] = (char)rng_u64(&r);
        struct sae_trainer *q = NULL;
        (void)sae_trainer_load_mem(copy, len, &q);
        sae_trainer_destroy(&q);
    }
    free(copy);
    free(buf);
    CHECK(sae_trainer_load("/nonexistent/x.safetensors", &t) < 0);
}

/* SAEFLOW_WRITE_CORPUS=<dir>: writes small checkpoints as the fuzz seed corpus. */
static void write_corpus(const char *dir)
{
    enum sae_arch archs[] = {SAE_TOPK, SAE_BATCHTOPK, SAE_STANDARD};
    for (size_t a = 0; a < SF_ARRAY_LEN(archs); a++) {
        struct sae_train_config cfg;
        sae_train_config_default(&cfg, archs[a], 4, 8, 2);
        cfg.multi_topk = archs[a] == SAE_TOPK;
        cfg.ghost_grads = archs[a] == SAE_STANDARD;
        cfg.dead_tokens = 4;
        struct sae_trainer *t = sae_trainer_new(&cfg);
        float x[4 * 6];
        for (size_t i = 0; i < SF_ARRAY_LEN(x); i++) x[i] = (float)(i % 5) - 2.0f;
        for (int s = 0; s < 3; s++) sae_trainer_step(t, x, 6, NULL);
        char path[512];
        snprintf(path, sizeof path, "%s/%s.safetensors", dir, sae_arch_name(archs[a]));
        CHECK(sae_trainer_save(t, path) == 0);
        sae_trainer_destroy(&t);
    }
}

/* A trainer poisoned into non-finite weights (what ±3e38 inputs do) is refused at
 * save: no file appears and an existing good checkpoint at that path is untouched. */
static void nonfinite_refused(const char *dir)
{
    float *x = data(4);
    struct sae_train_config cfg;
    sae_train_config_default(&cfg, SAE_TOPK, D, N, 4);
    struct sae_trainer *t = sae_trainer_new(&cfg);
    CHECK(t != NULL);
    if (!t) {
        free(x);
        return;
    }
    struct sae_train_metrics m;
    CHECK(sae_trainer_step(t, x, BT, &m) == 0);
    CHECK(sae_trainer_finite(t));
    char good[512], fresh[512];
    snprintf(good, sizeof good, "%s/good.safetensors", dir);
    snprintf(fresh, sizeof fresh, "%s/never.safetensors", dir);
    CHECK(sae_trainer_save(t, good) == 0);
    char *before = NULL, *after = NULL;
    size_t nb = 0, na = 0;
    CHECK(file_read_all(good, 1 << 26, &before, &nb) == 0);
    /* a huge but finite batch overflows the step into inf/NaN weights */
    for (size_t q = 0; q < BT * D; q++) x[q] = (q % 2 ? 3e38f : -3e38f);
    (void)sae_trainer_step(t, x, BT, &m);
    CHECK(!isfinite(m.loss) || !sae_trainer_finite(t));
    struct sae *w = (struct sae *)sae_trainer_sae(t);
    w->W_dec[7] = NAN; /* whatever the step did, the weights are now non-finite */
    CHECK(!sae_trainer_finite(t));
    CHECK(sae_trainer_save(t, fresh) == SF_ERANGE);
    CHECK(access(fresh, F_OK) != 0);
    CHECK(sae_trainer_save(t, good) == SF_ERANGE);
    CHECK(file_read_all(good, 1 << 26, &after, &na) == 0);
    CHECK(na == nb && before && after && memcmp(before, after, nb) == 0);
    struct sae_trainer *back = NULL;
    CHECK(sae_trainer_load(good, &back) == 0);
    CHECK(back && sae_trainer_finite(back));
    /* a restored trainer can take a new plan (saeflow train --resume --tokens) */
    CHECK(back && sae_trainer_set_total_tokens(back, 12345) == 0);
    CHECK(back && sae_trainer_config(back)->total_tokens == 12345);
    CHECK(sae_trainer_set_total_tokens(back, -1) == SF_EINVAL);
    sae_trainer_destroy(&back);
    free(before);
    free(after);
    sae_trainer_destroy(&t);
    free(x);
}

/* The batch guard: non-finite, huge and norm-outlier batches are refused by name;
 * ordinary batches pass and set the baseline; refused ones do not move it. */
static void guard_cases(void)
{
    float *x = data(3);
    struct sae_batch_guard g;
    sae_batch_guard_init(&g, 1e6, 10);
    struct sae_guard_stats st;
    CHECK_EQ_INT(sae_batch_guard_check(&g, x, BT, D, &st), SAE_GUARD_OK);
    CHECK(st.mean_norm > 1 && st.max_norm >= st.mean_norm && g.accepted == 1);
    double base = g.mean_norm;
    CHECK_EQ_INT(sae_batch_guard_check(&g, x + BT * D, BT, D, NULL), SAE_GUARD_OK);
    float *y = malloc(BT * D * sizeof *y);
    memcpy(y, x, BT * D * sizeof *y);
    y[5] = NAN;
    CHECK_EQ_INT(sae_batch_guard_check(&g, y, BT, D, NULL), SAE_GUARD_NONFINITE);
    y[5] = 3e38f; /* finite: its square overflows a float, not the guard's double */
    CHECK_EQ_INT(sae_batch_guard_check(&g, y, BT, D, &st), SAE_GUARD_MAGNITUDE);
    CHECK(isfinite(st.max_norm));
    memcpy(y, x, BT * D * sizeof *y);
    for (size_t q = 0; q < BT * D; q++) y[q] *= 50; /* every row 50x: the mean norm */
    CHECK_EQ_INT(sae_batch_guard_check(&g, y, BT, D, NULL), SAE_GUARD_NORM);
    memcpy(y, x, BT * D * sizeof *y);
    for (size_t j = 0; j < D; j++) y[3 * D + j] *= 1000; /* one row: the max norm */
    CHECK_EQ_INT(sae_batch_guard_check(&g, y, BT, D, NULL), SAE_GUARD_NORM);
    CHECK(g.accepted == 2 && fabs(g.mean_norm - base) < 0.5 * base);
    CHECK(strcmp(sae_guard_reason(SAE_GUARD_NORM), "norm_outlier") == 0);
    /* turned off: only non-finite values are refused */
    struct sae_batch_guard off;
    sae_batch_guard_init(&off, 0, 0);
    CHECK_EQ_INT(sae_batch_guard_check(&off, x, BT, D, NULL), SAE_GUARD_OK);
    for (size_t q = 0; q < BT * D; q++) y[q] = 3e38f;
    CHECK_EQ_INT(sae_batch_guard_check(&off, y, BT, D, NULL), SAE_GUARD_OK);
    free(y);
    free(x);
}

int main(void)
{
    log_init("test_sae_ckpt", LOG_LOGFMT, LOG_OFF);
    tensor_set_threads(2);
    const char *corpus = getenv("SAEFLOW_WRITE_CORPUS");
    if (corpus && *corpus) {
        write_corpus(corpus);
        return check_exit();
    }
    char dir[] = "/tmp/saeflow_ckpt_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    resume_case(SAE_TOPK, dir);
    resume_case(SAE_BATCHTOPK, dir);
    corrupt_cases(dir);
    nonfinite_refused(dir);
    guard_cases();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    CHECK(system(cmd) == 0);
    return check_exit();
}

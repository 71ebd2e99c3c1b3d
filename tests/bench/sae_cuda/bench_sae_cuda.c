/* bench_sae_cuda: the CUDA Top-K SAE training step against one cuBLAS GEMM of the
 * encoder's shape, measured in the same run (the step can never beat that GEMM; the
 * goal is step / GEMM <= 1.2). Prints a table of medians; never asserts.
 *
 *   bench_sae_cuda [--backend cuda] [--d 768] [--n 24576,131072] [--k 32] [--B 16384]
 *                  [--math fp32,tf32] [--steps 10]
 *
 * Without a CUDA device (or without CUDA in the build) it says so and exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "sae/sae_cuda.h"
#include "sae/sae_train.h"
#include "tensor/tensor_cuda.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Parses "a,b,c" into up to cap sizes. */
static size_t parse_list(const char *s, int64_t *out, size_t cap)
{
    size_t n = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    char *save = NULL;
    for (char *tok = strtok_r(buf, ",", &save); tok && n < cap; tok = strtok_r(NULL, ",", &save))
        if (parse_i64(tok, &out[n]) == 0 && out[n] > 0) n++;
    return n;
}

static void bench_one(struct cuda_ctx *ctx, size_t d, size_t n, size_t k, size_t B,
                      enum cuda_math math, int steps, const float *x_host)
{
    struct sae_train_config cfg;
    sae_train_config_default(&cfg, SAE_TOPK, d, n, k);
    struct sae_trainer *t = sae_trainer_new(&cfg);
    struct sae_cuda_trainer *g = NULL;
    struct cuda_buf xb = {0};
    double *ts = calloc((size_t)steps, sizeof *ts);
    if (!t || !ts || sae_trainer_init_data(t, x_host, B) != 0 ||
        sae_cuda_trainer_new(t, ctx, math, &g) != 0 || cuda_buf_alloc(&xb, B * d * 4) != 0 ||
        cuda_buf_upload(ctx, &xb, 0, x_host, B * d * 4) != 0) {
        printf("%-6s %6zu %7zu %4zu %6zu   (skipped: setup failed, see log)\n",
               cuda_math_name(math), d, n, k, B);
        goto out;
    }
    struct sae_train_metrics mt;
    int rc = 0;
    for (int w = 0; w < 2 && rc == 0; w++) rc = sae_cuda_trainer_step_device(g, xb.ptr, B, &mt);
    for (int s = 0; s < steps && rc == 0; s++) {
        double t0 = time_now_s();
        rc = sae_cuda_trainer_step_device(g, xb.ptr, B, &mt);
        ts[s] = (time_now_s() - t0) * 1e3;
    }
    double gemm = 0;
    if (rc == 0) rc = sae_cuda_trainer_time_gemm(g, B, 5, &gemm);
    if (rc) {
        printf("%-6s %6zu %7zu %4zu %6zu   (failed: rc=%d)\n", cuda_math_name(math), d, n, k, B,
               rc);
        goto out;
    }
    qsort(ts, (size_t)steps, sizeof *ts, cmp_double);
    double med = ts[steps / 2];
    printf("%-6s %6zu %7zu %4zu %6zu %10.3f %10.3f %8.2fx %12.0f %8.4f\n", cuda_math_name(math), d,
           n, k, B, med, gemm, med / gemm, (double)B / (med * 1e-3), mt.fvu);
out:
    cuda_buf_free(&xb);
    sae_cuda_trainer_destroy(&g);
    sae_trainer_destroy(&t);
    free(ts);
}

int main(int argc, char **argv)
{
    log_init("bench_sae_cuda", LOG_LOGFMT, LOG_WARN);
    int64_t d = 768, k = 32, B = 16384, steps = 10;
    int64_t ns[4] = {24576, 131072};
    size_t n_ns = 2;
    enum cuda_math maths[3] = {CUDA_MATH_FP32, CUDA_MATH_TF32};
    size_t n_maths = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "usage: see the top of tests/bench/sae_cuda/bench_sae_cuda.c\n");
            return 2;
        }
        i++;
        int bad = 0;
        if (!strcmp(a, "--backend"))
            bad = strcmp(v, "cuda") != 0;
        else if (!strcmp(a, "--d"))
            bad = parse_i64(v, &d) || d <= 0;
        else if (!strcmp(a, "--k"))
            bad = parse_i64(v, &k) || k <= 0;
        else if (!strcmp(a, "--B"))
            bad = parse_i64(v, &B) || B <= 0;
        else if (!strcmp(a, "--steps"))
            bad = parse_i64(v, &steps) || steps <= 0 || steps > 1000;
        else if (!strcmp(a, "--n"))
            bad = (n_ns = parse_list(v, ns, 4)) == 0;
        else if (!strcmp(a, "--math")) {
            char buf[64];
            snprintf(buf, sizeof buf, "%s", v);
            char *save = NULL;
            n_maths = 0;
            for (char *tok = strtok_r(buf, ",", &save); tok && n_maths < 3;
                 tok = strtok_r(NULL, ",", &save))
                if (cuda_math_parse(tok, &maths[n_maths]) == 0) n_maths++;
            bad = n_maths == 0;
        } else
            bad = 1;
        if (bad) {
            fprintf(stderr, "bench_sae_cuda: bad option %s %s\n", a, v);
            return 2;
        }
    }
    if (tensor_cuda_device_count() <= 0) {
        printf("bench_sae_cuda: skipped (no CUDA device visible, or built without CUDA)\n");
        return 0;
    }
    struct cuda_ctx *ctx = NULL;
    if (cuda_ctx_new(0, &ctx) != 0) return 1;
    char desc[160] = "";
    cuda_ctx_describe(ctx, desc, sizeof desc);
    printf("bench_sae_cuda: %s; step = one full training step (device batch), gemm = one "
           "encoder GEMM, same run\n",
           desc);
    float *x = malloc((size_t)B * (size_t)d * sizeof *x);
    if (!x) return 1;
    struct rng r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < (size_t)B * (size_t)d; i++) x[i] = rng_normal(&r) + 0.1f;
    printf("%-6s %6s %7s %4s %6s %10s %10s %9s %12s %8s\n", "math", "d", "n", "k", "B", "step ms",
           "gemm ms", "ratio", "tokens/s", "fvu");
    for (size_t m = 0; m < n_maths; m++)
        for (size_t i = 0; i < n_ns; i++)
            bench_one(ctx, (size_t)d, (size_t)ns[i], (size_t)k, (size_t)B, maths[m], (int)steps, x);
    free(x);
    cuda_ctx_destroy(&ctx);
    return 0;
}

// lib: sae
/* GPU lab: the per-row top-k selection kernel (sae_cuda_topk) against the CPU kernel
 * (sae_topk_row) and the rank rule of sae_kernels.h: the same set, exactly (values are
 * the same float sums on both sides), sorted by rank; ties broken by the lower index;
 * masks; NaN never selected; fewer eligible entries than kk padded; through every data
 * path of the kernel (global passes, whole row cached in shared memory, candidates
 * compacted after the first digit). Then timed at the SAE shapes. Exits 77 without a
 * device. */
#include "gpu_lab.h"
#include "sae/sae_cuda.h"
#include "sae/sae_kernels.h"

struct topk_case {
    size_t B, n, kk;
    int ties, bias, mask, nans;
};

/* Checks one launch's output (idx, val: B x kk) against the CPU kernel row by row. */
static size_t check_output(const struct topk_case *tc, const float *a, const float *bias,
                           const uint8_t *mask, const uint32_t *idx, const float *val)
{
    const size_t B = tc->B, n = tc->n, kk = tc->kk;
    uint32_t *map = malloc(n * 4), *ri = malloc(kk * 4), *si = malloc(sae_topk_scratch(kk) * 4);
    float *rv = malloc(kk * 4), *sv = malloc(sae_topk_scratch(kk) * 4), *row = malloc(n * 4);
    size_t bad_rows = 0;
    for (size_t b = 0; b < B; b++) {
        /* oracle: the CPU kernel over the eligible entries (map = their indices) */
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (!mask[i] && tc->mask) continue;
            row[m] = a[b * n + i] + bias[i];
            map[m] = (uint32_t)i;
            m++;
        }
        size_t got = sae_topk_row(row, NULL, map, m, kk, ri, rv, si, sv);
        sae_sort_ranked(rv, ri, got);
        const uint32_t *gi = idx + b * kk;
        const float *gv = val + b * kk;
        bool ok = true;
        for (size_t q = 0; q < kk; q++) {
            if (q < got) {
                if (gi[q] != ri[q] || gv[q] != rv[q]) ok = false;
            } else if (gi[q] != UINT32_MAX || !(isinf(gv[q]) && gv[q] < 0)) {
                ok = false;
            }
        }
        if (!ok && bad_rows++ == 0) {
            fprintf(stderr, "row %zu (n=%zu kk=%zu got=%zu) first entries gpu/cpu:", b, n, kk, got);
            for (size_t q = 0; q < kk && q < 6; q++)
                fprintf(stderr, " %u:%g/%u:%g", gi[q], gv[q], q < got ? ri[q] : 0,
                        q < got ? rv[q] : 0);
            fputc('\n', stderr);
        }
    }
    free(map);
    free(ri);
    free(si);
    free(rv);
    free(sv);
    free(row);
    return bad_rows;
}

/* Runs one case through the automatic choice and through every forced data path. */
static void run_case(struct cuda_ctx *ctx, const struct topk_case *tc, struct rng *r)
{
    const size_t B = tc->B, n = tc->n, kk = tc->kk;
    float *a = malloc(B * n * 4), *bias = malloc(n * 4), *val = malloc(B * kk * 4);
    uint8_t *mask = malloc(n);
    uint32_t *idx = malloc(B * kk * 4);
    for (size_t q = 0; q < B * n; q++)
        a[q] = tc->ties ? (float)rng_below(r, 40) / 4.0f - 3.0f : rng_normal(r);
    if (tc->nans)
        for (size_t q = 0; q < B * n; q += 7) a[q] = NAN;
    for (size_t i = 0; i < n; i++) {
        bias[i] = tc->bias ? (tc->ties ? (float)rng_below(r, 3) : rng_normal(r) * 0.5f) : 0.0f;
        mask[i] = tc->mask ? rng_below(r, 3) == 0 : 1;
    }
    struct cuda_buf da = {0}, db = {0}, dm = {0}, di = {0}, dv = {0};
    float *pa = gpu_lab_upload(ctx, &da, a, B * n * 4);
    float *pb = gpu_lab_upload(ctx, &db, bias, n * 4);
    uint8_t *pm = (uint8_t *)gpu_lab_upload(ctx, &dm, mask, n);
    uint32_t *pi = (uint32_t *)gpu_lab_upload(ctx, &di, NULL, B * kk * 4);
    float *pv = gpu_lab_upload(ctx, &dv, NULL, B * kk * 4);
    CHECK(pa && pb && pm && pi && pv);
    if (!(pa && pb && pm && pi && pv)) goto out;
    static const char *const mode_names[] = {"auto", "global", "row cache", "compact"};
    for (int mode = -1; mode <= 2; mode++) {
        CHECK(cuda_memset(ctx, pi, 0xAB, B * kk * 4) == 0); /* no stale result can pass */
        const float *bp = tc->bias ? pb : NULL;
        const uint8_t *mp = tc->mask ? pm : NULL;
        int rc = mode < 0 ? sae_cuda_topk(ctx, pa, n, bp, mp, B, n, kk, pi, pv)
                          : sae_cuda_topk_mode(ctx, mode, pa, n, bp, mp, B, n, kk, pi, pv);
        if (mode == 1 && rc == SF_EUNSUP) continue; /* the row does not fit: not a path */
        CHECK_EQ_INT(rc, 0);
        CHECK(cuda_buf_download(ctx, idx, &di, 0, B * kk * 4) == 0);
        CHECK(cuda_buf_download(ctx, val, &dv, 0, B * kk * 4) == 0);
        size_t bad = check_output(tc, a, bias, mask, idx, val);
        CHECK_MSG(bad == 0,
                  "topk %s B=%zu n=%zu kk=%zu ties=%d bias=%d mask=%d nans=%d: %zu rows differ",
                  mode_names[mode + 1], B, n, kk, tc->ties, tc->bias, tc->mask, tc->nans, bad);
        if (bad == 0)
            printf("  ok   topk %-9s B=%zu n=%zu kk=%zu ties=%d bias=%d mask=%d nans=%d\n",
                   mode_names[mode + 1], B, n, kk, tc->ties, tc->bias, tc->mask, tc->nans);
    }
out:
    cuda_buf_free(&da);
    cuda_buf_free(&db);
    cuda_buf_free(&dm);
    cuda_buf_free(&di);
    cuda_buf_free(&dv);
    free(a);
    free(bias);
    free(val);
    free(mask);
    free(idx);
}

static void time_topk(struct cuda_ctx *ctx)
{
    const size_t B = 16384, ns[2] = {24576, 131072}, ks[3] = {32, 128, 512};
    printf("  %-8s %-8s %-6s %10s %10s\n", "B", "n", "kk", "ms", "GB/s(1x)");
    for (size_t ni = 0; ni < 2; ni++) {
        size_t n = ns[ni];
        struct cuda_buf da = {0}, di = {0}, dv = {0};
        if (cuda_buf_alloc(&da, B * n * 4) || cuda_buf_alloc(&di, B * 512 * 4) ||
            cuda_buf_alloc(&dv, B * 512 * 4)) {
            printf("  (n=%zu skipped: not enough device memory)\n", n);
        } else {
            /* a pseudo-random fill on the device is not available here: upload one row
             * pattern per 64 rows is enough for timing (values only steer the digits) */
            struct rng r;
            rng_seed(&r, 9);
            float *h = malloc(64 * n * 4);
            gpu_lab_fill(h, 64 * n, &r, 1, 0);
            for (size_t b = 0; b < B; b += 64) cuda_buf_upload(ctx, &da, b * n * 4, h, 64 * n * 4);
            free(h);
            struct cuda_timer *t = NULL;
            cuda_timer_new(ctx, &t);
            for (size_t ki = 0; ki < 3; ki++) {
                double ms = 0;
                for (int rep = 0; rep < 2; rep++) {
                    cuda_timer_start(t);
                    sae_cuda_topk(ctx, da.ptr, n, NULL, NULL, B, n, ks[ki], di.ptr, dv.ptr);
                    cuda_timer_stop(t, &ms);
                }
                printf("  %-8zu %-8zu %-6zu %10.3f %10.1f\n", B, n, ks[ki], ms,
                       (double)B * n * 4 / (ms * 1e-3) / 1e9);
            }
            cuda_timer_destroy(&t);
        }
        cuda_buf_free(&da);
        cuda_buf_free(&di);
        cuda_buf_free(&dv);
    }
}

int main(void)
{
    log_init("test_gpu_topk", LOG_LOGFMT, LOG_WARN);
    struct cuda_ctx *ctx;
    int rc = gpu_lab_open(&ctx);
    if (rc) return rc;
    struct rng r;
    rng_seed(&r, 1234);
    const struct topk_case cases[] = {
        {4, 10, 1, 0, 0, 0, 0},
        {4, 10, 10, 0, 0, 0, 0},
        {4, 10, 16, 0, 0, 0, 0},
        {64, 1000, 32, 0, 1, 0, 0},
        {64, 1000, 32, 1, 1, 0, 0},
        {64, 1000, 32, 1, 0, 0, 0},
        {32, 5000, 128, 1, 1, 1, 0},
        {32, 5000, 64, 0, 1, 1, 1},
        {16, 4097, 512, 0, 0, 0, 0},
        {8, 24576, 32, 0, 1, 0, 0},
        {8, 24576, 128, 1, 1, 0, 0},
        {4, 131072, 32, 0, 1, 0, 0},
        {2, 20000, 4096, 1, 0, 0, 0},
        {3, 600, 1000, 0, 0, 1, 1},
        {5, 3000, 300, 0, 0, 0, 1},
        /* rows too long for the shared-memory row cache take the global-memory path */
        {3, 131072, 512, 1, 1, 1, 1},
        {2, 100000, 4096, 0, 1, 0, 0},
    };
    for (size_t c = 0; c < SF_ARRAY_LEN(cases); c++) run_case(ctx, &cases[c], &r);
    /* kk beyond the limit is refused */
    CHECK(sae_cuda_topk(ctx, NULL, 1, NULL, NULL, 1, 1, SAE_CUDA_TOPK_MAX + 1, NULL, NULL) ==
          SF_ERANGE);
    CHECK(cuda_ctx_sync(ctx) == 0);
    if (!check_failures_) time_topk(ctx);
    cuda_ctx_destroy(&ctx);
    return check_exit();
}

// lib: tensor
/* GPU lab: device buffers and the cuBLAS GEMM/GEMV (tensor_cuda.h) against the CPU
 * reference loops (tensor_sgemm_ref), in every transpose combination and math mode,
 * then timed at the SAE encoder's shape. Exits 77 without a device. */
#include "gpu_lab.h"
#include "tensor/tensor.h"

static void test_buffers(struct cuda_ctx *ctx)
{
    struct cuda_buf b = {0};
    CHECK(cuda_buf_alloc(&b, 0) == SF_EINVAL);
    CHECK(cuda_buf_alloc(&b, 1000) == 0);
    unsigned char in[1000], out[1000];
    for (int i = 0; i < 1000; i++) in[i] = (unsigned char)(i * 7);
    CHECK(cuda_buf_upload(ctx, &b, 0, in, 1000) == 0);
    memset(out, 0, sizeof out);
    CHECK(cuda_buf_download(ctx, out, &b, 0, 1000) == 0);
    CHECK(memcmp(in, out, 1000) == 0);
    CHECK(cuda_buf_download(ctx, out, &b, 10, 500) == 0);
    CHECK(memcmp(in + 10, out, 500) == 0);
    /* out of range is refused, not performed */
    CHECK(cuda_buf_upload(ctx, &b, 900, in, 101) == SF_ERANGE);
    CHECK(cuda_buf_download(ctx, out, &b, 1001, 0) == 0); /* nothing to do */
    CHECK(cuda_buf_download(ctx, out, &b, 1001, 1) == SF_ERANGE);
    CHECK(cuda_buf_reserve(&b, 500) == 0 && b.bytes == 1000);
    CHECK(cuda_buf_reserve(&b, 4000) == 0 && b.bytes == 4000);
    cuda_buf_free(&b);
    CHECK(b.ptr == NULL && b.bytes == 0);
    cuda_buf_free(&b); /* twice is fine */
    enum cuda_math m;
    CHECK(cuda_math_parse("tf32", &m) == 0 && m == CUDA_MATH_TF32);
    CHECK(cuda_math_parse("fp64", &m) == SF_EINVAL);
    CHECK(cuda_ctx_sync(ctx) == 0);
}

static void test_gemm(struct cuda_ctx *ctx)
{
    struct rng r;
    rng_seed(&r, 42);
    const size_t shapes[][3] = {{1, 1, 1}, {7, 13, 5}, {64, 96, 33}, {129, 257, 100}};
    const double tol[3] = {1e-5, 1e-2, 1e-2};
    for (size_t si = 0; si < SF_ARRAY_LEN(shapes); si++) {
        size_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int math = 0; math < 3; math++) {
                    size_t lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                    size_t na = (ta ? K : M) * lda, nb = (tb ? N : K) * ldb, nc = M * ldc;
                    float *A = malloc(na * 4), *B = malloc(nb * 4), *C = malloc(nc * 4);
                    float *ref = malloc(nc * 4), *got = malloc(nc * 4);
                    gpu_lab_fill(A, na, &r, 1, 0);
                    gpu_lab_fill(B, nb, &r, 1, 0);
                    gpu_lab_fill(C, nc, &r, 1, 0);
                    memcpy(ref, C, nc * 4);
                    tensor_sgemm_ref(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 0.25f, ref, ldc);
                    struct cuda_buf dA = {0}, dB = {0}, dC = {0};
                    float *pA = gpu_lab_upload(ctx, &dA, A, na * 4);
                    float *pB = gpu_lab_upload(ctx, &dB, B, nb * 4);
                    float *pC = gpu_lab_upload(ctx, &dC, C, nc * 4);
                    CHECK(pA && pB && pC);
                    if (pA && pB && pC) {
                        CHECK(cuda_sgemm(ctx, (enum cuda_math)math, ta, tb, M, N, K, 0.5f, pA, lda,
                                         pB, ldb, 0.25f, pC, ldc) == 0);
                        CHECK(cuda_buf_download(ctx, got, &dC, 0, nc * 4) == 0);
                        char what[96];
                        snprintf(what, sizeof what, "sgemm %s %zux%zux%zu ta=%d tb=%d",
                                 cuda_math_name((enum cuda_math)math), M, N, K, ta, tb);
                        GPU_LAB_CHECK(what, got, ref, nc, tol[math]);
                    }
                    cuda_buf_free(&dA);
                    cuda_buf_free(&dB);
                    cuda_buf_free(&dC);
                    free(A);
                    free(B);
                    free(C);
                    free(ref);
                    free(got);
                }
    }
    /* GEMV both ways against the GEMM reference with N = 1 */
    const size_t M = 300, K = 77;
    float *A = malloc(M * K * 4), *x = malloc(M * 4), *y = malloc(M * 4), *ref = malloc(M * 4);
    gpu_lab_fill(A, M * K, &r, 1, 0);
    gpu_lab_fill(x, M, &r, 1, 0);
    struct cuda_buf dA = {0}, dx = {0}, dy = {0};
    float *pA = gpu_lab_upload(ctx, &dA, A, M * K * 4), *px = gpu_lab_upload(ctx, &dx, x, M * 4);
    float *py = gpu_lab_upload(ctx, &dy, NULL, M * 4);
    CHECK(pA && px && py);
    if (pA && px && py) {
        /* y (M) = A x, A (M, K), x (K) */
        tensor_sgemm_ref(false, false, M, 1, K, 1.0f, A, K, x, 1, 0.0f, ref, 1);
        CHECK(cuda_sgemv(ctx, false, M, K, 1.0f, pA, K, px, 0.0f, py) == 0);
        CHECK(cuda_buf_download(ctx, y, &dy, 0, M * 4) == 0);
        GPU_LAB_CHECK("sgemv A x", y, ref, M, 1e-5);
        /* y (K) = A^T x, x (M) */
        tensor_sgemm_ref(true, false, K, 1, M, 1.0f, A, K, x, 1, 0.0f, ref, 1);
        CHECK(cuda_sgemv(ctx, true, K, M, 1.0f, pA, K, px, 0.0f, py) == 0);
        CHECK(cuda_buf_download(ctx, y, &dy, 0, K * 4) == 0);
        GPU_LAB_CHECK("sgemv A^T x", y, ref, K, 1e-5);
    }
    cuda_buf_free(&dA);
    cuda_buf_free(&dx);
    cuda_buf_free(&dy);
    free(A);
    free(x);
    free(y);
    free(ref);
}

/* The SAE encoder GEMM: a (B, n) = xc (B, d) W_enc^T, W_enc (n, d). */
static void time_gemm(struct cuda_ctx *ctx)
{
    const size_t B = 16384, d = 768, n = 24576;
    struct cuda_buf dx = {0}, dw = {0}, da = {0};
    if (cuda_buf_alloc(&dx, B * d * 4) || cuda_buf_alloc(&dw, n * d * 4) ||
        cuda_buf_alloc(&da, B * n * 4)) {
        printf("  (timing skipped: not enough device memory)\n");
        goto out;
    }
    cuda_memset(ctx, dx.ptr, 0, B * d * 4);
    cuda_memset(ctx, dw.ptr, 0, n * d * 4);
    struct cuda_timer *t = NULL;
    if (cuda_timer_new(ctx, &t) != 0) goto out;
    printf("  %-6s %-26s %10s %10s\n", "math", "shape (B x n x d)", "ms", "TFLOP/s");
    for (int math = 0; math < 3; math++) {
        double ms = 0;
        for (int rep = 0; rep < 2; rep++) { /* first pass warms up */
            cuda_timer_start(t);
            for (int i = 0; i < 5; i++)
                cuda_sgemm(ctx, (enum cuda_math)math, false, true, B, n, d, 1.0f, dx.ptr, d, dw.ptr,
                           d, 0.0f, da.ptr, n);
            cuda_timer_stop(t, &ms);
        }
        ms /= 5;
        printf("  %-6s %5zu x %6zu x %5zu       %10.3f %10.1f\n",
               cuda_math_name((enum cuda_math)math), B, n, d, ms,
               2.0 * B * n * d / (ms * 1e-3) / 1e12);
    }
    cuda_timer_destroy(&t);
out:
    cuda_buf_free(&dx);
    cuda_buf_free(&dw);
    cuda_buf_free(&da);
}

int main(void)
{
    log_init("test_gpu_gemm", LOG_LOGFMT, LOG_WARN);
    struct cuda_ctx *ctx;
    int rc = gpu_lab_open(&ctx);
    if (rc) return rc;
    test_buffers(ctx);
    test_gemm(ctx);
    if (!check_failures_) time_gemm(ctx);
    cuda_ctx_destroy(&ctx);
    CHECK(ctx == NULL);
    return check_exit();
}

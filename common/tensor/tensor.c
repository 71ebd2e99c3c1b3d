/* tensor: backend selection, threads and the GEMM on OpenBLAS (CPU), with a plain
 * reference loop beside it. */
#include <cblas.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "core/core.h"
#include "tensor.h"
#include "tensor_cuda.h"

#ifdef SAEFLOW_CUDA
int tensor_cuda_device_count(void); /* tensor_cuda.cu */
#endif

bool tensor_cuda_available(void)
{
#ifdef SAEFLOW_CUDA
    return tensor_cuda_device_count() > 0;
#else
    return false;
#endif
}

const char *tensor_backend_name(enum tensor_backend b)
{
    return b == TENSOR_CUDA ? "cuda" : "cpu";
}

int tensor_backend_parse(const char *s, enum tensor_backend *out)
{
    if (!s || !strcmp(s, "cpu")) {
        *out = TENSOR_CPU;
        return 0;
    }
    if (!strcmp(s, "cuda")) {
        if (!tensor_cuda_available()) {
            log_error("backend_unavailable", "backend=cuda reason=\"%s\"",
#ifdef SAEFLOW_CUDA
                      "no CUDA device visible"
#else
                      "built without CUDA"
#endif
            );
            return SF_EUNSUP;
        }
        *out = TENSOR_CUDA;
        return 0;
    }
    if (!strcmp(s, "auto")) {
        *out = tensor_cuda_available() ? TENSOR_CUDA : TENSOR_CPU;
        log_info("backend_chosen", "backend=%s", tensor_backend_name(*out));
        return 0;
    }
    log_error("backend_unknown", "backend=%s expected=cpu|cuda|auto", s);
    return SF_EINVAL;
}

static int tensor_threads;

void tensor_set_threads(int n)
{
    if (n <= 0) return;
    tensor_threads = n;
    openblas_set_num_threads(n);
    omp_set_num_threads(n);
}

int tensor_get_threads(void)
{
    return tensor_threads > 0 ? tensor_threads : omp_get_max_threads();
}

void tensor_sgemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha,
                  const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                  size_t ldc)
{
    if (M == 0 || N == 0) return;
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, (blasint)M, (blasint)N, (blasint)K, alpha, A,
                (blasint)lda, B, (blasint)ldb, beta, C, (blasint)ldc);
}

void tensor_sgemm_ref(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha,
                      const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                      size_t ldc)
{
    for (size_t i = 0; i < M; i++) {
        for (size_t j = 0; j < N; j++) {
            double acc = 0;
            for (size_t p = 0; p < K; p++) {
                float a = trans_a ? A[p * lda + i] : A[i * lda + p];
                float b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
                acc += (double)a * b;
            }
            float prev = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
            C[i * ldc + j] = alpha * (float)acc + prev;
        }
    }
}

int tensor_backend_flags(const char *prog, const char *backend, const char *math,
                         enum tensor_backend *bk, enum cuda_math *cm)
{
    if (cuda_math_parse(math, cm) != 0) {
        fprintf(stderr, "%s: --cuda_math must be fp32, tf32 or bf16\n", prog);
        return 2;
    }
    int rc = tensor_backend_parse(backend, bk);
    if (rc == SF_EINVAL) {
        fprintf(stderr, "%s: --backend must be cpu, cuda or auto\n", prog);
        return 2;
    }
    if (rc < 0) {
        fprintf(stderr,
                "%s: --backend cuda: CUDA is not available here (built without CUDA, or no "
                "device visible); use --backend cpu or auto\n",
                prog);
        return 1;
    }
    return 0;
}

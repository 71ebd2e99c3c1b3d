/* tensor_sgemm (OpenBLAS) against the plain reference loop, all transpose cases. */
#include <stdlib.h>

#include "core/core.h"
#include "tensor/tensor.h"
#include "../../support/check.h"

int main(void)
{
    struct rng r;
    rng_seed(&r, 7);
    const size_t M = 37, N = 53, K = 29;
    float *A = malloc(sizeof(float) * M * K), *B = malloc(sizeof(float) * K * N);
    float *C = malloc(sizeof(float) * M * N), *R = malloc(sizeof(float) * M * N);
    for (size_t i = 0; i < M * K; i++) A[i] = rng_normal(&r);
    for (size_t i = 0; i < K * N; i++) B[i] = rng_normal(&r);
    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            for (size_t i = 0; i < M * N; i++) C[i] = R[i] = (float)i * 0.01f;
            size_t lda = ta ? M : K, ldb = tb ? K : N;
            tensor_sgemm(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 2.0f, C, N);
            tensor_sgemm_ref(ta, tb, M, N, K, 0.5f, A, lda, B, ldb, 2.0f, R, N);
            double maxerr = 0;
            for (size_t i = 0; i < M * N; i++) maxerr = fmax(maxerr, fabs(C[i] - R[i]));
            CHECK_MSG(maxerr < 1e-4, "ta=%d tb=%d maxerr=%g", ta, tb, maxerr);
        }
    }
    enum tensor_backend b;
    CHECK(tensor_backend_parse("cpu", &b) == 0 && b == TENSOR_CPU);
    CHECK(tensor_backend_parse("auto", &b) == 0);
    CHECK(tensor_backend_parse("tpu", &b) == SF_EINVAL);
    if (!tensor_cuda_available()) CHECK(tensor_backend_parse("cuda", &b) == SF_EUNSUP);
    tensor_set_threads(2);
    CHECK(tensor_get_threads() == 2);
    free(A);
    free(B);
    free(C);
    free(R);
    return check_exit();
}

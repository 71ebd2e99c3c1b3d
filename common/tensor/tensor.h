/* tensor: the math backend. Every op has a CPU implementation (OpenBLAS for GEMMs,
 * plain C loops parallelised with OpenMP otherwise) that is the oracle, and a plain
 * reference loop (`*_ref`) that tests check the fast path against. The CUDA backend
 * sits behind the same names (see tensor_cuda.h) and is tested against the CPU one.
 *
 * Conventions: row-major float32; output first; shapes in comments. Nothing here
 * allocates except where a function says so. */
#ifndef SAEFLOW_TENSOR_H
#define SAEFLOW_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tensor_backend { TENSOR_CPU = 0, TENSOR_CUDA = 1 };

/* Parses "cpu" | "cuda" | "auto". "auto" picks CUDA when it was built and a device is
 * visible, and logs the choice. Returns 0 or SF_EINVAL / SF_EUNSUP. */
int tensor_backend_parse(const char *s, enum tensor_backend *out);
const char *tensor_backend_name(enum tensor_backend b);
bool tensor_cuda_available(void); /* built with CUDA and a device is visible */

/* Threads used by OpenBLAS and by our OpenMP loops (0 = library default). */
void tensor_set_threads(int n);
int tensor_get_threads(void);

/* C (M x N) = alpha * op(A) * op(B) + beta * C, row-major.
 * op(A) is M x K (A is M x K, or K x M when trans_a), op(B) is K x N (B is K x N, or
 * N x K when trans_b). lda/ldb/ldc are row strides. */
void tensor_sgemm(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha,
                  const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                  size_t ldc);
void tensor_sgemm_ref(bool trans_a, bool trans_b, size_t M, size_t N, size_t K, float alpha,
                      const float *A, size_t lda, const float *B, size_t ldb, float beta, float *C,
                      size_t ldc);

#endif

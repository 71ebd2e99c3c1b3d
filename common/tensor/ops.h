/* ops: the transformer engine's math (normalisation, activations, RoPE, attention,
 * linear layers, softmax), CPU backend. Each op has a fast path (OpenBLAS for the
 * linear layer, OpenMP + `omp simd` loops otherwise) and a plain reference loop
 * `<op>_ref` with the same signature that tests check the fast path against.
 *
 * Conventions (as tensor.h): row-major float32, output first, shapes in comments,
 * signatures free of backend types so that a CUDA implementation can sit behind the
 * same names. `out` may equal `inp` where a comment says "in place allowed".
 * Nothing allocates except attention_forward (its score scratch).
 *
 * Threads: the linear layer (and attention's GEMMs) use OpenBLAS's threads; the other
 * loops use OpenMP only when OpenBLAS is an OpenMP or single-threaded build, because
 * OpenBLAS's pthread pool spins after each call and fights an OpenMP team for cores. */
#ifndef SAEFLOW_TENSOR_OPS_H
#define SAEFLOW_TENSOR_OPS_H

#include <stddef.h>
#include <stdint.h>

/* out[r] = inp[r] / sqrt(mean(inp[r]^2) + eps) * w.   inp, out: (rows, d); w: (d).
 * In place allowed. */
void rmsnorm_forward(float *out, const float *inp, const float *w, size_t rows, size_t d,
                     float eps);
void rmsnorm_forward_ref(float *out, const float *inp, const float *w, size_t rows, size_t d,
                         float eps);

/* out[r] = (inp[r] - mean) / sqrt(var + eps) * w + b (biased variance); b may be NULL.
 * inp, out: (rows, d); w, b: (d). In place allowed. */
void layernorm_forward(float *out, const float *inp, const float *w, const float *b, size_t rows,
                       size_t d, float eps);
void layernorm_forward_ref(float *out, const float *inp, const float *w, const float *b,
                           size_t rows, size_t d, float eps);

/* GELU, tanh approximation (GPT-2, minGPT NewGELU): out, inp: (n). In place allowed. */
void gelu_forward(float *out, const float *inp, size_t n);
void gelu_forward_ref(float *out, const float *inp, size_t n);

/* SwiGLU: out[r][i] = silu(gate_up[r][i]) * gate_up[r][hidden + i].
 * gate_up: (rows, 2*hidden) (gate half, then up half); out: (rows, hidden). */
void swiglu_forward(float *out, const float *gate_up, size_t rows, size_t hidden);
void swiglu_forward_ref(float *out, const float *gate_up, size_t rows, size_t hidden);

/* Linear layer: out = inp @ w^T + b.   inp: (rows, in); w: (n_out, in) (nn.Linear's
 * [out, in]); b: (n_out) or NULL; out: (rows, n_out). Not in place. */
void linear_forward(float *out, const float *inp, const float *w, const float *b, size_t rows,
                    size_t in, size_t n_out);
void linear_forward_ref(float *out, const float *inp, const float *w, const float *b, size_t rows,
                        size_t in, size_t n_out);

/* Rotary position embedding, in place, on `n_heads` heads of `head_dim` in each of
 * `rows` rows of x (row stride ld floats). Row r is at position pos[r]. The first
 * rot_dim (even, <= head_dim) dims of each head rotate; pair j (j < rot_dim/2) turns
 * by pos * theta^(-2j/rot_dim).
 *   ROPE_INTERLEAVED: pairs (2j, 2j+1)   (llama2.c, GGUF / llama.cpp "normal" mode)
 *   ROPE_HALF:        pairs (j, j + rot_dim/2)   (Hugging Face rotate_half, "neox") */
enum rope_layout { ROPE_INTERLEAVED = 0, ROPE_HALF = 1 };
void rope_forward(float *x, size_t ld, const size_t *pos, size_t rows, size_t n_heads,
                  size_t head_dim, size_t rot_dim, float theta, enum rope_layout layout);
void rope_forward_ref(float *x, size_t ld, const size_t *pos, size_t rows, size_t n_heads,
                      size_t head_dim, size_t rot_dim, float theta, enum rope_layout layout);

/* Causal multi-head attention over stored keys/values, with grouped-query heads
 * (query head h reads kv head h / (n_heads / n_kv_heads)).
 *   q:   (rows, n_heads*head_dim), row stride q_ld
 *   k,v: key/value rows of kv_dim = n_kv_heads*head_dim floats, contiguous per
 *        sequence: query row r attends key rows j = 0..n_ctx[r]-1 located at
 *        k + kv_off[r] + j*kv_dim (same offsets in v)
 *   out: (rows, n_heads*head_dim), contiguous
 * scores = q.k / sqrt(head_dim), softmax over j, out = sum_j p_j v_j. n_ctx[r] >= 1.
 * Runs of >= 8 rows of one sequence at consecutive positions (prefill chunks) go
 * through two GEMMs per head; other rows are done one by one. Allocates its score
 * scratch (returns SF_ENOMEM if that fails, else 0). */
int attention_forward(float *out, const float *q, size_t q_ld, const float *k, const float *v,
                      const size_t *kv_off, const size_t *n_ctx, size_t rows, size_t n_heads,
                      size_t n_kv_heads, size_t head_dim);
int attention_forward_ref(float *out, const float *q, size_t q_ld, const float *k, const float *v,
                          const size_t *kv_off, const size_t *n_ctx, size_t rows, size_t n_heads,
                          size_t n_kv_heads, size_t head_dim);

/* out[r] = softmax(inp[r]) over n; in place allowed. */
void softmax_forward(float *out, const float *inp, size_t rows, size_t n);
void softmax_forward_ref(float *out, const float *inp, size_t rows, size_t n);

/* log(sum(exp(x))) of one row of n, computed stably in double. */
double logsumexp(const float *x, size_t n);

/* out[i] += inp[i], i < n. */
void add_inplace(float *out, const float *inp, size_t n);

#endif

/* ops: CPU implementations of the engine's ops (see ops.h), each next to its plain
 * reference loop. Fast paths parallelise over rows with OpenMP (only when the work is
 * large enough to pay for the fork) and vectorise inner loops with `omp simd`. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "ops.h"
#include "tensor.h"

/* Below this many floats of work an op runs on one thread. */
#define OPS_PAR_MIN 16384

/* Whether our OpenMP loops may use several threads. The engine alternates BLAS calls
 * with these loops; OpenBLAS's pthread build keeps its own pool, whose threads spin
 * for a while after each call, and an OpenMP team started then fights them for the
 * cores (measured: slower than one thread on a 2-core machine). With an OpenMP or
 * single-threaded OpenBLAS there is one pool and the loops run in parallel. */
static bool par_ok(size_t work)
{
    return work >= OPS_PAR_MIN && (openblas_get_parallel() != 1 || openblas_get_num_threads() == 1);
}

/* ---- RMSNorm ---- */

void rmsnorm_forward(float *out, const float *inp, const float *w, size_t rows, size_t d, float eps)
{
#pragma omp parallel for schedule(static) if (par_ok(rows * d))
    for (size_t r = 0; r < rows; r++) {
        const float *x = inp + r * d;
        float *o = out + r * d;
        float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
        for (size_t i = 0; i < d; i++) ss += x[i] * x[i];
        float s = 1.0f / sqrtf(ss / (float)d + eps);
#pragma omp simd
        for (size_t i = 0; i < d; i++) o[i] = w[i] * (s * x[i]);
    }
}

void rmsnorm_forward_ref(float *out, const float *inp, const float *w, size_t rows, size_t d,
                         float eps)
{
    for (size_t r = 0; r < rows; r++) {
        double ss = 0;
        for (size_t i = 0; i < d; i++) ss += (double)inp[r * d + i] * inp[r * d + i];
        double s = 1.0 / sqrt(ss / (double)d + eps);
        for (size_t i = 0; i < d; i++) out[r * d + i] = (float)(w[i] * (s * inp[r * d + i]));
    }
}

/* ---- LayerNorm ---- */

void layernorm_forward(float *out, const float *inp, const float *w, const float *b, size_t rows,
                       size_t d, float eps)
{
#pragma omp parallel for schedule(static) if (par_ok(rows * d))
    for (size_t r = 0; r < rows; r++) {
        const float *x = inp + r * d;
        float *o = out + r * d;
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (size_t i = 0; i < d; i++) sum += x[i];
        float mean = sum / (float)d;
        float var = 0.0f;
#pragma omp simd reduction(+ : var)
        for (size_t i = 0; i < d; i++) var += (x[i] - mean) * (x[i] - mean);
        float s = 1.0f / sqrtf(var / (float)d + eps);
        if (b) {
#pragma omp simd
            for (size_t i = 0; i < d; i++) o[i] = (x[i] - mean) * s * w[i] + b[i];
        } else {
#pragma omp simd
            for (size_t i = 0; i < d; i++) o[i] = (x[i] - mean) * s * w[i];
        }
    }
}

void layernorm_forward_ref(float *out, const float *inp, const float *w, const float *b,
                           size_t rows, size_t d, float eps)
{
    for (size_t r = 0; r < rows; r++) {
        const float *x = inp + r * d;
        double mean = 0, var = 0;
        for (size_t i = 0; i < d; i++) mean += x[i];
        mean /= (double)d;
        for (size_t i = 0; i < d; i++) var += (x[i] - mean) * (x[i] - mean);
        var /= (double)d;
        double s = 1.0 / sqrt(var + eps);
        for (size_t i = 0; i < d; i++)
            out[r * d + i] = (float)((x[i] - mean) * s * w[i] + (b ? b[i] : 0.0f));
    }
}

/* ---- GELU (tanh) ---- */

/* The pointwise ops below clamp with comparisons; GCC only if-converts (and so
 * vectorises) those without -ftrapping-math, which we do not rely on anyway. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#endif

/* exp(x) for float, vectorisable (no libm call inside `omp simd` loops): Cephes'
 * expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial, times 2^n built from bits.
 * About 1 ulp; inputs clamped to [-87, 88], NaN to -87 (callers see NaN through x). */
static inline float exp_approx(float x)
{
    /* written so that NaN lands on a bound: (int32_t)NaN below would be undefined */
    x = x > -87.0f ? x : -87.0f;
    x = x < 88.0f ? x : 88.0f;
    /* round to nearest by adding and removing 1.5 * 2^23 (no floorf: SSE2 has none) */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    return p * two_n;
}

#define GELU_K 0.7978845608028654f /* sqrt(2/pi) */

/* The builds target baseline x86-64 (SSE2); the hottest pointwise spans are also
 * compiled for AVX2 and AVX-512 and picked at load time (GCC function multiversioning). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define OPS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OPS_CLONES
#endif

/* 0.5 x (1 + tanh(u)) == x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3) */
OPS_CLONES static void gelu_span(float *out, const float *inp, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K * (x + 0.044715f * x * x * x);
        out[i] = x / (1.0f + exp_approx(-2.0f * u));
    }
}

void gelu_forward(float *out, const float *inp, size_t n)
{
    if (!par_ok(n)) {
        gelu_span(out, inp, n);
        return;
    }
#pragma omp parallel
    {
        size_t t = (size_t)omp_get_thread_num(), T = (size_t)omp_get_num_threads();
        size_t a = n * t / T, b = n * (t + 1) / T;
        gelu_span(out + a, inp + a, b - a);
    }
}

void gelu_forward_ref(float *out, const float *inp, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double x = inp[i];
        out[i] = (float)(0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x))));
    }
}

/* ---- SwiGLU ---- */

OPS_CLONES static void swiglu_span(float *o, const float *g, const float *u, size_t n)
{
#pragma omp simd
    for (size_t i = 0; i < n; i++) o[i] = g[i] / (1.0f + exp_approx(-g[i])) * u[i];
}

void swiglu_forward(float *out, const float *gate_up, size_t rows, size_t hidden)
{
#pragma omp parallel for schedule(static) if (par_ok(rows * hidden))
    for (size_t r = 0; r < rows; r++)
        swiglu_span(out + r * hidden, gate_up + r * 2 * hidden, gate_up + r * 2 * hidden + hidden,
                    hidden);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

void swiglu_forward_ref(float *out, const float *gate_up, size_t rows, size_t hidden)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t i = 0; i < hidden; i++) {
            double g = gate_up[r * 2 * hidden + i], u = gate_up[r * 2 * hidden + hidden + i];
            out[r * hidden + i] = (float)(g / (1.0 + exp(-g)) * u);
        }
}

/* ---- linear ---- */

/* One output row block of a GEMV: out[o] (+)= w[o] . x for o in [o0, o1), four rows at a
 * time so that each load of x serves four dot products. Decoding is bound by reading
 * the weights once; this keeps the loads streaming and vectorised. */
OPS_CLONES static void gemv_span(float *out, const float *x, const float *w, size_t in, size_t o0,
                                 size_t o1, bool accumulate)
{
    size_t o = o0;
    for (; o + 4 <= o1; o += 4) {
        const float *w0 = w + o * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
        float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
        for (size_t i = 0; i < in; i++) {
            float xi = x[i];
            s0 += w0[i] * xi;
            s1 += w1[i] * xi;
            s2 += w2[i] * xi;
            s3 += w3[i] * xi;
        }
        if (accumulate) {
            out[o] += s0, out[o + 1] += s1, out[o + 2] += s2, out[o + 3] += s3;
        } else {
            out[o] = s0, out[o + 1] = s1, out[o + 2] = s2, out[o + 3] = s3;
        }
    }
    for (; o < o1; o++) {
        const float *wr = w + o * in;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (size_t i = 0; i < in; i++) acc += wr[i] * x[i];
        out[o] = accumulate ? out[o] + acc : acc;
    }
}

/* GEMV work (floats of W) from which OpenBLAS's threads help. */
#define GEMV_PAR_MIN ((size_t)1 << 16)

void linear_forward(float *out, const float *inp, const float *w, const float *b, size_t rows,
                    size_t in, size_t n_out)
{
    if (rows == 0 || n_out == 0) return;
    float beta = 0.0f;
    if (b) {
        for (size_t r = 0; r < rows; r++) memcpy(out + r * n_out, b, n_out * sizeof(float));
        beta = 1.0f;
    }
    if (rows == 1) {
        /* A GEMM with one row would pack the whole weight first; a GEMV streams it once.
         * Small ones run here on one thread; large ones use OpenBLAS's threads. (Our own
         * OpenMP split was as fast on an idle machine but fell apart on a loaded one:
         * each of the ~50 GEMVs per token waits at a barrier for a descheduled thread,
         * where OpenBLAS's workers yield.) */
        if (n_out * in < GEMV_PAR_MIN) {
            gemv_span(out, inp, w, in, 0, n_out, b != NULL);
            return;
        }
        cblas_sgemv(CblasRowMajor, CblasNoTrans, (blasint)n_out, (blasint)in, 1.0f, w, (blasint)in,
                    inp, 1, beta, out, 1);
        return;
    }
    tensor_sgemm(false, true, rows, n_out, in, 1.0f, inp, in, w, in, beta, out, n_out);
}

void linear_forward_ref(float *out, const float *inp, const float *w, const float *b, size_t rows,
                        size_t in, size_t n_out)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t o = 0; o < n_out; o++) {
            double acc = b ? b[o] : 0.0;
            for (size_t i = 0; i < in; i++) acc += (double)inp[r * in + i] * w[o * in + i];
            out[r * n_out + o] = (float)acc;
        }
}

/* ---- RoPE ---- */

static void rope_row(float *x, size_t pos, size_t n_heads, size_t head_dim, size_t rot_dim,
                     float theta, enum rope_layout layout)
{
    size_t half = rot_dim / 2;
    for (size_t j = 0; j < half; j++) {
        float freq = 1.0f / powf(theta, (float)(2 * j) / (float)rot_dim);
        float ang = (float)pos * freq;
        float c = cosf(ang), s = sinf(ang);
        size_t i0 = layout == ROPE_INTERLEAVED ? 2 * j : j;
        size_t i1 = layout == ROPE_INTERLEAVED ? 2 * j + 1 : j + half;
        for (size_t h = 0; h < n_heads; h++) {
            float *xh = x + h * head_dim;
            float a = xh[i0], bb = xh[i1];
            xh[i0] = a * c - bb * s;
            xh[i1] = a * s + bb * c;
        }
    }
}

void rope_forward(float *x, size_t ld, const size_t *pos, size_t rows, size_t n_heads,
                  size_t head_dim, size_t rot_dim, float theta, enum rope_layout layout)
{
#pragma omp parallel for schedule(static) if (par_ok(rows * n_heads * head_dim))
    for (size_t r = 0; r < rows; r++)
        rope_row(x + r * ld, pos[r], n_heads, head_dim, rot_dim, theta, layout);
}

void rope_forward_ref(float *x, size_t ld, const size_t *pos, size_t rows, size_t n_heads,
                      size_t head_dim, size_t rot_dim, float theta, enum rope_layout layout)
{
    for (size_t r = 0; r < rows; r++)
        for (size_t h = 0; h < n_heads; h++) {
            float *xh = x + r * ld + h * head_dim;
            for (size_t j = 0; j < rot_dim / 2; j++) {
                double ang =
                    (double)pos[r] * pow((double)theta, -(double)(2 * j) / (double)rot_dim);
                size_t i0 = layout == ROPE_INTERLEAVED ? 2 * j : j;
                size_t i1 = layout == ROPE_INTERLEAVED ? 2 * j + 1 : j + rot_dim / 2;
                double a = xh[i0], b = xh[i1];
                xh[i0] = (float)(a * cos(ang) - b * sin(ang));
                xh[i1] = (float)(a * sin(ang) + b * cos(ang));
            }
        }
}

/* ---- attention ---- */

/* Row by row: decode steps and short runs. */
static int attention_rows(float *out, const float *q, size_t q_ld, const float *k, const float *v,
                          const size_t *kv_off, const size_t *n_ctx, size_t rows, size_t n_heads,
                          size_t n_kv_heads, size_t head_dim)
{
    size_t max_ctx = 0;
    for (size_t r = 0; r < rows; r++) max_ctx = SF_MAX(max_ctx, n_ctx[r]);
    size_t kv_dim = n_kv_heads * head_dim, group = n_heads / n_kv_heads;
    size_t q_dim = n_heads * head_dim;
    float scale = 1.0f / sqrtf((float)head_dim);
    int failed = 0;
    size_t work = rows * n_heads;
#pragma omp parallel if (par_ok(work * max_ctx * head_dim))
    {
        float *att = malloc(SF_MAX(max_ctx, 1) * sizeof(float));
        if (!att) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 4)
        for (size_t wi = 0; wi < work; wi++) {
            if (!att) continue;
            size_t r = wi / n_heads, h = wi % n_heads;
            const float *qh = q + r * q_ld + h * head_dim;
            const float *kb = k + kv_off[r] + (h / group) * head_dim;
            const float *vb = v + kv_off[r] + (h / group) * head_dim;
            size_t n = n_ctx[r];
            float mx = -INFINITY;
            for (size_t j = 0; j < n; j++) {
                const float *kj = kb + j * kv_dim;
                float s = 0.0f;
#pragma omp simd reduction(+ : s)
                for (size_t i = 0; i < head_dim; i++) s += qh[i] * kj[i];
                s *= scale;
                att[j] = s;
                if (s > mx) mx = s;
            }
            float sum = 0.0f;
            for (size_t j = 0; j < n; j++) {
                att[j] = expf(att[j] - mx);
                sum += att[j];
            }
            float inv = 1.0f / sum;
            float *oh = out + r * q_dim + h * head_dim;
            memset(oh, 0, head_dim * sizeof(float));
            for (size_t j = 0; j < n; j++) {
                const float *vj = vb + j * kv_dim;
                float p = att[j] * inv;
#pragma omp simd
                for (size_t i = 0; i < head_dim; i++) oh[i] += p * vj[i];
            }
        }
        free(att);
    }
    if (failed) {
        log_error("attention_oom", "max_ctx=%zu", max_ctx);
        return SF_ENOMEM;
    }
    return 0;
}

/* Rows r0.. of one sequence at consecutive positions (a prefill chunk) as two GEMMs per
 * head: S = Q K^T over all the chunk's keys, causal mask + softmax per row, O = S V.
 * The masked upper triangle is computed and thrown away; the GEMM is still far faster
 * than the row loop. s: (n, ctx) scratch. */
static void attention_chunk(float *out, const float *q, size_t q_ld, const float *k, const float *v,
                            const size_t *n_ctx, size_t n, size_t n_heads, size_t n_kv_heads,
                            size_t head_dim, float *s)
{
    size_t ctx = n_ctx[n - 1], kv_dim = n_kv_heads * head_dim, group = n_heads / n_kv_heads;
    size_t q_dim = n_heads * head_dim;
    float scale = 1.0f / sqrtf((float)head_dim);
    for (size_t h = 0; h < n_heads; h++) {
        size_t kvh = h / group;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)n, (blasint)ctx,
                    (blasint)head_dim, scale, q + h * head_dim, (blasint)q_ld, k + kvh * head_dim,
                    (blasint)kv_dim, 0.0f, s, (blasint)ctx);
        for (size_t i = 0; i < n; i++) {
            float *row = s + i * ctx;
            size_t valid = n_ctx[i];
            float mx = -INFINITY;
            for (size_t j = 0; j < valid; j++) mx = row[j] > mx ? row[j] : mx;
            float sum = 0.0f;
            for (size_t j = 0; j < valid; j++) {
                row[j] = expf(row[j] - mx);
                sum += row[j];
            }
            float inv = 1.0f / sum;
            for (size_t j = 0; j < valid; j++) row[j] *= inv;
            for (size_t j = valid; j < ctx; j++) row[j] = 0.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)n, (blasint)head_dim,
                    (blasint)ctx, 1.0f, s, (blasint)ctx, v + kvh * head_dim, (blasint)kv_dim, 0.0f,
                    out + h * head_dim, (blasint)q_dim);
    }
}

/* Prefill chunks of at least this many rows go through attention_chunk. */
#define ATTN_CHUNK_MIN 8
/* Cap on a chunk's score matrix (floats); longer chunks are split by rows. */
#define ATTN_SCORES_MAX ((size_t)1 << 22)

int attention_forward(float *out, const float *q, size_t q_ld, const float *k, const float *v,
                      const size_t *kv_off, const size_t *n_ctx, size_t rows, size_t n_heads,
                      size_t n_kv_heads, size_t head_dim)
{
    size_t q_dim = n_heads * head_dim;
    float *s = NULL;
    size_t s_cap = 0;
    int rc = 0;
    for (size_t r0 = 0; r0 < rows && rc == 0;) {
        /* a run: same sequence, consecutive positions, within the score cap */
        size_t r1 = r0 + 1;
        while (r1 < rows && kv_off[r1] == kv_off[r0] && n_ctx[r1] == n_ctx[r1 - 1] + 1 &&
               (r1 + 1 - r0) * n_ctx[r1] <= ATTN_SCORES_MAX)
            r1++;
        size_t n = r1 - r0;
        if (n < ATTN_CHUNK_MIN) {
            rc = attention_rows(out + r0 * q_dim, q + r0 * q_ld, q_ld, k, v, kv_off + r0,
                                n_ctx + r0, n, n_heads, n_kv_heads, head_dim);
            r0 = r1;
            continue;
        }
        size_t need = n * n_ctx[r1 - 1];
        if (need > s_cap) {
            free(s);
            s = malloc(need * sizeof(float));
            s_cap = s ? need : 0;
            if (!s) {
                log_error("attention_oom", "scores=%zu", need);
                rc = SF_ENOMEM;
                break;
            }
        }
        attention_chunk(out + r0 * q_dim, q + r0 * q_ld, q_ld, k + kv_off[r0], v + kv_off[r0],
                        n_ctx + r0, n, n_heads, n_kv_heads, head_dim, s);
        r0 = r1;
    }
    free(s);
    return rc;
}

int attention_forward_ref(float *out, const float *q, size_t q_ld, const float *k, const float *v,
                          const size_t *kv_off, const size_t *n_ctx, size_t rows, size_t n_heads,
                          size_t n_kv_heads, size_t head_dim)
{
    size_t kv_dim = n_kv_heads * head_dim, group = n_heads / n_kv_heads;
    size_t max_ctx = 0;
    for (size_t r = 0; r < rows; r++) max_ctx = SF_MAX(max_ctx, n_ctx[r]);
    double *att = malloc(SF_MAX(max_ctx, 1) * sizeof(double));
    if (!att) return SF_ENOMEM;
    for (size_t r = 0; r < rows; r++)
        for (size_t h = 0; h < n_heads; h++) {
            const float *qh = q + r * q_ld + h * head_dim;
            size_t kvh = h / group;
            double mx = -INFINITY, sum = 0;
            for (size_t j = 0; j < n_ctx[r]; j++) {
                const float *kj = k + kv_off[r] + j * kv_dim + kvh * head_dim;
                double s = 0;
                for (size_t i = 0; i < head_dim; i++) s += (double)qh[i] * kj[i];
                att[j] = s / sqrt((double)head_dim);
                if (att[j] > mx) mx = att[j];
            }
            for (size_t j = 0; j < n_ctx[r]; j++) sum += (att[j] = exp(att[j] - mx));
            for (size_t i = 0; i < head_dim; i++) {
                double acc = 0;
                for (size_t j = 0; j < n_ctx[r]; j++)
                    acc += att[j] / sum * v[kv_off[r] + j * kv_dim + kvh * head_dim + i];
                out[r * n_heads * head_dim + h * head_dim + i] = (float)acc;
            }
        }
    free(att);
    return 0;
}

/* ---- softmax, logsumexp, add ---- */

void softmax_forward(float *out, const float *inp, size_t rows, size_t n)
{
#pragma omp parallel for schedule(static) if (par_ok(rows * n))
    for (size_t r = 0; r < rows; r++) {
        const float *x = inp + r * n;
        float *o = out + r * n;
        float mx = -INFINITY;
        for (size_t i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
        float sum = 0.0f;
        for (size_t i = 0; i < n; i++) {
            o[i] = expf(x[i] - mx);
            sum += o[i];
        }
        float inv = 1.0f / sum;
        for (size_t i = 0; i < n; i++) o[i] *= inv;
    }
}

void softmax_forward_ref(float *out, const float *inp, size_t rows, size_t n)
{
    for (size_t r = 0; r < rows; r++) {
        double lse = logsumexp(inp + r * n, n);
        for (size_t i = 0; i < n; i++) out[r * n + i] = (float)exp(inp[r * n + i] - lse);
    }
}

double logsumexp(const float *x, size_t n)
{
    if (n == 0) return -INFINITY;
    float mx = x[0];
    for (size_t i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    if (isinf(mx)) return mx;
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += exp((double)x[i] - mx);
    return mx + log(sum);
}

void add_inplace(float *out, const float *inp, size_t n)
{
#pragma omp parallel for simd schedule(static) if (par_ok(n))
    for (size_t i = 0; i < n; i++) out[i] += inp[i];
}

/* The engine ops (tensor/ops.h): each fast path against its plain reference loop, on
 * shapes large enough to take the threaded / BLAS paths and small odd ones; plus a
 * few closed-form checks of the references themselves. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../support/check.h"
#include "core/core.h"
#include "tensor/ops.h"
#include "tensor/tensor.h"

static struct rng rng;

static float *randn(size_t n, float scale)
{
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = rng_normal(&rng) * scale;
    return x;
}

static double max_rel(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 1e-30;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs((double)b[i]));
    }
    return md / mb;
}

static void test_norms(size_t rows, size_t d)
{
    float *x = randn(rows * d, 2.0f), *w = randn(d, 1.0f), *b = randn(d, 1.0f);
    float *o1 = malloc(rows * d * 4), *o2 = malloc(rows * d * 4);
    rmsnorm_forward(o1, x, w, rows, d, 1e-5f);
    rmsnorm_forward_ref(o2, x, w, rows, d, 1e-5f);
    CHECK_MSG(max_rel(o1, o2, rows * d) < 1e-5, "rmsnorm %zux%zu", rows, d);
    layernorm_forward(o1, x, w, b, rows, d, 1e-5f);
    layernorm_forward_ref(o2, x, w, b, rows, d, 1e-5f);
    CHECK_MSG(max_rel(o1, o2, rows * d) < 1e-5, "layernorm %zux%zu", rows, d);
    layernorm_forward(o1, x, w, NULL, rows, d, 1e-5f);
    layernorm_forward_ref(o2, x, w, NULL, rows, d, 1e-5f);
    CHECK(max_rel(o1, o2, rows * d) < 1e-5);
    /* in place */
    memcpy(o1, x, rows * d * 4);
    rmsnorm_forward(o1, o1, w, rows, d, 1e-5f);
    rmsnorm_forward_ref(o2, x, w, rows, d, 1e-5f);
    CHECK(max_rel(o1, o2, rows * d) < 1e-5);
    free(x), free(w), free(b), free(o1), free(o2);
}

static void test_pointwise(size_t n)
{
    float *x = randn(2 * n, 3.0f), *o1 = malloc(2 * n * 4), *o2 = malloc(2 * n * 4);
    gelu_forward(o1, x, n);
    gelu_forward_ref(o2, x, n);
    CHECK_MSG(max_rel(o1, o2, n) < 1e-5, "gelu n=%zu", n);
    swiglu_forward(o1, x, n / 16, 16);
    swiglu_forward_ref(o2, x, n / 16, 16);
    CHECK_MSG(max_rel(o1, o2, n / 16 * 16) < 1e-5, "swiglu n=%zu", n);
    softmax_forward(o1, x, n / 32, 32);
    softmax_forward_ref(o2, x, n / 32, 32);
    CHECK_MSG(max_rel(o1, o2, n / 32 * 32) < 1e-5, "softmax n=%zu", n);
    memcpy(o1, x, n * 4);
    add_inplace(o1, x + n, n);
    for (size_t i = 0; i < n; i++) o2[i] = x[i] + x[n + i];
    CHECK(max_rel(o1, o2, n) == 0);
    free(x), free(o1), free(o2);
}

static void test_linear(size_t rows, size_t in, size_t out, bool bias)
{
    float *x = randn(rows * in, 1.0f), *w = randn(out * in, 0.1f),
          *b = bias ? randn(out, 1.0f) : NULL;
    float *o1 = malloc(rows * out * 4), *o2 = malloc(rows * out * 4);
    linear_forward(o1, x, w, b, rows, in, out);
    linear_forward_ref(o2, x, w, b, rows, in, out);
    CHECK_MSG(max_rel(o1, o2, rows * out) < 1e-5, "linear %zux%zu->%zu", rows, in, out);
    free(x), free(w), free(b), free(o1), free(o2);
}

static void test_rope(size_t rows, size_t heads, size_t hd, size_t rot, enum rope_layout lay)
{
    size_t ld = heads * hd + 5; /* a stride wider than the heads, as in the fused QKV rows */
    float *x = randn(rows * ld, 1.0f), *y = malloc(rows * ld * 4);
    memcpy(y, x, rows * ld * 4);
    size_t *pos = malloc(rows * sizeof *pos);
    for (size_t r = 0; r < rows; r++) pos[r] = (r * 7) % 300;
    rope_forward(x, ld, pos, rows, heads, hd, rot, 10000.0f, lay);
    rope_forward_ref(y, ld, pos, rows, heads, hd, rot, 10000.0f, lay);
    CHECK_MSG(max_rel(x, y, rows * ld) < 1e-4, "rope layout=%d", (int)lay);
    free(x), free(y), free(pos);
    /* closed form: position 1, one head of 4 dims, theta 100: pair 0 turns 1 rad,
     * pair 1 turns 0.1 rad. Interleaved pairs (0,1),(2,3); half pairs (0,2),(1,3). */
    float v[4] = {1, 0, 1, 0};
    size_t p1 = 1;
    rope_forward_ref(v, 4, &p1, 1, 1, 4, 4, 100.0f, ROPE_INTERLEAVED);
    CHECK_NEAR(v[0], cos(1.0), 1e-6, 0);
    CHECK_NEAR(v[1], sin(1.0), 1e-6, 0);
    CHECK_NEAR(v[2], cos(0.1), 1e-6, 0);
    CHECK_NEAR(v[3], sin(0.1), 1e-6, 0);
    float h[4] = {1, 1, 0, 0};
    rope_forward_ref(h, 4, &p1, 1, 1, 4, 4, 100.0f, ROPE_HALF);
    CHECK_NEAR(h[0], cos(1.0), 1e-6, 0);
    CHECK_NEAR(h[2], sin(1.0), 1e-6, 0);
    CHECK_NEAR(h[1], cos(0.1), 1e-6, 0);
    CHECK_NEAR(h[3], sin(0.1), 1e-6, 0);
}

/* Two sequences in one cache (different offsets); the first one's rows start at
 * position `start` (a chunk appended to a cache), the second's at 0. Long runs take
 * the GEMM path, short ones the row loop. */
static void test_attention(size_t heads, size_t kv_heads, size_t hd, size_t start)
{
    size_t lens[2] = {37 - start, 5}, max_len = 40, kvd = kv_heads * hd, qd = heads * hd;
    float *k = randn(2 * max_len * kvd, 1.0f), *v = randn(2 * max_len * kvd, 1.0f);
    size_t rows = lens[0] + lens[1];
    float *q = randn(rows * (qd + 3), 1.0f);
    size_t *off = malloc(rows * sizeof *off), *nctx = malloc(rows * sizeof *nctx);
    for (size_t r = 0; r < rows; r++) {
        size_t s = r < lens[0] ? 0 : 1, p = s ? r - lens[0] : r + start;
        off[r] = s * max_len * kvd;
        nctx[r] = p + 1;
    }
    float *o1 = malloc(rows * qd * 4), *o2 = malloc(rows * qd * 4);
    CHECK_EQ_INT(attention_forward(o1, q, qd + 3, k, v, off, nctx, rows, heads, kv_heads, hd), 0);
    CHECK_EQ_INT(attention_forward_ref(o2, q, qd + 3, k, v, off, nctx, rows, heads, kv_heads, hd),
                 0);
    CHECK_MSG(max_rel(o1, o2, rows * qd) < 1e-5, "attention h=%zu kv=%zu", heads, kv_heads);
    /* a query that sees one key returns that key's value */
    if (start == 0)
        for (size_t i = 0; i < hd; i++) CHECK_NEAR(o2[i], v[i], 1e-6, 0);
    free(k), free(v), free(q), free(off), free(nctx), free(o1), free(o2);
}

int main(void)
{
    log_init("test_tensor_ops", LOG_LOGFMT, LOG_WARN);
    rng_seed(&rng, 7);
    test_norms(3, 7);
    test_norms(300, 256);
    test_pointwise(64);
    test_pointwise(1 << 16);
    test_linear(1, 64, 33, true); /* GEMV path */
    test_linear(1, 300, 1000, false);
    test_linear(17, 64, 96, true); /* GEMM path */
    test_linear(128, 256, 300, false);
    test_rope(9, 8, 8, 8, ROPE_INTERLEAVED);
    test_rope(9, 8, 8, 8, ROPE_HALF);
    test_rope(200, 12, 64, 32, ROPE_HALF); /* partial rotary, threaded */
    test_attention(8, 2, 8, 0);
    test_attention(8, 2, 8, 11);
    test_attention(12, 12, 64, 0);
    test_attention(12, 4, 64, 30); /* 7 rows: row loop */
    CHECK_NEAR(logsumexp((const float[]){0, 0, 0, 0}, 4), log(4.0), 1e-12, 0);
    CHECK_NEAR(logsumexp((const float[]){1000, 1000}, 2), 1000 + log(2.0), 1e-9, 0);
    return check_exit();
}

// lib: tensor
/* GPU lab: the engine's ops on CUDA (ops_cuda.h) against their CPU reference loops
 * (ops.h `_ref`) on fresh random inputs: norms, GELU, SwiGLU, softmax, add, linear
 * (fp32 1e-5 / tf32 1e-2), RoPE in both layouts, causal GQA attention over a cache with
 * per-row offsets and lengths, and the engine's data movement (embedding, KV store,
 * row gather). Then each op is timed at a 1B-model shape. Exits 77 without a device. */
#include "gpu_lab.h"
#include "tensor/ops.h"
#include "tensor/ops_cuda.h"

/* Device scratch that the checks share: up to 4 arrays of floats + 3 index arrays. */
struct dev {
    struct cuda_buf f[4], z[3];
};

static void dev_free(struct dev *v)
{
    for (int i = 0; i < 4; i++) cuda_buf_free(&v->f[i]);
    for (int i = 0; i < 3; i++) cuda_buf_free(&v->z[i]);
}

static float *up(struct cuda_ctx *c, struct cuda_buf *b, const void *h, size_t bytes)
{
    float *p = gpu_lab_upload(c, b, h, bytes);
    CHECK(p != NULL);
    return p;
}

static void down(struct cuda_ctx *c, void *h, struct cuda_buf *b, size_t bytes)
{
    CHECK(cuda_buf_download(c, h, b, 0, bytes) == 0);
}

static void test_rowwise(struct cuda_ctx *c, struct rng *r)
{
    const size_t rows = 37, d = 1000;
    float *x = malloc(rows * d * 4), *w = malloc(d * 4), *b = malloc(d * 4);
    float *ref = malloc(rows * 2 * d * 4), *got = malloc(rows * 2 * d * 4);
    gpu_lab_fill(x, rows * d, r, 2, 0.3f);
    gpu_lab_fill(w, d, r, 1, 1);
    gpu_lab_fill(b, d, r, 1, 0);
    struct dev v = {0};
    float *px = up(c, &v.f[0], x, rows * d * 4), *pw = up(c, &v.f[1], w, d * 4);
    float *pb = up(c, &v.f[2], b, d * 4), *po = up(c, &v.f[3], NULL, rows * 2 * d * 4);
    if (!px || !pw || !pb || !po) goto out;

    rmsnorm_forward_ref(ref, x, w, rows, d, 1e-5f);
    CHECK(ops_cuda_rmsnorm_forward(c, po, px, pw, rows, d, 1e-5f) == 0);
    down(c, got, &v.f[3], rows * d * 4);
    GPU_LAB_CHECK("rmsnorm", got, ref, rows * d, 1e-5);

    layernorm_forward_ref(ref, x, w, b, rows, d, 1e-5f);
    CHECK(ops_cuda_layernorm_forward(c, po, px, pw, pb, rows, d, 1e-5f) == 0);
    down(c, got, &v.f[3], rows * d * 4);
    GPU_LAB_CHECK("layernorm (bias)", got, ref, rows * d, 1e-5);
    layernorm_forward_ref(ref, x, w, NULL, rows, d, 1e-5f);
    CHECK(ops_cuda_layernorm_forward(c, po, px, pw, NULL, rows, d, 1e-5f) == 0);
    down(c, got, &v.f[3], rows * d * 4);
    GPU_LAB_CHECK("layernorm (no bias)", got, ref, rows * d, 1e-5);

    /* in place */
    CHECK(cuda_memcpy_d2d(c, po, px, rows * d * 4) == 0);
    rmsnorm_forward_ref(ref, x, w, rows, d, 1e-6f);
    CHECK(ops_cuda_rmsnorm_forward(c, po, po, pw, rows, d, 1e-6f) == 0);
    down(c, got, &v.f[3], rows * d * 4);
    GPU_LAB_CHECK("rmsnorm in place", got, ref, rows * d, 1e-5);

    softmax_forward_ref(ref, x, rows, d);
    CHECK(ops_cuda_softmax_forward(c, po, px, rows, d) == 0);
    down(c, got, &v.f[3], rows * d * 4);
    GPU_LAB_CHECK("softmax", got, ref, rows * d, 1e-5);

    gelu_forward_ref(ref, x, rows * d);
    CHECK(ops_cuda_gelu_forward(c, po, px, rows * d) == 0);
    down(c, got, &v.f[3], rows * d * 4);
    GPU_LAB_CHECK("gelu (tanh)", got, ref, rows * d, 1e-5);

    /* swiglu: gate_up (rows, 2*hidden) from x viewed with hidden = d/2 */
    swiglu_forward_ref(ref, x, rows, d / 2);
    CHECK(ops_cuda_swiglu_forward(c, po, px, rows, d / 2) == 0);
    down(c, got, &v.f[3], rows * (d / 2) * 4);
    GPU_LAB_CHECK("swiglu", got, ref, rows * (d / 2), 1e-5);

    memcpy(ref, x, rows * d * 4);
    for (size_t i = 0; i < rows * d; i++) ref[i] += x[i];
    CHECK(cuda_memcpy_d2d(c, po, px, rows * d * 4) == 0);
    CHECK(ops_cuda_add_inplace(c, po, px, rows * d) == 0);
    down(c, got, &v.f[3], rows * d * 4);
    GPU_LAB_CHECK("add_inplace", got, ref, rows * d, 1e-6);
out:
    dev_free(&v);
    free(x);
    free(w);
    free(b);
    free(ref);
    free(got);
}

static void test_linear(struct cuda_ctx *c, struct rng *r)
{
    const size_t rows = 65, in = 300, n_out = 129;
    float *x = malloc(rows * in * 4), *w = malloc(n_out * in * 4), *b = malloc(n_out * 4);
    float *ref = malloc(rows * n_out * 4), *got = malloc(rows * n_out * 4);
    gpu_lab_fill(x, rows * in, r, 1, 0);
    gpu_lab_fill(w, n_out * in, r, 0.1f, 0);
    gpu_lab_fill(b, n_out, r, 1, 0);
    struct dev v = {0};
    float *px = up(c, &v.f[0], x, rows * in * 4), *pw = up(c, &v.f[1], w, n_out * in * 4);
    float *pb = up(c, &v.f[2], b, n_out * 4), *po = up(c, &v.f[3], NULL, rows * n_out * 4);
    if (px && pw && pb && po) {
        for (int math = 0; math < 2; math++) {
            for (int bias = 0; bias < 2; bias++) {
                linear_forward_ref(ref, x, w, bias ? b : NULL, rows, in, n_out);
                CHECK(ops_cuda_linear_forward(c, (enum cuda_math)math, po, px, pw, bias ? pb : NULL,
                                              rows, in, n_out) == 0);
                down(c, got, &v.f[3], rows * n_out * 4);
                char what[64];
                snprintf(what, sizeof what, "linear %s bias=%d",
                         cuda_math_name((enum cuda_math)math), bias);
                GPU_LAB_CHECK(what, got, ref, rows * n_out, math ? 1e-2 : 1e-5);
            }
        }
        /* one row (the CPU takes a GEMV path) */
        linear_forward_ref(ref, x, w, b, 1, in, n_out);
        CHECK(ops_cuda_linear_forward(c, CUDA_MATH_FP32, po, px, pw, pb, 1, in, n_out) == 0);
        down(c, got, &v.f[3], n_out * 4);
        GPU_LAB_CHECK("linear one row", got, ref, n_out, 1e-5);
    }
    dev_free(&v);
    free(x);
    free(w);
    free(b);
    free(ref);
    free(got);
}

static void test_rope(struct cuda_ctx *c, struct rng *r)
{
    const size_t rows = 20, n_heads = 6, head_dim = 48, ld = n_heads * head_dim + 16;
    float *x = malloc(rows * ld * 4), *ref = malloc(rows * ld * 4), *got = malloc(rows * ld * 4);
    size_t pos[20];
    for (size_t i = 0; i < rows; i++) pos[i] = rng_below(r, 4096);
    for (int layout = 0; layout < 2; layout++) {
        const size_t rots[2] = {48, 16};
        for (size_t ri = 0; ri < 2; ri++) {
            const size_t rot = rots[ri];
            gpu_lab_fill(x, rows * ld, r, 1, 0);
            memcpy(ref, x, rows * ld * 4);
            rope_forward_ref(ref, ld, pos, rows, n_heads, head_dim, rot, 10000.0f,
                             (enum rope_layout)layout);
            struct dev v = {0};
            float *px = up(c, &v.f[0], x, rows * ld * 4);
            size_t *pp = (size_t *)up(c, &v.z[0], pos, sizeof pos);
            if (px && pp) {
                CHECK(ops_cuda_rope_forward(c, px, ld, pp, rows, n_heads, head_dim, rot, 10000.0f,
                                            (enum rope_layout)layout) == 0);
                down(c, got, &v.f[0], rows * ld * 4);
                char what[64];
                snprintf(what, sizeof what, "rope %s rot_dim=%zu",
                         layout == ROPE_INTERLEAVED ? "interleaved" : "half", rot);
                /* the angle is pos * freq in float (as the CPU fast path): at positions up
                 * to 4096 one ulp of freq moves it by ~3e-4 rad; a layout bug moves
                 * values by O(1) */
                GPU_LAB_CHECK(what, got, ref, rows * ld, 1e-3);
            }
            dev_free(&v);
        }
    }
    free(x);
    free(ref);
    free(got);
}

static void test_attention(struct cuda_ctx *c, struct rng *r)
{
    const size_t n_heads = 8, head_dims[] = {16, 64, 80, 256};
    for (size_t hi = 0; hi < SF_ARRAY_LEN(head_dims); hi++) {
        const size_t head_dim = head_dims[hi], n_kv = hi % 2 ? 2 : 8;
        const size_t kv_dim = n_kv * head_dim, q_dim = n_heads * head_dim, q_ld = q_dim + 8;
        /* three sequences in a cache of 3 slots x 150 positions; rows query them with
         * different lengths (a prefill of 1..n and decode steps) */
        const size_t slots = 3, max_len = 150, rows = 40;
        size_t kv_off[40], n_ctx[40];
        for (size_t i = 0; i < rows; i++) {
            size_t slot = i % slots;
            kv_off[i] = slot * max_len * kv_dim;
            n_ctx[i] = 1 + rng_below(r, i == 0 ? 1 : max_len);
        }
        float *q = malloc(rows * q_ld * 4), *k = malloc(slots * max_len * kv_dim * 4);
        float *v = malloc(slots * max_len * kv_dim * 4);
        float *ref = malloc(rows * q_dim * 4), *got = malloc(rows * q_dim * 4);
        gpu_lab_fill(q, rows * q_ld, r, 1, 0);
        gpu_lab_fill(k, slots * max_len * kv_dim, r, 1, 0);
        gpu_lab_fill(v, slots * max_len * kv_dim, r, 1, 0);
        CHECK(attention_forward_ref(ref, q, q_ld, k, v, kv_off, n_ctx, rows, n_heads, n_kv,
                                    head_dim) == 0);
        struct dev d = {0};
        float *pq = up(c, &d.f[0], q, rows * q_ld * 4);
        float *pk = up(c, &d.f[1], k, slots * max_len * kv_dim * 4);
        float *pv = up(c, &d.f[2], v, slots * max_len * kv_dim * 4);
        float *po = up(c, &d.f[3], NULL, rows * q_dim * 4);
        size_t *poff = (size_t *)up(c, &d.z[0], kv_off, sizeof kv_off);
        size_t *pn = (size_t *)up(c, &d.z[1], n_ctx, sizeof n_ctx);
        if (pq && pk && pv && po && poff && pn) {
            CHECK(ops_cuda_attention_forward(c, po, pq, q_ld, pk, pv, poff, pn, rows, n_heads, n_kv,
                                             head_dim) == 0);
            down(c, got, &d.f[3], rows * q_dim * 4);
            char what[64];
            snprintf(what, sizeof what, "attention head_dim=%zu heads=%zu kv_heads=%zu", head_dim,
                     n_heads, n_kv);
            GPU_LAB_CHECK(what, got, ref, rows * q_dim, 1e-5);
        }
        dev_free(&d);
        free(q);
        free(k);
        free(v);
        free(ref);
        free(got);
    }
    CHECK(ops_cuda_attention_forward(c, NULL, NULL, 0, NULL, NULL, NULL, NULL, 1, 2, 2, 512) ==
          SF_EUNSUP);
}

static void test_movement(struct cuda_ctx *c, struct rng *r)
{
    const size_t vocab = 50, d = 33, rows = 12, max_pos = 20;
    float *emb = malloc(vocab * d * 4), *pe = malloc(max_pos * d * 4);
    float *ref = malloc(rows * d * 4), *got = malloc(rows * d * 4);
    int32_t tok[12];
    size_t pos[12], idx[5] = {11, 0, 3, 3, 7};
    gpu_lab_fill(emb, vocab * d, r, 1, 0);
    gpu_lab_fill(pe, max_pos * d, r, 1, 0);
    for (size_t i = 0; i < rows; i++) {
        tok[i] = (int32_t)rng_below(r, vocab);
        pos[i] = rng_below(r, max_pos);
        for (size_t j = 0; j < d; j++) ref[i * d + j] = emb[tok[i] * d + j] + pe[pos[i] * d + j];
    }
    struct dev v = {0};
    float *pemb = up(c, &v.f[0], emb, vocab * d * 4), *ppe = up(c, &v.f[1], pe, max_pos * d * 4);
    float *po = up(c, &v.f[2], NULL, rows * d * 4), *pg = up(c, &v.f[3], NULL, rows * d * 4);
    int32_t *ptok = (int32_t *)up(c, &v.z[0], tok, sizeof tok);
    size_t *ppos = (size_t *)up(c, &v.z[1], pos, sizeof pos);
    size_t *pidx = (size_t *)up(c, &v.z[2], idx, sizeof idx);
    if (pemb && ppe && po && pg && ptok && ppos && pidx) {
        CHECK(ops_cuda_embed_forward(c, po, pemb, ppe, ptok, ppos, rows, d) == 0);
        down(c, got, &v.f[2], rows * d * 4);
        GPU_LAB_CHECK("embed + positions", got, ref, rows * d, 0);
        CHECK(ops_cuda_gather_rows(c, pg, po, pidx, 5, d) == 0);
        float gref[5 * 33];
        for (size_t i = 0; i < 5; i++) memcpy(gref + i * d, ref + idx[i] * d, d * 4);
        down(c, got, &v.f[3], 5 * d * 4);
        GPU_LAB_CHECK("gather rows", got, gref, 5 * d, 0);
        /* KV store: rows of (q | k | v) with kv_dim 8 into a 2-slot cache of 20 positions */
        const size_t kvd = 8, qkv_ld = d, slots = 2;
        size_t off[12];
        for (size_t i = 0; i < rows; i++) off[i] = (i % slots) * max_pos * kvd;
        /* positions must be distinct per slot for a well-defined result */
        for (size_t i = 0; i < rows; i++) pos[i] = i / slots;
        float *kc = calloc(slots * max_pos * kvd, 4), *vc = calloc(slots * max_pos * kvd, 4);
        float *gk = malloc(slots * max_pos * kvd * 4), *gv = malloc(slots * max_pos * kvd * 4);
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < kvd; j++) {
                kc[off[i] + pos[i] * kvd + j] = ref[i * d + 4 + j];
                vc[off[i] + pos[i] * kvd + j] = ref[i * d + 20 + j];
            }
        struct dev w = {0};
        float *pkc = up(c, &w.f[0], NULL, slots * max_pos * kvd * 4);
        float *pvc = up(c, &w.f[1], NULL, slots * max_pos * kvd * 4);
        size_t *poff = (size_t *)up(c, &w.z[0], off, sizeof off);
        size_t *ppos2 = (size_t *)up(c, &w.z[1], pos, sizeof pos);
        if (pkc && pvc && poff && ppos2) {
            CHECK(ops_cuda_kv_store(c, pkc, pvc, po, qkv_ld, 4, 20, kvd, poff, ppos2, rows) == 0);
            down(c, gk, &w.f[0], slots * max_pos * kvd * 4);
            down(c, gv, &w.f[1], slots * max_pos * kvd * 4);
            GPU_LAB_CHECK("kv store (K)", gk, kc, slots * max_pos * kvd, 0);
            GPU_LAB_CHECK("kv store (V)", gv, vc, slots * max_pos * kvd, 0);
        }
        dev_free(&w);
        free(kc);
        free(vc);
        free(gk);
        free(gv);
    }
    dev_free(&v);
    free(emb);
    free(pe);
    free(ref);
    free(got);
}

/* Times each op at a 1B-class shape: 2048 rows of d = 2048, 16 heads of 128. */
static void time_ops(struct cuda_ctx *c)
{
    const size_t T = 2048, d = 2048, hidden = 5632, heads = 16, hd = 128;
    struct cuda_buf a = {0}, b = {0}, w = {0}, z = {0};
    if (cuda_buf_alloc(&a, T * 2 * hidden * 4) || cuda_buf_alloc(&b, T * 2 * hidden * 4) ||
        cuda_buf_alloc(&w, 2 * hidden * d * 4) || cuda_buf_alloc(&z, 2 * T * sizeof(size_t))) {
        printf("  (timing skipped: not enough device memory)\n");
        goto out;
    }
    cuda_memset(c, a.ptr, 0, T * 2 * hidden * 4);
    cuda_memset(c, b.ptr, 0, T * 2 * hidden * 4);
    cuda_memset(c, w.ptr, 0, 2 * hidden * d * 4);
    /* positions 0..T-1 and n_ctx = pos + 1 (one causal prefill), offsets 0 */
    size_t *hz = malloc(2 * T * sizeof(size_t));
    for (size_t i = 0; i < T; i++) {
        hz[i] = i + 1;
        hz[T + i] = 0;
    }
    cuda_buf_upload(c, &z, 0, hz, 2 * T * sizeof(size_t));
    free(hz);
    size_t *n_ctx = (size_t *)z.ptr, *kv_off = n_ctx + T;
    struct cuda_timer *t = NULL;
    if (cuda_timer_new(c, &t)) goto out;
    float *A = a.ptr, *Bf = b.ptr, *W = w.ptr;
    printf("  %-36s %10s\n", "op (T=2048, d=2048)", "ms");
    for (int op = 0; op < 7; op++) {
        double ms = 0;
        const char *name = "";
        for (int rep = 0; rep < 2; rep++) {
            cuda_timer_start(t);
            switch (op) {
            case 0:
                name = "rmsnorm";
                ops_cuda_rmsnorm_forward(c, Bf, A, W, T, d, 1e-5f);
                break;
            case 1:
                name = "layernorm";
                ops_cuda_layernorm_forward(c, Bf, A, W, W, T, d, 1e-5f);
                break;
            case 2:
                name = "swiglu (hidden 5632)";
                ops_cuda_swiglu_forward(c, Bf, A, T, hidden);
                break;
            case 3:
                name = "linear fp32 d -> 2*hidden";
                ops_cuda_linear_forward(c, CUDA_MATH_FP32, Bf, A, W, NULL, T, d, 2 * hidden);
                break;
            case 4:
                name = "linear tf32 d -> 2*hidden";
                ops_cuda_linear_forward(c, CUDA_MATH_TF32, Bf, A, W, NULL, T, d, 2 * hidden);
                break;
            case 5:
                name = "rope (16 heads x 128)";
                ops_cuda_rope_forward(c, A, d, n_ctx, T, heads, hd, hd, 10000.0f, ROPE_HALF);
                break;
            default:
                name = "attention causal prefill";
                ops_cuda_attention_forward(c, Bf, A, d, A, A, kv_off, n_ctx, T, heads, heads, hd);
                break;
            }
            cuda_timer_stop(t, &ms);
        }
        printf("  %-36s %10.3f\n", name, ms);
    }
    cuda_timer_destroy(&t);
out:
    cuda_buf_free(&a);
    cuda_buf_free(&b);
    cuda_buf_free(&w);
    cuda_buf_free(&z);
}

int main(void)
{
    log_init("test_gpu_ops", LOG_LOGFMT, LOG_WARN);
    struct cuda_ctx *ctx;
    int rc = gpu_lab_open(&ctx);
    if (rc) return rc;
    struct rng r;
    rng_seed(&r, 77);
    test_rowwise(ctx, &r);
    test_linear(ctx, &r);
    test_rope(ctx, &r);
    test_attention(ctx, &r);
    test_movement(ctx, &r);
    CHECK(cuda_ctx_sync(ctx) == 0);
    if (!check_failures_) time_ops(ctx);
    cuda_ctx_destroy(&ctx);
    return check_exit();
}

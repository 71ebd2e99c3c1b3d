// emu_model: the CUDA engine (common/model/model_cuda.c, unchanged C) run end to end on
// an emulated device: the tensor_cuda.h API is host memory (buffers are malloc, copies
// are memcpy, the GEMMs are tensor_sgemm), and the ops_cuda.h API launches the real
// kernels of ops_cuda_kernels.cuh under cuda_emu.h with ops_cuda.cu's launch shapes.
// Checked against model_forward: batched prefill logits, decode steps through the KV
// cache, host hooks that capture and steer, device hooks, capture-only passes,
// refusals; and model_backend's "cuda" path.
//
// Built and run by tests/gpu/emu/run_emu.sh; exit 0 or 1.
#include "cuda_emu.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "tensor/ops_cuda_kernels.cuh"

extern "C" {
#include "core/core.h"
#include "model/model.h"
#include "model/model_backend.h"
#include "model/model_cuda.h"
#include "tensor/ops_cuda.h"
#include "tensor/tensor.h"
#include "tensor/tensor_cuda.h"
}

#include "../../support/check.h"

// ---- the emulated device: tensor_cuda.h on host memory ----------------------------------

struct cuda_ctx {
    int device;
};
struct cuda_timer {
    double t0;
};

extern "C" {
int tensor_cuda_device_count(void)
{
    return 1;
}
int cuda_ctx_new(int device, struct cuda_ctx **out)
{
    *out = (struct cuda_ctx *)calloc(1, sizeof(struct cuda_ctx));
    if (!*out) return SF_ENOMEM;
    (*out)->device = device;
    return 0;
}
void cuda_ctx_destroy(struct cuda_ctx **c)
{
    if (!c || !*c) return;
    free(*c);
    *c = NULL;
}
int cuda_ctx_bind(struct cuda_ctx *)
{
    return 0;
}
int cuda_ctx_sync(struct cuda_ctx *)
{
    return 0;
}
int cuda_ctx_check(struct cuda_ctx *, const char *)
{
    return 0;
}
void *cuda_ctx_stream(struct cuda_ctx *)
{
    return NULL;
}
int cuda_ctx_device(const struct cuda_ctx *c)
{
    return c->device;
}
int cuda_ctx_describe(const struct cuda_ctx *, char *buf, size_t cap)
{
    snprintf(buf, cap, "emulated device (host threads)");
    return 0;
}
int cuda_buf_alloc(struct cuda_buf *b, size_t bytes)
{
    b->ptr = NULL;
    b->bytes = 0;
    if (!bytes) return SF_EINVAL;
    void *p = aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (!p) return SF_ENOMEM;
    memset(p, 0xFF, bytes); // NaN floats: reads of unwritten memory show
    b->ptr = p;
    b->bytes = bytes;
    return 0;
}
void cuda_buf_free(struct cuda_buf *b)
{
    if (!b) return;
    free(b->ptr);
    b->ptr = NULL;
    b->bytes = 0;
}
int cuda_buf_reserve(struct cuda_buf *b, size_t bytes)
{
    if (b->ptr && b->bytes >= bytes) return 0;
    cuda_buf_free(b);
    return cuda_buf_alloc(b, bytes ? bytes : 1);
}
int cuda_buf_upload(struct cuda_ctx *, struct cuda_buf *dst, size_t off, const void *src, size_t n)
{
    if (!n) return 0;
    if (!dst->ptr || off > dst->bytes || n > dst->bytes - off) return SF_ERANGE;
    memcpy((char *)dst->ptr + off, src, n);
    return 0;
}
int cuda_buf_download(struct cuda_ctx *, void *dst, const struct cuda_buf *src, size_t off,
                      size_t n)
{
    if (!n) return 0;
    if (!src->ptr || off > src->bytes || n > src->bytes - off) return SF_ERANGE;
    memcpy(dst, (const char *)src->ptr + off, n);
    return 0;
}
int cuda_memcpy_h2d(struct cuda_ctx *, void *dst, const void *src, size_t n)
{
    memmove(dst, src, n);
    return 0;
}
int cuda_memcpy_d2h(struct cuda_ctx *, void *dst, const void *src, size_t n)
{
    memmove(dst, src, n);
    return 0;
}
int cuda_memcpy_d2d(struct cuda_ctx *, void *dst, const void *src, size_t n)
{
    memmove(dst, src, n);
    return 0;
}
int cuda_memset(struct cuda_ctx *, void *dst, int byte, size_t n)
{
    memset(dst, byte, n);
    return 0;
}
const char *cuda_math_name(enum cuda_math m)
{
    return m == CUDA_MATH_TF32 ? "tf32" : m == CUDA_MATH_BF16 ? "bf16" : "fp32";
}
int cuda_math_parse(const char *s, enum cuda_math *out)
{
    if (s && !strcmp(s, "fp32"))
        *out = CUDA_MATH_FP32;
    else if (s && !strcmp(s, "tf32"))
        *out = CUDA_MATH_TF32;
    else if (s && !strcmp(s, "bf16"))
        *out = CUDA_MATH_BF16;
    else
        return SF_EINVAL;
    return 0;
}
int cuda_sgemm(struct cuda_ctx *, enum cuda_math, bool trans_a, bool trans_b, size_t M, size_t N,
               size_t K, float alpha, const float *A, size_t lda, const float *B, size_t ldb,
               float beta, float *C, size_t ldc)
{
    tensor_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return 0;
}
int cuda_sgemv(struct cuda_ctx *, bool trans, size_t M, size_t K, float alpha, const float *A,
               size_t lda, const float *x, float beta, float *y)
{
    tensor_sgemm(trans, false, M, 1, K, alpha, A, lda, x, 1, beta, y, 1);
    return 0;
}
int cuda_timer_new(struct cuda_ctx *, struct cuda_timer **out)
{
    *out = (struct cuda_timer *)calloc(1, sizeof(struct cuda_timer));
    return *out ? 0 : SF_ENOMEM;
}
void cuda_timer_destroy(struct cuda_timer **t)
{
    if (t && *t) free(*t);
    if (t) *t = NULL;
}
int cuda_timer_start(struct cuda_timer *t)
{
    t->t0 = time_now_s();
    return 0;
}
int cuda_timer_stop(struct cuda_timer *t, double *ms)
{
    *ms = (time_now_s() - t->t0) * 1e3;
    return 0;
}
}

// ---- ops_cuda.h: ops_cuda.cu's launchers with emulated launches ---------------------------
// Block sizes as ops_cuda.cu except ROW/EW (256 there): 64 keeps the host thread count low.

static const unsigned ROW_T = 64, EW_T = 64;

static unsigned blocks(size_t n, unsigned per)
{
    size_t b = (n + per - 1) / per;
    if (b == 0) b = 1;
    if (b > 65535u * 8u) b = 65535u * 8u;
    return (unsigned)b;
}

extern "C" {
int ops_cuda_rmsnorm_forward(struct cuda_ctx *, float *out, const float *inp, const float *w,
                             size_t rows, size_t d, float eps)
{
    if (rows == 0 || d == 0) return 0;
    emu_launch(dim3((unsigned)rows), dim3(ROW_T), 0, [&] { rmsnorm_kernel(out, inp, w, d, eps); });
    return 0;
}
int ops_cuda_layernorm_forward(struct cuda_ctx *, float *out, const float *inp, const float *w,
                               const float *b, size_t rows, size_t d, float eps)
{
    if (rows == 0 || d == 0) return 0;
    emu_launch(dim3((unsigned)rows), dim3(ROW_T), 0,
               [&] { layernorm_kernel(out, inp, w, b, d, eps); });
    return 0;
}
int ops_cuda_gelu_forward(struct cuda_ctx *, float *out, const float *inp, size_t n)
{
    if (n == 0) return 0;
    emu_launch(dim3(blocks(n, EW_T)), dim3(EW_T), 0, [&] { gelu_kernel(out, inp, n); });
    return 0;
}
int ops_cuda_swiglu_forward(struct cuda_ctx *, float *out, const float *gate_up, size_t rows,
                            size_t hidden)
{
    if (rows == 0 || hidden == 0) return 0;
    emu_launch(dim3(blocks(rows * hidden, EW_T)), dim3(EW_T), 0,
               [&] { swiglu_kernel(out, gate_up, rows, hidden); });
    return 0;
}
int ops_cuda_add_inplace(struct cuda_ctx *, float *out, const float *inp, size_t n)
{
    if (n == 0) return 0;
    emu_launch(dim3(blocks(n, EW_T)), dim3(EW_T), 0, [&] { add_kernel(out, inp, n); });
    return 0;
}
int ops_cuda_linear_forward(struct cuda_ctx *c, enum cuda_math math, float *out, const float *inp,
                            const float *w, const float *b, size_t rows, size_t in, size_t n_out)
{
    if (rows == 0 || n_out == 0) return 0;
    float beta = 0.0f;
    if (b) {
        emu_launch(dim3(blocks(rows * n_out, EW_T)), dim3(EW_T), 0,
                   [&] { bias_rows_kernel(out, b, rows, n_out); });
        beta = 1.0f;
    }
    return cuda_sgemm(c, math, false, true, rows, n_out, in, 1.0f, inp, in, w, in, beta, out,
                      n_out);
}
int ops_cuda_rope_forward(struct cuda_ctx *, float *x, size_t ld, const size_t *pos, size_t rows,
                          size_t n_heads, size_t head_dim, size_t rot_dim, float theta,
                          enum rope_layout layout)
{
    if (rows == 0 || n_heads == 0 || rot_dim < 2) return 0;
    if (rot_dim > head_dim || rot_dim % 2) return SF_EINVAL;
    const size_t total = rows * (rot_dim / 2) * n_heads;
    emu_launch(dim3(blocks(total, EW_T)), dim3(EW_T), 0, [&] {
        rope_kernel(x, ld, pos, rows, n_heads, head_dim, rot_dim, theta,
                    layout == ROPE_INTERLEAVED);
    });
    return 0;
}
int ops_cuda_attention_forward(struct cuda_ctx *, float *out, const float *q, size_t q_ld,
                               const float *k, const float *v, const size_t *kv_off,
                               const size_t *n_ctx, size_t rows, size_t n_heads, size_t n_kv_heads,
                               size_t head_dim)
{
    if (rows == 0 || n_heads == 0) return 0;
    if (head_dim == 0 || head_dim > OPS_CUDA_MAX_HEAD_DIM || n_kv_heads == 0 ||
        n_heads % n_kv_heads)
        return SF_EUNSUP;
    emu_launch(dim3((unsigned)(rows * n_heads)), dim3(ATT_WARPS * 32), 0, [&] {
        attention_kernel(out, q, q_ld, k, v, kv_off, n_ctx, n_heads, n_heads / n_kv_heads, head_dim,
                         n_kv_heads * head_dim, 1.0f / sqrtf((float)head_dim));
    });
    return 0;
}
int ops_cuda_softmax_forward(struct cuda_ctx *, float *out, const float *inp, size_t rows, size_t n)
{
    if (rows == 0 || n == 0) return 0;
    emu_launch(dim3((unsigned)rows), dim3(ROW_T), 0, [&] { softmax_kernel(out, inp, n); });
    return 0;
}
int ops_cuda_embed_forward(struct cuda_ctx *, float *out, const float *tok_emb,
                           const float *pos_emb, const int32_t *tokens, const size_t *pos,
                           size_t rows, size_t d)
{
    if (rows == 0 || d == 0) return 0;
    emu_launch(dim3(blocks(rows * d, EW_T)), dim3(EW_T), 0,
               [&] { embed_kernel(out, tok_emb, pos_emb, tokens, pos, rows, d); });
    return 0;
}
int ops_cuda_kv_store(struct cuda_ctx *, float *kc, float *vc, const float *qkv, size_t qkv_ld,
                      size_t k_col, size_t v_col, size_t kv_dim, const size_t *kv_off,
                      const size_t *pos, size_t rows)
{
    if (rows == 0 || kv_dim == 0) return 0;
    emu_launch(dim3(blocks(rows * kv_dim, EW_T)), dim3(EW_T), 0, [&] {
        kv_store_kernel(kc, vc, qkv, qkv_ld, k_col, v_col, kv_dim, kv_off, pos, rows);
    });
    return 0;
}
int ops_cuda_gather_rows(struct cuda_ctx *, float *out, const float *inp, const size_t *idx,
                         size_t n, size_t d)
{
    if (n == 0 || d == 0) return 0;
    emu_launch(dim3(blocks(n * d, EW_T)), dim3(EW_T), 0,
               [&] { gather_rows_kernel(out, inp, idx, n, d); });
    return 0;
}
}

// ---- the checks (as tests/gpu/test_gpu_model.c) --------------------------------------------

struct capture {
    std::vector<float> x;
    size_t calls = 0;
    float add = 0;
};

static int capture_hook(void *user, const struct model_act *act)
{
    capture *c = (capture *)user;
    size_t n = act->n_tokens * act->d;
    c->x.assign(act->x, act->x + n);
    c->calls++;
    if (c->add != 0.0f)
        for (size_t i = 0; i < n; i++) act->x[i] += c->add * (float)(i % 7);
    return 0;
}

static int device_hook(void *user, const struct model_act *act, struct cuda_ctx *ctx)
{
    capture *c = (capture *)user;
    size_t n = act->n_tokens * act->d;
    c->x.resize(n);
    c->calls++;
    return cuda_memcpy_d2h(ctx, c->x.data(), act->x, n * sizeof(float));
}

static void expect_close(const char *what, const float *got, const float *want, size_t n)
{
    double m = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= m)) m = d;
        s = fmax(s, fabs(want[i]));
    }
    double e = m / (s > 0 ? s : 1e-30);
    CHECK_MSG(e <= 1e-4, "%s: relative error %.3g", what, e);
    if (e <= 1e-4) printf("  ok   %-44s rel err %.2e\n", what, e);
}

static void run_model(struct model *m, const char *name)
{
    const struct model_config *cfg = model_config(m);
    const size_t V = cfg->vocab_size, slots = 3, max_len = 24;
    struct cuda_ctx *ctx = NULL;
    CHECK(cuda_ctx_new(0, &ctx) == 0);
    struct model_ctx *mc = model_ctx_new(m, slots, max_len);
    struct model_cuda *g = NULL;
    CHECK(mc && model_cuda_new(m, ctx, CUDA_MATH_FP32, slots, max_len, &g) == 0);
    if (!mc || !g) return;
    struct rng r;
    rng_seed(&r, 5);
    int32_t toks[3][24];
    for (auto &row : toks)
        for (auto &t : row) t = (int32_t)rng_below(&r, V);
    const size_t lens[3] = {5, 7, 1};
    struct model_seq seqs[3];
    for (int s = 0; s < 3; s++) seqs[s] = {(size_t)s, toks[s], lens[s]};
    std::vector<float> lc(13 * V), lg(13 * V);
    char what[96];
    CHECK(model_forward(mc, seqs, 3, MODEL_LOGITS_ALL, lc.data()) == 0);
    CHECK(model_cuda_forward(g, seqs, 3, MODEL_LOGITS_ALL, lg.data()) == 0);
    snprintf(what, sizeof what, "%s prefill logits", name);
    expect_close(what, lg.data(), lc.data(), 13 * V);
    for (int step = 0; step < 3; step++) {
        struct model_seq dec[3];
        for (int s = 0; s < 3; s++) dec[s] = {(size_t)s, &toks[s][lens[s] + (size_t)step], 1};
        CHECK(model_forward(mc, dec, 3, MODEL_LOGITS_LAST, lc.data()) == 0);
        CHECK(model_cuda_forward(g, dec, 3, MODEL_LOGITS_LAST, lg.data()) == 0);
        snprintf(what, sizeof what, "%s decode step %d", name, step);
        expect_close(what, lg.data(), lc.data(), 3 * V);
    }
    for (size_t s = 0; s < 3; s++) CHECK_EQ_INT(model_cuda_len(g, s), model_ctx_len(mc, s));
    model_ctx_reset_all(mc);
    model_cuda_reset_all(g);
    capture cc, cg, sc, sg, dv;
    sc.add = sg.add = 0.05f;
    size_t L = cfg->n_layers - 1;
    CHECK(model_ctx_add_hook_at(mc, 0, MODEL_HOOK_RESID_MID, capture_hook, &sc) == 0);
    CHECK(model_cuda_add_hook_at(g, 0, MODEL_HOOK_RESID_MID, capture_hook, &sg, true) == 0);
    CHECK(model_ctx_add_hook_at(mc, L, MODEL_HOOK_RESID_POST, capture_hook, &cc) == 0);
    CHECK(model_cuda_add_hook_at(g, L, MODEL_HOOK_RESID_POST, capture_hook, &cg, false) == 0);
    CHECK(model_cuda_add_device_hook_at(g, L, MODEL_HOOK_MLP_OUT, device_hook, &dv) == 0);
    CHECK(model_forward(mc, seqs, 3, MODEL_LOGITS_ALL, lc.data()) == 0);
    CHECK(model_cuda_forward(g, seqs, 3, MODEL_LOGITS_ALL, lg.data()) == 0);
    snprintf(what, sizeof what, "%s steered logits", name);
    expect_close(what, lg.data(), lc.data(), 13 * V);
    CHECK(cc.calls == 1 && cg.calls == 1 && dv.calls == 1 && cc.x.size() == cg.x.size());
    snprintf(what, sizeof what, "%s captured resid_post", name);
    if (cc.x.size() == cg.x.size()) expect_close(what, cg.x.data(), cc.x.data(), cc.x.size());
    model_cuda_clear_hooks(g);
    CHECK(model_cuda_add_hook_at(g, 0, MODEL_HOOK_RESID_POST, capture_hook, &cg, false) == 0);
    struct model_seq one = {0, toks[0] + 10, 3};
    CHECK(model_cuda_forward(g, &one, 1, MODEL_LOGITS_NONE, NULL) == 0);
    CHECK(cg.calls == 2 && cg.x.size() == 3 * cfg->dim);
    int32_t bad_tok = (int32_t)V;
    struct model_seq bad = {0, &bad_tok, 1};
    size_t before = model_cuda_len(g, 0);
    CHECK(model_cuda_forward(g, &bad, 1, MODEL_LOGITS_LAST, lg.data()) == SF_EINVAL);
    struct model_seq twice[2] = {{1, toks[1], 1}, {1, toks[2], 1}};
    CHECK(model_cuda_forward(g, twice, 2, MODEL_LOGITS_LAST, lg.data()) == SF_EINVAL);
    struct model_seq longer = {0, toks[0], 24};
    CHECK(model_cuda_forward(g, &longer, 1, MODEL_LOGITS_NONE, NULL) == SF_ERANGE);
    CHECK_EQ_INT(model_cuda_len(g, 0), before);
    model_cuda_destroy(&g);
    model_ctx_destroy(&mc);
    cuda_ctx_destroy(&ctx);
}

static struct model *random_model(enum model_arch arch)
{
    struct model_config c;
    memset(&c, 0, sizeof c);
    c.arch = arch;
    c.norm_eps = 1e-5f;
    c.bos_id = c.eos_id = -1;
    if (arch == MODEL_ARCH_LLAMA) {
        c.dim = 32;
        c.hidden_dim = 48;
        c.n_layers = 2;
        c.n_heads = 4;
        c.n_kv_heads = 2;
        c.head_dim = 8;
        c.vocab_size = 40;
        c.max_seq_len = 64;
        c.rope_theta = 500000.0f;
        c.rope_dim = 8;
        c.rope_layout = ROPE_HALF;
    } else {
        c.dim = 24;
        c.hidden_dim = 48;
        c.n_layers = 2;
        c.n_heads = c.n_kv_heads = 3;
        c.head_dim = 8;
        c.vocab_size = 30;
        c.max_seq_len = 32;
        c.tied_embeddings = true;
    }
    struct model *m = NULL;
    return model_new_random(&c, 11, 0.3f, &m) == 0 ? m : NULL;
}

int main(void)
{
    log_init("emu_model", LOG_LOGFMT, LOG_WARN);
    tensor_set_threads(1);
    struct model *m = random_model(MODEL_ARCH_LLAMA);
    CHECK(m != NULL);
    if (m) run_model(m, "llama-gqa");
    if (m) {
        // model_backend's cuda path on the emulated device
        struct model_backend *e = NULL;
        CHECK(model_backend_new(m, "cuda", "fp32", 2, 16, &e) == 0 || !tensor_cuda_available());
        model_backend_destroy(&e);
    }
    model_destroy(&m);
    m = random_model(MODEL_ARCH_GPT2);
    CHECK(m != NULL);
    if (m) run_model(m, "gpt2");
    model_destroy(&m);
    return check_exit();
}

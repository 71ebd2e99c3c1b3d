// emu_ops: the engine's CUDA kernels (common/tensor/ops_cuda_kernels.cuh) run under the
// CPU emulation (cuda_emu.h) with the launch shapes of ops_cuda.cu, against the CPU
// reference loops of ops.h: norms, GELU, SwiGLU, softmax, add, bias rows, RoPE (both
// layouts), GQA attention over a cache with per-row offsets and lengths, embedding,
// KV store and row gather. Tolerances as tests/gpu/test_gpu_ops.c.
//
// Built and run by tests/gpu/emu/run_emu.sh; exit 0 or 1.
#include "cuda_emu.h"

#include <cstdio>
#include <vector>

#include "tensor/ops_cuda_kernels.cuh"

extern "C" {
#include "core/core.h"
#include "tensor/ops.h"
}

#include "../../support/check.h"

static const unsigned T_ROW = 64, T_EW = 64;

static unsigned nblocks(size_t n, unsigned per)
{
    size_t b = (n + per - 1) / per;
    return (unsigned)(b ? b : 1);
}

static double rel_err(const float *a, const float *b, size_t n)
{
    double m = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
        s = fmax(s, fabs(b[i]));
    }
    return m / (s > 0 ? s : 1e-30);
}

#define EXPECT(what, got, want, n, tol)                                                            \
    do {                                                                                           \
        double e_ = rel_err((got), (want), (n));                                                   \
        CHECK_MSG(e_ <= (tol), "%s: relative error %.3g > %.3g", (what), e_, (double)(tol));       \
        if (e_ <= (tol)) printf("  ok   %-40s rel err %.2e\n", (what), e_);                        \
    } while (0)

static std::vector<float> randv(size_t n, struct rng *r, float scale, float shift)
{
    std::vector<float> v(n);
    for (auto &x : v) x = rng_normal(r) * scale + shift;
    return v;
}

static void test_rowwise(struct rng *r)
{
    const size_t rows = 7, d = 300;
    auto x = randv(rows * d, r, 2, 0.3f), w = randv(d, r, 1, 1), b = randv(d, r, 1, 0);
    std::vector<float> ref(rows * d), got(rows * d, NAN);
    rmsnorm_forward_ref(ref.data(), x.data(), w.data(), rows, d, 1e-5f);
    emu_launch(dim3(rows), dim3(T_ROW), 0,
               [&] { rmsnorm_kernel(got.data(), x.data(), w.data(), d, 1e-5f); });
    EXPECT("rmsnorm", got.data(), ref.data(), rows * d, 1e-5);
    layernorm_forward_ref(ref.data(), x.data(), w.data(), b.data(), rows, d, 1e-5f);
    emu_launch(dim3(rows), dim3(T_ROW), 0,
               [&] { layernorm_kernel(got.data(), x.data(), w.data(), b.data(), d, 1e-5f); });
    EXPECT("layernorm", got.data(), ref.data(), rows * d, 1e-5);
    softmax_forward_ref(ref.data(), x.data(), rows, d);
    emu_launch(dim3(rows), dim3(T_ROW), 0, [&] { softmax_kernel(got.data(), x.data(), d); });
    EXPECT("softmax", got.data(), ref.data(), rows * d, 1e-5);
    gelu_forward_ref(ref.data(), x.data(), rows * d);
    emu_launch(dim3(nblocks(rows * d, T_EW)), dim3(T_EW), 0,
               [&] { gelu_kernel(got.data(), x.data(), rows * d); });
    EXPECT("gelu", got.data(), ref.data(), rows * d, 1e-5);
    swiglu_forward_ref(ref.data(), x.data(), rows, d / 2);
    emu_launch(dim3(nblocks(rows * d / 2, T_EW)), dim3(T_EW), 0,
               [&] { swiglu_kernel(got.data(), x.data(), rows, d / 2); });
    EXPECT("swiglu", got.data(), ref.data(), rows * d / 2, 1e-5);
    std::vector<float> acc = x;
    for (size_t i = 0; i < rows * d; i++) ref[i] = x[i] + x[i];
    emu_launch(dim3(nblocks(rows * d, T_EW)), dim3(T_EW), 0,
               [&] { add_kernel(acc.data(), x.data(), rows * d); });
    EXPECT("add_inplace", acc.data(), ref.data(), rows * d, 0);
    for (size_t i = 0; i < rows * d; i++) ref[i] = b[i % d];
    emu_launch(dim3(nblocks(rows * d, T_EW)), dim3(T_EW), 0,
               [&] { bias_rows_kernel(got.data(), b.data(), rows, d); });
    EXPECT("bias rows", got.data(), ref.data(), rows * d, 0);
}

static void test_rope(struct rng *r)
{
    const size_t rows = 6, n_heads = 3, head_dim = 16, ld = n_heads * head_dim + 5;
    std::vector<size_t> pos(rows);
    for (auto &p : pos) p = rng_below(r, 300);
    for (int layout = 0; layout < 2; layout++) {
        for (size_t rot : {(size_t)16, (size_t)8}) {
            auto x = randv(rows * ld, r, 1, 0);
            std::vector<float> ref = x;
            rope_forward_ref(ref.data(), ld, pos.data(), rows, n_heads, head_dim, rot, 10000.0f,
                             (enum rope_layout)layout);
            const size_t total = rows * (rot / 2) * n_heads;
            emu_launch(dim3(nblocks(total, T_EW)), dim3(T_EW), 0, [&] {
                rope_kernel(x.data(), ld, pos.data(), rows, n_heads, head_dim, rot, 10000.0f,
                            layout == ROPE_INTERLEAVED);
            });
            char what[64];
            snprintf(what, sizeof what, "rope layout=%d rot=%zu", layout, rot);
            EXPECT(what, x.data(), ref.data(), rows * ld, 1e-4);
        }
    }
}

static void test_attention(struct rng *r)
{
    const size_t n_heads = 4;
    for (size_t head_dim : {(size_t)8, (size_t)40}) {
        for (size_t n_kv : {(size_t)4, (size_t)2}) {
            const size_t kv_dim = n_kv * head_dim, q_dim = n_heads * head_dim, q_ld = q_dim + 3;
            const size_t slots = 2, max_len = 20, rows = 7;
            std::vector<size_t> off(rows), n_ctx(rows);
            for (size_t i = 0; i < rows; i++) {
                off[i] = (i % slots) * max_len * kv_dim;
                n_ctx[i] = 1 + rng_below(r, max_len);
            }
            auto q = randv(rows * q_ld, r, 1, 0), k = randv(slots * max_len * kv_dim, r, 1, 0);
            auto v = randv(slots * max_len * kv_dim, r, 1, 0);
            std::vector<float> ref(rows * q_dim), got(rows * q_dim, NAN);
            CHECK(attention_forward_ref(ref.data(), q.data(), q_ld, k.data(), v.data(), off.data(),
                                        n_ctx.data(), rows, n_heads, n_kv, head_dim) == 0);
            emu_launch(dim3((unsigned)(rows * n_heads)), dim3(ATT_WARPS * 32), 0, [&] {
                attention_kernel(got.data(), q.data(), q_ld, k.data(), v.data(), off.data(),
                                 n_ctx.data(), n_heads, n_heads / n_kv, head_dim, kv_dim,
                                 1.0f / sqrtf((float)head_dim));
            });
            char what[64];
            snprintf(what, sizeof what, "attention head_dim=%zu kv_heads=%zu", head_dim, n_kv);
            EXPECT(what, got.data(), ref.data(), rows * q_dim, 1e-5);
        }
    }
}

static void test_movement(struct rng *r)
{
    const size_t vocab = 20, d = 9, rows = 5, max_pos = 8, kvd = 3, slots = 2;
    auto emb = randv(vocab * d, r, 1, 0), pe = randv(max_pos * d, r, 1, 0);
    std::vector<int32_t> tok(rows);
    std::vector<size_t> pos(rows), off(rows), idx = {4, 0, 2};
    std::vector<float> ref(rows * d), got(rows * d, NAN);
    for (size_t i = 0; i < rows; i++) {
        tok[i] = (int32_t)rng_below(r, vocab);
        pos[i] = i / slots;
        off[i] = (i % slots) * max_pos * kvd;
        for (size_t j = 0; j < d; j++) ref[i * d + j] = emb[tok[i] * d + j] + pe[pos[i] * d + j];
    }
    emu_launch(dim3(nblocks(rows * d, T_EW)), dim3(T_EW), 0, [&] {
        embed_kernel(got.data(), emb.data(), pe.data(), tok.data(), pos.data(), rows, d);
    });
    EXPECT("embed + positions", got.data(), ref.data(), rows * d, 0);
    std::vector<float> gref(3 * d), gg(3 * d, NAN);
    for (size_t i = 0; i < 3; i++)
        for (size_t j = 0; j < d; j++) gref[i * d + j] = ref[idx[i] * d + j];
    emu_launch(dim3(nblocks(3 * d, T_EW)), dim3(T_EW), 0,
               [&] { gather_rows_kernel(gg.data(), ref.data(), idx.data(), 3, d); });
    EXPECT("gather rows", gg.data(), gref.data(), 3 * d, 0);
    std::vector<float> kc(slots * max_pos * kvd, 0), vc(slots * max_pos * kvd, 0);
    std::vector<float> kr = kc, vr = vc;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < kvd; j++) {
            kr[off[i] + pos[i] * kvd + j] = ref[i * d + 2 + j];
            vr[off[i] + pos[i] * kvd + j] = ref[i * d + 5 + j];
        }
    emu_launch(dim3(nblocks(rows * kvd, T_EW)), dim3(T_EW), 0, [&] {
        kv_store_kernel(kc.data(), vc.data(), ref.data(), d, 2, 5, kvd, off.data(), pos.data(),
                        rows);
    });
    EXPECT("kv store K", kc.data(), kr.data(), kc.size(), 0);
    EXPECT("kv store V", vc.data(), vr.data(), vc.size(), 0);
}

int main(void)
{
    log_init("emu_ops", LOG_LOGFMT, LOG_WARN);
    struct rng r;
    rng_seed(&r, 11);
    test_rowwise(&r);
    test_rope(&r);
    test_attention(&r);
    test_movement(&r);
    return check_exit();
}

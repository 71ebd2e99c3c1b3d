// emu_sae: the GPU SAE step's kernels (common/sae/sae_cuda_kernels.cuh) run under the
// CPU emulation (cuda_emu.h), launched in the same order and with the same arguments as
// sae_cuda.cu does, and compared with the CPU trainer: the top-k kernel in each data
// path against sae_topk_row, then whole training steps (gradients, metrics, weights,
// Adam moments, dead counters) for Top-K, Multi-TopK, AuxK, clipping and annealing.
// cuBLAS and cub are stood in by tensor_sgemm and std::stable_sort.
//
// Built and run by tests/gpu/emu/run_emu.sh (g++ -std=c++17 -pthread); exit 0 or 1.
#include "cuda_emu.h"

#include <algorithm>
#include <cstdio>
#include <numeric>

#include "sae/sae_cuda_kernels.cuh"

extern "C" {
#include "core/core.h"
#include "sae/sae_kernels.h"
#include "sae/sae_train.h"
#include "sae/sae_train_internal.h"
#include "tensor/tensor.h"
}

#include "../../support/check.h"

// Block sizes for the emulation: smaller than on the device (the kernels take any
// multiple of 32) so that thousands of host threads are not needed; still several warps.
static const unsigned T_EW = 64, T_TOPK = 128, T_ONE = 256;

static unsigned nblocks(size_t n, unsigned per)
{
    size_t b = (n + per - 1) / per;
    return (unsigned)(b ? b : 1);
}

static int next_pow2(int v)
{
    int p = 1;
    while (p < v) p <<= 1;
    return p;
}

// The launcher's choice of data path, with an H100's opt-in shared memory (227 KiB).
static void emu_topk(const float *a, size_t lda, const float *bias, const uint8_t *mask, size_t B,
                     size_t n, size_t kk, uint32_t *idx, float *val, int mode, unsigned threads)
{
    const int cap = next_pow2((int)kk);
    const size_t base = (size_t)cap * 8, row_bytes = n * 4, cand_bytes = (size_t)TOPK_CAND * 8;
    const size_t budget = 227 * 1024 - 12 * 1024;
    if (mode < 0) mode = base + row_bytes <= budget ? 1 : base + cand_bytes <= budget ? 2 : 0;
    size_t smem = base + (mode == 1 ? row_bytes : mode == 2 ? cand_bytes : 0);
    emu_launch(dim3((unsigned)B), dim3(threads), smem,
               [&] { topk_kernel(a, lda, bias, mask, n, (int)kk, cap, mode, idx, val); });
}

static void test_topk(void)
{
    struct rng r;
    rng_seed(&r, 5);
    struct tc {
        size_t B, n, kk;
        int ties, mask, nans;
        unsigned threads;
    } cases[] = {
        {3, 10, 4, 0, 0, 0, 64},      {3, 10, 16, 0, 1, 0, 64},     {4, 700, 32, 1, 0, 0, 128},
        {4, 700, 32, 0, 1, 1, 128},   {2, 3000, 300, 1, 1, 0, 128}, {2, 5000, 64, 0, 0, 1, 512},
        {2, 6000, 512, 0, 1, 0, 256},
    };
    for (const tc &c : cases) {
        std::vector<float> a(c.B * c.n), bias(c.n), val(c.B * c.kk);
        std::vector<uint8_t> mask(c.n);
        std::vector<uint32_t> idx(c.B * c.kk);
        for (auto &v : a) v = c.ties ? (float)rng_below(&r, 30) / 4.0f : rng_normal(&r);
        if (c.nans)
            for (size_t q = 0; q < a.size(); q += 7) a[q] = NAN;
        for (size_t i = 0; i < c.n; i++) {
            bias[i] = c.ties ? (float)rng_below(&r, 2) : rng_normal(&r) * 0.3f;
            mask[i] = c.mask ? rng_below(&r, 3) == 0 : 1;
        }
        for (int mode = 0; mode <= 2; mode++) {
            std::fill(idx.begin(), idx.end(), 0xABABABABu);
            emu_topk(a.data(), c.n, bias.data(), c.mask ? mask.data() : nullptr, c.B, c.n, c.kk,
                     idx.data(), val.data(), mode, c.threads);
            size_t bad = 0;
            std::vector<float> row(c.n), rv(c.kk), sv(sae_topk_scratch(c.kk));
            std::vector<uint32_t> map(c.n), ri(c.kk), si(sae_topk_scratch(c.kk));
            for (size_t b = 0; b < c.B; b++) {
                size_t m = 0;
                for (size_t i = 0; i < c.n; i++) {
                    if (c.mask && !mask[i]) continue;
                    row[m] = a[b * c.n + i] + bias[i];
                    map[m++] = (uint32_t)i;
                }
                size_t got = sae_topk_row(row.data(), NULL, map.data(), m, c.kk, ri.data(),
                                          rv.data(), si.data(), sv.data());
                sae_sort_ranked(rv.data(), ri.data(), got);
                for (size_t q = 0; q < c.kk; q++) {
                    uint32_t gi = idx[b * c.kk + q];
                    float gv = val[b * c.kk + q];
                    bool ok = q < got ? gi == ri[q] && gv == rv[q]
                                      : gi == UINT32_MAX && isinf(gv) && gv < 0;
                    if (!ok) {
                        bad++;
                        break;
                    }
                }
            }
            CHECK_MSG(bad == 0, "topk mode %d B=%zu n=%zu kk=%zu ties=%d mask=%d nans=%d: %zu rows",
                      mode, c.B, c.n, c.kk, c.ties, c.mask, c.nans, bad);
            if (!bad)
                printf("  ok   topk mode %d n=%-6zu kk=%-4zu ties=%d mask=%d nans=%d threads=%u\n",
                       mode, c.n, c.kk, c.ties, c.mask, c.nans, c.threads);
        }
    }
}

// The device state of sae_cuda.cu's trainer, in host memory.
struct emu_trainer {
    sae_trainer *t;
    size_t n, d, n_dead;
    std::vector<float> W_enc, b_enc, W_dec, b_dec, mWe, vWe, mbe, vbe, mWd, vWd, mbd, vbd;
    std::vector<float> gWe, gWd, gbe, gbd;
    std::vector<int64_t> since;
    std::vector<uint8_t> touched, fired, dead;
    std::vector<double> normp, encsum, colsum, tok, part;
    std::vector<int> segs, sege;
    dev_stats st;
    std::vector<float> xs, xc, a, err, U, mv, av, ez, ega;
    std::vector<uint32_t> mi, ai, key, skey, ord, sord;
};

template <typename T> static std::vector<T> copy_of(const T *p, size_t n)
{
    return std::vector<T>(p, p + n);
}

static void emu_new(emu_trainer &g, sae_trainer *t)
{
    g.t = t;
    g.n = t->cfg.n;
    g.d = t->cfg.d_in;
    const size_t n = g.n, d = g.d, nd = n * d;
    g.W_enc = copy_of(t->sae->W_enc, nd);
    g.b_enc = copy_of(t->sae->b_enc, n);
    g.W_dec = copy_of(t->sae->W_dec, nd);
    g.b_dec = copy_of(t->sae->b_dec, d);
    g.mWe = copy_of(t->m_W_enc, nd);
    g.vWe = copy_of(t->v_W_enc, nd);
    g.mbe = copy_of(t->m_b_enc, n);
    g.vbe = copy_of(t->v_b_enc, n);
    g.mWd = copy_of(t->m_W_dec, nd);
    g.vWd = copy_of(t->v_W_dec, nd);
    g.mbd = copy_of(t->m_b_dec, d);
    g.vbd = copy_of(t->v_b_dec, d);
    g.since = copy_of(t->since_fire, n);
    g.gWe.assign(nd, 0);
    g.gWd.assign(nd, 0);
    g.gbe.assign(n, 0);
    g.gbd.assign(d, 0);
    g.touched.assign(n, 0);
    g.fired.assign(n, 0);
    g.dead.assign(n, 0);
    g.normp.assign(n, 0);
    g.encsum.assign(d, 0);
    g.segs.assign(n, 0);
    g.sege.assign(n, 0);
    g.n_dead = sae_trainer_count_dead(t);
}

static void emu_colsums(emu_trainer &g, const colsum_args &args, int nv, size_t rows, double *out)
{
    const size_t d = g.d;
    size_t nch = (rows + 63) / 64;
    if (nch > 4096) nch = 4096;
    if (nch == 0) nch = 1;
    const size_t chunk = (rows + nch - 1) / nch;
    g.part.assign((size_t)nv * nch * d, NAN);
    double *part = g.part.data();
    emu_launch(dim3(nblocks(d, T_EW), (unsigned)nch, (unsigned)nv), dim3(T_EW), 0,
               [&] { colsum_part_kernel(args, rows, d, chunk, nch, part); });
    emu_launch(dim3(nblocks(d, T_EW)), dim3(T_EW), 0,
               [&] { colsum_final_kernel(part, nch, d, nv, out); });
}

static size_t kk_for(const sae_train_config *c, size_t k)
{
    size_t kk = c->multi_topk ? 4 * k : k;
    return kk < c->n ? kk : c->n;
}

// forward_backward of sae_cuda.cu, launch for launch.
static void emu_forward_backward(emu_trainer &g, const float *x, size_t B, size_t k, bool project)
{
    sae_trainer *t = g.t;
    const sae_train_config *c = &t->cfg;
    const size_t n = g.n, d = g.d;
    const int multi = c->multi_topk;
    const size_t kk = kk_for(c, k);
    const bool use_aux = c->auxk_alpha > 0 && g.n_dead > 0;
    size_t ka = 0;
    if (use_aux) {
        ka = sae_train_config_k_aux(c);
        if (ka > g.n_dead) ka = g.n_dead;
    }
    const size_t per = kk + ka, E = B * per;
    g.xs.assign(B * d, NAN);
    g.xc.assign(B * d, NAN);
    g.a.assign(B * n, NAN);
    g.err.assign(B * d, NAN);
    g.U.assign(N_SLOTS * B * d, NAN);
    g.tok.assign(B * TS_N, NAN);
    g.colsum.assign(3 * d, NAN);
    g.mi.assign(B * kk, 0xCDCDCDCDu);
    g.mv.assign(B * kk, NAN);
    g.ai.assign(B * ka + 1, 0xCDCDCDCDu);
    g.av.assign(B * ka + 1, NAN);
    g.key.assign(E, 0);
    g.ord.assign(E, 0);
    g.ez.assign(E, NAN);
    g.ega.assign(E, NAN);
    dev_stats *st = &g.st;
    memset(st, 0, sizeof *st);
    std::fill(g.touched.begin(), g.touched.end(), 0);
    std::fill(g.fired.begin(), g.fired.end(), 0);
    std::fill(g.segs.begin(), g.segs.end(), 0);
    std::fill(g.sege.begin(), g.sege.end(), 0);
    if (use_aux)
        emu_launch(dim3(nblocks(n, T_EW)), dim3(T_EW), 0,
                   [&] { dead_mask_kernel(g.since.data(), c->dead_tokens, n, g.dead.data()); });
    emu_launch(dim3(nblocks(B * d, T_EW)), dim3(T_EW), 0, [&] {
        prep_kernel(x, g.b_dec.data(), t->sae->norm_scale, B, d, g.xs.data(), g.xc.data(), st);
    });
    tensor_sgemm(false, true, B, n, d, 1.0f, g.xc.data(), d, g.W_enc.data(), d, 0.0f, g.a.data(),
                 n);
    emu_topk(g.a.data(), n, g.b_enc.data(), NULL, B, n, kk, g.mi.data(), g.mv.data(), -1, T_TOPK);
    if (ka > 0)
        emu_topk(g.a.data(), n, g.b_enc.data(), g.dead.data(), B, n, ka, g.ai.data(), g.av.data(),
                 -1, T_TOPK);
    const size_t dsm = per * 8;
    emu_launch(dim3((unsigned)B), dim3(T_EW), dsm, [&] {
        decode_kernel(g.xs.data(), g.b_dec.data(), g.W_dec.data(), d, B, g.mi.data(), g.mv.data(),
                      (int)kk, (int)k, g.ai.data(), g.av.data(), (int)ka, multi, g.err.data(),
                      g.U.data(), g.tok.data());
    });
    colsum_args ca = {{g.xs.data(), g.err.data(), g.U.data()}, {NULL, NULL, NULL}};
    emu_colsums(g, ca, 3, B, g.colsum.data());
    emu_launch(dim3(1), dim3(T_ONE), 0, [&] {
        finalize_kernel(g.tok.data(), B, g.colsum.data(), d, c->auxk_alpha, use_aux ? 1 : 0, st);
    });
    emu_launch(dim3(nblocks(E * 32, T_EW)), dim3(T_EW), 0, [&] {
        entries_kernel(g.mi.data(), g.mv.data(), (int)kk, (int)k, g.ai.data(), g.av.data(), (int)ka,
                       multi, B, n, d, g.W_dec.data(), g.U.data(), g.key.data(), g.ord.data(),
                       g.ez.data(), g.ega.data());
    });
    // cub::DeviceRadixSort::SortPairs (stable) on (key, ord)
    std::vector<size_t> perm(E);
    std::iota(perm.begin(), perm.end(), 0);
    std::stable_sort(perm.begin(), perm.end(),
                     [&](size_t x1, size_t x2) { return g.key[x1] < g.key[x2]; });
    g.skey.resize(E);
    g.sord.resize(E);
    for (size_t p = 0; p < E; p++) {
        g.skey[p] = g.key[perm[p]];
        g.sord[p] = g.ord[perm[p]];
    }
    emu_launch(dim3(nblocks(E, T_EW)), dim3(T_EW), 0,
               [&] { segments_kernel(g.skey.data(), E, n, g.segs.data(), g.sege.data()); });
    emu_launch(dim3((unsigned)n), dim3(T_EW), 0, [&] {
        latent_grad_kernel(g.sord.data(), g.segs.data(), g.sege.data(), g.ez.data(), g.ega.data(),
                           (int)per, (int)kk, (int)k, multi, g.U.data(), g.xc.data(), B, d,
                           g.W_dec.data(), st, project && c->unit_norm_decoder,
                           (float)c->fire_threshold, g.gWe.data(), g.gWd.data(), g.gbe.data(),
                           g.touched.data(), g.fired.data(), g.normp.data());
    });
    colsum_args ce = {{g.W_enc.data(), NULL, NULL}, {g.gbe.data(), NULL, NULL}};
    emu_colsums(g, ce, 1, n, g.encsum.data());
    emu_launch(dim3(nblocks(d, T_EW)), dim3(T_EW), 0, [&] {
        bdec_grad_kernel(g.colsum.data() + 2 * d, g.encsum.data(), d, st, g.gbd.data());
    });
}

// step_device of sae_cuda.cu, launch for launch.
static void emu_step(emu_trainer &g, const float *x, size_t B, sae_train_metrics *m)
{
    sae_trainer *t = g.t;
    const sae_train_config *c = &t->cfg;
    const size_t n = g.n, d = g.d;
    if (!t->initialized) {
        sae_trainer_init_data(t, x, B);
        g.b_dec = copy_of(t->sae->b_dec, d);
    }
    const size_t k = sae_train_k_at(c, t->tokens);
    const double lr = sae_train_lr_at(c, t->tokens);
    emu_forward_backward(g, x, B, k, true);
    dev_stats *st = &g.st;
    emu_launch(dim3(1), dim3(T_ONE), 0,
               [&] { gnorm_kernel(g.normp.data(), n, g.gbd.data(), d, c->grad_clip, st); });
    sae_adam_coef ac = sae_trainer_adam_coef(t, lr);
    adam_f af = {(float)ac.b1,        (float)(1 - ac.b1),         (float)ac.b2, (float)(1 - ac.b2),
                 (float)ac.step_size, (float)(1.0 / ac.bc2_sqrt), (float)ac.eps};
    emu_launch(dim3((unsigned)n), dim3(T_EW), 0, [&] {
        adam_rows_kernel(g.W_enc.data(), g.mWe.data(), g.vWe.data(), g.gWe.data(), g.W_dec.data(),
                         g.mWd.data(), g.vWd.data(), g.gWd.data(), g.touched.data(), d, af,
                         c->unit_norm_decoder ? 1 : 0, st);
    });
    emu_launch(dim3(nblocks(n, T_EW)), dim3(T_EW), 0, [&] {
        adam_vec_kernel(g.b_enc.data(), g.mbe.data(), g.vbe.data(), g.gbe.data(), n, af, st);
    });
    emu_launch(dim3(nblocks(d, T_EW)), dim3(T_EW), 0, [&] {
        adam_vec_kernel(g.b_dec.data(), g.mbd.data(), g.vbd.data(), g.gbd.data(), d, af, st);
    });
    emu_launch(dim3(nblocks(n, T_EW)), dim3(T_EW), 0, [&] {
        dead_update_kernel(g.since.data(), g.fired.data(), n, (int64_t)B, c->dead_tokens, st);
    });
    g.n_dead = (size_t)st->n_dead;
    t->step++;
    t->tokens += (int64_t)B;
    memset(m, 0, sizeof *m);
    m->k = k;
    m->loss = st->loss;
    m->mse = st->mse;
    m->fvu = st->fvu;
    m->l0 = st->l0;
    m->dead_frac = (double)g.n_dead / (double)n;
    m->auxk_loss = st->auxk;
    m->grad_norm = st->gnorm;
}

static double max_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double x = fabs((double)a[i] - b[i]);
        if (!(x <= m)) m = x;
    }
    return m;
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(a[i]));
    return m;
}

struct variant {
    const char *name;
    bool multi, aux, clip;
    size_t k0;
};

static void run_variant(const variant &v)
{
    const size_t d = 24, n = 96, k = 4, B = 40;
    sae_train_config cfg;
    sae_train_config_default(&cfg, SAE_TOPK, d, n, k);
    cfg.lr = 1e-3;
    cfg.adam_eps = 1e-7; // as tests/gpu/test_gpu_sae.c (rounding-noise gradients)
    cfg.multi_topk = v.multi;
    cfg.grad_clip = v.clip ? 0.05 : 0;
    cfg.k0 = v.k0;
    cfg.k_anneal_tokens = v.k0 ? (int64_t)(5 * B) : 0;
    cfg.k_aux = 16;
    cfg.dead_tokens = v.aux ? (int64_t)B : 1000000;
    cfg.auxk_alpha = v.aux ? 1.0 / 32 : 0;
    sae_trainer *tc = sae_trainer_new(&cfg), *tg = sae_trainer_new(&cfg);
    CHECK(tc && tg);
    if (!tc || !tg) return;
    emu_trainer g;
    emu_new(g, tg);
    const int steps = 5;
    struct rng r;
    rng_seed(&r, 7);
    std::vector<float> x(B * steps * d);
    for (auto &q : x) q = rng_normal(&r) * 3.0f + 0.5f;
    const size_t nd = n * d;
    std::vector<float> gWe(nd), gbe(n), gWd(nd), gbd(d);
    bool saw_aux = false;
    for (int step = 0; step < steps; step++) {
        const float *xb = x.data() + (size_t)step * B * d;
        if (step > 0) {
            // raw gradients at this point (sae_cuda_trainer_grad: no projection)
            double lc = 0;
            CHECK(sae_trainer_grad(tc, xb, B, false, gWe.data(), gbe.data(), gWd.data(), gbd.data(),
                                   &lc) == 0);
            std::fill(g.gWe.begin(), g.gWe.end(), 0.0f);
            std::fill(g.gWd.begin(), g.gWd.end(), 0.0f);
            emu_forward_backward(g, xb, B, sae_train_k_at(&cfg, tg->tokens), false);
            struct {
                const char *what;
                const float *emu, *cpu;
                size_t len;
            } cmp[] = {{"gW_enc", g.gWe.data(), gWe.data(), nd},
                       {"gb_enc", g.gbe.data(), gbe.data(), n},
                       {"gW_dec", g.gWd.data(), gWd.data(), nd},
                       {"gb_dec", g.gbd.data(), gbd.data(), d}};
            for (auto &q : cmp) {
                double sc = max_abs(q.cpu, q.len), df = max_diff(q.emu, q.cpu, q.len);
                CHECK_MSG(df <= 1e-3 * sc + 1e-9, "%s step %d %s: max diff %.3g vs scale %.3g",
                          v.name, step, q.what, df, sc);
            }
            CHECK_NEAR(g.st.loss, lc, 1e-6, 1e-4);
        }
        sae_train_metrics mc, mg;
        CHECK(sae_trainer_step(tc, xb, B, &mc) == 0);
        emu_step(g, xb, B, &mg);
        CHECK_NEAR(mg.loss, mc.loss, 1e-6, 1e-4);
        CHECK_NEAR(mg.mse, mc.mse, 1e-6, 1e-4);
        CHECK_NEAR(mg.fvu, mc.fvu, 1e-6, 1e-4);
        CHECK_NEAR(mg.l0, mc.l0, 0, 0);
        CHECK_NEAR(mg.auxk_loss, mc.auxk_loss, 1e-6, 1e-3);
        CHECK_NEAR(mg.grad_norm, mc.grad_norm, 1e-9, 1e-4);
        CHECK_NEAR(mg.dead_frac, mc.dead_frac, 0, 0);
        CHECK_EQ_INT(mg.k, mc.k);
        if (mc.auxk_loss > 0) saw_aux = true;
    }
    if (v.aux) CHECK_MSG(saw_aux, "%s: AuxK never engaged", v.name);
    const sae *sc = sae_trainer_sae(tc);
    double dwe = max_diff(g.W_enc.data(), sc->W_enc, nd);
    double dwd = max_diff(g.W_dec.data(), sc->W_dec, nd);
    double dbe = max_diff(g.b_enc.data(), sc->b_enc, n),
           dbd = max_diff(g.b_dec.data(), sc->b_dec, d);
    double dm = max_diff(g.mWd.data(), tc->m_W_dec, nd),
           dv = max_diff(g.vWe.data(), tc->v_W_enc, nd);
    CHECK_MSG(dwe < 2e-5 && dwd < 2e-5 && dbe < 2e-5 && dbd < 2e-5,
              "%s: weights differ W_enc %.3g W_dec %.3g b_enc %.3g b_dec %.3g", v.name, dwe, dwd,
              dbe, dbd);
    CHECK_MSG(dm < 1e-6 && dv < 1e-8, "%s: Adam moments differ m %.3g v %.3g", v.name, dm, dv);
    CHECK(memcmp(g.since.data(), tc->since_fire, n * sizeof(int64_t)) == 0);
    printf("  ok?  %-10s %d steps: weights max diff %.2e, moments %.2e (failures so far: %d)\n",
           v.name, steps, fmax(dwe, dwd), dm, check_failures_);
    sae_trainer_destroy(&tc);
    sae_trainer_destroy(&tg);
}

int main(void)
{
    log_init("emu_sae", LOG_LOGFMT, LOG_WARN);
    tensor_set_threads(1);
    test_topk();
    const variant vs[] = {
        {"topk", false, false, false, 0},    {"multi", true, false, false, 0},
        {"aux", false, true, false, 0},      {"clip", false, false, true, 0},
        {"anneal", false, false, false, 16},
    };
    for (const variant &v : vs) run_variant(v);
    return check_exit();
}

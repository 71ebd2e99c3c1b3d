/* sae_train_fast: the fast CPU training step (the algorithm is described at the top of
 * sae_train.c). Scratch lives in struct sae_fast and grows with the batch. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "sae/sae_kernels.h"
#include "sae/sae_train_internal.h"
#include "tensor/tensor.h"

#define TOK_CHUNK 64

/* The hot per-token / per-latent / optimiser loops are compiled for AVX-512 and
 * AVX2+FMA besides the baseline and picked at load time (GCC function multiversioning),
 * since the build has no -march. Results are deterministic on a given machine. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SAEFLOW_FUZZ)
#define SAE_HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SAE_HOT
#endif
#define LAT_CHUNK 64

enum { SLOT_MAIN = 0, SLOT_EXTRA = 1, SLOT_AUX = 2, SLOT_GHOST = 3, N_SLOTS = 4 };
/* per-token statistics, TS_N doubles per token */
enum { TS_SQ, TS_SQ4, TS_E2, TS_SQA, TS_SQG, TS_L1, TS_L0, TS_XS2, TS_MINZ, TS_N };

struct entry { /* one (token, latent) pair that carries gradient, in token order */
    uint32_t i;
    uint32_t slot;
    float z;    /* the latent's value in this slot's reconstruction */
    float dzda; /* dz/da */
};

struct tentry { /* the same, grouped by latent */
    uint32_t b;
    uint32_t slot;
    float z;
    float dzda;
};

struct sae_fast {
    size_t cap_B, cap_E, cap_C, nt, scr;
    float *xs, *xc, *a, *err; /* (B, d), (B, d), (B, n), (B, d) */
    float *U;                 /* (N_SLOTS * B, d) upstream rows, unscaled */
    float *gW_enc, *gW_dec;   /* (n, d): zero except touched rows during a step */
    float *gb_enc, *gb_dec;   /* (n), (d) */
    uint8_t *touched, *fired; /* (n) */
    float *dnorm;             /* (n) decoder row norms (standard) */
    uint32_t *dead;           /* (n) list of dead latents */
    size_t *eptr;             /* (B + 1) */
    struct entry *ent;
    struct tentry *tent;
    size_t *lptr; /* (n + 1) */
    size_t *hist; /* (TCH, n) */
    double *tok;  /* (B, TS_N) */
    double *part; /* chunk partial sums, (max(B/TOK, n/LAT) + 1, d) */
    float *sv;    /* per-thread scratch */
    uint32_t *si;
    float *cv; /* batchtopk candidates */
    uint32_t *ci;
    float *kth; /* (B) batchtopk: each row's weakest kept value */
    uint32_t *kth_i;
    size_t n_part;
    double prof[SAE_PROF_N]; /* wall seconds of the last step's phases */
    bool par;                /* worth threads: small problems run serially (no barriers) */
};

#define TCH 16 /* token chunks for the transpose (any value gives the same order) */

void sae_trainer_fast_free(struct sae_fast **fp)
{
    if (!fp || !*fp) return;
    struct sae_fast *f = *fp;
    free(f->xs);
    free(f->xc);
    free(f->a);
    free(f->err);
    free(f->U);
    free(f->gW_enc);
    free(f->gW_dec);
    free(f->gb_enc);
    free(f->gb_dec);
    free(f->touched);
    free(f->fired);
    free(f->dnorm);
    free(f->dead);
    free(f->eptr);
    free(f->ent);
    free(f->tent);
    free(f->lptr);
    free(f->hist);
    free(f->tok);
    free(f->part);
    free(f->sv);
    free(f->si);
    free(f->cv);
    free(f->ci);
    free(f->kth);
    free(f->kth_i);
    free(f);
    *fp = NULL;
}

static int grow(void **p, size_t n, size_t size)
{
    void *q = realloc(*p, (n ? n : 1) * size);
    if (!q) return SF_ENOMEM;
    *p = q;
    return 0;
}

/* Like grow, without keeping the contents (huge-page backed). */
static int grow_big(void **p, size_t n, size_t size)
{
    void *q = sae_alloc_big(n ? n : 1, size);
    if (!q) return SF_ENOMEM;
    free(*p);
    *p = q;
    return 0;
}

/* Makes room for a batch of B tokens. */
static int fast_reserve(struct sae_trainer *t, size_t B)
{
    const size_t n = t->cfg.n, d = t->cfg.d_in;
    struct sae_fast *f = t->fast;
    if (!f) {
        f = calloc(1, sizeof *f);
        if (!f) return SF_ENOMEM;
        t->fast = f;
        f->gW_enc = sae_alloc_big(n * d, sizeof(float));
        f->gW_dec = sae_alloc_big(n * d, sizeof(float));
        f->gb_enc = calloc(n, sizeof(float));
        f->gb_dec = calloc(d, sizeof(float));
        f->touched = calloc(n, 1);
        f->fired = calloc(n, 1);
        f->dnorm = malloc(n * sizeof(float));
        f->dead = malloc(n * sizeof(uint32_t));
        f->lptr = malloc((n + 1) * sizeof(size_t));
        f->hist = malloc(TCH * n * sizeof(size_t));
        if (!f->gW_enc || !f->gW_dec || !f->gb_enc || !f->gb_dec || !f->touched || !f->fired ||
            !f->dnorm || !f->dead || !f->lptr || !f->hist)
            return SF_ENOMEM;
    }
    size_t nt = (size_t)omp_get_max_threads();
    size_t kmax = t->cfg.k > t->cfg.k0 ? t->cfg.k : t->cfg.k0;
    if (t->cfg.multi_topk) kmax *= 4;
    if (t->cfg.arch == SAE_BATCHTOPK) kmax *= 2;
    size_t ka = sae_train_config_k_aux(&t->cfg);
    if (ka > kmax) kmax = ka;
    if (kmax > n) kmax = n;
    size_t scr = 2 * n + sae_topk_scratch(kmax) + kmax;
    if (nt > f->nt || scr > f->scr) {
        if (grow((void **)&f->sv, nt * scr, sizeof(float)) ||
            grow((void **)&f->si, nt * scr, sizeof(uint32_t)))
            return SF_ENOMEM;
        f->nt = nt;
        f->scr = scr;
    }
    /* below ~1e8 encoder FMAs a step takes about a millisecond: barriers would cost more */
    f->par = (double)B * (double)n * (double)d >= 1e8;
    if (B > f->cap_B) {
        size_t np = (B + TOK_CHUNK - 1) / TOK_CHUNK;
        size_t nl = (n + LAT_CHUNK - 1) / LAT_CHUNK;
        f->n_part = (3 * np > nl ? 3 * np : nl) + 1;
        if (grow((void **)&f->xs, B * d, sizeof(float)) ||
            grow((void **)&f->xc, B * d, sizeof(float)) ||
            grow((void **)&f->err, B * d, sizeof(float)) ||
            grow_big((void **)&f->a, B * n, sizeof(float)) ||
            grow((void **)&f->U, N_SLOTS * B * d, sizeof(float)) ||
            grow((void **)&f->eptr, B + 1, sizeof(size_t)) ||
            grow((void **)&f->tok, B * TS_N, sizeof(double)) ||
            grow((void **)&f->part, f->n_part * d, sizeof(double)) ||
            grow((void **)&f->kth, B, sizeof(float)) ||
            grow((void **)&f->kth_i, B, sizeof(uint32_t)))
            return SF_ENOMEM;
        f->cap_B = B;
    }
    return 0;
}

static inline float dotf(const float *x, const float *y, size_t d)
{
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (size_t j = 0; j < d; j++) s += x[j] * y[j];
    return s;
}

static inline void axpyf(float *y, float a, const float *x, size_t d)
{
#pragma omp simd
    for (size_t j = 0; j < d; j++) y[j] += a * x[j];
}

/* ---- BatchTopK: the exact global threshold over the batch ---------------------------- */

/* Rank threshold (value, flat index b*n+i) of the kB-th best pre-activation in the
 * batch. Each row's top 2k give a candidate set; rows whose weakest kept entry still
 * ranks above the candidate threshold are rescanned in full, so the result is exact. */
static int batch_threshold(struct sae_trainer *t, size_t B, size_t k, float *Tv, uint32_t *Ti)
{
    struct sae_fast *f = t->fast;
    const size_t n = t->cfg.n;
    const float *b_enc = t->sae->b_enc;
    size_t K2 = 2 * k < n ? 2 * k : n;
    size_t kB = k * B;
    size_t base = K2 * B;
    if (base > f->cap_C) {
        if (grow((void **)&f->cv, base, sizeof(float)) ||
            grow((void **)&f->ci, base, sizeof(uint32_t)))
            return SF_ENOMEM;
        f->cap_C = base;
    }
#pragma omp parallel for schedule(static) if (f->par)
    for (size_t b = 0; b < B; b++) {
        int tid = omp_get_thread_num();
        float *sv = f->sv + (size_t)tid * f->scr;
        uint32_t *si = f->si + (size_t)tid * f->scr;
        float *v = f->cv + b * K2;
        uint32_t *ix = f->ci + b * K2;
        size_t got = sae_topk_row(f->a + b * n, b_enc, NULL, n, K2, ix, v, si, sv);
        /* weakest kept, then flatten indices */
        size_t w = 0;
        for (size_t q = 1; q < got; q++)
            if (sae_ranks_above(v[w], ix[w], v[q], ix[q])) w = q;
        f->kth[b] = got ? v[w] : -INFINITY;
        f->kth_i[b] = got ? (uint32_t)(b * n + ix[w]) : UINT32_MAX;
        for (size_t q = 0; q < got; q++) ix[q] = (uint32_t)(b * n + ix[q]);
        for (size_t q = got; q < K2; q++) {
            v[q] = -INFINITY;
            ix[q] = UINT32_MAX;
        }
    }
    /* the kB-th of the union (copy: select reorders) */
    float *uv = malloc(base * sizeof *uv);
    uint32_t *ui = malloc(base * sizeof *ui);
    if (!uv || !ui) {
        free(uv);
        free(ui);
        return SF_ENOMEM;
    }
    memcpy(uv, f->cv, base * sizeof *uv);
    memcpy(ui, f->ci, base * sizeof *ui);
    sae_select_top(uv, ui, base, kB);
    size_t w = 0;
    for (size_t q = 1; q < kB; q++)
        if (sae_ranks_above(uv[w], ui[w], uv[q], ui[q])) w = q;
    float tv = uv[w];
    uint32_t ti = ui[w];
    /* saturated rows: their weakest kept ranks above the threshold; add their rest */
    size_t extra_n = 0;
    for (size_t b = 0; b < B; b++) {
        if (K2 >= n || !sae_ranks_above(f->kth[b], f->kth_i[b], tv, ti)) continue;
        const float *ar = f->a + b * n;
        for (size_t i = 0; i < n; i++) {
            float v = ar[i] + b_enc[i];
            uint32_t fl = (uint32_t)(b * n + i);
            if (fl == f->kth_i[b] || sae_ranks_above(v, fl, f->kth[b], f->kth_i[b]))
                continue; /* already in */
            if (!sae_ranks_above(v, fl, tv, ti)) continue;
            extra_n++;
        }
    }
    if (extra_n) {
        float *nv = realloc(uv, (kB + extra_n) * sizeof *nv);
        uint32_t *ni = nv ? realloc(ui, (kB + extra_n) * sizeof *ni) : NULL;
        if (!nv || !ni) {
            free(nv ? nv : uv);
            free(ui);
            return SF_ENOMEM;
        }
        uv = nv;
        ui = ni;
        size_t c = kB;
        for (size_t b = 0; b < B; b++) {
            if (K2 >= n || !sae_ranks_above(f->kth[b], f->kth_i[b], tv, ti)) continue;
            const float *ar = f->a + b * n;
            for (size_t i = 0; i < n; i++) {
                float v = ar[i] + b_enc[i];
                uint32_t fl = (uint32_t)(b * n + i);
                if (fl == f->kth_i[b] || sae_ranks_above(v, fl, f->kth[b], f->kth_i[b])) continue;
                if (!sae_ranks_above(v, fl, tv, ti)) continue;
                uv[c] = v;
                ui[c] = fl;
                c++;
            }
        }
        sae_select_top(uv, ui, kB + extra_n, kB);
        w = 0;
        for (size_t q = 1; q < kB; q++)
            if (sae_ranks_above(uv[w], ui[w], uv[q], ui[q])) w = q;
        tv = uv[w];
        ti = ui[w];
    }
    free(uv);
    free(ui);
    *Tv = tv;
    *Ti = ti;
    return 0;
}

/* ---- the forward/backward pass --------------------------------------------------------- */

struct fast_out {
    double mse, mse4, fvu, l0, auxk, l1, ghost, loss, min_kept;
    size_t n_dead;
};

struct pass_ctx {
    struct sae_fast *f;
    const struct sae *s;
    float *U;
    const float *W_dec;
    size_t n, d, B, k, kk, k_aux, n_dead;
    float Tv;
    uint32_t Ti;
    bool standard, batchtopk, multi, use_aux, use_ghost;
};

/* One token: select its entries, decode, and form its upstream rows. */
SAE_HOT static void token_pass(const struct pass_ctx *c, size_t b, int tid)
{
    struct sae_fast *f = c->f;
    const struct sae *s = c->s;
    float *U = c->U;
    const float *W_dec = c->W_dec;
    const size_t n = c->n, d = c->d, B = c->B, k = c->k, kk = c->kk, k_aux = c->k_aux,
                 n_dead = c->n_dead;
    const float Tv = c->Tv;
    const uint32_t Ti = c->Ti;
    const bool standard = c->standard, batchtopk = c->batchtopk, multi = c->multi,
               use_aux = c->use_aux, use_ghost = c->use_ghost;
    float *sv = f->sv + (size_t)tid * f->scr;
    uint32_t *si = f->si + (size_t)tid * f->scr;
    const float *ar = f->a + b * n;
    const float *xs = f->xs + b * d;
    struct entry *e = f->ent + f->eptr[b];
    double *ts = f->tok + b * TS_N;
    size_t ne = 0, n_main, n_extra = 0;
    for (size_t q = 0; q < TS_N; q++) ts[q] = 0;
    ts[TS_MINZ] = INFINITY;

    /* main selection */
    if (standard || batchtopk) {
        for (size_t i = 0; i < n; i++) {
            float v = ar[i] + s->b_enc[i];
            bool in = standard ? v > 0.0f
                               : (sae_ranks_above(v, (uint32_t)(b * n + i), Tv, Ti) ||
                                  (uint32_t)(b * n + i) == Ti);
            if (!in) continue;
            e[ne].i = (uint32_t)i;
            e[ne].slot = SLOT_MAIN;
            e[ne].z = v > 0 ? v : 0;
            e[ne].dzda = v > 0 ? 1.0f : 0.0f;
            ne++;
        }
        n_main = ne;
    } else {
        uint32_t *idx = si + f->scr - kk;
        float *val = sv + f->scr - kk;
        size_t got = sae_topk_row(ar, s->b_enc, NULL, n, kk, idx, val, si, sv);
        if (multi && got > k) sae_select_top(val, idx, got, k);
        n_main = got < k ? got : k;
        n_extra = got - n_main;
        for (size_t q = 0; q < kk; q++) {
            float v = q < got ? val[q] : 0.0f;
            e[q].i = q < got ? idx[q] : 0;
            e[q].slot = q < n_main ? SLOT_MAIN : SLOT_EXTRA;
            e[q].z = v > 0 ? v : 0;
            e[q].dzda = v > 0 ? 1.0f : 0.0f;
        }
        ne = kk;
    }

    /* decode main (k) reconstruction; err = x_hat - x */
    float *er = f->err + b * d;
    float *u0 = U + (SLOT_MAIN * B + b) * d;
    memcpy(er, s->b_dec, d * sizeof *er);
    double l1 = 0, l0 = 0;
    for (size_t q = 0; q < n_main; q++) {
        if (q + 2 < n_main) {
            const char *pw = (const char *)(W_dec + (size_t)e[q + 2].i * d);
            for (size_t o = 0; o < d * sizeof(float); o += 64) __builtin_prefetch(pw + o);
        }
        if (e[q].z == 0.0f) continue;
        axpyf(er, e[q].z, W_dec + (size_t)e[q].i * d, d);
        l0 += 1;
        if (e[q].z < ts[TS_MINZ]) ts[TS_MINZ] = e[q].z;
        if (standard) l1 += (double)e[q].z * f->dnorm[e[q].i];
    }
    double sq = 0, xs2 = 0;
    for (size_t j = 0; j < d; j++) {
        er[j] -= xs[j];
        sq += (double)er[j] * er[j];
        xs2 += (double)xs[j] * xs[j];
    }
    ts[TS_SQ] = sq;
    ts[TS_XS2] = xs2;
    ts[TS_L0] = l0;
    ts[TS_L1] = l1;
    memcpy(u0, er, d * sizeof *u0);
    if (multi) {
        /* err4 = x_hat(4k) - x = err + extras; U0 = err + err4/8, U1 = err4/8 */
        float *u1 = U + (SLOT_EXTRA * B + b) * d;
        memcpy(u1, er, d * sizeof *u1);
        for (size_t q = n_main; q < n_main + n_extra; q++)
            if (e[q].z != 0.0f) axpyf(u1, e[q].z, W_dec + (size_t)e[q].i * d, d);
        double sq4 = 0;
        for (size_t j = 0; j < d; j++) {
            sq4 += (double)u1[j] * u1[j];
            u1[j] *= 0.125f;
            u0[j] += u1[j];
        }
        ts[TS_SQ4] = sq4;
    }
    ts[TS_E2] = sq;

    /* AuxK: the top k_aux dead pre-activations model the residual e = -err */
    if (use_aux) {
        float *tmp = sv; /* gather dead pre-activations: (n_dead) */
        for (size_t q = 0; q < n_dead; q++) tmp[q] = ar[f->dead[q]] + s->b_enc[f->dead[q]];
        uint32_t *idx = si;
        float *val = sv + n_dead;
        uint32_t *sci = si + k_aux;
        float *scv = val + k_aux;
        size_t got = sae_topk_row(tmp, NULL, f->dead, n_dead, k_aux, idx, val, sci, scv);
        float *ua = U + (SLOT_AUX * B + b) * d;
        memcpy(ua, er, d * sizeof *ua); /* e_hat - e = e_hat + err */
        for (size_t q = 0; q < k_aux; q++) {
            float v = q < got ? val[q] : 0.0f;
            struct entry *en = &e[ne + q];
            en->i = q < got ? idx[q] : f->dead[0];
            en->slot = SLOT_AUX;
            en->z = v > 0 ? v : 0;
            en->dzda = v > 0 ? 1.0f : 0.0f;
            if (en->z != 0.0f) axpyf(ua, en->z, W_dec + (size_t)en->i * d, d);
        }
        ne += k_aux;
        double sqa = 0;
        for (size_t j = 0; j < d; j++) sqa += (double)ua[j] * ua[j];
        ts[TS_SQA] = sqa;
    }

    /* ghost grads: exp(a) over the dead latents, rescaled to half the residual */
    if (use_ghost) {
        float m = -INFINITY;
        for (size_t q = 0; q < n_dead; q++) {
            float v = ar[f->dead[q]] + s->b_enc[f->dead[q]];
            if (v > m) m = v;
        }
        float *ug = U + (SLOT_GHOST * B + b) * d;
        memset(ug, 0, d * sizeof *ug);
        for (size_t q = 0; q < n_dead; q++) {
            uint32_t i = f->dead[q];
            float z = expf(ar[i] + s->b_enc[i] - m);
            e[ne + q].i = i;
            e[ne + q].slot = SLOT_GHOST;
            e[ne + q].z = z;
            axpyf(ug, z, W_dec + (size_t)i * d, d);
        }
        double gn = 0;
        for (size_t j = 0; j < d; j++) gn += (double)ug[j] * ug[j];
        double cb = gn > 0 ? sqrt(sq) / (2.0 * sqrt(gn)) : 0.0;
        double sqg = 0;
        for (size_t j = 0; j < d; j++) {
            ug[j] = (float)(cb * ug[j]) + er[j]; /* ghost - r, r = -err */
            sqg += (double)ug[j] * ug[j];
        }
        for (size_t q = 0; q < n_dead; q++) {
            e[ne + q].z = (float)(cb * e[ne + q].z);
            e[ne + q].dzda = e[ne + q].z; /* d exp(a)/da = exp(a) */
        }
        ne += n_dead;
        ts[TS_SQG] = sqg;
    }
}

/* Gradient rows of the latents in chunk lc; the chunk's share of b_dec's encoder path
 * goes to part[lc]. */
SAE_HOT static void latent_chunk(const struct pass_ctx *c, size_t lc, const float *fs, float l1w,
                                 float fire, double *p)
{
    struct sae_fast *f = c->f;
    const struct sae *s = c->s;
    const float *U = c->U;
    const float *W_dec = c->W_dec;
    const size_t n = c->n, d = c->d, B = c->B;
    const bool standard = c->standard;
    double *pp = p + lc * d;
    memset(pp, 0, d * sizeof *pp);
    size_t i1 = (lc + 1) * LAT_CHUNK < n ? (lc + 1) * LAT_CHUNK : n;
    for (size_t i = lc * LAT_CHUNK; i < i1; i++) {
        size_t q0 = f->lptr[i], q1 = f->lptr[i + 1];
        if (q0 == q1) continue;
        float *gwd = f->gW_dec + i * d, *gwe = f->gW_enc + i * d;
        float gb = 0, zl1 = 0;
        bool fired = false;
        for (size_t q = q0; q < q1; q++) {
            const struct tentry *te = &f->tent[q];
            if (q + 2 < q1) { /* the rows two entries ahead: these gathers are latency-bound */
                const struct tentry *tn = &f->tent[q + 2];
                const char *pu = (const char *)(U + (tn->slot * B + tn->b) * d);
                const char *px = (const char *)(f->xc + (size_t)tn->b * d);
                for (size_t o = 0; o < d * sizeof(float); o += 64) {
                    __builtin_prefetch(pu + o);
                    __builtin_prefetch(px + o);
                }
            }
            float sc = fs[te->slot];
            const float *u = U + (te->slot * B + te->b) * d;
            /* ga = dz/da * <W_dec[i], U_slot> * slot scale: the decoder row stays in L1
             * for the whole latent, and u is loaded here for the axpy anyway */
            float ga = 0.0f;
            if (te->dzda != 0.0f) {
                float g0 = te->dzda * dotf(W_dec + i * d, u, d);
                ga = g0 * sc;
            }
            float zz = te->z * sc;
            if (zz != 0.0f) axpyf(gwd, zz, u, d);
            if (standard && te->slot == SLOT_MAIN && te->z > 0.0f) {
                ga += l1w * f->dnorm[i];
                zl1 += te->z;
            }
            if (ga != 0.0f) {
                axpyf(gwe, ga, f->xc + (size_t)te->b * d, d);
                gb += ga;
            }
            if (te->slot == SLOT_MAIN && te->z > fire) fired = true;
        }
        if (zl1 != 0.0f && f->dnorm[i] > 0) axpyf(gwd, l1w * zl1 / f->dnorm[i], W_dec + i * d, d);
        f->gb_enc[i] = gb;
        f->touched[i] = 1;
        if (fired) f->fired[i] = 1;
        const float *we = s->W_enc + i * d;
        for (size_t j = 0; j < d; j++) pp[j] += (double)gb * we[j];
    }
}

/* Fills gW_enc/gW_dec (touched rows), gb_enc, gb_dec, touched[] and fired[]. */
static int fast_grads(struct sae_trainer *t, const float *x, size_t B, size_t k, struct fast_out *o)
{
    struct sae_fast *f = t->fast;
    const struct sae_train_config *c = &t->cfg;
    struct sae *s = t->sae;
    const size_t n = c->n, d = c->d_in;
    const float scale_in = s->norm_scale;
    const bool multi = c->multi_topk && c->arch == SAE_TOPK;
    const bool standard = c->arch == SAE_STANDARD;
    const bool batchtopk = c->arch == SAE_BATCHTOPK;
    const size_t kk = multi ? (4 * k < n ? 4 * k : n) : k;
    memset(o, 0, sizeof *o);

    double tp0 = time_now_s();
    /* 1. inputs and the encoder GEMM */
#pragma omp parallel for schedule(static) if (f->par)
    for (size_t b = 0; b < B; b++) {
        for (size_t j = 0; j < d; j++) {
            float v = x[b * d + j] * scale_in;
            f->xs[b * d + j] = v;
            f->xc[b * d + j] = v - s->b_dec[j];
        }
    }
    double tp1 = time_now_s();
    tensor_sgemm(false, true, B, n, d, 1.0f, f->xc, d, s->W_enc, d, 0.0f, f->a, n);
    double tp2 = time_now_s();
    f->prof[SAE_PROF_INPUT] = tp1 - tp0;
    f->prof[SAE_PROF_GEMM] = tp2 - tp1;

    /* 2. dead latents and what is switched on */
    size_t n_dead = 0;
    for (size_t i = 0; i < n; i++)
        if (sae_trainer_is_dead(t, i)) f->dead[n_dead++] = (uint32_t)i;
    o->n_dead = n_dead;
    const bool use_aux = !standard && c->auxk_alpha > 0 && n_dead > 0;
    const bool use_ghost = standard && c->ghost_grads && n_dead > 0;
    const size_t k_aux = sae_train_config_k_aux(c) < n_dead ? sae_train_config_k_aux(c) : n_dead;
    if (standard) {
#pragma omp parallel for schedule(static) if (f->par)
        for (size_t i = 0; i < n; i++)
            f->dnorm[i] = sqrtf(dotf(s->W_dec + i * d, s->W_dec + i * d, d));
    }
    float Tv = 0;
    uint32_t Ti = 0;
    if (batchtopk) {
        int rc = batch_threshold(t, B, k, &Tv, &Ti);
        if (rc) return rc;
    }

    /* 3. entry counts per token, then offsets */
#pragma omp parallel for schedule(static) if (f->par)
    for (size_t b = 0; b < B; b++) {
        size_t cnt = 0;
        const float *ar = f->a + b * n;
        if (standard) {
            for (size_t i = 0; i < n; i++) cnt += ar[i] + s->b_enc[i] > 0.0f;
        } else if (batchtopk) {
            for (size_t i = 0; i < n; i++)
                cnt += sae_ranks_above(ar[i] + s->b_enc[i], (uint32_t)(b * n + i), Tv, Ti) ||
                       (uint32_t)(b * n + i) == Ti;
        } else {
            cnt = kk;
        }
        if (use_aux) cnt += k_aux;
        if (use_ghost) cnt += n_dead;
        f->eptr[b + 1] = cnt;
    }
    f->eptr[0] = 0;
    for (size_t b = 0; b < B; b++) f->eptr[b + 1] += f->eptr[b];
    const size_t E = f->eptr[B];
    if (E > f->cap_E || !f->ent) {
        if (grow((void **)&f->ent, E, sizeof(struct entry)) ||
            grow((void **)&f->tent, E, sizeof(struct tentry)))
            return SF_ENOMEM;
        f->cap_E = E;
    }

    /* 4. per token: select, decode, upstream rows, ga */
    float *U = f->U;
    const float *W_dec = s->W_dec;
    struct pass_ctx pc = {f,     s,      U,  W_dec, n,        d,         B,     k,       kk,
                          k_aux, n_dead, Tv, Ti,    standard, batchtopk, multi, use_aux, use_ghost};
#pragma omp parallel for schedule(dynamic, 16) if (f->par)
    for (size_t b = 0; b < B; b++) token_pass(&pc, b, omp_get_thread_num());

    double tp3 = time_now_s();
    f->prof[SAE_PROF_TOKENS] = tp3 - tp2;
    /* 5. batch reductions (fixed order) */
    double tot[TS_N] = {0};
    double minz = INFINITY;
    for (size_t b = 0; b < B; b++) {
        for (size_t q = 0; q < TS_N; q++)
            if (q != TS_MINZ) tot[q] += f->tok[b * TS_N + q];
        if (f->tok[b * TS_N + TS_MINZ] < minz) minz = f->tok[b * TS_N + TS_MINZ];
    }
    o->min_kept = minz;
    /* chunk sums of xs (mean for FVU) and of err (mean residual for AuxK) and of U0 */
    const size_t nch = (B + TOK_CHUNK - 1) / TOK_CHUNK;
    double *p = f->part;
    double mean_x2 = 0, mean_e2 = 0;
    double *sum_u0 = calloc(d, sizeof *sum_u0);
    double *sum_x = calloc(d, sizeof *sum_x);
    double *sum_e = calloc(d, sizeof *sum_e);
    if (!sum_u0 || !sum_x || !sum_e) {
        free(sum_u0);
        free(sum_x);
        free(sum_e);
        return SF_ENOMEM;
    }
    const float *srcs[3] = {f->xs, f->err, U + SLOT_MAIN * B * d};
    double *dsts[3] = {sum_x, sum_e, sum_u0};
    /* one parallel region for the three chunked sums (fewer barriers) */
#pragma omp parallel for schedule(static) if (f->par)
    for (size_t vc = 0; vc < 3 * nch; vc++) {
        const float *src = srcs[vc / nch];
        size_t ch = vc % nch;
        double *pp = p + vc * d;
        memset(pp, 0, d * sizeof *pp);
        size_t e = (ch + 1) * TOK_CHUNK < B ? (ch + 1) * TOK_CHUNK : B;
        for (size_t b = ch * TOK_CHUNK; b < e; b++)
            for (size_t j = 0; j < d; j++) pp[j] += src[b * d + j];
    }
    for (int v = 0; v < 3; v++)
        for (size_t ch = 0; ch < nch; ch++)
            for (size_t j = 0; j < d; j++) dsts[v][j] += p[((size_t)v * nch + ch) * d + j];
    for (size_t j = 0; j < d; j++) {
        mean_x2 += (sum_x[j] / (double)B) * (sum_x[j] / (double)B);
        mean_e2 += (sum_e[j] / (double)B) * (sum_e[j] / (double)B);
    }
    free(sum_x);
    free(sum_e);
    const double Bd = (double)B * (double)d;
    o->mse = tot[TS_SQ] / Bd;
    o->mse4 = tot[TS_SQ4] / Bd;
    double var = tot[TS_XS2] - (double)B * mean_x2;
    o->fvu = var > 0 ? tot[TS_SQ] / var : 0;
    o->l0 = tot[TS_L0] / (double)B;
    double slot_scale[N_SLOTS] = {2.0 / Bd, 2.0 / Bd, 0, 0};
    if (use_aux) {
        double D = tot[TS_E2] - (double)B * mean_e2;
        if (D > 0) {
            o->auxk = tot[TS_SQA] / D;
            slot_scale[SLOT_AUX] = c->auxk_alpha * 2.0 / D;
        }
    }
    if (standard) o->l1 = c->l1_coeff * tot[TS_L1] / (double)B;
    if (use_ghost) {
        double mse_g = tot[TS_SQG] / Bd;
        if (mse_g > 0) {
            o->ghost = o->mse; /* mse_g * (mse / mse_g) */
            slot_scale[SLOT_GHOST] = (o->mse / mse_g) * 2.0 / Bd;
        }
    }
    o->loss =
        o->mse + o->mse4 / 8.0 + c->auxk_alpha * o->auxk * (use_aux ? 1 : 0) + o->l1 + o->ghost;

    double tp4 = time_now_s();
    f->prof[SAE_PROF_REDUCE] = tp4 - tp3;
    /* 6. transpose the entries by latent (stable: token order) */
    size_t *hist = f->hist;
    const size_t tch = B < TCH ? B : TCH;
#pragma omp parallel for schedule(static) if (f->par)
    for (size_t ch = 0; ch < tch; ch++) {
        size_t *h = hist + ch * n;
        memset(h, 0, n * sizeof *h);
        size_t b0 = B * ch / tch, b1 = B * (ch + 1) / tch;
        for (size_t q = f->eptr[b0]; q < f->eptr[b1]; q++) h[f->ent[q].i]++;
    }
    size_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        f->lptr[i] = acc;
        for (size_t ch = 0; ch < tch; ch++) {
            size_t v = hist[ch * n + i];
            hist[ch * n + i] = acc;
            acc += v;
        }
    }
    f->lptr[n] = acc;
#pragma omp parallel for schedule(static) if (f->par)
    for (size_t ch = 0; ch < tch; ch++) {
        size_t *h = hist + ch * n;
        size_t b0 = B * ch / tch, b1 = B * (ch + 1) / tch;
        for (size_t b = b0; b < b1; b++) {
            for (size_t q = f->eptr[b]; q < f->eptr[b + 1]; q++) {
                const struct entry *en = &f->ent[q];
                struct tentry *te = &f->tent[h[en->i]++];
                te->b = (uint32_t)b;
                te->slot = en->slot;
                te->z = en->z;
                te->dzda = en->dzda;
            }
        }
    }

    double tp5 = time_now_s();
    f->prof[SAE_PROF_TRANSPOSE] = tp5 - tp4;
    /* 7. per latent: decoder and encoder gradient rows; b_dec's encoder path */
    const size_t nlc = (n + LAT_CHUNK - 1) / LAT_CHUNK;
    const float fire = (float)c->fire_threshold;
    const float l1w = (float)(c->l1_coeff / (double)B);
    float fs[N_SLOTS];
    for (int q = 0; q < N_SLOTS; q++) fs[q] = (float)slot_scale[q];
#pragma omp parallel for schedule(dynamic, 1) if (f->par)
    for (size_t lc = 0; lc < nlc; lc++) latent_chunk(&pc, lc, fs, l1w, fire, p);
    /* b_dec: decoder path (sum of U0, scaled) minus the encoder path */
    for (size_t j = 0; j < d; j++) {
        double enc = 0;
        for (size_t lc = 0; lc < nlc; lc++) enc += p[lc * d + j];
        f->gb_dec[j] = (float)(slot_scale[SLOT_MAIN] * sum_u0[j] - enc);
    }
    free(sum_u0);
    f->prof[SAE_PROF_LATENTS] = time_now_s() - tp5;
    return 0;
}

/* Zeroes the touched gradient rows (and clears the flags). */
static void fast_clear(struct sae_trainer *t)
{
    struct sae_fast *f = t->fast;
    const size_t n = t->cfg.n, d = t->cfg.d_in;
#pragma omp parallel for schedule(static) if (f->par)
    for (size_t i = 0; i < n; i++) {
        if (!f->touched[i]) continue;
        memset(f->gW_enc + i * d, 0, d * sizeof(float));
        memset(f->gW_dec + i * d, 0, d * sizeof(float));
        f->gb_enc[i] = 0;
        f->touched[i] = 0;
    }
    memset(f->fired, 0, n);
}

struct adam_f {
    float b1, c1, b2, c2, step, inv_bc2, eps;
};

SAE_HOT static void adam_vec(float *restrict p, float *restrict m, float *restrict v,
                             const float *restrict g, float gscale, size_t len,
                             const struct adam_f *a)
{
    if (g) {
#pragma omp simd
        for (size_t j = 0; j < len; j++) {
            float gj = g[j] * gscale;
            float mj = a->b1 * m[j] + a->c1 * gj;
            float vj = a->b2 * v[j] + a->c2 * gj * gj;
            m[j] = mj;
            v[j] = vj;
            p[j] -= a->step * mj / (sqrtf(vj) * a->inv_bc2 + a->eps);
        }
    } else {
#pragma omp simd
        for (size_t j = 0; j < len; j++) {
            float mj = a->b1 * m[j];
            float vj = a->b2 * v[j];
            m[j] = mj;
            v[j] = vj;
            p[j] -= a->step * mj / (sqrtf(vj) * a->inv_bc2 + a->eps);
        }
    }
}

/* signsgd_sf on one vector: z -= lr sign(g); x = (1-c) x + c z; y = (1-beta) z + beta x.
 * g == NULL: a zero gradient (z stays). The unit-norm decoder rows are handled by the
 * caller between the phases (sf_row_dec). */
SAE_HOT static void sf_z(float *restrict z, const float *restrict g, float lr, size_t len)
{
    if (!g) return;
#pragma omp simd
    for (size_t j = 0; j < len; j++) z[j] -= lr * (float)((g[j] > 0.0f) - (g[j] < 0.0f));
}

SAE_HOT static void sf_xy(float *restrict y, const float *restrict z, float *restrict x, float c,
                          float beta, size_t len)
{
#pragma omp simd
    for (size_t j = 0; j < len; j++) {
        float xj = (1.0f - c) * x[j] + c * z[j];
        x[j] = xj;
        y[j] = (1.0f - beta) * z[j] + beta * xj;
    }
}

static void unit_row(float *w, size_t d)
{
    float nn = sqrtf(dotf(w, w, d));
    if (nn > 0) {
        float inv = 1.0f / nn;
        for (size_t j = 0; j < d; j++) w[j] *= inv;
    }
}

/* Projection, clipping, Adam, renormalisation; returns the global grad norm. */
static double fast_optimize(struct sae_trainer *t, double lr)
{
    struct sae_fast *f = t->fast;
    const struct sae_train_config *c = &t->cfg;
    struct sae *s = t->sae;
    const size_t n = c->n, d = c->d_in;
    const size_t nlc = (n + LAT_CHUNK - 1) / LAT_CHUNK;
    double *p = f->part;
    /* pass 1: project decoder grads on touched rows; per-chunk squared norms */
#pragma omp parallel for schedule(static) if (f->par)
    for (size_t lc = 0; lc < nlc; lc++) {
        double acc = 0;
        size_t i1 = (lc + 1) * LAT_CHUNK < n ? (lc + 1) * LAT_CHUNK : n;
        for (size_t i = lc * LAT_CHUNK; i < i1; i++) {
            if (!f->touched[i]) continue;
            float *g = f->gW_dec + i * d;
            const float *w = s->W_dec + i * d;
            if (c->unit_norm_decoder) {
                float ww = dotf(w, w, d);
                if (ww > 0) axpyf(g, -dotf(g, w, d) / ww, w, d);
            }
            acc += (double)dotf(g, g, d) + (double)dotf(f->gW_enc + i * d, f->gW_enc + i * d, d) +
                   (double)f->gb_enc[i] * f->gb_enc[i];
        }
        p[lc] = acc;
    }
    double nrm2 = 0;
    for (size_t lc = 0; lc < nlc; lc++) nrm2 += p[lc];
    for (size_t j = 0; j < d; j++) nrm2 += (double)f->gb_dec[j] * f->gb_dec[j];
    double gnorm = sqrt(nrm2);
    float clipf = 1.0f;
    if (c->grad_clip > 0) {
        double cc = c->grad_clip / (gnorm + 1e-6);
        if (cc < 1.0) clipf = (float)cc;
    }
    if (c->optimizer == SAE_OPT_SIGNSGD_SF) {
        /* the sign ignores the clipping factor (positive) */
        const float lrf = (float)lr, beta = (float)c->sf_momentum;
        const float cf = (float)sae_trainer_sf_coef(t, lr, true);
#pragma omp parallel for schedule(static) if (f->par)
        for (size_t i = 0; i < n; i++) {
            bool tch = f->touched[i];
            size_t o = i * d;
            sf_z(t->m_W_enc + o, tch ? f->gW_enc + o : NULL, lrf, d);
            sf_xy(s->W_enc + o, t->m_W_enc + o, t->v_W_enc + o, cf, beta, d);
            sf_z(t->m_W_dec + o, tch ? f->gW_dec + o : NULL, lrf, d);
            if (c->unit_norm_decoder) unit_row(t->m_W_dec + o, d);
            if (c->unit_norm_decoder) {
                float *x = t->v_W_dec + o;
                const float *z = t->m_W_dec + o;
                for (size_t j = 0; j < d; j++) x[j] = (1.0f - cf) * x[j] + cf * z[j];
                unit_row(x, d);
                for (size_t j = 0; j < d; j++) s->W_dec[o + j] = (1.0f - beta) * z[j] + beta * x[j];
            } else {
                sf_xy(s->W_dec + o, t->m_W_dec + o, t->v_W_dec + o, cf, beta, d);
            }
            if (tch) {
                memset(f->gW_enc + o, 0, d * sizeof(float));
                memset(f->gW_dec + o, 0, d * sizeof(float));
            }
        }
        sf_z(t->m_b_enc, f->gb_enc, lrf, n);
        sf_xy(s->b_enc, t->m_b_enc, t->v_b_enc, cf, beta, n);
        sf_z(t->m_b_dec, f->gb_dec, lrf, d);
        sf_xy(s->b_dec, t->m_b_dec, t->v_b_dec, cf, beta, d);
        memset(f->gb_enc, 0, n * sizeof(float));
        memset(f->gb_dec, 0, d * sizeof(float));
        return gnorm;
    }
    struct sae_adam_coef ac = sae_trainer_adam_coef(t, lr);
    struct adam_f af = {(float)ac.b1,       (float)(1 - ac.b1),  (float)ac.b2,
                        (float)(1 - ac.b2), (float)ac.step_size, (float)(1.0 / ac.bc2_sqrt),
                        (float)ac.eps};
    /* pass 2: Adam on every row (untouched rows have g = 0), renormalise, clear */
#pragma omp parallel for schedule(static) if (f->par)
    for (size_t i = 0; i < n; i++) {
        bool tch = f->touched[i];
        size_t o = i * d;
        adam_vec(s->W_enc + o, t->m_W_enc + o, t->v_W_enc + o, tch ? f->gW_enc + o : NULL, clipf, d,
                 &af);
        adam_vec(s->W_dec + o, t->m_W_dec + o, t->v_W_dec + o, tch ? f->gW_dec + o : NULL, clipf, d,
                 &af);
        if (c->unit_norm_decoder) {
            float *w = s->W_dec + o;
            float nn = sqrtf(dotf(w, w, d));
            if (nn > 0) {
                float inv = 1.0f / nn;
                for (size_t j = 0; j < d; j++) w[j] *= inv;
            }
        }
        if (tch) {
            memset(f->gW_enc + o, 0, d * sizeof(float));
            memset(f->gW_dec + o, 0, d * sizeof(float));
        }
    }
    adam_vec(s->b_enc, t->m_b_enc, t->v_b_enc, f->gb_enc, clipf, n, &af);
    adam_vec(s->b_dec, t->m_b_dec, t->v_b_dec, f->gb_dec, clipf, d, &af);
    memset(f->gb_enc, 0, n * sizeof(float));
    memset(f->gb_dec, 0, d * sizeof(float));
    return gnorm;
}

int sae_trainer_step(struct sae_trainer *t, const float *x, size_t B, struct sae_train_metrics *m)
{
    double t0 = time_now_s();
    int rc = sae_trainer_prepare(t, x, B);
    if (rc) return rc;
    rc = fast_reserve(t, B);
    if (rc) {
        log_error("sae_step_oom", "B=%zu", B);
        return rc;
    }
    const size_t k = sae_train_k_at(&t->cfg, t->tokens);
    const double lr = sae_train_lr_at(&t->cfg, t->tokens);
    sae_trainer_sf_start(t);
    struct fast_out o;
    rc = fast_grads(t, x, B, k, &o);
    if (rc) {
        fast_clear(t);
        log_error("sae_step_oom", "B=%zu", B);
        return rc;
    }
    double to0 = time_now_s();
    double gnorm = fast_optimize(t, lr);
    t->fast->prof[SAE_PROF_ADAM] = time_now_s() - to0;
    /* dead counters (in tokens), BatchTopK threshold, counters */
    struct sae_fast *f = t->fast;
    for (size_t i = 0; i < t->cfg.n; i++) {
        if (f->fired[i])
            t->since_fire[i] = 0;
        else if (t->since_fire[i] < INT64_MAX - (int64_t)B)
            t->since_fire[i] += (int64_t)B;
        f->fired[i] = 0;
        f->touched[i] = 0;
    }
    if (t->cfg.arch == SAE_BATCHTOPK && isfinite(o.min_kept)) {
        if (!t->theta_set) {
            t->theta = o.min_kept;
            t->theta_set = true;
        } else {
            t->theta =
                t->cfg.threshold_decay * t->theta + (1 - t->cfg.threshold_decay) * o.min_kept;
        }
        for (size_t i = 0; i < t->cfg.n; i++) t->sae->threshold[i] = (float)t->theta;
    }
    t->step++;
    t->tokens += (int64_t)B;
    if (m) {
        memset(m, 0, sizeof *m);
        m->step = t->step;
        m->tokens = t->tokens;
        m->k = k;
        m->lr = lr;
        m->loss = o.loss;
        m->mse = o.mse;
        m->fvu = o.fvu;
        m->l0 = o.l0;
        m->dead_frac = sae_trainer_dead_fraction(t);
        m->auxk_loss = o.auxk;
        m->l1_loss = o.l1;
        m->ghost_loss = o.ghost;
        m->grad_norm = gnorm;
        m->threshold = t->theta;
        m->step_s = time_now_s() - t0;
        m->tokens_per_s = m->step_s > 0 ? (double)B / m->step_s : 0;
    }
    return 0;
}

void sae_trainer_profile(const struct sae_trainer *t, double out[SAE_PROF_N])
{
    for (int i = 0; i < SAE_PROF_N; i++) out[i] = t->fast ? t->fast->prof[i] : 0;
}

int sae_trainer_grad_fast(struct sae_trainer *t, const float *x, size_t B, float *gW_enc,
                          float *gb_enc, float *gW_dec, float *gb_dec, double *loss);
int sae_trainer_grad_fast(struct sae_trainer *t, const float *x, size_t B, float *gW_enc,
                          float *gb_enc, float *gW_dec, float *gb_dec, double *loss)
{
    int rc = sae_trainer_prepare(t, x, B);
    if (rc) return rc;
    rc = fast_reserve(t, B);
    if (rc) return rc;
    struct fast_out o;
    rc = fast_grads(t, x, B, sae_train_k_at(&t->cfg, t->tokens), &o);
    if (rc == 0) {
        const size_t n = t->cfg.n, d = t->cfg.d_in;
        memcpy(gW_enc, t->fast->gW_enc, n * d * sizeof(float));
        memcpy(gW_dec, t->fast->gW_dec, n * d * sizeof(float));
        memcpy(gb_enc, t->fast->gb_enc, n * sizeof(float));
        memcpy(gb_dec, t->fast->gb_dec, d * sizeof(float));
        if (loss) *loss = o.loss;
    }
    fast_clear(t);
    memset(t->fast->gb_dec, 0, t->cfg.d_in * sizeof(float));
    return rc;
}

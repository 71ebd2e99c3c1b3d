/* sae_train_ref: the reference training step, in double precision with dense loops
 * and no cleverness, that the fast step (sae_train_fast.c) is tested against; and the
 * reference loss/gradient that the finite-difference tests check. Slow by design:
 * O(B * n * d) everywhere. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sae/sae_kernels.h"
#include "sae/sae_train_internal.h"

static double relu(double v)
{
    return v > 0 ? v : 0;
}

double sae_ref_loss(struct sae_ref_problem *p, const struct sae_ref_params *w,
                    struct sae_ref_params *g, struct sae_ref_terms *terms)
{
    const struct sae_train_config *c = p->cfg;
    const size_t B = p->B, n = c->n, d = c->d_in;
    const double Bd = (double)B * (double)d;
    const bool standard = c->arch == SAE_STANDARD;
    struct sae_ref_terms T = {0};
    if (g) {
        memset(g->W_enc, 0, n * d * sizeof(double));
        memset(g->W_dec, 0, n * d * sizeof(double));
        memset(g->b_enc, 0, n * sizeof(double));
        memset(g->b_dec, 0, d * sizeof(double));
    }
    double *xc = malloc(d * sizeof *xc), *a = malloc(n * sizeof *a);
    double *xh = malloc(d * sizeof *xh), *xh4 = malloc(d * sizeof *xh4);
    double *eh = malloc(d * sizeof *eh), *gh = malloc(d * sizeof *gh);
    double *dx = malloc(d * sizeof *dx), *dx4 = malloc(d * sizeof *dx4);
    double *de = malloc(d * sizeof *de), *dgh = malloc(d * sizeof *dgh);
    double *da = malloc(n * sizeof *da), *dxc = malloc(d * sizeof *dxc);
    double *dn = malloc(n * sizeof *dn);
    double *errs = malloc(B * d * sizeof *errs);
    /* decoder norms (L1) */
    for (size_t i = 0; i < n; i++) {
        double ss = 0;
        for (size_t j = 0; j < d; j++) ss += w->W_dec[i * d + j] * w->W_dec[i * d + j];
        dn[i] = sqrt(ss);
    }
    /* first pass: main errors (AuxK and ghost need batch-level detached values) */
    double sq_main = 0;
    for (size_t b = 0; b < B; b++) {
        const double *x = p->xs + b * d;
        const uint8_t *sl = p->sel + b * n;
        for (size_t j = 0; j < d; j++) xc[j] = x[j] - w->b_dec[j];
        for (size_t j = 0; j < d; j++) xh[j] = w->b_dec[j];
        for (size_t i = 0; i < n; i++) {
            if (sl[i] != SAE_REF_MAIN) continue;
            double ai = w->b_enc[i];
            for (size_t j = 0; j < d; j++) ai += w->W_enc[i * d + j] * xc[j];
            for (size_t j = 0; j < d; j++) xh[j] += relu(ai) * w->W_dec[i * d + j];
        }
        for (size_t j = 0; j < d; j++) {
            errs[b * d + j] = xh[j] - x[j];
            sq_main += errs[b * d + j] * errs[b * d + j];
        }
    }
    if (!p->frozen) {
        /* AuxK: e = x - x_hat and its centred energy */
        if (p->aux && p->e) {
            double den = 0;
            for (size_t j = 0; j < d; j++) {
                double mean = 0;
                for (size_t b = 0; b < B; b++) mean += -errs[b * d + j];
                mean /= (double)B;
                for (size_t b = 0; b < B; b++) {
                    p->e[b * d + j] = -errs[b * d + j];
                    den += (p->e[b * d + j] - mean) * (p->e[b * d + j] - mean);
                }
            }
            p->aux_den = den;
        }
        /* ghost: r = x - x_hat; c_b = ||r|| / (2 ||g_b||); ratio = mse / mse_ghost */
        if (p->dead && p->r) {
            double sqg = 0;
            for (size_t b = 0; b < B; b++) {
                const double *x = p->xs + b * d;
                for (size_t j = 0; j < d; j++) xc[j] = x[j] - w->b_dec[j];
                for (size_t j = 0; j < d; j++) gh[j] = 0;
                for (size_t i = 0; i < n; i++) {
                    if (!p->dead[i]) continue;
                    double ai = w->b_enc[i];
                    for (size_t j = 0; j < d; j++) ai += w->W_enc[i * d + j] * xc[j];
                    for (size_t j = 0; j < d; j++) gh[j] += exp(ai) * w->W_dec[i * d + j];
                }
                double rn = 0, gn = 0;
                for (size_t j = 0; j < d; j++) {
                    p->r[b * d + j] = -errs[b * d + j];
                    rn += p->r[b * d + j] * p->r[b * d + j];
                    gn += gh[j] * gh[j];
                }
                p->ghost_c[b] = gn > 0 ? sqrt(rn) / (2 * sqrt(gn)) : 0;
                for (size_t j = 0; j < d; j++) {
                    double t = p->ghost_c[b] * gh[j] - p->r[b * d + j];
                    sqg += t * t;
                }
            }
            p->ghost_ratio = sqg > 0 ? (sq_main / Bd) / (sqg / Bd) : 0;
        }
        p->frozen = true;
    }
    const bool use_aux = p->aux && p->e && p->aux_den > 0;
    const bool use_ghost = p->dead && p->r && p->ghost_ratio > 0;

    for (size_t b = 0; b < B; b++) {
        const double *x = p->xs + b * d;
        const uint8_t *sl = p->sel + b * n;
        for (size_t j = 0; j < d; j++) xc[j] = x[j] - w->b_dec[j];
        for (size_t i = 0; i < n; i++) {
            double ai = w->b_enc[i];
            for (size_t j = 0; j < d; j++) ai += w->W_enc[i * d + j] * xc[j];
            a[i] = ai;
        }
        /* reconstructions */
        for (size_t j = 0; j < d; j++) xh[j] = w->b_dec[j];
        for (size_t i = 0; i < n; i++)
            if (sl[i] == SAE_REF_MAIN)
                for (size_t j = 0; j < d; j++) xh[j] += relu(a[i]) * w->W_dec[i * d + j];
        for (size_t j = 0; j < d; j++) xh4[j] = xh[j];
        for (size_t i = 0; i < n; i++)
            if (sl[i] == SAE_REF_EXTRA)
                for (size_t j = 0; j < d; j++) xh4[j] += relu(a[i]) * w->W_dec[i * d + j];
        double sq = 0, sq4 = 0;
        for (size_t j = 0; j < d; j++) {
            sq += (xh[j] - x[j]) * (xh[j] - x[j]);
            sq4 += (xh4[j] - x[j]) * (xh4[j] - x[j]);
        }
        T.mse += sq / Bd;
        if (c->multi_topk) T.mse4 += sq4 / Bd;
        /* AuxK */
        if (use_aux) {
            for (size_t j = 0; j < d; j++) eh[j] = 0;
            for (size_t i = 0; i < n; i++)
                if (p->aux[b * n + i])
                    for (size_t j = 0; j < d; j++) eh[j] += relu(a[i]) * w->W_dec[i * d + j];
            for (size_t j = 0; j < d; j++) {
                double t = eh[j] - p->e[b * d + j];
                T.auxk += t * t / p->aux_den;
                de[j] = c->auxk_alpha * 2 * t / p->aux_den;
            }
        }
        /* L1 */
        if (standard)
            for (size_t i = 0; i < n; i++)
                if (sl[i] == SAE_REF_MAIN) T.l1 += c->l1_coeff * relu(a[i]) * dn[i] / (double)B;
        /* ghost */
        if (use_ghost) {
            for (size_t j = 0; j < d; j++) gh[j] = 0;
            for (size_t i = 0; i < n; i++)
                if (p->dead[i])
                    for (size_t j = 0; j < d; j++)
                        gh[j] += p->ghost_c[b] * exp(a[i]) * w->W_dec[i * d + j];
            for (size_t j = 0; j < d; j++) {
                double t = gh[j] - p->r[b * d + j];
                T.ghost += p->ghost_ratio * t * t / Bd;
                dgh[j] = p->ghost_ratio * 2 * t / Bd;
            }
        }
        if (!g) continue;
        /* backward */
        for (size_t j = 0; j < d; j++) {
            dx4[j] = c->multi_topk ? (2 * (xh4[j] - x[j]) / Bd) / 8 : 0;
            dx[j] = 2 * (xh[j] - x[j]) / Bd + dx4[j]; /* x_hat4 = x_hat + extras */
            g->b_dec[j] += dx[j];
        }
        for (size_t i = 0; i < n; i++) {
            double *gw = g->W_dec + i * d;
            const double *wd = w->W_dec + i * d;
            double dz = 0, dzaux = 0, dagh = 0;
            if (sl[i] == SAE_REF_MAIN || sl[i] == SAE_REF_EXTRA) {
                const double *up = sl[i] == SAE_REF_MAIN ? dx : dx4;
                for (size_t j = 0; j < d; j++) {
                    dz += wd[j] * up[j];
                    gw[j] += relu(a[i]) * up[j];
                }
                if (standard && sl[i] == SAE_REF_MAIN) {
                    double l = c->l1_coeff / (double)B;
                    dz += l * dn[i];
                    if (dn[i] > 0)
                        for (size_t j = 0; j < d; j++) gw[j] += l * relu(a[i]) * wd[j] / dn[i];
                }
            }
            if (use_aux && p->aux[b * n + i]) {
                for (size_t j = 0; j < d; j++) {
                    dzaux += wd[j] * de[j];
                    gw[j] += relu(a[i]) * de[j];
                }
            }
            if (use_ghost && p->dead[i]) {
                double ex = p->ghost_c[b] * exp(a[i]);
                for (size_t j = 0; j < d; j++) {
                    dagh += ex * wd[j] * dgh[j];
                    gw[j] += ex * dgh[j];
                }
            }
            da[i] = (a[i] > 0 ? dz + dzaux : 0) + dagh;
        }
        for (size_t j = 0; j < d; j++) dxc[j] = 0;
        for (size_t i = 0; i < n; i++) {
            if (da[i] == 0) continue;
            for (size_t j = 0; j < d; j++) {
                g->W_enc[i * d + j] += da[i] * xc[j];
                dxc[j] += da[i] * w->W_enc[i * d + j];
            }
            g->b_enc[i] += da[i];
        }
        for (size_t j = 0; j < d; j++) g->b_dec[j] -= dxc[j];
    }
    T.total = T.mse + T.mse4 / 8 + (use_aux ? c->auxk_alpha * T.auxk : 0) + T.l1 + T.ghost;
    if (terms) *terms = T;
    free(xc);
    free(a);
    free(xh);
    free(xh4);
    free(eh);
    free(gh);
    free(dx);
    free(dx4);
    free(de);
    free(dgh);
    free(da);
    free(dxc);
    free(dn);
    free(errs);
    return T.total;
}

/* ---- the reference step ------------------------------------------------------------- */

struct ref_rank {
    double v;
    size_t i;
};

static int cmp_rank(const void *pa, const void *pb)
{
    const struct ref_rank *a = pa, *b = pb;
    if (a->v > b->v) return -1;
    if (a->v < b->v) return 1;
    return a->i < b->i ? -1 : (a->i > b->i);
}

struct ref_ws {
    double *xs, *A, *e, *r, *gc;
    uint8_t *sel, *aux, *dead;
    struct sae_ref_params w, g;
};

static void ref_ws_free(struct ref_ws *ws)
{
    free(ws->xs);
    free(ws->A);
    free(ws->e);
    free(ws->r);
    free(ws->gc);
    free(ws->sel);
    free(ws->aux);
    free(ws->dead);
    free(ws->w.W_enc);
    free(ws->w.W_dec);
    free(ws->w.b_enc);
    free(ws->w.b_dec);
    free(ws->g.W_enc);
    free(ws->g.W_dec);
    free(ws->g.b_enc);
    free(ws->g.b_dec);
}

/* Selection at the current point (float inputs, double math), as the fast step
 * defines it; fills ws and the ref problem. */
static int ref_setup(struct sae_trainer *t, const float *x, size_t B, size_t k, struct ref_ws *ws,
                     struct sae_ref_problem *pr)
{
    const struct sae_train_config *c = &t->cfg;
    const struct sae *s = t->sae;
    const size_t n = c->n, d = c->d_in;
    memset(ws, 0, sizeof *ws);
    ws->xs = malloc(B * d * sizeof(double));
    ws->A = malloc(B * n * sizeof(double));
    ws->e = malloc(B * d * sizeof(double));
    ws->r = malloc(B * d * sizeof(double));
    ws->gc = malloc(B * sizeof(double));
    ws->sel = calloc(B * n, 1);
    ws->aux = calloc(B * n, 1);
    ws->dead = calloc(n, 1);
    ws->w.W_enc = malloc(n * d * sizeof(double));
    ws->w.W_dec = malloc(n * d * sizeof(double));
    ws->w.b_enc = malloc(n * sizeof(double));
    ws->w.b_dec = malloc(d * sizeof(double));
    ws->g.W_enc = malloc(n * d * sizeof(double));
    ws->g.W_dec = malloc(n * d * sizeof(double));
    ws->g.b_enc = malloc(n * sizeof(double));
    ws->g.b_dec = malloc(d * sizeof(double));
    struct ref_rank *rk = malloc((c->arch == SAE_BATCHTOPK ? B * n : n) * sizeof *rk);
    if (!ws->xs || !ws->A || !ws->e || !ws->r || !ws->gc || !ws->sel || !ws->aux || !ws->dead ||
        !ws->w.W_enc || !ws->w.W_dec || !ws->w.b_enc || !ws->w.b_dec || !ws->g.W_enc ||
        !ws->g.W_dec || !ws->g.b_enc || !ws->g.b_dec || !rk) {
        free(rk);
        ref_ws_free(ws);
        return SF_ENOMEM;
    }
    for (size_t q = 0; q < n * d; q++) {
        ws->w.W_enc[q] = s->W_enc[q];
        ws->w.W_dec[q] = s->W_dec[q];
    }
    for (size_t i = 0; i < n; i++) ws->w.b_enc[i] = s->b_enc[i];
    for (size_t j = 0; j < d; j++) ws->w.b_dec[j] = s->b_dec[j];
    /* the input scaling is done in float, as the fast step does */
    for (size_t q = 0; q < B * d; q++) ws->xs[q] = (double)(x[q] * s->norm_scale);
    for (size_t b = 0; b < B; b++)
        for (size_t i = 0; i < n; i++) {
            double ai = ws->w.b_enc[i];
            for (size_t j = 0; j < d; j++)
                ai += ws->w.W_enc[i * d + j] * (ws->xs[b * d + j] - ws->w.b_dec[j]);
            ws->A[b * n + i] = ai;
        }
    size_t n_dead = 0;
    for (size_t i = 0; i < n; i++) {
        ws->dead[i] = sae_trainer_is_dead(t, i);
        n_dead += ws->dead[i];
    }
    const bool multi = c->multi_topk && c->arch == SAE_TOPK;
    if (c->arch == SAE_STANDARD) {
        for (size_t q = 0; q < B * n; q++) ws->sel[q] = ws->A[q] > 0 ? SAE_REF_MAIN : 0;
    } else if (c->arch == SAE_BATCHTOPK) {
        for (size_t q = 0; q < B * n; q++) {
            rk[q].v = ws->A[q];
            rk[q].i = q;
        }
        qsort(rk, B * n, sizeof *rk, cmp_rank);
        for (size_t q = 0; q < k * B && q < B * n; q++) ws->sel[rk[q].i] = SAE_REF_MAIN;
    } else {
        size_t kk = multi ? SF_MIN(4 * k, n) : k;
        for (size_t b = 0; b < B; b++) {
            for (size_t i = 0; i < n; i++) {
                rk[i].v = ws->A[b * n + i];
                rk[i].i = i;
            }
            qsort(rk, n, sizeof *rk, cmp_rank);
            for (size_t q = 0; q < kk; q++)
                ws->sel[b * n + rk[q].i] = q < k ? SAE_REF_MAIN : SAE_REF_EXTRA;
        }
    }
    const bool use_aux = c->arch != SAE_STANDARD && c->auxk_alpha > 0 && n_dead > 0;
    if (use_aux) {
        size_t ka = SF_MIN(sae_train_config_k_aux(c), n_dead);
        for (size_t b = 0; b < B; b++) {
            size_t m = 0;
            for (size_t i = 0; i < n; i++) {
                if (!ws->dead[i]) continue;
                rk[m].v = ws->A[b * n + i];
                rk[m].i = i;
                m++;
            }
            qsort(rk, m, sizeof *rk, cmp_rank);
            for (size_t q = 0; q < ka; q++) ws->aux[b * n + rk[q].i] = 1;
        }
    }
    free(rk);
    memset(pr, 0, sizeof *pr);
    pr->cfg = c;
    pr->B = B;
    pr->xs = ws->xs;
    pr->sel = ws->sel;
    pr->aux = use_aux ? ws->aux : NULL;
    pr->dead = (c->arch == SAE_STANDARD && c->ghost_grads && n_dead > 0) ? ws->dead : NULL;
    pr->e = ws->e;
    pr->r = ws->r;
    pr->ghost_c = ws->gc;
    return 0;
}

int sae_trainer_grad_fast(struct sae_trainer *t, const float *x, size_t B, float *gW_enc,
                          float *gb_enc, float *gW_dec, float *gb_dec, double *loss);

int sae_trainer_grad(struct sae_trainer *t, const float *x, size_t B, bool ref, float *gW_enc,
                     float *gb_enc, float *gW_dec, float *gb_dec, double *loss)
{
    if (!ref) return sae_trainer_grad_fast(t, x, B, gW_enc, gb_enc, gW_dec, gb_dec, loss);
    int rc = sae_trainer_prepare(t, x, B);
    if (rc) return rc;
    struct ref_ws ws;
    struct sae_ref_problem pr;
    rc = ref_setup(t, x, B, sae_train_k_at(&t->cfg, t->tokens), &ws, &pr);
    if (rc) return rc;
    double l = sae_ref_loss(&pr, &ws.w, &ws.g, NULL);
    const size_t n = t->cfg.n, d = t->cfg.d_in;
    for (size_t q = 0; q < n * d; q++) {
        gW_enc[q] = (float)ws.g.W_enc[q];
        gW_dec[q] = (float)ws.g.W_dec[q];
    }
    for (size_t i = 0; i < n; i++) gb_enc[i] = (float)ws.g.b_enc[i];
    for (size_t j = 0; j < d; j++) gb_dec[j] = (float)ws.g.b_dec[j];
    if (loss) *loss = l;
    ref_ws_free(&ws);
    return 0;
}

static void ref_adam(float *p, float *m, float *v, const double *g, double clipf, size_t len,
                     const struct sae_adam_coef *ac)
{
    for (size_t j = 0; j < len; j++) {
        double gj = g[j] * clipf;
        double mj = ac->b1 * m[j] + (1 - ac->b1) * gj;
        double vj = ac->b2 * v[j] + (1 - ac->b2) * gj * gj;
        m[j] = (float)mj;
        v[j] = (float)vj;
        p[j] = (float)(p[j] - ac->step_size * mj / (sqrt(vj) / ac->bc2_sqrt + ac->eps));
    }
}

static double sgn(double g)
{
    return (double)((g > 0) - (g < 0));
}

/* signsgd_sf on one tensor of `rows` rows of `len`: z -= lr sign(g); z's rows unit
 * (unit); x = (1-c) x + c z; x's rows unit (unit); y = (1-beta) z + beta x. */
static void ref_sf(float *y, float *z, float *x, const double *g, size_t rows, size_t len,
                   bool unit, double lr, double c, double beta)
{
    for (size_t r = 0; r < rows; r++) {
        double zz = 0, xx = 0;
        float *zp = z + r * len, *xp = x + r * len, *yp = y + r * len;
        const double *gp = g + r * len;
        for (size_t j = 0; j < len; j++) {
            zp[j] = (float)((double)zp[j] - lr * sgn(gp[j]));
            zz += (double)zp[j] * zp[j];
        }
        if (unit && zz > 0)
            for (size_t j = 0; j < len; j++) zp[j] = (float)(zp[j] / sqrt(zz));
        for (size_t j = 0; j < len; j++) {
            xp[j] = (float)((1 - c) * xp[j] + c * zp[j]);
            xx += (double)xp[j] * xp[j];
        }
        if (unit && xx > 0)
            for (size_t j = 0; j < len; j++) xp[j] = (float)(xp[j] / sqrt(xx));
        for (size_t j = 0; j < len; j++) yp[j] = (float)((1 - beta) * zp[j] + beta * xp[j]);
    }
}

int sae_step_ref(struct sae_trainer *t, const float *x, size_t B, struct sae_train_metrics *m)
{
    double t0 = time_now_s();
    int rc = sae_trainer_prepare(t, x, B);
    if (rc) return rc;
    const struct sae_train_config *c = &t->cfg;
    struct sae *s = t->sae;
    const size_t n = c->n, d = c->d_in;
    const size_t k = sae_train_k_at(c, t->tokens);
    const double lr = sae_train_lr_at(c, t->tokens);
    sae_trainer_sf_start(t);
    struct ref_ws ws;
    struct sae_ref_problem pr;
    rc = ref_setup(t, x, B, k, &ws, &pr);
    if (rc) return rc;
    struct sae_ref_terms T;
    sae_ref_loss(&pr, &ws.w, &ws.g, &T);
    /* projection of decoder gradients onto each row's tangent space */
    if (c->unit_norm_decoder) {
        for (size_t i = 0; i < n; i++) {
            double gw = 0, ww = 0;
            for (size_t j = 0; j < d; j++) {
                gw += ws.g.W_dec[i * d + j] * ws.w.W_dec[i * d + j];
                ww += ws.w.W_dec[i * d + j] * ws.w.W_dec[i * d + j];
            }
            if (ww > 0)
                for (size_t j = 0; j < d; j++)
                    ws.g.W_dec[i * d + j] -= gw / ww * ws.w.W_dec[i * d + j];
        }
    }
    double nrm2 = 0;
    for (size_t q = 0; q < n * d; q++)
        nrm2 += ws.g.W_enc[q] * ws.g.W_enc[q] + ws.g.W_dec[q] * ws.g.W_dec[q];
    for (size_t i = 0; i < n; i++) nrm2 += ws.g.b_enc[i] * ws.g.b_enc[i];
    for (size_t j = 0; j < d; j++) nrm2 += ws.g.b_dec[j] * ws.g.b_dec[j];
    double gnorm = sqrt(nrm2), clipf = 1;
    if (c->grad_clip > 0 && c->grad_clip / (gnorm + 1e-6) < 1)
        clipf = c->grad_clip / (gnorm + 1e-6);
    if (c->optimizer == SAE_OPT_SIGNSGD_SF) {
        double cf = sae_trainer_sf_coef(t, lr, true), beta = c->sf_momentum;
        bool unit = c->unit_norm_decoder;
        ref_sf(s->W_enc, t->m_W_enc, t->v_W_enc, ws.g.W_enc, n, d, false, lr, cf, beta);
        ref_sf(s->W_dec, t->m_W_dec, t->v_W_dec, ws.g.W_dec, n, d, unit, lr, cf, beta);
        ref_sf(s->b_enc, t->m_b_enc, t->v_b_enc, ws.g.b_enc, 1, n, false, lr, cf, beta);
        ref_sf(s->b_dec, t->m_b_dec, t->v_b_dec, ws.g.b_dec, 1, d, false, lr, cf, beta);
    } else {
        struct sae_adam_coef ac = sae_trainer_adam_coef(t, lr);
        ref_adam(s->W_enc, t->m_W_enc, t->v_W_enc, ws.g.W_enc, clipf, n * d, &ac);
        ref_adam(s->W_dec, t->m_W_dec, t->v_W_dec, ws.g.W_dec, clipf, n * d, &ac);
        ref_adam(s->b_enc, t->m_b_enc, t->v_b_enc, ws.g.b_enc, clipf, n, &ac);
        ref_adam(s->b_dec, t->m_b_dec, t->v_b_dec, ws.g.b_dec, clipf, d, &ac);
    }
    if (c->unit_norm_decoder && c->optimizer == SAE_OPT_ADAM) {
        for (size_t i = 0; i < n; i++) {
            double ss = 0;
            for (size_t j = 0; j < d; j++) ss += (double)s->W_dec[i * d + j] * s->W_dec[i * d + j];
            if (ss > 0)
                for (size_t j = 0; j < d; j++)
                    s->W_dec[i * d + j] = (float)(s->W_dec[i * d + j] / sqrt(ss));
        }
    }
    /* statistics: fired latents, L0, FVU, smallest kept activation */
    double l0 = 0, minz = INFINITY, sqx = 0;
    for (size_t i = 0; i < n; i++) {
        bool fired = false;
        for (size_t b = 0; b < B; b++) {
            if (ws.sel[b * n + i] != SAE_REF_MAIN) continue;
            double z = relu(ws.A[b * n + i]);
            if (z > 0) {
                l0 += 1;
                if (z < minz) minz = z;
            }
            if (z > c->fire_threshold) fired = true;
        }
        if (fired)
            t->since_fire[i] = 0;
        else if (t->since_fire[i] < INT64_MAX - (int64_t)B)
            t->since_fire[i] += (int64_t)B;
    }
    for (size_t j = 0; j < d; j++) {
        double mean = 0;
        for (size_t b = 0; b < B; b++) mean += ws.xs[b * d + j];
        mean /= (double)B;
        for (size_t b = 0; b < B; b++) sqx += (ws.xs[b * d + j] - mean) * (ws.xs[b * d + j] - mean);
    }
    if (c->arch == SAE_BATCHTOPK && isfinite(minz)) {
        t->theta =
            t->theta_set ? c->threshold_decay * t->theta + (1 - c->threshold_decay) * minz : minz;
        t->theta_set = true;
        for (size_t i = 0; i < n; i++) s->threshold[i] = (float)t->theta;
    }
    t->step++;
    t->tokens += (int64_t)B;
    if (m) {
        memset(m, 0, sizeof *m);
        m->step = t->step;
        m->tokens = t->tokens;
        m->k = k;
        m->lr = lr;
        m->loss = T.total;
        m->mse = T.mse;
        m->fvu = sqx > 0 ? T.mse * (double)B * (double)d / sqx : 0;
        m->l0 = l0 / (double)B;
        m->dead_frac = sae_trainer_dead_fraction(t);
        m->auxk_loss = pr.aux ? T.auxk : 0;
        m->l1_loss = T.l1;
        m->ghost_loss = T.ghost;
        m->grad_norm = gnorm;
        m->threshold = t->theta;
        m->step_s = time_now_s() - t0;
        m->tokens_per_s = m->step_s > 0 ? (double)B / m->step_s : 0;
    }
    ref_ws_free(&ws);
    return 0;
}

/* sae_train: the trainer's life cycle, schedules, initialisation, and the fast CPU
 * training step (see sae_train.h for the math and the public contract).
 *
 * The fast step, for a batch of B tokens:
 *   1. xs = s*x, xc = xs - b_dec; a = xc W_enc^T (tensor_sgemm, the only dense GEMM).
 *   2. Per token (threads): select the latents that carry gradient as "entries"
 *      (main top-k, Multi-TopK extras, AuxK among dead latents, standard's a>0, ghost
 *      dead latents), decode sparsely and form the upstream error rows U (one per
 *      slot: main, Multi-TopK extra, AuxK, ghost).
 *   3. Transpose the entries by latent (a counting sort in token order) and give each
 *      latent to one thread: ga = dz/da * <W_dec[i], U_b>, dW_dec[i] = sum z U_b,
 *      dW_enc[i] = sum ga xc_b, db_enc[i] = sum ga. No atomics, no races, and the
 *      summation order is fixed.
 *   4. db_dec = sum_b U0_b - sum_i db_enc[i] W_enc[i] (both in fixed-size chunks).
 *   5. Dense Adam over every parameter, fused per latent row with the decoder-gradient
 *      projection, the renormalisation, and the zeroing of the touched gradient rows.
 * All reductions run over fixed chunks summed in order, so our results do not depend
 * on the number of threads (OpenBLAS splits the GEMM without splitting its sums). The
 * hot loops have AVX-512 / AVX2 / baseline versions chosen at load time, so results
 * are bit-reproducible on one machine, not across CPU generations. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "sae/sae_kernels.h"
#include "sae/sae_train_internal.h"
#include "tensor/tensor.h"

/* ---- config and schedules ----------------------------------------------------------- */

static const char *const ksched_names[] = {"linear", "cosine", "exp"};

const char *sae_k_schedule_name(enum sae_k_schedule s)
{
    return (unsigned)s < SF_ARRAY_LEN(ksched_names) ? ksched_names[s] : "unknown";
}

int sae_k_schedule_parse(const char *s, enum sae_k_schedule *out)
{
    if (!s) return SF_EINVAL;
    if (!strcmp(s, "exponential")) s = "exp";
    for (size_t i = 0; i < SF_ARRAY_LEN(ksched_names); i++) {
        if (!strcmp(s, ksched_names[i])) {
            *out = (enum sae_k_schedule)i;
            return 0;
        }
    }
    return SF_EINVAL;
}

static const char *const opt_names[] = {"adam", "signsgd_sf"};

const char *sae_optimizer_name(enum sae_optimizer o)
{
    return (unsigned)o < SF_ARRAY_LEN(opt_names) ? opt_names[o] : "unknown";
}

int sae_optimizer_parse(const char *s, enum sae_optimizer *out)
{
    if (!s) return SF_EINVAL;
    for (size_t i = 0; i < SF_ARRAY_LEN(opt_names); i++) {
        if (!strcmp(s, opt_names[i])) {
            *out = (enum sae_optimizer)i;
            return 0;
        }
    }
    return SF_EINVAL;
}

void sae_train_config_default(struct sae_train_config *c, enum sae_arch arch, size_t d_in, size_t n,
                              size_t k)
{
    memset(c, 0, sizeof *c);
    c->arch = arch;
    c->d_in = d_in;
    c->n = n;
    c->k = k;
    c->seed = 0x5AEF10;
    c->lr = 0;
    c->adam_beta1 = 0.9;
    c->adam_beta2 = 0.999;
    c->adam_eps = 6.25e-10;
    c->lr_decay_start = 0.8;
    c->unit_norm_decoder = true;
    c->normalize_input = true;
    c->init_b_dec = true;
    c->init_max_tokens = 8192;
    c->dead_tokens = 0;
    c->fire_threshold = 1e-3;
    c->auxk_alpha = (arch == SAE_TOPK || arch == SAE_BATCHTOPK) ? 1.0 / 32.0 : 0.0;
    c->k_schedule = SAE_KSCHED_LINEAR;
    c->threshold_decay = 0.99;
    c->l1_coeff = 5.0;
    c->optimizer = SAE_OPT_ADAM;
    c->sf_momentum = 0.95;
    c->dead_run_fraction = 0.05;
    c->init_scale_encoder = true;
}

#define LR_ADAM           2e-4
#define LR_SF             5e-3
#define LR_BUDGET_REF     1073741824.0 /* 2^30 tokens: where the published rules hold */
#define SAE_LR_BUDGET_MAX 16.0
#define DEAD_TOKENS_MAX   10000000

double sae_train_config_lr(const struct sae_train_config *c)
{
    if (c->lr > 0) return c->lr;
    const double per_n = 1.0 / sqrt((double)c->n / 16384.0);
    /* schedule-free averaging adapts to the run length itself: sparsify's rule as is */
    if (c->optimizer == SAE_OPT_SIGNSGD_SF) return LR_SF * per_n;
    double budget = 1.0;
    if (c->total_tokens > 0) {
        budget = sqrt(LR_BUDGET_REF / (double)c->total_tokens);
        if (budget < 1) budget = 1;
        if (budget > SAE_LR_BUDGET_MAX) budget = SAE_LR_BUDGET_MAX;
    }
    return LR_ADAM * per_n * budget;
}

int64_t sae_train_config_dead_tokens(const struct sae_train_config *c)
{
    if (c->dead_tokens > 0) return c->dead_tokens;
    if (c->total_tokens <= 0) return DEAD_TOKENS_MAX;
    double v = c->dead_run_fraction * (double)c->total_tokens;
    if (v > DEAD_TOKENS_MAX) v = DEAD_TOKENS_MAX;
    return v < 1 ? 1 : (int64_t)v;
}

size_t sae_train_config_k_aux(const struct sae_train_config *c)
{
    size_t ka = c->k_aux;
    if (ka == 0) {
        double half = (double)c->d_in / 2.0;
        size_t p = 1;
        while ((double)(p * 2) <= half) p *= 2;
        ka = (half - (double)p < (double)(2 * p) - half) ? p : 2 * p;
    }
    return ka < c->n ? ka : c->n;
}

size_t sae_train_k_at(const struct sae_train_config *c, int64_t tokens)
{
    size_t k = c->k < c->n ? c->k : c->n;
    if (c->arch == SAE_STANDARD || c->arch == SAE_JUMPRELU) return k;
    if (c->k0 <= k || c->k_anneal_tokens <= 0 || tokens >= c->k_anneal_tokens) return k;
    double k0 = (double)(c->k0 < c->n ? c->k0 : c->n), kf = (double)k;
    double f = (double)tokens / (double)c->k_anneal_tokens, v;
    switch (c->k_schedule) {
    case SAE_KSCHED_COSINE:
        v = kf + (k0 - kf) * 0.5 * (1.0 + cos(M_PI * f));
        break;
    case SAE_KSCHED_EXP:
        v = k0 * pow(kf / k0, f);
        break;
    default:
        v = k0 + (kf - k0) * f;
        break;
    }
    double r = floor(v + 0.5);
    if (r < kf) r = kf;
    if (r > k0) r = k0;
    return (size_t)r;
}

double sae_train_lr_at(const struct sae_train_config *c, int64_t tokens)
{
    double lr = sae_train_config_lr(c);
    if (c->lr_warmup_tokens > 0 && tokens < c->lr_warmup_tokens)
        lr *= (double)(tokens + 1) / (double)c->lr_warmup_tokens;
    if (c->total_tokens > 0 && c->lr_decay_start < 1.0) {
        double start = c->lr_decay_start * (double)c->total_tokens;
        if ((double)tokens > start) {
            double f =
                ((double)c->total_tokens - (double)tokens) / ((double)c->total_tokens - start);
            lr *= f > 0 ? f : 0;
        }
    }
    return lr;
}

#define BAD(field, ...)                                                                            \
    do {                                                                                           \
        log_error("sae_config_invalid", "field=" field " " __VA_ARGS__);                           \
        return SF_EINVAL;                                                                          \
    } while (0)

int sae_train_config_validate(const struct sae_train_config *c)
{
    if (!c) return SF_EINVAL;
    if (c->arch != SAE_TOPK && c->arch != SAE_BATCHTOPK && c->arch != SAE_STANDARD)
        BAD("arch", "arch=%s reason=\"trainable: topk, batchtopk, standard\"",
            sae_arch_name(c->arch));
    if (c->d_in == 0 || c->d_in > (1u << 20)) BAD("d_in", "d_in=%zu", c->d_in);
    if (c->n == 0 || c->n > (1u << 28)) BAD("n", "n=%zu", c->n);
    size_t nd;
    if (!size_mul_ok(c->n, c->d_in, &nd) || nd > ((size_t)1 << 34)) BAD("n", "n*d_in too large");
    if (c->arch != SAE_STANDARD && (c->k == 0 || c->k > c->n)) BAD("k", "k=%zu n=%zu", c->k, c->n);
    if (c->k0 > c->n) BAD("k0", "k0=%zu n=%zu", c->k0, c->n);
    if (!(c->lr >= 0 && c->lr < 1)) BAD("lr", "lr=%g", c->lr);
    if (!(c->adam_beta1 >= 0 && c->adam_beta1 < 1)) BAD("adam_beta1", "v=%g", c->adam_beta1);
    if (!(c->adam_beta2 >= 0 && c->adam_beta2 < 1)) BAD("adam_beta2", "v=%g", c->adam_beta2);
    if (!(c->adam_eps > 0 && c->adam_eps < 1)) BAD("adam_eps", "v=%g", c->adam_eps);
    if (c->lr_warmup_tokens < 0 || c->total_tokens < 0 || c->k_anneal_tokens < 0)
        BAD("tokens", "reason=negative");
    if (!(c->lr_decay_start >= 0 && c->lr_decay_start <= 1e9)) BAD("lr_decay_start", "");
    if (!(c->grad_clip >= 0 && c->grad_clip < 1e30)) BAD("grad_clip", "v=%g", c->grad_clip);
    if (c->init_max_tokens == 0) BAD("init_max_tokens", "v=0");
    if (c->dead_tokens < 0) BAD("dead_tokens", "v=%lld", (long long)c->dead_tokens);
    if (!(c->dead_run_fraction > 0 && c->dead_run_fraction <= 1))
        BAD("dead_run_fraction", "v=%g", c->dead_run_fraction);
    if ((unsigned)c->optimizer > SAE_OPT_SIGNSGD_SF) BAD("optimizer", "v=%d", (int)c->optimizer);
    if (!(c->sf_momentum >= 0 && c->sf_momentum < 1)) BAD("sf_momentum", "v=%g", c->sf_momentum);
    if (!(c->fire_threshold >= 0 && c->fire_threshold < 1e30)) BAD("fire_threshold", "");
    if (!(c->auxk_alpha >= 0 && c->auxk_alpha < 1e6)) BAD("auxk_alpha", "v=%g", c->auxk_alpha);
    if (c->k_aux > c->n) BAD("k_aux", "k_aux=%zu n=%zu", c->k_aux, c->n);
    if ((unsigned)c->k_schedule > SAE_KSCHED_EXP) BAD("k_schedule", "v=%d", (int)c->k_schedule);
    if (c->multi_topk && c->arch != SAE_TOPK) BAD("multi_topk", "reason=\"topk only\"");
    if (!(c->threshold_decay >= 0 && c->threshold_decay < 1)) BAD("threshold_decay", "");
    if (!(c->l1_coeff >= 0 && c->l1_coeff < 1e9)) BAD("l1_coeff", "v=%g", c->l1_coeff);
    if (c->ghost_grads && c->arch != SAE_STANDARD) BAD("ghost_grads", "reason=\"standard only\"");
    return 0;
}

/* ---- life cycle ----------------------------------------------------------------------- */

struct sae_trainer *sae_trainer_alloc(const struct sae_train_config *cfg)
{
    if (sae_train_config_validate(cfg) != 0) return NULL;
    struct sae_trainer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->cfg = *cfg;
    t->cfg.dead_tokens = sae_train_config_dead_tokens(cfg); /* the rule, made concrete */
    const size_t n = cfg->n, d = cfg->d_in, nd = n * d;
    t->sae = sae_new(cfg->arch, d, n, cfg->k);
    t->m_W_enc = sae_alloc_big(nd, sizeof(float));
    t->v_W_enc = sae_alloc_big(nd, sizeof(float));
    t->m_W_dec = sae_alloc_big(nd, sizeof(float));
    t->v_W_dec = sae_alloc_big(nd, sizeof(float));
    t->m_b_enc = calloc(n, sizeof(float));
    t->v_b_enc = calloc(n, sizeof(float));
    t->m_b_dec = calloc(d, sizeof(float));
    t->v_b_dec = calloc(d, sizeof(float));
    t->since_fire = calloc(n, sizeof(int64_t));
    if (!t->sae || !t->m_W_enc || !t->v_W_enc || !t->m_W_dec || !t->v_W_dec || !t->m_b_enc ||
        !t->v_b_enc || !t->m_b_dec || !t->v_b_dec || !t->since_fire) {
        log_error("sae_trainer_oom", "n=%zu d_in=%zu", n, d);
        sae_trainer_destroy(&t);
        return NULL;
    }
    rng_seed(&t->rng, cfg->seed);
    return t;
}

struct sae_trainer *sae_trainer_new(const struct sae_train_config *cfg)
{
    struct sae_trainer *t = sae_trainer_alloc(cfg);
    if (!t) return NULL;
    const size_t nd = cfg->n * cfg->d_in;
    /* W_dec: random unit rows; W_enc = W_dec (tied init in our (n, d) layout) */
    struct sae *s = t->sae;
    for (size_t i = 0; i < nd; i++) s->W_dec[i] = rng_normal(&t->rng);
    sae_normalize_decoder(s);
    memcpy(s->W_enc, s->W_dec, nd * sizeof(float));
    return t;
}

void sae_trainer_destroy(struct sae_trainer **tp)
{
    if (!tp || !*tp) return;
    struct sae_trainer *t = *tp;
    sae_destroy(&t->sae);
    free(t->m_W_enc);
    free(t->v_W_enc);
    free(t->m_W_dec);
    free(t->v_W_dec);
    free(t->m_b_enc);
    free(t->v_b_enc);
    free(t->m_b_dec);
    free(t->v_b_dec);
    free(t->since_fire);
    sae_trainer_fast_free(&t->fast);
    free(t);
    *tp = NULL;
}

const struct sae *sae_trainer_sae(const struct sae_trainer *t)
{
    return t->sae;
}
const struct sae_train_config *sae_trainer_config(const struct sae_trainer *t)
{
    return &t->cfg;
}
int64_t sae_trainer_tokens(const struct sae_trainer *t)
{
    return t->tokens;
}
int64_t sae_trainer_steps(const struct sae_trainer *t)
{
    return t->step;
}
const int64_t *sae_trainer_since_fire(const struct sae_trainer *t)
{
    return t->since_fire;
}
void sae_trainer_set_meta(struct sae_trainer *t, const struct sae_meta *meta)
{
    t->sae->meta = *meta;
}

bool sae_trainer_is_dead(const struct sae_trainer *t, size_t i)
{
    return t->since_fire[i] >= t->cfg.dead_tokens;
}

size_t sae_trainer_count_dead(const struct sae_trainer *t)
{
    size_t c = 0;
    for (size_t i = 0; i < t->cfg.n; i++) c += sae_trainer_is_dead(t, i);
    return c;
}

double sae_trainer_dead_fraction(const struct sae_trainer *t)
{
    return (double)sae_trainer_count_dead(t) / (double)t->cfg.n;
}

struct sae *sae_trainer_export(const struct sae_trainer *t)
{
    struct sae *c = sae_clone(t->sae);
    if (!c) return NULL;
    if (t->cfg.optimizer == SAE_OPT_SIGNSGD_SF && t->step > 0) {
        /* the averaged point x (see sae_train.h) */
        const size_t n = t->cfg.n, d = t->cfg.d_in;
        memcpy(c->W_enc, t->v_W_enc, n * d * sizeof(float));
        memcpy(c->W_dec, t->v_W_dec, n * d * sizeof(float));
        memcpy(c->b_enc, t->v_b_enc, n * sizeof(float));
        memcpy(c->b_dec, t->v_b_dec, d * sizeof(float));
    }
    sae_fold_norm(c);
    if (t->cfg.arch == SAE_BATCHTOPK) {
        struct sae *j = sae_new(SAE_JUMPRELU, c->d_in, c->n, 0);
        if (!j) {
            sae_destroy(&c);
            return NULL;
        }
        float *thr = j->threshold;
        j->threshold = NULL;
        /* move the weights over; the jumprelu threshold is theta everywhere */
        free(j->W_enc);
        free(j->W_dec);
        free(j->b_enc);
        free(j->b_dec);
        j->W_enc = c->W_enc;
        j->W_dec = c->W_dec;
        j->b_enc = c->b_enc;
        j->b_dec = c->b_dec;
        j->meta = c->meta;
        c->W_enc = c->W_dec = c->b_enc = c->b_dec = NULL;
        sae_destroy(&c);
        for (size_t i = 0; i < j->n; i++) thr[i] = (float)t->theta;
        j->threshold = thr;
        return j;
    }
    return c;
}

/* ---- initialisation from data --------------------------------------------------------- */

/* Weiszfeld iterations for the geometric median of N points (N, d) into y (d). */
static int geometric_median(const float *x, size_t N, size_t d, float scale, double *y)
{
    const size_t nch = (N + 255) / 256;
    double *w = malloc(N * sizeof *w);
    double *part = calloc(nch * (d + 1), sizeof *part);
    double *ny = malloc(d * sizeof *ny);
    if (!w || !part || !ny) {
        free(w);
        free(part);
        free(ny);
        return SF_ENOMEM;
    }
    /* start at the mean */
    for (size_t j = 0; j < d; j++) y[j] = 0;
    for (size_t b = 0; b < N; b++)
        for (size_t j = 0; j < d; j++) y[j] += (double)x[b * d + j] * scale;
    for (size_t j = 0; j < d; j++) y[j] /= (double)N;
    for (int it = 0; it < 200; it++) {
#pragma omp parallel for schedule(static) if (N * d >= (1u << 18))
        for (size_t c = 0; c < nch; c++) {
            double *p = part + c * (d + 1);
            memset(p, 0, (d + 1) * sizeof *p);
            size_t e = (c + 1) * 256 < N ? (c + 1) * 256 : N;
            for (size_t b = c * 256; b < e; b++) {
                double ss = 0;
                for (size_t j = 0; j < d; j++) {
                    double t = (double)x[b * d + j] * scale - y[j];
                    ss += t * t;
                }
                double wb = 1.0 / fmax(sqrt(ss), 1e-12);
                w[b] = wb;
                for (size_t j = 0; j < d; j++) p[j] += wb * (double)x[b * d + j] * scale;
                p[d] += wb;
            }
        }
        for (size_t j = 0; j <= d; j++) {
            double acc = 0;
            for (size_t c = 0; c < nch; c++) acc += part[c * (d + 1) + j];
            if (j < d)
                ny[j] = acc;
            else
                for (size_t q = 0; q < d; q++) ny[q] /= acc;
        }
        double delta = 0, norm = 0;
        for (size_t j = 0; j < d; j++) {
            delta += (ny[j] - y[j]) * (ny[j] - y[j]);
            norm += ny[j] * ny[j];
            y[j] = ny[j];
        }
        if (sqrt(delta) <= 1e-7 * (1.0 + sqrt(norm))) break;
    }
    free(w);
    free(part);
    free(ny);
    return 0;
}

/* The least-squares scale of the encoder at init: with b_enc = 0 the selection does
 * not depend on a > 0 and the reconstruction is b_dec + a v(x), so the a minimising
 * sum ||b_dec + a v - xs||^2 over the sample is sum <v, xc> / sum ||v||^2. Uses up to
 * 2048 tokens; W_enc *= a when a is positive and finite. */
static int init_encoder_scale(struct sae_trainer *t, const float *x, size_t N, float scale,
                              double *alpha)
{
    const struct sae_train_config *c = &t->cfg;
    struct sae *s = t->sae;
    const size_t d = c->d_in, n = c->n;
    if (N > 2048) N = 2048;
    const size_t k = sae_train_k_at(c, 0);
    const bool standard = c->arch == SAE_STANDARD;
    float *xc = malloc(N * d * sizeof *xc), *a = malloc(N * n * sizeof *a);
    float *sv = malloc((2 * n + sae_topk_scratch(k) + k) * sizeof *sv);
    uint32_t *si = malloc((2 * n + sae_topk_scratch(k) + k) * sizeof *si);
    double *v = malloc(d * sizeof *v);
    int rc = xc && a && sv && si && v ? 0 : SF_ENOMEM;
    double num = 0, den = 0;
    if (rc == 0) {
        for (size_t b = 0; b < N; b++)
            for (size_t j = 0; j < d; j++) xc[b * d + j] = x[b * d + j] * scale - s->b_dec[j];
        tensor_sgemm(false, true, N, n, d, 1.0f, xc, d, s->W_enc, d, 0.0f, a, n);
        uint32_t *idx = si + 2 * n + sae_topk_scratch(k);
        float *val = sv + 2 * n + sae_topk_scratch(k);
        for (size_t b = 0; b < N; b++) {
            const float *ar = a + b * n;
            for (size_t j = 0; j < d; j++) v[j] = 0;
            if (standard) {
                for (size_t i = 0; i < n; i++)
                    if (ar[i] + s->b_enc[i] > 0)
                        for (size_t j = 0; j < d; j++)
                            v[j] += (double)(ar[i] + s->b_enc[i]) * s->W_dec[i * d + j];
            } else {
                size_t got = sae_topk_row(ar, s->b_enc, NULL, n, k, idx, val, si, sv);
                for (size_t q = 0; q < got; q++)
                    if (val[q] > 0)
                        for (size_t j = 0; j < d; j++)
                            v[j] += (double)val[q] * s->W_dec[(size_t)idx[q] * d + j];
            }
            for (size_t j = 0; j < d; j++) {
                num += v[j] * xc[b * d + j];
                den += v[j] * v[j];
            }
        }
    }
    free(xc);
    free(a);
    free(sv);
    free(si);
    free(v);
    if (rc) return rc;
    *alpha = 1.0;
    if (den > 0 && num > 0 && isfinite(num / den)) {
        *alpha = num / den;
        for (size_t q = 0; q < n * d; q++) s->W_enc[q] = (float)(s->W_enc[q] * *alpha);
    }
    return 0;
}

int sae_trainer_init_data(struct sae_trainer *t, const float *x, size_t N)
{
    if (t->step > 0 || t->initialized) return SF_ESTATE;
    if (!x || N == 0) return SF_EINVAL;
    const size_t d = t->cfg.d_in;
    if (N > t->cfg.init_max_tokens) N = t->cfg.init_max_tokens;
    for (size_t i = 0; i < N * d; i++)
        if (!isfinite(x[i])) {
            log_error("sae_input_invalid", "reason=non-finite index=%zu", i);
            return SF_EINVAL;
        }
    double s = 1.0;
    if (t->cfg.normalize_input) {
        double ss = 0;
        for (size_t i = 0; i < N * d; i++) ss += (double)x[i] * x[i];
        double mean_sq = ss / (double)N;
        s = mean_sq > 0 ? sqrt((double)d / mean_sq) : 1.0;
    }
    t->sae->norm_scale = (float)s;
    if (t->cfg.init_b_dec) {
        double *y = malloc(d * sizeof *y);
        if (!y) return SF_ENOMEM;
        int rc = geometric_median(x, N, d, (float)s, y);
        if (rc == 0)
            for (size_t j = 0; j < d; j++) t->sae->b_dec[j] = (float)y[j];
        free(y);
        if (rc) return rc;
    }
    double alpha = 1.0;
    if (t->cfg.init_scale_encoder) {
        int rc = init_encoder_scale(t, x, N, (float)s, &alpha);
        if (rc) return rc;
    }
    t->initialized = true;
    log_info("sae_init", "tokens=%zu norm_scale=%.6g encoder_scale=%.6g", N, s, alpha);
    return 0;
}

int sae_trainer_prepare(struct sae_trainer *t, const float *x, size_t B)
{
    if (!t || !x || B == 0 || B > (1u << 24)) return SF_EINVAL;
    const size_t d = t->cfg.d_in;
    int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (B * d >= (1u << 18))
    for (size_t i = 0; i < B * d; i++) bad |= !isfinite(x[i]);
    if (bad) {
        log_error("sae_input_invalid", "reason=non-finite B=%zu", B);
        return SF_EINVAL;
    }
    if (t->cfg.arch == SAE_BATCHTOPK && (uint64_t)B * t->cfg.n >= UINT32_MAX) {
        log_error("sae_batch_too_large", "B=%zu n=%zu reason=\"batchtopk needs B*n < 2^32\"", B,
                  t->cfg.n);
        return SF_EINVAL;
    }
    if (!t->initialized) return sae_trainer_init_data(t, x, B);
    return 0;
}

void sae_trainer_sf_start(struct sae_trainer *t)
{
    if (t->cfg.optimizer != SAE_OPT_SIGNSGD_SF || t->step > 0) return;
    const struct sae *s = t->sae;
    const size_t nd = t->cfg.n * t->cfg.d_in;
    memcpy(t->m_W_enc, s->W_enc, nd * sizeof(float));
    memcpy(t->v_W_enc, s->W_enc, nd * sizeof(float));
    memcpy(t->m_W_dec, s->W_dec, nd * sizeof(float));
    memcpy(t->v_W_dec, s->W_dec, nd * sizeof(float));
    memcpy(t->m_b_enc, s->b_enc, t->cfg.n * sizeof(float));
    memcpy(t->v_b_enc, s->b_enc, t->cfg.n * sizeof(float));
    memcpy(t->m_b_dec, s->b_dec, t->cfg.d_in * sizeof(float));
    memcpy(t->v_b_dec, s->b_dec, t->cfg.d_in * sizeof(float));
    t->sf_wsum = 0;
}

double sae_trainer_sf_coef(struct sae_trainer *t, double lr, bool commit)
{
    double w = lr * lr, sum = t->sf_wsum + w;
    if (commit) t->sf_wsum = sum;
    return sum > 0 ? w / sum : 0.0;
}

struct sae_adam_coef sae_trainer_adam_coef(const struct sae_trainer *t, double lr)
{
    struct sae_adam_coef c;
    c.lr = lr;
    c.b1 = t->cfg.adam_beta1;
    c.b2 = t->cfg.adam_beta2;
    c.eps = t->cfg.adam_eps;
    double step = (double)(t->step + 1);
    double bc1 = 1.0 - pow(c.b1, step), bc2 = 1.0 - pow(c.b2, step);
    c.step_size = lr / bc1;
    c.bc2_sqrt = sqrt(bc2);
    return c;
}

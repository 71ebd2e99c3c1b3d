/* sae_ckpt: trainer checkpoints as one safetensors file.
 *
 * Tensors (row-major, little-endian):
 *   W_enc, W_dec [n, d_in] F32; b_enc [n] F32; b_dec [d_in] F32; threshold [n] F32
 *   (batchtopk only); adam.m.<name> / adam.v.<name> for each of the four weights (F32,
 *   same shapes), or with optimizer = signsgd_sf sf.z.<name> / sf.x.<name> (the
 *   schedule-free sequences) and sf.wsum [1] F64; since_fire [n] I64; state.i64 [4] I64 = (step,
 * tokens, initialized, theta_set); state.f64 [2] F64 = (theta, norm_scale); rng [4] U64 (xoshiro
 * state).
 * __metadata__: format = "saeflow.sae_checkpoint", version = "1", every config field
 *   under its struct name (doubles with 17 significant digits, so they read back
 *   exactly), and the provenance (meta.model_name, meta.hook_name, ...).
 * Everything a resumed run needs is here, so it continues bit-identically. The
 * loader checks every key, dtype, shape and value range. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "safetensors/safetensors.h"
#include "sae/sae_train_internal.h"

#define CKPT_FORMAT  "saeflow.sae_checkpoint"
#define CKPT_VERSION "1"

static int set_i(struct st_writer *w, const char *key, long long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%lld", v);
    return st_writer_set_metadata(w, key, buf);
}

static int set_u(struct st_writer *w, const char *key, unsigned long long v)
{
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", v);
    return st_writer_set_metadata(w, key, buf);
}

static int set_d(struct st_writer *w, const char *key, double v)
{
    char buf[40];
    snprintf(buf, sizeof buf, "%.17g", v);
    return st_writer_set_metadata(w, key, buf);
}

/* optimiser state tensors: m/v of Adam, or z/x of schedule-free SignSGD */
static const char *const adam_names[8] = {"adam.m.W_enc", "adam.v.W_enc", "adam.m.W_dec",
                                          "adam.v.W_dec", "adam.m.b_enc", "adam.v.b_enc",
                                          "adam.m.b_dec", "adam.v.b_dec"};
static const char *const sf_names[8] = {"sf.z.W_enc", "sf.x.W_enc", "sf.z.W_dec", "sf.x.W_dec",
                                        "sf.z.b_enc", "sf.x.b_enc", "sf.z.b_dec", "sf.x.b_dec"};

static bool all_finite(const float *p, size_t n, bool nonneg)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(p[i]) || (nonneg && p[i] < 0)) return false;
    return true;
}

bool sae_trainer_finite(const struct sae_trainer *t)
{
    const struct sae *s = t->sae;
    const size_t n = t->cfg.n, d = t->cfg.d_in;
    return all_finite(s->W_enc, n * d, false) && all_finite(s->W_dec, n * d, false) &&
           all_finite(s->b_enc, n, false) && all_finite(s->b_dec, d, false) &&
           (!s->threshold || all_finite(s->threshold, n, false)) &&
           all_finite(t->m_W_enc, n * d, false) && all_finite(t->v_W_enc, n * d, false) &&
           all_finite(t->m_W_dec, n * d, false) && all_finite(t->v_W_dec, n * d, false) &&
           all_finite(t->m_b_enc, n, false) && all_finite(t->v_b_enc, n, false) &&
           all_finite(t->m_b_dec, d, false) && all_finite(t->v_b_dec, d, false) &&
           isfinite(t->theta) && isfinite(s->norm_scale);
}

int sae_trainer_set_total_tokens(struct sae_trainer *t, int64_t total)
{
    if (!t || total < 0) return SF_EINVAL;
    t->cfg.total_tokens = total;
    return 0;
}

int sae_trainer_save(const struct sae_trainer *t, const char *path)
{
    if (!t || !path) return SF_EINVAL;
    /* a diverged trainer is never written: the last good checkpoint stays the latest */
    if (!sae_trainer_finite(t)) {
        log_error("sae_ckpt_refused", "path=%s reason=non_finite_weights step=%lld", path,
                  (long long)t->step);
        return SF_ERANGE;
    }
    const struct sae_train_config *c = &t->cfg;
    const struct sae *s = t->sae;
    struct st_writer *w = st_writer_new();
    if (!w) return SF_ENOMEM;
    const int64_t nd[2] = {(int64_t)c->n, (int64_t)c->d_in}, n1[1] = {(int64_t)c->n},
                  d1[1] = {(int64_t)c->d_in}, four[1] = {4}, two[1] = {2};
    int64_t si[4] = {t->step, t->tokens, t->initialized, t->theta_set};
    double sf[2] = {t->theta, (double)s->norm_scale};
    int rc = 0;
    rc |= st_writer_add(w, "W_enc", ST_F32, nd, 2, s->W_enc);
    rc |= st_writer_add(w, "W_dec", ST_F32, nd, 2, s->W_dec);
    rc |= st_writer_add(w, "b_enc", ST_F32, n1, 1, s->b_enc);
    rc |= st_writer_add(w, "b_dec", ST_F32, d1, 1, s->b_dec);
    if (s->threshold) rc |= st_writer_add(w, "threshold", ST_F32, n1, 1, s->threshold);
    const char *const *on = c->optimizer == SAE_OPT_SIGNSGD_SF ? sf_names : adam_names;
    rc |= st_writer_add(w, on[0], ST_F32, nd, 2, t->m_W_enc);
    rc |= st_writer_add(w, on[1], ST_F32, nd, 2, t->v_W_enc);
    rc |= st_writer_add(w, on[2], ST_F32, nd, 2, t->m_W_dec);
    rc |= st_writer_add(w, on[3], ST_F32, nd, 2, t->v_W_dec);
    rc |= st_writer_add(w, on[4], ST_F32, n1, 1, t->m_b_enc);
    rc |= st_writer_add(w, on[5], ST_F32, n1, 1, t->v_b_enc);
    rc |= st_writer_add(w, on[6], ST_F32, d1, 1, t->m_b_dec);
    rc |= st_writer_add(w, on[7], ST_F32, d1, 1, t->v_b_dec);
    const int64_t one[1] = {1};
    if (c->optimizer == SAE_OPT_SIGNSGD_SF)
        rc |= st_writer_add(w, "sf.wsum", ST_F64, one, 1, &t->sf_wsum);
    rc |= st_writer_add(w, "since_fire", ST_I64, n1, 1, t->since_fire);
    rc |= st_writer_add(w, "state.i64", ST_I64, four, 1, si);
    rc |= st_writer_add(w, "state.f64", ST_F64, two, 1, sf);
    rc |= st_writer_add(w, "rng", ST_U64, four, 1, t->rng.s);
    rc |= st_writer_set_metadata(w, "format", CKPT_FORMAT);
    rc |= st_writer_set_metadata(w, "version", CKPT_VERSION);
    rc |= st_writer_set_metadata(w, "arch", sae_arch_name(c->arch));
    rc |= set_u(w, "d_in", c->d_in);
    rc |= set_u(w, "n", c->n);
    rc |= set_u(w, "k", c->k);
    rc |= set_u(w, "seed", c->seed);
    rc |= set_d(w, "lr", c->lr);
    rc |= set_d(w, "adam_beta1", c->adam_beta1);
    rc |= set_d(w, "adam_beta2", c->adam_beta2);
    rc |= set_d(w, "adam_eps", c->adam_eps);
    rc |= set_i(w, "lr_warmup_tokens", c->lr_warmup_tokens);
    rc |= set_i(w, "total_tokens", c->total_tokens);
    rc |= set_d(w, "lr_decay_start", c->lr_decay_start);
    rc |= set_d(w, "grad_clip", c->grad_clip);
    rc |= set_i(w, "unit_norm_decoder", c->unit_norm_decoder);
    rc |= set_i(w, "normalize_input", c->normalize_input);
    rc |= set_i(w, "init_b_dec", c->init_b_dec);
    rc |= set_u(w, "init_max_tokens", c->init_max_tokens);
    rc |= set_i(w, "dead_tokens", c->dead_tokens);
    rc |= set_d(w, "fire_threshold", c->fire_threshold);
    rc |= set_d(w, "auxk_alpha", c->auxk_alpha);
    rc |= set_u(w, "k_aux", c->k_aux);
    rc |= set_u(w, "k0", c->k0);
    rc |= set_i(w, "k_anneal_tokens", c->k_anneal_tokens);
    rc |= st_writer_set_metadata(w, "k_schedule", sae_k_schedule_name(c->k_schedule));
    rc |= set_i(w, "multi_topk", c->multi_topk);
    rc |= set_d(w, "threshold_decay", c->threshold_decay);
    rc |= set_d(w, "l1_coeff", c->l1_coeff);
    rc |= set_i(w, "ghost_grads", c->ghost_grads);
    rc |= st_writer_set_metadata(w, "optimizer", sae_optimizer_name(c->optimizer));
    rc |= set_d(w, "sf_momentum", c->sf_momentum);
    rc |= set_d(w, "dead_run_fraction", c->dead_run_fraction);
    rc |= set_i(w, "init_scale_encoder", c->init_scale_encoder);
    /* derived values, for people reading the file (not read back) */
    rc |= set_u(w, "current_k", sae_train_k_at(c, t->tokens));
    rc |= set_d(w, "current_lr", sae_train_lr_at(c, t->tokens));
    rc |= set_d(w, "effective_lr", sae_train_config_lr(c)); /* the rule's value when lr = 0 */
    const struct sae_meta *m = &s->meta;
    rc |= st_writer_set_metadata(w, "meta.model_name", m->model_name);
    rc |= st_writer_set_metadata(w, "meta.hook_name", m->hook_name);
    rc |= set_i(w, "meta.hook_layer", m->hook_layer);
    rc |= set_i(w, "meta.context_size", m->context_size);
    rc |= set_i(w, "meta.prepend_bos", m->prepend_bos);
    rc |= set_i(w, "meta.exclude_special_tokens", m->exclude_special_tokens);
    rc |= st_writer_set_metadata(w, "meta.dataset_path", m->dataset_path);
    if (rc == 0)
        rc = st_writer_write(w, path);
    else
        rc = SF_ENOMEM;
    st_writer_destroy(&w);
    if (rc == 0)
        log_info("sae_ckpt_saved", "path=%s step=%lld tokens=%lld", path, (long long)t->step,
                 (long long)t->tokens);
    else
        log_error("sae_ckpt_save_failed", "path=%s rc=%d", path, rc);
    return rc;
}

/* ---- loading ----------------------------------------------------------------------- */

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        log_error("sae_ckpt_invalid", __VA_ARGS__);                                                \
        return SF_EFORMAT;                                                                         \
    } while (0)

static int meta_i64(const struct safetensors *st, const char *key, int64_t lo, int64_t hi,
                    int64_t *out)
{
    const char *v = safetensors_metadata(st, key);
    if (!v) FAIL("reason=missing_key key=%s", key);
    if (parse_i64(v, out) != 0 || *out < lo || *out > hi) FAIL("reason=bad_value key=%s", key);
    return 0;
}

static int meta_size(const struct safetensors *st, const char *key, size_t *out)
{
    int64_t v;
    int rc = meta_i64(st, key, 0, INT64_MAX, &v);
    if (rc == 0) *out = (size_t)v;
    return rc;
}

static int meta_bool(const struct safetensors *st, const char *key, bool *out)
{
    int64_t v;
    int rc = meta_i64(st, key, 0, 1, &v);
    if (rc == 0) *out = v != 0;
    return rc;
}

static int meta_f64(const struct safetensors *st, const char *key, double *out)
{
    const char *v = safetensors_metadata(st, key);
    if (!v) FAIL("reason=missing_key key=%s", key);
    if (parse_f64(v, out) != 0 || !isfinite(*out)) FAIL("reason=bad_value key=%s", key);
    return 0;
}

static int meta_str(const struct safetensors *st, const char *key, char *dst, size_t cap)
{
    const char *v = safetensors_metadata(st, key);
    if (!v) FAIL("reason=missing_key key=%s", key);
    size_t len = strlen(v);
    if (len >= cap) FAIL("reason=too_long key=%s", key);
    memcpy(dst, v, len + 1);
    return 0;
}

static int config_from_meta(const struct safetensors *st, struct sae_train_config *c,
                            struct sae_meta *m)
{
    const char *fmt = safetensors_metadata(st, "format");
    const char *ver = safetensors_metadata(st, "version");
    if (!fmt || strcmp(fmt, CKPT_FORMAT) != 0) FAIL("reason=not_a_checkpoint");
    if (!ver || strcmp(ver, CKPT_VERSION) != 0) FAIL("reason=unsupported_version");
    memset(c, 0, sizeof *c);
    memset(m, 0, sizeof *m);
    if (sae_arch_parse(safetensors_metadata(st, "arch"), &c->arch) != 0) FAIL("reason=bad_arch");
    if (sae_k_schedule_parse(safetensors_metadata(st, "k_schedule"), &c->k_schedule) != 0)
        FAIL("reason=bad_k_schedule");
    const char *sv = safetensors_metadata(st, "seed");
    char *end = NULL;
    if (!sv || !*sv || *sv == '-') FAIL("reason=bad_value key=seed");
    unsigned long long u = strtoull(sv, &end, 10);
    if (*end) FAIL("reason=bad_value key=seed");
    c->seed = u;
    int rc = 0;
    if ((rc = meta_size(st, "d_in", &c->d_in)) || (rc = meta_size(st, "n", &c->n)) ||
        (rc = meta_size(st, "k", &c->k)) || (rc = meta_f64(st, "lr", &c->lr)) ||
        (rc = meta_f64(st, "adam_beta1", &c->adam_beta1)) ||
        (rc = meta_f64(st, "adam_beta2", &c->adam_beta2)) ||
        (rc = meta_f64(st, "adam_eps", &c->adam_eps)) ||
        (rc = meta_i64(st, "lr_warmup_tokens", 0, INT64_MAX, &c->lr_warmup_tokens)) ||
        (rc = meta_i64(st, "total_tokens", 0, INT64_MAX, &c->total_tokens)) ||
        (rc = meta_f64(st, "lr_decay_start", &c->lr_decay_start)) ||
        (rc = meta_f64(st, "grad_clip", &c->grad_clip)) ||
        (rc = meta_bool(st, "unit_norm_decoder", &c->unit_norm_decoder)) ||
        (rc = meta_bool(st, "normalize_input", &c->normalize_input)) ||
        (rc = meta_bool(st, "init_b_dec", &c->init_b_dec)) ||
        (rc = meta_size(st, "init_max_tokens", &c->init_max_tokens)) ||
        (rc = meta_i64(st, "dead_tokens", 1, INT64_MAX, &c->dead_tokens)) ||
        (rc = meta_f64(st, "fire_threshold", &c->fire_threshold)) ||
        (rc = meta_f64(st, "auxk_alpha", &c->auxk_alpha)) ||
        (rc = meta_size(st, "k_aux", &c->k_aux)) || (rc = meta_size(st, "k0", &c->k0)) ||
        (rc = meta_i64(st, "k_anneal_tokens", 0, INT64_MAX, &c->k_anneal_tokens)) ||
        (rc = meta_bool(st, "multi_topk", &c->multi_topk)) ||
        (rc = meta_f64(st, "threshold_decay", &c->threshold_decay)) ||
        (rc = meta_f64(st, "l1_coeff", &c->l1_coeff)) ||
        (rc = meta_bool(st, "ghost_grads", &c->ghost_grads)))
        return rc;
    /* added later: optional, with the values that older files were trained with */
    c->optimizer = SAE_OPT_ADAM;
    c->sf_momentum = 0.95;
    c->dead_run_fraction = 0.05;
    c->init_scale_encoder = false;
    const char *ov = safetensors_metadata(st, "optimizer");
    if (ov && sae_optimizer_parse(ov, &c->optimizer) != 0) FAIL("reason=bad_optimizer");
    if ((safetensors_metadata(st, "sf_momentum") &&
         (rc = meta_f64(st, "sf_momentum", &c->sf_momentum))) ||
        (safetensors_metadata(st, "dead_run_fraction") &&
         (rc = meta_f64(st, "dead_run_fraction", &c->dead_run_fraction))) ||
        (safetensors_metadata(st, "init_scale_encoder") &&
         (rc = meta_bool(st, "init_scale_encoder", &c->init_scale_encoder))))
        return rc;
    if ((rc = meta_str(st, "meta.model_name", m->model_name, sizeof m->model_name)) ||
        (rc = meta_str(st, "meta.hook_name", m->hook_name, sizeof m->hook_name)) ||
        (rc = meta_i64(st, "meta.hook_layer", INT64_MIN, INT64_MAX, &m->hook_layer)) ||
        (rc = meta_i64(st, "meta.context_size", INT64_MIN, INT64_MAX, &m->context_size)) ||
        (rc = meta_bool(st, "meta.prepend_bos", &m->prepend_bos)) ||
        (rc = meta_bool(st, "meta.exclude_special_tokens", &m->exclude_special_tokens)) ||
        (rc = meta_str(st, "meta.dataset_path", m->dataset_path, sizeof m->dataset_path)))
        return rc;
    return 0;
}

/* Copies tensor `name` (dtype, shape exactly as expected) into dst. */
static int take(const struct safetensors *st, const char *name, enum st_dtype dtype, size_t d0,
                size_t d1, void *dst)
{
    const struct st_tensor *t = safetensors_find(st, name);
    if (!t) FAIL("reason=missing_tensor name=%s", name);
    size_t ndim = d1 ? 2 : 1;
    if (t->dtype != dtype || t->ndim != ndim || t->shape[0] != (int64_t)d0 ||
        (d1 && t->shape[1] != (int64_t)d1))
        FAIL("reason=bad_tensor name=%s", name);
    memcpy(dst, t->data, t->nbytes);
    return 0;
}

static int load_from(const struct safetensors *st, struct sae_trainer **out)
{
    struct sae_train_config c;
    struct sae_meta m;
    int rc = config_from_meta(st, &c, &m);
    if (rc) return rc;
    if (sae_train_config_validate(&c) != 0) FAIL("reason=bad_config");
    struct sae_trainer *t = sae_trainer_alloc(&c);
    if (!t) return SF_ENOMEM;
    struct sae *s = t->sae;
    s->meta = m;
    const size_t n = c.n, d = c.d_in;
    const bool is_sf = c.optimizer == SAE_OPT_SIGNSGD_SF;
    const char *const *on = is_sf ? sf_names : adam_names;
    int64_t si[4];
    double sf[2];
    if ((rc = take(st, "W_enc", ST_F32, n, d, s->W_enc)) ||
        (rc = take(st, "W_dec", ST_F32, n, d, s->W_dec)) ||
        (rc = take(st, "b_enc", ST_F32, n, 0, s->b_enc)) ||
        (rc = take(st, "b_dec", ST_F32, d, 0, s->b_dec)) ||
        (s->threshold && (rc = take(st, "threshold", ST_F32, n, 0, s->threshold))) ||
        (rc = take(st, on[0], ST_F32, n, d, t->m_W_enc)) ||
        (rc = take(st, on[1], ST_F32, n, d, t->v_W_enc)) ||
        (rc = take(st, on[2], ST_F32, n, d, t->m_W_dec)) ||
        (rc = take(st, on[3], ST_F32, n, d, t->v_W_dec)) ||
        (rc = take(st, on[4], ST_F32, n, 0, t->m_b_enc)) ||
        (rc = take(st, on[5], ST_F32, n, 0, t->v_b_enc)) ||
        (rc = take(st, on[6], ST_F32, d, 0, t->m_b_dec)) ||
        (rc = take(st, on[7], ST_F32, d, 0, t->v_b_dec)) ||
        (is_sf && (rc = take(st, "sf.wsum", ST_F64, 1, 0, &t->sf_wsum))) ||
        (rc = take(st, "since_fire", ST_I64, n, 0, t->since_fire)) ||
        (rc = take(st, "state.i64", ST_I64, 4, 0, si)) ||
        (rc = take(st, "state.f64", ST_F64, 2, 0, sf)) ||
        (rc = take(st, "rng", ST_U64, 4, 0, t->rng.s))) {
        sae_trainer_destroy(&t);
        return rc;
    }
    const char *bad = NULL;
    if (!all_finite(s->W_enc, n * d, false) || !all_finite(s->W_dec, n * d, false) ||
        !all_finite(s->b_enc, n, false) || !all_finite(s->b_dec, d, false))
        bad = "weights";
    else if (s->threshold && !all_finite(s->threshold, n, false))
        bad = "threshold";
    else if (!all_finite(t->m_W_enc, n * d, false) || !all_finite(t->v_W_enc, n * d, !is_sf) ||
             !all_finite(t->m_W_dec, n * d, false) || !all_finite(t->v_W_dec, n * d, !is_sf) ||
             !all_finite(t->m_b_enc, n, false) || !all_finite(t->v_b_enc, n, !is_sf) ||
             !all_finite(t->m_b_dec, d, false) || !all_finite(t->v_b_dec, d, !is_sf))
        bad = "adam_state";
    else if (is_sf && !(isfinite(t->sf_wsum) && t->sf_wsum >= 0))
        bad = "sf.wsum";
    else if (si[0] < 0 || si[1] < 0 || (si[2] != 0 && si[2] != 1) || (si[3] != 0 && si[3] != 1))
        bad = "state.i64";
    else if (!isfinite(sf[0]) || !isfinite(sf[1]) || !(sf[1] > 0) || sf[1] > 3.4e38)
        bad = "state.f64";
    else if (!(t->rng.s[0] | t->rng.s[1] | t->rng.s[2] | t->rng.s[3]))
        bad = "rng";
    for (size_t i = 0; !bad && i < n; i++)
        if (t->since_fire[i] < 0) bad = "since_fire";
    if (bad) {
        log_error("sae_ckpt_invalid", "reason=bad_values what=%s", bad);
        sae_trainer_destroy(&t);
        return SF_EFORMAT;
    }
    t->step = si[0];
    t->tokens = si[1];
    t->initialized = si[2] != 0;
    t->theta_set = si[3] != 0;
    t->theta = sf[0];
    s->norm_scale = (float)sf[1];
    *out = t;
    return 0;
}

int sae_trainer_load_mem(const void *buf, size_t len, struct sae_trainer **out)
{
    if (!buf || !out) return SF_EINVAL;
    *out = NULL;
    struct safetensors *st = NULL;
    int rc = safetensors_open_mem(buf, len, &st);
    if (rc) return rc < 0 ? rc : SF_EFORMAT;
    rc = load_from(st, out);
    safetensors_close(&st);
    return rc;
}

int sae_trainer_load(const char *path, struct sae_trainer **out)
{
    if (!path || !out) return SF_EINVAL;
    *out = NULL;
    struct safetensors *st = NULL;
    int rc = safetensors_open(path, &st);
    if (rc) {
        log_error("sae_ckpt_open_failed", "path=%s rc=%d", path, rc);
        return rc < 0 ? rc : SF_EFORMAT;
    }
    rc = load_from(st, out);
    safetensors_close(&st);
    if (rc == 0)
        log_info("sae_ckpt_loaded", "path=%s step=%lld tokens=%lld", path, (long long)(*out)->step,
                 (long long)(*out)->tokens);
    return rc;
}

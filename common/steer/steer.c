/* steer: spec parsing and the steering hook (see steer.h for the math). */
#include "steer/steer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

#define STEER_SCRATCH_FLOATS (1u << 22) /* bound on the (chunk, max_active) code scratch */
#define STEER_MAX_CHUNK      256

struct steer {
    const struct sae *sae;
    struct steer_spec *specs; /* (n) */
    size_t n;
    size_t n_code; /* clamp / ablate specs: these need the activation's code */
    bool enabled;
    int32_t skip_token;
    bool *slot_mask; /* (n_slot_mask) or NULL: every slot */
    size_t n_slot_mask;
    /* code scratch for clamp: (chunk, max_active) pairs and (chunk) counts */
    size_t max_active, chunk;
    uint32_t *idx;
    float *val;
    uint32_t *cnt;
};

const char *steer_mode_name(enum steer_mode m)
{
    switch (m) {
    case STEER_ADD:
        return "add";
    case STEER_CLAMP:
        return "clamp";
    case STEER_ABLATE:
        return "ablate";
    }
    return "?";
}

int steer_mode_parse(const char *s, size_t len, enum steer_mode *out)
{
    static const enum steer_mode modes[] = {STEER_ADD, STEER_CLAMP, STEER_ABLATE};
    for (size_t i = 0; i < SF_ARRAY_LEN(modes); i++) {
        const char *name = steer_mode_name(modes[i]);
        if (strlen(name) == len && !memcmp(name, s, len)) {
            *out = modes[i];
            return 0;
        }
    }
    return SF_EINVAL;
}

/* A decimal latent index: digits only, < 2^32. */
static int parse_feature(const char *s, size_t len, uint32_t *out)
{
    if (len == 0 || len > 10) return SF_EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return SF_EINVAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > UINT32_MAX) return SF_EINVAL;
    *out = (uint32_t)v;
    return 0;
}

/* A finite decimal number (no hex, inf, nan or spaces), |v| <= STEER_MAX_STRENGTH. */
static int parse_strength(const char *s, size_t len, float *out)
{
    char tmp[STEER_MAX_SPEC_LEN + 1];
    if (len == 0 || len > STEER_MAX_SPEC_LEN) return SF_EINVAL;
    bool digit = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9')
            digit = true;
        else if (c != '+' && c != '-' && c != '.' && c != 'e' && c != 'E')
            return SF_EINVAL;
    }
    if (!digit) return SF_EINVAL;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    double v;
    if (parse_f64(tmp, &v) != 0 || !isfinite(v) || fabs(v) > STEER_MAX_STRENGTH) return SF_EINVAL;
    *out = (float)v;
    return 0;
}

int steer_spec_parse_n(const char *s, size_t len, struct steer_spec *out)
{
    if (!s || !out || len == 0 || len > STEER_MAX_SPEC_LEN) return SF_EINVAL;
    struct steer_spec sp = {.mode = STEER_ADD};
    const char *end = s + len;
    const char *colon = memchr(s, ':', len);
    const char *body_end = colon ? colon : end;
    if (colon && steer_mode_parse(colon + 1, (size_t)(end - colon - 1), &sp.mode) != 0)
        return SF_EINVAL;
    const char *eq = memchr(s, '=', (size_t)(body_end - s));
    if (!eq) {
        /* only "FEATURE:ablate" may leave out the strength */
        if (!colon || sp.mode != STEER_ABLATE) return SF_EINVAL;
        if (parse_feature(s, (size_t)(body_end - s), &sp.feature) != 0) return SF_EINVAL;
        *out = sp;
        return 0;
    }
    if (parse_feature(s, (size_t)(eq - s), &sp.feature) != 0) return SF_EINVAL;
    const char *v = eq + 1;
    size_t vlen = (size_t)(body_end - v);
    if (vlen > 0 && (v[vlen - 1] == 'x' || v[vlen - 1] == 'X')) {
        sp.relative = true;
        vlen--;
    }
    if (parse_strength(v, vlen, &sp.value) != 0) return SF_EINVAL;
    if (sp.mode == STEER_ABLATE) {
        if (sp.value != 0.0f) return SF_EINVAL;
        sp.value = 0.0f; /* -0 too */
        sp.relative = false;
    }
    *out = sp;
    return 0;
}

int steer_spec_parse(const char *s, struct steer_spec *out)
{
    if (!s) return SF_EINVAL;
    return steer_spec_parse_n(s, strlen(s), out);
}

int steer_spec_parse_list(const char *s, struct steer_spec *out, size_t cap, size_t *n)
{
    if (!s || !n || (cap && !out) || *n > cap) return SF_EINVAL;
    size_t got = *n;
    const char *p = s;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        struct steer_spec sp;
        if (steer_spec_parse_n(p, len, &sp) != 0) return SF_EINVAL;
        if (got >= cap) return SF_ERANGE;
        out[got++] = sp;
        if (!comma) break;
        p = comma + 1;
    }
    *n = got;
    return 0;
}

int steer_spec_format(const struct steer_spec *s, char *buf, size_t cap)
{
    if (!s || !buf) return SF_EINVAL;
    int w = snprintf(buf, cap, "%u=%.9g%s:%s", s->feature, (double)s->value, s->relative ? "x" : "",
                     steer_mode_name(s->mode));
    return w < 0 || (size_t)w >= cap ? SF_ERANGE : 0;
}

int steer_spec_resolve(struct steer_spec *s, float max_act)
{
    if (!s) return SF_EINVAL;
    if (!s->relative) return 0;
    if (!isfinite(max_act) || !(max_act > 0.0f)) return SF_EINVAL;
    s->value *= max_act;
    s->relative = false;
    return 0;
}

/* ---- the steering object ---------------------------------------------------------- */

struct steer *steer_new(const struct sae *sae, const struct steer_spec *specs, size_t n)
{
    if (!sae || (n && !specs)) {
        log_error("steer_invalid", "reason=\"no sae or specs\"");
        return NULL;
    }
    size_t n_code = 0;
    for (size_t i = 0; i < n; i++) {
        const struct steer_spec *s = &specs[i];
        char txt[64];
        if (steer_spec_format(s, txt, sizeof txt) != 0) txt[0] = '\0';
        if (s->feature >= sae->n) {
            log_error("steer_invalid", "spec=%s reason=\"feature out of range\" n_latents=%zu", txt,
                      sae->n);
            return NULL;
        }
        if (!isfinite(s->value) || fabs((double)s->value) > STEER_MAX_STRENGTH * 1e3) {
            log_error("steer_invalid", "spec=%s reason=\"value not finite or too large\"", txt);
            return NULL;
        }
        if (s->relative) {
            log_error("steer_invalid",
                      "spec=%s reason=\"relative strength not resolved (needs the feature's max "
                      "activation)\"",
                      txt);
            return NULL;
        }
        if (s->mode == STEER_ADD) continue;
        n_code++;
        for (size_t j = 0; j < i; j++) {
            if (specs[j].mode != STEER_ADD && specs[j].feature == s->feature) {
                log_error("steer_invalid", "spec=%s reason=\"feature clamped twice\"", txt);
                return NULL;
            }
        }
    }
    struct steer *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->sae = sae;
    st->n = n;
    st->n_code = n_code;
    st->enabled = true;
    st->skip_token = -1;
    st->specs = malloc((n ? n : 1) * sizeof *st->specs);
    if (!st->specs) goto fail;
    if (n) memcpy(st->specs, specs, n * sizeof *specs);
    if (n_code) {
        st->max_active = sae->arch == SAE_TOPK ? SF_MIN(sae->k, sae->n) : sae->n;
        if (st->max_active == 0) st->max_active = 1;
        st->chunk = SF_MAX((size_t)1,
                           SF_MIN((size_t)STEER_MAX_CHUNK, STEER_SCRATCH_FLOATS / st->max_active));
        st->idx = malloc(st->chunk * st->max_active * sizeof *st->idx);
        st->val = malloc(st->chunk * st->max_active * sizeof *st->val);
        st->cnt = malloc(st->chunk * sizeof *st->cnt);
        if (!st->idx || !st->val || !st->cnt) goto fail;
    }
    return st;
fail:
    log_error("steer_oom", "specs=%zu", n);
    steer_destroy(&st);
    return NULL;
}

void steer_destroy(struct steer **pst)
{
    if (!pst || !*pst) return;
    struct steer *st = *pst;
    free(st->specs);
    free(st->slot_mask);
    free(st->idx);
    free(st->val);
    free(st->cnt);
    free(st);
    *pst = NULL;
}

size_t steer_count(const struct steer *st)
{
    return st ? st->n : 0;
}

const struct steer_spec *steer_specs(const struct steer *st)
{
    return st ? st->specs : NULL;
}

void steer_set_enabled(struct steer *st, bool on)
{
    if (st) st->enabled = on;
}

bool steer_enabled(const struct steer *st)
{
    return st && st->enabled;
}

void steer_set_skip_token(struct steer *st, int32_t token)
{
    if (st) st->skip_token = token;
}

int steer_set_slots(struct steer *st, const bool *mask, size_t n_slots)
{
    if (!st) return SF_EINVAL;
    free(st->slot_mask);
    st->slot_mask = NULL;
    st->n_slot_mask = 0;
    if (!mask) return 0;
    st->slot_mask = malloc((n_slots ? n_slots : 1) * sizeof *st->slot_mask);
    if (!st->slot_mask) return SF_ENOMEM;
    if (n_slots) memcpy(st->slot_mask, mask, n_slots * sizeof *mask);
    st->n_slot_mask = n_slots;
    return 0;
}

static bool row_skipped(const struct steer *st, const int32_t *tokens, const size_t *slots,
                        size_t r)
{
    if (tokens && st->skip_token >= 0 && tokens[r] == st->skip_token) return true;
    if (st->slot_mask && slots && (slots[r] >= st->n_slot_mask || !st->slot_mask[slots[r]]))
        return true;
    return false;
}

/* h += c * W_dec[f] / norm_scale */
static void add_dir(const struct sae *sae, float *h, uint32_t f, float c)
{
    const float *u = sae->W_dec + (size_t)f * sae->d_in;
    const float k = c / sae->norm_scale;
    for (size_t j = 0; j < sae->d_in; j++) h[j] += k * u[j];
}

int steer_apply(struct steer *st, float *x, const int32_t *tokens, const size_t *slots,
                size_t n_tokens)
{
    if (!st || (n_tokens && !x)) return SF_EINVAL;
    if (!st->enabled || st->n == 0) return 0;
    const struct sae *sae = st->sae;
    const size_t d = sae->d_in;
    for (size_t r0 = 0; r0 < n_tokens; r0 += (st->n_code ? st->chunk : n_tokens)) {
        size_t rows = st->n_code ? SF_MIN(st->chunk, n_tokens - r0) : n_tokens;
        if (st->n_code) {
            int rc = sae_encode(sae, x + r0 * d, rows, st->max_active, st->idx, st->val, st->cnt);
            if (rc) return rc;
        }
        for (size_t r = 0; r < rows; r++) {
            if (row_skipped(st, tokens, slots, r0 + r)) continue;
            float *h = x + (r0 + r) * d;
            const uint32_t *ri = st->n_code ? st->idx + r * st->max_active : NULL;
            const float *rv = st->n_code ? st->val + r * st->max_active : NULL;
            const uint32_t rc = st->n_code ? st->cnt[r] : 0;
            for (size_t s = 0; s < st->n; s++) {
                const struct steer_spec *sp = &st->specs[s];
                if (sp->mode == STEER_ADD) {
                    add_dir(sae, h, sp->feature, sp->value);
                    continue;
                }
                float z = 0.0f;
                for (uint32_t q = 0; q < rc; q++) {
                    if (ri[q] == sp->feature) {
                        z = rv[q];
                        break;
                    }
                }
                float target = sp->mode == STEER_ABLATE ? 0.0f : sp->value;
                if (target != z) add_dir(sae, h, sp->feature, target - z);
            }
        }
    }
    return 0;
}

int steer_hook(void *user, const struct model_act *act)
{
    struct steer *st = user;
    if (!st || !act) return SF_EINVAL;
    if (act->d != st->sae->d_in) {
        log_error("steer_width", "hook=%s d=%zu sae_d_in=%zu", act->name ? act->name : "?", act->d,
                  st->sae->d_in);
        return SF_EINVAL;
    }
    return steer_apply(st, act->x, act->tokens, act->slot, act->n_tokens);
}

int steer_install(struct steer *st, struct model_ctx *c, const char *hook)
{
    if (!st || !c) return SF_EINVAL;
    const char *name = hook && *hook ? hook : st->sae->meta.hook_name;
    const struct model_config *mc = model_config(model_ctx_model(c));
    size_t layer;
    enum model_hook_point point;
    if (!*name || model_hook_parse(name, mc->n_layers, &layer, &point) != 0) {
        log_error("steer_hook_invalid", "hook=\"%s\" n_layers=%zu", name, mc->n_layers);
        return SF_EINVAL;
    }
    if (mc->dim != st->sae->d_in) {
        log_error("steer_width", "hook=%s model_dim=%zu sae_d_in=%zu", name, mc->dim,
                  st->sae->d_in);
        return SF_EINVAL;
    }
    return model_ctx_add_hook_at(c, layer, point, steer_hook, st);
}

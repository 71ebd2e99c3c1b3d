/* feature_store: the feature store's record codecs and typed access over common/store
 * (schema in feature_store.h). */
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "feature_store.h"
#include "store/record.h"
#include "store/store.h"

const char *const feature_store_cf_names[FCF_COUNT] = {"saes",     "runs",   "features",
                                                       "examples", "logits", "neighbours"};

const char *feature_state_name(enum feature_state s)
{
    switch (s) {
    case FEATURE_STATE_REGISTERED:
        return "registered";
    case FEATURE_STATE_EVALUATING:
        return "evaluating";
    case FEATURE_STATE_DONE:
        return "done";
    case FEATURE_STATE_FAILED:
        return "failed";
    }
    return "unknown";
}

const char *feature_example_kind_name(enum feature_example_kind k)
{
    switch (k) {
    case FEATURE_EX_TOP:
        return "top";
    case FEATURE_EX_INTERVAL:
        return "interval";
    case FEATURE_EX_QUANTILE:
        return "quantile";
    default:
        return "unknown";
    }
}

/* ---- fini ---- */

void feature_sae_fini(struct feature_sae *s)
{
    if (!s) return;
    free(s->metrics_json);
    s->metrics_json = NULL;
}

void feature_run_info_fini(struct feature_run_info *r)
{
    if (!r) return;
    free(r->metrics_json);
    r->metrics_json = NULL;
}

void feature_stats_fini(struct feature_stats *s)
{
    if (!s) return;
    free(s->hist);
    free(s->intervals);
    free(s->quantiles);
    s->hist = NULL;
    s->intervals = s->quantiles = NULL;
    s->n_hist = s->n_intervals = s->n_quantiles = 0;
}

double feature_stats_density(const struct feature_stats *s)
{
    return s->n_tokens ? (double)s->fires / (double)s->n_tokens : 0.0;
}

double feature_stats_log10_density(const struct feature_stats *s)
{
    return log10(feature_stats_density(s) + 1e-10);
}

double feature_stats_mean_act(const struct feature_stats *s)
{
    return s->fires ? s->sum_act / (double)s->fires : 0.0;
}

static void example_fini(struct feature_example *e)
{
    free(e->tokens);
    free(e->acts);
    free(e->text);
    free(e->text_end);
    memset(e, 0, sizeof *e);
}

void feature_examples_fini(struct feature_examples *e)
{
    if (!e) return;
    for (size_t i = 0; i < e->n && e->ex; i++) example_fini(&e->ex[i]);
    free(e->ex);
    e->ex = NULL;
    e->n = 0;
}

void feature_logits_fini(struct feature_logits *l)
{
    if (!l) return;
    free(l->top);
    free(l->bottom);
    l->top = l->bottom = NULL;
    l->n_top = l->n_bottom = 0;
}

void feature_neighbours_fini(struct feature_neighbours *n)
{
    if (!n) return;
    free(n->nb);
    n->nb = NULL;
    n->n = 0;
}

void feature_record_fini(struct feature_record *r)
{
    if (!r) return;
    feature_stats_fini(&r->stats);
    for (int k = 0; k < FEATURE_EX_KINDS; k++) feature_examples_fini(&r->examples[k]);
    feature_logits_fini(&r->logits);
    feature_neighbours_fini(&r->neighbours);
}

/* ---- helpers ---- */

static int put_str_or_empty(struct buf *b, const char *s)
{
    return record_put_str(b, s ? s : "");
}

/* A length-prefixed string as a heap copy (NULL for an empty one). */
static char *get_heap_str(struct record_reader *r, size_t max)
{
    size_t n;
    const uint8_t *p = record_get_bytes(r, &n);
    if (!p || n == 0) return NULL;
    if (n > max || memchr(p, 0, n)) {
        record_reader_fail(r, "string too long or with a NUL byte");
        return NULL;
    }
    char *s = malloc(n + 1);
    if (!s) {
        record_reader_fail(r, "out of memory");
        return NULL;
    }
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

static float get_finite_f32(struct record_reader *r)
{
    float v = record_get_f32(r);
    if (!r->err && !isfinite(v)) record_reader_fail(r, "non-finite float");
    return v;
}

static int begin(struct record_reader *r, const void *data, size_t len, uint16_t type)
{
    struct record_view v;
    if (record_decode_as(data, len, type, FEATURE_REC_VERSION, &v) < 0) return SF_EFORMAT;
    record_reader_view(r, &v);
    return 0;
}

#define METRICS_JSON_MAX (1u << 20)

/* ---- SAE ---- */

int feature_sae_encode(const struct feature_sae *s, struct buf *out)
{
    size_t st;
    int rc = record_begin(out, FEATURE_REC_SAE, FEATURE_REC_VERSION, &st);
    rc |= record_put_str(out, s->sae_id);
    rc |= record_put_str(out, s->model);
    rc |= record_put_str(out, s->hook);
    rc |= record_put_str(out, s->arch);
    rc |= record_put_u32(out, s->d_in);
    rc |= record_put_u32(out, s->d_sae);
    rc |= record_put_u32(out, s->k);
    rc |= record_put_str(out, s->source);
    rc |= record_put_str(out, s->dataset);
    rc |= record_put_i64(out, s->created_ms);
    rc |= record_put_i64(out, s->updated_ms);
    rc |= record_put_u64(out, s->latest_run);
    rc |= record_put_u64(out, s->step);
    rc |= record_put_u8(out, (uint8_t)s->state);
    rc |= put_str_or_empty(out, s->metrics_json);
    /* 0 = unknown: written as an absent field, as older records have it (canonical: a
     * present field is never 0) */
    if (s->fingerprint) rc |= record_put_u64(out, s->fingerprint);
    if (rc) return SF_ENOMEM;
    return record_finish(out, st);
}

int feature_sae_decode(const void *data, size_t len, struct feature_sae *out)
{
    memset(out, 0, sizeof *out);
    struct record_reader r;
    if (begin(&r, data, len, FEATURE_REC_SAE) < 0) return SF_EFORMAT;
    record_get_str(&r, out->sae_id, sizeof out->sae_id);
    record_get_str(&r, out->model, sizeof out->model);
    record_get_str(&r, out->hook, sizeof out->hook);
    record_get_str(&r, out->arch, sizeof out->arch);
    out->d_in = record_get_u32(&r);
    out->d_sae = record_get_u32(&r);
    out->k = record_get_u32(&r);
    record_get_str(&r, out->source, sizeof out->source);
    record_get_str(&r, out->dataset, sizeof out->dataset);
    out->created_ms = record_get_i64(&r);
    out->updated_ms = record_get_i64(&r);
    out->latest_run = record_get_u64(&r);
    out->step = record_get_u64(&r);
    uint8_t st = record_get_u8(&r);
    if (!r.err && st > FEATURE_STATE_FAILED) record_reader_fail(&r, "unknown state");
    out->state = (enum feature_state)st;
    out->metrics_json = get_heap_str(&r, METRICS_JSON_MAX);
    if (!r.err && r.left) { /* absent in older records */
        out->fingerprint = record_get_u64(&r);
        if (!r.err && out->fingerprint == 0) record_reader_fail(&r, "fingerprint 0 written");
    }
    if (!r.err && feature_store_check_id(out->sae_id) < 0) record_reader_fail(&r, "bad sae id");
    if (record_reader_finish(&r, "feature_sae") < 0) {
        feature_sae_fini(out);
        memset(out, 0, sizeof *out);
        return SF_EFORMAT;
    }
    return 0;
}

/* ---- run ---- */

int feature_run_encode(const struct feature_run_info *ri, struct buf *out)
{
    size_t st;
    int rc = record_begin(out, FEATURE_REC_RUN, FEATURE_REC_VERSION, &st);
    rc |= record_put_str(out, ri->sae_id);
    rc |= record_put_u64(out, ri->run_id);
    rc |= record_put_i64(out, ri->started_ms);
    rc |= record_put_i64(out, ri->finished_ms);
    rc |= record_put_u8(out, (uint8_t)ri->state);
    rc |= record_put_u64(out, ri->tokens);
    rc |= record_put_u32(out, ri->features_done);
    rc |= record_put_u32(out, ri->n_features);
    rc |= record_put_str(out, ri->dataset);
    rc |= put_str_or_empty(out, ri->metrics_json);
    if (rc) return SF_ENOMEM;
    return record_finish(out, st);
}

int feature_run_decode(const void *data, size_t len, struct feature_run_info *out)
{
    memset(out, 0, sizeof *out);
    struct record_reader r;
    if (begin(&r, data, len, FEATURE_REC_RUN) < 0) return SF_EFORMAT;
    record_get_str(&r, out->sae_id, sizeof out->sae_id);
    out->run_id = record_get_u64(&r);
    out->started_ms = record_get_i64(&r);
    out->finished_ms = record_get_i64(&r);
    uint8_t st = record_get_u8(&r);
    if (!r.err && st > FEATURE_STATE_FAILED) record_reader_fail(&r, "unknown state");
    out->state = (enum feature_state)st;
    out->tokens = record_get_u64(&r);
    out->features_done = record_get_u32(&r);
    out->n_features = record_get_u32(&r);
    record_get_str(&r, out->dataset, sizeof out->dataset);
    out->metrics_json = get_heap_str(&r, METRICS_JSON_MAX);
    if (!r.err && feature_store_check_id(out->sae_id) < 0) record_reader_fail(&r, "bad sae id");
    if (!r.err && out->features_done > out->n_features)
        record_reader_fail(&r, "features_done > n_features");
    if (record_reader_finish(&r, "feature_run") < 0) {
        feature_run_info_fini(out);
        memset(out, 0, sizeof *out);
        return SF_EFORMAT;
    }
    return 0;
}

/* ---- stats ---- */

static int put_bins(struct buf *out, const struct feature_bin *b, uint16_t n)
{
    int rc = record_put_u16(out, n);
    for (uint16_t i = 0; i < n; i++) {
        rc |= record_put_f32(out, b[i].lo);
        rc |= record_put_f32(out, b[i].hi);
        rc |= record_put_u64(out, b[i].count);
    }
    return rc;
}

static struct feature_bin *get_bins(struct record_reader *r, uint16_t *n_out)
{
    uint16_t n = record_get_u16(r);
    *n_out = 0;
    if (r->err || n == 0) return NULL;
    if (n > FEATURE_MAX_BINS) {
        record_reader_fail(r, "too many bins");
        return NULL;
    }
    if (record_reader_need(r, n, 16) < 0) return NULL;
    struct feature_bin *b = calloc(n, sizeof *b);
    if (!b) {
        record_reader_fail(r, "out of memory");
        return NULL;
    }
    for (uint16_t i = 0; i < n; i++) {
        b[i].lo = get_finite_f32(r);
        b[i].hi = get_finite_f32(r);
        b[i].count = record_get_u64(r);
        if (!r->err && b[i].lo > b[i].hi) record_reader_fail(r, "bin lo > hi");
    }
    *n_out = n;
    return b;
}

int feature_stats_encode(const struct feature_stats *s, struct buf *out)
{
    size_t st;
    int rc = record_begin(out, FEATURE_REC_STATS, FEATURE_REC_VERSION, &st);
    rc |= record_put_u32(out, s->feature);
    rc |= record_put_u64(out, s->run_id);
    rc |= record_put_u64(out, s->n_tokens);
    rc |= record_put_u64(out, s->fires);
    rc |= record_put_f32(out, s->max_act);
    rc |= record_put_f64(out, s->sum_act);
    rc |= record_put_u16(out, s->n_hist);
    for (uint16_t i = 0; i < s->n_hist; i++) rc |= record_put_u32(out, s->hist[i]);
    rc |= put_bins(out, s->intervals, s->n_intervals);
    rc |= put_bins(out, s->quantiles, s->n_quantiles);
    if (rc) return SF_ENOMEM;
    return record_finish(out, st);
}

int feature_stats_decode(const void *data, size_t len, struct feature_stats *out)
{
    memset(out, 0, sizeof *out);
    struct record_reader r;
    if (begin(&r, data, len, FEATURE_REC_STATS) < 0) return SF_EFORMAT;
    out->feature = record_get_u32(&r);
    out->run_id = record_get_u64(&r);
    out->n_tokens = record_get_u64(&r);
    out->fires = record_get_u64(&r);
    out->max_act = get_finite_f32(&r);
    out->sum_act = record_get_f64(&r);
    if (!r.err && !isfinite(out->sum_act)) record_reader_fail(&r, "non-finite sum");
    if (!r.err && out->fires > out->n_tokens) record_reader_fail(&r, "fires > n_tokens");
    if (!r.err && out->max_act < 0) record_reader_fail(&r, "negative max");
    uint16_t nh = record_get_u16(&r);
    if (!r.err && nh > FEATURE_MAX_BINS) record_reader_fail(&r, "too many histogram bins");
    if (!r.err && nh && record_reader_need(&r, nh, 4) == 0) {
        out->hist = malloc(nh * sizeof *out->hist);
        if (!out->hist) record_reader_fail(&r, "out of memory");
        for (uint16_t i = 0; i < nh && !r.err; i++) out->hist[i] = record_get_u32(&r);
        if (!r.err) out->n_hist = nh;
    }
    out->intervals = get_bins(&r, &out->n_intervals);
    out->quantiles = get_bins(&r, &out->n_quantiles);
    if (record_reader_finish(&r, "feature_stats") < 0) {
        feature_stats_fini(out);
        memset(out, 0, sizeof *out);
        return SF_EFORMAT;
    }
    return 0;
}

/* ---- examples ---- */

int feature_examples_encode(const struct feature_examples *e, struct buf *out)
{
    size_t st;
    int rc = record_begin(out, FEATURE_REC_EXAMPLES, FEATURE_REC_VERSION, &st);
    rc |= record_put_u32(out, e->feature);
    rc |= record_put_u8(out, (uint8_t)e->kind);
    rc |= record_put_u16(out, e->n);
    for (uint16_t i = 0; i < e->n && !rc; i++) {
        const struct feature_example *x = &e->ex[i];
        rc |= record_put_u16(out, x->group);
        rc |= record_put_f32(out, x->act);
        rc |= record_put_u64(out, x->window);
        rc |= record_put_u32(out, x->start);
        rc |= record_put_u32(out, x->center);
        rc |= record_put_u32(out, x->n_tok);
        for (uint32_t t = 0; t < x->n_tok; t++) rc |= record_put_u32(out, x->tokens[t]);
        for (uint32_t t = 0; t < x->n_tok; t++) rc |= record_put_f32(out, x->acts[t]);
        rc |= record_put_bytes(out, x->text ? x->text : "", x->text ? x->text_len : 0);
        for (uint32_t t = 0; t < x->n_tok; t++)
            rc |= record_put_u32(out, x->text_end ? x->text_end[t] : 0);
    }
    if (rc) return SF_ENOMEM;
    return record_finish(out, st);
}

static void get_example(struct record_reader *r, struct feature_example *x)
{
    x->group = record_get_u16(r);
    x->act = get_finite_f32(r);
    x->window = record_get_u64(r);
    x->start = record_get_u32(r);
    x->center = record_get_u32(r);
    uint32_t n = record_get_u32(r);
    if (r->err) return;
    if (n == 0 || n > FEATURE_MAX_WINDOW) {
        record_reader_fail(r, "example window length out of range");
        return;
    }
    if (x->center >= n) {
        record_reader_fail(r, "example center outside its window");
        return;
    }
    if (record_reader_need(r, n, 12) < 0) return;
    x->tokens = malloc(n * sizeof *x->tokens);
    x->acts = malloc(n * sizeof *x->acts);
    x->text_end = malloc(n * sizeof *x->text_end);
    if (!x->tokens || !x->acts || !x->text_end) {
        record_reader_fail(r, "out of memory");
        return;
    }
    x->n_tok = n;
    for (uint32_t t = 0; t < n; t++) x->tokens[t] = record_get_u32(r);
    for (uint32_t t = 0; t < n; t++) x->acts[t] = get_finite_f32(r);
    size_t tl;
    const uint8_t *tp = record_get_bytes(r, &tl);
    if (r->err) return;
    if (tl > FEATURE_MAX_TEXT) {
        record_reader_fail(r, "example text too long");
        return;
    }
    x->text = malloc(tl + 1);
    if (!x->text) {
        record_reader_fail(r, "out of memory");
        return;
    }
    memcpy(x->text, tp, tl);
    x->text[tl] = 0;
    x->text_len = (uint32_t)tl;
    uint32_t prev = 0;
    for (uint32_t t = 0; t < n && !r->err; t++) {
        x->text_end[t] = record_get_u32(r);
        if (!r->err && (x->text_end[t] < prev || x->text_end[t] > tl))
            record_reader_fail(r, "example text offsets out of order");
        prev = x->text_end[t];
    }
}

int feature_examples_decode(const void *data, size_t len, struct feature_examples *out)
{
    memset(out, 0, sizeof *out);
    struct record_reader r;
    if (begin(&r, data, len, FEATURE_REC_EXAMPLES) < 0) return SF_EFORMAT;
    out->feature = record_get_u32(&r);
    uint8_t kind = record_get_u8(&r);
    if (!r.err && kind >= FEATURE_EX_KINDS) record_reader_fail(&r, "unknown example kind");
    out->kind = (enum feature_example_kind)kind;
    uint16_t n = record_get_u16(&r);
    if (!r.err && n > FEATURE_MAX_EXAMPLES) record_reader_fail(&r, "too many examples");
    if (!r.err && n && record_reader_need(&r, n, 30) == 0) {
        out->ex = calloc(n, sizeof *out->ex);
        if (!out->ex)
            record_reader_fail(&r, "out of memory");
        else
            out->n = n;
        for (uint16_t i = 0; i < n && !r.err; i++) get_example(&r, &out->ex[i]);
    }
    if (record_reader_finish(&r, "feature_examples") < 0) {
        feature_examples_fini(out);
        memset(out, 0, sizeof *out);
        return SF_EFORMAT;
    }
    return 0;
}

/* ---- logits ---- */

static int put_logit_list(struct buf *out, const struct feature_logit *l, uint16_t n)
{
    int rc = record_put_u16(out, n);
    for (uint16_t i = 0; i < n; i++) {
        rc |= record_put_u32(out, l[i].token);
        rc |= record_put_f32(out, l[i].value);
        rc |= record_put_str(out, l[i].piece);
    }
    return rc;
}

int feature_logits_encode(const struct feature_logits *l, struct buf *out)
{
    size_t st;
    int rc = record_begin(out, FEATURE_REC_LOGITS, FEATURE_REC_VERSION, &st);
    rc |= record_put_u32(out, l->feature);
    rc |= put_logit_list(out, l->top, l->n_top);
    rc |= put_logit_list(out, l->bottom, l->n_bottom);
    if (rc) return SF_ENOMEM;
    return record_finish(out, st);
}

static struct feature_logit *get_logit_list(struct record_reader *r, uint16_t *n_out)
{
    uint16_t n = record_get_u16(r);
    *n_out = 0;
    if (r->err || n == 0) return NULL;
    if (n > FEATURE_MAX_BINS) {
        record_reader_fail(r, "too many logit entries");
        return NULL;
    }
    if (record_reader_need(r, n, 12) < 0) return NULL;
    struct feature_logit *l = calloc(n, sizeof *l);
    if (!l) {
        record_reader_fail(r, "out of memory");
        return NULL;
    }
    for (uint16_t i = 0; i < n && !r->err; i++) {
        l[i].token = record_get_u32(r);
        l[i].value = get_finite_f32(r);
        record_get_str(r, l[i].piece, sizeof l[i].piece);
    }
    *n_out = n;
    return l;
}

int feature_logits_decode(const void *data, size_t len, struct feature_logits *out)
{
    memset(out, 0, sizeof *out);
    struct record_reader r;
    if (begin(&r, data, len, FEATURE_REC_LOGITS) < 0) return SF_EFORMAT;
    out->feature = record_get_u32(&r);
    out->top = get_logit_list(&r, &out->n_top);
    out->bottom = get_logit_list(&r, &out->n_bottom);
    if (record_reader_finish(&r, "feature_logits") < 0) {
        feature_logits_fini(out);
        memset(out, 0, sizeof *out);
        return SF_EFORMAT;
    }
    return 0;
}

/* ---- neighbours ---- */

int feature_neighbours_encode(const struct feature_neighbours *n, struct buf *out)
{
    size_t st;
    int rc = record_begin(out, FEATURE_REC_NEIGHBOURS, FEATURE_REC_VERSION, &st);
    rc |= record_put_u32(out, n->feature);
    rc |= record_put_u16(out, n->n);
    for (uint16_t i = 0; i < n->n; i++) {
        rc |= record_put_u32(out, n->nb[i].feature);
        rc |= record_put_f32(out, n->nb[i].cosine);
    }
    if (rc) return SF_ENOMEM;
    return record_finish(out, st);
}

int feature_neighbours_decode(const void *data, size_t len, struct feature_neighbours *out)
{
    memset(out, 0, sizeof *out);
    struct record_reader r;
    if (begin(&r, data, len, FEATURE_REC_NEIGHBOURS) < 0) return SF_EFORMAT;
    out->feature = record_get_u32(&r);
    uint16_t n = record_get_u16(&r);
    if (!r.err && n > FEATURE_MAX_BINS) record_reader_fail(&r, "too many neighbours");
    if (!r.err && n && record_reader_need(&r, n, 8) == 0) {
        out->nb = calloc(n, sizeof *out->nb);
        if (!out->nb)
            record_reader_fail(&r, "out of memory");
        else
            out->n = n;
        for (uint16_t i = 0; i < n && !r.err; i++) {
            out->nb[i].feature = record_get_u32(&r);
            out->nb[i].cosine = get_finite_f32(&r);
        }
    }
    if (record_reader_finish(&r, "feature_neighbours") < 0) {
        feature_neighbours_fini(out);
        memset(out, 0, sizeof *out);
        return SF_EFORMAT;
    }
    return 0;
}

/* ---- ids and keys ---- */

bool feature_store_id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("._:/@+-", c) != NULL;
}

int feature_store_check_id(const char *id)
{
    if (!id) return SF_EINVAL;
    size_t n = strnlen(id, FEATURE_STORE_MAX_ID + 1);
    if (n == 0 || n > FEATURE_STORE_MAX_ID) return SF_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!feature_store_id_char(id[i])) return SF_EINVAL;
    return 0;
}

static size_t key_prefix(const char *sae_id, uint8_t *out)
{
    size_t n = strlen(sae_id);
    memcpy(out, sae_id, n);
    out[n] = 0;
    return n + 1;
}

int feature_store_key_feature(const char *sae_id, uint32_t feature, uint8_t *out, size_t *len)
{
    if (feature_store_check_id(sae_id) < 0) return SF_EINVAL;
    size_t n = key_prefix(sae_id, out);
    store_be32_put(out + n, feature);
    *len = n + 4;
    return 0;
}

int feature_store_key_run(const char *sae_id, uint64_t run_id, uint8_t *out, size_t *len)
{
    if (feature_store_check_id(sae_id) < 0) return SF_EINVAL;
    size_t n = key_prefix(sae_id, out);
    store_be64_put(out + n, run_id);
    *len = n + 8;
    return 0;
}

#define KEY_CAP (FEATURE_STORE_MAX_ID + 16)

/* ---- the store ---- */

struct feature_store {
    struct store *s;
    bool writer;
    char *own_secondary; /* a temporary secondary directory we remove at close */
};

static int batch_sae(struct store_batch *b, const struct feature_sae *s, struct buf *v);
static int batch_run(struct store_batch *b, const struct feature_run_info *r, struct buf *v);

/* A run (or SAE) still "evaluating" when a writer opens the store was left by a writer
 * that died: there is only one writer, so mark it failed. Undecodable records are left
 * alone (readers report them). */
static int recover(struct feature_store *fs)
{
    struct store_batch *b = store_batch_new(fs->s);
    if (!b) return SF_ENOMEM;
    struct buf v;
    buf_init(&v, RECORD_MAX_PAYLOAD);
    int rc = 0;
    size_t n_runs = 0, n_saes = 0;
    for (int cf = FCF_SAES; cf <= FCF_RUNS && rc == 0; cf++) {
        struct store_iter *it = store_iter_new(fs->s, (size_t)cf, NULL, 0);
        if (!it) {
            rc = SF_ENOMEM;
            break;
        }
        for (store_iter_seek_first(it); store_iter_valid(it) && rc == 0; store_iter_next(it)) {
            size_t vl;
            const void *val = store_iter_value(it, &vl);
            if (cf == FCF_SAES) {
                struct feature_sae s;
                if (feature_sae_decode(val, vl, &s) < 0) continue;
                if (s.state == FEATURE_STATE_EVALUATING) {
                    s.state = FEATURE_STATE_FAILED;
                    rc = batch_sae(b, &s, &v);
                    n_saes++;
                }
                feature_sae_fini(&s);
            } else {
                struct feature_run_info r;
                if (feature_run_decode(val, vl, &r) < 0) continue;
                if (r.state == FEATURE_STATE_EVALUATING) {
                    r.state = FEATURE_STATE_FAILED;
                    rc = batch_run(b, &r, &v);
                    n_runs++;
                }
                feature_run_info_fini(&r);
            }
        }
        if (rc == 0) rc = store_iter_status(it);
        store_iter_destroy(&it);
    }
    buf_fini(&v);
    if (rc == 0 && store_batch_count(b)) {
        rc = store_batch_commit(b, true);
        log_warn("feature_store_recovered", "path=%s runs_failed=%zu saes_failed=%zu",
                 store_path(fs->s), n_runs, n_saes);
    }
    store_batch_destroy(&b);
    return rc;
}

int feature_store_open(struct feature_store **out, const char *path)
{
    *out = NULL;
    struct feature_store *fs = calloc(1, sizeof *fs);
    if (!fs) return SF_ENOMEM;
    int rc = store_open(&fs->s, path, feature_store_cf_names, FCF_COUNT, STORE_CREATE);
    if (rc != 0) {
        free(fs);
        return rc < 0 ? rc : SF_ERR;
    }
    fs->writer = true;
    rc = recover(fs);
    if (rc < 0) {
        feature_store_close(&fs);
        return rc;
    }
    *out = fs;
    return 0;
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

int feature_store_open_reader(struct feature_store **out, const char *path,
                              const char *secondary_dir)
{
    *out = NULL;
    char cur[4200];
    snprintf(cur, sizeof cur, "%s/CURRENT", path);
    if (access(cur, F_OK) != 0) return SF_NOTFOUND;
    struct feature_store *fs = calloc(1, sizeof *fs);
    if (!fs) return SF_ENOMEM;
    char tmp[4200];
    if (!secondary_dir || !*secondary_dir) {
        const char *t = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/saeflow-fs-reader-XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(tmp)) {
            log_error("feature_store_reader", "reason=mkdtemp_failed dir=%s", tmp);
            free(fs);
            return SF_EIO;
        }
        fs->own_secondary = strdup(tmp);
        secondary_dir = tmp;
    }
    int rc = store_open_secondary(&fs->s, path, secondary_dir, feature_store_cf_names, FCF_COUNT);
    if (rc == 0) rc = store_catch_up(fs->s);
    if (rc != 0) {
        feature_store_close(&fs);
        return rc < 0 ? rc : SF_ERR;
    }
    *out = fs;
    return 0;
}

int feature_store_catch_up(struct feature_store *fs)
{
    if (fs->writer) return 0;
    return store_catch_up(fs->s);
}

void feature_store_close(struct feature_store **p)
{
    if (!p || !*p) return;
    struct feature_store *fs = *p;
    store_close(&fs->s);
    if (fs->own_secondary) {
        nftw(fs->own_secondary, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        free(fs->own_secondary);
    }
    free(fs);
    *p = NULL;
}

bool feature_store_is_writer(const struct feature_store *fs)
{
    return fs->writer;
}

const char *feature_store_path(const struct feature_store *fs)
{
    return store_path(fs->s);
}

static int need_writer(const struct feature_store *fs)
{
    if (fs->writer) return 0;
    log_error("feature_store", "reason=write_on_reader path=%s", store_path(fs->s));
    return SF_ESTATE;
}

static int batch_sae(struct store_batch *b, const struct feature_sae *s, struct buf *v)
{
    if (feature_store_check_id(s->sae_id) < 0) return SF_EINVAL;
    buf_reset(v);
    int rc = feature_sae_encode(s, v);
    if (rc < 0) return rc;
    return store_batch_put(b, FCF_SAES, s->sae_id, strlen(s->sae_id), v->data, v->len);
}

static int batch_run(struct store_batch *b, const struct feature_run_info *r, struct buf *v)
{
    uint8_t k[KEY_CAP];
    size_t kl;
    if (feature_store_key_run(r->sae_id, r->run_id, k, &kl) < 0) return SF_EINVAL;
    buf_reset(v);
    int rc = feature_run_encode(r, v);
    if (rc < 0) return rc;
    return store_batch_put(b, FCF_RUNS, k, kl, v->data, v->len);
}

static int commit(struct store_batch *b, int rc)
{
    if (rc == 0) rc = store_batch_commit(b, true);
    store_batch_destroy(&b);
    return rc;
}

int feature_store_put_sae_run(struct feature_store *fs, const struct feature_sae *s,
                              const struct feature_run_info *r)
{
    int rc = need_writer(fs);
    if (rc < 0) return rc;
    struct store_batch *b = store_batch_new(fs->s);
    if (!b) return SF_ENOMEM;
    struct buf v;
    buf_init(&v, RECORD_MAX_PAYLOAD);
    if (s) rc = batch_sae(b, s, &v);
    if (rc == 0 && r) rc = batch_run(b, r, &v);
    buf_fini(&v);
    return commit(b, rc);
}

int feature_store_put_sae(struct feature_store *fs, const struct feature_sae *s)
{
    return feature_store_put_sae_run(fs, s, NULL);
}

int feature_store_put_run(struct feature_store *fs, const struct feature_run_info *r)
{
    return feature_store_put_sae_run(fs, NULL, r);
}

int feature_store_put_features(struct feature_store *fs, const char *sae_id,
                               const struct feature_record *recs, size_t n)
{
    int rc = need_writer(fs);
    if (rc < 0) return rc;
    if (feature_store_check_id(sae_id) < 0) return SF_EINVAL;
    struct store_batch *b = store_batch_new(fs->s);
    if (!b) return SF_ENOMEM;
    struct buf v;
    buf_init(&v, RECORD_MAX_PAYLOAD);
    uint8_t k[KEY_CAP];
    size_t kl;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct feature_record *fr = &recs[i];
        uint32_t f = fr->stats.feature;
        feature_store_key_feature(sae_id, f, k, &kl);
        buf_reset(&v);
        rc = feature_stats_encode(&fr->stats, &v);
        if (rc == 0) rc = store_batch_put(b, FCF_FEATURES, k, kl, v.data, v.len);
        buf_reset(&v);
        if (rc == 0) rc = feature_logits_encode(&fr->logits, &v);
        if (rc == 0) rc = store_batch_put(b, FCF_LOGITS, k, kl, v.data, v.len);
        buf_reset(&v);
        if (rc == 0) rc = feature_neighbours_encode(&fr->neighbours, &v);
        if (rc == 0) rc = store_batch_put(b, FCF_NEIGHBOURS, k, kl, v.data, v.len);
        for (int kind = 0; kind < FEATURE_EX_KINDS && rc == 0; kind++) {
            if (fr->examples[kind].feature != f || (int)fr->examples[kind].kind != kind ||
                fr->logits.feature != f || fr->neighbours.feature != f) {
                log_error("feature_store_put", "reason=ids_disagree feature=%u", (unsigned)f);
                rc = SF_EINVAL;
                break;
            }
            k[kl] = (uint8_t)kind;
            buf_reset(&v);
            rc = feature_examples_encode(&fr->examples[kind], &v);
            if (rc == 0) rc = store_batch_put(b, FCF_EXAMPLES, k, kl + 1, v.data, v.len);
        }
    }
    buf_fini(&v);
    return commit(b, rc);
}

int feature_store_next_run_id(struct feature_store *fs, const char *sae_id, uint64_t *run_id)
{
    uint8_t p[KEY_CAP];
    if (feature_store_check_id(sae_id) < 0) return SF_EINVAL;
    size_t pl = key_prefix(sae_id, p);
    struct store_iter *it = store_iter_new(fs->s, FCF_RUNS, p, pl);
    if (!it) return SF_ENOMEM;
    store_iter_seek_last(it);
    *run_id = 1;
    if (store_iter_valid(it)) {
        size_t kl;
        const uint8_t *k = store_iter_key(it, &kl);
        if (kl == pl + 8) *run_id = store_be64_get(k + pl) + 1;
    }
    int rc = store_iter_status(it);
    store_iter_destroy(&it);
    return rc;
}

/* ---- getters ---- */

static int get_raw(struct feature_store *fs, enum feature_cf cf, const void *k, size_t kl, void **v,
                   size_t *vl)
{
    return store_get(fs->s, cf, k, kl, v, vl);
}

static int key_mismatch(const char *what, const char *sae_id, uint32_t feature)
{
    log_error("feature_store_get", "reason=record_disagrees_with_key what=%s sae=%s feature=%u",
              what, sae_id, (unsigned)feature);
    return SF_EFORMAT;
}

int feature_store_get_sae(struct feature_store *fs, const char *sae_id, struct feature_sae *out)
{
    memset(out, 0, sizeof *out);
    if (feature_store_check_id(sae_id) < 0) return SF_EINVAL;
    void *v;
    size_t vl;
    int rc = get_raw(fs, FCF_SAES, sae_id, strlen(sae_id), &v, &vl);
    if (rc) return rc;
    rc = feature_sae_decode(v, vl, out);
    store_free(v);
    if (rc == 0 && strcmp(out->sae_id, sae_id) != 0) {
        feature_sae_fini(out);
        return key_mismatch("sae", sae_id, 0);
    }
    return rc;
}

int feature_store_check_sae(struct feature_store *fs, const char *sae_id,
                            const struct feature_sae *want, char *why, size_t cap)
{
    struct feature_sae have;
    int rc = feature_store_get_sae(fs, sae_id, &have);
    if (rc == SF_NOTFOUND) {
        snprintf(why, cap, "no SAE with id %s in the store", sae_id);
        return SF_NOTFOUND;
    }
    if (rc < 0) return rc;
    bool shape = have.d_in == want->d_in && have.d_sae == want->d_sae && have.k == want->k &&
                 !strcmp(have.arch, want->arch) && !strcmp(have.hook, want->hook);
    if (have.fingerprint && have.fingerprint == want->fingerprint)
        rc = 0;
    else if (have.fingerprint || !shape)
        rc = FEATURE_SAE_OTHER;
    else
        rc = FEATURE_SAE_UNVERIFIED;
    if (rc == FEATURE_SAE_OTHER)
        snprintf(why, cap,
                 "id %s holds a different SAE (%s %s d_in=%u d_sae=%u k=%u fingerprint "
                 "%016llx, from %s) than this one (%s %s d_in=%u d_sae=%u k=%u fingerprint "
                 "%016llx)",
                 sae_id, have.arch, have.hook, have.d_in, have.d_sae, have.k,
                 (unsigned long long)have.fingerprint, have.source[0] ? have.source : "?",
                 want->arch, want->hook, want->d_in, want->d_sae, want->k,
                 (unsigned long long)want->fingerprint);
    else if (rc == FEATURE_SAE_UNVERIFIED)
        snprintf(why, cap,
                 "id %s was stored without a fingerprint (by an older saeflow); its shape and "
                 "hook match but its weights cannot be checked",
                 sae_id);
    feature_sae_fini(&have);
    return rc;
}

int feature_store_get_run(struct feature_store *fs, const char *sae_id, uint64_t run_id,
                          struct feature_run_info *out)
{
    memset(out, 0, sizeof *out);
    uint8_t k[KEY_CAP];
    size_t kl;
    if (feature_store_key_run(sae_id, run_id, k, &kl) < 0) return SF_EINVAL;
    void *v;
    size_t vl;
    int rc = get_raw(fs, FCF_RUNS, k, kl, &v, &vl);
    if (rc) return rc;
    rc = feature_run_decode(v, vl, out);
    store_free(v);
    if (rc == 0 && (out->run_id != run_id || strcmp(out->sae_id, sae_id) != 0)) {
        feature_run_info_fini(out);
        return key_mismatch("run", sae_id, 0);
    }
    return rc;
}

int feature_store_get_stats(struct feature_store *fs, const char *sae_id, uint32_t feature,
                            struct feature_stats *out)
{
    memset(out, 0, sizeof *out);
    uint8_t k[KEY_CAP];
    size_t kl;
    if (feature_store_key_feature(sae_id, feature, k, &kl) < 0) return SF_EINVAL;
    void *v;
    size_t vl;
    int rc = get_raw(fs, FCF_FEATURES, k, kl, &v, &vl);
    if (rc) return rc;
    rc = feature_stats_decode(v, vl, out);
    store_free(v);
    if (rc == 0 && out->feature != feature) {
        feature_stats_fini(out);
        return key_mismatch("stats", sae_id, feature);
    }
    return rc;
}

int feature_store_get_examples(struct feature_store *fs, const char *sae_id, uint32_t feature,
                               enum feature_example_kind kind, struct feature_examples *out)
{
    memset(out, 0, sizeof *out);
    uint8_t k[KEY_CAP];
    size_t kl;
    if (feature_store_key_feature(sae_id, feature, k, &kl) < 0 || (int)kind < 0 ||
        kind >= FEATURE_EX_KINDS)
        return SF_EINVAL;
    k[kl++] = (uint8_t)kind;
    void *v;
    size_t vl;
    int rc = get_raw(fs, FCF_EXAMPLES, k, kl, &v, &vl);
    if (rc) return rc;
    rc = feature_examples_decode(v, vl, out);
    store_free(v);
    if (rc == 0 && (out->feature != feature || out->kind != kind)) {
        feature_examples_fini(out);
        return key_mismatch("examples", sae_id, feature);
    }
    return rc;
}

int feature_store_get_logits(struct feature_store *fs, const char *sae_id, uint32_t feature,
                             struct feature_logits *out)
{
    memset(out, 0, sizeof *out);
    uint8_t k[KEY_CAP];
    size_t kl;
    if (feature_store_key_feature(sae_id, feature, k, &kl) < 0) return SF_EINVAL;
    void *v;
    size_t vl;
    int rc = get_raw(fs, FCF_LOGITS, k, kl, &v, &vl);
    if (rc) return rc;
    rc = feature_logits_decode(v, vl, out);
    store_free(v);
    if (rc == 0 && out->feature != feature) {
        feature_logits_fini(out);
        return key_mismatch("logits", sae_id, feature);
    }
    return rc;
}

int feature_store_get_neighbours(struct feature_store *fs, const char *sae_id, uint32_t feature,
                                 struct feature_neighbours *out)
{
    memset(out, 0, sizeof *out);
    uint8_t k[KEY_CAP];
    size_t kl;
    if (feature_store_key_feature(sae_id, feature, k, &kl) < 0) return SF_EINVAL;
    void *v;
    size_t vl;
    int rc = get_raw(fs, FCF_NEIGHBOURS, k, kl, &v, &vl);
    if (rc) return rc;
    rc = feature_neighbours_decode(v, vl, out);
    store_free(v);
    if (rc == 0 && out->feature != feature) {
        feature_neighbours_fini(out);
        return key_mismatch("neighbours", sae_id, feature);
    }
    return rc;
}

int feature_store_get_feature(struct feature_store *fs, const char *sae_id, uint32_t feature,
                              struct feature_record *out)
{
    memset(out, 0, sizeof *out);
    int rc = feature_store_get_stats(fs, sae_id, feature, &out->stats);
    if (rc) return rc;
    for (int k = 0; k < FEATURE_EX_KINDS && rc == 0; k++)
        rc = feature_store_get_examples(fs, sae_id, feature, (enum feature_example_kind)k,
                                        &out->examples[k]);
    if (rc == 0) rc = feature_store_get_logits(fs, sae_id, feature, &out->logits);
    if (rc == 0) rc = feature_store_get_neighbours(fs, sae_id, feature, &out->neighbours);
    if (rc == SF_NOTFOUND) {
        log_error("feature_store_get", "reason=torn_feature sae=%s feature=%u", sae_id,
                  (unsigned)feature);
        rc = SF_EFORMAT;
    }
    if (rc) feature_record_fini(out);
    return rc;
}

/* ---- iteration ---- */

int feature_store_list_saes(struct feature_store *fs, feature_sae_fn fn, void *ud)
{
    struct store_iter *it = store_iter_new(fs->s, FCF_SAES, NULL, 0);
    if (!it) return SF_ENOMEM;
    int rc = 0;
    for (store_iter_seek_first(it); store_iter_valid(it) && rc == 0; store_iter_next(it)) {
        size_t vl;
        const void *v = store_iter_value(it, &vl);
        struct feature_sae s;
        if (feature_sae_decode(v, vl, &s) < 0) {
            rc = SF_EFORMAT;
            break;
        }
        rc = fn(ud, &s);
        feature_sae_fini(&s);
    }
    if (rc == 0) rc = store_iter_status(it);
    store_iter_destroy(&it);
    return rc;
}

int feature_store_list_runs(struct feature_store *fs, const char *sae_id, feature_run_fn fn,
                            void *ud)
{
    uint8_t p[KEY_CAP];
    if (feature_store_check_id(sae_id) < 0) return SF_EINVAL;
    size_t pl = key_prefix(sae_id, p);
    struct store_iter *it = store_iter_new(fs->s, FCF_RUNS, p, pl);
    if (!it) return SF_ENOMEM;
    int rc = 0;
    for (store_iter_seek_first(it); store_iter_valid(it) && rc == 0; store_iter_next(it)) {
        size_t vl;
        const void *v = store_iter_value(it, &vl);
        struct feature_run_info r;
        if (feature_run_decode(v, vl, &r) < 0) {
            rc = SF_EFORMAT;
            break;
        }
        rc = fn(ud, &r);
        feature_run_info_fini(&r);
    }
    if (rc == 0) rc = store_iter_status(it);
    store_iter_destroy(&it);
    return rc;
}

int feature_store_scan_stats(struct feature_store *fs, const char *sae_id, uint32_t first,
                             feature_stats_fn fn, void *ud)
{
    uint8_t k[KEY_CAP];
    size_t kl;
    if (feature_store_key_feature(sae_id, first, k, &kl) < 0) return SF_EINVAL;
    struct store_iter *it = store_iter_new(fs->s, FCF_FEATURES, k, kl - 4);
    if (!it) return SF_ENOMEM;
    int rc = 0;
    for (store_iter_seek(it, k, kl); store_iter_valid(it) && rc == 0; store_iter_next(it)) {
        size_t vl, ikl;
        const uint8_t *ik = store_iter_key(it, &ikl);
        const void *v = store_iter_value(it, &vl);
        struct feature_stats s;
        if (feature_stats_decode(v, vl, &s) < 0) {
            rc = SF_EFORMAT;
            break;
        }
        if (ikl != kl || store_be32_get(ik + kl - 4) != s.feature) {
            feature_stats_fini(&s);
            rc = key_mismatch("stats", sae_id, s.feature);
            break;
        }
        rc = fn(ud, &s);
        feature_stats_fini(&s);
    }
    if (rc == 0) rc = store_iter_status(it);
    store_iter_destroy(&it);
    return rc;
}

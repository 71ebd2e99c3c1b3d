/* metrics: a Prometheus registry (text exposition format 0.0.4) with counters,
 * gauges and histograms, each a family of series keyed by label values. Updates are
 * lock-free (atomic compare-and-swap on the double's bits); creating a series and
 * rendering take the registry's mutex. Histogram buckets are stored non-cumulative
 * and summed at render time, so the +Inf bucket always equals _count. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/http.h"

#define MAX_LABELS 16

enum mtype { M_COUNTER, M_GAUGE, M_HISTOGRAM };
static const char *const type_names[] = {"counter", "gauge", "histogram"};

struct metric {
    struct metrics_family *fam;
    char **values;
    _Atomic uint64_t value;    /* double bits: counter / gauge */
    _Atomic uint64_t sum;      /* double bits: histogram */
    _Atomic uint64_t *buckets; /* n_bounds + 1, the last is +Inf; non-cumulative */
    struct metric *next;
};

struct metrics_family {
    struct metrics *reg;
    char *name, *help;
    enum mtype type;
    char *labels[MAX_LABELS];
    size_t n_labels;
    double *bounds;
    size_t n_bounds;
    struct metric *first, *last;
    struct metrics_family *next;
};

struct metrics {
    pthread_mutex_t mu;
    struct metrics_family *first, *last;
};

static uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof(u));
    return u;
}

static double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof(d));
    return d;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

struct metrics *metrics_new(void)
{
    struct metrics *m = calloc(1, sizeof(*m));
    if (m) pthread_mutex_init(&m->mu, NULL);
    return m;
}

static void metric_free(struct metric *c, size_t n_labels)
{
    for (size_t i = 0; c->values && i < n_labels; i++) free(c->values[i]);
    free(c->values);
    free((void *)c->buckets);
    free(c);
}

static void family_free(struct metrics_family *f)
{
    struct metric *c = f->first;
    while (c) {
        struct metric *next = c->next;
        metric_free(c, f->n_labels);
        c = next;
    }
    for (size_t i = 0; i < f->n_labels; i++) free(f->labels[i]);
    free(f->name);
    free(f->help);
    free(f->bounds);
    free(f);
}

void metrics_destroy(struct metrics **mp)
{
    if (!mp || !*mp) return;
    struct metrics *m = *mp;
    struct metrics_family *f = m->first;
    while (f) {
        struct metrics_family *next = f->next;
        family_free(f);
        f = next;
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
    *mp = NULL;
}

static bool name_ok(const char *s, bool colon)
{
    if (!s || !*s) return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool alpha =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':');
        if (!alpha && !(p > s && c >= '0' && c <= '9')) return false;
    }
    return true;
}

/* Splits "a,b" into f->labels; validates. */
static int parse_labels(struct metrics_family *f, const char *labels)
{
    if (!labels || !*labels) return SF_OK;
    const char *p = labels;
    for (;;) {
        size_t n = strcspn(p, ",");
        char *l = malloc(n + 1);
        if (!l) return SF_ENOMEM;
        memcpy(l, p, n);
        l[n] = '\0';
        bool bad = f->n_labels == MAX_LABELS || !name_ok(l, false) || strncmp(l, "__", 2) == 0 ||
                   (f->type == M_HISTOGRAM && strcmp(l, "le") == 0);
        for (size_t i = 0; !bad && i < f->n_labels; i++) bad = strcmp(f->labels[i], l) == 0;
        if (bad) {
            log_error("metrics_bad_label", "metric=%s label=%s", f->name, l);
            free(l);
            return SF_EINVAL;
        }
        f->labels[f->n_labels++] = l;
        p += n;
        if (!*p) break;
        p++;
    }
    return SF_OK;
}

static struct metric *child_new(struct metrics_family *f, const char *const *values)
{
    struct metric *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->fam = f;
    if (f->n_labels) {
        c->values = calloc(f->n_labels, sizeof(char *));
        if (!c->values) goto fail;
        for (size_t i = 0; i < f->n_labels; i++) {
            c->values[i] = dup_str(values[i]);
            if (!c->values[i]) goto fail;
        }
    }
    if (f->type == M_HISTOGRAM) {
        c->buckets = calloc(f->n_bounds + 1, sizeof(*c->buckets));
        if (!c->buckets) goto fail;
    }
    return c;
fail:
    metric_free(c, f->n_labels);
    return NULL;
}

static bool same_labels(const struct metrics_family *f, const char *labels)
{
    struct buf b;
    buf_init(&b, 4096);
    for (size_t i = 0; i < f->n_labels; i++) buf_printf(&b, i ? ",%s" : "%s", f->labels[i]);
    bool same = strcmp(b.len ? b.data : "", labels ? labels : "") == 0;
    buf_fini(&b);
    return same;
}

static struct metrics_family *family_add(struct metrics *m, const char *name, const char *help,
                                         enum mtype type, const char *labels, const double *bounds,
                                         size_t n_bounds)
{
    if (!m || !name_ok(name, true)) {
        log_error("metrics_bad_name", "metric=%s", name ? name : "");
        return NULL;
    }
    for (size_t i = 0; i < n_bounds; i++) {
        if (isnan(bounds[i]) || (i > 0 && !(bounds[i] > bounds[i - 1]))) {
            log_error("metrics_bad_buckets", "metric=%s reason=\"bounds must increase\"", name);
            return NULL;
        }
    }
    pthread_mutex_lock(&m->mu);
    for (struct metrics_family *f = m->first; f; f = f->next) {
        if (strcmp(f->name, name) != 0) continue;
        bool same = f->type == type && same_labels(f, labels) && f->n_bounds == n_bounds &&
                    (n_bounds == 0 || memcmp(f->bounds, bounds, n_bounds * sizeof(double)) == 0);
        pthread_mutex_unlock(&m->mu);
        if (!same)
            log_error("metrics_conflict", "metric=%s reason=\"registered differently\"", name);
        return same ? f : NULL;
    }
    struct metrics_family *f = calloc(1, sizeof(*f));
    if (!f) goto fail;
    f->reg = m;
    f->type = type;
    f->name = dup_str(name);
    f->help = dup_str(help ? help : "");
    if (!f->name || !f->help) goto fail;
    if (parse_labels(f, labels) != 0) goto fail;
    if (n_bounds) {
        f->bounds = malloc(n_bounds * sizeof(double));
        if (!f->bounds) goto fail;
        memcpy(f->bounds, bounds, n_bounds * sizeof(double));
        f->n_bounds = n_bounds;
    }
    if (f->n_labels == 0) { /* the one series exists from the start and renders as 0 */
        f->first = f->last = child_new(f, NULL);
        if (!f->first) goto fail;
    }
    if (m->last)
        m->last->next = f;
    else
        m->first = f;
    m->last = f;
    pthread_mutex_unlock(&m->mu);
    return f;
fail:
    pthread_mutex_unlock(&m->mu);
    if (f) family_free(f);
    return NULL;
}

struct metrics_family *metrics_counter(struct metrics *m, const char *name, const char *help,
                                       const char *labels)
{
    return family_add(m, name, help, M_COUNTER, labels, NULL, 0);
}

struct metrics_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                     const char *labels)
{
    return family_add(m, name, help, M_GAUGE, labels, NULL, 0);
}

struct metrics_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                         const char *labels, const double *bounds, size_t n_bounds)
{
    size_t n = n_bounds;
    /* a trailing +Inf given by the caller is implied anyway */
    if (n > 0 && isinf(bounds[n - 1]) && bounds[n - 1] > 0) n--;
    return family_add(m, name, help, M_HISTOGRAM, labels, bounds, n);
}

struct metric *metrics_child_v(struct metrics_family *f, const char *const *values, size_t n)
{
    if (!f || n != f->n_labels) {
        log_error("metrics_bad_labels", "metric=%s want=%zu got=%zu", f ? f->name : "",
                  f ? f->n_labels : 0, n);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        if (!values[i]) return NULL;
    pthread_mutex_lock(&f->reg->mu);
    struct metric *c;
    for (c = f->first; c; c = c->next) {
        size_t i = 0;
        while (i < n && strcmp(c->values[i], values[i]) == 0) i++;
        if (i == n) break;
    }
    if (!c) {
        c = child_new(f, values);
        if (c) {
            if (f->last)
                f->last->next = c;
            else
                f->first = c;
            f->last = c;
        }
    }
    pthread_mutex_unlock(&f->reg->mu);
    return c;
}

struct metric *metrics_child(struct metrics_family *f, ...)
{
    const char *values[MAX_LABELS + 1];
    size_t n = 0;
    va_list ap;
    va_start(ap, f);
    const char *v;
    while ((v = va_arg(ap, const char *)) != NULL && n <= MAX_LABELS) values[n++] = v;
    va_end(ap);
    return metrics_child_v(f, values, n);
}

static void atomic_add_d(_Atomic uint64_t *p, double v)
{
    uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(p, &old, d2u(u2d(old) + v), memory_order_relaxed,
                                                  memory_order_relaxed)) {
    }
}

void metrics_inc(struct metric *c)
{
    metrics_add(c, 1.0);
}

void metrics_add(struct metric *c, double v)
{
    if (!c) return;
    if (c->fam->type == M_COUNTER && !(v >= 0)) return;
    if (c->fam->type == M_HISTOGRAM) return;
    atomic_add_d(&c->value, v);
}

void metrics_counter_to(struct metric *c, double v)
{
    double cur = metrics_value(c);
    if (v > cur) metrics_add(c, v - cur);
}

void metrics_set(struct metric *g, double v)
{
    if (!g || g->fam->type == M_HISTOGRAM) return;
    atomic_store_explicit(&g->value, d2u(v), memory_order_relaxed);
}

void metrics_observe(struct metric *h, double v)
{
    if (!h || h->fam->type != M_HISTOGRAM) return;
    const struct metrics_family *f = h->fam;
    size_t lo = 0, hi = f->n_bounds; /* first bound >= v; n_bounds = +Inf */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v <= f->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_add_d(&h->sum, v);
    atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
}

double metrics_value(const struct metric *c)
{
    if (!c) return 0;
    return u2d(atomic_load_explicit(&((struct metric *)c)->value, memory_order_relaxed));
}

/* ---- rendering ---- */

static int put_double(struct buf *b, double v)
{
    if (isnan(v)) return buf_printf(b, "NaN");
    if (isinf(v)) return buf_printf(b, v > 0 ? "+Inf" : "-Inf");
    char tmp[40];
    snprintf(tmp, sizeof(tmp), "%.15g", v);
    if (strtod(tmp, NULL) != v) snprintf(tmp, sizeof(tmp), "%.17g", v);
    return buf_printf(b, "%s", tmp);
}

/* HELP text escapes \ and newline; label values also escape ". */
static int put_escaped(struct buf *b, const char *s, bool quote)
{
    int rc = SF_OK;
    for (; rc == 0 && *s; s++) {
        if (*s == '\\')
            rc = buf_append(b, "\\\\", 2);
        else if (*s == '\n')
            rc = buf_append(b, "\\n", 2);
        else if (quote && *s == '"')
            rc = buf_append(b, "\\\"", 2);
        else
            rc = buf_putc(b, *s);
    }
    return rc;
}

/* name{l1="v1",...[,le="x"]} */
static int put_series(struct buf *b, const struct metrics_family *f, const struct metric *c,
                      const char *suffix, const double *le)
{
    int rc = buf_printf(b, "%s%s", f->name, suffix);
    if (f->n_labels == 0 && !le) return rc;
    rc = rc ? rc : buf_putc(b, '{');
    for (size_t i = 0; rc == 0 && i < f->n_labels; i++) {
        rc = buf_printf(b, i ? ",%s=\"" : "%s=\"", f->labels[i]);
        rc = rc ? rc : put_escaped(b, c->values[i], true);
        rc = rc ? rc : buf_putc(b, '"');
    }
    if (rc == 0 && le) {
        rc = buf_printf(b, f->n_labels ? ",le=\"" : "le=\"");
        rc = rc ? rc : put_double(b, *le);
        rc = rc ? rc : buf_putc(b, '"');
    }
    return rc ? rc : buf_putc(b, '}');
}

static int render_family(struct buf *b, const struct metrics_family *f)
{
    int rc = buf_printf(b, "# HELP %s ", f->name);
    rc = rc ? rc : put_escaped(b, f->help, false);
    rc = rc ? rc : buf_printf(b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
    for (const struct metric *c = f->first; rc == 0 && c; c = c->next) {
        if (f->type != M_HISTOGRAM) {
            rc = put_series(b, f, c, "", NULL);
            rc = rc ? rc : buf_putc(b, ' ');
            rc = rc ? rc : put_double(b, metrics_value(c));
            rc = rc ? rc : buf_putc(b, '\n');
            continue;
        }
        uint64_t cum = 0;
        for (size_t i = 0; rc == 0 && i <= f->n_bounds; i++) {
            cum += atomic_load_explicit(&((struct metric *)c)->buckets[i], memory_order_relaxed);
            double le = i < f->n_bounds ? f->bounds[i] : INFINITY;
            rc = put_series(b, f, c, "_bucket", &le);
            rc = rc ? rc : buf_printf(b, " %llu\n", (unsigned long long)cum);
        }
        double sum = u2d(atomic_load_explicit(&((struct metric *)c)->sum, memory_order_relaxed));
        rc = rc ? rc : put_series(b, f, c, "_sum", NULL);
        rc = rc ? rc : buf_putc(b, ' ');
        rc = rc ? rc : put_double(b, sum);
        rc = rc ? rc : buf_putc(b, '\n');
        rc = rc ? rc : put_series(b, f, c, "_count", NULL);
        rc = rc ? rc : buf_printf(b, " %llu\n", (unsigned long long)cum);
    }
    return rc;
}

int metrics_render(struct metrics *m, struct buf *out)
{
    if (!m || !out) return SF_EINVAL;
    int rc = SF_OK;
    pthread_mutex_lock(&m->mu);
    for (const struct metrics_family *f = m->first; rc == 0 && f; f = f->next)
        rc = render_family(out, f);
    pthread_mutex_unlock(&m->mu);
    return rc;
}

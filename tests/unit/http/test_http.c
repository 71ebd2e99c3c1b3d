/* Tests for the http library: a real server on 127.0.0.1 (ephemeral port) spoken to
 * with a small blocking socket client: routing, 404/405/413/400/500, query and header
 * access, JSON helpers, SSE (a callback stream and the broadcast hub, events in
 * order), /healthz, and /metrics parsed back by a strict exposition-format parser. */
#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "../../support/check.h"
#include "core/core.h"
#include "http/http.h"

/* ---- a tiny HTTP/1.1 client ---- */

struct reply {
    int status;
    char head[8192]; /* status line and headers */
    struct buf body; /* de-chunked */
};

static int connect_to(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t k = send(fd, c, n, MSG_NOSIGNAL);
        if (k <= 0) return;
        c += k;
        n -= (size_t)k;
    }
}

/* Decodes a chunked body; returns the number of bytes of `raw` consumed by complete
 * chunks and sets *done at the final chunk. */
static size_t dechunk(const char *raw, size_t len, struct buf *out, bool *done)
{
    size_t pos = 0;
    *done = false;
    for (;;) {
        const char *eol = memmem(raw + pos, len - pos, "\r\n", 2);
        if (!eol) return pos;
        size_t n = strtoul(raw + pos, NULL, 16);
        size_t data = (size_t)(eol - raw) + 2;
        if (n == 0) {
            *done = true;
            return data;
        }
        if (data + n + 2 > len) return pos;
        buf_append(out, raw + data, n);
        pos = data + n + 2;
    }
}

static const char *header_of(const struct reply *r, const char *name)
{
    static char val[512];
    const char *p = r->head;
    size_t nl = strlen(name);
    while ((p = strstr(p, "\r\n")) != NULL) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            p += nl + 1;
            while (*p == ' ') p++;
            size_t n = strcspn(p, "\r\n");
            if (n >= sizeof(val)) n = sizeof(val) - 1;
            memcpy(val, p, n);
            val[n] = '\0';
            return val;
        }
    }
    return NULL;
}

/* Sends `req` (a full request) and reads the reply until the server closes. */
static int roundtrip(uint16_t port, const char *req, size_t req_len, struct reply *r)
{
    memset(r, 0, sizeof(*r));
    buf_init(&r->body, 64 << 20);
    int fd = connect_to(port);
    if (fd < 0) return -1;
    send_all(fd, req, req_len);
    struct buf raw;
    buf_init(&raw, 64 << 20);
    char tmp[16384];
    ssize_t k;
    while ((k = recv(fd, tmp, sizeof(tmp), 0)) > 0) buf_append(&raw, tmp, (size_t)k);
    close(fd);
    int rc = -1;
    const char *end = raw.len ? memmem(raw.data, raw.len, "\r\n\r\n", 4) : NULL;
    if (end && sscanf(raw.data, "HTTP/1.%*d %d", &r->status) == 1) {
        size_t hl = (size_t)(end - raw.data);
        if (hl >= sizeof(r->head)) hl = sizeof(r->head) - 1;
        memcpy(r->head, raw.data, hl);
        r->head[hl] = '\0';
        const char *body = end + 4;
        size_t blen = raw.len - (size_t)(body - raw.data);
        const char *te = header_of(r, "Transfer-Encoding");
        if (te && strcasecmp(te, "chunked") == 0) {
            bool done;
            dechunk(body, blen, &r->body, &done);
        } else {
            buf_append(&r->body, body, blen);
        }
        rc = 0;
    }
    buf_fini(&raw);
    return rc;
}

static int request(uint16_t port, const char *method, const char *path, const char *extra_headers,
                   const char *body, struct reply *r)
{
    struct buf q;
    buf_init(&q, 64 << 20);
    buf_printf(&q, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s", method, path,
               extra_headers ? extra_headers : "");
    if (body)
        buf_printf(&q, "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
    else
        buf_printf(&q, "\r\n");
    int rc = roundtrip(port, q.data, q.len, r);
    buf_fini(&q);
    return rc;
}

static void reply_fini(struct reply *r)
{
    buf_fini(&r->body);
}

static bool body_has(const struct reply *r, const char *s)
{
    return r->body.len && strstr(r->body.data, s) != NULL;
}

/* ---- handlers ---- */

static int h_hello(struct http_request *req, struct http_response *res, void *ud)
{
    (void)req;
    (void)ud;
    return http_response_printf(res, 200, NULL, "hello");
}

static int h_items(struct http_request *req, struct http_response *res, void *ud)
{
    (void)ud;
    const char *name = http_request_query(req, "name");
    const char *hdr = http_request_header(req, "x-test");
    http_response_header(res, "X-Route", http_request_route(req));
    return http_response_printf(res, 200, NULL, "tail=%s name=%s hdr=%s method=%s",
                                http_request_tail(req), name ? name : "-", hdr ? hdr : "-",
                                http_request_method(req));
}

static int h_items_special(struct http_request *req, struct http_response *res, void *ud)
{
    (void)req;
    (void)ud;
    return http_response_printf(res, 201, NULL, "special");
}

static int h_echo(struct http_request *req, struct http_response *res, void *ud)
{
    (void)ud;
    size_t len;
    const char *b = http_request_body(req, &len);
    return http_response_set(res, 200, "application/octet-stream", b, len);
}

static int h_json(struct http_request *req, struct http_response *res, void *ud)
{
    (void)ud;
    cJSON *in = http_request_json(req, res);
    if (!in) return SF_OK; /* the 400 is set */
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(in, "a");
    if (!cJSON_IsNumber(a)) {
        cJSON_Delete(in);
        return http_response_error(res, 400, "field a must be a number");
    }
    cJSON *out = cJSON_CreateObject();
    cJSON_AddNumberToObject(out, "twice", 2 * a->valuedouble);
    int rc = http_response_json(res, 200, out);
    cJSON_Delete(out);
    cJSON_Delete(in);
    return rc;
}

static int h_fail(struct http_request *req, struct http_response *res, void *ud)
{
    (void)req;
    (void)res;
    (void)ud;
    return SF_EIO;
}

/* a stream of N numbered events, one per call, then the end */
struct counter_stream {
    int next, n;
};

static int count_stream(void *ud, struct buf *out)
{
    struct counter_stream *cs = ud;
    char data[64];
    snprintf(data, sizeof(data), "%d", cs->next);
    int rc = http_sse_format(out, "tick", data);
    if (rc != 0) return rc;
    if (cs->next == 3) http_sse_format(out, NULL, "line one\nline two");
    return ++cs->next == cs->n ? SF_EXIT : 0;
}

static atomic_int streams_freed;

static void count_free(void *ud)
{
    free(ud);
    atomic_fetch_add(&streams_freed, 1);
}

static int h_events(struct http_request *req, struct http_response *res, void *ud)
{
    (void)req;
    (void)ud;
    struct counter_stream *cs = calloc(1, sizeof(*cs));
    if (!cs) return SF_ENOMEM;
    cs->n = 50;
    return http_response_sse(res, count_stream, cs, count_free);
}

static int h_live(struct http_request *req, struct http_response *res, void *ud)
{
    (void)req;
    return http_response_sse_hub(res, ud);
}

static atomic_int unhealthy;

static int health(void *ud, char *reason, size_t len)
{
    (void)ud;
    if (!atomic_load(&unhealthy)) return 0;
    snprintf(reason, len, "store is closed");
    return SF_ESTATE;
}

/* ---- SSE client ---- */

struct sse_ev {
    char event[32];
    char data[128];
};

/* Parses complete events from SSE text; returns how many. Comments are skipped. */
static size_t parse_sse(const char *text, struct sse_ev *evs, size_t max)
{
    size_t n = 0;
    struct sse_ev cur = {{0}, {0}};
    bool any = false;
    const char *p = text;
    while (*p && n < max) {
        size_t l = strcspn(p, "\n");
        if (!p[l]) break; /* incomplete line */
        if (l == 0) {
            if (any) evs[n++] = cur;
            memset(&cur, 0, sizeof(cur));
            any = false;
        } else if (strncmp(p, "event: ", 7) == 0) {
            snprintf(cur.event, sizeof(cur.event), "%.*s", (int)(l - 7), p + 7);
            any = true;
        } else if (strncmp(p, "data: ", 6) == 0) {
            size_t used = strlen(cur.data);
            snprintf(cur.data + used, sizeof(cur.data) - used, "%s%.*s", used ? "\n" : "",
                     (int)(l - 6), p + 6);
            any = true;
        }
        p += l + 1;
    }
    return n;
}

/* Opens an SSE stream and reads until `want` events arrived (or EOF / timeout). */
static size_t sse_read(uint16_t port, const char *path, size_t want, struct sse_ev *evs,
                       char *ctype, size_t ctype_len, int *fd_out)
{
    int fd = connect_to(port);
    if (fd < 0) return 0;
    char req[256];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n", path);
    send_all(fd, req, (size_t)n);
    struct buf raw, body;
    buf_init(&raw, 16 << 20);
    buf_init(&body, 16 << 20);
    size_t got = 0;
    char tmp[4096];
    ssize_t k;
    while (got < want && (k = recv(fd, tmp, sizeof(tmp), 0)) > 0) {
        buf_append(&raw, tmp, (size_t)k);
        const char *end = memmem(raw.data, raw.len, "\r\n\r\n", 4);
        if (!end) continue;
        if (ctype && ctype_len) {
            const char *ct = strcasestr(raw.data, "\r\nContent-Type: ");
            if (ct && ct < end)
                snprintf(ctype, ctype_len, "%.*s", (int)strcspn(ct + 16, "\r\n"), ct + 16);
        }
        bool done;
        buf_reset(&body);
        const char *b = end + 4;
        dechunk(b, raw.len - (size_t)(b - raw.data), &body, &done);
        if (body.len) got = parse_sse(body.data, evs, want);
        if (done) break;
    }
    buf_fini(&raw);
    buf_fini(&body);
    if (fd_out)
        *fd_out = fd;
    else
        close(fd);
    return got;
}

/* ---- the Prometheus parser ---- */

struct sample {
    char name[128];
    char labels[8][2][128]; /* name, unescaped value */
    size_t n_labels;
    double value;
};

static const char *parse_name(const char *p, char *out, size_t cap, bool colon)
{
    size_t n = 0;
    while ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' ||
           (colon && *p == ':') || (n > 0 && *p >= '0' && *p <= '9')) {
        if (n + 1 < cap) out[n++] = *p;
        p++;
    }
    out[n] = '\0';
    return n ? p : NULL;
}

static bool parse_value(const char *p, double *v)
{
    if (strcmp(p, "+Inf") == 0)
        *v = INFINITY;
    else if (strcmp(p, "-Inf") == 0)
        *v = -INFINITY;
    else if (strcmp(p, "NaN") == 0)
        *v = NAN;
    else {
        char *end;
        *v = strtod(p, &end);
        if (end == p || *end) return false;
    }
    return true;
}

/* One sample line: name{l="v",...} value. false when it does not match the format. */
static bool parse_sample(const char *line, struct sample *s)
{
    memset(s, 0, sizeof(*s));
    const char *p = parse_name(line, s->name, sizeof(s->name), true);
    if (!p) return false;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            if (s->n_labels == 8) return false;
            char *ln = s->labels[s->n_labels][0], *lv = s->labels[s->n_labels][1];
            p = parse_name(p, ln, 128, false);
            if (!p || p[0] != '=' || p[1] != '"') return false;
            p += 2;
            size_t n = 0;
            while (*p != '"') {
                char c = *p++;
                if (!c || c == '\n') return false;
                if (c == '\\') {
                    c = *p++;
                    if (c == 'n')
                        c = '\n';
                    else if (c != '\\' && c != '"')
                        return false;
                }
                if (n + 1 < 128) lv[n++] = c;
            }
            lv[n] = '\0';
            p++;
            s->n_labels++;
            if (*p == ',')
                p++;
            else if (*p != '}')
                return false;
        }
        p++;
    }
    if (*p != ' ') return false;
    return parse_value(p + 1, &s->value);
}

static const char *label(const struct sample *s, const char *name)
{
    for (size_t i = 0; i < s->n_labels; i++)
        if (strcmp(s->labels[i][0], name) == 0) return s->labels[i][1];
    return NULL;
}

/* Label set without "le", as one string, for grouping histogram series. */
static void series_key(const struct sample *s, const char *base, char *out, size_t cap)
{
    size_t used = (size_t)snprintf(out, cap, "%s", base);
    for (size_t i = 0; i < s->n_labels && used < cap; i++) {
        if (strcmp(s->labels[i][0], "le") == 0) continue;
        used +=
            (size_t)snprintf(out + used, cap - used, "|%s=%s", s->labels[i][0], s->labels[i][1]);
    }
}

struct hist_state {
    char key[512];
    double last_le, last_count, inf_count, count;
    bool has_inf, has_count, has_sum;
};

/* Checks the whole exposition; fills samples. Returns the number of format errors. */
static int check_exposition(const char *text, struct sample *samples, size_t max, size_t *n_out)
{
    int errors = 0;
    char types[64][128], type_of[64][16];
    size_t n_types = 0, n = 0;
    char helped[64][128];
    size_t n_help = 0;
    static struct hist_state hs[64];
    size_t n_hs = 0;
    const char *p = text;
    while (*p) {
        size_t l = strcspn(p, "\n");
        if (!p[l]) {
            errors++; /* the last line must end in \n */
            break;
        }
        char line[1024];
        snprintf(line, sizeof(line), "%.*s", (int)l, p);
        p += l + 1;
        if (strncmp(line, "# HELP ", 7) == 0) {
            char name[128];
            if (!parse_name(line + 7, name, sizeof(name), true)) errors++;
            if (n_help < 64) snprintf(helped[n_help++], 128, "%s", name);
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128];
            const char *q = parse_name(line + 7, name, sizeof(name), true);
            bool helped_before = false;
            for (size_t i = 0; i < n_help; i++) helped_before |= !strcmp(helped[i], name);
            CHECK_MSG(helped_before, "HELP does not precede TYPE for %s", name);
            if (!q || *q != ' ' ||
                (strcmp(q + 1, "counter") && strcmp(q + 1, "gauge") && strcmp(q + 1, "histogram")))
                errors++;
            else if (n_types < 64) {
                snprintf(types[n_types], 128, "%s", name);
                snprintf(type_of[n_types++], 16, "%s", q + 1);
            }
            continue;
        }
        if (line[0] == '#') continue;
        struct sample s;
        if (!parse_sample(line, &s)) {
            fprintf(stderr, "bad sample line: %s\n", line);
            errors++;
            continue;
        }
        /* the family: the name itself, or a histogram's base name */
        const char *type = NULL;
        char base[128];
        snprintf(base, sizeof(base), "%s", s.name);
        for (size_t i = 0; i < n_types && !type; i++)
            if (!strcmp(types[i], s.name)) type = type_of[i];
        const char *suffixes[] = {"_bucket", "_sum", "_count"};
        for (size_t k = 0; k < 3 && !type; k++) {
            size_t bl = strlen(s.name), sl = strlen(suffixes[k]);
            if (bl > sl && !strcmp(s.name + bl - sl, suffixes[k])) {
                snprintf(base, sizeof(base), "%.*s", (int)(bl - sl), s.name);
                for (size_t i = 0; i < n_types && !type; i++)
                    if (!strcmp(types[i], base) && !strcmp(type_of[i], "histogram"))
                        type = type_of[i];
            }
        }
        CHECK_MSG(type != NULL, "sample %s before its TYPE line", s.name);
        if (type && !strcmp(type, "histogram")) {
            char key[512];
            series_key(&s, base, key, sizeof(key));
            struct hist_state *h = NULL;
            for (size_t i = 0; i < n_hs && !h; i++)
                if (!strcmp(hs[i].key, key)) h = &hs[i];
            if (!h && n_hs < 64) {
                h = &hs[n_hs++];
                memset(h, 0, sizeof(*h));
                snprintf(h->key, sizeof(h->key), "%s", key);
                h->last_le = -INFINITY;
            }
            if (!h) continue;
            const char *le = label(&s, "le");
            if (strstr(s.name, "_bucket")) {
                double lev;
                CHECK(le && parse_value(le, &lev));
                if (!le || !parse_value(le, &lev)) continue;
                CHECK_MSG(lev > h->last_le, "%s: le not increasing", key);
                CHECK_MSG(s.value >= h->last_count, "%s: buckets not cumulative", key);
                CHECK_MSG(!h->has_inf, "%s: bucket after +Inf", key);
                h->last_le = lev;
                h->last_count = s.value;
                if (isinf(lev)) {
                    h->has_inf = true;
                    h->inf_count = s.value;
                }
            } else if (strstr(s.name, "_count")) {
                CHECK_MSG(h->has_inf, "%s: _count before the +Inf bucket", key);
                h->has_count = true;
                h->count = s.value;
            } else {
                h->has_sum = true;
            }
        }
        if (n < max) samples[n++] = s;
    }
    for (size_t i = 0; i < n_hs; i++) {
        CHECK_MSG(hs[i].has_inf && hs[i].has_count && hs[i].has_sum, "%s incomplete", hs[i].key);
        CHECK_MSG(hs[i].inf_count == hs[i].count, "%s: +Inf %g != _count %g", hs[i].key,
                  hs[i].inf_count, hs[i].count);
    }
    *n_out = n;
    return errors;
}

static const struct sample *find_sample(const struct sample *s, size_t n, const char *name,
                                        const char *lname, const char *lvalue)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(s[i].name, name) != 0) continue;
        if (!lname) return &s[i];
        const char *v = label(&s[i], lname);
        if (v && strcmp(v, lvalue) == 0) return &s[i];
    }
    return NULL;
}

/* ---- tests ---- */

struct inc_arg {
    struct metric *c, *h;
};

static void *inc_thread(void *p)
{
    struct inc_arg *a = p;
    for (int i = 0; i < 1000; i++) {
        metrics_inc(a->c);
        metrics_observe(a->h, 0.5);
    }
    return NULL;
}

static void test_metrics_unit(void)
{
    struct metrics *m = metrics_new();
    CHECK(metrics_counter(m, "1bad", "x", NULL) == NULL);
    CHECK(metrics_counter(m, "bad-name", "x", NULL) == NULL);
    CHECK(metrics_counter(m, "ok_total", "x", "__reserved") == NULL);
    CHECK(metrics_counter(m, "ok_total", "x", "a,a") == NULL);
    const double inc[] = {1, 1};
    CHECK(metrics_histogram(m, "h", "x", NULL, inc, 2) == NULL);
    CHECK(metrics_histogram(m, "h2", "x", "le", inc, 1) == NULL);
    struct metrics_family *f = metrics_counter(m, "ok_total", "x", "a,b");
    CHECK(f != NULL);
    CHECK(metrics_counter(m, "ok_total", "x", "a,b") == f);
    CHECK(metrics_gauge(m, "ok_total", "x", "a,b") == NULL);
    CHECK(metrics_child(f, "1", (const char *)NULL) == NULL);
    struct metric *c = metrics_child(f, "1", "2", (const char *)NULL);
    CHECK(c != NULL && metrics_child(f, "1", "2", (const char *)NULL) == c);
    metrics_add(c, 2.5);
    metrics_add(c, -1); /* ignored: counters only go up */
    CHECK(metrics_value(c) == 2.5);
    metrics_counter_to(c, 7);
    metrics_counter_to(c, 3); /* never lowers */
    CHECK(metrics_value(c) == 7);
    struct buf b;
    buf_init(&b, 1 << 20);
    CHECK_EQ_INT(metrics_render(m, &b), 0);
    CHECK(b.len && strstr(b.data, "ok_total{a=\"1\",b=\"2\"} 7\n") != NULL);
    buf_fini(&b);
    metrics_destroy(&m);
    CHECK(m == NULL);
}

static void test_json_parse(void)
{
    cJSON *v = NULL;
    char err[128];
    CHECK_EQ_INT(http_json_parse("{\"a\":1}  \n", 10, 100, &v, err, sizeof(err)), 0);
    CHECK(cJSON_IsObject(v));
    cJSON_Delete(v);
    CHECK(http_json_parse("{\"a\":1} x", 9, 100, &v, err, sizeof(err)) == SF_EFORMAT);
    CHECK(v == NULL && strstr(err, "byte 8") != NULL);
    CHECK(http_json_parse("{\"a\":1}", 7, 6, &v, err, sizeof(err)) == SF_ERANGE);
    CHECK(http_json_parse("", 0, 6, &v, err, sizeof(err)) == SF_EFORMAT);
    CHECK(http_json_parse("{\"a\":", 5, 100, &v, NULL, 0) == SF_EFORMAT);
    /* the length bounds the parse even when the text goes on */
    CHECK_EQ_INT(http_json_parse("[1,2]garbage", 5, 100, &v, err, sizeof(err)), 0);
    CHECK(cJSON_GetArraySize(v) == 2);
    cJSON_Delete(v);

    struct buf b;
    buf_init(&b, 4096);
    CHECK_EQ_INT(http_sse_format(&b, "x", "a\nb\r\nc"), 0);
    CHECK(strcmp(b.data, "event: x\ndata: a\ndata: b\ndata: c\n\n") == 0);
    buf_reset(&b);
    CHECK_EQ_INT(http_sse_format(&b, NULL, ""), 0);
    CHECK(strcmp(b.data, "data: \n\n") == 0);
    CHECK(http_sse_format(&b, "bad\nevent", "x") == SF_EINVAL);
    buf_fini(&b);
}

struct publisher {
    struct http_sse_hub *hub;
    int n;
};

static void *publish_thread(void *p)
{
    struct publisher *pub = p;
    for (int tries = 0; tries < 500 && http_sse_hub_subscribers(pub->hub) == 0; tries++)
        time_sleep_ms(10);
    for (int i = 0; i < pub->n; i++) {
        char d[32];
        snprintf(d, sizeof(d), "%d", i);
        http_sse_hub_publish(pub->hub, "live", d);
    }
    return NULL;
}

static void test_server(void)
{
    CHECK(http_server_new("not-an-address", 0, NULL) == NULL);
    log_set_level(LOG_WARN);

    struct http_options opt = {.max_body = 1024};
    struct http_server *s = http_server_new("127.0.0.1", 0, &opt);
    CHECK(s != NULL);
    if (!s) return;
    struct metrics *m = metrics_new();
    struct http_sse_hub *hub = http_sse_hub_new(10000);
    CHECK_EQ_INT(http_route(s, "GET", "/hello", h_hello, NULL), 0);
    CHECK_EQ_INT(http_route(s, "GET", "/items/*", h_items, NULL), 0);
    CHECK_EQ_INT(http_route(s, "GET", "/items/special", h_items_special, NULL), 0);
    CHECK_EQ_INT(http_route(s, "POST", "/echo", h_echo, NULL), 0);
    CHECK_EQ_INT(http_route(s, "POST", "/json", h_json, NULL), 0);
    CHECK_EQ_INT(http_route(s, "*", "/fail", h_fail, NULL), 0);
    CHECK_EQ_INT(http_route(s, "GET", "/events", h_events, NULL), 0);
    CHECK_EQ_INT(http_route(s, "GET", "/live", h_live, hub), 0);
    CHECK(http_route(s, "GET", "no-slash", h_hello, NULL) == SF_EINVAL);
    CHECK_EQ_INT(http_serve_standard(s, m, health, NULL), 0);
    CHECK_EQ_INT(http_server_port(s), 0);
    CHECK_EQ_INT(http_server_start(s), 0);
    CHECK(http_route(s, "GET", "/late", h_hello, NULL) == SF_ESTATE);
    uint16_t port = http_server_port(s);
    CHECK(port != 0);

    struct reply r;
    CHECK_EQ_INT(request(port, "GET", "/hello", NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.body.len == 5 && memcmp(r.body.data, "hello", 5) == 0);
    reply_fini(&r);

    CHECK_EQ_INT(request(port, "HEAD", "/hello", NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body.len, 0);
    reply_fini(&r);

    /* prefix route, query decoding, headers */
    CHECK_EQ_INT(request(port, "GET", "/items/42/x?name=a%20b&z=1", "X-Test: yes\r\n", NULL, &r),
                 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_MSG(body_has(&r, "tail=42/x name=a b hdr=yes method=GET"), "%s",
              r.body.len ? r.body.data : "");
    CHECK(header_of(&r, "X-Route") && strcmp(header_of(&r, "X-Route"), "/items/") == 0);
    reply_fini(&r);
    /* the exact route wins over the prefix */
    CHECK_EQ_INT(request(port, "GET", "/items/special", NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.status, 201);
    reply_fini(&r);

    /* 404 and 405 */
    CHECK_EQ_INT(request(port, "GET", "/nope", NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.status, 404);
    CHECK(body_has(&r, "\"code\":404"));
    CHECK(header_of(&r, "Content-Type") &&
          strcmp(header_of(&r, "Content-Type"), "application/json") == 0);
    reply_fini(&r);
    CHECK_EQ_INT(request(port, "POST", "/hello", NULL, "x", &r), 0);
    CHECK_EQ_INT(r.status, 405);
    CHECK(header_of(&r, "Allow") && strcmp(header_of(&r, "Allow"), "GET") == 0);
    reply_fini(&r);

    /* bodies: echo, at the cap, over the cap (declared, and chunked) */
    CHECK_EQ_INT(request(port, "POST", "/echo", NULL, "ping", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(r.body.len == 4 && memcmp(r.body.data, "ping", 4) == 0);
    reply_fini(&r);
    char *big = malloc(4097);
    memset(big, 'a', 4096);
    big[1024] = '\0';
    CHECK_EQ_INT(request(port, "POST", "/echo", NULL, big, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK_EQ_INT(r.body.len, 1024);
    reply_fini(&r);
    big[1024] = 'a';
    big[1025] = '\0';
    const char *over = "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       "Content-Length: 5000\r\n\r\n"; /* no body sent: must not wait for it */
    CHECK_EQ_INT(roundtrip(port, over, strlen(over), &r), 0);
    CHECK_EQ_INT(r.status, 413);
    CHECK(body_has(&r, "larger than 1024"));
    reply_fini(&r);
    struct buf q;
    buf_init(&q, 1 << 20);
    buf_printf(&q, "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                   "Transfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 3; i++) buf_printf(&q, "400\r\n%.1024s\r\n", big);
    buf_printf(&q, "0\r\n\r\n");
    CHECK_EQ_INT(roundtrip(port, q.data, q.len, &r), 0);
    CHECK_EQ_INT(r.status, 413);
    reply_fini(&r);
    buf_fini(&q);
    free(big);

    /* JSON */
    CHECK_EQ_INT(request(port, "POST", "/json", NULL, "{\"a\": 21}", &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_has(&r, "\"twice\":42"));
    reply_fini(&r);
    CHECK_EQ_INT(request(port, "POST", "/json", NULL, "{\"a\": 2", &r), 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(body_has(&r, "invalid JSON at byte"));
    reply_fini(&r);
    CHECK_EQ_INT(request(port, "POST", "/json", NULL, "[1]", &r), 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(body_has(&r, "must be a JSON object"));
    reply_fini(&r);
    CHECK_EQ_INT(request(port, "POST", "/json", NULL, "", &r), 0);
    CHECK_EQ_INT(r.status, 400);
    CHECK(body_has(&r, "empty body"));
    reply_fini(&r);
    CHECK_EQ_INT(request(port, "POST", "/json", NULL, "{\"a\": \"x\"}", &r), 0);
    CHECK_EQ_INT(r.status, 400);
    reply_fini(&r);

    /* a handler that fails without a response */
    CHECK_EQ_INT(request(port, "DELETE", "/fail", NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.status, 500);
    CHECK(body_has(&r, "internal error"));
    reply_fini(&r);

    /* SSE from a callback: 50 ticks in order, one two-line event, then the end */
    static struct sse_ev evs[200];
    char ctype[64] = "";
    size_t got = sse_read(port, "/events", 200, evs, ctype, sizeof(ctype), NULL);
    CHECK_EQ_INT(got, 51);
    CHECK_MSG(strcmp(ctype, "text/event-stream") == 0, "%s", ctype);
    int want = 0;
    for (size_t i = 0; i < got; i++) {
        if (evs[i].event[0] == '\0') {
            CHECK(strcmp(evs[i].data, "line one\nline two") == 0);
            CHECK_EQ_INT(want, 4);
            continue;
        }
        CHECK(strcmp(evs[i].event, "tick") == 0);
        CHECK_EQ_INT(strtol(evs[i].data, NULL, 10), want);
        want++;
    }
    for (int i = 0; i < 200 && atomic_load(&streams_freed) == 0; i++) time_sleep_ms(10);
    CHECK_EQ_INT(atomic_load(&streams_freed), 1);

    /* SSE from the hub: a publisher thread waits for the subscriber, then sends 300 */
    struct publisher pub = {hub, 300};
    pthread_t th;
    pthread_create(&th, NULL, publish_thread, &pub);
    int fd = -1;
    static struct sse_ev live[300];
    got = sse_read(port, "/live", 300, live, NULL, 0, &fd);
    pthread_join(th, NULL);
    CHECK_EQ_INT(got, 300);
    for (size_t i = 0; i < got; i++) {
        CHECK(strcmp(live[i].event, "live") == 0);
        CHECK_EQ_INT(strtol(live[i].data, NULL, 10), (long)i);
    }
    if (fd >= 0) close(fd);

    /* /healthz */
    CHECK_EQ_INT(request(port, "GET", "/healthz", NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    CHECK(body_has(&r, "\"status\":\"ok\""));
    reply_fini(&r);
    atomic_store(&unhealthy, 1);
    CHECK_EQ_INT(request(port, "GET", "/healthz", NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.status, 503);
    CHECK(body_has(&r, "store is closed"));
    reply_fini(&r);

    /* /metrics: our own families, updated from 4 threads */
    struct metrics_family *jobs =
        metrics_counter(m, "saeflow_jobs_total", "Jobs done.\nSecond line \\ here.", "kind");
    struct metrics_family *temp = metrics_gauge(m, "saeflow_temperature", "A gauge.", NULL);
    const double bounds[] = {0.1, 1, 10};
    struct metrics_family *lat =
        metrics_histogram(m, "saeflow_latency_seconds", "Latency.", "op", bounds, 3);
    CHECK(jobs && temp && lat);
    const char *weird = "a \"quoted\" \\ value\nnext";
    struct inc_arg ia = {metrics_child(jobs, weird, (const char *)NULL),
                         metrics_child(lat, "mt", (const char *)NULL)};
    pthread_t ts[4];
    for (int i = 0; i < 4; i++) pthread_create(&ts[i], NULL, inc_thread, &ia);
    for (int i = 0; i < 4; i++) pthread_join(ts[i], NULL);
    metrics_set(metrics_child(temp, (const char *)NULL), -3.25);
    struct metric *h = metrics_child(lat, "single", (const char *)NULL);
    const double obs[] = {0.05, 0.1, 0.5, 5, 50, 1e9};
    for (size_t i = 0; i < SF_ARRAY_LEN(obs); i++) metrics_observe(h, obs[i]);

    CHECK_EQ_INT(request(port, "GET", "/metrics", NULL, NULL, &r), 0);
    CHECK_EQ_INT(r.status, 200);
    const char *ct = header_of(&r, "Content-Type");
    CHECK(ct && strncmp(ct, "text/plain; version=0.0.4", 25) == 0);
    static struct sample samples[512];
    size_t ns = 0;
    CHECK_EQ_INT(check_exposition(r.body.len ? r.body.data : "", samples, 512, &ns), 0);
    const struct sample *x = find_sample(samples, ns, "saeflow_jobs_total", "kind", weird);
    CHECK(x && x->value == 4000);
    x = find_sample(samples, ns, "saeflow_temperature", NULL, NULL);
    CHECK(x && x->value == -3.25);
    x = find_sample(samples, ns, "saeflow_latency_seconds_count", "op", "mt");
    CHECK(x && x->value == 4000);
    x = find_sample(samples, ns, "saeflow_latency_seconds_sum", "op", "mt");
    CHECK(x && x->value == 2000);
    /* single: le=0.1 -> 2 (0.1 is inclusive), 1 -> 3, 10 -> 4, +Inf -> 6 */
    const double want_cum[] = {2, 3, 4, 6};
    size_t nb = 0;
    for (size_t i = 0; i < ns; i++) {
        if (strcmp(samples[i].name, "saeflow_latency_seconds_bucket") != 0) continue;
        const char *op = label(&samples[i], "op");
        if (!op || strcmp(op, "single") != 0) continue;
        if (nb < 4) CHECK_EQ_INT(samples[i].value, want_cum[nb]);
        nb++;
    }
    CHECK_EQ_INT(nb, 4);
    x = find_sample(samples, ns, "saeflow_latency_seconds_sum", "op", "single");
    CHECK(x && fabs(x->value - (0.05 + 0.1 + 0.5 + 5 + 50 + 1e9)) < 1e-6);
    /* the server counted its own requests: /hello was served with 200 twice (GET, HEAD) */
    bool found = false;
    for (size_t i = 0; i < ns; i++) {
        const struct sample *sp = &samples[i];
        if (strcmp(sp->name, "http_requests_total") || !label(sp, "route")) continue;
        if (!strcmp(label(sp, "route"), "/hello") && !strcmp(label(sp, "method"), "GET") &&
            !strcmp(label(sp, "code"), "200")) {
            CHECK_EQ_INT(sp->value, 1);
            found = true;
        }
    }
    CHECK(found);
    CHECK(find_sample(samples, ns, "http_requests_total", "code", "413") != NULL);
    CHECK(find_sample(samples, ns, "http_request_duration_seconds_count", "route", "/json"));
    CHECK(r.body.len && strstr(r.body.data, "# HELP saeflow_jobs_total Jobs done.\\nSecond line "
                                            "\\\\ here.\n") != NULL);
    reply_fini(&r);

    http_server_destroy(&s);
    CHECK(s == NULL);
    http_sse_hub_destroy(&hub);
    metrics_destroy(&m);
}

/* Keep-alives on an idle stream, and a shutdown with a client still connected. */
static void test_idle_stream_and_shutdown(void)
{
    struct http_options opt = {.keepalive_ms = 50};
    struct http_server *s = http_server_new("127.0.0.1", 0, &opt);
    struct http_sse_hub *hub = http_sse_hub_new(4);
    CHECK(s && hub);
    if (!s || !hub) return;
    CHECK_EQ_INT(http_route(s, "GET", "/live", h_live, hub), 0);
    CHECK_EQ_INT(http_server_start(s), 0);
    int fd = connect_to(http_server_port(s));
    CHECK(fd >= 0);
    const char *req = "GET /live HTTP/1.1\r\nHost: x\r\n\r\n";
    send_all(fd, req, strlen(req));
    /* read until two keep-alive comments arrived */
    struct buf raw;
    buf_init(&raw, 1 << 20);
    char tmp[1024];
    ssize_t k;
    int comments = 0;
    while (comments < 2 && (k = recv(fd, tmp, sizeof(tmp), 0)) > 0) {
        buf_append(&raw, tmp, (size_t)k);
        comments = 0;
        for (const char *p = raw.data; (p = strstr(p, ": keep-alive\n\n")) != NULL; p++) comments++;
    }
    CHECK_EQ_INT(comments, 2);
    CHECK_EQ_INT(http_sse_hub_subscribers(hub), 1);
    /* the hub goes first; the open stream keeps it alive and ends cleanly */
    http_sse_hub_destroy(&hub);
    /* the server ends the stream with the last chunk (the connection stays open) */
    while (!strstr(raw.data, "\r\n0\r\n\r\n") && (k = recv(fd, tmp, sizeof(tmp), 0)) > 0)
        buf_append(&raw, tmp, (size_t)k);
    CHECK(strstr(raw.data, "\r\n0\r\n\r\n") != NULL);
    buf_fini(&raw);
    close(fd);

    /* a second server, destroyed while a subscriber is still connected */
    struct http_sse_hub *hub2 = http_sse_hub_new(4);
    struct http_server *s2 = http_server_new("127.0.0.1", 0, NULL);
    CHECK_EQ_INT(http_route(s2, "GET", "/live", h_live, hub2), 0);
    CHECK_EQ_INT(http_server_start(s2), 0);
    fd = connect_to(http_server_port(s2));
    send_all(fd, req, strlen(req));
    k = recv(fd, tmp, sizeof(tmp), 0); /* the response headers */
    CHECK(k > 0);
    for (int i = 0; i < 500 && http_sse_hub_subscribers(hub2) == 0; i++) time_sleep_ms(10);
    CHECK_EQ_INT(http_sse_hub_subscribers(hub2), 1);
    /* overflow the 4-event queue: the subscriber is told how many it lost, or drained
     * them already; either way destroy must not hang */
    for (int i = 0; i < 20; i++) http_sse_hub_publish(hub2, "e", "x");
    http_server_destroy(&s2);
    CHECK_EQ_INT(http_sse_hub_subscribers(hub2), 0);
    http_sse_hub_destroy(&hub2);
    close(fd);
    http_server_destroy(&s);
}

int main(void)
{
    log_init("test_http", LOG_LOGFMT, LOG_OFF); /* the error cases log by design */
    test_metrics_unit();
    test_json_parse();
    test_server();
    test_idle_stream_and_shutdown();
    return check_exit();
}

/* http: the embedded HTTP server on libmicrohttpd (thread per connection), routing,
 * request/response helpers, JSON on cJSON, streaming responses, Server-Sent Events
 * with a broadcast hub, and the standard /metrics and /healthz routes. The Prometheus
 * registry itself is in metrics.c. See http.h for the contract. */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#define MAX_EXTRA_HEADERS  16
#define STREAM_PENDING_MAX (64u << 20) /* a stream callback may queue at most this */

struct route {
    char *method; /* "*" = any */
    char *path;   /* without the trailing '*' for prefixes */
    size_t plen;
    bool prefix;
    http_handler_fn fn;
    void *ud;
};

struct http_server {
    struct MHD_Daemon *daemon;
    struct sockaddr_storage addr;
    bool v6;
    struct http_options o;
    struct route *routes;
    size_t n_routes, cap_routes;
    uint16_t port;
    atomic_bool stopping;
    /* standard routes */
    struct metrics *metrics;
    struct metrics_family *m_requests, *m_duration;
    http_health_fn health_fn;
    void *health_ud;
};

struct http_request {
    struct http_server *srv;
    struct MHD_Connection *conn;
    const char *method;
    const char *path;
    const struct route *route;
    struct buf body;
    bool too_large;
    bool responded; /* a response was queued before the body was read */
    int status;     /* for the request metrics */
    int64_t t0;
};

struct http_response {
    int status;
    char ctype[128];
    struct buf body;
    char *hname[MAX_EXTRA_HEADERS];
    char *hvalue[MAX_EXTRA_HEADERS];
    size_t n_headers;
    http_stream_fn stream_fn;
    void *stream_ud;
    void (*stream_free)(void *);
    bool sse;
};

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static void copy_str(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap) n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---- server ---- */

struct http_server *http_server_new(const char *bind_addr, uint16_t port,
                                    const struct http_options *opts)
{
    if (!bind_addr) return NULL;
    struct http_server *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    if (opts) s->o = *opts;
    if (!s->o.max_body) s->o.max_body = 1u << 20;
    if (!s->o.max_connections) s->o.max_connections = 256;
    if (!s->o.timeout_s) s->o.timeout_s = 60;
    if (!s->o.keepalive_ms) s->o.keepalive_ms = 15000;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&s->addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&s->addr;
    if (inet_pton(AF_INET, bind_addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
    } else if (inet_pton(AF_INET6, bind_addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        s->v6 = true;
    } else {
        log_error("http_bad_address", "addr=%s reason=\"not an IPv4 or IPv6 literal\"", bind_addr);
        free(s);
        return NULL;
    }
    return s;
}

int http_route(struct http_server *s, const char *method, const char *path, http_handler_fn fn,
               void *ud)
{
    if (!s || !method || !path || path[0] != '/' || !fn) return SF_EINVAL;
    if (s->daemon) return SF_ESTATE;
    if (s->n_routes == s->cap_routes) {
        size_t nc = s->cap_routes ? 2 * s->cap_routes : 16;
        struct route *nr = realloc(s->routes, nc * sizeof(*nr));
        if (!nr) return SF_ENOMEM;
        s->routes = nr;
        s->cap_routes = nc;
    }
    struct route r = {.fn = fn, .ud = ud};
    r.method = dup_str(method);
    r.path = dup_str(path);
    if (!r.method || !r.path) {
        free(r.method);
        free(r.path);
        return SF_ENOMEM;
    }
    r.plen = strlen(r.path);
    if (r.plen > 0 && r.path[r.plen - 1] == '*') {
        r.prefix = true;
        r.path[--r.plen] = '\0';
    }
    s->routes[s->n_routes++] = r;
    return SF_OK;
}

uint16_t http_server_port(const struct http_server *s)
{
    return s ? s->port : 0;
}

static bool method_ok(const struct route *r, const char *method)
{
    if (strcmp(r->method, "*") == 0 || strcmp(r->method, method) == 0) return true;
    return strcmp(method, "HEAD") == 0 && strcmp(r->method, "GET") == 0;
}

static bool path_ok(const struct route *r, const char *path)
{
    if (r->prefix) return strncmp(path, r->path, r->plen) == 0;
    return strcmp(path, r->path) == 0;
}

/* The best route for path+method; *path_known says whether any route has the path. */
static const struct route *route_find(const struct http_server *s, const char *path,
                                      const char *method, bool *path_known)
{
    const struct route *best = NULL;
    *path_known = false;
    for (size_t i = 0; i < s->n_routes; i++) {
        const struct route *r = &s->routes[i];
        if (!path_ok(r, path)) continue;
        *path_known = true;
        if (!method_ok(r, method)) continue;
        if (!best || (best->prefix && !r->prefix) ||
            (best->prefix && r->prefix && r->plen > best->plen))
            best = r;
    }
    return best;
}

static void allow_header(const struct http_server *s, const char *path, struct buf *out)
{
    for (size_t i = 0; i < s->n_routes; i++) {
        const struct route *r = &s->routes[i];
        if (!path_ok(r, path)) continue;
        if (out->len) buf_printf(out, ", ");
        buf_printf(out, "%s", strcmp(r->method, "*") == 0 ? "GET, POST, PUT, DELETE" : r->method);
    }
}

/* ---- responses ---- */

static void response_init(struct http_response *res)
{
    memset(res, 0, sizeof(*res));
    res->status = 200;
    copy_str(res->ctype, sizeof(res->ctype), "text/plain; charset=utf-8");
    buf_init(&res->body, (size_t)1 << 30);
}

static void response_fini(struct http_response *res)
{
    buf_fini(&res->body);
    for (size_t i = 0; i < res->n_headers; i++) {
        free(res->hname[i]);
        free(res->hvalue[i]);
    }
    if (res->stream_free) res->stream_free(res->stream_ud);
    res->stream_free = NULL;
    res->stream_fn = NULL;
}

void http_response_status(struct http_response *res, int status, const char *content_type)
{
    res->status = status;
    copy_str(res->ctype, sizeof(res->ctype),
             content_type ? content_type : "text/plain; charset=utf-8");
}

struct buf *http_response_body(struct http_response *res)
{
    return &res->body;
}

int http_response_set(struct http_response *res, int status, const char *content_type,
                      const void *data, size_t len)
{
    http_response_status(res, status, content_type);
    buf_reset(&res->body);
    return len ? buf_append(&res->body, data, len) : SF_OK;
}

int http_response_printf(struct http_response *res, int status, const char *content_type,
                         const char *fmt, ...)
{
    http_response_status(res, status, content_type);
    buf_reset(&res->body);
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(&res->body, fmt, ap);
    va_end(ap);
    return rc;
}

int http_response_header(struct http_response *res, const char *name, const char *value)
{
    if (!name || !value || strpbrk(name, "\r\n:") || strpbrk(value, "\r\n")) return SF_EINVAL;
    if (res->n_headers == MAX_EXTRA_HEADERS) return SF_ENOMEM;
    char *n = dup_str(name), *v = dup_str(value);
    if (!n || !v) {
        free(n);
        free(v);
        return SF_ENOMEM;
    }
    res->hname[res->n_headers] = n;
    res->hvalue[res->n_headers] = v;
    res->n_headers++;
    return SF_OK;
}

int http_response_json(struct http_response *res, int status, const cJSON *json)
{
    char *text = cJSON_PrintUnformatted(json);
    if (!text) return SF_ENOMEM;
    int rc = http_response_set(res, status, "application/json", text, strlen(text));
    cJSON_free(text);
    return rc;
}

int http_response_error(struct http_response *res, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    cJSON *root = cJSON_CreateObject();
    cJSON *err = cJSON_AddObjectToObject(root, "error");
    int rc = SF_ENOMEM;
    if (err && cJSON_AddNumberToObject(err, "code", status) &&
        cJSON_AddStringToObject(err, "message", msg))
        rc = http_response_json(res, status, root);
    cJSON_Delete(root);
    if (rc != 0) rc = http_response_printf(res, status, NULL, "%s\n", msg);
    return rc;
}

int http_response_stream(struct http_response *res, int status, const char *content_type,
                         http_stream_fn fn, void *ud, void (*free_fn)(void *ud))
{
    if (!fn) return SF_EINVAL;
    if (res->stream_free) res->stream_free(res->stream_ud);
    http_response_status(res, status, content_type ? content_type : "application/octet-stream");
    res->stream_fn = fn;
    res->stream_ud = ud;
    res->stream_free = free_fn;
    res->sse = false;
    return SF_OK;
}

int http_response_sse(struct http_response *res, http_stream_fn fn, void *ud,
                      void (*free_fn)(void *ud))
{
    int rc = http_response_stream(res, 200, "text/event-stream", fn, ud, free_fn);
    if (rc != 0) return rc;
    res->sse = true;
    http_response_header(res, "Cache-Control", "no-cache");
    http_response_header(res, "X-Accel-Buffering", "no");
    return SF_OK;
}

int http_sse_format(struct buf *out, const char *event, const char *data)
{
    int rc = SF_OK;
    if (event) {
        if (strpbrk(event, "\r\n")) return SF_EINVAL;
        rc = buf_printf(out, "event: %s\n", event);
    }
    const char *p = data ? data : "";
    for (;;) {
        size_t n = strcspn(p, "\r\n");
        if (rc == 0) rc = buf_append(out, "data: ", 6);
        if (rc == 0) rc = buf_append(out, p, n);
        if (rc == 0) rc = buf_putc(out, '\n');
        p += n;
        if (!*p) break;
        if (p[0] == '\r' && p[1] == '\n') p++;
        p++;
    }
    if (rc == 0) rc = buf_putc(out, '\n');
    return rc;
}

/* ---- streams ---- */

struct stream {
    struct http_server *srv;
    http_stream_fn fn;
    void *ud;
    void (*free_fn)(void *);
    bool sse;
    bool ended;
    struct buf pending;
    size_t off;
    int64_t last_out_ns;
};

static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct stream *st = cls;
    const int64_t keepalive_ns = (int64_t)st->srv->o.keepalive_ms * 1000000;
    for (;;) {
        if (st->off < st->pending.len) {
            size_t n = SF_MIN(max, st->pending.len - st->off);
            memcpy(out, st->pending.data + st->off, n);
            st->off += n;
            if (st->off == st->pending.len) {
                buf_reset(&st->pending);
                st->off = 0;
            }
            return (ssize_t)n;
        }
        if (st->ended || atomic_load(&st->srv->stopping)) return MHD_CONTENT_READER_END_OF_STREAM;
        int64_t t = time_now_ns();
        int rc = st->fn(st->ud, &st->pending);
        if (rc < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
        if (rc == SF_EXIT) st->ended = true;
        int64_t now = time_now_ns();
        if (st->pending.len) {
            st->last_out_ns = now;
            continue;
        }
        if (st->sse && now - st->last_out_ns >= keepalive_ns) {
            buf_printf(&st->pending, ": keep-alive\n\n");
            st->last_out_ns = now;
            continue;
        }
        if (!st->ended && now - t < 1000000) time_sleep_ms(10); /* callback did not block */
    }
}

static void stream_free(void *cls)
{
    struct stream *st = cls;
    if (st->free_fn) st->free_fn(st->ud);
    buf_fini(&st->pending);
    free(st);
}

/* ---- SSE hub ---- */

struct sse_event {
    size_t refs; /* under the hub's mutex */
    size_t len;
    char text[];
};

struct sse_sub {
    struct http_sse_hub *hub;
    struct sse_sub *prev, *next;
    struct sse_event **q; /* ring of max_queue */
    size_t head, count;
    uint64_t dropped;
};

struct http_sse_hub {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t max_queue;
    struct sse_sub *subs;
    size_t n_subs;
    size_t refs; /* the owner + each subscriber */
    bool closed;
};

struct http_sse_hub *http_sse_hub_new(size_t max_queue)
{
    struct http_sse_hub *h = calloc(1, sizeof(*h));
    if (!h) return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&h->mu, NULL);
    h->max_queue = max_queue ? max_queue : 1024;
    h->refs = 1;
    return h;
}

static void event_unref_locked(struct sse_event *e)
{
    if (--e->refs == 0) free(e);
}

/* Drops one reference; frees the hub with the last. Called with the mutex held. */
static void hub_unref_locked(struct http_sse_hub *h)
{
    if (--h->refs > 0) {
        pthread_mutex_unlock(&h->mu);
        return;
    }
    pthread_mutex_unlock(&h->mu);
    pthread_mutex_destroy(&h->mu);
    pthread_cond_destroy(&h->cv);
    free(h);
}

void http_sse_hub_destroy(struct http_sse_hub **hub)
{
    if (!hub || !*hub) return;
    struct http_sse_hub *h = *hub;
    *hub = NULL;
    pthread_mutex_lock(&h->mu);
    h->closed = true;
    pthread_cond_broadcast(&h->cv);
    hub_unref_locked(h);
}

int http_sse_hub_publish(struct http_sse_hub *h, const char *event, const char *data)
{
    if (!h) return SF_EINVAL;
    struct buf b;
    buf_init(&b, (size_t)16 << 20);
    int rc = http_sse_format(&b, event, data);
    if (rc != 0) {
        buf_fini(&b);
        return rc;
    }
    struct sse_event *e = malloc(sizeof(*e) + b.len + 1);
    if (!e) {
        buf_fini(&b);
        return SF_ENOMEM;
    }
    e->len = b.len;
    memcpy(e->text, b.data, b.len + 1);
    buf_fini(&b);
    e->refs = 1;
    pthread_mutex_lock(&h->mu);
    for (struct sse_sub *s = h->subs; s; s = s->next) {
        if (s->count == h->max_queue) { /* drop the oldest */
            event_unref_locked(s->q[s->head]);
            s->head = (s->head + 1) % h->max_queue;
            s->count--;
            s->dropped++;
        }
        s->q[(s->head + s->count) % h->max_queue] = e;
        s->count++;
        e->refs++;
    }
    event_unref_locked(e);
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return SF_OK;
}

size_t http_sse_hub_subscribers(struct http_sse_hub *h)
{
    pthread_mutex_lock(&h->mu);
    size_t n = h->n_subs;
    pthread_mutex_unlock(&h->mu);
    return n;
}

static int sub_stream(void *ud, struct buf *out)
{
    struct sse_sub *s = ud;
    struct http_sse_hub *h = s->hub;
    int rc = SF_OK;
    pthread_mutex_lock(&h->mu);
    if (s->count == 0 && !h->closed) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    }
    if (s->dropped) {
        rc = buf_printf(out, "event: dropped\ndata: %llu\n\n", (unsigned long long)s->dropped);
        s->dropped = 0;
    }
    while (rc == 0 && s->count > 0 && out->len < (256u << 10)) {
        struct sse_event *e = s->q[s->head];
        rc = buf_append(out, e->text, e->len);
        event_unref_locked(e);
        s->head = (s->head + 1) % h->max_queue;
        s->count--;
    }
    if (rc == 0 && h->closed && s->count == 0) rc = SF_EXIT;
    pthread_mutex_unlock(&h->mu);
    return rc;
}

static void sub_free(void *ud)
{
    struct sse_sub *s = ud;
    struct http_sse_hub *h = s->hub;
    pthread_mutex_lock(&h->mu);
    while (s->count > 0) {
        event_unref_locked(s->q[s->head]);
        s->head = (s->head + 1) % h->max_queue;
        s->count--;
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        h->subs = s->next;
    if (s->next) s->next->prev = s->prev;
    h->n_subs--;
    free(s->q);
    free(s);
    hub_unref_locked(h);
}

int http_response_sse_hub(struct http_response *res, struct http_sse_hub *h)
{
    if (!h) return SF_EINVAL;
    struct sse_sub *s = calloc(1, sizeof(*s));
    if (!s) return SF_ENOMEM;
    s->q = calloc(h->max_queue, sizeof(*s->q));
    if (!s->q) {
        free(s);
        return SF_ENOMEM;
    }
    s->hub = h;
    pthread_mutex_lock(&h->mu);
    s->next = h->subs;
    if (h->subs) h->subs->prev = s;
    h->subs = s;
    h->n_subs++;
    h->refs++;
    pthread_mutex_unlock(&h->mu);
    return http_response_sse(res, sub_stream, s, sub_free);
}

/* ---- JSON ---- */

int http_json_parse(const char *text, size_t len, size_t max_len, cJSON **out, char *err,
                    size_t err_len)
{
    char scratch[8];
    if (!err || !err_len) {
        err = scratch;
        err_len = sizeof(scratch);
    }
    err[0] = '\0';
    *out = NULL;
    if (len > max_len) {
        snprintf(err, err_len, "body is %zu bytes, more than the %zu allowed", len, max_len);
        return SF_ERANGE;
    }
    if (len == 0 || !text) {
        snprintf(err, err_len, "empty body, expected JSON");
        return SF_EFORMAT;
    }
    /* cJSON reads from a NUL-terminated copy so that it can never run past `len`. */
    char *copy = malloc(len + 1);
    if (!copy) {
        snprintf(err, err_len, "out of memory");
        return SF_ENOMEM;
    }
    memcpy(copy, text, len);
    copy[len] = '\0';
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(copy, len, &end, 0);
    size_t at = end && end >= copy && end <= copy + len ? (size_t)(end - copy) : 0;
    if (!v) {
        snprintf(err, err_len, "invalid JSON at byte %zu", at);
        free(copy);
        return SF_EFORMAT;
    }
    for (size_t i = at; i < len; i++) {
        char c = copy[i];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            snprintf(err, err_len, "unexpected data after the JSON value at byte %zu", i);
            cJSON_Delete(v);
            free(copy);
            return SF_EFORMAT;
        }
    }
    free(copy);
    *out = v;
    return SF_OK;
}

cJSON *http_request_json(struct http_request *req, struct http_response *res)
{
    char err[160];
    cJSON *v = NULL;
    int rc =
        http_json_parse(req->body.data, req->body.len, req->srv->o.max_body, &v, err, sizeof(err));
    if (rc != 0) {
        http_response_error(res, rc == SF_ERANGE ? 413 : 400, "%s", err);
        return NULL;
    }
    if (!cJSON_IsObject(v)) {
        cJSON_Delete(v);
        http_response_error(res, 400, "request body must be a JSON object");
        return NULL;
    }
    return v;
}

/* ---- request accessors ---- */

const char *http_request_method(const struct http_request *req)
{
    return req->method;
}

const char *http_request_path(const struct http_request *req)
{
    return req->path;
}

const char *http_request_route(const struct http_request *req)
{
    return req->route ? req->route->path : "";
}

const char *http_request_tail(const struct http_request *req)
{
    if (!req->route || !req->route->prefix) return "";
    return req->path + req->route->plen;
}

const char *http_request_query(const struct http_request *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_request_header(const struct http_request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

const char *http_request_body(const struct http_request *req, size_t *len)
{
    if (len) *len = req->body.len;
    return req->body.len ? req->body.data : "";
}

/* ---- dispatch ---- */

static enum MHD_Result send_response(struct http_request *req, struct http_response *res)
{
    struct MHD_Response *r;
    if (res->stream_fn) {
        struct stream *st = calloc(1, sizeof(*st));
        if (!st) return MHD_NO;
        st->srv = req->srv;
        st->fn = res->stream_fn;
        st->ud = res->stream_ud;
        st->free_fn = res->stream_free;
        st->sse = res->sse;
        st->last_out_ns = time_now_ns();
        buf_init(&st->pending, STREAM_PENDING_MAX);
        res->stream_free = NULL; /* the stream owns ud now */
        res->stream_fn = NULL;
        r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, stream_read, st,
                                              stream_free);
        if (!r) {
            stream_free(st);
            return MHD_NO;
        }
    } else {
        size_t len = 0;
        char *data = buf_steal(&res->body, &len);
        r = MHD_create_response_from_buffer(len, data ? data : (char *)"",
                                            data ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        if (!r) {
            free(data);
            return MHD_NO;
        }
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, res->ctype);
    for (size_t i = 0; i < res->n_headers; i++)
        MHD_add_response_header(r, res->hname[i], res->hvalue[i]);
    req->status = res->status;
    enum MHD_Result ret = MHD_queue_response(req->conn, (unsigned)res->status, r);
    MHD_destroy_response(r);
    return ret;
}

static void dispatch(struct http_request *req, struct http_response *res)
{
    struct http_server *s = req->srv;
    if (req->too_large) {
        http_response_error(res, 413, "request body is larger than %zu bytes", s->o.max_body);
        return;
    }
    bool known = false;
    req->route = route_find(s, req->path, req->method, &known);
    if (!req->route) {
        if (known) {
            struct buf allow;
            buf_init(&allow, 1024);
            allow_header(s, req->path, &allow);
            http_response_error(res, 405, "method %s not allowed on %s", req->method, req->path);
            if (allow.len) http_response_header(res, "Allow", allow.data);
            buf_fini(&allow);
        } else {
            http_response_error(res, 404, "no such path: %s", req->path);
        }
        return;
    }
    res->status = 0; /* 0 = the handler set nothing */
    int rc = req->route->fn(req, res, req->route->ud);
    if (rc < 0 && res->status == 0) {
        buf_reset(&res->body);
        http_response_error(res, 500, "internal error: %s", sf_strerror(rc));
    } else if (res->status == 0) {
        res->status = 200;
    }
}

/* Dispatches the request to its handler and sends the reply, once. */
static enum MHD_Result respond(struct http_request *req, const char *method, const char *url)
{
    req->responded = true;
    req->method = method;
    req->path = url;
    struct http_response res;
    response_init(&res);
    dispatch(req, &res);
    enum MHD_Result ret = send_response(req, &res);
    response_fini(&res);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct http_server *s = cls;
    struct http_request *req = *con_cls;
    if (!req) {
        req = calloc(1, sizeof(*req));
        if (!req) return MHD_NO;
        req->srv = s;
        req->conn = conn;
        req->t0 = time_now_ns();
        req->status = 500;
        buf_init(&req->body, s->o.max_body);
        *con_cls = req;
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        int64_t n;
        if (cl && parse_i64(cl, &n) == 0 && n > 0 && (uint64_t)n > s->o.max_body) {
            /* Refuse before reading the body (a client sending "Expect: 100-continue"
             * never sends it). */
            req->too_large = true;
            return respond(req, method, url);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!req->too_large && !req->responded &&
            buf_append(&req->body, upload_data, *upload_data_size) != 0) {
            req->too_large = true;
            buf_fini(&req->body);
            buf_init(&req->body, s->o.max_body);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->responded) return MHD_YES;
    return respond(req, method, url);
}

static const char *method_label(const char *m)
{
    static const char *known[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};
    for (size_t i = 0; i < SF_ARRAY_LEN(known); i++)
        if (m && strcmp(m, known[i]) == 0) return known[i];
    return "other";
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    (void)toe;
    struct http_server *s = cls;
    struct http_request *req = *con_cls;
    if (!req) return;
    if (s->metrics && req->method) {
        const char *route = req->route ? req->route->path : "unmatched";
        char code[16];
        snprintf(code, sizeof(code), "%d", req->status);
        struct metric *c = metrics_child(s->m_requests, route, method_label(req->method), code,
                                         (const char *)NULL);
        if (c) metrics_inc(c);
        struct metric *h = metrics_child(s->m_duration, route, (const char *)NULL);
        if (h) metrics_observe(h, (double)(time_now_ns() - req->t0) / 1e9);
    }
    buf_fini(&req->body);
    free(req);
    *con_cls = NULL;
}

__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    for (char *p = msg; *p; p++)
        if (*p == '"') *p = '\'';
    /* a client that goes away mid-response is routine (SSE tabs close) */
    if (strstr(msg, "no longer available") || strstr(msg, "reset by peer"))
        log_debug("http_mhd", "msg=\"%s\"", msg);
    else
        log_warn("http_mhd", "msg=\"%s\"", msg);
}

int http_server_start(struct http_server *s)
{
    if (!s) return SF_EINVAL;
    if (s->daemon) return SF_ESTATE;
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_POLL_INTERNAL_THREAD |
                     MHD_USE_ERROR_LOG | MHD_USE_ITC;
    if (s->v6) flags |= MHD_USE_IPv6;
    uint16_t port = s->v6 ? ntohs(((struct sockaddr_in6 *)&s->addr)->sin6_port)
                          : ntohs(((struct sockaddr_in *)&s->addr)->sin_port);
    s->daemon = MHD_start_daemon(
        flags, port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&s->addr, MHD_OPTION_CONNECTION_LIMIT,
        s->o.max_connections, MHD_OPTION_CONNECTION_TIMEOUT, s->o.timeout_s,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_END);
    if (!s->daemon) {
        log_error("http_start_failed", "port=%u err=\"%s\"", port, strerror(errno));
        return SF_EIO;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = info ? info->port : port;
    log_info("http_listening", "port=%u routes=%zu", s->port, s->n_routes);
    return SF_OK;
}

void http_server_destroy(struct http_server **sp)
{
    if (!sp || !*sp) return;
    struct http_server *s = *sp;
    atomic_store(&s->stopping, true);
    if (s->daemon) MHD_stop_daemon(s->daemon);
    for (size_t i = 0; i < s->n_routes; i++) {
        free(s->routes[i].method);
        free(s->routes[i].path);
    }
    free(s->routes);
    free(s);
    *sp = NULL;
}

/* ---- /metrics and /healthz ---- */

static int serve_metrics(struct http_request *req, struct http_response *res, void *ud)
{
    (void)req;
    struct http_server *s = ud;
    http_response_status(res, 200, "text/plain; version=0.0.4; charset=utf-8");
    if (!s->metrics) return SF_OK;
    return metrics_render(s->metrics, http_response_body(res));
}

static int serve_health(struct http_request *req, struct http_response *res, void *ud)
{
    (void)req;
    struct http_server *s = ud;
    char reason[256] = "";
    int rc = s->health_fn ? s->health_fn(s->health_ud, reason, sizeof(reason)) : 0;
    cJSON *root = cJSON_CreateObject();
    if (!root) return SF_ENOMEM;
    cJSON_AddStringToObject(root, "status", rc == 0 ? "ok" : "unhealthy");
    if (rc != 0) cJSON_AddStringToObject(root, "reason", reason[0] ? reason : sf_strerror(rc));
    int ret = http_response_json(res, rc == 0 ? 200 : 503, root);
    cJSON_Delete(root);
    return ret;
}

int http_serve_standard(struct http_server *s, struct metrics *m, http_health_fn health_fn,
                        void *ud)
{
    if (!s) return SF_EINVAL;
    if (s->daemon) return SF_ESTATE;
    s->metrics = m;
    s->health_fn = health_fn;
    s->health_ud = ud;
    if (m) {
        static const double bounds[] = {0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10};
        s->m_requests =
            metrics_counter(m, "http_requests_total", "HTTP requests served.", "route,method,code");
        s->m_duration = metrics_histogram(m, "http_request_duration_seconds",
                                          "Time from request to the end of its response.", "route",
                                          bounds, SF_ARRAY_LEN(bounds));
        if (!s->m_requests || !s->m_duration) {
            s->metrics = NULL;
            return SF_EINVAL;
        }
    }
    int rc = http_route(s, "GET", "/metrics", serve_metrics, s);
    if (rc == 0) rc = http_route(s, "GET", "/healthz", serve_health, s);
    return rc;
}

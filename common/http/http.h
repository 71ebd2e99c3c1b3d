/* http: the small HTTP server every saeflow service embeds (on libmicrohttpd), with
 * JSON helpers (on cJSON), Server-Sent Events and a Prometheus metrics registry.
 *
 *   struct http_server *s = http_server_new("127.0.0.1", 0, NULL);
 *   http_route(s, "GET", "/api/features*", features_get, ctx);  // '*': prefix
 *   http_serve_standard(s, metrics, health_cb, ctx);             // /metrics, /healthz
 *   http_server_start(s);  ... http_server_port(s) ...
 *   http_server_destroy(&s);
 *
 * Each connection has its own thread (libmicrohttpd thread-per-connection), so a
 * handler may take its time and a stream callback may block briefly. Unknown paths
 * answer 404, a known path with another method 405 (with Allow), a body over the cap
 * 413, and a handler that fails without setting a response 500; errors are JSON
 * {"error": {"code": N, "message": "..."}}. Routes are registered before
 * http_server_start(); HEAD is served by GET routes.
 *
 * Ownership: the server owns its routes; handler userdata, the metrics registry and
 * SSE hubs are borrowed and must outlive the server. A handler's request and response
 * live for the duration of the call (the response's stream userdata is released by
 * the stream's free function when the connection ends). cJSON values returned by the
 * helpers are freed by the caller with cJSON_Delete. */
#ifndef SAEFLOW_HTTP_H
#define SAEFLOW_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "core/core.h"

/* ---- server ---- */
struct http_options {
    size_t max_body;          /* request body cap, bytes (413 beyond); default 1 MiB */
    unsigned max_connections; /* default 256 */
    unsigned timeout_s;       /* idle connection timeout; default 60 */
    unsigned keepalive_ms;    /* streams send a keep-alive after this much silence;
                                 default 15000 */
};

struct http_server;
struct http_request;
struct http_response;

/* 0 on success; negative (SF_*) to answer 500 when the handler set no response. */
typedef int (*http_handler_fn)(struct http_request *req, struct http_response *res, void *ud);

/* bind_addr: an IPv4 or IPv6 literal ("0.0.0.0", "127.0.0.1", "::"); port 0 picks an
 * ephemeral port (read it with http_server_port after start). opts may be NULL.
 * Returns NULL on a bad address. Nothing listens until http_server_start(). */
struct http_server *http_server_new(const char *bind_addr, uint16_t port,
                                    const struct http_options *opts);
/* method: "GET", "POST", ... or "*" for any. path: exact ("/healthz") or a prefix when
 * it ends in '*' ("/api/features*" matches "/api/features/12"). Exact routes win over
 * prefixes, longer prefixes over shorter. Before start only. */
int http_route(struct http_server *s, const char *method, const char *path, http_handler_fn fn,
               void *ud);
int http_server_start(struct http_server *s);
/* The bound port (after start), 0 before. */
uint16_t http_server_port(const struct http_server *s);
/* Stops accepting, ends streams, joins every connection thread, frees. NULL-safe. */
void http_server_destroy(struct http_server **s);

/* ---- request (valid during the handler call) ---- */
const char *http_request_method(const struct http_request *req);
/* The URL path, percent-decoded, without the query string. */
const char *http_request_path(const struct http_request *req);
/* The route's path (for a prefix route, without its '*'). */
const char *http_request_route(const struct http_request *req);
/* The part of the path after a prefix route's prefix ("" for exact routes). */
const char *http_request_tail(const struct http_request *req);
/* Decoded query parameter / header (case-insensitive name), or NULL. */
const char *http_request_query(const struct http_request *req, const char *key);
const char *http_request_header(const struct http_request *req, const char *name);
/* The body (NUL-terminated; may contain NULs); len may be 0. */
const char *http_request_body(const struct http_request *req, size_t *len);

/* ---- response ---- */
/* Status with a copy of `data` as the body. content_type NULL = "text/plain; charset=utf-8". */
int http_response_set(struct http_response *res, int status, const char *content_type,
                      const void *data, size_t len);
int http_response_printf(struct http_response *res, int status, const char *content_type,
                         const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The body buffer, to append to directly; set status/type with http_response_status. */
struct buf *http_response_body(struct http_response *res);
void http_response_status(struct http_response *res, int status, const char *content_type);
/* Adds a header (copied). At most 16 extra headers. */
int http_response_header(struct http_response *res, const char *name, const char *value);
/* Serializes `json` (not taken) as application/json. */
int http_response_json(struct http_response *res, int status, const cJSON *json);
/* {"error": {"code": status, "message": "<formatted>"}} as application/json. */
int http_response_error(struct http_response *res, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- streaming responses ---- */
/* Called repeatedly on the connection's thread. Append output to `out` and return 0
 * to go on, SF_EXIT to end the stream after `out` is sent, negative to abort. It may
 * block, but for at most ~100 ms per call, so that shutdown stays prompt; returning 0
 * with nothing appended is fine (the server paces calls and sends keep-alives). */
typedef int (*http_stream_fn)(void *ud, struct buf *out);
/* The response streams (chunked) from `fn`. `free_fn(ud)` runs once when the stream
 * ends or the client goes away (also when the handler's response is never sent). */
int http_response_stream(struct http_response *res, int status, const char *content_type,
                         http_stream_fn fn, void *ud, void (*free_fn)(void *ud));

/* ---- Server-Sent Events ---- */
/* Appends one event: "event: <event>\n" (omitted when NULL), one "data: " line per
 * line of `data`, then a blank line. */
int http_sse_format(struct buf *out, const char *event, const char *data);
/* An SSE response from `fn` (text/event-stream, no caching; keep-alives are
 * ": keep-alive" comments). */
int http_response_sse(struct http_response *res, http_stream_fn fn, void *ud,
                      void (*free_fn)(void *ud));

/* A broadcast hub: every subscriber (an open SSE response) receives every event
 * published after it subscribed, in order. A subscriber that falls more than
 * `max_queue` events behind loses the oldest ones (counted, and announced to it as an
 * "event: dropped" with the count). Thread-safe. Destroy after the server. */
struct http_sse_hub;
struct http_sse_hub *http_sse_hub_new(size_t max_queue);
void http_sse_hub_destroy(struct http_sse_hub **hub);
int http_sse_hub_publish(struct http_sse_hub *hub, const char *event, const char *data);
/* Makes `res` an SSE stream subscribed to `hub`. */
int http_response_sse_hub(struct http_response *res, struct http_sse_hub *hub);
size_t http_sse_hub_subscribers(struct http_sse_hub *hub);

/* ---- JSON ---- */
/* Parses `len` bytes (not necessarily NUL-terminated) as one JSON value with nothing
 * but whitespace after it. 0, SF_ERANGE (len > max_len) or SF_EFORMAT; on failure
 * `err` (if given) says why, including the byte offset. */
int http_json_parse(const char *text, size_t len, size_t max_len, cJSON **out, char *err,
                    size_t err_len);
/* The request body as a JSON object; on failure NULL and `res` holds a 400 (or 413)
 * error saying why. */
cJSON *http_request_json(struct http_request *req, struct http_response *res);

/* ---- Prometheus metrics (text exposition format 0.0.4) ---- */
struct metrics;
struct metrics_family;
struct metric;

struct metrics *metrics_new(void);
void metrics_destroy(struct metrics **m);
/* Registers a family; `labels` is a comma-separated list of label names or NULL.
 * Names must be valid Prometheus names; registering the same name twice with the same
 * type and labels returns the existing family, otherwise NULL. */
struct metrics_family *metrics_counter(struct metrics *m, const char *name, const char *help,
                                       const char *labels);
struct metrics_family *metrics_gauge(struct metrics *m, const char *name, const char *help,
                                     const char *labels);
/* `bounds`: strictly increasing upper bounds, +Inf implied. */
struct metrics_family *metrics_histogram(struct metrics *m, const char *name, const char *help,
                                         const char *labels, const double *bounds, size_t n_bounds);
/* The series for these label values (as many as the family has labels, then NULL).
 * Created on first use; the pointer stays valid until metrics_destroy, so callers
 * should keep it. NULL on a wrong count or allocation failure. */
struct metric *metrics_child(struct metrics_family *f, ...);
struct metric *metrics_child_v(struct metrics_family *f, const char *const *values, size_t n);
/* Thread-safe updates. Counters only go up (negative adds are ignored). */
void metrics_inc(struct metric *c);
void metrics_add(struct metric *c, double v);
/* Raises a counter to `v` (a total kept elsewhere, e.g. by the wire library); never
 * lowers it. */
void metrics_counter_to(struct metric *c, double v);
void metrics_set(struct metric *g, double v);
void metrics_observe(struct metric *h, double v);
double metrics_value(const struct metric *c); /* counter or gauge value */
/* Appends the exposition text of every family, in registration order. */
int metrics_render(struct metrics *m, struct buf *out);

/* Installs GET /metrics (the registry; may be NULL for none) and GET /healthz
 * (health_fn returns 0 for healthy and may fill a short reason; NULL = always healthy;
 * 200 {"status":"ok"} or 503 {"status":"unhealthy","reason":...}). With a registry,
 * every request is also counted in http_requests_total{route,method,code} and timed
 * in http_request_duration_seconds{route}. Before start only. */
typedef int (*http_health_fn)(void *ud, char *reason, size_t reason_len);
int http_serve_standard(struct http_server *s, struct metrics *m, http_health_fn health_fn,
                        void *ud);

#endif

/* wire: saeflow Frames (protobuf-c) over ZeroMQ sockets, with size caps, a budgeted
 * unpack allocator, semantic validation and per-socket accounting. See wire.h.
 *
 * Copies: a send packs the Frame once into a malloc'd buffer that ZeroMQ takes over
 * (zmq_msg_init_data, freed by ZeroMQ's I/O thread). A receive keeps the ZeroMQ
 * message and, for batches, points the activations into it: the Frame is re-encoded
 * without the activation bytes (a few hundred bytes plus the per-token arrays), that
 * compact copy is unpacked by protobuf-c, and the activations field is then aimed at
 * the bytes still sitting in the ZeroMQ message. Anything the scanner does not
 * recognise goes through the plain protobuf-c unpack instead, so both paths give
 * the same result (the fuzz target checks that). */
#include "wire/wire.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

/* ---- names ---------------------------------------------------------------------- */

static const char *const kind_names[WIRE_KIND_COUNT] = {
    "none", "batch", "credit", "ack", "metrics", "checkpoint", "heartbeat", "resume",
};

static const char *const reject_names[WIRE_REJ_COUNT] = {
    [WIRE_REJ_NONE] = "none",
    [WIRE_REJ_FRAMING] = "framing",
    [WIRE_REJ_EMPTY] = "empty",
    [WIRE_REJ_TOO_LARGE] = "too_large",
    [WIRE_REJ_UNPACK] = "unpack",
    [WIRE_REJ_BUDGET] = "alloc_budget",
    [WIRE_REJ_NO_BODY] = "no_body",
    [WIRE_REJ_SCHEMA_VERSION] = "schema_version",
    [WIRE_REJ_ID] = "bad_id",
    [WIRE_REJ_NAME] = "bad_name",
    [WIRE_REJ_TEXT] = "bad_text",
    [WIRE_REJ_DTYPE] = "bad_dtype",
    [WIRE_REJ_DIMS] = "bad_dims",
    [WIRE_REJ_SIZE_MISMATCH] = "size_mismatch",
    [WIRE_REJ_TOKEN_IDS] = "bad_token_ids",
    [WIRE_REJ_DOC_IDS] = "bad_doc_ids",
    [WIRE_REJ_POSITIONS] = "bad_positions",
    [WIRE_REJ_NORM_SCALE] = "bad_norm_scale",
    [WIRE_REJ_ACK] = "bad_ack",
    [WIRE_REJ_FIELD] = "bad_field",
};

const char *wire_kind_name(enum wire_kind k)
{
    return (unsigned)k < WIRE_KIND_COUNT ? kind_names[k] : "unknown";
}

const char *wire_reject_name(enum wire_reject r)
{
    return (unsigned)r < WIRE_REJ_COUNT ? reject_names[r] : "unknown";
}

static bool host_is_le(void)
{
    const uint16_t one = 1;
    uint8_t b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* ---- the shared ZeroMQ context (refcounted: terminated with the last socket) ---- */

static pthread_mutex_t ctx_mu = PTHREAD_MUTEX_INITIALIZER;
static void *ctx_;
static size_t ctx_refs_;
static int io_threads_ = 1;

void wire_set_io_threads(int n)
{
    pthread_mutex_lock(&ctx_mu);
    if (n >= 1 && n <= 64) io_threads_ = n;
    pthread_mutex_unlock(&ctx_mu);
}

static void *ctx_acquire(void)
{
    pthread_mutex_lock(&ctx_mu);
    if (!ctx_) {
        ctx_ = zmq_ctx_new();
        if (ctx_) zmq_ctx_set(ctx_, ZMQ_IO_THREADS, io_threads_);
    }
    void *c = ctx_;
    if (c) ctx_refs_++;
    pthread_mutex_unlock(&ctx_mu);
    return c;
}

static void ctx_release(void)
{
    pthread_mutex_lock(&ctx_mu);
    if (ctx_refs_ > 0 && --ctx_refs_ == 0) {
        zmq_ctx_term(ctx_);
        ctx_ = NULL;
    }
    pthread_mutex_unlock(&ctx_mu);
}

/* ---- send buffers ------------------------------------------------------------------ */

/* ZeroMQ takes each packed payload (zmq_msg_init_data) and calls the free callback
 * from its I/O thread once written. Large payloads come from a small per-socket pool
 * so that a stream of 1 MiB batches reuses warm pages instead of faulting in fresh
 * ones for every message. The pool lives until the socket and every buffer it
 * handed out are gone (refcount). */
#define POOL_MIN_BYTES (64u << 10)
#define POOL_MAX_BUFS  16
#define POOL_MAX_BYTES (64u << 20)

struct pool_hdr {
    size_t cap;
    size_t pad_; /* keeps the payload 16-byte aligned */
};

struct send_pool {
    pthread_mutex_t mu;
    size_t refs; /* the socket + buffers handed out */
    bool closed; /* socket gone: keep nothing */
    struct pool_hdr *bufs[POOL_MAX_BUFS];
    size_t n, bytes;
};

static struct send_pool *pool_new(void)
{
    struct send_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    pthread_mutex_init(&p->mu, NULL);
    p->refs = 1;
    return p;
}

static void pool_destroy(struct send_pool *p)
{
    for (size_t i = 0; i < p->n; i++) free(p->bufs[i]);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

static uint8_t *pool_get(struct send_pool *p, size_t need)
{
    struct pool_hdr *h = NULL;
    pthread_mutex_lock(&p->mu);
    for (size_t i = p->n; i-- > 0;) {
        if (p->bufs[i]->cap >= need) {
            h = p->bufs[i];
            p->bufs[i] = p->bufs[--p->n];
            p->bytes -= h->cap;
            break;
        }
    }
    p->refs++;
    pthread_mutex_unlock(&p->mu);
    if (!h) {
        size_t cap = (need + POOL_MIN_BYTES - 1) / POOL_MIN_BYTES * POOL_MIN_BYTES;
        h = malloc(sizeof *h + cap);
        if (!h) {
            pthread_mutex_lock(&p->mu);
            p->refs--; /* the socket still holds one */
            pthread_mutex_unlock(&p->mu);
            return NULL;
        }
        h->cap = cap;
    }
    return (uint8_t *)(h + 1);
}

/* zmq_free_fn: called by ZeroMQ (any thread) when it is done with a pooled payload. */
static void pool_put(void *data, void *hint)
{
    struct send_pool *p = hint;
    struct pool_hdr *h = (struct pool_hdr *)data - 1;
    pthread_mutex_lock(&p->mu);
    bool keep = !p->closed && p->n < POOL_MAX_BUFS && p->bytes + h->cap <= POOL_MAX_BYTES;
    if (keep) {
        p->bufs[p->n++] = h;
        p->bytes += h->cap;
    }
    bool last = --p->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (!keep) free(h);
    if (last) pool_destroy(p);
}

static void pool_release(struct send_pool *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->closed = true;
    for (size_t i = 0; i < p->n; i++) free(p->bufs[i]);
    p->n = 0;
    p->bytes = 0;
    bool last = --p->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (last) pool_destroy(p);
}

/* ---- sockets ------------------------------------------------------------------- */

#define SEQ_WINDOW    1024
#define MAX_PRODUCERS 1024

struct producer {
    struct wire_producer_stats st;
    uint64_t seen[SEQ_WINDOW / 64]; /* bit (seq % SEQ_WINDOW) for seq in (last-W, last] */
    uint64_t touch;
};

enum { WIRE_MAX_IPC_BINDS = 8 };

struct wire_sock {
    void *zs;
    struct send_pool *pool;
    enum wire_type type;
    struct wire_opts opts;
    char identity[WIRE_MAX_PEER_LEN + 1];
    char endpoint[512];
    pthread_mutex_t mu; /* guards everything below */
    struct wire_stats st;
    struct producer *prod;
    size_t n_prod, cap_prod;
    uint64_t touch;
    struct ipc_bound {  /* socket files this socket created, removed at destroy */
        char path[108]; /* sizeof sun_path */
        dev_t dev;
        ino_t ino;
    } ipc[WIRE_MAX_IPC_BINDS];
    size_t n_ipc;
};

void wire_opts_default(struct wire_opts *o)
{
    memset(o, 0, sizeof *o);
    o->max_msg_bytes = WIRE_DEFAULT_MAX_MSG;
    o->alloc_budget = WIRE_DEFAULT_ALLOC_BUDGET;
    o->linger_ms = 500;
    o->send_timeout_ms = 1000;
    o->hwm = 64;
    o->heartbeat_ivl_ms = 1000;
    o->heartbeat_ttl_ms = 3000;
    o->heartbeat_timeout_ms = 3000;
    o->track_seq = true;
}

static const char *type_name(enum wire_type t)
{
    static const char *const names[] = {"push", "pull", "pub", "sub", "dealer", "router", "pair"};
    return (unsigned)t < SF_ARRAY_LEN(names) ? names[t] : "unknown";
}

static int zmq_type_of(enum wire_type t)
{
    switch (t) {
    case WIRE_PUSH:
        return ZMQ_PUSH;
    case WIRE_PULL:
        return ZMQ_PULL;
    case WIRE_PUB:
        return ZMQ_PUB;
    case WIRE_SUB:
        return ZMQ_SUB;
    case WIRE_DEALER:
        return ZMQ_DEALER;
    case WIRE_ROUTER:
        return ZMQ_ROUTER;
    case WIRE_PAIR:
        return ZMQ_PAIR;
    }
    return -1;
}

static int set_int(struct wire_sock *s, int opt, int v, const char *name)
{
    if (zmq_setsockopt(s->zs, opt, &v, sizeof v) != 0) {
        log_error("wire_sockopt_failed", "opt=%s value=%d err=\"%s\"", name, v,
                  zmq_strerror(zmq_errno()));
        return SF_EIO;
    }
    return 0;
}

static int sock_configure(struct wire_sock *s)
{
    const struct wire_opts *o = &s->opts;
    /* ZeroMQ's own cap sits at twice ours: a frame between the two reaches wire and
     * is counted as too_large; only a frame past twice the cap makes ZeroMQ drop the
     * sender's connection before we see it. */
    int64_t maxmsg =
        o->max_msg_bytes > (size_t)INT64_MAX / 2 ? INT64_MAX : (int64_t)o->max_msg_bytes * 2;
    if (zmq_setsockopt(s->zs, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) != 0) {
        log_error("wire_sockopt_failed", "opt=maxmsgsize err=\"%s\"", zmq_strerror(zmq_errno()));
        return SF_EIO;
    }
    int rc = 0;
    rc |= set_int(s, ZMQ_LINGER, o->linger_ms, "linger");
    rc |= set_int(s, ZMQ_SNDTIMEO, o->send_timeout_ms, "sndtimeo");
    rc |= set_int(s, ZMQ_SNDHWM, o->hwm, "sndhwm");
    rc |= set_int(s, ZMQ_RCVHWM, o->hwm, "rcvhwm");
    rc |= set_int(s, ZMQ_HEARTBEAT_IVL, o->heartbeat_ivl_ms, "heartbeat_ivl");
    rc |= set_int(s, ZMQ_HEARTBEAT_TTL, o->heartbeat_ttl_ms, "heartbeat_ttl");
    rc |= set_int(s, ZMQ_HEARTBEAT_TIMEOUT, o->heartbeat_timeout_ms, "heartbeat_timeout");
    if (s->type == WIRE_ROUTER) rc |= set_int(s, ZMQ_ROUTER_MANDATORY, 1, "router_mandatory");
    if (rc) return SF_EIO;
    if (s->identity[0] && (s->type == WIRE_DEALER || s->type == WIRE_ROUTER)) {
        if (zmq_setsockopt(s->zs, ZMQ_ROUTING_ID, s->identity, strlen(s->identity)) != 0) {
            log_error("wire_sockopt_failed", "opt=routing_id err=\"%s\"",
                      zmq_strerror(zmq_errno()));
            return SF_EIO;
        }
    }
    return 0;
}

static void remember_endpoint(struct wire_sock *s, const char *fallback)
{
    size_t n = sizeof s->endpoint;
    if (zmq_getsockopt(s->zs, ZMQ_LAST_ENDPOINT, s->endpoint, &n) != 0 || !s->endpoint[0])
        snprintf(s->endpoint, sizeof s->endpoint, "%s", fallback);
}

/* The file path of an ipc:// endpoint that names one (not the abstract namespace,
 * not a wildcard), or NULL. */
static const char *ipc_path(const char *endpoint)
{
    if (strncmp(endpoint, "ipc://", 6) != 0) return NULL;
    const char *p = endpoint + 6;
    if (!*p || *p == '@' || !strcmp(p, "*")) return NULL;
    return p;
}

/* ZeroMQ's ipc bind unlinks whatever is at the path, so a second binder would quietly
 * take the socket over from a live first one. Probe the path first: a connect that
 * succeeds means someone listens (refuse, SF_ESTATE); a refused connect means the
 * file was left by a process that is gone (remove it). */
static int ipc_claim(const char *endpoint, const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return 0; /* nothing there (or ZeroMQ will say why) */
    if (!S_ISSOCK(st.st_mode)) {
        log_error("wire_bind_failed",
                  "endpoint=%s reason=\"the path exists and is not a socket; not replacing it\"",
                  endpoint);
        return SF_ESTATE;
    }
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof a.sun_path) return 0; /* ZeroMQ refuses it with its own error */
    memcpy(a.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return 0;
    int rc = connect(fd, (const struct sockaddr *)&a, sizeof a);
    int err = errno;
    close(fd);
    if (rc == 0 || err == EAGAIN) {
        log_error("wire_bind_failed",
                  "endpoint=%s reason=\"another process is listening on this ipc socket; stop "
                  "it or bind another path\"",
                  endpoint);
        return SF_ESTATE;
    }
    if (err == ECONNREFUSED && unlink(path) == 0)
        log_warn("wire_stale_socket",
                 "endpoint=%s reason=\"removed a socket file left by a process that is gone\"",
                 endpoint);
    return 0;
}

int wire_sock_bind(struct wire_sock *s, const char *endpoint)
{
    if (!s || !endpoint) return SF_EINVAL;
    const char *path = ipc_path(endpoint);
    if (path) {
        int rc = ipc_claim(endpoint, path);
        if (rc) return rc;
    }
    if (zmq_bind(s->zs, endpoint) != 0) {
        log_error("wire_bind_failed", "endpoint=%s type=%s err=\"%s\"", endpoint,
                  type_name(s->type), zmq_strerror(zmq_errno()));
        return SF_EIO;
    }
    struct stat st;
    if (path && s->n_ipc < WIRE_MAX_IPC_BINDS && strlen(path) < sizeof s->ipc[0].path &&
        lstat(path, &st) == 0) {
        struct ipc_bound *b = &s->ipc[s->n_ipc++];
        memcpy(b->path, path, strlen(path) + 1);
        b->dev = st.st_dev;
        b->ino = st.st_ino;
    }
    remember_endpoint(s, endpoint);
    return 0;
}

int wire_sock_connect(struct wire_sock *s, const char *endpoint)
{
    if (!s || !endpoint) return SF_EINVAL;
    if (zmq_connect(s->zs, endpoint) != 0) {
        log_error("wire_connect_failed", "endpoint=%s type=%s err=\"%s\"", endpoint,
                  type_name(s->type), zmq_strerror(zmq_errno()));
        return SF_EIO;
    }
    snprintf(s->endpoint, sizeof s->endpoint, "%s", endpoint);
    return 0;
}

struct wire_sock *wire_sock_new(enum wire_type type, const char *endpoint, enum wire_mode mode,
                                const struct wire_opts *opts)
{
    int ztype = zmq_type_of(type);
    if (ztype < 0 || !endpoint) {
        log_error("wire_sock_invalid", "type=%d", (int)type);
        return NULL;
    }
    struct wire_sock *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->type = type;
    if (opts) {
        s->opts = *opts;
        struct wire_opts d;
        wire_opts_default(&d);
        if (!s->opts.max_msg_bytes) s->opts.max_msg_bytes = d.max_msg_bytes;
        if (!s->opts.alloc_budget)
            s->opts.alloc_budget = s->opts.max_msg_bytes + WIRE_ARRAYS_BUDGET;
    } else {
        wire_opts_default(&s->opts);
    }
    if (s->opts.identity) {
        size_t n = strlen(s->opts.identity);
        if (n == 0 || n > WIRE_MAX_PEER_LEN) {
            log_error("wire_sock_invalid", "reason=identity_length len=%zu", n);
            free(s);
            return NULL;
        }
        memcpy(s->identity, s->opts.identity, n + 1);
    }
    s->opts.identity = NULL; /* not kept: the copy lives in s->identity */
    pthread_mutex_init(&s->mu, NULL);
    s->pool = pool_new();
    if (!s->pool) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    void *ctx = ctx_acquire();
    if (!ctx) {
        log_error("wire_ctx_failed", "err=\"%s\"", zmq_strerror(zmq_errno()));
        pool_release(s->pool);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    s->zs = zmq_socket(ctx, ztype);
    if (!s->zs) {
        log_error("wire_socket_failed", "type=%s err=\"%s\"", type_name(type),
                  zmq_strerror(zmq_errno()));
        ctx_release();
        pool_release(s->pool);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    int rc = sock_configure(s);
    if (rc == 0)
        rc = mode == WIRE_BIND ? wire_sock_bind(s, endpoint) : wire_sock_connect(s, endpoint);
    if (rc != 0) {
        wire_sock_destroy(&s);
        return NULL;
    }
    log_debug("wire_sock_open", "type=%s endpoint=%s mode=%s", type_name(type), s->endpoint,
              mode == WIRE_BIND ? "bind" : "connect");
    return s;
}

void wire_sock_destroy(struct wire_sock **sp)
{
    if (!sp || !*sp) return;
    struct wire_sock *s = *sp;
    if (s->zs) zmq_close(s->zs);
    /* Remove the socket files this socket created (when still ours: same inode). */
    for (size_t i = 0; i < s->n_ipc; i++) {
        struct stat st;
        if (lstat(s->ipc[i].path, &st) == 0 && st.st_dev == s->ipc[i].dev &&
            st.st_ino == s->ipc[i].ino)
            unlink(s->ipc[i].path);
    }
    pool_release(s->pool); /* lingering payloads keep it alive until ZeroMQ frees them */
    if (s->zs) ctx_release();
    pthread_mutex_destroy(&s->mu);
    free(s->prod);
    free(s);
    *sp = NULL;
}

const char *wire_sock_endpoint(const struct wire_sock *s)
{
    return s ? s->endpoint : "";
}

int wire_subscribe(struct wire_sock *s, const char *prefix)
{
    if (!s || s->type != WIRE_SUB) return SF_EINVAL;
    if (!prefix) prefix = "";
    if (zmq_setsockopt(s->zs, ZMQ_SUBSCRIBE, prefix, strlen(prefix)) != 0) {
        log_error("wire_subscribe_failed", "prefix=%s err=\"%s\"", prefix,
                  zmq_strerror(zmq_errno()));
        return SF_EIO;
    }
    return 0;
}

/* ---- validation ------------------------------------------------------------------ */

static size_t str_len(const char *s, size_t max)
{
    return s ? strnlen(s, max + 1) : 0;
}

static bool is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* s is non-NULL, n its length: every byte alphanumeric or in `extra`. */
static bool chars_in(const char *s, size_t n, const char *extra)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!is_alnum(c) && !(c && strchr(extra, c))) return false;
    }
    return true;
}

static bool str_ok(const char *s, size_t max, bool allow_empty, const char *extra)
{
    size_t n = str_len(s, max);
    if (n == 0) return allow_empty;
    return n <= max && chars_in(s, n, extra);
}

static bool id_ok(const char *s, bool allow_empty)
{
    return str_ok(s, WIRE_MAX_ID_LEN, allow_empty, "._:-");
}
static bool hook_ok(const char *s, bool allow_empty)
{
    return str_ok(s, WIRE_MAX_NAME_LEN, allow_empty, "._");
}
static bool name_ok(const char *s, bool allow_empty)
{
    return str_ok(s, WIRE_MAX_NAME_LEN, allow_empty, "._:/@+-");
}

static bool text_ok(const char *s, size_t max)
{
    size_t n = str_len(s, max);
    if (n > max) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e) return false;
    return true;
}

static bool path_ok(const char *s)
{
    size_t n = str_len(s, WIRE_MAX_PATH_LEN);
    if (n == 0 || n > WIRE_MAX_PATH_LEN) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] == 0x7f) return false;
    return true;
}

size_t wire_dtype_size(Saeflow__DType dtype)
{
    switch (dtype) {
    case WIRE_F32:
        return 4;
    case WIRE_F16:
    case WIRE_BF16:
        return 2;
    default:
        return 0;
    }
}

static enum wire_reject validate_batch(const Saeflow__ActivationBatch *b)
{
    if (b->schema_version != WIRE_SCHEMA_VERSION) return WIRE_REJ_SCHEMA_VERSION;
    if (!id_ok(b->producer_id, false)) return WIRE_REJ_ID;
    if (!name_ok(b->model_id, true) || !hook_ok(b->hook_name, false)) return WIRE_REJ_NAME;
    size_t esize = wire_dtype_size(b->dtype);
    if (esize == 0) return WIRE_REJ_DTYPE;
    if (b->layer < -1 || b->layer > WIRE_MAX_LAYER || b->d_in == 0 || b->d_in > WIRE_MAX_D_IN ||
        b->n_tokens == 0 || b->n_tokens > WIRE_MAX_TOKENS)
        return WIRE_REJ_DIMS;
    /* cannot overflow: 2^16 * 2^20 * 4 */
    uint64_t need = (uint64_t)b->d_in * b->n_tokens * esize;
    if ((uint64_t)b->activations.len != need || (need && !b->activations.data))
        return WIRE_REJ_SIZE_MISMATCH;
    if ((b->n_token_ids && b->n_token_ids != b->n_tokens) || (b->n_token_ids && !b->token_ids))
        return WIRE_REJ_TOKEN_IDS;
    if ((b->n_doc_ids && b->n_doc_ids != b->n_tokens) || (b->n_doc_ids && !b->doc_ids))
        return WIRE_REJ_DOC_IDS;
    if (b->n_positions) {
        if (b->n_positions != b->n_tokens || !b->positions) return WIRE_REJ_POSITIONS;
        for (size_t i = 0; i < b->n_positions; i++)
            if (b->positions[i] < 0 || b->positions[i] > WIRE_MAX_POSITION)
                return WIRE_REJ_POSITIONS;
    }
    if (!isfinite(b->norm_scale) || b->norm_scale < 0.0f) return WIRE_REJ_NORM_SCALE;
    if (b->source_end) {
        if (!id_ok(b->source_end->source_id, false)) return WIRE_REJ_ID;
        if (b->source_from > b->source_end->position) return WIRE_REJ_FIELD;
    } else if (b->source_from) {
        return WIRE_REJ_FIELD;
    }
    return WIRE_REJ_NONE;
}

static enum wire_reject validate_credit(const Saeflow__CreditGrant *c)
{
    if (!id_ok(c->consumer_id, false) || !id_ok(c->producer_id, true)) return WIRE_REJ_ID;
    if (!hook_ok(c->hook_name, true)) return WIRE_REJ_NAME;
    if (c->credits > WIRE_MAX_TOKENS) return WIRE_REJ_FIELD;
    return WIRE_REJ_NONE;
}

static enum wire_reject validate_ack(const Saeflow__Ack *a)
{
    if (!id_ok(a->consumer_id, false) || !id_ok(a->producer_id, false)) return WIRE_REJ_ID;
    if (a->status < WIRE_ACK_ACCEPTED || a->status > WIRE_ACK_REJECTED) return WIRE_REJ_ACK;
    if (a->n_ranges == 0 || a->n_ranges > WIRE_MAX_ACK_RANGES || !a->ranges) return WIRE_REJ_ACK;
    for (size_t i = 0; i < a->n_ranges; i++)
        if (!a->ranges[i] || a->ranges[i]->first > a->ranges[i]->last) return WIRE_REJ_ACK;
    return WIRE_REJ_NONE;
}

static enum wire_reject validate_metrics(const Saeflow__TrainMetrics *t)
{
    if (!id_ok(t->trainer_id, false)) return WIRE_REJ_ID;
    if (!name_ok(t->sae_id, false) || !hook_ok(t->hook_name, true)) return WIRE_REJ_NAME;
    if (t->n_extra > WIRE_MAX_EXTRA || (t->n_extra && !t->extra)) return WIRE_REJ_FIELD;
    for (size_t i = 0; i < t->n_extra; i++)
        if (!t->extra[i] || !hook_ok(t->extra[i]->name, false)) return WIRE_REJ_FIELD;
    return WIRE_REJ_NONE;
}

static bool sha256_ok(const char *s)
{
    size_t n = str_len(s, 64);
    if (n == 0) return true;
    if (n != 64) return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
    return true;
}

static enum wire_reject validate_checkpoint(const Saeflow__CheckpointReady *c)
{
    if (!id_ok(c->trainer_id, false)) return WIRE_REJ_ID;
    if (!name_ok(c->sae_id, false) || !name_ok(c->model_id, true) || !hook_ok(c->hook_name, true))
        return WIRE_REJ_NAME;
    if (!path_ok(c->path) || !text_ok(c->format, WIRE_MAX_TEXT_LEN)) return WIRE_REJ_TEXT;
    if (c->d_in == 0 || c->d_in > WIRE_MAX_D_IN || c->d_sae == 0 || c->d_sae > (1u << 24) ||
        c->k > c->d_sae)
        return WIRE_REJ_DIMS;
    if (!sha256_ok(c->sha256)) return WIRE_REJ_FIELD;
    return WIRE_REJ_NONE;
}

static enum wire_reject validate_heartbeat(const Saeflow__Heartbeat *h)
{
    if (!id_ok(h->sender_id, false)) return WIRE_REJ_ID;
    if (!text_ok(h->role, WIRE_MAX_TEXT_LEN) || !text_ok(h->status, WIRE_MAX_TEXT_LEN))
        return WIRE_REJ_TEXT;
    return WIRE_REJ_NONE;
}

static enum wire_reject validate_resume(const Saeflow__Resume *r)
{
    if (!id_ok(r->consumer_id, false) || !id_ok(r->producer_id, false)) return WIRE_REJ_ID;
    if (r->n_hooks > WIRE_MAX_RESUME_HOOKS || (r->n_hooks && !r->hooks)) return WIRE_REJ_FIELD;
    for (size_t i = 0; i < r->n_hooks; i++) {
        const Saeflow__HookCursor *h = r->hooks[i];
        if (!h || !h->cursor) return WIRE_REJ_FIELD;
        if (!hook_ok(h->hook_name, false)) return WIRE_REJ_NAME;
        if (!id_ok(h->cursor->source_id, false)) return WIRE_REJ_ID;
    }
    return WIRE_REJ_NONE;
}

enum wire_reject wire_validate(enum wire_kind kind, const void *body)
{
    if (!body) return WIRE_REJ_NO_BODY;
    switch (kind) {
    case WIRE_BATCH:
        return validate_batch(body);
    case WIRE_CREDIT:
        return validate_credit(body);
    case WIRE_ACK:
        return validate_ack(body);
    case WIRE_METRICS:
        return validate_metrics(body);
    case WIRE_CHECKPOINT:
        return validate_checkpoint(body);
    case WIRE_HEARTBEAT:
        return validate_heartbeat(body);
    case WIRE_RESUME:
        return validate_resume(body);
    default:
        return WIRE_REJ_NO_BODY;
    }
}

int wire_topic(enum wire_kind kind, const char *hook_name, char *out, size_t out_size)
{
    if (!out || out_size == 0 || kind <= WIRE_NONE || kind >= WIRE_KIND_COUNT) return SF_EINVAL;
    int n;
    if (kind == WIRE_BATCH && hook_name && hook_name[0]) {
        if (!hook_ok(hook_name, false)) return SF_EINVAL;
        n = snprintf(out, out_size, "batch/%s/", hook_name);
    } else {
        n = snprintf(out, out_size, "%s/", kind_names[kind]);
    }
    return n < 0 || (size_t)n >= out_size ? SF_ERANGE : 0;
}

static size_t varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* The envelope is written by hand rather than with saeflow__frame__pack: protobuf-c
 * packs a sub-message one byte further on and then memmoves it into place once its
 * length is known, a second pass over a 1 MiB batch. The bytes are the same as
 * protobuf-c's (field 1, then the body field; test_wire checks that). */
static const ProtobufCMessage *frame_body(const Saeflow__Frame *f)
{
    switch (f->body_case) {
    case SAEFLOW__FRAME__BODY_BATCH:
        return &f->batch->base;
    case SAEFLOW__FRAME__BODY_CREDIT:
        return &f->credit->base;
    case SAEFLOW__FRAME__BODY_ACK:
        return &f->ack->base;
    case SAEFLOW__FRAME__BODY_METRICS:
        return &f->metrics->base;
    case SAEFLOW__FRAME__BODY_CHECKPOINT:
        return &f->checkpoint->base;
    case SAEFLOW__FRAME__BODY_HEARTBEAT:
        return &f->heartbeat->base;
    case SAEFLOW__FRAME__BODY_RESUME:
        return &f->resume->base;
    default:
        return NULL;
    }
}

/* Size of the encoded frame f (schema_version != 0 and a body set, as frame_prepare
 * leaves it); *body_size receives the body's packed size. */
static size_t frame_size(const Saeflow__Frame *f, size_t *body_size)
{
    *body_size = protobuf_c_message_get_packed_size(frame_body(f));
    return 1 + varint_size(f->schema_version) + varint_size(((uint64_t)f->body_case << 3) | 2) +
           varint_size(*body_size) + *body_size;
}

static size_t frame_pack(const Saeflow__Frame *f, size_t body_size, uint8_t *out)
{
    size_t w = 0;
    out[w++] = (1 << 3) | 0; /* field 1, varint */
    w += put_varint(out + w, f->schema_version);
    w += put_varint(out + w, ((uint64_t)f->body_case << 3) | 2);
    w += put_varint(out + w, body_size);
    return w + protobuf_c_message_pack(frame_body(f), out + w);
}

/* ---- encoding -------------------------------------------------------------------- */

/* Points f at m's body (batch copied shallowly into *bcopy to default its version). */
static enum wire_reject frame_prepare(const struct wire_msg *m, Saeflow__Frame *f,
                                      Saeflow__ActivationBatch *bcopy)
{
    saeflow__frame__init(f);
    f->schema_version = WIRE_SCHEMA_VERSION;
    if (!m->body) return WIRE_REJ_NO_BODY;
    switch (m->kind) {
    case WIRE_BATCH:
        *bcopy = *m->batch;
        if (bcopy->schema_version == 0) bcopy->schema_version = WIRE_SCHEMA_VERSION;
        f->body_case = SAEFLOW__FRAME__BODY_BATCH;
        f->batch = bcopy;
        return wire_validate(WIRE_BATCH, bcopy);
    case WIRE_CREDIT:
        f->body_case = SAEFLOW__FRAME__BODY_CREDIT;
        f->credit = m->credit;
        break;
    case WIRE_ACK:
        f->body_case = SAEFLOW__FRAME__BODY_ACK;
        f->ack = m->ack;
        break;
    case WIRE_METRICS:
        f->body_case = SAEFLOW__FRAME__BODY_METRICS;
        f->metrics = m->metrics;
        break;
    case WIRE_CHECKPOINT:
        f->body_case = SAEFLOW__FRAME__BODY_CHECKPOINT;
        f->checkpoint = m->checkpoint;
        break;
    case WIRE_HEARTBEAT:
        f->body_case = SAEFLOW__FRAME__BODY_HEARTBEAT;
        f->heartbeat = m->heartbeat;
        break;
    case WIRE_RESUME:
        f->body_case = SAEFLOW__FRAME__BODY_RESUME;
        f->resume = m->resume;
        break;
    default:
        return WIRE_REJ_NO_BODY;
    }
    return wire_validate(m->kind, m->body);
}

int wire_encode(const struct wire_msg *m, struct buf *out)
{
    if (!m || !out) return SF_EINVAL;
    Saeflow__Frame f;
    Saeflow__ActivationBatch bcopy;
    enum wire_reject r = frame_prepare(m, &f, &bcopy);
    if (r != WIRE_REJ_NONE) {
        log_error("wire_encode_invalid", "kind=%s reason=%s", wire_kind_name(m->kind),
                  wire_reject_name(r));
        return SF_EINVAL;
    }
    size_t body_size, n = frame_size(&f, &body_size);
    int rc = buf_reserve(out, n);
    if (rc) return rc;
    size_t w = frame_pack(&f, body_size, (uint8_t *)out->data + out->len);
    if (w != n) return SF_ERR;
    out->len += n;
    out->data[out->len] = '\0';
    return 0;
}

/* ---- decoding -------------------------------------------------------------------- */

/* protobuf-c allocator that refuses once `limit` bytes (plus 16 per allocation, for
 * malloc's own overhead) have been handed out for one message. */
struct budget {
    size_t used, limit;
    bool refused;
};

static void *budget_alloc(void *ud, size_t size)
{
    struct budget *b = ud;
    size_t cost = size + 16;
    if (size > b->limit || cost > b->limit - b->used) {
        b->refused = true;
        return NULL;
    }
    b->used += cost;
    return malloc(size ? size : 1);
}

static void budget_free(void *ud, void *p)
{
    (void)ud;
    free(p);
}

struct msg_priv {
    Saeflow__Frame *frame;
    struct budget budget;
    ProtobufCAllocator alloc;
    bool borrowed; /* frame->batch->activations points outside our allocations */
    bool has_zmsg; /* zmsg holds the payload those activations point into */
    zmq_msg_t zmsg;
};

void wire_msg_fini(struct wire_msg *m)
{
    if (!m) return;
    struct msg_priv *pv = m->priv_;
    if (pv) {
        if (pv->frame) {
            if (pv->borrowed && pv->frame->body_case == SAEFLOW__FRAME__BODY_BATCH &&
                pv->frame->batch) {
                pv->frame->batch->activations.data = NULL;
                pv->frame->batch->activations.len = 0;
            }
            saeflow__frame__free_unpacked(pv->frame, &pv->alloc);
        }
        if (pv->has_zmsg) zmq_msg_close(&pv->zmsg);
        free(pv);
    }
    memset(m, 0, sizeof *m);
}

static enum wire_kind kind_of_case(Saeflow__Frame__BodyCase c)
{
    switch (c) {
    case SAEFLOW__FRAME__BODY_BATCH:
        return WIRE_BATCH;
    case SAEFLOW__FRAME__BODY_CREDIT:
        return WIRE_CREDIT;
    case SAEFLOW__FRAME__BODY_ACK:
        return WIRE_ACK;
    case SAEFLOW__FRAME__BODY_METRICS:
        return WIRE_METRICS;
    case SAEFLOW__FRAME__BODY_CHECKPOINT:
        return WIRE_CHECKPOINT;
    case SAEFLOW__FRAME__BODY_HEARTBEAT:
        return WIRE_HEARTBEAT;
    case SAEFLOW__FRAME__BODY_RESUME:
        return WIRE_RESUME;
    default:
        return WIRE_NONE;
    }
}

static bool rd_varint(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned sh = 0; sh < 70 && *i < n; sh += 7) {
        uint8_t c = p[(*i)++];
        r |= (uint64_t)(c & 0x7f) << sh;
        if (!(c & 0x80)) {
            *v = r;
            return true;
        }
    }
    return false;
}

struct lenfield {
    size_t len_off, data_off, data_len; /* offsets of the length varint and the data */
};

/* Walks the top-level fields of p[0..n) and finds the single length-delimited field
 * `want`. False when it is absent, repeated, not length-delimited, when any other
 * field numbered in [lo, hi] is present, or when anything does not parse: the caller
 * then takes the plain path. */
static bool scan_one(const uint8_t *p, size_t n, uint64_t want, uint64_t lo, uint64_t hi,
                     struct lenfield *out)
{
    size_t i = 0;
    int found = 0;
    while (i < n) {
        uint64_t key, v;
        if (!rd_varint(p, n, &i, &key)) return false;
        uint64_t fnum = key >> 3;
        unsigned wt = (unsigned)(key & 7);
        if (fnum == 0 || (fnum == want && wt != 2) || (fnum != want && fnum >= lo && fnum <= hi))
            return false;
        switch (wt) {
        case 0:
            if (!rd_varint(p, n, &i, &v)) return false;
            break;
        case 1:
            if (n - i < 8) return false;
            i += 8;
            break;
        case 5:
            if (n - i < 4) return false;
            i += 4;
            break;
        case 2: {
            size_t len_off = i;
            if (!rd_varint(p, n, &i, &v) || v > n - i) return false;
            if (fnum == want) {
                found++;
                out->len_off = len_off;
                out->data_off = i;
                out->data_len = (size_t)v;
            }
            i += (size_t)v;
            break;
        }
        default:
            return false;
        }
    }
    return found == 1;
}

/* Builds in *compact the Frame p[0..n) with its batch's activation bytes removed (the
 * activations field kept with length 0). act_off and act_len locate the bytes in p.
 * False when the frame is not a plain batch frame. */
static bool compact_batch(const uint8_t *p, size_t n, uint8_t **compact, size_t *clen,
                          size_t *act_off, size_t *act_len)
{
    struct lenfield b, a;
    if (!scan_one(p, n, SAEFLOW__FRAME__BODY_BATCH, SAEFLOW__FRAME__BODY_CREDIT,
                  SAEFLOW__FRAME__BODY_RESUME, &b))
        return false;
    const uint8_t *bp = p + b.data_off;
    if (!scan_one(bp, b.data_len, 11, 1, 0, &a)) return false;
    size_t a_len_bytes = a.data_off - a.len_off;
    size_t new_blen = b.data_len - a_len_bytes - a.data_len + 1;
    size_t tail_b = b.data_len - a.data_off - a.data_len; /* batch bytes after activations */
    size_t tail_f = n - b.data_off - b.data_len;          /* frame bytes after the batch */
    size_t size = b.len_off + varint_size(new_blen) + a.len_off + 1 + tail_b + tail_f;
    uint8_t *c = malloc(size ? size : 1);
    if (!c) return false;
    size_t w = 0;
    memcpy(c + w, p, b.len_off);
    w += b.len_off;
    w += put_varint(c + w, new_blen);
    memcpy(c + w, bp, a.len_off);
    w += a.len_off;
    c[w++] = 0;
    memcpy(c + w, bp + a.data_off + a.data_len, tail_b);
    w += tail_b;
    memcpy(c + w, p + b.data_off + b.data_len, tail_f);
    w += tail_f;
    *compact = c;
    *clen = w;
    *act_off = b.data_off + a.data_off;
    *act_len = a.data_len;
    return true;
}

static size_t lim_max(const struct wire_limits *lim)
{
    return lim && lim->max_msg_bytes ? lim->max_msg_bytes : WIRE_DEFAULT_MAX_MSG;
}
static size_t lim_budget(const struct wire_limits *lim)
{
    return lim && lim->alloc_budget ? lim->alloc_budget : lim_max(lim) + WIRE_ARRAYS_BUDGET;
}

/* protobuf-c keeps unknown fields and accepts a non-minimal varint key for field
 * number 0, which it cannot read back once re-encoded: such frames are invalid
 * protobuf, so they are refused here (so are field numbers beyond 2^29 - 1). */
static bool unknown_ok(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0 || m->unknown_fields[i].tag > 536870911u) return false;
    return true;
}

static bool unknown_tree_ok(const Saeflow__Frame *f, enum wire_kind kind, const void *body)
{
    if (!unknown_ok(&f->base) || !unknown_ok(body)) return false;
    if (kind == WIRE_ACK) {
        const Saeflow__Ack *a = body;
        for (size_t i = 0; i < a->n_ranges; i++)
            if (a->ranges[i] && !unknown_ok(&a->ranges[i]->base)) return false;
    } else if (kind == WIRE_METRICS) {
        const Saeflow__TrainMetrics *t = body;
        for (size_t i = 0; i < t->n_extra; i++)
            if (t->extra[i] && !unknown_ok(&t->extra[i]->base)) return false;
    }
    return true;
}

/* Decode + validate. With `borrow`, batch activations may point into buf (which must
 * outlive out); *borrowed says whether they do. Returns the rejection reason. */
static enum wire_reject decode(const uint8_t *buf, size_t len, const struct wire_limits *lim,
                               bool borrow, struct wire_msg *out, bool *borrowed)
{
    wire_msg_fini(out);
    *borrowed = false;
    if (len == 0) return WIRE_REJ_EMPTY;
    if (len > lim_max(lim)) return WIRE_REJ_TOO_LARGE;
    struct msg_priv *pv = calloc(1, sizeof *pv);
    if (!pv) return WIRE_REJ_BUDGET;
    pv->budget.limit = lim_budget(lim);
    pv->alloc.alloc = budget_alloc;
    pv->alloc.free = budget_free;
    pv->alloc.allocator_data = &pv->budget;
    out->priv_ = pv;

    uint8_t *compact = NULL;
    size_t clen = 0, act_off = 0, act_len = 0;
    if (borrow && compact_batch(buf, len, &compact, &clen, &act_off, &act_len)) {
        pv->frame = saeflow__frame__unpack(&pv->alloc, clen, compact);
        free(compact);
        if (pv->frame && pv->frame->body_case == SAEFLOW__FRAME__BODY_BATCH && pv->frame->batch &&
            pv->frame->batch->activations.len == 0) {
            pv->frame->batch->activations.data = act_len ? (uint8_t *)buf + act_off : NULL;
            pv->frame->batch->activations.len = act_len;
            pv->borrowed = true;
        } else if (pv->frame) {
            /* cannot happen for a frame the scanner accepted; be safe anyway */
            saeflow__frame__free_unpacked(pv->frame, &pv->alloc);
            pv->frame = NULL;
            return WIRE_REJ_UNPACK;
        }
    } else {
        pv->frame = saeflow__frame__unpack(&pv->alloc, len, buf);
    }
    if (!pv->frame) return pv->budget.refused ? WIRE_REJ_BUDGET : WIRE_REJ_UNPACK;
    if (pv->frame->schema_version != WIRE_SCHEMA_VERSION) return WIRE_REJ_SCHEMA_VERSION;
    enum wire_kind kind = kind_of_case(pv->frame->body_case);
    void *body = NULL;
    switch (kind) {
    case WIRE_BATCH:
        body = pv->frame->batch;
        break;
    case WIRE_CREDIT:
        body = pv->frame->credit;
        break;
    case WIRE_ACK:
        body = pv->frame->ack;
        break;
    case WIRE_METRICS:
        body = pv->frame->metrics;
        break;
    case WIRE_CHECKPOINT:
        body = pv->frame->checkpoint;
        break;
    case WIRE_HEARTBEAT:
        body = pv->frame->heartbeat;
        break;
    case WIRE_RESUME:
        body = pv->frame->resume;
        break;
    default:
        break;
    }
    if (!body) return WIRE_REJ_NO_BODY;
    if (!unknown_tree_ok(pv->frame, kind, body)) return WIRE_REJ_UNPACK;
    enum wire_reject r = wire_validate(kind, body);
    if (r != WIRE_REJ_NONE) return r;
    out->kind = kind;
    out->body = body;
    out->wire_bytes = len;
    *borrowed = pv->borrowed;
    return WIRE_REJ_NONE;
}

static int decode_result(enum wire_reject r, struct wire_msg *out)
{
    if (r == WIRE_REJ_NONE) return 0;
    wire_msg_fini(out);
    out->reject = r;
    return SF_EFORMAT;
}

int wire_decode(const void *buf, size_t len, const struct wire_limits *lim, struct wire_msg *out)
{
    if (!out) return SF_EINVAL;
    bool borrowed;
    if (!buf && len) return decode_result(WIRE_REJ_EMPTY, out);
    return decode_result(decode(buf, len, lim, false, out, &borrowed), out);
}

int wire_decode_borrowed(const void *buf, size_t len, const struct wire_limits *lim,
                         struct wire_msg *out)
{
    if (!out) return SF_EINVAL;
    bool borrowed;
    if (!buf && len) return decode_result(WIRE_REJ_EMPTY, out);
    return decode_result(decode(buf, len, lim, true, out, &borrowed), out);
}

/* ---- accounting ------------------------------------------------------------------ */

static struct producer *producer_find(struct wire_sock *s, const char *id, uint64_t epoch)
{
    for (size_t i = 0; i < s->n_prod; i++) {
        struct producer *p = &s->prod[i];
        if (p->st.epoch == epoch && strcmp(p->st.producer_id, id) == 0) return p;
    }
    return NULL;
}

static struct producer *producer_add(struct wire_sock *s, const char *id, uint64_t epoch)
{
    struct producer *p;
    if (s->n_prod == s->cap_prod && s->cap_prod < MAX_PRODUCERS) {
        size_t cap = s->cap_prod ? s->cap_prod * 2 : 8;
        if (cap > MAX_PRODUCERS) cap = MAX_PRODUCERS;
        struct producer *np = realloc(s->prod, cap * sizeof *np);
        if (!np) return NULL;
        s->prod = np;
        s->cap_prod = cap;
    }
    if (s->n_prod < s->cap_prod) {
        p = &s->prod[s->n_prod++];
    } else { /* full: evict the least recently seen key */
        p = &s->prod[0];
        for (size_t i = 1; i < s->n_prod; i++)
            if (s->prod[i].touch < p->touch) p = &s->prod[i];
    }
    memset(p, 0, sizeof *p);
    snprintf(p->st.producer_id, sizeof p->st.producer_id, "%s", id);
    p->st.epoch = epoch;
    return p;
}

#define SEEN_BIT(p, q) ((p)->seen[((q) % SEQ_WINDOW) / 64] & (1ull << ((q) % 64)))
#define SET_SEEN(p, q) ((p)->seen[((q) % SEQ_WINDOW) / 64] |= (1ull << ((q) % 64)))
#define CLR_SEEN(p, q) ((p)->seen[((q) % SEQ_WINDOW) / 64] &= ~(1ull << ((q) % 64)))

/* Under s->mu. Returns true when the batch is a duplicate. */
static bool seq_track(struct wire_sock *s, const Saeflow__ActivationBatch *b)
{
    struct producer *p = producer_find(s, b->producer_id, b->producer_epoch);
    bool fresh = false;
    if (!p) {
        p = producer_add(s, b->producer_id, b->producer_epoch);
        if (!p) return false;
        fresh = true;
    }
    p->touch = ++s->touch;
    p->st.batches++;
    uint64_t q = b->seq;
    if (fresh) {
        p->st.last_seq = q;
        SET_SEEN(p, q);
        return false;
    }
    uint64_t last = p->st.last_seq;
    if (q > last) {
        uint64_t missing = q - last - 1;
        if (missing) {
            p->st.gaps++;
            p->st.gap_batches += missing;
            s->st.gaps++;
            s->st.gap_batches += missing;
        }
        if (q - last >= SEQ_WINDOW) {
            memset(p->seen, 0, sizeof p->seen);
        } else {
            for (uint64_t x = last + 1; x < q; x++) CLR_SEEN(p, x);
        }
        SET_SEEN(p, q);
        p->st.last_seq = q;
        return false;
    }
    if (last - q >= SEQ_WINDOW || SEEN_BIT(p, q)) {
        p->st.duplicates++;
        s->st.duplicates++;
        return true;
    }
    SET_SEEN(p, q);
    p->st.late++;
    s->st.late++;
    return false;
}

static bool is_pow2(uint64_t x)
{
    return x && !(x & (x - 1));
}

static void count_reject(struct wire_sock *s, enum wire_reject r, size_t len)
{
    pthread_mutex_lock(&s->mu);
    uint64_t n = ++s->st.rejected[r];
    s->st.rejected_total++;
    pthread_mutex_unlock(&s->mu);
    /* one line for the 1st, 2nd, 4th, 8th... of each reason: a flood cannot flood the log */
    if (is_pow2(n))
        log_warn("wire_rejected", "reason=%s bytes=%zu count=%llu endpoint=%s", wire_reject_name(r),
                 len, (unsigned long long)n, s->endpoint);
}

void wire_stats_get(const struct wire_sock *s, struct wire_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!s) return;
    struct wire_sock *w = (struct wire_sock *)s; /* the lock is not part of the value */
    pthread_mutex_lock(&w->mu);
    *out = w->st;
    out->producers = w->n_prod;
    pthread_mutex_unlock(&w->mu);
}

void wire_producers_foreach(const struct wire_sock *s,
                            void (*cb)(const struct wire_producer_stats *p, void *ud), void *ud)
{
    if (!s || !cb) return;
    struct wire_sock *w = (struct wire_sock *)s;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n_prod; i++) cb(&w->prod[i].st, ud);
    pthread_mutex_unlock(&w->mu);
}

struct foreach_ctx {
    wire_sample_fn cb;
    void *ud;
};

static void producer_samples(const struct wire_producer_stats *p, void *ud)
{
    struct foreach_ctx *c = ud;
    char label[WIRE_MAX_ID_LEN + 32];
    snprintf(label, sizeof label, "%s/%llu", p->producer_id, (unsigned long long)p->epoch);
    c->cb("saeflow_wire_producer_last_seq", "Highest batch seq seen from this producer epoch",
          "producer", label, (double)p->last_seq, c->ud);
    c->cb("saeflow_wire_producer_batches_total", "Batches received from this producer epoch",
          "producer", label, (double)p->batches, c->ud);
    c->cb("saeflow_wire_producer_duplicates_total", "Duplicate batches from this producer epoch",
          "producer", label, (double)p->duplicates, c->ud);
    c->cb("saeflow_wire_producer_gap_batches_total",
          "Batches missing in seq gaps from this producer epoch", "producer", label,
          (double)p->gap_batches, c->ud);
}

void wire_stats_foreach(const struct wire_sock *s, wire_sample_fn cb, void *ud)
{
    if (!s || !cb) return;
    struct wire_stats st;
    wire_stats_get(s, &st);
    for (int k = WIRE_BATCH; k < WIRE_KIND_COUNT; k++)
        cb("saeflow_wire_sent_messages_total", "Typed messages sent", "kind", kind_names[k],
           (double)st.sent[k], ud);
    cb("saeflow_wire_sent_bytes_total", "Payload bytes sent", NULL, NULL, (double)st.sent_bytes,
       ud);
    cb("saeflow_wire_send_again_total", "Sends that timed out or would block", NULL, NULL,
       (double)st.send_again, ud);
    cb("saeflow_wire_send_errors_total", "Sends that failed (invalid message or socket error)",
       NULL, NULL, (double)st.send_errors, ud);
    for (int k = WIRE_BATCH; k < WIRE_KIND_COUNT; k++)
        cb("saeflow_wire_received_messages_total", "Valid messages received", "kind", kind_names[k],
           (double)st.received[k], ud);
    cb("saeflow_wire_received_bytes_total", "Payload bytes of valid messages received", NULL, NULL,
       (double)st.received_bytes, ud);
    for (int r = WIRE_REJ_NONE + 1; r < WIRE_REJ_COUNT; r++)
        cb("saeflow_wire_rejected_total", "Received messages rejected, by reason", "reason",
           reject_names[r], (double)st.rejected[r], ud);
    cb("saeflow_wire_duplicates_total", "Batches whose seq was already seen", NULL, NULL,
       (double)st.duplicates, ud);
    cb("saeflow_wire_late_total", "Batches that arrived out of order, filling a gap", NULL, NULL,
       (double)st.late, ud);
    cb("saeflow_wire_gaps_total", "Seq gap events", NULL, NULL, (double)st.gaps, ud);
    cb("saeflow_wire_gap_batches_total", "Batches missing in seq gaps", NULL, NULL,
       (double)st.gap_batches, ud);
    cb("saeflow_wire_producers", "Producer epochs tracked", NULL, NULL, (double)st.producers, ud);
    struct foreach_ctx c = {cb, ud};
    wire_producers_foreach(s, producer_samples, &c);
}

/* ---- send ------------------------------------------------------------------------ */

static void free_payload(void *data, void *hint)
{
    (void)hint;
    free(data);
}

static int send_error(struct wire_sock *s, const char *what)
{
    int e = zmq_errno();
    pthread_mutex_lock(&s->mu);
    if (e == EAGAIN)
        s->st.send_again++;
    else
        s->st.send_errors++;
    pthread_mutex_unlock(&s->mu);
    if (e == EAGAIN) return SF_AGAIN;
    if (e == EHOSTUNREACH) return SF_NOTFOUND;
    log_error("wire_send_failed", "part=%s endpoint=%s err=\"%s\"", what, s->endpoint,
              zmq_strerror(e));
    return SF_EIO;
}

int wire_send(struct wire_sock *s, const struct wire_msg *m, int flags)
{
    if (!s || !m) return SF_EINVAL;
    Saeflow__Frame f;
    Saeflow__ActivationBatch bcopy;
    enum wire_reject r = frame_prepare(m, &f, &bcopy);
    if (r != WIRE_REJ_NONE) {
        log_error("wire_send_invalid", "kind=%s reason=%s endpoint=%s", wire_kind_name(m->kind),
                  wire_reject_name(r), s->endpoint);
        pthread_mutex_lock(&s->mu);
        s->st.send_errors++;
        pthread_mutex_unlock(&s->mu);
        return SF_EINVAL;
    }
    if (s->type == WIRE_ROUTER && (m->peer_len == 0 || m->peer_len > WIRE_MAX_PEER_LEN)) {
        log_error("wire_send_invalid", "reason=router_needs_peer endpoint=%s", s->endpoint);
        return SF_EINVAL;
    }
    size_t body_size, n = frame_size(&f, &body_size);
    if (n > s->opts.max_msg_bytes) {
        log_error("wire_send_too_large", "kind=%s bytes=%zu max=%zu", wire_kind_name(m->kind), n,
                  s->opts.max_msg_bytes);
        pthread_mutex_lock(&s->mu);
        s->st.send_errors++;
        pthread_mutex_unlock(&s->mu);
        return SF_ERANGE;
    }
    bool pooled = n >= POOL_MIN_BYTES;
    zmq_free_fn *ffn = pooled ? pool_put : free_payload;
    void *hint = pooled ? s->pool : NULL;
    uint8_t *payload = pooled ? pool_get(s->pool, n) : malloc(n ? n : 1);
    if (!payload) return SF_ENOMEM;
    if (frame_pack(&f, body_size, payload) != n) {
        ffn(payload, hint);
        return SF_ERR;
    }

    int zflags = (flags & WIRE_DONTWAIT) ? ZMQ_DONTWAIT : 0;
    if (s->type == WIRE_ROUTER) {
        if (zmq_send(s->zs, m->peer, m->peer_len, zflags | ZMQ_SNDMORE) < 0) {
            ffn(payload, hint);
            return send_error(s, "peer");
        }
    } else if (s->type == WIRE_PUB) {
        char topic[WIRE_MAX_TOPIC_LEN + 1];
        const char *hook = m->kind == WIRE_BATCH ? m->batch->hook_name : NULL;
        if (wire_topic(m->kind, hook, topic, sizeof topic) != 0 ||
            zmq_send(s->zs, topic, strlen(topic), zflags | ZMQ_SNDMORE) < 0) {
            ffn(payload, hint);
            return send_error(s, "topic");
        }
    }
    zmq_msg_t zm;
    if (zmq_msg_init_data(&zm, payload, n, ffn, hint) != 0) {
        ffn(payload, hint);
        return send_error(s, "init");
    }
    /* after the first part of a multipart message, the rest is never refused */
    if (zmq_msg_send(&zm, s->zs, zflags) < 0) {
        zmq_msg_close(&zm);
        return send_error(s, "payload");
    }
    pthread_mutex_lock(&s->mu);
    s->st.sent[m->kind]++;
    s->st.sent_bytes += n;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int send_kind(struct wire_sock *s, enum wire_kind kind, const void *body)
{
    struct wire_msg m;
    memset(&m, 0, sizeof m);
    m.kind = kind;
    m.body = (void *)body; /* only read */
    return wire_send(s, &m, 0);
}

int wire_send_batch(struct wire_sock *s, const Saeflow__ActivationBatch *b)
{
    return send_kind(s, WIRE_BATCH, b);
}
int wire_send_credit(struct wire_sock *s, const Saeflow__CreditGrant *c)
{
    return send_kind(s, WIRE_CREDIT, c);
}
int wire_send_ack(struct wire_sock *s, const Saeflow__Ack *a)
{
    return send_kind(s, WIRE_ACK, a);
}
int wire_send_metrics(struct wire_sock *s, const Saeflow__TrainMetrics *t)
{
    return send_kind(s, WIRE_METRICS, t);
}
int wire_send_checkpoint(struct wire_sock *s, const Saeflow__CheckpointReady *c)
{
    return send_kind(s, WIRE_CHECKPOINT, c);
}
int wire_send_heartbeat(struct wire_sock *s, const Saeflow__Heartbeat *h)
{
    return send_kind(s, WIRE_HEARTBEAT, h);
}

int wire_send_raw(struct wire_sock *s, const void *const *parts, const size_t *lens, size_t n_parts)
{
    if (!s || n_parts == 0 || !parts || !lens) return SF_EINVAL;
    for (size_t i = 0; i < n_parts; i++) {
        int fl = i + 1 < n_parts ? ZMQ_SNDMORE : 0;
        if (zmq_send(s->zs, parts[i], lens[i], fl) < 0) return send_error(s, "raw");
    }
    return 0;
}

/* Writes n floats as little-endian dtype values. */
static void convert_f32(uint8_t *o, const float *x, size_t n, Saeflow__DType dtype)
{
    if (dtype == WIRE_F32) {
        if (host_is_le()) {
            memcpy(o, x, n * 4);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, &x[i], 4);
            for (int k = 0; k < 4; k++) o[4 * i + (size_t)k] = (uint8_t)(u >> (8 * k));
        }
        return;
    }
    bool half = dtype == WIRE_F16;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = half ? f32_to_f16(x[i]) : f32_to_bf16(x[i]);
        o[2 * i] = (uint8_t)h;
        o[2 * i + 1] = (uint8_t)(h >> 8);
    }
}

/* ---- zero-copy batch sends ----------------------------------------------------------- */

/* Room before the activations for the envelope, batch fields 1..10 (ids and names are
 * bounded by validation: under 400 bytes) and the activations key and length. */
#define BB_HEAD_ROOM 1024

struct wire_batch_buf {
    struct send_pool *pool; /* one reference held while the buffer lives */
    uint8_t *base;          /* from pool_get */
    uint8_t *act;           /* base + BB_HEAD_ROOM */
    size_t act_bytes, tail_room;
    uint32_t n_tokens, d_in;
    Saeflow__DType dtype;
    bool keep; /* a failed send's zmq_msg_close must not free it */
};

struct wire_batch_buf *wire_batch_buf_new(struct wire_sock *s, size_t n_tokens, size_t d_in,
                                          Saeflow__DType dtype)
{
    size_t esize = wire_dtype_size(dtype);
    if (!s || esize == 0 || n_tokens == 0 || n_tokens > WIRE_MAX_TOKENS || d_in == 0 ||
        d_in > WIRE_MAX_D_IN)
        return NULL;
    struct wire_batch_buf *bb = calloc(1, sizeof *bb);
    if (!bb) return NULL;
    bb->act_bytes = n_tokens * d_in * esize; /* < 2^39: no overflow */
    /* packed token ids (<= 5 bytes each), doc ids (<= 10), positions (<= 4 once
     * validated), norm_scale, created_unix_ms, keys and lengths */
    bb->tail_room = n_tokens * 20 + 64;
    bb->base = pool_get(s->pool, BB_HEAD_ROOM + bb->act_bytes + bb->tail_room);
    if (!bb->base) {
        free(bb);
        return NULL;
    }
    bb->pool = s->pool;
    bb->act = bb->base + BB_HEAD_ROOM;
    bb->n_tokens = (uint32_t)n_tokens;
    bb->d_in = (uint32_t)d_in;
    bb->dtype = dtype;
    return bb;
}

void *wire_batch_buf_data(struct wire_batch_buf *bb, size_t *bytes)
{
    if (bytes) *bytes = bb ? bb->act_bytes : 0;
    return bb ? bb->act : NULL;
}

static void bb_free(void *data, void *hint)
{
    (void)data;
    struct wire_batch_buf *bb = hint;
    if (bb->keep) { /* a send that failed: the caller still owns it */
        bb->keep = false;
        return;
    }
    pool_put(bb->base, bb->pool);
    free(bb);
}

void wire_batch_buf_destroy(struct wire_batch_buf **bbp)
{
    if (!bbp || !*bbp) return;
    (*bbp)->keep = false;
    bb_free(NULL, *bbp);
    *bbp = NULL;
}

int wire_batch_buf_fill_f32(struct wire_batch_buf *bb, const float *x)
{
    if (!bb || !x) return SF_EINVAL;
    convert_f32(bb->act, x, (size_t)bb->n_tokens * bb->d_in, bb->dtype);
    return 0;
}

int wire_send_batch_buf(struct wire_sock *s, const Saeflow__ActivationBatch *meta,
                        struct wire_batch_buf **bbp, int flags)
{
    if (!s || !meta || !bbp || !*bbp || s->type == WIRE_ROUTER) return SF_EINVAL;
    struct wire_batch_buf *bb = *bbp;
    Saeflow__ActivationBatch head = *meta;
    if (head.schema_version == 0) head.schema_version = WIRE_SCHEMA_VERSION;
    head.dtype = bb->dtype;
    head.d_in = bb->d_in;
    head.n_tokens = bb->n_tokens;
    head.activations.len = bb->act_bytes;
    head.activations.data = bb->act;
    enum wire_reject r = wire_validate(WIRE_BATCH, &head);
    if (r != WIRE_REJ_NONE) {
        log_error("wire_send_invalid", "kind=batch reason=%s endpoint=%s", wire_reject_name(r),
                  s->endpoint);
        pthread_mutex_lock(&s->mu);
        s->st.send_errors++;
        pthread_mutex_unlock(&s->mu);
        return SF_EINVAL;
    }
    /* fields 1..10, then 11 (activations, already in place), then 12..16: protobuf-c
     * writes fields in number order, so this is its encoding split in three */
    Saeflow__ActivationBatch pre = head, post = SAEFLOW__ACTIVATION_BATCH__INIT;
    pre.activations.len = 0;
    pre.activations.data = NULL;
    pre.n_token_ids = pre.n_doc_ids = pre.n_positions = 0;
    pre.norm_scale = 0;
    pre.created_unix_ms = 0;
    post.n_token_ids = head.n_token_ids;
    post.token_ids = head.token_ids;
    post.n_doc_ids = head.n_doc_ids;
    post.doc_ids = head.doc_ids;
    post.n_positions = head.n_positions;
    post.positions = head.positions;
    post.norm_scale = head.norm_scale;
    post.created_unix_ms = head.created_unix_ms;
    size_t pre_n = protobuf_c_message_get_packed_size(&pre.base);
    size_t post_n = protobuf_c_message_get_packed_size(&post.base);
    size_t act_hdr = 1 + varint_size(bb->act_bytes);
    size_t batch_len = pre_n + act_hdr + bb->act_bytes + post_n;
    uint64_t body_key = ((uint64_t)SAEFLOW__FRAME__BODY_BATCH << 3) | 2;
    size_t env =
        1 + varint_size(WIRE_SCHEMA_VERSION) + varint_size(body_key) + varint_size(batch_len);
    size_t head_n = env + pre_n + act_hdr, total = head_n + bb->act_bytes + post_n;
    if (head_n > BB_HEAD_ROOM || post_n > bb->tail_room || total > s->opts.max_msg_bytes) {
        log_error("wire_send_too_large", "kind=batch bytes=%zu head=%zu tail=%zu", total, head_n,
                  post_n);
        return SF_ERANGE;
    }
    uint8_t *start = bb->act - head_n, *w = start;
    *w++ = (1 << 3) | 0;
    w += put_varint(w, WIRE_SCHEMA_VERSION);
    w += put_varint(w, body_key);
    w += put_varint(w, batch_len);
    w += protobuf_c_message_pack(&pre.base, w);
    *w++ = (11 << 3) | 2;
    w += put_varint(w, bb->act_bytes);
    if (w != bb->act || protobuf_c_message_pack(&post.base, bb->act + bb->act_bytes) != post_n)
        return SF_ERR; /* cannot happen: sizes were computed above */

    int zflags = (flags & WIRE_DONTWAIT) ? ZMQ_DONTWAIT : 0;
    if (s->type == WIRE_PUB) {
        char topic[WIRE_MAX_TOPIC_LEN + 1];
        if (wire_topic(WIRE_BATCH, head.hook_name, topic, sizeof topic) != 0 ||
            zmq_send(s->zs, topic, strlen(topic), zflags | ZMQ_SNDMORE) < 0)
            return send_error(s, "topic");
    }
    zmq_msg_t zm;
    if (zmq_msg_init_data(&zm, start, total, bb_free, bb) != 0) return send_error(s, "init");
    if (zmq_msg_send(&zm, s->zs, zflags) < 0) {
        int rc = send_error(s, "payload");
        bb->keep = true; /* zmq_msg_close calls bb_free now, which must not free it */
        zmq_msg_close(&zm);
        return rc;
    }
    *bbp = NULL; /* ZeroMQ owns it now; bb_free runs when it is written */
    pthread_mutex_lock(&s->mu);
    s->st.sent[WIRE_BATCH]++;
    s->st.sent_bytes += total;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* ---- receive --------------------------------------------------------------------- */

#define MAX_PARTS 3

static int recv_error(struct wire_sock *s, int e)
{
    if (e == EAGAIN || e == EINTR) return SF_AGAIN;
    log_error("wire_recv_failed", "endpoint=%s err=\"%s\"", s->endpoint, zmq_strerror(e));
    return e == ETERM ? SF_ESTATE : SF_EIO;
}

int wire_recv(struct wire_sock *s, struct wire_msg *out, int timeout_ms)
{
    if (!s || !out) return SF_EINVAL;
    wire_msg_fini(out);
    zmq_pollitem_t it = {.socket = s->zs, .events = ZMQ_POLLIN};
    int prc = zmq_poll(&it, 1, timeout_ms);
    if (prc < 0) return recv_error(s, zmq_errno());
    if (prc == 0 || !(it.revents & ZMQ_POLLIN)) return SF_AGAIN;

    /* read every part of one ZeroMQ message (parts beyond MAX_PARTS are dropped) */
    zmq_msg_t parts[MAX_PARTS];
    size_t n = 0, total = 0;
    bool more = true;
    int rc = 0;
    while (more) {
        zmq_msg_t tmp, *dst = n < MAX_PARTS ? &parts[n] : &tmp;
        zmq_msg_init(dst);
        if (zmq_msg_recv(dst, s->zs, ZMQ_DONTWAIT) < 0) {
            int e = zmq_errno();
            zmq_msg_close(dst);
            rc = (total == 0 && e == EAGAIN) ? SF_AGAIN : recv_error(s, e);
            break;
        }
        more = zmq_msg_more(dst);
        total++;
        if (dst == &tmp)
            zmq_msg_close(&tmp);
        else
            n++;
    }
    if (rc != 0) {
        for (size_t i = 0; i < n; i++) zmq_msg_close(&parts[i]);
        return rc;
    }

    bool has_head = s->type == WIRE_ROUTER || s->type == WIRE_SUB;
    size_t want = has_head ? 2 : 1;
    enum wire_reject r = WIRE_REJ_NONE;
    size_t plen = 0;
    if (s->type == WIRE_ROUTER) { /* ZeroMQ prepends the routing id: keep it even on reject */
        size_t idn = zmq_msg_size(&parts[0]);
        if (idn == 0 || idn > WIRE_MAX_PEER_LEN) {
            r = WIRE_REJ_FRAMING;
        } else {
            memcpy(out->peer, zmq_msg_data(&parts[0]), idn);
            out->peer_len = idn;
        }
    }
    if (total != want) r = WIRE_REJ_FRAMING;
    if (r == WIRE_REJ_NONE) {
        zmq_msg_t *pm = &parts[want - 1];
        plen = zmq_msg_size(pm);
        bool borrowed = false;
        uint8_t peer[WIRE_MAX_PEER_LEN];
        size_t peer_len = out->peer_len;
        memcpy(peer, out->peer, peer_len);
        r = decode(zmq_msg_data(pm), plen,
                   &(struct wire_limits){s->opts.max_msg_bytes, s->opts.alloc_budget}, true, out,
                   &borrowed);
        memcpy(out->peer, peer, peer_len); /* decode reset *out */
        out->peer_len = peer_len;
        if (r == WIRE_REJ_NONE && borrowed) {
            struct msg_priv *pv = out->priv_;
            zmq_msg_init(&pv->zmsg);
            zmq_msg_move(&pv->zmsg, pm);
            pv->has_zmsg = true;
        }
        if (r == WIRE_REJ_NONE && s->type == WIRE_SUB) {
            char topic[WIRE_MAX_TOPIC_LEN + 1];
            const char *hook = out->kind == WIRE_BATCH ? out->batch->hook_name : NULL;
            size_t tn = zmq_msg_size(&parts[0]);
            if (wire_topic(out->kind, hook, topic, sizeof topic) != 0 || tn != strlen(topic) ||
                memcmp(topic, zmq_msg_data(&parts[0]), tn) != 0)
                r = WIRE_REJ_FRAMING;
        }
    }
    for (size_t i = 0; i < n; i++) zmq_msg_close(&parts[i]);

    if (r != WIRE_REJ_NONE) {
        uint8_t peer[WIRE_MAX_PEER_LEN];
        size_t peer_len = out->peer_len;
        memcpy(peer, out->peer, peer_len);
        wire_msg_fini(out);
        memcpy(out->peer, peer, peer_len);
        out->peer_len = peer_len;
        out->reject = r;
        out->wire_bytes = plen;
        count_reject(s, r, plen);
        return WIRE_REJECTED;
    }
    pthread_mutex_lock(&s->mu);
    s->st.received[out->kind]++;
    s->st.received_bytes += plen;
    if (out->kind == WIRE_BATCH && s->opts.track_seq) out->duplicate = seq_track(s, out->batch);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* ---- poll ------------------------------------------------------------------------ */

int wire_poll(struct wire_poll_item *items, size_t n, int timeout_ms)
{
    if (!items || n == 0 || n > 1024) return SF_EINVAL;
    zmq_pollitem_t local[16];
    zmq_pollitem_t *zi = n <= SF_ARRAY_LEN(local) ? local : calloc(n, sizeof *zi);
    if (!zi) return SF_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        zi[i].socket = items[i].sock ? items[i].sock->zs : NULL;
        zi[i].fd = items[i].sock ? 0 : items[i].fd;
        zi[i].events =
            (short)((items[i].want_in ? ZMQ_POLLIN : 0) | (items[i].want_out ? ZMQ_POLLOUT : 0));
        zi[i].revents = 0;
    }
    int rc = zmq_poll(zi, (int)n, timeout_ms);
    int e = zmq_errno();
    for (size_t i = 0; i < n; i++) {
        items[i].in = rc > 0 && (zi[i].revents & ZMQ_POLLIN);
        items[i].out = rc > 0 && (zi[i].revents & ZMQ_POLLOUT);
    }
    if (zi != local) free(zi);
    if (rc > 0) return 0;
    if (rc == 0 || e == EINTR) return SF_AGAIN;
    log_error("wire_poll_failed", "err=\"%s\"", zmq_strerror(e));
    return e == ETERM ? SF_ESTATE : SF_EIO;
}

/* ---- activations ----------------------------------------------------------------- */

int wire_batch_set_f32(Saeflow__ActivationBatch *b, const float *x, size_t n_tokens, size_t d_in,
                       Saeflow__DType dtype, struct buf *scratch)
{
    size_t esize = wire_dtype_size(dtype), n, bytes;
    if (!b || (!x && n_tokens && d_in) || esize == 0 || n_tokens == 0 || d_in == 0 ||
        n_tokens > WIRE_MAX_TOKENS || d_in > WIRE_MAX_D_IN)
        return SF_EINVAL;
    if (!size_mul_ok(n_tokens, d_in, &n) || !size_mul_ok(n, esize, &bytes)) return SF_ERANGE;
    uint8_t *o;
    if (dtype == WIRE_F32 && host_is_le()) {
        o = (uint8_t *)(uintptr_t)x; /* borrowed, only read by pack */
    } else {
        if (!scratch) return SF_EINVAL;
        buf_reset(scratch);
        int rc = buf_reserve(scratch, bytes);
        if (rc) return rc;
        o = (uint8_t *)scratch->data;
        convert_f32(o, x, n, dtype);
        scratch->len = bytes;
        scratch->data[bytes] = '\0';
    }
    b->dtype = dtype;
    b->n_tokens = (uint32_t)n_tokens;
    b->d_in = (uint32_t)d_in;
    b->activations.data = o;
    b->activations.len = bytes;
    return 0;
}

int wire_batch_to_f32(const Saeflow__ActivationBatch *b, float *out, size_t n)
{
    if (!b || !out) return SF_EINVAL;
    size_t esize = wire_dtype_size(b->dtype), need;
    if (esize == 0) return SF_EFORMAT;
    if (!size_mul_ok((size_t)b->n_tokens, (size_t)b->d_in, &need) || need != n) return SF_EINVAL;
    if (b->activations.len != n * esize || (n && !b->activations.data)) return SF_EFORMAT;
    const uint8_t *p = b->activations.data;
    if (b->dtype == WIRE_F32) {
        if (host_is_le()) {
            if (n) memcpy(out, p, n * 4);
        } else {
            for (size_t i = 0; i < n; i++) {
                uint32_t u = (uint32_t)p[4 * i] | (uint32_t)p[4 * i + 1] << 8 |
                             (uint32_t)p[4 * i + 2] << 16 | (uint32_t)p[4 * i + 3] << 24;
                memcpy(&out[i], &u, 4);
            }
        }
        return 0;
    }
    bool half = b->dtype == WIRE_F16;
    for (size_t i = 0; i < n; i++) {
        uint16_t h = (uint16_t)(p[2 * i] | (uint16_t)p[2 * i + 1] << 8);
        out[i] = half ? f16_to_f32(h) : bf16_to_f32(h);
    }
    return 0;
}

/* wire: saeflow's messages (proto/saeflow.proto) over ZeroMQ, with validation and
 * accounting. The only module that calls zmq_* or protobuf-c; everyone else uses this.
 *
 *   struct wire_sock *s = wire_sock_new(WIRE_PUSH, "ipc:///tmp/x", WIRE_CONNECT, NULL);
 *   Saeflow__ActivationBatch b = SAEFLOW__ACTIVATION_BATCH__INIT;
 *   ... fill ids, hook, seq; wire_batch_set_f32(&b, x, n_tokens, d_in, WIRE_BF16, &scratch);
 *   wire_send_batch(s, &b);
 *
 *   struct wire_msg m = {0};                       // zero before first use
 *   int rc = wire_recv(pull, &m, 100);             // 0 | SF_AGAIN | WIRE_REJECTED | <0
 *   if (rc == 0 && m.kind == WIRE_BATCH) use(m.batch);
 *   wire_msg_fini(&m);
 *
 * Envelope: each payload is one protobuf `saeflow.Frame` whose oneof says the kind.
 * ZeroMQ frames around it: PUSH/PULL, PAIR, DEALER: [payload]; ROUTER: [peer id]
 * [payload] (wire_msg.peer); PUB/SUB: [topic][payload] with topic "batch/<hook>/"
 * for batches and "<kind>/" for the rest (see wire_topic), so a SUB can subscribe
 * to the hooks it trains on. Activation bytes are little-endian. ZeroMQ's own rules
 * still hold: PUB drops messages for a subscriber that is past its high-water mark
 * (visible as seq gaps), PUSH round-robins over its peers; a lossless stream needs
 * credits and acks on top (DEALER/ROUTER).
 *
 * Receiving checks, in order (each failure is one wire_reject reason, counted, and
 * never crashes): frame count/shape, length <= max_msg_bytes (ZMQ_MAXMSGSIZE is set to
 * twice that, so larger frames are counted here as too_large and only frames past
 * twice the cap make ZeroMQ drop the tcp/ipc peer before wire sees them), protobuf
 * unpack with an allocator that refuses past alloc_budget bytes, then semantic
 * validation (wire_validate): schema version, ids, hook names, dimension bounds
 * (WIRE_MAX_*), activations length == d_in * n_tokens * dtype size, per-token arrays
 * empty or n_tokens long, positions >= 0, string lengths and characters, ack ranges,
 * source cursors (source_from <= source_end.position; a cursor's source_id is an id).
 *
 * Sequence accounting: for every (producer_id, producer_epoch) the receiver keeps
 * the highest seq seen and a 1024-wide window of seen seqs. seq > last + 1 counts one
 * gap event and (seq - last - 1) missing batches; seq already seen (or older than the
 * window) is a duplicate (wire_msg.duplicate is set, the message is still delivered);
 * an unseen seq inside the window is "late" (it fills a gap). The first batch of a
 * key sets the baseline (a consumer may join late). This is meaningful only where a
 * consumer sees a producer's whole stream (PUB/SUB, DEALER/ROUTER, one PULL).
 *
 * Copies: wire_send_batch encodes once into a pooled buffer that ZeroMQ sends as is
 * (one copy of the activations); wire_send_batch_buf makes none. wire_recv leaves a
 * batch's activations inside the received ZeroMQ message (no copy): they are valid
 * until wire_msg_fini, like everything else in the wire_msg.
 *
 * Threads: a wire_sock is used by one thread at a time (a ZeroMQ rule); its stats
 * may be read from any thread (wire_stats_get, wire_stats_foreach).
 * Ownership: wire_sock_new returns an object freed by wire_sock_destroy; a received
 * wire_msg owns its memory until wire_msg_fini (do not copy the struct); sends never
 * take ownership, except a successful wire_send_batch_buf. */
#ifndef SAEFLOW_WIRE_H
#define SAEFLOW_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "saeflow.pb-c.h"

#define WIRE_SCHEMA_VERSION 1u

/* Short names for the generated enum values. */
#define WIRE_F32          SAEFLOW__DTYPE__DTYPE_F32
#define WIRE_F16          SAEFLOW__DTYPE__DTYPE_F16
#define WIRE_BF16         SAEFLOW__DTYPE__DTYPE_BF16
#define WIRE_ACK_ACCEPTED SAEFLOW__ACK_STATUS__ACK_STATUS_ACCEPTED
#define WIRE_ACK_TRAINED  SAEFLOW__ACK_STATUS__ACK_STATUS_TRAINED
#define WIRE_ACK_REJECTED SAEFLOW__ACK_STATUS__ACK_STATUS_REJECTED

/* ---- bounds checked by wire_validate ---- */
#define WIRE_MAX_D_IN         65536u
#define WIRE_MAX_TOKENS       (1u << 20)
#define WIRE_MAX_LAYER        4095 /* layer in [-1, WIRE_MAX_LAYER] */
#define WIRE_MAX_POSITION     (1 << 24)
#define WIRE_MAX_ID_LEN       64   /* producer/consumer/sender/trainer ids: [A-Za-z0-9._:-] */
#define WIRE_MAX_NAME_LEN     128  /* hook names [A-Za-z0-9._], model/sae ids [A-Za-z0-9._:/@+-] */
#define WIRE_MAX_TEXT_LEN     256  /* free text (status, role, format): printable ASCII */
#define WIRE_MAX_PATH_LEN     4096 /* paths: any byte >= 0x20 except 0x7f */
#define WIRE_MAX_ACK_RANGES   4096
#define WIRE_MAX_RESUME_HOOKS 64  /* Resume.hooks entries */
#define WIRE_MAX_EXTRA        64  /* TrainMetrics.extra entries */
#define WIRE_MAX_PEER_LEN     255 /* ROUTER routing ids */
#define WIRE_MAX_TOPIC_LEN    (6 + WIRE_MAX_NAME_LEN + 2)

/* Default size limits (struct wire_opts / struct wire_limits). */
#define WIRE_DEFAULT_MAX_MSG (64u << 20)
/* Unpacked per-token arrays can outgrow their encoding (a 1-byte varint becomes an
 * 8-byte doc id): the default budget is max_msg_bytes plus this much. */
#define WIRE_ARRAYS_BUDGET        (24u << 20)
#define WIRE_DEFAULT_ALLOC_BUDGET (WIRE_DEFAULT_MAX_MSG + WIRE_ARRAYS_BUDGET)

/* A positive return of wire_recv: a message arrived and was rejected (counted). */
#define WIRE_REJECTED 10

enum wire_type { WIRE_PUSH, WIRE_PULL, WIRE_PUB, WIRE_SUB, WIRE_DEALER, WIRE_ROUTER, WIRE_PAIR };
enum wire_mode { WIRE_BIND, WIRE_CONNECT };

enum wire_kind {
    WIRE_NONE = 0,
    WIRE_BATCH,
    WIRE_CREDIT,
    WIRE_ACK,
    WIRE_METRICS,
    WIRE_CHECKPOINT,
    WIRE_HEARTBEAT,
    WIRE_RESUME,
    WIRE_KIND_COUNT
};
const char *wire_kind_name(enum wire_kind k); /* "batch", "credit", ... ("none") */

/* Why a received message was rejected. Names (wire_reject_name) are stable: they are
 * Prometheus label values. */
enum wire_reject {
    WIRE_REJ_NONE = 0,
    WIRE_REJ_FRAMING,        /* wrong number/shape of ZeroMQ frames (peer id, topic) */
    WIRE_REJ_EMPTY,          /* zero-length payload */
    WIRE_REJ_TOO_LARGE,      /* payload longer than max_msg_bytes */
    WIRE_REJ_UNPACK,         /* not a valid protobuf Frame */
    WIRE_REJ_BUDGET,         /* unpacking needed more than alloc_budget bytes */
    WIRE_REJ_NO_BODY,        /* Frame carries no message */
    WIRE_REJ_SCHEMA_VERSION, /* Frame or batch schema_version != WIRE_SCHEMA_VERSION */
    WIRE_REJ_ID,             /* a producer/consumer/sender id missing, too long, bad chars */
    WIRE_REJ_NAME,           /* a hook name / model id / sae id bad */
    WIRE_REJ_TEXT,           /* a free-text field or path too long or with control chars */
    WIRE_REJ_DTYPE,          /* dtype not F32/F16/BF16 */
    WIRE_REJ_DIMS,           /* d_in, n_tokens, layer (or d_sae, k) outside bounds */
    WIRE_REJ_SIZE_MISMATCH,  /* activations bytes != d_in * n_tokens * dtype size */
    WIRE_REJ_TOKEN_IDS,      /* token_ids neither empty nor n_tokens long */
    WIRE_REJ_DOC_IDS,        /* doc_ids neither empty nor n_tokens long */
    WIRE_REJ_POSITIONS,      /* positions wrong length, negative or > WIRE_MAX_POSITION */
    WIRE_REJ_NORM_SCALE,     /* norm_scale negative or not finite */
    WIRE_REJ_ACK,            /* ack status unknown, no ranges, > max ranges, first > last */
    WIRE_REJ_FIELD,          /* another field out of bounds (metrics extra, sha256, topic) */
    WIRE_REJ_COUNT
};
const char *wire_reject_name(enum wire_reject r); /* "too_large", "unpack", ... */

/* ---- sockets ---- */
struct wire_opts {
    size_t max_msg_bytes; /* payload cap, checked (ZMQ_MAXMSGSIZE = 2x); 0 = default */
    size_t alloc_budget;  /* unpack allocation cap; 0 = max_msg_bytes + WIRE_ARRAYS_BUDGET */
    int linger_ms;        /* ZMQ_LINGER (default 500) */
    int send_timeout_ms;  /* ZMQ_SNDTIMEO: blocked sends give SF_AGAIN after (1000; -1 = forever) */
    int hwm;              /* ZMQ_SNDHWM and ZMQ_RCVHWM in messages (default 64) */
    int heartbeat_ivl_ms; /* ZMQ_HEARTBEAT_IVL (default 1000) */
    int heartbeat_ttl_ms; /* ZMQ_HEARTBEAT_TTL (default 3000) */
    int heartbeat_timeout_ms; /* ZMQ_HEARTBEAT_TIMEOUT (default 3000) */
    const char *identity;     /* ZMQ_ROUTING_ID for DEALER/ROUTER (copied); NULL = random */
    bool track_seq;           /* per-producer duplicate/gap accounting (default true) */
};
void wire_opts_default(struct wire_opts *o);

/* Optional: number of ZeroMQ I/O threads (default 1); effective only before the first
 * socket is created. All sockets share one context, so inproc:// works between them. */
void wire_set_io_threads(int n);

/* Creates a socket of `type` and binds or connects it to `endpoint` (tcp://, ipc://,
 * inproc://). opts NULL = defaults. SUB sockets start subscribed to nothing unless
 * wire_subscribe is called. NULL on failure (logged). */
struct wire_sock *wire_sock_new(enum wire_type type, const char *endpoint, enum wire_mode mode,
                                const struct wire_opts *opts);
void wire_sock_destroy(struct wire_sock **s);
/* More endpoints on the same socket (fan-in / fan-out).
 * ipc:// paths: a bind refuses (SF_ESTATE, logged) a path where another process
 * listens or that is not a socket, removes a socket file left by a process that is
 * gone, and wire_sock_destroy removes the socket files the socket created. */
int wire_sock_bind(struct wire_sock *s, const char *endpoint);
int wire_sock_connect(struct wire_sock *s, const char *endpoint);
/* The endpoint actually bound last (resolves tcp://127.0.0.1:* to a port). Borrowed. */
const char *wire_sock_endpoint(const struct wire_sock *s);
/* SUB only: subscribe to a topic prefix ("" = everything; see wire_topic). */
int wire_subscribe(struct wire_sock *s, const char *prefix);

/* Writes the PUB topic of a message into out (NUL-terminated): "batch/<hook>/" or
 * "<kind>/". For subscribing: wire_topic(WIRE_BATCH, "blocks.2.hook_resid_post", ..). */
int wire_topic(enum wire_kind kind, const char *hook_name, char *out, size_t out_size);

/* ---- messages ---- */
/* A message to send or one received. For sending, set kind, the matching pointer,
 * and for ROUTER sockets the peer to send to. */
struct wire_msg {
    enum wire_kind kind;
    union {
        Saeflow__ActivationBatch *batch;
        Saeflow__CreditGrant *credit;
        Saeflow__Ack *ack;
        Saeflow__TrainMetrics *metrics;
        Saeflow__CheckpointReady *checkpoint;
        Saeflow__Heartbeat *heartbeat;
        Saeflow__Resume *resume;
        void *body;
    };
    uint8_t peer[WIRE_MAX_PEER_LEN]; /* ROUTER: routing id of the sender / addressee */
    size_t peer_len;
    /* filled on receive: */
    size_t wire_bytes;       /* payload length */
    bool duplicate;          /* batch seq already seen for its (producer, epoch) */
    enum wire_reject reject; /* why, when wire_recv returned WIRE_REJECTED */
    void *priv_;             /* decoded storage; freed by wire_msg_fini */
};
/* Frees what a received/decoded message owns and zeroes it. NULL-safe, idempotent. */
void wire_msg_fini(struct wire_msg *m);

/* Validates then sends one message (blocking up to send_timeout_ms). Returns 0,
 * SF_AGAIN (send timed out / would block with WIRE_DONTWAIT), SF_NOTFOUND (ROUTER:
 * peer not connected), SF_EINVAL (message fails wire_validate, or a ROUTER send
 * without m->peer: nothing sent), SF_ERANGE (encoded size > max_msg_bytes), SF_EIO.
 * The wire_send_<kind> helpers are wire_send without a peer (not for ROUTER). */
#define WIRE_DONTWAIT 1
int wire_send(struct wire_sock *s, const struct wire_msg *m, int flags);
int wire_send_batch(struct wire_sock *s, const Saeflow__ActivationBatch *b);
int wire_send_credit(struct wire_sock *s, const Saeflow__CreditGrant *c);
int wire_send_ack(struct wire_sock *s, const Saeflow__Ack *a);
int wire_send_metrics(struct wire_sock *s, const Saeflow__TrainMetrics *t);
int wire_send_checkpoint(struct wire_sock *s, const Saeflow__CheckpointReady *c);
int wire_send_heartbeat(struct wire_sock *s, const Saeflow__Heartbeat *h);

/* Receives one message, waiting up to timeout_ms (0 = poll, -1 = forever). *out is
 * finished first (so zero it before the first call). Returns 0 (a valid message in
 * *out), SF_AGAIN (nothing before the timeout), WIRE_REJECTED (a message arrived and
 * was rejected: out->reject says why, out->peer who sent it on ROUTER), or a negative
 * error (socket unusable). */
int wire_recv(struct wire_sock *s, struct wire_msg *out, int timeout_ms);

/* Sends raw ZeroMQ frames unchanged (multipart when n_parts > 1). For tests and
 * replay tools: nothing is validated or counted as a typed send. */
int wire_send_raw(struct wire_sock *s, const void *const *parts, const size_t *lens,
                  size_t n_parts);

/* ---- polling ---- */
struct wire_poll_item {
    struct wire_sock *sock; /* or NULL to poll the file descriptor fd */
    int fd;
    bool want_in, want_out;
    bool in, out; /* results */
};
/* Waits up to timeout_ms (-1 = forever) until an item is ready. Returns 0 when at
 * least one is, SF_AGAIN on timeout, negative on error (EINTR gives SF_AGAIN). */
int wire_poll(struct wire_poll_item *items, size_t n, int timeout_ms);

/* ---- encode / decode without sockets (replay logs, fuzzing, corpora) ---- */
struct wire_limits {
    size_t max_msg_bytes; /* 0 = WIRE_DEFAULT_MAX_MSG */
    size_t alloc_budget;  /* 0 = max_msg_bytes + WIRE_ARRAYS_BUDGET */
};
/* Validates m and appends its encoded Frame to out. */
int wire_encode(const struct wire_msg *m, struct buf *out);
/* The same decode + validate that wire_recv applies to a payload. On success returns
 * 0 and *out owns a copy of everything (wire_msg_fini frees it). On rejection returns
 * SF_EFORMAT with out->reject set and out->kind == WIRE_NONE. out is finished first. */
int wire_decode(const void *buf, size_t len, const struct wire_limits *lim, struct wire_msg *out);
/* Like wire_decode, but a batch's activations may point into buf instead of being
 * copied (what wire_recv does with the ZeroMQ message): buf must outlive out. */
int wire_decode_borrowed(const void *buf, size_t len, const struct wire_limits *lim,
                         struct wire_msg *out);
/* Semantic validation of one message body (what wire_decode and wire_send check).
 * Returns WIRE_REJ_NONE or the reason. */
enum wire_reject wire_validate(enum wire_kind kind, const void *body);

/* ---- activations ---- */
size_t wire_dtype_size(Saeflow__DType dtype); /* 4, 2, 2; 0 for unknown */
/* Points b's dtype, d_in, n_tokens and activations at x (row-major n_tokens x d_in)
 * converted to dtype. F32 on a little-endian host borrows x (keep x alive until
 * sent); F16/BF16 convert into scratch (a core buf the caller owns; its max caps
 * the size). */
int wire_batch_set_f32(Saeflow__ActivationBatch *b, const float *x, size_t n_tokens, size_t d_in,
                       Saeflow__DType dtype, struct buf *scratch);
/* Decodes b's activations into out (n == n_tokens * d_in floats). */
int wire_batch_to_f32(const Saeflow__ActivationBatch *b, float *out, size_t n);

/* ---- zero-copy batch sends ----
 * For producers that can write activations straight into the outgoing message
 * (wire_send_batch copies them once while encoding; this path never does):
 *
 *   struct wire_batch_buf *bb = wire_batch_buf_new(sock, n_tokens, d_in, WIRE_BF16);
 *   wire_batch_buf_fill_f32(bb, x);            // or write wire_batch_buf_data(bb, NULL)
 *   rc = wire_send_batch_buf(sock, &meta, &bb, 0);  // meta: ids, hook, seq, arrays
 *   if (rc != 0) wire_batch_buf_destroy(&bb);  // or retry on SF_AGAIN
 *
 * The bytes on the wire are exactly wire_send_batch's. Not for ROUTER sockets. */
struct wire_batch_buf;
/* A send buffer for n_tokens x d_in values of dtype, with room for per-token arrays of
 * n_tokens entries. Owned by the caller until a successful wire_send_batch_buf. NULL
 * on bad arguments (bounds as in wire_validate) or no memory. */
struct wire_batch_buf *wire_batch_buf_new(struct wire_sock *s, size_t n_tokens, size_t d_in,
                                          Saeflow__DType dtype);
/* Where the activations go: n_tokens * d_in little-endian dtype values (*bytes long). */
void *wire_batch_buf_data(struct wire_batch_buf *bb, size_t *bytes);
/* Converts x (n_tokens x d_in float32, row-major) into the buffer's dtype. */
int wire_batch_buf_fill_f32(struct wire_batch_buf *bb, const float *x);
/* Sends meta's fields with bb's activations (meta's dtype, d_in, n_tokens and
 * activations are ignored). Returns as wire_send. On success *bb is consumed and set
 * to NULL; on failure it stays the caller's (retry it or destroy it). */
int wire_send_batch_buf(struct wire_sock *s, const Saeflow__ActivationBatch *meta,
                        struct wire_batch_buf **bb, int flags);
void wire_batch_buf_destroy(struct wire_batch_buf **bb);

/* ---- accounting ---- */
struct wire_stats {
    uint64_t sent[WIRE_KIND_COUNT];     /* typed messages sent, by kind */
    uint64_t sent_bytes;                /* payload bytes sent */
    uint64_t send_again;                /* sends that timed out / would block */
    uint64_t send_errors;               /* sends that failed otherwise (incl. invalid) */
    uint64_t received[WIRE_KIND_COUNT]; /* valid messages received, by kind */
    uint64_t received_bytes;            /* payload bytes of valid messages */
    uint64_t rejected[WIRE_REJ_COUNT];  /* by reason ([WIRE_REJ_NONE] unused) */
    uint64_t rejected_total;
    uint64_t duplicates;  /* batches whose seq was already seen */
    uint64_t late;        /* batches that arrived out of order, filling a gap */
    uint64_t gaps;        /* gap events (a seq jumped forward by more than 1) */
    uint64_t gap_batches; /* sum of missing seqs over all gap events */
    uint64_t producers;   /* (producer, epoch) keys tracked now */
};
void wire_stats_get(const struct wire_sock *s, struct wire_stats *out);

struct wire_producer_stats {
    char producer_id[WIRE_MAX_ID_LEN + 1];
    uint64_t epoch;
    uint64_t last_seq;
    uint64_t batches, duplicates, late, gaps, gap_batches;
};
/* Calls cb for each tracked (producer, epoch), under the stats lock: cb must not
 * call back into this socket. At most 1024 keys are kept (least recent evicted). */
void wire_producers_foreach(const struct wire_sock *s,
                            void (*cb)(const struct wire_producer_stats *p, void *ud), void *ud);

/* Every counter as a Prometheus-ready sample: name (e.g. "saeflow_wire_rejected_total"),
 * help text, one optional label (label_key NULL when none: e.g. "reason", "kind") and
 * the value. Counters that are zero are reported too, so series exist from the start.
 * Per-producer series use label_key "producer" with value "<id>/<epoch>". */
typedef void (*wire_sample_fn)(const char *name, const char *help, const char *label_key,
                               const char *label_value, double value, void *ud);
void wire_stats_foreach(const struct wire_sock *s, wire_sample_fn cb, void *ud);

#endif

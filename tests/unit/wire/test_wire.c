/* Tests the wire contract over real ZeroMQ sockets (inproc:// and ipc:// in a temp
 * directory): every message kind round-trips, the three dtypes decode to the right
 * values, every rejection reason is produced by a crafted frame and counted, the
 * receiver keeps working after garbage, oversized frames are refused, duplicates and
 * gaps are counted, ROUTER/DEALER identities and PUB/SUB topics work.
 *
 * Bad frames are crafted with the generated pack functions (bypassing the send-side
 * validation) and sent with wire_send_raw.
 *
 * With SAEFLOW_WRITE_CORPUS=<dir> it also writes the fuzz seed corpus (valid frames
 * of every kind, truncated and corrupted ones) into <dir>. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "wire/wire.h"
#include "../../support/check.h"

/* ---- message builders ---- */

enum { NT = 6, DIN = 5 };

struct batch_store {
    Saeflow__ActivationBatch b;
    float x[NT * DIN];
    uint32_t tok[NT];
    uint64_t doc[NT];
    int32_t pos[NT];
    struct buf scratch;
};

static void batch_make(struct batch_store *s, Saeflow__DType dtype, uint64_t seq)
{
    Saeflow__ActivationBatch init = SAEFLOW__ACTIVATION_BATCH__INIT;
    s->b = init;
    for (size_t i = 0; i < NT * DIN; i++) s->x[i] = (float)i * 0.37f - 4.1f;
    s->x[3] = 65504.0f; /* f16 max */
    s->x[4] = 1e-6f;    /* f16 subnormal range */
    for (size_t i = 0; i < NT; i++) {
        s->tok[i] = (uint32_t)(100 + i);
        s->doc[i] = 7000000000ull + i / 3;
        s->pos[i] = (int32_t)i;
    }
    if (!s->scratch.max) buf_init(&s->scratch, 1 << 20);
    s->b.producer_id = "capture-0";
    s->b.producer_epoch = 1234;
    s->b.seq = seq;
    s->b.model_id = "stories260K";
    s->b.hook_name = "blocks.2.hook_resid_post";
    s->b.layer = 2;
    s->b.n_token_ids = NT;
    s->b.token_ids = s->tok;
    s->b.n_doc_ids = NT;
    s->b.doc_ids = s->doc;
    s->b.n_positions = NT;
    s->b.positions = s->pos;
    s->b.norm_scale = 0.5f;
    s->b.created_unix_ms = 1700000000123;
    CHECK(wire_batch_set_f32(&s->b, s->x, NT, DIN, dtype, &s->scratch) == 0);
}

static Saeflow__SeqRange g_ranges[2] = {SAEFLOW__SEQ_RANGE__INIT, SAEFLOW__SEQ_RANGE__INIT};
static Saeflow__SeqRange *g_range_ptrs[2] = {&g_ranges[0], &g_ranges[1]};
static Saeflow__NamedValue g_extra = SAEFLOW__NAMED_VALUE__INIT;
static Saeflow__NamedValue *g_extra_ptrs[1] = {&g_extra};

static Saeflow__CreditGrant credit_make(void)
{
    Saeflow__CreditGrant c = SAEFLOW__CREDIT_GRANT__INIT;
    c.consumer_id = "train-l2";
    c.producer_id = "capture-0";
    c.hook_name = "blocks.2.hook_resid_post";
    c.credits = 8;
    c.grant_seq = 3;
    c.max_batch_bytes = 1 << 20;
    return c;
}

static Saeflow__Ack ack_make(void)
{
    Saeflow__Ack a = SAEFLOW__ACK__INIT;
    a.consumer_id = "train-l2";
    a.producer_id = "capture-0";
    a.producer_epoch = 1234;
    a.status = WIRE_ACK_TRAINED;
    g_ranges[0].first = 0;
    g_ranges[0].last = 9;
    g_ranges[1].first = 12;
    g_ranges[1].last = 12;
    a.n_ranges = 2;
    a.ranges = g_range_ptrs;
    return a;
}

static Saeflow__TrainMetrics metrics_make(void)
{
    Saeflow__TrainMetrics t = SAEFLOW__TRAIN_METRICS__INIT;
    t.trainer_id = "train-l2";
    t.sae_id = "l2-4096-k32";
    t.hook_name = "blocks.2.hook_resid_post";
    t.step = 1000;
    t.tokens_seen = 4096000;
    t.loss = 0.125;
    t.mse = 0.1;
    t.fvu = 0.2;
    t.l0 = 32;
    t.dead_fraction = 0.01;
    t.aux_loss = 0.03;
    t.lr = 3e-4;
    t.tokens_per_s = 123456.5;
    t.wall_unix_ms = 1700000000999;
    g_extra.name = "grad_norm";
    g_extra.value = NAN; /* allowed: a diverging run must be reportable */
    t.n_extra = 1;
    t.extra = g_extra_ptrs;
    return t;
}

static Saeflow__CheckpointReady checkpoint_make(void)
{
    Saeflow__CheckpointReady c = SAEFLOW__CHECKPOINT_READY__INIT;
    c.trainer_id = "train-l2";
    c.sae_id = "l2-4096-k32";
    c.model_id = "stories260K";
    c.hook_name = "blocks.2.hook_resid_post";
    c.path = "/var/lib/saeflow/ckpt/l2-4096-k32/step-1000";
    c.format = "saelens";
    c.step = 1000;
    c.tokens_seen = 4096000;
    c.d_in = 64;
    c.d_sae = 4096;
    c.k = 32;
    c.sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    c.wall_unix_ms = 1700000001000;
    return c;
}

static Saeflow__Heartbeat heartbeat_make(uint64_t seq)
{
    Saeflow__Heartbeat h = SAEFLOW__HEARTBEAT__INIT;
    h.sender_id = "capture-0";
    h.role = "capture";
    h.epoch = 1234;
    h.seq = seq;
    h.wall_unix_ms = 1700000002000;
    h.status = "ok";
    h.credits_available = 5;
    return h;
}

/* ---- helpers ---- */

/* Packs a Frame around an arbitrary (possibly invalid) body, without validation. */
static size_t pack_frame(uint32_t version, enum wire_kind kind, void *body, uint8_t **out)
{
    Saeflow__Frame f = SAEFLOW__FRAME__INIT;
    f.schema_version = version;
    switch (kind) {
    case WIRE_BATCH:
        f.body_case = SAEFLOW__FRAME__BODY_BATCH;
        f.batch = body;
        break;
    case WIRE_CREDIT:
        f.body_case = SAEFLOW__FRAME__BODY_CREDIT;
        f.credit = body;
        break;
    case WIRE_ACK:
        f.body_case = SAEFLOW__FRAME__BODY_ACK;
        f.ack = body;
        break;
    case WIRE_METRICS:
        f.body_case = SAEFLOW__FRAME__BODY_METRICS;
        f.metrics = body;
        break;
    case WIRE_CHECKPOINT:
        f.body_case = SAEFLOW__FRAME__BODY_CHECKPOINT;
        f.checkpoint = body;
        break;
    case WIRE_HEARTBEAT:
        f.body_case = SAEFLOW__FRAME__BODY_HEARTBEAT;
        f.heartbeat = body;
        break;
    default:
        break;
    }
    size_t n = saeflow__frame__get_packed_size(&f);
    *out = malloc(n ? n : 1);
    saeflow__frame__pack(&f, *out);
    return n;
}

static int send_bytes(struct wire_sock *s, const void *p, size_t n)
{
    const void *parts[1] = {p};
    size_t lens[1] = {n};
    return wire_send_raw(s, parts, lens, 1);
}

/* Receives with retries (a fresh connection may need a moment). */
static int recv_wait(struct wire_sock *s, struct wire_msg *m)
{
    int rc = SF_AGAIN;
    for (int i = 0; i < 50 && rc == SF_AGAIN; i++) rc = wire_recv(s, m, 100);
    return rc;
}

static uint64_t rejected(struct wire_sock *s, enum wire_reject r)
{
    struct wire_stats st;
    wire_stats_get(s, &st);
    return st.rejected[r];
}

/* ---- round trips ---- */

static bool mem_eq(const void *a, const void *b, size_t n)
{
    return n == 0 || (a && b && !memcmp(a, b, n));
}

static void check_batch_equal(const Saeflow__ActivationBatch *a, const Saeflow__ActivationBatch *b)
{
    CHECK(a->schema_version == WIRE_SCHEMA_VERSION);
    CHECK(!strcmp(a->producer_id, b->producer_id));
    CHECK(a->producer_epoch == b->producer_epoch && a->seq == b->seq);
    CHECK(!strcmp(a->model_id, b->model_id) && !strcmp(a->hook_name, b->hook_name));
    CHECK(a->layer == b->layer && a->d_in == b->d_in && a->n_tokens == b->n_tokens);
    CHECK(a->dtype == b->dtype);
    CHECK(a->activations.len == b->activations.len &&
          mem_eq(a->activations.data, b->activations.data, a->activations.len));
    CHECK(a->n_token_ids == b->n_token_ids &&
          mem_eq(a->token_ids, b->token_ids, a->n_token_ids * 4));
    CHECK(a->n_doc_ids == b->n_doc_ids && mem_eq(a->doc_ids, b->doc_ids, a->n_doc_ids * 8));
    CHECK(a->n_positions == b->n_positions &&
          mem_eq(a->positions, b->positions, a->n_positions * 4));
    CHECK(a->norm_scale == b->norm_scale && a->created_unix_ms == b->created_unix_ms);
}

static void roundtrip_all_kinds(const char *endpoint)
{
    struct wire_sock *pull = wire_sock_new(WIRE_PULL, endpoint, WIRE_BIND, NULL);
    struct wire_sock *push = wire_sock_new(WIRE_PUSH, endpoint, WIRE_CONNECT, NULL);
    CHECK(pull && push);
    if (!pull || !push) goto out;
    struct wire_msg m = {0};
    CHECK(wire_recv(pull, &m, 0) == SF_AGAIN); /* nothing yet: a timeout, not an error */

    struct batch_store bs = {0};
    batch_make(&bs, WIRE_F32, 0);
    CHECK(wire_send_batch(push, &bs.b) == 0);
    CHECK(recv_wait(pull, &m) == 0);
    CHECK(m.kind == WIRE_BATCH && !m.duplicate);
    if (m.kind == WIRE_BATCH) check_batch_equal(m.batch, &bs.b);

    Saeflow__CreditGrant c = credit_make();
    CHECK(wire_send_credit(push, &c) == 0);
    CHECK(recv_wait(pull, &m) == 0 && m.kind == WIRE_CREDIT);
    if (m.kind == WIRE_CREDIT)
        CHECK(!strcmp(m.credit->consumer_id, "train-l2") && m.credit->credits == 8 &&
              m.credit->grant_seq == 3 && m.credit->max_batch_bytes == (1u << 20) &&
              !strcmp(m.credit->producer_id, "capture-0"));

    Saeflow__Ack a = ack_make();
    CHECK(wire_send_ack(push, &a) == 0);
    CHECK(recv_wait(pull, &m) == 0 && m.kind == WIRE_ACK);
    if (m.kind == WIRE_ACK)
        CHECK(m.ack->status == WIRE_ACK_TRAINED && m.ack->n_ranges == 2 &&
              m.ack->ranges[0]->last == 9 && m.ack->ranges[1]->first == 12 &&
              m.ack->producer_epoch == 1234);

    Saeflow__TrainMetrics t = metrics_make();
    CHECK(wire_send_metrics(push, &t) == 0);
    CHECK(recv_wait(pull, &m) == 0 && m.kind == WIRE_METRICS);
    if (m.kind == WIRE_METRICS)
        CHECK(m.metrics->step == 1000 && m.metrics->fvu == 0.2 && m.metrics->lr == 3e-4 &&
              m.metrics->n_extra == 1 && isnan(m.metrics->extra[0]->value) &&
              !strcmp(m.metrics->extra[0]->name, "grad_norm") &&
              m.metrics->tokens_per_s == 123456.5);

    Saeflow__CheckpointReady k = checkpoint_make();
    CHECK(wire_send_checkpoint(push, &k) == 0);
    CHECK(recv_wait(pull, &m) == 0 && m.kind == WIRE_CHECKPOINT);
    if (m.kind == WIRE_CHECKPOINT)
        CHECK(!strcmp(m.checkpoint->path, k.path) && m.checkpoint->d_sae == 4096 &&
              m.checkpoint->k == 32 && !strcmp(m.checkpoint->sha256, k.sha256) &&
              !strcmp(m.checkpoint->format, "saelens"));

    Saeflow__Heartbeat h = heartbeat_make(77);
    CHECK(wire_send_heartbeat(push, &h) == 0);
    CHECK(recv_wait(pull, &m) == 0 && m.kind == WIRE_HEARTBEAT);
    if (m.kind == WIRE_HEARTBEAT)
        CHECK(m.heartbeat->seq == 77 && !strcmp(m.heartbeat->status, "ok") &&
              m.heartbeat->credits_available == 5);

    /* Resume: per hook the committed source cursor; a bad one is refused */
    Saeflow__SourceCursor cur = SAEFLOW__SOURCE_CURSOR__INIT;
    cur.source_id = "src-0123456789abcdef";
    cur.position = 4096;
    cur.doc_id = 17;
    cur.captured = 4000;
    Saeflow__HookCursor hc = SAEFLOW__HOOK_CURSOR__INIT, *hcp = &hc;
    hc.hook_name = "blocks.2.hook_resid_post";
    hc.cursor = &cur;
    Saeflow__Resume rs = SAEFLOW__RESUME__INIT;
    rs.consumer_id = "train-0";
    rs.producer_id = "capture-0";
    rs.n_hooks = 1;
    rs.hooks = &hcp;
    struct wire_msg rm = {.kind = WIRE_RESUME, .resume = &rs};
    CHECK(wire_send(push, &rm, 0) == 0);
    CHECK(recv_wait(pull, &m) == 0 && m.kind == WIRE_RESUME);
    if (m.kind == WIRE_RESUME)
        CHECK(m.resume->n_hooks == 1 && m.resume->hooks[0]->cursor->position == 4096 &&
              m.resume->hooks[0]->cursor->captured == 4000 &&
              !strcmp(m.resume->hooks[0]->hook_name, "blocks.2.hook_resid_post"));
    cur.source_id = "bad id";
    CHECK_EQ_INT(wire_validate(WIRE_RESUME, &rs), WIRE_REJ_ID);
    hc.cursor = NULL;
    CHECK_EQ_INT(wire_validate(WIRE_RESUME, &rs), WIRE_REJ_FIELD);
    {
        /* a batch's source range: from <= end.position, and no from without an end */
        batch_make(&bs, WIRE_F32, 3);
        Saeflow__ActivationBatch sb = bs.b;
        sb.schema_version = WIRE_SCHEMA_VERSION;
        Saeflow__SourceCursor end = SAEFLOW__SOURCE_CURSOR__INIT;
        end.source_id = "src-1";
        end.position = 100;
        sb.source_from = 60;
        sb.source_end = &end;
        CHECK_EQ_INT(wire_validate(WIRE_BATCH, &sb), WIRE_REJ_NONE);
        sb.source_from = 101;
        CHECK_EQ_INT(wire_validate(WIRE_BATCH, &sb), WIRE_REJ_FIELD);
        sb.source_end = NULL;
        sb.source_from = 5;
        CHECK_EQ_INT(wire_validate(WIRE_BATCH, &sb), WIRE_REJ_FIELD);
    }
    wire_msg_fini(&m);
    wire_msg_fini(&m); /* idempotent */

    struct wire_stats st;
    wire_stats_get(push, &st);
    for (int kk = WIRE_BATCH; kk < WIRE_KIND_COUNT; kk++) CHECK_EQ_INT(st.sent[kk], 1);
    wire_stats_get(pull, &st);
    for (int kk = WIRE_BATCH; kk < WIRE_KIND_COUNT; kk++) CHECK_EQ_INT(st.received[kk], 1);
    CHECK(st.rejected_total == 0 && st.received_bytes > 0 && st.producers == 1);
    buf_fini(&bs.scratch);
out:
    wire_sock_destroy(&push);
    wire_sock_destroy(&pull);
    CHECK(push == NULL && pull == NULL);
}

/* ---- dtypes ---- */

static void test_dtypes(const char *endpoint)
{
    struct wire_sock *pull = wire_sock_new(WIRE_PULL, endpoint, WIRE_BIND, NULL);
    struct wire_sock *push = wire_sock_new(WIRE_PUSH, endpoint, WIRE_CONNECT, NULL);
    CHECK(pull && push);
    if (!pull || !push) goto out;
    Saeflow__DType dts[3] = {WIRE_F32, WIRE_F16, WIRE_BF16};
    for (int d = 0; d < 3; d++) {
        struct batch_store bs = {0};
        batch_make(&bs, dts[d], (uint64_t)d);
        CHECK(bs.b.activations.len == (size_t)NT * DIN * wire_dtype_size(dts[d]));
        if (d == 0) CHECK(bs.b.activations.data == (uint8_t *)bs.x); /* borrowed, no copy */
        CHECK(wire_send_batch(push, &bs.b) == 0);
        struct wire_msg m = {0};
        CHECK(recv_wait(pull, &m) == 0 && m.kind == WIRE_BATCH);
        if (m.kind != WIRE_BATCH) {
            buf_fini(&bs.scratch);
            continue;
        }
        CHECK(m.batch->dtype == dts[d]);
        float y[NT * DIN];
        CHECK(wire_batch_to_f32(m.batch, y, NT * DIN) == 0);
        CHECK(wire_batch_to_f32(m.batch, y, NT * DIN - 1) == SF_EINVAL);
        /* little-endian bytes on the wire, checked on known values */
        const uint8_t *p = m.batch->activations.data;
        for (size_t i = 0; i < NT * DIN; i++) {
            if (dts[d] == WIRE_F32) {
                CHECK(y[i] == bs.x[i]);
            } else if (dts[d] == WIRE_F16) {
                CHECK(y[i] == f16_to_f32(f32_to_f16(bs.x[i])));
                CHECK_NEAR(y[i], bs.x[i], 1e-7, 1e-3); /* 11-bit significand */
            } else {
                CHECK(y[i] == bf16_to_f32(f32_to_bf16(bs.x[i])));
                CHECK_NEAR(y[i], bs.x[i], 1e-30, 4e-3); /* 8-bit significand */
            }
        }
        if (dts[d] == WIRE_F32) CHECK(p[3 * 4 + 3] == 0x47 && p[3 * 4 + 2] == 0x7f); /* 65504 */
        if (dts[d] == WIRE_F16) CHECK(p[3 * 2] == 0xff && p[3 * 2 + 1] == 0x7b);     /* 0x7bff */
        if (dts[d] == WIRE_BF16) CHECK(p[3 * 2 + 1] == 0x47 && p[3 * 2] == 0x80);    /* 65536 */
        wire_msg_fini(&m);
        buf_fini(&bs.scratch);
    }
out:
    wire_sock_destroy(&push);
    wire_sock_destroy(&pull);
}

/* A 1 MiB batch over the borrowed (zero-copy) receive path, and the copying decode. */
static void test_big_batch(const char *endpoint)
{
    struct wire_sock *pull = wire_sock_new(WIRE_PULL, endpoint, WIRE_BIND, NULL);
    struct wire_sock *push = wire_sock_new(WIRE_PUSH, endpoint, WIRE_CONNECT, NULL);
    CHECK(pull && push);
    size_t nt = 512, din = 512;
    float *x = malloc(nt * din * sizeof *x), *y = malloc(nt * din * sizeof *y);
    struct rng r;
    rng_seed(&r, 42);
    for (size_t i = 0; i < nt * din; i++) x[i] = rng_normal(&r);
    Saeflow__ActivationBatch b = SAEFLOW__ACTIVATION_BATCH__INIT;
    b.producer_id = "capture-1";
    b.hook_name = "blocks.0.hook_resid_post";
    CHECK(wire_batch_set_f32(&b, x, nt, din, WIRE_F32, NULL) == 0);
    if (pull && push) {
        CHECK(wire_send_batch(push, &b) == 0);
        struct wire_msg m = {0};
        CHECK(recv_wait(pull, &m) == 0 && m.kind == WIRE_BATCH);
        if (m.kind == WIRE_BATCH) {
            CHECK(wire_batch_to_f32(m.batch, y, nt * din) == 0);
            CHECK(!memcmp(x, y, nt * din * sizeof *x));
        }
        wire_msg_fini(&m);
    }
    struct buf enc;
    buf_init(&enc, 4u << 20);
    struct wire_msg em = {.kind = WIRE_BATCH, .batch = &b};
    CHECK(wire_encode(&em, &enc) == 0);
    struct wire_msg d1 = {0}, d2 = {0};
    CHECK(wire_decode(enc.data, enc.len, NULL, &d1) == 0);
    CHECK(wire_decode_borrowed(enc.data, enc.len, NULL, &d2) == 0);
    CHECK(d1.kind == WIRE_BATCH && d2.kind == WIRE_BATCH);
    if (d1.kind == WIRE_BATCH && d2.kind == WIRE_BATCH) {
        CHECK(d2.batch->activations.data != d1.batch->activations.data);
        CHECK((const char *)d2.batch->activations.data > enc.data &&
              (const char *)d2.batch->activations.data < enc.data + enc.len); /* borrowed */
        check_batch_equal(d1.batch, d2.batch);
    }
    wire_msg_fini(&d1);
    wire_msg_fini(&d2);
    buf_fini(&enc);
    free(x);
    free(y);
    wire_sock_destroy(&push);
    wire_sock_destroy(&pull);
}

/* ---- rejections ---- */

struct reject_case {
    const char *what;
    enum wire_reject want;
    uint8_t *bytes;
    size_t len;
};

static void add_case(struct reject_case *cs, size_t *n, const char *what, enum wire_reject want,
                     uint32_t version, enum wire_kind kind, void *body)
{
    cs[*n].what = what;
    cs[*n].want = want;
    cs[*n].len = pack_frame(version, kind, body, &cs[*n].bytes);
    (*n)++;
}

/* Builds a frame for every rejection reason that lives in the payload. */
static size_t build_reject_cases(struct reject_case *cs)
{
    size_t n = 0;
    struct batch_store bs = {0};
    Saeflow__ActivationBatch b;
#define BATCH_CASE(what, want, stmt)                                                               \
    do {                                                                                           \
        batch_make(&bs, WIRE_F32, 0);                                                              \
        b = bs.b;                                                                                  \
        b.schema_version = WIRE_SCHEMA_VERSION;                                                    \
        stmt;                                                                                      \
        add_case(cs, &n, what, want, WIRE_SCHEMA_VERSION, WIRE_BATCH, &b);                         \
    } while (0)
    uint8_t junk[64];
    memset(junk, 0xff, sizeof junk);
    cs[n].what = "garbage";
    cs[n].want = WIRE_REJ_UNPACK;
    cs[n].bytes = malloc(sizeof junk);
    memcpy(cs[n].bytes, junk, sizeof junk);
    cs[n++].len = sizeof junk;

    cs[n].what = "empty";
    cs[n].want = WIRE_REJ_EMPTY;
    cs[n].bytes = malloc(1);
    cs[n++].len = 0;

    add_case(cs, &n, "no body", WIRE_REJ_NO_BODY, WIRE_SCHEMA_VERSION, WIRE_NONE, NULL);
    BATCH_CASE("frame version 2", WIRE_REJ_SCHEMA_VERSION, (void)0);
    cs[n - 1].len = 0; /* replaced below */
    free(cs[n - 1].bytes);
    cs[n - 1].len = pack_frame(2, WIRE_BATCH, &b, &cs[n - 1].bytes);
    BATCH_CASE("batch version 0", WIRE_REJ_SCHEMA_VERSION, b.schema_version = 0);
    BATCH_CASE("empty producer", WIRE_REJ_ID, b.producer_id = "");
    BATCH_CASE("producer with space", WIRE_REJ_ID, b.producer_id = "cap 0");
    BATCH_CASE("hook with space", WIRE_REJ_NAME, b.hook_name = "blocks 2");
    BATCH_CASE("empty hook", WIRE_REJ_NAME, b.hook_name = "");
    BATCH_CASE("model with quote", WIRE_REJ_NAME, b.model_id = "a\"b");
    BATCH_CASE("dtype 0", WIRE_REJ_DTYPE, b.dtype = 0);
    BATCH_CASE("dtype 9", WIRE_REJ_DTYPE, b.dtype = 9);
    BATCH_CASE("d_in 0", WIRE_REJ_DIMS, b.d_in = 0);
    BATCH_CASE("d_in 65537", WIRE_REJ_DIMS, b.d_in = 65537);
    BATCH_CASE("tokens 2^20+1", WIRE_REJ_DIMS, b.n_tokens = (1u << 20) + 1);
    BATCH_CASE("layer -2", WIRE_REJ_DIMS, b.layer = -2);
    BATCH_CASE("bytes short by one", WIRE_REJ_SIZE_MISMATCH, b.activations.len--);
    BATCH_CASE("d_in says more", WIRE_REJ_SIZE_MISMATCH, b.d_in = DIN + 1);
    BATCH_CASE("token ids short", WIRE_REJ_TOKEN_IDS, b.n_token_ids = NT - 1);
    BATCH_CASE("doc ids long", WIRE_REJ_DOC_IDS,
               (b.n_doc_ids = NT, b.n_tokens = NT - 1, b.activations.len = (NT - 1) * DIN * 4,
                b.n_token_ids = 0));
    BATCH_CASE("negative position", WIRE_REJ_POSITIONS, bs.pos[2] = -1);
    BATCH_CASE("positions short", WIRE_REJ_POSITIONS, b.n_positions = 1);
    BATCH_CASE("nan norm scale", WIRE_REJ_NORM_SCALE, b.norm_scale = NAN);
    BATCH_CASE("negative norm scale", WIRE_REJ_NORM_SCALE, b.norm_scale = -1.0f);
#undef BATCH_CASE
    Saeflow__Ack a = ack_make();
    a.status = 0;
    add_case(cs, &n, "ack status 0", WIRE_REJ_ACK, 1, WIRE_ACK, &a);
    a = ack_make();
    g_ranges[1].first = 13;
    g_ranges[1].last = 12;
    add_case(cs, &n, "ack range inverted", WIRE_REJ_ACK, 1, WIRE_ACK, &a);
    a = ack_make();
    a.n_ranges = 0;
    add_case(cs, &n, "ack without ranges", WIRE_REJ_ACK, 1, WIRE_ACK, &a);
    a = ack_make();
    a.consumer_id = "";
    add_case(cs, &n, "ack without consumer", WIRE_REJ_ID, 1, WIRE_ACK, &a);
    Saeflow__Heartbeat h = heartbeat_make(1);
    h.status = "line\nbreak";
    add_case(cs, &n, "heartbeat status newline", WIRE_REJ_TEXT, 1, WIRE_HEARTBEAT, &h);
    Saeflow__CheckpointReady k = checkpoint_make();
    k.sha256 = "XYZ";
    add_case(cs, &n, "bad sha256", WIRE_REJ_FIELD, 1, WIRE_CHECKPOINT, &k);
    k = checkpoint_make();
    k.k = 5000;
    add_case(cs, &n, "k > d_sae", WIRE_REJ_DIMS, 1, WIRE_CHECKPOINT, &k);
    k = checkpoint_make();
    k.path = "";
    add_case(cs, &n, "empty path", WIRE_REJ_TEXT, 1, WIRE_CHECKPOINT, &k);
    Saeflow__CreditGrant c = credit_make();
    c.credits = (1u << 20) + 1;
    add_case(cs, &n, "credit too large", WIRE_REJ_FIELD, 1, WIRE_CREDIT, &c);
    Saeflow__TrainMetrics t = metrics_make();
    g_extra.name = "grad norm";
    add_case(cs, &n, "metric name with space", WIRE_REJ_FIELD, 1, WIRE_METRICS, &t);
    t = metrics_make();
    t.sae_id = "";
    add_case(cs, &n, "metrics without sae", WIRE_REJ_NAME, 1, WIRE_METRICS, &t);
    buf_fini(&bs.scratch);
    return n;
}

static void test_rejections(void)
{
    struct wire_sock *pull = wire_sock_new(WIRE_PULL, "inproc://rej", WIRE_BIND, NULL);
    struct wire_sock *push = wire_sock_new(WIRE_PUSH, "inproc://rej", WIRE_CONNECT, NULL);
    CHECK(pull && push);
    if (!pull || !push) goto out;
    struct reject_case cs[64];
    size_t n = build_reject_cases(cs);
    bool seen[WIRE_REJ_COUNT] = {false};
    struct wire_msg m = {0};
    for (size_t i = 0; i < n; i++) {
        uint64_t before = rejected(pull, cs[i].want);
        CHECK(send_bytes(push, cs[i].bytes, cs[i].len) == 0);
        int rc = recv_wait(pull, &m);
        CHECK_MSG(rc == WIRE_REJECTED && m.reject == cs[i].want && m.kind == WIRE_NONE,
                  "%s: rc=%d reason=%s want %s", cs[i].what, rc, wire_reject_name(m.reject),
                  wire_reject_name(cs[i].want));
        CHECK_MSG(rejected(pull, cs[i].want) == before + 1, "%s not counted", cs[i].what);
        /* the same bytes through both decode paths give the same verdict */
        struct wire_msg d = {0};
        CHECK(wire_decode(cs[i].bytes, cs[i].len, NULL, &d) == SF_EFORMAT &&
              d.reject == cs[i].want);
        CHECK(wire_decode_borrowed(cs[i].bytes, cs[i].len, NULL, &d) == SF_EFORMAT &&
              d.reject == cs[i].want);
        wire_msg_fini(&d);
        seen[cs[i].want] = true;
        free(cs[i].bytes);
    }
    /* the receiver still works after all that */
    Saeflow__Heartbeat h = heartbeat_make(5);
    CHECK(wire_send_heartbeat(push, &h) == 0);
    CHECK(recv_wait(pull, &m) == 0 && m.kind == WIRE_HEARTBEAT);

    /* framing: two parts on a PULL socket */
    uint8_t *hb;
    size_t hbn = pack_frame(1, WIRE_HEARTBEAT, &h, &hb);
    const void *parts[2] = {hb, hb};
    size_t lens[2] = {hbn, hbn};
    CHECK(wire_send_raw(push, parts, lens, 2) == 0);
    CHECK(recv_wait(pull, &m) == WIRE_REJECTED && m.reject == WIRE_REJ_FRAMING);
    seen[WIRE_REJ_FRAMING] = true;
    free(hb);

    /* a send of an invalid message is refused before anything leaves */
    struct batch_store bs = {0};
    batch_make(&bs, WIRE_F32, 0);
    bs.b.d_in = 0;
    CHECK(wire_send_batch(push, &bs.b) == SF_EINVAL);
    CHECK(wire_recv(pull, &m, 20) == SF_AGAIN);
    buf_fini(&bs.scratch);
    wire_msg_fini(&m);

    /* alloc budget and size cap need a receiver with small limits */
    struct wire_opts o;
    wire_opts_default(&o);
    o.max_msg_bytes = 4096;
    o.alloc_budget = 16384;
    struct wire_sock *small = wire_sock_new(WIRE_PULL, "inproc://small", WIRE_BIND, &o);
    struct wire_sock *tosmall = wire_sock_new(WIRE_PUSH, "inproc://small", WIRE_CONNECT, NULL);
    CHECK(small && tosmall);
    if (small && tosmall) {
        uint8_t *big = calloc(1, 5000);
        CHECK(send_bytes(tosmall, big, 5000) == 0);
        CHECK(recv_wait(small, &m) == WIRE_REJECTED && m.reject == WIRE_REJ_TOO_LARGE);
        CHECK(rejected(small, WIRE_REJ_TOO_LARGE) == 1);
        seen[WIRE_REJ_TOO_LARGE] = true;
        free(big);
        /* 1000 empty ranges: ~3 bytes each on the wire, ~40 unpacked: past the budget */
        Saeflow__Ack a = ack_make();
        Saeflow__SeqRange r0 = SAEFLOW__SEQ_RANGE__INIT, *rp[1000];
        for (int i = 0; i < 1000; i++) rp[i] = &r0;
        a.ranges = rp;
        a.n_ranges = 1000;
        uint8_t *ab;
        size_t abn = pack_frame(1, WIRE_ACK, &a, &ab);
        CHECK(abn < 4096);
        CHECK(send_bytes(tosmall, ab, abn) == 0);
        CHECK(recv_wait(small, &m) == WIRE_REJECTED && m.reject == WIRE_REJ_BUDGET);
        seen[WIRE_REJ_BUDGET] = true;
        struct wire_limits lim = {4096, 16384};
        struct wire_msg d = {0};
        CHECK(wire_decode(ab, abn, &lim, &d) == SF_EFORMAT && d.reject == WIRE_REJ_BUDGET);
        CHECK(wire_decode(ab, abn, NULL, &d) == 0 && d.kind == WIRE_ACK); /* default budget */
        wire_msg_fini(&d);
        free(ab);
        /* and still receives */
        CHECK(wire_send_heartbeat(tosmall, &h) == 0);
        CHECK(recv_wait(small, &m) == 0 && m.kind == WIRE_HEARTBEAT);
    }
    wire_msg_fini(&m);
    wire_sock_destroy(&tosmall);
    wire_sock_destroy(&small);

    for (int r = WIRE_REJ_NONE + 1; r < WIRE_REJ_COUNT; r++)
        CHECK_MSG(seen[r], "no test produced reason %s", wire_reject_name(r));
    for (int r = 0; r < WIRE_REJ_COUNT; r++) CHECK(strcmp(wire_reject_name(r), "unknown") != 0);
    struct wire_stats st;
    wire_stats_get(pull, &st);
    uint64_t sum = 0;
    for (int r = 0; r < WIRE_REJ_COUNT; r++) sum += st.rejected[r];
    CHECK(sum == st.rejected_total && st.rejected_total == n + 1);
out:
    wire_sock_destroy(&push);
    wire_sock_destroy(&pull);
}

/* Over ipc, a frame just above the cap reaches wire and is rejected as too_large;
 * a frame above ZMQ_MAXMSGSIZE (twice the cap) makes ZeroMQ drop the connection
 * before any allocation: it is never delivered, and the sender's reconnect carries on. */
static void test_oversized_ipc(const char *dir)
{
    char ep[512];
    snprintf(ep, sizeof ep, "ipc://%s/big.sock", dir);
    struct wire_opts o;
    wire_opts_default(&o);
    o.max_msg_bytes = 1 << 16;
    struct wire_sock *pull = wire_sock_new(WIRE_PULL, ep, WIRE_BIND, &o);
    struct wire_sock *push = wire_sock_new(WIRE_PUSH, ep, WIRE_CONNECT, NULL);
    CHECK(pull && push);
    if (!pull || !push) goto out;
    Saeflow__Heartbeat h = heartbeat_make(1);
    CHECK(wire_send_heartbeat(push, &h) == 0);
    struct wire_msg m = {0};
    CHECK(recv_wait(pull, &m) == 0); /* connected */

    /* cap < size <= 2 cap: counted */
    size_t midn = (1 << 16) + 100;
    uint8_t *mid = calloc(1, midn);
    CHECK(send_bytes(push, mid, midn) == 0);
    free(mid);
    int got = SF_AGAIN;
    for (int i = 0; i < 50 && got == SF_AGAIN; i++) got = wire_recv(pull, &m, 100);
    CHECK(got == WIRE_REJECTED && m.reject == WIRE_REJ_TOO_LARGE);
    struct wire_stats st;
    wire_stats_get(pull, &st);
    CHECK(st.rejected[WIRE_REJ_TOO_LARGE] == 1);

    /* size > 2 cap: ZeroMQ drops the connection; never delivered */
    size_t bign = (2 << 16) + 100;
    uint8_t *big = calloc(1, bign);
    CHECK(send_bytes(push, big, bign) == 0);
    free(big);
    got = -1;
    for (int i = 0; i < 100 && got != 0; i++) {
        h.seq = 2 + (uint64_t)i;
        int rc = wire_send_heartbeat(push, &h);
        CHECK(rc == 0 || rc == SF_AGAIN);
        got = wire_recv(pull, &m, 100);
        CHECK(got == 0 || got == SF_AGAIN);
    }
    CHECK(got == 0 && m.kind == WIRE_HEARTBEAT);
    wire_stats_get(pull, &st);
    CHECK(st.rejected_total == 1); /* the too-big frame never reached us */
    CHECK(st.received_bytes < (uint64_t)(1 << 16) * st.received[WIRE_HEARTBEAT]);
    wire_msg_fini(&m);
out:
    wire_sock_destroy(&push);
    wire_sock_destroy(&pull);
}

/* ---- sequence accounting ---- */

struct prod_seen {
    int n;
    uint64_t last_seq[4], dups[4], gap_batches[4], epoch[4];
};

static void prod_cb(const struct wire_producer_stats *p, void *ud)
{
    struct prod_seen *ps = ud;
    if (ps->n >= 4) return;
    ps->epoch[ps->n] = p->epoch;
    ps->last_seq[ps->n] = p->last_seq;
    ps->dups[ps->n] = p->duplicates;
    ps->gap_batches[ps->n] = p->gap_batches;
    ps->n++;
}

struct sample_seen {
    double rej_unpack, dups, sent_batch;
    int n;
    bool producer_series;
};

static void sample_cb(const char *name, const char *help, const char *lk, const char *lv, double v,
                      void *ud)
{
    struct sample_seen *s = ud;
    s->n++;
    CHECK(name && help && strncmp(name, "saeflow_wire_", 13) == 0);
    CHECK((lk == NULL) == (lv == NULL));
    if (!strcmp(name, "saeflow_wire_rejected_total") && !strcmp(lv, "unpack")) s->rej_unpack = v;
    if (!strcmp(name, "saeflow_wire_duplicates_total")) s->dups = v;
    if (!strcmp(name, "saeflow_wire_producer_last_seq") && !strcmp(lv, "capture-0/1234"))
        s->producer_series = true;
}

static void test_seq_accounting(void)
{
    struct wire_sock *pull = wire_sock_new(WIRE_PULL, "inproc://seq", WIRE_BIND, NULL);
    struct wire_sock *push = wire_sock_new(WIRE_PUSH, "inproc://seq", WIRE_CONNECT, NULL);
    CHECK(pull && push);
    if (!pull || !push) goto out;
    struct batch_store bs = {0};
    batch_make(&bs, WIRE_F16, 0);
    /* seqs as sent, and whether each is a duplicate */
    const uint64_t seqs[] = {0, 1, 2, 5, 3, 5, 1, 6, 2000, 500, 1999};
    const bool dup[] = {0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 0}; /* 500: older than the window */
    struct wire_msg m = {0};
    for (size_t i = 0; i < SF_ARRAY_LEN(seqs); i++) {
        bs.b.seq = seqs[i];
        CHECK(wire_send_batch(push, &bs.b) == 0);
        CHECK(recv_wait(pull, &m) == 0 && m.kind == WIRE_BATCH);
        CHECK_MSG(m.duplicate == dup[i], "seq %llu", (unsigned long long)seqs[i]);
    }
    /* a restart: new epoch, starting from 0, is a new stream (no gap, no dup) */
    bs.b.producer_epoch = 1235;
    bs.b.seq = 0;
    CHECK(wire_send_batch(push, &bs.b) == 0);
    CHECK(recv_wait(pull, &m) == 0 && !m.duplicate);
    struct wire_stats st;
    wire_stats_get(pull, &st);
    CHECK_EQ_INT(st.duplicates, 3);
    CHECK_EQ_INT(st.late, 2); /* 3 and 1999: unseen, inside the window, filling gaps */
    CHECK_EQ_INT(st.gaps, 2); /* 2->5, 6->2000 */
    CHECK_EQ_INT(st.gap_batches, 2 + 1993); /* {3,4} and 7..1999 */
    CHECK_EQ_INT(st.producers, 2);
    struct prod_seen ps = {0};
    wire_producers_foreach(pull, prod_cb, &ps);
    CHECK(ps.n == 2);
    for (int i = 0; i < ps.n; i++) {
        if (ps.epoch[i] == 1234)
            CHECK(ps.last_seq[i] == 2000 && ps.dups[i] == 3 && ps.gap_batches[i] == 1995);
        else
            CHECK(ps.epoch[i] == 1235 && ps.last_seq[i] == 0 && ps.dups[i] == 0);
    }
    /* garbage, then the Prometheus view */
    CHECK(send_bytes(push, "\xff\xff\xff", 3) == 0);
    CHECK(recv_wait(pull, &m) == WIRE_REJECTED);
    struct sample_seen ss = {0};
    wire_stats_foreach(pull, sample_cb, &ss);
    CHECK(ss.rej_unpack == 1 && ss.dups == 3 && ss.producer_series && ss.n > 30);
    wire_msg_fini(&m);
    buf_fini(&bs.scratch);
out:
    wire_sock_destroy(&push);
    wire_sock_destroy(&pull);
}

/* ---- socket types ---- */

static void test_router_dealer(const char *dir)
{
    char ep[512];
    snprintf(ep, sizeof ep, "ipc://%s/router.sock", dir);
    struct wire_opts o;
    wire_opts_default(&o);
    o.identity = "capture-7";
    struct wire_sock *router = wire_sock_new(WIRE_ROUTER, ep, WIRE_BIND, NULL);
    struct wire_sock *dealer = wire_sock_new(WIRE_DEALER, ep, WIRE_CONNECT, &o);
    CHECK(router && dealer);
    if (!router || !dealer) goto out;
    Saeflow__Heartbeat h = heartbeat_make(1);
    CHECK(wire_send_heartbeat(dealer, &h) == 0);
    struct wire_msg m = {0};
    CHECK(recv_wait(router, &m) == 0 && m.kind == WIRE_HEARTBEAT);
    CHECK(m.peer_len == 9 && !memcmp(m.peer, "capture-7", 9));
    /* grant credit to that producer */
    Saeflow__CreditGrant c = credit_make();
    struct wire_msg out = {.kind = WIRE_CREDIT, .credit = &c};
    memcpy(out.peer, m.peer, m.peer_len);
    out.peer_len = m.peer_len;
    CHECK(wire_send(router, &out, 0) == 0);
    struct wire_msg got = {0};
    CHECK(recv_wait(dealer, &got) == 0 && got.kind == WIRE_CREDIT && got.credit->credits == 8);
    CHECK(got.peer_len == 0);
    /* unknown peer: SF_NOTFOUND; no peer at all: SF_EINVAL */
    memcpy(out.peer, "nobody", 6);
    out.peer_len = 6;
    CHECK(wire_send(router, &out, 0) == SF_NOTFOUND);
    out.peer_len = 0;
    CHECK(wire_send(router, &out, 0) == SF_EINVAL);
    /* a DEALER sending two parts arrives as three at the ROUTER: framing */
    const void *parts[2] = {"a", "b"};
    size_t lens[2] = {1, 1};
    CHECK(wire_send_raw(dealer, parts, lens, 2) == 0);
    CHECK(recv_wait(router, &m) == WIRE_REJECTED && m.reject == WIRE_REJ_FRAMING);
    CHECK(m.peer_len == 9); /* who sent it is still known */
    wire_msg_fini(&m);
    wire_msg_fini(&got);
out:
    wire_sock_destroy(&dealer);
    wire_sock_destroy(&router);
}

static void test_pub_sub(void)
{
    struct wire_sock *pub = wire_sock_new(WIRE_PUB, "inproc://pub", WIRE_BIND, NULL);
    struct wire_sock *sub = wire_sock_new(WIRE_SUB, "inproc://pub", WIRE_CONNECT, NULL);
    CHECK(pub && sub);
    if (!pub || !sub) goto out;
    char topic[WIRE_MAX_TOPIC_LEN + 1];
    CHECK(wire_topic(WIRE_BATCH, "blocks.1.hook_resid_post", topic, sizeof topic) == 0);
    CHECK(!strcmp(topic, "batch/blocks.1.hook_resid_post/"));
    CHECK(wire_topic(WIRE_BATCH, "bad hook", topic, sizeof topic) == SF_EINVAL);
    CHECK(wire_topic(WIRE_METRICS, NULL, topic, sizeof topic) == 0 && !strcmp(topic, "metrics/"));
    CHECK(wire_topic(WIRE_BATCH, "blocks.1.hook_resid_post", topic, 8) == SF_ERANGE);
    CHECK(wire_topic(WIRE_BATCH, "blocks.1.hook_resid_post", topic, sizeof topic) == 0);
    CHECK(wire_subscribe(sub, topic) == 0);
    CHECK(wire_subscribe(pub, topic) == SF_EINVAL);
    struct batch_store bs = {0};
    batch_make(&bs, WIRE_BF16, 0);
    struct wire_msg m = {0};
    int rc = SF_AGAIN;
    for (int i = 0; i < 50 && rc == SF_AGAIN; i++) { /* the subscription travels first */
        bs.b.hook_name = "blocks.2.hook_resid_post"; /* filtered out */
        CHECK(wire_send_batch(pub, &bs.b) == 0);
        Saeflow__Heartbeat h = heartbeat_make(1); /* filtered out */
        CHECK(wire_send_heartbeat(pub, &h) == 0);
        bs.b.hook_name = "blocks.1.hook_resid_post";
        bs.b.seq = (uint64_t)i;
        CHECK(wire_send_batch(pub, &bs.b) == 0);
        rc = wire_recv(sub, &m, 20);
    }
    CHECK(rc == 0 && m.kind == WIRE_BATCH &&
          !strcmp(m.batch->hook_name, "blocks.1.hook_resid_post"));
    /* a topic that lies about its payload is rejected */
    uint8_t *hb;
    Saeflow__Heartbeat h = heartbeat_make(2);
    size_t hbn = pack_frame(1, WIRE_HEARTBEAT, &h, &hb);
    const void *parts[2] = {topic, hb};
    size_t lens[2] = {strlen(topic), hbn};
    CHECK(wire_send_raw(pub, parts, lens, 2) == 0);
    do rc = wire_recv(sub, &m, 200);
    while (rc == 0); /* skip batches still queued */
    CHECK(rc == WIRE_REJECTED && m.reject == WIRE_REJ_FRAMING);
    free(hb);
    wire_msg_fini(&m);
    buf_fini(&bs.scratch);
out:
    wire_sock_destroy(&sub);
    wire_sock_destroy(&pub);
}

static void test_poll(void)
{
    struct wire_sock *a = wire_sock_new(WIRE_PULL, "inproc://pa", WIRE_BIND, NULL);
    struct wire_sock *b = wire_sock_new(WIRE_PULL, "inproc://pb", WIRE_BIND, NULL);
    struct wire_sock *tb = wire_sock_new(WIRE_PUSH, "inproc://pb", WIRE_CONNECT, NULL);
    CHECK(a && b && tb);
    if (!a || !b || !tb) goto out;
    struct wire_poll_item it[3] = {
        {.sock = a, .want_in = true}, {.sock = b, .want_in = true}, {.sock = tb, .want_out = true}};
    CHECK(wire_poll(it, 2, 10) == SF_AGAIN && !it[0].in && !it[1].in);
    Saeflow__Heartbeat h = heartbeat_make(1);
    CHECK(wire_send_heartbeat(tb, &h) == 0);
    CHECK(wire_poll(it, 3, 1000) == 0);
    CHECK(!it[0].in && it[1].in && it[2].out);
    struct wire_msg m = {0};
    CHECK(wire_recv(b, &m, 0) == 0 && m.kind == WIRE_HEARTBEAT);
    wire_msg_fini(&m);
    CHECK(wire_poll(NULL, 0, 0) == SF_EINVAL);
out:
    wire_sock_destroy(&tb);
    wire_sock_destroy(&b);
    wire_sock_destroy(&a);
}

static void test_misc(void)
{
    CHECK(wire_sock_new(WIRE_PULL, "bogus://x", WIRE_BIND, NULL) == NULL);
    struct wire_sock *s = NULL;
    wire_sock_destroy(&s); /* NULL-safe */
    wire_sock_destroy(NULL);
    CHECK(!strcmp(wire_kind_name(WIRE_BATCH), "batch"));
    CHECK(!strcmp(wire_reject_name(WIRE_REJ_SIZE_MISMATCH), "size_mismatch"));
    CHECK(wire_dtype_size(WIRE_BF16) == 2 && wire_dtype_size(0) == 0);
    /* tcp with an ephemeral port */
    struct wire_sock *pull = wire_sock_new(WIRE_PULL, "tcp://127.0.0.1:*", WIRE_BIND, NULL);
    CHECK(pull != NULL);
    if (pull) {
        CHECK(strncmp(wire_sock_endpoint(pull), "tcp://127.0.0.1:", 16) == 0);
        struct wire_sock *push =
            wire_sock_new(WIRE_PUSH, wire_sock_endpoint(pull), WIRE_CONNECT, NULL);
        Saeflow__Heartbeat h = heartbeat_make(3);
        CHECK(push && wire_send_heartbeat(push, &h) == 0);
        struct wire_msg m = {0};
        CHECK(recv_wait(pull, &m) == 0 && m.kind == WIRE_HEARTBEAT && m.heartbeat->seq == 3);
        wire_msg_fini(&m);
        wire_sock_destroy(&push);
        wire_sock_destroy(&pull);
    }
    float x[4] = {1, 2, 3, 4};
    Saeflow__ActivationBatch b = SAEFLOW__ACTIVATION_BATCH__INIT;
    CHECK(wire_batch_set_f32(&b, x, 2, 2, 0, NULL) == SF_EINVAL);
    CHECK(wire_batch_set_f32(&b, x, 0, 2, WIRE_F32, NULL) == SF_EINVAL);
    CHECK(wire_batch_set_f32(&b, x, 2, 2, WIRE_F16, NULL) == SF_EINVAL); /* needs scratch */
    struct buf tiny;
    buf_init(&tiny, 4);
    CHECK(wire_batch_set_f32(&b, x, 2, 2, WIRE_F16, &tiny) == SF_ENOMEM); /* capped */
    buf_fini(&tiny);
}

/* Unknown fields: a newer peer's extra field is accepted (forward compatibility); a
 * field numbered 0, which protobuf-c parses when its key is a non-minimal varint but
 * cannot re-read after re-encoding, is refused (found by fuzzing). */
static void test_unknown_fields(void)
{
    Saeflow__Heartbeat h = heartbeat_make(4);
    uint8_t *hb;
    size_t n = pack_frame(1, WIRE_HEARTBEAT, &h, &hb);
    uint8_t *p = malloc(n + 8);
    memcpy(p, hb, n);
    struct wire_msg m = {0};
    memcpy(p + n, "\x98\x06\x07", 3); /* field 99, varint 7 */
    CHECK(wire_decode(p, n + 3, NULL, &m) == 0 && m.kind == WIRE_HEARTBEAT);
    CHECK(wire_decode_borrowed(p, n + 3, NULL, &m) == 0 && m.kind == WIRE_HEARTBEAT);
    memcpy(p + n, "\x80\x00\x05", 3); /* field 0 (key 0 as two bytes), varint 5 */
    CHECK(wire_decode(p, n + 3, NULL, &m) == SF_EFORMAT && m.reject == WIRE_REJ_UNPACK);
    memcpy(p + n, "\x00\x05", 2); /* field 0, one-byte key: protobuf-c refuses it itself */
    CHECK(wire_decode(p, n + 2, NULL, &m) == SF_EFORMAT && m.reject == WIRE_REJ_UNPACK);
    wire_msg_fini(&m);
    free(p);
    free(hb);
}

/* The zero-copy send path: same message, same bytes as wire_send_batch. */
static void test_batch_buf(const char *endpoint)
{
    struct wire_sock *pull = wire_sock_new(WIRE_PULL, endpoint, WIRE_BIND, NULL);
    struct wire_sock *push = wire_sock_new(WIRE_PUSH, endpoint, WIRE_CONNECT, NULL);
    CHECK(pull && push);
    if (!pull || !push) goto out;
    Saeflow__DType dts[3] = {WIRE_F32, WIRE_F16, WIRE_BF16};
    struct buf e1, e2;
    buf_init(&e1, 1 << 20);
    buf_init(&e2, 1 << 20);
    for (int d = 0; d < 3; d++) {
        struct batch_store bs = {0};
        batch_make(&bs, dts[d], 40 + (uint64_t)d);
        struct wire_batch_buf *bb = wire_batch_buf_new(push, NT, DIN, dts[d]);
        CHECK(bb != NULL);
        if (!bb) continue;
        size_t nb;
        CHECK(wire_batch_buf_data(bb, &nb) != NULL && nb == bs.b.activations.len);
        CHECK(wire_batch_buf_fill_f32(bb, bs.x) == 0);
        Saeflow__ActivationBatch meta = bs.b;
        meta.activations.len = 0; /* ignored: bb's are used */
        meta.activations.data = NULL;
        meta.d_in = 0;
        CHECK(wire_send_batch_buf(push, &meta, &bb, 0) == 0);
        CHECK(bb == NULL);
        struct wire_msg m = {0};
        CHECK(recv_wait(pull, &m) == 0 && m.kind == WIRE_BATCH);
        if (m.kind == WIRE_BATCH) {
            check_batch_equal(m.batch, &bs.b);
            struct wire_msg orig = {.kind = WIRE_BATCH, .batch = &bs.b};
            buf_reset(&e1);
            buf_reset(&e2);
            CHECK(wire_encode(&orig, &e1) == 0 && wire_encode(&m, &e2) == 0);
            CHECK(e1.len == e2.len && !memcmp(e1.data, e2.data, e1.len));
            CHECK(m.wire_bytes == e1.len); /* the same bytes went over the wire */
        }
        wire_msg_fini(&m);
        /* a refused send leaves the buffer with the caller */
        bb = wire_batch_buf_new(push, NT, DIN, dts[d]);
        CHECK(bb && wire_batch_buf_fill_f32(bb, bs.x) == 0);
        meta.producer_id = "";
        CHECK(wire_send_batch_buf(push, &meta, &bb, 0) == SF_EINVAL && bb != NULL);
        wire_batch_buf_destroy(&bb);
        CHECK(bb == NULL);
        buf_fini(&bs.scratch);
    }
    /* no peer: SF_AGAIN, the buffer is still ours, and can be sent once there is one */
    struct wire_sock *lonely = wire_sock_new(WIRE_PUSH, "inproc://nobody-here", WIRE_BIND, NULL);
    struct batch_store bs = {0};
    batch_make(&bs, WIRE_F16, 0);
    struct wire_batch_buf *bb = lonely ? wire_batch_buf_new(lonely, NT, DIN, WIRE_F16) : NULL;
    CHECK(bb != NULL);
    if (bb) {
        CHECK(wire_batch_buf_fill_f32(bb, bs.x) == 0);
        CHECK(wire_send_batch_buf(lonely, &bs.b, &bb, WIRE_DONTWAIT) == SF_AGAIN && bb != NULL);
        struct wire_sock *late =
            wire_sock_new(WIRE_PULL, "inproc://nobody-here", WIRE_CONNECT, NULL);
        int rc = SF_AGAIN;
        for (int i = 0; i < 100 && rc == SF_AGAIN; i++) {
            rc = wire_send_batch_buf(lonely, &bs.b, &bb, WIRE_DONTWAIT);
            if (rc == SF_AGAIN) time_sleep_ms(5);
        }
        CHECK(rc == 0 && bb == NULL);
        struct wire_msg m = {0};
        CHECK(late && recv_wait(late, &m) == 0 && m.kind == WIRE_BATCH);
        if (m.kind == WIRE_BATCH) check_batch_equal(m.batch, &bs.b);
        wire_msg_fini(&m);
        wire_batch_buf_destroy(&bb);
        wire_sock_destroy(&late);
    }
    CHECK(wire_batch_buf_new(push, 0, DIN, WIRE_F32) == NULL);
    CHECK(wire_batch_buf_new(push, NT, WIRE_MAX_D_IN + 1, WIRE_F32) == NULL);
    CHECK(wire_batch_buf_new(push, NT, DIN, 0) == NULL);
    wire_sock_destroy(&lonely);
    buf_fini(&bs.scratch);
    buf_fini(&e1);
    buf_fini(&e2);
out:
    wire_sock_destroy(&push);
    wire_sock_destroy(&pull);
}

/* wire_encode writes the envelope by hand: its bytes must be protobuf-c's own. */
static void test_envelope_bytes(void)
{
    struct batch_store bs = {0};
    batch_make(&bs, WIRE_BF16, 3);
    bs.b.schema_version = WIRE_SCHEMA_VERSION;
    Saeflow__CreditGrant c = credit_make();
    Saeflow__Ack a = ack_make();
    Saeflow__TrainMetrics t = metrics_make();
    Saeflow__CheckpointReady k = checkpoint_make();
    Saeflow__Heartbeat h = heartbeat_make(9);
    struct wire_msg ms[6] = {{.kind = WIRE_BATCH, .batch = &bs.b},
                             {.kind = WIRE_CREDIT, .credit = &c},
                             {.kind = WIRE_ACK, .ack = &a},
                             {.kind = WIRE_METRICS, .metrics = &t},
                             {.kind = WIRE_CHECKPOINT, .checkpoint = &k},
                             {.kind = WIRE_HEARTBEAT, .heartbeat = &h}};
    struct buf enc;
    buf_init(&enc, 1 << 20);
    for (int i = 0; i < 6; i++) {
        buf_reset(&enc);
        CHECK(wire_encode(&ms[i], &enc) == 0);
        uint8_t *ref;
        size_t n = pack_frame(WIRE_SCHEMA_VERSION, ms[i].kind, ms[i].body, &ref);
        CHECK_MSG(n == enc.len && !memcmp(ref, enc.data, n), "kind %s", wire_kind_name(ms[i].kind));
        free(ref);
    }
    buf_fini(&enc);
    buf_fini(&bs.scratch);
}

/* ---- corpus ---- */

static void write_file(const char *dir, const char *name, const void *p, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    CHECK(file_write_atomic(path, p, n) == 0);
}

static void write_corpus(const char *dir)
{
    CHECK(file_mkdirs(dir, 0755) == 0);
    struct buf enc;
    buf_init(&enc, 1 << 20);
    struct batch_store bs = {0};
    Saeflow__DType dts[3] = {WIRE_F32, WIRE_F16, WIRE_BF16};
    const char *dn[3] = {"f32", "f16", "bf16"};
    char name[128];
    for (int d = 0; d < 3; d++) {
        batch_make(&bs, dts[d], 7);
        struct wire_msg m = {.kind = WIRE_BATCH, .batch = &bs.b};
        buf_reset(&enc);
        CHECK(wire_encode(&m, &enc) == 0);
        snprintf(name, sizeof name, "batch_%s", dn[d]);
        write_file(dir, name, enc.data, enc.len);
        snprintf(name, sizeof name, "batch_%s_truncated", dn[d]);
        write_file(dir, name, enc.data, enc.len * 2 / 3);
        if (d == 0) {
            write_file(dir, "batch_f32_cut_in_header", enc.data, 7);
            enc.data[enc.len / 2] ^= 0x5a;
            write_file(dir, "batch_f32_flipped", enc.data, enc.len);
            /* without optional arrays */
            bs.b.n_token_ids = bs.b.n_doc_ids = bs.b.n_positions = 0;
            buf_reset(&enc);
            CHECK(wire_encode(&m, &enc) == 0);
            write_file(dir, "batch_f32_bare", enc.data, enc.len);
        }
    }
    Saeflow__CreditGrant c = credit_make();
    Saeflow__Ack a = ack_make();
    Saeflow__TrainMetrics t = metrics_make();
    Saeflow__CheckpointReady k = checkpoint_make();
    Saeflow__Heartbeat h = heartbeat_make(9);
    struct wire_msg ms[5] = {{.kind = WIRE_CREDIT, .credit = &c},
                             {.kind = WIRE_ACK, .ack = &a},
                             {.kind = WIRE_METRICS, .metrics = &t},
                             {.kind = WIRE_CHECKPOINT, .checkpoint = &k},
                             {.kind = WIRE_HEARTBEAT, .heartbeat = &h}};
    for (int i = 0; i < 5; i++) {
        buf_reset(&enc);
        CHECK(wire_encode(&ms[i], &enc) == 0);
        snprintf(name, sizeof name, "%s", wire_kind_name(ms[i].kind));
        write_file(dir, name, enc.data, enc.len);
        snprintf(name, sizeof name, "%s_truncated", wire_kind_name(ms[i].kind));
        write_file(dir, name, enc.data, enc.len - 1);
    }
    /* one of each rejection */
    struct reject_case cs[64];
    size_t n = build_reject_cases(cs);
    for (size_t i = 0; i < n; i++) {
        if (cs[i].len) {
            snprintf(name, sizeof name, "reject_%02zu_%s", i, wire_reject_name(cs[i].want));
            write_file(dir, name, cs[i].bytes, cs[i].len);
        }
        free(cs[i].bytes);
    }
    buf_fini(&bs.scratch);
    buf_fini(&enc);
}

/* ipc:// ownership: a second binder is refused while the first listens (which keeps
 * working), a socket file left by a dead process is replaced, a file that is not a
 * socket is left alone, and destroy removes the socket file. */
static void test_ipc_ownership(const char *dir)
{
    char ep[600], path[100];
    snprintf(path, sizeof path, "%.80s/own.sock", dir);
    snprintf(ep, sizeof ep, "ipc://%s", path);
    struct stat st;
    struct wire_sock *first = wire_sock_new(WIRE_ROUTER, ep, WIRE_BIND, NULL);
    CHECK(first != NULL);
    CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
    log_set_level(LOG_OFF); /* the refusals below log errors on purpose */
    struct wire_sock *second = wire_sock_new(WIRE_ROUTER, ep, WIRE_BIND, NULL);
    CHECK_MSG(second == NULL, "a second bind took over a live ipc socket");
    CHECK(wire_sock_bind(first, ep) == SF_ESTATE); /* also from the same socket */
    log_set_level(LOG_ERROR);
    wire_sock_destroy(&second);
    /* the first still receives */
    struct wire_sock *dealer = wire_sock_new(WIRE_DEALER, ep, WIRE_CONNECT, NULL);
    CHECK(dealer != NULL);
    if (first && dealer) {
        Saeflow__Heartbeat h = heartbeat_make(3);
        CHECK(wire_send_heartbeat(dealer, &h) == 0);
        struct wire_msg m = {0};
        CHECK(recv_wait(first, &m) == 0 && m.kind == WIRE_HEARTBEAT);
        wire_msg_fini(&m);
    }
    wire_sock_destroy(&dealer);
    wire_sock_destroy(&first);
    CHECK_MSG(stat(path, &st) != 0, "the socket file is left behind after destroy");

    /* a stale socket file: bound by a process that is gone (nobody listens) */
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    memcpy(a.sun_path, path, strlen(path) + 1);
    CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    close(fd);
    CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
    log_set_level(LOG_OFF);
    struct wire_sock *again = wire_sock_new(WIRE_ROUTER, ep, WIRE_BIND, NULL);
    log_set_level(LOG_ERROR);
    CHECK_MSG(again != NULL, "a stale socket file blocked the bind");
    wire_sock_destroy(&again);
    CHECK(stat(path, &st) != 0);

    /* a regular file at the path is not replaced */
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
    log_set_level(LOG_OFF);
    struct wire_sock *over = wire_sock_new(WIRE_ROUTER, ep, WIRE_BIND, NULL);
    log_set_level(LOG_ERROR);
    CHECK(over == NULL);
    wire_sock_destroy(&over);
    CHECK(stat(path, &st) == 0 && S_ISREG(st.st_mode));
    unlink(path);
}

int main(void)
{
    log_init("test_wire", LOG_LOGFMT, LOG_ERROR);
    const char *corpus = getenv("SAEFLOW_WRITE_CORPUS");
    if (corpus && *corpus) {
        write_corpus(corpus);
        return check_exit();
    }
    char dir[] = "/tmp/saeflow_wire_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char ep[512];
    roundtrip_all_kinds("inproc://roundtrip");
    snprintf(ep, sizeof ep, "ipc://%s/rt.sock", dir);
    roundtrip_all_kinds(ep);
    test_dtypes("inproc://dtypes");
    snprintf(ep, sizeof ep, "ipc://%s/dt.sock", dir);
    test_dtypes(ep);
    snprintf(ep, sizeof ep, "ipc://%s/big.sock", dir);
    test_big_batch(ep);
    test_envelope_bytes();
    test_unknown_fields();
    test_batch_buf("inproc://bb");
    snprintf(ep, sizeof ep, "ipc://%s/bb.sock", dir);
    test_batch_buf(ep);
    test_rejections();
    test_oversized_ipc(dir);
    test_seq_accounting();
    test_router_dealer(dir);
    test_ipc_ownership(dir);
    test_pub_sub();
    test_poll();
    test_misc();
    const char *names[] = {"rt.sock", "dt.sock", "big.sock", "router.sock", "bb.sock"};
    for (size_t i = 0; i < SF_ARRAY_LEN(names); i++) {
        snprintf(ep, sizeof ep, "%s/%s", dir, names[i]);
        unlink(ep);
    }
    rmdir(dir);
    return check_exit();
}

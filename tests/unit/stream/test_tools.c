/* Test tools the pipeline integration scripts run (tests/integration/chaos.sh,
 * inject.sh), plus a self-test of each when run without arguments:
 *
 *   test_tools inject ENDPOINT ROUNDS     connects a DEALER to a trainer's ROUTER and
 *       sends ROUNDS rounds of bad frames: garbage, empty, an invalid batch (wrong
 *       activations length), a batch with a bad schema version, a well-formed batch
 *       holding a NaN, a 3-part message and one frame over 64 MiB. Prints "injected N".
 *   test_tools poison ENDPOINT N [D_IN]   sends N well-formed batches (hook
 *       blocks.2.hook_resid_post, d_in 64 unless given, 256 tokens) whose values are
 *       finite but huge (±3e38): what poisoned an SAE before the batch guard. Prints
 *       "poisoned N".
 *   test_tools naive-push ENDPOINT N SLEEP_US   the negative control's producer: a
 *       plain PUSH socket sending N batches (seq 0..N-1), no acks, no resend.
 *   test_tools naive-pull ENDPOINT LEDGER MIXBATCHES   the negative control's trainer:
 *       a PULL socket; batches go into an in-memory mixing buffer of MIXBATCHES
 *       batches and are "trained" (ledger line "naive EPOCH SEQ", fsynced) when drawn
 *       from it. Exits after 4 s without input. Whatever sits in its buffer or socket
 *       queue when it is killed is lost without a trace: that is the point.
 *
 * Bad frames are built with protobuf-c's generated pack functions, bypassing wire's
 * send-side validation, as the wire tests do. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../support/check.h"
#include "stream/stream.h"

#define HOOK "blocks.2.hook_resid_post"

static float acts[8 * 4];

static void batch_init(Saeflow__ActivationBatch *b, uint64_t seq)
{
    saeflow__activation_batch__init(b);
    b->schema_version = WIRE_SCHEMA_VERSION;
    b->producer_id = "naive";
    b->producer_epoch = 1;
    b->seq = seq;
    b->model_id = "test";
    b->hook_name = HOOK;
    (void)wire_batch_set_f32(b, acts, 8, 4, SAEFLOW__DTYPE__DTYPE_F32, NULL);
}

/* Packs a Frame around a batch without validating it. */
static size_t pack_batch_frame(Saeflow__ActivationBatch *b, uint32_t schema, uint8_t **out)
{
    Saeflow__Frame f = SAEFLOW__FRAME__INIT;
    f.schema_version = schema;
    f.body_case = SAEFLOW__FRAME__BODY_BATCH;
    f.batch = b;
    size_t n = saeflow__frame__get_packed_size(&f);
    *out = malloc(n);
    if (*out) saeflow__frame__pack(&f, *out);
    return *out ? n : 0;
}

static int send1(struct wire_sock *s, const void *p, size_t n)
{
    const void *parts[1] = {p};
    size_t lens[1] = {n};
    return wire_send_raw(s, parts, lens, 1);
}

/* One round of bad frames; returns how many were sent. */
static int inject_round(struct wire_sock *s, bool big)
{
    int sent = 0;
    static const char garbage[] = "\xff\xfe this is not a protobuf frame \x01\x02\x03";
    sent += send1(s, garbage, sizeof garbage) == 0;
    sent += send1(s, "", 0) == 0;
    Saeflow__ActivationBatch b;
    batch_init(&b, 0);
    b.producer_id = "injector";
    b.activations.len -= 4; /* length no longer d_in * n_tokens * 4 */
    uint8_t *p = NULL;
    size_t n = pack_batch_frame(&b, WIRE_SCHEMA_VERSION, &p);
    if (n) sent += send1(s, p, n) == 0;
    free(p);
    batch_init(&b, 0);
    b.producer_id = "injector";
    n = pack_batch_frame(&b, 99, &p);
    if (n) sent += send1(s, p, n) == 0;
    free(p);
    /* well-formed, but with a NaN: wire passes it, the trainer must not train it */
    static float nan_acts[8 * 64];
    nan_acts[5] = NAN;
    batch_init(&b, 0);
    b.producer_id = "injector";
    b.producer_epoch = (uint64_t)time_wall_ms();
    (void)wire_batch_set_f32(&b, nan_acts, 8, 64, SAEFLOW__DTYPE__DTYPE_F32, NULL);
    sent += wire_send_batch(s, &b) == 0;
    const void *parts[3] = {"a", "b", "c"};
    size_t lens[3] = {1, 1, 1};
    sent += wire_send_raw(s, parts, lens, 3) == 0;
    if (big) {
        size_t bn = ((size_t)64 << 20) + 1;
        uint8_t *bp = calloc(1, bn);
        if (bp) sent += send1(s, bp, bn) == 0;
        free(bp);
    }
    return sent;
}

static int cmd_inject(const char *ep, int rounds)
{
    struct wire_opts o;
    wire_opts_default(&o);
    o.identity = "injector";
    o.max_msg_bytes = (size_t)128 << 20;
    o.linger_ms = 10000; /* the 64 MiB frame must leave before the socket closes */
    struct wire_sock *s = wire_sock_new(WIRE_DEALER, ep, WIRE_CONNECT, &o);
    if (!s) return 1;
    int sent = 0;
    for (int r = 0; r < rounds; r++) {
        sent += inject_round(s, r == rounds - 1);
        time_sleep_ms(20);
    }
    time_sleep_ms(300);
    wire_sock_destroy(&s);
    printf("injected %d\n", sent);
    return 0;
}

static int cmd_poison(const char *ep, int64_t n, int64_t d)
{
    struct wire_opts o;
    wire_opts_default(&o);
    o.identity = "poisoner";
    struct wire_sock *s = wire_sock_new(WIRE_DEALER, ep, WIRE_CONNECT, &o);
    if (!s) return 1;
    const size_t T = 256;
    float *x = malloc(T * (size_t)d * sizeof *x);
    if (!x) return 1;
    for (size_t i = 0; i < T * (size_t)d; i++) x[i] = (i % 3 ? 3e38f : -3e38f);
    int64_t sent = 0;
    uint64_t epoch = (uint64_t)time_wall_ms();
    for (int64_t i = 0; i < n; i++) {
        Saeflow__ActivationBatch b;
        batch_init(&b, (uint64_t)i);
        b.producer_id = "poisoner";
        b.producer_epoch = epoch;
        (void)wire_batch_set_f32(&b, x, T, (size_t)d, SAEFLOW__DTYPE__DTYPE_F32, NULL);
        sent += wire_send_batch(s, &b) == 0;
        time_sleep_ms(20);
    }
    time_sleep_ms(300);
    wire_sock_destroy(&s);
    free(x);
    printf("poisoned %lld\n", (long long)sent);
    return 0;
}

static int cmd_naive_push(const char *ep, int64_t n, int64_t sleep_us)
{
    struct wire_opts o;
    wire_opts_default(&o);
    o.send_timeout_ms = -1;
    o.linger_ms = -1; /* deliver everything queued before exiting: only kills lose */
    struct wire_sock *s = wire_sock_new(WIRE_PUSH, ep, WIRE_CONNECT, &o);
    if (!s) return 1;
    int64_t sent = 0;
    for (int64_t i = 0; i < n && !sig_stop_requested(); i++) {
        Saeflow__ActivationBatch b;
        batch_init(&b, (uint64_t)i);
        if (wire_send_batch(s, &b) == 0) sent++;
        if (sleep_us) usleep((useconds_t)sleep_us);
    }
    wire_sock_destroy(&s);
    printf("sent %lld\n", (long long)sent);
    return 0;
}

static int cmd_naive_pull(const char *ep, const char *ledger, int64_t mix)
{
    struct wire_sock *s = wire_sock_new(WIRE_PULL, ep, WIRE_BIND, NULL);
    FILE *f = fopen(ledger, "a");
    if (!s || !f) return 1;
    uint64_t *buf = calloc((size_t)mix, sizeof *buf);
    struct rng g;
    rng_seed(&g, (uint64_t)getpid());
    size_t fill = 0;
    struct wire_msg m = {0};
    int64_t idle_since = time_now_ns();
    while (!sig_stop_requested()) {
        int rc = wire_recv(s, &m, 50);
        if (rc == 0 && m.kind == WIRE_BATCH) {
            idle_since = time_now_ns();
            buf[fill++] = m.batch->seq;
            if (fill == (size_t)mix) { /* train one drawn at random */
                size_t j = (size_t)rng_below(&g, fill);
                fprintf(f, "naive 1 %llu\n", (unsigned long long)buf[j]);
                fflush(f);
                buf[j] = buf[--fill];
            }
        } else if (time_now_ns() - idle_since > 4000000000LL) {
            break;
        }
    }
    for (size_t i = 0; i < fill; i++) fprintf(f, "naive 1 %llu\n", (unsigned long long)buf[i]);
    fclose(f);
    free(buf);
    wire_msg_fini(&m);
    wire_sock_destroy(&s);
    return 0;
}

/* Without arguments: each tool against an in-process peer. */
static int self_test(void)
{
    struct wire_opts o;
    wire_opts_default(&o);
    struct wire_sock *r = wire_sock_new(WIRE_ROUTER, "inproc://tools", WIRE_BIND, &o);
    o.identity = "injector";
    struct wire_sock *d = wire_sock_new(WIRE_DEALER, "inproc://tools", WIRE_CONNECT, &o);
    CHECK(r && d);
    int sent = inject_round(d, true);
    CHECK_EQ_INT(sent, 7);
    struct wire_msg m = {0};
    int rejected = 0, other = 0;
    for (int i = 0; i < 100 && rejected + other < sent; i++) {
        int rc = wire_recv(r, &m, 50);
        if (rc == WIRE_REJECTED)
            rejected++;
        else if (rc == 0)
            other++;
    }
    CHECK_EQ_INT(rejected, 6);
    CHECK_EQ_INT(other, 1); /* the NaN batch is well-formed */
    struct wire_stats st;
    wire_stats_get(r, &st);
    CHECK(st.rejected[WIRE_REJ_UNPACK] >= 1);
    CHECK(st.rejected[WIRE_REJ_EMPTY] == 1);
    CHECK(st.rejected[WIRE_REJ_SIZE_MISMATCH] == 1);
    CHECK(st.rejected[WIRE_REJ_SCHEMA_VERSION] == 1);
    CHECK(st.rejected[WIRE_REJ_TOO_LARGE] == 1); /* inproc has no ZMQ_MAXMSGSIZE */
    wire_msg_fini(&m);
    wire_sock_destroy(&d);
    wire_sock_destroy(&r);
    return check_exit();
}

int main(int argc, char **argv)
{
    log_init("test_tools", LOG_LOGFMT, LOG_WARN);
    for (size_t i = 0; i < SF_ARRAY_LEN(acts); i++) acts[i] = (float)i;
    if (argc < 2) return self_test();
    sig_install();
    int64_t a = 0, b = 0;
    if (!strcmp(argv[1], "inject") && argc == 4 && parse_i64(argv[3], &a) == 0)
        return cmd_inject(argv[2], (int)a);
    if (!strcmp(argv[1], "poison") && (argc == 4 || argc == 5) && parse_i64(argv[3], &a) == 0 &&
        (argc == 4 || (parse_i64(argv[4], &b) == 0 && b > 0 && b <= 65536)))
        return cmd_poison(argv[2], a, argc == 5 ? b : 64);
    if (!strcmp(argv[1], "naive-push") && argc == 5 && parse_i64(argv[3], &a) == 0 &&
        parse_i64(argv[4], &b) == 0)
        return cmd_naive_push(argv[2], a, b);
    if (!strcmp(argv[1], "naive-pull") && argc == 5 && parse_i64(argv[4], &a) == 0 && a > 0)
        return cmd_naive_pull(argv[2], argv[3], a);
    fprintf(stderr,
            "usage: test_tools [inject EP ROUNDS | poison EP N [D_IN] | naive-push EP N SLEEP_US | "
            "naive-pull EP LEDGER MIXBATCHES]\n");
    return 2;
}

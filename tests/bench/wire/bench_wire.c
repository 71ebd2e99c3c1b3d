/* Benchmarks the wire library against raw ZeroMQ on the same bytes: 1 MiB
 * ActivationBatch messages (512 tokens x 512 f32 + token/doc/position arrays) over
 * ipc:// and tcp://127.0.0.1, PUSH -> PULL, one sender thread, receiver on main.
 *
 *   raw-copy   zmq_send(encoded frame) / zmq_recv(into a buffer): plain ZeroMQ use
 *   raw-zc     zmq_msg_init_data of one constant buffer (no copy) / zmq_msg_recv (no
 *              copy): ZeroMQ's floor, reachable only by a sender whose data never changes
 *   raw-fresh  malloc + memcpy of the frame + zmq_msg_init_data (free) / zmq_msg_recv:
 *              the least a raw sender with new data in every message must do
 *   wire       wire_send_batch (validate + encode + zero-copy send) /
 *              wire_recv (recv + decode + validate + seq accounting)
 *   wire-zc    wire_batch_buf_new + wire_batch_buf_fill_f32 (the one copy of the data
 *              into the message) + wire_send_batch_buf / wire_recv as above
 *   wire+f32   wire, and the receiver also decodes the activations to float32
 *
 * Modes are interleaved within each repetition so that machine noise hits them
 * alike; the table shows medians over the repetitions and the ratio of wire's time
 * per message to each raw baseline's (1.00 = no overhead). This file is the only
 * place outside common/wire that calls zmq_* (the raw peer). Usage:
 *   build/bench/bench_wire [messages_per_rep=300] [reps=7] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "wire/wire.h"

enum mode { M_RAW_COPY, M_RAW_ZC, M_RAW_FRESH, M_WIRE, M_WIRE_ZC, M_WIRE_F32, N_MODES };
static const char *const mode_names[N_MODES] = {"raw-copy", "raw-zc",  "raw-fresh",
                                                "wire",     "wire-zc", "wire+f32"};

#define NT  512
#define DIN 512

struct payload {
    float *x;
    uint32_t tok[NT];
    uint64_t doc[NT];
    int32_t pos[NT];
    Saeflow__ActivationBatch b;
    struct buf enc; /* the encoded Frame: what the raw modes send */
};

struct pair {
    void *raw_push, *raw_pull;     /* raw modes */
    struct wire_sock *push, *pull; /* wire modes */
};

struct sender_args {
    enum mode mode;
    struct pair *p;
    struct payload *pl;
    size_t n;
    double cpu_s;
    int failed;
};

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void no_free(void *data, void *hint)
{
    (void)data;
    (void)hint;
}

static void free_fn(void *data, void *hint)
{
    (void)hint;
    free(data);
}

static void *sender(void *arg)
{
    struct sender_args *a = arg;
    double c0 = thread_cpu_s();
    for (size_t i = 0; i < a->n && !a->failed; i++) {
        if (a->mode == M_RAW_COPY) {
            if (zmq_send(a->p->raw_push, a->pl->enc.data, a->pl->enc.len, 0) < 0) a->failed = 1;
        } else if (a->mode == M_RAW_ZC) {
            zmq_msg_t m;
            zmq_msg_init_data(&m, a->pl->enc.data, a->pl->enc.len, no_free, NULL);
            if (zmq_msg_send(&m, a->p->raw_push, 0) < 0) {
                zmq_msg_close(&m);
                a->failed = 1;
            }
        } else if (a->mode == M_RAW_FRESH) {
            void *copy = malloc(a->pl->enc.len);
            if (!copy) {
                a->failed = 1;
                break;
            }
            memcpy(copy, a->pl->enc.data, a->pl->enc.len);
            zmq_msg_t m;
            zmq_msg_init_data(&m, copy, a->pl->enc.len, free_fn, NULL);
            if (zmq_msg_send(&m, a->p->raw_push, 0) < 0) {
                zmq_msg_close(&m);
                a->failed = 1;
            }
        } else if (a->mode == M_WIRE_ZC) {
            a->pl->b.seq++;
            struct wire_batch_buf *bb = wire_batch_buf_new(a->p->push, NT, DIN, WIRE_F32);
            if (!bb || wire_batch_buf_fill_f32(bb, a->pl->x) != 0) a->failed = 1;
            int rc;
            while (bb && (rc = wire_send_batch_buf(a->p->push, &a->pl->b, &bb, 0)) == SF_AGAIN) {
            }
            if (bb) {
                wire_batch_buf_destroy(&bb);
                a->failed = 1;
            }
        } else {
            a->pl->b.seq++;
            int rc;
            while ((rc = wire_send_batch(a->p->push, &a->pl->b)) == SF_AGAIN) {
            }
            if (rc != 0) a->failed = 1;
        }
    }
    a->cpu_s = thread_cpu_s() - c0;
    return NULL;
}

struct result {
    double secs, send_cpu, recv_cpu;
};

static int run_once(enum mode mode, struct pair *p, struct payload *pl, size_t n, char *rbuf,
                    float *f32, struct result *res)
{
    struct sender_args a = {.mode = mode, .p = p, .pl = pl, .n = n};
    pthread_t th;
    int64_t t0 = time_now_ns();
    if (pthread_create(&th, NULL, sender, &a) != 0) return -1;
    double c0 = thread_cpu_s();
    int bad = 0;
    struct wire_msg m = {0};
    for (size_t i = 0; i < n && !bad; i++) {
        if (mode == M_RAW_COPY) {
            int r = zmq_recv(p->raw_pull, rbuf, pl->enc.len + 64, 0);
            if (r != (int)pl->enc.len) bad = 1;
        } else if (mode == M_RAW_ZC || mode == M_RAW_FRESH) {
            zmq_msg_t zm;
            zmq_msg_init(&zm);
            if (zmq_msg_recv(&zm, p->raw_pull, 0) != (int)pl->enc.len) bad = 1;
            zmq_msg_close(&zm);
        } else {
            int rc;
            while ((rc = wire_recv(p->pull, &m, 1000)) == SF_AGAIN) {
            }
            if (rc != 0 || m.kind != WIRE_BATCH)
                bad = 1;
            else if (mode == M_WIRE_F32 && wire_batch_to_f32(m.batch, f32, (size_t)NT * DIN) != 0)
                bad = 1;
        }
    }
    wire_msg_fini(&m);
    res->recv_cpu = thread_cpu_s() - c0;
    pthread_join(th, NULL);
    res->secs = (double)(time_now_ns() - t0) * 1e-9;
    res->send_cpu = a.cpu_s;
    return bad || a.failed ? -1 : 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void *raw_socket(void *ctx, int type, const char *ep, int bind, char *bound, size_t bn)
{
    void *s = zmq_socket(ctx, type);
    int hwm = 64, linger = 0;
    zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_RCVHWM, &hwm, sizeof hwm);
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
    if ((bind ? zmq_bind(s, ep) : zmq_connect(s, ep)) != 0) {
        fprintf(stderr, "raw %s %s failed: %s\n", bind ? "bind" : "connect", ep,
                zmq_strerror(zmq_errno()));
        zmq_close(s);
        return NULL;
    }
    if (bound) zmq_getsockopt(s, ZMQ_LAST_ENDPOINT, bound, &bn);
    return s;
}

/* Opens both pairs for one transport; warms each up with one message. */
static int open_pair(void *ctx, const char *raw_ep, const char *wire_ep, struct pair *p,
                     struct payload *pl, char *rbuf)
{
    char bound[256] = {0};
    p->raw_pull = raw_socket(ctx, ZMQ_PULL, raw_ep, 1, bound, sizeof bound);
    p->raw_push = p->raw_pull ? raw_socket(ctx, ZMQ_PUSH, bound, 0, NULL, 0) : NULL;
    p->pull = wire_sock_new(WIRE_PULL, wire_ep, WIRE_BIND, NULL);
    p->push =
        p->pull ? wire_sock_new(WIRE_PUSH, wire_sock_endpoint(p->pull), WIRE_CONNECT, NULL) : NULL;
    if (!p->raw_push || !p->push) return -1;
    struct result r;
    float *f32 = malloc(sizeof(float) * NT * DIN);
    int rc =
        run_once(M_RAW_COPY, p, pl, 2, rbuf, f32, &r) | run_once(M_WIRE, p, pl, 2, rbuf, f32, &r);
    free(f32);
    return rc;
}

static void close_pair(struct pair *p)
{
    if (p->raw_push) zmq_close(p->raw_push);
    if (p->raw_pull) zmq_close(p->raw_pull);
    wire_sock_destroy(&p->push);
    wire_sock_destroy(&p->pull);
}

/* The library's own work per message, without sockets, against a memcpy of the same
 * bytes: what wire adds on each side whatever the transport does. */
static void in_process(struct payload *pl)
{
    enum { ITERS = 200, REPS = 7 };
    const char *names[5] = {"memcpy of the frame", "wire_encode (validate + pack)",
                            "wire_decode_borrowed (recv path)", "wire_decode (copying)",
                            "wire_batch_to_f32"};
    double t[5][REPS];
    char *dst = malloc(pl->enc.len);
    struct buf e;
    buf_init(&e, pl->enc.len + 64);
    float *f = malloc(sizeof(float) * NT * DIN);
    struct wire_msg em = {.kind = WIRE_BATCH, .batch = &pl->b}, m = {0}, mb = {0};
    wire_decode_borrowed(pl->enc.data, pl->enc.len, NULL, &mb);
    for (int r = 0; r < REPS; r++) {
        for (int k = 0; k < 5; k++) {
            int64_t t0 = time_now_ns();
            for (int i = 0; i < ITERS; i++) {
                switch (k) {
                case 0:
                    memcpy(dst, pl->enc.data, pl->enc.len);
                    break;
                case 1:
                    buf_reset(&e);
                    wire_encode(&em, &e);
                    break;
                case 2:
                    wire_decode_borrowed(pl->enc.data, pl->enc.len, NULL, &m);
                    break;
                case 3:
                    wire_decode(pl->enc.data, pl->enc.len, NULL, &m);
                    break;
                case 4:
                    wire_batch_to_f32(mb.batch, f, (size_t)NT * DIN);
                    break;
                }
            }
            t[k][r] = (double)(time_now_ns() - t0) * 1e-3 / ITERS;
        }
    }
    double base = median(t[0], REPS);
    printf("in-process, per %zu-byte message (median of %d x %d):\n", pl->enc.len, REPS, ITERS);
    for (int k = 0; k < 5; k++) {
        double v = median(t[k], REPS);
        printf("  %-34s %8.1f us  %6.2f x memcpy\n", names[k], v, v / base);
    }
    wire_msg_fini(&m);
    wire_msg_fini(&mb);
    buf_fini(&e);
    free(dst);
    free(f);
}

int main(int argc, char **argv)
{
    log_init("bench_wire", LOG_LOGFMT, LOG_WARN);
    int64_t nv = 300, reps = 7;
    if (argc > 1 && (parse_i64(argv[1], &nv) != 0 || nv < 1)) return 2;
    if (argc > 2 && (parse_i64(argv[2], &reps) != 0 || reps < 1 || reps > 99)) return 2;
    size_t n = (size_t)nv;

    struct payload pl;
    memset(&pl, 0, sizeof pl);
    pl.x = malloc(sizeof(float) * NT * DIN);
    struct rng rg;
    rng_seed(&rg, 1);
    for (size_t i = 0; i < (size_t)NT * DIN; i++) pl.x[i] = rng_normal(&rg);
    for (size_t i = 0; i < NT; i++) {
        pl.tok[i] = (uint32_t)rng_below(&rg, 50000);
        pl.doc[i] = 1000000 + i / 128;
        pl.pos[i] = (int32_t)(i % 128);
    }
    Saeflow__ActivationBatch init = SAEFLOW__ACTIVATION_BATCH__INIT;
    pl.b = init;
    pl.b.producer_id = "capture-bench";
    pl.b.producer_epoch = (uint64_t)time_wall_ms();
    pl.b.model_id = "stories260K";
    pl.b.hook_name = "blocks.2.hook_resid_post";
    pl.b.layer = 2;
    pl.b.n_token_ids = pl.b.n_doc_ids = pl.b.n_positions = NT;
    pl.b.token_ids = pl.tok;
    pl.b.doc_ids = pl.doc;
    pl.b.positions = pl.pos;
    if (wire_batch_set_f32(&pl.b, pl.x, NT, DIN, WIRE_F32, NULL) != 0) return 1;
    buf_init(&pl.enc, 8u << 20);
    struct wire_msg em = {.kind = WIRE_BATCH, .batch = &pl.b};
    if (wire_encode(&em, &pl.enc) != 0) return 1;
    char *rbuf = malloc(pl.enc.len + 64);
    float *f32 = malloc(sizeof(float) * NT * DIN);

    char dir[] = "/tmp/saeflow_bench_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char raw_ipc[300], wire_ipc[300];
    snprintf(raw_ipc, sizeof raw_ipc, "ipc://%s/raw.sock", dir);
    snprintf(wire_ipc, sizeof wire_ipc, "ipc://%s/wire.sock", dir);
    const char *tnames[2] = {"ipc", "tcp"};
    const char *raw_eps[2] = {raw_ipc, "tcp://127.0.0.1:*"};
    const char *wire_eps[2] = {wire_ipc, "tcp://127.0.0.1:*"};

    void *ctx = zmq_ctx_new();
    zmq_ctx_set(ctx, ZMQ_IO_THREADS, 1); /* same as the wire library's default */
    printf("bench_wire: %zu-byte frames (%d x %d f32 + ids), %zu messages x %lld reps, "
           "PUSH->PULL, 1 ZeroMQ I/O thread per context\n",
           pl.enc.len, NT, DIN, n, (long long)reps);
    printf("%-5s %-9s %6s %7s %8s %8s %8s | %7s %7s %7s | %7s\n", "tport", "path", "GB/s", "msg/s",
           "send_us", "recv_us", "cpu_us", "t/copy", "t/zc", "t/fresh", "cpu/frsh");
    int status = 0;
    for (int t = 0; t < 2; t++) {
        struct pair p = {0};
        if (open_pair(ctx, raw_eps[t], wire_eps[t], &p, &pl, rbuf) != 0) {
            fprintf(stderr, "bench_wire: %s setup failed\n", tnames[t]);
            close_pair(&p);
            status = 1;
            continue;
        }
        double secs[N_MODES][99], scpu[N_MODES][99], rcpu[N_MODES][99], send1[N_MODES][99];
        for (int64_t r = 0; r < reps; r++) {
            for (int m = 0; m < N_MODES; m++) {
                struct result res;
                if (run_once((enum mode)m, &p, &pl, n, rbuf, f32, &res) != 0) {
                    fprintf(stderr, "bench_wire: %s %s failed\n", tnames[t], mode_names[m]);
                    status = 1;
                }
                secs[m][r] = res.secs;
                scpu[m][r] = res.send_cpu;
                send1[m][r] = res.send_cpu;
                rcpu[m][r] = res.recv_cpu;
            }
        }
        double med[N_MODES], cpu[N_MODES];
        for (int m = 0; m < N_MODES; m++) {
            med[m] = median(secs[m], (size_t)reps);
            for (int64_t r = 0; r < reps; r++) scpu[m][r] += rcpu[m][r]; /* thread CPU, both ends */
        }
        for (int m = 0; m < N_MODES; m++) cpu[m] = median(scpu[m], (size_t)reps) / (double)n;
        for (int m = 0; m < N_MODES; m++) {
            double per = med[m] / (double)n;
            printf("%-5s %-9s %6.2f %7.0f %8.1f %8.1f %8.1f | %7.3f %7.3f %7.3f | %7.3f\n",
                   tnames[t], mode_names[m], (double)pl.enc.len / per * 1e-9, 1.0 / per,
                   median(send1[m], (size_t)reps) / (double)n * 1e6,
                   median(rcpu[m], (size_t)reps) / (double)n * 1e6, cpu[m] * 1e6,
                   med[m] / med[M_RAW_COPY], med[m] / med[M_RAW_ZC], med[m] / med[M_RAW_FRESH],
                   cpu[m] / cpu[M_RAW_FRESH]);
        }
        struct wire_stats st;
        wire_stats_get(p.pull, &st);
        if (st.rejected_total || st.duplicates || st.gap_batches) {
            fprintf(stderr, "bench_wire: unexpected rejects/dups/gaps\n");
            status = 1;
        }
        close_pair(&p);
    }
    printf("GB/s, msg/s: median over reps of wall time from first send to last receive.\n"
           "send_us/recv_us/cpu_us: thread CPU per message of the sender, the receiver, both.\n"
           "t/<base>: wall time per message over that raw baseline's; cpu/frsh: cpu_us over "
           "raw-fresh's (1.00 = same; goal for wire: <= 1.10).\n");
    in_process(&pl);
    zmq_ctx_term(ctx);
    char path[400];
    snprintf(path, sizeof path, "%s/raw.sock", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/wire.sock", dir);
    unlink(path);
    rmdir(dir);
    buf_fini(&pl.enc);
    free(pl.x);
    free(rbuf);
    free(f32);
    return status;
}

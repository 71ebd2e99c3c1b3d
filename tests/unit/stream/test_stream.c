/* Tests for common/stream over real ZeroMQ sockets (inproc): range sets, credit
 * accounting, ring resend after a consumer restart, duplicate suppression across
 * epochs, ack-after-checkpoint recovery, hook routing, state text and ledger replay. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../support/check.h"
#include "stream/stream.h"

#define HOOK_A "blocks.0.hook_resid_post"
#define HOOK_B "blocks.1.hook_resid_post"
#define D_IN   4
#define TOK    3

static char tmpdir[256];

static void test_ranges(void)
{
    struct stream_ranges s;
    stream_ranges_init(&s);
    CHECK(stream_ranges_add(&s, 5) == 0);
    CHECK(stream_ranges_add(&s, 7) == 0);
    CHECK(s.n == 2);
    CHECK(stream_ranges_add(&s, 6) == 0); /* joins both */
    CHECK(s.n == 1 && s.r[0][0] == 5 && s.r[0][1] == 7);
    CHECK(stream_ranges_add(&s, 6) == 1);
    CHECK(stream_ranges_add(&s, 0) == 0);
    CHECK(stream_ranges_add(&s, UINT64_MAX) == 0);
    CHECK(stream_ranges_has(&s, 0) && !stream_ranges_has(&s, 1) && stream_ranges_has(&s, 7));
    CHECK(!stream_ranges_has(&s, 8) && stream_ranges_has(&s, UINT64_MAX));
    CHECK(stream_ranges_count(&s) == 5);
    /* against a plain bitmap on random inserts */
    struct stream_ranges r;
    stream_ranges_init(&r);
    bool seen[300] = {0};
    struct rng g;
    rng_seed(&g, 7);
    for (int i = 0; i < 400; i++) {
        uint64_t v = rng_below(&g, 300);
        CHECK(stream_ranges_add(&r, v) == (seen[v] ? 1 : 0));
        seen[v] = true;
    }
    uint64_t cnt = 0;
    for (int i = 0; i < 300; i++) {
        cnt += seen[i];
        CHECK(stream_ranges_has(&r, (uint64_t)i) == seen[i]);
    }
    CHECK(stream_ranges_count(&r) == cnt);
    for (size_t i = 1; i < r.n; i++) CHECK(r.r[i][0] > r.r[i - 1][1] + 1);
    CHECK(stream_ranges_merge(&s, &r) == 0);
    CHECK(stream_ranges_has(&s, UINT64_MAX) && stream_ranges_has(&s, 6));
    for (int i = 0; i < 300; i++)
        CHECK(stream_ranges_has(&s, (uint64_t)i) == (seen[i] || (i >= 5 && i <= 7) || i == 0));
    stream_ranges_fini(&r);
    stream_ranges_fini(&s);
}

static float acts[TOK * D_IN];

static void fill_batch(Saeflow__ActivationBatch *b, const char *hook)
{
    saeflow__activation_batch__init(b);
    b->model_id = "test-model";
    b->hook_name = (char *)hook;
    b->layer = 0;
    CHECK(wire_batch_set_f32(b, acts, TOK, D_IN, SAEFLOW__DTYPE__DTYPE_F32, NULL) == 0);
}

static struct stream_producer *producer(const char *id, uint64_t epoch, const char *ledger,
                                        size_t ring)
{
    struct stream_producer_opts o;
    stream_producer_opts_default(&o);
    o.producer_id = id;
    o.epoch = epoch;
    o.ring_batches = ring;
    o.heartbeat_ms = 20;
    o.peer_timeout_ms = 400;
    o.ack_timeout_ms = 300;
    o.ledger_path = ledger;
    return stream_producer_new(&o);
}

static struct stream_consumer *consumer(const char *ep, uint64_t epoch, const char *hook,
                                        size_t window)
{
    struct stream_consumer_opts o;
    stream_consumer_opts_default(&o);
    o.consumer_id = "trainer";
    o.epoch = epoch;
    o.endpoint = ep;
    const char *hooks[1] = {hook};
    o.hooks = hooks;
    o.n_hooks = hook ? 1 : 0;
    o.credit_window = window;
    o.heartbeat_ms = 20;
    o.peer_timeout_ms = 400;
    return stream_consumer_new(&o);
}

/* Pumps both sides for ms milliseconds; consumer deliveries are counted per seq. */
struct sink {
    struct stream_consumer *c;
    size_t room;     /* batches of room reported each round */
    int counts[512]; /* deliveries per seq (single producer epoch tests) */
    uint64_t epoch_seen[512];
    size_t delivered;
};

static void pump(struct stream_producer **ps, size_t np, struct sink **ss, size_t ns, int ms)
{
    int64_t end = time_now_ns() + (int64_t)ms * 1000000;
    struct stream_delivery d = {0};
    while (time_now_ns() < end) {
        for (size_t i = 0; i < np; i++) stream_producer_poll(ps[i], 1);
        for (size_t j = 0; j < ns; j++) {
            struct sink *s = ss[j];
            if (!s->c) continue;
            stream_consumer_set_room(s->c, s->room);
            while (stream_consumer_recv(s->c, &d, 1) == 0) {
                uint64_t seq = d.msg.batch->seq;
                if (seq < 512) {
                    s->counts[seq]++;
                    s->epoch_seen[seq] = d.msg.batch->producer_epoch;
                }
                s->delivered++;
                if (s->room) s->room--;
            }
        }
    }
    stream_delivery_fini(&d);
}

static void test_credit(void)
{
    struct stream_producer *p = producer("cap-1", 100, NULL, 64);
    struct sink s = {.c = consumer("inproc://credit", 1, HOOK_A, 8), .room = 5};
    CHECK(p && s.c);
    CHECK(stream_producer_connect(p, "inproc://credit") == 0);
    struct sink *ss[1] = {&s};
    /* not ready until the consumer subscribed */
    CHECK(!stream_producer_ready(p));
    pump(&p, 1, ss, 1, 100);
    CHECK(stream_producer_ready(p));
    Saeflow__ActivationBatch b;
    for (int i = 0; i < 20; i++) {
        fill_batch(&b, HOOK_A);
        CHECK(stream_producer_publish(p, &b) == 0);
        CHECK(b.seq == (uint64_t)i && b.producer_epoch == 100);
    }
    s.room = 5; /* room for exactly 5: the producer must stop at 5 */
    pump(&p, 1, ss, 1, 150);
    struct stream_producer_stats ps;
    stream_producer_stats(p, &ps);
    CHECK_EQ_INT(s.delivered, 5);
    CHECK_EQ_INT(ps.sent, 5);
    CHECK_EQ_INT(ps.credit, 0);
    CHECK_EQ_INT(ps.in_ring, 20);
    struct stream_consumer_stats cs;
    stream_consumer_stats(s.c, &cs);
    CHECK_EQ_INT(cs.over_credit, 0);
    CHECK_EQ_INT(cs.pending, 5);
    /* commit: acks free the ring's head */
    CHECK(stream_consumer_commit(s.c) == 0);
    s.room = 100; /* more room than the window: at most 8 outstanding at a time */
    pump(&p, 1, ss, 1, 200);
    stream_producer_stats(p, &ps);
    CHECK_EQ_INT(ps.committed, 5);
    CHECK_EQ_INT(s.delivered, 20);
    for (int i = 0; i < 20; i++) CHECK_EQ_INT(s.counts[i], 1);
    stream_consumer_stats(s.c, &cs);
    CHECK_EQ_INT(cs.over_credit, 0);
    CHECK(cs.credit_granted >= 20);
    /* ring full -> SF_AGAIN */
    struct stream_producer *small = producer("cap-2", 1, NULL, 2);
    struct sink s2 = {.c = consumer("inproc://credit2", 1, HOOK_A, 8), .room = 0};
    CHECK(stream_producer_connect(small, "inproc://credit2") == 0);
    struct sink *ss2[1] = {&s2};
    pump(&small, 1, ss2, 1, 60);
    fill_batch(&b, HOOK_A);
    CHECK(stream_producer_publish(small, &b) == 0);
    CHECK(stream_producer_publish(small, &b) == 0);
    CHECK(stream_producer_publish(small, &b) == SF_AGAIN);
    CHECK(stream_producer_room(small) == 0);
    stream_producer_destroy(&small);
    stream_consumer_destroy(&s2.c);
    stream_consumer_destroy(&s.c);
    stream_producer_destroy(&p);
}

/* Consumer dies twice: once after a durable checkpoint but before its acks went out,
 * once with uncommitted batches. Every batch ends committed exactly once. */
static void test_restart_resend(void)
{
    char pledger[300], cledger[300];
    snprintf(pledger, sizeof pledger, "%s/producer.ledger", tmpdir);
    snprintf(cledger, sizeof cledger, "%s/consumer.ledger", tmpdir);
    char ep[300];
    snprintf(ep, sizeof ep, "ipc://%s/restart.sock", tmpdir);
    struct stream_producer *p = producer("cap-r", 42, pledger, 64);
    struct sink s = {.c = consumer(ep, 1, HOOK_A, 4), .room = 1000};
    CHECK(stream_producer_connect(p, ep) == 0);
    CHECK(stream_consumer_ledger_open(s.c, cledger, 0) == 0);
    struct sink *ss[1] = {&s};
    pump(&p, 1, ss, 1, 60);
    Saeflow__ActivationBatch b;
    for (int i = 0; i < 30; i++) {
        fill_batch(&b, HOOK_A);
        CHECK(stream_producer_publish(p, &b) == 0);
    }
    s.room = 10;
    pump(&p, 1, ss, 1, 150);
    CHECK_EQ_INT(s.delivered, 10);
    /* checkpoint 1 durable (state + ledger), then the process dies before acking */
    struct buf state;
    buf_init(&state, 1 << 20);
    CHECK(stream_consumer_state(s.c, &state) == 0);
    CHECK(stream_consumer_ledger_append(s.c, 1) == 0);
    stream_consumer_destroy(&s.c);

    /* second consumer: restores checkpoint 1; the producer sees a new epoch and resends
     * all 10 (duplicates of committed: dropped and re-acked) and the rest */
    s.c = consumer(ep, 2, HOOK_A, 4);
    CHECK(s.c != NULL);
    CHECK(stream_consumer_restore(s.c, state.data, state.len) == 0);
    CHECK(stream_consumer_ledger_open(s.c, cledger, 1) == 0);
    s.room = 8;
    pump(&p, 1, ss, 1, 300);
    struct stream_consumer_stats cs;
    stream_consumer_stats(s.c, &cs);
    CHECK_EQ_INT(cs.dup_committed, 10);
    CHECK_EQ_INT(s.delivered, 18);
    struct stream_producer_stats ps;
    stream_producer_stats(p, &ps);
    CHECK_EQ_INT(ps.committed, 10); /* the re-acks freed them */
    CHECK(ps.consumer_restarts == 1);
    /* dies again with 8 pending and a torn checkpoint-2 ledger line */
    CHECK(stream_consumer_ledger_append(s.c, 2) == 0);
    stream_consumer_destroy(&s.c);
    FILE *f = fopen(cledger, "a");
    fputs("cap-r 42 9", f);
    fclose(f);

    s.c = consumer(ep, 3, HOOK_A, 4);
    CHECK(stream_consumer_restore(s.c, state.data, state.len) == 0); /* checkpoint 1 again */
    CHECK(stream_consumer_ledger_open(s.c, cledger, 1) == 0);
    s.room = 1000;
    pump(&p, 1, ss, 1, 400);
    CHECK(stream_consumer_ledger_append(s.c, 2) == 0);
    CHECK(stream_consumer_commit(s.c) == 0);
    stream_producer_finish(p);
    pump(&p, 1, ss, 1, 100);
    CHECK(stream_producer_drained(p));
    stream_consumer_stats(s.c, &cs);
    CHECK(stream_consumer_all_done(s.c));
    CHECK_EQ_INT(cs.committed, 20);
    stream_producer_stats(p, &ps);
    CHECK_EQ_INT(ps.committed, 30);
    CHECK(ps.resent >= 18);
    stream_consumer_destroy(&s.c);
    stream_producer_destroy(&p);
    buf_fini(&state);

    /* the consumer ledger holds each seq exactly once; the producer's says committed */
    int seen[30] = {0};
    f = fopen(cledger, "r");
    char id[64];
    unsigned long long epn, seq, ck;
    int lines = 0;
    char line[512], hk[160], from[32], to[32];
    unsigned tokens;
    while (fgets(line, sizeof line, f) && sscanf(line, "%63s %llu %llu %llu %159s %u %31s %31s", id,
                                                 &epn, &seq, &ck, hk, &tokens, from, to) == 8) {
        CHECK(!strcmp(id, "cap-r") && epn == 42 && seq < 30);
        CHECK(!strcmp(from, "-") && !strcmp(to, "-")); /* no source cursor in these batches */
        if (seq < 30) seen[seq]++;
        lines++;
    }
    fclose(f);
    CHECK_EQ_INT(lines, 30);
    for (int i = 0; i < 30; i++) CHECK_EQ_INT(seen[i], 1);
    f = fopen(pledger, "r");
    char fate[32];
    int committed = 0;
    while (fscanf(f, "%llu %llu %31s", &epn, &seq, fate) == 3)
        committed += !strcmp(fate, "committed");
    fclose(f);
    CHECK_EQ_INT(committed, 30);
}

/* Same producer id, two epochs with overlapping seqs: distinct; same epoch: duplicate. */
static void test_dedupe_epochs(void)
{
    struct sink s = {.c = consumer("inproc://epochs", 1, NULL, 8), .room = 100};
    struct stream_producer *p1 = producer("cap-e", 1000, NULL, 16);
    CHECK(stream_producer_connect(p1, "inproc://epochs") == 0);
    struct sink *ss[1] = {&s};
    pump(&p1, 1, ss, 1, 60);
    Saeflow__ActivationBatch b;
    for (int i = 0; i < 3; i++) {
        fill_batch(&b, HOOK_B);
        CHECK(stream_producer_publish(p1, &b) == 0);
    }
    pump(&p1, 1, ss, 1, 100);
    CHECK_EQ_INT(s.delivered, 3);
    stream_producer_destroy(&p1); /* 3 unacked: its ledger would say so */
    struct stream_producer *p2 = producer("cap-e", 2000, NULL, 16);
    CHECK(stream_producer_connect(p2, "inproc://epochs") == 0);
    pump(&p2, 1, ss, 1, 60);
    for (int i = 0; i < 3; i++) {
        fill_batch(&b, HOOK_B);
        CHECK(stream_producer_publish(p2, &b) == 0);
    }
    pump(&p2, 1, ss, 1, 100);
    CHECK_EQ_INT(s.delivered, 6);
    for (int i = 0; i < 3; i++) CHECK(s.epoch_seen[i] == 2000);
    /* a replayed frame of epoch 2000 (same seq) is a duplicate */
    struct buf state;
    buf_init(&state, 1 << 16);
    CHECK(stream_consumer_state(s.c, &state) == 0);
    CHECK(strstr(state.data, "cap-e 1000 0-2\n") != NULL);
    CHECK(strstr(state.data, "cap-e 2000 0-2\n") != NULL);
    buf_fini(&state);
    struct stream_consumer_stats cs;
    stream_consumer_stats(s.c, &cs);
    CHECK_EQ_INT(cs.dup_pending, 0);
    /* the ack timeout makes p2 resend once done: duplicates of pending, dropped */
    stream_producer_finish(p2);
    pump(&p2, 1, ss, 1, 500);
    stream_consumer_stats(s.c, &cs);
    CHECK(cs.dup_pending >= 3);
    CHECK_EQ_INT(s.delivered, 6);
    stream_producer_destroy(&p2);
    stream_consumer_destroy(&s.c);
}

/* One producer, two consumers on different hooks: each batch goes where it is wanted. */
static void test_routing(void)
{
    struct sink a = {.c = consumer("inproc://ra", 1, HOOK_A, 8), .room = 100};
    struct sink bb = {.c = consumer("inproc://rb", 1, HOOK_B, 8), .room = 100};
    struct stream_producer *p = producer("cap-x", 5, NULL, 64);
    CHECK(stream_producer_connect(p, "inproc://ra") == 0);
    CHECK(stream_producer_connect(p, "inproc://rb") == 0);
    struct sink *ss[2] = {&a, &bb};
    pump(&p, 1, ss, 2, 80);
    CHECK(stream_producer_ready(p));
    Saeflow__ActivationBatch b;
    for (int i = 0; i < 10; i++) {
        fill_batch(&b, i % 2 ? HOOK_B : HOOK_A);
        CHECK(stream_producer_publish(p, &b) == 0);
        if (i == 4) {
            fill_batch(&b, "blocks.3.hook_mlp_out"); /* nobody wants it: seq 5 */
            CHECK(stream_producer_publish(p, &b) == 0);
        }
    }
    pump(&p, 1, ss, 2, 150);
    CHECK_EQ_INT(a.delivered, 5);
    CHECK_EQ_INT(bb.delivered, 5);
    for (int i = 0; i < 10; i++) {
        int seq = i < 5 ? i : i + 1; /* seq 5 went nowhere */
        CHECK_EQ_INT((i % 2 ? bb.counts : a.counts)[seq], 1);
    }
    CHECK(stream_consumer_commit(a.c) == 0);
    CHECK(stream_consumer_commit(bb.c) == 0);
    pump(&p, 1, ss, 2, 100);
    struct stream_producer_stats ps;
    stream_producer_stats(p, &ps);
    CHECK_EQ_INT(ps.committed, 10);
    CHECK_EQ_INT(ps.unrouted, 1);
    CHECK(stream_producer_drained(p));
    stream_producer_destroy(&p);
    stream_consumer_destroy(&a.c);
    stream_consumer_destroy(&bb.c);
}

static void test_state_text(void)
{
    struct stream_consumer *c = consumer("inproc://state", 1, NULL, 8);
    const char *good = "saeflow-stream-state 1\ncap-0 17 0-9 11-11 20-30\nother 1 5-5\n";
    CHECK(stream_consumer_restore(c, good, strlen(good)) == 0);
    struct buf out;
    buf_init(&out, 1 << 16);
    CHECK(stream_consumer_state(c, &out) == 0);
    CHECK(out.len == strlen(good) && !memcmp(out.data, good, out.len));
    buf_fini(&out);
    stream_consumer_destroy(&c);
    const char *bad[] = {
        "saeflow-source-state 2\n",
        "saeflow-source-state 1\ncap-s " HOOK_B " src-x F 0 60 0 0 0 0 6\n",
        "saeflow-source-state 1\ncap-s " HOOK_B " src-x F 0 60 0 0 0 0 6 54",
        "saeflow-source-state 1\ncap s " HOOK_B " src-x F 0 60 0 0 0 0 6 54\n",
        "saeflow-source-state 1\ncap-s " HOOK_B " src-x F 0 60 0 0 0 0 6 -54\n",
        "saeflow-source-state 1\ncap-s " HOOK_B " src-x 60 0 0 0 0 6 54 1\n",
        "saeflow-source-state 1\ncap-s " HOOK_B " src-x F 5 60 0 0 0 0 6 54\n",
        "saeflow-source-state 1\ncap-s " HOOK_B " src-x A 60 60 0 0 0 0 6 54\n",
        "saeflow-source-state 1\ncap-s h src-x F 0 1 0 0 0 0 6 54\ncap-s h src-x F 0 2 0 0 0 0 6 "
        "54\n",
        "saeflow-source-state 1\ncap-s h src-x F 0 1 0 0 0 0 6 54\ncap-s h src-y A 5 9 0 0 0 0 6 "
        "54\n",
    };
    for (size_t i = 0; i < SF_ARRAY_LEN(bad); i++) {
        c = consumer("inproc://state", 1, NULL, 8);
        CHECK_MSG(stream_consumer_restore(c, bad[i], strlen(bad[i])) == SF_EFORMAT, "case %zu", i);
        stream_consumer_destroy(&c);
    }
}

/* Source cursors: the committed cursor of (producer id, hook) survives the producer's
 * epochs and the consumer's restarts; a new epoch is told where to resume only once
 * the older epoch's pending batches are committed; batches at or before the cursor
 * are duplicates (acked, not delivered); another source is rejected; the ledger
 * holds each batch's source range. */
static void publish_src(struct stream_producer *p, const char *src, uint64_t from, uint64_t to)
{
    Saeflow__ActivationBatch b;
    fill_batch(&b, HOOK_B);
    struct stream_cursor end = {0};
    snprintf(end.source_id, sizeof end.source_id, "%s", src);
    end.position = to;
    end.doc_id = to / 10;
    end.captured = to - to / 10;
    Saeflow__SourceCursor pb;
    stream_cursor_to_pb(&end, &pb);
    b.source_from = from;
    b.source_end = &pb;
    CHECK(stream_producer_publish(p, &b) == 0);
}

static bool pump_until_ready(struct stream_producer *p, struct sink *s, int ms)
{
    struct sink *ss[1] = {s};
    for (int t = 0; t < ms / 20; t++) {
        pump(&p, 1, ss, 1, 20);
        if (stream_producer_ready(p)) return true;
    }
    return false;
}

static void test_source_resume(void)
{
    char ledger[300];
    snprintf(ledger, sizeof ledger, "%s/src.ledger", tmpdir);
    struct sink s = {.c = consumer("inproc://src", 1, HOOK_B, 8), .room = 100};
    CHECK(stream_consumer_ledger_open(s.c, ledger, 0) == 0);
    struct sink *ss[1] = {&s};
    const char *hooks[1] = {HOOK_B};
    struct stream_cursor rp;
    struct stream_producer *p1 = producer("cap-s", 1, NULL, 16);
    CHECK(stream_producer_connect(p1, "inproc://src") == 0);
    CHECK(pump_until_ready(p1, &s, 1000));
    CHECK_EQ_INT(stream_producer_resume_point(p1, hooks, 1, "src-x", &rp), SF_NOTFOUND);
    for (uint64_t i = 0; i < 4; i++) publish_src(p1, "src-x", 10 * i, 10 * i + 10);
    pump(&p1, 1, ss, 1, 150);
    CHECK_EQ_INT(s.delivered, 4);
    CHECK(stream_consumer_ledger_append(s.c, 1) == 0 && stream_consumer_commit(s.c) == 0);
    publish_src(p1, "src-x", 40, 50);
    publish_src(p1, "src-x", 50, 60);
    pump(&p1, 1, ss, 1, 150);
    CHECK_EQ_INT(s.delivered, 6);
    stream_producer_destroy(&p1); /* killed with two batches pending at the consumer */
    struct buf st;
    buf_init(&st, 1 << 16);
    CHECK(stream_consumer_source_state(s.c, &st) == 0);
    CHECK(st.data && strstr(st.data, "cap-s " HOOK_B " src-x F 0 60 0 0 0 0 6 54\n") != NULL);

    struct stream_producer *p2 = producer("cap-s", 2, NULL, 16);
    CHECK(stream_producer_connect(p2, "inproc://src") == 0);
    CHECK(!pump_until_ready(p2, &s, 200)); /* waits for epoch 1's pending to commit */
    CHECK(stream_consumer_commit_wanted(s.c));
    CHECK(stream_consumer_ledger_append(s.c, 2) == 0 && stream_consumer_commit(s.c) == 0);
    CHECK(pump_until_ready(p2, &s, 1000));
    CHECK_EQ_INT(stream_producer_resume_point(p2, hooks, 1, "src-x", &rp), 0);
    CHECK(rp.position == 60 && rp.captured == 54 && rp.doc_id == 6);
    CHECK_EQ_INT(stream_producer_resume_point(p2, hooks, 1, "src-other", &rp), SF_ESTATE);
    publish_src(p2, "src-x", 50, 60); /* read again: a duplicate, acked */
    publish_src(p2, "src-x", 60, 70);
    publish_src(p2, "src-y", 70, 80); /* another source: rejected */
    pump(&p2, 1, ss, 1, 200);
    CHECK_EQ_INT(s.delivered, 7);
    struct stream_consumer_stats cs;
    stream_consumer_stats(s.c, &cs);
    CHECK_EQ_INT(cs.dup_source, 1);
    CHECK_EQ_INT(cs.source_mismatch, 1);
    CHECK(stream_consumer_ledger_append(s.c, 3) == 0 && stream_consumer_commit(s.c) == 0);
    pump(&p2, 1, ss, 1, 100);
    struct stream_producer_stats ps;
    stream_producer_stats(p2, &ps);
    CHECK_EQ_INT(ps.committed, 2);
    CHECK_EQ_INT(ps.rejected, 1);
    stream_producer_destroy(&p2);
    buf_reset(&st);
    CHECK(stream_consumer_source_state(s.c, &st) == 0);
    stream_consumer_destroy(&s.c);

    /* the ledger: every batch once, with its source range; together [0, 70) once */
    FILE *f = fopen(ledger, "r");
    CHECK(f != NULL);
    char line[512], id[64], hk[160], from[32], to[32];
    unsigned long long ep, seq, ck;
    unsigned tok;
    uint64_t covered = 0;
    int lines = 0;
    while (f && fgets(line, sizeof line, f) &&
           sscanf(line, "%63s %llu %llu %llu %159s %u %31s %31s", id, &ep, &seq, &ck, hk, &tok,
                  from, to) == 8) {
        covered += strtoull(to, NULL, 10) - strtoull(from, NULL, 10);
        lines++;
    }
    if (f) fclose(f);
    CHECK_EQ_INT(lines, 7);
    CHECK_EQ_INT(covered, 70);

    /* a restarted consumer restores the cursor and tells the next epoch */
    struct sink s2 = {.c = consumer("inproc://src2", 2, HOOK_B, 8), .room = 100};
    CHECK(stream_consumer_source_restore(s2.c, st.data, st.len) == 0);
    struct stream_producer *p3 = producer("cap-s", 3, NULL, 16);
    CHECK(stream_producer_connect(p3, "inproc://src2") == 0);
    CHECK(pump_until_ready(p3, &s2, 1000));
    CHECK_EQ_INT(stream_producer_resume_point(p3, hooks, 1, "src-x", &rp), 0);
    CHECK(rp.position == 70);
    stream_producer_destroy(&p3);
    /* a hole: [10, 20) committed before [0, 10) (what a batch lost with a dying trainer
     * and re-sent later looks like): [0, 10) is still taken, then the frontier is 20 */
    struct stream_producer *p4 = producer("cap-h2", 1, NULL, 16);
    CHECK(stream_producer_connect(p4, "inproc://src2") == 0);
    CHECK(pump_until_ready(p4, &s2, 1000));
    size_t before = s2.delivered;
    publish_src(p4, "src-x", 10, 20);
    pump(&p4, 1, (struct sink *[]){&s2}, 1, 100);
    CHECK(stream_consumer_ledger_append(s2.c, 1) == 0 && stream_consumer_commit(s2.c) == 0);
    publish_src(p4, "src-x", 0, 10);
    pump(&p4, 1, (struct sink *[]){&s2}, 1, 100);
    CHECK_EQ_INT(s2.delivered - before, 2);
    CHECK(stream_consumer_ledger_append(s2.c, 2) == 0 && stream_consumer_commit(s2.c) == 0);
    stream_producer_destroy(&p4);
    struct stream_producer *p5 = producer("cap-h2", 2, NULL, 16);
    CHECK(stream_producer_connect(p5, "inproc://src2") == 0);
    CHECK(pump_until_ready(p5, &s2, 1000));
    CHECK_EQ_INT(stream_producer_resume_point(p5, hooks, 1, "src-x", &rp), 0);
    CHECK(rp.position == 20);
    stream_producer_destroy(&p5);
    stream_consumer_destroy(&s2.c);
    /* malformed source states are refused */
    struct stream_consumer *c3 = consumer("inproc://src3", 3, HOOK_B, 8);
    const char *bad[] = {
        "saeflow-source-state 2\n",
        "saeflow-source-state 1\ncap-s " HOOK_B " src-x 60 0 0 0 0 6\n",
        "saeflow-source-state 1\ncap-s " HOOK_B " src-x 60 0 0 0 0 6 54",
        "saeflow-source-state 1\ncap s " HOOK_B " src-x 60 0 0 0 0 6 54\n",
        "saeflow-source-state 1\ncap-s " HOOK_B " src-x 60 0 0 0 0 6 -54\n",
        "saeflow-source-state 1\ncap-s h src-x 1 0 0 0 0 6 54\ncap-s h src-x 2 0 0 0 0 6 54\n",
    };
    for (size_t i = 0; i < SF_ARRAY_LEN(bad); i++)
        CHECK_EQ_INT(stream_consumer_source_restore(c3, bad[i], strlen(bad[i])), SF_EFORMAT);
    const char *ok = "saeflow-source-state 1\n";
    CHECK_EQ_INT(stream_consumer_source_restore(c3, ok, strlen(ok)), 0);
    /* a frontier at 10 with batches committed beyond a hole [10, 20): the state says so,
     * and once [10, 20) is committed the frontier jumps over them */
    const char *holes = "saeflow-source-state 1\n"
                        "cap-h " HOOK_B " src-x F 0 10 0 0 0 0 1 9\n"
                        "cap-h " HOOK_B " src-x A 30 40 0 0 0 0 4 36\n"
                        "cap-h " HOOK_B " src-x A 20 30 0 0 0 0 3 27\n";
    CHECK_EQ_INT(stream_consumer_source_restore(c3, holes, strlen(holes)), 0);
    struct buf hs;
    buf_init(&hs, 1 << 16);
    CHECK(stream_consumer_source_state(c3, &hs) == 0);
    CHECK(hs.data && strstr(hs.data, "src-x F 0 10 ") && strstr(hs.data, "src-x A 20 30 ") &&
          strstr(hs.data, "src-x A 30 40 ") && strstr(hs.data, "A 20") < strstr(hs.data, "A 30"));
    buf_fini(&hs);
    stream_consumer_destroy(&c3);
    buf_fini(&st);
}

int main(void)
{
    log_init("test_stream", LOG_LOGFMT, LOG_WARN);
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_stream.XXXXXX");
    if (!mkdtemp(tmpdir)) return 1;
    for (size_t i = 0; i < SF_ARRAY_LEN(acts); i++) acts[i] = (float)i * 0.5f;
    test_ranges();
    test_credit();
    test_restart_resend();
    test_dedupe_epochs();
    test_routing();
    test_state_text();
    test_source_resume();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_exit();
}

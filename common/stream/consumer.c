/* consumer: the receiving side of the stream protocol (stream.h): one ROUTER socket,
 * per (producer, epoch) committed and pending seq sets, credit, heartbeats, acks at
 * commit, the checkpointable state text and the consumer ledger. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream/stream.h"

#define STATE_MAGIC       "saeflow-stream-state 1\n"
#define SOURCE_MAGIC      "saeflow-source-state 1\n"
#define MAX_KEYS          4096
#define MAX_AHEAD         65536 /* committed batches beyond a hole, per key */
#define MAX_PRODUCERS     4096
#define MAX_EPOCHS_PER_ID 16 /* older epochs of one producer id are forgotten */
#define LEDGER_MAX_BYTES  (1u << 30)

/* A committed batch beyond the frontier (a batch before it is not committed yet). */
struct ahead {
    uint64_t from;
    struct stream_cursor end;
};

/* The committed source of one (producer id, hook), across epochs: the frontier (every
 * stream token before done.position is committed, from position 0) and the batches
 * committed beyond a hole, folded in once the hole is filled. */
struct ckey {
    char producer[WIRE_MAX_ID_LEN + 1];
    char hook[WIRE_MAX_NAME_LEN + 1];
    struct stream_cursor done; /* valid when has_done */
    bool has_done;
    struct ahead *ah; /* sorted by from */
    size_t n_ah, cap_ah;
};

/* One delivered, not yet committed batch (for the ledger and the cursors). */
struct precord {
    uint64_t seq;
    uint32_t n_tokens;
    int32_t key; /* index into keys; -1 = no source cursor */
    char hook[WIRE_MAX_NAME_LEN + 1];
    uint64_t from;
    struct stream_cursor end;
};

struct cprod {
    char id[WIRE_MAX_ID_LEN + 1];
    uint64_t epoch;
    uint8_t peer[WIRE_MAX_PEER_LEN];
    size_t peer_len;
    bool heard; /* heard in this process (has a peer) */
    bool live;  /* heard within peer_timeout */
    bool greeted;
    bool done, blocked;
    uint32_t reported_credit;
    struct stream_ranges committed, pending;
    uint64_t outstanding;
    int64_t last_heard_ns, last_grant_ns, last_batch_ns;
    uint64_t grant_seq;
    struct precord *recs; /* pending batches, in delivery order */
    size_t n_recs, cap_recs;
    bool resume_due; /* greeted, Resume not yet sent */
};

struct stream_consumer {
    char id[WIRE_MAX_ID_LEN + 1];
    uint64_t epoch;
    struct stream_consumer_opts o;
    char **hooks;
    size_t n_hooks;
    struct wire_sock *sock;
    struct cprod *prods;
    size_t n_prods, cap_prods;
    int64_t next_hb_ns;
    uint64_t hb_seq;
    FILE *ledger;
    struct stream_consumer_stats st;
    struct ckey *keys;
    size_t n_keys, cap_keys;
};

void stream_cursor_to_pb(const struct stream_cursor *c, Saeflow__SourceCursor *out)
{
    saeflow__source_cursor__init(out);
    out->source_id = (char *)c->source_id;
    out->position = c->position;
    out->source_epoch = c->source_epoch;
    out->file_index = c->file_index;
    out->byte_offset = c->byte_offset;
    out->doc_token = c->doc_token;
    out->doc_id = c->doc_id;
    out->captured = c->captured;
}

int stream_cursor_from_pb(const Saeflow__SourceCursor *p, struct stream_cursor *out)
{
    memset(out, 0, sizeof *out);
    size_t n = p->source_id ? strlen(p->source_id) : 0;
    if (n == 0 || n > WIRE_MAX_ID_LEN) return SF_EINVAL;
    memcpy(out->source_id, p->source_id, n + 1);
    out->position = p->position;
    out->source_epoch = p->source_epoch;
    out->file_index = p->file_index;
    out->byte_offset = p->byte_offset;
    out->doc_token = p->doc_token;
    out->doc_id = p->doc_id;
    out->captured = p->captured;
    return 0;
}

/* The batch [from, end) is committed: advances the frontier or joins the batches ahead. */
static int key_commit(struct ckey *k, uint64_t from, const struct stream_cursor *end)
{
    uint64_t f = k->has_done ? k->done.position : 0;
    if (k->has_done && end->position <= f) return 0;
    if (from <= f) {
        k->done = *end;
        k->has_done = true;
        /* fold in what was waiting beyond the hole just filled (sorted by from) */
        size_t w = 0;
        for (size_t i = 0; i < k->n_ah; i++) {
            if (k->ah[i].from <= k->done.position) {
                if (k->ah[i].end.position > k->done.position) k->done = k->ah[i].end;
            } else {
                k->ah[w++] = k->ah[i];
            }
        }
        k->n_ah = w;
        return 0;
    }
    size_t at = 0;
    while (at < k->n_ah && k->ah[at].from < from) at++;
    if (at < k->n_ah && k->ah[at].from == from && k->ah[at].end.position == end->position) return 0;
    if (k->n_ah == k->cap_ah) {
        size_t cap = k->cap_ah ? k->cap_ah * 2 : 4;
        if (cap > MAX_AHEAD) return SF_ENOMEM;
        void *na = realloc(k->ah, cap * sizeof *k->ah);
        if (!na) return SF_ENOMEM;
        k->ah = na;
        k->cap_ah = cap;
    }
    memmove(&k->ah[at + 1], &k->ah[at], (k->n_ah - at) * sizeof *k->ah);
    k->ah[at].from = from;
    k->ah[at].end = *end;
    k->n_ah++;
    return 0;
}

/* True when [from, to) is committed already (within the frontier or one batch ahead). */
static bool key_covers(const struct ckey *k, uint64_t from, uint64_t to)
{
    if (k->has_done && to <= k->done.position) return true;
    for (size_t i = 0; i < k->n_ah; i++)
        if (k->ah[i].from <= from && to <= k->ah[i].end.position) return true;
    return false;
}

/* The source id committed for the key, or NULL. */
static const char *key_source(const struct ckey *k)
{
    return k->has_done ? k->done.source_id : k->n_ah ? k->ah[0].end.source_id : NULL;
}

static int key_find(struct stream_consumer *c, const char *producer, const char *hook, bool create)
{
    for (size_t i = 0; i < c->n_keys; i++)
        if (!strcmp(c->keys[i].producer, producer) && !strcmp(c->keys[i].hook, hook)) return (int)i;
    if (!create || c->n_keys >= MAX_KEYS || strlen(producer) > WIRE_MAX_ID_LEN ||
        strlen(hook) > WIRE_MAX_NAME_LEN)
        return -1;
    if (c->n_keys == c->cap_keys) {
        size_t cap = c->cap_keys ? c->cap_keys * 2 : 8;
        void *nk = realloc(c->keys, cap * sizeof *c->keys);
        if (!nk) return -1;
        c->keys = nk;
        c->cap_keys = cap;
    }
    struct ckey *k = &c->keys[c->n_keys];
    memset(k, 0, sizeof *k);
    memcpy(k->producer, producer, strlen(producer) + 1);
    memcpy(k->hook, hook, strlen(hook) + 1);
    return (int)c->n_keys++;
}

void stream_consumer_opts_default(struct stream_consumer_opts *o)
{
    memset(o, 0, sizeof *o);
    o->consumer_id = "train-0";
    o->credit_window = 8;
    o->heartbeat_ms = 250;
    o->peer_timeout_ms = 3000;
}

void stream_delivery_fini(struct stream_delivery *d)
{
    if (d) wire_msg_fini(&d->msg);
}

struct stream_consumer *stream_consumer_new(const struct stream_consumer_opts *o)
{
    size_t idlen = o->consumer_id ? strlen(o->consumer_id) : 0;
    if (idlen == 0 || idlen > WIRE_MAX_ID_LEN || !o->endpoint || o->n_hooks > STREAM_MAX_HOOKS) {
        log_error("stream_consumer_new", "err=bad_options");
        return NULL;
    }
    struct stream_consumer *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    memcpy(c->id, o->consumer_id, idlen + 1);
    c->o = *o;
    if (c->o.credit_window == 0) c->o.credit_window = 8;
    if (c->o.heartbeat_ms <= 0) c->o.heartbeat_ms = 250;
    if (c->o.peer_timeout_ms <= 0) c->o.peer_timeout_ms = 3000;
    c->epoch = o->epoch ? o->epoch : (uint64_t)time_wall_ms();
    if (o->n_hooks) {
        c->hooks = calloc(o->n_hooks, sizeof *c->hooks);
        if (!c->hooks) goto fail;
        for (size_t i = 0; i < o->n_hooks; i++) {
            c->hooks[i] = strdup(o->hooks[i]);
            if (!c->hooks[i]) goto fail;
            c->n_hooks++;
        }
    }
    c->o.hooks = NULL;
    c->o.endpoint = NULL;
    c->o.consumer_id = c->id;
    struct wire_opts wo;
    wire_opts_default(&wo);
    wo.send_timeout_ms = 0;
    wo.hwm = 1000;
    if (o->max_msg_bytes) {
        wo.max_msg_bytes = o->max_msg_bytes;
        if (wo.alloc_budget < o->max_msg_bytes + (8u << 20))
            wo.alloc_budget = o->max_msg_bytes + (24u << 20);
    }
    c->sock = wire_sock_new(WIRE_ROUTER, o->endpoint, WIRE_BIND, &wo);
    if (!c->sock) goto fail;
    log_info("stream_consumer", "consumer=%s epoch=%llu endpoint=%s hooks=%zu", c->id,
             (unsigned long long)c->epoch, o->endpoint, c->n_hooks);
    return c;
fail:
    stream_consumer_destroy(&c);
    return NULL;
}

void stream_consumer_destroy(struct stream_consumer **cp)
{
    if (!cp || !*cp) return;
    struct stream_consumer *c = *cp;
    if (c->ledger) {
        fflush(c->ledger);
        fsync(fileno(c->ledger));
        fclose(c->ledger);
    }
    wire_sock_destroy(&c->sock);
    for (size_t i = 0; i < c->n_prods; i++) {
        stream_ranges_fini(&c->prods[i].committed);
        stream_ranges_fini(&c->prods[i].pending);
        free(c->prods[i].recs);
    }
    free(c->prods);
    for (size_t i = 0; i < c->n_keys; i++) free(c->keys[i].ah);
    free(c->keys);
    for (size_t i = 0; i < c->n_hooks; i++) free(c->hooks[i]);
    free(c->hooks);
    free(c);
    *cp = NULL;
}

uint64_t stream_consumer_epoch(const struct stream_consumer *c)
{
    return c->epoch;
}

const struct wire_sock *stream_consumer_sock(const struct stream_consumer *c)
{
    return c->sock;
}

static struct cprod *prod_find(struct stream_consumer *c, const char *id, uint64_t epoch,
                               bool create)
{
    for (size_t i = 0; i < c->n_prods; i++)
        if (c->prods[i].epoch == epoch && !strcmp(c->prods[i].id, id)) return &c->prods[i];
    if (!create || strlen(id) > WIRE_MAX_ID_LEN) return NULL;
    /* forget the oldest epoch of this id when it has too many (bounded state) */
    size_t same = 0, oldest = SIZE_MAX;
    for (size_t i = 0; i < c->n_prods; i++) {
        if (strcmp(c->prods[i].id, id) != 0) continue;
        same++;
        if (oldest == SIZE_MAX || c->prods[i].epoch < c->prods[oldest].epoch) oldest = i;
    }
    if (same >= MAX_EPOCHS_PER_ID && !c->prods[oldest].pending.n) {
        stream_ranges_fini(&c->prods[oldest].committed);
        stream_ranges_fini(&c->prods[oldest].pending);
        free(c->prods[oldest].recs);
        c->prods[oldest] = c->prods[--c->n_prods];
    }
    if (c->n_prods >= MAX_PRODUCERS) return NULL;
    if (c->n_prods == c->cap_prods) {
        size_t cap = c->cap_prods ? c->cap_prods * 2 : 8;
        void *np = realloc(c->prods, cap * sizeof *c->prods);
        if (!np) return NULL;
        c->prods = np;
        c->cap_prods = cap;
    }
    struct cprod *p = &c->prods[c->n_prods++];
    memset(p, 0, sizeof *p);
    memcpy(p->id, id, strlen(id) + 1);
    p->epoch = epoch;
    stream_ranges_init(&p->committed);
    stream_ranges_init(&p->pending);
    return p;
}

static int send_to(struct stream_consumer *c, struct cprod *p, enum wire_kind kind, void *body)
{
    if (!p->peer_len) return SF_NOTFOUND;
    struct wire_msg m = {.kind = kind, .body = body};
    memcpy(m.peer, p->peer, p->peer_len);
    m.peer_len = p->peer_len;
    return wire_send(c->sock, &m, WIRE_DONTWAIT);
}

static void send_heartbeat(struct stream_consumer *c, struct cprod *p)
{
    Saeflow__Heartbeat h = SAEFLOW__HEARTBEAT__INIT;
    h.sender_id = c->id;
    h.role = "train";
    h.epoch = c->epoch;
    h.seq = c->hb_seq++;
    h.wall_unix_ms = time_wall_ms();
    h.status = "ok";
    (void)send_to(c, p, WIRE_HEARTBEAT, &h);
}

static void send_grant(struct stream_consumer *c, struct cprod *p, const char *hook,
                       uint32_t credits)
{
    Saeflow__CreditGrant g = SAEFLOW__CREDIT_GRANT__INIT;
    g.consumer_id = c->id;
    g.producer_id = p->id;
    g.hook_name = (char *)(hook ? hook : "");
    g.credits = credits;
    g.grant_seq = ++p->grant_seq;
    if (send_to(c, p, WIRE_CREDIT, &g) == 0 && credits) {
        p->outstanding += credits;
        p->last_grant_ns = time_now_ns();
        c->st.credit_granted += credits;
    }
}

/* Acks every seq of `set` with one message (chunks of WIRE_MAX_ACK_RANGES ranges). */
static void send_ack(struct stream_consumer *c, struct cprod *p, const struct stream_ranges *set,
                     Saeflow__AckStatus status)
{
    for (size_t off = 0; off < set->n; off += WIRE_MAX_ACK_RANGES) {
        size_t n = SF_MIN(set->n - off, (size_t)WIRE_MAX_ACK_RANGES);
        Saeflow__SeqRange *rs = calloc(n, sizeof *rs);
        Saeflow__SeqRange **rp = calloc(n, sizeof *rp);
        if (!rs || !rp) {
            free(rs);
            free(rp);
            return;
        }
        for (size_t i = 0; i < n; i++) {
            saeflow__seq_range__init(&rs[i]);
            rs[i].first = set->r[off + i][0];
            rs[i].last = set->r[off + i][1];
            rp[i] = &rs[i];
        }
        Saeflow__Ack a = SAEFLOW__ACK__INIT;
        a.consumer_id = c->id;
        a.producer_id = p->id;
        a.producer_epoch = p->epoch;
        a.status = status;
        a.n_ranges = n;
        a.ranges = rp;
        (void)send_to(c, p, WIRE_ACK, &a);
        free(rs);
        free(rp);
    }
}

static void ack_one(struct stream_consumer *c, struct cprod *p, uint64_t seq,
                    Saeflow__AckStatus status)
{
    uint64_t r[1][2] = {{seq, seq}};
    struct stream_ranges one = {.r = r, .n = 1, .cap = 1};
    send_ack(c, p, &one, status);
}

static bool hook_wanted(const struct stream_consumer *c, const char *hook);

/* A new epoch's Resume waits while an older epoch of the same producer id has pending
 * batches: the cursor must cover them once they are committed. */
static bool resume_blocked(const struct stream_consumer *c, const struct cprod *p)
{
    for (size_t i = 0; i < c->n_prods; i++) {
        const struct cprod *q = &c->prods[i];
        if (q != p && q->n_recs && !strcmp(q->id, p->id)) return true;
    }
    return false;
}

static void try_resume(struct stream_consumer *c, struct cprod *p)
{
    if (!p->resume_due || !p->peer_len || resume_blocked(c, p)) return;
    Saeflow__HookCursor hc[WIRE_MAX_RESUME_HOOKS], *hp[WIRE_MAX_RESUME_HOOKS];
    Saeflow__SourceCursor sc[WIRE_MAX_RESUME_HOOKS];
    size_t n = 0;
    for (size_t i = 0; i < c->n_keys && n < WIRE_MAX_RESUME_HOOKS; i++) {
        struct ckey *k = &c->keys[i];
        if (!k->has_done || strcmp(k->producer, p->id) != 0 || !hook_wanted(c, k->hook)) continue;
        saeflow__hook_cursor__init(&hc[n]);
        stream_cursor_to_pb(&k->done, &sc[n]);
        hc[n].hook_name = k->hook;
        hc[n].cursor = &sc[n];
        hp[n] = &hc[n];
        n++;
    }
    Saeflow__Resume r = SAEFLOW__RESUME__INIT;
    r.consumer_id = c->id;
    r.producer_id = p->id;
    r.n_hooks = n;
    r.hooks = n ? hp : NULL;
    if (send_to(c, p, WIRE_RESUME, &r) == 0) {
        p->resume_due = false;
        c->st.resumes_sent++;
        for (size_t i = 0; i < n; i++)
            log_info("stream_resume_sent",
                     "consumer=%s producer=%s epoch=%llu hook=%s position=%llu "
                     "captured=%llu",
                     c->id, p->id, (unsigned long long)p->epoch, hc[i].hook_name,
                     (unsigned long long)sc[i].position, (unsigned long long)sc[i].captured);
    }
}

static void greet(struct stream_consumer *c, struct cprod *p)
{
    send_heartbeat(c, p);
    if (c->n_hooks == 0) send_grant(c, p, "", 0);
    for (size_t i = 0; i < c->n_hooks; i++) send_grant(c, p, c->hooks[i], 0);
    p->greeted = true;
    p->resume_due = true;
    try_resume(c, p);
}

static void note_peer(struct stream_consumer *c, struct cprod *p, const struct wire_msg *m)
{
    int64_t now = time_now_ns();
    bool changed = p->peer_len != m->peer_len || memcmp(p->peer, m->peer, m->peer_len) != 0;
    if (changed) {
        memcpy(p->peer, m->peer, m->peer_len);
        p->peer_len = m->peer_len;
    }
    if (!p->live && p->heard)
        log_info("stream_producer_back", "consumer=%s producer=%s epoch=%llu", c->id, p->id,
                 (unsigned long long)p->epoch);
    if (!p->live) p->outstanding = 0; /* what it had is unknown: regrant afresh */
    p->heard = true;
    p->live = true;
    p->last_heard_ns = now;
    if (!p->greeted || changed) greet(c, p);
}

static bool hook_wanted(const struct stream_consumer *c, const char *hook)
{
    if (c->n_hooks == 0) return true;
    for (size_t i = 0; i < c->n_hooks; i++)
        if (!strcmp(c->hooks[i], hook)) return true;
    return false;
}

/* A batch: returns 1 when it is new and must be delivered, else 0. */
static int handle_batch(struct stream_consumer *c, const struct wire_msg *m)
{
    const Saeflow__ActivationBatch *b = m->batch;
    struct cprod *p = prod_find(c, b->producer_id, b->producer_epoch, true);
    if (!p) return 0;
    note_peer(c, p, m);
    p->last_batch_ns = time_now_ns();
    if (p->outstanding)
        p->outstanding--;
    else
        c->st.over_credit++;
    if (stream_ranges_has(&p->committed, b->seq)) {
        c->st.dup_committed++;
        ack_one(c, p, b->seq, SAEFLOW__ACK_STATUS__ACK_STATUS_TRAINED);
        return 0;
    }
    if (stream_ranges_has(&p->pending, b->seq)) {
        c->st.dup_pending++;
        return 0;
    }
    if (!hook_wanted(c, b->hook_name)) {
        c->st.unwanted++;
        ack_one(c, p, b->seq, SAEFLOW__ACK_STATUS__ACK_STATUS_REJECTED);
        return 0;
    }
    int ki = -1;
    struct stream_cursor end;
    if (b->source_end) {
        if (stream_cursor_from_pb(b->source_end, &end) < 0 ||
            (ki = key_find(c, b->producer_id, b->hook_name, true)) < 0)
            return 0; /* validated by wire; no room for the key: resent later */
        struct ckey *k = &c->keys[ki];
        const char *known = key_source(k);
        if (known && strcmp(known, end.source_id) != 0) {
            c->st.source_mismatch++;
            log_warn("stream_source_mismatch",
                     "consumer=%s producer=%s hook=%s source=%s committed_source=%s seq=%llu",
                     c->id, p->id, k->hook, end.source_id, known, (unsigned long long)b->seq);
            ack_one(c, p, b->seq, SAEFLOW__ACK_STATUS__ACK_STATUS_REJECTED);
            return 0;
        }
        if (key_covers(k, b->source_from, end.position)) {
            /* already committed (an earlier epoch read it): the producer read it again */
            c->st.dup_source++;
            (void)stream_ranges_add(&p->committed, b->seq);
            ack_one(c, p, b->seq, SAEFLOW__ACK_STATUS__ACK_STATUS_TRAINED);
            return 0;
        }
        for (size_t i = 0; i < c->n_prods; i++) {
            const struct cprod *q = &c->prods[i];
            if (q == p || strcmp(q->id, p->id) != 0) continue;
            for (size_t j = 0; j < q->n_recs; j++)
                if (q->recs[j].key == ki && q->recs[j].from <= b->source_from &&
                    end.position <= q->recs[j].end.position) {
                    c->st.dup_pending++; /* an older epoch's pending copy: acked later */
                    return 0;
                }
        }
        if (k->has_done && b->source_from < k->done.position) {
            c->st.source_overlap++;
            log_warn("stream_source_overlap",
                     "consumer=%s producer=%s hook=%s from=%llu to=%llu "
                     "committed=%llu",
                     c->id, p->id, k->hook, (unsigned long long)b->source_from,
                     (unsigned long long)end.position, (unsigned long long)k->done.position);
        }
    }
    if (p->n_recs == p->cap_recs) {
        size_t cap = p->cap_recs ? p->cap_recs * 2 : 16;
        void *nr = realloc(p->recs, cap * sizeof *p->recs);
        if (!nr) return 0; /* OOM: not taken, resent later */
        p->recs = nr;
        p->cap_recs = cap;
    }
    if (stream_ranges_add(&p->pending, b->seq) < 0) return 0; /* OOM: not taken, resent later */
    struct precord *r = &p->recs[p->n_recs++];
    memset(r, 0, sizeof *r);
    r->seq = b->seq;
    r->n_tokens = b->n_tokens;
    r->key = ki;
    snprintf(r->hook, sizeof r->hook, "%s", b->hook_name);
    if (ki >= 0) {
        r->from = b->source_from;
        r->end = end;
    }
    c->st.delivered++;
    return 1;
}

static void handle_heartbeat(struct stream_consumer *c, const struct wire_msg *m)
{
    const Saeflow__Heartbeat *h = m->heartbeat;
    struct cprod *p = prod_find(c, h->sender_id, h->epoch, true);
    if (!p) return;
    note_peer(c, p, m);
    p->done = h->status && !strcmp(h->status, "done");
    p->blocked = h->status && !strcmp(h->status, "blocked");
    p->reported_credit = h->credits_available;
    int64_t now = time_now_ns(), quiet = 2 * (int64_t)c->o.heartbeat_ms * 1000000;
    if (h->credits_available == 0 && p->outstanding > 0 && now - p->last_grant_ns > quiet &&
        now - p->last_batch_ns > quiet) {
        /* the producer has no credit but we count some outstanding: a grant was lost */
        c->st.credit_resyncs++;
        log_info("stream_credit_resync", "consumer=%s producer=%s outstanding=%llu", c->id, p->id,
                 (unsigned long long)p->outstanding);
        p->outstanding = 0;
    }
}

static void tick(struct stream_consumer *c)
{
    for (size_t i = 0; i < c->n_prods; i++)
        if (c->prods[i].resume_due && c->prods[i].live) try_resume(c, &c->prods[i]);
    int64_t now = time_now_ns();
    bool hb = now >= c->next_hb_ns;
    if (hb) c->next_hb_ns = now + (int64_t)c->o.heartbeat_ms * 1000000;
    for (size_t i = 0; i < c->n_prods; i++) {
        struct cprod *p = &c->prods[i];
        if (!p->live) continue;
        if (now - p->last_heard_ns > (int64_t)c->o.peer_timeout_ms * 1000000) {
            p->live = false;
            p->outstanding = 0;
            c->st.producer_timeouts++;
            log_warn("stream_producer_silent", "consumer=%s producer=%s epoch=%llu", c->id, p->id,
                     (unsigned long long)p->epoch);
            continue;
        }
        if (hb) send_heartbeat(c, p);
    }
}

int stream_consumer_recv(struct stream_consumer *c, struct stream_delivery *d, int timeout_ms)
{
    wire_msg_fini(&d->msg);
    tick(c);
    int wait = timeout_ms;
    for (int n = 0; n < 512; n++) {
        int rc = wire_recv(c->sock, &d->msg, wait);
        wait = 0;
        if (rc == SF_AGAIN) break;
        if (rc == WIRE_REJECTED) {
            c->st.rejected_frames++;
            continue;
        }
        if (rc < 0) return rc;
        switch (d->msg.kind) {
        case WIRE_BATCH:
            if (handle_batch(c, &d->msg)) return 0;
            break;
        case WIRE_HEARTBEAT:
            handle_heartbeat(c, &d->msg);
            break;
        default:
            c->st.other_msgs++;
            break;
        }
    }
    wire_msg_fini(&d->msg);
    tick(c);
    return SF_AGAIN;
}

int stream_consumer_set_room(struct stream_consumer *c, size_t room)
{
    size_t live = 0;
    uint64_t out = 0;
    for (size_t i = 0; i < c->n_prods; i++) {
        if (!c->prods[i].live) continue;
        live++;
        out += c->prods[i].outstanding;
    }
    if (!live) return 0;
    uint64_t avail = room > out ? room - out : 0;
    uint64_t target = SF_MIN((uint64_t)c->o.credit_window, SF_MAX((uint64_t)1, room / live));
    for (size_t i = 0; i < c->n_prods && avail > 0; i++) {
        struct cprod *p = &c->prods[i];
        if (!p->live || p->outstanding >= target) continue;
        uint64_t want = target - p->outstanding;
        if (p->outstanding > 0 && want < SF_MAX((uint64_t)1, target / 2)) continue;
        uint64_t g = SF_MIN(want, avail);
        send_grant(c, p, "", (uint32_t)g);
        avail -= g;
    }
    return 0;
}

int stream_consumer_state(const struct stream_consumer *c, struct buf *out)
{
    if (buf_append(out, STATE_MAGIC, strlen(STATE_MAGIC)) < 0) return SF_ENOMEM;
    for (size_t i = 0; i < c->n_prods; i++) {
        const struct cprod *p = &c->prods[i];
        struct stream_ranges all;
        stream_ranges_init(&all);
        if (stream_ranges_merge(&all, &p->committed) < 0 ||
            stream_ranges_merge(&all, &p->pending) < 0) {
            stream_ranges_fini(&all);
            return SF_ENOMEM;
        }
        if (all.n == 0) {
            stream_ranges_fini(&all);
            continue;
        }
        int rc = buf_printf(out, "%s %" PRIu64, p->id, p->epoch);
        for (size_t r = 0; r < all.n && rc == 0; r++)
            rc = buf_printf(out, " %" PRIu64 "-%" PRIu64, all.r[r][0], all.r[r][1]);
        if (rc == 0) rc = buf_putc(out, '\n');
        stream_ranges_fini(&all);
        if (rc < 0) return SF_ENOMEM;
    }
    return 0;
}

static bool id_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == ':' || ch == '-';
}

/* Parses a decimal u64 at *s (no sign), advancing *s. */
static int parse_u64(const char **s, const char *end, uint64_t *out)
{
    const char *p = *s;
    uint64_t v = 0;
    if (p >= end || *p < '0' || *p > '9') return SF_EFORMAT;
    while (p < end && *p >= '0' && *p <= '9') {
        unsigned dgt = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - dgt) / 10) return SF_EFORMAT;
        v = v * 10 + dgt;
        p++;
    }
    *s = p;
    *out = v;
    return 0;
}

int stream_state_parse(const char *text, size_t len, stream_state_fn fn, void *ud)
{
    size_t ml = strlen(STATE_MAGIC);
    if (len > STREAM_MAX_STATE || len < ml || memcmp(text, STATE_MAGIC, ml) != 0) {
        log_error("stream_state_parse", "err=bad_magic");
        return SF_EFORMAT;
    }
    const char *s = text + ml, *end = text + len;
    size_t lineno = 1;
    while (s < end) {
        lineno++;
        const char *eol = memchr(s, '\n', (size_t)(end - s));
        if (!eol) goto bad;
        const char *q = s;
        char id[WIRE_MAX_ID_LEN + 1];
        size_t n = 0;
        while (q < eol && *q != ' ') {
            if (!id_char(*q) || n >= WIRE_MAX_ID_LEN) goto bad;
            id[n++] = *q++;
        }
        if (n == 0 || q >= eol) goto bad;
        id[n] = 0;
        q++;
        uint64_t epoch;
        if (parse_u64(&q, eol, &epoch) < 0) goto bad;
        uint64_t prev_last = 0;
        bool first = true;
        while (q < eol) {
            uint64_t a, b;
            if (*q++ != ' ') goto bad;
            if (parse_u64(&q, eol, &a) < 0 || q >= eol || *q++ != '-' ||
                parse_u64(&q, eol, &b) < 0 || a > b)
                goto bad;
            if (!first && (prev_last == UINT64_MAX || a <= prev_last + 1)) goto bad;
            int rc = fn(ud, id, epoch, a, b, first);
            if (rc == SF_ENOMEM) return rc;
            if (rc < 0) goto bad;
            first = false;
            prev_last = b;
        }
        if (first) goto bad;
        s = eol + 1;
    }
    return 0;
bad:
    log_error("stream_state_parse", "err=malformed line=%zu", lineno);
    return SF_EFORMAT;
}

static int restore_range(void *ud, const char *id, uint64_t epoch, uint64_t first, uint64_t last,
                         bool new_line)
{
    struct stream_consumer *c = ud;
    struct cprod *p = prod_find(c, id, epoch, true);
    if (!p || (new_line && p->committed.n)) return SF_EFORMAT; /* repeated key */
    uint64_t rr[1][2] = {{first, last}};
    struct stream_ranges one = {.r = rr, .n = 1, .cap = 1};
    return stream_ranges_merge(&p->committed, &one);
}

int stream_consumer_restore(struct stream_consumer *c, const char *text, size_t len)
{
    int rc = stream_state_parse(text, len, restore_range, c);
    if (rc < 0) {
        for (size_t i = 0; i < c->n_prods; i++) {
            stream_ranges_fini(&c->prods[i].committed);
            stream_ranges_fini(&c->prods[i].pending);
            free(c->prods[i].recs);
        }
        c->n_prods = 0;
        return rc;
    }
    uint64_t total = 0;
    for (size_t i = 0; i < c->n_prods; i++) total += stream_ranges_count(&c->prods[i].committed);
    log_info("stream_state_restored", "consumer=%s producers=%zu committed=%llu", c->id, c->n_prods,
             (unsigned long long)total);
    return 0;
}

int stream_consumer_source_state(const struct stream_consumer *c, struct buf *out)
{
    if (buf_append(out, SOURCE_MAGIC, strlen(SOURCE_MAGIC)) < 0) return SF_ENOMEM;
    for (size_t i = 0; i < c->n_keys; i++) {
        /* the committed source plus the pending batches (the checkpoint holds them) */
        const struct ckey *k0 = &c->keys[i];
        struct ckey k = *k0;
        k.ah = k0->n_ah ? malloc(k0->n_ah * sizeof *k.ah) : NULL;
        if (k0->n_ah && !k.ah) return SF_ENOMEM;
        if (k.ah) memcpy(k.ah, k0->ah, k0->n_ah * sizeof *k.ah);
        k.cap_ah = k0->n_ah;
        int rc = 0;
        for (size_t pi = 0; pi < c->n_prods && rc == 0; pi++)
            for (size_t j = 0; j < c->prods[pi].n_recs && rc == 0; j++) {
                const struct precord *r = &c->prods[pi].recs[j];
                if (r->key == (int32_t)i) rc = key_commit(&k, r->from, &r->end);
            }
        for (size_t j = 0; j <= k.n_ah && rc == 0; j++) {
            const struct stream_cursor *x =
                j == 0 ? (k.has_done ? &k.done : NULL) : &k.ah[j - 1].end;
            if (!x) continue;
            if (j == 0)
                rc = buf_printf(out, "%s %s %s F 0", k.producer, k.hook, x->source_id);
            else
                rc = buf_printf(out, "%s %s %s A %" PRIu64, k.producer, k.hook, x->source_id,
                                k.ah[j - 1].from);
            if (rc == 0)
                rc = buf_printf(out,
                                " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
                                " %" PRIu64 " %" PRIu64 "\n",
                                x->position, x->source_epoch, x->file_index, x->byte_offset,
                                x->doc_token, x->doc_id, x->captured);
        }
        free(k.ah);
        if (rc < 0) return SF_ENOMEM;
    }
    return 0;
}

static bool hook_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_';
}

/* Copies a space-terminated token of allowed characters at *q into out. */
static int take_word(const char **q, const char *eol, bool hook, char *out, size_t cap)
{
    size_t n = 0;
    const char *p = *q;
    while (p < eol && *p != ' ') {
        if (!(hook ? hook_char(*p) : id_char(*p)) || n + 1 >= cap) return SF_EFORMAT;
        out[n++] = *p++;
    }
    if (n == 0 || p >= eol) return SF_EFORMAT;
    out[n] = 0;
    *q = p + 1;
    return 0;
}

int stream_source_state_parse(const char *text, size_t len, stream_source_fn fn, void *ud)
{
    size_t ml = strlen(SOURCE_MAGIC);
    if (len > STREAM_MAX_STATE || len < ml || memcmp(text, SOURCE_MAGIC, ml) != 0) {
        log_error("stream_source_state_parse", "err=bad_magic");
        return SF_EFORMAT;
    }
    const char *s = text + ml, *end = text + len;
    size_t lineno = 1;
    while (s < end) {
        lineno++;
        const char *eol = memchr(s, '\n', (size_t)(end - s));
        if (!eol) goto bad;
        const char *q = s;
        char producer[WIRE_MAX_ID_LEN + 1], hook[WIRE_MAX_NAME_LEN + 1];
        struct stream_cursor cur;
        memset(&cur, 0, sizeof cur);
        if (take_word(&q, eol, false, producer, sizeof producer) < 0 ||
            take_word(&q, eol, true, hook, sizeof hook) < 0 ||
            take_word(&q, eol, false, cur.source_id, sizeof cur.source_id) < 0)
            goto bad;
        /* F: the frontier; A <from>: a batch committed beyond a hole */
        if (eol - q < 2 || (q[0] != 'F' && q[0] != 'A') || q[1] != ' ') goto bad;
        bool ahead = q[0] == 'A';
        q += 2;
        uint64_t from;
        uint64_t *v[8] = {&from,           &cur.position,    &cur.source_epoch,
                          &cur.file_index, &cur.byte_offset, &cur.doc_token,
                          &cur.doc_id,     &cur.captured};
        for (int f = 0; f < 8; f++) {
            if (f > 0 && (q >= eol || *q++ != ' ')) goto bad;
            if (parse_u64(&q, eol, v[f]) < 0) goto bad;
        }
        if (q != eol || (!ahead && from != 0) || (ahead && from >= cur.position)) goto bad;
        int rc = fn(ud, producer, hook, ahead, from, &cur);
        if (rc == SF_ENOMEM) return rc;
        if (rc < 0) goto bad;
        s = eol + 1;
    }
    return 0;
bad:
    log_error("stream_source_state_parse", "err=malformed line=%zu", lineno);
    return SF_EFORMAT;
}

static int restore_source(void *ud, const char *producer, const char *hook, bool ahead,
                          uint64_t from, const struct stream_cursor *cur)
{
    struct stream_consumer *c = ud;
    int ki = key_find(c, producer, hook, true);
    if (ki < 0) return SF_ENOMEM;
    struct ckey *k = &c->keys[ki];
    if (!ahead) {
        if (k->has_done || k->n_ah) return SF_EFORMAT; /* the frontier comes first, once */
        k->done = *cur;
        k->has_done = true;
        return 0;
    }
    const char *known = key_source(k);
    if (known && strcmp(known, cur->source_id) != 0) return SF_EFORMAT;
    return key_commit(k, from, cur);
}

int stream_consumer_source_restore(struct stream_consumer *c, const char *text, size_t len)
{
    int rc = stream_source_state_parse(text, len, restore_source, c);
    if (rc < 0) {
        for (size_t i = 0; i < c->n_keys; i++) free(c->keys[i].ah);
        c->n_keys = 0;
        return rc;
    }
    for (size_t i = 0; i < c->n_keys; i++)
        log_info("stream_source_restored",
                 "consumer=%s producer=%s hook=%s source=%s position=%llu "
                 "captured=%llu",
                 c->id, c->keys[i].producer, c->keys[i].hook, c->keys[i].done.source_id,
                 (unsigned long long)c->keys[i].done.position,
                 (unsigned long long)c->keys[i].done.captured);
    return 0;
}

int stream_consumer_ledger_open(struct stream_consumer *c, const char *path, uint64_t loaded)
{
    if (!path || !*path) return 0;
    char *old = NULL;
    size_t len = 0;
    int rc = access(path, F_OK) == 0 ? file_read_all(path, LEDGER_MAX_BYTES, &old, &len) : 1;
    if (rc < 0) return rc;
    if (rc == 0) {
        /* keep well-formed lines of checkpoints <= loaded */
        struct buf keep;
        buf_init(&keep, len + 1);
        size_t dropped = 0;
        const char *s = old, *end = old + len;
        while (s < end) {
            const char *eol = memchr(s, '\n', (size_t)(end - s));
            if (!eol) {
                dropped++; /* torn last line */
                break;
            }
            /* "producer epoch seq ckpt [hook tokens from to]": the 4th field */
            const char *sp = s;
            for (int f = 0; f < 3 && sp; f++) {
                sp = memchr(sp, ' ', (size_t)(eol - sp));
                if (sp) sp++;
            }
            const char *q = sp;
            uint64_t ck;
            bool ok = sp && parse_u64(&q, eol, &ck) == 0 && (q == eol || *q == ' ');
            if (ok && ck <= loaded)
                (void)buf_append(&keep, s, (size_t)(eol - s) + 1);
            else
                dropped++;
            s = eol + 1;
        }
        if (dropped) {
            log_info("stream_ledger_trim", "path=%s dropped=%zu loaded_ckpt=%llu", path, dropped,
                     (unsigned long long)loaded);
            rc = file_write_atomic(path, keep.data ? keep.data : "", keep.len);
        }
        buf_fini(&keep);
        free(old);
        if (rc < 0) return rc;
    }
    c->ledger = fopen(path, "a");
    if (!c->ledger) {
        log_error("stream_ledger_open", "path=%s err=%s", path, strerror(errno));
        return SF_EIO;
    }
    return 0;
}

int stream_consumer_ledger_append(struct stream_consumer *c, uint64_t ckpt)
{
    if (!c->ledger) return 0;
    for (size_t i = 0; i < c->n_prods; i++) {
        const struct cprod *p = &c->prods[i];
        for (size_t j = 0; j < p->n_recs; j++) {
            const struct precord *r = &p->recs[j];
            fprintf(c->ledger, "%s %" PRIu64 " %" PRIu64 " %" PRIu64 " %s %" PRIu32, p->id,
                    p->epoch, r->seq, ckpt, r->hook, r->n_tokens);
            if (r->key >= 0)
                fprintf(c->ledger, " %" PRIu64 " %" PRIu64 "\n", r->from, r->end.position);
            else
                fputs(" - -\n", c->ledger);
        }
    }
    if (fflush(c->ledger) != 0 || fsync(fileno(c->ledger)) != 0) {
        log_error("stream_ledger_append", "err=%s", strerror(errno));
        return SF_EIO;
    }
    return 0;
}

int stream_consumer_commit(struct stream_consumer *c)
{
    for (size_t i = 0; i < c->n_prods; i++) {
        struct cprod *p = &c->prods[i];
        if (!p->pending.n) continue;
        uint64_t n = stream_ranges_count(&p->pending);
        if (stream_ranges_merge(&p->committed, &p->pending) < 0) return SF_ENOMEM;
        send_ack(c, p, &p->pending, SAEFLOW__ACK_STATUS__ACK_STATUS_TRAINED);
        c->st.committed += n;
        stream_ranges_clear(&p->pending);
        int rc = 0;
        for (size_t j = 0; j < p->n_recs; j++) {
            const struct precord *r = &p->recs[j];
            if (r->key >= 0 && key_commit(&c->keys[r->key], r->from, &r->end) < 0) rc = SF_ENOMEM;
        }
        p->n_recs = 0;
        if (rc < 0) return rc;
    }
    for (size_t i = 0; i < c->n_prods; i++)
        if (c->prods[i].resume_due) try_resume(c, &c->prods[i]);
    return 0;
}

bool stream_consumer_commit_wanted(const struct stream_consumer *c)
{
    for (size_t i = 0; i < c->n_prods; i++) {
        const struct cprod *p = &c->prods[i];
        if (p->pending.n && (p->done || p->blocked)) return true;
        if (p->resume_due && p->live && resume_blocked(c, p)) return true;
    }
    return false;
}

bool stream_consumer_producers_done(const struct stream_consumer *c)
{
    bool any = false;
    for (size_t i = 0; i < c->n_prods; i++) {
        const struct cprod *p = &c->prods[i];
        if (!p->heard || (!p->live && !p->done)) continue; /* gone: resends if it returns */
        any = true;
        if (!p->done) return false;
    }
    return any;
}

bool stream_consumer_all_done(const struct stream_consumer *c)
{
    bool any = false;
    for (size_t i = 0; i < c->n_prods; i++) {
        const struct cprod *p = &c->prods[i];
        if (!p->heard || (!p->live && !p->done && !p->pending.n)) continue;
        any = true;
        if (!p->done || p->pending.n) return false;
    }
    return any;
}

void stream_consumer_stats(const struct stream_consumer *c, struct stream_consumer_stats *out)
{
    *out = c->st;
    out->pending = 0;
    out->producers_live = 0;
    for (size_t i = 0; i < c->n_prods; i++) {
        out->pending += stream_ranges_count(&c->prods[i].pending);
        if (c->prods[i].live) out->producers_live++;
    }
}

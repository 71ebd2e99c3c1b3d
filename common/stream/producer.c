/* producer: the sending side of the stream protocol (stream.h): a bounded ring of
 * encoded, unacknowledged batches, credit per consumer link, resends after a consumer
 * restart, heartbeats, and the producer ledger ("epoch seq fate" lines). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stream/stream.h"

struct ring_entry {
    uint64_t seq;
    uint8_t *frame; /* encoded Frame */
    size_t len;
    uint32_t dest;     /* links it is routed to */
    uint32_t sent;     /* links it is in flight to (since the last resend mark) */
    uint32_t ever;     /* links it was ever sent to (to count resends) */
    uint32_t acked;    /* links that committed it */
    uint32_t rejected; /* links that refused it */
};

struct link {
    struct wire_sock *sock;
    char endpoint[256];
    bool known; /* heard the consumer's heartbeat */
    char consumer_id[WIRE_MAX_ID_LEN + 1];
    uint64_t consumer_epoch;
    bool subscribed; /* received at least one subscription */
    bool all_hooks;
    char hooks[STREAM_MAX_HOOKS][WIRE_MAX_NAME_LEN + 1];
    size_t n_hooks;
    uint64_t credit;
    int64_t last_heard_ns;
    int64_t last_ack_ns;
    int64_t last_resend_ns;
    int64_t waiting_since_ns; /* when the producer became blocked or finished */
    bool suspect;
    uint64_t hb_seq;
    int64_t next_hb_ns;
    bool resumed; /* the consumer's Resume (after its subscriptions) arrived */
    size_t n_cur;
    struct {
        char hook[WIRE_MAX_NAME_LEN + 1];
        struct stream_cursor cur;
    } cur[STREAM_MAX_HOOKS]; /* committed source cursors, from the Resume */
};

struct stream_producer {
    char id[WIRE_MAX_ID_LEN + 1];
    uint64_t epoch;
    struct stream_producer_opts o;
    struct link links[STREAM_MAX_LINKS];
    size_t n_links;
    struct ring_entry *ring; /* circular, cap entries */
    size_t cap, head, count;
    uint64_t next_seq;
    bool finished;
    FILE *ledger;
    struct stream_producer_stats st;
    struct buf enc;
};

void stream_producer_opts_default(struct stream_producer_opts *o)
{
    memset(o, 0, sizeof *o);
    o->producer_id = "capture-0";
    o->ring_batches = 256;
    o->heartbeat_ms = 250;
    o->peer_timeout_ms = 3000;
    o->ack_timeout_ms = 5000;
}

static struct ring_entry *ring_at(struct stream_producer *p, size_t i)
{
    return &p->ring[(p->head + i) % p->cap];
}

struct stream_producer *stream_producer_new(const struct stream_producer_opts *o)
{
    struct stream_producer_opts d;
    if (!o) {
        stream_producer_opts_default(&d);
        o = &d;
    }
    size_t idlen = o->producer_id ? strlen(o->producer_id) : 0;
    if (idlen == 0 || idlen > WIRE_MAX_ID_LEN) {
        log_error("stream_producer_new", "err=bad_producer_id");
        return NULL;
    }
    struct stream_producer *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    memcpy(p->id, o->producer_id, idlen + 1);
    p->o = *o;
    p->o.producer_id = p->id;
    p->o.ledger_path = NULL;
    if (p->o.ring_batches == 0) p->o.ring_batches = 256;
    if (p->o.heartbeat_ms <= 0) p->o.heartbeat_ms = 250;
    if (p->o.peer_timeout_ms <= 0) p->o.peer_timeout_ms = 3000;
    if (p->o.ack_timeout_ms <= 0) p->o.ack_timeout_ms = 5000;
    p->epoch = o->epoch ? o->epoch : (uint64_t)time_wall_ms();
    p->cap = p->o.ring_batches;
    p->ring = calloc(p->cap, sizeof *p->ring);
    buf_init(&p->enc, (size_t)WIRE_DEFAULT_MAX_MSG + 4096);
    if (!p->ring) goto fail;
    if (o->ledger_path && *o->ledger_path) {
        p->ledger = fopen(o->ledger_path, "a");
        if (!p->ledger) {
            log_error("stream_ledger_open", "path=%s err=%s", o->ledger_path, strerror(errno));
            goto fail;
        }
    }
    return p;
fail:
    stream_producer_destroy(&p);
    return NULL;
}

static void ledger_fate(struct stream_producer *p, uint64_t seq, const char *fate)
{
    if (p->ledger)
        fprintf(p->ledger, "%llu %llu %s\n", (unsigned long long)p->epoch, (unsigned long long)seq,
                fate);
}

static void ledger_sync(struct stream_producer *p)
{
    if (!p->ledger) return;
    fflush(p->ledger);
    fsync(fileno(p->ledger));
}

void stream_producer_destroy(struct stream_producer **pp)
{
    if (!pp || !*pp) return;
    struct stream_producer *p = *pp;
    if (p->ring) {
        for (size_t i = 0; i < p->count; i++) {
            struct ring_entry *e = ring_at(p, i);
            if (!e->dest) {
                ledger_fate(p, e->seq, "unrouted");
                p->st.unrouted++;
            } else if ((e->acked | e->rejected) == e->dest) {
                ledger_fate(p, e->seq, e->rejected ? "rejected" : "committed");
                p->st.rejected += e->rejected ? 1 : 0;
                p->st.committed += e->rejected ? 0 : 1;
            } else {
                ledger_fate(p, e->seq, "unacked");
                p->st.unacked++;
            }
            free(e->frame);
            e->frame = NULL;
        }
        if (p->count)
            log_warn("stream_unacked_at_exit", "producer=%s epoch=%llu batches=%zu", p->id,
                     (unsigned long long)p->epoch, p->count);
    }
    if (p->ledger) {
        ledger_sync(p);
        fclose(p->ledger);
    }
    for (size_t i = 0; i < p->n_links; i++) wire_sock_destroy(&p->links[i].sock);
    free(p->ring);
    buf_fini(&p->enc);
    free(p);
    *pp = NULL;
}

int stream_producer_connect(struct stream_producer *p, const char *endpoint)
{
    if (p->n_links == STREAM_MAX_LINKS) return SF_ERANGE;
    struct link *l = &p->links[p->n_links];
    memset(l, 0, sizeof *l);
    char ident[WIRE_MAX_ID_LEN + 32];
    snprintf(ident, sizeof ident, "%s.%llu", p->id, (unsigned long long)p->epoch);
    struct wire_opts wo;
    wire_opts_default(&wo);
    wo.identity = ident;
    wo.track_seq = false;
    wo.send_timeout_ms = 0;
    wo.hwm = 1000;
    if (p->o.max_msg_bytes) wo.max_msg_bytes = p->o.max_msg_bytes;
    l->sock = wire_sock_new(WIRE_DEALER, endpoint, WIRE_CONNECT, &wo);
    if (!l->sock) return SF_EIO;
    snprintf(l->endpoint, sizeof l->endpoint, "%s", endpoint);
    l->last_heard_ns = time_now_ns();
    l->last_ack_ns = l->last_heard_ns;
    p->n_links++;
    log_info("stream_link", "producer=%s epoch=%llu endpoint=%s", p->id,
             (unsigned long long)p->epoch, endpoint);
    return 0;
}

uint64_t stream_producer_epoch(const struct stream_producer *p)
{
    return p->epoch;
}

bool stream_producer_ready(const struct stream_producer *p)
{
    if (p->n_links == 0) return false;
    for (size_t i = 0; i < p->n_links; i++)
        if (!p->links[i].subscribed || !p->links[i].resumed) return false;
    return true;
}

size_t stream_producer_room(const struct stream_producer *p)
{
    return p->cap - p->count;
}

bool stream_producer_drained(const struct stream_producer *p)
{
    return p->count == 0;
}

void stream_producer_finish(struct stream_producer *p)
{
    p->finished = true;
    for (size_t i = 0; i < p->n_links; i++) {
        p->links[i].next_hb_ns = 0;
        p->links[i].waiting_since_ns = time_now_ns();
    }
}

static bool link_wants(const struct link *l, const char *hook)
{
    if (l->all_hooks) return true;
    for (size_t i = 0; i < l->n_hooks; i++)
        if (!strcmp(l->hooks[i], hook)) return true;
    return false;
}

/* Retires finished entries from the head of the ring, writing their fates. */
static void ring_retire(struct stream_producer *p)
{
    bool any = false;
    while (p->count) {
        struct ring_entry *e = ring_at(p, 0);
        if ((e->acked | e->rejected) != e->dest) break;
        if (!e->dest) {
            ledger_fate(p, e->seq, "unrouted");
            p->st.unrouted++;
        } else if (e->rejected) {
            ledger_fate(p, e->seq, "rejected");
            p->st.rejected++;
        } else {
            ledger_fate(p, e->seq, "committed");
            p->st.committed++;
        }
        free(e->frame);
        memset(e, 0, sizeof *e);
        p->head = (p->head + 1) % p->cap;
        p->count--;
        any = true;
    }
    if (any) ledger_sync(p);
}

int stream_producer_publish(struct stream_producer *p, Saeflow__ActivationBatch *b)
{
    if (p->count == p->cap) return SF_AGAIN;
    b->schema_version = WIRE_SCHEMA_VERSION;
    b->producer_id = p->id;
    b->producer_epoch = p->epoch;
    b->seq = p->next_seq;
    struct wire_msg m = {.kind = WIRE_BATCH, .batch = b};
    buf_reset(&p->enc);
    int rc = wire_encode(&m, &p->enc);
    if (rc != 0) {
        log_error("stream_publish", "producer=%s seq=%llu err=%s", p->id,
                  (unsigned long long)b->seq, sf_strerror(rc));
        return SF_EINVAL;
    }
    uint32_t dest = 0;
    for (size_t i = 0; i < p->n_links; i++)
        if (link_wants(&p->links[i], b->hook_name)) dest |= 1u << i;
    /* an entry without destinations (no consumer wants its hook) keeps its place in
     * the ring, so that ring index = seq - first seq; it retires as "unrouted" */
    uint8_t *copy = NULL;
    if (dest) {
        copy = malloc(p->enc.len);
        if (!copy) return SF_ENOMEM;
        memcpy(copy, p->enc.data, p->enc.len);
    }
    p->next_seq++;
    p->st.published++;
    struct ring_entry *e = ring_at(p, p->count);
    memset(e, 0, sizeof *e);
    e->seq = b->seq;
    e->frame = copy;
    e->len = p->enc.len;
    e->dest = dest;
    p->count++;
    return 0;
}

/* Marks every entry not yet acked by link li to be sent again. */
static void link_mark_resend(struct stream_producer *p, size_t li, const char *why)
{
    uint32_t bit = 1u << li;
    size_t n = 0;
    for (size_t i = 0; i < p->count; i++) {
        struct ring_entry *e = ring_at(p, i);
        if ((e->dest & bit) && (e->sent & bit) && !((e->acked | e->rejected) & bit)) {
            e->sent &= ~bit;
            n++;
        }
    }
    p->links[li].last_resend_ns = time_now_ns();
    if (n)
        log_info("stream_resend", "producer=%s link=%s batches=%zu why=%s", p->id,
                 p->links[li].endpoint, n, why);
}

static void handle_ack(struct stream_producer *p, size_t li, const Saeflow__Ack *a)
{
    struct link *l = &p->links[li];
    uint32_t bit = 1u << li;
    if (a->producer_epoch != p->epoch || strcmp(a->producer_id, p->id) != 0) {
        p->st.stale_acks++;
        return;
    }
    bool rej = a->status == SAEFLOW__ACK_STATUS__ACK_STATUS_REJECTED;
    bool trained = a->status == SAEFLOW__ACK_STATUS__ACK_STATUS_TRAINED;
    if (!rej && !trained) return; /* ACCEPTED: informational only, we keep the batch */
    l->last_ack_ns = time_now_ns();
    uint64_t first_seq = p->count ? ring_at(p, 0)->seq : p->next_seq;
    uint64_t end_seq = first_seq + p->count; /* exclusive */
    for (size_t r = 0; r < a->n_ranges; r++) {
        uint64_t lo = a->ranges[r]->first, hi = a->ranges[r]->last;
        /* only the part inside the ring is looked at (a range may be huge) */
        uint64_t from = SF_MAX(lo, first_seq);
        uint64_t to = p->count ? SF_MIN(hi, end_seq - 1) : 0;
        if (!p->count || from > to) {
            p->st.stale_acks++;
            continue;
        }
        if (from > lo || to < hi) p->st.stale_acks++;
        for (uint64_t s = from; s <= to; s++) {
            struct ring_entry *e = ring_at(p, (size_t)(s - first_seq));
            if (!(e->dest & bit)) continue;
            if (rej)
                e->rejected |= bit;
            else
                e->acked |= bit;
        }
    }
}

static void handle_heartbeat(struct stream_producer *p, size_t li, const Saeflow__Heartbeat *h)
{
    struct link *l = &p->links[li];
    int64_t now = time_now_ns();
    if (!l->known || h->epoch != l->consumer_epoch) {
        if (l->known) {
            /* a new consumer process: its credit and subscriptions start afresh, and
             * it has committed nothing we sent to the old one */
            p->st.consumer_restarts++;
            log_info("stream_consumer_restart", "producer=%s link=%s consumer=%s epoch=%llu", p->id,
                     l->endpoint, h->sender_id, (unsigned long long)h->epoch);
            l->credit = 0;
            l->subscribed = false;
            l->resumed = false;
            l->n_cur = 0;
            l->all_hooks = false;
            l->n_hooks = 0;
            link_mark_resend(p, li, "consumer_restart");
        }
        l->known = true;
        l->consumer_epoch = h->epoch;
        snprintf(l->consumer_id, sizeof l->consumer_id, "%s", h->sender_id);
        l->suspect = false;
    } else if (l->suspect) {
        l->suspect = false;
        link_mark_resend(p, li, "consumer_back");
    }
    l->last_heard_ns = now;
}

static void handle_credit(struct stream_producer *p, size_t li, const Saeflow__CreditGrant *g)
{
    struct link *l = &p->links[li];
    l->last_heard_ns = time_now_ns();
    if (g->producer_id && *g->producer_id && strcmp(g->producer_id, p->id) != 0) return;
    if (g->credits == 0) {
        l->subscribed = true;
        if (!g->hook_name || !*g->hook_name) {
            l->all_hooks = true;
        } else if (!link_wants(l, g->hook_name) && l->n_hooks < STREAM_MAX_HOOKS) {
            snprintf(l->hooks[l->n_hooks++], sizeof l->hooks[0], "%s", g->hook_name);
        }
        return;
    }
    l->credit += g->credits;
}

static void handle_resume(struct stream_producer *p, size_t li, const Saeflow__Resume *r)
{
    struct link *l = &p->links[li];
    l->last_heard_ns = time_now_ns();
    if (strcmp(r->producer_id, p->id) != 0) return;
    l->n_cur = 0;
    for (size_t i = 0; i < r->n_hooks && l->n_cur < STREAM_MAX_HOOKS; i++) {
        if (stream_cursor_from_pb(r->hooks[i]->cursor, &l->cur[l->n_cur].cur) < 0) continue;
        snprintf(l->cur[l->n_cur].hook, sizeof l->cur[0].hook, "%s", r->hooks[i]->hook_name);
        log_info("stream_resume_point",
                 "producer=%s link=%s hook=%s source=%s position=%llu "
                 "captured=%llu",
                 p->id, l->endpoint, l->cur[l->n_cur].hook, l->cur[l->n_cur].cur.source_id,
                 (unsigned long long)l->cur[l->n_cur].cur.position,
                 (unsigned long long)l->cur[l->n_cur].cur.captured);
        l->n_cur++;
    }
    l->resumed = true;
}

int stream_producer_resume_point(const struct stream_producer *p, const char *const *hooks,
                                 size_t n_hooks, const char *source_id, struct stream_cursor *out)
{
    bool any = false, missing = false;
    for (size_t li = 0; li < p->n_links; li++) {
        const struct link *l = &p->links[li];
        for (size_t h = 0; h < n_hooks; h++) {
            if (!link_wants(l, hooks[h])) continue;
            const struct stream_cursor *c = NULL;
            for (size_t j = 0; j < l->n_cur && !c; j++)
                if (!strcmp(l->cur[j].hook, hooks[h])) c = &l->cur[j].cur;
            if (!c) {
                missing = true;
                continue;
            }
            if (strcmp(c->source_id, source_id) != 0) {
                log_error("stream_resume_other_source",
                          "producer=%s link=%s hook=%s committed_source=%s source=%s", p->id,
                          l->endpoint, hooks[h], c->source_id, source_id);
                return SF_ESTATE;
            }
            if (!any || c->position < out->position) *out = *c;
            any = true;
        }
    }
    return any && !missing ? 0 : SF_NOTFOUND;
}

static int link_recv_all(struct stream_producer *p, size_t li)
{
    struct wire_msg m = {0};
    for (int n = 0; n < 256; n++) {
        int rc = wire_recv(p->links[li].sock, &m, 0);
        if (rc == SF_AGAIN) break;
        if (rc == WIRE_REJECTED) continue;
        if (rc < 0) {
            wire_msg_fini(&m);
            return rc;
        }
        switch (m.kind) {
        case WIRE_ACK:
            handle_ack(p, li, m.ack);
            break;
        case WIRE_HEARTBEAT:
            handle_heartbeat(p, li, m.heartbeat);
            break;
        case WIRE_CREDIT:
            handle_credit(p, li, m.credit);
            break;
        case WIRE_RESUME:
            handle_resume(p, li, m.resume);
            break;
        default:
            break;
        }
    }
    wire_msg_fini(&m);
    return 0;
}

static void link_send(struct stream_producer *p, size_t li)
{
    struct link *l = &p->links[li];
    uint32_t bit = 1u << li;
    if (!l->known || l->suspect) return;
    for (size_t i = 0; i < p->count && l->credit > 0; i++) {
        struct ring_entry *e = ring_at(p, i);
        if (!(e->dest & bit) || (e->sent & bit) || ((e->acked | e->rejected) & bit)) continue;
        const void *parts[1] = {e->frame};
        size_t lens[1] = {e->len};
        int rc = wire_send_raw(l->sock, parts, lens, 1);
        if (rc == SF_AGAIN) {
            p->st.send_again++;
            return;
        }
        if (rc != 0) return;
        e->sent |= bit;
        if (e->ever & bit)
            p->st.resent++;
        else
            p->st.sent++;
        e->ever |= bit;
        l->credit--;
    }
}

static void link_heartbeat(struct stream_producer *p, size_t li, int64_t now)
{
    struct link *l = &p->links[li];
    if (now < l->next_hb_ns) return;
    l->next_hb_ns = now + (int64_t)p->o.heartbeat_ms * 1000000;
    Saeflow__Heartbeat h = SAEFLOW__HEARTBEAT__INIT;
    h.sender_id = p->id;
    h.role = "capture";
    h.epoch = p->epoch;
    h.seq = l->hb_seq++;
    h.wall_unix_ms = time_wall_ms();
    /* "done": nothing more will come on this link (all published and sent);
     * "finishing": published all but some are still to be (re)sent */
    bool unsent = false;
    uint32_t bit = 1u << li;
    for (size_t i = 0; i < p->count && !unsent; i++) {
        const struct ring_entry *e = ring_at(p, i);
        unsent = (e->dest & bit) && !(e->sent & bit) && !((e->acked | e->rejected) & bit);
    }
    h.status = p->finished          ? (unsent ? "finishing" : "done")
               : p->count == p->cap ? "blocked"
                                    : "ok";
    h.credits_available = (uint32_t)SF_MIN(l->credit, (uint64_t)UINT32_MAX);
    struct wire_msg m = {.kind = WIRE_HEARTBEAT, .heartbeat = &h};
    (void)wire_send(l->sock, &m, WIRE_DONTWAIT);
}

int stream_producer_poll(struct stream_producer *p, int timeout_ms)
{
    struct wire_poll_item items[STREAM_MAX_LINKS];
    for (size_t i = 0; i < p->n_links; i++) {
        memset(&items[i], 0, sizeof items[i]);
        items[i].sock = p->links[i].sock;
        items[i].want_in = true;
    }
    if (p->n_links) {
        int rc = wire_poll(items, p->n_links, timeout_ms);
        if (rc < 0 && rc != SF_AGAIN) return rc;
    } else if (timeout_ms > 0) {
        time_sleep_ms(timeout_ms);
    }
    int64_t now = time_now_ns();
    for (size_t i = 0; i < p->n_links; i++) {
        int rc = link_recv_all(p, i);
        if (rc < 0) return rc;
    }
    ring_retire(p);
    for (size_t i = 0; i < p->n_links; i++) {
        struct link *l = &p->links[i];
        int64_t silent = now - l->last_heard_ns;
        if (l->known && !l->suspect && silent > (int64_t)p->o.peer_timeout_ms * 1000000) {
            l->suspect = true;
            p->st.peer_timeouts++;
            log_warn("stream_consumer_silent", "producer=%s link=%s consumer=%s ms=%lld", p->id,
                     l->endpoint, l->consumer_id, (long long)(silent / 1000000));
        }
        /* blocked or done and no ack for a while: acks may have been lost; resend
         * (the consumer drops duplicates and acks committed ones again) */
        bool waiting = p->finished || p->count == p->cap;
        if (!waiting)
            l->waiting_since_ns = 0;
        else if (!l->waiting_since_ns)
            l->waiting_since_ns = now;
        int64_t quiet_since =
            SF_MAX(SF_MAX(l->last_ack_ns, l->last_resend_ns), l->waiting_since_ns);
        if (waiting && p->count && now - quiet_since > (int64_t)p->o.ack_timeout_ms * 1000000)
            link_mark_resend(p, i, "ack_timeout");
        link_send(p, i);
        link_heartbeat(p, i, now);
    }
    return 0;
}

void stream_producer_stats(const struct stream_producer *p, struct stream_producer_stats *out)
{
    *out = p->st;
    out->in_ring = p->count;
    out->credit = 0;
    for (size_t i = 0; i < p->n_links; i++) out->credit += p->links[i].credit;
}

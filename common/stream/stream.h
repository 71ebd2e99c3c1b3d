/* stream: delivery of ActivationBatch messages from producers (capture) to consumers
 * (train) without silent loss, on top of common/wire (DEALER -> ROUTER over ZeroMQ).
 *
 * Every batch ends in exactly one counted fate: committed (its effect is in a durable
 * checkpoint of every consumer it was routed to), rejected (a consumer refused it as
 * invalid or unwanted; counted there), unrouted (no consumer wanted its hook), or
 * unacked (the producer shut down before a consumer committed it). Nothing is dropped
 * without a counter on one side and a ledger line on the other.
 *
 * Shape: the consumer binds a ROUTER; each producer connects one DEALER per consumer
 * ("link"; routing id "<producer_id>.<epoch>"). Several producers -> one consumer is
 * fan-in on the ROUTER; one producer -> several consumers is several links, and each
 * batch goes to the links whose consumer subscribed to its hook.
 *
 * Protocol (all messages are wire Frames):
 *   producer -> consumer  Heartbeat{role "capture", epoch, status ok | blocked (ring
 *                         full) | finishing (all published, some not yet sent) | done,
 *                         credits_available = credit left on this link}, every hb_ms
 *                         ActivationBatch{producer_id, epoch, seq}, only within credit
 *   consumer -> producer  Heartbeat{role "train", epoch = consumer epoch}, every hb_ms
 *                         CreditGrant{credits = 0, hook_name}: subscribe to a hook ("" =
 *                         every hook); sent after the consumer first hears a producer
 *                         CreditGrant{credits = n > 0}: n more batches may be sent
 *                         Ack{status TRAINED, ranges}: these seqs are committed
 *                         Ack{status REJECTED, ranges}: refused; do not resend
 *
 * Acknowledgement = commit. A consumer acks a batch only after a checkpoint that holds
 * its effect is durable: the trainer's checkpoint stores the SAE state, the tokens
 * still in its mixing buffer, and this module's state (per (producer, epoch) the set
 * of committed seqs, as ranges). So a batch received but not yet checkpointed is lost
 * with the consumer process and is re-sent from the producer's ring; one already
 * checkpointed is recognised as a duplicate after a restart, dropped (counted) and
 * acked again (the first ack may have been lost with the process).
 *
 * Commit order in the consumer (see stream_consumer_ledger_append):
 *   1. write checkpoint N (including stream_consumer_state()) into a temporary dir
 *   2. append ledger lines "producer epoch seq N" for the pending batches, fsync
 *   3. rename the checkpoint into place (it is now the latest), fsync the directory
 *   4. stream_consumer_commit(): pending -> committed, send the acks
 * A crash between 2 and 3 leaves ledger lines tagged N without checkpoint N; on start
 * stream_consumer_ledger_open(path, latest) drops lines tagged above the checkpoint
 * loaded, so the ledger is exactly the set of batches in the loaded checkpoint.
 *
 * Producer ring entry, per link it is routed to (state diagram):
 *
 *      publish            credit>0, send ok            Ack TRAINED
 *   ---------> [queued] --------------------> [sent] ---------------> [acked]
 *                 ^                             |  Ack REJECTED ----> [rejected]
 *                 |  consumer restarted (new    |
 *                 |  epoch in its heartbeat), or|
 *                 |  came back after peer_timeout,
 *                 +--or no ack for ack_timeout while blocked/done (resend)
 *
 *   An entry leaves the ring (and gets its ledger line) when every routed link is
 *   acked or rejected; only the oldest entries leave, so the ring is a window of
 *   consecutive seqs (a batch routed nowhere holds its slot and leaves as "unrouted").
 *   A full ring makes stream_producer_publish() return SF_AGAIN: back-pressure to
 *   capture. A consumer never sees more than the credit it granted, and the
 *   producer's heartbeat status tells it when to commit early: "blocked" (ring full)
 *   or "done" (everything sent: train what the mixing buffer holds, then commit).
 *
 * Consumer view of one (producer, epoch):
 *
 *   batch seq s: s in committed -> duplicate: drop, count, re-ack s
 *                s in pending   -> duplicate: drop, count
 *                hook unwanted  -> Ack REJECTED, count
 *                else           -> pending += s, delivered to the application
 *   commit:      committed += pending, Ack TRAINED(pending), pending = {}
 *   restart:     committed = checkpoint's set, pending = {} (the producer re-sends)
 *
 * Credit: the application says how many batches it has room for
 * (stream_consumer_set_room); the consumer splits that among live producers (capped
 * by credit_window), tracking outstanding = granted - received per producer. A batch
 * beyond credit is still accepted and counted (over_credit). Grants lost in transit
 * are repaired: when a producer's heartbeat reports zero credit while the consumer
 * counts credit outstanding and nothing moved for two heartbeats, outstanding is reset
 * (credit_resyncs). A producer not heard for peer_timeout gets no credit until it
 * comes back.
 *
 * Source cursors (resume): a producer reading a resumable source (capture over files)
 * stamps each batch with the source stream tokens it covers, [source_from,
 * source_end.position), and source_end locates the source there (struct
 * stream_cursor). The consumer keeps, per (producer id, hook) and across the
 * producer's epochs, the committed frontier (below), in its checkpoint
 * (stream_consumer_source_state), and after the subscriptions of every greeting sends
 * it in a Resume message; a producer is ready once every link's Resume arrived, and a
 * restarted producer resumes its source at stream_producer_resume_point (the smallest
 * cursor over its links and hooks). So a producer killed with SIGKILL or stopped with
 * Ctrl-C loses nothing and repeats nothing: what it had published but nobody committed
 * is read again, and a batch whose source range is committed already is a duplicate
 * (dropped, acked TRAINED, counted dup_source). A greeting of a producer's
 * new epoch waits (the consumer says commit_wanted) until the batches still pending
 * from its older epochs are committed, so the cursor sent covers them. A batch that
 * starts before the cursor and ends after it (pass boundaries changed between runs,
 * e.g. another --context) is trained and counted (source_overlap); one whose source_id
 * differs from the one committed for its key is rejected (source_mismatch).
 *
 * Limits: the producer's ring lives in memory, so a producer killed with SIGKILL loses
 * its unacknowledged batches unless its source is resumable (above; its ledger lines
 * for them are not written either); a restarted producer has a new epoch. Consumers
 * are the processes that may die at any time. The committed cursor is a frontier:
 * every source token before it is committed. A batch lost with a dying consumer can
 * be committed after later ones (they reached the restarted consumer first); those
 * later ones wait beyond the hole (and count as committed for duplicates) until it is
 * filled, so a producer killed meanwhile resumes at the hole.
 *
 * Ownership: *_new return objects freed by *_destroy(&p). Received batches are lent
 * to the application (struct stream_delivery) until stream_delivery_fini. One thread
 * per object. */
#ifndef SAEFLOW_STREAM_H
#define SAEFLOW_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "wire/wire.h"

#define STREAM_MAX_LINKS 16 /* consumers per producer */
#define STREAM_MAX_HOOKS 16 /* hooks per consumer subscription */
#define STREAM_MAX_STATE (64u << 20)

/* ---- sets of sequence numbers, as sorted disjoint inclusive ranges ---- */
struct stream_ranges {
    uint64_t (*r)[2];
    size_t n, cap;
};
void stream_ranges_init(struct stream_ranges *s);
void stream_ranges_fini(struct stream_ranges *s);
void stream_ranges_clear(struct stream_ranges *s);
/* Adds v: 0 when added, 1 when already present, SF_ENOMEM. */
int stream_ranges_add(struct stream_ranges *s, uint64_t v);
bool stream_ranges_has(const struct stream_ranges *s, uint64_t v);
uint64_t stream_ranges_count(const struct stream_ranges *s);
/* dst |= src */
int stream_ranges_merge(struct stream_ranges *dst, const struct stream_ranges *src);

/* ---- source cursors ---- */
struct stream_cursor {
    char source_id[WIRE_MAX_ID_LEN + 1]; /* fingerprint of the source ("" = none) */
    uint64_t position;                   /* source stream tokens before this point */
    uint64_t source_epoch, file_index, byte_offset, doc_token, doc_id; /* where */
    uint64_t captured; /* tokens captured before this point (the run's plan) */
};
/* out borrows c->source_id. */
void stream_cursor_to_pb(const struct stream_cursor *c, Saeflow__SourceCursor *out);
/* SF_EINVAL when p's source_id is not a valid id. */
int stream_cursor_from_pb(const Saeflow__SourceCursor *p, struct stream_cursor *out);

/* ---- producer ---- */
struct stream_producer_opts {
    const char *producer_id; /* [A-Za-z0-9._:-], <= WIRE_MAX_ID_LEN */
    uint64_t epoch;          /* 0 = wall clock in ms (unique per start) */
    size_t ring_batches;     /* unacknowledged batches kept (default 256) */
    int heartbeat_ms;        /* default 250 */
    int peer_timeout_ms;     /* consumer considered gone after this (default 3000) */
    int ack_timeout_ms;      /* resend unacked when blocked/done this long (default 5000) */
    const char *ledger_path; /* "epoch seq fate" lines; NULL = none */
    size_t max_msg_bytes;    /* wire cap; 0 = wire default */
};
void stream_producer_opts_default(struct stream_producer_opts *o);

struct stream_producer_stats {
    uint64_t published;         /* batches put in the ring */
    uint64_t sent;              /* first transmissions (per link) */
    uint64_t resent;            /* retransmissions (per link) */
    uint64_t committed;         /* fates: acked by every routed link */
    uint64_t rejected;          /* fates: a consumer refused it */
    uint64_t unrouted;          /* fates: no consumer subscribed to the hook */
    uint64_t unacked;           /* fates: still in the ring at shutdown */
    uint64_t in_ring;           /* entries now in the ring */
    uint64_t credit;            /* credit left, summed over links */
    uint64_t consumer_restarts; /* a link saw a new consumer epoch */
    uint64_t peer_timeouts;     /* a link's consumer went silent */
    uint64_t stale_acks;        /* acks for unknown seqs or another epoch */
    uint64_t send_again;        /* sends that would block (retried later) */
};

struct stream_producer;
struct stream_producer *stream_producer_new(const struct stream_producer_opts *o);
/* Writes the fate of every batch still in the ring ("unacked") to the ledger. */
void stream_producer_destroy(struct stream_producer **p);
/* Adds a link to a consumer's ROUTER endpoint. */
int stream_producer_connect(struct stream_producer *p, const char *endpoint);
uint64_t stream_producer_epoch(const struct stream_producer *p);
/* Handles incoming grants, acks and heartbeats, sends what credit allows and the
 * heartbeats due; waits up to timeout_ms for something to arrive. 0 or negative. */
int stream_producer_poll(struct stream_producer *p, int timeout_ms);
/* True once every link's consumer has announced its subscription. */
bool stream_producer_ready(const struct stream_producer *p);
/* Once ready: where to resume the source for `hooks` (those this producer publishes):
 * the smallest committed cursor over every link subscribed to one of them. 0 with
 * *out; SF_NOTFOUND when some link subscribed to one of the hooks has committed
 * nothing for it (start from the beginning); SF_ESTATE (logged) when a link's cursor
 * belongs to a source other than source_id. */
int stream_producer_resume_point(const struct stream_producer *p, const char *const *hooks,
                                 size_t n_hooks, const char *source_id, struct stream_cursor *out);
/* Free ring slots. */
size_t stream_producer_room(const struct stream_producer *p);
/* Stamps b with producer id, epoch, next seq and schema version, encodes it (b's
 * buffers are not kept) and queues it for the links subscribed to its hook. 0,
 * SF_AGAIN (ring full: poll and retry), SF_EINVAL (invalid batch, nothing queued). */
int stream_producer_publish(struct stream_producer *p, Saeflow__ActivationBatch *b);
/* Announces that nothing more will be published (heartbeat status "done"). */
void stream_producer_finish(struct stream_producer *p);
/* True when the ring is empty (every batch has its fate). */
bool stream_producer_drained(const struct stream_producer *p);
void stream_producer_stats(const struct stream_producer *p, struct stream_producer_stats *out);

/* ---- consumer ---- */
struct stream_consumer_opts {
    const char *consumer_id;
    uint64_t epoch;           /* 0 = wall clock in ms */
    const char *endpoint;     /* bound (ROUTER) */
    const char *const *hooks; /* hooks wanted; n_hooks == 0 = every hook */
    size_t n_hooks;
    size_t credit_window; /* most batches outstanding per producer (default 8) */
    int heartbeat_ms;     /* default 250 */
    int peer_timeout_ms;  /* default 3000 */
    size_t max_msg_bytes; /* wire cap; 0 = wire default */
};
void stream_consumer_opts_default(struct stream_consumer_opts *o);

struct stream_consumer_stats {
    uint64_t delivered;      /* new batches handed to the application */
    uint64_t dup_committed;  /* duplicates of committed batches (re-acked) */
    uint64_t dup_pending;    /* duplicates of batches not yet committed */
    uint64_t unwanted;       /* batches for hooks not consumed here (Ack REJECTED) */
    uint64_t over_credit;    /* batches received beyond the credit granted */
    uint64_t committed;      /* batches committed (acked TRAINED) */
    uint64_t pending;        /* batches delivered, not yet committed */
    uint64_t credit_granted; /* credits granted in total */
    uint64_t credit_resyncs; /* outstanding credit reset after a lost grant */
    uint64_t producers_live; /* producers heard within peer_timeout */
    uint64_t producer_timeouts;
    uint64_t rejected_frames; /* malformed / oversized frames (see wire stats) */
    uint64_t other_msgs;      /* valid frames of kinds a consumer ignores */
    uint64_t dup_source;      /* batches at or before the committed source cursor (acked) */
    uint64_t source_overlap;  /* batches starting before the committed cursor (trained) */
    uint64_t source_mismatch; /* batches of another source than committed (rejected) */
    uint64_t resumes_sent;    /* Resume messages sent */
};

/* A batch handed to the application. */
struct stream_delivery {
    struct wire_msg msg; /* msg.batch is the batch */
};
void stream_delivery_fini(struct stream_delivery *d);

struct stream_consumer;
struct stream_consumer *stream_consumer_new(const struct stream_consumer_opts *o);
void stream_consumer_destroy(struct stream_consumer **c);
uint64_t stream_consumer_epoch(const struct stream_consumer *c);
/* The wire socket (for its reject counters / Prometheus samples). Borrowed. */
const struct wire_sock *stream_consumer_sock(const struct stream_consumer *c);
/* Waits up to timeout_ms for the next new batch, handling control messages, duplicates
 * and heartbeats on the way. 0 (a batch in *d, now pending), SF_AGAIN (none), or a
 * negative error. d is finished first (zero it before the first call). */
int stream_consumer_recv(struct stream_consumer *c, struct stream_delivery *d, int timeout_ms);
/* The application has room for `room_batches` more batches (beyond those already
 * outstanding): grants credit accordingly. */
int stream_consumer_set_room(struct stream_consumer *c, size_t room_batches);
/* Text of every (producer, epoch)'s committed + pending seqs, for a checkpoint. */
int stream_consumer_state(const struct stream_consumer *c, struct buf *out);
/* Restores a state written by stream_consumer_state (all of it counts as committed).
 * Validates the text: SF_EFORMAT when malformed. Call before receiving. */
int stream_consumer_restore(struct stream_consumer *c, const char *text, size_t len);
/* Parses a state text without a consumer: fn(ud, producer, epoch, first, last,
 * first_of_line) for each range, in order; a negative return from fn stops parsing
 * (SF_ENOMEM is passed through, anything else makes the text malformed). 0 or
 * SF_EFORMAT (logged). The format: "saeflow-stream-state 1\n", then per (producer,
 * epoch) one line "<producer> <epoch> <first>-<last> ..." with sorted, disjoint,
 * non-adjacent ranges. */
typedef int (*stream_state_fn)(void *ud, const char *producer, uint64_t epoch, uint64_t first,
                               uint64_t last, bool first_of_line);
int stream_state_parse(const char *text, size_t len, stream_state_fn fn, void *ud);
/* The committed source cursors (for a checkpoint, beside stream_consumer_state):
 * "saeflow-source-state 1\n", then per (producer, hook) the frontier (every source
 * token before it committed) "<producer> <hook> <source_id> F 0 <cursor>" and each
 * batch committed beyond a hole "<producer> <hook> <source_id> A <from> <cursor>",
 * <cursor> = "<position> <source_epoch> <file_index> <byte_offset> <doc_token> <doc_id>
 * <captured>". Pending batches are included (they are in the checkpoint). Resume
 * messages carry the frontier. */
int stream_consumer_source_state(const struct stream_consumer *c, struct buf *out);
/* Restores it (call before receiving): SF_EFORMAT when malformed. */
int stream_consumer_source_restore(struct stream_consumer *c, const char *text, size_t len);
typedef int (*stream_source_fn)(void *ud, const char *producer, const char *hook, bool ahead,
                                uint64_t from, const struct stream_cursor *cur);
/* Parses a source state text: fn for each line (a negative return stops: SF_ENOMEM
 * passes through, anything else makes the text malformed). 0 or SF_EFORMAT (logged);
 * a (producer, hook) repeated is malformed. */
int stream_source_state_parse(const char *text, size_t len, stream_source_fn fn, void *ud);
/* Opens the consumer ledger ("producer epoch seq ckpt hook tokens from to" lines; from
 * and to are the batch's source stream range, "-" when it has none), dropping lines whose
 * ckpt is above `loaded_ckpt` (they belong to a checkpoint that never became durable).
 * NULL path: no ledger. */
int stream_consumer_ledger_open(struct stream_consumer *c, const char *path, uint64_t loaded_ckpt);
/* Appends the pending batches tagged `ckpt` to the ledger and fsyncs it. */
int stream_consumer_ledger_append(struct stream_consumer *c, uint64_t ckpt);
/* Pending -> committed; sends Ack TRAINED for them. */
int stream_consumer_commit(struct stream_consumer *c);
/* True when some producer is blocked (ring full) or done and has pending batches:
 * a commit now unblocks it. */
bool stream_consumer_commit_wanted(const struct stream_consumer *c);
/* True when at least one producer was heard and every producer heard (and not gone
 * silent for peer_timeout without saying "done") has said "done"
 * (published and sent everything: no more new batches will come unless a consumer
 * restart or lost acks make it resend). The application may then train what it holds
 * below its usual refill point. */
bool stream_consumer_producers_done(const struct stream_consumer *c);
/* True when at least one producer was heard and every producer heard is done, has
 * nothing pending here and nothing outstanding. */
bool stream_consumer_all_done(const struct stream_consumer *c);
void stream_consumer_stats(const struct stream_consumer *c, struct stream_consumer_stats *out);

#endif

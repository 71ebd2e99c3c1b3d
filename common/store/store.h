/* store: saeflow's only wrapper around RocksDB (nothing else calls rocksdb_*).
 *
 * A store is one RocksDB database with named column families. Each database has
 * one owning process that opens it read-write (RocksDB's LOCK file enforces this:
 * a second writer gets SF_ESTATE, "store is owned by another process"); other
 * processes open it read-only (a fixed snapshot) or as a secondary instance that
 * follows the writer through store_catch_up().
 *
 *   static const char *const cfs[] = {"stats", "examples"};   // index 0, 1
 *   struct store *s;
 *   if (store_open(&s, "/data/features", cfs, 2, STORE_CREATE) < 0) return ...;
 *   store_put(s, 0, key, klen, val, vlen, true);               // durable on return
 *   void *v; size_t vn;
 *   if (store_get(s, 1, key, klen, &v, &vn) == 0) { ...; store_free(v); }
 *   store_close(&s);
 *
 * Column families are addressed by index: index i < n_cfs is cfs[i] as passed to
 * the open call; then "default" (if not listed) and any other column families the
 * database already has. store_cf_find() looks one up by name.
 *
 * Errors: every RocksDB failure is logged once here (event store_error with op=,
 * path= and RocksDB's message) and returned as SF_EIO (I/O), SF_EFORMAT
 * (corruption), SF_EINVAL, SF_EUNSUP, SF_ETIMEOUT or SF_ESTATE (lock held by another
 * owner, or a write on a read-only/secondary store). Callers need not log again.
 *
 * Threads: a store may be used from several threads at once (get, put, delete,
 * batch commits, new iterators); one batch or iterator belongs to one thread.
 * fork(): RocksDB's background threads do not survive it. A child that is to use
 * RocksDB must be a fresh exec'd program (or fork before the parent's first open),
 * never a bare fork of a process that has opened a store.
 *
 * Ownership: store_get() returns a malloc'd value the caller frees with
 * store_free() (or free()); iterator keys/values are borrowed until the iterator
 * moves; batches and iterators must be destroyed before their store is closed.
 *
 * Stored values should be records (record.h) so that they are versioned and
 * checksummed; keys that embed integers use the big-endian store_key_* helpers
 * below so that iteration order equals numeric order. */
#ifndef SAEFLOW_STORE_STORE_H
#define SAEFLOW_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

struct store;
struct store_batch;
struct store_iter;

enum store_flags {
    STORE_CREATE = 1 << 0,   /* create the database and missing column families */
    STORE_READONLY = 1 << 1, /* open a read-only snapshot (no LOCK taken) */
};

/* Tuning for store_open_opts(); zero fields mean RocksDB's defaults. */
struct store_opts {
    int flags;                /* STORE_CREATE | STORE_READONLY */
    size_t write_buffer_size; /* memtable bytes per column family (default 64 MiB) */
};

/* Opens (or with STORE_CREATE creates) the database at `path` with the column
 * families cfs[0..n_cfs) (unique names; "default" may be listed or not).
 * Returns 0 and *out, SF_NOTFOUND (*out NULL) when there is no database at `path`
 * and STORE_CREATE is not set, SF_ESTATE when another owner holds the LOCK,
 * or another negative code. Without STORE_CREATE a listed column family must exist
 * (else SF_EINVAL). A missing database is logged as a warning, not an error.
 *
 * STORE_CREATE creates only a new store: `path` absent, empty, or holding just what
 * an interrupted creation leaves (no CURRENT, MANIFEST, table or log file). An
 * existing store is opened as it is, never created over or repaired: a writer's open
 * refuses, with SF_EFORMAT and a logged reason (event store_damaged), a store whose
 * CURRENT is missing, truncated or names no readable MANIFEST, whose MANIFEST ends
 * inside a record (lost its tail), or which lacks a table file the MANIFEST lists;
 * its files are left as they were (only RocksDB's info LOG may rotate). A non-empty
 * directory that is not a store gives SF_EINVAL. */
int store_open(struct store **out, const char *path, const char *const *cfs, size_t n_cfs,
               int flags);
int store_open_opts(struct store **out, const char *path, const char *const *cfs, size_t n_cfs,
                    const struct store_opts *opts);
/* Opens a secondary instance of the database at `path` (owned by another process
 * or by this one): reads see the primary's state as of the last store_catch_up().
 * `secondary_path` is a private directory (created if missing) for the secondary's
 * own info log; each secondary needs its own. Writes return SF_ESTATE. */
int store_open_secondary(struct store **out, const char *path, const char *secondary_path,
                         const char *const *cfs, size_t n_cfs);
/* Secondary only: replays what the primary has written since the last catch-up
 * (WAL and MANIFEST). Existing iterators keep their old view. On failure the old
 * view stays readable; a polling reader just tries again on its next tick. */
int store_catch_up(struct store *s);
/* Closes and frees; NULL-safe; nulls *s. Unsynced writes stay in the WAL. */
void store_close(struct store **s);

const char *store_path(const struct store *s);
bool store_is_writable(const struct store *s);
/* Number of open column families (n_cfs passed at open, plus "default" and any
 * others the database already had). */
size_t store_cf_count(const struct store *s);
/* Name of column family `cf` (borrowed), or NULL if out of range. */
const char *store_cf_name(const struct store *s, size_t cf);
/* 0 and *cf = its index, or SF_NOTFOUND. */
int store_cf_find(const struct store *s, const char *name, size_t *cf);

/* ---- single operations ---- */
/* 0 with *val (malloc'd, caller frees with store_free; never NULL, even for an
 * empty value) and *vlen; SF_NOTFOUND (positive) when the key is absent. */
int store_get(struct store *s, size_t cf, const void *key, size_t klen, void **val, size_t *vlen);
/* sync = true: returns after the write is fsync'ed to the WAL. */
int store_put(struct store *s, size_t cf, const void *key, size_t klen, const void *val,
              size_t vlen, bool sync);
/* Deleting an absent key succeeds. */
int store_delete(struct store *s, size_t cf, const void *key, size_t klen, bool sync);
void store_free(void *p);
/* Writes every column family's memtable to SST files and waits. */
int store_flush(struct store *s);

/* ---- atomic write batches: all of a batch's writes land together or none do ---- */
/* NULL on allocation failure (logged). The batch copies keys and values. */
struct store_batch *store_batch_new(struct store *s);
int store_batch_put(struct store_batch *b, size_t cf, const void *key, size_t klen, const void *val,
                    size_t vlen);
int store_batch_delete(struct store_batch *b, size_t cf, const void *key, size_t klen);
size_t store_batch_count(const struct store_batch *b); /* operations queued */
void store_batch_clear(struct store_batch *b);
/* Applies the batch atomically (sync: fsync'ed before return) and clears it, so it
 * can be reused; on failure the batch is left as it was and nothing was applied. */
int store_batch_commit(struct store_batch *b, bool sync);
void store_batch_destroy(struct store_batch **b);

/* ---- iterators: a consistent snapshot of one column family, in key order ---- */
/* Iterates column family `cf`, restricted to keys that begin with prefix[0..plen)
 * (plen 0: every key). Starts unpositioned: call a seek first. NULL on failure. */
struct store_iter *store_iter_new(struct store *s, size_t cf, const void *prefix, size_t plen);
void store_iter_seek_first(struct store_iter *it); /* first key with the prefix */
void store_iter_seek_last(struct store_iter *it);  /* last key with the prefix */
/* First key >= key (within the prefix). */
void store_iter_seek(struct store_iter *it, const void *key, size_t klen);
bool store_iter_valid(const struct store_iter *it);
void store_iter_next(struct store_iter *it);
void store_iter_prev(struct store_iter *it);
/* Borrowed until the iterator moves or is destroyed; only while valid. */
const void *store_iter_key(const struct store_iter *it, size_t *klen);
const void *store_iter_value(const struct store_iter *it, size_t *vlen);
/* 0, or the error that ended iteration early (logged). Check after a loop. */
int store_iter_status(struct store_iter *it);
void store_iter_destroy(struct store_iter **it);

/* ---- checkpoints ---- */
/* Writes an openable copy of the whole database to `dir`, which must not exist
 * (its parent must). Hard-links SST files where possible. Primary stores only. */
int store_checkpoint(struct store *s, const char *dir);

/* ---- key building: big-endian so that byte order equals numeric order ---- */
#define STORE_KEY_MAX 256
struct store_key {
    uint8_t b[STORE_KEY_MAX];
    size_t len;
    int err; /* SF_ERANGE once something did not fit (sticky) */
};
void store_key_init(struct store_key *k);
void store_key_u8(struct store_key *k, uint8_t v);
void store_key_u16(struct store_key *k, uint16_t v);
void store_key_u32(struct store_key *k, uint32_t v);
void store_key_u64(struct store_key *k, uint64_t v);
void store_key_i64(struct store_key *k, int64_t v); /* sign bit flipped: orders signed */
void store_key_f32(struct store_key *k, float v);   /* total order: -inf < ... < +inf */
void store_key_raw(struct store_key *k, const void *p, size_t n);
void store_key_str(struct store_key *k, const char *s); /* bytes, no terminator */

/* Raw big-endian helpers on memory (no bounds checks). */
void store_be32_put(uint8_t *p, uint32_t v);
void store_be64_put(uint8_t *p, uint64_t v);
uint32_t store_be32_get(const uint8_t *p);
uint64_t store_be64_get(const uint8_t *p);
/* Inverse of store_key_i64 / store_key_f32 on 8 / 4 bytes. */
int64_t store_key_get_i64(const uint8_t *p);
float store_key_get_f32(const uint8_t *p);

#endif

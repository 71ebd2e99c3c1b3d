/* store: the RocksDB wrapper (see store.h). Every rocksdb_* call in saeflow is here.
 *
 * RocksDB's C API reports failures as a malloc'd message in `char *err`; store_fail()
 * turns that into one log line and an SF_* code. */
#include "store/store.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <rocksdb/c.h>

enum store_mode { MODE_PRIMARY, MODE_READONLY, MODE_SECONDARY };

struct store {
    rocksdb_t *db;
    char *path;
    enum store_mode mode;
    size_t n_cf;
    char **cf_names;                     /* (n_cf) */
    rocksdb_column_family_handle_t **cf; /* (n_cf) */
    rocksdb_options_t *opts;
    rocksdb_readoptions_t *ro;
    rocksdb_writeoptions_t *wo;
    rocksdb_writeoptions_t *wo_sync;
};

struct store_batch {
    struct store *s;
    rocksdb_writebatch_t *wb;
};

struct store_iter {
    struct store *s;
    rocksdb_iterator_t *it;
    rocksdb_readoptions_t *ro; /* must outlive `it`: it points at the bounds below */
    uint8_t *lower;            /* the prefix (NULL when plen == 0) */
    size_t lower_len;
    uint8_t *upper; /* first key after every key with the prefix, or NULL */
    size_t upper_len;
    bool logged;
};

static const char *const mode_names[] = {"primary", "readonly", "secondary"};

/* ---- errors ---- */

/* Copies RocksDB's message into `out` with quotes and newlines made logfmt-safe. */
static void msg_clean(char *out, size_t cap, const char *msg)
{
    size_t i = 0;
    for (; msg && msg[i] && i + 1 < cap; i++) {
        char c = msg[i];
        out[i] = (c == '"' || c == '\\') ? '\'' : (c == '\n' || c == '\r') ? ' ' : c;
    }
    out[i] = '\0';
}

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* RocksDB's Status::ToString() text -> our return code. */
static int map_status(const char *msg)
{
    if (strstr(msg, "/LOCK:") || strstr(msg, "lock hold by current process") ||
        strstr(msg, "While lock file"))
        return SF_ESTATE;
    if (starts_with(msg, "Corruption")) return SF_EFORMAT;
    if (starts_with(msg, "Invalid argument")) return SF_EINVAL;
    if (starts_with(msg, "Not implemented")) return SF_EUNSUP;
    if (starts_with(msg, "Operation timed out") || starts_with(msg, "Operation expired"))
        return SF_ETIMEOUT;
    if (starts_with(msg, "NotFound")) return SF_EIO; /* a file vanished under us */
    return SF_EIO;
}

/* Logs RocksDB's error once, frees it and returns the mapped code. */
static int store_fail(const char *op, const char *path, char *err)
{
    char msg[512];
    msg_clean(msg, sizeof msg, err ? err : "unknown error");
    int rc = map_status(msg);
    if (rc == SF_ESTATE && strcmp(op, "open") == 0)
        log_error("store_locked", "op=%s path=\"%s\" reason=\"%s\" msg=\"%s\"", op, path,
                  strstr(msg, "current process")
                      ? "store is already open for writing in this process"
                      : "store is owned by another process",
                  msg);
    else if (rc == SF_EFORMAT && strcmp(op, "open") == 0)
        log_error("store_damaged",
                  "op=%s path=\"%s\" reason=\"RocksDB refused the store as corrupt (a table "
                  "file missing or damaged?); nothing was repaired\" msg=\"%s\"",
                  op, path, msg);
    else
        log_error("store_error", "op=%s path=\"%s\" rc=%s msg=\"%s\"", op, path, sf_strerror(rc),
                  msg);
    rocksdb_free(err);
    return rc;
}

static int check_cf(const struct store *s, size_t cf, const char *op)
{
    if (cf < s->n_cf) return 0;
    log_error("store_error",
              "op=%s path=\"%s\" reason=\"no such column family index\" cf=%zu "
              "n_cf=%zu",
              op, s->path, cf, s->n_cf);
    return SF_EINVAL;
}

static int check_writable(const struct store *s, const char *op)
{
    if (s->mode == MODE_PRIMARY) return 0;
    log_error("store_error", "op=%s path=\"%s\" reason=\"store is %s: writes not allowed\"", op,
              s->path, mode_names[s->mode]);
    return SF_ESTATE;
}

/* ---- open / close ---- */

static char *str_dup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

/* ---- what is at the path: new, a store, or something to refuse ----
 *
 * RocksDB opened with create_if_missing on a directory whose CURRENT is missing
 * writes a fresh, empty database over the old files and deletes the old tables as
 * obsolete; one whose MANIFEST lost its tail recovers an older version and deletes
 * the newer tables. So a writer creates only where nothing is stored yet, and opens
 * an existing store only after checking CURRENT and the MANIFEST's record framing,
 * before RocksDB touches a file. */

enum dir_kind {
    DIR_NEW,     /* absent, empty, or an interrupted creation (no data files) */
    DIR_STORE,   /* has CURRENT */
    DIR_DAMAGED, /* data files but no CURRENT */
    DIR_FOREIGN, /* files that are not RocksDB's */
    DIR_ERROR,   /* not a directory, unreadable */
};

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Files RocksDB writes that hold no data (what an interrupted creation leaves). */
static bool is_bookkeeping(const char *name)
{
    return !strcmp(name, "LOCK") || !strcmp(name, "IDENTITY") || starts_with(name, "LOG") ||
           starts_with(name, "OPTIONS-") || ends_with(name, ".dbtmp") ||
           !strcmp(name, "MANIFEST-000001");
}

static bool is_data_file(const char *name)
{
    return ends_with(name, ".sst") || ends_with(name, ".ldb") || ends_with(name, ".log") ||
           ends_with(name, ".blob") || starts_with(name, "MANIFEST-");
}

static enum dir_kind dir_classify(const char *path, char *why, size_t cap)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT) return DIR_NEW;
        snprintf(why, cap, "cannot stat the directory: %s", strerror(errno));
        return DIR_ERROR;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(why, cap, "not a directory");
        return DIR_ERROR;
    }
    DIR *d = opendir(path);
    if (!d) {
        snprintf(why, cap, "cannot read the directory: %s", strerror(errno));
        return DIR_ERROR;
    }
    bool current = false;
    size_t data = 0, foreign = 0;
    char first_foreign[256] = "";
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *n = e->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..")) continue;
        if (!strcmp(n, "CURRENT"))
            current = true;
        else if (is_data_file(n) && strcmp(n, "MANIFEST-000001") != 0)
            data++;
        else if (!is_bookkeeping(n) && foreign++ == 0)
            snprintf(first_foreign, sizeof first_foreign, "%s", n);
    }
    closedir(d);
    if (current) return DIR_STORE;
    if (data) {
        snprintf(why, cap,
                 "CURRENT is missing but %zu table/log/MANIFEST files are there: the store "
                 "is damaged",
                 data);
        return DIR_DAMAGED;
    }
    if (foreign) {
        snprintf(why, cap, "the directory is not empty (%s) and is not a store", first_foreign);
        return DIR_FOREIGN;
    }
    return DIR_NEW;
}

/* RocksDB's log format (the MANIFEST is one): 32 KiB blocks of records, each a 7-byte
 * header (crc32c, u16 length, u8 type; 11 bytes for the recyclable types 5..8) and
 * its payload; a block's last < 7 bytes are zero padding; an edit spans FIRST, MIDDLE*,
 * LAST fragments or is one FULL record. A file that ends inside a header, a payload or
 * a fragmented edit lost its tail. */
enum { LOG_BLOCK = 32768, LOG_HEADER = 7, LOG_RECYCLE_HEADER = 11 };

static int manifest_check(const uint8_t *p, size_t n, char *why, size_t cap)
{
    size_t pos = 0, records = 0;
    bool in_edit = false;
    while (pos < n) {
        size_t left = LOG_BLOCK - pos % LOG_BLOCK;
        if (left < LOG_HEADER) { /* trailer padding */
            pos += left;
            continue;
        }
        if (n - pos < LOG_HEADER) {
            snprintf(why, cap, "MANIFEST ends inside a record header at byte %zu (truncated)", pos);
            return SF_EFORMAT;
        }
        size_t len = (size_t)p[pos + 4] | (size_t)p[pos + 5] << 8;
        uint8_t type = p[pos + 6];
        if (type == 0 && len == 0) { /* preallocated zeros: the rest of the block */
            pos += left;
            continue;
        }
        if (type == 0 || type > 8) {
            snprintf(why, cap, "MANIFEST has an unknown record type %u at byte %zu", type, pos);
            return SF_EFORMAT;
        }
        size_t hsize = type >= 5 ? LOG_RECYCLE_HEADER : LOG_HEADER;
        if (pos + hsize + len > n) {
            snprintf(why, cap,
                     "MANIFEST ends inside a record at byte %zu of %zu (truncated: edits lost)",
                     pos, n);
            return SF_EFORMAT;
        }
        if (hsize + len > left) {
            snprintf(why, cap, "MANIFEST record at byte %zu crosses a block boundary", pos);
            return SF_EFORMAT;
        }
        uint8_t t = type >= 5 ? (uint8_t)(type - 4) : type; /* 1 FULL 2 FIRST 3 MIDDLE 4 LAST */
        if ((t == 1 || t == 2) && in_edit) {
            snprintf(why, cap, "MANIFEST has an unfinished edit before byte %zu", pos);
            return SF_EFORMAT;
        }
        if ((t == 3 || t == 4) && !in_edit) {
            snprintf(why, cap, "MANIFEST has a stray edit fragment at byte %zu", pos);
            return SF_EFORMAT;
        }
        in_edit = t == 2 || t == 3;
        if (t == 1 || t == 4) records++;
        pos += hsize + len;
    }
    if (in_edit) {
        snprintf(why, cap, "MANIFEST ends inside an edit (truncated: edits lost)");
        return SF_EFORMAT;
    }
    if (records == 0) {
        snprintf(why, cap, "MANIFEST is empty");
        return SF_EFORMAT;
    }
    return 0;
}

/* CURRENT names the live MANIFEST ("MANIFEST-000123\n"); checks both. */
static int store_check_files(const char *path, char *why, size_t cap)
{
    struct buf p;
    buf_init(&p, 8192);
    char *cur = NULL;
    size_t cur_len = 0, man_len = 0;
    int fd = -1;
    int rc = SF_ENOMEM;
    if (buf_printf(&p, "%s/CURRENT", path) != 0) goto out;
    rc = file_read_all(p.data, 4096, &cur, &cur_len);
    if (rc) {
        snprintf(why, cap, "CURRENT cannot be read (%s)", sf_strerror(rc));
        rc = SF_EFORMAT;
        goto out;
    }
    size_t name_len = cur_len && cur[cur_len - 1] == '\n' ? cur_len - 1 : 0;
    bool ok = name_len > 9 && starts_with(cur, "MANIFEST-");
    for (size_t i = 9; ok && i < name_len; i++) ok = cur[i] >= '0' && cur[i] <= '9';
    if (!ok) {
        snprintf(why, cap, "CURRENT is truncated or damaged (%zu bytes, want MANIFEST-<number>)",
                 cur_len);
        rc = SF_EFORMAT;
        goto out;
    }
    cur[name_len] = '\0';
    buf_reset(&p);
    rc = SF_ENOMEM;
    if (buf_printf(&p, "%s/%s", path, cur) != 0) goto out;
    /* mapped, not read: a MANIFEST may grow to max_manifest_file_size (1 GiB) */
    fd = open(p.data, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        snprintf(why, cap, "%s named by CURRENT cannot be read (%s)", cur, strerror(errno));
        rc = SF_EFORMAT;
        goto out;
    }
    man_len = (size_t)st.st_size;
    if (man_len == 0) {
        snprintf(why, cap, "%s named by CURRENT is empty", cur);
        rc = SF_EFORMAT;
        goto out;
    }
    void *map = mmap(NULL, man_len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        snprintf(why, cap, "%s named by CURRENT cannot be mapped (%s)", cur, strerror(errno));
        rc = SF_EFORMAT;
        goto out;
    }
    rc = manifest_check(map, man_len, why, cap);
    munmap(map, man_len);
out:
    if (fd >= 0) close(fd);
    free(cur);
    buf_fini(&p);
    return rc;
}

static void store_free_fields(struct store *s)
{
    for (size_t i = 0; i < s->n_cf; i++) {
        if (s->cf && s->cf[i]) rocksdb_column_family_handle_destroy(s->cf[i]);
        if (s->cf_names) free(s->cf_names[i]);
    }
    free(s->cf);
    free(s->cf_names);
    if (s->db) rocksdb_close(s->db);
    if (s->opts) rocksdb_options_destroy(s->opts);
    if (s->ro) rocksdb_readoptions_destroy(s->ro);
    if (s->wo) rocksdb_writeoptions_destroy(s->wo);
    if (s->wo_sync) rocksdb_writeoptions_destroy(s->wo_sync);
    free(s->path);
    free(s);
}

void store_close(struct store **sp)
{
    if (!sp || !*sp) return;
    struct store *s = *sp;
    *sp = NULL;
    log_debug("store_closed", "path=\"%s\" mode=%s", s->path, mode_names[s->mode]);
    store_free_fields(s);
}

static int find_name(char *const *names, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(names[i], name) == 0) return (int)i;
    return -1;
}

/* Appends `name` to s->cf_names unless present. */
static int add_cf_name(struct store *s, const char *name)
{
    if (find_name(s->cf_names, s->n_cf, name) >= 0) return 0;
    char **names = realloc(s->cf_names, (s->n_cf + 1) * sizeof *names);
    if (!names) return SF_ENOMEM;
    s->cf_names = names;
    if (!(names[s->n_cf] = str_dup(name))) return SF_ENOMEM;
    s->n_cf++;
    return 0;
}

static int store_open_mode(struct store **out, const char *path, const char *secondary_path,
                           const char *const *cfs, size_t n_cfs, int flags,
                           size_t write_buffer_size, enum store_mode mode)
{
    *out = NULL;
    if (!path || !*path || (n_cfs && !cfs) || n_cfs > 4096) {
        log_error("store_open_failed", "reason=\"bad arguments\"");
        return SF_EINVAL;
    }
    for (size_t i = 0; i < n_cfs; i++) {
        if (!cfs[i] || !*cfs[i]) {
            log_error("store_open_failed", "path=\"%s\" reason=\"empty column family name\"", path);
            return SF_EINVAL;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfs[i], cfs[j]) == 0) {
                log_error("store_open_failed",
                          "path=\"%s\" reason=\"duplicate column family\" cf=%s", path, cfs[i]);
                return SF_EINVAL;
            }
    }
    bool create = (flags & STORE_CREATE) && mode == MODE_PRIMARY;
    char why[512] = "";
    enum dir_kind kind = dir_classify(path, why, sizeof why);
    bool exists = kind == DIR_STORE;
    if (kind == DIR_NEW && !create) {
        log_warn("store_missing", "path=\"%s\" mode=%s reason=\"no database at path\"", path,
                 mode_names[mode]);
        return SF_NOTFOUND;
    }
    if (kind == DIR_ERROR || kind == DIR_FOREIGN || kind == DIR_DAMAGED) {
        log_error("store_open_failed", "path=\"%s\" mode=%s reason=\"%s\"", path, mode_names[mode],
                  why);
        return kind == DIR_ERROR ? SF_EIO : kind == DIR_FOREIGN ? SF_EINVAL : SF_EFORMAT;
    }
    /* A writer never creates or repairs over an existing store: refuse a damaged one
     * before RocksDB can delete what it cannot see. */
    if (exists && mode == MODE_PRIMARY) {
        int crc = store_check_files(path, why, sizeof why);
        if (crc) {
            log_error("store_damaged",
                      "path=\"%s\" reason=\"%s\" hint=\"nothing was changed; copy the "
                      "directory aside before any repair\"",
                      path, why);
            return crc == SF_ENOMEM ? SF_ENOMEM : SF_EFORMAT;
        }
    }
    if (!exists && file_mkdirs(path, 0755) != 0) {
        log_error("store_open_failed", "path=\"%s\" reason=\"cannot create directory\"", path);
        return SF_EIO;
    }

    struct store *s = calloc(1, sizeof *s);
    int rc = SF_ENOMEM;
    char *err = NULL;
    char **existing = NULL;
    size_t n_existing = 0;
    const rocksdb_options_t **cf_opts = NULL;
    if (!s || !(s->path = str_dup(path))) goto out;
    s->mode = mode;

    s->opts = rocksdb_options_create();
    /* Only a new store is created; an existing one must open as it is (paranoid:
     * a missing or damaged table file fails the open instead of being skipped).
     * Adding a column family the caller asks for is not a repair. */
    rocksdb_options_set_create_if_missing(s->opts, create && !exists);
    rocksdb_options_set_create_missing_column_families(s->opts, create);
    rocksdb_options_set_paranoid_checks(s->opts, 1);
    rocksdb_options_set_keep_log_file_num(s->opts, 4);
    rocksdb_options_set_max_log_file_size(s->opts, 4u << 20);
    if (write_buffer_size) rocksdb_options_set_write_buffer_size(s->opts, write_buffer_size);
    if (mode == MODE_SECONDARY) rocksdb_options_set_max_open_files(s->opts, -1);

    /* RocksDB refuses a read-write open that leaves out an existing column family:
     * open the union of what was asked and what is there. */
    for (size_t i = 0; i < n_cfs; i++)
        if ((rc = add_cf_name(s, cfs[i]))) goto out;
    if ((rc = add_cf_name(s, "default"))) goto out;
    if (exists) {
        existing = rocksdb_list_column_families(s->opts, path, &n_existing, &err);
        if (err) {
            rc = store_fail("list_column_families", path, err);
            err = NULL;
            goto out;
        }
        for (size_t i = 0; i < n_existing; i++)
            if ((rc = add_cf_name(s, existing[i]))) goto out;
        if (!create)
            for (size_t i = 0; i < n_cfs; i++)
                if (find_name(existing, n_existing, cfs[i]) < 0) {
                    log_error("store_open_failed",
                              "path=\"%s\" mode=%s cf=%s reason=\"column family does not "
                              "exist (a primary opened with STORE_CREATE adds it)\"",
                              path, mode_names[mode], cfs[i]);
                    rc = SF_EINVAL;
                    goto out;
                }
    }

    rc = SF_ENOMEM;
    s->cf = calloc(s->n_cf, sizeof *s->cf);
    cf_opts = calloc(s->n_cf, sizeof *cf_opts);
    if (!s->cf || !cf_opts) goto out;
    for (size_t i = 0; i < s->n_cf; i++) cf_opts[i] = s->opts;

    const char *const *names = (const char *const *)s->cf_names;
    if (mode == MODE_PRIMARY)
        s->db =
            rocksdb_open_column_families(s->opts, path, (int)s->n_cf, names, cf_opts, s->cf, &err);
    else if (mode == MODE_READONLY)
        s->db = rocksdb_open_for_read_only_column_families(s->opts, path, (int)s->n_cf, names,
                                                           cf_opts, s->cf, 0, &err);
    else
        s->db = rocksdb_open_as_secondary_column_families(
            s->opts, path, secondary_path, (int)s->n_cf, names, cf_opts, s->cf, &err);
    if (err || !s->db) {
        rc = store_fail("open", path, err);
        err = NULL;
        s->db = NULL;
        memset(s->cf, 0, s->n_cf * sizeof *s->cf); /* not filled on failure */
        goto out;
    }
    s->ro = rocksdb_readoptions_create();
    s->wo = rocksdb_writeoptions_create();
    s->wo_sync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(s->wo_sync, 1);
    log_info("store_opened", "path=\"%s\" mode=%s cfs=%zu created=%d", path, mode_names[mode],
             s->n_cf, !exists);
    *out = s;
    s = NULL;
    rc = 0;
out:
    if (rc == SF_ENOMEM)
        log_error("store_open_failed", "path=\"%s\" reason=\"out of memory\"", path);
    if (existing) rocksdb_list_column_families_destroy(existing, n_existing);
    free(cf_opts);
    if (s) store_free_fields(s);
    return rc;
}

int store_open_opts(struct store **out, const char *path, const char *const *cfs, size_t n_cfs,
                    const struct store_opts *opts)
{
    int flags = opts ? opts->flags : 0;
    return store_open_mode(out, path, NULL, cfs, n_cfs, flags, opts ? opts->write_buffer_size : 0,
                           (flags & STORE_READONLY) ? MODE_READONLY : MODE_PRIMARY);
}

int store_open(struct store **out, const char *path, const char *const *cfs, size_t n_cfs,
               int flags)
{
    struct store_opts o = {.flags = flags};
    return store_open_opts(out, path, cfs, n_cfs, &o);
}

int store_open_secondary(struct store **out, const char *path, const char *secondary_path,
                         const char *const *cfs, size_t n_cfs)
{
    *out = NULL;
    if (!secondary_path || !*secondary_path) {
        log_error("store_open_failed", "path=\"%s\" reason=\"no secondary path\"",
                  path ? path : "");
        return SF_EINVAL;
    }
    if (file_mkdirs(secondary_path, 0755) != 0) {
        log_error("store_open_failed",
                  "path=\"%s\" secondary=\"%s\" reason=\"cannot create "
                  "secondary directory\"",
                  path ? path : "", secondary_path);
        return SF_EIO;
    }
    return store_open_mode(out, path, secondary_path, cfs, n_cfs, 0, 0, MODE_SECONDARY);
}

int store_catch_up(struct store *s)
{
    if (s->mode != MODE_SECONDARY) {
        log_error("store_error", "op=catch_up path=\"%s\" reason=\"not a secondary\"", s->path);
        return SF_ESTATE;
    }
    char *err = NULL;
    rocksdb_try_catch_up_with_primary(s->db, &err);
    return err ? store_fail("catch_up", s->path, err) : 0;
}

const char *store_path(const struct store *s)
{
    return s->path;
}

bool store_is_writable(const struct store *s)
{
    return s->mode == MODE_PRIMARY;
}

size_t store_cf_count(const struct store *s)
{
    return s->n_cf;
}

const char *store_cf_name(const struct store *s, size_t cf)
{
    return cf < s->n_cf ? s->cf_names[cf] : NULL;
}

int store_cf_find(const struct store *s, const char *name, size_t *cf)
{
    int i = name ? find_name(s->cf_names, s->n_cf, name) : -1;
    if (i < 0) return SF_NOTFOUND;
    *cf = (size_t)i;
    return 0;
}

/* ---- single operations ---- */

int store_get(struct store *s, size_t cf, const void *key, size_t klen, void **val, size_t *vlen)
{
    *val = NULL;
    *vlen = 0;
    int rc = check_cf(s, cf, "get");
    if (rc) return rc;
    char *err = NULL;
    /* The pinned get tells "absent" apart from "empty value" (plain rocksdb_get
     * returns malloc(0), which may be NULL). */
    rocksdb_pinnableslice_t *ps = rocksdb_get_pinned_cf(s->db, s->ro, s->cf[cf], key, klen, &err);
    if (err) return store_fail("get", s->path, err);
    if (!ps) return SF_NOTFOUND;
    size_t n;
    const char *v = rocksdb_pinnableslice_value(ps, &n);
    char *copy = malloc(n + 1);
    if (!copy) {
        rocksdb_pinnableslice_destroy(ps);
        log_error("store_error", "op=get path=\"%s\" reason=\"out of memory\" len=%zu", s->path, n);
        return SF_ENOMEM;
    }
    if (n) memcpy(copy, v, n);
    copy[n] = '\0';
    rocksdb_pinnableslice_destroy(ps);
    *val = copy;
    *vlen = n;
    return 0;
}

int store_put(struct store *s, size_t cf, const void *key, size_t klen, const void *val,
              size_t vlen, bool sync)
{
    int rc = check_cf(s, cf, "put");
    if (!rc) rc = check_writable(s, "put");
    if (rc) return rc;
    char *err = NULL;
    rocksdb_put_cf(s->db, sync ? s->wo_sync : s->wo, s->cf[cf], key, klen, val, vlen, &err);
    return err ? store_fail("put", s->path, err) : 0;
}

int store_delete(struct store *s, size_t cf, const void *key, size_t klen, bool sync)
{
    int rc = check_cf(s, cf, "delete");
    if (!rc) rc = check_writable(s, "delete");
    if (rc) return rc;
    char *err = NULL;
    rocksdb_delete_cf(s->db, sync ? s->wo_sync : s->wo, s->cf[cf], key, klen, &err);
    return err ? store_fail("delete", s->path, err) : 0;
}

void store_free(void *p)
{
    free(p);
}

int store_flush(struct store *s)
{
    int rc = check_writable(s, "flush");
    if (rc) return rc;
    rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
    rocksdb_flushoptions_set_wait(fo, 1);
    for (size_t i = 0; i < s->n_cf && rc == 0; i++) {
        char *err = NULL;
        rocksdb_flush_cf(s->db, fo, s->cf[i], &err);
        if (err) rc = store_fail("flush", s->path, err);
    }
    rocksdb_flushoptions_destroy(fo);
    return rc;
}

/* ---- batches ---- */

struct store_batch *store_batch_new(struct store *s)
{
    struct store_batch *b = calloc(1, sizeof *b);
    if (!b) {
        log_error("store_error", "op=batch_new reason=\"out of memory\"");
        return NULL;
    }
    b->s = s;
    b->wb = rocksdb_writebatch_create();
    return b;
}

int store_batch_put(struct store_batch *b, size_t cf, const void *key, size_t klen, const void *val,
                    size_t vlen)
{
    int rc = check_cf(b->s, cf, "batch_put");
    if (rc) return rc;
    rocksdb_writebatch_put_cf(b->wb, b->s->cf[cf], key, klen, val, vlen);
    return 0;
}

int store_batch_delete(struct store_batch *b, size_t cf, const void *key, size_t klen)
{
    int rc = check_cf(b->s, cf, "batch_delete");
    if (rc) return rc;
    rocksdb_writebatch_delete_cf(b->wb, b->s->cf[cf], key, klen);
    return 0;
}

size_t store_batch_count(const struct store_batch *b)
{
    /* rocksdb_writebatch_count takes a non-const pointer but does not modify. */
    int n = rocksdb_writebatch_count((rocksdb_writebatch_t *)b->wb);
    return n > 0 ? (size_t)n : 0;
}

void store_batch_clear(struct store_batch *b)
{
    rocksdb_writebatch_clear(b->wb);
}

int store_batch_commit(struct store_batch *b, bool sync)
{
    int rc = check_writable(b->s, "batch_commit");
    if (rc) return rc;
    char *err = NULL;
    rocksdb_write(b->s->db, sync ? b->s->wo_sync : b->s->wo, b->wb, &err);
    if (err) return store_fail("batch_commit", b->s->path, err);
    rocksdb_writebatch_clear(b->wb);
    return 0;
}

void store_batch_destroy(struct store_batch **bp)
{
    if (!bp || !*bp) return;
    rocksdb_writebatch_destroy((*bp)->wb);
    free(*bp);
    *bp = NULL;
}

/* ---- iterators ---- */

struct store_iter *store_iter_new(struct store *s, size_t cf, const void *prefix, size_t plen)
{
    if (check_cf(s, cf, "iter_new")) return NULL;
    struct store_iter *it = calloc(1, sizeof *it);
    if (!it) goto oom;
    it->s = s;
    it->ro = rocksdb_readoptions_create();
    if (plen) {
        if (!(it->lower = malloc(plen)) || !(it->upper = malloc(plen))) goto oom;
        memcpy(it->lower, prefix, plen);
        it->lower_len = plen;
        /* Upper bound: the prefix with its last non-0xff byte incremented and the
         * 0xff tail dropped; none if the prefix is all 0xff. */
        memcpy(it->upper, prefix, plen);
        size_t n = plen;
        while (n && it->upper[n - 1] == 0xff) n--;
        if (n) {
            it->upper[n - 1]++;
            it->upper_len = n;
        } else {
            free(it->upper);
            it->upper = NULL;
        }
        rocksdb_readoptions_set_iterate_lower_bound(it->ro, (const char *)it->lower, it->lower_len);
        if (it->upper)
            rocksdb_readoptions_set_iterate_upper_bound(it->ro, (const char *)it->upper,
                                                        it->upper_len);
    }
    it->it = rocksdb_create_iterator_cf(s->db, it->ro, s->cf[cf]);
    return it;
oom:
    log_error("store_error", "op=iter_new path=\"%s\" reason=\"out of memory\"", s->path);
    store_iter_destroy(&it);
    return NULL;
}

void store_iter_seek_first(struct store_iter *it)
{
    if (it->lower)
        rocksdb_iter_seek(it->it, (const char *)it->lower, it->lower_len);
    else
        rocksdb_iter_seek_to_first(it->it);
}

void store_iter_seek_last(struct store_iter *it)
{
    /* With an upper bound set, RocksDB's SeekToLast lands on the last key below it. */
    rocksdb_iter_seek_to_last(it->it);
}

void store_iter_seek(struct store_iter *it, const void *key, size_t klen)
{
    if (it->lower) {
        size_t m = SF_MIN(klen, it->lower_len);
        int c = memcmp(key, it->lower, m);
        if (c < 0 || (c == 0 && klen < it->lower_len)) {
            store_iter_seek_first(it);
            return;
        }
    }
    rocksdb_iter_seek(it->it, key, klen);
}

bool store_iter_valid(const struct store_iter *it)
{
    return rocksdb_iter_valid(it->it) != 0;
}

void store_iter_next(struct store_iter *it)
{
    if (rocksdb_iter_valid(it->it)) rocksdb_iter_next(it->it);
}

void store_iter_prev(struct store_iter *it)
{
    if (rocksdb_iter_valid(it->it)) rocksdb_iter_prev(it->it);
}

const void *store_iter_key(const struct store_iter *it, size_t *klen)
{
    *klen = 0;
    if (!rocksdb_iter_valid(it->it)) return NULL;
    return rocksdb_iter_key(it->it, klen);
}

const void *store_iter_value(const struct store_iter *it, size_t *vlen)
{
    *vlen = 0;
    if (!rocksdb_iter_valid(it->it)) return NULL;
    return rocksdb_iter_value(it->it, vlen);
}

int store_iter_status(struct store_iter *it)
{
    char *err = NULL;
    rocksdb_iter_get_error(it->it, &err);
    if (!err) return 0;
    if (it->logged) {
        char msg[512];
        msg_clean(msg, sizeof msg, err);
        rocksdb_free(err);
        return map_status(msg);
    }
    it->logged = true;
    return store_fail("iterate", it->s->path, err);
}

void store_iter_destroy(struct store_iter **itp)
{
    if (!itp || !*itp) return;
    struct store_iter *it = *itp;
    if (it->it) rocksdb_iter_destroy(it->it);
    if (it->ro) rocksdb_readoptions_destroy(it->ro);
    free(it->lower);
    free(it->upper);
    free(it);
    *itp = NULL;
}

/* ---- checkpoints ---- */

int store_checkpoint(struct store *s, const char *dir)
{
    if (s->mode != MODE_PRIMARY) {
        log_error("store_error",
                  "op=checkpoint path=\"%s\" reason=\"only a primary store "
                  "can checkpoint\"",
                  s->path);
        return SF_EUNSUP;
    }
    struct stat st;
    if (stat(dir, &st) == 0 || errno != ENOENT) {
        log_error("store_error",
                  "op=checkpoint path=\"%s\" dir=\"%s\" reason=\"target "
                  "exists or is unreachable\"",
                  s->path, dir);
        return SF_EINVAL;
    }
    char *err = NULL;
    rocksdb_checkpoint_t *cp = rocksdb_checkpoint_object_create(s->db, &err);
    if (err) return store_fail("checkpoint", s->path, err);
    /* log_size_for_flush = 0: always flush the memtables so the copy has no WAL
     * to replay. */
    rocksdb_checkpoint_create(cp, dir, 0, &err);
    rocksdb_checkpoint_object_destroy(cp);
    if (err) return store_fail("checkpoint", s->path, err);
    log_info("store_checkpoint", "path=\"%s\" dir=\"%s\"", s->path, dir);
    return 0;
}

/* ---- keys ---- */

void store_be32_put(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

void store_be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

uint32_t store_be32_get(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t store_be64_get(const uint8_t *p)
{
    return (uint64_t)store_be32_get(p) << 32 | store_be32_get(p + 4);
}

void store_key_init(struct store_key *k)
{
    k->len = 0;
    k->err = 0;
}

void store_key_raw(struct store_key *k, const void *p, size_t n)
{
    if (k->err) return;
    if (n > STORE_KEY_MAX - k->len) {
        k->err = SF_ERANGE;
        return;
    }
    if (n) memcpy(k->b + k->len, p, n);
    k->len += n;
}

void store_key_u8(struct store_key *k, uint8_t v)
{
    store_key_raw(k, &v, 1);
}

void store_key_u16(struct store_key *k, uint16_t v)
{
    uint8_t t[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    store_key_raw(k, t, 2);
}

void store_key_u32(struct store_key *k, uint32_t v)
{
    uint8_t t[4];
    store_be32_put(t, v);
    store_key_raw(k, t, 4);
}

void store_key_u64(struct store_key *k, uint64_t v)
{
    uint8_t t[8];
    store_be64_put(t, v);
    store_key_raw(k, t, 8);
}

void store_key_i64(struct store_key *k, int64_t v)
{
    store_key_u64(k, (uint64_t)v ^ (UINT64_C(1) << 63));
}

void store_key_f32(struct store_key *k, float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    store_key_u32(k, u);
}

void store_key_str(struct store_key *k, const char *s)
{
    store_key_raw(k, s, strlen(s));
}

int64_t store_key_get_i64(const uint8_t *p)
{
    return (int64_t)(store_be64_get(p) ^ (UINT64_C(1) << 63));
}

float store_key_get_f32(const uint8_t *p)
{
    uint32_t u = store_be32_get(p);
    u = (u & 0x80000000u) ? (u & 0x7fffffffu) : ~u;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

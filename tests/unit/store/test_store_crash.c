/* Crash test for store: a writer process commits write batches with sync and reports
 * each acknowledged batch id through a pipe; the parent SIGKILLs it at random
 * moments (seeded), 20 times, reopening the store after each kill, and checks:
 *
 *   - every acknowledged batch is present and intact (records decode, contents match);
 *   - every batch present is whole: its manifest, every item it lists, its scratch key
 *     and (for the newest) the head pointer; no item exists without its manifest;
 *   - the batches present are exactly 0..max with no gap (the WAL is a prefix), and
 *     at most the one in-flight batch of a round is present without an acknowledgement;
 *   - the deletes inside batches took effect with them (exactly one scratch key).
 *
 * Each batch b writes: items 'i'+be64(b)+be32(j) in cf "a" (1..3 of them) and cf "b"
 * (1..2), a manifest be64(b) in cf "m" listing those keys, scratch 's'+be64(b) in "b"
 * with a delete of the previous batch's scratch, and "head" = b in "default".
 * Values are records (record.h) with deterministic filler of varying size, and the
 * memtable is small so flushes and compactions run while the writer is killed.
 *
 * Then the damaged-store cases: a store whose MANIFEST lost its tail, whose CURRENT is
 * truncated, empty or missing, or which lost a table file must be refused by a writer's
 * open (STORE_CREATE) with an error, twice in a row, and every data file must be left
 * byte for byte as it was (RocksDB would otherwise recover an older version or write a
 * fresh database over the old one and delete the tables it no longer sees). An
 * undamaged copy opens with every key.
 *
 * The writer is this binary re-executed (/proc/self/exe --writer ...), never a bare
 * fork of a process that has RocksDB threads. SAEFLOW_TEST_SEED overrides the seed. */
#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../support/check.h"
#include "store/record.h"
#include "store/store.h"

enum { CF_A, CF_B, CF_M, N_CFS };
static const char *const CFS[N_CFS] = {"a", "b", "m"};
enum { REC_ITEM = 1, REC_MANIFEST = 2, REC_HEAD = 3, REC_SCRATCH = 4 };
enum { ROUNDS = 20 };

static size_t n_items(uint64_t b, int cf)
{
    return cf == CF_A ? 1 + b % 3 : 1 + (b / 3) % 2;
}

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Deterministic filler for item (b, cf, j): 40..4039 bytes. */
static size_t filler(uint64_t b, int cf, uint32_t j, uint8_t *out)
{
    uint64_t h = mix(b * 8 + (uint64_t)cf * 4 + j);
    size_t n = 40 + (size_t)(h % 4000);
    for (size_t i = 0; i < n; i++) {
        if (i % 8 == 0) h = mix(h);
        out[i] = (uint8_t)(h >> (8 * (i % 8)));
    }
    return n;
}

static void item_key(struct store_key *k, uint64_t b, uint32_t j)
{
    store_key_init(k);
    store_key_u8(k, 'i');
    store_key_u64(k, b);
    store_key_u32(k, j);
}

static void scratch_key(struct store_key *k, uint64_t b)
{
    store_key_init(k);
    store_key_u8(k, 's');
    store_key_u64(k, b);
}

/* ---------------------------------------------------------------- writer ---- */

static int writer_main(const char *path, uint64_t start, int fd)
{
    struct store *s;
    struct store_opts o = {.flags = STORE_CREATE, .write_buffer_size = 128 << 10};
    if (store_open_opts(&s, path, CFS, N_CFS, &o) != 0) return 3;
    size_t cf_default;
    if (store_cf_find(s, "default", &cf_default) != 0) return 3;
    struct store_batch *wb = store_batch_new(s);
    struct buf v, man;
    buf_init(&v, 1 << 20);
    buf_init(&man, 1 << 20);
    uint8_t fill[4096];
    for (uint64_t b = start; b < start + 1000000; b++) {
        size_t mstart;
        buf_reset(&man);
        record_begin(&man, REC_MANIFEST, 1, &mstart);
        record_put_u64(&man, b);
        record_put_u32(&man, (uint32_t)n_items(b, CF_A));
        record_put_u32(&man, (uint32_t)n_items(b, CF_B));
        for (int cf = CF_A; cf <= CF_B; cf++)
            for (uint32_t j = 0; j < n_items(b, cf); j++) {
                /* j counts across both column families so keys are unique per batch. */
                uint32_t jj = cf == CF_A ? j : (uint32_t)n_items(b, CF_A) + j;
                struct store_key k;
                item_key(&k, b, jj);
                size_t fn = filler(b, cf, jj, fill);
                size_t st;
                buf_reset(&v);
                record_begin(&v, REC_ITEM, 1, &st);
                record_put_u64(&v, b);
                record_put_u32(&v, jj);
                record_put_u8(&v, (uint8_t)cf);
                record_put_bytes(&v, fill, fn);
                if (record_finish(&v, st) != 0) return 4;
                store_batch_put(wb, (size_t)cf, k.b, k.len, v.data, v.len);
                record_put_u8(&man, (uint8_t)cf);
                record_put_bytes(&man, k.b, k.len);
            }
        if (record_finish(&man, mstart) != 0) return 4;
        uint8_t mk[8];
        store_be64_put(mk, b);
        store_batch_put(wb, CF_M, mk, 8, man.data, man.len);
        struct store_key sk;
        scratch_key(&sk, b);
        buf_reset(&v);
        size_t st;
        record_begin(&v, REC_SCRATCH, 1, &st);
        record_put_u64(&v, b);
        record_finish(&v, st);
        store_batch_put(wb, CF_B, sk.b, sk.len, v.data, v.len);
        if (b > 0) {
            scratch_key(&sk, b - 1);
            store_batch_delete(wb, CF_B, sk.b, sk.len);
        }
        buf_reset(&v);
        record_begin(&v, REC_HEAD, 1, &st);
        record_put_u64(&v, b);
        record_finish(&v, st);
        store_batch_put(wb, cf_default, "head", 4, v.data, v.len);
        if (store_batch_commit(wb, true) != 0) return 5;
        if (write(fd, &b, sizeof b) != (ssize_t)sizeof b) break; /* parent gone */
    }
    buf_fini(&v);
    buf_fini(&man);
    store_batch_destroy(&wb);
    store_close(&s);
    return 0;
}

/* ---------------------------------------------------------------- checker ---- */

struct verdict {
    bool any;     /* some batch present */
    uint64_t max; /* newest batch present */
    uint64_t n_present;
    int bad; /* integrity failures found (each printed) */
};

#define BAD(vd, ...)                                                                               \
    do {                                                                                           \
        if ((vd)->bad++ < 20) {                                                                    \
            fprintf(stderr, "  integrity: ");                                                      \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

/* Checks item `key` in cf: present, decodes, belongs to batch b, filler intact. */
static void check_item(struct store *s, struct verdict *vd, int cf, const uint8_t *key, size_t klen,
                       uint64_t b)
{
    void *val;
    size_t vlen;
    if (store_get(s, (size_t)cf, key, klen, &val, &vlen) != 0) {
        BAD(vd, "batch %" PRIu64 ": item missing in cf %s", b, CFS[cf]);
        return;
    }
    struct record_view rv;
    struct record_reader r;
    uint8_t want[4096];
    if (record_decode_as(val, vlen, REC_ITEM, 1, &rv) != 0) {
        BAD(vd, "batch %" PRIu64 ": item does not decode", b);
    } else {
        record_reader_view(&r, &rv);
        uint64_t ib = record_get_u64(&r);
        uint32_t j = record_get_u32(&r);
        uint8_t icf = record_get_u8(&r);
        size_t fn;
        const uint8_t *f = record_get_bytes(&r, &fn);
        if (record_reader_finish(&r, "item") != 0 || ib != b || icf != cf || klen != 13 ||
            store_be32_get(key + 9) != j || fn != filler(b, cf, j, want) ||
            memcmp(f, want, fn) != 0)
            BAD(vd, "batch %" PRIu64 ": item contents wrong (cf %s)", b, CFS[cf]);
    }
    store_free(val);
}

/* Reopens the store and checks every batch in it (see the top comment). Returns the
 * verdict; `present` gets 1 at each batch id found (capacity cap). */
static struct verdict verify(const char *path, uint8_t *present, size_t cap)
{
    struct verdict vd = {0};
    struct store *s;
    memset(present, 0, cap);
    int rc = store_open(&s, path, CFS, N_CFS, STORE_CREATE);
    if (rc != 0) {
        BAD(&vd, "reopen failed: %s", sf_strerror(rc));
        return vd;
    }
    /* Manifests: each one whole, with all the items it lists. */
    size_t n_listed = 0;
    struct store_iter *it = store_iter_new(s, CF_M, NULL, 0);
    for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
        size_t kl, vl;
        const uint8_t *k = store_iter_key(it, &kl);
        const uint8_t *v = store_iter_value(it, &vl);
        struct record_view rv;
        if (kl != 8 || record_decode_as(v, vl, REC_MANIFEST, 1, &rv) != 0) {
            BAD(&vd, "manifest does not decode");
            continue;
        }
        uint64_t b = store_be64_get(k);
        struct record_reader r;
        record_reader_view(&r, &rv);
        uint64_t mb = record_get_u64(&r);
        uint32_t na = record_get_u32(&r), nb = record_get_u32(&r);
        if (mb != b || na != n_items(b, CF_A) || nb != n_items(b, CF_B)) {
            BAD(&vd, "batch %" PRIu64 ": manifest header wrong", b);
            continue;
        }
        for (uint32_t i = 0; i < na + nb && !r.err; i++) {
            int cf = record_get_u8(&r);
            size_t ikl;
            const uint8_t *ik = record_get_bytes(&r, &ikl);
            if (!r.err && cf != (i < na ? CF_A : CF_B)) record_reader_fail(&r, "wrong cf");
            if (r.err) break;
            check_item(s, &vd, cf, ik, ikl, b);
            n_listed++;
        }
        if (record_reader_finish(&r, "manifest") != 0)
            BAD(&vd, "batch %" PRIu64 ": manifest body wrong", b);
        if (b >= cap) {
            BAD(&vd, "batch id %" PRIu64 " out of range", b);
            continue;
        }
        present[b] = 1;
        vd.n_present++;
        if (!vd.any || b > vd.max) vd.max = b;
        vd.any = true;
    }
    if (store_iter_status(it) != 0) BAD(&vd, "manifest scan failed");
    store_iter_destroy(&it);

    /* No orphans: every item belongs to a present batch; counts agree. */
    size_t n_items_found = 0, n_scratch = 0;
    for (int cf = CF_A; cf <= CF_B; cf++) {
        it = store_iter_new(s, (size_t)cf, "i", 1);
        for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
            size_t kl;
            const uint8_t *k = store_iter_key(it, &kl);
            uint64_t b = kl == 13 ? store_be64_get(k + 1) : UINT64_MAX;
            if (b >= cap || !present[b]) BAD(&vd, "orphan item of batch %" PRIu64, b);
            n_items_found++;
        }
        store_iter_destroy(&it);
    }
    if (n_items_found != n_listed)
        BAD(&vd, "%zu items stored, manifests list %zu", n_items_found, n_listed);
    /* Scratch keys: each batch deleted its predecessor's, so only the newest remains. */
    it = store_iter_new(s, CF_B, "s", 1);
    for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
        size_t kl, vl;
        const uint8_t *k = store_iter_key(it, &kl);
        const uint8_t *v = store_iter_value(it, &vl);
        struct record_view rv;
        uint64_t b = kl == 9 ? store_be64_get(k + 1) : UINT64_MAX;
        if (!vd.any || b != vd.max || record_decode_as(v, vl, REC_SCRATCH, 1, &rv) != 0 ||
            rv.len != 8 || record_le64_get(rv.payload) != b)
            BAD(&vd, "unexpected scratch key of batch %" PRIu64, b);
        n_scratch++;
    }
    store_iter_destroy(&it);
    if (vd.any && n_scratch != 1) BAD(&vd, "%zu scratch keys, want 1", n_scratch);
    /* Head names the newest batch. */
    size_t cf_default;
    void *hv;
    size_t hl;
    store_cf_find(s, "default", &cf_default);
    rc = store_get(s, cf_default, "head", 4, &hv, &hl);
    if (vd.any) {
        struct record_view rv;
        if (rc != 0 || record_decode_as(hv, hl, REC_HEAD, 1, &rv) != 0 || rv.len != 8 ||
            record_le64_get(rv.payload) != vd.max)
            BAD(&vd, "head does not name batch %" PRIu64, vd.max);
    } else if (rc != SF_NOTFOUND) {
        BAD(&vd, "head present without batches");
    }
    if (rc == 0) store_free(hv);
    /* The WAL is a prefix: batches 0..max, no gaps. */
    if (vd.any && vd.n_present != vd.max + 1)
        BAD(&vd, "%" PRIu64 " batches present, max id %" PRIu64 ": a gap", vd.n_present, vd.max);
    store_close(&s);
    return vd;
}

/* ------------------------------------------------------ damaged stores ---- */

enum { DMG_KEYS = 1200 };

/* A closed store with several table files and a MANIFEST holding several edits. */
static int build_store(const char *path)
{
    struct store *s;
    struct store_opts o = {.flags = STORE_CREATE, .write_buffer_size = 64 << 10};
    if (store_open_opts(&s, path, CFS, N_CFS, &o) != 0) return -1;
    uint8_t v[1000];
    memset(v, 'v', sizeof v);
    for (uint32_t i = 0; i < DMG_KEYS; i++) {
        uint8_t k[4];
        store_be32_put(k, i);
        if (store_put(s, CF_A, k, 4, v, sizeof v, false) != 0) return -1;
        if (i % 300 == 299 && store_flush(s) != 0) return -1;
    }
    store_close(&s);
    return 0;
}

static size_t count_keys(struct store *s)
{
    size_t n = 0;
    struct store_iter *it = store_iter_new(s, CF_A, NULL, 0);
    for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) n++;
    store_iter_destroy(&it);
    return n;
}

/* Every file but the info LOGs, as "name size fnv1a\n" lines sorted by name. */
static void snapshot(const char *path, struct buf *out)
{
    buf_reset(out);
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        if (nm[0] != '.' && strncmp(nm, "LOG", 3) != 0) {
            char fp[600];
            snprintf(fp, sizeof fp, "%s/%s", path, nm);
            uint64_t h = 1469598103934665603ull;
            size_t size = 0;
            FILE *f = fopen(fp, "rb");
            int c;
            while (f && (c = fgetc(f)) != EOF) {
                h = (h ^ (uint8_t)c) * 1099511628211ull;
                size++;
            }
            if (f) fclose(f);
            buf_printf(out, "%s %zu %016llx\n", nm, size, (unsigned long long)h);
        }
        free(names[i]);
    }
    free(names);
}

static const char *first_with(const char *path, const char *prefix, const char *suffix, char *out,
                              size_t cap)
{
    struct dirent **names;
    int n = scandir(path, &names, NULL, alphasort);
    const char *found = NULL;
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        size_t l = strlen(nm), ls = strlen(suffix);
        if (!found && !strncmp(nm, prefix, strlen(prefix)) && l >= ls &&
            !strcmp(nm + l - ls, suffix)) {
            snprintf(out, cap, "%s/%s", path, nm);
            found = out;
        }
        free(names[i]);
    }
    free(names);
    return found;
}

enum damage {
    DMG_NONE,
    DMG_MANIFEST_TAIL,
    DMG_MANIFEST_HALF,
    DMG_CURRENT_TRUNC,
    DMG_CURRENT_EMPTY,
    DMG_CURRENT_MISSING,
    DMG_SST_MISSING,
    DMG_COUNT
};
static const char *const dmg_names[DMG_COUNT] = {
    "undamaged",     "MANIFEST minus 20 bytes", "MANIFEST cut in half", "CURRENT truncated",
    "CURRENT empty", "CURRENT missing",         "a table file missing"};

static void damaged_case(const char *root, enum damage d)
{
    char path[400], f[600];
    snprintf(path, sizeof path, "%s/dmg%d", root, (int)d);
    if (build_store(path) != 0) {
        CHECK_MSG(0, "%s: cannot build the store", dmg_names[d]);
        return;
    }
    struct stat st;
    switch (d) {
    case DMG_NONE:
        break;
    case DMG_MANIFEST_TAIL:
    case DMG_MANIFEST_HALF:
        CHECK(first_with(path, "MANIFEST-", "", f, sizeof f) && stat(f, &st) == 0);
        CHECK(truncate(f, d == DMG_MANIFEST_TAIL ? st.st_size - 20 : st.st_size / 2) == 0);
        break;
    case DMG_CURRENT_TRUNC:
    case DMG_CURRENT_EMPTY:
        snprintf(f, sizeof f, "%s/CURRENT", path);
        CHECK(truncate(f, d == DMG_CURRENT_TRUNC ? 8 : 0) == 0);
        break;
    case DMG_CURRENT_MISSING:
        snprintf(f, sizeof f, "%s/CURRENT", path);
        CHECK(unlink(f) == 0);
        break;
    case DMG_SST_MISSING:
        CHECK(first_with(path, "", ".sst", f, sizeof f) && unlink(f) == 0);
        break;
    case DMG_COUNT:
        break;
    }
    struct buf before, after;
    buf_init(&before, 1 << 20);
    buf_init(&after, 1 << 20);
    snapshot(path, &before);
    bool refused = true;
    for (int attempt = 0; attempt < 2; attempt++) {
        struct store *s = NULL;
        int rc = store_open(&s, path, CFS, N_CFS, STORE_CREATE);
        if (d == DMG_NONE) {
            CHECK_MSG(rc == 0, "undamaged store: open failed (%s)", sf_strerror(rc));
            if (rc == 0) CHECK_EQ_INT(count_keys(s), DMG_KEYS);
        } else {
            CHECK_MSG(rc < 0 && !s, "%s: a writer's open %d returned %s instead of an error",
                      dmg_names[d], attempt + 1, rc ? sf_strerror(rc) : "success");
            if (s)
                printf("  %s: opened with %zu of %d keys\n", dmg_names[d], count_keys(s), DMG_KEYS);
        }
        store_close(&s);
        if (d == DMG_NONE) break;
        snapshot(path, &after);
        CHECK_MSG(before.len == after.len && !memcmp(before.data, after.data, before.len),
                  "%s: files changed by a refused open:\n--- before\n%.*s--- after\n%.*s",
                  dmg_names[d], (int)before.len, before.data, (int)after.len, after.data);
    }
    printf("damaged store: %-24s %s\n", dmg_names[d],
           d == DMG_NONE ? "opens"
           : refused     ? "refused"
                         : "OPENED");
    buf_fini(&before);
    buf_fini(&after);
}

/* ---------------------------------------------------------------- parent ---- */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

/* Reads acknowledgements until `deadline_ns` (or until `want` arrived when want > 0).
 * Returns false once the pipe hit EOF. */
static bool read_acks(int fd, uint64_t *acks, size_t *n_acks, size_t cap, int64_t deadline_ns,
                      size_t want)
{
    for (;;) {
        int64_t left = deadline_ns - time_now_ns();
        if (left <= 0 || (want && *n_acks >= want)) return true;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)(left / 1000000) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) return true;
        uint64_t id;
        ssize_t n = read(fd, &id, sizeof id);
        if (n == 0) return false;
        if (n < 0 && errno == EINTR) continue;
        if (n != (ssize_t)sizeof id) return false; /* 8-byte writes to a pipe are atomic */
        if (*n_acks < cap) acks[(*n_acks)++] = id;
    }
}

int main(int argc, char **argv)
{
    log_init("test_store_crash", LOG_LOGFMT, LOG_ERROR);
    if (argc == 5 && strcmp(argv[1], "--writer") == 0) {
        int64_t start, fd;
        if (parse_i64(argv[3], &start) || parse_i64(argv[4], &fd)) return 2;
        return writer_main(argv[2], (uint64_t)start, (int)fd);
    }
    uint64_t seed = 20261125;
    const char *env_seed = getenv("SAEFLOW_TEST_SEED");
    int64_t sv;
    if (env_seed && parse_i64(env_seed, &sv) == 0) seed = (uint64_t)sv;
    struct rng rng;
    rng_seed(&rng, seed);

    char root[256], path[300];
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/sf_crash_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/db", root);

    enum { CAP = 1 << 20 };
    uint8_t *present = malloc(CAP);
    uint64_t *acks = malloc(CAP * sizeof *acks);
    size_t total_acked = 0, kills_mid_batch = 0, unacked_present = 0;
    uint64_t next = 0;
    printf("crash test: seed=%" PRIu64 " rounds=%d dir=%s\n", seed, ROUNDS, root);
    for (int round = 0; round < ROUNDS; round++) {
        int fds[2];
        if (pipe(fds) != 0) {
            perror("pipe");
            return 1;
        }
        uint64_t start = next;
        pid_t pid = fork();
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(fds[0]);
            char s_start[32], s_fd[16];
            snprintf(s_start, sizeof s_start, "%" PRIu64, start);
            snprintf(s_fd, sizeof s_fd, "%d", fds[1]);
            execl("/proc/self/exe", "test_store_crash", "--writer", path, s_start, s_fd,
                  (char *)NULL);
            _exit(126);
        }
        close(fds[1]);
        size_t n_acks = 0;
        bool open_pipe = true;
        /* Odd rounds kill at a random moment after the start (maybe during exec, open
         * or WAL recovery); even rounds first wait for one acknowledgement. */
        if (round % 2 == 0)
            open_pipe = read_acks(fds[0], acks, &n_acks, CAP, time_now_ns() + 60 * 1000000000LL, 1);
        int64_t delay_ms = (int64_t)rng_below(&rng, round % 2 ? 250 : 150);
        if (open_pipe)
            open_pipe =
                read_acks(fds[0], acks, &n_acks, CAP, time_now_ns() + delay_ms * 1000000, 0);
        kill(pid, SIGKILL);
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        while (open_pipe &&
               read_acks(fds[0], acks, &n_acks, CAP, time_now_ns() + 5000000000LL, 0)) {
        }
        close(fds[0]);
        bool killed = WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
        CHECK_MSG(killed, "round %d: writer ended on its own (status %d)", round, st);

        struct verdict vd = verify(path, present, CAP);
        CHECK_MSG(vd.bad == 0, "round %d: %d integrity failures", round, vd.bad);
        /* Acknowledged => present. Ids are issued in order, so the acks of a round are
         * start, start+1, ... */
        size_t lost = 0;
        for (size_t i = 0; i < n_acks; i++) {
            if (acks[i] != start + i) lost++;
            if (acks[i] >= CAP || !present[acks[i]]) lost++;
        }
        CHECK_MSG(lost == 0, "round %d: %zu acknowledged batches missing or out of order", round,
                  lost);
        /* Present => acknowledged, except the one batch in flight at the kill. */
        uint64_t limit = n_acks ? acks[n_acks - 1] + 1 : start;
        uint64_t have = vd.any ? vd.max + 1 : 0;
        CHECK_MSG(have <= limit + 1 && have >= limit,
                  "round %d: %" PRIu64 " batches present, %" PRIu64 " acknowledged", round, have,
                  limit);
        if (have == limit + 1) unacked_present++;
        if (round % 2 == 1 && n_acks == 0) kills_mid_batch++;
        printf("round %2d: start=%-6" PRIu64 " acked=%-5zu present=%-6" PRIu64 " delay=%" PRId64
               "ms%s\n",
               round, start, n_acks, have, delay_ms, vd.bad ? " INTEGRITY FAILURE" : "");
        total_acked += n_acks;
        next = have;
    }
    /* Even rounds each waited for an acknowledgement, so some work was verified. */
    CHECK(total_acked >= ROUNDS / 2);
    printf("crash test: %zu batches acknowledged over %d kills, %zu present but unacknowledged "
           "(killed between commit and ack), %zu early kills with no ack\n",
           total_acked, ROUNDS, unacked_present, kills_mid_batch);
    free(present);
    free(acks);
    /* The damaged-store cases log their refusals (the errors a user would see). */
    for (int d = 0; d < DMG_COUNT; d++) damaged_case(root, (enum damage)d);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_exit();
}

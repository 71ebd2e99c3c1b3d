/* Tests for store (the RocksDB wrapper) and record (versioned, checksummed values):
 * column families, persistence, batches, ordered and prefix iteration, a secondary
 * following a live writer in another process, checkpoints, the one-writer lock,
 * CRC32C test vectors, record round trips and every single-byte corruption.
 *
 * The binary re-executes itself (/proc/self/exe) for the helper processes so that
 * no child inherits RocksDB's threads through a bare fork(). */
#include <errno.h>
#include <ftw.h>
#include <math.h>
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

static char tmp_root[256];

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static void rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* tmp_root/name into out. */
static const char *tmp_path(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", tmp_root, name);
    return out;
}

/* Runs this binary again with the given mode and arguments; returns the pid.
 * If out_fd is non-NULL the child's stdout comes back through a pipe. */
static pid_t spawn_self(const char *mode, const char *arg, int *out_fd)
{
    int fds[2] = {-1, -1};
    if (out_fd && pipe(fds) != 0) return -1;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (out_fd) {
            dup2(fds[1], 1);
            close(fds[0]);
            close(fds[1]);
        }
        execl("/proc/self/exe", "test_store", mode, arg, (char *)NULL);
        _exit(126);
    }
    if (out_fd) {
        close(fds[1]);
        *out_fd = fds[0];
    }
    return pid;
}

static int wait_exit_code(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

/* ---------------------------------------------------------------- records ---- */

static void test_crc32c(void)
{
    /* Check value of the Castagnoli CRC and the RFC 3720 (iSCSI) B.4 vectors. */
    CHECK_EQ_INT(record_crc32c(0, "123456789", 9), 0xE3069283u);
    uint8_t b[32];
    memset(b, 0, sizeof b);
    CHECK_EQ_INT(record_crc32c(0, b, 32), 0x8A9136AAu);
    memset(b, 0xff, sizeof b);
    CHECK_EQ_INT(record_crc32c(0, b, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++) b[i] = (uint8_t)i;
    CHECK_EQ_INT(record_crc32c(0, b, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++) b[i] = (uint8_t)(31 - i);
    CHECK_EQ_INT(record_crc32c(0, b, 32), 0x113FDB5Cu);
    CHECK_EQ_INT(record_crc32c(0, b, 0), 0);
    /* Incremental over every split point equals one shot. */
    for (size_t cut = 0; cut <= 32; cut++)
        CHECK_EQ_INT(record_crc32c(record_crc32c(0, b, cut), b + cut, 32 - cut), 0x113FDB5Cu);
}

/* A record carrying one of each field type. */
static void build_sample(struct buf *b)
{
    size_t start;
    CHECK_EQ_INT(record_begin(b, 7, 3, &start), 0);
    CHECK_EQ_INT(record_put_u8(b, 0xAB), 0);
    CHECK_EQ_INT(record_put_u16(b, 0xBEEF), 0);
    CHECK_EQ_INT(record_put_u32(b, 0xDEADBEEFu), 0);
    CHECK_EQ_INT(record_put_u64(b, UINT64_C(0x0123456789ABCDEF)), 0);
    CHECK_EQ_INT(record_put_i64(b, -42), 0);
    CHECK_EQ_INT(record_put_f32(b, -1.5f), 0);
    CHECK_EQ_INT(record_put_f64(b, 3.141592653589793), 0);
    CHECK_EQ_INT(record_put_bytes(b, "a\0b", 3), 0);
    CHECK_EQ_INT(record_put_str(b, "feature"), 0);
    CHECK_EQ_INT(record_put_bytes(b, "", 0), 0);
    CHECK_EQ_INT(record_put_raw(b, "xyz", 3), 0);
    CHECK_EQ_INT(record_finish(b, start), 0);
}

static void test_record_roundtrip(void)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    build_sample(&b);
    size_t payload = 1 + 2 + 4 + 8 + 8 + 4 + 8 + (4 + 3) + (4 + 7) + 4 + 3;
    CHECK_EQ_INT(b.len, RECORD_OVERHEAD + payload);
    const uint8_t *p = (const uint8_t *)b.data;
    /* Header layout, byte by byte. */
    CHECK(p[0] == 'S' && p[1] == 'F');
    CHECK(p[2] == 3 && p[3] == 0); /* version LE */
    CHECK(p[4] == 7 && p[5] == 0); /* type LE */
    CHECK_EQ_INT(record_le32_get(p + 6), payload);
    CHECK(p[10] == 0xAB && p[11] == 0xEF && p[12] == 0xBE);
    CHECK_EQ_INT(record_le32_get(p + b.len - 4), record_crc32c(0, p, b.len - 4));

    struct record_view v;
    CHECK_EQ_INT(record_decode(b.data, b.len, &v), 0);
    CHECK_EQ_INT(v.type, 7);
    CHECK_EQ_INT(v.version, 3);
    CHECK_EQ_INT(v.len, payload);
    CHECK(v.payload == p + RECORD_HEADER_SIZE);
    CHECK_EQ_INT(record_decode_as(b.data, b.len, 7, 3, &v), 0);
    CHECK_EQ_INT(record_decode_as(b.data, b.len, 7, 9, &v), 0);
    CHECK_EQ_INT(record_decode_as(b.data, b.len, 7, 2, &v), SF_EFORMAT); /* newer than known */
    CHECK_EQ_INT(record_decode_as(b.data, b.len, 8, 3, &v), SF_EFORMAT); /* other type */
    CHECK_EQ_INT(record_decode_as(b.data, b.len, 7, 3, &v), 0);

    struct record_reader r;
    record_reader_view(&r, &v);
    CHECK_EQ_INT(record_get_u8(&r), 0xAB);
    CHECK_EQ_INT(record_get_u16(&r), 0xBEEF);
    CHECK_EQ_INT(record_get_u32(&r), 0xDEADBEEFu);
    CHECK(record_get_u64(&r) == UINT64_C(0x0123456789ABCDEF));
    CHECK_EQ_INT(record_get_i64(&r), -42);
    CHECK(record_get_f32(&r) == -1.5f);
    CHECK(record_get_f64(&r) == 3.141592653589793);
    size_t n;
    const uint8_t *bytes = record_get_bytes(&r, &n);
    CHECK(bytes && n == 3 && memcmp(bytes, "a\0b", 3) == 0);
    char s[16];
    CHECK_EQ_INT(record_get_str(&r, s, sizeof s), 0);
    CHECK(strcmp(s, "feature") == 0);
    bytes = record_get_bytes(&r, &n);
    CHECK(bytes != NULL && n == 0);
    char raw[3];
    record_get_raw(&r, raw, 3);
    CHECK(memcmp(raw, "xyz", 3) == 0);
    CHECK_EQ_INT(r.left, 0);
    CHECK_EQ_INT(record_reader_finish(&r, "sample"), 0);

    /* record_encode of a ready payload equals begin/put/finish. */
    struct buf c;
    buf_init(&c, 1 << 20);
    CHECK_EQ_INT(record_encode(&c, 7, 3, v.payload, v.len), 0);
    CHECK(c.len == b.len && memcmp(c.data, b.data, b.len) == 0);
    /* An empty payload is a valid 14-byte record. */
    buf_reset(&c);
    CHECK_EQ_INT(record_encode(&c, 1, 1, NULL, 0), 0);
    CHECK_EQ_INT(c.len, RECORD_OVERHEAD);
    CHECK_EQ_INT(record_decode(c.data, c.len, &v), 0);
    CHECK_EQ_INT(v.len, 0);
    /* Two records back to back in one buffer: each decodes from its own offset. */
    size_t second = c.len;
    CHECK_EQ_INT(record_encode(&c, 2, 1, "hi", 2), 0);
    CHECK_EQ_INT(record_decode(c.data + second, c.len - second, &v), 0);
    CHECK(v.type == 2 && v.len == 2 && memcmp(v.payload, "hi", 2) == 0);
    /* type / version 0 are refused when encoding. */
    size_t start;
    CHECK_EQ_INT(record_begin(&c, 0, 1, &start), SF_EINVAL);
    CHECK_EQ_INT(record_begin(&c, 1, 0, &start), SF_EINVAL);
    /* A capped buffer reports the cap. */
    struct buf small;
    buf_init(&small, 12);
    CHECK(record_encode(&small, 1, 1, "0123456789", 10) < 0);
    buf_fini(&small);
    buf_fini(&c);
    buf_fini(&b);
}

static void test_record_corruption(void)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    build_sample(&b);
    uint8_t *copy = malloc(b.len + 1);
    struct record_view v;
    static const uint8_t masks[] = {0x01, 0x02, 0x10, 0x80, 0xff, 0x5a};
    int undetected = 0;
    /* Every byte, several flips: decoding must fail (header checks or the CRC). */
    for (size_t i = 0; i < b.len; i++)
        for (size_t m = 0; m < SF_ARRAY_LEN(masks); m++) {
            memcpy(copy, b.data, b.len);
            copy[i] ^= masks[m];
            if (record_decode(copy, b.len, &v) != SF_EFORMAT) undetected++;
            if (v.payload != NULL) undetected++; /* out is cleared on failure */
        }
    CHECK_EQ_INT(undetected, 0);
    /* Every truncation and one extra byte. */
    int accepted = 0;
    for (size_t n = 0; n < b.len; n++)
        if (record_decode(b.data, n, &v) != SF_EFORMAT) accepted++;
    memcpy(copy, b.data, b.len);
    copy[b.len] = 0;
    if (record_decode(copy, b.len + 1, &v) != SF_EFORMAT) accepted++;
    CHECK_EQ_INT(accepted, 0);
    CHECK_EQ_INT(record_decode(NULL, 0, &v), SF_EFORMAT);

    /* Structurally valid with a correct CRC but version 0 / type 0 / huge length. */
    uint8_t h[RECORD_OVERHEAD] = {'S', 'F', 0, 0, 1, 0, 0, 0, 0, 0};
    record_le32_put(h + 10, record_crc32c(0, h, 10));
    CHECK_EQ_INT(record_decode(h, sizeof h, &v), SF_EFORMAT);
    h[2] = 1, h[4] = 0;
    record_le32_put(h + 10, record_crc32c(0, h, 10));
    CHECK_EQ_INT(record_decode(h, sizeof h, &v), SF_EFORMAT);
    h[4] = 1;
    record_le32_put(h + 10, record_crc32c(0, h, 10));
    CHECK_EQ_INT(record_decode(h, sizeof h, &v), 0);
    record_le32_put(h + 6, 0xFFFFFFF0u); /* length far past the end */
    CHECK_EQ_INT(record_decode(h, sizeof h, &v), SF_EFORMAT);
    free(copy);
    buf_fini(&b);
}

static void test_reader_bounds(void)
{
    uint8_t d[16];
    for (int i = 0; i < 16; i++) d[i] = (uint8_t)(i + 1);
    struct record_reader r;
    /* Each getter fails on a too-short input and the error sticks. */
    record_reader_init(&r, d, 3);
    CHECK_EQ_INT(record_get_u32(&r), 0);
    CHECK_EQ_INT(r.err, SF_EFORMAT);
    CHECK_EQ_INT(record_get_u8(&r), 0); /* 3 bytes were there, but the error sticks */
    CHECK_EQ_INT(record_reader_finish(&r, "short"), SF_EFORMAT);
    record_reader_init(&r, d, 7);
    CHECK(record_get_u64(&r) == 0 && r.err);
    record_reader_init(&r, d, 1);
    CHECK(record_get_u16(&r) == 0 && r.err);
    record_reader_init(&r, d, 0);
    CHECK(record_get_u8(&r) == 0 && r.err);
    record_reader_init(&r, NULL, 5); /* NULL data reads as empty */
    CHECK(record_get_u8(&r) == 0 && r.err);
    record_reader_init(&r, d, 3);
    CHECK(record_get_f64(&r) == 0.0 && r.err);
    char raw[8] = "zzzzzzz";
    record_reader_init(&r, d, 3);
    record_get_raw(&r, raw, 4);
    CHECK(r.err && raw[0] == 0 && raw[3] == 0);

    /* Length prefix past the end; exact fit; string cap and NUL checks. */
    uint8_t f[12] = {5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o', 0, 0, 0};
    size_t n = 99;
    record_reader_init(&r, f, 8);
    CHECK(record_get_bytes(&r, &n) == NULL && n == 0 && r.err);
    record_reader_init(&r, f, 9);
    const uint8_t *p = record_get_bytes(&r, &n);
    CHECK(p == f + 4 && n == 5 && !r.err && r.left == 0);
    char s[8];
    record_reader_init(&r, f, 9);
    CHECK_EQ_INT(record_get_str(&r, s, 6), 0);
    CHECK(strcmp(s, "hello") == 0);
    record_reader_init(&r, f, 9);
    CHECK_EQ_INT(record_get_str(&r, s, 5), SF_EFORMAT); /* no room for the NUL */
    CHECK(s[0] == '\0');
    f[6] = 0;
    record_reader_init(&r, f, 9);
    CHECK_EQ_INT(record_get_str(&r, s, 8), SF_EFORMAT); /* NUL inside */
    uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
    record_reader_init(&r, huge, 4);
    CHECK(record_get_bytes(&r, &n) == NULL && r.err);

    /* need(): counts that cannot fit fail before anyone allocates for them. */
    record_reader_init(&r, d, 16);
    CHECK_EQ_INT(record_reader_need(&r, 4, 4), 0);
    CHECK_EQ_INT(record_reader_need(&r, 5, 4), SF_EFORMAT);
    record_reader_init(&r, d, 16);
    CHECK_EQ_INT(record_reader_need(&r, UINT64_MAX, 8), SF_EFORMAT);
    /* Trailing bytes and explicit failures are reported by finish. */
    record_reader_init(&r, d, 5);
    record_get_u32(&r);
    CHECK_EQ_INT(record_reader_finish(&r, "trailing"), SF_EFORMAT);
    record_reader_init(&r, d, 4);
    record_get_u32(&r);
    record_reader_fail(&r, "bad enum");
    CHECK(strcmp(r.why, "bad enum") == 0);
    CHECK_EQ_INT(record_reader_finish(&r, "explicit"), SF_EFORMAT);
    /* Little-endian decoding of known bytes. */
    record_reader_init(&r, d, 16);
    CHECK_EQ_INT(record_get_u16(&r), 0x0201);
    CHECK_EQ_INT(record_get_u32(&r), 0x06050403);
    CHECK(record_get_u64(&r) == UINT64_C(0x0E0D0C0B0A090807));
}

/* ---------------------------------------------------------------- keys ---- */

static int cmp_bytes(const struct store_key *a, const struct store_key *b)
{
    size_t m = SF_MIN(a->len, b->len);
    int c = memcmp(a->b, b->b, m);
    return c ? c : (a->len > b->len) - (a->len < b->len);
}

static int sign(double x)
{
    return (x > 0) - (x < 0);
}

static void test_keys(void)
{
    struct rng rng;
    rng_seed(&rng, 12345);
    int bad = 0;
    for (int i = 0; i < 2000; i++) {
        uint64_t a = rng_u64(&rng) >> (rng_below(&rng, 64)),
                 b = rng_u64(&rng) >> (rng_below(&rng, 64));
        struct store_key ka, kb;
        store_key_init(&ka), store_key_init(&kb);
        store_key_u64(&ka, a), store_key_u64(&kb, b);
        if (sign(cmp_bytes(&ka, &kb)) != sign((double)(a > b) - (double)(a < b))) bad++;
        if (store_be64_get(ka.b) != a) bad++;
        int64_t sa = (int64_t)a * (i & 1 ? -1 : 1), sb = (int64_t)b * (i & 2 ? -1 : 1);
        store_key_init(&ka), store_key_init(&kb);
        store_key_i64(&ka, sa), store_key_i64(&kb, sb);
        if (sign(cmp_bytes(&ka, &kb)) != (sa > sb) - (sa < sb)) bad++;
        if (store_key_get_i64(ka.b) != sa) bad++;
        uint32_t ua = (uint32_t)a, ub = (uint32_t)b;
        store_key_init(&ka), store_key_init(&kb);
        store_key_u32(&ka, ua), store_key_u32(&kb, ub);
        if (sign(cmp_bytes(&ka, &kb)) != (ua > ub) - (ua < ub)) bad++;
        if (store_be32_get(ka.b) != ua) bad++;
        float fa = rng_normal(&rng) * 1e3f, fb = rng_normal(&rng) * 1e-3f;
        store_key_init(&ka), store_key_init(&kb);
        store_key_f32(&ka, fa), store_key_f32(&kb, fb);
        if (sign(cmp_bytes(&ka, &kb)) != (fa > fb) - (fa < fb)) bad++;
        if (store_key_get_f32(ka.b) != fa) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    const float ordered[] = {-INFINITY, -1e30f, -1.0f, -1e-30f, 0.0f,
                             1e-30f,    1.0f,   1e30f, INFINITY};
    for (size_t i = 0; i + 1 < SF_ARRAY_LEN(ordered); i++) {
        struct store_key ka, kb;
        store_key_init(&ka), store_key_init(&kb);
        store_key_f32(&ka, ordered[i]), store_key_f32(&kb, ordered[i + 1]);
        CHECK(cmp_bytes(&ka, &kb) < 0);
    }
    struct store_key k;
    store_key_init(&k);
    store_key_str(&k, "ab");
    store_key_u16(&k, 0x0102);
    store_key_u8(&k, 9);
    CHECK(k.len == 5 && memcmp(k.b, "ab\x01\x02\x09", 5) == 0 && !k.err);
    uint8_t big[STORE_KEY_MAX];
    memset(big, 1, sizeof big);
    store_key_raw(&k, big, STORE_KEY_MAX - 5);
    CHECK(k.len == STORE_KEY_MAX && !k.err);
    store_key_u8(&k, 1);
    CHECK(k.err == SF_ERANGE && k.len == STORE_KEY_MAX);
}

/* ---------------------------------------------------------------- store ---- */

static const char *const CFS[] = {"a", "b", "c"};

static int get_str(struct store *s, size_t cf, const char *key, char *out, size_t cap)
{
    void *v;
    size_t n;
    int rc = store_get(s, cf, key, strlen(key), &v, &n);
    if (rc) return rc;
    snprintf(out, cap, "%.*s", (int)n, (const char *)v);
    store_free(v);
    return 0;
}

static int put_str(struct store *s, size_t cf, const char *key, const char *val, bool sync)
{
    return store_put(s, cf, key, strlen(key), val, strlen(val), sync);
}

static void test_basic_and_reopen(void)
{
    char path[512], out[64];
    tmp_path(path, sizeof path, "basic");
    struct store *s = (struct store *)1;
    CHECK_EQ_INT(store_open(&s, path, CFS, 3, 0), SF_NOTFOUND); /* nothing there yet */
    CHECK(s == NULL);
    CHECK_EQ_INT(store_open(&s, path, CFS, 3, STORE_CREATE), 0);
    if (!s) return;
    CHECK(store_is_writable(s));
    CHECK_EQ_INT(store_cf_count(s), 4); /* a, b, c, default */
    CHECK(strcmp(store_cf_name(s, 0), "a") == 0 && strcmp(store_cf_name(s, 3), "default") == 0);
    CHECK(store_cf_name(s, 4) == NULL);
    size_t cf = 99;
    CHECK(store_cf_find(s, "c", &cf) == 0 && cf == 2);
    CHECK_EQ_INT(store_cf_find(s, "zz", &cf), SF_NOTFOUND);

    /* Same key, different column families, different values. */
    for (size_t i = 0; i < 3; i++) {
        char val[16];
        snprintf(val, sizeof val, "val-%zu", i);
        CHECK_EQ_INT(put_str(s, i, "k", val, i == 1), 0);
    }
    for (size_t i = 0; i < 3; i++) {
        char want[16];
        snprintf(want, sizeof want, "val-%zu", i);
        CHECK(get_str(s, i, "k", out, sizeof out) == 0 && strcmp(out, want) == 0);
    }
    CHECK_EQ_INT(get_str(s, 3, "k", out, sizeof out), SF_NOTFOUND);
    /* Overwrite, delete, delete of an absent key. */
    CHECK_EQ_INT(put_str(s, 0, "k", "new", false), 0);
    CHECK(get_str(s, 0, "k", out, sizeof out) == 0 && strcmp(out, "new") == 0);
    CHECK_EQ_INT(store_delete(s, 1, "k", 1, true), 0);
    CHECK_EQ_INT(get_str(s, 1, "k", out, sizeof out), SF_NOTFOUND);
    CHECK_EQ_INT(store_delete(s, 1, "absent", 6, false), 0);
    /* Binary keys with NUL bytes, an empty value (present, not absent), an empty key. */
    CHECK_EQ_INT(store_put(s, 2, "x\0y", 3, "\0\1\2", 3, false), 0);
    CHECK_EQ_INT(store_put(s, 2, "x\0z", 3, "", 0, false), 0);
    CHECK_EQ_INT(store_put(s, 2, "", 0, "e", 1, false), 0);
    void *v = NULL;
    size_t n = 99;
    CHECK_EQ_INT(store_get(s, 2, "x\0y", 3, &v, &n), 0);
    CHECK(n == 3 && v && memcmp(v, "\0\1\2", 3) == 0 && ((char *)v)[3] == '\0');
    store_free(v);
    CHECK_EQ_INT(store_get(s, 2, "x\0z", 3, &v, &n), 0);
    CHECK(n == 0 && v != NULL);
    store_free(v);
    CHECK_EQ_INT(store_get(s, 2, "x", 1, &v, &n), SF_NOTFOUND);
    CHECK(v == NULL && n == 0);
    CHECK_EQ_INT(store_get(s, 2, "", 0, &v, &n), 0);
    CHECK(n == 1);
    store_free(v);
    /* Out-of-range column family index. */
    CHECK_EQ_INT(store_put(s, 9, "k", 1, "v", 1, false), SF_EINVAL);
    CHECK_EQ_INT(store_get(s, 9, "k", 1, &v, &n), SF_EINVAL);
    /* A large value. */
    size_t big_n = 3u << 20;
    char *big = malloc(big_n);
    for (size_t i = 0; i < big_n; i++) big[i] = (char)(i * 7 + 3);
    CHECK_EQ_INT(store_put(s, 0, "big", 3, big, big_n, false), 0);
    store_close(&s);
    CHECK(s == NULL);
    store_close(&s); /* NULL-safe */

    /* Reopen: everything persisted (the WAL is replayed for unsynced writes too). A
     * reopen that lists fewer column families still opens the others. */
    static const char *const only_b[] = {"b"};
    CHECK_EQ_INT(store_open(&s, path, only_b, 1, 0), 0);
    if (!s) {
        free(big);
        return;
    }
    CHECK_EQ_INT(store_cf_count(s), 4);
    size_t ca = 99, cc = 99;
    CHECK(store_cf_find(s, "a", &ca) == 0 && store_cf_find(s, "c", &cc) == 0);
    CHECK(store_cf_find(s, "b", &cf) == 0 && cf == 0);
    CHECK(get_str(s, ca, "k", out, sizeof out) == 0 && strcmp(out, "new") == 0);
    CHECK_EQ_INT(get_str(s, 0, "k", out, sizeof out), SF_NOTFOUND);
    CHECK(get_str(s, cc, "k", out, sizeof out) == 0 && strcmp(out, "val-2") == 0);
    CHECK_EQ_INT(store_get(s, ca, "big", 3, &v, &n), 0);
    CHECK(n == big_n && memcmp(v, big, big_n) == 0);
    store_free(v);
    free(big);
    store_close(&s);

    /* A column family that does not exist needs STORE_CREATE. */
    static const char *const with_d[] = {"a", "d"};
    CHECK_EQ_INT(store_open(&s, path, with_d, 2, 0), SF_EINVAL);
    CHECK(s == NULL);
    CHECK_EQ_INT(store_open(&s, path, with_d, 2, STORE_CREATE), 0);
    if (s) {
        CHECK_EQ_INT(store_cf_count(s), 5);
        CHECK_EQ_INT(put_str(s, 1, "dk", "dv", true), 0);
        store_close(&s);
    }
    static const char *const dup[] = {"a", "a"};
    CHECK_EQ_INT(store_open(&s, path, dup, 2, 0), SF_EINVAL);
    static const char *const empty[] = {""};
    CHECK_EQ_INT(store_open(&s, path, empty, 1, 0), SF_EINVAL);

    /* Read-only: sees everything, refuses writes. */
    CHECK_EQ_INT(store_open(&s, path, NULL, 0, STORE_READONLY), 0);
    if (s) {
        CHECK(!store_is_writable(s));
        size_t cd;
        CHECK(store_cf_find(s, "d", &cd) == 0);
        CHECK(get_str(s, cd, "dk", out, sizeof out) == 0 && strcmp(out, "dv") == 0);
        CHECK_EQ_INT(put_str(s, cd, "x", "y", false), SF_ESTATE);
        CHECK_EQ_INT(store_delete(s, cd, "dk", 2, false), SF_ESTATE);
        struct store_batch *b = store_batch_new(s);
        CHECK(b != NULL);
        if (b) {
            CHECK_EQ_INT(store_batch_put(b, cd, "x", 1, "y", 1), 0);
            CHECK_EQ_INT(store_batch_commit(b, false), SF_ESTATE);
            store_batch_destroy(&b);
        }
        CHECK_EQ_INT(store_checkpoint(s, "/nonexistent/never"), SF_EUNSUP);
        CHECK_EQ_INT(store_catch_up(s), SF_ESTATE);
        store_close(&s);
    }
}

static void test_batches(void)
{
    char path[512];
    struct store *s;
    CHECK_EQ_INT(store_open(&s, tmp_path(path, sizeof path, "batch"), CFS, 3, STORE_CREATE), 0);
    if (!s) return;
    CHECK_EQ_INT(put_str(s, 2, "gone", "soon", false), 0);
    struct store_batch *b = store_batch_new(s);
    if (!b) {
        store_close(&s);
        return;
    }
    CHECK_EQ_INT(store_batch_count(b), 0);
    for (int i = 0; i < 10; i++) {
        char k[16], val[16];
        snprintf(k, sizeof k, "k%02d", i);
        snprintf(val, sizeof val, "v%d", i);
        CHECK_EQ_INT(store_batch_put(b, (size_t)(i % 2), k, strlen(k), val, strlen(val)), 0);
    }
    CHECK_EQ_INT(store_batch_delete(b, 2, "gone", 4), 0);
    CHECK_EQ_INT(store_batch_put(b, 7, "x", 1, "y", 1), SF_EINVAL);
    CHECK_EQ_INT(store_batch_count(b), 11);
    char out[32];
    /* Nothing is visible before the commit. */
    CHECK_EQ_INT(get_str(s, 0, "k00", out, sizeof out), SF_NOTFOUND);
    CHECK(get_str(s, 2, "gone", out, sizeof out) == 0);
    CHECK_EQ_INT(store_batch_commit(b, true), 0);
    CHECK_EQ_INT(store_batch_count(b), 0); /* cleared for reuse */
    int wrong = 0;
    for (int i = 0; i < 10; i++) {
        char k[16], want[16];
        snprintf(k, sizeof k, "k%02d", i);
        snprintf(want, sizeof want, "v%d", i);
        if (get_str(s, (size_t)(i % 2), k, out, sizeof out) != 0 || strcmp(out, want) != 0) wrong++;
        if (get_str(s, (size_t)(1 - i % 2), k, out, sizeof out) != SF_NOTFOUND) wrong++;
    }
    CHECK_EQ_INT(wrong, 0);
    CHECK_EQ_INT(get_str(s, 2, "gone", out, sizeof out), SF_NOTFOUND);
    /* Reuse; a later operation on the same key in one batch wins; clear drops all. */
    CHECK_EQ_INT(store_batch_put(b, 0, "k00", 3, "first", 5), 0);
    CHECK_EQ_INT(store_batch_put(b, 0, "k00", 3, "second", 6), 0);
    CHECK_EQ_INT(store_batch_delete(b, 0, "k02", 3), 0);
    CHECK_EQ_INT(store_batch_commit(b, false), 0);
    CHECK(get_str(s, 0, "k00", out, sizeof out) == 0 && strcmp(out, "second") == 0);
    CHECK_EQ_INT(get_str(s, 0, "k02", out, sizeof out), SF_NOTFOUND);
    CHECK_EQ_INT(store_batch_put(b, 0, "k00", 3, "third", 5), 0);
    store_batch_clear(b);
    CHECK_EQ_INT(store_batch_count(b), 0);
    CHECK_EQ_INT(store_batch_commit(b, false), 0); /* empty commit is fine */
    CHECK(get_str(s, 0, "k00", out, sizeof out) == 0 && strcmp(out, "second") == 0);
    store_batch_destroy(&b);
    CHECK(b == NULL);
    store_batch_destroy(&b);
    store_close(&s);
}

/* Key: 1-byte tag + big-endian u32. */
static void tagged_key(struct store_key *k, uint8_t tag, uint32_t id)
{
    store_key_init(k);
    store_key_u8(k, tag);
    store_key_u32(k, id);
}

static void test_iterators(void)
{
    char path[512];
    struct store *s;
    CHECK_EQ_INT(store_open(&s, tmp_path(path, sizeof path, "iter"), CFS, 3, STORE_CREATE), 0);
    if (!s) return;
    /* Ids inserted in a scrambled order under tags 1, 2 and 0xff, plus keys that
     * share the 0xff byte but are longer/shorter. */
    enum { N = 300 };
    struct store_batch *b = store_batch_new(s);
    for (uint32_t i = 0; i < N; i++) {
        uint32_t id = (i * 7919u) % N * 1000u + 3; /* spans several byte positions */
        for (uint8_t tag = 1; tag <= 2; tag++) {
            struct store_key k;
            tagged_key(&k, tag, id);
            uint8_t val[5];
            val[0] = tag;
            store_be32_put(val + 1, id);
            store_batch_put(b, 1, k.b, k.len, val, sizeof val);
        }
        struct store_key k;
        tagged_key(&k, 0xff, id);
        store_batch_put(b, 1, k.b, k.len, "ff", 2);
    }
    store_batch_put(b, 1, "\xff", 1, "short", 5);
    store_batch_put(b, 0, "other-cf", 8, "x", 1);
    CHECK_EQ_INT(store_batch_commit(b, false), 0);
    store_batch_destroy(&b);

    /* Full scan: 3N + 1 keys in strictly increasing byte order. */
    struct store_iter *it = store_iter_new(s, 1, NULL, 0);
    CHECK(it != NULL);
    if (!it) goto out;
    size_t count = 0, disorder = 0, prev_len = 0;
    uint8_t prev[16];
    for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
        size_t kl;
        const uint8_t *k = store_iter_key(it, &kl);
        if (count) {
            int c = memcmp(prev, k, SF_MIN(prev_len, kl));
            if (c > 0 || (c == 0 && prev_len >= kl)) disorder++;
        }
        memcpy(prev, k, SF_MIN(kl, sizeof prev));
        prev_len = SF_MIN(kl, sizeof prev);
        count++;
    }
    CHECK_EQ_INT(store_iter_status(it), 0);
    CHECK_EQ_INT(count, 3 * N + 1);
    CHECK_EQ_INT(disorder, 0);
    store_iter_destroy(&it);
    CHECK(it == NULL);

    /* Prefix scan of tag 2: exactly N keys, ids ascending numerically, values match. */
    uint8_t tag2 = 2;
    it = store_iter_new(s, 1, &tag2, 1);
    count = 0;
    size_t bad = 0;
    uint32_t last = 0;
    for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
        size_t kl, vl;
        const uint8_t *k = store_iter_key(it, &kl);
        const uint8_t *v = store_iter_value(it, &vl);
        uint32_t id = store_be32_get(k + 1);
        if (kl != 5 || k[0] != 2 || vl != 5 || v[0] != 2 || store_be32_get(v + 1) != id) bad++;
        if (count && id <= last) bad++;
        last = id;
        count++;
    }
    CHECK_EQ_INT(count, N);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(last, (N - 1) * 1000u + 3);
    /* Seek inside the prefix lands on the first id >= target. */
    struct store_key k;
    tagged_key(&k, 2, 150000);
    store_iter_seek(it, k.b, k.len);
    size_t kl;
    CHECK(store_iter_valid(it) &&
          store_be32_get((const uint8_t *)store_iter_key(it, &kl) + 1) == 150003);
    /* Seeking before the prefix clamps to its first key; past it is invalid. */
    store_iter_seek(it, "\x01\xff", 2);
    CHECK(store_iter_valid(it) &&
          store_be32_get((const uint8_t *)store_iter_key(it, &kl) + 1) == 3);
    store_iter_seek(it, "\x03", 1);
    CHECK(!store_iter_valid(it));
    CHECK(store_iter_key(it, &kl) == NULL && kl == 0);
    store_iter_next(it); /* harmless when invalid */
    /* Backwards from the last key of the prefix. */
    store_iter_seek_last(it);
    count = 0;
    bad = 0;
    last = UINT32_MAX;
    for (; store_iter_valid(it); store_iter_prev(it)) {
        uint32_t id = store_be32_get((const uint8_t *)store_iter_key(it, &kl) + 1);
        if (id >= last || ((const uint8_t *)store_iter_key(it, &kl))[0] != 2) bad++;
        last = id;
        count++;
    }
    CHECK_EQ_INT(count, N);
    CHECK_EQ_INT(bad, 0);
    store_iter_destroy(&it);

    /* A prefix of 0xff (no upper bound exists): N tagged keys plus "\xff" itself. */
    uint8_t ff = 0xff;
    it = store_iter_new(s, 1, &ff, 1);
    count = 0;
    for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) count++;
    CHECK_EQ_INT(count, N + 1);
    store_iter_seek_last(it);
    CHECK(store_iter_valid(it));
    const uint8_t *lk = store_iter_key(it, &kl);
    CHECK(kl == 5 && lk[0] == 0xff && store_be32_get(lk + 1) == (N - 1) * 1000u + 3);
    store_iter_destroy(&it);
    /* A prefix that matches nothing. */
    it = store_iter_new(s, 1, "\x05", 1);
    store_iter_seek_first(it);
    CHECK(!store_iter_valid(it));
    store_iter_seek_last(it);
    CHECK(!store_iter_valid(it));
    store_iter_destroy(&it);

    /* An iterator is a snapshot: later writes are not seen by it. */
    it = store_iter_new(s, 0, NULL, 0);
    CHECK_EQ_INT(put_str(s, 0, "zzz-later", "1", false), 0);
    count = 0;
    for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) count++;
    CHECK_EQ_INT(count, 1);
    store_iter_destroy(&it);
    it = store_iter_new(s, 0, NULL, 0);
    count = 0;
    for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) count++;
    CHECK_EQ_INT(count, 2);
    store_iter_destroy(&it);
    CHECK(store_iter_new(s, 42, NULL, 0) == NULL);
    /* Order survives a flush to SST files and a reopen. */
    CHECK_EQ_INT(store_flush(s), 0);
    store_close(&s);
    CHECK_EQ_INT(store_open(&s, path, CFS, 3, 0), 0);
    if (!s) return;
    it = store_iter_new(s, 1, &tag2, 1);
    count = 0;
    last = 0;
    bad = 0;
    for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
        uint32_t id = store_be32_get((const uint8_t *)store_iter_key(it, &kl) + 1);
        if (count && id <= last) bad++;
        last = id;
        count++;
    }
    CHECK_EQ_INT(count, N);
    CHECK_EQ_INT(bad, 0);
    store_iter_destroy(&it);
out:
    store_close(&s);
}

/* Helper process: the primary writer for the secondary test. Writes key i (sync)
 * then prints i, forever, until killed (or after a generous cap). */
static int child_writer_loop(const char *path)
{
    struct store *s;
    if (store_open(&s, path, CFS, 3, STORE_CREATE) != 0) return 3;
    for (uint32_t i = 0; i < 1000000; i++) {
        struct store_key k;
        tagged_key(&k, 9, i);
        if (store_put(s, 0, k.b, k.len, "live", 4, true) != 0) return 4;
        if (i % 50 == 49 && store_flush(s) != 0) return 5; /* exercise SST + MANIFEST */
        printf("%u\n", i);
        fflush(stdout);
        time_sleep_ms(2);
    }
    store_close(&s);
    return 0;
}

/* Helper process: tries to open the store as a writer; exits with -rc. */
static int child_try_open(const char *path)
{
    struct store *s;
    int rc = store_open(&s, path, CFS, 3, 0);
    store_close(&s);
    return rc < 0 ? -rc : rc == 0 ? 0 : 100 + rc;
}

static void test_secondary(void)
{
    char path[512], spath[512], spath2[512], out[32];
    tmp_path(path, sizeof path, "sec");
    tmp_path(spath, sizeof spath, "sec-secondary");
    tmp_path(spath2, sizeof spath2, "sec-secondary2");
    struct store *p, *sec;

    /* In-process: a primary and a secondary side by side. */
    CHECK_EQ_INT(store_open(&p, path, CFS, 3, STORE_CREATE), 0);
    if (!p) return;
    CHECK_EQ_INT(put_str(p, 0, "one", "1", true), 0);
    CHECK_EQ_INT(store_open_secondary(&sec, path, spath, CFS, 3), 0);
    if (!sec) {
        store_close(&p);
        return;
    }
    CHECK(!store_is_writable(sec));
    CHECK(get_str(sec, 0, "one", out, sizeof out) == 0 && strcmp(out, "1") == 0);
    CHECK_EQ_INT(put_str(p, 0, "two", "2", true), 0);
    CHECK_EQ_INT(put_str(p, 1, "three", "3", false), 0);
    /* Not visible until the secondary catches up. */
    CHECK_EQ_INT(get_str(sec, 0, "two", out, sizeof out), SF_NOTFOUND);
    CHECK_EQ_INT(store_catch_up(sec), 0);
    CHECK(get_str(sec, 0, "two", out, sizeof out) == 0 && strcmp(out, "2") == 0);
    CHECK(get_str(sec, 1, "three", out, sizeof out) == 0 && strcmp(out, "3") == 0);
    /* Through a flush (new SST, MANIFEST edit, WAL switch) as well. */
    CHECK_EQ_INT(store_delete(p, 0, "one", 3, false), 0);
    CHECK_EQ_INT(store_flush(p), 0);
    CHECK_EQ_INT(put_str(p, 0, "four", "4", false), 0);
    CHECK_EQ_INT(store_catch_up(sec), 0);
    CHECK_EQ_INT(get_str(sec, 0, "one", out, sizeof out), SF_NOTFOUND);
    CHECK(get_str(sec, 0, "four", out, sizeof out) == 0 && strcmp(out, "4") == 0);
    CHECK_EQ_INT(put_str(sec, 0, "x", "y", false), SF_ESTATE);
    CHECK_EQ_INT(store_flush(sec), SF_ESTATE);
    CHECK_EQ_INT(store_checkpoint(sec, spath2), SF_EUNSUP);
    CHECK_EQ_INT(store_catch_up(p), SF_ESTATE);
    store_close(&sec);
    store_close(&p);
    CHECK_EQ_INT(store_open_secondary(&sec, path, "", CFS, 3), SF_EINVAL);
    char missing[512];
    CHECK_EQ_INT(
        store_open_secondary(&sec, tmp_path(missing, sizeof missing, "nope"), spath, CFS, 3),
        SF_NOTFOUND);

    /* Across processes: a writer keeps running in a child; the secondary follows. */
    char lpath[512];
    tmp_path(lpath, sizeof lpath, "live");
    int fd = -1;
    pid_t pid = spawn_self("--writer-loop", lpath, &fd);
    CHECK(pid > 0);
    if (pid <= 0) return;
    FILE *in = fdopen(fd, "r");
    unsigned seen = 0;
    int rounds = 0, missing_keys = 0;
    sec = NULL;
    char line[32];
    while (rounds < 8 && fgets(line, sizeof line, in)) {
        unsigned i = (unsigned)strtoul(line, NULL, 10);
        if (i < seen + 40 && rounds > 0) continue; /* let the writer get ahead */
        if (!sec && store_open_secondary(&sec, lpath, spath2, CFS, 3) != 0) break;
        /* Every key the writer acknowledged so far becomes visible. Catch-up is
         * best effort in RocksDB (a WAL the primary is switching to can be missed
         * by one attempt), so a key counts as missing only if a few attempts in a
         * row do not show it. */
        int missing_now = 0;
        for (int attempt = 0; attempt < 20; attempt++) {
            CHECK_EQ_INT(store_catch_up(sec), 0);
            missing_now = 0;
            for (unsigned j = 0; j <= i; j++) {
                struct store_key k;
                tagged_key(&k, 9, j);
                void *v;
                size_t n;
                if (store_get(sec, 0, k.b, k.len, &v, &n) != 0) {
                    missing_now++;
                    continue;
                }
                if (n != 4 || memcmp(v, "live", 4) != 0) missing_now++;
                store_free(v);
            }
            if (missing_now == 0) break;
            time_sleep_ms(50);
        }
        missing_keys += missing_now;
        seen = i;
        rounds++;
    }
    CHECK_EQ_INT(rounds, 8);
    CHECK_EQ_INT(missing_keys, 0);
    CHECK_MSG(seen >= 7 * 40, "writer only reached %u", seen);
    /* The writer is still alive: it held the lock the whole time. */
    CHECK_EQ_INT(kill(pid, 0), 0);
    kill(pid, SIGKILL);
    wait_exit_code(pid);
    fclose(in);
    store_close(&sec);
}

static void test_checkpoint(void)
{
    char path[512], cpath[512], out[32];
    struct store *s, *c;
    CHECK_EQ_INT(store_open(&s, tmp_path(path, sizeof path, "ckpt"), CFS, 3, STORE_CREATE), 0);
    if (!s) return;
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "key%03d", i);
        CHECK_EQ_INT(put_str(s, (size_t)(i % 3), k, "before", false), 0);
    }
    CHECK_EQ_INT(store_checkpoint(s, tmp_path(cpath, sizeof cpath, "ckpt-copy")), 0);
    CHECK_EQ_INT(store_checkpoint(s, cpath), SF_EINVAL); /* exists */
    CHECK_EQ_INT(put_str(s, 0, "key000", "after", false), 0);
    CHECK_EQ_INT(put_str(s, 0, "new", "after", false), 0);
    /* The copy opens as its own primary, while the original stays open. */
    CHECK_EQ_INT(store_open(&c, cpath, CFS, 3, 0), 0);
    if (c) {
        int wrong = 0;
        for (int i = 0; i < 100; i++) {
            char k[16];
            snprintf(k, sizeof k, "key%03d", i);
            if (get_str(c, (size_t)(i % 3), k, out, sizeof out) != 0 || strcmp(out, "before"))
                wrong++;
        }
        CHECK_EQ_INT(wrong, 0);
        CHECK_EQ_INT(get_str(c, 0, "new", out, sizeof out), SF_NOTFOUND);
        CHECK_EQ_INT(put_str(c, 0, "copy-only", "1", true), 0);
        store_close(&c);
    }
    CHECK(get_str(s, 0, "key000", out, sizeof out) == 0 && strcmp(out, "after") == 0);
    CHECK_EQ_INT(get_str(s, 0, "copy-only", out, sizeof out), SF_NOTFOUND);
    store_close(&s);
}

static void test_single_writer(void)
{
    char path[512], out[32];
    struct store *s, *s2;
    CHECK_EQ_INT(store_open(&s, tmp_path(path, sizeof path, "lock"), CFS, 3, STORE_CREATE), 0);
    if (!s) return;
    CHECK_EQ_INT(put_str(s, 0, "k", "v", true), 0);
    /* Same process, second writer. */
    s2 = (struct store *)1;
    CHECK_EQ_INT(store_open(&s2, path, CFS, 3, STORE_CREATE), SF_ESTATE);
    CHECK(s2 == NULL);
    /* Another process. */
    pid_t pid = spawn_self("--try-open", path, NULL);
    CHECK_EQ_INT(wait_exit_code(pid), -SF_ESTATE);
    /* Readers are still welcome. */
    CHECK_EQ_INT(store_open(&s2, path, CFS, 3, STORE_READONLY), 0);
    if (s2) {
        CHECK(get_str(s2, 0, "k", out, sizeof out) == 0 && strcmp(out, "v") == 0);
        store_close(&s2);
    }
    store_close(&s);
    /* Once the owner closes, another process may own it. */
    pid = spawn_self("--try-open", path, NULL);
    CHECK_EQ_INT(wait_exit_code(pid), 0);
}

int main(int argc, char **argv)
{
    log_init("test_store", LOG_LOGFMT, LOG_ERROR);
    if (argc == 3 && strcmp(argv[1], "--writer-loop") == 0) return child_writer_loop(argv[2]);
    if (argc == 3 && strcmp(argv[1], "--try-open") == 0) {
        if (!getenv("STORE_TEST_VERBOSE")) log_set_level(LOG_OFF);
        return child_try_open(argv[2]);
    }
    const char *tmp = getenv("TMPDIR");
    snprintf(tmp_root, sizeof tmp_root, "%s/sf_store_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(tmp_root)) {
        perror("mkdtemp");
        return 1;
    }
    test_crc32c();
    /* The corruption cases log a warning each; keep the output readable. */
    log_set_level(LOG_OFF);
    test_record_roundtrip();
    test_record_corruption();
    test_reader_bounds();
    log_set_level(LOG_ERROR);
    test_keys();
    /* Error-path tests below log expected errors; only show them when asked. */
    if (!getenv("STORE_TEST_VERBOSE")) log_set_level(LOG_OFF);
    test_basic_and_reopen();
    test_batches();
    test_iterators();
    test_secondary();
    test_checkpoint();
    test_single_writer();
    rm_rf(tmp_root);
    return check_exit();
}

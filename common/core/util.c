/* util: return-code names, capped buffers, files, time, RNG, half floats, parsing. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

const char *sf_strerror(int rc)
{
    switch (rc) {
    case SF_OK:
        return "ok";
    case SF_ERR:
        return "failure";
    case SF_EINVAL:
        return "invalid argument or input";
    case SF_ENOMEM:
        return "out of memory or over a size cap";
    case SF_EIO:
        return "I/O error";
    case SF_EFORMAT:
        return "malformed input";
    case SF_ERANGE:
        return "value out of range";
    case SF_ETIMEOUT:
        return "timed out";
    case SF_ESTATE:
        return "invalid state";
    case SF_EUNSUP:
        return "not supported";
    case SF_NOTFOUND:
        return "not found";
    case SF_AGAIN:
        return "try again";
    case SF_EXIT:
        return "exit requested";
    default:
        return "unknown error";
    }
}

/* ---- buf ---- */

void buf_init(struct buf *b, size_t max)
{
    memset(b, 0, sizeof *b);
    b->max = max ? max : SIZE_MAX / 2;
}

void buf_fini(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

int buf_reserve(struct buf *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra) return SF_ENOMEM;
    size_t need = b->len + extra + 1; /* room for the NUL */
    if (need <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (!p) return SF_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *data, size_t n)
{
    int rc = buf_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int buf_putc(struct buf *b, char c)
{
    return buf_append(b, &c, 1);
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0) return SF_EINVAL;
    int rc = buf_reserve(b, (size_t)n);
    if (rc) return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int buf_json_stringn(struct buf *b, const char *s, size_t n)
{
    int rc = buf_putc(b, '"');
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            rc = buf_printf(b, "\\%c", c);
        else if (c == '\n')
            rc = buf_append(b, "\\n", 2);
        else if (c == '\t')
            rc = buf_append(b, "\\t", 2);
        else if (c < 0x20 || c == 0x7f)
            rc = buf_printf(b, "\\u%04x", c);
        else if (c < 0x80)
            rc = buf_putc(b, (char)c);
        else {
            /* copy a whole valid UTF-8 sequence; a stray byte becomes U+FFFD */
            size_t len = c >= 0xf0 && c <= 0xf4   ? 4
                         : c >= 0xe0 && c <= 0xef ? 3
                         : c >= 0xc2 && c < 0xe0  ? 2
                                                  : 0;
            bool ok = len > 0 && i + len <= n;
            for (size_t j = 1; ok && j < len; j++) ok = ((unsigned char)s[i + j] & 0xc0) == 0x80;
            if (ok) {
                rc = buf_append(b, s + i, len);
                i += len - 1;
            } else {
                rc = buf_append(b, "\\ufffd", 6);
            }
        }
    }
    return rc ? rc : buf_putc(b, '"');
}

int buf_json_string(struct buf *b, const char *s)
{
    return buf_json_stringn(b, s ? s : "", s ? strlen(s) : 0);
}

int buf_json_number(struct buf *b, double v)
{
    if (!isfinite(v)) return buf_append(b, "null", 4);
    if (v == (double)(int64_t)v && fabs(v) < 9e15) return buf_printf(b, "%lld", (long long)v);
    return buf_printf(b, "%.9g", v);
}

char *buf_steal(struct buf *b, size_t *len)
{
    if (!b->data && buf_reserve(b, 0) != 0) return NULL;
    char *p = b->data;
    if (len) *len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

/* ---- files ---- */

int file_read_all(const char *path, size_t max, char **out, size_t *len)
{
    *out = NULL;
    if (len) *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        log_error("file_open_failed", "path=%s err=\"%s\"", path, strerror(errno));
        return SF_EIO;
    }
    struct buf b;
    buf_init(&b, max);
    char chunk[65536];
    int rc = 0;
    for (;;) {
        size_t n = fread(chunk, 1, sizeof chunk, f);
        if (n && buf_append(&b, chunk, n) != 0) {
            log_error("file_too_large", "path=%s max=%zu", path, max);
            rc = SF_ERANGE;
            break;
        }
        if (n < sizeof chunk) {
            if (ferror(f)) {
                log_error("file_read_failed", "path=%s err=\"%s\"", path, strerror(errno));
                rc = SF_EIO;
            }
            break;
        }
    }
    fclose(f);
    if (rc) {
        buf_fini(&b);
        return rc;
    }
    *out = buf_steal(&b, len);
    return *out ? 0 : SF_ENOMEM;
}

int file_fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return SF_EIO;
    int rc = fsync(fd) == 0 ? 0 : SF_EIO;
    close(fd);
    return rc;
}

static void dir_of(const char *path, char *dir, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, cap, ".");
    else if (slash == path)
        snprintf(dir, cap, "/");
    else
        snprintf(dir, cap, "%.*s", (int)(slash - path), path);
}

int file_write_atomic(const char *path, const void *data, size_t len)
{
    char tmp[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp-XXXXXX", path) >= sizeof tmp) return SF_EINVAL;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        log_error("file_write_failed", "path=%s err=\"%s\"", path, strerror(errno));
        return SF_EIO;
    }
    const char *p = data;
    size_t left = len;
    int rc = 0;
    while (left) {
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR) continue;
            rc = SF_EIO;
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    if (!rc && fsync(fd) != 0) rc = SF_EIO;
    if (close(fd) != 0) rc = SF_EIO;
    if (!rc && rename(tmp, path) != 0) rc = SF_EIO;
    if (rc) {
        log_error("file_write_failed", "path=%s err=\"%s\"", path, strerror(errno));
        unlink(tmp);
        return rc;
    }
    char dir[PATH_MAX];
    dir_of(path, dir, sizeof dir);
    return file_fsync_dir(dir);
}

int file_mkdirs(const char *path, unsigned mode)
{
    char p[PATH_MAX];
    if ((size_t)snprintf(p, sizeof p, "%s", path) >= sizeof p) return SF_EINVAL;
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, (mode_t)mode) != 0 && errno != EEXIST) return SF_EIO;
        *s = '/';
    }
    if (mkdir(p, (mode_t)mode) != 0 && errno != EEXIST) return SF_EIO;
    return 0;
}

/* ---- time ---- */

int64_t time_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

double time_now_s(void)
{
    return (double)time_now_ns() * 1e-9;
}

int64_t time_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void time_sleep_ms(int64_t ms)
{
    if (ms <= 0) return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- rng ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void rng_seed(struct rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t rng_u64(struct rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double rng_uniform(struct rng *r)
{
    return (double)(rng_u64(r) >> 11) * 0x1.0p-53;
}

float rng_normal(struct rng *r)
{
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

uint64_t rng_below(struct rng *r, uint64_t n)
{
    if (n == 0) return 0;
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do x = rng_u64(r);
    while (x >= limit);
    return x % n;
}

/* ---- half precision ---- */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 */
        float v = (float)man * 0x1.0p-24f;
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (man << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0);
    if (absx >= 0x477ff000u) return sign | 0x7c00; /* rounds to >= 65520: inf */
    if (absx < 0x38800000u) {                      /* below 2^-14: subnormal or zero */
        float a = bits_f32(absx);
        /* scale so that the subnormal unit 2^-24 becomes 1, then round to even */
        float scaled = a * 0x1.0p24f;
        uint32_t m = (uint32_t)nearbyintf(scaled);
        return sign | (uint16_t)m;
    }
    uint32_t exp = ((absx >> 23) - 112) << 10;
    uint32_t man = (absx >> 13) & 0x3ff;
    uint32_t h = exp | man;
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return sign | (uint16_t)h;
}

float bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    uint32_t rounding = 0x7fff + ((x >> 16) & 1);
    return (uint16_t)((x + rounding) >> 16);
}

/* ---- process ---- */

void proc_reexec_with_env(char **argv, const char *name, const char *value)
{
    if (getenv(name)) return;
    if (setenv(name, value, 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* exec failed: carry on in this process with the variable set for children */
}

/* ---- parsing ---- */

bool size_mul_ok(size_t a, size_t b, size_t *out)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) return false;
    if (out) *out = r;
    return true;
}

int parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s) return SF_EINVAL;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return SF_EINVAL;
    *out = v;
    return 0;
}

int parse_f64(const char *s, double *out)
{
    if (!s || !*s) return SF_EINVAL;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno || *end) return SF_EINVAL;
    *out = v;
    return 0;
}

size_t str_split_list(char *s, char **out, size_t max)
{
    size_t n = 0;
    char *save = NULL;
    for (char *t = strtok_r(s, ",", &save); t && n < max; t = strtok_r(NULL, ",", &save)) {
        while (*t == ' ') t++;
        char *e = t + strlen(t);
        while (e > t && e[-1] == ' ') *--e = 0;
        if (*t) out[n++] = t;
    }
    return n;
}

const char *env_or(const char *name, const char *def)
{
    const char *v = getenv(name);
    return v && *v ? v : def;
}

int env_expand(const char *in, char *out, size_t cap, char *what, size_t what_cap)
{
    size_t n = 0;
    if (what_cap) what[0] = '\0';
    if (cap == 0) return SF_ERANGE;
    for (const char *p = in; *p;) {
        const char *val = NULL;
        size_t vlen = 1;
        if (p[0] == '$' && p[1] == '{') {
            const char *close = strchr(p + 2, '}');
            const char *name = p + 2;
            size_t nlen = 0;
            while (name[nlen] == '_' || (name[nlen] >= 'A' && name[nlen] <= 'Z') ||
                   (name[nlen] >= 'a' && name[nlen] <= 'z') ||
                   (nlen > 0 && name[nlen] >= '0' && name[nlen] <= '9'))
                nlen++;
            const char *after = name + nlen;
            bool has_def = after[0] == ':' && after[1] == '-';
            if (!close || nlen == 0 || (!has_def && after != close) || nlen >= 256) {
                if (what_cap) snprintf(what, what_cap, "%.*s", close ? (int)(close - p + 1) : 2, p);
                return SF_EINVAL;
            }
            char vname[256];
            memcpy(vname, name, nlen);
            vname[nlen] = '\0';
            val = getenv(vname);
            if (!val || !*val) {
                if (!has_def) {
                    if (what_cap) snprintf(what, what_cap, "%s", vname);
                    return SF_EINVAL;
                }
                val = after + 2;
                vlen = (size_t)(close - val);
            } else {
                vlen = strlen(val);
            }
            p = close + 1;
        } else {
            val = p++;
        }
        if (vlen >= cap - n) return SF_ERANGE;
        memcpy(out + n, val, vlen);
        n += vlen;
    }
    out[n] = '\0';
    return 0;
}

int file_read_tail(const char *path, size_t max_bytes, size_t max_lines, char **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return SF_EIO;
    struct stat st;
    if (fstat(fd, &st) < 0 || max_bytes == 0) {
        close(fd);
        return SF_EIO;
    }
    off_t size = st.st_size, from = size > (off_t)max_bytes ? size - (off_t)max_bytes : 0;
    size_t want = (size_t)(size - from), got = 0;
    char *text = malloc(want + 1);
    if (!text) {
        close(fd);
        return SF_ENOMEM;
    }
    while (got < want) {
        ssize_t r = pread(fd, text + got, want - got, from + (off_t)got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(fd);
    while (got > 0 && text[got - 1] == '\n') got--;
    text[got] = '\0';
    size_t lines = 0, start = 0;
    for (size_t i = got; i > 0; i--) {
        if (text[i - 1] == '\n' && ++lines >= max_lines) {
            start = i;
            break;
        }
    }
    if (start) memmove(text, text + start, got - start + 1);
    *out = text;
    return 0;
}

bool flag_eq(const char *arg, const char *flag)
{
    if (strncmp(arg, "--", 2) != 0 || strncmp(flag, "--", 2) != 0) return !strcmp(arg, flag);
    const char *a = arg + 2, *b = flag + 2;
    for (; *a && *b; a++, b++) {
        char x = *a == '_' ? '-' : *a, y = *b == '_' ? '-' : *b;
        if (x != y) return false;
    }
    return *a == *b;
}

/* record: versioned, checksummed store values and their field codecs (see record.h). */
#include "store/record.h"

#include <pthread.h>
#include <string.h>

/* ---- CRC32C: table-driven, slice-by-8, table built once on first use ---- */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = crc_table[0][i];
        for (int t = 1; t < 8; t++) {
            c = crc_table[0][c & 0xff] ^ (c >> 8);
            crc_table[t][i] = c;
        }
    }
}

uint32_t record_crc32c(uint32_t crc, const void *data, size_t n)
{
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = data;
    uint32_t c = ~crc;
    while (n >= 8) {
        uint32_t lo = c ^ record_le32_get(p);
        uint32_t hi = record_le32_get(p + 4);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
            crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][hi & 0xff] ^
            crc_table[2][(hi >> 8) & 0xff] ^ crc_table[1][(hi >> 16) & 0xff] ^
            crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) c = crc_table[0][(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

/* ---- raw helpers ---- */
void record_le16_put(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

void record_le32_put(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

void record_le64_put(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

uint16_t record_le16_get(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

uint32_t record_le32_get(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t record_le64_get(const uint8_t *p)
{
    return (uint64_t)record_le32_get(p) | (uint64_t)record_le32_get(p + 4) << 32;
}

/* ---- encoding ---- */
int record_begin(struct buf *b, uint16_t type, uint16_t version, size_t *start)
{
    if (type == 0 || version == 0) {
        log_error("record_encode_failed", "reason=\"type and version must be >= 1\"");
        return SF_EINVAL;
    }
    uint8_t h[RECORD_HEADER_SIZE];
    h[0] = RECORD_MAGIC0;
    h[1] = RECORD_MAGIC1;
    record_le16_put(h + 2, version);
    record_le16_put(h + 4, type);
    record_le32_put(h + 6, 0);
    *start = b->len;
    return buf_append(b, h, sizeof h);
}

int record_finish(struct buf *b, size_t start)
{
    if (start > b->len || b->len - start < RECORD_HEADER_SIZE) {
        log_error("record_encode_failed", "reason=\"record_finish without record_begin\"");
        return SF_EINVAL;
    }
    size_t n = b->len - start - RECORD_HEADER_SIZE;
    if (n > RECORD_MAX_PAYLOAD) {
        log_error("record_encode_failed", "reason=\"payload too large\" len=%zu max=%zu", n,
                  RECORD_MAX_PAYLOAD);
        return SF_ERANGE;
    }
    uint8_t *rec = (uint8_t *)b->data + start;
    record_le32_put(rec + 6, (uint32_t)n);
    uint8_t crc[4];
    record_le32_put(crc, record_crc32c(0, rec, RECORD_HEADER_SIZE + n));
    return buf_append(b, crc, sizeof crc);
}

int record_encode(struct buf *b, uint16_t type, uint16_t version, const void *payload, size_t len)
{
    size_t start;
    int rc = record_begin(b, type, version, &start);
    if (rc == 0 && len) rc = buf_append(b, payload, len);
    if (rc == 0) rc = record_finish(b, start);
    return rc;
}

int record_put_u8(struct buf *b, uint8_t v)
{
    return buf_append(b, &v, 1);
}

int record_put_u16(struct buf *b, uint16_t v)
{
    uint8_t t[2];
    record_le16_put(t, v);
    return buf_append(b, t, sizeof t);
}

int record_put_u32(struct buf *b, uint32_t v)
{
    uint8_t t[4];
    record_le32_put(t, v);
    return buf_append(b, t, sizeof t);
}

int record_put_u64(struct buf *b, uint64_t v)
{
    uint8_t t[8];
    record_le64_put(t, v);
    return buf_append(b, t, sizeof t);
}

int record_put_i64(struct buf *b, int64_t v)
{
    return record_put_u64(b, (uint64_t)v);
}

int record_put_f32(struct buf *b, float v)
{
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    return record_put_u32(b, u);
}

int record_put_f64(struct buf *b, double v)
{
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    return record_put_u64(b, u);
}

int record_put_raw(struct buf *b, const void *p, size_t n)
{
    return n ? buf_append(b, p, n) : 0;
}

int record_put_bytes(struct buf *b, const void *p, size_t n)
{
    if (n > UINT32_MAX) {
        log_error("record_encode_failed", "reason=\"field too long\" len=%zu", n);
        return SF_ERANGE;
    }
    int rc = record_put_u32(b, (uint32_t)n);
    return rc ? rc : record_put_raw(b, p, n);
}

int record_put_str(struct buf *b, const char *s)
{
    return record_put_bytes(b, s, strlen(s));
}

/* ---- decoding ---- */
static int record_invalid(const char *why, size_t len)
{
    log_warn("record_invalid", "reason=\"%s\" len=%zu", why, len);
    return SF_EFORMAT;
}

int record_decode(const void *data, size_t len, struct record_view *out)
{
    const uint8_t *p = data;
    memset(out, 0, sizeof *out);
    if (!p || len < RECORD_OVERHEAD) return record_invalid("truncated header", len);
    if (p[0] != RECORD_MAGIC0 || p[1] != RECORD_MAGIC1) return record_invalid("bad magic", len);
    uint16_t version = record_le16_get(p + 2);
    uint16_t type = record_le16_get(p + 4);
    uint32_t n = record_le32_get(p + 6);
    if (n > RECORD_MAX_PAYLOAD) return record_invalid("payload length too large", len);
    if (len - RECORD_OVERHEAD < n) return record_invalid("truncated payload", len);
    if (len - RECORD_OVERHEAD > n) return record_invalid("trailing bytes", len);
    uint32_t want = record_le32_get(p + RECORD_HEADER_SIZE + n);
    if (record_crc32c(0, p, RECORD_HEADER_SIZE + n) != want)
        return record_invalid("crc mismatch", len);
    /* Checked after the CRC so that a flipped bit reads as corruption. */
    if (version == 0) return record_invalid("version 0", len);
    if (type == 0) return record_invalid("type 0", len);
    out->version = version;
    out->type = type;
    out->payload = p + RECORD_HEADER_SIZE;
    out->len = n;
    return 0;
}

int record_decode_as(const void *data, size_t len, uint16_t type, uint16_t max_version,
                     struct record_view *out)
{
    int rc = record_decode(data, len, out);
    if (rc) return rc;
    if (out->type != type) {
        log_warn("record_invalid", "reason=\"unexpected type\" type=%u want=%u", out->type, type);
        memset(out, 0, sizeof *out);
        return SF_EFORMAT;
    }
    if (out->version > max_version) {
        log_warn("record_invalid", "reason=\"unknown version\" type=%u version=%u max=%u",
                 out->type, out->version, max_version);
        memset(out, 0, sizeof *out);
        return SF_EFORMAT;
    }
    return 0;
}

void record_reader_init(struct record_reader *r, const void *data, size_t n)
{
    r->p = data;
    r->left = data ? n : 0;
    r->err = 0;
    r->why = NULL;
}

void record_reader_view(struct record_reader *r, const struct record_view *v)
{
    record_reader_init(r, v->payload, v->len);
}

void record_reader_fail(struct record_reader *r, const char *why)
{
    if (r->err) return;
    r->err = SF_EFORMAT;
    r->why = why;
    r->left = 0;
}

/* Returns the next n bytes and consumes them, or NULL (reader failed). */
static const uint8_t *take(struct record_reader *r, size_t n, const char *why)
{
    if (r->err) return NULL;
    if (r->left < n) {
        record_reader_fail(r, why);
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

uint8_t record_get_u8(struct record_reader *r)
{
    const uint8_t *p = take(r, 1, "truncated u8");
    return p ? p[0] : 0;
}

uint16_t record_get_u16(struct record_reader *r)
{
    const uint8_t *p = take(r, 2, "truncated u16");
    return p ? record_le16_get(p) : 0;
}

uint32_t record_get_u32(struct record_reader *r)
{
    const uint8_t *p = take(r, 4, "truncated u32");
    return p ? record_le32_get(p) : 0;
}

uint64_t record_get_u64(struct record_reader *r)
{
    const uint8_t *p = take(r, 8, "truncated u64");
    return p ? record_le64_get(p) : 0;
}

int64_t record_get_i64(struct record_reader *r)
{
    return (int64_t)record_get_u64(r);
}

float record_get_f32(struct record_reader *r)
{
    uint32_t u = record_get_u32(r);
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

double record_get_f64(struct record_reader *r)
{
    uint64_t u = record_get_u64(r);
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

void record_get_raw(struct record_reader *r, void *dst, size_t n)
{
    const uint8_t *p = take(r, n, "truncated bytes");
    if (!n) return;
    if (p)
        memcpy(dst, p, n);
    else
        memset(dst, 0, n);
}

const uint8_t *record_get_bytes(struct record_reader *r, size_t *n)
{
    *n = 0;
    uint32_t len = record_get_u32(r);
    if (r->err) return NULL;
    const uint8_t *p = take(r, len, "field length past end");
    if (p) *n = len;
    return p;
}

int record_get_str(struct record_reader *r, char *dst, size_t cap)
{
    size_t n;
    if (cap) dst[0] = '\0';
    const uint8_t *p = record_get_bytes(r, &n);
    if (!p) return r->err;
    if (n >= cap) {
        record_reader_fail(r, "string too long");
        return r->err;
    }
    if (memchr(p, '\0', n)) {
        record_reader_fail(r, "NUL inside string");
        return r->err;
    }
    memcpy(dst, p, n);
    dst[n] = '\0';
    return 0;
}

int record_reader_need(struct record_reader *r, uint64_t count, size_t item_size)
{
    if (r->err) return r->err;
    if (item_size && count > r->left / item_size) record_reader_fail(r, "count past end");
    return r->err;
}

int record_reader_finish(struct record_reader *r, const char *what)
{
    if (!r->err && r->left) record_reader_fail(r, "trailing bytes in payload");
    if (r->err) {
        log_warn("record_invalid", "what=%s reason=\"%s\"", what ? what : "?",
                 r->why ? r->why : "?");
        return r->err;
    }
    return 0;
}

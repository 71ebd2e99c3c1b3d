/* record: versioned, checksummed values for the RocksDB store, and the little-endian
 * field writers and bounds-checked reader that record codecs are built from.
 *
 * A record is one stored value:
 *
 *   offset  size  field
 *   0       2     magic "SF" (0x53 0x46)
 *   2       2     format version, u16 LE (>= 1; what the payload layout is)
 *   4       2     record type, u16 LE (>= 1; which schema the payload follows)
 *   6       4     payload length N, u32 LE
 *   10      N     payload
 *   10+N    4     CRC32C (Castagnoli) of bytes [0, 10+N), u32 LE
 *
 * The total length must be exactly 14 + N: nothing may follow the CRC.
 *
 * Writing: record_begin() appends a header to a core `struct buf`, record_put_*()
 * append payload fields, record_finish() patches the length and appends the CRC
 * (or record_encode() does all three for a ready payload).
 * Reading: record_decode() validates everything and returns a view that borrows
 * the input; a `struct record_reader` walks the payload. Reader getters never read
 * past the end: the first failure sets r->err (sticky) and every later getter
 * returns zero; check once with record_reader_finish(), which logs the reason.
 *
 * Nothing here allocates except through the caller's `struct buf`. */
#ifndef SAEFLOW_STORE_RECORD_H
#define SAEFLOW_STORE_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

#define RECORD_MAGIC0       0x53 /* 'S' */
#define RECORD_MAGIC1       0x46 /* 'F' */
#define RECORD_HEADER_SIZE  10
#define RECORD_TRAILER_SIZE 4
#define RECORD_OVERHEAD     (RECORD_HEADER_SIZE + RECORD_TRAILER_SIZE)
/* Largest payload a record may carry (a stored value should never be near this). */
#define RECORD_MAX_PAYLOAD ((size_t)1 << 30)

/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78). Start with crc = 0; pass the
 * previous result to continue over more bytes. crc32c("123456789") = 0xE3069283. */
uint32_t record_crc32c(uint32_t crc, const void *data, size_t n);

/* ---- raw little-endian / big-endian helpers on memory (no bounds checks) ---- */
void record_le16_put(uint8_t *p, uint16_t v);
void record_le32_put(uint8_t *p, uint32_t v);
void record_le64_put(uint8_t *p, uint64_t v);
uint16_t record_le16_get(const uint8_t *p);
uint32_t record_le32_get(const uint8_t *p);
uint64_t record_le64_get(const uint8_t *p);

/* ---- encoding ---- */
/* Appends a header for (type, version) with a zero length; returns the offset of
 * the record in `b` through *start for record_finish(). type and version >= 1. */
int record_begin(struct buf *b, uint16_t type, uint16_t version, size_t *start);
/* Sets the payload length of the record begun at `start` (everything appended
 * since) and appends the CRC. SF_ERANGE if the payload exceeds RECORD_MAX_PAYLOAD. */
int record_finish(struct buf *b, size_t start);
/* begin + payload + finish in one call. */
int record_encode(struct buf *b, uint16_t type, uint16_t version, const void *payload, size_t len);

/* Payload field writers: append to `b`, return 0 or SF_ENOMEM (buffer cap). */
int record_put_u8(struct buf *b, uint8_t v);
int record_put_u16(struct buf *b, uint16_t v);
int record_put_u32(struct buf *b, uint32_t v);
int record_put_u64(struct buf *b, uint64_t v);
int record_put_i64(struct buf *b, int64_t v);
int record_put_f32(struct buf *b, float v);
int record_put_f64(struct buf *b, double v);
/* Fixed-size bytes, no length prefix. */
int record_put_raw(struct buf *b, const void *p, size_t n);
/* u32 length prefix + bytes (n <= UINT32_MAX, else SF_ERANGE). */
int record_put_bytes(struct buf *b, const void *p, size_t n);
/* record_put_bytes of a NUL-terminated string (the NUL is not stored). */
int record_put_str(struct buf *b, const char *s);

/* ---- decoding ---- */
/* A decoded record; `payload` points into the decoded input (borrowed). */
struct record_view {
    uint16_t version;
    uint16_t type;
    const uint8_t *payload;
    size_t len;
};

/* Validates magic, version >= 1, type >= 1, exact length and CRC. Returns 0 and
 * fills *out, or SF_EFORMAT (reason logged as event "record_invalid"). */
int record_decode(const void *data, size_t len, struct record_view *out);
/* record_decode plus: the type must equal `type` and the version must lie in
 * [1, max_version]; else SF_EFORMAT (an unknown, newer version is logged as such). */
int record_decode_as(const void *data, size_t len, uint16_t type, uint16_t max_version,
                     struct record_view *out);

/* Cursor over a payload. Getters consume; on any failure they set err (first
 * reason kept in `why`) and return 0/NULL from then on. */
struct record_reader {
    const uint8_t *p;
    size_t left;
    int err;         /* 0 or SF_EFORMAT */
    const char *why; /* static text: the first failure */
};

void record_reader_init(struct record_reader *r, const void *data, size_t n);
/* Reader over a decoded record's payload. */
void record_reader_view(struct record_reader *r, const struct record_view *v);
uint8_t record_get_u8(struct record_reader *r);
uint16_t record_get_u16(struct record_reader *r);
uint32_t record_get_u32(struct record_reader *r);
uint64_t record_get_u64(struct record_reader *r);
int64_t record_get_i64(struct record_reader *r);
float record_get_f32(struct record_reader *r);
double record_get_f64(struct record_reader *r);
/* Copies n fixed bytes into dst (zero-filled on failure). */
void record_get_raw(struct record_reader *r, void *dst, size_t n);
/* Length-prefixed bytes: returns a pointer into the payload (borrowed) and the
 * length in *n, or NULL with *n = 0 on failure. A zero-length field returns a
 * non-NULL pointer. */
const uint8_t *record_get_bytes(struct record_reader *r, size_t *n);
/* Length-prefixed string copied into dst[cap] and NUL-terminated; fails (and
 * leaves dst = "") if it does not fit or contains a NUL byte. Returns 0 or err. */
int record_get_str(struct record_reader *r, char *dst, size_t cap);
/* Fails the reader if `count` items of `item_size` bytes cannot possibly remain:
 * call before allocating for a count read from input. Returns r->err. */
int record_reader_need(struct record_reader *r, uint64_t count, size_t item_size);
/* Marks the reader failed (for codec-level checks, e.g. a bad enum value). */
void record_reader_fail(struct record_reader *r, const char *why);
/* Returns 0 if every getter succeeded and the payload was consumed exactly, else
 * SF_EFORMAT after logging event "record_invalid" with what= and reason=. */
int record_reader_finish(struct record_reader *r, const char *what);

#endif

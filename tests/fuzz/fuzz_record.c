// lib: store
/* Fuzz target for the stored-record decoder and the payload reader (record.h).
 *
 * The input is decoded as a record; when it decodes, re-encoding the view must give
 * back the input byte for byte, and the payload is then walked with the reader.
 * Otherwise the raw input is walked. The walk takes its script from the bytes it
 * reads: each op byte picks a getter (and a size for raw/str/need), so the fuzzer
 * reaches every getter at every offset. Invariants checked: the reader never grows,
 * an error empties it and sticks, borrowed pointers stay inside the input. */
#include <stdint.h>
#include <string.h>

#include "store/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(c)                                                                             \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

static void walk(const uint8_t *data, size_t size)
{
    struct record_reader r;
    record_reader_init(&r, data, size);
    uint8_t raw[64];
    char str[64];
    size_t steps = 0;
    while (!r.err && r.left && steps++ < 4096) {
        size_t before = r.left;
        uint8_t op = record_get_u8(&r);
        size_t n = 0;
        const uint8_t *p;
        switch (op % 12) {
        case 0:
            (void)record_get_u8(&r);
            break;
        case 1:
            (void)record_get_u16(&r);
            break;
        case 2:
            (void)record_get_u32(&r);
            break;
        case 3:
            (void)record_get_u64(&r);
            break;
        case 4:
            (void)record_get_i64(&r);
            break;
        case 5:
            (void)record_get_f32(&r);
            break;
        case 6:
            (void)record_get_f64(&r);
            break;
        case 7:
            record_get_raw(&r, raw, (size_t)(op >> 2) % sizeof raw);
            break;
        case 8:
            p = record_get_bytes(&r, &n);
            FUZZ_ASSERT(r.err ? (p == NULL && n == 0)
                              : (p >= data && n <= size && (size_t)(p - data) <= size - n));
            break;
        case 9:
            if (record_get_str(&r, str, (size_t)(op >> 4) * 4) == 0)
                FUZZ_ASSERT(strlen(str) < (size_t)(op >> 4) * 4);
            break;
        case 10:
            (void)record_reader_need(&r, record_get_u32(&r), (size_t)(op >> 4));
            break;
        default:
            if (op == 0xff) record_reader_fail(&r, "fuzz");
            break;
        }
        FUZZ_ASSERT(r.left < before);
        if (r.err) FUZZ_ASSERT(r.left == 0 && r.err == SF_EFORMAT && r.why != NULL);
    }
    int rc = record_reader_finish(&r, "fuzz");
    FUZZ_ASSERT(rc == 0 || rc == SF_EFORMAT);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        log_set_level(LOG_OFF);
        quiet = 1;
    }
    struct record_view v;
    if (record_decode(data, size, &v) == 0) {
        FUZZ_ASSERT(v.version >= 1 && v.type >= 1 && v.len + RECORD_OVERHEAD == size);
        FUZZ_ASSERT(v.payload == data + RECORD_HEADER_SIZE);
        struct buf b;
        buf_init(&b, size + 16);
        FUZZ_ASSERT(record_encode(&b, v.type, v.version, v.payload, v.len) == 0);
        FUZZ_ASSERT(b.len == size && memcmp(b.data, data, size) == 0);
        buf_fini(&b);
        struct record_view w;
        FUZZ_ASSERT(record_decode_as(data, size, v.type, v.version, &w) == 0);
        FUZZ_ASSERT(record_decode_as(data, size, v.type, (uint16_t)(v.version - 1), &w) ==
                    SF_EFORMAT);
        walk(v.payload, v.len);
    } else {
        FUZZ_ASSERT(v.payload == NULL && v.len == 0);
        walk(data, size);
    }
    return 0;
}

// lib: eval
/* Fuzz target for the feature store's record decoders (eval/feature_store.h).
 *
 * The first input byte picks a decoder (SAE, run, stats, examples, logits,
 * neighbours) with its low bits; the rest is the stored value. When bit 0x40 is set
 * the target first patches the record's length field and CRC32C to match, so that
 * mutated payloads get past the framing checks and reach the payload decoders. Every decoder must
 * return 0 or SF_EFORMAT without crashing or leaking; a value that decodes must re-encode to the
 * same bytes (the codecs are canonical) and decode again. */
#include <stdint.h>
#include <string.h>

#include <stdlib.h>

#include "eval/feature_store.h"
#include "store/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_ASSERT(c)                                                                             \
    do {                                                                                           \
        if (!(c)) __builtin_trap();                                                                \
    } while (0)

#define ROUND_TRIP(type, dec, enc, fini)                                                           \
    do {                                                                                           \
        type v;                                                                                    \
        int rc = dec(p, n, &v);                                                                    \
        FUZZ_ASSERT(rc == 0 || rc == SF_EFORMAT);                                                  \
        if (rc != 0) break;                                                                        \
        struct buf b;                                                                              \
        buf_init(&b, (size_t)1 << 31);                                                             \
        FUZZ_ASSERT(enc(&v, &b) == 0);                                                             \
        FUZZ_ASSERT(b.len == n && memcmp(b.data, p, n) == 0);                                      \
        fini(&v);                                                                                  \
        FUZZ_ASSERT(dec(b.data, b.len, &v) == 0);                                                  \
        fini(&v);                                                                                  \
        buf_fini(&b);                                                                              \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        log_init("fuzz_feature_record", LOG_LOGFMT, LOG_OFF);
        quiet = 1;
    }
    if (size < 1) return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    uint8_t *fixed = NULL;
    if ((data[0] & 0x40) && n >= RECORD_OVERHEAD) {
        fixed = malloc(n);
        if (!fixed) return 0;
        memcpy(fixed, p, n);
        record_le32_put(fixed + 6, (uint32_t)(n - RECORD_OVERHEAD));
        record_le32_put(fixed + n - 4, record_crc32c(0, fixed, n - 4));
        p = fixed;
    }
    switch ((data[0] & 0x3f) % 6) {
    case 0:
        ROUND_TRIP(struct feature_sae, feature_sae_decode, feature_sae_encode, feature_sae_fini);
        break;
    case 1:
        ROUND_TRIP(struct feature_run_info, feature_run_decode, feature_run_encode,
                   feature_run_info_fini);
        break;
    case 2:
        ROUND_TRIP(struct feature_stats, feature_stats_decode, feature_stats_encode,
                   feature_stats_fini);
        break;
    case 3:
        ROUND_TRIP(struct feature_examples, feature_examples_decode, feature_examples_encode,
                   feature_examples_fini);
        break;
    case 4:
        ROUND_TRIP(struct feature_logits, feature_logits_decode, feature_logits_encode,
                   feature_logits_fini);
        break;
    case 5:
        ROUND_TRIP(struct feature_neighbours, feature_neighbours_decode, feature_neighbours_encode,
                   feature_neighbours_fini);
        break;
    }
    free(fixed);
    return 0;
}

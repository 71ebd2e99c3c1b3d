// lib: model
/* Fuzzes the llama2.c tokenizer.bin loader; an accepted vocabulary then encodes and
 * decodes fixed strings (ASCII, UTF-8, invalid UTF-8) and decodes every id.
 * Seed corpus: tests/fuzz/corpus/llama2c_tokenizer (small hand-built files). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "model/tokenizer.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static const char *const TEXTS[] = {
    "Once upon a time, there was a little girl named Lily.",
    "  a  b\n\t\xc3\xa9\xe2\x96\x81 \xf0\x9f\xa6\x99 \xff\xc3",
    "",
};

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        quiet = 1;
        log_init("fuzz", LOG_LOGFMT, LOG_OFF);
    }
    struct tokenizer *t = NULL;
    if (tokenizer_load_llama2c_mem(data, size, &t) != 0) {
        if (t) abort();
        return 0;
    }
    size_t nv = tokenizer_vocab_size(t);
    struct buf b;
    buf_init(&b, 1 << 24);
    for (size_t k = 0; k < sizeof TEXTS / sizeof TEXTS[0]; k++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (tokenizer_encode_alloc(t, TEXTS[k], strlen(TEXTS[k]), true, &ids, &n) != 0) abort();
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || (size_t)ids[i] >= nv) abort();
        if (tokenizer_decode(t, ids, n, &b) != 0) abort();
        free(ids);
    }
    for (size_t i = 0; i < nv && i < 4096; i++)
        if (tokenizer_decode_piece(t, (int32_t)i - 1, (int32_t)i, &b) != 0) abort();
    buf_fini(&b);
    tokenizer_destroy(&t);
    return 0;
}

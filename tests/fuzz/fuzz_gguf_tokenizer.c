// lib: model
/* Fuzzes tokenizer_from_gguf: arbitrary bytes as a GGUF file; when the file and its
 * tokenizer.ggml.* vocabulary (llama or gpt2) are accepted, encodes and decodes fixed
 * strings. Seed corpus: tests/fuzz/corpus/gguf_tokenizer (tiny vocab-only files). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static const char *const TEXTS[] = {
    "Hello world, it's 2024! \xe4\xbd\xa0\xe5\xa5\xbd",
    "   \n\n\t x'll 33333 \xf0\x9f\xa6\x99\xff",
    "",
};

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        quiet = 1;
        log_init("fuzz", LOG_LOGFMT, LOG_OFF);
    }
    struct gguf *g = NULL;
    if (gguf_open_mem(data, size, &g) != 0) return 0;
    struct tokenizer *t = NULL;
    int rc = tokenizer_from_gguf(g, &t);
    gguf_close(&g); /* the tokenizer must not borrow from the file */
    if (rc != 0) {
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
        if (tokenizer_decode_piece(t, -1, (int32_t)i, &b) != 0) abort();
    buf_fini(&b);
    tokenizer_destroy(&t);
    return 0;
}

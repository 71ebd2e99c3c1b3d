// lib: wire
/* Fuzzes the receive-side decoder: arbitrary bytes go through wire_decode (the plain
 * protobuf-c unpack) and wire_decode_borrowed (the zero-copy path wire_recv uses);
 * both must give the same verdict and, when accepted, messages that re-encode to the
 * same bytes and decode again. A tiny allocation budget exercises the refusal path.
 * Seed corpus: tests/fuzz/corpus/activation_batch (SAEFLOW_WRITE_CORPUS=<dir>
 * build/tests/test_wire regenerates it). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "wire/wire.h"

static void fail(void)
{
    abort();
}

static void check_decoded(const struct wire_msg *m)
{
    if (m->kind <= WIRE_NONE || m->kind >= WIRE_KIND_COUNT || !m->body) fail();
    if (wire_validate(m->kind, m->body) != WIRE_REJ_NONE) fail();
    if (m->kind == WIRE_BATCH) {
        size_t n = (size_t)m->batch->n_tokens * m->batch->d_in;
        float *out = malloc(n * sizeof *out);
        if (!out || wire_batch_to_f32(m->batch, out, n) != 0) fail();
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        log_init("fuzz_activation_batch", LOG_LOGFMT, LOG_OFF);
        quiet = 1;
    }
    struct wire_msg a = {0}, b = {0}, c = {0};
    int ra = wire_decode(data, size, NULL, &a);
    int rb = wire_decode_borrowed(data, size, NULL, &b);
    if ((ra == 0) != (rb == 0)) fail();
    if (ra != 0 && (a.reject != b.reject || a.reject == WIRE_REJ_NONE)) fail();
    if (ra == 0) {
        check_decoded(&a);
        check_decoded(&b);
        if (a.kind != b.kind) fail();
        struct buf ea, eb;
        buf_init(&ea, 64u << 20);
        buf_init(&eb, 64u << 20);
        if (wire_encode(&a, &ea) != 0 || wire_encode(&b, &eb) != 0) fail();
        if (ea.len != eb.len || memcmp(ea.data, eb.data, ea.len) != 0) fail();
        if (wire_decode(ea.data, ea.len, NULL, &c) != 0 || c.kind != a.kind) fail();
        buf_fini(&ea);
        buf_fini(&eb);
    }
    wire_msg_fini(&a);
    wire_msg_fini(&b);
    wire_msg_fini(&c);

    /* small limits: the budget refusal and the size cap */
    struct wire_limits lim = {2048, 4096};
    int rs = wire_decode(data, size, &lim, &a);
    if (rs != 0 && rs != SF_EFORMAT) fail();
    if (size > 2048 && (rs == 0 || a.reject != WIRE_REJ_TOO_LARGE)) fail();
    wire_msg_fini(&a);
    return 0;
}

// lib: stream
/* Fuzzes the parsers of the stream state a trainer checkpoint holds (stream.state):
 * ranges delivered must be sorted, disjoint and well-formed whenever parsing succeeds;
 * and of the source cursors beside it (source.state): every line delivered has ids
 * within their bounds. */
#include <stdlib.h>
#include <string.h>

#include "stream/stream.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

struct seen {
    uint64_t last;
    bool have;
    size_t ranges;
};

static int on_range(void *ud, const char *producer, uint64_t epoch, uint64_t first, uint64_t last,
                    bool new_line)
{
    struct seen *s = ud;
    (void)producer;
    (void)epoch;
    if (first > last) abort();
    if (!new_line && s->have && first <= s->last) abort();
    s->last = last;
    s->have = true;
    s->ranges++;
    return 0;
}

static int on_source(void *ud, const char *producer, const char *hook, bool ahead, uint64_t from,
                     const struct stream_cursor *cur)
{
    (void)ud;
    if (!*producer || strlen(producer) > WIRE_MAX_ID_LEN || !*hook ||
        strlen(hook) > WIRE_MAX_NAME_LEN || !cur->source_id[0] || (!ahead && from != 0) ||
        (ahead && from >= cur->position))
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        quiet = 1;
        log_init("fuzz", LOG_LOGFMT, LOG_OFF);
    }
    struct seen s = {0};
    (void)stream_state_parse((const char *)data, size, on_range, &s);
    (void)stream_source_state_parse((const char *)data, size, on_source, NULL);
    return 0;
}

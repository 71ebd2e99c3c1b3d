/* source: the text documents capture reads — plain files (one document per file, or
 * split on a separator), directories (their files, sorted, recursively), JSONL files
 * (one document per line, a chosen string field), and stdin ("-"). Loops over all
 * inputs `epochs` times.
 *
 *   struct source *s = source_new(paths, n, &opts);
 *   while (source_next(s, &text, &len, &doc_id) == 0) ...;   // SF_NOTFOUND at the end
 *   source_destroy(&s);
 *
 * Text returned by source_next is borrowed until the next call. */
#ifndef SAEFLOW_CAPTURE_SOURCE_H
#define SAEFLOW_CAPTURE_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum source_format { SOURCE_AUTO = 0, SOURCE_TEXT, SOURCE_JSONL };

struct source_opts {
    enum source_format format; /* AUTO: *.jsonl / *.json -> JSONL, else text */
    const char *jsonl_field;   /* default "text" */
    const char *separator;     /* text files: split documents on this ("" = whole file) */
    int64_t epochs;            /* passes over the inputs (>= 1) */
    size_t max_file_bytes;     /* per file cap (default 1 GiB) */
};

struct source;
struct source *source_new(const char *const *paths, size_t n, const struct source_opts *o);
void source_destroy(struct source **s);
/* 0 with the next document, SF_NOTFOUND after the last epoch, negative on error. */
int source_next(struct source *s, const char **text, size_t *len, uint64_t *doc_id);
/* Current epoch (0-based) and counters. */
int64_t source_epoch(const struct source *s);
uint64_t source_docs(const struct source *s);     /* documents returned */
uint64_t source_skipped(const struct source *s);  /* JSONL lines skipped (both reasons) */
uint64_t source_bad_json(const struct source *s); /* JSONL lines that are not JSON */
uint64_t source_no_field(const struct source *s); /* JSONL lines without the string field */

/* Where the next document starts (before source_next returns it): the pass over the
 * inputs, the file, the byte offset in it and the id the document will get. */
struct source_pos {
    int64_t epoch;
    uint64_t file_index, byte_offset, doc_id;
};
void source_tell(const struct source *s, struct source_pos *out);
/* Reopens the source at pos (from source_tell in an earlier run over the same
 * inputs). SF_EUNSUP when an input is stdin; SF_ERANGE (logged) when pos does not fit
 * the inputs (another file list, a shorter file). */
int source_seek(struct source *s, const struct source_pos *pos);
/* False when an input is stdin (it cannot be read again from a position). */
bool source_resumable(const struct source *s);

#endif

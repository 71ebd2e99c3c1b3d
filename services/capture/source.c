/* source: text documents for capture (see source.h). */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "http/http.h"
#include "source.h"

struct source {
    char **files; /* expanded inputs; "-" = stdin */
    size_t n_files;
    struct source_opts o;
    int64_t epoch;
    size_t file_i;
    char *data; /* current file */
    size_t len, off;
    bool jsonl;
    char *doc; /* current JSONL document (decoded) */
    uint64_t next_doc;
    uint64_t docs, bad_json, no_field;
    char *stdin_data; /* stdin read once (kept for later epochs) */
    size_t stdin_len;
    bool stdin_read;
};

static int add_file(struct source *s, const char *path)
{
    char **nf = realloc(s->files, (s->n_files + 1) * sizeof *nf);
    if (!nf) return SF_ENOMEM;
    s->files = nf;
    s->files[s->n_files] = strdup(path);
    if (!s->files[s->n_files]) return SF_ENOMEM;
    s->n_files++;
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_path(struct source *s, const char *path, int depth)
{
    if (!strcmp(path, "-")) return add_file(s, path);
    struct stat st;
    if (stat(path, &st) != 0) {
        log_error("source_missing", "path=%s err=%s", path, strerror(errno));
        return SF_EIO;
    }
    if (!S_ISDIR(st.st_mode)) return add_file(s, path);
    if (depth > 16) return 0;
    DIR *d = opendir(path);
    if (!d) {
        log_error("source_dir", "path=%s err=%s", path, strerror(errno));
        return SF_EIO;
    }
    char **names = NULL;
    size_t n = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char full[4096];
        if ((size_t)snprintf(full, sizeof full, "%s/%s", path, e->d_name) >= sizeof full) continue;
        char **nn = realloc(names, (n + 1) * sizeof *nn);
        if (!nn || !(nn[n] = strdup(full))) {
            if (nn) names = nn;
            rc = SF_ENOMEM;
            break;
        }
        names = nn;
        n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        if (rc == 0) rc = add_path(s, names[i], depth + 1);
        free(names[i]);
    }
    free(names);
    return rc;
}

struct source *source_new(const char *const *paths, size_t n, const struct source_opts *o)
{
    struct source *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->o = *o;
    if (!s->o.jsonl_field || !*s->o.jsonl_field) s->o.jsonl_field = "text";
    if (!s->o.separator) s->o.separator = "";
    if (s->o.epochs < 1) s->o.epochs = 1;
    if (!s->o.max_file_bytes) s->o.max_file_bytes = (size_t)1 << 30;
    for (size_t i = 0; i < n; i++)
        if (add_path(s, paths[i], 0) < 0) goto fail;
    if (s->n_files == 0) {
        log_error("source_empty", "inputs=%zu", n);
        goto fail;
    }
    return s;
fail:
    source_destroy(&s);
    return NULL;
}

void source_destroy(struct source **sp)
{
    if (!sp || !*sp) return;
    struct source *s = *sp;
    for (size_t i = 0; i < s->n_files; i++) free(s->files[i]);
    free(s->files);
    if (s->data != s->stdin_data) free(s->data);
    free(s->stdin_data);
    free(s->doc);
    free(s);
    *sp = NULL;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

static int read_stdin(struct source *s)
{
    struct buf b;
    buf_init(&b, s->o.max_file_bytes);
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, stdin)) > 0)
        if (buf_append(&b, chunk, got) < 0) {
            buf_fini(&b);
            log_error("source_stdin", "err=too_large max=%zu", s->o.max_file_bytes);
            return SF_ERANGE;
        }
    s->stdin_data = buf_steal(&b, &s->stdin_len);
    if (!s->stdin_data) s->stdin_data = calloc(1, 1);
    s->stdin_read = true;
    return s->stdin_data ? 0 : SF_ENOMEM;
}

/* Opens files[file_i] into data. */
static int open_file(struct source *s)
{
    const char *path = s->files[s->file_i];
    if (s->data != s->stdin_data) free(s->data);
    s->data = NULL;
    s->len = s->off = 0;
    if (!strcmp(path, "-")) {
        if (!s->stdin_read) {
            int rc = read_stdin(s);
            if (rc < 0) return rc;
        }
        s->data = s->stdin_data;
        s->len = s->stdin_len;
        s->jsonl = s->o.format == SOURCE_JSONL;
        return 0;
    }
    int rc = file_read_all(path, s->o.max_file_bytes, &s->data, &s->len);
    if (rc < 0) return rc;
    s->jsonl =
        s->o.format == SOURCE_JSONL ||
        (s->o.format == SOURCE_AUTO && (ends_with(path, ".jsonl") || ends_with(path, ".json")));
    return 0;
}

/* Next JSONL document of the current file: 0, or SF_NOTFOUND at its end. */
static int next_jsonl(struct source *s, const char **text, size_t *len)
{
    while (s->off < s->len) {
        const char *line = s->data + s->off;
        const char *eol = memchr(line, '\n', s->len - s->off);
        size_t n = eol ? (size_t)(eol - line) : s->len - s->off;
        s->off += n + (eol ? 1 : 0);
        size_t k = 0;
        while (k < n && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r')) k++;
        if (k == n) continue;
        cJSON *j = NULL;
        char err[128];
        size_t at = (size_t)(line - s->data);
        if (http_json_parse(line, n, (size_t)1 << 30, &j, err, sizeof err) != 0) {
            if (s->bad_json++ < 10)
                log_warn("source_bad_line", "path=%s offset=%zu reason=not_json err=\"%s\"%s",
                         s->files[s->file_i], at, err,
                         s->bad_json == 10 ? " (further ones counted, not logged)" : "");
            continue;
        }
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, s->o.jsonl_field);
        if (!cJSON_IsString(f) || !f->valuestring) {
            if (s->no_field++ < 10)
                log_warn("source_bad_line", "path=%s offset=%zu reason=no_field field=%s%s",
                         s->files[s->file_i], at, s->o.jsonl_field,
                         s->no_field == 10 ? " (further ones counted, not logged)" : "");
            cJSON_Delete(j);
            continue;
        }
        free(s->doc);
        s->doc = strdup(f->valuestring);
        cJSON_Delete(j);
        if (!s->doc) return SF_ENOMEM;
        *text = s->doc;
        *len = strlen(s->doc);
        return 0;
    }
    return SF_NOTFOUND;
}

static int next_text(struct source *s, const char **text, size_t *len)
{
    size_t sl = strlen(s->o.separator);
    while (s->off < s->len) {
        const char *p = s->data + s->off;
        size_t rest = s->len - s->off;
        size_t n = rest;
        size_t adv = rest;
        if (sl) {
            const char *hit = memmem(p, rest, s->o.separator, sl);
            if (hit) {
                n = (size_t)(hit - p);
                adv = n + sl;
            }
        }
        s->off += adv;
        /* skip documents that are only whitespace */
        size_t k = 0;
        while (k < n && (p[k] == ' ' || p[k] == '\n' || p[k] == '\r' || p[k] == '\t')) k++;
        if (k == n) continue;
        *text = p + k;
        *len = n - k;
        return 0;
    }
    return SF_NOTFOUND;
}

int source_next(struct source *s, const char **text, size_t *len, uint64_t *doc_id)
{
    for (;;) {
        if (s->epoch >= s->o.epochs) return SF_NOTFOUND;
        if (!s->data) {
            int rc = open_file(s);
            if (rc < 0) return rc;
        }
        int rc = s->jsonl ? next_jsonl(s, text, len) : next_text(s, text, len);
        if (rc == 0) {
            *doc_id = s->next_doc++;
            s->docs++;
            return 0;
        }
        if (rc < 0) return rc;
        if (s->data != s->stdin_data) free(s->data);
        s->data = NULL;
        if (++s->file_i == s->n_files) {
            s->file_i = 0;
            s->epoch++;
            log_info("source_epoch_done", "epoch=%lld docs=%llu", (long long)s->epoch,
                     (unsigned long long)s->docs);
        }
    }
}

int64_t source_epoch(const struct source *s)
{
    return s->epoch;
}

uint64_t source_docs(const struct source *s)
{
    return s->docs;
}

uint64_t source_skipped(const struct source *s)
{
    return s->bad_json + s->no_field;
}

uint64_t source_bad_json(const struct source *s)
{
    return s->bad_json;
}

uint64_t source_no_field(const struct source *s)
{
    return s->no_field;
}

bool source_resumable(const struct source *s)
{
    for (size_t i = 0; i < s->n_files; i++)
        if (!strcmp(s->files[i], "-")) return false;
    return true;
}

void source_tell(const struct source *s, struct source_pos *out)
{
    out->epoch = s->epoch;
    out->file_index = s->file_i;
    out->byte_offset = s->data ? s->off : 0;
    out->doc_id = s->next_doc;
}

int source_seek(struct source *s, const struct source_pos *pos)
{
    if (!source_resumable(s)) return SF_EUNSUP;
    if (pos->epoch < 0 || pos->epoch > s->o.epochs || pos->file_index >= s->n_files) {
        log_error("source_seek", "err=out_of_range epoch=%lld file=%llu files=%zu epochs=%lld",
                  (long long)pos->epoch, (unsigned long long)pos->file_index, s->n_files,
                  (long long)s->o.epochs);
        return SF_ERANGE;
    }
    if (s->data != s->stdin_data) free(s->data);
    s->data = NULL;
    s->epoch = pos->epoch;
    s->file_i = (size_t)pos->file_index;
    s->next_doc = pos->doc_id;
    if (s->epoch >= s->o.epochs) return 0; /* every pass done */
    int rc = open_file(s);
    if (rc < 0) return rc;
    if (pos->byte_offset > s->len) {
        log_error("source_seek", "err=beyond_end path=%s offset=%llu size=%zu", s->files[s->file_i],
                  (unsigned long long)pos->byte_offset, s->len);
        return SF_ERANGE;
    }
    s->off = (size_t)pos->byte_offset;
    return 0;
}

/* safetensors writer: collects borrowed tensors and metadata, then streams a
 * .safetensors file to a temporary file beside the target, fsyncs it and renames it
 * into place, so that a reader sees either the old file or the complete new one.
 * Memory stays bounded: tensor data is never copied, conversions from float32 go
 * through a fixed chunk buffer. */
#include "safetensors/safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"

struct wtensor {
    char *name;
    enum st_dtype dtype;
    size_t ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t numel, nbytes;
    const void *data;
    bool from_f32; /* data is float32, converted to dtype while writing */
    size_t order;  /* insertion order */
};

struct wmeta {
    char *key, *value;
};

struct st_writer {
    struct wtensor *t;
    size_t n, cap;
    struct wmeta *m;
    size_t n_meta, cap_meta;
};

struct st_writer *st_writer_new(void)
{
    return calloc(1, sizeof(struct st_writer));
}

void st_writer_destroy(struct st_writer **w)
{
    if (!w || !*w) return;
    struct st_writer *x = *w;
    for (size_t i = 0; i < x->n; i++) free(x->t[i].name);
    for (size_t i = 0; i < x->n_meta; i++) {
        free(x->m[i].key);
        free(x->m[i].value);
    }
    free(x->t);
    free(x->m);
    free(x);
    *w = NULL;
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static int add_common(struct st_writer *w, const char *name, enum st_dtype dtype,
                      const int64_t *shape, size_t ndim, const void *data, bool from_f32)
{
    if (!w || !name || !*name || (!shape && ndim) || safetensors_dtype_size(dtype) == 0)
        return SF_EINVAL;
    if (strcmp(name, "__metadata__") == 0 || ndim > ST_MAX_DIMS) {
        log_error("st_writer_add", "tensor=%s ndim=%zu reason=\"invalid name or rank\"", name,
                  ndim);
        return SF_EINVAL;
    }
    for (size_t i = 0; i < w->n; i++) {
        if (strcmp(w->t[i].name, name) == 0) {
            log_error("st_writer_add", "tensor=%s reason=\"duplicate name\"", name);
            return SF_EINVAL;
        }
    }
    struct wtensor t = {.dtype = dtype, .ndim = ndim, .data = data, .from_f32 = from_f32};
    t.numel = 1;
    for (size_t i = 0; i < ndim; i++) {
        if (shape[i] < 0 || !size_mul_ok(t.numel, (size_t)shape[i], &t.numel)) {
            log_error("st_writer_add", "tensor=%s reason=\"bad shape\"", name);
            return SF_EINVAL;
        }
        t.shape[i] = shape[i];
    }
    if (!size_mul_ok(t.numel, safetensors_dtype_size(dtype), &t.nbytes)) return SF_EINVAL;
    if (t.nbytes > 0 && !data) return SF_EINVAL;
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 16;
        struct wtensor *nt = realloc(w->t, nc * sizeof(*nt));
        if (!nt) return SF_ENOMEM;
        w->t = nt;
        w->cap = nc;
    }
    t.name = dup_str(name);
    if (!t.name) return SF_ENOMEM;
    t.order = w->n;
    w->t[w->n++] = t;
    return SF_OK;
}

int st_writer_add(struct st_writer *w, const char *name, enum st_dtype dtype, const int64_t *shape,
                  size_t ndim, const void *data)
{
    return add_common(w, name, dtype, shape, ndim, data, false);
}

int st_writer_add_f32(struct st_writer *w, const char *name, enum st_dtype dtype,
                      const int64_t *shape, size_t ndim, const float *data)
{
    if (dtype != ST_F32 && dtype != ST_F16 && dtype != ST_BF16) {
        log_error("st_writer_add",
                  "tensor=%s dtype=%s reason=\"float32 data can be stored as "
                  "F32, F16 or BF16 only\"",
                  name ? name : "", safetensors_dtype_name(dtype));
        return SF_EINVAL;
    }
    return add_common(w, name, dtype, shape, ndim, data, dtype != ST_F32);
}

int st_writer_set_metadata(struct st_writer *w, const char *key, const char *value)
{
    if (!w || !key || !value) return SF_EINVAL;
    for (size_t i = 0; i < w->n_meta; i++) {
        if (strcmp(w->m[i].key, key) == 0) {
            char *v = dup_str(value);
            if (!v) return SF_ENOMEM;
            free(w->m[i].value);
            w->m[i].value = v;
            return SF_OK;
        }
    }
    if (w->n_meta == w->cap_meta) {
        size_t nc = w->cap_meta ? w->cap_meta * 2 : 8;
        struct wmeta *nm = realloc(w->m, nc * sizeof(*nm));
        if (!nm) return SF_ENOMEM;
        w->m = nm;
        w->cap_meta = nc;
    }
    struct wmeta m = {dup_str(key), dup_str(value)};
    if (!m.key || !m.value) {
        free(m.key);
        free(m.value);
        return SF_ENOMEM;
    }
    w->m[w->n_meta++] = m;
    return SF_OK;
}

/* JSON string with the escapes JSON requires; other bytes (UTF-8) pass through. */
static int json_str(struct buf *b, const char *s)
{
    int rc = buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; rc == 0 && *p; p++) {
        if (*p == '"' || *p == '\\') {
            rc = buf_putc(b, '\\');
            if (rc == 0) rc = buf_putc(b, (char)*p);
        } else if (*p < 0x20) {
            rc = buf_printf(b, "\\u%04x", *p);
        } else {
            rc = buf_putc(b, (char)*p);
        }
    }
    if (rc == 0) rc = buf_putc(b, '"');
    return rc;
}

/* Larger elements first, then insertion order: keeps every tensor aligned. */
static int cmp_layout(const void *a, const void *b)
{
    const struct wtensor *x = a, *y = b;
    size_t sx = safetensors_dtype_size(x->dtype), sy = safetensors_dtype_size(y->dtype);
    if (sx != sy) return sx > sy ? -1 : 1;
    return x->order < y->order ? -1 : (x->order > y->order);
}

static int build_header(struct st_writer *w, struct buf *h)
{
    int rc = buf_putc(h, '{');
    bool first = true;
    if (w->n_meta > 0) {
        rc = rc ? rc : buf_printf(h, "\"__metadata__\":{");
        for (size_t i = 0; rc == 0 && i < w->n_meta; i++) {
            if (i) rc = buf_putc(h, ',');
            rc = rc ? rc : json_str(h, w->m[i].key);
            rc = rc ? rc : buf_putc(h, ':');
            rc = rc ? rc : json_str(h, w->m[i].value);
        }
        rc = rc ? rc : buf_putc(h, '}');
        first = false;
    }
    uint64_t off = 0;
    for (size_t i = 0; rc == 0 && i < w->n; i++) {
        const struct wtensor *t = &w->t[i];
        if (!first) rc = buf_putc(h, ',');
        first = false;
        rc = rc ? rc : json_str(h, t->name);
        rc = rc ? rc
                : buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", safetensors_dtype_name(t->dtype));
        for (size_t d = 0; rc == 0 && d < t->ndim; d++)
            rc = buf_printf(h, d ? ",%lld" : "%lld", (long long)t->shape[d]);
        rc = rc ? rc
                : buf_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                             (unsigned long long)(off + t->nbytes));
        off += t->nbytes;
    }
    rc = rc ? rc : buf_putc(h, '}');
    while (rc == 0 && h->len % 8 != 0) rc = buf_putc(h, ' ');
    return rc;
}

static int write_all(FILE *f, const void *p, size_t n)
{
    if (n == 0) return SF_OK;
    return fwrite(p, 1, n, f) == n ? SF_OK : SF_EIO;
}

static int write_tensor(FILE *f, const struct wtensor *t)
{
    if (!t->from_f32) return write_all(f, t->data, t->nbytes);
    enum { CHUNK = 16384 };
    uint16_t tmp[CHUNK];
    const float *src = t->data;
    for (size_t i = 0; i < t->numel; i += CHUNK) {
        size_t m = SF_MIN((size_t)CHUNK, t->numel - i);
        for (size_t j = 0; j < m; j++)
            tmp[j] = t->dtype == ST_F16 ? f32_to_f16(src[i + j]) : f32_to_bf16(src[i + j]);
        int rc = write_all(f, tmp, m * sizeof(uint16_t));
        if (rc != 0) return rc;
    }
    return SF_OK;
}

int st_writer_write(struct st_writer *w, const char *path)
{
    if (!w || !path || !*path) return SF_EINVAL;
    int rc = SF_OK;
    FILE *f = NULL;
    char *tmp = NULL;
    char *dir = NULL;
    struct buf h;
    buf_init(&h, ST_MAX_HEADER);

    if (w->n > 1) qsort(w->t, w->n, sizeof(*w->t), cmp_layout);
    rc = build_header(w, &h);
    if (rc != 0) {
        log_error("st_writer_write", "path=%s reason=\"header too large\"", path);
        goto out;
    }

    size_t plen = strlen(path);
    tmp = malloc(plen + 16);
    dir = malloc(plen + 2);
    if (!tmp || !dir) {
        rc = SF_ENOMEM;
        goto out;
    }
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp.XXXXXX", 12);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        log_error("st_writer_write", "path=%s err=\"mkstemp: %s\"", path, strerror(errno));
        free(tmp);
        tmp = NULL;
        rc = SF_EIO;
        goto out;
    }
    f = fdopen(fd, "wb");
    if (!f) {
        close(fd);
        rc = SF_EIO;
        goto out;
    }
    uint8_t lenbuf[8];
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)h.len >> (8 * i));
    rc = write_all(f, lenbuf, 8);
    if (rc == 0) rc = write_all(f, h.data, h.len);
    for (size_t i = 0; rc == 0 && i < w->n; i++) rc = write_tensor(f, &w->t[i]);
    if (rc == 0 && fflush(f) != 0) rc = SF_EIO;
    if (rc == 0 && fsync(fileno(f)) != 0) rc = SF_EIO;
    if (fclose(f) != 0 && rc == 0) rc = SF_EIO;
    f = NULL;
    if (rc != 0) {
        log_error("st_writer_write", "path=%s err=\"write: %s\"", path, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        log_error("st_writer_write", "path=%s err=\"rename: %s\"", path, strerror(errno));
        rc = SF_EIO;
        goto out;
    }
    free(tmp);
    tmp = NULL;
    /* fsync the directory so that the rename is durable */
    const char *slash = strrchr(path, '/');
    if (!slash) {
        memcpy(dir, ".", 2);
    } else if (slash == path) {
        memcpy(dir, "/", 2);
    } else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    rc = file_fsync_dir(dir);
out:
    if (f) fclose(f);
    if (tmp) unlink(tmp);
    free(tmp);
    free(dir);
    buf_fini(&h);
    return rc;
}

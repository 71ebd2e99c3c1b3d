/* safetensors reader: maps a .safetensors file (or takes a caller's buffer), validates
 * the whole header and exposes the tensors without copying their data. The writer is
 * in st_writer.c. See safetensors.h for the format. */
#include "safetensors/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors: this reader assumes a little-endian host"
#endif

struct meta_entry {
    const char *key;
    const char *value;
};

struct safetensors {
    const uint8_t *base; /* whole file / buffer */
    size_t len;
    bool mapped;               /* base is our mmap */
    cJSON *root;               /* names and metadata strings point into it */
    struct st_tensor *tensors; /* in offset order */
    size_t n_tensors;
    const struct st_tensor **by_name; /* into tensors, sorted by name */
    struct meta_entry *meta;
    size_t n_meta;
};

static const struct {
    const char *name;
    size_t size;
} dtype_info[ST_DTYPE_COUNT] = {
    [ST_BOOL] = {"BOOL", 1},       [ST_U8] = {"U8", 1},           [ST_I8] = {"I8", 1},
    [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1}, [ST_I16] = {"I16", 2},
    [ST_U16] = {"U16", 2},         [ST_F16] = {"F16", 2},         [ST_BF16] = {"BF16", 2},
    [ST_I32] = {"I32", 4},         [ST_U32] = {"U32", 4},         [ST_F32] = {"F32", 4},
    [ST_I64] = {"I64", 8},         [ST_U64] = {"U64", 8},         [ST_F64] = {"F64", 8},
};

const char *safetensors_dtype_name(enum st_dtype dtype)
{
    if ((unsigned)dtype >= ST_DTYPE_COUNT) return NULL;
    return dtype_info[dtype].name;
}

size_t safetensors_dtype_size(enum st_dtype dtype)
{
    if ((unsigned)dtype >= ST_DTYPE_COUNT) return 0;
    return dtype_info[dtype].size;
}

int safetensors_dtype_parse(const char *name, enum st_dtype *out)
{
    if (!name) return SF_EUNSUP;
    for (size_t i = 0; i < ST_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *out = (enum st_dtype)i;
            return SF_OK;
        }
    }
    return SF_EUNSUP;
}

/* A JSON number that is an exact non-negative integer no larger than 2^53. */
static bool json_u64(const cJSON *item, uint64_t *out)
{
    if (!cJSON_IsNumber(item)) return false;
    double d = item->valuedouble;
    if (!(d >= 0.0) || d > 9007199254740992.0 || floor(d) != d) return false;
    *out = (uint64_t)d;
    return true;
}

static int cmp_by_name(const void *a, const void *b)
{
    const struct st_tensor *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

static int cmp_by_offset(const void *a, const void *b)
{
    const struct st_tensor *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return 0;
}

/* Parses one tensor entry; fills `t` except `data`. */
static int parse_entry(const cJSON *entry, struct st_tensor *t, uint64_t data_len,
                       const char *origin)
{
    const char *name = entry->string;
    if (!cJSON_IsObject(entry)) {
        log_error("safetensors_bad_header", "src=%s tensor=%s reason=\"entry is not an object\"",
                  origin, name);
        return SF_EFORMAT;
    }
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsString(dtype) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs)) {
        log_error("safetensors_bad_header",
                  "src=%s tensor=%s reason=\"dtype (string), shape (array) and data_offsets "
                  "(array) are required\"",
                  origin, name);
        return SF_EFORMAT;
    }
    t->name = name;
    if (safetensors_dtype_parse(dtype->valuestring, &t->dtype) != 0) {
        log_error("safetensors_bad_dtype", "src=%s tensor=%s dtype=%s reason=\"unknown dtype\"",
                  origin, name, dtype->valuestring);
        return SF_EUNSUP;
    }
    size_t nd = 0, numel = 1;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape)
    {
        uint64_t v;
        if (nd >= ST_MAX_DIMS) {
            log_error("safetensors_bad_header", "src=%s tensor=%s reason=\"more than %d dims\"",
                      origin, name, ST_MAX_DIMS);
            return SF_EUNSUP;
        }
        if (!json_u64(dim, &v) || v > (uint64_t)INT64_MAX || v > SIZE_MAX ||
            !size_mul_ok(numel, (size_t)v, &numel)) {
            log_error("safetensors_bad_header",
                      "src=%s tensor=%s reason=\"shape entries must be non-negative integers "
                      "whose product fits\"",
                      origin, name);
            return SF_EFORMAT;
        }
        t->shape[nd++] = (int64_t)v;
    }
    t->ndim = nd;
    t->numel = numel;
    if (!size_mul_ok(numel, safetensors_dtype_size(t->dtype), &t->nbytes)) {
        log_error("safetensors_bad_header", "src=%s tensor=%s reason=\"size overflows\"", origin,
                  name);
        return SF_EFORMAT;
    }
    uint64_t b, e;
    if (cJSON_GetArraySize(offs) != 2 || !json_u64(offs->child, &b) ||
        !json_u64(offs->child->next, &e)) {
        log_error("safetensors_bad_header",
                  "src=%s tensor=%s reason=\"data_offsets must be two non-negative integers\"",
                  origin, name);
        return SF_EFORMAT;
    }
    if (b > e || e > data_len) {
        log_error("safetensors_bad_offsets",
                  "src=%s tensor=%s begin=%llu end=%llu data_len=%llu reason=\"out of range\"",
                  origin, name, (unsigned long long)b, (unsigned long long)e,
                  (unsigned long long)data_len);
        return SF_EFORMAT;
    }
    if (e - b != (uint64_t)t->nbytes) {
        log_error("safetensors_bad_offsets",
                  "src=%s tensor=%s bytes=%llu expected=%zu reason=\"shape and dtype do not "
                  "match data_offsets\"",
                  origin, name, (unsigned long long)(e - b), t->nbytes);
        return SF_EFORMAT;
    }
    t->offset = b;
    return SF_OK;
}

static int parse_metadata(struct safetensors *st, const cJSON *meta, const char *origin)
{
    if (cJSON_IsNull(meta)) return SF_OK;
    if (!cJSON_IsObject(meta)) {
        log_error("safetensors_bad_metadata", "src=%s reason=\"__metadata__ is not an object\"",
                  origin);
        return SF_EFORMAT;
    }
    size_t n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, meta) n++;
    if (n == 0) return SF_OK;
    st->meta = calloc(n, sizeof(*st->meta));
    if (!st->meta) return SF_ENOMEM;
    cJSON_ArrayForEach(it, meta)
    {
        if (!cJSON_IsString(it) || !it->string) {
            log_error("safetensors_bad_metadata", "src=%s key=%s reason=\"value is not a string\"",
                      origin, it->string ? it->string : "");
            return SF_EFORMAT;
        }
        st->meta[st->n_meta].key = it->string;
        st->meta[st->n_meta].value = it->valuestring;
        st->n_meta++;
    }
    return SF_OK;
}

static int parse_header(struct safetensors *st, const char *origin)
{
    if (st->len < 8) {
        log_error("safetensors_bad_header", "src=%s len=%zu reason=\"shorter than 8 bytes\"",
                  origin, st->len);
        return SF_EFORMAT;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | st->base[i];
    if (n > ST_MAX_HEADER) {
        log_error("safetensors_bad_header",
                  "src=%s header_len=%llu cap=%u reason=\"header too long\"", origin,
                  (unsigned long long)n, ST_MAX_HEADER);
        return SF_ERANGE;
    }
    if (n > st->len - 8) {
        log_error("safetensors_bad_header",
                  "src=%s header_len=%llu file_len=%zu reason=\"header runs past the end\"", origin,
                  (unsigned long long)n, st->len);
        return SF_EFORMAT;
    }
    if (n < 2 || st->base[8] != '{') {
        log_error("safetensors_bad_header", "src=%s reason=\"header is not a JSON object\"",
                  origin);
        return SF_EFORMAT;
    }
    /* Parse from a NUL-terminated copy so that no JSON parser bug can read past it. */
    char *text = malloc((size_t)n + 1);
    if (!text) return SF_ENOMEM;
    memcpy(text, st->base + 8, (size_t)n);
    text[n] = '\0';
    const char *end = NULL;
    st->root = cJSON_ParseWithLengthOpts(text, (size_t)n, &end, 0);
    bool trailing_ok = true;
    if (st->root && end) {
        for (const char *p = end; p < text + n; p++) {
            if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') trailing_ok = false;
        }
    }
    free(text);
    if (!st->root || !cJSON_IsObject(st->root) || !trailing_ok) {
        log_error("safetensors_bad_header", "src=%s reason=\"header is not valid JSON\"", origin);
        return SF_EFORMAT;
    }

    const uint8_t *data = st->base + 8 + n;
    uint64_t data_len = (uint64_t)(st->len - 8 - (size_t)n);
    size_t count = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, st->root)
    {
        if (it->string && strcmp(it->string, "__metadata__") == 0) continue;
        count++;
    }
    if (count > 0) {
        st->tensors = calloc(count, sizeof(*st->tensors));
        st->by_name = calloc(count, sizeof(*st->by_name));
        if (!st->tensors || !st->by_name) return SF_ENOMEM;
    }
    bool have_meta = false;
    cJSON_ArrayForEach(it, st->root)
    {
        if (!it->string) return SF_EFORMAT;
        if (strcmp(it->string, "__metadata__") == 0) {
            if (have_meta) {
                log_error("safetensors_bad_metadata", "src=%s reason=\"__metadata__ repeated\"",
                          origin);
                return SF_EFORMAT;
            }
            have_meta = true;
            int rc = parse_metadata(st, it, origin);
            if (rc != 0) return rc;
            continue;
        }
        int rc = parse_entry(it, &st->tensors[st->n_tensors], data_len, origin);
        if (rc != 0) return rc;
        st->n_tensors++;
    }

    if (st->n_tensors == 0) return SF_OK;
    qsort(st->tensors, st->n_tensors, sizeof(*st->tensors), cmp_by_offset);
    uint64_t max_end = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        struct st_tensor *t = &st->tensors[i];
        if (t->nbytes > 0 && t->offset < max_end) {
            log_error("safetensors_bad_offsets",
                      "src=%s tensor=%s reason=\"overlaps another tensor\"", origin, t->name);
            return SF_EFORMAT;
        }
        if (t->offset + t->nbytes > max_end) max_end = t->offset + t->nbytes;
        t->data = data + t->offset;
        st->by_name[i] = t;
    }
    qsort(st->by_name, st->n_tensors, sizeof(*st->by_name), cmp_by_name);
    for (size_t i = 1; i < st->n_tensors; i++) {
        if (strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0) {
            log_error("safetensors_bad_header", "src=%s tensor=%s reason=\"duplicate name\"",
                      origin, st->by_name[i]->name);
            return SF_EFORMAT;
        }
    }
    return SF_OK;
}

static int open_common(const void *buf, size_t len, bool mapped, const char *origin,
                       struct safetensors **out)
{
    *out = NULL;
    struct safetensors *st = calloc(1, sizeof(*st));
    if (!st) {
        if (mapped) munmap((void *)buf, len);
        return SF_ENOMEM;
    }
    st->base = buf;
    st->len = len;
    st->mapped = mapped;
    int rc = parse_header(st, origin);
    if (rc != 0) {
        safetensors_close(&st);
        return rc;
    }
    *out = st;
    return SF_OK;
}

int safetensors_open_mem(const void *buf, size_t len, struct safetensors **out)
{
    if (!out || (!buf && len)) return SF_EINVAL;
    return open_common(buf ? buf : "", len, false, "memory", out);
}

int safetensors_open(const char *path, struct safetensors **out)
{
    if (!out || !path) return SF_EINVAL;
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        log_error("safetensors_open_failed", "path=%s err=\"%s\"", path, strerror(errno));
        return SF_EIO;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        log_error("safetensors_open_failed", "path=%s reason=\"not a regular file\"", path);
        close(fd);
        return SF_EIO;
    }
    size_t len = (size_t)sb.st_size;
    if (len < 8) {
        close(fd);
        log_error("safetensors_bad_header", "src=%s len=%zu reason=\"shorter than 8 bytes\"", path,
                  len);
        return SF_EFORMAT;
    }
    void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        log_error("safetensors_open_failed", "path=%s err=\"mmap: %s\"", path, strerror(errno));
        return SF_EIO;
    }
    return open_common(p, len, true, path, out);
}

void safetensors_close(struct safetensors **st)
{
    if (!st || !*st) return;
    struct safetensors *s = *st;
    if (s->mapped) munmap((void *)s->base, s->len);
    cJSON_Delete(s->root);
    free(s->tensors);
    free(s->by_name);
    free(s->meta);
    free(s);
    *st = NULL;
}

size_t safetensors_count(const struct safetensors *st)
{
    return st ? st->n_tensors : 0;
}

const struct st_tensor *safetensors_at(const struct safetensors *st, size_t i)
{
    if (!st || i >= st->n_tensors) return NULL;
    return &st->tensors[i];
}

const struct st_tensor *safetensors_find(const struct safetensors *st, const char *name)
{
    if (!st || !name) return NULL;
    size_t lo = 0, hi = st->n_tensors;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct st_tensor *t = st->by_name[mid];
        int c = strcmp(name, t->name);
        if (c == 0) return t;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

int safetensors_tensor_to_f32(const struct st_tensor *t, float *out, size_t n)
{
    if (!t || (!out && n)) return SF_EINVAL;
    if (n != t->numel) {
        log_error("safetensors_read_f32", "tensor=%s numel=%zu n=%zu reason=\"size mismatch\"",
                  t->name, t->numel, n);
        return SF_EINVAL;
    }
    const uint8_t *p = t->data;
    size_t es = safetensors_dtype_size(t->dtype);
    /* memcpy per element: the data need not be aligned. */
    for (size_t i = 0; i < n; i++, p += es) {
        switch (t->dtype) {
        case ST_F32:
            memcpy(&out[i], p, 4);
            break;
        case ST_F64: {
            double d;
            memcpy(&d, p, 8);
            out[i] = (float)d;
            break;
        }
        case ST_F16: {
            uint16_t h;
            memcpy(&h, p, 2);
            out[i] = f16_to_f32(h);
            break;
        }
        case ST_BF16: {
            uint16_t h;
            memcpy(&h, p, 2);
            out[i] = bf16_to_f32(h);
            break;
        }
        case ST_BOOL:
            out[i] = p[0] ? 1.0f : 0.0f;
            break;
        case ST_U8:
            out[i] = (float)p[0];
            break;
        case ST_I8:
            out[i] = (float)(int8_t)p[0];
            break;
        case ST_I16: {
            int16_t v;
            memcpy(&v, p, 2);
            out[i] = (float)v;
            break;
        }
        case ST_U16: {
            uint16_t v;
            memcpy(&v, p, 2);
            out[i] = (float)v;
            break;
        }
        case ST_I32: {
            int32_t v;
            memcpy(&v, p, 4);
            out[i] = (float)v;
            break;
        }
        case ST_U32: {
            uint32_t v;
            memcpy(&v, p, 4);
            out[i] = (float)v;
            break;
        }
        case ST_I64: {
            int64_t v;
            memcpy(&v, p, 8);
            out[i] = (float)v;
            break;
        }
        case ST_U64: {
            uint64_t v;
            memcpy(&v, p, 8);
            out[i] = (float)v;
            break;
        }
        default:
            log_error("safetensors_read_f32", "tensor=%s dtype=%s reason=\"unsupported dtype\"",
                      t->name, safetensors_dtype_name(t->dtype));
            return SF_EUNSUP;
        }
    }
    return SF_OK;
}

int safetensors_read_f32(const struct safetensors *st, const char *name, float *out, size_t n)
{
    const struct st_tensor *t = safetensors_find(st, name);
    if (!t) {
        log_debug("safetensors_read_f32", "tensor=%s reason=\"not found\"", name ? name : "");
        return SF_NOTFOUND;
    }
    return safetensors_tensor_to_f32(t, out, n);
}

const char *safetensors_metadata(const struct safetensors *st, const char *key)
{
    if (!st || !key) return NULL;
    for (size_t i = 0; i < st->n_meta; i++) {
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    }
    return NULL;
}

size_t safetensors_metadata_count(const struct safetensors *st)
{
    return st ? st->n_meta : 0;
}

int safetensors_metadata_at(const struct safetensors *st, size_t i, const char **key,
                            const char **value)
{
    if (!st || i >= st->n_meta) return SF_ERANGE;
    if (key) *key = st->meta[i].key;
    if (value) *value = st->meta[i].value;
    return SF_OK;
}

/* gguf: GGUF v2/v3 reader (validating, mmap) and a small v3 writer. See gguf.h. */
#include "model/gguf.h"

#include "core/core.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c assumes a little-endian host"
#endif

#define GGUF_MAGIC "GGUF"

struct gguf_kv {
    char *key;
    struct gguf_value val;
};

struct gguf {
    const uint8_t *base;
    size_t len;
    void *map; /* non-NULL when we mapped the file */
    size_t map_len;
    uint32_t version;
    size_t alignment;
    size_t data_off;
    struct gguf_kv *kvs;
    size_t n_kv;
    size_t *kv_sorted; /* indices of kvs sorted by key */
    struct gguf_tensor *tensors;
    size_t n_tensors;
    size_t *t_sorted; /* indices of tensors sorted by name */
};

/* ---- type tables ---- */

static const size_t value_size[GGUF_TYPE_COUNT_] = {
    [GGUF_TYPE_UINT8] = 1,   [GGUF_TYPE_INT8] = 1,  [GGUF_TYPE_UINT16] = 2,  [GGUF_TYPE_INT16] = 2,
    [GGUF_TYPE_UINT32] = 4,  [GGUF_TYPE_INT32] = 4, [GGUF_TYPE_FLOAT32] = 4, [GGUF_TYPE_BOOL] = 1,
    [GGUF_TYPE_STRING] = 0,  [GGUF_TYPE_ARRAY] = 0, [GGUF_TYPE_UINT64] = 8,  [GGUF_TYPE_INT64] = 8,
    [GGUF_TYPE_FLOAT64] = 8,
};

const char *gguf_type_name(enum gguf_type t)
{
    static const char *names[GGUF_TYPE_COUNT_] = {
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr", "u64", "i64", "f64",
    };
    if ((unsigned)t >= GGUF_TYPE_COUNT_) return "?";
    return names[t];
}

struct ggml_type_info {
    const char *name;
    uint16_t block;
    uint16_t bytes;
};

static const struct ggml_type_info ggml_types[] = {
    [GGML_TYPE_F32] = {"F32", 1, 4},
    [GGML_TYPE_F16] = {"F16", 1, 2},
    [GGML_TYPE_Q4_0] = {"Q4_0", 32, 18},
    [GGML_TYPE_Q4_1] = {"Q4_1", 32, 20},
    [GGML_TYPE_Q5_0] = {"Q5_0", 32, 22},
    [GGML_TYPE_Q5_1] = {"Q5_1", 32, 24},
    [GGML_TYPE_Q8_0] = {"Q8_0", 32, 34},
    [GGML_TYPE_Q8_1] = {"Q8_1", 32, 36},
    [GGML_TYPE_Q2_K] = {"Q2_K", 256, 84},
    [GGML_TYPE_Q3_K] = {"Q3_K", 256, 110},
    [GGML_TYPE_Q4_K] = {"Q4_K", 256, 144},
    [GGML_TYPE_Q5_K] = {"Q5_K", 256, 176},
    [GGML_TYPE_Q6_K] = {"Q6_K", 256, 210},
    [GGML_TYPE_Q8_K] = {"Q8_K", 256, 292},
    [GGML_TYPE_IQ2_XXS] = {"IQ2_XXS", 256, 66},
    [GGML_TYPE_IQ2_XS] = {"IQ2_XS", 256, 74},
    [GGML_TYPE_IQ3_XXS] = {"IQ3_XXS", 256, 98},
    [GGML_TYPE_IQ1_S] = {"IQ1_S", 256, 50},
    [GGML_TYPE_IQ4_NL] = {"IQ4_NL", 32, 18},
    [GGML_TYPE_IQ3_S] = {"IQ3_S", 256, 110},
    [GGML_TYPE_IQ2_S] = {"IQ2_S", 256, 82},
    [GGML_TYPE_IQ4_XS] = {"IQ4_XS", 256, 136},
    [GGML_TYPE_I8] = {"I8", 1, 1},
    [GGML_TYPE_I16] = {"I16", 1, 2},
    [GGML_TYPE_I32] = {"I32", 1, 4},
    [GGML_TYPE_I64] = {"I64", 1, 8},
    [GGML_TYPE_F64] = {"F64", 1, 8},
    [GGML_TYPE_IQ1_M] = {"IQ1_M", 256, 56},
    [GGML_TYPE_BF16] = {"BF16", 1, 2},
    [GGML_TYPE_TQ1_0] = {"TQ1_0", 256, 54},
    [GGML_TYPE_TQ2_0] = {"TQ2_0", 256, 66},
    [GGML_TYPE_MXFP4] = {"MXFP4", 32, 17},
};

bool gguf_ggml_type_size(uint32_t type, size_t *block, size_t *block_bytes)
{
    if (type >= SF_ARRAY_LEN(ggml_types) || ggml_types[type].block == 0) return false;
    if (block) *block = ggml_types[type].block;
    if (block_bytes) *block_bytes = ggml_types[type].bytes;
    return true;
}

const char *gguf_ggml_type_name(enum gguf_ggml_type t)
{
    if (!gguf_ggml_type_size((uint32_t)t, NULL, NULL)) return "?";
    return ggml_types[t].name;
}

/* Number of elements and bytes of a tensor; false on overflow or bad shape. */
static bool tensor_extent(uint32_t type, uint32_t ndim, const uint64_t *dims, uint64_t *nelem,
                          size_t *nbytes, const char **why)
{
    size_t block, bb;
    if (!gguf_ggml_type_size(type, &block, &bb)) {
        *why = "unknown tensor type";
        return false;
    }
    if (ndim < 1 || ndim > GGUF_MAX_DIMS) {
        *why = "n_dims out of range";
        return false;
    }
    uint64_t n = 1;
    for (uint32_t i = 0; i < ndim; i++) {
        if (dims[i] > (uint64_t)INT64_MAX) {
            *why = "dimension too large";
            return false;
        }
        if (dims[i] != 0 && n > (uint64_t)INT64_MAX / dims[i]) {
            *why = "dimension product overflows";
            return false;
        }
        n *= dims[i];
    }
    if (dims[0] % block != 0) {
        *why = "innermost dimension not a multiple of the block size";
        return false;
    }
    uint64_t nb = n / block;
    if (nb != 0 && nb > SIZE_MAX / bb) {
        *why = "byte size overflows";
        return false;
    }
    *nelem = n;
    *nbytes = (size_t)(nb * bb);
    return true;
}

/* ---- reader ---- */

struct rd {
    const uint8_t *p;
    size_t len;
    size_t pos;
};

static size_t rd_left(const struct rd *r)
{
    return r->len - r->pos;
}

static int rd_bytes(struct rd *r, void *dst, size_t n, const char *what)
{
    if (n > rd_left(r)) {
        log_error("gguf_truncated", "what=%s pos=%zu need=%zu have=%zu", what, r->pos, n,
                  rd_left(r));
        return SF_EFORMAT;
    }
    memcpy(dst, r->p + r->pos, n);
    r->pos += n;
    return 0;
}

static int rd_u32(struct rd *r, uint32_t *v, const char *what)
{
    return rd_bytes(r, v, 4, what);
}

static int rd_u64(struct rd *r, uint64_t *v, const char *what)
{
    return rd_bytes(r, v, 8, what);
}

/* Reads a string into a fresh NUL-terminated allocation. */
static int rd_str(struct rd *r, size_t cap, char **out, size_t *len, const char *what)
{
    uint64_t n;
    int rc = rd_u64(r, &n, what);
    if (rc) return rc;
    if (n > cap || n > rd_left(r)) {
        log_error("gguf_bad_string", "what=%s pos=%zu len=%llu left=%zu", what, r->pos,
                  (unsigned long long)n, rd_left(r));
        return SF_EFORMAT;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) return SF_ENOMEM;
    memcpy(s, r->p + r->pos, (size_t)n);
    s[n] = 0;
    r->pos += (size_t)n;
    *out = s;
    if (len) *len = (size_t)n;
    return 0;
}

static void value_free(struct gguf_value *v)
{
    if (v->type == GGUF_TYPE_STRING) {
        free((void *)v->v.str.s);
    } else if (v->type == GGUF_TYPE_ARRAY) {
        if (v->v.arr.type == GGUF_TYPE_ARRAY) {
            struct gguf_value *sub = (struct gguf_value *)v->v.arr.data;
            for (size_t i = 0; i < v->v.arr.n; i++) value_free(&sub[i]);
        }
        free((void *)v->v.arr.data);
    }
    memset(v, 0, sizeof *v);
}

static int rd_array(struct rd *r, struct gguf_value *out, int depth);

static int rd_value(struct rd *r, enum gguf_type type, struct gguf_value *out, int depth)
{
    int rc;
    memset(out, 0, sizeof *out);
    out->type = type;
    switch (type) {
    case GGUF_TYPE_UINT8: {
        uint8_t x;
        if ((rc = rd_bytes(r, &x, 1, "u8"))) return rc;
        out->v.u64 = x;
        return 0;
    }
    case GGUF_TYPE_INT8: {
        int8_t x;
        if ((rc = rd_bytes(r, &x, 1, "i8"))) return rc;
        out->v.i64 = x;
        return 0;
    }
    case GGUF_TYPE_UINT16: {
        uint16_t x;
        if ((rc = rd_bytes(r, &x, 2, "u16"))) return rc;
        out->v.u64 = x;
        return 0;
    }
    case GGUF_TYPE_INT16: {
        int16_t x;
        if ((rc = rd_bytes(r, &x, 2, "i16"))) return rc;
        out->v.i64 = x;
        return 0;
    }
    case GGUF_TYPE_UINT32: {
        uint32_t x;
        if ((rc = rd_bytes(r, &x, 4, "u32"))) return rc;
        out->v.u64 = x;
        return 0;
    }
    case GGUF_TYPE_INT32: {
        int32_t x;
        if ((rc = rd_bytes(r, &x, 4, "i32"))) return rc;
        out->v.i64 = x;
        return 0;
    }
    case GGUF_TYPE_FLOAT32: {
        float x;
        if ((rc = rd_bytes(r, &x, 4, "f32"))) return rc;
        out->v.f64 = x;
        return 0;
    }
    case GGUF_TYPE_BOOL: {
        uint8_t x;
        if ((rc = rd_bytes(r, &x, 1, "bool"))) return rc;
        if (x > 1) {
            log_error("gguf_bad_bool", "pos=%zu value=%u", r->pos - 1, (unsigned)x);
            return SF_EFORMAT;
        }
        out->v.b = x != 0;
        return 0;
    }
    case GGUF_TYPE_UINT64: {
        uint64_t x;
        if ((rc = rd_u64(r, &x, "u64"))) return rc;
        out->v.u64 = x;
        return 0;
    }
    case GGUF_TYPE_INT64: {
        int64_t x;
        if ((rc = rd_bytes(r, &x, 8, "i64"))) return rc;
        out->v.i64 = x;
        return 0;
    }
    case GGUF_TYPE_FLOAT64: {
        double x;
        if ((rc = rd_bytes(r, &x, 8, "f64"))) return rc;
        out->v.f64 = x;
        return 0;
    }
    case GGUF_TYPE_STRING: {
        char *s;
        size_t n;
        if ((rc = rd_str(r, GGUF_MAX_STRING, &s, &n, "string value"))) return rc;
        out->v.str.s = s;
        out->v.str.len = n;
        return 0;
    }
    case GGUF_TYPE_ARRAY:
        return rd_array(r, out, depth);
    default:
        break;
    }
    log_error("gguf_bad_type", "pos=%zu type=%u", r->pos, (unsigned)type);
    return SF_EFORMAT;
}

/* An array value: u32 element type, u64 count, elements. */
static int rd_array(struct rd *r, struct gguf_value *out, int depth)
{
    uint32_t et;
    uint64_t n;
    int rc;
    if (depth >= GGUF_MAX_ARR_DEPTH) {
        log_error("gguf_bad_array", "pos=%zu reason=too_deep", r->pos);
        return SF_EFORMAT;
    }
    if ((rc = rd_u32(r, &et, "array type"))) return rc;
    if ((rc = rd_u64(r, &n, "array length"))) return rc;
    if (et >= GGUF_TYPE_COUNT_) {
        log_error("gguf_bad_array", "pos=%zu reason=bad_elem_type type=%u", r->pos, (unsigned)et);
        return SF_EFORMAT;
    }
    /* every element needs at least this many bytes in the file */
    size_t min_size = et == GGUF_TYPE_STRING ? 8 : et == GGUF_TYPE_ARRAY ? 12 : value_size[et];
    if (n > rd_left(r) / min_size) {
        log_error("gguf_bad_array", "pos=%zu reason=too_long n=%llu left=%zu", r->pos,
                  (unsigned long long)n, rd_left(r));
        return SF_EFORMAT;
    }
    out->type = GGUF_TYPE_ARRAY;
    out->v.arr.type = (enum gguf_type)et;
    out->v.arr.n = 0;
    out->v.arr.data = NULL;
    if (n == 0) return 0;

    if (et == GGUF_TYPE_STRING) {
        /* first pass: validate and size */
        size_t pos0 = r->pos, total = 0;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t len;
            if ((rc = rd_u64(r, &len, "string array element"))) return rc;
            if (len > GGUF_MAX_STRING || len > rd_left(r)) {
                log_error("gguf_bad_string", "what=array_element pos=%zu len=%llu left=%zu", r->pos,
                          (unsigned long long)len, rd_left(r));
                return SF_EFORMAT;
            }
            r->pos += (size_t)len;
            total += (size_t)len + 1;
        }
        size_t hdr = (size_t)n * sizeof(struct gguf_str);
        char *blk = malloc(hdr + total);
        if (!blk) return SF_ENOMEM;
        struct gguf_str *strs = (struct gguf_str *)blk;
        char *chars = blk + hdr;
        r->pos = pos0;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t len;
            memcpy(&len, r->p + r->pos, 8);
            r->pos += 8;
            memcpy(chars, r->p + r->pos, (size_t)len);
            chars[len] = 0;
            strs[i].s = chars;
            strs[i].len = (size_t)len;
            chars += len + 1;
            r->pos += (size_t)len;
        }
        out->v.arr.data = blk;
        out->v.arr.n = (size_t)n;
        return 0;
    }
    if (et == GGUF_TYPE_ARRAY) {
        struct gguf_value *sub = calloc((size_t)n, sizeof *sub);
        if (!sub) return SF_ENOMEM;
        out->v.arr.data = sub;
        for (uint64_t i = 0; i < n; i++) {
            rc = rd_array(r, &sub[i], depth + 1);
            out->v.arr.n = (size_t)i + 1; /* so that value_free frees what was read */
            if (rc) return rc;
        }
        return 0;
    }
    size_t bytes = (size_t)n * value_size[et];
    uint8_t *data = malloc(bytes);
    if (!data) return SF_ENOMEM;
    memcpy(data, r->p + r->pos, bytes);
    r->pos += bytes;
    if (et == GGUF_TYPE_BOOL) {
        for (size_t i = 0; i < bytes; i++) {
            if (data[i] > 1) {
                log_error("gguf_bad_bool", "pos=%zu value=%u", r->pos - bytes + i,
                          (unsigned)data[i]);
                free(data);
                return SF_EFORMAT;
            }
        }
    }
    out->v.arr.data = data;
    out->v.arr.n = (size_t)n;
    return 0;
}

/* Comparators over index arrays (glibc's qsort_r passes the gguf along). */
static int cmp_kv(const void *a, const void *b, void *ctx)
{
    const struct gguf *g = ctx;
    return strcmp(g->kvs[*(const size_t *)a].key, g->kvs[*(const size_t *)b].key);
}

static int cmp_tensor(const void *a, const void *b, void *ctx)
{
    const struct gguf *g = ctx;
    return strcmp(g->tensors[*(const size_t *)a].name, g->tensors[*(const size_t *)b].name);
}

static int cmp_offset(const void *a, const void *b, void *ctx)
{
    const struct gguf *g = ctx;
    const struct gguf_tensor *x = &g->tensors[*(const size_t *)a];
    const struct gguf_tensor *y = &g->tensors[*(const size_t *)b];
    return x->offset < y->offset ? -1 : x->offset > y->offset ? 1 : 0;
}

static void sort_indices(const struct gguf *g, size_t *idx, size_t n,
                         int (*cmp)(const void *, const void *, void *))
{
    for (size_t i = 0; i < n; i++) idx[i] = i;
    qsort_r(idx, n, sizeof *idx, cmp, (void *)g);
}

static void gguf_free(struct gguf *g)
{
    if (!g) return;
    for (size_t i = 0; i < g->n_kv; i++) {
        free(g->kvs[i].key);
        value_free(&g->kvs[i].val);
    }
    free(g->kvs);
    free(g->kv_sorted);
    for (size_t i = 0; i < g->n_tensors; i++) free((void *)g->tensors[i].name);
    free(g->tensors);
    free(g->t_sorted);
    if (g->map) munmap(g->map, g->map_len);
    free(g);
}

static int parse(struct gguf *g)
{
    struct rd r = {g->base, g->len, 0};
    char magic[4];
    uint32_t version;
    uint64_t n_tensors, n_kv;
    int rc;

    if ((rc = rd_bytes(&r, magic, 4, "magic"))) return rc;
    if (memcmp(magic, GGUF_MAGIC, 4) != 0) {
        log_error("gguf_bad_magic", "magic=%02x%02x%02x%02x", (unsigned char)magic[0],
                  (unsigned char)magic[1], (unsigned char)magic[2], (unsigned char)magic[3]);
        return SF_EFORMAT;
    }
    if ((rc = rd_u32(&r, &version, "version"))) return rc;
    if (version != 2 && version != 3) {
        log_error("gguf_bad_version", "version=%u supported=2,3%s", (unsigned)version,
                  version == 1              ? " reason=v1_unsupported"
                  : (version & 0xffff) == 0 ? " reason=big_endian?"
                                            : "");
        return version == 1 || (version & 0xffff) == 0 ? SF_EUNSUP : SF_EFORMAT;
    }
    g->version = version;
    if ((rc = rd_u64(&r, &n_tensors, "tensor count"))) return rc;
    if ((rc = rd_u64(&r, &n_kv, "kv count"))) return rc;
    /* min bytes: kv = key len 8 + type 4 + 1; tensor = name len 8 + ndim 4 + dim 8 +
     * type 4 + offset 8 */
    if (n_kv > GGUF_MAX_KV || n_kv > rd_left(&r) / 13) {
        log_error("gguf_bad_count", "what=kv n=%llu left=%zu", (unsigned long long)n_kv,
                  rd_left(&r));
        return SF_EFORMAT;
    }
    if (n_tensors > GGUF_MAX_TENSORS || n_tensors > rd_left(&r) / 32) {
        log_error("gguf_bad_count", "what=tensors n=%llu left=%zu", (unsigned long long)n_tensors,
                  rd_left(&r));
        return SF_EFORMAT;
    }

    if (n_kv) {
        g->kvs = calloc((size_t)n_kv, sizeof *g->kvs);
        g->kv_sorted = calloc((size_t)n_kv, sizeof *g->kv_sorted);
        if (!g->kvs || !g->kv_sorted) return SF_ENOMEM;
    }
    for (uint64_t i = 0; i < n_kv; i++) {
        struct gguf_kv *kv = &g->kvs[i];
        uint32_t type;
        if ((rc = rd_str(&r, GGUF_MAX_KEY, &kv->key, NULL, "key"))) return rc;
        g->n_kv = (size_t)i + 1;
        if ((rc = rd_u32(&r, &type, "value type"))) return rc;
        if (type >= GGUF_TYPE_COUNT_) {
            log_error("gguf_bad_type", "key=%s type=%u", kv->key, (unsigned)type);
            return SF_EFORMAT;
        }
        if ((rc = rd_value(&r, (enum gguf_type)type, &kv->val, 0))) {
            log_error("gguf_bad_value", "key=%s type=%s", kv->key, gguf_type_name(type));
            return rc;
        }
    }
    if (g->n_kv) {
        sort_indices(g, g->kv_sorted, g->n_kv, cmp_kv);
        for (size_t i = 1; i < g->n_kv; i++) {
            if (strcmp(g->kvs[g->kv_sorted[i - 1]].key, g->kvs[g->kv_sorted[i]].key) == 0) {
                log_error("gguf_duplicate_key", "key=%s", g->kvs[g->kv_sorted[i]].key);
                return SF_EFORMAT;
            }
        }
    }

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const struct gguf_value *al = gguf_find(g, "general.alignment");
    if (al) {
        if (al->type != GGUF_TYPE_UINT32 || al->v.u64 == 0 || (al->v.u64 & (al->v.u64 - 1))) {
            log_error("gguf_bad_alignment", "type=%s value=%llu", gguf_type_name(al->type),
                      (unsigned long long)al->v.u64);
            return SF_EFORMAT;
        }
        g->alignment = (size_t)al->v.u64;
    }

    if (n_tensors) {
        g->tensors = calloc((size_t)n_tensors, sizeof *g->tensors);
        g->t_sorted = calloc((size_t)n_tensors, sizeof *g->t_sorted);
        if (!g->tensors || !g->t_sorted) return SF_ENOMEM;
    }
    for (uint64_t i = 0; i < n_tensors; i++) {
        struct gguf_tensor *t = &g->tensors[i];
        char *name;
        uint32_t ndim, type;
        uint64_t nelem;
        const char *why = NULL;
        if ((rc = rd_str(&r, GGUF_MAX_NAME, &name, NULL, "tensor name"))) return rc;
        t->name = name;
        g->n_tensors = (size_t)i + 1;
        if ((rc = rd_u32(&r, &ndim, "n_dims"))) return rc;
        if (ndim < 1 || ndim > GGUF_MAX_DIMS) {
            log_error("gguf_bad_tensor", "name=%s reason=n_dims n_dims=%u", name, (unsigned)ndim);
            return SF_EFORMAT;
        }
        t->ndim = ndim;
        for (uint32_t d = 0; d < GGUF_MAX_DIMS; d++) t->dims[d] = 1;
        for (uint32_t d = 0; d < ndim; d++)
            if ((rc = rd_u64(&r, &t->dims[d], "dims"))) return rc;
        if ((rc = rd_u32(&r, &type, "tensor type"))) return rc;
        if ((rc = rd_u64(&r, &t->offset, "tensor offset"))) return rc;
        if (!tensor_extent(type, ndim, t->dims, &nelem, &t->nbytes, &why)) {
            log_error("gguf_bad_tensor", "name=%s type=%u reason=\"%s\"", name, (unsigned)type,
                      why);
            return SF_EFORMAT;
        }
        t->type = (enum gguf_ggml_type)type;
    }
    if (g->n_tensors) {
        sort_indices(g, g->t_sorted, g->n_tensors, cmp_tensor);
        for (size_t i = 1; i < g->n_tensors; i++) {
            if (strcmp(g->tensors[g->t_sorted[i - 1]].name, g->tensors[g->t_sorted[i]].name) == 0) {
                log_error("gguf_duplicate_tensor", "name=%s", g->tensors[g->t_sorted[i]].name);
                return SF_EFORMAT;
            }
        }
    }

    /* data section: aligned start after the tensor infos */
    size_t pad = (g->alignment - r.pos % g->alignment) % g->alignment;
    g->data_off = r.pos + pad; /* cannot overflow: r.pos <= len and pad < alignment <= 2^32 */
    size_t data_size = g->data_off <= g->len ? g->len - g->data_off : 0;
    for (size_t i = 0; i < g->n_tensors; i++) {
        struct gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment != 0) {
            log_error("gguf_bad_tensor", "name=%s reason=misaligned offset=%llu alignment=%zu",
                      t->name, (unsigned long long)t->offset, g->alignment);
            return SF_EFORMAT;
        }
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            log_error("gguf_bad_tensor",
                      "name=%s reason=out_of_file offset=%llu nbytes=%zu data_size=%zu", t->name,
                      (unsigned long long)t->offset, t->nbytes, data_size);
            return SF_EFORMAT;
        }
        /* a file without a data section may still list empty tensors: point those at
         * the end of the input rather than past it */
        t->data = g->base + (g->data_off <= g->len ? g->data_off + t->offset : g->len);
    }
    /* no two tensors may overlap */
    if (g->n_tensors > 1) {
        size_t *idx = malloc(g->n_tensors * sizeof *idx);
        if (!idx) return SF_ENOMEM;
        sort_indices(g, idx, g->n_tensors, cmp_offset);
        uint64_t end = 0;
        const char *prev = NULL;
        for (size_t i = 0; i < g->n_tensors; i++) {
            const struct gguf_tensor *t = &g->tensors[idx[i]];
            if (t->nbytes == 0) continue;
            if (prev && t->offset < end) {
                log_error("gguf_bad_tensor", "name=%s reason=overlaps other=%s", t->name, prev);
                free(idx);
                return SF_EFORMAT;
            }
            end = t->offset + t->nbytes;
            prev = t->name;
        }
        free(idx);
    }
    return 0;
}

int gguf_open_mem(const void *buf, size_t len, struct gguf **out)
{
    *out = NULL;
    if (!buf && len) return SF_EINVAL;
    struct gguf *g = calloc(1, sizeof *g);
    if (!g) return SF_ENOMEM;
    g->base = buf;
    g->len = len;
    int rc = parse(g);
    if (rc) {
        gguf_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

int gguf_open(const char *path, struct gguf **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        log_error("gguf_open_failed", "path=%s err=\"%s\"", path, strerror(errno));
        return SF_EIO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        log_error("gguf_open_failed", "path=%s err=\"not a regular file\"", path);
        close(fd);
        return SF_EIO;
    }
    size_t len = (size_t)st.st_size;
    void *map = NULL;
    if (len > 0) {
        map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            log_error("gguf_mmap_failed", "path=%s err=\"%s\"", path, strerror(errno));
            close(fd);
            return SF_EIO;
        }
    }
    close(fd);
    struct gguf *g = calloc(1, sizeof *g);
    if (!g) {
        if (map) munmap(map, len);
        return SF_ENOMEM;
    }
    g->base = map;
    g->len = len;
    g->map = map;
    g->map_len = len;
    int rc = parse(g);
    if (rc) {
        log_error("gguf_invalid", "path=%s err=%s", path, sf_strerror(rc));
        gguf_free(g);
        return rc;
    }
    log_debug("gguf_opened", "path=%s version=%u kv=%zu tensors=%zu", path, (unsigned)g->version,
              g->n_kv, g->n_tensors);
    *out = g;
    return 0;
}

void gguf_close(struct gguf **g)
{
    if (!g || !*g) return;
    gguf_free(*g);
    *g = NULL;
}

uint32_t gguf_version(const struct gguf *g)
{
    return g->version;
}

size_t gguf_alignment(const struct gguf *g)
{
    return g->alignment;
}

/* ---- metadata lookup ---- */

size_t gguf_kv_count(const struct gguf *g)
{
    return g->n_kv;
}

const char *gguf_kv_key(const struct gguf *g, size_t i)
{
    return i < g->n_kv ? g->kvs[i].key : NULL;
}

const struct gguf_value *gguf_kv_value(const struct gguf *g, size_t i)
{
    return i < g->n_kv ? &g->kvs[i].val : NULL;
}

const struct gguf_value *gguf_find(const struct gguf *g, const char *key)
{
    size_t lo = 0, hi = g->n_kv;
    if (!g->kv_sorted) return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct gguf_kv *kv = &g->kvs[g->kv_sorted[mid]];
        int c = strcmp(kv->key, key);
        if (c == 0) return &kv->val;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static bool is_uint(enum gguf_type t)
{
    return t == GGUF_TYPE_UINT8 || t == GGUF_TYPE_UINT16 || t == GGUF_TYPE_UINT32 ||
           t == GGUF_TYPE_UINT64;
}

static bool is_sint(enum gguf_type t)
{
    return t == GGUF_TYPE_INT8 || t == GGUF_TYPE_INT16 || t == GGUF_TYPE_INT32 ||
           t == GGUF_TYPE_INT64;
}

static int lookup(const struct gguf *g, const char *key, const struct gguf_value **v)
{
    *v = gguf_find(g, key);
    return *v ? 0 : SF_NOTFOUND;
}

static int wrong_type(const char *key, const struct gguf_value *v, const char *want)
{
    log_error("gguf_wrong_type", "key=%s type=%s want=%s", key, gguf_type_name(v->type), want);
    return SF_EFORMAT;
}

/* Integer value as a sign flag + magnitude pair, for range checks. */
static int get_int(const struct gguf *g, const char *key, int64_t lo, uint64_t hi, bool *neg,
                   uint64_t *mag)
{
    const struct gguf_value *v;
    int rc = lookup(g, key, &v);
    if (rc) return rc;
    if (is_uint(v->type)) {
        *neg = false;
        *mag = v->v.u64;
    } else if (is_sint(v->type)) {
        *neg = v->v.i64 < 0;
        *mag = *neg ? (uint64_t)0 - (uint64_t)v->v.i64 : (uint64_t)v->v.i64;
    } else {
        return wrong_type(key, v, "integer");
    }
    if ((*neg && *mag > (uint64_t)0 - (uint64_t)lo) || (!*neg && *mag > hi)) {
        log_error("gguf_out_of_range", "key=%s", key);
        return SF_EFORMAT;
    }
    return 0;
}

int gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out)
{
    bool neg;
    uint64_t m;
    int rc = get_int(g, key, 0, UINT32_MAX, &neg, &m);
    if (rc == 0) *out = (uint32_t)m;
    return rc;
}

int gguf_get_u64(const struct gguf *g, const char *key, uint64_t *out)
{
    bool neg;
    uint64_t m;
    int rc = get_int(g, key, 0, UINT64_MAX, &neg, &m);
    if (rc == 0) *out = m;
    return rc;
}

int gguf_get_i32(const struct gguf *g, const char *key, int32_t *out)
{
    bool neg;
    uint64_t m;
    int rc = get_int(g, key, INT32_MIN, INT32_MAX, &neg, &m);
    if (rc == 0) *out = neg ? (int32_t)(-(int64_t)m) : (int32_t)m;
    return rc;
}

int gguf_get_i64(const struct gguf *g, const char *key, int64_t *out)
{
    bool neg;
    uint64_t m;
    int rc = get_int(g, key, INT64_MIN, INT64_MAX, &neg, &m);
    if (rc == 0) *out = neg ? (m == (uint64_t)1 << 63 ? INT64_MIN : -(int64_t)m) : (int64_t)m;
    return rc;
}

int gguf_get_f64(const struct gguf *g, const char *key, double *out)
{
    const struct gguf_value *v;
    int rc = lookup(g, key, &v);
    if (rc) return rc;
    if (v->type != GGUF_TYPE_FLOAT32 && v->type != GGUF_TYPE_FLOAT64)
        return wrong_type(key, v, "float");
    *out = v->v.f64;
    return 0;
}

int gguf_get_f32(const struct gguf *g, const char *key, float *out)
{
    double d;
    int rc = gguf_get_f64(g, key, &d);
    if (rc == 0) *out = (float)d;
    return rc;
}

int gguf_get_bool(const struct gguf *g, const char *key, bool *out)
{
    const struct gguf_value *v;
    int rc = lookup(g, key, &v);
    if (rc) return rc;
    if (v->type != GGUF_TYPE_BOOL) return wrong_type(key, v, "bool");
    *out = v->v.b;
    return 0;
}

int gguf_get_str(const struct gguf *g, const char *key, const char **out, size_t *len)
{
    const struct gguf_value *v;
    int rc = lookup(g, key, &v);
    if (rc) return rc;
    if (v->type != GGUF_TYPE_STRING) return wrong_type(key, v, "str");
    *out = v->v.str.s;
    if (len) *len = v->v.str.len;
    return 0;
}

int gguf_get_arr(const struct gguf *g, const char *key, enum gguf_type *type, size_t *n,
                 const void **data)
{
    const struct gguf_value *v;
    int rc = lookup(g, key, &v);
    if (rc) return rc;
    if (v->type != GGUF_TYPE_ARRAY) return wrong_type(key, v, "arr");
    if (type) *type = v->v.arr.type;
    if (n) *n = v->v.arr.n;
    if (data) *data = v->v.arr.data;
    return 0;
}

int gguf_get_arr_str(const struct gguf *g, const char *key, size_t i, struct gguf_str *out)
{
    enum gguf_type t;
    size_t n;
    const void *data;
    int rc = gguf_get_arr(g, key, &t, &n, &data);
    if (rc) return rc;
    if (t != GGUF_TYPE_STRING) {
        log_error("gguf_wrong_type", "key=%s elem_type=%s want=str", key, gguf_type_name(t));
        return SF_EFORMAT;
    }
    if (i >= n) return SF_ERANGE;
    *out = ((const struct gguf_str *)data)[i];
    return 0;
}

/* ---- tensors ---- */

size_t gguf_tensor_count(const struct gguf *g)
{
    return g->n_tensors;
}

const struct gguf_tensor *gguf_tensor_at(const struct gguf *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const struct gguf_tensor *gguf_find_tensor(const struct gguf *g, const char *name)
{
    size_t lo = 0, hi = g->n_tensors;
    if (!g->t_sorted) return NULL;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct gguf_tensor *t = &g->tensors[g->t_sorted[mid]];
        int c = strcmp(t->name, name);
        if (c == 0) return t;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

uint64_t gguf_tensor_nelem(const struct gguf_tensor *t)
{
    uint64_t n = 1;
    for (uint32_t i = 0; i < t->ndim; i++) n *= t->dims[i];
    return n;
}

void gguf_dequant_q8_0(float *out, const void *blocks, size_t n)
{
    const uint8_t *p = blocks;
    for (size_t b = 0; b < n / GGUF_QK8_0; b++, p += 2 + GGUF_QK8_0) {
        uint16_t dh;
        memcpy(&dh, p, 2);
        float d = f16_to_f32(dh);
        const int8_t *q = (const int8_t *)(p + 2);
        for (size_t j = 0; j < GGUF_QK8_0; j++) out[b * GGUF_QK8_0 + j] = d * (float)q[j];
    }
}

void gguf_quant_q8_0(void *out, const float *x, size_t n)
{
    uint8_t *p = out;
    for (size_t b = 0; b < n / GGUF_QK8_0; b++, p += 2 + GGUF_QK8_0) {
        const float *xb = x + b * GGUF_QK8_0;
        float amax = 0.0f;
        for (size_t j = 0; j < GGUF_QK8_0; j++) {
            float a = xb[j] < 0 ? -xb[j] : xb[j];
            if (a > amax) amax = a;
        }
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        uint16_t dh = f32_to_f16(d);
        memcpy(p, &dh, 2);
        int8_t *q = (int8_t *)(p + 2);
        for (size_t j = 0; j < GGUF_QK8_0; j++) {
            float v = roundf(xb[j] * id);
            q[j] = (int8_t)(v > 127.0f ? 127 : v < -128.0f ? -128 : v);
        }
    }
}

int gguf_tensor_to_f32(const struct gguf_tensor *t, float *out, size_t n)
{
    uint64_t ne = gguf_tensor_nelem(t);
    if ((uint64_t)n != ne) {
        log_error("gguf_to_f32", "name=%s reason=size_mismatch n=%zu nelem=%llu", t->name, n,
                  (unsigned long long)ne);
        return SF_EINVAL;
    }
    const uint8_t *p = t->data;
    switch (t->type) {
    case GGML_TYPE_F32:
        if (n) memcpy(out, p, n * sizeof(float));
        return 0;
    case GGML_TYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = f16_to_f32(h);
        }
        return 0;
    case GGML_TYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = bf16_to_f32(h);
        }
        return 0;
    case GGML_TYPE_Q8_0:
        gguf_dequant_q8_0(out, p, n);
        return 0;
    default:
        break;
    }
    log_error("gguf_to_f32", "name=%s reason=unsupported_type type=%s", t->name,
              gguf_ggml_type_name(t->type));
    return SF_EUNSUP;
}

/* ---- writer ---- */

#define WRITER_MAX ((size_t)1 << 40)

struct wtensor {
    char *name;
    uint32_t type;
    uint32_t ndim;
    uint64_t dims[GGUF_MAX_DIMS];
    void *data;
    size_t nbytes;
};

struct gguf_writer {
    struct buf kv; /* serialised key/value pairs */
    size_t n_kv;
    char **keys;
    size_t alignment;
    struct wtensor *tensors;
    size_t n_tensors;
};

struct gguf_writer *gguf_writer_new(void)
{
    struct gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    buf_init(&w->kv, WRITER_MAX);
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_destroy(struct gguf_writer **wp)
{
    if (!wp || !*wp) return;
    struct gguf_writer *w = *wp;
    buf_fini(&w->kv);
    for (size_t i = 0; i < w->n_kv; i++) free(w->keys[i]);
    free(w->keys);
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        free(w->tensors[i].data);
    }
    free(w->tensors);
    free(w);
    *wp = NULL;
}

static int put_u32(struct buf *b, uint32_t v)
{
    return buf_append(b, &v, 4);
}

static int put_u64(struct buf *b, uint64_t v)
{
    return buf_append(b, &v, 8);
}

static int put_str(struct buf *b, const char *s, size_t len)
{
    int rc = put_u64(b, len);
    return rc ? rc : buf_append(b, s, len);
}

/* Records the key (checking duplicates) and writes key + type. */
static int begin_kv(struct gguf_writer *w, const char *key, enum gguf_type type)
{
    if (!key) return SF_EINVAL;
    for (size_t i = 0; i < w->n_kv; i++) {
        if (strcmp(w->keys[i], key) == 0) {
            log_error("gguf_writer_duplicate_key", "key=%s", key);
            return SF_EINVAL;
        }
    }
    char **keys = realloc(w->keys, (w->n_kv + 1) * sizeof *keys);
    if (!keys) return SF_ENOMEM;
    w->keys = keys;
    size_t kl = strlen(key);
    char *k = malloc(kl + 1);
    if (!k) return SF_ENOMEM;
    memcpy(k, key, kl + 1);
    int rc = put_str(&w->kv, key, kl);
    if (!rc) rc = put_u32(&w->kv, (uint32_t)type);
    if (rc) {
        free(k);
        return rc;
    }
    w->keys[w->n_kv++] = k;
    return 0;
}

static int set_scalar(struct gguf_writer *w, const char *key, enum gguf_type type, const void *v)
{
    int rc = begin_kv(w, key, type);
    return rc ? rc : buf_append(&w->kv, v, value_size[type]);
}

int gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
    if (key && strcmp(key, "general.alignment") == 0) {
        if (v == 0 || (v & (v - 1))) return SF_EINVAL;
        int rc = set_scalar(w, key, GGUF_TYPE_UINT32, &v);
        if (rc == 0) w->alignment = v;
        return rc;
    }
    return set_scalar(w, key, GGUF_TYPE_UINT32, &v);
}

int gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v)
{
    return set_scalar(w, key, GGUF_TYPE_INT32, &v);
}

int gguf_writer_set_u64(struct gguf_writer *w, const char *key, uint64_t v)
{
    return set_scalar(w, key, GGUF_TYPE_UINT64, &v);
}

int gguf_writer_set_i64(struct gguf_writer *w, const char *key, int64_t v)
{
    return set_scalar(w, key, GGUF_TYPE_INT64, &v);
}

int gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v)
{
    return set_scalar(w, key, GGUF_TYPE_FLOAT32, &v);
}

int gguf_writer_set_f64(struct gguf_writer *w, const char *key, double v)
{
    return set_scalar(w, key, GGUF_TYPE_FLOAT64, &v);
}

int gguf_writer_set_bool(struct gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return set_scalar(w, key, GGUF_TYPE_BOOL, &b);
}

int gguf_writer_set_strn(struct gguf_writer *w, const char *key, const char *s, size_t len)
{
    if (!s && len) return SF_EINVAL;
    int rc = begin_kv(w, key, GGUF_TYPE_STRING);
    return rc ? rc : put_str(&w->kv, s, len);
}

int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *s)
{
    if (!s) return SF_EINVAL;
    return gguf_writer_set_strn(w, key, s, strlen(s));
}

int gguf_writer_set_arr(struct gguf_writer *w, const char *key, enum gguf_type type,
                        const void *data, size_t n)
{
    if ((unsigned)type >= GGUF_TYPE_COUNT_ || value_size[type] == 0 || (!data && n))
        return SF_EINVAL;
    size_t bytes;
    if (!size_mul_ok(n, value_size[type], &bytes)) return SF_EINVAL;
    int rc = begin_kv(w, key, GGUF_TYPE_ARRAY);
    if (!rc) rc = put_u32(&w->kv, (uint32_t)type);
    if (!rc) rc = put_u64(&w->kv, n);
    if (!rc && bytes) rc = buf_append(&w->kv, data, bytes);
    return rc;
}

int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key, const char *const *strs,
                            const size_t *lens, size_t n)
{
    if (!strs && n) return SF_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!strs[i]) return SF_EINVAL;
    int rc = begin_kv(w, key, GGUF_TYPE_ARRAY);
    if (!rc) rc = put_u32(&w->kv, GGUF_TYPE_STRING);
    if (!rc) rc = put_u64(&w->kv, n);
    for (size_t i = 0; i < n && !rc; i++)
        rc = put_str(&w->kv, strs[i], lens ? lens[i] : strlen(strs[i]));
    return rc;
}

int gguf_writer_set_raw(struct gguf_writer *w, const char *key, enum gguf_type type,
                        const void *bytes, size_t len)
{
    if (!bytes && len) return SF_EINVAL;
    int rc = begin_kv(w, key, type);
    return rc ? rc : buf_append(&w->kv, bytes, len);
}

static int add_tensor(struct gguf_writer *w, const char *name, enum gguf_ggml_type type,
                      uint32_t ndim, const uint64_t *dims, void **data, size_t nbytes)
{
    if (!name || strlen(name) > GGUF_MAX_NAME) return SF_EINVAL;
    for (size_t i = 0; i < w->n_tensors; i++) {
        if (strcmp(w->tensors[i].name, name) == 0) {
            log_error("gguf_writer_duplicate_tensor", "name=%s", name);
            return SF_EINVAL;
        }
    }
    struct wtensor *ts = realloc(w->tensors, (w->n_tensors + 1) * sizeof *ts);
    if (!ts) return SF_ENOMEM;
    w->tensors = ts;
    struct wtensor *t = &ts[w->n_tensors];
    memset(t, 0, sizeof *t);
    size_t nl = strlen(name);
    t->name = malloc(nl + 1);
    if (!t->name) return SF_ENOMEM;
    memcpy(t->name, name, nl + 1);
    t->type = (uint32_t)type;
    t->ndim = ndim;
    for (uint32_t i = 0; i < GGUF_MAX_DIMS; i++) t->dims[i] = i < ndim ? dims[i] : 1;
    t->data = *data;
    *data = NULL;
    t->nbytes = nbytes;
    w->n_tensors++;
    return 0;
}

int gguf_writer_add_tensor_raw(struct gguf_writer *w, const char *name, enum gguf_ggml_type type,
                               uint32_t ndim, const uint64_t *dims, const void *data, size_t nbytes)
{
    uint64_t nelem;
    size_t want;
    const char *why = NULL;
    if (!dims || !tensor_extent((uint32_t)type, ndim, dims, &nelem, &want, &why)) {
        log_error("gguf_writer_bad_tensor", "name=%s reason=\"%s\"", name ? name : "",
                  why ? why : "no dims");
        return SF_EINVAL;
    }
    if (want != nbytes || (!data && nbytes)) return SF_EINVAL;
    void *copy = malloc(nbytes ? nbytes : 1);
    if (!copy) return SF_ENOMEM;
    if (nbytes) memcpy(copy, data, nbytes);
    int rc = add_tensor(w, name, type, ndim, dims, &copy, nbytes);
    free(copy);
    return rc;
}

int gguf_writer_add_tensor_f32(struct gguf_writer *w, const char *name, enum gguf_ggml_type type,
                               uint32_t ndim, const uint64_t *dims, const float *x)
{
    uint64_t nelem;
    size_t nbytes;
    const char *why = NULL;
    if (type != GGML_TYPE_F32 && type != GGML_TYPE_F16 && type != GGML_TYPE_BF16 &&
        type != GGML_TYPE_Q8_0)
        return SF_EUNSUP;
    if (!dims || !tensor_extent((uint32_t)type, ndim, dims, &nelem, &nbytes, &why)) {
        log_error("gguf_writer_bad_tensor", "name=%s reason=\"%s\"", name ? name : "",
                  why ? why : "no dims");
        return SF_EINVAL;
    }
    if (!x && nelem) return SF_EINVAL;
    uint8_t *out = malloc(nbytes ? nbytes : 1);
    if (!out) return SF_ENOMEM;
    size_t n = (size_t)nelem;
    switch (type) {
    case GGML_TYPE_F32:
        if (n) memcpy(out, x, n * 4);
        break;
    case GGML_TYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = f32_to_f16(x[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        break;
    case GGML_TYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = f32_to_bf16(x[i]);
            memcpy(out + 2 * i, &h, 2);
        }
        break;
    default:
        gguf_quant_q8_0(out, x, n);
        break;
    }
    void *p = out;
    int rc = add_tensor(w, name, type, ndim, dims, &p, nbytes);
    free(p);
    return rc;
}

static int put_pad(struct buf *b, size_t alignment)
{
    static const char zeros[64];
    size_t pad = (alignment - b->len % alignment) % alignment;
    while (pad) {
        size_t k = pad < sizeof zeros ? pad : sizeof zeros;
        int rc = buf_append(b, zeros, k);
        if (rc) return rc;
        pad -= k;
    }
    return 0;
}

int gguf_writer_to_buf(const struct gguf_writer *w, struct buf *out)
{
    int rc = 0;
    /* alignment is relative to the file start; `out` may already hold other bytes */
    if (out->len % w->alignment != 0) {
        log_error("gguf_writer", "reason=\"output buffer offset not aligned\"");
        return SF_EINVAL;
    }
    rc = buf_append(out, GGUF_MAGIC, 4);
    if (!rc) rc = put_u32(out, 3);
    if (!rc) rc = put_u64(out, w->n_tensors);
    if (!rc) rc = put_u64(out, w->n_kv);
    if (!rc && w->kv.len) rc = buf_append(out, w->kv.data, w->kv.len);
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_tensors && !rc; i++) {
        const struct wtensor *t = &w->tensors[i];
        rc = put_str(out, t->name, strlen(t->name));
        if (!rc) rc = put_u32(out, t->ndim);
        for (uint32_t d = 0; d < t->ndim && !rc; d++) rc = put_u64(out, t->dims[d]);
        if (!rc) rc = put_u32(out, t->type);
        if (!rc) rc = put_u64(out, off);
        off += t->nbytes;
        off += (w->alignment - off % w->alignment) % w->alignment;
    }
    if (!rc && w->n_tensors) rc = put_pad(out, w->alignment);
    for (size_t i = 0; i < w->n_tensors && !rc; i++) {
        const struct wtensor *t = &w->tensors[i];
        if (t->nbytes) rc = buf_append(out, t->data, t->nbytes);
        if (!rc) rc = put_pad(out, w->alignment);
    }
    return rc;
}

int gguf_writer_write(const struct gguf_writer *w, const char *path)
{
    struct buf b;
    buf_init(&b, WRITER_MAX);
    int rc = gguf_writer_to_buf(w, &b);
    if (!rc) rc = file_write_atomic(path, b.data, b.len);
    if (rc) log_error("gguf_write_failed", "path=%s err=%s", path, sf_strerror(rc));
    buf_fini(&b);
    return rc;
}

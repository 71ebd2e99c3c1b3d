/* gguf: reader and writer for llama.cpp's GGUF model files (versions 2 and 3).
 *
 * Reading: gguf_open() maps the file read-only and validates all of it up front
 * (header, every metadata value, every tensor info, extents, alignment), so that
 * afterwards every lookup is a plain table access that cannot fail on bad input.
 * gguf_open_mem() does the same on a caller's buffer (fuzzing, tests), which must
 * outlive the struct gguf. Metadata strings are copied (NUL-terminated, with a
 * length since they may hold NULs); numeric arrays are copied into aligned memory;
 * tensor data stays in the mapping.
 *
 *   struct gguf *g;
 *   if (gguf_open(path, &g) != 0) ...;
 *   uint32_t n_embd; gguf_get_u32(g, "llama.embedding_length", &n_embd);
 *   const struct gguf_tensor *t = gguf_find_tensor(g, "token_embd.weight");
 *   gguf_tensor_to_f32(t, out, gguf_tensor_nelem(t));
 *   gguf_close(&g);
 *
 * Tensor dims are in GGUF/ggml order: dims[0] is the innermost (fastest varying)
 * dimension, so a row-major [rows, cols] matrix has dims = {cols, rows}. Tensor data
 * sits at file offsets that are multiples of gguf_alignment() (32 by default), and the
 * mapping is page aligned, so with gguf_open an F32 tensor can be read in place as
 * const float * whenever the alignment is a multiple of 4 (check it); gguf_open_mem
 * gives no such promise (the buffer is the caller's).
 *
 * Writing: struct gguf_writer collects metadata and tensors (F32, F16, BF16 and
 * Q8_0 from float32, or raw bytes of any supported type) and serialises a v3 file.
 *
 * Ownership: struct gguf and everything reached through it belong to the gguf and
 * are freed by gguf_close(); the writer copies everything it is given. */
#ifndef SAEFLOW_MODEL_GGUF_H
#define SAEFLOW_MODEL_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

/* Metadata value types (the numbers are the file's). */
enum gguf_type {
    GGUF_TYPE_UINT8 = 0,
    GGUF_TYPE_INT8 = 1,
    GGUF_TYPE_UINT16 = 2,
    GGUF_TYPE_INT16 = 3,
    GGUF_TYPE_UINT32 = 4,
    GGUF_TYPE_INT32 = 5,
    GGUF_TYPE_FLOAT32 = 6,
    GGUF_TYPE_BOOL = 7,
    GGUF_TYPE_STRING = 8,
    GGUF_TYPE_ARRAY = 9,
    GGUF_TYPE_UINT64 = 10,
    GGUF_TYPE_INT64 = 11,
    GGUF_TYPE_FLOAT64 = 12,
    GGUF_TYPE_COUNT_ = 13,
};

/* ggml tensor types (the numbers are the file's). Sizes are known for all of these,
 * so any of them can be read; gguf_tensor_to_f32 converts F32, F16, BF16, Q8_0. */
enum gguf_ggml_type {
    GGML_TYPE_F32 = 0,
    GGML_TYPE_F16 = 1,
    GGML_TYPE_Q4_0 = 2,
    GGML_TYPE_Q4_1 = 3,
    GGML_TYPE_Q5_0 = 6,
    GGML_TYPE_Q5_1 = 7,
    GGML_TYPE_Q8_0 = 8,
    GGML_TYPE_Q8_1 = 9,
    GGML_TYPE_Q2_K = 10,
    GGML_TYPE_Q3_K = 11,
    GGML_TYPE_Q4_K = 12,
    GGML_TYPE_Q5_K = 13,
    GGML_TYPE_Q6_K = 14,
    GGML_TYPE_Q8_K = 15,
    GGML_TYPE_IQ2_XXS = 16,
    GGML_TYPE_IQ2_XS = 17,
    GGML_TYPE_IQ3_XXS = 18,
    GGML_TYPE_IQ1_S = 19,
    GGML_TYPE_IQ4_NL = 20,
    GGML_TYPE_IQ3_S = 21,
    GGML_TYPE_IQ2_S = 22,
    GGML_TYPE_IQ4_XS = 23,
    GGML_TYPE_I8 = 24,
    GGML_TYPE_I16 = 25,
    GGML_TYPE_I32 = 26,
    GGML_TYPE_I64 = 27,
    GGML_TYPE_F64 = 28,
    GGML_TYPE_IQ1_M = 29,
    GGML_TYPE_BF16 = 30,
    GGML_TYPE_TQ1_0 = 34,
    GGML_TYPE_TQ2_0 = 35,
    GGML_TYPE_MXFP4 = 39,
};

#define GGUF_MAX_DIMS          4
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_QK8_0             32 /* values per Q8_0 block; a block is f16 d + 32 int8 */

/* Validation caps (beyond "must fit in the file"). */
#define GGUF_MAX_KV        65536
#define GGUF_MAX_TENSORS   1048576
#define GGUF_MAX_STRING    (1u << 30)
#define GGUF_MAX_KEY       65535
#define GGUF_MAX_NAME      1024
#define GGUF_MAX_ARR_DEPTH 4

/* A string from the file: s is NUL-terminated, len excludes the NUL (s may hold NULs). */
struct gguf_str {
    const char *s;
    size_t len;
};

/* One metadata value. For arrays, `arr.data` points at n elements of `arr.type`:
 * native scalars (uint8_t ... double, bool as uint8_t 0/1), struct gguf_str for
 * strings, struct gguf_value (each itself an ARRAY) for nested arrays. */
struct gguf_value {
    enum gguf_type type;
    union {
        uint64_t u64; /* UINT8/16/32/64 */
        int64_t i64;  /* INT8/16/32/64 */
        double f64;   /* FLOAT32/64 */
        bool b;
        struct gguf_str str;
        struct {
            enum gguf_type type;
            size_t n;
            const void *data;
        } arr;
    } v;
};

struct gguf_tensor {
    const char *name;
    enum gguf_ggml_type type;
    uint32_t ndim;
    uint64_t dims[GGUF_MAX_DIMS]; /* dims[0] innermost; unused dims are 1 */
    uint64_t offset;              /* from the start of the data section */
    const void *data;             /* inside the mapping, aligned as the file says */
    size_t nbytes;
};

struct gguf;

/* Opens and validates a GGUF file (mmap). 0, or SF_EIO / SF_EFORMAT / SF_EUNSUP /
 * SF_ERANGE / SF_ENOMEM with the reason logged. *out is owned by the caller. */
int gguf_open(const char *path, struct gguf **out);
/* Same on a buffer the caller keeps alive (and unchanged) until gguf_close. */
int gguf_open_mem(const void *buf, size_t len, struct gguf **out);
void gguf_close(struct gguf **g);

uint32_t gguf_version(const struct gguf *g);
size_t gguf_alignment(const struct gguf *g);

/* ---- metadata ---- */
size_t gguf_kv_count(const struct gguf *g);
const char *gguf_kv_key(const struct gguf *g, size_t i);                /* NULL if out of range */
const struct gguf_value *gguf_kv_value(const struct gguf *g, size_t i); /* NULL if out of range */
const struct gguf_value *gguf_find(const struct gguf *g, const char *key); /* NULL if absent */
const char *gguf_type_name(enum gguf_type t);

/* Typed getters: 0, SF_NOTFOUND when the key is absent, SF_EFORMAT when the value has
 * another type or does not fit. Integer getters accept any integer type whose value
 * fits; gguf_get_f32/f64 accept FLOAT32/FLOAT64; bool accepts BOOL only. */
int gguf_get_u32(const struct gguf *g, const char *key, uint32_t *out);
int gguf_get_i32(const struct gguf *g, const char *key, int32_t *out);
int gguf_get_u64(const struct gguf *g, const char *key, uint64_t *out);
int gguf_get_i64(const struct gguf *g, const char *key, int64_t *out);
int gguf_get_f32(const struct gguf *g, const char *key, float *out);
int gguf_get_f64(const struct gguf *g, const char *key, double *out);
int gguf_get_bool(const struct gguf *g, const char *key, bool *out);
/* *out borrows the gguf's NUL-terminated copy; *len may be NULL. */
int gguf_get_str(const struct gguf *g, const char *key, const char **out, size_t *len);
/* Arrays: *type is the element type, *n the count, *data as in struct gguf_value.
 * Any of type/n/data may be NULL. SF_EFORMAT if the value is not an array. */
int gguf_get_arr(const struct gguf *g, const char *key, enum gguf_type *type, size_t *n,
                 const void **data);
/* Element i of a string array. 0, SF_NOTFOUND, or SF_EFORMAT / SF_ERANGE. */
int gguf_get_arr_str(const struct gguf *g, const char *key, size_t i, struct gguf_str *out);

/* ---- tensors ---- */
size_t gguf_tensor_count(const struct gguf *g);
const struct gguf_tensor *gguf_tensor_at(const struct gguf *g, size_t i); /* NULL if out of range */
const struct gguf_tensor *gguf_find_tensor(const struct gguf *g,
                                           const char *name); /* NULL if absent */
uint64_t gguf_tensor_nelem(const struct gguf_tensor *t);
const char *gguf_ggml_type_name(enum gguf_ggml_type t); /* "?" when unknown */
/* Block size (values) and bytes per block; false for an unknown type. */
bool gguf_ggml_type_size(uint32_t type, size_t *block, size_t *block_bytes);
/* Converts the whole tensor to float32; n must equal gguf_tensor_nelem(t) (else
 * SF_EINVAL). SF_EUNSUP for types other than F32, F16, BF16, Q8_0. */
int gguf_tensor_to_f32(const struct gguf_tensor *t, float *out, size_t n);

/* Plain dequantisation of n values (n a multiple of 32) of Q8_0 blocks. */
void gguf_dequant_q8_0(float *out, const void *blocks, size_t n);
/* Quantises n values (n a multiple of 32) to Q8_0 the way llama.cpp does:
 * d = max|x| / 127, q = round(x / d). `out` holds n / 32 * 34 bytes. */
void gguf_quant_q8_0(void *out, const float *x, size_t n);

/* ---- writer ---- */
struct gguf_writer;

struct gguf_writer *gguf_writer_new(void);
void gguf_writer_destroy(struct gguf_writer **w);

/* Each key may be set once (SF_EINVAL on a duplicate). Setting "general.alignment"
 * (u32, a power of two) changes the data alignment of the written file. */
int gguf_writer_set_u32(struct gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_set_i32(struct gguf_writer *w, const char *key, int32_t v);
int gguf_writer_set_u64(struct gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_set_i64(struct gguf_writer *w, const char *key, int64_t v);
int gguf_writer_set_f32(struct gguf_writer *w, const char *key, float v);
int gguf_writer_set_f64(struct gguf_writer *w, const char *key, double v);
int gguf_writer_set_bool(struct gguf_writer *w, const char *key, bool v);
int gguf_writer_set_str(struct gguf_writer *w, const char *key, const char *s);
int gguf_writer_set_strn(struct gguf_writer *w, const char *key, const char *s, size_t len);
/* Numeric array: `data` holds n native values of `type` (bool as uint8_t). */
int gguf_writer_set_arr(struct gguf_writer *w, const char *key, enum gguf_type type,
                        const void *data, size_t n);
/* String array; lens may be NULL (then each string is NUL-terminated). */
int gguf_writer_set_arr_str(struct gguf_writer *w, const char *key, const char *const *strs,
                            const size_t *lens, size_t n);
/* Adds a raw value in the file's encoding (already serialised: type u32 excluded),
 * for tests that need nested arrays or odd values. */
int gguf_writer_set_raw(struct gguf_writer *w, const char *key, enum gguf_type type,
                        const void *bytes, size_t len);

/* Adds a tensor converted from float32 to `type` (F32, F16, BF16 or Q8_0).
 * dims in GGUF order (dims[0] innermost), n = product of dims. */
int gguf_writer_add_tensor_f32(struct gguf_writer *w, const char *name, enum gguf_ggml_type type,
                               uint32_t ndim, const uint64_t *dims, const float *x);
/* Adds a tensor from raw bytes of any type with a known size; nbytes must match. */
int gguf_writer_add_tensor_raw(struct gguf_writer *w, const char *name, enum gguf_ggml_type type,
                               uint32_t ndim, const uint64_t *dims, const void *data,
                               size_t nbytes);

/* Serialises into `out` (appended). */
int gguf_writer_to_buf(const struct gguf_writer *w, struct buf *out);
/* Writes the file atomically. */
int gguf_writer_write(const struct gguf_writer *w, const char *path);

#endif

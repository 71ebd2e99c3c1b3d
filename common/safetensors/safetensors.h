/* safetensors: read and write Hugging Face .safetensors files.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON
 *   {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...,
 *    "__metadata__": {"<key>": "<string>"}}
 * then the raw little-endian C-contiguous tensor bytes; offsets are relative to the
 * end of the header.
 *
 * Reading: safetensors_open() maps the file read-only; safetensors_open_mem() parses
 * a caller's buffer without copying it (the buffer must outlive the handle). Every
 * header is validated in full (lengths, JSON types, dtypes, shapes, offsets in range,
 * no overlap, shape product * dtype size == e - b, string-only metadata); a bad file
 * returns SF_EFORMAT (or SF_ERANGE / SF_EUNSUP) with one log line saying why.
 * Tensors and names returned by the reader are borrowed from the handle and valid
 * until safetensors_close().
 *
 * Writing: st_writer_new(), add tensors (their data is borrowed until
 * st_writer_write() returns), add metadata, st_writer_write(path) streams the file to
 * a temporary file beside `path`, fsyncs it and renames it into place. Like the
 * Hugging Face writer, tensors are laid out by decreasing dtype size (then insertion
 * order) so every tensor's data is aligned to its element size, and the header is
 * padded with spaces to a multiple of 8 bytes. The header lists __metadata__ first,
 * then tensors in data order. */
#ifndef SAEFLOW_SAFETENSORS_H
#define SAEFLOW_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS   8
#define ST_MAX_HEADER (100u * 1024u * 1024u) /* header JSON cap, bytes */

enum st_dtype {
    ST_BOOL = 0,
    ST_U8,
    ST_I8,
    ST_F8_E4M3,
    ST_F8_E5M2,
    ST_I16,
    ST_U16,
    ST_F16,
    ST_BF16,
    ST_I32,
    ST_U32,
    ST_F32,
    ST_I64,
    ST_U64,
    ST_F64,
    ST_DTYPE_COUNT
};

/* "F32", "BF16", ... as in the file; NULL for an invalid value. */
const char *safetensors_dtype_name(enum st_dtype dtype);
/* Bytes per element; 0 for an invalid value. */
size_t safetensors_dtype_size(enum st_dtype dtype);
/* Parses a dtype name (case-sensitive, as in the file): 0 or SF_EUNSUP. */
int safetensors_dtype_parse(const char *name, enum st_dtype *out);

/* One tensor of an open file. `data` points into the file (read-only); it is aligned
 * to the element size when the file was written as Hugging Face does (always for our
 * writer), but a reader that needs aligned access should check, or use
 * safetensors_tensor_to_f32(). */
struct st_tensor {
    const char *name;
    enum st_dtype dtype;
    size_t ndim;                /* 0 = scalar */
    int64_t shape[ST_MAX_DIMS]; /* shape[0..ndim) */
    size_t numel;               /* product of shape (1 for a scalar) */
    const void *data;
    size_t nbytes;   /* numel * dtype size */
    uint64_t offset; /* data_offsets[0], relative to the data section */
};

struct safetensors;

/* Opens and validates a file (mmap, read-only). 0, or SF_EIO / SF_EFORMAT /
 * SF_ERANGE / SF_EUNSUP / SF_ENOMEM. Close with safetensors_close(). */
int safetensors_open(const char *path, struct safetensors **out);
/* Same on a caller's buffer, without copying; `buf` must stay valid and unchanged
 * until safetensors_close(). */
int safetensors_open_mem(const void *buf, size_t len, struct safetensors **out);
/* NULL-safe; nulls the pointer; unmaps the file. */
void safetensors_close(struct safetensors **st);

/* Tensors, in data-offset order: i in [0, safetensors_count()). */
size_t safetensors_count(const struct safetensors *st);
const struct st_tensor *safetensors_at(const struct safetensors *st, size_t i);
/* NULL when there is no tensor of that name. */
const struct st_tensor *safetensors_find(const struct safetensors *st, const char *name);

/* Converts a tensor of any numeric dtype (F64/F32/F16/BF16, integers, BOOL; not F8)
 * to float32. `n` must equal the tensor's numel (else SF_EINVAL). */
int safetensors_tensor_to_f32(const struct st_tensor *t, float *out, size_t n);
/* The same by name: SF_NOTFOUND (positive, logged at debug only) when absent. */
int safetensors_read_f32(const struct safetensors *st, const char *name, float *out, size_t n);

/* __metadata__: the value for `key`, or NULL. Borrowed from the handle. */
const char *safetensors_metadata(const struct safetensors *st, const char *key);
size_t safetensors_metadata_count(const struct safetensors *st);
/* The i-th entry in header order; 0 or SF_ERANGE. */
int safetensors_metadata_at(const struct safetensors *st, size_t i, const char **key,
                            const char **value);

/* ---- writer ---- */
struct st_writer;

struct st_writer *st_writer_new(void);
void st_writer_destroy(struct st_writer **w);
/* Adds a tensor whose bytes are already in `dtype`'s little-endian layout; `data` is
 * borrowed until st_writer_write() returns. Names must be unique and non-empty, and
 * not "__metadata__". ndim <= ST_MAX_DIMS; dims >= 0. */
int st_writer_add(struct st_writer *w, const char *name, enum st_dtype dtype, const int64_t *shape,
                  size_t ndim, const void *data);
/* Adds float32 data stored as `dtype` (F32, F16 or BF16; converted with round to
 * nearest even while writing). `data` is borrowed until st_writer_write() returns. */
int st_writer_add_f32(struct st_writer *w, const char *name, enum st_dtype dtype,
                      const int64_t *shape, size_t ndim, const float *data);
/* Sets a __metadata__ entry (copied; a repeated key replaces the value). */
int st_writer_set_metadata(struct st_writer *w, const char *key, const char *value);
/* Writes the file atomically (temporary file, fsync, rename, fsync of the directory).
 * May be called more than once. */
int st_writer_write(struct st_writer *w, const char *path);

#endif

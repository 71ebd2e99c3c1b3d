/* Tests for gguf: reading stories260K.gguf against the llama2.c .bin weights, writer
 * round trips (every metadata type, F32/F16/BF16/Q8_0 tensors, a hand-built Q8_0
 * block), and rejection of malformed files. */
#include "core/core.h"
#include "model/gguf.h"

#include "../../support/check.h"

#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* ---- little builders for hand-made files ---- */

static void p32(struct buf *b, uint32_t v)
{
    buf_append(b, &v, 4);
}
static void p64(struct buf *b, uint64_t v)
{
    buf_append(b, &v, 8);
}
static void pstr(struct buf *b, const char *s)
{
    p64(b, strlen(s));
    buf_append(b, s, strlen(s));
}
static void ppad(struct buf *b, size_t a)
{
    while (b->len % a) buf_putc(b, 0);
}

static int open_buf(const struct buf *b, struct gguf **g)
{
    return gguf_open_mem(b->data, b->len, g);
}

/* ---- stories260K.gguf ---- */

static void test_stories(const char *models)
{
    char path[1024], binpath[1024];
    snprintf(path, sizeof path, "%s/stories260K/stories260K.gguf", models);
    snprintf(binpath, sizeof binpath, "%s/stories260K/stories260K.bin", models);
    if (access(path, R_OK) != 0) {
        printf("skip stories260K.gguf: %s absent\n", path);
        return;
    }
    struct gguf *g = NULL;
    CHECK_EQ_INT(gguf_open(path, &g), 0);
    if (!g) return;
    CHECK_EQ_INT(gguf_version(g), 3);
    CHECK_EQ_INT(gguf_kv_count(g), 19);
    CHECK_EQ_INT(gguf_tensor_count(g), 48);
    CHECK_EQ_INT(gguf_alignment(g), 32);

    uint32_t u = 0;
    CHECK(gguf_get_u32(g, "llama.embedding_length", &u) == 0 && u == 64);
    CHECK(gguf_get_u32(g, "llama.block_count", &u) == 0 && u == 5);
    CHECK(gguf_get_u32(g, "llama.feed_forward_length", &u) == 0 && u == 172);
    CHECK(gguf_get_u32(g, "llama.attention.head_count", &u) == 0 && u == 8);
    CHECK(gguf_get_u32(g, "llama.attention.head_count_kv", &u) == 0 && u == 4);
    CHECK(gguf_get_u32(g, "llama.context_length", &u) == 0 && u == 512);
    CHECK(gguf_get_u32(g, "llama.rope.dimension_count", &u) == 0 && u == 8);
    CHECK(gguf_get_u32(g, "tokenizer.ggml.bos_token_id", &u) == 0 && u == 1);
    CHECK(gguf_get_u32(g, "tokenizer.ggml.eos_token_id", &u) == 0 && u == 2);
    int64_t i64 = 0;
    CHECK(gguf_get_i64(g, "llama.block_count", &i64) == 0 && i64 == 5);
    int32_t i32 = 0;
    /* 0xffffffff does not fit an int32 */
    CHECK_EQ_INT(gguf_get_i32(g, "tokenizer.ggml.padding_token_id", &i32), SF_EFORMAT);
    float eps = 0;
    CHECK(gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps) == 0);
    CHECK_NEAR(eps, 1e-5, 1e-12, 0);
    const char *s = NULL;
    CHECK(gguf_get_str(g, "tokenizer.ggml.model", &s, NULL) == 0 && strcmp(s, "llama") == 0);
    CHECK(gguf_get_str(g, "general.architecture", &s, NULL) == 0 && strcmp(s, "llama") == 0);
    CHECK_EQ_INT(gguf_get_str(g, "llama.block_count", &s, NULL), SF_EFORMAT);
    CHECK_EQ_INT(gguf_get_u32(g, "general.architecture", &u), SF_EFORMAT);
    CHECK_EQ_INT(gguf_get_u32(g, "no.such.key", &u), SF_NOTFOUND);
    CHECK(gguf_find(g, "no.such.key") == NULL);

    enum gguf_type et;
    size_t n = 0;
    const void *data = NULL;
    CHECK(gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &data) == 0);
    CHECK(et == GGUF_TYPE_STRING && n == 512);
    struct gguf_str tok;
    CHECK(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 0, &tok) == 0 &&
          strcmp(tok.s, "<unk>") == 0);
    CHECK(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 3, &tok) == 0 &&
          strcmp(tok.s, "<0x00>") == 0 && tok.len == 6);
    CHECK_EQ_INT(gguf_get_arr_str(g, "tokenizer.ggml.tokens", 512, &tok), SF_ERANGE);
    CHECK_EQ_INT(gguf_get_arr_str(g, "tokenizer.ggml.scores", 0, &tok), SF_EFORMAT);
    CHECK(gguf_get_arr(g, "tokenizer.ggml.scores", &et, &n, &data) == 0);
    CHECK(et == GGUF_TYPE_FLOAT32 && n == 512);
    CHECK(gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &data) == 0);
    CHECK(et == GGUF_TYPE_INT32 && n == 512 && ((const int32_t *)data)[0] == 2 &&
          ((const int32_t *)data)[3] == 6);

    const struct gguf_tensor *te = gguf_find_tensor(g, "token_embd.weight");
    const struct gguf_tensor *tq = gguf_find_tensor(g, "blk.0.attn_q.weight");
    const struct gguf_tensor *tk = gguf_find_tensor(g, "blk.0.attn_k.weight");
    CHECK(te && tq && tk);
    CHECK(gguf_find_tensor(g, "nope") == NULL);
    if (!te || !tq || !tk) goto out;
    CHECK(te->type == GGML_TYPE_F32 && te->ndim == 2 && te->dims[0] == 64 && te->dims[1] == 512);
    CHECK(te->nbytes == 64 * 512 * 4);
    CHECK(tk->dims[0] == 64 && tk->dims[1] == 32);
    CHECK(((uintptr_t)te->data % 32) == 0);
    for (size_t i = 0; i < gguf_tensor_count(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        CHECK(t && gguf_find_tensor(g, t->name) == t);
    }
    CHECK(gguf_tensor_at(g, 48) == NULL);

    /* dequantise and compare with the same weights in the llama2.c file */
    char *bin = NULL;
    size_t binlen = 0;
    if (file_read_all(binpath, 1 << 24, &bin, &binlen) != 0) {
        printf("skip .bin comparison: %s unreadable\n", binpath);
        goto out;
    }
    float *emb = malloc(64 * 512 * sizeof(float));
    float *wq = malloc(64 * 64 * sizeof(float));
    CHECK_EQ_INT(gguf_tensor_to_f32(te, emb, 64 * 512), 0);
    CHECK_EQ_INT(gguf_tensor_to_f32(te, emb, 64 * 512 - 1), SF_EINVAL);
    CHECK_EQ_INT(gguf_tensor_to_f32(tq, wq, 64 * 64), 0);
    size_t off_emb = 28, off_wq = 28 + (512 * 64 + 5 * 64) * 4;
    CHECK(binlen > off_wq + 64 * 64 * 4);
    CHECK(memcmp(emb, bin + off_emb, 64 * 512 * 4) == 0);
    /* llama.cpp's converter permutes Q rows for its RoPE layout; compare as a multiset of
     * rows: each GGUF row must equal some .bin row. */
    size_t matched = 0;
    for (size_t r = 0; r < 64; r++) {
        for (size_t r2 = 0; r2 < 64; r2++) {
            if (memcmp(wq + r * 64, bin + off_wq + r2 * 64 * 4, 64 * 4) == 0) {
                matched++;
                break;
            }
        }
    }
    CHECK_EQ_INT(matched, 64);
    free(emb);
    free(wq);
    free(bin);
out:
    gguf_close(&g);
    CHECK(g == NULL);
    gguf_close(&g); /* NULL-safe */
}

/* ---- writer round trip ---- */

/* llama.cpp-style Q8_0 reference written out here independently of gguf.c */
static void ref_dequant_q8_0(float *out, const uint8_t *blk, size_t nblocks)
{
    for (size_t b = 0; b < nblocks; b++) {
        const uint8_t *p = blk + b * 34;
        uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
        float d = f16_to_f32(h);
        for (int j = 0; j < 32; j++) out[b * 32 + j] = d * (float)(int8_t)p[2 + j];
    }
}

static void test_writer(void)
{
    struct gguf_writer *w = gguf_writer_new();
    CHECK(w != NULL);
    CHECK_EQ_INT(gguf_writer_set_str(w, "general.architecture", "llama"), 0);
    CHECK_EQ_INT(gguf_writer_set_str(w, "general.architecture", "x"), SF_EINVAL);
    CHECK_EQ_INT(gguf_writer_set_u32(w, "a.u32", 4000000000u), 0);
    CHECK_EQ_INT(gguf_writer_set_i32(w, "a.i32", -7), 0);
    CHECK_EQ_INT(gguf_writer_set_u64(w, "a.u64", UINT64_MAX), 0);
    CHECK_EQ_INT(gguf_writer_set_i64(w, "a.i64", INT64_MIN), 0);
    CHECK_EQ_INT(gguf_writer_set_f32(w, "a.f32", 0.25f), 0);
    CHECK_EQ_INT(gguf_writer_set_f64(w, "a.f64", -1.5e300), 0);
    CHECK_EQ_INT(gguf_writer_set_bool(w, "a.bool", true), 0);
    CHECK_EQ_INT(gguf_writer_set_strn(w, "a.nul", "a\0b", 3), 0);
    CHECK_EQ_INT(gguf_writer_set_u32(w, "general.alignment", 3), SF_EINVAL);
    CHECK_EQ_INT(gguf_writer_set_u32(w, "general.alignment", 64), 0);
    const float fa[3] = {1.0f, -2.5f, 3.0f};
    CHECK_EQ_INT(gguf_writer_set_arr(w, "arr.f32", GGUF_TYPE_FLOAT32, fa, 3), 0);
    const int16_t ia[2] = {-300, 300};
    CHECK_EQ_INT(gguf_writer_set_arr(w, "arr.i16", GGUF_TYPE_INT16, ia, 2), 0);
    CHECK_EQ_INT(gguf_writer_set_arr(w, "arr.empty", GGUF_TYPE_UINT8, NULL, 0), 0);
    CHECK_EQ_INT(gguf_writer_set_arr(w, "arr.bad", GGUF_TYPE_STRING, fa, 1), SF_EINVAL);
    const char *strs[3] = {"x", "", "h\xc3\xa9llo"};
    CHECK_EQ_INT(gguf_writer_set_arr_str(w, "arr.str", strs, NULL, 3), 0);
    /* nested: array of 2 arrays: [u8: 1,2] and [str: "q"] */
    struct buf nb;
    buf_init(&nb, 1 << 20);
    p32(&nb, GGUF_TYPE_ARRAY);
    p64(&nb, 2);
    p32(&nb, GGUF_TYPE_UINT8);
    p64(&nb, 2);
    buf_putc(&nb, 1);
    buf_putc(&nb, 2);
    p32(&nb, GGUF_TYPE_STRING);
    p64(&nb, 1);
    pstr(&nb, "q");
    CHECK_EQ_INT(gguf_writer_set_raw(w, "arr.nested", GGUF_TYPE_ARRAY, nb.data, nb.len), 0);
    buf_fini(&nb);

    /* tensors */
    float f32v[6] = {0.1f, -0.2f, 0.3f, 1e-3f, 65504.0f, -7.0f};
    const uint64_t d23[2] = {3, 2};
    CHECK_EQ_INT(gguf_writer_add_tensor_f32(w, "t.f32", GGML_TYPE_F32, 2, d23, f32v), 0);
    CHECK_EQ_INT(gguf_writer_add_tensor_f32(w, "t.f32", GGML_TYPE_F32, 2, d23, f32v), SF_EINVAL);
    CHECK_EQ_INT(gguf_writer_add_tensor_f32(w, "t.f16", GGML_TYPE_F16, 2, d23, f32v), 0);
    CHECK_EQ_INT(gguf_writer_add_tensor_f32(w, "t.bf16", GGML_TYPE_BF16, 2, d23, f32v), 0);
    CHECK_EQ_INT(gguf_writer_add_tensor_f32(w, "t.q4", GGML_TYPE_Q4_0, 2, d23, f32v), SF_EUNSUP);
    CHECK_EQ_INT(gguf_writer_add_tensor_f32(w, "t.bad", GGML_TYPE_Q8_0, 2, d23, f32v), SF_EINVAL);
    float qx[64];
    struct rng r;
    rng_seed(&r, 7);
    for (int i = 0; i < 64; i++) qx[i] = rng_normal(&r);
    const uint64_t d64[1] = {64};
    CHECK_EQ_INT(gguf_writer_add_tensor_f32(w, "t.q8", GGML_TYPE_Q8_0, 1, d64, qx), 0);
    /* a Q8_0 block built by hand: d = 0.5 (f16 0x3800), q = -128..127 step 8 */
    uint8_t blk[34];
    blk[0] = 0x00;
    blk[1] = 0x38;
    for (int j = 0; j < 32; j++) blk[2 + j] = (uint8_t)(int8_t)(-128 + 8 * j);
    const uint64_t d32[1] = {32};
    CHECK_EQ_INT(gguf_writer_add_tensor_raw(w, "t.q8hand", GGML_TYPE_Q8_0, 1, d32, blk, 34), 0);
    CHECK_EQ_INT(gguf_writer_add_tensor_raw(w, "t.q8short", GGML_TYPE_Q8_0, 1, d32, blk, 33),
                 SF_EINVAL);
    uint8_t q4[18] = {0};
    CHECK_EQ_INT(gguf_writer_add_tensor_raw(w, "t.q4", GGML_TYPE_Q4_0, 1, d32, q4, 18), 0);
    const uint64_t d4[4] = {2, 1, 1, 2};
    CHECK_EQ_INT(gguf_writer_add_tensor_f32(w, "t.4d", GGML_TYPE_F32, 4, d4, f32v), 0);

    struct buf out;
    buf_init(&out, 1 << 24);
    CHECK_EQ_INT(gguf_writer_to_buf(w, &out), 0);

    /* also through a real file and mmap */
    char dir[] = "/tmp/test_gguf_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/w.gguf", dir);
    CHECK_EQ_INT(gguf_writer_write(w, path), 0);
    gguf_writer_destroy(&w);
    CHECK(w == NULL);

    char *fdata = NULL;
    size_t flen = 0;
    CHECK_EQ_INT(file_read_all(path, 1 << 24, &fdata, &flen), 0);
    CHECK(flen == out.len && fdata && memcmp(fdata, out.data, flen) == 0);
    free(fdata);

    for (int pass = 0; pass < 2; pass++) {
        struct gguf *g = NULL;
        int rc = pass == 0 ? open_buf(&out, &g) : gguf_open(path, &g);
        CHECK_EQ_INT(rc, 0);
        if (!g) continue;
        CHECK_EQ_INT(gguf_kv_count(g), 15);
        CHECK_EQ_INT(gguf_alignment(g), 64);
        uint32_t u;
        int32_t i;
        uint64_t u64;
        int64_t i64;
        float f;
        double d;
        bool b;
        const char *s;
        size_t len;
        CHECK(gguf_get_u32(g, "a.u32", &u) == 0 && u == 4000000000u);
        CHECK_EQ_INT(gguf_get_i32(g, "a.u32", &i), SF_EFORMAT);
        CHECK(gguf_get_i32(g, "a.i32", &i) == 0 && i == -7);
        CHECK_EQ_INT(gguf_get_u32(g, "a.i32", &u), SF_EFORMAT);
        CHECK(gguf_get_i64(g, "a.i32", &i64) == 0 && i64 == -7);
        CHECK(gguf_get_u64(g, "a.u64", &u64) == 0 && u64 == UINT64_MAX);
        CHECK_EQ_INT(gguf_get_i64(g, "a.u64", &i64), SF_EFORMAT);
        CHECK(gguf_get_i64(g, "a.i64", &i64) == 0 && i64 == INT64_MIN);
        CHECK(gguf_get_f32(g, "a.f32", &f) == 0 && f == 0.25f);
        CHECK(gguf_get_f64(g, "a.f64", &d) == 0 && d == -1.5e300);
        CHECK(gguf_get_bool(g, "a.bool", &b) == 0 && b);
        CHECK_EQ_INT(gguf_get_bool(g, "a.u32", &b), SF_EFORMAT);
        CHECK(gguf_get_str(g, "a.nul", &s, &len) == 0 && len == 3 && memcmp(s, "a\0b", 4) == 0);
        enum gguf_type et;
        size_t n;
        const void *data;
        CHECK(gguf_get_arr(g, "arr.f32", &et, &n, &data) == 0 && et == GGUF_TYPE_FLOAT32 &&
              n == 3 && memcmp(data, fa, sizeof fa) == 0);
        CHECK(gguf_get_arr(g, "arr.i16", &et, &n, &data) == 0 && et == GGUF_TYPE_INT16 && n == 2 &&
              memcmp(data, ia, sizeof ia) == 0);
        CHECK(gguf_get_arr(g, "arr.empty", &et, &n, NULL) == 0 && et == GGUF_TYPE_UINT8 && n == 0);
        CHECK_EQ_INT(gguf_get_arr(g, "a.u32", &et, &n, &data), SF_EFORMAT);
        struct gguf_str gs;
        CHECK(gguf_get_arr_str(g, "arr.str", 2, &gs) == 0 && strcmp(gs.s, "h\xc3\xa9llo") == 0);
        CHECK(gguf_get_arr_str(g, "arr.str", 1, &gs) == 0 && gs.len == 0 && gs.s[0] == 0);
        const struct gguf_value *nv = gguf_find(g, "arr.nested");
        CHECK(nv && nv->type == GGUF_TYPE_ARRAY && nv->v.arr.type == GGUF_TYPE_ARRAY &&
              nv->v.arr.n == 2);
        if (nv && nv->v.arr.n == 2) {
            const struct gguf_value *sub = nv->v.arr.data;
            CHECK(sub[0].v.arr.type == GGUF_TYPE_UINT8 && sub[0].v.arr.n == 2 &&
                  ((const uint8_t *)sub[0].v.arr.data)[1] == 2);
            CHECK(sub[1].v.arr.type == GGUF_TYPE_STRING && sub[1].v.arr.n == 1 &&
                  strcmp(((const struct gguf_str *)sub[1].v.arr.data)[0].s, "q") == 0);
        }
        /* keys come back in file order */
        CHECK(strcmp(gguf_kv_key(g, 0), "general.architecture") == 0);
        CHECK(gguf_kv_key(g, 15) == NULL && gguf_kv_value(g, 15) == NULL);

        CHECK_EQ_INT(gguf_tensor_count(g), 7);
        float o[64], ref[64];
        const struct gguf_tensor *t = gguf_find_tensor(g, "t.f32");
        CHECK(t && gguf_tensor_to_f32(t, o, 6) == 0 && memcmp(o, f32v, sizeof f32v) == 0);
        CHECK(t && t->dims[0] == 3 && t->dims[1] == 2 && t->dims[2] == 1 && t->ndim == 2);
        t = gguf_find_tensor(g, "t.f16");
        CHECK(t && t->nbytes == 12 && gguf_tensor_to_f32(t, o, 6) == 0);
        for (int k = 0; k < 6; k++) CHECK(o[k] == f16_to_f32(f32_to_f16(f32v[k])));
        CHECK_NEAR(o[0], 0.1, 1e-4, 0);
        CHECK(o[4] == 65504.0f && o[5] == -7.0f);
        t = gguf_find_tensor(g, "t.bf16");
        CHECK(t && gguf_tensor_to_f32(t, o, 6) == 0);
        for (int k = 0; k < 6; k++) CHECK(o[k] == bf16_to_f32(f32_to_bf16(f32v[k])));
        t = gguf_find_tensor(g, "t.q8");
        CHECK(t && t->nbytes == 68 && gguf_tensor_to_f32(t, o, 64) == 0);
        if (t) ref_dequant_q8_0(ref, t->data, 2);
        for (int k = 0; k < 64; k++) {
            CHECK(o[k] == ref[k]);
            CHECK_NEAR(o[k], qx[k], 0.02, 0); /* |x| < ~3.5 -> step < 0.028 */
        }
        t = gguf_find_tensor(g, "t.q8hand");
        CHECK(t && gguf_tensor_to_f32(t, o, 32) == 0);
        for (int k = 0; k < 32; k++) CHECK(o[k] == 0.5f * (float)(-128 + 8 * k));
        t = gguf_find_tensor(g, "t.q4");
        CHECK(t && t->nbytes == 18 && gguf_tensor_to_f32(t, o, 32) == SF_EUNSUP);
        t = gguf_find_tensor(g, "t.4d");
        CHECK(t && t->ndim == 4 && gguf_tensor_nelem(t) == 4 && t->dims[3] == 2);
        for (size_t k = 0; k < gguf_tensor_count(g); k++) {
            const struct gguf_tensor *tt = gguf_tensor_at(g, k);
            CHECK(tt->offset % 64 == 0);
            if (pass == 1) CHECK((uintptr_t)tt->data % 64 == 0);
        }
        gguf_close(&g);
    }
    unlink(path);
    rmdir(dir);

    /* every strict prefix of a valid file is rejected, except those that only drop
     * the padding after the last tensor (t.4d: 16 bytes padded to 64) */
    size_t bad = 0;
    for (size_t k = 0; k < out.len; k++) {
        struct gguf *g = NULL;
        int rc = gguf_open_mem(out.data, k, &g);
        if ((rc == 0) != (k >= out.len - 48)) bad++;
        gguf_close(&g);
    }
    CHECK_EQ_INT(bad, 0);

    /* random byte flips never crash (the fuzzer does this harder) */
    char *mut = malloc(out.len);
    rng_seed(&r, 11);
    for (int it = 0; it < 3000; it++) {
        memcpy(mut, out.data, out.len);
        int flips = 1 + (int)rng_below(&r, 4);
        for (int k = 0; k < flips; k++) mut[rng_below(&r, out.len)] = (char)rng_u64(&r);
        struct gguf *g = NULL;
        if (gguf_open_mem(mut, out.len, &g) == 0) {
            for (size_t k = 0; k < gguf_tensor_count(g); k++) {
                const struct gguf_tensor *tt = gguf_tensor_at(g, k);
                CHECK((const char *)tt->data >= mut &&
                      (const char *)tt->data + tt->nbytes <= mut + out.len);
            }
            gguf_close(&g);
        }
    }
    free(mut);
    buf_fini(&out);
}

static void test_q8_quant(void)
{
    /* quantise -> dequantise error bound, and exact zeros */
    float x[96], y[96];
    uint8_t q[3 * 34];
    struct rng r;
    rng_seed(&r, 3);
    for (int i = 0; i < 96; i++) x[i] = i < 32 ? 0.0f : 10.0f * rng_normal(&r);
    gguf_quant_q8_0(q, x, 96);
    gguf_dequant_q8_0(y, q, 96);
    for (int b = 0; b < 3; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = SF_MAX(amax, fabsf(x[b * 32 + j]));
        for (int j = 0; j < 32; j++) {
            int i = b * 32 + j;
            /* half a step plus the f16 rounding of d */
            CHECK_NEAR(y[i], x[i], amax / 127.0f * 0.5f + amax * 1e-3f, 0);
        }
    }
    for (int i = 0; i < 32; i++) CHECK(y[i] == 0.0f);
}

/* ---- malformed inputs ---- */

enum {
    M_OK,
    M_MAGIC,
    M_V1,
    M_V4,
    M_BE,
    M_NKV,
    M_NT,
    M_KEYLEN,
    M_VTYPE,
    M_STRLEN,
    M_ARRLEN,
    M_ARRTYPE,
    M_DEPTH,
    M_BOOL,
    M_DUPKEY,
    M_ALIGN3,
    M_ALIGNTYPE,
    M_NDIM0,
    M_NDIM5,
    M_OVERFLOW,
    M_TTYPE,
    M_BLOCK,
    M_MISALIGN,
    M_OUTOFRANGE,
    M_OVERLAP,
    M_DUPT,
    M_NAMELEN,
    M_TRUNC_DATA,
    M_COUNT
};

static const char *const m_names[M_COUNT] = {
    "ok",     "magic",    "v1",         "v4",      "big-endian", "nkv",      "ntensors",
    "keylen", "vtype",    "strlen",     "arrlen",  "arrtype",    "depth",    "bool",
    "dupkey", "align3",   "aligntype",  "ndim0",   "ndim5",      "overflow", "ttype",
    "block",  "misalign", "outofrange", "overlap", "duptensor",  "namelen",  "truncdata",
};

/* A file with 3 KVs and 2 F32 tensors [8] and [8], with one defect. */
static void make_case(struct buf *b, int m)
{
    buf_reset(b);
    buf_append(b, m == M_MAGIC ? "GGUG" : "GGUF", 4);
    p32(b, m == M_V1 ? 1 : m == M_V4 ? 4 : m == M_BE ? 0x03000000 : 3);
    p64(b, m == M_NT ? (uint64_t)1 << 40 : 2);
    p64(b, m == M_NKV ? 100000 : 3);
    /* kv 1: string */
    if (m == M_KEYLEN) {
        p64(b, (uint64_t)1 << 62);
    } else {
        pstr(b, "general.name");
    }
    p32(b, m == M_VTYPE ? 13 : GGUF_TYPE_STRING);
    if (m == M_STRLEN)
        p64(b, 1000);
    else
        pstr(b, "tiny");
    /* kv 2: array */
    pstr(b, m == M_DUPKEY ? "general.name" : "arr");
    p32(b, GGUF_TYPE_ARRAY);
    if (m == M_DEPTH) {
        for (int k = 0; k < 5; k++) {
            p32(b, GGUF_TYPE_ARRAY);
            p64(b, 1);
        }
        p32(b, GGUF_TYPE_UINT8);
        p64(b, 1);
        buf_putc(b, 1);
    } else if (m == M_BOOL) {
        p32(b, GGUF_TYPE_BOOL);
        p64(b, 2);
        buf_putc(b, 1);
        buf_putc(b, 2);
    } else {
        p32(b, m == M_ARRTYPE ? 99 : GGUF_TYPE_UINT32);
        p64(b, m == M_ARRLEN ? ((uint64_t)1 << 61) : 2);
        p32(b, 5);
        p32(b, 6);
    }
    /* kv 3: alignment */
    pstr(b, "general.alignment");
    if (m == M_ALIGNTYPE) {
        p32(b, GGUF_TYPE_UINT64);
        p64(b, 32);
    } else {
        p32(b, GGUF_TYPE_UINT32);
        p32(b, m == M_ALIGN3 ? 3 : 32);
    }
    /* tensor a */
    if (m == M_NAMELEN) {
        p64(b, 5000);
        for (int k = 0; k < 5000; k++) buf_putc(b, 'n');
    } else {
        pstr(b, "a");
    }
    p32(b, m == M_NDIM0 ? 0 : m == M_NDIM5 ? 5 : 1);
    p64(b, 8);
    if (m == M_NDIM5)
        for (int k = 0; k < 4; k++) p64(b, 1);
    p32(b, m == M_TTYPE ? 31 : m == M_BLOCK ? GGML_TYPE_Q8_0 : GGML_TYPE_F32);
    p64(b, 0);
    /* tensor b */
    pstr(b, m == M_DUPT ? "a" : "b");
    if (m == M_OVERFLOW) {
        p32(b, 3);
        p64(b, (uint64_t)1 << 32);
        p64(b, (uint64_t)1 << 32);
        p64(b, 8);
    } else {
        p32(b, 1);
        p64(b, 8);
    }
    p32(b, GGML_TYPE_F32);
    p64(b, m == M_MISALIGN ? 36 : m == M_OUTOFRANGE ? 64 : m == M_OVERLAP ? 0 : 32);
    ppad(b, 32);
    for (int k = 0; k < (m == M_TRUNC_DATA ? 60 : 64); k++) buf_putc(b, (char)k);
}

static void test_malformed(void)
{
    struct buf b;
    buf_init(&b, 1 << 20);
    for (int m = 0; m < M_COUNT; m++) {
        make_case(&b, m);
        struct gguf *g = NULL;
        int rc = open_buf(&b, &g);
        if (m == M_OK) {
            CHECK_MSG(rc == 0, "valid case rejected: %d", rc);
            if (g) {
                CHECK_EQ_INT(gguf_tensor_count(g), 2);
                const struct gguf_tensor *t = gguf_find_tensor(g, "b");
                float o[8];
                CHECK(t && gguf_tensor_to_f32(t, o, 8) == 0);
            }
        } else {
            CHECK_MSG(rc < 0 && g == NULL, "case %s accepted (rc=%d)", m_names[m], rc);
            if (m == M_V1 || m == M_BE) CHECK_EQ_INT(rc, SF_EUNSUP);
        }
        gguf_close(&g);
    }
    /* empty and tiny inputs */
    struct gguf *g = NULL;
    CHECK(gguf_open_mem("", 0, &g) < 0 && g == NULL);
    CHECK(gguf_open_mem("GGUF", 4, &g) < 0);
    CHECK_EQ_INT(gguf_open("/nonexistent/x.gguf", &g), SF_EIO);
    CHECK_EQ_INT(gguf_open("/tmp", &g), SF_EIO);
    buf_fini(&b);

    /* a file with no tensors may end right after its metadata (vocab-only files do) */
    buf_init(&b, 1 << 20);
    buf_append(&b, "GGUF", 4);
    p32(&b, 2);
    p64(&b, 0);
    p64(&b, 1);
    pstr(&b, "k");
    p32(&b, GGUF_TYPE_INT8);
    buf_putc(&b, (char)-5);
    CHECK_EQ_INT(open_buf(&b, &g), 0);
    int64_t v = 0;
    CHECK(g && gguf_get_i64(g, "k", &v) == 0 && v == -5 && gguf_version(g) == 2);
    gguf_close(&g);
    buf_fini(&b);
}

int main(void)
{
    if (!getenv("TEST_LOG")) log_set_level(LOG_OFF);
    const char *models = test_models_dir();
    test_writer();
    test_q8_quant();
    test_malformed();
    if (models)
        test_stories(models);
    else
        printf("skip stories260K checks: SAEFLOW_MODELS not found\n");
    return check_exit();
}

/* Tests for the safetensors reader and writer: a round trip of every dtype (checked
 * here and by the independent python3 reader st_verify.py), the real gpt-nano-sort
 * model file against values recorded from its JSON original, and every header
 * validation failure. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../support/check.h"
#include "core/core.h"
#include "safetensors/safetensors.h"

/* ---- round trip ---- */

#define N_EL 21 /* shape [3, 7]: odd, so the writer's alignment matters */

static int64_t g(int64_t i)
{
    return (i * 7919 % 10007) - 5003;
}

/* Fills `out` with the formula st_verify.py recomputes for `dtype`. */
static void fill(enum st_dtype dtype, void *out)
{
    for (int64_t i = 0; i < N_EL; i++) {
        switch (dtype) {
        case ST_F64:
            ((double *)out)[i] = (double)g(i) / 1237.0;
            break;
        case ST_F32:
        case ST_F16:
        case ST_BF16:
            ((float *)out)[i] = (float)((double)g(i) / 1237.0);
            break;
        case ST_I64:
            ((int64_t *)out)[i] = g(i) * 4294967311LL;
            break;
        case ST_I32:
            ((int32_t *)out)[i] = (int32_t)(g(i) * 1000);
            break;
        case ST_I16:
            ((int16_t *)out)[i] = (int16_t)g(i);
            break;
        case ST_I8:
            ((int8_t *)out)[i] = (int8_t)((i * 31 % 256) - 128);
            break;
        case ST_U8:
            ((uint8_t *)out)[i] = (uint8_t)(i * 31 % 256);
            break;
        case ST_BOOL:
            ((uint8_t *)out)[i] = i % 3 == 0;
            break;
        case ST_U16:
            ((uint16_t *)out)[i] = (uint16_t)(i * 7919 % 65536);
            break;
        case ST_U32:
            ((uint32_t *)out)[i] = (uint32_t)((uint64_t)i * 2654435761u);
            break;
        case ST_U64:
            ((uint64_t *)out)[i] = (uint64_t)i * 11400714819323198485ull;
            break;
        default:
            break;
        }
    }
}

static const enum st_dtype all_dtypes[] = {ST_F64, ST_F32, ST_F16,  ST_BF16, ST_I64, ST_I32, ST_I16,
                                           ST_I8,  ST_U8,  ST_BOOL, ST_U16,  ST_U32, ST_U64};
static const char *meta_value = "round trip \"quoted\" \\ \xc3\xbc"
                                "n\xc3\xaf"
                                "code\n\ttab";

static char tmpdir[64];

static void test_round_trip(void)
{
    static uint8_t src[SF_ARRAY_LEN(all_dtypes)][N_EL * 8];
    static float f32src[N_EL];
    const int64_t shape[2] = {3, N_EL / 3};
    struct st_writer *w = st_writer_new();
    CHECK(w != NULL);
    char name[32];
    for (size_t d = 0; d < SF_ARRAY_LEN(all_dtypes); d++) {
        enum st_dtype dt = all_dtypes[d];
        snprintf(name, sizeof(name), "t_%s", safetensors_dtype_name(dt));
        if (dt == ST_F16 || dt == ST_BF16) {
            fill(dt, f32src);
            CHECK_EQ_INT(st_writer_add_f32(w, name, dt, shape, 2, f32src), 0);
        } else {
            fill(dt, src[d]);
            CHECK_EQ_INT(st_writer_add(w, name, dt, shape, 2, src[d]), 0);
        }
    }
    const float scalar = 2.5f;
    CHECK_EQ_INT(st_writer_add(w, "scalar", ST_F32, NULL, 0, &scalar), 0);
    const int64_t empty_shape[2] = {0, 4};
    CHECK_EQ_INT(st_writer_add(w, "empty", ST_F32, empty_shape, 2, NULL), 0);
    /* writer argument errors */
    CHECK(st_writer_add(w, "scalar", ST_F32, NULL, 0, &scalar) < 0);       /* duplicate */
    CHECK(st_writer_add(w, "__metadata__", ST_F32, NULL, 0, &scalar) < 0); /* reserved */
    CHECK(st_writer_add(w, "", ST_F32, NULL, 0, &scalar) < 0);
    CHECK(st_writer_add_f32(w, "x", ST_I32, shape, 2, f32src) < 0);
    const int64_t neg[1] = {-1};
    CHECK(st_writer_add(w, "neg", ST_F32, neg, 1, &scalar) < 0);
    CHECK(st_writer_add(w, "big", ST_F32, shape, ST_MAX_DIMS + 1, &scalar) < 0);
    CHECK_EQ_INT(st_writer_set_metadata(w, "saeflow.test", "replaced"), 0);
    CHECK_EQ_INT(st_writer_set_metadata(w, "format", "pt"), 0);
    CHECK_EQ_INT(st_writer_set_metadata(w, "saeflow.test", meta_value), 0);

    char path[128];
    snprintf(path, sizeof(path), "%s/rt.safetensors", tmpdir);
    CHECK_EQ_INT(st_writer_write(w, path), 0);
    CHECK(st_writer_write(w, "/nonexistent-dir/x.safetensors") < 0);
    st_writer_destroy(&w);
    CHECK(w == NULL);
    st_writer_destroy(&w); /* NULL-safe */

    struct safetensors *st = NULL;
    CHECK_EQ_INT(safetensors_open(path, &st), 0);
    if (!st) return;
    CHECK_EQ_INT(safetensors_count(st), SF_ARRAY_LEN(all_dtypes) + 2);
    CHECK_EQ_INT(safetensors_metadata_count(st), 2);
    const char *mv = safetensors_metadata(st, "saeflow.test");
    CHECK(mv && strcmp(mv, meta_value) == 0);
    CHECK(safetensors_metadata(st, "format") && !strcmp(safetensors_metadata(st, "format"), "pt"));
    CHECK(safetensors_metadata(st, "nope") == NULL);
    const char *k = NULL, *v = NULL;
    CHECK_EQ_INT(safetensors_metadata_at(st, 0, &k, &v), 0);
    CHECK(k && strcmp(k, "saeflow.test") == 0); /* insertion order */
    CHECK(safetensors_metadata_at(st, 2, &k, &v) == SF_ERANGE);

    /* data-offset order, every tensor aligned */
    for (size_t i = 0; i < safetensors_count(st); i++) {
        const struct st_tensor *t = safetensors_at(st, i);
        CHECK((uintptr_t)t->data % safetensors_dtype_size(t->dtype) == 0);
        if (i) CHECK(t->offset >= safetensors_at(st, i - 1)->offset);
    }
    CHECK(safetensors_at(st, safetensors_count(st)) == NULL);

    float got[N_EL];
    for (size_t d = 0; d < SF_ARRAY_LEN(all_dtypes); d++) {
        enum st_dtype dt = all_dtypes[d];
        snprintf(name, sizeof(name), "t_%s", safetensors_dtype_name(dt));
        const struct st_tensor *t = safetensors_find(st, name);
        CHECK_MSG(t != NULL, "%s", name);
        if (!t) continue;
        CHECK_EQ_INT(t->dtype, dt);
        CHECK_EQ_INT(t->ndim, 2);
        CHECK_EQ_INT(t->shape[0], 3);
        CHECK_EQ_INT(t->shape[1], N_EL / 3);
        CHECK_EQ_INT(t->numel, N_EL);
        CHECK_EQ_INT(t->nbytes, N_EL * safetensors_dtype_size(dt));
        if (dt == ST_F16 || dt == ST_BF16) {
            fill(dt, f32src);
            const uint16_t *h = t->data;
            for (size_t i = 0; i < N_EL; i++) {
                uint16_t want = dt == ST_F16 ? f32_to_f16(f32src[i]) : f32_to_bf16(f32src[i]);
                CHECK_EQ_INT(h[i], want);
            }
            CHECK_EQ_INT(safetensors_read_f32(st, name, got, N_EL), 0);
            for (size_t i = 0; i < N_EL; i++)
                CHECK_NEAR(got[i], f32src[i], 1e-6, dt == ST_F16 ? 1e-3 : 8e-3);
        } else {
            CHECK(memcmp(t->data, src[d], t->nbytes) == 0);
            int rc = safetensors_read_f32(st, name, got, N_EL);
            CHECK_EQ_INT(rc, 0);
            if (dt == ST_F32) CHECK(memcmp(got, src[d], sizeof(got)) == 0);
            if (dt == ST_I32) CHECK_NEAR(got[5], (float)((int32_t *)src[d])[5], 0, 0);
            if (dt == ST_I8) CHECK_NEAR(got[7], (float)((int8_t *)src[d])[7], 0, 0);
        }
    }
    const struct st_tensor *t = safetensors_find(st, "scalar");
    CHECK(t && t->ndim == 0 && t->numel == 1);
    float s = 0;
    CHECK_EQ_INT(safetensors_read_f32(st, "scalar", &s, 1), 0);
    CHECK(s == 2.5f);
    t = safetensors_find(st, "empty");
    CHECK(t && t->ndim == 2 && t->numel == 0 && t->nbytes == 0);
    CHECK_EQ_INT(safetensors_read_f32(st, "empty", got, 0), 0);
    CHECK(safetensors_read_f32(st, "scalar", got, 2) == SF_EINVAL);
    CHECK(safetensors_read_f32(st, "missing", got, 1) == SF_NOTFOUND);
    CHECK(safetensors_find(st, "missing") == NULL);
    safetensors_close(&st);
    CHECK(st == NULL);
    safetensors_close(&st);

    /* The independent reader. The script sits beside this file. */
    char script[512], cmd[1024];
    snprintf(script, sizeof(script), "%s", __FILE__);
    char *slash = strrchr(script, '/');
    if (slash)
        snprintf(slash + 1, sizeof(script) - (size_t)(slash + 1 - script), "st_verify.py");
    else
        snprintf(script, sizeof(script), "st_verify.py");
    struct stat sb;
    if (stat(script, &sb) != 0 || system("python3 -c '' 2>/dev/null") != 0) {
        printf("note: %s or python3 missing, independent check skipped\n", script);
    } else {
        snprintf(cmd, sizeof(cmd), "python3 %s %s %d", script, path, N_EL);
        CHECK_MSG(system(cmd) == 0, "%s", cmd);
    }

    /* A truncated copy must fail (the last tensor runs past the end). */
    char *bytes = NULL;
    size_t len = 0;
    CHECK_EQ_INT(file_read_all(path, 1 << 20, &bytes, &len), 0);
    if (bytes) {
        char tpath[160];
        snprintf(tpath, sizeof(tpath), "%s/trunc.safetensors", tmpdir);
        CHECK_EQ_INT(file_write_atomic(tpath, bytes, len - 1), 0);
        CHECK(safetensors_open(tpath, &st) < 0 && st == NULL);
        CHECK(safetensors_open_mem(bytes, len - 1, &st) < 0);
        CHECK_EQ_INT(safetensors_open_mem(bytes, len, &st), 0);
        safetensors_close(&st);
        free(bytes);
    }
    CHECK(safetensors_open("/nonexistent/file.safetensors", &st) == SF_EIO);
}

/* ---- validation ---- */

/* A file: 8-byte length, `header`, then `data_len` zero bytes. Caller frees. */
static uint8_t *mk(const char *header, size_t data_len, size_t *len)
{
    size_t n = strlen(header);
    *len = 8 + n + data_len;
    uint8_t *b = calloc(1, *len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, header, n);
    return b;
}

static int open_hdr(const char *header, size_t data_len)
{
    size_t len;
    uint8_t *b = mk(header, data_len, &len);
    struct safetensors *st = NULL;
    int rc = safetensors_open_mem(b, len, &st);
    if (rc == 0 && st == NULL) rc = 99;
    if (rc != 0 && st != NULL) rc = 98;
    safetensors_close(&st);
    free(b);
    return rc;
}

static void test_validation(void)
{
    struct safetensors *st = NULL;
    /* truncated: fewer than 8 bytes */
    CHECK(safetensors_open_mem("abc", 3, &st) == SF_EFORMAT && st == NULL);
    CHECK(safetensors_open_mem(NULL, 0, &st) == SF_EFORMAT);
    /* header length past the end */
    uint8_t b[16] = {100, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    CHECK(safetensors_open_mem(b, 10, &st) == SF_EFORMAT);
    /* header length over the cap */
    uint8_t big[16] = {0, 0, 0, 0x10, 0, 0, 0, 0, '{', '}'};
    CHECK(safetensors_open_mem(big, 10, &st) == SF_ERANGE);
    uint8_t huge[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, '{', '}'};
    CHECK(safetensors_open_mem(huge, 10, &st) == SF_ERANGE);

    /* valid corner cases */
    CHECK_EQ_INT(open_hdr("{}", 0), 0);
    CHECK_EQ_INT(open_hdr("{}      ", 0), 0);
    CHECK_EQ_INT(open_hdr("{\"__metadata__\":null}", 0), 0);
    CHECK_EQ_INT(open_hdr("{\"__metadata__\":{}}", 0), 0);
    CHECK_EQ_INT(open_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                          "\"b\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[0,1]},"
                          "\"c\":{\"dtype\":\"F16\",\"shape\":[0,3],\"data_offsets\":[1,1]}}",
                          1),
                 0);
    /* a gap between tensors is tolerated */
    CHECK_EQ_INT(open_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[3,4]}}", 8), 0);

    static const struct {
        const char *header;
        size_t data_len;
        int want;
    } bad[] = {
        /* bad JSON */
        {"{\"a\":", 0, SF_EFORMAT},
        {"{\"a\":{}} x", 0, SF_EFORMAT},
        {"[1,2]", 0, SF_EFORMAT},
        {"{\"a\":1", 0, SF_EFORMAT},
        {"{", 0, SF_EFORMAT},
        {"", 0, SF_EFORMAT},
        /* entry types */
        {"{\"a\":5}", 0, SF_EFORMAT},
        {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, SF_EFORMAT},
        {"{\"a\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":{}}}", 4, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4, SF_EFORMAT},
        /* unknown dtype */
        {"{\"a\":{\"dtype\":\"F12\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, SF_EUNSUP},
        {"{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, SF_EUNSUP},
        /* too many dims */
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
         SF_EUNSUP},
        /* shape mismatch */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16, SF_EFORMAT},
        /* shape product overflows */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}",
         4, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,8]}}", 8,
         SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, SF_EFORMAT},
        /* out of range, begin > end */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 8, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[18446744073709551612,"
         "18446744073709551616]}}",
         8, SF_EFORMAT},
        /* overlap */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
         "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
         12, SF_EFORMAT},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
         4, SF_EFORMAT},
        /* duplicate names */
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
         8, SF_EFORMAT},
        /* metadata */
        {"{\"__metadata__\":{\"a\":1}}", 0, SF_EFORMAT},
        {"{\"__metadata__\":{\"a\":\"x\",\"b\":null}}", 0, SF_EFORMAT},
        {"{\"__metadata__\":{\"a\":{\"b\":\"c\"}}}", 0, SF_EFORMAT},
        {"{\"__metadata__\":[\"a\"]}", 0, SF_EFORMAT},
        {"{\"__metadata__\":\"a\"}", 0, SF_EFORMAT},
        {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, SF_EFORMAT},
    };
    for (size_t i = 0; i < SF_ARRAY_LEN(bad); i++) {
        int rc = open_hdr(bad[i].header, bad[i].data_len);
        CHECK_MSG(rc == bad[i].want, "case %zu: rc=%d want=%d: %s", i, rc, bad[i].want,
                  bad[i].header);
    }
    /* conversions refuse a size mismatch and F8 */
    size_t len;
    uint8_t *f8 =
        mk("{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2, &len);
    CHECK_EQ_INT(safetensors_open_mem(f8, len, &st), 0);
    float out[2];
    CHECK(safetensors_read_f32(st, "a", out, 2) == SF_EUNSUP);
    safetensors_close(&st);
    free(f8);
}

/* ---- the real model file ---- */

static const struct {
    const char *name;
    size_t ndim;
    int64_t shape[2];
    float first, last;
    double sum; /* float64 sum of the float32 values, python3 over the JSON's base64 */
} nano[] = {
    {"transformer.wte.weight", 2, {3, 48}, 0.0598409176f, -0.00149126584f, 0.11897434333513957},
    {"transformer.wpe.weight", 2, {11, 48}, 0.0131315198f, -0.127455249f, 0.74486511925351806},
    {"transformer.h.0.ln_1.weight", 1, {48, 0}, 1.01462543f, 0.978669822f, 48.025936663150787},
    {"transformer.h.0.ln_1.bias", 1, {48, 0}, 0.0019145431f, -0.0180039387f, 0.0071482320781797171},
    {"transformer.h.0.attn.c_attn.weight",
     2,
     {144, 48},
     0.0254641157f,
     0.00246590027f,
     -2.074041436009793},
    {"transformer.h.0.attn.c_attn.bias",
     1,
     {144, 0},
     -0.0570452288f,
     0.00806093682f,
     -0.28629082230418135},
    {"transformer.h.0.attn.c_proj.weight",
     2,
     {48, 48},
     -0.015179229f,
     0.00358359376f,
     0.082137200679426314},
    {"transformer.h.0.attn.c_proj.bias",
     1,
     {48, 0},
     0.00242566736f,
     0.000167546561f,
     -0.017344457155559212},
    {"transformer.h.0.ln_2.weight", 1, {48, 0}, 0.982989788f, 1.02367544f, 47.981860518455505},
    {"transformer.h.0.ln_2.bias",
     1,
     {48, 0},
     -0.0282161999f,
     0.0012000635f,
     -0.0050613403582246974},
    {"transformer.h.0.mlp.c_fc.weight",
     2,
     {192, 48},
     0.0118775908f,
     -0.0260763355f,
     5.0532806829887704},
    {"transformer.h.0.mlp.c_fc.bias",
     1,
     {192, 0},
     -0.00464963401f,
     0.0072673657f,
     -0.4198292459041113},
    {"transformer.h.0.mlp.c_proj.weight",
     2,
     {48, 192},
     -0.0417064168f,
     0.00155860244f,
     -0.77470807291319943},
    {"transformer.h.0.mlp.c_proj.bias",
     1,
     {48, 0},
     0.0162313841f,
     0.00917338952f,
     0.036865976377157494},
    {"transformer.h.1.ln_1.weight", 1, {48, 0}, 0.98775202f, 0.975660741f, 47.629213273525238},
    {"transformer.h.1.ln_1.bias", 1, {48, 0}, 0.00147696864f, -0.024849955f, 0.0752020166546572},
    {"transformer.h.1.attn.c_attn.weight",
     2,
     {144, 48},
     -0.0368477702f,
     0.00518786721f,
     -1.4179769513903011},
    {"transformer.h.1.attn.c_attn.bias",
     1,
     {144, 0},
     0.000315153942f,
     0.00939158443f,
     0.020170078746332365},
    {"transformer.h.1.attn.c_proj.weight",
     2,
     {48, 48},
     0.0227980297f,
     -0.00818349607f,
     0.18597100680926815},
    {"transformer.h.1.attn.c_proj.bias",
     1,
     {48, 0},
     0.0297390558f,
     0.00840673782f,
     0.057166509777744068},
    {"transformer.h.1.ln_2.weight", 1, {48, 0}, 0.961528301f, 1.02910948f, 48.550518929958344},
    {"transformer.h.1.ln_2.bias",
     1,
     {48, 0},
     -0.0196927618f,
     0.00453743804f,
     -0.0026918373332591727},
    {"transformer.h.1.mlp.c_fc.weight",
     2,
     {192, 48},
     0.00991958193f,
     -0.0175082143f,
     1.3396709529642976},
    {"transformer.h.1.mlp.c_fc.bias",
     1,
     {192, 0},
     -0.0207507927f,
     -0.024129428f,
     -1.1281202031459543},
    {"transformer.h.1.mlp.c_proj.weight",
     2,
     {48, 192},
     -0.0145846512f,
     0.0039272937f,
     -2.0908894387130204},
    {"transformer.h.1.mlp.c_proj.bias",
     1,
     {48, 0},
     0.029617019f,
     0.0012437338f,
     0.013081792334560305},
    {"transformer.h.2.ln_1.weight", 1, {48, 0}, 1.01512194f, 0.961570203f, 47.828215539455414},
    {"transformer.h.2.ln_1.bias", 1, {48, 0}, 0.0172331035f, 0.0169767868f, 0.084152308118063956},
    {"transformer.h.2.attn.c_attn.weight",
     2,
     {144, 48},
     0.0282691028f,
     0.0168102719f,
     -1.907291225343215},
    {"transformer.h.2.attn.c_attn.bias",
     1,
     {144, 0},
     0.0352362506f,
     0.00748258596f,
     0.097637462342959225},
    {"transformer.h.2.attn.c_proj.weight",
     2,
     {48, 48},
     0.0447274856f,
     0.0218213275f,
     0.38238602760338836},
    {"transformer.h.2.attn.c_proj.bias",
     1,
     {48, 0},
     0.0578433834f,
     0.00298836688f,
     0.028782985013094731},
    {"transformer.h.2.ln_2.weight", 1, {48, 0}, 0.979087532f, 1.0484134f, 49.127260267734528},
    {"transformer.h.2.ln_2.bias",
     1,
     {48, 0},
     -0.0144564221f,
     0.000270289311f,
     0.058219688246026635},
    {"transformer.h.2.mlp.c_fc.weight",
     2,
     {192, 48},
     0.00854878593f,
     -0.00979204755f,
     -0.43264276042555139},
    {"transformer.h.2.mlp.c_fc.bias",
     1,
     {192, 0},
     0.0072054239f,
     -0.0176852774f,
     -1.0612052727228729},
    {"transformer.h.2.mlp.c_proj.weight",
     2,
     {48, 192},
     0.024762135f,
     0.015527077f,
     1.5503348826332513},
    {"transformer.h.2.mlp.c_proj.bias",
     1,
     {48, 0},
     0.0393576548f,
     -0.00682950066f,
     -0.015311383991502225},
    {"transformer.ln_f.weight", 1, {48, 0}, 1.10787368f, 1.20995343f, 56.887646555900574},
    {"transformer.ln_f.bias", 1, {48, 0}, 0.00572339725f, 0.0296654496f, 0.073683778027771041},
    {"lm_head.weight", 2, {3, 48}, 0.131876603f, -0.225180015f, 0.29240013399976306},
};

static void test_gpt_nano(void)
{
    const char *models = test_models_dir();
    if (!models) {
        printf("note: SAEFLOW_MODELS not found, gpt-nano-sort check skipped\n");
        return;
    }
    char path[1024];
    snprintf(path, sizeof(path), "%s/gpt-nano-sort/gpt-nano-sort.safetensors", models);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        printf("note: %s absent, gpt-nano-sort check skipped\n", path);
        return;
    }
    struct safetensors *st = NULL;
    CHECK_EQ_INT(safetensors_open(path, &st), 0);
    if (!st) return;
    CHECK_EQ_INT(safetensors_count(st), SF_ARRAY_LEN(nano));
    CHECK(safetensors_metadata(st, "n_embd") && !strcmp(safetensors_metadata(st, "n_embd"), "48"));
    CHECK(safetensors_metadata(st, "n_layer") && !strcmp(safetensors_metadata(st, "n_layer"), "3"));
    size_t params = 0;
    for (size_t i = 0; i < SF_ARRAY_LEN(nano); i++) {
        const struct st_tensor *t = safetensors_find(st, nano[i].name);
        CHECK_MSG(t != NULL, "%s", nano[i].name);
        if (!t) continue;
        CHECK_EQ_INT(t->dtype, ST_F32);
        CHECK_EQ_INT(t->ndim, nano[i].ndim);
        for (size_t d = 0; d < nano[i].ndim; d++) CHECK_EQ_INT(t->shape[d], nano[i].shape[d]);
        float *v = malloc(t->numel * sizeof(float));
        CHECK_EQ_INT(safetensors_read_f32(st, nano[i].name, v, t->numel), 0);
        double sum = 0;
        bool finite = true;
        for (size_t j = 0; j < t->numel; j++) {
            sum += v[j];
            finite = finite && isfinite(v[j]);
        }
        CHECK(finite);
        CHECK_MSG(v[0] == nano[i].first, "%s first", nano[i].name);
        CHECK_MSG(v[t->numel - 1] == nano[i].last, "%s last", nano[i].name);
        CHECK_NEAR(sum, nano[i].sum, 1e-12, 1e-12);
        params += t->numel;
        free(v);
    }
    CHECK_EQ_INT(params, 85728); /* SOURCE.md */
    safetensors_close(&st);
}

int main(void)
{
    log_init("test_safetensors", LOG_LOGFMT, LOG_OFF); /* the failure cases log by design */
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/sf_st_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_validation();
    test_gpt_nano();
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return check_exit();
}

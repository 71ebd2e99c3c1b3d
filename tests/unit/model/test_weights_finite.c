/* A model file with a NaN or infinite weight is refused at load (SF_EFORMAT) with a
 * log line naming the tensor, in every format: llama2.c .bin (a synthetic file, and
 * stories260K.bin), GGUF (stories260K.gguf) and safetensors (gpt-nano-sort); the
 * clean files still load. Also prints what the check costs on stories15M. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../support/check.h"
#include "core/core.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/model_impl.h"
#include "safetensors/safetensors.h"

static char *log_text;
static size_t log_len;
static FILE *log_mem;

static void log_capture(void)
{
    free(log_text);
    log_text = NULL;
    log_mem = open_memstream(&log_text, &log_len);
    log_set_stream(log_mem);
}

static const char *log_captured(void)
{
    fflush(log_mem);
    log_set_stream(NULL);
    fclose(log_mem);
    log_mem = NULL;
    return log_text ? log_text : "";
}

typedef int (*load_mem_fn)(const void *buf, size_t len, struct model **out);

/* Loads buf clean (0), then with the float at byte `at` set to `bad` (SF_EFORMAT and a
 * log line naming `tensor`). */
static void poison_case(const char *what, load_mem_fn load, unsigned char *buf, size_t len,
                        size_t at, const void *bad, size_t bad_len, const char *tensor)
{
    struct model *m = NULL;
    CHECK_MSG(load(buf, len, &m) == 0, "%s: clean file does not load", what);
    model_destroy(&m);
    unsigned char keep[4];
    memcpy(keep, buf + at, bad_len);
    memcpy(buf + at, bad, bad_len);
    log_capture();
    int rc = load(buf, len, &m);
    const char *log = log_captured();
    CHECK_MSG(rc == SF_EFORMAT && m == NULL, "%s: poisoned file: rc %d", what, rc);
    CHECK_MSG(strstr(log, "model_weights_not_finite") != NULL, "%s: no log line: %s", what, log);
    char want[128];
    snprintf(want, sizeof want, "tensor=%s", tensor);
    CHECK_MSG(strstr(log, want) != NULL, "%s: the log does not name %s: %s", what, tensor, log);
    memcpy(buf + at, keep, bad_len);
}

static void synthetic_llama2c(void)
{
    /* dim 8, hidden 8, 2 layers, 2 heads, 1 kv head, vocab 4, seq 4 (as test_engine) */
    size_t need = 4 * 8 + 2 * 8 + 2 * 64 + 2 * 2 * 32 + 2 * 64 + 2 * 8 + 2 * 3 * 64 + 8 + 4 * 4;
    size_t len = 28 + need * 4;
    unsigned char *buf = calloc(1, len);
    int32_t h[7] = {8, 8, 2, 2, 1, 4, 4};
    memcpy(buf, h, sizeof h);
    float *w = (float *)(void *)(buf + 28);
    for (size_t i = 0; i < need; i++) w[i] = 0.01f * (float)(i % 17);
    float nan = NAN, inf = -INFINITY;
    /* token embedding (4 x 8), then the first layer's norm (2 x 8), then wq (2 x 64) */
    poison_case("llama2c emb", model_load_llama2c_mem, buf, len, 28 + 4 * 5, &nan, 4,
                "token_embedding");
    poison_case("llama2c wq", model_load_llama2c_mem, buf, len, 28 + 4 * (32 + 16 + 64 + 3), &inf,
                4, "blocks.1.attn.qkv.weight");
    free(buf);
}

static void stories_bin(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K/stories260K.bin", dir);
    char *data = NULL;
    size_t len = 0;
    if (file_read_all(path, 1 << 24, &data, &len) != 0) return;
    /* dim 64: after the token embedding (512 x 64) and 5 x 64 norm weights, wq */
    float nan = NAN;
    poison_case("stories260K.bin", model_load_llama2c_mem, (unsigned char *)data, len,
                28 + 4 * (512 * 64 + 5 * 64 + 10), &nan, 4, "blocks.0.attn.qkv.weight");
    free(data);
}

static void stories_gguf(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K/stories260K.gguf", dir);
    char *data = NULL;
    size_t len = 0;
    if (file_read_all(path, 1 << 24, &data, &len) != 0) return;
    struct gguf *g = NULL;
    CHECK_EQ_INT(gguf_open_mem(data, len, &g), 0);
    const struct gguf_tensor *t = g ? gguf_find_tensor(g, "blk.2.ffn_down.weight") : NULL;
    CHECK(t != NULL);
    if (t && (t->type == GGML_TYPE_F32 || t->type == GGML_TYPE_F16)) {
        size_t at = (size_t)((const char *)t->data - data) + 8;
        float nan = NAN;
        uint16_t nan16 = 0x7e00;
        bool f32 = t->type == GGML_TYPE_F32;
        poison_case("stories260K.gguf", model_load_gguf_mem, (unsigned char *)data, len, at,
                    f32 ? (const void *)&nan : (const void *)&nan16, f32 ? 4 : 2,
                    "blocks.2.mlp.down.weight");
    } else if (t) {
        printf("note: blk.2.ffn_down.weight is %s, not poisoned\n", gguf_ggml_type_name(t->type));
    }
    gguf_close(&g);
    free(data);
}

static void nano_safetensors(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/gpt-nano-sort/gpt-nano-sort.safetensors", dir);
    char *data = NULL;
    size_t len = 0;
    if (file_read_all(path, 1 << 24, &data, &len) != 0) return;
    struct safetensors *st = NULL;
    CHECK_EQ_INT(safetensors_open_mem(data, len, &st), 0);
    const struct st_tensor *t = st ? safetensors_find(st, "transformer.h.1.mlp.c_proj.bias") : NULL;
    CHECK(t != NULL && t->dtype == ST_F32);
    if (t && t->dtype == ST_F32) {
        float inf = INFINITY;
        poison_case("gpt-nano-sort.safetensors", model_load_safetensors_mem, (unsigned char *)data,
                    len, (size_t)((const char *)t->data - data) + 4, &inf, 4,
                    "blocks.1.mlp.down.bias");
    }
    safetensors_close(&st);
    free(data);
}

/* What the check costs: one pass over stories15M's weights, against its whole load. */
static void cost(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/stories15M/stories15M.bin", dir);
    struct model_load_opts lo = {.no_tokenizer = true};
    struct model *m = NULL;
    double t0 = time_now_s();
    if (model_load(path, &lo, &m) != 0) return;
    double load_s = time_now_s() - t0;
    double best = 1e9;
    for (int i = 0; i < 5; i++) {
        t0 = time_now_s();
        CHECK_EQ_INT(model_check_weights(m), 0);
        best = fmin(best, time_now_s() - t0);
    }
    printf("RESULT stories15M: weight check %.2f ms of a %.1f ms load (%zu weights)\n", best * 1e3,
           load_s * 1e3, model_param_count(m));
    model_destroy(&m);
}

int main(void)
{
    log_init("test_weights_finite", LOG_LOGFMT, LOG_ERROR);
    synthetic_llama2c();
    const char *dir = test_models_dir();
    if (dir) {
        stories_bin(dir);
        stories_gguf(dir);
        nano_safetensors(dir);
        cost(dir);
    } else {
        printf("note: shared models not found (set SAEFLOW_MODELS): synthetic file only\n");
    }
    free(log_text);
    return check_exit();
}

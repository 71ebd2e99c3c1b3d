/* Engine tests on stories260K (llama2.c .bin + tok512.bin, and GGUF with its own
 * tokenizer): greedy generation from BOS matches the reference ids and the 200-step
 * reference text in its SOURCE.md (llama2.c run.c / test_all.py); batched generation
 * equals one-at-a-time generation; capture-only passes stop after the last hook; the
 * llama2.c loader rejects malformed checkpoints. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../support/check.h"
#include "core/core.h"
#include "model/model.h"
#include "model/gguf.h"
#include "model/tokenizer.h"

/* llama2.c test_all.py expected_stdout for `run stories260K.bin -z tok512.bin -t 0 -n 200`,
 * up to where SOURCE.md quotes it (compared with whitespace runs collapsed). */
static const char *ref_text =
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
    "park. One day, she saw a big, red ball. She wanted to play with it, but it was too high. "
    "Lily's mom said, \"Lily, let's go to the park.\" Lily was sad and didn't know what to do. "
    "She said, \"I want to play with your ball, but I can't find it.\"";

/* Collapses whitespace runs to one space, in place. */
static void squash(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        bool ws = *p == ' ' || *p == '\n' || *p == '\t';
        if (ws && (o == s || o[-1] == ' ')) continue;
        *o++ = ws ? ' ' : *p;
    }
    *o = 0;
}

static const int32_t ref_ids[19] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298,
                                    315, 421, 395, 317, 426, 338, 401, 396, 267};

static void greedy_ids(const char *path)
{
    struct model *m = NULL;
    int rc = model_load(path, NULL, &m);
    CHECK_EQ_INT(rc, 0);
    if (rc) return;
    struct model_ctx *c = model_ctx_new(m, 1, 0);
    CHECK(c != NULL);
    int32_t bos = 1, out[200];
    const int32_t *prompts[1] = {&bos};
    size_t plen = 1, olen = 0;
    struct model_gen_opts o = {.max_new_tokens = 200, .sample = {.temperature = 0}};
    rc = model_generate(c, prompts, &plen, 1, &o, out, &olen);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(olen, 200);
    for (int i = 0; i < 19; i++) CHECK_EQ_INT(out[i], ref_ids[i]);
    /* SOURCE.md: 260,032 parameters, tied classifier, GQA 8/4 (GGUF: output.weight is a
     * copy of the embedding, recognised as tied) */
    CHECK_EQ_INT(model_param_count(m), 260032);
    CHECK(model_config(m)->tied_embeddings);
    CHECK_EQ_INT(model_config(m)->n_kv_heads, 4);
    const struct tokenizer *tok = model_tokenizer(m);
    CHECK_MSG(tok != NULL, "%s: no tokenizer", path);
    if (tok) {
        int32_t ids[201] = {1};
        memcpy(ids + 1, out, sizeof out);
        struct buf b;
        buf_init(&b, 1 << 20);
        CHECK_EQ_INT(tokenizer_decode(tok, ids, 201, &b), 0);
        if (b.data) {
            printf("%s:\n%s\n", path, b.data);
            squash(b.data);
            CHECK_MSG(!strncmp(b.data, ref_text, strlen(ref_text)), "text differs: %s", b.data);
        }
        buf_fini(&b);
    }
    model_ctx_destroy(&c);
    model_destroy(&m);
}

/* Greedy generation of three prompts as one batch equals each prompt alone. */
static void batched_equals_single(const char *path)
{
    struct model *m = NULL;
    CHECK_EQ_INT(model_load(path, NULL, &m), 0);
    if (!m || !model_tokenizer(m)) {
        model_destroy(&m);
        return;
    }
    const char *texts[3] = {"Once upon a time", "The cat sat", "Lily and Ben went to the"};
    int32_t *ids[3];
    size_t lens[3];
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(tokenizer_encode_alloc(model_tokenizer(m), texts[i], strlen(texts[i]), true,
                                            &ids[i], &lens[i]),
                     0);
    enum { N = 40 };
    int32_t batch[3 * N], one[N];
    size_t blen[3], olen;
    struct model_ctx *c = model_ctx_new(m, 3, 128);
    struct model_gen_opts o = {.max_new_tokens = N, .sample = {.temperature = 0}};
    CHECK_EQ_INT(model_generate(c, (const int32_t *const *)ids, lens, 3, &o, batch, blen), 0);
    for (int i = 0; i < 3; i++) {
        const int32_t *p = ids[i];
        CHECK_EQ_INT(model_generate(c, &p, &lens[i], 1, &o, one, &olen), 0);
        CHECK_EQ_INT(olen, blen[i]);
        CHECK(memcmp(one, batch + i * N, olen * sizeof(int32_t)) == 0);
        free(ids[i]);
    }
    /* sampled generation is reproducible with the same seed */
    int32_t s1[N], s2[N];
    const int32_t *p0 = batch;
    size_t one_tok = 1;
    int32_t bos = 1;
    p0 = &bos;
    struct model_gen_opts so = {
        .max_new_tokens = N, .sample = {.temperature = 1, .top_p = 0.9f}, .seed = 7};
    CHECK_EQ_INT(model_generate(c, &p0, &one_tok, 1, &so, s1, &olen), 0);
    CHECK_EQ_INT(model_generate(c, &p0, &one_tok, 1, &so, s2, &olen), 0);
    CHECK(memcmp(s1, s2, olen * sizeof(int32_t)) == 0);
    model_ctx_destroy(&c);
    model_destroy(&m);
}

struct grab {
    float x[64 * 8];
    size_t n;
};
static int grab_hook(void *user, const struct model_act *a)
{
    struct grab *g = user;
    g->n = a->n_tokens;
    memcpy(g->x, a->x, SF_MIN(a->n_tokens, 8) * a->d * sizeof(float));
    return 0;
}

/* A capture-only pass (no logits) gives the same activations as a full pass. */
static void capture_only(const char *path)
{
    struct model *m = NULL;
    struct model_load_opts lo = {.no_tokenizer = true};
    CHECK_EQ_INT(model_load(path, &lo, &m), 0);
    if (!m) return;
    struct model_ctx *c = model_ctx_new(m, 1, 64);
    struct grab g1 = {0}, g2 = {0};
    int32_t toks[6] = {1, 403, 407, 261, 378, 432};
    struct model_seq s = {.slot = 0, .tokens = toks, .n = 6};
    float logits[512];
    CHECK_EQ_INT(model_ctx_add_hook(c, "blocks.1.hook_resid_post", grab_hook, &g1), 0);
    CHECK_EQ_INT(model_forward(c, &s, 1, MODEL_LOGITS_LAST, logits), 0);
    model_ctx_clear_hooks(c);
    model_ctx_reset(c, 0);
    CHECK_EQ_INT(model_ctx_add_hook(c, "blocks.1.hook_resid_post", grab_hook, &g2), 0);
    CHECK_EQ_INT(model_forward(c, &s, 1, MODEL_LOGITS_NONE, NULL), 0);
    CHECK_EQ_INT(g1.n, 6);
    CHECK_EQ_INT(g2.n, 6);
    CHECK(memcmp(g1.x, g2.x, 6 * 64 * sizeof(float)) == 0);
    CHECK_EQ_INT(model_ctx_len(c, 0), 6);
    CHECK_EQ_INT(sample_argmax(logits, 512), 383); /* the reference's next id */
    /* the slot's cache lacks layers 2..4 now: continuing it with logits is refused,
     * continuing the capture is fine */
    int32_t more = 383;
    struct model_seq s2 = {.slot = 0, .tokens = &more, .n = 1};
    CHECK_EQ_INT(model_forward(c, &s2, 1, MODEL_LOGITS_NONE, NULL), 0);
    log_set_level(LOG_OFF);
    CHECK_EQ_INT(model_forward(c, &s2, 1, MODEL_LOGITS_LAST, logits), SF_ESTATE);
    log_set_level(LOG_WARN);
    model_ctx_reset(c, 0);
    CHECK_EQ_INT(model_forward(c, &s, 1, MODEL_LOGITS_LAST, logits), 0);
    model_ctx_destroy(&c);
    model_destroy(&m);
}

static int load_header(int32_t dim, int32_t hidden, int32_t layers, int32_t heads, int32_t kv,
                       int32_t vocab, int32_t seq, size_t extra_floats)
{
    size_t len = 28 + extra_floats * 4;
    unsigned char *buf = calloc(1, len);
    int32_t h[7] = {dim, hidden, layers, heads, kv, vocab, seq};
    memcpy(buf, h, sizeof h);
    struct model *m = NULL;
    int rc = model_load_llama2c_mem(buf, len, &m);
    if (rc == 0)
        CHECK(m != NULL);
    else
        CHECK(m == NULL);
    model_destroy(&m);
    free(buf);
    return rc;
}

static void bad_files(const char *dir)
{
    /* llama2.c: short, zero/negative fields, inconsistent heads, absurd dims, truncated */
    struct model *m = NULL;
    CHECK_EQ_INT(model_load_llama2c_mem("abc", 3, &m), SF_EFORMAT);
    CHECK_EQ_INT(load_header(0, 8, 1, 1, 1, 4, 4, 1000), SF_EFORMAT);
    CHECK_EQ_INT(load_header(8, -8, 1, 1, 1, 4, 4, 1000), SF_EFORMAT);
    CHECK_EQ_INT(load_header(64, 8, 1, 7, 7, 4, 4, 100000), SF_EFORMAT);
    CHECK_EQ_INT(load_header(64, 8, 1, 8, 3, 4, 4, 100000), SF_EFORMAT);
    CHECK_EQ_INT(load_header(1 << 30, 8, 1, 1, 1, 4, 4, 1000), SF_EFORMAT);
    CHECK_EQ_INT(load_header(8, 8, 1 << 30, 1, 1, 4, 4, 1000), SF_EFORMAT);
    CHECK_EQ_INT(load_header(8, 8, 1, 1, 1, INT32_MIN, 4, 1000), SF_EFORMAT);
    CHECK_EQ_INT(load_header(8, 8, 2, 2, 2, 4, 4, 10), SF_EFORMAT); /* truncated */
    /* the smallest well-formed model: exactly the floats it needs */
    size_t need = 4 * 8 + 2 * 8 + 2 * 64 + 2 * 2 * 32 + 2 * 64 + 2 * 8 + 2 * 3 * 64 + 8 + 4 * 4;
    CHECK_EQ_INT(load_header(8, 8, 2, 2, 1, 4, 4, need), 0);
    CHECK_EQ_INT(load_header(8, 8, 2, 2, 1, 4, 4, need - 1), SF_EFORMAT);
    CHECK_EQ_INT(load_header(8, 8, 2, 2, 1, -4, 4, need), SF_EFORMAT); /* untied: + wcls */
    CHECK_EQ_INT(load_header(8, 8, 2, 2, 1, -4, 4, need + 32), 0);

    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K/stories260K.bin", dir);
    char *data = NULL;
    size_t len = 0;
    CHECK_EQ_INT(file_read_all(path, 1 << 24, &data, &len), 0);
    if (data) {
        CHECK_EQ_INT(model_load_llama2c_mem(data, len / 2, &m), SF_EFORMAT);
        CHECK_EQ_INT(model_load_llama2c_mem(data, len, &m), 0);
        model_destroy(&m);
        free(data);
    }
    CHECK_EQ_INT(model_load("/nonexistent/model.bin", NULL, &m), SF_EIO);
    CHECK(m == NULL);

    /* GGUF with an architecture we do not run; HF dir with an unknown model_type */
    char tmp[] = "/tmp/saeflow_test_engine_XXXXXX";
    CHECK(mkdtemp(tmp) != NULL);
    struct gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "mamba");
    snprintf(path, sizeof path, "%s/x.gguf", tmp);
    CHECK_EQ_INT(gguf_writer_write(w, path), 0);
    gguf_writer_destroy(&w);
    CHECK_EQ_INT(model_load(path, NULL, &m), SF_EUNSUP);
    /* a GGUF llama missing its keys */
    w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "llama");
    gguf_writer_set_u32(w, "llama.embedding_length", 64);
    CHECK_EQ_INT(gguf_writer_write(w, path), 0);
    gguf_writer_destroy(&w);
    CHECK_EQ_INT(model_load(path, NULL, &m), SF_EFORMAT);
    snprintf(path, sizeof path, "%s/config.json", tmp);
    const char *cfg = "{\"model_type\": \"bert\"}";
    CHECK_EQ_INT(file_write_atomic(path, cfg, strlen(cfg)), 0);
    CHECK_EQ_INT(model_load(tmp, NULL, &m), SF_EFORMAT); /* no weights */
    snprintf(path, sizeof path, "rm -rf %s", tmp);
    CHECK_EQ_INT(system(path), 0);
    CHECK(m == NULL);
}

int main(void)
{
    log_init("test_engine", LOG_LOGFMT, LOG_WARN);
    const char *dir = test_models_dir();
    if (!dir) {
        printf("skip: shared models not found (set SAEFLOW_MODELS)\n");
        return TEST_SKIP;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K/stories260K.bin", dir);
    greedy_ids(path);
    snprintf(path, sizeof path, "%s/stories260K/stories260K.gguf", dir);
    greedy_ids(path);
    batched_equals_single(path);
    snprintf(path, sizeof path, "%s/stories260K/stories260K.bin", dir);
    batched_equals_single(path);
    capture_only(path);
    log_set_level(LOG_OFF); /* the error paths below log by design */
    bad_files(dir);
    return check_exit();
}

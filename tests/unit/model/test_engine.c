/* Engine tests on real models: stories260K greedy generation (llama2.c .bin and GGUF)
 * against the reference ids in its SOURCE.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../support/check.h"
#include "core/core.h"
#include "model/model.h"

static const int32_t ref_ids[19] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298,
                                    315, 421, 395, 317, 426, 338, 401, 396, 267};

static void greedy_ids(const char *path)
{
    struct model *m = NULL;
    struct model_load_opts lo = {.no_tokenizer = true};
    int rc = model_load(path, &lo, &m);
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
    model_ctx_destroy(&c);
    model_destroy(&m);
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
    return check_exit();
}

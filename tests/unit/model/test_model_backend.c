/* model_backend: the CPU path gives model_forward's logits and hook calls exactly;
 * names are validated; "cuda" is refused cleanly where no device is visible and "auto"
 * falls back to the CPU. With a device, "cuda" agrees with the CPU to 1e-4. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../support/check.h"
#include "core/core.h"
#include "model/model.h"
#include "model/model_backend.h"
#include "tensor/tensor.h"

static int count_hook(void *user, const struct model_act *act)
{
    (void)act;
    (*(int *)user)++;
    return 0;
}

static struct model *small_llama(void)
{
    struct model_config c;
    memset(&c, 0, sizeof c);
    c.arch = MODEL_ARCH_LLAMA;
    c.dim = 32;
    c.hidden_dim = 64;
    c.n_layers = 2;
    c.n_heads = 4;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    c.vocab_size = 50;
    c.max_seq_len = 32;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.rope_dim = 8;
    c.bos_id = c.eos_id = -1;
    struct model *m = NULL;
    return model_new_random(&c, 4, 0.3f, &m) == 0 ? m : NULL;
}

static void run(struct model *m, const char *backend, const float *want_logits, float *out)
{
    struct model_backend *e = NULL;
    CHECK(model_backend_new(m, backend, NULL, 2, 16, &e) == 0 && e);
    if (!e) return;
    int calls = 0;
    CHECK(model_backend_add_hook(e, "blocks.1.hook_resid_post", count_hook, &calls, false) == 0);
    CHECK(model_backend_add_hook(e, "blocks.9.hook_resid_post", count_hook, &calls, false) ==
          SF_EINVAL);
    int32_t t0[5] = {1, 2, 3, 4, 5}, t1[3] = {7, 8, 9};
    struct model_seq seqs[2] = {{0, t0, 5}, {1, t1, 3}};
    CHECK(model_backend_forward(e, seqs, 2, MODEL_LOGITS_ALL, out) == 0);
    CHECK(calls == 1);
    CHECK_EQ_INT(model_backend_len(e, 0), 5);
    CHECK_EQ_INT(model_backend_len(e, 1), 3);
    model_backend_reset(e, 0);
    CHECK_EQ_INT(model_backend_len(e, 0), 0);
    model_backend_reset_all(e);
    CHECK_EQ_INT(model_backend_len(e, 1), 0);
    model_backend_clear_hooks(e);
    if (want_logits) {
        double scale = 0, diff = 0;
        for (size_t i = 0; i < 8 * 50; i++) {
            scale = fmax(scale, fabs(want_logits[i]));
            diff = fmax(diff, fabs(out[i] - want_logits[i]));
        }
        CHECK_MSG(diff <= 1e-4 * scale, "%s logits differ by %g (scale %g)", backend, diff, scale);
    }
    model_backend_destroy(&e);
    CHECK(e == NULL);
}

int main(void)
{
    log_init("test_model_backend", LOG_LOGFMT, LOG_OFF);
    struct model *m = small_llama();
    CHECK(m != NULL);
    if (!m) return check_exit();
    struct model_backend *e = NULL;
    CHECK(model_backend_new(m, "tpu", NULL, 2, 16, &e) == SF_EINVAL && !e);
    CHECK(model_backend_new(m, "cpu", "fp8", 2, 16, &e) == SF_EINVAL && !e);
    CHECK(model_backend_new(m, "cpu", NULL, 0, 16, &e) == SF_EINVAL && !e);

    /* the CPU path is model_forward */
    float *ref = malloc(8 * 50 * sizeof *ref), *got = malloc(8 * 50 * sizeof *got);
    struct model_ctx *c = model_ctx_new(m, 2, 16);
    int32_t t0[5] = {1, 2, 3, 4, 5}, t1[3] = {7, 8, 9};
    struct model_seq seqs[2] = {{0, t0, 5}, {1, t1, 3}};
    CHECK(c && model_forward(c, seqs, 2, MODEL_LOGITS_ALL, ref) == 0);
    model_ctx_destroy(&c);
    run(m, "cpu", NULL, got);
    CHECK(memcmp(ref, got, 8 * 50 * sizeof *ref) == 0);

    if (!tensor_cuda_available()) {
        CHECK(model_backend_new(m, "cuda", NULL, 2, 16, &e) == SF_EUNSUP && !e);
        CHECK(model_backend_new(m, "auto", NULL, 2, 16, &e) == 0 && e &&
              model_backend_kind(e) == TENSOR_CPU);
        model_backend_destroy(&e);
    } else {
        run(m, "cuda", ref, got);
    }
    free(ref);
    free(got);
    model_destroy(&m);
    return check_exit();
}

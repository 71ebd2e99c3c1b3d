/* sae_backend: the CPU path steps exactly as sae_trainer_step (same trainer state after
 * the same batches); names are validated; "cuda" is refused cleanly where no device is
 * visible and "auto" falls back to the CPU. With a device, "cuda" trains and syncs. */
#include <stdlib.h>
#include <string.h>

#include "../../support/check.h"
#include "core/core.h"
#include "sae/sae_backend.h"
#include "sae/sae_train.h"
#include "tensor/tensor.h"

static float *make_data(size_t N, size_t d, uint64_t seed)
{
    struct rng r;
    rng_seed(&r, seed);
    float *x = malloc(N * d * sizeof *x);
    for (size_t q = 0; q < N * d; q++) x[q] = rng_normal(&r) * 2.0f + 0.3f;
    return x;
}

int main(void)
{
    log_init("test_sae_backend", LOG_LOGFMT, LOG_OFF);
    const size_t d = 16, n = 64, k = 4, B = 32;
    struct sae_train_config cfg;
    sae_train_config_default(&cfg, SAE_TOPK, d, n, k);
    struct sae_trainer *ta = sae_trainer_new(&cfg), *tb = sae_trainer_new(&cfg);
    CHECK(ta && tb);
    if (!ta || !tb) return check_exit();
    struct sae_backend *b = NULL;
    CHECK(sae_backend_new(ta, "gpu", NULL, &b) == SF_EINVAL && b == NULL);
    CHECK(sae_backend_new(ta, "cpu", "fp64", &b) == SF_EINVAL && b == NULL);
    CHECK(sae_backend_new(ta, "cpu", NULL, &b) == 0 && b);
    if (!b) return check_exit();
    CHECK(sae_backend_kind(b) == TENSOR_CPU);
    float *x = make_data(4 * B, d, 3);
    for (int s = 0; s < 4; s++) {
        struct sae_train_metrics ma, mb;
        CHECK(sae_backend_step(b, x + (size_t)s * B * d, B, &ma) == 0);
        CHECK(sae_trainer_step(tb, x + (size_t)s * B * d, B, &mb) == 0);
        CHECK(ma.loss == mb.loss && ma.fvu == mb.fvu && ma.step == mb.step);
    }
    CHECK(sae_backend_sync(b) == 0);
    const struct sae *sa = sae_trainer_sae(ta), *sb = sae_trainer_sae(tb);
    CHECK(memcmp(sa->W_enc, sb->W_enc, n * d * sizeof(float)) == 0);
    CHECK(memcmp(sa->W_dec, sb->W_dec, n * d * sizeof(float)) == 0);
    CHECK(sae_backend_step(b, x, 0, NULL) == SF_EINVAL);
    sae_backend_destroy(&b);
    CHECK(b == NULL);

    if (!tensor_cuda_available()) {
        CHECK(sae_backend_new(ta, "cuda", NULL, &b) == SF_EUNSUP && b == NULL);
        CHECK(sae_backend_new(ta, "auto", "tf32", &b) == 0 && b &&
              sae_backend_kind(b) == TENSOR_CPU);
        sae_backend_destroy(&b);
    } else {
        /* a device: the cuda path trains and brings its state back */
        int64_t steps = sae_trainer_steps(ta);
        CHECK(sae_backend_new(ta, "cuda", "fp32", &b) == 0 && b &&
              sae_backend_kind(b) == TENSOR_CUDA);
        if (b) {
            CHECK(sae_backend_step(b, x, B, NULL) == 0);
            CHECK(sae_backend_sync(b) == 0);
            CHECK_EQ_INT(sae_trainer_steps(ta), steps + 1);
        }
        sae_backend_destroy(&b);
    }
    free(x);
    sae_trainer_destroy(&ta);
    sae_trainer_destroy(&tb);
    return check_exit();
}

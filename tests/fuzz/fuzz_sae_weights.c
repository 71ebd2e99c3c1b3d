// lib: sae
/* Fuzzes SAE import from memory (cfg.json text + safetensors bytes), both layouts.
 * Input: byte 0 = mode. Bit 0 picks the layout (0 SAELens, 1 sparsify). With bit 1
 * set, the cfg is one of a few built-in ones (chosen by mode >> 2) and the rest of the
 * input is the weights file; otherwise bytes 1-2 are the cfg length (u16 LE), then the
 * cfg, then the weights. An accepted SAE must have the cfg's sizes, finite weights,
 * norm_scale 1, and run through the reference encoder and decoder.
 * Seed corpus: tests/fuzz/corpus/sae_weights (SAEFLOW_WRITE_CORPUS=tests/fuzz/corpus
 * build/tests/test_sae_io regenerates it). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "sae/sae_io.h"

static const char *const builtin_saelens[] = {
    "{\"architecture\": \"topk\", \"d_in\": 4, \"d_sae\": 8, \"k\": 2}",
    "{\"architecture\": \"jumprelu\", \"d_in\": 4, \"d_sae\": 8}",
    "{\"architecture\": \"standard\", \"d_in\": 4, \"d_sae\": 8, \"apply_b_dec_to_input\": false}",
};
static const char *const builtin_sparsify[] = {
    "{\"activation\": \"topk\", \"num_latents\": 8, \"k\": 2, \"d_in\": 4}",
    "{\"activation\": \"topk\", \"expansion_factor\": 2, \"k\": 3, \"d_in\": 4}",
};

static void must(int cond)
{
    if (!cond) abort();
}

static void check_sae(const struct sae *s)
{
    must(s && s->d_in >= 1 && s->n >= 1 && s->norm_scale == 1.0f);
    for (size_t i = 0; i < s->n * s->d_in; i++)
        must(isfinite(s->W_enc[i]) && isfinite(s->W_dec[i]));
    for (size_t i = 0; i < s->n; i++) must(isfinite(s->b_enc[i]));
    for (size_t j = 0; j < s->d_in; j++) must(isfinite(s->b_dec[j]));
    if (s->arch == SAE_JUMPRELU) must(s->threshold != NULL);
    if (s->arch == SAE_TOPK) must(s->k >= 1 && s->k <= s->n);
    float *x = calloc(s->d_in, sizeof *x), *xh = calloc(s->d_in, sizeof *xh);
    float *z = calloc(s->n, sizeof *z);
    must(x && xh && z);
    for (size_t j = 0; j < s->d_in; j++) x[j] = (float)j * 0.25f - 1.0f;
    must(sae_encode_ref(s, x, z) == 0);
    sae_decode_ref(s, z, xh);
    free(x);
    free(xh);
    free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        log_init("fuzz_sae_weights", LOG_LOGFMT, LOG_OFF);
        quiet = 1;
    }
    if (size < 1) return 0;
    const uint8_t mode = data[0];
    const bool sparsify = mode & 1;
    const char *cfg;
    size_t cfg_len;
    const uint8_t *w;
    size_t w_len;
    if (mode & 2) {
        size_t pick = mode >> 2;
        cfg = sparsify ? builtin_sparsify[pick % SF_ARRAY_LEN(builtin_sparsify)]
                       : builtin_saelens[pick % SF_ARRAY_LEN(builtin_saelens)];
        cfg_len = strlen(cfg);
        w = data + 1;
        w_len = size - 1;
    } else {
        if (size < 3) return 0;
        cfg_len = (size_t)data[1] | (size_t)data[2] << 8;
        if (cfg_len > size - 3) return 0;
        cfg = (const char *)data + 3;
        w = data + 3 + cfg_len;
        w_len = size - 3 - cfg_len;
    }
    struct sae *s = NULL;
    int rc = sparsify ? sae_io_import_sparsify_mem(cfg, cfg_len, w, w_len, "layers.0", &s)
                      : sae_io_import_saelens_mem(cfg, cfg_len, w, w_len, &s);
    must((rc == 0) == (s != NULL));
    must(rc == 0 || rc == SF_EFORMAT || rc == SF_EUNSUP || rc == SF_ENOMEM);
    if (s) {
        check_sae(s);
        /* the hook name is "layers.0" unless the file's saeflow.hook_name metadata says
         * otherwise; either way a NUL-terminated string */
        if (sparsify)
            must(s->arch == SAE_TOPK && memchr(s->meta.hook_name, '\0', sizeof s->meta.hook_name));
        sae_destroy(&s);
    }
    return 0;
}

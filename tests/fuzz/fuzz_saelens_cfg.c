// lib: sae
/* Fuzzes the cfg.json parsers of sae_io: arbitrary bytes go through the SAELens v6
 * parser and the sparsify parser. Either may refuse; an accepted cfg must satisfy the
 * documented bounds (known arch, 1 <= d_in, d_sae <= SAE_IO_MAX_DIM, 1 <= k <= d_sae
 * for topk, NUL-terminated strings). Seed corpus: tests/fuzz/corpus/saelens_cfg
 * (SAEFLOW_WRITE_CORPUS=tests/fuzz/corpus build/tests/test_sae_io regenerates it). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "sae/sae_io.h"

static void must(int cond)
{
    if (!cond) abort();
}

static void check_str(const char *s, size_t cap)
{
    must(memchr(s, '\0', cap) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        log_init("fuzz_saelens_cfg", LOG_LOGFMT, LOG_OFF);
        quiet = 1;
    }
    const char *json = (const char *)data;
    struct sae_io_saelens_cfg c;
    int rc = sae_io_parse_saelens_cfg(json, size, &c);
    must(rc == 0 || rc == SF_EFORMAT || rc == SF_EUNSUP);
    if (rc == 0) {
        must(c.arch == SAE_TOPK || c.arch == SAE_JUMPRELU || c.arch == SAE_STANDARD);
        must(c.d_in >= 1 && c.d_in <= SAE_IO_MAX_DIM);
        must(c.d_sae >= 1 && c.d_sae <= SAE_IO_MAX_DIM);
        if (c.arch == SAE_TOPK)
            must(c.k >= 1 && c.k <= c.d_sae);
        else
            must(c.k == 0);
        check_str(c.architecture, sizeof c.architecture);
        check_str(c.dtype, sizeof c.dtype);
        check_str(c.sae_lens_version, sizeof c.sae_lens_version);
        check_str(c.meta.model_name, sizeof c.meta.model_name);
        check_str(c.meta.hook_name, sizeof c.meta.hook_name);
        check_str(c.meta.dataset_path, sizeof c.meta.dataset_path);
        must(c.meta.hook_layer >= -1 && c.meta.context_size >= 0);
    }
    struct sae_io_sparsify_cfg s;
    rc = sae_io_parse_sparsify_cfg(json, size, &s);
    must(rc == 0 || rc == SF_EFORMAT || rc == SF_EUNSUP);
    if (rc == 0) {
        must(s.d_in >= 1 && s.d_in <= SAE_IO_MAX_DIM);
        must(s.n >= 1 && s.n <= SAE_IO_MAX_DIM);
        must(s.k >= 1 && s.k <= s.n);
    }
    return 0;
}

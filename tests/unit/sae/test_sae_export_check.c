/* Exports SAEs of every architecture (some with a norm_scale to fold) with saeflow's
 * C code, writes random inputs and saeflow's encoder/decoder outputs beside them, and
 * runs check_saelens.py: an independent numpy reader that checks the files, keys,
 * tensor names, shapes and dtypes SAELens v6 / sparsify expect and recomputes their
 * forward pass. Skips (77) when python3 or numpy is missing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../support/check.h"
#include "core/core.h"
#include "sae/sae.h"
#include "sae/sae_io.h"

#define B 64

struct ecase {
    const char *name;
    const char *layout; /* "saelens" | "sparsify" */
    enum sae_arch arch;
    float norm_scale;
    bool sparsity;
};

static const struct ecase cases[] = {
    {"topk", "saelens", SAE_TOPK, 1.0f, true},
    {"topk_folded", "saelens", SAE_TOPK, 3.3f, false},
    {"jumprelu", "saelens", SAE_JUMPRELU, 1.0f, true},
    {"batchtopk_folded", "saelens", SAE_BATCHTOPK, 0.7f, false},
    {"standard", "saelens", SAE_STANDARD, 1.0f, false},
    {"sparsify_folded", "sparsify", SAE_TOPK, 1.9f, false},
};

static int write_floats(const char *dir, const char *name, const float *v, size_t n)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return file_write_atomic(p, v, n * sizeof *v);
}

static int run_case(const struct ecase *c, const char *dir, uint64_t seed)
{
    const size_t d = 32, n = 96, k = 8;
    struct sae *s = sae_new(c->arch, d, n, c->arch == SAE_TOPK || c->arch == SAE_BATCHTOPK ? k : 0);
    if (!s) return SF_ENOMEM;
    struct rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n * d; i++) s->W_enc[i] = rng_normal(&r) * 0.3f;
    for (size_t i = 0; i < n * d; i++) s->W_dec[i] = rng_normal(&r) * 0.3f;
    for (size_t i = 0; i < n; i++) s->b_enc[i] = rng_normal(&r) * 0.2f;
    for (size_t j = 0; j < d; j++) s->b_dec[j] = rng_normal(&r) * 0.2f;
    if (s->threshold)
        for (size_t i = 0; i < n; i++) s->threshold[i] = 0.2f + (float)rng_uniform(&r);
    s->norm_scale = c->norm_scale;
    snprintf(s->meta.model_name, sizeof s->meta.model_name, "stories15M");
    snprintf(s->meta.hook_name, sizeof s->meta.hook_name, "blocks.2.hook_resid_post");
    s->meta.hook_layer = 2;
    s->meta.context_size = 128;
    s->meta.prepend_bos = true;
    snprintf(s->meta.dataset_path, sizeof s->meta.dataset_path, "tinystories/valid.txt");

    static float x[B * 32], z[B * 96], xh[B * 32], dens[96];
    int rc = 0;
    for (size_t t = 0; t < B && !rc; t++) {
        for (size_t j = 0; j < d; j++) x[t * d + j] = rng_normal(&r) / c->norm_scale;
        rc = sae_encode_ref(s, x + t * d, z + t * n);
        sae_decode_ref(s, z + t * n, xh + t * d);
    }
    for (size_t i = 0; i < n; i++) dens[i] = -(float)(i % 11) * 0.7f;

    char sae_dir[4096];
    snprintf(sae_dir, sizeof sae_dir, "%s/sae", dir);
    if (!rc) rc = file_mkdirs(dir, 0755);
    if (!rc)
        rc = !strcmp(c->layout, "sparsify")
                 ? sae_io_export_sparsify(s, sae_dir)
                 : sae_io_export_saelens(s, sae_dir, c->sparsity ? dens : NULL);
    if (!rc) rc = write_floats(dir, "inputs.f32", x, B * d);
    if (!rc) rc = write_floats(dir, "expected_z.f32", z, B * n);
    if (!rc) rc = write_floats(dir, "expected_xhat.f32", xh, B * d);
    if (!rc && c->sparsity) rc = write_floats(dir, "sparsity.f32", dens, n);
    if (!rc) {
        const char *arch = c->arch == SAE_TOPK       ? "topk"
                           : c->arch == SAE_STANDARD ? "standard"
                                                     : "jumprelu"; /* batchtopk too */
        char js[1024];
        int w = snprintf(js, sizeof js,
                         "{\"name\": \"%s\", \"layout\": \"%s\", \"arch\": \"%s\", \"B\": %d,"
                         " \"d_in\": %zu, \"d_sae\": %zu, \"k\": %zu, \"has_sparsity\": %s,"
                         " \"meta\": {\"model_name\": \"%s\", \"hook_name\": \"%s\","
                         " \"hook_layer\": %lld, \"context_size\": %lld, \"prepend_bos\": true,"
                         " \"dataset_path\": \"%s\"}}\n",
                         c->name, c->layout, arch, B, d, n, k, c->sparsity ? "true" : "false",
                         s->meta.model_name, s->meta.hook_name, (long long)s->meta.hook_layer,
                         (long long)s->meta.context_size, s->meta.dataset_path);
        char p[4096];
        snprintf(p, sizeof p, "%s/case.json", dir);
        rc = (w > 0 && (size_t)w < sizeof js) ? file_write_atomic(p, js, (size_t)w) : SF_EINVAL;
    }
    sae_destroy(&s);
    return rc;
}

/* check_saelens.py beside this file, as the build names it, or from the repo root. */
static const char *script_path(void)
{
    static char p[4096];
    const char *src = __FILE__;
    const char *slash = strrchr(src, '/');
    snprintf(p, sizeof p, "%.*s/check_saelens.py", slash ? (int)(slash - src) : 1,
             slash ? src : ".");
    if (access(p, R_OK) == 0) return p;
    if (access("tests/unit/sae/check_saelens.py", R_OK) == 0)
        return "tests/unit/sae/check_saelens.py";
    return NULL;
}

int main(void)
{
    log_init("test_sae_export_check", LOG_LOGFMT, LOG_WARN);
    /* SAE_EXPORT_DIR=<dir> exports there and keeps the files (tests/integration) */
    const char *keep = getenv("SAE_EXPORT_DIR");
    char root[512];
    if (keep && *keep) {
        snprintf(root, sizeof root, "%s", keep);
        if (file_mkdirs(root, 0755) != 0) {
            fprintf(stderr, "cannot create %s\n", root);
            return 1;
        }
    } else {
        snprintf(root, sizeof root, "/tmp/test_sae_export_check.XXXXXX");
        if (!mkdtemp(root)) {
            perror("mkdtemp");
            return 1;
        }
    }
    char dirs[SF_ARRAY_LEN(cases)][600];
    for (size_t i = 0; i < SF_ARRAY_LEN(cases); i++) {
        snprintf(dirs[i], sizeof dirs[i], "%s/%s", root, cases[i].name);
        int rc = run_case(&cases[i], dirs[i], 1000 + i);
        CHECK_MSG(rc == 0, "%s: export failed: %s", cases[i].name, sf_strerror(rc));
    }

    /* the first python3 that has numpy: $SAEFLOW_PYTHON, python3 on PATH, Debian's */
    const char *candidates[] = {getenv("SAEFLOW_PYTHON"), "python3", "/usr/bin/python3"};
    const char *py = NULL;
    for (size_t i = 0; i < SF_ARRAY_LEN(candidates) && !py; i++) {
        char probe[512];
        if (!candidates[i] || !*candidates[i] || strchr(candidates[i], '\'')) continue;
        snprintf(probe, sizeof probe, "'%s' -c 'import numpy' >/dev/null 2>&1", candidates[i]);
        if (system(probe) == 0) py = candidates[i];
    }
    const char *script = script_path();
    int result;
    if (!py) {
        printf("skip: no python3 with numpy (set SAEFLOW_PYTHON)\n");
        result = check_failures_ ? check_exit() : TEST_SKIP;
    } else {
        CHECK_MSG(script != NULL, "check_saelens.py not found (run from the repository root)");
        if (script) {
            struct buf cmd;
            buf_init(&cmd, 1 << 16);
            buf_printf(&cmd, "'%s' '%s'", py, script);
            for (size_t i = 0; i < SF_ARRAY_LEN(cases); i++) buf_printf(&cmd, " '%s'", dirs[i]);
            fflush(stdout);
            int st = system(cmd.data);
            CHECK_MSG(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                      "check_saelens.py failed (status %d)", st);
            buf_fini(&cmd);
        }
        result = check_exit();
    }
    if (!(keep && *keep) && check_failures_ == 0) {
        char rm[600];
        snprintf(rm, sizeof rm, "rm -rf '%s'", root);
        if (system(rm) != 0) fprintf(stderr, "could not remove %s\n", root);
    }
    return result;
}

/* `saeflow sae info DIR`: what an SAE directory holds (SAELens v6 or sparsify layout,
 * auto-detected): architecture, sizes, dtype, provenance metadata, decoder-norm
 * statistics, thresholds, and, when sparsity.safetensors is present, dead and dense
 * latent counts. Exit 0, 1 when the directory is not a valid SAE, 2 on usage errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "sae/sae.h"
#include "sae/sae_io.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: saeflow sae info [--json] DIR\n"
               "  DIR: a SAELens directory (cfg.json + sae_weights.safetensors), a sparsify\n"
               "       hookpoint directory (cfg.json + sae.safetensors), or a sparsify\n"
               "       directory with exactly one hookpoint\n"
               "  --json  print one JSON object instead of the table\n");
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* min / median / mean / max of v (sorted in place). */
static void print_stats(const char *label, float *v, size_t n)
{
    if (n == 0) return;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    qsort(v, n, sizeof *v, cmp_float);
    double median = n % 2 ? v[n / 2] : 0.5 * ((double)v[n / 2 - 1] + v[n / 2]);
    /* + 0.0 prints -0 as 0 */
    printf("%-22s min %.6g  median %.6g  mean %.6g  max %.6g\n", label, (double)v[0] + 0.0,
           median + 0.0, sum / (double)n + 0.0, (double)v[n - 1] + 0.0);
}

struct stats4 {
    double min, median, mean, max;
};

static struct stats4 stats_of(float *v, size_t n)
{
    struct stats4 s = {0};
    if (n == 0) return s;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    qsort(v, n, sizeof *v, cmp_float);
    s.min = v[0];
    s.median = n % 2 ? v[n / 2] : 0.5 * ((double)v[n / 2 - 1] + v[n / 2]);
    s.mean = sum / (double)n;
    s.max = v[n - 1];
    return s;
}

static void json_stats(struct buf *b, const char *key, float *v, size_t n)
{
    struct stats4 s = stats_of(v, n);
    buf_printf(b, ",\"%s\":{\"min\":", key);
    buf_json_number(b, s.min);
    buf_printf(b, ",\"median\":");
    buf_json_number(b, s.median);
    buf_printf(b, ",\"mean\":");
    buf_json_number(b, s.mean);
    buf_printf(b, ",\"max\":");
    buf_json_number(b, s.max);
    buf_printf(b, "}");
}

static void json_kv(struct buf *b, const char *key, const char *value)
{
    buf_printf(b, ",\"%s\":", key);
    if (value && *value)
        buf_json_string(b, value);
    else
        buf_printf(b, "null");
}

/* Loads the SAE at path (or the one hook directory below it); says why not. */
static int load_sae(const char *path, struct sae **sae, struct sae_io_info *info)
{
    int rc = sae_io_load_info(path, sae, info);
    if (rc)
        fprintf(stderr,
                "saeflow sae info: %s is not a readable SAE directory (%s); see the log "
                "line above for why\n",
                path, sf_strerror(rc));
    return rc;
}

/* The same facts as the table, as one JSON object on stdout. */
static int sae_info_json(const struct sae *sae, const struct sae_io_info *info)
{
    const struct sae_meta *m = &sae->meta;
    const size_t n = sae->n, d = sae->d_in;
    struct buf b;
    buf_init(&b, (size_t)1 << 24);
    float *v = malloc(n * sizeof *v);
    int ret = 1;
    if (!v) goto out;
    buf_printf(&b, "{\"directory\":");
    buf_json_string(&b, info->dir);
    json_kv(&b, "layout", info->layout == SAE_IO_SAELENS ? "saelens" : "sparsify");
    json_kv(&b, "architecture", info->architecture);
    json_kv(&b, "saeflow_arch", sae_arch_name(sae->arch));
    buf_printf(&b, ",\"d_in\":%zu,\"d_sae\":%zu,\"k\":", d, n);
    if (sae->arch == SAE_TOPK)
        buf_printf(&b, "%zu", sae->k);
    else
        buf_printf(&b, "null");
    json_kv(&b, "dtype", info->cfg_dtype);
    json_kv(&b, "weights_dtype", info->weights_dtype);
    json_kv(&b, "sae_lens_version", info->layout == SAE_IO_SAELENS ? info->sae_lens_version : NULL);
    json_kv(&b, "model", m->model_name);
    json_kv(&b, "hook", m->hook_name);
    buf_printf(&b, ",\"hook_layer\":");
    if (m->hook_layer >= 0)
        buf_printf(&b, "%lld", (long long)m->hook_layer);
    else
        buf_printf(&b, "null");
    buf_printf(&b, ",\"context_size\":");
    if (m->context_size > 0)
        buf_printf(&b, "%lld", (long long)m->context_size);
    else
        buf_printf(&b, "null");
    buf_printf(&b, ",\"prepend_bos\":%s,\"exclude_special_tokens\":%s",
               m->prepend_bos ? "true" : "false", m->exclude_special_tokens ? "true" : "false");
    json_kv(&b, "dataset", m->dataset_path);
    size_t unit = 0;
    for (size_t i = 0; i < n; i++) {
        double s = 0.0;
        for (size_t j = 0; j < d; j++) s += (double)sae->W_dec[i * d + j] * sae->W_dec[i * d + j];
        v[i] = (float)sqrt(s);
        unit += fabs(v[i] - 1.0) <= 1e-3;
    }
    json_stats(&b, "decoder_row_norms", v, n);
    buf_printf(&b, ",\"unit_decoder_rows\":%zu", unit);
    for (size_t i = 0; i < n; i++) {
        double s = 0.0;
        for (size_t j = 0; j < d; j++) s += (double)sae->W_enc[i * d + j] * sae->W_enc[i * d + j];
        v[i] = (float)sqrt(s);
    }
    json_stats(&b, "encoder_row_norms", v, n);
    if (sae->threshold) {
        memcpy(v, sae->threshold, n * sizeof *v);
        json_stats(&b, "threshold", v, n);
    }
    buf_printf(&b, ",\"sparsity\":");
    if (info->layout == SAE_IO_SAELENS && info->has_sparsity) {
        int rc = sae_io_read_sparsity(info->dir, n, v);
        if (rc) {
            fprintf(stderr, "saeflow sae info: %s/%s is malformed (%s)\n", info->dir,
                    SAE_IO_SAELENS_SPARSITY, sf_strerror(rc));
            goto out;
        }
        size_t dead = 0, dense1 = 0, dense10 = 0;
        for (size_t i = 0; i < n; i++) {
            dead += v[i] <= -9.999f;
            dense1 += v[i] > -2.0f;
            dense10 += v[i] > -1.0f;
        }
        buf_printf(&b, "{\"dead\":%zu,\"dense_1pct\":%zu,\"dense_10pct\":%zu", dead, dense1,
                   dense10);
        json_stats(&b, "log10_density", v, n);
        buf_printf(&b, "}");
    } else {
        buf_printf(&b, "null");
    }
    if (buf_printf(&b, "}\n") < 0) goto out;
    fwrite(b.data, 1, b.len, stdout);
    ret = 0;
out:
    if (ret && !v) fprintf(stderr, "saeflow sae info: out of memory\n");
    free(v);
    buf_fini(&b);
    return ret;
}

static const char *or_dash(const char *s)
{
    return s && *s ? s : "-";
}

static int sae_info(const struct sae *sae, const struct sae_io_info *info)
{
    int rc;
    const struct sae_meta *m = &sae->meta;
    printf("%-22s %s\n", "directory", info->dir);
    printf("%-22s %s\n", "layout", info->layout == SAE_IO_SAELENS ? "saelens" : "sparsify");
    printf("%-22s %s (saeflow arch %s)\n", "architecture", info->architecture,
           sae_arch_name(sae->arch));
    printf("%-22s %zu\n", "d_in", sae->d_in);
    printf("%-22s %zu (%.3gx d_in)\n", "d_sae", sae->n, (double)sae->n / (double)sae->d_in);
    if (sae->arch == SAE_TOPK)
        printf("%-22s %zu\n", "k", sae->k);
    else
        printf("%-22s -\n", "k");
    printf("%-22s %s (weights %s)\n", "dtype", or_dash(info->cfg_dtype), info->weights_dtype);
    if (info->layout == SAE_IO_SAELENS)
        printf("%-22s %s\n", "sae_lens_version", or_dash(info->sae_lens_version));
    printf("%-22s %s\n", "model", or_dash(m->model_name));
    if (m->hook_layer >= 0)
        printf("%-22s %s (layer %lld)\n", "hook", or_dash(m->hook_name), (long long)m->hook_layer);
    else
        printf("%-22s %s\n", "hook", or_dash(m->hook_name));
    if (m->context_size > 0)
        printf("%-22s %lld\n", "context_size", (long long)m->context_size);
    else
        printf("%-22s -\n", "context_size");
    printf("%-22s %s\n", "prepend_bos", m->prepend_bos ? "true" : "false");
    printf("%-22s %s\n", "exclude_special_tokens", m->exclude_special_tokens ? "true" : "false");
    printf("%-22s %s\n", "dataset", or_dash(m->dataset_path));

    const size_t n = sae->n, d = sae->d_in;
    float *v = malloc(n * sizeof *v);
    if (!v) {
        fprintf(stderr, "saeflow sae info: out of memory\n");
        return 1;
    }
    size_t unit = 0;
    for (size_t i = 0; i < n; i++) {
        double s = 0.0;
        for (size_t j = 0; j < d; j++) s += (double)sae->W_dec[i * d + j] * sae->W_dec[i * d + j];
        v[i] = (float)sqrt(s);
        unit += fabs(v[i] - 1.0) <= 1e-3;
    }
    print_stats("decoder row norms", v, n);
    printf("%-22s %zu of %zu within 1e-3 of 1\n", "unit decoder rows", unit, n);
    for (size_t i = 0; i < n; i++) {
        double s = 0.0;
        for (size_t j = 0; j < d; j++) s += (double)sae->W_enc[i * d + j] * sae->W_enc[i * d + j];
        v[i] = (float)sqrt(s);
    }
    print_stats("encoder row norms", v, n);
    if (sae->threshold) {
        memcpy(v, sae->threshold, n * sizeof *v);
        print_stats("threshold", v, n);
    }

    if (info->layout == SAE_IO_SAELENS && info->has_sparsity) {
        rc = sae_io_read_sparsity(info->dir, n, v);
        if (rc) {
            fprintf(stderr, "saeflow sae info: %s/%s is malformed (%s)\n", info->dir,
                    SAE_IO_SAELENS_SPARSITY, sf_strerror(rc));
            free(v);
            return 1;
        }
        /* log10 density; SAELens stores log10(density + 1e-10), so never fired = -10 */
        size_t dead = 0, dense1 = 0, dense10 = 0;
        for (size_t i = 0; i < n; i++) {
            dead += v[i] <= -9.999f;
            dense1 += v[i] > -2.0f;
            dense10 += v[i] > -1.0f;
        }
        printf("%-22s %zu (%.2f%%, log10 density <= -10)\n", "dead latents", dead,
               100.0 * (double)dead / (double)n);
        printf("%-22s %zu (%.2f%%)\n", "dense latents > 1%", dense1,
               100.0 * (double)dense1 / (double)n);
        printf("%-22s %zu (%.2f%%)\n", "dense latents > 10%", dense10,
               100.0 * (double)dense10 / (double)n);
        print_stats("log10 density", v, n);
    } else {
        printf("%-22s none (no %s)\n", "sparsity", SAE_IO_SAELENS_SPARSITY);
    }
    free(v);
    return 0;
}

int cmd_sae_info(int argc, char **argv)
{
    const char *dir = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (flag_eq(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (flag_eq(argv[i], "--json")) {
            json = true;
            continue;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "saeflow sae info: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
        if (dir) {
            fprintf(stderr, "saeflow sae info: one directory only\n");
            usage(stderr);
            return 2;
        }
        dir = argv[i];
    }
    if (!dir) {
        usage(stderr);
        return 2;
    }
    struct sae *sae = NULL;
    struct sae_io_info info;
    if (load_sae(dir, &sae, &info)) return 1;
    int ret = json ? sae_info_json(sae, &info) : sae_info(sae, &info);
    sae_destroy(&sae);
    return ret;
}

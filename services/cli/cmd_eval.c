/* `saeflow eval`: evaluates an SAE spliced into its model on held-out text and prints
 * the report (FVU, L0, dead/dense latents, CE loss recovered, KL) as a table and/or
 * JSON. With --store it also harvests per-feature statistics, examples, logit effects
 * and neighbours into a feature store (common/eval/feature_store.h), as the eval
 * service does. Exit 0, 1 on a runtime failure, 2 on usage errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"
#include "eval/eval.h"
#include "eval/feature_store.h"
#include "eval/harvest.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "sae/sae.h"
#include "sae/sae_io.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: saeflow eval --sae DIR --model M --data FILE [options]\n"
            "  --sae DIR          SAELens or sparsify SAE directory\n"
            "  --model M          model file or directory (llama2.c .bin, GGUF, HF dir)\n"
            "  --tokenizer F      tokenizer file for llama2.c models (default: beside the model)\n"
            "  --data FILE        held-out text, JSONL with a \"text\" field\n"
            "  --field NAME       JSONL field (default text)\n"
            "  --first-line N     skip JSONL lines before line N (1-based; default 1)\n"
            "  --tokens N         evaluate on about N tokens (default 65536; 0 = all)\n"
            "  --context N        tokens per window (default 128)\n"
            "  --batch N          windows per forward pass (default 8)\n"
            "  --hook NAME        hook point (default: the SAE's metadata)\n"
            "  --store DIR        also harvest features into this feature store (created)\n"
            "  --sae-id ID        SAE id in the store (default: the SAE directory's name)\n"
            "  --replace          let a different SAE replace the one stored under the id\n"
            "  --json             print only the JSON report\n");
}

static int need_arg(int argc, char **argv, int i)
{
    if (i + 1 >= argc) {
        fprintf(stderr, "saeflow eval: %s needs a value\n", argv[i]);
        return -1;
    }
    return 0;
}

/* Progress of the eval and harvest passes and the store writes, on stderr. */
static void on_progress(void *ud, const char *stage, size_t done, size_t total)
{
    struct progress *p = ud;
    progress_update(p, done == total, "saeflow eval: %s %zu/%zu windows (%.0f%%)", stage, done,
                    total, total ? 100.0 * (double)done / (double)total : 100.0);
}

static int on_store_progress(void *ud, uint32_t done, uint32_t n)
{
    struct progress *p = ud;
    progress_update(p, done == n, "saeflow eval: stored %u/%u features (%.0f%%)", done, n,
                    n ? 100.0 * done / n : 100.0);
    return sig_stop_requested() ? SF_EXIT : 0;
}

static int parse_size(const char *flag, const char *s, size_t *out)
{
    int64_t v;
    if (parse_i64(s, &v) < 0 || v < 0) {
        fprintf(stderr, "saeflow eval: %s wants a non-negative integer, got '%s'\n", flag, s);
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

static void derive_sae_id(const char *dir, char *out, size_t cap)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
    const char *base = strrchr(tmp, '/');
    base = base ? base + 1 : tmp;
    size_t j = 0;
    for (const char *p = base; *p && j + 1 < cap; p++)
        out[j++] = feature_store_id_char(*p) ? *p : '_';
    out[j] = 0;
    if (j == 0) snprintf(out, cap, "sae");
}

int cmd_eval(int argc, char **argv)
{
    const char *sae_dir = NULL, *model_path = NULL, *tok_path = NULL, *data_path = NULL;
    const char *hook = NULL, *store_dir = NULL, *sae_id_arg = NULL, *field = "text";
    size_t first_line = 1, tokens = 65536, context = 128, batch = 8;
    bool json_only = false, replace = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (flag_eq(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        }
        if (flag_eq(a, "--json")) {
            json_only = true;
            continue;
        }
        if (!strcmp(a, "--replace")) {
            replace = true;
            continue;
        }
        if (a[0] != '-' || need_arg(argc, argv, i) < 0) {
            if (a[0] != '-') fprintf(stderr, "saeflow eval: unexpected argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (flag_eq(a, "--sae"))
            sae_dir = v;
        else if (flag_eq(a, "--model"))
            model_path = v;
        else if (flag_eq(a, "--tokenizer"))
            tok_path = v;
        else if (flag_eq(a, "--data"))
            data_path = v;
        else if (flag_eq(a, "--field"))
            field = v;
        else if (flag_eq(a, "--hook"))
            hook = v;
        else if (flag_eq(a, "--store"))
            store_dir = v;
        else if (flag_eq(a, "--sae-id"))
            sae_id_arg = v;
        else if (flag_eq(a, "--first-line")) {
            if (parse_size(a, v, &first_line) < 0) return 2;
        } else if (flag_eq(a, "--tokens")) {
            if (parse_size(a, v, &tokens) < 0) return 2;
        } else if (flag_eq(a, "--context")) {
            if (parse_size(a, v, &context) < 0 || context < 2) {
                fprintf(stderr, "saeflow eval: --context must be >= 2\n");
                return 2;
            }
        } else if (flag_eq(a, "--batch")) {
            if (parse_size(a, v, &batch) < 0 || batch < 1) {
                fprintf(stderr, "saeflow eval: --batch must be >= 1\n");
                return 2;
            }
        } else {
            fprintf(stderr, "saeflow eval: unknown option %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!sae_dir || !model_path || !data_path) {
        fprintf(stderr, "saeflow eval: --sae, --model and --data are required\n");
        usage(stderr);
        return 2;
    }
    char sae_id[FEATURE_STORE_MAX_ID + 1];
    if (sae_id_arg) {
        if (feature_store_check_id(sae_id_arg) < 0) {
            fprintf(stderr,
                    "saeflow eval: --sae-id must be 1..%d characters of "
                    "[A-Za-z0-9._:/@+-]\n",
                    FEATURE_STORE_MAX_ID);
            return 2;
        }
        snprintf(sae_id, sizeof sae_id, "%s", sae_id_arg);
    } else {
        derive_sae_id(sae_dir, sae_id, sizeof sae_id);
    }

    int ret = 1;
    struct model *m = NULL;
    struct sae *sae = NULL;
    struct eval_data *data = NULL;
    struct harvest *hv = NULL;
    struct feature_store *fs = NULL;
    float *density = NULL;
    struct buf out;
    buf_init(&out, (size_t)1 << 26);
    struct progress prog;
    progress_init(&prog, stderr, 10);

    /* The store's lock first: a second writer fails now, not after the evaluation. */
    int orc = store_dir ? feature_store_open(&fs, store_dir) : 0;
    if (orc < 0) {
        fprintf(stderr, "saeflow eval: cannot open the feature store %s as its writer: %s\n",
                store_dir,
                orc == SF_ESTATE    ? "another process holds it (see the log line above)"
                : orc == SF_EFORMAT ? "it is damaged and was left untouched (see the log line "
                                      "above)"
                                    : "see the log line above");
        goto out;
    }
    struct model_load_opts lo = {.tokenizer_path = tok_path};
    if (model_load(model_path, &lo, &m) < 0) {
        fprintf(stderr, "saeflow eval: cannot load the model %s (see the log line above)\n",
                model_path);
        goto out;
    }
    if (!model_tokenizer(m)) {
        fprintf(stderr, "saeflow eval: the model %s has no tokenizer (give --tokenizer)\n",
                model_path);
        goto out;
    }
    if (sae_io_load(sae_dir, &sae) < 0) {
        fprintf(stderr,
                "saeflow eval: %s is not a readable SAE directory (see the log line "
                "above)\n",
                sae_dir);
        goto out;
    }
    size_t layer;
    enum model_hook_point point;
    if (eval_resolve_hook(m, sae, hook, &layer, &point) < 0) {
        fprintf(stderr, "saeflow eval: the SAE does not fit this model at hook %s\n",
                hook ? hook : (sae->meta.hook_name[0] ? sae->meta.hook_name : "(none)"));
        ret = 2;
        goto out;
    }
    if (fs) {
        struct feature_sae want = {.d_in = (uint32_t)sae->d_in,
                                   .d_sae = (uint32_t)sae->n,
                                   .k = (uint32_t)sae->k,
                                   .fingerprint = sae_fingerprint(sae)};
        snprintf(want.arch, sizeof want.arch, "%s", sae_arch_name(sae->arch));
        model_hook_name(layer, point, want.hook, sizeof want.hook);
        char why[1024];
        int crc = feature_store_check_sae(fs, sae_id, &want, why, sizeof why);
        if (crc < 0) {
            fprintf(stderr, "saeflow eval: cannot read the SAE record %s in %s\n", sae_id,
                    store_dir);
            goto out;
        }
        if (crc == FEATURE_SAE_OTHER && !replace) {
            fprintf(stderr,
                    "saeflow eval: %s: %s.\n  Give another --sae-id, or --replace to overwrite "
                    "its features.\n",
                    store_dir, why);
            ret = 2;
            goto out;
        }
        if (crc == FEATURE_SAE_OTHER || crc == FEATURE_SAE_UNVERIFIED)
            fprintf(stderr, "saeflow eval: %s: %s; replacing it\n", store_dir, why);
    }
    struct eval_data_opts dopts;
    eval_data_opts_default(&dopts);
    dopts.context = context;
    const struct model_config *mc = model_config(m);
    if (mc->max_seq_len && dopts.context > mc->max_seq_len) dopts.context = mc->max_seq_len;
    dopts.max_tokens = tokens;
    dopts.first_line = first_line;
    dopts.field = field;
    if (eval_data_from_jsonl(model_tokenizer(m), data_path, &dopts, &data) < 0) {
        fprintf(stderr, "saeflow eval: no usable held-out text in %s\n", data_path);
        goto out;
    }
    struct eval_opts eo;
    eval_opts_default(&eo);
    eo.hook = hook;
    eo.batch_seqs = batch;
    eo.progress = on_progress;
    eo.progress_ud = &prog;
    struct eval_metrics em;
    density = malloc(sae->n * sizeof *density);
    int erc = density ? eval_metrics_run(m, sae, data, &eo, &em, density) : SF_ENOMEM;
    progress_end(&prog);
    if (erc < 0) {
        fprintf(stderr, "saeflow eval: evaluation failed (see the log line above)\n");
        goto out;
    }
    if (!json_only) {
        buf_printf(&out, "%-28s %s\n%-28s %s\n", "sae", sae_dir, "model", model_path);
        eval_metrics_table(&em, &out);
        buf_printf(&out, "\n");
    }
    size_t json_at = out.len;
    if (eval_metrics_json(&em, &out) < 0) goto out;
    buf_printf(&out, "\n");

    if (store_dir) {
        struct harvest_opts ho;
        harvest_opts_default(&ho);
        ho.hook = hook;
        ho.batch_seqs = batch;
        ho.progress = on_progress;
        ho.progress_ud = &prog;
        int hrc = harvest_run(m, sae, data, &ho, &hv);
        progress_end(&prog);
        if (hrc < 0) {
            fprintf(stderr, "saeflow eval: harvesting failed (see the log line above)\n");
            goto out;
        }
        struct feature_run_info run = {0};
        char *mj = strndup(out.data + json_at, out.len - json_at - 1);
        if (!mj) goto out;
        struct harvest_store_info si = {.sae_id = sae_id,
                                        .model = model_name(m),
                                        .source = sae_dir,
                                        .dataset = data_path,
                                        .metrics_json = mj};
        int rc = harvest_store(hv, fs, &si, &run, on_store_progress, &prog);
        progress_end(&prog);
        free(mj);
        if (rc < 0) {
            fprintf(stderr, "saeflow eval: writing the feature store failed (see the log)\n");
            goto out;
        }
        if (!json_only)
            buf_printf(&out, "stored %u features of %s in %s (run %llu, harvest %.2f s)\n",
                       (unsigned)run.features_done, sae_id, store_dir,
                       (unsigned long long)run.run_id, harvest_seconds(hv));
    }
    fwrite(out.data, 1, out.len, stdout);
    ret = 0;
out:
    buf_fini(&out);
    free(density);
    feature_store_close(&fs);
    harvest_destroy(&hv);
    eval_data_destroy(&data);
    sae_destroy(&sae);
    model_destroy(&m);
    return ret;
}

/* `saeflow store list [--store DIR] [--json]`: the SAEs in a feature store and each
 * one's eval runs (state, tokens, features done), read through a RocksDB secondary
 * instance (common/eval/feature_store.h), so it works while eval is writing and never
 * changes the store. Exit 0, 1 when the store cannot be read, 2 on usage errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/core.h"
#include "eval/feature_store.h"

struct list_ctx {
    struct feature_store *fs;
    bool json;
    size_t n_saes, n_runs; /* listed so far (n_runs: of the current SAE) */
    struct buf *out;
    int rc;
};

static void fmt_time(int64_t ms, char *out, size_t cap)
{
    if (ms <= 0) {
        snprintf(out, cap, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static int on_run(void *ud, const struct feature_run_info *r)
{
    struct list_ctx *c = ud;
    char started[32], finished[32];
    fmt_time(r->started_ms, started, sizeof started);
    fmt_time(r->finished_ms, finished, sizeof finished);
    if (c->json) {
        buf_printf(c->out, "%s{\"run\":%llu,\"state\":", c->n_runs ? "," : "",
                   (unsigned long long)r->run_id);
        buf_json_string(c->out, feature_state_name(r->state));
        buf_printf(c->out, ",\"tokens\":%llu,\"features_done\":%u,\"n_features\":%u,\"started\":",
                   (unsigned long long)r->tokens, r->features_done, r->n_features);
        buf_json_string(c->out, started);
        buf_printf(c->out, ",\"finished\":");
        buf_json_string(c->out, finished);
        buf_printf(c->out, ",\"dataset\":");
        buf_json_string(c->out, r->dataset);
        buf_printf(c->out, "}");
    } else {
        buf_printf(
            c->out, "    run %-4llu %-10s tokens=%llu features=%u/%u started=%s finished=%s\n",
            (unsigned long long)r->run_id, feature_state_name(r->state),
            (unsigned long long)r->tokens, r->features_done, r->n_features, started, finished);
    }
    c->n_runs++;
    return 0;
}

static int on_sae(void *ud, const struct feature_sae *s)
{
    struct list_ctx *c = ud;
    size_t nth = c->n_saes;
    if (c->json) {
        buf_printf(c->out, "%s{\"sae_id\":", nth ? "," : "");
        buf_json_string(c->out, s->sae_id);
        buf_printf(c->out, ",\"model\":");
        buf_json_string(c->out, s->model);
        buf_printf(c->out, ",\"hook\":");
        buf_json_string(c->out, s->hook);
        buf_printf(c->out, ",\"arch\":");
        buf_json_string(c->out, s->arch);
        buf_printf(c->out, ",\"d_in\":%u,\"d_sae\":%u,\"k\":%u,\"state\":", s->d_in, s->d_sae,
                   s->k);
        buf_json_string(c->out, feature_state_name(s->state));
        buf_printf(c->out, ",\"latest_run\":%llu,\"source\":", (unsigned long long)s->latest_run);
        buf_json_string(c->out, s->source);
        buf_printf(c->out, ",\"runs\":[");
    } else {
        buf_printf(c->out, "%s  model=%s hook=%s arch=%s d_in=%u d_sae=%u k=%u state=%s\n",
                   s->sae_id, s->model, s->hook, s->arch, s->d_in, s->d_sae, s->k,
                   feature_state_name(s->state));
    }
    c->n_runs = 0;
    int rc = feature_store_list_runs(c->fs, s->sae_id, on_run, c);
    if (rc < 0) {
        c->rc = rc;
        return rc;
    }
    if (c->json) buf_printf(c->out, "]}");
    c->n_saes = nth + 1;
    return 0;
}

int cmd_store_list(int argc, char **argv)
{
    char *store = NULL;
    bool json = false;
    const struct config_opt opts[] = {
        {"store", CFG_STRING, &store, NULL, 0, -1, "feature store directory (or $SAEFLOW_STORE)"},
        {"json", CFG_BOOL, &json, "false", 0, -1, "print one JSON object"},
    };
    struct config cfg = {.service = "store",
                         .usage = "saeflow store list [--store DIR] [--json]",
                         .opts = opts,
                         .n_opts = SF_ARRAY_LEN(opts)};
    int rc = config_load(&cfg, argc, argv);
    int ret = 2;
    struct feature_store *fs = NULL;
    struct buf out;
    buf_init(&out, (size_t)1 << 28);
    if (rc == SF_EXIT) {
        ret = 0;
        goto done;
    }
    if (rc) goto done;
    log_set_level(cfg.log_level);
    const char *path = *store                  ? store
                       : cfg.n_positional == 1 ? cfg.positional[0]
                                               : env_or("SAEFLOW_STORE", "");
    if (cfg.n_positional > 1 || (cfg.n_positional == 1 && *store) || !*path) {
        fprintf(stderr,
                "saeflow store list: give the store: --store DIR (or set SAEFLOW_STORE)\n"
                "usage: %s\n",
                cfg.usage);
        goto done;
    }
    ret = 1;
    rc = feature_store_open_reader(&fs, path, NULL);
    if (rc) {
        fprintf(stderr, "saeflow store list: cannot open the feature store %s (%s)\n", path,
                rc == SF_NOTFOUND ? "no store there" : sf_strerror(rc));
        goto done;
    }
    struct list_ctx c = {.fs = fs, .json = json, .out = &out};
    if (json) {
        buf_printf(&out, "{\"store\":");
        buf_json_string(&out, path);
        buf_printf(&out, ",\"saes\":[");
    }
    rc = feature_store_list_saes(fs, on_sae, &c);
    if (rc < 0 || c.rc < 0) {
        fprintf(stderr, "saeflow store list: reading %s failed (%s)\n", path,
                sf_strerror(rc < 0 ? rc : c.rc));
        goto done;
    }
    if (json)
        buf_printf(&out, "]}\n");
    else if (c.n_saes == 0)
        buf_printf(&out, "(no SAEs in %s)\n", path);
    else
        buf_printf(&out, "%zu SAE%s in %s\n", c.n_saes, c.n_saes == 1 ? "" : "s", path);
    if (out.len) fwrite(out.data, 1, out.len, stdout);
    ret = 0;
done:
    feature_store_close(&fs);
    buf_fini(&out);
    config_free(&cfg);
    return ret;
}

/* saeflow-eval: evaluates SAE checkpoints on held-out text and harvests their features
 * into the feature store (common/eval: eval.h, harvest.h, feature_store.h).
 *
 * SAEs come from two places: directories given with --sae (evaluated at start), and
 * CheckpointReady announcements from trainers (a SUB socket connected to each
 * --subscribe endpoint, topic "checkpoint/"). Announcements that arrive while an
 * evaluation runs are coalesced: only the newest per SAE id is evaluated next.
 * The model and the held-out windows are loaded once. Each evaluation computes the
 * metrics (FVU, L0, dead/dense, CE loss recovered, KL), then harvests every feature
 * and writes a run into the store (this process is its one writer; readers use
 * secondaries). /metrics and /healthz on --metrics_port.
 *
 * Store ids: --sae dirs use --sae_id (comma-separated, in order) or the directory's
 * name; announcements use their sae_id, both prefixed with --id_prefix. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "eval/eval.h"
#include "eval/feature_store.h"
#include "eval/harvest.h"
#include "http/http.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "sae/sae.h"
#include "sae/sae_io.h"
#include "wire/wire.h"

#define MAX_SAES    64
#define MAX_SUBS    16
#define MAX_PENDING 64

struct opts {
    char *model, *tokenizer, *data, *field, *store, *sae, *sae_id, *subscribe, *id_prefix;
    char *metrics_addr, *hook;
    int64_t first_line, last_line, tokens, context, batch_seqs, metrics_port, chunk_features;
    bool exit_when_done;
};

struct pending {
    char sae_id[FEATURE_STORE_MAX_ID + 1];
    char path[WIRE_MAX_PATH_LEN + 1];
    uint64_t step;
    bool used;
};

struct svc {
    struct opts o;
    struct model *model;
    struct eval_data *data;
    struct feature_store *fs;
    struct wire_sock *sub;
    struct pending pending[MAX_PENDING];
    struct metrics *reg;
    struct metric *m_evals_ok, *m_evals_failed, *m_received, *m_coalesced, *m_rejected;
    struct metric *m_features, *m_busy, *m_last_s;
    struct metrics_family *f_fvu, *f_l0, *f_dead, *f_lr_zero, *f_lr_mean, *f_kl;
    bool store_ok;
    uint32_t last_done; /* features stored by the current run so far */
};

static int health(void *ud, char *reason, size_t len)
{
    struct svc *S = ud;
    if (!S->store_ok) {
        snprintf(reason, len, "feature store not writable");
        return 1;
    }
    return 0;
}

/* prefix + name, with characters outside the id alphabet replaced by '_'. */
static int make_id(const char *prefix, const char *name, char *out, size_t cap)
{
    snprintf(out, cap, "%s%s", prefix ? prefix : "", name);
    for (char *p = out; *p; p++)
        if (!feature_store_id_char(*p)) *p = '_';
    return feature_store_check_id(out);
}

static void dir_name(const char *dir, char *out, size_t cap)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", dir);
    size_t n = strlen(tmp);
    while (n > 1 && tmp[n - 1] == '/') tmp[--n] = 0;
    const char *b = strrchr(tmp, '/');
    snprintf(out, cap, "%s", b ? b + 1 : tmp);
}

static int on_progress(void *ud, uint32_t done, uint32_t n)
{
    struct svc *S = ud;
    (void)n;
    metrics_add(S->m_features, (double)(done - S->last_done));
    S->last_done = done;
    return sig_stop_requested() ? SF_EXIT : 0;
}

/* Evaluates one SAE directory end to end. 0 or negative. */
static int evaluate(struct svc *S, const char *sae_id, const char *path, uint64_t step)
{
    double t0 = time_now_s();
    struct sae *sae = NULL;
    struct harvest *hv = NULL;
    struct buf json;
    buf_init(&json, 1 << 20);
    metrics_set(S->m_busy, 1);
    log_info("eval_start", "sae=%s path=%s step=%llu", sae_id, path, (unsigned long long)step);
    /* a trainer may be replacing the export right now: try again briefly */
    int rc = sae_io_load(path, &sae);
    for (int attempt = 1; rc < 0 && attempt < 3 && !sig_stop_requested(); attempt++) {
        time_sleep_ms(500);
        rc = sae_io_load(path, &sae);
    }
    if (rc < 0) goto out;
    struct eval_opts eo;
    eval_opts_default(&eo);
    eo.hook = S->o.hook && *S->o.hook ? S->o.hook : NULL;
    eo.batch_seqs = (size_t)S->o.batch_seqs;
    struct eval_metrics em;
    rc = eval_metrics_run(S->model, sae, S->data, &eo, &em, NULL);
    if (rc < 0) goto out;
    rc = eval_metrics_json(&em, &json);
    if (rc < 0) goto out;
    struct harvest_opts ho;
    harvest_opts_default(&ho);
    ho.hook = eo.hook;
    ho.batch_seqs = eo.batch_seqs;
    ho.chunk_features = (size_t)S->o.chunk_features;
    rc = harvest_run(S->model, sae, S->data, &ho, &hv);
    if (rc < 0) goto out;
    struct harvest_store_info si = {.sae_id = sae_id,
                                    .model = model_name(S->model),
                                    .source = path,
                                    .dataset = S->o.data,
                                    .metrics_json = json.data,
                                    .step = step};
    struct feature_run_info run;
    S->last_done = 0;
    rc = harvest_store(hv, S->fs, &si, &run, on_progress, S);
    if (rc == SF_EIO || rc == SF_ESTATE) S->store_ok = false; /* the store refuses writes */
    if (rc != 0) goto out; /* SF_EXIT: stopped by a signal, the run is marked failed */
    metrics_set(metrics_child(S->f_fvu, sae_id, NULL), em.fvu);
    metrics_set(metrics_child(S->f_l0, sae_id, NULL), em.l0);
    metrics_set(metrics_child(S->f_dead, sae_id, NULL), em.dead_frac);
    metrics_set(metrics_child(S->f_lr_zero, sae_id, NULL), em.loss_recovered_zero);
    metrics_set(metrics_child(S->f_lr_mean, sae_id, NULL), em.loss_recovered_mean);
    metrics_set(metrics_child(S->f_kl, sae_id, NULL), em.kl_sae);
    log_info("eval_stored",
             "sae=%s run=%llu step=%llu fvu=%.5f l0=%.2f dead=%.4f "
             "loss_recovered=%.4f s=%.1f",
             sae_id, (unsigned long long)run.run_id, (unsigned long long)step, em.fvu, em.l0,
             em.dead_frac, em.loss_recovered_zero, time_now_s() - t0);
out:
    if (rc == SF_EXIT) {
        log_warn("eval_interrupted", "sae=%s path=%s", sae_id, path);
    } else if (rc < 0) {
        metrics_inc(S->m_evals_failed);
        log_error("eval_failed", "sae=%s path=%s err=%s", sae_id, path, sf_strerror(rc));
    } else {
        metrics_inc(S->m_evals_ok);
    }
    metrics_set(S->m_last_s, time_now_s() - t0);
    metrics_set(S->m_busy, 0);
    harvest_destroy(&hv);
    sae_destroy(&sae);
    buf_fini(&json);
    return rc;
}

/* Keeps the newest announcement per SAE id. */
static void enqueue(struct svc *S, const Saeflow__CheckpointReady *c)
{
    char id[FEATURE_STORE_MAX_ID + 1];
    if (make_id(S->o.id_prefix, c->sae_id, id, sizeof id) < 0 || !c->path || !*c->path) {
        log_warn("checkpoint_ignored", "reason=bad_id_or_path sae=%s", c->sae_id);
        return;
    }
    if (c->format && *c->format && strcmp(c->format, "saelens") != 0) {
        log_warn("checkpoint_ignored", "reason=format format=%s sae=%s", c->format, c->sae_id);
        return;
    }
    struct pending *slot = NULL;
    for (size_t i = 0; i < MAX_PENDING; i++)
        if (S->pending[i].used && !strcmp(S->pending[i].sae_id, id)) {
            slot = &S->pending[i];
            metrics_inc(S->m_coalesced);
            break;
        }
    for (size_t i = 0; i < MAX_PENDING && !slot; i++)
        if (!S->pending[i].used) slot = &S->pending[i];
    if (!slot) {
        log_warn("checkpoint_dropped", "reason=queue_full sae=%s", id);
        return;
    }
    snprintf(slot->sae_id, sizeof slot->sae_id, "%s", id);
    snprintf(slot->path, sizeof slot->path, "%s", c->path);
    slot->step = c->step;
    slot->used = true;
    log_info("checkpoint_received", "sae=%s path=%s step=%llu trainer=%s", id, c->path,
             (unsigned long long)c->step, c->trainer_id);
}

/* Reads every announcement waiting (up to timeout_ms for the first). */
static void poll_announcements(struct svc *S, int timeout_ms)
{
    if (!S->sub) {
        time_sleep_ms(timeout_ms);
        return;
    }
    struct wire_msg m = {0};
    for (int i = 0; i < 1000; i++) {
        int rc = wire_recv(S->sub, &m, i == 0 ? timeout_ms : 0);
        if (rc == SF_AGAIN || rc < 0) break;
        if (rc == WIRE_REJECTED) {
            metrics_inc(S->m_rejected);
            continue;
        }
        if (m.kind == WIRE_CHECKPOINT) {
            metrics_inc(S->m_received);
            enqueue(S, m.checkpoint);
        }
    }
    wire_msg_fini(&m);
}

int main(int argc, char **argv)
{
    proc_reexec_with_env(argv, "OMP_WAIT_POLICY", "passive");
    struct svc svc = {0};
    struct svc *S = &svc;
    struct opts *o = &S->o;
    const struct config_opt table[] = {
        {"model", CFG_STRING, &o->model, NULL, 0, -1, "model file or directory (required)"},
        {"tokenizer", CFG_STRING, &o->tokenizer, NULL, 0, -1, "tokenizer file (llama2.c)"},
        {"data", CFG_STRING, &o->data, NULL, 0, -1, "held-out text, JSONL (required)"},
        {"field", CFG_STRING, &o->field, "text", 0, -1, "JSONL string field"},
        {"first_line", CFG_INT, &o->first_line, "1", 0, 1e12, "first JSONL line (1-based)"},
        {"last_line", CFG_INT, &o->last_line, "0", 0, 1e12, "last JSONL line (0 = end)"},
        {"tokens", CFG_INT, &o->tokens, "65536", 0, 1e12, "held-out tokens (0 = all)"},
        {"context", CFG_INT, &o->context, "128", 2, 1 << 20, "tokens per window"},
        {"batch_seqs", CFG_INT, &o->batch_seqs, "8", 1, 4096, "windows per forward pass"},
        {"hook", CFG_STRING, &o->hook, NULL, 0, -1, "hook override (default: the SAE's)"},
        {"store", CFG_STRING, &o->store, NULL, 0, -1, "feature store directory (required)"},
        {"chunk_features", CFG_INT, &o->chunk_features, "64", 1, 1 << 20,
         "features per atomic write batch"},
        {"sae", CFG_STRING, &o->sae, NULL, 0, -1, "comma-separated SAE dirs to evaluate first"},
        {"sae_id", CFG_STRING, &o->sae_id, NULL, 0, -1, "comma-separated store ids for --sae"},
        {"id_prefix", CFG_STRING, &o->id_prefix, "", 0, -1, "prefix of every store id"},
        {"subscribe", CFG_STRING, &o->subscribe, NULL, 0, -1,
         "comma-separated trainer PUB endpoints (CheckpointReady)"},
        {"exit_when_done", CFG_BOOL, &o->exit_when_done, "false", 0, -1,
         "exit after the --sae dirs when nothing is subscribed"},
        {"metrics_addr", CFG_STRING, &o->metrics_addr, "127.0.0.1", 0, -1, "HTTP bind address"},
        {"metrics_port", CFG_INT, &o->metrics_port, "0", -1, 65535,
         "/metrics + /healthz port (0 = off, -1 = any free port, logged)"},
    };
    struct config cfg = {.service = "eval",
                         .usage = "saeflow-eval --model M --data FILE --store DIR [--sae DIRS] "
                                  "[--subscribe EPS]",
                         .opts = table,
                         .n_opts = SF_ARRAY_LEN(table)};
    log_init("eval", LOG_LOGFMT, LOG_INFO);
    int rc = config_load(&cfg, argc, argv);
    if (rc == SF_EXIT) return 0;
    if (rc < 0) return 2;
    log_init("eval", cfg.log_format, cfg.log_level);
    int ret = 2;
    struct http_server *http = NULL;
    char *sae_copy = NULL, *ids_copy = NULL, *subs_copy = NULL;
    char *saes[MAX_SAES], *ids[MAX_SAES], *subs[MAX_SUBS];
    size_t n_saes = 0, n_ids = 0, n_subs = 0;

    /* ---- validate ---- */
    if (!o->model || !*o->model || !o->data || !*o->data || !o->store || !*o->store) {
        fprintf(stderr, "saeflow-eval: --model, --data and --store are required\n");
        goto out;
    }
    sae_copy = strdup(o->sae ? o->sae : "");
    ids_copy = strdup(o->sae_id ? o->sae_id : "");
    subs_copy = strdup(o->subscribe ? o->subscribe : "");
    if (!sae_copy || !ids_copy || !subs_copy) goto out;
    n_saes = str_split_list(sae_copy, saes, MAX_SAES);
    n_ids = str_split_list(ids_copy, ids, MAX_SAES);
    n_subs = str_split_list(subs_copy, subs, MAX_SUBS);
    if (n_ids && n_ids != n_saes) {
        fprintf(stderr, "saeflow-eval: --sae_id lists %zu ids for %zu --sae dirs\n", n_ids, n_saes);
        goto out;
    }
    if (n_saes == 0 && n_subs == 0) {
        fprintf(stderr, "saeflow-eval: nothing to evaluate: give --sae and/or --subscribe\n");
        goto out;
    }
    char idbuf[MAX_SAES][FEATURE_STORE_MAX_ID + 1];
    for (size_t i = 0; i < n_saes; i++) {
        char name[4096];
        dir_name(saes[i], name, sizeof name);
        if (make_id(o->id_prefix, n_ids ? ids[i] : name, idbuf[i], sizeof idbuf[i]) < 0) {
            fprintf(stderr, "saeflow-eval: bad store id for %s (1..%d chars)\n", saes[i],
                    FEATURE_STORE_MAX_ID);
            goto out;
        }
    }
    config_log(&cfg);
    sig_install();
    ret = 1;

    /* ---- acquire ---- */
    struct model_load_opts lo = {.tokenizer_path =
                                     o->tokenizer && *o->tokenizer ? o->tokenizer : NULL};
    if (model_load(o->model, &lo, &S->model) < 0) goto out;
    if (!model_tokenizer(S->model)) {
        log_error("eval_no_tokenizer", "model=%s", o->model);
        goto out;
    }
    struct eval_data_opts dopts;
    eval_data_opts_default(&dopts);
    dopts.context = (size_t)o->context;
    const struct model_config *mc = model_config(S->model);
    if (mc->max_seq_len && dopts.context > mc->max_seq_len) dopts.context = mc->max_seq_len;
    dopts.max_tokens = (size_t)o->tokens;
    dopts.first_line = (size_t)o->first_line;
    dopts.last_line = (size_t)o->last_line;
    dopts.field = o->field;
    if (eval_data_from_jsonl(model_tokenizer(S->model), o->data, &dopts, &S->data) < 0) goto out;
    if (feature_store_open(&S->fs, o->store) < 0) goto out;
    S->store_ok = true;

    S->reg = metrics_new();
    if (!S->reg) goto out;
    struct metrics_family *fe = metrics_counter(S->reg, "saeflow_eval_evaluations_total",
                                                "evaluations by result", "result");
    S->m_evals_ok = metrics_child(fe, "ok", NULL);
    S->m_evals_failed = metrics_child(fe, "failed", NULL);
    S->m_received = metrics_child(metrics_counter(S->reg, "saeflow_eval_checkpoints_received_total",
                                                  "CheckpointReady announcements", NULL),
                                  NULL);
    S->m_coalesced =
        metrics_child(metrics_counter(S->reg, "saeflow_eval_checkpoints_coalesced_total",
                                      "announcements superseded before evaluation", NULL),
                      NULL);
    S->m_rejected = metrics_child(metrics_counter(S->reg, "saeflow_eval_messages_rejected_total",
                                                  "malformed messages on the SUB socket", NULL),
                                  NULL);
    S->m_features = metrics_child(metrics_counter(S->reg, "saeflow_eval_features_stored_total",
                                                  "features written to the store", NULL),
                                  NULL);
    S->m_busy = metrics_child(
        metrics_gauge(S->reg, "saeflow_eval_busy", "1 while an evaluation runs", NULL), NULL);
    S->m_last_s = metrics_child(metrics_gauge(S->reg, "saeflow_eval_last_duration_seconds",
                                              "wall time of the last evaluation", NULL),
                                NULL);
    S->f_fvu = metrics_gauge(S->reg, "saeflow_eval_fvu", "fraction of variance unexplained", "sae");
    S->f_l0 = metrics_gauge(S->reg, "saeflow_eval_l0", "mean active latents per token", "sae");
    S->f_dead =
        metrics_gauge(S->reg, "saeflow_eval_dead_fraction", "latents that never fired", "sae");
    S->f_lr_zero = metrics_gauge(S->reg, "saeflow_eval_loss_recovered",
                                 "CE loss recovered vs zero ablation", "sae");
    S->f_lr_mean = metrics_gauge(S->reg, "saeflow_eval_loss_recovered_mean",
                                 "CE loss recovered vs mean ablation", "sae");
    S->f_kl = metrics_gauge(S->reg, "saeflow_eval_kl", "mean KL(clean || spliced)", "sae");
    if (!S->m_evals_ok || !S->m_evals_failed || !S->m_received || !S->m_coalesced ||
        !S->m_rejected || !S->m_features || !S->m_busy || !S->m_last_s || !S->f_fvu || !S->f_l0 ||
        !S->f_dead || !S->f_lr_zero || !S->f_lr_mean || !S->f_kl)
        goto out;
    if (o->metrics_port != 0) {
        http = http_server_new(o->metrics_addr, o->metrics_port > 0 ? (uint16_t)o->metrics_port : 0,
                               NULL);
        if (!http || http_serve_standard(http, S->reg, health, S) < 0 ||
            http_server_start(http) < 0)
            goto out;
    }
    if (n_subs) {
        char topic[WIRE_MAX_TOPIC_LEN + 1];
        S->sub = wire_sock_new(WIRE_SUB, subs[0], WIRE_CONNECT, NULL);
        if (!S->sub) goto out;
        for (size_t i = 1; i < n_subs; i++)
            if (wire_sock_connect(S->sub, subs[i]) < 0) goto out;
        if (wire_topic(WIRE_CHECKPOINT, NULL, topic, sizeof topic) < 0 ||
            wire_subscribe(S->sub, topic) < 0)
            goto out;
    }
    log_info("eval_ready",
             "model=%s windows=%zu tokens=%zu store=%s saes=%zu subscriptions=%zu http_port=%u",
             o->model, S->data->n_windows, S->data->n_tokens, o->store, n_saes, n_subs,
             http ? (unsigned)http_server_port(http) : 0u);

    /* ---- run ---- */
    ret = 0;
    for (size_t i = 0; i < n_saes && !sig_stop_requested(); i++) {
        if (evaluate(S, idbuf[i], saes[i], 0) < 0) ret = 1;
        poll_announcements(S, 0);
    }
    if (o->exit_when_done && !S->sub) goto out;
    while (!sig_stop_requested()) {
        size_t next = MAX_PENDING;
        for (size_t i = 0; i < MAX_PENDING; i++)
            if (S->pending[i].used) {
                next = i;
                break;
            }
        if (next == MAX_PENDING) {
            poll_announcements(S, 200);
            continue;
        }
        struct pending p = S->pending[next];
        S->pending[next].used = false;
        if (evaluate(S, p.sae_id, p.path, p.step) < 0 && !S->store_ok) {
            ret = 1;
            break;
        }
        poll_announcements(S, 0);
    }
    log_info("eval_stopping", "stopped=%d", sig_stop_requested());

out:
    /* ---- release, in reverse ---- */
    wire_sock_destroy(&S->sub);
    http_server_destroy(&http);
    metrics_destroy(&S->reg);
    feature_store_close(&S->fs);
    eval_data_destroy(&S->data);
    model_destroy(&S->model);
    free(sae_copy);
    free(ids_copy);
    free(subs_copy);
    config_free(&cfg);
    return ret;
}

/* saeflow-train: consumes ActivationBatch streams (common/stream), mixes tokens from
 * many documents in a buffer per hook, trains one Top-K SAE per hook (common/sae),
 * checkpoints atomically, publishes TrainMetrics / CheckpointReady on a PUB socket,
 * serves /metrics and /healthz, and resumes from its latest checkpoint on start.
 *
 * Checkpoint N is a directory <ckpt_dir>/ckpt-NNNNNNNN holding, per hook i,
 * sae-<i>.safetensors (full trainer state: weights, Adam, counters, RNG) and
 * buffer-<i>.safetensors (the tokens still in the mixing buffer, F32 [fill, d_in]),
 * plus stream.state (committed seqs per producer/epoch), source.state (per producer and
 * hook, the source cursor committed: where a restarted capture resumes, see stream.h)
 * and meta.txt (hooks). It is
 * written as .tmp-ckpt-N, the ledger lines are appended and fsynced, then it is
 * renamed into place; only then are the batches acknowledged (see stream.h). Every
 * batch received before checkpoint N is in it — trained into the weights, or as
 * tokens in a saved buffer — so after a SIGKILL nothing is trained twice or lost. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "http/http.h"
#include "sae/sae.h"
#include "sae/sae_backend.h"
#include "sae/sae_io.h"
#include "sae/sae_train.h"
#include "safetensors/safetensors.h"
#include "stream/stream.h"
#include "tensor/tensor.h"
#include "tensor/tensor_cuda.h"
#include "wire/wire.h"

#define MAX_HOOKS 16

struct opts {
    char *bind, *hook, *arch, *ckpt_dir, *export_dir, *ledger, *trainer_id, *publish;
    char *metrics_addr, *model_name, *dataset_path, *backend, *cuda_math;
    int64_t n, k, batch_tokens, buffer_tokens, ckpt_every_tokens, keep, metrics_port;
    int64_t credit_window, dead_tokens, seed, total_tokens, max_msg_mb, d_in, context_size;
    double lr, refill, ckpt_every_s, drain_s, metrics_every_s, guard_abs_max, guard_norm_ratio;
    bool exit_when_done, auxk, prepend_bos;
    char *optimizer; /* training schedule beyond lr (sae_train.h) */
    int64_t warmup_tokens;
    double lr_decay_start;
};

struct slot {
    char hook[WIRE_MAX_NAME_LEN + 1];
    int32_t layer;
    struct sae_trainer *t;
    struct sae_backend *be; /* steps t on the chosen backend (borrows t) */
    size_t d;
    float *buf; /* mixing buffer (cap, d) */
    size_t fill, cap;
    float *batch; /* (batch_tokens, d) */
    float *conv;  /* one decoded message */
    size_t conv_cap, conv_d;
    struct sae_train_metrics last;
    struct sae_batch_guard guard; /* refuses poisoned batches before the buffer */
    double fvu_ema, l0_ema, loss_ema;
    bool have_ema;
    struct metric *m_tokens, *m_steps, *m_loss, *m_fvu, *m_l0, *m_dead, *m_fill, *m_tps;
    struct metric *m_diverged;
};

struct trainer {
    struct opts o;
    struct slot slots[MAX_HOOKS];
    size_t n_slots;
    struct stream_consumer *sc;
    struct wire_sock *pub;
    struct rng rng;
    uint64_t ckpt_seq; /* number of the latest durable checkpoint (0 = none) */
    int64_t tokens_since_ckpt, batches_since_ckpt, steps_since_ckpt;
    double last_ckpt_s;
    size_t est_batch_tokens;
    double last_tps; /* training throughput at the last metrics tick */
    struct metrics *reg;
    struct metric *m_ckpts, *m_ckpt_s, *m_batches;
    struct metric *m_drop_dims;                   /* consumed but not trained, counted */
    struct metric *m_drop_guard[SAE_GUARD_COUNT]; /* by sae_guard_reason */
    bool healthy;
    /* Divergence (a non-finite loss or weights) stops this trainer: no more steps, no
     * checkpoint, no acks and no credit, so the last good checkpoint stays the latest
     * and the uncommitted batches stay in the producers' rings. /healthz says 503 with
     * the reason; a restart resumes from the last good checkpoint (no automatic roll
     * back: the batch that diverged it would be re-sent and could do it again). */
    bool diverged;
    double diverged_at;
    char diverged_why[256];
};

static void diverge(struct trainer *T, struct slot *s, const char *what)
{
    if (T->diverged) return;
    T->diverged = true;
    T->diverged_at = time_now_s();
    snprintf(T->diverged_why, sizeof T->diverged_why, "diverged: hook=%s %s step=%lld", s->hook,
             what, s->t ? (long long)sae_trainer_steps(s->t) : 0LL);
    metrics_set(s->m_diverged, 1);
    log_error("train_diverged",
              "hook=%s what=%s step=%lld last_good_ckpt=%llu action=stopped (no more steps, "
              "checkpoints or acks; restart to resume from the last good checkpoint)",
              s->hook, what, s->t ? (long long)sae_trainer_steps(s->t) : 0LL,
              (unsigned long long)T->ckpt_seq);
}

static struct slot *slot_find(struct trainer *T, const char *hook)
{
    for (size_t i = 0; i < T->n_slots; i++)
        if (!strcmp(T->slots[i].hook, hook)) return &T->slots[i];
    return NULL;
}

static int slot_alloc(struct trainer *T, struct slot *s, size_t d)
{
    s->d = d;
    s->cap = (size_t)T->o.buffer_tokens;
    s->buf = malloc(s->cap * d * sizeof(float));
    s->batch = malloc((size_t)T->o.batch_tokens * d * sizeof(float));
    return s->buf && s->batch ? 0 : SF_ENOMEM;
}

/* Attaches the chosen backend (--backend, --cuda_math) to the slot's trainer. */
static int slot_backend(struct trainer *T, struct slot *s)
{
    int rc = sae_backend_new(s->t, T->o.backend, T->o.cuda_math, &s->be);
    if (rc < 0)
        log_error("sae_backend_failed", "hook=%s backend=%s err=%s", s->hook, T->o.backend,
                  sf_strerror(rc));
    return rc;
}

/* Makes the trainer's host state current before it is saved or exported (a trainer
 * whose backend failed to attach was never stepped: nothing to copy). */
static int slot_sync(struct slot *s)
{
    return s->be ? sae_backend_sync(s->be) : 0;
}

/* Dead fraction for metrics: the CUDA step keeps the dead counters on the device (the
 * trainer's copy is current only after a sync), so there the last step's value is used. */
static double slot_dead_fraction(const struct slot *s)
{
    if (s->be && sae_backend_kind(s->be) == TENSOR_CUDA && s->have_ema) return s->last.dead_frac;
    return sae_trainer_dead_fraction(s->t);
}

/* Creates the SAE trainer for a slot on its first batch (d_in known). */
static int slot_init(struct trainer *T, struct slot *s, size_t d)
{
    struct sae_train_config cfg;
    enum sae_arch arch;
    if (sae_arch_parse(T->o.arch, &arch) < 0) return SF_EINVAL;
    sae_train_config_default(&cfg, arch, d, (size_t)T->o.n, (size_t)T->o.k);
    cfg.seed = (uint64_t)T->o.seed;
    if (T->o.lr > 0) cfg.lr = T->o.lr;
    if (sae_optimizer_parse(T->o.optimizer, &cfg.optimizer) != 0) return SF_EINVAL;
    cfg.lr_warmup_tokens = T->o.warmup_tokens;
    cfg.lr_decay_start = T->o.lr_decay_start;
    cfg.dead_tokens = T->o.dead_tokens;
    cfg.total_tokens = T->o.total_tokens;
    if (!T->o.auxk) cfg.auxk_alpha = 0;
    s->t = sae_trainer_new(&cfg);
    if (!s->t) return SF_EINVAL;
    struct sae_meta meta = {0};
    snprintf(meta.model_name, sizeof meta.model_name, "%s", T->o.model_name);
    size_t hl = SF_MIN(strlen(s->hook), sizeof meta.hook_name - 1);
    memcpy(meta.hook_name, s->hook, hl);
    meta.hook_layer = s->layer;
    meta.context_size = T->o.context_size;
    snprintf(meta.dataset_path, sizeof meta.dataset_path, "%s",
             T->o.dataset_path ? T->o.dataset_path : "");
    meta.prepend_bos = T->o.prepend_bos;
    meta.exclude_special_tokens = true;
    sae_trainer_set_meta(s->t, &meta);
    int rc = slot_backend(T, s);
    if (rc < 0) return rc;
    if (!s->buf && slot_alloc(T, s, d) < 0) return SF_ENOMEM;
    log_info("sae_created", "hook=%s d_in=%zu n=%lld k=%lld arch=%s", s->hook, d, (long long)T->o.n,
             (long long)T->o.k, T->o.arch);
    return 0;
}

/* ---- checkpoints ---- */

static int ckpt_path(const struct trainer *T, uint64_t n, bool tmp, char *out, size_t cap)
{
    int w = snprintf(out, cap, "%s/%sckpt-%08llu", T->o.ckpt_dir, tmp ? ".tmp-" : "",
                     (unsigned long long)n);
    return w > 0 && (size_t)w < cap ? 0 : SF_ERANGE;
}

static int rm_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : SF_EIO;
    struct dirent *e;
    char p[4400];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rm_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    return rmdir(dir) == 0 ? 0 : SF_EIO;
}

/* Decimal digits only (checkpoint names are zero-padded: not octal). */
static int parse_ckpt_num(const char *s, int64_t *out)
{
    int64_t v = 0;
    if (!*s) return SF_EINVAL;
    for (; *s; s++) {
        if (*s < '0' || *s > '9' || v > (INT64_MAX - 9) / 10) return SF_EINVAL;
        v = v * 10 + (*s - '0');
    }
    *out = v;
    return 0;
}

/* Highest complete checkpoint number (0 = none); removes leftover temporaries. */
static uint64_t ckpt_latest(const struct trainer *T)
{
    DIR *d = opendir(T->o.ckpt_dir);
    if (!d) return 0;
    uint64_t best = 0;
    struct dirent *e;
    char p[4400];
    while ((e = readdir(d)) != NULL) {
        int64_t v;
        if (!strncmp(e->d_name, ".tmp-ckpt-", 10)) {
            snprintf(p, sizeof p, "%s/%s", T->o.ckpt_dir, e->d_name);
            rm_tree(p);
            continue;
        }
        if (strncmp(e->d_name, "ckpt-", 5) != 0 || parse_ckpt_num(e->d_name + 5, &v) < 0 || v <= 0)
            continue;
        snprintf(p, sizeof p, "%s/%s/meta.txt", T->o.ckpt_dir, e->d_name);
        if (access(p, R_OK) != 0) continue;
        if ((uint64_t)v > best) best = (uint64_t)v;
    }
    closedir(d);
    return best;
}

static int save_buffer(const struct slot *s, const char *path)
{
    struct st_writer *w = st_writer_new();
    if (!w) return SF_ENOMEM;
    int64_t shape[2] = {(int64_t)s->fill, (int64_t)s->d};
    static const float none[1] = {0};
    int rc = st_writer_add(w, "buffer", ST_F32, shape, 2, s->fill ? (const void *)s->buf : none);
    if (rc == 0) rc = st_writer_set_metadata(w, "hook_name", s->hook);
    if (rc == 0) rc = st_writer_write(w, path);
    st_writer_destroy(&w);
    return rc;
}

static void export_saelens(struct trainer *T, struct slot *s, const char *dir_root, uint64_t ckpt)
{
    if (!dir_root || !*dir_root || !s->t) return;
    char dir[4400];
    snprintf(dir, sizeof dir, "%s/%s", dir_root, s->hook);
    if (slot_sync(s) < 0) {
        log_error("sae_sync_failed", "hook=%s", s->hook);
        return;
    }
    struct sae *e = sae_trainer_export(s->t);
    if (!e) return;
    if (sae_io_export_saelens(e, dir, NULL) == 0) {
        log_info("sae_exported", "hook=%s dir=%s", s->hook, dir);
        if (T->pub) {
            Saeflow__CheckpointReady r = SAEFLOW__CHECKPOINT_READY__INIT;
            r.trainer_id = T->o.trainer_id;
            r.sae_id = s->hook;
            r.model_id = T->o.model_name;
            r.hook_name = s->hook;
            r.path = dir;
            r.format = "saelens";
            r.step = (uint64_t)sae_trainer_steps(s->t);
            r.tokens_seen = (uint64_t)sae_trainer_tokens(s->t);
            r.d_in = (uint32_t)s->d;
            r.d_sae = (uint32_t)e->n;
            r.k = (uint32_t)e->k;
            r.wall_unix_ms = time_wall_ms();
            (void)wire_send_checkpoint(T->pub, &r);
        }
        (void)ckpt;
    }
    sae_destroy(&e);
}

/* Writes checkpoint N+1 and commits the stream (see the top of this file). */
static int checkpoint(struct trainer *T, const char *why)
{
    if (T->diverged) return SF_ESTATE;
    /* never commit non-finite weights: check every SAE (current on the host) first */
    for (size_t i = 0; i < T->n_slots; i++) {
        struct slot *s = &T->slots[i];
        if (!s->t) continue;
        if (slot_sync(s) < 0) {
            log_error("sae_sync_failed", "hook=%s", s->hook);
            T->healthy = false;
            return SF_EIO;
        }
        if (!sae_trainer_finite(s->t)) {
            diverge(T, s, "weights=non_finite");
            return SF_ERANGE;
        }
    }
    double t0 = time_now_s();
    uint64_t n = T->ckpt_seq + 1;
    char tmp[4096], fin[4096], p[4400];
    if (ckpt_path(T, n, true, tmp, sizeof tmp) < 0 || ckpt_path(T, n, false, fin, sizeof fin) < 0)
        return SF_ERANGE;
    rm_tree(tmp);
    if (file_mkdirs(tmp, 0755) < 0) return SF_EIO;
    struct buf meta, state;
    buf_init(&meta, 1 << 20);
    buf_init(&state, STREAM_MAX_STATE);
    int rc = buf_printf(&meta, "saeflow-train-checkpoint 1\nckpt %llu\n", (unsigned long long)n);
    for (size_t i = 0; i < T->n_slots && rc == 0; i++) {
        struct slot *s = &T->slots[i];
        rc = buf_printf(&meta, "hook %zu %s %d\n", i, s->hook, s->t ? 1 : 0);
        if (rc < 0 || !s->t) continue;
        snprintf(p, sizeof p, "%s/sae-%zu.safetensors", tmp, i);
        rc = slot_sync(s);
        if (rc == 0) rc = sae_trainer_save(s->t, p);
        if (rc == 0) {
            snprintf(p, sizeof p, "%s/buffer-%zu.safetensors", tmp, i);
            rc = save_buffer(s, p);
        }
    }
    if (rc == 0) rc = stream_consumer_state(T->sc, &state);
    if (rc == 0) {
        snprintf(p, sizeof p, "%s/stream.state", tmp);
        rc = file_write_atomic(p, state.data, state.len);
    }
    if (rc == 0) {
        /* the producers' source cursors: where a restarted capture resumes */
        buf_reset(&state);
        rc = stream_consumer_source_state(T->sc, &state);
        snprintf(p, sizeof p, "%s/source.state", tmp);
        if (rc == 0) rc = file_write_atomic(p, state.data, state.len);
    }
    if (rc == 0) {
        snprintf(p, sizeof p, "%s/meta.txt", tmp);
        rc = file_write_atomic(p, meta.data, meta.len);
    }
    buf_fini(&meta);
    buf_fini(&state);
    if (rc == 0) rc = stream_consumer_ledger_append(T->sc, n);
    if (rc == 0 && rename(tmp, fin) != 0) {
        log_error("ckpt_rename", "from=%s to=%s err=%s", tmp, fin, strerror(errno));
        rc = SF_EIO;
    }
    if (rc == 0) rc = file_fsync_dir(T->o.ckpt_dir);
    if (rc < 0) {
        log_error("ckpt_failed", "ckpt=%llu err=%s", (unsigned long long)n, sf_strerror(rc));
        T->healthy = false;
        return rc;
    }
    T->ckpt_seq = n;
    /* durable: now the acks */
    struct stream_consumer_stats before;
    stream_consumer_stats(T->sc, &before);
    rc = stream_consumer_commit(T->sc);
    /* keep the newest `keep` checkpoints */
    if (T->o.keep > 0 && n > (uint64_t)T->o.keep) {
        for (uint64_t old = n - (uint64_t)T->o.keep; old > 0; old--) {
            if (ckpt_path(T, old, false, p, sizeof p) < 0) break;
            if (access(p, F_OK) != 0) break;
            rm_tree(p);
        }
    }
    int64_t tokens = 0;
    for (size_t i = 0; i < T->n_slots; i++)
        if (T->slots[i].t) tokens += sae_trainer_tokens(T->slots[i].t);
    double dt = time_now_s() - t0;
    log_info("ckpt_saved", "ckpt=%llu why=%s batches=%llu tokens=%lld s=%.3f",
             (unsigned long long)n, why, (unsigned long long)before.pending, (long long)tokens, dt);
    metrics_inc(T->m_ckpts);
    metrics_observe(T->m_ckpt_s, dt);
    T->tokens_since_ckpt = 0;
    T->batches_since_ckpt = 0;
    T->steps_since_ckpt = 0;
    T->last_ckpt_s = time_now_s();
    for (size_t i = 0; i < T->n_slots; i++) export_saelens(T, &T->slots[i], T->o.export_dir, n);
    return rc;
}

static int load_buffer(struct slot *s, const char *path)
{
    struct safetensors *st = NULL;
    int rc = safetensors_open(path, &st);
    if (rc < 0) return rc;
    const struct st_tensor *t = safetensors_find(st, "buffer");
    if (!t || t->ndim != 2 || t->dtype != ST_F32 || (size_t)t->shape[1] != s->d ||
        (size_t)t->shape[0] > s->cap) {
        log_error("ckpt_buffer_bad", "path=%s", path);
        safetensors_close(&st);
        return SF_EFORMAT;
    }
    s->fill = (size_t)t->shape[0];
    if (s->fill) rc = safetensors_tensor_to_f32(t, s->buf, s->fill * s->d);
    safetensors_close(&st);
    return rc;
}

/* Loads checkpoint `n` (weights, buffers, stream state). */
static int restore(struct trainer *T, uint64_t n)
{
    char dir[4096], p[4400];
    if (ckpt_path(T, n, false, dir, sizeof dir) < 0) return SF_ERANGE;
    char *meta = NULL;
    size_t len = 0;
    snprintf(p, sizeof p, "%s/meta.txt", dir);
    int rc = file_read_all(p, 1 << 20, &meta, &len);
    if (rc < 0) return rc;
    /* every hook line must name a hook we train, at the same index */
    const char *s = meta;
    size_t idx;
    char hook[WIRE_MAX_NAME_LEN + 1];
    int has;
    while ((s = strstr(s, "\nhook ")) != NULL) {
        s++;
        if (sscanf(s, "hook %zu %128s %d", &idx, hook, &has) != 3 || idx >= T->n_slots ||
            strcmp(T->slots[idx].hook, hook) != 0) {
            log_error("ckpt_hooks_differ", "dir=%s", dir);
            free(meta);
            return SF_EFORMAT;
        }
        struct slot *sl = &T->slots[idx];
        if (!has) continue;
        snprintf(p, sizeof p, "%s/sae-%zu.safetensors", dir, idx);
        rc = sae_trainer_load(p, &sl->t);
        if (rc < 0) break;
        if ((rc = slot_backend(T, sl)) < 0) break;
        sl->d = sae_trainer_sae(sl->t)->d_in;
        if (!sl->buf && (rc = slot_alloc(T, sl, sl->d)) < 0) break;
        snprintf(p, sizeof p, "%s/buffer-%zu.safetensors", dir, idx);
        rc = load_buffer(sl, p);
        if (rc < 0) break;
        log_info("ckpt_restored_sae", "hook=%s tokens=%lld steps=%lld buffer=%zu", sl->hook,
                 (long long)sae_trainer_tokens(sl->t), (long long)sae_trainer_steps(sl->t),
                 sl->fill);
    }
    free(meta);
    if (rc < 0) return rc;
    char *state = NULL;
    snprintf(p, sizeof p, "%s/stream.state", dir);
    rc = file_read_all(p, STREAM_MAX_STATE, &state, &len);
    if (rc < 0) return rc;
    rc = stream_consumer_restore(T->sc, state, len);
    free(state);
    if (rc < 0) return rc;
    snprintf(p, sizeof p, "%s/source.state", dir);
    if (access(p, F_OK) == 0) { /* absent in checkpoints written before source cursors */
        state = NULL;
        rc = file_read_all(p, STREAM_MAX_STATE, &state, &len);
        if (rc == 0) rc = stream_consumer_source_restore(T->sc, state, len);
        free(state);
        if (rc < 0) return rc;
    }
    T->ckpt_seq = n;
    log_info("ckpt_resumed", "ckpt=%llu dir=%s", (unsigned long long)n, dir);
    return 0;
}

/* ---- training ---- */

static int take_batch(struct trainer *T, const Saeflow__ActivationBatch *b)
{
    struct slot *s = slot_find(T, b->hook_name);
    if (!s) return 0; /* not subscribed: the stream layer rejects these */
    size_t n = b->n_tokens, d = b->d_in;
    if ((s->t && d != s->d) || (T->o.d_in > 0 && d != (size_t)T->o.d_in)) {
        /* a batch we cannot use is still consumed (counted): it will not be resent */
        log_warn("batch_d_in_mismatch", "hook=%s d_in=%zu want=%zu", s->hook, d,
                 s->t ? s->d : (size_t)T->o.d_in);
        metrics_inc(T->m_drop_dims);
        return 0;
    }
    if (n > s->conv_cap || d > s->conv_d) {
        float *nc = realloc(s->conv, n * d * sizeof(float));
        if (!nc) return SF_ENOMEM;
        s->conv = nc;
        s->conv_cap = n;
        s->conv_d = d;
    }
    int rc = wire_batch_to_f32(b, s->conv, n * d);
    if (rc < 0) return rc;
    struct sae_guard_stats gs;
    double base_mean = s->guard.mean_norm, base_max = s->guard.max_norm;
    enum sae_guard_verdict v = sae_batch_guard_check(&s->guard, s->conv, n, d, &gs);
    if (v != SAE_GUARD_OK) {
        /* poison (NaN/inf, huge values, a norm far off the running one): consumed, not
         * trained, counted by reason */
        log_warn("batch_rejected",
                 "hook=%s reason=%s producer=%s seq=%llu max_abs=%g mean_norm=%g max_norm=%g "
                 "running_mean_norm=%g running_max_norm=%g",
                 s->hook, sae_guard_reason(v), b->producer_id, (unsigned long long)b->seq,
                 gs.max_abs, gs.mean_norm, gs.max_norm, base_mean, base_max);
        metrics_inc(T->m_drop_guard[v]);
        return 0;
    }
    if (!s->t) {
        s->layer = b->layer;
        if (!strcmp(T->o.model_name, "unknown") && b->model_id && *b->model_id) {
            free(T->o.model_name); /* the config owns it; replace with the stream's */
            T->o.model_name = strdup(b->model_id);
            if (!T->o.model_name) return SF_ENOMEM;
        }
        rc = slot_init(T, s, d);
        if (rc < 0) return rc;
    }
    if (s->fill + n > s->cap) {
        /* beyond the credit we gave (e.g. resends): grow rather than lose it */
        size_t cap = s->fill + n;
        float *nb = realloc(s->buf, cap * d * sizeof(float));
        if (!nb) return SF_ENOMEM;
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->fill * d, s->conv, n * d * sizeof(float));
    s->fill += n;
    T->tokens_since_ckpt += (int64_t)n;
    T->batches_since_ckpt++;
    if (n > T->est_batch_tokens) T->est_batch_tokens = n;
    return 0;
}

/* One step on B tokens drawn at random (without replacement) from the buffer. */
static int train_step(struct trainer *T, struct slot *s, size_t B)
{
    size_t d = s->d;
    for (size_t i = 0; i < B; i++) {
        size_t j = (size_t)rng_below(&T->rng, s->fill);
        memcpy(s->batch + i * d, s->buf + j * d, d * sizeof(float));
        s->fill--;
        if (j != s->fill) memcpy(s->buf + j * d, s->buf + s->fill * d, d * sizeof(float));
    }
    int rc = sae_backend_step(s->be, s->batch, B, &s->last);
    T->steps_since_ckpt++;
    if (rc < 0) {
        log_error("train_step_failed", "hook=%s err=%s", s->hook, sf_strerror(rc));
        return rc;
    }
    if (!isfinite(s->last.loss) || !isfinite(s->last.mse) || !isfinite(s->last.fvu)) {
        diverge(T, s, "loss=non_finite");
        return 0;
    }
    const double a = 0.05;
    if (!s->have_ema) {
        s->fvu_ema = s->last.fvu;
        s->l0_ema = s->last.l0;
        s->loss_ema = s->last.loss;
        s->have_ema = true;
    } else {
        s->fvu_ema += a * (s->last.fvu - s->fvu_ema);
        s->l0_ema += a * (s->last.l0 - s->l0_ema);
        s->loss_ema += a * (s->last.loss - s->loss_ema);
    }
    return 0;
}

static void publish_metrics(struct trainer *T, double tps)
{
    for (size_t i = 0; i < T->n_slots; i++) {
        struct slot *s = &T->slots[i];
        if (!s->t) continue;
        metrics_counter_to(s->m_tokens, (double)sae_trainer_tokens(s->t));
        metrics_counter_to(s->m_steps, (double)sae_trainer_steps(s->t));
        metrics_set(s->m_loss, s->loss_ema);
        metrics_set(s->m_fvu, s->fvu_ema);
        metrics_set(s->m_l0, s->l0_ema);
        metrics_set(s->m_dead, slot_dead_fraction(s));
        metrics_set(s->m_fill, (double)s->fill);
        metrics_set(s->m_tps, tps);
        if (!T->pub) continue;
        Saeflow__TrainMetrics m = SAEFLOW__TRAIN_METRICS__INIT;
        m.trainer_id = T->o.trainer_id;
        m.sae_id = s->hook;
        m.hook_name = s->hook;
        m.step = (uint64_t)sae_trainer_steps(s->t);
        m.tokens_seen = (uint64_t)sae_trainer_tokens(s->t);
        m.loss = s->loss_ema;
        m.mse = s->last.mse;
        m.fvu = s->fvu_ema;
        m.l0 = s->l0_ema;
        m.dead_fraction = slot_dead_fraction(s);
        m.aux_loss = s->last.auxk_loss;
        m.lr = s->last.lr;
        m.tokens_per_s = tps;
        m.wall_unix_ms = time_wall_ms();
        (void)wire_send_metrics(T->pub, &m);
    }
}

struct sample_ctx {
    struct metrics *reg;
};

static void wire_sample(const char *name, const char *help, const char *label_key,
                        const char *label_value, double value, void *ud)
{
    struct sample_ctx *x = ud;
    size_t nl = strlen(name);
    bool counter = nl > 6 && !strcmp(name + nl - 6, "_total");
    struct metrics_family *f = counter ? metrics_counter(x->reg, name, help, label_key)
                                       : metrics_gauge(x->reg, name, help, label_key);
    if (!f) return;
    struct metric *m = label_key ? metrics_child(f, label_value, NULL) : metrics_child(f, NULL);
    if (!m) return;
    if (counter)
        metrics_counter_to(m, value);
    else
        metrics_set(m, value);
}

static void stream_metrics(struct trainer *T)
{
    struct sample_ctx x = {.reg = T->reg};
    wire_stats_foreach(stream_consumer_sock(T->sc), wire_sample, &x);
    struct stream_consumer_stats cs;
    stream_consumer_stats(T->sc, &cs);
    struct {
        const char *fate;
        uint64_t v;
    } f[] = {{"delivered", cs.delivered},
             {"committed", cs.committed},
             {"dup_committed", cs.dup_committed},
             {"dup_pending", cs.dup_pending},
             {"unwanted", cs.unwanted},
             {"over_credit", cs.over_credit},
             {"rejected_frame", cs.rejected_frames},
             {"dup_source", cs.dup_source},
             {"source_overlap", cs.source_overlap},
             {"source_mismatch", cs.source_mismatch}};
    struct metrics_family *fam = metrics_counter(
        T->reg, "saeflow_train_stream_batches_total",
        "batches received by what happened to them (rejected_frame: malformed/oversized; "
        "dup_source: read again by a restarted capture, already committed)",
        "fate");
    for (size_t i = 0; i < SF_ARRAY_LEN(f); i++)
        metrics_counter_to(metrics_child(fam, f[i].fate, NULL), (double)f[i].v);
    metrics_set(metrics_child(metrics_gauge(T->reg, "saeflow_train_stream_pending_batches",
                                            "batches received, not yet committed", NULL),
                              NULL),
                (double)cs.pending);
    metrics_set(metrics_child(metrics_gauge(T->reg, "saeflow_train_stream_producers_live",
                                            "producers heard recently", NULL),
                              NULL),
                (double)cs.producers_live);
    metrics_counter_to(
        metrics_child(metrics_counter(T->reg, "saeflow_train_stream_credit_granted_total",
                                      "credits granted", NULL),
                      NULL),
        (double)cs.credit_granted);
}

static int health(void *ud, char *reason, size_t len)
{
    const struct trainer *T = ud;
    if (T->diverged) {
        snprintf(reason, len, "%s", T->diverged_why);
        return 1;
    }
    if (!T->healthy) {
        snprintf(reason, len, "checkpoint failed");
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    proc_reexec_with_env(argv, "OMP_WAIT_POLICY", "passive");
    struct trainer tr = {0};
    struct trainer *T = &tr;
    struct opts *o = &T->o;
    const struct config_opt table[] = {
        {"bind", CFG_STRING, &o->bind, "ipc:///tmp/saeflow-train.sock", 0, -1,
         "ROUTER endpoint producers connect to"},
        {"hook", CFG_STRING, &o->hook, "blocks.0.hook_resid_post", 0, -1,
         "comma-separated hooks (one SAE each)"},
        {"model_name", CFG_STRING, &o->model_name, "unknown", 0, -1,
         "model id for SAE metadata (default: the stream's)"},
        {"arch", CFG_STRING, &o->arch, "topk", 0, -1, "topk | batchtopk | standard"},
        {"context_size", CFG_INT, &o->context_size, "0", 0, 1 << 24,
         "capture's context length, for the SAE metadata"},
        {"dataset_path", CFG_STRING, &o->dataset_path, NULL, 0, -1,
         "text source, for the SAE metadata"},
        {"prepend_bos", CFG_BOOL, &o->prepend_bos, "true", 0, -1,
         "whether capture prepended BOS (its prepend_bos), for the SAE metadata"},
        {"d_in", CFG_INT, &o->d_in, "0", 0, 65536,
         "expected activation width (0 = the first batch's)"},
        {"n", CFG_INT, &o->n, "1024", 1, 1 << 26, "latents per SAE"},
        {"k", CFG_INT, &o->k, "16", 1, 1 << 16, "Top-K k"},
        {"lr", CFG_DOUBLE, &o->lr, "0", 0, 1,
         "learning rate (0 = the rule: adam 2e-4/sqrt(n/2^14)*clamp(sqrt(2^30/total_tokens),"
         "1,16); signsgd_sf 5e-3/sqrt(n/2^14))"},
        {"optimizer", CFG_STRING, &o->optimizer, "adam", 0, -1,
         "adam | signsgd_sf (SignSGD with schedule-free averaging; exports the average)"},
        {"warmup_tokens", CFG_INT, &o->warmup_tokens, "0", 0, 1e15, "linear lr warm-up"},
        {"lr_decay_start", CFG_DOUBLE, &o->lr_decay_start, "0.8", 0, 1,
         "linear lr decay to 0 after this fraction of total_tokens (1 = none)"},
        {"seed", CFG_INT, &o->seed, "1", 0, 1e18, "weight init and sampling seed"},
        {"backend", CFG_STRING, &o->backend, "cpu", 0, -1,
         "cpu | cuda | auto (auto: CUDA when built and a device is visible)"},
        {"cuda_math", CFG_STRING, &o->cuda_math, "fp32", 0, -1,
         "fp32 | tf32 | bf16 GEMM precision on CUDA (ignored on the CPU)"},
        {"auxk", CFG_BOOL, &o->auxk, "true", 0, -1, "AuxK loss on dead latents"},
        {"dead_tokens", CFG_INT, &o->dead_tokens, "0", 0, 1e15,
         "a latent silent this long is dead (0 = min(10M, 0.05 * total_tokens); 10M without)"},
        {"total_tokens", CFG_INT, &o->total_tokens, "0", 0, 1e15,
         "planned tokens: the lr rule's budget, the lr decay, the dead window (0 = none)"},
        {"batch_tokens", CFG_INT, &o->batch_tokens, "4096", 1, 1 << 20, "tokens per training step"},
        {"buffer_tokens", CFG_INT, &o->buffer_tokens, "65536", 1, 1 << 28,
         "mixing buffer per hook"},
        {"refill", CFG_DOUBLE, &o->refill, "0.5", 0, 1,
         "train only while the buffer is at least this full"},
        {"guard_abs_max", CFG_DOUBLE, &o->guard_abs_max, "1e6", 0, 3.4e38,
         "refuse batches with any |value| above this (0 = off)"},
        {"guard_norm_ratio", CFG_DOUBLE, &o->guard_norm_ratio, "10", 0, 1e12,
         "refuse batches whose mean or max row norm is this many times the running one "
         "(0 = off)"},
        {"credit_window", CFG_INT, &o->credit_window, "8", 1, 4096,
         "batches outstanding per producer"},
        {"ckpt_dir", CFG_STRING, &o->ckpt_dir, "checkpoints", 0, -1, "checkpoint directory"},
        {"ckpt_every_tokens", CFG_INT, &o->ckpt_every_tokens, "500000", 1, 1e15,
         "checkpoint after this many new tokens"},
        {"ckpt_every_s", CFG_DOUBLE, &o->ckpt_every_s, "30", 0.01, 1e6,
         "and at least this often when batches are pending"},
        {"keep", CFG_INT, &o->keep, "2", 1, 1 << 20, "checkpoints kept"},
        {"export_dir", CFG_STRING, &o->export_dir, NULL, 0, -1,
         "SAELens export per hook at each checkpoint"},
        {"ledger", CFG_STRING, &o->ledger, NULL, 0, -1,
         "consumer ledger (producer epoch seq ckpt)"},
        {"trainer_id", CFG_STRING, &o->trainer_id, "train-0", 0, -1, "consumer id on the wire"},
        {"publish", CFG_STRING, &o->publish, NULL, 0, -1,
         "PUB endpoint for metrics and checkpoints"},
        {"metrics_every_s", CFG_DOUBLE, &o->metrics_every_s, "1", 0.05, 3600, "metrics period"},
        {"metrics_addr", CFG_STRING, &o->metrics_addr, "127.0.0.1", 0, -1, "HTTP bind address"},
        {"metrics_port", CFG_INT, &o->metrics_port, "0", 0, 65535,
         "/metrics + /healthz port (0 = off)"},
        {"max_msg_mb", CFG_INT, &o->max_msg_mb, "64", 1, 4096, "largest accepted message (MiB)"},
        {"exit_when_done", CFG_BOOL, &o->exit_when_done, "false", 0, -1,
         "exit once every producer is done and committed"},
        {"drain_s", CFG_DOUBLE, &o->drain_s, "30", 0, 86400, "shutdown deadline"},
    };
    struct config cfg = {.service = "train",
                         .usage = "saeflow-train [--bind EP] [--hook H] [--ckpt_dir D] ...",
                         .opts = table,
                         .n_opts = SF_ARRAY_LEN(table)};
    log_init("train", LOG_LOGFMT, LOG_INFO);
    int rc = config_load(&cfg, argc, argv);
    if (rc == SF_EXIT) return 0;
    if (rc < 0) return 2;
    log_init("train", cfg.log_format, cfg.log_level);
    int ret = 2;
    struct http_server *http = NULL;
    char *hooks_copy = NULL;
    char *hook_names[MAX_HOOKS];
    struct stream_delivery dv = {0};

    enum sae_arch arch;
    if (sae_arch_parse(o->arch, &arch) < 0 || arch == SAE_JUMPRELU) {
        fprintf(stderr, "saeflow-train: --arch must be topk, batchtopk or standard\n");
        goto out;
    }
    enum sae_optimizer optim;
    if (sae_optimizer_parse(o->optimizer, &optim) < 0) {
        fprintf(stderr, "saeflow-train: --optimizer must be adam or signsgd_sf\n");
        goto out;
    }
    if (o->k > o->n) {
        fprintf(stderr, "saeflow-train: k must be <= n\n");
        goto out;
    }
    if (o->batch_tokens > o->buffer_tokens) {
        fprintf(stderr, "saeflow-train: batch_tokens must be <= buffer_tokens\n");
        goto out;
    }
    /* the backend is checked now, not at the first batch: auto logs its choice, and a
     * cuda that cannot run here fails at startup */
    enum cuda_math cmath;
    enum tensor_backend bk;
    int brc = tensor_backend_flags("saeflow-train", o->backend, o->cuda_math, &bk, &cmath);
    if (brc) {
        ret = brc;
        goto out;
    }
    if (bk == TENSOR_CUDA && !strcmp(o->backend, "cuda") && arch != SAE_TOPK) {
        fprintf(stderr,
                "saeflow-train: --backend cuda trains --arch topk only (use cpu or auto)\n");
        goto out;
    }
    hooks_copy = strdup(o->hook);
    if (!hooks_copy) goto out;
    T->n_slots = str_split_list(hooks_copy, hook_names, MAX_HOOKS);
    if (T->n_slots == 0) {
        fprintf(stderr, "saeflow-train: no hook\n");
        goto out;
    }
    config_log(&cfg);
    sig_install();
    ret = 1;
    T->healthy = true;
    rng_seed(&T->rng, (uint64_t)o->seed * 7919u + 17u);
    T->est_batch_tokens = 1;

    /* ---- acquire ---- */
    T->reg = metrics_new();
    if (!T->reg) goto out;
    struct metrics_family *fam[8] = {
        metrics_counter(T->reg, "saeflow_train_tokens_total", "tokens trained", "hook"),
        metrics_counter(T->reg, "saeflow_train_steps_total", "optimiser steps", "hook"),
        metrics_gauge(T->reg, "saeflow_train_loss", "loss (EMA)", "hook"),
        metrics_gauge(T->reg, "saeflow_train_fvu", "fraction of variance unexplained (EMA)",
                      "hook"),
        metrics_gauge(T->reg, "saeflow_train_l0", "active latents per token (EMA)", "hook"),
        metrics_gauge(T->reg, "saeflow_train_dead_fraction", "dead latents", "hook"),
        metrics_gauge(T->reg, "saeflow_train_buffer_tokens", "tokens in the mixing buffer", "hook"),
        metrics_gauge(T->reg, "saeflow_train_tokens_per_second", "training throughput", "hook"),
    };
    struct metrics_family *fam_div =
        metrics_gauge(T->reg, "saeflow_train_diverged",
                      "1 when training diverged (non-finite loss or weights) and stopped", "hook");
    for (size_t i = 0; i < T->n_slots; i++) {
        struct slot *s = &T->slots[i];
        snprintf(s->hook, sizeof s->hook, "%s", hook_names[i]);
        struct metric **ms[8] = {&s->m_tokens, &s->m_steps, &s->m_loss, &s->m_fvu,
                                 &s->m_l0,     &s->m_dead,  &s->m_fill, &s->m_tps};
        for (int j = 0; j < 8; j++) *ms[j] = metrics_child(fam[j], s->hook, NULL);
        s->m_diverged = metrics_child(fam_div, s->hook, NULL);
        metrics_set(s->m_diverged, 0);
        sae_batch_guard_init(&s->guard, o->guard_abs_max, o->guard_norm_ratio);
    }
    T->m_ckpts = metrics_child(
        metrics_counter(T->reg, "saeflow_train_checkpoints_total", "checkpoints committed", NULL),
        NULL);
    struct metrics_family *dropped = metrics_counter(
        T->reg, "saeflow_train_batches_dropped_total",
        "batches consumed but not trained (wrong d_in; refused by the batch guard: nonfinite, "
        "magnitude, norm_outlier)",
        "reason");
    T->m_drop_dims = metrics_child(dropped, "d_in", NULL);
    for (int v = SAE_GUARD_NONFINITE; v < SAE_GUARD_COUNT; v++)
        T->m_drop_guard[v] =
            metrics_child(dropped, sae_guard_reason((enum sae_guard_verdict)v), NULL);
    static const double secs[] = {0.01, 0.05, 0.1, 0.5, 1, 5, 30};
    T->m_ckpt_s = metrics_child(metrics_histogram(T->reg, "saeflow_train_checkpoint_seconds",
                                                  "checkpoint write time", NULL, secs, 7),
                                NULL);
    if (file_mkdirs(o->ckpt_dir, 0755) < 0) goto out;
    struct stream_consumer_opts co;
    stream_consumer_opts_default(&co);
    co.consumer_id = o->trainer_id;
    co.endpoint = o->bind;
    co.hooks = (const char *const *)hook_names;
    co.n_hooks = T->n_slots;
    co.credit_window = (size_t)o->credit_window;
    co.max_msg_bytes = (size_t)o->max_msg_mb << 20;
    T->sc = stream_consumer_new(&co);
    if (!T->sc) goto out;
    uint64_t latest = ckpt_latest(T);
    if (latest && restore(T, latest) < 0) {
        log_error("resume_failed", "ckpt=%llu", (unsigned long long)latest);
        goto out;
    }
    if (stream_consumer_ledger_open(T->sc, o->ledger, T->ckpt_seq) < 0) goto out;
    if (o->publish && *o->publish) {
        T->pub = wire_sock_new(WIRE_PUB, o->publish, WIRE_BIND, NULL);
        if (!T->pub) goto out;
    }
    if (o->metrics_port > 0) {
        http = http_server_new(o->metrics_addr, (uint16_t)o->metrics_port, NULL);
        if (!http || http_serve_standard(http, T->reg, health, T) < 0 ||
            http_server_start(http) < 0)
            goto out;
        log_info("http_listening", "addr=%s port=%u", o->metrics_addr, http_server_port(http));
    }

    /* ---- run ---- */
    ret = 0;
    T->last_ckpt_s = time_now_s();
    double t0 = time_now_s(), last_metrics = 0, last_log = t0;
    int64_t tokens0 = 0;
    for (size_t i = 0; i < T->n_slots; i++)
        if (T->slots[i].t) tokens0 += sae_trainer_tokens(T->slots[i].t);
    size_t refill_pt = (size_t)(o->refill * (double)o->buffer_tokens);
    size_t B = (size_t)o->batch_tokens;
    while (!sig_stop_requested()) {
        bool flush = stream_consumer_producers_done(T->sc);
        bool can_train = false;
        for (size_t i = 0; i < T->n_slots; i++) {
            const struct slot *s = &T->slots[i];
            if (s->t && (s->fill >= refill_pt + B || (flush && s->fill > 0))) can_train = true;
        }
        /* take in what has arrived */
        for (int n = 0; n < 64; n++) {
            rc = stream_consumer_recv(T->sc, &dv, n == 0 && !can_train ? 20 : 0);
            if (rc == SF_AGAIN) break;
            if (rc < 0) {
                ret = 1;
                goto drain;
            }
            /* diverged: nothing is taken in (it stays uncommitted, to be re-sent) */
            rc = T->diverged ? 0 : take_batch(T, dv.msg.batch);
            stream_delivery_fini(&dv);
            if (rc < 0) {
                ret = 1;
                goto drain;
            }
        }
        /* credit: room in the fullest buffer, in batches */
        size_t room = SIZE_MAX;
        for (size_t i = 0; i < T->n_slots; i++) {
            const struct slot *s = &T->slots[i];
            size_t cap = (size_t)o->buffer_tokens, fill = s->fill;
            size_t r = fill < cap ? (cap - fill) / T->est_batch_tokens : 0;
            if (r < room) room = r;
        }
        stream_consumer_set_room(T->sc, T->diverged ? 0 : room);
        /* train: one step per hook per round keeps the loop responsive */
        flush = stream_consumer_producers_done(T->sc);
        for (size_t i = 0; i < T->n_slots; i++) {
            struct slot *s = &T->slots[i];
            if (!s->t || T->diverged) continue;
            size_t b = 0;
            if (s->fill >= refill_pt + B)
                b = B;
            else if (flush && s->fill > 0)
                b = SF_MIN(B, s->fill);
            if (b && train_step(T, s, b) < 0) {
                ret = 1;
                goto drain;
            }
        }
        double now = time_now_s();
        struct stream_consumer_stats cs;
        stream_consumer_stats(T->sc, &cs);
        const char *why = NULL;
        if (T->tokens_since_ckpt >= o->ckpt_every_tokens)
            why = "tokens";
        else if (cs.pending && now - T->last_ckpt_s >= o->ckpt_every_s)
            why = "time";
        else if (stream_consumer_commit_wanted(T->sc) && now - T->last_ckpt_s >= 0.5)
            why = "producer_waiting";
        else if (cs.pending && flush) {
            bool empty = true;
            for (size_t i = 0; i < T->n_slots; i++) empty = empty && T->slots[i].fill == 0;
            if (empty) why = "producers_done";
        }
        if (T->diverged) {
            why = NULL;
            /* nothing will be committed; with exit_when_done, leave once no producer is
             * left waiting (their uncommitted batches are theirs to count) */
            if (o->exit_when_done && cs.producers_live == 0 && now - T->diverged_at > 5) {
                log_error("train_exit_diverged", "%s", T->diverged_why);
                ret = 1;
                goto drain;
            }
        }
        if (why && checkpoint(T, why) < 0 && !T->diverged) {
            ret = 1;
            goto drain;
        }
        if (now - last_metrics >= o->metrics_every_s) {
            int64_t tokens = 0;
            for (size_t i = 0; i < T->n_slots; i++)
                if (T->slots[i].t) tokens += sae_trainer_tokens(T->slots[i].t);
            double tps = (double)(tokens - tokens0) / (now - t0 + 1e-9);
            T->last_tps = tps;
            publish_metrics(T, tps);
            stream_metrics(T);
            last_metrics = now;
            if (now - last_log >= 5) {
                last_log = now;
                for (size_t i = 0; i < T->n_slots; i++) {
                    const struct slot *s = &T->slots[i];
                    if (!s->t) continue;
                    log_info("train_progress",
                             "hook=%s tokens=%lld steps=%lld loss=%.5f fvu=%.4f l0=%.2f dead=%.4f "
                             "buffer=%zu tok_per_s=%.0f",
                             s->hook, (long long)sae_trainer_tokens(s->t),
                             (long long)sae_trainer_steps(s->t), s->loss_ema, s->fvu_ema, s->l0_ema,
                             slot_dead_fraction(s), s->fill, tps);
                }
            }
        }
        if (o->exit_when_done && stream_consumer_all_done(T->sc)) {
            bool empty = true;
            for (size_t i = 0; i < T->n_slots; i++) empty = empty && T->slots[i].fill == 0;
            if (empty) {
                log_info("train_all_done", "ckpt=%llu", (unsigned long long)T->ckpt_seq);
                break;
            }
        }
    }

drain:
    /* final checkpoint: everything received is in it (weights or saved buffer), so a
     * restart resumes exactly here */
    {
        struct stream_consumer_stats cs;
        stream_consumer_stats(T->sc, &cs);
        if (T->diverged) ret = 1; /* the last good checkpoint stays the latest */
        if (T->healthy && !T->diverged &&
            (cs.pending || T->tokens_since_ckpt || T->steps_since_ckpt || T->ckpt_seq == 0))
            if (checkpoint(T, "shutdown") < 0) ret = 1;
        /* the acks are queued; ZMQ_LINGER flushes them when the socket closes */
        publish_metrics(T, T->last_tps);
        for (size_t i = 0; i < T->n_slots; i++) {
            const struct slot *s = &T->slots[i];
            if (!s->t) continue;
            printf("final hook=%s tokens=%lld steps=%lld fvu=%.4f l0=%.2f dead=%.4f ckpt=%llu\n",
                   s->hook, (long long)sae_trainer_tokens(s->t), (long long)sae_trainer_steps(s->t),
                   s->fvu_ema, s->l0_ema, slot_dead_fraction(s), (unsigned long long)T->ckpt_seq);
        }
        if (T->diverged)
            printf("diverged %s last_good_ckpt=%llu\n", T->diverged_why,
                   (unsigned long long)T->ckpt_seq);
        fflush(stdout);
    }

out:
    stream_delivery_fini(&dv);
    http_server_destroy(&http);
    wire_sock_destroy(&T->pub);
    stream_consumer_destroy(&T->sc);
    for (size_t i = 0; i < MAX_HOOKS; i++) {
        struct slot *s = &T->slots[i];
        sae_backend_destroy(&s->be);
        sae_trainer_destroy(&s->t);
        free(s->buf);
        free(s->batch);
        free(s->conv);
    }
    metrics_destroy(&T->reg);
    free(hooks_copy);
    config_free(&cfg);
    return ret;
}

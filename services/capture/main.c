/* saeflow-capture: runs a language model over text and publishes the activations at
 * chosen hook points as ActivationBatch messages (common/stream: credit, acks, ring,
 * resend), and/or writes them to safetensors shards.
 *
 * Documents are tokenized, BOS-prefixed per the model (prepend_bos), concatenated and
 * cut into windows of `context` tokens (each window starts with BOS when BOS is
 * prepended); `batch_seqs` windows run as one batched forward pass (only up to the
 * last hooked layer). BOS, EOS and control tokens are excluded by default. Each
 * forward pass gives one batch per hook.
 *
 * Connected to trainers, capture first waits until every trainer has subscribed and
 * sent its Resume (logging capture_waiting every --wait_log_s; --connect_timeout gives
 * up with exit 1), then reopens the source at the smallest committed cursor
 * (stream_producer_resume_point): a capture killed or stopped and started again trains
 * no token twice and loses none, and one whose --max_tokens plan (or source) was
 * committed already says so and exits 0 with nothing captured. Each batch carries the
 * source stream range of its forward pass. Stdin cannot be reopened: no cursor.
 * Nothing captured from a fresh input is an error (exit 1) unless --allow_empty.
 *
 * Shards: <shard_dir>/<hook>/shard-NNNNNN.safetensors, tensor "activations"
 * [tokens, d_in] in the wire dtype + __metadata__ {hook_name, model_name, d_in, dtype,
 * context_size, prepend_bos, exclude_special_tokens, dataset_path}. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "http/http.h"
#include "model/model.h"
#include "model/model_backend.h"
#include "model/tokenizer.h"
#include "safetensors/safetensors.h"
#include "source.h"
#include "stream/stream.h"
#include "tensor/tensor.h"
#include "tensor/tensor_cuda.h"

#define MAX_HOOKS  16
#define MAX_INPUTS 64
#define MAX_LINKS  STREAM_MAX_LINKS

struct opts {
    char *model, *tokenizer, *input, *format, *jsonl_field, *separator, *hook, *prepend_bos;
    char *dtype, *connect, *producer_id, *ledger, *shard_dir, *metrics_addr, *model_name;
    char *backend, *cuda_math;
    int64_t epochs, max_tokens, context, batch_seqs, ring, shard_tokens, metrics_port;
    double drain_s, connect_timeout_s, wait_log_s;
    bool exclude_special, allow_empty, resume;
};

struct hook_state {
    struct capture *cap;
    char name[WIRE_MAX_NAME_LEN + 1];
    size_t layer;
    /* this forward pass */
    float *x; /* (n, d) */
    uint32_t *tok;
    uint64_t *doc;
    int32_t *pos;
    size_t n;
    /* shard being filled */
    float *sx;
    size_t sn;
    int64_t shard_idx;
    uint64_t tokens; /* captured so far */
};

struct capture {
    struct opts o;
    struct model *model;
    const struct tokenizer *tok;
    struct model_backend *eng; /* the forward pass on the chosen backend */
    size_t d, ctx_len, n_seqs;
    bool prepend_bos;
    Saeflow__DType dtype;
    bool *special; /* (vocab) excluded token ids */
    struct hook_state hooks[MAX_HOOKS];
    size_t n_hooks;
    /* windows being packed: (n_seqs, ctx_len) tokens and doc ids */
    int32_t *win_tok;
    uint64_t *win_doc;
    size_t *win_len;
    /* token stream carried between windows */
    int32_t *carry;
    uint64_t *carry_doc;
    size_t carry_n, carry_off, carry_cap;
    struct source *src;
    bool src_done;
    /* the source cursor (stream.h): stream tokens consumed, and where the document in
     * carry starts, so that a restarted capture reopens the source exactly here */
    bool resumable;
    char source_id[WIRE_MAX_ID_LEN + 1];
    uint64_t position;
    struct source_pos carry_pos;
    uint64_t skip_tokens; /* resuming: tokens of the next document already trained */
    struct stream_producer *prod;
    struct buf scratch;
    /* metrics */
    struct metrics *reg;
    struct metric *m_tokens, *m_docs, *m_batches, *m_fwd_tokens, *m_tps, *m_ring, *m_credit;
    struct metric *m_fate[5];
    struct metric *m_skip[2]; /* JSONL lines skipped: not_json, no_field */
    uint64_t fwd_tokens;
    double wait_s; /* time publish() waited for ring room or consumers */
};

static int on_hook(void *user, const struct model_act *act)
{
    struct hook_state *h = user;
    struct capture *c = h->cap;
    for (size_t i = 0; i < act->n_tokens; i++) {
        int32_t t = act->tokens[i];
        if (c->o.exclude_special && t >= 0 && c->special[t]) continue;
        size_t w = act->seq[i], p = act->pos[i];
        memcpy(h->x + h->n * c->d, act->x + i * act->d, c->d * sizeof(float));
        h->tok[h->n] = (uint32_t)t;
        h->doc[h->n] = c->win_doc[w * c->ctx_len + p];
        h->pos[h->n] = (int32_t)p;
        h->n++;
    }
    return 0;
}

/* Next token of the packed stream (with BOS before every document when prepending).
 * SF_NOTFOUND when the sources are exhausted. */
static int stream_token(struct capture *c, int32_t *tok, uint64_t *doc)
{
    while (c->carry_off >= c->carry_n) {
        if (c->src_done) return SF_NOTFOUND;
        const char *text;
        size_t len;
        uint64_t id;
        struct source_pos next;
        source_tell(c->src, &next);
        int rc = source_next(c->src, &text, &len, &id);
        if (rc == SF_NOTFOUND) {
            c->src_done = true;
            return SF_NOTFOUND;
        }
        if (rc < 0) return rc;
        int32_t *ids = NULL;
        size_t n = 0;
        rc = tokenizer_encode_alloc(c->tok, text, len, c->prepend_bos, &ids, &n);
        if (rc < 0) return rc;
        c->carry_pos = next;
        size_t skip = 0;
        if (c->skip_tokens) {
            if (c->skip_tokens > n) {
                log_error("capture_resume_mismatch",
                          "doc=%llu tokens=%zu committed_tokens=%llu (the input changed since "
                          "the run that committed this cursor)",
                          (unsigned long long)id, n, (unsigned long long)c->skip_tokens);
                free(ids);
                return SF_ERANGE;
            }
            skip = (size_t)c->skip_tokens;
            c->skip_tokens = 0;
        }
        if (n > c->carry_cap) {
            int32_t *nt = realloc(c->carry, n * sizeof *nt);
            uint64_t *nd = nt ? realloc(c->carry_doc, n * sizeof *nd) : NULL;
            if (nt) c->carry = nt;
            if (nd) c->carry_doc = nd;
            if (!nt || !nd) {
                free(ids);
                return SF_ENOMEM;
            }
            c->carry_cap = n;
        }
        if (n) memcpy(c->carry, ids, n * sizeof *ids);
        for (size_t i = 0; i < n; i++) c->carry_doc[i] = id;
        free(ids);
        c->carry_n = n;
        c->carry_off = skip;
        metrics_counter_to(c->m_docs, (double)source_docs(c->src));
    }
    *tok = c->carry[c->carry_off];
    *doc = c->carry_doc[c->carry_off];
    c->carry_off++;
    c->position++;
    return 0;
}

/* The cursor after everything packed so far (captured: the plan's count there). */
static void cursor_now(const struct capture *c, uint64_t captured, struct stream_cursor *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->source_id, sizeof out->source_id, "%s", c->source_id);
    out->position = c->position;
    out->source_epoch = (uint64_t)c->carry_pos.epoch;
    out->file_index = c->carry_pos.file_index;
    out->byte_offset = c->carry_pos.byte_offset;
    out->doc_id = c->carry_pos.doc_id;
    out->doc_token = c->carry_off;
    out->captured = captured;
}

/* The source's identity for cursors: what decides its token stream and the plan's
 * count (inputs, format, tokenization, exclusions). */
static void source_fingerprint(struct capture *c)
{
    const struct opts *o = &c->o;
    const char *parts[] = {o->input,
                           o->format,
                           o->jsonl_field ? o->jsonl_field : "",
                           o->separator ? o->separator : "",
                           o->model_name,
                           c->prepend_bos ? "bos" : "nobos",
                           o->exclude_special ? "ex" : "all"};
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < SF_ARRAY_LEN(parts); i++) {
        for (const char *p = parts[i]; *p; p++) {
            h ^= (unsigned char)*p;
            h *= 1099511628211ull;
        }
        h ^= 0xff;
        h *= 1099511628211ull;
    }
    snprintf(c->source_id, sizeof c->source_id, "src-%016llx", (unsigned long long)h);
}

/* Packs up to n_seqs windows; returns how many (0 at the end of the input). */
static int pack_windows(struct capture *c, size_t *n_out)
{
    size_t w = 0;
    int32_t bos = tokenizer_bos(c->tok);
    for (; w < c->n_seqs; w++) {
        size_t n = 0;
        int32_t *wt = c->win_tok + w * c->ctx_len;
        uint64_t *wd = c->win_doc + w * c->ctx_len;
        while (n < c->ctx_len) {
            int32_t t;
            uint64_t d;
            int rc = stream_token(c, &t, &d);
            if (rc == SF_NOTFOUND) break;
            if (rc < 0) return rc;
            if (n == 0 && c->prepend_bos && bos >= 0 && t != bos) {
                wt[n] = bos; /* a window that starts mid-document still starts with BOS */
                wd[n] = d;
                n++;
            }
            wt[n] = t;
            wd[n] = d;
            n++;
        }
        c->win_len[w] = n;
        if (n < c->ctx_len) {
            if (n >= 2) w++; /* a last, shorter window */
            break;
        }
    }
    *n_out = w;
    return 0;
}

static int write_shard(struct capture *c, struct hook_state *h)
{
    if (h->sn == 0) return 0;
    char dir[4096], path[4200];
    snprintf(dir, sizeof dir, "%s/%s", c->o.shard_dir, h->name);
    if (file_mkdirs(dir, 0755) < 0) {
        log_error("shard_dir", "path=%s err=\"%s\"", dir, strerror(errno));
        return SF_EIO;
    }
    snprintf(path, sizeof path, "%s/shard-%06lld.safetensors", dir, (long long)h->shard_idx);
    struct st_writer *w = st_writer_new();
    if (!w) return SF_ENOMEM;
    enum st_dtype dt = c->dtype == SAEFLOW__DTYPE__DTYPE_F32   ? ST_F32
                       : c->dtype == SAEFLOW__DTYPE__DTYPE_F16 ? ST_F16
                                                               : ST_BF16;
    int64_t shape[2] = {(int64_t)h->sn, (int64_t)c->d};
    char num[32], ctxs[32];
    snprintf(num, sizeof num, "%zu", c->d);
    snprintf(ctxs, sizeof ctxs, "%zu", c->ctx_len);
    int rc = st_writer_add_f32(w, "activations", dt, shape, 2, h->sx);
    if (rc == 0) rc = st_writer_set_metadata(w, "hook_name", h->name);
    if (rc == 0) rc = st_writer_set_metadata(w, "model_name", c->o.model_name);
    if (rc == 0) rc = st_writer_set_metadata(w, "d_in", num);
    if (rc == 0) rc = st_writer_set_metadata(w, "dtype", safetensors_dtype_name(dt));
    if (rc == 0) rc = st_writer_set_metadata(w, "context_size", ctxs);
    if (rc == 0) rc = st_writer_set_metadata(w, "prepend_bos", c->prepend_bos ? "true" : "false");
    if (rc == 0)
        rc = st_writer_set_metadata(w, "exclude_special_tokens",
                                    c->o.exclude_special ? "true" : "false");
    if (rc == 0) rc = st_writer_set_metadata(w, "dataset_path", c->o.input);
    if (rc == 0) rc = st_writer_write(w, path);
    st_writer_destroy(&w);
    if (rc < 0) {
        log_error("shard_write", "path=%s err=%s", path, sf_strerror(rc));
        return rc;
    }
    log_info("shard_written", "path=%s tokens=%zu", path, h->sn);
    h->shard_idx++;
    h->sn = 0;
    return 0;
}

static int add_to_shard(struct capture *c, struct hook_state *h)
{
    size_t cap = (size_t)c->o.shard_tokens;
    size_t i = 0;
    while (i < h->n) {
        size_t take = SF_MIN(h->n - i, cap - h->sn);
        memcpy(h->sx + h->sn * c->d, h->x + i * c->d, take * c->d * sizeof(float));
        h->sn += take;
        i += take;
        if (h->sn == cap) {
            int rc = write_shard(c, h);
            if (rc < 0) return rc;
        }
    }
    return 0;
}

static void update_metrics(struct capture *c)
{
    if (!c->prod) return;
    struct stream_producer_stats ps;
    stream_producer_stats(c->prod, &ps);
    metrics_counter_to(c->m_batches, (double)ps.published);
    metrics_counter_to(c->m_fate[0], (double)ps.committed);
    metrics_counter_to(c->m_fate[1], (double)ps.rejected);
    metrics_counter_to(c->m_fate[2], (double)ps.unrouted);
    metrics_counter_to(c->m_fate[3], (double)ps.unacked);
    metrics_counter_to(c->m_fate[4], (double)ps.resent);
    metrics_set(c->m_ring, (double)ps.in_ring);
    metrics_set(c->m_credit, (double)ps.credit);
}

/* Publishes hook h's batch, waiting for ring room. SF_EXIT if asked to stop first. */
static int publish(struct capture *c, struct hook_state *h, uint64_t from,
                   const struct stream_cursor *end)
{
    Saeflow__ActivationBatch b;
    saeflow__activation_batch__init(&b);
    Saeflow__SourceCursor pe;
    if (end) {
        stream_cursor_to_pb(end, &pe);
        b.source_from = from;
        b.source_end = &pe;
    }
    b.model_id = c->o.model_name;
    b.hook_name = h->name;
    b.layer = (int32_t)h->layer;
    b.token_ids = h->tok;
    b.n_token_ids = h->n;
    b.doc_ids = h->doc;
    b.n_doc_ids = h->n;
    b.positions = h->pos;
    b.n_positions = h->n;
    b.created_unix_ms = time_wall_ms();
    buf_reset(&c->scratch);
    int rc = wire_batch_set_f32(&b, h->x, h->n, c->d, c->dtype, &c->scratch);
    if (rc < 0) return rc;
    bool logged = false;
    double t0 = time_now_s(), last_log = t0;
    for (int tries = 0;; tries++) {
        if (tries == 1) t0 = time_now_s(); /* waiting starts after a first refusal */
        if (stream_producer_ready(c->prod)) {
            rc = stream_producer_publish(c->prod, &b);
            if (rc != SF_AGAIN) {
                if (tries) c->wait_s += time_now_s() - t0;
                return rc;
            }
        } else if (!logged || time_now_s() - last_log >= c->o.wait_log_s) {
            log_info("capture_waiting", "what=trainer_subscription waited_s=%.0f",
                     time_now_s() - t0);
            last_log = time_now_s();
            logged = true;
        }
        if (sig_stop_requested()) return SF_EXIT;
        rc = stream_producer_poll(c->prod, 20);
        if (rc < 0) return rc;
        update_metrics(c);
    }
}

static int health(void *ud, char *reason, size_t len)
{
    (void)ud;
    (void)reason;
    (void)len;
    return 0;
}

int main(int argc, char **argv)
{
    proc_reexec_with_env(argv, "OMP_WAIT_POLICY", "passive");
    struct capture cap = {0};
    struct capture *c = &cap;
    struct opts *o = &c->o;
    const struct config_opt table[] = {
        {"model", CFG_STRING, &o->model, NULL, 0, -1, "model file or directory (required)"},
        {"tokenizer", CFG_STRING, &o->tokenizer, NULL, 0, -1, "tokenizer file (llama2.c)"},
        {"model_name", CFG_STRING, &o->model_name, NULL, 0, -1,
         "model id on the wire (default: file stem)"},
        {"input", CFG_STRING, &o->input, NULL, 0, -1, "comma-separated files/dirs, '-' = stdin"},
        {"format", CFG_STRING, &o->format, "auto", 0, -1, "auto | text | jsonl"},
        {"jsonl_field", CFG_STRING, &o->jsonl_field, "text", 0, -1, "JSONL string field"},
        {"separator", CFG_STRING, &o->separator, NULL, 0, -1, "text files: document separator"},
        {"epochs", CFG_INT, &o->epochs, "1", 1, 1e9, "passes over the input"},
        {"max_tokens", CFG_INT, &o->max_tokens, "0", 0, 1e15,
         "stop after this many tokens (0 = no limit)"},
        {"hook", CFG_STRING, &o->hook, "blocks.0.hook_resid_post", 0, -1,
         "comma-separated hook points"},
        {"context", CFG_INT, &o->context, "256", 2, 1 << 20, "tokens per window"},
        {"batch_seqs", CFG_INT, &o->batch_seqs, "16", 1, 4096, "windows per forward pass"},
        {"prepend_bos", CFG_STRING, &o->prepend_bos, "auto", 0, -1, "auto | true | false"},
        {"exclude_special", CFG_BOOL, &o->exclude_special, "true", 0, -1,
         "drop BOS/EOS/control positions"},
        {"backend", CFG_STRING, &o->backend, "cpu", 0, -1,
         "cpu | cuda | auto (auto: CUDA when built and a device is visible)"},
        {"cuda_math", CFG_STRING, &o->cuda_math, "fp32", 0, -1,
         "fp32 | tf32 | bf16 GEMM precision on CUDA (ignored on the CPU)"},
        {"dtype", CFG_STRING, &o->dtype, "bf16", 0, -1,
         "f32 | bf16 | f16 on the wire and in shards"},
        {"connect", CFG_STRING, &o->connect, NULL, 0, -1, "comma-separated trainer endpoints"},
        {"producer_id", CFG_STRING, &o->producer_id, "capture-0", 0, -1, "stable producer name"},
        {"ring", CFG_INT, &o->ring, "256", 1, 1 << 20, "unacknowledged batches kept for resend"},
        {"ledger", CFG_STRING, &o->ledger, NULL, 0, -1, "file for 'epoch seq fate' lines"},
        {"shard_dir", CFG_STRING, &o->shard_dir, NULL, 0, -1, "write safetensors shards here"},
        {"shard_tokens", CFG_INT, &o->shard_tokens, "262144", 1, 1 << 28, "tokens per shard"},
        {"metrics_addr", CFG_STRING, &o->metrics_addr, "127.0.0.1", 0, -1, "HTTP bind address"},
        {"metrics_port", CFG_INT, &o->metrics_port, "0", 0, 65535,
         "/metrics + /healthz port (0 = off)"},
        {"drain_s", CFG_DOUBLE, &o->drain_s, "60", 0, 86400, "wait this long for acks at the end"},
        {"connect_timeout", CFG_DOUBLE, &o->connect_timeout_s, "0", 0, 1e9,
         "exit 1 when no trainer answered within this many seconds (0 = wait forever)"},
        {"wait_log_s", CFG_DOUBLE, &o->wait_log_s, "10", 0.1, 86400,
         "while waiting for a trainer, log capture_waiting this often"},
        {"resume", CFG_BOOL, &o->resume, "true", 0, -1,
         "continue the source from the cursor the trainers committed (files, not stdin); "
         "false reads from the start and the trainers skip what they committed"},
        {"allow_empty", CFG_BOOL, &o->allow_empty, "false", 0, -1,
         "exit 0 even when the input gives no token to capture"},
    };
    struct config cfg = {
        .service = "capture",
        .usage = "saeflow-capture --model M --input FILES [--connect EP] [--shard_dir D]",
        .opts = table,
        .n_opts = SF_ARRAY_LEN(table)};
    log_init("capture", LOG_LOGFMT, LOG_INFO);
    int rc = config_load(&cfg, argc, argv);
    if (rc == SF_EXIT) return 0;
    if (rc < 0) return 2;
    log_init("capture", cfg.log_format, cfg.log_level);
    int ret = 2;
    struct http_server *http = NULL;
    char *hooks_copy = NULL, *inputs_copy = NULL, *conn_copy = NULL;
    char *hook_names[MAX_HOOKS], *inputs[MAX_INPUTS], *eps[MAX_LINKS];
    size_t n_inputs = 0, n_eps = 0;

    /* ---- validate ---- */
    if (!o->model || !*o->model || !o->input || !*o->input) {
        fprintf(stderr, "saeflow-capture: --model and --input are required\n");
        goto out;
    }
    if (!(o->connect && *o->connect) && !(o->shard_dir && *o->shard_dir)) {
        fprintf(stderr, "saeflow-capture: give --connect and/or --shard_dir\n");
        goto out;
    }
    if (!strcmp(o->dtype, "f32"))
        c->dtype = SAEFLOW__DTYPE__DTYPE_F32;
    else if (!strcmp(o->dtype, "bf16"))
        c->dtype = SAEFLOW__DTYPE__DTYPE_BF16;
    else if (!strcmp(o->dtype, "f16"))
        c->dtype = SAEFLOW__DTYPE__DTYPE_F16;
    else {
        fprintf(stderr, "saeflow-capture: --dtype must be f32, bf16 or f16\n");
        goto out;
    }
    enum source_format fmt = SOURCE_AUTO;
    if (!strcmp(o->format, "text"))
        fmt = SOURCE_TEXT;
    else if (!strcmp(o->format, "jsonl"))
        fmt = SOURCE_JSONL;
    else if (strcmp(o->format, "auto") != 0) {
        fprintf(stderr, "saeflow-capture: --format must be auto, text or jsonl\n");
        goto out;
    }
    if (strcmp(o->prepend_bos, "auto") && strcmp(o->prepend_bos, "true") &&
        strcmp(o->prepend_bos, "false")) {
        fprintf(stderr, "saeflow-capture: --prepend_bos must be auto, true or false\n");
        goto out;
    }
    /* checked before loading anything: auto logs its choice, and a cuda that cannot run
     * here fails at startup */
    enum cuda_math cmath;
    enum tensor_backend bk;
    int brc = tensor_backend_flags("saeflow-capture", o->backend, o->cuda_math, &bk, &cmath);
    if (brc) {
        ret = brc;
        goto out;
    }
    hooks_copy = strdup(o->hook);
    inputs_copy = strdup(o->input);
    conn_copy = strdup(o->connect ? o->connect : "");
    if (!hooks_copy || !inputs_copy || !conn_copy) goto out;
    c->n_hooks = str_split_list(hooks_copy, hook_names, MAX_HOOKS);
    n_inputs = str_split_list(inputs_copy, inputs, MAX_INPUTS);
    n_eps = str_split_list(conn_copy, eps, MAX_LINKS);
    if (c->n_hooks == 0 || n_inputs == 0) {
        fprintf(stderr, "saeflow-capture: no hook or no input\n");
        goto out;
    }
    if (!o->model_name || !*o->model_name) {
        const char *base = strrchr(o->model, '/');
        base = base ? base + 1 : o->model;
        char stem[128];
        snprintf(stem, sizeof stem, "%s", base);
        char *dot = strrchr(stem, '.');
        if (dot && dot != stem) *dot = 0;
        if (config_set(&cfg, "model_name", stem, "derived") < 0) goto out;
    }
    config_log(&cfg);
    sig_install();
    ret = 1;

    /* ---- acquire ---- */
    if (o->shard_dir && *o->shard_dir) {
        /* checked before the model loads: an unwritable folder fails now, and says why */
        errno = 0;
        if (file_mkdirs(o->shard_dir, 0755) < 0 || access(o->shard_dir, W_OK) != 0) {
            const char *why = strerror(errno ? errno : EACCES);
            log_error("capture_shard_dir", "path=%s err=\"%s\"", o->shard_dir, why);
            fprintf(stderr, "saeflow-capture: cannot write shards to %s: %s\n", o->shard_dir, why);
            goto out;
        }
    }
    struct model_load_opts lo = {.tokenizer_path =
                                     o->tokenizer && *o->tokenizer ? o->tokenizer : NULL};
    if (model_load(o->model, &lo, &c->model) < 0) goto out;
    c->tok = model_tokenizer(c->model);
    if (!c->tok) {
        log_error("capture_no_tokenizer", "model=%s", o->model);
        goto out;
    }
    const struct model_config *mc = model_config(c->model);
    c->d = mc->dim;
    c->ctx_len = (size_t)o->context;
    if (mc->max_seq_len && c->ctx_len > mc->max_seq_len) c->ctx_len = mc->max_seq_len;
    c->n_seqs = (size_t)o->batch_seqs;
    c->prepend_bos = !strcmp(o->prepend_bos, "auto") ? tokenizer_add_bos_default(c->tok)
                                                     : !strcmp(o->prepend_bos, "true");
    size_t vocab = tokenizer_vocab_size(c->tok);
    c->special = calloc(vocab ? vocab : 1, sizeof *c->special);
    if (!c->special) goto out;
    for (size_t i = 0; i < vocab; i++)
        c->special[i] = tokenizer_token_type(c->tok, (int32_t)i) == TOKEN_CONTROL;
    if (tokenizer_bos(c->tok) >= 0) c->special[tokenizer_bos(c->tok)] = true;
    if (tokenizer_eos(c->tok) >= 0) c->special[tokenizer_eos(c->tok)] = true;
    rc = model_backend_new(c->model, o->backend, o->cuda_math, c->n_seqs, c->ctx_len, &c->eng);
    if (rc < 0) {
        log_error("capture_engine_failed", "backend=%s err=%s", o->backend, sf_strerror(rc));
        goto out;
    }
    size_t max_rows = c->n_seqs * c->ctx_len;
    for (size_t i = 0; i < c->n_hooks; i++) {
        struct hook_state *h = &c->hooks[i];
        h->cap = c;
        snprintf(h->name, sizeof h->name, "%s", hook_names[i]);
        enum model_hook_point pt;
        if (model_hook_parse(h->name, mc->n_layers, &h->layer, &pt) < 0) {
            log_error("capture_bad_hook", "hook=%s layers=%zu", h->name, mc->n_layers);
            ret = 2;
            goto out;
        }
        h->x = malloc(max_rows * c->d * sizeof(float));
        h->tok = malloc(max_rows * sizeof *h->tok);
        h->doc = malloc(max_rows * sizeof *h->doc);
        h->pos = malloc(max_rows * sizeof *h->pos);
        if (!h->x || !h->tok || !h->doc || !h->pos) goto out;
        if (o->shard_dir && *o->shard_dir) {
            h->sx = malloc((size_t)o->shard_tokens * c->d * sizeof(float));
            if (!h->sx) goto out;
        }
        if (model_backend_add_hook(c->eng, h->name, on_hook, h, false) < 0) goto out;
    }
    c->win_tok = malloc(max_rows * sizeof *c->win_tok);
    c->win_doc = malloc(max_rows * sizeof *c->win_doc);
    c->win_len = calloc(c->n_seqs, sizeof *c->win_len);
    if (!c->win_tok || !c->win_doc || !c->win_len) goto out;
    struct source_opts so = {.format = fmt,
                             .jsonl_field = o->jsonl_field,
                             .separator = o->separator,
                             .epochs = o->epochs};
    c->src = source_new((const char *const *)inputs, n_inputs, &so);
    if (!c->src) goto out;
    buf_init(&c->scratch, (size_t)WIRE_DEFAULT_MAX_MSG);

    c->reg = metrics_new();
    if (!c->reg) goto out;
    c->m_tokens =
        metrics_child(metrics_counter(c->reg, "saeflow_capture_tokens_total",
                                      "tokens captured (per hook, after exclusions)", NULL),
                      NULL);
    c->m_fwd_tokens = metrics_child(metrics_counter(c->reg, "saeflow_capture_forward_tokens_total",
                                                    "tokens run through the model", NULL),
                                    NULL);
    c->m_docs = metrics_child(
        metrics_counter(c->reg, "saeflow_capture_documents_total", "documents read", NULL), NULL);
    c->m_batches = metrics_child(metrics_counter(c->reg, "saeflow_capture_batches_published_total",
                                                 "batches put in the stream ring", NULL),
                                 NULL);
    struct metrics_family *ff =
        metrics_counter(c->reg, "saeflow_stream_batch_fates_total",
                        "batches by final fate (resent: retransmissions)", "fate");
    const char *fates[5] = {"committed", "rejected", "unrouted", "unacked", "resent"};
    for (int i = 0; i < 5; i++) c->m_fate[i] = metrics_child(ff, fates[i], NULL);
    struct metrics_family *fs = metrics_counter(c->reg, "saeflow_capture_skipped_lines_total",
                                                "JSONL lines skipped, by reason", "reason");
    c->m_skip[0] = metrics_child(fs, "not_json", NULL);
    c->m_skip[1] = metrics_child(fs, "no_field", NULL);
    c->m_tps = metrics_child(metrics_gauge(c->reg, "saeflow_capture_tokens_per_second",
                                           "forward tokens per second", NULL),
                             NULL);
    c->m_ring = metrics_child(metrics_gauge(c->reg, "saeflow_stream_ring_batches",
                                            "unacknowledged batches in the ring", NULL),
                              NULL);
    c->m_credit = metrics_child(
        metrics_gauge(c->reg, "saeflow_stream_credit", "credit left (batches)", NULL), NULL);
    if (o->metrics_port > 0) {
        http = http_server_new(o->metrics_addr, (uint16_t)o->metrics_port, NULL);
        if (!http || http_serve_standard(http, c->reg, health, c) < 0 ||
            http_server_start(http) < 0)
            goto out;
    }
    if (n_eps) {
        struct stream_producer_opts po;
        stream_producer_opts_default(&po);
        po.producer_id = o->producer_id;
        po.ring_batches = (size_t)o->ring;
        po.ledger_path = o->ledger && *o->ledger ? o->ledger : NULL;
        c->prod = stream_producer_new(&po);
        if (!c->prod) goto out;
        for (size_t i = 0; i < n_eps; i++)
            if (stream_producer_connect(c->prod, eps[i]) < 0) goto out;
    }
    log_info("capture_start", "model=%s d=%zu context=%zu batch_seqs=%zu hooks=%zu prepend_bos=%d",
             o->model_name, c->d, c->ctx_len, c->n_seqs, c->n_hooks, c->prepend_bos);

    /* ---- connect: wait for every trainer's subscription and resume point ---- */
    c->resumable = source_resumable(c->src);
    source_fingerprint(c);
    uint64_t captured = 0, start_captured = 0, start_position = 0;
    bool resumed = false, plan_done = false;
    if (c->prod) {
        double w0 = time_now_s(), wlog = w0;
        log_info("capture_waiting", "what=trainer endpoints=%s", o->connect);
        while (!stream_producer_ready(c->prod) && !sig_stop_requested()) {
            if (stream_producer_poll(c->prod, 50) < 0) goto out;
            double now = time_now_s();
            if (o->connect_timeout_s > 0 && now - w0 >= o->connect_timeout_s) {
                log_error("capture_no_trainer", "endpoints=%s waited_s=%.1f", o->connect, now - w0);
                fprintf(stderr,
                        "saeflow-capture: no trainer answered at %s within %.0f s "
                        "(--connect_timeout)\n",
                        o->connect, o->connect_timeout_s);
                goto out;
            }
            if (now - wlog >= o->wait_log_s) {
                log_info("capture_waiting", "what=trainer endpoints=%s waited_s=%.0f", o->connect,
                         now - w0);
                wlog = now;
            }
        }
        if (sig_stop_requested()) goto out;
        struct stream_cursor rp;
        rc = c->resumable && o->resume
                 ? stream_producer_resume_point(c->prod, (const char *const *)hook_names,
                                                c->n_hooks, c->source_id, &rp)
                 : SF_NOTFOUND;
        if (rc == SF_ESTATE) {
            fprintf(stderr,
                    "saeflow-capture: the trainer committed another source for producer %s "
                    "(see the log); use another --producer_id or a fresh trainer --ckpt_dir\n",
                    o->producer_id);
            goto out;
        }
        if (rc == 0) {
            struct source_pos sp = {.epoch = (int64_t)rp.source_epoch,
                                    .file_index = rp.file_index,
                                    .byte_offset = rp.byte_offset,
                                    .doc_id = rp.doc_id};
            if (source_seek(c->src, &sp) < 0) {
                fprintf(stderr,
                        "saeflow-capture: the committed cursor does not fit the input (see the "
                        "log): the input changed since it was committed\n");
                goto out;
            }
            c->carry_pos = sp;
            c->skip_tokens = rp.doc_token;
            c->position = start_position = rp.position;
            captured = start_captured = rp.captured;
            for (size_t i = 0; i < c->n_hooks; i++) c->hooks[i].tokens = rp.captured;
            resumed = true;
            log_info("capture_resumed",
                     "source=%s position=%llu captured=%llu epoch=%llu file=%llu offset=%llu "
                     "doc=%llu doc_token=%llu",
                     c->source_id, (unsigned long long)rp.position, (unsigned long long)rp.captured,
                     (unsigned long long)rp.source_epoch, (unsigned long long)rp.file_index,
                     (unsigned long long)rp.byte_offset, (unsigned long long)rp.doc_id,
                     (unsigned long long)rp.doc_token);
            if (o->max_tokens > 0 && rp.captured >= (uint64_t)o->max_tokens) {
                plan_done = true;
                log_info("capture_plan_reached",
                         "captured=%llu max_tokens=%lld (already trained: nothing to capture)",
                         (unsigned long long)rp.captured, (long long)o->max_tokens);
                printf("capture: this run is already finished: %llu of %lld tokens were "
                       "captured and committed before; nothing more to capture\n",
                       (unsigned long long)rp.captured, (long long)o->max_tokens);
                fflush(stdout);
            }
        } else if (!c->resumable) {
            log_info("capture_not_resumable", "reason=stdin_input");
        }
    }

    /* ---- run ---- */
    ret = 0;
    double t0 = time_now_s(), last_log = t0;
    uint64_t pass_start = c->position;
    while (!plan_done && !sig_stop_requested()) {
        if (o->max_tokens > 0 && captured >= (uint64_t)o->max_tokens) break;
        size_t nw = 0;
        if (pack_windows(c, &nw) < 0) {
            ret = 1;
            break;
        }
        if (nw == 0) break;
        uint64_t pass_from = pass_start;
        pass_start = c->position;
        struct model_seq seqs[4096];
        size_t total = 0;
        model_backend_reset_all(c->eng);
        for (size_t w = 0; w < nw; w++) {
            seqs[w] = (struct model_seq){
                .slot = w, .tokens = c->win_tok + w * c->ctx_len, .n = c->win_len[w]};
            total += c->win_len[w];
        }
        for (size_t i = 0; i < c->n_hooks; i++) c->hooks[i].n = 0;
        if (model_backend_forward(c->eng, seqs, nw, MODEL_LOGITS_NONE, NULL) < 0) {
            ret = 1;
            break;
        }
        c->fwd_tokens += total;
        metrics_counter_to(c->m_fwd_tokens, (double)c->fwd_tokens);
        bool stop = false;
        for (size_t i = 0; i < c->n_hooks && !stop; i++) {
            struct hook_state *h = &c->hooks[i];
            if (h->n == 0) continue;
            if (o->max_tokens > 0 && h->tokens + h->n > (uint64_t)o->max_tokens)
                h->n = (size_t)((uint64_t)o->max_tokens - h->tokens);
            if (h->n == 0) continue;
            if (c->prod) {
                struct stream_cursor end;
                cursor_now(c, h->tokens + h->n, &end);
                rc = publish(c, h, pass_from, c->resumable ? &end : NULL);
                if (rc == SF_EXIT) {
                    stop = true;
                    break;
                }
                if (rc < 0) {
                    ret = 1;
                    stop = true;
                    break;
                }
            }
            if (h->sx && add_to_shard(c, h) < 0) {
                ret = 1;
                stop = true;
                break;
            }
            h->tokens += h->n;
        }
        captured = c->hooks[0].tokens;
        metrics_counter_to(c->m_tokens, (double)captured);
        if (stop) break;
        if (c->prod) stream_producer_poll(c->prod, 0);
        update_metrics(c);
        double now = time_now_s();
        metrics_set(c->m_tps, (double)c->fwd_tokens / (now - t0 + 1e-9));
        metrics_counter_to(c->m_skip[0], (double)source_bad_json(c->src));
        metrics_counter_to(c->m_skip[1], (double)source_no_field(c->src));
        if (now - last_log > 5) {
            last_log = now;
            log_info("capture_progress", "tokens=%llu docs=%llu epoch=%lld tok_per_s=%.0f",
                     (unsigned long long)captured, (unsigned long long)source_docs(c->src),
                     (long long)source_epoch(c->src), (double)c->fwd_tokens / (now - t0));
        }
    }
    for (size_t i = 0; i < c->n_hooks; i++)
        if (c->hooks[i].sx && write_shard(c, &c->hooks[i]) < 0) ret = 1;
    uint64_t this_run = captured - start_captured;
    metrics_counter_to(c->m_skip[0], (double)source_bad_json(c->src));
    metrics_counter_to(c->m_skip[1], (double)source_no_field(c->src));
    log_info("capture_done",
             "tokens=%llu forward_tokens=%llu docs=%llu s=%.2f waited_s=%.2f stopped=%d "
             "skipped_lines=%llu not_json=%llu no_field=%llu plan_tokens=%llu resumed_at=%llu",
             (unsigned long long)this_run, (unsigned long long)c->fwd_tokens,
             (unsigned long long)source_docs(c->src), time_now_s() - t0, c->wait_s,
             sig_stop_requested(), (unsigned long long)source_skipped(c->src),
             (unsigned long long)source_bad_json(c->src),
             (unsigned long long)source_no_field(c->src), (unsigned long long)captured,
             (unsigned long long)start_position);
    if (source_skipped(c->src))
        fprintf(stderr,
                "saeflow-capture: skipped %llu JSONL lines (%llu not JSON, %llu without "
                "a string \"%s\")\n",
                (unsigned long long)source_skipped(c->src),
                (unsigned long long)source_bad_json(c->src),
                (unsigned long long)source_no_field(c->src), o->jsonl_field);
    if (ret == 0 && !plan_done && !sig_stop_requested() && this_run == 0) {
        if (resumed) {
            log_info("capture_source_exhausted", "position=%llu captured=%llu",
                     (unsigned long long)start_position, (unsigned long long)captured);
            printf("capture: this run is already finished: the source was fully captured and "
                   "committed before (%llu tokens); nothing more to capture\n",
                   (unsigned long long)captured);
            fflush(stdout);
        } else if (!o->allow_empty) {
            log_error("capture_nothing", "docs=%llu skipped_lines=%llu input=%s",
                      (unsigned long long)source_docs(c->src),
                      (unsigned long long)source_skipped(c->src), o->input);
            fprintf(stderr,
                    "saeflow-capture: nothing captured from %s: %llu documents, %llu JSONL "
                    "lines skipped (--allow_empty true accepts this)\n",
                    o->input, (unsigned long long)source_docs(c->src),
                    (unsigned long long)source_skipped(c->src));
            ret = 1;
        }
    }

    /* ---- drain: wait for every batch to be committed (bounded) ---- */
    if (c->prod) {
        stream_producer_finish(c->prod);
        /* at least one poll: the "done" heartbeat goes out even when nothing was published
         * (a finished run started again), so a trainer waiting for its producers exits */
        (void)stream_producer_poll(c->prod, 0);
        double deadline = time_now_s() + o->drain_s;
        while (!stream_producer_drained(c->prod) && time_now_s() < deadline) {
            if (stream_producer_poll(c->prod, 50) < 0) break;
            update_metrics(c);
        }
        struct stream_producer_stats ps;
        stream_producer_stats(c->prod, &ps);
        log_info("capture_stream",
                 "published=%llu sent=%llu resent=%llu committed=%llu "
                 "rejected=%llu unrouted=%llu unacked=%llu",
                 (unsigned long long)ps.published, (unsigned long long)ps.sent,
                 (unsigned long long)ps.resent, (unsigned long long)ps.committed,
                 (unsigned long long)ps.rejected, (unsigned long long)ps.unrouted,
                 (unsigned long long)ps.in_ring);
        if (ps.in_ring) {
            /* counted in the ledger as "unacked"; a failure unless we were told to stop */
            log_warn("capture_unacked", "batches=%llu", (unsigned long long)ps.in_ring);
            if (!sig_stop_requested()) ret = 1;
        }
    }

out:
    /* ---- release, in reverse ---- */
    stream_producer_destroy(&c->prod);
    http_server_destroy(&http);
    metrics_destroy(&c->reg);
    buf_fini(&c->scratch);
    source_destroy(&c->src);
    free(c->win_tok);
    free(c->win_doc);
    free(c->win_len);
    free(c->carry);
    free(c->carry_doc);
    for (size_t i = 0; i < MAX_HOOKS; i++) {
        free(c->hooks[i].x);
        free(c->hooks[i].tok);
        free(c->hooks[i].doc);
        free(c->hooks[i].pos);
        free(c->hooks[i].sx);
    }
    model_backend_destroy(&c->eng);
    free(c->special);
    model_destroy(&c->model);
    free(hooks_copy);
    free(inputs_copy);
    free(conn_copy);
    config_free(&cfg);
    return ret;
}

/* bench_pipeline: end-to-end tokens/s of the pipeline (text -> saeflow-capture ->
 * stream -> saeflow-train steps, the real binaries as processes) next to its two
 * stages alone, measured in the same run on the same text:
 *   engine alone:  stories260K forward over packed TinyStories windows (context 128,
 *                  32 windows per pass), activations of blocks.2.hook_resid_post kept;
 *   trainer alone: Top-K SAE steps (n 1024, k 16, 4096 tokens per step) on those
 *                  pre-captured activations;
 *   pipeline:      both services over ipc:// with credit, acks and checkpoints.
 * Each number is a median of repeats. Goal: pipeline >= 90% of the slowest stage. On
 * a machine where both stages share the same cores the ceiling is lower: both
 * processes run at once, so the table also shows the shared-core bound
 * 1 / (1/engine + 1/trainer). The capture's own "waited_s" (time its publish() was held
 * back by credit or a full ring) is printed too: 0 means the stream never limited it.
 * On a shared machine with scheduler autogroups (/proc/sys/kernel/sched_autogroup_enabled)
 * the two pipeline processes split one session's CPU share that a stage alone has to
 * itself, so run this on an idle machine for the goal comparison.
 *
 * Environment: SAEFLOW_MODELS, SAEFLOW_CORPUS, SAEFLOW_BIN (default build/bin),
 * BENCH_TOKENS (tokens per run, default 200000), BENCH_REPS (default 3). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/core.h"
#include "http/http.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "sae/sae_train.h"

#define CTX  128
#define SEQS 32
#define HOOK "blocks.2.hook_resid_post"

static double median(double *v, size_t n)
{
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* All corpus text as token ids with BOS before each story. */
static int load_tokens(const char *corpus, const struct tokenizer *tok, size_t want, int32_t **out,
                       size_t *n_out)
{
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(corpus, (size_t)1 << 30, &text, &len) < 0) return SF_EIO;
    size_t cap = want + 4096, n = 0;
    int32_t *ids = malloc(cap * sizeof *ids);
    const char *p = text, *end = text + len;
    while (ids && n < want) {
        if (p >= end) p = text; /* loop over the corpus */
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        size_t ll = eol ? (size_t)(eol - p) : (size_t)(end - p);
        cJSON *j = NULL;
        if (ll && http_json_parse(p, ll, (size_t)1 << 30, &j, NULL, 0) == 0) {
            const cJSON *f = cJSON_GetObjectItemCaseSensitive(j, "text");
            int32_t *t = NULL;
            size_t tn = 0;
            if (cJSON_IsString(f) &&
                tokenizer_encode_alloc(tok, f->valuestring, strlen(f->valuestring), true, &t,
                                       &tn) == 0) {
                size_t take = SF_MIN(tn, cap - n);
                memcpy(ids + n, t, take * sizeof *t);
                n += take;
            }
            free(t);
            cJSON_Delete(j);
        }
        p += ll + (eol ? 1 : 0);
    }
    free(text);
    *out = ids;
    *n_out = n;
    return ids ? 0 : SF_ENOMEM;
}

struct cap {
    float *x;
    size_t n, cap, d;
    int32_t bos;
};

static int on_hook(void *user, const struct model_act *a)
{
    struct cap *c = user;
    for (size_t i = 0; i < a->n_tokens; i++) {
        if (a->tokens[i] == c->bos) continue;
        if (c->n < c->cap) memcpy(c->x + c->n * a->d, a->x + i * a->d, a->d * sizeof(float));
        c->n++;
    }
    return 0;
}

/* One pass of the engine over `ids`; returns tokens/s (forward tokens). */
static double run_engine(struct model_ctx *ctx, const int32_t *ids, size_t n, struct cap *c)
{
    struct model_seq seqs[SEQS];
    double t0 = time_now_s();
    size_t off = 0;
    while (off + CTX <= n) {
        size_t k = 0;
        model_ctx_reset_all(ctx);
        for (; k < SEQS && off + CTX <= n; k++, off += CTX)
            seqs[k] = (struct model_seq){.slot = k, .tokens = ids + off, .n = CTX};
        if (model_forward(ctx, seqs, k, MODEL_LOGITS_NONE, NULL) < 0) return -1;
    }
    (void)c;
    return (double)off / (time_now_s() - t0);
}

static double run_trainer(const float *x, size_t n, size_t d)
{
    struct sae_train_config cfg;
    sae_train_config_default(&cfg, SAE_TOPK, d, 1024, 16);
    struct sae_trainer *t = sae_trainer_new(&cfg);
    if (!t) return -1;
    const size_t B = 4096;
    double t0 = time_now_s();
    size_t done = 0;
    for (size_t off = 0; off + B <= n; off += B, done += B)
        if (sae_trainer_step(t, x + off * d, B, NULL) < 0) break;
    double tps = (double)done / (time_now_s() - t0);
    sae_trainer_destroy(&t);
    return tps;
}

static pid_t spawn(char *const argv[], const char *log)
{
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        if (!freopen("/dev/null", "w", stdout)) _exit(127);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static double last_wait_s, last_run_s;

/* Runs capture + train over ipc with `tokens` tokens; tokens/s from start to the
 * trainer's exit (every batch trained and committed). */
static double run_pipeline(const char *bin, const char *model, const char *corpus, size_t tokens,
                           const char *dir)
{
    char train[4200], capture[4200], ep[4200], ck[4200], tok[32], log[4200];
    snprintf(train, sizeof train, "%s/saeflow-train", bin);
    snprintf(capture, sizeof capture, "%s/saeflow-capture", bin);
    snprintf(ep, sizeof ep, "ipc://%s/train.sock", dir);
    snprintf(ck, sizeof ck, "%s/ckpt", dir);
    snprintf(tok, sizeof tok, "%zu", tokens);
    snprintf(log, sizeof log, "%s/pipeline.log", dir);
    char *targv[] = {train,  "--bind",
                     ep,     "--hook",
                     HOOK,   "--n",
                     "1024", "--k",
                     "16",   "--batch_tokens",
                     "4096", "--ckpt_dir",
                     ck,     "--exit_when_done",
                     "true", "--log-level",
                     "warn", NULL};
    char *cargv[] = {capture,     "--model",   (char *)model, "--input",      (char *)corpus,
                     "--hook",    HOOK,        "--epochs",    "100",          "--max_tokens",
                     tok,         "--context", "128",         "--batch_seqs", "32",
                     "--connect", ep,          NULL};
    double t0 = time_now_s();
    pid_t pt = spawn(targv, log), pc = spawn(cargv, log);
    if (pt < 0 || pc < 0) return -1;
    int st_c = 0, st_t = 0;
    waitpid(pc, &st_c, 0);
    waitpid(pt, &st_t, 0);
    double dt = time_now_s() - t0;
    /* how long capture waited on the stream (credit / ring room): 0 = never held back */
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(log, 1 << 26, &text, &len) == 0) {
        const char *w = NULL, *p = text;
        while ((p = strstr(p, "waited_s=")) != NULL) w = p++;
        double v = 0;
        if (w && sscanf(w, "waited_s=%lf", &v) == 1) last_wait_s = v;
        free(text);
    }
    last_run_s = dt;
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", ck);
    if (system(cmd) != 0) return -1;
    if (!WIFEXITED(st_c) || WEXITSTATUS(st_c) || !WIFEXITED(st_t) || WEXITSTATUS(st_t)) {
        fprintf(stderr, "bench_pipeline: a service failed (see %s)\n", log);
        return -1;
    }
    return (double)tokens / dt;
}

int main(void)
{
    log_init("bench_pipeline", LOG_LOGFMT, LOG_WARN);
    const char *models = env_or("SAEFLOW_MODELS", "../shared/models");
    const char *corpus_dir = env_or("SAEFLOW_CORPUS", "../shared/corpus");
    const char *bin = env_or("SAEFLOW_BIN", "build/bin");
    int64_t want = 200000, reps = 3;
    (void)parse_i64(env_or("BENCH_TOKENS", "200000"), &want);
    (void)parse_i64(env_or("BENCH_REPS", "3"), &reps);
    if (reps < 1 || reps > 15) reps = 3;
    char model_path[4096], corpus[4096], dir[] = "/tmp/bench_pipeline.XXXXXX";
    snprintf(model_path, sizeof model_path, "%s/stories260K/stories260K.bin", models);
    snprintf(corpus, sizeof corpus, "%s/tinystories-sample.jsonl", corpus_dir);
    if (access(model_path, R_OK) || access(corpus, R_OK)) {
        printf("bench_pipeline: skipped (stories260K or the TinyStories sample not found)\n");
        return 0;
    }
    if (!mkdtemp(dir)) return 1;
    struct model *m = NULL;
    if (model_load(model_path, NULL, &m) < 0) return 1;
    const struct tokenizer *tok = model_tokenizer(m);
    int32_t *ids = NULL;
    size_t n_ids = 0;
    if (!tok || load_tokens(corpus, tok, (size_t)want, &ids, &n_ids) < 0) return 1;
    struct model_ctx *ctx = model_ctx_new(m, SEQS, CTX);
    size_t d = model_config(m)->dim;
    struct cap c = {.cap = n_ids, .d = d, .bos = tokenizer_bos(tok)};
    c.x = malloc(n_ids * d * sizeof(float));
    if (!ctx || !c.x || model_ctx_add_hook(ctx, HOOK, on_hook, &c) < 0) return 1;

    double e[15], t[15], p[15];
    for (int64_t r = 0; r < reps; r++) {
        c.n = 0;
        e[r] = run_engine(ctx, ids, n_ids, &c);
    }
    size_t captured = SF_MIN(c.n, c.cap);
    for (int64_t r = 0; r < reps; r++) t[r] = run_trainer(c.x, captured, d);
    int64_t ok = 0;
    for (int64_t r = 0; r < reps; r++) {
        p[ok] = run_pipeline(bin, model_path, corpus, (size_t)want, dir);
        if (p[ok] > 0) ok++;
    }
    double me = median(e, (size_t)reps), mt = median(t, (size_t)reps);
    double mp = ok ? median(p, (size_t)ok) : 0;
    double slow = SF_MIN(me, mt), shared = 1.0 / (1.0 / me + 1.0 / mt);
    printf("bench_pipeline: stories260K %s, %lld tokens per run, median of %lld, %ld CPUs\n", HOOK,
           (long long)want, (long long)reps, sysconf(_SC_NPROCESSORS_ONLN));
    printf("%-34s %12s %14s %14s\n", "stage", "tokens/s", "vs slowest", "vs shared-core");
    printf("%-34s %12.0f %13.2fx %13.2fx\n", "engine alone (forward + hook)", me, me / slow,
           me / shared);
    printf("%-34s %12.0f %13.2fx %13.2fx\n", "trainer alone (pre-captured)", mt, mt / slow,
           mt / shared);
    printf("%-34s %12.0f %13.2fx %13.2fx\n", "shared-core bound 1/(1/e+1/t)", shared, shared / slow,
           1.0);
    if (ok)
        printf("%-34s %12.0f %13.2fx %13.2fx\n", "pipeline (capture -> train, ipc)", mp, mp / slow,
               mp / shared);
    else
        printf("pipeline: failed (services not built in %s?)\n", bin);
    if (ok)
        printf("capture waited on the stream (credit, ring) %.2f s of its last %.2f s run\n",
               last_wait_s, last_run_s);
    const char *omp = getenv("OMP_NUM_THREADS");
    printf("OMP_NUM_THREADS=%s (each stage alone gets that many threads; in the pipeline "
           "both processes run at once)\n",
           omp ? omp : "unset");
    printf("goal: pipeline >= 0.90x of the slowest stage\n");
    model_ctx_destroy(&ctx);
    model_destroy(&m);
    free(c.x);
    free(ids);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) return 1;
    return 0;
}

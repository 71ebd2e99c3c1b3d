/* bench_eval: evaluation and harvesting throughput against a plain forward pass of the
 * same model over the same held-out tokens, measured in the same run and interleaved
 * (each repetition runs every stage once, so all stages see the same machine load):
 *   forward    model_forward with all logits, window batches (the peer: what one clean
 *              pass costs)
 *   capture    model_forward up to the hook only (what harvesting's passes run)
 *   eval       eval_metrics_run: mean pass + clean / SAE / zero / mean passes + CE/KL
 *   harvest    harvest_run: two capture passes with SAE encoding and per-feature
 *              bookkeeping (heaps, histograms, reservoirs, example windows)
 *   build      harvest_build for every feature (examples with text, logit effects,
 *              neighbours)
 *   store      harvest_store into a fresh feature store (synced batches of 64)
 * stories260K + a random Top-K SAE (n = 1024, k = 16) on blocks.2.hook_resid_post,
 * held-out TinyStories (validation lines). Medians over REPS; ratios are stage time /
 * forward time (x forward passes).
 *
 * usage: bench_eval [tokens] [reps]   (defaults 16384, 3) */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "eval/eval.h"
#include "eval/feature_store.h"
#include "eval/harvest.h"
#include "model/model.h"
#include "model/tokenizer.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

static int noop_hook(void *u, const struct model_act *a)
{
    (void)u, (void)a;
    return 0;
}

/* One pass over the data: all logits, or (MODEL_LOGITS_NONE) up to the hook only. */
static double plain_pass(struct model *m, const struct eval_data *d, enum model_logits want,
                         float *logits)
{
    size_t bs = 8;
    struct model_ctx *ctx = model_ctx_new(m, bs, d->context);
    if (want == MODEL_LOGITS_NONE)
        model_ctx_add_hook(ctx, "blocks.2.hook_resid_post", noop_hook, NULL);
    double t0 = time_now_s();
    for (size_t w0 = 0; w0 < d->n_windows; w0 += bs) {
        size_t nb = SF_MIN(bs, d->n_windows - w0);
        struct model_seq seqs[8];
        for (size_t i = 0; i < nb; i++)
            seqs[i] = (struct model_seq){i, d->tokens + (w0 + i) * d->context, d->len[w0 + i]};
        model_ctx_reset_all(ctx);
        model_forward(ctx, seqs, nb, want, logits);
    }
    double t = time_now_s() - t0;
    model_ctx_destroy(&ctx);
    return t;
}

int main(int argc, char **argv)
{
    log_init("bench_eval", LOG_LOGFMT, LOG_WARN);
    int64_t tokens = 16384, reps = 3;
    if (argc > 1 && (parse_i64(argv[1], &tokens) < 0 || tokens < 256)) return 2;
    if (argc > 2 && (parse_i64(argv[2], &reps) < 0 || reps < 1 || reps > 99)) return 2;
    const char *md = env_or("SAEFLOW_MODELS", "../shared/models");
    const char *cd = env_or("SAEFLOW_CORPUS", "../shared/corpus");
    char path[4096], corpus[4096];
    snprintf(path, sizeof path, "%s/stories260K/stories260K.bin", md);
    snprintf(corpus, sizeof corpus, "%s/tinystories-sample.jsonl", cd);
    struct model *m;
    if (access(path, R_OK) != 0 || access(corpus, R_OK) != 0 || model_load(path, NULL, &m) != 0) {
        printf("bench_eval: stories260K or the TinyStories sample not found (SAEFLOW_MODELS / "
               "SAEFLOW_CORPUS): skipped\n");
        return 0;
    }
    struct eval_data_opts dopts;
    eval_data_opts_default(&dopts);
    dopts.first_line = 2317;
    dopts.max_tokens = (size_t)tokens;
    struct eval_data *d;
    if (eval_data_from_jsonl(model_tokenizer(m), corpus, &dopts, &d) != 0) return 1;
    struct sae *sae = sae_new(SAE_TOPK, 64, 1024, 16);
    struct rng g;
    rng_seed(&g, 1);
    for (size_t i = 0; i < 1024 * 64; i++) sae->W_dec[i] = rng_normal(&g);
    sae_normalize_decoder(sae);
    memcpy(sae->W_enc, sae->W_dec, 1024 * 64 * sizeof(float)); /* tied init */
    snprintf(sae->meta.hook_name, sizeof sae->meta.hook_name, "blocks.2.hook_resid_post");
    float *logits = malloc(8 * d->context * 512 * sizeof *logits);
    char root[256];
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/sf_bench_eval_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) return 1;

    enum { FWD, CAP, EVAL, HARV, BUILD, STORE, N_STAGES };
    const char *names[N_STAGES] = {"forward (all logits)", "capture to hook", "eval metrics",
                                   "harvest (2 passes)",   "build records",   "store (synced)"};
    double *t[N_STAGES];
    for (int s = 0; s < N_STAGES; s++) t[s] = calloc((size_t)reps, sizeof(double));
    struct eval_metrics em;
    for (int64_t r = 0; r < reps; r++) {
        t[FWD][r] = plain_pass(m, d, MODEL_LOGITS_ALL, logits);
        t[CAP][r] = plain_pass(m, d, MODEL_LOGITS_NONE, NULL);
        double t0 = time_now_s();
        if (eval_metrics_run(m, sae, d, NULL, &em, NULL) != 0) return 1;
        t[EVAL][r] = time_now_s() - t0;
        struct harvest *hv;
        t0 = time_now_s();
        if (harvest_run(m, sae, d, NULL, &hv) != 0) return 1;
        t[HARV][r] = time_now_s() - t0;
        struct feature_record *recs = calloc(1024, sizeof *recs);
        t0 = time_now_s();
        if (harvest_build(hv, 1, 0, 1024, recs) != 0) return 1;
        t[BUILD][r] = time_now_s() - t0;
        for (size_t i = 0; i < 1024; i++) feature_record_fini(&recs[i]);
        free(recs);
        char dbp[300];
        snprintf(dbp, sizeof dbp, "%s/db%lld", root, (long long)r);
        struct feature_store *fs;
        if (feature_store_open(&fs, dbp) != 0) return 1;
        struct harvest_store_info si = {.sae_id = "bench"};
        t0 = time_now_s();
        if (harvest_store(hv, fs, &si, NULL, NULL, NULL) != 0) return 1;
        t[STORE][r] = time_now_s() - t0;
        feature_store_close(&fs);
        harvest_destroy(&hv);
    }
    const double n_tok = (double)d->n_tokens;
    double fwd = median(t[FWD], (size_t)reps);
    printf("bench_eval: stories260K, random Top-K SAE n=1024 k=16 at blocks.2.hook_resid_post, "
           "%zu held-out tokens (%zu windows of <= %zu), %lld reps, OMP threads %s\n",
           d->n_tokens, d->n_windows, d->context, (long long)reps,
           getenv("OMP_NUM_THREADS") ? getenv("OMP_NUM_THREADS") : "default");
    printf("%-22s %12s %14s %14s\n", "stage", "median s", "tokens/s", "x forward");
    for (int s = 0; s < N_STAGES; s++) {
        double med = median(t[s], (size_t)reps);
        if (s == BUILD || s == STORE)
            printf("%-22s %12.4f %14s %14.2f   (%.0f features/s)\n", names[s], med, "-", med / fwd,
                   1024.0 / med);
        else
            printf("%-22s %12.4f %14.0f %14.2f\n", names[s], med, n_tok / med, med / fwd);
    }
    printf("(eval = 1 capture pass + 4 full passes + SAE + CE/KL over the vocabulary; harvest "
           "= 2 capture passes + SAE + bookkeeping)\n");
    for (int s = 0; s < N_STAGES; s++) free(t[s]);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(logits);
    sae_destroy(&sae);
    eval_data_destroy(&d);
    model_destroy(&m);
    return 0;
}

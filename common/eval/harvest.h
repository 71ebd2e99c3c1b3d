/* harvest: per-feature statistics and examples of an SAE over held-out text, and
 * their write into the feature store (feature_store.h).
 *
 *   struct harvest *h;
 *   harvest_run(model, sae, data, NULL, &h);                 // two streaming passes
 *   struct harvest_store_info si = {.sae_id = "stories-l2", .metrics_json = json};
 *   harvest_store(h, fs, &si, &run, NULL, NULL);             // atomic batches of features
 *   harvest_destroy(&h);
 *
 * Pass 1 (capture-only forward passes with the SAE encoding the hook's activation):
 * per feature the firing count, sum and max of its activation, a fixed log-scale
 * histogram (8 bins per octave, 2^-24..2^16) from which the quantile boundaries are
 * read, and the top `n_top` activating examples (a min-heap per feature).
 * Pass 2 (the same forward passes again): the equal-width activation histogram over
 * [0, max], interval groups (n_intervals equal-width bins over [0, max]: counts and
 * per_interval examples each by reservoir sampling) and quantile groups (n_quantiles
 * slices of equal count: counts and per_quantile examples each by reservoir sampling).
 * Every example keeps a window of `window` tokens (window_before of them before the
 * activating token, fewer at a window's start) with the feature's activation on each.
 * "Fires" means activation > 0; special tokens (BOS/EOS/control) are skipped.
 *
 * At write time, per chunk of features: logit effects = the top / bottom n_logits
 * tokens of W_U (w_norm * W_dec[i]) / norm_scale (one GEMM per chunk against the
 * unembedding), and the n_neighbours nearest features by decoder cosine (one GEMM per
 * chunk against all normalised decoder rows, top-k per row, self excluded).
 *
 * Memory: bounded by the SAE size, not the data: about
 * n * (1.4 KB + (n_top + n_intervals*per_interval + n_quantiles*per_quantile) *
 * (4 * window + 24) bytes), ~14 KB per feature with the defaults. Non-TopK SAEs count
 * at most HARVEST_MAX_ACTIVE latents per token (the largest).
 * Results are deterministic for a given seed. The harvest borrows model, SAE and data:
 * they must outlive it. */
#ifndef SAEFLOW_EVAL_HARVEST_H
#define SAEFLOW_EVAL_HARVEST_H

#include <stddef.h>
#include <stdint.h>

#include "eval/eval.h"
#include "eval/feature_store.h"

#define HARVEST_MAX_ACTIVE 256

struct harvest_opts {
    const char *hook;      /* NULL: sae->meta.hook_name */
    size_t batch_seqs;     /* windows per forward pass (8) */
    size_t max_tokens;     /* first windows up to this many tokens (0 = all) */
    size_t n_top;          /* 20 */
    size_t n_intervals;    /* 10 */
    size_t per_interval;   /* 3 */
    size_t n_quantiles;    /* 10 */
    size_t per_quantile;   /* 3 */
    size_t n_hist;         /* 32 */
    size_t window;         /* 32 tokens per example */
    size_t window_before;  /* 24 */
    size_t n_logits;       /* 10 top and 10 bottom */
    size_t n_neighbours;   /* 5 */
    size_t chunk_features; /* features per atomic write batch (64) */
    uint64_t seed;         /* reservoir sampling (1) */

    /* after each batch of each pass (NULL: none) */
    eval_progress_fn progress;
    void *progress_ud;
};
void harvest_opts_default(struct harvest_opts *o);

struct harvest;

/* Runs both passes. 0, SF_EINVAL (hook / sizes / options), SF_ENOMEM, or a forward
 * error. *out is freed with harvest_destroy. */
int harvest_run(struct model *m, const struct sae *sae, const struct eval_data *data,
                const struct harvest_opts *o, struct harvest **out);
void harvest_destroy(struct harvest **h);
size_t harvest_n_features(const struct harvest *h);
uint64_t harvest_tokens(const struct harvest *h); /* tokens measured (non-special) */
double harvest_seconds(const struct harvest *h);  /* wall time of both passes */

/* Fills recs[0 .. f1-f0) with the complete records of features [f0, f1): stats,
 * examples (tokens, activations, decoded text when the model has a tokenizer), logit
 * effects and neighbours. Free each with feature_record_fini. */
int harvest_build(const struct harvest *h, uint64_t run_id, uint32_t f0, uint32_t f1,
                  struct feature_record *recs);

struct harvest_store_info {
    const char *sae_id;       /* required (feature_store_check_id) */
    const char *model;        /* model name or path ("" if NULL) */
    const char *source;       /* the SAE directory */
    const char *dataset;      /* the held-out text */
    const char *metrics_json; /* eval_metrics_json output, or NULL */
    uint64_t step;            /* trainer step of the checkpoint (0 = unknown) */
    uint64_t fingerprint;     /* sae_fingerprint of the SAE (0: computed here) */
};
/* Called after each committed (synced) batch: features [0, done) are stored. A
 * non-zero return stops the write (returned). */
typedef int (*harvest_progress_fn)(void *ud, uint32_t done, uint32_t n_features);

/* Writes a run: the SAE record and a new run record (evaluating), then the features
 * in atomic synced batches of chunk_features, then SAE + run (done, metrics) in one
 * batch. run_out (may be NULL) receives the final run record (metrics_json NULL). On
 * failure the run is marked failed when the store still accepts writes. */
int harvest_store(const struct harvest *h, struct feature_store *fs,
                  const struct harvest_store_info *info, struct feature_run_info *run_out,
                  harvest_progress_fn progress, void *ud);

#endif

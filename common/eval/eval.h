/* eval: how good an SAE is when spliced into the model (REFERENCES.md §3).
 *
 *   struct eval_data *d;
 *   eval_data_from_jsonl(tok, "tinystories.jsonl", &dopts, &d);   // held-out windows
 *   struct eval_metrics m;
 *   eval_metrics_run(model, sae, d, NULL, &m, NULL);
 *   eval_metrics_table(&m, &out); eval_metrics_json(&m, &out);
 *   eval_data_destroy(&d);
 *
 * Held-out text is tokenized, BOS-prefixed per document (as capture does), packed
 * and cut into windows of `context` tokens; a window that starts mid-document gets
 * a BOS of its own. Every window is one sequence of a batched forward pass.
 *
 * Splicing: the SAE's hook (sae->meta.hook_name unless overridden) is replaced by
 * x_hat = sae(x) at every non-special token; BOS, EOS and control tokens keep their
 * activation in every patched pass (SAELens's exclude_special_tokens) and are left
 * out of every metric. A next-token prediction at position i counts in CE and KL when
 * token i and token i+1 are both non-special.
 *
 * Passes: (1) a capture-only pass for the per-dimension mean of x over the eval set
 * (for FVU's denominator and mean ablation); (2) per batch of windows, four forward
 * passes: clean, SAE spliced, zero-ablated (x = 0), mean-ablated (x = mean).
 *   FVU  = sum ||x - x_hat||^2 / sum ||x - mean||^2, explained variance = 1 - FVU
 *   L0   = mean number of non-zero latents per token
 *   density_i = fraction of tokens where latent i is non-zero; dead: never non-zero;
 *   dense: density > 1% / > 10%
 *   CE_*  = mean -log p(next token) (clean, sae, zero, mean)
 *   loss recovered (abl = zero or mean) = (CE_abl - CE_sae) / (CE_abl - CE_clean)
 *   KL_*  = mean over tokens of KL(p_clean || p_patched) over the next-token distribution
 *   KL score (abl) = (KL_abl - KL_sae) / KL_abl
 * Sums are accumulated in double.
 *
 * Ownership: eval_data_* return objects freed with eval_data_destroy; the model and
 * SAE are borrowed. */
#ifndef SAEFLOW_EVAL_H
#define SAEFLOW_EVAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "model/model.h"
#include "sae/sae.h"

struct tokenizer;

/* ---- held-out data: packed windows of token ids ---- */
struct eval_data {
    size_t context; /* window length cap */
    size_t n_windows;
    int32_t *tokens; /* (n_windows, context), window w at tokens + w * context */
    size_t *len;     /* (n_windows) tokens in each window (2..context) */
    size_t n_tokens; /* sum of len */
    bool *special;   /* (vocab) token ids excluded from metrics; owned */
    size_t vocab;
};

struct eval_data_opts {
    size_t context;    /* tokens per window (default 128; capped by the model's) */
    size_t max_tokens; /* stop once this many tokens are packed (0 = all) */
    size_t first_line; /* JSONL: skip lines before this 1-based line (0/1 = all) */
    size_t last_line;  /* JSONL: stop after this 1-based line (0 = to the end) */
    const char *field; /* JSONL string field (default "text") */
    int prepend_bos;   /* -1 = the tokenizer's default, 0 = no, 1 = yes */
};
void eval_data_opts_default(struct eval_data_opts *o);

/* Reads a JSONL file (one document per line, string field o->field; lines without
 * it are skipped), tokenizes and packs it. 0, SF_EIO, SF_EFORMAT (no usable text),
 * SF_ENOMEM. The tokenizer's BOS/EOS/control tokens become the special set. */
int eval_data_from_jsonl(const struct tokenizer *tok, const char *path,
                         const struct eval_data_opts *o, struct eval_data **out);
/* Packs documents given as token ids (each already BOS-prefixed as wanted); `bos` is
 * inserted at the start of windows that begin mid-document (-1: none). `special`
 * (vocab entries) may be NULL (then only bos is special). */
int eval_data_from_docs(const int32_t *const *docs, const size_t *doc_lens, size_t n_docs,
                        size_t context, size_t max_tokens, int32_t bos, const bool *special,
                        size_t vocab, struct eval_data **out);
void eval_data_destroy(struct eval_data **d);

/* ---- metrics ---- */
#define EVAL_DENSITY_BINS  20 /* log10 density histogram over [-10, 0), 0.5 wide */
#define EVAL_DENSITY_LO    -10.0
#define EVAL_DENSITY_WIDTH 0.5

/* Progress of a long pass: `stage` names it ("eval 1/2 (mean)", "harvest 2/2
 * (examples)", ...), `done` of `total` windows are through. Called after each batch. */
typedef void (*eval_progress_fn)(void *ud, const char *stage, size_t done, size_t total);

struct eval_opts {
    const char *hook;  /* NULL: sae->meta.hook_name */
    size_t batch_seqs; /* windows per forward pass (default 8) */
    size_t max_tokens; /* use only the first windows up to this many tokens (0 = all) */

    eval_progress_fn progress; /* NULL: none */
    void *progress_ud;
};
void eval_opts_default(struct eval_opts *o);

struct eval_metrics {
    char hook[128];
    size_t d_in, n_latents, k;
    uint64_t n_windows;
    uint64_t n_tokens;                   /* tokens counted in the reconstruction metrics */
    uint64_t n_pred;                     /* next-token predictions counted in CE / KL */
    double fvu, explained_variance, mse; /* mse: mean ||x - x_hat||^2 / d_in per token */
    double l0;
    uint64_t n_dead, n_dense1, n_dense10;
    double dead_frac, dense1_frac, dense10_frac;
    uint64_t density_hist[EVAL_DENSITY_BINS]; /* live latents by log10 density */
    double ce_clean, ce_sae, ce_zero, ce_mean;
    double loss_recovered_zero, loss_recovered_mean;
    double kl_sae, kl_zero, kl_mean;
    double kl_score_zero, kl_score_mean;
    double seconds;      /* wall time of eval_metrics_run */
    double tokens_per_s; /* eval-set tokens (all four passes) per second */
};

/* Evaluates `sae` on `data`. `density` (sae->n floats, may be NULL) receives each
 * latent's firing density. Returns 0; SF_EINVAL (hook unknown, d_in != the model's
 * width, empty data, a ratio's denominator 0 is not an error: the ratio is NAN),
 * SF_ENOMEM, or a forward-pass error. */
int eval_metrics_run(struct model *m, const struct sae *sae, const struct eval_data *data,
                     const struct eval_opts *o, struct eval_metrics *out, float *density);

/* The report as an aligned text table / as one JSON object (appended to out). */
int eval_metrics_table(const struct eval_metrics *m, struct buf *out);
int eval_metrics_json(const struct eval_metrics *m, struct buf *out);

/* ---- shared by eval and harvest ---- */

/* A token's active latents: rows of at most `m` (index, value) pairs, largest first. */
struct eval_codes {
    size_t m; /* max active per token: k for topk, else n (or a cap) */
    size_t cap_rows;
    uint32_t *idx;   /* (cap_rows, m) */
    float *val;      /* (cap_rows, m) */
    uint32_t *count; /* (cap_rows) */
};
/* max_active 0: k for topk SAEs, n otherwise. */
int eval_codes_init(struct eval_codes *c, const struct sae *sae, size_t rows, size_t max_active);
void eval_codes_fini(struct eval_codes *c);
/* Encodes rows [0, rows) of x (rows, d_in); rows with skip[r] set get count 0. */
int eval_codes_encode(struct eval_codes *c, const struct sae *sae, const float *x, size_t rows,
                      const bool *skip);

/* Resolves the hook: name (or sae->meta.hook_name when NULL) must parse for the model
 * and the model width must equal sae->d_in. Logs why not; SF_EINVAL. */
int eval_resolve_hook(const struct model *m, const struct sae *sae, const char *name, size_t *layer,
                      enum model_hook_point *point);

#endif

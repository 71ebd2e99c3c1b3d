/* sae_train: training sparse autoencoders on the CPU (Top-K, BatchTopK, ReLU+L1).
 *
 *   struct sae_train_config cfg;
 *   sae_train_config_default(&cfg, SAE_TOPK, d_in, n, k);   // then adjust fields
 *   struct sae_trainer *t = sae_trainer_new(&cfg);            // NULL: logged why
 *   while (...) sae_trainer_step(t, x, B, &metrics);          // x: (B, d_in) raw
 *   struct sae *out = sae_trainer_export(t);                  // folded copy, yours
 *   sae_trainer_save(t, "ckpt.safetensors"); sae_trainer_load(path, &t);
 *   sae_trainer_destroy(&t);
 *
 * The step (REFERENCES.md §1): xc = s*x - b_dec; a = W_enc xc + b_enc (the only dense
 * GEMM); per-token top-k; x_hat = sum z_i W_dec[i] + b_dec; loss = mse + AuxK /
 * Multi-TopK / L1 / ghost terms; gradients only along the selected latents (sparse,
 * O(B*k*d)); decoder-row gradient projection; optional global grad-norm clip; then
 * the optimiser over every parameter: Adam (exact PyTorch Adam semantics, eps
 * 6.25e-10) or SignSGD with schedule-free averaging (below); decoder rows
 * renormalised. Everything except the GEMM runs on OpenMP threads (small steps,
 * under ~1e8 encoder FMAs, run serially). Results are deterministic on a machine:
 * every reduction has a fixed order that does not depend on the thread count, so a
 * resumed run continues bit-identically.
 *
 * Losses (all in the normalised space s*x):
 *   mse   = sum_b ||x_hat_b - x_b||^2 / (B * d_in)         (Multi-TopK: + mse(4k)/8)
 *   auxk  = sum_b ||e_b - e_hat_b||^2 / sum_b ||e_b - mean(e)||^2, e = x - x_hat
 *           (detached), e_hat = sum over the top k_aux dead latents of relu(a) W_dec[i]
 *   l1    = l1_coeff * sum_b sum_i z_bi ||W_dec[i]|| / B                  (standard)
 *   ghost = mse(ghost, r) * (mse / mse(ghost, r)) detached                (standard)
 *   loss  = mse + auxk_alpha * auxk + l1 + ghost
 *
 * Optimisers (cfg.optimizer):
 *   adam        p -= lr_t * m_hat / (sqrt(v_hat) + eps), PyTorch's Adam.
 *   signsgd_sf  SignSGD inside schedule-free averaging (Defazio et al. 2024,
 *               "The Road Less Scheduled"; sparsify's default, ScheduleFreeWrapper):
 *                 gradient g at y (the weights the step reads),
 *                 z <- z - lr_t * sign(g)       (decoder rows of z renormalised)
 *                 w_t = lr_t^2, c = w_t / sum_{s<=t} w_s
 *                 x <- (1 - c) x + c z           (the running weighted average;
 *                                                 its decoder rows renormalised)
 *                 y <- (1 - beta) z + beta x     (beta = sf_momentum, 0.95)
 *               z and x are the optimiser state (kept where Adam keeps m and v); y
 *               is the trainer's weights. sae_trainer_export() writes x, the averaged
 *               point the method's guarantees are about (see sae_trainer_export).
 *
 * Defaults are chosen for the run length (total_tokens) as well as the size n: the
 * learning rate (sae_train_config_lr), the dead-latent window (dead_tokens = 0: a
 * fraction of the planned tokens, capped at 10M), and the initialisation scales the
 * tied encoder so that the first batch's reconstruction is the least-squares one
 * (at step 0 never worse than b_dec alone, so FVU starts near or below 1).
 *
 * sae_step_ref() is the oracle: the same step in double precision with dense loops.
 * Tests assert the fast step matches it. */
#ifndef SAEFLOW_SAE_TRAIN_H
#define SAEFLOW_SAE_TRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sae/sae.h"

enum sae_k_schedule { SAE_KSCHED_LINEAR = 0, SAE_KSCHED_COSINE = 1, SAE_KSCHED_EXP = 2 };
enum sae_optimizer { SAE_OPT_ADAM = 0, SAE_OPT_SIGNSGD_SF = 1 };
const char *sae_optimizer_name(enum sae_optimizer o);              /* "adam", "signsgd_sf" */
int sae_optimizer_parse(const char *s, enum sae_optimizer *out);   /* 0 or SF_EINVAL */
const char *sae_k_schedule_name(enum sae_k_schedule s);            /* "linear", "cosine", "exp" */
int sae_k_schedule_parse(const char *s, enum sae_k_schedule *out); /* also "exponential" */

struct sae_train_config {
    enum sae_arch arch; /* topk, batchtopk or standard (jumprelu is inference only) */
    size_t d_in, n, k;  /* k: the target (final) k; unused by standard */
    uint64_t seed;      /* weight init */

    /* optimiser */
    double lr;                               /* 0: the rule of sae_train_config_lr */
    double adam_beta1, adam_beta2, adam_eps; /* 0.9, 0.999, 6.25e-10 */
    int64_t lr_warmup_tokens;                /* linear warm-up from 0; 0 = none */
    int64_t total_tokens;                    /* planned length; 0 = no decay */
    double lr_decay_start;                   /* fraction of total_tokens where a linear decay to 0
                                                begins (0.8); >= 1 = no decay */
    double grad_clip;                        /* clip the global grad norm to this; 0 = off */
    bool unit_norm_decoder;                  /* project decoder grads and renormalise rows (true) */

    /* initialisation from the first batch (or sae_trainer_init_data) */
    bool normalize_input;   /* estimate s with E||s x||^2 = d_in (true) */
    bool init_b_dec;        /* b_dec = geometric median (true) */
    size_t init_max_tokens; /* sample size cap for those estimates (8192) */

    /* dead latents */
    int64_t dead_tokens;   /* a latent silent for this many tokens is dead; 0 (default):
                              min(10M, dead_run_fraction * total_tokens), 10M without
                              total_tokens (resolved when the trainer is created) */
    double fire_threshold; /* "fired" means activation > this (1e-3) */
    double auxk_alpha;     /* AuxK weight (1/32); 0 = off. topk / batchtopk */
    size_t k_aux;          /* 0: power of two nearest d_in/2 */

    /* k scheduler (topk / batchtopk): k0 -> k over k_anneal_tokens */
    size_t k0; /* 0 or <= k: no annealing */
    int64_t k_anneal_tokens;
    enum sae_k_schedule k_schedule;

    bool multi_topk;        /* topk only: loss = L(k) + L(4k)/8 */
    double threshold_decay; /* batchtopk: EMA decay of the inference threshold (0.99) */
    double l1_coeff;        /* standard: lambda (5.0) */
    bool ghost_grads;       /* standard: ghost grads on dead latents */

    enum sae_optimizer optimizer; /* adam (default) | signsgd_sf */
    double sf_momentum;           /* signsgd_sf: beta of y = (1-beta) z + beta x (0.95) */
    double dead_run_fraction;     /* dead_tokens = 0: this fraction of the run (0.05) */
    bool init_scale_encoder;      /* scale W_enc = a W_dec^T with the least-squares a on
                                     the first batch (true) */
};

void sae_train_config_default(struct sae_train_config *cfg, enum sae_arch arch, size_t d_in,
                              size_t n, size_t k);
/* 0, or SF_EINVAL with one log line naming the bad field. */
int sae_train_config_validate(const struct sae_train_config *cfg);
/* The effective values of the derived defaults. The learning rate, when cfg->lr is 0:
 *   adam:        2e-4 / sqrt(n / 2^14) * clamp(sqrt(2^30 / total_tokens), 1, 16)
 *   signsgd_sf:  5e-3 / sqrt(n / 2^14)                       (sparsify's rule)
 * Adam's rule (sparsify, dictionary_learning) holds at billions of tokens and
 * underfits short runs: the budget factor raises it for runs under 2^30 tokens (16x,
 * the cap, at 4M tokens and below; no total_tokens: 1x). Schedule-free averaging
 * adapts to the run length by itself. Evidence: tests/bench/quality and README. */
double sae_train_config_lr(const struct sae_train_config *cfg);
/* dead_tokens as the trainer uses it (the rule above when cfg->dead_tokens is 0). */
int64_t sae_train_config_dead_tokens(const struct sae_train_config *cfg);
size_t sae_train_config_k_aux(const struct sae_train_config *cfg);
/* k after `tokens` tokens of training (the scheduler). */
size_t sae_train_k_at(const struct sae_train_config *cfg, int64_t tokens);
/* Learning rate after `tokens` tokens (warm-up, then constant, then linear decay over
 * the tokens after lr_decay_start * total_tokens). */
double sae_train_lr_at(const struct sae_train_config *cfg, int64_t tokens);

/* What one step measured (the trainer service and the CLI print these). */
struct sae_train_metrics {
    int64_t step;        /* steps done, this one included */
    int64_t tokens;      /* tokens seen, this batch included */
    size_t k;            /* k used by this step */
    double lr;           /* learning rate used by this step */
    double loss;         /* total loss */
    double mse;          /* main reconstruction loss (normalised space) */
    double fvu;          /* sum ||x - x_hat||^2 / sum ||x - mean x||^2 over the batch */
    double l0;           /* mean number of non-zero latents per token */
    double dead_frac;    /* latents silent for >= dead_tokens tokens, after this step */
    double auxk_loss;    /* unweighted AuxK loss (0 when no dead latents) */
    double l1_loss;      /* standard: the weighted L1 term */
    double ghost_loss;   /* standard: the ghost-grad term */
    double grad_norm;    /* global norm after projection, before clipping */
    double threshold;    /* batchtopk: current inference threshold */
    double step_s;       /* wall time of the step */
    double tokens_per_s; /* B / step_s */
};

struct sae_trainer;

/* Validates cfg, allocates weights and optimiser state, initialises W_dec with random
 * unit rows (seeded) and W_enc = W_dec (tied; rescaled by the data initialisation when
 * init_scale_encoder). NULL on invalid config or OOM (logged). Free with
 * sae_trainer_destroy(). */
struct sae_trainer *sae_trainer_new(const struct sae_train_config *cfg);
void sae_trainer_destroy(struct sae_trainer **t);

/* Estimates the input scale and b_dec (geometric median, Weiszfeld) from a sample of
 * N raw tokens (N, d_in), then (init_scale_encoder) scales W_enc by the a that
 * minimises the sample's reconstruction error at the current weights. Called
 * automatically on the first step's batch when not called before. SF_ESTATE after
 * training has started. */
int sae_trainer_init_data(struct sae_trainer *t, const float *x, size_t N);

/* One optimisation step on a batch x (B, d_in) of raw activations. m may be NULL.
 * SF_EINVAL on a non-finite input or B == 0; SF_ENOMEM on allocation failure. */
int sae_trainer_step(struct sae_trainer *t, const float *x, size_t B, struct sae_train_metrics *m);
/* The same step computed by the plain double-precision reference (slow; tests). */
int sae_step_ref(struct sae_trainer *t, const float *x, size_t B, struct sae_train_metrics *m);

/* Gradients of the loss at the current point for batch x, without stepping (and
 * without touching any state; the input must already be initialised): fast path
 * (ref = false) or reference (ref = true). Raw gradients, before projection and
 * clipping. Outputs: gW_enc, gW_dec (n, d_in), gb_enc (n), gb_dec (d_in). */
int sae_trainer_grad(struct sae_trainer *t, const float *x, size_t B, bool ref, float *gW_enc,
                     float *gb_enc, float *gW_dec, float *gb_dec, double *loss);

/* Wall seconds of the last fast step's phases (benchmarks): input scaling, the GEMM,
 * the per-token pass (selection, sparse decode, upstream rows, ga), batch reductions,
 * the transpose by latent, the per-latent gradient rows, and the optimiser. */
enum {
    SAE_PROF_INPUT,
    SAE_PROF_GEMM,
    SAE_PROF_TOKENS,
    SAE_PROF_REDUCE,
    SAE_PROF_TRANSPOSE,
    SAE_PROF_LATENTS,
    SAE_PROF_ADAM,
    SAE_PROF_N
};
void sae_trainer_profile(const struct sae_trainer *t, double out[SAE_PROF_N]);

/* Borrowed views (valid until the next call that changes the trainer). The SAE's
 * norm_scale is the training scale s (not folded). */
const struct sae *sae_trainer_sae(const struct sae_trainer *t);
const struct sae_train_config *sae_trainer_config(const struct sae_trainer *t);
int64_t sae_trainer_tokens(const struct sae_trainer *t);
int64_t sae_trainer_steps(const struct sae_trainer *t);
/* (n) tokens since each latent last fired. */
const int64_t *sae_trainer_since_fire(const struct sae_trainer *t);
double sae_trainer_dead_fraction(const struct sae_trainer *t);
/* Sets the provenance written with exports and checkpoints. */
void sae_trainer_set_meta(struct sae_trainer *t, const struct sae_meta *meta);

/* A copy ready to use or export: norm folded into the weights; batchtopk becomes
 * jumprelu with threshold = the EMA threshold for every latent. With signsgd_sf the
 * copy holds the averaged weights x (decoder rows kept at unit norm like z's), not
 * the gradient point y. Caller destroys it. */
struct sae *sae_trainer_export(const struct sae_trainer *t);

/* Checkpoints: one safetensors file holding the weights, Adam moments, dead counters,
 * step, tokens, scheduler and RNG state, and the config (in __metadata__), written
 * atomically (temporary file, fsync, rename). The loader validates every field and
 * returns SF_EFORMAT (logged) on a corrupt or inconsistent file. */
int sae_trainer_save(const struct sae_trainer *t, const char *path);
/* True when every weight, bias, threshold and Adam moment is finite. A trainer that is
 * not has diverged: sae_trainer_save refuses it (SF_ERANGE, logged) so that no
 * checkpoint ever holds non-finite weights. */
bool sae_trainer_finite(const struct sae_trainer *t);
/* Changes the planned length (total_tokens: the lr decay) of a trainer, e.g. one
 * loaded from a checkpoint whose run is extended. SF_EINVAL when total < 0. */
int sae_trainer_set_total_tokens(struct sae_trainer *t, int64_t total);
int sae_trainer_load(const char *path, struct sae_trainer **out);
/* The same on a buffer in memory (the fuzz target's entry point). */
int sae_trainer_load_mem(const void *buf, size_t len, struct sae_trainer **out);

/* ---- batch guard: refuses activation batches that would poison training ----------
 * A batch is refused when a value is not finite, when a value's magnitude exceeds
 * abs_max, or (once a baseline exists) when its mean or max row L2 norm exceeds
 * norm_ratio times the running mean of the accepted batches' mean / max row norms
 * (an EMA with weight 0.05; the first accepted batch sets it). Refused batches do not
 * move the baseline. Norms are computed in double, so huge finite values (3e38) do
 * not overflow into an accepted inf. abs_max or norm_ratio <= 0 turns that test off.
 *
 *   struct sae_batch_guard g;
 *   sae_batch_guard_init(&g, 1e6, 10);
 *   if (sae_batch_guard_check(&g, x, n, d, &stats) != SAE_GUARD_OK) refuse(...); */
enum sae_guard_verdict {
    SAE_GUARD_OK = 0,
    SAE_GUARD_NONFINITE, /* a NaN or infinity */
    SAE_GUARD_MAGNITUDE, /* |value| > abs_max */
    SAE_GUARD_NORM,      /* mean or max row norm > norm_ratio x the running one */
    SAE_GUARD_COUNT
};
/* "ok", "nonfinite", "magnitude", "norm_outlier": stable (Prometheus label values). */
const char *sae_guard_reason(enum sae_guard_verdict v);
struct sae_batch_guard {
    double abs_max, norm_ratio;
    double mean_norm, max_norm; /* running baselines (valid when accepted > 0) */
    int64_t accepted;
};
struct sae_guard_stats {
    double mean_norm, max_norm, max_abs; /* of the batch checked (max_abs: inf if any) */
};
void sae_batch_guard_init(struct sae_batch_guard *g, double abs_max, double norm_ratio);
/* Checks x (n, d); updates the baseline when accepted. st may be NULL. */
enum sae_guard_verdict sae_batch_guard_check(struct sae_batch_guard *g, const float *x, size_t n,
                                             size_t d, struct sae_guard_stats *st);

/* ---- the reference oracle's loss, exposed for tests (finite differences) ----------
 * Loss and gradient of one batch in double precision with a FIXED selection: sel
 * marks each (token, latent) as SAE_REF_MAIN (the k reconstruction), SAE_REF_EXTRA
 * (Multi-TopK's extra 3k) or 0; aux marks the AuxK set (or NULL); dead marks ghost
 * latents (or NULL). Detached quantities (AuxK's residual and denominator, ghost's
 * residual, per-token scale and mse ratio) are computed on the first call
 * (frozen = false) and held afterwards, as autograd's detach() does. */
enum { SAE_REF_MAIN = 1, SAE_REF_EXTRA = 2 };
struct sae_ref_params { /* double copies of the weights (or their gradients) */
    double *W_enc, *b_enc, *W_dec, *b_dec;
};
struct sae_ref_terms {
    double mse, mse4, auxk, l1, ghost, total;
};
struct sae_ref_problem {
    const struct sae_train_config *cfg;
    size_t B;
    const double *xs;    /* (B, d_in) normalised inputs */
    const uint8_t *sel;  /* (B, n) */
    const uint8_t *aux;  /* (B, n) or NULL */
    const uint8_t *dead; /* (n) or NULL: ghost grads over these */
    bool frozen;
    double *e; /* (B, d_in) AuxK residual; caller allocates */
    double aux_den;
    double *r;       /* (B, d_in) ghost residual; caller allocates */
    double *ghost_c; /* (B) */
    double ghost_ratio;
};
/* Returns the total loss; fills terms and (when non-NULL) grad (all arrays zeroed
 * first). */
double sae_ref_loss(struct sae_ref_problem *p, const struct sae_ref_params *w,
                    struct sae_ref_params *grad, struct sae_ref_terms *terms);

#endif

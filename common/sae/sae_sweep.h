/* sae_sweep: the quality of an SAE on held-out activations, and a short learning-rate
 * sweep that picks a rate by it (the CLI's `saeflow train --sweep lr=...`; a service
 * can call the same function on a slice of its stream).
 *
 *   struct sae_quality q;
 *   sae_quality_measure(sae, held, N, &q);                 // FVU, L0, dead, dense
 *
 *   struct sae_sweep_row rows[3]; size_t best;
 *   double lrs[3] = {3e-3, 1e-2, 3e-2};
 *   sae_sweep_lr(&cfg, train, n_train, 4096, held, n_held, lrs, 3, rows, &best);
 *
 * Each rate trains a fresh SAE from cfg (same seed and init) with lr replaced and
 * total_tokens set to the slice, so the schedule and the dead-latent window scale to
 * it; the exported SAE (what a user would get) is measured on the held-out tokens.
 * Nothing here prints; the caller renders the table. */
#ifndef SAEFLOW_SAE_SWEEP_H
#define SAEFLOW_SAE_SWEEP_H

#include <stddef.h>

#include "sae/sae.h"
#include "sae/sae_train.h"

struct sae_quality {
    double fvu;        /* sum ||x - x_hat||^2 / sum ||x - mean x||^2 over the tokens */
    double l0;         /* mean active latents per token */
    double dead_frac;  /* latents that never fire on these tokens */
    double dense_frac; /* latents that fire on more than 1% of them (SAEBench's "dense") */
};

/* x: (N, d_in) raw activations, N >= 2. 0, SF_EINVAL or SF_ENOMEM. */
int sae_quality_measure(const struct sae *sae, const float *x, size_t N, struct sae_quality *q);

struct sae_sweep_row {
    double lr;
    struct sae_quality q; /* on the held-out tokens */
    double train_fvu;     /* the last step's batch FVU */
    double seconds;       /* wall time of the training */
    int rc;               /* 0, or why this rate failed (its row is then not a candidate) */
};

/* Trains at each of lrs[0..n_lr) on train (n_train tokens, batches of B taken in order)
 * and measures held (n_held tokens). rows: (n_lr). *best: the row with the lowest
 * held-out FVU. Returns 0, SF_EINVAL (bad arguments or config, or every rate failed),
 * or SF_ENOMEM. */
int sae_sweep_lr(const struct sae_train_config *cfg, const float *train, size_t n_train, size_t B,
                 const float *held, size_t n_held, const double *lrs, size_t n_lr,
                 struct sae_sweep_row *rows, size_t *best);

#endif

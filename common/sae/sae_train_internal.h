/* sae_train_internal: the trainer's state, shared by sae_train.c (fast step),
 * sae_train_ref.c (the double-precision oracle) and sae_ckpt.c (checkpoints).
 * Not part of the public API. */
#ifndef SAEFLOW_SAE_TRAIN_INTERNAL_H
#define SAEFLOW_SAE_TRAIN_INTERNAL_H

#include "core/core.h"
#include "sae/sae_train.h"

struct sae_fast; /* the fast step's scratch (sae_train.c) */

struct sae_trainer {
    struct sae_train_config cfg;
    struct sae *sae; /* weights; sae->norm_scale = s; threshold (batchtopk) = theta */
    /* Adam moments, same shapes as the weights; with signsgd_sf, m_* holds z and v_*
     * holds x (the schedule-free sequences) */
    float *m_W_enc, *v_W_enc, *m_b_enc, *v_b_enc;
    float *m_W_dec, *v_W_dec, *m_b_dec, *v_b_dec;
    int64_t *since_fire; /* (n) tokens since each latent last fired */
    int64_t step, tokens;
    bool initialized; /* s and b_dec estimated */
    bool theta_set;   /* batchtopk: EMA has a first value */
    double theta;     /* batchtopk: EMA of the smallest kept activation */
    double sf_wsum;   /* signsgd_sf: sum of lr_t^2 so far */
    struct rng rng;
    struct sae_fast *fast;
};

/* Validates cfg and allocates zeroed state (no weight init). NULL: logged. */
struct sae_trainer *sae_trainer_alloc(const struct sae_train_config *cfg);
/* Shared between the two steps. */
int sae_trainer_prepare(struct sae_trainer *t, const float *x, size_t B);
size_t sae_trainer_count_dead(const struct sae_trainer *t);
bool sae_trainer_is_dead(const struct sae_trainer *t, size_t i);
/* Adam's scalars for the step about to be taken (PyTorch form). */
struct sae_adam_coef {
    double lr, b1, b2, eps, step_size, bc2_sqrt;
};
struct sae_adam_coef sae_trainer_adam_coef(const struct sae_trainer *t, double lr);
/* signsgd_sf: before the first step, z = x = the initial weights. */
void sae_trainer_sf_start(struct sae_trainer *t);
/* signsgd_sf: the averaging weight c of this step (advances sf_wsum when commit). */
double sae_trainer_sf_coef(struct sae_trainer *t, double lr, bool commit);
void sae_trainer_fast_free(struct sae_fast **f);

#endif

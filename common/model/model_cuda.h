/* model_cuda: the engine's forward pass on a CUDA device, beside the CPU one.
 *
 *   struct cuda_ctx *ctx; cuda_ctx_new(0, &ctx);
 *   struct model_cuda *g;
 *   model_cuda_new(m, ctx, CUDA_MATH_FP32, 4, 256, &g);  // weights to the device, KV cache
 *   model_cuda_add_hook(g, "blocks.2.hook_resid_post", fn, user, false);
 *   model_cuda_forward(g, &seq, 1, MODEL_LOGITS_LAST, logits);  // as model_forward
 *   model_cuda_destroy(&g);
 *
 * model_cuda_forward has model_forward's contract (model.h): the same validation and
 * return codes, tokens appended to each slot's cache, the same hook points in the
 * same order, the same logits (host memory), and MODEL_LOGITS_NONE skipping the
 * layers after the last hooked one. The weights stay resident on the device; each
 * linear layer is one cuBLAS GEMM over every token of the call.
 *
 * Hooks come in two kinds:
 *   host hooks (model_hook_fn, as model_ctx): the activation is copied to the host for
 *     the callback (act->x is host memory) and, when the hook said it writes, copied
 *     back before the pass goes on; capture uses these.
 *   device hooks (model_cuda_hook_fn): act->x is a DEVICE pointer (n_tokens, d) that
 *     the hook may read or rewrite with kernels queued on the context's stream (SAE
 *     splicing, steering); nothing is copied. act's other arrays are host memory.
 *
 * The model and the context are borrowed and must outlive the model_cuda. Without CUDA
 * every function that would touch a device returns SF_EUNSUP. */
#ifndef SAEFLOW_MODEL_CUDA_H
#define SAEFLOW_MODEL_CUDA_H

#include <stdbool.h>
#include <stddef.h>

#include "model/model.h"
#include "tensor/tensor_cuda.h"

struct model_cuda;

/* Uploads the weights and allocates a KV cache of n_slots x max_len (0: the model's
 * max_seq_len). Returns 0, SF_EINVAL, SF_EUNSUP (no CUDA, head_dim too large) or
 * SF_ENOMEM (device memory); free with model_cuda_destroy (NULL safe). */
int model_cuda_new(const struct model *m, struct cuda_ctx *ctx, enum cuda_math math, size_t n_slots,
                   size_t max_len, struct model_cuda **out);
void model_cuda_destroy(struct model_cuda **g);

size_t model_cuda_slots(const struct model_cuda *g);
size_t model_cuda_max_len(const struct model_cuda *g);
size_t model_cuda_len(const struct model_cuda *g, size_t slot);
void model_cuda_reset(struct model_cuda *g, size_t slot);
void model_cuda_reset_all(struct model_cuda *g);
int model_cuda_truncate(struct model_cuda *g, size_t slot, size_t len);

typedef int (*model_cuda_hook_fn)(void *user, const struct model_act *act, struct cuda_ctx *ctx);

/* Host hook by name / position; `writes` = the hook may change act->x (copied back). */
int model_cuda_add_hook(struct model_cuda *g, const char *name, model_hook_fn fn, void *user,
                        bool writes);
int model_cuda_add_hook_at(struct model_cuda *g, size_t layer, enum model_hook_point point,
                           model_hook_fn fn, void *user, bool writes);
/* Device hook (act->x on the device). */
int model_cuda_add_device_hook_at(struct model_cuda *g, size_t layer, enum model_hook_point point,
                                  model_cuda_hook_fn fn, void *user);
void model_cuda_clear_hooks(struct model_cuda *g);

/* As model_forward (model.h); logits are host memory. */
int model_cuda_forward(struct model_cuda *g, const struct model_seq *seqs, size_t n_seqs,
                       enum model_logits want, float *logits);

#endif

/* model_backend: one handle over the CPU engine (model_ctx) and the CUDA engine
 * (model_cuda), so that a service picks the backend at run time without #ifdefs:
 *
 *   struct model_backend *e;
 *   model_backend_new(m, "auto", "tf32", 8, 256, &e);     // "cpu" | "cuda" | "auto"
 *   model_backend_add_hook(e, "blocks.3.hook_resid_post", fn, user, false);
 *   model_backend_forward(e, seqs, n, MODEL_LOGITS_NONE, NULL);
 *   model_backend_destroy(&e);
 *
 * Hooks are host hooks on both backends (model_hook_fn; `writes` says whether the hook
 * changes act->x, which the CUDA backend then copies back). Everything else has the
 * model_ctx contract (model.h). The backend borrows m. */
#ifndef SAEFLOW_MODEL_BACKEND_H
#define SAEFLOW_MODEL_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "model/model.h"
#include "tensor/tensor.h"

struct model_backend;

/* backend: "cpu" | "cuda" | "auto" (NULL = cpu); math: "fp32" | "tf32" | "bf16" (NULL =
 * fp32; ignored on the CPU). Returns 0, SF_EINVAL, SF_EUNSUP (cuda asked for but not
 * available; "auto" falls back to the CPU instead), SF_ENOMEM. */
int model_backend_new(const struct model *m, const char *backend, const char *math, size_t n_slots,
                      size_t max_len, struct model_backend **out);
void model_backend_destroy(struct model_backend **e);
enum tensor_backend model_backend_kind(const struct model_backend *e);

int model_backend_add_hook(struct model_backend *e, const char *name, model_hook_fn fn, void *user,
                           bool writes);
void model_backend_clear_hooks(struct model_backend *e);
int model_backend_forward(struct model_backend *e, const struct model_seq *seqs, size_t n_seqs,
                          enum model_logits want, float *logits);
size_t model_backend_len(const struct model_backend *e, size_t slot);
void model_backend_reset(struct model_backend *e, size_t slot);
void model_backend_reset_all(struct model_backend *e);

#endif

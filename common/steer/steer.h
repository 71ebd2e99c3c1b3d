/* steer: steering a model with SAE features (REFERENCES.md §5). Parses steering
 * specs, and applies them to activations through a model hook at every position the
 * forward pass sees (prompt and generated tokens alike).
 *
 *   struct steer_spec sp[2];
 *   steer_spec_parse("123=8:add", &sp[0]);     // h += 8 * W_dec[123]
 *   steer_spec_parse("77=0:ablate", &sp[1]);   // z_77 -> 0, reconstruction error kept
 *   struct steer *st = steer_new(sae, sp, 2, NULL);
 *   steer_install(st, ctx, NULL);              // hooks sae->meta.hook_name
 *   model_generate(ctx, ...);                  // steered
 *   steer_set_enabled(st, false);              // same ctx, unsteered
 *   ...
 *   model_ctx_destroy(&ctx); steer_destroy(&st);
 *
 * Spec syntax: FEATURE=STRENGTH[:MODE], MODE one of add (default), clamp, ablate;
 * FEATURE a decimal latent index, STRENGTH a finite decimal number, optionally
 * followed by `x` to mean "times the feature's maximum activation" (resolved by the
 * caller with steer_spec_resolve, e.g. from the feature store). `FEATURE:ablate` is
 * short for FEATURE=0:ablate; ablate with a non-zero strength is refused.
 *
 * The math, for an activation h (one token) and the SAE's decoder direction
 * u_i = W_dec[i] / norm_scale (the direction in the raw activation space):
 *   add:    h += strength * u_i
 *   clamp:  z = encode(h); x_hat = decode(z); h' = decode(z with z_i = value) + (h - x_hat)
 *           which, decode being affine in z, is h += (value - z_i) * u_i
 *   ablate: clamp to 0
 * Every spec's z_i is read from the code of the activation as it enters the hook, and
 * the deltas of all specs are summed (so the order of specs does not matter). A
 * feature may appear in at most one clamp/ablate spec.
 *
 * Ownership: steer_new returns an object freed with steer_destroy; it borrows the SAE
 * (which must outlive it) and copies the specs. One steer serves one model_ctx at a
 * time (it holds scratch buffers); it is not thread-safe. */
#ifndef SAEFLOW_STEER_H
#define SAEFLOW_STEER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "sae/sae.h"

enum steer_mode { STEER_ADD = 0, STEER_CLAMP = 1, STEER_ABLATE = 2 };
const char *steer_mode_name(enum steer_mode m); /* "add" | "clamp" | "ablate" */
int steer_mode_parse(const char *s, size_t len, enum steer_mode *out);

#define STEER_MAX_STRENGTH 1e6 /* |strength| cap a spec may ask for */
#define STEER_MAX_SPEC_LEN 128 /* longest spec text accepted */

struct steer_spec {
    uint32_t feature;
    float value; /* add: strength; clamp: target activation; ablate: 0 */
    enum steer_mode mode;
    bool relative; /* value is a multiple of the feature's max activation ("8x") */
};

/* Parses one spec of `len` bytes (need not be NUL-terminated). 0 or SF_EINVAL (not
 * logged: the caller says what was wrong with which argument). */
int steer_spec_parse_n(const char *s, size_t len, struct steer_spec *out);
int steer_spec_parse(const char *s, struct steer_spec *out);
/* Parses a comma-separated list of specs, appending at most cap - *n to out[*n..].
 * SF_EINVAL on a bad spec (*n unchanged), SF_ERANGE when more than cap in all. */
int steer_spec_parse_list(const char *s, struct steer_spec *out, size_t cap, size_t *n);
/* Writes the canonical text of a spec ("123=8:add", "5=2.5x:clamp"). SF_ERANGE if
 * cap is too small. */
int steer_spec_format(const struct steer_spec *s, char *buf, size_t cap);
/* Turns a relative spec into a raw one: value *= max_act, relative = false.
 * SF_EINVAL when max_act is not finite and positive. A raw spec is left alone. */
int steer_spec_resolve(struct steer_spec *s, float max_act);

struct steer;

/* Validates the specs against the SAE (feature < sae->n, finite values, no relative
 * spec left unresolved, no feature clamped twice) and allocates scratch. NULL on an
 * invalid spec (logged: "steer_invalid") or OOM. n may be 0 (steers nothing). */
struct steer *steer_new(const struct sae *sae, const struct steer_spec *specs, size_t n);
void steer_destroy(struct steer **st);

size_t steer_count(const struct steer *st);
const struct steer_spec *steer_specs(const struct steer *st);
/* While disabled the hook changes nothing (default: enabled). */
void steer_set_enabled(struct steer *st, bool on);
bool steer_enabled(const struct steer *st);
/* Positions holding this token are left alone (e.g. BOS, whose residual the SAE was
 * not trained on); -1 (the default) steers every position. */
void steer_set_skip_token(struct steer *st, int32_t token);

/* Steers only the sequences in the KV-cache slots marked true (mask of n_slots, copied;
 * slots beyond it are not steered), so that one batched forward pass can serve steered
 * and unsteered requests together. NULL (the default) steers every slot. 0 or
 * SF_ENOMEM. */
int steer_set_slots(struct steer *st, const bool *mask, size_t n_slots);

/* Applies the specs to n_tokens rows of x (n_tokens, sae->d_in) in place. tokens and
 * slots (n_tokens each) may be NULL: then no row is skipped for its token / slot.
 * 0 or SF_ENOMEM. */
int steer_apply(struct steer *st, float *x, const int32_t *tokens, const size_t *slots,
                size_t n_tokens);

/* A model_hook_fn: user is a struct steer. Returns SF_EINVAL when the hooked
 * activation's width is not the SAE's d_in. */
int steer_hook(void *user, const struct model_act *act);
/* Registers steer_hook on ctx at `hook` (NULL: the SAE's meta.hook_name). SF_EINVAL
 * (logged) when the name does not parse for the model or the width differs. */
int steer_install(struct steer *st, struct model_ctx *c, const char *hook);

#endif

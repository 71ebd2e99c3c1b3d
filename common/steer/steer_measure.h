/* steer_measure: what a steering run did, judged by the UNSTEERED model (REFERENCES.md §5).
 *
 * Each sample (prompt + generated tokens) is read back by the model without steering:
 *   ppl      exp(mean -log p(token)) over the generated tokens: fluency as the unsteered model
 *            sees it (steering that breaks the text raises it);
 *   fire     share of generated tokens on which a steered feature (add / clamp specs) is active
 *            when the unsteered model's activation at the hook is re-encoded with the SAE:
 *            "the concept, as the unsteered model reads the text";
 *   act      mean activation of those features over the generated tokens;
 *   concept  whether the generated text contains the concept string (steer_measure_set_concept),
 *            e.g. " dog": the plain reading a person would make.
 *
 * A dose-response sweep (steer_sweep_pick) then picks the strength a user should use: the one
 * that shows the concept most often while the unsteered model's perplexity stays within a
 * bound of the unsteered generation's.
 *
 *   struct steer_measure *ms = NULL;
 *   steer_measure_new(model, sae, hook, max_len, &ms);
 *   steer_measure_set_concept(ms, " dog");
 *   steer_measure_sample(ms, prompt, np, gen, ng, specs, ns, bos_id, &r);
 *   steer_measure_destroy(&ms);
 */
#ifndef SAEFLOW_STEER_MEASURE_H
#define SAEFLOW_STEER_MEASURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "steer/steer.h"

struct model;
struct sae;
struct steer_measure;

struct steer_measured {
    double ppl, fire, act;
    bool concept;
};

/* A measurer for samples of at most max_len tokens (prompt + generated). 0, SF_EINVAL (bad
 * hook or sizes), SF_ENOMEM. */
int steer_measure_new(const struct model *m, const struct sae *sae, const char *hook,
                      size_t max_len, struct steer_measure **out);
void steer_measure_destroy(struct steer_measure **ms);
/* The text whose presence in a generated continuation counts as the concept (NULL or "" =
 * none; `concept` is then always false). Copied. 0 or SF_ENOMEM. */
int steer_measure_set_concept(struct steer_measure *ms, const char *text);
/* Measures one sample. `skip` is a token id left out of fire/act (BOS; -1 for none).
 * 0 measured; SF_NOTFOUND too short to say anything (fewer than 2 generated tokens) or longer
 * than max_len; another negative code on a model/SAE failure. */
int steer_measure_sample(struct steer_measure *ms, const int32_t *prompt, size_t np,
                         const int32_t *gen, size_t ng, const struct steer_spec *specs, size_t ns,
                         int32_t skip, struct steer_measured *out);

/* One strength of a dose-response sweep, averaged over its samples. */
struct steer_sweep_row {
    double strength;     /* 0 = unsteered */
    size_t samples;      /* measured samples */
    double concept_rate; /* share of samples whose text shows the concept */
    double fire, act;    /* means of steer_measured.fire / .act */
    double ppl;          /* mean perplexity under the unsteered model */
};

/* Adds one measured sample to a row. */
void steer_sweep_add(struct steer_sweep_row *row, const struct steer_measured *r);
/* Turns the sums of steer_sweep_add into means. */
void steer_sweep_finish(struct steer_sweep_row *row);
/* The row a user should steer with: among rows with strength != 0 whose perplexity is at most
 * max_ppl_ratio times the unsteered row's (rows[0] must be the unsteered one), the highest
 * concept rate (then the lower perplexity, then the lower strength). -1 when no steered row
 * keeps within the bound. */
int steer_sweep_pick(const struct steer_sweep_row *rows, size_t n, double max_ppl_ratio);

#endif

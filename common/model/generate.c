/* generate: batched autoregressive generation on a model_ctx: one batched prefill of
 * every prompt, then one batched decode step per new token over the sequences still
 * running, each sequence sampling with its own seeded rng. */
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "model.h"

int model_generate(struct model_ctx *c, const int32_t *const *prompts, const size_t *prompt_lens,
                   size_t n, const struct model_gen_opts *o, int32_t *out, size_t *out_lens)
{
    const struct model_config *cfg = model_config(model_ctx_model(c));
    size_t V = cfg->vocab_size, max_new = o->max_new_tokens;
    if (n == 0 || n > model_ctx_slots(c)) {
        log_error("generate_invalid", "n=%zu slots=%zu", n, model_ctx_slots(c));
        return SF_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        out_lens[i] = 0;
        if (!prompts[i] || prompt_lens[i] == 0) {
            log_error("generate_invalid", "reason=\"empty prompt\" seq=%zu", i);
            return SF_EINVAL;
        }
    }
    if (max_new == 0) return 0;
    int rc = 0;
    struct sampler **samplers = calloc(n, sizeof *samplers);
    float *logits = malloc(n * V * sizeof(float));
    struct model_seq *seqs = malloc(n * sizeof *seqs);
    size_t *which = malloc(n * sizeof *which); /* batch row -> sequence */
    if (!samplers || !logits || !seqs || !which) {
        rc = SF_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        samplers[i] = sampler_new(V, &o->sample, o->seed + i);
        if (!samplers[i]) {
            rc = SF_ENOMEM;
            goto out;
        }
        model_ctx_reset(c, i);
        seqs[i] = (struct model_seq){.slot = i, .tokens = prompts[i], .n = prompt_lens[i]};
        which[i] = i;
    }
    size_t rows = n;
    rc = model_forward(c, seqs, rows, MODEL_LOGITS_LAST, logits);
    for (size_t step = 0; rc == 0 && rows > 0; step++) {
        size_t next = 0;
        for (size_t b = 0; b < rows; b++) {
            size_t i = which[b];
            int32_t tok = sampler_next(samplers[i], logits + b * V);
            int32_t *slot_out = out + i * max_new + step;
            *slot_out = tok;
            out_lens[i]++;
            if (o->on_token && (rc = o->on_token(o->user, i, tok))) break;
            bool stop = step + 1 >= max_new || model_ctx_len(c, i) >= model_ctx_max_len(c);
            if (o->stop_at_eos && (tok == cfg->eos_id || tok == cfg->bos_id)) stop = true;
            if (stop) continue;
            seqs[next] = (struct model_seq){.slot = i, .tokens = slot_out, .n = 1};
            which[next++] = i;
        }
        if (rc) break;
        rows = next;
        if (rows) rc = model_forward(c, seqs, rows, MODEL_LOGITS_LAST, logits);
    }
out:
    if (samplers)
        for (size_t i = 0; i < n; i++) sampler_destroy(&samplers[i]);
    free(samplers);
    free(logits);
    free(seqs);
    free(which);
    return rc;
}

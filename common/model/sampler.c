/* sampler: turns a row of logits into a token id: greedy argmax, or temperature,
 * top-k and top-p (nucleus) sampling with a seeded rng from core. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "model.h"

struct prob_id {
    float p;
    int32_t id;
};

struct sampler {
    struct sample_params p;
    struct rng rng;
    size_t vocab;
    float *prob;            /* (vocab) */
    struct prob_id *sorted; /* (vocab) */
};

struct sampler *sampler_new(size_t vocab, const struct sample_params *p, uint64_t seed)
{
    if (vocab == 0 || vocab > INT32_MAX) return NULL;
    struct sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    if (!(s->p.top_p > 0.0f && s->p.top_p < 1.0f)) s->p.top_p = 1.0f;
    if (!(s->p.temperature > 0.0f)) s->p.temperature = 0.0f;
    s->vocab = vocab;
    rng_seed(&s->rng, seed);
    s->prob = malloc(vocab * sizeof(float));
    s->sorted = malloc(vocab * sizeof *s->sorted);
    if (!s->prob || !s->sorted) sampler_destroy(&s);
    return s;
}

void sampler_destroy(struct sampler **ps)
{
    if (!ps || !*ps) return;
    free((*ps)->prob);
    free((*ps)->sorted);
    free(*ps);
    *ps = NULL;
}

int32_t sample_argmax(const float *logits, size_t n)
{
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return (int32_t)best;
}

/* Decreasing probability; ties by lower id (deterministic). */
static int cmp_desc(const void *a, const void *b)
{
    const struct prob_id *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->id < y->id ? -1 : (x->id > y->id);
}

int32_t sampler_next(struct sampler *s, const float *logits)
{
    size_t V = s->vocab;
    if (s->p.temperature == 0.0f) return sample_argmax(logits, V);
    /* softmax(logits / T) */
    float mx = logits[0];
    for (size_t i = 1; i < V; i++) mx = logits[i] > mx ? logits[i] : mx;
    double sum = 0;
    for (size_t i = 0; i < V; i++) {
        s->prob[i] = expf((logits[i] - mx) / s->p.temperature);
        sum += s->prob[i];
    }
    for (size_t i = 0; i < V; i++) s->prob[i] = (float)(s->prob[i] / sum);
    size_t keep = V;
    bool truncate = (s->p.top_k > 0 && s->p.top_k < V) || s->p.top_p < 1.0f;
    if (!truncate) {
        double u = rng_uniform(&s->rng), cdf = 0;
        for (size_t i = 0; i < V; i++) {
            cdf += s->prob[i];
            if (u < cdf) return (int32_t)i;
        }
        return (int32_t)(V - 1);
    }
    for (size_t i = 0; i < V; i++) s->sorted[i] = (struct prob_id){s->prob[i], (int32_t)i};
    qsort(s->sorted, V, sizeof *s->sorted, cmp_desc);
    if (s->p.top_k > 0 && s->p.top_k < keep) keep = s->p.top_k;
    double mass = 0;
    for (size_t i = 0; i < keep; i++) {
        mass += s->sorted[i].p;
        if (s->p.top_p < 1.0f && mass >= s->p.top_p) {
            keep = i + 1;
            break;
        }
    }
    double u = rng_uniform(&s->rng) * mass, cdf = 0;
    for (size_t i = 0; i < keep; i++) {
        cdf += s->sorted[i].p;
        if (u < cdf) return s->sorted[i].id;
    }
    return s->sorted[keep - 1].id;
}

/* Sampling: greedy, temperature, top-k, top-p against the distributions they define
 * (frequencies over many seeded draws), determinism per seed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "../../support/check.h"
#include "core/core.h"
#include "model/model.h"

#define V     5
#define DRAWS 40000

/* p: the target distribution; checks draw frequencies within 0.012 (> 4 sigma). */
static void check_freq(const float *logits, struct sample_params sp, const double *p)
{
    struct sampler *s = sampler_new(V, &sp, 99);
    CHECK(s != NULL);
    int cnt[V] = {0}, bad = 0;
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = sampler_next(s, logits);
        if (t >= 0 && t < V)
            cnt[t]++;
        else
            bad++;
    }
    CHECK_EQ_INT(bad, 0);
    for (int v = 0; v < V; v++) {
        double f = (double)cnt[v] / DRAWS;
        CHECK_MSG(fabs(f - p[v]) < 0.012, "T=%.2f k=%zu p=%.2f token %d: freq %.4f want %.4f",
                  sp.temperature, sp.top_k, sp.top_p, v, f, p[v]);
        if (p[v] == 0) CHECK_EQ_INT(cnt[v], 0);
    }
    sampler_destroy(&s);
    CHECK(s == NULL);
}

int main(void)
{
    log_init("test_sampler", LOG_LOGFMT, LOG_WARN);
    const double base[V] = {0.45, 0.25, 0.15, 0.1, 0.05};
    float logits[V];
    for (int v = 0; v < V; v++) logits[v] = (float)log(base[v]) + 3.0f;

    /* greedy */
    CHECK_EQ_INT(sample_argmax(logits, V), 0);
    const float tie[4] = {1, 3, 3, 2};
    CHECK_EQ_INT(sample_argmax(tie, 4), 1);
    struct sample_params g = {.temperature = 0};
    struct sampler *s = sampler_new(4, &g, 1);
    for (int i = 0; i < 10; i++) CHECK_EQ_INT(sampler_next(s, tie), 1);
    sampler_destroy(&s);

    /* plain temperature 1: the softmax itself */
    check_freq(logits, (struct sample_params){.temperature = 1, .top_p = 1}, base);
    /* temperature 2: p^(1/2) renormalised */
    double t2[V], z = 0;
    for (int v = 0; v < V; v++) z += t2[v] = sqrt(base[v]);
    for (int v = 0; v < V; v++) t2[v] /= z;
    check_freq(logits, (struct sample_params){.temperature = 2, .top_p = 1}, t2);
    /* top-k 2: the two most likely, renormalised */
    const double k2[V] = {0.45 / 0.7, 0.25 / 0.7, 0, 0, 0};
    check_freq(logits, (struct sample_params){.temperature = 1, .top_k = 2, .top_p = 1}, k2);
    /* top-p 0.8: smallest prefix with mass >= 0.8 is {0,1,2} (0.85) */
    const double p8[V] = {0.45 / 0.85, 0.25 / 0.85, 0.15 / 0.85, 0, 0};
    check_freq(logits, (struct sample_params){.temperature = 1, .top_p = 0.8f}, p8);
    /* top-k 1 is greedy */
    const double k1[V] = {1, 0, 0, 0, 0};
    check_freq(logits, (struct sample_params){.temperature = 1, .top_k = 1, .top_p = 1}, k1);

    /* same seed, same draws; another seed, another sequence */
    struct sample_params sp = {.temperature = 1, .top_p = 0.95f};
    struct sampler *a = sampler_new(V, &sp, 5), *b = sampler_new(V, &sp, 5),
                   *c = sampler_new(V, &sp, 6);
    int same = 1, diff = 0;
    for (int i = 0; i < 200; i++) {
        int32_t x = sampler_next(a, logits), y = sampler_next(b, logits),
                w = sampler_next(c, logits);
        same &= x == y;
        diff |= x != w;
    }
    CHECK(same);
    CHECK(diff);
    sampler_destroy(&a), sampler_destroy(&b), sampler_destroy(&c);
    CHECK(sampler_new(0, &sp, 1) == NULL);
    return check_exit();
}

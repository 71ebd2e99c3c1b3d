#include "steer/steer_measure.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "sae/sae.h"

struct steer_measure {
    struct model_ctx *c; /* 1 slot, a capture hook, no steering */
    const struct model *m;
    const struct sae *sae;
    float *x; /* (cap_rows, d) captured at the hook */
    size_t rows, cap_rows;
    float *lp; /* (cap_rows) log-probabilities */
    uint32_t *idx;
    float *val;
    uint32_t *cnt;
    size_t max_active;
    char *concept;
    struct buf text;
};

static int capture_hook(void *user, const struct model_act *act)
{
    struct steer_measure *ms = user;
    if (ms->rows + act->n_tokens > ms->cap_rows || act->d != ms->sae->d_in) return SF_ERANGE;
    memcpy(ms->x + ms->rows * act->d, act->x, act->n_tokens * act->d * sizeof *act->x);
    ms->rows += act->n_tokens;
    return 0;
}

int steer_measure_new(const struct model *m, const struct sae *sae, const char *hook,
                      size_t max_len, struct steer_measure **out)
{
    *out = NULL;
    if (!m || !sae || !hook || max_len == 0) return SF_EINVAL;
    struct steer_measure *ms = calloc(1, sizeof *ms);
    if (!ms) return SF_ENOMEM;
    ms->m = m;
    ms->sae = sae;
    ms->cap_rows = max_len;
    ms->max_active = sae->arch == SAE_TOPK ? SF_MIN(sae->k, sae->n) : SF_MIN(sae->n, (size_t)256);
    buf_init(&ms->text, 1u << 24);
    ms->c = model_ctx_new(m, 1, max_len);
    ms->x = malloc(max_len * sae->d_in * sizeof *ms->x);
    ms->lp = malloc(max_len * sizeof *ms->lp);
    ms->idx = malloc(max_len * ms->max_active * sizeof *ms->idx);
    ms->val = malloc(max_len * ms->max_active * sizeof *ms->val);
    ms->cnt = malloc(max_len * sizeof *ms->cnt);
    int rc = SF_ENOMEM;
    if (ms->c && ms->x && ms->lp && ms->idx && ms->val && ms->cnt)
        rc = model_ctx_add_hook(ms->c, hook, capture_hook, ms);
    if (rc) {
        steer_measure_destroy(&ms);
        return rc < 0 ? rc : SF_EINVAL;
    }
    *out = ms;
    return 0;
}

void steer_measure_destroy(struct steer_measure **pms)
{
    struct steer_measure *ms = *pms;
    if (!ms) return;
    model_ctx_destroy(&ms->c);
    free(ms->x);
    free(ms->lp);
    free(ms->idx);
    free(ms->val);
    free(ms->cnt);
    free(ms->concept);
    buf_fini(&ms->text);
    free(ms);
    *pms = NULL;
}

int steer_measure_set_concept(struct steer_measure *ms, const char *text)
{
    free(ms->concept);
    ms->concept = NULL;
    if (!text || !*text) return 0;
    ms->concept = strdup(text);
    return ms->concept ? 0 : SF_ENOMEM;
}

/* Whether the decoded generated tokens contain the concept text. */
static bool shows_concept(struct steer_measure *ms, const int32_t *prompt, size_t np,
                          const int32_t *gen, size_t ng)
{
    const struct tokenizer *tok = model_tokenizer(ms->m);
    if (!ms->concept || !tok) return false;
    buf_reset(&ms->text);
    /* decode from the prompt's last token so the first piece has its leading space right */
    int32_t prev = np ? prompt[np - 1] : -1;
    for (size_t i = 0; i < ng; i++) {
        if (tokenizer_decode_piece(tok, prev, gen[i], &ms->text) < 0) return false;
        prev = gen[i];
    }
    return memmem(ms->text.data ? ms->text.data : "", ms->text.len, ms->concept,
                  strlen(ms->concept)) != NULL;
}

int steer_measure_sample(struct steer_measure *ms, const int32_t *prompt, size_t np,
                         const int32_t *gen, size_t ng, const struct steer_spec *specs, size_t ns,
                         int32_t skip, struct steer_measured *out)
{
    memset(out, 0, sizeof *out);
    const size_t n = np + ng;
    if (ng < 2 || n > ms->cap_rows) return SF_NOTFOUND;
    int32_t *seq = malloc(n * sizeof *seq);
    if (!seq) return SF_ENOMEM;
    memcpy(seq, prompt, np * sizeof *seq);
    memcpy(seq + np, gen, ng * sizeof *seq);
    model_ctx_reset(ms->c, 0);
    ms->rows = 0;
    struct model_seq s = {.slot = 0, .tokens = seq, .n = n};
    int rc = model_forward_logprobs(ms->c, &s, 1, ms->lp);
    if (rc == 0) rc = sae_encode(ms->sae, ms->x, n, ms->max_active, ms->idx, ms->val, ms->cnt);
    if (rc == 0) {
        double nll = 0, act = 0;
        size_t fired = 0, counted = 0;
        for (size_t p = np; p < n; p++) {
            nll -= ms->lp[p - 1]; /* log p(seq[p] | seq[..p-1]) */
            if (seq[p] == skip) continue;
            counted++;
            bool any = false;
            for (uint32_t q = 0; q < ms->cnt[p]; q++) {
                uint32_t f = ms->idx[p * ms->max_active + q];
                for (size_t k = 0; k < ns; k++) {
                    if (specs[k].mode == STEER_ABLATE || specs[k].feature != f) continue;
                    any = true;
                    act += ms->val[p * ms->max_active + q];
                }
            }
            fired += any;
        }
        out->ppl = exp(nll / (double)ng);
        out->fire = counted ? (double)fired / (double)counted : 0;
        out->act = counted ? act / (double)counted : 0;
        out->concept = shows_concept(ms, prompt, np, gen, ng);
    }
    free(seq);
    return rc;
}

void steer_sweep_add(struct steer_sweep_row *row, const struct steer_measured *r)
{
    row->samples++;
    row->concept_rate += r->concept;
    row->fire += r->fire;
    row->act += r->act;
    row->ppl += r->ppl;
}

void steer_sweep_finish(struct steer_sweep_row *row)
{
    if (!row->samples) return;
    double k = (double)row->samples;
    row->concept_rate /= k;
    row->fire /= k;
    row->act /= k;
    row->ppl /= k;
}

int steer_sweep_pick(const struct steer_sweep_row *rows, size_t n, double max_ppl_ratio)
{
    if (n < 2 || rows[0].samples == 0) return -1;
    const double limit = rows[0].ppl * max_ppl_ratio;
    int best = -1;
    for (size_t i = 1; i < n; i++) {
        const struct steer_sweep_row *r = &rows[i];
        if (!r->samples || r->strength == 0 || !(r->ppl <= limit)) continue;
        if (best < 0) {
            best = (int)i;
            continue;
        }
        const struct steer_sweep_row *b = &rows[best];
        if (r->concept_rate != b->concept_rate) {
            if (r->concept_rate > b->concept_rate) best = (int)i;
        } else if (r->ppl != b->ppl) {
            if (r->ppl < b->ppl) best = (int)i;
        } else if (fabs(r->strength) < fabs(b->strength)) {
            best = (int)i;
        }
    }
    return best;
}

/* eval metrics on constructed cases and against a direct computation:
 *   - an SAE that reconstructs exactly (2*d latents, W_enc = W_dec = [I; -I], top-k
 *     with k = d, so x_hat = relu(x) - relu(-x) = x) gives FVU 0, CE_sae = CE_clean,
 *     loss recovered 1 and KL 0;
 *   - an all-zero SAE (x_hat = 0) gives CE_sae = CE_zero and loss recovered 0 against
 *     zero ablation (KL score 0);
 *   - a random SAE: FVU, L0, dead count, CE clean/sae/zero/mean and the KLs equal a
 *     plain computation: one window at a time through model_forward with
 *     MODEL_LOGITS_ALL, the SAE by sae_encode_ref/sae_decode_ref, log-softmax and KL in
 *     loops, the mean from its own capture pass.
 * On a random Llama (always) and on stories260K with held-out TinyStories text
 * (skipped when the shared models are absent). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../support/check.h"
#include "eval/eval.h"
#include "model/tokenizer.h"

/* ---- the direct computation ---- */

enum ref_mode { REF_READ, REF_SAE, REF_ZERO, REF_MEAN };
struct ref {
    enum ref_mode mode;
    const struct sae *sae;
    const bool *special;
    const float *mean;
    float *x; /* captured (n, d) */
    float *z; /* (n_latents) scratch */
    double sse, sst, l0;
    uint64_t n_tok;
    uint64_t *fires;
};

static int ref_hook(void *user, const struct model_act *a)
{
    struct ref *r = user;
    size_t d = a->d;
    for (size_t i = 0; i < a->n_tokens; i++) {
        float *x = a->x + i * d;
        if (r->special[a->tokens[i]]) continue;
        switch (r->mode) {
        case REF_READ:
            memcpy(r->x + i * d, x, d * sizeof *x);
            break;
        case REF_SAE: {
            float *xh = malloc(d * sizeof *xh);
            sae_encode_ref(r->sae, x, r->z);
            sae_decode_ref(r->sae, r->z, xh);
            for (size_t j = 0; j < r->sae->n; j++)
                if (r->z[j] != 0.0f) r->fires[j]++, r->l0 += 1;
            for (size_t j = 0; j < d; j++) {
                double e = (double)x[j] - xh[j];
                r->sse += e * e;
                double m = (double)x[j] - r->mean[j];
                r->sst += m * m;
            }
            r->n_tok++;
            memcpy(x, xh, d * sizeof *x);
            free(xh);
            break;
        }
        case REF_ZERO:
            memset(x, 0, d * sizeof *x);
            break;
        case REF_MEAN:
            memcpy(x, r->mean, d * sizeof *x);
            break;
        }
    }
    return 0;
}

static void log_softmax(double *out, const float *logits, size_t V)
{
    double mx = -INFINITY;
    for (size_t v = 0; v < V; v++) mx = fmax(mx, logits[v]);
    double s = 0.0;
    for (size_t v = 0; v < V; v++) s += exp((double)logits[v] - mx);
    double lse = mx + log(s);
    for (size_t v = 0; v < V; v++) out[v] = (double)logits[v] - lse;
}

struct ref_result {
    double fvu, l0, ce[4], kl[4];
    uint64_t dead;
};

static void reference(struct model *m, const struct sae *sae, const struct eval_data *data,
                      const char *hook, struct ref_result *res)
{
    const size_t d = sae->d_in, V = model_config(m)->vocab_size, C = data->context;
    struct ref r = {.sae = sae, .special = data->special};
    r.x = malloc(C * d * sizeof *r.x);
    r.z = malloc(sae->n * sizeof *r.z);
    r.fires = calloc(sae->n, sizeof *r.fires);
    float *mean = calloc(d, sizeof *mean);
    r.mean = mean;
    float *lg = malloc(C * V * sizeof *lg), *lg0 = malloc(C * V * sizeof *lg0);
    double *lp = malloc(V * sizeof *lp), *lq = malloc(V * sizeof *lq);
    struct model_ctx *ctx = model_ctx_new(m, 1, C);
    CHECK_EQ_INT(model_ctx_add_hook(ctx, hook, ref_hook, &r), 0);

    /* mean over non-special tokens */
    double *sum = calloc(d, sizeof *sum);
    uint64_t n = 0;
    r.mode = REF_READ;
    for (size_t w = 0; w < data->n_windows; w++) {
        const int32_t *tk = data->tokens + w * C;
        struct model_seq s = {.slot = 0, .tokens = tk, .n = data->len[w]};
        model_ctx_reset_all(ctx);
        CHECK_EQ_INT(model_forward(ctx, &s, 1, MODEL_LOGITS_ALL, lg), 0);
        for (size_t p = 0; p < s.n; p++) {
            if (data->special[tk[p]]) continue;
            for (size_t j = 0; j < d; j++) sum[j] += r.x[p * d + j];
            n++;
        }
    }
    for (size_t j = 0; j < d; j++) mean[j] = (float)(sum[j] / (double)n);

    memset(res, 0, sizeof *res);
    uint64_t n_pred = 0;
    for (size_t w = 0; w < data->n_windows; w++) {
        const int32_t *tk = data->tokens + w * C;
        struct model_seq s = {.slot = 0, .tokens = tk, .n = data->len[w]};
        for (int mode = 0; mode < 4; mode++) {
            r.mode = (enum ref_mode)mode;
            model_ctx_reset_all(ctx);
            float *out = mode == 0 ? lg0 : lg;
            CHECK_EQ_INT(model_forward(ctx, &s, 1, MODEL_LOGITS_ALL, out), 0);
            for (size_t p = 0; p + 1 < s.n; p++) {
                if (data->special[tk[p]] || data->special[tk[p + 1]]) continue;
                log_softmax(lq, out + p * V, V);
                res->ce[mode] -= lq[tk[p + 1]];
                if (mode == 0) {
                    n_pred++;
                    continue;
                }
                log_softmax(lp, lg0 + p * V, V);
                double kl = 0.0;
                for (size_t v = 0; v < V; v++) kl += exp(lp[v]) * (lp[v] - lq[v]);
                res->kl[mode] += kl;
            }
        }
    }
    for (int i = 0; i < 4; i++) {
        res->ce[i] /= (double)n_pred;
        res->kl[i] /= (double)n_pred;
    }
    res->fvu = r.sse / r.sst;
    res->l0 = r.l0 / (double)r.n_tok;
    for (size_t j = 0; j < sae->n; j++) res->dead += r.fires[j] == 0;
    model_ctx_destroy(&ctx);
    free(sum);
    free(mean);
    free(lg);
    free(lg0);
    free(lp);
    free(lq);
    free(r.x);
    free(r.z);
    free(r.fires);
}

/* ---- SAEs ---- */

static struct sae *identity_sae(size_t d, const char *hook)
{
    struct sae *s = sae_new(SAE_TOPK, d, 2 * d, d);
    for (size_t j = 0; j < d; j++) {
        s->W_enc[j * d + j] = 1.0f;
        s->W_enc[(d + j) * d + j] = -1.0f;
        s->W_dec[j * d + j] = 1.0f;
        s->W_dec[(d + j) * d + j] = -1.0f;
    }
    snprintf(s->meta.hook_name, sizeof s->meta.hook_name, "%s", hook);
    return s;
}

static struct sae *random_sae(size_t d, size_t n, size_t k, float scale, const char *hook)
{
    struct sae *s = sae_new(SAE_TOPK, d, n, k);
    struct rng g;
    rng_seed(&g, 7);
    for (size_t i = 0; i < n * d; i++) s->W_enc[i] = rng_normal(&g) * scale;
    for (size_t i = 0; i < n * d; i++) s->W_dec[i] = rng_normal(&g) * scale;
    for (size_t i = 0; i < n; i++) s->b_enc[i] = rng_normal(&g) * 0.1f;
    for (size_t i = 0; i < d; i++) s->b_dec[i] = rng_normal(&g) * 0.1f;
    sae_normalize_decoder(s);
    snprintf(s->meta.hook_name, sizeof s->meta.hook_name, "%s", hook);
    return s;
}

static void check_all(struct model *m, const struct eval_data *data, const char *hook,
                      size_t batch_seqs, bool trained)
{
    const size_t d = model_config(m)->dim;
    struct eval_opts o;
    eval_opts_default(&o);
    o.batch_seqs = batch_seqs;
    struct eval_metrics em;

    /* exact reconstruction */
    struct sae *id = identity_sae(d, hook);
    CHECK_EQ_INT(eval_metrics_run(m, id, data, &o, &em, NULL), 0);
    CHECK_NEAR(em.fvu, 0.0, 1e-12, 0);
    CHECK_NEAR(em.explained_variance, 1.0, 1e-12, 0);
    CHECK_NEAR(em.ce_sae, em.ce_clean, 1e-9, 0);
    CHECK_NEAR(em.loss_recovered_zero, 1.0, 1e-9, 0);
    CHECK_NEAR(em.loss_recovered_mean, 1.0, 1e-9, 0);
    CHECK_NEAR(em.kl_sae, 0.0, 1e-9, 0);
    CHECK_NEAR(em.kl_score_zero, 1.0, 1e-9, 0);
    if (trained) CHECK(em.ce_zero > em.ce_clean); /* a real model needs its residual */
    CHECK(em.n_tokens > 0 && em.n_pred > 0);
    sae_destroy(&id);

    /* all zeros: x_hat = 0, exactly zero ablation */
    struct sae *zero = sae_new(SAE_TOPK, d, 16, 4);
    snprintf(zero->meta.hook_name, sizeof zero->meta.hook_name, "%s", hook);
    CHECK_EQ_INT(eval_metrics_run(m, zero, data, &o, &em, NULL), 0);
    CHECK_NEAR(em.ce_sae, em.ce_zero, 1e-12, 0);
    CHECK_NEAR(em.loss_recovered_zero, 0.0, 1e-12, 0);
    CHECK_NEAR(em.kl_score_zero, 0.0, 1e-12, 0);
    CHECK_EQ_INT(em.n_dead, 16);
    CHECK_NEAR(em.dead_frac, 1.0, 0, 0);
    CHECK_NEAR(em.l0, 0.0, 0, 0);
    sae_destroy(&zero);

    /* random SAE against the direct computation */
    struct sae *rs = random_sae(d, 96, 8, 1.0f / sqrtf((float)d), hook);
    float *dens = malloc(rs->n * sizeof *dens);
    CHECK_EQ_INT(eval_metrics_run(m, rs, data, &o, &em, dens), 0);
    struct ref_result ref;
    reference(m, rs, data, hook, &ref);
    CHECK_NEAR(em.fvu, ref.fvu, 1e-6, 1e-4);
    CHECK_NEAR(em.l0, ref.l0, 1e-9, 1e-6);
    CHECK_EQ_INT(em.n_dead, ref.dead);
    CHECK_NEAR(em.ce_clean, ref.ce[0], 1e-6, 1e-5);
    CHECK_NEAR(em.ce_sae, ref.ce[1], 1e-6, 1e-4);
    CHECK_NEAR(em.ce_zero, ref.ce[2], 1e-6, 1e-5);
    CHECK_NEAR(em.ce_mean, ref.ce[3], 1e-6, 1e-4);
    CHECK_NEAR(em.kl_sae, ref.kl[1], 1e-6, 1e-3);
    CHECK_NEAR(em.kl_zero, ref.kl[2], 1e-6, 1e-4);
    CHECK_NEAR(em.kl_mean, ref.kl[3], 1e-6, 1e-3);
    CHECK_NEAR(em.loss_recovered_zero, (ref.ce[2] - ref.ce[1]) / (ref.ce[2] - ref.ce[0]), 1e-4,
               1e-3);
    CHECK_NEAR(em.kl_score_mean, (ref.kl[3] - ref.kl[1]) / ref.kl[3], 1e-4, 1e-3);
    double l0_from_density = 0;
    for (size_t i = 0; i < rs->n; i++) l0_from_density += dens[i];
    CHECK_NEAR(l0_from_density, em.l0, 1e-5, 1e-5);

    /* the report renders */
    struct buf b;
    buf_init(&b, 1 << 20);
    CHECK_EQ_INT(eval_metrics_table(&em, &b), 0);
    CHECK(strstr(b.data, "loss recovered (zero)") != NULL);
    buf_reset(&b);
    CHECK_EQ_INT(eval_metrics_json(&em, &b), 0);
    CHECK(b.data[0] == '{' && b.data[b.len - 1] == '}' && strstr(b.data, "\"fvu\":"));
    buf_fini(&b);
    free(dens);
    sae_destroy(&rs);

    /* errors: bad hook, wrong width */
    struct sae *bad = sae_new(SAE_TOPK, d + 1, 8, 2);
    snprintf(bad->meta.hook_name, sizeof bad->meta.hook_name, "%s", hook);
    CHECK_EQ_INT(eval_metrics_run(m, bad, data, &o, &em, NULL), SF_EINVAL);
    sae_destroy(&bad);
    bad = sae_new(SAE_TOPK, d, 8, 2);
    snprintf(bad->meta.hook_name, sizeof bad->meta.hook_name, "blocks.99.hook_resid_post");
    CHECK_EQ_INT(eval_metrics_run(m, bad, data, &o, &em, NULL), SF_EINVAL);
    sae_destroy(&bad);
}

static void test_random_model(void)
{
    struct model_config c;
    memset(&c, 0, sizeof c);
    c.arch = MODEL_ARCH_LLAMA;
    c.dim = 32;
    c.hidden_dim = 64;
    c.n_layers = 3;
    c.n_heads = c.n_kv_heads = 4;
    c.head_dim = 8;
    c.vocab_size = 67;
    c.max_seq_len = 64;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.rope_dim = 8;
    c.bos_id = 1;
    c.eos_id = 2;
    struct model *m;
    CHECK_EQ_INT(model_new_random(&c, 3, 0.3f, &m), 0);
    if (!m) return;
    /* documents of random ids, each starting with BOS */
    struct rng g;
    rng_seed(&g, 11);
    enum { N_DOCS = 12 };
    int32_t *docs[N_DOCS];
    size_t lens[N_DOCS];
    for (size_t i = 0; i < N_DOCS; i++) {
        lens[i] = 10 + rng_below(&g, 60);
        docs[i] = malloc(lens[i] * sizeof(int32_t));
        docs[i][0] = 1;
        for (size_t j = 1; j < lens[i]; j++) docs[i][j] = 3 + (int32_t)rng_below(&g, 64);
    }
    struct eval_data *data;
    CHECK_EQ_INT(
        eval_data_from_docs((const int32_t *const *)docs, lens, N_DOCS, 24, 0, 1, NULL, 67, &data),
        0);
    size_t total = 0;
    for (size_t i = 0; i < N_DOCS; i++) total += lens[i];
    CHECK(data->n_tokens >= total); /* plus a BOS per window that starts mid-document */
    for (size_t w = 0; w < data->n_windows; w++) {
        CHECK(data->len[w] >= 2 && data->len[w] <= 24);
        CHECK(data->tokens[w * 24] == 1);
    }
    check_all(m, data, "blocks.1.hook_resid_post", 3, false);
    check_all(m, data, "blocks.2.hook_mlp_out", 5, false);
    eval_data_destroy(&data);
    /* bad ids are refused */
    int32_t badd[3] = {1, 99, 4};
    const int32_t *bd[1] = {badd};
    size_t bl = 3;
    CHECK_EQ_INT(eval_data_from_docs(bd, &bl, 1, 24, 0, 1, NULL, 67, &data), SF_EINVAL);
    CHECK(data == NULL);
    for (size_t i = 0; i < N_DOCS; i++) free(docs[i]);
    model_destroy(&m);
}

static void test_stories(void)
{
    const char *md = test_models_dir(), *cd = test_corpus_dir();
    char path[4096], corpus[4096];
    if (!md || !cd) {
        printf("stories260K or the corpus absent (SAEFLOW_MODELS / SAEFLOW_CORPUS): skipped\n");
        return;
    }
    snprintf(path, sizeof path, "%s/stories260K/stories260K.bin", md);
    snprintf(corpus, sizeof corpus, "%s/tinystories-sample.jsonl", cd);
    struct model *m;
    if (model_load(path, NULL, &m) != 0) {
        printf("stories260K not loadable at %s: skipped\n", path);
        return;
    }
    struct eval_data_opts dopts;
    eval_data_opts_default(&dopts);
    dopts.context = 64;
    dopts.first_line = 2317; /* the validation split */
    dopts.max_tokens = 1500;
    struct eval_data *data;
    CHECK_EQ_INT(eval_data_from_jsonl(model_tokenizer(m), corpus, &dopts, &data), 0);
    if (data) {
        CHECK(data->n_tokens >= 1500 && data->n_tokens < 1500 + 64);
        CHECK(data->special[1]); /* BOS */
        check_all(m, data, "blocks.2.hook_resid_post", 4, true);
        eval_data_destroy(&data);
    }
    model_destroy(&m);
}

int main(void)
{
    log_init("test_eval_metrics", LOG_LOGFMT, LOG_WARN);
    test_random_model();
    test_stories();
    return check_exit();
}

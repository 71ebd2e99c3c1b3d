/* feature store and harvest:
 *   - every record type round-trips through its codec; every corrupted byte, every
 *     truncation and bad field values give SF_EFORMAT (never a crash);
 *   - harvesting a random SAE on a random model agrees with a direct computation:
 *     fires, max, sum, the top-20 activations (as a multiset), each example's
 *     per-token activations, histogram / interval / quantile counts summing to fires,
 *     logit effects (plain loop over W_U (w_norm * W_dec[i])) and decoder-cosine
 *     neighbours (plain loop);
 *   - harvest_store writes complete features that read back equal through the writer
 *     and through a secondary reader; runs are numbered; lists and scans work;
 *     a reader cannot write; a second writer is refused. */
#include <ftw.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../support/check.h"
#include "eval/eval.h"
#include "eval/feature_store.h"
#include "eval/harvest.h"

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

/* ---- codecs ---- */

typedef int (*decode_fn)(const void *, size_t, void *);
typedef void (*fini_fn)(void *);

/* Every single-byte corruption and every truncation must fail cleanly. */
static void corrupt_all(const struct buf *enc, decode_fn dec, fini_fn fini, void *scratch)
{
    uint8_t *copy = malloc(enc->len);
    int fails = 0;
    for (size_t i = 0; i < enc->len; i++) {
        memcpy(copy, enc->data, enc->len);
        copy[i] ^= 0x5a;
        if (dec(copy, enc->len, scratch) != SF_EFORMAT)
            fails++;
        else
            fini(scratch);
    }
    for (size_t n = 0; n < enc->len; n++)
        if (dec(enc->data, n, scratch) != SF_EFORMAT) fails++;
    CHECK_EQ_INT(fails, 0);
    free(copy);
}

static void test_codecs(void)
{
    log_set_level(LOG_OFF); /* corruption is logged on every attempt */
    struct buf b;
    buf_init(&b, 1 << 24);

    struct feature_sae s = {.d_in = 64,
                            .d_sae = 1024,
                            .k = 16,
                            .created_ms = 5,
                            .updated_ms = 7,
                            .latest_run = 3,
                            .step = 99,
                            .state = FEATURE_STATE_DONE};
    snprintf(s.sae_id, sizeof s.sae_id, "stories/l2@99");
    snprintf(s.model, sizeof s.model, "stories260K");
    snprintf(s.hook, sizeof s.hook, "blocks.2.hook_resid_post");
    snprintf(s.arch, sizeof s.arch, "topk");
    snprintf(s.source, sizeof s.source, "/tmp/x");
    s.metrics_json = strdup("{\"fvu\":0.1}");
    CHECK_EQ_INT(feature_sae_encode(&s, &b), 0);
    struct feature_sae s2;
    CHECK_EQ_INT(feature_sae_decode(b.data, b.len, &s2), 0);
    CHECK(!strcmp(s2.sae_id, s.sae_id) && !strcmp(s2.hook, s.hook) && s2.step == 99 &&
          s2.d_sae == 1024 && s2.state == FEATURE_STATE_DONE && s2.latest_run == 3 &&
          !strcmp(s2.metrics_json, s.metrics_json));
    feature_sae_fini(&s2);
    corrupt_all(&b, (decode_fn)feature_sae_decode, (fini_fn)feature_sae_fini, &s2);
    feature_sae_fini(&s);

    buf_reset(&b);
    struct feature_run_info r = {.run_id = 4,
                                 .started_ms = 1,
                                 .finished_ms = 2,
                                 .state = FEATURE_STATE_EVALUATING,
                                 .tokens = 1000,
                                 .features_done = 10,
                                 .n_features = 20};
    snprintf(r.sae_id, sizeof r.sae_id, "a");
    CHECK_EQ_INT(feature_run_encode(&r, &b), 0);
    struct feature_run_info r2;
    CHECK_EQ_INT(feature_run_decode(b.data, b.len, &r2), 0);
    CHECK(r2.run_id == 4 && r2.features_done == 10 && r2.metrics_json == NULL);
    feature_run_info_fini(&r2);
    corrupt_all(&b, (decode_fn)feature_run_decode, (fini_fn)feature_run_info_fini, &r2);
    r.features_done = 21; /* more done than exist */
    buf_reset(&b);
    CHECK_EQ_INT(feature_run_encode(&r, &b), 0);
    CHECK_EQ_INT(feature_run_decode(b.data, b.len, &r2), SF_EFORMAT);

    buf_reset(&b);
    uint32_t hist[4] = {5, 3, 1, 1};
    struct feature_bin iv[2] = {{0, 1, 8}, {1, 2, 2}}, q[2] = {{0, 0.5f, 5}, {0.5f, 2, 5}};
    struct feature_stats st = {.feature = 7,
                               .run_id = 2,
                               .n_tokens = 100,
                               .fires = 10,
                               .max_act = 2,
                               .sum_act = 9.5,
                               .n_hist = 4,
                               .hist = hist,
                               .n_intervals = 2,
                               .intervals = iv,
                               .n_quantiles = 2,
                               .quantiles = q};
    CHECK_EQ_INT(feature_stats_encode(&st, &b), 0);
    struct feature_stats st2;
    CHECK_EQ_INT(feature_stats_decode(b.data, b.len, &st2), 0);
    CHECK(st2.feature == 7 && st2.n_hist == 4 && st2.hist[1] == 3 && st2.n_intervals == 2 &&
          st2.intervals[1].count == 2 && st2.quantiles[0].hi == 0.5f);
    CHECK_NEAR(feature_stats_density(&st2), 0.1, 1e-12, 0);
    CHECK_NEAR(feature_stats_mean_act(&st2), 0.95, 1e-12, 0);
    feature_stats_fini(&st2);
    corrupt_all(&b, (decode_fn)feature_stats_decode, (fini_fn)feature_stats_fini, &st2);

    buf_reset(&b);
    uint32_t toks[3] = {1, 50, 60}, ends[3] = {0, 4, 9};
    float acts[3] = {0, 1.5f, 0.25f};
    char text[] = "Once upon";
    struct feature_example ex[2] = {{.group = 0,
                                     .act = 1.5f,
                                     .window = 3,
                                     .start = 0,
                                     .center = 1,
                                     .n_tok = 3,
                                     .tokens = toks,
                                     .acts = acts,
                                     .text = text,
                                     .text_len = 9,
                                     .text_end = ends},
                                    {.group = 1,
                                     .act = 0.25f,
                                     .window = 4,
                                     .start = 2,
                                     .center = 2,
                                     .n_tok = 3,
                                     .tokens = toks,
                                     .acts = acts,
                                     .text = text,
                                     .text_len = 9,
                                     .text_end = ends}};
    struct feature_examples fe = {.feature = 7, .kind = FEATURE_EX_INTERVAL, .n = 2, .ex = ex};
    CHECK_EQ_INT(feature_examples_encode(&fe, &b), 0);
    struct feature_examples fe2;
    CHECK_EQ_INT(feature_examples_decode(b.data, b.len, &fe2), 0);
    CHECK(fe2.n == 2 && fe2.kind == FEATURE_EX_INTERVAL && fe2.ex[1].window == 4 &&
          fe2.ex[0].tokens[1] == 50 && fe2.ex[0].acts[1] == 1.5f &&
          !strcmp(fe2.ex[0].text, "Once upon") && fe2.ex[1].text_end[2] == 9);
    feature_examples_fini(&fe2);
    corrupt_all(&b, (decode_fn)feature_examples_decode, (fini_fn)feature_examples_fini, &fe2);
    ex[0].center = 3; /* outside the window */
    buf_reset(&b);
    CHECK_EQ_INT(feature_examples_encode(&fe, &b), 0);
    CHECK_EQ_INT(feature_examples_decode(b.data, b.len, &fe2), SF_EFORMAT);
    ex[0].center = 1;
    ends[1] = 10; /* past the text */
    buf_reset(&b);
    CHECK_EQ_INT(feature_examples_encode(&fe, &b), 0);
    CHECK_EQ_INT(feature_examples_decode(b.data, b.len, &fe2), SF_EFORMAT);
    ends[1] = 4;

    buf_reset(&b);
    struct feature_logit top[2] = {{5, 1.5f, "cat"}, {6, 1.0f, " dog"}}, bot[1] = {{9, -2, "x"}};
    struct feature_logits fl = {.feature = 7, .n_top = 2, .n_bottom = 1, .top = top, .bottom = bot};
    CHECK_EQ_INT(feature_logits_encode(&fl, &b), 0);
    struct feature_logits fl2;
    CHECK_EQ_INT(feature_logits_decode(b.data, b.len, &fl2), 0);
    CHECK(fl2.n_top == 2 && !strcmp(fl2.top[1].piece, " dog") && fl2.bottom[0].value == -2);
    feature_logits_fini(&fl2);
    corrupt_all(&b, (decode_fn)feature_logits_decode, (fini_fn)feature_logits_fini, &fl2);

    buf_reset(&b);
    struct feature_neighbour nbs[2] = {{3, 0.9f}, {8, 0.5f}};
    struct feature_neighbours fn = {.feature = 7, .n = 2, .nb = nbs};
    CHECK_EQ_INT(feature_neighbours_encode(&fn, &b), 0);
    struct feature_neighbours fn2;
    CHECK_EQ_INT(feature_neighbours_decode(b.data, b.len, &fn2), 0);
    CHECK(fn2.n == 2 && fn2.nb[1].feature == 8 && fn2.nb[0].cosine == 0.9f);
    feature_neighbours_fini(&fn2);
    corrupt_all(&b, (decode_fn)feature_neighbours_decode, (fini_fn)feature_neighbours_fini, &fn2);
    /* a record of another type is refused */
    CHECK_EQ_INT(feature_stats_decode(b.data, b.len, &st2), SF_EFORMAT);

    CHECK_EQ_INT(feature_store_check_id("ok.id:1/x@2+y-z_"), 0);
    CHECK_EQ_INT(feature_store_check_id(""), SF_EINVAL);
    CHECK_EQ_INT(feature_store_check_id("bad id"), SF_EINVAL);
    char longid[200];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    CHECK_EQ_INT(feature_store_check_id(longid), SF_EINVAL);
    buf_fini(&b);
    log_set_level(LOG_WARN);
}

/* ---- harvest against a direct computation ---- */

struct direct {
    const struct sae *sae;
    const bool *special;
    size_t n, T;
    float *z;     /* (rows, n) dense codes of the current forward */
    size_t *rows; /* row index of each window's first token */
};

static int direct_hook(void *user, const struct model_act *a)
{
    struct direct *d = user;
    for (size_t i = 0; i < a->n_tokens; i++) {
        float *z = d->z + (d->T + i) * d->n;
        if (d->special[a->tokens[i]])
            memset(z, 0, d->n * sizeof *z);
        else
            sae_encode_ref(d->sae, a->x + i * a->d, z);
    }
    d->T += a->n_tokens;
    return 0;
}

static int cmp_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

struct fixture {
    struct model *m;
    struct sae *sae;
    struct eval_data *data;
};

static void fixture_make(struct fixture *fx)
{
    struct model_config c;
    memset(&c, 0, sizeof c);
    c.arch = MODEL_ARCH_LLAMA;
    c.dim = 16;
    c.hidden_dim = 32;
    c.n_layers = 2;
    c.n_heads = c.n_kv_heads = 2;
    c.head_dim = 8;
    c.vocab_size = 40;
    c.max_seq_len = 64;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.rope_dim = 8;
    c.bos_id = 1;
    c.eos_id = 2;
    CHECK_EQ_INT(model_new_random(&c, 5, 0.5f, &fx->m), 0);
    struct rng g;
    rng_seed(&g, 3);
    enum { N_DOCS = 20 };
    int32_t *docs[N_DOCS];
    size_t lens[N_DOCS];
    for (size_t i = 0; i < N_DOCS; i++) {
        lens[i] = 20 + rng_below(&g, 40);
        docs[i] = malloc(lens[i] * sizeof(int32_t));
        docs[i][0] = 1;
        for (size_t j = 1; j < lens[i]; j++) docs[i][j] = 3 + (int32_t)rng_below(&g, 37);
    }
    CHECK_EQ_INT(eval_data_from_docs((const int32_t *const *)docs, lens, N_DOCS, 48, 0, 1, NULL, 40,
                                     &fx->data),
                 0);
    for (size_t i = 0; i < N_DOCS; i++) free(docs[i]);
    fx->sae = sae_new(SAE_TOPK, 16, 48, 4);
    for (size_t i = 0; i < 48 * 16; i++) fx->sae->W_enc[i] = rng_normal(&g) * 0.3f;
    for (size_t i = 0; i < 48 * 16; i++) fx->sae->W_dec[i] = rng_normal(&g);
    for (size_t i = 0; i < 48; i++) fx->sae->b_enc[i] = rng_normal(&g) * 0.2f - 0.1f;
    fx->sae->b_enc[47] = -1000.0f; /* never fires */
    for (size_t j = 0; j < 16; j++) fx->sae->W_enc[47 * 16 + j] = 0;
    sae_normalize_decoder(fx->sae);
    snprintf(fx->sae->meta.hook_name, sizeof fx->sae->meta.hook_name, "blocks.1.hook_resid_post");
}

static void fixture_free(struct fixture *fx)
{
    sae_destroy(&fx->sae);
    eval_data_destroy(&fx->data);
    model_destroy(&fx->m);
}

static void test_harvest(struct fixture *fx, struct harvest **hv_out)
{
    struct harvest_opts o;
    harvest_opts_default(&o);
    o.batch_seqs = 3;
    o.n_top = 20;
    o.window = 12;
    o.window_before = 8;
    o.chunk_features = 10;
    struct harvest *hv;
    CHECK_EQ_INT(harvest_run(fx->m, fx->sae, fx->data, &o, &hv), 0);
    *hv_out = hv;
    if (!hv) return;
    const size_t n = fx->sae->n, d = fx->sae->d_in;
    const struct eval_data *data = fx->data;

    /* direct: dense codes of every token, window by window */
    struct direct dr = {.sae = fx->sae, .special = data->special, .n = n};
    dr.z = calloc(data->n_tokens * n, sizeof *dr.z);
    dr.rows = calloc(data->n_windows, sizeof *dr.rows);
    struct model_ctx *ctx = model_ctx_new(fx->m, 1, data->context);
    model_ctx_add_hook(ctx, "blocks.1.hook_resid_post", direct_hook, &dr);
    for (size_t w = 0; w < data->n_windows; w++) {
        dr.rows[w] = dr.T;
        struct model_seq s = {0, data->tokens + w * data->context, data->len[w]};
        model_ctx_reset_all(ctx);
        CHECK_EQ_INT(model_forward(ctx, &s, 1, MODEL_LOGITS_NONE, NULL), 0);
    }
    model_ctx_destroy(&ctx);
    uint64_t counted = 0;
    for (size_t w = 0; w < data->n_windows; w++)
        for (size_t p = 0; p < data->len[w]; p++)
            counted += !data->special[data->tokens[w * data->context + p]];
    CHECK_EQ_INT(harvest_tokens(hv), counted);

    struct feature_record *recs = calloc(n, sizeof *recs);
    CHECK_EQ_INT(harvest_build(hv, 9, 0, (uint32_t)n, recs), 0);
    float *col = malloc(dr.T * sizeof *col);
    size_t bad_top = 0, bad_ex = 0;
    for (size_t f = 0; f < n; f++) {
        const struct feature_stats *st = &recs[f].stats;
        uint64_t fires = 0;
        double sum = 0;
        float mx = 0;
        size_t nc = 0;
        for (size_t r = 0; r < dr.T; r++) {
            float a = dr.z[r * n + f];
            if (a > 0) {
                fires++;
                sum += a;
                mx = fmaxf(mx, a);
                col[nc++] = a;
            }
        }
        CHECK_EQ_INT(st->feature, f);
        CHECK_EQ_INT(st->run_id, 9);
        CHECK_EQ_INT(st->fires, fires);
        CHECK_NEAR(st->max_act, mx, 1e-5, 1e-5);
        CHECK_NEAR(st->sum_act, sum, 1e-4, 1e-5);
        uint64_t hs = 0, is = 0, qs = 0;
        for (size_t i = 0; i < st->n_hist; i++) hs += st->hist[i];
        for (size_t i = 0; i < st->n_intervals; i++) is += st->intervals[i].count;
        for (size_t i = 0; i < st->n_quantiles; i++) qs += st->quantiles[i].count;
        CHECK(hs == fires && is == fires && qs == fires);
        /* top examples: the largest activations, in order */
        qsort(col, nc, sizeof *col, cmp_desc);
        const struct feature_examples *top = &recs[f].examples[FEATURE_EX_TOP];
        CHECK_EQ_INT(top->n, SF_MIN(nc, (size_t)20));
        for (size_t i = 0; i < top->n; i++)
            if (fabsf(top->ex[i].act - col[i]) > 1e-5f * (1 + col[i])) bad_top++;
        /* every example's per-token activations equal the direct codes */
        for (int k = 0; k < FEATURE_EX_KINDS; k++) {
            const struct feature_examples *fe = &recs[f].examples[k];
            for (size_t i = 0; i < fe->n; i++) {
                const struct feature_example *e = &fe->ex[i];
                size_t r0 = dr.rows[e->window] + e->start;
                if (e->n_tok > 12 || e->acts[e->center] != e->act) {
                    if (bad_ex < 5)
                        fprintf(stderr, "k=%d f=%zu i=%zu ntok=%u center=%u act=%g at=%g\n", k, f,
                                i, e->n_tok, e->center, e->act, e->acts[e->center]);
                    bad_ex++;
                }
                for (size_t t = 0; t < e->n_tok; t++) {
                    if (fabsf(e->acts[t] - dr.z[(r0 + t) * n + f]) >
                        1e-4f * (1 + fabsf(dr.z[(r0 + t) * n + f]))) {
                        if (bad_ex < 5)
                            fprintf(stderr,
                                    "k=%d f=%zu i=%zu t=%zu w=%llu start=%u got=%g want=%g\n", k, f,
                                    i, t, (unsigned long long)e->window, e->start, e->acts[t],
                                    dr.z[(r0 + t) * n + f]);
                        bad_ex++;
                    }
                    if (e->tokens[t] !=
                        (uint32_t)data->tokens[e->window * data->context + e->start + t])
                        bad_ex++;
                }
                if (k == FEATURE_EX_INTERVAL) {
                    const struct feature_bin *b = &st->intervals[e->group];
                    float tol = 1e-5f * (1 + e->act);
                    if (e->act < b->lo - tol || e->act > b->hi + tol) bad_ex++;
                }
            }
            if (k > 0) CHECK(fe->n <= 30);
        }
        if (f == 47) {
            CHECK_EQ_INT(fires, 0);
            CHECK_EQ_INT(top->n, 0);
        }
        /* logit effects: W_U (w_norm * W_dec[f]) */
        const float *W_U = model_unembed(fx->m), *wn = model_final_norm_weight(fx->m);
        float lv[40];
        for (size_t v = 0; v < 40; v++) {
            double s = 0;
            for (size_t j = 0; j < d; j++)
                s += (double)W_U[v * d + j] * wn[j] * fx->sae->W_dec[f * d + j];
            lv[v] = (float)s;
        }
        const struct feature_logits *fl = &recs[f].logits;
        CHECK_EQ_INT(fl->n_top, 10);
        float lmax = -INFINITY, lmin = INFINITY;
        for (size_t v = 0; v < 40; v++) lmax = fmaxf(lmax, lv[v]), lmin = fminf(lmin, lv[v]);
        CHECK_NEAR(fl->top[0].value, lmax, 1e-4, 1e-4);
        CHECK_NEAR(fl->bottom[0].value, lmin, 1e-4, 1e-4);
        for (size_t i = 0; i < fl->n_top; i++) {
            CHECK_NEAR(fl->top[i].value, lv[fl->top[i].token], 1e-4, 1e-4);
            if (i) CHECK(fl->top[i].value <= fl->top[i - 1].value);
        }
        /* neighbours: the most similar other decoder row */
        double best = -2;
        size_t bi = 0;
        for (size_t g = 0; g < n; g++) {
            if (g == f) continue;
            double s = 0;
            for (size_t j = 0; j < d; j++)
                s += (double)fx->sae->W_dec[f * d + j] * fx->sae->W_dec[g * d + j];
            if (s > best) best = s, bi = g;
        }
        CHECK_EQ_INT(recs[f].neighbours.n, 5);
        CHECK_EQ_INT(recs[f].neighbours.nb[0].feature, bi);
        CHECK_NEAR(recs[f].neighbours.nb[0].cosine, best, 1e-4, 1e-4);
    }
    CHECK_EQ_INT(bad_top, 0);
    CHECK_EQ_INT(bad_ex, 0);
    for (size_t f = 0; f < n; f++) feature_record_fini(&recs[f]);
    free(recs);
    free(col);
    free(dr.z);
    free(dr.rows);
}

/* What the store keeps is the same whatever the chunking: logit effects and neighbours are
 * chosen and valued exactly (harvest.c select_exact), so building the records in one call, a
 * feature at a time, or in chunks that do not divide the count gives identical bytes. This is
 * a property saeflow promises (a re-harvest reproduces the store), so it is compared bitwise. */
static void encode_record(const struct feature_record *r, struct buf *x)
{
    feature_stats_encode(&r->stats, x);
    for (int k = 0; k < FEATURE_EX_KINDS; k++) feature_examples_encode(&r->examples[k], x);
    feature_logits_encode(&r->logits, x);
    feature_neighbours_encode(&r->neighbours, x);
}

static void test_chunking(struct harvest *hv)
{
    const size_t n = harvest_n_features(hv);
    const uint32_t chunks[] = {1, 7, 64, (uint32_t)n};
    struct feature_record *all = calloc(n, sizeof *all), *part = calloc(n, sizeof *part);
    CHECK_EQ_INT(harvest_build(hv, 1, 0, (uint32_t)n, all), 0);
    size_t differ = 0;
    for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++) {
        for (uint32_t f0 = 0; f0 < n; f0 += chunks[c]) {
            uint32_t f1 = (uint32_t)SF_MIN(n, (size_t)f0 + chunks[c]);
            CHECK_EQ_INT(harvest_build(hv, 1, f0, f1, part + f0), 0);
        }
        for (size_t f = 0; f < n; f++) {
            struct buf x, y;
            buf_init(&x, 1 << 24);
            buf_init(&y, 1 << 24);
            encode_record(&all[f], &x);
            encode_record(&part[f], &y);
            if (x.len != y.len || memcmp(x.data, y.data, x.len)) differ++;
            buf_fini(&x);
            buf_fini(&y);
            feature_record_fini(&part[f]);
        }
    }
    CHECK_EQ_INT(differ, 0);
    for (size_t f = 0; f < n; f++) feature_record_fini(&all[f]);
    free(all);
    free(part);
}

/* ---- the store ---- */

static int count_stats(void *ud, const struct feature_stats *s)
{
    (void)s;
    (*(size_t *)ud)++;
    return 0;
}

static int count_runs(void *ud, const struct feature_run_info *r)
{
    size_t *n = ud;
    if (r->state == FEATURE_STATE_DONE) (*n)++;
    return 0;
}

static int find_sae(void *ud, const struct feature_sae *s)
{
    if (!strcmp(s->sae_id, "rand/l1")) (*(size_t *)ud)++;
    return 0;
}

static void records_equal(const struct feature_record *a, const struct feature_record *b)
{
    struct buf x, y;
    buf_init(&x, 1 << 24);
    buf_init(&y, 1 << 24);
    feature_stats_encode(&a->stats, &x);
    feature_stats_encode(&b->stats, &y);
    for (int k = 0; k < FEATURE_EX_KINDS; k++) {
        feature_examples_encode(&a->examples[k], &x);
        feature_examples_encode(&b->examples[k], &y);
    }
    feature_logits_encode(&a->logits, &x);
    feature_logits_encode(&b->logits, &y);
    feature_neighbours_encode(&a->neighbours, &x);
    feature_neighbours_encode(&b->neighbours, &y);
    CHECK(x.len == y.len && memcmp(x.data, y.data, x.len) == 0);
    buf_fini(&x);
    buf_fini(&y);
}

static void test_store(struct harvest *hv)
{
    char root[256], path[300], sec[300];
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/sf_fstore_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) return;
    snprintf(path, sizeof path, "%s/db", root);
    snprintf(sec, sizeof sec, "%s/sec", root);
    struct feature_store *rd = NULL, *fs = NULL;
    CHECK_EQ_INT(feature_store_open_reader(&rd, path, sec), SF_NOTFOUND);
    CHECK_EQ_INT(feature_store_open(&fs, path), 0);
    CHECK(feature_store_is_writer(fs));
    struct feature_store *fs2 = NULL;
    log_set_level(LOG_OFF);
    CHECK_EQ_INT(feature_store_open(&fs2, path), SF_ESTATE);
    log_set_level(LOG_WARN);
    CHECK_EQ_INT(feature_store_open_reader(&rd, path, NULL), 0);

    struct harvest_store_info si = {.sae_id = "rand/l1",
                                    .model = "random",
                                    .source = "mem",
                                    .dataset = "docs",
                                    .metrics_json = "{\"fvu\":0.5}",
                                    .step = 12};
    struct feature_run_info run;
    CHECK_EQ_INT(harvest_store(hv, fs, &si, &run, NULL, NULL), 0);
    CHECK_EQ_INT(run.run_id, 1);
    CHECK_EQ_INT(run.features_done, harvest_n_features(hv));
    CHECK_EQ_INT(harvest_store(hv, fs, &si, &run, NULL, NULL), 0);
    CHECK_EQ_INT(run.run_id, 2);

    /* the reader sees nothing new until it catches up */
    struct feature_sae s;
    CHECK_EQ_INT(feature_store_get_sae(rd, "rand/l1", &s), SF_NOTFOUND);
    CHECK_EQ_INT(feature_store_catch_up(rd), 0);
    struct feature_store *views[2] = {fs, rd};
    size_t n = harvest_n_features(hv);
    struct feature_record *want = calloc(n, sizeof *want);
    CHECK_EQ_INT(harvest_build(hv, 2, 0, (uint32_t)n, want), 0);
    for (int v = 0; v < 2; v++) {
        struct feature_store *x = views[v];
        CHECK_EQ_INT(feature_store_get_sae(x, "rand/l1", &s), 0);
        CHECK(s.state == FEATURE_STATE_DONE && s.latest_run == 2 && s.step == 12 && s.d_sae == n &&
              !strcmp(s.hook, "blocks.1.hook_resid_post") && s.metrics_json &&
              !strcmp(s.metrics_json, "{\"fvu\":0.5}"));
        feature_sae_fini(&s);
        for (uint32_t f = 0; f < n; f++) {
            struct feature_record got;
            CHECK_EQ_INT(feature_store_get_feature(x, "rand/l1", f, &got), 0);
            records_equal(&got, &want[f]);
            feature_record_fini(&got);
        }
        struct feature_record none;
        CHECK_EQ_INT(feature_store_get_feature(x, "rand/l1", (uint32_t)n, &none), SF_NOTFOUND);
        CHECK_EQ_INT(feature_store_get_feature(x, "other", 0, &none), SF_NOTFOUND);
        size_t cnt = 0;
        CHECK_EQ_INT(feature_store_scan_stats(x, "rand/l1", 0, count_stats, &cnt), 0);
        CHECK_EQ_INT(cnt, n);
        cnt = 0;
        CHECK_EQ_INT(feature_store_scan_stats(x, "rand/l1", 40, count_stats, &cnt), 0);
        CHECK_EQ_INT(cnt, n - 40);
        cnt = 0;
        CHECK_EQ_INT(feature_store_list_runs(x, "rand/l1", count_runs, &cnt), 0);
        CHECK_EQ_INT(cnt, 2);
        cnt = 0;
        CHECK_EQ_INT(feature_store_list_saes(x, find_sae, &cnt), 0);
        CHECK_EQ_INT(cnt, 1);
        struct feature_run_info ri;
        CHECK_EQ_INT(feature_store_get_run(x, "rand/l1", 1, &ri), 0);
        CHECK(ri.state == FEATURE_STATE_DONE && ri.features_done == n);
        feature_run_info_fini(&ri);
    }
    for (size_t f = 0; f < n; f++) feature_record_fini(&want[f]);
    free(want);
    /* readers cannot write */
    log_set_level(LOG_OFF);
    struct feature_sae w = {0};
    snprintf(w.sae_id, sizeof w.sae_id, "x");
    CHECK_EQ_INT(feature_store_put_sae(rd, &w), SF_ESTATE);
    log_set_level(LOG_WARN);
    feature_store_close(&rd);
    feature_store_close(&fs);
    CHECK(rd == NULL && fs == NULL);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* SAE identity: the fingerprint round-trips, and feature_store_check_sae tells the
 * same SAE, another SAE, an absent id and an older record without a fingerprint
 * apart. */
static void test_sae_identity(void)
{
    char root[256], path[300];
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/sf_fident_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) return;
    snprintf(path, sizeof path, "%s/db", root);
    struct feature_store *fs = NULL;
    CHECK_EQ_INT(feature_store_open(&fs, path), 0);
    if (!fs) return;
    struct feature_sae s = {.d_in = 64, .d_sae = 128, .k = 8, .fingerprint = 0x1234abcdULL};
    snprintf(s.sae_id, sizeof s.sae_id, "a");
    snprintf(s.hook, sizeof s.hook, "blocks.2.hook_resid_post");
    snprintf(s.arch, sizeof s.arch, "topk");
    CHECK_EQ_INT(feature_store_put_sae(fs, &s), 0);
    struct feature_sae got;
    CHECK_EQ_INT(feature_store_get_sae(fs, "a", &got), 0);
    CHECK(got.fingerprint == 0x1234abcdULL);
    feature_sae_fini(&got);
    char why[512];
    struct feature_sae want = s;
    CHECK_EQ_INT(feature_store_check_sae(fs, "a", &want, why, sizeof why), 0);
    want.fingerprint = 0x999;
    CHECK_EQ_INT(feature_store_check_sae(fs, "a", &want, why, sizeof why), FEATURE_SAE_OTHER);
    CHECK(strstr(why, "different SAE") != NULL);
    CHECK_EQ_INT(feature_store_check_sae(fs, "b", &want, why, sizeof why), SF_NOTFOUND);
    /* a record written before fingerprints: same shape -> unverified, else other */
    s.fingerprint = 0;
    snprintf(s.sae_id, sizeof s.sae_id, "old");
    CHECK_EQ_INT(feature_store_put_sae(fs, &s), 0);
    CHECK_EQ_INT(feature_store_check_sae(fs, "old", &want, why, sizeof why),
                 FEATURE_SAE_UNVERIFIED);
    want.d_sae = 256;
    CHECK_EQ_INT(feature_store_check_sae(fs, "old", &want, why, sizeof why), FEATURE_SAE_OTHER);
    feature_store_close(&fs);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    CHECK(system(cmd) == 0);
}

int main(void)
{
    log_init("test_feature_store", LOG_LOGFMT, LOG_WARN);
    test_codecs();
    test_sae_identity();
    struct fixture fx = {0};
    fixture_make(&fx);
    struct harvest *hv = NULL;
    if (fx.m && fx.data) test_harvest(&fx, &hv);
    if (hv) test_chunking(hv);
    if (hv) test_store(hv);
    harvest_destroy(&hv);
    fixture_free(&fx);
    return check_exit();
}

/* `saeflow generate --sae DIR --steer FEATURE=STRENGTH[:add|clamp|ablate] ...`: steered
 * generation. For each of --samples samples (seeds seed, seed+1, ...), prints the
 * unsteered and the steered continuation generated with the same seed, one after the
 * other under "=== seed S unsteered ===" / "=== seed S steered (specs) ===" headers.
 * Steering (common/steer) applies at the SAE's hook at every position, prompt and
 * generated tokens alike; BOS is left alone unless --steer-bos.
 *
 * Strengths ending in `x` are multiples of the feature's max activation, read from the
 * feature store (--store DIR --sae-id ID). cmd_generate hands over to this file when
 * --sae or --steer is given. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/core.h"
#include "eval/feature_store.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "sae/sae_io.h"
#include "steer/steer.h"
#include "tensor/tensor.h"

#define GEN_MAX_SPECS 64

bool cli_wants_steering(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) break;
        if (!strncmp(argv[i], "--sae", 5) && (argv[i][5] == '\0' || argv[i][5] == '=')) return true;
        if (!strncmp(argv[i], "--steer", 7) && (argv[i][7] == '\0' || argv[i][7] == '='))
            return true;
    }
    return false;
}

/* Every --steer value (repeatable; each may hold a comma-separated list). */
static int collect_specs(int argc, char **argv, struct steer_spec *specs, size_t *n)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = NULL;
        if (!strcmp(a, "--")) break;
        if (!strcmp(a, "--steer"))
            v = i + 1 < argc ? argv[++i] : NULL;
        else if (!strncmp(a, "--steer=", 8))
            v = a + 8;
        else
            continue;
        if (!v) {
            fprintf(stderr,
                    "saeflow generate: --steer needs FEATURE=STRENGTH[:add|clamp|ablate]\n");
            return SF_EINVAL;
        }
        int rc = steer_spec_parse_list(v, specs, GEN_MAX_SPECS, n);
        if (rc == SF_ERANGE) {
            fprintf(stderr, "saeflow generate: at most %d steering specs\n", GEN_MAX_SPECS);
            return rc;
        }
        if (rc) {
            fprintf(stderr,
                    "saeflow generate: bad steering spec '%s' (want FEATURE=STRENGTH[x]"
                    "[:add|clamp|ablate], e.g. 123=8, 123=4x:clamp, 123:ablate)\n",
                    v);
            return rc;
        }
    }
    return 0;
}

/* Resolves `x` strengths from the feature store's max activations. */
static int resolve_relative(struct steer_spec *specs, size_t n, const char *store, const char *id)
{
    bool any = false;
    for (size_t i = 0; i < n; i++) any |= specs[i].relative;
    if (!any) return 0;
    if (!*store || !*id) {
        fprintf(stderr, "saeflow generate: strengths in units of max activation ('x') need "
                        "--store DIR and --sae-id ID\n");
        return SF_EINVAL;
    }
    struct feature_store *fs = NULL;
    int rc = feature_store_open_reader(&fs, store, NULL);
    if (rc) {
        fprintf(stderr, "saeflow generate: cannot open the feature store %s (%s)\n", store,
                sf_strerror(rc));
        return rc < 0 ? rc : SF_EINVAL;
    }
    for (size_t i = 0; i < n && !rc; i++) {
        if (!specs[i].relative) continue;
        struct feature_stats st;
        memset(&st, 0, sizeof st);
        int g = feature_store_get_stats(fs, id, specs[i].feature, &st);
        if (g == 0 && steer_spec_resolve(&specs[i], st.max_act) == 0) {
            log_info("steer_resolved", "feature=%u max_act=%.6g value=%.6g", specs[i].feature,
                     (double)st.max_act, (double)specs[i].value);
        } else {
            fprintf(stderr,
                    "saeflow generate: no usable max activation for feature %u of %s in %s\n",
                    specs[i].feature, id, store);
            rc = SF_EINVAL;
        }
        if (g == 0) feature_stats_fini(&st);
    }
    feature_store_close(&fs);
    return rc;
}

static char **fix_short_flags(int argc, char **argv)
{
    char **v = calloc((size_t)argc + 1, sizeof *v);
    if (!v) return NULL;
    for (int i = 0; i < argc; i++) v[i] = !strcmp(argv[i], "-n") ? "--n" : argv[i];
    return v;
}

static void print_sample(const struct tokenizer *tok, const int32_t *prompt, size_t n_prompt,
                         const int32_t *gen, size_t n_gen, struct buf *text)
{
    buf_reset(text);
    int32_t prev = -1;
    for (size_t i = 0; i < n_prompt + n_gen; i++) {
        int32_t id = i < n_prompt ? prompt[i] : gen[i - n_prompt];
        tokenizer_decode_piece(tok, prev, id, text);
        prev = id;
    }
    fwrite(text->data ? text->data : "", 1, text->len, stdout);
    printf("\n");
}

/* ---- --measure: concept presence and fluency (REFERENCES.md §5) ----------------------
 * Each sample (prompt + generated tokens) is run again through the UNSTEERED model:
 *   ppl     = exp(mean -log p(token)) over the generated tokens (fluency)
 *   fire    = share of generated tokens on which a steered feature (add / clamp specs)
 *             is active when the hooked activation is re-encoded with the SAE
 *   act     = mean activation of those features over the generated tokens */
struct measure {
    struct model_ctx *c; /* 1 slot, a capture hook, no steering */
    const struct sae *sae;
    float *x; /* (max_len, d) captured */
    size_t rows, cap_rows;
    float *lp; /* (max_len) */
    uint32_t *idx;
    float *val;
    uint32_t *cnt;
    size_t max_active;
};

static int measure_hook(void *user, const struct model_act *act)
{
    struct measure *ms = user;
    if (ms->rows + act->n_tokens > ms->cap_rows || act->d != ms->sae->d_in) return SF_ERANGE;
    memcpy(ms->x + ms->rows * act->d, act->x, act->n_tokens * act->d * sizeof *act->x);
    ms->rows += act->n_tokens;
    return 0;
}

static int measure_init(struct measure *ms, const struct model *m, const struct sae *sae,
                        const char *hook, size_t max_len)
{
    memset(ms, 0, sizeof *ms);
    ms->sae = sae;
    ms->cap_rows = max_len;
    ms->max_active = sae->arch == SAE_TOPK ? SF_MIN(sae->k, sae->n) : SF_MIN(sae->n, (size_t)256);
    ms->c = model_ctx_new(m, 1, max_len);
    ms->x = malloc(max_len * sae->d_in * sizeof *ms->x);
    ms->lp = malloc(max_len * sizeof *ms->lp);
    ms->idx = malloc(max_len * ms->max_active * sizeof *ms->idx);
    ms->val = malloc(max_len * ms->max_active * sizeof *ms->val);
    ms->cnt = malloc(max_len * sizeof *ms->cnt);
    if (!ms->c || !ms->x || !ms->lp || !ms->idx || !ms->val || !ms->cnt) return SF_ENOMEM;
    return model_ctx_add_hook(ms->c, hook, measure_hook, ms);
}

static void measure_fini(struct measure *ms)
{
    model_ctx_destroy(&ms->c);
    free(ms->x);
    free(ms->lp);
    free(ms->idx);
    free(ms->val);
    free(ms->cnt);
}

struct measured {
    double ppl, fire, act;
};

static int measure_sample(struct measure *ms, const int32_t *prompt, size_t np, const int32_t *gen,
                          size_t ng, const struct steer_spec *specs, size_t ns, int32_t skip,
                          struct measured *out)
{
    memset(out, 0, sizeof *out);
    size_t n = np + ng;
    if (ng < 2 || n > ms->cap_rows) return SF_NOTFOUND; /* too short to say anything */
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
    }
    free(seq);
    return rc;
}

int cmd_generate_steer(int argc, char **argv)
{
    char *model_path = NULL, *tok_path = NULL, *prompt = NULL, *sae_path = NULL, *hook = NULL;
    char *steer_last = NULL, *store = NULL, *sae_id = NULL;
    int64_t n = 0, top_k = 0, seed = 0, threads = 0, samples = 0;
    double temperature = 0, top_p = 0;
    bool no_bos = false, no_eos_stop = false, steer_bos = false, steered_only = false;
    bool measure = false;
    const struct config_opt opts[] = {
        {"model", CFG_STRING, &model_path, NULL, 0, -1, "model: .bin, .gguf, or a HF directory"},
        {"tokenizer", CFG_STRING, &tok_path, NULL, 0, -1, "tokenizer .bin for llama2.c models"},
        {"prompt", CFG_STRING, &prompt, NULL, 0, -1, "text to continue (default: from BOS)"},
        {"n", CFG_INT, &n, "256", 1, 1e7, "tokens to generate (also -n)"},
        {"temperature", CFG_DOUBLE, &temperature, "1.0", 0, 100, "0 = greedy"},
        {"top-p", CFG_DOUBLE, &top_p, "0.9", 0, 1, "nucleus mass (1 = off)"},
        {"top-k", CFG_INT, &top_k, "0", 0, 1e9, "keep the k most likely (0 = off)"},
        {"seed", CFG_INT, &seed, "0", 0, 9.2e18, "sampling seed (0 = from the clock)"},
        {"threads", CFG_INT, &threads, "0", 0, 1024, "CPU threads (0 = default)"},
        {"no-bos", CFG_BOOL, &no_bos, "false", 0, -1, "do not prepend BOS"},
        {"ignore-eos", CFG_BOOL, &no_eos_stop, "false", 0, -1, "keep going past EOS/BOS"},
        {"sae", CFG_STRING, &sae_path, NULL, 0, -1, "SAE directory whose features steer"},
        {"hook", CFG_STRING, &hook, NULL, 0, -1, "hook point (default: the SAE's)"},
        {"steer", CFG_STRING, &steer_last, NULL, 0, -1,
         "FEATURE=STRENGTH[x][:add|clamp|ablate], repeatable or comma-separated"},
        {"samples", CFG_INT, &samples, "1", 1, 4096, "samples, seeds seed..seed+samples-1"},
        {"steer-bos", CFG_BOOL, &steer_bos, "false", 0, -1, "steer the BOS position too"},
        {"steered-only", CFG_BOOL, &steered_only, "false", 0, -1, "skip the unsteered runs"},
        {"measure", CFG_BOOL, &measure, "false", 0, -1,
         "per sample: perplexity under the unsteered model, steered features re-encoded"},
        {"store", CFG_STRING, &store, NULL, 0, -1, "feature store (for 'x' strengths)"},
        {"sae-id", CFG_STRING, &sae_id, NULL, 0, -1, "the SAE's id in the store"},
    };
    struct config cfg = {.service = "generate",
                         .usage = "saeflow generate --model PATH --sae DIR --steer F=S[:add|clamp|"
                                  "ablate] [--steer ...] [--prompt TEXT] [-n N] [--samples K] "
                                  "[--seed S]",
                         .opts = opts,
                         .n_opts = SF_ARRAY_LEN(opts)};
    struct steer_spec specs[GEN_MAX_SPECS];
    size_t n_specs = 0;
    char **av = fix_short_flags(argc, argv);
    if (!av) return 1;
    int rc = config_load(&cfg, argc, av);
    int ret = 2;
    struct model *m = NULL;
    struct model_ctx *c = NULL;
    struct sae *sae = NULL;
    struct steer *st = NULL;
    int32_t *ids = NULL, *out_u = NULL, *out_s = NULL;
    size_t *len_u = NULL, *len_s = NULL;
    const int32_t **prompts = NULL;
    size_t *plens = NULL;
    struct buf text;
    buf_init(&text, 1u << 24);
    struct measure ms;
    memset(&ms, 0, sizeof ms);
    if (rc == SF_EXIT) {
        ret = 0;
        goto done;
    }
    if (rc) goto done;
    log_set_level(cfg.log_level);
    if (!*model_path || !*sae_path || cfg.n_positional) {
        fprintf(stderr, "usage: %s\n", cfg.usage);
        goto done;
    }
    if (collect_specs(argc, av, specs, &n_specs) != 0) goto done;
    if (n_specs == 0) {
        fprintf(stderr, "saeflow generate: --sae given without --steer\n");
        goto done;
    }
    ret = 1;
    if (resolve_relative(specs, n_specs, store, sae_id) != 0) goto done;
    if (threads > 0) tensor_set_threads((int)threads);
    struct model_load_opts lo = {.tokenizer_path = *tok_path ? tok_path : NULL};
    if (model_load(model_path, &lo, &m) != 0) goto done;
    const struct tokenizer *tok = model_tokenizer(m);
    if (!tok) {
        fprintf(stderr, "saeflow generate: %s has no tokenizer; pass --tokenizer\n", model_path);
        goto done;
    }
    if ((rc = sae_io_load(sae_path, &sae)) != 0) {
        fprintf(stderr, "saeflow generate: cannot load SAE %s (%s)\n", sae_path, sf_strerror(rc));
        goto done;
    }
    st = steer_new(sae, specs, n_specs);
    if (!st) {
        fprintf(stderr, "saeflow generate: steering specs do not fit the SAE (%zu latents)\n",
                sae->n);
        goto done;
    }
    size_t n_ids = 0;
    bool bos = !no_bos && tokenizer_bos(tok) >= 0;
    if (tokenizer_encode_alloc(tok, prompt, strlen(prompt), bos, &ids, &n_ids) != 0) goto done;
    if (n_ids == 0) {
        fprintf(stderr, "saeflow generate: empty prompt and no BOS token to start from\n");
        goto done;
    }
    const struct model_config *mc = model_config(m);
    if (n_ids >= mc->max_seq_len) {
        fprintf(stderr, "saeflow generate: prompt (%zu tokens) fills the context (%zu)\n", n_ids,
                mc->max_seq_len);
        goto done;
    }
    size_t max_len = SF_MIN(mc->max_seq_len, n_ids + (size_t)n);
    size_t n_new = SF_MIN((size_t)n, max_len - n_ids), K = (size_t)samples;
    if (n_new < (size_t)n)
        fprintf(stderr,
                "saeflow generate: warning: the model's context is %zu tokens and the prompt "
                "takes %zu: generating at most %zu of the %lld tokens asked for\n",
                mc->max_seq_len, n_ids, n_new, (long long)n);
    c = model_ctx_new(m, K, max_len);
    out_u = calloc(K * n_new, sizeof *out_u);
    out_s = calloc(K * n_new, sizeof *out_s);
    len_u = calloc(K, sizeof *len_u);
    len_s = calloc(K, sizeof *len_s);
    prompts = calloc(K, sizeof *prompts);
    plens = calloc(K, sizeof *plens);
    if (!c || !out_u || !out_s || !len_u || !len_s || !prompts || !plens) goto done;
    for (size_t i = 0; i < K; i++) {
        prompts[i] = ids;
        plens[i] = n_ids;
    }
    if (!steer_bos) steer_set_skip_token(st, tokenizer_bos(tok));
    if (steer_install(st, c, *hook ? hook : NULL) != 0) {
        fprintf(stderr, "saeflow generate: cannot steer at hook '%s'\n",
                *hook ? hook : sae->meta.hook_name);
        goto done;
    }
    if (seed == 0) seed = (int64_t)(time_wall_ms() & 0x7fffffffffffll);
    struct model_gen_opts go = {
        .max_new_tokens = n_new,
        .sample = {.temperature = (float)temperature,
                   .top_p = (float)top_p,
                   .top_k = (size_t)top_k},
        .seed = (uint64_t)seed,
        .stop_at_eos = !no_eos_stop,
    };
    double t0 = time_now_s();
    if (!steered_only) {
        steer_set_enabled(st, false);
        if (model_generate(c, prompts, plens, K, &go, out_u, len_u) != 0) goto done;
    }
    steer_set_enabled(st, true);
    if (model_generate(c, prompts, plens, K, &go, out_s, len_s) != 0) goto done;
    double dt = time_now_s() - t0;

    char desc[GEN_MAX_SPECS * 40] = "";
    size_t dl = 0;
    for (size_t i = 0; i < n_specs && dl < sizeof desc; i++) {
        char one[64];
        steer_spec_format(&specs[i], one, sizeof one);
        dl += (size_t)snprintf(desc + dl, sizeof desc - dl, "%s%s", i ? "," : "", one);
    }
    printf("# steering %s of %s with %s; %zu sample(s), %zu new tokens, seeds %lld..%lld\n",
           *hook ? hook : sae->meta.hook_name, sae_path, desc, K, n_new, (long long)seed,
           (long long)seed + (long long)K - 1);
    if (measure && measure_init(&ms, m, sae, *hook ? hook : sae->meta.hook_name, max_len) != 0) {
        fprintf(stderr, "saeflow generate: cannot set up --measure\n");
        goto done;
    }
    struct measured sum[2] = {{0}};
    size_t n_meas[2] = {0};
    for (size_t i = 0; i < K; i++) {
        for (int run = steered_only ? 1 : 0; run < 2; run++) {
            const int32_t *gen = run ? out_s + i * n_new : out_u + i * n_new;
            size_t ng = run ? len_s[i] : len_u[i];
            if (run)
                printf("=== seed %lld steered (%s) ===\n", (long long)seed + (long long)i, desc);
            else
                printf("=== seed %lld unsteered ===\n", (long long)seed + (long long)i);
            print_sample(tok, ids, n_ids, gen, ng, &text);
            if (!measure) continue;
            struct measured r;
            int mr = measure_sample(&ms, ids, n_ids, gen, ng, specs, n_specs,
                                    steer_bos ? -1 : tokenizer_bos(tok), &r);
            if (mr < 0) goto done;
            if (mr > 0) continue;
            printf("# measure: ppl %.3f  steered features active on %.1f%% of generated tokens, "
                   "mean act %.4f\n",
                   r.ppl, 100 * r.fire, r.act);
            sum[run].ppl += r.ppl;
            sum[run].fire += r.fire;
            sum[run].act += r.act;
            n_meas[run]++;
        }
    }
    for (int run = 0; measure && run < 2; run++) {
        if (!n_meas[run]) continue;
        double k = (double)n_meas[run];
        printf("# summary %s: %zu samples, mean ppl %.3f, features active on %.1f%% of generated "
               "tokens, mean act %.4f\n",
               run ? "steered" : "unsteered", n_meas[run], sum[run].ppl / k,
               100 * sum[run].fire / k, sum[run].act / k);
    }
    log_info("generate_steered", "samples=%zu new_tokens=%zu specs=%s seconds=%.3f seed=%lld", K,
             n_new, desc, dt, (long long)seed);
    ret = 0;
done:
    measure_fini(&ms);
    buf_fini(&text);
    model_ctx_destroy(&c);
    steer_destroy(&st);
    sae_destroy(&sae);
    free(out_u);
    free(out_s);
    free(len_u);
    free(len_s);
    free(prompts);
    free(plens);
    free(ids);
    model_destroy(&m);
    config_free(&cfg);
    free(av);
    return ret;
}

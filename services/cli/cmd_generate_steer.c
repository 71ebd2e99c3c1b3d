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
#include "eval/eval.h"
#include "eval/feature_store.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "sae/sae_io.h"
#include "steer/steer.h"
#include "steer/steer_measure.h"
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

/* Resolves `x` strengths from the feature store's max activations, after checking
 * that the store's SAE `id` is the SAE being steered (its maxima mean nothing for
 * another one). */
static int resolve_relative(struct steer_spec *specs, size_t n, const char *store, const char *id,
                            const struct model *m, const struct sae *sae, const char *hook)
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
    struct feature_sae want = {.d_in = (uint32_t)sae->d_in,
                               .d_sae = (uint32_t)sae->n,
                               .k = (uint32_t)sae->k,
                               .fingerprint = sae_fingerprint(sae)};
    snprintf(want.arch, sizeof want.arch, "%s", sae_arch_name(sae->arch));
    size_t layer;
    enum model_hook_point point;
    if (eval_resolve_hook(m, sae, *hook ? hook : NULL, &layer, &point) != 0 ||
        model_hook_name(layer, point, want.hook, sizeof want.hook) != 0)
        snprintf(want.hook, sizeof want.hook, "%s", sae->meta.hook_name);
    char why[1024];
    int crc = feature_store_check_sae(fs, id, &want, why, sizeof why);
    if (crc == FEATURE_SAE_UNVERIFIED) {
        fprintf(stderr, "saeflow generate: warning: %s in %s: %s\n", id, store, why);
    } else if (crc != 0) {
        if (crc < 0)
            fprintf(stderr, "saeflow generate: cannot read SAE %s in %s (%s)\n", id, store,
                    sf_strerror(crc));
        else
            fprintf(stderr,
                    "saeflow generate: %s: %s; its max activations do not apply to --sae "
                    "(give the --sae-id that `saeflow eval` stored this SAE under)\n",
                    store, why);
        rc = SF_EINVAL;
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

/* --sweep's list: comma-separated finite numbers. */
static int parse_strengths(const char *s, double *out, size_t cap, size_t *n)
{
    *n = 0;
    while (*s) {
        char *end = NULL;
        double v = strtod(s, &end);
        if (end == s || !isfinite(v) || (*end && *end != ',') || *n == cap) {
            fprintf(stderr,
                    "saeflow generate: bad --sweep '%s' (want up to %zu comma-separated "
                    "numbers, e.g. 1,2,4,8)\n",
                    s, cap);
            return SF_EINVAL;
        }
        out[(*n)++] = v;
        s = *end ? end + 1 : end;
    }
    if (*n == 0) fprintf(stderr, "saeflow generate: --sweep needs at least one strength\n");
    return *n ? 0 : SF_EINVAL;
}

static void print_measured(const struct steer_measured *r, bool concept)
{
    printf("# measure (unsteered model reads it back): perplexity %.3f, steered features fire on "
           "%.1f%% of generated tokens, mean act %.4f",
           r->ppl, 100 * r->fire, r->act);
    if (concept) printf(", concept %s", r->concept ? "present" : "absent");
    printf("\n");
}

static void print_sweep(const struct steer_sweep_row *rows, size_t n, const char *concept,
                        bool relative, double max_ppl)
{
    printf("# dose response: each row's samples use the same seeds; all judged by the unsteered "
           "model reading the text back\n");
    printf("%10s %8s %10s %12s %10s %11s\n", relative ? "strength_x" : "strength", "samples",
           *concept ? "concept" : "-", "feature_fire", "mean_act", "perplexity");
    for (size_t i = 0; i < n; i++) {
        char cr[32] = "-";
        if (*concept)
            snprintf(cr, sizeof cr, "%.0f/%zu", rows[i].concept_rate * (double)rows[i].samples,
                     rows[i].samples);
        printf("%10.3g %8zu %10s %11.1f%% %10.4f %11.3f%s\n", rows[i].strength, rows[i].samples, cr,
               100 * rows[i].fire, rows[i].act, rows[i].ppl, i ? "" : "   (unsteered)");
    }
    int pick = steer_sweep_pick(rows, n, max_ppl);
    if (pick < 0)
        printf("# pick: none (every strength raises perplexity above %.3g x the unsteered %.3f)\n",
               max_ppl, rows[0].ppl);
    else
        printf("# pick: strength %g%s (concept in %.0f of %zu samples, perplexity %.3f <= %.3g x "
               "%.3f)\n",
               rows[pick].strength, relative ? "x" : "",
               rows[pick].concept_rate * (double)rows[pick].samples, rows[pick].samples,
               rows[pick].ppl, max_ppl, rows[0].ppl);
}

int cmd_generate_steer(int argc, char **argv)
{
    char *model_path = NULL, *tok_path = NULL, *prompt = NULL, *sae_path = NULL, *hook = NULL;
    char *steer_last = NULL, *store = NULL, *sae_id = NULL, *sweep = NULL, *concept = NULL;
    int64_t n = 0, top_k = 0, seed = 0, threads = 0, samples = 0;
    double temperature = 0, top_p = 0, max_ppl = 0;
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
        {"no-bos", CFG_BOOL, &no_bos, "false", 0, -1,
         "do not prepend BOS (default: as the tokenizer's metadata says)"},
        {"ignore-eos", CFG_BOOL, &no_eos_stop, "false", 0, -1, "keep going past EOS/BOS"},
        {"sae", CFG_STRING, &sae_path, NULL, 0, -1, "SAE directory whose features steer"},
        {"hook", CFG_STRING, &hook, NULL, 0, -1, "hook point (default: the SAE's)"},
        {"steer", CFG_STRING, &steer_last, NULL, 0, -1,
         "FEATURE=STRENGTH[x][:add|clamp|ablate], repeatable or comma-separated"},
        {"samples", CFG_INT, &samples, "1", 1, 4096, "samples, seeds seed..seed+samples-1"},
        {"steer-bos", CFG_BOOL, &steer_bos, "false", 0, -1, "steer the BOS position too"},
        {"steered-only", CFG_BOOL, &steered_only, "false", 0, -1, "skip the unsteered runs"},
        {"measure", CFG_BOOL, &measure, "false", 0, -1,
         "per sample, judged by the unsteered model reading the text back: its perplexity, how "
         "often the steered features fire, whether --concept appears"},
        {"concept", CFG_STRING, &concept, NULL, 0, -1,
         "text whose presence in a continuation counts as the concept (e.g. ' dog')"},
        {"sweep", CFG_STRING, &sweep, NULL, 0, -1,
         "dose response: comma-separated strengths (same unit as --steer) replacing the add/clamp "
         "specs' strengths; prints concept rate and perplexity per strength and picks one"},
        {"max-ppl-ratio", CFG_DOUBLE, &max_ppl, "2", 1, 1e6,
         "--sweep picks the strongest concept rate whose perplexity stays within this multiple "
         "of the unsteered one"},
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
    struct steer_measure *ms = NULL;
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
    struct steer_spec given[GEN_MAX_SPECS]; /* as typed: --sweep re-resolves from these */
    memcpy(given, specs, n_specs * sizeof *specs);
    double strengths[64];
    size_t n_str = 0;
    if (*sweep && parse_strengths(sweep, strengths, 64, &n_str) != 0) goto done;
    if (n_specs == 0) {
        fprintf(stderr, "saeflow generate: --sae given without --steer\n");
        goto done;
    }
    ret = 1;
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
    if (resolve_relative(specs, n_specs, store, sae_id, m, sae, hook ? hook : "") != 0) goto done;
    st = steer_new(sae, specs, n_specs);
    if (!st) {
        fprintf(stderr, "saeflow generate: steering specs do not fit the SAE (%zu latents)\n",
                sae->n);
        goto done;
    }
    size_t n_ids = 0;
    /* BOS as the model's tokenizer metadata says (tokenizer_add_bos_default); an empty
     * prompt starts from BOS when there is one */
    bool bos = !no_bos && (tokenizer_add_bos_default(tok) || (!*prompt && tokenizer_bos(tok) >= 0));
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
    if (!n_str && model_generate(c, prompts, plens, K, &go, out_s, len_s) != 0) goto done;
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
    if ((measure || n_str) &&
        steer_measure_new(m, sae, *hook ? hook : sae->meta.hook_name, max_len, &ms) != 0) {
        fprintf(stderr, "saeflow generate: cannot set up --measure\n");
        goto done;
    }
    if (ms && steer_measure_set_concept(ms, concept) != 0) goto done;
    const int32_t skip = steer_bos ? -1 : tokenizer_bos(tok);
    struct steer_sweep_row sum[2] = {{0}};
    for (size_t i = 0; i < K; i++) {
        for (int run = steered_only ? 1 : 0; run < (n_str ? 1 : 2); run++) {
            const int32_t *gen = run ? out_s + i * n_new : out_u + i * n_new;
            size_t ng = run ? len_s[i] : len_u[i];
            if (!n_str) {
                if (run)
                    printf("=== seed %lld steered (%s) ===\n", (long long)seed + (long long)i,
                           desc);
                else
                    printf("=== seed %lld unsteered ===\n", (long long)seed + (long long)i);
                print_sample(tok, ids, n_ids, gen, ng, &text);
            }
            if (!ms) continue;
            struct steer_measured r;
            int mr = steer_measure_sample(ms, ids, n_ids, gen, ng, specs, n_specs, skip, &r);
            if (mr == SF_NOTFOUND) continue;
            if (mr < 0) goto done;
            if (!n_str) print_measured(&r, *concept != 0);
            steer_sweep_add(&sum[run], &r);
        }
    }
    for (int run = 0; run < 2; run++) steer_sweep_finish(&sum[run]);
    for (int run = 0; measure && !n_str && run < 2; run++) {
        if (!sum[run].samples) continue;
        printf("# summary %s: %zu samples; read back by the unsteered model: mean perplexity "
               "%.3f, steered features fire on %.1f%% of generated tokens (mean act %.4f)",
               run ? "steered" : "unsteered", sum[run].samples, sum[run].ppl, 100 * sum[run].fire,
               sum[run].act);
        if (*concept) printf(", '%s' in %.0f%% of samples", concept, 100 * sum[run].concept_rate);
        printf("\n");
    }
    if (n_str) {
        struct steer_sweep_row rows[65];
        rows[0] = sum[0];
        rows[0].strength = 0;
        size_t nr = 1;
        for (size_t j = 0; j < n_str; j++, nr++) {
            memset(&rows[nr], 0, sizeof rows[nr]);
            rows[nr].strength = strengths[j];
            memcpy(specs, given, n_specs * sizeof *specs);
            for (size_t q = 0; q < n_specs; q++)
                if (specs[q].mode != STEER_ABLATE) specs[q].value = (float)strengths[j];
            if (resolve_relative(specs, n_specs, store, sae_id, m, sae, hook ? hook : "") != 0)
                goto done;
            model_ctx_clear_hooks(c);
            steer_destroy(&st);
            st = steer_new(sae, specs, n_specs);
            if (!st) goto done;
            if (!steer_bos) steer_set_skip_token(st, tokenizer_bos(tok));
            if (steer_install(st, c, *hook ? hook : NULL) != 0) goto done;
            if (model_generate(c, prompts, plens, K, &go, out_s, len_s) != 0) goto done;
            for (size_t i = 0; i < K; i++) {
                struct steer_measured r;
                int mr = steer_measure_sample(ms, ids, n_ids, out_s + i * n_new, len_s[i], specs,
                                              n_specs, skip, &r);
                if (mr == SF_NOTFOUND) continue;
                if (mr < 0) goto done;
                steer_sweep_add(&rows[nr], &r);
            }
            steer_sweep_finish(&rows[nr]);
        }
        print_sweep(rows, nr, concept, given[0].relative, max_ppl);
    }
    log_info("generate_steered", "samples=%zu new_tokens=%zu specs=%s seconds=%.3f seed=%lld", K,
             n_new, desc, dt, (long long)seed);
    ret = 0;
done:
    steer_measure_destroy(&ms);
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

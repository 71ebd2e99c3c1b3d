/* steer: spec parsing (good and bad), add / clamp / ablate against plain loops over
 * the reference SAE forward, clamp keeps the reconstruction error, and the hook steers
 * every position of a prompt and of generated tokens on a random model. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../support/check.h"
#include "core/core.h"
#include "model/model.h"
#include "sae/sae.h"
#include "steer/steer.h"
#include "steer/steer_measure.h"

static void test_parse_good(void)
{
    struct steer_spec s;
    CHECK(steer_spec_parse("123=8", &s) == 0);
    CHECK(s.feature == 123 && s.value == 8.0f && s.mode == STEER_ADD && !s.relative);
    CHECK(steer_spec_parse("0=-2.5:add", &s) == 0);
    CHECK(s.feature == 0 && s.value == -2.5f && s.mode == STEER_ADD);
    CHECK(steer_spec_parse("7=1e1:clamp", &s) == 0);
    CHECK(s.feature == 7 && s.value == 10.0f && s.mode == STEER_CLAMP);
    CHECK(steer_spec_parse("42=4x:clamp", &s) == 0);
    CHECK(s.feature == 42 && s.value == 4.0f && s.relative && s.mode == STEER_CLAMP);
    CHECK(steer_spec_parse("9:ablate", &s) == 0);
    CHECK(s.feature == 9 && s.value == 0.0f && s.mode == STEER_ABLATE);
    CHECK(steer_spec_parse("9=0:ablate", &s) == 0);
    CHECK(s.mode == STEER_ABLATE && s.value == 0.0f);
    CHECK(steer_spec_parse("4294967295=.5", &s) == 0);
    CHECK(s.feature == 4294967295u && s.value == 0.5f);
    CHECK(steer_spec_parse("3=+1000000", &s) == 0 && s.value == 1e6f);
    /* not NUL-terminated */
    CHECK(steer_spec_parse_n("5=2:clampXYZ", 9, &s) == 0);
    CHECK(s.feature == 5 && s.value == 2.0f && s.mode == STEER_CLAMP);

    /* resolve */
    CHECK(steer_spec_parse("42=4x", &s) == 0);
    CHECK(steer_spec_resolve(&s, 2.5f) == 0);
    CHECK(!s.relative && s.value == 10.0f);
    CHECK(steer_spec_resolve(&s, -1.0f) == 0); /* raw: untouched */
    CHECK(s.value == 10.0f);
    CHECK(steer_spec_parse("42=4x", &s) == 0);
    CHECK(steer_spec_resolve(&s, 0.0f) == SF_EINVAL);
    CHECK(steer_spec_resolve(&s, NAN) == SF_EINVAL);

    /* format round trip */
    char buf[64];
    const char *texts[] = {"123=8:add", "5=2.5x:clamp", "9=0:ablate", "1=-0.125:add"};
    for (size_t i = 0; i < SF_ARRAY_LEN(texts); i++) {
        CHECK(steer_spec_parse(texts[i], &s) == 0);
        CHECK(steer_spec_format(&s, buf, sizeof buf) == 0);
        CHECK_MSG(!strcmp(buf, texts[i]), "%s -> %s", texts[i], buf);
    }
    CHECK(steer_spec_format(&s, buf, 4) == SF_ERANGE);

    /* lists */
    struct steer_spec list[3];
    size_t n = 0;
    CHECK(steer_spec_parse_list("1=2,3:ablate", list, 3, &n) == 0);
    CHECK(n == 2 && list[0].feature == 1 && list[1].mode == STEER_ABLATE);
    CHECK(steer_spec_parse_list("4=1:clamp", list, 3, &n) == 0);
    CHECK(n == 3 && list[2].feature == 4);
    CHECK(steer_spec_parse_list("5=1", list, 3, &n) == SF_ERANGE);
    n = 0;
    CHECK(steer_spec_parse_list("1=2,,3=1", list, 3, &n) == SF_EINVAL && n == 0);
    CHECK(steer_spec_parse_list("1=2,", list, 3, &n) == SF_EINVAL && n == 0);
}

static void test_parse_bad(void)
{
    const char *bad[] = {
        "",
        "=",
        "12",
        "12=",
        "=3",
        "a=1",
        "-1=2",
        "1=2:",
        "1=2:Add",
        "1=2:mul",
        "1=two",
        "1=nan",
        "1=inf",
        "1=0x10",
        "1= 2",
        " 1=2",
        "1=2 ",
        "1=2:add:clamp",
        "1=2=3",
        "1=1e300",
        "1=2000000",
        "4294967296=1",
        "99999999999=1",
        "1=x",
        "1=-x",
        "1=.",
        "1=e5",
        "1=3:ablate",
        "1=1x:ablate",
        "1:add",
        "1:clamp",
        "1=1xx",
        "1=--1",
        "12 =1",
    };
    struct steer_spec s;
    for (size_t i = 0; i < SF_ARRAY_LEN(bad); i++)
        CHECK_MSG(steer_spec_parse(bad[i], &s) == SF_EINVAL, "accepted \"%s\"", bad[i]);
    CHECK(steer_spec_parse(NULL, &s) == SF_EINVAL);
    char longspec[STEER_MAX_SPEC_LEN + 8];
    memset(longspec, '1', sizeof longspec - 1);
    longspec[sizeof longspec - 1] = '\0';
    longspec[3] = '=';
    CHECK(steer_spec_parse(longspec, &s) == SF_EINVAL);
}

static struct sae *random_sae(enum sae_arch arch, size_t d, size_t n, size_t k, float scale,
                              uint64_t seed)
{
    struct sae *s = sae_new(arch, d, n, k);
    if (!s) return NULL;
    struct rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n * d; i++) {
        s->W_enc[i] = rng_normal(&r) * 0.3f;
        s->W_dec[i] = rng_normal(&r) * 0.3f;
    }
    for (size_t i = 0; i < n; i++) s->b_enc[i] = rng_normal(&r) * 0.1f;
    for (size_t j = 0; j < d; j++) s->b_dec[j] = rng_normal(&r) * 0.1f;
    if (s->threshold)
        for (size_t i = 0; i < n; i++) s->threshold[i] = 0.05f;
    s->norm_scale = scale;
    snprintf(s->meta.hook_name, sizeof s->meta.hook_name, "blocks.1.hook_resid_post");
    return s;
}

/* The spec math the header promises, by the reference encoder/decoder, per token:
 * codes z from the incoming h; clamps via decode(z') + (h - decode(z)); adds on top. */
static void reference_steer(const struct sae *sae, const struct steer_spec *specs, size_t ns,
                            const float *h, float *out)
{
    const size_t d = sae->d_in, n = sae->n;
    float *z = calloc(n, sizeof *z), *z2 = calloc(n, sizeof *z2);
    float *xh = calloc(d, sizeof *xh), *xh2 = calloc(d, sizeof *xh2);
    if (!z || !z2 || !xh || !xh2) abort();
    CHECK(sae_encode_ref(sae, h, z) == 0);
    memcpy(z2, z, n * sizeof *z);
    bool any_code = false;
    for (size_t s = 0; s < ns; s++) {
        if (specs[s].mode == STEER_ADD) continue;
        z2[specs[s].feature] = specs[s].mode == STEER_ABLATE ? 0.0f : specs[s].value;
        any_code = true;
    }
    if (any_code) {
        sae_decode_ref(sae, z, xh);
        sae_decode_ref(sae, z2, xh2);
        for (size_t j = 0; j < d; j++) out[j] = xh2[j] + (h[j] - xh[j]);
    } else {
        memcpy(out, h, d * sizeof *out);
    }
    for (size_t s = 0; s < ns; s++) {
        if (specs[s].mode != STEER_ADD) continue;
        for (size_t j = 0; j < d; j++)
            out[j] += specs[s].value * sae->W_dec[specs[s].feature * d + j] / sae->norm_scale;
    }
    free(z);
    free(z2);
    free(xh);
    free(xh2);
}

static void check_against_reference(enum sae_arch arch, float scale, const char *const *texts,
                                    size_t ns)
{
    const size_t d = 16, n = 96, k = 8, B = 300; /* B > one chunk for large n only */
    struct sae *sae = random_sae(arch, d, n, k, scale, 7 + (uint64_t)arch);
    CHECK(sae != NULL);
    if (!sae) return;
    struct steer_spec specs[8];
    for (size_t s = 0; s < ns; s++) CHECK(steer_spec_parse(texts[s], &specs[s]) == 0);
    struct steer *st = steer_new(sae, specs, ns);
    CHECK(st != NULL);
    if (!st) {
        sae_destroy(&sae);
        return;
    }
    float *x = malloc(B * d * sizeof *x), *want = malloc(B * d * sizeof *want);
    struct rng r;
    rng_seed(&r, 99);
    for (size_t i = 0; i < B * d; i++) x[i] = rng_normal(&r);
    /* make the clamped / ablated features active on some tokens so both z_i = 0 and
     * z_i > 0 are exercised: push x along W_enc[f] for the first third */
    for (size_t s = 0; s < ns; s++) {
        if (specs[s].mode == STEER_ADD) continue;
        for (size_t b = 0; b < B / 3; b++)
            for (size_t j = 0; j < d; j++)
                x[b * d + j] += 3.0f * sae->W_enc[specs[s].feature * d + j];
    }
    for (size_t b = 0; b < B; b++) reference_steer(sae, specs, ns, x + b * d, want + b * d);
    size_t active_seen = 0;
    float *z = malloc(n * sizeof *z);
    for (size_t b = 0; b < B; b++) {
        CHECK(sae_encode_ref(sae, x + b * d, z) == 0);
        for (size_t s = 0; s < ns; s++)
            if (specs[s].mode != STEER_ADD && z[specs[s].feature] > 0) active_seen++;
    }
    CHECK(steer_apply(st, x, NULL, NULL, B) == 0);
    double maxerr = 0;
    for (size_t i = 0; i < B * d; i++) maxerr = fmax(maxerr, fabs((double)x[i] - want[i]));
    CHECK_MSG(maxerr < 2e-4, "arch=%s scale=%g max |steer - reference| = %g", sae_arch_name(arch),
              (double)scale, maxerr);
    bool needs_code = false;
    for (size_t s = 0; s < ns; s++) needs_code |= specs[s].mode != STEER_ADD;
    if (needs_code) CHECK_MSG(active_seen > 0, "no token had a clamped feature active");
    printf("steer vs reference: arch=%-8s scale=%-4g specs=%zu max_err=%.2e clamped_active=%zu\n",
           sae_arch_name(arch), (double)scale, ns, maxerr, active_seen);
    free(z);
    free(x);
    free(want);
    steer_destroy(&st);
    CHECK(st == NULL);
    sae_destroy(&sae);
}

static void test_math(void)
{
    const char *add[] = {"3=2.5", "10=-1"};
    const char *clamp[] = {"5=4:clamp"};
    const char *ablate[] = {"5:ablate"};
    const char *mix[] = {"5=6:clamp", "11:ablate", "3=2:add", "3=1:add"};
    const enum sae_arch archs[] = {SAE_TOPK, SAE_STANDARD, SAE_JUMPRELU};
    for (size_t a = 0; a < SF_ARRAY_LEN(archs); a++) {
        float scale = a == 1 ? 1.7f : 1.0f;
        check_against_reference(archs[a], scale, add, SF_ARRAY_LEN(add));
        check_against_reference(archs[a], scale, clamp, SF_ARRAY_LEN(clamp));
        check_against_reference(archs[a], scale, ablate, SF_ARRAY_LEN(ablate));
        check_against_reference(archs[a], scale, mix, SF_ARRAY_LEN(mix));
    }
}

/* Plain-loop definition of add on one row, written out independently. */
static void test_add_plain_loop(void)
{
    struct sae *sae = random_sae(SAE_TOPK, 8, 20, 4, 2.0f, 3);
    struct steer_spec sp;
    CHECK(steer_spec_parse("4=3", &sp) == 0);
    struct steer *st = steer_new(sae, &sp, 1);
    float h[8], want[8];
    for (int j = 0; j < 8; j++) h[j] = want[j] = (float)j - 3.5f;
    for (int j = 0; j < 8; j++) want[j] += 3.0f * sae->W_dec[4 * 8 + j] / 2.0f;
    CHECK(steer_apply(st, h, NULL, NULL, 1) == 0);
    for (int j = 0; j < 8; j++) CHECK_NEAR(h[j], want[j], 1e-6, 1e-6);
    /* disabled: untouched */
    steer_set_enabled(st, false);
    CHECK(!steer_enabled(st));
    float before[8];
    memcpy(before, h, sizeof h);
    CHECK(steer_apply(st, h, NULL, NULL, 1) == 0);
    CHECK(!memcmp(before, h, sizeof h));
    /* skipped token: untouched */
    steer_set_enabled(st, true);
    int32_t tok[2] = {1, 5};
    float two[16];
    memcpy(two, h, sizeof h);
    memcpy(two + 8, h, sizeof h);
    steer_set_skip_token(st, 1);
    CHECK(steer_apply(st, two, tok, NULL, 2) == 0);
    CHECK(!memcmp(two, h, sizeof h));
    CHECK(memcmp(two + 8, h, sizeof h) != 0);
    steer_destroy(&st);
    sae_destroy(&sae);
}

/* After a clamp, (h' - decode(encode-with-z_i-set)) equals (h - decode(encode(h))):
 * the reconstruction error is carried over exactly (up to float rounding). And the
 * clamped feature reads back as the target value when re-encoded, for a ReLU SAE
 * whose encoder row is aligned with its decoder row. */
static void test_clamp_keeps_error(void)
{
    const size_t d = 12, n = 40;
    struct sae *sae = random_sae(SAE_STANDARD, d, n, 0, 1.0f, 11);
    struct rng r;
    rng_seed(&r, 5);
    float h[12], h2[12], z[40], zs[40], xh[12], xs[12];
    for (size_t j = 0; j < d; j++) h[j] = rng_normal(&r);
    memcpy(h2, h, sizeof h);
    struct steer_spec sp = {.feature = 17, .value = 5.0f, .mode = STEER_CLAMP};
    struct steer *st = steer_new(sae, &sp, 1);
    CHECK(steer_apply(st, h2, NULL, NULL, 1) == 0);
    CHECK(sae_encode_ref(sae, h, z) == 0);
    sae_decode_ref(sae, z, xh);
    memcpy(zs, z, sizeof z);
    zs[17] = 5.0f;
    sae_decode_ref(sae, zs, xs);
    double maxerr = 0;
    for (size_t j = 0; j < d; j++)
        maxerr = fmax(maxerr, fabs((double)(h2[j] - xs[j]) - (double)(h[j] - xh[j])));
    CHECK_MSG(maxerr < 1e-5, "error not preserved: %g", maxerr);
    steer_destroy(&st);
    sae_destroy(&sae);
}

static void test_new_invalid(void)
{
    log_set_level(LOG_OFF);
    struct sae *sae = random_sae(SAE_TOPK, 8, 20, 4, 1.0f, 3);
    struct steer_spec sp[2] = {{.feature = 20, .value = 1}};
    CHECK(steer_new(sae, sp, 1) == NULL); /* out of range */
    sp[0] = (struct steer_spec){.feature = 2, .value = 1, .relative = true};
    CHECK(steer_new(sae, sp, 1) == NULL); /* unresolved */
    sp[0] = (struct steer_spec){.feature = 2, .value = NAN};
    CHECK(steer_new(sae, sp, 1) == NULL);
    sp[0] = (struct steer_spec){.feature = 2, .value = 1, .mode = STEER_CLAMP};
    sp[1] = (struct steer_spec){.feature = 2, .mode = STEER_ABLATE};
    CHECK(steer_new(sae, sp, 2) == NULL); /* clamped twice */
    sp[1] = (struct steer_spec){.feature = 2, .value = 1, .mode = STEER_ADD};
    struct steer *st = steer_new(sae, sp, 2); /* clamp + add on one feature is fine */
    CHECK(st != NULL && steer_count(st) == 2 && steer_specs(st)[1].mode == STEER_ADD);
    steer_destroy(&st);
    st = steer_new(sae, NULL, 0);
    CHECK(st != NULL);
    float h[8] = {1, 2, 3, 4, 5, 6, 7, 8}, h0[8];
    memcpy(h0, h, sizeof h);
    CHECK(steer_apply(st, h, NULL, NULL, 1) == 0 && !memcmp(h, h0, sizeof h));
    steer_destroy(&st);
    steer_destroy(&st); /* NULL-safe */
    CHECK(steer_new(NULL, sp, 1) == NULL);
    sae_destroy(&sae);
    log_set_level(LOG_INFO);
}

/* ---- the hook on a real (random) model ------------------------------------------ */

struct rec {
    size_t calls, rows;
    float *x; /* copy of the last call's rows */
    size_t cap;
    int32_t tokens[4096];
    size_t pos[4096];
    size_t seq[4096];
};

static int rec_hook(void *user, const struct model_act *act)
{
    struct rec *r = user;
    r->calls++;
    if ((r->rows + act->n_tokens) * act->d > r->cap || r->rows + act->n_tokens > 4096) return 0;
    memcpy(r->x + r->rows * act->d, act->x, act->n_tokens * act->d * sizeof *act->x);
    for (size_t i = 0; i < act->n_tokens; i++) {
        r->tokens[r->rows + i] = act->tokens[i];
        r->pos[r->rows + i] = act->pos[i];
        r->seq[r->rows + i] = act->seq[i];
    }
    r->rows += act->n_tokens;
    return 0;
}

/* A 2-layer random Llama small enough for loops (d = 16, vocab 32). */
static struct model_config tiny_llama(void)
{
    return (struct model_config){.arch = MODEL_ARCH_LLAMA,
                                 .dim = 16,
                                 .hidden_dim = 32,
                                 .n_layers = 2,
                                 .n_heads = 2,
                                 .n_kv_heads = 2,
                                 .head_dim = 8,
                                 .vocab_size = 32,
                                 .max_seq_len = 64,
                                 .norm_eps = 1e-5f,
                                 .rope_theta = 10000.0f,
                                 .rope_dim = 8,
                                 .rope_layout = ROPE_INTERLEAVED,
                                 .bos_id = 1,
                                 .eos_id = 2};
}

static void test_hook_on_model(void)
{
    struct model_config cfg = tiny_llama();
    struct model *m = NULL;
    CHECK(model_new_random(&cfg, 42, 0.5f, &m) == 0);
    if (!m) return;
    struct sae *sae = random_sae(SAE_TOPK, 16, 48, 4, 1.0f, 21);
    struct steer_spec sp[2];
    CHECK(steer_spec_parse("6=3", &sp[0]) == 0);
    CHECK(steer_spec_parse("9=2:clamp", &sp[1]) == 0);
    struct steer *st = steer_new(sae, sp, 2);
    struct model_ctx *c = model_ctx_new(m, 2, 64);

    /* errors: a hook that does not parse, a width that differs */
    log_set_level(LOG_OFF);
    CHECK(steer_install(st, c, "blocks.7.hook_resid_post") == SF_EINVAL);
    CHECK(steer_install(st, c, "nonsense") == SF_EINVAL);
    struct sae *wide = random_sae(SAE_TOPK, 20, 48, 4, 1.0f, 2);
    struct steer *stw = steer_new(wide, sp, 1);
    CHECK(steer_install(stw, c, NULL) == SF_EINVAL);
    struct model_act bad = {.name = "x", .d = 20, .n_tokens = 0};
    CHECK(steer_hook(st, &bad) == SF_EINVAL);
    steer_destroy(&stw);
    sae_destroy(&wide);
    log_set_level(LOG_INFO);

    /* before: what enters the hook point; after: what leaves it (registered later) */
    struct rec before = {.cap = 4096 * 16}, after = {.cap = 4096 * 16};
    before.x = malloc(before.cap * sizeof(float));
    after.x = malloc(after.cap * sizeof(float));
    CHECK(model_ctx_add_hook(c, "blocks.1.hook_resid_post", rec_hook, &before) == 0);
    CHECK(steer_install(st, c, NULL) == 0);
    CHECK(model_ctx_add_hook(c, "blocks.1.hook_resid_post", rec_hook, &after) == 0);
    steer_set_skip_token(st, 1);

    int32_t p0[] = {1, 5, 7, 9}, p1[] = {1, 3};
    const int32_t *prompts[2] = {p0, p1};
    size_t plens[2] = {4, 2};
    struct model_gen_opts go = {
        .max_new_tokens = 6, .sample = {.temperature = 1.0f, .top_p = 1.0f}, .seed = 3};
    int32_t out[12];
    size_t out_lens[2];
    CHECK(model_generate(c, prompts, plens, 2, &go, out, out_lens) == 0);
    CHECK(before.rows == after.rows && before.rows > 6);
    /* every row: after == steer(before), computed by the reference; BOS rows untouched */
    size_t steered = 0, gen_rows = 0, bos_rows = 0;
    float want[16];
    for (size_t rrow = 0; rrow < before.rows; rrow++) {
        const float *h = before.x + rrow * 16, *got = after.x + rrow * 16;
        if (before.tokens[rrow] == 1) {
            CHECK(!memcmp(h, got, 16 * sizeof *h));
            bos_rows++;
            continue;
        }
        reference_steer(sae, sp, 2, h, want);
        double e = 0;
        for (size_t j = 0; j < 16; j++) e = fmax(e, fabs((double)got[j] - want[j]));
        CHECK_MSG(e < 1e-4, "row %zu pos %zu: %g", rrow, before.pos[rrow], e);
        steered++;
        if (before.pos[rrow] >= plens[before.seq[rrow]]) gen_rows++;
    }
    CHECK(bos_rows >= 2 && steered == before.rows - bos_rows); /* all but BOS rows */
    CHECK_MSG(gen_rows >= 8, "generated positions steered: %zu", gen_rows);

    /* steering changes what is generated (greedy), and disabling restores it */
    struct model_gen_opts greedy = {.max_new_tokens = 8, .sample = {.temperature = 0}, .seed = 1};
    int32_t a[16], b[16], c2[16];
    size_t la[2], lb[2], lc[2];
    steer_set_enabled(st, false);
    CHECK(model_generate(c, prompts, plens, 2, &greedy, a, la) == 0);
    steer_set_enabled(st, true);
    struct steer_spec strong;
    CHECK(steer_spec_parse("6=40", &strong) == 0);
    struct steer *st2 = steer_new(sae, &strong, 1);
    CHECK(steer_install(st2, c, NULL) == 0);
    CHECK(model_generate(c, prompts, plens, 2, &greedy, b, lb) == 0);
    CHECK(memcmp(a, b, sizeof(int32_t) * 8) != 0);
    steer_set_enabled(st, false);
    steer_set_enabled(st2, false);
    CHECK(model_generate(c, prompts, plens, 2, &greedy, c2, lc) == 0);
    CHECK(!memcmp(a, c2, sizeof(int32_t) * 16));

    /* a slot mask steers one sequence of the batch and leaves the other alone */
    steer_set_enabled(st2, true);
    bool mask[2] = {false, true};
    CHECK(steer_set_slots(st2, mask, 2) == 0);
    int32_t mixed[16];
    size_t lm[2];
    CHECK(model_generate(c, prompts, plens, 2, &greedy, mixed, lm) == 0);
    CHECK(lm[0] == la[0] && !memcmp(mixed, a, la[0] * sizeof(int32_t)));
    CHECK(lm[1] == lb[1] && !memcmp(mixed + 8, b + 8, lb[1] * sizeof(int32_t)));
    CHECK(memcmp(mixed + 8, a + 8, 8 * sizeof(int32_t)) != 0);
    bool none[1] = {false};
    CHECK(steer_set_slots(st2, none, 1) == 0); /* slot 1 is beyond the mask: not steered */
    CHECK(model_generate(c, prompts, plens, 2, &greedy, mixed, lm) == 0);
    CHECK(!memcmp(mixed, a, 16 * sizeof(int32_t)));
    CHECK(steer_set_slots(st2, NULL, 0) == 0);
    CHECK(model_generate(c, prompts, plens, 2, &greedy, mixed, lm) == 0);
    CHECK(!memcmp(mixed, b, 16 * sizeof(int32_t)));

    model_ctx_destroy(&c);
    steer_destroy(&st2);
    steer_destroy(&st);
    free(before.x);
    free(after.x);
    sae_destroy(&sae);
    model_destroy(&m);
}

/* ---- steer_measure and the sweep's pick ------------------------------------------- */

static void test_sweep_pick(void)
{
    /* unsteered ppl 2; bound 2x = 4 */
    struct steer_sweep_row r[5] = {
        {.strength = 0, .samples = 8, .concept_rate = 0.1, .ppl = 2},
        {.strength = 1, .samples = 8, .concept_rate = 0.25, .ppl = 2.5},
        {.strength = 2, .samples = 8, .concept_rate = 0.5, .fire = 0.1, .ppl = 3.9},
        {.strength = 3, .samples = 8, .concept_rate = 0.5, .fire = 0.2, .ppl = 4.0},
        {.strength = 8, .samples = 8, .concept_rate = 1.0, .ppl = 40},
    };
    CHECK_EQ_INT(steer_sweep_pick(r, 5, 2.0), 2); /* same rate: the more fluent; 8 too costly */
    r[3].ppl = 3.9;
    CHECK_EQ_INT(steer_sweep_pick(r, 5, 2.0), 2); /* all equal: the lower strength */
    r[2].ppl = 3.95;
    CHECK_EQ_INT(steer_sweep_pick(r, 5, 2.0), 3);
    CHECK_EQ_INT(steer_sweep_pick(r, 5, 100.0), 4);
    CHECK_EQ_INT(steer_sweep_pick(r, 5, 1.1), -1);
    CHECK_EQ_INT(steer_sweep_pick(r, 1, 2.0), -1);
    r[4].ppl = NAN; /* unmeasurable: never picked */
    CHECK_EQ_INT(steer_sweep_pick(r, 5, 100.0), 3);
    struct steer_sweep_row acc = {0};
    struct steer_measured a = {.ppl = 2, .fire = 0.5, .act = 1, .concept = true};
    struct steer_measured b = {.ppl = 4, .fire = 0, .act = 0, .concept = false};
    steer_sweep_add(&acc, &a);
    steer_sweep_add(&acc, &b);
    steer_sweep_finish(&acc);
    CHECK(acc.samples == 2 && acc.ppl == 3 && acc.fire == 0.25 && acc.act == 0.5 &&
          acc.concept_rate == 0.5);
}

/* The measure's perplexity is the unsteered model's, computed here with a plain loop over
 * model_forward_logprobs; a feature read back on every token fires on 100%. */
static void test_measure(void)
{
    struct model_config cfg = tiny_llama();
    struct model *m = NULL;
    CHECK(model_new_random(&cfg, 7, 0.5f, &m) == 0);
    if (!m) return;
    struct sae *sae = random_sae(SAE_TOPK, 16, 48, 48, 1.0f, 5); /* k = n: every latent kept */
    struct steer_measure *ms = NULL;
    CHECK(steer_measure_new(m, sae, "blocks.0.hook_resid_post", 0, &ms) == SF_EINVAL && !ms);
    CHECK(steer_measure_new(m, sae, "blocks.0.hook_resid_post", 32, &ms) == 0 && ms);
    if (!ms) goto out;
    int32_t prompt[3] = {1, 4, 9}, gen[5] = {3, 3, 17, 8, 2};
    struct steer_spec sp;
    CHECK(steer_spec_parse("0=2", &sp) == 0);
    struct steer_measured r;
    CHECK(steer_measure_sample(ms, prompt, 3, gen, 1, &sp, 1, 1, &r) == SF_NOTFOUND);
    CHECK(steer_measure_sample(ms, prompt, 3, gen, 5, &sp, 1, 1, &r) == 0);
    /* reference perplexity */
    struct model_ctx *c = model_ctx_new(m, 1, 32);
    int32_t seq[8] = {1, 4, 9, 3, 3, 17, 8, 2};
    float lp[8];
    struct model_seq s = {.slot = 0, .tokens = seq, .n = 8};
    CHECK(c && model_forward_logprobs(c, &s, 1, lp) == 0);
    double nll = 0;
    for (size_t p = 3; p < 8; p++) nll -= lp[p - 1];
    CHECK_NEAR(r.ppl, exp(nll / 5), 1e-9, 1e-6);
    CHECK(r.ppl > 1 && !r.concept); /* no tokenizer: no concept */
    /* fire: share of generated tokens where latent 0 is among the active (positive) ones */
    CHECK(r.fire >= 0 && r.fire <= 1);
    model_ctx_destroy(&c);
    steer_measure_destroy(&ms);
    CHECK(ms == NULL);
out:
    sae_destroy(&sae);
    model_destroy(&m);
}

int main(void)
{
    log_init("test_steer", LOG_LOGFMT, LOG_INFO);
    test_parse_good();
    test_parse_bad();
    test_math();
    test_add_plain_loop();
    test_clamp_keeps_error();
    test_new_invalid();
    test_hook_on_model();
    test_sweep_pick();
    test_measure();
    return check_exit();
}

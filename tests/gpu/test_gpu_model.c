// lib: model
/* GPU lab: the engine's forward pass on CUDA (model_cuda.h) against the CPU engine
 * (model_forward) on random Llama (GQA, RoPE half layout, untied) and GPT-2 models and
 * on stories260K when present: batched prefill logits of several sequences, decode
 * steps through the KV cache, host hooks that capture and that steer, device hooks,
 * capture-only passes, and the same refusals. fp32 logits agree to 1e-4 of the largest
 * logit. Then prefill and decode are timed on both backends. Exits 77 without a device. */
#include "gpu_lab.h"
#include "model/model.h"
#include "model/model_cuda.h"

struct capture {
    float *x;
    size_t n, calls;
    float add; /* steering: added to every element when non-zero */
};

static int capture_hook(void *user, const struct model_act *act)
{
    struct capture *c = user;
    size_t n = act->n_tokens * act->d;
    free(c->x);
    c->x = malloc(n * sizeof(float));
    if (!c->x) return SF_ENOMEM;
    memcpy(c->x, act->x, n * sizeof(float));
    c->n = n;
    c->calls++;
    if (c->add != 0.0f)
        for (size_t i = 0; i < n; i++) act->x[i] += c->add * (float)(i % 7);
    return 0;
}

static int device_hook(void *user, const struct model_act *act, struct cuda_ctx *ctx)
{
    struct capture *c = user;
    size_t n = act->n_tokens * act->d;
    free(c->x);
    c->x = malloc(n * sizeof(float));
    if (!c->x) return SF_ENOMEM;
    c->n = n;
    c->calls++;
    return cuda_memcpy_d2h(ctx, c->x, act->x, n * sizeof(float));
}

static void compare_logits(const char *what, const float *gpu, const float *cpu, size_t n)
{
    GPU_LAB_CHECK(what, gpu, cpu, n, 1e-4);
}

static void run_model(struct cuda_ctx *ctx, struct model *m, const char *name)
{
    const struct model_config *cfg = model_config(m);
    const size_t V = cfg->vocab_size, slots = 3, max_len = 48;
    struct model_ctx *mc = model_ctx_new(m, slots, max_len);
    struct model_cuda *g = NULL;
    CHECK(mc != NULL);
    CHECK(model_cuda_new(m, ctx, CUDA_MATH_FP32, slots, max_len, &g) == 0);
    if (!mc || !g) goto out;
    struct rng r;
    rng_seed(&r, 5);
    int32_t toks[3][40];
    for (int s = 0; s < 3; s++)
        for (int j = 0; j < 40; j++) toks[s][j] = (int32_t)rng_below(&r, V);
    const size_t lens[3] = {5, 9, 1};
    struct model_seq seqs[3];
    for (int s = 0; s < 3; s++) seqs[s] = (struct model_seq){(size_t)s, toks[s], lens[s]};
    float *lc = malloc(15 * V * sizeof(float)), *lg = malloc(15 * V * sizeof(float));
    char what[96];

    /* prefill of three sequences of different lengths, every position's logits */
    CHECK(model_forward(mc, seqs, 3, MODEL_LOGITS_ALL, lc) == 0);
    CHECK(model_cuda_forward(g, seqs, 3, MODEL_LOGITS_ALL, lg) == 0);
    snprintf(what, sizeof what, "%s prefill logits (3 seqs, 15 rows)", name);
    compare_logits(what, lg, lc, 15 * V);

    /* decode steps: one token per sequence per step, through the cache */
    for (int step = 0; step < 4; step++) {
        struct model_seq dec[3];
        for (int s = 0; s < 3; s++)
            dec[s] = (struct model_seq){(size_t)s, &toks[s][lens[s] + (size_t)step], 1};
        CHECK(model_forward(mc, dec, 3, MODEL_LOGITS_LAST, lc) == 0);
        CHECK(model_cuda_forward(g, dec, 3, MODEL_LOGITS_LAST, lg) == 0);
        snprintf(what, sizeof what, "%s decode step %d logits", name, step);
        compare_logits(what, lg, lc, 3 * V);
    }
    for (size_t s = 0; s < 3; s++) CHECK_EQ_INT(model_cuda_len(g, s), model_ctx_len(mc, s));

    /* hooks: capture at one point, steer at another, and a device hook */
    model_ctx_reset_all(mc);
    model_cuda_reset_all(g);
    struct capture cc = {0}, cg = {0}, sc = {.add = 0.05f}, sg = {.add = 0.05f}, dv = {0};
    size_t L = cfg->n_layers - 1;
    CHECK(model_ctx_add_hook_at(mc, 0, MODEL_HOOK_RESID_MID, capture_hook, &sc) == 0);
    CHECK(model_cuda_add_hook_at(g, 0, MODEL_HOOK_RESID_MID, capture_hook, &sg, true) == 0);
    CHECK(model_ctx_add_hook_at(mc, L, MODEL_HOOK_RESID_POST, capture_hook, &cc) == 0);
    CHECK(model_cuda_add_hook_at(g, L, MODEL_HOOK_RESID_POST, capture_hook, &cg, false) == 0);
    CHECK(model_cuda_add_device_hook_at(g, L, MODEL_HOOK_MLP_OUT, device_hook, &dv) == 0);
    CHECK(model_forward(mc, seqs, 3, MODEL_LOGITS_ALL, lc) == 0);
    CHECK(model_cuda_forward(g, seqs, 3, MODEL_LOGITS_ALL, lg) == 0);
    snprintf(what, sizeof what, "%s steered logits", name);
    compare_logits(what, lg, lc, 15 * V);
    CHECK(cc.calls == 1 && cg.calls == 1 && dv.calls == 1 && cc.n == cg.n);
    if (cc.n == cg.n && cc.x && cg.x) {
        snprintf(what, sizeof what, "%s captured resid_post (steered)", name);
        GPU_LAB_CHECK(what, cg.x, cc.x, cc.n, 1e-4);
    }
    /* capture only: layers after the last hook are skipped, nothing is returned */
    model_ctx_clear_hooks(mc);
    model_cuda_clear_hooks(g);
    CHECK(model_cuda_add_hook_at(g, 0, MODEL_HOOK_RESID_POST, capture_hook, &cg, false) == 0);
    struct model_seq one = {0, toks[0] + 20, 3};
    CHECK(model_cuda_forward(g, &one, 1, MODEL_LOGITS_NONE, NULL) == 0);
    CHECK(cg.calls == 2 && cg.n == 3 * cfg->dim);

    /* refusals leave the slots as they were */
    size_t before = model_cuda_len(g, 0);
    int32_t bad_tok = (int32_t)V;
    struct model_seq bad = {0, &bad_tok, 1};
    CHECK(model_cuda_forward(g, &bad, 1, MODEL_LOGITS_LAST, lg) == SF_EINVAL);
    struct model_seq twice[2] = {{1, toks[1], 1}, {1, toks[2], 1}};
    CHECK(model_cuda_forward(g, twice, 2, MODEL_LOGITS_LAST, lg) == SF_EINVAL);
    struct model_seq longer = {0, toks[0], 40};
    for (int i = 0; i < 2; i++) /* the second one runs past max_len */
        (void)model_cuda_forward(g, &longer, 1, MODEL_LOGITS_NONE, NULL);
    CHECK(model_cuda_forward(g, &longer, 1, MODEL_LOGITS_NONE, NULL) == SF_ERANGE);
    CHECK(model_cuda_len(g, 0) <= max_len && model_cuda_len(g, 0) >= before);
    free(cc.x);
    free(cg.x);
    free(sc.x);
    free(sg.x);
    free(dv.x);
    free(lc);
    free(lg);
out:
    model_cuda_destroy(&g);
    CHECK(g == NULL);
    model_ctx_destroy(&mc);
}

static struct model *random_model(enum model_arch arch)
{
    struct model_config c;
    memset(&c, 0, sizeof c);
    c.arch = arch;
    c.norm_eps = 1e-5f;
    c.bos_id = c.eos_id = -1;
    if (arch == MODEL_ARCH_LLAMA) {
        c.dim = 128;
        c.hidden_dim = 256;
        c.n_layers = 3;
        c.n_heads = 8;
        c.n_kv_heads = 2;
        c.head_dim = 16;
        c.vocab_size = 300;
        c.max_seq_len = 256;
        c.rope_theta = 500000.0f;
        c.rope_dim = 16;
        c.rope_layout = ROPE_HALF;
        c.tied_embeddings = false;
    } else {
        c.dim = 96;
        c.hidden_dim = 384;
        c.n_layers = 2;
        c.n_heads = c.n_kv_heads = 4;
        c.head_dim = 24;
        c.vocab_size = 200;
        c.max_seq_len = 64;
        c.tied_embeddings = true;
    }
    struct model *m = NULL;
    if (model_new_random(&c, 11, 0.2f, &m) != 0) return NULL;
    return m;
}

/* Prefill of 8 x 128 tokens and 32 batched decode steps, CPU and GPU. */
static void time_engine(struct cuda_ctx *ctx)
{
    struct model_config c;
    memset(&c, 0, sizeof c);
    c.arch = MODEL_ARCH_LLAMA;
    c.dim = 1024;
    c.hidden_dim = 2816;
    c.n_layers = 8;
    c.n_heads = 16;
    c.n_kv_heads = 4;
    c.head_dim = 64;
    c.vocab_size = 8000;
    c.max_seq_len = 512;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.rope_dim = 64;
    c.bos_id = c.eos_id = -1;
    struct model *m = NULL;
    if (model_new_random(&c, 3, 0.02f, &m) != 0) return;
    struct model_ctx *mc = model_ctx_new(m, 8, 256);
    struct model_cuda *g = NULL;
    if (!mc || model_cuda_new(m, ctx, CUDA_MATH_TF32, 8, 256, &g) != 0) goto out;
    int32_t *toks = malloc(8 * 160 * sizeof *toks);
    float *logits = malloc(8 * c.vocab_size * sizeof *logits);
    for (size_t i = 0; i < 8 * 160; i++) toks[i] = (int32_t)(i * 7919 % c.vocab_size);
    struct model_seq seqs[8];
    printf("  %-34s %12s %12s %8s\n", "llama 8L d=1024 (tf32 on GPU)", "cpu ms", "gpu ms", "ratio");
    double ms[2][2];
    for (int be = 0; be < 2; be++) {
        for (int s = 0; s < 8; s++) seqs[s] = (struct model_seq){(size_t)s, toks + s * 160, 128};
        if (be == 0)
            model_ctx_reset_all(mc);
        else
            model_cuda_reset_all(g);
        double t0 = time_now_s();
        if (be == 0)
            model_forward(mc, seqs, 8, MODEL_LOGITS_LAST, logits);
        else
            model_cuda_forward(g, seqs, 8, MODEL_LOGITS_LAST, logits);
        ms[be][0] = (time_now_s() - t0) * 1e3;
        t0 = time_now_s();
        for (int step = 0; step < 32; step++) {
            for (int s = 0; s < 8; s++)
                seqs[s] = (struct model_seq){(size_t)s, toks + s * 160 + 128 + step, 1};
            if (be == 0)
                model_forward(mc, seqs, 8, MODEL_LOGITS_LAST, logits);
            else
                model_cuda_forward(g, seqs, 8, MODEL_LOGITS_LAST, logits);
        }
        ms[be][1] = (time_now_s() - t0) * 1e3 / 32;
    }
    printf("  %-34s %12.2f %12.2f %7.1fx\n", "prefill 8 x 128 tokens", ms[0][0], ms[1][0],
           ms[0][0] / ms[1][0]);
    printf("  %-34s %12.2f %12.2f %7.1fx\n", "decode step (8 seqs)", ms[0][1], ms[1][1],
           ms[0][1] / ms[1][1]);
    free(toks);
    free(logits);
out:
    model_cuda_destroy(&g);
    model_ctx_destroy(&mc);
    model_destroy(&m);
}

int main(void)
{
    log_init("test_gpu_model", LOG_LOGFMT, LOG_WARN);
    struct cuda_ctx *ctx;
    int rc = gpu_lab_open(&ctx);
    if (rc) return rc;
    struct model *m = random_model(MODEL_ARCH_LLAMA);
    CHECK(m != NULL);
    if (m) run_model(ctx, m, "llama-gqa");
    model_destroy(&m);
    m = random_model(MODEL_ARCH_GPT2);
    CHECK(m != NULL);
    if (m) run_model(ctx, m, "gpt2");
    model_destroy(&m);
    const char *dir = test_models_dir();
    if (dir) {
        char path[512];
        snprintf(path, sizeof path, "%s/stories260K/stories260K.bin", dir);
        struct model_load_opts lo = {.no_tokenizer = true};
        if (model_load(path, &lo, &m) == 0) {
            run_model(ctx, m, "stories260K");
            model_destroy(&m);
        } else {
            printf("  (stories260K not loadable from %s: skipped that part)\n", path);
        }
    }
    CHECK(cuda_ctx_sync(ctx) == 0);
    if (!check_failures_) time_engine(ctx);
    cuda_ctx_destroy(&ctx);
    return check_exit();
}

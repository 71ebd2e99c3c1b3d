/* Random-weight Llama (GQA, untied, RoPE base 500000) and GPT-2, each as a Hugging
 * Face directory and as GGUF, written at test time by tests/models/make_random_models.py
 * together with reference logits from its independent numpy forward pass. Checks, for
 * every model file:
 *   - batched prefill of 4 sequences of different lengths (one call) == reference
 *   - KV-cache decode (a short prefill, then one token per call, the sequences
 *     batched together as they go) == reference at every position
 *   - model_forward_logprobs == log_softmax of the reference
 * all within 1e-4 relative (max |diff| / max |ref|). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../support/check.h"
#include "core/core.h"
#include "model/model.h"
#include "model/tokenizer.h"

struct ref {
    int32_t n_seqs, vocab;
    int32_t *lens;
    int32_t **toks;
    float **logits; /* per sequence (len, vocab) */
    size_t total;
};

static void ref_free(struct ref *r)
{
    for (int i = 0; i < r->n_seqs; i++) {
        free(r->toks[i]);
        free(r->logits[i]);
    }
    free(r->toks);
    free(r->logits);
    free(r->lens);
}

static int ref_load(const char *path, struct ref *r)
{
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    int ok = fread(&r->n_seqs, 4, 1, f) == 1 && fread(&r->vocab, 4, 1, f) == 1 && r->n_seqs > 0 &&
             r->n_seqs < 100;
    if (ok) {
        r->lens = calloc((size_t)r->n_seqs, sizeof *r->lens);
        r->toks = calloc((size_t)r->n_seqs, sizeof *r->toks);
        r->logits = calloc((size_t)r->n_seqs, sizeof *r->logits);
        ok = fread(r->lens, 4, (size_t)r->n_seqs, f) == (size_t)r->n_seqs;
    }
    for (int i = 0; ok && i < r->n_seqs; i++) {
        r->toks[i] = malloc((size_t)r->lens[i] * 4);
        ok = fread(r->toks[i], 4, (size_t)r->lens[i], f) == (size_t)r->lens[i];
        r->total += (size_t)r->lens[i];
    }
    for (int i = 0; ok && i < r->n_seqs; i++) {
        size_t n = (size_t)r->lens[i] * (size_t)r->vocab;
        r->logits[i] = malloc(n * 4);
        ok = fread(r->logits[i], 4, n, f) == n;
    }
    fclose(f);
    return ok ? 0 : -1;
}

/* max |a - b| / max |b| over n values */
static double rel_err(const float *a, const float *b, size_t n)
{
    double md = 0, mb = 1e-30;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs((double)b[i]));
    }
    return md / mb;
}

static void check_model(const char *dir, const char *file, const char *refname,
                        enum model_arch arch)
{
    char path[1024], rpath[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    snprintf(rpath, sizeof rpath, "%s/%s", dir, refname);
    struct ref r;
    CHECK_MSG(ref_load(rpath, &r) == 0, "reading %s", rpath);
    struct model *m = NULL;
    int rc = model_load(path, NULL, &m);
    CHECK_MSG(rc == 0, "loading %s: %d", path, rc);
    if (rc || !r.lens) {
        ref_free(&r);
        return;
    }
    const struct model_config *cfg = model_config(m);
    CHECK_EQ_INT(cfg->arch, arch);
    CHECK_EQ_INT(cfg->vocab_size, r.vocab);
    if (arch == MODEL_ARCH_LLAMA) {
        CHECK_EQ_INT(cfg->n_kv_heads, 2);
        CHECK_EQ_INT(cfg->n_heads, 8);
        CHECK(!cfg->tied_embeddings);
        CHECK_NEAR(cfg->rope_theta, 500000.0, 0, 1e-6);
    } else {
        CHECK(cfg->tied_embeddings);
    }
    /* the HF GPT-2 directory has GPT-2's tokenizer.json shape: a BOS token
     * (<|endoftext|>) that its post-processor does not add, so neither do we */
    if (!strcmp(file, "gpt2_hf")) {
        const struct tokenizer *t = model_tokenizer(m);
        CHECK_MSG(t != NULL, "gpt2_hf: tokenizer.json not loaded");
        if (t) {
            CHECK_EQ_INT(tokenizer_bos(t), 100);
            CHECK_MSG(!tokenizer_add_bos_default(t), "gpt2_hf: BOS on by default (%s)",
                      tokenizer_add_bos_source(t));
        }
    }
    size_t V = (size_t)r.vocab, S = (size_t)r.n_seqs;

    /* 1. batched prefill, every position's logits */
    struct model_ctx *c = model_ctx_new(m, S, 32);
    struct model_seq *seqs = calloc(S, sizeof *seqs);
    float *logits = malloc(r.total * V * sizeof(float));
    for (size_t i = 0; i < S; i++)
        seqs[i] = (struct model_seq){.slot = i, .tokens = r.toks[i], .n = (size_t)r.lens[i]};
    CHECK_EQ_INT(model_forward(c, seqs, S, MODEL_LOGITS_ALL, logits), 0);
    double worst = 0;
    size_t row = 0;
    for (size_t i = 0; i < S; i++) {
        worst = fmax(worst, rel_err(logits + row * V, r.logits[i], (size_t)r.lens[i] * V));
        row += (size_t)r.lens[i];
    }
    printf("%-10s prefill  max rel err %.2e\n", file, worst);
    CHECK_MSG(worst <= 1e-4, "%s prefill rel err %.3g", file, worst);
    for (size_t i = 0; i < S; i++) CHECK_EQ_INT(model_ctx_len(c, i), r.lens[i]);

    /* 2. KV-cache decode: sequence i prefills min(len, i+1) tokens (LOGITS_LAST), then
     * all unfinished sequences step one token per call, batched together. */
    model_ctx_reset_all(c);
    size_t *done = calloc(S, sizeof *done);
    for (size_t i = 0; i < S; i++) {
        done[i] = SF_MIN((size_t)r.lens[i], i + 1);
        seqs[i] = (struct model_seq){.slot = i, .tokens = r.toks[i], .n = done[i]};
    }
    CHECK_EQ_INT(model_forward(c, seqs, S, MODEL_LOGITS_LAST, logits), 0);
    worst = 0;
    for (size_t i = 0; i < S; i++)
        worst = fmax(worst, rel_err(logits + i * V, r.logits[i] + (done[i] - 1) * V, V));
    for (;;) {
        size_t n = 0;
        size_t which[16];
        for (size_t i = 0; i < S; i++) {
            if (done[i] >= (size_t)r.lens[i]) continue;
            seqs[n] = (struct model_seq){.slot = i, .tokens = r.toks[i] + done[i], .n = 1};
            which[n++] = i;
        }
        if (n == 0) break;
        CHECK_EQ_INT(model_forward(c, seqs, n, MODEL_LOGITS_LAST, logits), 0);
        for (size_t b = 0; b < n; b++) {
            size_t i = which[b];
            worst = fmax(worst, rel_err(logits + b * V, r.logits[i] + done[i] * V, V));
            done[i]++;
        }
    }
    printf("%-10s decode   max rel err %.2e\n", file, worst);
    CHECK_MSG(worst <= 1e-4, "%s decode rel err %.3g", file, worst);

    /* 3. log-probs of the next token */
    model_ctx_reset_all(c);
    for (size_t i = 0; i < S; i++)
        seqs[i] = (struct model_seq){.slot = i, .tokens = r.toks[i], .n = (size_t)r.lens[i]};
    float *lp = malloc(r.total * sizeof(float));
    CHECK_EQ_INT(model_forward_logprobs(c, seqs, S, lp), 0);
    row = 0;
    double lp_err = 0;
    for (size_t i = 0; i < S; i++) {
        for (int t = 0; t < r.lens[i]; t++, row++) {
            if (t == r.lens[i] - 1) {
                CHECK(isnan(lp[row]));
                continue;
            }
            double want = model_logprob(r.logits[i] + (size_t)t * V, V, r.toks[i][t + 1]);
            lp_err = fmax(lp_err, fabs(lp[row] - want) / fmax(1.0, fabs(want)));
        }
    }
    CHECK_MSG(lp_err <= 1e-4, "%s logprob err %.3g", file, lp_err);

    /* errors: out-of-range token, repeated slot, overflowing a slot */
    model_ctx_reset_all(c);
    int32_t bad = (int32_t)V;
    struct model_seq bs = {.slot = 0, .tokens = &bad, .n = 1};
    CHECK(model_forward(c, &bs, 1, MODEL_LOGITS_LAST, logits) == SF_EINVAL);
    struct model_seq two[2] = {{.slot = 1, .tokens = r.toks[1], .n = 1},
                               {.slot = 1, .tokens = r.toks[1], .n = 1}};
    CHECK(model_forward(c, two, 2, MODEL_LOGITS_LAST, logits) == SF_EINVAL);
    int32_t *many = calloc(40, sizeof *many);
    struct model_seq big = {.slot = 2, .tokens = many, .n = 33};
    CHECK(model_forward(c, &big, 1, MODEL_LOGITS_NONE, NULL) == SF_ERANGE);
    CHECK_EQ_INT(model_ctx_len(c, 2), 0);
    free(many);

    free(lp);
    free(done);
    free(logits);
    free(seqs);
    model_ctx_destroy(&c);
    model_destroy(&m);
    ref_free(&r);
}

int main(void)
{
    log_init("test_random_models", LOG_LOGFMT, LOG_ERROR);
    const char *script = "tests/models/make_random_models.py";
    if (access(script, R_OK) != 0) {
        printf("skip: %s not found (run from the repository root)\n", script);
        return TEST_SKIP;
    }
    /* python3 with numpy: $PYTHON, else python3, else Debian's /usr/bin/python3 */
    const char *cands[] = {getenv("PYTHON"), "python3", "/usr/bin/python3"};
    const char *py = NULL;
    char cmd[2048];
    for (size_t i = 0; i < SF_ARRAY_LEN(cands) && !py; i++) {
        if (!cands[i] || !*cands[i]) continue;
        snprintf(cmd, sizeof cmd, "%s -c 'import numpy' >/dev/null 2>&1", cands[i]);
        if (system(cmd) == 0) py = cands[i];
    }
    if (!py) {
        printf("skip: no python3 with numpy (apt-get install python3-numpy)\n");
        return TEST_SKIP;
    }
    char dir[] = "/tmp/saeflow_random_models_XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(cmd, sizeof cmd, "%s %s %s", py, script, dir);
    int rc = system(cmd);
    CHECK_MSG(rc == 0, "%s failed", cmd);
    if (rc == 0) {
        check_model(dir, "llama_hf", "llama_hf.ref", MODEL_ARCH_LLAMA);
        check_model(dir, "llama.gguf", "llama_gguf.ref", MODEL_ARCH_LLAMA);
        check_model(dir, "gpt2_hf", "gpt2_hf.ref", MODEL_ARCH_GPT2);
        check_model(dir, "gpt2.gguf", "gpt2_gguf.ref", MODEL_ARCH_GPT2);
    }
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_exit();
}

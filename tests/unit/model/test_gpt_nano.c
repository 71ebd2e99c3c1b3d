/* GPT-2 path on gpt-nano-sort (minGPT, nn.Linear weights): the residual stream after
 * every block (read through the hook API) and the logits match the activations
 * recorded by the original PyTorch run (gpt-nano-sort-t0-partials.json), and batched
 * greedy generation sorts all 729 inputs. Hooks that modify activations take effect. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../support/check.h"
#include "core/core.h"
#include "model/model.h"

#define B 3
#define T 11
#define D 48

static int b64_val(int ch)
{
    if (ch >= 'A' && ch <= 'Z') return ch - 'A';
    if (ch >= 'a' && ch <= 'z') return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9') return ch - '0' + 52;
    if (ch == '+') return 62;
    if (ch == '/') return 63;
    return -1;
}

/* Decodes the base64 float32 array of entry `key` into a malloc'd array of n floats. */
static float *json_floats(const cJSON *root, const char *key, size_t n)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, key);
    const cJSON *data = cJSON_GetObjectItemCaseSensitive(e, "data");
    if (!cJSON_IsString(data)) return NULL;
    const char *s = data->valuestring;
    size_t cap = n * sizeof(float), len = 0;
    unsigned char *bytes = calloc(cap + 3, 1);
    unsigned acc = 0;
    int bits = 0;
    for (; *s && *s != '='; s++) {
        int v = b64_val((unsigned char)*s);
        if (v < 0) continue;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (len < cap + 3) bytes[len++] = (unsigned char)(acc >> bits);
        }
    }
    if (len != cap) {
        fprintf(stderr, "%s: %zu bytes, expected %zu\n", key, len, cap);
        free(bytes);
        return NULL;
    }
    float *f = malloc(cap);
    memcpy(f, bytes, cap);
    free(bytes);
    return f;
}

struct capture {
    float resid_post[3][B * T * D];
    float resid_pre[3][B * T * D];
    float resid_mid[3][B * T * D];
    float attn_out[3][B * T * D];
    float mlp_out[3][B * T * D];
    size_t calls;
    int order_ok;
};

static int capture_hook(void *user, const struct model_act *a)
{
    struct capture *cap = user;
    float(*dst)[B * T * D] = NULL;
    switch (a->point) {
    case MODEL_HOOK_RESID_PRE:
        dst = cap->resid_pre;
        break;
    case MODEL_HOOK_RESID_MID:
        dst = cap->resid_mid;
        break;
    case MODEL_HOOK_RESID_POST:
        dst = cap->resid_post;
        break;
    case MODEL_HOOK_ATTN_OUT:
        dst = cap->attn_out;
        break;
    case MODEL_HOOK_MLP_OUT:
        dst = cap->mlp_out;
        break;
    default:
        return 0;
    }
    if (a->n_tokens != B * T || a->d != D) return SF_EINVAL;
    memcpy(dst[a->layer], a->x, sizeof dst[0]);
    /* rows are sequence-major, positions 0..T-1 */
    for (size_t i = 0; i < a->n_tokens; i++)
        if (a->seq[i] != i / T || a->pos[i] != i % T || a->slot[i] != i / T) cap->order_ok = 0;
    cap->calls++;
    return 0;
}

static int zero_hook(void *user, const struct model_act *a)
{
    (void)user;
    memset(a->x, 0, a->n_tokens * a->d * sizeof(float));
    return 0;
}

static int stop_hook(void *user, const struct model_act *a)
{
    (void)a;
    ++*(int *)user;
    return 42;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void test_partials(struct model *m, const cJSON *root)
{
    float *idxf = json_floats(root, "idx", B * T);
    float *ref_blocks[3] = {json_floats(root, "block0", B * T * D),
                            json_floats(root, "block1", B * T * D),
                            json_floats(root, "block2", B * T * D)};
    float *ref_logits = json_floats(root, "lm_head", B * T * 3);
    float *ref_attn = json_floats(root, "yProj", B * T * D);
    float *ref_x = json_floats(root, "x", B * T * D);
    CHECK(idxf && ref_blocks[0] && ref_blocks[1] && ref_blocks[2] && ref_logits && ref_attn &&
          ref_x);
    if (!idxf || !ref_blocks[2] || !ref_logits || !ref_attn || !ref_x) return;
    int32_t ids[B][T];
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) ids[b][t] = (int32_t)idxf[b * T + t];

    struct model_ctx *c = model_ctx_new(m, B, 0);
    CHECK(c != NULL);
    struct capture *cap = calloc(1, sizeof *cap);
    cap->order_ok = 1;
    char name[64];
    for (size_t l = 0; l < 3; l++)
        for (int p = 0; p < MODEL_HOOK_COUNT; p++) {
            model_hook_name(l, (enum model_hook_point)p, name, sizeof name);
            CHECK_EQ_INT(model_ctx_add_hook(c, name, capture_hook, cap), 0);
        }
    struct model_seq seqs[B];
    for (int b = 0; b < B; b++)
        seqs[b] = (struct model_seq){.slot = (size_t)b, .tokens = ids[b], .n = T};
    float logits[B * T * 3];
    CHECK_EQ_INT(model_forward(c, seqs, B, MODEL_LOGITS_ALL, logits), 0);
    CHECK_EQ_INT(cap->calls, 15);
    CHECK(cap->order_ok);
    for (int l = 0; l < 3; l++) {
        double e = max_abs_diff(cap->resid_post[l], ref_blocks[l], B * T * D);
        printf("block%d resid_post max|diff| = %.3g\n", l, e);
        CHECK_MSG(e <= 1e-4, "block%d max|diff| %.3g", l, e);
    }
    CHECK(max_abs_diff(cap->resid_pre[0], ref_x, B * T * D) <= 1e-6);
    CHECK(max_abs_diff(cap->attn_out[0], ref_attn, B * T * D) <= 1e-4);
    double el = max_abs_diff(logits, ref_logits, B * T * 3);
    printf("logits max|diff| = %.3g\n", el);
    CHECK(el <= 1e-4);
    /* hook algebra: pre(L+1) == post(L), mid == pre + attn_out, post == mid + mlp_out */
    for (int l = 0; l < 3; l++) {
        if (l < 2) CHECK(max_abs_diff(cap->resid_pre[l + 1], cap->resid_post[l], B * T * D) == 0);
        double e1 = 0, e2 = 0;
        for (size_t i = 0; i < B * T * D; i++) {
            e1 =
                fmax(e1, fabs(cap->resid_mid[l][i] - (cap->resid_pre[l][i] + cap->attn_out[l][i])));
            e2 =
                fmax(e2, fabs(cap->resid_post[l][i] - (cap->resid_mid[l][i] + cap->mlp_out[l][i])));
        }
        CHECK(e1 <= 1e-6 && e2 <= 1e-6);
    }

    /* Modifying: zeroing the last residual makes the logits lm_head @ ln_f.bias. */
    model_ctx_clear_hooks(c);
    model_ctx_reset_all(c);
    CHECK_EQ_INT(model_ctx_add_hook(c, "blocks.2.hook_resid_post", zero_hook, NULL), 0);
    CHECK_EQ_INT(model_forward(c, seqs, B, MODEL_LOGITS_ALL, logits), 0);
    const float *W = model_unembed(m), *bf = model_final_norm_bias(m);
    for (int v = 0; v < 3; v++) {
        double want = 0;
        for (int i = 0; i < D; i++) want += (double)W[v * D + i] * bf[i];
        for (int r = 0; r < B * T; r++) CHECK_NEAR(logits[r * 3 + v], want, 1e-5, 1e-5);
    }

    /* A hook's non-zero return aborts the pass and leaves the cache lengths alone. */
    model_ctx_clear_hooks(c);
    model_ctx_reset_all(c);
    int stops = 0;
    CHECK_EQ_INT(model_ctx_add_hook(c, "blocks.1.hook_mlp_out", stop_hook, &stops), 0);
    CHECK_EQ_INT(model_forward(c, seqs, B, MODEL_LOGITS_LAST, logits), 42);
    CHECK_EQ_INT(stops, 1);
    CHECK_EQ_INT(model_ctx_len(c, 0), 0);

    /* Bad hook names are refused. */
    CHECK(model_ctx_add_hook(c, "blocks.3.hook_resid_post", zero_hook, NULL) == SF_EINVAL);
    CHECK(model_ctx_add_hook(c, "blocks.0.hook_resid", zero_hook, NULL) == SF_EINVAL);
    CHECK(model_ctx_add_hook(c, "blocks..hook_resid_pre", zero_hook, NULL) == SF_EINVAL);

    /* Per-token log-probs equal log_softmax of the logits. */
    model_ctx_clear_hooks(c);
    model_ctx_reset_all(c);
    float lp[B * T];
    CHECK_EQ_INT(model_forward_logprobs(c, seqs, B, lp), 0);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            if (t == T - 1) {
                CHECK(isnan(lp[b * T + t]));
                continue;
            }
            double want = model_logprob(ref_logits + (b * T + t) * 3, 3, ids[b][t + 1]);
            CHECK_NEAR(lp[b * T + t], want, 1e-4, 1e-4);
        }

    model_ctx_destroy(&c);
    free(cap);
    free(idxf);
    for (int l = 0; l < 3; l++) free(ref_blocks[l]);
    free(ref_logits);
    free(ref_attn);
    free(ref_x);
}

static void test_sort_all(struct model *m)
{
    enum { N = 729, L = 6 };
    struct model_ctx *c = model_ctx_new(m, N, 0);
    CHECK(c != NULL);
    static int32_t in[N][L], out[N * L];
    const int32_t *prompts[N];
    size_t plens[N], olens[N];
    for (int i = 0; i < N; i++) {
        int v = i;
        for (int j = 0; j < L; j++, v /= 3) in[i][j] = v % 3;
        prompts[i] = in[i];
        plens[i] = L;
    }
    struct model_gen_opts o = {.max_new_tokens = L, .sample = {.temperature = 0}};
    CHECK_EQ_INT(model_generate(c, prompts, plens, N, &o, out, olens), 0);
    int sorted = 0;
    for (int i = 0; i < N; i++) {
        int cnt[3] = {0};
        for (int j = 0; j < L; j++) cnt[in[i][j]]++;
        int ok = olens[i] == L;
        for (int j = 0, k = 0; j < L; j++) {
            while (cnt[k] == 0) k++;
            cnt[k]--;
            if (out[i * L + j] != k) ok = 0;
        }
        sorted += ok;
    }
    printf("sorted %d of %d inputs\n", sorted, N);
    CHECK_EQ_INT(sorted, N);
    model_ctx_destroy(&c);
}

int main(void)
{
    log_init("test_gpt_nano", LOG_LOGFMT, LOG_ERROR);
    const char *dir = test_models_dir();
    if (!dir) {
        printf("skip: shared models not found (set SAEFLOW_MODELS)\n");
        return TEST_SKIP;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/gpt-nano-sort/gpt-nano-sort.safetensors", dir);
    struct model *m = NULL;
    CHECK_EQ_INT(model_load(path, NULL, &m), 0);
    if (!m) return check_exit();
    const struct model_config *cfg = model_config(m);
    CHECK_EQ_INT(cfg->arch, MODEL_ARCH_GPT2);
    CHECK_EQ_INT(cfg->n_layers, 3);
    CHECK_EQ_INT(cfg->dim, 48);
    CHECK_EQ_INT(cfg->vocab_size, 3);
    CHECK_EQ_INT(cfg->max_seq_len, 11);
    CHECK(!cfg->tied_embeddings);
    CHECK_EQ_INT(model_param_count(m), 85728);

    snprintf(path, sizeof path, "%s/gpt-nano-sort/gpt-nano-sort-t0-partials.json", dir);
    char *text = NULL;
    size_t len = 0;
    CHECK_EQ_INT(file_read_all(path, 16u << 20, &text, &len), 0);
    cJSON *root = text ? cJSON_ParseWithLength(text, len) : NULL;
    CHECK(root != NULL);
    if (root) test_partials(m, root);
    cJSON_Delete(root);
    free(text);
    test_sort_all(m);
    model_destroy(&m);
    return check_exit();
}

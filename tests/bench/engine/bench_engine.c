/* bench_engine: engine throughput next to the machine's limits, measured in the same
 * run. Prefill (16 sequences x 128 tokens, one batched call) is compared with the
 * sgemm peak (tensor_sgemm on a large square shape); single-stream decode with the
 * memory read bandwidth (a multi-threaded stream over a buffer much larger than the
 * caches), since decoding reads every weight once per token. Models: stories260K (if
 * the shared models are present) and a random GPT-2-small-shaped model (124M
 * parameters, built in memory). Every number is a median of repeated runs.
 *
 * usage: bench_engine [threads]   (default 2) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "model/model.h"
#include "tensor/tensor.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}
static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- limits ---- */

static double sgemm_peak_gflops(size_t n, int reps)
{
    float *a = malloc(n * n * 4), *b = malloc(n * n * 4), *c = malloc(n * n * 4);
    for (size_t i = 0; i < n * n; i++) a[i] = b[i] = (float)(i % 7) * 0.1f;
    tensor_sgemm(false, true, n, n, n, 1, a, n, b, n, 0, c, n); /* warm up */
    double t[16];
    for (int r = 0; r < reps; r++) {
        double t0 = time_now_s();
        tensor_sgemm(false, true, n, n, n, 1, a, n, b, n, 0, c, n);
        t[r] = time_now_s() - t0;
    }
    free(a), free(b), free(c);
    return 2.0 * n * n * n / median(t, (size_t)reps) / 1e9;
}

/* Read bandwidth: sum a buffer of `bytes` with all threads. */
static double read_bandwidth_gbs(size_t bytes, int reps)
{
    size_t n = bytes / sizeof(float);
    float *x = malloc(n * sizeof(float));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = (float)(i & 1023);
    double t[16], sink = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = time_now_s(), s = 0;
#pragma omp parallel for simd schedule(static) reduction(+ : s)
        for (size_t i = 0; i < n; i++) s += x[i];
        t[r] = time_now_s() - t0;
        sink += s;
    }
    if (sink == 42) printf(" ");
    free(x);
    return (double)bytes / median(t, (size_t)reps) / 1e9;
}

/* memcpy bandwidth (bytes read + written per second), single thread, for reference */
static double memcpy_bandwidth_gbs(size_t bytes, int reps)
{
    char *a = malloc(bytes), *b = malloc(bytes);
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    double t[16];
    for (int r = 0; r < reps; r++) {
        double t0 = time_now_s();
        memcpy(b, a, bytes);
        t[r] = time_now_s() - t0;
    }
    free(a), free(b);
    return 2.0 * (double)bytes / median(t, (size_t)reps) / 1e9;
}

/* ---- engine ---- */

/* FLOPs of a forward over n_seqs sequences of len tokens from an empty cache, with
 * `logit_rows` rows of unembedding. */
static double forward_flops(const struct model_config *c, size_t n_seqs, size_t len,
                            size_t logit_rows)
{
    double q = (double)c->n_heads * c->head_dim, kv = (double)c->n_kv_heads * c->head_dim;
    double up = c->arch == MODEL_ARCH_GPT2 ? c->hidden_dim : 2.0 * c->hidden_dim;
    double per_tok = 2.0 * c->n_layers * (c->dim * (q + 2 * kv) + q * c->dim + c->dim * up +
                                          c->hidden_dim * (double)c->dim);
    /* attention: q.k and p.v over (pos+1) keys per token and head */
    double ctx = (double)len * (len + 1) / 2.0;
    double attn = 2.0 * 2.0 * c->n_layers * q * ctx * n_seqs;
    return per_tok * (double)(n_seqs * len) + attn + 2.0 * logit_rows * c->vocab_size * c->dim;
}

struct limits {
    double gflops, read_gbs;
};

static void bench_model(const char *name, struct model *m, const struct limits *lim, int reps)
{
    const struct model_config *c = model_config(m);
    enum { S = 16, L = 128 };
    size_t V = c->vocab_size;
    struct model_ctx *ctx = model_ctx_new(m, S, L + 64);
    int32_t *toks = malloc(S * L * sizeof *toks);
    struct rng r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < S * L; i++) toks[i] = (int32_t)rng_below(&r, V);
    struct model_seq seqs[S];
    for (size_t i = 0; i < S; i++) seqs[i] = (struct model_seq){.slot = i, .tokens = toks + i * L, .n = L};
    float *logits = malloc((size_t)S * L * V * sizeof(float));
    double t[16];

    /* prefill, logits of the last token of each sequence (capture / generation) */
    for (int k = -1; k < reps; k++) {
        model_ctx_reset_all(ctx);
        double t0 = time_now_s();
        model_forward(ctx, seqs, S, MODEL_LOGITS_LAST, logits);
        if (k >= 0) t[k] = time_now_s() - t0;
    }
    double tp = median(t, (size_t)reps), fl = forward_flops(c, S, L, S);
    printf("%-18s %-26s %10.0f tok/s %8.1f GFLOP/s %6.1f%% of sgemm peak\n", name,
           "prefill 16x128 (last)", S * L / tp, fl / tp / 1e9, 100 * fl / tp / 1e9 / lim->gflops);
    /* prefill with every position's logits (evaluation) */
    for (int k = -1; k < reps; k++) {
        model_ctx_reset_all(ctx);
        double t0 = time_now_s();
        model_forward(ctx, seqs, S, MODEL_LOGITS_ALL, logits);
        if (k >= 0) t[k] = time_now_s() - t0;
    }
    tp = median(t, (size_t)reps);
    fl = forward_flops(c, S, L, S * L);
    printf("%-18s %-26s %10.0f tok/s %8.1f GFLOP/s %6.1f%% of sgemm peak\n", name,
           "prefill 16x128 (all)", S * L / tp, fl / tp / 1e9, 100 * fl / tp / 1e9 / lim->gflops);

    /* single-stream decode: one prompt token, then N steps; median time per step */
    enum { N = 32 };
    double step[N * 4];
    size_t ns = 0;
    for (int k = 0; k < 2 && ns + N <= SF_ARRAY_LEN(step); k++) {
        model_ctx_reset(ctx, 0);
        struct model_seq s0 = {.slot = 0, .tokens = toks, .n = 1};
        model_forward(ctx, &s0, 1, MODEL_LOGITS_LAST, logits);
        for (int i = 0; i < N; i++) {
            int32_t next = sample_argmax(logits, V);
            struct model_seq s1 = {.slot = 0, .tokens = &next, .n = 1};
            double t0 = time_now_s();
            model_forward(ctx, &s1, 1, MODEL_LOGITS_LAST, logits);
            step[ns++] = time_now_s() - t0;
        }
    }
    double ts = median(step, ns);
    double bytes = (double)model_weight_bytes_per_token(m);
    printf("%-18s %-26s %10.1f tok/s %8.2f GB/s   %6.1f%% of read bandwidth (%.1f MB/token)\n",
           name, "decode 1 stream", 1 / ts, bytes / ts / 1e9, 100 * bytes / ts / 1e9 / lim->read_gbs,
           bytes / 1e6);
    free(logits);
    free(toks);
    model_ctx_destroy(&ctx);
}

int main(int argc, char **argv)
{
    log_init("bench_engine", LOG_LOGFMT, LOG_WARN);
    int threads = 2;
    if (argc > 1) {
        int64_t v;
        if (parse_i64(argv[1], &v) != 0 || v < 1 || v > 1024) {
            fprintf(stderr, "usage: bench_engine [threads]\n");
            return 2;
        }
        threads = (int)v;
    }
    tensor_set_threads(threads);
    int reps = 5;
    struct limits lim;
    lim.gflops = sgemm_peak_gflops(2048, reps);
    lim.read_gbs = read_bandwidth_gbs((size_t)1 << 30, reps);
    double cp = memcpy_bandwidth_gbs((size_t)512 << 20, reps);
    printf("engine benchmark, %d threads, medians of %d runs\n", threads, reps);
    printf("limits: sgemm 2048^3 %.1f GFLOP/s; read bandwidth %.2f GB/s (%d threads); "
           "memcpy %.2f GB/s (1 thread, read+write)\n\n",
           lim.gflops, lim.read_gbs, threads, cp);
    printf("%-18s %-26s %16s %16s %s\n", "model", "workload", "throughput", "achieved", "vs limit");

    const char *dir = getenv("SAEFLOW_MODELS");
    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K/stories260K.bin", dir ? dir : "../shared/models");
    struct model *m = NULL;
    struct model_load_opts lo = {.no_tokenizer = true};
    if (model_load(path, &lo, &m) == 0) {
        bench_model("stories260K", m, &lim, reps);
        model_destroy(&m);
    } else {
        printf("stories260K: not found at %s (set SAEFLOW_MODELS), skipped\n", path);
    }

    struct model_config c;
    memset(&c, 0, sizeof c);
    c.arch = MODEL_ARCH_GPT2;
    c.dim = 768;
    c.hidden_dim = 3072;
    c.n_layers = 12;
    c.n_heads = c.n_kv_heads = 12;
    c.head_dim = 64;
    c.vocab_size = 50257;
    c.max_seq_len = 1024;
    c.norm_eps = 1e-5f;
    c.tied_embeddings = true;
    c.bos_id = c.eos_id = 50256;
    if (model_new_random(&c, 1, 0.02f, &m) != 0) {
        fprintf(stderr, "could not build the random GPT-2\n");
        return 1;
    }
    char name[64];
    snprintf(name, sizeof name, "gpt2-124M-random");
    printf("(%s: %zu parameters)\n", name, model_param_count(m));
    bench_model(name, m, &lim, 3);
    model_destroy(&m);
    return 0;
}

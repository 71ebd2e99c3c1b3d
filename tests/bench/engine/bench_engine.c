/* bench_engine: engine throughput next to the machine's limits, measured in the same
 * run and interleaved with the work so that both see the same machine (other jobs on
 * a shared box move both by 2x within a minute):
 *   - prefill (16 sequences x 128 tokens, one batched call) against the sgemm peak:
 *     every prefill run is followed by a tensor_sgemm at 2048^3;
 *   - single-stream decode against the memory read bandwidth: every decode step is
 *     followed by multi-threaded stream reads of a 512 MB buffer (plain pthreads, and
 *     OpenBLAS's threaded sdot; the larger counts), since decoding reads every weight
 *     once per token.
 * Models: stories260K (if the shared models are present) and a random GPT-2-small-shaped
 * model (124M parameters, built in memory). Throughputs and limits are medians; the
 * fraction is the median over runs of (achieved / the limit measured right after it).
 *
 * usage: bench_engine [threads]   (default 2) */
#include <cblas.h>
#include <math.h>
#include <pthread.h>
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
static double median(const double *v, size_t n)
{
    double *c = malloc(n * sizeof *c);
    memcpy(c, v, n * sizeof *c);
    qsort(c, n, sizeof *c, cmp_double);
    double m = n % 2 ? c[n / 2] : 0.5 * (c[n / 2 - 1] + c[n / 2]);
    free(c);
    return m;
}

/* ---- limits ---- */

struct limit_bufs {
    size_t gemm_n;
    float *a, *b, *c; /* (gemm_n, gemm_n) */
    size_t read_n;
    float *r; /* (read_n) */
};

static void limits_init(struct limit_bufs *l)
{
    l->gemm_n = 2048;
    size_t nn = l->gemm_n * l->gemm_n;
    l->a = malloc(nn * 4), l->b = malloc(nn * 4), l->c = malloc(nn * 4);
    for (size_t i = 0; i < nn; i++) l->a[i] = l->b[i] = (float)(i % 7) * 0.1f;
    l->read_n = ((size_t)512 << 20) / sizeof(float);
    l->r = malloc(l->read_n * sizeof(float));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < l->read_n; i++) l->r[i] = (float)(i & 1023);
}

static void limits_fini(struct limit_bufs *l)
{
    free(l->a), free(l->b), free(l->c), free(l->r);
}

/* GFLOP/s of one square sgemm. */
static double sgemm_gflops(struct limit_bufs *l)
{
    size_t n = l->gemm_n;
    double t0 = time_now_s();
    tensor_sgemm(false, true, n, n, n, 1, l->a, n, l->b, n, 0, l->c, n);
    return 2.0 * n * n * n / (time_now_s() - t0) / 1e9;
}

/* GB/s of one read of the whole buffer by `threads` pthreads, each summing its own
 * slice (plain threads, one join: no OpenMP barrier whose spinning would distort the
 * number when the machine is shared). */
struct read_part {
    const float *x;
    size_t n;
    float sum;
};

static void *read_part_run(void *arg)
{
    struct read_part *p = arg;
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < p->n; i++) s += p->x[i];
    p->sum = s;
    return NULL;
}

static int read_threads = 2;

static double read_gbs(struct limit_bufs *l)
{
    enum { MAXT = 64 };
    struct read_part parts[MAXT];
    pthread_t th[MAXT];
    size_t T = (size_t)SF_MIN(read_threads, MAXT);
    double t0 = time_now_s();
    for (size_t t = 0; t < T; t++) {
        size_t a = l->read_n * t / T, b = l->read_n * (t + 1) / T;
        parts[t] = (struct read_part){.x = l->r + a, .n = b - a};
        if (t > 0) pthread_create(&th[t], NULL, read_part_run, &parts[t]);
    }
    read_part_run(&parts[0]);
    for (size_t t = 1; t < T; t++) pthread_join(th[t], NULL);
    double dt = time_now_s() - t0;
    if (parts[0].sum == -1) printf(" ");
    return (double)l->read_n * sizeof(float) / dt / 1e9;
}

/* GB/s of OpenBLAS's threaded sdot over the buffer (x . x: one stream). Measured too
 * because right after a BLAS call OpenBLAS's own threads are still spinning and slow
 * down any other threads; the limit used is the larger of the two reads. */
static double read_gbs_blas(struct limit_bufs *l)
{
    double t0 = time_now_s();
    float s = cblas_sdot((blasint)l->read_n, l->r, 1, l->r, 1);
    double dt = time_now_s() - t0;
    if (s == -1) printf(" ");
    return (double)l->read_n * sizeof(float) / dt / 1e9;
}

static double read_limit(struct limit_bufs *l)
{
    double a = read_gbs_blas(l), b = read_gbs(l);
    return a > b ? a : b;
}

static double memcpy_gbs(size_t bytes, int reps)
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
 * `logit_rows` rows of unembedding. Attention counts only the causal half. */
static double forward_flops(const struct model_config *c, size_t n_seqs, size_t len,
                            size_t logit_rows)
{
    double q = (double)c->n_heads * c->head_dim, kv = (double)c->n_kv_heads * c->head_dim;
    double up = c->arch == MODEL_ARCH_GPT2 ? c->hidden_dim : 2.0 * c->hidden_dim;
    double per_tok =
        2.0 * c->n_layers *
        (c->dim * (q + 2 * kv) + q * c->dim + c->dim * up + c->hidden_dim * (double)c->dim);
    double ctx = (double)len * (len + 1) / 2.0;
    double attn = 2.0 * 2.0 * c->n_layers * q * ctx * n_seqs;
    return per_tok * (double)(n_seqs * len) + attn + 2.0 * logit_rows * c->vocab_size * c->dim;
}

#define MAX_REPS 64

static void prefill(const char *name, struct model_ctx *ctx, const struct model_seq *seqs, size_t S,
                    size_t L, enum model_logits want, float *logits, int reps,
                    struct limit_bufs *lb)
{
    const struct model_config *c = model_config(model_ctx_model(ctx));
    double fl = forward_flops(c, S, L, want == MODEL_LOGITS_ALL ? S * L : S);
    double got[MAX_REPS], peak[MAX_REPS], frac[MAX_REPS];
    for (int k = -1; k < reps; k++) {
        model_ctx_reset_all(ctx);
        double t0 = time_now_s();
        model_forward(ctx, seqs, S, want, logits);
        double dt = time_now_s() - t0;
        double p = sgemm_gflops(lb);
        if (k < 0) continue; /* warm-up */
        got[k] = fl / dt / 1e9;
        peak[k] = p;
        frac[k] = got[k] / p;
    }
    double g = median(got, (size_t)reps), p = median(peak, (size_t)reps);
    double f = median(frac, (size_t)reps);
    printf("%-18s %-22s %9.0f tok/s %7.1f GFLOP/s  sgemm peak %6.1f GFLOP/s  %5.1f%%\n", name,
           want == MODEL_LOGITS_ALL ? "prefill 16x128 all" : "prefill 16x128 last",
           g * 1e9 / fl * (double)(S * L), g, p, 100 * f);
}

static void decode(const char *name, struct model_ctx *ctx, const int32_t *prompt, int steps,
                   float *logits, struct limit_bufs *lb)
{
    const struct model *m = model_ctx_model(ctx);
    size_t V = model_config(m)->vocab_size;
    double bytes = (double)model_weight_bytes_per_token(m);
    double got[MAX_REPS], bw[MAX_REPS], tps[MAX_REPS], frac[MAX_REPS];
    model_ctx_reset(ctx, 0);
    struct model_seq s0 = {.slot = 0, .tokens = prompt, .n = 1};
    model_forward(ctx, &s0, 1, MODEL_LOGITS_LAST, logits);
    for (int i = 0; i < steps; i++) {
        int32_t next = sample_argmax(logits, V);
        struct model_seq s1 = {.slot = 0, .tokens = &next, .n = 1};
        double t0 = time_now_s();
        model_forward(ctx, &s1, 1, MODEL_LOGITS_LAST, logits);
        double dt = time_now_s() - t0;
        tps[i] = 1 / dt;
        got[i] = bytes / dt / 1e9;
        bw[i] = read_limit(lb);
        frac[i] = got[i] / bw[i];
    }
    double g = median(got, (size_t)steps), b = median(bw, (size_t)steps);
    double f = median(frac, (size_t)steps);
    printf("%-18s %-22s %9.1f tok/s %7.2f GB/s    read bandwidth %6.2f GB/s   %5.1f%%  "
           "(%.1f MB/token%s)\n",
           name, "decode 1 stream", median(tps, (size_t)steps), g, b, 100 * f, bytes / 1e6,
           bytes < 32e6 ? ", cache-resident: not DRAM-bound" : "");
}

static void bench_model(const char *name, struct model *m, int reps, int steps,
                        struct limit_bufs *lb)
{
    const struct model_config *c = model_config(m);
    enum { S = 16, L = 128 };
    size_t V = c->vocab_size;
    struct model_ctx *ctx = model_ctx_new(m, S, L + 64);
    int32_t *toks = malloc(S * L * sizeof *toks);
    float *logits = malloc((size_t)S * L * V * sizeof(float));
    if (!ctx || !toks || !logits) {
        fprintf(stderr, "%s: out of memory\n", name);
        exit(1);
    }
    struct rng r;
    rng_seed(&r, 1);
    for (size_t i = 0; i < S * L; i++) toks[i] = (int32_t)rng_below(&r, V);
    struct model_seq seqs[S];
    for (size_t i = 0; i < S; i++)
        seqs[i] = (struct model_seq){.slot = i, .tokens = toks + i * L, .n = L};
    prefill(name, ctx, seqs, S, L, MODEL_LOGITS_LAST, logits, reps, lb);
    prefill(name, ctx, seqs, S, L, MODEL_LOGITS_ALL, logits, reps, lb);
    decode(name, ctx, toks, steps, logits, lb);
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
    read_threads = threads;
    struct limit_bufs lb;
    limits_init(&lb);
    printf("engine benchmark, %d threads; limits measured between runs (sgemm 2048^3, "
           "stream read of 512 MB); memcpy %.2f GB/s (1 thread, read+write) for reference\n\n",
           threads, memcpy_gbs((size_t)256 << 20, 5));
    printf("%-18s %-22s %15s %15s  %-30s %s\n", "model", "workload", "throughput", "achieved",
           "limit (same run)", "fraction");

    const char *dir = getenv("SAEFLOW_MODELS");
    char path[1024];
    snprintf(path, sizeof path, "%s/stories260K/stories260K.bin", dir ? dir : "../shared/models");
    struct model *m = NULL;
    struct model_load_opts lo = {.no_tokenizer = true};
    if (model_load(path, &lo, &m) == 0) {
        bench_model("stories260K", m, 9, 31, &lb);
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
    bench_model("gpt2-124M-random", m, 5, 31, &lb);
    printf("(gpt2-124M-random: %zu parameters, %.1f MB of weights read per decoded token)\n",
           model_param_count(m), model_weight_bytes_per_token(m) / 1e6);
    model_destroy(&m);
    limits_fini(&lb);
    return 0;
}

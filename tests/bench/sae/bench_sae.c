/* bench_sae: the Top-K SAE training step against its own limit, one dense GEMM of the
 * encoder's shape (B x d times d x n, tensor_sgemm), measured in the same run on the
 * same threads. Prints tokens/s, the medians, the step/GEMM ratio and where the rest
 * of the step goes. A dense PyTorch Top-K step costs about 8x the GEMM; sparsify about
 * 3x; the goals here are <= 1.2x (large shapes) and <= 2.5x (small).
 *
 *   bench_sae [--threads N] [--batch B] [--reps R] [--quick] [--auxk]
 * --auxk also times a step with AuxK active (half the latents dead).
 *
 * Runs with OMP_WAIT_POLICY=passive unless the environment sets a policy (see main).
 * On a shared machine the medians move with the load; the fastest rep (min) and the
 * ratio of process CPU seconds are printed beside them. Small shapes pay for OpenMP
 * wake-ups and barriers, which a loaded scheduler makes slow. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "sae/sae_train.h"
#include "tensor/tensor.h"

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv)
{
    /* OpenBLAS (pthreads) and libgomp each keep spinning threads; with OpenMP's default
     * active wait they fight over the cores between the GEMM and our loops (small
     * shapes: 4-7x slower steps). libgomp reads OMP_WAIT_POLICY only at start-up, so
     * set it and re-execute once unless the caller chose a policy. */
    proc_reexec_with_env(argv, "OMP_WAIT_POLICY", "passive");
    int threads = 2, reps = 5;
    size_t B = 4096;
    bool quick = false, auxk = false;
    for (int i = 1; i < argc; i++) {
        int64_t v;
        if (!strcmp(argv[i], "--threads") && i + 1 < argc && parse_i64(argv[++i], &v) == 0)
            threads = (int)v;
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc && parse_i64(argv[++i], &v) == 0)
            B = (size_t)v;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc && parse_i64(argv[++i], &v) == 0)
            reps = (int)v;
        else if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--auxk"))
            auxk = true;
        else {
            fprintf(stderr,
                    "usage: bench_sae [--threads N] [--batch B] [--reps R] [--quick] [--auxk]\n");
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    log_init("bench_sae", LOG_LOGFMT, LOG_WARN);
    tensor_set_threads(threads);
    struct shape {
        size_t d, n, k;
    } shapes[] = {{64, 1024, 16}, {512, 8192, 32}, {768, 24576, 32}};
    size_t n_shapes = quick ? 1 : SF_ARRAY_LEN(shapes);
    printf("SAE Top-K training step vs one encoder GEMM (B x d) x (d x n), B = %zu, %d threads, "
           "median of %d\n",
           B, threads, reps);
    printf("OMP_WAIT_POLICY=%s\n", getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "-");
    printf("(min = fastest rep, the least disturbed on a shared machine; cpu = process CPU "
           "seconds, step / gemm)\n");
    printf("%5s %6s %3s | %9s %9s %6s | %9s %9s %6s | %6s | %10s | %s\n", "d", "n", "k", "gemm med",
           "step med", "ratio", "gemm min", "step min", "ratio", "cpu", "tokens/s",
           "step breakdown ms (mean): input gemm tokens reduce transpose latents adam");
    for (size_t si = 0; si < n_shapes; si++) {
        const size_t d = shapes[si].d, n = shapes[si].n, k = shapes[si].k;
        struct sae_train_config cfg;
        sae_train_config_default(&cfg, SAE_TOPK, d, n, k);
        struct sae_trainer *t = sae_trainer_new(&cfg);
        float *x = malloc(B * d * sizeof *x);
        float *a = malloc(B * n * sizeof *a);
        float *w = malloc(n * d * sizeof *w);
        if (!t || !x || !a || !w) {
            fprintf(stderr, "bench_sae: out of memory at d=%zu n=%zu\n", d, n);
            return 1;
        }
        struct rng r;
        rng_seed(&r, 1);
        for (size_t q = 0; q < B * d; q++) x[q] = rng_normal(&r) + (q % 7 == 0 ? 1.0f : 0.0f);
        for (size_t q = 0; q < n * d; q++) w[q] = rng_normal(&r) * 0.05f;
        double *ts = malloc((size_t)reps * sizeof *ts), *tg = malloc((size_t)reps * sizeof *tg);
        double cg = 0, cs = 0;
        double prof[SAE_PROF_N] = {0}, pacc[SAE_PROF_N] = {0};
        struct sae_train_metrics m;
        /* warm-up: first step estimates the input scale and b_dec */
        sae_trainer_step(t, x, B, &m);
        tensor_sgemm(false, true, B, n, d, 1.0f, x, d, w, d, 0.0f, a, n);
        for (int rep = 0; rep < reps; rep++) {
            double c0 = cpu_now(), t0 = time_now_s();
            tensor_sgemm(false, true, B, n, d, 1.0f, x, d, w, d, 0.0f, a, n);
            double c1 = cpu_now(), t1 = time_now_s();
            sae_trainer_step(t, x, B, &m);
            double t2 = time_now_s(), c2 = cpu_now();
            cg += c1 - c0;
            cs += c2 - c1;
            tg[rep] = t1 - t0;
            ts[rep] = t2 - t1;
            sae_trainer_profile(t, prof);
            for (int q = 0; q < SAE_PROF_N; q++) pacc[q] += prof[q] / reps;
        }
        double mg = median(tg, (size_t)reps), ms = median(ts, (size_t)reps);
        double ng = tg[0], ns = ts[0]; /* sorted by median() */
        printf("%5zu %6zu %3zu | %9.2f %9.2f %5.2fx | %9.2f %9.2f %5.2fx | %5.2fx | %10.0f |", d, n,
               k, mg * 1e3, ms * 1e3, ms / mg, ng * 1e3, ns * 1e3, ns / ng, cs / cg,
               (double)B / ms);
        for (int q = 0; q < SAE_PROF_N; q++) printf(" %.2f", pacc[q] * 1e3);
        printf("\n");
        if (auxk) {
            /* kill half the latents (a large negative bias: a bench-only poke at the
             * trainer's weights), with a 1-token dead window, and step once to mark them */
            sae_trainer_destroy(&t);
            cfg.dead_tokens = 1;
            t = sae_trainer_new(&cfg);
            struct sae *ws = (struct sae *)sae_trainer_sae(t);
            for (size_t i = 1; i < n; i += 2) ws->b_enc[i] = -1e4f;
            sae_trainer_step(t, x, B, &m);
            for (int rep = 0; rep < reps; rep++) {
                double t1 = time_now_s();
                sae_trainer_step(t, x, B, &m);
                ts[rep] = time_now_s() - t1;
            }
            ms = median(ts, (size_t)reps);
            printf("%5s %6s %3s | %9s %9.2f %5.2fx | %9s %9s %6s | %6s | %10.0f | with AuxK: "
                   "k_aux %zu, %.0f%% of latents dead\n",
                   "", "", "", "", ms * 1e3, ms / mg, "", "", "", "", (double)B / ms,
                   sae_train_config_k_aux(&cfg), m.dead_frac * 100);
        }
        fflush(stdout);
        free(ts);
        free(tg);
        free(x);
        free(a);
        free(w);
        sae_trainer_destroy(&t);
    }
    return 0;
}

/* `saeflow train --activations FILE...`: trains an SAE on activation shards in one
 * process. Each shard is a safetensors file with a tensor "activations" [tokens, d_in]
 * (F32, F16 or BF16) and, optionally, __metadata__ hook_name / model_name /
 * hook_layer / context_size / prepend_bos / exclude_special_tokens / dataset_path
 * (what saeflow-capture writes), which the exported cfg.json carries. Batches are drawn without
 * replacement from a seeded permutation of all tokens (a new one each epoch), so a run resumed from
 * a checkpoint sees exactly the batches the uninterrupted run would have seen.
 *
 * --checkpoint DIR keeps DIR/trainer.safetensors (every --checkpoint-tokens, at the
 * end, and on Ctrl-C); --resume continues from it with its own arch, n and k (a
 * different --arch/--n/--expansion/--k is refused, exit 2) and its own plan unless
 * --tokens gives a new one (applied and said: "extending plan from X to Y tokens"). --out DIR
 * exports a SAELens v6 directory (norm folded, BatchTopK as JumpReLU, sparsity.safetensors measured
 * on up to 65536 training tokens). A progress line on stderr shows tokens, loss, FVU, L0, dead %, k
 * and the ETA. --backend cpu|cuda|auto picks where the step runs (cuda: Top-K only; auto falls back
 * to the CPU and says which it chose). Exit 0, 1 on runtime failure, 2 on usage errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "core/core.h"
#include "safetensors/safetensors.h"
#include "sae/sae.h"
#include "sae/sae_backend.h"
#include "sae/sae_io.h"
#include "sae/sae_sweep.h"
#include "sae/sae_train.h"
#include "tensor/tensor.h"
#include "tensor/tensor_cuda.h"

#define MAX_SHARDS 4096
#define MAX_SWEEP  32
#define HELD_MAX   65536

static void usage(FILE *f)
{
    fprintf(f, "usage: saeflow train --activations FILE [FILE...] [options]\n"
               "  --activations FILE...   safetensors shards with \"activations\" [tokens, d_in]\n"
               "  --arch A                topk (default) | batchtopk | standard\n"
               "  --n N | --expansion E   latents (default: 8 x d_in)\n"
               "  --k K                   active latents per token (default 32)\n"
               "  --k0 K0                 kScheduler start (default: off)\n"
               "  --k-anneal-tokens T     tokens over which k goes from k0 to k\n"
               "  --k-schedule S          linear (default) | cosine | exp\n"
               "  --optimizer O           adam (default) | signsgd_sf (SignSGD, schedule-free\n"
               "                          averaging; exports the averaged weights)\n"
               "  --lr LR                 default: base / sqrt(n / 2^14) * budget, base 2e-4\n"
               "                          (adam) or 5e-3 (signsgd_sf), budget =\n"
               "                          clamp(sqrt(2^30 / tokens), 1, 16)\n"
               "  --sweep lr=A,B,...      train briefly at each rate on a slice, print the\n"
               "                          held-out FVU table, then train with the best\n"
               "  --sweep-tokens T        the sweep's training slice (default 262144)\n"
               "  --heldout FILE...       held-out shards: the sweep measures on them (default:\n"
               "                          65536 tokens of the data after the slice) and the\n"
               "                          trained SAE's FVU, L0, dead and dense are printed\n"
               "  --batch B               tokens per step (default 4096)\n"
               "  --tokens T              tokens to train on (default: one pass over the data)\n"
               "  --warmup-tokens T       linear lr warm-up (default 0)\n"
               "  --lr-decay-start F      linear lr decay to 0 over the tokens after F * tokens\n"
               "                          (default 0.8; 1 = none)\n"
               "  --sf-momentum M         signsgd_sf: y = (1-M) z + M x (default 0.95)\n"
               "  --no-init-scale         keep the tied encoder at unit rows (default: scaled\n"
               "                          to the least-squares fit of the first batch)\n"
               "  --auxk-alpha A          AuxK weight (default 1/32; 0 = off)\n"
               "  --dead-tokens T         silent this long = dead (default: min(10M,\n"
               "                          dead-run-fraction x tokens))\n"
               "  --dead-run-fraction F   see --dead-tokens (default 0.05)\n"
               "  --multi-topk            loss L(k) + L(4k)/8 (topk)\n"
               "  --l1 L                  L1 coefficient (standard, default 5)\n"
               "  --ghost-grads           ghost grads on dead latents (standard)\n"
               "  --grad-clip C           clip the global grad norm (default off)\n"
               "  --seed S                init and data order (default 1)\n"
               "  --threads N             CPU threads (default: all)\n"
               "  --backend B             cpu (default) | cuda | auto (CUDA when available)\n"
               "  --cuda-math M           fp32 (default) | tf32 | bf16 GEMMs on CUDA\n"
               "  --out DIR               write a SAELens v6 directory at the end\n"
               "  --checkpoint DIR        keep DIR/trainer.safetensors\n"
               "  --checkpoint-tokens T   checkpoint period (default 10000000)\n"
               "  --resume                continue from --checkpoint DIR (its arch, n and k: a\n"
               "                          different --arch/--n/--k is refused; --tokens T\n"
               "                          sets a new plan and says so)\n");
}

struct shard {
    struct safetensors *st;
    const struct st_tensor *t;
    size_t tokens;
};

struct data {
    struct shard *sh;
    size_t n_sh, d_in, total;
    size_t *start; /* (n_sh + 1) prefix of token counts */
    uint32_t *perm;
    int64_t perm_epoch;
};

static int open_shards(struct data *dt, char **files, size_t nf, struct sae_meta *meta)
{
    dt->sh = calloc(nf, sizeof *dt->sh);
    dt->start = calloc(nf + 1, sizeof *dt->start);
    if (!dt->sh || !dt->start) return SF_ENOMEM;
    for (size_t i = 0; i < nf; i++) {
        struct shard *s = &dt->sh[i];
        if (safetensors_open(files[i], &s->st) != 0) {
            fprintf(stderr, "saeflow train: %s: not a readable safetensors file\n", files[i]);
            return SF_EFORMAT;
        }
        dt->n_sh = i + 1;
        s->t = safetensors_find(s->st, "activations");
        if (!s->t || s->t->ndim != 2 || s->t->shape[0] <= 0 || s->t->shape[1] <= 0 ||
            (s->t->dtype != ST_F32 && s->t->dtype != ST_F16 && s->t->dtype != ST_BF16)) {
            fprintf(stderr,
                    "saeflow train: %s: needs a tensor \"activations\" [tokens, d_in] of "
                    "F32/F16/BF16\n",
                    files[i]);
            return SF_EFORMAT;
        }
        size_t d = (size_t)s->t->shape[1];
        if (i == 0) dt->d_in = d;
        if (d != dt->d_in) {
            fprintf(stderr, "saeflow train: %s: d_in %zu differs from the first shard's %zu\n",
                    files[i], d, dt->d_in);
            return SF_EFORMAT;
        }
        s->tokens = (size_t)s->t->shape[0];
        dt->start[i + 1] = dt->start[i] + s->tokens;
        const char *v;
        if ((v = safetensors_metadata(s->st, "hook_name")) && !meta->hook_name[0])
            snprintf(meta->hook_name, sizeof meta->hook_name, "%s", v);
        if ((v = safetensors_metadata(s->st, "model_name")) && !meta->model_name[0])
            snprintf(meta->model_name, sizeof meta->model_name, "%s", v);
        int64_t iv;
        if ((v = safetensors_metadata(s->st, "hook_layer")) && parse_i64(v, &iv) == 0)
            meta->hook_layer = iv;
        if ((v = safetensors_metadata(s->st, "context_size")) && parse_i64(v, &iv) == 0)
            meta->context_size = iv;
        /* what capture recorded about its input, carried into cfg.json (first shard's) */
        if (i == 0) {
            if ((v = safetensors_metadata(s->st, "prepend_bos")))
                meta->prepend_bos = !strcmp(v, "true");
            if ((v = safetensors_metadata(s->st, "exclude_special_tokens")))
                meta->exclude_special_tokens = !strcmp(v, "true");
            if ((v = safetensors_metadata(s->st, "dataset_path")))
                snprintf(meta->dataset_path, sizeof meta->dataset_path, "%s", v);
        }
    }
    dt->total = dt->start[dt->n_sh];
    if (dt->total >= UINT32_MAX) {
        fprintf(stderr, "saeflow train: more than 2^32 tokens in one run is not supported\n");
        return SF_ERANGE;
    }
    dt->perm = malloc(dt->total * sizeof *dt->perm);
    dt->perm_epoch = -1;
    return dt->perm ? 0 : SF_ENOMEM;
}

static void close_shards(struct data *dt)
{
    for (size_t i = 0; i < dt->n_sh; i++) safetensors_close(&dt->sh[i].st);
    free(dt->sh);
    free(dt->start);
    free(dt->perm);
}

/* Token g (global index) as float32. */
static void read_token(const struct data *dt, size_t g, float *out)
{
    size_t lo = 0, hi = dt->n_sh;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (dt->start[mid] <= g)
            lo = mid;
        else
            hi = mid;
    }
    const struct st_tensor *t = dt->sh[lo].t;
    size_t row = g - dt->start[lo], d = dt->d_in;
    const unsigned char *p = (const unsigned char *)t->data;
    if (t->dtype == ST_F32) {
        memcpy(out, p + row * d * 4, d * 4);
    } else {
        for (size_t j = 0; j < d; j++) {
            uint16_t h;
            memcpy(&h, p + (row * d + j) * 2, 2);
            out[j] = t->dtype == ST_F16 ? f16_to_f32(h) : bf16_to_f32(h);
        }
    }
}

/* The batch of tokens [pos, pos + B) of the endless shuffled stream. */
static void fill_batch(struct data *dt, uint64_t seed, int64_t pos, size_t B, float *x)
{
    for (size_t b = 0; b < B; b++) {
        int64_t p = pos + (int64_t)b;
        int64_t epoch = p / (int64_t)dt->total;
        if (epoch != dt->perm_epoch) {
            struct rng r;
            rng_seed(&r, seed * 1000003u + (uint64_t)epoch);
            for (size_t i = 0; i < dt->total; i++) dt->perm[i] = (uint32_t)i;
            for (size_t i = dt->total; i > 1; i--) {
                size_t j = rng_below(&r, i);
                uint32_t tmp = dt->perm[i - 1];
                dt->perm[i - 1] = dt->perm[j];
                dt->perm[j] = tmp;
            }
            dt->perm_epoch = epoch;
        }
        read_token(dt, dt->perm[p % (int64_t)dt->total], x + b * dt->d_in);
    }
}

static int export_out(const struct sae_trainer *t, struct data *dt, const char *out, size_t B,
                      float *x)
{
    struct sae *sae = sae_trainer_export(t);
    if (!sae) return SF_ENOMEM;
    /* firing density on up to 65536 tokens of the data, in order */
    size_t N = dt->total < 65536 ? dt->total : 65536, cap = sae->arch == SAE_TOPK ? sae->k : 256;
    float *dens = calloc(sae->n, sizeof *dens);
    uint32_t *idx = malloc(B * cap * sizeof *idx), *cnt = malloc(B * sizeof *cnt);
    float *val = malloc(B * cap * sizeof *val);
    int rc = dens && idx && cnt && val ? 0 : SF_ENOMEM;
    for (size_t b0 = 0; rc == 0 && b0 < N; b0 += B) {
        size_t rows = N - b0 < B ? N - b0 : B;
        for (size_t r = 0; r < rows; r++) read_token(dt, b0 + r, x + r * dt->d_in);
        rc = sae_encode(sae, x, rows, cap, idx, val, cnt);
        for (size_t r = 0; rc == 0 && r < rows; r++)
            for (uint32_t q = 0; q < cnt[r]; q++) dens[idx[r * cap + q]] += 1.0f;
    }
    if (rc == 0) {
        for (size_t i = 0; i < sae->n; i++) dens[i] = log10f(dens[i] / (float)N + 1e-10f);
        rc = sae_io_export_saelens(sae, out, dens);
    }
    free(dens);
    free(idx);
    free(cnt);
    free(val);
    sae_destroy(&sae);
    return rc;
}

static void progress(struct progress *p, const struct sae_train_metrics *m, int64_t total,
                     double elapsed, int64_t start_tokens)
{
    double rate = elapsed > 0 ? (double)(m->tokens - start_tokens) / elapsed : 0;
    double eta = rate > 0 ? (double)(total - m->tokens) / rate : 0;
    progress_update(p, m->tokens >= total,
                    "[%5.1f%%] tokens %lld/%lld  loss %.5f  FVU %.4f  L0 %.1f  dead %.1f%%  k %zu  "
                    "lr %.2e  %.0f tok/s  ETA %02d:%02d:%02d ",
                    100.0 * (double)m->tokens / (double)total, (long long)m->tokens,
                    (long long)total, m->loss, m->fvu, m->l0, 100.0 * m->dead_frac, m->k, m->lr,
                    rate, (int)(eta / 3600), (int)fmod(eta / 60, 60), (int)fmod(eta, 60));
}

static int want_i64(const char *flag, const char *v, int64_t lo, int64_t *out)
{
    if (!v || parse_i64(v, out) != 0 || *out < lo) {
        fprintf(stderr, "saeflow train: %s needs an integer >= %lld\n", flag, (long long)lo);
        return SF_EINVAL;
    }
    return 0;
}

static int want_f64(const char *flag, const char *v, double *out)
{
    if (!v || parse_f64(v, out) != 0 || !(*out >= 0)) {
        fprintf(stderr, "saeflow train: %s needs a number >= 0\n", flag);
        return SF_EINVAL;
    }
    return 0;
}

/* "lr=A,B,C" -> lrs; the count, or 0 on a malformed spec. */
static size_t parse_sweep(const char *spec, double *lrs)
{
    if (!spec || strncmp(spec, "lr=", 3) != 0) return 0;
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", spec + 3);
    size_t commas = 0;
    for (const char *c = buf; *c; c++) commas += *c == ',';
    if (commas >= MAX_SWEEP) return 0;
    char *parts[MAX_SWEEP];
    size_t np = str_split_list(buf, parts, MAX_SWEEP);
    for (size_t i = 0; i < np; i++)
        if (parse_f64(parts[i], &lrs[i]) != 0 || !(lrs[i] > 0 && lrs[i] < 1)) return 0;
    return np;
}

/* The first N tokens of dt, in file order, into a new buffer (NULL on OOM). */
static float *read_first(const struct data *dt, size_t N)
{
    float *x = malloc(N * dt->d_in * sizeof *x);
    for (size_t i = 0; x && i < N; i++) read_token(dt, i, x + i * dt->d_in);
    return x;
}

/* --sweep: trains at each rate on the first `slice` tokens of the shuffled stream and
 * measures on the held-out tokens; prints the table; sets cfg->lr to the best rate. */
static int run_sweep(struct data *dt, const struct data *hd, struct sae_train_config *cfg,
                     const double *lrs, size_t n_lr, size_t slice, size_t B)
{
    size_t n_held = hd->total ? SF_MIN(hd->total, (size_t)HELD_MAX)
                              : SF_MIN((size_t)HELD_MAX, dt->total - SF_MIN(dt->total, slice));
    if (slice > dt->total || n_held < 2) {
        fprintf(stderr,
                "saeflow train: --sweep needs --sweep-tokens (%zu) plus held-out tokens: the "
                "data has %zu (give --heldout FILE or a smaller --sweep-tokens)\n",
                slice, dt->total);
        return SF_EINVAL;
    }
    float *train = malloc(slice * dt->d_in * sizeof *train);
    float *held = hd->total ? read_first(hd, n_held) : malloc(n_held * dt->d_in * sizeof *held);
    struct sae_sweep_row rows[MAX_SWEEP];
    size_t best = 0;
    int rc = train && held ? 0 : SF_ENOMEM;
    if (rc == 0) {
        fill_batch(dt, cfg->seed, 0, slice, train);
        if (!hd->total) fill_batch(dt, cfg->seed, (int64_t)slice, n_held, held);
        fprintf(stderr, "saeflow train: lr sweep on %zu tokens, held-out FVU on %zu (%s)\n", slice,
                n_held, hd->total ? "--heldout" : "the data after the slice");
        rc = sae_sweep_lr(cfg, train, slice, B, held, n_held, lrs, n_lr, rows, &best);
    }
    if (rc == 0) {
        fprintf(stderr, "  %-10s %-9s %-7s %-7s %-7s %s\n", "lr", "held_FVU", "L0", "dead", "dense",
                "seconds");
        for (size_t r = 0; r < n_lr; r++) {
            if (rows[r].rc) {
                fprintf(stderr, "  %-10.3g failed: %s\n", rows[r].lr, sf_strerror(rows[r].rc));
                continue;
            }
            fprintf(stderr, "  %-10.3g %-9.5f %-7.2f %-7.4f %-7.4f %.1f%s\n", rows[r].lr,
                    rows[r].q.fvu, rows[r].q.l0, rows[r].q.dead_frac, rows[r].q.dense_frac,
                    rows[r].seconds, r == best ? "  <- best" : "");
        }
        cfg->lr = rows[best].lr;
    } else {
        fprintf(stderr, "saeflow train: the lr sweep failed: %s\n", sf_strerror(rc));
    }
    free(train);
    free(held);
    return rc;
}

int cmd_train(int argc, char **argv)
{
    char **files = calloc((size_t)argc + 1, sizeof *files);
    char **hfiles = calloc((size_t)argc + 1, sizeof *hfiles);
    size_t nf = 0, nhf = 0;
    const char *opt_s = "adam", *sweep_s = NULL;
    double sf_mom = 0.95, decay_start = 0.8, dead_frac = 0.05;
    int64_t sweep_tokens = 262144;
    const char *arch_s = "topk", *sched_s = "linear", *out = NULL, *ckdir = NULL;
    const char *backend = "cpu", *cmath_s = "fp32";
    int64_t n = 0, k = 32, k0 = 0, kanneal = 0, batch = 4096, tokens = 0, warm = 0, dead = 0,
            seed = 1, threads = 0, ck_every = 10000000;
    double expansion = 8, lr = 0, alpha = 1.0 / 32, l1 = 5.0, clip = 0;
    bool multi = false, ghost = false, resume = false, init_scale = true;
    /* flags given on the command line (a resumed checkpoint keeps its own otherwise) */
    bool n_set = false, exp_set = false, k_set = false, tokens_set = false, arch_set = false;
    int rc = 0;
    if (!files || !hfiles) {
        free(files);
        free(hfiles);
        return 1;
    }
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (flag_eq(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            free(files);
            free(hfiles);
            return 0;
        } else if (flag_eq(a, "--activations")) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) files[nf++] = argv[++i];
            continue;
        } else if (flag_eq(a, "--heldout")) {
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) hfiles[nhf++] = argv[++i];
            continue;
        }
        bool takes = true;
        if (flag_eq(a, "--arch")) {
            arch_s = v;
            arch_set = true;
        } else if (flag_eq(a, "--n")) {
            rc = want_i64(a, v, 1, &n);
            n_set = true;
        } else if (flag_eq(a, "--expansion")) {
            rc = want_f64(a, v, &expansion);
            exp_set = true;
        } else if (flag_eq(a, "--k")) {
            rc = want_i64(a, v, 1, &k);
            k_set = true;
        } else if (flag_eq(a, "--k0"))
            rc = want_i64(a, v, 0, &k0);
        else if (flag_eq(a, "--k-anneal-tokens"))
            rc = want_i64(a, v, 0, &kanneal);
        else if (flag_eq(a, "--k-schedule"))
            sched_s = v;
        else if (flag_eq(a, "--lr"))
            rc = want_f64(a, v, &lr);
        else if (flag_eq(a, "--optimizer"))
            opt_s = v;
        else if (flag_eq(a, "--sf-momentum"))
            rc = want_f64(a, v, &sf_mom);
        else if (flag_eq(a, "--lr-decay-start"))
            rc = want_f64(a, v, &decay_start);
        else if (flag_eq(a, "--dead-run-fraction"))
            rc = want_f64(a, v, &dead_frac);
        else if (flag_eq(a, "--sweep"))
            sweep_s = v;
        else if (flag_eq(a, "--sweep-tokens"))
            rc = want_i64(a, v, 1, &sweep_tokens);
        else if (flag_eq(a, "--batch"))
            rc = want_i64(a, v, 1, &batch);
        else if (flag_eq(a, "--tokens")) {
            rc = want_i64(a, v, 1, &tokens);
            tokens_set = true;
        } else if (flag_eq(a, "--warmup-tokens"))
            rc = want_i64(a, v, 0, &warm);
        else if (flag_eq(a, "--auxk-alpha"))
            rc = want_f64(a, v, &alpha);
        else if (flag_eq(a, "--dead-tokens"))
            rc = want_i64(a, v, 1, &dead);
        else if (flag_eq(a, "--l1"))
            rc = want_f64(a, v, &l1);
        else if (flag_eq(a, "--grad-clip"))
            rc = want_f64(a, v, &clip);
        else if (flag_eq(a, "--seed"))
            rc = want_i64(a, v, 0, &seed);
        else if (flag_eq(a, "--threads"))
            rc = want_i64(a, v, 0, &threads);
        else if (flag_eq(a, "--backend"))
            backend = v;
        else if (flag_eq(a, "--cuda-math"))
            cmath_s = v;
        else if (flag_eq(a, "--out"))
            out = v;
        else if (flag_eq(a, "--checkpoint"))
            ckdir = v;
        else if (flag_eq(a, "--checkpoint-tokens"))
            rc = want_i64(a, v, 1, &ck_every);
        else {
            takes = false;
            if (flag_eq(a, "--multi-topk"))
                multi = true;
            else if (flag_eq(a, "--ghost-grads"))
                ghost = true;
            else if (flag_eq(a, "--resume"))
                resume = true;
            else if (flag_eq(a, "--no-init-scale"))
                init_scale = false;
            else {
                fprintf(stderr, "saeflow train: unknown option %s\n", a);
                rc = SF_EINVAL;
            }
        }
        if (takes) {
            if (!v) {
                fprintf(stderr, "saeflow train: %s needs a value\n", a);
                rc = SF_EINVAL;
            }
            i++;
        }
    }
    enum sae_arch arch;
    enum sae_k_schedule sched;
    if (rc == 0 && (sae_arch_parse(arch_s, &arch) != 0 || arch == SAE_JUMPRELU)) {
        fprintf(stderr, "saeflow train: --arch is topk, batchtopk or standard\n");
        rc = SF_EINVAL;
    }
    if (rc == 0 && sae_k_schedule_parse(sched_s, &sched) != 0) {
        fprintf(stderr, "saeflow train: --k-schedule is linear, cosine or exp\n");
        rc = SF_EINVAL;
    }
    enum sae_optimizer optim = SAE_OPT_ADAM;
    if (rc == 0 && sae_optimizer_parse(opt_s, &optim) != 0) {
        fprintf(stderr, "saeflow train: --optimizer is adam or signsgd_sf\n");
        rc = SF_EINVAL;
    }
    double sweep_lrs[MAX_SWEEP];
    size_t n_sweep = 0;
    if (rc == 0 && sweep_s && (n_sweep = parse_sweep(sweep_s, sweep_lrs)) == 0) {
        fprintf(stderr, "saeflow train: --sweep takes lr=A,B,... (1 to %d rates in (0, 1))\n",
                MAX_SWEEP);
        rc = SF_EINVAL;
    }
    enum cuda_math cmath = CUDA_MATH_FP32;
    enum tensor_backend bk = TENSOR_CPU;
    int brc = rc == 0 ? tensor_backend_flags("saeflow train", backend, cmath_s, &bk, &cmath) : 0;
    if (brc == 2) rc = SF_EINVAL;
    if (rc == 0 && nf == 0) {
        fprintf(stderr, "saeflow train: --activations FILE... is required\n");
        rc = SF_EINVAL;
    }
    if (rc == 0 && resume && !ckdir) {
        fprintf(stderr, "saeflow train: --resume needs --checkpoint DIR\n");
        rc = SF_EINVAL;
    }
    if (rc) {
        usage(stderr);
        free(files);
        free(hfiles);
        return 2;
    }
    if (brc == 1) {
        free(files);
        free(hfiles);
        return 1;
    }
    if (threads > 0) tensor_set_threads((int)threads);
    struct data dt = {0}, hd = {0};
    struct sae_meta meta = {0}, hmeta = {0};
    meta.hook_layer = -1;
    struct sae_trainer *t = NULL;
    struct sae_backend *be = NULL;
    float *x = NULL;
    char ckpath[4096] = "";
    int exit_code = 1;
    if (open_shards(&dt, files, nf, &meta) != 0) goto done;
    if (nhf && open_shards(&hd, hfiles, nhf, &hmeta) != 0) goto done;
    if (nhf && hd.d_in != dt.d_in) {
        fprintf(stderr, "saeflow train: --heldout d_in %zu != data d_in %zu\n", hd.d_in, dt.d_in);
        goto done;
    }
    if (ckdir) {
        if (file_mkdirs(ckdir, 0755) != 0) {
            fprintf(stderr, "saeflow train: cannot create %s\n", ckdir);
            goto done;
        }
        snprintf(ckpath, sizeof ckpath, "%s/trainer.safetensors", ckdir);
    }
    if (resume && access(ckpath, R_OK) == 0) {
        if (sae_trainer_load(ckpath, &t) != 0) {
            fprintf(stderr, "saeflow train: %s is not a valid checkpoint (see the log)\n", ckpath);
            goto done;
        }
        if (sae_trainer_config(t)->d_in != dt.d_in) {
            fprintf(stderr, "saeflow train: checkpoint d_in %zu != data d_in %zu\n",
                    sae_trainer_config(t)->d_in, dt.d_in);
            goto done;
        }
        /* the checkpoint's shape is what continues: a different one is refused, not
         * silently ignored; a new token total is applied and said */
        const struct sae_train_config *cc = sae_trainer_config(t);
        size_t want_n = n > 0 ? (size_t)n : (size_t)llround(expansion * (double)dt.d_in);
        const char *what = NULL;
        char got[64] = "", have[64] = "";
        if (arch_set && arch != cc->arch) {
            what = "--arch";
            snprintf(got, sizeof got, "%s", sae_arch_name(arch));
            snprintf(have, sizeof have, "%s", sae_arch_name(cc->arch));
        } else if ((n_set || exp_set) && want_n != cc->n) {
            what = n_set ? "--n" : "--expansion";
            snprintf(got, sizeof got, "n %zu", want_n);
            snprintf(have, sizeof have, "n %zu", cc->n);
        } else if (k_set && (size_t)k != cc->k) {
            what = "--k";
            snprintf(got, sizeof got, "k %lld", (long long)k);
            snprintf(have, sizeof have, "k %zu", cc->k);
        }
        if (what) {
            fprintf(stderr,
                    "saeflow train: %s gives %s but the checkpoint %s has %s: a resumed run "
                    "keeps the checkpoint's shape (drop %s, or start a new --checkpoint DIR)\n",
                    what, got, ckpath, have, what);
            exit_code = 2;
            goto done;
        }
        int64_t old_total = cc->total_tokens;
        if (tokens_set && tokens != old_total) {
            if (sae_trainer_set_total_tokens(t, tokens) != 0) goto done;
            fprintf(stderr, "saeflow train: %s plan from %lld to %lld tokens\n",
                    tokens > old_total ? "extending" : "shortening", (long long)old_total,
                    (long long)tokens);
            log_info("train_plan_changed", "from=%lld to=%lld checkpoint=%s", (long long)old_total,
                     (long long)tokens, ckpath);
        }
        fprintf(stderr, "saeflow train: resuming from %s at %lld tokens\n", ckpath,
                (long long)sae_trainer_tokens(t));
        if (n_sweep)
            fprintf(stderr, "saeflow train: --sweep ignored: the checkpoint's settings continue\n");
        int64_t plan = sae_trainer_config(t)->total_tokens > 0 ? sae_trainer_config(t)->total_tokens
                                                               : (int64_t)dt.total;
        if (sae_trainer_tokens(t) >= plan)
            fprintf(stderr,
                    "saeflow train: nothing to train: the checkpoint has trained %lld tokens of "
                    "its %lld-token plan (--tokens T extends it)\n",
                    (long long)sae_trainer_tokens(t), (long long)plan);
    } else {
        struct sae_train_config cfg;
        size_t nn = n > 0 ? (size_t)n : (size_t)llround(expansion * (double)dt.d_in);
        sae_train_config_default(&cfg, arch, dt.d_in, nn, (size_t)k);
        cfg.seed = (uint64_t)seed;
        cfg.lr = lr;
        cfg.lr_warmup_tokens = warm;
        cfg.total_tokens = tokens > 0 ? tokens : (int64_t)dt.total;
        cfg.grad_clip = clip;
        cfg.dead_tokens = dead;
        cfg.optimizer = optim;
        cfg.sf_momentum = sf_mom;
        cfg.lr_decay_start = decay_start;
        cfg.dead_run_fraction = dead_frac;
        cfg.init_scale_encoder = init_scale;
        if (arch != SAE_STANDARD) cfg.auxk_alpha = alpha;
        cfg.k0 = (size_t)k0;
        cfg.k_anneal_tokens = kanneal;
        cfg.k_schedule = sched;
        cfg.multi_topk = multi;
        cfg.l1_coeff = l1;
        cfg.ghost_grads = ghost;
        if (n_sweep) {
            if (sae_train_config_validate(&cfg) != 0) {
                fprintf(stderr, "saeflow train: invalid settings (see the log line above)\n");
                exit_code = 2;
                goto done;
            }
            if (run_sweep(&dt, &hd, &cfg, sweep_lrs, n_sweep, (size_t)sweep_tokens,
                          (size_t)batch) != 0)
                goto done;
            fprintf(stderr, "saeflow train: training with lr %g\n", cfg.lr);
        }
        t = sae_trainer_new(&cfg);
        if (!t) {
            fprintf(stderr, "saeflow train: invalid settings (see the log line above)\n");
            exit_code = 2;
            goto done;
        }
        sae_trainer_set_meta(t, &meta);
    }
    int berr = sae_backend_new(t, backend, cmath_s, &be);
    if (berr != 0) {
        fprintf(stderr, "saeflow train: --backend %s cannot train this SAE: %s (see the log)\n",
                backend, sf_strerror(berr));
        if (berr == SF_EUNSUP) exit_code = 2;
        goto done;
    }
    const struct sae_train_config *cfg = sae_trainer_config(t);
    const int64_t total = cfg->total_tokens > 0 ? cfg->total_tokens : (int64_t)dt.total;
    const size_t B = (size_t)batch;
    x = malloc(B * dt.d_in * sizeof *x);
    if (!x) goto done;
    log_info("train_start",
             "shards=%zu tokens_in_data=%zu d_in=%zu n=%zu arch=%s k=%zu batch=%zu total=%lld "
             "optimizer=%s lr=%g warmup_tokens=%lld lr_decay_start=%g sf_momentum=%g "
             "dead_tokens=%lld auxk_alpha=%g k_aux=%zu",
             nf, dt.total, dt.d_in, cfg->n, sae_arch_name(cfg->arch), cfg->k, B, (long long)total,
             sae_optimizer_name(cfg->optimizer), sae_train_config_lr(cfg),
             (long long)cfg->lr_warmup_tokens, cfg->lr_decay_start, cfg->sf_momentum,
             (long long)cfg->dead_tokens, cfg->auxk_alpha, sae_train_config_k_aux(cfg));
    sig_install();
    const int64_t start_tokens = sae_trainer_tokens(t);
    int64_t next_ck = ck_every > 0 ? (start_tokens / ck_every + 1) * ck_every : INT64_MAX;
    int64_t saved_at = -1;
    double t0 = time_now_s();
    struct progress prog; /* TTY: redrawn in place; otherwise a line every 10 s */
    progress_init(&prog, stderr, 10);
    struct sae_train_metrics m = {0};
    bool stopped = false;
    while (sae_trainer_tokens(t) < total) {
        if (sig_stop_requested()) {
            stopped = true;
            break;
        }
        int64_t pos = sae_trainer_tokens(t);
        size_t rows = (int64_t)B < total - pos ? B : (size_t)(total - pos);
        fill_batch(&dt, cfg->seed, pos, rows, x);
        if (sae_backend_step(be, x, rows, &m) != 0) {
            fprintf(stderr, "\nsaeflow train: training step failed (see the log)\n");
            goto done;
        }
        progress(&prog, &m, total, time_now_s() - t0, start_tokens);
        if (ckpath[0] && m.tokens >= next_ck) {
            if (sae_backend_sync(be) != 0 || sae_trainer_save(t, ckpath) != 0) goto done;
            saved_at = m.tokens;
            while (next_ck <= m.tokens) next_ck += ck_every;
        }
    }
    progress_end(&prog);
    if (sae_backend_sync(be) != 0) {
        fprintf(stderr, "saeflow train: could not copy the trained state back (see the log)\n");
        goto done;
    }
    if (ckpath[0] && saved_at != sae_trainer_tokens(t) && sae_trainer_save(t, ckpath) != 0)
        goto done;
    if (stopped) {
        fprintf(stderr, "saeflow train: stopped at %lld tokens%s\n",
                (long long)sae_trainer_tokens(t), ckpath[0] ? " (checkpoint saved)" : "");
        exit_code = 1;
        goto done;
    }
    log_info("train_done", "tokens=%lld steps=%lld loss=%.6f fvu=%.5f l0=%.2f dead_frac=%.4f",
             (long long)m.tokens, (long long)m.step, m.loss, m.fvu, m.l0, m.dead_frac);
    if (!(m.fvu <= 1.0))
        fprintf(stderr,
                "saeflow train: warning: final FVU %.4g %s: this SAE reconstructs the "
                "activations worse than predicting their mean. Try a lower --lr, more --tokens, "
                "a larger --k or --n, or check the shards (constant or near-constant "
                "activations)\n",
                m.fvu, m.fvu > 1.0 ? "> 1" : "is not a number (training diverged)");
    if (out) {
        if (export_out(t, &dt, out, B, x) != 0) {
            fprintf(stderr, "saeflow train: export to %s failed (see the log)\n", out);
            goto done;
        }
        fprintf(stderr, "saeflow train: wrote SAELens directory %s\n", out);
    } else if (!ckpath[0] && !nhf) {
        fprintf(stderr, "saeflow train: no --out or --checkpoint given: nothing written\n");
    }
    if (nhf) {
        size_t nh = SF_MIN(hd.total, (size_t)HELD_MAX);
        float *hx = read_first(&hd, nh);
        struct sae *sae = sae_trainer_export(t);
        struct sae_quality q;
        int qrc = hx && sae ? sae_quality_measure(sae, hx, nh, &q) : SF_ENOMEM;
        free(hx);
        sae_destroy(&sae);
        if (qrc != 0) {
            fprintf(stderr, "saeflow train: held-out evaluation failed: %s\n", sf_strerror(qrc));
            goto done;
        }
        printf("heldout tokens=%zu fvu=%.5f l0=%.2f dead_frac=%.4f dense_frac=%.4f lr=%g\n", nh,
               q.fvu, q.l0, q.dead_frac, q.dense_frac, sae_train_config_lr(cfg));
    }
    exit_code = 0;
done:
    free(x);
    sae_backend_destroy(&be);
    sae_trainer_destroy(&t);
    close_shards(&dt);
    close_shards(&hd);
    free(files);
    free(hfiles);
    return exit_code;
}

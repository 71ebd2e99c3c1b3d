/* sae: allocation of the shared SAE struct, architecture names, and the plain-loop
 * reference forward pass (encode one token, decode one token) that faster kernels and
 * the import/export tests are checked against. See sae.h for the math. */
#include "sae/sae.h"

#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "sae/sae_kernels.h"

static const char *const arch_names[] = {
    [SAE_TOPK] = "topk",
    [SAE_BATCHTOPK] = "batchtopk",
    [SAE_STANDARD] = "standard",
    [SAE_JUMPRELU] = "jumprelu",
};

const char *sae_arch_name(enum sae_arch a)
{
    if ((unsigned)a >= SF_ARRAY_LEN(arch_names)) return "unknown";
    return arch_names[a];
}

int sae_arch_parse(const char *s, enum sae_arch *out)
{
    if (!s) return SF_EINVAL;
    for (size_t i = 0; i < SF_ARRAY_LEN(arch_names); i++) {
        if (!strcmp(s, arch_names[i])) {
            *out = (enum sae_arch)i;
            return 0;
        }
    }
    return SF_EINVAL;
}

static bool arch_has_threshold(enum sae_arch a)
{
    return a == SAE_JUMPRELU || a == SAE_BATCHTOPK;
}

struct sae *sae_new(enum sae_arch arch, size_t d_in, size_t n, size_t k)
{
    if ((unsigned)arch >= SF_ARRAY_LEN(arch_names) || d_in == 0 || n == 0) return NULL;
    size_t nd;
    if (!size_mul_ok(n, d_in, &nd) || nd > SIZE_MAX / sizeof(float)) return NULL;
    struct sae *sae = calloc(1, sizeof *sae);
    if (!sae) return NULL;
    sae->arch = arch;
    sae->d_in = d_in;
    sae->n = n;
    sae->k = k;
    sae->norm_scale = 1.0f;
    sae->W_enc = sae_alloc_big(nd, sizeof(float));
    sae->W_dec = sae_alloc_big(nd, sizeof(float));
    sae->b_enc = calloc(n, sizeof(float));
    sae->b_dec = calloc(d_in, sizeof(float));
    if (arch_has_threshold(arch)) sae->threshold = calloc(n, sizeof(float));
    if (!sae->W_enc || !sae->W_dec || !sae->b_enc || !sae->b_dec ||
        (arch_has_threshold(arch) && !sae->threshold)) {
        sae_destroy(&sae);
        return NULL;
    }
    return sae;
}

void sae_destroy(struct sae **sae)
{
    if (!sae || !*sae) return;
    struct sae *s = *sae;
    free(s->W_enc);
    free(s->W_dec);
    free(s->b_enc);
    free(s->b_dec);
    free(s->threshold);
    free(s);
    *sae = NULL;
}

/* "i ranks above j": larger value, ties to the lower index. */
static bool ranks_above(const float *a, size_t i, size_t j)
{
    return a[i] > a[j] || (a[i] == a[j] && i < j);
}

/* Min-heap on rank: heap[0] is the weakest of the kept indices. */
static void heap_sift_down(size_t *heap, size_t len, size_t pos, const float *a)
{
    for (;;) {
        size_t l = 2 * pos + 1, r = l + 1, m = pos;
        if (l < len && ranks_above(a, heap[m], heap[l])) m = l;
        if (r < len && ranks_above(a, heap[m], heap[r])) m = r;
        if (m == pos) return;
        size_t t = heap[pos];
        heap[pos] = heap[m];
        heap[m] = t;
        pos = m;
    }
}

static void heap_sift_up(size_t *heap, size_t pos, const float *a)
{
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        if (!ranks_above(a, heap[parent], heap[pos])) return;
        size_t t = heap[pos];
        heap[pos] = heap[parent];
        heap[parent] = t;
        pos = parent;
    }
}

int sae_encode_ref(const struct sae *sae, const float *x, float *z)
{
    const size_t d = sae->d_in, n = sae->n;
    const float s = sae->norm_scale;
    /* a = W_enc (x * s - b_dec) + b_enc, written straight into z */
    for (size_t i = 0; i < n; i++) {
        const float *w = sae->W_enc + i * d;
        double acc = 0.0;
        for (size_t j = 0; j < d; j++) acc += (double)w[j] * (double)(x[j] * s - sae->b_dec[j]);
        z[i] = (float)(acc + (double)sae->b_enc[i]);
    }
    switch (sae->arch) {
    case SAE_STANDARD:
        for (size_t i = 0; i < n; i++) z[i] = z[i] > 0.0f ? z[i] : 0.0f;
        return 0;
    case SAE_JUMPRELU:
    case SAE_BATCHTOPK:
        for (size_t i = 0; i < n; i++) {
            float thr = sae->threshold ? sae->threshold[i] : 0.0f;
            z[i] = (z[i] > thr && z[i] > 0.0f) ? z[i] : 0.0f;
        }
        return 0;
    case SAE_TOPK:
        break;
    default:
        return SF_EINVAL;
    }
    size_t k = sae->k < n ? sae->k : n;
    if (k == 0) {
        memset(z, 0, n * sizeof *z);
        return 0;
    }
    size_t *heap = malloc(k * sizeof *heap);
    if (!heap) return SF_ENOMEM;
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        if (len < k) {
            heap[len] = i;
            heap_sift_up(heap, len, z);
            len++;
        } else if (ranks_above(z, i, heap[0])) {
            heap[0] = i;
            heap_sift_down(heap, len, 0, z);
        }
    }
    /* keep the selected values (ReLU'd), zero everything else */
    float *keep = malloc(k * sizeof *keep);
    if (!keep) {
        free(heap);
        return SF_ENOMEM;
    }
    for (size_t t = 0; t < k; t++) keep[t] = z[heap[t]] > 0.0f ? z[heap[t]] : 0.0f;
    memset(z, 0, n * sizeof *z);
    for (size_t t = 0; t < k; t++) z[heap[t]] = keep[t];
    free(keep);
    free(heap);
    return 0;
}

void sae_decode_ref(const struct sae *sae, const float *z, float *x_hat)
{
    const size_t d = sae->d_in, n = sae->n;
    for (size_t j = 0; j < d; j++) {
        double acc = 0.0;
        for (size_t i = 0; i < n; i++)
            if (z[i] != 0.0f) acc += (double)z[i] * (double)sae->W_dec[i * d + j];
        x_hat[j] = (float)((acc + (double)sae->b_dec[j]) / (double)sae->norm_scale);
    }
}

/* ---- fast inference ---------------------------------------------------------------- */

#include <math.h>
#include <omp.h>

#include "sae/sae_kernels.h"
#include "tensor/tensor.h"

#define ENCODE_CHUNK 256 /* tokens per GEMM: bounds the (chunk, n) scratch */

/* a (rows, n) = (x * s - b_dec) W_enc^T + b_enc for rows tokens; xc (rows, d) scratch. */
static void encode_preact(const struct sae *sae, const float *x, size_t rows, float *xc, float *a)
{
    const size_t d = sae->d_in, n = sae->n;
    const float s = sae->norm_scale;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < rows; b++)
        for (size_t j = 0; j < d; j++) xc[b * d + j] = x[b * d + j] * s - sae->b_dec[j];
    tensor_sgemm(false, true, rows, n, d, 1.0f, xc, d, sae->W_enc, d, 0.0f, a, n);
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < rows; b++)
        for (size_t i = 0; i < n; i++) a[b * n + i] += sae->b_enc[i];
}

static bool active(const struct sae *sae, float a, size_t i)
{
    if (!(a > 0.0f)) return false;
    if (sae->arch == SAE_JUMPRELU || sae->arch == SAE_BATCHTOPK)
        return a > (sae->threshold ? sae->threshold[i] : 0.0f);
    return true;
}

/* One token's codes from its pre-activations (n): at most cap, largest first. */
static uint32_t codes_row(const struct sae *sae, const float *a, size_t cap, uint32_t *idx,
                          float *val, uint32_t *si, float *sv)
{
    const size_t n = sae->n;
    size_t cnt = 0;
    if (sae->arch == SAE_TOPK) {
        size_t k = sae->k < cap ? sae->k : cap;
        cnt = sae_topk_row(a, NULL, NULL, n, k, idx, val, si, sv);
        size_t w = 0;
        for (size_t q = 0; q < cnt; q++) {
            if (val[q] > 0.0f) {
                idx[w] = idx[q];
                val[w] = val[q];
                w++;
            }
        }
        cnt = w;
    } else {
        /* threshold rules: gather the active ones; keep the best cap */
        size_t total = 0;
        for (size_t i = 0; i < n; i++)
            if (active(sae, a[i], i)) total++;
        if (total <= cap) {
            for (size_t i = 0; i < n; i++) {
                if (active(sae, a[i], i)) {
                    idx[cnt] = (uint32_t)i;
                    val[cnt] = a[i];
                    cnt++;
                }
            }
        } else {
            /* mask inactive entries to -inf and select the top cap */
            for (size_t i = 0; i < n; i++) sv[i] = active(sae, a[i], i) ? a[i] : -INFINITY;
            cnt = sae_topk_row(sv, NULL, NULL, n, cap, idx, val, si, sv + n);
        }
    }
    sae_sort_ranked(val, idx, cnt);
    return (uint32_t)cnt;
}

int sae_encode(const struct sae *sae, const float *x, size_t B, size_t max_per_token, uint32_t *idx,
               float *val, uint32_t *count)
{
    if (!sae || (B && (!x || !idx || !val || !count))) return SF_EINVAL;
    if (sae->arch == SAE_JUMPRELU && !sae->threshold) return SF_EINVAL;
    const size_t d = sae->d_in, n = sae->n;
    const size_t chunk = B < ENCODE_CHUNK ? B : ENCODE_CHUNK;
    if (chunk == 0) return 0;
    const int nt = omp_get_max_threads();
    /* per-thread scratch: topk buffers, or a masked copy of the row (n) plus buffers */
    const size_t scr = n + sae_topk_scratch(max_per_token > n ? n : max_per_token);
    float *xc = malloc(chunk * d * sizeof *xc);
    float *a = malloc(chunk * n * sizeof *a);
    float *sv = malloc((size_t)nt * (scr + n) * sizeof *sv);
    uint32_t *si = malloc((size_t)nt * scr * sizeof *si);
    int rc = 0;
    if (!xc || !a || !sv || !si) {
        rc = SF_ENOMEM;
        goto out;
    }
    for (size_t b0 = 0; b0 < B; b0 += chunk) {
        size_t rows = B - b0 < chunk ? B - b0 : chunk;
        encode_preact(sae, x + b0 * d, rows, xc, a);
#pragma omp parallel for schedule(static)
        for (size_t r = 0; r < rows; r++) {
            int tid = omp_get_thread_num();
            size_t b = b0 + r;
            count[b] = codes_row(sae, a + r * n, max_per_token, idx + b * max_per_token,
                                 val + b * max_per_token, si + (size_t)tid * scr,
                                 sv + (size_t)tid * (scr + n));
        }
    }
out:
    free(xc);
    free(a);
    free(sv);
    free(si);
    return rc;
}

int sae_encode_dense(const struct sae *sae, const float *x, size_t B, float *z)
{
    if (!sae || (B && (!x || !z))) return SF_EINVAL;
    const size_t n = sae->n, k = sae->arch == SAE_TOPK ? (sae->k < n ? sae->k : n) : n;
    uint32_t *idx = malloc((B ? B : 1) * k * sizeof *idx);
    float *val = malloc((B ? B : 1) * k * sizeof *val);
    uint32_t *cnt = malloc((B ? B : 1) * sizeof *cnt);
    int rc = SF_ENOMEM;
    if (idx && val && cnt) rc = sae_encode(sae, x, B, k, idx, val, cnt);
    if (rc == 0) {
#pragma omp parallel for schedule(static)
        for (size_t b = 0; b < B; b++) {
            float *zr = z + b * n;
            memset(zr, 0, n * sizeof *zr);
            for (uint32_t q = 0; q < cnt[b]; q++) zr[idx[b * k + q]] = val[b * k + q];
        }
    }
    free(idx);
    free(val);
    free(cnt);
    return rc;
}

void sae_decode(const struct sae *sae, const uint32_t *idx, const float *val, const uint32_t *count,
                size_t max_per_token, size_t B, float *x_hat)
{
    const size_t d = sae->d_in;
    const float inv_s = 1.0f / sae->norm_scale;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < B; b++) {
        float *o = x_hat + b * d;
        memcpy(o, sae->b_dec, d * sizeof *o);
        for (uint32_t q = 0; q < count[b]; q++) {
            const float z = val[b * max_per_token + q];
            const float *w = sae->W_dec + (size_t)idx[b * max_per_token + q] * d;
#pragma omp simd
            for (size_t j = 0; j < d; j++) o[j] += z * w[j];
        }
        if (inv_s != 1.0f)
            for (size_t j = 0; j < d; j++) o[j] *= inv_s;
    }
}

int sae_forward(const struct sae *sae, const float *x, size_t B, float *x_hat)
{
    if (!sae || (B && (!x || !x_hat))) return SF_EINVAL;
    const size_t n = sae->n;
    const size_t cap = sae->arch == SAE_TOPK ? (sae->k < n ? sae->k : n) : n;
    const size_t chunk = B < ENCODE_CHUNK ? B : ENCODE_CHUNK;
    if (chunk == 0) return 0;
    uint32_t *idx = malloc(chunk * cap * sizeof *idx);
    float *val = malloc(chunk * cap * sizeof *val);
    uint32_t *cnt = malloc(chunk * sizeof *cnt);
    int rc = SF_ENOMEM;
    if (idx && val && cnt) {
        rc = 0;
        for (size_t b0 = 0; b0 < B && rc == 0; b0 += chunk) {
            size_t rows = B - b0 < chunk ? B - b0 : chunk;
            rc = sae_encode(sae, x + b0 * sae->d_in, rows, cap, idx, val, cnt);
            if (rc == 0) sae_decode(sae, idx, val, cnt, cap, rows, x_hat + b0 * sae->d_in);
        }
    }
    free(idx);
    free(val);
    free(cnt);
    return rc;
}

void sae_fold_norm(struct sae *sae)
{
    const double s = sae->norm_scale;
    if (s == 1.0) return;
    const size_t nd = sae->n * sae->d_in;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < nd; i++) {
        sae->W_enc[i] = (float)(sae->W_enc[i] * s);
        sae->W_dec[i] = (float)(sae->W_dec[i] / s);
    }
    for (size_t j = 0; j < sae->d_in; j++) sae->b_dec[j] = (float)(sae->b_dec[j] / s);
    sae->norm_scale = 1.0f;
}

struct sae *sae_clone(const struct sae *src)
{
    struct sae *c = sae_new(src->arch, src->d_in, src->n, src->k);
    if (!c) return NULL;
    const size_t nd = src->n * src->d_in;
    memcpy(c->W_enc, src->W_enc, nd * sizeof(float));
    memcpy(c->W_dec, src->W_dec, nd * sizeof(float));
    memcpy(c->b_enc, src->b_enc, src->n * sizeof(float));
    memcpy(c->b_dec, src->b_dec, src->d_in * sizeof(float));
    if (c->threshold && src->threshold)
        memcpy(c->threshold, src->threshold, src->n * sizeof(float));
    c->norm_scale = src->norm_scale;
    c->meta = src->meta;
    return c;
}

/* 64-bit mix of 32-bit words (splitmix-style finaliser per word): identity, not
 * security. */
static uint64_t fp_mix(uint64_t h, uint32_t w)
{
    h ^= w + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
    h ^= h >> 31;
    h *= 0xBF58476D1CE4E5B9ull;
    return h ^ (h >> 29);
}

static uint64_t fp_floats(uint64_t h, const float *v, size_t n)
{
    for (size_t i = 0; v && i < n; i++) {
        uint32_t w;
        memcpy(&w, &v[i], sizeof w);
        h = fp_mix(h, w);
    }
    return fp_mix(h, (uint32_t)n);
}

uint64_t sae_fingerprint(const struct sae *sae)
{
    uint64_t h = 0x5AEF10F1A9E12345ull;
    h = fp_mix(h, (uint32_t)sae->arch);
    h = fp_mix(fp_mix(h, (uint32_t)sae->d_in), (uint32_t)(sae->d_in >> 32));
    h = fp_mix(fp_mix(h, (uint32_t)sae->n), (uint32_t)(sae->n >> 32));
    h = fp_mix(h, (uint32_t)sae->k);
    for (const char *c = sae->meta.hook_name; *c; c++) h = fp_mix(h, (uint8_t)*c);
    h = fp_floats(h, &sae->norm_scale, 1);
    h = fp_floats(h, sae->W_enc, sae->n * sae->d_in);
    h = fp_floats(h, sae->b_enc, sae->n);
    h = fp_floats(h, sae->W_dec, sae->n * sae->d_in);
    h = fp_floats(h, sae->b_dec, sae->d_in);
    h = fp_floats(h, sae->threshold, sae->threshold ? sae->n : 0);
    return h ? h : 1; /* 0 means "unknown" where fingerprints are stored */
}

void sae_normalize_decoder(struct sae *sae)
{
    const size_t d = sae->d_in;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < sae->n; i++) {
        float *w = sae->W_dec + i * d;
        double ss = 0;
        for (size_t j = 0; j < d; j++) ss += (double)w[j] * w[j];
        if (ss > 0) {
            float inv = (float)(1.0 / sqrt(ss));
            for (size_t j = 0; j < d; j++) w[j] *= inv;
        }
    }
}

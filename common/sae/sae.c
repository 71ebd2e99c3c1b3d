/* sae: allocation of the shared SAE struct, architecture names, and the plain-loop
 * reference forward pass (encode one token, decode one token) that faster kernels and
 * the import/export tests are checked against. See sae.h for the math. */
#include "sae/sae.h"

#include <stdlib.h>
#include <string.h>

#include "core/core.h"

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
    sae->W_enc = calloc(nd, sizeof(float));
    sae->W_dec = calloc(nd, sizeof(float));
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

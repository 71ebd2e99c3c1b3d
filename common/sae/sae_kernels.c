/* sae_kernels: per-row top-k selection for SAE encoders (see sae_kernels.h).
 *
 * The scan keeps a buffer of candidates above the current threshold (the k-th best
 * seen so far); when the buffer fills, a quickselect keeps the best k and raises the
 * threshold. Blocks of 16 entries are tested against the threshold with one
 * vectorised max, so the common case (nothing in the block beats the k-th best) costs
 * one load and compare per entry. */
#include "sae/sae_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/core.h"

static inline void swap_entry(float *v, uint32_t *ix, size_t a, size_t b)
{
    float tv = v[a];
    v[a] = v[b];
    v[b] = tv;
    uint32_t ti = ix[a];
    ix[a] = ix[b];
    ix[b] = ti;
}

void sae_select_top(float *v, uint32_t *ix, size_t len, size_t k)
{
    if (k == 0 || k >= len) return;
    size_t lo = 0, hi = len - 1; /* the k-th ranked entry (position k-1) lies in [lo, hi] */
    const size_t target = k - 1;
    while (lo < hi) {
        /* median of three as pivot, moved to hi */
        size_t mid = lo + (hi - lo) / 2;
        if (sae_ranks_above(v[mid], ix[mid], v[lo], ix[lo])) swap_entry(v, ix, mid, lo);
        if (sae_ranks_above(v[hi], ix[hi], v[lo], ix[lo])) swap_entry(v, ix, hi, lo);
        if (sae_ranks_above(v[mid], ix[mid], v[hi], ix[hi])) swap_entry(v, ix, mid, hi);
        float pv = v[hi];
        uint32_t pi = ix[hi];
        size_t store = lo;
        for (size_t j = lo; j < hi; j++) {
            if (sae_ranks_above(v[j], ix[j], pv, pi)) {
                swap_entry(v, ix, j, store);
                store++;
            }
        }
        swap_entry(v, ix, store, hi);
        if (store == target) return;
        if (store < target)
            lo = store + 1;
        else
            hi = store - 1;
    }
}

void sae_sort_ranked(float *v, uint32_t *ix, size_t len)
{
    for (size_t i = 1; i < len; i++) {
        float tv = v[i];
        uint32_t ti = ix[i];
        size_t j = i;
        while (j > 0 && sae_ranks_above(tv, ti, v[j - 1], ix[j - 1])) {
            v[j] = v[j - 1];
            ix[j] = ix[j - 1];
            j--;
        }
        v[j] = tv;
        ix[j] = ti;
    }
}

#define BLOCK 16

/* Compiled for AVX-512 and AVX2 besides the baseline, chosen at load time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(SAEFLOW_FUZZ)
#define SAE_KERNEL_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SAE_KERNEL_CLONES
#endif

/* Min-heap on rank over (hv, hi): the root is the weakest kept entry. */
static inline void heap_down(float *hv, uint32_t *hi, size_t len, size_t pos)
{
    float v = hv[pos];
    uint32_t id = hi[pos];
    for (;;) {
        size_t l = 2 * pos + 1, r = l + 1, m = pos;
        float mv = v;
        uint32_t mi = id;
        if (l < len && sae_ranks_above(mv, mi, hv[l], hi[l])) {
            m = l;
            mv = hv[l];
            mi = hi[l];
        }
        if (r < len && sae_ranks_above(mv, mi, hv[r], hi[r])) m = r;
        if (m == pos) break;
        hv[pos] = hv[m];
        hi[pos] = hi[m];
        pos = m;
    }
    hv[pos] = v;
    hi[pos] = id;
}

/* Heap scan over the whole row: exact in every case. */
SAE_KERNEL_CLONES
static size_t topk_heap(const float *a, const float *bias, const uint32_t *map, size_t n, size_t k,
                        uint32_t *idx, float *val)
{
    if (k == 0) return 0;
    /* the heap lives in the output arrays */
    float *hv = val;
    uint32_t *hi = idx;
    size_t len = 0, j = 0;
    /* fill with the first k non-NaN entries */
    for (; j < n && len < k; j++) {
        float v = a[j] + (bias ? bias[j] : 0.0f);
        if (v != v) continue;
        hv[len] = v;
        hi[len] = map ? map[j] : (uint32_t)j;
        len++;
    }
    if (len < k) return len;
    for (size_t p = k / 2; p-- > 0;) heap_down(hv, hi, k, p);
    while (j < n) {
        size_t blen = n - j < BLOCK ? n - j : BLOCK;
        if (blen == BLOCK) {
            const float t = hv[0];
            int hits = 0; /* ties need the exact test below */
            if (bias)
                for (size_t u = 0; u < BLOCK; u++) hits += a[j + u] + bias[j + u] >= t;
            else
                for (size_t u = 0; u < BLOCK; u++) hits += a[j + u] >= t;
            if (!hits) {
                j += BLOCK;
                continue;
            }
        }
        for (size_t t = 0; t < blen; t++) {
            float v = a[j + t] + (bias ? bias[j + t] : 0.0f);
            uint32_t id = map ? map[j + t] : (uint32_t)(j + t);
            if (!sae_ranks_above(v, id, hv[0], hi[0])) continue; /* also drops NaN */
            hv[0] = v;
            hi[0] = id;
            heap_down(hv, hi, k, 0);
        }
        j += blen;
    }
    return k;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_COLLECT_AVX512 1
/* Entries with v >= t, compress-stored 16 at a time; SIZE_MAX if more than cap. */
__attribute__((target("avx512f"))) static size_t collect_avx512(const float *a, const float *bias,
                                                                size_t n, float t, float *cv,
                                                                uint32_t *ci, size_t cap)
{
    size_t c = 0, j = 0;
    const __m512 vt = _mm512_set1_ps(t);
    const __m512i step = _mm512_set1_epi32(16);
    __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (; j + 16 <= n; j += 16) {
        __m512 v = _mm512_loadu_ps(a + j);
        if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + j));
        __mmask16 m = _mm512_cmp_ps_mask(v, vt, _CMP_GE_OQ); /* NaN: false */
        if (m) {
            if (c + 16 > cap) return SIZE_MAX;
            /* compress in registers, then a full store (the buffer has slack): the
             * memory form of vcompress is microcoded and slow on some CPUs (Zen 4) */
            _mm512_storeu_ps(cv + c, _mm512_maskz_compress_ps(m, v));
            _mm512_storeu_si512((void *)(ci + c), _mm512_maskz_compress_epi32(m, idx));
            c += (size_t)__builtin_popcount((unsigned)m);
        }
        idx = _mm512_add_epi32(idx, step);
    }
    for (; j < n; j++) {
        float v = a[j] + (bias ? bias[j] : 0.0f);
        if (v >= t) {
            if (c + 1 > cap) return SIZE_MAX;
            cv[c] = v;
            ci[c] = (uint32_t)j;
            c++;
        }
    }
    return c;
}
#endif

/* The k-th largest of v (len >= k >= 1, no NaN); reorders v. Values only, with a
 * branch-free partition (random data mispredicts every other branch otherwise). */
static float kth_largest(float *v, size_t len, size_t k)
{
    size_t lo = 0, hi = len - 1;
    const size_t target = k - 1;
    while (lo < hi) {
        /* median of three to v[hi] as the pivot */
        size_t mid = lo + (hi - lo) / 2;
        float a = v[lo], b = v[mid], c = v[hi];
        float med = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
        if (med == a) {
            v[lo] = c;
            v[hi] = a;
        } else if (med == b) {
            v[mid] = c;
            v[hi] = b;
        }
        const float pv = v[hi];
        size_t store = lo;
        for (size_t q = lo; q < hi; q++) { /* [lo, store) > pv, [store, q) <= pv */
            float x = v[q];
            size_t gt = x > pv;
            v[q] = v[store];
            v[store] = x;
            store += gt;
        }
        v[hi] = v[store];
        v[store] = pv;
        if (store == target) return pv;
        if (store < target)
            lo = store + 1;
        else
            hi = store - 1;
    }
    return v[target];
}

/* The common path: a threshold from group maxima (below), a pass that collects the
 * entries at or above it, and an exact selection of the top k among those. If the
 * candidate buffer overflows (many ties) it falls back to the heap scan, so the result
 * is always exact. */
SAE_KERNEL_CLONES
size_t sae_topk_row(const float *a, const float *bias, const uint32_t *map, size_t n, size_t k,
                    uint32_t *idx, float *val, uint32_t *scratch_i, float *scratch_v)
{
    if (k > n) k = n;
    if (k == 0) return 0;
    if (n < 256 || n < 16 * k) return topk_heap(a, bias, map, n, k, idx, val);
    /* Threshold: split the row into groups of 16*G entries; lane l of group g keeps
     * the max of the G entries at offsets l, 16 + l, ... (vertical vector maxima). The
     * maxima belong to distinct entries, so with t = the k-th largest maximum at least
     * k entries are >= t, and every top-k entry is >= t: nothing is missed and, with
     * about 4k maxima, only a little more than k entries are collected. */
    const size_t cap = 4 * k + 256;
    size_t G = n / (4 * k);
    if (G < 1) G = 1;
    const size_t ngroups = n / (16 * G), nm = ngroups * 16;
    if (nm < k) return topk_heap(a, bias, map, n, k, idx, val);
    float *mx = scratch_v + cap + 16; /* after the candidate buffer */
    for (size_t g = 0; g < ngroups; g++) {
        float m[16];
        for (size_t l = 0; l < 16; l++) m[l] = -INFINITY;
        const float *ag = a + g * G * 16;
        if (bias) {
            const float *bg = bias + g * G * 16;
            for (size_t v = 0; v < G; v++)
                for (size_t l = 0; l < 16; l++) {
                    float x = ag[v * 16 + l] + bg[v * 16 + l];
                    m[l] = x > m[l] ? x : m[l];
                }
        } else {
            for (size_t v = 0; v < G; v++)
                for (size_t l = 0; l < 16; l++) {
                    float x = ag[v * 16 + l];
                    m[l] = x > m[l] ? x : m[l];
                }
        }
        for (size_t l = 0; l < 16; l++) mx[g * 16 + l] = m[l];
    }
    float t = kth_largest(mx, nm, k);
    if (!(t > -INFINITY)) return topk_heap(a, bias, map, n, k, idx, val); /* NaN rows */
    /* collect v >= t. With AVX-512: compress-stores. Otherwise a counting test skips
     * blocks of 16 with no candidate (most of them) and passing blocks are collected
     * branch-free. The buffer is 4k + 256 with 16 entries of slack. */
    float *cv = scratch_v;
    uint32_t *ci = scratch_i;
    size_t c = 0, j = 0;
#ifdef HAVE_COLLECT_AVX512
    if (__builtin_cpu_supports("avx512f")) {
        c = collect_avx512(a, bias, n, t, cv, ci, cap);
        if (c == SIZE_MAX) return topk_heap(a, bias, map, n, k, idx, val);
        j = n;
    }
#endif
    for (; j + 16 <= n; j += 16) {
        int hits = 0; /* a plain counting loop: GCC vectorises it well at -O2 */
        if (bias)
            for (size_t u = 0; u < 16; u++) hits += a[j + u] + bias[j + u] >= t;
        else
            for (size_t u = 0; u < 16; u++) hits += a[j + u] >= t;
        if (!hits) continue;
        if (c > cap) break;
        for (size_t u = 0; u < 16; u++) {
            float v = a[j + u] + (bias ? bias[j + u] : 0.0f);
            cv[c] = v;
            ci[c] = (uint32_t)(j + u);
            c += v >= t;
        }
    }
    if (c <= cap) {
        for (; j < n; j++) {
            float v = a[j] + (bias ? bias[j] : 0.0f);
            cv[c] = v;
            ci[c] = (uint32_t)j;
            c += v >= t;
        }
    }
    if (c > cap || c < k) return topk_heap(a, bias, map, n, k, idx, val);
    if (map)
        for (size_t u = 0; u < c; u++) ci[u] = map[ci[u]];
    sae_select_top(cv, ci, c, k);
    memcpy(idx, ci, k * sizeof *idx);
    memcpy(val, cv, k * sizeof *val);
    return k;
}

void *sae_alloc_big(size_t nmemb, size_t size)
{
    size_t bytes;
    if (!size_mul_ok(nmemb, size, &bytes)) return NULL;
    if (bytes < ((size_t)4 << 20)) return calloc(nmemb ? nmemb : 1, size ? size : 1);
    const size_t huge = (size_t)2 << 20;
    size_t rounded = (bytes + huge - 1) / huge * huge;
    void *p = NULL;
    if (posix_memalign(&p, huge, rounded) != 0) return NULL;
#ifdef MADV_HUGEPAGE
    (void)madvise(p, rounded, MADV_HUGEPAGE); /* advice only: fine if refused */
#endif
    memset(p, 0, rounded);
    return p;
}

/* sae_kernels: per-row top-k selection for SAE encoders (see sae_kernels.h).
 *
 * The scan keeps a buffer of candidates above the current threshold (the k-th best
 * seen so far); when the buffer fills, a quickselect keeps the best k and raises the
 * threshold. Blocks of 16 entries are tested against the threshold with one
 * vectorised max, so the common case (nothing in the block beats the k-th best) costs
 * one load and compare per entry. */
#include "sae/sae_kernels.h"

#include <math.h>

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

size_t sae_topk_row(const float *a, const float *bias, const uint32_t *map, size_t n, size_t k,
                    uint32_t *idx, float *val, uint32_t *scratch_i, float *scratch_v)
{
    if (k > n) k = n;
    if (k == 0) return 0;
    const size_t cap = sae_topk_scratch(k);
    size_t cnt = 0;
    float thr = -INFINITY; /* the k-th best kept so far, once cnt reached k after a compaction */
    uint32_t thr_i = UINT32_MAX;
    bool full = false; /* a compaction has happened: thr is meaningful */
    size_t j = 0;
    for (; j < n; j += BLOCK) {
        size_t len = n - j < BLOCK ? n - j : BLOCK;
        if (full && len == BLOCK) {
            float m = -INFINITY;
            if (bias) {
#pragma omp simd reduction(max : m)
                for (size_t t = 0; t < BLOCK; t++) m = fmaxf(m, a[j + t] + bias[j + t]);
            } else {
#pragma omp simd reduction(max : m)
                for (size_t t = 0; t < BLOCK; t++) m = fmaxf(m, a[j + t]);
            }
            if (!(m >= thr)) continue;
        }
        for (size_t t = 0; t < len; t++) {
            float v = a[j + t] + (bias ? bias[j + t] : 0.0f);
            if (v != v) continue; /* NaN */
            uint32_t id = map ? map[j + t] : (uint32_t)(j + t);
            if (full && !sae_ranks_above(v, id, thr, thr_i)) continue;
            scratch_v[cnt] = v;
            scratch_i[cnt] = id;
            cnt++;
            if (cnt == cap) {
                sae_select_top(scratch_v, scratch_i, cnt, k);
                cnt = k;
                /* the new threshold is the weakest of the kept k */
                size_t w = 0;
                for (size_t q = 1; q < k; q++)
                    if (sae_ranks_above(scratch_v[w], scratch_i[w], scratch_v[q], scratch_i[q]))
                        w = q;
                thr = scratch_v[w];
                thr_i = scratch_i[w];
                full = true;
            }
        }
    }
    if (cnt > k) {
        sae_select_top(scratch_v, scratch_i, cnt, k);
        cnt = k;
    }
    for (size_t q = 0; q < cnt; q++) {
        idx[q] = scratch_i[q];
        val[q] = scratch_v[q];
    }
    return cnt;
}

/* sae_kernels: the CPU kernels shared by SAE inference and training (internal to the
 * sae library): per-row top-k selection and the rank order every path agrees on.
 *
 * Rank order: a larger value ranks higher; equal values rank by the lower index
 * (the rule of sae_encode_ref). NaN never ranks (it is never selected). */
#ifndef SAEFLOW_SAE_KERNELS_H
#define SAEFLOW_SAE_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

static inline bool sae_ranks_above(float va, uint32_t ia, float vb, uint32_t ib)
{
    return va > vb || (va == vb && ia < ib);
}

/* Scratch capacity (entries) that sae_topk_row needs for a given k. */
static inline size_t sae_topk_scratch(size_t k)
{
    return 20 * k + 512;
}

/* Selects the k highest-ranked entries of v[i] = a[i] + (bias ? bias[i] : 0),
 * i < n, into idx/val (unsorted), using scratch (sae_topk_scratch(k) entries each).
 * If map is non-NULL, the reported index of entry i is map[i] (and ties rank by
 * map[i]; map must be increasing). Returns the number selected (min(k, n) unless
 * NaNs are present). O(n) scan with a vectorised threshold test. */
size_t sae_topk_row(const float *a, const float *bias, const uint32_t *map, size_t n, size_t k,
                    uint32_t *idx, float *val, uint32_t *scratch_i, float *scratch_v);

/* Zeroed allocation for big arrays (weights, moments, pre-activations): 2 MiB
 * aligned and advised as transparent huge pages above 4 MiB, since the sparse kernels
 * gather rows at random and would otherwise miss the TLB on every row. Free with
 * free(). NULL on OOM. */
void *sae_alloc_big(size_t nmemb, size_t size);

/* Rearranges (v, ix) so that the first k entries are the k highest-ranked, unsorted. */
void sae_select_top(float *v, uint32_t *ix, size_t len, size_t k);
/* Sorts (v, ix) by rank, highest first (insertion sort; meant for k-sized lists). */
void sae_sort_ranked(float *v, uint32_t *ix, size_t len);

#endif

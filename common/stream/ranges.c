/* ranges: sets of sequence numbers as sorted, disjoint, non-adjacent inclusive ranges
 * (stream.h). Sequences are mostly contiguous, so a set of millions of seqs is a
 * handful of ranges. */
#include <stdlib.h>
#include <string.h>

#include "stream/stream.h"

void stream_ranges_init(struct stream_ranges *s)
{
    memset(s, 0, sizeof *s);
}

void stream_ranges_fini(struct stream_ranges *s)
{
    free(s->r);
    memset(s, 0, sizeof *s);
}

void stream_ranges_clear(struct stream_ranges *s)
{
    s->n = 0;
}

/* Index of the first range whose last >= v (n when none). */
static size_t ranges_lower(const struct stream_ranges *s, uint64_t v)
{
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->r[mid][1] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

bool stream_ranges_has(const struct stream_ranges *s, uint64_t v)
{
    size_t i = ranges_lower(s, v);
    return i < s->n && s->r[i][0] <= v;
}

int stream_ranges_add(struct stream_ranges *s, uint64_t v)
{
    size_t i = ranges_lower(s, v);
    if (i < s->n && s->r[i][0] <= v) return 1;
    /* extend the range before (ends at v-1) and/or the one at i (starts at v+1) */
    bool join_prev = i > 0 && v > 0 && s->r[i - 1][1] == v - 1;
    bool join_next = i < s->n && v < UINT64_MAX && s->r[i][0] == v + 1;
    if (join_prev && join_next) {
        s->r[i - 1][1] = s->r[i][1];
        memmove(&s->r[i], &s->r[i + 1], (s->n - i - 1) * sizeof s->r[0]);
        s->n--;
        return 0;
    }
    if (join_prev) {
        s->r[i - 1][1] = v;
        return 0;
    }
    if (join_next) {
        s->r[i][0] = v;
        return 0;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        void *r = realloc(s->r, cap * sizeof s->r[0]);
        if (!r) return SF_ENOMEM;
        s->r = r;
        s->cap = cap;
    }
    memmove(&s->r[i + 1], &s->r[i], (s->n - i) * sizeof s->r[0]);
    s->r[i][0] = v;
    s->r[i][1] = v;
    s->n++;
    return 0;
}

uint64_t stream_ranges_count(const struct stream_ranges *s)
{
    uint64_t n = 0;
    for (size_t i = 0; i < s->n; i++) n += s->r[i][1] - s->r[i][0] + 1;
    return n;
}

int stream_ranges_merge(struct stream_ranges *dst, const struct stream_ranges *src)
{
    /* merge two sorted lists, then coalesce */
    size_t n = dst->n + src->n;
    if (n == 0) return 0;
    uint64_t(*out)[2] = malloc(n * sizeof out[0]);
    if (!out) return SF_ENOMEM;
    size_t a = 0, b = 0, m = 0;
    while (a < dst->n || b < src->n) {
        const uint64_t *next;
        if (b >= src->n || (a < dst->n && dst->r[a][0] <= src->r[b][0]))
            next = dst->r[a++];
        else
            next = src->r[b++];
        if (m > 0 && (out[m - 1][1] == UINT64_MAX || next[0] <= out[m - 1][1] + 1)) {
            if (next[1] > out[m - 1][1]) out[m - 1][1] = next[1];
        } else {
            out[m][0] = next[0];
            out[m][1] = next[1];
            m++;
        }
    }
    free(dst->r);
    dst->r = out;
    dst->n = m;
    dst->cap = n;
    return 0;
}

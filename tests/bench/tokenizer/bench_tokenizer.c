/* bench_tokenizer: encode/decode throughput of each tokenizer on 1 MB of TinyStories,
 * next to a peer measured in the same run. SPM tokenizers are compared with merging
 * the whole text as one sequence (what llama.cpp's SPM session does; our per-word
 * merging gives the same ids). Byte-level BPE tokenizers are compared with their
 * pre-tokenizer alone (UTF-8 decoding + regex split), the floor of the BPE pipeline.
 * Every number is a median of 5 runs. Needs SAEFLOW_MODELS and SAEFLOW_CORPUS.
 *
 * usage: bench_tokenizer */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"

#define REPS 5

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

static double time_encode(const struct tokenizer *t, const char *text, size_t len, size_t *n)
{
    double ts[REPS];
    for (int r = 0; r < REPS; r++) {
        int32_t *ids = NULL;
        double t0 = time_now_s();
        if (tokenizer_encode_alloc(t, text, len, false, &ids, n) != 0) return -1;
        ts[r] = time_now_s() - t0;
        free(ids);
    }
    return median(ts, REPS);
}

static double time_decode(const struct tokenizer *t, const char *text, size_t len)
{
    int32_t *ids = NULL;
    size_t n = 0;
    double ts[REPS];
    if (tokenizer_encode_alloc(t, text, len, false, &ids, &n) != 0) return -1;
    struct buf b;
    buf_init(&b, (size_t)1 << 30);
    for (int r = 0; r < REPS; r++) {
        buf_reset(&b);
        double t0 = time_now_s();
        tokenizer_decode(t, ids, n, &b);
        ts[r] = time_now_s() - t0;
    }
    buf_fini(&b);
    free(ids);
    return median(ts, REPS);
}

static double time_pretok(const struct tokenizer *t, const char *text, size_t len)
{
    double ts[REPS];
    for (int r = 0; r < REPS; r++) {
        size_t *ends = NULL, n = 0;
        double t0 = time_now_s();
        tokenizer_pretokenize(t->pre, text, len, &ends, &n);
        ts[r] = time_now_s() - t0;
        free(ends);
    }
    return median(ts, REPS);
}

static struct tokenizer *load(const char *path)
{
    struct tokenizer *t = NULL;
    if (strstr(path, ".gguf")) {
        struct gguf *g = NULL;
        if (gguf_open(path, &g) == 0) tokenizer_from_gguf(g, &t);
        gguf_close(&g);
    } else {
        tokenizer_load_llama2c(path, &t);
    }
    return t;
}

int main(void)
{
    const char *models = env_or("SAEFLOW_MODELS", "../shared/models");
    const char *corpus = env_or("SAEFLOW_CORPUS", "../shared/corpus");
    static const char *const files[] = {
        "stories260K/tok512.bin",
        "tokenizer-tests/ggml-vocab-llama-spm.gguf",
        "tokenizer-tests/ggml-vocab-gpt-2.gguf",
        "tokenizer-tests/ggml-vocab-falcon.gguf",
    };
    char path[1024];
    char *text = NULL;
    size_t len = 0;
    log_set_level(LOG_WARN);
    snprintf(path, sizeof path, "%s/tinystories-sample.jsonl", corpus);
    if (file_read_all(path, (size_t)1 << 28, &text, &len) != 0) {
        printf("bench_tokenizer: %s not found, nothing to measure\n", path);
        return 0;
    }
    len = SF_MIN(len, (size_t)1 << 20);
    printf("bench_tokenizer: %zu bytes of TinyStories, median of %d runs\n\n", len, REPS);
    printf("%-28s %9s %11s %11s %11s %-22s %9s\n", "tokenizer", "tokens", "encode MB/s", "Mtok/s",
           "decode MB/s", "peer", "ratio");
    for (size_t i = 0; i < SF_ARRAY_LEN(files); i++) {
        snprintf(path, sizeof path, "%s/%s", models, files[i]);
        struct tokenizer *t = load(path);
        if (!t) {
            printf("%-28s (not found)\n", strrchr(files[i], '/') + 1);
            continue;
        }
        size_t n = 0, n2 = 0;
        double enc = time_encode(t, text, len, &n);
        double dec = time_decode(t, text, len);
        double peer;
        const char *peer_name;
        if (t->kind == TOKENIZER_SPM) {
            bool split = t->spm_split;
            t->spm_split = false;
            peer = time_encode(t, text, len, &n2);
            t->spm_split = split;
            peer_name = "whole-text SPM encode";
        } else {
            peer = time_pretok(t, text, len);
            peer_name = "pre-tokenizer only";
        }
        printf("%-28s %9zu %11.2f %11.2f %11.1f %-22s %8.2fx\n", strrchr(files[i], '/') + 1, n,
               len / enc / 1e6, n / enc / 1e6, len / dec / 1e6, peer_name, peer / enc);
        tokenizer_destroy(&t);
    }
    printf("\nratio = peer time / encode time (SPM: >1 means per-word merging is faster;\n"
           "BPE: <1, the share of encode time that is pre-tokenization)\n");
    free(text);
    return 0;
}

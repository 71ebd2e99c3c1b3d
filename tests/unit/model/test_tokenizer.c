/* Tests for tokenizer: llama.cpp's tokenizer test vectors (llama-spm, gpt-2) through
 * the GGUF loader and through a tokenizer.json built from the same vocabulary;
 * stories260K's tok512.bin (encode/decode round trips, the greedy ids from
 * SOURCE.md) and its GGUF twin; malformed inputs. */
#include "core/core.h"
#include "model/gguf.h"
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"

#include "../../support/check.h"
#include "pretok_vectors.h"

#include <cjson/cJSON.h>
#include <string.h>
#include <unistd.h>

#define SEP "\n__ggml_vocab_test__\n"

struct vectors {
    char *inp;
    char **str; /* pointers into inp (NUL-terminated in place) */
    size_t *len;
    size_t n;
    int32_t **ids;
    size_t *n_ids;
};

static void vectors_free(struct vectors *v)
{
    free(v->inp);
    free(v->str);
    free(v->len);
    for (size_t i = 0; i < v->n; i++) free(v->ids ? v->ids[i] : NULL);
    free(v->ids);
    free(v->n_ids);
    memset(v, 0, sizeof *v);
}

/* .inp: strings joined by SEP (and ending with it); .out: one line of ids per string */
static int vectors_load(const char *base, struct vectors *v)
{
    char path[1100];
    size_t len;
    char *out = NULL;
    memset(v, 0, sizeof *v);
    snprintf(path, sizeof path, "%s.inp", base);
    if (file_read_all(path, 1 << 20, &v->inp, &len) != 0) return -1;
    snprintf(path, sizeof path, "%s.out", base);
    size_t olen;
    if (file_read_all(path, 1 << 20, &out, &olen) != 0) return -1;
    size_t cap = 64;
    v->str = calloc(cap, sizeof *v->str);
    v->len = calloc(cap, sizeof *v->len);
    v->ids = calloc(cap, sizeof *v->ids);
    v->n_ids = calloc(cap, sizeof *v->n_ids);
    char *p = v->inp, *end = v->inp + len;
    while (p < end && v->n < cap) {
        char *q = memmem(p, (size_t)(end - p), SEP, strlen(SEP));
        if (!q) break;
        *q = 0;
        v->str[v->n] = p;
        v->len[v->n] = (size_t)(q - p);
        v->n++;
        p = q + strlen(SEP);
    }
    /* ids */
    char *line = out;
    for (size_t i = 0; i < v->n; i++) {
        char *nl = memchr(line, '\n', (size_t)(out + olen - line));
        if (!nl) {
            free(out);
            return -1;
        }
        *nl = 0;
        v->ids[i] = malloc(256 * sizeof(int32_t));
        char *s = line;
        while (*s) {
            while (*s == ' ') s++;
            if (!*s) break;
            char *e = s;
            while (*e && *e != ' ') e++;
            char save = *e;
            *e = 0;
            int64_t x;
            if (parse_i64(s, &x) == 0 && v->n_ids[i] < 256) v->ids[i][v->n_ids[i]++] = (int32_t)x;
            *e = save;
            s = e;
        }
        line = nl + 1;
    }
    free(out);
    return 0;
}

static void fmt_ids(char *dst, size_t cap, const int32_t *ids, size_t n)
{
    size_t o = 0;
    dst[0] = 0;
    for (size_t i = 0; i < n && o + 12 < cap; i++)
        o += (size_t)snprintf(dst + o, cap - o, " %d", (int)ids[i]);
}

/* Checks every vector; returns the number of strings that did not match. */
static size_t check_vectors(const struct tokenizer *t, const struct vectors *v, const char *name,
                            bool check_decode)
{
    size_t bad = 0;
    for (size_t i = 0; i < v->n; i++) {
        int32_t ids[512];
        size_t n = 0;
        int rc = tokenizer_encode(t, v->str[i], v->len[i], false, ids, 512, &n);
        bool ok = rc == 0 && n == v->n_ids[i] && memcmp(ids, v->ids[i], n * sizeof *ids) == 0;
        if (!ok) {
            char got[4096], want[4096];
            fmt_ids(got, sizeof got, ids, SF_MIN(n, 512));
            fmt_ids(want, sizeof want, v->ids[i], v->n_ids[i]);
            fprintf(stderr, "%s: string %zu (len %zu) rc=%d\n  got: %s\n want: %s\n", name, i,
                    v->len[i], rc, got, want);
            bad++;
        }
        CHECK_MSG(ok, "%s vector %zu", name, i);
        if (check_decode && ok) {
            struct buf b;
            buf_init(&b, 1 << 20);
            CHECK(tokenizer_decode(t, ids, n, &b) == 0);
            bool same = b.len == v->len[i] && (b.len == 0 || memcmp(b.data, v->str[i], b.len) == 0);
            CHECK_MSG(same, "%s decode %zu: got '%.*s'", name, i, (int)b.len, b.data ? b.data : "");
            buf_fini(&b);
        }
    }
    return bad;
}

/* Writes a tokenizer.json (GPT-2 style) from a GGUF vocabulary; merges as "a b" strings
 * or as [a, b] pairs. */
static char *hf_json_from_gguf(const struct gguf *g, bool pair_merges)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    size_t n = 0, nm = 0;
    enum gguf_type et;
    const void *toks, *ms, *types;
    gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &toks);
    gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &n, &types);
    gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm, &ms);
    for (size_t i = 0; i < n; i++) {
        const struct gguf_str *s = &((const struct gguf_str *)toks)[i];
        cJSON_AddItemToObject(vocab, s->s, cJSON_CreateNumber((double)i));
        if (((const int32_t *)types)[i] == 3) {
            cJSON *a = cJSON_CreateObject();
            cJSON_AddNumberToObject(a, "id", (double)i);
            cJSON_AddStringToObject(a, "content", s->s);
            cJSON_AddBoolToObject(a, "special", 1);
            cJSON_AddItemToArray(added, a);
        }
    }
    for (size_t i = 0; i < nm; i++) {
        const struct gguf_str *m = &((const struct gguf_str *)ms)[i];
        if (pair_merges) {
            const char *sp = strchr(m->s + 1, ' ');
            char a[512];
            size_t al = (size_t)(sp - m->s);
            memcpy(a, m->s, al);
            a[al] = 0;
            cJSON *pr = cJSON_CreateArray();
            cJSON_AddItemToArray(pr, cJSON_CreateString(a));
            cJSON_AddItemToArray(pr, cJSON_CreateString(sp + 1));
            cJSON_AddItemToArray(merges, pr);
        } else {
            cJSON_AddItemToArray(merges, cJSON_CreateString(m->s));
        }
    }
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    cJSON_AddBoolToObject(pre, "add_prefix_space", 0);
    cJSON_AddBoolToObject(pre, "use_regex", 1);
    cJSON *dec = cJSON_AddObjectToObject(root, "decoder");
    cJSON_AddStringToObject(dec, "type", "ByteLevel");
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

/* SPM merges words separately when the vocabulary allows it; the ids must be those of
 * merging the whole text at once. */
static void check_spm_split(struct tokenizer *t, const char *name)
{
    const char *corpus = test_corpus_dir();
    char path[1024];
    char *text = NULL;
    size_t len = 0;
    if (!corpus) return;
    snprintf(path, sizeof path, "%s/tinystories-sample.jsonl", corpus);
    if (file_read_all(path, 1 << 26, &text, &len) != 0) return;
    len = SF_MIN(len, (size_t)200000);
    CHECK(t->spm_split);
    int32_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    CHECK_EQ_INT(tokenizer_encode_alloc(t, text, len, true, &a, &na), 0);
    t->spm_split = false;
    CHECK_EQ_INT(tokenizer_encode_alloc(t, text, len, true, &b, &nb), 0);
    t->spm_split = true;
    CHECK_MSG(na == nb && memcmp(a, b, na * sizeof *a) == 0, "%s: per-word SPM differs", name);
    struct buf d;
    buf_init(&d, 1 << 24);
    CHECK(tokenizer_decode(t, a, na, &d) == 0 && d.len == len && memcmp(d.data, text, len) == 0);
    buf_fini(&d);
    free(a);
    free(b);
    free(text);
}

/* Writes a Llama-2-style tokenizer.json (BPE + byte_fallback, U+2581 normalizer) from
 * an SPM GGUF vocabulary, with merges extracted the way Hugging Face converts
 * SentencePiece models: every split of a piece into two pieces, ordered by the merged
 * piece's score (descending), ties by the parts' ids. */
struct merge_rec {
    int32_t l, r;
    float score;
    size_t order;
};

static int cmp_merge(const void *a, const void *b)
{
    const struct merge_rec *x = a, *y = b;
    if (x->score != y->score) return x->score > y->score ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

static char *spm_json_from_gguf(const struct gguf *g, const struct tokenizer *t)
{
    size_t n = tokenizer_vocab_size(t), nm = 0, cap = 1 << 16;
    struct merge_rec *m = malloc(cap * sizeof *m);
    for (size_t id = 0; id < n; id++) {
        size_t len;
        const char *s = tokenizer_token_str(t, (int32_t)id, &len);
        size_t first = nm;
        for (size_t k = 1; k < len; k++) {
            if (((unsigned char)s[k] & 0xC0) == 0x80) continue; /* split at code points */
            int32_t l = tokenizer_find(t, s, k), r = tokenizer_find(t, s + k, len - k);
            if (l < 0 || r < 0) continue;
            if (nm == cap) m = realloc(m, (cap *= 2) * sizeof *m);
            m[nm++] = (struct merge_rec){l, r, tokenizer_token_score(t, (int32_t)id), 0};
        }
        /* this piece's splits by (left id, right id) */
        for (size_t i = first + 1; i < nm; i++) {
            struct merge_rec x = m[i];
            size_t j = i;
            while (j > first && (m[j - 1].l > x.l || (m[j - 1].l == x.l && m[j - 1].r > x.r))) {
                m[j] = m[j - 1];
                j--;
            }
            m[j] = x;
        }
    }
    for (size_t i = 0; i < nm; i++) m[i].order = i;
    qsort(m, nm, sizeof *m, cmp_merge);
    cJSON *root = cJSON_CreateObject();
    cJSON *norm = cJSON_AddObjectToObject(root, "normalizer");
    cJSON_AddStringToObject(norm, "type", "Sequence");
    cJSON *nl = cJSON_AddArrayToObject(norm, "normalizers");
    cJSON *pre = cJSON_CreateObject();
    cJSON_AddStringToObject(pre, "type", "Prepend");
    cJSON_AddStringToObject(pre, "prepend", "\xe2\x96\x81");
    cJSON_AddItemToArray(nl, pre);
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; i < 3; i++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", i);
        cJSON_AddStringToObject(a, "content", tokenizer_token_str(t, i, NULL));
        cJSON_AddBoolToObject(a, "special", 1);
        cJSON_AddItemToArray(added, a);
    }
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddBoolToObject(model, "byte_fallback", 1);
    cJSON_AddStringToObject(model, "unk_token", "<unk>");
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (size_t id = 0; id < n; id++)
        cJSON_AddNumberToObject(vocab, tokenizer_token_str(t, (int32_t)id, NULL), (double)id);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    for (size_t i = 0; i < nm; i++) {
        cJSON *pr = cJSON_CreateArray();
        cJSON_AddItemToArray(pr, cJSON_CreateString(tokenizer_token_str(t, m[i].l, NULL)));
        cJSON_AddItemToArray(pr, cJSON_CreateString(tokenizer_token_str(t, m[i].r, NULL)));
        cJSON_AddItemToArray(merges, pr);
    }
    (void)g;
    char *js = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    free(m);
    return js;
}

static void test_vocab(const char *models, const char *name, bool check_decode, bool json)
{
    char base[1024];
    snprintf(base, sizeof base, "%s/tokenizer-tests/ggml-vocab-%s.gguf", models, name);
    if (access(base, R_OK) != 0) {
        printf("skip %s: %s absent\n", name, base);
        return;
    }
    struct vectors v;
    CHECK(vectors_load(base, &v) == 0);
    CHECK_EQ_INT(v.n, 46);
    struct gguf *g = NULL;
    CHECK_EQ_INT(gguf_open(base, &g), 0);
    struct tokenizer *t = NULL;
    CHECK_EQ_INT(tokenizer_from_gguf(g, &t), 0);
    if (t) {
        size_t bad = check_vectors(t, &v, name, check_decode);
        printf("%s: %zu/%zu vectors match\n", name, v.n - bad, v.n);
        if (tokenizer_kind(t) == TOKENIZER_SPM) check_spm_split(t, name);
    }
    if (json && g && t && tokenizer_kind(t) == TOKENIZER_SPM) {
        char *js = spm_json_from_gguf(g, t);
        struct tokenizer *tj = NULL;
        CHECK_EQ_INT(tokenizer_load_hf_json_mem(js, strlen(js), &tj), 0);
        if (tj) {
            CHECK_EQ_INT(tokenizer_kind(tj), TOKENIZER_SPM_MERGES);
            CHECK_EQ_INT(tokenizer_bos(tj), 1);
            size_t bad = check_vectors(tj, &v, "llama-spm json", true);
            check_spm_split(tj, "llama-spm json");
            /* merges by rank and scores give the same ids on real text too */
            const char *corpus = test_corpus_dir();
            char cpath[1024];
            char *text = NULL;
            size_t len = 0;
            if (corpus) snprintf(cpath, sizeof cpath, "%s/tinystories-sample.jsonl", corpus);
            if (corpus && file_read_all(cpath, 1 << 26, &text, &len) == 0) {
                len = SF_MIN(len, (size_t)200000);
                int32_t *a = NULL, *b = NULL;
                size_t na = 0, nb = 0;
                CHECK(tokenizer_encode_alloc(t, text, len, true, &a, &na) == 0);
                CHECK(tokenizer_encode_alloc(tj, text, len, true, &b, &nb) == 0);
                CHECK_MSG(na == nb && memcmp(a, b, na * sizeof *a) == 0,
                          "llama-spm: scores and merges disagree (%zu vs %zu ids)", na, nb);
                free(a);
                free(b);
                free(text);
            }
            printf("llama-spm as tokenizer.json (merges): %zu/%zu vectors match\n", v.n - bad, v.n);
        }
        tokenizer_destroy(&tj);
        free(js);
    } else if (json && g) {
        for (int pairs = 0; pairs < 2; pairs++) {
            char *js = hf_json_from_gguf(g, pairs);
            struct tokenizer *tj = NULL;
            CHECK_EQ_INT(tokenizer_load_hf_json_mem(js, strlen(js), &tj), 0);
            if (tj) {
                CHECK_EQ_INT(tokenizer_vocab_size(tj), tokenizer_vocab_size(t));
                CHECK_EQ_INT(tokenizer_eos(tj), 50256);
                size_t bad = check_vectors(tj, &v, pairs ? "gpt-2 json pairs" : "gpt-2 json", true);
                CHECK_EQ_INT(bad, 0);
            }
            tokenizer_destroy(&tj);
            free(js);
        }
    }
    tokenizer_destroy(&t);
    CHECK(t == NULL);
    gguf_close(&g);
    vectors_free(&v);
}

static const char *const STORY_STRINGS[] = {
    "Once upon a time, there was a little girl named Lily.",
    "",
    " ",
    "Hello world",
    "Tom and Sue went to the park. They saw a big dog!",
    "\xe2\x9c\x85 caf\xc3\xa9 \xe4\xbd\xa0\xe5\xa5\xbd 123",
    "  two  spaces\nnewline\ttab",
    "\xff\xfe invalid utf-8 \xc3",
};

static void test_stories(const char *models)
{
    char path[1024], gpath[1024];
    snprintf(path, sizeof path, "%s/stories260K/tok512.bin", models);
    snprintf(gpath, sizeof gpath, "%s/stories260K/stories260K.gguf", models);
    if (access(path, R_OK) != 0) {
        printf("skip stories260K: %s absent\n", path);
        return;
    }
    struct tokenizer *t = NULL;
    CHECK_EQ_INT(tokenizer_load_llama2c(path, &t), 0);
    if (!t) return;
    CHECK_EQ_INT(tokenizer_vocab_size(t), 512);
    CHECK_EQ_INT(tokenizer_kind(t), TOKENIZER_SPM);
    CHECK_EQ_INT(tokenizer_bos(t), 1);
    CHECK_EQ_INT(tokenizer_eos(t), 2);
    CHECK_EQ_INT(tokenizer_unk(t), 0);
    CHECK(tokenizer_add_bos_default(t));
    CHECK_EQ_INT(tokenizer_token_type(t, 3), TOKEN_BYTE);
    CHECK_EQ_INT(tokenizer_token_type(t, 1), TOKEN_CONTROL);
    size_t l;
    CHECK(strcmp(tokenizer_token_str(t, 259, &l), " t") == 0 && l == 2);
    CHECK(tokenizer_token_str(t, 512, NULL) == NULL);
    CHECK_EQ_INT(tokenizer_find(t, " t", 2), 259);
    CHECK_EQ_INT(tokenizer_find(t, "zzzzzz", 6), -1);

    /* the greedy continuation from SOURCE.md */
    const int32_t greedy[] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298,
                              315, 421, 395, 317, 426, 338, 401, 396, 267};
    struct buf b;
    buf_init(&b, 1 << 20);
    CHECK(tokenizer_decode(t, greedy, SF_ARRAY_LEN(greedy), &b) == 0);
    const char *want = "Once upon a time, there was a little girl named Lily. She loved to";
    CHECK_MSG(b.len == strlen(want) && memcmp(b.data, want, b.len) == 0, "got '%.*s'", (int)b.len,
              b.data);
    /* the same with BOS in front, piece by piece as a generator would */
    buf_reset(&b);
    int32_t prev = 1;
    for (size_t i = 0; i < SF_ARRAY_LEN(greedy); i++) {
        CHECK(tokenizer_decode_piece(t, prev, greedy[i], &b) == 0);
        prev = greedy[i];
    }
    CHECK(b.len == strlen(want) && memcmp(b.data, want, b.len) == 0);
    CHECK_EQ_INT(tokenizer_decode_piece(t, -1, 512, &b), SF_EINVAL);
    CHECK_EQ_INT(tokenizer_decode_piece(t, -1, -3, &b), SF_EINVAL);

    /* the prompt tokenises to the same ids the model generated (plus BOS) */
    int32_t ids[256];
    size_t n = 0;
    const char *once = "Once upon a time, there was a little girl named Lily.";
    CHECK_EQ_INT(tokenizer_encode(t, once, strlen(once), true, ids, 256, &n), 0);
    CHECK_EQ_INT(n, 16);
    CHECK(n == 16 && ids[0] == 1 && memcmp(ids + 1, greedy, 15 * sizeof *ids) == 0);
    /* capacity too small: needed count reported */
    size_t n2 = 0;
    CHECK_EQ_INT(tokenizer_encode(t, once, strlen(once), true, ids, 3, &n2), SF_ERANGE);
    CHECK_EQ_INT(n2, 16);

    /* round trips (with and without BOS), also for text needing byte fallback */
    struct gguf *g = NULL;
    struct tokenizer *tg = NULL;
    if (access(gpath, R_OK) == 0) {
        CHECK_EQ_INT(gguf_open(gpath, &g), 0);
        if (g) CHECK_EQ_INT(tokenizer_from_gguf(g, &tg), 0);
        gguf_close(&g); /* the tokenizer keeps its own copy */
    }
    for (size_t k = 0; k < SF_ARRAY_LEN(STORY_STRINGS); k++) {
        const char *s = STORY_STRINGS[k];
        for (int bos = 0; bos < 2; bos++) {
            int32_t *a = NULL;
            size_t na = 0;
            CHECK_EQ_INT(tokenizer_encode_alloc(t, s, strlen(s), bos, &a, &na), 0);
            buf_reset(&b);
            CHECK(tokenizer_decode(t, a, na, &b) == 0);
            CHECK_MSG(b.len == strlen(s) && (b.len == 0 || memcmp(b.data, s, b.len) == 0),
                      "round trip %zu: '%s' -> '%.*s'", k, s, (int)b.len, b.data ? b.data : "");
            if (tg) {
                /* the GGUF twin tokenises identically */
                int32_t *c = NULL;
                size_t nc = 0;
                CHECK_EQ_INT(tokenizer_encode_alloc(tg, s, strlen(s), bos, &c, &nc), 0);
                CHECK_MSG(nc == na && (na == 0 || memcmp(a, c, na * sizeof *a) == 0),
                          "gguf vs tok512 differ on string %zu", k);
                buf_reset(&b);
                CHECK(tokenizer_decode(tg, c, nc, &b) == 0);
                CHECK(b.len == strlen(s) && (b.len == 0 || memcmp(b.data, s, b.len) == 0));
                free(c);
            }
            free(a);
        }
    }
    if (tg) {
        CHECK_EQ_INT(tokenizer_vocab_size(tg), 512);
        CHECK_EQ_INT(tokenizer_bos(tg), 1);
        CHECK_EQ_INT(tokenizer_eos(tg), 2);
        buf_reset(&b);
        CHECK(tokenizer_decode(tg, greedy, SF_ARRAY_LEN(greedy), &b) == 0);
        CHECK(b.len == strlen(want) && memcmp(b.data, want, b.len) == 0);
    }
    if (tg) check_spm_split(tg, "stories260K.gguf");
    check_spm_split(t, "tok512.bin");
    tokenizer_destroy(&tg);
    buf_fini(&b);
    tokenizer_destroy(&t);
}

static void test_malformed(void)
{
    struct tokenizer *t = NULL;
    /* llama2.c: bad max length, truncated record, negative length, too few tokens */
    uint8_t bin[64] = {0};
    int32_t v = 0;
    CHECK(tokenizer_load_llama2c_mem(bin, 0, &t) < 0 && t == NULL);
    CHECK(tokenizer_load_llama2c_mem(&v, 4, &t) < 0);
    v = 4;
    memcpy(bin, &v, 4);
    float sc = 0;
    int32_t tl = 1;
    size_t o = 4;
    for (int k = 0; k < 3; k++) {
        memcpy(bin + o, &sc, 4);
        memcpy(bin + o + 4, &tl, 4);
        bin[o + 8] = (uint8_t)('a' + k);
        o += 9;
    }
    CHECK_EQ_INT(tokenizer_load_llama2c_mem(bin, o, &t), 0);
    tokenizer_destroy(&t);
    CHECK(tokenizer_load_llama2c_mem(bin, o - 1, &t) < 0 && t == NULL);
    CHECK(tokenizer_load_llama2c_mem(bin, o - 9, &t) < 0 && t == NULL); /* 2 tokens */
    tl = -1;
    memcpy(bin + 4 + 4, &tl, 4);
    CHECK(tokenizer_load_llama2c_mem(bin, o, &t) < 0 && t == NULL);
    tl = 5; /* longer than max_token_length 4 */
    memcpy(bin + 4 + 4, &tl, 4);
    CHECK(tokenizer_load_llama2c_mem(bin, o, &t) < 0 && t == NULL);

    /* GGUF without tokenizer metadata, with a wrong model, with mismatched arrays */
    struct gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.architecture", "llama");
    struct buf b;
    buf_init(&b, 1 << 20);
    gguf_writer_to_buf(w, &b);
    struct gguf *g = NULL;
    CHECK_EQ_INT(gguf_open_mem(b.data, b.len, &g), 0);
    CHECK(tokenizer_from_gguf(g, &t) < 0 && t == NULL);
    gguf_close(&g);
    gguf_writer_destroy(&w);

    const char *toks[4] = {"<unk>", "a", "b", "a b"};
    float scores[3] = {0, -1, -2};
    for (int m = 0; m < 4; m++) {
        w = gguf_writer_new();
        gguf_writer_set_str(w, "tokenizer.ggml.model", m == 0 ? "bert" : m == 3 ? "gpt2" : "llama");
        gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, NULL, 3);
        if (m == 1) gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_FLOAT32, scores, 2);
        if (m == 2) gguf_writer_set_arr(w, "tokenizer.ggml.scores", GGUF_TYPE_INT32, scores, 3);
        if (m == 3) gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", toks + 3, NULL, 1);
        buf_reset(&b);
        gguf_writer_to_buf(w, &b);
        CHECK_EQ_INT(gguf_open_mem(b.data, b.len, &g), 0);
        int rc = tokenizer_from_gguf(g, &t);
        if (m == 3) {
            /* gpt2 with a merge "a b" -> a valid tokenizer; "ab" is not a token */
            CHECK_EQ_INT(rc, 0);
            int32_t ids[8];
            size_t n;
            CHECK(t && tokenizer_encode(t, "ab", 2, true, ids, 8, &n) == 0 && n == 2 &&
                  ids[0] == 1 && ids[1] == 2);
        } else {
            CHECK_MSG(rc < 0 && t == NULL, "gguf case %d accepted", m);
        }
        tokenizer_destroy(&t);
        gguf_close(&g);
        gguf_writer_destroy(&w);
    }
    buf_fini(&b);

    /* tokenizer.json: not JSON, wrong model type, vocab ids out of range, bad merges */
    const char *bad_json[] = {
        "",
        "{",
        "[]",
        "{\"model\":{\"type\":\"WordPiece\",\"vocab\":{\"a\":0}}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0.5},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":99999999},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"ab\"]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[[\"a\"]]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[7]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":[],\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":[{\"id\":"
        "-4,\"content\":\"x\"}]}",
    };
    for (size_t k = 0; k < SF_ARRAY_LEN(bad_json); k++) {
        int rc = tokenizer_load_hf_json_mem(bad_json[k], strlen(bad_json[k]), &t);
        CHECK_MSG(rc < 0 && t == NULL, "json case %zu accepted", k);
        tokenizer_destroy(&t);
    }
    CHECK(tokenizer_load_hf_json("/nonexistent/tokenizer.json", &t) < 0);
    CHECK(tokenizer_load_llama2c("/nonexistent/tok.bin", &t) < 0);
}

/* A small Llama-2-style tokenizer.json: merges by rank, U+2581 spaces, byte fallback. */
static void test_hf_spm(void)
{
    const char *js =
        "{\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Prepend\","
        "\"prepend\":\"\\u2581\"},{\"type\":\"Replace\",\"pattern\":{\"String\":\" \"},"
        "\"content\":\"\\u2581\"}]},"
        "\"added_tokens\":[{\"id\":0,\"content\":\"<unk>\",\"special\":true},"
        "{\"id\":1,\"content\":\"<s>\",\"special\":true},{\"id\":2,\"content\":\"</s>\","
        "\"special\":true}],"
        "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":"
        "{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}]},"
        "\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"unk_token\":\"<unk>\","
        "\"vocab\":{\"<unk>\":0,\"<s>\":1,\"</s>\":2,\"<0x21>\":3,\"<0xC3>\":4,\"<0xA9>\":5,"
        "\"\\u2581\":6,\"h\":7,\"i\":8,\"hi\":9,\"\\u2581hi\":10,\"t\":11,\"e\":12},"
        "\"merges\":[\"h i\",\"\\u2581 hi\",\"t e\"]}}";
    struct tokenizer *t = NULL;
    CHECK_EQ_INT(tokenizer_load_hf_json_mem(js, strlen(js), &t), 0);
    if (!t) return;
    CHECK_EQ_INT(tokenizer_kind(t), TOKENIZER_SPM_MERGES);
    CHECK_EQ_INT(tokenizer_bos(t), 1);
    CHECK_EQ_INT(tokenizer_eos(t), 2);
    CHECK(tokenizer_add_bos_default(t));
    CHECK(strcmp(tokenizer_add_bos_source(t), "tokenizer.json post_processor") == 0);
    tokenizer_set_add_bos(t, false, "test");
    CHECK(!tokenizer_add_bos_default(t) && !strcmp(tokenizer_add_bos_source(t), "test"));
    tokenizer_set_add_bos(t, true, "tokenizer.json post_processor");
    /* "hi hi!é" -> <s> ▁hi ▁hi <0x21> <0xC3> <0xA9> */
    const char *s = "hi hi!\xc3\xa9";
    int32_t ids[16];
    size_t n = 0;
    CHECK_EQ_INT(tokenizer_encode(t, s, strlen(s), true, ids, 16, &n), 0);
    const int32_t want[] = {1, 10, 10, 3, 4, 5};
    CHECK(n == 6 && memcmp(ids, want, sizeof want) == 0);
    struct buf b;
    buf_init(&b, 1 << 16);
    CHECK(tokenizer_decode(t, ids, n, &b) == 0);
    CHECK(b.len == strlen(s) && memcmp(b.data, s, b.len) == 0);
    buf_fini(&b);
    tokenizer_destroy(&t);
}

/* tokenizer.json pre-tokenizer recognition: Llama 3 / Qwen2 Split patterns, Digits. */
static void test_hf_pre(void)
{
    static const char *const llama3 =
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
        "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    for (int k = 0; k < 4; k++) {
        cJSON *root = cJSON_CreateObject();
        cJSON *model = cJSON_AddObjectToObject(root, "model");
        cJSON_AddStringToObject(model, "type", "BPE");
        cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
        cJSON_AddNumberToObject(vocab, "a", 0);
        cJSON_AddNumberToObject(vocab, "1", 1);
        cJSON_AddArrayToObject(model, "merges");
        cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
        cJSON_AddStringToObject(pre, "type", "Sequence");
        cJSON *list = cJSON_AddArrayToObject(pre, "pretokenizers");
        cJSON *first = cJSON_CreateObject();
        if (k == 3) {
            cJSON_AddStringToObject(first, "type", "Digits");
            cJSON_AddBoolToObject(first, "individual_digits", 1);
        } else {
            char re[512];
            snprintf(re, sizeof re, "%s", llama3);
            if (k == 1) { /* Qwen2: \p{N} for \p{N}{1,3} */
                char *q = strstr(re, "{1,3}");
                memmove(q, q + 5, strlen(q + 5) + 1);
            }
            if (k == 2) re[0] = 'X'; /* an unknown pattern */
            cJSON_AddStringToObject(first, "type", "Split");
            cJSON *pat = cJSON_AddObjectToObject(first, "pattern");
            cJSON_AddStringToObject(pat, "Regex", re);
        }
        cJSON_AddItemToArray(list, first);
        cJSON *bl = cJSON_CreateObject();
        cJSON_AddStringToObject(bl, "type", "ByteLevel");
        cJSON_AddBoolToObject(bl, "use_regex", k == 3);
        cJSON_AddItemToArray(list, bl);
        char *js = cJSON_PrintUnformatted(root);
        cJSON_Delete(root);
        struct tokenizer *t = NULL;
        CHECK_EQ_INT(tokenizer_load_hf_json_mem(js, strlen(js), &t), 0);
        static const int want[4] = {TOKENIZER_PRE_LLAMA3, TOKENIZER_PRE_QWEN2, TOKENIZER_PRE_GPT2,
                                    TOKENIZER_PRE_SMOLLM};
        CHECK_MSG(t && (int)t->pre == want[k], "case %d: pre %d", k, t ? (int)t->pre : -1);
        tokenizer_destroy(&t);
        free(js);
    }
}

/* model.ignore_merges: a word that is a token is taken whole even if merges can't
 * build it. */
static void test_ignore_merges(void)
{
    for (int im = 0; im < 2; im++) {
        char js[512];
        snprintf(js, sizeof js,
                 "{\"model\":{\"type\":\"BPE\",\"ignore_merges\":%s,\"vocab\":{\"a\":0,"
                 "\"b\":1,\"c\":2,\"abc\":3},\"merges\":[\"a b\"]},"
                 "\"pre_tokenizer\":{\"type\":\"ByteLevel\"}}",
                 im ? "true" : "false");
        struct tokenizer *t = NULL;
        CHECK_EQ_INT(tokenizer_load_hf_json_mem(js, strlen(js), &t), 0);
        int32_t ids[8];
        size_t n = 0;
        CHECK(t && tokenizer_encode(t, "abc", 3, false, ids, 8, &n) == 0);
        if (im)
            CHECK(n == 1 && ids[0] == 3);
        else
            CHECK(n == 3 && ids[0] == 0 && ids[1] == 1 && ids[2] == 2);
        tokenizer_destroy(&t);
    }
}

/* The hand-written pre-tokenizers against splits recorded with Python's `regex`. */
static void test_pretokenizers(void)
{
    size_t bad = 0;
    for (size_t i = 0; i < SF_ARRAY_LEN(pretok_vectors); i++) {
        const struct pretok_vector *v = &pretok_vectors[i];
        size_t *ends = NULL, n = 0;
        int rc = tokenizer_pretokenize((enum tokenizer_pre)v->pre, v->text, v->len, &ends, &n);
        bool ok =
            rc == 0 && n == v->n_words && (n == 0 || memcmp(ends, v->ends, n * sizeof *ends) == 0);
        if (!ok && bad++ < 10) {
            fprintf(stderr, "pretok %zu (pre %d) '%.*s': got", i, v->pre, (int)v->len, v->text);
            for (size_t k = 0; k < n; k++) fprintf(stderr, " %zu", ends[k]);
            fprintf(stderr, "\n want");
            for (size_t k = 0; k < v->n_words; k++) fprintf(stderr, " %zu", v->ends[k]);
            fprintf(stderr, "\n");
        }
        CHECK(ok);
        free(ends);
    }
    printf("pre-tokenizers: %zu/%zu recorded splits match\n", SF_ARRAY_LEN(pretok_vectors) - bad,
           SF_ARRAY_LEN(pretok_vectors));
}

int main(void)
{
    if (!getenv("TEST_LOG")) log_set_level(LOG_OFF);
    test_malformed();
    test_hf_spm();
    test_pretokenizers();
    test_hf_pre();
    test_ignore_merges();
    const char *models = test_models_dir();
    if (!models) {
        printf("skip model-file checks: SAEFLOW_MODELS not found\n");
        return check_exit();
    }
    test_stories(models);
    test_vocab(models, "llama-spm", true, true);
    test_vocab(models, "gpt-2", true, true);
    /* the other two pre-tokenizers llama.cpp ships vectors for */
    test_vocab(models, "deepseek-coder", true, false);
    test_vocab(models, "falcon", true, false);
    return check_exit();
}

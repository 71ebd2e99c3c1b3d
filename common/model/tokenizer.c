/* tokenizer: SentencePiece-style BPE (scores, byte fallback) and GPT-2 byte-level BPE
 * (merges, hand-written pre-tokenizer); loaders for llama2.c .bin and GGUF. See
 * tokenizer.h. The tokenizer.json loader is in tokenizer_hf.c. */
#include "model/tokenizer.h"

#include "core/core.h"
#include "model/gguf.h"
#include "model/tokenizer_impl.h"
#include "model/tokenizer_unicode.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char SPM_SPACE[3] = {'\xE2', '\x96', '\x81'}; /* U+2581 */

/* ---- UTF-8 ---- */

uint32_t tokenizer_utf8_decode(const uint8_t *s, size_t len, size_t *adv)
{
    uint8_t c = s[0];
    size_t n;
    uint32_t cp, min;
    if (c < 0x80) {
        *adv = 1;
        return c;
    } else if ((c & 0xE0) == 0xC0) {
        n = 2;
        cp = c & 0x1F;
        min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        cp = c & 0x0F;
        min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        cp = c & 0x07;
        min = 0x10000;
    } else {
        goto bad;
    }
    if (n > len) goto bad;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) goto bad;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) goto bad;
    *adv = n;
    return cp;
bad:
    *adv = 1;
    return 0xFFFD;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- growable id vector ---- */

struct ids {
    int32_t *v;
    size_t n, cap;
};

static int ids_push(struct ids *a, int32_t id)
{
    if (a->n == a->cap) {
        size_t nc = a->cap ? a->cap * 2 : 64;
        int32_t *nv = realloc(a->v, nc * sizeof *nv);
        if (!nv) return SF_ENOMEM;
        a->v = nv;
        a->cap = nc;
    }
    a->v[a->n++] = id;
    return 0;
}

/* ---- string interning and merge table ---- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* sid of a string, or -1 */
static int32_t str_lookup(const struct tokenizer *t, const char *s, size_t n)
{
    if (!t->map) return -1;
    size_t mask = t->map_cap - 1;
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t sid = t->map[i];
        if (sid < 0) return -1;
        if (t->len[sid] == n && memcmp(t->str[sid], s, n) == 0) return sid;
    }
}

/* Puts sid into the map; an existing equal string is replaced (last wins). */
static void map_put(struct tokenizer *t, int32_t sid)
{
    size_t mask = t->map_cap - 1;
    const char *s = t->str[sid];
    size_t n = t->len[sid];
    for (size_t i = hash_bytes(s, n) & mask;; i = (i + 1) & mask) {
        int32_t o = t->map[i];
        if (o < 0 || (t->len[o] == n && memcmp(t->str[o], s, n) == 0)) {
            t->map[i] = sid;
            return;
        }
    }
}

static int map_rebuild(struct tokenizer *t, size_t want)
{
    /* ids no loader set are empty strings (never NULL) from here on */
    for (size_t i = 0; i < t->n_vocab; i++) {
        if (!t->str[i]) {
            t->str[i] = calloc(1, 1);
            if (!t->str[i]) return SF_ENOMEM;
        }
    }
    size_t cap = 64;
    while (cap < want * 2) cap *= 2;
    int32_t *m = malloc(cap * sizeof *m);
    if (!m) return SF_ENOMEM;
    for (size_t i = 0; i < cap; i++) m[i] = -1;
    free(t->map);
    t->map = m;
    t->map_cap = cap;
    for (size_t i = 0; i < t->n_str; i++) map_put(t, (int32_t)i);
    return 0;
}

/* sid of a string, adding it (as a non-token) when absent. */
static int intern(struct tokenizer *t, const char *s, size_t n, int32_t *sid)
{
    int rc;
    if (!t->map && (rc = map_rebuild(t, t->n_str + 1))) return rc;
    *sid = str_lookup(t, s, n);
    if (*sid >= 0) return 0;
    if (t->n_str >= INT32_MAX / 2) return SF_ENOMEM;
    if (t->n_str == t->cap_str) {
        size_t nc = t->cap_str * 2 + 16;
        char **ns = realloc(t->str, nc * sizeof *ns);
        if (!ns) return SF_ENOMEM;
        t->str = ns;
        uint32_t *nl = realloc(t->len, nc * sizeof *nl);
        if (!nl) return SF_ENOMEM;
        t->len = nl;
        t->cap_str = nc;
    }
    char *c = malloc(n + 1);
    if (!c) return SF_ENOMEM;
    memcpy(c, s, n);
    c[n] = 0;
    t->str[t->n_str] = c;
    t->len[t->n_str] = (uint32_t)n;
    *sid = (int32_t)t->n_str++;
    if (t->n_str * 2 > t->map_cap) return map_rebuild(t, t->n_str);
    map_put(t, *sid);
    return 0;
}

static uint32_t pair_rank(const struct tokenizer *t, int32_t a, int32_t b)
{
    if (!t->pair_cap) return UINT32_MAX;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t mask = t->pair_cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (t->pair_val[i] == 0) return UINT32_MAX;
        if (t->pair_key[i] == key) return t->pair_val[i] - 1;
    }
}

static void pair_put(uint64_t *keys, uint32_t *vals, size_t cap, uint64_t key, uint32_t val)
{
    size_t mask = cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (vals[i] == 0) {
            keys[i] = key;
            vals[i] = val;
            return;
        }
        if (keys[i] == key) return; /* first rank wins */
    }
}

int tokenizer_add_merge(struct tokenizer *t, const char *a, size_t alen, const char *b, size_t blen)
{
    int32_t sa, sb;
    int rc;
    if (t->n_merges >= UINT32_MAX - 2) return SF_ENOMEM;
    if ((rc = intern(t, a, alen, &sa)) || (rc = intern(t, b, blen, &sb))) return rc;
    if ((t->n_pairs + 1) * 2 > t->pair_cap) {
        size_t nc = t->pair_cap ? t->pair_cap * 2 : 1024;
        uint64_t *nk = calloc(nc, sizeof *nk);
        uint32_t *nv = calloc(nc, sizeof *nv);
        if (!nk || !nv) {
            free(nk);
            free(nv);
            return SF_ENOMEM;
        }
        for (size_t i = 0; i < t->pair_cap; i++)
            if (t->pair_val[i]) pair_put(nk, nv, nc, t->pair_key[i], t->pair_val[i]);
        free(t->pair_key);
        free(t->pair_val);
        t->pair_key = nk;
        t->pair_val = nv;
        t->pair_cap = nc;
    }
    uint64_t key = (uint64_t)(uint32_t)sa << 32 | (uint32_t)sb;
    if (pair_rank(t, sa, sb) == UINT32_MAX) {
        pair_put(t->pair_key, t->pair_val, t->pair_cap, key, (uint32_t)t->n_merges + 1);
        t->n_pairs++;
    }
    t->n_merges++;
    return 0;
}

/* ---- construction ---- */

struct tokenizer *tokenizer_alloc(enum tokenizer_kind kind, size_t n_vocab)
{
    if (n_vocab == 0 || n_vocab > TOKENIZER_MAX_VOCAB) return NULL;
    struct tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->kind = kind;
    t->n_vocab = n_vocab;
    t->cap_str = n_vocab;
    t->n_str = n_vocab;
    t->str = calloc(n_vocab, sizeof *t->str);
    t->len = calloc(n_vocab, sizeof *t->len);
    t->score = calloc(n_vocab, sizeof *t->score);
    t->type = malloc(n_vocab * sizeof *t->type);
    t->bos = t->eos = t->unk = -1;
    t->escape_spaces = kind == TOKENIZER_SPM_MERGES; /* before tokenizer_finish uses it */
    if (!t->str || !t->len || !t->score || !t->type) {
        tokenizer_destroy(&t);
        return NULL;
    }
    for (size_t i = 0; i < n_vocab; i++) t->type[i] = TOKEN_UNUSED;
    return t;
}

int tokenizer_set_token(struct tokenizer *t, int32_t id, const char *s, size_t len, float score,
                        int32_t type)
{
    if (id < 0 || (size_t)id >= t->n_vocab || len > TOKENIZER_MAX_TOKLEN || (!s && len))
        return SF_EINVAL;
    if (t->map) return SF_ESTATE;
    char *c = malloc(len + 1);
    if (!c) return SF_ENOMEM;
    if (len) memcpy(c, s, len);
    c[len] = 0;
    free(t->str[id]);
    t->str[id] = c;
    t->len[id] = (uint32_t)len;
    t->score[id] = score;
    t->type[id] = type;
    return 0;
}

/* "<0xAB>" -> 0xAB, or -1 */
static int parse_byte_token(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* The SPM space (U+2581 or ' ') starts at s[i]. */
static bool spm_space_at(const struct tokenizer *t, const char *s, size_t n, size_t i)
{
    if (!t->escape_spaces) return s[i] == ' ';
    return i + 3 <= n && memcmp(s + i, SPM_SPACE, 3) == 0;
}

/* The SPM space ends just before s[i]. */
static bool spm_space_before(const struct tokenizer *t, const char *s, size_t i)
{
    if (!t->escape_spaces) return i >= 1 && s[i - 1] == ' ';
    return i >= 3 && memcmp(s + i - 3, SPM_SPACE, 3) == 0;
}

int tokenizer_finish(struct tokenizer *t)
{
    int rc;
    if (!t->map && (rc = map_rebuild(t, t->n_str))) return rc;
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        int32_t sid = str_lookup(t, name, 6);
        t->byte_tok[b] = sid >= 0 && (size_t)sid < t->n_vocab ? sid : -1;
    }
    /* GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the others
     * are numbered from 256 in byte order */
    uint32_t next = 256;
    for (int i = 0; i < 512; i++) t->cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        t->byte_cp[b] = printable ? (uint32_t)b : next++;
        t->cp_byte[t->byte_cp[b]] = (int16_t)b;
    }
    /* SPM: may words be merged one at a time? Only if no token holds a space that
     * follows a non-space (SentencePiece vocabularies split by whitespace never do). */
    t->spm_split = t->kind == TOKENIZER_SPM;
    for (size_t i = 0; i < t->n_vocab && t->spm_split; i++) {
        for (size_t p = 1; p < t->len[i]; p++) {
            if (spm_space_at(t, t->str[i], t->len[i], p) && !spm_space_before(t, t->str[i], p)) {
                t->spm_split = false;
                break;
            }
        }
    }
    /* SPM as merges: the first symbol to span such a space would come from a merge of a
     * piece ending in a non-space with a piece starting with the space */
    if (t->kind == TOKENIZER_SPM_MERGES) {
        t->spm_split = true;
        for (size_t i = 0; i < t->pair_cap && t->spm_split; i++) {
            if (!t->pair_val[i]) continue;
            uint32_t a = (uint32_t)(t->pair_key[i] >> 32), b = (uint32_t)t->pair_key[i];
            if (t->len[a] > 0 && spm_space_at(t, t->str[b], t->len[b], 0) &&
                !spm_space_before(t, t->str[a], t->len[a]))
                t->spm_split = false;
        }
    }
    /* user-defined tokens, longest first, for partition() */
    free(t->udt);
    t->udt = NULL;
    t->n_udt = 0;
    for (size_t i = 0; i < t->n_vocab; i++)
        if (t->type[i] == TOKEN_USER_DEFINED && t->len[i] > 0) t->n_udt++;
    if (t->n_udt) {
        t->udt = malloc(t->n_udt * sizeof *t->udt);
        if (!t->udt) return SF_ENOMEM;
        size_t k = 0;
        for (size_t i = 0; i < t->n_vocab; i++)
            if (t->type[i] == TOKEN_USER_DEFINED && t->len[i] > 0) t->udt[k++] = (int32_t)i;
        /* insertion sort by length, descending (stable: equal lengths keep id order) */
        for (size_t i = 1; i < t->n_udt; i++) {
            int32_t x = t->udt[i];
            size_t j = i;
            while (j > 0 && t->len[t->udt[j - 1]] < t->len[x]) {
                t->udt[j] = t->udt[j - 1];
                j--;
            }
            t->udt[j] = x;
        }
    }
    int32_t *ids[3] = {&t->bos, &t->eos, &t->unk};
    for (int i = 0; i < 3; i++)
        if (*ids[i] < 0 || (size_t)*ids[i] >= t->n_vocab) *ids[i] = -1;
    return 0;
}

void tokenizer_destroy(struct tokenizer **tp)
{
    if (!tp || !*tp) return;
    struct tokenizer *t = *tp;
    if (t->str)
        for (size_t i = 0; i < t->n_str; i++) free(t->str[i]);
    free(t->str);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->map);
    free(t->pair_key);
    free(t->pair_val);
    free(t->udt);
    free(t);
    *tp = NULL;
}

/* ---- the merge engine (SPM by score, BPE by rank) ---- */

struct sym {
    int32_t prev, next;
    int32_t sid; /* interned id of the symbol's text, -1 if unknown */
    size_t off, n;
};

struct bigram {
    double key; /* larger merges first */
    int32_t left, right;
    size_t size;
};

struct heap {
    struct bigram *a;
    size_t n, cap;
};

static bool bigram_before(const struct bigram *x, const struct bigram *y)
{
    return x->key > y->key || (x->key == y->key && x->left < y->left);
}

static int heap_push(struct heap *h, struct bigram b)
{
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 64;
        struct bigram *na = realloc(h->a, nc * sizeof *na);
        if (!na) return SF_ENOMEM;
        h->a = na;
        h->cap = nc;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!bigram_before(&b, &h->a[p])) break;
        h->a[i] = h->a[p];
        i = p;
    }
    h->a[i] = b;
    return 0;
}

static struct bigram heap_pop(struct heap *h)
{
    struct bigram top = h->a[0];
    struct bigram last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && bigram_before(&h->a[c + 1], &h->a[c])) c++;
        if (!bigram_before(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n) h->a[i] = last;
    return top;
}

struct work {
    struct sym *syms;
    size_t cap_syms;
    struct heap heap;
};

static void work_fini(struct work *w)
{
    free(w->syms);
    free(w->heap.a);
}

/* Queues the pair (l, r) if it may merge. */
static int try_bigram(const struct tokenizer *t, struct work *w, const char *text, int32_t l,
                      int32_t r)
{
    if (l < 0 || r < 0) return 0;
    const struct sym *a = &w->syms[l], *b = &w->syms[r];
    struct bigram bg = {0, l, r, a->n + b->n};
    if (t->kind == TOKENIZER_SPM) {
        int32_t sid = str_lookup(t, text + a->off, a->n + b->n);
        if (sid < 0 || (size_t)sid >= t->n_vocab) return 0;
        bg.key = t->score[sid];
    } else {
        if (a->sid < 0 || b->sid < 0) return 0;
        uint32_t rank = pair_rank(t, a->sid, b->sid);
        if (rank == UINT32_MAX) return 0;
        bg.key = -(double)rank;
    }
    return heap_push(&w->heap, bg);
}

/* Emits the tokens for a symbol that is not in the vocabulary. */
static int fallback(const struct tokenizer *t, const char *s, size_t n, struct ids *out)
{
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        uint8_t b = (uint8_t)s[i];
        if (t->kind == TOKENIZER_BPE) {
            /* as llama.cpp: single-byte tokens where they exist, else nothing */
            int32_t sid = str_lookup(t, s + i, 1);
            if (sid >= 0 && (size_t)sid < t->n_vocab) rc = ids_push(out, sid);
        } else {
            int32_t id = t->byte_tok[b] >= 0 ? t->byte_tok[b] : t->unk;
            if (id >= 0) rc = ids_push(out, id);
        }
    }
    return rc;
}

/* Tokenises one word (already escaped / byte-mapped) and appends its ids. */
static int merge_word(const struct tokenizer *t, struct work *w, const char *text, size_t len,
                      struct ids *out)
{
    int rc;
    if (len == 0) return 0;
    if (len > w->cap_syms) {
        struct sym *ns = realloc(w->syms, len * sizeof *ns);
        if (!ns) return SF_ENOMEM;
        w->syms = ns;
        w->cap_syms = len;
    }
    size_t nsym = 0;
    for (size_t off = 0; off < len;) {
        size_t adv;
        tokenizer_utf8_decode((const uint8_t *)text + off, len - off, &adv);
        struct sym *s = &w->syms[nsym];
        s->off = off;
        s->n = adv;
        s->prev = (int32_t)nsym - 1;
        s->next = off + adv == len ? -1 : (int32_t)nsym + 1;
        s->sid = t->kind == TOKENIZER_SPM ? -1 : str_lookup(t, text + off, adv);
        nsym++;
        off += adv;
    }
    w->heap.n = 0;
    for (size_t i = 1; i < nsym; i++)
        if ((rc = try_bigram(t, w, text, (int32_t)i - 1, (int32_t)i))) return rc;
    while (w->heap.n) {
        struct bigram bg = heap_pop(&w->heap);
        struct sym *l = &w->syms[bg.left], *r = &w->syms[bg.right];
        if (l->n == 0 || r->n == 0 || l->next != bg.right || l->n + r->n != bg.size) continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) w->syms[r->next].prev = bg.left;
        if (t->kind != TOKENIZER_SPM) l->sid = str_lookup(t, text + l->off, l->n);
        if ((rc = try_bigram(t, w, text, l->prev, bg.left))) return rc;
        if ((rc = try_bigram(t, w, text, bg.left, l->next))) return rc;
    }
    for (int32_t i = 0; i != -1; i = w->syms[i].next) {
        const struct sym *s = &w->syms[i];
        int32_t sid = str_lookup(t, text + s->off, s->n);
        if (sid >= 0 && (size_t)sid < t->n_vocab)
            rc = ids_push(out, sid);
        else
            rc = fallback(t, text + s->off, s->n, out);
        if (rc) return rc;
    }
    return 0;
}

/* ---- pre-tokenizers ----
 * A text is a list of fragments (end positions in code points); each stage splits every
 * fragment further, the way llama.cpp applies its list of regexes: matches become
 * fragments and so do the gaps between them. The GPT-2 stage is the regex
 * 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ by hand. */

enum cclass { C_END = 0, C_SPACE, C_LETTER, C_NUMBER, C_OTHER };

static enum cclass cclass_of(const uint32_t *cp, size_t n, size_t i)
{
    if (i >= n) return C_END;
    uint32_t c = cp[i];
    if (tokenizer_unicode_is_space(c)) return C_SPACE;
    if (tokenizer_unicode_is_letter(c)) return C_LETTER;
    if (tokenizer_unicode_is_number(c)) return C_NUMBER;
    return C_OTHER;
}

/* Splits the fragment cp[s..n) with the GPT-2 regex; appends word ends to `ends`. */
static int split_gpt2(const uint32_t *cp, size_t s, size_t n, struct ids *ends)
{
    size_t pos = s;
    int rc = 0;
    while (pos < n && !rc) {
        uint32_t c = cp[pos];
        size_t end;
        if (c == '\'' && pos + 1 < n) {
            uint32_t c1 = cp[pos + 1];
            if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
                pos += 2;
                rc = ids_push(ends, (int32_t)pos);
                continue;
            }
            if (pos + 2 < n) {
                uint32_t c2 = cp[pos + 2];
                if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') ||
                    (c1 == 'l' && c2 == 'l')) {
                    pos += 3;
                    rc = ids_push(ends, (int32_t)pos);
                    continue;
                }
            }
        }
        size_t p = pos + (c == ' ' ? 1 : 0);
        enum cclass k = cclass_of(cp, n, p);
        if (k == C_LETTER || k == C_NUMBER || k == C_OTHER) {
            /* ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+' */
            end = p;
            while (cclass_of(cp, n, end) == k) end++;
        } else {
            size_t nw = 0;
            while (pos + nw < n && tokenizer_unicode_is_space(cp[pos + nw])) nw++;
            if (nw > 1 && pos + nw < n)
                end = pos + nw - 1; /* '\s+(?!\S)': leave one space for the next word */
            else if (nw > 0)
                end = pos + nw;
            else
                end = pos + 1;
        }
        pos = end;
        rc = ids_push(ends, (int32_t)pos);
    }
    return rc;
}

static bool is_crlf(uint32_t c)
{
    return c == '\r' || c == '\n';
}

static uint32_t ascii_lower(uint32_t c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Splits cp[s..n) with the Llama 3 regex (Qwen2 when max_digits == 1):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static int split_llama3(const uint32_t *cp, size_t s, size_t n, size_t max_digits, struct ids *ends)
{
    size_t pos = s;
    int rc = 0;
    while (pos < n && !rc) {
        uint32_t c = cp[pos];
        size_t end = 0;
        enum cclass k = cclass_of(cp, n, pos);
        if (c == '\'' && pos + 1 < n) {
            uint32_t c1 = ascii_lower(cp[pos + 1]);
            uint32_t c2 = pos + 2 < n ? ascii_lower(cp[pos + 2]) : 0;
            if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd')
                end = pos + 2;
            else if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') ||
                     (c1 == 'l' && c2 == 'l'))
                end = pos + 3;
        }
        if (!end && (k == C_LETTER ||
                     (!is_crlf(c) && k != C_NUMBER && cclass_of(cp, n, pos + 1) == C_LETTER))) {
            /* [^\r\n\p{L}\p{N}]?\p{L}+ */
            end = k == C_LETTER ? pos : pos + 1;
            while (cclass_of(cp, n, end) == C_LETTER) end++;
        }
        if (!end && k == C_NUMBER) {
            end = pos;
            while (end - pos < max_digits && cclass_of(cp, n, end) == C_NUMBER) end++;
        }
        if (!end) {
            /*  ?[^\s\p{L}\p{N}]+[\r\n]* */
            size_t p = pos + (c == ' ' ? 1 : 0);
            if (cclass_of(cp, n, p) == C_OTHER) {
                end = p;
                while (cclass_of(cp, n, end) == C_OTHER) end++;
                while (end < n && is_crlf(cp[end])) end++;
            }
        }
        if (!end) {
            /* whitespace: \s*[\r\n]+ | \s+(?!\S) | \s+ */
            size_t e = pos;
            while (e < n && tokenizer_unicode_is_space(cp[e])) e++;
            size_t last_nl = 0;
            for (size_t i = pos; i < e; i++)
                if (is_crlf(cp[i])) last_nl = i + 1;
            if (last_nl)
                end = last_nl;
            else if (e - pos > 1 && e < n)
                end = e - 1;
            else
                end = e > pos ? e : pos + 1;
        }
        pos = end;
        rc = ids_push(ends, (int32_t)pos);
    }
    return rc;
}

/* A regex stage: length of the match starting at pos within [.., n), 0 if none. */
typedef size_t (*match_fn)(const uint32_t *cp, size_t n, size_t pos);

/* [\r\n] */
static size_t match_crlf(const uint32_t *cp, size_t n, size_t pos)
{
    (void)n;
    return cp[pos] == '\r' || cp[pos] == '\n';
}

static size_t run_of(const uint32_t *cp, size_t n, size_t pos, bool (*is)(uint32_t))
{
    size_t e = pos;
    while (e < n && is(cp[e])) e++;
    return e - pos;
}

/* \s?\p{L}+ */
static size_t match_space_letters(const uint32_t *cp, size_t n, size_t pos)
{
    if (tokenizer_unicode_is_space(cp[pos]) && pos + 1 < n) {
        size_t k = run_of(cp, n, pos + 1, tokenizer_unicode_is_letter);
        if (k) return k + 1;
    }
    return run_of(cp, n, pos, tokenizer_unicode_is_letter);
}

/* \s?\p{P}+ */
static size_t match_space_punct(const uint32_t *cp, size_t n, size_t pos)
{
    if (tokenizer_unicode_is_space(cp[pos]) && pos + 1 < n) {
        size_t k = run_of(cp, n, pos + 1, tokenizer_unicode_is_punct);
        if (k) return k + 1;
    }
    return run_of(cp, n, pos, tokenizer_unicode_is_punct);
}

static bool is_cjk(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FA5) || (c >= 0x0800 && c <= 0x4E00) ||
           (c >= 0xAC00 && c <= 0xD7FF);
}

/* [一-龥ࠀ-一가-퟿]+ */
static size_t match_cjk(const uint32_t *cp, size_t n, size_t pos)
{
    return run_of(cp, n, pos, is_cjk);
}

/* \p{N} */
static size_t match_number(const uint32_t *cp, size_t n, size_t pos)
{
    (void)n;
    return tokenizer_unicode_is_number(cp[pos]) ? 1 : 0;
}

static bool is_falcon_punct(uint32_t c)
{
    return tokenizer_unicode_is_punct(c) || c == '$' || c == '+' || c == '<' || c == '=' ||
           c == '>' || c == '^' || c == '~' || c == '|' || c == '`';
}

/* [\p{P}\$\+<=>\^~\|`]+ */
static size_t match_falcon_punct(const uint32_t *cp, size_t n, size_t pos)
{
    return run_of(cp, n, pos, is_falcon_punct);
}

/* [0-9][0-9][0-9] */
static size_t match_3digits(const uint32_t *cp, size_t n, size_t pos)
{
    for (size_t i = 0; i < 3; i++)
        if (pos + i >= n || cp[pos + i] < '0' || cp[pos + i] > '9') return 0;
    return 3;
}

/* Whole-fragment splitters (a regex whose alternatives cover every character). */
enum whole { W_NONE = 0, W_GPT2, W_LLAMA3, W_QWEN2 };

struct stage {
    match_fn m; /* or */
    enum whole w;
};

/* Applies one stage to every fragment of `in` (ends), writing the new ends to `out`. */
static int split_stage(const uint32_t *cp, const struct ids *in, struct stage st, struct ids *out)
{
    size_t s = 0;
    int rc = 0;
    match_fn m = st.m;
    out->n = 0;
    for (size_t k = 0; k < in->n && !rc; k++) {
        size_t e = (size_t)in->v[k];
        if (!m) {
            rc = st.w == W_GPT2 ? split_gpt2(cp, s, e, out)
                                : split_llama3(cp, s, e, st.w == W_LLAMA3 ? 3 : 1, out);
            s = e;
            continue;
        }
        size_t pos = s, last = s;
        while (pos < e && !rc) {
            size_t len = m(cp, e, pos);
            if (!len) {
                pos++;
                continue;
            }
            if (pos > last) rc = ids_push(out, (int32_t)pos);
            pos += len;
            if (!rc) rc = ids_push(out, (int32_t)pos);
            last = pos;
        }
        if (!rc && last < e) rc = ids_push(out, (int32_t)e);
        s = e;
    }
    return rc;
}

/* Splits cp[0..n) into words; `ends` receives their end positions. */
static int pretokenize(enum tokenizer_pre pre, const uint32_t *cp, size_t n, struct ids *ends)
{
    static const struct stage gpt2[] = {{NULL, W_GPT2}};
    static const struct stage llama3[] = {{NULL, W_LLAMA3}};
    static const struct stage qwen2[] = {{NULL, W_QWEN2}};
    static const struct stage smollm[] = {{match_number, W_NONE}, {NULL, W_GPT2}};
    static const struct stage deepseek[] = {{match_crlf, W_NONE},
                                            {match_space_letters, W_NONE},
                                            {match_space_punct, W_NONE},
                                            {match_cjk, W_NONE},
                                            {match_number, W_NONE}};
    static const struct stage falcon[] = {
        {match_falcon_punct, W_NONE}, {NULL, W_GPT2}, {match_3digits, W_NONE}};
    const struct stage *stages;
    size_t n_stages;
    switch (pre) {
    case TOKENIZER_PRE_GPT2:
        stages = gpt2;
        n_stages = SF_ARRAY_LEN(gpt2);
        break;
    case TOKENIZER_PRE_LLAMA3:
        stages = llama3;
        n_stages = SF_ARRAY_LEN(llama3);
        break;
    case TOKENIZER_PRE_QWEN2:
        stages = qwen2;
        n_stages = SF_ARRAY_LEN(qwen2);
        break;
    case TOKENIZER_PRE_SMOLLM:
        stages = smollm;
        n_stages = SF_ARRAY_LEN(smollm);
        break;
    case TOKENIZER_PRE_DEEPSEEK_CODER:
        stages = deepseek;
        n_stages = SF_ARRAY_LEN(deepseek);
        break;
    case TOKENIZER_PRE_FALCON:
        stages = falcon;
        n_stages = SF_ARRAY_LEN(falcon);
        break;
    default:
        return ids_push(ends, (int32_t)n);
    }
    struct ids tmp = {0};
    int rc = ids_push(ends, (int32_t)n);
    for (size_t i = 0; i < n_stages && !rc; i++) {
        /* ends -> tmp, then swap */
        rc = split_stage(cp, ends, stages[i], &tmp);
        struct ids x = *ends;
        *ends = tmp;
        tmp = x;
    }
    free(tmp.v);
    return rc;
}

/* Decodes text into code points with their byte offsets (off has n + 1 entries). */
static int decode_cps(const char *text, size_t len, uint32_t **cps, size_t **offs, size_t *n)
{
    uint32_t *cp = malloc((len + 1) * sizeof *cp);
    size_t *off = malloc((len + 1) * sizeof *off);
    if (!cp || !off) {
        free(cp);
        free(off);
        return SF_ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < len;) {
        size_t adv;
        cp[k] = tokenizer_utf8_decode((const uint8_t *)text + i, len - i, &adv);
        off[k++] = i;
        i += adv;
    }
    off[k] = len;
    *cps = cp;
    *offs = off;
    *n = k;
    return 0;
}

int tokenizer_pretokenize(enum tokenizer_pre pre, const char *text, size_t len, size_t **ends,
                          size_t *n)
{
    uint32_t *cp = NULL;
    size_t *off = NULL, ncp = 0;
    struct ids e = {0};
    *ends = NULL;
    *n = 0;
    if (len > INT32_MAX / 4) return SF_ERANGE;
    int rc = decode_cps(text, len, &cp, &off, &ncp);
    if (!rc && ncp) rc = pretokenize(pre, cp, ncp, &e);
    if (!rc && e.n) {
        *ends = malloc(e.n * sizeof **ends);
        if (!*ends) rc = SF_ENOMEM;
        for (size_t i = 0; !rc && i < e.n; i++) (*ends)[i] = off[e.v[i]];
        if (!rc) *n = e.n;
    }
    free(cp);
    free(off);
    free(e.v);
    return rc;
}

/* ---- encoding ---- */

/* SentencePiece text preparation (dummy prefix, spaces as U+2581 when `escape`) then
 * merging: by score (SPM) or by rank (SPM as merges), as merge_word does for t. */
static int encode_spm_text(const struct tokenizer *t, struct work *w, const char *text, size_t len,
                           bool prefix, bool escape, struct ids *out)
{
    if (len == 0) return 0;
    size_t cap;
    if (!size_mul_ok(len + 1, 3, &cap)) return SF_ENOMEM;
    char *s = malloc(cap);
    if (!s) return SF_ENOMEM;
    size_t n = 0;
    if (prefix) {
        if (escape) {
            memcpy(s, SPM_SPACE, 3);
            n = 3;
        } else {
            s[n++] = ' ';
        }
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ' && escape) {
            memcpy(s + n, SPM_SPACE, 3);
            n += 3;
        } else {
            s[n++] = text[i];
        }
    }
    int rc = 0;
    if (!t->spm_split) {
        rc = merge_word(t, w, s, n, out);
    } else {
        /* no token spans a space that follows a non-space (checked at load), so each
         * space-led word can be merged on its own: same result, small heaps */
        size_t seg = 0;
        for (size_t i = 1; i <= n && !rc; i++) {
            if (i == n || (spm_space_at(t, s, n, i) && !spm_space_before(t, s, i))) {
                rc = merge_word(t, w, s + seg, i - seg, out);
                seg = i;
            }
        }
    }
    free(s);
    return rc;
}

static int encode_spm(const struct tokenizer *t, struct work *w, const char *text, size_t len,
                      bool prefix, struct ids *out)
{
    return encode_spm_text(t, w, text, len, prefix, t->escape_spaces, out);
}

static int encode_bpe(const struct tokenizer *t, struct work *w, const char *text, size_t len,
                      struct ids *out)
{
    int rc = 0;
    if (len == 0) return 0;
    uint32_t *cp = NULL;
    size_t *off = NULL, n = 0;
    char *word = malloc(len * 2 + 4); /* each byte maps to a code point < 0x800 */
    struct ids ends = {0};
    if (!word || (rc = decode_cps(text, len, &cp, &off, &n))) {
        rc = rc ? rc : SF_ENOMEM;
        goto out;
    }
    rc = pretokenize(t->pre, cp, n, &ends);
    size_t start = 0;
    for (size_t k = 0; k < ends.n && !rc; k++) {
        size_t end = (size_t)ends.v[k];
        size_t wl = 0;
        for (size_t b = off[start]; b < off[end]; b++)
            wl += utf8_encode(t->byte_cp[(uint8_t)text[b]], word + wl);
        /* ignore_merges (Llama 3): a word that is itself a token is taken whole */
        int32_t whole = t->ignore_merges ? tokenizer_find(t, word, wl) : -1;
        rc = whole >= 0 ? ids_push(out, whole) : merge_word(t, w, word, wl, out);
        start = end;
    }
out:
    free(cp);
    free(off);
    free(word);
    free(ends.v);
    return rc;
}

static int encode_spm_merges(const struct tokenizer *t, struct work *w, const char *text,
                             size_t len, bool prefix, struct ids *out)
{
    /* same text preparation as SPM (spaces always escaped), merges by rank */
    return encode_spm_text(t, w, text, len, prefix, true, out);
}

/* Encodes plain text (no user-defined tokens in it). `after_special`: the text starts
 * the input or follows a token, so SPM adds its dummy prefix (as llama.cpp does). */
static int encode_raw(const struct tokenizer *t, struct work *w, const char *text, size_t len,
                      bool after_special, struct ids *out)
{
    switch (t->kind) {
    case TOKENIZER_SPM:
        return encode_spm(t, w, text, len, after_special && t->add_space_prefix, out);
    case TOKENIZER_BPE:
        return encode_bpe(t, w, text, len, out);
    case TOKENIZER_SPM_MERGES:
        return encode_spm_merges(t, w, text, len, after_special && t->add_space_prefix, out);
    }
    return SF_EINVAL;
}

struct frag {
    size_t off, len;
    int32_t tok; /* -1: raw text */
};

struct frags {
    struct frag *v;
    size_t n, cap;
};

static int frags_push(struct frags *f, size_t off, size_t len, int32_t tok)
{
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 16;
        struct frag *nv = realloc(f->v, nc * sizeof *nv);
        if (!nv) return SF_ENOMEM;
        f->v = nv;
        f->cap = nc;
    }
    f->v[f->n++] = (struct frag){off, len, tok};
    return 0;
}

/* Splits the text at occurrences of user-defined tokens (longest first), which are
 * always matched in text (llama.cpp and Hugging Face both do); control tokens never are. */
static int partition(const struct tokenizer *t, const char *text, size_t len, struct frags *out)
{
    struct frags a = {0}, b = {0};
    int rc = frags_push(&a, 0, len, -1);
    for (size_t u = 0; u < t->n_udt && !rc; u++) {
        int32_t id = t->udt[u];
        const char *us = t->str[id];
        size_t ul = t->len[id];
        b.n = 0;
        for (size_t k = 0; k < a.n && !rc; k++) {
            struct frag f = a.v[k];
            if (f.tok >= 0 || f.len < ul) {
                rc = frags_push(&b, f.off, f.len, f.tok);
                continue;
            }
            size_t cur = f.off, end = f.off + f.len;
            while (!rc && end - cur >= ul) {
                const char *hit = memmem(text + cur, end - cur, us, ul);
                if (!hit) break;
                size_t p = (size_t)(hit - text);
                if (p > cur) rc = frags_push(&b, cur, p - cur, -1);
                if (!rc) rc = frags_push(&b, p, ul, id);
                cur = p + ul;
            }
            if (!rc && cur < end) rc = frags_push(&b, cur, end - cur, -1);
        }
        struct frags x = a;
        a = b;
        b = x;
    }
    free(b.v);
    if (rc) {
        free(a.v);
        return rc;
    }
    *out = a;
    return 0;
}

static int encode_ids(const struct tokenizer *t, const char *text, size_t len, bool add_bos,
                      struct ids *out)
{
    struct work w = {0};
    struct frags fr = {0};
    int rc = 0;
    if (!text && len) return SF_EINVAL;
    if (len > INT32_MAX / 4) return SF_ERANGE;
    if (add_bos && t->bos >= 0) rc = ids_push(out, t->bos);
    if (!rc && len) {
        if (t->n_udt == 0) {
            rc = encode_raw(t, &w, text, len, true, out);
        } else if ((rc = partition(t, text, len, &fr)) == 0) {
            bool after_special = true;
            for (size_t k = 0; k < fr.n && !rc; k++) {
                if (fr.v[k].tok >= 0) {
                    rc = ids_push(out, fr.v[k].tok);
                    after_special = true;
                } else {
                    rc = encode_raw(t, &w, text + fr.v[k].off, fr.v[k].len, after_special, out);
                    after_special = false;
                }
            }
        }
    }
    free(fr.v);
    work_fini(&w);
    return rc;
}

int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool add_bos,
                     int32_t *ids, size_t cap, size_t *n)
{
    struct ids out = {0};
    int rc = encode_ids(t, text, len, add_bos, &out);
    *n = out.n;
    if (!rc) {
        size_t k = SF_MIN(cap, out.n);
        if (k) memcpy(ids, out.v, k * sizeof *ids);
        if (cap < out.n) rc = SF_ERANGE;
    }
    free(out.v);
    return rc;
}

int tokenizer_encode_alloc(const struct tokenizer *t, const char *text, size_t len, bool add_bos,
                           int32_t **ids, size_t *n)
{
    struct ids out = {0};
    int rc = encode_ids(t, text, len, add_bos, &out);
    if (rc) {
        free(out.v);
        *ids = NULL;
        *n = 0;
        return rc;
    }
    *ids = out.v;
    *n = out.n;
    return 0;
}

/* ---- decoding ---- */

int tokenizer_decode_piece(const struct tokenizer *t, int32_t prev, int32_t id, struct buf *out)
{
    if (id < 0 || (size_t)id >= t->n_vocab) return SF_EINVAL;
    const char *s = t->str[id];
    size_t n = t->len[id];
    int type = t->type[id];
    if (type == TOKEN_CONTROL || type == TOKEN_UNUSED) return 0;
    if (t->kind == TOKENIZER_BPE) {
        if (type == TOKEN_USER_DEFINED) return buf_append(out, s, n);
        for (size_t i = 0; i < n;) {
            size_t adv;
            uint32_t c = tokenizer_utf8_decode((const uint8_t *)s + i, n - i, &adv);
            int rc;
            if (c < 512 && t->cp_byte[c] >= 0)
                rc = buf_putc(out, (char)t->cp_byte[c]);
            else
                rc = buf_append(out, s + i, adv);
            if (rc) return rc;
            i += adv;
        }
        return 0;
    }
    /* SPM */
    if (type == TOKEN_BYTE) {
        int b = parse_byte_token(s, n);
        return b >= 0 ? buf_putc(out, (char)b) : 0;
    }
    if (type == TOKEN_UNKNOWN) return buf_append(out, "\xE2\x96\x85", 3); /* as llama.cpp */
    bool strip = t->add_space_prefix && (prev < 0 || prev == t->bos);
    size_t i = 0;
    bool escaped = t->escape_spaces || t->kind == TOKENIZER_SPM_MERGES;
    if (strip) {
        if (escaped && n >= 3 && memcmp(s, SPM_SPACE, 3) == 0)
            i = 3;
        else if (n >= 1 && s[0] == ' ')
            i = 1;
    }
    size_t start = i;
    int rc = 0;
    if (escaped) {
        while (i + 3 <= n && !rc) {
            if (memcmp(s + i, SPM_SPACE, 3) == 0) {
                rc = buf_append(out, s + start, i - start);
                if (!rc) rc = buf_putc(out, ' ');
                i += 3;
                start = i;
            } else {
                i++;
            }
        }
    }
    if (!rc && n > start) rc = buf_append(out, s + start, n - start);
    return rc;
}

int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, struct buf *out)
{
    int32_t prev = -1;
    for (size_t i = 0; i < n; i++) {
        int rc = tokenizer_decode_piece(t, prev, ids[i], out);
        if (rc) return rc;
        prev = ids[i];
    }
    return 0;
}

/* ---- accessors ---- */

enum tokenizer_kind tokenizer_kind(const struct tokenizer *t)
{
    return t->kind;
}

size_t tokenizer_vocab_size(const struct tokenizer *t)
{
    return t->n_vocab;
}

int32_t tokenizer_bos(const struct tokenizer *t)
{
    return t->bos;
}

int32_t tokenizer_eos(const struct tokenizer *t)
{
    return t->eos;
}

int32_t tokenizer_unk(const struct tokenizer *t)
{
    return t->unk;
}

bool tokenizer_add_bos_default(const struct tokenizer *t)
{
    return t->add_bos && t->bos >= 0;
}

const char *tokenizer_add_bos_source(const struct tokenizer *t)
{
    if (t->bos < 0) return "the tokenizer has no BOS token";
    return t->add_bos_from ? t->add_bos_from : "default";
}

void tokenizer_set_add_bos(struct tokenizer *t, bool add, const char *source)
{
    t->add_bos = add;
    t->add_bos_from = source;
}

const char *tokenizer_token_str(const struct tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || (size_t)id >= t->n_vocab) return NULL;
    if (len) *len = t->len[id];
    return t->str[id];
}

float tokenizer_token_score(const struct tokenizer *t, int32_t id)
{
    if (id < 0 || (size_t)id >= t->n_vocab) return 0.0f;
    return t->score[id];
}

enum tokenizer_token_type tokenizer_token_type(const struct tokenizer *t, int32_t id)
{
    if (id < 0 || (size_t)id >= t->n_vocab) return TOKEN_UNUSED;
    return (enum tokenizer_token_type)t->type[id];
}

int32_t tokenizer_find(const struct tokenizer *t, const char *s, size_t len)
{
    int32_t sid = str_lookup(t, s, len);
    return sid >= 0 && (size_t)sid < t->n_vocab ? sid : -1;
}

/* ---- llama2.c tokenizer.bin ---- */

int tokenizer_load_llama2c_mem(const void *data, size_t len, struct tokenizer **out)
{
    const uint8_t *p = data;
    int32_t max_len;
    *out = NULL;
    if (!data || len < 4) {
        log_error("tokenizer_llama2c", "reason=truncated len=%zu", len);
        return SF_EFORMAT;
    }
    memcpy(&max_len, p, 4);
    if (max_len <= 0 || max_len > TOKENIZER_MAX_TOKLEN) {
        log_error("tokenizer_llama2c", "reason=bad_max_token_length value=%d", (int)max_len);
        return SF_EFORMAT;
    }
    /* first pass: count and validate records */
    size_t n = 0;
    for (size_t pos = 4; pos < len; n++) {
        int32_t tl;
        float sc;
        if (len - pos < 8) {
            log_error("tokenizer_llama2c", "reason=truncated_record token=%zu", n);
            return SF_EFORMAT;
        }
        memcpy(&sc, p + pos, 4);
        memcpy(&tl, p + pos + 4, 4);
        if (tl < 0 || tl > max_len || (size_t)tl > len - pos - 8 || !isfinite(sc)) {
            log_error("tokenizer_llama2c", "reason=bad_record token=%zu len=%d", n, (int)tl);
            return SF_EFORMAT;
        }
        pos += 8 + (size_t)tl;
        if (n + 1 > TOKENIZER_MAX_VOCAB) {
            log_error("tokenizer_llama2c", "reason=too_many_tokens");
            return SF_EFORMAT;
        }
    }
    if (n < 3) {
        log_error("tokenizer_llama2c", "reason=too_few_tokens n=%zu", n);
        return SF_EFORMAT;
    }
    struct tokenizer *t = tokenizer_alloc(TOKENIZER_SPM, n);
    if (!t) return SF_ENOMEM;
    int rc = 0;
    size_t pos = 4;
    for (size_t i = 0; i < n && !rc; i++) {
        int32_t tl;
        float sc;
        memcpy(&sc, p + pos, 4);
        memcpy(&tl, p + pos + 4, 4);
        const char *s = (const char *)p + pos + 8;
        int32_t type = i == 0 ? TOKEN_UNKNOWN : i <= 2 ? TOKEN_CONTROL : TOKEN_NORMAL;
        if (parse_byte_token(s, (size_t)tl) >= 0) type = TOKEN_BYTE;
        rc = tokenizer_set_token(t, (int32_t)i, s, (size_t)tl, sc, type);
        pos += 8 + (size_t)tl;
    }
    /* llama2.c's fixed ids; its pieces use plain spaces */
    t->unk = 0;
    t->bos = 1;
    t->eos = 2;
    t->add_bos = true;
    t->add_bos_from = "llama2.c (always)";
    t->add_space_prefix = true;
    t->escape_spaces = false;
    if (!rc) rc = tokenizer_finish(t);
    if (rc) {
        tokenizer_destroy(&t);
        return rc;
    }
    *out = t;
    return 0;
}

int tokenizer_load_llama2c(const char *path, struct tokenizer **out)
{
    char *data = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = file_read_all(path, (size_t)1 << 30, &data, &len);
    if (rc) {
        log_error("tokenizer_load_failed", "path=%s err=%s", path, sf_strerror(rc));
        return rc;
    }
    rc = tokenizer_load_llama2c_mem(data, len, out);
    if (rc) log_error("tokenizer_load_failed", "path=%s err=%s", path, sf_strerror(rc));
    free(data);
    return rc;
}

/* ---- GGUF ---- */

static int32_t gguf_id(const struct gguf *g, const char *key)
{
    uint32_t v;
    if (gguf_find(g, key) == NULL) return -1;
    if (gguf_get_u32(g, key, &v) != 0 || v > INT32_MAX) return -1;
    return (int32_t)v;
}

static bool gguf_flag(const struct gguf *g, const char *key, bool def)
{
    bool b;
    return gguf_get_bool(g, key, &b) == 0 ? b : def;
}

int tokenizer_from_gguf(const struct gguf *g, struct tokenizer **out)
{
    const char *model = NULL;
    enum gguf_type et;
    size_t n = 0;
    const void *tokens = NULL;
    int rc;
    *out = NULL;
    if ((rc = gguf_get_str(g, "tokenizer.ggml.model", &model, NULL)) != 0) {
        log_error("tokenizer_gguf", "reason=no_tokenizer_model");
        return rc == SF_NOTFOUND ? SF_EFORMAT : rc;
    }
    enum tokenizer_kind kind;
    if (strcmp(model, "llama") == 0) {
        kind = TOKENIZER_SPM;
    } else if (strcmp(model, "gpt2") == 0) {
        kind = TOKENIZER_BPE;
    } else {
        log_error("tokenizer_gguf", "reason=unsupported_model model=%s", model);
        return SF_EUNSUP;
    }
    rc = gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &tokens);
    if (rc || et != GGUF_TYPE_STRING || n == 0 || n > TOKENIZER_MAX_VOCAB) {
        log_error("tokenizer_gguf", "reason=bad_tokens n=%zu", n);
        return SF_EFORMAT;
    }
    const struct gguf_str *toks = tokens;
    const float *scores = NULL;
    const int32_t *types = NULL;
    size_t ns = 0, nt = 0;
    const void *p;
    if (gguf_get_arr(g, "tokenizer.ggml.scores", &et, &ns, &p) == 0) {
        if (et != GGUF_TYPE_FLOAT32 || ns != n) {
            log_error("tokenizer_gguf", "reason=bad_scores n=%zu", ns);
            return SF_EFORMAT;
        }
        scores = p;
    }
    if (gguf_get_arr(g, "tokenizer.ggml.token_type", &et, &nt, &p) == 0) {
        if (et != GGUF_TYPE_INT32 || nt != n) {
            log_error("tokenizer_gguf", "reason=bad_token_type n=%zu", nt);
            return SF_EFORMAT;
        }
        types = p;
    }
    struct tokenizer *t = tokenizer_alloc(kind, n);
    if (!t) return SF_ENOMEM;
    for (size_t i = 0; i < n && !rc; i++) {
        float sc = scores ? scores[i] : 0.0f;
        int32_t ty = types ? types[i] : TOKEN_NORMAL;
        if (!types && kind == TOKENIZER_SPM && parse_byte_token(toks[i].s, toks[i].len) >= 0)
            ty = TOKEN_BYTE;            /* no token_type array: recognise <0xXX> by name */
        if (!isfinite(sc)) sc = -1e30f; /* never preferred; keeps the heap ordered */
        if (ty < TOKEN_NORMAL || ty > TOKEN_BYTE) ty = TOKEN_NORMAL;
        if (toks[i].len > TOKENIZER_MAX_TOKLEN) {
            log_error("tokenizer_gguf", "reason=token_too_long id=%zu", i);
            rc = SF_EFORMAT;
            break;
        }
        rc = tokenizer_set_token(t, (int32_t)i, toks[i].s, toks[i].len, sc, ty);
    }
    t->bos = gguf_id(g, "tokenizer.ggml.bos_token_id");
    t->eos = gguf_id(g, "tokenizer.ggml.eos_token_id");
    t->unk = gguf_id(g, "tokenizer.ggml.unknown_token_id");
    bool has_flag = gguf_find(g, "tokenizer.ggml.add_bos_token") != NULL;
    t->add_bos_from = has_flag                ? "GGUF tokenizer.ggml.add_bos_token"
                      : kind == TOKENIZER_SPM ? "GGUF default for a llama tokenizer (yes)"
                                              : "GGUF default for a gpt2 tokenizer (no)";
    if (kind == TOKENIZER_SPM) {
        t->add_bos = gguf_flag(g, "tokenizer.ggml.add_bos_token", true);
        t->add_space_prefix = gguf_flag(g, "tokenizer.ggml.add_space_prefix", true);
        t->escape_spaces = true;
    } else {
        const char *pre = "gpt-2";
        t->add_bos = gguf_flag(g, "tokenizer.ggml.add_bos_token", false);
        t->pre = TOKENIZER_PRE_GPT2;
        gguf_get_str(g, "tokenizer.ggml.pre", &pre, NULL);
        if (strcmp(pre, "deepseek-coder") == 0)
            t->pre = TOKENIZER_PRE_DEEPSEEK_CODER;
        else if (strcmp(pre, "llama-bpe") == 0 || strcmp(pre, "llama3") == 0 ||
                 strcmp(pre, "smaug-bpe") == 0)
            t->pre = TOKENIZER_PRE_LLAMA3;
        else if (strcmp(pre, "qwen2") == 0)
            t->pre = TOKENIZER_PRE_QWEN2;
        else if (strcmp(pre, "smollm") == 0)
            t->pre = TOKENIZER_PRE_SMOLLM;
        else if (strcmp(pre, "falcon") == 0)
            t->pre = TOKENIZER_PRE_FALCON;
        else if (strcmp(pre, "gpt-2") != 0 && strcmp(pre, "default") != 0)
            log_warn("tokenizer_gguf", "reason=pre_tokenizer_approximated pre=%s using=gpt-2", pre);
        t->ignore_merges = t->pre == TOKENIZER_PRE_LLAMA3; /* as llama.cpp does */
        const void *merges = NULL;
        size_t nm = 0;
        if (!rc && gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm, &merges) != 0) {
            log_error("tokenizer_gguf", "reason=no_merges");
            rc = SF_EFORMAT;
        } else if (!rc && et != GGUF_TYPE_STRING) {
            log_error("tokenizer_gguf", "reason=bad_merges");
            rc = SF_EFORMAT;
        }
        if (!rc) rc = map_rebuild(t, n + nm / 8 + 16);
        for (size_t i = 0; i < nm && !rc; i++) {
            const struct gguf_str *m = &((const struct gguf_str *)merges)[i];
            /* "a b": split at the first space after the first byte (a may be " ") */
            const char *sp = m->len > 1 ? memchr(m->s + 1, ' ', m->len - 1) : NULL;
            if (!sp) {
                log_error("tokenizer_gguf", "reason=bad_merge index=%zu", i);
                rc = SF_EFORMAT;
                break;
            }
            size_t al = (size_t)(sp - m->s);
            rc = tokenizer_add_merge(t, m->s, al, sp + 1, m->len - al - 1);
        }
    }
    if (!rc) rc = tokenizer_finish(t);
    if (rc) {
        tokenizer_destroy(&t);
        return rc;
    }
    *out = t;
    return 0;
}

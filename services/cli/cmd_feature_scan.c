/* `saeflow feature search` and `saeflow feature contrast`: which SAE features fire
 * where, computed directly with the model and the SAE (no feature store needed).
 *
 *   search --text T      per token, its top features with activations; then the
 *                        features with the largest max and total activation.
 *   search --input F --word W
 *                        over a corpus, the features most selective for the tokens
 *                        that end an occurrence of W (e.g. " dog"): ranked by mean
 *                        activation there minus mean activation everywhere else.
 *   contrast --pos F --neg F
 *                        per text, each feature's max (or mean) activation over its
 *                        tokens; features ranked by how well that value separates
 *                        the two sets (AUROC, or standardized mean difference), with
 *                        their top activating tokens and examples. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_feature.h"
#include "core/core.h"
#include "tensor/tensor.h"

#define SCAN_OPTS(o)                                                                               \
    {"model", CFG_STRING, &(o).model, NULL, 0, -1, "model: .bin, .gguf or a HF directory"},        \
        {"tokenizer", CFG_STRING, &(o).tokenizer, NULL, 0, -1, "tokenizer for llama2.c models"},   \
        {"sae", CFG_STRING, &(o).sae, NULL, 0, -1, "SAE directory (SAELens or sparsify)"},         \
        {"hook", CFG_STRING, &(o).hook, NULL, 0, -1, "hook point (default: the SAE's)"},           \
        {"context", CFG_INT, &(o).context, "256", 2, 1 << 20, "tokens per text (longer: cut)"},    \
        {"batch", CFG_INT, &(o).batch, "16", 1, 4096, "texts per forward pass"},                   \
        {"threads", CFG_INT, &(o).threads, "0", 0, 1024, "CPU threads (0 = default)"},             \
        {"no-bos", CFG_BOOL, &(o).no_bos, "false", 0, -1, "do not prepend BOS"},                   \
        {"color", CFG_STRING, &(o).color, "auto", 0, -1, "auto | always | never"},                 \
    {                                                                                              \
        "no-color", CFG_BOOL, &(o).no_color, "false", 0, -1, "same as --color never"               \
    }

struct scan_flags {
    char *model, *tokenizer, *sae, *hook, *color;
    int64_t context, batch, threads;
    bool no_bos, no_color;
};

static int scan_open(struct fscan *fs, const struct scan_flags *f)
{
    if (f->threads > 0) tensor_set_threads((int)f->threads);
    struct fscan_opts o = {.model = f->model,
                           .tokenizer = f->tokenizer,
                           .sae = f->sae,
                           .hook = f->hook,
                           .batch = (size_t)f->batch,
                           .context = (size_t)f->context,
                           .no_bos = f->no_bos};
    return fscan_open(fs, &o);
}

struct rank {
    uint32_t f;
    double score;
};

static int cmp_rank_desc(const void *a, const void *b)
{
    const struct rank *x = a, *y = b;
    if (x->score != y->score) return x->score < y->score ? 1 : -1;
    return (x->f > y->f) - (x->f < y->f);
}

/* ---- search --text ------------------------------------------------------------------- */

struct text_search {
    const struct fscan *fs;
    size_t top;
    bool color;
    float *max_act; /* (n) */
    double *total;  /* (n) */
    uint64_t *fires;
    size_t *argmax; /* (n) token index of the max */
    int32_t *tokens;
    size_t n_tok;
    struct buf *json; /* --json: the rows go here instead of stdout */
};

static int text_search_cb(void *ud, const struct fscan_text *t)
{
    struct text_search *s = ud;
    const struct tokenizer *tok = s->fs->tok;
    struct buf piece, line;
    buf_init(&piece, 1 << 16);
    buf_init(&line, 1 << 20);
    s->tokens = malloc(t->n * sizeof *s->tokens);
    if (!s->tokens) return SF_ENOMEM;
    memcpy(s->tokens, t->tokens, t->n * sizeof *s->tokens);
    s->n_tok = t->n;
    struct buf *js = s->json;
    if (js)
        buf_printf(js, ",\"tokens\":[");
    else
        printf("%4s  %-16s  %s\n", "pos", "token", "top features (activation)");
    for (size_t i = 0; i < t->n; i++) {
        piece_of(tok, i ? t->tokens[i - 1] : -1, t->tokens[i], &piece);
        if (js) {
            buf_printf(js, "%s{\"pos\":%zu,\"id\":%d,\"piece\":", i ? "," : "", i,
                       (int)t->tokens[i]);
            buf_json_stringn(js, piece.data ? piece.data : "", piece.len);
            buf_printf(js, ",\"special\":%s,\"features\":[",
                       s->fs->special[t->tokens[i]] ? "true" : "false");
        }
        buf_reset(&line);
        buf_putc(&line, '"');
        tty_token(&line, piece.data ? piece.data : "", piece.len, 0, false);
        buf_putc(&line, '"');
        if (!js) printf("%4zu  %-16s ", i, line.data);
        if (s->fs->special[t->tokens[i]]) {
            if (js)
                buf_printf(js, "]}");
            else
                printf(" (special token: not encoded)\n");
            continue;
        }
        const uint32_t *ix = t->idx + i * t->max_active;
        const float *v = t->val + i * t->max_active;
        for (uint32_t q = 0; q < t->cnt[i]; q++) {
            uint32_t f = ix[q];
            if (v[q] > s->max_act[f]) {
                s->max_act[f] = v[q];
                s->argmax[f] = i;
            }
            s->total[f] += v[q];
            s->fires[f]++;
            if (q < s->top && js) {
                buf_printf(js, "%s{\"feature\":%u,\"act\":", q ? "," : "", f);
                buf_json_number(js, v[q]);
                buf_printf(js, "}");
            } else if (q < s->top) {
                printf(" %6u %-7.3f", f, (double)v[q]);
            }
        }
        if (js) {
            buf_printf(js, "]}");
            continue;
        }
        if (t->cnt[i] == 0) printf(" (none active)");
        printf("\n");
    }
    if (js) buf_printf(js, "]");
    buf_fini(&piece);
    buf_fini(&line);
    return 1; /* one text */
}

static void print_summary(struct text_search *s, bool by_total, size_t top)
{
    const size_t n = s->fs->sae->n;
    struct rank *r = malloc(n * sizeof *r);
    if (!r) return;
    size_t m = 0;
    for (size_t f = 0; f < n; f++)
        if (s->fires[f])
            r[m++] = (struct rank){(uint32_t)f, by_total ? s->total[f] : s->max_act[f]};
    qsort(r, m, sizeof *r, cmp_rank_desc);
    if (s->json) {
        buf_printf(s->json, ",\"by_%s\":[", by_total ? "total" : "max");
        for (size_t q = 0; q < m && q < top; q++) {
            uint32_t f = r[q].f;
            buf_printf(s->json, "%s{\"feature\":%u,\"max\":", q ? "," : "", f);
            buf_json_number(s->json, s->max_act[f]);
            buf_printf(s->json, ",\"total\":");
            buf_json_number(s->json, s->total[f]);
            buf_printf(s->json, ",\"fires\":%llu,\"max_at\":%zu}", (unsigned long long)s->fires[f],
                       s->argmax[f]);
        }
        buf_printf(s->json, "]");
        free(r);
        return;
    }
    printf("\nfeatures by %s activation:\n", by_total ? "total" : "max");
    printf("%7s %9s %9s %6s  %s\n", "feature", "max", "total", "fires", "where the max is");
    struct buf line;
    buf_init(&line, 1 << 20);
    for (size_t q = 0; q < m && q < top; q++) {
        uint32_t f = r[q].f;
        buf_reset(&line);
        /* a few tokens either side of the max, the max highlighted */
        size_t at = s->argmax[f], lo = at >= 6 ? at - 6 : 0, hi = SF_MIN(s->n_tok, at + 4);
        float *acts = calloc(hi - lo, sizeof *acts);
        if (acts) acts[at - lo] = 1.0f;
        tty_window(&line, s->fs->tok, s->tokens + lo, acts, hi - lo, 1.0f, s->color);
        free(acts);
        printf("%7u %9.3f %9.3f %6llu  %s%s\n", f, (double)s->max_act[f], s->total[f],
               (unsigned long long)s->fires[f], lo ? "..." : "", line.data ? line.data : "");
    }
    buf_fini(&line);
    free(r);
}

/* ---- search --word over a corpus ------------------------------------------------------ */

struct word_search {
    const struct fscan *fs;
    const char *word;
    size_t wlen;
    double *sum_on, *sum_off; /* (n) */
    uint64_t *fire_on, *fire_off;
    float *max_on;
    uint64_t n_on, n_off, n_tok, max_tokens;
    struct buf text;
    size_t *ends;    /* (context) byte end of each token's piece in text */
    bool *on;        /* (context) */
    uint64_t *first; /* (vocab) how often each token holds an occurrence's first byte */
};

static int word_search_cb(void *ud, const struct fscan_text *t)
{
    struct word_search *s = ud;
    const struct tokenizer *tok = s->fs->tok;
    /* decode the window, remembering where each token ends */
    buf_reset(&s->text);
    for (size_t i = 0; i < t->n; i++) {
        if (tokenizer_decode_piece(tok, i ? t->tokens[i - 1] : -1, t->tokens[i], &s->text) != 0)
            return SF_EFORMAT;
        s->ends[i] = s->text.len;
        s->on[i] = false;
    }
    /* every occurrence marks the token holding its last byte */
    const char *hay = s->text.data ? s->text.data : "";
    size_t i = 0;
    for (const char *p = hay;
         s->wlen && (p = memmem(p, s->text.len - (size_t)(p - hay), s->word, s->wlen)) != NULL;
         p++) {
        size_t at = (size_t)(p - hay), last = at + s->wlen - 1, j = i;
        while (j < t->n && s->ends[j] <= at) j++;
        if (j < t->n) s->first[t->tokens[j]]++;
        while (i < t->n && s->ends[i] <= last) i++;
        if (i < t->n) s->on[i] = true;
    }
    for (size_t r = 0; r < t->n; r++) {
        if (s->fs->special[t->tokens[r]]) continue;
        const uint32_t *ix = t->idx + r * t->max_active;
        const float *v = t->val + r * t->max_active;
        if (s->on[r])
            s->n_on++;
        else
            s->n_off++;
        for (uint32_t q = 0; q < t->cnt[r]; q++) {
            if (s->on[r]) {
                s->sum_on[ix[q]] += v[q];
                s->fire_on[ix[q]]++;
                if (v[q] > s->max_on[ix[q]]) s->max_on[ix[q]] = v[q];
            } else {
                s->sum_off[ix[q]] += v[q];
                s->fire_off[ix[q]]++;
            }
        }
    }
    s->n_tok += t->n;
    return s->max_tokens && s->n_tok >= s->max_tokens ? 1 : 0;
}

static int run_word_search(struct fscan *fs, const struct text_list *texts, const char *word,
                           struct buf *json, size_t top, size_t max_tokens, bool by_diff,
                           double min_on)
{
    const size_t n = fs->sae->n;
    struct word_search s = {.fs = fs, .word = word, .wlen = strlen(word), .max_tokens = max_tokens};
    s.sum_on = calloc(n, sizeof *s.sum_on);
    s.sum_off = calloc(n, sizeof *s.sum_off);
    s.fire_on = calloc(n, sizeof *s.fire_on);
    s.fire_off = calloc(n, sizeof *s.fire_off);
    s.max_on = calloc(n, sizeof *s.max_on);
    s.ends = calloc(fs->context, sizeof *s.ends);
    s.on = calloc(fs->context, sizeof *s.on);
    s.first = calloc(fs->vocab, sizeof *s.first);
    struct rank *r = calloc(n, sizeof *r);
    buf_init(&s.text, 1u << 24);
    int ret = 1;
    if (!s.sum_on || !s.sum_off || !s.fire_on || !s.fire_off || !s.max_on || !s.ends || !s.on ||
        !s.first || !r)
        goto out;
    int rc = fscan_run(fs, texts, word_search_cb, &s);
    if (rc < 0) goto out;
    if (!json)
        printf("word \"%s\": %llu occurrences (last token of each) among %llu tokens of %zu "
               "texts (%zu cut at %zu tokens)\n",
               word, (unsigned long long)s.n_on, (unsigned long long)(s.n_on + s.n_off), texts->n,
               fs->n_cut, fs->context);
    if (s.n_on == 0) {
        fprintf(stderr, "saeflow feature search: \"%s\" does not occur in the input\n", word);
        goto out;
    }
    size_t m = 0;
    for (size_t f = 0; f < n; f++) {
        double on = s.sum_on[f] / (double)s.n_on,
               off = s.n_off ? s.sum_off[f] / (double)s.n_off : 0;
        if ((double)s.fire_on[f] < min_on * (double)s.n_on || s.fire_on[f] == 0) continue;
        r[m++] = (struct rank){(uint32_t)f, by_diff ? on - off : on / SF_MAX(off, 1e-6)};
    }
    qsort(r, m, sizeof *r, cmp_rank_desc);
    if (json) {
        buf_printf(json, "{\"hook\":");
        buf_json_string(json, fs->hook);
        buf_printf(json, ",\"word\":");
        buf_json_string(json, word);
        buf_printf(json,
                   ",\"occurrences\":%llu,\"tokens\":%llu,\"texts\":%zu,\"texts_cut\":%zu,"
                   "\"context\":%zu,\"rank_by\":\"%s\",\"min_on\":",
                   (unsigned long long)s.n_on, (unsigned long long)(s.n_on + s.n_off), texts->n,
                   fs->n_cut, fs->context, by_diff ? "diff" : "ratio");
        buf_json_number(json, min_on);
        buf_printf(json, ",\"features\":[");
        for (size_t q = 0; q < top && q < m; q++) {
            uint32_t f = r[q].f;
            buf_printf(json, "%s{\"rank\":%zu,\"feature\":%u,\"score\":", q ? "," : "", q + 1, f);
            buf_json_number(json, r[q].score);
            buf_printf(json, ",\"mean_on\":");
            buf_json_number(json, s.sum_on[f] / (double)s.n_on);
            buf_printf(json, ",\"max_on\":");
            buf_json_number(json, s.max_on[f]);
            buf_printf(json, ",\"mean_off\":");
            buf_json_number(json, s.n_off ? s.sum_off[f] / (double)s.n_off : 0.0);
            buf_printf(json, ",\"fires_on\":");
            buf_json_number(json, (double)s.fire_on[f] / (double)s.n_on);
            buf_printf(json, ",\"fires_off\":");
            buf_json_number(json, s.n_off ? (double)s.fire_off[f] / (double)s.n_off : 0.0);
            buf_printf(json, "}");
        }
        buf_printf(json, "]}\n");
        fwrite(json->data, 1, json->len, stdout);
        ret = 0;
        goto out;
    }
    printf("features firing on >= %.0f%% of the word's tokens, ranked by mean activation there "
           "%s mean activation elsewhere:\n",
           100 * min_on, by_diff ? "minus" : "over");
    /* does the feature, added to the residual stream, promote the word? the rank of the word's
     * first token (the token most often holding an occurrence's first byte in the texts) among
     * the feature's logit effects (1 = promoted most) */
    int32_t first = -1;
    for (size_t v = 0; v < fs->vocab; v++)
        if (s.first[v] && (first < 0 || s.first[v] > s.first[first])) first = (int32_t)v;
    if (first >= 0) {
        struct buf piece;
        buf_init(&piece, 256);
        tokenizer_decode_piece(fs->tok, first, first, &piece); /* as mid-text */
        printf("logit_rank: rank of the word's first token \"%.*s\" among the feature's logit "
               "effects (of %zu; 1 = promoted most)\n",
               (int)piece.len, piece.data ? piece.data : "", fs->vocab);
        buf_fini(&piece);
    }
    printf("%4s %7s %9s %9s %9s %9s %9s %9s %10s\n", "rank", "feature", "score", "mean_on",
           "max_on", "mean_off", "fires_on", "fires_off", "logit_rank");
    for (size_t q = 0; q < top && q < m; q++) {
        uint32_t f = r[q].f;
        size_t lr = 0;
        if (first < 0 || feature_logit_rank(fs->m, fs->sae, f, first, &lr) != 0) lr = 0;
        printf("%4zu %7u %9.4g %9.4f %9.4f %9.4f %8.1f%% %8.3f%% %10zu\n", q + 1, f, r[q].score,
               s.sum_on[f] / (double)s.n_on, (double)s.max_on[f],
               s.n_off ? s.sum_off[f] / (double)s.n_off : 0.0,
               100.0 * (double)s.fire_on[f] / (double)s.n_on,
               s.n_off ? 100.0 * (double)s.fire_off[f] / (double)s.n_off : 0.0, lr);
    }
    ret = 0;
out:
    buf_fini(&s.text);
    free(s.sum_on);
    free(s.sum_off);
    free(s.fire_on);
    free(s.fire_off);
    free(s.max_on);
    free(s.ends);
    free(s.on);
    free(s.first);
    free(r);
    return ret;
}

int cmd_feature_search(int argc, char **argv)
{
    struct scan_flags f = {0};
    char *text = NULL, *input = NULL, *format = NULL, *word = NULL, *rank_by = NULL;
    double min_on = 0;
    int64_t top = 0, max_tokens = 0, max_texts = 0, summary = 0;
    bool json = false;
    struct buf jb;
    buf_init(&jb, (size_t)1 << 28);
    const struct config_opt opts[] = {
        SCAN_OPTS(f),
        {"text", CFG_STRING, &text, NULL, 0, -1, "text to analyse token by token"},
        {"input", CFG_STRING, &input, NULL, 0, -1, "with --word: texts (file, comma-separated)"},
        {"format", CFG_STRING, &format, "auto", 0, -1, "input: auto | lines | jsonl | winobias"},
        {"word", CFG_STRING, &word, NULL, 0, -1, "rank features by selectivity for this text"},
        {"top", CFG_INT, &top, "5", 1, 1e6, "features per token (--text) / rows (--word)"},
        {"summary", CFG_INT, &summary, "10", 0, 1e6, "features in the summary tables (--text)"},
        {"max-tokens", CFG_INT, &max_tokens, "200000", 0, 1e12, "--word: stop after this many"},
        {"max-texts", CFG_INT, &max_texts, "0", 0, 1e9, "--word: read at most this many texts"},
        {"rank", CFG_STRING, &rank_by, "ratio", 0, -1,
         "--word: ratio (mean on / mean elsewhere) | diff (mean on - mean elsewhere)"},
        {"min-on", CFG_DOUBLE, &min_on, "0.5", 0, 1, "--word: fire on at least this share of it"},
        {"json", CFG_BOOL, &json, "false", 0, -1, "print one JSON object instead of tables"},
    };
    struct config cfg = {
        .service = "feature search",
        .usage = "saeflow feature search --model M --sae DIR (--text \"...\" | --input FILE "
                 "--word \" dog\") [--top N]",
        .opts = opts,
        .n_opts = SF_ARRAY_LEN(opts)};
    int rc = config_load(&cfg, argc, argv);
    int ret = 2;
    struct fscan fs = {0};
    struct text_list texts = {0};
    if (rc == SF_EXIT) {
        ret = 0;
        goto done;
    }
    if (rc) goto done;
    log_set_level(cfg.log_level);
    bool by_text = *text != '\0', by_word = *word != '\0';
    if (cfg.n_positional || by_text == by_word || (by_word && !*input)) {
        fprintf(stderr, "usage: %s\n", cfg.usage);
        goto done;
    }
    ret = 1;
    if (scan_open(&fs, &f) != 0) goto done;
    if (by_text) {
        if (text_list_add(&texts, text, strlen(text)) != 0) goto done;
        const size_t n = fs.sae->n;
        struct text_search s = {.fs = &fs, .top = (size_t)top, .json = json ? &jb : NULL};
        s.color = !f.no_color && tty_use_color(f.color);
        s.max_act = calloc(n, sizeof *s.max_act);
        s.total = calloc(n, sizeof *s.total);
        s.fires = calloc(n, sizeof *s.fires);
        s.argmax = calloc(n, sizeof *s.argmax);
        if (s.max_act && s.total && s.fires && s.argmax) {
            if (json) {
                buf_printf(&jb, "{\"sae\":");
                buf_json_string(&jb, f.sae);
                buf_printf(&jb, ",\"hook\":");
                buf_json_string(&jb, fs.hook);
                buf_printf(&jb, ",\"d_in\":%zu,\"latents\":%zu,\"arch\":\"%s\",\"k\":%zu,\"text\":",
                           fs.sae->d_in, n, sae_arch_name(fs.sae->arch), fs.sae->k);
                buf_json_string(&jb, text);
            } else {
                printf("SAE %s  hook %s  d_in %zu  latents %zu  %s k=%zu\n", f.sae, fs.hook,
                       fs.sae->d_in, n, sae_arch_name(fs.sae->arch), fs.sae->k);
            }
            rc = fscan_run(&fs, &texts, text_search_cb, &s);
            if (rc >= 0 && s.n_tok) {
                print_summary(&s, false, (size_t)summary);
                print_summary(&s, true, (size_t)summary);
                if (json) {
                    buf_printf(&jb, ",\"texts_cut\":%zu,\"context\":%zu}\n", fs.n_cut, fs.context);
                    fwrite(jb.data, 1, jb.len, stdout);
                }
                ret = 0;
            } else if (rc >= 0) {
                fprintf(stderr, "saeflow feature search: the text has no tokens\n");
            }
        }
        free(s.max_act);
        free(s.total);
        free(s.fires);
        free(s.argmax);
        free(s.tokens);
    } else {
        if (text_list_read(input, format, "text", (size_t)max_texts, &texts) != 0) goto done;
        if (strcmp(rank_by, "ratio") && strcmp(rank_by, "diff")) {
            fprintf(stderr, "saeflow feature search: --rank is ratio or diff\n");
            ret = 2;
            goto done;
        }
        ret = run_word_search(&fs, &texts, word, json ? &jb : NULL, (size_t)top, (size_t)max_tokens,
                              !strcmp(rank_by, "diff"), min_on);
    }
done:
    buf_fini(&jb);
    text_list_free(&texts);
    fscan_close(&fs);
    config_free(&cfg);
    return ret;
}

/* ---- contrast ------------------------------------------------------------------------ */

struct contrast {
    const struct fscan *fs;
    bool mean; /* per-text aggregate: mean over tokens instead of max */
    size_t n_texts_total;
    size_t set;  /* 0 = pos, 1 = neg: which set the running texts belong to */
    size_t base; /* row offset of the running set in vals */
    float *vals; /* (n_texts_total, n) per-text aggregate */
};

static int contrast_cb(void *ud, const struct fscan_text *t)
{
    struct contrast *c = ud;
    const size_t n = c->fs->sae->n;
    float *row = c->vals + (c->base + t->index) * n;
    size_t counted = 0;
    for (size_t r = 0; r < t->n; r++) {
        if (c->fs->special[t->tokens[r]]) continue;
        counted++;
        const uint32_t *ix = t->idx + r * t->max_active;
        const float *v = t->val + r * t->max_active;
        for (uint32_t q = 0; q < t->cnt[r]; q++) {
            if (c->mean)
                row[ix[q]] += v[q];
            else if (v[q] > row[ix[q]])
                row[ix[q]] = v[q];
        }
    }
    if (c->mean && counted)
        for (size_t f = 0; f < n; f++) row[f] /= (float)counted;
    return 0;
}

struct lv {
    float v;
    uint8_t pos;
};

static int cmp_lv(const void *a, const void *b)
{
    float x = ((const struct lv *)a)->v, y = ((const struct lv *)b)->v;
    return (x > y) - (x < y);
}

/* AUROC of pos vs neg values with mid-ranks for ties: P(p > n) + P(p = n) / 2. */
static double auroc(struct lv *a, size_t n, size_t n_pos)
{
    qsort(a, n, sizeof *a, cmp_lv);
    double rank_sum = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && a[j].v == a[i].v) j++;
        double mid = 0.5 * (double)(i + 1 + j); /* mean of ranks i+1..j */
        for (size_t q = i; q < j; q++)
            if (a[q].pos) rank_sum += mid;
        i = j;
    }
    double n_neg = (double)(n - n_pos);
    return (rank_sum - (double)n_pos * ((double)n_pos + 1) / 2) / ((double)n_pos * n_neg);
}

/* Examples of one feature: the texts (from both sets) with the highest activation. */
#define EX_KEEP 4
struct feat_examples {
    uint32_t f;
    float act[EX_KEEP];
    size_t text[EX_KEEP]; /* index into the combined list */
    uint8_t set[EX_KEEP];
    double *tok_sum; /* (vocab) activation summed per token id */
    uint64_t *tok_cnt;
};

struct example_pass {
    const struct fscan *fs;
    struct feat_examples *fe;
    size_t n_fe;
    size_t base;
    uint8_t set;
};

static int example_cb(void *ud, const struct fscan_text *t)
{
    struct example_pass *e = ud;
    for (size_t k = 0; k < e->n_fe; k++) {
        struct feat_examples *fe = &e->fe[k];
        float best = 0;
        for (size_t r = 0; r < t->n; r++) {
            const uint32_t *ix = t->idx + r * t->max_active;
            const float *v = t->val + r * t->max_active;
            for (uint32_t q = 0; q < t->cnt[r]; q++) {
                if (ix[q] != fe->f) continue;
                fe->tok_sum[t->tokens[r]] += v[q];
                fe->tok_cnt[t->tokens[r]]++;
                if (v[q] > best) best = v[q];
            }
        }
        if (!(best > fe->act[EX_KEEP - 1])) continue;
        size_t q = EX_KEEP - 1;
        while (q > 0 && fe->act[q - 1] < best) {
            fe->act[q] = fe->act[q - 1];
            fe->text[q] = fe->text[q - 1];
            fe->set[q] = fe->set[q - 1];
            q--;
        }
        fe->act[q] = best;
        fe->text[q] = e->base + t->index;
        fe->set[q] = e->set;
    }
    return 0;
}

/* One text re-run for display: acts of feature f per token. */
struct show_one {
    uint32_t f;
    float max;
    bool color;
    const struct tokenizer *tok;
    struct buf *out;
};

static int show_one_cb(void *ud, const struct fscan_text *t)
{
    struct show_one *s = ud;
    float *acts = calloc(t->n ? t->n : 1, sizeof *acts);
    if (!acts) return SF_ENOMEM;
    for (size_t r = 0; r < t->n; r++) {
        const uint32_t *ix = t->idx + r * t->max_active;
        for (uint32_t q = 0; q < t->cnt[r]; q++)
            if (ix[q] == s->f) acts[r] = t->val[r * t->max_active + q];
    }
    size_t first = t->n && t->tokens[0] == tokenizer_bos(s->tok) ? 1 : 0;
    tty_window(s->out, s->tok, t->tokens + first, acts + first, t->n - first, s->max, s->color);
    free(acts);
    return 0;
}

static void print_contrast_feature(struct fscan *fs, const struct feat_examples *fe,
                                   const struct text_list *all, size_t n_pos, bool color,
                                   size_t top_tokens)
{
    const struct tokenizer *tok = fs->tok;
    struct buf piece, line;
    buf_init(&piece, 1 << 16);
    buf_init(&line, 1 << 20);
    /* top tokens by total activation */
    struct rank *r = malloc(fs->vocab * sizeof *r);
    size_t m = 0;
    for (size_t i = 0; r && i < fs->vocab; i++)
        if (fe->tok_cnt[i]) r[m++] = (struct rank){(uint32_t)i, fe->tok_sum[i]};
    if (r) qsort(r, m, sizeof *r, cmp_rank_desc);
    printf("    top tokens (total act, count):");
    for (size_t q = 0; q < m && q < top_tokens; q++) {
        piece_of(tok, 0, (int32_t)r[q].f, &piece);
        buf_reset(&line);
        tty_token(&line, piece.data ? piece.data : "", piece.len, 0, false);
        printf(" \"%s\" (%.1f, %llu)", line.data ? line.data : "", r[q].score,
               (unsigned long long)fe->tok_cnt[r[q].f]);
    }
    printf("\n");
    free(r);
    /* logit effects */
    int32_t top[6], bot[6];
    float tv[6], bv[6];
    if (feature_logit_effects(fs->m, fs->sae, fe->f, 6, top, tv, bot, bv) == 0) {
        printf("    promotes:");
        for (size_t q = 0; q < 6; q++) {
            piece_of(tok, 0, top[q], &piece);
            buf_reset(&line);
            tty_token(&line, piece.data ? piece.data : "", piece.len, 0, false);
            printf(" \"%s\" %+.2f", line.data ? line.data : "", (double)tv[q]);
        }
        printf("\n    suppresses:");
        for (size_t q = 0; q < 6; q++) {
            piece_of(tok, 0, bot[q], &piece);
            buf_reset(&line);
            tty_token(&line, piece.data ? piece.data : "", piece.len, 0, false);
            printf(" \"%s\" %+.2f", line.data ? line.data : "", (double)bv[q]);
        }
        printf("\n");
    }
    /* top examples, re-run one by one to get per-token activations */
    for (size_t q = 0; q < EX_KEEP && fe->act[q] > 0; q++) {
        struct text_list one = {0};
        const char *s = all->v[fe->text[q]];
        if (text_list_add(&one, s, strlen(s)) != 0) break;
        buf_reset(&line);
        struct show_one so = {
            .f = fe->f, .max = fe->act[0], .color = color, .tok = tok, .out = &line};
        fscan_run(fs, &one, show_one_cb, &so);
        printf("    %-4s %6.2f  %s\n", fe->text[q] < n_pos ? "pos" : "neg", (double)fe->act[q],
               line.data ? line.data : "");
        text_list_free(&one);
    }
    buf_fini(&piece);
    buf_fini(&line);
}

/* Shows text `i` of `texts` with feature f's activation per token. */
static void show_text(struct fscan *fs, const char *text, uint32_t f, float max, bool color,
                      struct buf *line)
{
    struct text_list one = {0};
    buf_reset(line);
    if (text_list_add(&one, text, strlen(text)) != 0) return;
    struct show_one so = {.f = f, .max = max, .color = color, .tok = fs->tok, .out = line};
    fscan_run(fs, &one, show_one_cb, &so);
    text_list_free(&one);
}

/* Paired contrast: text i of pos and text i of neg are two versions of one text (as
 * WinoBias's pro / anti lines are). Per feature, d_i = v_pos,i - v_neg,i; ranked by
 * |paired t| = |mean d| / (sd d / sqrt(n)); shown with the pairs of largest |d|. */
static int run_paired(struct fscan *fs, const struct text_list *tp, const struct text_list *tn,
                      const float *vals, size_t top, size_t n_examples, size_t min_fires,
                      bool color)
{
    const size_t n = fs->sae->n, P = tp->n;
    struct rank *rk = malloc(n * sizeof *rk);
    double *st = calloc(n * 5, sizeof *st); /* t, mean d, share >, share <, pairs differing */
    struct buf line;
    buf_init(&line, 1u << 20);
    int rc = 1;
    if (!rk || !st) goto out;
    size_t m = 0;
    for (size_t f = 0; f < n; f++) {
        double sd = 0, sq = 0;
        size_t gt = 0, lt = 0, fired = 0;
        for (size_t i = 0; i < P; i++) {
            float a = vals[i * n + f], b = vals[(P + i) * n + f];
            double d = (double)a - (double)b;
            sd += d;
            sq += d * d;
            gt += a > b;
            lt += a < b;
            fired += (a > 0) + (b > 0);
        }
        if (fired < min_fires || fired == 0) continue;
        double mean = sd / (double)P, var = sq / (double)P - mean * mean;
        double se = var > 0 ? sqrt(var * (double)P / (double)(P - 1) / (double)P) : 0;
        double t = se > 0 ? mean / se : 0;
        double *x = st + f * 5;
        x[0] = t;
        x[1] = mean;
        x[2] = (double)gt / (double)P;
        x[3] = (double)lt / (double)P;
        x[4] = (double)(gt + lt);
        rk[m++] = (struct rank){(uint32_t)f, fabs(t)};
    }
    qsort(rk, m, sizeof *rk, cmp_rank_desc);
    printf("paired contrast: %zu pairs (pos line i vs neg line i); %zu texts cut at %zu tokens\n",
           P, fs->n_cut, fs->context);
    printf("%4s %7s %8s %10s %8s %8s %8s\n", "rank", "feature", "t", "mean_diff", "pos>neg",
           "pos<neg", "differ");
    for (size_t q = 0; q < m && q < top; q++) {
        const double *x = st + (size_t)rk[q].f * 5;
        printf("%4zu %7u %+8.2f %+10.4f %7.1f%% %7.1f%% %8.0f\n", q + 1, rk[q].f, x[0], x[1],
               100 * x[2], 100 * x[3], x[4]);
    }
    for (size_t q = 0; q < m && q < SF_MIN(top, n_examples); q++) {
        uint32_t f = rk[q].f;
        const double *x = st + (size_t)f * 5;
        printf("\nfeature %u  t %+.2f  (higher in %s)\n", f, x[0], x[1] >= 0 ? "pos" : "neg");
        /* the two pairs with the largest difference in the direction of the mean */
        size_t best[2] = {SIZE_MAX, SIZE_MAX};
        double bd[2] = {0, 0};
        float mx = 0;
        for (size_t i = 0; i < P; i++) {
            float a = vals[i * n + f], b = vals[(P + i) * n + f];
            mx = SF_MAX(mx, SF_MAX(a, b));
            double d = (x[1] >= 0 ? 1 : -1) * ((double)a - (double)b);
            if (d > bd[0]) {
                best[1] = best[0];
                bd[1] = bd[0];
                best[0] = i;
                bd[0] = d;
            } else if (d > bd[1]) {
                best[1] = i;
                bd[1] = d;
            }
        }
        for (size_t k = 0; k < 2; k++) {
            if (best[k] == SIZE_MAX) continue;
            size_t i = best[k];
            show_text(fs, tp->v[i], f, mx, color, &line);
            printf("    pos %6.2f  %s\n", (double)vals[i * n + f], line.data ? line.data : "");
            show_text(fs, tn->v[i], f, mx, color, &line);
            printf("    neg %6.2f  %s\n", (double)vals[(P + i) * n + f],
                   line.data ? line.data : "");
        }
    }
    rc = 0;
out:
    buf_fini(&line);
    free(rk);
    free(st);
    return rc;
}

int cmd_feature_contrast(int argc, char **argv)
{
    struct scan_flags f = {0};
    char *pos = NULL, *neg = NULL, *format = NULL, *agg = NULL, *rank_by = NULL, *dump = NULL;
    int64_t top = 0, examples_for = 0, max_texts = 0, min_fires = 0;
    bool paired = false, json = false;
    struct buf jb;
    buf_init(&jb, (size_t)1 << 28);
    const struct config_opt opts[] = {
        SCAN_OPTS(f),
        {"pos", CFG_STRING, &pos, NULL, 0, -1, "texts of the first set (files, comma-separated)"},
        {"neg", CFG_STRING, &neg, NULL, 0, -1, "texts of the second set"},
        {"format", CFG_STRING, &format, "auto", 0, -1, "auto | lines | jsonl | winobias"},
        {"agg", CFG_STRING, &agg, "max", 0, -1, "per-text value of a feature: max | mean"},
        {"rank", CFG_STRING, &rank_by, "auroc", 0, -1,
         "auroc (|AUROC - 0.5|) | smd (|standardized mean difference|)"},
        {"top", CFG_INT, &top, "10", 1, 1e6, "features to list"},
        {"examples", CFG_INT, &examples_for, "5", 0, 1e4, "features shown with examples"},
        {"min-fires", CFG_INT, &min_fires, "3", 0, 1e9, "ignore features firing on fewer texts"},
        {"paired", CFG_BOOL, &paired, "false", 0, -1,
         "line i of --pos and of --neg are two versions of one text: rank by paired t"},
        {"dump", CFG_STRING, &dump, NULL, 0, -1,
         "write the listed features' per-text values here (TSV: feature, set, value)"},
        {"max-texts", CFG_INT, &max_texts, "0", 0, 1e9, "read at most this many texts per set"},
        {"json", CFG_BOOL, &json, "false", 0, -1,
         "print one JSON object (the ranked features) instead of tables"},
    };
    struct config cfg = {
        .service = "feature contrast",
        .usage = "saeflow feature contrast --model M --sae DIR --pos FILE --neg FILE [--top N] "
                 "[--agg max|mean] [--rank auroc|smd] [--paired] [--format winobias]",
        .opts = opts,
        .n_opts = SF_ARRAY_LEN(opts)};
    int rc = config_load(&cfg, argc, argv);
    int ret = 2;
    struct fscan fs = {0};
    struct text_list tp = {0}, tn = {0}, all = {0};
    struct contrast c = {0};
    struct feat_examples *fe = NULL;
    size_t n_fe = 0;
    struct lv *lv = NULL;
    struct rank *rk = NULL;
    double *stat = NULL;
    if (rc == SF_EXIT) {
        ret = 0;
        goto done;
    }
    if (rc) goto done;
    log_set_level(cfg.log_level);
    bool use_mean = !strcmp(agg, "mean"), by_smd = !strcmp(rank_by, "smd");
    if (cfg.n_positional || !*pos || !*neg || (!use_mean && strcmp(agg, "max")) ||
        (!by_smd && strcmp(rank_by, "auroc"))) {
        fprintf(stderr, "usage: %s\n", cfg.usage);
        goto done;
    }
    if (json && paired) {
        fprintf(stderr, "saeflow feature contrast: --json is not available with --paired yet\n");
        goto done;
    }
    ret = 1;
    if (text_list_read(pos, format, "text", (size_t)max_texts, &tp) != 0 ||
        text_list_read(neg, format, "text", (size_t)max_texts, &tn) != 0)
        goto done;
    if (tp.n < 2 || tn.n < 2) {
        fprintf(stderr, "saeflow feature contrast: need at least 2 texts per set (got %zu, %zu)\n",
                tp.n, tn.n);
        goto done;
    }
    if (paired && tp.n != tn.n) {
        fprintf(stderr,
                "saeflow feature contrast: --paired needs as many pos as neg texts (%zu, "
                "%zu)\n",
                tp.n, tn.n);
        goto done;
    }
    if (scan_open(&fs, &f) != 0) goto done;
    const size_t n = fs.sae->n, N = tp.n + tn.n;
    size_t cells;
    if (!size_mul_ok(N, n, &cells) || cells > (1ull << 30)) {
        fprintf(stderr, "saeflow feature contrast: %zu texts x %zu latents is too many\n", N, n);
        goto done;
    }
    c = (struct contrast){.fs = &fs, .mean = use_mean, .n_texts_total = N};
    c.vals = calloc(cells, sizeof *c.vals);
    lv = malloc(N * sizeof *lv);
    rk = malloc(n * sizeof *rk);
    stat = calloc(n * 6, sizeof *stat); /* auroc, smd, mean_p, mean_n, fire_p, fire_n */
    if (!c.vals || !lv || !rk || !stat) goto done;
    c.base = 0;
    if (fscan_run(&fs, &tp, contrast_cb, &c) < 0) goto done;
    c.base = tp.n;
    if (fscan_run(&fs, &tn, contrast_cb, &c) < 0) goto done;
    if (paired) {
        ret = run_paired(&fs, &tp, &tn, c.vals, (size_t)top, (size_t)examples_for,
                         (size_t)min_fires, !f.no_color && tty_use_color(f.color));
        goto done;
    }

    size_t m = 0;
    for (size_t ff = 0; ff < n; ff++) {
        double sp = 0, sn = 0, qp = 0, qn = 0;
        size_t fp = 0, fn = 0;
        for (size_t t = 0; t < N; t++) {
            float v = c.vals[t * n + ff];
            lv[t] = (struct lv){v, (uint8_t)(t < tp.n)};
            if (t < tp.n) {
                sp += v;
                qp += (double)v * v;
                fp += v > 0;
            } else {
                sn += v;
                qn += (double)v * v;
                fn += v > 0;
            }
        }
        if (fp + fn < (size_t)min_fires || fp + fn == 0) continue;
        double mp = sp / (double)tp.n, mn = sn / (double)tn.n;
        double vp = qp / (double)tp.n - mp * mp, vn = qn / (double)tn.n - mn * mn;
        double pooled = sqrt(0.5 * (SF_MAX(vp, 0.0) + SF_MAX(vn, 0.0)));
        double *st = stat + ff * 6;
        st[0] = auroc(lv, N, tp.n);
        st[1] = pooled > 0 ? (mp - mn) / pooled : 0;
        st[2] = mp;
        st[3] = mn;
        st[4] = (double)fp / (double)tp.n;
        st[5] = (double)fn / (double)tn.n;
        rk[m++] = (struct rank){(uint32_t)ff, by_smd ? fabs(st[1]) : fabs(st[0] - 0.5)};
    }
    qsort(rk, m, sizeof *rk, cmp_rank_desc);
    if (json) {
        buf_printf(&jb, "{\"pos\":");
        buf_json_string(&jb, pos);
        buf_printf(&jb, ",\"neg\":");
        buf_json_string(&jb, neg);
        buf_printf(&jb,
                   ",\"n_pos\":%zu,\"n_neg\":%zu,\"texts_cut\":%zu,\"context\":%zu,\"sae\":", tp.n,
                   tn.n, fs.n_cut, fs.context);
        buf_json_string(&jb, f.sae);
        buf_printf(&jb, ",\"hook\":");
        buf_json_string(&jb, fs.hook);
        buf_printf(&jb, ",\"latents\":%zu,\"agg\":\"%s\",\"rank_by\":\"%s\",\"features\":[", n,
                   use_mean ? "mean" : "max", by_smd ? "smd" : "auroc");
        static const char *const keys[] = {"auroc",    "smd",      "mean_pos",
                                           "mean_neg", "fire_pos", "fire_neg"};
        for (size_t q = 0; q < m && q < (size_t)top; q++) {
            const double *st = stat + (size_t)rk[q].f * 6;
            buf_printf(&jb, "%s{\"rank\":%zu,\"feature\":%u", q ? "," : "", q + 1, rk[q].f);
            for (size_t k = 0; k < 6; k++) {
                buf_printf(&jb, ",\"%s\":", keys[k]);
                buf_json_number(&jb, st[k]);
            }
            buf_printf(&jb, ",\"higher_in\":\"%s\"}", st[2] >= st[3] ? "pos" : "neg");
        }
        if (buf_printf(&jb, "]}\n") < 0) {
            fprintf(stderr, "saeflow feature contrast: the JSON is too large\n");
            goto done;
        }
        fwrite(jb.data, 1, jb.len, stdout);
        examples_for = 0; /* the examples are for reading; --dump has the values */
    } else {
        printf("contrast: %zu pos texts (%s) vs %zu neg texts (%s); %zu cut at %zu tokens\n", tp.n,
               pos, tn.n, neg, fs.n_cut, fs.context);
        printf("SAE %s  hook %s  latents %zu; per-text value = %s activation; ranked by %s\n",
               f.sae, fs.hook, n, use_mean ? "mean" : "max", by_smd ? "|SMD|" : "|AUROC - 0.5|");
        printf("%4s %7s %7s %7s %9s %9s %7s %7s  %s\n", "rank", "feature", "AUROC", "SMD",
               "mean_pos", "mean_neg", "fire_p", "fire_n", "higher in");
        for (size_t q = 0; q < m && q < (size_t)top; q++) {
            const double *st = stat + (size_t)rk[q].f * 6;
            printf("%4zu %7u %7.3f %+7.3f %9.4f %9.4f %6.1f%% %6.1f%%  %s\n", q + 1, rk[q].f, st[0],
                   st[1], st[2], st[3], 100 * st[4], 100 * st[5], st[2] >= st[3] ? "pos" : "neg");
        }
    }

    if (*dump) {
        FILE *df = fopen(dump, "w");
        if (!df) {
            fprintf(stderr, "saeflow feature contrast: cannot write %s\n", dump);
            goto done;
        }
        fprintf(df, "feature\tset\tvalue\n");
        for (size_t q = 0; q < m && q < (size_t)top; q++)
            for (size_t t = 0; t < N; t++)
                fprintf(df, "%u\t%s\t%.9g\n", rk[q].f, t < tp.n ? "pos" : "neg",
                        (double)c.vals[t * n + rk[q].f]);
        if (fclose(df) != 0) {
            fprintf(stderr, "saeflow feature contrast: cannot write %s\n", dump);
            goto done;
        }
    }

    /* examples of the leading features: one more pass over both sets */
    n_fe = SF_MIN((size_t)examples_for, SF_MIN(m, (size_t)top));
    if (n_fe) {
        fe = calloc(n_fe, sizeof *fe);
        if (!fe) goto done;
        for (size_t q = 0; q < n_fe; q++) {
            fe[q].f = rk[q].f;
            fe[q].tok_sum = calloc(fs.vocab, sizeof *fe[q].tok_sum);
            fe[q].tok_cnt = calloc(fs.vocab, sizeof *fe[q].tok_cnt);
            if (!fe[q].tok_sum || !fe[q].tok_cnt) goto done;
        }
        struct example_pass ep = {.fs = &fs, .fe = fe, .n_fe = n_fe, .base = 0, .set = 0};
        if (fscan_run(&fs, &tp, example_cb, &ep) < 0) goto done;
        ep.base = tp.n;
        ep.set = 1;
        if (fscan_run(&fs, &tn, example_cb, &ep) < 0) goto done;
        for (size_t i = 0; i < tp.n; i++)
            if (text_list_add(&all, tp.v[i], strlen(tp.v[i])) != 0) goto done;
        for (size_t i = 0; i < tn.n; i++)
            if (text_list_add(&all, tn.v[i], strlen(tn.v[i])) != 0) goto done;
        bool color = !f.no_color && tty_use_color(f.color);
        for (size_t q = 0; q < n_fe; q++) {
            const double *st = stat + (size_t)fe[q].f * 6;
            printf("\nfeature %u  AUROC %.3f  SMD %+.3f  (higher in %s)\n", fe[q].f, st[0], st[1],
                   st[2] >= st[3] ? "pos" : "neg");
            print_contrast_feature(&fs, &fe[q], &all, tp.n, color, 8);
        }
    }
    ret = 0;
done:
    if (fe)
        for (size_t q = 0; q < n_fe; q++) {
            free(fe[q].tok_sum);
            free(fe[q].tok_cnt);
        }
    free(fe);
    buf_fini(&jb);
    free(c.vals);
    free(lv);
    free(rk);
    free(stat);
    text_list_free(&tp);
    text_list_free(&tn);
    text_list_free(&all);
    fscan_close(&fs);
    config_free(&cfg);
    return ret;
}

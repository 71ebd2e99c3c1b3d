/* Helpers for the feature commands (see cmd_feature.h): text lists, the model + SAE
 * scanner, ANSI heat rendering and logit effects. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmd_feature.h"
#include "sae/sae_io.h"
#include "tensor/tensor.h"

#define TEXT_FILE_MAX  (1u << 30)
#define TEXT_MAX_TEXTS (1u << 24)

/* ---- texts ------------------------------------------------------------------------- */

int text_list_add(struct text_list *l, const char *text, size_t len)
{
    if (l->n >= TEXT_MAX_TEXTS) return SF_ENOMEM;
    if ((l->n & (l->n - 1)) == 0) { /* grow at powers of two */
        size_t cap = l->n ? l->n * 2 : 16;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) return SF_ENOMEM;
        l->v = v;
    }
    char *s = malloc(len + 1);
    if (!s) return SF_ENOMEM;
    memcpy(s, text, len);
    s[len] = '\0';
    l->v[l->n++] = s;
    return 0;
}

void text_list_free(struct text_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
    l->v = NULL;
    l->n = 0;
}

/* "12 [The developer] argued with ..." -> "The developer argued with ..." */
static int add_winobias(struct text_list *l, const char *line, size_t len)
{
    size_t i = 0;
    while (i < len && line[i] >= '0' && line[i] <= '9') i++;
    if (i == 0 || i >= len || line[i] != ' ') return SF_EFORMAT;
    i++;
    char *tmp = malloc(len + 1);
    if (!tmp) return SF_ENOMEM;
    size_t w = 0;
    for (; i < len; i++)
        if (line[i] != '[' && line[i] != ']') tmp[w++] = line[i];
    int rc = text_list_add(l, tmp, w);
    free(tmp);
    return rc;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int read_one(const char *path, const char *format, const char *field, size_t max_texts,
                    struct text_list *out)
{
    char *data = NULL;
    size_t len = 0;
    int rc = file_read_all(path, TEXT_FILE_MAX, &data, &len);
    if (rc) {
        fprintf(stderr, "saeflow: cannot read %s (%s)\n", path, sf_strerror(rc));
        return rc;
    }
    bool jsonl = !strcmp(format, "jsonl") || (!strcmp(format, "auto") && ends_with(path, ".jsonl"));
    bool wino = !strcmp(format, "winobias");
    size_t lineno = 0;
    for (size_t p = 0; p < len && (max_texts == 0 || out->n < max_texts);) {
        const char *nl = memchr(data + p, '\n', len - p);
        size_t e = nl ? (size_t)(nl - data) : len;
        const char *line = data + p;
        size_t ll = e - p;
        p = e + 1;
        lineno++;
        if (ll && line[ll - 1] == '\r') ll--;
        if (ll == 0) continue;
        if (jsonl) {
            cJSON *j = cJSON_ParseWithLength(line, ll);
            const cJSON *t = j ? cJSON_GetObjectItemCaseSensitive(j, field) : NULL;
            if (cJSON_IsString(t) && t->valuestring[0])
                rc = text_list_add(out, t->valuestring, strlen(t->valuestring));
            cJSON_Delete(j);
        } else if (wino) {
            rc = add_winobias(out, line, ll);
            if (rc == SF_EFORMAT)
                fprintf(stderr, "saeflow: %s:%zu is not a WinoBias line (\"N sentence\")\n", path,
                        lineno);
        } else {
            rc = text_list_add(out, line, ll);
        }
        if (rc) break;
    }
    free(data);
    return rc;
}

int text_list_read(const char *path, const char *format, const char *field, size_t max_texts,
                   struct text_list *out)
{
    if (!format || !*format) format = "auto";
    if (!field || !*field) field = "text";
    if (strcmp(format, "auto") && strcmp(format, "lines") && strcmp(format, "jsonl") &&
        strcmp(format, "winobias")) {
        fprintf(stderr, "saeflow: unknown text format '%s' (auto | lines | jsonl | winobias)\n",
                format);
        return SF_EINVAL;
    }
    char *copy = strdup(path);
    if (!copy) return SF_ENOMEM;
    int rc = 0;
    char *save = NULL;
    for (char *p = strtok_r(copy, ",", &save); p && !rc; p = strtok_r(NULL, ",", &save))
        rc = read_one(p, format, field, max_texts, out);
    free(copy);
    return rc;
}

/* ---- the scanner --------------------------------------------------------------------- */

static int capture_hook(void *user, const struct model_act *act)
{
    struct fscan *fs = user;
    if (act->d != fs->sae->d_in || fs->x_rows + act->n_tokens > fs->batch * fs->context)
        return SF_ERANGE;
    memcpy(fs->x + fs->x_rows * act->d, act->x, act->n_tokens * act->d * sizeof *act->x);
    fs->x_rows += act->n_tokens;
    return 0;
}

int fscan_open(struct fscan *fs, const struct fscan_opts *o)
{
    memset(fs, 0, sizeof *fs);
    if (!o->model || !*o->model || !o->sae || !*o->sae) {
        fprintf(stderr, "saeflow: --model and --sae are required\n");
        return SF_EINVAL;
    }
    struct model_load_opts lo = {.tokenizer_path =
                                     o->tokenizer && *o->tokenizer ? o->tokenizer : NULL};
    int rc = model_load(o->model, &lo, &fs->m);
    if (rc) {
        fprintf(stderr, "saeflow: cannot load model %s (%s)\n", o->model, sf_strerror(rc));
        return rc;
    }
    fs->tok = model_tokenizer(fs->m);
    if (!fs->tok) {
        fprintf(stderr, "saeflow: %s has no tokenizer; pass --tokenizer\n", o->model);
        return SF_EINVAL;
    }
    rc = sae_io_load(o->sae, &fs->sae);
    if (rc) {
        fprintf(stderr, "saeflow: cannot load SAE %s (%s)\n", o->sae, sf_strerror(rc));
        return rc;
    }
    const struct model_config *mc = model_config(fs->m);
    const char *hook = o->hook && *o->hook ? o->hook : fs->sae->meta.hook_name;
    size_t layer;
    enum model_hook_point point;
    if (!*hook || model_hook_parse(hook, mc->n_layers, &layer, &point) != 0) {
        fprintf(stderr, "saeflow: hook '%s' is not a hook point of this model (pass --hook)\n",
                hook);
        return SF_EINVAL;
    }
    if (fs->sae->d_in != mc->dim) {
        fprintf(stderr, "saeflow: SAE d_in %zu != model width %zu\n", fs->sae->d_in, mc->dim);
        return SF_EINVAL;
    }
    snprintf(fs->hook, sizeof fs->hook, "%s", hook);
    fs->batch = o->batch ? o->batch : 16;
    fs->context = SF_MIN(o->context ? o->context : 256, mc->max_seq_len);
    fs->model_ctx = mc->max_seq_len;
    if (o->context > mc->max_seq_len)
        fprintf(stderr,
                "saeflow: warning: --context %zu is beyond the model's context of %zu tokens: "
                "texts are cut at %zu\n",
                o->context, mc->max_seq_len, fs->context);
    fs->max_active = fs->sae->arch == SAE_TOPK ? SF_MIN(fs->sae->k, fs->sae->n)
                                               : SF_MIN(fs->sae->n, (size_t)256);
    fs->add_bos = !o->no_bos && tokenizer_add_bos_default(fs->tok); /* as eval harvests */
    fs->vocab = tokenizer_vocab_size(fs->tok);
    fs->special = calloc(fs->vocab, sizeof *fs->special);
    size_t rows = fs->batch * fs->context;
    fs->x = malloc(rows * mc->dim * sizeof *fs->x);
    fs->idx = malloc(rows * fs->max_active * sizeof *fs->idx);
    fs->val = malloc(rows * fs->max_active * sizeof *fs->val);
    fs->cnt = malloc(rows * sizeof *fs->cnt);
    fs->c = model_ctx_new(fs->m, fs->batch, fs->context);
    if (!fs->special || !fs->x || !fs->idx || !fs->val || !fs->cnt || !fs->c) {
        fprintf(stderr, "saeflow: out of memory\n");
        return SF_ENOMEM;
    }
    for (size_t i = 0; i < fs->vocab; i++)
        fs->special[i] = tokenizer_token_type(fs->tok, (int32_t)i) == TOKEN_CONTROL;
    if (tokenizer_bos(fs->tok) >= 0) fs->special[tokenizer_bos(fs->tok)] = true;
    if (tokenizer_eos(fs->tok) >= 0) fs->special[tokenizer_eos(fs->tok)] = true;
    rc = model_ctx_add_hook_at(fs->c, layer, point, capture_hook, fs);
    if (rc) fprintf(stderr, "saeflow: cannot hook %s\n", hook);
    return rc;
}

void fscan_close(struct fscan *fs)
{
    if (!fs) return;
    model_ctx_destroy(&fs->c);
    sae_destroy(&fs->sae);
    model_destroy(&fs->m);
    free(fs->special);
    free(fs->x);
    free(fs->idx);
    free(fs->val);
    free(fs->cnt);
    memset(fs, 0, sizeof *fs);
}

int fscan_run(struct fscan *fs, const struct text_list *texts, fscan_fn fn, void *ud)
{
    const size_t d = fs->sae->d_in, ctx = fs->context;
    int32_t **ids = calloc(fs->batch, sizeof *ids);
    size_t *lens = calloc(fs->batch, sizeof *lens), *which = calloc(fs->batch, sizeof *which);
    struct model_seq *seqs = calloc(fs->batch, sizeof *seqs);
    int rc = 0;
    if (!ids || !lens || !which || !seqs) {
        rc = SF_ENOMEM;
        goto out;
    }
    for (size_t t0 = 0; t0 < texts->n && !rc;) {
        size_t nb = 0;
        for (; t0 < texts->n && nb < fs->batch; t0++) {
            size_t n = 0;
            free(ids[nb]);
            ids[nb] = NULL;
            const char *s = texts->v[t0];
            rc = tokenizer_encode_alloc(fs->tok, s, strlen(s), fs->add_bos, &ids[nb], &n);
            if (rc) goto out;
            if (n == 0) continue;
            lens[nb] = SF_MIN(n, ctx);
            fs->n_seen++;
            fs->longest = SF_MAX(fs->longest, n);
            if (n > ctx) {
                fs->n_cut++;
                fs->cut_tokens += n - ctx;
            }
            which[nb] = t0;
            seqs[nb] = (struct model_seq){.slot = nb, .tokens = ids[nb], .n = lens[nb]};
            nb++;
        }
        if (nb == 0) break;
        model_ctx_reset_all(fs->c);
        fs->x_rows = 0;
        rc = model_forward(fs->c, seqs, nb, MODEL_LOGITS_NONE, NULL);
        if (rc) {
            fprintf(stderr, "saeflow: forward pass failed (%s)\n", sf_strerror(rc));
            goto out;
        }
        rc = sae_encode(fs->sae, fs->x, fs->x_rows, fs->max_active, fs->idx, fs->val, fs->cnt);
        if (rc) goto out;
        size_t row = 0;
        for (size_t b = 0; b < nb && !rc; b++) {
            for (size_t i = 0; i < lens[b]; i++)
                if (fs->special[ids[b][i]]) fs->cnt[row + i] = 0;
            struct fscan_text t = {.index = which[b],
                                   .text = texts->v[which[b]],
                                   .tokens = ids[b],
                                   .n = lens[b],
                                   .idx = fs->idx + row * fs->max_active,
                                   .val = fs->val + row * fs->max_active,
                                   .cnt = fs->cnt + row,
                                   .max_active = fs->max_active,
                                   .x = fs->x + row * d};
            rc = fn(ud, &t);
            row += lens[b];
        }
    }
    if (rc >= 0 && fs->n_cut && !fs->cut_warned) {
        /* cutting is how a fixed context works, but never silently */
        fs->cut_warned = true;
        fprintf(stderr,
                "saeflow: warning: %zu of %zu texts are longer than the context of %zu tokens "
                "and were cut there: %llu tokens not seen (the longest text has %zu tokens)%s\n",
                fs->n_cut, fs->n_seen, ctx, (unsigned long long)fs->cut_tokens, fs->longest,
                ctx < fs->model_ctx ? "; raise --context" : "; that is the model's limit");
    }
out:
    if (ids)
        for (size_t b = 0; b < fs->batch; b++) free(ids[b]);
    free(ids);
    free(lens);
    free(which);
    free(seqs);
    return rc;
}

/* ---- drawing ------------------------------------------------------------------------- */

bool tty_use_color(const char *mode)
{
    if (mode && !strcmp(mode, "always")) return true;
    if (mode && !strcmp(mode, "never")) return false;
    const char *nc = getenv("NO_COLOR");
    if (nc && *nc) return false;
    return isatty(STDOUT_FILENO) == 1;
}

/* light yellow -> orange -> red backgrounds (xterm 256-colour indices) */
static const int heat_bg[] = {230, 229, 222, 221, 214, 208, 202, 196};

void tty_token(struct buf *out, const char *piece, size_t len, float frac, bool color)
{
    bool on = frac > 0.0f;
    if (on && color) {
        float f = frac > 1.0f ? 1.0f : frac;
        size_t lvl = (size_t)(f * (float)(SF_ARRAY_LEN(heat_bg) - 1) + 0.5f);
        buf_printf(out, "\x1b[38;5;16;48;5;%dm", heat_bg[lvl]);
    } else if (on) {
        buf_append(out, "\xc2\xab", 2); /* « */
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)piece[i];
        if (ch == '\n')
            buf_append(out, "\xe2\x8f\x8e", 3); /* ⏎ */
        else if (ch == '\t' || ch == '\r')
            buf_putc(out, ' ');
        else if (ch < 0x20 || ch == 0x7f)
            continue;
        else
            buf_putc(out, (char)ch);
    }
    if (on && color)
        buf_append(out, "\x1b[0m", 4);
    else if (on)
        buf_append(out, "\xc2\xbb", 2); /* » */
}

void piece_of(const struct tokenizer *tok, int32_t prev, int32_t id, struct buf *out)
{
    buf_reset(out);
    if (tokenizer_decode_piece(tok, prev, id, out) != 0) buf_printf(out, "<%d>", (int)id);
}

void tty_window(struct buf *out, const struct tokenizer *tok, const int32_t *tokens,
                const float *acts, size_t n, float max, bool color)
{
    struct buf piece;
    buf_init(&piece, 1 << 16);
    for (size_t i = 0; i < n; i++) {
        piece_of(tok, i ? tokens[i - 1] : -1, tokens[i], &piece);
        float frac = max > 0 && acts ? acts[i] / max : 0.0f;
        tty_token(out, piece.data ? piece.data : "", piece.len, frac > 0 ? SF_MAX(frac, 0.01f) : 0,
                  color);
    }
    buf_fini(&piece);
}

void tty_sparkline(struct buf *out, const uint64_t *counts, size_t n)
{
    static const char *blocks[] = {" ",
                                   "\xe2\x96\x81",
                                   "\xe2\x96\x82",
                                   "\xe2\x96\x83",
                                   "\xe2\x96\x84",
                                   "\xe2\x96\x85",
                                   "\xe2\x96\x86",
                                   "\xe2\x96\x87",
                                   "\xe2\x96\x88"};
    uint64_t mx = 0;
    for (size_t i = 0; i < n; i++) mx = SF_MAX(mx, counts[i]);
    for (size_t i = 0; i < n; i++) {
        size_t lvl = 0;
        if (mx && counts[i]) lvl = 1 + (size_t)((double)counts[i] / (double)mx * 7.0 + 0.5);
        if (lvl > 8) lvl = 8;
        buf_printf(out, "%s", blocks[lvl]);
    }
}

/* ---- logit effects ------------------------------------------------------------------- */

/* lg (V) = W_U (g ⊙ (W_dec[f] - mean)), the mean taken only before a LayerNorm. */
static int logit_row(const struct model *m, const struct sae *sae, uint32_t f, float **out)
{
    const struct model_config *mc = model_config(m);
    const size_t d = mc->dim, V = mc->vocab_size;
    const float *WU = model_unembed(m), *g = model_final_norm_weight(m);
    *out = NULL;
    if (f >= sae->n || d != sae->d_in || !WU) return SF_EINVAL;
    float *v = malloc(d * sizeof *v), *lg = malloc(V * sizeof *lg);
    if (!v || !lg) {
        free(v);
        free(lg);
        return SF_ENOMEM;
    }
    const float *u = sae->W_dec + (size_t)f * d;
    double mean = 0;
    if (model_final_norm_bias(m)) { /* LayerNorm centres its input */
        for (size_t j = 0; j < d; j++) mean += u[j];
        mean /= (double)d;
    }
    for (size_t j = 0; j < d; j++) v[j] = (float)(u[j] - mean) * (g ? g[j] : 1.0f);
    for (size_t t = 0; t < V; t++) {
        double acc = 0;
        for (size_t j = 0; j < d; j++) acc += (double)WU[t * d + j] * v[j];
        lg[t] = (float)acc;
    }
    free(v);
    *out = lg;
    return 0;
}

int feature_logit_rank(const struct model *m, const struct sae *sae, uint32_t f, int32_t token,
                       size_t *rank)
{
    const size_t V = model_config(m)->vocab_size;
    if (token < 0 || (size_t)token >= V) return SF_EINVAL;
    float *lg = NULL;
    int rc = logit_row(m, sae, f, &lg);
    if (rc) return rc;
    size_t above = 0;
    for (size_t t = 0; t < V; t++) above += lg[t] > lg[token];
    *rank = above + 1;
    free(lg);
    return 0;
}

int feature_logit_effects(const struct model *m, const struct sae *sae, uint32_t f, size_t n,
                          int32_t *top, float *top_v, int32_t *bot, float *bot_v)
{
    const size_t V = model_config(m)->vocab_size;
    float *lg = NULL;
    int rc = logit_row(m, sae, f, &lg);
    if (rc) return rc;
    for (size_t q = 0; q < n; q++) {
        top[q] = bot[q] = -1;
        top_v[q] = -INFINITY;
        bot_v[q] = INFINITY;
    }
    /* insertion into two small sorted lists */
    for (size_t t = 0; t < V; t++) {
        float x = lg[t];
        if (n && x > top_v[n - 1]) {
            size_t q = n - 1;
            while (q > 0 && top_v[q - 1] < x) {
                top_v[q] = top_v[q - 1];
                top[q] = top[q - 1];
                q--;
            }
            top_v[q] = x;
            top[q] = (int32_t)t;
        }
        if (n && x < bot_v[n - 1]) {
            size_t q = n - 1;
            while (q > 0 && bot_v[q - 1] > x) {
                bot_v[q] = bot_v[q - 1];
                bot[q] = bot[q - 1];
                q--;
            }
            bot_v[q] = x;
            bot[q] = (int32_t)t;
        }
    }
    free(lg);
    return 0;
}

/* eval_data: held-out text as packed windows of token ids (see eval.h). */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "eval.h"
#include "model/tokenizer.h"

#define EVAL_MAX_JSONL (1ull << 31)

void eval_data_opts_default(struct eval_data_opts *o)
{
    memset(o, 0, sizeof *o);
    o->context = 128;
    o->field = "text";
    o->prepend_bos = -1;
}

void eval_data_destroy(struct eval_data **d)
{
    if (!d || !*d) return;
    free((*d)->tokens);
    free((*d)->len);
    free((*d)->special);
    free(*d);
    *d = NULL;
}

/* A packer: appends document tokens, cutting windows. */
struct packer {
    struct eval_data *d;
    size_t cap_windows;
    size_t max_tokens;
    int32_t bos;
    bool full;
};

static int packer_new_window(struct packer *p)
{
    struct eval_data *d = p->d;
    if (d->n_windows == p->cap_windows) {
        size_t nc = p->cap_windows ? 2 * p->cap_windows : 64;
        size_t bytes;
        if (!size_mul_ok(nc, d->context * sizeof(int32_t), &bytes)) return SF_ENOMEM;
        int32_t *t = realloc(d->tokens, bytes);
        if (!t) return SF_ENOMEM;
        d->tokens = t;
        size_t *l = realloc(d->len, nc * sizeof *l);
        if (!l) return SF_ENOMEM;
        d->len = l;
        p->cap_windows = nc;
    }
    d->len[d->n_windows++] = 0;
    return 0;
}

/* Appends one token to the current window, opening a new one when it is full. */
static int packer_put(struct packer *p, int32_t t, bool doc_start)
{
    struct eval_data *d = p->d;
    if (p->full) return 0;
    if (d->n_windows == 0 || d->len[d->n_windows - 1] == d->context) {
        if (p->max_tokens && d->n_tokens >= p->max_tokens) {
            p->full = true;
            return 0;
        }
        int rc = packer_new_window(p);
        if (rc < 0) return rc;
        size_t w = d->n_windows - 1;
        if (!doc_start && p->bos >= 0 && t != p->bos) {
            d->tokens[w * d->context] = p->bos;
            d->len[w] = 1;
            d->n_tokens++;
        }
    }
    size_t w = d->n_windows - 1;
    d->tokens[w * d->context + d->len[w]++] = t;
    d->n_tokens++;
    return 0;
}

static int packer_finish(struct packer *p)
{
    struct eval_data *d = p->d;
    /* A last window of one token predicts nothing: drop it. */
    if (d->n_windows && d->len[d->n_windows - 1] < 2) {
        d->n_tokens -= d->len[d->n_windows - 1];
        d->n_windows--;
    }
    if (d->n_windows == 0) {
        log_error("eval_data", "reason=no_windows");
        return SF_EFORMAT;
    }
    return 0;
}

static struct eval_data *data_new(size_t context, size_t vocab)
{
    struct eval_data *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->context = context;
    d->vocab = vocab;
    d->special = calloc(vocab ? vocab : 1, sizeof *d->special);
    if (!d->special) {
        free(d);
        return NULL;
    }
    return d;
}

int eval_data_from_docs(const int32_t *const *docs, const size_t *doc_lens, size_t n_docs,
                        size_t context, size_t max_tokens, int32_t bos, const bool *special,
                        size_t vocab, struct eval_data **out)
{
    *out = NULL;
    if (context < 2 || vocab == 0) return SF_EINVAL;
    struct eval_data *d = data_new(context, vocab);
    if (!d) return SF_ENOMEM;
    if (special) memcpy(d->special, special, vocab * sizeof *special);
    if (bos >= 0 && (size_t)bos < vocab) d->special[bos] = true;
    struct packer p = {.d = d, .max_tokens = max_tokens, .bos = bos};
    int rc = 0;
    for (size_t i = 0; i < n_docs && rc == 0 && !p.full; i++)
        for (size_t j = 0; j < doc_lens[i] && rc == 0; j++) {
            if (docs[i][j] < 0 || (size_t)docs[i][j] >= vocab) {
                log_error("eval_data", "reason=token_out_of_range doc=%zu id=%d", i,
                          (int)docs[i][j]);
                rc = SF_EINVAL;
                break;
            }
            rc = packer_put(&p, docs[i][j], j == 0);
        }
    if (rc == 0) rc = packer_finish(&p);
    if (rc < 0) {
        eval_data_destroy(&d);
        return rc;
    }
    *out = d;
    return 0;
}

int eval_data_from_jsonl(const struct tokenizer *tok, const char *path,
                         const struct eval_data_opts *o, struct eval_data **out)
{
    *out = NULL;
    struct eval_data_opts def;
    if (!o) {
        eval_data_opts_default(&def);
        o = &def;
    }
    if (!tok || o->context < 2) return SF_EINVAL;
    char *text = NULL;
    size_t len = 0;
    int rc = file_read_all(path, (size_t)EVAL_MAX_JSONL, &text, &len);
    if (rc < 0) {
        log_error("eval_data", "reason=read_failed path=%s err=%s", path, sf_strerror(rc));
        return rc;
    }
    size_t vocab = tokenizer_vocab_size(tok);
    struct eval_data *d = data_new(o->context, vocab);
    if (!d) {
        free(text);
        return SF_ENOMEM;
    }
    for (size_t i = 0; i < vocab; i++)
        d->special[i] = tokenizer_token_type(tok, (int32_t)i) == TOKEN_CONTROL;
    int32_t bos = tokenizer_bos(tok), eos = tokenizer_eos(tok);
    if (bos >= 0) d->special[bos] = true;
    if (eos >= 0) d->special[eos] = true;
    bool add_bos = o->prepend_bos < 0 ? tokenizer_add_bos_default(tok) : o->prepend_bos > 0;
    const char *field = o->field ? o->field : "text";
    struct packer p = {.d = d, .max_tokens = o->max_tokens, .bos = add_bos ? bos : -1};
    size_t line_no = 0, docs = 0;
    const char *s = text, *end = text + len;
    while (s < end && rc == 0 && !p.full) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *e = nl ? nl : end;
        line_no++;
        if (o->last_line && line_no > o->last_line) break;
        if (line_no >= o->first_line && e > s) {
            cJSON *j = cJSON_ParseWithLength(s, (size_t)(e - s));
            const cJSON *f = j ? cJSON_GetObjectItemCaseSensitive(j, field) : NULL;
            if (cJSON_IsString(f) && f->valuestring[0]) {
                int32_t *ids = NULL;
                size_t n = 0;
                rc = tokenizer_encode_alloc(tok, f->valuestring, strlen(f->valuestring), add_bos,
                                            &ids, &n);
                for (size_t i = 0; i < n && rc == 0; i++) rc = packer_put(&p, ids[i], i == 0);
                free(ids);
                docs++;
            }
            cJSON_Delete(j);
        }
        s = e + 1;
    }
    free(text);
    if (rc == 0) rc = packer_finish(&p);
    if (rc < 0) {
        log_error("eval_data", "reason=pack_failed path=%s docs=%zu err=%s", path, docs,
                  sf_strerror(rc));
        eval_data_destroy(&d);
        return rc;
    }
    log_info("eval_data", "path=%s docs=%zu windows=%zu tokens=%zu context=%zu", path, docs,
             d->n_windows, d->n_tokens, d->context);
    *out = d;
    return 0;
}

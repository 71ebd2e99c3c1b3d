/* Helpers shared by the `saeflow feature ...` commands and `generate --steer`: reading
 * lists of texts, running a model + SAE over texts and handing back each token's
 * active latents, and drawing tokens with ANSI 256-colour heat.
 *
 * Ownership: fscan_open fills a struct the caller releases with fscan_close (it owns
 * the model, SAE and context it loaded); text_list_read fills a list released with
 * text_list_free. */
#ifndef SAEFLOW_CLI_FEATURE_H
#define SAEFLOW_CLI_FEATURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/core.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "sae/sae.h"

/* ---- texts ---- */
struct text_list {
    char **v; /* (n) NUL-terminated texts */
    size_t n;
};
/* format: "auto" (jsonl when the name ends in .jsonl, else lines), "lines" (one text
 * per non-empty line), "jsonl" (string field `field`, default "text"), "winobias"
 * (lines "N sentence" with [brackets]: the number and brackets are removed). `path`
 * may list several files separated by commas. At most max_texts (0 = no limit). */
int text_list_read(const char *path, const char *format, const char *field, size_t max_texts,
                   struct text_list *out);
int text_list_add(struct text_list *l, const char *text, size_t len);
void text_list_free(struct text_list *l);

/* ---- model + SAE over texts ---- */
struct fscan {
    struct model *m;
    const struct tokenizer *tok;
    struct sae *sae;
    struct model_ctx *c;
    char hook[128];
    size_t batch, context;
    size_t max_active;   /* codes kept per token (k for topk) */
    size_t n_cut;        /* texts cut at the context so far (their tail is not seen) */
    size_t n_seen;       /* texts run so far */
    uint64_t cut_tokens; /* tokens beyond the context in the cut texts (never seen) */
    size_t longest;      /* the longest text's tokens */
    bool cut_warned;     /* the truncation warning was printed (once per process) */
    size_t model_ctx;    /* the model's own context limit */
    bool add_bos;
    bool *special; /* (vocab) BOS/EOS/control: no codes */
    size_t vocab;
    /* one batch: */
    float *x;      /* (batch * context, d) captured activations */
    size_t x_rows; /* rows captured by the last forward */
    uint32_t *idx; /* (batch * context, max_active) */
    float *val;
    uint32_t *cnt; /* (batch * context) */
};

struct fscan_opts {
    const char *model, *tokenizer, *sae, *hook; /* hook "" / NULL: the SAE's */
    size_t batch, context;
    bool no_bos;
};
/* Loads the model and SAE, checks the hook and widths. 0 or a negative code; a message
 * saying why has been printed to stderr. */
int fscan_open(struct fscan *fs, const struct fscan_opts *o);
void fscan_close(struct fscan *fs);

/* What the callback sees for one text: its tokens (BOS first when added, truncated
 * to the context), and per token the active latents (idx, val: max_active pairs per
 * token, count cnt[t]; special tokens have cnt 0), largest first. */
struct fscan_text {
    size_t index; /* in the list */
    const char *text;
    const int32_t *tokens;
    size_t n;
    const uint32_t *idx;
    const float *val;
    const uint32_t *cnt;
    size_t max_active;
    const float *x; /* (n, d) the hooked activations */
};
typedef int (*fscan_fn)(void *ud, const struct fscan_text *t);
/* Runs every text (a text longer than the context is cut there: counted in n_cut);
 * the callback's non-zero return stops and is returned. */
int fscan_run(struct fscan *fs, const struct text_list *texts, fscan_fn fn, void *ud);

/* ---- drawing ---- */
/* Whether to colour: "auto" = stdout is a TTY and NO_COLOR is unset. */
bool tty_use_color(const char *mode);
/* Appends a token's text for display (newlines as ⏎, tabs as spaces, control bytes
 * dropped), optionally on a background by frac = act / max in [0, 1] (0: no colour).
 * Without colour, tokens with frac > 0 are marked «tok». */
void tty_token(struct buf *out, const char *piece, size_t len, float frac, bool color);
/* The display text of token id after prev (-1 = start). */
void piece_of(const struct tokenizer *tok, int32_t prev, int32_t id, struct buf *out);
/* Renders a token window with activations acts (n, may be NULL) relative to max. */
void tty_window(struct buf *out, const struct tokenizer *tok, const int32_t *tokens,
                const float *acts, size_t n, float max, bool color);
/* A row of block characters (▁▂▃▄▅▆▇█) for counts (n), scaled to their max. */
void tty_sparkline(struct buf *out, const uint64_t *counts, size_t n);

/* Logit effects of latent f: (W_U (g ⊙ W_dec[f])) per vocab entry, g the final norm
 * weight; top / bottom n ids and values (largest first / smallest first). */
int feature_logit_effects(const struct model *m, const struct sae *sae, uint32_t f, size_t n,
                          int32_t *top, float *top_v, int32_t *bot, float *bot_v);
/* Rank (1 = the most promoted) of `token` among latent f's logit effects. */
int feature_logit_rank(const struct model *m, const struct sae *sae, uint32_t f, int32_t token,
                       size_t *rank);

#endif

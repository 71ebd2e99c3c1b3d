/* tokenizer_impl: the tokenizer's representation and the builder the loaders share
 * (tokenizer.c: llama2.c and GGUF; tokenizer_hf.c: tokenizer.json). Internal to model.
 *
 * Building: tokenizer_alloc(kind, n_vocab); tokenizer_set_token() for each id; then
 * (BPE) tokenizer_add_merge() in rank order; then tokenizer_finish(). */
#ifndef SAEFLOW_MODEL_TOKENIZER_IMPL_H
#define SAEFLOW_MODEL_TOKENIZER_IMPL_H

#include "model/tokenizer.h"

enum tokenizer_pre {
    TOKENIZER_PRE_NONE = 0, /* whole text is one word (SPM) */
    TOKENIZER_PRE_GPT2 =
        1, /* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
    TOKENIZER_PRE_DEEPSEEK_CODER = 2, /* llama.cpp's "deepseek-coder" regex list */
    TOKENIZER_PRE_FALCON = 3,         /* llama.cpp's "falcon" regex list */
    /* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
     * \s*[\r\n]+|\s+(?!\S)|\s+ (Llama 3); QWEN2 is the same with \p{N} for \p{N}{1,3} */
    TOKENIZER_PRE_LLAMA3 = 4,
    TOKENIZER_PRE_QWEN2 = 5,
    TOKENIZER_PRE_SMOLLM = 6, /* \p{N} (each digit alone), then GPT-2 */
};

struct tokenizer {
    enum tokenizer_kind kind;
    enum tokenizer_pre pre;
    size_t n_vocab;
    /* interned strings: [0, n_vocab) are the vocabulary, the rest are merge parts
     * that are not tokens */
    char **str;
    uint32_t *len;
    size_t n_str, cap_str;
    float *score;  /* n_vocab */
    int32_t *type; /* n_vocab, enum tokenizer_token_type */
    int32_t *map;  /* open addressing over str, -1 = empty */
    size_t map_cap;
    uint64_t *pair_key; /* merge (sid_a << 32 | sid_b) */
    uint32_t *pair_val; /* rank + 1; 0 = empty */
    size_t pair_cap, n_pairs, n_merges;
    int32_t bos, eos, unk;
    /* which metadata set add_bos (static text) */
    const char *add_bos_from;
    bool add_bos;
    bool add_space_prefix; /* SPM: prepend a space (dummy prefix) */
    bool escape_spaces;    /* SPM: spaces are U+2581 in the vocabulary */
    bool spm_split;        /* SPM: words may be merged separately (see tokenizer_finish) */
    bool ignore_merges;    /* BPE: a pre-tokenized word that is a token is taken whole */
    int32_t byte_tok[256]; /* SPM: id of <0xXX>, -1 if none */
    uint32_t byte_cp[256]; /* BPE: GPT-2 byte -> printable code point */
    int16_t cp_byte[512];  /* BPE: code point -> byte, -1 if none */
    int32_t *udt;          /* user-defined token ids, longest first */
    size_t n_udt;
};

struct tokenizer *tokenizer_alloc(enum tokenizer_kind kind, size_t n_vocab);
/* Sets entry `id` (copied). Unset ids stay "" with type TOKEN_UNUSED. */
int tokenizer_set_token(struct tokenizer *t, int32_t id, const char *s, size_t len, float score,
                        int32_t type);
/* Adds the next merge (rank = number of merges added before); a repeated pair keeps
 * its first rank. */
int tokenizer_add_merge(struct tokenizer *t, const char *a, size_t alen, const char *b,
                        size_t blen);
/* Indexes the vocabulary (if not yet), fills the byte tables, checks special ids. */
int tokenizer_finish(struct tokenizer *t);

/* Splits text into pre-tokenizer words; *ends (malloc'd, caller frees) receives the
 * byte offset where each word ends. Exposed for tests. */
int tokenizer_pretokenize(enum tokenizer_pre pre, const char *text, size_t len, size_t **ends,
                          size_t *n);

/* UTF-8: decodes one code point at s (len > 0); invalid or truncated sequences give
 * U+FFFD with *adv = 1. */
uint32_t tokenizer_utf8_decode(const uint8_t *s, size_t len, size_t *adv);

#endif

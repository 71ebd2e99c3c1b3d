/* tokenizer: text <-> token ids for the models the engine runs.
 *
 * Two algorithms, each loadable from several files:
 *   - SentencePiece-style BPE with scores and byte fallback (TOKENIZER_SPM): llama2.c
 *     tokenizer .bin files (tok512.bin, Llama 2's tokenizer.bin), and GGUF files with
 *     tokenizer.ggml.model = "llama". Encoding follows llama.cpp's SPM tokenizer: a
 *     dummy-prefix space, then repeatedly merge the adjacent pair whose concatenation is
 *     in the vocabulary with the highest score (ties: leftmost), then byte fallback
 *     (<0xXX> tokens) for pieces not in the vocabulary.
 *   - GPT-2 byte-level BPE with merges (TOKENIZER_BPE): GGUF files with
 *     tokenizer.ggml.model = "gpt2", and Hugging Face tokenizer.json (model.type BPE
 *     with a ByteLevel pre-tokenizer). Text is split by the GPT-2 pre-tokenizer regex
 *     (implemented by hand, Unicode classes from generated tables), each word's bytes
 *     are mapped to GPT-2's printable byte alphabet, and merges apply by rank.
 *     tokenizer.json files with byte_fallback (Llama 2 / TinyLlama style) load as
 *     TOKENIZER_SPM_MERGES: spaces become U+2581, a prefix U+2581 is added, merges by
 *     rank, then <0xXX> byte fallback.
 *
 * BOS/EOS per source:
 *   llama2.c .bin: unk 0, bos 1, eos 2 (llama2.c's fixed ids); add_bos default true.
 *   GGUF: tokenizer.ggml.{bos,eos,unknown}_token_id (-1 when absent or out of range);
 *     tokenizer.ggml.add_bos_token (default true for llama, false for gpt2).
 *   tokenizer.json: bos/eos are taken from added_tokens by well-known content
 *     (<s>, </s>, <|endoftext|>, <|begin_of_text|>, <|end_of_text|>, <|im_end|>, ...);
 *     add_bos true when the post_processor prepends one, else false (GPT-2's own
 *     tokenizer.json adds none, as transformers does); a Hugging Face directory's
 *     tokenizer_config.json add_bos_token overrides it (model_hf.c).
 * Every caller that tokenizes for the model (generate, capture, eval, feature
 * search) starts from tokenizer_add_bos_default; tokenizer_add_bos_source says why.
 * tokenizer_encode adds BOS only when asked (add_bos) and the tokenizer has one; it
 * never adds EOS. Control tokens written in the text (e.g. "<s>", "<|endoftext|>")
 * are not parsed: they tokenise as plain text. User-defined tokens (GGUF token type
 * 4, non-special added_tokens in tokenizer.json) are matched in the text, longest
 * first, as llama.cpp and Hugging Face do.
 *
 * Pre-tokenizers (byte-level BPE), all hand-written: GGUF tokenizer.ggml.pre
 * "gpt-2"/"default" -> the GPT-2 regex; "llama-bpe"/"llama3"/"smaug-bpe" -> the
 * Llama 3 regex; "qwen2" -> the same with single digits; "smollm" -> digits split,
 * then GPT-2; "deepseek-coder" and "falcon" -> llama.cpp's regex lists for them. Any
 * other value falls back to GPT-2 with a warning. tokenizer.json: a Split with the
 * Llama 3 or Qwen2 pattern, Digits(individual_digits) + ByteLevel (SmolLM2), else
 * ByteLevel's GPT-2 regex (an unknown Split pattern is approximated, with a warning).
 * All llama.cpp test vectors for llama-spm, gpt-2, deepseek-coder and falcon
 * reproduce exactly; GPT-2, Llama 3, Qwen2 and SmolLM splits match Python's `regex`.
 *
 * Decoding: byte tokens become raw bytes, U+2581 becomes a space (SPM), byte-level
 * pieces are mapped back to bytes (BPE); control tokens (BOS, EOS, ...) decode to
 * nothing. For SPM tokenizers that add a dummy prefix, the leading space of the first
 * piece after BOS or at the start of the sequence is stripped (as llama2.c does after
 * BOS), so that decode(encode(text)) == text.
 *
 * Thread safety: a loaded tokenizer is immutable; encode/decode may run concurrently.
 * Ownership: loaders return a tokenizer the caller frees with tokenizer_destroy. */
#ifndef SAEFLOW_MODEL_TOKENIZER_H
#define SAEFLOW_MODEL_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;
struct gguf;
struct tokenizer;

enum tokenizer_kind {
    TOKENIZER_SPM = 1,        /* scores + byte fallback (llama2.c, GGUF llama) */
    TOKENIZER_BPE = 2,        /* GPT-2 byte-level BPE with merges */
    TOKENIZER_SPM_MERGES = 3, /* SentencePiece BPE expressed as merges (tokenizer.json) */
};

/* Token types (GGUF's numbering). */
enum tokenizer_token_type {
    TOKEN_NORMAL = 1,
    TOKEN_UNKNOWN = 2,
    TOKEN_CONTROL = 3,
    TOKEN_USER_DEFINED = 4,
    TOKEN_UNUSED = 5,
    TOKEN_BYTE = 6,
};

/* Caps on what a loader accepts. */
#define TOKENIZER_MAX_VOCAB  (1u << 21)
#define TOKENIZER_MAX_TOKLEN 65536

/* Loaders: 0, or SF_EIO / SF_EFORMAT / SF_EUNSUP / SF_ENOMEM with the reason logged. */
int tokenizer_load_llama2c(const char *path, struct tokenizer **out);
int tokenizer_load_llama2c_mem(const void *data, size_t len, struct tokenizer **out);
/* From a GGUF's tokenizer.ggml.* metadata (model "llama" or "gpt2"). The tokenizer
 * copies what it needs; the gguf may be closed afterwards. */
int tokenizer_from_gguf(const struct gguf *g, struct tokenizer **out);
int tokenizer_load_hf_json(const char *path, struct tokenizer **out);
int tokenizer_load_hf_json_mem(const char *json, size_t len, struct tokenizer **out);
void tokenizer_destroy(struct tokenizer **t);

/* Encodes `len` bytes of text (need not be NUL-terminated or valid UTF-8; invalid
 * bytes are kept as bytes). Writes up to `cap` ids and sets *n to the number of ids
 * the text needs; returns SF_ERANGE (ids partly written) when cap < *n. */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool add_bos,
                     int32_t *ids, size_t cap, size_t *n);
/* Same, into a malloc'd array the caller frees (*ids may be NULL when *n == 0). */
int tokenizer_encode_alloc(const struct tokenizer *t, const char *text, size_t len, bool add_bos,
                           int32_t **ids, size_t *n);

/* Appends the bytes of token `id` as it reads after token `prev` (-1 = start of text).
 * SF_EINVAL for an id out of range. */
int tokenizer_decode_piece(const struct tokenizer *t, int32_t prev, int32_t id, struct buf *out);
/* Appends the text of a whole sequence (the first id is read as the start of text). */
int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, struct buf *out);

enum tokenizer_kind tokenizer_kind(const struct tokenizer *t);
size_t tokenizer_vocab_size(const struct tokenizer *t);
int32_t tokenizer_bos(const struct tokenizer *t);          /* -1 when none */
int32_t tokenizer_eos(const struct tokenizer *t);          /* -1 when none */
int32_t tokenizer_unk(const struct tokenizer *t);          /* -1 when none */
bool tokenizer_add_bos_default(const struct tokenizer *t); /* what the model expects */
/* Which metadata decided tokenizer_add_bos_default (static text, e.g. "tokenizer.json
 * post_processor", "GGUF tokenizer.ggml.add_bos_token", "llama2.c (always)"). */
const char *tokenizer_add_bos_source(const struct tokenizer *t);
/* Overrides the default (e.g. from tokenizer_config.json add_bos_token); `source` is
 * static text kept by pointer. */
void tokenizer_set_add_bos(struct tokenizer *t, bool add, const char *source);
/* The vocabulary entry as stored (with U+2581 or GPT-2 byte letters); NULL if out of
 * range. *len may be NULL. Borrowed from the tokenizer. */
const char *tokenizer_token_str(const struct tokenizer *t, int32_t id, size_t *len);
float tokenizer_token_score(const struct tokenizer *t, int32_t id);
enum tokenizer_token_type tokenizer_token_type(const struct tokenizer *t, int32_t id);
/* Id of a vocabulary entry given as stored, or -1. */
int32_t tokenizer_find(const struct tokenizer *t, const char *s, size_t len);

#endif

/* tokenizer_hf: loads a Hugging Face tokenizer.json (model.type "BPE") into a
 * struct tokenizer: GPT-2 style byte-level BPE (ByteLevel pre-tokenizer/decoder) or
 * SentencePiece-style BPE with byte fallback (Llama 2, TinyLlama). See tokenizer.h. */
#include "core/core.h"
#include "model/tokenizer.h"
#include "model/tokenizer_impl.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HF_JSON_MAX ((size_t)256 << 20)

/* Split patterns we implement by hand (Llama 3 and Qwen2 tokenizer.json files). */
#define LLAMA3_REGEX                                                                               \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                     \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_REGEX                                                                                \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                          \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

static bool json_is_type(const cJSON *o, const char *type)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) && strcmp(t->valuestring, type) == 0;
}

/* Looks for an object of `type` in a pre_tokenizer/decoder/normalizer, or inside its
 * Sequence ("pretokenizers", "decoders", "normalizers"). */
static const cJSON *json_find_type(const cJSON *o, const char *type)
{
    if (!cJSON_IsObject(o)) return NULL;
    if (json_is_type(o, type)) return o;
    if (!json_is_type(o, "Sequence")) return NULL;
    static const char *lists[] = {"pretokenizers", "decoders", "normalizers", "processors"};
    for (size_t i = 0; i < SF_ARRAY_LEN(lists); i++) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, lists[i]);
        const cJSON *e;
        cJSON_ArrayForEach(e, arr)
        {
            if (json_is_type(e, type)) return e;
        }
    }
    return NULL;
}

static bool json_bool(const cJSON *o, const char *key, bool def)
{
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(b) ? cJSON_IsTrue(b) : def;
}

/* An integer id in [0, TOKENIZER_MAX_VOCAB), or -1. */
static int64_t json_id(const cJSON *v)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d >= TOKENIZER_MAX_VOCAB || d != floor(d)) return -1;
    return (int64_t)d;
}

static int32_t id_of_content(const cJSON *added, const char *content)
{
    const cJSON *a;
    cJSON_ArrayForEach(a, added)
    {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (cJSON_IsString(c) && strcmp(c->valuestring, content) == 0)
            return (int32_t)json_id(cJSON_GetObjectItemCaseSensitive(a, "id"));
    }
    return -1;
}

static int32_t first_of(const struct tokenizer *t, const cJSON *added, const char *const *names,
                        size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int32_t id = id_of_content(added, names[i]);
        if (id < 0) id = tokenizer_find(t, names[i], strlen(names[i]));
        if (id >= 0) return id;
    }
    return -1;
}

static int load(const cJSON *root, struct tokenizer **out)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) {
        log_error("tokenizer_json", "reason=no_model");
        return SF_EFORMAT;
    }
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (type && !json_is_type(model, "BPE")) {
        log_error("tokenizer_json", "reason=unsupported_model type=%s",
                  cJSON_IsString(type) ? type->valuestring : "?");
        return SF_EUNSUP;
    }
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges) ||
        (added && !cJSON_IsArray(added) && !cJSON_IsNull(added))) {
        log_error("tokenizer_json", "reason=bad_model_fields");
        return SF_EFORMAT;
    }
    if (!cJSON_IsArray(added)) added = NULL;

    /* vocabulary size: the largest id + 1 */
    int64_t max_id = -1;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab)
    {
        int64_t id = json_id(e);
        if (id < 0 || !e->string) {
            log_error("tokenizer_json", "reason=bad_vocab_id");
            return SF_EFORMAT;
        }
        max_id = SF_MAX(max_id, id);
    }
    cJSON_ArrayForEach(e, added)
    {
        int64_t id = json_id(cJSON_GetObjectItemCaseSensitive(e, "id"));
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (id < 0 || !cJSON_IsString(c)) {
            log_error("tokenizer_json", "reason=bad_added_token");
            return SF_EFORMAT;
        }
        max_id = SF_MAX(max_id, id);
    }
    if (max_id < 0) {
        log_error("tokenizer_json", "reason=empty_vocab");
        return SF_EFORMAT;
    }
    /* ids are dense in real files; refuse a few entries claiming a huge id space */
    size_t n_entries = (size_t)cJSON_GetArraySize(vocab) + (size_t)cJSON_GetArraySize(added);
    if ((size_t)max_id >= 2 * n_entries + 1024) {
        log_error("tokenizer_json", "reason=sparse_ids max_id=%lld entries=%zu", (long long)max_id,
                  n_entries);
        return SF_EFORMAT;
    }

    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *bl = json_find_type(pre, "ByteLevel");
    bool byte_level = bl || json_find_type(dec, "ByteLevel");
    enum tokenizer_kind kind = byte_level ? TOKENIZER_BPE : TOKENIZER_SPM_MERGES;

    struct tokenizer *t = tokenizer_alloc(kind, (size_t)max_id + 1);
    if (!t) return SF_ENOMEM;
    int rc = 0;
    cJSON_ArrayForEach(e, vocab)
    {
        size_t len = strlen(e->string);
        int32_t ty = TOKEN_NORMAL;
        if (kind == TOKENIZER_SPM_MERGES && len == 6 && strncmp(e->string, "<0x", 3) == 0 &&
            e->string[5] == '>')
            ty = TOKEN_BYTE;
        if (len > TOKENIZER_MAX_TOKLEN) {
            rc = SF_EFORMAT;
            break;
        }
        rc = tokenizer_set_token(t, (int32_t)json_id(e), e->string, len, 0.0f, ty);
        if (rc) break;
    }
    cJSON_ArrayForEach(e, added)
    {
        if (rc) break;
        const char *c = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        int32_t id = (int32_t)json_id(cJSON_GetObjectItemCaseSensitive(e, "id"));
        bool special = json_bool(e, "special", false);
        if (strlen(c) > TOKENIZER_MAX_TOKLEN) {
            rc = SF_EFORMAT;
            break;
        }
        rc = tokenizer_set_token(t, id, c, strlen(c), 0.0f,
                                 special ? TOKEN_CONTROL : TOKEN_USER_DEFINED);
    }
    size_t i = 0;
    cJSON_ArrayForEach(e, merges)
    {
        if (rc) break;
        const char *a, *b;
        size_t al, bl2;
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring;
            size_t n = strlen(s);
            const char *sp = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
            if (!sp) {
                rc = SF_EFORMAT;
                break;
            }
            a = s;
            al = (size_t)(sp - s);
            b = sp + 1;
            bl2 = n - al - 1;
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            a = cJSON_GetArrayItem(e, 0)->valuestring;
            b = cJSON_GetArrayItem(e, 1)->valuestring;
            al = strlen(a);
            bl2 = strlen(b);
        } else {
            rc = SF_EFORMAT;
            break;
        }
        rc = tokenizer_add_merge(t, a, al, b, bl2);
        i++;
    }
    if (rc) {
        log_error("tokenizer_json", "reason=bad_merge index=%zu err=%s", i, sf_strerror(rc));
        tokenizer_destroy(&t);
        return rc;
    }
    if ((rc = tokenizer_finish(t))) {
        tokenizer_destroy(&t);
        return rc;
    }

    if (kind == TOKENIZER_BPE) {
        const cJSON *split = json_find_type(pre, "Split");
        const cJSON *digits = json_find_type(pre, "Digits");
        const cJSON *pat = split ? cJSON_GetObjectItemCaseSensitive(split, "pattern") : NULL;
        const cJSON *re = pat ? cJSON_GetObjectItemCaseSensitive(pat, "Regex") : NULL;
        t->pre = TOKENIZER_PRE_GPT2;
        if (bl && !json_bool(bl, "use_regex", true)) t->pre = TOKENIZER_PRE_NONE;
        if (cJSON_IsString(re) && strcmp(re->valuestring, LLAMA3_REGEX) == 0) {
            t->pre = TOKENIZER_PRE_LLAMA3;
        } else if (cJSON_IsString(re) && strcmp(re->valuestring, QWEN2_REGEX) == 0) {
            t->pre = TOKENIZER_PRE_QWEN2;
        } else if (split) {
            t->pre = TOKENIZER_PRE_GPT2;
            log_warn("tokenizer_json", "reason=pre_tokenizer_approximated using=gpt-2");
        } else if (digits && json_bool(digits, "individual_digits", false) &&
                   t->pre == TOKENIZER_PRE_GPT2) {
            t->pre = TOKENIZER_PRE_SMOLLM;
        }
        t->ignore_merges = json_bool(model, "ignore_merges", false);
        if (bl && json_bool(bl, "add_prefix_space", false))
            log_warn("tokenizer_json", "reason=add_prefix_space_ignored");
    } else {
        /* SentencePiece as BPE: the dummy prefix comes from a Prepend normalizer or a
         * Metaspace pre-tokenizer */
        const cJSON *ms = json_find_type(pre, "Metaspace");
        const cJSON *scheme = ms ? cJSON_GetObjectItemCaseSensitive(ms, "prepend_scheme") : NULL;
        t->add_space_prefix =
            json_find_type(norm, "Prepend") != NULL ||
            (ms && (cJSON_IsString(scheme) ? strcmp(scheme->valuestring, "never") != 0
                                           : json_bool(ms, "add_prefix_space", true)));
        t->escape_spaces = true;
    }

    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (cJSON_IsString(unk)) t->unk = tokenizer_find(t, unk->valuestring, strlen(unk->valuestring));
    static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>",
                                            "<|endoftext|>"};
    static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>",
                                            "<|im_end|>", "<eos>"};
    t->bos = first_of(t, added, bos_names, SF_ARRAY_LEN(bos_names));
    t->eos = first_of(t, added, eos_names, SF_ARRAY_LEN(eos_names));
    /* a TemplateProcessing post-processor that starts with a special token adds BOS */
    const cJSON *post = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const cJSON *tp = json_find_type(post, "TemplateProcessing");
    const cJSON *single = tp ? cJSON_GetObjectItemCaseSensitive(tp, "single") : NULL;
    const cJSON *first = cJSON_IsArray(single) ? cJSON_GetArrayItem(single, 0) : NULL;
    const cJSON *st = first ? cJSON_GetObjectItemCaseSensitive(first, "SpecialToken") : NULL;
    const cJSON *sid = st ? cJSON_GetObjectItemCaseSensitive(st, "id") : NULL;
    t->add_bos_from = "tokenizer.json post_processor (adds none)";
    if (cJSON_IsString(sid)) {
        int32_t id = tokenizer_find(t, sid->valuestring, strlen(sid->valuestring));
        if (id >= 0) {
            t->bos = id;
            t->add_bos = true;
            t->add_bos_from = "tokenizer.json post_processor";
        }
    }
    *out = t;
    return 0;
}

int tokenizer_load_hf_json_mem(const char *json, size_t len, struct tokenizer **out)
{
    *out = NULL;
    if (!json || len == 0) {
        log_error("tokenizer_json", "reason=empty");
        return SF_EFORMAT;
    }
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        log_error("tokenizer_json", "reason=not_json");
        return SF_EFORMAT;
    }
    int rc = cJSON_IsObject(root) ? load(root, out) : SF_EFORMAT;
    if (rc && !cJSON_IsObject(root)) log_error("tokenizer_json", "reason=not_an_object");
    cJSON_Delete(root);
    return rc;
}

int tokenizer_load_hf_json(const char *path, struct tokenizer **out)
{
    char *data = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = file_read_all(path, HF_JSON_MAX, &data, &len);
    if (rc) {
        log_error("tokenizer_load_failed", "path=%s err=%s", path, sf_strerror(rc));
        return rc;
    }
    rc = tokenizer_load_hf_json_mem(data, len, out);
    if (rc) log_error("tokenizer_load_failed", "path=%s err=%s", path, sf_strerror(rc));
    free(data);
    return rc;
}

/* sae_io: export and import SAE directories in the SAELens v6 and EleutherAI sparsify
 * layouts (see sae_io.h for the files and keys). Everything read from disk or memory
 * is validated before it is trusted: JSON types, required keys, tensor names, shapes
 * against the cfg, dtypes and finite values; allocation sizes are only taken from
 * tensors that are actually present in the file.
 *
 * Where the cfg.json keys come from (SAELens v6, jbloomAus/SAELens):
 *   sae_lens/saes/sae.py        SAEConfig: d_in, d_sae, dtype, device,
 *                               apply_b_dec_to_input, normalize_activations,
 *                               reshape_activations, metadata; to_dict() adds
 *                               architecture. SAEMetadata: model_name, hook_name,
 *                               model_class_name, hook_layer, hook_head_index,
 *                               model_from_pretrained_kwargs, prepend_bos,
 *                               exclude_special_tokens, neuronpedia_id, context_size,
 *                               dataset_path, sae_lens_version, sae_lens_training_version
 *   sae_lens/saes/topk_sae.py   TopKSAEConfig: k, rescale_acts_by_decoder_norm
 *   sae_lens/saes/jumprelu_sae.py  JumpReLUSAEConfig adds no keys; tensor "threshold"
 *   sae_lens/constants.py       cfg.json, sae_weights.safetensors, sparsity.safetensors
 *   sae_lens/loading/pretrained_sae_loaders.py  handle_config_defaulting: a cfg whose
 *                               sae_lens_version (top level or metadata) is below
 *                               6.0.0 is treated as a pre-6 config.
 * sparsify (EleutherAI/sparsify): sparsify/config.py SparseCoderConfig (activation,
 * expansion_factor, normalize_decoder, num_latents, k, multi_topk, skip_connection,
 * transcode) and sparsify/sparse_coder.py save_to_disk (adds d_in; weights in
 * sae.safetensors as encoder.weight, encoder.bias, W_dec, b_dec). */
#include "sae/sae_io.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "safetensors/safetensors.h"

#define MAX_JSON_KEYS 512

/* ---- small helpers ---- */

/* A copy of untrusted text that is safe to put in a log line. */
static const char *printable(const char *s, char *buf, size_t cap)
{
    size_t i = 0;
    if (!s) s = "(null)";
    for (; s[i] && i + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') ? '?' : (char)c;
    }
    buf[i] = '\0';
    return buf;
}

/* Logs why an import failed, once, and returns rc. */
__attribute__((format(printf, 3, 4))) static int fail(int rc, const char *origin, const char *fmt,
                                                      ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_error("sae_import_failed", "origin=\"%s\" rc=%s reason=\"%s\"", origin, sf_strerror(rc),
              msg);
    return rc;
}

static bool path_join(char *out, size_t cap, const char *a, const char *b)
{
    int n = snprintf(out, cap, "%s/%s", a, b);
    return n >= 0 && (size_t)n < cap;
}

static bool is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void copy_field(char *dst, size_t cap, const char *src, const char *origin,
                       const char *field)
{
    size_t len = strlen(src);
    if (len >= cap) {
        log_warn("sae_import_truncated", "origin=\"%s\" field=%s len=%zu max=%zu", origin, field,
                 len, cap - 1);
        len = cap - 1;
    }
    memcpy(dst, src, len);
    dst[len] = '\0';
}

/* ---- JSON helpers (cJSON) ---- */

static int check_object(const cJSON *obj, const char *origin, const char *where)
{
    if (!cJSON_IsObject(obj)) return fail(SF_EFORMAT, origin, "%s is not a JSON object", where);
    size_t count = 0;
    for (const cJSON *a = obj->child; a; a = a->next) {
        if (++count > MAX_JSON_KEYS)
            return fail(SF_EFORMAT, origin, "%s has more than %d keys", where, MAX_JSON_KEYS);
        if (!a->string) return fail(SF_EFORMAT, origin, "%s has a key that is not a string", where);
        for (const cJSON *b = a->next; b; b = b->next) {
            if (b->string && !strcmp(a->string, b->string)) {
                char p[64];
                return fail(SF_EFORMAT, origin, "%s repeats key %s", where,
                            printable(a->string, p, sizeof p));
            }
        }
    }
    return 0;
}

static const cJSON *jget(const cJSON *obj, const char *key)
{
    return obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

/* A required integer in [lo, hi]. */
static int json_size(const cJSON *obj, const char *key, size_t lo, size_t hi, bool required,
                     size_t *out, const char *origin)
{
    const cJSON *it = jget(obj, key);
    if (!it || cJSON_IsNull(it)) {
        if (required) return fail(SF_EFORMAT, origin, "cfg.json has no %s", key);
        return SF_NOTFOUND;
    }
    if (!cJSON_IsNumber(it)) return fail(SF_EFORMAT, origin, "%s is not a number", key);
    double d = it->valuedouble;
    if (!(d >= (double)lo && d <= (double)hi) || floor(d) != d)
        return fail(SF_EFORMAT, origin, "%s=%.17g is not an integer in [%zu, %zu]", key, d, lo, hi);
    *out = (size_t)d;
    return 0;
}

/* An optional bool (null/absent keeps *out). */
static int json_bool(const cJSON *obj, const char *key, bool *out, const char *origin)
{
    const cJSON *it = jget(obj, key);
    if (!it || cJSON_IsNull(it)) return 0;
    if (!cJSON_IsBool(it)) return fail(SF_EFORMAT, origin, "%s is not a boolean", key);
    *out = cJSON_IsTrue(it);
    return 0;
}

/* An optional string (null/absent gives ""); `dst` of `cap` bytes. */
static int json_str(const cJSON *obj, const char *key, char *dst, size_t cap, const char *origin)
{
    const cJSON *it = jget(obj, key);
    if (!it || cJSON_IsNull(it)) return 0;
    if (!cJSON_IsString(it) || !it->valuestring)
        return fail(SF_EFORMAT, origin, "%s is not a string", key);
    copy_field(dst, cap, it->valuestring, origin, key);
    return 0;
}

/* An optional integer that may be null; *out untouched when absent. */
static int json_i64(const cJSON *obj, const char *key, int64_t lo, int64_t hi, int64_t *out,
                    const char *origin)
{
    const cJSON *it = jget(obj, key);
    if (!it || cJSON_IsNull(it)) return 0;
    if (!cJSON_IsNumber(it)) return fail(SF_EFORMAT, origin, "%s is not a number", key);
    double d = it->valuedouble;
    if (!(d >= (double)lo && d <= (double)hi) || floor(d) != d)
        return fail(SF_EFORMAT, origin, "%s=%.17g is not an integer in [%lld, %lld]", key, d,
                    (long long)lo, (long long)hi);
    *out = (int64_t)d;
    return 0;
}

/* "blocks.12.hook_resid_post" -> 12; -1 when the name has no layer. */
static int64_t layer_from_hook(const char *hook)
{
    const char *p = strstr(hook, "blocks.");
    if (!p) p = strstr(hook, "layers.");
    if (!p) return -1;
    p += 7;
    if (*p < '0' || *p > '9') return -1;
    int64_t v = 0;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > 1000000) return -1;
        v = v * 10 + (*p - '0');
    }
    return v;
}

/* Compares dotted versions numerically ("6.5.0" vs "6.0.0"); pre-release suffixes
 * are ignored. Returns <0, 0, >0. */
static int version_cmp(const char *a, const char *b)
{
    for (int part = 0; part < 3; part++) {
        long va = 0, vb = 0;
        while (*a >= '0' && *a <= '9') {
            if (va < 100000000) va = va * 10 + (*a - '0');
            a++;
        }
        while (*b >= '0' && *b <= '9') {
            if (vb < 100000000) vb = vb * 10 + (*b - '0');
            b++;
        }
        if (va != vb) return va < vb ? -1 : 1;
        if (*a == '.') a++;
        if (*b == '.') b++;
    }
    return 0;
}

static cJSON *parse_json(const char *json, size_t len, const char *origin, int *rc)
{
    *rc = 0;
    if (!json || len == 0) {
        *rc = fail(SF_EFORMAT, origin, "cfg.json is empty");
        return NULL;
    }
    if (len > SAE_IO_MAX_CFG) {
        *rc = fail(SF_EFORMAT, origin, "cfg.json is larger than %u bytes", SAE_IO_MAX_CFG);
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        size_t at = (end && end >= json && end <= json + len) ? (size_t)(end - json) : 0;
        *rc = fail(SF_EFORMAT, origin, "cfg.json is not valid JSON (near byte %zu)", at);
        return NULL;
    }
    /* only whitespace may follow the value */
    for (const char *p = end; p && p < json + len; p++) {
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != '\0') {
            cJSON_Delete(root);
            *rc = fail(SF_EFORMAT, origin, "cfg.json has trailing data");
            return NULL;
        }
    }
    return root;
}

/* ---- SAELens cfg.json ---- */

static int parse_saelens_meta(const cJSON *m, struct sae_io_saelens_cfg *c, const char *origin)
{
    int rc;
    struct sae_meta *meta = &c->meta;
    if ((rc = json_str(m, "model_name", meta->model_name, sizeof meta->model_name, origin)) ||
        (rc = json_str(m, "hook_name", meta->hook_name, sizeof meta->hook_name, origin)) ||
        (rc = json_str(m, "dataset_path", meta->dataset_path, sizeof meta->dataset_path, origin)) ||
        (rc = json_str(m, "sae_lens_version", c->sae_lens_version, sizeof c->sae_lens_version,
                       origin)))
        return rc;
    meta->hook_layer = layer_from_hook(meta->hook_name);
    if ((rc = json_i64(m, "hook_layer", -1, 1000000, &meta->hook_layer, origin)) ||
        (rc = json_i64(m, "context_size", 0, INT64_C(1) << 40, &meta->context_size, origin)))
        return rc;
    meta->prepend_bos = true; /* SAELens's default */
    if ((rc = json_bool(m, "prepend_bos", &meta->prepend_bos, origin))) return rc;
    const cJSON *ex = jget(m, "exclude_special_tokens");
    if (cJSON_IsArray(ex))
        meta->exclude_special_tokens = cJSON_GetArraySize(ex) > 0;
    else if ((rc = json_bool(m, "exclude_special_tokens", &meta->exclude_special_tokens, origin)))
        return rc;
    int64_t head = -1;
    if ((rc = json_i64(m, "hook_head_index", 0, 1000000, &head, origin))) return rc;
    if (head >= 0)
        log_warn("sae_import_head_index", "origin=\"%s\" hook_head_index=%lld (not kept)", origin,
                 (long long)head);
    return 0;
}

static int parse_saelens_cfg(const char *json, size_t len, const char *origin,
                             struct sae_io_saelens_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->apply_b_dec_to_input = true;
    c->meta.hook_layer = -1;
    int rc = 0;
    cJSON *root = parse_json(json, len, origin, &rc);
    if (!root) return rc;
    char p[64];
    if ((rc = check_object(root, origin, "cfg.json"))) goto out;

    /* v6 keeps the provenance under "metadata"; older files keep it at the top level */
    const cJSON *meta = jget(root, "metadata");
    if (meta && !cJSON_IsNull(meta)) {
        if ((rc = check_object(meta, origin, "metadata"))) goto out;
    } else {
        meta = root;
    }
    if ((rc = parse_saelens_meta(meta, c, origin))) goto out;
    if (!c->sae_lens_version[0] && (rc = json_str(root, "sae_lens_version", c->sae_lens_version,
                                                  sizeof c->sae_lens_version, origin)))
        goto out;
    /* pretrained_sae_loaders.py: no version, or one below 6.0.0, is a pre-6 config */
    const bool pre6 = !c->sae_lens_version[0] || version_cmp(c->sae_lens_version, "6.0.0") < 0;
    if (pre6) {
        /* pre-6 names: hook_point, hook_point_layer (handle_pre_6_0_config renames) */
        if (!c->meta.hook_name[0] && (rc = json_str(root, "hook_point", c->meta.hook_name,
                                                    sizeof c->meta.hook_name, origin)))
            goto out;
        if (c->meta.hook_layer < 0) c->meta.hook_layer = layer_from_hook(c->meta.hook_name);
        if ((rc = json_i64(root, "hook_point_layer", -1, 1000000, &c->meta.hook_layer, origin)))
            goto out;
    }

    const cJSON *arch = jget(root, "architecture");
    const char *arch_s = "standard"; /* SAELens's default for pre-6 configs */
    if (arch && !cJSON_IsNull(arch)) {
        if (!cJSON_IsString(arch) || !arch->valuestring) {
            rc = fail(SF_EFORMAT, origin, "architecture is not a string");
            goto out;
        }
        arch_s = arch->valuestring;
    } else if (!pre6) {
        rc = fail(SF_EFORMAT, origin, "cfg.json has no architecture");
        goto out;
    }
    copy_field(c->architecture, sizeof c->architecture, arch_s, origin, "architecture");
    if (!strcmp(arch_s, "topk"))
        c->arch = SAE_TOPK;
    else if (!strcmp(arch_s, "jumprelu"))
        c->arch = SAE_JUMPRELU;
    else if (!strcmp(arch_s, "standard"))
        c->arch = SAE_STANDARD;
    else {
        rc = fail(SF_EFORMAT, origin,
                  "unknown architecture %s (supported: topk, jumprelu, standard)",
                  printable(arch_s, p, sizeof p));
        goto out;
    }

    if ((rc = json_size(root, "d_in", 1, SAE_IO_MAX_DIM, true, &c->d_in, origin)) ||
        (rc = json_size(root, "d_sae", 1, SAE_IO_MAX_DIM, true, &c->d_sae, origin)))
        goto out;

    /* pre-6 files name the nonlinearity separately: "standard" + activation_fn_str "topk"
     * with activation_fn_kwargs {"k": K} is a TopK SAE; anything but relu/topk is not ours */
    const cJSON *fn = jget(root, "activation_fn_str");
    if (!fn || cJSON_IsNull(fn)) fn = jget(root, "activation_fn");
    bool k_from_kwargs = false;
    if (fn && !cJSON_IsNull(fn) && c->arch == SAE_STANDARD) {
        if (!cJSON_IsString(fn) || !fn->valuestring) {
            rc = fail(SF_EFORMAT, origin, "activation_fn_str is not a string");
            goto out;
        }
        if (!strcmp(fn->valuestring, "topk")) {
            c->arch = SAE_TOPK;
            k_from_kwargs = true;
        } else if (strcmp(fn->valuestring, "relu") != 0) {
            rc = fail(SF_EUNSUP, origin, "activation function %s is not supported",
                      printable(fn->valuestring, p, sizeof p));
            goto out;
        }
    }
    bool finetune = false;
    if ((rc = json_bool(root, "finetuning_scaling_factor", &finetune, origin))) goto out;
    if (finetune) {
        rc = fail(SF_EUNSUP, origin, "finetuning_scaling_factor=true is not supported");
        goto out;
    }
    if (c->arch == SAE_TOPK) {
        if (k_from_kwargs) {
            const cJSON *kw = jget(root, "activation_fn_kwargs");
            if (!cJSON_IsObject(kw)) {
                rc = fail(SF_EFORMAT, origin, "topk activation without activation_fn_kwargs");
                goto out;
            }
            if ((rc = json_size(kw, "k", 1, c->d_sae, true, &c->k, origin))) goto out;
        } else if ((rc = json_size(root, "k", 1, c->d_sae, true, &c->k, origin))) {
            goto out;
        }
        bool rescale = false;
        if ((rc = json_bool(root, "rescale_acts_by_decoder_norm", &rescale, origin))) goto out;
        if (rescale) {
            rc = fail(SF_EUNSUP, origin, "rescale_acts_by_decoder_norm=true is not supported");
            goto out;
        }
    }
    snprintf(c->dtype, sizeof c->dtype, "float32");
    if ((rc = json_str(root, "dtype", c->dtype, sizeof c->dtype, origin)) ||
        (rc = json_bool(root, "apply_b_dec_to_input", &c->apply_b_dec_to_input, origin)))
        goto out;

    /* normalize_activations: "none" (or false, as pre-6 files wrote it) */
    const cJSON *norm = jget(root, "normalize_activations");
    if (norm && !cJSON_IsNull(norm)) {
        bool none = false;
        if (cJSON_IsBool(norm))
            none = !cJSON_IsTrue(norm);
        else if (cJSON_IsString(norm) && norm->valuestring)
            none = !strcmp(norm->valuestring, "none");
        else {
            rc = fail(SF_EFORMAT, origin, "normalize_activations is not a string");
            goto out;
        }
        if (!none) {
            rc = fail(SF_EUNSUP, origin,
                      "normalize_activations=%s needs a scale that is not in the files; fold it "
                      "into the weights first",
                      cJSON_IsString(norm) ? printable(norm->valuestring, p, sizeof p) : "true");
            goto out;
        }
    }
    const cJSON *reshape = jget(root, "reshape_activations");
    if (reshape && !cJSON_IsNull(reshape)) {
        if (!cJSON_IsString(reshape) || !reshape->valuestring) {
            rc = fail(SF_EFORMAT, origin, "reshape_activations is not a string");
            goto out;
        }
        if (!strcmp(reshape->valuestring, "hook_z"))
            c->hook_z = true;
        else if (strcmp(reshape->valuestring, "none") != 0) {
            rc = fail(SF_EFORMAT, origin, "unknown reshape_activations %s",
                      printable(reshape->valuestring, p, sizeof p));
            goto out;
        }
    }
    if (pre6)
        log_info("sae_import_old_cfg", "origin=\"%s\" sae_lens_version=%s (pre-6 config)", origin,
                 c->sae_lens_version[0] ? printable(c->sae_lens_version, p, sizeof p) : "none");
out:
    cJSON_Delete(root);
    return rc;
}

int sae_io_parse_saelens_cfg(const char *json, size_t len, struct sae_io_saelens_cfg *out)
{
    return parse_saelens_cfg(json, len, "<memory>", out);
}

/* ---- sparsify cfg.json ---- */

static int parse_sparsify_cfg(const char *json, size_t len, const char *origin,
                              struct sae_io_sparsify_cfg *c)
{
    memset(c, 0, sizeof *c);
    c->normalize_decoder = true;
    int rc = 0;
    cJSON *root = parse_json(json, len, origin, &rc);
    if (!root) return rc;
    char p[64];
    if ((rc = check_object(root, origin, "cfg.json"))) goto out;
    const cJSON *act = jget(root, "activation");
    if (act && !cJSON_IsNull(act)) {
        if (!cJSON_IsString(act) || !act->valuestring) {
            rc = fail(SF_EFORMAT, origin, "activation is not a string");
            goto out;
        }
        if (strcmp(act->valuestring, "topk") != 0) {
            rc = fail(strcmp(act->valuestring, "groupmax") ? SF_EFORMAT : SF_EUNSUP, origin,
                      "activation %s is not supported (topk only)",
                      printable(act->valuestring, p, sizeof p));
            goto out;
        }
    }
    size_t num_latents = 0, ef = 0;
    if ((rc = json_size(root, "d_in", 1, SAE_IO_MAX_DIM, true, &c->d_in, origin))) goto out;
    rc = json_size(root, "num_latents", 0, SAE_IO_MAX_DIM, false, &num_latents, origin);
    if (rc < 0) goto out;
    rc = json_size(root, "expansion_factor", 0, SAE_IO_MAX_DIM, false, &ef, origin);
    if (rc < 0) goto out;
    rc = 0;
    c->expansion_factor = (int64_t)ef;
    if (num_latents) {
        c->n = num_latents;
    } else {
        if (!size_mul_ok(c->d_in, ef, &c->n) || c->n == 0 || c->n > SAE_IO_MAX_DIM) {
            rc = fail(SF_EFORMAT, origin,
                      "num_latents is 0 and d_in * expansion_factor (%zu * %zu) is not a valid "
                      "latent count",
                      c->d_in, ef);
            goto out;
        }
    }
    if ((rc = json_size(root, "k", 1, c->n, true, &c->k, origin)) ||
        (rc = json_bool(root, "normalize_decoder", &c->normalize_decoder, origin)) ||
        (rc = json_bool(root, "multi_topk", &c->multi_topk, origin)))
        goto out;
    bool skip = false, transcode = false;
    if ((rc = json_bool(root, "skip_connection", &skip, origin)) ||
        (rc = json_bool(root, "transcode", &transcode, origin)))
        goto out;
    if (skip || transcode) {
        rc = fail(SF_EUNSUP, origin, "%s sparse coders are not supported",
                  skip ? "skip_connection" : "transcoder");
        goto out;
    }
out:
    cJSON_Delete(root);
    return rc;
}

int sae_io_parse_sparsify_cfg(const char *json, size_t len, struct sae_io_sparsify_cfg *out)
{
    return parse_sparsify_cfg(json, len, "<memory>", out);
}

/* ---- tensors ---- */

/* Finds `name` with exactly the shape [d0] or [d0, d1] (d1 = 0 for 1-D) and a float
 * dtype. */
static int find_tensor(const struct safetensors *st, const char *name, size_t d0, size_t d1,
                       const char *origin, const struct st_tensor **out)
{
    const struct st_tensor *t = safetensors_find(st, name);
    if (!t) return fail(SF_EFORMAT, origin, "weights have no tensor %s", name);
    size_t ndim = d1 ? 2 : 1;
    bool ok = t->ndim == ndim && t->shape[0] >= 0 && (uint64_t)t->shape[0] == d0 &&
              (ndim == 1 || (t->shape[1] >= 0 && (uint64_t)t->shape[1] == d1));
    if (!ok) {
        char got[96] = "[";
        size_t off = 1;
        for (size_t i = 0; i < t->ndim && i < ST_MAX_DIMS && off < sizeof got - 24; i++)
            off += (size_t)snprintf(got + off, sizeof got - off, "%s%lld", i ? ", " : "",
                                    (long long)t->shape[i]);
        snprintf(got + off, sizeof got - off, "]");
        if (d1)
            return fail(SF_EFORMAT, origin, "tensor %s has shape %s, cfg says [%zu, %zu]", name,
                        got, d0, d1);
        return fail(SF_EFORMAT, origin, "tensor %s has shape %s, cfg says [%zu]", name, got, d0);
    }
    if (t->dtype != ST_F32 && t->dtype != ST_F16 && t->dtype != ST_BF16 && t->dtype != ST_F64)
        return fail(SF_EFORMAT, origin, "tensor %s has dtype %s (want F32, F16, BF16 or F64)", name,
                    safetensors_dtype_name(t->dtype) ? safetensors_dtype_name(t->dtype) : "?");
    *out = t;
    return 0;
}

/* Converts to float32 and checks every value is finite. */
static int read_tensor(const struct st_tensor *t, float *dst, const char *origin)
{
    int rc = safetensors_tensor_to_f32(t, dst, t->numel);
    if (rc) return fail(SF_EFORMAT, origin, "tensor %s could not be converted", t->name);
    for (size_t i = 0; i < t->numel; i++)
        if (!isfinite(dst[i]))
            return fail(SF_EFORMAT, origin, "tensor %s has a non-finite value at %zu", t->name, i);
    return 0;
}

static void warn_unknown_tensors(const struct safetensors *st, const char *const *known,
                                 const char *origin)
{
    for (size_t i = 0; i < safetensors_count(st); i++) {
        const char *name = safetensors_at(st, i)->name;
        bool found = false;
        for (size_t j = 0; known[j]; j++) found |= !strcmp(name, known[j]);
        if (!found) {
            char p[64];
            log_warn("sae_import_extra_tensor", "origin=\"%s\" tensor=\"%s\" (ignored)", origin,
                     printable(name, p, sizeof p));
        }
    }
}

static void info_dtype(struct sae_io_info *info, const struct st_tensor *t)
{
    if (!info) return;
    const char *n = safetensors_dtype_name(t->dtype);
    snprintf(info->weights_dtype, sizeof info->weights_dtype, "%s", n ? n : "?");
}

/* ---- SAELens import ---- */

static int saelens_build(const char *origin, const struct sae_io_saelens_cfg *c,
                         const struct safetensors *st, struct sae **out, struct sae_io_info *info)
{
    const size_t d = c->d_in, n = c->d_sae;
    const struct st_tensor *tw_enc, *tb_enc, *tw_dec, *tb_dec, *tthr = NULL;
    int rc;
    if ((rc = find_tensor(st, "W_enc", d, n, origin, &tw_enc)) ||
        (rc = find_tensor(st, "b_enc", n, 0, origin, &tb_enc)) ||
        (rc = find_tensor(st, "W_dec", n, d, origin, &tw_dec)) ||
        (rc = find_tensor(st, "b_dec", d, 0, origin, &tb_dec)))
        return rc;
    if (c->arch == SAE_JUMPRELU && (rc = find_tensor(st, "threshold", n, 0, origin, &tthr)))
        return rc;
    /* pre-6 files may carry scaling_factor; SAELens drops it when it is all ones */
    const struct st_tensor *tscale = safetensors_find(st, "scaling_factor");
    if (tscale && (rc = find_tensor(st, "scaling_factor", n, 0, origin, &tscale))) return rc;
    static const char *const known_topk[] = {"W_enc", "b_enc",          "W_dec",
                                             "b_dec", "scaling_factor", NULL};
    static const char *const known_jr[] = {"W_enc",     "b_enc",          "W_dec", "b_dec",
                                           "threshold", "scaling_factor", NULL};
    warn_unknown_tensors(st, c->arch == SAE_JUMPRELU ? known_jr : known_topk, origin);

    /* shapes match data that is present, so these sizes are bounded by the input */
    struct sae *sae = sae_new(c->arch, d, n, c->k);
    float *tmp = malloc(tw_enc->numel * sizeof *tmp);
    if (!sae || !tmp) {
        rc = fail(SF_ENOMEM, origin, "out of memory for d_in=%zu d_sae=%zu", d, n);
        goto out;
    }
    if ((rc = read_tensor(tw_enc, tmp, origin)) || (rc = read_tensor(tb_enc, sae->b_enc, origin)) ||
        (rc = read_tensor(tw_dec, sae->W_dec, origin)) ||
        (rc = read_tensor(tb_dec, sae->b_dec, origin)) ||
        (tthr && (rc = read_tensor(tthr, sae->threshold, origin))))
        goto out;
    if (tscale) {
        /* b_enc holds n floats we are about to overwrite anyway: check the scale there */
        if ((rc = read_tensor(tscale, sae->b_enc, origin))) goto out;
        for (size_t i = 0; i < n; i++) {
            if (sae->b_enc[i] != 1.0f) {
                rc = fail(SF_EUNSUP, origin, "scaling_factor[%zu] = %g is not 1 (not supported)", i,
                          (double)sae->b_enc[i]);
                goto out;
            }
        }
        if ((rc = read_tensor(tb_enc, sae->b_enc, origin))) goto out;
    }
    /* SAELens W_enc is [d_in, d_sae] (x @ W_enc); ours is one row per latent */
    for (size_t j = 0; j < d; j++)
        for (size_t i = 0; i < n; i++) sae->W_enc[i * d + j] = tmp[j * n + i];
    if (!c->apply_b_dec_to_input) {
        /* a = x W_enc + b_enc = W_enc (x - b_dec) + (b_enc + W_enc b_dec) */
        for (size_t i = 0; i < n; i++) {
            double acc = sae->b_enc[i];
            for (size_t j = 0; j < d; j++) acc += (double)sae->W_enc[i * d + j] * sae->b_dec[j];
            sae->b_enc[i] = (float)acc;
            if (!isfinite(sae->b_enc[i])) {
                rc = fail(SF_EFORMAT, origin, "folding b_dec into b_enc overflows at %zu", i);
                goto out;
            }
        }
        log_info("sae_import_fold", "origin=\"%s\" apply_b_dec_to_input=false folded into b_enc",
                 origin);
    }
    sae->meta = c->meta;
    info_dtype(info, tw_enc);
    *out = sae;
    sae = NULL;
out:
    free(tmp);
    sae_destroy(&sae);
    return rc;
}

static void info_from_saelens(struct sae_io_info *info, const struct sae_io_saelens_cfg *c)
{
    if (!info) return;
    info->layout = SAE_IO_SAELENS;
    snprintf(info->architecture, sizeof info->architecture, "%s", c->architecture);
    snprintf(info->cfg_dtype, sizeof info->cfg_dtype, "%s", c->dtype);
    snprintf(info->sae_lens_version, sizeof info->sae_lens_version, "%s", c->sae_lens_version);
}

int sae_io_import_saelens_mem(const char *cfg_json, size_t cfg_len, const void *weights,
                              size_t weights_len, struct sae **out)
{
    *out = NULL;
    const char *origin = "<memory>";
    struct sae_io_saelens_cfg c;
    int rc = parse_saelens_cfg(cfg_json, cfg_len, origin, &c);
    if (rc) return rc;
    struct safetensors *st = NULL;
    rc = safetensors_open_mem(weights, weights_len, &st);
    if (rc)
        return fail(SF_EFORMAT, origin, "sae_weights.safetensors is not valid (%s)",
                    sf_strerror(rc));
    rc = saelens_build(origin, &c, st, out, NULL);
    safetensors_close(&st);
    return rc;
}

static int read_cfg_file(const char *dir, const char *name, char **text, size_t *len)
{
    char path[PATH_MAX];
    if (!path_join(path, sizeof path, dir, name)) return fail(SF_EINVAL, dir, "path too long");
    if (!is_file(path)) return fail(SF_EFORMAT, dir, "%s is missing", name);
    int rc = file_read_all(path, SAE_IO_MAX_CFG, text, len);
    if (rc) return fail(SF_EFORMAT, dir, "%s could not be read (%s)", name, sf_strerror(rc));
    return 0;
}

static int open_weights(const char *dir, const char *name, struct safetensors **st)
{
    char path[PATH_MAX];
    if (!path_join(path, sizeof path, dir, name)) return fail(SF_EINVAL, dir, "path too long");
    if (!is_file(path)) return fail(SF_EFORMAT, dir, "%s is missing", name);
    int rc = safetensors_open(path, st);
    if (rc) return fail(SF_EFORMAT, dir, "%s is not valid (%s)", name, sf_strerror(rc));
    return 0;
}

static int import_saelens(const char *dir, struct sae **out, struct sae_io_info *info)
{
    *out = NULL;
    if (!is_dir(dir)) return fail(SF_EIO, dir, "not a directory");
    char *text = NULL;
    size_t len = 0;
    struct safetensors *st = NULL;
    struct sae_io_saelens_cfg c;
    int rc = read_cfg_file(dir, SAE_IO_SAELENS_CFG, &text, &len);
    if (rc) return rc;
    rc = parse_saelens_cfg(text, len, dir, &c);
    free(text);
    if (rc) return rc;
    if ((rc = open_weights(dir, SAE_IO_SAELENS_WEIGHTS, &st))) return rc;
    rc = saelens_build(dir, &c, st, out, info);
    safetensors_close(&st);
    if (rc) return rc;
    info_from_saelens(info, &c);
    if (info) {
        char sp[PATH_MAX];
        info->has_sparsity = path_join(sp, sizeof sp, dir, SAE_IO_SAELENS_SPARSITY) && is_file(sp);
    }
    log_info("sae_imported", "layout=saelens dir=\"%s\" arch=%s d_in=%zu d_sae=%zu", dir,
             sae_arch_name((*out)->arch), (*out)->d_in, (*out)->n);
    return 0;
}

int sae_io_import_saelens(const char *dir, struct sae **out)
{
    return import_saelens(dir, out, NULL);
}

int sae_io_read_sparsity(const char *dir, size_t n, float *log10_density)
{
    char path[PATH_MAX];
    if (!path_join(path, sizeof path, dir, SAE_IO_SAELENS_SPARSITY))
        return fail(SF_EINVAL, dir, "path too long");
    if (!is_file(path)) return SF_NOTFOUND;
    struct safetensors *st = NULL;
    int rc = safetensors_open(path, &st);
    if (rc)
        return fail(SF_EFORMAT, dir, "%s is not valid (%s)", SAE_IO_SAELENS_SPARSITY,
                    sf_strerror(rc));
    const struct st_tensor *t;
    if (!(rc = find_tensor(st, "sparsity", n, 0, dir, &t))) {
        if (safetensors_tensor_to_f32(t, log10_density, n) != 0) {
            rc = fail(SF_EFORMAT, dir, "sparsity could not be converted");
        } else {
            for (size_t i = 0; i < n; i++) {
                if (isnan(log10_density[i]) || log10_density[i] > 1e-3f) {
                    rc = fail(SF_EFORMAT, dir, "sparsity[%zu] is not a log10 density <= 0", i);
                    break;
                }
            }
        }
    }
    safetensors_close(&st);
    return rc;
}

/* ---- sparsify import ---- */

static const char *const sparsify_known[] = {"encoder.weight", "encoder.bias", "W_dec", "b_dec",
                                             NULL};

static int sparsify_build(const char *origin, const struct sae_io_sparsify_cfg *c,
                          const struct safetensors *st, const char *hook, struct sae **out,
                          struct sae_io_info *info)
{
    const size_t d = c->d_in, n = c->n;
    const struct st_tensor *tw_enc, *tb_enc, *tw_dec, *tb_dec;
    int rc;
    if ((rc = find_tensor(st, "encoder.weight", n, d, origin, &tw_enc)) ||
        (rc = find_tensor(st, "encoder.bias", n, 0, origin, &tb_enc)) ||
        (rc = find_tensor(st, "W_dec", n, d, origin, &tw_dec)) ||
        (rc = find_tensor(st, "b_dec", d, 0, origin, &tb_dec)))
        return rc;
    warn_unknown_tensors(st, sparsify_known, origin);
    struct sae *sae = sae_new(SAE_TOPK, d, n, c->k);
    if (!sae) return fail(SF_ENOMEM, origin, "out of memory for d_in=%zu n=%zu", d, n);
    if ((rc = read_tensor(tw_enc, sae->W_enc, origin)) ||
        (rc = read_tensor(tb_enc, sae->b_enc, origin)) ||
        (rc = read_tensor(tw_dec, sae->W_dec, origin)) ||
        (rc = read_tensor(tb_dec, sae->b_dec, origin))) {
        sae_destroy(&sae);
        return rc;
    }
    struct sae_meta *m = &sae->meta;
    m->hook_layer = -1;
    m->prepend_bos = true;
    if (hook) copy_field(m->hook_name, sizeof m->hook_name, hook, origin, "hook_name");
    /* provenance saeflow writes into __metadata__ (sparsify itself writes none) */
    const char *v;
    if ((v = safetensors_metadata(st, "saeflow.hook_name")) && *v)
        copy_field(m->hook_name, sizeof m->hook_name, v, origin, "hook_name");
    if ((v = safetensors_metadata(st, "saeflow.model_name")))
        copy_field(m->model_name, sizeof m->model_name, v, origin, "model_name");
    if ((v = safetensors_metadata(st, "saeflow.dataset_path")))
        copy_field(m->dataset_path, sizeof m->dataset_path, v, origin, "dataset_path");
    int64_t iv;
    m->hook_layer = layer_from_hook(m->hook_name);
    if ((v = safetensors_metadata(st, "saeflow.hook_layer")) && parse_i64(v, &iv) == 0 && iv >= -1)
        m->hook_layer = iv;
    if ((v = safetensors_metadata(st, "saeflow.context_size")) && parse_i64(v, &iv) == 0 && iv >= 0)
        m->context_size = iv;
    if ((v = safetensors_metadata(st, "saeflow.prepend_bos"))) m->prepend_bos = !strcmp(v, "true");
    if ((v = safetensors_metadata(st, "saeflow.exclude_special_tokens")))
        m->exclude_special_tokens = !strcmp(v, "true");
    if (info) {
        info->layout = SAE_IO_SPARSIFY;
        snprintf(info->architecture, sizeof info->architecture, "topk");
        info_dtype(info, tw_enc);
    }
    *out = sae;
    return 0;
}

int sae_io_import_sparsify_mem(const char *cfg_json, size_t cfg_len, const void *weights,
                               size_t weights_len, const char *hook, struct sae **out)
{
    *out = NULL;
    const char *origin = "<memory>";
    struct sae_io_sparsify_cfg c;
    int rc = parse_sparsify_cfg(cfg_json, cfg_len, origin, &c);
    if (rc) return rc;
    struct safetensors *st = NULL;
    rc = safetensors_open_mem(weights, weights_len, &st);
    if (rc) return fail(SF_EFORMAT, origin, "sae.safetensors is not valid (%s)", sf_strerror(rc));
    rc = sparsify_build(origin, &c, st, hook, out, NULL);
    safetensors_close(&st);
    return rc;
}

static bool is_sparsify_hook_dir(const char *dir)
{
    char a[PATH_MAX], b[PATH_MAX];
    return path_join(a, sizeof a, dir, SAE_IO_SPARSIFY_CFG) && is_file(a) &&
           path_join(b, sizeof b, dir, SAE_IO_SPARSIFY_WEIGHTS) && is_file(b);
}

static bool is_saelens_dir(const char *dir)
{
    char a[PATH_MAX], b[PATH_MAX];
    return path_join(a, sizeof a, dir, SAE_IO_SAELENS_CFG) && is_file(a) &&
           path_join(b, sizeof b, dir, SAE_IO_SAELENS_WEIGHTS) && is_file(b);
}

/* The only hookpoint directory under `dir` (sparsify's, or a SAELens directory per
 * hook as saeflow-train's --export_dir and `saeflow up` write): 0 (name in `hook`),
 * SF_NOTFOUND, or SF_EINVAL when there are several. */
static int find_single_hook(const char *dir, char *hook, size_t cap, size_t *count)
{
    *count = 0;
    DIR *dp = opendir(dir);
    if (!dp) return SF_NOTFOUND;
    struct dirent *e;
    while ((e = readdir(dp))) {
        /* hidden entries and staging directories of an interrupted export */
        if (e->d_name[0] == '.' || strstr(e->d_name, ".tmp-")) continue;
        char sub[PATH_MAX];
        if (!path_join(sub, sizeof sub, dir, e->d_name) || !is_dir(sub)) continue;
        if (!is_sparsify_hook_dir(sub) && !is_saelens_dir(sub)) continue;
        if (++*count == 1) snprintf(hook, cap, "%s", e->d_name);
    }
    closedir(dp);
    if (*count == 0) return SF_NOTFOUND;
    return *count == 1 ? 0 : SF_EINVAL;
}

static const char *base_name(const char *path, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s", path);
    size_t len = strlen(buf);
    while (len > 1 && buf[len - 1] == '/') buf[--len] = '\0';
    const char *slash = strrchr(buf, '/');
    return slash ? slash + 1 : buf;
}

static int import_sparsify_hook(const char *hook_dir, struct sae **out, struct sae_io_info *info)
{
    char *text = NULL;
    size_t len = 0;
    struct sae_io_sparsify_cfg c;
    int rc = read_cfg_file(hook_dir, SAE_IO_SPARSIFY_CFG, &text, &len);
    if (rc) return rc;
    rc = parse_sparsify_cfg(text, len, hook_dir, &c);
    free(text);
    if (rc) return rc;
    struct safetensors *st = NULL;
    if ((rc = open_weights(hook_dir, SAE_IO_SPARSIFY_WEIGHTS, &st))) return rc;
    char bn[PATH_MAX];
    rc = sparsify_build(hook_dir, &c, st, base_name(hook_dir, bn, sizeof bn), out, info);
    safetensors_close(&st);
    if (rc) return rc;
    log_info("sae_imported", "layout=sparsify dir=\"%s\" d_in=%zu n=%zu k=%zu", hook_dir,
             (*out)->d_in, (*out)->n, (*out)->k);
    return 0;
}

/* path/<hook> for the one hookpoint directory below path; says why not. */
static int single_hook_dir(const char *path, char *out, size_t cap)
{
    char hook[256];
    size_t count;
    int rc = find_single_hook(path, hook, sizeof hook, &count);
    if (rc == SF_NOTFOUND)
        return fail(SF_EFORMAT, path, "no cfg.json here and no hookpoint directory below");
    if (rc) return fail(SF_EINVAL, path, "%zu hookpoint directories: name one", count);
    if (!path_join(out, cap, path, hook)) return fail(SF_EINVAL, path, "path too long");
    return 0;
}

static int import_sparsify(const char *path, struct sae **out, struct sae_io_info *info)
{
    *out = NULL;
    if (!is_dir(path)) return fail(SF_EIO, path, "not a directory");
    char hook_dir[PATH_MAX];
    char cfg[PATH_MAX];
    if (path_join(cfg, sizeof cfg, path, SAE_IO_SPARSIFY_CFG) && is_file(cfg)) {
        snprintf(hook_dir, sizeof hook_dir, "%s", path);
    } else {
        int rc = single_hook_dir(path, hook_dir, sizeof hook_dir);
        if (rc) return rc;
    }
    int rc = import_sparsify_hook(hook_dir, out, info);
    if (!rc && info) snprintf(info->dir, sizeof info->dir, "%s", hook_dir);
    return rc;
}

int sae_io_import_sparsify(const char *path, struct sae **out)
{
    return import_sparsify(path, out, NULL);
}

/* ---- detection ---- */

int sae_io_load_info(const char *path, struct sae **out, struct sae_io_info *info)
{
    *out = NULL;
    if (info) memset(info, 0, sizeof *info);
    if (!path || !*path) return fail(SF_EINVAL, "", "empty path");
    if (!is_dir(path)) return fail(SF_EIO, path, "no such directory");
    char a[PATH_MAX], b[PATH_MAX];
    bool has_cfg = path_join(a, sizeof a, path, SAE_IO_SAELENS_CFG) && is_file(a);
    if (has_cfg && path_join(b, sizeof b, path, SAE_IO_SAELENS_WEIGHTS) && is_file(b)) {
        int rc = import_saelens(path, out, info);
        if (!rc && info) snprintf(info->dir, sizeof info->dir, "%s", path);
        return rc;
    }
    if (has_cfg && !is_sparsify_hook_dir(path))
        return fail(SF_EFORMAT, path, "cfg.json but neither %s nor %s", SAE_IO_SAELENS_WEIGHTS,
                    SAE_IO_SPARSIFY_WEIGHTS);
    if (has_cfg) return import_sparsify(path, out, info);
    /* a folder of hook directories (sparsify root, or an export folder with one
     * SAELens directory per hook): the one below, whichever its layout */
    int rc = single_hook_dir(path, a, sizeof a);
    return rc ? rc : sae_io_load_info(a, out, info);
}

int sae_io_load(const char *path, struct sae **out)
{
    return sae_io_load_info(path, out, NULL);
}

/* ---- export ---- */

static int export_fail(int rc, const char *dir, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int export_fail(int rc, const char *dir, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_error("sae_export_failed", "dir=\"%s\" rc=%s reason=\"%s\"", dir ? dir : "",
              sf_strerror(rc), msg);
    return rc;
}

static bool all_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return false;
    return true;
}

static int check_export(const struct sae *sae, const char *dir)
{
    if (!sae || !dir || !*dir) return export_fail(SF_EINVAL, dir, "no SAE or no directory");
    size_t nd;
    if (sae->d_in == 0 || sae->n == 0 || !size_mul_ok(sae->n, sae->d_in, &nd) ||
        nd > SIZE_MAX / sizeof(float) / 2)
        return export_fail(SF_EINVAL, dir, "bad sizes d_in=%zu n=%zu", sae->d_in, sae->n);
    if (!sae->W_enc || !sae->W_dec || !sae->b_enc || !sae->b_dec)
        return export_fail(SF_EINVAL, dir, "SAE has no weights");
    if ((sae->arch == SAE_JUMPRELU || sae->arch == SAE_BATCHTOPK) && !sae->threshold)
        return export_fail(SF_EINVAL, dir, "%s SAE has no threshold", sae_arch_name(sae->arch));
    if (sae->arch == SAE_TOPK && (sae->k == 0 || sae->k > sae->n))
        return export_fail(SF_EINVAL, dir, "topk k=%zu not in [1, %zu]", sae->k, sae->n);
    if ((unsigned)sae->arch > SAE_JUMPRELU)
        return export_fail(SF_EINVAL, dir, "unknown arch %d", (int)sae->arch);
    if (!isfinite(sae->norm_scale) || !(sae->norm_scale > 0.0f))
        return export_fail(SF_EINVAL, dir, "norm_scale %g is not a positive number",
                           (double)sae->norm_scale);
    if (!all_finite(sae->W_enc, nd) || !all_finite(sae->W_dec, nd) ||
        !all_finite(sae->b_enc, sae->n) || !all_finite(sae->b_dec, sae->d_in) ||
        (sae->threshold && !all_finite(sae->threshold, sae->n)))
        return export_fail(SF_EINVAL, dir, "SAE weights hold a NaN or Inf");
    return 0;
}

/* The weights with norm_scale folded in (W_enc *= s, W_dec /= s, b_dec /= s).
 * enc_t: W_enc transposed to [d_in, n] (SAELens) when `transpose`, else (n, d_in). */
struct folded {
    float *W_enc, *W_dec, *b_dec;
};

static int fold_weights(const struct sae *sae, bool transpose, struct folded *f)
{
    const size_t d = sae->d_in, n = sae->n, nd = n * d;
    const float s = sae->norm_scale;
    f->W_enc = malloc(nd * sizeof(float));
    f->W_dec = malloc(nd * sizeof(float));
    f->b_dec = malloc(d * sizeof(float));
    if (!f->W_enc || !f->W_dec || !f->b_dec) return SF_ENOMEM;
    if (transpose) {
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < d; j++) f->W_enc[j * n + i] = sae->W_enc[i * d + j] * s;
    } else {
        for (size_t t = 0; t < nd; t++) f->W_enc[t] = sae->W_enc[t] * s;
    }
    for (size_t t = 0; t < nd; t++) f->W_dec[t] = sae->W_dec[t] / s;
    for (size_t j = 0; j < d; j++) f->b_dec[j] = sae->b_dec[j] / s;
    if (!all_finite(f->W_enc, nd) || !all_finite(f->W_dec, nd) || !all_finite(f->b_dec, d))
        return SF_ERANGE;
    return 0;
}

static void folded_free(struct folded *f)
{
    free(f->W_enc);
    free(f->W_dec);
    free(f->b_dec);
}

/* Removes the regular files of a directory we created, then the directory. */
static void remove_tree_files(const char *dir)
{
    DIR *dp = opendir(dir);
    if (dp) {
        struct dirent *e;
        while ((e = readdir(dp))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[PATH_MAX];
            if (path_join(p, sizeof p, dir, e->d_name)) unlink(p);
        }
        closedir(dp);
    }
    rmdir(dir);
}

/* `dir` without trailing slashes, into `out`. */
static int clean_dir(const char *dir, char *out, size_t cap)
{
    int w = snprintf(out, cap, "%s", dir);
    if (w < 0 || (size_t)w >= cap) return SF_EINVAL;
    size_t len = strlen(out);
    while (len > 1 && out[len - 1] == '/') out[--len] = '\0';
    if (!strcmp(out, "/") || !strcmp(out, ".") || !strcmp(out, "..")) return SF_EINVAL;
    return 0;
}

/* Creates `<final>.tmp-XXXXXX` beside `final` (parents created). */
static int make_staging(const char *final, char *tmp, size_t cap)
{
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", final);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = '\0';
        if (file_mkdirs(parent, 0755) != 0)
            return export_fail(SF_EIO, final, "cannot create parent %s: %s", parent,
                               strerror(errno));
    }
    int w = snprintf(tmp, cap, "%s.tmp-XXXXXX", final);
    if (w < 0 || (size_t)w >= cap) return export_fail(SF_EINVAL, final, "path too long");
    if (!mkdtemp(tmp)) return export_fail(SF_EIO, final, "mkdtemp: %s", strerror(errno));
    return 0;
}

/* An existing `final` may be replaced only when it holds nothing but `allowed` names. */
static int check_replaceable(const char *final, const char *const *allowed)
{
    DIR *dp = opendir(final);
    if (!dp) return export_fail(SF_EIO, final, "exists but cannot be read: %s", strerror(errno));
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        bool ok = false;
        for (size_t i = 0; allowed[i]; i++) ok |= !strcmp(e->d_name, allowed[i]);
        char p[PATH_MAX], pb[64];
        struct stat st;
        if (ok && path_join(p, sizeof p, final, e->d_name) && lstat(p, &st) == 0 &&
            S_ISREG(st.st_mode))
            continue;
        rc = export_fail(SF_EINVAL, final,
                         "refusing to replace a directory that holds %s (not an SAE export)",
                         printable(e->d_name, pb, sizeof pb));
        break;
    }
    closedir(dp);
    return rc;
}

/* Moves the finished staging directory to `final`: a plain rename when `final` does
 * not exist, else an atomic exchange (renameat2) and removal of the old files. */
static int install_dir(const char *tmp, const char *final, const char *const *allowed)
{
    struct stat st;
    /* mkdtemp and the atomic file writers create owner-only modes; an export is meant
     * to be shared (uploads, a web UI under another user) */
    if (chmod(tmp, 0755) != 0) return export_fail(SF_EIO, final, "chmod: %s", strerror(errno));
    for (size_t i = 0; allowed[i]; i++) {
        char p[PATH_MAX];
        if (path_join(p, sizeof p, tmp, allowed[i]) && is_file(p) && chmod(p, 0644) != 0)
            return export_fail(SF_EIO, final, "chmod: %s", strerror(errno));
    }
    if (file_fsync_dir(tmp) != 0) return export_fail(SF_EIO, final, "fsync of %s failed", tmp);
    if (lstat(final, &st) != 0) {
        if (errno != ENOENT) return export_fail(SF_EIO, final, "stat: %s", strerror(errno));
        if (rename(tmp, final) != 0)
            return export_fail(SF_EIO, final, "rename: %s", strerror(errno));
    } else {
        if (!S_ISDIR(st.st_mode))
            return export_fail(SF_EINVAL, final, "exists and is not a directory");
        int rc = check_replaceable(final, allowed);
        if (rc) return rc;
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_EXCHANGE) == 0) {
            remove_tree_files(tmp); /* now the old export */
        } else if (errno == EINVAL || errno == ENOSYS) {
            /* file system without RENAME_EXCHANGE: remove, then rename (a moment with no
             * directory, never a half-written one) */
            remove_tree_files(final);
            if (rename(tmp, final) != 0)
                return export_fail(SF_EIO, final, "rename: %s", strerror(errno));
        } else {
            return export_fail(SF_EIO, final, "renameat2: %s", strerror(errno));
        }
    }
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", final);
    char *slash = strrchr(parent, '/');
    if (!slash)
        snprintf(parent, sizeof parent, ".");
    else if (slash == parent)
        parent[1] = '\0';
    else
        *slash = '\0';
    file_fsync_dir(parent);
    return 0;
}

static int write_json(const cJSON *root, const char *dir, const char *name)
{
    char *text = cJSON_PrintUnformatted(root);
    if (!text) return export_fail(SF_ENOMEM, dir, "cannot print %s", name);
    char path[PATH_MAX];
    int rc = path_join(path, sizeof path, dir, name) ? 0 : SF_EINVAL;
    if (!rc) rc = file_write_atomic(path, text, strlen(text));
    cJSON_free(text);
    if (rc) return export_fail(rc, dir, "cannot write %s", name);
    return 0;
}

static cJSON *null_or_string(const char *s)
{
    return s && *s ? cJSON_CreateString(s) : cJSON_CreateNull();
}

static cJSON *saelens_cfg_json(const struct sae *sae)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_CreateObject();
    if (!root || !meta) {
        cJSON_Delete(root);
        cJSON_Delete(meta);
        return NULL;
    }
    const bool topk = sae->arch == SAE_TOPK;
    const struct sae_meta *m = &sae->meta;
    /* SAEConfig fields (sae.py) in declaration order, then the architecture's */
    cJSON_AddStringToObject(root, "architecture",
                            topk                        ? "topk"
                            : sae->arch == SAE_STANDARD ? "standard"
                                                        : "jumprelu");
    cJSON_AddNumberToObject(root, "d_in", (double)sae->d_in);
    cJSON_AddNumberToObject(root, "d_sae", (double)sae->n);
    cJSON_AddStringToObject(root, "dtype", "float32");
    cJSON_AddStringToObject(root, "device", "cpu");
    cJSON_AddBoolToObject(root, "apply_b_dec_to_input", 1);
    cJSON_AddStringToObject(root, "normalize_activations", "none"); /* norm_scale folded */
    cJSON_AddStringToObject(root, "reshape_activations", "none");
    if (topk) {
        cJSON_AddNumberToObject(root, "k", (double)sae->k);
        cJSON_AddBoolToObject(root, "rescale_acts_by_decoder_norm", 0);
    }
    /* SAEMetadata: only fields SAELens 6.0's dataclass declares, so every v6 loads it */
    cJSON_AddStringToObject(meta, "sae_lens_version", SAE_IO_SAELENS_VERSION);
    cJSON_AddItemToObject(meta, "sae_lens_training_version", cJSON_CreateNull());
    cJSON_AddItemToObject(meta, "model_name", null_or_string(m->model_name));
    cJSON_AddStringToObject(meta, "model_class_name", "HookedTransformer");
    cJSON_AddItemToObject(meta, "hook_name", null_or_string(m->hook_name));
    if (m->hook_layer >= 0)
        cJSON_AddNumberToObject(meta, "hook_layer", (double)m->hook_layer);
    else
        cJSON_AddItemToObject(meta, "hook_layer", cJSON_CreateNull());
    cJSON_AddItemToObject(meta, "hook_head_index", cJSON_CreateNull());
    cJSON_AddItemToObject(meta, "model_from_pretrained_kwargs", cJSON_CreateObject());
    cJSON_AddBoolToObject(meta, "prepend_bos", m->prepend_bos);
    cJSON_AddBoolToObject(meta, "exclude_special_tokens", m->exclude_special_tokens);
    cJSON_AddItemToObject(meta, "neuronpedia_id", cJSON_CreateNull());
    if (m->context_size > 0)
        cJSON_AddNumberToObject(meta, "context_size", (double)m->context_size);
    else
        cJSON_AddItemToObject(meta, "context_size", cJSON_CreateNull());
    cJSON_AddItemToObject(meta, "dataset_path", null_or_string(m->dataset_path));
    cJSON_AddItemToObject(root, "metadata", meta);
    return root;
}

static int write_safetensors(struct st_writer *w, const char *dir, const char *name)
{
    char path[PATH_MAX];
    if (!path_join(path, sizeof path, dir, name))
        return export_fail(SF_EINVAL, dir, "path too long");
    int rc = st_writer_write(w, path);
    if (rc) return export_fail(rc, dir, "cannot write %s", name);
    return 0;
}

static const char *const saelens_files[] = {SAE_IO_SAELENS_CFG, SAE_IO_SAELENS_WEIGHTS,
                                            SAE_IO_SAELENS_SPARSITY, NULL};

int sae_io_export_saelens(const struct sae *sae, const char *dir, const float *log10_density)
{
    int rc = check_export(sae, dir);
    if (rc) return rc;
    const size_t d = sae->d_in, n = sae->n;
    if (log10_density) {
        for (size_t i = 0; i < n; i++)
            if (isnan(log10_density[i]) || log10_density[i] == INFINITY)
                return export_fail(SF_EINVAL, dir, "log10 density %zu is NaN or +inf", i);
    }
    char final[PATH_MAX], tmp[PATH_MAX];
    if (clean_dir(dir, final, sizeof final)) return export_fail(SF_EINVAL, dir, "bad directory");
    struct folded f = {0};
    struct st_writer *w = NULL, *ws = NULL;
    cJSON *cfg = NULL;
    bool staged = false;
    if ((rc = fold_weights(sae, true, &f))) {
        rc = export_fail(rc, dir,
                         rc == SF_ENOMEM ? "out of memory" : "folding norm_scale overflows");
        goto out;
    }
    if (!(cfg = saelens_cfg_json(sae)) || !(w = st_writer_new())) {
        rc = export_fail(SF_ENOMEM, dir, "out of memory");
        goto out;
    }
    const int64_t s_enc[2] = {(int64_t)d, (int64_t)n}, s_dec[2] = {(int64_t)n, (int64_t)d};
    const int64_t s_n[1] = {(int64_t)n}, s_d[1] = {(int64_t)d};
    if ((rc = st_writer_add_f32(w, "W_enc", ST_F32, s_enc, 2, f.W_enc)) ||
        (rc = st_writer_add_f32(w, "b_enc", ST_F32, s_n, 1, sae->b_enc)) ||
        (rc = st_writer_add_f32(w, "W_dec", ST_F32, s_dec, 2, f.W_dec)) ||
        (rc = st_writer_add_f32(w, "b_dec", ST_F32, s_d, 1, f.b_dec)) ||
        (sae->threshold && sae->arch != SAE_TOPK && sae->arch != SAE_STANDARD &&
         (rc = st_writer_add_f32(w, "threshold", ST_F32, s_n, 1, sae->threshold))) ||
        (rc = st_writer_set_metadata(w, "format", "pt"))) {
        rc = export_fail(rc, dir, "cannot stage tensors");
        goto out;
    }
    if ((rc = make_staging(final, tmp, sizeof tmp))) goto out;
    staged = true;
    if ((rc = write_json(cfg, tmp, SAE_IO_SAELENS_CFG)) ||
        (rc = write_safetensors(w, tmp, SAE_IO_SAELENS_WEIGHTS)))
        goto out;
    if (log10_density) {
        if (!(ws = st_writer_new())) {
            rc = export_fail(SF_ENOMEM, dir, "out of memory");
            goto out;
        }
        if ((rc = st_writer_add_f32(ws, "sparsity", ST_F32, s_n, 1, log10_density)) ||
            (rc = st_writer_set_metadata(ws, "format", "pt"))) {
            rc = export_fail(rc, dir, "cannot stage sparsity");
            goto out;
        }
        if ((rc = write_safetensors(ws, tmp, SAE_IO_SAELENS_SPARSITY))) goto out;
    }
    if ((rc = install_dir(tmp, final, saelens_files))) goto out;
    staged = false;
    log_info("sae_exported", "layout=saelens dir=\"%s\" arch=%s d_in=%zu d_sae=%zu norm_scale=%g",
             final, sae_arch_name(sae->arch), d, n, (double)sae->norm_scale);
out:
    if (rc && staged) remove_tree_files(tmp);
    st_writer_destroy(&w);
    st_writer_destroy(&ws);
    cJSON_Delete(cfg);
    folded_free(&f);
    return rc;
}

/* One path component we can create: not empty, no '/', not "." or "..", printable. */
static bool safe_component(const char *s)
{
    if (!s[0] || !strcmp(s, ".") || !strcmp(s, "..")) return false;
    for (const char *p = s; *p; p++)
        if (*p == '/' || (unsigned char)*p < 0x20 || *p == 0x7f) return false;
    return true;
}

static bool rows_unit_norm(const float *W, size_t n, size_t d)
{
    for (size_t i = 0; i < n; i++) {
        double s = 0.0;
        for (size_t j = 0; j < d; j++) s += (double)W[i * d + j] * W[i * d + j];
        if (fabs(sqrt(s) - 1.0) > 1e-4) return false;
    }
    return true;
}

static const char *const sparsify_files[] = {SAE_IO_SPARSIFY_CFG, SAE_IO_SPARSIFY_WEIGHTS, NULL};

int sae_io_export_sparsify(const struct sae *sae, const char *dir)
{
    int rc = check_export(sae, dir);
    if (rc) return rc;
    if (sae->arch != SAE_TOPK)
        return export_fail(SF_EUNSUP, dir, "sparsify holds topk SAEs only, not %s",
                           sae_arch_name(sae->arch));
    if (!safe_component(sae->meta.hook_name))
        return export_fail(SF_EINVAL, dir, "hook_name is not a usable directory name");
    const size_t d = sae->d_in, n = sae->n;
    char root[PATH_MAX], final[PATH_MAX], tmp[PATH_MAX];
    if (clean_dir(dir, root, sizeof root) ||
        !path_join(final, sizeof final, root, sae->meta.hook_name))
        return export_fail(SF_EINVAL, dir, "bad directory");
    struct folded f = {0};
    struct st_writer *w = NULL;
    cJSON *cfg = NULL;
    bool staged = false;
    if ((rc = fold_weights(sae, false, &f))) {
        rc = export_fail(rc, dir,
                         rc == SF_ENOMEM ? "out of memory" : "folding norm_scale overflows");
        goto out;
    }
    if (!(cfg = cJSON_CreateObject()) || !(w = st_writer_new())) {
        rc = export_fail(SF_ENOMEM, dir, "out of memory");
        goto out;
    }
    /* SparseCoderConfig fields (sparsify/config.py) plus d_in (save_to_disk) */
    cJSON_AddStringToObject(cfg, "activation", "topk");
    cJSON_AddNumberToObject(cfg, "expansion_factor", (double)(n / d ? n / d : 1));
    cJSON_AddBoolToObject(cfg, "normalize_decoder", rows_unit_norm(f.W_dec, n, d));
    cJSON_AddNumberToObject(cfg, "num_latents", (double)n);
    cJSON_AddNumberToObject(cfg, "k", (double)sae->k);
    cJSON_AddBoolToObject(cfg, "multi_topk", 0);
    cJSON_AddBoolToObject(cfg, "skip_connection", 0);
    cJSON_AddBoolToObject(cfg, "transcode", 0);
    cJSON_AddNumberToObject(cfg, "d_in", (double)d);

    const struct sae_meta *m = &sae->meta;
    char num[32];
    const int64_t s_nd[2] = {(int64_t)n, (int64_t)d};
    const int64_t s_n[1] = {(int64_t)n}, s_d[1] = {(int64_t)d};
    if ((rc = st_writer_add_f32(w, "encoder.weight", ST_F32, s_nd, 2, f.W_enc)) ||
        (rc = st_writer_add_f32(w, "encoder.bias", ST_F32, s_n, 1, sae->b_enc)) ||
        (rc = st_writer_add_f32(w, "W_dec", ST_F32, s_nd, 2, f.W_dec)) ||
        (rc = st_writer_add_f32(w, "b_dec", ST_F32, s_d, 1, f.b_dec)) ||
        (rc = st_writer_set_metadata(w, "format", "pt")) ||
        (rc = st_writer_set_metadata(w, "saeflow.model_name", m->model_name)) ||
        (rc = st_writer_set_metadata(w, "saeflow.hook_name", m->hook_name)) ||
        (rc = st_writer_set_metadata(w, "saeflow.dataset_path", m->dataset_path)) ||
        (snprintf(num, sizeof num, "%lld", (long long)m->hook_layer),
         rc = st_writer_set_metadata(w, "saeflow.hook_layer", num)) ||
        (snprintf(num, sizeof num, "%lld", (long long)m->context_size),
         rc = st_writer_set_metadata(w, "saeflow.context_size", num)) ||
        (rc =
             st_writer_set_metadata(w, "saeflow.prepend_bos", m->prepend_bos ? "true" : "false")) ||
        (rc = st_writer_set_metadata(w, "saeflow.exclude_special_tokens",
                                     m->exclude_special_tokens ? "true" : "false"))) {
        rc = export_fail(rc, dir, "cannot stage tensors");
        goto out;
    }
    if ((rc = make_staging(final, tmp, sizeof tmp))) goto out;
    staged = true;
    if ((rc = write_json(cfg, tmp, SAE_IO_SPARSIFY_CFG)) ||
        (rc = write_safetensors(w, tmp, SAE_IO_SPARSIFY_WEIGHTS)) ||
        (rc = install_dir(tmp, final, sparsify_files)))
        goto out;
    staged = false;
    log_info("sae_exported", "layout=sparsify dir=\"%s\" d_in=%zu n=%zu k=%zu", final, d, n,
             sae->k);
out:
    if (rc && staged) remove_tree_files(tmp);
    st_writer_destroy(&w);
    cJSON_Delete(cfg);
    folded_free(&f);
    return rc;
}

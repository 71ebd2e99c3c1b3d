/* sae_io: SAE directories that other tools read and write.
 *
 * SAELens v6 (what SAELens, Neuronpedia and SAEDashboard load):
 *   <dir>/cfg.json                  architecture, d_in, d_sae, k (topk), dtype, device,
 *                                   apply_b_dec_to_input, normalize_activations,
 *                                   reshape_activations, rescale_acts_by_decoder_norm
 *                                   (topk), metadata {sae_lens_version, model_name,
 *                                   hook_name, context_size, prepend_bos, ...}
 *   <dir>/sae_weights.safetensors   W_enc [d_in, d_sae] (x @ W_enc: our W_enc
 *                                   transposed), b_enc [d_sae], W_dec [d_sae, d_in],
 *                                   b_dec [d_in], threshold [d_sae] (jumprelu)
 *   <dir>/sparsity.safetensors      optional: sparsity [d_sae] = log10 firing density
 * EleutherAI sparsify (topk only):
 *   <dir>/<hookpoint>/cfg.json      activation "topk", k, num_latents, expansion_factor,
 *                                   normalize_decoder, multi_topk, skip_connection,
 *                                   transcode, d_in
 *   <dir>/<hookpoint>/sae.safetensors  encoder.weight [n, d], encoder.bias [n],
 *                                   W_dec [n, d], b_dec [d]
 *
 * Exports fold norm_scale into the weights (W_enc *= s, W_dec /= s, b_dec /= s), so
 * the exported SAE computes the same x -> x_hat on raw activations; BatchTopK exports
 * as SAELens "jumprelu" with its global threshold per latent (imports as jumprelu).
 * Exports are all-or-nothing: files are written into a temporary directory beside
 * the target which is then renamed into place (an existing target is replaced only
 * if it holds nothing but files of this layout).
 *
 * Imports validate everything (files present, JSON types, required keys, tensor names,
 * shapes against the cfg, float dtypes F32/F16/BF16/F64, finite values) and return
 * SF_EFORMAT with one log line saying why; options that saeflow cannot represent
 * (normalize_activations other than "none", rescale_acts_by_decoder_norm, sparsify
 * skip connections / transcoders / groupmax) return SF_EUNSUP. Imported SAEs have
 * norm_scale = 1 and are freed by the caller with sae_destroy(). */
#ifndef SAEFLOW_SAE_IO_H
#define SAEFLOW_SAE_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sae/sae.h"

#define SAE_IO_SAELENS_VERSION "6.5.0"    /* written as metadata.sae_lens_version */
#define SAE_IO_MAX_CFG         (1u << 20) /* cfg.json size cap, bytes */
#define SAE_IO_MAX_DIM         (1u << 30) /* cap on d_in and d_sae from a cfg */

#define SAE_IO_SAELENS_CFG      "cfg.json"
#define SAE_IO_SAELENS_WEIGHTS  "sae_weights.safetensors"
#define SAE_IO_SAELENS_SPARSITY "sparsity.safetensors"
#define SAE_IO_SPARSIFY_CFG     "cfg.json"
#define SAE_IO_SPARSIFY_WEIGHTS "sae.safetensors"

enum sae_io_layout { SAE_IO_SAELENS = 1, SAE_IO_SPARSIFY = 2 };

/* A parsed SAELens cfg.json. Metadata strings are truncated (with a warning) to the
 * sizes of struct sae_meta; absent ones are empty. */
struct sae_io_saelens_cfg {
    enum sae_arch arch;    /* topk, standard or jumprelu */
    size_t d_in, d_sae, k; /* k: topk only, else 0 */
    char architecture[32]; /* as written */
    char dtype[32];        /* as written ("float32" when absent) */
    bool apply_b_dec_to_input;
    bool hook_z; /* reshape_activations == "hook_z" */
    char sae_lens_version[32];
    struct sae_meta meta;
};
/* Parses and validates cfg.json text (need not be NUL-terminated). 0, SF_EFORMAT or
 * SF_EUNSUP, logged. */
int sae_io_parse_saelens_cfg(const char *json, size_t len, struct sae_io_saelens_cfg *out);

struct sae_io_sparsify_cfg {
    size_t d_in, n, k; /* n = num_latents, or d_in * expansion_factor when 0 */
    int64_t expansion_factor;
    bool normalize_decoder, multi_topk;
};
int sae_io_parse_sparsify_cfg(const char *json, size_t len, struct sae_io_sparsify_cfg *out);

/* Writes a SAELens v6 directory at `dir` (created; parent directories too).
 * `log10_density` (n values, NaN and +inf rejected) writes sparsity.safetensors;
 * NULL writes none. 0 or SF_EINVAL / SF_EIO / SF_ENOMEM. */
int sae_io_export_saelens(const struct sae *sae, const char *dir, const float *log10_density);
/* Reads a SAELens directory into a new SAE (the caller owns *out). */
int sae_io_import_saelens(const char *dir, struct sae **out);
/* The same from memory: cfg.json text and the bytes of sae_weights.safetensors. */
int sae_io_import_saelens_mem(const char *cfg_json, size_t cfg_len, const void *weights,
                              size_t weights_len, struct sae **out);
/* Reads <dir>/sparsity.safetensors into `log10_density` (n values): 0, SF_NOTFOUND when
 * the file is absent, SF_EFORMAT when it is malformed or its length is not n. */
int sae_io_read_sparsity(const char *dir, size_t n, float *log10_density);

/* Writes <dir>/<sae->meta.hook_name>/{cfg.json,sae.safetensors} (a topk SAE with a
 * hook name that is one safe path component). Other hookpoints under `dir` are left
 * alone. 0 or SF_EINVAL / SF_EUNSUP / SF_EIO / SF_ENOMEM. */
int sae_io_export_sparsify(const struct sae *sae, const char *dir);
/* `path` is a hookpoint directory, or a directory holding exactly one. The hookpoint
 * directory's name becomes meta.hook_name unless the file's metadata says otherwise. */
int sae_io_import_sparsify(const char *path, struct sae **out);
/* `hook` names the hookpoint (may be NULL). */
int sae_io_import_sparsify_mem(const char *cfg_json, size_t cfg_len, const void *weights,
                               size_t weights_len, const char *hook, struct sae **out);

/* What sae_io_load_info() found, for `saeflow sae info`. */
struct sae_io_info {
    enum sae_io_layout layout;
    char dir[4096];         /* the directory the files were read from */
    char architecture[32];  /* as written in cfg.json (sparsify: activation) */
    char cfg_dtype[32];     /* SAELens cfg "dtype"; sparsify: empty */
    char weights_dtype[16]; /* dtype of the encoder weight tensor, e.g. "F32" */
    char sae_lens_version[32];
    bool has_sparsity; /* sparsity.safetensors present (SAELens only) */
};
/* Detects the layout at `path` (a SAELens directory, a sparsify hookpoint directory
 * or a sparsify directory with exactly one hookpoint) and imports it. */
int sae_io_load(const char *path, struct sae **out);
int sae_io_load_info(const char *path, struct sae **out, struct sae_io_info *info);

#endif

/* feature_store: the RocksDB feature store that eval writes and label / steer / the CLI
 * read — its schema, its record codecs and its typed get/put API.
 *
 * Schema (v1). One RocksDB database (common/store), one owning writer process
 * (saeflow-eval or `saeflow eval --store`); every other process reads through a
 * secondary instance (feature_store_open_reader + feature_store_catch_up).
 *
 *   column family  key                                   value (record type)
 *   saes           sae_id                                FEATURE_REC_SAE
 *   runs           sae_id 0x00 be64(run_id)              FEATURE_REC_RUN
 *   features       sae_id 0x00 be32(feature)             FEATURE_REC_STATS
 *   examples       sae_id 0x00 be32(feature) u8(kind)    FEATURE_REC_EXAMPLES
 *   logits         sae_id 0x00 be32(feature)             FEATURE_REC_LOGITS
 *   neighbours     sae_id 0x00 be32(feature)             FEATURE_REC_NEIGHBOURS
 *
 * sae_id: 1..128 bytes of [A-Za-z0-9._:/@+-] (never 0x00, so "sae_id 0x00" is a prefix
 * that selects exactly one SAE). Integers in keys are big-endian, so keys iterate in
 * numeric order. Values are records (store/record.h: "SF", version, type, length,
 * payload, CRC32C); payload fields little-endian, strings u32-length-prefixed.
 *
 * Atomicity: a feature is written as ONE write batch (stats, the three example kinds,
 * logits, neighbours), committed with sync, several features per batch; a reader sees
 * either all of a feature's records or none. The stats record is the feature's
 * presence marker. A run is: SAE record (state evaluating) + run record (running),
 * then feature batches, then SAE + run records (done, metrics JSON) in one batch.
 * A re-evaluation of the same sae_id overwrites feature by feature; each stats record
 * names the run that wrote it.
 *
 * Payloads (v1; "str" = u32 length + bytes; arrays are a count then items):
 *   SAE:        str sae_id, str model, str hook, str arch, u32 d_in, u32 d_sae, u32 k,
 *               str source (SAE directory), str dataset, i64 created_ms, i64 updated_ms,
 *               u64 latest_run, u64 step, u8 state, str metrics_json,
 *               [u64 fingerprint] (sae_fingerprint of the SAE last evaluated under
 *               this id; absent in records written before it existed = 0, unknown)
 *   RUN:        str sae_id, u64 run_id, i64 started_ms, i64 finished_ms, u8 state,
 *               u64 tokens, u32 features_done, u32 n_features, str dataset,
 *               str metrics_json
 *   STATS:      u32 feature, u64 run_id, u64 n_tokens, u64 fires, f32 max_act,
 *               f64 sum_act, u16 n_hist, n_hist x u32 (equal-width 0..max_act),
 *               u16 n_intervals, n x {f32 lo, f32 hi, u64 count},
 *               u16 n_quantiles, n x {f32 lo, f32 hi, u64 count}
 *   EXAMPLES:   u32 feature, u8 kind, u16 n, n x example:
 *               {u16 group, f32 act, u64 window, u32 start, u32 center, u32 n_tok,
 *                n_tok x u32 token, n_tok x f32 act, str text, n_tok x u32 text_end}
 *   LOGITS:     u32 feature, u16 n_top, n x {u32 token, f32 value, str piece},
 *               u16 n_bottom, n x {...}
 *   NEIGHBOURS: u32 feature, u16 n, n x {u32 feature, f32 cosine}
 * Decoders check counts against the bytes left before allocating, bounds (n_tok <=
 * FEATURE_MAX_WINDOW, text_end nondecreasing and <= text length, center < n_tok,
 * kinds and states known, floats finite where they must be) and return SF_EFORMAT with
 * a logged reason ("record_invalid"); they never crash on stored bytes.
 *
 * Ownership: decoded structs with arrays are released with their *_fini function (the
 * struct itself is the caller's). feature_store_open* return a handle freed with
 * feature_store_close. Getters return SF_NOTFOUND (positive) when a key is absent. */
#ifndef SAEFLOW_EVAL_FEATURE_STORE_H
#define SAEFLOW_EVAL_FEATURE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

#define FEATURE_STORE_MAX_ID 128
#define FEATURE_MAX_WINDOW   1024 /* tokens per stored example */
#define FEATURE_MAX_EXAMPLES 4096 /* examples per record */
#define FEATURE_MAX_BINS     1024 /* histogram / interval / quantile bins */
#define FEATURE_MAX_TEXT     (1u << 20)

enum feature_cf {
    FCF_SAES,
    FCF_RUNS,
    FCF_FEATURES,
    FCF_EXAMPLES,
    FCF_LOGITS,
    FCF_NEIGHBOURS,
    FCF_COUNT
};
/* Column family names, indexed by enum feature_cf. */
extern const char *const feature_store_cf_names[FCF_COUNT];

enum feature_rec_type {
    FEATURE_REC_SAE = 1,
    FEATURE_REC_RUN = 2,
    FEATURE_REC_STATS = 3,
    FEATURE_REC_EXAMPLES = 4,
    FEATURE_REC_LOGITS = 5,
    FEATURE_REC_NEIGHBOURS = 6,
};
#define FEATURE_REC_VERSION 1

enum feature_state {
    FEATURE_STATE_REGISTERED = 0,
    FEATURE_STATE_EVALUATING = 1,
    FEATURE_STATE_DONE = 2,
    FEATURE_STATE_FAILED = 3
};
const char *feature_state_name(enum feature_state s); /* "registered", ... */

/* Example kinds (the u8 after the feature id in examples keys). */
enum feature_example_kind {
    FEATURE_EX_TOP = 0,
    FEATURE_EX_INTERVAL = 1,
    FEATURE_EX_QUANTILE = 2,
    FEATURE_EX_KINDS = 3
};
const char *feature_example_kind_name(enum feature_example_kind k); /* "top", ... */

/* ---- records ---- */

/* The SAE registry entry. Strings are NUL-terminated copies; metrics_json is heap
 * (feature_sae_fini frees it; may be NULL = none). */
struct feature_sae {
    char sae_id[FEATURE_STORE_MAX_ID + 1];
    char model[256];
    char hook[128];
    char arch[32];
    uint32_t d_in, d_sae, k;
    char source[1024];
    char dataset[1024];
    int64_t created_ms, updated_ms;
    uint64_t latest_run;
    uint64_t step; /* trainer step of the evaluated checkpoint (0 = unknown) */
    enum feature_state state;
    char *metrics_json;
    uint64_t fingerprint; /* sae_fingerprint() of the SAE; 0 = unknown (older record) */
};
void feature_sae_fini(struct feature_sae *s);

struct feature_run_info {
    char sae_id[FEATURE_STORE_MAX_ID + 1];
    uint64_t run_id;
    int64_t started_ms, finished_ms;
    enum feature_state state;
    uint64_t tokens;
    uint32_t features_done, n_features;
    char dataset[1024];
    char *metrics_json; /* heap or NULL */
};
void feature_run_info_fini(struct feature_run_info *r);

/* An interval group (equal-width bins over [0, max_act]) or a quantile group (slices
 * of about fires / n_quantiles activations each). The share of the feature's
 * activations a group holds is count / stats.fires. */
struct feature_bin {
    float lo, hi;
    uint64_t count; /* activations that fell in [lo, hi) (the last bin includes hi) */
};

/* Per-feature statistics over the eval set. Arrays are heap (feature_stats_fini). */
struct feature_stats {
    uint32_t feature;
    uint64_t run_id;
    uint64_t n_tokens; /* tokens the feature was measured on */
    uint64_t fires;    /* tokens where it was > 0 */
    float max_act;
    double sum_act;  /* sum of its activations where it fired */
    uint16_t n_hist; /* equal-width bins over [0, max_act] */
    uint32_t *hist;
    uint16_t n_intervals;
    struct feature_bin *intervals;
    uint16_t n_quantiles;
    struct feature_bin *quantiles;
};
void feature_stats_fini(struct feature_stats *s);
double feature_stats_density(const struct feature_stats *s);       /* fires / n_tokens */
double feature_stats_log10_density(const struct feature_stats *s); /* log10(d + 1e-10) */
double feature_stats_mean_act(const struct feature_stats *s);      /* when firing; 0 if dead */

/* One activating example: a window of tokens with the feature's activation on each. */
struct feature_example {
    uint16_t group;  /* top: rank; interval / quantile: bin index */
    float act;       /* the activation at `center` */
    uint64_t window; /* which eval window it came from */
    uint32_t start;  /* position of tokens[0] in that window */
    uint32_t center; /* index into tokens of the activating token */
    uint32_t n_tok;
    uint32_t *tokens; /* (n_tok) token ids */
    float *acts;      /* (n_tok) the feature's activation per token */
    char *text;       /* decoded window text, NUL-terminated (may be "") */
    uint32_t text_len;
    uint32_t *text_end; /* (n_tok) end offset in text of each token's piece */
};

struct feature_examples {
    uint32_t feature;
    enum feature_example_kind kind;
    uint16_t n;
    struct feature_example *ex; /* (n) */
};
void feature_examples_fini(struct feature_examples *e);

struct feature_logit {
    uint32_t token;
    float value;
    char piece[64]; /* the token's text (truncated to fit) */
};
struct feature_logits {
    uint32_t feature;
    uint16_t n_top, n_bottom;
    struct feature_logit *top;    /* (n_top) largest first */
    struct feature_logit *bottom; /* (n_bottom) smallest first */
};
void feature_logits_fini(struct feature_logits *l);

struct feature_neighbour {
    uint32_t feature;
    float cosine;
};
struct feature_neighbours {
    uint32_t feature;
    uint16_t n;
    struct feature_neighbour *nb; /* (n) most similar first */
};
void feature_neighbours_fini(struct feature_neighbours *n);

/* Everything stored about one feature (what one atomic write holds). */
struct feature_record {
    struct feature_stats stats;
    struct feature_examples examples[FEATURE_EX_KINDS];
    struct feature_logits logits;
    struct feature_neighbours neighbours;
};
void feature_record_fini(struct feature_record *r);

/* ---- codecs: encoders append one record to `out`; decoders validate fully and
 * fill *out (0) or return SF_EFORMAT (logged; *out left empty, nothing to free) ---- */
int feature_sae_encode(const struct feature_sae *s, struct buf *out);
int feature_sae_decode(const void *data, size_t len, struct feature_sae *out);
int feature_run_encode(const struct feature_run_info *r, struct buf *out);
int feature_run_decode(const void *data, size_t len, struct feature_run_info *out);
int feature_stats_encode(const struct feature_stats *s, struct buf *out);
int feature_stats_decode(const void *data, size_t len, struct feature_stats *out);
int feature_examples_encode(const struct feature_examples *e, struct buf *out);
int feature_examples_decode(const void *data, size_t len, struct feature_examples *out);
int feature_logits_encode(const struct feature_logits *l, struct buf *out);
int feature_logits_decode(const void *data, size_t len, struct feature_logits *out);
int feature_neighbours_encode(const struct feature_neighbours *n, struct buf *out);
int feature_neighbours_decode(const void *data, size_t len, struct feature_neighbours *out);

/* ---- ids and keys ---- */
bool feature_store_id_char(char c);
/* 0 if `id` is a valid sae_id, else SF_EINVAL (not logged). */
int feature_store_check_id(const char *id);
/* Key builders (see the schema); SF_EINVAL for a bad id. out must hold
 * FEATURE_STORE_MAX_ID + 14 bytes; *len receives the key length. */
int feature_store_key_feature(const char *sae_id, uint32_t feature, uint8_t *out, size_t *len);
int feature_store_key_run(const char *sae_id, uint64_t run_id, uint8_t *out, size_t *len);

/* ---- the store ---- */
struct feature_store;

/* Opens (creating if needed) the store at `path` as its one writer. SF_ESTATE when
 * another process owns it. Runs and SAEs left "evaluating" by a writer that died are
 * marked failed (the features it committed stay: each is whole). */
int feature_store_open(struct feature_store **out, const char *path);
/* Opens a reader: a RocksDB secondary instance of `path` with its private directory
 * `secondary_dir` (NULL: a fresh one under $TMPDIR, removed at close), caught up
 * once. SF_NOTFOUND when no store exists at path yet. */
int feature_store_open_reader(struct feature_store **out, const char *path,
                              const char *secondary_dir);
/* Readers: see what the writer has committed since the last catch-up. */
int feature_store_catch_up(struct feature_store *fs);
void feature_store_close(struct feature_store **fs);
bool feature_store_is_writer(const struct feature_store *fs);
const char *feature_store_path(const struct feature_store *fs);

/* Writer: puts one SAE / run record (sync). */
int feature_store_put_sae(struct feature_store *fs, const struct feature_sae *s);
int feature_store_put_run(struct feature_store *fs, const struct feature_run_info *r);
/* Writer: SAE + run records in one atomic, synced batch. */
int feature_store_put_sae_run(struct feature_store *fs, const struct feature_sae *s,
                              const struct feature_run_info *r);
/* Writer: n whole features of one SAE as one atomic, synced batch. */
int feature_store_put_features(struct feature_store *fs, const char *sae_id,
                               const struct feature_record *recs, size_t n);
/* Writer: a new run id for sae_id (1 + the largest stored one). */
int feature_store_next_run_id(struct feature_store *fs, const char *sae_id, uint64_t *run_id);

/* Getters: 0, SF_NOTFOUND, SF_EFORMAT (a stored record that does not decode, or whose
 * ids disagree with its key) or another negative code. */
int feature_store_get_sae(struct feature_store *fs, const char *sae_id, struct feature_sae *out);
int feature_store_get_run(struct feature_store *fs, const char *sae_id, uint64_t run_id,
                          struct feature_run_info *out);
int feature_store_get_stats(struct feature_store *fs, const char *sae_id, uint32_t feature,
                            struct feature_stats *out);
int feature_store_get_examples(struct feature_store *fs, const char *sae_id, uint32_t feature,
                               enum feature_example_kind kind, struct feature_examples *out);
int feature_store_get_logits(struct feature_store *fs, const char *sae_id, uint32_t feature,
                             struct feature_logits *out);
int feature_store_get_neighbours(struct feature_store *fs, const char *sae_id, uint32_t feature,
                                 struct feature_neighbours *out);
/* All of a feature (stats first; SF_NOTFOUND when its stats are absent). A feature
 * whose stats exist but another part is missing is torn: SF_EFORMAT. */
int feature_store_get_feature(struct feature_store *fs, const char *sae_id, uint32_t feature,
                              struct feature_record *out);

/* Is sae_id in the store the SAE described by `want` (its fingerprint, arch, d_in,
 * d_sae, k and hook)? Returns 0 when it is (same fingerprint), SF_NOTFOUND when
 * sae_id is not stored, FEATURE_SAE_OTHER when the stored SAE is a different one,
 * FEATURE_SAE_UNVERIFIED when the stored record predates fingerprints and its shape
 * and hook match (it may or may not be the same weights), or a negative read error.
 * `why` receives one line for the user in every positive case. */
enum { FEATURE_SAE_OTHER = 2, FEATURE_SAE_UNVERIFIED = 3 };
int feature_store_check_sae(struct feature_store *fs, const char *sae_id,
                            const struct feature_sae *want, char *why, size_t cap);

/* Iteration, in key order, over one consistent snapshot. The callback returns 0 to
 * go on, non-zero to stop (returned). Records that fail to decode end the walk with
 * SF_EFORMAT. */
typedef int (*feature_sae_fn)(void *ud, const struct feature_sae *s);
int feature_store_list_saes(struct feature_store *fs, feature_sae_fn fn, void *ud);
typedef int (*feature_run_fn)(void *ud, const struct feature_run_info *r);
int feature_store_list_runs(struct feature_store *fs, const char *sae_id, feature_run_fn fn,
                            void *ud);
/* Stats of every stored feature of sae_id with feature >= first. */
typedef int (*feature_stats_fn)(void *ud, const struct feature_stats *s);
int feature_store_scan_stats(struct feature_store *fs, const char *sae_id, uint32_t first,
                             feature_stats_fn fn, void *ud);

#endif

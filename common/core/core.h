/* core: what every saeflow library and service stands on.
 *
 * - Return codes: 0 success, negative failure (SF_E*), positive documented
 *   non-error outcomes (SF_NOTFOUND, ...). Log the detail where a failure is found.
 * - Logging: one line per event, logfmt (default) or JSON, with the service name.
 *   The macros check the level before formatting anything.
 * - Config: a table of options (name, type, default, bounds, help) filled from
 *   defaults < config file < environment < command-line flags.
 * - Signals: the handler only sets a flag; a second SIGINT/SIGTERM exits at once.
 * - Capped growable buffers, whole-file reads, atomic file writes, a seeded RNG,
 *   fp16/bf16 conversions and a monotonic clock.
 *
 * Nothing here calls exit(); main() decides. */
#ifndef SAEFLOW_CORE_H
#define SAEFLOW_CORE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- return codes ---- */
enum {
    SF_OK = 0,
    SF_ERR = -1,      /* generic failure, details logged */
    SF_EINVAL = -2,   /* bad argument or malformed input */
    SF_ENOMEM = -3,   /* allocation failed or a cap was hit */
    SF_EIO = -4,      /* file or socket I/O failed */
    SF_EFORMAT = -5,  /* input is not in the expected format */
    SF_ERANGE = -6,   /* a value is outside its bounds */
    SF_ETIMEOUT = -7, /* a deadline passed */
    SF_ESTATE = -8,   /* call not valid in the object's current state */
    SF_EUNSUP = -9,   /* valid input that this build does not support */
    SF_NOTFOUND = 1,  /* lookup found nothing (not an error) */
    SF_AGAIN = 2,     /* nothing available yet (not an error) */
    SF_EXIT = 3,      /* done, caller should exit 0 (e.g. --help printed) */
};
const char *sf_strerror(int rc);

/* ---- logging ---- */
enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_OFF = 4 };
enum log_format { LOG_LOGFMT = 0, LOG_JSON = 1 };

/* Sets the service name, format and threshold; callable again at any time. */
void log_init(const char *service, enum log_format format, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
int log_level_parse(const char *s, enum log_level *out);   /* "debug".."error","off" */
int log_format_parse(const char *s, enum log_format *out); /* "logfmt" | "json" */
/* Redirects log lines (default stderr); NULL restores stderr. Not owned. */
void log_set_stream(void *file /* FILE * */);

/* Writes `ts=... level=... svc=... event=<event> <fmt...>` (logfmt), or one JSON
 * object {"ts","level","svc","event", then each key=value of the message as its own
 * member (numbers and true/false as JSON literals; keys clashing with the first four
 * get a leading '_')}; a message that is not key=value pairs goes whole under "msg".
 * `fmt` should itself read as
 * logfmt key=value pairs, e.g. log_info("ckpt_saved", "path=%s tokens=%lld", ...). */
void log_write(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_at(lvl, event, ...)                                                                    \
    do {                                                                                           \
        if ((lvl) >= log_get_level()) log_write((lvl), (event), __VA_ARGS__);                      \
    } while (0)
#define log_debug(event, ...) log_at(LOG_DEBUG, event, __VA_ARGS__)
#define log_info(event, ...)  log_at(LOG_INFO, event, __VA_ARGS__)
#define log_warn(event, ...)  log_at(LOG_WARN, event, __VA_ARGS__)
#define log_error(event, ...) log_at(LOG_ERROR, event, __VA_ARGS__)

/* ---- progress lines ---- */
/* One progress line for a long step (eval passes, harvest, training): on a terminal it
 * is redrawn in place (at most 10 times a second); elsewhere (a log file, a pipe) it is
 * printed as its own line at most every `every_s` seconds, and never twice the same. */
struct progress {
    void *file; /* FILE *, not owned */
    bool tty;
    double every_s, last_s;
    bool open; /* a TTY line is drawn and not yet ended */
    char last[512];
};
void progress_init(struct progress *p, void *file /* FILE * */, double every_s);
/* Shows the line; `force` prints it whatever the time (a stage's last line). Returns
 * true when something was written. */
bool progress_update(struct progress *p, bool force, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Ends a TTY line (newline) so that what follows starts on its own line. */
void progress_end(struct progress *p);

/* ---- capped growable buffer ---- */
struct buf {
    char *data; /* always NUL-terminated when len > 0 or after any append */
    size_t len;
    size_t cap;
    size_t max; /* hard cap on len; appends past it fail with SF_ENOMEM */
};
void buf_init(struct buf *b, size_t max);
void buf_fini(struct buf *b);
void buf_reset(struct buf *b); /* len = 0, keeps memory */
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *data, size_t n);
int buf_putc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Appends `s` as a quoted JSON string (escaped; bytes >= 0x80 pass through). */
int buf_json_string(struct buf *b, const char *s);
/* Appends `s` (n bytes) as a quoted JSON string. */
int buf_json_stringn(struct buf *b, const char *s, size_t n);
/* Appends a JSON number, or null when v is NaN or infinite. */
int buf_json_number(struct buf *b, double v);
/* Takes the bytes out; caller frees with free(). The buffer is left empty. */
char *buf_steal(struct buf *b, size_t *len);

/* ---- files ---- */
/* Reads a whole file (at most `max` bytes, else SF_ERANGE) into a malloc'd,
 * NUL-terminated buffer the caller frees. */
int file_read_all(const char *path, size_t max, char **out, size_t *len);
/* Writes `path` atomically: temporary file in the same directory, fsync, rename,
 * fsync of the directory. On failure the old file is untouched. */
int file_write_atomic(const char *path, const void *data, size_t len);
/* mkdir -p */
int file_mkdirs(const char *path, unsigned mode);
/* fsync a directory so that a rename inside it is durable. */
int file_fsync_dir(const char *dir);

/* ---- config ---- */
enum config_type { CFG_INT, CFG_DOUBLE, CFG_STRING, CFG_BOOL };

/* One option. `dst` points at int64_t, double, char * (heap string owned by the
 * config; freed by config_free), or bool. */
struct config_opt {
    const char *name; /* flag --name, file key name, env SAEFLOW_<SVC>_<NAME> */
    enum config_type type;
    void *dst;
    const char *def; /* default as text; NULL for an empty string */
    double min, max; /* bounds for CFG_INT / CFG_DOUBLE (ignored when min > max) */
    const char *help;
};

struct config {
    const char *service; /* for env names and messages, e.g. "train" */
    const char *usage;   /* one line: "saeflow-train [options]" */
    const struct config_opt *opts;
    size_t n_opts;
    /* filled by config_load: */
    char **positional; /* argv entries that are not flags (borrowed) */
    size_t n_positional;
    enum log_level log_level;
    enum log_format log_format;
    char *config_path;
};

/* Fills every option: defaults, then the file named by --config (lines of
 * `name = value`, `#` comments), then the environment, then the flags. Handles
 * --help, --version, --print-config (returns SF_EXIT after printing), --log-level,
 * --log-format. Returns SF_EINVAL with a message on stderr for usage errors. On any
 * non-zero return the table's strings are already released (config_free stays safe). */
int config_load(struct config *cfg, int argc, char **argv);
/* Parses a config file's text into the table (used by config_load; fuzzed). */
int config_parse_text(struct config *cfg, const char *text, size_t len, const char *origin);
/* Sets one option from text, checking type and bounds. */
int config_set(struct config *cfg, const char *name, const char *value, const char *origin);
void config_print(const struct config *cfg, void *file /* FILE * */);
void config_help(const struct config *cfg, void *file /* FILE * */);
/* Logs the effective config, one event. */
void config_log(const struct config *cfg);
/* Frees strings owned by the table and the positional array. */
void config_free(struct config *cfg);

/* ---- signals ---- */
/* SIGINT/SIGTERM set the stop flag; a second one calls _exit(130). SIGPIPE ignored. */
void sig_install(void);
bool sig_stop_requested(void);
void sig_request_stop(void); /* same as receiving a signal once (tests, internal) */

/* ---- time ---- */
int64_t time_now_ns(void); /* CLOCK_MONOTONIC */
double time_now_s(void);
int64_t time_wall_ms(void); /* CLOCK_REALTIME, ms since epoch */
void time_sleep_ms(int64_t ms);

/* ---- random numbers: xoshiro256** seeded through splitmix64 ---- */
struct rng {
    uint64_t s[4];
};
void rng_seed(struct rng *r, uint64_t seed);
uint64_t rng_u64(struct rng *r);
double rng_uniform(struct rng *r);             /* [0, 1) */
float rng_normal(struct rng *r);               /* standard normal (Box-Muller) */
uint64_t rng_below(struct rng *r, uint64_t n); /* [0, n), unbiased */

/* ---- half precision ---- */
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f); /* round to nearest even */
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f); /* round to nearest even, NaN kept */

/* ---- process ---- */
/* If `name` is unset in the environment: sets it to `value` and re-executes this
 * program (/proc/self/exe) with the same argv, for settings a library reads only when
 * it loads. Services call it first thing with OMP_WAIT_POLICY=passive: libgomp's
 * spinning threads otherwise fight Debian's pthread OpenBLAS pool for the cores.
 * Returns only if the variable was already set or exec failed (then goes on). */
void proc_reexec_with_env(char **argv, const char *name, const char *value);

/* ---- small helpers ---- */
/* Multiplies with overflow check: returns false on overflow. */
bool size_mul_ok(size_t a, size_t b, size_t *out);
/* Parses a whole decimal integer / float; SF_EINVAL if junk or out of range. */
int parse_i64(const char *s, int64_t *out);
int parse_f64(const char *s, double *out);
/* Splits `s` in place at commas into items with surrounding spaces trimmed; empty
 * items are skipped. Stores at most `max` pointers into `s`; returns their count. */
size_t str_split_list(char *s, char **out, size_t max);
/* Environment lookup with a default: SAEFLOW_MODELS and friends. */
const char *env_or(const char *name, const char *def);
/* Copies `in` to `out` (capacity `cap`) replacing ${NAME} with $NAME and ${NAME:-DEF}
 * with $NAME or DEF when NAME is unset or empty. SF_EINVAL on bad syntax or an unset
 * variable without a default (its name, or the bad text, is copied to `what`);
 * SF_ERANGE when the result does not fit. */
int env_expand(const char *in, char *out, size_t cap, char *what, size_t what_cap);
/* Reads at most the last `max_lines` lines (and at most `max_bytes` bytes) of a text
 * file into a malloc'd NUL-terminated string the caller frees. */
int file_read_tail(const char *path, size_t max_bytes, size_t max_lines, char **out);
/* True when command-line argument `arg` is the flag `flag` ("--first-line"), treating
 * '-' and '_' after the leading "--" as the same character: every saeflow flag takes
 * both spellings. */
bool flag_eq(const char *arg, const char *flag);

#define SF_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define SF_MIN(a, b)    ((a) < (b) ? (a) : (b))
#define SF_MAX(a, b)    ((a) > (b) ? (a) : (b))

#endif

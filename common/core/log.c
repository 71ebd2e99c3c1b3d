/* log: one line per event, logfmt or JSON, with the service name and a UTC timestamp.
 * A line is formatted into a stack buffer and written with one fwrite so that lines
 * from several threads do not interleave. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core.h"

static char log_service[64] = "saeflow";
static enum log_format log_fmt = LOG_LOGFMT;
static _Atomic int log_threshold = LOG_INFO;
static FILE *log_stream;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void log_init(const char *service, enum log_format format, enum log_level level)
{
    if (service) snprintf(log_service, sizeof log_service, "%s", service);
    log_fmt = format;
    atomic_store(&log_threshold, (int)level);
}

void log_set_level(enum log_level level)
{
    atomic_store(&log_threshold, (int)level);
}

enum log_level log_get_level(void)
{
    return (enum log_level)atomic_load(&log_threshold);
}

void log_set_stream(void *file)
{
    log_stream = file;
}

int log_level_parse(const char *s, enum log_level *out)
{
    for (int i = 0; i < (int)SF_ARRAY_LEN(level_names); i++) {
        if (s && !strcmp(s, level_names[i])) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return SF_EINVAL;
}

int log_format_parse(const char *s, enum log_format *out)
{
    if (s && !strcmp(s, "logfmt"))
        *out = LOG_LOGFMT;
    else if (s && !strcmp(s, "json"))
        *out = LOG_JSON;
    else
        return SF_EINVAL;
    return 0;
}

/* Appends `s` as a JSON string body (without quotes), truncating at the buffer end. */
static size_t json_escape(char *dst, size_t cap, size_t pos, const char *s)
{
    for (; *s && pos + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            dst[pos++] = '\\';
            dst[pos++] = (char)c;
        } else if (c == '\n') {
            dst[pos++] = '\\';
            dst[pos++] = 'n';
        } else if (c < 0x20) {
            pos += (size_t)snprintf(dst + pos, cap - pos, "\\u%04x", c);
        } else {
            dst[pos++] = (char)c;
        }
    }
    return pos;
}

/* A logfmt message split into fields: key=value pairs, values bare or "quoted". */
struct lf_field {
    const char *key, *val;
    size_t klen, vlen;
    bool quoted;
};
#define LOG_MAX_FIELDS 64

static bool lf_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '-' || c == '/';
}

/* Splits `msg` into fields; false when it does not read as logfmt (then the JSON
 * line carries it whole under "msg"). */
static bool lf_split(const char *msg, struct lf_field *f, size_t *n)
{
    *n = 0;
    const char *p = msg;
    for (;;) {
        while (*p == ' ') p++;
        if (!*p) return true;
        if (*n >= LOG_MAX_FIELDS) return false;
        struct lf_field *x = &f[(*n)++];
        x->key = p;
        while (lf_key_char(*p)) p++;
        x->klen = (size_t)(p - x->key);
        if (x->klen == 0 || *p != '=') return false;
        p++;
        x->quoted = *p == '"';
        if (x->quoted) {
            x->val = ++p;
            while (*p && *p != '"') p += (*p == '\\' && p[1]) ? 2 : 1;
            if (*p != '"') return false;
            x->vlen = (size_t)(p - x->val);
            p++;
            if (*p && *p != ' ') return false;
        } else {
            x->val = p;
            while (*p && *p != ' ') p++;
            x->vlen = (size_t)(p - x->val);
        }
    }
}

/* True when v[0, n) is a JSON number as written (no hex, inf, nan, leading '+'). */
static bool lf_is_number(const char *v, size_t n)
{
    size_t i = 0;
    if (i < n && v[i] == '-') i++;
    if (i >= n || v[i] < '0' || v[i] > '9') return false;
    if (v[i] == '0' && i + 1 < n && v[i + 1] >= '0' && v[i + 1] <= '9') return false;
    while (i < n && v[i] >= '0' && v[i] <= '9') i++;
    if (i < n && v[i] == '.') {
        i++;
        if (i >= n || v[i] < '0' || v[i] > '9') return false;
        while (i < n && v[i] >= '0' && v[i] <= '9') i++;
    }
    if (i < n && (v[i] == 'e' || v[i] == 'E')) {
        i++;
        if (i < n && (v[i] == '+' || v[i] == '-')) i++;
        if (i >= n || v[i] < '0' || v[i] > '9') return false;
        while (i < n && v[i] >= '0' && v[i] <= '9') i++;
    }
    return i == n;
}

/* Appends s[0, n) as a JSON string body; `unescape` turns logfmt's \" and \\ back. */
static size_t json_escape_n(char *dst, size_t cap, size_t pos, const char *s, size_t n,
                            bool unescape)
{
    char tmp[1600];
    size_t m = 0;
    for (size_t i = 0; i < n && m + 1 < sizeof tmp; i++) {
        if (unescape && s[i] == '\\' && i + 1 < n && (s[i + 1] == '"' || s[i + 1] == '\\')) {
            tmp[m++] = s[++i];
        } else {
            tmp[m++] = s[i];
        }
    }
    tmp[m] = '\0';
    return json_escape(dst, cap, pos, tmp);
}

/* The fields as JSON members ,"key":value. Keys that would clash with the line's own
 * (ts, level, svc, event, msg) get a leading '_'. */
static size_t json_fields(char *line, size_t cap, size_t n, const struct lf_field *f, size_t nf)
{
    static const char *const own[] = {"ts", "level", "svc", "event", "msg"};
    for (size_t i = 0; i < nf && n + 8 < cap; i++) {
        bool clash = false;
        for (size_t j = 0; j < SF_ARRAY_LEN(own); j++)
            clash = clash || (f[i].klen == strlen(own[j]) && !memcmp(f[i].key, own[j], f[i].klen));
        n += (size_t)snprintf(line + n, cap - n, ",\"%s", clash ? "_" : "");
        n = json_escape_n(line, cap, n, f[i].key, f[i].klen, false);
        if (n + 4 >= cap) break;
        line[n++] = '"';
        line[n++] = ':';
        bool lit = !f[i].quoted && (lf_is_number(f[i].val, f[i].vlen) ||
                                    (f[i].vlen == 4 && !memcmp(f[i].val, "true", 4)) ||
                                    (f[i].vlen == 5 && !memcmp(f[i].val, "false", 5)));
        if (lit) {
            if (f[i].vlen >= cap - n) break;
            memcpy(line + n, f[i].val, f[i].vlen);
            n += f[i].vlen;
        } else {
            line[n++] = '"';
            n = json_escape_n(line, cap, n, f[i].val, f[i].vlen, f[i].quoted);
            if (n + 1 < cap) line[n++] = '"';
        }
    }
    line[n < cap ? n : cap - 1] = '\0';
    return n;
}

void log_write(enum log_level level, const char *event, const char *fmt, ...)
{
    if ((int)level < atomic_load(&log_threshold) || level >= LOG_OFF) return;
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    for (char *p = msg; *p; p++)
        if (*p == '\n') *p = ' ';

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[96];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    char line[2048];
    size_t n;
    if (log_fmt == LOG_JSON) {
        n = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"svc\":\"", when,
                             level_names[level]);
        n = json_escape(line, sizeof line, n, log_service);
        n += (size_t)snprintf(line + n, sizeof line - n, "\",\"event\":\"");
        n = json_escape(line, sizeof line, n, event ? event : "");
        struct lf_field f[LOG_MAX_FIELDS];
        size_t nf;
        if (lf_split(msg, f, &nf)) {
            /* key=value pairs become members of the line itself */
            n += (size_t)snprintf(line + n, sizeof line - n, "\"");
            n = json_fields(line, sizeof line - 3, n, f, nf);
            n += (size_t)snprintf(line + n, sizeof line - n, "}\n");
        } else {
            n += (size_t)snprintf(line + n, sizeof line - n, "\",\"msg\":\"");
            n = json_escape(line, sizeof line, n, msg);
            n += (size_t)snprintf(line + n, sizeof line - n, "\"}\n");
        }
    } else {
        n = (size_t)snprintf(line, sizeof line, "ts=%s level=%s svc=%s event=%s%s%s\n", when,
                             level_names[level], log_service, event ? event : "-",
                             msg[0] ? " " : "", msg);
    }
    if (n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    FILE *f = log_stream ? log_stream : stderr;
    fwrite(line, 1, n, f);
    fflush(f);
}

void progress_init(struct progress *p, void *file, double every_s)
{
    memset(p, 0, sizeof *p);
    p->file = file;
    p->tty = file && isatty(fileno((FILE *)file)) == 1;
    p->every_s = every_s > 0 ? every_s : 10;
    p->last_s = -1e300;
}

bool progress_update(struct progress *p, bool force, const char *fmt, ...)
{
    if (!p->file) return false;
    char line[sizeof p->last];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    double now = time_now_s();
    FILE *f = p->file;
    if (!strcmp(line, p->last)) return false; /* each line once */
    if (!force && now - p->last_s < (p->tty ? 0.1 : p->every_s)) return false;
    if (p->tty) {
        fprintf(f, "\r%s\033[K", line);
        p->open = true;
    } else {
        fprintf(f, "%s\n", line);
    }
    fflush(f);
    p->last_s = now;
    snprintf(p->last, sizeof p->last, "%s", line);
    return true;
}

void progress_end(struct progress *p)
{
    if (p->file && p->tty && p->open) {
        fputc('\n', (FILE *)p->file);
        fflush((FILE *)p->file);
    }
    p->open = false;
}

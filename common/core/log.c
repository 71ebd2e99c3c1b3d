/* log: one line per event, logfmt or JSON, with the service name and a UTC timestamp.
 * A line is formatted into a stack buffer and written with one fwrite so that lines
 * from several threads do not interleave. */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

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
        n += (size_t)snprintf(line + n, sizeof line - n, "\",\"msg\":\"");
        n = json_escape(line, sizeof line, n, msg);
        n += (size_t)snprintf(line + n, sizeof line - n, "\"}\n");
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

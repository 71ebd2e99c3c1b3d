/* config: table-driven options, filled from defaults < config file < environment <
 * command-line flags. A config file holds `name = value` lines; `#` starts a
 * comment; values may be double-quoted. Names accept '-' or '_' interchangeably. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

#define CONFIG_FILE_MAX  (1u << 20)
#define CONFIG_NAME_MAX  64
#define CONFIG_VALUE_MAX 4096

/* Compares option names treating '-' and '_' as the same character. */
static bool name_eq(const char *a, const char *b, size_t blen)
{
    size_t i = 0;
    for (; i < blen && a[i]; i++) {
        char x = a[i] == '-' ? '_' : a[i];
        char y = b[i] == '-' ? '_' : b[i];
        if (x != y) return false;
    }
    return i == blen && a[i] == '\0';
}

static const struct config_opt *find_opt(const struct config *cfg, const char *name, size_t len)
{
    for (size_t i = 0; i < cfg->n_opts; i++)
        if (name_eq(cfg->opts[i].name, name, len)) return &cfg->opts[i];
    return NULL;
}

static bool parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < SF_ARRAY_LEN(yes); i++) {
        if (!strcasecmp(v, yes[i])) return *out = true, true;
        if (!strcasecmp(v, no[i])) return *out = false, true;
    }
    return false;
}

static int set_opt(const struct config_opt *o, const char *value, const char *origin)
{
    switch (o->type) {
    case CFG_INT: {
        int64_t v;
        if (parse_i64(value, &v) != 0) {
            fprintf(stderr, "%s: %s: expected an integer, got '%s'\n", origin, o->name, value);
            return SF_EINVAL;
        }
        if (o->min <= o->max && ((double)v < o->min || (double)v > o->max)) {
            fprintf(stderr, "%s: %s=%lld is outside [%.17g, %.17g]\n", origin, o->name,
                    (long long)v, o->min, o->max);
            return SF_ERANGE;
        }
        *(int64_t *)o->dst = v;
        return 0;
    }
    case CFG_DOUBLE: {
        double v;
        if (parse_f64(value, &v) != 0 || v != v) {
            fprintf(stderr, "%s: %s: expected a number, got '%s'\n", origin, o->name, value);
            return SF_EINVAL;
        }
        if (o->min <= o->max && (v < o->min || v > o->max)) {
            fprintf(stderr, "%s: %s=%g is outside [%g, %g]\n", origin, o->name, v, o->min, o->max);
            return SF_ERANGE;
        }
        *(double *)o->dst = v;
        return 0;
    }
    case CFG_BOOL: {
        bool v;
        if (!parse_bool(value, &v)) {
            fprintf(stderr, "%s: %s: expected true/false, got '%s'\n", origin, o->name, value);
            return SF_EINVAL;
        }
        *(bool *)o->dst = v;
        return 0;
    }
    case CFG_STRING: {
        size_t n = strlen(value);
        if (n > CONFIG_VALUE_MAX) {
            fprintf(stderr, "%s: %s: value longer than %u bytes\n", origin, o->name,
                    CONFIG_VALUE_MAX);
            return SF_ERANGE;
        }
        char *copy = strdup(value);
        if (!copy) return SF_ENOMEM;
        char **dst = o->dst;
        free(*dst);
        *dst = copy;
        return 0;
    }
    }
    return SF_EINVAL;
}

int config_set(struct config *cfg, const char *name, const char *value, const char *origin)
{
    const struct config_opt *o = find_opt(cfg, name, strlen(name));
    if (!o) {
        fprintf(stderr, "%s: unknown option '%s'\n", origin, name);
        return SF_EINVAL;
    }
    return set_opt(o, value, origin);
}

static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r')) p++;
    return p;
}

int config_parse_text(struct config *cfg, const char *text, size_t len, const char *origin)
{
    const char *p = text, *end = text + len;
    size_t lineno = 0;
    char where[512];
    while (p < end) {
        lineno++;
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        const char *s = skip_ws(p, eol);
        p = eol < end ? eol + 1 : end;
        if (s == eol || *s == '#') continue;
        snprintf(where, sizeof where, "%s:%zu", origin, lineno);

        const char *name = s;
        while (s < eol && (isalnum((unsigned char)*s) || *s == '_' || *s == '-' || *s == '.')) s++;
        size_t name_len = (size_t)(s - name);
        s = skip_ws(s, eol);
        if (name_len == 0 || name_len > CONFIG_NAME_MAX || s == eol || *s != '=') {
            fprintf(stderr, "%s: expected 'name = value'\n", where);
            return SF_EINVAL;
        }
        s = skip_ws(s + 1, eol);

        char value[CONFIG_VALUE_MAX + 1];
        size_t vlen = 0;
        if (s < eol && *s == '"') {
            s++;
            while (s < eol && *s != '"') {
                char c = *s++;
                if (c == '\\' && s < eol) {
                    c = *s++;
                    if (c == 'n')
                        c = '\n';
                    else if (c == 't')
                        c = '\t';
                }
                if (c == '\0' || vlen >= CONFIG_VALUE_MAX) {
                    fprintf(stderr, "%s: bad or overlong quoted value\n", where);
                    return SF_EINVAL;
                }
                value[vlen++] = c;
            }
            if (s >= eol) {
                fprintf(stderr, "%s: unterminated quote\n", where);
                return SF_EINVAL;
            }
            s = skip_ws(s + 1, eol);
            if (s < eol && *s != '#') {
                fprintf(stderr, "%s: junk after quoted value\n", where);
                return SF_EINVAL;
            }
        } else {
            const char *v = s;
            while (s < eol && *s != '#') s++;
            while (s > v && (s[-1] == ' ' || s[-1] == '\t' || s[-1] == '\r')) s--;
            vlen = (size_t)(s - v);
            if (vlen > CONFIG_VALUE_MAX || memchr(v, '\0', vlen)) {
                fprintf(stderr, "%s: bad or overlong value\n", where);
                return SF_EINVAL;
            }
            memcpy(value, v, vlen);
        }
        value[vlen] = '\0';

        const struct config_opt *o = find_opt(cfg, name, name_len);
        if (!o) {
            fprintf(stderr, "%s: unknown option '%.*s'\n", where, (int)name_len, name);
            return SF_EINVAL;
        }
        int rc = set_opt(o, value, where);
        if (rc) return rc;
    }
    return 0;
}

/* SAEFLOW_<SERVICE>_<NAME>, upper case; '-', '.' and ' ' become '_' (so the
 * `feature search` command reads SAEFLOW_FEATURE_SEARCH_<NAME>). */
static void env_name(const struct config *cfg, const char *opt, char *out, size_t cap)
{
    snprintf(out, cap, "SAEFLOW_%s_%s", cfg->service ? cfg->service : "", opt);
    for (char *p = out; *p; p++) {
        if (*p == '-' || *p == '.' || *p == ' ') *p = '_';
        *p = (char)toupper((unsigned char)*p);
    }
}

static const char *const builtin_help[][2] = {
    {"--config FILE", "read options from FILE (name = value lines)"},
    {"--log-level L", "debug | info | warn | error (default info)"},
    {"--log-format F", "logfmt | json (default logfmt)"},
    {"--print-config", "print the effective configuration and exit"},
    {"--version", "print the version and exit"},
    {"--help", "this help"},
};

void config_help(const struct config *cfg, void *file)
{
    FILE *f = file;
    fprintf(f, "usage: %s\n\noptions:\n", cfg->usage ? cfg->usage : cfg->service);
    for (size_t i = 0; i < cfg->n_opts; i++) {
        const struct config_opt *o = &cfg->opts[i];
        static const char *const tn[] = {" INT", " NUM", " STR", "[=BOOL]"};
        char flag[96];
        snprintf(flag, sizeof flag, "--%s%s", o->name, tn[o->type]);
        for (char *p = flag + 2; *p && *p != ' ' && *p != '['; p++)
            if (*p == '_') *p = '-'; /* one spelling in the help: dashes */
        fprintf(f, "  %-30s %s", flag, o->help ? o->help : "");
        if (o->def && *o->def) fprintf(f, " (default %s)", o->def);
        if ((o->type == CFG_INT || o->type == CFG_DOUBLE) && o->min <= o->max)
            fprintf(f, " [%g..%g]", o->min, o->max);
        fputc('\n', f);
    }
    for (size_t i = 0; i < SF_ARRAY_LEN(builtin_help); i++)
        fprintf(f, "  %-30s %s\n", builtin_help[i][0], builtin_help[i][1]);
    char env[128];
    env_name(cfg, "NAME", env, sizeof env);
    fprintf(f,
            "\nflag names take '-' or '_' alike (--first-line = --first_line); a BOOL flag alone "
            "means true,\n--flag=false (or --no-flag) means false\n"
            "precedence: defaults < --config file < environment (%s) < flags\n",
            env);
}

static void print_value(const struct config_opt *o, FILE *f)
{
    switch (o->type) {
    case CFG_INT:
        fprintf(f, "%lld", (long long)*(int64_t *)o->dst);
        break;
    case CFG_DOUBLE:
        fprintf(f, "%.17g", *(double *)o->dst);
        break;
    case CFG_BOOL:
        fprintf(f, "%s", *(bool *)o->dst ? "true" : "false");
        break;
    case CFG_STRING: {
        const char *s = *(char **)o->dst;
        fputc('"', f);
        for (; s && *s; s++) {
            if (*s == '"' || *s == '\\') fputc('\\', f);
            if (*s == '\n')
                fputs("\\n", f);
            else
                fputc(*s, f);
        }
        fputc('"', f);
        break;
    }
    }
}

void config_print(const struct config *cfg, void *file)
{
    FILE *f = file;
    for (size_t i = 0; i < cfg->n_opts; i++) {
        fprintf(f, "%s = ", cfg->opts[i].name);
        print_value(&cfg->opts[i], f);
        fputc('\n', f);
    }
}

void config_log(const struct config *cfg)
{
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    if (!mem) return;
    for (size_t i = 0; i < cfg->n_opts; i++) {
        fprintf(mem, "%s%s=", i ? " " : "", cfg->opts[i].name);
        print_value(&cfg->opts[i], mem);
    }
    fclose(mem);
    log_info("config", "%s", text ? text : "");
    free(text);
}

void config_free(struct config *cfg)
{
    for (size_t i = 0; i < cfg->n_opts; i++) {
        if (cfg->opts[i].type == CFG_STRING) {
            char **dst = cfg->opts[i].dst;
            free(*dst);
            *dst = NULL;
        }
    }
    free(cfg->positional);
    cfg->positional = NULL;
    cfg->n_positional = 0;
    free(cfg->config_path);
    cfg->config_path = NULL;
}

/* Returns the value for flag argv[*i] ("--name=value" or "--name value"). */
static const char *flag_value(int argc, char **argv, int *i, const char *eq)
{
    if (eq) return eq + 1;
    if (*i + 1 < argc) return argv[++*i];
    return NULL;
}

static int load(struct config *cfg, int argc, char **argv)
{
    const char *prog = cfg->service ? cfg->service : "saeflow";
    cfg->log_level = LOG_INFO;
    cfg->log_format = LOG_LOGFMT;
    cfg->positional = calloc((size_t)(argc > 0 ? argc : 1), sizeof(char *));
    if (!cfg->positional) return SF_ENOMEM;
    cfg->n_positional = 0;

    /* 1. defaults */
    for (size_t i = 0; i < cfg->n_opts; i++) {
        const struct config_opt *o = &cfg->opts[i];
        const char *def = o->def;
        if (!def) def = o->type == CFG_BOOL ? "false" : o->type == CFG_STRING ? "" : "0";
        if (o->type == CFG_STRING && !o->def) {
            char **dst = o->dst;
            free(*dst);
            *dst = strdup("");
            if (!*dst) return SF_ENOMEM;
            continue;
        }
        int rc = set_opt(o, def, "default");
        if (rc) return rc;
    }

    /* scan the flags once for the ones that change how we proceed */
    bool print = false;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            config_help(cfg, stdout);
            return SF_EXIT;
        }
        if (!strcmp(a, "--version")) {
            printf("%s %s\n", prog, SAEFLOW_VERSION);
            return SF_EXIT;
        }
        if (flag_eq(a, "--print-config")) print = true;
        if (!strncmp(a, "--config", 8) && (a[8] == '\0' || a[8] == '=')) {
            file = a[8] == '=' ? a + 9 : (i + 1 < argc ? argv[i + 1] : NULL);
            if (!file) {
                fprintf(stderr, "%s: --config needs a file\n", prog);
                return SF_EINVAL;
            }
        }
    }

    /* 2. file */
    if (file) {
        char *text;
        size_t len;
        if (file_read_all(file, CONFIG_FILE_MAX, &text, &len) != 0) {
            fprintf(stderr, "%s: cannot read config file %s\n", prog, file);
            return SF_EINVAL;
        }
        int rc = config_parse_text(cfg, text, len, file);
        free(text);
        if (rc) return SF_EINVAL;
        cfg->config_path = strdup(file);
    }

    /* 3. environment */
    for (size_t i = 0; i < cfg->n_opts; i++) {
        char env[160];
        env_name(cfg, cfg->opts[i].name, env, sizeof env);
        const char *v = getenv(env);
        if (v && set_opt(&cfg->opts[i], v, env) != 0) return SF_EINVAL;
    }

    /* 4. flags */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            if (a[0] == '-' && a[1] != '\0' && strcmp(a, "--") != 0) {
                fprintf(stderr, "%s: unknown flag '%s' (try --help)\n", prog, a);
                return SF_EINVAL;
            }
            if (!strcmp(a, "--")) {
                while (++i < argc) cfg->positional[cfg->n_positional++] = argv[i];
                break;
            }
            cfg->positional[cfg->n_positional++] = argv[i];
            continue;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        if (name_eq("print-config", name, name_len)) continue;
        if (name_eq("config", name, name_len)) {
            if (!eq) i++;
            continue;
        }
        if (name_eq("log-level", name, name_len) || name_eq("log-format", name, name_len)) {
            const char *v = flag_value(argc, argv, &i, eq);
            int rc = name_eq("log-level", name, name_len)
                         ? (v ? log_level_parse(v, &cfg->log_level) : SF_EINVAL)
                         : (v ? log_format_parse(v, &cfg->log_format) : SF_EINVAL);
            if (rc) {
                fprintf(stderr, "%s: bad value for --%.*s\n", prog, (int)name_len, name);
                return SF_EINVAL;
            }
            continue;
        }
        const struct config_opt *o = find_opt(cfg, name, name_len);
        if (!o && name_len > 3 && !strncmp(name, "no-", 3)) {
            const struct config_opt *nb = find_opt(cfg, name + 3, name_len - 3);
            if (nb && nb->type == CFG_BOOL && !eq) {
                *(bool *)nb->dst = false;
                continue;
            }
        }
        if (!o) {
            fprintf(stderr, "%s: unknown flag '--%.*s' (try --help)\n", prog, (int)name_len, name);
            return SF_EINVAL;
        }
        const char *v;
        bool bv;
        if (o->type == CFG_BOOL && !eq) {
            /* --flag alone sets a bool; a following true/false word is its value */
            v = "true";
            if (i + 1 < argc && !isdigit((unsigned char)argv[i + 1][0]) &&
                parse_bool(argv[i + 1], &bv))
                v = argv[++i];
        } else
            v = flag_value(argc, argv, &i, eq);
        if (!v) {
            fprintf(stderr, "%s: --%s needs a value\n", prog, o->name);
            return SF_EINVAL;
        }
        if (set_opt(o, v, "flag") != 0) return SF_EINVAL;
    }

    if (print) {
        config_print(cfg, stdout);
        return SF_EXIT;
    }
    return 0;
}

int config_load(struct config *cfg, int argc, char **argv)
{
    int rc = load(cfg, argc, argv);
    /* --help, --print-config or a usage error: the caller returns at once, often
     * without config_free, so release what the table holds here */
    if (rc != 0) config_free(cfg);
    return rc;
}

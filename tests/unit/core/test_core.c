/* Tests the core contract: buffers and their caps, config precedence and bounds,
 * logging format, atomic writes, RNG determinism, half-precision conversions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/core.h"
#include "../../support/check.h"

static void test_buf(void)
{
    struct buf b;
    buf_init(&b, 16);
    CHECK(buf_append(&b, "hello", 5) == 0);
    CHECK(buf_printf(&b, " %d", 42) == 0);
    CHECK(b.len == 8 && !strcmp(b.data, "hello 42"));
    CHECK(buf_append(&b, "123456789", 9) == SF_ENOMEM); /* 17 > cap 16 */
    CHECK(b.len == 8);                                  /* nothing partial */
    CHECK(buf_append(&b, "12345678", 8) == 0);
    CHECK(b.len == 16);
    size_t n;
    char *s = buf_steal(&b, &n);
    CHECK(n == 16 && !strcmp(s, "hello 4212345678"));
    free(s);
    CHECK(b.data == NULL && b.len == 0);
    buf_fini(&b);
}

struct opts {
    int64_t port;
    double lr;
    char *name;
    bool verbose;
};

static const struct config_opt *make_table(struct opts *o, size_t *n)
{
    static struct config_opt t[4];
    struct config_opt tmp[] = {
        {"port", CFG_INT, &o->port, "5555", 1, 65535, "port"},
        {"lr", CFG_DOUBLE, &o->lr, "0.001", 0, 1, "learning rate"},
        {"model-name", CFG_STRING, &o->name, "stories", 1, 0, "model"},
        {"verbose", CFG_BOOL, &o->verbose, "false", 1, 0, "more output"},
    };
    memcpy(t, tmp, sizeof tmp);
    *n = 4;
    return t;
}

static void test_config(void)
{
    struct opts o = {0};
    struct config cfg = {.service = "test", .usage = "test [options]"};
    cfg.opts = make_table(&o, &cfg.n_opts);

    /* defaults only */
    char *argv0[] = {"test", "pos1", NULL};
    CHECK(config_load(&cfg, 2, argv0) == 0);
    CHECK(o.port == 5555 && o.lr == 0.001 && !strcmp(o.name, "stories") && !o.verbose);
    CHECK(cfg.n_positional == 1 && !strcmp(cfg.positional[0], "pos1"));
    config_free(&cfg);

    /* file < env < flags */
    char path[] = "/tmp/sf_test_cfg_XXXXXX";
    int fd = mkstemp(path);
    const char *text =
        "# comment\nport = 6000\nlr = 0.5 # trailing\nmodel_name = \"a \\\"b\\\"\"\n";
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    setenv("SAEFLOW_TEST_LR", "0.25", 1);
    char *argv1[] = {"test", "--config", path, "--verbose", "--port=7000", NULL};
    CHECK(config_load(&cfg, 5, argv1) == 0);
    CHECK(o.port == 7000);             /* flag beats file */
    CHECK(o.lr == 0.25);               /* env beats file */
    CHECK(!strcmp(o.name, "a \"b\"")); /* file beats default, quotes unescaped */
    CHECK(o.verbose);
    config_free(&cfg);
    unsetenv("SAEFLOW_TEST_LR");

    /* bounds and types */
    char *bad1[] = {"test", "--port", "70000", NULL};
    CHECK(config_load(&cfg, 3, bad1) == SF_EINVAL);
    config_free(&cfg);
    char *bad2[] = {"test", "--lr", "abc", NULL};
    CHECK(config_load(&cfg, 3, bad2) == SF_EINVAL);
    config_free(&cfg);
    char *bad3[] = {"test", "--nope", "1", NULL};
    CHECK(config_load(&cfg, 3, bad3) == SF_EINVAL);
    config_free(&cfg);
    char *bad4[] = {"test", "--port", NULL};
    CHECK(config_load(&cfg, 2, bad4) == SF_EINVAL);
    config_free(&cfg);

    /* the file parser on its own */
    CHECK(config_parse_text(&cfg, "port 5\n", 7, "t") == SF_EINVAL);
    CHECK(config_parse_text(&cfg, "unknown = 5\n", 12, "t") == SF_EINVAL);
    CHECK(config_parse_text(&cfg, "model-name = \"open\n", 19, "t") == SF_EINVAL);
    CHECK(config_parse_text(&cfg, "verbose = maybe", 15, "t") == SF_EINVAL);
    CHECK(config_parse_text(&cfg, "verbose = on\n\n  # x\n", 20, "t") == 0 && o.verbose);
    config_free(&cfg);
    unlink(path);
}

/* One command-line convention: '-' and '_' alike in flags, a bare BOOL flag or one with
 * a true/false word after it, env names without spaces, help showing one spelling. */
static void test_config_convention(void)
{
    struct opts o = {0};
    struct config cfg = {.service = "feature search", .usage = "t"};
    cfg.opts = make_table(&o, &cfg.n_opts);
    char *a1[] = {"t", "--model_name", "x", "--model-name=y", NULL};
    CHECK(config_load(&cfg, 4, a1) == 0 && !strcmp(o.name, "y"));
    config_free(&cfg);
    char *a2[] = {"t", "--verbose", "false", "pos", NULL};
    CHECK(config_load(&cfg, 4, a2) == 0 && !o.verbose);
    CHECK(cfg.n_positional == 1 && !strcmp(cfg.positional[0], "pos"));
    config_free(&cfg);
    char *a3[] = {"t", "--verbose", "pos", NULL};
    CHECK(config_load(&cfg, 3, a3) == 0 && o.verbose && cfg.n_positional == 1);
    config_free(&cfg);
    char *a4[] = {"t", "--verbose", "1", NULL}; /* a digit stays a positional */
    CHECK(config_load(&cfg, 3, a4) == 0 && o.verbose && cfg.n_positional == 1);
    config_free(&cfg);
    /* "feature search" reads SAEFLOW_FEATURE_SEARCH_PORT (no space in the name) */
    setenv("SAEFLOW_FEATURE_SEARCH_PORT", "4321", 1);
    char *a5[] = {"t", NULL};
    CHECK(config_load(&cfg, 1, a5) == 0 && o.port == 4321);
    config_free(&cfg);
    unsetenv("SAEFLOW_FEATURE_SEARCH_PORT");
    /* help: one spelling (dashes), a bool without a value word, the env name */
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    config_help(&cfg, mem);
    fclose(mem);
    CHECK(strstr(text, "--model-name STR") != NULL);
    CHECK(strstr(text, "--verbose[=BOOL]") != NULL && strstr(text, "--verbose BOOL") == NULL);
    CHECK(strstr(text, "SAEFLOW_FEATURE_SEARCH_NAME") != NULL);
    free(text);

    CHECK(flag_eq("--first_line", "--first-line") && flag_eq("--first-line", "--first_line"));
    CHECK(!flag_eq("--first", "--first-line") && !flag_eq("--first-lines", "--first-line"));
    CHECK(!flag_eq("-first-line", "--first-line") && flag_eq("-h", "-h"));
}

/* Progress on a non-TTY: a line at most every every_s, each line once, forced lines
 * always (unless identical to the last). */
static void test_progress(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    struct progress p;
    progress_init(&p, mem, 3600);
    CHECK(!p.tty);
    CHECK(progress_update(&p, false, "step %d", 1));  /* the first line shows */
    CHECK(!progress_update(&p, false, "step %d", 2)); /* too soon */
    CHECK(!progress_update(&p, true, "step %d", 1));  /* the same line: never twice */
    CHECK(progress_update(&p, true, "step %d", 3));   /* forced */
    progress_end(&p);
    fclose(mem);
    CHECK(text && !strcmp(text, "step 1\nstep 3\n"));
    free(text);
}

static void test_env_expand_tail_json(void)
{
    char out[64], what[32];
    setenv("SF_T_A", "/m", 1);
    unsetenv("SF_T_UNSET");
    CHECK(env_expand("${SF_T_A}/x ${SF_T_UNSET:-d/e}", out, sizeof out, what, sizeof what) == 0);
    CHECK(!strcmp(out, "/m/x d/e"));
    CHECK(env_expand("a$b{}", out, sizeof out, what, sizeof what) == 0 && !strcmp(out, "a$b{}"));
    CHECK(env_expand("${SF_T_UNSET}", out, sizeof out, what, sizeof what) == SF_EINVAL);
    CHECK(!strcmp(what, "SF_T_UNSET"));
    CHECK(env_expand("${SF_T_A", out, sizeof out, what, sizeof what) == SF_EINVAL);
    CHECK(env_expand("${1A}", out, sizeof out, what, sizeof what) == SF_EINVAL);
    CHECK(env_expand("${SF_T_A}", out, 2, what, sizeof what) == SF_ERANGE);
    unsetenv("SF_T_A");

    char path[] = "/tmp/sf_test_tail_XXXXXX";
    int fd = mkstemp(path);
    const char *t = "one\ntwo\nthree\nfour\n\n";
    CHECK(write(fd, t, strlen(t)) == (ssize_t)strlen(t));
    close(fd);
    char *tail = NULL;
    CHECK(file_read_tail(path, 1 << 10, 2, &tail) == 0 && !strcmp(tail, "three\nfour"));
    free(tail);
    CHECK(file_read_tail(path, 8, 10, &tail) == 0 && !strcmp(tail, "e\nfour"));
    free(tail);
    unlink(path);
    CHECK(file_read_tail(path, 8, 10, &tail) == SF_EIO && tail == NULL);

    struct buf b;
    buf_init(&b, 1024);
    CHECK(buf_json_string(&b, "a\"b\\c\n\x01\xc3\xa9\xff") == 0);
    CHECK(!strcmp(b.data, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\\ufffd\""));
    buf_reset(&b);
    buf_json_number(&b, 1.0 / 0.0);
    buf_json_number(&b, 3);
    CHECK(!strcmp(b.data, "null3"));
    buf_fini(&b);
}

static void test_log(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    log_set_stream(mem);
    log_init("svc", LOG_LOGFMT, LOG_INFO);
    log_debug("hidden", "x=%d", 1);
    log_info("started", "port=%d", 80);
    log_init("svc", LOG_JSON, LOG_INFO);
    log_warn("odd", "q=\"%s\"", "a\\b");
    log_info("ckpt", "path=/a tokens=%d fvu=%.2f ok=true level=x err=\"%s\"", 12, 0.5,
             "no \\\"x\\\"");
    log_info("free", "not logfmt at all");
    fflush(mem);
    CHECK(strstr(text, "hidden") == NULL);
    CHECK(strstr(text, "level=info svc=svc event=started port=80\n") != NULL);
    /* JSON lines: the message's key=value pairs are members of the object */
    CHECK(strstr(text, "\"level\":\"warn\",\"svc\":\"svc\",\"event\":\"odd\",\"q\":"
                       "\"a\\\\b\"}\n") != NULL);
    CHECK(strstr(text, "\"event\":\"ckpt\",\"path\":\"/a\",\"tokens\":12,\"fvu\":0.50,"
                       "\"ok\":true,\"_level\":\"x\",\"err\":\"no \\\"x\\\"\"}\n") != NULL);
    CHECK(strstr(text, "\"event\":\"free\",\"msg\":\"not logfmt at all\"}\n") != NULL);
    log_set_stream(NULL);
    fclose(mem);
    free(text);
    log_init("test", LOG_LOGFMT, LOG_WARN);
}

static void test_files(void)
{
    char dir[] = "/tmp/sf_test_dir_XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[256];
    snprintf(path, sizeof path, "%s/a/b/c", dir);
    CHECK(file_mkdirs(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/a/file.txt", dir);
    CHECK(file_write_atomic(path, "first", 5) == 0);
    CHECK(file_write_atomic(path, "second!", 7) == 0);
    char *data;
    size_t len;
    CHECK(file_read_all(path, 100, &data, &len) == 0);
    CHECK(len == 7 && !memcmp(data, "second!", 7));
    free(data);
    CHECK(file_read_all(path, 3, &data, &len) == SF_ERANGE);
    CHECK(file_read_all("/nonexistent/x", 100, &data, &len) == SF_EIO);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static void test_rng(void)
{
    struct rng a, b;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    for (int i = 0; i < 100; i++) CHECK(rng_u64(&a) == rng_u64(&b));
    double sum = 0, sq = 0;
    int n = 100000;
    for (int i = 0; i < n; i++) {
        float x = rng_normal(&a);
        sum += x;
        sq += (double)x * x;
    }
    CHECK_NEAR(sum / n, 0.0, 0.02, 0);
    CHECK_NEAR(sq / n, 1.0, 0.02, 0);
    int counts[7] = {0};
    for (int i = 0; i < 70000; i++) counts[rng_below(&a, 7)]++;
    for (int i = 0; i < 7; i++) CHECK_NEAR(counts[i], 10000, 500, 0);
}

static void test_half(void)
{
    /* exact values */
    CHECK(f32_to_f16(1.0f) == 0x3c00);
    CHECK(f32_to_f16(-2.0f) == 0xc000);
    CHECK(f32_to_f16(65504.0f) == 0x7bff);
    CHECK(f32_to_f16(65520.0f) == 0x7c00); /* rounds to inf */
    CHECK(f32_to_f16(0x1.0p-24f) == 0x0001);
    CHECK(f16_to_f32(0x0001) == 0x1.0p-24f);
    CHECK(f16_to_f32(0x3555) == 0x1.554p-2f);
    CHECK(f32_to_bf16(1.0f) == 0x3f80);
    CHECK(bf16_to_f32(0x4049) == 3.140625f);
    /* every finite f16 round-trips through f32 */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00) continue;
        if (f32_to_f16(f16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK_EQ_INT(bad, 0);
    /* round to nearest even against a reference: pick the nearer f16 neighbour */
    struct rng r;
    rng_seed(&r, 1);
    int wrong = 0;
    for (int i = 0; i < 100000; i++) {
        float x = (float)((rng_uniform(&r) - 0.5) * 1000.0);
        uint16_t h = f32_to_f16(x);
        double err = fabs((double)f16_to_f32(h) - x);
        double lo = fabs((double)f16_to_f32((uint16_t)(h - 1)) - x);
        double hi = fabs((double)f16_to_f32((uint16_t)(h + 1)) - x);
        if (err > lo || err > hi) wrong++;
    }
    CHECK_EQ_INT(wrong, 0);
    int bwrong = 0;
    for (int i = 0; i < 100000; i++) {
        float x = (float)((rng_uniform(&r) - 0.5) * 1e6);
        uint16_t h = f32_to_bf16(x);
        double err = fabs((double)bf16_to_f32(h) - x);
        if (err > fabs((double)bf16_to_f32((uint16_t)(h - 1)) - x) ||
            err > fabs((double)bf16_to_f32((uint16_t)(h + 1)) - x))
            bwrong++;
    }
    CHECK_EQ_INT(bwrong, 0);
}

static void test_parse(void)
{
    int64_t v;
    double d;
    CHECK(parse_i64("123", &v) == 0 && v == 123);
    CHECK(parse_i64("12x", &v) == SF_EINVAL);
    CHECK(parse_i64("010", &v) == 0 && v == 10); /* decimal, not octal */
    CHECK(parse_i64("08", &v) == 0 && v == 8);
    CHECK(parse_i64("", &v) == SF_EINVAL);
    CHECK(parse_i64("99999999999999999999", &v) == SF_EINVAL);
    CHECK(parse_f64("1e-3", &d) == 0 && d == 1e-3);
    CHECK(parse_f64("1e-3z", &d) == SF_EINVAL);
    size_t out;
    CHECK(!size_mul_ok(SIZE_MAX / 2, 3, &out));
    CHECK(size_mul_ok(1000, 1000, &out) && out == 1000000);
    char list[] = " a, b ,,c , ";
    char *items[4];
    CHECK(str_split_list(list, items, 4) == 3);
    CHECK(!strcmp(items[0], "a") && !strcmp(items[1], "b") && !strcmp(items[2], "c"));
    char list2[] = "x,y,z";
    CHECK(str_split_list(list2, items, 2) == 2); /* capped */
    sig_install();
    CHECK(!sig_stop_requested());
    sig_request_stop();
    CHECK(sig_stop_requested());
}

int main(void)
{
    log_init("test", LOG_LOGFMT, LOG_WARN);
    test_buf();
    test_config();
    test_config_convention();
    test_env_expand_tail_json();
    test_progress();
    test_log();
    test_files();
    test_rng();
    test_half();
    test_parse();
    return check_exit();
}

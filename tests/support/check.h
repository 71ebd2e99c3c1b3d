/* A minimal test harness: CHECK(...) records a failure with file:line and goes on;
 * a test binary returns check_exit() from main(). Tests that need files from
 * ../shared call test_models_dir() / test_corpus_dir() and skip (exit 77) when absent. */
#ifndef SAEFLOW_TEST_CHECK_H
#define SAEFLOW_TEST_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

static int check_failures_;
static int check_count_;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        check_count_++;                                                                            \
        if (!(cond)) {                                                                             \
            check_failures_++;                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
    do {                                                                                           \
        check_count_++;                                                                            \
        if (!(cond)) {                                                                             \
            check_failures_++;                                                                     \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    CHECK_MSG((long long)(a) == (long long)(b), "%lld != %lld", (long long)(a), (long long)(b))

/* |a - b| <= atol + rtol * |b| */
#define CHECK_NEAR(a, b, atol, rtol)                                                               \
    CHECK_MSG(fabs((double)(a) - (double)(b)) <= (atol) + (rtol)*fabs((double)(b)),                \
              "%.9g vs %.9g", (double)(a), (double)(b))

static inline int check_exit(void)
{
    if (check_failures_) {
        fprintf(stderr, "FAILED: %d of %d checks\n", check_failures_, check_count_);
        return 1;
    }
    printf("ok: %d checks\n", check_count_);
    return 0;
}

#define TEST_SKIP 77

static inline const char *test_dir_env_(const char *env, const char *def)
{
    const char *d = getenv(env);
    if (!d || !*d) d = def;
    struct stat st;
    if (stat(d, &st) != 0 || !S_ISDIR(st.st_mode)) return NULL;
    return d;
}
/* NULL when the shared models are absent: the test should print why and return TEST_SKIP. */
static inline const char *test_models_dir(void)
{
    return test_dir_env_("SAEFLOW_MODELS", "../shared/models");
}
static inline const char *test_corpus_dir(void)
{
    return test_dir_env_("SAEFLOW_CORPUS", "../shared/corpus");
}

#endif

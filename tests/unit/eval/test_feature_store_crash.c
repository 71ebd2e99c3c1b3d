/* Crash test for the feature store: a writer process harvests an SAE (random model,
 * random SAE, 256 features) and writes it with harvest_store() again and again (a new
 * run each time), 4 features per atomic synced batch, reporting each acknowledged
 * batch (features [0, done) of the current run are stored) through a pipe. The parent
 * SIGKILLs it at random moments (seeded), ROUNDS times, and after each kill reopens
 * the store and checks:
 *   - no torn feature: every stats record present decodes, and the feature's three
 *     example records, logits and neighbours are present, decode and equal (byte for
 *     byte) what the same harvest builds in this process; no example / logits /
 *     neighbours record exists without its stats record;
 *   - every acknowledged feature is present (the largest acknowledged `done` of any
 *     round bounds a prefix that must be whole);
 *   - the SAE record and every run record decode, and reopening marked the killed run
 *     (and the SAE) failed: nothing is left "evaluating".
 * In the first round a reader follows the running writer as a RocksDB secondary
 * instance (feature_store_open_reader + catch_up) and must see the number of stored
 * features grow while the writer runs.
 *
 * The writer is this binary re-executed (/proc/self/exe --writer ...), never a bare
 * fork of a process that has RocksDB threads. SAEFLOW_TEST_SEED overrides the seed. */
#include <errno.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../support/check.h"
#include "eval/eval.h"
#include "eval/feature_store.h"
#include "eval/harvest.h"
#include "store/store.h"

enum { ROUNDS = 8, N_FEATURES = 256, CHUNK = 4 };
static const char *const SAE_ID = "crash/l1";

struct fixture {
    struct model *m;
    struct sae *sae;
    struct eval_data *data;
    struct harvest *hv;
};

static int fixture_make(struct fixture *fx)
{
    struct model_config c;
    memset(&c, 0, sizeof c);
    c.arch = MODEL_ARCH_LLAMA;
    c.dim = 16;
    c.hidden_dim = 32;
    c.n_layers = 2;
    c.n_heads = c.n_kv_heads = 2;
    c.head_dim = 8;
    c.vocab_size = 40;
    c.max_seq_len = 64;
    c.norm_eps = 1e-5f;
    c.rope_theta = 10000.0f;
    c.rope_dim = 8;
    c.bos_id = 1;
    c.eos_id = 2;
    if (model_new_random(&c, 5, 0.5f, &fx->m) != 0) return -1;
    struct rng g;
    rng_seed(&g, 3);
    enum { N_DOCS = 30 };
    int32_t *docs[N_DOCS];
    size_t lens[N_DOCS];
    for (size_t i = 0; i < N_DOCS; i++) {
        lens[i] = 20 + rng_below(&g, 40);
        docs[i] = malloc(lens[i] * sizeof(int32_t));
        docs[i][0] = 1;
        for (size_t j = 1; j < lens[i]; j++) docs[i][j] = 3 + (int32_t)rng_below(&g, 37);
    }
    int rc = eval_data_from_docs((const int32_t *const *)docs, lens, N_DOCS, 48, 0, 1, NULL, 40,
                                 &fx->data);
    for (size_t i = 0; i < N_DOCS; i++) free(docs[i]);
    if (rc) return -1;
    fx->sae = sae_new(SAE_TOPK, 16, N_FEATURES, 8);
    for (size_t i = 0; i < N_FEATURES * 16; i++) fx->sae->W_enc[i] = rng_normal(&g) * 0.3f;
    for (size_t i = 0; i < N_FEATURES * 16; i++) fx->sae->W_dec[i] = rng_normal(&g);
    for (size_t i = 0; i < N_FEATURES; i++) fx->sae->b_enc[i] = rng_normal(&g) * 0.2f;
    sae_normalize_decoder(fx->sae);
    snprintf(fx->sae->meta.hook_name, sizeof fx->sae->meta.hook_name, "blocks.1.hook_resid_post");
    struct harvest_opts o;
    harvest_opts_default(&o);
    o.window = 12;
    o.window_before = 8;
    o.chunk_features = CHUNK;
    return harvest_run(fx->m, fx->sae, fx->data, &o, &fx->hv);
}

static void fixture_free(struct fixture *fx)
{
    harvest_destroy(&fx->hv);
    sae_destroy(&fx->sae);
    eval_data_destroy(&fx->data);
    model_destroy(&fx->m);
}

/* ---------------------------------------------------------------- writer ---- */

struct wstate {
    int fd;
    int64_t sleep_ms;
    int go_fd; /* >= 0: after each acknowledgement wait for a byte here (EOF: run freely) */
};

static int on_progress(void *ud, uint32_t done, uint32_t n)
{
    struct wstate *w = ud;
    (void)n;
    if (write(w->fd, &done, sizeof done) != (ssize_t)sizeof done) return SF_EIO; /* parent gone */
    if (w->sleep_ms) time_sleep_ms(w->sleep_ms);
    if (w->go_fd >= 0) {
        char b;
        ssize_t r;
        do r = read(w->go_fd, &b, 1);
        while (r < 0 && errno == EINTR);
        if (r != 1) w->go_fd = -1;
    }
    return 0;
}

static int writer_main(const char *path, int fd, int64_t sleep_ms, int go_fd)
{
    struct fixture fx = {0};
    if (fixture_make(&fx) != 0) return 3;
    struct feature_store *fs;
    if (feature_store_open(&fs, path) != 0) return 4;
    struct wstate w = {.fd = fd, .sleep_ms = sleep_ms, .go_fd = go_fd};
    struct harvest_store_info si = {
        .sae_id = SAE_ID, .model = "random", .dataset = "docs", .metrics_json = "{\"fvu\":0.5}"};
    for (int run = 0; run < 1000; run++)
        if (harvest_store(fx.hv, fs, &si, NULL, on_progress, &w) != 0) break;
    feature_store_close(&fs);
    fixture_free(&fx);
    return 0;
}

/* ---------------------------------------------------------------- checker ---- */

static struct buf expect_enc[N_FEATURES]; /* encoded records but the run id */

static void encode_record(const struct feature_record *r, struct buf *out)
{
    struct feature_stats st = r->stats;
    st.run_id = 0;
    feature_stats_encode(&st, out);
    for (int k = 0; k < FEATURE_EX_KINDS; k++) feature_examples_encode(&r->examples[k], out);
    feature_logits_encode(&r->logits, out);
    feature_neighbours_encode(&r->neighbours, out);
}

struct verdict {
    int bad;
    uint32_t present; /* features with stats */
    uint32_t prefix;  /* features 0..prefix-1 all present */
    uint64_t runs, unfinished;
};

#define BAD(vd, ...)                                                                               \
    do {                                                                                           \
        if ((vd)->bad++ < 20) {                                                                    \
            fprintf(stderr, "  integrity: ");                                                      \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
        }                                                                                          \
    } while (0)

static int count_run(void *ud, const struct feature_run_info *r)
{
    struct verdict *vd = ud;
    vd->runs++;
    if (r->state == FEATURE_STATE_EVALUATING) vd->unfinished++;
    return 0;
}

static struct verdict verify(const char *path)
{
    struct verdict vd = {0};
    struct feature_store *fs;
    int rc = feature_store_open(&fs, path);
    if (rc != 0) {
        BAD(&vd, "reopen failed: %s", sf_strerror(rc));
        return vd;
    }
    bool prefix_open = true;
    struct buf b;
    buf_init(&b, 1 << 26);
    for (uint32_t f = 0; f < N_FEATURES; f++) {
        struct feature_record r;
        rc = feature_store_get_feature(fs, SAE_ID, f, &r);
        if (rc == SF_NOTFOUND) {
            prefix_open = false;
            continue;
        }
        if (rc != 0) {
            BAD(&vd, "feature %u: torn or undecodable (%s)", f, sf_strerror(rc));
            prefix_open = false;
            continue;
        }
        vd.present++;
        if (prefix_open) vd.prefix = f + 1;
        buf_reset(&b);
        encode_record(&r, &b);
        if (b.len != expect_enc[f].len || memcmp(b.data, expect_enc[f].data, b.len) != 0)
            BAD(&vd, "feature %u: contents differ from the harvest", f);
        feature_record_fini(&r);
    }
    buf_fini(&b);
    struct feature_sae s;
    rc = feature_store_get_sae(fs, SAE_ID, &s);
    if (rc == 0)
        feature_sae_fini(&s);
    else if (vd.present)
        BAD(&vd, "features without a readable SAE record (%s)", sf_strerror(rc));
    if (feature_store_list_runs(fs, SAE_ID, count_run, &vd) != 0) BAD(&vd, "run records");
    /* the reopening writer marked the killed run failed */
    if (vd.unfinished) BAD(&vd, "%" PRIu64 " runs still evaluating", vd.unfinished);
    feature_store_close(&fs);

    /* no part of a feature without its stats record */
    struct store *st;
    if (store_open(&st, path, feature_store_cf_names, FCF_COUNT, 0) != 0) {
        BAD(&vd, "raw reopen failed");
        return vd;
    }
    const enum feature_cf parts[3] = {FCF_EXAMPLES, FCF_LOGITS, FCF_NEIGHBOURS};
    for (int p = 0; p < 3; p++) {
        struct store_iter *it = store_iter_new(st, parts[p], NULL, 0);
        for (store_iter_seek_first(it); store_iter_valid(it); store_iter_next(it)) {
            size_t kl;
            const uint8_t *k = store_iter_key(it, &kl);
            size_t pl = strlen(SAE_ID) + 1;
            size_t want = pl + 4 + (parts[p] == FCF_EXAMPLES);
            if (kl != want || memcmp(k, SAE_ID, pl) != 0) {
                BAD(&vd, "unexpected key in %s", feature_store_cf_names[parts[p]]);
                continue;
            }
            void *v;
            size_t vl;
            if (store_get(st, FCF_FEATURES, k, pl + 4, &v, &vl) != 0)
                BAD(&vd, "%s record of feature %u without stats", feature_store_cf_names[parts[p]],
                    store_be32_get(k + pl));
            else
                store_free(v);
        }
        store_iter_destroy(&it);
    }
    store_close(&st);
    return vd;
}

/* ---------------------------------------------------------------- parent ---- */

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

/* Reads acknowledgements until the deadline (or until `want` more arrived). Updates
 * *max_done with the largest `done`. Returns false at EOF. */
static uint32_t last_done;

static bool read_acks(int fd, uint32_t *max_done, size_t *n_acks, int64_t deadline_ns, size_t want)
{
    size_t got = 0;
    for (;;) {
        int64_t left = deadline_ns - time_now_ns();
        if (left <= 0 || (want && got >= want)) return true;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, (int)(left / 1000000) + 1);
        if (pr < 0 && errno == EINTR) continue;
        if (pr <= 0) return true;
        uint32_t done;
        ssize_t n = read(fd, &done, sizeof done);
        if (n == 0) return false;
        if (n < 0 && errno == EINTR) continue;
        if (n != (ssize_t)sizeof done) return false;
        if (done > *max_done) *max_done = done;
        last_done = done;
        (*n_acks)++;
        got++;
    }
}

static pid_t spawn_writer(const char *path, int fd, int64_t sleep_ms, int go_fd)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char s_fd[16], s_sleep[16], s_go[16];
        snprintf(s_fd, sizeof s_fd, "%d", fd);
        snprintf(s_sleep, sizeof s_sleep, "%lld", (long long)sleep_ms);
        snprintf(s_go, sizeof s_go, "%d", go_fd);
        execl("/proc/self/exe", "test_feature_store_crash", "--writer", path, s_fd, s_sleep, s_go,
              (char *)NULL);
        _exit(126);
    }
    return pid;
}

static int count_stats(void *ud, const struct feature_stats *s)
{
    (void)s;
    (*(uint32_t *)ud)++;
    return 0;
}

int main(int argc, char **argv)
{
    log_init("test_feature_store_crash", LOG_LOGFMT, LOG_ERROR);
    if (argc == 6 && strcmp(argv[1], "--writer") == 0) {
        int64_t fd, sleep_ms, go_fd;
        if (parse_i64(argv[3], &fd) || parse_i64(argv[4], &sleep_ms) || parse_i64(argv[5], &go_fd))
            return 2;
        return writer_main(argv[2], (int)fd, sleep_ms, (int)go_fd);
    }
    uint64_t seed = 20261125;
    const char *env_seed = getenv("SAEFLOW_TEST_SEED");
    int64_t sv;
    if (env_seed && parse_i64(env_seed, &sv) == 0) seed = (uint64_t)sv;
    struct rng rng;
    rng_seed(&rng, seed);

    /* what every stored feature must equal */
    struct fixture fx = {0};
    if (fixture_make(&fx) != 0) {
        fprintf(stderr, "fixture failed\n");
        return 1;
    }
    struct feature_record *recs = calloc(N_FEATURES, sizeof *recs);
    CHECK_EQ_INT(harvest_build(fx.hv, 0, 0, N_FEATURES, recs), 0);
    for (size_t f = 0; f < N_FEATURES; f++) {
        buf_init(&expect_enc[f], 1 << 24);
        encode_record(&recs[f], &expect_enc[f]);
        feature_record_fini(&recs[f]);
    }
    free(recs);
    fixture_free(&fx);

    char root[256], path[300], sec[300];
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/sf_fcrash_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(path, sizeof path, "%s/db", root);
    snprintf(sec, sizeof sec, "%s/secondary", root);
    printf("feature store crash test: seed=%" PRIu64 " rounds=%d dir=%s\n", seed, ROUNDS, root);

    uint32_t acked = 0; /* largest acknowledged `done` of any round */
    size_t total_acks = 0, mid_run_kills = 0;
    bool reader_saw_growth = false;
    for (int round = 0; round < ROUNDS; round++) {
        int fds[2];
        if (pipe(fds) != 0) {
            perror("pipe");
            return 1;
        }
        /* round 0: the writer waits for the reader after each acknowledged chunk (in lock
         * step, whatever the machine's load), so the reader sees the store between chunks */
        int go[2] = {-1, -1};
        if (round == 0 && pipe(go) != 0) {
            perror("pipe");
            return 1;
        }
        pid_t pid = spawn_writer(path, fds[1], 0, go[0]);
        close(fds[1]);
        if (go[0] >= 0) close(go[0]);
        size_t n_acks = 0;
        uint32_t round_max = 0;
        last_done = 0;
        bool open_pipe = true;
        if (round == 0) {
            /* a reader follows the writer while it runs */
            open_pipe = read_acks(fds[0], &round_max, &n_acks, time_now_ns() + 60000000000LL, 1);
            struct feature_store *rd = NULL;
            CHECK_EQ_INT(feature_store_open_reader(&rd, path, sec), 0);
            uint32_t first = UINT32_MAX, last = 0;
            for (int i = 0; i < 4 && rd && open_pipe; i++) {
                uint32_t cnt = 0;
                if (feature_store_catch_up(rd) == 0 &&
                    feature_store_scan_stats(rd, SAE_ID, 0, count_stats, &cnt) == 0) {
                    if (first == UINT32_MAX) first = cnt;
                    last = cnt;
                }
                /* let the writer commit one more chunk, and wait for its acknowledgement */
                if (write(go[1], "g", 1) != 1) break;
                open_pipe =
                    read_acks(fds[0], &round_max, &n_acks, time_now_ns() + 60000000000LL, 1);
            }
            close(go[1]); /* the writer runs freely from here */
            go[1] = -1;
            printf("  reader: %u features at first look, %u later (writer still running)\n", first,
                   last);
            reader_saw_growth = first != UINT32_MAX && last > first;
            feature_store_close(&rd);
        } else if (round % 4 != 1) {
            /* rounds 1 and 5 kill at a random moment from the start (exec, open, WAL
             * recovery, harvest); the others after the first acknowledgement */
            open_pipe = read_acks(fds[0], &round_max, &n_acks, time_now_ns() + 60000000000LL, 1);
        }
        int64_t delay_ms = (int64_t)rng_below(&rng, round % 4 == 1 ? 1500 : round % 2 ? 700 : 150);
        if (open_pipe)
            read_acks(fds[0], &round_max, &n_acks, time_now_ns() + delay_ms * 1000000, 0);
        kill(pid, SIGKILL);
        int st = 0;
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
        }
        /* acknowledgements written before the kill still count */
        read_acks(fds[0], &round_max, &n_acks, time_now_ns() + 2000000000LL, 0); /* to EOF */
        close(fds[0]);
        if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGKILL)
            fprintf(stderr, "  round %d: writer ended on its own (status %d)\n", round, st);
        if (round_max > acked) acked = round_max;
        total_acks += n_acks;
        if (n_acks && last_done % N_FEATURES) mid_run_kills++;
        struct verdict vd = verify(path);
        printf("  round %d: killed after %lld ms, %zu acks (max done %u), present %u, whole "
               "prefix %u, runs %" PRIu64 "\n",
               round, (long long)delay_ms, n_acks, round_max, vd.present, vd.prefix, vd.runs);
        CHECK_EQ_INT(vd.bad, 0);
        CHECK_MSG(vd.prefix >= acked, "acknowledged features 0..%u, whole prefix only %u", acked,
                  vd.prefix);
    }
    CHECK_MSG(reader_saw_growth, "the secondary reader never saw new features while the writer "
                                 "ran");
    CHECK(total_acks > 0);
    printf("  %zu acknowledgements, %zu kills in the middle of a run\n", total_acks, mid_run_kills);
    for (size_t f = 0; f < N_FEATURES; f++) buf_fini(&expect_enc[f]);
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_exit();
}

/* saeflow up CONFIG: starts a local pipeline — saeflow-train and saeflow-capture as
 * child processes talking over ipc:// sockets in a run directory — from one config
 * file, shows live progress from the trainer's TrainMetrics (tokens/s, loss, FVU, L0,
 * dead %, ETA), and on Ctrl-C stops both cleanly (the trainer writes a resumable
 * checkpoint). Running it again resumes from that checkpoint.
 *
 * The config file: `name = value` lines. `capture.<opt>` and `train.<opt>` go to the
 * services as --<opt> flags; plain names are up's own. Values may use ${NAME} and
 * ${NAME:-default} for environment variables (deploy/demo.conf does).
 *   run_dir   = saeflow-run   sockets, logs, ledgers (checkpoints default below it)
 *   bin_dir   = (the directory of this saeflow binary)
 *   stop_s    = 60            how long to wait for the services after Ctrl-C
 *   progress_s = 10           without a terminal, a progress line this often (each once)
 * Both services take backend = cpu | cuda | auto and cuda_math = fp32 | tf32 | bf16
 * (e.g. `train.backend = auto`, `capture.backend = auto`); a cuda that cannot run
 * makes the service exit 1 at startup, and up with it.
 * Unless set, up fills in train.bind, train.publish, train.ckpt_dir, train.export_dir,
 * train.exit_when_done = true, capture.connect, capture.drain_s.
 *
 * Failure: when a service exits non-zero before up was asked to stop (a bad model path,
 * an unknown key, an unreadable file), up prints the last lines of its log, stops the
 * other one (SIGTERM, SIGKILL after a grace period) and exits 1. The services die with
 * up (PR_SET_PDEATHSIG), so killing up never leaves an orphaned trainer. Exit codes:
 * 0 both services finished, 1 a service failed, 2 a bad config. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"
#include "core/core.h"
#include "wire/wire.h"

#define UP_MAX_ARGS 128

struct argv_list {
    char *v[UP_MAX_ARGS + 1];
    size_t n;
};

static int argv_add(struct argv_list *a, const char *s)
{
    if (a->n >= UP_MAX_ARGS) return SF_ERANGE;
    a->v[a->n] = strdup(s);
    if (!a->v[a->n]) return SF_ENOMEM;
    a->n++;
    a->v[a->n] = NULL;
    return 0;
}

static void argv_free(struct argv_list *a)
{
    for (size_t i = 0; i < a->n; i++) free(a->v[i]);
    a->n = 0;
}

static bool argv_has(const struct argv_list *a, const char *flag)
{
    for (size_t i = 1; i < a->n; i++)
        if (flag_eq(a->v[i], flag)) return true;
    return false;
}

static const char *argv_get(const struct argv_list *a, const char *flag)
{
    for (size_t i = 1; i + 1 < a->n; i++)
        if (flag_eq(a->v[i], flag)) return a->v[i + 1];
    return NULL;
}

static int argv_default(struct argv_list *a, const char *flag, const char *value)
{
    if (argv_has(a, flag)) return 0;
    int rc = argv_add(a, flag);
    return rc ? rc : argv_add(a, value);
}

struct up_conf {
    char run_dir[4096];
    char bin_dir[4096];
    double stop_s;
    double progress_s; /* non-TTY progress period */
    struct argv_list cap, train;
};

static void trim(char **s, char **e)
{
    while (*s < *e && (**s == ' ' || **s == '\t' || **s == '\r')) (*s)++;
    while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t' || (*e)[-1] == '\r')) (*e)--;
}

static int parse_conf(const char *path, struct up_conf *c)
{
    char *text = NULL;
    size_t len = 0;
    if (file_read_all(path, 1 << 20, &text, &len) < 0) {
        fprintf(stderr, "saeflow up: cannot read %s\n", path);
        return SF_EIO;
    }
    int rc = 0;
    size_t lineno = 0;
    char *p = text, *end = text + len;
    while (p < end && rc == 0) {
        lineno++;
        char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        char *s = p, *e = eol;
        p = eol < end ? eol + 1 : end;
        char *hash = memchr(s, '#', (size_t)(e - s));
        if (hash) e = hash;
        trim(&s, &e);
        if (s == e) continue;
        char *eq = memchr(s, '=', (size_t)(e - s));
        if (!eq) {
            fprintf(stderr, "%s:%zu: expected 'name = value'\n", path, lineno);
            rc = SF_EINVAL;
            break;
        }
        char *ks = s, *ke = eq, *vs = eq + 1, *ve = e;
        trim(&ks, &ke);
        trim(&vs, &ve);
        if (ve - vs >= 2 && *vs == '"' && ve[-1] == '"') vs++, ve--;
        char key[128], val[4096];
        if (ke - ks <= 0 || (size_t)(ke - ks) >= sizeof key || (size_t)(ve - vs) >= sizeof val) {
            fprintf(stderr, "%s:%zu: bad name or value\n", path, lineno);
            rc = SF_EINVAL;
            break;
        }
        memcpy(key, ks, (size_t)(ke - ks));
        key[ke - ks] = 0;
        memcpy(val, vs, (size_t)(ve - vs));
        val[ve - vs] = 0;
        char expanded[4096], what[256];
        int erc = env_expand(val, expanded, sizeof expanded, what, sizeof what);
        if (erc == SF_ERANGE) {
            fprintf(stderr, "%s:%zu: value of '%s' too long once expanded\n", path, lineno, key);
            rc = SF_EINVAL;
            break;
        }
        if (erc < 0) {
            if (what[0] == '$')
                fprintf(stderr,
                        "%s:%zu: bad variable reference '%s' (use ${NAME} or ${NAME:-default})\n",
                        path, lineno, what);
            else
                fprintf(stderr,
                        "%s:%zu: environment variable %s is not set (or write ${%s:-default})\n",
                        path, lineno, what, what);
            rc = SF_EINVAL;
            break;
        }
        if (strstr(expanded, "@") && strchr(strchr(expanded, '@') + 1, '@')) {
            const char *a = strchr(expanded, '@');
            const char *b = strchr(a + 1, '@');
            bool placeholder = b > a + 1;
            for (const char *q = a + 1; q < b; q++)
                placeholder = placeholder && ((*q >= 'A' && *q <= 'Z') || *q == '_');
            if (placeholder) {
                fprintf(stderr, "%s:%zu: '%s' holds the unfilled placeholder %.*s\n", path, lineno,
                        key, (int)(b - a + 1), a);
                rc = SF_EINVAL;
                break;
            }
        }
        snprintf(val, sizeof val, "%s", expanded);
        char flag[160];
        if (!strncmp(key, "capture.", 8) || !strncmp(key, "train.", 6)) {
            bool cap = key[0] == 'c';
            snprintf(flag, sizeof flag, "--%s", key + (cap ? 8 : 6));
            struct argv_list *a = cap ? &c->cap : &c->train;
            rc = argv_add(a, flag);
            if (rc == 0) rc = argv_add(a, val);
        } else if (!strcmp(key, "run_dir")) {
            if (!val[0]) {
                fprintf(stderr, "%s:%zu: run_dir is empty\n", path, lineno);
                rc = SF_EINVAL;
            }
            snprintf(c->run_dir, sizeof c->run_dir, "%s", val);
        } else if (!strcmp(key, "progress_s")) {
            if (parse_f64(val, &c->progress_s) < 0 ||
                !(c->progress_s > 0 && c->progress_s <= 86400)) {
                fprintf(stderr, "%s:%zu: progress_s wants seconds in (0, 86400], got '%s'\n", path,
                        lineno, val);
                rc = SF_EINVAL;
            }
        } else if (!strcmp(key, "bin_dir")) {
            snprintf(c->bin_dir, sizeof c->bin_dir, "%s", val);
        } else if (!strcmp(key, "stop_s")) {
            if (parse_f64(val, &c->stop_s) < 0 || !(c->stop_s >= 0 && c->stop_s <= 86400)) {
                fprintf(stderr, "%s:%zu: stop_s wants seconds in [0, 86400], got '%s'\n", path,
                        lineno, val);
                rc = SF_EINVAL;
            }
        } else {
            fprintf(stderr,
                    "%s:%zu: unknown option '%s' (up's own: run_dir, bin_dir, stop_s, progress_s; "
                    "services': "
                    "capture.* / train.*)\n",
                    path, lineno, key);
            rc = SF_EINVAL;
        }
    }
    free(text);
    return rc;
}

static pid_t spawn(const struct argv_list *a, const char *log_path)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        setpgid(0, 0); /* Ctrl-C reaches only `up`, which forwards it once */
        /* die with up, however up dies (SIGKILL included): no orphaned trainer */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent) _exit(1);
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(a->v[0], a->v);
        fprintf(stderr, "exec %s: %s\n", a->v[0], strerror(errno));
        _exit(127);
    }
    return pid;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: saeflow up CONFIG\n"
               "  runs saeflow-train and saeflow-capture from one config file of name = value\n"
               "  lines: run_dir, bin_dir, stop_s, progress_s, and capture.<flag> / train.<flag>\n"
               "  for the services' own flags; ${NAME} and ${NAME:-default} read the\n"
               "  environment.\n"
               "  Example: deploy/demo.conf. Exit 0 done, 1 a service failed, 2 a bad config.\n");
}

struct child {
    const char *name; /* "train" or "capture" */
    pid_t pid;        /* -1 once reaped */
    int status;       /* exit code once reaped (128 + signal when killed) */
    char log[4200];
};

/* Prints the last lines of a failed service's log, where its error is. */
static void print_log_tail(const struct child *ch)
{
    char *tail = NULL;
    if (file_read_tail(ch->log, 1 << 16, 12, &tail) < 0 || !tail || !tail[0]) {
        fprintf(stderr, "saeflow up: %s left no log lines in %s\n", ch->name, ch->log);
        free(tail);
        return;
    }
    fprintf(stderr, "saeflow up: last lines of %s:\n", ch->log);
    for (char *line = tail, *nl; line && *line; line = nl ? nl + 1 : NULL) {
        nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (strstr(line, " event=config ")) continue; /* the effective config: no error */
        fprintf(stderr, "  | %s\n", line);
    }
    free(tail);
}

/* SIGTERM to every child still running, then SIGKILL after `grace_s`; reaps them. */
static void stop_children(struct child *ch, size_t n, double grace_s)
{
    for (size_t i = 0; i < n; i++)
        if (ch[i].pid > 0) kill(ch[i].pid, SIGTERM);
    double deadline = time_now_s() + grace_s;
    bool killed = false;
    for (;;) {
        bool alive = false;
        for (size_t i = 0; i < n; i++) {
            if (ch[i].pid <= 0) continue;
            int st;
            pid_t w = waitpid(ch[i].pid, &st, WNOHANG);
            if (w == ch[i].pid || (w < 0 && errno == ECHILD)) {
                ch[i].status = w < 0 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                ch[i].pid = -1;
            } else {
                alive = true;
            }
        }
        if (!alive) return;
        if (!killed && time_now_s() > deadline) {
            for (size_t i = 0; i < n; i++) {
                if (ch[i].pid <= 0) continue;
                fprintf(stderr, "saeflow up: %s did not stop in %.0f s: SIGKILL\n", ch[i].name,
                        grace_s);
                kill(ch[i].pid, SIGKILL);
            }
            killed = true;
        }
        time_sleep_ms(20);
    }
}

int cmd_up(int argc, char **argv)
{
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc != 2) {
        usage(stderr);
        return 2;
    }
    struct up_conf c = {.stop_s = 60, .progress_s = 10};
    snprintf(c.run_dir, sizeof c.run_dir, "saeflow-run");
    char self[PATH_MAX];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl > 0) {
        self[sl] = 0;
        char *slash = strrchr(self, '/');
        if (slash) *slash = 0;
        snprintf(c.bin_dir, sizeof c.bin_dir, "%s", self);
    }
    char bin[4300], ep_train[4200], ep_pub[4200], tmp[4300];
    int ret = 2;
    struct child ch[2] = {{.name = "train", .pid = -1}, {.name = "capture", .pid = -1}};
    struct child *tr = &ch[0], *cp = &ch[1];
    struct wire_sock *sub = NULL;
    if (argv_add(&c.cap, "") < 0 || argv_add(&c.train, "") < 0) goto out;
    if (parse_conf(argv[1], &c) < 0) goto out;
    if (file_mkdirs(c.run_dir, 0755) < 0) {
        fprintf(stderr, "saeflow up: cannot create the run directory %s: %s\n", c.run_dir,
                strerror(errno));
        goto out;
    }
    char run_abs[PATH_MAX];
    if (!realpath(c.run_dir, run_abs)) {
        fprintf(stderr, "saeflow up: cannot resolve the run directory %s: %s\n", c.run_dir,
                strerror(errno));
        goto out;
    }
    free(c.train.v[0]);
    snprintf(bin, sizeof bin, "%s/saeflow-train", c.bin_dir);
    c.train.v[0] = strdup(bin);
    free(c.cap.v[0]);
    snprintf(bin, sizeof bin, "%s/saeflow-capture", c.bin_dir);
    c.cap.v[0] = strdup(bin);
    if (!c.train.v[0] || !c.cap.v[0]) goto out;
    for (size_t i = 0; i < 2; i++) {
        const char *b = i ? c.cap.v[0] : c.train.v[0];
        if (access(b, X_OK) < 0) {
            fprintf(stderr, "saeflow up: %s is not an executable (set bin_dir)\n", b);
            goto out;
        }
    }
    snprintf(ep_train, sizeof ep_train, "ipc://%s/train.sock", run_abs);
    snprintf(ep_pub, sizeof ep_pub, "ipc://%s/metrics.sock", run_abs);
    int rc = argv_default(&c.train, "--bind", ep_train);
    if (rc == 0) rc = argv_default(&c.train, "--publish", ep_pub);
    snprintf(tmp, sizeof tmp, "%s/checkpoints", run_abs);
    if (rc == 0) rc = argv_default(&c.train, "--ckpt_dir", tmp);
    snprintf(tmp, sizeof tmp, "%s/sae", run_abs);
    if (rc == 0) rc = argv_default(&c.train, "--export_dir", tmp);
    if (rc == 0) rc = argv_default(&c.train, "--exit_when_done", "true");
    snprintf(tmp, sizeof tmp, "%s/train.ledger", run_abs);
    if (rc == 0) rc = argv_default(&c.train, "--ledger", tmp);
    if (rc == 0) rc = argv_default(&c.cap, "--connect", argv_get(&c.train, "--bind"));
    if (rc == 0) rc = argv_default(&c.cap, "--drain_s", "10");
    snprintf(tmp, sizeof tmp, "%s/capture.ledger", run_abs);
    if (rc == 0) rc = argv_default(&c.cap, "--ledger", tmp);
    if (rc < 0) {
        fprintf(stderr, "saeflow up: %s: too many options (at most %d per service)\n", argv[1],
                UP_MAX_ARGS / 2);
        goto out;
    }
    double total = 0;
    const char *mt = argv_get(&c.cap, "--max_tokens");
    if (mt) (void)parse_f64(mt, &total);

    ret = 1;
    sig_install();
    snprintf(tr->log, sizeof tr->log, "%s/train.log", run_abs);
    snprintf(cp->log, sizeof cp->log, "%s/capture.log", run_abs);
    sub = wire_sock_new(WIRE_SUB, argv_get(&c.train, "--publish"), WIRE_CONNECT, NULL);
    if (!sub || wire_subscribe(sub, "") < 0) {
        fprintf(stderr, "saeflow up: cannot subscribe to %s (see the log line above)\n",
                argv_get(&c.train, "--publish"));
        goto out;
    }
    tr->pid = spawn(&c.train, tr->log);
    if (tr->pid < 0) {
        fprintf(stderr, "saeflow up: cannot start %s: %s\n", c.train.v[0], strerror(errno));
        goto out;
    }
    cp->pid = spawn(&c.cap, cp->log);
    if (cp->pid < 0) {
        fprintf(stderr, "saeflow up: cannot start %s: %s\n", c.cap.v[0], strerror(errno));
        goto out;
    }
    printf("saeflow up: run directory %s\n", run_abs);
    printf("saeflow up: train pid %d (log %s), capture pid %d (log %s)\n", (int)tr->pid, tr->log,
           (int)cp->pid, cp->log);
    printf("saeflow up: Ctrl-C stops both; the trainer checkpoints and resumes next time\n");
    fflush(stdout);

    bool tty = isatty(1);
    bool stopping = false, train_signalled = false, failed = false, stalled = false;
    double stop_deadline = 0, last_news = time_now_s();
    uint64_t last_tokens = 0;
    struct progress prog; /* non-TTY: a line every progress_s, each line once */
    progress_init(&prog, stdout, c.progress_s);
    struct wire_msg m = {0};
    Saeflow__TrainMetrics last = SAEFLOW__TRAIN_METRICS__INIT;
    bool have = false;
    char hook[WIRE_MAX_NAME_LEN + 1] = "";
    while (tr->pid > 0 || cp->pid > 0) {
        /* Ctrl-C: stop capture first, so that the trainer commits (and acks) every batch
         * it has before it is stopped itself and writes its final checkpoint */
        if (sig_stop_requested() && !stopping) {
            stopping = true;
            stop_deadline = time_now_s() + c.stop_s;
            progress_end(&prog);
            printf("saeflow up: stopping capture, then train\n");
            fflush(stdout);
            if (cp->pid > 0) kill(cp->pid, SIGINT);
        }
        if (stopping && !train_signalled && tr->pid > 0 &&
            (cp->pid < 0 || time_now_s() > stop_deadline - c.stop_s / 2)) {
            kill(tr->pid, SIGINT);
            train_signalled = true;
        }
        if (stopping && time_now_s() > stop_deadline) {
            fprintf(stderr, "saeflow up: services did not stop in %.0f s: SIGKILL\n", c.stop_s);
            if (cp->pid > 0) kill(cp->pid, SIGKILL);
            if (tr->pid > 0) kill(tr->pid, SIGKILL);
            stop_deadline = time_now_s() + 5;
        }
        /* capture has ended but train goes on waiting for data that will not come (capture
         * sent nothing it knew of): after stop_s without a new token, stop train */
        if (!stopping && cp->pid < 0 && tr->pid > 0 && time_now_s() - last_news > c.stop_s) {
            progress_end(&prog);
            fprintf(stderr,
                    "saeflow up: capture has ended and train has had no new tokens for %.0f s: "
                    "stopping train (check capture's log %s)\n",
                    c.stop_s, cp->log);
            print_log_tail(cp);
            stalled = stopping = true;
            stop_deadline = time_now_s() + c.stop_s;
        }
        rc = wire_recv(sub, &m, 100);
        if (rc == 0 && m.kind == WIRE_METRICS) {
            const Saeflow__TrainMetrics *t = m.metrics;
            if (t->tokens_seen != last_tokens) last_news = time_now_s();
            last_tokens = t->tokens_seen;
            last.tokens_seen = t->tokens_seen;
            last.loss = t->loss;
            last.fvu = t->fvu;
            last.l0 = t->l0;
            last.dead_fraction = t->dead_fraction;
            last.tokens_per_s = t->tokens_per_s;
            last.step = t->step;
            snprintf(hook, sizeof hook, "%s", t->hook_name);
            have = true;
        } else if (rc == 0 && m.kind == WIRE_CHECKPOINT) {
            if (!tty)
                printf("checkpoint %s step=%llu\n", m.checkpoint->path,
                       (unsigned long long)m.checkpoint->step);
        }
        wire_msg_fini(&m);
        if (have) {
            char eta[32] = "-";
            if (total > 0 && last.tokens_per_s > 0 && total > (double)last.tokens_seen)
                snprintf(eta, sizeof eta, "%.0fs",
                         (total - (double)last.tokens_seen) / last.tokens_per_s);
            progress_update(
                &prog, false,
                "%s tokens=%llu tok/s=%.0f loss=%.4f fvu=%.4f l0=%.1f dead=%.1f%% eta=%s", hook,
                (unsigned long long)last.tokens_seen, last.tokens_per_s, last.loss, last.fvu,
                last.l0, 100.0 * last.dead_fraction, eta);
        }
        for (size_t i = 0; i < 2; i++) {
            int status;
            if (ch[i].pid <= 0 || waitpid(ch[i].pid, &status, WNOHANG) != ch[i].pid) continue;
            int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            ch[i].status = code;
            ch[i].pid = -1;
            last_news = time_now_s();
            progress_end(&prog);
            printf("saeflow up: %s exited with %d\n", ch[i].name, code);
            fflush(stdout);
            if (code != 0 && !stopping) {
                /* a service that fails on its own (bad model path, unknown flag, unreadable
                 * input) fails the run: say why, stop the other one, exit non-zero */
                failed = true;
                fprintf(stderr, "saeflow up: %s failed (exit %d); stopping the pipeline\n",
                        ch[i].name, code);
                print_log_tail(&ch[i]);
                stop_children(ch, 2, c.stop_s < 15 ? c.stop_s : 15);
                break;
            }
            /* without its consumer, capture cannot finish: stop it too */
            if (&ch[i] == tr && cp->pid > 0 && !stopping) {
                stopping = true;
                stop_deadline = time_now_s() + c.stop_s;
                kill(cp->pid, SIGINT);
            }
        }
    }
    if (failed) goto out;
    printf("saeflow up: checkpoints in %s, SAE export in %s\n", argv_get(&c.train, "--ckpt_dir"),
           argv_get(&c.train, "--export_dir"));
    ret = (tr->status == 0 && cp->status == 0 && !stalled) ? 0 : 1;
    if (ret) {
        for (size_t i = 0; i < 2; i++)
            if (ch[i].status != 0) print_log_tail(&ch[i]);
    }
out:
    stop_children(ch, 2, 5);
    wire_sock_destroy(&sub);
    argv_free(&c.cap);
    argv_free(&c.train);
    return ret;
}

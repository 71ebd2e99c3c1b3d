/* `saeflow feature show [--store DIR] SAE_ID FEATURE`: a feature's dashboard in the
 * terminal, read from the feature store (common/eval/feature_store.h) through a
 * RocksDB secondary instance, so it works while eval is still writing:
 *   stats (density, max and mean activation), an activation histogram drawn with
 *   block characters, logit effects (top / bottom tokens), nearest features by
 *   decoder cosine, top activating examples, interval and quantile groups, each token's
 *   activation as an ANSI 256-colour background (--color never, NO_COLOR or a
 *   non-TTY stdout turn colour off: activating tokens are then marked «like this»).
 * The store defaults to $SAEFLOW_FEATURE_STORE, then $SAEFLOW_STORE (or `store =` in
 * a --config file). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_feature.h"
#include "core/core.h"
#include "eval/feature_store.h"

#define HIST_ROWS 6

/* A vertical bar chart: HIST_ROWS rows of eighth blocks, one column per bin (bins are
 * merged so that at most `width` columns are drawn). */
static void draw_histogram(const uint32_t *hist, size_t n, float max_act, size_t width)
{
    static const char *eighths[] = {" ",
                                    "\xe2\x96\x81",
                                    "\xe2\x96\x82",
                                    "\xe2\x96\x83",
                                    "\xe2\x96\x84",
                                    "\xe2\x96\x85",
                                    "\xe2\x96\x86",
                                    "\xe2\x96\x87",
                                    "\xe2\x96\x88"};
    if (n == 0) return;
    size_t per = (n + width - 1) / width, cols = (n + per - 1) / per;
    uint64_t *c = calloc(cols, sizeof *c), mx = 0, total = 0;
    if (!c) return;
    for (size_t i = 0; i < n; i++) {
        c[i / per] += hist[i];
        total += hist[i];
    }
    for (size_t i = 0; i < cols; i++) mx = SF_MAX(mx, c[i]);
    if (mx == 0) {
        printf("  (no activations recorded)\n");
        free(c);
        return;
    }
    for (size_t row = HIST_ROWS; row-- > 0;) {
        if (row == HIST_ROWS - 1)
            printf("%9llu \xe2\x94\xa4", (unsigned long long)mx);
        else
            printf("%9s \xe2\x94\x82", "");
        for (size_t i = 0; i < cols; i++) {
            /* height in eighths of a row */
            double h = (double)c[i] / (double)mx * HIST_ROWS * 8.0;
            double fill = h - (double)row * 8.0;
            size_t e = fill >= 8 ? 8 : fill <= 0 ? 0 : (size_t)(fill + 0.5);
            if (e == 0 && row == 0 && c[i] > 0) e = 1; /* non-empty bins stay visible */
            printf("%s", eighths[e]);
        }
        printf("\n");
    }
    printf("%9s \xe2\x94\x94", "");
    for (size_t i = 0; i < cols; i++) printf("\xe2\x94\x80");
    printf("\n%10s 0%*s%.3g\n", "", (int)(cols > 6 ? cols - 5 : 1), "", (double)max_act);
    printf("%10s %llu activations in %zu bins of width %.3g\n", "", (unsigned long long)total, cols,
           cols ? (double)max_act / (double)cols : 0.0);
    free(c);
}

/* One example: its tokens with heat by act / max, the window cut to at most `before`
 * tokens before the activating token and `after` after it. */
static void print_example(const struct feature_example *ex, float max, bool color, size_t before,
                          size_t after, struct buf *line)
{
    buf_reset(line);
    size_t lo = ex->center > before ? ex->center - before : 0;
    size_t hi = SF_MIN((size_t)ex->n_tok, (size_t)ex->center + after + 1);
    if (lo > 0) buf_append(line, "\xe2\x80\xa6", 3);
    for (size_t i = lo; i < hi; i++) {
        size_t a = i ? ex->text_end[i - 1] : 0, b = ex->text_end[i];
        float frac = max > 0 && ex->acts[i] > 0 ? SF_MAX(ex->acts[i] / max, 0.01f) : 0.0f;
        tty_token(line, ex->text + a, b - a, frac, color);
    }
    if (hi < ex->n_tok) buf_append(line, "\xe2\x80\xa6", 3);
}

/* Interval or quantile groups, strongest first, each titled with its range and the
 * share of the feature's activations it holds (count / fires), with examples. */
static void print_groups(const char *title, const struct feature_stats *st,
                         const struct feature_bin *bins, size_t n_bins,
                         const struct feature_examples *ex, size_t per_group, bool color,
                         size_t before, size_t after, struct buf *line)
{
    if (n_bins == 0 || ex->n == 0) return;
    printf("\n%s:\n", title);
    for (size_t g = n_bins; g-- > 0;) {
        const struct feature_bin *b = &bins[g];
        printf("  [%.3g, %.3g]  %llu activations, %.1f%% of the feature's\n", (double)b->lo,
               (double)b->hi, (unsigned long long)b->count,
               st->fires ? 100.0 * (double)b->count / (double)st->fires : 0.0);
        size_t shown = 0;
        for (size_t q = 0; q < ex->n && shown < per_group; q++) {
            if (ex->ex[q].group != g) continue;
            print_example(&ex->ex[q], st->max_act, color, before, after, line);
            printf("       %7.3f  %s\n", (double)ex->ex[q].act, line->data ? line->data : "");
            shown++;
        }
    }
}

static void print_piece(const char *s)
{
    struct buf b;
    buf_init(&b, 4096);
    tty_token(&b, s, strlen(s), 0, false);
    printf("\"%s\"", b.data ? b.data : "");
    buf_fini(&b);
}

static void json_bins(struct buf *b, const char *key, const struct feature_bin *bins, size_t n)
{
    buf_printf(b, ",\"%s\":[", key);
    for (size_t i = 0; i < n; i++) {
        buf_printf(b, "%s{\"lo\":", i ? "," : "");
        buf_json_number(b, bins[i].lo);
        buf_printf(b, ",\"hi\":");
        buf_json_number(b, bins[i].hi);
        buf_printf(b, ",\"count\":%llu}", (unsigned long long)bins[i].count);
    }
    buf_printf(b, "]");
}

static void json_examples(struct buf *b, const char *key, const struct feature_examples *e,
                          size_t max)
{
    buf_printf(b, ",\"%s\":[", key);
    for (size_t q = 0; q < e->n && q < max; q++) {
        const struct feature_example *x = &e->ex[q];
        buf_printf(b, "%s{\"group\":%u,\"act\":", q ? "," : "", x->group);
        buf_json_number(b, x->act);
        buf_printf(b, ",\"center\":%u,\"text\":", x->center);
        buf_json_stringn(b, x->text, x->text_len);
        buf_printf(b, ",\"tokens\":[");
        for (size_t i = 0; i < x->n_tok; i++) buf_printf(b, "%s%u", i ? "," : "", x->tokens[i]);
        buf_printf(b, "],\"pieces\":[");
        for (size_t i = 0; i < x->n_tok; i++) {
            size_t a = i ? x->text_end[i - 1] : 0, z = x->text_end[i];
            if (i) buf_putc(b, ',');
            buf_json_stringn(b, x->text + a, z >= a && z <= x->text_len ? z - a : 0);
        }
        buf_printf(b, "],\"acts\":[");
        for (size_t i = 0; i < x->n_tok; i++) {
            if (i) buf_putc(b, ',');
            buf_json_number(b, x->acts[i]);
        }
        buf_printf(b, "]}");
    }
    buf_printf(b, "]");
}

/* The dashboard's facts as one JSON object. */
static int feature_json(const char *path, const struct feature_sae *sae, int64_t feat,
                        const struct feature_record *rec, size_t n_top, size_t per_group,
                        size_t n_logits)
{
    const struct feature_stats *st = &rec->stats;
    struct buf b;
    buf_init(&b, (size_t)1 << 28);
    buf_printf(&b, "{\"store\":");
    buf_json_string(&b, path);
    buf_printf(&b, ",\"sae_id\":");
    buf_json_string(&b, sae->sae_id);
    buf_printf(&b, ",\"feature\":%lld,\"run\":%llu,\"sae_state\":", (long long)feat,
               (unsigned long long)st->run_id);
    buf_json_string(&b, feature_state_name(sae->state));
    buf_printf(&b, ",\"model\":");
    buf_json_string(&b, sae->model);
    buf_printf(&b, ",\"hook\":");
    buf_json_string(&b, sae->hook);
    buf_printf(&b, ",\"arch\":");
    buf_json_string(&b, sae->arch);
    buf_printf(&b, ",\"d_in\":%u,\"d_sae\":%u,\"k\":%u", sae->d_in, sae->d_sae, sae->k);
    buf_printf(&b,
               ",\"n_tokens\":%llu,\"fires\":%llu,\"density\":", (unsigned long long)st->n_tokens,
               (unsigned long long)st->fires);
    buf_json_number(&b, feature_stats_density(st));
    buf_printf(&b, ",\"log10_density\":");
    buf_json_number(&b, feature_stats_log10_density(st));
    buf_printf(&b, ",\"max_act\":");
    buf_json_number(&b, st->max_act);
    buf_printf(&b, ",\"mean_act\":");
    buf_json_number(&b, feature_stats_mean_act(st));
    buf_printf(&b, ",\"histogram\":[");
    for (size_t i = 0; i < st->n_hist; i++) buf_printf(&b, "%s%u", i ? "," : "", st->hist[i]);
    buf_printf(&b, "]");
    json_bins(&b, "intervals", st->intervals, st->n_intervals);
    json_bins(&b, "quantiles", st->quantiles, st->n_quantiles);
    const struct feature_logits *lg = &rec->logits;
    for (int side = 0; side < 2; side++) {
        const struct feature_logit *l = side ? lg->bottom : lg->top;
        size_t n = side ? lg->n_bottom : lg->n_top;
        buf_printf(&b, ",\"%s\":[", side ? "suppresses" : "promotes");
        for (size_t q = 0; q < n && q < n_logits; q++) {
            buf_printf(&b, "%s{\"token\":%u,\"piece\":", q ? "," : "", l[q].token);
            buf_json_string(&b, l[q].piece);
            buf_printf(&b, ",\"value\":");
            buf_json_number(&b, l[q].value);
            buf_printf(&b, "}");
        }
        buf_printf(&b, "]");
    }
    buf_printf(&b, ",\"neighbours\":[");
    for (size_t q = 0; q < rec->neighbours.n; q++) {
        buf_printf(&b, "%s{\"feature\":%u,\"cosine\":", q ? "," : "",
                   rec->neighbours.nb[q].feature);
        buf_json_number(&b, rec->neighbours.nb[q].cosine);
        buf_printf(&b, "}");
    }
    buf_printf(&b, "]");
    json_examples(&b, "top_examples", &rec->examples[FEATURE_EX_TOP], n_top);
    size_t groups = per_group * (size_t)SF_MAX(st->n_intervals, st->n_quantiles);
    json_examples(&b, "interval_examples", &rec->examples[FEATURE_EX_INTERVAL], groups);
    json_examples(&b, "quantile_examples", &rec->examples[FEATURE_EX_QUANTILE], groups);
    int rc = buf_printf(&b, "}\n");
    if (rc == 0)
        fwrite(b.data, 1, b.len, stdout);
    else
        fprintf(stderr, "saeflow feature show: the JSON is too large\n");
    buf_fini(&b);
    return rc == 0 ? 0 : 1;
}

int cmd_feature_show(int argc, char **argv)
{
    char *store = NULL, *color_mode = NULL;
    int64_t n_top = 0, per_group = 0, width = 0, ctx_before = 0, ctx_after = 0, n_logits = 0;
    bool no_color = false, json = false;
    const struct config_opt opts[] = {
        {"store", CFG_STRING, &store, NULL, 0, -1, "feature store directory"},
        {"json", CFG_BOOL, &json, "false", 0, -1, "print one JSON object instead"},
        {"examples", CFG_INT, &n_top, "10", 0, 4096, "top examples shown"},
        {"per-group", CFG_INT, &per_group, "2", 0, 4096,
         "examples per interval / quantile group (0: no groups)"},
        {"logits", CFG_INT, &n_logits, "8", 0, 64, "top / bottom tokens shown"},
        {"hist-width", CFG_INT, &width, "48", 8, 512, "histogram columns"},
        {"before", CFG_INT, &ctx_before, "24", 0, 4096, "tokens shown before the activation"},
        {"after", CFG_INT, &ctx_after, "8", 0, 4096, "tokens shown after it"},
        {"color", CFG_STRING, &color_mode, "auto", 0, -1, "auto | always | never"},
        {"no-color", CFG_BOOL, &no_color, "false", 0, -1, "same as --color never"},
    };
    struct config cfg = {.service = "feature",
                         .usage = "saeflow feature show [--store DIR] SAE_ID FEATURE",
                         .opts = opts,
                         .n_opts = SF_ARRAY_LEN(opts)};
    int rc = config_load(&cfg, argc, argv);
    int ret = 2;
    struct feature_store *fs = NULL;
    struct feature_sae sae;
    struct feature_record rec;
    bool have_sae = false, have_rec = false;
    struct buf line;
    buf_init(&line, 1u << 22);
    memset(&sae, 0, sizeof sae);
    memset(&rec, 0, sizeof rec);
    if (rc == SF_EXIT) {
        ret = 0;
        goto done;
    }
    if (rc) goto done;
    log_set_level(cfg.log_level);
    int64_t feat = -1;
    if (cfg.n_positional != 2 || parse_i64(cfg.positional[1], &feat) != 0 || feat < 0 ||
        feat > UINT32_MAX) {
        fprintf(stderr, "usage: %s\n", cfg.usage);
        goto done;
    }
    const char *id = cfg.positional[0];
    if (feature_store_check_id(id) != 0) {
        fprintf(stderr, "saeflow feature show: '%s' is not a valid SAE id\n", id);
        goto done;
    }
    const char *path = *store ? store : env_or("SAEFLOW_STORE", "");
    if (!*path) {
        fprintf(stderr,
                "saeflow feature show: no store: pass --store DIR (or set SAEFLOW_STORE)\n");
        goto done;
    }
    ret = 1;
    rc = feature_store_open_reader(&fs, path, NULL);
    if (rc) {
        fprintf(stderr, "saeflow feature show: cannot open the feature store %s (%s)\n", path,
                rc == SF_NOTFOUND ? "no store there" : sf_strerror(rc));
        goto done;
    }
    rc = feature_store_get_sae(fs, id, &sae);
    if (rc) {
        fprintf(stderr, "saeflow feature show: SAE '%s' is not in %s (%s)\n", id, path,
                rc == SF_NOTFOUND ? "not found" : sf_strerror(rc));
        goto done;
    }
    have_sae = true;
    if (feat >= sae.d_sae) {
        fprintf(stderr, "saeflow feature show: feature %lld out of range (SAE has %u)\n",
                (long long)feat, sae.d_sae);
        goto done;
    }
    rc = feature_store_get_feature(fs, id, (uint32_t)feat, &rec);
    if (rc) {
        fprintf(stderr, "saeflow feature show: feature %lld of %s: %s\n", (long long)feat, id,
                rc == SF_NOTFOUND ? "not harvested yet (state of the SAE: " : sf_strerror(rc));
        if (rc == SF_NOTFOUND) fprintf(stderr, "%s)\n", feature_state_name(sae.state));
        goto done;
    }
    have_rec = true;
    if (json) {
        ret = feature_json(path, &sae, feat, &rec, (size_t)n_top, (size_t)per_group,
                           (size_t)n_logits);
        goto done;
    }
    bool color = !no_color && tty_use_color(color_mode);
    const struct feature_stats *st = &rec.stats;

    printf("feature %lld of %s   (store %s, run %llu, SAE state %s)\n", (long long)feat, id, path,
           (unsigned long long)st->run_id, feature_state_name(sae.state));
    printf("  model %s  hook %s  %s  d_in %u  d_sae %u  k %u\n", sae.model, sae.hook, sae.arch,
           sae.d_in, sae.d_sae, sae.k);
    printf("\ndensity %.4g%% (log10 %.2f)   fires on %llu of %llu tokens   max act %.4g   "
           "mean act %.4g\n",
           100.0 * feature_stats_density(st), feature_stats_log10_density(st),
           (unsigned long long)st->fires, (unsigned long long)st->n_tokens, (double)st->max_act,
           feature_stats_mean_act(st));

    printf("\nactivation histogram (when firing):\n");
    draw_histogram(st->hist, st->n_hist, st->max_act, (size_t)width);

    const struct feature_logits *lg = &rec.logits;
    if (n_logits && (lg->n_top || lg->n_bottom)) {
        printf("\nlogit effects (W_U W_dec, after the final norm weight):\n  promotes:  ");
        for (size_t q = 0; q < lg->n_top && q < (size_t)n_logits; q++) {
            print_piece(lg->top[q].piece);
            printf(" %+.3f  ", (double)lg->top[q].value);
        }
        printf("\n  suppresses:");
        for (size_t q = 0; q < lg->n_bottom && q < (size_t)n_logits; q++) {
            printf(" ");
            print_piece(lg->bottom[q].piece);
            printf(" %+.3f ", (double)lg->bottom[q].value);
        }
        printf("\n");
    }
    const struct feature_neighbours *nb = &rec.neighbours;
    if (nb->n) {
        printf("\nnearest features (decoder cosine):");
        for (size_t q = 0; q < nb->n && q < 10; q++)
            printf(" %u (%.3f)", nb->nb[q].feature, (double)nb->nb[q].cosine);
        printf("\n");
    }

    const struct feature_examples *top = &rec.examples[FEATURE_EX_TOP];
    printf("\ntop activating examples (%u stored):\n", top->n);
    for (size_t q = 0; q < top->n && q < (size_t)n_top; q++) {
        print_example(&top->ex[q], st->max_act, color, (size_t)ctx_before, (size_t)ctx_after,
                      &line);
        printf("  %3zu %7.3f  %s\n", q + 1, (double)top->ex[q].act, line.data ? line.data : "");
    }
    if (per_group) {
        print_groups("interval groups (equal-width activation bins)", st, st->intervals,
                     st->n_intervals, &rec.examples[FEATURE_EX_INTERVAL], (size_t)per_group, color,
                     (size_t)ctx_before, (size_t)ctx_after, &line);
        print_groups("quantile groups (equal-count slices)", st, st->quantiles, st->n_quantiles,
                     &rec.examples[FEATURE_EX_QUANTILE], (size_t)per_group, color,
                     (size_t)ctx_before, (size_t)ctx_after, &line);
    }
    ret = 0;
done:
    if (have_rec) feature_record_fini(&rec);
    if (have_sae) feature_sae_fini(&sae);
    feature_store_close(&fs);
    buf_fini(&line);
    config_free(&cfg);
    return ret;
}

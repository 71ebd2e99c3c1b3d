/* sae_io: export -> import round trips for every architecture (bit-exact weights),
 * norm_scale folding (same x -> x_hat on raw inputs), sparsify round trips, F16/BF16
 * weights, directory replacement rules, and every kind of corrupt input (missing
 * files, keys and tensors, wrong shapes, mismatched sizes, unknown architecture,
 * non-finite weights) returning a clear error instead of crashing. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../support/check.h"
#include "core/core.h"
#include "sae/sae.h"
#include "sae/sae_io.h"
#include "safetensors/safetensors.h"

static char root[256];

static struct sae *random_sae(enum sae_arch arch, size_t d, size_t n, size_t k, uint64_t seed)
{
    struct sae *s = sae_new(arch, d, n, k);
    if (!s) return NULL;
    struct rng r;
    rng_seed(&r, seed);
    for (size_t i = 0; i < n * d; i++) s->W_enc[i] = rng_normal(&r) / 4.0f;
    for (size_t i = 0; i < n * d; i++) s->W_dec[i] = rng_normal(&r) / 4.0f;
    for (size_t i = 0; i < n; i++) s->b_enc[i] = rng_normal(&r) * 0.1f;
    for (size_t j = 0; j < d; j++) s->b_dec[j] = rng_normal(&r) * 0.1f;
    if (s->threshold)
        for (size_t i = 0; i < n; i++) s->threshold[i] = (float)rng_uniform(&r) * 0.5f;
    snprintf(s->meta.model_name, sizeof s->meta.model_name, "stories260K");
    snprintf(s->meta.hook_name, sizeof s->meta.hook_name, "blocks.3.hook_resid_post");
    s->meta.hook_layer = 3;
    s->meta.context_size = 256;
    s->meta.prepend_bos = true;
    s->meta.exclude_special_tokens = false;
    snprintf(s->meta.dataset_path, sizeof s->meta.dataset_path, "tinystories-valid");
    return s;
}

static bool same_floats(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof(float)) == 0;
}

static void check_same_weights(const struct sae *a, const struct sae *b)
{
    CHECK_EQ_INT(a->d_in, b->d_in);
    CHECK_EQ_INT(a->n, b->n);
    if (a->d_in != b->d_in || a->n != b->n) return;
    size_t nd = a->n * a->d_in;
    CHECK(same_floats(a->W_enc, b->W_enc, nd));
    CHECK(same_floats(a->W_dec, b->W_dec, nd));
    CHECK(same_floats(a->b_enc, b->b_enc, a->n));
    CHECK(same_floats(a->b_dec, b->b_dec, a->d_in));
    CHECK((a->threshold == NULL) == (b->threshold == NULL));
    if (a->threshold && b->threshold) CHECK(same_floats(a->threshold, b->threshold, a->n));
}

static void check_same_meta(const struct sae_meta *a, const struct sae_meta *b)
{
    CHECK(!strcmp(a->model_name, b->model_name));
    CHECK(!strcmp(a->hook_name, b->hook_name));
    CHECK(!strcmp(a->dataset_path, b->dataset_path));
    CHECK_EQ_INT(a->hook_layer, b->hook_layer);
    CHECK_EQ_INT(a->context_size, b->context_size);
    CHECK(a->prepend_bos == b->prepend_bos);
    CHECK(a->exclude_special_tokens == b->exclude_special_tokens);
}

/* No "*.tmp-*" staging directory may be left in `dir`. */
static bool no_staging_left(const char *dir)
{
    DIR *dp = opendir(dir);
    if (!dp) return true;
    struct dirent *e;
    bool ok = true;
    while ((e = readdir(dp)))
        if (strstr(e->d_name, ".tmp-")) ok = false;
    closedir(dp);
    return ok;
}

static void path2(char *out, size_t cap, const char *a, const char *b)
{
    int w = snprintf(out, cap, "%s/%s", a, b);
    if (w < 0 || (size_t)w >= cap) abort();
}

static void test_roundtrip_saelens(void)
{
    const enum sae_arch archs[] = {SAE_TOPK, SAE_BATCHTOPK, SAE_STANDARD, SAE_JUMPRELU};
    for (size_t a = 0; a < SF_ARRAY_LEN(archs); a++) {
        struct sae *s = random_sae(archs[a], 24, 80, 7, 100 + a);
        CHECK(s != NULL);
        if (!s) continue;
        char dir[512];
        snprintf(dir, sizeof dir, "%s/saelens_%s", root, sae_arch_name(archs[a]));
        float dens[80];
        for (size_t i = 0; i < 80; i++) dens[i] = -(float)i / 10.0f;
        CHECK_EQ_INT(sae_io_export_saelens(s, dir, a == 0 ? dens : NULL), 0);
        struct sae *b = NULL;
        CHECK_EQ_INT(sae_io_import_saelens(dir, &b), 0);
        CHECK(b != NULL);
        if (b) {
            enum sae_arch want = archs[a] == SAE_BATCHTOPK ? SAE_JUMPRELU : archs[a];
            CHECK_EQ_INT(b->arch, want);
            CHECK_EQ_INT(b->k, archs[a] == SAE_TOPK ? 7 : 0);
            CHECK(b->norm_scale == 1.0f);
            check_same_weights(s, b);
            check_same_meta(&s->meta, &b->meta);
        }
        /* auto-detected load gives the same SAE */
        struct sae *c = NULL;
        struct sae_io_info info;
        CHECK_EQ_INT(sae_io_load_info(dir, &c, &info), 0);
        if (c) {
            check_same_weights(s, c);
            CHECK_EQ_INT(info.layout, SAE_IO_SAELENS);
            CHECK(!strcmp(info.weights_dtype, "F32"));
            CHECK(!strcmp(info.cfg_dtype, "float32"));
            CHECK(!strcmp(info.sae_lens_version, SAE_IO_SAELENS_VERSION));
            CHECK(info.has_sparsity == (a == 0));
        }
        if (a == 0) {
            float got[80];
            CHECK_EQ_INT(sae_io_read_sparsity(dir, 80, got), 0);
            CHECK(same_floats(got, dens, 80));
            CHECK_EQ_INT(sae_io_read_sparsity(dir, 81, got), SF_EFORMAT);
        } else {
            float got[80];
            CHECK_EQ_INT(sae_io_read_sparsity(dir, 80, got), SF_NOTFOUND);
        }
        sae_destroy(&b);
        sae_destroy(&c);
        sae_destroy(&s);
        CHECK(s == NULL);
    }
    CHECK(no_staging_left(root));
    /* exports are readable by others (mkdtemp alone would leave 0700) */
    char dir[512], f[600];
    struct stat st;
    snprintf(dir, sizeof dir, "%s/saelens_topk", root);
    CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0755);
    path2(f, sizeof f, dir, SAE_IO_SAELENS_WEIGHTS);
    CHECK(stat(f, &st) == 0 && (st.st_mode & 0777) == 0644);
}

/* The exported SAE computes on raw x what the original computes with its norm_scale. */
static void test_folding(void)
{
    const enum sae_arch archs[] = {SAE_TOPK, SAE_JUMPRELU, SAE_STANDARD, SAE_BATCHTOPK};
    for (size_t a = 0; a < SF_ARRAY_LEN(archs); a++) {
        const size_t d = 16, n = 64;
        struct sae *s = random_sae(archs[a], d, n, 5, 7 + a);
        if (!s) continue;
        s->norm_scale = 2.7183f;
        char dir[512];
        snprintf(dir, sizeof dir, "%s/fold_%zu", root, a);
        CHECK_EQ_INT(sae_io_export_saelens(s, dir, NULL), 0);
        struct sae *b = NULL;
        CHECK_EQ_INT(sae_io_import_saelens(dir, &b), 0);
        if (!b) {
            sae_destroy(&s);
            continue;
        }
        CHECK(b->norm_scale == 1.0f);
        struct rng r;
        rng_seed(&r, 99);
        float x[16], z0[64], z1[64], xh0[16], xh1[16];
        double max_dz = 0, max_dx = 0, max_x = 0;
        size_t active = 0;
        for (int t = 0; t < 50; t++) {
            for (size_t j = 0; j < d; j++) x[j] = rng_normal(&r) * 0.4f;
            CHECK_EQ_INT(sae_encode_ref(s, x, z0), 0);
            CHECK_EQ_INT(sae_encode_ref(b, x, z1), 0);
            sae_decode_ref(s, z0, xh0);
            sae_decode_ref(b, z1, xh1);
            for (size_t i = 0; i < n; i++) {
                max_dz = fmax(max_dz, fabs((double)z0[i] - z1[i]));
                active += z0[i] != 0.0f;
            }
            for (size_t j = 0; j < d; j++) {
                max_dx = fmax(max_dx, fabs((double)xh0[j] - xh1[j]));
                max_x = fmax(max_x, fabs((double)xh0[j]));
            }
        }
        CHECK(active > 0);
        CHECK_MSG(max_dz < 1e-5, "%s: max |dz| %g", sae_arch_name(archs[a]), max_dz);
        CHECK_MSG(max_dx < 1e-5 * (1 + max_x), "%s: max |dx_hat| %g", sae_arch_name(archs[a]),
                  max_dx);
        sae_destroy(&b);
        sae_destroy(&s);
    }
}

static void test_sparsify(void)
{
    struct sae *s = random_sae(SAE_TOPK, 12, 48, 4, 5);
    if (!s) return;
    char dir[512], hook_dir[512];
    snprintf(dir, sizeof dir, "%s/sparsify", root);
    path2(hook_dir, sizeof hook_dir, dir, s->meta.hook_name);
    CHECK_EQ_INT(sae_io_export_sparsify(s, dir), 0);
    struct sae *b = NULL;
    CHECK_EQ_INT(sae_io_import_sparsify(dir, &b), 0); /* the only hookpoint */
    if (b) {
        CHECK_EQ_INT(b->arch, SAE_TOPK);
        CHECK_EQ_INT(b->k, 4);
        check_same_weights(s, b);
        check_same_meta(&s->meta, &b->meta);
    }
    sae_destroy(&b);
    CHECK_EQ_INT(sae_io_import_sparsify(hook_dir, &b), 0);
    if (b) check_same_weights(s, b);
    sae_destroy(&b);
    struct sae_io_info info;
    CHECK_EQ_INT(sae_io_load_info(hook_dir, &b, &info), 0);
    CHECK_EQ_INT(info.layout, SAE_IO_SPARSIFY);
    sae_destroy(&b);

    /* a second hookpoint in the same directory: the parent becomes ambiguous */
    snprintf(s->meta.hook_name, sizeof s->meta.hook_name, "layers.4");
    CHECK_EQ_INT(sae_io_export_sparsify(s, dir), 0);
    CHECK_EQ_INT(sae_io_import_sparsify(dir, &b), SF_EINVAL);
    CHECK(b == NULL);
    char h4[512];
    path2(h4, sizeof h4, dir, "layers.4");
    CHECK_EQ_INT(sae_io_load(h4, &b), 0);
    if (b) {
        CHECK(!strcmp(b->meta.hook_name, "layers.4"));
        CHECK_EQ_INT(b->meta.hook_layer, 3); /* kept from the metadata we wrote */
    }
    sae_destroy(&b);
    CHECK(no_staging_left(dir));

    /* folding applies to sparsify too */
    s->norm_scale = 0.5f;
    snprintf(s->meta.hook_name, sizeof s->meta.hook_name, "folded");
    CHECK_EQ_INT(sae_io_export_sparsify(s, dir), 0);
    char hf[512];
    path2(hf, sizeof hf, dir, "folded");
    CHECK_EQ_INT(sae_io_import_sparsify(hf, &b), 0);
    if (b) {
        CHECK(b->W_enc[3] == s->W_enc[3] * 0.5f);
        CHECK(b->W_dec[3] == s->W_dec[3] / 0.5f);
        CHECK(b->b_dec[2] == s->b_dec[2] / 0.5f);
    }
    sae_destroy(&b);

    /* what sparsify cannot hold */
    snprintf(s->meta.hook_name, sizeof s->meta.hook_name, "../escape");
    CHECK_EQ_INT(sae_io_export_sparsify(s, dir), SF_EINVAL);
    s->meta.hook_name[0] = '\0';
    CHECK_EQ_INT(sae_io_export_sparsify(s, dir), SF_EINVAL);
    sae_destroy(&s);
    s = random_sae(SAE_JUMPRELU, 12, 48, 0, 6);
    CHECK_EQ_INT(sae_io_export_sparsify(s, dir), SF_EUNSUP);
    sae_destroy(&s);
}

/* Re-export replaces an earlier export; a directory with other files is refused. */
static void test_replace(void)
{
    struct sae *s = random_sae(SAE_TOPK, 8, 16, 2, 11);
    if (!s) return;
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/replace", root);
    CHECK_EQ_INT(sae_io_export_saelens(s, dir, NULL), 0);
    s->W_enc[0] = 42.0f;
    float dens[16] = {0};
    CHECK_EQ_INT(sae_io_export_saelens(s, dir, dens), 0);
    struct sae *b = NULL;
    CHECK_EQ_INT(sae_io_import_saelens(dir, &b), 0);
    if (b) CHECK(b->W_enc[0] == 42.0f);
    sae_destroy(&b);
    /* and back to no sparsity file: the old one must not survive */
    CHECK_EQ_INT(sae_io_export_saelens(s, dir, NULL), 0);
    path2(p, sizeof p, dir, SAE_IO_SAELENS_SPARSITY);
    CHECK(access(p, F_OK) != 0);

    path2(p, sizeof p, dir, "notes.txt");
    CHECK_EQ_INT(file_write_atomic(p, "mine", 4), 0);
    CHECK_EQ_INT(sae_io_export_saelens(s, dir, NULL), SF_EINVAL);
    CHECK(access(p, F_OK) == 0); /* untouched */
    CHECK(no_staging_left(root));

    /* invalid SAEs are refused before anything is written */
    char bad[512];
    snprintf(bad, sizeof bad, "%s/never", root);
    s->W_dec[5] = NAN;
    CHECK_EQ_INT(sae_io_export_saelens(s, bad, NULL), SF_EINVAL);
    s->W_dec[5] = 0.0f;
    s->norm_scale = 0.0f;
    CHECK_EQ_INT(sae_io_export_saelens(s, bad, NULL), SF_EINVAL);
    s->norm_scale = 1.0f;
    float nan_dens[16] = {NAN};
    CHECK_EQ_INT(sae_io_export_saelens(s, bad, nan_dens), SF_EINVAL);
    s->k = 17;
    CHECK_EQ_INT(sae_io_export_saelens(s, bad, NULL), SF_EINVAL);
    CHECK(access(bad, F_OK) != 0);
    CHECK(no_staging_left(root));
    sae_destroy(&s);
}

/* ---- hand-built directories for the error cases ---- */

struct tspec {
    const char *name;
    enum st_dtype dtype;
    int64_t shape[2];
    size_t ndim;
    const float *data; /* converted to dtype by the writer (float dtypes only) */
};

static int write_weights(const char *path, const struct tspec *t, size_t nt)
{
    struct st_writer *w = st_writer_new();
    if (!w) return SF_ENOMEM;
    int rc = 0;
    static int32_t ibuf[4096];
    for (size_t i = 0; i < nt && !rc; i++) {
        if (t[i].dtype == ST_I32) {
            size_t numel = (size_t)t[i].shape[0] * (t[i].ndim == 2 ? (size_t)t[i].shape[1] : 1);
            for (size_t j = 0; j < numel && j < 4096; j++) ibuf[j] = (int32_t)j;
            rc = st_writer_add(w, t[i].name, ST_I32, t[i].shape, t[i].ndim, ibuf);
        } else {
            rc = st_writer_add_f32(w, t[i].name, t[i].dtype, t[i].shape, t[i].ndim, t[i].data);
        }
    }
    if (!rc) rc = st_writer_write(w, path);
    st_writer_destroy(&w);
    return rc;
}

static char case_dir[512];

/* Writes case_dir/{cfg.json, sae_weights.safetensors} (either may be skipped). */
static void make_case(const char *cfg, const struct tspec *t, size_t nt)
{
    char p[600];
    snprintf(case_dir, sizeof case_dir, "%s/case", root);
    path2(p, sizeof p, case_dir, "cfg.json");
    unlink(p);
    path2(p, sizeof p, case_dir, "sae_weights.safetensors");
    unlink(p);
    file_mkdirs(case_dir, 0755);
    if (cfg) {
        path2(p, sizeof p, case_dir, "cfg.json");
        CHECK_EQ_INT(file_write_atomic(p, cfg, strlen(cfg)), 0);
    }
    if (t) {
        path2(p, sizeof p, case_dir, "sae_weights.safetensors");
        CHECK_EQ_INT(write_weights(p, t, nt), 0);
    }
}

#define D  6
#define N  10
#define NK 3
static float w_enc_t[D * N], w_dec[N * D], b_enc[N], b_dec[D], thr[N];

#define CFG_FMT                                                                                    \
    "{\"architecture\": \"%s\", \"d_in\": %s, \"d_sae\": %s, \"k\": %s, \"dtype\": \"float32\","   \
    " \"device\": \"cpu\", \"apply_b_dec_to_input\": true, \"normalize_activations\": \"%s\","     \
    " \"reshape_activations\": \"none\", \"metadata\": {\"sae_lens_version\": \"6.5.0\","          \
    " \"hook_name\": \"blocks.1.hook_resid_post\", \"model_name\": \"m\"}}"

static char cfg_buf[2048];
static const char *cfg_with(const char *arch, const char *d_in, const char *d_sae, const char *k,
                            const char *norm)
{
    snprintf(cfg_buf, sizeof cfg_buf, CFG_FMT, arch, d_in, d_sae, k, norm);
    return cfg_buf;
}

static FILE *log_file;

/* True when the log written since the last call contains `needle`; clears the log. */
static bool logged(const char *needle)
{
    if (!log_file) return true;
    fflush(log_file);
    long len = ftell(log_file);
    char *text = calloc(1, (size_t)(len > 0 ? len : 0) + 1);
    bool found = false;
    if (text) {
        rewind(log_file);
        size_t got = fread(text, 1, (size_t)(len > 0 ? len : 0), log_file);
        text[got] = '\0';
        found = strstr(text, needle) != NULL;
        free(text);
    }
    rewind(log_file);
    if (ftruncate(fileno(log_file), 0) != 0) perror("ftruncate");
    return found;
}

#define EXPECT_FAIL(want, needle)                                                                  \
    do {                                                                                           \
        CHECK_EQ_INT(import_case(), want);                                                         \
        CHECK_MSG(logged(needle), "log lacks \"%s\"", needle);                                     \
    } while (0)

static int import_case(void)
{
    struct sae *s = NULL;
    int rc = sae_io_import_saelens(case_dir, &s);
    CHECK((rc == 0) == (s != NULL));
    sae_destroy(&s);
    return rc;
}

static void test_errors(void)
{
    struct rng r;
    rng_seed(&r, 3);
    for (size_t i = 0; i < D * N; i++) w_enc_t[i] = rng_normal(&r), w_dec[i] = rng_normal(&r);
    for (size_t i = 0; i < N; i++) b_enc[i] = rng_normal(&r), thr[i] = 0.1f;
    for (size_t i = 0; i < D; i++) b_dec[i] = rng_normal(&r);
    const struct tspec good[] = {
        {"W_enc", ST_F32, {D, N}, 2, w_enc_t}, {"b_enc", ST_F32, {N}, 1, b_enc},
        {"W_dec", ST_F32, {N, D}, 2, w_dec},   {"b_dec", ST_F32, {D}, 1, b_dec},
        {"threshold", ST_F32, {N}, 1, thr},
    };
    char topk[2048];
    snprintf(topk, sizeof topk, "%s", cfg_with("topk", "6", "10", "3", "none"));

    make_case(topk, good, 4);
    CHECK_EQ_INT(import_case(), 0); /* the baseline is fine */
    make_case(cfg_with("jumprelu", "6", "10", "null", "none"), good, 5);
    CHECK_EQ_INT(import_case(), 0);

    /* missing files */
    make_case(NULL, good, 4);
    EXPECT_FAIL(SF_EFORMAT, "cfg.json is missing");
    make_case(topk, NULL, 0);
    EXPECT_FAIL(SF_EFORMAT, "sae_weights.safetensors is missing");
    char nowhere[600];
    path2(nowhere, sizeof nowhere, root, "does-not-exist");
    struct sae *s = NULL;
    CHECK_EQ_INT(sae_io_load(nowhere, &s), SF_EIO);
    CHECK_EQ_INT(sae_io_import_saelens(nowhere, &s), SF_EIO);
    make_case(NULL, NULL, 0); /* an empty directory */
    CHECK_EQ_INT(sae_io_load(case_dir, &s), SF_EFORMAT);
    CHECK(s == NULL);

    /* bad cfg.json */
    make_case("{\"architecture\": \"topk\", \"d_in\": 6,", good, 4);
    EXPECT_FAIL(SF_EFORMAT, "not valid JSON");
    make_case("[1, 2]", good, 4);
    EXPECT_FAIL(SF_EFORMAT, "not a JSON object");
    make_case("{\"architecture\": \"topk\", \"d_sae\": 10, \"k\": 3}", good, 4);
    EXPECT_FAIL(SF_EFORMAT, "has no d_in"); /* no d_in */
    make_case("{\"d_in\": 6, \"d_sae\": 10, \"k\": 3, \"metadata\": {\"sae_lens_version\": "
              "\"6.0.0\"}}",
              good, 4);
    EXPECT_FAIL(SF_EFORMAT, "has no architecture"); /* no architecture */
    make_case(cfg_with("topk", "6", "10", "null", "none"), good, 4);
    EXPECT_FAIL(SF_EFORMAT, "has no k"); /* topk without k */
    make_case(cfg_with("topk", "6", "10", "11", "none"), good, 4);
    EXPECT_FAIL(SF_EFORMAT, "k=11"); /* k > d_sae */
    make_case(cfg_with("topk", "6.5", "10", "3", "none"), good, 4);
    EXPECT_FAIL(SF_EFORMAT, "d_in=6.5");
    make_case(cfg_with("topk", "\"6\"", "10", "3", "none"), good, 4);
    EXPECT_FAIL(SF_EFORMAT, "d_in is not a number");
    make_case(cfg_with("topk", "-6", "10", "3", "none"), good, 4);
    EXPECT_FAIL(SF_EFORMAT, "d_in=-6");
    make_case(cfg_with("gated", "6", "10", "3", "none"), good, 4);
    EXPECT_FAIL(SF_EFORMAT, "unknown architecture gated"); /* unknown architecture */
    make_case(cfg_with("topk", "6", "10", "3", "expected_average_only_in"), good, 4);
    EXPECT_FAIL(SF_EUNSUP, "normalize_activations=expected_average_only_in");
    make_case("{\"architecture\": \"topk\", \"d_in\": 6, \"d_in\": 7, \"d_sae\": 10, \"k\": 3}",
              good, 4);
    EXPECT_FAIL(SF_EFORMAT, "repeats key d_in"); /* repeated key */

    /* cfg and tensors disagree */
    make_case(cfg_with("topk", "6", "12", "3", "none"), good, 4);
    EXPECT_FAIL(SF_EFORMAT, "cfg says [6, 12]"); /* d_sae */
    make_case(cfg_with("topk", "7", "10", "3", "none"), good, 4);
    EXPECT_FAIL(SF_EFORMAT, "cfg says [7, 10]"); /* d_in */

    /* tensors: missing, wrong shape, wrong dtype, non-finite */
    make_case(topk, good, 3);
    EXPECT_FAIL(SF_EFORMAT, "no tensor b_dec"); /* no b_dec */
    make_case(cfg_with("jumprelu", "6", "10", "null", "none"), good, 4);
    EXPECT_FAIL(SF_EFORMAT, "no tensor threshold"); /* jumprelu without threshold */
    {
        struct tspec t[4];
        memcpy(t, good, sizeof t);
        t[0].shape[0] = N, t[0].shape[1] = D; /* (n, d): our layout, not SAELens's */
        make_case(topk, t, 4);
        EXPECT_FAIL(SF_EFORMAT, "shape [10, 6], cfg says [6, 10]");
        memcpy(t, good, sizeof t);
        t[1].ndim = 2, t[1].shape[0] = N, t[1].shape[1] = 1; /* b_enc [10, 1] */
        make_case(topk, t, 4);
        EXPECT_FAIL(SF_EFORMAT, "shape [10, 1]");
        memcpy(t, good, sizeof t);
        t[3].dtype = ST_I32;
        make_case(topk, t, 4);
        EXPECT_FAIL(SF_EFORMAT, "dtype I32");
    }
    w_dec[7] = NAN;
    make_case(topk, good, 4);
    EXPECT_FAIL(SF_EFORMAT, "W_dec has a non-finite value at 7");
    w_dec[7] = 0.5f;
    b_enc[2] = INFINITY;
    make_case(topk, good, 4);
    EXPECT_FAIL(SF_EFORMAT, "b_enc has a non-finite value at 2");
    b_enc[2] = 0.5f;
    w_enc_t[0] = 1e30f; /* finite in F32, Inf once stored as F16 */
    {
        struct tspec t[4];
        memcpy(t, good, sizeof t);
        t[0].dtype = ST_F16;
        make_case(topk, t, 4);
        EXPECT_FAIL(SF_EFORMAT, "W_enc has a non-finite value at 0");
    }
    w_enc_t[0] = 0.25f;

    /* pre-6 scaling_factor: ignored when all ones, refused otherwise */
    {
        float ones[N];
        for (size_t i = 0; i < N; i++) ones[i] = 1.0f;
        struct tspec t[5];
        memcpy(t, good, 4 * sizeof *t);
        t[4] = (struct tspec){"scaling_factor", ST_F32, {N}, 1, ones};
        make_case(topk, t, 5);
        CHECK_EQ_INT(import_case(), 0);
        logged(""); /* drop the warning about the extra tensor */
        ones[3] = 2.0f;
        make_case(topk, t, 5);
        EXPECT_FAIL(SF_EUNSUP, "scaling_factor[3] = 2 is not 1");
    }

    /* a truncated weights file */
    make_case(topk, good, 4);
    char p[600];
    path2(p, sizeof p, case_dir, "sae_weights.safetensors");
    char *bytes = NULL;
    size_t len = 0;
    CHECK_EQ_INT(file_read_all(p, 1 << 20, &bytes, &len), 0);
    if (bytes) {
        CHECK_EQ_INT(file_write_atomic(p, bytes, len - 5), 0);
        EXPECT_FAIL(SF_EFORMAT, "sae_weights.safetensors is not valid");
        /* the same bytes through the in-memory import */
        CHECK_EQ_INT(sae_io_import_saelens_mem(topk, strlen(topk), bytes, len - 5, &s), SF_EFORMAT);
        CHECK_EQ_INT(sae_io_import_saelens_mem(topk, strlen(topk), bytes, len, &s), 0);
        sae_destroy(&s);
        free(bytes);
    }
}

/* F16 / BF16 weights import as the float32 values they hold. */
static void test_half_weights(void)
{
    const enum st_dtype dts[] = {ST_F16, ST_BF16};
    for (size_t di = 0; di < 2; di++) {
        const struct tspec t[] = {
            {"W_enc", dts[di], {D, N}, 2, w_enc_t}, {"b_enc", dts[di], {N}, 1, b_enc},
            {"W_dec", dts[di], {N, D}, 2, w_dec},   {"b_dec", dts[di], {D}, 1, b_dec},
            {"threshold", dts[di], {N}, 1, thr},
        };
        make_case(cfg_with("jumprelu", "6", "10", "null", "none"), t, 5);
        struct sae *s = NULL;
        CHECK_EQ_INT(sae_io_import_saelens(case_dir, &s), 0);
        if (!s) continue;
        bool ok = true;
        for (size_t i = 0; i < N; i++)
            for (size_t j = 0; j < D; j++) {
                float want = dts[di] == ST_F16 ? f16_to_f32(f32_to_f16(w_enc_t[j * N + i]))
                                               : bf16_to_f32(f32_to_bf16(w_enc_t[j * N + i]));
                ok &= s->W_enc[i * D + j] == want;
            }
        CHECK_MSG(ok, "%s W_enc values", safetensors_dtype_name(dts[di]));
        float want_thr =
            dts[di] == ST_F16 ? f16_to_f32(f32_to_f16(0.1f)) : bf16_to_f32(f32_to_bf16(0.1f));
        CHECK(s->threshold[4] == want_thr);
        struct sae_io_info info;
        struct sae *c = NULL;
        CHECK_EQ_INT(sae_io_load_info(case_dir, &c, &info), 0);
        CHECK(!strcmp(info.weights_dtype, safetensors_dtype_name(dts[di])));
        sae_destroy(&c);
        sae_destroy(&s);
    }
}

/* apply_b_dec_to_input = false is folded into b_enc: same z as x @ W_enc + b_enc. */
static void test_no_b_dec_input(void)
{
    char cfg[2048];
    snprintf(cfg, sizeof cfg,
             "{\"architecture\": \"standard\", \"d_in\": 6, \"d_sae\": 10, \"dtype\": \"float32\","
             " \"apply_b_dec_to_input\": false, \"normalize_activations\": \"none\"}");
    const struct tspec t[] = {
        {"W_enc", ST_F32, {D, N}, 2, w_enc_t},
        {"b_enc", ST_F32, {N}, 1, b_enc},
        {"W_dec", ST_F32, {N, D}, 2, w_dec},
        {"b_dec", ST_F32, {D}, 1, b_dec},
    };
    make_case(cfg, t, 4);
    struct sae *s = NULL;
    CHECK_EQ_INT(sae_io_import_saelens(case_dir, &s), 0);
    if (!s) return;
    float x[D] = {0.3f, -1.0f, 0.5f, 2.0f, 0.0f, -0.25f}, z[N];
    CHECK_EQ_INT(sae_encode_ref(s, x, z), 0);
    for (size_t i = 0; i < N; i++) {
        double a = b_enc[i];
        for (size_t j = 0; j < D; j++) a += (double)x[j] * w_enc_t[j * N + i];
        CHECK_NEAR(z[i], a > 0 ? a : 0.0, 1e-5, 1e-5);
    }
    CHECK_EQ_INT(s->meta.hook_layer, -1); /* no metadata at all */
    CHECK(s->meta.prepend_bos);
    sae_destroy(&s);
}

static void test_parse_cfg(void)
{
    struct sae_io_saelens_cfg c;
    const char *v6 =
        "{\"architecture\": \"jumprelu\", \"d_in\": 64, \"d_sae\": 512, \"dtype\": \"bfloat16\","
        " \"reshape_activations\": \"hook_z\", \"metadata\": {\"sae_lens_version\": \"6.12.1\","
        " \"model_name\": \"gpt2\", \"hook_name\": \"blocks.7.attn.hook_z\", \"context_size\": 128,"
        " \"prepend_bos\": false, \"exclude_special_tokens\": [50256], \"dataset_path\": null}}";
    CHECK_EQ_INT(sae_io_parse_saelens_cfg(v6, strlen(v6), &c), 0);
    CHECK_EQ_INT(c.arch, SAE_JUMPRELU);
    CHECK_EQ_INT(c.d_in, 64);
    CHECK_EQ_INT(c.d_sae, 512);
    CHECK(c.hook_z);
    CHECK(!strcmp(c.dtype, "bfloat16"));
    CHECK(!strcmp(c.meta.model_name, "gpt2"));
    CHECK_EQ_INT(c.meta.hook_layer, 7);
    CHECK_EQ_INT(c.meta.context_size, 128);
    CHECK(!c.meta.prepend_bos);
    CHECK(c.meta.exclude_special_tokens);
    CHECK(!strcmp(c.sae_lens_version, "6.12.1"));
    /* pre-6 layout: provenance at the top level */
    const char *v5 = "{\"architecture\": \"standard\", \"d_in\": 8, \"d_sae\": 16,"
                     " \"hook_name\": \"blocks.2.hook_resid_pre\", \"hook_layer\": 2,"
                     " \"model_name\": \"pythia\", \"sae_lens_version\": \"3.1.0\","
                     " \"normalize_activations\": false}";
    CHECK_EQ_INT(sae_io_parse_saelens_cfg(v5, strlen(v5), &c), 0);
    CHECK(!strcmp(c.meta.hook_name, "blocks.2.hook_resid_pre"));
    CHECK_EQ_INT(c.meta.hook_layer, 2);
    /* pre-6 TopK: "standard" + activation_fn_str topk + activation_fn_kwargs.k */
    const char *v5topk = "{\"d_in\": 8, \"d_sae\": 16, \"activation_fn_str\": \"topk\","
                         " \"activation_fn_kwargs\": {\"k\": 4}, \"hook_point\":"
                         " \"blocks.5.hook_resid_pre\", \"hook_point_layer\": 5}";
    CHECK_EQ_INT(sae_io_parse_saelens_cfg(v5topk, strlen(v5topk), &c), 0);
    CHECK_EQ_INT(c.arch, SAE_TOPK);
    CHECK_EQ_INT(c.k, 4);
    CHECK(!strcmp(c.meta.hook_name, "blocks.5.hook_resid_pre"));
    CHECK_EQ_INT(c.meta.hook_layer, 5);
    const char *v5tanh = "{\"d_in\": 8, \"d_sae\": 16, \"activation_fn_str\": \"tanh-relu\"}";
    CHECK_EQ_INT(sae_io_parse_saelens_cfg(v5tanh, strlen(v5tanh), &c), SF_EUNSUP);
    const char *v5nokw = "{\"d_in\": 8, \"d_sae\": 16, \"activation_fn_str\": \"topk\"}";
    CHECK_EQ_INT(sae_io_parse_saelens_cfg(v5nokw, strlen(v5nokw), &c), SF_EFORMAT);
    const char *v5ft = "{\"d_in\": 8, \"d_sae\": 16, \"finetuning_scaling_factor\": true}";
    CHECK_EQ_INT(sae_io_parse_saelens_cfg(v5ft, strlen(v5ft), &c), SF_EUNSUP);
    const char *rescale = "{\"architecture\": \"topk\", \"d_in\": 8, \"d_sae\": 16, \"k\": 2,"
                          " \"rescale_acts_by_decoder_norm\": true}";
    CHECK_EQ_INT(sae_io_parse_saelens_cfg(rescale, strlen(rescale), &c), SF_EUNSUP);
    CHECK_EQ_INT(sae_io_parse_saelens_cfg("", 0, &c), SF_EFORMAT);
    CHECK_EQ_INT(sae_io_parse_saelens_cfg("{} x", 4, &c), SF_EFORMAT);
    const char *huge = "{\"architecture\": \"topk\", \"d_in\": 1e300, \"d_sae\": 16, \"k\": 2}";
    CHECK_EQ_INT(sae_io_parse_saelens_cfg(huge, strlen(huge), &c), SF_EFORMAT);

    struct sae_io_sparsify_cfg sc;
    const char *sp =
        "{\"activation\": \"topk\", \"expansion_factor\": 4, \"normalize_decoder\": true,"
        " \"num_latents\": 0, \"k\": 8, \"multi_topk\": false, \"d_in\": 16}";
    CHECK_EQ_INT(sae_io_parse_sparsify_cfg(sp, strlen(sp), &sc), 0);
    CHECK_EQ_INT(sc.n, 64);
    CHECK_EQ_INT(sc.k, 8);
    const char *gm = "{\"activation\": \"groupmax\", \"num_latents\": 64, \"k\": 8, \"d_in\": 16}";
    CHECK_EQ_INT(sae_io_parse_sparsify_cfg(gm, strlen(gm), &sc), SF_EUNSUP);
    const char *tc = "{\"num_latents\": 64, \"k\": 8, \"d_in\": 16, \"transcode\": true}";
    CHECK_EQ_INT(sae_io_parse_sparsify_cfg(tc, strlen(tc), &sc), SF_EUNSUP);
    const char *nolat = "{\"num_latents\": 0, \"expansion_factor\": 0, \"k\": 8, \"d_in\": 16}";
    CHECK_EQ_INT(sae_io_parse_sparsify_cfg(nolat, strlen(nolat), &sc), SF_EFORMAT);
}

/* sparsify directories with corrupt pieces. */
static void test_sparsify_errors(void)
{
    char dir[512], p[600];
    snprintf(dir, sizeof dir, "%s/sp_err/layers.0", root);
    file_mkdirs(dir, 0755);
    const char *cfg = "{\"activation\": \"topk\", \"num_latents\": 10, \"k\": 3, \"d_in\": 6}";
    path2(p, sizeof p, dir, "cfg.json");
    CHECK_EQ_INT(file_write_atomic(p, cfg, strlen(cfg)), 0);
    const struct tspec t[] = {
        {"encoder.weight", ST_F32, {N, D}, 2, w_dec},
        {"encoder.bias", ST_F32, {N}, 1, b_enc},
        {"W_dec", ST_F32, {N, D}, 2, w_dec},
        {"b_dec", ST_F32, {D}, 1, b_dec},
    };
    path2(p, sizeof p, dir, "sae.safetensors");
    struct sae *s = NULL;
    CHECK_EQ_INT(sae_io_import_sparsify(dir, &s), SF_EFORMAT); /* no weights yet */
    CHECK_EQ_INT(write_weights(p, t, 4), 0);
    CHECK_EQ_INT(sae_io_import_sparsify(dir, &s), 0);
    if (s) CHECK(!strcmp(s->meta.hook_name, "layers.0"));
    sae_destroy(&s);
    CHECK_EQ_INT(write_weights(p, t, 3), 0);
    CHECK_EQ_INT(sae_io_import_sparsify(dir, &s), SF_EFORMAT); /* no b_dec */
    struct tspec u[4];
    memcpy(u, t, sizeof u);
    u[0].shape[0] = D, u[0].shape[1] = N; /* transposed encoder */
    CHECK_EQ_INT(write_weights(p, u, 4), 0);
    CHECK_EQ_INT(sae_io_import_sparsify(dir, &s), SF_EFORMAT);
    CHECK(s == NULL);
}

/* ---- seed corpora for the fuzz targets (SAEFLOW_WRITE_CORPUS=<dir>) ---- */

static void corpus_file(const char *dir, const char *target, const char *name, const void *data,
                        size_t len)
{
    char d[600], p[700];
    snprintf(d, sizeof d, "%s/%s", dir, target);
    file_mkdirs(d, 0755);
    snprintf(p, sizeof p, "%s/%s", d, name);
    CHECK_EQ_INT(file_write_atomic(p, data, len), 0);
}

/* One sae_weights seed: mode byte, u16 cfg length, cfg, weights file bytes. */
static void weights_seed(const char *dir, const char *name, uint8_t mode, const char *cfg,
                         const char *weights_path, size_t cut)
{
    char *w = NULL;
    size_t wl = 0;
    CHECK_EQ_INT(file_read_all(weights_path, 1 << 20, &w, &wl), 0);
    if (!w) return;
    if (cut && cut < wl) wl = cut;
    size_t cl = cfg ? strlen(cfg) : 0;
    uint8_t *buf = malloc(3 + cl + wl);
    if (!buf) {
        free(w);
        return;
    }
    size_t off = 0;
    buf[off++] = mode;
    if (!(mode & 2)) {
        buf[off++] = (uint8_t)(cl & 0xff);
        buf[off++] = (uint8_t)(cl >> 8);
        memcpy(buf + off, cfg, cl);
        off += cl;
    }
    memcpy(buf + off, w, wl);
    corpus_file(dir, "sae_weights", name, buf, off + wl);
    free(buf);
    free(w);
}

static void write_corpus(const char *dir)
{
    char sub[600], p[700];
    const enum sae_arch archs[] = {SAE_TOPK, SAE_JUMPRELU, SAE_STANDARD};
    for (size_t a = 0; a < 3; a++) {
        struct sae *s = random_sae(archs[a], 4, 8, 2, 50 + a);
        if (!s) continue;
        snprintf(sub, sizeof sub, "%s/.saelens_%zu", root, a);
        CHECK_EQ_INT(sae_io_export_saelens(s, sub, NULL), 0);
        char *cfg = NULL;
        size_t cl = 0;
        snprintf(p, sizeof p, "%s/cfg.json", sub);
        CHECK_EQ_INT(file_read_all(p, 1 << 20, &cfg, &cl), 0);
        char name[64];
        snprintf(name, sizeof name, "export_%s", sae_arch_name(archs[a]));
        if (cfg) corpus_file(dir, "saelens_cfg", name, cfg, cl);
        snprintf(p, sizeof p, "%s/sae_weights.safetensors", sub);
        snprintf(name, sizeof name, "saelens_%s", sae_arch_name(archs[a]));
        weights_seed(dir, name, 0, cfg, p, 0);
        snprintf(name, sizeof name, "saelens_%s_cut", sae_arch_name(archs[a]));
        weights_seed(dir, name, 0, cfg, p, 100);
        snprintf(name, sizeof name, "builtin_saelens_%s", sae_arch_name(archs[a]));
        weights_seed(dir, name, (uint8_t)(2 | (a << 2)), NULL, p, 0);
        free(cfg);
        sae_destroy(&s);
    }
    struct sae *s = random_sae(SAE_TOPK, 4, 8, 2, 60);
    if (s) {
        snprintf(s->meta.hook_name, sizeof s->meta.hook_name, "layers.0");
        snprintf(sub, sizeof sub, "%s/.sparsify", root);
        CHECK_EQ_INT(sae_io_export_sparsify(s, sub), 0);
        char *cfg = NULL;
        size_t cl = 0;
        snprintf(p, sizeof p, "%s/layers.0/cfg.json", sub);
        CHECK_EQ_INT(file_read_all(p, 1 << 20, &cfg, &cl), 0);
        if (cfg) corpus_file(dir, "saelens_cfg", "export_sparsify", cfg, cl);
        snprintf(p, sizeof p, "%s/layers.0/sae.safetensors", sub);
        weights_seed(dir, "sparsify", 1, cfg, p, 0);
        weights_seed(dir, "builtin_sparsify", 3, NULL, p, 0);
        free(cfg);
        sae_destroy(&s);
    }
    static const struct {
        const char *name, *text;
    } cfgs[] = {
        {"v6_metadata",
         "{\"architecture\": \"jumprelu\", \"d_in\": 64, \"d_sae\": 512, \"dtype\":"
         " \"bfloat16\", \"reshape_activations\": \"hook_z\", \"metadata\":"
         " {\"sae_lens_version\": \"6.12.1\", \"model_name\": \"gpt2\", \"hook_name\":"
         " \"blocks.7.attn.hook_z\", \"context_size\": 128, \"prepend_bos\": false,"
         " \"exclude_special_tokens\": [50256], \"hook_head_index\": 3}}"},
        {"pre6", "{\"architecture\": \"standard\", \"d_in\": 8, \"d_sae\": 16, \"hook_name\":"
                 " \"blocks.2.hook_resid_pre\", \"hook_layer\": 2, \"sae_lens_version\": \"3.1.0\","
                 " \"normalize_activations\": false, \"apply_b_dec_to_input\": false}"},
        {"pre6_topk", "{\"d_in\": 8, \"d_sae\": 16, \"activation_fn_str\": \"topk\","
                      " \"activation_fn_kwargs\": {\"k\": 4}, \"hook_point\":"
                      " \"blocks.5.hook_resid_pre\", \"hook_point_layer\": 5,"
                      " \"finetuning_scaling_factor\": false}"},
        {"rescale", "{\"architecture\": \"topk\", \"d_in\": 8, \"d_sae\": 16, \"k\": 2,"
                    " \"rescale_acts_by_decoder_norm\": true}"},
        {"norm", "{\"architecture\": \"topk\", \"d_in\": 8, \"d_sae\": 16, \"k\": 2,"
                 " \"normalize_activations\": \"layer_norm\"}"},
        {"dup_key",
         "{\"architecture\": \"topk\", \"d_in\": 8, \"d_in\": 9, \"d_sae\": 16, \"k\": 2}"},
        {"bad_number", "{\"architecture\": \"topk\", \"d_in\": 1e300, \"d_sae\": -1, \"k\": 2.5}"},
        {"truncated", "{\"architecture\": \"topk\", \"d_in\": 8, \"metadata\": {\"model_na"},
        {"nested", "{\"metadata\": {\"a\": [[[[[[[[[[{}]]]]]]]]]]}, \"architecture\": \"gated\"}"},
        {"sparsify_ef", "{\"activation\": \"topk\", \"expansion_factor\": 4, \"num_latents\": 0,"
                        " \"k\": 8, \"d_in\": 16, \"multi_topk\": true}"},
        {"sparsify_groupmax", "{\"activation\": \"groupmax\", \"num_latents\": 64, \"k\": 8,"
                              " \"d_in\": 16, \"skip_connection\": true}"},
        {"trailing", "{\"architecture\": \"standard\", \"d_in\": 8, \"d_sae\": 16} {}"},
    };
    for (size_t i = 0; i < SF_ARRAY_LEN(cfgs); i++)
        corpus_file(dir, "saelens_cfg", cfgs[i].name, cfgs[i].text, strlen(cfgs[i].text));
}

int main(void)
{
    log_init("test_sae_io", LOG_LOGFMT, LOG_ERROR);
    if (!getenv("SAE_IO_VERBOSE")) {
        log_file = tmpfile();
        if (log_file) log_set_stream(log_file);
    }
    snprintf(root, sizeof root, "/tmp/test_sae_io.XXXXXX");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    test_roundtrip_saelens();
    test_folding();
    test_sparsify();
    test_replace();
    test_errors();
    test_half_weights();
    test_no_b_dec_input();
    test_parse_cfg();
    test_sparsify_errors();
    const char *corpus = getenv("SAEFLOW_WRITE_CORPUS");
    if (corpus && *corpus) write_corpus(corpus);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
    return check_exit();
}

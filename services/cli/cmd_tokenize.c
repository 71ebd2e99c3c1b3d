/* `saeflow tokenize`: encodes text with a model's tokenizer (or a tokenizer file) and
 * prints the ids on one line, then one line per token: id, the vocabulary entry as
 * stored, and the text it decodes to (both quoted, with escapes). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "core/core.h"
#include "model/gguf.h"
#include "model/model.h"
#include "model/tokenizer.h"

static void print_quoted(const char *s, size_t len)
{
    putchar('"');
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\')
            printf("\\%c", ch);
        else if (ch == '\n')
            printf("\\n");
        else if (ch == '\t')
            printf("\\t");
        else if (ch < 0x20 || ch == 0x7f)
            printf("\\x%02x", ch);
        else
            putchar(ch);
    }
    putchar('"');
}

/* A tokenizer from a file: tokenizer.json (or a directory holding one), a GGUF, or a
 * llama2.c tokenizer .bin. */
static int load_tokenizer_file(const char *path, struct tokenizer **out)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        fprintf(stderr, "saeflow tokenize: cannot open %s\n", path);
        return SF_EIO;
    }
    if (S_ISDIR(st.st_mode)) {
        char p[4096];
        snprintf(p, sizeof p, "%s/tokenizer.json", path);
        return tokenizer_load_hf_json(p, out);
    }
    size_t n = strlen(path);
    if (n >= 5 && !strcmp(path + n - 5, ".json")) return tokenizer_load_hf_json(path, out);
    char magic[4] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return SF_EIO;
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got == 4 && !memcmp(magic, "GGUF", 4)) {
        struct gguf *g;
        int rc = gguf_open(path, &g);
        if (rc) return rc;
        rc = tokenizer_from_gguf(g, out);
        gguf_close(&g);
        return rc;
    }
    return tokenizer_load_llama2c(path, out);
}

int cmd_tokenize(int argc, char **argv)
{
    char *model_path = NULL, *tok_path = NULL;
    bool bos = false;
    const struct config_opt opts[] = {
        {"model", CFG_STRING, &model_path, NULL, 0, -1, "model whose tokenizer to use"},
        {"tokenizer", CFG_STRING, &tok_path, NULL, 0, -1,
         "tokenizer file: tokenizer .bin, .gguf, tokenizer.json or a HF directory"},
        {"bos", CFG_BOOL, &bos, "false", 0, -1, "prepend BOS"},
    };
    struct config cfg = {.service = "tokenize",
                         .usage = "saeflow tokenize (--model PATH | --tokenizer PATH) [--bos] TEXT",
                         .opts = opts,
                         .n_opts = SF_ARRAY_LEN(opts)};
    int rc = config_load(&cfg, argc, argv);
    int ret = 2;
    struct model *m = NULL;
    struct tokenizer *own = NULL;
    int32_t *ids = NULL;
    struct buf b;
    buf_init(&b, 1 << 20);
    if (rc == SF_EXIT) {
        ret = 0;
        goto done;
    }
    if (rc) goto done;
    log_set_level(cfg.log_level);
    if (cfg.n_positional != 1 || (!*model_path && !*tok_path)) {
        fprintf(stderr, "usage: %s\n", cfg.usage);
        goto done;
    }
    ret = 1;
    const struct tokenizer *tok;
    if (*tok_path) {
        if (load_tokenizer_file(tok_path, &own) != 0) goto done;
        tok = own;
    } else {
        if (model_load(model_path, NULL, &m) != 0) goto done;
        tok = model_tokenizer(m);
        if (!tok) {
            fprintf(stderr, "saeflow tokenize: %s has no tokenizer; pass --tokenizer\n",
                    model_path);
            goto done;
        }
    }
    const char *text = cfg.positional[0];
    size_t n = 0;
    if (tokenizer_encode_alloc(tok, text, strlen(text), bos, &ids, &n) != 0) goto done;
    for (size_t i = 0; i < n; i++) printf("%s%d", i ? " " : "", (int)ids[i]);
    printf("\n");
    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        const char *s = tokenizer_token_str(tok, ids[i], &len);
        printf("%6d  ", (int)ids[i]);
        print_quoted(s ? s : "", s ? len : 0);
        buf_reset(&b);
        tokenizer_decode_piece(tok, i ? ids[i - 1] : -1, ids[i], &b);
        printf("  ");
        print_quoted(b.data ? b.data : "", b.len);
        printf("\n");
    }
    printf("%zu tokens\n", n);
    ret = 0;
done:
    buf_fini(&b);
    free(ids);
    tokenizer_destroy(&own);
    model_destroy(&m);
    config_free(&cfg);
    return ret;
}

/* `saeflow generate`: loads a model (llama2.c .bin, GGUF or Hugging Face directory),
 * encodes a prompt and streams sampled text to stdout; a one-line summary (tokens,
 * tokens/s) goes to the log on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "core/core.h"
#include "model/model.h"
#include "model/tokenizer.h"
#include "tensor/tensor.h"

struct gen_state {
    const struct tokenizer *tok;
    int32_t prev;
    struct buf piece;
};

static int print_token(void *user, size_t seq, int32_t token)
{
    (void)seq;
    struct gen_state *g = user;
    buf_reset(&g->piece);
    if (tokenizer_decode_piece(g->tok, g->prev, token, &g->piece) == 0 && g->piece.len) {
        fwrite(g->piece.data, 1, g->piece.len, stdout);
        fflush(stdout);
    }
    g->prev = token;
    return 0;
}

/* config_load takes --flags only: accept llama2.c-style "-n N" too. */
static char **fix_short_flags(int argc, char **argv)
{
    char **v = calloc((size_t)argc + 1, sizeof *v);
    if (!v) return NULL;
    for (int i = 0; i < argc; i++) v[i] = !strcmp(argv[i], "-n") ? "--n" : argv[i];
    return v;
}

int cmd_generate(int argc, char **argv)
{
    if (cli_wants_steering(argc, argv)) return cmd_generate_steer(argc, argv);
    char *model_path = NULL, *tok_path = NULL, *prompt = NULL;
    int64_t n = 0, top_k = 0, seed = 0, threads = 0;
    double temperature = 0, top_p = 0;
    bool no_bos = false, no_eos_stop = false;
    const struct config_opt opts[] = {
        {"model", CFG_STRING, &model_path, NULL, 0, -1, "model: .bin, .gguf, or a HF directory"},
        {"tokenizer", CFG_STRING, &tok_path, NULL, 0, -1,
         "tokenizer .bin for llama2.c models (default tok512.bin / tokenizer.bin beside it)"},
        {"prompt", CFG_STRING, &prompt, NULL, 0, -1, "text to continue (default: from BOS)"},
        {"n", CFG_INT, &n, "256", 1, 1e7, "tokens to generate (also -n)"},
        {"temperature", CFG_DOUBLE, &temperature, "1.0", 0, 100, "0 = greedy"},
        {"top-p", CFG_DOUBLE, &top_p, "0.9", 0, 1, "nucleus mass (1 = off)"},
        {"top-k", CFG_INT, &top_k, "0", 0, 1e9, "keep the k most likely (0 = off)"},
        {"seed", CFG_INT, &seed, "0", 0, 9.2e18, "sampling seed (0 = from the clock)"},
        {"threads", CFG_INT, &threads, "0", 0, 1024, "CPU threads (0 = default)"},
        {"no-bos", CFG_BOOL, &no_bos, "false", 0, -1,
         "do not prepend BOS (default: as the tokenizer's metadata says)"},
        {"ignore-eos", CFG_BOOL, &no_eos_stop, "false", 0, -1, "keep going past EOS/BOS"},
    };
    struct config cfg = {.service = "generate",
                         .usage = "saeflow generate --model PATH [--prompt TEXT] [-n N] "
                                  "[--temperature T] [--top-p P] [--top-k K] [--seed S] "
                                  "[--sae DIR --steer F=S[:add|clamp|ablate] ...: see "
                                  "saeflow generate --sae x --help]",
                         .opts = opts,
                         .n_opts = SF_ARRAY_LEN(opts)};
    char **av = fix_short_flags(argc, argv);
    if (!av) return 1;
    int rc = config_load(&cfg, argc, av);
    int ret = 2;
    struct model *m = NULL;
    struct model_ctx *c = NULL;
    int32_t *ids = NULL, *out = NULL;
    struct gen_state g = {0};
    buf_init(&g.piece, 1 << 16);
    if (rc == SF_EXIT) {
        ret = 0;
        goto done;
    }
    if (rc) goto done;
    log_set_level(cfg.log_level);
    if (!*model_path || cfg.n_positional) {
        fprintf(stderr, "usage: %s\n", cfg.usage);
        goto done;
    }
    ret = 1;
    if (threads > 0) tensor_set_threads((int)threads);
    struct model_load_opts lo = {.tokenizer_path = *tok_path ? tok_path : NULL};
    if (model_load(model_path, &lo, &m) != 0) goto done;
    const struct tokenizer *tok = model_tokenizer(m);
    if (!tok) {
        fprintf(stderr, "saeflow generate: %s has no tokenizer; pass --tokenizer\n", model_path);
        goto done;
    }
    size_t n_ids = 0;
    /* BOS as the model's tokenizer metadata says (tokenizer_add_bos_default); an empty
     * prompt starts from BOS when there is one */
    bool bos = !no_bos && (tokenizer_add_bos_default(tok) || (!*prompt && tokenizer_bos(tok) >= 0));
    if (tokenizer_encode_alloc(tok, prompt, strlen(prompt), bos, &ids, &n_ids) != 0) goto done;
    if (n_ids == 0) {
        fprintf(stderr, "saeflow generate: empty prompt and no BOS token to start from\n");
        goto done;
    }
    const struct model_config *mc = model_config(m);
    size_t max_len = SF_MIN(mc->max_seq_len, n_ids + (size_t)n);
    if (n_ids >= mc->max_seq_len) {
        fprintf(stderr, "saeflow generate: prompt (%zu tokens) fills the context (%zu)\n", n_ids,
                mc->max_seq_len);
        goto done;
    }
    size_t n_new = SF_MIN((size_t)n, max_len - n_ids);
    if (n_new < (size_t)n)
        fprintf(stderr,
                "saeflow generate: warning: the model's context is %zu tokens and the prompt "
                "takes %zu: generating at most %zu of the %lld tokens asked for\n",
                mc->max_seq_len, n_ids, n_new, (long long)n);
    c = model_ctx_new(m, 1, max_len);
    out = malloc(n_new * sizeof *out);
    if (!c || !out) goto done;
    if (seed == 0) seed = (int64_t)(time_wall_ms() & 0x7fffffffffffll);
    g.tok = tok;
    g.prev = -1;
    /* echo the prompt as the model sees it */
    for (size_t i = 0; i < n_ids; i++) print_token(&g, 0, ids[i]);
    struct model_gen_opts go = {
        .max_new_tokens = n_new,
        .sample = {.temperature = (float)temperature,
                   .top_p = (float)top_p,
                   .top_k = (size_t)top_k},
        .seed = (uint64_t)seed,
        .stop_at_eos = !no_eos_stop,
        .on_token = print_token,
        .user = &g,
    };
    const int32_t *prompts[1] = {ids};
    size_t got = 0;
    double t0 = time_now_s();
    if (model_generate(c, prompts, &n_ids, 1, &go, out, &got) != 0) goto done;
    double dt = time_now_s() - t0;
    printf("\n");
    log_info("generate_done",
             "prompt_tokens=%zu new_tokens=%zu seconds=%.3f tok_per_s=%.1f seed=%lld", n_ids, got,
             dt, dt > 0 ? (double)got / dt : 0.0, (long long)seed);
    ret = 0;
done:
    buf_fini(&g.piece);
    free(out);
    free(ids);
    model_ctx_destroy(&c);
    model_destroy(&m);
    config_free(&cfg);
    free(av);
    return ret;
}

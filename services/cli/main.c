/* saeflow: the command-line front door. Dispatches `saeflow <cmd> [sub] args` to the
 * table below; every command parses its own flags. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/core.h"

static const struct cli_cmd commands[] = {
    {"version", NULL, cmd_version, "print the version"},
    {"generate", NULL, cmd_generate, "generate text with a model (.bin, .gguf, HF directory)"},
    {"tokenize", NULL, cmd_tokenize, "print a text's token ids and pieces"},
    {"model", "info", cmd_model_info, "describe a model: shapes, parameters, hook points"},
    {"sae", "info", cmd_sae_info, "describe a SAELens or sparsify SAE directory"},
    {"train", NULL, cmd_train, "train an SAE on activation shards (safetensors)"},
    {"eval", NULL, cmd_eval, "evaluate an SAE spliced into its model; harvest features"},
    {"feature", "show", cmd_feature_show, "a feature's dashboard from the feature store"},
    {"feature", "search", cmd_feature_search, "which features fire where on a text / a word"},
    {"feature", "contrast", cmd_feature_contrast, "features that separate two sets of texts"},
    {"up", NULL, cmd_up, "run capture + train locally from one config, with live progress"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: saeflow <command> [args]   (saeflow <command> --help for details)\n\n");
    for (size_t i = 0; i < SF_ARRAY_LEN(commands); i++) {
        char name[64];
        snprintf(name, sizeof name, "%s%s%s", commands[i].name, commands[i].sub ? " " : "",
                 commands[i].sub ? commands[i].sub : "");
        fprintf(f, "  %-18s %s\n", name, commands[i].summary);
    }
}

int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("saeflow %s\n", SAEFLOW_VERSION);
    return 0;
}

int main(int argc, char **argv)
{
    proc_reexec_with_env(argv, "OMP_WAIT_POLICY", "passive");
    log_init("saeflow", LOG_LOGFMT, LOG_INFO);
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "--version")) return cmd_version(0, NULL);
    for (size_t i = 0; i < SF_ARRAY_LEN(commands); i++) {
        const struct cli_cmd *c = &commands[i];
        if (strcmp(argv[1], c->name) != 0) continue;
        if (!c->sub) return c->run(argc - 1, argv + 1);
        if (argc >= 3 && !strcmp(argv[2], c->sub)) return c->run(argc - 2, argv + 2);
    }
    fprintf(stderr, "saeflow: unknown command '%s%s%s'\n", argv[1], argc > 2 ? " " : "",
            argc > 2 ? argv[2] : "");
    usage(stderr);
    return 2;
}

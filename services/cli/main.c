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
    {"store", "list", cmd_store_list, "list the SAEs and eval runs in a feature store"},
    {"help", NULL, cmd_help, "list the commands"},
};

/* Lists the commands, or only those whose first word is `only` (NULL: all). */
static void usage(FILE *f, const char *only)
{
    if (only)
        fprintf(f, "usage: saeflow %s <subcommand> [args]   (add --help for details)\n\n", only);
    else
        fprintf(f, "usage: saeflow <command> [args]   (saeflow <command> --help for details)\n\n");
    for (size_t i = 0; i < SF_ARRAY_LEN(commands); i++) {
        if (only && strcmp(commands[i].name, only) != 0) continue;
        char name[64];
        snprintf(name, sizeof name, "%s%s%s", commands[i].name, commands[i].sub ? " " : "",
                 commands[i].sub ? commands[i].sub : "");
        fprintf(f, "  %-18s %s\n", name, commands[i].summary);
    }
    if (!only)
        fprintf(f, "\nsaeflow --version prints the version. The services are their own binaries:\n"
                   "saeflow-capture, saeflow-train, saeflow-eval (each takes --help).\n"
                   "Flag names take '-' or '_' alike: --first-line = --first_line.\n");
}

int cmd_help(int argc, char **argv)
{
    usage(stdout, argc > 1 ? argv[1] : NULL);
    return 0;
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
    if (argc < 2) {
        fprintf(stderr, "saeflow: a command is missing\n");
        usage(stderr, NULL);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout, NULL);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) return cmd_version(0, NULL);
    bool known = false;
    for (size_t i = 0; i < SF_ARRAY_LEN(commands); i++) {
        const struct cli_cmd *c = &commands[i];
        if (strcmp(argv[1], c->name) != 0) continue;
        known = true;
        if (!c->sub) return c->run(argc - 1, argv + 1);
        if (argc >= 3 && !strcmp(argv[2], c->sub)) return c->run(argc - 2, argv + 2);
    }
    if (known) {
        /* `saeflow feature` alone or with an unknown subcommand: list what exists */
        bool help = argc >= 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h") ||
                                  !strcmp(argv[2], "help"));
        if (help) {
            usage(stdout, argv[1]);
            return 0;
        }
        if (argc < 3)
            fprintf(stderr, "saeflow %s: a subcommand is missing\n", argv[1]);
        else
            fprintf(stderr, "saeflow %s: unknown subcommand '%s'\n", argv[1], argv[2]);
        usage(stderr, argv[1]);
        return 2;
    }
    fprintf(stderr, "saeflow: unknown command '%s'\n", argv[1]);
    usage(stderr, NULL);
    return 2;
}

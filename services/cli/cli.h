/* The `saeflow` command: one-shot stages from a terminal. Each subcommand lives in
 * its own file (cmd_<name>.c) and is listed in the table in main.c.
 * A command returns the process exit code: 0 ok, 1 runtime failure, 2 usage error. */
#ifndef SAEFLOW_CLI_H
#define SAEFLOW_CLI_H

#include <stdbool.h>

struct cli_cmd {
    const char *name; /* first word, e.g. "generate" or "model" */
    const char *sub;  /* second word or NULL, e.g. "info" for `saeflow model info` */
    int (*run)(int argc, char **argv); /* argv[0] is the (sub)command name */
    const char *summary;
};

/* One declaration per command file. */
int cmd_version(int argc, char **argv);
int cmd_help(int argc, char **argv);
int cmd_store_list(int argc, char **argv); /* cmd_store.c */
int cmd_up(int argc, char **argv);
int cmd_generate(int argc, char **argv); /* cmd_generate.c */
/* cmd_generate_steer.c: generate with --sae/--steer (cmd_generate hands over) */
int cmd_generate_steer(int argc, char **argv);
bool cli_wants_steering(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);         /* cmd_tokenize.c */
int cmd_model_info(int argc, char **argv);       /* cmd_model_info.c */
int cmd_sae_info(int argc, char **argv);         /* cmd_sae.c */
int cmd_train(int argc, char **argv);            /* cmd_train.c */
int cmd_eval(int argc, char **argv);             /* cmd_eval.c */
int cmd_feature_show(int argc, char **argv);     /* cmd_feature.c */
int cmd_feature_search(int argc, char **argv);   /* cmd_feature_scan.c */
int cmd_feature_contrast(int argc, char **argv); /* cmd_feature_scan.c */

#endif

// lib: core
/* Fuzzes the config-file parser with a table that has every option type. */
#include <stdio.h>
#include <stdlib.h>

#include "core/core.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    static int quiet;
    if (!quiet) {
        quiet = 1;
        log_init("fuzz", LOG_LOGFMT, LOG_OFF);
    }
    int64_t port = 1; /* config_parse_text sets only what the text names */
    double lr = 0.1;
    char *name = NULL;
    bool flag = false;
    struct config_opt opts[] = {
        {"port", CFG_INT, &port, "1", 1, 65535, "port"},
        {"lr", CFG_DOUBLE, &lr, "0.1", 0, 1, "lr"},
        {"name", CFG_STRING, &name, "x", 1, 0, "name"},
        {"flag", CFG_BOOL, &flag, "false", 1, 0, "flag"},
    };
    struct config cfg = {.service = "fuzz", .opts = opts, .n_opts = SF_ARRAY_LEN(opts)};
    if (config_parse_text(&cfg, (const char *)data, size, "fuzz") == 0) {
        if (port < 1 || port > 65535 || lr < 0 || lr > 1) abort(); /* bounds must hold */
    }
    config_free(&cfg);
    return 0;
}

/* signals: SIGINT/SIGTERM only set a flag that service loops poll; a second one
 * exits at once (a user who presses Ctrl-C twice means it). */
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "core.h"

static volatile sig_atomic_t stop_count;

static void on_signal(int sig)
{
    (void)sig;
    if (++stop_count >= 2) _exit(130);
}

void sig_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

bool sig_stop_requested(void)
{
    return stop_count > 0;
}

void sig_request_stop(void)
{
    if (stop_count == 0) stop_count = 1;
}

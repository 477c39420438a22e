/*
 * log.c - pool events and worker output to the user's log callback, or to stderr without one:
 * "[worker N] <line it printed>" and "[pypool] <level>: worker N: <event>". Events above the
 * pool's log_level are dropped here. Called with no lock held, from the reaper or a client.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>

#include "log.h"

void pypool__log(pypool *p, int level, int pid, const char *fmt, ...)
{
    /* Pool events above log_level are dropped before formatting; workers' output never is. */
    if (level != PYPOOL_LOG_OUTPUT && level > p->cfg.log_level)
        return;
    char line[PYPOOL__LOG_LINE_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (p->cfg.log_fn) {
        p->cfg.log_fn(p->cfg.log_ud, level, pid, line);
        return;
    }
    /* Told apart at a glance: what a worker printed, and what the pool says about it. */
    static const char *const names[] = {"error", "warning", "info", "output", "debug"};
    const char *name = level >= 0 && level <= PYPOOL_LOG_DEBUG ? names[level] : "event";
    flockfile(stderr);
    if (level == PYPOOL_LOG_OUTPUT)
        fprintf(stderr, "[worker %d] %s\n", pid, line);
    else if (pid > 0)
        fprintf(stderr, "[pypool] %s: worker %d: %s\n", name, pid, line);
    else
        fprintf(stderr, "[pypool] %s: %s\n", name, line);
    funlockfile(stderr);
}

/* xorshift64*: jitter for restarts and recycling; per pool, no global state. */
uint64_t pypool__rand(uint64_t *state)
{
    uint64_t x = *state ? *state : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dull;
}

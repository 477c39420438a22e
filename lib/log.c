/*
 * log.c - pool events and worker output to the user's log callback, or to stderr as
 * "[pypool pid N] ..." without one. Called with no lock held, from the reaper or a client.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>

#include "pool.h"

void pypool__log(pypool *p, int level, int pid, const char *fmt, ...)
{
    char line[PYPOOL__LOG_LINE_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (p->cfg.log_fn) {
        p->cfg.log_fn(p->cfg.log_ud, level, pid, line);
        return;
    }
    if (level == PYPOOL_LOG_DEBUG)
        return;
    flockfile(stderr);
    fprintf(stderr, "[pypool pid %d] %s\n", pid, line);
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

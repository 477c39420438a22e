/* log.h - pool events and worker output to the user's log_fn or stderr (log.c). */
#ifndef PYPOOL_LOG_H
#define PYPOOL_LOG_H

#include "slots.h"

/* Drops events above the pool's log_level; never holds a lock while calling log_fn. */
void pypool__log(pypool *p, int level, int pid, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* xorshift64*: jitter for restarts and recycling; per pool, no global state. */
uint64_t pypool__rand(uint64_t *state);

#endif

/*
 * testutil.h - helpers shared by the Criterion suites: pool configs pointing at the test
 * modules, and process/fd/thread accounting read from /proc.
 */
#ifndef PYPOOL_TESTUTIL_H
#define PYPOOL_TESTUTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "pypool.h"

/* pypool_config_init + module + size + python_path = tests/modules + a quiet log collector. */
void tu_config(pypool_config *cfg, const char *module, unsigned size);

int64_t tu_now_ms(void);
void tu_sleep_ms(int64_t ms);

int tu_count_fds(void);      /* open fds of this process */
int tu_count_threads(void);  /* entries of /proc/self/task */
int tu_count_children(void); /* live or zombie processes whose parent is this process */
/* Fills pids[] with up to max children of this process; returns how many. */
int tu_list_children(pid_t *pids, int max);

bool tu_pid_exists(pid_t pid); /* /proc/<pid> exists (alive or zombie) */
bool tu_pid_zombie(pid_t pid); /* state Z */
char tu_pid_state(pid_t pid);  /* /proc state letter (R, S, Z, ...), '?' if gone */

/* Polls pred(arg) every 5 ms until it is true or timeout_ms passes. */
bool tu_wait_until(bool (*pred)(void *arg), void *arg, int64_t timeout_ms);
/* Waits until thread tid (of this process) sleeps in a blocking call: the event a test needs
 * before it disturbs that call, instead of a sleep guessed long enough. */
bool tu_wait_thread_blocked(pid_t tid, int64_t timeout_ms);
pid_t tu_gettid(void);
/* Waits until pid is gone from /proc (not even a zombie). */
bool tu_wait_pid_gone(pid_t pid, int64_t timeout_ms);

/* Log collector installed by tu_config: counts lines and keeps them (thread-safe). */
typedef struct tu_log {
    uint64_t lines;
    uint64_t output_lines; /* PYPOOL_LOG_OUTPUT */
    uint64_t bytes;
} tu_log;
void tu_log_reset(void);
tu_log tu_log_snapshot(void);
/* True if some logged line contains needle. */
bool tu_log_contains(const char *needle);
/* Set PYPOOL_TEST_VERBOSE=1 to echo logged lines to stderr. */

#endif

/*
 * hygiene.c - descriptor, thread and child hygiene over many pool lifetimes: creates and
 * destroys 200 pools in a loop (several shapes: lazy and never started, warm with calls,
 * sessions, a worker still checked out across destroy, a killed worker) and checks after every
 * destroy that the process's open fds, threads (/proc/self/task) and children (alive or zombie)
 * are back to the baseline taken before the first pool. Plain C so that it also runs in the
 * sanitizer builds; under ASan, LeakSanitizer checks the memory side at exit.
 *
 * Usage: pypool_hygiene [--pools N] [--shape 0..4] [--verbose]
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pypool.h"
#include "testutil.h"

#ifndef PYPOOL_TEST_MODULES
#error "PYPOOL_TEST_MODULES must point at tests/modules"
#endif
#ifndef PYPOOL_TEST_PYTHON
#define PYPOOL_TEST_PYTHON NULL
#endif

#define POOL_HANG_MS 30000 /* one pool lifetime taking longer is a hang */

static int failures;
static bool verbose;
static int only_shape = -1; /* --shape N: every pool has that shape (reproducing one case) */

/* Watchdog: what the main thread is doing, and since when (read by the watchdog thread). */
static pthread_mutex_t wd_mu = PTHREAD_MUTEX_INITIALIZER;
static int wd_iter = -1;
static const char *wd_step = "start";
static int64_t wd_since;

static void fail(int iter, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(int iter, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "hygiene: FAIL (pool %d) %s\n", iter, buf);
    failures++;
}

/* Processes whose parent is us, alive or zombie; the first and its state are reported. */
static int count_children(pid_t *first, char *first_state)
{
    int n = tu_list_children(first, 1);
    if (n > 0)
        *first_state = tu_pid_state(*first);
    return n;
}

static bool threads_at_most(void *arg)
{
    return tu_count_threads() <= *(int *)arg;
}

static void step(int iter, const char *what)
{
    pthread_mutex_lock(&wd_mu);
    if (iter != wd_iter)
        wd_since = tu_now_ms();
    wd_iter = iter;
    wd_step = what;
    pthread_mutex_unlock(&wd_mu);
}

/* Aborts with a useful message when one pool lifetime hangs (rather than a ctest timeout). */
static void *watchdog_main(void *arg)
{
    (void)arg;
    for (;;) {
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&wd_mu);
        int iter = wd_iter;
        const char *what = wd_step;
        int64_t took = tu_now_ms() - wd_since;
        pthread_mutex_unlock(&wd_mu);
        if (iter >= 0 && took > POOL_HANG_MS) {
            fprintf(stderr, "hygiene: HANG: pool %d (shape %d) stuck in %s for %" PRId64 " ms\n",
                    iter, only_shape >= 0 ? only_shape : iter % 5, what, took);
            abort();
        }
    }
    return NULL;
}

static void quiet_log(void *ud, int level, int pid, const char *line)
{
    (void)ud;
    if (verbose || level == PYPOOL_LOG_ERROR)
        fprintf(stderr, "[pool %d] %s\n", pid, line);
}

static void config(pypool_config *cfg, unsigned size, bool lazy)
{
    pypool_config_init(cfg);
    cfg->size = size;
    cfg->lazy = lazy;
    cfg->module = "echo_mod";
    cfg->python = PYPOOL_TEST_PYTHON;
    cfg->python_path = PYPOOL_TEST_MODULES;
    cfg->shutdown_grace_ms = 2000;
    cfg->log_fn = quiet_log;
}

static void expect_echo(int iter, pypool *p, const char *session)
{
    char msg[64];
    int len = snprintf(msg, sizeof msg, "hygiene %d", iter);
    pypool_result r;
    int rc = session ? pypool_session_call(p, session, "echo", msg, (size_t)len, 10000, &r)
                     : pypool_call(p, "echo", msg, (size_t)len, 10000, &r);
    if (rc != PYPOOL_OK)
        fail(iter, "echo: %s (%s)", pypool_strerror(rc), r.error_message ? r.error_message : "");
    else if (r.len != (size_t)len || memcmp(r.data, msg, (size_t)len) != 0)
        fail(iter, "echo returned something else");
    pypool_result_free(&r);
}

/* One pool lifetime; the shape rotates with the iteration. */
static void one_pool(int iter)
{
    int shape = only_shape >= 0 ? only_shape : iter % 5;
    pypool_config cfg;
    config(&cfg, shape == 2 ? 2 : 1, shape == 0 || shape == 3);
    if (shape == 3)
        cfg.shutdown_grace_ms = 200; /* destroy waits this long for the held worker */
    pypool *p = NULL;
    step(iter, "pypool_create");
    int rc = pypool_create(&cfg, &p);
    step(iter, "calls");
    if (rc != PYPOOL_OK) {
        fail(iter, "pypool_create: %s: %s", pypool_strerror(rc), pypool_last_error());
        return;
    }
    pypool_worker *held = NULL;
    switch (shape) {
    case 0: /* lazy, never started */
        break;
    case 1: /* warm, one call */
        expect_echo(iter, p, NULL);
        break;
    case 2: /* two workers, a session, closed */
        expect_echo(iter, p, "hygiene-session");
        expect_echo(iter, p, NULL);
        pypool_session_close(p, "hygiene-session");
        break;
    case 3: /* lazy: the call starts a worker; then a worker stays checked out over destroy */
        expect_echo(iter, p, NULL);
        rc = pypool_checkout(p, 10000, &held);
        if (rc != PYPOOL_OK)
            fail(iter, "checkout: %s", pypool_strerror(rc));
        break;
    case 4: { /* the worker is killed; destroy races the restart */
        pypool_stats st;
        pypool_stats_get(p, &st);
        if (st.slots[0].pid > 0)
            kill(st.slots[0].pid, SIGKILL);
        break;
    }
    }
    step(iter,
         shape == 4 ? "pypool_destroy (right after SIGKILL of the worker)" : "pypool_destroy");
    pypool_destroy(p);
    step(iter, "pypool_checkin");
    pypool_checkin(held); /* closes the held worker's channel; frees the pool */
    step(iter, "checks");
}

int main(int argc, char **argv)
{
    int pools = 200;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--pools") == 0 && i + 1 < argc)
            pools = atoi(argv[++i]);
        else if (strcmp(argv[i], "--shape") == 0 && i + 1 < argc)
            only_shape = atoi(argv[++i]) % 5;
        else if (strcmp(argv[i], "--verbose") == 0)
            verbose = true;
        else {
            fprintf(stderr, "usage: %s [--pools N] [--shape 0..4] [--verbose]\n", argv[0]);
            return 2;
        }
    }
    pthread_t wd;
    if (pthread_create(&wd, NULL, watchdog_main, NULL) != 0)
        return 1;
    pthread_detach(wd);
    /* after the watchdog (and any sanitizer helper thread) exists */
    int fds0 = tu_count_fds(), threads0 = tu_count_threads();
    pid_t cpid = 0;
    char cstate = '?';
    int children0 = count_children(&cpid, &cstate);
    fprintf(stderr, "hygiene: baseline fds %d threads %d children %d; %d pools\n", fds0, threads0,
            children0, pools);
    int64_t t0 = tu_now_ms();
    for (int i = 0; i < pools && failures < 10; i++) {
        one_pool(i);
        /* destroy joined the reaper, but a joined thread can stay listed in /proc/self/task
         * for a moment: wait for it to go (10 s: a bound for "never"). */
        tu_wait_until(threads_at_most, &threads0, 10000);
        int fds = tu_count_fds(), threads = tu_count_threads();
        int children = count_children(&cpid, &cstate);
        if (fds != fds0)
            fail(i, "fds %d, baseline %d", fds, fds0);
        if (threads != threads0)
            fail(i, "threads %d, baseline %d", threads, threads0);
        if (children != children0)
            fail(i, "%d children (first: pid %d state %c), baseline %d", children, (int)cpid,
                 cstate, children0);
    }
    int64_t took = tu_now_ms() - t0;
    fprintf(stderr, "hygiene: %d pools in %" PRId64 " ms (%.1f ms each): %s\n", pools, took,
            (double)took / pools, failures ? "FAILED" : "PASSED");
    return failures ? 1 : 0;
}

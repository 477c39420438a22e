/*
 * pool_test.h - helpers shared by the pool and supervision Criterion suites (public API only).
 *
 * - PT_ASSERT_RC: asserts a return code and prints both code names and result.error_message.
 * - pt_create / pt_destroy / pt_teardown: every pool a test creates is tracked, and the suite's
 *   .fini (pt_teardown) destroys whatever an aborted test left, so no path leaks a pool.
 * - pt_call_job: run one pypool_call / pypool_session_call on a thread and keep its outcome, so
 *   that assertions run on the test's main thread only (Criterion asserts are not thread-safe).
 */
#ifndef PYPOOL_POOL_TEST_H
#define PYPOOL_POOL_TEST_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <criterion/criterion.h>

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "pypool.h"
#include "testutil.h"

static inline const char *pt_msg(const pypool_result *r)
{
    return (r && r->error_message) ? r->error_message : "(no error_message)";
}

/* Asserts rc == want; the message names both codes and carries the result's error_message. */
#define PT_ASSERT_RC(rc, want, res, what)                                                          \
    do {                                                                                           \
        int pt_rc_ = (rc);                                                                         \
        int pt_want_ = (want);                                                                     \
        cr_assert_eq(pt_rc_, pt_want_, "%s: got %s (%d), want %s; error_message: %s", (what),      \
                     pypool_strerror(pt_rc_), pt_rc_, pypool_strerror(pt_want_), pt_msg(res));     \
    } while (0)

/* Asserts a successful call whose reply is exactly the NUL-terminated string `want`. */
#define PT_ASSERT_REPLY(rc, res, want, what)                                                       \
    do {                                                                                           \
        PT_ASSERT_RC((rc), PYPOOL_OK, (res), (what));                                              \
        cr_assert_eq((res)->len, strlen(want), "%s: reply length %zu, want %zu", (what),           \
                     (res)->len, strlen(want));                                                    \
        cr_assert(memcmp((res)->data, (want), (res)->len) == 0, "%s: reply '%.*s', want '%s'",     \
                  (what), (int)(res)->len, (const char *)(res)->data, (want));                     \
    } while (0)

/* --- pool tracking ------------------------------------------------------------------------- */

#define PT_MAX_POOLS 8
static pypool *pt_pools[PT_MAX_POOLS];

static inline void pt_track(pypool *p)
{
    for (int i = 0; i < PT_MAX_POOLS; i++) {
        if (!pt_pools[i]) {
            pt_pools[i] = p;
            return;
        }
    }
    cr_assert_fail("more than %d pools in one test", PT_MAX_POOLS);
}

/* Creates a pool (asserting success with pypool_last_error in the message) and tracks it. */
static inline pypool *pt_create(const pypool_config *cfg)
{
    pypool *p = NULL;
    int rc = pypool_create(cfg, &p);
    cr_assert_eq(rc, PYPOOL_OK, "pypool_create(module=%s, size=%u): %s (%d): %s",
                 cfg->module ? cfg->module : "(null)", cfg->size, pypool_strerror(rc), rc,
                 pypool_last_error());
    cr_assert_not_null(p, "pypool_create returned OK but no pool");
    pt_track(p);
    return p;
}

/* Destroys a tracked pool now (and forgets it). */
static inline void pt_destroy(pypool *p)
{
    for (int i = 0; i < PT_MAX_POOLS; i++)
        if (pt_pools[i] == p)
            pt_pools[i] = NULL;
    pypool_destroy(p);
}

/* Suite .fini: destroys the pools an aborted test left behind. */
static inline void pt_teardown(void)
{
    for (int i = 0; i < PT_MAX_POOLS; i++) {
        pypool *p = pt_pools[i];
        pt_pools[i] = NULL;
        pypool_destroy(p);
    }
}

/* --- small helpers ------------------------------------------------------------------------- */

static inline int pt_call_str(pypool *p, const char *method, const char *payload,
                              int64_t timeout_ms, pypool_result *out)
{
    return pypool_call(p, method, payload, payload ? strlen(payload) : 0, timeout_ms, out);
}

static inline pypool_stats pt_stats(pypool *p)
{
    pypool_stats s;
    memset(&s, 0, sizeof s);
    pypool_stats_get(p, &s);
    return s;
}

/* Copies the slots' pids into pids[] (size entries); returns how many are nonzero. */
static inline int pt_slot_pids(pypool *p, int *pids, unsigned size)
{
    pypool_stats s = pt_stats(p);
    int nonzero = 0;
    for (unsigned i = 0; i < size; i++) {
        pids[i] = i < s.slot_count ? s.slots[i].pid : 0;
        if (pids[i] > 0)
            nonzero++;
    }
    return nonzero;
}

/* A process is "alive" if it exists and is not a zombie (reparented zombies may linger under a
 * pid 1 that does not reap; they run no code). */
static inline bool pt_alive(pid_t pid)
{
    return tu_pid_exists(pid) && !tu_pid_zombie(pid);
}

/* CPU time (user + system) of this process, all threads, in ms. */
static inline int64_t pt_cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/* Number of this process's children that are zombies. */
static inline int pt_zombie_children(void)
{
    pid_t kids[256];
    int n = tu_list_children(kids, 256);
    int zombies = 0;
    for (int i = 0; i < n && i < 256; i++)
        if (tu_pid_zombie(kids[i]))
            zombies++;
    return zombies;
}

/* --- waiting on pool state ----------------------------------------------------------------- */

typedef struct pt_wait_arg {
    pypool *p;
    unsigned n;
} pt_wait_arg;

static inline bool pt_pred_idle(void *arg)
{
    pt_wait_arg *a = arg;
    return pt_stats(a->p).idle == a->n;
}
static inline bool pt_pred_busy(void *arg)
{
    pt_wait_arg *a = arg;
    return pt_stats(a->p).busy == a->n;
}
static inline bool pt_pred_waiters(void *arg)
{
    pt_wait_arg *a = arg;
    return pt_stats(a->p).waiters == a->n;
}

/* Waits until exactly n slots are idle / busy / n threads wait for a worker. */
static inline bool pt_wait_idle(pypool *p, unsigned n, int64_t timeout_ms)
{
    pt_wait_arg a = {p, n};
    return tu_wait_until(pt_pred_idle, &a, timeout_ms);
}
static inline bool pt_wait_busy(pypool *p, unsigned n, int64_t timeout_ms)
{
    pt_wait_arg a = {p, n};
    return tu_wait_until(pt_pred_busy, &a, timeout_ms);
}
static inline bool pt_wait_waiters(pypool *p, unsigned n, int64_t timeout_ms)
{
    pt_wait_arg a = {p, n};
    return tu_wait_until(pt_pred_waiters, &a, timeout_ms);
}

typedef struct pt_replaced_arg {
    pypool *p;
    int old;
} pt_replaced_arg;

static inline bool pt_pred_replaced(void *arg)
{
    pt_replaced_arg *a = arg;
    pypool_stats s = pt_stats(a->p);
    return s.idle == 1 && s.slots[0].pid > 0 && s.slots[0].pid != a->old;
}

/* One-slot pool: waits until a worker other than old_pid is idle in slot 0. */
static inline bool pt_wait_replaced(pypool *p, int old_pid, int64_t timeout_ms)
{
    pt_replaced_arg a = {p, old_pid};
    return tu_wait_until(pt_pred_replaced, &a, timeout_ms);
}

/* Pid of the first BUSY slot, or 0. */
static inline int pt_busy_pid(pypool *p)
{
    pypool_stats s = pt_stats(p);
    for (unsigned i = 0; i < s.slot_count; i++)
        if (s.slots[i].state == PYPOOL_SLOT_BUSY)
            return s.slots[i].pid;
    return 0;
}

/* --- a call on its own thread ---------------------------------------------------------------- */

typedef struct pt_call_job {
    /* in */
    pypool *p;
    const char *session; /* NULL: pypool_call, else pypool_session_call */
    const char *method;
    char payload[128];
    int64_t timeout_ms;
    /* out */
    int rc;
    char reply[256]; /* reply (truncated), NUL-terminated */
    size_t reply_len;
    char error_type[64];
    char error_message[512];
    int worker_pid;
    int64_t started_ms, ended_ms;
    pthread_t thread;
} pt_call_job;

static inline void *pt_call_thread(void *arg)
{
    pt_call_job *j = arg;
    pypool_result r;
    j->started_ms = tu_now_ms();
    if (j->session)
        j->rc = pypool_session_call(j->p, j->session, j->method, j->payload, strlen(j->payload),
                                    j->timeout_ms, &r);
    else
        j->rc = pypool_call(j->p, j->method, j->payload, strlen(j->payload), j->timeout_ms, &r);
    j->ended_ms = tu_now_ms();
    j->reply_len = r.len;
    snprintf(j->reply, sizeof j->reply, "%.*s", (int)r.len, r.data ? (const char *)r.data : "");
    snprintf(j->error_type, sizeof j->error_type, "%s", r.error_type ? r.error_type : "");
    snprintf(j->error_message, sizeof j->error_message, "%s",
             r.error_message ? r.error_message : "(no error_message)");
    j->worker_pid = r.worker_pid;
    pypool_result_free(&r);
    return NULL;
}

/* Fills a job and starts its thread. */
static inline void pt_call_start(pt_call_job *j, pypool *p, const char *session, const char *method,
                                 const char *payload, int64_t timeout_ms)
{
    memset(j, 0, sizeof *j);
    j->p = p;
    j->session = session;
    j->method = method;
    snprintf(j->payload, sizeof j->payload, "%s", payload ? payload : "");
    j->timeout_ms = timeout_ms;
    j->rc = 1; /* not a pypool code: "did not finish" */
    int err = pthread_create(&j->thread, NULL, pt_call_thread, j);
    cr_assert_eq(err, 0, "pthread_create: %s", strerror(err));
}

static inline void pt_call_join(pt_call_job *j)
{
    pthread_join(j->thread, NULL);
}

/* Asserts a finished job's code, with its message. */
#define PT_ASSERT_JOB(job, want, what)                                                             \
    do {                                                                                           \
        int pt_want_ = (want);                                                                     \
        cr_assert_eq((job)->rc, pt_want_, "%s: got %s (%d), want %s; error_message: %s", (what),   \
                     pypool_strerror((job)->rc), (job)->rc, pypool_strerror(pt_want_),             \
                     (job)->error_message);                                                        \
    } while (0)

#endif

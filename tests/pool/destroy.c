/*
 * destroy.c - pypool_destroy leaves nothing behind (no child, fd or thread) whether the pool is
 * idle, busy with an in-flight call, full of waiters (all woken with PYPOOL_ESHUTDOWN) or has
 * a worker checked out (its fds close at the later checkin).
 *
 * Workers are kept busy by checking them out, so nothing depends on a call lasting longer than
 * the test's next steps; what happened is read from events (the pool's log, joined threads),
 * and the time bounds left only tell "waited for the grace period" from "did not".
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(pool_destroy, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

typedef struct baseline {
    int fds, threads;
} baseline;

static baseline take_baseline(void)
{
    cr_assert_eq(tu_count_children(), 0, "the test starts with children");
    return (baseline){.fds = tu_count_fds(), .threads = tu_count_threads()};
}

static bool threads_back(void *arg)
{
    return tu_count_threads() <= *(int *)arg;
}

/* Asserts that nothing of the pool is left. */
static void assert_back_to(baseline b, const char *when)
{
    int kids = tu_count_children();
    cr_assert_eq(kids, 0, "%s: %d children (live or zombie) left", when, kids);
    int fds = tu_count_fds();
    cr_assert_eq(fds, b.fds, "%s: %d fds open, %d before the pool", when, fds, b.fds);
    /* A joined thread may linger in /proc for a moment; the pool's own must be gone. */
    bool ok = tu_wait_until(threads_back, &b.threads, 10000);
    cr_assert(ok, "%s: %d threads, %d before the pool", when, tu_count_threads(), b.threads);
}

Test(pool_destroy, destroy_idle_pool_leaves_no_child_fd_or_thread, .timeout = 60)
{
    baseline b = take_baseline();
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 4);
    cfg.shutdown_grace_ms = 30000;
    pypool *p = pt_create(&cfg);
    for (int i = 0; i < 8; i++) {
        pypool_result r;
        int rc = pt_call_str(p, "echo", "x", 10000, &r);
        PT_ASSERT_REPLY(rc, &r, "x", "echo");
        pypool_result_free(&r);
    }
    cr_assert_eq(tu_count_children(), 4);
    int64_t t0 = tu_now_ms();
    pt_destroy(p);
    int64_t took = tu_now_ms() - t0;
    /* Idle workers leave on the Shutdown message: none waits for the grace period and is
     * signalled (the log would say "killed by signal"). */
    cr_assert(tu_log_contains("worker exited with status 0"), "no worker left by itself");
    cr_assert_not(tu_log_contains("killed by signal"), "an idle worker had to be killed");
    cr_assert_lt(took, cfg.shutdown_grace_ms,
                 "destroying an idle pool took %lld ms: it waited for the grace period",
                 (long long)took);
    assert_back_to(b, "after destroying an idle pool");
}

/* A worker_call on its own thread (the in-flight call while destroy runs). */
typedef struct inflight_call {
    pypool_worker *w;
    char seconds[16];
    int rc;
    char reply[16];
    pthread_t thread;
} inflight_call;

static void *inflight_main(void *arg)
{
    inflight_call *c = arg;
    pypool_result r;
    c->rc = pypool_worker_call(c->w, "sleep", c->seconds, strlen(c->seconds), 60000, &r);
    snprintf(c->reply, sizeof c->reply, "%.*s", (int)r.len, r.data ? (const char *)r.data : "");
    pypool_result_free(&r);
    return NULL;
}

static void *destroy_main(void *arg)
{
    pt_destroy(arg);
    return NULL;
}

/* Joins t within timeout_ms; false if it is still running. */
static bool timed_join(pthread_t t, int64_t timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(timeout_ms / 1000);
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return pthread_timedjoin_np(t, NULL, &ts) == 0;
}

/* syscr of /proc/<pid>/io: read(2) calls the process made so far, -1 if unreadable. */
static long long proc_syscr(pid_t pid)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    long long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "syscr: %lld", &v) == 1)
            break;
    fclose(f);
    return v;
}

typedef struct read_more_arg {
    pid_t pid;
    long long than;
} read_more_arg;

static bool read_more(void *arg)
{
    read_more_arg *a = arg;
    return proc_syscr(a->pid) > a->than;
}

#define GRACE_MS 30000

/*
 * One round, on a pool of one with a long grace period: the worker is checked out (so no
 * caller can be served: only destroy can end a wait), 16 callers queue, the worker takes a
 * request of `seconds` s (worker_call on another thread), and destroy starts on a third. The
 * queued callers must be woken with PYPOOL_ESHUTDOWN by destroy itself, the in-flight call
 * must finish with its reply, and destroy must return at the checkin, not at the grace period.
 * Returns false if the round proves nothing about the in-flight call: destroy began only after
 * the handler could have finished (a very slow machine), so the caller runs it again longer.
 */
static bool destroy_with_waiters_round(int seconds)
{
    baseline b = take_baseline();
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    cfg.shutdown_grace_ms = GRACE_MS;
    pypool *p = pt_create(&cfg);

    pypool_worker *w = NULL;
    int rc = pypool_checkout(p, 10000, &w);
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "checkout of the only worker");
    pid_t wpid = pypool_worker_pid(w);
    static pt_call_job waiters[16];
    for (int i = 0; i < 16; i++)
        pt_call_start(&waiters[i], p, NULL, "echo", "never", 60000);
    cr_assert(pt_wait_waiters(p, 16, 30000), "16 waiters never showed in stats.waiters");

    /* The in-flight call: sent, and read by the worker (its read(2) count grows). */
    read_more_arg took_it = {wpid, proc_syscr(wpid)};
    cr_assert_geq(took_it.than, 0, "cannot read /proc/%d/io", (int)wpid);
    inflight_call c = {.w = w, .rc = 1};
    snprintf(c.seconds, sizeof c.seconds, "%d", seconds);
    int64_t sent_ms = tu_now_ms();
    cr_assert_eq(pthread_create(&c.thread, NULL, inflight_main, &c), 0);
    cr_assert(tu_wait_until(read_more, &took_it, 30000), "the worker never took the request");

    pthread_t destroyer;
    cr_assert_eq(pthread_create(&destroyer, NULL, destroy_main, p), 0);
    for (int i = 0; i < 16; i++)
        cr_assert(timed_join(waiters[i].thread, GRACE_MS / 2),
                  "destroy did not wake waiter %d (the worker is still checked out)", i);
    int64_t first_woken = INT64_MAX;
    for (int i = 0; i < 16; i++) {
        char what[32];
        snprintf(what, sizeof what, "waiter %d", i);
        PT_ASSERT_JOB(&waiters[i], PYPOOL_ESHUTDOWN, what);
        if (waiters[i].ended_ms < first_woken)
            first_woken = waiters[i].ended_ms;
    }
    /* The handler sleeps from after sent_ms: it cannot have replied before sent + seconds. A
     * waiter woken before that shows destroy had begun while the call was in flight. */
    bool conclusive = first_woken < sent_ms + seconds * 1000;

    cr_assert(timed_join(c.thread, GRACE_MS / 2), "the in-flight call never returned");
    cr_assert_eq(c.rc, PYPOOL_OK, "the in-flight call during destroy: %s", pypool_strerror(c.rc));
    cr_assert_str_eq(c.reply, "slept");

    int64_t t_checkin = tu_now_ms();
    pypool_checkin(w); /* the last busy worker: destroy can finish */
    bool returned = timed_join(destroyer, GRACE_MS / 2);
    int64_t took = tu_now_ms() - t_checkin;
    cr_assert(returned, "destroy did not return after the checkin (grace %d ms)", GRACE_MS);
    fprintf(stderr, "destroy returned %lld ms after the checkin; round of %d s %s\n",
            (long long)took, seconds, conclusive ? "conclusive" : "inconclusive");
    assert_back_to(b, "after destroying a pool with 16 waiters");
    return conclusive;
}

Test(pool_destroy, destroy_wakes_16_waiters_with_eshutdown_and_leaves_nothing, .timeout = 150)
{
    bool conclusive = false;
    for (int seconds = 1; seconds <= 8 && !conclusive; seconds *= 2)
        conclusive = destroy_with_waiters_round(seconds);
    cr_assert(conclusive, "destroy never began while the call was in flight (machine too slow?)");
}

Test(pool_destroy, destroy_with_a_checked_out_worker_kills_it_after_grace, .timeout = 60)
{
    baseline b = take_baseline();
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    cfg.shutdown_grace_ms = 500;
    pypool *p = pt_create(&cfg);

    pypool_worker *w = NULL;
    int rc = pypool_checkout(p, 5000, &w);
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "checkout");
    int pid = pypool_worker_pid(w);

    int64_t t0 = tu_now_ms();
    pt_destroy(p);
    int64_t took = tu_now_ms() - t0;
    /* It waited for the grace period (a lower bound: always true of a correct pool), and for
     * the configured one, not the default: any bound below the default tells them apart. */
    pypool_config defaults;
    pypool_config_init(&defaults);
    cr_assert_geq(took, cfg.shutdown_grace_ms - 50, "destroy took %lld ms, less than the grace",
                  (long long)took);
    cr_assert_lt(took, defaults.shutdown_grace_ms,
                 "destroy with a checked-out worker took %lld ms (grace %lld ms, default %lld ms)",
                 (long long)took, (long long)cfg.shutdown_grace_ms,
                 (long long)defaults.shutdown_grace_ms);
    cr_assert_eq(tu_count_children(), 0, "destroy left children (checked-out worker %d)", pid);
    cr_assert(!tu_pid_exists(pid), "the checked-out worker %d still exists", pid);

    pypool_checkin(w); /* still valid after destroy; closes the worker's fds */
    assert_back_to(b, "after destroy and the late checkin");
}

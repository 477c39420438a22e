/*
 * destroy.c - pypool_destroy leaves nothing behind (no child, fd or thread) whether the pool is
 * idle, busy with an in-flight call, full of waiters (all woken with PYPOOL_ESHUTDOWN) or has
 * a worker checked out (its fds close at the later checkin).
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
    bool ok = tu_wait_until(threads_back, &b.threads, 1000);
    cr_assert(ok, "%s: %d threads, %d before the pool", when, tu_count_threads(), b.threads);
}

Test(pool_destroy, destroy_idle_pool_leaves_no_child_fd_or_thread, .timeout = 60)
{
    baseline b = take_baseline();
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 4);
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
    cr_assert_lt(took, 2000, "destroying an idle pool took %lld ms", (long long)took);
    assert_back_to(b, "after destroying an idle pool");
}

Test(pool_destroy, destroy_wakes_16_waiters_with_eshutdown_and_leaves_nothing, .timeout = 60)
{
    baseline b = take_baseline();
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);

    pt_call_job holder;
    pt_call_start(&holder, p, NULL, "sleep", "1.0", 30000);
    cr_assert(pt_wait_busy(p, 1, 5000), "the holder never made the worker busy");
    static pt_call_job waiters[16];
    for (int i = 0; i < 16; i++)
        pt_call_start(&waiters[i], p, NULL, "echo", "never", 60000);
    bool all_wait = pt_wait_waiters(p, 16, 10000);

    int64_t t0 = tu_now_ms();
    pt_destroy(p);
    int64_t took = tu_now_ms() - t0;
    for (int i = 0; i < 16; i++)
        pt_call_join(&waiters[i]);
    pt_call_join(&holder);

    cr_assert(all_wait, "16 waiters never showed in stats.waiters");
    for (int i = 0; i < 16; i++) {
        char what[32];
        snprintf(what, sizeof what, "waiter %d", i);
        PT_ASSERT_JOB(&waiters[i], PYPOOL_ESHUTDOWN, what);
        cr_assert_lt(waiters[i].ended_ms - t0, 500,
                     "waiter %d woke %lld ms into destroy, not at once", i,
                     (long long)(waiters[i].ended_ms - t0));
    }
    /* The in-flight call finishes within shutdown_grace_ms (default 5 s). */
    PT_ASSERT_JOB(&holder, PYPOOL_OK, "the in-flight call during destroy");
    cr_assert_lt(took, 4000, "destroy took %lld ms", (long long)took);
    assert_back_to(b, "after destroying a pool with 16 waiters");
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
    cr_assert_lt(took, 500 + 1500, "destroy with a checked-out worker took %lld ms",
                 (long long)took);
    cr_assert_eq(tu_count_children(), 0, "destroy left children (checked-out worker %d)", pid);
    cr_assert(!tu_pid_exists(pid), "the checked-out worker %d still exists", pid);

    pypool_checkin(w); /* still valid after destroy; closes the worker's fds */
    assert_back_to(b, "after destroy and the late checkin");
}

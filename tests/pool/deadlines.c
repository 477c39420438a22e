/*
 * deadlines.c - deadlines and timeouts: a short deadline while every worker is busy fails fast
 * without disturbing anyone; a handler running past its deadline costs its worker (killed and
 * restarted) and never leaks a stale reply; one deadline covers waiting and running; the pool
 * defaults apply to negative timeouts.
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(pool_deadlines, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

Test(pool_deadlines, one_ms_deadline_while_all_busy_fails_fast_and_disturbs_nobody, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    pypool *p = pt_create(&cfg);
    int before[2];
    cr_assert_eq(pt_slot_pids(p, before, 2), 2, "eager pool of 2 has 2 pids");

    pt_call_job busy[2];
    for (int i = 0; i < 2; i++)
        pt_call_start(&busy[i], p, NULL, "sleep", "5.0", 30000);
    bool both_busy = pt_wait_busy(p, 2, 5000);

    pypool_result r;
    int64_t t0 = tu_now_ms();
    int rc = pt_call_str(p, "echo", "late", 1, &r);
    int64_t took_1ms = tu_now_ms() - t0;
    int rc_1ms = rc;
    char msg_1ms[256];
    snprintf(msg_1ms, sizeof msg_1ms, "%s", pt_msg(&r));
    pypool_result_free(&r);

    t0 = tu_now_ms();
    int rc_0ms = pt_call_str(p, "echo", "late", 0, &r);
    int64_t took_0ms = tu_now_ms() - t0;
    pypool_result_free(&r);

    pypool_worker *w = NULL;
    t0 = tu_now_ms();
    int rc_co = pypool_checkout(p, 1, &w);
    int64_t took_co = tu_now_ms() - t0;

    for (int i = 0; i < 2; i++)
        pt_call_join(&busy[i]);

    cr_assert(both_busy, "the two sleep calls never made both workers busy");
    cr_assert_eq(rc_1ms, PYPOOL_ETIMEDOUT, "1 ms deadline: %s: %s", pypool_strerror(rc_1ms),
                 msg_1ms);
    /* Bounds that tell an enforced deadline from an ignored one (the workers are busy for 5 s),
     * not speed targets: a loaded machine must pass them. */
    cr_assert_lt(took_1ms, 2500, "1 ms deadline returned after %lld ms", (long long)took_1ms);
    cr_assert_eq(rc_0ms, PYPOOL_ETIMEDOUT, "timeout 0: %s", pypool_strerror(rc_0ms));
    cr_assert_lt(took_0ms, 2500, "timeout 0 returned after %lld ms", (long long)took_0ms);
    cr_assert_eq(rc_co, PYPOOL_ETIMEDOUT, "checkout(1 ms): %s", pypool_strerror(rc_co));
    cr_assert_null(w);
    cr_assert_lt(took_co, 2500, "checkout(1 ms) returned after %lld ms", (long long)took_co);
    for (int i = 0; i < 2; i++) {
        PT_ASSERT_JOB(&busy[i], PYPOOL_OK, "the busy call");
        cr_assert(busy[i].worker_pid == before[0] || busy[i].worker_pid == before[1],
                  "busy call served by unknown pid %d", busy[i].worker_pid);
    }

    int after[2];
    pt_slot_pids(p, after, 2);
    cr_assert(after[0] == before[0] && after[1] == before[1], "workers changed: %d,%d -> %d,%d",
              before[0], before[1], after[0], after[1]);
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.restarts, 0, "a waiting timeout restarted a worker");
    cr_assert_eq(s.crashes, 0);
    cr_assert_eq(s.call_timeouts, 0, "no call timed out while running");
    cr_assert_geq(s.timeouts, 1, "stats.timeouts %llu", (unsigned long long)s.timeouts);
    cr_assert_eq(s.idle, 2);
    pt_destroy(p);
}

Test(pool_deadlines, handler_past_deadline_times_out_and_next_call_gets_its_own_reply,
     .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);
    int old_pid;
    pt_slot_pids(p, &old_pid, 1);

    pypool_result r;
    int64_t t0 = tu_now_ms();
    int rc = pt_call_str(p, "sleep", "5", 300, &r);
    int64_t took = tu_now_ms() - t0;
    PT_ASSERT_RC(rc, PYPOOL_ETIMEDOUT, &r, "sleep 5 s with a 300 ms deadline");
    pypool_result_free(&r);
    cr_assert_geq(took, 280, "timed out early, after %lld ms", (long long)took);
    cr_assert_lt(took, 4000, "timed out late, after %lld ms", (long long)took);

    /* The worker's state is unknown: it must be killed (not left to finish its sleep). */
    cr_assert(tu_wait_pid_gone(old_pid, 3000), "timed-out worker %d still exists 3 s later",
              old_pid);

    rc = pt_call_str(p, "echo", "my-own-reply", 15000, &r);
    PT_ASSERT_REPLY(rc, &r, "my-own-reply", "the call after the timeout");
    cr_assert_neq(r.worker_pid, old_pid, "served by the killed worker");
    pypool_result_free(&r);
    cr_assert(pt_wait_idle(p, 1, 5000), "the slot did not come back to idle");

    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.call_timeouts, 1, "stats.call_timeouts %llu",
                 (unsigned long long)s.call_timeouts);
    cr_assert_eq(s.timeouts, 1, "stats.timeouts %llu", (unsigned long long)s.timeouts);
    cr_assert_eq(s.restarts, 1, "stats.restarts %llu", (unsigned long long)s.restarts);
    pt_destroy(p);
}

Test(pool_deadlines, one_deadline_covers_waiting_and_running, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);

    pt_call_job holder;
    pt_call_start(&holder, p, NULL, "sleep", "0.6", 30000);
    bool busy = pt_wait_busy(p, 1, 5000);

    /* Waits ~0.6 s for the worker, then needs 0.6 s more: a 0.9 s deadline must cut it. */
    pypool_result r;
    int64_t t0 = tu_now_ms();
    int rc = pt_call_str(p, "sleep", "0.6", 900, &r);
    int64_t took = tu_now_ms() - t0;
    char msg[256];
    snprintf(msg, sizeof msg, "%s", pt_msg(&r));
    pypool_result_free(&r);
    pt_call_join(&holder);

    cr_assert(busy, "the holder never made the worker busy");
    PT_ASSERT_JOB(&holder, PYPOOL_OK, "the holder's call");
    cr_assert_eq(rc, PYPOOL_ETIMEDOUT,
                 "wait + run exceeded the 900 ms deadline but got %s after %lld ms: %s",
                 pypool_strerror(rc), (long long)took, msg);
    cr_assert_geq(took, 850, "timed out early, after %lld ms", (long long)took);
    cr_assert_lt(took, 5000, "timed out after %lld ms, deadline was 900 ms", (long long)took);

    rc = pt_call_str(p, "echo", "after", 15000, &r);
    PT_ASSERT_REPLY(rc, &r, "after", "the call after the timeout");
    pypool_result_free(&r);
    pt_destroy(p);
}

Test(pool_deadlines, negative_timeouts_use_the_pool_defaults, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    cfg.call_timeout_ms = 300;
    cfg.checkout_timeout_ms = 200;
    pypool *p = pt_create(&cfg);

    pypool_result r;
    int64_t t0 = tu_now_ms();
    int rc = pt_call_str(p, "sleep", "5", -1, &r);
    int64_t took = tu_now_ms() - t0;
    PT_ASSERT_RC(rc, PYPOOL_ETIMEDOUT, &r, "call with timeout -1 (call_timeout_ms 300)");
    pypool_result_free(&r);
    cr_assert(took >= 280 && took < 4000, "default call deadline hit after %lld ms",
              (long long)took);

    /* Occupy the (restarted) worker, then a default checkout must give up after ~200 ms. */
    pt_call_job holder;
    pt_call_start(&holder, p, NULL, "sleep", "5.0", 30000);
    bool busy = pt_wait_busy(p, 1, 15000);
    uint64_t restarts = pt_stats(p).restarts;
    pypool_worker *w = NULL;
    t0 = tu_now_ms();
    int rc_co = pypool_checkout(p, -1, &w);
    int64_t took_co = tu_now_ms() - t0;
    pt_call_join(&holder);

    cr_assert(busy, "the holder never made the worker busy");
    PT_ASSERT_JOB(&holder, PYPOOL_OK, "the holder's call");
    cr_assert_eq(rc_co, PYPOOL_ETIMEDOUT, "checkout(-1): %s", pypool_strerror(rc_co));
    cr_assert(took_co >= 180 && took_co < 3000, "default checkout deadline hit after %lld ms",
              (long long)took_co);
    cr_assert_eq(pt_stats(p).restarts, restarts, "a checkout timeout restarted a worker");
    pt_destroy(p);
}

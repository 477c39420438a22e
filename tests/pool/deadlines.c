/*
 * deadlines.c - deadlines and timeouts: a short deadline while every worker is busy fails fast
 * without disturbing anyone; a handler running past its deadline costs its worker (killed and
 * restarted) and never leaks a stale reply; one deadline covers waiting and running; the pool
 * defaults apply to negative timeouts.
 *
 * Workers are kept busy by checking them out (held until the test checks them in), not by
 * calls that sleep a fixed time hoped to outlast the test's next steps; the handlers that must
 * run past a deadline sleep far longer (30 s) than any bound asserted, so that an ignored
 * deadline shows as a wrong result, not as a slightly late one.
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

    /* Both workers busy until checked in: nothing but the deadlines can end the calls below. */
    pypool_worker *held[2];
    for (int i = 0; i < 2; i++) {
        int rc = pypool_checkout(p, 10000, &held[i]);
        PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "checkout of a worker to keep busy");
    }
    cr_assert_eq(pt_stats(p).busy, 2, "both workers busy");

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

    cr_assert_eq(rc_1ms, PYPOOL_ETIMEDOUT, "1 ms deadline: %s: %s", pypool_strerror(rc_1ms),
                 msg_1ms);
    /* An ignored deadline would wait for a checkin that comes only after these: the bounds
     * just say "returned without it", generously, on a loaded machine. */
    cr_assert_lt(took_1ms, 10000, "1 ms deadline returned after %lld ms", (long long)took_1ms);
    cr_assert_eq(rc_0ms, PYPOOL_ETIMEDOUT, "timeout 0: %s", pypool_strerror(rc_0ms));
    cr_assert_lt(took_0ms, 10000, "timeout 0 returned after %lld ms", (long long)took_0ms);
    cr_assert_eq(rc_co, PYPOOL_ETIMEDOUT, "checkout(1 ms): %s", pypool_strerror(rc_co));
    cr_assert_null(w);
    cr_assert_lt(took_co, 10000, "checkout(1 ms) returned after %lld ms", (long long)took_co);

    /* Nobody was disturbed: the busy workers serve their holders as before. */
    for (int i = 0; i < 2; i++) {
        rc = pypool_worker_call(held[i], "echo", "mine", 4, 10000, &r);
        PT_ASSERT_REPLY(rc, &r, "mine", "a call on a held worker after the timeouts");
        cr_assert(r.worker_pid == before[0] || r.worker_pid == before[1],
                  "held worker served by unknown pid %d", r.worker_pid);
        pypool_result_free(&r);
        pypool_checkin(held[i]);
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
    int rc = pt_call_str(p, "sleep", "30", 300, &r);
    int64_t took = tu_now_ms() - t0;
    PT_ASSERT_RC(rc, PYPOOL_ETIMEDOUT, &r, "sleep 30 s with a 300 ms deadline");
    pypool_result_free(&r);
    cr_assert_geq(took, 280, "timed out early, after %lld ms", (long long)took);
    cr_assert_lt(took, 10000, "timed out late, after %lld ms", (long long)took);

    /* The worker's state is unknown: it must be killed (not left to finish its sleep). */
    cr_assert(tu_wait_pid_gone(old_pid, 10000), "timed-out worker %d still exists 10 s later",
              old_pid);

    rc = pt_call_str(p, "echo", "my-own-reply", 15000, &r);
    PT_ASSERT_REPLY(rc, &r, "my-own-reply", "the call after the timeout");
    cr_assert_neq(r.worker_pid, old_pid, "served by the killed worker");
    pypool_result_free(&r);
    cr_assert(pt_wait_idle(p, 1, 10000), "the slot did not come back to idle");

    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.call_timeouts, 1, "stats.call_timeouts %llu",
                 (unsigned long long)s.call_timeouts);
    cr_assert_eq(s.timeouts, 1, "stats.timeouts %llu", (unsigned long long)s.timeouts);
    cr_assert_eq(s.restarts, 1, "stats.restarts %llu", (unsigned long long)s.restarts);
    pt_destroy(p);
}

/*
 * One round of "one deadline covers waiting and running": the only worker is held (checked
 * out) while a call with deadline D waits for it; it is checked in once the call has waited
 * D/2, and the call then needs 0.6 D more (a sleep: never less). A deadline that covers both
 * cuts the call while it runs; one restarted at checkout would let it finish. Returns false if
 * the round proves nothing: the checkin came after the deadline (a slow machine), so the call
 * timed out while still waiting.
 */
static bool waiting_and_running_round(pypool *p, int64_t deadline_ms, char *seen, size_t len)
{
    pypool_worker *holder = NULL;
    int rc = pypool_checkout(p, 30000, &holder);
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "checkout of the only worker");
    uint64_t cut_before = pt_stats(p).call_timeouts;

    char run[32];
    snprintf(run, sizeof run, "%.3f", (double)deadline_ms * 0.6 / 1000.0);
    pt_call_job job;
    pt_call_start(&job, p, NULL, "sleep", run, deadline_ms);
    bool waits = pt_wait_waiters(p, 1, 30000);
    /* started_ms was written before the call queued, and stats (under the pool's lock) saw it
     * queued: reading it here is ordered after the write. */
    int64_t release_at = job.started_ms + deadline_ms / 2;
    int64_t now = tu_now_ms();
    if (release_at > now)
        tu_sleep_ms(release_at - now); /* the scenario's own waiting half, not a guess */
    pypool_checkin(holder);
    pt_call_join(&job);
    int64_t took = job.ended_ms - job.started_ms;
    bool cut_running = pt_stats(p).call_timeouts == cut_before + 1;

    cr_assert(waits, "the call never queued for the held worker");
    size_t used = strlen(seen);
    snprintf(seen + used, len - used, " [deadline %lld ms: %s after %lld ms, %s]",
             (long long)deadline_ms, pypool_strerror(job.rc), (long long)took,
             cut_running ? "cut while running" : "not while running");
    cr_assert_neq(job.rc, PYPOOL_OK,
                  "waited %lld ms, then ran %s s: it exceeded its %lld ms deadline yet "
                  "succeeded (the deadline restarted at checkout):%s",
                  (long long)(deadline_ms / 2), run, (long long)deadline_ms, seen);
    PT_ASSERT_JOB(&job, PYPOOL_ETIMEDOUT, "wait + run past the deadline");
    cr_assert_geq(took, deadline_ms - 50, "timed out early:%s", seen);
    cr_assert_lt(took, deadline_ms + 10000, "timed out long after the deadline:%s", seen);
    return cut_running;
}

Test(pool_deadlines, one_deadline_covers_waiting_and_running, .timeout = 90)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);

    char seen[512] = "";
    bool conclusive = false;
    for (int64_t deadline = 900; deadline <= 7200 && !conclusive; deadline *= 2)
        conclusive = waiting_and_running_round(p, deadline, seen, sizeof seen);
    fprintf(stderr, "waiting + running:%s\n", seen);
    cr_assert(conclusive, "the worker was never checked in before the call's deadline:%s", seen);

    pypool_result r;
    int rc = pt_call_str(p, "echo", "after", 15000, &r);
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
    int rc = pt_call_str(p, "sleep", "30", -1, &r);
    int64_t took = tu_now_ms() - t0;
    PT_ASSERT_RC(rc, PYPOOL_ETIMEDOUT, &r, "call with timeout -1 (call_timeout_ms 300)");
    pypool_result_free(&r);
    cr_assert(took >= 280 && took < 10000, "default call deadline hit after %lld ms",
              (long long)took);

    /* Occupy the (restarted) worker until checked in, then a default checkout must give up
     * after ~200 ms. */
    pypool_worker *holder = NULL;
    rc = pypool_checkout(p, 30000, &holder);
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "checkout of the restarted worker");
    uint64_t restarts = pt_stats(p).restarts;
    pypool_worker *w = NULL;
    t0 = tu_now_ms();
    int rc_co = pypool_checkout(p, -1, &w);
    int64_t took_co = tu_now_ms() - t0;
    rc = pypool_worker_call(holder, "echo", "held", 4, 10000, &r);
    PT_ASSERT_REPLY(rc, &r, "held", "the held worker after the checkout timeout");
    pypool_result_free(&r);
    pypool_checkin(holder);

    cr_assert_eq(rc_co, PYPOOL_ETIMEDOUT, "checkout(-1): %s", pypool_strerror(rc_co));
    cr_assert_null(w);
    cr_assert(took_co >= 180 && took_co < 10000, "default checkout deadline hit after %lld ms",
              (long long)took_co);
    cr_assert_eq(pt_stats(p).restarts, restarts, "a checkout timeout restarted a worker");
    pt_destroy(p);
}

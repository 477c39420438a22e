/*
 * shutdown.c - destroy escalation: a busy worker that ignores SIGTERM is SIGKILLed after
 * shutdown_grace_ms (and destroy does not wait for its call); idle workers that ignore SIGTERM
 * still leave on the Shutdown message, by themselves, without waiting for the grace period.
 *
 * What happened is read from the pool's log (each reaped worker is logged as "exited with
 * status N" or "killed by signal N"), so the checks do not depend on how fast the machine is;
 * the time bounds left only tell "waited for the grace period / the call" from "did not".
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(sup_shutdown, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

#define GRACE_MS 1000

Test(sup_shutdown, busy_worker_ignoring_sigterm_is_killed_after_the_grace_period, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    cfg.shutdown_grace_ms = GRACE_MS;
    pypool *p = pt_create(&cfg);

    pypool_result r;
    int rc = pt_call_str(p, "ignore_sigterm", "", 10000, &r);
    PT_ASSERT_REPLY(rc, &r, "ok", "ignore_sigterm");
    int pid = r.worker_pid;
    pypool_result_free(&r);

    pt_call_job stuck;
    pt_call_start(&stuck, p, NULL, "sleep", "30", 60000);
    cr_assert(pt_wait_busy(p, 1, 30000), "the long call never made the worker busy");

    int64_t t0 = tu_now_ms();
    pt_destroy(p);
    int64_t took = tu_now_ms() - t0;
    pt_call_join(&stuck);

    cr_assert_neq(stuck.rc, PYPOOL_OK, "a 30 s call completed during destroy");
    cr_assert_neq(stuck.rc, 1, "the in-flight call never returned");
    cr_assert_geq(took, GRACE_MS - 50, "destroy returned after %lld ms, before the %d ms grace",
                  (long long)took, GRACE_MS);
    /* Killed, not left to finish its 30 s call: the log says so, and destroy returned well
     * before the call could have ended (a bound for "waited for the call", not a speed test). */
    cr_assert(tu_log_contains("worker killed by signal 9"),
              "the busy worker ignoring SIGTERM was not SIGKILLed");
    cr_assert_lt(took, 20000, "destroy took %lld ms: it waited for the 30 s call", (long long)took);
    cr_assert(!tu_pid_exists(pid), "worker %d survived destroy", pid);
    cr_assert_eq(tu_count_children(), 0, "destroy left %d children", tu_count_children());
}

Test(sup_shutdown, idle_workers_ignoring_sigterm_leave_on_the_shutdown_message, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    cfg.shutdown_grace_ms = 30000;
    pypool *p = pt_create(&cfg);

    pypool_worker *w[2];
    for (int i = 0; i < 2; i++) {
        int rc = pypool_checkout(p, 5000, &w[i]);
        PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "checkout");
    }
    for (int i = 0; i < 2; i++) {
        pypool_result r;
        int rc = pypool_worker_call(w[i], "ignore_sigterm", "", 0, 10000, &r);
        PT_ASSERT_REPLY(rc, &r, "ok", "ignore_sigterm");
        pypool_result_free(&r);
    }
    for (int i = 0; i < 2; i++)
        pypool_checkin(w[i]);

    int64_t t0 = tu_now_ms();
    pt_destroy(p);
    int64_t took = tu_now_ms() - t0;
    /* Both left by themselves on Shutdown: had either waited for the grace period, it would
     * have been SIGTERMed (ignored) and then SIGKILLed, and logged as killed by a signal. */
    cr_assert(tu_log_contains("worker exited with status 0"), "no worker exited by itself");
    cr_assert_not(tu_log_contains("killed by signal"),
                  "an idle worker was killed instead of leaving on Shutdown");
    cr_assert_lt(took, cfg.shutdown_grace_ms,
                 "destroying idle workers took %lld ms: it waited for the grace period (%lld ms)",
                 (long long)took, (long long)cfg.shutdown_grace_ms);
    cr_assert_eq(tu_count_children(), 0);
}

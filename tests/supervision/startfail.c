/*
 * startfail.c - workers that cannot start or keep dying: a module raising on import fails an
 * eager create and a lazy pool's calls fast with PYPOOL_ESPAWN and the exception text (and
 * pypool_warm retries); a worker dying on every 3rd call is restarted with a growing backoff
 * and without the host spinning.
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(sup_startfail, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

#define BOOM "boom at import"

Test(sup_startfail, raise_on_import_eager_create_fails_with_espawn_and_the_text, .timeout = 60)
{
    cr_assert_eq(tu_count_children(), 0);
    int fds = tu_count_fds();
    pypool_config cfg;
    tu_config(&cfg, "raise_on_import", 2);
    pypool *p = NULL;
    int64_t t0 = tu_now_ms();
    int rc = pypool_create(&cfg, &p);
    int64_t took = tu_now_ms() - t0;
    const char *detail = pypool_last_error();
    if (p)
        pt_track(p);
    cr_assert_eq(rc, PYPOOL_ESPAWN, "create: %s: %s", pypool_strerror(rc), detail);
    cr_assert_null(p, "a failed create returned a pool");
    cr_assert(strstr(detail, BOOM) != NULL, "pypool_last_error() lacks '%s': %s", BOOM, detail);
    cr_assert_lt(took, 10000, "create took %lld ms to fail", (long long)took);
    cr_assert_eq(tu_count_children(), 0, "a failed create left %d children", tu_count_children());
    cr_assert_eq(tu_count_fds(), fds, "a failed create left fds: %d, %d before", tu_count_fds(),
                 fds);
}

static bool no_zombie_children(void *arg)
{
    (void)arg;
    return pt_zombie_children() == 0;
}

Test(sup_startfail, raise_on_import_lazy_call_fails_fast_and_warm_retries, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "raise_on_import", 2);
    cfg.lazy = true;
    pypool *p = pt_create(&cfg);

    pypool_result r;
    int64_t t0 = tu_now_ms();
    int rc = pt_call_str(p, "echo", "x", 20000, &r);
    int64_t took = tu_now_ms() - t0;
    PT_ASSERT_RC(rc, PYPOOL_ESPAWN, &r, "a call on a lazy pool whose module raises on import");
    cr_assert(strstr(pt_msg(&r), BOOM) != NULL, "error_message lacks '%s': %s", BOOM, pt_msg(&r));
    cr_assert_lt(took, 5000, "failed after %lld ms of a 20 s deadline", (long long)took);
    pypool_result_free(&r);

    /* Once the pool has given up (slots FAILED; a lazy pool may leave the rest EMPTY), calls
     * fail at once with the same detail instead of waiting out their deadlines. */
    int64_t fastest = INT64_MAX;
    for (int i = 0; i < 4 && fastest >= 100; i++) {
        t0 = tu_now_ms();
        rc = pt_call_str(p, "echo", "x", 20000, &r);
        took = tu_now_ms() - t0;
        PT_ASSERT_RC(rc, PYPOOL_ESPAWN, &r, "a further call");
        cr_assert(strstr(pt_msg(&r), BOOM) != NULL, "error_message lacks '%s': %s", BOOM,
                  pt_msg(&r));
        cr_assert_lt(took, 5000, "a further call failed after %lld ms", (long long)took);
        pypool_result_free(&r);
        if (took < fastest)
            fastest = took;
    }
    cr_assert_lt(fastest, 100, "calls on a failed pool never fail at once (fastest %lld ms)",
                 (long long)fastest);
    pypool_stats s = pt_stats(p);
    cr_assert_geq(s.failed, 1, "no slot is FAILED");
    cr_assert_geq(s.failed_starts, 2, "stats.failed_starts %llu",
                  (unsigned long long)s.failed_starts);
    for (unsigned i = 0; i < s.slot_count; i++)
        cr_assert(s.slots[i].state == PYPOOL_SLOT_FAILED || s.slots[i].state == PYPOOL_SLOT_EMPTY,
                  "slot %u is %s", i, pypool_slot_state_name(s.slots[i].state));

    /* pypool_warm retries a FAILED pool (and fails again, the module still raises). */
    uint64_t before = s.failed_starts;
    rc = pypool_warm(p, 15000);
    cr_assert_eq(rc, PYPOOL_ESPAWN, "warm of a failing pool: %s: %s", pypool_strerror(rc),
                 pypool_last_error());
    cr_assert(strstr(pypool_last_error(), BOOM) != NULL, "pypool_last_error() lacks '%s': %s", BOOM,
              pypool_last_error());
    cr_assert_gt(pt_stats(p).failed_starts, before, "warm did not try to start the workers");
    /* The failed children are reaped (a zombie may exist for a moment, not for good). */
    cr_assert(tu_wait_until(no_zombie_children, NULL, 2000), "%d zombie children stay",
              pt_zombie_children());
    pt_destroy(p);
}

#define CRASHES 6

/* With backoff 50 ms doubling to 1600 ms the restart delays are ~50, 100, 200, 400, 800, 1600
 * ms: the gap between a crash and the next served call must grow, and the host must sleep
 * (not spin) through it. */
Test(sup_startfail, worker_dying_on_every_third_call_restarts_with_growing_backoff, .timeout = 90)
{
    pypool_config cfg;
    tu_config(&cfg, "die_third_call", 1);
    cfg.restart_backoff_min_ms = 50;
    cfg.restart_backoff_max_ms = 1600;
    pypool *p = pt_create(&cfg);

    int64_t gaps[CRASHES], gap_cpu[CRASHES];
    int64_t t_crash = 0, cpu_crash = 0;
    int64_t wall0 = tu_now_ms(), cpu0 = pt_cpu_ms();
    for (int k = 0; k <= CRASHES; k++) {
        /* A fresh worker (from create, or restarted after crash k-1) serves 1 and 2... */
        pypool_result r;
        int rc = pt_call_str(p, "work", "", 20000, &r);
        PT_ASSERT_REPLY(rc, &r, "1", "first call on a fresh worker");
        pypool_result_free(&r);
        if (k > 0) {
            gaps[k - 1] = tu_now_ms() - t_crash;
            gap_cpu[k - 1] = pt_cpu_ms() - cpu_crash;
        }
        if (k == CRASHES)
            break;
        rc = pt_call_str(p, "work", "", 20000, &r);
        PT_ASSERT_REPLY(rc, &r, "2", "second call");
        pypool_result_free(&r);
        /* ... and exits with status 5 in the third. */
        rc = pt_call_str(p, "work", "", 20000, &r);
        PT_ASSERT_RC(rc, PYPOOL_EWORKER, &r, "third call (the worker exits 5)");
        pypool_result_free(&r);
        t_crash = tu_now_ms();
        cpu_crash = pt_cpu_ms();
    }
    int64_t wall = tu_now_ms() - wall0, cpu = pt_cpu_ms() - cpu0;

    char list[256] = "";
    for (int k = 0; k < CRASHES; k++)
        snprintf(list + strlen(list), sizeof list - strlen(list), " %lld(cpu %lld)",
                 (long long)gaps[k], (long long)gap_cpu[k]);
    fprintf(stderr, "restart gaps after each crash (ms):%s; host cpu %lld ms in %lld ms\n", list,
            (long long)cpu, (long long)wall);
    int64_t early = gaps[0] + gaps[1] + gaps[2], late = gaps[3] + gaps[4] + gaps[5];
    cr_assert_geq(late - early, 500, "restart gaps do not grow (ms):%s", list);
    cr_assert_geq(gaps[CRASHES - 1], 400, "the last restart came too soon (ms):%s", list);
    cr_assert_leq(gaps[CRASHES - 1], 1600 * 2 + 1000, "the last restart came too late (ms):%s",
                  list);
    cr_assert_lt(cpu * 4, wall, "the host burnt %lld ms CPU in %lld ms (gaps:%s)", (long long)cpu,
                 (long long)wall, list);
    cr_assert_lt(gap_cpu[CRASHES - 1] * 5, gaps[CRASHES - 1],
                 "the host spun during the longest backoff (gaps:%s)", list);

    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.crashes, CRASHES, "stats.crashes %llu", (unsigned long long)s.crashes);
    cr_assert_eq(s.crashes_exit, CRASHES, "stats.crashes_exit %llu",
                 (unsigned long long)s.crashes_exit);
    cr_assert_eq(s.restarts, CRASHES, "stats.restarts %llu", (unsigned long long)s.restarts);
    cr_assert_eq(s.failed, 0, "workers that served calls are not failed starts");
    pt_destroy(p);
}

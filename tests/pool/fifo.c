/*
 * fifo.c - the waiter queue: a released worker goes to the longest waiter (served in arrival
 * order), and max_waiters bounds the queue (the next caller gets PYPOOL_EBUSY at once).
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(pool_fifo, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

#define FIFO_WAITERS 8

Test(pool_fifo, eight_waiters_are_served_in_arrival_order, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "pool_extra", 1);
    pypool *p = pt_create(&cfg);

    pypool_worker *w = NULL;
    int rc = pypool_checkout(p, 5000, &w);
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "checkout of the only worker");

    /* Queue the waiters one at a time: waiter i starts only once i others are queued. */
    pt_call_job jobs[FIFO_WAITERS];
    bool queued[FIFO_WAITERS];
    for (int i = 0; i < FIFO_WAITERS; i++) {
        char payload[16];
        snprintf(payload, sizeof payload, "w%d", i);
        pt_call_start(&jobs[i], p, NULL, "seq", payload, 30000);
        queued[i] = pt_wait_waiters(p, (unsigned)i + 1, 30000);
    }
    pypool_checkin(w);
    for (int i = 0; i < FIFO_WAITERS; i++)
        pt_call_join(&jobs[i]);

    for (int i = 0; i < FIFO_WAITERS; i++)
        cr_assert(queued[i], "waiter %d never showed in stats.waiters", i);
    /* seq returns "<n>:<payload>", n = the order in which the single worker served the calls. */
    for (int i = 0; i < FIFO_WAITERS; i++) {
        char what[32], want[32];
        snprintf(what, sizeof what, "waiter %d", i);
        snprintf(want, sizeof want, "%d:w%d", i + 1, i);
        PT_ASSERT_JOB(&jobs[i], PYPOOL_OK, what);
        cr_assert_str_eq(jobs[i].reply, want, "waiter %d was served as '%s', want '%s'", i,
                         jobs[i].reply, want);
    }
    cr_assert_eq(pt_stats(p).waiters, 0);
    pt_destroy(p);
}

Test(pool_fifo, max_waiters_two_third_waiter_gets_ebusy_at_once, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    cfg.max_waiters = 2;
    pypool *p = pt_create(&cfg);

    pypool_worker *w = NULL;
    int rc = pypool_checkout(p, 5000, &w);
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "checkout of the only worker");

    pt_call_job jobs[2];
    pt_call_start(&jobs[0], p, NULL, "echo", "first", 30000);
    pt_call_start(&jobs[1], p, NULL, "echo", "second", 30000);
    bool two_wait = pt_wait_waiters(p, 2, 30000);

    pypool_result r;
    int64_t t0 = tu_now_ms();
    int rc_third = pt_call_str(p, "echo", "third", 10000, &r);
    int64_t took = tu_now_ms() - t0;
    char msg[256];
    snprintf(msg, sizeof msg, "%s", pt_msg(&r));
    pypool_result_free(&r);
    pypool_worker *w2 = NULL;
    t0 = tu_now_ms();
    int rc_co = pypool_checkout(p, 10000, &w2);
    int64_t took_co = tu_now_ms() - t0;
    unsigned waiters = pt_stats(p).waiters;

    pypool_checkin(w);
    pt_call_join(&jobs[0]);
    pt_call_join(&jobs[1]);
    if (rc_co == PYPOOL_OK)
        pypool_checkin(w2);

    cr_assert(two_wait, "the two waiters never showed in stats.waiters");
    cr_assert_eq(rc_third, PYPOOL_EBUSY, "third waiter: %s: %s", pypool_strerror(rc_third), msg);
    cr_assert_lt(took, 5000, "EBUSY took %lld ms, want at once", (long long)took);
    cr_assert_eq(rc_co, PYPOOL_EBUSY, "checkout as third waiter: %s", pypool_strerror(rc_co));
    cr_assert_lt(took_co, 5000, "EBUSY checkout took %lld ms", (long long)took_co);
    cr_assert_eq(waiters, 2, "waiters %u after the refused callers", waiters);
    PT_ASSERT_JOB(&jobs[0], PYPOOL_OK, "first waiter");
    PT_ASSERT_JOB(&jobs[1], PYPOOL_OK, "second waiter");
    cr_assert_str_eq(jobs[0].reply, "first");
    cr_assert_str_eq(jobs[1].reply, "second");

    /* The queue is free again. */
    rc = pt_call_str(p, "echo", "later", 10000, &r);
    PT_ASSERT_REPLY(rc, &r, "later", "a call once the queue drained");
    pypool_result_free(&r);
    pt_destroy(p);
}

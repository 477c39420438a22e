/*
 * restart.c - the reaper restarts dead workers: SIGKILL of an idle worker is replaced and a
 * new pid serves within about one Python start (+100 ms); killing every worker at once, ten
 * rounds in a row, brings the pool back to full size each time with no zombie left.
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(sup_restart, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

/* Time for a pool of one to start (spawn, import, Hello): the best of three. */
static int64_t python_start_ms(void)
{
    int64_t best = INT64_MAX;
    for (int i = 0; i < 3; i++) {
        pypool_config cfg;
        tu_config(&cfg, "echo_mod", 1);
        int64_t t0 = tu_now_ms();
        pypool *p = pt_create(&cfg);
        int64_t took = tu_now_ms() - t0;
        pt_destroy(p);
        if (took < best)
            best = took;
    }
    return best;
}

Test(sup_restart, sigkill_of_idle_worker_new_pid_serves_within_python_start_plus_100ms,
     .timeout = 60)
{
    int64_t start_ms = python_start_ms();

    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);
    int old_pid;
    cr_assert_eq(pt_slot_pids(p, &old_pid, 1), 1);

    int64_t t_kill = tu_now_ms();
    cr_assert_eq(kill(old_pid, SIGKILL), 0);
    /* Call once the pool has reaped the old worker, so the call meets the restart. */
    cr_assert(tu_wait_pid_gone(old_pid, 3000), "pool did not reap killed worker %d", old_pid);
    pypool_result r;
    int rc = pt_call_str(p, "pid", "", 10000, &r);
    int64_t served_after = tu_now_ms() - t_kill;
    PT_ASSERT_RC(rc, PYPOOL_OK, &r, "the call after the kill");
    cr_assert_neq(r.worker_pid, old_pid);
    char want[32];
    snprintf(want, sizeof want, "%d", r.worker_pid);
    cr_assert_str_eq((const char *)r.data, want, "reply is not the new worker's pid");
    pypool_result_free(&r);
    fprintf(stderr, "python start %lld ms, new worker served %lld ms after the kill\n",
            (long long)start_ms, (long long)served_after);
    /* A 1.5x allowance on the measured start for this noisy 2-core VM. */
    int64_t limit = start_ms * 3 / 2 + 100;
    cr_assert_leq(served_after, limit,
                  "new worker served %lld ms after the kill; a start takes %lld ms (limit %lld)",
                  (long long)served_after, (long long)start_ms, (long long)limit);

    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.crashes, 1, "stats.crashes %llu", (unsigned long long)s.crashes);
    cr_assert_eq(s.crashes_signal, 1, "stats.crashes_signal %llu",
                 (unsigned long long)s.crashes_signal);
    cr_assert_eq(s.restarts, 1, "stats.restarts %llu", (unsigned long long)s.restarts);
    cr_assert_eq(s.slots[0].restarts, 1, "slot restarts %llu",
                 (unsigned long long)s.slots[0].restarts);
    pt_destroy(p);
}

typedef struct all_new_arg {
    pypool *p;
    const int *old;
} all_new_arg;

/* Every slot idle with a pid that is none of the old ones. */
static bool all_replaced(void *arg)
{
    all_new_arg *a = arg;
    pypool_stats s = pt_stats(a->p);
    if (s.idle != 4)
        return false;
    for (unsigned i = 0; i < 4; i++) {
        if (s.slots[i].pid <= 0)
            return false;
        for (unsigned k = 0; k < 4; k++)
            if (s.slots[i].pid == a->old[k])
                return false;
    }
    return true;
}

Test(sup_restart, sigkill_of_all_workers_ten_rounds_pool_returns_to_full_size, .timeout = 120)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 4);
    cfg.restart_backoff_max_ms = 500; /* bound the run time: the backoff doubles each round */
    pypool *p = pt_create(&cfg);

    for (int round = 0; round < 10; round++) {
        int old[4];
        cr_assert_eq(pt_slot_pids(p, old, 4), 4, "round %d: not 4 pids", round);
        for (int i = 0; i < 4; i++)
            cr_assert_eq(kill(old[i], SIGKILL), 0, "round %d: kill %d", round, old[i]);
        all_new_arg a = {p, old};
        cr_assert(tu_wait_until(all_replaced, &a, 20000),
                  "round %d: pool not back to 4 idle new workers", round);
        for (int i = 0; i < 4; i++) {
            cr_assert(!tu_pid_exists(old[i]) || !tu_pid_zombie(old[i]),
                      "round %d: old worker %d is a zombie", round, old[i]);
            cr_assert(!tu_pid_exists(old[i]), "round %d: old worker %d still exists", round,
                      old[i]);
        }
        cr_assert_eq(pt_zombie_children(), 0, "round %d: zombie children", round);
        cr_assert_eq(tu_count_children(), 4, "round %d: %d children", round, tu_count_children());
        pypool_result r;
        int rc = pt_call_str(p, "echo", "back", 10000, &r);
        PT_ASSERT_REPLY(rc, &r, "back", "a call after the round");
        pypool_result_free(&r);
    }
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.crashes, 40, "stats.crashes %llu", (unsigned long long)s.crashes);
    cr_assert_eq(s.restarts, 40, "stats.restarts %llu", (unsigned long long)s.restarts);
    cr_assert_eq(s.failed, 0, "slots gave up after kills of healthy workers");
    pt_destroy(p);
}

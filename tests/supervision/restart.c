/*
 * restart.c - the reaper restarts dead workers: SIGKILL of an idle worker is replaced and a
 * new pid serves within about one Python start (+100 ms; the best of three rounds); killing
 * every worker at once, ten rounds in a row, brings the pool back to full size each time with
 * no zombie left.
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(sup_restart, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

/*
 * The restart must cost about one Python start and no more: no backoff, no waiting for a tick.
 * Both sides of that comparison are timings, and a shared machine's load can change between
 * two measurements; so each round measures them back to back (the start of the very pool it
 * then kills a worker of), and the claim holds if one of three rounds meets it. A restart that
 * really waits for something beyond the start fails all three.
 */
#define RESTART_ROUNDS 3

typedef struct restart_round {
    int64_t start_ms, served_ms;
} restart_round;

/* One round: a pool of one started (timed), its worker SIGKILLed, a call served by the new
 * one (timed from the kill); asserts what must hold in every round. */
static restart_round restart_once(void)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    int64_t t0 = tu_now_ms();
    pypool *p = pt_create(&cfg);
    restart_round rr = {.start_ms = tu_now_ms() - t0};
    int old_pid;
    cr_assert_eq(pt_slot_pids(p, &old_pid, 1), 1);

    int64_t t_kill = tu_now_ms();
    cr_assert_eq(kill(old_pid, SIGKILL), 0);
    /* Call once the pool has reaped the old worker, so the call meets the restart. */
    cr_assert(tu_wait_pid_gone(old_pid, 10000), "pool did not reap killed worker %d", old_pid);
    pypool_result r;
    int rc = pt_call_str(p, "pid", "", 10000, &r);
    rr.served_ms = tu_now_ms() - t_kill;
    PT_ASSERT_RC(rc, PYPOOL_OK, &r, "the call after the kill");
    cr_assert_neq(r.worker_pid, old_pid);
    char want[32];
    snprintf(want, sizeof want, "%d", r.worker_pid);
    cr_assert_str_eq((const char *)r.data, want, "reply is not the new worker's pid");
    pypool_result_free(&r);

    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.crashes, 1, "stats.crashes %llu", (unsigned long long)s.crashes);
    cr_assert_eq(s.crashes_signal, 1, "stats.crashes_signal %llu",
                 (unsigned long long)s.crashes_signal);
    cr_assert_eq(s.restarts, 1, "stats.restarts %llu", (unsigned long long)s.restarts);
    cr_assert_eq(s.slots[0].restarts, 1, "slot restarts %llu",
                 (unsigned long long)s.slots[0].restarts);
    pt_destroy(p);
    return rr;
}

Test(sup_restart, sigkill_of_idle_worker_new_pid_serves_within_python_start_plus_100ms,
     .timeout = 60)
{
    char seen[256] = "";
    bool met = false;
    for (int round = 0; round < RESTART_ROUNDS && !met; round++) {
        restart_round rr = restart_once();
        /* A 1.5x allowance on the start measured just before, for a noisy 2-core VM. */
        int64_t limit = rr.start_ms * 3 / 2 + 100;
        met = rr.served_ms <= limit;
        snprintf(seen + strlen(seen), sizeof seen - strlen(seen),
                 " [start %lld ms, served %lld ms after the kill, limit %lld]",
                 (long long)rr.start_ms, (long long)rr.served_ms, (long long)limit);
    }
    fprintf(stderr, "restart rounds:%s\n", seen);
    cr_assert(met, "in no round did the new worker serve within a start + 100 ms:%s", seen);
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
        /* A killed worker leaves its slot before it is reaped (the replacement may start at
         * once): wait for the reaping, a zombie left for good fails the wait. */
        for (int i = 0; i < 4; i++)
            cr_assert(tu_wait_pid_gone(old[i], 10000), "round %d: old worker %d not reaped (%c)",
                      round, old[i], tu_pid_state(old[i]));
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

/*
 * recycle.c - retiring workers: max_calls_per_worker = 100 over 1000 calls gives about 10
 * workers (each retired after 100 +-10% calls) and no failed call; a worker whose RSS exceeds
 * max_worker_rss_bytes after a call is replaced, and its caller sees no error.
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(sup_recycle, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

#define RC_THREADS 4
#define RC_CALLS   250
#define MAX_PIDS   64

typedef struct pid_count {
    int pid;
    unsigned calls;
} pid_count;

typedef struct recycle_arg {
    pypool *p;
    unsigned failed;
    char first_problem[512];
    int pids[RC_CALLS];
    pthread_t thread;
} recycle_arg;

static void *recycle_thread(void *arg)
{
    recycle_arg *a = arg;
    for (int i = 0; i < RC_CALLS; i++) {
        pypool_result r;
        int rc = pt_call_str(a->p, "pid", "", 20000, &r);
        char want[32];
        snprintf(want, sizeof want, "%d", r.worker_pid);
        if (rc == PYPOOL_OK && r.len == strlen(want) && memcmp(r.data, want, r.len) == 0) {
            a->pids[i] = r.worker_pid;
        } else if (a->failed++ == 0) {
            snprintf(a->first_problem, sizeof a->first_problem, "call %d: %s: %s", i,
                     pypool_strerror(rc), pt_msg(&r));
        }
        pypool_result_free(&r);
    }
    return NULL;
}

Test(sup_recycle, max_calls_100_over_1000_calls_about_10_pids_no_failure, .timeout = 90)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    cfg.max_calls_per_worker = 100;
    pypool *p = pt_create(&cfg);

    static recycle_arg args[RC_THREADS];
    for (int t = 0; t < RC_THREADS; t++) {
        memset(&args[t], 0, sizeof args[t]);
        args[t].p = p;
        cr_assert_eq(pthread_create(&args[t].thread, NULL, recycle_thread, &args[t]), 0);
    }
    for (int t = 0; t < RC_THREADS; t++)
        pthread_join(args[t].thread, NULL);
    for (int t = 0; t < RC_THREADS; t++)
        cr_assert_eq(args[t].failed, 0, "thread %d: %u failed calls; first: %s", t, args[t].failed,
                     args[t].first_problem);

    pid_count seen[MAX_PIDS];
    int n = 0;
    for (int t = 0; t < RC_THREADS; t++) {
        for (int i = 0; i < RC_CALLS; i++) {
            int k = 0;
            while (k < n && seen[k].pid != args[t].pids[i])
                k++;
            cr_assert_lt(k, MAX_PIDS, "more than %d workers served", MAX_PIDS);
            if (k == n)
                seen[n++] = (pid_count){args[t].pids[i], 0};
            seen[k].calls++;
        }
    }
    cr_assert(n >= 9 && n <= 13, "1000 calls with recycling after ~100 were served by %d workers",
              n);

    /* Workers no longer in a slot were retired: each served 100 +- 10% calls. */
    int current[2];
    pt_slot_pids(p, current, 2);
    for (int k = 0; k < n; k++) {
        if (seen[k].pid == current[0] || seen[k].pid == current[1])
            continue;
        cr_assert(seen[k].calls >= 89 && seen[k].calls <= 111,
                  "retired worker %d served %u calls, want 90..110", seen[k].pid, seen[k].calls);
    }
    pypool_stats s = pt_stats(p);
    cr_assert_geq(s.recycles, 8, "stats.recycles %llu", (unsigned long long)s.recycles);
    cr_assert_eq(s.crashes, 0, "a recycle counted as a crash");
    cr_assert_eq(s.calls, RC_THREADS * RC_CALLS);
    pt_destroy(p);
}

Test(sup_recycle, worker_over_the_rss_limit_is_replaced_without_an_error, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    cfg.max_worker_rss_bytes = 100ull << 20;
    pypool *p = pt_create(&cfg);

    int pid;
    pt_slot_pids(p, &pid, 1);
    for (int i = 0; i < 10; i++) {
        pypool_result r;
        int rc = pt_call_str(p, "echo", "small", 10000, &r);
        PT_ASSERT_REPLY(rc, &r, "small", "a small call under the RSS limit");
        cr_assert_eq(r.worker_pid, pid, "a worker under the RSS limit was replaced");
        pypool_result_free(&r);
    }

    pypool_result r;
    int rc = pt_call_str(p, "rss_grow", "160", 30000, &r);
    PT_ASSERT_REPLY(rc, &r, "ok", "the call that grows RSS to ~180 MiB");
    cr_assert_eq(r.worker_pid, pid);
    pypool_result_free(&r);
    cr_assert(pt_wait_replaced(p, pid, 30000), "the worker over the RSS limit was not replaced");
    cr_assert(tu_wait_pid_gone(pid, 10000), "the retired worker %d still exists", pid);

    rc = pt_call_str(p, "echo", "fresh", 10000, &r);
    PT_ASSERT_REPLY(rc, &r, "fresh", "a call on the replacement");
    cr_assert_neq(r.worker_pid, pid);
    pypool_result_free(&r);
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.recycles, 1, "stats.recycles %llu", (unsigned long long)s.recycles);
    cr_assert_eq(s.crashes, 0);
    pt_destroy(p);
}

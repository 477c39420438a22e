/*
 * startup.c - lazy, eager and warm pools: a lazy pool used serially starts exactly one worker
 * and never more than `size` under load; an eager pool has every pid before the first call;
 * pypool_warm starts every empty slot; workers start concurrently, not one after another.
 */
#define _GNU_SOURCE
#include "pool_test.h"

#include <spawn.h>
#include <sys/wait.h>

TestSuite(pool_startup, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

static bool is_child(pid_t pid)
{
    pid_t kids[64];
    int n = tu_list_children(kids, 64);
    for (int i = 0; i < n && i < 64; i++)
        if (kids[i] == pid)
            return true;
    return false;
}

Test(pool_startup, lazy_pool_used_serially_starts_exactly_one_worker, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 4);
    cfg.lazy = true;
    pypool *p = pt_create(&cfg);

    pypool_stats s = pt_stats(p);
    cr_assert_eq(tu_count_children(), 0, "a lazy pool started %d workers at create",
                 tu_count_children());
    cr_assert_eq(s.idle + s.busy + s.starting, 0, "lazy pool: idle %u busy %u starting %u", s.idle,
                 s.busy, s.starting);
    for (unsigned i = 0; i < s.slot_count; i++)
        cr_assert_eq(s.slots[i].state, PYPOOL_SLOT_EMPTY, "slot %u is %s before any call", i,
                     pypool_slot_state_name(s.slots[i].state));

    int first_pid = 0;
    for (int i = 0; i < 20; i++) {
        pypool_result r;
        int rc = pt_call_str(p, "pid", "", 15000, &r);
        PT_ASSERT_RC(rc, PYPOOL_OK, &r, "serial call on a lazy pool");
        if (i == 0)
            first_pid = r.worker_pid;
        cr_assert_eq(r.worker_pid, first_pid, "call %d served by %d, first by %d", i, r.worker_pid,
                     first_pid);
        pypool_result_free(&r);
    }
    cr_assert_eq(tu_count_children(), 1, "serial use started %d workers", tu_count_children());
    s = pt_stats(p);
    unsigned empty = 0;
    for (unsigned i = 0; i < s.slot_count; i++)
        empty += s.slots[i].state == PYPOOL_SLOT_EMPTY;
    cr_assert_eq(s.idle, 1, "idle %u", s.idle);
    cr_assert_eq(empty, 3, "%u empty slots, want 3", empty);
    pt_destroy(p);
}

typedef struct child_watch {
    volatile bool stop;
    int max_children;
} child_watch;

static void *watch_children(void *arg)
{
    child_watch *cw = arg;
    while (!cw->stop) {
        int n = tu_count_children();
        if (n > cw->max_children)
            cw->max_children = n;
        tu_sleep_ms(2);
    }
    return NULL;
}

Test(pool_startup, lazy_pool_under_load_never_exceeds_size, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    cfg.lazy = true;
    pypool *p = pt_create(&cfg);

    child_watch cw = {0};
    pthread_t watcher;
    cr_assert_eq(pthread_create(&watcher, NULL, watch_children, &cw), 0);
    pt_call_job jobs[8];
    for (int i = 0; i < 8; i++)
        pt_call_start(&jobs[i], p, NULL, "sleep", "0.2", 30000);
    for (int i = 0; i < 8; i++)
        pt_call_join(&jobs[i]);
    cw.stop = true;
    pthread_join(watcher, NULL);

    for (int i = 0; i < 8; i++)
        PT_ASSERT_JOB(&jobs[i], PYPOOL_OK, "a call on a lazy pool under load");
    cr_assert_leq(cw.max_children, 2, "a lazy pool of 2 had %d children", cw.max_children);
    cr_assert_eq(tu_count_children(), 2, "8 concurrent calls should start both workers");
    pt_destroy(p);
}

Test(pool_startup, eager_pool_of_four_has_four_pids_before_the_first_call, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 4);
    pypool *p = pt_create(&cfg);

    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.size, 4);
    cr_assert_eq(s.slot_count, 4);
    cr_assert_eq(s.idle, 4, "idle %u right after an eager create", s.idle);
    for (unsigned i = 0; i < 4; i++) {
        int pid = s.slots[i].pid;
        cr_assert_gt(pid, 0, "slot %u has no pid", i);
        cr_assert_eq(s.slots[i].state, PYPOOL_SLOT_IDLE, "slot %u is %s", i,
                     pypool_slot_state_name(s.slots[i].state));
        cr_assert(pt_alive(pid) && is_child(pid), "slot %u pid %d is not a live child", i, pid);
        for (unsigned k = 0; k < i; k++)
            cr_assert_neq(pid, s.slots[k].pid, "slots %u and %u share pid %d", k, i, pid);
    }
    cr_assert_eq(tu_count_children(), 4);
    cr_assert_eq(s.calls, 0);
    pt_destroy(p);
}

Test(pool_startup, warm_starts_every_empty_slot_and_waits, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 3);
    cfg.lazy = true;
    pypool *p = pt_create(&cfg);
    cr_assert_eq(tu_count_children(), 0);

    int rc = pypool_warm(p, 15000);
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "pypool_warm");
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.idle, 3, "idle %u right after warm", s.idle);
    cr_assert_eq(tu_count_children(), 3);
    int pids[3];
    cr_assert_eq(pt_slot_pids(p, pids, 3), 3);

    /* Warming a warm pool changes nothing and returns at once. */
    int64_t t0 = tu_now_ms();
    rc = pypool_warm(p, 15000);
    int64_t took = tu_now_ms() - t0;
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "second pypool_warm");
    cr_assert_lt(took, 5000, "warming a warm pool took %lld ms", (long long)took);
    int again[3];
    pt_slot_pids(p, again, 3);
    cr_assert(memcmp(pids, again, sizeof pids) == 0, "warm replaced running workers");
    pt_destroy(p);
}

extern char **environ;

/* The machine's time for n bare interpreters, started together, to import the worker runtime
 * and pool_slow_start (the work a worker does before Hello), in ms. */
static int64_t parallel_python_imports_ms(int n)
{
    static char pythonpath[1024];
    snprintf(pythonpath, sizeof pythonpath, "PYTHONPATH=%s:%s/python", PYPOOL_TEST_MODULES,
             PYPOOL_TEST_BINARY_DIR);
    char *env[256];
    int k = 0;
    env[k++] = pythonpath;
    env[k++] = "POOL_SLOW_START_S=1.0";
    for (char **e = environ; *e && k < 255; e++)
        if (strncmp(*e, "PYTHONPATH=", 11) != 0 && strncmp(*e, "POOL_SLOW_START_S=", 18) != 0)
            env[k++] = *e;
    env[k] = NULL;
    char *argv[] = {PYPOOL_TEST_PYTHON, "-c", "import pypool._worker, pool_slow_start", NULL};
    pid_t pids[16];
    int64_t t0 = tu_now_ms();
    for (int i = 0; i < n; i++) {
        int err = posix_spawn(&pids[i], PYPOOL_TEST_PYTHON, NULL, NULL, argv, env);
        cr_assert_eq(err, 0, "posix_spawn %s: %s", PYPOOL_TEST_PYTHON, strerror(err));
    }
    for (int i = 0; i < n; i++) {
        int status;
        cr_assert_eq(waitpid(pids[i], &status, 0), pids[i]);
        cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "baseline python failed: %d",
                  status);
    }
    return tu_now_ms() - t0;
}

/* pool_slow_start sleeps 1 s at import (no CPU): 8 workers started one after another take
 * >= 8 s; started together they take about what 8 bare interpreters doing the same imports
 * in parallel take on this machine, measured right before (so load affects both alike). */
Test(pool_startup, eight_workers_start_concurrently, .timeout = 90)
{
    static const char *const env[] = {"POOL_SLOW_START_S=1.0", NULL};
    pypool_config cfg;
    tu_config(&cfg, "pool_slow_start", 8);
    cfg.env = env;
    cfg.startup_timeout_ms = 60000; /* the machine may be loaded; timing is judged below */

    int64_t base_ms = parallel_python_imports_ms(8);
    int64_t t0 = tu_now_ms();
    pypool *p = pt_create(&cfg);
    int64_t eager_ms = tu_now_ms() - t0;
    pt_destroy(p);
    cfg.lazy = true;
    p = pt_create(&cfg);
    t0 = tu_now_ms();
    int rc = pypool_warm(p, 60000);
    int64_t warm_ms = tu_now_ms() - t0;
    char warm_detail[512];
    snprintf(warm_detail, sizeof warm_detail, "%s", pypool_last_error());
    unsigned idle = pt_stats(p).idle;
    pt_destroy(p);

    int64_t limit = base_ms * 3 / 2 + 500;
    fprintf(stderr, "8 parallel imports %lld ms; eager create %lld ms; warm %lld ms (limit %lld)\n",
            (long long)base_ms, (long long)eager_ms, (long long)warm_ms, (long long)limit);
    cr_assert_eq(rc, PYPOOL_OK, "pypool_warm of 8 slow workers: %s: %s", pypool_strerror(rc),
                 warm_detail);
    cr_assert_eq(idle, 8);
    cr_assert_geq(eager_ms, 950, "create returned after %lld ms, before the imports could end",
                  (long long)eager_ms);
    cr_assert_leq(eager_ms, limit,
                  "eager create of 8 took %lld ms; 8 parallel imports take %lld ms here, 8 in a "
                  "row >= 8000",
                  (long long)eager_ms, (long long)base_ms);
    cr_assert_leq(
        warm_ms, limit,
        "warm of 8 took %lld ms; 8 parallel imports take %lld ms here, 8 in a row >= 8000",
        (long long)warm_ms, (long long)base_ms);
}

/*
 * startfail.c - workers that cannot start or keep dying: a module raising on import fails an
 * eager create and a lazy pool's calls fast with PYPOOL_ESPAWN and the exception text (and
 * pypool_warm retries); a worker dying on every 3rd call is restarted with a growing backoff
 * and without the host spinning.
 */
#define _GNU_SOURCE
#include "pool_test.h"

#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

TestSuite(sup_startfail, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

#define BOOM "boom at import"

/* A start that fails on its own must be reported as that failure, not as the startup timeout;
 * the tests give starts a timeout no failing import comes near, and check the message. */
#define STARTUP_TIMEOUT_MS 30000
#define TIMEOUT_TEXT       "did not say Hello within"

Test(sup_startfail, raise_on_import_eager_create_fails_with_espawn_and_the_text, .timeout = 60)
{
    cr_assert_eq(tu_count_children(), 0);
    int fds = tu_count_fds();
    pypool_config cfg;
    tu_config(&cfg, "raise_on_import", 2);
    cfg.startup_timeout_ms = STARTUP_TIMEOUT_MS;
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
    cr_assert(strstr(detail, TIMEOUT_TEXT) == NULL, "reported as the startup timeout: %s", detail);
    cr_assert_lt(took, cfg.startup_timeout_ms,
                 "create took %lld ms to fail: it waited for the timeout", (long long)took);
    cr_assert_eq(tu_count_children(), 0, "a failed create left %d children", tu_count_children());
    cr_assert_eq(tu_count_fds(), fds, "a failed create left fds: %d, %d before", tu_count_fds(),
                 fds);
}

static bool no_zombie_children(void *arg)
{
    (void)arg;
    return pt_zombie_children() == 0;
}

/* Voluntary context switches of the calling thread so far: a call that waited for anything (a
 * worker, a start, a lock someone else held) went to sleep at least once. */
static long thread_nvcsw(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_nvcsw;
}

#define CALL_DEADLINE_MS 30000

Test(sup_startfail, raise_on_import_lazy_call_fails_fast_and_warm_retries, .timeout = 120)
{
    pypool_config cfg;
    tu_config(&cfg, "raise_on_import", 2);
    cfg.lazy = true;
    cfg.startup_timeout_ms = STARTUP_TIMEOUT_MS;
    pypool *p = pt_create(&cfg);

    /* ESPAWN with the exception, not ETIMEDOUT: the call did not wait out its deadline. */
    pypool_result r;
    int64_t t0 = tu_now_ms();
    int rc = pt_call_str(p, "echo", "x", CALL_DEADLINE_MS, &r);
    int64_t took = tu_now_ms() - t0;
    PT_ASSERT_RC(rc, PYPOOL_ESPAWN, &r, "a call on a lazy pool whose module raises on import");
    cr_assert(strstr(pt_msg(&r), BOOM) != NULL, "error_message lacks '%s': %s", BOOM, pt_msg(&r));
    cr_assert_lt(took, CALL_DEADLINE_MS, "failed after %lld ms, its deadline", (long long)took);
    pypool_result_free(&r);

    /* Once the pool has given up (slots FAILED; a lazy pool may leave the rest EMPTY), calls
     * fail at once with the same detail instead of waiting out their deadlines: they start
     * nothing and never sleep (no voluntary context switch; one of four calls must show it,
     * as a lock held for a moment by another thread would be a sleep too). */
    uint64_t starts_before = pt_stats(p).failed_starts;
    long fewest_sleeps = -1;
    char seen[256] = "";
    for (int i = 0; i < 4 && fewest_sleeps != 0; i++) {
        t0 = tu_now_ms();
        long nv0 = thread_nvcsw();
        rc = pt_call_str(p, "echo", "x", CALL_DEADLINE_MS, &r);
        long slept = thread_nvcsw() - nv0;
        took = tu_now_ms() - t0;
        PT_ASSERT_RC(rc, PYPOOL_ESPAWN, &r, "a further call");
        cr_assert(strstr(pt_msg(&r), BOOM) != NULL, "error_message lacks '%s': %s", BOOM,
                  pt_msg(&r));
        pypool_result_free(&r);
        snprintf(seen + strlen(seen), sizeof seen - strlen(seen), " %lld ms/%ld sleeps",
                 (long long)took, slept);
        if (fewest_sleeps < 0 || slept < fewest_sleeps)
            fewest_sleeps = slept;
    }
    cr_assert_eq(fewest_sleeps, 0, "calls on a failed pool always went to sleep:%s", seen);
    cr_assert_eq(pt_stats(p).failed_starts, starts_before,
                 "calls on a failed pool started workers again:%s", seen);
    pypool_stats s = pt_stats(p);
    cr_assert_geq(s.failed, 1, "no slot is FAILED");
    cr_assert_geq(s.failed_starts, 2, "stats.failed_starts %llu",
                  (unsigned long long)s.failed_starts);
    for (unsigned i = 0; i < s.slot_count; i++)
        cr_assert(s.slots[i].state == PYPOOL_SLOT_FAILED || s.slots[i].state == PYPOOL_SLOT_EMPTY,
                  "slot %u is %s", i, pypool_slot_state_name(s.slots[i].state));

    /* pypool_warm retries a FAILED pool (and fails again, the module still raises). */
    uint64_t before = s.failed_starts;
    rc = pypool_warm(p, 30000);
    cr_assert_eq(rc, PYPOOL_ESPAWN, "warm of a failing pool: %s: %s", pypool_strerror(rc),
                 pypool_last_error());
    cr_assert(strstr(pypool_last_error(), BOOM) != NULL, "pypool_last_error() lacks '%s': %s", BOOM,
              pypool_last_error());
    cr_assert_gt(pt_stats(p).failed_starts, before, "warm did not try to start the workers");
    /* The failed children are reaped (a zombie may exist for a moment, not for good). */
    cr_assert(tu_wait_until(no_zombie_children, NULL, 10000), "%d zombie children stay",
              pt_zombie_children());
    pt_destroy(p);
}

#define CRASHES 6

/* When process pid was started, in ms of CLOCK_BOOTTIME (/proc/<pid>/stat field 22, clock ticks
 * since boot); -1 if it cannot be read. */
static int64_t proc_started_boot_ms(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *after_comm = strrchr(buf, ')');
    unsigned long long ticks = 0;
    if (!after_comm || sscanf(after_comm + 1,
                              " %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s "
                              "%*s %*s %*s %*s %llu",
                              &ticks) != 1)
        return -1;
    return (int64_t)(ticks * 1000 / (unsigned long long)sysconf(_SC_CLK_TCK));
}

static int64_t boot_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * With backoff 50 ms doubling to 1600 ms (+-20% jitter) the restart delays are ~50, 100, 200,
 * 400, 800, 1600 ms: they must grow, stop at the maximum, and the host must sleep (not spin)
 * through them. The delay judged is crash -> replacement process started (its start time in
 * /proc), which is the backoff plus the reaper's wake-up: a Python start, whose length
 * depends on the machine's load, is not part of it. The crash -> next served call gaps, which
 * do include it, are kept for the CPU check and the messages.
 */
Test(sup_startfail, worker_dying_on_every_third_call_restarts_with_growing_backoff, .timeout = 90)
{
    pypool_config cfg;
    tu_config(&cfg, "die_third_call", 1);
    cfg.restart_backoff_min_ms = 50;
    cfg.restart_backoff_max_ms = 1600;
    pypool *p = pt_create(&cfg);

    int64_t gaps[CRASHES], gap_cpu[CRASHES], delays[CRASHES];
    int64_t t_crash = 0, cpu_crash = 0, boot_crash = 0;
    int64_t wall0 = tu_now_ms(), cpu0 = pt_cpu_ms();
    for (int k = 0; k <= CRASHES; k++) {
        /* A fresh worker (from create, or restarted after crash k-1) serves 1 and 2... */
        pypool_result r;
        int rc = pt_call_str(p, "work", "", 20000, &r);
        PT_ASSERT_REPLY(rc, &r, "1", "first call on a fresh worker");
        int fresh = r.worker_pid;
        pypool_result_free(&r);
        if (k > 0) {
            gaps[k - 1] = tu_now_ms() - t_crash;
            gap_cpu[k - 1] = pt_cpu_ms() - cpu_crash;
            int64_t started = proc_started_boot_ms(fresh); /* it lives until its 3rd call */
            cr_assert_geq(started, 0, "cannot read /proc/%d/stat", fresh);
            delays[k - 1] = started - boot_crash;
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
        boot_crash = boot_ms();
        cpu_crash = pt_cpu_ms();
    }
    int64_t wall = tu_now_ms() - wall0, cpu = pt_cpu_ms() - cpu0;

    char list[384] = "";
    for (int k = 0; k < CRASHES; k++)
        snprintf(list + strlen(list), sizeof list - strlen(list), " %lld(served %lld, cpu %lld)",
                 (long long)delays[k], (long long)gaps[k], (long long)gap_cpu[k]);
    fprintf(stderr, "restart delays after each crash (ms):%s; host cpu %lld ms in %lld ms\n", list,
            (long long)cpu, (long long)wall);
    /* Lower bounds: a backoff is a sleep, never shorter (less only the moment between the
     * worker's death and this thread seeing its call fail). The early delays are ~350 ms in
     * all, the late ones >= 2240 ms. */
    int64_t early = delays[0] + delays[1] + delays[2], late = delays[3] + delays[4] + delays[5];
    cr_assert_geq(late - early, 500, "restart delays do not grow (ms):%s", list);
    cr_assert_geq(gaps[CRASHES - 1], 400, "the last restart came too soon (ms):%s", list);
    cr_assert_geq(delays[CRASHES - 1], 400, "the last restart came too soon (ms):%s", list);
    /* At most the maximum backoff (+20% jitter) and a generous allowance for the reaper's
     * wake-up on a loaded machine. */
    int64_t most = cfg.restart_backoff_max_ms * 6 / 5 + 2000;
    cr_assert_leq(delays[CRASHES - 1], most, "the last restart came too late (ms, limit %lld):%s",
                  (long long)most, list);
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

/*
 * health.c - idle pings: a worker that stops answering pings while idle is killed and replaced;
 * healthy idle workers are left alone, and pings interleaved with calls never disturb them.
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(sup_health, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

Test(sup_health, idle_worker_that_stops_answering_pings_is_killed_and_replaced, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    cfg.idle_ping_ms = 100;
    cfg.ping_timeout_ms = 500;
    cfg.shutdown_grace_ms = 500;
    pypool *p = pt_create(&cfg);

    /* A call longer than idle_ping_ms first, so the reaper also sees the slot busy (its next
     * wake-up is then a call deadline, 30 s away); checkin must still get the idle worker
     * pinged ~idle_ping_ms later. */
    pypool_result r;
    int rc = pt_call_str(p, "sleep", "0.3", -1, &r);
    PT_ASSERT_REPLY(rc, &r, "slept", "sleep 0.3");
    pypool_result_free(&r);
    rc = pt_call_str(p, "stop_ponging", "", -1, &r);
    PT_ASSERT_REPLY(rc, &r, "ok", "stop_ponging");
    int wedged = r.worker_pid;
    pypool_result_free(&r);
    int64_t t0 = tu_now_ms();

    bool replaced = pt_wait_replaced(p, wedged, 10000);
    int64_t took = tu_now_ms() - t0;
    cr_assert(replaced, "the wedged worker %d was not replaced within 10 s", wedged);
    cr_assert(tu_wait_pid_gone(wedged, 10000), "the wedged worker %d still exists", wedged);
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.ping_failures, 1, "stats.ping_failures %llu",
                 (unsigned long long)s.ping_failures);
    fprintf(stderr, "wedged worker replaced %lld ms after its last call\n", (long long)took);

    rc = pt_call_str(p, "echo", "alive", 10000, &r);
    PT_ASSERT_REPLY(rc, &r, "alive", "a call on the replacement");
    cr_assert_neq(r.worker_pid, wedged);
    pypool_result_free(&r);
    pt_destroy(p);
}

/* write(2) calls process pid made so far (/proc/<pid>/io syscw), -1 if it cannot be read. An
 * idle echo_mod worker writes nothing but its pongs, one write(2) each. */
static long long proc_syscw(pid_t pid)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    long long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "syscw: %lld", &v) == 1)
            break;
    fclose(f);
    return v;
}

#define IDLE_PONGS 20

typedef struct pongs_arg {
    const int *pids;
    long long from[2];
} pongs_arg;

/* Both workers answered IDLE_PONGS more pings since from[]. */
static bool answered_idle_pings(void *arg)
{
    pongs_arg *a = arg;
    for (int i = 0; i < 2; i++) {
        long long now = proc_syscw(a->pids[i]);
        if (now < 0 || now - a->from[i] < IDLE_PONGS)
            return false;
    }
    return true;
}

typedef struct paced_arg {
    pypool *p;
    unsigned ok;
    char first_problem[512];
    pthread_t thread;
} paced_arg;

/* Calls with idle gaps longer than idle_ping_ms, so pings and requests interleave. */
static void *paced_thread(void *arg)
{
    paced_arg *a = arg;
    for (int i = 0; i < 100; i++) {
        char payload[32];
        snprintf(payload, sizeof payload, "paced-%d", i);
        pypool_result r;
        int rc = pt_call_str(a->p, "echo", payload, 10000, &r);
        if (rc == PYPOOL_OK && r.len == strlen(payload) && memcmp(r.data, payload, r.len) == 0)
            a->ok++;
        else if (!a->first_problem[0])
            snprintf(a->first_problem, sizeof a->first_problem, "call %d: %s: %s", i,
                     pypool_strerror(rc), pt_msg(&r));
        pypool_result_free(&r);
        /* Pacing, so workers sit idle long enough to be pinged. Only the chance of a ping
         * between two calls depends on it; nothing asserted does. */
        tu_sleep_ms(3 + i % 5);
    }
    return NULL;
}

Test(sup_health, healthy_workers_survive_pings_and_pings_never_disturb_calls, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    cfg.idle_ping_ms = 2;
    cfg.ping_timeout_ms = 20000; /* healthy but slow on a loaded machine is still healthy */
    pypool *p = pt_create(&cfg);
    int before[2];
    pt_slot_pids(p, before, 2);

    paced_arg args[2];
    for (int t = 0; t < 2; t++) {
        memset(&args[t], 0, sizeof args[t]);
        args[t].p = p;
        cr_assert_eq(pthread_create(&args[t].thread, NULL, paced_thread, &args[t]), 0);
    }
    for (int t = 0; t < 2; t++)
        pthread_join(args[t].thread, NULL);
    for (int t = 0; t < 2; t++)
        cr_assert_eq(args[t].ok, 100, "thread %d: %u/100 ok; first: %s", t, args[t].ok,
                     args[t].first_problem);

    /* Idle under 2 ms pings: nobody is killed. The negative check waits for the pings to have
     * happened (each worker answered IDLE_PONGS of them), not for a guessed time. */
    pongs_arg pa = {.pids = before};
    for (int i = 0; i < 2; i++)
        pa.from[i] = proc_syscw(before[i]);
    cr_assert(pa.from[0] >= 0 && pa.from[1] >= 0, "cannot read /proc/<pid>/io of workers %d, %d",
              before[0], before[1]);
    bool pinged = tu_wait_until(answered_idle_pings, &pa, 30000);
    int after[2];
    pt_slot_pids(p, after, 2);
    cr_assert(after[0] == before[0] && after[1] == before[1],
              "healthy workers were replaced: %d,%d -> %d,%d", before[0], before[1], after[0],
              after[1]);
    cr_assert(pinged,
              "the idle workers did not answer %d pings each within 30 s (%lld, %lld writes)",
              IDLE_PONGS, proc_syscw(before[0]) - pa.from[0], proc_syscw(before[1]) - pa.from[1]);
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.ping_failures, 0);
    cr_assert_eq(s.restarts, 0);
    cr_assert_eq(s.protocol_errors, 0);
    pt_destroy(p);
}

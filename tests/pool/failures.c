/*
 * failures.c - workers failing under the pool: SIGKILL of a busy worker fails only its call
 * (PYPOOL_EWORKER with pid and signal), SIGKILL of an idle worker fails no call, a worker
 * exiting mid-call reports its status, and garbage on the response pipe is PYPOOL_EPROTO.
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(pool_failures, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

/* A thread making `calls` echo calls, checking each reply. */
typedef struct echo_loop {
    pypool *p;
    unsigned id, calls;
    unsigned ok;
    char first_problem[512];
    pthread_t thread;
} echo_loop;

static void *echo_loop_thread(void *arg)
{
    echo_loop *e = arg;
    for (unsigned i = 0; i < e->calls; i++) {
        char payload[64];
        snprintf(payload, sizeof payload, "loop%u-call%u", e->id, i);
        pypool_result r;
        int rc = pt_call_str(e->p, "echo", payload, 20000, &r);
        if (rc == PYPOOL_OK && r.len == strlen(payload) && memcmp(r.data, payload, r.len) == 0)
            __atomic_add_fetch(&e->ok, 1, __ATOMIC_RELAXED);
        else if (!e->first_problem[0])
            snprintf(e->first_problem, sizeof e->first_problem, "call %u: %s: %s", i,
                     pypool_strerror(rc), pt_msg(&r));
        pypool_result_free(&r);
    }
    return NULL;
}

/* True if `needle` occurs in `msg` outside every occurrence of the decimal pid. */
static bool contains_besides_pid(const char *msg, int pid, const char *needle)
{
    char pidstr[32], copy[1024];
    snprintf(pidstr, sizeof pidstr, "%d", pid);
    snprintf(copy, sizeof copy, "%s", msg);
    char *at;
    while ((at = strstr(copy, pidstr)) != NULL)
        memset(at, '_', strlen(pidstr));
    return strstr(copy, needle) != NULL;
}

static bool loops_started(void *arg)
{
    echo_loop *loops = arg;
    return __atomic_load_n(&loops[0].ok, __ATOMIC_RELAXED) >= 5 &&
           __atomic_load_n(&loops[1].ok, __ATOMIC_RELAXED) >= 5;
}

static bool not_alive(void *arg)
{
    return !pt_alive(*(pid_t *)arg);
}

Test(pool_failures, sigkill_of_busy_worker_fails_only_its_call, .timeout = 90)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 3);
    pypool *p = pt_create(&cfg);

    pt_call_job victim;
    /* Longer than the test can take: only the kill ends it, however slow the machine. */
    pt_call_start(&victim, p, NULL, "sleep", "600", 600000);
    cr_assert(pt_wait_busy(p, 1, 5000), "the sleep call never made a worker busy");
    int kpid = pt_busy_pid(p);
    cr_assert_gt(kpid, 0);

    echo_loop loops[2];
    for (unsigned i = 0; i < 2; i++) {
        loops[i] = (echo_loop){.p = p, .id = i, .calls = 1000};
        cr_assert_eq(pthread_create(&loops[i].thread, NULL, echo_loop_thread, &loops[i]), 0);
    }
    /* Let the other callers get going, so the kill lands amid their calls. */
    tu_wait_until(loops_started, loops, 10000);
    int64_t t_kill = tu_now_ms();
    cr_assert_eq(kill(kpid, SIGKILL), 0);
    pt_call_join(&victim);
    for (unsigned i = 0; i < 2; i++)
        pthread_join(loops[i].thread, NULL);

    PT_ASSERT_JOB(&victim, PYPOOL_EWORKER, "the call whose worker was killed");
    cr_assert_lt(victim.ended_ms - t_kill, 3000, "EWORKER came %lld ms after the kill",
                 (long long)(victim.ended_ms - t_kill));
    cr_assert_eq(victim.worker_pid, kpid, "result.worker_pid %d, killed %d", victim.worker_pid,
                 kpid);
    char pidstr[32];
    snprintf(pidstr, sizeof pidstr, "%d", kpid);
    cr_assert(strstr(victim.error_message, pidstr) != NULL, "error_message lacks the pid %d: %s",
              kpid, victim.error_message);
    cr_assert(strcasestr(victim.error_message, "signal") ||
                  strcasestr(victim.error_message, "kill"),
              "error_message names no signal: %s", victim.error_message);
    for (unsigned i = 0; i < 2; i++)
        cr_assert_eq(loops[i].ok, loops[i].calls, "other caller %u: %u/%u ok; first: %s", i,
                     loops[i].ok, loops[i].calls, loops[i].first_problem);

    pypool_result r;
    int rc = pt_call_str(p, "echo", "again", 15000, &r);
    PT_ASSERT_REPLY(rc, &r, "again", "a call after the kill");
    pypool_result_free(&r);
    cr_assert(pt_wait_idle(p, 3, 15000), "the pool did not come back to 3 idle workers");
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.crashes, 1, "stats.crashes %llu", (unsigned long long)s.crashes);
    cr_assert_eq(s.crashes_signal, 1, "stats.crashes_signal %llu",
                 (unsigned long long)s.crashes_signal);
    pt_destroy(p);
}

Test(pool_failures, sigkill_of_idle_worker_fails_no_call, .timeout = 90)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    pypool *p = pt_create(&cfg);

    for (int round = 0; round < 4; round++) {
        int pids[2];
        cr_assert(pt_wait_idle(p, 2, 15000), "round %d: pool not back to 2 idle", round);
        cr_assert_eq(pt_slot_pids(p, pids, 2), 2);
        pid_t victim = pids[round % 2];
        cr_assert_eq(kill(victim, SIGKILL), 0);
        /* Wait until it has exited (its pipes are closed), not until the pool noticed: the
         * next calls may well pick the dead worker and must then take the other one. */
        cr_assert(tu_wait_until(not_alive, &victim, 3000), "pid %d survived SIGKILL", victim);
        for (int i = 0; i < 10; i++) {
            char payload[32];
            snprintf(payload, sizeof payload, "r%d-c%d", round, i);
            pypool_result r;
            int rc = pt_call_str(p, "echo", payload, 15000, &r);
            PT_ASSERT_REPLY(rc, &r, payload, "a call right after an idle worker was killed");
            cr_assert_neq(r.worker_pid, victim, "served by the killed worker");
            pypool_result_free(&r);
        }
    }
    cr_assert(pt_wait_idle(p, 2, 15000), "pool not back to 2 idle workers");
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.crashes, 4, "stats.crashes %llu", (unsigned long long)s.crashes);
    pt_destroy(p);
}

Test(pool_failures, worker_exit_mid_call_reports_pid_and_status, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);

    pypool_result r;
    int rc = pt_call_str(p, "exit", "42", 10000, &r);
    PT_ASSERT_RC(rc, PYPOOL_EWORKER, &r, "a handler calling os._exit(42)");
    int pid = r.worker_pid;
    cr_assert_gt(pid, 0);
    char pidstr[32];
    snprintf(pidstr, sizeof pidstr, "%d", pid);
    cr_assert(strstr(pt_msg(&r), pidstr) != NULL, "error_message lacks the pid %d: %s", pid,
              pt_msg(&r));
    cr_assert(contains_besides_pid(pt_msg(&r), pid, "42"),
              "error_message lacks the exit status 42: %s", pt_msg(&r));
    pypool_result_free(&r);

    rc = pt_call_str(p, "echo", "next", 15000, &r);
    PT_ASSERT_REPLY(rc, &r, "next", "the call after the exit");
    cr_assert_neq(r.worker_pid, pid);
    pypool_result_free(&r);
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.crashes_exit, 1, "stats.crashes_exit %llu", (unsigned long long)s.crashes_exit);
    pt_destroy(p);
}

Test(pool_failures, garbage_on_the_response_pipe_is_eproto_and_breaks_only_that_slot, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    pypool *p = pt_create(&cfg);

    pypool_result r;
    int rc = pt_call_str(p, "garbage", "", 10000, &r);
    PT_ASSERT_RC(rc, PYPOOL_EPROTO, &r, "a handler writing garbage to fd 4");
    int bad = r.worker_pid;
    pypool_result_free(&r);
    cr_assert_gt(bad, 0, "worker_pid of the broken call");
    cr_assert(tu_wait_pid_gone(bad, 5000), "the worker that broke the protocol still exists");

    for (int i = 0; i < 6; i++) {
        rc = pt_call_str(p, "echo", "clean", 15000, &r);
        PT_ASSERT_REPLY(rc, &r, "clean", "a call after the protocol error");
        pypool_result_free(&r);
    }
    cr_assert(pt_wait_idle(p, 2, 15000), "pool not back to 2 idle workers");
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.protocol_errors, 1, "stats.protocol_errors %llu",
                 (unsigned long long)s.protocol_errors);
    pt_destroy(p);
}

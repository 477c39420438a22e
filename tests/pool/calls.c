/*
 * calls.c - calls and concurrency: many threads with random payloads checked byte for byte,
 * unknown methods, Python exceptions, explicit checkout, argument checks and the static strings.
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(pool_calls, .init = tu_log_reset, .fini = pt_teardown, .timeout = 120);

/* --- 32 threads x 500 calls, random payloads 0 B - 64 KiB --------------------------------- */

#define STORM_THREADS 32
#define STORM_CALLS   500
#define STORM_MAX_LEN (64 * 1024)

typedef struct storm_arg {
    pypool *p;
    unsigned id;
    unsigned ok, failed, mismatched;
    char first_problem[512];
} storm_arg;

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static void *storm_thread(void *arg)
{
    storm_arg *a = arg;
    uint8_t *buf = malloc(STORM_MAX_LEN);
    uint64_t rng = 0x9E3779B97F4A7C15ull * (a->id + 1);
    for (unsigned i = 0; i < STORM_CALLS && buf; i++) {
        size_t len = (size_t)(xorshift(&rng) % (STORM_MAX_LEN + 1));
        for (size_t k = 0; k < len; k++)
            buf[k] = (uint8_t)xorshift(&rng);
        /* Stamp the caller and call number so two callers never send the same bytes. */
        int stamp = len >= 16 ? snprintf((char *)buf, 16, "t%02uc%04u:", a->id, i) : 0;
        (void)stamp;
        pypool_result r;
        int rc = pypool_call(a->p, "echo", buf, len, 60000, &r);
        if (rc != PYPOOL_OK) {
            if (a->failed++ == 0)
                snprintf(a->first_problem, sizeof a->first_problem, "call %u (%zu B): %s: %s", i,
                         len, pypool_strerror(rc), pt_msg(&r));
        } else if (r.len != len || (len && memcmp(r.data, buf, len) != 0)) {
            if (a->mismatched++ == 0)
                snprintf(a->first_problem, sizeof a->first_problem,
                         "call %u: sent %zu B, got %zu B that differ (reply starts '%.12s')", i,
                         len, r.len, r.data ? (const char *)r.data : "");
        } else {
            a->ok++;
        }
        pypool_result_free(&r);
    }
    free(buf);
    return NULL;
}

Test(pool_calls, threads_32_x_500_random_payloads_echoed_byte_for_byte, .timeout = 150)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 4);
    pypool *p = pt_create(&cfg);

    static storm_arg args[STORM_THREADS];
    pthread_t th[STORM_THREADS];
    for (unsigned t = 0; t < STORM_THREADS; t++) {
        args[t] = (storm_arg){.p = p, .id = t};
        cr_assert_eq(pthread_create(&th[t], NULL, storm_thread, &args[t]), 0);
    }
    for (unsigned t = 0; t < STORM_THREADS; t++)
        pthread_join(th[t], NULL);

    unsigned ok = 0;
    for (unsigned t = 0; t < STORM_THREADS; t++) {
        cr_expect_eq(args[t].failed + args[t].mismatched, 0,
                     "thread %u: %u failed, %u wrong replies; first: %s", t, args[t].failed,
                     args[t].mismatched, args[t].first_problem);
        ok += args[t].ok;
    }
    cr_assert_eq(ok, STORM_THREADS * STORM_CALLS, "%u of %u calls returned the caller's bytes", ok,
                 STORM_THREADS * STORM_CALLS);
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.calls, (uint64_t)STORM_THREADS * STORM_CALLS, "stats.calls %llu",
                 (unsigned long long)s.calls);
    cr_assert_eq(s.restarts, 0, "stats.restarts %llu: no worker should have been replaced",
                 (unsigned long long)s.restarts);
    cr_assert_eq(s.crashes, 0);
    cr_assert_eq(s.idle, 4, "all 4 workers idle afterwards, got %u", s.idle);
    pt_destroy(p);
}

/* --- unknown methods among parallel calls -------------------------------------------------- */

Test(pool_calls, six_parallel_calls_odd_ones_unknown_method, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 3);
    pypool *p = pt_create(&cfg);

    pt_call_job jobs[6];
    char payload[32];
    for (int i = 0; i < 6; i++) {
        snprintf(payload, sizeof payload, "call-%d", i);
        pt_call_start(&jobs[i], p, NULL, (i % 2) ? "no_such_method" : "echo", payload, 30000);
    }
    for (int i = 0; i < 6; i++)
        pt_call_join(&jobs[i]);

    for (int i = 0; i < 6; i++) {
        char what[32];
        snprintf(what, sizeof what, "call %d", i);
        if (i % 2) {
            PT_ASSERT_JOB(&jobs[i], PYPOOL_EREMOTE, what);
            cr_assert_str_eq(jobs[i].error_type, "NoSuchMethod", "call %d: error_type '%s'", i,
                             jobs[i].error_type);
        } else {
            PT_ASSERT_JOB(&jobs[i], PYPOOL_OK, what);
            cr_assert_str_eq(jobs[i].reply, jobs[i].payload, "call %d: got another reply", i);
        }
    }
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.remote_errors, 3, "stats.remote_errors %llu",
                 (unsigned long long)s.remote_errors);
    cr_assert_eq(s.calls, 6, "stats.calls %llu (replies, ok or remote error)",
                 (unsigned long long)s.calls);
    cr_assert_eq(s.restarts + s.crashes, 0, "an unknown method must not cost a worker");
    pt_destroy(p);
}

/* --- a Python exception -------------------------------------------------------------------- */

Test(pool_calls, value_error_is_remote_and_worker_keeps_serving, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);

    pypool_result r;
    int rc = pt_call_str(p, "raise_value", "", 10000, &r);
    PT_ASSERT_RC(rc, PYPOOL_EREMOTE, &r, "raise_value");
    cr_assert_not_null(r.error_type);
    cr_assert_str_eq(r.error_type, "ValueError");
    cr_assert_not_null(r.error_message);
    cr_assert(strstr(r.error_message, "bad") != NULL, "error_message '%s' lacks 'bad'",
              r.error_message);
    cr_assert_not_null(r.traceback, "no traceback for a Python exception");
    cr_assert(strstr(r.traceback, "ValueError") != NULL, "traceback lacks ValueError:\n%s",
              r.traceback);
    int pid = r.worker_pid;
    cr_assert_gt(pid, 0, "worker_pid of the failed call");
    pypool_result_free(&r);
    pypool_result_free(&r); /* idempotent */

    char want[32];
    snprintf(want, sizeof want, "%d", pid);
    rc = pt_call_str(p, "pid", "", 10000, &r);
    PT_ASSERT_REPLY(rc, &r, want, "the next call on the same worker");
    cr_assert_eq(r.worker_pid, pid);
    pypool_result_free(&r);

    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.remote_errors, 1);
    cr_assert_eq(s.restarts + s.crashes, 0, "a Python exception must not cost the worker");
    pt_destroy(p);
}

/* --- explicit checkout ----------------------------------------------------------------------- */

/* Voluntary context switches of the calling thread so far (it went to sleep that many times). */
static long thread_nvcsw(void)
{
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    return ru.ru_nvcsw;
}

Test(pool_calls, checkout_serves_several_calls_on_one_worker, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    pypool *p = pt_create(&cfg);

    pypool_worker *w = NULL;
    int rc = pypool_checkout(p, 5000, &w);
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "checkout");
    cr_assert_not_null(w);
    int pid = pypool_worker_pid(w);
    cr_assert_gt(pid, 0);
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.busy, 1, "busy %u while one worker is checked out", s.busy);
    cr_assert_eq(s.idle, 1);

    char want[32];
    snprintf(want, sizeof want, "%d", pid);
    for (int i = 0; i < 5; i++) {
        pypool_result r;
        rc = pypool_worker_call(w, "pid", "", 0, 10000, &r);
        PT_ASSERT_REPLY(rc, &r, want, "worker_call pid");
        cr_assert_eq(r.worker_pid, pid);
        pypool_result_free(&r);
    }
    pypool_result r;
    rc = pypool_worker_call(w, "raise_value", "", 0, 10000, &r);
    PT_ASSERT_RC(rc, PYPOOL_EREMOTE, &r, "worker_call raise_value");
    pypool_result_free(&r);
    rc = pypool_worker_call(w, "echo", "still here", 10, 10000, &r);
    PT_ASSERT_REPLY(rc, &r, "still here", "worker_call after a remote error");
    pypool_result_free(&r);

    /* Both workers out: a no-wait checkout fails at once, without disturbing anyone. */
    pypool_worker *w2 = NULL, *w3 = NULL;
    rc = pypool_checkout(p, 0, &w2);
    PT_ASSERT_RC(rc, PYPOOL_OK, NULL, "second checkout");
    cr_assert_neq(pypool_worker_pid(w2), pid, "two checkouts got the same worker");
    /* "At once" as an event, not a duration: the call never went to sleep (no voluntary
     * context switch). One of four tries must show it: a lock held for a moment by the reaper
     * would be a sleep too. */
    long fewest_sleeps = -1;
    char seen[256] = "";
    for (int i = 0; i < 4 && fewest_sleeps != 0; i++) {
        int64_t t0 = tu_now_ms();
        long nv0 = thread_nvcsw();
        rc = pypool_checkout(p, 0, &w3);
        long slept = thread_nvcsw() - nv0;
        int64_t waited = tu_now_ms() - t0;
        PT_ASSERT_RC(rc, PYPOOL_ETIMEDOUT, NULL, "third checkout with timeout 0");
        cr_assert_null(w3);
        snprintf(seen + strlen(seen), sizeof seen - strlen(seen), " %lld ms/%ld sleeps",
                 (long long)waited, slept);
        if (fewest_sleeps < 0 || slept < fewest_sleeps)
            fewest_sleeps = slept;
    }
    cr_assert_eq(fewest_sleeps, 0, "a no-wait checkout always went to sleep:%s", seen);

    pypool_checkin(w2);
    pypool_checkin(w);
    pypool_checkin(NULL);
    s = pt_stats(p);
    cr_assert_eq(s.idle, 2, "idle %u after checkin", s.idle);
    cr_assert_eq(s.restarts + s.crashes, 0);
    pt_destroy(p);
}

/* --- arguments and static strings ---------------------------------------------------------- */

Test(pool_calls, invalid_arguments_are_einval, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, NULL, 1);
    pypool *none = NULL;
    int rc = pypool_create(&cfg, &none);
    cr_assert_eq(rc, PYPOOL_EINVAL, "create without module or worker_argv: %s",
                 pypool_strerror(rc));
    cr_assert_null(none);
    rc = pypool_create(NULL, &none);
    cr_assert_eq(rc, PYPOOL_EINVAL, "create(NULL cfg): %s", pypool_strerror(rc));

    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);
    pypool_result r;
    rc = pypool_call(p, NULL, "x", 1, 1000, &r);
    PT_ASSERT_RC(rc, PYPOOL_EINVAL, &r, "NULL method");
    cr_assert_not_null(r.error_message, "a failed call carries error_message");
    pypool_result_free(&r);
    rc = pypool_call(p, "", "x", 1, 1000, &r);
    PT_ASSERT_RC(rc, PYPOOL_EINVAL, &r, "empty method");
    pypool_result_free(&r);

    /* The pool is unharmed. */
    rc = pt_call_str(p, "echo", "fine", 10000, &r);
    PT_ASSERT_REPLY(rc, &r, "fine", "echo after invalid calls");
    pypool_result_free(&r);
    pt_destroy(p);

    pypool_destroy(NULL);
    pypool_result_free(NULL);
}

Test(pool_calls, strerror_and_state_names_are_static_strings, .timeout = 10)
{
    const char *seen[12];
    for (int code = 0; code >= -11; code--) {
        const char *s = pypool_strerror(code);
        cr_assert_not_null(s, "strerror(%d)", code);
        cr_assert_gt(strlen(s), 0, "strerror(%d) is empty", code);
        for (int k = 0; k < -code; k++)
            cr_assert_str_neq(s, seen[k], "strerror(%d) == strerror(%d)", code, -k);
        seen[-code] = s;
    }
    cr_assert_not_null(pypool_strerror(-999));
    cr_assert_not_null(pypool_strerror(42));
    for (int st = PYPOOL_SLOT_EMPTY; st <= PYPOOL_SLOT_STOPPED; st++) {
        const char *n = pypool_slot_state_name(st);
        cr_assert(n && *n, "slot state %d has no name", st);
    }
    cr_assert_str_eq(pypool_slot_state_name(PYPOOL_SLOT_IDLE), "idle");
    cr_assert_not_null(pypool_slot_state_name(99));
}

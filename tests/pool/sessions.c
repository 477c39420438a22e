/*
 * sessions.c - pypool_session_call: state persists within a session, is invisible to other
 * sessions, survives interleaving and is dropped by close; sessions spread over workers; a
 * session waits for its own busy worker while others stay free; losing the worker (killed or
 * recycled) yields PYPOOL_ESESSION once, then the session rebinds.
 */
#define _GNU_SOURCE
#include "pool_test.h"

TestSuite(pool_sessions, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

/* A session call with a string payload; asserts nothing. */
static int scall(pypool *p, const char *sid, const char *method, const char *payload,
                 pypool_result *r)
{
    return pypool_session_call(p, sid, method, payload, payload ? strlen(payload) : 0, 15000, r);
}

/* Asserts that a session call returns `want`; returns the serving pid. */
static int expect_session_reply(pypool *p, const char *sid, const char *method, const char *payload,
                                const char *want)
{
    pypool_result r;
    int rc = scall(p, sid, method, payload, &r);
    char what[128];
    snprintf(what, sizeof what, "session '%s' %s", sid, method);
    PT_ASSERT_REPLY(rc, &r, want, what);
    int pid = r.worker_pid;
    pypool_result_free(&r);
    return pid;
}

Test(pool_sessions, state_persists_is_isolated_interleaves_and_close_drops_it, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    pypool *p = pt_create(&cfg);

    int pid_a = expect_session_reply(p, "a", "count", "", "1");
    cr_assert_eq(expect_session_reply(p, "a", "count", "", "2"), pid_a);
    cr_assert_eq(expect_session_reply(p, "a", "count", "", "3"), pid_a);
    expect_session_reply(p, "b", "count", "", "1");

    char want[16];
    for (int i = 0; i < 10; i++) {
        snprintf(want, sizeof want, "%d", 4 + i);
        cr_assert_eq(expect_session_reply(p, "a", "count", "", want), pid_a,
                     "session a moved to another worker");
        snprintf(want, sizeof want, "%d", 2 + i);
        expect_session_reply(p, "b", "count", "", want);
        snprintf(want, sizeof want, "%d", 1 + i);
        expect_session_reply(p, "c", "count", "", want);
        /* Plain calls in between do not disturb sessions. */
        pypool_result r;
        int rc = pt_call_str(p, "echo", "plain", 10000, &r);
        PT_ASSERT_REPLY(rc, &r, "plain", "plain call between session calls");
        pypool_result_free(&r);
    }

    expect_session_reply(p, "a", "session_set", "alpha", "ok");
    expect_session_reply(p, "b", "session_get", "", "");
    expect_session_reply(p, "c", "session_get", "", "");
    expect_session_reply(p, "a", "session_get", "", "alpha");
    pypool_result r;
    int rc = pt_call_str(p, "session_get", "", 10000, &r);
    PT_ASSERT_REPLY(rc, &r, "nosession", "session_get outside a session");
    pypool_result_free(&r);

    rc = pypool_session_close(p, "a");
    cr_assert_eq(rc, PYPOOL_OK, "session_close(a): %s", pypool_strerror(rc));
    expect_session_reply(p, "a", "session_get", "", "");
    expect_session_reply(p, "a", "count", "", "1");
    expect_session_reply(p, "b", "count", "", "12"); /* b untouched by a's close */
    rc = pypool_session_close(p, "never-seen");
    cr_assert_eq(rc, PYPOOL_OK, "session_close of an unknown session: %s", pypool_strerror(rc));
    pt_destroy(p);
}

Test(pool_sessions, sessions_spread_across_workers, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 4);
    pypool *p = pt_create(&cfg);
    int slot_pids[4];
    pt_slot_pids(p, slot_pids, 4);

    int per_worker[4] = {0};
    for (int i = 0; i < 8; i++) {
        char sid[16];
        snprintf(sid, sizeof sid, "s%d", i);
        int pid = expect_session_reply(p, sid, "count", "", "1");
        int k = 0;
        while (k < 4 && slot_pids[k] != pid)
            k++;
        cr_assert_lt(k, 4, "session %s served by unknown pid %d", sid, pid);
        per_worker[k]++;
    }
    for (int k = 0; k < 4; k++)
        cr_assert_eq(per_worker[k], 2, "worker %d holds %d of 8 sessions (want 2 each)",
                     slot_pids[k], per_worker[k]);
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.sessions, 8, "stats.sessions %llu", (unsigned long long)s.sessions);

    for (int i = 0; i < 8; i++) {
        char sid[16];
        snprintf(sid, sizeof sid, "s%d", i);
        cr_assert_eq(pypool_session_close(p, sid), PYPOOL_OK);
    }
    s = pt_stats(p);
    cr_assert_eq(s.sessions, 0, "stats.sessions %llu after closing all",
                 (unsigned long long)s.sessions);
    pt_destroy(p);
}

Test(pool_sessions, session_waits_for_its_busy_worker_while_others_stay_free, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    pypool *p = pt_create(&cfg);

    int pid_s = expect_session_reply(p, "s", "count", "", "1");
    pt_call_job slow;
    pt_call_start(&slow, p, "s", "sleep", "0.8", 30000);
    bool busy = pt_wait_busy(p, 1, 5000);

    /* Another caller is served at once by the other worker. */
    pypool_result r;
    int rc_plain = pt_call_str(p, "echo", "free", 10000, &r);
    int64_t plain_ended = tu_now_ms();
    int plain_pid = r.worker_pid;
    pypool_result_free(&r);

    /* The session's next call waits for its worker; a short deadline expires waiting. */
    int64_t t0 = tu_now_ms();
    int rc_short = pypool_session_call(p, "s", "count", "", 0, 100, &r);
    int64_t took_short = tu_now_ms() - t0;
    char msg_short[256];
    snprintf(msg_short, sizeof msg_short, "%s", pt_msg(&r));
    pypool_result_free(&r);

    int rc_wait = pypool_session_call(p, "s", "count", "", 0, 10000, &r);
    int64_t ended = tu_now_ms();
    char reply[32];
    snprintf(reply, sizeof reply, "%.*s", (int)r.len, r.data ? (const char *)r.data : "");
    int wait_pid = r.worker_pid;
    char msg_wait[256];
    snprintf(msg_wait, sizeof msg_wait, "%s", pt_msg(&r));
    pypool_result_free(&r);
    pt_call_join(&slow);

    cr_assert(busy, "the slow session call never made its worker busy");
    PT_ASSERT_JOB(&slow, PYPOOL_OK, "the slow session call");
    cr_assert_eq(slow.worker_pid, pid_s, "the session's call ran on another worker");
    cr_assert_eq(rc_plain, PYPOOL_OK, "plain call: %s", pypool_strerror(rc_plain));
    cr_assert_neq(plain_pid, pid_s, "the plain call was served by the busy session worker");
    cr_assert_lt(plain_ended, slow.ended_ms,
                 "the plain call waited for the busy session worker instead of using the other");
    cr_assert_eq(rc_short, PYPOOL_ETIMEDOUT, "100 ms session call on a busy worker: %s: %s",
                 pypool_strerror(rc_short), msg_short);
    cr_assert(took_short >= 80 && took_short < 600, "100 ms session deadline hit after %lld ms",
              (long long)took_short);
    cr_assert_eq(rc_wait, PYPOOL_OK, "waiting session call: %s: %s", pypool_strerror(rc_wait),
                 msg_wait);
    cr_assert_str_eq(reply, "2",
                     "session state after waiting: '%s' (the timed-out call must "
                     "not have run)",
                     reply);
    cr_assert_eq(wait_pid, pid_s);
    cr_assert_geq(ended + 5, slow.ended_ms, "the session call finished before its worker was free");
    pypool_stats s = pt_stats(p);
    cr_assert_eq(s.restarts + s.crashes, 0, "waiting for a session worker cost a worker");
    pt_destroy(p);
}

Test(pool_sessions, killed_session_worker_yields_esession_once_then_rebinds, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    pypool *p = pt_create(&cfg);

    expect_session_reply(p, "k", "count", "", "1");
    int pid_k = expect_session_reply(p, "k", "count", "", "2");
    int pid_o = expect_session_reply(p, "o", "count", "", "1");
    cr_assert_neq(pid_o, pid_k, "the second session should bind to the emptier worker");

    cr_assert_eq(kill(pid_k, SIGKILL), 0);
    cr_assert(tu_wait_pid_gone(pid_k, 5000), "killed worker %d not reaped", pid_k);

    pypool_result r;
    int rc = scall(p, "k", "count", "", &r);
    PT_ASSERT_RC(rc, PYPOOL_ESESSION, &r, "first call after the session's worker died");
    pypool_result_free(&r);
    int pid_new = expect_session_reply(p, "k", "count", "", "1");
    cr_assert_neq(pid_new, pid_k);
    expect_session_reply(p, "k", "count", "", "2");
    cr_assert_eq(expect_session_reply(p, "o", "count", "", "2"), pid_o,
                 "the other session lost its worker");
    pt_destroy(p);
}

Test(pool_sessions, recycled_session_worker_yields_esession_once_then_rebinds, .timeout = 60)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    cfg.max_calls_per_worker = 5;
    pypool *p = pt_create(&cfg);

    int esession_at = -1;
    for (int i = 0; i < 12 && esession_at < 0; i++) {
        pypool_result r;
        int rc = scall(p, "z", "count", "", &r);
        if (rc == PYPOOL_ESESSION) {
            esession_at = i;
        } else {
            char want[16];
            snprintf(want, sizeof want, "%d", i + 1);
            PT_ASSERT_REPLY(rc, &r, want, "session call before the recycle");
        }
        pypool_result_free(&r);
    }
    cr_assert(esession_at >= 4 && esession_at <= 7,
              "with max_calls_per_worker 5 the session lost its worker at call %d", esession_at);
    expect_session_reply(p, "z", "count", "", "1");
    expect_session_reply(p, "z", "count", "", "2");
    cr_assert_geq(pt_stats(p).recycles, 1);
    pt_destroy(p);
}

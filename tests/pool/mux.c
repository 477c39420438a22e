/*
 * mux.c - multiplexed workers (max_inflight > 1): async and threaded handlers run concurrently
 * in one worker; a call past its deadline is cancelled, not killed (same pid, stats.cancels);
 * a call that ignores its cancel gets its worker killed after cancel_grace_ms; a worker dying
 * with calls in flight fails exactly those calls, with no reply given to the wrong caller; one
 * session's calls do not overlap; a checkout holds one lane; a plain handler blocking forever;
 * 256 threads on 128 lanes; max_inflight validation. Handlers: tests/modules/mux_mod.py.
 */
#define _GNU_SOURCE
#include "pool_test.h"

#include <stdatomic.h>

#include <inttypes.h>
#include <unistd.h>

TestSuite(pool_mux, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

#define NEVER_MS 20000 /* bound of a wait for an event: "never" */

static pypool *mux_pool(unsigned size, unsigned inflight, int64_t grace_ms)
{
    pypool_config cfg;
    tu_config(&cfg, "mux_mod", size);
    cfg.max_inflight = inflight;
    if (grace_ms > 0)
        cfg.cancel_grace_ms = grace_ms;
    return pt_create(&cfg);
}

/* A call that must succeed with exactly `want`; returns the serving pid. */
static int expect_reply(pypool *p, const char *method, const char *payload, const char *want)
{
    pypool_result r;
    int rc = pt_call_str(p, method, payload, NEVER_MS, &r);
    char what[160];
    snprintf(what, sizeof what, "%s(%s)", method, payload);
    PT_ASSERT_REPLY(rc, &r, want, what);
    int pid = r.worker_pid;
    pypool_result_free(&r);
    return pid;
}

static int worker_pid_now(pypool *p)
{
    pypool_result r;
    int rc = pt_call_str(p, "pid", "", NEVER_MS, &r);
    PT_ASSERT_RC(rc, PYPOOL_OK, &r, "pid");
    int pid = atoi((const char *)r.data);
    cr_assert_eq(pid, r.worker_pid, "pid handler says %d, result.worker_pid %d", pid, r.worker_pid);
    pypool_result_free(&r);
    return pid;
}

typedef struct inflight_arg {
    pypool *p;
    unsigned n;
} inflight_arg;

static bool pred_inflight(void *arg)
{
    inflight_arg *a = arg;
    return pt_stats(a->p).inflight == a->n;
}

static bool wait_inflight(pypool *p, unsigned n)
{
    inflight_arg a = {p, n};
    return tu_wait_until(pred_inflight, &a, NEVER_MS);
}

/* A gate: a file whose creation releases mux_mod's agate / gen_gated handlers. */
typedef struct gate {
    char dir[64];
    char path[96];
} gate;

static void gate_init(gate *g)
{
    snprintf(g->dir, sizeof g->dir, "/tmp/pypool-mux-XXXXXX");
    cr_assert_not_null(mkdtemp(g->dir), "mkdtemp");
    snprintf(g->path, sizeof g->path, "%s/gate", g->dir);
}

static void gate_open(gate *g)
{
    FILE *f = fopen(g->path, "w");
    cr_assert_not_null(f, "creating %s", g->path);
    fclose(f);
}

static void gate_remove(gate *g)
{
    unlink(g->path);
    rmdir(g->dir);
}

/* Polls handler was_cancelled until the worker says `key` saw its cancellation. */
static bool wait_cancel_seen(pypool *p, const char *key)
{
    int64_t until = tu_now_ms() + NEVER_MS;
    while (tu_now_ms() < until) {
        pypool_result r;
        int rc = pt_call_str(p, "was_cancelled", key, NEVER_MS, &r);
        bool yes = rc == PYPOOL_OK && r.len == 3 && memcmp(r.data, "yes", 3) == 0;
        pypool_result_free(&r);
        if (yes)
            return true;
        tu_sleep_ms(5);
    }
    return false;
}

/* --- concurrency -------------------------------------------------------------------------- */

/* n calls of a rendezvous handler on one worker: each returns only once all n have started. */
static void rendezvous(const char *method, unsigned n)
{
    pypool *p = mux_pool(1, n, 0);
    pt_call_job *jobs = calloc(n, sizeof *jobs);
    cr_assert_not_null(jobs);
    for (unsigned i = 0; i < n; i++) {
        char payload[64];
        snprintf(payload, sizeof payload, "rv:%u:tok%u", n, i);
        pt_call_start(&jobs[i], p, NULL, method, payload, 30000);
    }
    int pid = 0;
    for (unsigned i = 0; i < n; i++) {
        pt_call_join(&jobs[i]);
        char want[32];
        snprintf(want, sizeof want, "tok%u", i);
        PT_ASSERT_JOB(&jobs[i], PYPOOL_OK, method);
        cr_assert_str_eq(jobs[i].reply, want, "%s call %u got '%s'", method, i, jobs[i].reply);
        if (!pid)
            pid = jobs[i].worker_pid;
        cr_assert_eq(jobs[i].worker_pid, pid, "one worker serves all calls");
    }
    free(jobs);
    pypool_stats st = pt_stats(p);
    cr_assert_eq(st.restarts, 0, "no worker was replaced");
    pt_destroy(p);
}

Test(pool_mux, async_handlers_run_concurrently_in_one_worker)
{
    rendezvous("arendezvous", 8);
}

Test(pool_mux, threaded_handlers_run_concurrently_in_one_worker)
{
    rendezvous("trendezvous", 8);
}

Test(pool_mux, eight_async_sleeps_overlap)
{
    pypool *p = mux_pool(1, 8, 0);
    expect_reply(p, "echo", "warm", "warm");
    pt_call_job jobs[8];
    int64_t t0 = tu_now_ms();
    for (int i = 0; i < 8; i++)
        pt_call_start(&jobs[i], p, NULL, "asleep", "0.3", 30000);
    for (int i = 0; i < 8; i++) {
        pt_call_join(&jobs[i]);
        PT_ASSERT_JOB(&jobs[i], PYPOOL_OK, "asleep 0.3");
        cr_assert_str_eq(jobs[i].reply, "slept");
    }
    int64_t took = tu_now_ms() - t0;
    /* one after another: 2400 ms; concurrently ~300 ms. The bound leaves room for a slow box. */
    cr_assert_lt(took, 4 * 300, "8 async sleeps of 0.3 s took %" PRId64 " ms", took);
    pt_destroy(p);
}

/* --- cancellation ------------------------------------------------------------------------- */

static void cancel_without_kill(const char *method, const char *payload, const char *key)
{
    pypool *p = mux_pool(1, 4, 0);
    int pid0 = worker_pid_now(p);
    pypool_stats before = pt_stats(p);
    pypool_result r;
    int64_t t0 = tu_now_ms();
    int rc = pt_call_str(p, method, payload, 300, &r);
    int64_t took = tu_now_ms() - t0;
    PT_ASSERT_RC(rc, PYPOOL_ETIMEDOUT, &r, method);
    cr_assert_lt(took, NEVER_MS, "the timeout came after %" PRId64 " ms", took);
    pypool_result_free(&r);
    pypool_stats after = pt_stats(p);
    cr_assert_eq(after.cancels, before.cancels + 1, "stats.cancels %" PRIu64 " -> %" PRIu64,
                 before.cancels, after.cancels);
    cr_assert_eq(after.timeouts, before.timeouts + 1, "stats.timeouts counts the call");
    /* the next call works at once (timeout 0: a free lane now, or fail), on the same worker */
    pypool_result nx;
    rc = pt_call_str(p, "echo", "next", 0, &nx);
    PT_ASSERT_REPLY(rc, &nx, "next", "the call right after the timeout");
    cr_assert_eq(nx.worker_pid, pid0, "the worker was replaced");
    pypool_result_free(&nx);
    cr_assert(wait_cancel_seen(p, key), "the handler never saw its cancellation");
    cr_assert(wait_inflight(p, 0), "the cancelled call never left (inflight %u)",
              pt_stats(p).inflight);
    cr_assert_eq(worker_pid_now(p), pid0, "the worker was replaced");
    pypool_stats end = pt_stats(p);
    cr_assert_eq(end.restarts, 0, "restarts %" PRIu64, end.restarts);
    cr_assert_eq(end.crashes, 0, "crashes %" PRIu64, end.crashes);
    cr_assert_eq(end.call_timeouts, 0, "no call timed out by killing its worker");
    pt_destroy(p);
}

Test(pool_mux, timed_out_async_call_is_cancelled_not_killed)
{
    cancel_without_kill("asleep_note", "a1:30", "a1");
}

Test(pool_mux, timed_out_threaded_call_sees_ctx_cancelled)
{
    cancel_without_kill("twait_cancel", "t1", "t1");
}

/* A threaded handler that ignores ctx.cancelled(): cancel_grace_ms later its worker is killed;
 * another call it was running fails with EWORKER (or, never read, succeeds elsewhere). */
Test(pool_mux, call_ignoring_its_cancel_gets_the_worker_killed_after_grace)
{
    pypool *p = mux_pool(1, 4, 200);
    int pid0 = worker_pid_now(p);
    pt_call_job other;
    pt_call_start(&other, p, NULL, "asleep", "5", 30000);
    cr_assert(wait_inflight(p, 1), "the other call never went in flight");
    pypool_result r;
    int rc = pt_call_str(p, "tignore", "60", 300, &r);
    PT_ASSERT_RC(rc, PYPOOL_ETIMEDOUT, &r, "tignore");
    pypool_result_free(&r);
    cr_assert(pt_wait_replaced(p, pid0, NEVER_MS), "the worker was not replaced after the grace");
    pt_call_join(&other);
    cr_assert(other.rc == PYPOOL_EWORKER || (other.rc == PYPOOL_OK && other.worker_pid != pid0),
              "the other call on the killed worker: %s (%s) from pid %d", pypool_strerror(other.rc),
              other.error_message, other.worker_pid);
    if (other.rc == PYPOOL_OK)
        cr_assert_str_eq(other.reply, "slept");
    pypool_stats st = pt_stats(p);
    cr_assert_geq(st.cancels, 1);
    cr_assert_geq(st.restarts, 1);
    int pid1 = expect_reply(p, "echo", "again", "again");
    cr_assert_neq(pid1, pid0, "served by the killed worker?");
    pt_destroy(p);
}

Test(pool_mux, plain_handler_blocking_forever_times_out_then_grace_kill_replaces_it)
{
    pypool *p = mux_pool(1, 4, 200);
    int pid0 = worker_pid_now(p);
    pt_call_job a, b;
    pt_call_start(&a, p, NULL, "block", "3600", 300);
    pt_call_start(&b, p, NULL, "block", "3600", 300);
    pt_call_join(&a);
    pt_call_join(&b);
    PT_ASSERT_JOB(&a, PYPOOL_ETIMEDOUT, "block (first)");
    /* the second plain call waits behind the first in the worker, or finds it killed */
    cr_assert(b.rc == PYPOOL_ETIMEDOUT || b.rc == PYPOOL_EWORKER, "block (second): %s (%s)",
              pypool_strerror(b.rc), b.error_message);
    cr_assert(pt_wait_replaced(p, pid0, NEVER_MS), "the blocked worker was never replaced");
    int pid1 = expect_reply(p, "echo", "served", "served");
    cr_assert_neq(pid1, pid0);
    cr_assert(wait_inflight(p, 0), "inflight %u after the replacement", pt_stats(p).inflight);
    pt_destroy(p);
}

/* --- a worker dying with calls in flight ---------------------------------------------------- */

Test(pool_mux, worker_dying_with_calls_in_flight_fails_exactly_those)
{
    enum { PER = 8, N = 2 * PER };
    pypool *p = mux_pool(2, PER + 1, 0);
    gate g;
    gate_init(&g);
    pt_call_job jobs[N];
    for (int i = 0; i < N; i++) {
        char payload[128];
        snprintf(payload, sizeof payload, "%s|tok%d", g.path, i);
        pt_call_start(&jobs[i], p, NULL, "agate", payload, 60000);
    }
    cr_assert(wait_inflight(p, N), "inflight %u, want %d", pt_stats(p).inflight, N);
    /* Every call has started in its worker: ask each worker through a checked-out lane (the
     * second checkout goes to the worker with fewer calls, the other one). */
    pypool_worker *w[2];
    int wpid[2];
    for (int k = 0; k < 2; k++) {
        int rc = pypool_checkout(p, NEVER_MS, &w[k]);
        cr_assert_eq(rc, PYPOOL_OK, "checkout %d: %s", k, pypool_strerror(rc));
        wpid[k] = pypool_worker_pid(w[k]);
    }
    cr_assert_neq(wpid[0], wpid[1], "both checkouts on one worker");
    for (int k = 0; k < 2; k++) {
        int64_t until = tu_now_ms() + NEVER_MS;
        for (;;) {
            pypool_result r;
            int rc = pypool_worker_call(w[k], "gate_waiting", "", 0, NEVER_MS, &r);
            PT_ASSERT_RC(rc, PYPOOL_OK, &r, "gate_waiting");
            int waiting = atoi((const char *)r.data);
            pypool_result_free(&r);
            if (waiting == PER)
                break;
            cr_assert_lt(tu_now_ms(), until, "worker %d has %d calls waiting, want %d", wpid[k],
                         waiting, PER);
            tu_sleep_ms(5);
        }
    }
    pypool_checkin(w[0]);
    pypool_checkin(w[1]);
    int victim = wpid[0];
    cr_assert_eq(kill(victim, SIGKILL), 0);
    /* the victim's calls end on their own (EWORKER), freeing their lanes; then the gate opens
     * for the others */
    cr_assert(wait_inflight(p, PER), "inflight %u after the kill, want %d", pt_stats(p).inflight,
              PER);
    int failed = 0;
    gate_open(&g);
    for (int i = 0; i < N; i++) {
        pt_call_join(&jobs[i]);
        char want[32];
        snprintf(want, sizeof want, "tok%d", i);
        if (jobs[i].rc == PYPOOL_EWORKER) {
            failed++;
            cr_assert_eq(jobs[i].worker_pid, victim, "EWORKER from pid %d, not the victim %d",
                         jobs[i].worker_pid, victim);
            continue;
        }
        PT_ASSERT_JOB(&jobs[i], PYPOOL_OK, "agate");
        cr_assert_str_eq(jobs[i].reply, want, "call %d got another call's reply '%s'", i,
                         jobs[i].reply);
        cr_assert_neq(jobs[i].worker_pid, victim, "a reply from the killed worker");
    }
    cr_assert_eq(failed, PER, "%d calls failed, want the victim's %d", failed, PER);
    gate_remove(&g);
    pt_destroy(p);
}

/* --- sessions ------------------------------------------------------------------------------ */

typedef struct sess_arg {
    pypool *p;
    int calls;
    int ok;
    int values[64];
    char err[256];
} sess_arg;

static void *sess_thread(void *arg)
{
    sess_arg *a = arg;
    for (int i = 0; i < a->calls; i++) {
        pypool_result r;
        int rc = pypool_session_call(a->p, "shared", "acount", "", 0, NEVER_MS, &r);
        if (rc == PYPOOL_OK) {
            a->values[a->ok++] = atoi((const char *)r.data);
        } else if (!a->err[0]) {
            snprintf(a->err, sizeof a->err, "%s: %s", pypool_strerror(rc), pt_msg(&r));
        }
        pypool_result_free(&r);
    }
    return NULL;
}

Test(pool_mux, one_sessions_calls_do_not_overlap)
{
    enum { T = 16, C = 20 };
    pypool *p = mux_pool(2, 8, 0);
    sess_arg args[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        args[i] = (sess_arg){.p = p, .calls = C};
        cr_assert_eq(pthread_create(&th[i], NULL, sess_thread, &args[i]), 0);
    }
    static bool seen[T * C + 1];
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        cr_assert_eq(args[i].ok, C, "thread %d: %d of %d calls ok (%s)", i, args[i].ok, C,
                     args[i].err);
        for (int k = 0; k < C; k++) {
            int v = args[i].values[k];
            cr_assert(v >= 1 && v <= T * C && !seen[v], "counter value %d repeated or out of range",
                      v);
            seen[v] = true;
        }
    }
    pypool_result r;
    int rc = pypool_session_call(p, "shared", "acount", "", 0, NEVER_MS, &r);
    char want[16];
    snprintf(want, sizeof want, "%d", T * C + 1);
    PT_ASSERT_REPLY(rc, &r, want, "final count");
    pypool_result_free(&r);
    pt_destroy(p);
}

/* --- lane checkout --------------------------------------------------------------------------- */

Test(pool_mux, checkout_holds_one_lane_and_the_worker_serves_others)
{
    pypool *p = mux_pool(1, 2, 0);
    pypool_worker *w;
    int rc = pypool_checkout(p, NEVER_MS, &w);
    cr_assert_eq(rc, PYPOOL_OK, "checkout: %s", pypool_strerror(rc));
    int pid = pypool_worker_pid(w);
    cr_assert_eq(pt_stats(p).inflight, 1, "a checkout holds one lane");
    /* the other lane serves plain calls meanwhile */
    cr_assert_eq(expect_reply(p, "echo", "beside", "beside"), pid);
    pypool_result r;
    rc = pypool_worker_call(w, "echo", "mine", 4, NEVER_MS, &r);
    PT_ASSERT_REPLY(rc, &r, "mine", "worker_call on the lane");
    cr_assert_eq(r.worker_pid, pid);
    pypool_result_free(&r);
    /* fill the other lane; a third call must wait for a lane */
    gate g;
    gate_init(&g);
    char payload[128];
    snprintf(payload, sizeof payload, "%s|gated", g.path);
    pt_call_job gated, third;
    pt_call_start(&gated, p, NULL, "agate", payload, 60000);
    cr_assert(wait_inflight(p, 2), "inflight %u, want 2", pt_stats(p).inflight);
    pt_call_start(&third, p, NULL, "echo", "third", 60000);
    cr_assert(pt_wait_waiters(p, 1, NEVER_MS), "the third call does not wait for a lane");
    /* a second worker_call on the lane still works (the lane is ours) */
    rc = pypool_worker_call(w, "echo", "again", 5, NEVER_MS, &r);
    PT_ASSERT_REPLY(rc, &r, "again", "worker_call while the pool is full");
    pypool_result_free(&r);
    pypool_checkin(w); /* frees the lane: the third call gets it */
    pt_call_join(&third);
    PT_ASSERT_JOB(&third, PYPOOL_OK, "third call");
    cr_assert_str_eq(third.reply, "third");
    gate_open(&g);
    pt_call_join(&gated);
    PT_ASSERT_JOB(&gated, PYPOOL_OK, "gated call");
    cr_assert_str_eq(gated.reply, "gated");
    cr_assert(wait_inflight(p, 0), "inflight %u at the end", pt_stats(p).inflight);
    gate_remove(&g);
    pt_destroy(p);
}

/* A checked-out lane whose worker died (and was reaped) between two worker_calls: the next
 * worker_call must say EWORKER at once, and the slot must be replaced after the checkin.
 * (echo_mod: plain handlers are enough, so this runs without the async runtime.) */
static bool pred_crashed(void *arg)
{
    return pt_stats(arg).crashes >= 1;
}

Test(pool_mux, worker_call_on_a_lane_whose_worker_died_gives_eworker)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    cfg.max_inflight = 2;
    cfg.cancel_grace_ms = 200;
    pypool *p = pt_create(&cfg);
    pypool_worker *w;
    int rc = pypool_checkout(p, NEVER_MS, &w);
    cr_assert_eq(rc, PYPOOL_OK, "checkout: %s", pypool_strerror(rc));
    int pid = pypool_worker_pid(w);
    pypool_result r;
    rc = pypool_worker_call(w, "echo", "one", 3, NEVER_MS, &r);
    PT_ASSERT_REPLY(rc, &r, "one", "first worker_call");
    pypool_result_free(&r);
    cr_assert_eq(kill(pid, SIGKILL), 0);
    cr_assert(tu_wait_until(pred_crashed, p, NEVER_MS), "the worker's death was never noticed");
    int64_t t0 = tu_now_ms();
    rc = pypool_worker_call(w, "echo", "two", 3, 2000, &r);
    int64_t took = tu_now_ms() - t0;
    PT_ASSERT_RC(rc, PYPOOL_EWORKER, &r, "worker_call after the worker died");
    cr_assert_lt(took, 1000, "EWORKER after %" PRId64 " ms", took);
    pypool_result_free(&r);
    pypool_checkin(w);
    cr_assert(pt_wait_replaced(p, pid, NEVER_MS), "the dead worker's slot was never replaced");
    rc = pt_call_str(p, "echo", "three", NEVER_MS, &r);
    PT_ASSERT_REPLY(rc, &r, "three", "call after the replacement");
    pypool_result_free(&r);
    cr_assert_eq(pt_stats(p).inflight, 0);
    pt_destroy(p);
}

/* --- many threads, many lanes ---------------------------------------------------------------- */

typedef struct many_arg {
    pypool *p;
    int index;
    int bad;
    char err[256];
} many_arg;

#define MANY_CALLS 4

static void *many_thread(void *arg)
{
    many_arg *a = arg;
    for (int k = 0; k < MANY_CALLS; k++) {
        char tok[48];
        int n = snprintf(tok, sizeof tok, "thread-%d-call-%d", a->index, k);
        pypool_result r;
        int rc = pypool_call(a->p, k % 2 ? "techo" : "aecho", tok, (size_t)n, 30000, &r);
        if (rc != PYPOOL_OK || r.len != (size_t)n || memcmp(r.data, tok, (size_t)n) != 0) {
            if (!a->bad++)
                snprintf(a->err, sizeof a->err, "%s: %s; reply '%.*s' for '%s'",
                         pypool_strerror(rc), pt_msg(&r), (int)r.len, r.data ? (char *)r.data : "",
                         tok);
        }
        pypool_result_free(&r);
    }
    return NULL;
}

Test(pool_mux, threads_256_on_128_lanes)
{
    enum { T = 256 };
    pypool *p = mux_pool(2, 128, 0);
    pypool_stats before = pt_stats(p);
    static many_arg args[T];
    static pthread_t th[T];
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    for (int i = 0; i < T; i++) {
        args[i] = (many_arg){.p = p, .index = i};
        cr_assert_eq(pthread_create(&th[i], &attr, many_thread, &args[i]), 0);
    }
    pthread_attr_destroy(&attr);
    int bad = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        if (args[i].bad && !bad)
            cr_log_error("thread %d: %s", i, args[i].err);
        bad += args[i].bad;
    }
    cr_assert_eq(bad, 0, "%d calls failed or got a wrong reply", bad);
    pypool_stats st = pt_stats(p);
    cr_assert_eq(st.calls - before.calls, (uint64_t)T * MANY_CALLS, "calls counted %" PRIu64,
                 st.calls - before.calls);
    cr_assert_eq(st.restarts, 0);
    cr_assert_eq(st.inflight, 0);
    pt_destroy(p);
}

/* --- config ---------------------------------------------------------------------------------- */

Test(pool_mux, max_inflight_out_of_range_is_einval)
{
    unsigned bad[] = {0, PYPOOL_MAX_INFLIGHT + 1, 1u << 31};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pypool_config cfg;
        tu_config(&cfg, "mux_mod", 1);
        cfg.lazy = true;
        cfg.max_inflight = bad[i];
        pypool *p = NULL;
        int rc = pypool_create(&cfg, &p);
        cr_assert_eq(rc, PYPOOL_EINVAL, "max_inflight %u: %s", bad[i], pypool_strerror(rc));
        cr_assert_null(p);
    }
    pypool_config cfg;
    tu_config(&cfg, "mux_mod", 1);
    cfg.lazy = true;
    cfg.max_inflight = PYPOOL_MAX_INFLIGHT;
    pypool *p = pt_create(&cfg);
    pt_destroy(p);
    pypool_config_init(&cfg);
    cr_assert_eq(cfg.max_inflight, 1, "default max_inflight");
    cr_assert_eq(cfg.cancel_grace_ms, 5000, "default cancel_grace_ms");
}

/* --- a full request pipe ------------------------------------------------------------------- */

typedef struct big_writer {
    pypool *p;
    pid_t tid;
    atomic_int started;
    int rc;
} big_writer;

static void *big_writer_main(void *arg)
{
    big_writer *b = arg;
    size_t len = 4u << 20; /* far more than a pipe holds: the write blocks */
    char *payload = calloc(1, len);
    b->tid = tu_gettid();
    atomic_store(&b->started, 1);
    pypool_result r;
    b->rc = pypool_call(b->p, "echo", payload, len, 20000, &r);
    pypool_result_free(&r);
    free(payload);
    return NULL;
}

static bool pred_started(void *arg)
{
    return atomic_load(&((big_writer *)arg)->started) != 0;
}

/*
 * A caller whose request waits behind another caller's write into a full request pipe still
 * gets its deadline: the worker runs a plain handler (so it reads nothing), a 4 MiB request
 * blocks in the pipe with a 20 s deadline, and a small call with a 300 ms deadline must give up
 * at its own deadline, not the big writer's. Before the fix it waited for the pipe's lock until
 * the big write gave up (20 s).
 */
Test(pool_mux, a_call_behind_a_blocked_request_write_keeps_its_deadline)
{
    pypool *p = mux_pool(1, 4, 60000);
    pt_call_job blocker; /* a plain handler: the worker reads nothing for 5 s */
    pt_call_start(&blocker, p, NULL, "block", "5", NEVER_MS);
    cr_assert(wait_inflight(p, 1), "the blocking call never started");
    pypool_result r;
    int rc;
    big_writer b = {.p = p};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, big_writer_main, &b), 0);
    cr_assert(tu_wait_until(pred_started, &b, NEVER_MS));
    cr_assert(tu_wait_thread_blocked(b.tid, NEVER_MS), "the big write never blocked");
    int64_t t0 = tu_now_ms();
    rc = pypool_call(p, "echo", "small", 5, 300, &r);
    int64_t took = tu_now_ms() - t0;
    PT_ASSERT_RC(rc, PYPOOL_ETIMEDOUT, &r, "the call behind the blocked write");
    pypool_result_free(&r);
    cr_assert_lt(took, 2500, "gave up after %" PRId64 " ms (its deadline was 300 ms)", took);
    pthread_join(t, NULL);
    pt_call_join(&blocker);
    pt_destroy(p);
}

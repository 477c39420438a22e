/*
 * hostcalls.c - ctx.host(name, payload) from handlers into pypool_config.host_fn: from plain,
 * threaded and async handlers (exclusive and multiplexed workers) and from a streaming
 * handler; a host function that fails (pypool.HostError with its .code); a pool without
 * host_fn (HostError); under max_inflight > 1 each host call is served for the right caller
 * (its thread-local value is what its handler sees); host_fn runs on the calling thread.
 * Handlers: tests/modules/mux_mod.py.
 */
#define _GNU_SOURCE
#include "pool_test.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdatomic.h>

TestSuite(pool_hostcalls, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

#define NEVER_MS 20000

/* The calling thread's identity, set before each call; host_fn reads it on its own thread. */
static __thread char tl_name[32];
static __thread bool tl_set;
static __thread pthread_t tl_self;

static atomic_long host_calls;
static atomic_long host_wrong_thread;

static void caller_begin(const char *name)
{
    snprintf(tl_name, sizeof tl_name, "%s", name);
    tl_self = pthread_self();
    tl_set = true;
}

static int reply_bytes(const void *data, size_t len, void **reply, size_t *reply_len)
{
    *reply = malloc(len ? len : 1);
    if (!*reply)
        return 12;
    memcpy(*reply, data, len);
    *reply_len = len;
    return 0;
}

/*
 * "upper": the payload in upper case; "fail": code 42 (with a reply the library must free);
 * "empty": NULL/0; "whoami": the calling thread's name, if host_fn runs on a thread that made
 * a call, else "not-a-caller"; "self": "same" if this is the thread that made the call.
 */
static int host_fn(void *ud, const char *name, const void *payload, size_t len, void **reply,
                   size_t *reply_len)
{
    if (ud != (void *)&host_calls)
        return 99; /* host_ud not passed through */
    atomic_fetch_add(&host_calls, 1);
    if (!tl_set || !pthread_equal(tl_self, pthread_self()))
        atomic_fetch_add(&host_wrong_thread, 1);
    if (strcmp(name, "upper") == 0) {
        int rc = reply_bytes(payload, len, reply, reply_len);
        for (size_t i = 0; rc == 0 && i < len; i++)
            ((char *)*reply)[i] = (char)toupper(((char *)*reply)[i]);
        return rc;
    }
    if (strcmp(name, "fail") == 0) {
        *reply = malloc(8); /* a failing host_fn's reply is freed by the library */
        *reply_len = 8;
        return 42;
    }
    if (strcmp(name, "empty") == 0) {
        *reply = NULL;
        *reply_len = 0;
        return 0;
    }
    if (strcmp(name, "whoami") == 0) {
        const char *who = tl_set ? tl_name : "not-a-caller";
        return reply_bytes(who, strlen(who), reply, reply_len);
    }
    if (strcmp(name, "self") == 0) {
        const char *v = tl_set && pthread_equal(tl_self, pthread_self()) ? "same" : "other";
        return reply_bytes(v, strlen(v), reply, reply_len);
    }
    return 7;
}

static void host_config(pypool_config *cfg, unsigned size, unsigned inflight, bool with_fn)
{
    tu_config(cfg, "mux_mod", size);
    cfg->max_inflight = inflight;
    if (with_fn) {
        cfg->host_fn = host_fn;
        cfg->host_ud = &host_calls;
    }
}

static pypool *host_pool(unsigned size, unsigned inflight, bool with_fn)
{
    pypool_config cfg;
    host_config(&cfg, size, inflight, with_fn);
    return pt_create(&cfg);
}

static void expect_call(pypool *p, const char *method, const char *payload, const char *want)
{
    pypool_result r;
    int rc = pt_call_str(p, method, payload, NEVER_MS, &r);
    char what[160];
    snprintf(what, sizeof what, "%s(%s)", method, payload);
    PT_ASSERT_REPLY(rc, &r, want, what);
    pypool_result_free(&r);
}

static const char *const host_methods[] = {"host_plain", "host_threaded", "host_async"};

Test(pool_hostcalls, from_plain_threaded_and_async_handlers)
{
    caller_begin("main");
    unsigned modes[] = {1, 4};
    for (int m = 0; m < 2; m++) {
        pypool *p = host_pool(1, modes[m], true);
        atomic_store(&host_wrong_thread, 0);
        for (int k = 0; k < 3; k++) {
            const char *meth = host_methods[k];
            if (modes[m] == 1 && k == 1)
                continue; /* threaded handlers are for multiplexed workers */
            long before = atomic_load(&host_calls);
            expect_call(p, meth, "upper|hello", "ok:HELLO");
            expect_call(p, meth, "empty|x", "ok:");
            expect_call(p, meth, "self|", "ok:same");
            expect_call(p, meth, "whoami|", "ok:main");
            cr_assert_eq(atomic_load(&host_calls) - before, 4, "%s: host_fn calls", meth);
        }
        cr_assert_eq(atomic_load(&host_wrong_thread), 0, "host_fn ran on another thread");
        pypool_stats st = pt_stats(p);
        cr_assert_eq(st.restarts, 0);
        pt_destroy(p);
    }
}

Test(pool_hostcalls, failing_host_function_raises_host_error_with_its_code)
{
    caller_begin("main");
    unsigned modes[] = {1, 4};
    for (int m = 0; m < 2; m++) {
        pypool *p = host_pool(1, modes[m], true);
        for (int k = 0; k < 3; k++) {
            if (modes[m] == 1 && k == 1)
                continue;
            expect_call(p, host_methods[k], "fail|x", "HostError:42");
            expect_call(p, host_methods[k], "no-such-name|x", "HostError:7");
        }
        /* uncaught, it is the handler's exception */
        pypool_result r;
        int rc = pt_call_str(p, "host_raise", "fail|x", NEVER_MS, &r);
        PT_ASSERT_RC(rc, PYPOOL_EREMOTE, &r, "host_raise(fail)");
        cr_assert_str_eq(r.error_type, "HostError");
        pypool_result_free(&r);
        /* the worker serves on */
        expect_call(p, "host_plain", "upper|still", "ok:STILL");
        pt_destroy(p);
    }
}

Test(pool_hostcalls, without_host_fn_handlers_get_host_error)
{
    caller_begin("main");
    unsigned modes[] = {1, 4};
    for (int m = 0; m < 2; m++) {
        pypool *p = host_pool(1, modes[m], false);
        long before = atomic_load(&host_calls);
        for (int k = 0; k < 3; k++) {
            if (modes[m] == 1 && k == 1)
                continue;
            pypool_result r;
            int rc = pt_call_str(p, host_methods[k], "upper|x", NEVER_MS, &r);
            PT_ASSERT_RC(rc, PYPOOL_OK, &r, host_methods[k]);
            cr_assert(r.len > 10 && memcmp(r.data, "HostError:", 10) == 0 &&
                          strcmp((char *)r.data, "HostError:0") != 0,
                      "%s without host_fn: '%s'", host_methods[k], (char *)r.data);
            pypool_result_free(&r);
        }
        cr_assert_eq(atomic_load(&host_calls), before, "host_fn of another pool was called");
        expect_call(p, "echo", "fine", "fine");
        pt_destroy(p);
    }
}

Test(pool_hostcalls, from_a_streaming_handler)
{
    caller_begin("main");
    unsigned modes[] = {1, 4};
    for (int m = 0; m < 2; m++) {
        pypool *p = host_pool(1, modes[m], true);
        pypool_stream *s = NULL;
        int rc = pypool_stream_open(p, NULL, "host_gen", "3", 1, NEVER_MS, &s);
        cr_assert_eq(rc, PYPOOL_OK, "stream_open: %s", pypool_last_error());
        for (int i = 0; i < 3; i++) {
            pypool_result c;
            rc = pypool_stream_next(s, NEVER_MS, &c);
            char want[16];
            snprintf(want, sizeof want, "CHUNK%d", i);
            PT_ASSERT_REPLY(rc, &c, want, "host_gen chunk");
            pypool_result_free(&c);
        }
        pypool_result c;
        rc = pypool_stream_next(s, NEVER_MS, &c);
        PT_ASSERT_RC(rc, PYPOOL_DONE, &c, "host_gen end");
        pypool_result_free(&c);
        pypool_stream_close(s);
        /* and joined by pypool_call */
        expect_call(p, "host_gen", "2", "CHUNK0CHUNK1");
        pt_destroy(p);
    }
}

/* --- routing under max_inflight > 1 ------------------------------------------------------- */

typedef struct who_job {
    pypool *p;
    const char *method;
    char payload[64];
    char name[32];
    int rc;
    char reply[128];
    char err[256];
} who_job;

static void *who_thread(void *arg)
{
    who_job *j = arg;
    caller_begin(j->name);
    pypool_result r;
    j->rc = pypool_call(j->p, j->method, j->payload, strlen(j->payload), 30000, &r);
    snprintf(j->reply, sizeof j->reply, "%.*s", (int)r.len, r.data ? (char *)r.data : "");
    snprintf(j->err, sizeof j->err, "%s", pt_msg(&r));
    pypool_result_free(&r);
    return NULL;
}

/* n concurrent calls meet at a rendezvous in one worker, then each asks the host "whoami":
 * every host call must be served on its own caller's thread. */
static void routed(const char *method, unsigned n)
{
    pypool *p = host_pool(1, n, true);
    atomic_store(&host_wrong_thread, 0);
    who_job *jobs = calloc(n, sizeof *jobs);
    pthread_t *th = calloc(n, sizeof *th);
    cr_assert(jobs && th);
    for (unsigned i = 0; i < n; i++) {
        jobs[i].p = p;
        jobs[i].method = method;
        snprintf(jobs[i].name, sizeof jobs[i].name, "caller-%u", i);
        snprintf(jobs[i].payload, sizeof jobs[i].payload, "who:%u:tok%u", n, i);
        cr_assert_eq(pthread_create(&th[i], NULL, who_thread, &jobs[i]), 0);
    }
    for (unsigned i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        char want[64];
        snprintf(want, sizeof want, "tok%u=caller-%u", i, i);
        cr_assert_eq(jobs[i].rc, PYPOOL_OK, "%s call %u: %s (%s)", method, i,
                     pypool_strerror(jobs[i].rc), jobs[i].err);
        cr_assert_str_eq(jobs[i].reply, want, "%s call %u", method, i);
    }
    cr_assert_eq(atomic_load(&host_wrong_thread), 0, "host_fn ran on a thread not its caller's");
    free(jobs);
    free(th);
    pt_destroy(p);
}

Test(pool_hostcalls, async_host_calls_are_routed_to_their_callers)
{
    routed("host_rv_async", 16);
}

Test(pool_hostcalls, threaded_host_calls_are_routed_to_their_callers)
{
    routed("host_rv_threaded", 16);
}

/* --- a host call of a cancelled call ------------------------------------------------------- */

/* A pool of one worker with 4 lanes whose cancelled calls are not killed for a minute: a
 * host call left unanswered would hold its lane that long. */
static pypool *refusal_pool(void)
{
    pypool_config cfg;
    host_config(&cfg, 1, 4, true);
    cfg.cancel_grace_ms = 60000;
    return pt_create(&cfg);
}

static bool pred_no_inflight(void *arg)
{
    return pt_stats((pypool *)arg).inflight == 0;
}

/*
 * A multiplexed call times out, and only then does its (threaded) handler call the host: the
 * pool must answer that HostCall with an error (its caller is gone), or the handler waits for
 * ever and only the grace kill (60 s here) frees the lane. Before the fix the HostCall was
 * dropped with the orphaned lane's queue and the lane stayed in flight.
 */
/*
 * The handler of `what` (a call or stream whose caller left, on worker pid) noted key's host
 * call: it must have got HostError(-3) from the pool, with its lane freed, the worker kept and
 * host_fn never run.
 */
static void expect_refused(pypool *p, const char *key, int pid, long calls_before, const char *what)
{
    cr_assert(tu_wait_until(pred_no_inflight, p, NEVER_MS),
              "%s: its host call was never answered, its lane is still in flight", what);
    char noted[64];
    snprintf(noted, sizeof noted, "%s=HostError:-3", key);
    pypool_result r;
    int rc = pt_call_str(p, "was_cancelled", noted, NEVER_MS, &r);
    PT_ASSERT_REPLY(rc, &r, "yes", "the handler got HostError(-3) for its host call");
    cr_assert_eq(r.worker_pid, pid, "the worker was replaced");
    pypool_result_free(&r);
    cr_assert_eq(atomic_load(&host_calls), calls_before, "host_fn ran for %s", what);
}

Test(pool_hostcalls, a_host_call_of_a_cancelled_call_is_refused_not_left_waiting)
{
    pypool *p = refusal_pool();
    caller_begin("caller");
    long calls_before = atomic_load(&host_calls);
    pypool_result r;
    int rc = pypool_call(p, "host_after_cancel", "k1", 2, 200, &r);
    PT_ASSERT_RC(rc, PYPOOL_ETIMEDOUT, &r, "the call that is cancelled");
    int pid = r.worker_pid;
    pypool_result_free(&r);
    expect_refused(p, "k1", pid, calls_before, "a cancelled call");
    cr_assert_eq(pt_stats(p).restarts, 0);
    pt_destroy(p);
}

static bool pred_host_call_announced(void *arg)
{
    (void)arg;
    return tu_log_contains("gen_then_host k2: calling the host");
}

/*
 * The same for a stream closed while its handler's host call is on its way or already queued
 * on the stream's lane (never read by the consumer): closing must answer it. Before the fix a
 * queued HostCall was dropped with the lane's queue and the handler waited until the grace
 * kill.
 */
Test(pool_hostcalls, closing_a_stream_answers_its_pending_host_call)
{
    pypool *p = refusal_pool();
    caller_begin("caller");
    long calls_before = atomic_load(&host_calls);
    pypool_stream *st;
    int rc = pypool_stream_open(p, NULL, "gen_then_host", "k2", 2, NEVER_MS, &st);
    cr_assert_eq(rc, PYPOOL_OK, "open: %s", pypool_last_error());
    pypool_result r;
    rc = pypool_stream_next(st, NEVER_MS, &r);
    PT_ASSERT_REPLY(rc, &r, "one", "first chunk");
    int pid = r.worker_pid;
    pypool_result_free(&r);
    cr_assert(tu_wait_until(pred_host_call_announced, NULL, NEVER_MS));
    pypool_stream_close(st);
    expect_refused(p, "k2", pid, calls_before, "a closed stream");
    pt_destroy(p);
}

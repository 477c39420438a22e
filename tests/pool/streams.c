/*
 * streams.c - pypool_stream_open/next/close, on exclusive workers (max_inflight 1) and on lanes
 * of multiplexed ones (max_inflight 4): 10,000 chunks in order and complete; async generators;
 * closing an endless stream after 3 chunks (the same worker serves the next call at once);
 * an error mid-stream (PYPOOL_EREMOTE after k chunks, then the same code again); a per-chunk
 * timeout that leaves the stream usable; a slow consumer of an endless stream of 64 KiB chunks
 * (bytes between producer and consumer, and both RSS, stay bounded); a plain handler opened as a
 * stream (one chunk, then PYPOOL_DONE); a streaming handler called with pypool_call (chunks
 * joined); the worker killed mid-stream (PYPOOL_EWORKER, no hang). Handlers: mux_mod.py.
 */
#define _GNU_SOURCE
#include "pool_test.h"

#include <inttypes.h>
#include <unistd.h>

TestSuite(pool_streams, .init = tu_log_reset, .fini = pt_teardown, .timeout = 60);

#define NEVER_MS 20000 /* bound of a wait for an event: "never" */

static const unsigned modes[] = {1, 4}; /* max_inflight: exclusive, multiplexed */
#define NMODES (sizeof modes / sizeof modes[0])

static pypool *stream_pool(unsigned inflight)
{
    pypool_config cfg;
    tu_config(&cfg, "mux_mod", 1);
    cfg.max_inflight = inflight;
    return pt_create(&cfg);
}

static pypool_stream *open_stream(pypool *p, const char *method, const char *payload)
{
    pypool_stream *s = NULL;
    int rc = pypool_stream_open(p, NULL, method, payload, strlen(payload), 60000, &s);
    cr_assert_eq(rc, PYPOOL_OK, "stream_open(%s, %s): %s: %s", method, payload, pypool_strerror(rc),
                 pypool_last_error());
    cr_assert_not_null(s);
    return s;
}

/* Reads the next chunk; asserts PYPOOL_OK and that it equals want (NULL: any). Returns the
 * serving pid. */
static int expect_chunk(pypool_stream *s, const char *want, const char *what)
{
    pypool_result c;
    int rc = pypool_stream_next(s, NEVER_MS, &c);
    if (want)
        PT_ASSERT_REPLY(rc, &c, want, what);
    else
        PT_ASSERT_RC(rc, PYPOOL_OK, &c, what);
    int pid = c.worker_pid;
    pypool_result_free(&c);
    return pid;
}

static void expect_done(pypool_stream *s, const char *what)
{
    for (int i = 0; i < 2; i++) { /* and it keeps saying so */
        pypool_result c;
        int rc = pypool_stream_next(s, NEVER_MS, &c);
        PT_ASSERT_RC(rc, PYPOOL_DONE, &c, what);
        cr_assert_eq(c.len, 0, "%s: DONE with %zu bytes", what, c.len);
        pypool_result_free(&c);
    }
}

static int worker_pid_now(pypool *p, int64_t timeout_ms)
{
    pypool_result r;
    int rc = pt_call_str(p, "pid", "", timeout_ms, &r);
    PT_ASSERT_RC(rc, PYPOOL_OK, &r, "pid");
    int pid = atoi((const char *)r.data);
    pypool_result_free(&r);
    return pid;
}

/* --- order and completeness ---------------------------------------------------------------- */

static void count_stream(const char *method, int n)
{
    for (size_t m = 0; m < NMODES; m++) {
        pypool *p = stream_pool(modes[m]);
        char arg[16];
        snprintf(arg, sizeof arg, "%d", n);
        pypool_stream *s = open_stream(p, method, arg);
        for (int i = 0; i < n; i++) {
            pypool_result c;
            int rc = pypool_stream_next(s, NEVER_MS, &c);
            char want[16];
            snprintf(want, sizeof want, "%d", i);
            if (rc != PYPOOL_OK || c.len != strlen(want) || memcmp(c.data, want, c.len) != 0)
                cr_assert_fail("max_inflight %u, %s chunk %d: %s (%s), '%.*s'", modes[m], method, i,
                               pypool_strerror(rc), pt_msg(&c), (int)c.len,
                               c.data ? (char *)c.data : "");
            pypool_result_free(&c);
        }
        expect_done(s, method);
        pypool_stream_close(s);
        /* the worker is back: a call that takes an idle worker or fails at once works */
        pypool_result r;
        int rc = pt_call_str(p, "echo", "after", 0, &r);
        PT_ASSERT_REPLY(rc, &r, "after", "call after the stream");
        pypool_result_free(&r);
        pypool_stats st = pt_stats(p);
        cr_assert_eq(st.restarts, 0);
        cr_assert_eq(st.inflight, 0);
        pt_destroy(p);
    }
}

Test(pool_streams, ten_thousand_chunks_in_order)
{
    count_stream("gen_count", 10000);
}

Test(pool_streams, async_generator_streams)
{
    count_stream("agen_count", 2000);
}

/* --- close early ------------------------------------------------------------------------------ */

static void close_after_three(const char *method)
{
    for (size_t m = 0; m < NMODES; m++) {
        pypool *p = stream_pool(modes[m]);
        int pid0 = worker_pid_now(p, NEVER_MS);
        pypool_stats before = pt_stats(p);
        pypool_stream *s = open_stream(p, method, "");
        cr_assert_eq(expect_chunk(s, "0", method), pid0);
        expect_chunk(s, "1", method);
        expect_chunk(s, "2", method);
        pypool_stream_close(s);
        /* at once: timeout 0 takes an idle worker (or free lane) or fails */
        int pid1 = worker_pid_now(p, 0);
        cr_assert_eq(pid1, pid0, "max_inflight %u: %s: the worker was replaced (%d -> %d)",
                     modes[m], method, pid0, pid1);
        pypool_stats st = pt_stats(p);
        cr_assert_eq(st.restarts, 0, "max_inflight %u: restarts", modes[m]);
        cr_assert_eq(st.cancels, before.cancels + 1, "max_inflight %u: cancels %" PRIu64, modes[m],
                     st.cancels);
        /* and keeps serving streams */
        s = open_stream(p, "gen_count", "3");
        expect_chunk(s, "0", "second stream");
        expect_chunk(s, "1", "second stream");
        expect_chunk(s, "2", "second stream");
        expect_done(s, "second stream");
        pypool_stream_close(s);
        cr_assert_eq(worker_pid_now(p, 0), pid0);
        pt_destroy(p);
    }
}

Test(pool_streams, close_after_three_chunks_of_an_endless_generator)
{
    close_after_three("gen_endless");
}

Test(pool_streams, close_after_three_chunks_of_an_endless_async_generator)
{
    close_after_three("agen_endless");
}

Test(pool_streams, close_null_and_close_finished_stream)
{
    pypool_stream_close(NULL);
    pypool *p = stream_pool(1);
    pypool_stream *s = open_stream(p, "gen_count", "1");
    expect_chunk(s, "0", "gen_count 1");
    expect_done(s, "gen_count 1");
    pypool_stream_close(s);
    pt_destroy(p);
}

/* --- errors ------------------------------------------------------------------------------------
 */

Test(pool_streams, error_mid_stream_after_k_chunks)
{
    for (size_t m = 0; m < NMODES; m++) {
        pypool *p = stream_pool(modes[m]);
        int pid0 = worker_pid_now(p, NEVER_MS);
        pypool_stream *s = open_stream(p, "gen_fail", "5");
        for (int i = 0; i < 5; i++) {
            char want[8];
            snprintf(want, sizeof want, "%d", i);
            expect_chunk(s, want, "gen_fail");
        }
        for (int k = 0; k < 2; k++) { /* the final code, then the same again */
            pypool_result c;
            int rc = pypool_stream_next(s, NEVER_MS, &c);
            PT_ASSERT_RC(rc, PYPOOL_EREMOTE, &c, "gen_fail end");
            cr_assert_not_null(c.error_message);
            cr_assert(strstr(c.error_message, "boom after 5"), "message '%s'", c.error_message);
            if (k == 0) {
                cr_assert_not_null(c.error_type);
                cr_assert_str_eq(c.error_type, "ValueError");
            }
            pypool_result_free(&c);
        }
        pypool_stream_close(s);
        cr_assert_eq(worker_pid_now(p, 0), pid0, "the worker stays after a remote error");
        pypool_stats st = pt_stats(p);
        cr_assert_eq(st.remote_errors, 1, "remote_errors %" PRIu64, st.remote_errors);
        pt_destroy(p);
    }
}

/* --- per-chunk timeout ---------------------------------------------------------------------- */

Test(pool_streams, chunk_timeout_then_resume)
{
    for (size_t m = 0; m < NMODES; m++) {
        pypool *p = stream_pool(modes[m]);
        char dir[] = "/tmp/pypool-streams-XXXXXX";
        cr_assert_not_null(mkdtemp(dir));
        char gate[96];
        snprintf(gate, sizeof gate, "%s/gate", dir);
        pypool_stream *s = open_stream(p, "gen_gated", gate);
        expect_chunk(s, "first", "gen_gated");
        /* the generator waits for the gate: no chunk can come */
        pypool_result c;
        int rc = pypool_stream_next(s, 100, &c);
        PT_ASSERT_RC(rc, PYPOOL_ETIMEDOUT, &c, "next before the gate opened");
        pypool_result_free(&c);
        rc = pypool_stream_next(s, 0, &c);
        PT_ASSERT_RC(rc, PYPOOL_ETIMEDOUT, &c, "next with timeout 0");
        pypool_result_free(&c);
        FILE *f = fopen(gate, "w");
        cr_assert_not_null(f);
        fclose(f);
        rc = pypool_stream_next(s, -1, &c);
        PT_ASSERT_REPLY(rc, &c, "second", "next after the gate opened");
        pypool_result_free(&c);
        expect_done(s, "gen_gated");
        pypool_stream_close(s);
        unlink(gate);
        rmdir(dir);
        pypool_stats st = pt_stats(p);
        cr_assert_eq(st.restarts, 0);
        pt_destroy(p);
    }
}

/* --- slow consumer --------------------------------------------------------------------------- */

/* A field of /proc/<pid>/status in kB, or a line of /proc/<pid>/io; -1 if unreadable. */
static int64_t proc_field(pid_t pid, const char *file, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int64_t v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            v = strtoll(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

#define CHUNK       (64 * 1024)
#define BOUND_BYTES (32ll << 20) /* between producer and consumer (window: 4 MiB + a pipe) */
#define RSS_GROWTH  (96ll << 20) /* either process's RSS growth */

typedef struct slow_ctx {
    pid_t worker;
    int64_t wchar0, consumed, host_rss0, worker_rss0;
    int64_t worst_between, worst_host, worst_worker;
    unsigned inflight;
} slow_ctx;

/* Checks the bounds now; false (after a failed assert) never returns. */
static void check_bounds(slow_ctx *x)
{
    int64_t wchar = proc_field(x->worker, "io", "wchar");
    if (wchar >= 0) {
        int64_t between = wchar - x->wchar0 - x->consumed;
        if (between > x->worst_between)
            x->worst_between = between;
        cr_assert_leq(between, BOUND_BYTES,
                      "max_inflight %u: %" PRId64 " bytes written by the worker and not read "
                      "by the consumer",
                      x->inflight, between);
    }
    int64_t host = proc_field(getpid(), "status", "VmRSS") * 1024 - x->host_rss0;
    int64_t worker = proc_field(x->worker, "status", "VmRSS") * 1024 - x->worker_rss0;
    if (host > x->worst_host)
        x->worst_host = host;
    if (worker > x->worst_worker)
        x->worst_worker = worker;
    cr_assert_leq(host, RSS_GROWTH, "max_inflight %u: host RSS grew by %" PRId64 " bytes",
                  x->inflight, host);
    cr_assert_leq(worker, RSS_GROWTH, "max_inflight %u: worker RSS grew by %" PRId64 " bytes",
                  x->inflight, worker);
}

/* Waits until the producer stalls (its written byte count stops moving over a few samples),
 * checking the bounds all along: an unbounded pipeline never stalls and fails a bound. */
static void wait_stalled(slow_ctx *x)
{
    int64_t until = tu_now_ms() + NEVER_MS;
    int64_t last = -2;
    int same = 0;
    while (same < 3) {
        check_bounds(x);
        int64_t wchar = proc_field(x->worker, "io", "wchar");
        if (wchar < 0)
            return; /* no /proc/<pid>/io here: the RSS bounds still hold */
        same = wchar == last ? same + 1 : 0;
        last = wchar;
        cr_assert_lt(tu_now_ms(), until, "max_inflight %u: the producer never stalled",
                     x->inflight);
        tu_sleep_ms(20);
    }
}

Test(pool_streams, slow_consumer_keeps_memory_bounded, .timeout = 90)
{
    for (size_t m = 0; m < NMODES; m++) {
        pypool *p = stream_pool(modes[m]);
        slow_ctx x = {.inflight = modes[m]};
        x.worker = worker_pid_now(p, NEVER_MS);
        x.host_rss0 = proc_field(getpid(), "status", "VmRSS") * 1024;
        x.worker_rss0 = proc_field(x.worker, "status", "VmRSS") * 1024;
        cr_assert_gt(x.host_rss0, 0, "no VmRSS in /proc/self/status");
        x.wchar0 = proc_field(x.worker, "io", "wchar");
        char arg[16];
        snprintf(arg, sizeof arg, "%d", CHUNK);
        pypool_stream *s = open_stream(p, "gen_endless", arg);
        for (int i = 0; i < 400; i++) {
            if (i < 12) /* slowly: one chunk each time the producer has stalled */
                wait_stalled(&x);
            pypool_result c;
            int rc = pypool_stream_next(s, NEVER_MS, &c);
            PT_ASSERT_RC(rc, PYPOOL_OK, &c, "gen_endless 64 KiB");
            char head[16];
            int hl = snprintf(head, sizeof head, "%d", i);
            cr_assert_eq(c.len, CHUNK, "chunk %d of %zu bytes", i, c.len);
            cr_assert(memcmp(c.data, head, (size_t)hl) == 0 && c.data[hl] == 'x',
                      "chunk %d out of order", i);
            /* what the worker wrote for it: the chunk and a few bytes of frame */
            x.consumed += (int64_t)c.len;
            pypool_result_free(&c);
        }
        check_bounds(&x);
        cr_log_info("max_inflight %u: worst %" PRId64 " bytes between producer and consumer, "
                    "RSS growth host %" PRId64 " worker %" PRId64,
                    modes[m], x.worst_between, x.worst_host, x.worst_worker);
        pypool_stream_close(s);
        cr_assert_eq(worker_pid_now(p, NEVER_MS), x.worker, "closing replaced the worker");
        pt_destroy(p);
    }
}

/* --- one chunk / joined chunks ------------------------------------------------------------------
 */

Test(pool_streams, plain_handler_opened_as_a_stream_gives_one_chunk)
{
    for (size_t m = 0; m < NMODES; m++) {
        pypool *p = stream_pool(modes[m]);
        pypool_stream *s = open_stream(p, "echo", "hello");
        expect_chunk(s, "hello", "echo as a stream");
        expect_done(s, "echo as a stream");
        pypool_stream_close(s);
        s = open_stream(p, "aecho", "");
        expect_chunk(s, "", "empty aecho as a stream");
        expect_done(s, "aecho as a stream");
        pypool_stream_close(s);
        s = open_stream(p, "raise_value", "");
        pypool_result c;
        int rc = pypool_stream_next(s, NEVER_MS, &c);
        PT_ASSERT_RC(rc, PYPOOL_EREMOTE, &c, "raise_value as a stream");
        cr_assert_str_eq(c.error_type, "ValueError");
        pypool_result_free(&c);
        rc = pypool_stream_next(s, NEVER_MS, &c);
        PT_ASSERT_RC(rc, PYPOOL_EREMOTE, &c, "raise_value as a stream, again");
        pypool_result_free(&c);
        pypool_stream_close(s);
        pt_destroy(p);
    }
}

Test(pool_streams, streaming_handler_called_with_pypool_call_joins_chunks)
{
    for (size_t m = 0; m < NMODES; m++) {
        pypool *p = stream_pool(modes[m]);
        pypool_result r;
        int rc = pt_call_str(p, "gen_count", "5", NEVER_MS, &r);
        PT_ASSERT_REPLY(rc, &r, "01234", "gen_count 5 by pypool_call");
        pypool_result_free(&r);
        rc = pt_call_str(p, "agen_count", "12", NEVER_MS, &r);
        PT_ASSERT_REPLY(rc, &r, "01234567891011", "agen_count 12 by pypool_call");
        pypool_result_free(&r);
        rc = pt_call_str(p, "gen_count", "0", NEVER_MS, &r);
        PT_ASSERT_REPLY(rc, &r, "", "an empty stream by pypool_call");
        pypool_result_free(&r);
        rc = pt_call_str(p, "gen_fail", "3", NEVER_MS, &r);
        PT_ASSERT_RC(rc, PYPOOL_EREMOTE, &r, "gen_fail by pypool_call");
        cr_assert_str_eq(r.error_type, "ValueError");
        pypool_result_free(&r);
        pypool_stats st = pt_stats(p);
        cr_assert_eq(st.calls, 4, "calls %" PRIu64, st.calls);
        cr_assert_eq(st.remote_errors, 1);
        pt_destroy(p);
    }
}

/* --- the worker dies mid-stream ------------------------------------------------------------------
 */

Test(pool_streams, worker_killed_mid_stream_gives_eworker)
{
    for (size_t m = 0; m < NMODES; m++) {
        pypool *p = stream_pool(modes[m]);
        pypool_stream *s = open_stream(p, "gen_endless", "");
        int pid = expect_chunk(s, "0", "gen_endless");
        expect_chunk(s, "1", "gen_endless");
        cr_assert_eq(kill(pid, SIGKILL), 0);
        /* chunks already on their way may still come; then EWORKER */
        int rc = PYPOOL_OK;
        long got = 0;
        pypool_result c;
        for (;;) {
            rc = pypool_stream_next(s, NEVER_MS, &c);
            if (rc != PYPOOL_OK)
                break;
            pypool_result_free(&c);
            got++;
            cr_assert_lt(got, 10000000, "chunks keep coming from a killed worker");
        }
        PT_ASSERT_RC(rc, PYPOOL_EWORKER, &c, "next after the kill");
        pypool_result_free(&c);
        rc = pypool_stream_next(s, NEVER_MS, &c);
        PT_ASSERT_RC(rc, PYPOOL_EWORKER, &c, "next again");
        pypool_result_free(&c);
        pypool_stream_close(s);
        cr_assert(pt_wait_replaced(p, pid, NEVER_MS), "the killed worker was not replaced");
        int pid1 = worker_pid_now(p, NEVER_MS);
        cr_assert_neq(pid1, pid);
        pt_destroy(p);
    }
}

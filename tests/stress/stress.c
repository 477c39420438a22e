/*
 * stress.c - the chaos stress program: proves "no lost or mismatched reply under any fault" under
 * ThreadSanitizer (Criterion cannot start under TSan, so this is plain C).
 *
 * In one run, concurrently:
 *   - N client threads (default 64) calling the pool with random payloads, each reply checked
 *     byte for byte against what that thread sent; random deadlines 0..200 ms; handlers that
 *     echo, sleep, raise and exit; session calls with a per-session counter whose sequence is
 *     checked; explicit checkout / worker_call / checkin sequences;
 *   - a chaos thread that SIGKILLs a random live worker every 20..100 ms;
 *   - a stats reader checking the snapshot's invariants in a loop.
 * Then: chaos stops, clients pause, and the pool must come back to full size (waited for as an
 * event, up to RECOVERY_MS, a bound for "never"; the time it took is printed); clients resume
 * and, once they are making calls again, pypool_destroy runs while calls are still in flight.
 *
 * --max-inflight N (N > 1) runs the same chaos on multiplexed workers (module mux_mod, which
 * also has echo_mod's handlers): up to N calls share a worker, so a SIGKILL or an exit fails
 * several calls at once and retries the unread ones elsewhere, and a call past its deadline is
 * cancelled rather than killed (cancel_grace_ms 500 kills the worker of a plain sleep that runs
 * on). Added operations: async and threaded echoes (the same self-identifying payloads, checked
 * byte for byte, so a reply routed to the wrong lane is caught), async sleeps, and session
 * calls through an async counter that awaits between its read and its write. A timed-out call
 * may or may not have counted by the time it was cancelled, so the session check allows the
 * next value to skip one per timed-out call in between. Once clients park, every lane must
 * come free (stats.inflight 0: no orphan outlives its final reply or its grace kill).
 *
 * Fails (exit 1) on: a reply that is not the caller's own, an error code outside the documented
 * set for the situation, a call returning later than its deadline plus --tolerance-ms plus what
 * the machine's scheduler itself delayed (measured while it happens, see "scheduling-delay
 * probe"; a loaded or pinned machine is not a library fault), a pool that
 * never comes back to full size, a child left behind (alive or zombie), or a different number of
 * open fds / threads after destroy than before create. TSan reports end the run on their own
 * (TSAN_OPTIONS=halt_on_error=1). A watchdog aborts with the current phase if the run hangs.
 *
 * How destroy-while-in-flight is made safe for the test itself: a call that *begins* after
 * pypool_destroy has returned and freed the pool would be a use-after-free in the test, not in
 * the library. So before destroy the main thread checks out one worker (a "guard"); the pool's
 * memory lives until that worker's checkin (pypool.h: checkin stays valid after destroy), which
 * happens only after every client thread has been joined. Late callers thus get
 * PYPOOL_ESHUTDOWN from a live pool, and destroy also runs with a worker checked out.
 *
 * Usage: pypool_stress [--seconds N] [--threads N] [--workers N] [--seed N] [--tolerance-ms N]
 *                      [--chaos-min-live N] [--max-inflight N] [--verbose]
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "pypool.h"
#include "testutil.h"

#ifndef PYPOOL_TEST_MODULES
#error "PYPOOL_TEST_MODULES must point at tests/modules"
#endif
#ifndef PYPOOL_TEST_PYTHON
#define PYPOOL_TEST_PYTHON NULL
#endif

#define MAX_THREADS       512
#define MAX_DEADLINE_MS   200
#define CALL_TIMEOUT_MS   1000 /* pool default: the budget of timeout 0 (no-wait) calls */
#define SHUTDOWN_GRACE_MS 1000
#define RECOVERY_MS       30000 /* "never": recovery is waited for as an event */
#define EVENT_WAIT_MS     30000 /* bound of the other waits for an event */
#define PAYLOAD_MAX       (192 * 1024)
#define HEADER_LEN        16
#define SESSIONS_PER_THR  2
#define MAX_FAIL_PRINTS   40
#define CANCEL_GRACE_MS   500 /* --max-inflight: a cancelled call running this long is killed */

/* ---- options and shared state ---------------------------------------------------------- */

static struct {
    int seconds;
    int threads;
    int workers;
    uint64_t seed;
    int tolerance_ms;
    int chaos_min_live;
    int max_inflight;
    bool verbose;
} opt = {10, 64, 4, 0, 250, 1, 1, false};

static pypool *pool;
static atomic_int stop_clients;               /* clients: start no new operation, exit */
static atomic_int pause_clients;              /* clients: park until cleared */
static atomic_int paused_count;               /* clients parked */
static atomic_int stop_chaos;                 /* chaos thread: exit */
static atomic_int stop_stats;                 /* stats thread: exit */
static atomic_int shutting_down;              /* main is about to call / is in pypool_destroy */
static atomic_int failures;                   /* check failures */
static atomic_long lateness_max;              /* worst (elapsed - budget) seen, ms */
static atomic_long kills;                     /* SIGKILLs sent by chaos */
static atomic_long kills_skipped;             /* chaos ticks that found too few live workers */
static atomic_long stats_reads;               /* snapshots checked */
static atomic_long log_lines;                 /* lines the pool logged */
static atomic_long ops_total;                 /* operations the clients completed */
static _Atomic(const char *) phase = "start"; /* what main is doing (messages, watchdog) */

static pthread_mutex_t pause_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pause_cv = PTHREAD_COND_INITIALIZER;

/* Outcome counters per operation kind, indexed by -error code (0 = OK). */
enum op_kind {
    OP_ECHO,
    OP_SLEEP,
    OP_RAISE,
    OP_EXIT,
    OP_SESSION,
    OP_CHECKOUT,
    OP_WCALL,
    OP_AECHO, /* --max-inflight only: async, threaded echo, async sleep */
    OP_TECHO,
    OP_ASLEEP,
    OP_KINDS
};
static const char *op_names[OP_KINDS] = {"echo",     "sleep",       "raise", "exit",  "session",
                                         "checkout", "worker_call", "aecho", "techo", "asleep"};
#define NCODES 12
static atomic_long outcomes[OP_KINDS][NCODES];

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    int n = atomic_fetch_add(&failures, 1);
    if (n >= MAX_FAIL_PRINTS)
        return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fprintf(stderr, "stress: FAIL [%s] %s\n", atomic_load(&phase), buf);
}

static void sleep_ms(int64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* xorshift64*, one state per thread. */
static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static uint64_t rnd_range(uint64_t *s, uint64_t lo, uint64_t hi) /* inclusive */
{
    return lo + rnd(s) % (hi - lo + 1);
}

static void count_outcome(int kind, int rc)
{
    int idx = rc <= 0 && rc > -NCODES ? -rc : NCODES - 1;
    atomic_fetch_add(&outcomes[kind][idx], 1);
}

/* ---- /proc accounting ------------------------------------------------------------------- */

/* Children of this process (alive or zombie): fills pids/states, returns how many. */
static int list_children(pid_t *pids, char *states, int max)
{
    int n = tu_list_children(pids, max);
    for (int i = 0; i < n && i < max; i++)
        states[i] = tu_pid_state(pids[i]);
    return n;
}

/* ---- the pool's log: counted, shown with --verbose ---------------------------------------- */

static void log_cb(void *ud, int level, int worker_pid, const char *line)
{
    (void)ud;
    atomic_fetch_add(&log_lines, 1);
    if (opt.verbose && level <= PYPOOL_LOG_WARN)
        fprintf(stderr, "[pool %d] %s\n", worker_pid, line);
}

/* ---- client threads ---------------------------------------------------------------------- */

typedef struct session_track {
    char id[64];
    unsigned gen; /* bumps when the id is retired */
    bool fresh;   /* no state expected in the worker: the next reply must be 1 */
    long last;    /* last counter value received */
    long unsure;  /* --max-inflight: calls since then that timed out (each may have counted) */
} session_track;

typedef struct client {
    int index;
    pthread_t thread;
    uint64_t rng;
    uint64_t seq;
    uint8_t *payload;
    atomic_int in_call; /* inside a library call right now (destroy-in-flight accounting) */
    session_track sessions[SESSIONS_PER_THR];
    long ops;
} client;

static client *clients;

static bool code_in(int rc, const int *set, int n)
{
    for (int i = 0; i < n; i++) {
        if (rc == set[i])
            return true;
    }
    return rc == PYPOOL_ESHUTDOWN && atomic_load(&shutting_down);
}

/* Checks a call's duration against its budget (deadline + tolerance). */
/*
 * ---- scheduling-delay probe -------------------------------------------------------------------
 * A call can return later than its deadline for two reasons: the library did not enforce it
 * (what the check is for), or the machine did not run the threads that enforce it and return
 * (64 clients on a loaded or pinned 2-core machine). The probe thread measures the second while
 * it happens: it sleeps 1 ms at a time and records how late each wake-up was, in every 50 ms
 * bucket of the run its sleep spanned. A call later than deadline + tolerance is a suspect; it
 * is judged once the probe has woken after the call ended (so the probe saw the whole call):
 * it fails if it was later than deadline + tolerance + twice the worst wake-up delay around it
 * (two wake-ups in series: the thread enforcing the deadline, then the caller).
 */
#define PROBE_BUCKET_MS 50
static int64_t probe_t0;        /* ms, start of bucket 0 */
static int probe_nbuckets;      /* buckets covering the run (and the watchdog's limit) */
static atomic_long *probe_late; /* worst wake-up delay per bucket, ms */
static atomic_llong probe_seen; /* the probe's last wake-up, ms */
static atomic_int stop_probe;
static atomic_long explained_max; /* worst lateness the probe explained, ms */

static int probe_bucket(int64_t ms)
{
    int64_t b = (ms - probe_t0) / PROBE_BUCKET_MS;
    return b < 0 ? 0 : b >= probe_nbuckets ? probe_nbuckets - 1 : (int)b;
}

static void *probe_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop_probe)) {
        int64_t t = tu_now_ms();
        sleep_ms(1);
        int64_t woke = tu_now_ms();
        long late = (long)(woke - t - 1);
        for (int b = probe_bucket(t); b <= probe_bucket(woke); b++) {
            long prev = atomic_load(&probe_late[b]);
            while (late > prev && !atomic_compare_exchange_weak(&probe_late[b], &prev, late))
                ;
        }
        atomic_store(&probe_seen, woke);
    }
    return NULL;
}

/* Worst wake-up delay the probe saw between t0 and t1 (one bucket of margin each side). */
static long probe_worst(int64_t t0, int64_t t1)
{
    long worst = 0;
    for (int b = probe_bucket(t0 - PROBE_BUCKET_MS); b <= probe_bucket(t1 + PROBE_BUCKET_MS); b++) {
        long v = atomic_load(&probe_late[b]);
        if (v > worst)
            worst = v;
    }
    return worst;
}

typedef struct suspect {
    int thread;
    const char *what, *phase;
    int64_t t0, t1, budget_ms;
    int rc;
} suspect;

static pthread_mutex_t suspects_mu = PTHREAD_MUTEX_INITIALIZER;
static suspect *suspects;
static size_t nsuspects, suspects_cap;
static atomic_long suspects_total;

static void max_store(atomic_long *m, long v)
{
    long prev = atomic_load(m);
    while (v > prev && !atomic_compare_exchange_weak(m, &prev, v))
        ;
}

/* Judges the suspects the probe has seen past (all of them if `all`: the probe has stopped). */
static void judge_suspects(bool all)
{
    int64_t seen = atomic_load(&probe_seen);
    pthread_mutex_lock(&suspects_mu);
    size_t keep = 0;
    for (size_t i = 0; i < nsuspects; i++) {
        suspect *x = &suspects[i];
        if (!all && x->t1 + PROBE_BUCKET_MS >= seen) {
            suspects[keep++] = *x;
            continue;
        }
        int64_t elapsed = x->t1 - x->t0;
        long worst = probe_worst(x->t0, x->t1);
        int64_t allowed = x->budget_ms + opt.tolerance_ms + 2 * worst;
        if (elapsed > allowed)
            fail("thread %d: %s returned after %" PRId64 " ms, deadline %" PRId64
                 " ms + tolerance %d ms + 2 x %ld ms the scheduler delayed wake-ups then (rc %s; "
                 "during %s)",
                 x->thread, x->what, elapsed, x->budget_ms, opt.tolerance_ms, worst,
                 pypool_strerror(x->rc), x->phase);
        else
            max_store(&explained_max, (long)(elapsed - x->budget_ms));
    }
    nsuspects = keep;
    pthread_mutex_unlock(&suspects_mu);
}

static void check_time(const client *c, const char *what, int64_t t0, int64_t budget_ms, int rc)
{
    int64_t t1 = tu_now_ms();
    int64_t elapsed = t1 - t0;
    max_store(&lateness_max, (long)(elapsed - budget_ms));
    if (elapsed <= budget_ms + opt.tolerance_ms)
        return;
    atomic_fetch_add(&suspects_total, 1);
    pthread_mutex_lock(&suspects_mu);
    if (nsuspects == suspects_cap) {
        size_t cap = suspects_cap ? 2 * suspects_cap : 256;
        suspect *grown = realloc(suspects, cap * sizeof *grown);
        if (!grown) {
            pthread_mutex_unlock(&suspects_mu);
            fail("thread %d: %s late and no memory to judge it", c->index, what);
            return;
        }
        suspects = grown;
        suspects_cap = cap;
    }
    suspects[nsuspects++] = (suspect){c->index, what, atomic_load(&phase), t0, t1, budget_ms, rc};
    pthread_mutex_unlock(&suspects_mu);
}

/* Every failure carries a message (pypool.h: "on failure carries error_message"). */
static void check_result_shape(const client *c, const char *what, int rc, const pypool_result *r)
{
    if (rc != PYPOOL_OK && (!r->error_message || !*r->error_message))
        fail("thread %d: %s failed with %s but no error_message", c->index, what,
             pypool_strerror(rc));
    if (rc == PYPOOL_OK && r->worker_pid <= 0)
        fail("thread %d: %s succeeded with worker_pid %d", c->index, what, r->worker_pid);
    if (rc == PYPOOL_OK && (!r->data && r->len))
        fail("thread %d: %s succeeded with len %zu but no data", c->index, what, r->len);
    if (rc == PYPOOL_OK && r->data && r->data[r->len] != '\0')
        fail("thread %d: %s reply is not NUL-terminated", c->index, what);
}

/* Fills the thread's payload: a header naming (thread, seq, len) and random bytes. */
static size_t make_payload(client *c)
{
    uint64_t r = rnd(&c->rng) % 100;
    size_t len = r < 80   ? rnd_range(&c->rng, 0, 512)
                 : r < 97 ? rnd_range(&c->rng, 0, 8192)
                          : rnd_range(&c->rng, 0, PAYLOAD_MAX);
    if (len < HEADER_LEN && r % 3 != 0)
        len = HEADER_LEN; /* mostly self-identifying; some tiny and empty payloads too */
    c->seq++;
    uint8_t *p = c->payload;
    if (len >= HEADER_LEN) {
        memcpy(p, "PS", 2);
        p[2] = (uint8_t)c->index;
        p[3] = (uint8_t)(c->index >> 8);
        memcpy(p + 4, &c->seq, 8);
        uint32_t l32 = (uint32_t)len;
        memcpy(p + 12, &l32, 4);
    }
    for (size_t i = len >= HEADER_LEN ? HEADER_LEN : 0; i < len; i++)
        p[i] = (uint8_t)rnd(&c->rng);
    return len;
}

/* 0..200 ms; 0 ("take an idle worker or fail at once") is its own code path, so it gets 1/8. */
static int64_t pick_deadline(client *c)
{
    if (rnd(&c->rng) % 8 == 0)
        return 0;
    return (int64_t)rnd_range(&c->rng, 1, MAX_DEADLINE_MS);
}

/* The budget of a pypool_call: timeout 0 means "no waiting, then call_timeout_ms". */
static int64_t call_budget(int64_t timeout_ms)
{
    return timeout_ms > 0 ? timeout_ms : CALL_TIMEOUT_MS;
}

static int pool_call(client *c, const char *method, const void *buf, size_t len, int64_t timeout,
                     pypool_result *r, int64_t *t0)
{
    atomic_store(&c->in_call, 1);
    *t0 = tu_now_ms();
    int rc = pypool_call(pool, method, buf, len, timeout, r);
    atomic_store(&c->in_call, 0);
    return rc;
}

/* echo, aecho (async) or techo (threaded): the reply must be the very bytes this call sent. */
static void op_echo(client *c, int kind)
{
    const char *method = op_names[kind];
    size_t len = make_payload(c);
    int64_t timeout = pick_deadline(c), t0;
    pypool_result r;
    int rc = pool_call(c, method, c->payload, len, timeout, &r, &t0);
    check_time(c, method, t0, call_budget(timeout), rc);
    check_result_shape(c, method, rc, &r);
    count_outcome(kind, rc);
    static const int ok[] = {PYPOOL_OK, PYPOOL_ETIMEDOUT, PYPOOL_EWORKER};
    if (!code_in(rc, ok, 3))
        fail("thread %d: %s -> %s (%s)", c->index, method, pypool_strerror(rc),
             r.error_message ? r.error_message : "");
    if (rc == PYPOOL_OK && (r.len != len || (len && memcmp(r.data, c->payload, len) != 0)))
        fail("thread %d: %s seq %" PRIu64 ": reply of %zu bytes is not the %zu bytes sent "
             "(worker %d)",
             c->index, method, c->seq, r.len, len, r.worker_pid);
    pypool_result_free(&r);
}

/* sleep (plain) or asleep (async, --max-inflight). */
static void op_sleep(client *c, int kind)
{
    const char *method = op_names[kind];
    int64_t timeout = pick_deadline(c), t0;
    /* mostly short sleeps that fit their deadline; some that surely outlive it */
    unsigned ms = rnd(&c->rng) % 30 ? (unsigned)rnd_range(&c->rng, 0, 30)
                                    : (unsigned)rnd_range(&c->rng, 100, 300);
    char arg[32];
    snprintf(arg, sizeof arg, "%u.%03u", ms / 1000, ms % 1000);
    pypool_result r;
    int rc = pool_call(c, method, arg, strlen(arg), timeout, &r, &t0);
    int64_t elapsed = tu_now_ms() - t0;
    check_time(c, method, t0, call_budget(timeout), rc);
    check_result_shape(c, method, rc, &r);
    count_outcome(kind, rc);
    static const int ok[] = {PYPOOL_OK, PYPOOL_ETIMEDOUT, PYPOOL_EWORKER};
    if (!code_in(rc, ok, 3))
        fail("thread %d: %s -> %s (%s)", c->index, method, pypool_strerror(rc),
             r.error_message ? r.error_message : "");
    if (rc == PYPOOL_OK && (r.len != 5 || memcmp(r.data, "slept", 5) != 0))
        fail("thread %d: %s reply is not 'slept'", c->index, method);
    if (rc == PYPOOL_OK && elapsed + 2 < (int64_t)ms)
        fail("thread %d: %s of %u ms answered after %" PRId64 " ms: not its reply", c->index,
             method, ms, elapsed);
    pypool_result_free(&r);
}

static void op_raise(client *c)
{
    int64_t timeout = pick_deadline(c), t0;
    pypool_result r;
    int rc = pool_call(c, "raise_value", "x", 1, timeout, &r, &t0);
    check_time(c, "raise_value", t0, call_budget(timeout), rc);
    check_result_shape(c, "raise_value", rc, &r);
    count_outcome(OP_RAISE, rc);
    static const int ok[] = {PYPOOL_EREMOTE, PYPOOL_ETIMEDOUT, PYPOOL_EWORKER};
    if (!code_in(rc, ok, 3))
        fail("thread %d: raise_value -> %s (%s)", c->index, pypool_strerror(rc),
             r.error_message ? r.error_message : "");
    if (rc == PYPOOL_EREMOTE &&
        (!r.error_type || strcmp(r.error_type, "ValueError") != 0 || !r.error_message ||
         strcmp(r.error_message, "bad") != 0 || !r.traceback))
        fail("thread %d: raise_value: wrong remote error (%s: %s)", c->index,
             r.error_type ? r.error_type : "(null)", r.error_message ? r.error_message : "(null)");
    pypool_result_free(&r);
}

static void op_exit(client *c)
{
    int64_t timeout = pick_deadline(c), t0;
    pypool_result r;
    int rc = pool_call(c, "exit", "7", 1, timeout, &r, &t0);
    check_time(c, "exit", t0, call_budget(timeout), rc);
    check_result_shape(c, "exit", rc, &r);
    count_outcome(OP_EXIT, rc);
    static const int ok[] = {PYPOOL_EWORKER, PYPOOL_ETIMEDOUT};
    if (!code_in(rc, ok, 2))
        fail("thread %d: exit -> %s (%s)", c->index, pypool_strerror(rc),
             r.error_message ? r.error_message : "");
    pypool_result_free(&r);
}

static void session_retire(client *c, session_track *t)
{
    t->gen++;
    snprintf(t->id, sizeof t->id, "t%d-s%d-g%u", c->index, (int)(t - c->sessions), t->gen);
    t->fresh = true;
    t->last = 0;
    t->unsure = 0;
}

/*
 * Session counter sequence: after an OK reply n the next OK must be n + 1 (the state survived),
 * unless PYPOOL_ESESSION came in between (state lost, the next starts at 1). A silent restart
 * at 1, or a value from another session, is a failure.
 */
static void op_session(client *c)
{
    session_track *t = &c->sessions[rnd(&c->rng) % SESSIONS_PER_THR];
    if (rnd(&c->rng) % 20 == 0) {
        atomic_store(&c->in_call, 1);
        int64_t t0 = tu_now_ms();
        int rc = pypool_session_close(pool, t->id);
        atomic_store(&c->in_call, 0);
        /* close waits up to checkout_timeout_ms for the session's worker */
        check_time(c, "session_close", t0, MAX_DEADLINE_MS, rc);
        static const int ok[] = {PYPOOL_OK, PYPOOL_ETIMEDOUT};
        if (!code_in(rc, ok, 2))
            fail("thread %d: session_close -> %s", c->index, pypool_strerror(rc));
        if (rc == PYPOOL_OK) {
            t->fresh = true;
            t->last = 0;
            t->unsure = 0;
        } else {
            session_retire(c, t); /* the worker may still hold the state: use a new id */
        }
        return;
    }
    int64_t timeout = pick_deadline(c), t0;
    pypool_result r;
    atomic_store(&c->in_call, 1);
    t0 = tu_now_ms();
    /* multiplexed: an async counter that awaits between its read and its write */
    const char *method = opt.max_inflight > 1 ? "acount" : "count";
    int rc = pypool_session_call(pool, t->id, method, "", 0, timeout, &r);
    atomic_store(&c->in_call, 0);
    check_time(c, "session_call", t0, call_budget(timeout), rc);
    check_result_shape(c, "session_call", rc, &r);
    count_outcome(OP_SESSION, rc);
    static const int ok[] = {PYPOOL_OK, PYPOOL_ETIMEDOUT, PYPOOL_EWORKER, PYPOOL_ESESSION};
    if (!code_in(rc, ok, 4))
        fail("thread %d: session %s -> %s (%s)", c->index, t->id, pypool_strerror(rc),
             r.error_message ? r.error_message : "");
    if (rc == PYPOOL_OK) {
        char *end = NULL;
        long n = r.data ? strtol((const char *)r.data, &end, 10) : -1;
        long want = t->fresh ? 1 : t->last + 1;
        if (!end || *end || n < want || n > want + t->unsure)
            fail("thread %d: session %s: counter %.*s, expected %ld..%ld (%s)", c->index, t->id,
                 (int)r.len, r.data ? (const char *)r.data : "", want, want + t->unsure,
                 t->fresh ? "fresh session" : "state kept");
        t->last = n;
        t->fresh = false;
        t->unsure = 0;
    } else if (rc == PYPOOL_ESESSION) {
        t->fresh = true;
        t->last = 0;
        t->unsure = 0;
    } else if (opt.max_inflight > 1 && (rc == PYPOOL_ETIMEDOUT || rc == PYPOOL_EWORKER)) {
        t->unsure++; /* cancelled, not killed: it may have counted before the cancel */
    }
    /* ETIMEDOUT / EWORKER: if the worker was lost the next call says ESESSION, else the
     * count simply continues; either way the rule above holds. */
    pypool_result_free(&r);
}

/* One worker_call on a checked-out worker; returns the code. */
static int checkout_call(client *c, pypool_worker *w, int wpid, bool broken)
{
    size_t len = make_payload(c);
    int64_t timeout = (int64_t)rnd_range(&c->rng, 1, MAX_DEADLINE_MS);
    uint64_t pick = rnd(&c->rng) % 10;
    const char *method = pick < 7 ? "echo" : pick < 9 ? "raise_value" : "sleep";
    const void *buf = c->payload;
    char arg[32];
    if (pick == 9) {
        unsigned ms = (unsigned)rnd_range(&c->rng, 0, 40);
        snprintf(arg, sizeof arg, "0.%03u", ms);
        buf = arg;
        len = strlen(arg);
    }
    pypool_result r;
    atomic_store(&c->in_call, 1);
    int64_t t0 = tu_now_ms();
    int rc = pypool_worker_call(w, method, buf, len, timeout, &r);
    atomic_store(&c->in_call, 0);
    check_time(c, "worker_call", t0, timeout, rc);
    check_result_shape(c, "worker_call", rc, &r);
    count_outcome(OP_WCALL, rc);
    if (broken) {
        if (rc != PYPOOL_EWORKER)
            fail("thread %d: worker_call on a broken checkout -> %s, expected EWORKER", c->index,
                 pypool_strerror(rc));
    } else if (pick < 7) {
        static const int ok[] = {PYPOOL_OK, PYPOOL_ETIMEDOUT, PYPOOL_EWORKER};
        if (!code_in(rc, ok, 3))
            fail("thread %d: worker_call echo -> %s (%s)", c->index, pypool_strerror(rc),
                 r.error_message ? r.error_message : "");
        if (rc == PYPOOL_OK && (r.len != len || (len && memcmp(r.data, c->payload, len) != 0)))
            fail("thread %d: worker_call echo seq %" PRIu64 ": reply is not what was sent",
                 c->index, c->seq);
    } else if (pick < 9) {
        static const int ok[] = {PYPOOL_EREMOTE, PYPOOL_ETIMEDOUT, PYPOOL_EWORKER};
        if (!code_in(rc, ok, 3))
            fail("thread %d: worker_call raise_value -> %s", c->index, pypool_strerror(rc));
    } else {
        static const int ok[] = {PYPOOL_OK, PYPOOL_ETIMEDOUT, PYPOOL_EWORKER};
        if (!code_in(rc, ok, 3))
            fail("thread %d: worker_call sleep -> %s", c->index, pypool_strerror(rc));
        if (rc == PYPOOL_OK && (r.len != 5 || memcmp(r.data, "slept", 5) != 0))
            fail("thread %d: worker_call sleep reply is not 'slept'", c->index);
    }
    if (rc == PYPOOL_OK && r.worker_pid != wpid)
        fail("thread %d: worker_call served by pid %d, checked-out worker is %d", c->index,
             r.worker_pid, wpid);
    pypool_result_free(&r);
    return rc;
}

static void op_checkout(client *c)
{
    int64_t timeout = pick_deadline(c);
    pypool_worker *w = NULL;
    atomic_store(&c->in_call, 1);
    int64_t t0 = tu_now_ms();
    int rc = pypool_checkout(pool, timeout, &w);
    atomic_store(&c->in_call, 0);
    /* timeout 0: take an idle worker or fail at once */
    check_time(c, "checkout", t0, timeout, rc);
    count_outcome(OP_CHECKOUT, rc);
    static const int ok[] = {PYPOOL_OK, PYPOOL_ETIMEDOUT};
    if (!code_in(rc, ok, 2))
        fail("thread %d: checkout -> %s", c->index, pypool_strerror(rc));
    if (rc != PYPOOL_OK) {
        if (w)
            fail("thread %d: failed checkout left a worker handle", c->index);
        return;
    }
    int wpid = pypool_worker_pid(w);
    if (wpid <= 0)
        fail("thread %d: checked-out worker has pid %d", c->index, wpid);
    int calls = (int)rnd_range(&c->rng, 1, 3);
    bool broken = false;
    for (int i = 0; i < calls; i++) {
        rc = checkout_call(c, w, wpid, broken);
        if (rc == PYPOOL_ETIMEDOUT || rc == PYPOOL_EWORKER)
            broken = true;
    }
    pypool_checkin(w);
}

static void client_park(void)
{
    pthread_mutex_lock(&pause_mu);
    atomic_fetch_add(&paused_count, 1);
    pthread_cond_broadcast(&pause_cv);
    while (atomic_load(&pause_clients) && !atomic_load(&stop_clients))
        pthread_cond_wait(&pause_cv, &pause_mu);
    atomic_fetch_sub(&paused_count, 1);
    pthread_mutex_unlock(&pause_mu);
}

static void *client_main(void *arg)
{
    client *c = arg;
    for (int i = 0; i < SESSIONS_PER_THR; i++)
        session_retire(c, &c->sessions[i]);
    while (!atomic_load(&stop_clients)) {
        if (atomic_load(&pause_clients)) {
            client_park();
            continue;
        }
        uint64_t r = rnd(&c->rng) % 1000;
        if (opt.max_inflight > 1 && r < 640) { /* multiplexed: the same share, three echoes */
            if (r < 200)
                op_echo(c, OP_ECHO);
            else if (r < 380)
                op_echo(c, OP_AECHO);
            else if (r < 560)
                op_echo(c, OP_TECHO);
            else if (r < 600)
                op_sleep(c, OP_SLEEP);
            else
                op_sleep(c, OP_ASLEEP);
        } else if (r < 560)
            op_echo(c, OP_ECHO);
        else if (r < 640)
            op_sleep(c, OP_SLEEP);
        else if (r < 700)
            op_raise(c);
        else if (r < 702)
            op_exit(c);
        else if (r < 880)
            op_session(c);
        else
            op_checkout(c);
        c->ops++;
        atomic_fetch_add(&ops_total, 1);
    }
    return NULL;
}

/* ---- chaos and stats threads ------------------------------------------------------------- */

static bool slot_live(int state)
{
    return state == PYPOOL_SLOT_IDLE || state == PYPOOL_SLOT_BUSY || state == PYPOOL_SLOT_PINGING;
}

/*
 * Kills live workers only (IDLE/BUSY/PINGING, i.e. after their Hello): killing a worker before
 * its Hello is a failed start, and three in a row mark a slot FAILED by design (crash loop),
 * which would be the test's doing, not a library fault. It spares the last --chaos-min-live
 * live workers (default 1): a Python worker needs a few hundred ms to start on a loaded 2-core
 * machine, so killing every 20..100 ms would otherwise keep the pool empty and the reply path
 * (the thing under test) would hardly run. --chaos-min-live 0 kills regardless.
 */
static void *chaos_main(void *arg)
{
    uint64_t rng = *(uint64_t *)arg;
    while (!atomic_load(&stop_chaos)) {
        sleep_ms((int64_t)rnd_range(&rng, 20, 100));
        if (atomic_load(&stop_chaos))
            break;
        pypool_stats st;
        pypool_stats_get(pool, &st);
        int live[PYPOOL_STATS_MAX_SLOTS], n = 0;
        for (unsigned i = 0; i < st.slot_count; i++) {
            if (slot_live(st.slots[i].state) && st.slots[i].pid > 0)
                live[n++] = st.slots[i].pid;
        }
        if (n == 0 || n <= opt.chaos_min_live) {
            atomic_fetch_add(&kills_skipped, 1);
            continue;
        }
        int victim = live[rnd(&rng) % (uint64_t)n];
        if (kill(victim, SIGKILL) == 0)
            atomic_fetch_add(&kills, 1);
    }
    return NULL;
}

static void check_stats(const pypool_stats *st, const pypool_stats *prev)
{
    unsigned size = (unsigned)opt.workers;
    unsigned want_slots = size < PYPOOL_STATS_MAX_SLOTS ? size : PYPOOL_STATS_MAX_SLOTS;
    if (st->size != size || st->slot_count != want_slots)
        fail("stats: size %u slot_count %u, expected %u/%u", st->size, st->slot_count, size,
             want_slots);
    unsigned sum = st->idle + st->busy + st->starting + st->backoff + st->failed;
    if (sum > st->size)
        fail("stats: idle %u + busy %u + starting %u + backoff %u + failed %u > size %u", st->idle,
             st->busy, st->starting, st->backoff, st->failed, st->size);
    unsigned busy = 0;
    for (unsigned i = 0; i < st->slot_count; i++)
        busy += st->slots[i].state == PYPOOL_SLOT_BUSY;
    if (st->slot_count == st->size && busy != st->busy)
        fail("stats: busy %u but %u slots are busy", st->busy, busy);
#define MONO(f)                                                                                    \
    if (st->f < prev->f)                                                                           \
    fail("stats: counter " #f " went back from %" PRIu64 " to %" PRIu64, prev->f, st->f)
    MONO(calls);
    MONO(remote_errors);
    MONO(timeouts);
    MONO(call_timeouts);
    MONO(restarts);
    MONO(crashes);
    MONO(protocol_errors);
    MONO(cancels);
#undef MONO
    unsigned lanes = opt.max_inflight > 1 ? (unsigned)opt.max_inflight : 1;
    if (st->inflight > st->size * lanes)
        fail("stats: inflight %u > %u workers x %u", st->inflight, st->size, lanes);
    if (opt.max_inflight <= 1 && st->cancels != 0)
        fail("stats: cancels %" PRIu64 " without multiplexed workers (no stream was opened)",
             st->cancels);
    if (st->timeouts < st->call_timeouts)
        fail("stats: timeouts %" PRIu64 " < call_timeouts %" PRIu64, st->timeouts,
             st->call_timeouts);
}

static void *stats_main(void *arg)
{
    (void)arg;
    pypool_stats prev, st;
    pypool_stats_get(pool, &prev);
    while (!atomic_load(&stop_stats)) {
        pypool_stats_get(pool, &st);
        check_stats(&st, &prev);
        prev = st;
        atomic_fetch_add(&stats_reads, 1);
        sleep_ms(1);
    }
    return NULL;
}

/* ---- watchdog ------------------------------------------------------------------------------ */

static atomic_int watchdog_done;

static void *watchdog_main(void *arg)
{
    int64_t limit_ms = *(int64_t *)arg;
    int64_t until = tu_now_ms() + limit_ms;
    while (!atomic_load(&watchdog_done)) {
        if (tu_now_ms() > until) {
            fprintf(stderr,
                    "stress: HANG: still in phase '%s' after %" PRId64
                    " ms; %d failures so far. Aborting.\n",
                    atomic_load(&phase), limit_ms, atomic_load(&failures));
            abort();
        }
        sleep_ms(100);
    }
    return NULL;
}

/* ---- phases ------------------------------------------------------------------------------- */

static void print_stats(const char *label, const pypool_stats *st)
{
    fprintf(
        stderr,
        "stress: %s: idle %u busy %u starting %u backoff %u failed %u waiters %u | calls %" PRIu64
        " remote %" PRIu64 " timeouts %" PRIu64 " (running %" PRIu64 ") restarts %" PRIu64
        " crashes %" PRIu64 " proto %" PRIu64 " failed_starts %" PRIu64 " sessions %" PRIu64
        " inflight %u cancels %" PRIu64 "\n",
        label, st->idle, st->busy, st->starting, st->backoff, st->failed, st->waiters, st->calls,
        st->remote_errors, st->timeouts, st->call_timeouts, st->restarts, st->crashes,
        st->protocol_errors, st->failed_starts, st->sessions, st->inflight, st->cancels);
    for (unsigned i = 0; i < st->slot_count; i++)
        fprintf(stderr, "stress:   slot %u: %s pid %d calls %" PRIu64 " restarts %" PRIu64 "\n", i,
                pypool_slot_state_name(st->slots[i].state), st->slots[i].pid, st->slots[i].calls,
                st->slots[i].restarts);
}

/* Clients finish their current operation and park; false if they did not in time. */
static bool pause_all(int64_t wait_ms)
{
    atomic_store(&pause_clients, 1);
    int64_t until = tu_now_ms() + wait_ms;
    while (atomic_load(&paused_count) < opt.threads) {
        if (tu_now_ms() > until)
            return false;
        sleep_ms(5);
    }
    return true;
}

static void resume_all(void)
{
    pthread_mutex_lock(&pause_mu);
    atomic_store(&pause_clients, 0);
    pthread_cond_broadcast(&pause_cv);
    pthread_mutex_unlock(&pause_mu);
}

/*
 * With every client parked (no call in flight, nothing checked out), the pool's counters must
 * match what the clients saw, exactly: every call that got a reply (ok or remote error) is in
 * calls_total and in the call latency histogram, once.
 */
static void check_counts_exact(const pypool_stats *st)
{
    uint64_t replies = 0;
    for (int k = 0; k < OP_KINDS; k++)
        if (k != OP_CHECKOUT)
            replies += (uint64_t)atomic_load(&outcomes[k][0]) +
                       (uint64_t)atomic_load(&outcomes[k][-PYPOOL_EREMOTE]);
    if (st->calls != replies)
        fail("stats: calls %" PRIu64 ", but the clients got %" PRIu64 " replies", st->calls,
             replies);
    if (st->call_us.count != st->calls)
        fail("stats: the call histogram counts %" PRIu64 " calls, calls_total %" PRIu64,
             st->call_us.count, st->calls);
    fprintf(stderr, "stress: counters exact: %" PRIu64 " replies, call p50 %.0f us p99 %.0f us\n",
            replies, pypool_histogram_percentile(&st->call_us, 0.5),
            pypool_histogram_percentile(&st->call_us, 0.99));
}

/* After chaos stops, every slot must hold a live worker again (RECOVERY_MS: "never"). */
static void check_recovery(int64_t chaos_stopped_ms)
{
    atomic_store(&phase, "recovery");
    /* Each call's own lateness is checked against its deadline (check_time); parking only has
     * to happen, so its bound is one for "never". */
    if (!pause_all(EVENT_WAIT_MS))
        fail("clients did not park within %d ms of pausing (%d of %d)", EVENT_WAIT_MS,
             atomic_load(&paused_count), opt.threads);
    pypool_stats st;
    for (;;) {
        pypool_stats_get(pool, &st);
        unsigned live = 0;
        for (unsigned i = 0; i < st.slot_count; i++)
            live += slot_live(st.slots[i].state);
        int64_t took = tu_now_ms() - chaos_stopped_ms;
        /* multiplexed: every lane free too (a cancelled call ends by its reply or grace kill) */
        if (live == st.size && st.inflight == 0) {
            fprintf(stderr, "stress: pool back to full size %u, %" PRId64 " ms after chaos\n",
                    st.size, took);
            check_counts_exact(&st);
            return;
        }
        if (took > RECOVERY_MS) {
            fail("pool not back to full size %" PRId64 " ms after chaos stopped (%u of %u live, "
                 "%u calls in flight)",
                 took, live, st.size, st.inflight);
            print_stats("at recovery deadline", &st);
            return;
        }
        sleep_ms(10);
    }
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [--seconds N] [--threads N] [--workers N] [--seed N] [--tolerance-ms N] "
            "[--chaos-min-live N] [--max-inflight N] [--verbose]\n",
            argv0);
    exit(2);
}

static void parse_args(int argc, char **argv)
{
    opt.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
    const char *env_tol = getenv("PYPOOL_STRESS_TOLERANCE_MS");
    if (env_tol && *env_tol)
        opt.tolerance_ms = atoi(env_tol);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--verbose") == 0) {
            opt.verbose = true;
            continue;
        }
        if (!v)
            usage(argv[0]);
        if (strcmp(a, "--seconds") == 0)
            opt.seconds = atoi(v);
        else if (strcmp(a, "--threads") == 0)
            opt.threads = atoi(v);
        else if (strcmp(a, "--workers") == 0)
            opt.workers = atoi(v);
        else if (strcmp(a, "--seed") == 0)
            opt.seed = strtoull(v, NULL, 0);
        else if (strcmp(a, "--tolerance-ms") == 0)
            opt.tolerance_ms = atoi(v);
        else if (strcmp(a, "--chaos-min-live") == 0)
            opt.chaos_min_live = atoi(v);
        else if (strcmp(a, "--max-inflight") == 0)
            opt.max_inflight = atoi(v);
        else
            usage(argv[0]);
        i++;
    }
    if (opt.seconds < 1 || opt.threads < 1 || opt.threads > MAX_THREADS || opt.workers < 2 ||
        opt.workers > PYPOOL_STATS_MAX_SLOTS || opt.tolerance_ms < 0 || opt.chaos_min_live < 0 ||
        opt.max_inflight < 1 || opt.max_inflight > PYPOOL_MAX_INFLIGHT)
        usage(argv[0]);
}

static void start_thread(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int rc = pthread_create(t, NULL, fn, arg);
    if (rc != 0) {
        fprintf(stderr, "stress: pthread_create: %s\n", strerror(rc));
        exit(1);
    }
}

static void join_thread(pthread_t t, const char *what)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    int rc = pthread_timedjoin_np(t, NULL, &ts);
    if (rc != 0) {
        fprintf(stderr, "stress: HANG: %s did not finish within 30 s (%s)\n", what, strerror(rc));
        abort();
    }
}

static pypool *create_pool(void)
{
    pypool_config cfg;
    pypool_config_init(&cfg);
    cfg.size = (unsigned)opt.workers;
    cfg.module = opt.max_inflight > 1 ? "mux_mod" : "echo_mod";
    cfg.max_inflight = (unsigned)opt.max_inflight;
    cfg.cancel_grace_ms = CANCEL_GRACE_MS;
    cfg.python = PYPOOL_TEST_PYTHON;
    cfg.python_path = PYPOOL_TEST_MODULES;
    cfg.call_timeout_ms = CALL_TIMEOUT_MS;
    cfg.checkout_timeout_ms = MAX_DEADLINE_MS;
    cfg.shutdown_grace_ms = SHUTDOWN_GRACE_MS;
    /* A worker killed every ~100 ms never lives long enough to reset its backoff; cap it so
     * that "full size within 2 s after chaos" measures supervision, not the backoff policy. */
    cfg.restart_backoff_max_ms = 200;
    cfg.log_fn = log_cb;
    pypool *p = NULL;
    int rc = pypool_create(&cfg, &p);
    if (rc != PYPOOL_OK) {
        fprintf(stderr, "stress: pypool_create: %s: %s\n", pypool_strerror(rc),
                pypool_last_error());
        exit(1);
    }
    return p;
}

static void print_outcomes(void)
{
    fprintf(stderr, "stress: outcomes (op: code=count ...)\n");
    for (int k = 0; k < OP_KINDS; k++) {
        if (k >= OP_AECHO && opt.max_inflight <= 1)
            continue; /* multiplexed workers only */
        char line[512];
        int off = snprintf(line, sizeof line, "stress:   %-12s", op_names[k]);
        for (int i = 0; i < NCODES; i++) {
            long n = atomic_load(&outcomes[k][i]);
            if (n && off < (int)sizeof line)
                off += snprintf(line + off, sizeof line - (size_t)off, " %s=%ld",
                                i == NCODES - 1 ? "other" : pypool_strerror(-i), n);
        }
        fprintf(stderr, "%s\n", line);
    }
}

static void print_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[300], target[256];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = '\0';
        fprintf(stderr, "stress:   fd %s -> %s\n", e->d_name, target);
    }
    closedir(d);
}

/* Hygiene after destroy: no child of ours, fds and threads back to the baseline. */
static void check_hygiene(int fds0, int threads0)
{
    /* A joined thread can stay listed in /proc/self/task for a moment after pthread_join. */
    int64_t threads_until = tu_now_ms() + EVENT_WAIT_MS;
    while (tu_count_threads() > threads0 && tu_now_ms() < threads_until)
        sleep_ms(10);
    pid_t pids[32];
    char states[32];
    int64_t until = tu_now_ms() + 500; /* a zombie must not even linger */
    int n;
    while ((n = list_children(pids, states, 32)) > 0 && tu_now_ms() < until)
        sleep_ms(10);
    if (n > 0) {
        fail("%d child process(es) left after destroy", n);
        for (int i = 0; i < n && i < 32; i++)
            fprintf(stderr, "stress:   child pid %d state %c\n", (int)pids[i], states[i]);
    }
    int fds = tu_count_fds();
    if (fds != fds0) {
        fail("open fds: %d before create, %d after destroy", fds0, fds);
        print_fds();
    }
    int threads = tu_count_threads();
    if (threads != threads0)
        fail("threads: %d before create, %d after destroy and join", threads0, threads);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    setvbuf(stderr, NULL, _IOLBF, 0);
    fprintf(stderr,
            "stress: seed %" PRIu64 " seconds %d threads %d workers %d max_inflight %d tolerance "
            "%d ms (rerun: --seed %" PRIu64 ")\n",
            opt.seed, opt.seconds, opt.threads, opt.workers, opt.max_inflight, opt.tolerance_ms,
            opt.seed);

    int fds0 = tu_count_fds();
    pthread_t watchdog;
    int64_t hang_ms = (int64_t)opt.seconds * 1000 + 120000;
    start_thread(&watchdog, watchdog_main, &hang_ms);
    probe_t0 = tu_now_ms();
    probe_nbuckets = (int)(hang_ms / PROBE_BUCKET_MS) + 2;
    probe_late = calloc((size_t)probe_nbuckets, sizeof *probe_late);
    if (!probe_late)
        return 1;
    atomic_store(&probe_seen, probe_t0);
    /* Counted after the first pthread_create: ThreadSanitizer starts its own background thread
     * then. The watchdog lives until after the final count; the probe is joined before it. */
    int threads0 = tu_count_threads();
    pthread_t probe;
    start_thread(&probe, probe_main, NULL);

    atomic_store(&phase, "create");
    int64_t t_create = tu_now_ms();
    pool = create_pool();
    fprintf(stderr, "stress: pool of %d created in %" PRId64 " ms\n", opt.workers,
            tu_now_ms() - t_create);

    clients = calloc((size_t)opt.threads, sizeof *clients);
    if (!clients)
        return 1;
    atomic_store(&phase, "chaos");
    for (int i = 0; i < opt.threads; i++) {
        client *c = &clients[i];
        c->index = i;
        c->rng = opt.seed ^ (0x9e3779b97f4a7c15ull * (uint64_t)(i + 1));
        if (!c->rng)
            c->rng = 1;
        c->payload = malloc(PAYLOAD_MAX);
        if (!c->payload)
            return 1;
        start_thread(&c->thread, client_main, c);
    }
    uint64_t chaos_rng = opt.seed ^ 0xdeadbeefcafef00dull;
    if (!chaos_rng)
        chaos_rng = 1;
    pthread_t chaos, stats;
    start_thread(&chaos, chaos_main, &chaos_rng);
    start_thread(&stats, stats_main, NULL);

    int64_t t_chaos = tu_now_ms();
    while (tu_now_ms() - t_chaos < (int64_t)opt.seconds * 1000 && atomic_load(&failures) == 0) {
        sleep_ms(50);
        judge_suspects(false);
    }

    atomic_store(&stop_chaos, 1);
    join_thread(chaos, "chaos thread");
    int64_t chaos_stopped = tu_now_ms();
    pypool_stats st;
    pypool_stats_get(pool, &st);
    print_stats("after chaos", &st);

    check_recovery(chaos_stopped);

    /* Final phase: a guard checkout keeps the pool's memory alive for late callers (see top). */
    atomic_store(&phase, "guard checkout");
    pypool_worker *guard = NULL;
    int rc = pypool_checkout(pool, 5000, &guard);
    if (rc != PYPOOL_OK) {
        fail("guard checkout: %s", pypool_strerror(rc));
        abort(); /* cannot destroy safely with clients running */
    }
    atomic_store(&phase, "traffic before destroy");
    long ops_before = atomic_load(&ops_total);
    resume_all();
    /* Destroy once the clients are busy again: every one of them completed an operation since
     * resuming (on average), and some are inside a call right now. Events, not a pause. */
    int64_t traffic_until = tu_now_ms() + EVENT_WAIT_MS;
    for (;;) {
        int busy_now = 0;
        for (int i = 0; i < opt.threads; i++)
            busy_now += atomic_load(&clients[i].in_call);
        if (atomic_load(&ops_total) - ops_before >= opt.threads && busy_now > 0)
            break;
        if (tu_now_ms() > traffic_until) {
            fail("clients did not resume calling within %d ms (%ld operations, %d in a call)",
                 EVENT_WAIT_MS, atomic_load(&ops_total) - ops_before, busy_now);
            break;
        }
        sleep_ms(1);
    }

    atomic_store(&phase, "destroy");
    atomic_store(&shutting_down, 1);
    atomic_store(&stop_clients, 1);
    int in_flight = 0;
    for (int i = 0; i < opt.threads; i++)
        in_flight += atomic_load(&clients[i].in_call);
    int64_t t_destroy = tu_now_ms();
    pypool_destroy(pool);
    int64_t destroy_ms = tu_now_ms() - t_destroy;
    fprintf(stderr, "stress: destroy with %d calls in flight took %" PRId64 " ms\n", in_flight,
            destroy_ms);
    if (in_flight == 0)
        fail("no call was in flight when destroy began: the scenario did not happen");
    /* Drain until grace with the guard held, then Shutdown/SIGTERM/SIGKILL: bounded. A destroy
     * that waited for the guard's checkin (after it returns) would never return: the bound only
     * has to tell "bounded" from "never", generously for a loaded machine. */
    if (destroy_ms > SHUTDOWN_GRACE_MS + EVENT_WAIT_MS)
        fail("destroy took %" PRId64 " ms (grace %d ms)", destroy_ms, SHUTDOWN_GRACE_MS);

    atomic_store(&phase, "join");
    pthread_mutex_lock(&pause_mu);
    pthread_cond_broadcast(&pause_cv);
    pthread_mutex_unlock(&pause_mu);
    long ops = 0;
    for (int i = 0; i < opt.threads; i++) {
        join_thread(clients[i].thread, "client thread");
        ops += clients[i].ops;
    }
    atomic_store(&stop_stats, 1);
    join_thread(stats, "stats thread");
    sleep_ms(
        PROBE_BUCKET_MS); /* the probe covers the last calls' ends (it is not a wait for them) */
    atomic_store(&stop_probe, 1);
    join_thread(probe, "probe thread");
    judge_suspects(true);
    pypool_checkin(guard); /* the last reference: frees the pool */
    pool = NULL;

    atomic_store(&phase, "hygiene");
    check_hygiene(fds0, threads0);

    print_outcomes();
    fprintf(stderr,
            "stress: %ld operations, %ld SIGKILLs (%ld ticks spared the last live workers), %ld "
            "stats snapshots, %ld log lines, worst lateness %ld ms (tolerance %d ms; %ld calls "
            "later than that, worst %ld ms, explained by the scheduler's measured delays)\n",
            ops, atomic_load(&kills), atomic_load(&kills_skipped), atomic_load(&stats_reads),
            atomic_load(&log_lines), atomic_load(&lateness_max), opt.tolerance_ms,
            atomic_load(&suspects_total), atomic_load(&explained_max));
    for (int i = 0; i < opt.threads; i++)
        free(clients[i].payload);
    free(clients);
    free(suspects);
    free(probe_late);
    atomic_store(&watchdog_done, 1);
    pthread_join(watchdog, NULL);

    int nfail = atomic_load(&failures);
    if (nfail) {
        fprintf(stderr, "stress: FAILED with %d failure(s) (seed %" PRIu64 ")\n", nfail, opt.seed);
        return 1;
    }
    fprintf(stderr, "stress: PASSED\n");
    return 0;
}

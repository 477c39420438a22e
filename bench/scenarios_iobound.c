/*
 * scenarios_iobound.c - I/O-bound calls on multiplexed workers: 256 client threads, 2 workers
 * with max_inflight = 128, each call waiting 50 ms (a stand-in for an LLM or HTTP call):
 *   async     `io_sleep`, an async handler awaiting asyncio.sleep(0.05) (a task on the loop)
 *   threaded  `io_sleep_thread`, @pypool.handler(threaded=True) doing time.sleep(0.05)
 * against the ideal 2 x 128 / 0.05 s = 5120 calls/s (targets: async >= 0.9x, threaded >= 0.8x).
 * The ideal is a computed bound, not a measured one; beside it, each handler's latency alone
 * (one call at a time on the idle pool) tells how much of any shortfall the sleep itself costs.
 *
 * Memory: the workers' total VmRSS (/proc/<pid>/status of pypool_stats' pids) after each load,
 * beside what 256 one-call workers would take: 256 x the VmRSS of one idle worker of the same
 * module (max_inflight 1, after a call of each kind), measured in this run. A full run (not
 * --quick) also starts a real 256-worker pool when the machine has the memory, and reports its
 * measured total next to the estimate. CPU µs per call (host, workers) beside the switches:
 * 2 cores give 2 CPU-seconds a second, so 5120 calls/s needs under ~390 µs of CPU a call. VmRSS
 * counts shared pages (the interpreter, libraries) once per process; PSS (smaps_rollup) splits
 * them, for the memory really used. Context switches per call (host + workers) are reported as in
 * the oversubscribed scenario.
 *
 * Client threads start staggered over one call's length, so completions spread evenly over the
 * window instead of arriving in 50 ms bursts whose phase would decide the count.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

#define IO_WORKERS  2
#define IO_INFLIGHT 128
#define IO_THREADS  256
#define IO_SLEEP    0.05
#define IO_IDEAL    (IO_WORKERS * IO_INFLIGHT / IO_SLEEP)
#define IO_BIG_POOL 256

static const char *const io_methods[2] = {"io_sleep", "io_sleep_thread"};
static const char *const io_names[2] = {"async", "threaded"};

enum { F_RATE, F_P50, F_P99, F_CS, F_RSS, F_PSS, F_CPU_HOST, F_CPU_WORK, F_COUNT };

typedef struct io_ctx {
    pypool *pool;
    const char *method;
    bool started[IO_THREADS];
    uint64_t cs[2];
    double cpu_host[2], cpu_work[2];
    int err_taken; /* the first failure's text is kept (atomic flag) */
    char err[256];
} io_ctx;

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static int io_call(void *ctxp, unsigned tid)
{
    io_ctx *c = ctxp;
    if (!c->started[tid]) { /* stagger: thread i starts i/256 of a call late */
        c->started[tid] = true;
        sleep_s(IO_SLEEP * tid / IO_THREADS);
    }
    pypool_result res;
    int rc = pypool_call(c->pool, c->method, NULL, 0, -1, &res);
    if (rc != PYPOOL_OK && !__atomic_exchange_n(&c->err_taken, 1, __ATOMIC_ACQ_REL))
        snprintf(c->err, sizeof c->err, "%s: %s", pypool_strerror(rc),
                 res.error_message ? res.error_message : "");
    pypool_result_free(&res);
    return rc;
}

static void io_mark(void *ctxp, int which)
{
    io_ctx *c = ctxp;
    c->cs[which] = self_ctxsw() + pool_workers_ctxsw(c->pool);
    c->cpu_host[which] = self_cpu_s();
    c->cpu_work[which] = pool_workers_cpu_s(c->pool);
}

static void io_measure(const bench_opts *o, pypool *pool, int kind, double *fig)
{
    static io_ctx c; /* large; one run at a time */
    memset(&c, 0, sizeof c);
    c.pool = pool;
    c.method = io_methods[kind];
    for (int f = 0; f < F_COUNT; f++)
        fig[f] = NAN;
    double warmup = fmax(o->warmup, 3 * IO_SLEEP), window = fmax(o->seconds, 10 * IO_SLEEP);
    win_result res;
    if (win_run(IO_THREADS, warmup, window, true, io_call, io_mark, &c, &res) != 0)
        return;
    if (res.errors)
        bench_warn("iobound: %s: %llu failed calls, the first: %s", c.method,
                   (unsigned long long)res.errors, c.err);
    if (res.done) {
        fig[F_RATE] = res.calls_per_s;
        fig[F_P50] = samples_pct(&res.lat, 50) / 1e3;
        fig[F_P99] = samples_pct(&res.lat, 99) / 1e3;
        fig[F_CS] = (double)(c.cs[1] - c.cs[0]) / (double)res.done;
        fig[F_CPU_HOST] = (c.cpu_host[1] - c.cpu_host[0]) * 1e6 / (double)res.done;
        fig[F_CPU_WORK] = (c.cpu_work[1] - c.cpu_work[0]) * 1e6 / (double)res.done;
        fig[F_RSS] = (double)pool_workers_rss_kib(pool) / 1024.0;
        fig[F_PSS] = (double)pool_workers_pss_kib(pool) / 1024.0;
    }
    win_result_free(&res);
}

/* Median latency (ms) of one call at a time on the idle pool. */
static double io_alone(const bench_opts *o, pypool *pool, int kind)
{
    samples s = {0};
    unsigned n = o->quick ? 3 : 10;
    for (unsigned i = 0; i < n; i++) {
        pypool_result res;
        int64_t t0 = bench_now_ns();
        int rc = pypool_call(pool, io_methods[kind], NULL, 0, -1, &res);
        int64_t t1 = bench_now_ns();
        pypool_result_free(&res);
        if (rc == PYPOOL_OK)
            samples_push(&s, (double)(t1 - t0) / 1e6);
    }
    double m = samples_pct(&s, 50);
    samples_free(&s);
    return m;
}

/* VmRSS (MiB) of one idle one-call worker of the same module, after a call of each kind. */
static double idle_worker_rss(const bench_opts *o)
{
    pypool *p = NULL;
    double mib = NAN;
    if (pool_open_inflight(o, "bench_io_mod", 1, 1, &p) != PYPOOL_OK)
        return NAN;
    for (int k = 0; k < 2; k++) {
        pypool_result res;
        int rc = pypool_call(p, io_methods[k], "0.001", 5, -1, &res);
        if (rc != PYPOOL_OK)
            bench_warn("iobound: one-call worker: %s: %s: %s", io_methods[k], pypool_strerror(rc),
                       res.error_message ? res.error_message : "");
        pypool_result_free(&res);
    }
    mib = (double)pool_workers_rss_kib(p) / 1024.0;
    pypool_destroy(p);
    return mib;
}

/* A real pool of 256 one-call workers: total VmRSS (MiB) once all said Hello; NAN if skipped. */
static double big_pool_rss(const bench_opts *o, double idle_mib, double *start_s, double *pss)
{
    *start_s = *pss = NAN;
    if (o->quick || isnan(idle_mib))
        return NAN;
    double need_kib = 3.0 * IO_BIG_POOL * idle_mib * 1024.0;
    if ((double)mem_available_kib() < need_kib) {
        bench_warn("iobound: not starting %u workers: MemAvailable below %.0f MiB", IO_BIG_POOL,
                   need_kib / 1024.0);
        return NAN;
    }
    pypool *p = NULL;
    int64_t t0 = bench_now_ns();
    if (pool_open_inflight(o, "bench_io_mod", IO_BIG_POOL, 1, &p) != PYPOOL_OK)
        return NAN;
    *start_s = (double)(bench_now_ns() - t0) / 1e9;
    double mib = (double)pool_workers_rss_kib(p) / 1024.0;
    *pss = (double)pool_workers_pss_kib(p) / 1024.0;
    pypool_destroy(p);
    return mib;
}

static void add_row(const char *label, const char *unit, bool higher, double pool, double floor,
                    bool no_ratio, const char *note)
{
    bench_row *row = results_add("iobound", label, unit, higher);
    row->v[IMPL_POOL] = pool;
    row->v[IMPL_FLOOR] = floor;
    row->no_ratio = no_ratio;
    snprintf(row->note, sizeof row->note, "%s", note);
}

static void io_report(const bench_opts *o, double fig[2][F_COUNT][BENCH_MAX_ROUNDS],
                      const double alone[2], double idle_mib, double big_mib, double big_s,
                      double big_pss)
{
    static const char *const ideal = "floor: the ideal 2 x 128 / 0.05 s (computed)";
    static const char *const sleep = "floor: the sleep, 50 ms";
    static const char *const cs = "cs: context switches per call, host + workers; CPU: user+sys";
    static const char *const rss = "floor: 256 x one idle one-call worker's VmRSS";
    double m[2][F_COUNT];
    for (int k = 0; k < 2; k++)
        for (int f = 0; f < F_COUNT; f++)
            m[k][f] = median_of(fig[k][f], o->rounds);
    char label[48];
    for (int k = 0; k < 2; k++) {
        snprintf(label, sizeof label, "%s 256 thr, 2x128", io_names[k]);
        add_row(label, "calls/s", true, m[k][F_RATE], IO_IDEAL, false, ideal);
    }
    for (int k = 0; k < 2; k++) {
        snprintf(label, sizeof label, "%s 1 call alone", io_names[k]);
        add_row(label, "ms", false, alone[k], IO_SLEEP * 1e3, false, sleep);
        snprintf(label, sizeof label, "%s p50 under load", io_names[k]);
        add_row(label, "ms", false, m[k][F_P50], IO_SLEEP * 1e3, false, sleep);
        snprintf(label, sizeof label, "%s p99 under load", io_names[k]);
        add_row(label, "ms", false, m[k][F_P99], IO_SLEEP * 1e3, false, sleep);
    }
    for (int k = 0; k < 2; k++) {
        snprintf(label, sizeof label, "%s cs/call", io_names[k]);
        add_row(label, "sw/call", false, m[k][F_CS], NAN, true, cs);
        snprintf(label, sizeof label, "%s CPU host", io_names[k]);
        add_row(label, "us/call", false, m[k][F_CPU_HOST], NAN, true, cs);
        snprintf(label, sizeof label, "%s CPU workers", io_names[k]);
        add_row(label, "us/call", false, m[k][F_CPU_WORK], NAN, true, cs);
    }
    for (int k = 0; k < 2; k++) {
        snprintf(label, sizeof label, "%s workers' RSS", io_names[k]);
        add_row(label, "MiB", false, m[k][F_RSS], IO_BIG_POOL * idle_mib, false, rss);
    }
    add_row("one idle one-call worker", "MiB", false, idle_mib, NAN, true, rss);
    static const char *const pss = "PSS: Pss of smaps_rollup, shared pages split";
    for (int k = 0; k < 2; k++) {
        snprintf(label, sizeof label, "%s workers' PSS", io_names[k]);
        add_row(label, "MiB", false, m[k][F_PSS], NAN, true, pss);
    }
    if (!isnan(big_mib)) {
        static const char *const real = "pypool: a real pool of 256 workers; floor: 256 x one";
        add_row("256 real one-call workers", "MiB", false, big_mib, IO_BIG_POOL * idle_mib, false,
                real);
        add_row("256 real workers' PSS", "MiB", false, big_pss, NAN, true, real);
        add_row("256-worker pool start", "s", false, big_s, NAN, true, real);
    }
}

void scenario_iobound(const bench_opts *o)
{
    static double fig[2][F_COUNT][BENCH_MAX_ROUNDS];
    for (int k = 0; k < 2; k++)
        for (int f = 0; f < F_COUNT; f++)
            for (int r = 0; r < BENCH_MAX_ROUNDS; r++)
                fig[k][f][r] = NAN;
    double alone[2] = {NAN, NAN};
    progress_begin("iobound", 2 * o->rounds + 3);
    double idle_mib = idle_worker_rss(o);
    progress_step("idle worker");
    pypool *pool = NULL;
    if (pool_open_inflight(o, "bench_io_mod", IO_WORKERS, IO_INFLIGHT, &pool) == PYPOOL_OK) {
        for (int k = 0; k < 2; k++)
            alone[k] = io_alone(o, pool, k);
        progress_step("alone");
        for (unsigned r = 0; r < o->rounds; r++)
            for (int j = 0; j < 2; j++) {
                int k = r % 2 ? 1 - j : j;
                double f[F_COUNT];
                io_measure(o, pool, k, f);
                for (int x = 0; x < F_COUNT; x++)
                    fig[k][x][r] = f[x];
                progress_step(io_names[k]);
            }
        pypool_destroy(pool);
    }
    double big_s, big_pss;
    double big_mib = big_pool_rss(o, idle_mib, &big_s, &big_pss);
    progress_step("256 workers");
    progress_end();
    io_report(o, fig, alone, idle_mib, big_mib, big_s, big_pss);
}

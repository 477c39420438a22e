/*
 * scenarios_oversubscribed.c - no-op calls (16 B echo) from more client threads than workers:
 * 2 workers, 8 and 64 client threads, max_inflight 1 (exclusive workers) and 2 (each worker
 * holds two calls: one runs while the next request already waits in its pipe), against the
 * two-pair floor measured in the same rounds (2 dedicated thread+child pairs, floor.c: the best
 * any dispatcher could do with 2 children).
 *
 * Besides calls/s: fairness (max/median and min/median of the calls each client thread
 * completed, like the fairness scenario's spread), the p99 of a call's latency, and context
 * switches and CPU time per call over the window: the host process's (getrusage: client
 * threads, reaper) and the workers' (every thread of each, /proc/<pid>/task/<tid>/status and
 * /proc/<pid>/stat). On 2 cores a switch costs a few µs against a ~10 µs call, and 2 CPU
 * seconds per second bound the rate: calls/s <= 2 s / (CPU per call), so these two counts tell
 * what each design can reach. "reaper" rows: the host's threads that existed before the run
 * (the pools' reapers; part of "host"), which sit in the data path of multiplexed workers.
 *
 * The relay (relay.c) runs the same four points: a minimal dispatcher of these threads onto
 * two floor children, one context switch per call (each thread its own reply pipe, hand-off
 * writes, no pool). Its rows ("relay") say how much of the gap to the floor any dispatcher
 * would keep on this machine, and how much is pypool's own.
 *
 * Each round measures the floor, the four pool points and the four relay points once, in an
 * order that flips every round; figures are medians over rounds. Calls are counted when they
 * complete in the window (window.c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "contenders.h"

#define OS_WORKERS 2
#define OS_POINTS  4                   /* threads x max_inflight */
#define OS_RUNS    (2 * OS_POINTS + 1) /* the floor, the pool's points, the relay's */
#define OS_MAX_THR 64
#define PAYLOAD    16

static const unsigned os_threads[OS_POINTS] = {8, 8, 64, 64};
static const unsigned os_inflight[OS_POINTS] = {1, 2, 1, 2};

enum {
    F_RATE,
    F_SPREAD_MAX,
    F_SPREAD_MIN,
    F_P50,
    F_P99,
    F_CS_HOST,
    F_CS_WORK,
    F_CPU_HOST,
    F_CPU_WORK,
    F_CS_LIB,
    F_CPU_LIB,
    F_COUNT
};

typedef struct os_ctx {
    pypool *pool; /* NULL (and relay NULL): the floor */
    relay *relay;
    floor_child *floors;
    const uint8_t *payload;
    uint64_t host[2], work[2];       /* context switches at the window's start and end */
    double host_cpu[2], work_cpu[2]; /* CPU seconds at the window's start and end */
    int lib_tids[8];                 /* the host's threads before the run: the pools' reapers */
    unsigned nlib;
    uint64_t lib_cs[2];
    double lib_cpu[2];
} os_ctx;

static int os_call(void *ctxp, unsigned tid)
{
    os_ctx *c = ctxp;
    if (c->pool)
        return pool_echo(c->pool, "echo", c->payload, PAYLOAD, NULL);
    if (c->relay)
        return relay_call(c->relay, tid, c->payload, PAYLOAD);
    return floor_call(&c->floors[tid % OS_WORKERS], "echo", c->payload, PAYLOAD);
}

static void os_mark(void *ctxp, int which)
{
    os_ctx *c = ctxp;
    c->host[which] = self_ctxsw();
    c->host_cpu[which] = self_cpu_s();
    c->lib_cs[which] = 0;
    c->lib_cpu[which] = 0;
    for (unsigned i = 0; i < c->nlib; i++) {
        c->lib_cs[which] += self_task_ctxsw(c->lib_tids[i]);
        c->lib_cpu[which] += self_task_cpu_s(c->lib_tids[i]);
    }
    if (c->pool) {
        c->work[which] = pool_workers_ctxsw(c->pool);
        c->work_cpu[which] = pool_workers_cpu_s(c->pool);
    } else if (c->relay) {
        c->work[which] = 0;
        c->work_cpu[which] = 0;
        for (unsigned i = 0; i < relay_children(c->relay); i++) {
            c->work[which] += proc_ctxsw(relay_pid(c->relay, i));
            c->work_cpu[which] += proc_cpu_s(relay_pid(c->relay, i));
        }
    } else {
        c->work[which] = proc_ctxsw(c->floors[0].proc.pid) + proc_ctxsw(c->floors[1].proc.pid);
        c->work_cpu[which] = proc_cpu_s(c->floors[0].proc.pid) + proc_cpu_s(c->floors[1].proc.pid);
    }
}

/* One run: run 0 is the floor (2 threads, one per child), run k the pool point k - 1. */
static void os_measure(const bench_opts *o, os_ctx *c, unsigned threads, double *fig)
{
    win_result res;
    for (int f = 0; f < F_COUNT; f++)
        fig[f] = NAN;
    if (win_run(threads, o->warmup, o->seconds, true, os_call, os_mark, c, &res) != 0)
        return;
    if (res.errors)
        bench_warn("oversubscribed: %s: %llu failed calls",
                   c->pool    ? "pypool"
                   : c->relay ? "relay"
                              : "floor",
                   (unsigned long long)res.errors);
    if (res.done) {
        fig[F_RATE] = res.calls_per_s;
        fig[F_SPREAD_MAX] = win_spread_max(&res);
        fig[F_SPREAD_MIN] = win_spread_min(&res);
        fig[F_P50] = samples_pct(&res.lat, 50);
        fig[F_P99] = samples_pct(&res.lat, 99);
        fig[F_CS_HOST] = (double)(c->host[1] - c->host[0]) / (double)res.done;
        fig[F_CS_WORK] = (double)(c->work[1] - c->work[0]) / (double)res.done;
        fig[F_CPU_HOST] = (c->host_cpu[1] - c->host_cpu[0]) * 1e6 / (double)res.done;
        fig[F_CPU_WORK] = (c->work_cpu[1] - c->work_cpu[0]) * 1e6 / (double)res.done;
        fig[F_CS_LIB] = (double)(c->lib_cs[1] - c->lib_cs[0]) / (double)res.done;
        fig[F_CPU_LIB] = (c->lib_cpu[1] - c->lib_cpu[0]) * 1e6 / (double)res.done;
    }
    win_result_free(&res);
}

static void add_row(const char *label, const char *unit, bool higher, double pool, double floor,
                    bool no_ratio, const char *note)
{
    bench_row *row = results_add("oversubscribed", label, unit, higher);
    row->v[IMPL_POOL] = pool;
    row->v[IMPL_FLOOR] = floor;
    row->no_ratio = no_ratio;
    snprintf(row->note, sizeof row->note, "%s", note);
}

static void os_report(const bench_opts *o, double fig[OS_RUNS][F_COUNT][BENCH_MAX_ROUNDS])
{
    double med[OS_RUNS][F_COUNT];
    for (int k = 0; k < OS_RUNS; k++)
        for (int f = 0; f < F_COUNT; f++)
            med[k][f] = median_of(fig[k][f], o->rounds);
    static const char *const note =
        "floor: 2 dedicated pairs; if = max_inflight; cs: switches/call";
    static const struct {
        const char *suffix, *unit;
        int fig;
        bool higher, no_ratio;
    } rows[] = {
        {"", "calls/s", F_RATE, true, false},
        {" max/med", "x", F_SPREAD_MAX, false, true},
        {" min/med", "x", F_SPREAD_MIN, true, true},
        {" p50", "us", F_P50, false, true},
        {" p99", "us", F_P99, false, true},
        {" cs host", "sw/call", F_CS_HOST, false, false},
        {" cs workers", "sw/call", F_CS_WORK, false, false},
        {" CPU host", "us/call", F_CPU_HOST, false, false},
        {" CPU workers", "us/call", F_CPU_WORK, false, false},
        {" cs reaper", "sw/call", F_CS_LIB, false, true},
        {" CPU reaper", "us/call", F_CPU_LIB, false, true},
    };
    for (int p = 0; p < OS_POINTS; p++) {
        const double *m = med[p + 1], *fl = med[0];
        for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
            char label[48];
            snprintf(label, sizeof label, "%u thr if=%u%s", os_threads[p], os_inflight[p],
                     rows[i].suffix);
            int f = rows[i].fig; /* no floor value: spread, or the reaper the floor lacks */
            bool spread = f == F_SPREAD_MAX || f == F_SPREAD_MIN || f == F_CS_LIB || f == F_CPU_LIB;
            add_row(label, rows[i].unit, rows[i].higher, m[rows[i].fig],
                    spread ? NAN : fl[rows[i].fig], rows[i].no_ratio, note);
        }
    }
    /* The relay's rows: its rate and what it costs, each beside the floor's. */
    static const char *const relay_note =
        "relay: a reply pipe per thread, hand-off writes, no pool";
    static const struct {
        const char *suffix, *unit;
        int fig;
        bool higher;
    } relay_rows[] = {
        {"", "calls/s", F_RATE, true},
        {" cs host", "sw/call", F_CS_HOST, false},
        {" cs wrk", "sw/call", F_CS_WORK, false},
        {" CPU host", "us/call", F_CPU_HOST, false},
        {" CPU wrk", "us/call", F_CPU_WORK, false},
    };
    for (int p = 0; p < OS_POINTS; p++) {
        const double *m = med[OS_POINTS + 1 + p], *fl = med[0];
        for (size_t i = 0; i < sizeof relay_rows / sizeof relay_rows[0]; i++) {
            char label[48];
            snprintf(label, sizeof label, "%u thr if=%u relay%s", os_threads[p], os_inflight[p],
                     relay_rows[i].suffix);
            int f = relay_rows[i].fig;
            add_row(label, relay_rows[i].unit, relay_rows[i].higher, m[f], fl[f], false,
                    relay_note);
        }
    }
}

void scenario_oversubscribed(const bench_opts *o)
{
    static double fig[OS_RUNS][F_COUNT][BENCH_MAX_ROUNDS];
    for (int k = 0; k < OS_RUNS; k++)
        for (int f = 0; f < F_COUNT; f++)
            for (int r = 0; r < BENCH_MAX_ROUNDS; r++)
                fig[k][f][r] = NAN;
    uint8_t *payload = payload_new(PAYLOAD);
    floor_child fl[OS_WORKERS];
    pypool *pools[2] = {NULL, NULL}; /* max_inflight 1, 2 */
    relay *rl = NULL;
    progress_begin("oversubscribed", o->rounds * OS_RUNS);
    if (floors_start(o, fl, OS_WORKERS) != 0)
        goto out;
    for (unsigned i = 0; i < 2; i++)
        pool_open_inflight(o, "bench_mod", OS_WORKERS, i + 1, &pools[i]);
    if (relay_start(o, OS_WORKERS, OS_MAX_THR, &rl) != 0)
        bench_warn("oversubscribed: cannot start the relay's children");
    for (unsigned r = 0; r < o->rounds; r++)
        for (unsigned j = 0; j < OS_RUNS; j++) {
            unsigned k = r % 2 ? OS_RUNS - 1 - j : j;
            unsigned p = k == 0 ? 0 : (k - 1) % OS_POINTS; /* the point, for k > 0 */
            os_ctx c = {.floors = fl, .payload = payload};
            c.nlib = self_other_tids(c.lib_tids, 8);
            if (k > OS_POINTS) {
                c.relay = rl;
                if (rl)
                    relay_set_inflight(rl, os_inflight[p]);
            } else if (k > 0) {
                c.pool = pools[os_inflight[p] - 1];
            }
            if (k > 0 && !c.pool && !c.relay) {
                progress_step("");
                continue;
            }
            double f[F_COUNT];
            os_measure(o, &c, k == 0 ? OS_WORKERS : os_threads[p], f);
            for (int x = 0; x < F_COUNT; x++)
                fig[k][x][r] = f[x];
            progress_step(k == 0 ? "floor" : k > OS_POINTS ? "relay" : "");
        }
    for (unsigned i = 0; i < 2; i++)
        pypool_destroy(pools[i]);
    relay_stop(rl);
    floors_stop(fl, OS_WORKERS);
out:
    progress_end();
    os_report(o, fig);
    free(payload);
}

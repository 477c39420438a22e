/*
 * scenarios_throughput.c - throughput of 16 B echo calls vs client threads, for each pool size.
 *
 * pypool: T client threads calling pypool_call on a pool of N workers. Floor: min(T, N)
 * dedicated threads each driving its own floor child back to back (the best any dispatcher
 * could do with T clients and N children; see floor.c). Peer: ProcessPoolExecutor with N
 * workers and batches of outstanding submits. Rounds alternate pypool and floor per point; each
 * figure is the median over rounds.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "contenders.h"

#define PAYLOAD 16

typedef struct tp_acc {
    double pool[BENCH_MAX_LIST][BENCH_MAX_ROUNDS];
    double floor[BENCH_MAX_LIST][BENCH_MAX_ROUNDS]; /* by point: floor with min(T, N) threads */
    double peer[BENCH_MAX_ROUNDS];
} tp_acc;

static double run_rate(contender_ctx *c, const bench_opts *o, unsigned threads)
{
    load_result res;
    double rate = NAN;
    if (contender_run(c, o, threads, false, &res) == 0)
        rate = res.calls_per_s;
    load_result_free(&res);
    return rate;
}

/* The floor at k threads was maybe measured already this round for a smaller point. */
static double floor_rate(tp_acc *a, const bench_opts *o, contender_ctx *fc, unsigned r,
                         unsigned point, unsigned k)
{
    for (unsigned j = 0; j < point; j++) {
        unsigned kj = o->threads.v[j] < fc->nfloors ? o->threads.v[j] : fc->nfloors;
        if (kj == k && !isnan(a->floor[j][r]))
            return a->floor[j][r];
    }
    return run_rate(fc, o, k);
}

static void run_round(tp_acc *a, const bench_opts *o, contender_ctx *pc, contender_ctx *fc,
                      unsigned r)
{
    peer_throughput(o, "echo", fc->nfloors, &a->peer[r]);
    progress_step("peer");
    for (unsigned j = 0; j < o->threads.n; j++) {
        unsigned t = o->threads.v[j];
        unsigned k = t < fc->nfloors ? t : fc->nfloors;
        if (impl_first(r, j)) {
            a->pool[j][r] = run_rate(pc, o, t);
            a->floor[j][r] = floor_rate(a, o, fc, r, j, k);
        } else {
            a->floor[j][r] = floor_rate(a, o, fc, r, j, k);
            a->pool[j][r] = run_rate(pc, o, t);
        }
        progress_step("");
    }
}

static void report_workers(tp_acc *a, const bench_opts *o, unsigned n)
{
    double x[BENCH_MAX_LIST], yp[BENCH_MAX_LIST], yf[BENCH_MAX_LIST];
    double peer = median_of(a->peer, o->rounds);
    for (unsigned j = 0; j < o->threads.n; j++) {
        char label[48];
        snprintf(label, sizeof label, "workers=%u threads=%u", n, o->threads.v[j]);
        bench_row *row = results_add("throughput", label, "calls/s", true);
        row->v[IMPL_POOL] = median_of(a->pool[j], o->rounds);
        row->v[IMPL_FLOOR] = median_of(a->floor[j], o->rounds);
        row->v[IMPL_PEER] = peer;
        snprintf(row->note, sizeof row->note, "floor: min(threads, workers) dedicated pairs");
        x[j] = o->threads.v[j];
        yp[j] = row->v[IMPL_POOL];
        yf[j] = row->v[IMPL_FLOOR];
    }
    char name[40];
    snprintf(name, sizeof name, "throughput_w%u", n);
    results_series(name, IMPL_POOL, x, yp, o->threads.n);
    results_series(name, IMPL_FLOOR, x, yf, o->threads.n);
}

static void fill_nan(tp_acc *a)
{
    for (unsigned j = 0; j < BENCH_MAX_LIST; j++)
        for (unsigned r = 0; r < BENCH_MAX_ROUNDS; r++)
            a->pool[j][r] = a->floor[j][r] = NAN;
    for (unsigned r = 0; r < BENCH_MAX_ROUNDS; r++)
        a->peer[r] = NAN;
}

static void measure_workers(const bench_opts *o, unsigned n, uint8_t *payload)
{
    tp_acc *a = calloc(1, sizeof *a);
    floor_child *fl = calloc(n, sizeof *fl);
    fill_nan(a);
    pypool *pool = NULL;
    if (floors_start(o, fl, n) == 0) {
        pool_open(o, "bench_mod", n, &pool);
        contender_ctx pc = {IMPL_POOL, pool, NULL, 0, "echo", payload, PAYLOAD};
        contender_ctx fc = {IMPL_FLOOR, NULL, fl, n, "echo", payload, PAYLOAD};
        for (unsigned r = 0; r < o->rounds; r++)
            run_round(a, o, &pc, &fc, r);
        pypool_destroy(pool);
        floors_stop(fl, n);
    }
    report_workers(a, o, n);
    free(fl);
    free(a);
}

void scenario_throughput(const bench_opts *o)
{
    uint8_t *payload = payload_new(PAYLOAD);
    progress_begin("throughput", o->workers.n * o->rounds * (o->threads.n + 1));
    for (unsigned i = 0; i < o->workers.n; i++)
        measure_workers(o, o->workers.v[i], payload);
    progress_end();
    free(payload);
}

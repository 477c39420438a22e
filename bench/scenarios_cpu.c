/*
 * scenarios_cpu.c - CPU-bound Python work (bench_work.burn_1ms, ~1 ms per call) vs workers:
 * pypool with N workers and N client threads, the floor with N dedicated thread+child pairs,
 * the peer with N processes, and the GIL baseline: N C threads calling the same function in
 * one embedded interpreter. A process pool scales with workers (up to the cores); the GIL
 * does not. Each figure is the median over rounds; "scaling" is calls/s over the 1-worker
 * figure of the same contender.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "contenders.h"

#define PAYLOAD 16

typedef struct cpu_acc {
    double rate[BENCH_MAX_LIST][IMPL_COUNT][BENCH_MAX_ROUNDS];
} cpu_acc;

static double run_rate(contender_ctx *c, const bench_opts *o, unsigned threads)
{
    load_result res;
    double rate = NAN;
    if (contender_run(c, o, threads, false, &res) == 0)
        rate = res.calls_per_s;
    load_result_free(&res);
    return rate;
}

static void run_round(cpu_acc *a, const bench_opts *o, contender_ctx *cs, unsigned i, unsigned r)
{
    unsigned n = o->workers.v[i];
    peer_throughput(o, "burn_1ms", n, &a->rate[i][IMPL_PEER][r]);
    bool pool_first = impl_first(r, i);
    contender_ctx *first = pool_first ? &cs[IMPL_POOL] : &cs[IMPL_FLOOR];
    contender_ctx *second = pool_first ? &cs[IMPL_FLOOR] : &cs[IMPL_POOL];
    a->rate[i][first->impl][r] = run_rate(first, o, n);
    a->rate[i][second->impl][r] = run_rate(second, o, n);
    a->rate[i][IMPL_EMBED][r] = run_rate(&cs[IMPL_EMBED], o, n);
    progress_step("");
}

static void measure_workers(cpu_acc *a, const bench_opts *o, unsigned i, uint8_t *payload)
{
    unsigned n = o->workers.v[i];
    floor_child *fl = calloc(n, sizeof *fl);
    pypool *pool = NULL;
    if (floors_start(o, fl, n) == 0) {
        pool_open(o, "bench_mod", n, &pool);
        contender_ctx cs[IMPL_COUNT] = {
            [IMPL_POOL] = {IMPL_POOL, pool, NULL, 0, "burn_1ms", payload, PAYLOAD},
            [IMPL_FLOOR] = {IMPL_FLOOR, NULL, fl, n, "burn_1ms", payload, PAYLOAD},
            [IMPL_PEER] = {IMPL_PEER, NULL, NULL, 0, "burn_1ms", payload, PAYLOAD},
            [IMPL_EMBED] = {IMPL_EMBED, NULL, NULL, 0, "burn_1ms", payload, PAYLOAD},
        };
        for (unsigned r = 0; r < o->rounds; r++)
            run_round(a, o, cs, i, r);
        pypool_destroy(pool);
        floors_stop(fl, n);
    }
    free(fl);
}

static void report(cpu_acc *a, const bench_opts *o)
{
    double x[BENCH_MAX_LIST], y[IMPL_COUNT][BENCH_MAX_LIST], base[IMPL_COUNT];
    for (unsigned i = 0; i < o->workers.n; i++) {
        char label[48];
        snprintf(label, sizeof label, "workers=%u", o->workers.v[i]);
        bench_row *row = results_add("cpu", label, "calls/s", true);
        snprintf(row->note, sizeof row->note, "embedded: as many threads on one GIL");
        x[i] = o->workers.v[i];
        for (int impl = 0; impl < IMPL_COUNT; impl++) {
            row->v[impl] = median_of(a->rate[i][impl], o->rounds);
            y[impl][i] = row->v[impl];
            if (i == 0)
                base[impl] = row->v[impl] / o->workers.v[0];
        }
        snprintf(label, sizeof label, "workers=%u scaling", o->workers.v[i]);
        bench_row *sc = results_add("cpu", label, "x", true);
        for (int impl = 0; impl < IMPL_COUNT; impl++)
            sc->v[impl] = row->v[impl] / base[impl];
    }
    for (int impl = 0; impl < IMPL_COUNT; impl++)
        results_series("cpu_scaling", impl, x, y[impl], o->workers.n);
}

void scenario_cpu(const bench_opts *o)
{
    cpu_acc *a = calloc(1, sizeof *a);
    for (unsigned i = 0; i < BENCH_MAX_LIST; i++)
        for (int impl = 0; impl < IMPL_COUNT; impl++)
            for (unsigned r = 0; r < BENCH_MAX_ROUNDS; r++)
                a->rate[i][impl][r] = NAN;
    uint8_t *payload = payload_new(PAYLOAD);
    progress_begin("cpu", o->workers.n * o->rounds);
    for (unsigned i = 0; i < o->workers.n; i++)
        measure_workers(a, o, i, payload);
    progress_end();
    report(a, o);
    free(payload);
    free(a);
}

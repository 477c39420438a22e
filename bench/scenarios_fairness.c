/*
 * scenarios_fairness.c - fairness under contention: 64 client threads on 2 workers, each
 * looping checkout -> 16 B echo -> checkin. The measure is the wait for a worker (checkout
 * time): its median, p99, max and max/median, and the spread of calls per thread.
 *
 * The floor here is the naive way without a pool: the same 64 threads sharing 2 floor
 * children, thread i locking child i % 2's pthread mutex around its call. Its "wait" is the
 * time to take the mutex. A fair pool should show a bounded max/median and an even spread.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"
#include "contenders.h"

#define FAIR_THREADS 64
#define FAIR_WORKERS 2
#define PAYLOAD      16

typedef struct fair_ctx {
    pypool *pool;
    floor_child *floors;
    pthread_mutex_t locks[FAIR_WORKERS];
    const uint8_t *payload;
} fair_ctx;

static int pool_fair_call(void *ctxp, load_thread *t)
{
    fair_ctx *c = ctxp;
    pypool_worker *w = NULL;
    int64_t t0 = bench_now_ns();
    int rc = pypool_checkout(c->pool, -1, &w);
    t->last_extra = (double)(bench_now_ns() - t0) / 1e3;
    if (rc != PYPOOL_OK)
        return rc;
    pypool_result res;
    rc = pypool_worker_call(w, "echo", c->payload, PAYLOAD, -1, &res);
    pypool_result_free(&res);
    pypool_checkin(w);
    return rc;
}

static int floor_fair_call(void *ctxp, load_thread *t)
{
    fair_ctx *c = ctxp;
    unsigned i = t->tid % FAIR_WORKERS;
    int64_t t0 = bench_now_ns();
    pthread_mutex_lock(&c->locks[i]);
    t->last_extra = (double)(bench_now_ns() - t0) / 1e3;
    int rc = floor_call(&c->floors[i], "echo", c->payload, PAYLOAD);
    pthread_mutex_unlock(&c->locks[i]);
    return rc;
}

static void add_rows(int impl, load_result *res)
{
    static const char *const labels[] = {
        "wait p50", "wait p99", "wait max", "wait max/median", "calls/thread min/max", "calls/s"};
    static const char *const units[] = {"us", "us", "us", "x", "x", "calls/s"};
    double p50 = samples_pct(&res->extra, 50);
    double v[] = {
        p50,
        samples_pct(&res->extra, 99),
        samples_max(&res->extra),
        samples_max(&res->extra) / p50,
        res->max_thread_calls ? (double)res->min_thread_calls / (double)res->max_thread_calls : NAN,
        res->calls_per_s};
    for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
        bench_row *row = results_find("fairness", labels[k]);
        if (!row) {
            row = results_add("fairness", labels[k], units[k], k >= 4);
            row->no_ratio = k < 4; /* a mutex is a reference here, not a floor */
            snprintf(row->note, sizeof row->note, "floor: 64 threads, a mutex per child");
        }
        row->v[impl] = v[k];
    }
}

void scenario_fairness(const bench_opts *o)
{
    fair_ctx c = {0};
    floor_child fl[FAIR_WORKERS];
    uint8_t *payload = payload_new(PAYLOAD);
    c.payload = payload;
    c.floors = fl;
    for (int i = 0; i < FAIR_WORKERS; i++)
        pthread_mutex_init(&c.locks[i], NULL);
    progress_begin("fairness", 2);
    load_result pr = {0}, fr = {0};
    if (pool_open(o, "bench_mod", FAIR_WORKERS, &c.pool) == PYPOOL_OK &&
        load_run(FAIR_THREADS, o->warmup, o->seconds, false, pool_fair_call, &c, &pr) == 0)
        add_rows(IMPL_POOL, &pr);
    pypool_destroy(c.pool);
    progress_step("");
    if (floors_start(o, fl, FAIR_WORKERS) == 0) {
        if (load_run(FAIR_THREADS, o->warmup, o->seconds, false, floor_fair_call, &c, &fr) == 0)
            add_rows(IMPL_FLOOR, &fr);
        floors_stop(fl, FAIR_WORKERS);
    }
    progress_end();
    load_result_free(&pr);
    load_result_free(&fr);
    for (int i = 0; i < FAIR_WORKERS; i++)
        pthread_mutex_destroy(&c.locks[i]);
    free(payload);
}

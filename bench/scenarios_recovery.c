/*
 * scenarios_recovery.c - recovery: SIGKILL the worker of a 1-worker pool, then time until a
 * call is served by its replacement (the first call may fail with PYPOOL_EWORKER when it meets
 * the dead worker before the reaper does; the loop retries at once). The floor is the least a
 * replacement can cost: spawning one floor_worker.py and getting its first echo reply.
 * pypool's figure includes its restart_backoff_min_ms (default 10 ms) by design.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>

#include "bench.h"
#include "contenders.h"

#define GIVE_UP_NS (60 * (int64_t)1000000000)

static double pool_recovery_ms(pypool *p)
{
    int old_pid = 0, pid = 0;
    if (pool_echo(p, "echo", "x", 1, &old_pid) != PYPOOL_OK || old_pid <= 0)
        return NAN;
    kill(old_pid, SIGKILL);
    int64_t t0 = bench_now_ns();
    while (bench_now_ns() - t0 < GIVE_UP_NS) {
        if (pool_echo(p, "echo", "x", 1, &pid) == PYPOOL_OK && pid != old_pid)
            return (double)(bench_now_ns() - t0) / 1e6;
    }
    return NAN;
}

static double floor_respawn_ms(const bench_opts *o)
{
    floor_child c;
    int64_t t0 = bench_now_ns();
    if (floor_start(o, &c) != 0)
        return NAN;
    int rc = floor_call(&c, "echo", "x", 1);
    int64_t t1 = bench_now_ns();
    floor_stop(&c);
    return rc == 0 ? (double)(t1 - t0) / 1e6 : NAN;
}

/* A fresh pool per round: kills in a row would measure the crash-loop backoff (which grows
 * while a worker has not been up for long), not one recovery. */
static double fresh_pool_recovery_ms(const bench_opts *o)
{
    pypool *p = NULL;
    double ms = NAN;
    if (pool_open(o, "bench_mod", 1, &p) == PYPOOL_OK)
        ms = pool_recovery_ms(p);
    pypool_destroy(p);
    return ms;
}

void scenario_recovery(const bench_opts *o)
{
    unsigned rounds = o->rounds < 3 ? 3 : o->rounds;
    double pool[BENCH_MAX_ROUNDS], floor[BENCH_MAX_ROUNDS];
    progress_begin("recovery", rounds);
    for (unsigned r = 0; r < rounds; r++) {
        if (impl_first(r, 0)) {
            pool[r] = fresh_pool_recovery_ms(o);
            floor[r] = floor_respawn_ms(o);
        } else {
            floor[r] = floor_respawn_ms(o);
            pool[r] = fresh_pool_recovery_ms(o);
        }
        progress_step("");
    }
    progress_end();
    bench_row *row = results_add("recovery", "SIGKILL -> served", "ms", false);
    row->v[IMPL_POOL] = median_of(pool, rounds);
    row->v[IMPL_FLOOR] = median_of(floor, rounds);
    snprintf(row->note, sizeof row->note, "floor: spawn + first reply of one worker");
}

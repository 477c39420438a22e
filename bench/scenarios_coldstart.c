/*
 * scenarios_coldstart.c - cold start: time from pypool_create to every worker ready (create
 * returns once all said Hello), for 1, 2, 4, 8 workers (1 and 8 with --quick), against the
 * floor: as many bare interpreters with the same imports (google.protobuf, pypool_pb2,
 * bench_work) started in parallel by a shell-free C spawner (posix_spawn), each ready when it
 * writes one byte to its fd 4 after its imports. Python start-up is partly serialised in the
 * kernel on these VMs, so that parallel start, not N / cores, is the floor.
 *
 * Then a module whose import sleeps 0.5 s (a model load): 8 workers must be ready in about
 * one worker's time; its floor runs the same sleep after the same imports.
 * Rounds alternate pypool and the bare start; figures are medians over rounds.
 */
#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "bench.h"
#include "contenders.h"

/* Ready = one byte on fd 4 after the imports; then stay alive (like an idle worker) until the
 * harness closes fd 3, so that no early child's exit competes with the others' start-up. */
#define BARE_CODE                                                                                  \
    "import os, google.protobuf, pypool_pb2, bench_work\n"                                         \
    "os.write(4, b'R')\n"                                                                          \
    "os.read(3, 1)\n"
#define BARE_SLOW_CODE                                                                             \
    "import os, time, google.protobuf, pypool_pb2, bench_work\n"                                   \
    "time.sleep(0.5)\n"                                                                            \
    "os.write(4, b'R')\n"                                                                          \
    "os.read(3, 1)\n"
#define MAX_START 64

static const unsigned counts[] = {1, 2, 4, 8};
static const unsigned quick_counts[] = {1, 8}; /* --quick: the target's points only */
static const unsigned slow_counts[] = {1, 8};

/* Waits until every child wrote its byte (or closed fd 4); -1 if one failed. */
static int wait_ready(bench_proc *procs, unsigned n)
{
    unsigned ready = 0;
    int rc = 0;
    while (ready < n) {
        struct pollfd pfd[MAX_START];
        unsigned map[MAX_START], m = 0;
        for (unsigned i = 0; i < n; i++)
            if (procs[i].from_child >= 0) {
                pfd[m] = (struct pollfd){.fd = procs[i].from_child, .events = POLLIN};
                map[m++] = i;
            }
        if (poll(pfd, m, 60000) <= 0 && errno != EINTR)
            return -1;
        for (unsigned k = 0; k < m; k++) {
            if (!pfd[k].revents)
                continue;
            char c;
            if (read(pfd[k].fd, &c, 1) != 1)
                rc = -1;
            close(pfd[k].fd);
            procs[map[k]].from_child = -1;
            ready++;
        }
    }
    return rc;
}

/* ms until n bare interpreters, spawned in parallel, finished their imports. */
static double bare_start_ms(const bench_opts *o, unsigned n, bool slow)
{
    const char *argv[] = {o->python, "-c", slow ? BARE_SLOW_CODE : BARE_CODE, NULL};
    bench_proc procs[MAX_START];
    int64_t t0 = bench_now_ns();
    unsigned started = 0;
    for (; started < n; started++)
        if (bench_spawn(argv, bench_pythonpath(), -1, &procs[started]) != 0)
            break;
    int rc = started == n ? wait_ready(procs, started) : -1;
    int64_t t1 = bench_now_ns();
    for (unsigned i = 0; i < started; i++)
        bench_proc_finish(&procs[i]);
    return rc == 0 ? (double)(t1 - t0) / 1e6 : NAN;
}

/* ms from pypool_create to its return with every worker ready (destroy not timed). */
static double pool_start_ms(const bench_opts *o, unsigned n, const char *module)
{
    pypool *p = NULL;
    int64_t t0 = bench_now_ns();
    int rc = pool_open(o, module, n, &p);
    int64_t t1 = bench_now_ns();
    pypool_destroy(p);
    return rc == PYPOOL_OK ? (double)(t1 - t0) / 1e6 : NAN;
}

static void measure(const bench_opts *o, unsigned n, bool slow, unsigned rounds, bench_row *row)
{
    double pool[BENCH_MAX_ROUNDS], bare[BENCH_MAX_ROUNDS];
    const char *module = slow ? "slow_import_mod" : "bench_mod";
    for (unsigned r = 0; r < rounds; r++) {
        if (impl_first(r, n)) {
            pool[r] = pool_start_ms(o, n, module);
            bare[r] = bare_start_ms(o, n, slow);
        } else {
            bare[r] = bare_start_ms(o, n, slow);
            pool[r] = pool_start_ms(o, n, module);
        }
        progress_step("");
    }
    row->v[IMPL_POOL] = median_of(pool, rounds);
    row->v[IMPL_FLOOR] = median_of(bare, rounds);
    snprintf(row->note, sizeof row->note, "floor: as many bare interpreters started in parallel");
}

void scenario_coldstart(const bench_opts *o)
{
    /* single starts are noisy: at least 3 rounds, except in --quick */
    unsigned rounds = o->rounds < 3 && !o->quick ? 3 : o->rounds;
    const unsigned *ns = o->quick ? quick_counts : counts;
    unsigned nn = o->quick ? 2 : 4;
    progress_begin("coldstart", (nn + 2) * rounds);
    for (unsigned i = 0; i < nn; i++) {
        char label[48];
        snprintf(label, sizeof label, "workers=%u", ns[i]);
        measure(o, ns[i], false, rounds, results_add("coldstart", label, "ms", false));
    }
    for (unsigned i = 0; i < 2; i++) {
        char label[48];
        snprintf(label, sizeof label, "0.5 s import, workers=%u", slow_counts[i]);
        measure(o, slow_counts[i], true, rounds, results_add("coldstart", label, "ms", false));
    }
    progress_end();
}

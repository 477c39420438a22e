/*
 * floor.c - the physical floor: one raw C thread driving one floor_worker.py child over the two
 * pipes pypool uses (fd 3 requests, fd 4 replies), with the same Envelope frames, interpreter
 * and payload, and nothing else: no pool, no lock, no deadline, no poll.
 *
 * For N workers the floor is N such children, each driven by its own dedicated thread; with T
 * client threads and N workers it runs min(T, N) of them. That is the best any dispatcher can
 * do with T clients and N children (every child busy back to back, zero hand-off), so it is the
 * fair upper bound for pypool's throughput; sharing children between threads with a mutex would
 * add contention the floor is meant to exclude. (The fairness scenario does use a mutex-shared
 * floor, because there contention is the thing measured.)
 */
#include <errno.h>

#include "bench.h"

int floor_start(const bench_opts *o, floor_child *c)
{
    const char *argv[] = {o->python, BENCH_PY_DIR "/floor_worker.py", NULL};
    c->next_id = 1;
    c->buf.data = NULL;
    c->buf.cap = 0;
    return bench_spawn(argv, bench_pythonpath(), -1, &c->proc);
}

int floor_call(floor_child *c, const char *method, const void *payload, size_t len)
{
    uint64_t id = c->next_id++;
    int rc = wire_send_request(c->proc.to_child, id, method, payload, len, &c->buf);
    if (rc != 0)
        return rc;
    size_t got = 0;
    rc = wire_recv_response(c->proc.from_child, id, &c->buf, &got);
    if (rc == 0 && got != len)
        return -EPROTO;
    return rc;
}

void floor_stop(floor_child *c)
{
    bench_proc_finish(&c->proc); /* EOF on fd 3 ends the worker */
    wire_buf_free(&c->buf);
}

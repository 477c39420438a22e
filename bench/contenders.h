/*
 * contenders.h - one call of pypool, the floor or the embedded interpreter behind one function
 * (see contenders.c), and the helpers the scenarios share.
 */
#ifndef PYPOOL_BENCH_CONTENDERS_H
#define PYPOOL_BENCH_CONTENDERS_H

#include "bench.h"

typedef struct contender_ctx {
    int impl;            /* IMPL_POOL, IMPL_FLOOR or IMPL_EMBED */
    pypool *pool;        /* IMPL_POOL */
    floor_child *floors; /* IMPL_FLOOR: thread i drives floors[i % nfloors] */
    unsigned nfloors;
    const char *method; /* "echo" or "burn_1ms" */
    const uint8_t *payload;
    size_t len;
} contender_ctx;

int contender_call(void *ctx, load_thread *t);
/* load_run of the contender with o's warm-up and window; -1 if it is not available. */
int contender_run(contender_ctx *c, const bench_opts *o, unsigned threads, bool keep_lat,
                  load_result *out);

uint8_t *payload_new(size_t len); /* len bytes of 'x' */
int floors_start(const bench_opts *o, floor_child *f, unsigned n);
void floors_stop(floor_child *f, unsigned n);
/* Which of two contenders goes first at this point of this round (alternates both ways). */
bool impl_first(unsigned round, unsigned point);

#endif

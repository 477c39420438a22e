/* latency.h - the pool's wait/call latency histograms (see latency.c). */
#ifndef PYPOOL_LATENCY_H
#define PYPOOL_LATENCY_H

#include "slots.h"

int pypool__latency_init(pypool *p);
void pypool__latency_free(pypool *p);
/* The callers read the clock (each read is shared with what the call path needs anyway). */
/* A call (or checkout) that started at since_ns holds slot at now_ns: its wait ends. */
void pypool__latency_wait(pypool *p, unsigned slot, int64_t since_ns, int64_t now_ns);
/* A request sent at since_ns to slot's worker got its reply at now_ns. */
void pypool__latency_call(pypool *p, unsigned slot, int64_t since_ns, int64_t now_ns);
/* Adds every stripe into the two public histograms. */
void pypool__latency_merge(const pypool *p, pypool_histogram *wait, pypool_histogram *call);

#endif

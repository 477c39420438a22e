/*
 * latency.c - the pool's wait and call latency histograms: where they are recorded and how
 * stats read them.
 *
 * Design notes: a pool keeps LATENCY_STRIPES histograms of each kind, and a call records into the
 * stripe of the slot it holds, so threads on different workers rarely touch the same cache
 * lines. Recording takes no lock (histogram.c: relaxed atomics); pypool_stats_get merges every
 * stripe. The clock reads are shared with the call path's own: a call's start is also its
 * deadline's base, the request's send also ends the wait; only the reply's arrival is read for
 * the histograms alone. So a call costs one clock read and two relaxed atomic adds more.
 */
#include "latency.h"

#include <stdlib.h>

int pypool__latency_init(pypool *p)
{
    p->wait_hist = calloc(PYPOOL__LATENCY_STRIPES, sizeof *p->wait_hist);
    p->call_hist = calloc(PYPOOL__LATENCY_STRIPES, sizeof *p->call_hist);
    return p->wait_hist && p->call_hist ? 0 : PYPOOL_ENOMEM;
}

void pypool__latency_free(pypool *p)
{
    free(p->wait_hist);
    free(p->call_hist);
    p->wait_hist = p->call_hist = NULL;
}

/* Rounded to the nearest µs, not truncated: a bucket below 32 µs then holds [v - 0.5, v + 0.5)
 * and its value v is the midpoint, so small latencies are not read back up to 1 µs short. */
static uint64_t us_between(int64_t since_ns, int64_t now_ns)
{
    int64_t ns = now_ns - since_ns;
    return ns > 0 ? ((uint64_t)ns + 500u) / 1000u : 0;
}

void pypool__latency_wait(pypool *p, unsigned slot, int64_t since_ns, int64_t now_ns)
{
    pypool__hist_record(&p->wait_hist[slot % PYPOOL__LATENCY_STRIPES],
                        us_between(since_ns, now_ns));
}

void pypool__latency_call(pypool *p, unsigned slot, int64_t since_ns, int64_t now_ns)
{
    pypool__hist_record(&p->call_hist[slot % PYPOOL__LATENCY_STRIPES],
                        us_between(since_ns, now_ns));
}

void pypool__latency_merge(const pypool *p, pypool_histogram *wait, pypool_histogram *call)
{
    for (unsigned i = 0; i < PYPOOL__LATENCY_STRIPES; i++) {
        pypool__hist_merge(&p->wait_hist[i], wait);
        pypool__hist_merge(&p->call_hist[i], call);
    }
}

/*
 * histogram.h - lock-free latency histograms (log-linear buckets, layout in pypool.h): any
 * number of threads record with relaxed atomic adds, a reader merges them into a public
 * pypool_histogram. Knows nothing of the pool.
 */
#ifndef PYPOOL_HISTOGRAM_H
#define PYPOOL_HISTOGRAM_H

#include <stdatomic.h>
#include <stdint.h>

#include "pypool.h"

typedef struct pypool__hist {
    _Atomic uint64_t sum_us;
    _Atomic uint64_t max_us;
    _Atomic uint64_t buckets[PYPOOL_HISTOGRAM_BUCKETS];
} pypool__hist;

/* Records one value (µs). Safe from any thread, concurrently with readers. */
void pypool__hist_record(pypool__hist *h, uint64_t us);
/* Adds h's counts into out (a snapshot: a record racing the read may be half in). */
void pypool__hist_merge(const pypool__hist *h, pypool_histogram *out);

/* The bucket a value falls in, and a bucket's bounds: [lower, lower + width). */
unsigned pypool__hist_bucket(uint64_t us);
uint64_t pypool__hist_lower(unsigned bucket);
uint64_t pypool__hist_width(unsigned bucket);

#endif

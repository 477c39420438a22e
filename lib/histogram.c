/*
 * histogram.c - the log-linear latency histogram: bucket arithmetic, lock-free recording,
 * merging and percentiles.
 *
 * Design notes: values below 32 µs get a bucket each; above, each power of two is cut into 16
 * buckets (a bucket is at most 1/16 of its values wide, so its midpoint is within 3.2% of any
 * of them). Recording is two relaxed atomic adds (bucket, sum) and a rarely taken max update:
 * the count is the buckets' sum, computed on read. Relaxed is enough: a reader wants totals,
 * not an order between records, and a record racing a read shows up in the next one.
 */
#include "histogram.h"

#define SUB_BITS 4                /* 16 buckets per power of two */
#define SUB      (1u << SUB_BITS) /* 16 */
#define EXACT    (2u * SUB)       /* values below this have a bucket each */
#define TOP_MSB  31               /* the last power of two with buckets: [2^31, 2^32) */

unsigned pypool__hist_bucket(uint64_t us)
{
    if (us < EXACT)
        return (unsigned)us;
    unsigned msb = 63u - (unsigned)__builtin_clzll(us);
    if (msb > TOP_MSB)
        return PYPOOL_HISTOGRAM_BUCKETS - 1;
    unsigned shift = msb - SUB_BITS;
    return (msb - SUB_BITS) * SUB + (unsigned)(us >> shift);
}

uint64_t pypool__hist_lower(unsigned bucket)
{
    if (bucket < EXACT)
        return bucket;
    unsigned msb = bucket / SUB + SUB_BITS - 1;
    return (uint64_t)(SUB + bucket % SUB) << (msb - SUB_BITS);
}

uint64_t pypool__hist_width(unsigned bucket)
{
    if (bucket < EXACT)
        return 1;
    unsigned msb = bucket / SUB + SUB_BITS - 1;
    return (uint64_t)1 << (msb - SUB_BITS);
}

void pypool__hist_record(pypool__hist *h, uint64_t us)
{
    atomic_fetch_add_explicit(&h->buckets[pypool__hist_bucket(us)], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
    uint64_t max = atomic_load_explicit(&h->max_us, memory_order_relaxed);
    while (us > max && !atomic_compare_exchange_weak_explicit(
                           &h->max_us, &max, us, memory_order_relaxed, memory_order_relaxed))
        ;
}

void pypool__hist_merge(const pypool__hist *h, pypool_histogram *out)
{
    for (unsigned i = 0; i < PYPOOL_HISTOGRAM_BUCKETS; i++) {
        uint64_t n = atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        out->buckets[i] += n;
        out->count += n;
    }
    out->sum_us += atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    uint64_t max = atomic_load_explicit(&h->max_us, memory_order_relaxed);
    if (max > out->max_us)
        out->max_us = max;
}

double pypool_histogram_percentile(const pypool_histogram *h, double q)
{
    if (!h || h->count == 0)
        return 0.0;
    if (!(q > 0.0)) /* also NaN */
        q = 0.0;
    if (q > 1.0)
        q = 1.0;
    /* The rank of the q-quantile, 1-based: the smallest value with at least q of all below. */
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < PYPOOL_HISTOGRAM_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen < rank)
            continue;
        double lower = (double)pypool__hist_lower(i);
        double width = (double)pypool__hist_width(i);
        double mid = width > 1.0 ? lower + width / 2.0 : lower;
        /* Never above the largest value seen: the top bucket's midpoint can be. */
        return h->max_us && mid > (double)h->max_us ? (double)h->max_us : mid;
    }
    return (double)h->max_us;
}

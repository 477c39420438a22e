/*
 * scenarios_latency.c - latency of a no-op call (echo) for payloads of 16 B .. 16 MiB, one
 * client thread, one worker: pypool next to the floor, the peer (sequential
 * submit().result()) and the embedded interpreter. In each round every size runs every
 * contender in turn (the order alternates); p50, p90 and p99 are medians of the rounds' own
 * percentiles, max is the largest sample of all rounds.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "contenders.h"

#define NSIZES     5
#define CDF_LIMIT  400 /* points per CDF series */
#define WARM_CALLS 3   /* at least, per contender, size and round */

static const size_t sizes[NSIZES] = {16, 1024, 64 << 10, 1 << 20, 16 << 20};

typedef struct lat_acc {
    samples all[NSIZES][IMPL_COUNT];
    double pct[NSIZES][IMPL_COUNT][3][BENCH_MAX_ROUNDS]; /* p50, p90, p99 of each round */
    /* The pool's own histograms over the timed windows (stats after minus before), reported
     * beside the external timings, which they must agree with to their resolution: p50 and p99
     * of wait_us and call_us of each round, and all rounds pooled. */
    double own_pct[NSIZES][2][2][BENCH_MAX_ROUNDS]; /* [wait, call][p50, p99][round] */
    pypool_histogram own_wait[NSIZES], own_call[NSIZES];
} lat_acc;

static const double own_q[2] = {0.5, 0.99};

/* acc += after - before, bucket by bucket (counters only grow). A window's max cannot be told
 * from two lifetime maxima: max_us stays 0, which pypool_histogram_percentile takes as unknown. */
static void hist_add_delta(pypool_histogram *acc, const pypool_histogram *before,
                           const pypool_histogram *after)
{
    acc->count += after->count - before->count;
    acc->sum_us += after->sum_us - before->sum_us;
    for (unsigned b = 0; b < PYPOOL_HISTOGRAM_BUCKETS; b++)
        acc->buckets[b] += after->buckets[b] - before->buckets[b];
}

/* One round's window of the pool's own histograms: its percentiles, and into the pooled ones. */
static void keep_own_round(lat_acc *a, unsigned r, size_t i, const pypool_stats *before,
                           const pypool_stats *after)
{
    static pypool_histogram d[2]; /* large: kept off the stack */
    memset(d, 0, sizeof d);
    hist_add_delta(&d[0], &before->wait_us, &after->wait_us);
    hist_add_delta(&d[1], &before->call_us, &after->call_us);
    for (int k = 0; k < 2; k++)
        for (int t = 0; t < 2; t++)
            a->own_pct[i][k][t][r] = pypool_histogram_percentile(&d[k], own_q[t]);
    hist_add_delta(&a->own_wait[i], &before->wait_us, &after->wait_us);
    hist_add_delta(&a->own_call[i], &before->call_us, &after->call_us);
}

/* "16 B", "64 KiB", "16 MiB" */
static void size_label(size_t size, char *buf, size_t len)
{
    if (size >= 1 << 20)
        snprintf(buf, len, "%zu MiB", size >> 20);
    else if (size >= 1 << 10)
        snprintf(buf, len, "%zu KiB", size >> 10);
    else
        snprintf(buf, len, "%zu B", size);
}

static void keep_round(lat_acc *a, unsigned r, size_t i, int impl, samples *s)
{
    a->pct[i][impl][0][r] = samples_pct(s, 50);
    a->pct[i][impl][1][r] = samples_pct(s, 90);
    a->pct[i][impl][2][r] = samples_pct(s, 99);
    samples_append(&a->all[i][impl], s);
}

/* One client, back-to-back calls: warm-up (at least WARM_CALLS calls: the first big frames of a
 * process pay page faults for fresh buffers until malloc settles), then the window, extended
 * until o->min_calls calls were timed (a 16 MiB echo can outlast a whole quick window). */
static int measure_serial(contender_ctx *c, const bench_opts *o, samples *out, lat_acc *a,
                          unsigned r, size_t size_index)
{
    load_thread t = {0};
    int64_t warm_end = bench_now_ns() + (int64_t)(o->warmup * 1e9);
    for (unsigned k = 0; k < WARM_CALLS || bench_now_ns() < warm_end; k++)
        if (contender_call(c, &t) != 0)
            return -1;
    static pypool_stats before, after; /* large: kept off the stack; one scenario at a time */
    if (c->impl == IMPL_POOL)
        pypool_stats_get(c->pool, &before);
    int64_t end = bench_now_ns() + (int64_t)(o->seconds * 1e9);
    for (;;) {
        int64_t t0 = bench_now_ns();
        if (t0 >= end && out->n >= o->min_calls) {
            if (c->impl == IMPL_POOL) {
                pypool_stats_get(c->pool, &after);
                keep_own_round(a, r, size_index, &before, &after);
            }
            return 0;
        }
        if (contender_call(c, &t) != 0)
            return -1;
        samples_push(out, (double)(bench_now_ns() - t0) / 1e3);
    }
}

static void run_local(lat_acc *a, contender_ctx *c, const bench_opts *o, unsigned r, size_t i)
{
    samples s = {0};
    bool usable = (c->impl != IMPL_POOL || c->pool) && (c->impl != IMPL_EMBED || emb_available());
    if (usable && measure_serial(c, o, &s, a, r, i) == 0)
        keep_round(a, r, i, c->impl, &s);
    else if (usable)
        bench_warn("latency: %s failed a %zu-byte echo", bench_impl_name(c->impl), c->len);
    samples_free(&s);
}

static void run_round(lat_acc *a, const bench_opts *o, pypool *pool, floor_child *fl, unsigned r)
{
    samples peer[NSIZES] = {0};
    if (peer_latency(o, sizes, NSIZES, peer) == 0)
        for (size_t i = 0; i < NSIZES; i++)
            keep_round(a, r, i, IMPL_PEER, &peer[i]);
    progress_step("peer");
    for (size_t i = 0; i < NSIZES; i++) {
        uint8_t *payload = payload_new(sizes[i]);
        contender_ctx pc = {IMPL_POOL, pool, NULL, 0, "echo", payload, sizes[i]};
        contender_ctx fc = {IMPL_FLOOR, NULL, fl, 1, "echo", payload, sizes[i]};
        contender_ctx ec = {IMPL_EMBED, NULL, NULL, 0, "echo", payload, sizes[i]};
        bool pool_first = impl_first(r, (unsigned)i);
        run_local(a, pool_first ? &pc : &fc, o, r, i);
        run_local(a, pool_first ? &fc : &pc, o, r, i);
        run_local(a, &ec, o, r, i);
        free(payload);
        samples_free(&peer[i]);
        progress_step("");
    }
}

static void add_cdf_series(samples *s, size_t size, int impl)
{
    if (!s->n)
        return;
    size_t n = s->n < CDF_LIMIT ? s->n : CDF_LIMIT;
    double *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
    for (size_t k = 0; k < n; k++) {
        double q = (double)(k + 1) / (double)n;
        x[k] = samples_pct(s, q * 100);
        y[k] = q;
    }
    char name[40];
    snprintf(name, sizeof name, "latency_cdf_%zu", size);
    results_series(name, impl, x, y, n);
    free(x);
    free(y);
}

/*
 * The pool's own view of the calls timed externally: wait_us (call start -> a worker in hand)
 * and call_us (request sent -> reply read), as medians of the rounds' percentiles like the
 * external rows above them. call_us lies inside each external timing, so none of its
 * percentiles over all rounds may exceed the external one over the same calls by more than the
 * histogram's resolution (a bucket is 1/16 of its values wide; values are rounded to the µs),
 * and both histograms must count exactly the calls timed. A breach is a bug: warned.
 */
#define OWN_NOTE "own: the pool's pypool_stats histograms of the same calls"

static void report_own(lat_acc *a, size_t i, const char *sl, unsigned rounds)
{
    static const char *const kind[2] = {"wait_us", "call_us"};
    samples *ext = &a->all[i][IMPL_POOL];
    char label[80];
    for (int t = 0; t < 2; t++) {
        for (int k = 1; k >= 0; k--) {
            snprintf(label, sizeof label, "%s %s own %s", sl, t ? "p99" : "p50", kind[k]);
            bench_row *row = results_add("latency", label, "us", false);
            row->v[IMPL_POOL] = median_of(a->own_pct[i][k][t], rounds);
            snprintf(row->note, sizeof row->note, "%s", OWN_NOTE);
        }
        double call = pypool_histogram_percentile(&a->own_call[i], own_q[t]);
        double outer = samples_pct(ext, own_q[t] * 100);
        if (ext->n && call > outer * (1.0 + 1.0 / 16) + 0.5)
            bench_warn(
                "latency %s: the pool's own p%g call_us %.1f us exceeds the external %.1f us "
                "(all rounds) beyond the histogram's resolution",
                sl, own_q[t] * 100, call, outer);
    }
    if (a->own_call[i].count != ext->n || a->own_wait[i].count != ext->n)
        bench_warn("latency %s: the pool's histograms count %llu calls and %llu waits, the bench "
                   "timed %zu calls",
                   sl, (unsigned long long)a->own_call[i].count,
                   (unsigned long long)a->own_wait[i].count, ext->n);
}

static void report_size(lat_acc *a, size_t i, unsigned rounds)
{
    static const char *const tag[] = {"p50", "p90", "p99", "max"};
    char sl[32], label[80];
    size_label(sizes[i], sl, sizeof sl);
    for (int t = 0; t < 4; t++) {
        snprintf(label, sizeof label, "%s %s", sl, tag[t]);
        bench_row *row = results_add("latency", label, "us", false);
        for (int impl = 0; impl < IMPL_COUNT; impl++)
            row->v[impl] =
                t < 3 ? median_of(a->pct[i][impl][t], rounds) : samples_max(&a->all[i][impl]);
    }
    report_own(a, i, sl, rounds);
    for (int impl = 0; impl < IMPL_COUNT; impl++) {
        if (sizes[i] == 16 || sizes[i] == 64 << 10)
            add_cdf_series(&a->all[i][impl], sizes[i], impl);
        samples_free(&a->all[i][impl]);
    }
}

void scenario_latency(const bench_opts *o)
{
    lat_acc *a = calloc(1, sizeof *a);
    for (size_t i = 0; i < NSIZES; i++)
        for (int impl = 0; impl < IMPL_COUNT; impl++)
            for (int t = 0; t < 3; t++)
                for (unsigned r = 0; r < BENCH_MAX_ROUNDS; r++)
                    a->pct[i][impl][t][r] = NAN;
    for (size_t i = 0; i < NSIZES; i++)
        for (int k = 0; k < 2; k++)
            for (int t = 0; t < 2; t++)
                for (unsigned r = 0; r < BENCH_MAX_ROUNDS; r++)
                    a->own_pct[i][k][t][r] = NAN;
    floor_child fl;
    pypool *pool = NULL;
    progress_begin("latency", o->rounds * (NSIZES + 1));
    if (floors_start(o, &fl, 1) == 0) {
        pool_open(o, "bench_mod", 1, &pool);
        for (unsigned r = 0; r < o->rounds; r++)
            run_round(a, o, pool, &fl, r);
        pypool_destroy(pool);
        floors_stop(&fl, 1);
    }
    progress_end();
    for (size_t i = 0; i < NSIZES; i++)
        report_size(a, i, o->rounds);
    free(a);
}

/*
 * scenarios_stream.c - streams from a generator handler (bench_io_mod.chunks, 16-byte chunks),
 * one client, a pool of one worker, for max_inflight 1 and 2:
 *   first chunk  pypool_stream_open -> the first pypool_stream_next returns (a 1-chunk stream,
 *                then drained to PYPOOL_DONE and closed outside the timing), p50 and p99,
 *                against a no-op call (16 B echo) on the same pool: target p50 <= 1.2x;
 *   chunks/s     streams of 4096 chunks read back to back (open and close included), against
 *                the no-op call rate of that one worker (the better of 1 and 2 client threads
 *                calling back to back): target >= 2x (a chunk needs no request).
 * Every figure and its baseline come from the same pool in the same round; the order of the
 * measurements flips every round; figures are medians over rounds.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "contenders.h"

#define PAYLOAD           16
#define CHUNKS_PER_STREAM 4096
#define WARM_CALLS        20

enum { M_CALL, M_FIRST, M_RATE1, M_RATE2, M_CHUNKS, M_COUNT };
enum { F_CALL50, F_CALL99, F_FIRST50, F_FIRST99, F_CALLRATE, F_CHUNKRATE, F_COUNT };

static int drain_close(pypool_stream *s)
{
    int rc;
    for (;;) {
        pypool_result chunk;
        rc = pypool_stream_next(s, -1, &chunk);
        pypool_result_free(&chunk);
        if (rc != PYPOOL_OK)
            break;
    }
    pypool_stream_close(s);
    return rc == PYPOOL_DONE ? 0 : rc;
}

/* Open -> first chunk of a 1-chunk stream, in µs; NAN on failure. */
static double first_chunk_us(pypool *p)
{
    pypool_stream *s = NULL;
    pypool_result chunk;
    int64_t t0 = bench_now_ns();
    int rc = pypool_stream_open(p, NULL, "chunks", "1", 1, -1, &s);
    if (rc != PYPOOL_OK) {
        bench_warn("stream: open: %s: %s", pypool_strerror(rc), pypool_last_error());
        return NAN;
    }
    rc = pypool_stream_next(s, -1, &chunk);
    int64_t t1 = bench_now_ns();
    bool ok = rc == PYPOOL_OK && chunk.len == PAYLOAD;
    if (rc != PYPOOL_OK)
        bench_warn("stream: first next: %s: %s", pypool_strerror(rc),
                   chunk.error_message ? chunk.error_message : "");
    pypool_result_free(&chunk);
    if (drain_close(s) != 0 || !ok)
        return NAN;
    return (double)(t1 - t0) / 1e3;
}

/* One stream of CHUNKS_PER_STREAM chunks read to its end; the chunk count, or -1. */
static long read_stream(pypool *p)
{
    static const char n[] = "4096";
    pypool_stream *s = NULL;
    if (pypool_stream_open(p, NULL, "chunks", n, sizeof n - 1, -1, &s) != PYPOOL_OK)
        return -1;
    long got = 0;
    int rc;
    for (;;) {
        pypool_result chunk;
        rc = pypool_stream_next(s, -1, &chunk);
        pypool_result_free(&chunk);
        if (rc != PYPOOL_OK)
            break;
        got++;
    }
    pypool_stream_close(s);
    if (rc != PYPOOL_DONE) {
        bench_warn("stream: next: %s after %ld chunks", pypool_strerror(rc), got);
        return -1;
    }
    return got;
}

static double call_us(pypool *p, const uint8_t *payload)
{
    int64_t t0 = bench_now_ns();
    if (pool_echo(p, "echo", payload, PAYLOAD, NULL) != PYPOOL_OK)
        return NAN;
    return (double)(bench_now_ns() - t0) / 1e3;
}

/* Serial samples of fn for o->seconds (after a few warm-up calls): p50 and p99 in fig. */
static void serial(const bench_opts *o, pypool *p, const uint8_t *payload, bool stream, double *p50,
                   double *p99)
{
    samples s = {0};
    for (int i = 0; i < WARM_CALLS; i++)
        (void)(stream ? first_chunk_us(p) : call_us(p, payload));
    int64_t end = bench_now_ns() + (int64_t)(o->seconds * 1e9);
    while (bench_now_ns() < end || s.n < o->min_calls) {
        double us = stream ? first_chunk_us(p) : call_us(p, payload);
        if (isnan(us))
            break;
        samples_push(&s, us);
    }
    *p50 = samples_pct(&s, 50);
    *p99 = samples_pct(&s, 99);
    samples_free(&s);
}

typedef struct rate_ctx {
    pypool *pool;
    const uint8_t *payload;
} rate_ctx;

static int rate_call(void *ctxp, unsigned tid)
{
    (void)tid;
    rate_ctx *c = ctxp;
    return pool_echo(c->pool, "echo", c->payload, PAYLOAD, NULL);
}

static double call_rate(const bench_opts *o, pypool *p, const uint8_t *payload, unsigned threads)
{
    rate_ctx c = {p, payload};
    win_result res;
    double rate = NAN;
    if (win_run(threads, o->warmup, o->seconds, false, rate_call, NULL, &c, &res) == 0 &&
        !res.errors)
        rate = res.calls_per_s;
    win_result_free(&res);
    return rate;
}

static double chunk_rate(const bench_opts *o, pypool *p)
{
    if (read_stream(p) < 0) /* warm-up */
        return NAN;
    long chunks = 0;
    int64_t t0 = bench_now_ns(), end = t0 + (int64_t)(o->seconds * 1e9), t1;
    do {
        long got = read_stream(p);
        if (got < 0)
            return NAN;
        chunks += got;
        t1 = bench_now_ns();
    } while (t1 < end);
    return (double)chunks / ((double)(t1 - t0) / 1e9);
}

static void st_round(const bench_opts *o, pypool *p, const uint8_t *payload, unsigned r,
                     double *fig)
{
    for (int j = 0; j < M_COUNT; j++) {
        int m = r % 2 ? M_COUNT - 1 - j : j;
        switch (m) {
        case M_CALL:
            serial(o, p, payload, false, &fig[F_CALL50], &fig[F_CALL99]);
            break;
        case M_FIRST:
            serial(o, p, payload, true, &fig[F_FIRST50], &fig[F_FIRST99]);
            break;
        case M_RATE1:
        case M_RATE2: {
            double rate = call_rate(o, p, payload, m == M_RATE1 ? 1 : 2);
            if (isnan(fig[F_CALLRATE]) || rate > fig[F_CALLRATE])
                fig[F_CALLRATE] = rate;
            break;
        }
        case M_CHUNKS:
            fig[F_CHUNKRATE] = chunk_rate(o, p);
            break;
        }
    }
}

static void add_row(const char *label, const char *unit, bool higher, double pool, double base,
                    const char *note)
{
    bench_row *row = results_add("stream", label, unit, higher);
    row->v[IMPL_POOL] = pool;
    row->v[IMPL_FLOOR] = base;
    snprintf(row->note, sizeof row->note, "%s", note);
}

void scenario_stream(const bench_opts *o)
{
    static double fig[2][F_COUNT][BENCH_MAX_ROUNDS];
    for (int i = 0; i < 2; i++)
        for (int f = 0; f < F_COUNT; f++)
            for (int r = 0; r < BENCH_MAX_ROUNDS; r++)
                fig[i][f][r] = NAN;
    uint8_t *payload = payload_new(PAYLOAD);
    pypool *pools[2] = {NULL, NULL};
    progress_begin("stream", 2 * o->rounds);
    for (unsigned i = 0; i < 2; i++)
        pool_open_inflight(o, "bench_io_mod", 1, i + 1, &pools[i]);
    for (unsigned r = 0; r < o->rounds; r++)
        for (unsigned j = 0; j < 2; j++) {
            unsigned i = r % 2 ? 1 - j : j;
            double f[F_COUNT];
            for (int x = 0; x < F_COUNT; x++)
                f[x] = NAN;
            if (pools[i])
                st_round(o, pools[i], payload, r, f);
            for (int x = 0; x < F_COUNT; x++)
                fig[i][x][r] = f[x];
            progress_step("");
        }
    for (unsigned i = 0; i < 2; i++)
        pypool_destroy(pools[i]);
    progress_end();
    for (unsigned i = 0; i < 2; i++) {
        double m[F_COUNT];
        for (int f = 0; f < F_COUNT; f++)
            m[f] = median_of(fig[i][f], o->rounds);
        char label[48];
        static const char *const lat_note = "floor: a 16 B no-op call on the same pool";
        snprintf(label, sizeof label, "inflight=%u first chunk p50", i + 1);
        add_row(label, "us", false, m[F_FIRST50], m[F_CALL50], lat_note);
        snprintf(label, sizeof label, "inflight=%u first chunk p99", i + 1);
        add_row(label, "us", false, m[F_FIRST99], m[F_CALL99], lat_note);
        snprintf(label, sizeof label, "inflight=%u chunks/s", i + 1);
        add_row(label, "chunks/s", true, m[F_CHUNKRATE], m[F_CALLRATE],
                "floor: no-op calls/s of the worker (best of 1, 2 threads)");
    }
    free(payload);
}

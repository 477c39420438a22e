/*
 * load.c - drives N client threads in a closed loop against a time window: every thread calls
 * fn back to back; the first `warmup` seconds are discarded, then a call counts if it started
 * inside the window and finished before its end. All threads start together (a barrier), so
 * the window sees the steady state of exactly N clients.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

typedef struct load_shared {
    load_call_fn fn;
    void *ctx;
    bool keep_lat;
    int64_t window_start, window_end;
    pthread_barrier_t start;
} load_shared;

typedef struct load_arg {
    load_shared *sh;
    load_thread t;
} load_arg;

static void load_count(load_arg *a, int rc, int64_t t0, int64_t t1)
{
    if (rc != 0) {
        a->t.errors++;
        return;
    }
    a->t.calls++;
    if (a->sh->keep_lat)
        samples_push(&a->t.lat, (double)(t1 - t0) / 1e3);
    if (!isnan(a->t.last_extra))
        samples_push(&a->t.extra, a->t.last_extra);
}

static void *load_thread_main(void *argp)
{
    load_arg *a = argp;
    load_shared *sh = a->sh;
    pthread_barrier_wait(&sh->start);
    for (;;) {
        int64_t t0 = bench_now_ns();
        if (t0 >= sh->window_end)
            break;
        a->t.last_extra = NAN;
        int rc = sh->fn(sh->ctx, &a->t);
        int64_t t1 = bench_now_ns();
        if (t0 >= sh->window_start && t1 <= sh->window_end)
            load_count(a, rc, t0, t1);
    }
    return NULL;
}

static void load_merge(load_arg *args, unsigned n, double seconds, load_result *out)
{
    memset(out, 0, sizeof *out);
    out->min_thread_calls = UINT64_MAX;
    for (unsigned i = 0; i < n; i++) {
        load_thread *t = &args[i].t;
        out->calls += t->calls;
        out->errors += t->errors;
        if (t->calls < out->min_thread_calls)
            out->min_thread_calls = t->calls;
        if (t->calls > out->max_thread_calls)
            out->max_thread_calls = t->calls;
        samples_append(&out->lat, &t->lat);
        samples_append(&out->extra, &t->extra);
        samples_free(&t->lat);
        samples_free(&t->extra);
    }
    out->calls_per_s = (double)out->calls / seconds;
}

int load_run(unsigned threads, double warmup, double seconds, bool keep_lat, load_call_fn fn,
             void *ctx, load_result *out)
{
    load_shared sh = {.fn = fn, .ctx = ctx, .keep_lat = keep_lat};
    load_arg *args = calloc(threads, sizeof *args);
    pthread_t *tids = calloc(threads, sizeof *tids);
    if (!args || !tids || threads == 0) {
        free(args);
        free(tids);
        return -1;
    }
    pthread_barrier_init(&sh.start, NULL, threads + 1);
    unsigned started = 0;
    for (; started < threads; started++) {
        args[started].sh = &sh;
        args[started].t.tid = started;
        if (pthread_create(&tids[started], NULL, load_thread_main, &args[started]) != 0)
            abort(); /* the barrier would wait forever: nothing sensible to measure */
    }
    int64_t now = bench_now_ns();
    sh.window_start = now + (int64_t)(warmup * 1e9);
    sh.window_end = sh.window_start + (int64_t)(seconds * 1e9);
    pthread_barrier_wait(&sh.start);
    for (unsigned i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    pthread_barrier_destroy(&sh.start);
    load_merge(args, threads, seconds, out);
    free(args);
    free(tids);
    return 0;
}

void load_result_free(load_result *r)
{
    samples_free(&r->lat);
    samples_free(&r->extra);
}

/*
 * window.c - N client threads in a closed loop, counting the calls that complete inside a time
 * window (the multiplexed scenarios: iobound, oversubscribed). Every thread calls fn back to
 * back from a common start (a barrier) until the window ends; the first `warmup` seconds are
 * discarded. Unlike load.c, a call counts when it *ends* inside the window, wherever it
 * started, so calls as long as a sizeable part of the window are not undercounted.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

typedef struct win_shared {
    win_call_fn fn;
    void *ctx;
    bool keep_lat;
    int64_t window_start, window_end;
    pthread_barrier_t start;
} win_shared;

typedef struct win_arg {
    win_shared *sh;
    unsigned tid;
    uint64_t done, errors;
    samples lat;
} win_arg;

static void *win_thread_main(void *argp)
{
    win_arg *a = argp;
    win_shared *sh = a->sh;
    pthread_barrier_wait(&sh->start);
    for (;;) {
        int64_t t0 = bench_now_ns();
        if (t0 >= sh->window_end)
            break;
        int rc = sh->fn(sh->ctx, a->tid);
        int64_t t1 = bench_now_ns();
        if (rc != 0) {
            a->errors++;
            continue;
        }
        if (t1 < sh->window_start || t1 > sh->window_end)
            continue;
        a->done++;
        if (sh->keep_lat)
            samples_push(&a->lat, (double)(t1 - t0) / 1e3);
    }
    return NULL;
}

static void sleep_until(int64_t t_ns)
{
    for (;;) {
        int64_t left = t_ns - bench_now_ns();
        if (left <= 0)
            return;
        struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
        nanosleep(&ts, NULL);
    }
}

int win_run(unsigned threads, double warmup, double seconds, bool keep_lat, win_call_fn fn,
            win_mark_fn mark, void *ctx, win_result *out)
{
    memset(out, 0, sizeof *out);
    if (threads == 0)
        return -1;
    win_shared sh = {.fn = fn, .ctx = ctx, .keep_lat = keep_lat};
    win_arg *args = calloc(threads, sizeof *args);
    pthread_t *tids = calloc(threads, sizeof *tids);
    out->per_thread = calloc(threads, sizeof *out->per_thread);
    if (!args || !tids || !out->per_thread)
        abort();
    pthread_barrier_init(&sh.start, NULL, threads + 1);
    for (unsigned i = 0; i < threads; i++) {
        args[i].sh = &sh;
        args[i].tid = i;
        if (pthread_create(&tids[i], NULL, win_thread_main, &args[i]) != 0)
            abort(); /* the barrier would wait forever: nothing sensible to measure */
    }
    int64_t now = bench_now_ns();
    sh.window_start = now + (int64_t)(warmup * 1e9);
    sh.window_end = sh.window_start + (int64_t)(seconds * 1e9);
    pthread_barrier_wait(&sh.start);
    if (mark) {
        sleep_until(sh.window_start);
        mark(ctx, 0);
        sleep_until(sh.window_end);
        mark(ctx, 1);
    }
    for (unsigned i = 0; i < threads; i++)
        pthread_join(tids[i], NULL);
    pthread_barrier_destroy(&sh.start);
    out->threads = threads;
    for (unsigned i = 0; i < threads; i++) {
        out->done += args[i].done;
        out->errors += args[i].errors;
        out->per_thread[i] = args[i].done;
        samples_append(&out->lat, &args[i].lat);
        samples_free(&args[i].lat);
    }
    out->calls_per_s = (double)out->done / seconds;
    free(args);
    free(tids);
    return 0;
}

static double per_thread_median(const win_result *r)
{
    samples s = {0};
    for (unsigned i = 0; i < r->threads; i++)
        samples_push(&s, (double)r->per_thread[i]);
    double m = samples_pct(&s, 50);
    samples_free(&s);
    return m;
}

double win_spread_max(const win_result *r)
{
    double med = per_thread_median(r), mx = 0;
    for (unsigned i = 0; i < r->threads; i++)
        mx = fmax(mx, (double)r->per_thread[i]);
    return med > 0 ? mx / med : NAN;
}

double win_spread_min(const win_result *r)
{
    double med = per_thread_median(r), mn = INFINITY;
    for (unsigned i = 0; i < r->threads; i++)
        mn = fmin(mn, (double)r->per_thread[i]);
    return med > 0 ? mn / med : NAN;
}

void win_result_free(win_result *r)
{
    free(r->per_thread);
    samples_free(&r->lat);
    memset(r, 0, sizeof *r);
}

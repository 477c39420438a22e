/*
 * metrics.c - latency histograms and pypool_stats_format: the bucket arithmetic and its error
 * bound, percentiles against the exact ones of a wide distribution, percentiles of known delays
 * (calls, and a wait for a held worker), exact counts under concurrency, Prometheus text that
 * promtool accepts, JSON that parses, and the snprintf contract on a 4096-slot pool.
 */
#define _GNU_SOURCE
#include "pool_test.h"

#include <math.h>
#include <sys/wait.h>

#include "histogram.h" /* white-box: the bucket layout documented in pypool.h */

TestSuite(pool_metrics, .init = tu_log_reset, .fini = pt_teardown, .timeout = 120);

Test(pool_metrics, buckets_tile_the_range_and_percentiles_stay_within_5_percent)
{
    uint64_t next = 0;
    for (unsigned i = 0; i < PYPOOL_HISTOGRAM_BUCKETS; i++) {
        cr_assert_eq(pypool__hist_lower(i), next, "bucket %u starts at %llu, want %llu", i,
                     (unsigned long long)pypool__hist_lower(i), (unsigned long long)next);
        cr_assert_eq(pypool__hist_bucket(next), i);
        cr_assert_eq(pypool__hist_bucket(next + pypool__hist_width(i) - 1), i);
        next += pypool__hist_width(i);
    }
    cr_assert_eq(next, (uint64_t)1 << 32, "the buckets end at %llu", (unsigned long long)next);
    cr_assert_eq(pypool__hist_bucket(UINT64_MAX), PYPOOL_HISTOGRAM_BUCKETS - 1);

    for (uint64_t v = 1; v < ((uint64_t)1 << 32); v = v * 21 / 20 + 1) {
        pypool__hist h;
        memset(&h, 0, sizeof h);
        pypool__hist_record(&h, v);
        pypool__hist_record(&h, v);
        pypool_histogram pub;
        memset(&pub, 0, sizeof pub);
        pypool__hist_merge(&h, &pub);
        cr_assert_eq(pub.count, 2);
        cr_assert_eq(pub.sum_us, 2 * v);
        cr_assert_eq(pub.max_us, v);
        double p = pypool_histogram_percentile(&pub, 0.5);
        cr_assert(fabs(p - (double)v) <= 0.05 * (double)v, "value %llu reads back as %.1f",
                  (unsigned long long)v, p);
    }
    pypool_histogram empty;
    memset(&empty, 0, sizeof empty);
    cr_assert_eq(pypool_histogram_percentile(&empty, 0.5), 0.0);
    cr_assert_eq(pypool_histogram_percentile(NULL, 0.5), 0.0);
}

/* A small deterministic generator: the test needs spread, not quality. */
static uint64_t next_rand(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

Test(pool_metrics, percentiles_of_a_wide_distribution_match_the_exact_ones_within_5_percent)
{
    enum { N = 20000 };
    static uint64_t v[N];
    pypool__hist h;
    memset(&h, 0, sizeof h);
    uint64_t x = 88172645463325252ull;
    for (int i = 0; i < N; i++) {
        /* log-uniform from 1 µs to ~10 s, as latencies spread */
        unsigned bits = 1 + (unsigned)(next_rand(&x) % 23);
        v[i] = (next_rand(&x) & ((1ull << bits) - 1)) | (1ull << (bits - 1));
        pypool__hist_record(&h, v[i]);
    }
    pypool_histogram pub;
    memset(&pub, 0, sizeof pub);
    pypool__hist_merge(&h, &pub);
    qsort(v, N, sizeof v[0], cmp_u64);
    const double qs[] = {0.001, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999, 1.0};
    for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
        size_t rank = (size_t)(qs[k] * N + 0.999999); /* the library's rounding of the rank */
        double exact = (double)v[rank - 1], got = pypool_histogram_percentile(&pub, qs[k]);
        cr_assert(fabs(got - exact) <= 0.05 * exact, "q %.3f: %.1f, exactly %.0f", qs[k], got,
                  exact);
    }
    cr_assert_eq(pub.max_us, v[N - 1]);
}

Test(pool_metrics, percentiles_of_a_known_mix_of_1_ms_and_10_ms_calls)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);
    for (int i = 0; i < 40; i++) {
        pypool_result r;
        int rc = pt_call_str(p, "sleep", i % 4 == 3 ? "0.010" : "0.001", 10000, &r);
        PT_ASSERT_REPLY(rc, &r, "slept", "sleep");
        pypool_result_free(&r);
    }
    pypool_stats st = pt_stats(p);
    cr_assert_eq(st.call_us.count, 40);
    cr_assert_eq(st.wait_us.count, 40);
    double p50 = pypool_histogram_percentile(&st.call_us, 0.5);
    double p90 = pypool_histogram_percentile(&st.call_us, 0.9);
    /* 30 calls of >= 1 ms and 10 of >= 10 ms: the median is a short one, p90 a long one. */
    cr_assert(p50 >= 1000 * 0.95 && p50 < 9000, "p50 %.0f us", p50);
    cr_assert(p90 >= 10000 * 0.95, "p90 %.0f us", p90);
    cr_assert_geq(st.call_us.max_us, 10000);
    cr_assert_geq(st.call_us.sum_us, 30 * 1000 + 10 * 10000);
}

Test(pool_metrics, a_call_waiting_for_the_only_worker_records_at_least_the_time_it_waited)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 1);
    pypool *p = pt_create(&cfg);
    pypool_worker *w = NULL;
    PT_ASSERT_RC(pypool_checkout(p, 5000, &w), PYPOOL_OK, NULL, "checkout of the only worker");
    pt_call_job job;
    pt_call_start(&job, p, NULL, "echo", "x", 30000);
    bool queued = pt_wait_waiters(p, 1, 30000);
    /* From here on the call waits until checkin: its wait is at least the time in between, however
     * long the sleep really lasts (the clock, not the sleep, sets the bound). */
    int64_t queued_ms = tu_now_ms();
    tu_sleep_ms(30);
    int64_t held_ms = tu_now_ms() - queued_ms;
    pypool_checkin(w);
    pt_call_join(&job);
    cr_assert(queued, "the call never showed in stats.waiters");
    PT_ASSERT_JOB(&job, PYPOOL_OK, "the waiting call");
    pypool_stats st = pt_stats(p);
    cr_assert_eq(st.wait_us.count, 2, "the checkout's wait and the call's");
    cr_assert_eq(st.call_us.count, 1);
    double floor_us = (double)(held_ms - 1) * 1000; /* tu_now_ms ticks in whole ms */
    cr_assert_geq((double)st.wait_us.max_us, floor_us, "max %llu us, held %lld ms",
                  (unsigned long long)st.wait_us.max_us, (long long)held_ms);
    double p100 = pypool_histogram_percentile(&st.wait_us, 1.0);
    cr_assert_geq(p100, 0.95 * floor_us, "p100 %.0f us, held %lld ms", p100, (long long)held_ms);
    cr_assert_leq(pypool_histogram_percentile(&st.wait_us, 0.5), p100);
}

typedef struct hammer {
    pypool *p;
    int calls;
    int ok;
    pthread_t thread;
} hammer;

static void *hammer_main(void *arg)
{
    hammer *h = arg;
    for (int i = 0; i < h->calls; i++) {
        pypool_result r;
        if (pt_call_str(h->p, "echo", "x", 30000, &r) == PYPOOL_OK)
            h->ok++;
        pypool_result_free(&r);
    }
    return NULL;
}

Test(pool_metrics, counts_are_exact_under_concurrency)
{
    enum { THREADS = 8, CALLS = 250 };
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", 2);
    pypool *p = pt_create(&cfg);
    hammer hs[THREADS];
    for (int t = 0; t < THREADS; t++) {
        hs[t] = (hammer){.p = p, .calls = CALLS};
        cr_assert_eq(pthread_create(&hs[t].thread, NULL, hammer_main, &hs[t]), 0);
    }
    int ok = 0;
    for (int t = 0; t < THREADS; t++) {
        pthread_join(hs[t].thread, NULL);
        ok += hs[t].ok;
    }
    cr_assert_eq(ok, THREADS * CALLS);
    pypool_stats st = pt_stats(p);
    cr_assert_eq(st.calls, (uint64_t)THREADS * CALLS);
    cr_assert_eq(st.call_us.count, (uint64_t)THREADS * CALLS);
    cr_assert_eq(st.wait_us.count, (uint64_t)THREADS * CALLS);
    uint64_t sum = 0;
    for (unsigned i = 0; i < PYPOOL_HISTOGRAM_BUCKETS; i++)
        sum += st.call_us.buckets[i];
    cr_assert_eq(sum, st.call_us.count);
}

/* The formatted text of a pool's stats (malloc'ed), asserting the snprintf contract. */
static char *format_stats(const pypool_stats *st, int format, const char *name)
{
    int need = pypool_stats_format(st, format, name, NULL, 0);
    cr_assert_gt(need, 0);
    char *buf = malloc((size_t)need + 1);
    cr_assert_eq(pypool_stats_format(st, format, name, buf, (size_t)need + 1), need);
    cr_assert_eq(strlen(buf), (size_t)need, "the text is cut short");
    char small[64];
    cr_assert_eq(pypool_stats_format(st, format, name, small, sizeof small), need);
    cr_assert_eq(strlen(small), sizeof small - 1, "a short buffer is filled and terminated");
    cr_assert_eq(strncmp(small, buf, sizeof small - 1), 0);
    return buf;
}

/* Feeds text to a shell command on its stdin; returns its exit status. */
static int pipe_to(const char *cmd, const char *text)
{
    FILE *f = popen(cmd, "w");
    cr_assert_not_null(f, "popen %s", cmd);
    fputs(text, f);
    int status = pclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static pypool_stats busy_stats(pypool **out, unsigned size, bool lazy)
{
    pypool_config cfg;
    tu_config(&cfg, "echo_mod", size);
    cfg.lazy = lazy;
    pypool *p = pt_create(&cfg);
    for (int i = 0; i < 20; i++) {
        pypool_result r;
        int rc = pt_call_str(p, i % 5 ? "echo" : "raise_value", "x", 20000, &r);
        cr_assert(rc == PYPOOL_OK || rc == PYPOOL_EREMOTE, "%s", pt_msg(&r));
        pypool_result_free(&r);
    }
    *out = p;
    return pt_stats(p);
}

Test(pool_metrics, prometheus_text_has_every_series_and_passes_promtool)
{
    pypool *p;
    pypool_stats st = busy_stats(&p, 2, false);
    const char *name = "we\"ird\\pool\nname";
    char *text = format_stats(&st, PYPOOL_FORMAT_PROMETHEUS, name);
    const char *want[] = {
        "pypool_calls_total{pool=\"we\\\"ird\\\\pool\\nname\"} 20\n",
        "pypool_call_errors_total{pool=\"we\\\"ird\\\\pool\\nname\",error=\"remote\"} 4\n",
        "pypool_call_errors_total{pool=\"we\\\"ird\\\\pool\\nname\",error=\"crash\"} 0\n",
        "pypool_workers{pool=\"we\\\"ird\\\\pool\\nname\",state=\"empty\"} 0\n",
        "# TYPE pypool_worker_restarts_total counter\n",
        "pypool_workers{pool=\"we\\\"ird\\\\pool\\nname\",state=\"idle\"} 2\n",
        "# TYPE pypool_waiters gauge\n",
        "# TYPE pypool_wait_seconds histogram\n",
        "pypool_call_seconds_bucket{pool=\"we\\\"ird\\\\pool\\nname\",le=\"+Inf\"} 20\n",
        "pypool_call_seconds_count{pool=\"we\\\"ird\\\\pool\\nname\"} 20\n",
        "pypool_wait_seconds_sum{pool=",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert_not_null(strstr(text, want[i]), "missing %s in:\n%s", want[i], text);
#ifdef PYPOOL_TEST_PROMTOOL
    int rc = pipe_to(PYPOOL_TEST_PROMTOOL " check metrics", text);
    cr_assert_eq(rc, 0, "promtool check metrics rejected:\n%s", text);
#endif
    free(text);
}

Test(pool_metrics, json_parses_and_carries_the_histograms)
{
    pypool *p;
    pypool_stats st = busy_stats(&p, 2, false);
    char *text = format_stats(&st, PYPOOL_FORMAT_JSON, "json \"pool\"\t1");
    int rc =
        pipe_to(PYPOOL_TEST_PYTHON " -c 'import json, sys\n"
                                   "d = json.load(sys.stdin)\n"
                                   "assert d[\"pool\"] == \"json \\\"pool\\\"\\t1\", d[\"pool\"]\n"
                                   "assert d[\"calls\"] == 20 and d[\"remote_errors\"] == 4\n"
                                   "assert d[\"call_us\"][\"count\"] == 20\n"
                                   "assert d[\"call_us\"][\"p50\"] > 0\n"
                                   "assert len(d[\"slots\"]) == 2'",
                text);
    cr_assert_eq(rc, 0, "the JSON did not parse or check out:\n%s", text);
    free(text);
}

Test(pool_metrics, a_lazy_pool_of_4096_slots_formats_in_full)
{
    pypool *p;
    pypool_stats st = busy_stats(&p, 4096, true);
    cr_assert_eq(st.size, 4096u);
    /* The slots never started are reported, so that the states add up to the size. */
    char empty[96];
    snprintf(empty, sizeof empty, "pypool_workers{pool=\"big\",state=\"empty\"} %u\n",
             st.size - st.idle - st.busy - st.starting - st.backoff - st.failed);
    cr_assert_gt(st.size - st.idle - st.busy - st.starting - st.backoff - st.failed, 4000u);
    for (int f = PYPOOL_FORMAT_PROMETHEUS; f <= PYPOOL_FORMAT_JSON; f++) {
        char *text = format_stats(&st, f, "big");
        cr_assert_not_null(strstr(text, f == PYPOOL_FORMAT_JSON ? "]}\n" : "_count{pool=\"big\"}"),
                           "the text does not end as it should");
        if (f == PYPOOL_FORMAT_PROMETHEUS)
            cr_assert_not_null(strstr(text, empty), "missing %s", empty);
        free(text);
    }
    cr_assert_eq(pypool_stats_format(NULL, PYPOOL_FORMAT_JSON, "x", NULL, 0), PYPOOL_EINVAL);
    cr_assert_eq(pypool_stats_format(&st, 99, "x", NULL, 0), PYPOOL_EINVAL);
}

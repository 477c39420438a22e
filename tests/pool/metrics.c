/*
 * metrics.c - latency histograms and pypool_stats_format: the bucket arithmetic and its error
 * bound, percentiles of known delays, exact counts under concurrency, Prometheus text that
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
    for (int f = PYPOOL_FORMAT_PROMETHEUS; f <= PYPOOL_FORMAT_JSON; f++) {
        char *text = format_stats(&st, f, "big");
        cr_assert_not_null(strstr(text, f == PYPOOL_FORMAT_JSON ? "]}\n" : "_count{pool=\"big\"}"),
                           "the text does not end as it should");
        free(text);
    }
    cr_assert_eq(pypool_stats_format(NULL, PYPOOL_FORMAT_JSON, "x", NULL, 0), PYPOOL_EINVAL);
    cr_assert_eq(pypool_stats_format(&st, 99, "x", NULL, 0), PYPOOL_EINVAL);
}

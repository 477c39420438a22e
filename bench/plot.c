/*
 * plot.c - --plot DIR: PNG charts drawn by gnuplot (found at configure time) from the run's
 * series: latency CDFs (16 B and 64 KiB), throughput vs client threads (one line per contender
 * and pool size) and CPU-bound scaling vs workers. Writes one .dat per series and one .gp
 * script per chart into DIR, then runs gnuplot on each script (posix_spawn, no shell).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "bench.h"

typedef struct chart {
    const char *file;   /* PNG name, also the script's */
    const char *prefix; /* series whose name starts with it */
    const char *title, *xlabel, *ylabel;
    int logx; /* 0: linear x, else the log base */
    bool logy;
    const char *key; /* gnuplot key position */
} chart;

static const chart charts[] = {
    {"latency_cdf_16B", "latency_cdf_16", "No-op call latency CDF, 16 B payload", "latency (us)",
     "fraction of calls", 10, false, "right bottom"},
    {"latency_cdf_64KiB", "latency_cdf_65536", "No-op call latency CDF, 64 KiB payload",
     "latency (us)", "fraction of calls", 10, false, "right bottom"},
    {"throughput_threads", "throughput_w", "16 B echo throughput vs client threads",
     "client threads", "calls/s", 2, false, "outside right"},
    {"scaling_workers", "cpu_scaling", "CPU-bound calls (~1 ms) vs workers", "workers", "calls/s",
     0, false, "left top"},
};

static int write_dat(const char *dir, size_t idx, const bench_series *s, char *path, size_t len)
{
    snprintf(path, len, "%s/series_%zu_%s_%s.dat", dir, idx, s->name, bench_impl_name(s->impl));
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    for (size_t k = 0; k < s->n; k++)
        fprintf(f, "%.6g %.6g\n", s->x[k], s->y[k]);
    return fclose(f);
}

/* "pypool (w2)" for throughput_w2, else the contender's name. */
static void series_title(const chart *c, const bench_series *s, char *buf, size_t len)
{
    const char *suffix = s->name + strlen(c->prefix);
    if (*suffix && strcmp(c->prefix, "throughput_w") == 0)
        snprintf(buf, len, "%s, %s workers", bench_impl_name(s->impl), suffix);
    else
        snprintf(buf, len, "%s", bench_impl_name(s->impl));
}

static int write_script(const char *dir, const chart *c, char *gp, size_t len)
{
    snprintf(gp, len, "%s/%s.gp", dir, c->file);
    FILE *f = fopen(gp, "w");
    if (!f)
        return -1;
    fprintf(f, "set terminal pngcairo size 900,560 noenhanced\nset output '%s/%s.png'\n", dir,
            c->file);
    fprintf(f, "set title '%s'\nset xlabel '%s'\nset ylabel '%s'\nset grid\nset key %s\n", c->title,
            c->xlabel, c->ylabel, c->key);
    if (c->logx)
        fprintf(f, "set logscale x %d\n", c->logx);
    if (c->logy)
        fprintf(f, "set logscale y\n");
    int plotted = 0;
    for (size_t i = 0; i < results_series_count(); i++) {
        const bench_series *s = results_series_at(i);
        if (strncmp(s->name, c->prefix, strlen(c->prefix)) || !s->n)
            continue;
        char dat[512], title[64];
        if (write_dat(dir, i, s, dat, sizeof dat) != 0)
            continue;
        series_title(c, s, title, sizeof title);
        fprintf(f, "%s '%s' using 1:2 with %s title '%s'", plotted ? ", \\\n    " : "plot ", dat,
                strncmp(c->prefix, "latency", 7) ? "linespoints" : "lines", title);
        plotted++;
    }
    fputc('\n', f);
    fclose(f);
    return plotted;
}

static int run_gnuplot(const char *gp)
{
    const char *argv[] = {BENCH_GNUPLOT, gp, NULL};
    int status;
    char *out = bench_run_capture(argv, "", &status);
    free(out);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

int plot_write(const char *dir)
{
    if (!BENCH_GNUPLOT[0]) {
        bench_warn("--plot: gnuplot was not found at configure time");
        return -1;
    }
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < sizeof charts / sizeof charts[0]; i++) {
        char gp[512];
        if (write_script(dir, &charts[i], gp, sizeof gp) <= 0)
            continue; /* that scenario did not run */
        if (run_gnuplot(gp) != 0) {
            bench_warn("gnuplot failed on %s", gp);
            rc = -1;
        }
    }
    return rc;
}

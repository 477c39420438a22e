/*
 * report.c - the human-readable output: one table per scenario with every contender side by
 * side and pypool's ratio to the floor and to the peer, then the performance targets as
 * PASS/MISS lines (evaluated here, also written to the JSON).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "report.h"

const char *bench_impl_name(int impl)
{
    static const char *const names[IMPL_COUNT] = {"pypool", "floor", "peer", "embedded"};
    return impl >= 0 && impl < IMPL_COUNT ? names[impl] : "?";
}

static void fmt_value(double v, char *buf, size_t len)
{
    if (isnan(v))
        snprintf(buf, len, "-");
    else if (fabs(v) >= 100000)
        snprintf(buf, len, "%.0f", v);
    else if (fabs(v) >= 100)
        snprintf(buf, len, "%.1f", v);
    else
        snprintf(buf, len, "%.2f", v);
}

static void fmt_ratio(double a, double b, char *buf, size_t len)
{
    if (isnan(a) || isnan(b) || b == 0)
        snprintf(buf, len, "-");
    else
        snprintf(buf, len, "%.2fx", a / b);
}

static void print_header(const char *scenario)
{
    printf("\n== %s (%.1f s) ==\n", scenario, results_elapsed(scenario));
    printf("%-26s %-8s %10s %10s %10s %10s %12s %11s\n", "point", "unit", "pypool", "floor", "peer",
           "embedded", "pypool/floor", "pypool/peer");
}

static void print_row(const bench_row *r)
{
    char v[IMPL_COUNT][24], rf[16], rp[16];
    for (int i = 0; i < IMPL_COUNT; i++)
        fmt_value(r->v[i], v[i], sizeof v[i]);
    fmt_ratio(r->v[IMPL_POOL], r->no_ratio ? NAN : r->v[IMPL_FLOOR], rf, sizeof rf);
    fmt_ratio(r->v[IMPL_POOL], r->no_ratio ? NAN : r->v[IMPL_PEER], rp, sizeof rp);
    printf("%-26s %-8s %10s %10s %10s %10s %12s %11s\n", r->label, r->unit, v[IMPL_POOL],
           v[IMPL_FLOOR], v[IMPL_PEER], v[IMPL_EMBED], rf, rp);
}

static void print_notes(const char *scenario)
{
    const char *last = "";
    for (size_t i = 0; i < results_count(); i++) {
        const bench_row *r = results_at(i);
        if (strcmp(r->scenario, scenario) || !r->note[0] || !strcmp(r->note, last))
            continue;
        printf("  (%s)\n", r->note);
        last = r->note;
    }
}

void report_tables(void)
{
    const char *cur = NULL;
    for (size_t i = 0; i < results_count(); i++) {
        const bench_row *r = results_at(i);
        if (!cur || strcmp(cur, r->scenario)) {
            if (cur)
                print_notes(cur);
            cur = r->scenario;
            print_header(cur);
        }
        print_row(r);
    }
    if (cur)
        print_notes(cur);
    printf("\nus and ms: lower is better; calls/s: higher is better; ratios are pypool / "
           "baseline. Whole run: %.1f s.\n",
           results_elapsed("total"));
}

int report_targets(void)
{
    bench_target t[REPORT_MAX_TARGETS];
    size_t n = targets_eval(t, REPORT_MAX_TARGETS);
    int missed = 0;
    printf("\n== targets ==\n");
    for (size_t i = 0; i < n; i++) {
        const char *verdict = !t[i].measured ? "n/a " : t[i].pass ? "PASS" : "MISS";
        if (t[i].measured && !t[i].pass)
            missed++;
        if (t[i].measured)
            printf("%s  %-46s %6.3fx (limit %s %.2fx)  %s\n", verdict, t[i].name, t[i].ratio,
                   t[i].at_most ? "<=" : ">=", t[i].limit, t[i].detail);
        else
            printf("%s  %-46s not measured in this run\n", verdict, t[i].name);
    }
    return missed;
}

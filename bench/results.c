/*
 * results.c - the store of every figure measured in the run: table rows (one per point, a value
 * per contender) and plot series. Single-threaded: only the driver thread touches it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static bench_row *rows;
static size_t nrows, caprows;
static bench_series *series;
static size_t nseries, capseries;

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return p;
    size_t c = *cap ? *cap * 2 : 32;
    while (c < need)
        c *= 2;
    p = realloc(p, c * elem);
    if (!p)
        abort();
    *cap = c;
    return p;
}

bench_row *results_add(const char *scenario, const char *label, const char *unit,
                       bool higher_better)
{
    rows = grow(rows, &caprows, nrows + 1, sizeof *rows);
    bench_row *r = &rows[nrows++];
    memset(r, 0, sizeof *r);
    snprintf(r->scenario, sizeof r->scenario, "%s", scenario);
    snprintf(r->label, sizeof r->label, "%s", label);
    snprintf(r->unit, sizeof r->unit, "%s", unit);
    r->higher_better = higher_better;
    for (int i = 0; i < IMPL_COUNT; i++)
        r->v[i] = NAN;
    return r;
}

bench_row *results_find(const char *scenario, const char *label)
{
    for (size_t i = 0; i < nrows; i++)
        if (!strcmp(rows[i].scenario, scenario) && !strcmp(rows[i].label, label))
            return &rows[i];
    return NULL;
}

size_t results_count(void)
{
    return nrows;
}

bench_row *results_at(size_t i)
{
    return &rows[i];
}

void results_series(const char *name, int impl, const double *x, const double *y, size_t n)
{
    series = grow(series, &capseries, nseries + 1, sizeof *series);
    bench_series *s = &series[nseries++];
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->impl = impl;
    s->n = n;
    s->x = malloc((n ? n : 1) * sizeof *s->x);
    s->y = malloc((n ? n : 1) * sizeof *s->y);
    if (!s->x || !s->y)
        abort();
    memcpy(s->x, x, n * sizeof *x);
    memcpy(s->y, y, n * sizeof *y);
}

size_t results_series_count(void)
{
    return nseries;
}

bench_series *results_series_at(size_t i)
{
    return &series[i];
}

#define MAX_SCENARIOS 16

static struct {
    char name[24];
    double seconds;
} elapsed[MAX_SCENARIOS];
static size_t nelapsed;

void results_set_elapsed(const char *scenario, double seconds)
{
    if (nelapsed == MAX_SCENARIOS)
        return;
    snprintf(elapsed[nelapsed].name, sizeof elapsed[nelapsed].name, "%s", scenario);
    elapsed[nelapsed++].seconds = seconds;
}

double results_elapsed(const char *scenario)
{
    for (size_t i = 0; i < nelapsed; i++)
        if (!strcmp(elapsed[i].name, scenario))
            return elapsed[i].seconds;
    return NAN;
}

void results_free(void)
{
    for (size_t i = 0; i < nseries; i++) {
        free(series[i].x);
        free(series[i].y);
    }
    free(series);
    free(rows);
    series = NULL;
    rows = NULL;
    nseries = capseries = nrows = caprows = 0;
}

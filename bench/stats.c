/*
 * stats.c - growable sample arrays, nearest-rank percentiles and medians.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

static void samples_grow(samples *s, size_t need)
{
    if (need <= s->cap)
        return;
    size_t cap = s->cap ? s->cap : 256;
    while (cap < need)
        cap *= 2;
    double *v = realloc(s->v, cap * sizeof *v);
    if (!v)
        abort(); /* a benchmark without memory has nothing left to say */
    s->v = v;
    s->cap = cap;
}

void samples_push(samples *s, double x)
{
    samples_grow(s, s->n + 1);
    s->v[s->n++] = x;
    s->sorted = false;
}

void samples_append(samples *dst, const samples *src)
{
    if (!src->n)
        return;
    samples_grow(dst, dst->n + src->n);
    memcpy(dst->v + dst->n, src->v, src->n * sizeof *src->v);
    dst->n += src->n;
    dst->sorted = false;
}

void samples_free(samples *s)
{
    free(s->v);
    memset(s, 0, sizeof *s);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void samples_sort(samples *s)
{
    if (!s->sorted)
        qsort(s->v, s->n, sizeof *s->v, cmp_double);
    s->sorted = true;
}

double samples_pct(samples *s, double pct)
{
    if (!s->n)
        return NAN;
    samples_sort(s);
    size_t rank = (size_t)ceil(pct / 100.0 * (double)s->n);
    if (rank < 1)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return s->v[rank - 1];
}

double samples_max(samples *s)
{
    return samples_pct(s, 100.0);
}

double median_of(const double *v, size_t n)
{
    samples tmp = {0};
    for (size_t i = 0; i < n; i++)
        if (!isnan(v[i]))
            samples_push(&tmp, v[i]);
    double m = NAN;
    if (tmp.n) {
        samples_sort(&tmp);
        m = tmp.n % 2 ? tmp.v[tmp.n / 2] : (tmp.v[tmp.n / 2 - 1] + tmp.v[tmp.n / 2]) / 2;
    }
    samples_free(&tmp);
    return m;
}

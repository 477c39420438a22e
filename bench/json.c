/*
 * json.c - --json FILE: every figure of the run (rows with all contenders and ratios, plot
 * series, targets) plus the machine (cores, CPU model, kernel, Python version) and the options.
 * NaN (not measured) is written as null.
 */
#include <math.h>
#include <stdio.h>

#include "bench.h"
#include "report.h"

static void put_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            fprintf(f, "\\u%04x", (unsigned char)*s);
        else
            fputc(*s, f);
    }
    fputc('"', f);
}

static void put_num(FILE *f, double v)
{
    if (isnan(v) || isinf(v))
        fputs("null", f);
    else
        fprintf(f, "%.6g", v);
}

static void put_machine(FILE *f, const bench_machine *m, const bench_opts *o)
{
    fprintf(f, "  \"machine\": {\"cores\": %ld, \"cpu\": ", m->cores);
    put_str(f, m->cpu);
    fputs(", \"kernel\": ", f);
    put_str(f, m->kernel);
    fputs(", \"python\": ", f);
    put_str(f, m->python);
    fputs(", \"interpreter\": ", f);
    put_str(f, o->python);
    fprintf(f,
            "},\n  \"options\": {\"quick\": %s, \"seconds\": %g, \"warmup\": %g, "
            "\"rounds\": %u, \"scenario\": ",
            o->quick ? "true" : "false", o->seconds, o->warmup, o->rounds);
    put_str(f, o->scenario ? o->scenario : "all");
    fprintf(f, ", \"pypool_measured\": %s, \"seconds_total\": ", o->pool_broken ? "false" : "true");
    put_num(f, results_elapsed("total"));
    fputs("},\n", f);
}

static void put_row(FILE *f, const bench_row *r)
{
    fputs("    {\"scenario\": ", f);
    put_str(f, r->scenario);
    fputs(", \"point\": ", f);
    put_str(f, r->label);
    fputs(", \"unit\": ", f);
    put_str(f, r->unit);
    fprintf(f, ", \"higher_is_better\": %s", r->higher_better ? "true" : "false");
    for (int i = 0; i < IMPL_COUNT; i++) {
        fprintf(f, ", \"%s\": ", bench_impl_name(i));
        put_num(f, r->v[i]);
    }
    fputs(", \"pypool_over_floor\": ", f);
    put_num(f, r->no_ratio ? NAN : r->v[IMPL_POOL] / r->v[IMPL_FLOOR]);
    fputs(", \"pypool_over_peer\": ", f);
    put_num(f, r->no_ratio ? NAN : r->v[IMPL_POOL] / r->v[IMPL_PEER]);
    fputs(", \"note\": ", f);
    put_str(f, r->note);
    fputc('}', f);
}

static void put_series(FILE *f, const bench_series *s)
{
    fputs("    {\"name\": ", f);
    put_str(f, s->name);
    fputs(", \"impl\": ", f);
    put_str(f, bench_impl_name(s->impl));
    fputs(", \"points\": [", f);
    for (size_t k = 0; k < s->n; k++) {
        fputs(k ? ", [" : "[", f);
        put_num(f, s->x[k]);
        fputs(", ", f);
        put_num(f, s->y[k]);
        fputc(']', f);
    }
    fputs("]}", f);
}

static void put_targets(FILE *f)
{
    bench_target t[REPORT_MAX_TARGETS];
    size_t n = targets_eval(t, REPORT_MAX_TARGETS);
    fputs("  \"targets\": [\n", f);
    for (size_t i = 0; i < n; i++) {
        fputs("    {\"name\": ", f);
        put_str(f, t[i].name);
        fprintf(f, ", \"measured\": %s, \"pass\": %s, \"op\": \"%s\", \"limit\": ",
                t[i].measured ? "true" : "false", t[i].pass ? "true" : "false",
                t[i].at_most ? "<=" : ">=");
        put_num(f, t[i].limit);
        fputs(", \"ratio\": ", f);
        put_num(f, t[i].ratio);
        fputs(", \"value\": ", f);
        put_num(f, t[i].value);
        fputs(", \"baseline\": ", f);
        put_num(f, t[i].baseline);
        fputs(i + 1 < n ? "},\n" : "}\n", f);
    }
    fputs("  ],\n", f);
}

int json_write(const char *path, const bench_opts *o, const bench_machine *m)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fputs("{\n", f);
    put_machine(f, m, o);
    put_targets(f);
    fputs("  \"rows\": [\n", f);
    for (size_t i = 0; i < results_count(); i++) {
        put_row(f, results_at(i));
        fputs(i + 1 < results_count() ? ",\n" : "\n", f);
    }
    fputs("  ],\n  \"series\": [\n", f);
    for (size_t i = 0; i < results_series_count(); i++) {
        put_series(f, results_series_at(i));
        fputs(i + 1 < results_series_count() ? ",\n" : "\n", f);
    }
    fputs("  ]\n}\n", f);
    return fclose(f) == 0 ? 0 : -1;
}

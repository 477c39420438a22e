/*
 * main.c - pypool-bench: options and the driver. Runs the chosen scenarios (each measures
 * pypool and its baselines in alternating rounds), prints the tables and the target lines,
 * and optionally writes --json and --plot output.
 */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

typedef struct scenario {
    const char *name;
    void (*run)(const bench_opts *o);
    const char *what;
    bool named_only; /* not in the default set: runs only when --scenario names it */
} scenario;

static const scenario scenarios[] = {
    {"latency", scenario_latency, "no-op call latency, 16 B .. 16 MiB"},
    {"throughput", scenario_throughput, "16 B calls/s vs client threads, per pool size"},
    {"cpu", scenario_cpu, "~1 ms CPU-bound calls vs workers, against the GIL"},
    {"coldstart", scenario_coldstart, "create -> all ready, vs bare parallel interpreters"},
    {"recovery", scenario_recovery, "SIGKILL a worker -> its replacement serves"},
    {"fairness", scenario_fairness, "64 threads on 2 workers: wait distribution"},
    {"iobound", scenario_iobound, "256 threads, 2 workers x 128 in flight, 50 ms async/threaded",
     true},
    {"oversubscribed", scenario_oversubscribed,
     "8, 64 threads on 2 workers, max_inflight 1, 2: vs floor, fairness", true},
    {"stream", scenario_stream, "first chunk and chunks/s of a stream vs no-op calls", true},
};
#define NSCENARIOS (sizeof scenarios / sizeof scenarios[0])

static void usage(FILE *f)
{
    fprintf(f,
            "usage: pypool-bench [options]\n"
            "  --quick            short run (< 60 s): fewer points, rounds and seconds\n"
            "  --scenario LIST    comma-separated scenarios (default: all not marked \"only when "
            "named\")\n"
            "  --seconds S        measuring window per point and round\n"
            "  --rounds N         alternating rounds per point (figures are medians)\n"
            "  --workers LIST     pool sizes for throughput and cpu, e.g. 1,2,4\n"
            "  --threads LIST     client threads for throughput, e.g. 1,2,4,8,32,128\n"
            "  --python PATH      interpreter for every contender (default: $PYPOOL_PYTHON or "
            "%s)\n"
            "  --json FILE        write every figure and the machine as JSON\n"
            "  --plot DIR         write PNG charts (gnuplot)\n"
            "exit status: 0 done (targets are reported, not enforced), 1 --json/--plot failed,\n"
            "  2 bad usage, 3 pypool could not serve a call (its column is then empty)\n"
            "scenarios:\n",
            BENCH_PYTHON);
    for (size_t i = 0; i < NSCENARIOS; i++)
        fprintf(f, "  %-14s %s%s\n", scenarios[i].name, scenarios[i].what,
                scenarios[i].named_only ? " (only when named)" : "");
}

static int parse_list(const char *s, bench_list *out)
{
    out->n = 0;
    while (*s && out->n < BENCH_MAX_LIST) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || v == 0 || v > 1024)
            return -1;
        out->v[out->n++] = (unsigned)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return out->n ? 0 : -1;
}

static void set_defaults(bench_opts *o)
{
    static const bench_list quick_threads = {4, {1, 2, 8, 128}};
    static const bench_list full_threads = {6, {1, 2, 4, 8, 32, 128}};
    static const bench_list quick_workers = {2, {1, 2}};
    static const bench_list full_workers = {3, {1, 2, 4}};
    const char *env_py = getenv("PYPOOL_PYTHON");
    o->python = env_py && *env_py ? env_py : BENCH_PYTHON;
    o->seconds = o->quick ? 0.15 : 1.0;
    o->warmup = o->quick ? 0.05 : 0.2;
    o->rounds = o->quick ? 2 : 5;
    o->min_calls = o->quick ? 2 : 5;
    o->threads = o->quick ? quick_threads : full_threads;
    o->workers = o->quick ? quick_workers : full_workers;
}

enum {
    OPT_QUICK = 256,
    OPT_SCENARIO,
    OPT_SECONDS,
    OPT_ROUNDS,
    OPT_WORKERS,
    OPT_THREADS,
    OPT_PYTHON,
    OPT_JSON,
    OPT_PLOT,
    OPT_HELP
};

static const struct option long_opts[] = {
    {"quick", no_argument, NULL, OPT_QUICK},
    {"scenario", required_argument, NULL, OPT_SCENARIO},
    {"seconds", required_argument, NULL, OPT_SECONDS},
    {"rounds", required_argument, NULL, OPT_ROUNDS},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"threads", required_argument, NULL, OPT_THREADS},
    {"python", required_argument, NULL, OPT_PYTHON},
    {"json", required_argument, NULL, OPT_JSON},
    {"plot", required_argument, NULL, OPT_PLOT},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* Applies one option that overrides a default; -1 on a bad value. */
static int apply_override(bench_opts *o, int c, const char *arg)
{
    switch (c) {
    case OPT_SECONDS:
        o->seconds = strtod(arg, NULL);
        return o->seconds > 0 && o->seconds < 3600 ? 0 : -1;
    case OPT_ROUNDS:
        o->rounds = (unsigned)strtoul(arg, NULL, 10);
        return o->rounds >= 1 && o->rounds <= BENCH_MAX_ROUNDS ? 0 : -1;
    case OPT_WORKERS:
        return parse_list(arg, &o->workers);
    case OPT_THREADS:
        return parse_list(arg, &o->threads);
    case OPT_PYTHON:
        o->python = arg;
        return 0;
    default:
        return -1;
    }
}

/* Two passes: --quick first picks the defaults, then the other options override them. */
static int parse_args(int argc, char **argv, bench_opts *o)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--quick"))
            o->quick = true;
    set_defaults(o);
    int c;
    while ((c = getopt_long(argc, argv, "", long_opts, NULL)) != -1) {
        if (c == OPT_HELP) {
            usage(stdout);
            exit(0);
        }
        if (c == OPT_QUICK)
            continue;
        if (c == OPT_SCENARIO || c == OPT_JSON || c == OPT_PLOT) {
            *(c == OPT_SCENARIO ? &o->scenario
              : c == OPT_JSON   ? &o->json_path
                                : &o->plot_dir) = optarg;
            continue;
        }
        if (c == '?' || apply_override(o, c, optarg) != 0) {
            if (c != '?')
                fprintf(stderr, "pypool-bench: bad value for %s\n", argv[optind - 1]);
            usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return -1;
    }
    return 0;
}

/* Is the scenario in the comma-separated list (NULL = the default set)? */
static bool selected(const char *list, const scenario *sc)
{
    if (!list)
        return !sc->named_only;
    const char *name = sc->name;
    size_t len = strlen(name);
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (!strncmp(p, name, len) && (p[len] == ',' || p[len] == '\0'))
            return true;
    return false;
}

static int check_scenarios(const char *list)
{
    if (!list)
        return 0;
    for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL) {
        size_t len = strcspn(p, ",");
        bool known = false;
        for (size_t i = 0; i < NSCENARIOS; i++)
            known |= strlen(scenarios[i].name) == len && !strncmp(p, scenarios[i].name, len);
        if (!known) {
            fprintf(stderr, "pypool-bench: unknown scenario '%.*s'\n", (int)len, p);
            return -1;
        }
    }
    return 0;
}

static void print_banner(const bench_opts *o, const bench_machine *m)
{
    printf("pypool-bench %d.%d.%d%s: %ld cores, %s, %s, Python %s (%s)\n", PYPOOL_VERSION_MAJOR,
           PYPOOL_VERSION_MINOR, PYPOOL_VERSION_PATCH, o->quick ? " --quick" : "", m->cores, m->cpu,
           m->kernel, m->python, o->python);
    printf("window %.2f s + %.2f s warm-up per point, %u alternating rounds, medians over "
           "rounds; embedded baseline %s\n",
           o->seconds, o->warmup, o->rounds, emb_available() ? "on" : "off (no python3-embed)");
    fflush(stdout);
}

static void check_library(bench_opts *o)
{
    char why[512];
    if (pool_library_works(o, why, sizeof why))
        return;
    o->pool_broken = true;
    printf("\n*** pypool itself could not serve a call (%s):\n*** its column is empty; the "
           "baselines are still measured.\n",
           why);
}

int main(int argc, char **argv)
{
    bench_opts o = {0};
    bench_machine m = {0};
    if (parse_args(argc, argv, &o) != 0 || check_scenarios(o.scenario) != 0)
        return 2;
    machine_probe(&o, &m);
    print_banner(&o, &m);
    check_library(&o);
    int64_t t0 = bench_now_ns();
    for (size_t i = 0; i < NSCENARIOS; i++) {
        if (!selected(o.scenario, &scenarios[i]))
            continue;
        int64_t s0 = bench_now_ns();
        scenarios[i].run(&o);
        results_set_elapsed(scenarios[i].name, (double)(bench_now_ns() - s0) / 1e9);
    }
    results_set_elapsed("total", (double)(bench_now_ns() - t0) / 1e9);
    report_tables();
    report_targets();
    int rc = 0;
    if (o.json_path && json_write(o.json_path, &o, &m) != 0) {
        bench_warn("cannot write %s", o.json_path);
        rc = 1;
    }
    if (o.plot_dir && plot_write(o.plot_dir) != 0)
        rc = 1;
    results_free();
    emb_shutdown();
    return o.pool_broken ? 3 : rc;
}

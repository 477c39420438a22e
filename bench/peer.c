/*
 * peer.c - the peer: concurrent.futures.ProcessPoolExecutor doing the same work, measured by
 * bench/python/ppe_bench.py in a subprocess started (shell-free) in the same run. The script
 * prints one flat JSON object per line; the few fields needed are picked out here.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

/* The number after "key": in line, or NAN. */
static double json_number(const char *line, const char *key)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":", key);
    const char *p = strstr(line, pat);
    return p ? strtod(p + strlen(pat), NULL) : NAN;
}

/* Pushes every number of the array "key":[...] in line onto out. */
static void json_array(const char *line, const char *key, samples *out)
{
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":[", key);
    const char *p = strstr(line, pat);
    if (!p)
        return;
    p += strlen(pat);
    while (*p && *p != ']') {
        char *end;
        double v = strtod(p, &end);
        if (end == p)
            break;
        samples_push(out, v);
        p = *end == ',' ? end + 1 : end;
    }
}

static char *run_ppe(const bench_opts *o, const char *const *args)
{
    const char *argv[24] = {o->python, BENCH_PY_DIR "/ppe_bench.py"};
    size_t n = 2;
    for (size_t i = 0; args[i] && n < 23; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int status;
    char *out = bench_run_capture(argv, BENCH_PY_DIR, &status);
    if (!out || status != 0) {
        bench_warn("ppe_bench.py failed (wait status %d)", status);
        free(out);
        return NULL;
    }
    return out;
}

static void sizes_csv(const size_t *sizes, size_t n, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s%zu", i ? "," : "", sizes[i]);
}

int peer_latency(const bench_opts *o, const size_t *sizes, size_t n, samples *out)
{
    char csv[256], secs[32], warm[32], min_calls[16];
    sizes_csv(sizes, n, csv, sizeof csv);
    snprintf(secs, sizeof secs, "%g", o->seconds);
    snprintf(warm, sizeof warm, "%g", o->warmup);
    snprintf(min_calls, sizeof min_calls, "%u", o->min_calls);
    const char *args[] = {"--mode",   "latency", "--sizes",     csv,       "--seconds", secs,
                          "--warmup", warm,      "--min-iters", min_calls, NULL};
    char *text = run_ppe(o, args);
    if (!text)
        return -1;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        double size = json_number(line, "size");
        for (size_t i = 0; i < n; i++)
            if (size == (double)sizes[i])
                json_array(line, "samples_us", &out[i]);
    }
    free(text);
    return 0;
}

int peer_throughput(const bench_opts *o, const char *method, unsigned workers, double *calls_per_s)
{
    char w[16], secs[32];
    snprintf(w, sizeof w, "%u", workers);
    snprintf(secs, sizeof secs, "%g", o->seconds);
    const char *args[] = {"--mode", "throughput", "--workers", w,   "--seconds",
                          secs,     "--method",   method,      NULL};
    char *text = run_ppe(o, args);
    if (!text) {
        *calls_per_s = NAN;
        return -1;
    }
    *calls_per_s = json_number(text, "calls_per_s");
    free(text);
    return 0;
}

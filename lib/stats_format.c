/*
 * stats_format.c - pypool_stats as text a monitoring system reads: the Prometheus text
 * exposition format (0.0.4) or one JSON object. Works on a snapshot only, so it knows nothing
 * of a live pool and takes no lock.
 *
 * Design notes: output goes through a small appender that keeps counting when the buffer is
 * full, which gives the snprintf contract (the return value is the length the whole text needs).
 * The Prometheus histograms use a fixed set of `le` bounds; each is filled with the fine
 * buckets (histogram.c) that lie wholly at or below it, so a bound is exact to the fine
 * bucket's resolution (within 1/16 of its value).
 */
#define _GNU_SOURCE
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "histogram.h"
#include "pypool.h"

typedef struct out {
    char *buf;
    size_t cap;
    size_t len; /* what the whole text needs so far */
} out;

static void put(out *o, const char *s, size_t n)
{
    if (o->len < o->cap) {
        size_t room = o->cap - o->len - 1; /* keep the NUL's place */
        memcpy(o->buf + o->len, s, n < room ? n : room);
    }
    o->len += n;
}

static void putf(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void putf(out *o, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(o, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void terminate(out *o)
{
    if (o->cap > 0)
        o->buf[o->len < o->cap ? o->len : o->cap - 1] = '\0';
}

/* A string inside double quotes: Prometheus label values and JSON strings escape alike for
 * backslash, quote and newline; JSON also needs every other control character escaped. */
static void put_quoted(out *o, const char *s, bool json)
{
    put(o, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '\\' || *c == '"')
            putf(o, "\\%c", *c);
        else if (*c == '\n')
            put(o, "\\n", 2);
        else if (json && *c < 0x20)
            putf(o, "\\u%04x", *c);
        else
            put(o, (const char *)c, 1);
    }
    put(o, "\"", 1);
}

/* --- Prometheus ------------------------------------------------------------------------------ */

/* Bounds of the exported histograms, in µs. */
static const uint64_t LE_US[] = {100,     250,     500,     1000,     2500,     5000,
                                 10000,   25000,   50000,   100000,   250000,   500000,
                                 1000000, 2500000, 5000000, 10000000, 30000000, 60000000};

static void prom_header(out *o, const char *name, const char *type, const char *help)
{
    putf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{pool="...",extra} value */
static void prom_sample(out *o, const char *name, const char *pool, const char *extra,
                        const char *value)
{
    putf(o, "%s{pool=", name);
    put_quoted(o, pool, false);
    if (extra)
        putf(o, ",%s", extra);
    putf(o, "} %s\n", value);
}

static void prom_u64(out *o, const char *name, const char *type, const char *help, const char *pool,
                     uint64_t v)
{
    char value[32];
    snprintf(value, sizeof value, "%llu", (unsigned long long)v);
    prom_header(o, name, type, help);
    prom_sample(o, name, pool, NULL, value);
}

static void prom_histogram(out *o, const char *name, const char *help, const char *pool,
                           const pypool_histogram *h)
{
    char value[32], label[48], bucket[64], sum[64], count[64];
    snprintf(bucket, sizeof bucket, "%s_bucket", name);
    snprintf(sum, sizeof sum, "%s_sum", name);
    snprintf(count, sizeof count, "%s_count", name);
    prom_header(o, name, "histogram", help);
    unsigned fine = 0;
    uint64_t below = 0;
    for (size_t i = 0; i < sizeof LE_US / sizeof LE_US[0]; i++) {
        for (; fine < PYPOOL_HISTOGRAM_BUCKETS &&
               pypool__hist_lower(fine) + pypool__hist_width(fine) - 1 <= LE_US[i];
             fine++)
            below += h->buckets[fine];
        snprintf(label, sizeof label, "le=\"%g\"", (double)LE_US[i] / 1e6);
        snprintf(value, sizeof value, "%llu", (unsigned long long)below);
        prom_sample(o, bucket, pool, label, value);
    }
    snprintf(value, sizeof value, "%llu", (unsigned long long)h->count);
    prom_sample(o, bucket, pool, "le=\"+Inf\"", value);
    snprintf(value, sizeof value, "%.6f", (double)h->sum_us / 1e6);
    prom_sample(o, sum, pool, NULL, value);
    snprintf(value, sizeof value, "%llu", (unsigned long long)h->count);
    prom_sample(o, count, pool, NULL, value);
}

static void prom_labelled(out *o, const char *name, const char *label, const char *key, uint64_t v,
                          const char *pool)
{
    char extra[64], value[32];
    snprintf(extra, sizeof extra, "%s=\"%s\"", label, key);
    snprintf(value, sizeof value, "%llu", (unsigned long long)v);
    prom_sample(o, name, pool, extra, value);
}

/* Slots in none of the counted states: never started (lazy) or stopped. With them the
 * pypool_workers series add up to pypool_size. */
static unsigned slots_without_worker(const pypool_stats *st)
{
    unsigned counted = st->idle + st->busy + st->starting + st->backoff + st->failed;
    return st->size > counted ? st->size - counted : 0;
}

static void format_prometheus(out *o, const pypool_stats *st, const char *pool)
{
    prom_u64(o, "pypool_calls_total", "counter", "Calls that got a reply (ok or remote error).",
             pool, st->calls);
    prom_header(o, "pypool_call_errors_total", "counter",
                "Calls that failed, by error (crash: workers that exited unexpectedly).");
    prom_labelled(o, "pypool_call_errors_total", "error", "remote", st->remote_errors, pool);
    prom_labelled(o, "pypool_call_errors_total", "error", "timeout", st->timeouts, pool);
    prom_labelled(o, "pypool_call_errors_total", "error", "protocol", st->protocol_errors, pool);
    /* The stats count crashed workers, not the calls they failed: an idle crash counts too. */
    prom_labelled(o, "pypool_call_errors_total", "error", "crash", st->crashes, pool);
    prom_u64(o, "pypool_call_timeouts_running_total", "counter",
             "Calls that hit their deadline while running (the worker was killed).", pool,
             st->call_timeouts);
    prom_u64(o, "pypool_worker_restarts_total", "counter", "Workers started to replace another.",
             pool, st->restarts);
    prom_header(o, "pypool_worker_crashes_total", "counter",
                "Workers that exited unexpectedly, by how.");
    prom_labelled(o, "pypool_worker_crashes_total", "how", "signal", st->crashes_signal, pool);
    prom_labelled(o, "pypool_worker_crashes_total", "how", "exit", st->crashes_exit, pool);
    prom_u64(o, "pypool_worker_recycles_total", "counter",
             "Workers retired by max_calls_per_worker or RSS.", pool, st->recycles);
    prom_u64(o, "pypool_failed_starts_total", "counter", "Workers that never said Hello.", pool,
             st->failed_starts);
    prom_u64(o, "pypool_ping_failures_total", "counter", "Workers killed for missing a ping.", pool,
             st->ping_failures);
    prom_u64(o, "pypool_cancels_total", "counter", "Calls cancelled without killing a worker.",
             pool, st->cancels);
    prom_header(o, "pypool_workers", "gauge",
                "Slots by state (empty: no worker, never started or stopped).");
    prom_labelled(o, "pypool_workers", "state", "idle", st->idle, pool);
    prom_labelled(o, "pypool_workers", "state", "busy", st->busy, pool);
    prom_labelled(o, "pypool_workers", "state", "starting", st->starting, pool);
    prom_labelled(o, "pypool_workers", "state", "backoff", st->backoff, pool);
    prom_labelled(o, "pypool_workers", "state", "failed", st->failed, pool);
    prom_labelled(o, "pypool_workers", "state", "empty", slots_without_worker(st), pool);
    prom_u64(o, "pypool_size", "gauge", "Slots in the pool.", pool, st->size);
    prom_u64(o, "pypool_waiters", "gauge", "Threads waiting for a worker.", pool, st->waiters);
    prom_u64(o, "pypool_inflight", "gauge", "Calls in flight.", pool, st->inflight);
    prom_u64(o, "pypool_sessions", "gauge", "Sessions bound to a worker.", pool, st->sessions);
    prom_histogram(o, "pypool_wait_seconds", "From a call's start to a worker in hand.", pool,
                   &st->wait_us);
    prom_histogram(o, "pypool_call_seconds", "From the request sent to its reply read.", pool,
                   &st->call_us);
}

/* --- JSON ------------------------------------------------------------------------------------ */

static void json_u64(out *o, const char *key, uint64_t v, bool comma)
{
    putf(o, "\"%s\":%llu%s", key, (unsigned long long)v, comma ? "," : "");
}

static void json_histogram(out *o, const char *key, const pypool_histogram *h)
{
    putf(o, "\"%s\":{", key);
    json_u64(o, "count", h->count, true);
    json_u64(o, "sum", h->sum_us, true);
    putf(o, "\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,", pypool_histogram_percentile(h, 0.5),
         pypool_histogram_percentile(h, 0.9), pypool_histogram_percentile(h, 0.99));
    json_u64(o, "max", h->max_us, false);
    put(o, "}", 1);
}

static void format_json(out *o, const pypool_stats *st, const char *pool)
{
    put(o, "{\"pool\":", 8);
    put_quoted(o, pool, true);
    put(o, ",", 1);
    const struct {
        const char *key;
        uint64_t v;
    } fields[] = {
        {"size", st->size},
        {"idle", st->idle},
        {"busy", st->busy},
        {"starting", st->starting},
        {"backoff", st->backoff},
        {"failed", st->failed},
        {"waiters", st->waiters},
        {"inflight", st->inflight},
        {"calls", st->calls},
        {"remote_errors", st->remote_errors},
        {"timeouts", st->timeouts},
        {"call_timeouts", st->call_timeouts},
        {"restarts", st->restarts},
        {"crashes", st->crashes},
        {"crashes_signal", st->crashes_signal},
        {"crashes_exit", st->crashes_exit},
        {"recycles", st->recycles},
        {"protocol_errors", st->protocol_errors},
        {"failed_starts", st->failed_starts},
        {"ping_failures", st->ping_failures},
        {"leak_warnings", st->leak_warnings},
        {"sessions", st->sessions},
        {"cancels", st->cancels},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        json_u64(o, fields[i].key, fields[i].v, true);
    json_histogram(o, "wait_us", &st->wait_us);
    put(o, ",", 1);
    json_histogram(o, "call_us", &st->call_us);
    put(o, ",\"slots\":[", 10);
    unsigned n = st->slot_count < PYPOOL_STATS_MAX_SLOTS ? st->slot_count : PYPOOL_STATS_MAX_SLOTS;
    for (unsigned i = 0; i < n; i++) {
        const pypool_slot_stats *s = &st->slots[i];
        putf(o, "%s{\"state\":\"%s\",\"pid\":%d,\"calls\":%llu,\"restarts\":%llu}", i ? "," : "",
             pypool_slot_state_name(s->state), s->pid, (unsigned long long)s->calls,
             (unsigned long long)s->restarts);
    }
    put(o, "]}\n", 3);
}

int pypool_stats_format(const pypool_stats *st, int format, const char *pool_name, char *buf,
                        size_t cap)
{
    if (!st || (format != PYPOOL_FORMAT_PROMETHEUS && format != PYPOOL_FORMAT_JSON))
        return PYPOOL_EINVAL;
    out o = {.buf = buf, .cap = buf ? cap : 0, .len = 0};
    const char *pool = pool_name ? pool_name : "";
    if (format == PYPOOL_FORMAT_PROMETHEUS)
        format_prometheus(&o, st, pool);
    else
        format_json(&o, st, pool);
    terminate(&o);
    return o.len > INT_MAX ? INT_MAX : (int)o.len;
}

/*
 * stats.c - the pool's counters and slot states as JSON, and a health check.
 *
 * /stats prints every field of pypool_stats (one consistent snapshot from pypool_stats_get),
 * slots with their state names. /healthz is 200 while at least one worker can take a call.
 */
#include "stats.h"

#include <stdlib.h>

static void stats_counters(jbuf *b, const pypool_stats *st)
{
    json_field_u64(b, "size", st->size);
    json_field_u64(b, "idle", st->idle);
    json_field_u64(b, "busy", st->busy);
    json_field_u64(b, "starting", st->starting);
    json_field_u64(b, "backoff", st->backoff);
    json_field_u64(b, "failed", st->failed);
    json_field_u64(b, "waiters", st->waiters);
    json_field_u64(b, "calls", st->calls);
    json_field_u64(b, "remote_errors", st->remote_errors);
    json_field_u64(b, "timeouts", st->timeouts);
    json_field_u64(b, "call_timeouts", st->call_timeouts);
    json_field_u64(b, "restarts", st->restarts);
    json_field_u64(b, "crashes", st->crashes);
    json_field_u64(b, "crashes_signal", st->crashes_signal);
    json_field_u64(b, "crashes_exit", st->crashes_exit);
    json_field_u64(b, "recycles", st->recycles);
    json_field_u64(b, "protocol_errors", st->protocol_errors);
    json_field_u64(b, "failed_starts", st->failed_starts);
    json_field_u64(b, "ping_failures", st->ping_failures);
    json_field_u64(b, "leak_warnings", st->leak_warnings);
    json_field_u64(b, "sessions", st->sessions);
    json_field_u64(b, "inflight", st->inflight);
    json_field_u64(b, "cancels", st->cancels);
    json_field_u64(b, "slot_count", st->slot_count);
}

static void stats_slots(jbuf *b, const pypool_stats *st)
{
    json_key(b, "slots");
    json_begin_array(b);
    for (unsigned i = 0; i < st->slot_count; i++) {
        const pypool_slot_stats *s = &st->slots[i];
        json_begin_object(b);
        json_field_u64(b, "slot", i);
        json_field_str(b, "state", pypool_slot_state_name(s->state));
        json_field_i64(b, "pid", s->pid);
        json_field_u64(b, "calls", s->calls);
        json_field_u64(b, "restarts", s->restarts);
        json_end_object(b);
    }
    json_end_array(b);
}

void handle_stats(const httpd_app *app, reply *r)
{
    pypool_stats st;
    pypool_stats_get(app->pool, &st);
    jbuf doc;
    jbuf_init(&doc);
    json_begin_object(&doc);
    stats_counters(&doc, &st);
    stats_slots(&doc, &st);
    json_end_object(&doc);
    reply_json(r, 200, &doc);
}

void handle_metrics(const httpd_app *app, reply *r)
{
    pypool_stats st;
    pypool_stats_get(app->pool, &st);
    int need = pypool_stats_format(&st, PYPOOL_FORMAT_PROMETHEUS, "httpd", NULL, 0);
    char *text = need > 0 ? malloc((size_t)need + 1) : NULL;
    if (!text) {
        reply_error(r, 500, "internal error", "cannot format the metrics");
        return;
    }
    pypool_stats_format(&st, PYPOOL_FORMAT_PROMETHEUS, "httpd", text, (size_t)need + 1);
    reply_bytes(r, 200, text, (size_t)need, "text/plain; version=0.0.4; charset=utf-8");
    free(text);
}

void handle_healthz(const httpd_app *app, reply *r)
{
    pypool_stats st;
    pypool_stats_get(app->pool, &st);
    unsigned ready = st.idle + st.busy;
    jbuf doc;
    jbuf_init(&doc);
    json_begin_object(&doc);
    json_field_str(&doc, "status", ready > 0 ? "ok" : "unavailable");
    json_field_u64(&doc, "ready", ready);
    json_field_u64(&doc, "size", st.size);
    json_end_object(&doc);
    reply_json(r, ready > 0 ? 200 : 503, &doc);
}

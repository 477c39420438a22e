/*
 * router.c - request routing.
 *
 *   POST   /call/<method>                 -> pypool_call
 *   POST   /stream/<method>               -> pypool_stream_open/next, chunked reply
 *   POST   /session/<id>/call/<method>    -> pypool_session_call
 *   POST   /session/<id>/stream/<method>  -> the same, on the session's worker
 *   DELETE /session/<id>                  -> pypool_session_close
 *   GET, PUT, DELETE /kv/<key>            -> the server's key/value store (no Python)
 *   GET    /stats                         -> pypool_stats_get as JSON
 *   GET    /healthz                       -> 200 while a worker is ready
 *   GET    /metrics                       -> pypool_stats_format, Prometheus text
 *
 * Path segments are copied into fixed buffers and checked against a small alphabet, so
 * nothing the client sends reaches the pool unchecked: a wrong path is 404, a wrong HTTP
 * method 405 (with Allow), an empty or malformed name 400.
 */
#include "router.h"

#include <stdbool.h>
#include <string.h>

#include "calls.h"
#include "kvroute.h"
#include "stats.h"
#include "streams.h"

#define NAME_MAX_LEN 128

enum route_kind {
    ROUTE_NONE,
    ROUTE_HEALTHZ,
    ROUTE_STATS,
    ROUTE_METRICS,
    ROUTE_CALL,
    ROUTE_STREAM,
    ROUTE_SESSION,
    ROUTE_SESSION_CALL,
    ROUTE_SESSION_STREAM,
    ROUTE_KV,
};

typedef struct route {
    enum route_kind kind;
    bool name_too_long;
    char session[NAME_MAX_LEN + 1];
    char method[NAME_MAX_LEN + 1];
    char key[NAME_MAX_LEN + 1];
} route;

/* Copies the segment at *p (up to '/' or the end) into out and advances *p past it. */
static void take_segment(const char **p, char *out, bool *too_long)
{
    size_t n = strcspn(*p, "/");
    if (n > NAME_MAX_LEN) {
        *too_long = true;
        n = NAME_MAX_LEN;
    }
    memcpy(out, *p, n);
    out[n] = '\0';
    *p += strcspn(*p, "/");
}

/* "<prefix>/<name>" or "<prefix>" (an empty name: 400 below) at rest: sets kind and the name. */
static bool parse_named(const char *rest, const char *prefix, enum route_kind kind, char *name,
                        route *rt)
{
    size_t n = strlen(prefix);
    if (strncmp(rest, prefix, n) != 0 || (rest[n] != '/' && rest[n] != '\0'))
        return false;
    rest += n;
    if (*rest == '/') {
        rest++;
        take_segment(&rest, name, &rt->name_too_long);
    }
    rt->kind = *rest == '\0' ? kind : ROUTE_NONE;
    return true;
}

/* "/session/<id>", "/session/<id>/call/<method>" or ".../stream/<method>"; rest points after
 * "/session/". */
static void parse_session(const char *rest, route *rt)
{
    take_segment(&rest, rt->session, &rt->name_too_long);
    if (*rest == '\0')
        rt->kind = ROUTE_SESSION;
    else if (!parse_named(rest, "/call", ROUTE_SESSION_CALL, rt->method, rt))
        parse_named(rest, "/stream", ROUTE_SESSION_STREAM, rt->method, rt);
}

static void parse_path(const char *path, route *rt)
{
    memset(rt, 0, sizeof *rt);
    if (strcmp(path, "/healthz") == 0) {
        rt->kind = ROUTE_HEALTHZ;
    } else if (strcmp(path, "/stats") == 0) {
        rt->kind = ROUTE_STATS;
    } else if (strcmp(path, "/metrics") == 0) {
        rt->kind = ROUTE_METRICS;
    } else if (strncmp(path, "/session/", 9) == 0) {
        parse_session(path + 9, rt);
    } else if (!parse_named(path, "/call", ROUTE_CALL, rt->method, rt) &&
               !parse_named(path, "/stream", ROUTE_STREAM, rt->method, rt)) {
        parse_named(path, "/kv", ROUTE_KV, rt->key, rt);
    }
}

/* Handler and session names: 1..128 of [A-Za-z0-9_.:-]. */
static bool valid_name(const char *s)
{
    static const char extra[] = "_.:-";
    if (*s == '\0')
        return false;
    for (; *s; s++) {
        bool alnum =
            (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9');
        if (!alnum && !strchr(extra, *s))
            return false;
    }
    return true;
}

static const char *allowed_methods(enum route_kind kind)
{
    switch (kind) {
    case ROUTE_HEALTHZ:
    case ROUTE_STATS:
    case ROUTE_METRICS:
        return "GET, HEAD";
    case ROUTE_SESSION:
        return "DELETE";
    case ROUTE_KV:
        return "GET, HEAD, PUT, DELETE";
    default:
        return "POST";
    }
}

static bool method_allowed(enum route_kind kind, const char *http_method)
{
    if (kind == ROUTE_HEALTHZ || kind == ROUTE_STATS || kind == ROUTE_METRICS)
        return strcmp(http_method, "GET") == 0 || strcmp(http_method, "HEAD") == 0;
    if (kind == ROUTE_SESSION)
        return strcmp(http_method, "DELETE") == 0;
    if (kind == ROUTE_KV)
        return strcmp(http_method, "GET") == 0 || strcmp(http_method, "HEAD") == 0 ||
               strcmp(http_method, "PUT") == 0 || strcmp(http_method, "DELETE") == 0;
    return strcmp(http_method, "POST") == 0;
}

/* 400 for a bad session id, method name or key; true if the names are fine. */
static bool check_names(const route *rt, reply *r)
{
    bool has_session = rt->kind == ROUTE_SESSION || rt->kind == ROUTE_SESSION_CALL ||
                       rt->kind == ROUTE_SESSION_STREAM;
    bool has_method = rt->kind == ROUTE_CALL || rt->kind == ROUTE_SESSION_CALL ||
                      rt->kind == ROUTE_STREAM || rt->kind == ROUTE_SESSION_STREAM;
    if (rt->name_too_long) {
        reply_error(r, 400, "bad request", "names are limited to 128 characters");
    } else if (has_session && !valid_name(rt->session)) {
        reply_error(r, 400, "bad request", "session id must be 1-128 of [A-Za-z0-9_.:-]");
    } else if (has_method && rt->method[0] == '\0') {
        reply_error(r, 400, "bad request", "empty method name");
    } else if (has_method && !valid_name(rt->method)) {
        reply_error(r, 400, "bad request", "method name must be 1-128 of [A-Za-z0-9_.:-]");
    } else if (rt->kind == ROUTE_KV && !valid_name(rt->key)) {
        reply_error(r, 400, "bad request", "key must be 1-128 of [A-Za-z0-9_.:-]");
    } else {
        return true;
    }
    return false;
}

static void dispatch(const httpd_app *app, const route *rt, const httpd_request *rq, reply *r)
{
    switch (rt->kind) {
    case ROUTE_HEALTHZ:
        handle_healthz(app, r);
        break;
    case ROUTE_STATS:
        handle_stats(app, r);
        break;
    case ROUTE_METRICS:
        handle_metrics(app, r);
        break;
    case ROUTE_CALL:
        handle_call(app, rt->method, rq->body, rq->len, rq->timeout_ms, r);
        break;
    case ROUTE_SESSION_CALL:
        handle_session_call(app, rt->session, rt->method, rq->body, rq->len, rq->timeout_ms, r);
        break;
    case ROUTE_STREAM:
        handle_stream(app, NULL, rt->method, rq->body, rq->len, rq->timeout_ms, r);
        break;
    case ROUTE_SESSION_STREAM:
        handle_stream(app, rt->session, rt->method, rq->body, rq->len, rq->timeout_ms, r);
        break;
    case ROUTE_SESSION:
        handle_session_close(app, rt->session, r);
        break;
    case ROUTE_KV:
        handle_kv(app, rq->http_method, rt->key, rq->body, rq->len, r);
        break;
    case ROUTE_NONE:
        reply_error(r, 404, "not found", "no such endpoint");
        break;
    }
}

void route_request(const httpd_app *app, const httpd_request *rq, reply *r)
{
    route rt;
    parse_path(rq->path, &rt);
    if (rt.kind == ROUTE_NONE) {
        reply_error(r, 404, "not found", "no such endpoint");
        return;
    }
    if (!method_allowed(rt.kind, rq->http_method)) {
        reply_error(r, 405, "method not allowed", "see the Allow header");
        r->allow = allowed_methods(rt.kind);
        return;
    }
    if (!check_names(&rt, r))
        return;
    dispatch(app, &rt, rq, r);
}

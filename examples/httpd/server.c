/*
 * server.c - the libmicrohttpd daemon, request bodies and the admission gate.
 *
 * Design notes:
 * - Threads: MHD runs a listening thread plus one thread per connection; the access handler
 *   (and so the blocking pypool call) runs in the connection's thread, and so does the content
 *   reader of a streamed reply (streams.c). No lock is held while a request runs.
 * - Bodies: MHD hands the upload in pieces; they accumulate in the request up to
 *   max_body_bytes. A Content-Length over the cap is refused at once with 413; a chunked
 *   body that grows over it is discarded and answered 413 when it ends.
 * - Gate: `mu` guards `stopping` and `inflight`. A request is admitted (inflight++) when it
 *   starts unless the server is stopping, and leaves (inflight--) in MHD's completion
 *   callback, after its reply was sent. Requests that start after server_stop began get 503
 *   without touching the pool, so once inflight is 0 and the daemon is stopped nothing can
 *   reach the pool: main may destroy it. A stream leaves the gate when its response is over;
 *   its pypool stream is closed when MHD frees the response, in the connection's thread, which
 *   MHD_stop_daemon joins.
 */
#define _GNU_SOURCE
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "reply.h"
#include "router.h"
#include "streams.h"

#define STREAM_BLOCK_SIZE 16384 /* MHD's advice on reads from a stream (it passes what fits) */
#define IDLE_TIMEOUT_S    60    /* MHD closes a connection with no I/O for this long */

struct httpd_server {
    struct MHD_Daemon *daemon;
    httpd_app app;
    int64_t drain_ms;
    pthread_mutex_t mu;
    pthread_cond_t drained; /* signalled when inflight drops to 0 (CLOCK_MONOTONIC) */
    bool stopping;
    unsigned inflight;
};

/* Per-request state, MHD's *con_cls. */
typedef struct request {
    char *body;
    size_t len, cap;
    bool admitted;  /* counted in inflight */
    bool too_large; /* body over the cap: discard the rest, answer 413 */
} request;

/* --- the admission gate ------------------------------------------------------------------- */

static bool gate_enter(httpd_server *s)
{
    pthread_mutex_lock(&s->mu);
    bool ok = !s->stopping;
    if (ok)
        s->inflight++;
    pthread_mutex_unlock(&s->mu);
    return ok;
}

static void gate_leave(httpd_server *s)
{
    pthread_mutex_lock(&s->mu);
    if (--s->inflight == 0)
        pthread_cond_broadcast(&s->drained);
    pthread_mutex_unlock(&s->mu);
}

/* Closes the gate and waits until the admitted requests are done or drain_ms passed. */
static void gate_close_and_drain(httpd_server *s)
{
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += s->drain_ms / 1000;
    deadline.tv_nsec += (s->drain_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    int rc = 0;
    while (s->inflight > 0 && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&s->drained, &s->mu, &deadline);
    if (s->inflight > 0)
        fprintf(stderr, "pypool_httpd: %u request(s) still running after %lld ms\n", s->inflight,
                (long long)s->drain_ms);
    pthread_mutex_unlock(&s->mu);
}

/* --- replies ------------------------------------------------------------------------------ */

static void add_header(struct MHD_Response *resp, const char *name, const char *value)
{
    if (value)
        MHD_add_response_header(resp, name, value);
}

/* MHD's content reader of a streamed reply; runs in the connection's thread. */
static ssize_t on_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    ssize_t n = stream_read(cls, buf, max);
    if (n == STREAM_READ_END)
        return MHD_CONTENT_READER_END_OF_STREAM;
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR; /* the connection is closed at once */
    return n;
}

/* Runs when MHD is done with the response: sent, failed or the client went away. */
static void on_stream_free(void *cls)
{
    stream_free(cls);
}

/* A body whose response also closes a stream once MHD is done with it (sent or not). */
typedef struct body_and_stream {
    char *body;
    httpd_stream *stream;
} body_and_stream;

static void on_body_and_stream_free(void *cls)
{
    body_and_stream *bs = cls;
    free(bs->body);
    stream_free(bs->stream);
    free(bs);
}

/* The reply's body as an MHD response; the body or stream belongs to the response. */
static struct MHD_Response *make_response(reply *r)
{
    struct MHD_Response *resp;
    if (r->stream) {
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, STREAM_BLOCK_SIZE,
                                                 on_stream_read, r->stream, on_stream_free);
        if (resp)
            r->stream = NULL;
    } else if (r->close_after) {
        body_and_stream *bs = malloc(sizeof *bs);
        if (!bs)
            return NULL;
        resp = MHD_create_response_from_buffer_with_free_callback_cls(r->len, r->body,
                                                                      on_body_and_stream_free, bs);
        if (!resp) {
            free(bs);
            return NULL;
        }
        bs->body = r->body;
        bs->stream = r->close_after;
        r->body = NULL;
        r->len = 0;
        r->close_after = NULL;
    } else {
        resp = MHD_create_response_from_buffer(r->len, r->body, MHD_RESPMEM_MUST_FREE);
        if (resp) {
            r->body = NULL;
            r->len = 0;
        }
    }
    return resp;
}

static enum MHD_Result send_reply(struct MHD_Connection *c, reply *r)
{
    struct MHD_Response *resp = make_response(r);
    if (!resp)
        return MHD_NO; /* MHD closes the connection */
    char pid[16];
    snprintf(pid, sizeof pid, "%d", r->worker_pid);
    add_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    add_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    add_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, r->retry_after);
    add_header(resp, "X-Pypool-Worker", r->worker_pid > 0 ? pid : NULL);
    add_header(resp, MHD_HTTP_HEADER_CONNECTION, r->close ? "close" : NULL);
    enum MHD_Result ok = MHD_queue_response(c, r->status, resp);
    MHD_destroy_response(resp);
    return ok;
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status, const char *error,
                                  const char *message)
{
    reply r;
    reply_init(&r);
    reply_error(&r, status, error, message);
    r.close = status == 413 || status == 503;
    enum MHD_Result ok = send_reply(c, &r);
    reply_free(&r);
    return ok;
}

/* --- request bodies ----------------------------------------------------------------------- */

static void body_append(request *rq, const char *data, size_t n, size_t max)
{
    if (rq->too_large || n > max - rq->len) {
        rq->too_large = true;
        return;
    }
    if (rq->len + n > rq->cap) {
        size_t cap = rq->cap ? rq->cap : 4096;
        while (cap < rq->len + n)
            cap *= 2;
        cap = cap > max ? max : cap;
        char *body = realloc(rq->body, cap);
        if (!body) {
            rq->too_large = true; /* cannot hold it: same answer as too large */
            return;
        }
        rq->body = body;
        rq->cap = cap;
    }
    memcpy(rq->body + rq->len, data, n);
    rq->len += n;
}

/* True if the request announces a Content-Length over the cap. */
static bool declared_too_large(struct MHD_Connection *c, size_t max)
{
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
    if (!cl)
        return false;
    char *end = NULL;
    errno = 0;
    unsigned long long n = strtoull(cl, &end, 10);
    return errno == ERANGE || n > max;
}

/* The client's "X-Timeout-Ms" when it is a number in [1, max], else max: a client may ask
 * for a shorter deadline than the server's, never a longer one. */
static int64_t request_timeout_ms(struct MHD_Connection *c, int64_t max)
{
    const char *text = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Timeout-Ms");
    if (!text)
        return max;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < 1 || v > max)
        return max;
    return v;
}

/* --- MHD callbacks ------------------------------------------------------------------------ */

/* First call for a request: headers are in, no body yet. */
static enum MHD_Result request_begin(httpd_server *s, struct MHD_Connection *c, void **con_cls)
{
    request *rq = calloc(1, sizeof *rq);
    if (!rq)
        return MHD_NO;
    *con_cls = rq;
    rq->admitted = gate_enter(s);
    if (declared_too_large(c, s->app.max_body_bytes))
        return send_error(c, 413, "payload too large", "request body over --max-body-bytes");
    return MHD_YES;
}

/* Last call for a request: the whole body is in. */
static enum MHD_Result request_end(httpd_server *s, struct MHD_Connection *c, const char *url,
                                   const char *method, request *rq)
{
    if (!rq->admitted)
        return send_error(c, 503, "unavailable", "the server is shutting down");
    if (rq->too_large)
        return send_error(c, 413, "payload too large", "request body over --max-body-bytes");
    httpd_request hr = {
        .http_method = method,
        .path = url,
        .body = rq->body ? rq->body : "",
        .len = rq->len,
        .timeout_ms = request_timeout_ms(c, s->app.call_timeout_ms),
    };
    reply r;
    reply_init(&r);
    route_request(&s->app, &hr, &r);
    /* A stream may be silent between chunks for as long as its deadline allows: MHD must not
     * take that for an idle connection. */
    int64_t stream_s = hr.timeout_ms / 1000 + 1;
    if (r.stream && stream_s > IDLE_TIMEOUT_S)
        MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)stream_s);
    enum MHD_Result ok = send_reply(c, &r);
    reply_free(&r);
    return ok;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *c, const char *url,
                                 const char *method, const char *version, const char *upload_data,
                                 size_t *upload_data_size, void **con_cls)
{
    (void)version;
    httpd_server *s = cls;
    request *rq = *con_cls;
    if (!rq)
        return request_begin(s, c, con_cls);
    if (*upload_data_size > 0) {
        body_append(rq, upload_data, *upload_data_size, s->app.max_body_bytes);
        *upload_data_size = 0;
        return MHD_YES;
    }
    return request_end(s, c, url, method, rq);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode why)
{
    (void)c;
    (void)why;
    httpd_server *s = cls;
    request *rq = *con_cls;
    if (!rq)
        return;
    if (rq->admitted)
        gate_leave(s);
    free(rq->body);
    free(rq);
    *con_cls = NULL;
}

/* --- start / stop ------------------------------------------------------------------------- */

static bool gate_init(httpd_server *s)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return false;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    bool ok = pthread_cond_init(&s->drained, &attr) == 0;
    pthread_condattr_destroy(&attr);
    if (ok && pthread_mutex_init(&s->mu, NULL) != 0) {
        pthread_cond_destroy(&s->drained);
        ok = false;
    }
    return ok;
}

static struct MHD_Daemon *daemon_start(httpd_server *s, const httpd_server_config *cfg)
{
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(cfg->port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                     MHD_USE_AUTO | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    return MHD_start_daemon(flags, cfg->port, NULL, NULL, on_access, s, MHD_OPTION_SOCK_ADDR,
                            (const struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED,
                            on_completed, s, MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S,
                            MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)512, MHD_OPTION_END);
}

httpd_server *server_start(const httpd_server_config *cfg, const httpd_app *app)
{
    httpd_server *s = calloc(1, sizeof *s);
    if (!s || !gate_init(s)) {
        fprintf(stderr, "pypool_httpd: out of memory\n");
        free(s);
        return NULL;
    }
    s->app = *app;
    s->drain_ms = cfg->drain_ms;
    s->daemon = daemon_start(s, cfg);
    if (!s->daemon) {
        fprintf(stderr, "pypool_httpd: cannot listen on 127.0.0.1:%u\n", (unsigned)cfg->port);
        pthread_cond_destroy(&s->drained);
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    return s;
}

uint16_t server_port(const httpd_server *s)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : 0;
}

void server_stop(httpd_server *s)
{
    if (!s)
        return;
    MHD_socket listen_fd = MHD_quiesce_daemon(s->daemon);
    if (listen_fd != MHD_INVALID_SOCKET)
        close(listen_fd);
    gate_close_and_drain(s);
    MHD_stop_daemon(s->daemon);
    pthread_cond_destroy(&s->drained);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

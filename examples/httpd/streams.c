/*
 * streams.c - a Python generator's chunks as an HTTP response sent while they are produced.
 *
 * Design notes:
 * - The access handler (the connection's thread) opens the stream and waits for the first
 *   chunk, so that any failure before it is an ordinary error reply with its status code
 *   (400 BadInput, 404 NoSuchMethod, 500, 504 ...), exactly as for /call. With a chunk in hand
 *   the reply becomes a stream: server.c gives it to MHD as a callback response of unknown
 *   size, which MHD sends with chunked transfer encoding, one HTTP chunk per Python chunk
 *   (a chunk larger than MHD's write buffer is split).
 * - Threads: MHD calls stream_read from the connection's own thread (thread per connection),
 *   so a blocking pypool_stream_next holds up that connection only. It still waits at most
 *   STREAM_POLL_MS per call and returns 0 when nothing came: MHD then polls the socket (a
 *   client that reset the connection, or a daemon that is stopping, ends it) and calls again.
 *   A client that went away is seen at the latest when the next chunk cannot be written.
 * - The deadline (--timeout-ms, or X-Timeout-Ms) covers waiting for a worker plus the whole
 *   stream. stream_read keeps its own copy, taken before pypool_stream_open (so never later
 *   than the library's), to tell a short wait that found nothing from the end of the stream.
 * - After the first chunk the status line is gone: a failure (the handler raised, the worker
 *   died, the deadline passed) is logged and the response is cut short without its final
 *   empty chunk, so the client sees a truncated body, never a complete-looking one.
 * - MHD frees the response when the connection is done with it, whatever the reason;
 *   stream_free then closes the stream, which cancels an unfinished one (the worker closes
 *   the generator and serves the next request).
 */
#include "streams.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "errmap.h"

#define STREAM_POLL_MS 200 /* longest wait inside one stream_read */

struct httpd_stream {
    pypool_stream *s;
    pypool_result chunk; /* being sent: chunk.data[off .. len) is left */
    size_t off;
    int64_t deadline_ms; /* CLOCK_MONOTONIC */
    int final;           /* 0 while running, else STREAM_READ_END or STREAM_READ_ABORT */
    unsigned long chunks;
    int worker_pid;
    char method[]; /* for the log */
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void handle_stream(const httpd_app *app, const char *session_id, const char *method,
                   const char *body, size_t len, int64_t timeout_ms, reply *r)
{
    size_t mlen = strlen(method);
    httpd_stream *st = calloc(1, sizeof *st + mlen + 1);
    if (!st) {
        reply_from_pool_error(r, PYPOOL_ENOMEM, "out of memory", 0, app->debug);
        return;
    }
    memcpy(st->method, method, mlen + 1);
    st->deadline_ms = now_ms() + timeout_ms;
    int rc = pypool_stream_open(app->pool, session_id, method, body, len, timeout_ms, &st->s);
    if (rc != PYPOOL_OK) {
        reply_from_pool_error(r, rc, pypool_last_error(), 0, app->debug);
        free(st);
        return;
    }
    int64_t left = st->deadline_ms - now_ms();
    rc = pypool_stream_next(st->s, left > 0 ? left : 0, &st->chunk);
    if (rc != PYPOOL_OK && rc != PYPOOL_DONE) {
        reply_from_call(r, rc, &st->chunk, app->debug);
        pypool_result_free(&st->chunk);
        r->close_after = st; /* a cancel may wait for the worker: not before the reply is out */
        return;
    }
    st->worker_pid = st->chunk.worker_pid;
    if (rc == PYPOOL_DONE)
        st->final = STREAM_READ_END; /* no chunk at all: an empty body */
    else
        st->chunks = 1;
    reply_stream(r, 200, st, "application/octet-stream");
    r->worker_pid = st->worker_pid;
}

/* A failure after the first chunk: logged here, since the client only sees a cut response. */
static ssize_t stream_failed(httpd_stream *st, int rc)
{
    const pypool_result *c = &st->chunk;
    fprintf(stderr, "pypool_httpd: stream %s (worker %d) failed after %lu chunk(s): %s%s%s%s%s\n%s",
            st->method, st->worker_pid, st->chunks, pypool_strerror(rc), c->error_type ? ": " : "",
            c->error_type ? c->error_type : "", c->error_message ? ": " : "",
            c->error_message ? c->error_message : "", c->traceback ? c->traceback : "");
    pypool_result_free(&st->chunk);
    st->off = 0;
    st->final = STREAM_READ_ABORT;
    return STREAM_READ_ABORT;
}

ssize_t stream_read(httpd_stream *st, char *buf, size_t max)
{
    for (;;) {
        if (st->off < st->chunk.len) {
            size_t n = st->chunk.len - st->off;
            n = n < max ? n : max;
            memcpy(buf, st->chunk.data + st->off, n);
            st->off += n;
            return (ssize_t)n;
        }
        pypool_result_free(&st->chunk);
        st->off = 0;
        if (st->final)
            return st->final;
        int64_t left = st->deadline_ms - now_ms();
        if (left <= 0)
            return stream_failed(st, PYPOOL_ETIMEDOUT);
        int rc =
            pypool_stream_next(st->s, left < STREAM_POLL_MS ? left : STREAM_POLL_MS, &st->chunk);
        if (rc == PYPOOL_OK) {
            st->chunks++; /* an empty chunk has nothing to send: on to the next */
        } else if (rc == PYPOOL_DONE) {
            st->final = STREAM_READ_END;
        } else if (rc == PYPOOL_ETIMEDOUT && st->deadline_ms - now_ms() > 0) {
            pypool_result_free(&st->chunk);
            return 0; /* nothing yet: MHD checks the connection and calls again */
        } else {
            return stream_failed(st, rc);
        }
    }
}

void stream_free(httpd_stream *st)
{
    if (!st)
        return;
    pypool_stream_close(st->s);
    pypool_result_free(&st->chunk);
    free(st);
}

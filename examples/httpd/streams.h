/*
 * streams.h - POST /stream/<method> and /session/<id>/stream/<method>: the chunks a Python
 * generator handler yields, sent as they come (HTTP/1.1 chunked transfer encoding).
 */
#ifndef HTTPD_STREAMS_H
#define HTTPD_STREAMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "app.h"
#include "reply.h"

/*
 * Opens the stream (session_id NULL: none) and waits for its first chunk. A failure before it
 * becomes an ordinary error reply (mapped as for /call); otherwise r is a 200 whose body is
 * the stream (r->stream), which the server sends with stream_read.
 */
void handle_stream(const httpd_app *app, const char *session_id, const char *method,
                   const char *body, size_t len, int64_t timeout_ms, reply *r);

enum {
    STREAM_READ_END = -1,   /* the stream ended: finish the response */
    STREAM_READ_ABORT = -2, /* it failed after its first chunk: cut the response short */
};

/*
 * Copies the next bytes of the stream into buf (at most max): > 0 bytes, 0 when no chunk came
 * within a short wait (call again), or STREAM_READ_END / STREAM_READ_ABORT. A chunk longer
 * than max comes out over several calls.
 */
ssize_t stream_read(httpd_stream *st, char *buf, size_t max);

/* Closes the stream (cancelling it in its worker if unfinished) and frees it. NULL-safe. */
void stream_free(httpd_stream *st);

#endif

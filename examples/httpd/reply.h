/*
 * reply.h - an HTTP reply under construction, independent of libmicrohttpd.
 *
 * Handlers fill a reply (status, body, a few headers); server.c turns it into an MHD
 * response. Keeping MHD out of the handlers keeps them short and testable by reading.
 */
#ifndef HTTPD_REPLY_H
#define HTTPD_REPLY_H

#include <stdbool.h>
#include <stddef.h>

#include "json.h"

typedef struct httpd_stream httpd_stream; /* streams.h */

typedef struct reply {
    unsigned status;
    char *body; /* malloc'd, owned by the reply (NULL: empty body) */
    size_t len;
    const char *content_type;  /* static string */
    const char *allow;         /* "Allow" header for 405, static */
    const char *retry_after;   /* "Retry-After" header for 503, static */
    int worker_pid;            /* "X-Pypool-Worker" header when > 0 */
    bool close;                /* "Connection: close" */
    httpd_stream *stream;      /* non-NULL: the body is this stream (owned by the reply) */
    httpd_stream *close_after; /* an unfinished stream this error is about: closed (which may
                                  wait for its worker) only once the reply was sent */
} reply;

void reply_init(reply *r);
void reply_free(reply *r);

/* Each of these replaces the body (and any stream); on out-of-memory the reply becomes a bare
 * 500. */
void reply_bytes(reply *r, unsigned status, const void *data, size_t len, const char *ctype);
void reply_json(reply *r, unsigned status, jbuf *doc); /* takes doc's text */
/* {"error": error, "message": message} */
void reply_error(reply *r, unsigned status, const char *error, const char *message);
/* A body sent as it is produced (chunked); takes the stream. */
void reply_stream(reply *r, unsigned status, httpd_stream *st, const char *ctype);

#endif

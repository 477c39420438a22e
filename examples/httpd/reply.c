/*
 * reply.c - filling a reply: raw bytes, a JSON document, a JSON error object, or a stream.
 */
#include "reply.h"

#include <stdlib.h>
#include <string.h>

#include "streams.h"

void reply_init(reply *r)
{
    memset(r, 0, sizeof *r);
    r->status = 500;
    r->content_type = "text/plain";
}

void reply_free(reply *r)
{
    free(r->body);
    r->body = NULL;
    r->len = 0;
    stream_free(r->stream);
    r->stream = NULL;
    stream_free(r->close_after);
    r->close_after = NULL;
}

static void reply_oom(reply *r)
{
    reply_free(r);
    r->status = 500;
    r->content_type = "text/plain";
}

void reply_bytes(reply *r, unsigned status, const void *data, size_t len, const char *ctype)
{
    reply_free(r);
    r->status = status;
    r->content_type = ctype;
    if (len == 0)
        return;
    r->body = malloc(len);
    if (!r->body) {
        reply_oom(r);
        return;
    }
    memcpy(r->body, data, len);
    r->len = len;
}

void reply_json(reply *r, unsigned status, jbuf *doc)
{
    reply_free(r);
    jbuf_append(doc, "\n", 1);
    r->body = jbuf_take(doc, &r->len);
    if (!r->body) {
        reply_oom(r);
        return;
    }
    r->status = status;
    r->content_type = "application/json";
}

void reply_error(reply *r, unsigned status, const char *error, const char *message)
{
    jbuf doc;
    jbuf_init(&doc);
    json_begin_object(&doc);
    json_field_str(&doc, "error", error);
    json_field_str(&doc, "message", message);
    json_end_object(&doc);
    reply_json(r, status, &doc);
}

void reply_stream(reply *r, unsigned status, httpd_stream *st, const char *ctype)
{
    reply_free(r);
    r->status = status;
    r->content_type = ctype;
    r->stream = st;
}

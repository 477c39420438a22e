/*
 * reply.c - filling a reply: raw bytes, a JSON document, or a JSON error object.
 */
#include "reply.h"

#include <stdlib.h>
#include <string.h>

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

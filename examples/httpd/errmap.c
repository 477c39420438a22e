/*
 * errmap.c - pypool error codes to HTTP status codes and JSON error bodies.
 *
 * EREMOTE (the handler raised): a handler says "your request is wrong" by raising BadInput (see
 * handlers.py), which answers 400 with its message, or NotFound (404); any other exception is the
 * server's fault, 500 with the exception's type only. Tracebacks and messages that may name files
 * of the server (absolute paths, worker output) reach clients only with --debug. Infrastructure
 * failures are "bad gateway" (502), load shedding and shutdown are "unavailable" (503), a missed
 * deadline is 504.
 */
#include "errmap.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

typedef struct errmap_entry {
    int rc;
    unsigned status;
    const char *name;
} errmap_entry;

static const errmap_entry ERRMAP[] = {
    {PYPOOL_EINVAL, 400, "PYPOOL_EINVAL"},       {PYPOOL_ENOMEM, 500, "PYPOOL_ENOMEM"},
    {PYPOOL_ETIMEDOUT, 504, "PYPOOL_ETIMEDOUT"}, {PYPOOL_EBUSY, 503, "PYPOOL_EBUSY"},
    {PYPOOL_ESHUTDOWN, 503, "PYPOOL_ESHUTDOWN"}, {PYPOOL_ESPAWN, 502, "PYPOOL_ESPAWN"},
    {PYPOOL_EWORKER, 502, "PYPOOL_EWORKER"},     {PYPOOL_EPROTO, 502, "PYPOOL_EPROTO"},
    {PYPOOL_EREMOTE, 500, "PYPOOL_EREMOTE"},     {PYPOOL_ESESSION, 409, "PYPOOL_ESESSION"},
    {PYPOOL_ESYS, 500, "PYPOOL_ESYS"},
};

static const errmap_entry *errmap_find(int rc)
{
    static const errmap_entry unknown = {0, 500, "PYPOOL_UNKNOWN"};
    for (size_t i = 0; i < sizeof ERRMAP / sizeof ERRMAP[0]; i++) {
        if (ERRMAP[i].rc == rc)
            return &ERRMAP[i];
    }
    return &unknown;
}

/* Exceptions that mean "the client asked wrongly": handlers.py's BadInput and NotFound, and
 * the runtime's NoSuchMethod for a method nobody registered. */
static unsigned client_error_status(const char *type)
{
    if (strcmp(type, "BadInput") == 0)
        return 400;
    if (strcmp(type, "NotFound") == 0 || strcmp(type, "NoSuchMethod") == 0)
        return 404;
    return 0;
}

void reply_from_pool_error(reply *r, int rc, const char *detail, int worker_pid, bool debug)
{
    if (!debug && rc != PYPOOL_EINVAL)
        detail = NULL; /* pypool_strerror's fixed text only */
    const errmap_entry *e = errmap_find(rc);
    jbuf doc;
    jbuf_init(&doc);
    json_begin_object(&doc);
    json_field_str(&doc, "error", pypool_strerror(rc));
    json_field_str(&doc, "code", e->name);
    json_field_str(&doc, "message", detail && *detail ? detail : pypool_strerror(rc));
    if (worker_pid > 0)
        json_field_i64(&doc, "worker_pid", worker_pid);
    json_end_object(&doc);
    reply_json(r, e->status, &doc);
    r->worker_pid = worker_pid;
    if (rc == PYPOOL_EBUSY)
        r->retry_after = "1";
    if (rc == PYPOOL_ESHUTDOWN)
        r->close = true;
}

static void reply_remote_error(reply *r, const pypool_result *res, bool debug)
{
    const char *type = res->error_type ? res->error_type : "Exception";
    unsigned client_status = client_error_status(type);
    bool client = client_status != 0;
    jbuf doc;
    jbuf_init(&doc);
    json_begin_object(&doc);
    json_field_str(&doc, "type", type);
    if (client || debug)
        json_field_str(&doc, "message", res->error_message ? res->error_message : "");
    else
        json_field_str(&doc, "message", "the handler failed (details in the server's log)");
    if (!client && !debug) /* kept where the operator looks, not sent */
        fprintf(stderr, "pypool_httpd: handler of worker %d raised %s: %s\n%s", res->worker_pid,
                type, res->error_message ? res->error_message : "",
                res->traceback ? res->traceback : "");
    if (debug)
        json_field_str(&doc, "traceback", res->traceback ? res->traceback : "");
    json_field_i64(&doc, "worker_pid", res->worker_pid);
    json_end_object(&doc);
    reply_json(r, client ? client_status : 500, &doc);
    r->worker_pid = res->worker_pid;
}

void reply_from_call(reply *r, int rc, const pypool_result *res, bool debug)
{
    if (rc == PYPOOL_OK) {
        reply_bytes(r, 200, res->data, res->len, "application/octet-stream");
        r->worker_pid = res->worker_pid;
    } else if (rc == PYPOOL_EREMOTE) {
        reply_remote_error(r, res, debug);
    } else {
        reply_from_pool_error(r, rc, res->error_message, res->worker_pid, debug);
    }
}

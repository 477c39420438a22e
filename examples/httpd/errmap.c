/*
 * errmap.c - pypool error codes to HTTP status codes and JSON error bodies.
 *
 * EREMOTE (the handler raised) is the caller's problem with the Python side: 500 with the
 * exception's type, message and traceback. Infrastructure failures are "bad gateway" (502),
 * load shedding and shutdown are "unavailable" (503), a missed deadline is 504.
 */
#include "errmap.h"

#include <stddef.h>

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

void reply_from_pool_error(reply *r, int rc, const char *detail, int worker_pid)
{
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

static void reply_remote_error(reply *r, const pypool_result *res)
{
    jbuf doc;
    jbuf_init(&doc);
    json_begin_object(&doc);
    json_field_str(&doc, "type", res->error_type ? res->error_type : "Exception");
    json_field_str(&doc, "message", res->error_message ? res->error_message : "");
    json_field_str(&doc, "traceback", res->traceback ? res->traceback : "");
    json_field_i64(&doc, "worker_pid", res->worker_pid);
    json_end_object(&doc);
    reply_json(r, 500, &doc);
    r->worker_pid = res->worker_pid;
}

void reply_from_call(reply *r, int rc, const pypool_result *res)
{
    if (rc == PYPOOL_OK) {
        reply_bytes(r, 200, res->data, res->len, "application/octet-stream");
        r->worker_pid = res->worker_pid;
    } else if (rc == PYPOOL_EREMOTE) {
        reply_remote_error(r, res);
    } else {
        reply_from_pool_error(r, rc, res->error_message, res->worker_pid);
    }
}

/*
 * calls.c - the endpoints that call Python through the pool.
 *
 * Each runs in the request's own libmicrohttpd thread and blocks in pypool for at most the
 * configured timeout: the pool, not the HTTP layer, decides who waits for a worker.
 */
#include "calls.h"

#include "errmap.h"

void handle_call(const httpd_app *app, const char *method, const char *body, size_t len,
                 int64_t timeout_ms, reply *r)
{
    pypool_result res;
    int rc = pypool_call(app->pool, method, body, len, timeout_ms, &res);
    reply_from_call(r, rc, &res, app->debug);
    pypool_result_free(&res);
}

void handle_session_call(const httpd_app *app, const char *session_id, const char *method,
                         const char *body, size_t len, int64_t timeout_ms, reply *r)
{
    pypool_result res;
    int rc = pypool_session_call(app->pool, session_id, method, body, len, timeout_ms, &res);
    reply_from_call(r, rc, &res, app->debug);
    pypool_result_free(&res);
}

void handle_session_close(const httpd_app *app, const char *session_id, reply *r)
{
    int rc = pypool_session_close(app->pool, session_id);
    if (rc != PYPOOL_OK) {
        reply_from_pool_error(r, rc, pypool_last_error(), 0, app->debug);
        return;
    }
    jbuf doc;
    jbuf_init(&doc);
    json_begin_object(&doc);
    json_field_str(&doc, "session", session_id);
    json_field_bool(&doc, "closed", true);
    json_end_object(&doc);
    reply_json(r, 200, &doc);
}

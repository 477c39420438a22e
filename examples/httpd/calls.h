/*
 * calls.h - the endpoints that call Python: /call/<method> and /session/<id>/...
 */
#ifndef HTTPD_CALLS_H
#define HTTPD_CALLS_H

#include <stddef.h>
#include <stdint.h>

#include "app.h"
#include "reply.h"

void handle_call(const httpd_app *app, const char *method, const char *body, size_t len,
                 int64_t timeout_ms, reply *r);
void handle_session_call(const httpd_app *app, const char *session_id, const char *method,
                         const char *body, size_t len, int64_t timeout_ms, reply *r);
void handle_session_close(const httpd_app *app, const char *session_id, reply *r);

#endif

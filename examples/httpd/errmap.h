/*
 * errmap.h - turning the outcome of a pypool call into an HTTP reply.
 */
#ifndef HTTPD_ERRMAP_H
#define HTTPD_ERRMAP_H

#include "pypool.h"
#include "reply.h"

/* rc and res from pypool_call / pypool_session_call: 200 with the result's bytes, or the
 * error's status code with a JSON body (see README.md, "Errors"). */
void reply_from_call(reply *r, int rc, const pypool_result *res, bool debug);

/* A pypool error code other than EREMOTE as an HTTP reply with a JSON body; without debug the
 * detail (which may name paths or hold a worker's output) stays in the server's log. */
void reply_from_pool_error(reply *r, int rc, const char *detail, int worker_pid, bool debug);

#endif

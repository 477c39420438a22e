/*
 * app.h - what the request handlers share: the pool and the server's limits.
 *
 * Filled once by main before the HTTP daemon starts and read-only afterwards, so request
 * threads read it without a lock. The pool and store pointers are valid while the server admits
 * requests (server.c holds requests off them before main destroys them).
 */
#ifndef HTTPD_APP_H
#define HTTPD_APP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv.h"
#include "pypool.h"

typedef struct httpd_app {
    pypool *pool;
    kv_store *kv;            /* the store behind /kv and the handlers' ctx.host("kv_...") */
    int64_t call_timeout_ms; /* per request, waiting + running; X-Timeout-Ms may lower it */
    size_t max_body_bytes;   /* larger request bodies get 413 */
    bool debug;              /* errors carry tracebacks and details (never in production) */
} httpd_app;

#endif

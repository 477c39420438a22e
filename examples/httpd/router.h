/*
 * router.h - maps a request line (method, path) to an endpoint.
 */
#ifndef HTTPD_ROUTER_H
#define HTTPD_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "app.h"
#include "reply.h"

typedef struct httpd_request {
    const char *http_method;
    const char *path;
    const char *body; /* never NULL */
    size_t len;
    int64_t timeout_ms; /* for the pool call: --timeout-ms, or less if the client asked */
} httpd_request;

/* Runs the endpoint for the request's method and path, or fills a 400/404/405. */
void route_request(const httpd_app *app, const httpd_request *rq, reply *r);

#endif

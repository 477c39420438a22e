/*
 * kvroute.h - GET, PUT and DELETE /kv/<key>: the server's key/value store over HTTP, served in
 * C without a worker (the same store handlers reach with ctx.host("kv_get"/"kv_set")).
 */
#ifndef HTTPD_KVROUTE_H
#define HTTPD_KVROUTE_H

#include <stddef.h>

#include "app.h"
#include "reply.h"

/* http_method is GET, HEAD, PUT or DELETE (the router checked it), key a valid name. */
void handle_kv(const httpd_app *app, const char *http_method, const char *key, const char *body,
               size_t len, reply *r);

#endif

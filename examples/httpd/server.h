/*
 * server.h - the libmicrohttpd daemon: one thread per connection, bound to 127.0.0.1.
 */
#ifndef HTTPD_SERVER_H
#define HTTPD_SERVER_H

#include <stdint.h>

#include "app.h"

typedef struct httpd_server httpd_server;

typedef struct httpd_server_config {
    uint16_t port;            /* 0: any free port (see server_port) */
    unsigned max_connections; /* concurrent connections (each has its own thread) */
    int64_t drain_ms;         /* how long server_stop waits for requests in flight */
} httpd_server_config;

/* Starts serving app (copied) on 127.0.0.1:port. NULL on failure (reason on stderr). */
httpd_server *server_start(const httpd_server_config *cfg, const httpd_app *app);

/* The port actually bound. */
uint16_t server_port(const httpd_server *s);

/*
 * Graceful stop: closes the listening socket, answers new requests on open connections with
 * 503, waits up to drain_ms for requests in flight to be answered, then stops the daemon
 * (joining every connection thread) and frees the server. After it returns no thread of the
 * server uses the pool any more, so the caller may destroy it.
 */
void server_stop(httpd_server *s);

#endif

/*
 * options.h - the command line of pypool_httpd.
 */
#ifndef HTTPD_OPTIONS_H
#define HTTPD_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct httpd_options {
    unsigned port;            /* --port (default 8080; 0: any free port) */
    unsigned workers;         /* --workers (default 4) */
    const char *module;       /* --module (default "handlers") */
    const char *python_path;  /* --python-path (default: this example's source directory) */
    const char *python;       /* --python (default: the library's choice) */
    int64_t timeout_ms;       /* --timeout-ms per request (default 30000) */
    unsigned max_waiters;     /* --max-waiters (default 0: unbounded) */
    size_t max_body_bytes;    /* --max-body-bytes (default 1 MiB) */
    unsigned max_connections; /* --max-connections (default 256) */
    unsigned kv_max_keys;     /* --kv-max-keys: keys the key/value store holds (default 10000) */
    bool debug;               /* --debug: tracebacks and detailed errors go to clients */
} httpd_options;

/* 0: run; 1: --help was printed, exit 0; -1: bad usage was reported, exit 2. */
int options_parse(int argc, char **argv, httpd_options *out);

#endif

/*
 * options.c - parsing and validating pypool_httpd's command line (getopt_long).
 */
#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef HTTPD_DEFAULT_PYTHON_PATH
#define HTTPD_DEFAULT_PYTHON_PATH "."
#endif

static const char USAGE[] =
    "usage: pypool_httpd [options]\n"
    "Serves Python handlers over HTTP on 127.0.0.1 through a pool of worker processes.\n"
    "\n"
    "  --port N             TCP port on 127.0.0.1 (default 8080; 0 = any free port)\n"
    "  --workers N          Python worker processes (default 4)\n"
    "  --module NAME        module that registers the handlers (default handlers)\n"
    "  --python-path DIRS   prepended to the workers' PYTHONPATH\n"
    "                       (default " HTTPD_DEFAULT_PYTHON_PATH ")\n"
    "  --python PATH        interpreter for the workers (default: the library's)\n"
    "  --timeout-ms N       deadline per request, waiting + running (default 30000);\n"
    "                       a request header X-Timeout-Ms may ask for less\n"
    "  --max-waiters N      requests allowed to queue for a worker; more get 503\n"
    "                       (default 0 = unbounded)\n"
    "  --max-body-bytes N   largest request body, at most 60 MiB; larger gets 413\n"
    "                       (default 1048576)\n"
    "  --max-connections N  concurrent connections, one thread each (default 256)\n"
    "  --kv-max-keys N      keys the server's key/value store holds (default 10000)\n"
    "  --debug              send Python tracebacks and detailed errors to clients\n"
    "  --help               this text\n";

enum {
    OPT_PORT = 256,
    OPT_WORKERS,
    OPT_MODULE,
    OPT_PYTHON_PATH,
    OPT_PYTHON,
    OPT_TIMEOUT_MS,
    OPT_MAX_WAITERS,
    OPT_MAX_BODY,
    OPT_MAX_CONNECTIONS,
    OPT_KV_MAX_KEYS,
    OPT_DEBUG,
    OPT_HELP,
};

static const struct option LONG_OPTIONS[] = {
    {"port", required_argument, NULL, OPT_PORT},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"module", required_argument, NULL, OPT_MODULE},
    {"python-path", required_argument, NULL, OPT_PYTHON_PATH},
    {"python", required_argument, NULL, OPT_PYTHON},
    {"timeout-ms", required_argument, NULL, OPT_TIMEOUT_MS},
    {"max-waiters", required_argument, NULL, OPT_MAX_WAITERS},
    {"max-body-bytes", required_argument, NULL, OPT_MAX_BODY},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"kv-max-keys", required_argument, NULL, OPT_KV_MAX_KEYS},
    {"debug", no_argument, NULL, OPT_DEBUG},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static void options_defaults(httpd_options *o)
{
    *o = (httpd_options){0}; /* every field set: UBSan caught a garbage `debug` from the stack */
    o->port = 8080;
    o->workers = 4;
    o->module = "handlers";
    o->python_path = HTTPD_DEFAULT_PYTHON_PATH;
    o->python = NULL;
    o->timeout_ms = 30000;
    o->max_waiters = 0;
    o->max_body_bytes = 1u << 20;
    o->max_connections = 256;
    o->kv_max_keys = 10000;
}

/* Parses a decimal integer in [min, max]; complains and returns false otherwise. */
static bool parse_number(const char *name, const char *text, unsigned long long min,
                         unsigned long long max, unsigned long long *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-' || v < min || v > max) {
        fprintf(stderr, "pypool_httpd: --%s wants a number in [%llu, %llu], got '%s'\n", name, min,
                max, text);
        return false;
    }
    *out = v;
    return true;
}

/* Applies one numeric option; false on a bad value. */
static bool apply_number(int opt, const char *arg, httpd_options *o)
{
    unsigned long long v = 0;
    switch (opt) {
    case OPT_PORT:
        if (!parse_number("port", arg, 0, 65535, &v))
            return false;
        o->port = (unsigned)v;
        return true;
    case OPT_WORKERS:
        if (!parse_number("workers", arg, 1, 1024, &v))
            return false;
        o->workers = (unsigned)v;
        return true;
    case OPT_TIMEOUT_MS:
        if (!parse_number("timeout-ms", arg, 1, 86400000, &v))
            return false;
        o->timeout_ms = (int64_t)v;
        return true;
    case OPT_MAX_WAITERS:
        if (!parse_number("max-waiters", arg, 0, 1000000, &v))
            return false;
        o->max_waiters = (unsigned)v;
        return true;
    case OPT_MAX_BODY:
        if (!parse_number("max-body-bytes", arg, 1, 60u << 20, &v))
            return false;
        o->max_body_bytes = (size_t)v;
        return true;
    case OPT_MAX_CONNECTIONS:
        if (!parse_number("max-connections", arg, 1, 100000, &v))
            return false;
        o->max_connections = (unsigned)v;
        return true;
    case OPT_KV_MAX_KEYS:
        if (!parse_number("kv-max-keys", arg, 1, 1000000, &v))
            return false;
        o->kv_max_keys = (unsigned)v;
        return true;
    default:
        return false;
    }
}

static bool apply_option(int opt, const char *arg, httpd_options *o)
{
    switch (opt) {
    case OPT_MODULE:
        o->module = arg;
        return true;
    case OPT_DEBUG:
        o->debug = true;
        return true;
    case OPT_PYTHON_PATH:
        o->python_path = arg;
        return true;
    case OPT_PYTHON:
        o->python = arg;
        return true;
    default:
        return apply_number(opt, arg, o);
    }
}

int options_parse(int argc, char **argv, httpd_options *out)
{
    options_defaults(out);
    int opt;
    for (;;) {
        opt = getopt_long(argc, argv, "", LONG_OPTIONS, NULL);
        if (opt == -1)
            break;
        if (opt == OPT_HELP) {
            fputs(USAGE, stdout);
            return 1;
        }
        if (opt == '?' || !apply_option(opt, optarg, out)) {
            fputs(USAGE, stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "pypool_httpd: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

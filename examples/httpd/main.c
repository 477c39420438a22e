/*
 * main.c - pypool_httpd: start the pool and the HTTP server, wait for SIGINT/SIGTERM, stop.
 *
 * Signals: SIGINT and SIGTERM are blocked before any thread exists (the pool's reaper, MHD's
 * threads), so every thread inherits the mask and the signal stays pending until main takes
 * it with sigwait(). No signal handler runs, so nothing async-signal-unsafe can happen in
 * one. Worker processes do not inherit the mask: pypool spawns them with an empty one.
 *
 * Shutdown order: stop taking requests and let those in flight finish (server_stop), then
 * destroy the pool, which stops and reaps every worker, then the key/value store its host
 * function used; exit 0.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "app.h"
#include "hostfn.h"
#include "kv.h"
#include "options.h"
#include "pypool.h"
#include "server.h"

static int block_shutdown_signals(sigset_t *set)
{
    sigemptyset(set);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGTERM);
    return pthread_sigmask(SIG_BLOCK, set, NULL);
}

static int wait_shutdown_signal(const sigset_t *set)
{
    int sig = 0;
    while (sigwait(set, &sig) != 0)
        ;
    return sig;
}

static pypool *pool_start(const httpd_options *o, kv_store *kv)
{
    pypool_config cfg;
    pypool_config_init(&cfg);
    cfg.size = o->workers;
    cfg.module = o->module;
    cfg.python_path = o->python_path;
    cfg.python = o->python;
    cfg.call_timeout_ms = o->timeout_ms;
    /* Every call and stream ends by its deadline: holding a worker that long is no leak. */
    if (cfg.leak_warn_ms > 0 && cfg.leak_warn_ms <= o->timeout_ms)
        cfg.leak_warn_ms = o->timeout_ms + 1000;
    cfg.max_waiters = o->max_waiters;
    cfg.host_fn = host_call; /* handlers' ctx.host("kv_get"/"kv_set") */
    cfg.host_ud = kv;
    pypool *pool = NULL;
    int rc = pypool_create(&cfg, &pool);
    if (rc != PYPOOL_OK) {
        fprintf(stderr, "pypool_httpd: cannot start the workers: %s\n%s\n", pypool_strerror(rc),
                pypool_last_error());
        return NULL;
    }
    return pool;
}

static httpd_server *http_start(const httpd_options *o, pypool *pool, kv_store *kv)
{
    httpd_app app = {
        .pool = pool,
        .kv = kv,
        .call_timeout_ms = o->timeout_ms,
        .max_body_bytes = o->max_body_bytes,
        .debug = o->debug,
    };
    httpd_server_config scfg = {
        .port = (uint16_t)o->port,
        .max_connections = o->max_connections,
        .drain_ms = o->timeout_ms + 1000,
    };
    return server_start(&scfg, &app);
}

int main(int argc, char **argv)
{
    httpd_options opts;
    int prc = options_parse(argc, argv, &opts);
    if (prc != 0)
        return prc > 0 ? 0 : 2;
    sigset_t signals;
    if (block_shutdown_signals(&signals) != 0) {
        perror("pypool_httpd: pthread_sigmask");
        return 1;
    }
    kv_store *kv = kv_create(opts.kv_max_keys);
    if (!kv) {
        fprintf(stderr, "pypool_httpd: out of memory\n");
        return 1;
    }
    pypool *pool = pool_start(&opts, kv);
    if (!pool) {
        kv_destroy(kv);
        return 1;
    }
    httpd_server *server = http_start(&opts, pool, kv);
    if (!server) {
        pypool_destroy(pool);
        kv_destroy(kv);
        return 1;
    }
    printf("pypool_httpd: listening on http://127.0.0.1:%u/ (%u workers, module %s)\n",
           (unsigned)server_port(server), opts.workers, opts.module);
    fflush(stdout);
    int sig = wait_shutdown_signal(&signals);
    fprintf(stderr, "pypool_httpd: %s, shutting down\n", strsignal(sig));
    server_stop(server);
    pypool_destroy(pool);
    kv_destroy(kv); /* after the pool: no handler can call into it any more */
    fprintf(stderr, "pypool_httpd: stopped\n");
    return 0;
}

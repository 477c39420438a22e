/*
 * poolside.c - pypool as the bench uses it: a pool of bench_mod.py (or slow_import_mod.py)
 * workers found through cfg.python_path, the same interpreter as every baseline, and a log
 * callback that keeps worker chatter off the tables (errors still reach stderr).
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

static void pool_log(void *ud, int level, int worker_pid, const char *line)
{
    (void)ud;
    if (level <= PYPOOL_LOG_ERROR)
        bench_warn("pypool[%d]: %s", worker_pid, line);
}

int pool_open(const bench_opts *o, const char *module, unsigned size, pypool **out)
{
    return pool_open_inflight(o, module, size, 1, out);
}

int pool_open_inflight(const bench_opts *o, const char *module, unsigned size,
                       unsigned max_inflight, pypool **out)
{
    *out = NULL;
    if (o->pool_broken)
        return PYPOOL_ESPAWN;
    pypool_config cfg;
    pypool_config_init(&cfg);
    cfg.size = size;
    cfg.python = o->python;
    cfg.module = module;
    cfg.python_path = BENCH_PY_DIR;
    cfg.startup_timeout_ms = 60000; /* a loaded 2-core VM can be slow; never a bench failure */
    cfg.checkout_timeout_ms = 60000;
    cfg.call_timeout_ms = 60000;
    cfg.log_fn = pool_log;
    cfg.max_inflight = max_inflight;
    int rc = pypool_create(&cfg, out);
    if (rc != PYPOOL_OK)
        bench_warn("pypool_create(%s, size %u, max_inflight %u): %s: %s", module, size,
                   max_inflight, pypool_strerror(rc), pypool_last_error());
    return rc;
}

int pool_echo(pypool *p, const char *method, const void *payload, size_t len, int *pid)
{
    pypool_result res;
    int rc = pypool_call(p, method, payload, len, -1, &res);
    if (rc == PYPOOL_OK && res.len != len)
        rc = PYPOOL_EPROTO;
    if (pid)
        *pid = res.worker_pid;
    pypool_result_free(&res);
    return rc;
}

bool pool_library_works(const bench_opts *o, char *why, size_t why_len)
{
    pypool *p = NULL;
    int rc = pool_open(o, "bench_mod", 1, &p);
    if (rc == PYPOOL_OK)
        rc = pool_echo(p, "echo", "ping", 4, NULL);
    if (rc != PYPOOL_OK)
        snprintf(why, why_len, "%s: %s", pypool_strerror(rc), pypool_last_error());
    pypool_destroy(p);
    return rc == PYPOOL_OK;
}

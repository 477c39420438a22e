/*
 * contenders.c - one call of any contender behind a single load_call_fn, so that every scenario
 * drives pypool, the floor and the embedded interpreter through the very same client loop
 * (load.c). Also the shared helpers scenarios use to alternate contenders and keep medians.
 */
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "contenders.h"

int contender_call(void *ctxp, load_thread *t)
{
    contender_ctx *c = ctxp;
    switch (c->impl) {
    case IMPL_POOL:
        return pool_echo(c->pool, c->method, c->payload, c->len, NULL);
    case IMPL_FLOOR:
        return floor_call(&c->floors[t->tid % c->nfloors], c->method, c->payload, c->len);
    case IMPL_EMBED:
        return emb_call(c->method, c->payload, c->len);
    default:
        return -1;
    }
}

int contender_run(contender_ctx *c, const bench_opts *o, unsigned threads, bool keep_lat,
                  load_result *out)
{
    memset(out, 0, sizeof *out);
    if (c->impl == IMPL_POOL && !c->pool)
        return -1;
    if (c->impl == IMPL_FLOOR && c->nfloors < threads)
        return -1; /* the floor gives every thread its own child */
    if (c->impl == IMPL_EMBED && !emb_available())
        return -1;
    int rc = load_run(threads, o->warmup, o->seconds, keep_lat, contender_call, c, out);
    if (rc == 0 && out->errors) {
        bench_warn("%s: %llu failed calls of %s", bench_impl_name(c->impl),
                   (unsigned long long)out->errors, c->method);
    }
    return rc;
}

uint8_t *payload_new(size_t len)
{
    uint8_t *p = malloc(len ? len : 1);
    if (!p)
        abort();
    memset(p, 'x', len);
    return p;
}

/* Starts n floor children in parallel and waits until each answered one echo (imports done),
 * so that no measuring window ever includes a floor child's start-up. */
int floors_start(const bench_opts *o, floor_child *f, unsigned n)
{
    unsigned started = 0;
    while (started < n && floor_start(o, &f[started]) == 0)
        started++;
    bool ok = started == n;
    for (unsigned i = 0; ok && i < n; i++)
        ok = floor_call(&f[i], "echo", "w", 1) == 0;
    if (!ok) {
        bench_warn("cannot start the floor worker (%s)", BENCH_PY_DIR "/floor_worker.py");
        floors_stop(f, started);
        return -1;
    }
    return 0;
}

void floors_stop(floor_child *f, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        floor_stop(&f[i]);
}

bool impl_first(unsigned round, unsigned point)
{
    return (round + point) % 2 == 0;
}

/*
 * lifecycle.c - creating, warming and destroying a pool, and its reference count.
 *
 * Design notes: destroy sets shutting_down under the mutex (new calls get PYPOOL_ESHUTDOWN,
 * waiters are woken with it), then lets the reaper run the shutdown protocol (drain until
 * shutdown_grace_ms, Shutdown, SIGTERM, SIGKILL, reap) and joins it. Memory goes with the
 * last reference (pool.h, "Lifetime"); fds and children are gone when destroy returns, except
 * the channel of a worker still checked out, which its pypool_checkin closes.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "clock.h"
#include "checkout.h"
#include "error.h"
#include "lanes.h"
#include "latency.h"
#include "config.h"
#include "lifecycle.h"
#include "log.h"
#include "reaper.h"
#include "session.h"
#include "slots.h"
#include "state.h"
#include "sync.h"

#define CREATE_WAIT_MARGIN_MS 2000

int pypool__enter(pypool *p)
{
    unsigned refs = atomic_load(&p->refs);
    do {
        if (refs & PYPOOL__REFS_CLOSED)
            return pypool__set_error(PYPOOL_ESHUTDOWN, "the pool is shutting down");
    } while (!atomic_compare_exchange_weak(&p->refs, &refs, refs + 1));
    return 0;
}

void pypool__hold(pypool *p)
{
    /* The caller's pointer is valid, so the count is not zero: destroy has not freed it, and
     * cannot until this reference is left. */
    atomic_fetch_add(&p->refs, 1);
}

static void pool_free(pypool *p)
{
    for (unsigned i = 0; p->slots && i < p->cfg.size; i++) {
        pypool__reader_free(&p->slots[i].reader);
        pypool__wbuf_free(&p->slots[i].wbuf);
        pypool__child_close_fds(&p->slots[i].child);
    }
    if (p->slots)
        pypool__lanes_free(p);
    pypool__sessions_free(p);
    pypool__config_free(p);
    pypool__close_fd(&p->wake_fd);
    free(p->slots);
    free(p->idle);
    free(p->dying);
    free(p->due);
    free(p->event_pid);
    free(p->event_reason);
    free(p->ping);
    free(p->leak);
    free(p->cancel_due);
    free(p->last_spawn_error);
    pypool__latency_free(p);
    pypool__cond_destroy(&p->state_cv);
    pypool__mutex_destroy(&p->mu);
    free(p);
}

void pypool__leave(pypool *p)
{
    /* Only destroy closes, and it does so before dropping the owner's reference, so the count
     * can reach zero only once, with the closed bit set. */
    if (atomic_fetch_sub(&p->refs, 1) == (PYPOOL__REFS_CLOSED | 1u))
        pool_free(p);
}

static int pool_alloc(const pypool_config *cfg, pypool **out)
{
    pypool *p = calloc(1, sizeof *p);
    if (!p)
        return pypool__set_error(PYPOOL_ENOMEM, "out of memory");
    pypool__mutex_init(&p->mu);
    pypool__cond_init(&p->state_cv);
    atomic_init(&p->refs, 1);
    p->wake_fd = -1;
    p->reaper_wake_at_ns = PYPOOL__NO_DEADLINE;
    *out = p;
    int rc = pypool__config_copy(p, cfg);
    if (rc)
        return rc;
    p->rng = (uint64_t)pypool__now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)p;
    p->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    p->slots = calloc(p->cfg.size, sizeof *p->slots);
    p->idle = calloc(p->cfg.size, sizeof *p->idle);
    p->due = calloc(p->cfg.size, sizeof *p->due);
    p->event_pid = calloc(p->cfg.size, sizeof *p->event_pid);
    p->event_reason = calloc(p->cfg.size, sizeof *p->event_reason);
    p->ping = calloc(p->cfg.size, sizeof *p->ping);
    p->leak = calloc(p->cfg.size, sizeof *p->leak);
    p->cancel_due = calloc(p->cfg.size, sizeof *p->cancel_due);
    bool lists = p->due && p->event_pid && p->event_reason && p->ping && p->leak && p->cancel_due;
    if (p->wake_fd < 0 || !p->slots || !p->idle || !lists || pypool__latency_init(p) != 0)
        return pypool__set_error(PYPOOL_ENOMEM, "cannot allocate the pool");
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pypool__slot *s = &p->slots[i];
        s->index = i;
        s->state = PYPOOL_SLOT_EMPTY;
        pypool__child_clear(&s->child);
        pypool__reader_init(&s->reader, -1, p->cfg.max_frame_bytes);
        pypool__logbuf_init(&s->log);
        s->backoff_ms = p->cfg.restart_backoff_min_ms;
    }
    if (!pypool__lanes_init(p))
        return pypool__set_error(PYPOOL_ENOMEM, "cannot allocate the lanes of %u workers",
                                 p->cfg.size);
    return 0;
}

/*
 * Eager start. The reaper's own Hello deadline (startup_timeout_ms from each spawn) must decide
 * a slow start, so that the error says which worker failed and why: wait a little longer.
 */
static int warm_at_create(pypool *p)
{
    int rc = pypool_warm(p, p->cfg.startup_timeout_ms + CREATE_WAIT_MARGIN_MS);
    if (rc == PYPOOL_ETIMEDOUT)
        rc = pypool__set_error(PYPOOL_ESPAWN, "workers were not ready within %lld ms",
                               (long long)p->cfg.startup_timeout_ms);
    return rc;
}

int pypool_create(const pypool_config *cfg, pypool **out)
{
    pypool__clear_error();
    if (!cfg || !out)
        return pypool__set_error(PYPOOL_EINVAL, "cfg and out are required");
    *out = NULL;
    int cancel = pypool__nocancel_begin();
    pypool *p = NULL;
    int rc = pool_alloc(cfg, &p);
    if (rc == 0)
        rc = pypool__reaper_start(p);
    if (rc == 0 && !cfg->lazy)
        rc = warm_at_create(p);
    if (rc != 0 && p) {
        char detail[4096];
        strncpy(detail, pypool_last_error(), sizeof detail - 1);
        detail[sizeof detail - 1] = '\0';
        if (p->reaper_started) {
            p->cfg.shutdown_grace_ms = 0; /* nothing ran yet: no calls to drain */
            pypool_destroy(p);
        } else {
            pool_free(p);
        }
        pypool__set_error(rc, "%s", detail);
        p = NULL;
    }
    *out = p;
    pypool__nocancel_end(cancel);
    return rc;
}

static bool all_ready_locked(const pypool *p)
{
    for (unsigned i = 0; i < p->cfg.size; i++) {
        int st = p->slots[i].state;
        if (st != PYPOOL_SLOT_IDLE && st != PYPOOL_SLOT_BUSY && st != PYPOOL_SLOT_PINGING)
            return false;
    }
    return true;
}

/* Marks every slot without a worker (FAILED ones included) for start. */
static void request_all_starts_locked(pypool *p)
{
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pypool__slot *s = &p->slots[i];
        if (s->state == PYPOOL_SLOT_FAILED) {
            pypool__transition(s, PYPOOL__EV_WARM);
            s->start_failures = 0;
            s->backoff_ms = p->cfg.restart_backoff_min_ms;
        }
        if (s->state == PYPOOL_SLOT_EMPTY)
            s->want_start = true;
    }
}

static int wait_ready_locked(pypool *p, int64_t deadline, uint64_t fail_seq)
{
    for (;;) {
        if (p->shutting_down)
            return pypool__set_error(PYPOOL_ESHUTDOWN, "the pool is shutting down");
        if (p->start_fail_seq != fail_seq)
            return pypool__set_error(PYPOOL_ESPAWN, "%s",
                                     p->last_spawn_error ? p->last_spawn_error : "start failed");
        if (all_ready_locked(p))
            return 0;
        if (!pypool__cond_wait_until(&p->state_cv, &p->mu, deadline))
            return pypool__set_error(PYPOOL_ETIMEDOUT, "not every worker was ready in time");
    }
}

int pypool_warm(pypool *p, int64_t timeout_ms)
{
    pypool__clear_error();
    if (!p)
        return pypool__set_error(PYPOOL_EINVAL, "pool is NULL");
    int cancel = pypool__nocancel_begin();
    int rc = pypool__enter(p);
    if (rc == 0) {
        int64_t ms = timeout_ms < 0 ? p->cfg.startup_timeout_ms : timeout_ms;
        int64_t deadline = pypool__deadline_after_ms(ms);
        pypool__lock(&p->mu);
        uint64_t fail_seq = p->start_fail_seq;
        request_all_starts_locked(p);
        pypool__kick_locked(p);
        rc = wait_ready_locked(p, deadline, fail_seq);
        pypool__unlock(&p->mu);
        pypool__leave(p);
    }
    pypool__nocancel_end(cancel);
    return rc;
}

void pypool_destroy(pypool *p)
{
    if (!p)
        return;
    int cancel = pypool__nocancel_begin();
    pypool__lock(&p->mu);
    if (p->shutting_down) { /* a second destroy: the first one owns the teardown */
        pypool__unlock(&p->mu);
        pypool__nocancel_end(cancel);
        return;
    }
    p->shutting_down = true;
    atomic_fetch_or(&p->refs, PYPOOL__REFS_CLOSED); /* nobody enters from now on */
    p->shutdown_started_ns = pypool__now_ns();
    pypool__fail_waiters_locked(p, -1, PYPOOL_ESHUTDOWN);
    pypool__cond_broadcast(&p->state_cv);
    pypool__kick_locked(p);
    pypool__unlock(&p->mu);
    if (p->reaper_started)
        pypool__reaper_join(p);
    pypool__lock(&p->mu);
    p->reaper_done = true;
    for (unsigned i = 0; i < p->cfg.size; i++) {
        pypool__slot *s = &p->slots[i];
        if (s->state != PYPOOL_SLOT_BUSY && s->state != PYPOOL_SLOT_STOPPED)
            pypool__slot_close_locked(p, s);
    }
    pypool__close_fd(&p->wake_fd);
    pypool__unlock(&p->mu);
    pypool__leave(p); /* the owner's reference: frees the pool unless a caller is still out */
    pypool__nocancel_end(cancel);
}

/* With mu held: one slot as the public API reports it. */
static pypool_slot_stats slot_stats_locked(const pypool__slot *s)
{
    return (pypool_slot_stats){
        .state = s->state, .pid = s->child.pid, .calls = s->calls, .restarts = s->restarts};
}

static void stats_fill(pypool *p, pypool_stats *out)
{
    pypool__lock(&p->mu);
    *out = p->counters;
    out->size = p->cfg.size;
    out->waiters = p->nwaiters;
    out->sessions = p->nsessions;
    out->slot_count = p->cfg.size < PYPOOL_STATS_MAX_SLOTS ? p->cfg.size : PYPOOL_STATS_MAX_SLOTS;
    for (unsigned i = 0; i < p->cfg.size; i++) {
        const pypool__slot *s = &p->slots[i];
        out->idle += s->state == PYPOOL_SLOT_IDLE || s->state == PYPOOL_SLOT_PINGING;
        out->busy += s->state == PYPOOL_SLOT_BUSY;
        out->starting += s->state == PYPOOL_SLOT_STARTING;
        out->backoff += s->state == PYPOOL_SLOT_BACKOFF || s->state == PYPOOL_SLOT_BROKEN;
        out->failed += s->state == PYPOOL_SLOT_FAILED;
        if (i < out->slot_count)
            out->slots[i] = slot_stats_locked(s);
        out->inflight += s->lanes ? s->inflight : s->state == PYPOOL_SLOT_BUSY;
    }
    pypool__latency_merge(p, &out->wait_us, &out->call_us);
    pypool__unlock(&p->mu);
}

void pypool_stats_get_sized(pypool *p, pypool_stats *out, size_t struct_size)
{
    if (!out)
        return;
    pypool_stats full;
    memset(&full, 0, sizeof full);
    /* A reference, as every other entry point takes, so that a concurrent destroy cannot free
     * the pool under us; but one taken even while destroy runs: its drain is worth watching. */
    if (p) {
        pypool__hold(p);
        stats_fill(p, &full);
        pypool__leave(p);
    }
    memcpy(out, &full, struct_size < sizeof full ? struct_size : sizeof full);
}

unsigned pypool_stats_slots(pypool *p, unsigned first, pypool_slot_stats *out, unsigned max)
{
    if (!p || !out)
        return 0;
    pypool__hold(p);
    unsigned n = 0;
    pypool__lock(&p->mu);
    for (unsigned i = first; i < p->cfg.size && n < max; i++)
        out[n++] = slot_stats_locked(&p->slots[i]);
    pypool__unlock(&p->mu);
    pypool__leave(p);
    return n;
}

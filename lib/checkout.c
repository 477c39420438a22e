/*
 * checkout.c - handing workers to threads: the idle stack, the FIFO waiter queue and checkin.
 *
 * Design notes:
 * - Everything here runs with the pool mutex held (see pool.h), except the waits themselves.
 * - No barging: a worker released while threads wait goes straight to the longest waiter that
 *   accepts it (a thread waiting for any worker, or for that slot: a session's). The worker
 *   is never pushed on the idle stack in between, so a newly arriving thread cannot take it.
 *   Invariant: the idle stack is empty whenever a thread waits for "any" worker. * - The idle stack
 * is LIFO so the most recently used worker (warm caches) serves next, except that a thread first
 * gets back the worker it used last if that one is idle: stable thread/worker pairs keep both
 * sides' caches and wake-ups on the same CPUs (measured: the 2-thread, 2-worker throughput
 * otherwise trails dedicated pairs). The hint is per thread and only compared, never dereferenced,
 * so a stale one is harmless. * - A release hands the slot over completely under the mutex (holder,
 * deadline watch) and wakes exactly the thread it serves through that waiter's own futex word
 * (sync.h); the woken thread returns without touching the mutex, so a hand-off costs one wake-up,
 * not a pile-up of threads fighting for the lock.
 */
#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "error.h"
#include "pool.h"
#include "state.h"
#include "sync.h"

static void waiter_append(pypool *p, pypool__waiter *w)
{
    w->next = NULL;
    w->prev = p->wait_tail;
    if (p->wait_tail)
        p->wait_tail->next = w;
    else
        p->wait_head = w;
    p->wait_tail = w;
    p->nwaiters++;
}

static void waiter_unlink(pypool *p, pypool__waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        p->wait_head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        p->wait_tail = w->prev;
    w->next = w->prev = NULL;
    p->nwaiters--;
}

void pypool__idle_remove_locked(pypool *p, pypool__slot *s)
{
    for (unsigned i = 0; i < p->nidle; i++) {
        if (p->idle[i] == s->index) {
            memmove(&p->idle[i], &p->idle[i + 1], (p->nidle - i - 1) * sizeof p->idle[0]);
            p->nidle--;
            return;
        }
    }
}

/* With mu held: the slot becomes `thread`'s, with a call deadline for the reaper to watch. */
static void mark_taken(pypool *p, pypool__slot *s, pthread_t thread, int64_t call_deadline_ns)
{
    pypool__transition(s, PYPOOL__EV_CHECKOUT);
    p->busy++;
    s->busy_since_ns = pypool__now_ns();
    s->leak_warned = false;
    s->holder = thread;
    atomic_store(&s->call_abort, 0);
    pypool__watch_deadline_locked(p, s, call_deadline_ns);
}

/* With mu held: tells a waiter its fate; it leaves without taking mu again. */
static void decide(pypool__waiter *w, int granted, int err)
{
    w->granted = granted;
    w->err = err;
    pypool__wake_post(&w->decided);
}

void pypool__slot_release_locked(pypool *p, pypool__slot *s)
{
    for (pypool__waiter *w = p->wait_head; w; w = w->next) {
        if (w->want < 0 || w->want == (int)s->index) {
            waiter_unlink(p, w);
            mark_taken(p, s, w->thread, w->call_deadline_ns);
            decide(w, (int)s->index, 0);
            return;
        }
    }
    s->idle_since_ns = pypool__now_ns();
    p->idle[p->nidle++] = s->index;
    if (p->cfg.idle_ping_ms > 0) /* the reaper may be asleep until a later deadline */
        pypool__reaper_due_locked(p, s->idle_since_ns + p->cfg.idle_ping_ms * PYPOOL__MS);
    pypool__cond_broadcast(&p->state_cv);
}

void pypool__fail_waiters_locked(pypool *p, int slot, int err)
{
    pypool__waiter *w = p->wait_head;
    while (w) {
        pypool__waiter *next = w->next;
        if (slot < 0 || w->want == slot) {
            waiter_unlink(p, w);
            decide(w, -1, err);
        }
        w = next;
    }
}

void pypool__slot_break_locked(pypool *p, pypool__slot *s, int reason)
{
    if (s->state == PYPOOL_SLOT_IDLE)
        pypool__idle_remove_locked(p, s);
    s->break_reason = reason;
    pypool__transition(s, PYPOOL__EV_BREAK);
    /* Threads waiting for this very worker (a session's) cannot be served by its replacement:
     * they learn it now instead of waiting out the restart. */
    pypool__fail_waiters_locked(p, (int)s->index, PYPOOL_ESESSION);
    pypool__reaper_wake_locked(p);
}

bool pypool__unservable_locked(const pypool *p)
{
    bool failed = false;
    for (unsigned i = 0; i < p->cfg.size; i++) {
        int st = p->slots[i].state;
        if (st == PYPOOL_SLOT_FAILED)
            failed = true;
        else if (st != PYPOOL_SLOT_EMPTY && st != PYPOOL_SLOT_STOPPED)
            return false;
    }
    return failed;
}

/* Lazy pools: ask the reaper for as many new workers as there are threads waiting for one. */
static bool request_starts_locked(pypool *p)
{
    unsigned starting = 0, want = 0; /* the caller is already queued */
    for (pypool__waiter *w = p->wait_head; w; w = w->next)
        want += w->want < 0;
    for (unsigned i = 0; i < p->cfg.size; i++) {
        const pypool__slot *s = &p->slots[i];
        starting +=
            s->state == PYPOOL_SLOT_STARTING || (s->state == PYPOOL_SLOT_EMPTY && s->want_start);
    }
    bool asked = false;
    for (unsigned i = 0; i < p->cfg.size && starting < want; i++) {
        pypool__slot *s = &p->slots[i];
        if (s->state == PYPOOL_SLOT_EMPTY && !s->want_start) {
            s->want_start = true;
            starting++;
            asked = true;
        }
    }
    return asked;
}

static _Thread_local const pypool *last_pool;
static _Thread_local unsigned last_slot;

/* The idle worker this thread used last in this pool, if any. */
static int preferred_idle_locked(const pypool *p)
{
    if (last_pool != p || last_slot >= p->cfg.size)
        return -1;
    return p->slots[last_slot].state == PYPOOL_SLOT_IDLE ? (int)last_slot : -1;
}

/* Takes an idle worker now if the request can be served without waiting. */
static pypool__slot *take_idle_locked(pypool *p, int want, int64_t call_deadline_ns)
{
    pypool__slot *s = NULL;
    if (want < 0)
        want = preferred_idle_locked(p);
    if (want >= 0 && p->slots[want].state == PYPOOL_SLOT_IDLE) {
        s = &p->slots[want];
        pypool__idle_remove_locked(p, s);
    } else if (want < 0 && p->nidle > 0) {
        s = &p->slots[p->idle[--p->nidle]];
    }
    if (s)
        mark_taken(p, s, pthread_self(), call_deadline_ns);
    return s;
}

/*
 * Queues the caller and waits, without the mutex, for its fate: a slot, an error or the
 * deadline. Called with mu held; returns with mu released.
 */
static int wait_unlocked(pypool *p, int want, int64_t deadline_ns, int64_t call_deadline_ns,
                         pypool__slot **out)
{
    pypool__waiter w = {.want = want,
                        .granted = -1,
                        .thread = pthread_self(),
                        .call_deadline_ns = call_deadline_ns};
    atomic_init(&w.decided, 0);
    waiter_append(p, &w);
    if (want < 0 && p->cfg.lazy && request_starts_locked(p))
        pypool__reaper_wake_locked(p);
    pypool__unlock(&p->mu);
    if (!pypool__wake_wait_until(&w.decided, deadline_ns)) {
        pypool__lock(&p->mu);
        bool decided = atomic_load(&w.decided) != 0; /* a release may have just won the race */
        if (!decided) {
            waiter_unlink(p, &w);
            p->counters.timeouts++;
        }
        pypool__unlock(&p->mu);
        if (!decided)
            return PYPOOL_ETIMEDOUT;
    }
    if (w.granted >= 0)
        *out = &p->slots[w.granted];
    return w.granted >= 0 ? 0 : w.err;
}

void pypool__reaper_due_locked(pypool *p, int64_t at_ns)
{
    if (at_ns > 0 && (p->reaper_wake_at_ns < 0 || at_ns < p->reaper_wake_at_ns)) {
        p->reaper_wake_at_ns = at_ns; /* one wake-up is enough until it recomputes */
        pypool__reaper_wake_locked(p);
    }
}

void pypool__watch_deadline_locked(pypool *p, pypool__slot *s, int64_t call_deadline_ns)
{
    s->call_deadline_ns = call_deadline_ns;
    pypool__reaper_due_locked(p, call_deadline_ns);
}

/* With mu held: what a failed checkout reports besides its code. */
static void failure_detail_locked(pypool *p, int rc, char **why)
{
    if (rc == PYPOOL_ESPAWN && p->last_spawn_error)
        *why = strdup(p->last_spawn_error);
    if (rc == PYPOOL_ETIMEDOUT)
        p->counters.timeouts++;
}

int pypool__checkout(pypool *p, int want, int64_t deadline_ns, bool nowait,
                     int64_t call_deadline_ns, pypool__slot **out, char **why)
{
    *out = NULL;
    *why = NULL;
    pypool__lock(&p->mu);
    int rc = 0;
    if (p->shutting_down)
        rc = PYPOOL_ESHUTDOWN;
    else if ((*out = take_idle_locked(p, want, call_deadline_ns)) != NULL)
        rc = 0;
    else if (pypool__unservable_locked(p))
        rc = PYPOOL_ESPAWN;
    else if (nowait)
        rc = PYPOOL_ETIMEDOUT;
    else if (p->cfg.max_waiters && p->nwaiters >= p->cfg.max_waiters)
        rc = PYPOOL_EBUSY;
    else {
        rc = wait_unlocked(p, want, deadline_ns, call_deadline_ns, out);
        if (rc == 0 || rc == PYPOOL_ETIMEDOUT)
            return rc;
        pypool__lock(&p->mu); /* woken with an error: fetch its detail */
    }
    failure_detail_locked(p, rc, why);
    pypool__unlock(&p->mu);
    return rc;
}

void pypool__checkin(pypool *p, pypool__slot *s, int reason)
{
    last_pool = p;
    last_slot = s->index;
    pypool__lock(&p->mu);
    p->busy--;
    s->call_deadline_ns = 0;
    int aborted = atomic_load(&s->call_abort);
    if (reason == PYPOOL__BREAK_NONE && aborted)
        reason = aborted == PYPOOL_ETIMEDOUT ? PYPOOL__BREAK_TIMEOUT : PYPOOL__BREAK_CRASH;
    p->counters.calls += s->served - s->calls;
    s->calls = s->served;
    p->counters.remote_errors += s->pend_remote;
    p->counters.call_timeouts += s->pend_call_timeouts;
    p->counters.timeouts += s->pend_call_timeouts;
    p->counters.protocol_errors += s->pend_proto;
    s->pend_remote = s->pend_call_timeouts = s->pend_proto = 0;
    if (reason == PYPOOL__BREAK_NONE && s->call_limit && s->calls >= s->call_limit)
        reason = PYPOOL__BREAK_RETIRE;
    if (reason == PYPOOL__BREAK_NONE && p->shutting_down)
        reason = PYPOOL__BREAK_SHUTDOWN;
    if (reason != PYPOOL__BREAK_NONE) {
        pypool__slot_break_locked(p, s, reason);
        if (p->reaper_done)
            pypool__slot_close_locked(p, s);
    } else {
        pypool__transition(s, PYPOOL__EV_CHECKIN);
        pypool__slot_release_locked(p, s);
    }
    if (p->shutting_down)
        pypool__cond_broadcast(&p->state_cv);
    pypool__unlock(&p->mu);
}

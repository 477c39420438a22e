/*
 * slots.c - the slot core (layer 1): the waiter queue, the idle stack, the kick, and the slot
 * actions of the state table (take, release, break, stop, abort-call, kill, is-live).
 *
 * Design notes:
 * - Everything here runs with the pool mutex held (slots.h), except pypool__slot_kill, which
 *   takes it. Debug builds assert it (pypool__assert_locked) and check the invariants below.
 * - No barging: a worker released while threads wait goes straight to the longest waiter that
 *   accepts it (a thread waiting for any worker, or for that slot: a session's). The worker is
 *   never pushed on the idle stack in between, so a newly arriving thread cannot take it.
 *   Invariant: the idle stack is empty whenever a thread waits for "any" worker.
 * - A release hands the slot over completely under the mutex (holder, deadline watch) and wakes
 *   exactly the thread it serves through that waiter's own futex word (sync.h); the woken thread
 *   returns without touching the mutex, so a hand-off costs one wake-up, not a pile-up of
 *   threads fighting for the lock.
 * - The kick is an eventfd write the reaper only reads (as nng's pollable or libuv's
 *   uv_async_send): client threads and the reaper meet here, never by calling each other.
 * - Calls go only downward: this file uses layer 0 (clock, sync, proc) and the state table.
 */
#define _GNU_SOURCE
#include "slots.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clock.h"
#include "error.h"
#include "state.h"
#include "sync.h"

#ifdef PYPOOL_DEBUG
void pypool__assert_locked(const pypool *p)
{
#ifdef __GLIBC__
    /* glibc keeps the owner's tid in the mutex; an ERRORCHECK mutex (debug builds) sets it. */
    if (p->mu.__data.__owner != (int)gettid()) {
        fprintf(stderr, "pypool: a *_locked function was called without the pool mutex\n");
        abort();
    }
#else
    (void)p;
#endif
}
#endif

void pypool__waiter_append_locked(pypool *p, pypool__waiter *w)
{
    pypool__assert_locked(p);
    w->next = NULL;
    w->prev = p->wait_tail;
    if (p->wait_tail)
        p->wait_tail->next = w;
    else
        p->wait_head = w;
    p->wait_tail = w;
    p->nwaiters++;
}

void pypool__waiter_unlink_locked(pypool *p, pypool__waiter *w)
{
    pypool__assert_locked(p);
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
    pypool__assert_locked(p);
    for (unsigned i = 0; i < p->nidle; i++) {
        if (p->idle[i] == s->index) {
            memmove(&p->idle[i], &p->idle[i + 1], (p->nidle - i - 1) * sizeof p->idle[0]);
            p->nidle--;
            return;
        }
    }
}

void pypool__slot_take_locked(pypool *p, pypool__slot *s, pthread_t thread,
                              int64_t call_deadline_ns)
{
    pypool__assert_locked(p);
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

pypool__waiter *pypool__slot_handoff_locked(pypool *p, pypool__slot *s)
{
    pypool__assert_locked(p);
    for (pypool__waiter *w = p->wait_head; w && !s->lanes; w = w->next) {
        if (w->want < 0 || w->want == (int)s->index) {
            pypool__waiter_unlink_locked(p, w);
            pypool__slot_take_locked(p, s, w->thread, w->call_deadline_ns);
            w->granted = (int)s->index;
            w->err = 0;
            w->claimed = PYPOOL__CLAIM_POSTING;
            return w;
        }
    }
    pypool__slot_release_locked(p, s);
    return NULL;
}

void pypool__slot_release_locked(pypool *p, pypool__slot *s)
{
    pypool__assert_locked(p);
    if (s->lanes) {
        pypool__lanes_serve_waiters_locked(p, s); /* lanes, not the whole worker */
        if (s->state == PYPOOL_SLOT_BUSY)
            return;
    }
    for (pypool__waiter *w = s->lanes ? NULL : p->wait_head; w; w = w->next) {
        if (w->want < 0 || w->want == (int)s->index) {
            pypool__waiter_unlink_locked(p, w);
            pypool__slot_take_locked(p, s, w->thread, w->call_deadline_ns);
            decide(w, (int)s->index, 0);
            return;
        }
    }
    /* No barging: a worker goes on the idle stack only when no waiter takes it, so the stack
     * is empty while anyone waits for any worker. */
    PYPOOL__ASSERT(p->nidle < p->cfg.size);
#ifdef PYPOOL_DEBUG
    for (pypool__waiter *w = p->wait_head; w; w = w->next)
        PYPOOL__ASSERT(w->want >= 0);
#endif
    s->idle_since_ns = pypool__now_ns();
    p->idle[p->nidle++] = s->index;
    if (p->cfg.idle_ping_ms > 0) /* the reaper may be asleep until a later deadline */
        pypool__reaper_due_locked(p, s->idle_since_ns + p->cfg.idle_ping_ms * PYPOOL__MS);
    pypool__cond_broadcast(&p->state_cv);
}

void pypool__fail_waiters_locked(pypool *p, int slot, int err)
{
    pypool__assert_locked(p);
    pypool__waiter *w = p->wait_head;
    while (w) {
        pypool__waiter *next = w->next;
        if (slot < 0 || w->want == slot) {
            pypool__waiter_unlink_locked(p, w);
            decide(w, -1, err);
        }
        w = next;
    }
}

void pypool__slot_break_locked(pypool *p, pypool__slot *s, int reason)
{
    pypool__assert_locked(p);
    if (s->lanes && s->state == PYPOOL_SLOT_BUSY && s->inflight > 0) {
        /* Its calls' owners still use the channel: it breaks when the last one is out. */
        pypool__slot_drain_locked(p, s, reason);
        return;
    }
    if (s->state == PYPOOL_SLOT_IDLE)
        pypool__idle_remove_locked(p, s);
    s->break_reason = reason;
    pypool__transition(s, PYPOOL__EV_BREAK);
    /* Threads waiting for this very worker (a session's) cannot be served by its replacement:
     * they learn it now instead of waiting out the restart. */
    pypool__fail_waiters_locked(p, (int)s->index, PYPOOL_ESESSION);
    pypool__kick_locked(p);
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

void pypool__reaper_due_locked(pypool *p, int64_t at_ns)
{
    pypool__assert_locked(p);
    if (at_ns > 0 && (p->reaper_wake_at_ns < 0 || at_ns < p->reaper_wake_at_ns)) {
        p->reaper_wake_at_ns = at_ns; /* one wake-up is enough until it recomputes */
        pypool__kick_locked(p);
    }
}

void pypool__watch_deadline_locked(pypool *p, pypool__slot *s, int64_t call_deadline_ns)
{
    pypool__assert_locked(p);
    s->deadline_ns = call_deadline_ns;
    pypool__reaper_due_locked(p, call_deadline_ns);
}

void pypool__slot_kill(pypool *p, pypool__slot *s)
{
    pypool__lock(&p->mu);
    if (s->child.pid > 0 && !s->reaped) {
        s->killed = true;
        pypool__signal_group(s->child.pid, SIGKILL);
    }
    pypool__unlock(&p->mu);
}

void pypool__slot_abort_call_locked(pypool__slot *s, int err)
{
    if (atomic_load(&s->call_abort) != 0)
        return;
    atomic_store(&s->call_abort, err);
    s->deadline_ns = 0;
    pypool__child_poke(&s->child);
}

void pypool__slot_close_locked(pypool *p, pypool__slot *s)
{
    (void)p; /* only the debug build's lock check needs it */
    pypool__assert_locked(p);
    pypool__child_close_fds(&s->child);
    pypool__reader_free(&s->reader);
    pypool__transition(s, PYPOOL__EV_STOP);
}

/* Under the mutex, so destroy cannot close wake_fd between our check and the write. EAGAIN
 * means the counter is already non-zero: the reaper is awake anyway. */
void pypool__kick_locked(pypool *p)
{
    uint64_t one = 1;
    if (p->wake_fd >= 0 && !p->reaper_done)
        (void)!write(p->wake_fd, &one, sizeof one);
}

/* --- lanes of multiplexed workers (lanes.c has the rest) -------------------------------- */

bool pypool__lane_open_locked(const pypool *p, const pypool__slot *s)
{
    (void)p;
    bool serving = s->state == PYPOOL_SLOT_IDLE || s->state == PYPOOL_SLOT_BUSY;
    return serving && s->nfree > 0 && !s->draining && !s->reaped;
}

uint64_t pypool__lane_new_id_locked(pypool__slot *s, unsigned lane)
{
    pypool__lane *l = &s->lanes[lane];
    l->id = (++s->lane_seq << PYPOOL__LANE_BITS) | lane;
    l->final = false; /* err stays: a lane whose worker died is of no use for a new request */
    return l->id;
}

unsigned pypool__lane_take_locked(pypool *p, pypool__slot *s)
{
    pypool__assert_locked(p);
    PYPOOL__ASSERT(pypool__lane_open_locked(p, s));
    if (s->state == PYPOOL_SLOT_IDLE) {
        pypool__idle_remove_locked(p, s);
        pypool__transition(s, PYPOOL__EV_CHECKOUT);
        p->busy++;
        s->busy_since_ns = pypool__now_ns();
    }
    unsigned lane = s->free_lanes[--s->nfree];
    pypool__lane *l = &s->lanes[lane];
    l->state = PYPOOL__LANE_OWNED;
    l->cancel_sent = false;
    s->inflight++;
    pypool__lane_new_id_locked(s, lane);
    return lane;
}

/* With mu held: tells a waiter it has a lane; it leaves without taking mu again. */
static void grant(pypool__waiter *w, pypool__slot *s, unsigned lane)
{
    w->granted = (int)s->index;
    w->lane = (int)lane;
    w->err = 0;
    pypool__wake_post(&w->decided);
}

void pypool__lanes_serve_waiters_locked(pypool *p, pypool__slot *s)
{
    pypool__assert_locked(p);
    pypool__waiter *w = p->wait_head;
    while (w && pypool__lane_open_locked(p, s) && !p->shutting_down) {
        pypool__waiter *next = w->next;
        if (w->want < 0 || w->want == (int)s->index) {
            pypool__waiter_unlink_locked(p, w);
            grant(w, s, pypool__lane_take_locked(p, s));
        }
        w = next;
    }
}

void pypool__slot_drain_locked(pypool *p, pypool__slot *s, int reason)
{
    pypool__assert_locked(p);
    if (!s->draining) {
        s->draining = true;
        s->drain_reason = reason;
    }
    /* Threads waiting for this very worker (a session's) cannot be served by it any more. */
    pypool__fail_waiters_locked(p, (int)s->index, PYPOOL_ESESSION);
    pypool__kick_locked(p);
}

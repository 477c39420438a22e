/*
 * checkout.c - layer 2, client side: a thread waiting for a worker (FIFO, with a deadline) and
 * giving it back (checkin). The queue, the idle stack and the hand-over itself are the slot
 * core's (slots.c).
 *
 * Design notes:
 * - The waits run without the pool mutex; everything else here holds it.
 * - The idle stack is LIFO so the most recently used worker (warm caches) serves next, except
 *   that a thread first gets back the worker it used last if that one is idle: stable
 *   thread/worker pairs keep both sides' caches and wake-ups on the same CPUs (measured: the
 *   2-thread, 2-worker throughput otherwise trails dedicated pairs). The hint is per thread and
 *   only compared, never dereferenced, so a stale one is harmless.
 */
#include "checkout.h"

#include "call.h"
#include "mux.h"
#include "rx.h"

#include <stdlib.h>
#include <string.h>

#include "clock.h"
#include "error.h"
#include "lanes.h"
#include "state.h"
#include "sync.h"

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

/*
 * Multiplexed workers: the open worker (want's, or any) with the fewest calls in flight; the
 * one this thread used last wins a tie (its caches, its CPU). -1 if all are full.
 */
static int least_loaded_locked(const pypool *p, int want)
{
    if (want >= 0)
        return pypool__lane_open_locked(p, &p->slots[want]) ? want : -1;
    int best = -1;
    unsigned mine = last_pool == p ? last_slot : p->cfg.size;
    for (unsigned i = 0; i < p->cfg.size; i++) {
        const pypool__slot *s = &p->slots[i];
        if (!pypool__lane_open_locked(p, s))
            continue;
        if (best < 0 || s->inflight < p->slots[best].inflight ||
            (s->inflight == p->slots[best].inflight && i == mine))
            best = (int)i;
    }
    return best;
}

/* Takes an idle worker (or a free lane of one) now if the request can be served at once. */
static pypool__slot *take_idle_locked(pypool *p, int want, int64_t call_deadline_ns, int *lane)
{
    if (p->cfg.max_inflight > 1) {
        int i = least_loaded_locked(p, want);
        if (i < 0)
            return NULL;
        *lane = (int)pypool__lane_take_locked(p, &p->slots[i]);
        return &p->slots[i];
    }
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
        pypool__slot_take_locked(p, s, pthread_self(), call_deadline_ns);
    return s;
}

/*
 * Queues the caller and waits, without the mutex, for its fate: a slot, an error or the
 * deadline. Called with mu held; returns with mu released.
 */
static int wait_unlocked(pypool *p, int want, int64_t deadline_ns, int64_t call_deadline_ns,
                         const pypool__prereq *pre, pypool__slot **out, int *lane)
{
    pypool__waiter w = {.want = want,
                        .granted = -1,
                        .lane = -1,
                        .pre = pre,
                        .thread = pthread_self(),
                        .call_deadline_ns = call_deadline_ns};
    atomic_init(&w.decided, 0);
    pypool__waiter_append_locked(p, &w);
    if (want < 0 && p->cfg.lazy && request_starts_locked(p))
        pypool__kick_locked(p);
    pypool__unlock(&p->mu);
    if (!pypool__wake_wait_until(&w.decided, deadline_ns)) {
        pypool__lock(&p->mu);
        /* A release may have just won the race: it decided; or claimed us and is writing our
         * request (it posts right after, so that wait is short and bounded); or wrote it and
         * left us to sleep until the reply, which we stop waiting for now (the call's own
         * deadline check follows at once). */
        bool decided = atomic_load(&w.decided) != 0 || w.claimed != PYPOOL__CLAIM_NONE;
        bool posting = atomic_load(&w.decided) == 0 && w.claimed == PYPOOL__CLAIM_POSTING;
        if (!decided) {
            pypool__waiter_unlink_locked(p, &w);
            p->counters.timeouts++;
        } else if (posting) {
            w.gave_up = true;
        } else if (atomic_load(&w.decided) == 0) {
            p->slots[w.granted].lanes[w.lane].wake_word = NULL; /* CLAIM_SLEEPING */
            p->slots[w.granted].rx_sleepthrough--;
        }
        pypool__unlock(&p->mu);
        if (!decided)
            return PYPOOL_ETIMEDOUT;
        if (posting)
            pypool__wake_wait_until(&w.decided, -1);
    }
    if (w.granted >= 0) {
        *out = &p->slots[w.granted];
        *lane = w.lane;
    }
    return w.granted >= 0 ? 0 : w.err;
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
                     int64_t call_deadline_ns, const pypool__prereq *pre, pypool__slot **out,
                     int *lane, char **why)
{
    int no_lane;
    if (!lane)
        lane = &no_lane;
    *lane = -1;
    *out = NULL;
    *why = NULL;
    pypool__lock(&p->mu);
    int rc = 0;
    if (p->shutting_down)
        rc = PYPOOL_ESHUTDOWN;
    else if ((*out = take_idle_locked(p, want, call_deadline_ns, lane)) != NULL)
        rc = 0;
    else if (pypool__unservable_locked(p))
        rc = PYPOOL_ESPAWN;
    else if (nowait)
        rc = PYPOOL_ETIMEDOUT;
    else if (p->cfg.max_waiters && p->nwaiters >= p->cfg.max_waiters)
        rc = PYPOOL_EBUSY;
    else {
        rc = wait_unlocked(p, want, deadline_ns, call_deadline_ns, pre, out, lane);
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
    pypool__waiter *next = NULL;
    last_pool = p;
    last_slot = s->index;
    pypool__lock(&p->mu);
    p->busy--;
    s->deadline_ns = 0;
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
        next = pypool__slot_handoff_locked(p, s);
    }
    if (p->shutting_down)
        pypool__cond_broadcast(&p->state_cv);
    pypool__unlock(&p->mu);
    if (next) {
        /* The next holder is asleep: send its request now, so the worker starts on it while
         * that thread wakes (the hand-off is then off the worker's critical path). */
        if (next->pre)
            pypool__slot_present(p, s, next->pre);
        pypool__wake_post(&next->decided);
    }
}

/*
 * The waiter's request is in its worker: rather than wake it now only for it to sleep again
 * until the reply, let the reply wake it (one wake-up per call instead of two). False if it must
 * be woken now: the reply is already there, its deadline passed meanwhile, or no caller reads
 * the pipe (then it must, itself).
 */
static bool sleep_through(pypool *p, pypool__slot *s, pypool__waiter *w)
{
    pypool__lock(&p->mu);
    pypool__lane *l = &s->lanes[w->lane];
    /* Only while a caller reads the pipe: it routes the reply here, or wakes this waiter to
     * read for itself when it lets the reader role go (rx.c). */
    bool sleep = !w->gave_up && !l->head && !l->err && s->rx_role == PYPOOL__RX_OWNER;
    if (sleep) {
        l->wake_word = &w->decided;
        w->claimed = PYPOOL__CLAIM_SLEEPING;
        s->rx_sleepthrough++;
    }
    pypool__unlock(&p->mu);
    return sleep;
}

/* A lane goes to the next waiter with its request already written (see slots.h, waiter). */
void pypool__checkin_lane(pypool *p, pypool__slot *s, unsigned lane, int reason)
{
    last_pool = p;
    last_slot = s->index;
    pypool__lock(&p->mu);
    pypool__waiter *next = pypool__lane_handoff_locked(p, s, lane, reason);
    pypool__unlock(&p->mu);
    if (next && !(next->pre && pypool__lane_present(p, s, (unsigned)next->lane, next->pre) &&
                  sleep_through(p, s, next)))
        pypool__wake_post(&next->decided);
}

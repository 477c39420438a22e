/*
 * client.c - the public calling API: pypool_call, sessions, explicit checkout, results.
 *
 * Every entry point runs with thread cancellation disabled and holds a pool reference (see
 * pool.h, "Lifetime"), so neither a cancelled host thread nor a concurrent destroy can leave a
 * lock held, a worker checked out, or a thread on freed memory.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "call.h"
#include "result.h"
#include "checkout.h"
#include "client.h"
#include "clock.h"
#include "error.h"
#include "latency.h"
#include "lifecycle.h"
#include "log.h"
#include "mux.h"
#include "session.h"
#include "sync.h"

/* The one wording of PYPOOL_ESESSION, wherever it is decided. */
#define SESSION_LOST                                                                               \
    "the session's worker died or was recycled; its state is lost (the next call starts a "        \
    "fresh session)"

static void result_init(pypool_result *out)
{
    if (out)
        memset(out, 0, sizeof *out);
}

int pypool__check_call_args(const pypool *p, const char *method, const void *payload, size_t len,
                            pypool_result *out)
{
    if (!out)
        return pypool__set_error(PYPOOL_EINVAL, "result pointer is NULL");
    if (!p || !method || !*method)
        return pypool__result_error(out, PYPOOL_EINVAL, "pool and method are required");
    if (!payload && len)
        return pypool__result_error(out, PYPOOL_EINVAL, "payload is NULL but len > 0");
    if (len > p->cfg.max_frame_bytes)
        return pypool__result_error(out, PYPOOL_EINVAL, "payload exceeds max_frame_bytes");
    return 0;
}

/*
 * Checkout that skips (and hands to the reaper) a worker whose reply channel is not clean:
 * bytes left over from an earlier exchange mean it talked out of turn.
 */
static int checkout_clean(pypool *p, int want, int64_t deadline, bool nowait, int64_t call_deadline,
                          const pypool__prereq *pre, pypool__slot **out, int *lane,
                          pypool_result *res)
{
    for (;;) {
        char *why = NULL;
        int rc = pypool__checkout(p, want, deadline, nowait, call_deadline, pre, out, lane, &why);
        if (rc) {
            const char *msg = rc == PYPOOL_ETIMEDOUT  ? "no worker became free before the deadline"
                              : rc == PYPOOL_ESESSION ? SESSION_LOST
                                                      : why;
            rc = pypool__result_error(res, rc, msg);
            free(why);
            return rc;
        }
        if (*lane >= 0 || !pypool__slot_channel_dirty(*out))
            return 0; /* a multiplexed worker's channel is the reaper's to check */
        pypool__log(p, PYPOOL_LOG_WARN, (*out)->child.pid,
                    "idle worker left unsolicited data in its reply channel; replacing it");
        pypool__slot_kill(p, *out);
        (*out)->pend_proto++;
        pypool__checkin(p, *out, PYPOOL__BREAK_PROTO);
        if (want >= 0)
            return pypool__result_error(res, PYPOOL_ESESSION, SESSION_LOST);
    }
}

/* Picks the slot a new session binds to: the live worker with the fewest sessions. */
static int pick_session_slot_locked(pypool *p)
{
    int best = -1;
    for (unsigned i = 0; i < p->cfg.size; i++) {
        const pypool__slot *s = &p->slots[i];
        bool live = s->state == PYPOOL_SLOT_IDLE || s->state == PYPOOL_SLOT_BUSY ||
                    s->state == PYPOOL_SLOT_PINGING;
        if (!live)
            continue;
        if (best < 0 || s->sessions < p->slots[best].sessions ||
            (s->sessions == p->slots[best].sessions && s->state == PYPOOL_SLOT_IDLE &&
             p->slots[best].state != PYPOOL_SLOT_IDLE))
            best = (int)i;
    }
    return best;
}

/* The worker that holds a session's state is still there (it may be busy). */
static bool session_worker_alive_locked(const pypool__slot *s, uint64_t gen)
{
    bool live = s->state == PYPOOL_SLOT_IDLE || s->state == PYPOOL_SLOT_BUSY ||
                s->state == PYPOOL_SLOT_PINGING;
    return live && s->generation == gen && !s->reaped;
}

/*
 * Resolves which slot serves the session: *want = bound slot (or -1: any, bind after),
 * PYPOOL_ESESSION once if its worker is gone.
 */
static int session_route(pypool *p, const char *session_id, int *want, uint64_t *gen)
{
    unsigned slot;
    *want = -1;
    pypool__lock(&p->mu);
    int rc = 0;
    if (pypool__session_lookup_locked(p, session_id, &slot, gen)) {
        if (!session_worker_alive_locked(&p->slots[slot], *gen)) {
            pypool__session_remove_locked(p, session_id);
            rc = PYPOOL_ESESSION;
        } else {
            *want = (int)slot;
        }
    } else {
        *want = pick_session_slot_locked(p);
        *gen = 0; /* bind after checkout, to whatever generation serves */
    }
    pypool__unlock(&p->mu);
    return rc;
}

/*
 * Binds a new session to the worker just checked out, unless another thread's first call of
 * the same session bound it first: then the caller must re-route to that binding (returns 1),
 * so that every call of a session runs where its state lives.
 */
static int session_bind_after(pypool *p, const char *session_id, pypool__slot *s)
{
    unsigned slot;
    uint64_t gen;
    pypool__lock(&p->mu);
    int rc = 0;
    if (!pypool__session_lookup_locked(p, session_id, &slot, &gen))
        rc = pypool__session_bind_locked(p, session_id, s->index, s->generation);
    else if (slot != s->index || gen != s->generation)
        rc = 1;
    pypool__unlock(&p->mu);
    return rc;
}

/* Drops a binding made by this call's first attempt, whose worker never read the request:
 * the session has no state anywhere yet, so the retry may bind it afresh. */
static void session_unbind_fresh(pypool *p, const char *session_id, unsigned slot, uint64_t gen)
{
    unsigned bound_slot;
    uint64_t bound_gen;
    pypool__lock(&p->mu);
    if (pypool__session_lookup_locked(p, session_id, &bound_slot, &bound_gen) &&
        bound_slot == slot && bound_gen == gen)
        pypool__session_remove_locked(p, session_id);
    pypool__unlock(&p->mu);
}

void pypool__give_back(pypool *p, pypool__slot *s, int lane, int reason)
{
    if (lane >= 0)
        pypool__checkin_lane(p, s, (unsigned)lane, reason);
    else
        pypool__checkin(p, s, reason);
}

int pypool__acquire(pypool *p, const char *session_id, int64_t deadline, bool nowait,
                    const pypool__prereq *pre, pypool__acquired *a, pypool_result *out)
{
    int want = -1;
    uint64_t gen = 0;
    if (session_id) {
        int rc = session_route(p, session_id, &want, &gen);
        if (rc)
            return pypool__result_error(out, rc, SESSION_LOST);
    }
    a->bound = gen != 0;
    int rc = checkout_clean(p, want, deadline, nowait, deadline, pre, &a->s, &a->lane, out);
    if (rc == PYPOOL_ESESSION && session_id && !a->bound) {
        pypool_result_free(out); /* the slot picked for a new session went away: pick again */
        return PYPOOL__ERETRY;
    }
    if (rc)
        return rc;
    pypool__slot *s = a->s;
    if (a->bound && s->generation != gen) {
        pypool__give_back(p, s, a->lane, PYPOOL__BREAK_NONE);
        return PYPOOL__ERETRY; /* the route finds the binding stale: ESESSION */
    }
    if (session_id && !a->bound) {
        int bind = session_bind_after(p, session_id, s);
        if (bind != 0)
            pypool__give_back(p, s, a->lane, PYPOOL__BREAK_NONE);
        if (bind == 1)
            return PYPOOL__ERETRY; /* a racing first call bound it elsewhere: go there */
        if (bind != 0)
            return pypool__result_error(out, PYPOOL_ENOMEM, "out of memory binding the session");
    }
    a->slot = s->index;
    a->gen = s->generation;
    return 0;
}

int pypool__unsent(pypool *p, const char *session_id, const pypool__acquired *a, pypool_result *out)
{
    if (session_id && a->bound)
        return pypool__result_error(out, PYPOOL_ESESSION, SESSION_LOST);
    if (session_id)
        session_unbind_fresh(p, session_id, a->slot, a->gen);
    return PYPOOL__ERETRY;
}

/*
 * One attempt: route, check out, bind, call, check in. Returns PYPOOL__ERETRY when the caller
 * should route again (a racing first call bound the session elsewhere, or the request was never
 * read by any worker); anything else is the call's result.
 */
static int call_attempt(pypool *p, const char *session_id, const char *method, const void *payload,
                        size_t len, int64_t deadline, bool nowait, int64_t *wait_start,
                        pypool_result *out)
{
    pypool__acquired a;
    pypool__prereq pre = {.method = method,
                          .session_id = session_id,
                          .payload = payload,
                          .len = len,
                          .deadline_ns = deadline};
    int rc = pypool__acquire(p, session_id, deadline, nowait, &pre, &a, out);
    if (rc)
        return rc;
    pypool__slot *s = a.s;
    int reason; /* slot_call records wait_us once per call, retries included, and zeroes it */
    bool orphaned = false;
    if (a.lane >= 0)
        rc = pypool__lane_call(p, s, (unsigned)a.lane, false, session_id, method, payload, len,
                               deadline, wait_start, out, &reason, &orphaned);
    else
        rc = pypool__slot_call(p, s, session_id, method, payload, len, deadline, wait_start, out,
                               &reason);
    if (rc == 0 && p->cfg.max_worker_rss_bytes &&
        pypool__rss_bytes(s->child.pid) > p->cfg.max_worker_rss_bytes)
        reason = PYPOOL__BREAK_RETIRE;
    if (!orphaned)
        pypool__give_back(p, s, a.lane, reason);
    return rc == PYPOOL__ENOTSENT ? pypool__unsent(p, session_id, &a, out) : rc;
}

/*
 * A request no worker read is safe to send again, so it is retried on a replacement or another
 * worker until the call's deadline (checkout enforces it), however many workers die meanwhile.
 */
static int call_on_pool(pypool *p, const char *session_id, const char *method, const void *payload,
                        size_t len, int64_t timeout_ms, pypool_result *out)
{
    int64_t call_ms = timeout_ms < 0 ? p->cfg.call_timeout_ms : timeout_ms;
    bool nowait = timeout_ms == 0;
    int64_t wait_start = pypool__now_ns(); /* the deadline's base and wait_us's start */
    int64_t deadline =
        pypool__deadline_at_ms(wait_start, nowait ? p->cfg.call_timeout_ms : call_ms);
    if (deadline < 0)
        deadline = pypool__deadline_at_ms(wait_start, p->cfg.call_timeout_ms);
    int rc;
    while ((rc = call_attempt(p, session_id, method, payload, len, deadline, nowait, &wait_start,
                              out)) == PYPOOL__ERETRY)
        ;
    return rc;
}

int pypool_session_call(pypool *p, const char *session_id, const char *method, const void *payload,
                        size_t len, int64_t timeout_ms, pypool_result *out)
{
    result_init(out);
    pypool__clear_error();
    int rc = pypool__check_call_args(p, method, payload, len, out);
    if (rc)
        return rc;
    if (session_id && !*session_id)
        return pypool__result_error(out, PYPOOL_EINVAL, "session_id is empty");
    int cancel = pypool__nocancel_begin();
    rc = pypool__enter(p);
    if (rc == 0) {
        rc = call_on_pool(p, session_id, method, payload, len, timeout_ms, out);
        pypool__leave(p);
    } else {
        pypool__result_error(out, rc, "the pool is shutting down");
    }
    pypool__nocancel_end(cancel);
    return rc;
}

int pypool_call(pypool *p, const char *method, const void *payload, size_t len, int64_t timeout_ms,
                pypool_result *out)
{
    return pypool_session_call(p, NULL, method, payload, len, timeout_ms, out);
}

int pypool_session_close(pypool *p, const char *session_id)
{
    pypool__clear_error();
    if (!p || !session_id || !*session_id)
        return pypool__set_error(PYPOOL_EINVAL, "pool and session_id are required");
    int cancel = pypool__nocancel_begin();
    int rc = pypool__enter(p);
    if (rc == 0) {
        int want = -1;
        uint64_t gen = 0;
        rc = session_route(p, session_id, &want, &gen);
        if (rc == 0 && gen != 0) {
            pypool__slot *s;
            char *why = NULL;
            int64_t deadline = pypool__deadline_after_ms(p->cfg.checkout_timeout_ms);
            int lane;
            rc = pypool__checkout(p, want, deadline, false, deadline, NULL, &s, &lane, &why);
            free(why);
            if (rc == 0) {
                int reason = PYPOOL__BREAK_NONE;
                if (s->generation == gen && lane >= 0)
                    pypool__lane_session_close(p, s, session_id, &reason);
                else if (s->generation == gen)
                    pypool__slot_session_close(p, s, session_id, &reason);
                pypool__give_back(p, s, lane, reason);
            }
        }
        pypool__lock(&p->mu);
        pypool__session_remove_locked(p, session_id);
        pypool__unlock(&p->mu);
        if (rc == PYPOOL_ESESSION)
            rc = 0; /* the state is gone, which is what was asked */
        pypool__leave(p);
    }
    pypool__nocancel_end(cancel);
    return rc;
}

/* The handle of a checkout: the slot's own for an exclusive worker, a fresh one for a lane. */
static pypool_worker *worker_handle(pypool *p, pypool__slot *s, int lane)
{
    pypool_worker *w = lane >= 0 ? calloc(1, sizeof *w) : &s->handle;
    if (w)
        *w = (pypool_worker){.pool = p, .slot = s, .lane = lane};
    return w;
}

int pypool_checkout(pypool *p, int64_t timeout_ms, pypool_worker **out)
{
    pypool__clear_error();
    if (!p || !out)
        return pypool__set_error(PYPOOL_EINVAL, "pool and out are required");
    *out = NULL;
    int cancel = pypool__nocancel_begin();
    int rc = pypool__enter(p);
    if (rc == 0) {
        int64_t ms = timeout_ms < 0 ? p->cfg.checkout_timeout_ms : timeout_ms;
        int64_t start = pypool__now_ns(); /* the deadline's base and wait_us's start */
        pypool__slot *s;
        int lane;
        rc = checkout_clean(p, -1, pypool__deadline_at_ms(start, ms), timeout_ms == 0, 0, NULL, &s,
                            &lane, NULL);
        pypool_worker *w = rc == 0 ? worker_handle(p, s, lane) : NULL;
        if (rc == 0 && !w) {
            pypool__checkin_lane(p, s, (unsigned)lane, PYPOOL__BREAK_NONE);
            rc = pypool__set_error(PYPOOL_ENOMEM, "out of memory");
        }
        if (rc == 0) {
            pypool__latency_wait(p, s->index, start, pypool__now_ns());
            *out = w;
            return (pypool__nocancel_end(cancel), 0); /* the reference stays until checkin */
        }
        pypool__leave(p);
    }
    pypool__nocancel_end(cancel);
    return rc;
}

/* A checked-out worker died before it read the request: say how, as every EWORKER does. */
static int worker_gone_before_call(pypool *p, pypool__slot *s, const char *method,
                                   pypool_result *out)
{
    char how[128] = "died";
    pypool__lock(&p->mu);
    if (s->reaped)
        pypool__describe_status(s->exit_status, how, sizeof how);
    pypool__unlock(&p->mu);
    char msg[256];
    snprintf(msg, sizeof msg, "worker pid %d %s before the call to '%s'", (int)s->child.pid, how,
             method);
    return pypool__result_error(out, PYPOOL_EWORKER, msg);
}

/* pypool_worker_call on a checked-out lane of a multiplexed worker. */
static int lane_worker_call(pypool_worker *w, const char *method, const void *payload, size_t len,
                            int64_t timeout_ms, pypool_result *out)
{
    pypool *p = w->pool;
    if (w->orphaned)
        return pypool__result_error(out, PYPOOL_EWORKER,
                                    "an earlier call on this checkout timed out; check it in");
    if (w->broken != PYPOOL__BREAK_NONE)
        return pypool__result_error(out, PYPOOL_EWORKER, "this worker broke in an earlier call");
    int cancel = pypool__nocancel_begin();
    int64_t ms = timeout_ms < 0 ? p->cfg.call_timeout_ms : timeout_ms;
    int64_t deadline = pypool__deadline_after_ms(ms);
    int reason;
    bool orphaned;
    int64_t no_wait = 0; /* the wait was the checkout's */
    int rc = pypool__lane_call(p, w->slot, (unsigned)w->lane, w->used, NULL, method, payload, len,
                               deadline, &no_wait, out, &reason, &orphaned);
    w->used = true;
    w->orphaned = orphaned;
    if (rc == PYPOOL__ENOTSENT)
        rc = worker_gone_before_call(p, w->slot, method, out);
    w->broken = reason;
    pypool__nocancel_end(cancel);
    return rc;
}

int pypool_worker_call(pypool_worker *w, const char *method, const void *payload, size_t len,
                       int64_t timeout_ms, pypool_result *out)
{
    result_init(out);
    pypool__clear_error();
    if (!w)
        return out ? pypool__result_error(out, PYPOOL_EINVAL, "worker is NULL") : PYPOOL_EINVAL;
    pypool *p = w->pool;
    int rc = pypool__check_call_args(p, method, payload, len, out);
    if (rc)
        return rc;
    pypool__slot *s = w->slot;
    if (w->lane >= 0)
        return lane_worker_call(w, method, payload, len, timeout_ms, out);
    if (s->pending_break != PYPOOL__BREAK_NONE)
        return pypool__result_error(out, PYPOOL_EWORKER, "this worker broke in an earlier call");
    int cancel = pypool__nocancel_begin();
    int64_t ms = timeout_ms < 0 ? p->cfg.call_timeout_ms : timeout_ms;
    int64_t deadline = pypool__deadline_after_ms(ms);
    pypool__lock(&p->mu);
    pypool__watch_deadline_locked(p, s, deadline);
    pypool__unlock(&p->mu);
    int reason;
    int64_t no_wait = 0; /* the wait was the checkout's */
    rc = pypool__slot_call(p, s, NULL, method, payload, len, deadline, &no_wait, out, &reason);
    pypool__lock(&p->mu);
    s->deadline_ns = 0; /* held between calls: no deadline to watch */
    pypool__unlock(&p->mu);
    if (rc == PYPOOL__ENOTSENT)
        rc = worker_gone_before_call(p, s, method, out);
    s->pending_break = reason; /* a broken worker: this checkout is spent */
    pypool__nocancel_end(cancel);
    return rc;
}

void pypool_checkin(pypool_worker *w)
{
    if (!w)
        return;
    pypool *p = w->pool;
    pypool__slot *s = w->slot;
    int cancel = pypool__nocancel_begin();
    if (w->lane >= 0) {
        if (!w->orphaned)
            pypool__checkin_lane(p, s, (unsigned)w->lane, w->broken);
        free(w);
        pypool__leave(p);
        pypool__nocancel_end(cancel);
        return;
    }
    int reason = s->pending_break;
    s->pending_break = PYPOOL__BREAK_NONE;
    if (reason == PYPOOL__BREAK_NONE && p->cfg.max_worker_rss_bytes &&
        pypool__rss_bytes(s->child.pid) > p->cfg.max_worker_rss_bytes)
        reason = PYPOOL__BREAK_RETIRE;
    pypool__checkin(p, s, reason);
    pypool__leave(p);
    pypool__nocancel_end(cancel);
}

int pypool_worker_pid(const pypool_worker *w)
{
    return w ? (int)w->slot->child.pid : 0;
}
